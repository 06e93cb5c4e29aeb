//! Sealing secrets at rest under a 32-byte master key.
//!
//! Envelope: `0x01 || nonce (12 bytes, random) || AES-256-GCM ciphertext and
//! 16-byte tag`. The caller's associated data (for example the key reference
//! and the purpose, `b"host-sign#3/ed25519-seed"`) is authenticated but not
//! stored: opening with any other AAD fails, so an envelope copied into
//! another row or purpose does not open.
//!
//! Random 96-bit nonces keep the collision risk negligible up to about 2^32
//! envelopes per master key (NIST SP 800-38D section 8.3); rotate the master
//! key well before that.
//!
//! What it does not do: store, rotate or derive master keys.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use kessai_secrets::{SecretBytes, SecretKey};
use rand_core::CryptoRng;

use crate::error::CryptoError;

/// The envelope format version this code writes and reads.
pub const ENVELOPE_VERSION: u8 = 0x01;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Smallest possible envelope: version, nonce, tag of an empty plaintext.
const MIN_LEN: usize = 1 + NONCE_LEN + TAG_LEN;

fn cipher(master: &SecretKey<32>) -> Aes256Gcm {
    // Infallible: AES-256 takes exactly the 32 bytes the type guarantees.
    Aes256Gcm::new_from_slice(master.expose()).expect("a 32-byte key is an AES-256 key")
}

/// Encrypts `plaintext` under `master`, authenticating `aad`.
///
/// Cannot fail below the AES-GCM plaintext limit (2^36 - 32 bytes); a larger
/// secret is a caller bug.
pub fn seal_at_rest(
    master: &SecretKey<32>,
    aad: &[u8],
    plaintext: &[u8],
    rng: &mut impl CryptoRng,
) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill_bytes(&mut nonce);
    let ct = cipher(master)
        .encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .expect("AES-GCM sealing of a plaintext under 64 GiB cannot fail");
    let mut out = Vec::with_capacity(1 + NONCE_LEN + ct.len());
    out.push(ENVELOPE_VERSION);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out
}

/// Opens an envelope made by [`seal_at_rest`] with the same master key and
/// AAD.
pub fn open_at_rest(
    master: &SecretKey<32>,
    aad: &[u8],
    envelope: &[u8],
) -> Result<SecretBytes, CryptoError> {
    let (&version, rest) = envelope
        .split_first()
        .ok_or(CryptoError::TruncatedEnvelope)?;
    if version != ENVELOPE_VERSION {
        return Err(CryptoError::UnknownEnvelopeVersion { found: version });
    }
    if envelope.len() < MIN_LEN {
        return Err(CryptoError::TruncatedEnvelope);
    }
    let (nonce, ct) = rest.split_at(NONCE_LEN);
    let nonce: [u8; NONCE_LEN] = nonce
        .try_into()
        .map_err(|_| CryptoError::TruncatedEnvelope)?;
    cipher(master)
        .decrypt(&Nonce::from(nonce), Payload { msg: ct, aad })
        .map(SecretBytes::new)
        .map_err(|_| CryptoError::DecryptionFailed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn master(b: u8) -> SecretKey<32> {
        SecretKey::new([b; 32])
    }

    #[test]
    fn round_trip_with_layout() {
        let mut rng = StdRng::seed_from_u64(11);
        let env = seal_at_rest(&master(1), b"host-sign#3/seed", b"0123456789", &mut rng);
        assert_eq!(env[0], ENVELOPE_VERSION);
        assert_eq!(env.len(), 1 + 12 + 10 + 16);
        let pt = open_at_rest(&master(1), b"host-sign#3/seed", &env).unwrap();
        assert_eq!(pt.expose(), b"0123456789");
        // Empty plaintexts work too.
        let env = seal_at_rest(&master(1), b"", b"", &mut rng);
        assert_eq!(env.len(), MIN_LEN);
        assert!(open_at_rest(&master(1), b"", &env).unwrap().is_empty());
        // Fresh nonce each time.
        let a = seal_at_rest(&master(1), b"x", b"same", &mut rng);
        let b = seal_at_rest(&master(1), b"x", b"same", &mut rng);
        assert_ne!(a, b);
    }

    #[test]
    fn wrong_aad_key_tamper_and_truncation_fail() {
        let mut rng = StdRng::seed_from_u64(12);
        let env = seal_at_rest(&master(1), b"host-sign#3/seed", b"secret", &mut rng);
        let fail = Err(CryptoError::DecryptionFailed);
        assert_eq!(open_at_rest(&master(1), b"host-sign#4/seed", &env), fail);
        assert_eq!(open_at_rest(&master(2), b"host-sign#3/seed", &env), fail);
        for i in 1..env.len() {
            let mut bad = env.clone();
            bad[i] ^= 0x01;
            assert_eq!(
                open_at_rest(&master(1), b"host-sign#3/seed", &bad),
                fail,
                "byte {i}"
            );
        }
        let mut bad_version = env.clone();
        bad_version[0] = 0x02;
        assert_eq!(
            open_at_rest(&master(1), b"host-sign#3/seed", &bad_version),
            Err(CryptoError::UnknownEnvelopeVersion { found: 0x02 })
        );
        for n in 0..env.len() {
            let r = open_at_rest(&master(1), b"host-sign#3/seed", &env[..n]);
            assert!(r.is_err(), "truncation to {n} bytes opened");
            if n < MIN_LEN {
                assert_eq!(r, Err(CryptoError::TruncatedEnvelope), "length {n}");
            }
        }
    }
}
