//! PIN handling for kessai: ISO 9564-1:2017 **format 4** PIN blocks (AES)
//! and keyed PIN verification data for the issuer host.
//!
//! What it does:
//! - [`encipher_pin_block`] builds the format-4 plaintext PIN field
//!   (control `4`, PIN length, PIN digits, fill `A`, eight random bytes from
//!   the injected RNG) and the PAN field (`M` = PAN length − 12, PAN digits,
//!   zero padding), then enciphers as the standard says:
//!   `C = E_K(E_K(PIN field) ⊕ PAN field)`. AES-128, AES-192 and AES-256
//!   keys are accepted ([`PinKey`]).
//! - [`decipher_pin_block`] reverses it and checks the control nibble, the
//!   PIN length, that every PIN nibble is a decimal digit and every fill
//!   nibble is `A`. A block enciphered for another PAN or under another key
//!   fails these checks (with overwhelming probability), so it is refused.
//! - [`PinVerificationData`] is what the host keeps instead of the PIN:
//!   HMAC-SHA-256 under an issuer [`PinVerificationKey`] over a per-card
//!   salt, the PAN and the PIN. [`verify_pin_block`] deciphers a block and
//!   compares in constant time.
//!
//! What it does not do:
//! - It never stores anything. **PIN blocks and PINs are never stored**:
//!   a [`PinBlock`] lives for one verification and is zeroized on drop; only
//!   [`PinVerificationData`] is meant for the database.
//! - Try counters and lockout belong to the host's store (they must survive
//!   restarts); this crate only answers "matches" or "does not".
//! - Key management (ids, versions, rotation, DUKPT) is the caller's job.
//! - No I/O, no clock; randomness is injected.
//!
//! ```
//! use kessai_pin::{
//!     decipher_pin_block, encipher_pin_block, verify_pin_block, PinKey,
//!     PinVerificationData, PinVerificationKey,
//! };
//! use kessai_secrets::{CardNumber, Pin, SecretKey};
//!
//! let mut rng = rand::rng();
//! let pan = CardNumber::new("4111111111111111").unwrap();
//! let pin = Pin::new("1234").unwrap();
//! let pin_key = PinKey::from_slice(&[0x11; 16]).unwrap();
//!
//! // Reader side: encipher the PIN for this PAN.
//! let block = encipher_pin_block(&pin, &pan, &pin_key, &mut rng);
//! assert_eq!(format!("{block:?}"), "PinBlock(redacted)");
//!
//! // Host side: keyed verification data was made at enrolment ...
//! let pvk = PinVerificationKey::new(SecretKey::new([0x22; 32]));
//! let pvd = PinVerificationData::generate(&pan, &pin, &pvk, &mut rng);
//! // ... and a block is checked against it.
//! assert!(verify_pin_block(&block, &pan, &pin_key, &pvd, &pvk).is_ok());
//!
//! // The same block does not open for another card.
//! let other = CardNumber::new("5555555555554444").unwrap();
//! assert!(decipher_pin_block(&block, &other, &pin_key).is_err());
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod block;
mod key;
mod verification;

pub use block::{PinBlock, decipher_pin_block, encipher_pin_block, encipher_pin_block_with_fill};
pub use key::PinKey;
pub use verification::{PinVerificationData, PinVerificationKey, verify_pin_block};

/// Errors from PIN block and verification-data handling. They never contain
/// PIN digits, PAN digits or key material.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PinError {
    /// A PIN block key must be 16, 24 or 32 bytes (AES-128/192/256).
    #[error("PIN block key must be 16, 24 or 32 bytes")]
    KeyLength,
    /// A format-4 PIN block is exactly 16 bytes.
    #[error("PIN block must be 16 bytes")]
    BlockLength,
    /// The deciphered control field is not 4. Usually the wrong key, the
    /// wrong PAN, a tampered block or a block of another format.
    #[error("PIN block control field is not format 4")]
    ControlField,
    /// The deciphered PIN length is outside 4..=12.
    #[error("PIN block PIN length is out of range")]
    PinLength,
    /// A deciphered PIN nibble is not a decimal digit.
    #[error("PIN block PIN digit is not decimal")]
    PinDigit,
    /// A deciphered fill nibble is not `A`.
    #[error("PIN block fill is wrong")]
    Fill,
    /// The PIN in the block does not match the verification data.
    #[error("PIN does not match")]
    Mismatch,
    /// Stored verification data is not a version this crate knows, or has
    /// the wrong length.
    #[error("PIN verification data is malformed")]
    VerificationDataFormat,
}

impl PinError {
    /// True for every error that means "this block did not decipher to a
    /// well-formed format-4 PIN field" (wrong key, wrong PAN, tampering).
    /// A host should count these, like [`PinError::Mismatch`], as a failed
    /// PIN try.
    pub fn is_malformed_block(&self) -> bool {
        matches!(
            self,
            PinError::ControlField | PinError::PinLength | PinError::PinDigit | PinError::Fill
        )
    }
}
