//! The crate's two error enums.
//!
//! Messages name what failed, never key material, plaintext or payload
//! contents: an error may be logged or mapped to an RFC 9457 problem at the
//! HTTP edge.

use kessai_ids::KeyRef;

/// Errors from the primitive layer: signatures, HPKE, at-rest sealing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// An Ed25519 signature did not verify (RFC 8032 strict verification).
    #[error("signature does not verify")]
    BadSignature,
    /// Bytes that are not an acceptable public key: not a point on the
    /// curve, or a small-order ("weak") point.
    #[error("invalid public key")]
    InvalidPublicKey,
    /// A PEM block that is not an Ed25519 SubjectPublicKeyInfo.
    #[error("invalid PEM public key")]
    InvalidPem,
    /// Authenticated decryption failed: wrong key, wrong associated data,
    /// or a tampered ciphertext. Deliberately says no more than that.
    #[error("decryption failed")]
    DecryptionFailed,
    /// An at-rest envelope that is too short to hold version, nonce and tag.
    #[error("at-rest envelope is truncated")]
    TruncatedEnvelope,
    /// An at-rest envelope whose version byte this code does not know.
    #[error("unknown at-rest envelope version {found:#04x}")]
    UnknownEnvelopeVersion {
        /// The version byte found.
        found: u8,
    },
}

/// Errors from the COSE artefact layer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoseError {
    /// The bytes are not a well-formed COSE object of the expected shape
    /// (bad CBOR, wrong or missing tag, wrong array length, wrong field
    /// types, trailing bytes, non-canonical encoding).
    #[error("malformed COSE object: {0}")]
    Malformed(&'static str),
    /// The object is larger than kessai accepts (see
    /// [`crate::cose::MAX_OBJECT_LEN`]).
    #[error("COSE object larger than {max} bytes")]
    TooLarge {
        /// The limit in bytes.
        max: usize,
    },
    /// The protected `alg` is missing or is not the one this structure uses
    /// (EdDSA for COSE_Sign1, HPKE-3 for COSE_Encrypt0).
    #[error("unsupported or missing algorithm")]
    UnsupportedAlgorithm,
    /// The object lists critical header parameters; kessai refuses all.
    #[error("critical header parameters are not accepted")]
    CriticalHeader,
    /// A header parameter that kessai artefacts never carry, or one in the
    /// wrong bucket (for example anything unprotected on a COSE_Sign1).
    #[error("unexpected header parameter: {0}")]
    UnexpectedHeader(&'static str),
    /// A header parameter kessai artefacts always carry is missing.
    #[error("missing header parameter: {0}")]
    MissingHeader(&'static str),
    /// The `kid` is not a key reference `<key id>#<version>`.
    #[error("key id is not a valid key reference")]
    BadKeyRef,
    /// No key is known for the `kid` (never issued, retired or revoked).
    #[error("unknown key {0}")]
    UnknownKey(KeyRef),
    /// The COSE_Sign1 signature does not verify under the resolved key.
    #[error("signature does not verify")]
    BadSignature,
    /// The artefact names a different type than the caller expects.
    #[error("wrong artefact type: expected {expected}, found {found}")]
    WrongType {
        /// The type the caller asked for.
        expected: &'static str,
        /// The type the artefact names (sanitised, at most 64 characters).
        found: String,
    },
    /// The artefact's format version is not the one this code reads.
    #[error("wrong artefact version: expected {expected}, found {found}")]
    WrongVersion {
        /// The version the caller's type declares.
        expected: u32,
        /// The version the artefact carries.
        found: u32,
    },
    /// The verified or decrypted payload does not decode as the expected
    /// type. No decoder detail is kept: it could echo payload contents.
    #[error("payload does not decode as the expected type")]
    MalformedPayload,
    /// HPKE decryption failed (wrong recipient key, swapped headers,
    /// different external AAD, or tampering).
    #[error("decryption failed")]
    DecryptionFailed,
    /// The recipient public key cannot be encrypted to.
    #[error("invalid recipient public key")]
    InvalidRecipientKey,
    /// The payload could not be encoded (a serializer error in the payload
    /// type, or an invalid artefact type name). No detail is kept.
    #[error("artefact could not be encoded")]
    Encode,
}
