//! Flow A of kessai (SPEC §2, seed `000_d3bd58072e787db8.txt`): card
//! settlement with a portable device having a fingerprint sensor —
//! issuer-gated enrolment, a personal key, card data sealed for the
//! issuer, transactions encrypted to the issuer and signed by the device,
//! retention of what was received, and key update.
//!
//! What it does:
//! - [`device::DeviceState`]: the device's steps and persistent state
//!   (serde, so an emulator can keep it in a file; secrets inside are
//!   sealed under the device-local key of [`device::DeviceSecrets`]).
//! - [`host::Issuer`]: the card management device's steps, as pure
//!   functions over records the caller has loaded, returning the records
//!   to store, the ledger [`kessai_ledger::TransferRequest`] to submit and
//!   the signed artefacts to send — or a typed [`FlowAError`], in which
//!   case nothing is to be stored.
//! - [`keys`]: the versioned transmission and storage key rings with the
//!   grace period after a key update.
//! - [`retention`]: what to retain of each received transaction data, when
//!   to purge it, and its evidence-export entry.
//! - [`merchant`]: signing the order, checking the merchant's result.
//! - [`FingerprintReader`]: the sensor + matcher the device needs, as a
//!   trait (the biometric crate implements it over ISO/IEC 19794-2
//!   templates).
//!
//! What it does not do: sockets, files, databases, the clock or the OS
//! RNG (`now_ms` and `&mut impl CryptoRng` are injected); parsing or
//! matching fingerprints; storing keys; submitting to the ledger (the
//! caller submits [`host::Settlement::transfer`]).
//!
//! # Where each claim of the seed lives
//!
//! | claim | what | code |
//! |---|---|---|
//! | 1 | identity confirmation by fingerprint; order + card information encrypted under the transmission public key, signed with the personal key; sent; host decrypts with the transmission secret key and settles | [`device::DeviceState::confirm_identity`], [`device::DeviceState::build_transaction`], [`host::Issuer::process_transaction`] |
//! | 2 | fingerprint data and card information registered encrypted under the storage public key; host decrypts with the storage secret key | [`device::DeviceState::register`] (template sealed, card kept sealed), [`host::Issuer::process_transaction`] (storage layer), [`artefacts::SealedCard`] |
//! | 3 | host retains received signed transaction data for a period | [`retention::RetainedTransaction`], [`retention::purge_due`], [`Policy::retention_days`] |
//! | 4 | host updates the transmission and storage public keys; device replaces card information and fingerprint data with copies under the new storage key | [`keys::KeyRing::rotate`], [`host::Issuer::issue_key_update`], [`device::DeviceState::apply_key_update`], [`host::Issuer::confirm_key_update`] |
//! | 5 | device: sensor, storage (transmission + storage public keys, card information, master fingerprint data, personal key; card information and master fingerprint data encrypted under the storage key), processor: key generation on reading the master fingerprint, identity confirmation, transaction data generation and transmission | [`device::DeviceState`], [`FingerprintReader`], [`personal_key`] |
//! | 6 | on a REGISTRATION PERMISSION the device reads and registers the master fingerprint and generates the personal key from the fingerprint data read | [`device::DeviceState::register`], [`personal_key::derive_personal_seed`], [`host::Issuer::complete_registration`] |
//! | 7 | host: key generation; registration procedure (request → identity identification → permission); decryption with storage and transmission secret keys; settlement | [`keys::KeyRing::generate_pair`], [`host::Issuer::begin_registration`], [`host::Issuer::open_identification`], [`host::Issuer::decide_identity`], [`host::Issuer::process_transaction`] |
//! | 8 | the system of claims 1 and 5 with a reception means | [`host::transaction_device`] + [`host::Issuer::process_transaction`] |
//! | 9 | = claim 2 for the system | as claim 2 |
//! | 10 | = claim 3 for the system | as claim 3 |
//! | 11 | = claim 4 for the system | as claim 4 |
//!
//! # Security notes
//!
//! - Every artefact is a typed COSE object ([`artefacts`] lists them); the
//!   type, version and key are in the protected header, so nothing signed
//!   or sealed for one step is accepted for another.
//! - The transaction content is sealed with the device id and counter as
//!   associated data; the card information and master template with the
//!   device id. A ciphertext lifted into another envelope or device does
//!   not open.
//! - The REGISTRATION PERMISSION travels in clear through the terminal. The
//!   key registration therefore carries, besides the proof of possession, a
//!   MAC under a binding secret the device sent sealed to the host with the
//!   enrolment code, so a relaying terminal cannot register its own key.
//! - The enrolment code is stored as a keyed hash, compared in constant
//!   time, limited in tries, single use and expiring.
//! - A fingerprint is not a secret; see [`personal_key`] for why the
//!   personal key mixes the master reading with device randomness.
//!
//! # Example: the start of registration
//!
//! ```
//! use kessai_crypto::hpke::HpkeKeyPair;
//! use kessai_crypto::sign::SigningKey;
//! use kessai_flow_a::device::{DeviceSecrets, DeviceState};
//! use kessai_flow_a::host::{IdentityDecision, Issuer};
//! use kessai_flow_a::keys::{HostKeys, KeyPurpose, KeyRing};
//! use kessai_flow_a::{CardExpiry, CardInformation, Policy};
//! use kessai_secrets::{CardNumber, SecretKey};
//! use rand::SeedableRng;
//!
//! let mut rng = rand::rngs::StdRng::seed_from_u64(7);
//! let keys = HostKeys {
//!     signing_ref: "issuer-sign#1".parse().unwrap(),
//!     signing: SigningKey::from_seed(&[1; 32]),
//!     transmission: KeyRing::new(KeyPurpose::Transmission, "fa-tx#1".parse().unwrap(), HpkeKeyPair::derive(&[2; 32])),
//!     storage: KeyRing::new(KeyPurpose::Storage, "fa-st#1".parse().unwrap(), HpkeKeyPair::derive(&[3; 32])),
//!     code_key: SecretKey::new([4; 32]),
//! };
//! let issuer = Issuer::new(&keys, Policy::default());
//! let customer = "cust-1".parse().unwrap();
//! let (code, code_record) = issuer.issue_enrolment_code(&customer, 0, &mut rng).unwrap();
//!
//! let mut device = DeviceState::new("dev-1".parse().unwrap(), keys.anchor(), 5);
//! let secrets = DeviceSecrets::new(SecretKey::new([9; 32]));
//! let request = device.registration_request(&mut rng).unwrap();
//! let started = issuer.begin_registration(&request, None, 0, &mut rng).unwrap();
//! let sealed = device
//!     .answer_identity_request(&started.identity_request, &customer, &code, &secrets, 1, &mut rng)
//!     .unwrap();
//! let ident = issuer.open_identification(&started.session, &sealed, 2).unwrap();
//! let card = CardInformation {
//!     pan: CardNumber::new("4111111111111111").unwrap(),
//!     expiry: CardExpiry::new(2030, 12).unwrap(),
//!     cardholder: customer.clone(),
//!     funding_account: "card-1".parse().unwrap(),
//! };
//! let decision = issuer.decide_identity(&started.session, &ident, Some(&code_record), &card, 3, &mut rng);
//! assert!(matches!(decision, IdentityDecision::Permitted { .. }));
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod artefacts;
pub mod device;
mod error;
pub mod fingerprint;
pub mod host;
pub mod keys;
pub mod merchant;
mod model;
pub mod personal_key;
pub mod retention;

pub use error::{FlowAError, ReaderError};
pub use fingerprint::{FingerprintReader, MasterReading, MatchOutcome};
pub use model::{
    BindingSecret, CardExpiry, CardInformation, EnrolmentCode, ISO19794_2_MAGIC, IssuerAnchor,
    MAX_TEMPLATE_LEN, Policy, PublishedKey, Template,
};
