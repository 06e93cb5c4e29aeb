//! Flow C of kessai: a card reader plugged into the customer's phone
//! (seed 002, JP 2002-259866 A; SPEC.md flow C). Pure: the artefacts and
//! the state machines of the four parties.
//!
//! - [`artefacts`]: the signed and sealed messages (COSE_Sign1 /
//!   COSE_Encrypt0 through kessai-crypto), each with its own type and
//!   version, each binding the transaction id and the earlier artefacts by
//!   digest; the PIN block design (format 4 inside Encrypt0).
//! - [`host`]: the issuer host, one serializable [`host::HostTxn`] per
//!   transaction (S1–S27): merchant check, approval with timeout,
//!   per-transaction HPKE key, card data and PIN verification with a try
//!   counter, settlement, completion, and destruction of the key and every
//!   ciphertext on every terminal state. Decisions that touch money,
//!   counters, keys or the outside world come back as [`host::Effect`]s.
//! - [`reader`]: the reader emulator (card read unit, PIN pad, display,
//!   encryption unit; S34–S45).
//! - [`phone`]: the phone (approval with its device key, relaying; S31–S46).
//! - [`merchant`]: the merchant terminal (signed request, verified
//!   completion).
//!
//! # Where each seed step lives
//!
//! Seed 002 paragraphs 0017–0042, figures 4–5 (host) and 6–7 (phone and
//! reader):
//!
//! | steps | what | code |
//! |---|---|---|
//! | S1–S3, S9 | merchant request, merchant table lookup, decline if unknown | [`merchant::MerchantTerminal::payment_request`], [`host::payment_request_signer`], [`host::verify_payment_request`] (unknown / suspended → `Err`) |
//! | S4 | approval request to the phone | [`host::HostTxn::begin`] |
//! | S31–S33, S46 | phone shows amount and merchant, approve / reject / no key press | [`phone::Phone::receive_approval_request`], [`phone::Phone::answer`], [`phone::Phone::on_timeout`] |
//! | S5, S6, S7 | approval within the timeout; per-transaction key pair; signed public key | [`host::HostTxn::on_approval`], [`host::HostTxn::on_timeout`] |
//! | S34 | key to the reader, kept in memory | [`phone::Phone::relay_transaction_key`], [`reader::Reader::load_transaction_key`] |
//! | S35–S37 | read card, encrypt, relay | [`reader::Reader::read_card`], [`phone::Phone::relay_to_host`] |
//! | S8 | no card data in time → decline | [`host::HostTxn::on_timeout`] |
//! | S10–S13 | decrypt and authenticate card data (AEAD replaces re-encrypt-and-compare) | [`host::HostTxn::open_card_data`] |
//! | S14–S16, S27 | card lookup, unknown → decline, PIN request | [`host::HostTxn::accept_card`] |
//! | S39–S42 | PIN prompt on the reader's display, PIN on its keypad, encrypt, relay | [`phone::Phone::relay_pin_prompt`], [`reader::Reader::handle_pin_prompt`] |
//! | S17 | no PIN in time → decline | [`host::HostTxn::on_timeout`] |
//! | S18–S22, S27 | decrypt and authenticate the PIN, compare, decline if wrong (try counter, lockout) | [`host::HostTxn::on_pin_block`] |
//! | S23 | settlement | [`host::Effect::SettleInLedger`], [`host::HostTxn::on_settlement`] |
//! | S24–S26 | completion to phone and merchant; destroy key pair, ciphertexts, plaintexts | [`host::Effect::SendToPhone`], [`host::Effect::NotifyMerchant`], [`host::Effect::DestroyTransactionKey`], [`host::Effect::RecordDestruction`] |
//! | S38, S43–S45 | phone and reader receive completion / decline; reader discards its key | [`phone::Phone::receive_completion`], [`reader::Reader::handle_completion`] |
//! | 0042 | merchant confirms completion | [`merchant::MerchantTerminal::verify_completion`] |
//!
//! Deviations from the seed, each for a reason SPEC.md gives: a message
//! that fails authentication is refused without ending the transaction
//! (S13 / S20 decline only through the deadline), the PIN is compared with
//! keyed verification data instead of a stored PIN (S21), and the host
//! keeps no plaintext between calls (S16 keeps the sealed card data and
//! re-opens it).
//!
//! What it does not do: sockets, HTTP, the phone's push channel, the
//! database (merchant, phone and card tables, persisted PIN counters, the
//! key store, the audit log), the clock or the OS RNG. The host's I/O layer
//! does the lookups, passes `now_ms` and an RNG in, and carries out the
//! effects; the CLI wires reader and phone to the host.
//!
//! ```
//! use kessai_crypto::sign::SigningKey;
//! use kessai_flow_c::artefacts::{CustomerRef, Signer, TrustedKeys};
//! use kessai_flow_c::host::{self, MerchantRecord, MerchantStatus};
//! use kessai_flow_c::merchant::MerchantTerminal;
//! use kessai_flow_c::FlowError;
//! use kessai_money::Money;
//! use rand::SeedableRng;
//!
//! let mut rng = rand::rngs::StdRng::seed_from_u64(1);
//! let host_key = Signer::new(SigningKey::from_seed(&[1; 32]), "host-sign#1".parse().unwrap());
//! let shop_key = Signer::new(SigningKey::from_seed(&[2; 32]), "shop-1-sign#1".parse().unwrap());
//! let host_trust = TrustedKeys::new([(host_key.key_ref().clone(), host_key.verifying_key())]);
//! let mut shop = MerchantTerminal::new("shop-1".parse().unwrap(), shop_key.clone(), host_trust);
//!
//! let amount: Money = "1200 JPY".parse().unwrap();
//! let customer = CustomerRef::phone("+819012345678").unwrap();
//! let request = shop
//!     .payment_request(customer, amount, "order-1".parse().unwrap(), 1_000, 60_000, &mut rng)
//!     .unwrap();
//!
//! // The host finds the merchant by the request's signing key (S2) ...
//! let record = MerchantRecord {
//!     store_id: "shop-1".parse().unwrap(),
//!     display_name: "Shop One".into(),
//!     status: MerchantStatus::Active,
//!     key_ref: host::payment_request_signer(&request).unwrap(),
//!     key: shop_key.verifying_key(),
//!     payable_account: "payable-shop-1".parse().unwrap(),
//!     currency: amount.currency,
//! };
//! let verified = host::verify_payment_request(&request, Some(&record), 2_000).unwrap();
//! assert_eq!(verified.request().amount, amount);
//! // ... and an unknown merchant is refused (S3 N → S9).
//! assert_eq!(
//!     host::verify_payment_request(&request, None, 2_000).unwrap_err(),
//!     FlowError::UnknownMerchant
//! );
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod artefacts;
mod error;
pub mod host;
mod ids;
pub mod merchant;
pub mod phone;
pub mod reader;

pub use error::FlowError;
pub use ids::{ArtefactDigest, Sealed, TxnId};
