//! The issuer host's side of flow C: one serializable state machine per
//! transaction (the seed's figures 4 and 5, S1–S27).
//!
//! ```text
//!  verify_payment_request (S1–S3; unknown / suspended merchant → Err, S9)
//!        │  = the "Requested" stage: a VerifiedPaymentRequest
//!        ▼
//!  HostTxn::begin ──► AwaitingApproval{deadline}            (S4)
//!        on_approval: reject → Declined(Rejected)           (S5, S46)
//!                     approve → key pair (S6) ──► AwaitingCardData{deadline}  (S7)
//!        open_card_data + accept_card (S10–S15)
//!                     unknown card → Declined(UnknownCard)  (S27)
//!                     ──► AwaitingPin{deadline, card}        (S16)
//!        on_pin_block (S17–S22)
//!                     wrong PIN → Declined(PinIncorrect|PinLocked) (S27)
//!                     ──► Settling{transfer}                 (S23)
//!        on_settlement: ok → Settled; over limit → Declined(InsufficientCredit)
//!        on_timeout: AwaitingApproval → Declined(ApprovalTimeout)   (S5 N)
//!                    AwaitingCardData → Declined(CardDataTimeout)   (S8 N)
//!                    AwaitingPin      → Declined(PinTimeout)        (S17 N)
//! ```
//!
//! Every step is a method that takes the lookups the host's I/O layer has
//! already done (merchant record, phone record, card record, transaction
//! key pair, ledger outcome) and returns the [`Effect`]s that layer must
//! carry out, **in order**. On `Err` nothing changed (see
//! [`FlowError`]); the host answers the caller with the error and keeps
//! the stored state.
//!
//! # Secrets and what the state holds
//!
//! [`HostTxn`] is `Serialize + Deserialize`: the host persists it between
//! HTTP calls. It holds no plaintext card data, no PIN, no private key:
//! the transaction key pair goes out once as [`Effect::StoreTransactionKey`]
//! (the host seals it at rest in its key store) and comes back as an
//! argument; while the PIN is awaited the state keeps the *sealed* card data
//! (ciphertext only openable with that key) so the PIN step can re-open it
//! for the PAN and PIN key. Plaintexts live only inside one step call, in
//! types that zeroize on drop.
//!
//! Every terminal state (settled, declined, timed out) drops the sealed
//! card data from the state and emits [`Effect::DestroyTransactionKey`]
//! and [`Effect::RecordDestruction`] (the seed's S26 破棄: key pair 301/302,
//! ciphertexts 303/304/306/307/308/310, plaintexts 305/309).
//!
//! # Authenticated encryption replaces re-encrypt-and-compare (S11–S12, S19–S20)
//!
//! The seed decrypts the card data, re-encrypts the plaintext with the
//! public key and compares with a copy of what it received, to detect
//! ciphertext that was altered or not made for this key. With HPKE's AEAD
//! (AES-128-GCM) that check is built in and stronger: opening verifies a
//! tag over the ciphertext, the protected COSE header (type, version,
//! key reference) and the external AAD (transaction id, digest of the
//! transaction-key artefact; for the PIN block also the card-data and
//! PIN-prompt digests). Any altered byte, a ciphertext for another key or
//! another transaction, or one of another type fails to open
//! ([`FlowError::Artefact`]), which is exactly the seed's S12 N / S20 N.
//! (Re-encrypting would not even be possible: HPKE encryption is
//! randomized, so equal plaintexts never give equal ciphertexts.)
//!
//! Where the seed declines at S13 / S27 on a failed comparison, kessai
//! refuses the message and changes nothing: a forged or corrupted
//! message from the network must not cancel the cardholder's transaction
//! (SPEC §2). The deadline (S8 / S17) still ends the transaction if no
//! valid message arrives.
//!
//! # Replay
//!
//! A captured card-data or PIN ciphertext can never settle again:
//! (1) the state is single-use — after it, the transaction is in another
//! state and refuses it ([`FlowError::UnexpectedStep`] /
//! [`FlowError::TransactionEnded`]); (2) the key pair is destroyed at the
//! end, so nothing can open it ([`FlowError::TransactionKeyDestroyed`]);
//! (3) in any other transaction the ciphertext names another key and
//! another transaction id in its AAD, so it does not open there
//! ([`FlowError::Artefact`]).

use std::fmt;

use kessai_crypto::CoseError;
use kessai_crypto::cose;
use kessai_crypto::hpke::HpkeKeyPair;
use kessai_crypto::sign::VerifyingKey;
use kessai_ids::{AccountId, CardId, DeviceId, KeyRef, OrderId, StoreId, TransferId};
use kessai_ledger::{Applied, LedgerError, Leg, TransferRequest, codes};
use kessai_money::{Currency, Money};
use kessai_pin::{PinKey, PinVerificationData, PinVerificationKey, verify_pin_block};
use kessai_secrets::CardNumber;
use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};

use crate::FlowError;
use crate::artefacts::{
    ApprovalRequest, ApprovalResponse, CardData, CustomerRef, Decision, DeclineReason,
    MerchantCompletion, Outcome, PaymentRequest, PhoneCompletion, PinPrompt, Signer,
    TransactionKey, open_card_data, open_pin_block,
};
use crate::ids::{ArtefactDigest, Sealed, TxnId};

/// Timeouts and limits of the host's side of flow C.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostConfig {
    /// How long the cardholder has to approve on the phone (S5).
    pub approval_timeout_ms: u64,
    /// How long the reader has to send card data after the key (S8).
    pub card_data_timeout_ms: u64,
    /// How long the reader has to send the PIN after the prompt (S17).
    pub pin_timeout_ms: u64,
    /// Consecutive wrong PINs after which the card's PIN is locked.
    pub max_pin_tries: u32,
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            approval_timeout_ms: 60_000,
            card_data_timeout_ms: 120_000,
            pin_timeout_ms: 60_000,
            max_pin_tries: 3,
        }
    }
}

/// What every host step needs besides its input: the host's signing key,
/// the configuration and the PIN verification key. Built once per request
/// by the host's I/O layer from its key store.
#[derive(Debug, Clone, Copy)]
pub struct HostEnv<'a> {
    /// The host's signing key (`host-sign#N`) for approval requests,
    /// transaction keys, PIN prompts and completions.
    pub signer: &'a Signer,
    /// Timeouts and limits.
    pub config: &'a HostConfig,
    /// The issuer's PIN verification key.
    pub pin_verification_key: &'a PinVerificationKey,
}

/// Whether a merchant may take payments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MerchantStatus {
    /// Registered and trading.
    Active,
    /// Registered but not allowed to take payments (S3 N).
    Suspended,
}

/// One row of the merchant table (the seed's 識別情報管理テーブル 31), as
/// found by the key reference that signed a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerchantRecord {
    /// The merchant.
    pub store_id: StoreId,
    /// The name the issuer registered, shown to the cardholder.
    pub display_name: String,
    /// Active or suspended.
    pub status: MerchantStatus,
    /// The merchant's registered signing key reference ...
    pub key_ref: KeyRef,
    /// ... and key.
    pub key: VerifyingKey,
    /// The merchant payable account settlements credit.
    pub payable_account: AccountId,
    /// The currency the merchant settles in.
    pub currency: Currency,
}

/// The customer's registered phone (wallet) and its device key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerPhone {
    /// The phone.
    pub device_id: DeviceId,
    /// Its signing key reference ...
    pub key_ref: KeyRef,
    /// ... and key.
    pub key: VerifyingKey,
}

/// Whether the issuer allows a card to be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CardStatus {
    /// Usable.
    Active,
    /// Blocked by the issuer (lost, stolen, closed).
    Blocked,
}

/// One row of the cardholder table (the seed's 情報管理テーブル 32) as the
/// host's store returns it: never the PIN, only keyed verification data,
/// and the persisted PIN try counter.
#[derive(Debug, Clone)]
pub struct CardRecord {
    /// The card.
    pub card_id: CardId,
    /// The cardholder funding account (credit line) payments debit.
    pub funding_account: AccountId,
    /// Expiry on record, `YYMM`.
    pub expiry_yymm: String,
    /// Active or blocked.
    pub status: CardStatus,
    /// Keyed PIN verification data.
    pub pin_verification: PinVerificationData,
    /// Consecutive failed PIN tries so far (persisted by the host).
    pub pin_failures: u32,
}

/// A merchant request that passed S1–S3: signature under the merchant's
/// registered key, merchant active, not expired, amount and currency
/// valid. Only [`verify_payment_request`] makes one. This is the
/// "Requested" stage of a transaction.
#[derive(Debug, Clone)]
pub struct VerifiedPaymentRequest {
    request: PaymentRequest,
    digest: ArtefactDigest,
    merchant: MerchantRecord,
}

impl VerifiedPaymentRequest {
    /// The request.
    pub fn request(&self) -> &PaymentRequest {
        &self.request
    }

    /// The transaction it opens (look it up for duplicates first).
    pub fn txn_id(&self) -> TxnId {
        self.request.txn_id()
    }

    /// Whose phone to look up.
    pub fn customer(&self) -> &CustomerRef {
        &self.request.customer
    }

    /// Digest of the signed request.
    pub fn digest(&self) -> ArtefactDigest {
        self.digest
    }
}

/// The key reference that signed a payment request, read **without**
/// verifying anything: only to find the merchant record to verify with.
pub fn payment_request_signer(bytes: &[u8]) -> Result<KeyRef, FlowError> {
    let what = "payment request";
    let peeked = cose::peek(bytes).map_err(FlowError::artefact(what))?;
    Ok(peeked.kid)
}

/// S1–S3: verifies a merchant's payment request against the merchant table
/// row found for its signing key (`None`: no such merchant, S3 N → S9).
pub fn verify_payment_request(
    bytes: &[u8],
    merchant: Option<&MerchantRecord>,
    now_ms: u64,
) -> Result<VerifiedPaymentRequest, FlowError> {
    let merchant = merchant.ok_or(FlowError::UnknownMerchant)?;
    let verified = cose::verify_artefact::<PaymentRequest>(bytes, |r| {
        (r == &merchant.key_ref).then_some(merchant.key)
    })
    .map_err(|e| match e {
        CoseError::UnknownKey(_) => FlowError::UnknownMerchant,
        other => FlowError::Artefact {
            what: "payment request",
            source: other,
        },
    })?;
    let digest = ArtefactDigest(verified.digest());
    let request = verified.into_payload();
    if request.merchant_id != merchant.store_id {
        return Err(FlowError::MerchantMismatch);
    }
    if merchant.status != MerchantStatus::Active {
        return Err(FlowError::MerchantSuspended);
    }
    if now_ms >= request.expires_at_ms {
        return Err(FlowError::RequestExpired);
    }
    request.validate()?;
    if request.amount.currency != merchant.currency {
        return Err(FlowError::CurrencyMismatch);
    }
    Ok(VerifiedPaymentRequest {
        request,
        digest,
        merchant: merchant.clone(),
    })
}

/// A message for the customer's phone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PhoneMessage {
    /// Signed [`ApprovalRequest`] (S4).
    ApprovalRequest(Vec<u8>),
    /// Signed [`TransactionKey`] (S7), for the reader.
    TransactionKey(Vec<u8>),
    /// Signed [`PinPrompt`] (S16), for the reader.
    PinPrompt(Vec<u8>),
    /// Signed [`PhoneCompletion`] (S24 / S27), for the phone and reader.
    Completion(Vec<u8>),
}

/// What was destroyed at the end of a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DestroyedKind {
    /// The transaction's HPKE key pair (301/302); digest of its signed
    /// public-key artefact.
    TransactionKeyPair,
    /// The sealed card data received (303/304); digest of the ciphertext.
    SealedCardData,
    /// The decrypted card data (305): only ever in memory, zeroized when
    /// each step returned.
    CardDataPlaintext,
    /// The sealed PIN block received (307/308); digest of the ciphertext.
    SealedPinBlock,
    /// The deciphered PIN (309): only inside the verification call,
    /// zeroized before it returned.
    PinPlaintext,
}

/// One destroyed item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestroyedItem {
    /// What.
    pub kind: DestroyedKind,
    /// Its digest, where it had bytes the host received or sent.
    pub digest: Option<ArtefactDigest>,
}

/// The audit-log record of S26: which key and which ciphertexts of the
/// transaction were destroyed, and why the transaction ended. Digests
/// only; never secrets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestructionRecord {
    /// The transaction.
    pub txn_id: TxnId,
    /// The destroyed key pair, if one was generated.
    pub key_ref: Option<KeyRef>,
    /// How the transaction ended.
    pub outcome: Outcome,
    /// Everything destroyed.
    pub items: Vec<DestroyedItem>,
    /// When.
    pub at_ms: u64,
}

/// What the host's I/O layer must do after a step, in order.
#[derive(Debug, Clone)]
pub enum Effect {
    /// S6: keep this key pair (sealed at rest) until the transaction
    /// ends, under `key_ref`. Must be durable before the public key is sent.
    StoreTransactionKey {
        /// `flowc-txn-<txn id>#1`.
        key_ref: KeyRef,
        /// The pair; `Debug` is redacted.
        key_pair: HpkeKeyPair,
    },
    /// Push to the customer's phone over its open channel.
    SendToPhone {
        /// The phone.
        device_id: DeviceId,
        /// What.
        message: PhoneMessage,
    },
    /// Send the signed [`MerchantCompletion`] to the merchant.
    NotifyMerchant {
        /// The merchant.
        merchant_id: StoreId,
        /// The signed completion.
        completion: Vec<u8>,
    },
    /// Add one failed try to the card's persisted PIN counter (atomically,
    /// in the database).
    RecordPinFailure {
        /// The card.
        card_id: CardId,
    },
    /// Reset the card's PIN counter after a correct PIN.
    ResetPinFailures {
        /// The card.
        card_id: CardId,
    },
    /// S23: submit this transfer to the ledger, then report the result
    /// with [`HostTxn::on_settlement`]. Its id derives from the
    /// transaction, so a retry after a crash returns the original record.
    SettleInLedger(TransferRequest),
    /// S26: delete the transaction key pair from the key store.
    DestroyTransactionKey {
        /// The key.
        key_ref: KeyRef,
    },
    /// S26: write the destruction record to the audit log.
    RecordDestruction(DestructionRecord),
}

/// Facts fixed when the transaction began, and digests of the artefacts
/// exchanged so far (the evidence).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnContext {
    /// The transaction.
    pub txn_id: TxnId,
    /// The merchant.
    pub merchant_id: StoreId,
    /// The merchant's registered name.
    pub merchant_name: String,
    /// The merchant payable account.
    pub payable_account: AccountId,
    /// The amount.
    pub amount: Money,
    /// The merchant's order reference.
    pub order_ref: OrderId,
    /// The customer as the merchant named them.
    pub customer: CustomerRef,
    /// The customer's phone.
    pub device_id: DeviceId,
    /// The phone's key reference ...
    pub device_key_ref: KeyRef,
    /// ... and key, as registered when the transaction began.
    pub device_key: VerifyingKey,
    /// When the host accepted the merchant request.
    pub created_at_ms: u64,
    /// Digest of the merchant's payment request.
    pub payment_request: ArtefactDigest,
    /// Digest of the approval request sent to the phone.
    pub approval_request: ArtefactDigest,
    /// Digest of the phone's approval response.
    pub approval_response: Option<ArtefactDigest>,
    /// Digest of the signed transaction key.
    pub transaction_key: Option<ArtefactDigest>,
    /// Digest of the sealed card data accepted.
    pub card_data: Option<ArtefactDigest>,
    /// Digest of the PIN prompt sent.
    pub pin_prompt: Option<ArtefactDigest>,
    /// Digest of the sealed PIN block accepted.
    pub pin_block: Option<ArtefactDigest>,
}

/// Where a transaction is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum HostState {
    /// Waiting for the phone's answer (S4–S5).
    AwaitingApproval {
        /// Declined from here on (S5 N).
        deadline_ms: u64,
    },
    /// Key sent; waiting for sealed card data (S7–S8).
    AwaitingCardData {
        /// Declined from here on (S8 N).
        deadline_ms: u64,
    },
    /// Card known; PIN prompt sent; waiting for the sealed PIN block
    /// (S16–S17).
    AwaitingPin {
        /// Declined from here on (S17 N).
        deadline_ms: u64,
        /// The card accepted at S15.
        card_id: CardId,
        /// Its funding account.
        funding_account: AccountId,
        /// BIN + last four.
        masked_pan: String,
        /// The sealed card data (ciphertext), re-opened at the PIN step.
        sealed_card_data: Sealed,
    },
    /// PIN verified; the transfer is with the ledger (S23). No deadline:
    /// the host resubmits the same transfer (same id) until the ledger
    /// answers, and the ledger posts it at most once.
    Settling {
        /// The card.
        card_id: CardId,
        /// BIN + last four.
        masked_pan: String,
        /// The transfer submitted.
        transfer: TransferRequest,
    },
    /// Settled and notified (S24–S26).
    Settled {
        /// The ledger transfer.
        transfer_id: TransferId,
        /// BIN + last four.
        masked_pan: String,
        /// When.
        completed_at_ms: u64,
    },
    /// Declined and notified (S9 / S27).
    Declined {
        /// Why.
        reason: DeclineReason,
        /// BIN + last four, if the card was read.
        masked_pan: Option<String>,
        /// When.
        completed_at_ms: u64,
    },
}

impl HostState {
    /// The state's name, for errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::AwaitingApproval { .. } => "awaiting_approval",
            Self::AwaitingCardData { .. } => "awaiting_card_data",
            Self::AwaitingPin { .. } => "awaiting_pin",
            Self::Settling { .. } => "settling",
            Self::Settled { .. } => "settled",
            Self::Declined { .. } => "declined",
        }
    }

    /// True once settled or declined.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Settled { .. } | Self::Declined { .. })
    }

    fn deadline_ms(&self) -> Option<u64> {
        match self {
            Self::AwaitingApproval { deadline_ms }
            | Self::AwaitingCardData { deadline_ms }
            | Self::AwaitingPin { deadline_ms, .. } => Some(*deadline_ms),
            _ => None,
        }
    }
}

/// Card data the host opened and authenticated (S10–S12), waiting for the
/// host's card lookup (S14). Only [`HostTxn::open_card_data`] makes one.
/// Holds the plaintext in memory only; zeroized on drop; `Debug` masked.
#[derive(Debug)]
pub struct OpenedCardData {
    txn_id: TxnId,
    card: CardData,
    digest: ArtefactDigest,
    sealed: Sealed,
}

impl OpenedCardData {
    /// The card number, for the host's card lookup (by keyed hash).
    pub fn pan(&self) -> &CardNumber {
        &self.card.pan
    }

    /// Digest of the sealed card data.
    pub fn digest(&self) -> ArtefactDigest {
        self.digest
    }
}

/// Proof that the PIN matched: only [`HostTxn::on_pin_block`] makes one,
/// and only the settlement transfer consumes it.
struct PinVerified(());

/// One flow C transaction at the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostTxn {
    ctx: TxnContext,
    state: HostState,
}

impl HostTxn {
    /// S4: starts the transaction for a verified merchant request and asks
    /// the customer's phone to approve. `phone` is the customer's
    /// registered phone (`None`: unknown customer → `Err`).
    ///
    /// Look up [`VerifiedPaymentRequest::txn_id`] first: if a transaction
    /// exists, call [`HostTxn::check_duplicate`] on it instead.
    pub fn begin(
        request: &VerifiedPaymentRequest,
        phone: Option<&CustomerPhone>,
        env: &HostEnv<'_>,
        now_ms: u64,
    ) -> Result<(HostTxn, Vec<Effect>), FlowError> {
        let (host, config) = (env.signer, env.config);
        let phone = phone.ok_or(FlowError::UnknownCustomer)?;
        let r = &request.request;
        let deadline_ms = now_ms.saturating_add(config.approval_timeout_ms);
        let approval = ApprovalRequest {
            txn_id: r.txn_id(),
            device_id: phone.device_id.clone(),
            merchant_id: r.merchant_id.clone(),
            merchant_name: request.merchant.display_name.clone(),
            amount: r.amount,
            order_ref: r.order_ref.clone(),
            payment_request: request.digest,
            deadline_ms,
        };
        let bytes = host.sign(&approval)?;
        let ctx = TxnContext {
            txn_id: r.txn_id(),
            merchant_id: r.merchant_id.clone(),
            merchant_name: request.merchant.display_name.clone(),
            payable_account: request.merchant.payable_account.clone(),
            amount: r.amount,
            order_ref: r.order_ref.clone(),
            customer: r.customer.clone(),
            device_id: phone.device_id.clone(),
            device_key_ref: phone.key_ref.clone(),
            device_key: phone.key,
            created_at_ms: now_ms,
            payment_request: request.digest,
            approval_request: ArtefactDigest::of(&bytes),
            approval_response: None,
            transaction_key: None,
            card_data: None,
            pin_prompt: None,
            pin_block: None,
        };
        let effects = vec![Effect::SendToPhone {
            device_id: phone.device_id.clone(),
            message: PhoneMessage::ApprovalRequest(bytes),
        }];
        Ok((
            HostTxn {
                ctx,
                state: HostState::AwaitingApproval { deadline_ms },
            },
            effects,
        ))
    }

    /// A second request with this transaction's merchant and order
    /// reference: the same transaction if the content (amount, customer)
    /// is the same (idempotent retry; nothing is sent again), otherwise
    /// [`FlowError::OrderReferenceConflict`].
    pub fn check_duplicate(&self, request: &VerifiedPaymentRequest) -> Result<TxnId, FlowError> {
        let r = &request.request;
        if r.txn_id() != self.ctx.txn_id
            || r.merchant_id != self.ctx.merchant_id
            || r.order_ref != self.ctx.order_ref
            || r.amount != self.ctx.amount
            || r.customer != self.ctx.customer
        {
            return Err(FlowError::OrderReferenceConflict);
        }
        Ok(self.ctx.txn_id)
    }

    /// The transaction id.
    pub fn txn_id(&self) -> TxnId {
        self.ctx.txn_id
    }

    /// The fixed facts and evidence digests.
    pub fn context(&self) -> &TxnContext {
        &self.ctx
    }

    /// The current state.
    pub fn state(&self) -> &HostState {
        &self.state
    }

    /// When [`HostTxn::on_timeout`] will decline, if the transaction is
    /// waiting for someone.
    pub fn deadline_ms(&self) -> Option<u64> {
        self.state.deadline_ms()
    }

    /// The transaction key's reference while the key exists (generated and
    /// not yet destroyed): what the host loads from its key store for
    /// [`HostTxn::open_card_data`] and [`HostTxn::on_pin_block`].
    pub fn transaction_key_ref(&self) -> Option<KeyRef> {
        (self.ctx.transaction_key.is_some() && !self.state.is_terminal())
            .then(|| self.ctx.txn_id.transaction_key_ref())
    }

    /// The card whose record [`HostTxn::on_pin_block`] needs.
    pub fn card_id(&self) -> Option<&CardId> {
        match &self.state {
            HostState::AwaitingPin { card_id, .. } | HostState::Settling { card_id, .. } => {
                Some(card_id)
            }
            _ => None,
        }
    }

    /// S5 / S8 / S17: declines if the current step's deadline has passed
    /// (`now_ms ≥ deadline`). Returns no effects if nothing is due.
    pub fn on_timeout(&mut self, env: &HostEnv<'_>, now_ms: u64) -> Result<Vec<Effect>, FlowError> {
        let reason = match &self.state {
            HostState::AwaitingApproval { deadline_ms } if now_ms >= *deadline_ms => {
                DeclineReason::ApprovalTimeout
            }
            HostState::AwaitingCardData { deadline_ms } if now_ms >= *deadline_ms => {
                DeclineReason::CardDataTimeout
            }
            HostState::AwaitingPin { deadline_ms, .. } if now_ms >= *deadline_ms => {
                DeclineReason::PinTimeout
            }
            _ => return Ok(Vec::new()),
        };
        self.atomically(|t| t.decline(reason, env.signer, now_ms))
    }

    /// S5 / S32–S33 / S46: the phone's signed answer. Approve → S6 a fresh
    /// HPKE key pair for this transaction only, S7 its public key signed
    /// and bound to the transaction; reject → declined to both sides.
    pub fn on_approval(
        &mut self,
        bytes: &[u8],
        env: &HostEnv<'_>,
        now_ms: u64,
        rng: &mut impl CryptoRng,
    ) -> Result<Vec<Effect>, FlowError> {
        self.atomically(|t| t.approval_step(bytes, env.signer, env.config, now_ms, rng))
    }

    fn approval_step(
        &mut self,
        bytes: &[u8],
        host: &Signer,
        config: &HostConfig,
        now_ms: u64,
        rng: &mut impl CryptoRng,
    ) -> Result<Vec<Effect>, FlowError> {
        self.expect_awaiting("awaiting_approval", now_ms)?;
        let ctx = &self.ctx;
        let verified = cose::verify_artefact::<ApprovalResponse>(bytes, |r| {
            (r == &ctx.device_key_ref).then_some(ctx.device_key)
        })
        .map_err(|e| match e {
            CoseError::UnknownKey(_) => FlowError::WrongPhone,
            other => FlowError::Artefact {
                what: "approval response",
                source: other,
            },
        })?;
        let digest = ArtefactDigest(verified.digest());
        let response = verified.into_payload();
        if response.txn_id != ctx.txn_id {
            return Err(FlowError::WrongTransaction);
        }
        if response.device_id != ctx.device_id {
            return Err(FlowError::WrongPhone);
        }
        if response.approval_request != ctx.approval_request {
            return Err(FlowError::DigestMismatch("approval request"));
        }
        match response.decision {
            Decision::Reject => {
                self.ctx.approval_response = Some(digest);
                self.decline(DeclineReason::Rejected, host, now_ms)
            }
            Decision::Approve => {
                // S6: a key pair for this transaction only.
                let key_pair = HpkeKeyPair::generate(rng);
                let key_ref = ctx.txn_id.transaction_key_ref();
                let deadline_ms = now_ms.saturating_add(config.card_data_timeout_ms);
                let key = TransactionKey {
                    txn_id: ctx.txn_id,
                    key_ref: key_ref.clone(),
                    public_key: key_pair.public_key().clone(),
                    approval_response: digest,
                    deadline_ms,
                };
                let key_bytes = host.sign(&key)?;
                let device_id = ctx.device_id.clone();
                self.ctx.approval_response = Some(digest);
                self.ctx.transaction_key = Some(ArtefactDigest::of(&key_bytes));
                self.state = HostState::AwaitingCardData { deadline_ms };
                Ok(vec![
                    Effect::StoreTransactionKey { key_ref, key_pair },
                    Effect::SendToPhone {
                        device_id,
                        message: PhoneMessage::TransactionKey(key_bytes),
                    },
                ])
            }
        }
    }

    /// S10–S12: opens and authenticates the sealed card data with this
    /// transaction's key pair (`None` if the key store no longer has it).
    /// Changes nothing; hand the result to [`HostTxn::accept_card`] with
    /// the card record found for [`OpenedCardData::pan`] (S14).
    pub fn open_card_data(
        &self,
        bytes: &[u8],
        key_pair: Option<&HpkeKeyPair>,
        now_ms: u64,
    ) -> Result<OpenedCardData, FlowError> {
        self.expect_awaiting("awaiting_card_data", now_ms)?;
        let key_pair = key_pair.ok_or(FlowError::TransactionKeyDestroyed)?;
        let key_digest = self
            .ctx
            .transaction_key
            .ok_or(FlowError::TransactionKeyDestroyed)?;
        let (card, digest) = open_card_data(
            bytes,
            &self.ctx.txn_id,
            &self.ctx.txn_id.transaction_key_ref(),
            key_pair,
            &key_digest,
        )?;
        Ok(OpenedCardData {
            txn_id: self.ctx.txn_id,
            card,
            digest,
            sealed: Sealed::new(bytes.to_vec()),
        })
    }

    /// S14–S16: decides on the card. `card` is the cardholder-table row for
    /// the PAN (`None`: unknown card → declined to both, S15 N → S27).
    /// A blocked, expired, mismatching or PIN-locked card is declined too.
    /// Otherwise the PIN prompt goes to the phone for the reader.
    pub fn accept_card(
        &mut self,
        opened: OpenedCardData,
        card: Option<&CardRecord>,
        env: &HostEnv<'_>,
        now_ms: u64,
    ) -> Result<Vec<Effect>, FlowError> {
        self.atomically(|t| t.accept_card_step(opened, card, env.signer, env.config, now_ms))
    }

    fn accept_card_step(
        &mut self,
        opened: OpenedCardData,
        card: Option<&CardRecord>,
        host: &Signer,
        config: &HostConfig,
        now_ms: u64,
    ) -> Result<Vec<Effect>, FlowError> {
        self.expect_awaiting("awaiting_card_data", now_ms)?;
        if opened.txn_id != self.ctx.txn_id {
            return Err(FlowError::WrongTransaction);
        }
        let masked_pan = opened.card.pan.masked();
        self.ctx.card_data = Some(opened.digest);
        let Some(card) = card else {
            return self.decline_card(DeclineReason::UnknownCard, masked_pan, host, now_ms);
        };
        let refusal = if card.status == CardStatus::Blocked {
            Some(DeclineReason::CardBlocked)
        } else if card.expiry_yymm != opened.card.expiry_yymm {
            Some(DeclineReason::CardDataMismatch)
        } else if card_expired(&card.expiry_yymm, now_ms)? {
            Some(DeclineReason::CardExpired)
        } else if card.pin_failures >= config.max_pin_tries {
            Some(DeclineReason::PinLocked)
        } else {
            None
        };
        if let Some(reason) = refusal {
            return self.decline_card(reason, masked_pan, host, now_ms);
        }
        let deadline_ms = now_ms.saturating_add(config.pin_timeout_ms);
        let prompt = PinPrompt {
            txn_id: self.ctx.txn_id,
            card_data: opened.digest,
            masked_pan: masked_pan.clone(),
            amount: self.ctx.amount,
            merchant_name: self.ctx.merchant_name.clone(),
            deadline_ms,
        };
        let bytes = host.sign(&prompt)?;
        self.ctx.pin_prompt = Some(ArtefactDigest::of(&bytes));
        self.state = HostState::AwaitingPin {
            deadline_ms,
            card_id: card.card_id.clone(),
            funding_account: card.funding_account.clone(),
            masked_pan,
            sealed_card_data: opened.sealed.clone(),
        };
        Ok(vec![Effect::SendToPhone {
            device_id: self.ctx.device_id.clone(),
            message: PhoneMessage::PinPrompt(bytes),
        }])
    }

    /// S17–S23: the sealed PIN block. Opens it with the transaction key,
    /// re-opens the sealed card data for the PAN and PIN key, deciphers
    /// the format-4 block for that PAN and compares with the keyed
    /// verification data. `card` is the record of [`HostTxn::card_id`]
    /// with the *current* persisted try counter.
    ///
    /// Correct PIN → counter reset and the settlement transfer
    /// ([`HostState::Settling`]). Wrong PIN, or a block that does not
    /// decipher for this PAN (made for another card) → one failed try
    /// recorded and the transaction declined (S22 N → S27); the card locks
    /// when the counter reaches [`HostConfig::max_pin_tries`].
    pub fn on_pin_block(
        &mut self,
        bytes: &[u8],
        key_pair: Option<&HpkeKeyPair>,
        card: &CardRecord,
        env: &HostEnv<'_>,
        now_ms: u64,
    ) -> Result<Vec<Effect>, FlowError> {
        self.atomically(|t| t.pin_step(bytes, key_pair, card, env, now_ms))
    }

    fn pin_step(
        &mut self,
        bytes: &[u8],
        key_pair: Option<&HpkeKeyPair>,
        card: &CardRecord,
        env: &HostEnv<'_>,
        now_ms: u64,
    ) -> Result<Vec<Effect>, FlowError> {
        let (host, config) = (env.signer, env.config);
        self.expect_awaiting("awaiting_pin", now_ms)?;
        let HostState::AwaitingPin {
            card_id,
            funding_account,
            masked_pan,
            sealed_card_data,
            ..
        } = &self.state
        else {
            return Err(FlowError::UnexpectedStep {
                state: self.state.name(),
            });
        };
        if &card.card_id != card_id {
            return Err(FlowError::WrongCard);
        }
        let key_pair = key_pair.ok_or(FlowError::TransactionKeyDestroyed)?;
        let (Some(key_digest), Some(card_digest), Some(prompt_digest)) = (
            self.ctx.transaction_key,
            self.ctx.card_data,
            self.ctx.pin_prompt,
        ) else {
            return Err(FlowError::UnexpectedStep {
                state: self.state.name(),
            });
        };
        let key_ref = self.ctx.txn_id.transaction_key_ref();
        let (block, pin_digest) = open_pin_block(
            bytes,
            &self.ctx.txn_id,
            &key_ref,
            key_pair,
            &card_digest,
            &prompt_digest,
        )?;
        let (card_data, _) = open_card_data(
            sealed_card_data.as_bytes(),
            &self.ctx.txn_id,
            &key_ref,
            key_pair,
            &key_digest,
        )?;
        let (card_id, funding_account, masked_pan) =
            (card_id.clone(), funding_account.clone(), masked_pan.clone());
        self.ctx.pin_block = Some(pin_digest);
        if card.status == CardStatus::Blocked {
            return self.decline_card(DeclineReason::CardBlocked, masked_pan, host, now_ms);
        }
        if card.pin_failures >= config.max_pin_tries {
            return self.decline_card(DeclineReason::PinLocked, masked_pan, host, now_ms);
        }
        // The AES-128 PIN key the reader transported in the card data.
        let pin_key = PinKey::Aes128(card_data.pin_key.clone());
        match verify_pin_block(
            &block,
            &card_data.pan,
            &pin_key,
            &card.pin_verification,
            env.pin_verification_key,
        ) {
            Ok(()) => {
                let proof = PinVerified(());
                let transfer =
                    self.settlement_transfer(&funding_account, pin_digest, card_digest, &proof);
                self.state = HostState::Settling {
                    card_id: card_id.clone(),
                    masked_pan,
                    transfer: transfer.clone(),
                };
                Ok(vec![
                    Effect::ResetPinFailures { card_id },
                    Effect::SettleInLedger(transfer),
                ])
            }
            // Mismatch, or a block that does not decipher for this PAN
            // under this PIN key: both count as a failed try (kessai-pin).
            Err(_) => {
                let failures = card.pin_failures.saturating_add(1);
                let reason = if failures >= config.max_pin_tries {
                    DeclineReason::PinLocked
                } else {
                    DeclineReason::PinIncorrect {
                        tries_remaining: config.max_pin_tries - failures,
                    }
                };
                let mut effects = self.decline_card(reason, masked_pan, host, now_ms)?;
                effects.insert(0, Effect::RecordPinFailure { card_id });
                Ok(effects)
            }
        }
    }

    /// S23–S26: the ledger's answer to [`Effect::SettleInLedger`]. Created
    /// or already existing (a retry) → settled, completions to phone and
    /// merchant; over the cardholder's limit → declined
    /// ([`DeclineReason::InsufficientCredit`]); any other ledger refusal →
    /// declined with its result code. Either way the key and ciphertexts
    /// are destroyed.
    pub fn on_settlement(
        &mut self,
        result: &Result<Applied, LedgerError>,
        env: &HostEnv<'_>,
        now_ms: u64,
    ) -> Result<Vec<Effect>, FlowError> {
        self.atomically(|t| t.settlement_step(result, env.signer, now_ms))
    }

    fn settlement_step(
        &mut self,
        result: &Result<Applied, LedgerError>,
        host: &Signer,
        now_ms: u64,
    ) -> Result<Vec<Effect>, FlowError> {
        let HostState::Settling {
            masked_pan,
            transfer,
            ..
        } = &self.state
        else {
            return Err(self.wrong_state());
        };
        let (masked_pan, transfer) = (masked_pan.clone(), transfer.clone());
        let funding = transfer
            .legs
            .iter()
            .find(|l| l.side == kessai_ledger::Side::Debit)
            .map(|l| l.account.clone());
        let outcome = match result {
            Ok(Applied::Created(effect)) if effect.record.id == transfer.id => Outcome::Settled {
                transfer_id: transfer.id,
            },
            Ok(Applied::AlreadyExists(record)) if record.id == transfer.id => Outcome::Settled {
                transfer_id: transfer.id,
            },
            Ok(_) => return Err(FlowError::WrongTransfer),
            Err(LedgerError::ExceedsLimit { account }) if Some(account) == funding.as_ref() => {
                Outcome::Declined {
                    reason: DeclineReason::InsufficientCredit,
                }
            }
            Err(e) => Outcome::Declined {
                reason: DeclineReason::SettlementRefused {
                    code: e.code().to_owned(),
                },
            },
        };
        self.finish(outcome, Some(masked_pan), host, now_ms)
    }

    fn settlement_transfer(
        &self,
        funding_account: &AccountId,
        pin_block: ArtefactDigest,
        card_data: ArtefactDigest,
        _proof: &PinVerified,
    ) -> TransferRequest {
        let ctx = &self.ctx;
        let amount = ctx.amount.amount_minor;
        let mut t = TransferRequest::posted(
            ctx.txn_id.transfer_id(),
            ctx.amount.currency,
            codes::CARD_PAYMENT,
            vec![
                Leg::debit(funding_account.clone(), amount),
                Leg::credit(ctx.payable_account.clone(), amount),
            ],
        )
        .with_evidence("cose/flowc-payment-request", ctx.payment_request.0)
        .with_evidence("cose/flowc-approval-request", ctx.approval_request.0);
        if let Some(d) = ctx.approval_response {
            t = t.with_evidence("cose/flowc-approval-response", d.0);
        }
        t.with_evidence("cose/flowc-card-data", card_data.0)
            .with_evidence("cose/flowc-pin-block", pin_block.0)
            .with_reference(format!("flow-c {}/{}", ctx.merchant_id, ctx.order_ref))
    }

    /// Checks that the transaction waits in `state` and its deadline has
    /// not passed.
    fn expect_awaiting(&self, state: &'static str, now_ms: u64) -> Result<(), FlowError> {
        if self.state.name() != state {
            return Err(self.wrong_state());
        }
        match self.state.deadline_ms() {
            Some(d) if now_ms >= d => Err(FlowError::DeadlinePassed),
            _ => Ok(()),
        }
    }

    fn wrong_state(&self) -> FlowError {
        if self.state.is_terminal() {
            FlowError::TransactionEnded
        } else {
            FlowError::UnexpectedStep {
                state: self.state.name(),
            }
        }
    }

    /// Runs `step`; on `Err` puts the transaction back as it was, so a
    /// refused input never leaves a partial change behind.
    fn atomically<T>(
        &mut self,
        step: impl FnOnce(&mut Self) -> Result<T, FlowError>,
    ) -> Result<T, FlowError> {
        let saved = self.clone();
        let result = step(self);
        if result.is_err() {
            *self = saved;
        }
        result
    }

    fn decline(
        &mut self,
        reason: DeclineReason,
        host: &Signer,
        now_ms: u64,
    ) -> Result<Vec<Effect>, FlowError> {
        let masked_pan = match &self.state {
            HostState::AwaitingPin { masked_pan, .. } | HostState::Settling { masked_pan, .. } => {
                Some(masked_pan.clone())
            }
            _ => None,
        };
        self.finish(Outcome::Declined { reason }, masked_pan, host, now_ms)
    }

    fn decline_card(
        &mut self,
        reason: DeclineReason,
        masked_pan: String,
        host: &Signer,
        now_ms: u64,
    ) -> Result<Vec<Effect>, FlowError> {
        self.finish(Outcome::Declined { reason }, Some(masked_pan), host, now_ms)
    }

    /// Every terminal transition: completions to phone and merchant (S24 /
    /// S9 / S27), then destruction of the key pair and every ciphertext
    /// and plaintext of the transaction with an audit record (S26).
    fn finish(
        &mut self,
        outcome: Outcome,
        masked_pan: Option<String>,
        host: &Signer,
        now_ms: u64,
    ) -> Result<Vec<Effect>, FlowError> {
        let ctx = &self.ctx;
        let phone = PhoneCompletion {
            txn_id: ctx.txn_id,
            outcome: outcome.clone(),
            amount: ctx.amount,
            merchant_name: ctx.merchant_name.clone(),
            masked_pan: masked_pan.clone(),
            approval_request: ctx.approval_request,
            completed_at_ms: now_ms,
        };
        let merchant_outcome = match &outcome {
            Outcome::Declined { reason } => Outcome::Declined {
                reason: reason.for_merchant(),
            },
            settled => settled.clone(),
        };
        let merchant = MerchantCompletion {
            txn_id: ctx.txn_id,
            merchant_id: ctx.merchant_id.clone(),
            order_ref: ctx.order_ref.clone(),
            amount: ctx.amount,
            outcome: merchant_outcome,
            payment_request: ctx.payment_request,
            masked_pan: masked_pan.clone(),
            completed_at_ms: now_ms,
        };
        let phone_bytes = host.sign(&phone)?;
        let merchant_bytes = host.sign(&merchant)?;

        let key_ref = ctx
            .transaction_key
            .map(|_| ctx.txn_id.transaction_key_ref());
        let mut items = Vec::new();
        if let Some(d) = ctx.transaction_key {
            items.push(DestroyedItem {
                kind: DestroyedKind::TransactionKeyPair,
                digest: Some(d),
            });
        }
        if let Some(d) = ctx.card_data {
            items.push(DestroyedItem {
                kind: DestroyedKind::SealedCardData,
                digest: Some(d),
            });
            items.push(DestroyedItem {
                kind: DestroyedKind::CardDataPlaintext,
                digest: None,
            });
        }
        if let Some(d) = ctx.pin_block {
            items.push(DestroyedItem {
                kind: DestroyedKind::SealedPinBlock,
                digest: Some(d),
            });
            items.push(DestroyedItem {
                kind: DestroyedKind::PinPlaintext,
                digest: None,
            });
        }
        let record = DestructionRecord {
            txn_id: ctx.txn_id,
            key_ref: key_ref.clone(),
            outcome: outcome.clone(),
            items,
            at_ms: now_ms,
        };
        let mut effects = vec![
            Effect::SendToPhone {
                device_id: ctx.device_id.clone(),
                message: PhoneMessage::Completion(phone_bytes),
            },
            Effect::NotifyMerchant {
                merchant_id: ctx.merchant_id.clone(),
                completion: merchant_bytes,
            },
        ];
        if let Some(key_ref) = key_ref {
            effects.push(Effect::DestroyTransactionKey { key_ref });
        }
        effects.push(Effect::RecordDestruction(record));
        // The sealed card data leaves the state with the old state value.
        self.state = match outcome {
            Outcome::Settled { transfer_id } => HostState::Settled {
                transfer_id,
                masked_pan: masked_pan.unwrap_or_default(),
                completed_at_ms: now_ms,
            },
            Outcome::Declined { reason } => HostState::Declined {
                reason,
                masked_pan,
                completed_at_ms: now_ms,
            },
        };
        Ok(effects)
    }
}

impl fmt::Display for HostTxn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "flow-c txn {} ({})", self.ctx.txn_id, self.state.name())
    }
}

/// True if a card valid through the end of month `YYMM` (20YY) has expired
/// at `now_ms` (UTC).
fn card_expired(yymm: &str, now_ms: u64) -> Result<bool, FlowError> {
    crate::artefacts::validate_yymm(yymm)?;
    let b = yymm.as_bytes();
    let yy = i64::from((b[0] - b'0') * 10 + (b[1] - b'0'));
    let mm = i64::from((b[2] - b'0') * 10 + (b[3] - b'0'));
    let (year, month) = year_month_utc(now_ms);
    Ok((2000 + yy, mm) < (year, month))
}

/// The UTC civil year and month of a Unix time in milliseconds (Howard
/// Hinnant's `civil_from_days`).
fn year_month_utc(now_ms: u64) -> (i64, i64) {
    let days = i64::try_from(now_ms / 86_400_000).unwrap_or(i64::MAX / 2);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_month_from_unix_ms() {
        assert_eq!(year_month_utc(0), (1970, 1));
        // 2024-02-29T23:59:59.999Z and 2024-03-01T00:00:00Z.
        assert_eq!(year_month_utc(1_709_251_199_999), (2024, 2));
        assert_eq!(year_month_utc(1_709_251_200_000), (2024, 3));
        // 2000-12-31T12:00:00Z.
        assert_eq!(year_month_utc(978_264_000_000), (2000, 12));
    }

    #[test]
    fn cards_expire_after_their_month() {
        let march_2024 = 1_709_251_200_000;
        assert_eq!(card_expired("2403", march_2024), Ok(false));
        assert_eq!(card_expired("2402", march_2024), Ok(true));
        assert_eq!(card_expired("2312", march_2024), Ok(true));
        assert_eq!(card_expired("2901", march_2024), Ok(false));
        assert!(card_expired("2413", march_2024).is_err());
    }
}
