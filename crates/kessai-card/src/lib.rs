//! The kessai IC-card applet: an e-money purse behind a GlobalPlatform SCP03
//! secure channel, for flows B and D (SPEC §2). Pure: no I/O, no clock, no
//! randomness source — the card's own challenge generator is seeded at
//! personalization, and its memory is an injected [`Nvm`].
//!
//! What it does:
//! - [`Card::transmit`]: one command APDU in, one response APDU out (ISO/IEC
//!   7816-4, parsed with the `iso7816` crate; errors are status words). The
//!   command set (SELECT, INITIALIZE UPDATE, EXTERNAL AUTHENTICATE, GET
//!   CHALLENGE, VERIFY, READ BALANCE, DEBIT, CREDIT, READ LOG, GENERATE
//!   CRYPTOGRAM, READ CARD DATA, SET STATUS) is documented in `docs/CARD.md`;
//! - persistent state (keys, balance, counter, log ring, PIN data,
//!   lifecycle) in [`Nvm`] records, separate from volatile state (session,
//!   selection, PIN-verified flag) that a power cycle clears;
//! - tearing safety: a purse update is committed through a journal, so a
//!   power cut at any write leaves exactly the old or the new state;
//! - [`harness`]: an in-process host driver (SCP03 host side) that opens a
//!   session and runs purse commands; it works over any [`harness::ApduTransport`].
//!
//! What it does not do: talk to a reader (transports are adapters around
//! [`Card::transmit`]), store itself in a file (implement [`Nvm`]), keep
//! host-side shadow state.
//!
//! ```
//! use kessai_card::{harness::HostDriver, issuer_card_keys, Card, MemNvm, PersonalizationParams};
//! use kessai_money::Currency;
//! use kessai_scp03::{AesKey, SecurityLevel};
//!
//! let jpy = Currency::from_code("JPY").unwrap();
//! let card_id = "card-0001".parse().unwrap();
//! let master = AesKey::Aes128([0x42; 16]);
//! let keys = issuer_card_keys(&master, &card_id, 1);
//! let params = PersonalizationParams::new(card_id, keys.clone(), jpy, 50_000, [7; 32]);
//! let mut card = Card::personalize(params, MemNvm::new()).unwrap();
//! card.power_on();
//!
//! let mut host = HostDriver::new(keys.static_keys);
//! host.select(&mut card).unwrap();
//! host.open(&mut card, SecurityLevel::Full, [1; 8]).unwrap();
//! host.credit(&mut card, 10_000, [0xAA; 16], [0; 16]).unwrap();
//! let pcn = host.debit(&mut card, 1_200, [0xBB; 16], [0; 16]).unwrap();
//! assert_eq!(pcn.balance_after_minor, 8_800);
//! assert_eq!(card.snapshot().counter, 2);
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod applet;
pub mod harness;
pub mod nvm;
pub mod records;

use std::fmt;

pub use applet::{Card, CardSnapshot, biometric_verify_data, format2_pin_block};
pub use nvm::{MemNvm, Nvm, NvmError, RecordId};
pub use records::{Lifecycle, LogKind, LogRecord};

use hmac::{Hmac, KeyInit, Mac};
use kessai_ids::CardId;
use kessai_money::Currency;
use kessai_scp03::keys::{KeyPurpose, diversify, kdd_for_card_id};
use kessai_scp03::{AesKey, StaticKeys};
use kessai_secrets::{CardNumber, Pin};
use sha2::Sha256;

/// The applet's AID: `F0 6B 65 73 73 61 69 01` — an unregistered
/// proprietary AID (ISO/IEC 7816-4 §12.2.3, first nibble `F`): `F0`, ASCII
/// "kessai", version `01`.
pub const AID: [u8; 8] = [0xF0, 0x6B, 0x65, 0x73, 0x73, 0x61, 0x69, 0x01];

/// The answer-to-reset: direct convention, T=1, historical bytes in
/// COMPACT-TLV (`80`): issuer data "kessai" (`56` ...) and card capabilities
/// (`73` `80 01 40`: selection by full DF name, extended Lc/Le supported),
/// followed by the check byte TCK.
pub fn atr() -> Vec<u8> {
    let hist: [u8; 12] = [
        0x80, 0x56, b'k', b'e', b's', b's', b'a', b'i', 0x73, 0x80, 0x01, 0x40,
    ];
    // TS, T0 (TD1 present, K = 12), TD1 (TD2 present, T=0), TD2 (T=1).
    let mut atr = vec![0x3B, 0x80 | hist.len() as u8, 0x80, 0x01];
    atr.extend_from_slice(&hist);
    let tck = atr[1..].iter().fold(0u8, |a, b| a ^ b);
    atr.push(tck);
    atr
}

/// Errors of loading or personalizing a card (not of APDU processing,
/// which answers status words).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CardError {
    /// The memory holds no personalized card.
    #[error("card is not personalized")]
    NotPersonalized,
    /// A record does not decode.
    #[error("card memory is corrupt: {0}")]
    Corrupt(&'static str),
    /// Non-volatile memory failed.
    #[error(transparent)]
    Nvm(#[from] NvmError),
    /// Personalization parameters are invalid.
    #[error("invalid personalization: {0}")]
    InvalidParams(&'static str),
}

/// The keys an issuer derives for one card from its master key.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuerCardKeys {
    /// SCP03 static keys (ENC, MAC, DEK) with key version.
    pub static_keys: StaticKeys,
    /// Flow-D application cryptogram key.
    pub cryptogram_key: AesKey,
}

impl fmt::Debug for IssuerCardKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IssuerCardKeys({:?}, redacted)", self.static_keys)
    }
}

/// Derives a card's keys from the issuer master key: KDD =
/// [`kdd_for_card_id`], then ENC / MAC / DEK / application-cryptogram keys
/// by [`kessai_scp03::keys::diversify`] (NIST SP 800-108 counter-mode
/// AES-CMAC, purposes 01 / 02 / 03 / 81).
pub fn issuer_card_keys(master: &AesKey, card_id: &CardId, key_version: u8) -> IssuerCardKeys {
    let kdd = kdd_for_card_id(card_id.as_str());
    IssuerCardKeys {
        static_keys: StaticKeys::diversified(master, &kdd, key_version),
        cryptogram_key: diversify(master, KeyPurpose::ApplicationCryptogram, &kdd),
    }
}

/// Cardholder settlement data for flow D, readable in clear by any terminal
/// through READ CARD DATA (as EMV exposes the PAN).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CardholderData {
    /// Primary account number.
    pub pan: CardNumber,
    /// Expiry as four ASCII digits `YYMM`.
    pub expiry_yymm: String,
    /// Cardholder name: 2–26 printable ASCII characters.
    pub name: String,
}

/// Everything written into a card at issuance.
#[derive(Clone, Debug)]
pub struct PersonalizationParams {
    /// The card's identifier.
    pub card_id: CardId,
    /// SCP03 static keys and key version (1..=0x7F).
    pub keys: StaticKeys,
    /// Flow-D application cryptogram key.
    pub cryptogram_key: AesKey,
    /// Purse currency.
    pub currency: Currency,
    /// Largest balance the purse may hold, minor units (> 0).
    pub purse_max_minor: i64,
    /// Balance at issuance, minor units (0..=max).
    pub initial_balance_minor: i64,
    /// Optional flow-D cardholder data.
    pub cardholder: Option<CardholderData>,
    /// Optional offline PIN; stored only as a keyed hash.
    pub pin: Option<Pin>,
    /// PIN tries before blocking (1..=15).
    pub pin_max_tries: u8,
    /// Optional fingerprint reference template for on-card comparison
    /// (flow D claim 16); stored as an ISO/IEC 19794-2 record, never
    /// readable from outside the card.
    pub fingerprint: Option<kessai_biometric::Template>,
    /// Fingerprint comparison tries before blocking (1..=15).
    pub bio_max_tries: u8,
    /// Injected randomness: keys the card's challenge generator and its PIN
    /// verification data.
    pub seed: [u8; 32],
}

impl PersonalizationParams {
    /// Parameters with zero balance, no cardholder data, no PIN (3 tries),
    /// no fingerprint (5 tries).
    pub fn new(
        card_id: CardId,
        keys: IssuerCardKeys,
        currency: Currency,
        purse_max_minor: i64,
        seed: [u8; 32],
    ) -> Self {
        Self {
            card_id,
            keys: keys.static_keys,
            cryptogram_key: keys.cryptogram_key,
            currency,
            purse_max_minor,
            initial_balance_minor: 0,
            cardholder: None,
            pin: None,
            pin_max_tries: 3,
            fingerprint: None,
            bio_max_tries: 5,
            seed,
        }
    }
}

/// The flow-D card cryptogram (like an EMV ARQC): AES-CMAC under the
/// card's application-cryptogram key over
/// `host challenge (8) ‖ amount (8) ‖ currency numeric (2) ‖ counter (4) ‖
/// CVM result (1: 00 none, 01 offline PIN verified, 02 fingerprint matched
/// on the card) ‖ card id (ASCII)`.
/// The issuer recomputes it to verify GENERATE CRYPTOGRAM responses.
pub fn application_cryptogram(
    key: &AesKey,
    host_challenge: &[u8; 8],
    amount_minor: u64,
    currency_numeric: u16,
    counter: u32,
    cvm: u8,
    card_id: &str,
) -> [u8; 16] {
    key.cmac(&[
        host_challenge,
        &amount_minor.to_be_bytes(),
        &currency_numeric.to_be_bytes(),
        &counter.to_be_bytes(),
        &[cvm],
        card_id.as_bytes(),
    ])
}

/// PIN verification data: HMAC-SHA-256 under the card's PIN key over
/// `"kessai/pin/v1" ‖ 00 ‖ card id ‖ 00 ‖ PIN digits (ASCII)`.
pub(crate) fn pin_verifier(pin_key: &[u8; 32], card_id: &str, digits: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(pin_key).expect("HMAC takes any key");
    mac.update(b"kessai/pin/v1");
    mac.update(&[0]);
    mac.update(card_id.as_bytes());
    mac.update(&[0]);
    mac.update(digits);
    let out = mac.finalize().into_bytes();
    let mut v = [0u8; 32];
    v.copy_from_slice(&out);
    v
}
