//! The transaction id, digests and the serde helpers for byte fields.

use std::fmt;
use std::str::FromStr;

use kessai_ids::{KeyId, KeyRef, OrderId, StoreId, TransferId};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::FlowError;

/// A flow C transaction: 16 bytes derived from the merchant id and the
/// merchant's order reference (the transaction's natural key), shown as 32
/// lower-case hex digits.
///
/// Deriving instead of drawing it at random makes a duplicate merchant
/// request land on the same transaction (idempotency), and gives the
/// ledger transfer, the transaction key and every artefact one stable name.
/// The id is not a secret; nothing relies on it being unpredictable.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxnId([u8; 16]);

impl TxnId {
    /// The id of merchant `merchant`'s order `order_ref`: SHA-256 over a
    /// domain label and the length-prefixed parts, truncated to 16 bytes.
    pub fn derive(merchant: &StoreId, order_ref: &OrderId) -> Self {
        let mut h = Sha256::new();
        h.update(b"kessai/flow-c/txn-id/v1\0");
        for part in [merchant.as_str(), order_ref.as_str()] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        let d = h.finalize();
        let mut id = [0u8; 16];
        id.copy_from_slice(&d[..16]);
        Self(id)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// The ledger transfer that settles this transaction. One transaction,
    /// one transfer id: a retried settlement can never post twice.
    pub fn transfer_id(&self) -> TransferId {
        TransferId::derive("flow-c/txn", &[&self.0])
    }

    /// The key reference of this transaction's HPKE key pair (S6):
    /// `flowc-txn-<hex id>#1`. One key per transaction, never reused.
    pub fn transaction_key_ref(&self) -> KeyRef {
        // 42 characters of [a-z0-9-]: always a valid key id.
        let id =
            KeyId::new(format!("flowc-txn-{self}")).expect("flowc-txn-<32 hex> is a valid key id");
        KeyRef::new(id, 1).expect("version 1 is valid")
    }
}

impl fmt::Display for TxnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for TxnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TxnId({self})")
    }
}

impl FromStr for TxnId {
    type Err = FlowError;
    fn from_str(s: &str) -> Result<Self, FlowError> {
        let v = hex_decode(s).ok_or(FlowError::InvalidTxnId)?;
        Ok(Self(v.try_into().map_err(|_| FlowError::InvalidTxnId)?))
    }
}

impl Serialize for TxnId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        bytes::serialize(&self.0, s)
    }
}

impl<'de> Deserialize<'de> for TxnId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        bytes::deserialize(d).map(Self)
    }
}

/// SHA-256 over exact COSE bytes: how one artefact names another.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ArtefactDigest(pub [u8; 32]);

impl ArtefactDigest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }
}

impl fmt::Debug for ArtefactDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let head: String = self.0.iter().take(8).map(|b| format!("{b:02x}")).collect();
        write!(f, "ArtefactDigest({head}…)")
    }
}

impl fmt::Display for ArtefactDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl Serialize for ArtefactDigest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        bytes::serialize(&self.0, s)
    }
}

impl<'de> Deserialize<'de> for ArtefactDigest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        bytes::deserialize(d).map(Self)
    }
}

/// A ciphertext the host keeps between two calls (the sealed card data, so
/// that the PIN step can re-open it with the transaction key). Only
/// ciphertext, never plaintext; dropped when the transaction ends.
/// `Debug` shows its length and digest, not its bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed(Vec<u8>);

impl Sealed {
    /// Wraps ciphertext bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The digest of the bytes.
    pub fn digest(&self) -> ArtefactDigest {
        ArtefactDigest::of(&self.0)
    }
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sealed({} bytes, {:?})", self.0.len(), self.digest())
    }
}

impl Serialize for Sealed {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        bytes::serialize(&self.0, s)
    }
}

impl<'de> Deserialize<'de> for Sealed {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        bytes::deserialize_vec(d).map(Self)
    }
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if !b.len().is_multiple_of(2) {
        return None;
    }
    b.chunks_exact(2)
        .map(|p| {
            let hi = (p[0] as char).to_digit(16)?;
            let lo = (p[1] as char).to_digit(16)?;
            Some((hi * 16 + lo) as u8)
        })
        .collect()
}

/// Byte fields: a CBOR byte string in binary formats (artefact payloads),
/// lower-case hex in human-readable ones (JSON state).
pub(crate) mod bytes {
    use std::fmt;

    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            s.serialize_str(&hex)
        } else {
            s.serialize_bytes(bytes)
        }
    }

    struct V;
    impl Visitor<'_> for V {
        type Value = Vec<u8>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a byte string or hex digits")
        }
        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<u8>, E> {
            super::hex_decode(v).ok_or_else(|| E::custom("invalid hex"))
        }
    }

    pub(crate) fn deserialize_vec<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        if d.is_human_readable() {
            d.deserialize_str(V)
        } else {
            d.deserialize_bytes(V)
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> Result<[u8; N], D::Error> {
        let v = deserialize_vec(d)?;
        let n = v.len();
        v.try_into()
            .map_err(|_| de::Error::invalid_length(n, &"a fixed-length byte string"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txn_id_is_the_natural_key_and_round_trips() {
        let m: StoreId = "store-1".parse().unwrap();
        let o: OrderId = "order-7".parse().unwrap();
        let a = TxnId::derive(&m, &o);
        assert_eq!(a, TxnId::derive(&m, &o));
        assert_ne!(a, TxnId::derive(&m, &"order-8".parse().unwrap()));
        assert_ne!(a, TxnId::derive(&"store-2".parse().unwrap(), &o));
        // Length prefixes: ("ab", "c") and ("a", "bc") differ.
        let x = TxnId::derive(&"ab".parse().unwrap(), &"c".parse().unwrap());
        let y = TxnId::derive(&"a".parse().unwrap(), &"bc".parse().unwrap());
        assert_ne!(x, y);
        assert_eq!(a.to_string().parse::<TxnId>().unwrap(), a);
        assert!("zz".parse::<TxnId>().is_err());
        assert!("00".parse::<TxnId>().is_err());
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(json, format!("\"{a}\""));
        assert_eq!(serde_json::from_str::<TxnId>(&json).unwrap(), a);
        let mut cbor = Vec::new();
        ciborium::ser::into_writer(&a, &mut cbor).unwrap();
        assert_eq!(cbor[0], 0x50, "a 16-byte CBOR byte string");
        assert_eq!(
            ciborium::de::from_reader::<TxnId, _>(cbor.as_slice()).unwrap(),
            a
        );
    }

    #[test]
    fn key_ref_and_transfer_id_are_per_transaction() {
        let m: StoreId = "store-1".parse().unwrap();
        let a = TxnId::derive(&m, &"o-1".parse().unwrap());
        let b = TxnId::derive(&m, &"o-2".parse().unwrap());
        assert_ne!(a.transaction_key_ref(), b.transaction_key_ref());
        assert_ne!(a.transfer_id(), b.transfer_id());
        assert_eq!(
            a.transaction_key_ref().to_string(),
            format!("flowc-txn-{a}#1")
        );
    }

    #[test]
    fn sealed_debug_hides_bytes() {
        let s = Sealed::new(vec![0x41; 40]);
        let dbg = format!("{s:?}");
        assert!(dbg.starts_with("Sealed(40 bytes"), "{dbg}");
        assert!(!dbg.contains("4141"));
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Sealed>(&json).unwrap(), s);
    }
}
