//! Flow D of kessai (seed 003_2c3ae5b2edbf6b86.txt; SPEC.md flow D): the
//! phone reads the customer's IC card and takes their PIN, the host issues a
//! one-time **temporary password**, the merchant's POS keys it in (or scans
//! it as an EMVCo QR code) with the sale, the host settles once and signs a
//! receipt. Plus the merchant-IC-card variant, the short-range-link variant
//! and the in-phone card check. Pure: no sockets, files, clock or database.
//!
//! - [`cardio`]: the phone's card commands (READ CARD DATA, GENERATE
//!   CRYPTOGRAM, offline VERIFY) over any `ApduTransport`.
//! - [`phone`]: builds the authorization and merchant-card requests (PIN as
//!   a format-4 block sealed to the host), the claim-10 in-phone check.
//! - [`host`]: authorization server, settlement server, password issuance:
//!   functions of already-looked-up records returning [`host::Outcome`]s =
//!   [`host::Effect`]s for one database transaction + the answer.
//! - [`password`]: 12-digit passwords, keyed-hash storage, guessing numbers.
//! - [`emvqr`] / [`tlv`]: EMVCo consumer-presented-mode QR payloads (strict
//!   BER-TLV, base64), rendered as terminal text or PNG.
//! - [`artefacts`]: COSE artefacts (sealed cardholder payload, signed
//!   receipt, issuer card profile).
//! - [`link`] / [`pos`]: the short-range link (framed, authenticated) and
//!   the POS state machine serving many phones at once.
//! - [`memstore`]: an in-memory store carrying out effects with the same
//!   conditional rules the SQL store must enforce.
//!
//! What it does not do: HTTP, SQL, TCP (the lead's host, store and CLI
//! carry the effects out and move the messages), read the clock or the OS
//! RNG (`now_ms` and `&mut impl CryptoRng` are injected), or keep secrets:
//! PINs and PIN blocks live for one call; passwords are stored as keyed
//! hashes; card numbers only as keyed digests and masked text.
//!
//! # Where each claim lives
//!
//! | claim | what | code |
//! |---|---|---|
//! | 1 | phone connects, reads card, sends card auth + settlement info + personal id; host decides; password to the phone; POS sends password + transaction; settlement server settles | [`phone::build_authorization`], [`host::Host::issue_challenge`], [`host::Host::authorize`], [`host::Host::redeem`] |
//! | 2 | customer + merchant IC cards in the phone, both authenticated, customer enters the amount | [`phone::build_merchant_card_request`], [`host::Host::settle_with_merchant_card`] |
//! | 3 | phone ↔ POS short-range link; POS relays card auth and PIN, checks validity, forwards with merchant info | [`link`], [`pos::Pos`] |
//! | 4 | receipt issued at the POS after settlement | [`artefacts::Receipt::to_text`], [`pos::PosOutput::Print`] |
//! | 5 | card with auth info, personal id, settlement info; application-server gateway; password issuance | [`cardio`], [`artefacts::CardholderPayload`] (the gateway only relays sealed bytes), [`host::Host::authorize`] |
//! | 6 | card check, then personal id, then settlement info; password from personal id, settlement info and reception time; POS input; receipt by the server's signal | [`host::Host::authorize`] (order of checks), [`host::PasswordRecord`] (`issued_at_ms`), [`host::Host::redeem`] |
//! | 7 | customer card (number, expiry, name) and merchant card (merchant id) | [`cardio::CardData`], [`host::MerchantRecord::merchant_card`] |
//! | 8 | both cards authenticated, then the customer, then settlement; POS signalled | [`host::Host::settle_with_merchant_card`], [`host::Effect::SignalPos`] |
//! | 9 | application server and authorization server in a service center | deployment: the host's gateway listener relays [`host::AuthorizationRequest`]s it cannot open |
//! | 10 | card legitimacy checked in the phone | [`phone::check_card_in_phone`] (and its honest limits) against the issuer-signed profile the host returns at card registration ([`artefacts::sign_card_profile`]) |
//! | 11 | wireless modules in phone and POS | [`link::Link`] (TCP loopback, BLE, NFC adapters) |
//! | 12 | card auth + PIN via POS to the authorization server; then sum and goods to the POS; POS checks; forwards with merchant info; receipt | [`pos`] module docs, [`pos::Pos::on_phone`], [`pos::Pos::on_host`] |
//! | 13 | application server between network and POS hosting the authorization server | deployment (same host API) |
//! | 14 | one POS with several phones at once | [`pos::SessionId`], sessions bound to connections |
//! | 15 | settlement result also shown on the phone | [`host::Effect::PushReceiptToPhone`], [`pos::PosToPhone::Receipt`] |
//! | 16 | fingerprint matched on the card | the applet's VERIFY (biometric) runs the matcher on the card ([`cardio::verify_fingerprint_on_card`]); [`host::Cvm::OnCardBiometric`] (CVM byte `02` bound into the cryptogram) |
//! | 17 | secret known only to the user | [`host::CvmMethod::RegisteredSecret`] (keyed digest at the host) |
//! | 18, 19 | missing from the seed text we have (it jumps from 17 to 20) | — |
//! | 20 | the terminal is a mobile telephone | [`phone`] |
//!
//! # Guessing the password
//!
//! 12 digits ≈ 39.9 bits; with 5 wrong passwords per terminal per hour and
//! 100 000 live passwords, one terminal succeeds with probability 5 × 10⁻⁷
//! per hour (details in [`password`]).
//!
//! # Example
//!
//! ```
//! use kessai_flow_d::emvqr::{PasswordQr, TokenBin, render_text};
//! use kessai_flow_d::password::{PasswordKey, TemporaryPassword};
//! use kessai_secrets::SecretKey;
//! use rand::SeedableRng;
//!
//! let mut rng = rand::rngs::StdRng::seed_from_u64(1);
//! let password = TemporaryPassword::generate(&mut rng);
//! // The host stores only the keyed hash.
//! let key = PasswordKey::new(SecretKey::new([3; 32]));
//! let stored = key.id_of(&password);
//!
//! // The phone shows it as an EMVCo CPM QR code ...
//! let qr = PasswordQr { password, cryptogram_prefix: [1; 8], counter: 7, cvm: 0 };
//! let payload = qr.to_payload(&TokenBin::default());
//! assert!(payload.starts_with("hQVDUFYwMW")); // 85 05 "CPV01"
//! assert!(!render_text(&payload).unwrap().is_empty());
//!
//! // ... the POS scans it, the host looks the password up by its hash.
//! let scanned = PasswordQr::from_payload(&payload, &TokenBin::default()).unwrap();
//! assert_eq!(key.id_of(&scanned.password), stored);
//! assert_eq!(scanned.counter, 7);
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod artefacts;
pub mod cardio;
pub mod emvqr;
mod error;
mod hexser;
pub mod host;
pub mod link;
pub mod memstore;
pub mod password;
pub mod phone;
mod png;
pub mod pos;
pub mod tlv;

pub use error::FlowDError;
