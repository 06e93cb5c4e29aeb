//! Identifiers for kessai.
//!
//! What it does:
//! - Text identifiers ([`StoreId`], [`MallId`], [`CardId`], [`AccountId`],
//!   [`KeyId`], ...) are newtypes over a validated string: 1–64 characters of
//!   `A-Z a-z 0-9 . _ : -`. One type per meaning, so a store id cannot be
//!   passed where a card id is expected.
//! - [`KeyRef`] names one version of a key (`host-sign#3`); it is what COSE
//!   artefacts carry as `kid`.
//! - [`TransferId`] is 16 bytes derived from a transfer's *natural key* (the
//!   bill, the transaction, the password) with SHA-256 under a domain label,
//!   so a retry of the same settlement always produces the same id and the
//!   ledger's unique constraint refuses a second posting.
//!
//! What it does not do: generate random ids (randomness is injected by the
//! caller) or look anything up.
//!
//! ```
//! use kessai_ids::{StoreId, TransferId};
//! let s: StoreId = "store-1".parse().unwrap();
//! assert!("bad id!".parse::<StoreId>().is_err());
//! let a = TransferId::derive("flow-b/bill", &[s.as_str().as_bytes(), b"order-7"]);
//! let b = TransferId::derive("flow-b/bill", &[s.as_str().as_bytes(), b"order-7"]);
//! assert_eq!(a, b);
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// An identifier failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Empty, longer than 64 characters, or with a character outside
    /// `A-Z a-z 0-9 . _ : -`.
    #[error("invalid {kind}: must be 1-64 characters of A-Z a-z 0-9 . _ : -")]
    Invalid {
        /// Which identifier type was being parsed.
        kind: &'static str,
    },
    /// A key reference is not `<key id>#<version>` with version ≥ 1.
    #[error("invalid key reference: expected '<key id>#<version>'")]
    InvalidKeyRef,
    /// A transfer id is not 32 hex digits.
    #[error("invalid transfer id: expected 32 hex digits")]
    InvalidTransferId,
}

fn valid_text_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

macro_rules! text_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps `s`.
            pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                if valid_text_id(&s) {
                    Ok(Self(s))
                } else {
                    Err(IdError::Invalid { kind: $kind })
                }
            }
            /// The identifier text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

text_id!(
    /// A merchant's store (seed 001: "store device"); also a POS merchant.
    StoreId,
    "store id"
);
text_id!(
    /// A mall that groups member stores (seed 001, mall embodiment).
    MallId,
    "mall id"
);
text_id!(
    /// An issued IC card (the card's own identifier, not its PAN).
    CardId,
    "card id"
);
text_id!(
    /// A ledger account.
    AccountId,
    "account id"
);
text_id!(
    /// A cardholder (customer) at the issuer.
    CardholderId,
    "cardholder id"
);
text_id!(
    /// A customer device: fingerprint device, phone, wallet.
    DeviceId,
    "device id"
);
text_id!(
    /// A merchant's order number / order reference.
    OrderId,
    "order id"
);
text_id!(
    /// A key's stable identifier; versions are counted under it.
    KeyId,
    "key id"
);
text_id!(
    /// A POS terminal.
    TerminalId,
    "terminal id"
);

/// One version of one key: `<key id>#<version>`, version ≥ 1.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyRef {
    /// The key's identifier.
    pub id: KeyId,
    /// The version, starting at 1 and increasing on every rotation.
    pub version: u32,
}

impl KeyRef {
    /// `id#version`.
    pub fn new(id: KeyId, version: u32) -> Result<Self, IdError> {
        if version == 0 {
            return Err(IdError::InvalidKeyRef);
        }
        Ok(Self { id, version })
    }

    /// The bytes carried as COSE `kid`: the UTF-8 of `id#version`.
    pub fn to_kid(&self) -> Vec<u8> {
        self.to_string().into_bytes()
    }

    /// Parses a COSE `kid`.
    pub fn from_kid(kid: &[u8]) -> Result<Self, IdError> {
        std::str::from_utf8(kid)
            .map_err(|_| IdError::InvalidKeyRef)?
            .parse()
    }
}

impl fmt::Display for KeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.id, self.version)
    }
}

impl fmt::Debug for KeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyRef({self})")
    }
}

impl FromStr for KeyRef {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (id, v) = s.rsplit_once('#').ok_or(IdError::InvalidKeyRef)?;
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) || v.starts_with('0') {
            return Err(IdError::InvalidKeyRef);
        }
        let version: u32 = v.parse().map_err(|_| IdError::InvalidKeyRef)?;
        KeyRef::new(KeyId::new(id).map_err(|_| IdError::InvalidKeyRef)?, version)
    }
}

impl Serialize for KeyRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for KeyRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A ledger transfer id: 16 bytes, shown as 32 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransferId(pub [u8; 16]);

impl TransferId {
    /// Derives the id from a natural key: SHA-256 over a domain label and
    /// the length-prefixed parts, truncated to 16 bytes. The same label and
    /// parts always give the same id; different ones collide only with
    /// probability 2^-64 per pair (birthday bound over 2^128).
    pub fn derive(domain: &str, parts: &[&[u8]]) -> Self {
        let mut h = Sha256::new();
        h.update(b"kessai/transfer-id/v1\0");
        h.update((domain.len() as u64).to_be_bytes());
        h.update(domain.as_bytes());
        for p in parts {
            h.update((p.len() as u64).to_be_bytes());
            h.update(p);
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
}

impl fmt::Display for TransferId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for TransferId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TransferId({self})")
    }
}

impl FromStr for TransferId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut id = [0u8; 16];
        if s.len() != 32 {
            return Err(IdError::InvalidTransferId);
        }
        hex::decode_to_slice(s, &mut id).map_err(|_| IdError::InvalidTransferId)?;
        Ok(Self(id))
    }
}

impl Serialize for TransferId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TransferId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_ids_validate() {
        assert!(StoreId::new("store-1").is_ok());
        assert!(StoreId::new("mall:a.b_c").is_ok());
        assert!(StoreId::new("").is_err());
        assert!(StoreId::new("a b").is_err());
        assert!(StoreId::new("x".repeat(65)).is_err());
        assert!(StoreId::new("ü").is_err());
        assert!(serde_json::from_str::<CardId>("\"a/b\"").is_err());
        assert_eq!(
            serde_json::from_str::<CardId>("\"card-9\"")
                .unwrap()
                .as_str(),
            "card-9"
        );
    }

    #[test]
    fn key_refs_round_trip_and_validate() {
        let k: KeyRef = "host-sign#3".parse().unwrap();
        assert_eq!(k.version, 3);
        assert_eq!(k.id.as_str(), "host-sign");
        assert_eq!(KeyRef::from_kid(&k.to_kid()).unwrap(), k);
        for bad in [
            "host-sign",
            "host-sign#0",
            "host-sign#",
            "#1",
            "a#01",
            "a#-1",
            "a#x",
        ] {
            assert!(bad.parse::<KeyRef>().is_err(), "{bad}");
        }
    }

    #[test]
    fn transfer_ids_are_deterministic_and_domain_separated() {
        let a = TransferId::derive("b", &[b"x", b"y"]);
        assert_eq!(a, TransferId::derive("b", &[b"x", b"y"]));
        assert_ne!(a, TransferId::derive("c", &[b"x", b"y"]));
        // Length prefixes keep part boundaries: ("xy","") != ("x","y").
        assert_ne!(TransferId::derive("b", &[b"xy", b""]), a);
        let s = a.to_string();
        assert_eq!(s.len(), 32);
        assert_eq!(s.parse::<TransferId>().unwrap(), a);
        assert!("zz".parse::<TransferId>().is_err());
    }
}
