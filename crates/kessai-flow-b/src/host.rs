//! The host (settlement management device): verifies bills (SIG1), runs the
//! card session through the wallet relay, signs SETTLEMENT INFORMATION
//! (SIG2), VALUE UPDATE (SIG5) and the completion (SIG3), verifies receipts
//! (SIG4), and returns every money decision as [`Effect`]s.
//!
//! A card session is a [`CardSession`] value (serde): the caller stores it
//! between HTTP requests, feeds it the wallet's [`CardResponses`] with
//! [`CardSession::handle`], commits the [`Transition`]'s effects and new
//! state in one transaction, then sends the reply. `handle` takes `&self`:
//! on error the stored state stays as it was.
//!
//! Session steps (first embodiment; the second only drops SIG2):
//!
//! | step | host → wallet | card answers | host then |
//! |---|---|---|---|
//! | 1 | SELECT, INITIALIZE UPDATE | card challenge + cryptogram | checks card cryptogram (ST11) |
//! | 2 | EXTERNAL AUTHENTICATE | `9000` | session open (KSES) |
//! | 3 | BRC in settlement information / value update | BI, counter | shadow check, recovery decision |
//! | (4) | READ LOG (recovery; always for top-ups) | log | posts or voids the pending hold; log upload |
//! | 4/5 | SPC (DEBIT) or CREDIT, under a ledger hold | PCN | verifies PCN, posts, SIG3 ACN |

use kessai_card::issuer_card_keys;
use kessai_crypto::cose::{self, verify_artefact};
use kessai_crypto::digest::sha256;
use kessai_crypto::sign::{SigningKey, VerifyingKey};
use kessai_ids::{AccountId, CardId, KeyRef, MallId, StoreId, TransferId};
use kessai_ledger::{Leg, TransferKind, TransferRequest, codes};
use kessai_money::Currency;
use kessai_pin::{PinKey, PinVerificationKey};
use kessai_scp03::host::{HostHandshake, HostSession, HostSessionState, PendingHostSession};
use kessai_scp03::keys::kdd_for_card_id;
use kessai_scp03::{AesKey, SecurityLevel, StaticKeys};
use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use crate::artefacts::{
    Bill, BillKey, Digest, EvidenceKind, InfoEnvelope, PcnSummary, SettlementCompletion,
    SettlementInformation, SettlementReceipt, Stage, ValueUpdate, encode_unsigned,
};
use crate::bytes;
use crate::card_apdu::{self, BalanceInfo, CardLogEntry};
use crate::effects::Effect;
use crate::error::FlowError;
use crate::funding::FundingAuthorized;
use crate::messages::{AbortReason, CardResponses, HostToWallet, TopUpSummary};
use crate::registry::{
    BillStatus, CardRecord, CardStatus, KeyDirectory, MerchantRows, MerchantStatus, PendingBill,
    PendingCardOp, PurseOp, Shadow,
};

/// Whether settlement information carries the SECOND SIGNATURE.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sig2Mode {
    /// First embodiment (ST12–ST15): signed.
    Signed,
    /// Second embodiment (ST109): omitted; origin rests on the secure
    /// channel alone.
    Omitted,
}

/// The host's keys and settings. Not serializable: it holds secrets and is
/// built from the key store at start-up.
pub struct HostConfig {
    /// Signs SIG2, SIG3 and SIG5.
    pub signing_key: SigningKey,
    /// Its key reference (`kid`).
    pub key_ref: KeyRef,
    /// The issuer master key the cards' SCP03 keys are diversified from
    /// (the seed's common key KC, per card).
    pub card_master_key: AesKey,
    /// First or second embodiment.
    pub sig2: Sig2Mode,
    /// How long a card session may take, from its start.
    pub session_timeout_ms: u64,
    /// Expiry of the ledger hold behind a card debit or credit. Recovery
    /// resolves holds at the card's next contact, so this is long (days);
    /// a hold must not expire before the card is seen again.
    pub hold_ttl_ms: u64,
    /// Key of the wallets' format-4 PIN blocks for top-ups.
    pub pin_key: PinKey,
    /// Key of the stored PIN verification data.
    pub pin_verification_key: PinVerificationKey,
    /// Failed PIN tries before the funding account locks.
    pub max_pin_tries: u8,
}

impl std::fmt::Debug for HostConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostConfig")
            .field("key_ref", &self.key_ref)
            .field("sig2", &self.sig2)
            .field("session_timeout_ms", &self.session_timeout_ms)
            .field("hold_ttl_ms", &self.hold_ttl_ms)
            .field("max_pin_tries", &self.max_pin_tries)
            .finish_non_exhaustive()
    }
}

impl HostConfig {
    /// The host's public key.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.signing_key.verifying_key()
    }

    /// The host's published key set, for wallets and stores.
    pub fn key_directory(&self) -> KeyDirectory {
        KeyDirectory::single(self.key_ref.clone(), self.verifying_key())
    }

    fn card_keys(&self, card_id: &CardId, key_version: u8) -> StaticKeys {
        issuer_card_keys(&self.card_master_key, card_id, key_version).static_keys
    }
}

/// Proof that a bill's FIRST SIGNATURE verified under the registered key
/// of its store (or mall), that the merchant is active, the bill unexpired
/// and its amount positive. Only [`verify_bill`] makes one (deserializing
/// is for the host's own session rows).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillVerified {
    bill: Bill,
    #[serde(with = "bytes::array")]
    digest: Digest,
    #[serde(with = "bytes::vec")]
    bytes: Vec<u8>,
    signer: KeyRef,
    payable_account: AccountId,
}

impl BillVerified {
    /// The bill.
    pub fn bill(&self) -> &Bill {
        &self.bill
    }
    /// Digest of its COSE bytes.
    pub fn digest(&self) -> Digest {
        self.digest
    }
    /// The COSE bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
    /// The key that signed it.
    pub fn signer(&self) -> &KeyRef {
        &self.signer
    }
    /// The payable account to credit.
    pub fn payable_account(&self) -> &AccountId {
        &self.payable_account
    }
}

/// Reads the store and mall a bill names **without verifying it**, so the
/// caller can load the right [`MerchantRows`]. Proves nothing.
pub fn peek_bill_route(bytes: &[u8]) -> Result<(StoreId, Option<MallId>), FlowError> {
    use ciborium::Value;
    if bytes.len() > cose::MAX_OBJECT_LEN {
        return Err(FlowError::Malformed("bill too large"));
    }
    let value: Value =
        ciborium::de::from_reader(bytes).map_err(|_| FlowError::Malformed("bill is not CBOR"))?;
    let Value::Tag(18, inner) = value else {
        return Err(FlowError::Malformed("bill is not a COSE_Sign1"));
    };
    let Value::Array(items) = *inner else {
        return Err(FlowError::Malformed("bill is not a COSE_Sign1"));
    };
    let Some(Value::Bytes(payload)) = items.get(2) else {
        return Err(FlowError::Malformed("bill has no payload"));
    };
    let bill: Bill = ciborium::de::from_reader(payload.as_slice())
        .map_err(|_| FlowError::Malformed("bill payload"))?;
    Ok((bill.store_id, bill.mall_id))
}

/// Step ST9: verifies a bill's FIRST SIGNATURE against the registered key
/// of the store — or of the mall for a member store —, the merchant's
/// status, the store–mall membership, the amount and the expiry.
pub fn verify_bill(
    bytes: &[u8],
    rows: MerchantRows<'_>,
    now_ms: u64,
) -> Result<BillVerified, FlowError> {
    let verified = verify_artefact::<Bill>(bytes, |r| rows.signing_keys().resolve(r))?;
    let bill = verified.payload();
    if bill.store_id != rows.store.store_id {
        return Err(FlowError::StoreMismatch);
    }
    match (&bill.mall_id, rows.mall) {
        (None, None) => {}
        (Some(m), Some(mall)) if mall.mall_id == *m && rows.store.mall_id.as_ref() == Some(m) => {
            if mall.status != MerchantStatus::Active {
                return Err(FlowError::MerchantNotActive(mall.status));
            }
        }
        _ => return Err(FlowError::NotMallMember),
    }
    if rows.store.status != MerchantStatus::Active {
        return Err(FlowError::MerchantNotActive(rows.store.status));
    }
    if bill.amount.amount_minor <= 0 {
        return Err(FlowError::InvalidAmount);
    }
    if now_ms >= bill.expires_at_ms {
        return Err(FlowError::BillExpired);
    }
    Ok(BillVerified {
        bill: bill.clone(),
        digest: verified.digest(),
        bytes: verified.bytes().to_vec(),
        signer: verified.signer().clone(),
        payable_account: rows.store.payable_account.clone(),
    })
}

/// A receipt whose FOURTH SIGNATURE verified and that acknowledges the
/// completion at hand. Only [`verify_receipt`] (and the wallet's
/// counterpart) make one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiptVerified {
    receipt: SettlementReceipt,
    digest: Digest,
}

impl ReceiptVerified {
    pub(crate) fn new(receipt: SettlementReceipt, digest: Digest) -> Self {
        Self { receipt, digest }
    }
    /// The receipt.
    pub fn receipt(&self) -> &SettlementReceipt {
        &self.receipt
    }
    /// Digest of its COSE bytes.
    pub fn digest(&self) -> Digest {
        self.digest
    }
}

/// Checks a receipt (SIG4) against the merchant's registered keys and the
/// completion it must acknowledge; shared by host and wallet.
pub(crate) fn check_receipt(
    receipt: &[u8],
    completion: &[u8],
    merchant_keys: &KeyDirectory,
) -> Result<ReceiptVerified, FlowError> {
    let v = verify_artefact::<SettlementReceipt>(receipt, |r| merchant_keys.resolve(r))?;
    let acn = completion_payload(completion)?;
    let r = v.payload();
    if r.completion_digest != sha256(&[completion]) {
        return Err(FlowError::BindingMismatch(
            "receipt names another completion",
        ));
    }
    if r.bill_digest != acn.bill_digest
        || r.store_id != acn.store_id
        || r.order_id != acn.order_id
        || r.amount != acn.amount
    {
        return Err(FlowError::BindingMismatch("receipt names another bill"));
    }
    Ok(ReceiptVerified::new(r.clone(), v.digest()))
}

/// Decodes the payload of a completion the caller produced or verified
/// earlier (it is trusted input here: the digest binds it).
fn completion_payload(bytes: &[u8]) -> Result<SettlementCompletion, FlowError> {
    use ciborium::Value;
    let value: Value = ciborium::de::from_reader(bytes)
        .map_err(|_| FlowError::Malformed("completion is not CBOR"))?;
    let payload = match value {
        Value::Tag(18, inner) => match *inner {
            Value::Array(mut items) if items.len() == 4 => match items.swap_remove(2) {
                Value::Bytes(p) => p,
                _ => return Err(FlowError::Malformed("completion payload")),
            },
            _ => return Err(FlowError::Malformed("completion is not a COSE_Sign1")),
        },
        _ => return Err(FlowError::Malformed("completion is not a COSE_Sign1")),
    };
    ciborium::de::from_reader(payload.as_slice())
        .map_err(|_| FlowError::Malformed("completion payload"))
}

/// Host side of ST112 / claims 6, 14: verifies the store's receipt (SIG4)
/// for a completion the host issued; returns the effect that records it.
pub fn verify_receipt(
    receipt: &[u8],
    completion: &[u8],
    rows: MerchantRows<'_>,
) -> Result<(ReceiptVerified, Vec<Effect>), FlowError> {
    let v = check_receipt(receipt, completion, rows.signing_keys())?;
    let effects = vec![
        Effect::RecordReceipt {
            bill: BillKey {
                store_id: v.receipt.store_id.clone(),
                order_id: v.receipt.order_id.clone(),
            },
            completion_digest: v.receipt.completion_digest,
            receipt_digest: v.digest,
        },
        evidence(EvidenceKind::Receipt, receipt),
    ];
    Ok((v, effects))
}

/// The output of one host step: the state to store, the reply to send
/// after the effects are committed, and the effects.
#[derive(Debug)]
pub struct Transition {
    /// The new session state.
    pub session: CardSession,
    /// The message for the wallet.
    pub reply: HostToWallet,
    /// What to commit.
    pub effects: Vec<Effect>,
}

/// What a card session is for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Purpose {
    Purchase { bill: Box<BillVerified> },
    TopUp { authorization: FundingAuthorized },
}

/// The card as the session knows it (copied from [`CardRecord`] at start).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct CardContext {
    card_id: CardId,
    currency: Currency,
    key_version: u8,
    emoney_account: AccountId,
    shadow: Shadow,
    pending: Option<PendingCardOp>,
}

/// Persisted SCP03 host state: no key material (see
/// [`HostSessionState`]); Debug redacted.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ScpState(#[serde(with = "bytes::vec")] Vec<u8>);

impl Drop for ScpState {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for ScpState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScpState(redacted)")
    }
}

impl ScpState {
    fn of(state: &HostSessionState) -> Self {
        Self(state.to_bytes().to_vec())
    }
    fn state(&self) -> Result<HostSessionState, FlowError> {
        Ok(HostSessionState::from_bytes(&self.0)?)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Phase {
    AwaitHandshake {
        #[serde(with = "bytes::array")]
        host_challenge: [u8; 8],
    },
    AwaitAuthentication {
        scp: ScpState,
    },
    AwaitBalance {
        scp: ScpState,
        #[serde(with = "bytes::array")]
        last_digest: Digest,
    },
    AwaitLog {
        scp: ScpState,
        balance: BalanceInfo,
        #[serde(with = "bytes::array")]
        last_digest: Digest,
    },
    AwaitPurse {
        scp: ScpState,
        op: Box<PendingCardOp>,
        balance: BalanceInfo,
        #[serde(with = "bytes::array")]
        last_digest: Digest,
    },
    Finished {
        reply: HostToWallet,
        #[serde(with = "bytes::array")]
        responses_digest: Digest,
    },
}

/// One host ↔ card session relayed by a wallet (a purchase or a top-up),
/// as a serializable value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardSession {
    #[serde(with = "bytes::array")]
    session_id: [u8; 16],
    card: CardContext,
    purpose: Purpose,
    started_at_ms: u64,
    deadline_ms: u64,
    step: u16,
    phase: Phase,
}

/// Digest-and-bytes evidence effect.
fn evidence(kind: EvidenceKind, bytes: &[u8]) -> Effect {
    Effect::StoreEvidence {
        kind,
        digest: sha256(&[bytes]),
        bytes: bytes.to_vec(),
    }
}

fn sw_of(r: &[u8]) -> u16 {
    match r {
        [.., a, b] => u16::from_be_bytes([*a, *b]),
        _ => 0x6F00,
    }
}

/// Hold, post and void ids of a card operation.
fn hold_id(session_id: &[u8; 16], binding: &[u8]) -> TransferId {
    TransferId::derive("kessai/flow-b/hold", &[session_id, binding])
}
fn post_id(hold: &TransferId) -> TransferId {
    TransferId::derive("kessai/flow-b/post", &[hold.as_bytes()])
}
fn void_id(hold: &TransferId) -> TransferId {
    TransferId::derive("kessai/flow-b/void", &[hold.as_bytes()])
}

/// The 16-byte counterparty tag written to the card log for a store.
pub fn counterparty_tag(store_id: &StoreId) -> [u8; 16] {
    let d = sha256(&[
        b"kessai/flow-b/counterparty\0",
        store_id.as_str().as_bytes(),
    ]);
    let mut out = [0u8; 16];
    out.copy_from_slice(&d[..16]);
    out
}

/// The counterparty tag of a top-up.
pub const TOP_UP_COUNTERPARTY: [u8; 16] = *b"kessai/top-up\0\0\0";

fn random<const N: usize>(rng: &mut impl CryptoRng) -> [u8; N] {
    let mut b = [0u8; N];
    rng.fill_bytes(&mut b);
    b
}

fn check_card(card: &CardRecord, currency: Currency) -> Result<(), FlowError> {
    if card.status != CardStatus::Active {
        return Err(FlowError::CardBlocked);
    }
    if card.currency != currency {
        return Err(FlowError::CurrencyMismatch);
    }
    Ok(())
}

fn start(
    card: &CardRecord,
    purpose: Purpose,
    cfg: &HostConfig,
    now_ms: u64,
    rng: &mut impl CryptoRng,
) -> Transition {
    let session_id = random::<16>(rng);
    let host_challenge = random::<8>(rng);
    let hs = HostHandshake::new(card.key_version, host_challenge);
    let session = CardSession {
        session_id,
        card: CardContext {
            card_id: card.card_id.clone(),
            currency: card.currency,
            key_version: card.key_version,
            emoney_account: card.emoney_account.clone(),
            shadow: card.shadow,
            pending: card.pending.clone(),
        },
        purpose,
        started_at_ms: now_ms,
        deadline_ms: now_ms.saturating_add(cfg.session_timeout_ms),
        step: 1,
        phase: Phase::AwaitHandshake { host_challenge },
    };
    Transition {
        reply: HostToWallet::CardExchange {
            session_id,
            step: 1,
            apdus: vec![card_apdu::select(), hs.initialize_update()],
        },
        session,
        effects: Vec::new(),
    }
}

/// Steps ST8–ST11: a wallet submits a bill for `card`. Verifies the bill
/// ([`verify_bill`]) and its status, then opens the card session (SELECT +
/// INITIALIZE UPDATE for the wallet to relay).
///
/// `bill_status` comes from the database. A bill that is `Reserved` is
/// accepted only when the in-flight debit is on this very card (the
/// customer retries after a lost PCN): the session then recovers it first.
pub fn begin_purchase(
    cfg: &HostConfig,
    bill_bytes: &[u8],
    rows: MerchantRows<'_>,
    bill_status: BillStatus,
    card: &CardRecord,
    now_ms: u64,
    rng: &mut impl CryptoRng,
) -> Result<Transition, FlowError> {
    let bill = verify_bill(bill_bytes, rows, now_ms)?;
    match bill_status {
        BillStatus::Open => {}
        BillStatus::Settled => return Err(FlowError::BillAlreadySettled),
        BillStatus::Reserved => {
            let same = card
                .pending
                .as_ref()
                .and_then(|p| p.bill.as_ref())
                .is_some_and(|b| b.key == bill.bill.key());
            if !same {
                return Err(FlowError::BillInFlight);
            }
        }
    }
    check_card(card, bill.bill.amount.currency)?;
    Ok(start(
        card,
        Purpose::Purchase {
            bill: Box::new(bill),
        },
        cfg,
        now_ms,
        rng,
    ))
}

/// Value update: after [`crate::funding::authorize_funding`] approved,
/// opens the card session for the CREDIT.
pub fn begin_top_up(
    cfg: &HostConfig,
    authorization: FundingAuthorized,
    card: &CardRecord,
    now_ms: u64,
    rng: &mut impl CryptoRng,
) -> Result<Transition, FlowError> {
    if authorization.card_id() != &card.card_id {
        return Err(FlowError::CardMismatch);
    }
    check_card(card, authorization.amount().currency)?;
    Ok(start(
        card,
        Purpose::TopUp { authorization },
        cfg,
        now_ms,
        rng,
    ))
}

/// Proof that a card's purse response (the PCN of a DEBIT, or the CREDIT
/// response) passed the R-MAC check and names exactly the operation sent.
/// Only the session's verification makes one.
#[derive(Debug)]
pub struct PcnVerified {
    entry: CardLogEntry,
    response_digest: Digest,
}

/// Checks a purse response record against the operation that was sent.
fn verify_pcn(
    op: &PendingCardOp,
    balance: &BalanceInfo,
    entry: CardLogEntry,
    response: &[u8],
    counterparty: [u8; 16],
) -> Result<PcnVerified, FlowError> {
    if entry.op != op.op {
        return Err(FlowError::PcnMismatch("operation"));
    }
    if entry.amount_minor != op.amount_minor {
        return Err(FlowError::PcnMismatch("amount"));
    }
    if entry.currency_numeric != op.currency.numeric() {
        return Err(FlowError::PcnMismatch("currency"));
    }
    if entry.reference != op.reference() || entry.counterparty != counterparty {
        return Err(FlowError::PcnMismatch("reference"));
    }
    if Some(entry.counter) != balance.counter.checked_add(1) {
        return Err(FlowError::PcnMismatch("counter"));
    }
    let expected = match op.op {
        PurseOp::Debit => balance.balance_minor.checked_sub(op.amount_minor),
        PurseOp::Credit => balance.balance_minor.checked_add(op.amount_minor),
    };
    if Some(entry.balance_after_minor) != expected {
        return Err(FlowError::PcnMismatch("balance"));
    }
    Ok(PcnVerified {
        entry,
        response_digest: sha256(&[response]),
    })
}

/// A purchase completed by recovery: its bill and signed ACN.
type Recovered = Option<(PendingBill, Vec<u8>)>;

/// What recovery found out about a pending operation.
enum Resolution {
    /// The card log holds the operation: post.
    Applied(CardLogEntry),
    /// The card did not apply it: void.
    NotApplied,
}

impl CardSession {
    /// The session id.
    pub fn session_id(&self) -> [u8; 16] {
        self.session_id
    }
    /// The card.
    pub fn card_id(&self) -> &CardId {
        &self.card.card_id
    }
    /// The session's deadline (unix ms).
    pub fn deadline_ms(&self) -> u64 {
        self.deadline_ms
    }
    /// The step the session waits for.
    pub fn step(&self) -> u16 {
        self.step
    }
    /// True once the final reply was produced.
    pub fn is_finished(&self) -> bool {
        matches!(self.phase, Phase::Finished { .. })
    }
    /// The bill, for a purchase session.
    pub fn bill(&self) -> Option<&BillVerified> {
        match &self.purpose {
            Purpose::Purchase { bill } => Some(bill),
            Purpose::TopUp { .. } => None,
        }
    }

    /// Consumes the wallet's card responses for the current step. `card`
    /// is the card's current database row: its shadow and pending
    /// operation are read fresh when the balance arrives, so a session
    /// that ran on the same card in the meantime is taken into account.
    ///
    /// An exact duplicate of the responses that finished the session
    /// returns the same final reply with no effects; anything else for
    /// another session or step is [`FlowError::OutOfSequence`]; after the
    /// deadline, [`FlowError::SessionTimedOut`] (a hold already taken is
    /// then resolved at the card's next contact).
    pub fn handle(
        &self,
        cfg: &HostConfig,
        card: &CardRecord,
        msg: &CardResponses,
        now_ms: u64,
    ) -> Result<Transition, FlowError> {
        if card.card_id != self.card.card_id {
            return Err(FlowError::CardMismatch);
        }
        if matches!(self.phase, Phase::AwaitBalance { .. }) {
            // Decide on the card's current shadow and pending operation.
            let mut fresh = self.clone();
            fresh.card.shadow = card.shadow;
            fresh.card.pending = card.pending.clone();
            return fresh.step_in(cfg, msg, now_ms);
        }
        self.step_in(cfg, msg, now_ms)
    }

    fn step_in(
        &self,
        cfg: &HostConfig,
        msg: &CardResponses,
        now_ms: u64,
    ) -> Result<Transition, FlowError> {
        if msg.session_id != self.session_id {
            return Err(FlowError::OutOfSequence);
        }
        if let Phase::Finished {
            reply,
            responses_digest,
        } = &self.phase
        {
            if msg.step == self.step && msg.digest() == *responses_digest {
                return Ok(Transition {
                    session: self.clone(),
                    reply: reply.clone(),
                    effects: Vec::new(),
                });
            }
            return Err(FlowError::AlreadyCompleted);
        }
        if msg.step != self.step {
            return Err(FlowError::OutOfSequence);
        }
        if now_ms > self.deadline_ms {
            return Err(FlowError::SessionTimedOut);
        }
        let keys = cfg.card_keys(&self.card.card_id, self.card.key_version);
        match &self.phase {
            Phase::AwaitHandshake { host_challenge } => {
                let [select, iu] = msg.responses.as_slice() else {
                    return Err(FlowError::CardResponse("expected two responses"));
                };
                if sw_of(select) != 0x9000 {
                    return Err(FlowError::CardStatus(sw_of(select)));
                }
                let hs = HostHandshake::new(self.card.key_version, *host_challenge);
                let parsed = hs.parse_response(iu)?;
                if parsed.kdd != kdd_for_card_id(self.card.card_id.as_str()) {
                    return Err(FlowError::CardMismatch);
                }
                let (pending, ea) = hs.authenticate(&parsed, &keys, SecurityLevel::Full)?;
                let step = self.step + 1;
                Ok(self.next(
                    Phase::AwaitAuthentication {
                        scp: ScpState::of(&pending.state()),
                    },
                    HostToWallet::CardExchange {
                        session_id: self.session_id,
                        step,
                        apdus: vec![ea],
                    },
                    Vec::new(),
                ))
            }
            Phase::AwaitAuthentication { scp } => {
                let resp = single(msg)?;
                let pending = PendingHostSession::resume(&scp.state()?, &keys)?;
                let mut session = pending.confirm(resp)?;
                let command = session.wrap(&card_apdu::read_balance())?;
                let (reply, digest, _) = self.instruct(
                    cfg,
                    Stage::BalanceReadout,
                    command,
                    None,
                    None,
                    self.step + 1,
                )?;
                Ok(self.next(
                    Phase::AwaitBalance {
                        scp: ScpState::of(&session.state()?),
                        last_digest: digest,
                    },
                    reply,
                    Vec::new(),
                ))
            }
            Phase::AwaitBalance { scp, last_digest } => {
                let resp = single(msg)?;
                let mut session = HostSession::resume(&scp.state()?, &keys)?;
                let plain = session.unwrap(resp)?;
                if plain.sw != 0x9000 {
                    return Err(FlowError::CardStatus(plain.sw));
                }
                let balance = card_apdu::parse_balance(&plain.data)?;
                if balance.currency_numeric != self.card.currency.numeric() {
                    return Err(FlowError::CurrencyMismatch);
                }
                let log_len = match (&self.purpose, &self.card.pending) {
                    (_, Some(p)) if balance.counter < p.counter_before => {
                        return Err(FlowError::ShadowMismatch);
                    }
                    (Purpose::TopUp { .. }, _) => Some(kessai_card::records::LOG_CAPACITY as u8),
                    (_, Some(p)) if balance.counter != p.counter_before => Some(
                        (balance.counter - p.counter_before)
                            .min(kessai_card::records::LOG_CAPACITY as u32)
                            as u8,
                    ),
                    _ => None,
                };
                if let Some(n) = log_len {
                    let command = session.wrap(&card_apdu::read_log(n))?;
                    let (reply, digest, _) = self.instruct(
                        cfg,
                        Stage::LogReadout,
                        command,
                        None,
                        Some(*last_digest),
                        self.step + 1,
                    )?;
                    return Ok(self.next(
                        Phase::AwaitLog {
                            scp: ScpState::of(&session.state()?),
                            balance,
                            last_digest: digest,
                        },
                        reply,
                        Vec::new(),
                    ));
                }
                let mut effects = Vec::new();
                let mut recovered = None;
                if let Some(p) = &self.card.pending {
                    let (e, acn) = self.resolve(cfg, p, Resolution::NotApplied, None, now_ms)?;
                    effects.extend(e);
                    recovered = acn;
                }
                self.check_shadow(&balance, None)?;
                self.proceed(
                    cfg,
                    session,
                    balance,
                    *last_digest,
                    effects,
                    recovered,
                    msg,
                    now_ms,
                )
            }
            Phase::AwaitLog {
                scp,
                balance,
                last_digest,
                ..
            } => {
                let resp = single(msg)?;
                let mut session = HostSession::resume(&scp.state()?, &keys)?;
                let plain = session.unwrap(resp)?;
                if plain.sw != 0x9000 {
                    return Err(FlowError::CardStatus(plain.sw));
                }
                let entries = card_apdu::parse_log(&plain.data)?;
                let mut effects = Vec::new();
                if matches!(self.purpose, Purpose::TopUp { .. }) {
                    effects.push(Effect::UploadCardLog {
                        card_id: self.card.card_id.clone(),
                        entries: entries.clone(),
                    });
                }
                let mut recovered = None;
                let mut applied = None;
                if let Some(p) = &self.card.pending {
                    let found = entries.iter().find(|e| {
                        e.reference == p.reference()
                            && e.op == p.op
                            && e.amount_minor == p.amount_minor
                            && e.counter > p.counter_before
                    });
                    let resolution = match found {
                        Some(e) => Resolution::Applied(*e),
                        None => {
                            let covers = entries.len() < kessai_card::records::LOG_CAPACITY
                                || entries
                                    .iter()
                                    .any(|e| e.counter <= p.counter_before.saturating_add(1));
                            if !covers {
                                return Err(FlowError::RecoveryUndecidable);
                            }
                            Resolution::NotApplied
                        }
                    };
                    applied = found.copied();
                    let (e, acn) = self.resolve(cfg, p, resolution, Some(resp), now_ms)?;
                    effects.extend(e);
                    recovered = acn;
                }
                self.check_shadow(balance, applied.as_ref())?;
                self.proceed(
                    cfg,
                    session,
                    *balance,
                    *last_digest,
                    effects,
                    recovered,
                    msg,
                    now_ms,
                )
            }
            Phase::AwaitPurse {
                scp,
                op,
                balance,
                last_digest,
            } => {
                let resp = single(msg)?;
                let mut session = HostSession::resume(&scp.state()?, &keys)?;
                let plain = session.unwrap(resp)?;
                if plain.sw != 0x9000 {
                    return Err(FlowError::CardStatus(plain.sw));
                }
                let entry = card_apdu::parse_record(&plain.data)?;
                let counterparty = self.counterparty();
                let pcn = verify_pcn(op, balance, entry, resp, counterparty)?;
                self.complete(cfg, op, pcn, *last_digest, resp, msg, now_ms)
            }
            Phase::Finished { .. } => Err(FlowError::AlreadyCompleted),
        }
    }

    fn next(&self, phase: Phase, reply: HostToWallet, effects: Vec<Effect>) -> Transition {
        Transition {
            session: CardSession {
                step: self.step + 1,
                phase,
                ..self.clone()
            },
            reply,
            effects,
        }
    }

    fn finish(&self, reply: HostToWallet, msg: &CardResponses, effects: Vec<Effect>) -> Transition {
        Transition {
            session: CardSession {
                phase: Phase::Finished {
                    reply: reply.clone(),
                    responses_digest: msg.digest(),
                },
                ..self.clone()
            },
            reply,
            effects,
        }
    }

    fn counterparty(&self) -> [u8; 16] {
        match &self.purpose {
            Purpose::Purchase { bill } => counterparty_tag(&bill.bill.store_id),
            Purpose::TopUp { .. } => TOP_UP_COUNTERPARTY,
        }
    }

    /// Builds the signed (or, second embodiment, unsigned) instruction that
    /// carries `command`. Returns the reply, its digest and its bytes.
    fn instruct(
        &self,
        cfg: &HostConfig,
        stage: Stage,
        command: Vec<u8>,
        balance_minor: Option<u64>,
        previous_digest: Option<Digest>,
        step: u16,
    ) -> Result<(HostToWallet, Digest, Vec<u8>), FlowError> {
        match &self.purpose {
            Purpose::Purchase { bill } => {
                let info = SettlementInformation {
                    session_id: self.session_id,
                    step,
                    stage,
                    card_id: self.card.card_id.clone(),
                    bill_digest: bill.digest,
                    amount: bill.bill.amount,
                    balance_minor,
                    command,
                    previous_digest,
                    expires_at_ms: self.deadline_ms,
                };
                let envelope = match cfg.sig2 {
                    Sig2Mode::Signed => InfoEnvelope::Signed(cose::sign_artefact(
                        &info,
                        &cfg.signing_key,
                        &cfg.key_ref,
                    )?),
                    Sig2Mode::Omitted => InfoEnvelope::Unsigned(encode_unsigned(&info)?),
                };
                let digest = envelope.digest();
                let bytes = envelope.evidence_bytes();
                Ok((
                    HostToWallet::Settlement {
                        session_id: self.session_id,
                        step,
                        info: envelope,
                    },
                    digest,
                    bytes,
                ))
            }
            Purpose::TopUp { authorization } => {
                let vu = ValueUpdate {
                    session_id: self.session_id,
                    step,
                    stage,
                    card_id: self.card.card_id.clone(),
                    authorization_ref: authorization.authorization_ref(),
                    amount: authorization.amount(),
                    balance_minor,
                    command,
                    previous_digest,
                    expires_at_ms: self.deadline_ms,
                };
                let bytes = cose::sign_artefact(&vu, &cfg.signing_key, &cfg.key_ref)?;
                let digest = sha256(&[&bytes]);
                Ok((
                    HostToWallet::ValueUpdate {
                        session_id: self.session_id,
                        step,
                        cose: bytes.clone(),
                    },
                    digest,
                    bytes,
                ))
            }
        }
    }

    /// The card's purse must be what the shadow (adjusted by a recovered
    /// operation) says; the counter may only have moved forward.
    fn check_shadow(
        &self,
        balance: &BalanceInfo,
        applied: Option<&CardLogEntry>,
    ) -> Result<(), FlowError> {
        let (expected_balance, min_counter) = match (&self.card.pending, applied) {
            (Some(_), Some(e)) => (e.balance_after_minor, e.counter),
            (Some(p), None) => (p.balance_before_minor, p.counter_before),
            (None, _) => (self.card.shadow.balance_minor, self.card.shadow.counter),
        };
        if balance.balance_minor != expected_balance || balance.counter < min_counter {
            return Err(FlowError::ShadowMismatch);
        }
        Ok(())
    }

    /// Resolves the card's pending operation: post the hold if the card
    /// applied it, void it otherwise. For a purchase that posts, also
    /// settles the bill and signs its (recovered) completion.
    fn resolve(
        &self,
        cfg: &HostConfig,
        p: &PendingCardOp,
        resolution: Resolution,
        proof: Option<&[u8]>,
        now_ms: u64,
    ) -> Result<(Vec<Effect>, Recovered), FlowError> {
        let mut effects = Vec::new();
        if let Some(proof) = proof {
            effects.push(evidence(EvidenceKind::CardLog, proof));
        }
        let with_proof = |req: TransferRequest| match proof {
            Some(b) => req.with_evidence(EvidenceKind::CardLog.label(), sha256(&[b])),
            None => req,
        };
        let mut acn = None;
        match resolution {
            Resolution::Applied(entry) => {
                let post = with_proof(TransferRequest::resolution(
                    post_id(&p.hold_id),
                    p.currency,
                    codes::RECOVERY,
                    TransferKind::PostPending {
                        pending_id: p.hold_id,
                    },
                ));
                effects.push(Effect::Ledger(post));
                if let Some(b) = &p.bill {
                    let completion = SettlementCompletion {
                        bill_digest: b.bill_digest,
                        store_id: b.key.store_id.clone(),
                        mall_id: b.mall_id.clone(),
                        order_id: b.key.order_id.clone(),
                        amount: kessai_money::Money::new(p.amount_minor as i64, p.currency),
                        card_id: p.card_id.clone(),
                        settlement_info_digest: b.settlement_info_digest,
                        pcn: PcnSummary {
                            counter: entry.counter,
                            balance_after_minor: entry.balance_after_minor,
                            reference: entry.reference,
                            digest: proof.map(|b| sha256(&[b])).unwrap_or_default(),
                        },
                        transfer_id: post_id(&p.hold_id),
                        recovered: true,
                        completed_at_ms: now_ms,
                    };
                    let bytes = cose::sign_artefact(&completion, &cfg.signing_key, &cfg.key_ref)?;
                    effects.push(Effect::MarkBillSettled {
                        bill: b.key.clone(),
                        bill_digest: b.bill_digest,
                        transfer_id: post_id(&p.hold_id),
                    });
                    effects.push(evidence(EvidenceKind::Completion, &bytes));
                    effects.push(Effect::DeliverCompletion {
                        bill: b.key.clone(),
                        mall_id: b.mall_id.clone(),
                        completion: bytes.clone(),
                    });
                    acn = Some((b.clone(), bytes));
                }
            }
            Resolution::NotApplied => {
                let void = with_proof(TransferRequest::resolution(
                    void_id(&p.hold_id),
                    p.currency,
                    codes::RECOVERY,
                    TransferKind::VoidPending {
                        pending_id: p.hold_id,
                    },
                ));
                effects.push(Effect::Ledger(void));
                if let Some(b) = &p.bill {
                    effects.push(Effect::ReleaseBill {
                        bill: b.key.clone(),
                        hold_id: p.hold_id,
                    });
                }
            }
        }
        effects.push(Effect::ClearPendingOp {
            card_id: p.card_id.clone(),
            hold_id: p.hold_id,
        });
        Ok((effects, acn))
    }

    /// After the balance (and any recovery): issue the SPC or CREDIT under
    /// a ledger hold, or finish.
    #[allow(clippy::too_many_arguments)]
    fn proceed(
        &self,
        cfg: &HostConfig,
        mut session: HostSession,
        balance: BalanceInfo,
        last_digest: Digest,
        mut effects: Vec<Effect>,
        recovered: Recovered,
        msg: &CardResponses,
        now_ms: u64,
    ) -> Result<Transition, FlowError> {
        let card_id = self.card.card_id.clone();
        effects.push(Effect::UpdateShadow {
            card_id: card_id.clone(),
            shadow: Shadow {
                balance_minor: balance.balance_minor,
                counter: balance.counter,
            },
        });
        let currency = self.card.currency;
        let expires_at_ms = now_ms.saturating_add(cfg.hold_ttl_ms);
        match &self.purpose {
            Purpose::Purchase { bill } => {
                if let Some((b, acn)) = recovered
                    && b.key == bill.bill.key()
                {
                    // The lost PCN of this very bill was recovered from the
                    // card log: the bill is paid; hand the wallet its ACN.
                    return Ok(self.finish(
                        HostToWallet::Completion {
                            session_id: self.session_id,
                            acn,
                        },
                        msg,
                        effects,
                    ));
                }
                let amount = bill.bill.amount.amount_minor as u64;
                if balance.balance_minor < amount {
                    return Ok(self.finish(
                        HostToWallet::Aborted {
                            session_id: self.session_id,
                            reason: AbortReason::InsufficientBalance,
                        },
                        msg,
                        effects,
                    ));
                }
                let hold = hold_id(&self.session_id, &bill.digest);
                let command = session.wrap(&card_apdu::purse(
                    PurseOp::Debit,
                    amount,
                    currency.numeric(),
                    *hold.as_bytes(),
                    counterparty_tag(&bill.bill.store_id),
                ))?;
                let (reply, digest, bytes) = self.instruct(
                    cfg,
                    Stage::Debit,
                    command,
                    Some(balance.balance_minor),
                    Some(last_digest),
                    self.step + 1,
                )?;
                let op = PendingCardOp {
                    card_id: card_id.clone(),
                    op: PurseOp::Debit,
                    hold_id: hold,
                    amount_minor: amount,
                    currency,
                    counter_before: balance.counter,
                    balance_before_minor: balance.balance_minor,
                    bill: Some(PendingBill {
                        key: bill.bill.key(),
                        mall_id: bill.bill.mall_id.clone(),
                        bill_digest: bill.digest,
                        settlement_info_digest: digest,
                        payable_account: bill.payable_account.clone(),
                    }),
                    authorization_ref: None,
                };
                let hold_request = TransferRequest::pending(
                    hold,
                    currency,
                    codes::EMONEY_PAYMENT,
                    vec![
                        Leg::debit(self.card.emoney_account.clone(), amount as i64),
                        Leg::credit(bill.payable_account.clone(), amount as i64),
                    ],
                    expires_at_ms,
                )
                .with_evidence(EvidenceKind::Bill.label(), bill.digest)
                .with_evidence(EvidenceKind::SettlementInformation.label(), digest)
                .with_reference(format!(
                    "flow-b {} order {}",
                    bill.bill.store_id, bill.bill.order_id
                ));
                effects.push(evidence(EvidenceKind::Bill, &bill.bytes));
                effects.push(evidence(EvidenceKind::SettlementInformation, &bytes));
                effects.push(Effect::Ledger(hold_request));
                effects.push(Effect::ReserveBill {
                    bill: bill.bill.key(),
                    bill_digest: bill.digest,
                    hold_id: hold,
                });
                effects.push(Effect::RecordPendingOp(op.clone()));
                Ok(self.next(
                    Phase::AwaitPurse {
                        scp: ScpState::of(&session.state()?),
                        op: Box::new(op),
                        balance,
                        last_digest: digest,
                    },
                    reply,
                    effects,
                ))
            }
            Purpose::TopUp { authorization } => {
                let amount = authorization.amount().amount_minor as u64;
                if balance
                    .balance_minor
                    .checked_add(amount)
                    .is_none_or(|b| b > balance.purse_max_minor)
                {
                    return Ok(self.finish(
                        HostToWallet::Aborted {
                            session_id: self.session_id,
                            reason: AbortReason::PurseFull,
                        },
                        msg,
                        effects,
                    ));
                }
                let hold = hold_id(&self.session_id, &authorization.authorization_ref());
                let command = session.wrap(&card_apdu::purse(
                    PurseOp::Credit,
                    amount,
                    currency.numeric(),
                    *hold.as_bytes(),
                    TOP_UP_COUNTERPARTY,
                ))?;
                let (reply, digest, bytes) = self.instruct(
                    cfg,
                    Stage::Credit,
                    command,
                    Some(balance.balance_minor),
                    Some(last_digest),
                    self.step + 1,
                )?;
                let op = PendingCardOp {
                    card_id: card_id.clone(),
                    op: PurseOp::Credit,
                    hold_id: hold,
                    amount_minor: amount,
                    currency,
                    counter_before: balance.counter,
                    balance_before_minor: balance.balance_minor,
                    bill: None,
                    authorization_ref: Some(authorization.authorization_ref()),
                };
                let hold_request = TransferRequest::pending(
                    hold,
                    currency,
                    codes::EMONEY_TOP_UP,
                    vec![
                        Leg::debit(authorization.funding_account().clone(), amount as i64),
                        Leg::credit(self.card.emoney_account.clone(), amount as i64),
                    ],
                    expires_at_ms,
                )
                .with_evidence(EvidenceKind::ValueUpdate.label(), digest)
                .with_reference(format!("flow-b top-up {card_id}"));
                effects.push(evidence(EvidenceKind::ValueUpdate, &bytes));
                effects.push(Effect::Ledger(hold_request));
                effects.push(Effect::RecordPendingOp(op.clone()));
                Ok(self.next(
                    Phase::AwaitPurse {
                        scp: ScpState::of(&session.state()?),
                        op: Box::new(op),
                        balance,
                        last_digest: digest,
                    },
                    reply,
                    effects,
                ))
            }
        }
    }

    /// ST19: the PCN verified; post the hold, settle, sign the ACN (or
    /// finish the top-up).
    #[allow(clippy::too_many_arguments)]
    fn complete(
        &self,
        cfg: &HostConfig,
        op: &PendingCardOp,
        pcn: PcnVerified,
        info_digest: Digest,
        response: &[u8],
        msg: &CardResponses,
        now_ms: u64,
    ) -> Result<Transition, FlowError> {
        let post = post_id(&op.hold_id);
        let shadow = Shadow {
            balance_minor: pcn.entry.balance_after_minor,
            counter: pcn.entry.counter,
        };
        let mut effects = Vec::new();
        match &self.purpose {
            Purpose::Purchase { bill } => {
                effects.push(evidence(EvidenceKind::Pcn, response));
                effects.push(Effect::Ledger(
                    TransferRequest::resolution(
                        post,
                        op.currency,
                        codes::EMONEY_PAYMENT,
                        TransferKind::PostPending {
                            pending_id: op.hold_id,
                        },
                    )
                    .with_evidence(EvidenceKind::Pcn.label(), pcn.response_digest),
                ));
                effects.push(Effect::MarkBillSettled {
                    bill: bill.bill.key(),
                    bill_digest: bill.digest,
                    transfer_id: post,
                });
                effects.push(Effect::ClearPendingOp {
                    card_id: op.card_id.clone(),
                    hold_id: op.hold_id,
                });
                effects.push(Effect::UpdateShadow {
                    card_id: op.card_id.clone(),
                    shadow,
                });
                let completion = SettlementCompletion {
                    bill_digest: bill.digest,
                    store_id: bill.bill.store_id.clone(),
                    mall_id: bill.bill.mall_id.clone(),
                    order_id: bill.bill.order_id.clone(),
                    amount: bill.bill.amount,
                    card_id: op.card_id.clone(),
                    settlement_info_digest: info_digest,
                    pcn: PcnSummary {
                        counter: pcn.entry.counter,
                        balance_after_minor: pcn.entry.balance_after_minor,
                        reference: pcn.entry.reference,
                        digest: pcn.response_digest,
                    },
                    transfer_id: post,
                    recovered: false,
                    completed_at_ms: now_ms,
                };
                let acn = cose::sign_artefact(&completion, &cfg.signing_key, &cfg.key_ref)?;
                effects.push(evidence(EvidenceKind::Completion, &acn));
                Ok(self.finish(
                    HostToWallet::Completion {
                        session_id: self.session_id,
                        acn,
                    },
                    msg,
                    effects,
                ))
            }
            Purpose::TopUp { authorization } => {
                effects.push(evidence(EvidenceKind::CreditResponse, response));
                effects.push(Effect::Ledger(
                    TransferRequest::resolution(
                        post,
                        op.currency,
                        codes::EMONEY_TOP_UP,
                        TransferKind::PostPending {
                            pending_id: op.hold_id,
                        },
                    )
                    .with_evidence(EvidenceKind::CreditResponse.label(), pcn.response_digest),
                ));
                effects.push(Effect::ClearPendingOp {
                    card_id: op.card_id.clone(),
                    hold_id: op.hold_id,
                });
                effects.push(Effect::UpdateShadow {
                    card_id: op.card_id.clone(),
                    shadow,
                });
                Ok(self.finish(
                    HostToWallet::TopUpCompleted {
                        session_id: self.session_id,
                        summary: TopUpSummary {
                            amount: authorization.amount(),
                            balance_minor: shadow.balance_minor,
                            counter: shadow.counter,
                            transfer_id: post,
                        },
                    },
                    msg,
                    effects,
                ))
            }
        }
    }
}

fn single(msg: &CardResponses) -> Result<&[u8], FlowError> {
    match msg.responses.as_slice() {
        [r] => Ok(r),
        _ => Err(FlowError::CardResponse("expected one response")),
    }
}
