//! ISO 9564-1:2017 format 4: plaintext PIN field, PAN field, enciphering and
//! deciphering.
//!
//! Layout (nibbles, 32 per 16-byte field):
//! - PIN field: `4`, `N` (PIN length 4..=12), `N` PIN digits, fill `A` up
//!   to nibble 15, then 16 nibbles (8 bytes) of random fill.
//! - PAN field: `M` (PAN length − 12, or 0 if shorter), the PAN as 12..=19
//!   digits (a shorter PAN is left-padded with zeros to 12), then zeros.
//! - Enciphering: `A = E_K(PIN field)`, `B = A ⊕ PAN field`, block `= E_K(B)`.

use std::fmt;

use kessai_secrets::{CardNumber, Pin};
use rand_core::CryptoRng;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::{PinError, PinKey};

/// Control field value of format 4.
const CONTROL_FORMAT_4: u8 = 0x4;
/// Fill nibble after the PIN digits.
const FILL: u8 = 0xA;
/// Nibbles 2..16 hold PIN digits and fill.
const PIN_AND_FILL_NIBBLES: usize = 14;

/// An enciphered format-4 PIN block (16 bytes).
///
/// PIN blocks are never stored: one is built by the reader, carried once to
/// the host, checked and dropped. The bytes are zeroized on drop, `Debug`
/// prints `PinBlock(redacted)`, and equality is constant time.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct PinBlock([u8; 16]);

impl PinBlock {
    /// Wraps 16 received bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// Copies a received block; anything but 16 bytes is
    /// [`PinError::BlockLength`].
    pub fn from_slice(bytes: &[u8]) -> Result<Self, PinError> {
        let arr: [u8; 16] = bytes.try_into().map_err(|_| PinError::BlockLength)?;
        Ok(Self(arr))
    }

    /// The enciphered bytes, for putting on the wire.
    pub fn expose_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Debug for PinBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PinBlock(redacted)")
    }
}

impl PartialEq for PinBlock {
    fn eq(&self, other: &Self) -> bool {
        bool::from(self.0.ct_eq(&other.0))
    }
}
impl Eq for PinBlock {}

/// Enciphers `pin` for `pan` under `key`, with eight bytes of random fill
/// drawn from `rng`. Two calls with the same inputs give different blocks.
pub fn encipher_pin_block(
    pin: &Pin,
    pan: &CardNumber,
    key: &PinKey,
    rng: &mut impl CryptoRng,
) -> PinBlock {
    let mut fill = Zeroizing::new([0u8; 8]);
    rng.fill_bytes(&mut fill[..]);
    encipher_pin_block_with_fill(pin, pan, key, &fill)
}

/// Like [`encipher_pin_block`] with the eight random fill bytes given
/// explicitly. The fill **must** be unpredictable and fresh for every block
/// (it is what makes two blocks of one PIN differ); this entry point exists
/// for known-answer tests and for callers whose randomness comes from
/// elsewhere (a PIN pad's own generator).
pub fn encipher_pin_block_with_fill(
    pin: &Pin,
    pan: &CardNumber,
    key: &PinKey,
    fill: &[u8; 8],
) -> PinBlock {
    let pin_field = pin_field(&pin.expose_digits(), fill);
    let pan_field = pan_field(pan.expose_digits());
    PinBlock(encipher_fields(&pin_field, &pan_field, key))
}

/// Deciphers a block enciphered for `pan` under `key` and returns the PIN,
/// after checking the control nibble, the PIN length, that the PIN nibbles
/// are decimal and that the fill nibbles are `A`.
///
/// A block made for another PAN or under another key deciphers to noise and
/// fails these checks except with probability below 2⁻²⁰; callers that need
/// certainty compare the PIN against [`crate::PinVerificationData`] (see
/// [`crate::verify_pin_block`]).
pub fn decipher_pin_block(
    block: &PinBlock,
    pan: &CardNumber,
    key: &PinKey,
) -> Result<Pin, PinError> {
    decipher_with_pan_digits(block, pan.expose_digits(), key)
}

/// Digit-level decipher; `pan_digits` are ASCII digits. Only validated card
/// numbers reach this outside tests.
pub(crate) fn decipher_with_pan_digits(
    block: &PinBlock,
    pan_digits: &[u8],
    key: &PinKey,
) -> Result<Pin, PinError> {
    let pan_field = pan_field(pan_digits);
    let pin_field = decipher_fields(&block.0, &pan_field, key);
    decode_pin_field(&pin_field)
}

pub(crate) fn encipher_fields(
    pin_field: &[u8; 16],
    pan_field: &[u8; 16],
    key: &PinKey,
) -> [u8; 16] {
    let cipher = key.cipher();
    let mut b = Zeroizing::new(*pin_field);
    cipher.encrypt(&mut b);
    xor_in_place(&mut b, pan_field);
    cipher.encrypt(&mut b);
    *b
}

pub(crate) fn decipher_fields(
    block: &[u8; 16],
    pan_field: &[u8; 16],
    key: &PinKey,
) -> Zeroizing<[u8; 16]> {
    let cipher = key.cipher();
    let mut b = Zeroizing::new(*block);
    cipher.decrypt(&mut b);
    xor_in_place(&mut b, pan_field);
    cipher.decrypt(&mut b);
    b
}

fn xor_in_place(a: &mut [u8; 16], b: &[u8; 16]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x ^= y;
    }
}

fn set_nibble(field: &mut [u8; 16], index: usize, value: u8) {
    let shift = if index.is_multiple_of(2) { 4 } else { 0 };
    field[index / 2] |= (value & 0x0F) << shift;
}

fn nibble(field: &[u8; 16], index: usize) -> u8 {
    let byte = field[index / 2];
    if index.is_multiple_of(2) {
        byte >> 4
    } else {
        byte & 0x0F
    }
}

/// The plaintext PIN field. `digits` are PIN digit values 0..=9 (as given by
/// `Pin::expose_digits`, which guarantees 4..=12 of them).
pub(crate) fn pin_field(digits: &[u8], fill: &[u8; 8]) -> Zeroizing<[u8; 16]> {
    let mut field = Zeroizing::new([0u8; 16]);
    let n = digits.len().min(12);
    set_nibble(&mut field, 0, CONTROL_FORMAT_4);
    // n <= 12 fits a nibble.
    set_nibble(&mut field, 1, n as u8);
    let pin_then_fill = digits[..n]
        .iter()
        .copied()
        .chain(std::iter::repeat(FILL))
        .take(PIN_AND_FILL_NIBBLES);
    for (i, v) in pin_then_fill.enumerate() {
        set_nibble(&mut field, 2 + i, v);
    }
    field[8..].copy_from_slice(fill);
    field
}

/// The PAN field from ASCII digits. Card numbers reaching this are 12..=19
/// digits (`CardNumber` guarantees it); shorter ones are left-padded with
/// zeros to 12 as the standard says, longer ones are cut at 19. Never panics.
pub(crate) fn pan_field(ascii_digits: &[u8]) -> Zeroizing<[u8; 16]> {
    let digits = &ascii_digits[..ascii_digits.len().min(19)];
    let mut field = Zeroizing::new([0u8; 16]);
    let m = digits.len().saturating_sub(12);
    // m <= 7 fits a nibble.
    set_nibble(&mut field, 0, m as u8);
    let pad = 12usize.saturating_sub(digits.len());
    for (i, d) in digits.iter().enumerate() {
        set_nibble(&mut field, 1 + pad + i, d.wrapping_sub(b'0'));
    }
    field
}

/// Checks and decodes a plaintext PIN field. Every nibble is examined
/// whatever the outcome, so timing does not tell where a check failed.
pub(crate) fn decode_pin_field(field: &[u8; 16]) -> Result<Pin, PinError> {
    let control = nibble(field, 0);
    let n = usize::from(nibble(field, 1));
    let mut digits_ok = true;
    let mut fill_ok = true;
    let mut ascii = Zeroizing::new(String::with_capacity(12));
    for i in 0..PIN_AND_FILL_NIBBLES {
        let v = nibble(field, 2 + i);
        if i < n {
            digits_ok &= v <= 9;
            ascii.push(char::from(b'0' + (v % 10)));
        } else {
            fill_ok &= v == FILL;
        }
    }
    if control != CONTROL_FORMAT_4 {
        return Err(PinError::ControlField);
    }
    if !(4..=12).contains(&n) {
        return Err(PinError::PinLength);
    }
    if !digits_ok {
        return Err(PinError::PinDigit);
    }
    if !fill_ok {
        return Err(PinError::Fill);
    }
    Pin::new(&ascii).map_err(|_| PinError::PinDigit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    fn h16(s: &str) -> [u8; 16] {
        h(s).try_into().unwrap()
    }

    fn h8(s: &str) -> [u8; 8] {
        h(s).try_into().unwrap()
    }

    fn digits(pin: &str) -> Vec<u8> {
        pin.bytes().map(|b| b - b'0').collect()
    }

    fn pin_str(pin: &Pin) -> String {
        pin.expose_digits()
            .iter()
            .map(|d| char::from(b'0' + d))
            .collect()
    }

    fn parse_error(name: &str) -> PinError {
        match name {
            "ControlField" => PinError::ControlField,
            "PinLength" => PinError::PinLength,
            "PinDigit" => PinError::PinDigit,
            "Fill" => PinError::Fill,
            other => panic!("unknown error name {other} in vector file"),
        }
    }

    const VECTORS: &str = include_str!("../tests/vectors/iso9564_format4.txt");

    /// Runs every line of the vector file (all sources, Luhn-valid PAN or
    /// not) through the digit-level functions.
    #[test]
    fn known_answer_vectors() {
        let mut counts = [0usize; 5];
        for line in VECTORS.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let f: Vec<&str> = line.split_whitespace().collect();
            match f[0] {
                "encipher" => {
                    let key = PinKey::from_slice(&h(f[2])).unwrap();
                    let pin_field = pin_field(&digits(f[3]), &h8(f[5]));
                    let pan = pan_field(f[4].as_bytes());
                    let block = encipher_fields(&pin_field, &pan, &key);
                    assert_eq!(hex::encode_upper(block), f[6], "{line}");
                    let pin =
                        decipher_with_pan_digits(&PinBlock(block), f[4].as_bytes(), &key).unwrap();
                    assert_eq!(pin_str(&pin), f[3], "{line}");
                    counts[0] += 1;
                }
                "decipher" => {
                    let key = PinKey::from_slice(&h(f[2])).unwrap();
                    let block = PinBlock(h16(f[5]));
                    let pin = decipher_with_pan_digits(&block, f[4].as_bytes(), &key).unwrap();
                    assert_eq!(pin_str(&pin), f[3], "{line}");
                    counts[1] += 1;
                }
                "reject" => {
                    let key = PinKey::from_slice(&h(f[2])).unwrap();
                    let block = PinBlock(h16(f[4]));
                    let err = decipher_with_pan_digits(&block, f[3].as_bytes(), &key).unwrap_err();
                    assert_eq!(err, parse_error(f[5]), "{line}");
                    counts[2] += 1;
                }
                "pin_field" => {
                    let field = pin_field(&digits(f[2]), &h8(f[3]));
                    assert_eq!(hex::encode_upper(*field), f[4], "{line}");
                    let pin = decode_pin_field(&field).unwrap();
                    assert_eq!(pin_str(&pin), f[2]);
                    counts[3] += 1;
                }
                "pan_field" => {
                    let field = pan_field(f[2].as_bytes());
                    assert_eq!(hex::encode_upper(*field), f[3], "{line}");
                    counts[4] += 1;
                }
                other => panic!("unknown vector kind {other}"),
            }
        }
        // Guard against a vector file that silently stopped parsing.
        assert_eq!(counts, [11, 5, 4, 2, 4]);
    }

    #[test]
    fn pin_field_layout_for_every_length() {
        for n in 4..=12usize {
            let d: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
            let field = pin_field(&d, &[0x5A; 8]);
            assert_eq!(nibble(&field, 0), 4);
            assert_eq!(usize::from(nibble(&field, 1)), n);
            for i in 0..PIN_AND_FILL_NIBBLES {
                let want = d.get(i).copied().unwrap_or(FILL);
                assert_eq!(nibble(&field, 2 + i), want, "n={n} i={i}");
            }
            assert_eq!(&field[8..], &[0x5A; 8]);
            assert_eq!(decode_pin_field(&field).unwrap().len(), n);
        }
    }

    #[test]
    fn decode_rejects_each_defect() {
        let good = h16("441234AAAAAAAAAA0123456789ABCDEF");
        assert!(decode_pin_field(&good).is_ok());
        let cases = [
            ("341234AAAAAAAAAA0123456789ABCDEF", PinError::ControlField),
            ("041234AAAAAAAAAA0123456789ABCDEF", PinError::ControlField),
            ("431234AAAAAAAAAA0123456789ABCDEF", PinError::PinLength),
            ("4D1234AAAAAAAAAA0123456789ABCDEF", PinError::PinLength),
            ("401234AAAAAAAAAA0123456789ABCDEF", PinError::PinLength),
            ("4412B4AAAAAAAAAA0123456789ABCDEF", PinError::PinDigit),
            ("441234ABAAAAAAAA0123456789ABCDEF", PinError::Fill),
            ("441234AAAAAAAAAF0123456789ABCDEF", PinError::Fill),
            // A 5-digit PIN claimed, but the fifth nibble is fill A.
            ("451234AAAAAAAAAA0123456789ABCDEF", PinError::PinDigit),
        ];
        for (hex, want) in cases {
            assert_eq!(decode_pin_field(&h16(hex)).unwrap_err(), want, "{hex}");
        }
    }

    #[test]
    fn twelve_digit_pin_uses_all_pin_nibbles() {
        let field = h16("4C123456789012AA0000000000000000");
        let pin = decode_pin_field(&field).unwrap();
        assert_eq!(pin_str(&pin), "123456789012");
        // 13 or more digits cannot be expressed: length nibble D is refused.
        let field = h16("4D1234567890123A0000000000000000");
        assert_eq!(decode_pin_field(&field).unwrap_err(), PinError::PinLength);
    }

    #[test]
    fn pan_field_never_panics_on_odd_input() {
        // Not reachable through CardNumber, but must not panic.
        let _ = pan_field(b"");
        let _ = pan_field(b"12345678901234567890123");
        let _ = pan_field(b"12ab");
    }

    #[test]
    fn block_from_slice_checks_length() {
        assert_eq!(
            PinBlock::from_slice(&[0; 15]).unwrap_err(),
            PinError::BlockLength
        );
        assert_eq!(
            PinBlock::from_slice(&[0; 17]).unwrap_err(),
            PinError::BlockLength
        );
        let b = PinBlock::from_slice(&[7; 16]).unwrap();
        assert_eq!(b.expose_bytes(), &[7; 16]);
        assert_eq!(b, PinBlock::from_bytes([7; 16]));
        assert_ne!(b, PinBlock::from_bytes([8; 16]));
    }
}
