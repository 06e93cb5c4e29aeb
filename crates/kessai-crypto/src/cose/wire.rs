//! CBOR plumbing shared by COSE_Sign1 and COSE_Encrypt0: strict decoding of
//! the tagged outer array, the protected header map, and the
//! `Sig_structure` / `Enc_structure` byte strings (RFC 9052 sections 4.4
//! and 5.3).
//!
//! Parsing is done on `ciborium::Value` rather than through coset's
//! `Header`, for two reasons: coset 0.4.2 refuses integer algorithm values
//! that IANA has not registered yet (HPKE-3 is still "TBD7, assumed 41" in
//! draft-ietf-cose-hpke), and kessai wants one strict reading — exact label
//! set, no duplicates, canonical outer encoding — for both structures.

use ciborium::Value;
use kessai_ids::KeyRef;

use crate::error::CoseError;

/// `alg` (RFC 9052).
pub(crate) const ALG: i64 = 1;
/// `crit` (RFC 9052).
pub(crate) const CRIT: i64 = 2;
/// `kid` (RFC 9052).
pub(crate) const KID: i64 = 4;
/// `typ` (RFC 9596).
pub(crate) const TYP: i64 = 16;

pub(crate) use super::MAX_OBJECT_LEN;

/// Decodes exactly one CBOR data item from `bytes`, refusing trailing bytes.
pub(crate) fn decode_one(bytes: &[u8]) -> Result<Value, CoseError> {
    if bytes.len() > MAX_OBJECT_LEN {
        return Err(CoseError::TooLarge {
            max: MAX_OBJECT_LEN,
        });
    }
    let mut rest = bytes;
    let value: Value =
        ciborium::de::from_reader(&mut rest).map_err(|_| CoseError::Malformed("invalid CBOR"))?;
    if !rest.is_empty() {
        return Err(CoseError::Malformed("trailing bytes after the CBOR item"));
    }
    Ok(value)
}

/// Encodes a value (infallible for the in-memory writer and the value
/// shapes built here).
pub(crate) fn encode(value: &Value) -> Result<Vec<u8>, CoseError> {
    let mut out = Vec::new();
    ciborium::ser::into_writer(value, &mut out).map_err(|_| CoseError::Encode)?;
    Ok(out)
}

/// The outer structure: tag `tag` around an array of `len` items. The
/// bytes must be the canonical encoding of what they decode to (no
/// non-minimal lengths, no indefinite-length items), so one artefact has
/// exactly one byte string and therefore one digest.
pub(crate) fn decode_tagged_array(
    bytes: &[u8],
    tag: u64,
    len: usize,
) -> Result<Vec<Value>, CoseError> {
    let value = decode_one(bytes)?;
    if encode(&value)? != bytes {
        return Err(CoseError::Malformed("non-canonical CBOR encoding"));
    }
    let Value::Tag(found, inner) = value else {
        return Err(CoseError::Malformed("missing COSE tag"));
    };
    if found != tag {
        return Err(CoseError::Malformed("wrong COSE tag"));
    }
    match *inner {
        Value::Array(items) if items.len() == len => Ok(items),
        _ => Err(CoseError::Malformed("wrong COSE array shape")),
    }
}

/// Like [`decode_tagged_array`] but accepting the untagged form too and no
/// canonical-encoding check: for reading other implementations' objects.
pub(crate) fn decode_lenient_array(
    bytes: &[u8],
    tag: u64,
    len: usize,
) -> Result<Vec<Value>, CoseError> {
    let value = match decode_one(bytes)? {
        Value::Tag(found, inner) if found == tag => *inner,
        Value::Tag(..) => return Err(CoseError::Malformed("wrong COSE tag")),
        other => other,
    };
    match value {
        Value::Array(items) if items.len() == len => Ok(items),
        _ => Err(CoseError::Malformed("wrong COSE array shape")),
    }
}

/// Takes a byte string out of a decoded item.
pub(crate) fn bytes_of(value: Value, what: &'static str) -> Result<Vec<u8>, CoseError> {
    match value {
        Value::Bytes(b) => Ok(b),
        _ => Err(CoseError::Malformed(what)),
    }
}

/// Takes a map out of a decoded item, refusing non-integer and duplicate
/// labels.
pub(crate) fn int_map(value: Value) -> Result<Vec<(i64, Value)>, CoseError> {
    let Value::Map(entries) = value else {
        return Err(CoseError::Malformed("header is not a map"));
    };
    let mut out: Vec<(i64, Value)> = Vec::with_capacity(entries.len());
    for (k, v) in entries {
        let label = match k {
            Value::Integer(i) => {
                i64::try_from(i).map_err(|_| CoseError::UnexpectedHeader("label out of range"))?
            }
            Value::Text(_) => return Err(CoseError::UnexpectedHeader("text label")),
            _ => return Err(CoseError::Malformed("header label is not int or text")),
        };
        if out.iter().any(|(l, _)| *l == label) {
            return Err(CoseError::Malformed("duplicate header label"));
        }
        out.push((label, v));
    }
    Ok(out)
}

/// Like [`int_map`] but skipping text labels (other implementations may
/// use them; the raw readers ignore what they do not need).
pub(crate) fn int_map_lenient(value: Value) -> Result<Vec<(i64, Value)>, CoseError> {
    let Value::Map(entries) = value else {
        return Err(CoseError::Malformed("header is not a map"));
    };
    let ints = entries
        .into_iter()
        .filter(|(k, _)| !matches!(k, Value::Text(_)))
        .collect();
    int_map(Value::Map(ints))
}

/// The protected header of a kessai artefact, fully checked except for the
/// algorithm value, which the caller compares with its own.
#[derive(Debug, Clone)]
pub(crate) struct ArtefactHeader {
    /// `alg` as an integer.
    pub(crate) alg: i64,
    /// `kid` parsed as a key reference.
    pub(crate) kid: KeyRef,
    /// `typ` text.
    pub(crate) typ: String,
    /// The kessai format version (label [`super::VERSION_LABEL`]).
    pub(crate) version: u32,
}

/// Parses a protected header byte string: exactly `alg`, `kid`, `typ` and
/// the version label; `crit` anywhere is refused.
pub(crate) fn parse_artefact_header(protected: &[u8]) -> Result<ArtefactHeader, CoseError> {
    if protected.is_empty() {
        return Err(CoseError::UnsupportedAlgorithm);
    }
    let mut alg = None;
    let mut kid = None;
    let mut typ = None;
    let mut version = None;
    for (label, value) in int_map(decode_one(protected)?)? {
        match label {
            ALG => match value {
                Value::Integer(i) => {
                    alg = Some(i64::try_from(i).map_err(|_| CoseError::UnsupportedAlgorithm)?)
                }
                _ => return Err(CoseError::UnsupportedAlgorithm),
            },
            CRIT => return Err(CoseError::CriticalHeader),
            KID => {
                let b = bytes_of(value, "kid is not a byte string")?;
                kid = Some(KeyRef::from_kid(&b).map_err(|_| CoseError::BadKeyRef)?);
            }
            TYP => match value {
                Value::Text(t) => typ = Some(t),
                _ => return Err(CoseError::Malformed("typ is not text")),
            },
            super::VERSION_LABEL => match value {
                Value::Integer(i) => {
                    version = Some(
                        u32::try_from(i)
                            .map_err(|_| CoseError::Malformed("version out of range"))?,
                    )
                }
                _ => return Err(CoseError::Malformed("version is not an integer")),
            },
            _ => return Err(CoseError::UnexpectedHeader("unknown protected label")),
        }
    }
    Ok(ArtefactHeader {
        alg: alg.ok_or(CoseError::UnsupportedAlgorithm)?,
        kid: kid.ok_or(CoseError::MissingHeader("kid"))?,
        typ: typ.ok_or(CoseError::MissingHeader("typ"))?,
        version: version.ok_or(CoseError::MissingHeader("version"))?,
    })
}

/// Encodes a protected header `{1: alg, 4: kid, 16: typ, -65537: version}`
/// (labels in deterministic order, RFC 8949 section 4.2.1).
pub(crate) fn encode_artefact_header(
    alg: i64,
    kid: &KeyRef,
    typ: &str,
    version: u32,
) -> Result<Vec<u8>, CoseError> {
    encode(&Value::Map(vec![
        (Value::from(ALG), Value::from(alg)),
        (Value::from(KID), Value::Bytes(kid.to_kid())),
        (Value::from(TYP), Value::Text(typ.to_owned())),
        (Value::from(super::VERSION_LABEL), Value::from(version)),
    ]))
}

/// `Sig_structure` for COSE_Sign1 (RFC 9052 section 4.4).
pub(crate) fn sig_structure(
    protected: &[u8],
    external_aad: &[u8],
    payload: &[u8],
) -> Result<Vec<u8>, CoseError> {
    encode(&Value::Array(vec![
        Value::Text("Signature1".to_owned()),
        Value::Bytes(protected.to_vec()),
        Value::Bytes(external_aad.to_vec()),
        Value::Bytes(payload.to_vec()),
    ]))
}

/// `Enc_structure` for COSE_Encrypt0 (RFC 9052 section 5.3).
pub(crate) fn enc_structure(protected: &[u8], external_aad: &[u8]) -> Result<Vec<u8>, CoseError> {
    encode(&Value::Array(vec![
        Value::Text("Encrypt0".to_owned()),
        Value::Bytes(protected.to_vec()),
        Value::Bytes(external_aad.to_vec()),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use coset::{CborSerializable, CoseSign1Builder, HeaderBuilder, iana};

    #[test]
    fn structures_match_coset() {
        let protected = HeaderBuilder::new()
            .algorithm(iana::Algorithm::EdDSA)
            .key_id(b"k#1".to_vec())
            .build();
        let sign1 = CoseSign1Builder::new()
            .protected(protected.clone())
            .payload(b"payload".to_vec())
            .build();
        let prot_bytes = protected.clone().to_vec().unwrap();
        assert_eq!(
            sig_structure(&prot_bytes, b"aad", b"payload").unwrap(),
            sign1.tbs_data(b"aad")
        );
        let aad = coset::enc_structure_data(
            coset::EncryptionContext::CoseEncrypt0,
            coset::ProtectedHeader {
                original_data: None,
                header: protected,
            },
            b"ext",
        );
        assert_eq!(enc_structure(&prot_bytes, b"ext").unwrap(), aad);
    }

    #[test]
    fn header_round_trip_and_strictness() {
        let kid: KeyRef = "host-sign#3".parse().unwrap();
        let h = encode_artefact_header(-8, &kid, "application/kessai-bill+cbor", 2).unwrap();
        let parsed = parse_artefact_header(&h).unwrap();
        assert_eq!(parsed.alg, -8);
        assert_eq!(parsed.kid, kid);
        assert_eq!(parsed.typ, "application/kessai-bill+cbor");
        assert_eq!(parsed.version, 2);

        let map = |entries: Vec<(Value, Value)>| encode(&Value::Map(entries)).unwrap();
        let alg = (Value::from(1), Value::from(-8));
        let kidv = (Value::from(4), Value::Bytes(b"k#1".to_vec()));
        let typ = (
            Value::from(16),
            Value::Text("application/kessai-x+cbor".into()),
        );
        let ver = (Value::from(super::super::VERSION_LABEL), Value::from(1));
        assert!(
            parse_artefact_header(&map(vec![
                alg.clone(),
                kidv.clone(),
                typ.clone(),
                ver.clone()
            ]))
            .is_ok()
        );
        assert_eq!(
            parse_artefact_header(&map(vec![
                alg.clone(),
                (Value::from(2), Value::Array(vec![Value::from(4)])),
                kidv.clone(),
                typ.clone(),
                ver.clone()
            ]))
            .unwrap_err(),
            CoseError::CriticalHeader
        );
        assert_eq!(
            parse_artefact_header(&map(vec![
                alg.clone(),
                kidv.clone(),
                kidv.clone(),
                typ.clone(),
                ver.clone()
            ]))
            .unwrap_err(),
            CoseError::Malformed("duplicate header label")
        );
        assert_eq!(
            parse_artefact_header(&map(vec![alg.clone(), typ.clone(), ver.clone()])).unwrap_err(),
            CoseError::MissingHeader("kid")
        );
        assert_eq!(
            parse_artefact_header(&map(vec![alg.clone(), kidv.clone(), ver.clone()])).unwrap_err(),
            CoseError::MissingHeader("typ")
        );
        assert_eq!(
            parse_artefact_header(&map(vec![alg.clone(), kidv.clone(), typ.clone()])).unwrap_err(),
            CoseError::MissingHeader("version")
        );
        assert_eq!(
            parse_artefact_header(&map(vec![kidv.clone(), typ.clone(), ver.clone()])).unwrap_err(),
            CoseError::UnsupportedAlgorithm
        );
        assert_eq!(
            parse_artefact_header(&map(vec![
                alg.clone(),
                (Value::from(4), Value::Bytes(b"no-version".to_vec())),
                typ.clone(),
                ver.clone()
            ]))
            .unwrap_err(),
            CoseError::BadKeyRef
        );
        assert_eq!(
            parse_artefact_header(&map(vec![
                alg.clone(),
                kidv.clone(),
                typ.clone(),
                ver.clone(),
                (Value::from(3), Value::from(0))
            ]))
            .unwrap_err(),
            CoseError::UnexpectedHeader("unknown protected label")
        );
        assert_eq!(
            parse_artefact_header(&map(vec![
                alg,
                kidv,
                typ,
                (
                    Value::from(super::super::VERSION_LABEL),
                    Value::from(1u64 << 33)
                )
            ]))
            .unwrap_err(),
            CoseError::Malformed("version out of range")
        );
        assert_eq!(
            parse_artefact_header(&[]).unwrap_err(),
            CoseError::UnsupportedAlgorithm
        );
    }

    #[test]
    fn outer_decoding_is_strict() {
        let item = Value::Tag(18, Box::new(Value::Array(vec![Value::from(1)])));
        let good = encode(&item).unwrap();
        assert!(decode_tagged_array(&good, 18, 1).is_ok());
        assert_eq!(
            decode_tagged_array(&good, 16, 1).unwrap_err(),
            CoseError::Malformed("wrong COSE tag")
        );
        assert_eq!(
            decode_tagged_array(&good, 18, 2).unwrap_err(),
            CoseError::Malformed("wrong COSE array shape")
        );
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(
            decode_tagged_array(&trailing, 18, 1).unwrap_err(),
            CoseError::Malformed("trailing bytes after the CBOR item")
        );
        // Same value, non-minimal integer encoding (0x18 0x01 for 1).
        let non_minimal = [0xd2, 0x81, 0x18, 0x01];
        assert_eq!(
            decode_tagged_array(&non_minimal, 18, 1).unwrap_err(),
            CoseError::Malformed("non-canonical CBOR encoding")
        );
        // Indefinite-length array.
        let indefinite = [0xd2, 0x9f, 0x01, 0xff];
        assert_eq!(
            decode_tagged_array(&indefinite, 18, 1).unwrap_err(),
            CoseError::Malformed("non-canonical CBOR encoding")
        );
        // Untagged.
        let untagged = encode(&Value::Array(vec![Value::from(1)])).unwrap();
        assert_eq!(
            decode_tagged_array(&untagged, 18, 1).unwrap_err(),
            CoseError::Malformed("missing COSE tag")
        );
        assert!(decode_lenient_array(&untagged, 18, 1).is_ok());
        assert!(decode_lenient_array(&non_minimal, 18, 1).is_ok());
        // Hostile length claims do not allocate or panic.
        for hostile in [
            &[0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff][..],
            &[0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff][..],
            &[0xbb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff][..],
            &[
                0xd2, 0x84, 0x5b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            ][..],
        ] {
            assert!(decode_one(hostile).is_err());
        }
        // Deep nesting hits the decoder's recursion limit, not the stack.
        let deep = vec![0x81u8; 100_000];
        assert!(decode_one(&deep).is_err());
        let too_big = vec![0u8; MAX_OBJECT_LEN + 1];
        assert_eq!(
            decode_one(&too_big).unwrap_err(),
            CoseError::TooLarge {
                max: MAX_OBJECT_LEN
            }
        );
    }
}
