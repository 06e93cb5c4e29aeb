//! Format-4 PIN blocks through the public API: published vectors with a
//! Luhn-valid PAN, round trips, PAN binding, wrong keys, tampering, PIN
//! length limits and host-side verification.

use kessai_pin::{
    PinBlock, PinError, PinKey, PinVerificationData, PinVerificationKey, decipher_pin_block,
    encipher_pin_block, encipher_pin_block_with_fill, verify_pin_block,
};
use kessai_secrets::{CardNumber, Pin, SecretKey};
use rand::SeedableRng;
use rand::rngs::StdRng;

const VECTORS: &str = include_str!("vectors/iso9564_format4.txt");

fn h(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

fn pin_string(pin: &Pin) -> String {
    pin.expose_digits()
        .iter()
        .map(|d| char::from(b'0' + d))
        .collect()
}

fn rng() -> StdRng {
    StdRng::seed_from_u64(0x6b65_7373_6169)
}

/// Every `encipher`/`decipher` vector whose PAN is a valid card number
/// (ISO/IEC 7812, Luhn) goes through the public API.
#[test]
fn published_vectors_with_valid_card_numbers() {
    let mut checked = 0;
    for line in VECTORS.lines().filter(|l| !l.starts_with('#')) {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.first() {
            Some(&"encipher") => {
                let Ok(pan) = CardNumber::new(f[4]) else {
                    continue;
                };
                let key = PinKey::from_slice(&h(f[2])).unwrap();
                let pin = Pin::new(f[3]).unwrap();
                let fill: [u8; 8] = h(f[5]).try_into().unwrap();
                let block = encipher_pin_block_with_fill(&pin, &pan, &key, &fill);
                assert_eq!(hex::encode_upper(block.expose_bytes()), f[6], "{line}");
                assert_eq!(decipher_pin_block(&block, &pan, &key).unwrap(), pin);
                checked += 1;
            }
            Some(&"decipher") => {
                let Ok(pan) = CardNumber::new(f[4]) else {
                    continue;
                };
                let key = PinKey::from_slice(&h(f[2])).unwrap();
                let block = PinBlock::from_slice(&h(f[5])).unwrap();
                let pin = decipher_pin_block(&block, &pan, &key).unwrap();
                assert_eq!(pin_string(&pin), f[3], "{line}");
                checked += 1;
            }
            _ => {}
        }
    }
    // 8 X9.24-3 AES-128 blocks + 2 AES-256 cross-checks use 4111111111111111.
    assert_eq!(checked, 10);
}

#[test]
fn round_trip_every_pin_length_and_key_size() {
    let mut rng = rng();
    let pan = CardNumber::new("5555555555554444").unwrap();
    for key_len in [16, 24, 32] {
        let key = PinKey::from_slice(&vec![0x42; key_len]).unwrap();
        for n in 4..=12 {
            let digits: String = "908172635445".chars().take(n).collect();
            let pin = Pin::new(&digits).unwrap();
            let block = encipher_pin_block(&pin, &pan, &key, &mut rng);
            let back = decipher_pin_block(&block, &pan, &key).unwrap();
            assert_eq!(pin_string(&back), digits, "key {key_len} len {n}");
        }
    }
}

#[test]
fn pan_lengths_12_to_19_round_trip() {
    let mut rng = rng();
    let key = PinKey::from_slice(&[7; 16]).unwrap();
    let pin = Pin::new("2468").unwrap();
    // Luhn-valid numbers of every length CardNumber accepts.
    for pan in [
        "123456789015",
        "1234567890128",
        "12345678901237",
        "378282246310005",
        "4111111111111111",
        "41111111111111113",
        "411111111111111118",
        "4111111111111111110",
    ] {
        let pan = CardNumber::new(pan).unwrap();
        let block = encipher_pin_block(&pin, &pan, &key, &mut rng);
        assert_eq!(decipher_pin_block(&block, &pan, &key).unwrap(), pin);
    }
}

#[test]
fn random_fill_makes_blocks_differ() {
    let mut rng = rng();
    let pan = CardNumber::new("4111111111111111").unwrap();
    let key = PinKey::from_slice(&[1; 16]).unwrap();
    let pin = Pin::new("1234").unwrap();
    let a = encipher_pin_block(&pin, &pan, &key, &mut rng);
    let b = encipher_pin_block(&pin, &pan, &key, &mut rng);
    assert_ne!(a, b);
    assert_eq!(decipher_pin_block(&a, &pan, &key).unwrap(), pin);
    assert_eq!(decipher_pin_block(&b, &pan, &key).unwrap(), pin);
}

/// A block built for one PAN never opens for another: over many blocks and
/// PAN pairs, deciphering with the wrong PAN fails the format checks.
#[test]
fn block_is_bound_to_its_pan() {
    let mut rng = rng();
    let key = PinKey::from_slice(&[3; 32]).unwrap();
    let pin = Pin::new("1234").unwrap();
    let pans = [
        "4111111111111111",
        "5555555555554444",
        "4012888888881881",
        "378282246310005",
        "6011111111111117",
    ]
    .map(|p| CardNumber::new(p).unwrap());
    for _ in 0..50 {
        for (i, right) in pans.iter().enumerate() {
            let block = encipher_pin_block(&pin, right, &key, &mut rng);
            for (j, wrong) in pans.iter().enumerate() {
                let res = decipher_pin_block(&block, wrong, &key);
                if i == j {
                    assert_eq!(res.unwrap(), pin);
                } else {
                    let err = res.unwrap_err();
                    assert!(err.is_malformed_block(), "{err:?}");
                }
            }
        }
    }
}

#[test]
fn wrong_key_is_refused() {
    let mut rng = rng();
    let pan = CardNumber::new("4111111111111111").unwrap();
    let pin = Pin::new("1234").unwrap();
    let right = PinKey::from_slice(&[1; 16]).unwrap();
    for wrong in [
        PinKey::from_slice(&[2; 16]).unwrap(),
        // Same first 16 bytes but AES-256: a different cipher altogether.
        PinKey::from_slice(&[1; 32]).unwrap(),
    ] {
        for _ in 0..100 {
            let block = encipher_pin_block(&pin, &pan, &right, &mut rng);
            assert!(
                decipher_pin_block(&block, &pan, &wrong)
                    .unwrap_err()
                    .is_malformed_block()
            );
        }
    }
}

#[test]
fn any_single_bit_flip_is_refused() {
    let pan = CardNumber::new("4111111111111111").unwrap();
    let key = PinKey::from_slice(&h("AF8CB133A78F8DC2D1359F18527593FB")).unwrap();
    let pin = Pin::new("1234").unwrap();
    let block = encipher_pin_block_with_fill(&pin, &pan, &key, &[0x2F; 8]);
    for bit in 0..128 {
        let mut bytes = *block.expose_bytes();
        bytes[bit / 8] ^= 1 << (bit % 8);
        let tampered = PinBlock::from_bytes(bytes);
        let err = decipher_pin_block(&tampered, &pan, &key).unwrap_err();
        assert!(err.is_malformed_block(), "bit {bit}: {err:?}");
    }
}

/// Enciphers a hand-made plaintext field with the format-4 procedure using
/// the `aes` crate directly, so malformed fields can be built.
fn encipher_raw(field: [u8; 16], pan_field: [u8; 16], key: &[u8; 16]) -> PinBlock {
    use aes::cipher::{Array, BlockCipherEncrypt, KeyInit};
    let c = aes::Aes128::new(&Array::from(*key));
    let mut b = Array::from(field);
    c.encrypt_block(&mut b);
    for (x, y) in b.iter_mut().zip(pan_field) {
        *x ^= y;
    }
    c.encrypt_block(&mut b);
    PinBlock::from_bytes(b.into())
}

#[test]
fn wrong_control_nibble_and_other_formats_are_refused() {
    let key = [0x31; 16];
    let pin_key = PinKey::from_slice(&key).unwrap();
    let pan = CardNumber::new("4111111111111111").unwrap();
    let pan_field: [u8; 16] = h("44111111111111111000000000000000").try_into().unwrap();
    // Sanity: the hand-built path agrees with the crate for a good field.
    let good = encipher_raw(
        h("441234AAAAAAAAAA0000000000000000").try_into().unwrap(),
        pan_field,
        &key,
    );
    assert_eq!(
        pin_string(&decipher_pin_block(&good, &pan, &pin_key).unwrap()),
        "1234"
    );
    // Control nibbles 0..=3 are the older formats, 5..=F are undefined.
    for control in (0u8..16).filter(|c| *c != 4) {
        let mut field: [u8; 16] = h("441234AAAAAAAAAA0000000000000000").try_into().unwrap();
        field[0] = (control << 4) | 0x4;
        let block = encipher_raw(field, pan_field, &key);
        assert_eq!(
            decipher_pin_block(&block, &pan, &pin_key),
            Err(PinError::ControlField),
            "control {control:X}"
        );
    }
    // Length nibble 3 and D, bad digit, bad fill.
    for (field, want) in [
        ("43123AAAAAAAAAAA0000000000000000", PinError::PinLength),
        ("4D1234567890123A0000000000000000", PinError::PinLength),
        ("4412F4AAAAAAAAAA0000000000000000", PinError::PinDigit),
        ("441234AAAAAAAAA00000000000000000", PinError::Fill),
    ] {
        let block = encipher_raw(h(field).try_into().unwrap(), pan_field, &key);
        assert_eq!(
            decipher_pin_block(&block, &pan, &pin_key),
            Err(want),
            "{field}"
        );
    }
}

#[test]
fn pin_length_limits_are_enforced_at_the_edges() {
    // Pin itself refuses 3 and 13 digits, so a format-4 block can only
    // carry 4..=12 (the length nibble tops out at C).
    assert!(Pin::new("123").is_err());
    assert!(Pin::new("1234567890123").is_err());
    let mut rng = rng();
    let pan = CardNumber::new("4111111111111111").unwrap();
    let key = PinKey::from_slice(&[5; 24]).unwrap();
    for digits in ["0000", "999999999999"] {
        let pin = Pin::new(digits).unwrap();
        let block = encipher_pin_block(&pin, &pan, &key, &mut rng);
        assert_eq!(
            pin_string(&decipher_pin_block(&block, &pan, &key).unwrap()),
            digits
        );
    }
}

#[test]
fn host_verifies_blocks_against_keyed_data() {
    let mut rng = rng();
    let pan = CardNumber::new("4111111111111111").unwrap();
    let pin = Pin::new("4321").unwrap();
    let pin_key = PinKey::from_slice(&[0x10; 16]).unwrap();
    let pvk = PinVerificationKey::new(SecretKey::new([0x20; 32]));
    let stored = PinVerificationData::generate(&pan, &pin, &pvk, &mut rng).to_bytes();
    let data = PinVerificationData::from_bytes(&stored).unwrap();

    let good = encipher_pin_block(&pin, &pan, &pin_key, &mut rng);
    assert_eq!(verify_pin_block(&good, &pan, &pin_key, &data, &pvk), Ok(()));

    let wrong_pin = encipher_pin_block(&Pin::new("4322").unwrap(), &pan, &pin_key, &mut rng);
    assert_eq!(
        verify_pin_block(&wrong_pin, &pan, &pin_key, &data, &pvk),
        Err(PinError::Mismatch)
    );

    let other_pvk = PinVerificationKey::new(SecretKey::new([0x21; 32]));
    assert_eq!(
        verify_pin_block(&good, &pan, &pin_key, &data, &other_pvk),
        Err(PinError::Mismatch)
    );

    let wrong_key = PinKey::from_slice(&[0x11; 16]).unwrap();
    assert!(
        verify_pin_block(&good, &pan, &wrong_key, &data, &pvk)
            .unwrap_err()
            .is_malformed_block()
    );
}

#[test]
fn nothing_secret_in_debug_or_errors() {
    let pan = CardNumber::new("4111111111111111").unwrap();
    let key = PinKey::from_slice(&[0x77; 16]).unwrap();
    let pin = Pin::new("8642").unwrap();
    let block = encipher_pin_block_with_fill(&pin, &pan, &key, &[0; 8]);
    let shown = format!("{block:?} {key:?}");
    assert!(!shown.contains(&hex::encode_upper(block.expose_bytes())));
    assert!(!shown.contains(&hex::encode(block.expose_bytes())));
    assert!(!shown.contains("77"));
    let err = decipher_pin_block(&block, &CardNumber::new("5555555555554444").unwrap(), &key)
        .unwrap_err();
    let msg = format!("{err} {err:?}");
    assert!(!msg.contains("8642") && !msg.contains("4111"));
}
