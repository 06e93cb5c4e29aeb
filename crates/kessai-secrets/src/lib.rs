//! Types that carry secrets: card numbers, PINs, key material.
//!
//! Every type here:
//! - zeroizes its memory on drop;
//! - prints masked in `Debug` (a card number as BIN + last 4, a PIN and key
//!   bytes not at all) and has no `Display`, `AsRef` or `Serialize`, so a
//!   secret cannot reach a log line or a JSON body by accident;
//! - compares in constant time.
//!
//! Reaching the clear value takes an explicit `expose_*` call, easy to find
//! in review.
//!
//! What it does not do: encrypt, store or transmit anything.
//!
//! ```
//! use kessai_secrets::CardNumber;
//! let pan = CardNumber::new("4111111111111111").unwrap();
//! assert_eq!(format!("{pan:?}"), "CardNumber(411111******1111)");
//! assert!(CardNumber::new("4111111111111112").is_err()); // Luhn fails
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::fmt;

use serde::{Deserialize, Deserializer};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Errors from secret construction. They never echo the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// Not 12–19 decimal digits.
    #[error("card number must be 12 to 19 decimal digits")]
    CardNumberFormat,
    /// The Luhn check digit (ISO/IEC 7812-1 annex B) is wrong.
    #[error("card number check digit is wrong")]
    CardNumberCheckDigit,
    /// Not 4–12 decimal digits (ISO 9564-1).
    #[error("PIN must be 4 to 12 decimal digits")]
    PinFormat,
    /// Key bytes of the wrong length.
    #[error("key must be {expected} bytes")]
    KeyLength {
        /// The required length.
        expected: usize,
    },
}

/// ISO/IEC 7812-1 Luhn check over ASCII digits.
pub fn luhn_valid(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(d - b'0');
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

/// A primary account number (PAN), ISO/IEC 7812: 12–19 digits with a valid
/// Luhn check digit.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct CardNumber(Vec<u8>);

impl CardNumber {
    /// Validates length, digits and check digit. The error never contains
    /// the input.
    pub fn new(digits: &str) -> Result<Self, SecretError> {
        let b = Zeroizing::new(digits.as_bytes().to_vec());
        if !(12..=19).contains(&b.len()) || !b.iter().all(u8::is_ascii_digit) {
            return Err(SecretError::CardNumberFormat);
        }
        if !luhn_valid(&b) {
            return Err(SecretError::CardNumberCheckDigit);
        }
        Ok(Self(b.to_vec()))
    }

    /// The masked form shown anywhere a card number is displayed:
    /// first six digits (BIN), stars, last four.
    pub fn masked(&self) -> String {
        let n = self.0.len();
        let mut s = String::with_capacity(n);
        for (i, d) in self.0.iter().enumerate() {
            if i < 6 || i >= n - 4 {
                s.push(char::from(*d));
            } else {
                s.push('*');
            }
        }
        s
    }

    /// The last four digits, for receipts.
    pub fn last4(&self) -> String {
        let n = self.0.len();
        String::from_utf8_lossy(&self.0[n - 4..]).into_owned()
    }

    /// The clear digits as ASCII. Only PIN-block and keyed-hash code should
    /// call this.
    pub fn expose_digits(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for CardNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CardNumber({})", self.masked())
    }
}

impl PartialEq for CardNumber {
    fn eq(&self, other: &Self) -> bool {
        self.0.len() == other.0.len() && bool::from(self.0.ct_eq(&other.0))
    }
}
impl Eq for CardNumber {}

impl<'de> Deserialize<'de> for CardNumber {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Zeroizing::new(String::deserialize(d)?);
        CardNumber::new(&s).map_err(serde::de::Error::custom)
    }
}

/// A cardholder PIN: 4–12 decimal digits (ISO 9564-1).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Pin(Vec<u8>);

impl Pin {
    /// Validates a PIN; the error never contains the input.
    pub fn new(digits: &str) -> Result<Self, SecretError> {
        let b = digits.as_bytes();
        if !(4..=12).contains(&b.len()) || !b.iter().all(u8::is_ascii_digit) {
            return Err(SecretError::PinFormat);
        }
        Ok(Self(b.to_vec()))
    }

    /// The PIN digits as values 0–9 (not ASCII).
    pub fn expose_digits(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.0.iter().map(|d| d - b'0').collect())
    }

    /// Number of digits.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: a PIN has at least four digits.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pin(****)")
    }
}

impl PartialEq for Pin {
    fn eq(&self, other: &Self) -> bool {
        self.0.len() == other.0.len() && bool::from(self.0.ct_eq(&other.0))
    }
}
impl Eq for Pin {}

/// Fixed-size secret key bytes (AES keys, seeds, master keys).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SecretKey<const N: usize>([u8; N]);

impl<const N: usize> SecretKey<N> {
    /// Wraps key bytes.
    pub fn new(bytes: [u8; N]) -> Self {
        Self(bytes)
    }

    /// Copies key bytes from a slice of exactly `N` bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, SecretError> {
        let arr: [u8; N] = bytes
            .try_into()
            .map_err(|_| SecretError::KeyLength { expected: N })?;
        Ok(Self(arr))
    }

    /// The key bytes, for the crypto code that uses them.
    pub fn expose(&self) -> &[u8; N] {
        &self.0
    }
}

impl<const N: usize> fmt::Debug for SecretKey<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey<{N}>(redacted)")
    }
}

impl<const N: usize> PartialEq for SecretKey<N> {
    fn eq(&self, other: &Self) -> bool {
        bool::from(self.0.ct_eq(&other.0))
    }
}
impl<const N: usize> Eq for SecretKey<N> {}

/// Variable-length secret bytes (plaintext card data, decrypted payloads).
#[derive(Clone, Default, Zeroize, ZeroizeOnDrop)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    /// Wraps bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// The clear bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True if empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes({} bytes, redacted)", self.0.len())
    }
}

impl PartialEq for SecretBytes {
    fn eq(&self, other: &Self) -> bool {
        self.0.len() == other.0.len() && bool::from(self.0.ct_eq(&other.0))
    }
}
impl Eq for SecretBytes {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_accepts_known_test_numbers_and_rejects_single_digit_errors() {
        for good in [
            "4111111111111111",
            "5555555555554444",
            "378282246310005",
            "6011111111111117",
            "79927398713",
        ] {
            assert!(luhn_valid(good.as_bytes()), "{good}");
        }
        // Change any single digit of a valid number: Luhn must fail.
        let base = b"4111111111111111".to_vec();
        for i in 0..base.len() {
            for d in b'0'..=b'9' {
                if d == base[i] {
                    continue;
                }
                let mut v = base.clone();
                v[i] = d;
                assert!(!luhn_valid(&v));
            }
        }
    }

    #[test]
    fn card_numbers_validate_and_mask() {
        let pan = CardNumber::new("5555555555554444").unwrap();
        assert_eq!(pan.masked(), "555555******4444");
        assert_eq!(pan.last4(), "4444");
        let dbg = format!("{pan:?}");
        assert!(!dbg.contains("5555555555554444"));
        assert_eq!(
            CardNumber::new("4111 1111 1111 1111"),
            Err(SecretError::CardNumberFormat)
        );
        assert_eq!(
            CardNumber::new("41111111111"),
            Err(SecretError::CardNumberFormat)
        );
        assert_eq!(
            CardNumber::new("4111111111111112"),
            Err(SecretError::CardNumberCheckDigit)
        );
        let err = serde_json::from_str::<CardNumber>("\"4111111111111112\"").unwrap_err();
        assert!(!err.to_string().contains("4111111111111112"));
        assert_eq!(pan, CardNumber::new("5555555555554444").unwrap());
        assert_ne!(pan, CardNumber::new("4111111111111111").unwrap());
    }

    #[test]
    fn pins_validate_and_never_print() {
        let pin = Pin::new("1234").unwrap();
        assert_eq!(format!("{pin:?}"), "Pin(****)");
        assert_eq!(&*pin.expose_digits(), &[1, 2, 3, 4]);
        assert_eq!(Pin::new("123"), Err(SecretError::PinFormat));
        assert_eq!(Pin::new("1234567890123"), Err(SecretError::PinFormat));
        assert_eq!(Pin::new("12a4"), Err(SecretError::PinFormat));
    }

    #[test]
    fn keys_redact_and_check_length() {
        let k = SecretKey::<16>::new([7; 16]);
        assert_eq!(format!("{k:?}"), "SecretKey<16>(redacted)");
        assert_eq!(
            SecretKey::<16>::from_slice(&[0; 15]),
            Err(SecretError::KeyLength { expected: 16 })
        );
        let b = SecretBytes::new(b"secret".to_vec());
        assert!(!format!("{b:?}").contains("secret"));
    }
}
