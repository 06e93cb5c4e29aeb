//! Typed artefacts on COSE (RFC 9052): signed as COSE_Sign1, encrypted as
//! COSE_Encrypt0 with HPKE.
//!
//! An artefact is a Rust type implementing [`Artefact`]; its payload is the
//! CBOR (ciborium/serde) encoding of the value. Every artefact names its
//! type, format version and key, all in the *protected* header, so a
//! signature or ciphertext made for one purpose never verifies or opens as
//! another.
//!
//! # COSE_Sign1 profile (tag 18)
//!
//! | bucket | label | value |
//! |---|---|---|
//! | protected | 1 `alg` | -8 (EdDSA, Ed25519) |
//! | protected | 4 `kid` | UTF-8 of the signer's [`KeyRef`], `<key id>#<version>` |
//! | protected | 16 `typ` (RFC 9596) | `application/kessai-<TYPE>+cbor` |
//! | protected | [`VERSION_LABEL`] = -65537 | [`Artefact::VERSION`], unsigned integer |
//! | unprotected | — | must be empty |
//!
//! The payload is attached, the external AAD is empty. -65537 is the first
//! label of the private-use range (less than -65536, RFC 9052 section 16.2).
//! Nothing else may appear in either header; `crit` is always refused.
//!
//! # COSE_Encrypt0 profile (tag 16) — HPKE integrated encryption
//!
//! Follows **draft-ietf-cose-hpke-25** (April 2026), section 3.1 "HPKE
//! Integrated Encryption Mode":
//!
//! | bucket | label | value |
//! |---|---|---|
//! | protected | 1 `alg` | [`HPKE_3`] = 41: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM |
//! | protected | 4 `kid` | the *recipient* key's [`KeyRef`] |
//! | protected | 16 `typ` | `application/kessai-<TYPE>+cbor` (blobs: `application/kessai-<TYPE>`) |
//! | protected | -65537 | format version |
//! | unprotected | [`EK_LABEL`] = -4 `ek` | HPKE `enc`, 32 bytes |
//!
//! HPKE runs in base mode, single-shot: `info` is empty (the draft's
//! default), `aad` is the RFC 9052 `Enc_structure` `["Encrypt0", protected,
//! external_aad]`, so the headers and the caller's external AAD are bound to
//! the ciphertext and cannot be swapped. The `ek` value is bound too: it
//! enters the KEM context, so changing it breaks decryption.
//!
//! Where this deviates or has to guess:
//! - The algorithm value 41 and the `ek` label -4 are the draft's *assumed*
//!   values ("TBD7" and "TBD11"); IANA has not assigned them yet. If the RFC
//!   assigns others, [`HPKE_3`] / [`EK_LABEL`] change and old objects stop
//!   opening — bump the artefact versions then.
//! - Earlier revisions of the draft called this suite "HPKE-0" or used
//!   other code points; -25 calls the X25519/AES-128-GCM suite HPKE-3 and
//!   uses HPKE-0 for P-256. kessai follows -25.
//! - The draft puts `kid` in either bucket; kessai requires it protected
//!   and requires exactly the labels above. PSK mode (`psk_id`, -5) is not
//!   supported.
//! - [`open_encrypt0_raw`] reads other implementations' objects with the
//!   draft's rules only (tag optional, `kid` anywhere, caller-supplied
//!   `info`); it is checked against the draft's HPKE-3 test vectors.
//! - coset 0.4.2 refuses unregistered algorithm values while parsing, so
//!   COSE_Encrypt0 is read and written with ciborium directly; COSE_Sign1 is
//!   built with coset and read by the same strict parser.
//!
//! # Canonical bytes and digests
//!
//! The verifying functions accept only the canonical CBOR encoding of the
//! outer structure, so an artefact has exactly one byte string;
//! [`Verified::digest`] / [`Opened::digest`] (SHA-256 over those bytes)
//! identify it, and later artefacts bind earlier ones by that digest.
//!
//! Objects larger than [`MAX_OBJECT_LEN`] (1 MiB) are neither produced nor
//! read ([`CoseError::TooLarge`]).
//!
//! What this module does not do: key lookup policy (the caller's `resolve`
//! decides which keys exist and are valid now), replay or expiry checks, or
//! counter-signatures.

mod encrypt0;
mod sign1;
mod wire;

use std::fmt;

use kessai_ids::KeyRef;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::CoseError;

pub use encrypt0::{open_artefact, open_bytes, open_encrypt0_raw, seal_artefact, seal_bytes};
pub use sign1::{sign_artefact, verify_artefact, verify_sign1_raw};

/// Largest COSE object, in bytes, that the functions here produce or
/// read. Artefacts are small (a bill, a receipt, a card-data blob); the
/// bound limits work on hostile input.
pub const MAX_OBJECT_LEN: usize = 1 << 20;

/// The private-use header label carrying an artefact's format version.
pub const VERSION_LABEL: i64 = -65537;
/// COSE algorithm value for HPKE-3 (draft-ietf-cose-hpke-25, assumed value).
pub const HPKE_3: i64 = 41;
/// Header label of `ek`, the HPKE encapsulated key (draft-ietf-cose-hpke-25,
/// assumed value).
pub const EK_LABEL: i64 = -4;
/// COSE algorithm value for EdDSA (RFC 9053).
pub const EDDSA: i64 = -8;

const TYP_PREFIX: &str = "application/kessai-";
const TYP_CBOR_SUFFIX: &str = "+cbor";

/// A typed payload that travels as a COSE artefact.
///
/// `TYPE` is a short lower-case name (`a-z`, `0-9`, `.`, `-`, 1 to 48
/// characters) unique across kessai; `VERSION` starts at 1 and goes up on
/// every incompatible change of the payload.
///
/// ```
/// use kessai_crypto::cose::Artefact;
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Receipt { bill_digest: [u8; 32] }
/// impl Artefact for Receipt {
///     const TYPE: &'static str = "receipt";
///     const VERSION: u32 = 1;
/// }
/// ```
pub trait Artefact: Serialize + DeserializeOwned {
    /// The artefact type name, carried as `typ` =
    /// `application/kessai-<TYPE>+cbor`.
    const TYPE: &'static str;
    /// The payload format version.
    const VERSION: u32;
}

/// Names opaque byte content sealed with [`seal_bytes`] (for example
/// card data encrypted by a reader). Same naming rules as [`Artefact`];
/// carried as `typ` = `application/kessai-<TYPE>`, which never equals an
/// artefact's `typ`.
pub trait BlobKind {
    /// The blob type name.
    const TYPE: &'static str;
    /// The blob format version.
    const VERSION: u32;
}

/// Which COSE structure an object is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Structure {
    /// COSE_Sign1, tag 18.
    Sign1,
    /// COSE_Encrypt0, tag 16.
    Encrypt0,
}

/// A verified COSE_Sign1 artefact. Only [`verify_artefact`] makes one, so
/// holding a `Verified<A>` proves the signature, type and version checks
/// passed.
pub struct Verified<A> {
    payload: A,
    signer: KeyRef,
    digest: [u8; 32],
    bytes: Vec<u8>,
}

impl<A> Verified<A> {
    /// The decoded payload.
    pub fn payload(&self) -> &A {
        &self.payload
    }

    /// The decoded payload, consuming the proof.
    pub fn into_payload(self) -> A {
        self.payload
    }

    /// The key that signed it.
    pub fn signer(&self) -> &KeyRef {
        &self.signer
    }

    /// SHA-256 over the exact COSE bytes.
    pub fn digest(&self) -> [u8; 32] {
        self.digest
    }

    /// The exact COSE bytes that were verified.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl<A: fmt::Debug> fmt::Debug for Verified<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verified")
            .field("signer", &self.signer)
            .field("digest", &hex32(&self.digest))
            .field("payload", &self.payload)
            .finish()
    }
}

/// A decrypted COSE_Encrypt0 artefact. Only [`open_artefact`] /
/// [`open_bytes`] make one. `Debug` never shows the payload.
pub struct Opened<T> {
    payload: T,
    recipient: KeyRef,
    digest: [u8; 32],
    bytes: Vec<u8>,
}

impl<T> Opened<T> {
    /// The decrypted payload.
    pub fn payload(&self) -> &T {
        &self.payload
    }

    /// The decrypted payload, consuming the proof.
    pub fn into_payload(self) -> T {
        self.payload
    }

    /// The recipient key it was encrypted to.
    pub fn recipient(&self) -> &KeyRef {
        &self.recipient
    }

    /// SHA-256 over the exact COSE bytes (the ciphertext object).
    pub fn digest(&self) -> [u8; 32] {
        self.digest
    }

    /// The exact COSE bytes that were opened.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl<T> fmt::Debug for Opened<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opened")
            .field("recipient", &self.recipient)
            .field("digest", &hex32(&self.digest))
            .field("payload", &"<redacted>")
            .finish()
    }
}

/// What an artefact claims about itself, read **without** checking any
/// signature or decrypting anything.
///
/// `peek` proves nothing: anyone can write any `typ`, version or `kid`.
/// Use it only to route bytes to the right `verify_*` / `open_*` call and
/// key store, never to decide anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peeked {
    /// COSE_Sign1 or COSE_Encrypt0.
    pub structure: Structure,
    /// The `typ` header as written.
    pub typ: String,
    /// The format version header.
    pub version: u32,
    /// The `kid` header: signer for Sign1, recipient for Encrypt0.
    pub kid: KeyRef,
}

impl Peeked {
    /// The kessai type name inside `typ` (`bill` for
    /// `application/kessai-bill+cbor`), if `typ` has kessai's form.
    pub fn type_name(&self) -> Option<&str> {
        let rest = self.typ.strip_prefix(TYP_PREFIX)?;
        Some(rest.strip_suffix(TYP_CBOR_SUFFIX).unwrap_or(rest))
    }
}

/// Reads structure, `typ`, version and `kid` from a kessai COSE_Sign1 or
/// COSE_Encrypt0 **without verifying it** — see [`Peeked`].
pub fn peek(bytes: &[u8]) -> Result<Peeked, CoseError> {
    let value = wire::decode_one(bytes)?;
    let (structure, len) = match &value {
        ciborium::Value::Tag(18, _) => (Structure::Sign1, 4),
        ciborium::Value::Tag(16, _) => (Structure::Encrypt0, 3),
        _ => {
            return Err(CoseError::Malformed(
                "not a tagged COSE_Sign1 or COSE_Encrypt0",
            ));
        }
    };
    let tag = match structure {
        Structure::Sign1 => 18,
        Structure::Encrypt0 => 16,
    };
    let mut items = wire::decode_tagged_array(bytes, tag, len)?;
    let protected = wire::bytes_of(
        items.swap_remove(0),
        "protected header is not a byte string",
    )?;
    let h = wire::parse_artefact_header(&protected)?;
    Ok(Peeked {
        structure,
        typ: h.typ,
        version: h.version,
        kid: h.kid,
    })
}

/// Checks a type name against the naming rule.
fn valid_type_name(name: &str) -> bool {
    (1..=48).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
}

/// `typ` of an artefact type.
fn artefact_typ(type_name: &str) -> String {
    format!("{TYP_PREFIX}{type_name}{TYP_CBOR_SUFFIX}")
}

/// `typ` of a blob type.
fn blob_typ(type_name: &str) -> String {
    format!("{TYP_PREFIX}{type_name}")
}

/// The type name to report in [`CoseError::WrongType`]: kessai's name if
/// `typ` has kessai's form, otherwise the `typ` itself; printable ASCII
/// only, at most 64 characters (it is attacker-chosen text headed for
/// logs).
fn found_type(typ: &str) -> String {
    let name = typ
        .strip_prefix(TYP_PREFIX)
        .map(|rest| rest.strip_suffix(TYP_CBOR_SUFFIX).unwrap_or(rest))
        .unwrap_or(typ);
    name.chars()
        .take(64)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}

fn hex32(d: &[u8; 32]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_and_typ_forms() {
        assert!(valid_type_name("bill"));
        assert!(valid_type_name("settlement-info.v"));
        assert!(!valid_type_name(""));
        assert!(!valid_type_name("Bill"));
        assert!(!valid_type_name("bill+cbor"));
        assert!(!valid_type_name("a/b"));
        assert!(!valid_type_name(&"a".repeat(49)));
        assert_eq!(artefact_typ("bill"), "application/kessai-bill+cbor");
        assert_eq!(blob_typ("card-data"), "application/kessai-card-data");
        assert_eq!(found_type("application/kessai-receipt+cbor"), "receipt");
        assert_eq!(found_type("application/kessai-card-data"), "card-data");
        assert_eq!(found_type("text/plain\n\u{7}x"), "text/plain??x");
        assert_eq!(found_type(&"z".repeat(500)).len(), 64);
    }
}
