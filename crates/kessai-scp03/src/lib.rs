//! GlobalPlatform Secure Channel Protocol 03 (GP Card Specification v2.3,
//! Amendment D), both ends from one implementation.
//!
//! What it does:
//! - the SCP03 KDF (NIST SP 800-108 counter mode, AES-CMAC, GP label and
//!   context layout), session keys S-ENC / S-MAC / S-RMAC, card and host
//!   cryptograms, random or pseudo-random (sequence counter) card challenges;
//! - secure messaging at security levels C-MAC (`01`), C-MAC + C-DEC (`03`),
//!   C-MAC + R-MAC (`11`), C-MAC + C-DEC + R-MAC (`13`) and
//!   C-MAC + C-DEC + R-MAC + R-ENC (`33`): C-MAC with MAC chaining value,
//!   C-DECRYPTION with the ICV from the encryption counter, R-MAC, R-ENC;
//! - AES-128 and AES-256 static key sets (ENC / MAC / DEK + key version);
//! - per-card static keys diversified from an issuer master key and the
//!   card's key diversification data ([`keys::diversify`], GlobalPlatformPro's
//!   "KDF3" scheme, [`keys::kdd_for_card_id`]).
//! - host side ([`host`]): INITIALIZE UPDATE, card cryptogram check,
//!   EXTERNAL AUTHENTICATE, wrap commands, unwrap responses;
//! - card side ([`card`]): answer INITIALIZE UPDATE, verify EXTERNAL
//!   AUTHENTICATE, unwrap commands, wrap responses.
//!
//! What it does not do: S16 mode (16-byte challenges), key loading (PUT
//! KEY), sending APDUs anywhere, randomness (challenges are passed in),
//! storing keys.
//!
//! ```
//! use kessai_scp03::{card, host, AesKey, CommandApdu, SecurityLevel, StaticKeys};
//!
//! // The GlobalPlatform default test key as ENC = MAC = DEK, version 0x30.
//! let keys = StaticKeys::single(AesKey::Aes128(*b"@ABCDEFGHIJKLMNO"), 0x30);
//! let kdd = [0u8; 10];
//!
//! // Host: INITIALIZE UPDATE.
//! let hs = host::HostHandshake::new(0x30, [1, 2, 3, 4, 5, 6, 7, 8]);
//! let iu = hs.initialize_update();
//! // Card: answer it (header, then the 8-byte host challenge).
//! let (pending, data) = card::initialize_update(
//!     &keys, &kdd, b"\xF0kessai\x01", iu[2], iu[3], &iu[5..13],
//!     card::CardChallenge::Random([9; 8]),
//! ).unwrap();
//! let mut resp = data;
//! resp.extend_from_slice(&[0x90, 0x00]);
//! // Host: verify the card cryptogram, build EXTERNAL AUTHENTICATE.
//! let parsed = hs.parse_response(&resp).unwrap();
//! let (pending_host, ea) = hs.authenticate(&parsed, &keys, SecurityLevel::Full).unwrap();
//! // Card: verify the host cryptogram and C-MAC.
//! let mut card_session = pending.external_authenticate([ea[0], ea[1], ea[2], ea[3]], false, &ea[5..]).unwrap();
//! let mut host_session = pending_host.confirm(&[0x90, 0x00]).unwrap();
//!
//! // A secured command and response.
//! let cmd = host_session.wrap(&CommandApdu::new(0x80, 0x5C, 0, 0, b"hello".to_vec())).unwrap();
//! let plain = card_session.unwrap_command([cmd[0], cmd[1], cmd[2], cmd[3]], false, &cmd[5..]).unwrap();
//! assert_eq!(&plain[..], b"hello");
//! let r = card_session.wrap_response(b"world", 0x9000).unwrap();
//! let out = host_session.unwrap(&r).unwrap();
//! assert_eq!((&out.data[..], out.sw), (&b"world"[..], 0x9000));
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod apdu;
pub mod card;
pub mod crypto;
pub mod host;
pub mod keys;
pub mod sm;

pub use apdu::{CommandApdu, SecurityLevel};
pub use crypto::AesKey;
pub use keys::{SessionKeys, StaticKeys};
pub use sm::MAC_LEN;

/// Errors of the SCP03 handshake and secure messaging. None of them carries
/// key material or plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Scp03Error {
    /// A key is not 16 or 32 bytes, or a key set mixes lengths.
    #[error("AES key must be 16 or 32 bytes, all keys of a set the same length")]
    KeyLength,
    /// CBC input is not a whole number of blocks.
    #[error("data is not a multiple of the AES block length")]
    BlockLength,
    /// ISO/IEC 9797-1 method 2 padding is wrong after decryption.
    #[error("bad padding in decrypted data")]
    Padding,
    /// A message has the wrong structure or length.
    #[error("malformed message: {0}")]
    Malformed(&'static str),
    /// An APDU is too long to encode, or Le is out of range.
    #[error("APDU too long to encode")]
    TooLong,
    /// The card answered with a status word other than `9000`.
    #[error("card returned status {0:04X}")]
    Status(u16),
    /// The card speaks another secure channel protocol.
    #[error("secure channel protocol {0:#04x} is not SCP03")]
    UnsupportedProtocol(u8),
    /// The card's i parameter asks for something not implemented (S16).
    #[error("unsupported SCP03 i parameter {0:#04x}")]
    UnsupportedParameter(u8),
    /// The key version asked for is not the one available.
    #[error("key version mismatch: requested {requested:#04x}, card has {returned:#04x}")]
    KeyVersionMismatch {
        /// Asked for.
        requested: u8,
        /// Available / returned.
        returned: u8,
    },
    /// The security level is not a valid SCP03 level or the card does not
    /// support it.
    #[error("security level {0:#04x} not supported")]
    SecurityLevelNotSupported(u8),
    /// Host side: the card cryptogram is wrong (wrong keys, or not the card).
    #[error("card cryptogram does not verify")]
    CardCryptogramMismatch,
    /// Card side: the host cryptogram is wrong.
    #[error("host cryptogram does not verify")]
    HostCryptogramMismatch,
    /// Card side: a C-MAC does not verify (tampered, replayed or out of order).
    #[error("C-MAC does not verify")]
    MacMismatch,
    /// Host side: an R-MAC does not verify.
    #[error("R-MAC does not verify")]
    RMacMismatch,
    /// Card side: a command without the secure-messaging bit in a session.
    #[error("command is not protected by secure messaging")]
    NotSecured,
    /// The session was closed after an error.
    #[error("secure channel session is closed")]
    SessionClosed,
    /// The encryption or sequence counter would wrap.
    #[error("counter exhausted")]
    CounterExhausted,
}
