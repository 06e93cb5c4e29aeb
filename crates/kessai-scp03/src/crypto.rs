//! AES primitives used by SCP03: AES-CMAC, single-block AES (for the
//! encryption-counter ICV), AES-CBC without padding, and ISO/IEC 9797-1
//! padding method 2 (`80 00 ..`).

use std::fmt;

use aes::cipher::{BlockCipherEncrypt, BlockModeDecrypt, BlockModeEncrypt, KeyInit, KeyIvInit};
use aes::{Aes128, Aes256};
use cmac::{Cmac, Mac};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::Scp03Error;

/// AES block length in bytes.
pub const BLOCK_LEN: usize = 16;

/// An AES key: 128 or 256 bits. SCP03 static keys, session keys and issuer
/// master keys are all of this type.
///
/// Zeroized on drop, redacted in `Debug`, compared in constant time.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub enum AesKey {
    /// AES-128.
    Aes128([u8; 16]),
    /// AES-256.
    Aes256([u8; 32]),
}

impl AesKey {
    /// Wraps 16 or 32 key bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, Scp03Error> {
        match bytes.len() {
            16 => {
                let mut k = [0u8; 16];
                k.copy_from_slice(bytes);
                Ok(Self::Aes128(k))
            }
            32 => {
                let mut k = [0u8; 32];
                k.copy_from_slice(bytes);
                Ok(Self::Aes256(k))
            }
            _ => Err(Scp03Error::KeyLength),
        }
    }

    /// Key length in bytes (16 or 32).
    pub fn len(&self) -> usize {
        match self {
            Self::Aes128(_) => 16,
            Self::Aes256(_) => 32,
        }
    }

    /// Always false: an AES key has 16 or 32 bytes.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The key bytes, for code that must store or export them (a card's
    /// persistent state, a host key store).
    pub fn expose(&self) -> &[u8] {
        match self {
            Self::Aes128(k) => k,
            Self::Aes256(k) => k,
        }
    }

    /// AES-CMAC (NIST SP 800-38B) over the concatenation of `parts`.
    pub fn cmac(&self, parts: &[&[u8]]) -> [u8; BLOCK_LEN] {
        fn run<C: Mac + KeyInit>(key: &[u8], parts: &[&[u8]]) -> [u8; BLOCK_LEN] {
            // Key length is fixed by the enum variant, so this cannot fail.
            let mut mac = <C as KeyInit>::new_from_slice(key).expect("key length fixed by variant");
            for p in parts {
                mac.update(p);
            }
            let tag = mac.finalize().into_bytes();
            let mut out = [0u8; BLOCK_LEN];
            out.copy_from_slice(&tag);
            out
        }
        match self {
            Self::Aes128(k) => run::<Cmac<Aes128>>(k, parts),
            Self::Aes256(k) => run::<Cmac<Aes256>>(k, parts),
        }
    }

    /// Encrypts one block in place (AES-ECB of a single block).
    pub fn encrypt_block(&self, block: &mut [u8; BLOCK_LEN]) {
        match self {
            Self::Aes128(k) => Aes128::new(k.into()).encrypt_block(block.into()),
            Self::Aes256(k) => Aes256::new(k.into()).encrypt_block(block.into()),
        }
    }

    /// AES-CBC encryption without padding; `data.len()` must be a multiple
    /// of 16.
    pub fn cbc_encrypt(&self, iv: &[u8; BLOCK_LEN], data: &mut [u8]) -> Result<(), Scp03Error> {
        if !data.len().is_multiple_of(BLOCK_LEN) {
            return Err(Scp03Error::BlockLength);
        }
        fn run<E: BlockModeEncrypt<BlockSize = aes::cipher::consts::U16>>(
            mut e: E,
            data: &mut [u8],
        ) {
            for chunk in data.chunks_exact_mut(BLOCK_LEN) {
                let block: &mut [u8; BLOCK_LEN] = chunk.try_into().expect("exact chunk");
                e.encrypt_block(block.into());
            }
        }
        match self {
            Self::Aes128(k) => run(cbc::Encryptor::<Aes128>::new(k.into(), iv.into()), data),
            Self::Aes256(k) => run(cbc::Encryptor::<Aes256>::new(k.into(), iv.into()), data),
        }
        Ok(())
    }

    /// AES-CBC decryption without padding; `data.len()` must be a multiple
    /// of 16.
    pub fn cbc_decrypt(&self, iv: &[u8; BLOCK_LEN], data: &mut [u8]) -> Result<(), Scp03Error> {
        if !data.len().is_multiple_of(BLOCK_LEN) {
            return Err(Scp03Error::BlockLength);
        }
        fn run<D: BlockModeDecrypt<BlockSize = aes::cipher::consts::U16>>(
            mut d: D,
            data: &mut [u8],
        ) {
            for chunk in data.chunks_exact_mut(BLOCK_LEN) {
                let block: &mut [u8; BLOCK_LEN] = chunk.try_into().expect("exact chunk");
                d.decrypt_block(block.into());
            }
        }
        match self {
            Self::Aes128(k) => run(cbc::Decryptor::<Aes128>::new(k.into(), iv.into()), data),
            Self::Aes256(k) => run(cbc::Decryptor::<Aes256>::new(k.into(), iv.into()), data),
        }
        Ok(())
    }
}

impl fmt::Debug for AesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AesKey<{}>(redacted)", self.len() * 8)
    }
}

impl PartialEq for AesKey {
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq;
        self.len() == other.len() && bool::from(self.expose().ct_eq(other.expose()))
    }
}
impl Eq for AesKey {}

/// ISO/IEC 9797-1 padding method 2: append `80`, then `00` up to a multiple
/// of 16 bytes (always at least one byte of padding).
pub fn pad(data: &[u8]) -> Zeroizing<Vec<u8>> {
    let padded_len = (data.len() / BLOCK_LEN + 1) * BLOCK_LEN;
    let mut out = Zeroizing::new(Vec::with_capacity(padded_len));
    out.extend_from_slice(data);
    out.push(0x80);
    out.resize(padded_len, 0);
    out
}

/// Removes ISO/IEC 9797-1 method 2 padding: the last non-zero byte must be
/// `80`. Like deployed cards and hosts, more zero bytes than needed are
/// accepted (a whole extra block of padding occurs in real transcripts);
/// the padding is only ever checked after the MAC has verified.
pub fn unpad(data: &[u8]) -> Result<&[u8], Scp03Error> {
    if data.is_empty() || !data.len().is_multiple_of(BLOCK_LEN) {
        return Err(Scp03Error::Padding);
    }
    let mut i = data.len();
    while i > 0 {
        i -= 1;
        match data[i] {
            0x00 => continue,
            0x80 => return Ok(&data[..i]),
            _ => return Err(Scp03Error::Padding),
        }
    }
    Err(Scp03Error::Padding)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_round_trips_and_rejects_garbage() {
        for n in 0..40 {
            let data: Vec<u8> = (0..n as u8).collect();
            let p = pad(&data);
            assert_eq!(p.len() % 16, 0);
            assert!(p.len() > data.len());
            assert_eq!(unpad(&p).unwrap(), &data[..]);
        }
        assert_eq!(unpad(&[0u8; 16]), Err(Scp03Error::Padding));
        assert_eq!(unpad(&[0x01; 16]), Err(Scp03Error::Padding));
        assert_eq!(unpad(&[0x80; 15]), Err(Scp03Error::Padding));
        // 80 in an earlier block followed by a whole zero block is accepted.
        let mut two = [0u8; 32];
        two[15] = 0x80;
        assert_eq!(unpad(&two).unwrap(), &[0u8; 15][..]);
        two[20] = 0x01;
        assert_eq!(unpad(&two), Err(Scp03Error::Padding));
    }

    #[test]
    fn cmac_matches_sp800_38b_example() {
        // NIST SP 800-38B, D.1 AES-128 Example 2 (16-byte message).
        let key =
            AesKey::from_slice(&hex::decode("2b7e151628aed2a6abf7158809cf4f3c").unwrap()).unwrap();
        let msg = hex::decode("6bc1bee22e409f96e93d7e117393172a").unwrap();
        assert_eq!(
            hex::encode(key.cmac(&[&msg[..8], &msg[8..]])),
            "070a16b46b4d4144f79bdd9dd04a287c"
        );
    }

    #[test]
    fn cbc_round_trips_and_checks_length() {
        let key = AesKey::Aes256([7; 32]);
        let iv = [9u8; 16];
        let mut data = [0x42u8; 48];
        key.cbc_encrypt(&iv, &mut data).unwrap();
        assert_ne!(data, [0x42u8; 48]);
        key.cbc_decrypt(&iv, &mut data).unwrap();
        assert_eq!(data, [0x42u8; 48]);
        assert_eq!(
            key.cbc_encrypt(&iv, &mut [0u8; 15]),
            Err(Scp03Error::BlockLength)
        );
        assert_eq!(AesKey::from_slice(&[0; 24]), Err(Scp03Error::KeyLength));
        assert_eq!(format!("{key:?}"), "AesKey<256>(redacted)");
    }
}
