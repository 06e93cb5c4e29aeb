//! COSE_Encrypt0 with HPKE integrated encryption
//! (draft-ietf-cose-hpke-25 section 3.1; see the module docs of
//! [`crate::cose`]).

use std::borrow::Borrow;

use ciborium::Value;
use kessai_ids::KeyRef;
use kessai_secrets::SecretBytes;
use rand_core::CryptoRng;
use zeroize::Zeroizing;

use super::{
    Artefact, BlobKind, EK_LABEL, HPKE_3, Opened, artefact_typ, blob_typ, found_type,
    valid_type_name, wire,
};
use crate::digest::sha256;
use crate::error::CoseError;
use crate::hpke::{self, HpkeKeyPair, HpkePublicKey};

/// `psk_id` header label (draft-ietf-cose-hpke-25, assumed value).
const PSK_ID_LABEL: i64 = -5;

/// The HPKE `info` for kessai objects: empty, the draft's default. The
/// context binding lives in the protected header, which is the AAD.
const INFO: &[u8] = b"";

/// Encrypts `payload` to `recipient` as a tagged COSE_Encrypt0, naming the
/// recipient key `recipient_ref` in the protected `kid`. `external_aad` is
/// bound but not sent; the recipient must supply the same bytes.
pub fn seal_artefact<A: Artefact>(
    payload: &A,
    recipient: &HpkePublicKey,
    recipient_ref: &KeyRef,
    external_aad: &[u8],
    rng: &mut impl CryptoRng,
) -> Result<Vec<u8>, CoseError> {
    if !valid_type_name(A::TYPE) {
        return Err(CoseError::Encode);
    }
    let mut plaintext = Zeroizing::new(Vec::new());
    ciborium::ser::into_writer(payload, &mut *plaintext).map_err(|_| CoseError::Encode)?;
    seal(
        &artefact_typ(A::TYPE),
        A::VERSION,
        &plaintext,
        recipient,
        recipient_ref,
        external_aad,
        rng,
    )
}

/// Decrypts a kessai COSE_Encrypt0 artefact of type `A`.
///
/// Checks, in order: canonical tagged COSE_Encrypt0 shape; unprotected
/// header is exactly `ek` (32 bytes); protected header is exactly the
/// profile's labels, no `crit`; `alg` is HPKE-3; `typ` and version are
/// `A`'s; `resolve(kid)` knows the private key ([`CoseError::UnknownKey`]);
/// HPKE opens with `external_aad` ([`CoseError::DecryptionFailed`]); the
/// plaintext decodes as `A` ([`CoseError::MalformedPayload`]).
pub fn open_artefact<A: Artefact, K: Borrow<HpkeKeyPair>>(
    bytes: &[u8],
    resolve: impl Fn(&KeyRef) -> Option<K>,
    external_aad: &[u8],
) -> Result<Opened<A>, CoseError> {
    let opened = open(
        bytes,
        &artefact_typ(A::TYPE),
        A::TYPE,
        A::VERSION,
        resolve,
        external_aad,
    )?;
    let mut rest = opened.payload.expose();
    let payload: A =
        ciborium::de::from_reader(&mut rest).map_err(|_| CoseError::MalformedPayload)?;
    if !rest.is_empty() {
        return Err(CoseError::MalformedPayload);
    }
    Ok(Opened {
        payload,
        recipient: opened.recipient,
        digest: opened.digest,
        bytes: opened.bytes,
    })
}

/// Encrypts opaque bytes of kind `B` (for example card data from a reader)
/// to `recipient`. Same profile as [`seal_artefact`] with `typ` =
/// `application/kessai-<B::TYPE>`.
pub fn seal_bytes<B: BlobKind>(
    plaintext: &[u8],
    recipient: &HpkePublicKey,
    recipient_ref: &KeyRef,
    external_aad: &[u8],
    rng: &mut impl CryptoRng,
) -> Result<Vec<u8>, CoseError> {
    if !valid_type_name(B::TYPE) {
        return Err(CoseError::Encode);
    }
    seal(
        &blob_typ(B::TYPE),
        B::VERSION,
        plaintext,
        recipient,
        recipient_ref,
        external_aad,
        rng,
    )
}

/// Decrypts opaque bytes sealed by [`seal_bytes`] with kind `B`. The
/// plaintext comes back as [`SecretBytes`] inside the [`Opened`] proof.
pub fn open_bytes<B: BlobKind, K: Borrow<HpkeKeyPair>>(
    bytes: &[u8],
    resolve: impl Fn(&KeyRef) -> Option<K>,
    external_aad: &[u8],
) -> Result<Opened<SecretBytes>, CoseError> {
    open(
        bytes,
        &blob_typ(B::TYPE),
        B::TYPE,
        B::VERSION,
        resolve,
        external_aad,
    )
}

/// Decrypts any HPKE-3 integrated-encryption COSE_Encrypt0 (tagged or
/// untagged) with `recipient`, using the draft's rules only: protected
/// `alg` = HPKE-3, unprotected `ek`, no `crit`, no `psk_id` (base mode), an
/// attached ciphertext; `kid` and other headers are ignored. `info` is the
/// HPKE info (empty by default in the draft). For interoperability tests
/// and objects from other implementations.
pub fn open_encrypt0_raw(
    bytes: &[u8],
    recipient: &HpkeKeyPair,
    external_aad: &[u8],
    info: &[u8],
) -> Result<SecretBytes, CoseError> {
    let mut items = wire::decode_lenient_array(bytes, 16, 3)?.into_iter();
    let (Some(protected), Some(unprotected), Some(ciphertext)) =
        (items.next(), items.next(), items.next())
    else {
        return Err(CoseError::Malformed("wrong COSE array shape"));
    };
    let protected = wire::bytes_of(protected, "protected header is not a byte string")?;
    let protected_map = if protected.is_empty() {
        Vec::new()
    } else {
        wire::int_map_lenient(wire::decode_one(&protected)?)?
    };
    let unprotected_map = wire::int_map_lenient(unprotected)?;
    let mut alg = None;
    for (label, value) in &protected_map {
        match *label {
            wire::ALG => alg = Some(value.clone()),
            wire::CRIT => return Err(CoseError::CriticalHeader),
            PSK_ID_LABEL => return Err(CoseError::UnexpectedHeader("psk_id (PSK mode)")),
            _ => {}
        }
    }
    let mut ek = None;
    for (label, value) in unprotected_map {
        match label {
            wire::ALG => return Err(CoseError::UnexpectedHeader("unprotected alg")),
            wire::CRIT => return Err(CoseError::CriticalHeader),
            PSK_ID_LABEL => return Err(CoseError::UnexpectedHeader("psk_id (PSK mode)")),
            EK_LABEL => ek = Some(value),
            _ => {}
        }
    }
    if alg != Some(Value::from(HPKE_3)) {
        return Err(CoseError::UnsupportedAlgorithm);
    }
    let ek = encapsulated_key(ek.ok_or(CoseError::MissingHeader("ek"))?)?;
    let ciphertext = match ciphertext {
        Value::Bytes(b) => b,
        Value::Null => return Err(CoseError::Malformed("detached ciphertext")),
        _ => return Err(CoseError::Malformed("ciphertext is not a byte string")),
    };
    let aad = wire::enc_structure(&protected, external_aad)?;
    hpke::open(recipient, &ek, info, &aad, &ciphertext).map_err(|_| CoseError::DecryptionFailed)
}

fn seal(
    typ: &str,
    version: u32,
    plaintext: &[u8],
    recipient: &HpkePublicKey,
    recipient_ref: &KeyRef,
    external_aad: &[u8],
    rng: &mut impl CryptoRng,
) -> Result<Vec<u8>, CoseError> {
    // Refuse up front what no reader would accept (ciphertext = plaintext
    // + 16-byte tag, plus a few hundred bytes of headers).
    if plaintext.len() > wire::MAX_OBJECT_LEN {
        return Err(CoseError::TooLarge {
            max: wire::MAX_OBJECT_LEN,
        });
    }
    let protected = wire::encode_artefact_header(HPKE_3, recipient_ref, typ, version)?;
    let aad = wire::enc_structure(&protected, external_aad)?;
    let (ek, ciphertext) = hpke::seal(recipient, INFO, &aad, plaintext, rng);
    let bytes = wire::encode(&Value::Tag(
        16,
        Box::new(Value::Array(vec![
            Value::Bytes(protected),
            Value::Map(vec![(Value::from(EK_LABEL), Value::Bytes(ek.to_vec()))]),
            Value::Bytes(ciphertext),
        ])),
    ))?;
    if bytes.len() > wire::MAX_OBJECT_LEN {
        return Err(CoseError::TooLarge {
            max: wire::MAX_OBJECT_LEN,
        });
    }
    Ok(bytes)
}

fn open<K: Borrow<HpkeKeyPair>>(
    bytes: &[u8],
    expected_typ: &str,
    expected_type: &'static str,
    expected_version: u32,
    resolve: impl Fn(&KeyRef) -> Option<K>,
    external_aad: &[u8],
) -> Result<Opened<SecretBytes>, CoseError> {
    let mut items = wire::decode_tagged_array(bytes, 16, 3)?.into_iter();
    let (Some(protected), Some(unprotected), Some(ciphertext)) =
        (items.next(), items.next(), items.next())
    else {
        return Err(CoseError::Malformed("wrong COSE array shape"));
    };
    let protected = wire::bytes_of(protected, "protected header is not a byte string")?;
    let mut ek = None;
    for (label, value) in wire::int_map(unprotected)? {
        match label {
            EK_LABEL => ek = Some(value),
            wire::CRIT => return Err(CoseError::CriticalHeader),
            _ => {
                return Err(CoseError::UnexpectedHeader(
                    "unprotected header other than ek",
                ));
            }
        }
    }
    let ciphertext = match ciphertext {
        Value::Bytes(b) => b,
        Value::Null => return Err(CoseError::Malformed("detached ciphertext")),
        _ => return Err(CoseError::Malformed("ciphertext is not a byte string")),
    };

    let header = wire::parse_artefact_header(&protected)?;
    if header.alg != HPKE_3 {
        return Err(CoseError::UnsupportedAlgorithm);
    }
    let ek = encapsulated_key(ek.ok_or(CoseError::MissingHeader("ek"))?)?;
    if header.typ != expected_typ {
        return Err(CoseError::WrongType {
            expected: expected_type,
            found: found_type(&header.typ),
        });
    }
    if header.version != expected_version {
        return Err(CoseError::WrongVersion {
            expected: expected_version,
            found: header.version,
        });
    }
    let key = resolve(&header.kid).ok_or_else(|| CoseError::UnknownKey(header.kid.clone()))?;
    let aad = wire::enc_structure(&protected, external_aad)?;
    let plaintext = hpke::open(key.borrow(), &ek, INFO, &aad, &ciphertext)
        .map_err(|_| CoseError::DecryptionFailed)?;
    Ok(Opened {
        payload: plaintext,
        recipient: header.kid,
        digest: sha256(&[bytes]),
        bytes: bytes.to_vec(),
    })
}

fn encapsulated_key(value: Value) -> Result<[u8; 32], CoseError> {
    let ek = wire::bytes_of(value, "ek is not a byte string")?;
    ek.as_slice()
        .try_into()
        .map_err(|_| CoseError::Malformed("ek is not 32 bytes"))
}
