//! Serde for fixed-size byte arrays as lower-case hex strings.

use serde::{Deserialize, Deserializer, Serializer};

pub(crate) fn serialize<const N: usize, S: Serializer>(
    b: &[u8; N],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(b))
}

pub(crate) fn deserialize<'de, const N: usize, D: Deserializer<'de>>(
    d: D,
) -> Result<[u8; N], D::Error> {
    let s = String::deserialize(d)?;
    let mut out = [0u8; N];
    hex::decode_to_slice(&s, &mut out).map_err(serde::de::Error::custom)?;
    Ok(out)
}
