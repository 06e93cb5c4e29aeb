//! SHA-256 over a sequence of byte strings.

use sha2::{Digest, Sha256};

/// SHA-256 of the concatenation of `parts`.
///
/// This is plain concatenation: `sha256(&[b"ab", b"c"]) == sha256(&[b"abc"])`.
/// When parts of variable length come from different parties, frame them
/// (length-prefix, or encode them as CBOR) before hashing, or use a value
/// that is already unambiguous such as a COSE object's bytes.
pub fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_fips_180_examples_and_concatenates() {
        // FIPS 180-2 appendix B.1 ("abc") and the empty-string digest.
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(hex::encode(sha256(&[b"abc"])), abc);
        assert_eq!(hex::encode(sha256(&[b"a", b"", b"bc"])), abc);
        assert_eq!(hex::encode(sha256(&[])), empty);
        assert_ne!(sha256(&[b"abd"]), sha256(&[b"abc"]));
    }
}
