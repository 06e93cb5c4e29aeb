//! The host's flow-D decisions: authorization server, settlement server and
//! password issuance (claims 1, 2, 5, 6, 8, 16, 17). Pure: every function
//! takes the records the host's store already looked up and returns an
//! [`Outcome`]: the [`Effect`]s to carry out **in one database transaction**
//! and the result for the caller.
//!
//! # What the store must enforce (not process memory)
//!
//! - [`Effect::ConsumeChallenge`]: `UPDATE … SET consumed WHERE NOT consumed`;
//!   0 rows → roll back, answer [`FlowDError::ChallengeUsed`].
//! - [`Effect::AdvanceCardCounter`]: `UPDATE … SET last = n WHERE last < n`;
//!   0 rows → roll back, answer [`FlowDError::CounterReplay`].
//! - [`Effect::MarkPasswordUsed`]: `UPDATE … SET used WHERE unused`; 0 rows →
//!   roll back, answer [`FlowDError::PasswordUsed`]. Together with the
//!   transfer id derived from the password id (unique in the ledger) this
//!   makes a password settle at most once across host processes.
//! - [`Effect::Settle`]: the ledger transfer; a ledger refusal rolls back
//!   every other effect of the same outcome, and the receipt is not released.
//! - Refusals that carry effects ([`Effect::RecordCvmFailure`],
//!   [`Effect::RecordGuessFailure`], and the challenge / counter effects of
//!   a verified cryptogram) are committed even though the answer is an error.
//!
//! [`crate::memstore::MemHost`] implements exactly these rules in memory.

use std::fmt;

use kessai_card::application_cryptogram;
use kessai_crypto::hpke::{HpkeKeyPair, HpkePublicKey};
use kessai_crypto::sign::{SigningKey, VerifyingKey};
use kessai_ids::{AccountId, CardId, KeyRef, StoreId, TerminalId, TransferId};
use kessai_ledger::{TransferRequest, codes};
use kessai_money::{Currency, Money};
use kessai_pin::{PinBlock, PinKey, PinVerificationData, PinVerificationKey, verify_pin_block};
use kessai_scp03::AesKey;
use kessai_secrets::{CardNumber, SecretKey};
use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::FlowDError;
use crate::artefacts::{
    self, CardholderPayload, LineItem, Receipt, SignedReceipt, Variant, cardholder_aad, check_goods,
};
use crate::cardio::CardAuth;
use crate::emvqr::{PasswordQr, TokenBin};
use crate::password::{PasswordId, PasswordKey, TemporaryPassword};

/// CVM result byte values bound into the card cryptogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cvm {
    /// `00`: the card verified nothing.
    None,
    /// `01`: offline PIN verified by the card since SELECT.
    OfflinePin,
    /// `02`: on-card biometric match (claim 16): a card with a fingerprint
    /// template and matcher sets it after a match. The kessai applet has no
    /// sensor and never sets it; such a card is modelled in the tests by
    /// computing its cryptogram with `application_cryptogram`.
    OnCardBiometric,
}

impl Cvm {
    /// The byte.
    pub fn byte(self) -> u8 {
        match self {
            Cvm::None => 0,
            Cvm::OfflinePin => 1,
            Cvm::OnCardBiometric => 2,
        }
    }
}

/// How the customer proves who they are (claims 1, 16, 17).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CvmMethod {
    /// Format-4 PIN block in the sealed payload, checked by the host.
    OnlinePin,
    /// PIN verified by the card (CVM byte `01` in the cryptogram).
    OfflinePin,
    /// Fingerprint matched on the card (CVM byte `02`, claim 16).
    OnCardBiometric,
    /// A secret registered in advance (claim 17), in the sealed payload.
    RegisteredSecret,
}

/// Host policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostConfig {
    /// Password lifetime (default 120 000 ms).
    pub password_ttl_ms: u64,
    /// Host challenge lifetime (default 120 000 ms).
    pub challenge_ttl_ms: u64,
    /// Wrong PIN / secret tries before lockout (default 3).
    pub max_cvm_tries: u8,
    /// Wrong passwords a terminal may key in per window (default 5).
    pub guess_limit: u32,
    /// The guess-counting window (default 3 600 000 ms).
    pub guess_window_ms: u64,
    /// Largest cap or amount per authorization, minor units (default 1 000 000).
    pub max_amount_minor: i64,
    /// Token BIN for QR codes.
    pub token_bin: TokenBin,
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            password_ttl_ms: 120_000,
            challenge_ttl_ms: 120_000,
            max_cvm_tries: 3,
            guess_limit: 5,
            guess_window_ms: 3_600_000,
            max_amount_minor: 1_000_000,
            token_bin: TokenBin::default(),
        }
    }
}

/// The host's keys for flow D.
pub struct HostKeys {
    /// Issuer master key the card keys are diversified from.
    pub card_master: AesKey,
    /// Key version of the cards' keys.
    pub card_key_version: u8,
    /// HPKE key the phone seals cardholder payloads to.
    pub cardholder_key: HpkeKeyPair,
    /// Its key reference.
    pub cardholder_key_ref: KeyRef,
    /// PIN verification key.
    pub pin_verification: PinVerificationKey,
    /// Key of password hashes.
    pub password_key: PasswordKey,
    /// Key of card-number and secret digests in the card records.
    pub record_key: SecretKey<32>,
    /// Receipt signing key.
    pub receipt_key: SigningKey,
    /// Its key reference.
    pub receipt_key_ref: KeyRef,
}

impl fmt::Debug for HostKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "HostKeys(cardholder {}, receipt {}, redacted)",
            self.cardholder_key_ref, self.receipt_key_ref
        )
    }
}

/// What a phone needs to know about the host (published keys).
#[derive(Debug, Clone)]
pub struct HostPublic {
    /// Seal cardholder payloads to this key.
    pub cardholder_key: HpkePublicKey,
    /// Its key reference.
    pub cardholder_key_ref: KeyRef,
    /// Receipts verify under this key.
    pub receipt_key: VerifyingKey,
    /// Its key reference.
    pub receipt_key_ref: KeyRef,
}

/// A host challenge the store keeps until it is used or expires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChallengeRecord {
    /// The 8 challenge bytes (unique key).
    #[serde(with = "crate::hexser")]
    pub challenge: [u8; 8],
    /// Expiry, unix ms.
    pub expires_at_ms: u64,
    /// Set once an authorization used it.
    pub consumed: bool,
}

/// The host's record of an issued card (customer or merchant card).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardRecord {
    /// The card.
    pub card_id: CardId,
    /// Card currency.
    pub currency: Currency,
    /// Highest counter accepted so far.
    pub last_counter: u32,
    /// Blocked at the host (lost, stolen, or CVM tries used up).
    pub blocked: bool,
    /// Customer cards: the cardholder part; `None` for merchant cards.
    pub customer: Option<CustomerPart>,
}

/// The customer-card part of a [`CardRecord`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerPart {
    /// HMAC-SHA-256 of the PAN under the record key ([`Host::pan_digest`]).
    #[serde(with = "crate::hexser")]
    pub pan_digest: [u8; 32],
    /// Masked PAN (BIN + last 4), for receipts.
    pub pan_masked: String,
    /// Expiry `YYMM`.
    pub expiry_yymm: String,
    /// Keyed PIN verification data (kessai-pin stored form), if a PIN is set.
    pub pin_verification: Option<Vec<u8>>,
    /// Digest of the registered secret ([`Host::secret_digest`]), if any.
    pub secret_digest: Option<String>,
    /// A fingerprint template is enrolled on the card (claim 16).
    pub biometric_enrolled: bool,
    /// PIN / secret tries left.
    pub cvm_tries_left: u8,
    /// The ledger account the card's payments draw on.
    pub funding_account: AccountId,
}

/// A merchant (business establishment).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerchantRecord {
    /// The merchant's id.
    pub store_id: StoreId,
    /// Display name for receipts.
    pub name: String,
    /// Registered and allowed to take payments.
    pub active: bool,
    /// Its merchant-payable ledger account.
    pub payable_account: AccountId,
    /// Its business-establishment IC card (claims 2, 7, 8), if issued.
    pub merchant_card: Option<CardId>,
}

/// A POS terminal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalRecord {
    /// The terminal.
    pub terminal_id: TerminalId,
    /// The merchant it belongs to.
    pub store_id: StoreId,
    /// Wrong passwords in the current window.
    pub guess_failures: u32,
    /// Start of the current window, unix ms.
    pub guess_window_start_ms: u64,
}

/// Life of a password.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum PasswordState {
    /// Issued, not redeemed.
    Unused,
    /// Settled a sale.
    Used {
        /// When, unix ms.
        at_ms: u64,
        /// The transfer.
        transfer_id: TransferId,
    },
}

/// A temporary password as the store keeps it: keyed hash, never digits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordRecord {
    /// Keyed hash of the digits (unique key).
    pub id: PasswordId,
    /// The card it is bound to.
    pub card_id: CardId,
    /// Masked card number, for the receipt.
    pub pan_masked: String,
    /// The account it draws on.
    pub funding_account: AccountId,
    /// Amount cap.
    pub cap: Money,
    /// Issue time, unix ms.
    pub issued_at_ms: u64,
    /// End of validity, unix ms (exclusive).
    pub expires_at_ms: u64,
    /// Counter of the authorizing cryptogram.
    pub card_counter: u32,
    /// First 8 bytes of the authorizing cryptogram (what the QR carries).
    #[serde(with = "crate::hexser")]
    pub cryptogram_prefix: [u8; 8],
    /// SHA-256 of the authorization request (evidence for the transfer).
    #[serde(with = "crate::hexser")]
    pub authorization_digest: [u8; 32],
    /// Unused or used.
    pub state: PasswordState,
}

/// A state change for the host's store to carry out (see the module docs
/// for the conditional updates).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "effect")]
pub enum Effect {
    /// Keep a newly issued challenge.
    StoreChallenge(ChallengeRecord),
    /// Mark a challenge used (only if unused).
    ConsumeChallenge {
        /// The challenge.
        #[serde(with = "crate::hexser")]
        challenge: [u8; 8],
    },
    /// Raise a card's last counter (only if below `counter`).
    AdvanceCardCounter {
        /// The card.
        card_id: CardId,
        /// The new counter.
        counter: u32,
    },
    /// A wrong PIN or secret: set the tries left (and block at 0).
    RecordCvmFailure {
        /// The card.
        card_id: CardId,
        /// Tries left after this failure.
        tries_left: u8,
    },
    /// A correct PIN or secret: restore the tries.
    ResetCvmTries {
        /// The card.
        card_id: CardId,
        /// The full number of tries.
        tries: u8,
    },
    /// Keep a new password record.
    StorePassword(PasswordRecord),
    /// Mark a password used (only if unused).
    MarkPasswordUsed {
        /// The password.
        id: PasswordId,
        /// When.
        at_ms: u64,
        /// The transfer that settled it.
        transfer_id: TransferId,
    },
    /// A wrong password keyed at a terminal: set its failure count/window.
    RecordGuessFailure {
        /// The terminal.
        terminal_id: TerminalId,
        /// Failures in the window after this one.
        failures: u32,
        /// Window start.
        window_start_ms: u64,
    },
    /// Post this ledger transfer.
    Settle(TransferRequest),
    /// Push the signed receipt to the customer's phone (claim 15).
    PushReceiptToPhone {
        /// The customer's card (the phone registered for it).
        card_id: CardId,
        /// COSE_Sign1 receipt.
        receipt: Vec<u8>,
    },
    /// Tell the merchant's POS to issue the receipt (claims 2, 8).
    SignalPos {
        /// The merchant.
        store_id: StoreId,
        /// The terminal, if the phone named one.
        terminal_id: Option<TerminalId>,
        /// COSE_Sign1 receipt.
        receipt: Vec<u8>,
    },
}

/// Effects to commit and the answer.
#[derive(Debug)]
pub struct Outcome<T> {
    /// Carry these out in one transaction, also when `result` is an error.
    pub effects: Vec<Effect>,
    /// The answer.
    pub result: Result<T, FlowDError>,
}

impl<T> Outcome<T> {
    fn err(effects: Vec<Effect>, e: FlowDError) -> Self {
        Self {
            effects,
            result: Err(e),
        }
    }
}

/// A challenge handed to the phone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostChallenge {
    /// The 8 bytes the card signs.
    #[serde(with = "crate::hexser")]
    pub challenge: [u8; 8],
    /// Largest cap the host accepts, minor units.
    pub max_amount_minor: i64,
    /// Expiry, unix ms.
    pub expires_at_ms: u64,
}

/// The phone's authorization request (claims 1, 5, 6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizationRequest {
    /// The host challenge the cryptogram covers.
    #[serde(with = "crate::hexser")]
    pub challenge: [u8; 8],
    /// Card authentication information (amount = the cap).
    pub card: CardAuth,
    /// Cap currency (the card's).
    pub currency: Currency,
    /// How the customer is verified.
    pub method: CvmMethod,
    /// Sealed [`CardholderPayload`] (COSE_Encrypt0).
    pub sealed: Vec<u8>,
}

impl AuthorizationRequest {
    /// SHA-256 over the request's CBOR encoding (evidence digest).
    pub fn digest(&self) -> [u8; 32] {
        kessai_crypto::digest::sha256(&[b"kessai/flow-d/authorization/v1\0", &cbor(self)])
    }
}

fn cbor<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = Vec::new();
    // Serializing plain structs into a Vec cannot fail.
    ciborium::ser::into_writer(v, &mut out).unwrap_or_else(|_| unreachable!("CBOR into Vec"));
    out
}

/// What the phone gets back: the password, shown as digits and QR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordGrant {
    /// The password (send to the phone only, over the authenticated channel).
    pub password: TemporaryPassword,
    /// End of validity, unix ms.
    pub expires_at_ms: u64,
    /// Amount cap.
    pub cap: Money,
    /// The EMVCo CPM payload (base64) for the QR code.
    pub qr_payload: String,
}

/// The password as the POS presents it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum PasswordInput {
    /// Keyed in: 12 digits (spaces and `-` allowed).
    Digits(String),
    /// Scanned: the QR code's base64 payload.
    Qr(String),
}

/// The POS's redemption request (claims 1, 6: "temporary password and the
/// current transaction information").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedemptionRequest {
    /// The terminal.
    pub terminal_id: TerminalId,
    /// The password.
    pub password: PasswordInput,
    /// Sale amount.
    pub amount: Money,
    /// Goods (must add up to the amount).
    pub goods: Vec<LineItem>,
    /// How the password reached the POS: keyed/scanned (basic flow) or
    /// over the short-range link (claims 3, 12). Only names the receipt's
    /// variant.
    #[serde(default)]
    pub channel: RedemptionChannel,
}

/// How a password reached the POS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedemptionChannel {
    /// Keyed in or scanned from the phone's screen.
    #[default]
    KeyedOrScanned,
    /// Relayed by the POS over the short-range link.
    ShortRange,
}

/// A parsed password ready for lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresentedPassword {
    /// Look the record up under this id.
    pub id: PasswordId,
    /// From a QR code: the cryptogram prefix and counter it carried.
    pub qr_card: Option<([u8; 8], u32)>,
}

/// A settled sale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    /// The ledger transfer.
    pub transfer: TransferRequest,
    /// The signed receipt (release only after the transaction committed).
    pub receipt: SignedReceipt,
}

/// The merchant-IC-card request (claims 2, 7, 8): both cards' cryptograms
/// over one challenge and the amount the customer entered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerchantCardRequest {
    /// The host challenge both cryptograms cover.
    #[serde(with = "crate::hexser")]
    pub challenge: [u8; 8],
    /// The customer card's authentication (amount = sale amount).
    pub customer: CardAuth,
    /// The merchant card's authentication (same amount).
    pub merchant: CardAuth,
    /// Currency of the amount.
    pub currency: Currency,
    /// Goods the customer confirmed.
    pub goods: Vec<LineItem>,
    /// The POS to signal, if the phone knows it.
    pub terminal_id: Option<TerminalId>,
    /// How the customer is verified.
    pub method: CvmMethod,
    /// Sealed [`CardholderPayload`] bound to the customer card.
    pub sealed: Vec<u8>,
}

/// The host: configuration and keys, no state.
#[derive(Debug)]
pub struct Host {
    config: HostConfig,
    keys: HostKeys,
}

/// `(year, month)` of a unix-ms time (proleptic Gregorian, UTC).
pub fn year_month(now_ms: u64) -> (i64, u32) {
    // Howard Hinnant's days-to-civil algorithm.
    let z = (now_ms / 86_400_000) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m)
}

fn expired(expiry_yymm: &str, now_ms: u64) -> bool {
    let b = expiry_yymm.as_bytes();
    if b.len() != 4 || !b.iter().all(u8::is_ascii_digit) {
        return true;
    }
    let yy = i64::from((b[0] - b'0') * 10 + (b[1] - b'0'));
    let mm = u32::from((b[2] - b'0') * 10 + (b[3] - b'0'));
    if !(1..=12).contains(&mm) {
        return true;
    }
    let (y, m) = year_month(now_ms);
    (2000 + yy, mm) < (y, m)
}

impl Host {
    /// A host with this policy and these keys.
    pub fn new(config: HostConfig, keys: HostKeys) -> Self {
        Self { config, keys }
    }

    /// The policy.
    pub fn config(&self) -> &HostConfig {
        &self.config
    }

    /// The keys the phone and POS need.
    pub fn public(&self) -> HostPublic {
        HostPublic {
            cardholder_key: self.keys.cardholder_key.public_key().clone(),
            cardholder_key_ref: self.keys.cardholder_key_ref.clone(),
            receipt_key: self.keys.receipt_key.verifying_key(),
            receipt_key_ref: self.keys.receipt_key_ref.clone(),
        }
    }

    /// The keyed PAN digest stored in [`CustomerPart::pan_digest`].
    pub fn pan_digest(&self, pan: &CardNumber) -> [u8; 32] {
        self.hmac(b"kessai/flow-d/pan/v1", &[pan.expose_digits()])
    }

    /// The keyed digest of a registered secret (claim 17), hex.
    pub fn secret_digest(&self, card_id: &CardId, secret: &str) -> String {
        hex::encode(self.hmac(
            b"kessai/flow-d/secret/v1",
            &[card_id.as_str().as_bytes(), secret.as_bytes()],
        ))
    }

    fn hmac(&self, label: &[u8], parts: &[&[u8]]) -> [u8; 32] {
        use hmac::{Hmac, KeyInit, Mac};
        let mut mac =
            <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(self.keys.record_key.expose())
                .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(label);
        for p in parts {
            mac.update(&[0]);
            mac.update(&(p.len() as u32).to_be_bytes());
            mac.update(p);
        }
        mac.finalize().into_bytes().into()
    }

    /// Issues a challenge (step before every authorization).
    pub fn issue_challenge(&self, rng: &mut impl CryptoRng, now_ms: u64) -> Outcome<HostChallenge> {
        let mut challenge = [0u8; 8];
        rng.fill_bytes(&mut challenge);
        let expires_at_ms = now_ms.saturating_add(self.config.challenge_ttl_ms);
        Outcome {
            effects: vec![Effect::StoreChallenge(ChallengeRecord {
                challenge,
                expires_at_ms,
                consumed: false,
            })],
            result: Ok(HostChallenge {
                challenge,
                max_amount_minor: self.config.max_amount_minor,
                expires_at_ms,
            }),
        }
    }

    fn check_challenge(
        &self,
        rec: Option<&ChallengeRecord>,
        challenge: &[u8; 8],
        now_ms: u64,
    ) -> Result<(), FlowDError> {
        let rec = rec
            .filter(|r| &r.challenge == challenge)
            .ok_or(FlowDError::UnknownChallenge)?;
        if rec.consumed {
            return Err(FlowDError::ChallengeUsed);
        }
        if now_ms >= rec.expires_at_ms {
            return Err(FlowDError::ChallengeExpired);
        }
        Ok(())
    }

    /// Card legitimacy: record, amount, cryptogram, counter.
    fn check_card(
        &self,
        auth: &CardAuth,
        currency: Currency,
        card: Option<&CardRecord>,
        challenge: &[u8; 8],
    ) -> Result<(), FlowDError> {
        let card = card
            .filter(|c| c.card_id == auth.card_id)
            .ok_or_else(|| FlowDError::UnknownCard(auth.card_id.clone()))?;
        if card.blocked {
            return Err(FlowDError::CardBlocked(card.card_id.clone()));
        }
        if currency != card.currency {
            return Err(FlowDError::CurrencyMismatch);
        }
        if auth.amount_minor == 0 || auth.amount_minor > self.config.max_amount_minor as u64 {
            return Err(FlowDError::BadAmount);
        }
        let keys = kessai_card::issuer_card_keys(
            &self.keys.card_master,
            &auth.card_id,
            self.keys.card_key_version,
        );
        let expect = application_cryptogram(
            &keys.cryptogram_key,
            challenge,
            auth.amount_minor,
            currency.numeric(),
            auth.counter,
            auth.cvm,
            auth.card_id.as_str(),
        );
        if !bool::from(expect.ct_eq(&auth.cryptogram)) {
            return Err(FlowDError::BadCryptogram);
        }
        if auth.counter <= card.last_counter {
            return Err(FlowDError::CounterReplay {
                got: auth.counter,
                last: card.last_counter,
            });
        }
        Ok(())
    }

    /// Customer verification after the card verified: opens the sealed
    /// payload, checks settlement information and the CVM.
    #[allow(clippy::too_many_arguments)]
    fn check_customer(
        &self,
        challenge: &[u8; 8],
        auth: &CardAuth,
        method: CvmMethod,
        sealed: &[u8],
        card: &CardRecord,
        now_ms: u64,
        effects: &mut Vec<Effect>,
    ) -> Result<CardholderPayload, FlowDError> {
        let cust = card.customer.as_ref().ok_or(FlowDError::CvmNotAvailable)?;
        let aad = cardholder_aad(challenge, &auth.card_id, auth.counter);
        let payload = artefacts::open_cardholder(
            sealed,
            &self.keys.cardholder_key_ref,
            &self.keys.cardholder_key,
            &aad,
        )?;
        let pan = CardNumber::new(&payload.pan).map_err(|_| FlowDError::SettlementMismatch)?;
        if !bool::from(self.pan_digest(&pan).ct_eq(&cust.pan_digest)) {
            return Err(FlowDError::SettlementMismatch);
        }
        if payload.expiry_yymm != cust.expiry_yymm || expired(&payload.expiry_yymm, now_ms) {
            return Err(FlowDError::CardExpired);
        }
        let tries_guarded = matches!(method, CvmMethod::OnlinePin | CvmMethod::RegisteredSecret);
        if tries_guarded && cust.cvm_tries_left == 0 {
            return Err(FlowDError::PinLocked);
        }
        let ok = match method {
            CvmMethod::OfflinePin => {
                return if auth.cvm == Cvm::OfflinePin.byte() {
                    Ok(payload)
                } else {
                    Err(FlowDError::CvmNotAvailable)
                };
            }
            CvmMethod::OnCardBiometric => {
                return if cust.biometric_enrolled && auth.cvm == Cvm::OnCardBiometric.byte() {
                    Ok(payload)
                } else {
                    Err(FlowDError::CvmNotAvailable)
                };
            }
            CvmMethod::OnlinePin => {
                let pvd = cust
                    .pin_verification
                    .as_deref()
                    .and_then(|b| PinVerificationData::from_bytes(b).ok())
                    .ok_or(FlowDError::CvmNotAvailable)?;
                let (key, block) = payload.pin.as_ref().ok_or(FlowDError::CvmNotAvailable)?;
                let key = PinKey::from_slice(key).map_err(|_| FlowDError::BadSealedData)?;
                let block = PinBlock::from_slice(block).map_err(|_| FlowDError::BadSealedData)?;
                verify_pin_block(&block, &pan, &key, &pvd, &self.keys.pin_verification).is_ok()
            }
            CvmMethod::RegisteredSecret => {
                let stored = cust
                    .secret_digest
                    .as_ref()
                    .ok_or(FlowDError::CvmNotAvailable)?;
                let given = payload
                    .secret
                    .as_deref()
                    .ok_or(FlowDError::CvmNotAvailable)?;
                let d = self.secret_digest(&card.card_id, given);
                bool::from(d.as_bytes().ct_eq(stored.as_bytes()))
            }
        };
        if ok {
            if cust.cvm_tries_left < self.config.max_cvm_tries {
                effects.push(Effect::ResetCvmTries {
                    card_id: card.card_id.clone(),
                    tries: self.config.max_cvm_tries,
                });
            }
            Ok(payload)
        } else {
            let tries_left = cust.cvm_tries_left - 1;
            effects.push(Effect::RecordCvmFailure {
                card_id: card.card_id.clone(),
                tries_left,
            });
            Err(FlowDError::WrongPin { tries_left })
        }
    }

    /// Authorization and password issue (claims 1, 5, 6). `challenge` and
    /// `card` are the store's records for `req.challenge` and
    /// `req.card.card_id` (`None` if not found).
    pub fn authorize(
        &self,
        req: &AuthorizationRequest,
        challenge: Option<&ChallengeRecord>,
        card: Option<&CardRecord>,
        rng: &mut impl CryptoRng,
        now_ms: u64,
    ) -> Outcome<PasswordGrant> {
        if let Err(e) = self
            .check_challenge(challenge, &req.challenge, now_ms)
            .and_then(|_| self.check_card(&req.card, req.currency, card, &req.challenge))
        {
            return Outcome::err(vec![], e);
        }
        let card = card.unwrap_or_else(|| unreachable!("checked by check_card"));
        let mut effects = vec![
            Effect::ConsumeChallenge {
                challenge: req.challenge,
            },
            Effect::AdvanceCardCounter {
                card_id: card.card_id.clone(),
                counter: req.card.counter,
            },
        ];
        let payload = match self.check_customer(
            &req.challenge,
            &req.card,
            req.method,
            &req.sealed,
            card,
            now_ms,
            &mut effects,
        ) {
            Ok(p) => p,
            Err(e) => return Outcome::err(effects, e),
        };
        drop(payload);
        let cust = card
            .customer
            .as_ref()
            .unwrap_or_else(|| unreachable!("checked"));
        let password = TemporaryPassword::generate(rng);
        let mut prefix = [0u8; 8];
        prefix.copy_from_slice(&req.card.cryptogram[..8]);
        let cap = Money::new(req.card.amount_minor as i64, req.currency);
        let record = PasswordRecord {
            id: self.keys.password_key.id_of(&password),
            card_id: card.card_id.clone(),
            pan_masked: cust.pan_masked.clone(),
            funding_account: cust.funding_account.clone(),
            cap,
            issued_at_ms: now_ms,
            expires_at_ms: now_ms.saturating_add(self.config.password_ttl_ms),
            card_counter: req.card.counter,
            cryptogram_prefix: prefix,
            authorization_digest: req.digest(),
            state: PasswordState::Unused,
        };
        let qr_payload = PasswordQr {
            password: password.clone(),
            cryptogram_prefix: prefix,
            counter: req.card.counter,
            cvm: req.card.cvm,
        }
        .to_payload(&self.config.token_bin);
        let grant = PasswordGrant {
            password,
            expires_at_ms: record.expires_at_ms,
            cap,
            qr_payload,
        };
        effects.push(Effect::StorePassword(record));
        Outcome {
            effects,
            result: Ok(grant),
        }
    }

    /// Parses the POS's password input and computes its lookup id.
    pub fn present(&self, input: &PasswordInput) -> Result<PresentedPassword, FlowDError> {
        match input {
            PasswordInput::Digits(d) => Ok(PresentedPassword {
                id: self.keys.password_key.id_of(&TemporaryPassword::parse(d)?),
                qr_card: None,
            }),
            PasswordInput::Qr(q) => {
                let qr = PasswordQr::from_payload(q, &self.config.token_bin)?;
                Ok(PresentedPassword {
                    id: self.keys.password_key.id_of(&qr.password),
                    qr_card: Some((qr.cryptogram_prefix, qr.counter)),
                })
            }
        }
    }

    fn guess_failure(&self, t: &TerminalRecord, now_ms: u64) -> Effect {
        let in_window = now_ms
            < t.guess_window_start_ms
                .saturating_add(self.config.guess_window_ms);
        let (failures, window_start_ms) = if in_window {
            (t.guess_failures.saturating_add(1), t.guess_window_start_ms)
        } else {
            (1, now_ms)
        };
        Effect::RecordGuessFailure {
            terminal_id: t.terminal_id.clone(),
            failures,
            window_start_ms,
        }
    }

    fn terminal_locked(&self, t: &TerminalRecord, now_ms: u64) -> bool {
        t.guess_failures >= self.config.guess_limit
            && now_ms
                < t.guess_window_start_ms
                    .saturating_add(self.config.guess_window_ms)
    }

    /// Redemption at the POS (claims 1, 4, 6, 15). `presented` comes from
    /// [`Host::present`]; `terminal`, `merchant` (the terminal's) and
    /// `password` (under `presented.id`) are the store's records.
    pub fn redeem(
        &self,
        req: &RedemptionRequest,
        presented: &PresentedPassword,
        terminal: Option<&TerminalRecord>,
        merchant: Option<&MerchantRecord>,
        password: Option<&PasswordRecord>,
        now_ms: u64,
    ) -> Outcome<Settled> {
        let Some(terminal) = terminal.filter(|t| t.terminal_id == req.terminal_id) else {
            return Outcome::err(vec![], FlowDError::UnknownTerminal(req.terminal_id.clone()));
        };
        if self.terminal_locked(terminal, now_ms) {
            return Outcome::err(
                vec![],
                FlowDError::TerminalLocked(terminal.terminal_id.clone()),
            );
        }
        let Some(merchant) = merchant.filter(|m| m.store_id == terminal.store_id && m.active)
        else {
            return Outcome::err(
                vec![],
                FlowDError::UnknownMerchant(terminal.store_id.clone()),
            );
        };
        if let Err(e) = check_goods(&req.goods, req.amount) {
            return Outcome::err(vec![], e);
        }
        let Some(pw) = password.filter(|p| p.id == presented.id) else {
            return Outcome::err(
                vec![self.guess_failure(terminal, now_ms)],
                FlowDError::UnknownPassword,
            );
        };
        if let Some((prefix, counter)) = presented.qr_card {
            let same =
                bool::from(prefix.ct_eq(&pw.cryptogram_prefix)) && counter == pw.card_counter;
            if !same {
                return Outcome::err(
                    vec![self.guess_failure(terminal, now_ms)],
                    FlowDError::PasswordOfAnotherCard,
                );
            }
        }
        if pw.state != PasswordState::Unused {
            return Outcome::err(vec![], FlowDError::PasswordUsed);
        }
        if now_ms >= pw.expires_at_ms {
            return Outcome::err(vec![], FlowDError::PasswordExpired);
        }
        if req.amount.currency != pw.cap.currency {
            return Outcome::err(vec![], FlowDError::CurrencyMismatch);
        }
        if req.amount.amount_minor > pw.cap.amount_minor {
            return Outcome::err(vec![], FlowDError::AboveCap);
        }
        let transfer_id = TransferId::derive("flow-d/password", &[&pw.id.0]);
        let receipt = Receipt {
            transfer_id,
            variant: match req.channel {
                RedemptionChannel::KeyedOrScanned => Variant::Password,
                RedemptionChannel::ShortRange => Variant::ShortRange,
            },
            merchant: merchant.store_id.clone(),
            merchant_name: merchant.name.clone(),
            terminal: Some(terminal.terminal_id.clone()),
            amount: req.amount,
            goods: req.goods.clone(),
            card_masked: pw.pan_masked.clone(),
            card_counter: pw.card_counter,
            settled_at_ms: now_ms,
        };
        self.settle(
            receipt,
            &pw.funding_account,
            &merchant.payable_account,
            pw.authorization_digest,
            vec![Effect::MarkPasswordUsed {
                id: pw.id,
                at_ms: now_ms,
                transfer_id,
            }],
            &pw.card_id,
            None,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn settle(
        &self,
        receipt: Receipt,
        from: &AccountId,
        to: &AccountId,
        authorization_digest: [u8; 32],
        mut effects: Vec<Effect>,
        card_id: &CardId,
        signal: Option<(StoreId, Option<TerminalId>)>,
    ) -> Outcome<Settled> {
        let signed = match artefacts::sign_receipt(
            receipt,
            &self.keys.receipt_key,
            &self.keys.receipt_key_ref,
        ) {
            Ok(s) => s,
            Err(e) => return Outcome::err(vec![], e),
        };
        let r = &signed.receipt;
        let transfer = TransferRequest::posted(
            r.transfer_id,
            r.amount.currency,
            codes::CARD_PAYMENT,
            vec![
                kessai_ledger::Leg::debit(from.clone(), r.amount.amount_minor),
                kessai_ledger::Leg::credit(to.clone(), r.amount.amount_minor),
            ],
        )
        .with_evidence("flow-d/authorization", authorization_digest)
        .with_evidence(
            "cose/flow-d-receipt",
            kessai_crypto::digest::sha256(&[&signed.cose]),
        )
        .with_reference(format!("flow-d {} ctr {}", r.merchant, r.card_counter));
        effects.push(Effect::Settle(transfer.clone()));
        effects.push(Effect::PushReceiptToPhone {
            card_id: card_id.clone(),
            receipt: signed.cose.clone(),
        });
        if let Some((store_id, terminal_id)) = signal {
            effects.push(Effect::SignalPos {
                store_id,
                terminal_id,
                receipt: signed.cose.clone(),
            });
        }
        Outcome {
            effects,
            result: Ok(Settled {
                transfer,
                receipt: signed,
            }),
        }
    }

    /// The merchant-IC-card variant (claims 2, 7, 8): authenticates both
    /// cards, the customer, and settles directly; the POS is signalled.
    /// `merchant` is the record whose `merchant_card` is `req.merchant.card_id`.
    #[allow(clippy::too_many_arguments)]
    pub fn settle_with_merchant_card(
        &self,
        req: &MerchantCardRequest,
        challenge: Option<&ChallengeRecord>,
        customer_card: Option<&CardRecord>,
        merchant_card: Option<&CardRecord>,
        merchant: Option<&MerchantRecord>,
        now_ms: u64,
    ) -> Outcome<Settled> {
        let amount = Money::new(req.customer.amount_minor as i64, req.currency);
        let pre = self
            .check_challenge(challenge, &req.challenge, now_ms)
            .and_then(|_| {
                if req.merchant.amount_minor != req.customer.amount_minor {
                    return Err(FlowDError::BadAmount);
                }
                if merchant_card.is_some_and(|c| c.customer.is_some()) {
                    return Err(FlowDError::UnknownMerchantCard(
                        req.merchant.card_id.clone(),
                    ));
                }
                self.check_card(&req.merchant, req.currency, merchant_card, &req.challenge)
            })
            .and_then(|_| {
                self.check_card(&req.customer, req.currency, customer_card, &req.challenge)
            })
            .and_then(|_| {
                merchant
                    .filter(|m| m.active && m.merchant_card.as_ref() == Some(&req.merchant.card_id))
                    .ok_or_else(|| FlowDError::UnknownMerchantCard(req.merchant.card_id.clone()))
            })
            .and_then(|m| check_goods(&req.goods, amount).map(|_| m));
        let merchant = match pre {
            Ok(m) => m,
            Err(e) => return Outcome::err(vec![], e),
        };
        let card = customer_card.unwrap_or_else(|| unreachable!("checked"));
        let mut effects = vec![
            Effect::ConsumeChallenge {
                challenge: req.challenge,
            },
            Effect::AdvanceCardCounter {
                card_id: req.merchant.card_id.clone(),
                counter: req.merchant.counter,
            },
            Effect::AdvanceCardCounter {
                card_id: req.customer.card_id.clone(),
                counter: req.customer.counter,
            },
        ];
        if let Err(e) = self.check_customer(
            &req.challenge,
            &req.customer,
            req.method,
            &req.sealed,
            card,
            now_ms,
            &mut effects,
        ) {
            return Outcome::err(effects, e);
        }
        let cust = card
            .customer
            .as_ref()
            .unwrap_or_else(|| unreachable!("checked"));
        let transfer_id = TransferId::derive(
            "flow-d/merchant-card",
            &[
                card.card_id.as_str().as_bytes(),
                &req.customer.counter.to_be_bytes(),
            ],
        );
        let digest =
            kessai_crypto::digest::sha256(&[b"kessai/flow-d/merchant-card/v1\0", &cbor(req)]);
        let receipt = Receipt {
            transfer_id,
            variant: Variant::MerchantCard,
            merchant: merchant.store_id.clone(),
            merchant_name: merchant.name.clone(),
            terminal: req.terminal_id.clone(),
            amount,
            goods: req.goods.clone(),
            card_masked: cust.pan_masked.clone(),
            card_counter: req.customer.counter,
            settled_at_ms: now_ms,
        };
        self.settle(
            receipt,
            &cust.funding_account,
            &merchant.payable_account,
            digest,
            effects,
            &card.card_id,
            Some((merchant.store_id.clone(), req.terminal_id.clone())),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn year_month_of_known_dates() {
        assert_eq!(year_month(0), (1970, 1));
        // 2024-02-29T12:00:00Z
        assert_eq!(year_month(1_709_208_000_000), (2024, 2));
        // 2030-12-31T23:59:59Z
        assert_eq!(year_month(1_924_991_999_000), (2030, 12));
        assert!(!expired("3012", 1_924_991_999_000));
        assert!(expired("3011", 1_924_991_999_000));
        assert!(expired("3013", 0));
        assert!(expired("ab12", 0));
    }
}
