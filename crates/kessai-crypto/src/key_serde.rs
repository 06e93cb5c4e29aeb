//! Serde for 32-byte public keys: a byte string in binary formats (CBOR
//! artefact payloads), lower-case hex in human-readable ones (JSON).
//! Deserializing validates through the key type's constructor.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserializer, Serializer};

pub(crate) fn serialize<S: Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
    if s.is_human_readable() {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        s.serialize_str(&hex)
    } else {
        s.serialize_bytes(bytes)
    }
}

pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = [u8; 32];

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a 32-byte key as a byte string or 64 hex digits")
        }

        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<[u8; 32], E> {
            v.try_into().map_err(|_| E::invalid_length(v.len(), &self))
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<[u8; 32], E> {
            let b = v.as_bytes();
            if b.len() != 64 {
                return Err(E::invalid_length(b.len(), &self));
            }
            let mut out = [0u8; 32];
            for (o, pair) in out.iter_mut().zip(b.chunks_exact(2)) {
                let hi = hex_digit(pair[0]).ok_or_else(|| E::custom("invalid hex digit"))?;
                let lo = hex_digit(pair[1]).ok_or_else(|| E::custom("invalid hex digit"))?;
                *o = (hi << 4) | lo;
            }
            Ok(out)
        }
    }
    if d.is_human_readable() {
        d.deserialize_str(V)
    } else {
        d.deserialize_bytes(V)
    }
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}
