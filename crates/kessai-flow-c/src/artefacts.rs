//! The artefacts of flow C: what travels between merchant, host, phone and
//! reader, as COSE objects (kessai-crypto profiles).
//!
//! | artefact | COSE | made by | seed step | binds |
//! |---|---|---|---|---|
//! | [`PaymentRequest`] | Sign1 | merchant key | 201, S1 | merchant id, customer, amount, order ref, nonce, expiry |
//! | [`ApprovalRequest`] | Sign1 | host key | 202, S4 → S31 | txn id, payment request digest, phone, deadline |
//! | [`ApprovalResponse`] | Sign1 | phone device key | S33 / S46 | txn id, approval request digest |
//! | [`TransactionKey`] | Sign1 | host key | 203–204, S6–S7 → S34 | txn id, HPKE public key and its key ref, approval response digest, deadline |
//! | sealed [`CardData`] | Encrypt0 to the transaction key | reader | 205–207, S35–S37 | external AAD: txn id, transaction key digest |
//! | [`PinPrompt`] | Sign1 | host key | S16 → S39 | txn id, card data digest, deadline |
//! | sealed PIN block | Encrypt0 to the transaction key | reader | S40–S42 | external AAD: txn id, card data digest, PIN prompt digest |
//! | [`PhoneCompletion`] | Sign1 | host key | 210, S24 → S44–S45 | txn id, outcome, approval request digest |
//! | [`MerchantCompletion`] | Sign1 | host key | 211, S24 / S9 / S27 | txn id, outcome, payment request digest; masked PAN only |
//!
//! Every type has its own COSE `typ` and version, so a signature made for
//! one purpose (an approval request) never verifies as another (a
//! completion). Digests are SHA-256 over the exact COSE bytes
//! ([`ArtefactDigest`]).
//!
//! # The PIN block: format 4 inside COSE_Encrypt0
//!
//! The reader's encryption unit draws a fresh AES-128 **PIN key** for each
//! transaction and sends it to the host inside the sealed card data
//! (key transport under the transaction key). The PIN is then enciphered
//! as an ISO 9564-1 format-4 PIN block under that PIN key — format 4 binds
//! the block to the PAN through its PAN field — and the 16-byte block
//! travels inside a COSE_Encrypt0 to the transaction key whose external
//! AAD binds the transaction id, the digest of the sealed card data and the
//! digest of the host's PIN prompt. The host deciphers with the PAN of the
//! card data it opened: a block made for another PAN fails the format-4
//! checks (or the PIN comparison) and counts as a failed try.
//!
//! Why not derive the PIN key from the HPKE context: kessai-crypto exposes
//! single-shot HPKE only (no exporter secret); transporting a fresh key in
//! the already authenticated card data gives the same property — a PIN
//! key that exists for one transaction and is known only to this reader
//! and the holder of the transaction's private key — with the standard
//! format-4 block unchanged, so the published examples apply as
//! known-answer tests.

use std::fmt;

use kessai_crypto::cose::{self, Artefact};
use kessai_crypto::hpke::{HpkeKeyPair, HpkePublicKey};
use kessai_crypto::sign::{SigningKey, VerifyingKey};
use kessai_ids::{DeviceId, KeyRef, OrderId, StoreId, TransferId};
use kessai_money::Money;
use kessai_pin::PinBlock;
use kessai_secrets::{CardNumber, SecretKey};
use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::FlowError;
use crate::ids::{ArtefactDigest, TxnId, bytes};

/// How the merchant names the customer: the phone number the customer gave
/// (the seed's way, E.164 `+` and 8 to 15 digits) or a wallet id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CustomerRef {
    /// An E.164 phone number, `+` followed by 8 to 15 digits.
    Phone(String),
    /// A registered wallet (phone app) id.
    Wallet(DeviceId),
}

impl CustomerRef {
    /// A phone number, validated as E.164.
    pub fn phone(number: &str) -> Result<Self, FlowError> {
        let digits = number
            .strip_prefix('+')
            .ok_or(FlowError::MalformedField("phone number"))?;
        if !(8..=15).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(FlowError::MalformedField("phone number"));
        }
        Ok(Self::Phone(number.to_owned()))
    }

    fn validate(&self) -> Result<(), FlowError> {
        match self {
            Self::Phone(n) => Self::phone(n).map(|_| ()),
            Self::Wallet(_) => Ok(()),
        }
    }
}

/// The merchant's settlement request (the seed's 決済要求 201, S1): signed
/// with the merchant's registered key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRequest {
    /// The merchant (the seed's 識別情報, looked up in table 31).
    pub merchant_id: StoreId,
    /// Whose phone to ask.
    pub customer: CustomerRef,
    /// What to charge.
    pub amount: Money,
    /// The merchant's order reference; with `merchant_id` it is the
    /// transaction's natural key ([`TxnId::derive`]).
    pub order_ref: OrderId,
    /// 16 random bytes: two requests are never byte-identical.
    #[serde(with = "bytes_16")]
    pub nonce: [u8; 16],
    /// The host refuses the request from this instant on.
    pub expires_at_ms: u64,
}

impl Artefact for PaymentRequest {
    const TYPE: &'static str = "flowc-payment-request";
    const VERSION: u32 = 1;
}

impl PaymentRequest {
    /// The transaction this request opens.
    pub fn txn_id(&self) -> TxnId {
        TxnId::derive(&self.merchant_id, &self.order_ref)
    }

    pub(crate) fn validate(&self) -> Result<(), FlowError> {
        if !self.amount.is_positive() {
            return Err(FlowError::AmountNotPositive);
        }
        self.customer.validate()
    }
}

/// The host's request to the customer's phone to approve (決済要求 202, S4;
/// shown by the phone at S31).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRequest {
    /// The transaction.
    pub txn_id: TxnId,
    /// The phone that must answer.
    pub device_id: DeviceId,
    /// The merchant, by id ...
    pub merchant_id: StoreId,
    /// ... and by the name the host registered for it (not the merchant's
    /// own claim).
    pub merchant_name: String,
    /// What the merchant asks.
    pub amount: Money,
    /// The merchant's order reference.
    pub order_ref: OrderId,
    /// Digest of the merchant's signed [`PaymentRequest`].
    pub payment_request: ArtefactDigest,
    /// The host declines from this instant on (S5).
    pub deadline_ms: u64,
}

impl Artefact for ApprovalRequest {
    const TYPE: &'static str = "flowc-approval-request";
    const VERSION: u32 = 1;
}

/// The cardholder's answer on the phone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// 承認 (S32 Y → S33).
    Approve,
    /// 拒絶, or no key pressed in time (S32 N → S46).
    Reject,
}

/// The phone's signed answer (S33 承認応答 / S46 拒絶応答).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalResponse {
    /// The transaction.
    pub txn_id: TxnId,
    /// The answering phone.
    pub device_id: DeviceId,
    /// Approve or reject.
    pub decision: Decision,
    /// Digest of the [`ApprovalRequest`] shown to the cardholder.
    pub approval_request: ArtefactDigest,
}

impl Artefact for ApprovalResponse {
    const TYPE: &'static str = "flowc-approval-response";
    const VERSION: u32 = 1;
}

/// The per-transaction public key (公開鍵 301, S6–S7), signed by the host
/// and bound to the transaction. The reader verifies it with the issuer
/// public key it holds (S34) before encrypting anything to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionKey {
    /// The transaction.
    pub txn_id: TxnId,
    /// The key's reference (`flowc-txn-<txn id>#1`), carried as the `kid`
    /// of everything sealed to it.
    pub key_ref: KeyRef,
    /// The HPKE (X25519) public key.
    pub public_key: HpkePublicKey,
    /// Digest of the cardholder's [`ApprovalResponse`] that released it.
    pub approval_response: ArtefactDigest,
    /// The host declines if no card data arrives before this (S8).
    pub deadline_ms: u64,
}

impl Artefact for TransactionKey {
    const TYPE: &'static str = "flowc-transaction-key";
    const VERSION: u32 = 1;
}

/// The host's request for the PIN (暗証番号の入力要求, S16 → S39), shown on the
/// reader's own display.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinPrompt {
    /// The transaction.
    pub txn_id: TxnId,
    /// Digest of the sealed card data the host accepted.
    pub card_data: ArtefactDigest,
    /// The card, masked (BIN + last four), for the reader's display.
    pub masked_pan: String,
    /// The amount, for the reader's display.
    pub amount: Money,
    /// The merchant's registered name, for the reader's display.
    pub merchant_name: String,
    /// The host declines if no PIN arrives before this (S17).
    pub deadline_ms: u64,
}

impl Artefact for PinPrompt {
    const TYPE: &'static str = "flowc-pin-prompt";
    const VERSION: u32 = 1;
}

/// Why a transaction was declined (決済不履行).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeclineReason {
    /// The cardholder rejected on the phone, or the phone's own timer ran
    /// out (S32 N → S46).
    Rejected,
    /// No approval before the deadline (S5 N → S9).
    ApprovalTimeout,
    /// No card data before the deadline (S8 N → S9).
    CardDataTimeout,
    /// No PIN before the deadline (S17 N → S27).
    PinTimeout,
    /// The card is not in the cardholder table (S15 N → S27).
    UnknownCard,
    /// The card is blocked by the issuer.
    CardBlocked,
    /// The card's expiry date has passed.
    CardExpired,
    /// The card data does not match the issuer's record (expiry).
    CardDataMismatch,
    /// Wrong PIN (S22 N → S27); `tries_remaining` before lockout.
    PinIncorrect {
        /// Tries left before the card's PIN locks.
        tries_remaining: u32,
    },
    /// The PIN try counter has reached its limit.
    PinLocked,
    /// The amount is over the cardholder's credit limit.
    InsufficientCredit,
    /// The ledger refused the transfer for another reason (its stable
    /// result code).
    SettlementRefused {
        /// [`kessai_ledger::LedgerError::code`].
        code: String,
    },
    /// What the merchant is told for any card refusal (unknown, blocked,
    /// expired, mismatch): no detail about the card.
    CardRefused,
    /// What the merchant is told for a PIN failure: no try count.
    CardholderNotVerified,
}

impl DeclineReason {
    /// The reason as the merchant may see it: card and PIN details are
    /// coarsened so a merchant learns nothing about the card's state.
    pub fn for_merchant(&self) -> DeclineReason {
        match self {
            Self::UnknownCard | Self::CardBlocked | Self::CardExpired | Self::CardDataMismatch => {
                Self::CardRefused
            }
            Self::PinIncorrect { .. } | Self::PinLocked => Self::CardholderNotVerified,
            other => other.clone(),
        }
    }
}

/// How a transaction ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Settled (S23–S24): the ledger transfer that moved the money.
    Settled {
        /// The transfer (derived from the transaction id).
        transfer_id: TransferId,
    },
    /// Declined (S9 / S13 / S27).
    Declined {
        /// Why.
        reason: DeclineReason,
    },
}

/// The completion notice to the phone (決済処理の完了通知 210, or the
/// 決済不履行通知 to the phone); the phone forwards it to the reader, which
/// then discards its key (S45).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhoneCompletion {
    /// The transaction.
    pub txn_id: TxnId,
    /// Settled or declined.
    pub outcome: Outcome,
    /// The amount.
    pub amount: Money,
    /// The merchant's registered name.
    pub merchant_name: String,
    /// The card, masked, once the host has read it.
    pub masked_pan: Option<String>,
    /// Digest of the [`ApprovalRequest`] this answers.
    pub approval_request: ArtefactDigest,
    /// When the host decided.
    pub completed_at_ms: u64,
}

impl Artefact for PhoneCompletion {
    const TYPE: &'static str = "flowc-completion-phone";
    const VERSION: u32 = 1;
}

/// The completion notice to the merchant (完了通知 211, or 決済不履行通知).
/// Carries the masked PAN at most, never card data or PIN, and a
/// [`DeclineReason::for_merchant`] reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerchantCompletion {
    /// The transaction.
    pub txn_id: TxnId,
    /// The merchant.
    pub merchant_id: StoreId,
    /// The merchant's order reference.
    pub order_ref: OrderId,
    /// The amount.
    pub amount: Money,
    /// Settled or declined (coarsened reason).
    pub outcome: Outcome,
    /// Digest of the merchant's [`PaymentRequest`] this answers.
    pub payment_request: ArtefactDigest,
    /// BIN + last four, once the host has read the card.
    pub masked_pan: Option<String>,
    /// When the host decided.
    pub completed_at_ms: u64,
}

impl Artefact for MerchantCompletion {
    const TYPE: &'static str = "flowc-completion-merchant";
    const VERSION: u32 = 1;
}

/// What the reader's card read unit produced (S35): PAN, expiry, name, plus
/// the per-transaction PIN key the encryption unit chose. Zeroized on drop;
/// `Debug` shows the masked PAN only.
#[derive(Clone)]
pub struct CardData {
    /// The card number.
    pub pan: CardNumber,
    /// Expiry as `YYMM`.
    pub expiry_yymm: String,
    /// The cardholder name as on the card (ISO 7813: up to 26 characters).
    pub cardholder_name: String,
    /// The AES-128 key the PIN block will be enciphered under.
    pub pin_key: SecretKey<16>,
}

impl CardData {
    /// Validates expiry (`YYMM`, month 01–12) and name (1–26 printable
    /// ASCII characters).
    pub fn new(
        pan: CardNumber,
        expiry_yymm: &str,
        cardholder_name: &str,
        pin_key: SecretKey<16>,
    ) -> Result<Self, FlowError> {
        validate_yymm(expiry_yymm)?;
        validate_name(cardholder_name)?;
        Ok(Self {
            pan,
            expiry_yymm: expiry_yymm.to_owned(),
            cardholder_name: cardholder_name.to_owned(),
            pin_key,
        })
    }
}

impl Drop for CardData {
    fn drop(&mut self) {
        self.expiry_yymm.zeroize();
        self.cardholder_name.zeroize();
    }
}

impl fmt::Debug for CardData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CardData")
            .field("pan", &self.pan)
            .field("expiry_yymm", &"****")
            .field("cardholder_name", &"<redacted>")
            .field("pin_key", &self.pin_key)
            .finish()
    }
}

/// `YYMM` with a month of 01 to 12.
pub(crate) fn validate_yymm(s: &str) -> Result<(), FlowError> {
    let b = s.as_bytes();
    if b.len() != 4 || !b.iter().all(u8::is_ascii_digit) {
        return Err(FlowError::MalformedField("expiry"));
    }
    let month = (b[2] - b'0') * 10 + (b[3] - b'0');
    if !(1..=12).contains(&month) {
        return Err(FlowError::MalformedField("expiry"));
    }
    Ok(())
}

fn validate_name(s: &str) -> Result<(), FlowError> {
    if !(1..=26).contains(&s.len()) || !s.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(FlowError::MalformedField("cardholder name"));
    }
    Ok(())
}

/// Card data on the wire (inside the Encrypt0). Zeroized on drop.
#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
struct CardDataWire {
    #[zeroize(skip)]
    txn_id: TxnId,
    pan: String,
    expiry_yymm: String,
    cardholder_name: String,
    #[serde(with = "bytes_16")]
    pin_key: [u8; 16],
}

impl Artefact for CardDataWire {
    const TYPE: &'static str = "flowc-card-data";
    const VERSION: u32 = 1;
}

/// A PIN block on the wire (inside the Encrypt0). Zeroized on drop.
#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
struct PinBlockWire {
    #[zeroize(skip)]
    txn_id: TxnId,
    #[serde(with = "bytes_16")]
    block: [u8; 16],
}

impl Artefact for PinBlockWire {
    const TYPE: &'static str = "flowc-pin-block";
    const VERSION: u32 = 1;
}

/// External AAD of the sealed card data: label, txn id, digest of the
/// [`TransactionKey`] artefact it was sealed to.
pub fn card_data_aad(txn_id: &TxnId, transaction_key: &ArtefactDigest) -> Vec<u8> {
    let mut aad = b"kessai/flow-c/card-data/v1\0".to_vec();
    aad.extend_from_slice(txn_id.as_bytes());
    aad.extend_from_slice(&transaction_key.0);
    aad
}

/// External AAD of the sealed PIN block: label, txn id, digest of the
/// sealed card data, digest of the [`PinPrompt`].
pub fn pin_block_aad(
    txn_id: &TxnId,
    card_data: &ArtefactDigest,
    pin_prompt: &ArtefactDigest,
) -> Vec<u8> {
    let mut aad = b"kessai/flow-c/pin-block/v1\0".to_vec();
    aad.extend_from_slice(txn_id.as_bytes());
    aad.extend_from_slice(&card_data.0);
    aad.extend_from_slice(&pin_prompt.0);
    aad
}

/// Seals card data to the transaction key (S36): COSE_Encrypt0 with the
/// transaction id in the payload and, with the key's digest, in the
/// external AAD.
pub fn seal_card_data(
    card: &CardData,
    key: &TransactionKey,
    key_digest: &ArtefactDigest,
    rng: &mut impl CryptoRng,
) -> Result<Vec<u8>, FlowError> {
    let wire = CardDataWire {
        txn_id: key.txn_id,
        pan: String::from_utf8_lossy(card.pan.expose_digits()).into_owned(),
        expiry_yymm: card.expiry_yymm.clone(),
        cardholder_name: card.cardholder_name.clone(),
        pin_key: *card.pin_key.expose(),
    };
    cose::seal_artefact(
        &wire,
        &key.public_key,
        &key.key_ref,
        &card_data_aad(&key.txn_id, key_digest),
        rng,
    )
    .map_err(|_| FlowError::Encode)
}

/// Opens sealed card data (S10): only with this transaction's key pair,
/// this transaction's id and the digest of its [`TransactionKey`]
/// artefact. Returns the card data and the digest of the ciphertext.
pub(crate) fn open_card_data(
    bytes: &[u8],
    txn_id: &TxnId,
    key_ref: &KeyRef,
    key_pair: &HpkeKeyPair,
    key_digest: &ArtefactDigest,
) -> Result<(CardData, ArtefactDigest), FlowError> {
    let opened = cose::open_artefact::<CardDataWire, _>(
        bytes,
        |r| (r == key_ref).then_some(key_pair),
        &card_data_aad(txn_id, key_digest),
    )
    .map_err(FlowError::artefact("card data"))?;
    let digest = ArtefactDigest(opened.digest());
    let wire = opened.into_payload();
    if wire.txn_id != *txn_id {
        return Err(FlowError::WrongTransaction);
    }
    let pan = CardNumber::new(&wire.pan).map_err(|_| FlowError::MalformedField("card number"))?;
    let card = CardData::new(
        pan,
        &wire.expiry_yymm,
        &wire.cardholder_name,
        SecretKey::new(wire.pin_key),
    )?;
    Ok((card, digest))
}

/// Seals an enciphered format-4 PIN block to the transaction key (S41).
pub fn seal_pin_block(
    block: &PinBlock,
    key: &TransactionKey,
    card_data: &ArtefactDigest,
    pin_prompt: &ArtefactDigest,
    rng: &mut impl CryptoRng,
) -> Result<Vec<u8>, FlowError> {
    let wire = PinBlockWire {
        txn_id: key.txn_id,
        block: *block.expose_bytes(),
    };
    cose::seal_artefact(
        &wire,
        &key.public_key,
        &key.key_ref,
        &pin_block_aad(&key.txn_id, card_data, pin_prompt),
        rng,
    )
    .map_err(|_| FlowError::Encode)
}

/// Opens a sealed PIN block (S18). Returns the block and the digest of the
/// ciphertext.
pub(crate) fn open_pin_block(
    bytes: &[u8],
    txn_id: &TxnId,
    key_ref: &KeyRef,
    key_pair: &HpkeKeyPair,
    card_data: &ArtefactDigest,
    pin_prompt: &ArtefactDigest,
) -> Result<(PinBlock, ArtefactDigest), FlowError> {
    let opened = cose::open_artefact::<PinBlockWire, _>(
        bytes,
        |r| (r == key_ref).then_some(key_pair),
        &pin_block_aad(txn_id, card_data, pin_prompt),
    )
    .map_err(FlowError::artefact("PIN block"))?;
    let digest = ArtefactDigest(opened.digest());
    let wire = opened.into_payload();
    if wire.txn_id != *txn_id {
        return Err(FlowError::WrongTransaction);
    }
    Ok((PinBlock::from_bytes(wire.block), digest))
}

/// A signing key with its reference: the merchant's, the host's or a
/// phone's. `Debug` shows the reference only.
#[derive(Clone)]
pub struct Signer {
    key: SigningKey,
    key_ref: KeyRef,
}

impl Signer {
    /// Pairs a key with the reference it is registered under.
    pub fn new(key: SigningKey, key_ref: KeyRef) -> Self {
        Self { key, key_ref }
    }

    /// The reference (COSE `kid`).
    pub fn key_ref(&self) -> &KeyRef {
        &self.key_ref
    }

    /// The public key.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// Signs an artefact as COSE_Sign1.
    pub fn sign<A: Artefact>(&self, payload: &A) -> Result<Vec<u8>, FlowError> {
        cose::sign_artefact(payload, &self.key, &self.key_ref).map_err(|_| FlowError::Encode)
    }
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signer({})", self.key_ref)
    }
}

/// Public keys a party trusts for one role (the reader's and phone's
/// issuer keys; the merchant's host keys). Several versions may be
/// trusted during a rotation.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys(Vec<(KeyRef, VerifyingKey)>);

impl TrustedKeys {
    /// Trusts exactly these keys.
    pub fn new(keys: impl IntoIterator<Item = (KeyRef, VerifyingKey)>) -> Self {
        Self(keys.into_iter().collect())
    }

    /// The key for `key_ref`, if trusted.
    pub fn resolve(&self, key_ref: &KeyRef) -> Option<VerifyingKey> {
        self.0.iter().find(|(r, _)| r == key_ref).map(|(_, k)| *k)
    }

    /// Verifies an artefact signed by one of these keys.
    pub fn verify<A: Artefact>(
        &self,
        bytes: &[u8],
        what: &'static str,
    ) -> Result<(A, ArtefactDigest), FlowError> {
        let v = cose::verify_artefact::<A>(bytes, |r| self.resolve(r))
            .map_err(FlowError::artefact(what))?;
        let digest = ArtefactDigest(v.digest());
        Ok((v.into_payload(), digest))
    }
}

/// Serde for `[u8; 16]` as a byte string / hex.
mod bytes_16 {
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &[u8; 16], s: S) -> Result<S::Ok, S::Error> {
        super::bytes::serialize(v, s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 16], D::Error> {
        super::bytes::deserialize(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kessai_money::Currency;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn jpy(n: i64) -> Money {
        Money::new(n, Currency::from_code("JPY").unwrap())
    }

    fn key_for(txn: TxnId, pair: &HpkeKeyPair) -> TransactionKey {
        TransactionKey {
            txn_id: txn,
            key_ref: txn.transaction_key_ref(),
            public_key: pair.public_key().clone(),
            approval_response: ArtefactDigest([1; 32]),
            deadline_ms: 10,
        }
    }

    fn card() -> CardData {
        CardData::new(
            CardNumber::new("4111111111111111").unwrap(),
            "2912",
            "TARO YAMADA",
            SecretKey::new([9; 16]),
        )
        .unwrap()
    }

    #[test]
    fn customer_phone_numbers_are_e164() {
        assert!(CustomerRef::phone("+819012345678").is_ok());
        for bad in [
            "819012345678",
            "+81-90-1234",
            "+1234567",
            "+1234567890123456",
            "+",
        ] {
            assert_eq!(
                CustomerRef::phone(bad),
                Err(FlowError::MalformedField("phone number")),
                "{bad}"
            );
        }
    }

    #[test]
    fn expiry_and_name_are_validated() {
        assert!(validate_yymm("2912").is_ok());
        for bad in ["2913", "2900", "291", "29a2", "29122"] {
            assert!(validate_yymm(bad).is_err(), "{bad}");
        }
        let pan = || CardNumber::new("4111111111111111").unwrap();
        assert!(CardData::new(pan(), "2912", "", SecretKey::new([0; 16])).is_err());
        assert!(CardData::new(pan(), "2912", &"A".repeat(27), SecretKey::new([0; 16])).is_err());
        assert!(CardData::new(pan(), "2912", "TARO\nX", SecretKey::new([0; 16])).is_err());
    }

    #[test]
    fn card_data_debug_is_masked() {
        let dbg = format!("{:?}", card());
        assert!(dbg.contains("411111******1111"), "{dbg}");
        assert!(!dbg.contains("4111111111111111"));
        assert!(!dbg.contains("YAMADA"));
        assert!(!dbg.contains("2912"));
    }

    #[test]
    fn card_data_opens_only_for_its_transaction_and_key_artefact() {
        let mut rng = StdRng::seed_from_u64(7);
        let m: StoreId = "shop".parse().unwrap();
        let a = TxnId::derive(&m, &"o-1".parse().unwrap());
        let b = TxnId::derive(&m, &"o-2".parse().unwrap());
        let pair = HpkeKeyPair::generate(&mut rng);
        let key = key_for(a, &pair);
        let digest = ArtefactDigest([2; 32]);
        let sealed = seal_card_data(&card(), &key, &digest, &mut rng).unwrap();
        let (opened, d) = open_card_data(&sealed, &a, &key.key_ref, &pair, &digest).unwrap();
        assert_eq!(opened.pan, card().pan);
        assert_eq!(opened.expiry_yymm, "2912");
        assert_eq!(opened.pin_key, SecretKey::new([9; 16]));
        assert_eq!(d, ArtefactDigest::of(&sealed));
        // Same key pair, other transaction id in the AAD: refused. This is
        // the binding that holds even if a key were ever shared.
        let err = open_card_data(&sealed, &b, &key.key_ref, &pair, &digest).unwrap_err();
        assert!(matches!(
            err,
            FlowError::Artefact {
                source: kessai_crypto::CoseError::DecryptionFailed,
                ..
            }
        ));
        // Other transaction-key artefact digest: refused.
        let err =
            open_card_data(&sealed, &a, &key.key_ref, &pair, &ArtefactDigest([3; 32])).unwrap_err();
        assert!(matches!(err, FlowError::Artefact { .. }));
        // Other key reference (another transaction's key): unknown key.
        let err =
            open_card_data(&sealed, &a, &b.transaction_key_ref(), &pair, &digest).unwrap_err();
        assert!(matches!(
            err,
            FlowError::Artefact {
                source: kessai_crypto::CoseError::UnknownKey(_),
                ..
            }
        ));
        // One flipped ciphertext byte: refused.
        let mut tampered = sealed.clone();
        let n = tampered.len();
        tampered[n - 5] ^= 1;
        assert!(open_card_data(&tampered, &a, &key.key_ref, &pair, &digest).is_err());
    }

    #[test]
    fn a_card_data_ciphertext_does_not_open_as_a_pin_block() {
        let mut rng = StdRng::seed_from_u64(8);
        let a = TxnId::derive(&"shop".parse().unwrap(), &"o-1".parse().unwrap());
        let pair = HpkeKeyPair::generate(&mut rng);
        let key = key_for(a, &pair);
        let digest = ArtefactDigest([2; 32]);
        let sealed = seal_card_data(&card(), &key, &digest, &mut rng).unwrap();
        let err = open_pin_block(&sealed, &a, &key.key_ref, &pair, &digest, &digest).unwrap_err();
        assert!(matches!(
            err,
            FlowError::Artefact {
                source: kessai_crypto::CoseError::WrongType { .. },
                ..
            }
        ));
    }

    #[test]
    fn merchant_view_of_declines_hides_card_and_pin_state() {
        assert_eq!(
            DeclineReason::PinIncorrect { tries_remaining: 1 }.for_merchant(),
            DeclineReason::CardholderNotVerified
        );
        assert_eq!(
            DeclineReason::PinLocked.for_merchant(),
            DeclineReason::CardholderNotVerified
        );
        assert_eq!(
            DeclineReason::UnknownCard.for_merchant(),
            DeclineReason::CardRefused
        );
        assert_eq!(
            DeclineReason::CardBlocked.for_merchant(),
            DeclineReason::CardRefused
        );
        assert_eq!(
            DeclineReason::Rejected.for_merchant(),
            DeclineReason::Rejected
        );
        assert_eq!(
            DeclineReason::InsufficientCredit.for_merchant(),
            DeclineReason::InsufficientCredit
        );
    }

    #[test]
    fn payment_request_round_trips_as_cbor_and_checks_amount() {
        let r = PaymentRequest {
            merchant_id: "shop".parse().unwrap(),
            customer: CustomerRef::phone("+819012345678").unwrap(),
            amount: jpy(1200),
            order_ref: "o-1".parse().unwrap(),
            nonce: [5; 16],
            expires_at_ms: 99,
        };
        assert!(r.validate().is_ok());
        let signer = Signer::new(
            SigningKey::from_seed(&[1; 32]),
            "shop-sign#1".parse().unwrap(),
        );
        let bytes = signer.sign(&r).unwrap();
        let trusted = TrustedKeys::new([(signer.key_ref().clone(), signer.verifying_key())]);
        let (back, d) = trusted
            .verify::<PaymentRequest>(&bytes, "payment request")
            .unwrap();
        assert_eq!(back, r);
        assert_eq!(d, ArtefactDigest::of(&bytes));
        // Signed as one type, refused as another.
        assert!(matches!(
            trusted.verify::<ApprovalRequest>(&bytes, "approval request"),
            Err(FlowError::Artefact {
                source: kessai_crypto::CoseError::WrongType { .. },
                ..
            })
        ));
        let zero = PaymentRequest {
            amount: jpy(0),
            ..r
        };
        assert_eq!(zero.validate(), Err(FlowError::AmountNotPositive));
    }
}
