//! COSE_Sign1 artefacts with Ed25519.

use ciborium::Value;
use coset::{CborSerializable, CoseSign1, TaggedCborSerializable, iana};
use kessai_ids::KeyRef;

use super::{Artefact, EDDSA, Verified, artefact_typ, found_type, valid_type_name, wire};
use crate::digest::sha256;
use crate::error::CoseError;
use crate::sign::{SigningKey, VerifyingKey};

/// Signs `payload` as a tagged COSE_Sign1 with `key`, naming the key
/// `key_ref` in the protected `kid` (see the module docs for the header
/// profile).
pub fn sign_artefact<A: Artefact>(
    payload: &A,
    key: &SigningKey,
    key_ref: &KeyRef,
) -> Result<Vec<u8>, CoseError> {
    if !valid_type_name(A::TYPE) {
        return Err(CoseError::Encode);
    }
    let mut payload_bytes = Vec::new();
    ciborium::ser::into_writer(payload, &mut payload_bytes).map_err(|_| CoseError::Encode)?;
    let protected = coset::HeaderBuilder::new()
        .algorithm(iana::Algorithm::EdDSA)
        .key_id(key_ref.to_kid())
        .value(wire::TYP, Value::Text(artefact_typ(A::TYPE)))
        .value(super::VERSION_LABEL, Value::from(A::VERSION))
        .build();
    let sign1 = coset::CoseSign1Builder::new()
        .protected(protected)
        .payload(payload_bytes)
        .create_signature(b"", |tbs| key.sign(tbs).to_vec())
        .build();
    let bytes = sign1.to_tagged_vec().map_err(|_| CoseError::Encode)?;
    if bytes.len() > wire::MAX_OBJECT_LEN {
        return Err(CoseError::TooLarge {
            max: wire::MAX_OBJECT_LEN,
        });
    }
    Ok(bytes)
}

/// Verifies a kessai COSE_Sign1 artefact of type `A`.
///
/// Checks, in order: canonical tagged COSE_Sign1 shape; empty unprotected
/// header; exactly the profile's protected labels, no `crit`; `alg` EdDSA;
/// `typ` is `A`'s ([`CoseError::WrongType`]); version is `A::VERSION`
/// ([`CoseError::WrongVersion`]); `resolve(kid)` knows the key
/// ([`CoseError::UnknownKey`]); the signature verifies strictly
/// ([`CoseError::BadSignature`]); the payload decodes as `A`
/// ([`CoseError::MalformedPayload`]).
pub fn verify_artefact<A: Artefact>(
    bytes: &[u8],
    resolve: impl Fn(&KeyRef) -> Option<VerifyingKey>,
) -> Result<Verified<A>, CoseError> {
    let mut items = wire::decode_tagged_array(bytes, 18, 4)?.into_iter();
    let (Some(protected), Some(unprotected), Some(payload), Some(signature)) =
        (items.next(), items.next(), items.next(), items.next())
    else {
        return Err(CoseError::Malformed("wrong COSE array shape"));
    };
    let protected = wire::bytes_of(protected, "protected header is not a byte string")?;
    if !wire::int_map(unprotected)?.is_empty() {
        return Err(CoseError::UnexpectedHeader(
            "unprotected header must be empty",
        ));
    }
    let payload = match payload {
        Value::Bytes(b) => b,
        Value::Null => return Err(CoseError::Malformed("detached payload")),
        _ => return Err(CoseError::Malformed("payload is not a byte string")),
    };
    let signature = wire::bytes_of(signature, "signature is not a byte string")?;

    let header = wire::parse_artefact_header(&protected)?;
    if header.alg != EDDSA {
        return Err(CoseError::UnsupportedAlgorithm);
    }
    if header.typ != artefact_typ(A::TYPE) {
        return Err(CoseError::WrongType {
            expected: A::TYPE,
            found: found_type(&header.typ),
        });
    }
    if header.version != A::VERSION {
        return Err(CoseError::WrongVersion {
            expected: A::VERSION,
            found: header.version,
        });
    }
    let key = resolve(&header.kid).ok_or_else(|| CoseError::UnknownKey(header.kid.clone()))?;
    let signature: [u8; 64] = signature
        .as_slice()
        .try_into()
        .map_err(|_| CoseError::BadSignature)?;
    let tbs = wire::sig_structure(&protected, b"", &payload)?;
    key.verify(&tbs, &signature)
        .map_err(|_| CoseError::BadSignature)?;

    let mut rest = payload.as_slice();
    let decoded: A =
        ciborium::de::from_reader(&mut rest).map_err(|_| CoseError::MalformedPayload)?;
    if !rest.is_empty() {
        return Err(CoseError::MalformedPayload);
    }
    Ok(Verified {
        payload: decoded,
        signer: header.kid,
        digest: sha256(&[bytes]),
        bytes: bytes.to_vec(),
    })
}

/// Verifies any COSE_Sign1 (tagged or untagged) signed with Ed25519 under
/// `key` and `external_aad`, and returns its payload. For objects from
/// other implementations (and the cose-wg examples): it applies only RFC
/// 9052 rules — `alg` must be protected EdDSA (-8) or Ed25519 (-19), no
/// `crit`, attached payload — and knows nothing of kessai types.
pub fn verify_sign1_raw(
    bytes: &[u8],
    key: &VerifyingKey,
    external_aad: &[u8],
) -> Result<Vec<u8>, CoseError> {
    if bytes.len() > wire::MAX_OBJECT_LEN {
        return Err(CoseError::TooLarge {
            max: wire::MAX_OBJECT_LEN,
        });
    }
    let sign1 = CoseSign1::from_tagged_slice(bytes)
        .or_else(|_| CoseSign1::from_slice(bytes))
        .map_err(|_| CoseError::Malformed("not a COSE_Sign1"))?;
    let header = &sign1.protected.header;
    if !header.crit.is_empty() || !sign1.unprotected.crit.is_empty() {
        return Err(CoseError::CriticalHeader);
    }
    let eddsa = [
        coset::Algorithm::Assigned(iana::Algorithm::EdDSA),
        coset::Algorithm::Assigned(iana::Algorithm::Ed25519),
    ];
    if !header.alg.as_ref().is_some_and(|a| eddsa.contains(a)) {
        return Err(CoseError::UnsupportedAlgorithm);
    }
    if sign1.payload.is_none() {
        return Err(CoseError::Malformed("detached payload"));
    }
    sign1.verify_signature(external_aad, |sig, tbs| {
        let sig: [u8; 64] = sig.try_into().map_err(|_| CoseError::BadSignature)?;
        key.verify(tbs, &sig).map_err(|_| CoseError::BadSignature)
    })?;
    Ok(sign1.payload.unwrap_or_default())
}
