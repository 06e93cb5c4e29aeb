//! Flow B — IC-card e-money (seeds 001_8d7653a0bee0a3a0 and
//! 004_e11e516f36212ab2; SPEC §2 flow B): the signed artefacts SIG1–SIG5
//! and the pure state machines of store, wallet and host around the
//! `kessai-card` purse.
//!
//! What it does:
//! - [`artefacts`]: BILL (SIG1, store or mall key), SETTLEMENT INFORMATION
//!   (SIG2, host; carries the secured BRC / SPC, the plain balance BI and
//!   the bill amount), SETTLEMENT COMPLETION ACN (SIG3, host; binds bill,
//!   settlement information and PCN), SETTLEMENT COMPLETION RECEIPT (SIG4,
//!   store; binds the completion and the delivery token) and VALUE UPDATE
//!   (SIG5, host; binds the funding authorization) as typed, versioned
//!   COSE_Sign1 objects, each binding the earlier ones by digest.
//! - [`store`]: bills, completion check, receipt, download token.
//! - [`wallet`]: relays only the SCP03 handshake and commands inside
//!   verified host instructions; checks the amount against the bill shown;
//!   holds the SPC until the customer confirms; verifies SIG3 and SIG4.
//! - [`host`]: verifies the bill against the registered store (or mall)
//!   key, status, expiry and settled-state; runs the SCP03 session through
//!   the wallet as a serializable [`host::CardSession`]; reads the balance
//!   (BRC), debits under a ledger hold (SPC) with the hold id as the
//!   card-log reference, verifies the R-MAC'd PCN, posts and signs the ACN;
//!   verifies receipts; top-ups via [`funding`] and CREDIT under SIG5.
//! - Recovery (SPEC flow B step 10): a card operation sent under a hold is
//!   recorded ([`Effect::RecordPendingOp`]); at the card's next contact the
//!   host compares the card counter with the one before the command and, if
//!   it moved, reads the card log: reference found → the hold is posted
//!   (and a purchase's ACN signed and delivered), not found → voided.
//! - Second embodiment: [`host::Sig2Mode::Omitted`] sends settlement
//!   information unsigned ([`artefacts::InfoEnvelope::Unsigned`]); a wallet
//!   accepts it only when configured with the same mode.
//!
//! What it does not do: sockets, files, the clock, the database, or the
//! OS random generator. Time (`now_ms`) and randomness (`CryptoRng`) are
//! injected; every money, counter or record decision is returned as an
//! [`Effect`] for the caller to commit with the new session state in one
//! transaction; uniqueness under concurrency (a bill settles once, one
//! pending operation per card) is the database's job through the keys the
//! effects name.
//!
//! # Claims of 004 in code
//!
//! | claim | where |
//! |---|---|
//! | 1, 10, 24, 25, 27 (settlement information under the common key, relayed by the client device to the data storage device) | [`host::CardSession::handle`] wraps BRC/SPC under the SCP03 session keys (diversified from the issuer master key, the per-card "common key"); [`wallet::WalletSession::on_host`] relays them |
//! | 2, 11, 17, 22, 23, 28 (SIG1 by the store, checked by the host) | [`store::Store::create_bill`], [`host::verify_bill`] |
//! | 3, 19 (bill through the client device) | [`wallet::WalletSession::purchase`] verifies and forwards it; [`host::begin_purchase`] takes it from the wallet |
//! | 4, 12 (SIG2, checked by the client before output to the card) | `CardSession::instruct` (in [`host`]), `WalletSession::open_info` (in [`wallet`]) |
//! | 5, 13, 20 (SIG3 on completion including the settlement information, checked by the store) | [`artefacts::SettlementCompletion`] (`settlement_info_digest`), [`store::Store::verify_completion`] |
//! | 6, 14, 21 (SIG4 receipt, checked by host and client) | [`store::Store::issue_receipt`], [`host::verify_receipt`], [`wallet::WalletSession::on_receipt`] |
//! | 7 (mall of member stores) | [`store::StoreIdentity::Mall`], [`registry::MallRecord`], mall branch of [`host::verify_bill`] |
//! | 8, 15, 16 (value update under the common key, via the client) | [`host::begin_top_up`], CREDIT in `CardSession::proceed` |
//! | 9 (SIG5 on the value update, checked by the client) | [`artefacts::ValueUpdate`], [`wallet::WalletSession::on_host`] |
//! | 18 (store side view of claim 1) | the same host code; [`store::Store`] only sees SIG1/SIG3/SIG4 |
//! | 26 (the data storage device is an IC card) | `kessai-card` (`Card::transmit`), driven through the wallet |
//!
//! ```
//! use kessai_crypto::sign::SigningKey;
//! use kessai_flow_b::host::verify_bill;
//! use kessai_flow_b::registry::{KeyDirectory, MerchantRows, MerchantStatus, StoreRecord};
//! use kessai_flow_b::store::{Store, StoreIdentity};
//! use kessai_money::{Currency, Money};
//!
//! let jpy = Currency::from_code("JPY").unwrap();
//! let key = SigningKey::from_seed(&[1; 32]);
//! let key_ref = "store-1-sign#1".parse().unwrap();
//! let store = Store {
//!     identity: StoreIdentity::Store("store-1".parse().unwrap()),
//!     signing_key: key.clone(),
//!     key_ref,
//!     host_keys: KeyDirectory::new(),
//!     bill_ttl_ms: 600_000,
//! };
//! let mut rng = rand::rng();
//! let bill = store
//!     .create_bill(&"store-1".parse().unwrap(), "order-7".parse().unwrap(),
//!                  Money::new(1_200, jpy), [0; 32], 1_000, &mut rng)
//!     .unwrap();
//!
//! // The host checks SIG1 against the store's registered key.
//! let record = StoreRecord {
//!     store_id: "store-1".parse().unwrap(),
//!     status: MerchantStatus::Active,
//!     keys: KeyDirectory::single("store-1-sign#1".parse().unwrap(), key.verifying_key()),
//!     payable_account: "payable-store-1".parse().unwrap(),
//!     mall_id: None,
//! };
//! let rows = MerchantRows { store: &record, mall: None };
//! let verified = verify_bill(&bill.bytes, rows, 2_000).unwrap();
//! assert_eq!(verified.bill().amount.amount_minor, 1_200);
//! // ... and refuses it once expired.
//! assert!(verify_bill(&bill.bytes, rows, 601_000).is_err());
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod artefacts;
mod bytes;
pub mod card_apdu;
mod effects;
mod error;
pub mod funding;
pub mod host;
pub mod messages;
pub mod registry;
pub mod store;
pub mod wallet;

pub use effects::Effect;
pub use error::FlowError;
