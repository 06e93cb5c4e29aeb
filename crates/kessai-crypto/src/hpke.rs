//! HPKE (RFC 9180), one suite only: DHKEM(X25519, HKDF-SHA256) /
//! HKDF-SHA256 / AES-128-GCM (kem 0x0020, kdf 0x0001, aead 0x0001), base
//! mode, single-shot (one message per encapsulation, sequence number 0).
//!
//! What it does not do: PSK or Auth modes, multi-message contexts, other
//! suites. The COSE layer ([`crate::cose`]) builds on [`seal`] / [`open`].

use std::fmt;

use hpke::aead::AesGcm128;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};
use kessai_secrets::{SecretBytes, SecretKey};
use rand_core::CryptoRng;

use crate::error::CryptoError;

type Kem = X25519HkdfSha256;
type Kdf = HkdfSha256;
type Aead = AesGcm128;
type PrivateKey = <Kem as hpke::Kem>::PrivateKey;
type PublicKey = <Kem as hpke::Kem>::PublicKey;
type EncappedKey = <Kem as hpke::Kem>::EncappedKey;

/// A recipient's X25519 public key (32 bytes). Never a small-order point,
/// so encryption to it cannot fail.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct HpkePublicKey([u8; 32]);

impl HpkePublicKey {
    /// Validates and wraps a 32-byte X25519 public key. Small-order points
    /// (for which every Diffie-Hellman result is zero, RFC 9180 section
    /// 7.1.4) are refused.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, CryptoError> {
        let pk = PublicKey::from_bytes(bytes).map_err(|_| CryptoError::InvalidPublicKey)?;
        // A clamped scalar is a multiple of the cofactor, so DH with any of
        // them is zero exactly when the point has small order. Encapsulating
        // with a fixed ephemeral key runs that DH; its all-zero check is the
        // test.
        Kem::encap_with_rng(&pk, None, &mut FixedBytes::new(&[0x5a; 32]))
            .map_err(|_| CryptoError::InvalidPublicKey)?;
        Ok(Self(*bytes))
    }

    /// The 32 bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0
    }

    /// The 32 bytes, borrowed.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn to_hpke(&self) -> PublicKey {
        // Infallible: the length is fixed and any 32 bytes deserialize.
        PublicKey::from_bytes(&self.0).expect("32 bytes are an X25519 public key")
    }
}

/// A byte string in CBOR, 64 hex digits in JSON; validated on the way in.
impl serde::Serialize for HpkePublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        crate::key_serde::serialize(&self.0, s)
    }
}

impl<'de> serde::Deserialize<'de> for HpkePublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes = crate::key_serde::deserialize(d)?;
        Self::from_bytes(&bytes).map_err(serde::de::Error::custom)
    }
}

impl fmt::Debug for HpkePublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let head: String = self.0.iter().take(8).map(|b| format!("{b:02x}")).collect();
        write!(f, "HpkePublicKey({head}…)")
    }
}

/// A recipient key pair. The private key is zeroized on drop and never
/// printed.
#[derive(Clone)]
pub struct HpkeKeyPair {
    secret: PrivateKey,
    public: HpkePublicKey,
}

impl HpkeKeyPair {
    /// A fresh key pair: `DeriveKeyPair(random(32))` with the injected RNG.
    pub fn generate(rng: &mut impl CryptoRng) -> Self {
        let (sk, pk) = Kem::gen_keypair_with_rng(rng);
        Self::from_parts(sk, &pk)
    }

    /// RFC 9180 section 7.1.3 `DeriveKeyPair(ikm)`. `ikm` must carry at
    /// least 32 bytes of entropy; the output is deterministic.
    pub fn derive(ikm: &[u8]) -> Self {
        let (sk, pk) = Kem::derive_keypair(ikm);
        Self::from_parts(sk, &pk)
    }

    /// The key pair with private key `secret` (RFC 9180
    /// `DeserializePrivateKey`: the scalar is clamped).
    pub fn from_secret_bytes(secret: &[u8; 32]) -> Self {
        // Infallible: the length is fixed; X25519 accepts any 32 bytes.
        let sk = PrivateKey::from_bytes(secret).expect("32 bytes are an X25519 private key");
        let pk = Kem::sk_to_pk(&sk);
        Self::from_parts(sk, &pk)
    }

    /// The private key bytes (`SerializePrivateKey`, clamped), zeroized on
    /// drop — for sealing at rest only.
    pub fn secret_bytes(&self) -> SecretKey<32> {
        let mut out = [0u8; 32];
        self.secret.write_exact(&mut out);
        let key = SecretKey::new(out);
        zeroize::Zeroize::zeroize(&mut out);
        key
    }

    /// The public key to publish.
    pub fn public_key(&self) -> &HpkePublicKey {
        &self.public
    }

    fn from_parts(secret: PrivateKey, public: &PublicKey) -> Self {
        let mut bytes = [0u8; 32];
        public.write_exact(&mut bytes);
        Self {
            secret,
            public: HpkePublicKey(bytes),
        }
    }

    #[cfg(test)]
    pub(crate) fn hpke_secret(&self) -> &PrivateKey {
        &self.secret
    }
}

impl fmt::Debug for HpkeKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HpkeKeyPair(redacted, public {:?})", self.public)
    }
}

/// Single-shot base-mode Seal (RFC 9180 section 6.1): encrypts `plaintext`
/// to `recipient`, binding `info` (key schedule) and `aad` (AEAD). Returns
/// the encapsulated key `enc` and the ciphertext (with its 16-byte tag).
///
/// Cannot fail for a validated [`HpkePublicKey`] and a plaintext below the
/// AES-GCM limit of 2^36 - 32 bytes; larger inputs are a caller bug.
pub fn seal(
    recipient: &HpkePublicKey,
    info: &[u8],
    aad: &[u8],
    plaintext: &[u8],
    rng: &mut impl CryptoRng,
) -> ([u8; 32], Vec<u8>) {
    let (enc, ct) = hpke::single_shot_seal_with_rng::<Aead, Kdf, Kem>(
        &OpModeS::Base,
        &recipient.to_hpke(),
        info,
        plaintext,
        aad,
        rng,
    )
    .expect("HPKE seal to a validated key of a plaintext under 64 GiB cannot fail");
    let mut enc_bytes = [0u8; 32];
    enc.write_exact(&mut enc_bytes);
    (enc_bytes, ct)
}

/// Single-shot base-mode Open (RFC 9180 section 6.1). Any failure — wrong
/// key, `info`, `aad`, tampered `enc` or ciphertext — is
/// [`CryptoError::DecryptionFailed`].
pub fn open(
    recipient: &HpkeKeyPair,
    enc: &[u8; 32],
    info: &[u8],
    aad: &[u8],
    ciphertext: &[u8],
) -> Result<SecretBytes, CryptoError> {
    let enc = EncappedKey::from_bytes(enc).map_err(|_| CryptoError::DecryptionFailed)?;
    hpke::single_shot_open::<Aead, Kdf, Kem>(
        &OpModeR::Base,
        &recipient.secret,
        &enc,
        info,
        ciphertext,
        aad,
    )
    .map(SecretBytes::new)
    .map_err(|_| CryptoError::DecryptionFailed)
}

/// A "random" source that hands out fixed bytes, used to run a DH with a
/// known scalar for key validation. Never used for real randomness.
struct FixedBytes<'a> {
    bytes: &'a [u8],
}

impl<'a> FixedBytes<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }
}

impl rand_core::TryRng for FixedBytes<'_> {
    type Error = core::convert::Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        let mut b = [0u8; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        for (i, d) in dst.iter_mut().enumerate() {
            *d = self.bytes.get(i).copied().unwrap_or(0);
        }
        self.bytes = self.bytes.get(dst.len()..).unwrap_or(&[]);
        Ok(())
    }
}

impl rand_core::TryCryptoRng for FixedBytes<'_> {}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    /// Parses the `key: hex` records of a vector file into maps.
    pub(crate) fn records(text: &str) -> Vec<Vec<(String, String)>> {
        let mut out = Vec::new();
        let mut cur = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('#') {
                continue;
            }
            if line.is_empty() {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                continue;
            }
            let (k, v) = line.split_once(':').expect("key: value line");
            cur.push((k.trim().to_owned(), v.trim().to_owned()));
        }
        if !cur.is_empty() {
            out.push(cur);
        }
        out
    }

    fn field<'a>(rec: &'a [(String, String)], key: &str) -> &'a str {
        &rec.iter().find(|(k, _)| k == key).expect(key).1
    }

    fn hexf(rec: &[(String, String)], key: &str) -> Vec<u8> {
        hex::decode(field(rec, key)).expect("hex")
    }

    fn arr32(v: &[u8]) -> [u8; 32] {
        v.try_into().expect("32 bytes")
    }

    /// X25519 clamping (RFC 7748 section 5).
    fn clamp(mut k: [u8; 32]) -> [u8; 32] {
        k[0] &= 248;
        k[31] &= 127;
        k[31] |= 64;
        k
    }

    const A1: &str = include_str!("../tests/vectors/rfc9180-a1-1.txt");

    #[test]
    fn rfc9180_a1_1_base_mode_known_answers() {
        let recs = records(A1);
        let setup = &recs[0];
        assert_eq!(field(setup, "mode"), "0");
        assert_eq!(field(setup, "kem_id"), "32");
        assert_eq!(field(setup, "kdf_id"), "1");
        assert_eq!(field(setup, "aead_id"), "1");
        let info = hexf(setup, "info");

        // DeriveKeyPair(ikmR) gives the vector's recipient key pair. The RFC
        // prints skRm unclamped; SerializePrivateKey clamps (section 7.1.2),
        // and both forms are the same X25519 key.
        let kp = HpkeKeyPair::derive(&hexf(setup, "ikmR"));
        assert_eq!(kp.public_key().to_bytes().to_vec(), hexf(setup, "pkRm"));
        let sk_rm = arr32(&hexf(setup, "skRm"));
        assert_eq!(kp.secret_bytes().expose(), &clamp(sk_rm));
        let from_sk = HpkeKeyPair::from_secret_bytes(&sk_rm);
        assert_eq!(from_sk.public_key(), kp.public_key());
        // The ephemeral pair too.
        let eph = HpkeKeyPair::derive(&hexf(setup, "ikmE"));
        assert_eq!(eph.public_key().to_bytes().to_vec(), hexf(setup, "pkEm"));

        let enc = arr32(&hexf(setup, "enc"));
        let encryptions: Vec<_> = recs.iter().filter(|r| r[0].0 == "seq").collect();
        assert_eq!(encryptions.len(), 6);

        // Sequence 0 through the crate's single-shot API: open, and seal
        // with the vector's ephemeral IKM as the "randomness" (the hpke
        // crate's GenerateKeyPair is DeriveKeyPair(random(32))).
        let e0 = encryptions[0];
        assert_eq!(field(e0, "seq"), "0");
        let pt = hexf(e0, "pt");
        let aad = hexf(e0, "aad");
        let ct = hexf(e0, "ct");
        let opened = open(&kp, &enc, &info, &aad, &ct).unwrap();
        assert_eq!(opened.expose(), &pt[..]);
        let ikm_e = hexf(setup, "ikmE");
        let (enc_out, ct_out) = seal(
            kp.public_key(),
            &info,
            &aad,
            &pt,
            &mut FixedBytes::new(&ikm_e),
        );
        assert_eq!(enc_out, enc);
        assert_eq!(ct_out, ct);

        // The consecutive sequence numbers (0, 1, 2) through a receiver
        // context of the underlying crate keyed by our key pair.
        let receiver = || {
            hpke::setup_receiver::<Aead, Kdf, Kem>(
                &OpModeR::Base,
                kp.hpke_secret(),
                &EncappedKey::from_bytes(&enc).unwrap(),
                &info,
            )
            .unwrap()
        };
        let mut ctx = receiver();
        for (expected_seq, e) in encryptions.iter().take(3).enumerate() {
            assert_eq!(field(e, "seq"), expected_seq.to_string());
            let pt = ctx.open(&hexf(e, "ct"), &hexf(e, "aad")).unwrap();
            assert_eq!(pt, hexf(e, "pt"), "sequence {expected_seq}");
        }
        // Out of order (sequence 4 presented at 3) must fail.
        assert!(
            ctx.open(&hexf(encryptions[3], "ct"), &hexf(encryptions[3], "aad"))
                .is_err()
        );
        // All six listed encryptions (0, 1, 2, 4, 255, 256) from a sender
        // context to our public key with the vector's ephemeral IKM; the
        // unlisted sequence numbers in between are used up on filler.
        let (sender_enc, mut sender) = hpke::setup_sender_with_rng::<Aead, Kdf, Kem>(
            &OpModeS::Base,
            &kp.public_key().to_hpke(),
            &info,
            &mut FixedBytes::new(&ikm_e),
        )
        .unwrap();
        assert_eq!(sender_enc.to_bytes().as_slice(), &enc);
        let mut checked = 0;
        for seq in 0..=256u64 {
            match encryptions
                .iter()
                .find(|e| field(e, "seq") == seq.to_string())
            {
                Some(e) => {
                    let ct = sender.seal(&hexf(e, "pt"), &hexf(e, "aad")).unwrap();
                    assert_eq!(ct, hexf(e, "ct"), "sequence {seq}");
                    checked += 1;
                }
                None => {
                    sender.seal(b"filler", b"").unwrap();
                }
            }
        }
        assert_eq!(checked, 6);
        let exports: Vec<_> = recs
            .iter()
            .filter(|r| r[0].0 == "exporter_context")
            .collect();
        assert_eq!(exports.len(), 3);
        let ctx = receiver();
        for x in exports {
            let mut out = [0u8; 32];
            ctx.export(&hexf(x, "exporter_context"), &mut out).unwrap();
            assert_eq!(out.to_vec(), hexf(x, "exported_value"));
        }
    }

    #[test]
    fn round_trip_and_every_binding() {
        let mut rng = StdRng::seed_from_u64(9);
        let kp = HpkeKeyPair::generate(&mut rng);
        let (enc, ct) = seal(kp.public_key(), b"info", b"aad", b"card data", &mut rng);
        assert_eq!(ct.len(), b"card data".len() + 16);
        assert_eq!(
            open(&kp, &enc, b"info", b"aad", &ct).unwrap().expose(),
            b"card data"
        );
        let err = Err(CryptoError::DecryptionFailed);
        assert_eq!(open(&kp, &enc, b"inf0", b"aad", &ct), err);
        assert_eq!(open(&kp, &enc, b"info", b"aaD", &ct), err);
        let other = HpkeKeyPair::generate(&mut rng);
        assert_eq!(open(&other, &enc, b"info", b"aad", &ct), err);
        let mut bad_enc = enc;
        bad_enc[0] ^= 1;
        assert_eq!(open(&kp, &bad_enc, b"info", b"aad", &ct), err);
        for i in 0..ct.len() {
            let mut bad = ct.clone();
            bad[i] ^= 0x80;
            assert_eq!(open(&kp, &enc, b"info", b"aad", &bad), err);
        }
        assert_eq!(open(&kp, &enc, b"info", b"aad", &ct[..ct.len() - 1]), err);
        assert_eq!(open(&kp, &enc, b"info", b"aad", &[]), err);
        // Two seals of the same message differ (fresh ephemeral key).
        let (enc2, ct2) = seal(kp.public_key(), b"info", b"aad", b"card data", &mut rng);
        assert_ne!(enc, enc2);
        assert_ne!(ct, ct2);
    }

    #[test]
    fn secret_round_trip_and_redaction() {
        let mut rng = StdRng::seed_from_u64(3);
        let kp = HpkeKeyPair::generate(&mut rng);
        let again = HpkeKeyPair::from_secret_bytes(kp.secret_bytes().expose());
        assert_eq!(again.public_key(), kp.public_key());
        let dbg = format!("{kp:?}");
        assert!(dbg.starts_with("HpkeKeyPair(redacted"), "{dbg}");
        assert!(!dbg.contains(&hex::encode(kp.secret_bytes().expose())));
    }

    #[test]
    fn public_key_serde_validates() {
        let kp = HpkeKeyPair::derive(&[5; 32]);
        let mut cbor = Vec::new();
        ciborium::ser::into_writer(kp.public_key(), &mut cbor).unwrap();
        assert_eq!(&cbor[2..], kp.public_key().as_bytes());
        let back: HpkePublicKey = ciborium::de::from_reader(cbor.as_slice()).unwrap();
        assert_eq!(&back, kp.public_key());
        let json = serde_json::to_string(kp.public_key()).unwrap();
        assert_eq!(serde_json::from_str::<HpkePublicKey>(&json).unwrap(), back);
        let zero = format!("\"{}\"", "00".repeat(32));
        assert!(serde_json::from_str::<HpkePublicKey>(&zero).is_err());
        let mut short = Vec::new();
        ciborium::ser::into_writer(&ciborium::Value::Bytes(vec![9; 31]), &mut short).unwrap();
        assert!(ciborium::de::from_reader::<HpkePublicKey, _>(short.as_slice()).is_err());
    }

    #[test]
    fn small_order_public_keys_are_refused() {
        // u = 0 and u = 1 have small order on Curve25519 (RFC 7748).
        let mut one = [0u8; 32];
        one[0] = 1;
        for bad in [[0u8; 32], one] {
            assert_eq!(
                HpkePublicKey::from_bytes(&bad),
                Err(CryptoError::InvalidPublicKey)
            );
        }
        let mut rng = StdRng::seed_from_u64(4);
        let kp = HpkeKeyPair::generate(&mut rng);
        assert_eq!(
            HpkePublicKey::from_bytes(kp.public_key().as_bytes()).as_ref(),
            Ok(kp.public_key())
        );
    }
}
