//! Keyed PIN verification data: what the issuer host keeps instead of a PIN.
//!
//! `tag = HMAC-SHA-256(PVK, "kessai/pin-verification/v1" ‖ 0x00 ‖ salt ‖
//! len(PAN) ‖ PAN ‖ len(PIN) ‖ PIN)`, PAN and PIN as ASCII digits, lengths as
//! one byte. The per-card salt makes equal PINs on different cards give
//! unrelated tags; the key makes an offline guess of a 4-digit PIN from a
//! stolen database impossible without the key as well.

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use kessai_secrets::{CardNumber, Pin, SecretKey};
use rand_core::CryptoRng;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::{PinBlock, PinError, PinKey, decipher_pin_block};

type HmacSha256 = Hmac<Sha256>;

/// Domain separation: a tag for this purpose can never be confused with an
/// HMAC the issuer computes for something else under a reused key.
const LABEL: &[u8] = b"kessai/pin-verification/v1";
/// First byte of the stored form.
const FORMAT_VERSION: u8 = 1;
/// Salt length in bytes.
pub(crate) const SALT_LEN: usize = 16;
/// Tag length in bytes (full HMAC-SHA-256 output).
pub(crate) const TAG_LEN: usize = 32;

/// The issuer's PIN verification key (PVK), 256 bits. Zeroized on drop,
/// never printed. Its id and version are tracked by the caller's key store
/// next to each [`PinVerificationData`] made with it.
#[derive(Clone, PartialEq, Eq)]
pub struct PinVerificationKey(SecretKey<32>);

impl PinVerificationKey {
    /// Wraps 32 key bytes.
    pub fn new(key: SecretKey<32>) -> Self {
        Self(key)
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length; a 32-byte key cannot fail.
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(self.0.expose())
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(LABEL);
        mac.update(&[0]);
        mac
    }
}

impl fmt::Debug for PinVerificationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PinVerificationKey(redacted)")
    }
}

/// Per-card PIN verification data: a random salt and an HMAC-SHA-256 tag over
/// (salt, PAN, PIN) under the issuer's [`PinVerificationKey`]. This, never
/// the PIN or a PIN block, is what the host stores.
///
/// Stored as 49 bytes ([`Self::to_bytes`]): version `0x01` ‖ salt (16) ‖
/// tag (32). `Debug` does not print the tag (with the key it is a PIN
/// oracle).
#[derive(Clone)]
pub struct PinVerificationData {
    salt: [u8; SALT_LEN],
    tag: [u8; TAG_LEN],
}

impl PinVerificationData {
    /// Length of [`Self::to_bytes`].
    pub const STORED_LEN: usize = 1 + SALT_LEN + TAG_LEN;

    /// Makes verification data for a newly set PIN with a fresh salt from
    /// `rng`.
    pub fn generate(
        pan: &CardNumber,
        pin: &Pin,
        key: &PinVerificationKey,
        rng: &mut impl CryptoRng,
    ) -> Self {
        let mut salt = [0u8; SALT_LEN];
        rng.fill_bytes(&mut salt);
        Self::derive(pan, pin, key, salt)
    }

    /// Makes verification data with an explicit salt (for tests, or when the
    /// salt comes from the card record).
    pub fn derive(
        pan: &CardNumber,
        pin: &Pin,
        key: &PinVerificationKey,
        salt: [u8; SALT_LEN],
    ) -> Self {
        let tag = compute_tag(pan, pin, key, &salt).finalize().into_bytes();
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(&tag);
        Self { salt, tag: out }
    }

    /// True if `pin` is the PIN this data was made for, for this `pan`.
    /// The comparison is constant time.
    pub fn matches(&self, pan: &CardNumber, pin: &Pin, key: &PinVerificationKey) -> bool {
        compute_tag(pan, pin, key, &self.salt)
            .verify_slice(&self.tag)
            .is_ok()
    }

    /// The stored form: version ‖ salt ‖ tag.
    pub fn to_bytes(&self) -> [u8; Self::STORED_LEN] {
        let mut out = [0u8; Self::STORED_LEN];
        out[0] = FORMAT_VERSION;
        out[1..1 + SALT_LEN].copy_from_slice(&self.salt);
        out[1 + SALT_LEN..].copy_from_slice(&self.tag);
        out
    }

    /// Parses the stored form; a wrong length or unknown version is
    /// [`PinError::VerificationDataFormat`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, PinError> {
        if bytes.len() != Self::STORED_LEN || bytes[0] != FORMAT_VERSION {
            return Err(PinError::VerificationDataFormat);
        }
        let mut salt = [0u8; SALT_LEN];
        salt.copy_from_slice(&bytes[1..1 + SALT_LEN]);
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&bytes[1 + SALT_LEN..]);
        Ok(Self { salt, tag })
    }
}

impl fmt::Debug for PinVerificationData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PinVerificationData(v1, redacted)")
    }
}

impl PartialEq for PinVerificationData {
    fn eq(&self, other: &Self) -> bool {
        bool::from(self.salt.ct_eq(&other.salt) & self.tag.ct_eq(&other.tag))
    }
}
impl Eq for PinVerificationData {}

fn compute_tag(
    pan: &CardNumber,
    pin: &Pin,
    key: &PinVerificationKey,
    salt: &[u8; SALT_LEN],
) -> HmacSha256 {
    let pan_digits = pan.expose_digits();
    let pin_digits = pin.expose_digits();
    let mut mac = key.mac();
    mac.update(salt);
    // Lengths: PAN 12..=19, PIN 4..=12, both fit one byte.
    mac.update(&[pan_digits.len() as u8]);
    mac.update(pan_digits);
    mac.update(&[pin_digits.len() as u8]);
    for d in pin_digits.iter() {
        mac.update(&[b'0' + d]);
    }
    mac
}

/// Deciphers `block` (format 4, for `pan`, under `pin_key`) and checks the
/// PIN against the stored verification data in constant time.
///
/// `Err(PinError::Mismatch)` means a well-formed block with the wrong PIN;
/// the format errors ([`PinError::is_malformed_block`]) mean the block did
/// not decipher (wrong key, wrong PAN, tampering). A host counts both kinds
/// as a failed try. The PIN exists only inside this call and is zeroized
/// before it returns.
pub fn verify_pin_block(
    block: &PinBlock,
    pan: &CardNumber,
    pin_key: &PinKey,
    data: &PinVerificationData,
    verification_key: &PinVerificationKey,
) -> Result<(), PinError> {
    let pin = decipher_pin_block(block, pan, pin_key)?;
    if data.matches(pan, &pin, verification_key) {
        Ok(())
    } else {
        Err(PinError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pvk(b: u8) -> PinVerificationKey {
        PinVerificationKey::new(SecretKey::new([b; 32]))
    }

    #[test]
    fn tag_is_hmac_sha256_over_the_documented_message() {
        // Recompute the documented construction by hand with the hmac crate
        // directly, so a change of encoding cannot go unnoticed.
        let pan = CardNumber::new("4111111111111111").unwrap();
        let pin = Pin::new("1234").unwrap();
        let salt = [0x5A; 16];
        let d = PinVerificationData::derive(&pan, &pin, &pvk(1), salt);
        let mut msg = Vec::new();
        msg.extend_from_slice(b"kessai/pin-verification/v1\0");
        msg.extend_from_slice(&salt);
        msg.push(16);
        msg.extend_from_slice(b"4111111111111111");
        msg.push(4);
        msg.extend_from_slice(b"1234");
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(&[1; 32]).unwrap();
        mac.update(&msg);
        let want = mac.finalize().into_bytes();
        assert_eq!(&d.to_bytes()[17..], want.as_slice());
        assert_eq!(d.to_bytes()[0], 1);
        assert_eq!(&d.to_bytes()[1..17], &salt);
    }

    #[test]
    fn rfc4231_case_2_pins_the_hmac_primitive() {
        // RFC 4231 test case 2 (HMAC-SHA-256, key "Jefe").
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn matches_only_the_right_pin_pan_and_key() {
        let pan = CardNumber::new("4111111111111111").unwrap();
        let pin = Pin::new("1234").unwrap();
        let d = PinVerificationData::derive(&pan, &pin, &pvk(1), [9; 16]);
        assert!(d.matches(&pan, &pin, &pvk(1)));
        assert!(!d.matches(&pan, &Pin::new("1235").unwrap(), &pvk(1)));
        assert!(!d.matches(&pan, &Pin::new("12340").unwrap(), &pvk(1)));
        assert!(!d.matches(&CardNumber::new("5555555555554444").unwrap(), &pin, &pvk(1)));
        assert!(!d.matches(&pan, &pin, &pvk(2)));
    }

    #[test]
    fn salt_separates_cards_with_equal_pins() {
        let pan = CardNumber::new("4111111111111111").unwrap();
        let pin = Pin::new("0000").unwrap();
        let a = PinVerificationData::derive(&pan, &pin, &pvk(1), [1; 16]);
        let b = PinVerificationData::derive(&pan, &pin, &pvk(1), [2; 16]);
        assert_ne!(a, b);
        assert_ne!(a.to_bytes()[17..], b.to_bytes()[17..]);
    }

    #[test]
    fn stored_form_round_trips_and_rejects_garbage() {
        let pan = CardNumber::new("4111111111111111").unwrap();
        let pin = Pin::new("987654").unwrap();
        let d = PinVerificationData::derive(&pan, &pin, &pvk(3), [4; 16]);
        let bytes = d.to_bytes();
        let back = PinVerificationData::from_bytes(&bytes).unwrap();
        assert_eq!(back, d);
        assert!(back.matches(&pan, &pin, &pvk(3)));
        assert_eq!(
            PinVerificationData::from_bytes(&bytes[..48]).unwrap_err(),
            PinError::VerificationDataFormat
        );
        let mut v2 = bytes;
        v2[0] = 2;
        assert_eq!(
            PinVerificationData::from_bytes(&v2).unwrap_err(),
            PinError::VerificationDataFormat
        );
        let mut flipped = bytes;
        flipped[40] ^= 1;
        let f = PinVerificationData::from_bytes(&flipped).unwrap();
        assert!(!f.matches(&pan, &pin, &pvk(3)));
    }

    #[test]
    fn debug_hides_tag_and_key() {
        let pan = CardNumber::new("4111111111111111").unwrap();
        let pin = Pin::new("1234").unwrap();
        let d = PinVerificationData::derive(&pan, &pin, &pvk(1), [0xEE; 16]);
        assert_eq!(format!("{d:?}"), "PinVerificationData(v1, redacted)");
        assert_eq!(format!("{:?}", pvk(1)), "PinVerificationKey(redacted)");
    }
}
