//! AES keys for PIN blocks.

use aes::cipher::{Array, BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};
use aes::{Aes128, Aes192, Aes256};
use kessai_secrets::SecretKey;

use crate::PinError;

/// The AES key a PIN block is enciphered under (a PIN encryption key or a
/// per-transaction key). Zeroized on drop; `Debug` shows only the size.
#[derive(Clone, PartialEq, Eq)]
pub enum PinKey {
    /// AES-128.
    Aes128(SecretKey<16>),
    /// AES-192.
    Aes192(SecretKey<24>),
    /// AES-256.
    Aes256(SecretKey<32>),
}

impl PinKey {
    /// Picks the AES variant from the key length (16, 24 or 32 bytes).
    pub fn from_slice(bytes: &[u8]) -> Result<Self, PinError> {
        match bytes.len() {
            16 => SecretKey::from_slice(bytes).map(PinKey::Aes128),
            24 => SecretKey::from_slice(bytes).map(PinKey::Aes192),
            32 => SecretKey::from_slice(bytes).map(PinKey::Aes256),
            _ => return Err(PinError::KeyLength),
        }
        .map_err(|_| PinError::KeyLength)
    }

    /// Key length in bits (128, 192 or 256).
    pub fn bits(&self) -> u16 {
        match self {
            PinKey::Aes128(_) => 128,
            PinKey::Aes192(_) => 192,
            PinKey::Aes256(_) => 256,
        }
    }

    pub(crate) fn cipher(&self) -> BlockCipher {
        match self {
            PinKey::Aes128(k) => {
                BlockCipher::Aes128(Aes128::new(Array::cast_from_core(k.expose())))
            }
            PinKey::Aes192(k) => {
                BlockCipher::Aes192(Aes192::new(Array::cast_from_core(k.expose())))
            }
            PinKey::Aes256(k) => {
                BlockCipher::Aes256(Aes256::new(Array::cast_from_core(k.expose())))
            }
        }
    }
}

impl std::fmt::Debug for PinKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PinKey(AES-{}, redacted)", self.bits())
    }
}

/// An expanded AES key (zeroized on drop by the `aes` crate's `zeroize`
/// feature).
pub(crate) enum BlockCipher {
    Aes128(Aes128),
    Aes192(Aes192),
    Aes256(Aes256),
}

impl BlockCipher {
    pub(crate) fn encrypt(&self, block: &mut [u8; 16]) {
        let b = Array::cast_from_core_mut(block);
        match self {
            BlockCipher::Aes128(c) => c.encrypt_block(b),
            BlockCipher::Aes192(c) => c.encrypt_block(b),
            BlockCipher::Aes256(c) => c.encrypt_block(b),
        }
    }

    pub(crate) fn decrypt(&self, block: &mut [u8; 16]) {
        let b = Array::cast_from_core_mut(block);
        match self {
            BlockCipher::Aes128(c) => c.decrypt_block(b),
            BlockCipher::Aes192(c) => c.decrypt_block(b),
            BlockCipher::Aes256(c) => c.decrypt_block(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_length_selects_the_aes_variant() {
        assert_eq!(PinKey::from_slice(&[1; 16]).unwrap().bits(), 128);
        assert_eq!(PinKey::from_slice(&[1; 24]).unwrap().bits(), 192);
        assert_eq!(PinKey::from_slice(&[1; 32]).unwrap().bits(), 256);
        for bad in [0usize, 8, 15, 17, 31, 33, 64] {
            assert_eq!(
                PinKey::from_slice(&vec![1; bad]),
                Err(PinError::KeyLength),
                "{bad}"
            );
        }
    }

    #[test]
    fn debug_never_shows_key_bytes() {
        let k = PinKey::from_slice(&[0xAB; 32]).unwrap();
        let s = format!("{k:?}");
        assert_eq!(s, "PinKey(AES-256, redacted)");
        assert!(!s.to_lowercase().contains("ab"));
    }

    /// FIPS-197 appendix C.1 (AES-128) known answer, to pin the cipher
    /// plumbing (in-place block casting) down independently of PIN logic.
    #[test]
    fn aes128_fips197_c1() {
        let key =
            PinKey::from_slice(&hex::decode("000102030405060708090a0b0c0d0e0f").unwrap()).unwrap();
        let mut block: [u8; 16] = hex::decode("00112233445566778899aabbccddeeff")
            .unwrap()
            .try_into()
            .unwrap();
        let c = key.cipher();
        c.encrypt(&mut block);
        assert_eq!(hex::encode(block), "69c4e0d86a7b0430d8cdb78070b4c55a");
        c.decrypt(&mut block);
        assert_eq!(hex::encode(block), "00112233445566778899aabbccddeeff");
    }
}
