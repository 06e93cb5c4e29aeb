//! Ed25519 signatures (RFC 8032, pure Ed25519 — not Ed25519ph or ctx).
//!
//! Verification is *strict* (`verify_strict` in ed25519-dalek): it refuses
//! non-canonical `S`, small-order `R` and small-order public keys, so a
//! signature cannot be mauled into a second valid encoding of itself.

use std::fmt;

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePublicKey, EncodePublicKey};
use kessai_secrets::SecretKey;
use rand_core::CryptoRng;

use crate::error::CryptoError;

/// An Ed25519 signing key. Zeroized on drop; `Debug` shows only the public
/// half.
#[derive(Clone)]
pub struct SigningKey(ed25519_dalek::SigningKey);

impl SigningKey {
    /// A fresh key from the injected CSPRNG.
    pub fn generate(rng: &mut impl CryptoRng) -> Self {
        Self(ed25519_dalek::SigningKey::generate(rng))
    }

    /// The key whose RFC 8032 secret key (the 32-byte seed) is `seed`.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self(ed25519_dalek::SigningKey::from_bytes(seed))
    }

    /// A copy of the 32-byte seed, zeroized when dropped — for sealing the
    /// key at rest (see [`crate::at_rest`]); never for logging or sending.
    pub fn seed_bytes(&self) -> SecretKey<32> {
        SecretKey::new(self.0.to_bytes())
    }

    /// The matching public key.
    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey(self.0.verifying_key())
    }

    /// Signs `msg` (deterministic, RFC 8032 section 5.1.6).
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        use ed25519_dalek::Signer;
        self.0.sign(msg).to_bytes()
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SigningKey(redacted, public {})",
            hex_prefix(self.0.verifying_key().as_bytes())
        )
    }
}

/// An Ed25519 public key. Always a valid, non-small-order curve point.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct VerifyingKey(ed25519_dalek::VerifyingKey);

impl VerifyingKey {
    /// Parses a 32-byte encoded public key (RFC 8032 section 5.1.5),
    /// refusing points that do not decode and small-order points.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, CryptoError> {
        let vk = ed25519_dalek::VerifyingKey::from_bytes(bytes)
            .map_err(|_| CryptoError::InvalidPublicKey)?;
        if vk.is_weak() {
            return Err(CryptoError::InvalidPublicKey);
        }
        Ok(Self(vk))
    }

    /// The 32-byte encoding.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The key as a PEM `PUBLIC KEY` block (X.509 SubjectPublicKeyInfo,
    /// RFC 8410), with `\n` line endings.
    pub fn to_public_pem(&self) -> String {
        // Encoding a fixed 32-byte key into a fixed SPKI template cannot
        // fail; an error here would be a bug in the encoder.
        self.0
            .to_public_key_pem(LineEnding::LF)
            .expect("an Ed25519 public key always encodes as SPKI PEM")
    }

    /// Parses a PEM `PUBLIC KEY` block holding an Ed25519
    /// SubjectPublicKeyInfo.
    pub fn from_public_pem(pem: &str) -> Result<Self, CryptoError> {
        let vk = ed25519_dalek::VerifyingKey::from_public_key_pem(pem)
            .map_err(|_| CryptoError::InvalidPem)?;
        Self::from_bytes(vk.as_bytes())
    }

    /// Verifies `sig` over `msg` with RFC 8032 strict checks.
    pub fn verify(&self, msg: &[u8], sig: &[u8; 64]) -> Result<(), CryptoError> {
        let sig = ed25519_dalek::Signature::from_bytes(sig);
        self.0
            .verify_strict(msg, &sig)
            .map_err(|_| CryptoError::BadSignature)
    }
}

/// A byte string in CBOR, 64 hex digits in JSON; validated on the way in.
impl serde::Serialize for VerifyingKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        crate::key_serde::serialize(self.0.as_bytes(), s)
    }
}

impl<'de> serde::Deserialize<'de> for VerifyingKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes = crate::key_serde::deserialize(d)?;
        Self::from_bytes(&bytes).map_err(serde::de::Error::custom)
    }
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifyingKey({})", hex_prefix(self.0.as_bytes()))
    }
}

/// First eight bytes of a public value in hex, enough to tell keys apart.
fn hex_prefix(bytes: &[u8]) -> String {
    let mut s: String = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
    s.push('…');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn sign_verify_round_trip_and_rejections() {
        let mut rng = StdRng::seed_from_u64(1);
        let sk = SigningKey::generate(&mut rng);
        let vk = sk.verifying_key();
        let sig = sk.sign(b"bill 42");
        assert_eq!(vk.verify(b"bill 42", &sig), Ok(()));
        assert_eq!(vk.verify(b"bill 43", &sig), Err(CryptoError::BadSignature));
        let mut bad = sig;
        bad[10] ^= 1;
        assert_eq!(vk.verify(b"bill 42", &bad), Err(CryptoError::BadSignature));
        let other = SigningKey::generate(&mut rng).verifying_key();
        assert_eq!(
            other.verify(b"bill 42", &sig),
            Err(CryptoError::BadSignature)
        );
    }

    #[test]
    fn seed_round_trips_and_debug_is_redacted() {
        let seed = [7u8; 32];
        let sk = SigningKey::from_seed(&seed);
        assert_eq!(sk.seed_bytes().expose(), &seed);
        let again = SigningKey::from_seed(sk.seed_bytes().expose());
        assert_eq!(again.verifying_key(), sk.verifying_key());
        let dbg = format!("{sk:?}");
        assert!(dbg.starts_with("SigningKey(redacted"), "{dbg}");
        assert!(!dbg.contains(&hex::encode(seed)));
        assert!(!dbg.contains("0707070707"));
    }

    #[test]
    fn pem_round_trip_matches_rfc_8410_layout() {
        let sk = SigningKey::from_seed(&[1u8; 32]);
        let vk = sk.verifying_key();
        let pem = vk.to_public_pem();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"), "{pem}");
        assert!(pem.trim_end().ends_with("-----END PUBLIC KEY-----"));
        assert_eq!(VerifyingKey::from_public_pem(&pem), Ok(vk));
        // RFC 8410 section 10.1 example key: the SPKI header is fixed
        // (30 2a 30 05 06 03 2b 65 70 03 21 00) followed by the 32 key bytes.
        let rfc8410 = "-----BEGIN PUBLIC KEY-----\n\
                       MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n\
                       -----END PUBLIC KEY-----\n";
        let parsed = VerifyingKey::from_public_pem(rfc8410).unwrap();
        assert_eq!(
            hex::encode(parsed.to_bytes()),
            "19bf44096984cdfe8541bac167dc3b96c85086aa30b6b6cb0c5c38ad703166e1"
        );
        assert_eq!(parsed.to_public_pem(), rfc8410);
        assert_eq!(
            VerifyingKey::from_public_pem(
                "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
            ),
            Err(CryptoError::InvalidPem)
        );
        assert_eq!(
            VerifyingKey::from_public_pem("not pem"),
            Err(CryptoError::InvalidPem)
        );
    }

    #[test]
    fn serde_is_bytes_in_cbor_and_hex_in_json() {
        let vk = SigningKey::from_seed(&[2u8; 32]).verifying_key();
        let mut cbor = Vec::new();
        ciborium::ser::into_writer(&vk, &mut cbor).unwrap();
        assert_eq!(&cbor[..2], &[0x58, 0x20], "a 32-byte CBOR byte string");
        assert_eq!(&cbor[2..], &vk.to_bytes());
        let back: VerifyingKey = ciborium::de::from_reader(cbor.as_slice()).unwrap();
        assert_eq!(back, vk);
        let json = serde_json::to_string(&vk).unwrap();
        assert_eq!(json, format!("\"{}\"", hex::encode(vk.to_bytes())));
        assert_eq!(serde_json::from_str::<VerifyingKey>(&json).unwrap(), vk);
        // The identity point is refused on the way in.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let bad = format!("\"{}\"", hex::encode(identity));
        assert!(serde_json::from_str::<VerifyingKey>(&bad).is_err());
        assert!(serde_json::from_str::<VerifyingKey>("\"abcd\"").is_err());
    }

    #[test]
    fn small_order_and_undecodable_keys_are_refused() {
        // The identity point (y = 1) has order 1.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(
            VerifyingKey::from_bytes(&identity),
            Err(CryptoError::InvalidPublicKey)
        );
        // y = 2 is not the y-coordinate of any curve point.
        let mut not_on_curve = [0u8; 32];
        not_on_curve[0] = 2;
        assert_eq!(
            VerifyingKey::from_bytes(&not_on_curve),
            Err(CryptoError::InvalidPublicKey)
        );
    }
}
