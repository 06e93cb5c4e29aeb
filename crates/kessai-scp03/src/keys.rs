//! Key derivation: the SCP03 KDF (GP Amendment D §6.2.1, NIST SP 800-108
//! counter mode with AES-CMAC), session keys, and per-card diversification
//! of static keys from an issuer master key.

use std::fmt;

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::Scp03Error;
use crate::crypto::AesKey;

/// Derivation constant: card cryptogram.
pub const DERIVE_CARD_CRYPTOGRAM: u8 = 0x00;
/// Derivation constant: host cryptogram.
pub const DERIVE_HOST_CRYPTOGRAM: u8 = 0x01;
/// Derivation constant: pseudo-random card challenge.
pub const DERIVE_CARD_CHALLENGE: u8 = 0x02;
/// Derivation constant: S-ENC.
pub const DERIVE_S_ENC: u8 = 0x04;
/// Derivation constant: S-MAC.
pub const DERIVE_S_MAC: u8 = 0x06;
/// Derivation constant: S-RMAC.
pub const DERIVE_S_RMAC: u8 = 0x07;

/// The SCP03 KDF (GP Card Spec v2.3 Amendment D §6.2.1): NIST SP 800-108
/// KDF in counter mode with AES-CMAC as PRF. Each block `i = 1, 2, ..` is
///
/// `CMAC(key, label(11 × 00) ‖ constant ‖ 00 ‖ L (2 bytes, bits) ‖ i ‖ context)`
///
/// and the first `len_bits / 8` bytes of the concatenation are returned.
/// `len_bits` is a multiple of 8 and at most `255 × 128`.
pub fn kdf(key: &AesKey, constant: u8, context: &[u8], len_bits: u16) -> Zeroizing<Vec<u8>> {
    debug_assert!(len_bits.is_multiple_of(8) && len_bits > 0);
    let len = usize::from(len_bits / 8);
    let mut out = Zeroizing::new(Vec::with_capacity(len + 16));
    let mut prefix = [0u8; 16];
    prefix[11] = constant;
    prefix[12] = 0x00;
    prefix[13..15].copy_from_slice(&len_bits.to_be_bytes());
    let mut i: u8 = 1;
    while out.len() < len {
        prefix[15] = i;
        out.extend_from_slice(&key.cmac(&[&prefix, context]));
        i = i.wrapping_add(1);
    }
    out.truncate(len);
    out
}

/// Purpose of a key derived from the issuer master key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyPurpose {
    /// SCP03 static encryption key (K-ENC).
    Enc,
    /// SCP03 static MAC key (K-MAC).
    Mac,
    /// SCP03 data encryption key (K-DEK).
    Dek,
    /// kessai extension: the card's application-cryptogram key (flow D
    /// card cryptogram, like an EMV ARQC key).
    ApplicationCryptogram,
    /// kessai extension: the key under which the card stores its PIN
    /// verification data.
    PinVerification,
}

impl KeyPurpose {
    /// The 5-byte purpose block of the KDF3 diversification.
    fn constant(self) -> [u8; 5] {
        let p = match self {
            Self::Enc => 0x01,
            Self::Mac => 0x02,
            Self::Dek => 0x03,
            Self::ApplicationCryptogram => 0x81,
            Self::PinVerification => 0x82,
        };
        [0x00, 0x00, 0x00, p, 0x00]
    }
}

/// Length of key diversification data (KDD) in INITIALIZE UPDATE.
pub const KDD_LEN: usize = 10;

/// Derives the 10-byte key diversification data (KDD) of a card from its
/// card id: the first 10 bytes of `SHA-256("kessai/scp03/kdd/v1" ‖ 00 ‖ card_id)`.
///
/// The card returns it in every INITIALIZE UPDATE response, so a host that
/// holds only the master key can compute the card's keys (see [`diversify`]).
pub fn kdd_for_card_id(card_id: &str) -> [u8; KDD_LEN] {
    let mut h = Sha256::new();
    h.update(b"kessai/scp03/kdd/v1");
    h.update([0u8]);
    h.update(card_id.as_bytes());
    let digest = h.finalize();
    let mut kdd = [0u8; KDD_LEN];
    kdd.copy_from_slice(&digest[..KDD_LEN]);
    kdd
}

/// Diversifies one card key from an issuer master key: the "KDF3" scheme of
/// GlobalPlatformPro, i.e. NIST SP 800-108 counter mode with AES-CMAC where
/// each block is `CMAC(master, i ‖ 00 00 00 p 00 ‖ KDD)` for `i = 1, 2, ..`
/// and `p` = 01 (ENC), 02 (MAC), 03 (DEK); kessai adds 81 (application
/// cryptogram) and 82 (PIN verification). The derived key has the length
/// of the master key.
pub fn diversify(master: &AesKey, purpose: KeyPurpose, kdd: &[u8; KDD_LEN]) -> AesKey {
    let len = master.len();
    let mut out = Zeroizing::new(Vec::with_capacity(32));
    let mut i: u8 = 1;
    while out.len() < len {
        out.extend_from_slice(&master.cmac(&[&[i], &purpose.constant(), kdd]));
        i += 1;
    }
    AesKey::from_slice(&out[..len]).expect("length is 16 or 32")
}

/// An SCP03 static key set: K-ENC, K-MAC, K-DEK with its key version
/// number (KVN). All three keys have the same length.
#[derive(Clone, PartialEq, Eq)]
pub struct StaticKeys {
    enc: AesKey,
    mac: AesKey,
    dek: AesKey,
    version: u8,
}

impl StaticKeys {
    /// A key set from three keys of equal length. `version` 0 on the host
    /// side means "whatever key set the card uses" (INITIALIZE UPDATE P1 = 00).
    pub fn new(enc: AesKey, mac: AesKey, dek: AesKey, version: u8) -> Result<Self, Scp03Error> {
        if enc.len() != mac.len() || enc.len() != dek.len() {
            return Err(Scp03Error::KeyLength);
        }
        Ok(Self {
            enc,
            mac,
            dek,
            version,
        })
    }

    /// ENC, MAC and DEK all equal to `key` (how test cards such as the
    /// GlobalPlatform default `404142..4F` are set up).
    pub fn single(key: AesKey, version: u8) -> Self {
        Self {
            enc: key.clone(),
            mac: key.clone(),
            dek: key,
            version,
        }
    }

    /// The card's key set diversified from the issuer `master` key and the
    /// card's KDD (see [`diversify`]).
    pub fn diversified(master: &AesKey, kdd: &[u8; KDD_LEN], version: u8) -> Self {
        Self {
            enc: diversify(master, KeyPurpose::Enc, kdd),
            mac: diversify(master, KeyPurpose::Mac, kdd),
            dek: diversify(master, KeyPurpose::Dek, kdd),
            version,
        }
    }

    /// K-ENC.
    pub fn enc(&self) -> &AesKey {
        &self.enc
    }
    /// K-MAC.
    pub fn mac(&self) -> &AesKey {
        &self.mac
    }
    /// K-DEK.
    pub fn dek(&self) -> &AesKey {
        &self.dek
    }
    /// Key version number.
    pub fn version(&self) -> u8 {
        self.version
    }

    /// The same keys under another version number.
    pub fn with_version(mut self, version: u8) -> Self {
        self.version = version;
        self
    }

    /// Derives the session keys for `context = host challenge ‖ card challenge`.
    pub fn session_keys(&self, context: &[u8]) -> SessionKeys {
        let bits = (self.enc.len() * 8) as u16;
        let mk = |k: &AesKey, c| AesKey::from_slice(&kdf(k, c, context, bits)).expect("length");
        SessionKeys {
            s_enc: mk(&self.enc, DERIVE_S_ENC),
            s_mac: mk(&self.mac, DERIVE_S_MAC),
            s_rmac: mk(&self.mac, DERIVE_S_RMAC),
        }
    }
}

impl fmt::Debug for StaticKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "StaticKeys(AES-{}, version {:#04x}, redacted)",
            self.enc.len() * 8,
            self.version
        )
    }
}

/// SCP03 session keys (S-ENC, S-MAC, S-RMAC), derived per session.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionKeys {
    /// Session encryption key: C-DECRYPTION and R-ENCRYPTION.
    pub s_enc: AesKey,
    /// Session command MAC key.
    pub s_mac: AesKey,
    /// Session response MAC key.
    pub s_rmac: AesKey,
}

impl fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKeys(redacted)")
    }
}

/// Card cryptogram: `KDF(S-MAC, 00, host challenge ‖ card challenge, 64)`.
pub fn card_cryptogram(keys: &SessionKeys, context: &[u8]) -> [u8; 8] {
    eight(&kdf(&keys.s_mac, DERIVE_CARD_CRYPTOGRAM, context, 64))
}

/// Host cryptogram: `KDF(S-MAC, 01, host challenge ‖ card challenge, 64)`.
pub fn host_cryptogram(keys: &SessionKeys, context: &[u8]) -> [u8; 8] {
    eight(&kdf(&keys.s_mac, DERIVE_HOST_CRYPTOGRAM, context, 64))
}

/// Pseudo-random card challenge (i parameter bit 0x10):
/// `KDF(K-ENC, 02, sequence counter (3 bytes) ‖ invoking AID, 64)`.
pub fn pseudo_random_card_challenge(
    keys: &StaticKeys,
    sequence_counter: u32,
    aid: &[u8],
) -> [u8; 8] {
    let seq = sequence_counter.to_be_bytes();
    let mut ctx = Vec::with_capacity(3 + aid.len());
    ctx.extend_from_slice(&seq[1..]);
    ctx.extend_from_slice(aid);
    eight(&kdf(&keys.enc, DERIVE_CARD_CHALLENGE, &ctx, 64))
}

fn eight(v: &[u8]) -> [u8; 8] {
    let mut out = [0u8; 8];
    out.copy_from_slice(&v[..8]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kdd_is_stable_and_distinct_per_card() {
        let a = kdd_for_card_id("card-1");
        assert_eq!(a, kdd_for_card_id("card-1"));
        assert_ne!(a, kdd_for_card_id("card-2"));
    }

    #[test]
    fn diversified_keys_differ_by_purpose_and_card() {
        let master = AesKey::Aes128([0x11; 16]);
        let kdd1 = kdd_for_card_id("c1");
        let kdd2 = kdd_for_card_id("c2");
        let k1 = StaticKeys::diversified(&master, &kdd1, 1);
        let k2 = StaticKeys::diversified(&master, &kdd2, 1);
        assert_ne!(k1, k2);
        assert_ne!(k1.enc(), k1.mac());
        assert_ne!(k1.mac(), k1.dek());
        assert_ne!(
            diversify(&master, KeyPurpose::ApplicationCryptogram, &kdd1),
            diversify(&master, KeyPurpose::PinVerification, &kdd1)
        );
        let m256 = AesKey::Aes256([0x22; 32]);
        assert_eq!(diversify(&m256, KeyPurpose::Enc, &kdd1).len(), 32);
    }

    #[test]
    fn static_keys_refuse_mixed_lengths() {
        assert_eq!(
            StaticKeys::new(
                AesKey::Aes128([0; 16]),
                AesKey::Aes256([0; 32]),
                AesKey::Aes128([0; 16]),
                1
            ),
            Err(Scp03Error::KeyLength)
        );
        let dbg = format!("{:?}", StaticKeys::single(AesKey::Aes128([0x40; 16]), 0x30));
        assert_eq!(dbg, "StaticKeys(AES-128, version 0x30, redacted)");
    }
}
