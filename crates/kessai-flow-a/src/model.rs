//! Values shared by the device and host sides: templates, enrolment codes,
//! card information, published keys, policy, and the byte framing used for
//! associated data.

use std::fmt;

use kessai_crypto::hpke::HpkePublicKey;
use kessai_ids::{AccountId, CardholderId, DeviceId, KeyRef};
use kessai_secrets::CardNumber;
use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::FlowAError;

/// Largest template accepted, in bytes. An ISO/IEC 19794-2 record with one
/// view of 255 minutiae is under 1.6 KiB; the bound limits hostile input.
pub const MAX_TEMPLATE_LEN: usize = 8 * 1024;

/// The format identifier every ISO/IEC 19794-2 finger minutiae record
/// starts with (`"FMR\0"`).
pub const ISO19794_2_MAGIC: &[u8; 4] = b"FMR\0";

/// A fingerprint template: the bytes of an ISO/IEC 19794-2 finger minutiae
/// record, opaque to this crate (parsing and matching belong to the
/// biometric crate behind [`crate::FingerprintReader`]).
///
/// Biometric data is personal data: it zeroizes on drop and `Debug` shows
/// only its length. Construction checks the record's magic and size only.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct Template(Vec<u8>);

impl Template {
    /// Wraps a record; refuses anything that does not start with `FMR\0`,
    /// is shorter than a record header (24 bytes + 4), or is larger than
    /// [`MAX_TEMPLATE_LEN`].
    pub fn from_iso19794_2(bytes: Vec<u8>) -> Result<Self, FlowAError> {
        let bytes = Zeroizing::new(bytes);
        if bytes.len() < 28
            || bytes.len() > MAX_TEMPLATE_LEN
            || !bytes.starts_with(ISO19794_2_MAGIC)
        {
            return Err(FlowAError::BadTemplate);
        }
        Ok(Self(bytes.to_vec()))
    }

    /// The record bytes, for the matcher and for sealing.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Template({} bytes)", self.0.len())
    }
}

/// A one-time enrolment code: 10 decimal digits, issued by the issuer
/// (`kessai admin`) and given to the customer out of band. Zeroized on
/// drop, never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct EnrolmentCode(String);

impl EnrolmentCode {
    /// Number of digits.
    pub const DIGITS: usize = 10;

    /// Parses what a customer typed: spaces and hyphens are ignored, the
    /// rest must be exactly 10 digits.
    pub fn parse(text: &str) -> Result<Self, FlowAError> {
        let digits: Zeroizing<String> =
            Zeroizing::new(text.chars().filter(|c| *c != ' ' && *c != '-').collect());
        if digits.len() != Self::DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(FlowAError::EnrolmentCodeFormat);
        }
        Ok(Self(digits.to_string()))
    }

    /// A fresh uniformly random code (rejection sampling, no modulo bias).
    pub fn generate(rng: &mut impl CryptoRng) -> Self {
        let mut s = String::with_capacity(Self::DIGITS);
        while s.len() < Self::DIGITS {
            let mut b = [0u8; 1];
            rng.fill_bytes(&mut b);
            // 250 = 25 * 10: values 250..=255 would bias the digits.
            if b[0] < 250 {
                s.push(char::from(b'0' + b[0] % 10));
            }
            b.zeroize();
        }
        Self(s)
    }

    /// The digits, to show once to the issuer's operator or to hash.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for EnrolmentCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EnrolmentCode(**********)")
    }
}

impl PartialEq for EnrolmentCode {
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq;
        self.0.len() == other.0.len() && bool::from(self.0.as_bytes().ct_eq(other.0.as_bytes()))
    }
}
impl Eq for EnrolmentCode {}

impl Serialize for EnrolmentCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for EnrolmentCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Zeroizing::new(String::deserialize(d)?);
        Self::parse(&s).map_err(|_| serde::de::Error::custom("enrolment code must be 10 digits"))
    }
}

/// The registration binding secret (see
/// [`crate::artefacts::IdentityIdentification::binding_secret`]): 32 random
/// bytes known to the registering device and the host for the length of a
/// registration session. Zeroized on drop, never printed; serializes (hex
/// in JSON) only so the host can keep it in its short-lived session row —
/// store that row encrypted at rest.
#[derive(Clone, Zeroize, ZeroizeOnDrop, Serialize, Deserialize)]
pub struct BindingSecret(#[serde(with = "bytes_serde::array")] [u8; 32]);

impl BindingSecret {
    /// Fresh randomness.
    pub fn generate(rng: &mut impl CryptoRng) -> Self {
        let mut b = [0u8; 32];
        rng.fill_bytes(&mut b);
        let s = Self(b);
        b.zeroize();
        s
    }

    pub(crate) fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub(crate) fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    /// HMAC-SHA256 under the secret over `framed(label, parts)`.
    pub(crate) fn mac(&self, label: &str, parts: &[&[u8]]) -> [u8; 32] {
        hmac_sha256(&self.0, &framed(label, parts))
    }
}

impl fmt::Debug for BindingSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BindingSecret(redacted)")
    }
}

impl PartialEq for BindingSecret {
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq;
        bool::from(self.0.ct_eq(&other.0))
    }
}
impl Eq for BindingSecret {}

/// A card's expiry month (printed `MM/YY`). The card is valid up to the
/// end of that month, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardExpiry {
    /// Four-digit year, 2000–2099.
    pub year: u16,
    /// Month, 1–12.
    pub month: u8,
}

impl CardExpiry {
    /// Checks the ranges.
    pub fn new(year: u16, month: u8) -> Result<Self, FlowAError> {
        if !(2000..=2099).contains(&year) || !(1..=12).contains(&month) {
            return Err(FlowAError::Malformed("card expiry out of range"));
        }
        Ok(Self { year, month })
    }

    /// `MM/YY`, as printed on cards.
    pub fn display(&self) -> String {
        format!("{:02}/{:02}", self.month, self.year % 100)
    }

    /// The first instant (unix ms, UTC) at which the card is expired: the
    /// start of the month after the expiry month.
    pub fn end_ms(&self) -> u64 {
        let (y, m) = if self.month == 12 {
            (i64::from(self.year) + 1, 1)
        } else {
            (i64::from(self.year), i64::from(self.month) + 1)
        };
        let days = days_from_civil(y, m, 1);
        // Years 2000..=2100 give positive day counts far below overflow.
        u64::try_from(days).unwrap_or(0) * 86_400_000
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The card information the issuer provides for one device: the host
/// builds it from its card records and seals it under the storage key so
/// that only the host can read it again (claims 2, 5, 9). Never
/// serialized in clear.
#[derive(Clone, PartialEq, Eq)]
pub struct CardInformation {
    /// The card number.
    pub pan: CardNumber,
    /// Expiry month.
    pub expiry: CardExpiry,
    /// The customer it was issued to.
    pub cardholder: CardholderId,
    /// The ledger account payments are authorized against.
    pub funding_account: AccountId,
}

impl fmt::Debug for CardInformation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CardInformation")
            .field("pan", &self.pan)
            .field("expiry", &self.expiry)
            .field("cardholder", &self.cardholder)
            .field("funding_account", &self.funding_account)
            .finish()
    }
}

/// A public key the host hands out, with its versioned reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedKey {
    /// `<key id>#<version>`.
    pub key_ref: KeyRef,
    /// The HPKE (X25519) public key.
    pub public_key: HpkePublicKey,
}

/// The issuer's signing key as the device knows it: the trust anchor put
/// into the device at manufacture (or by the wallet from the issuer's
/// published keys).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuerAnchor {
    /// The issuer signing key's reference.
    pub key_ref: KeyRef,
    /// The issuer's Ed25519 verifying key.
    pub key: kessai_crypto::sign::VerifyingKey,
}

impl IssuerAnchor {
    /// A resolver for [`kessai_crypto::cose::verify_artefact`] that knows
    /// only this key.
    pub(crate) fn resolve(&self, r: &KeyRef) -> Option<kessai_crypto::sign::VerifyingKey> {
        (r == &self.key_ref).then_some(self.key)
    }
}

/// Host-side policy numbers. Units are in the names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Wrong enrolment codes accepted before a code is exhausted.
    pub enrolment_code_tries: u8,
    /// How long an enrolment code stays valid after issue.
    pub enrolment_code_ttl_ms: u64,
    /// How long a registration session (request → key registration) may
    /// take.
    pub registration_ttl_ms: u64,
    /// How long received signed transaction data is kept (claims 3, 10).
    pub retention_days: u32,
    /// How long a replaced transmission or storage key is still honoured
    /// after a key update (claims 4, 11).
    pub key_grace_ms: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            enrolment_code_tries: 3,
            enrolment_code_ttl_ms: 7 * 86_400_000,
            registration_ttl_ms: 15 * 60_000,
            retention_days: 400,
            key_grace_ms: 14 * 86_400_000,
        }
    }
}

/// HMAC-SHA256 (RFC 2104, RFC 4231).
pub(crate) fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    use hmac::{Hmac, KeyInit, Mac};
    // Infallible: HMAC accepts keys of any length.
    let mut mac =
        <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

/// Length-prefixed framing for associated data and MAC inputs: a domain
/// label, then each part as `u32 big-endian length || bytes`, so no two
/// different part lists give the same bytes.
pub(crate) fn framed(label: &str, parts: &[&[u8]]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(label.len() + 1 + parts.iter().map(|p| p.len() + 4).sum::<usize>());
    out.extend_from_slice(label.as_bytes());
    out.push(0);
    for p in parts {
        // Parts are ids, digests and counters: far below 4 GiB.
        out.extend_from_slice(&u32::try_from(p.len()).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(p);
    }
    out
}

/// Label of the key-registration binding MAC.
pub(crate) const BINDING_LABEL: &str = "kessai/flow-a/key-binding/v1";

/// Associated data binding the storage-sealed card information to a
/// device.
pub(crate) fn card_aad(device: &DeviceId) -> Vec<u8> {
    framed("kessai/flow-a/card-info/v1", &[device.as_str().as_bytes()])
}

/// Associated data binding the storage-sealed master template to a device.
pub(crate) fn template_aad(device: &DeviceId) -> Vec<u8> {
    framed(
        "kessai/flow-a/master-template/v1",
        &[device.as_str().as_bytes()],
    )
}

/// Associated data binding the transaction content to its envelope.
pub(crate) fn txn_aad(device: &DeviceId, counter: u64) -> Vec<u8> {
    framed(
        "kessai/flow-a/transaction/v1",
        &[device.as_str().as_bytes(), &counter.to_be_bytes()],
    )
}

/// Associated data binding the identity identification to a session.
pub(crate) fn identity_aad(device: &DeviceId, session_nonce: &[u8; 16]) -> Vec<u8> {
    framed(
        "kessai/flow-a/identity/v1",
        &[device.as_str().as_bytes(), session_nonce],
    )
}

/// Serde for byte strings: a CBOR byte string in binary formats, lower-case
/// hex in human-readable ones (JSON state files).
pub(crate) mod bytes_serde {
    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};
    use std::fmt;

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&hex::encode(bytes))
        } else {
            s.serialize_bytes(bytes)
        }
    }

    struct V;
    impl Visitor<'_> for V {
        type Value = Vec<u8>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a byte string or hex")
        }
        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }
        fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<u8>, E> {
            hex::decode(v).map_err(|_| E::custom("invalid hex"))
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        if d.is_human_readable() {
            d.deserialize_str(V)
        } else {
            d.deserialize_byte_buf(V)
        }
    }

    /// Fixed-length arrays (digests, nonces).
    pub mod array {
        use serde::{Deserializer, Serializer};

        pub fn serialize<S: Serializer, const N: usize>(
            bytes: &[u8; N],
            s: S,
        ) -> Result<S::Ok, S::Error> {
            super::serialize(bytes, s)
        }

        pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
            d: D,
        ) -> Result<[u8; N], D::Error> {
            let v = super::deserialize(d)?;
            v.as_slice().try_into().map_err(|_| {
                serde::de::Error::invalid_length(v.len(), &"a fixed-length byte string")
            })
        }
    }
}

/// Reader for the `key: hex` vector files under `tests/vectors/`.
#[cfg(test)]
pub(crate) mod vectors {
    use std::collections::BTreeMap;

    /// Records of a vector file: `name` as text, every other value hex-decoded.
    pub fn records(text: &str) -> Vec<BTreeMap<String, Vec<u8>>> {
        let mut out = Vec::new();
        let mut cur = BTreeMap::new();
        for line in text.lines().chain(std::iter::once("")) {
            let line = line.trim_end();
            if line.starts_with('#') {
                continue;
            }
            if line.is_empty() {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                continue;
            }
            let (k, v) = line.split_once(':').expect("key: value");
            let v = v.trim();
            let bytes = if k == "name" {
                v.as_bytes().to_vec()
            } else {
                hex::decode(v).expect("hex value")
            };
            cur.insert(k.to_owned(), bytes);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc4231() {
        let recs = vectors::records(include_str!("../tests/vectors/rfc4231.txt"));
        assert_eq!(recs.len(), 2);
        for r in recs {
            assert_eq!(
                hmac_sha256(&r["key"], &r["data"]).as_slice(),
                r["mac"].as_slice()
            );
        }
    }
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn card_expiry_end_is_start_of_next_month_utc() {
        // 2030-01-01T00:00:00Z = 1893456000 s.
        assert_eq!(
            CardExpiry::new(2029, 12).unwrap().end_ms(),
            1_893_456_000_000
        );
        // 2024-03-01T00:00:00Z = 1709251200 s (leap year February).
        assert_eq!(
            CardExpiry::new(2024, 2).unwrap().end_ms(),
            1_709_251_200_000
        );
        assert_eq!(CardExpiry::new(2029, 12).unwrap().display(), "12/29");
        assert!(CardExpiry::new(2029, 13).is_err());
        assert!(CardExpiry::new(1999, 1).is_err());
    }

    #[test]
    fn enrolment_codes_parse_generate_and_hide() {
        let c = EnrolmentCode::parse("12345-67890").unwrap();
        assert_eq!(c.expose(), "1234567890");
        assert_eq!(format!("{c:?}"), "EnrolmentCode(**********)");
        assert_eq!(c, EnrolmentCode::parse("1234 567 890").unwrap());
        assert!(EnrolmentCode::parse("123456789").is_err());
        assert!(EnrolmentCode::parse("12345678901").is_err());
        assert!(EnrolmentCode::parse("12345678a0").is_err());
        let mut rng = StdRng::seed_from_u64(1);
        let a = EnrolmentCode::generate(&mut rng);
        let b = EnrolmentCode::generate(&mut rng);
        assert_eq!(a.expose().len(), 10);
        assert!(a.expose().bytes().all(|b| b.is_ascii_digit()));
        assert_ne!(a, b);
    }

    #[test]
    fn templates_need_the_iso_magic_and_hide_their_bytes() {
        let mut rec = b"FMR\0 20\0".to_vec();
        rec.resize(40, 0);
        let t = Template::from_iso19794_2(rec.clone()).unwrap();
        assert_eq!(t.expose(), rec.as_slice());
        assert_eq!(format!("{t:?}"), "Template(40 bytes)");
        let mut bad = rec.clone();
        bad[0] = b'X';
        assert_eq!(Template::from_iso19794_2(bad), Err(FlowAError::BadTemplate));
        assert_eq!(
            Template::from_iso19794_2(b"FMR\0".to_vec()),
            Err(FlowAError::BadTemplate)
        );
        assert_eq!(
            Template::from_iso19794_2(vec![b'F'; MAX_TEMPLATE_LEN + 1]),
            Err(FlowAError::BadTemplate)
        );
    }

    #[test]
    fn framing_is_unambiguous() {
        assert_ne!(framed("l", &[b"ab", b"c"]), framed("l", &[b"a", b"bc"]));
        assert_ne!(framed("l", &[b"a"]), framed("m", &[b"a"]));
        let d: DeviceId = "dev-1".parse().unwrap();
        assert_ne!(txn_aad(&d, 1), txn_aad(&d, 2));
        assert_ne!(card_aad(&d), template_aad(&d));
    }
}
