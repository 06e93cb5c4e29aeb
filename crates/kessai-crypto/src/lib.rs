//! Cryptography for kessai: Ed25519 signatures, HPKE public-key encryption,
//! typed COSE artefacts, and sealing secrets at rest.
//!
//! - [`sign`]: Ed25519 (RFC 8032) keys, strict verification, PEM public keys.
//! - [`hpke`]: HPKE (RFC 9180) DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 /
//!   AES-128-GCM, base mode, single-shot.
//! - [`cose`]: artefacts as COSE_Sign1 (Ed25519) and COSE_Encrypt0 (HPKE
//!   integrated encryption) whose protected headers name type, version and
//!   key, so nothing signed or sealed for one purpose is accepted for
//!   another. Verifying returns proof values ([`cose::Verified`],
//!   [`cose::Opened`]) only this crate can construct.
//! - [`at_rest`]: AES-256-GCM envelopes under a master key, bound to a
//!   caller-chosen AAD.
//! - [`digest`]: SHA-256 over byte strings.
//!
//! What it does not do: store keys, decide which keys are valid (callers
//! pass a `resolve` function), read the clock or the OS RNG (randomness is
//! injected as `&mut impl rand_core::CryptoRng`), or touch files and sockets.
//! Secret keys zeroize on drop and never print in `Debug`; errors never
//! carry key material or plaintext.
//!
//! ```
//! use kessai_crypto::cose::{self, Artefact};
//! use kessai_crypto::sign::SigningKey;
//! use kessai_ids::KeyRef;
//!
//! #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
//! struct Bill { order: String, amount_minor: u64 }
//! impl Artefact for Bill {
//!     const TYPE: &'static str = "bill";
//!     const VERSION: u32 = 1;
//! }
//!
//! let key = SigningKey::from_seed(&[7; 32]);
//! let key_ref: KeyRef = "store-1-sign#1".parse().unwrap();
//! let bill = Bill { order: "o-7".into(), amount_minor: 1200 };
//! let bytes = cose::sign_artefact(&bill, &key, &key_ref).unwrap();
//!
//! let vk = key.verifying_key();
//! let verified = cose::verify_artefact::<Bill>(&bytes, |r| (r == &key_ref).then_some(vk)).unwrap();
//! assert_eq!(verified.payload(), &bill);
//! assert_eq!(verified.signer(), &key_ref);
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod at_rest;
pub mod cose;
pub mod digest;
mod error;
pub mod hpke;
mod key_serde;
pub mod sign;

pub use error::{CoseError, CryptoError};
