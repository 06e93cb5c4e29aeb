//! Driving the pure [`HostTxn`] from the database: loading and saving the
//! transaction (a `flow_support` session with optimistic versions), carrying
//! out its effects in the order the pure crate requires, and the timeout
//! sweeper.
//!
//! # Order of effects
//!
//! 1. Before the new state is saved: `StoreTransactionKey` (the key pair is
//!    durable before its public key can reach the phone) and
//!    `RecordPinFailure` (one atomic increment in the database, so a crash
//!    cannot forget a wrong PIN).
//! 2. The new state is saved together with an **outbox** of what must
//!    follow (messages to phone and merchant, key destruction, the
//!    destruction record), under the version read: if another request or
//!    process advanced the transaction first, nothing is sent and the caller
//!    gets 409.
//! 3. The outbox is carried out — every item idempotent (a message is queued
//!    once per recipient, a destroyed key stays destroyed, the destruction
//!    record is written once) — and cleared. A crash in between leaves the
//!    outbox in the database; the sweeper finishes it.
//! 4. `SettleInLedger` runs after the `Settling` state is saved; the
//!    ledger's answer goes to [`HostTxn::on_settlement`] and its effects
//!    through the same steps. The transfer id derives from the transaction,
//!    so a retried settlement never posts twice.

use kessai_flow_c::TxnId;
use kessai_flow_c::artefacts::{DeclineReason, Outcome, Signer};
use kessai_flow_c::host::{
    CustomerPhone, DestructionRecord, Effect, HostConfig, HostEnv, HostState, HostTxn,
    MerchantRecord, MerchantStatus, PhoneMessage,
};
use kessai_flow_c::{ArtefactDigest, FlowError};
use kessai_ids::{AccountId, DeviceId, KeyId, KeyRef, StoreId};
use kessai_ledger::{Applied, LedgerError};
use kessai_pin::PinVerificationKey;
use kessai_store::registry::{self, KeyState};
use kessai_store::{evidence, flow_c as store, flow_support};
use serde::{Deserialize, Serialize};

use super::secrets;
use super::wire::{self, TxnView};
use crate::problem::ApiError;
use crate::state::AppState;

/// The `flow_support` session flow name.
pub const FLOW: &str = "flow-c";
/// Once-marker scope of accepted ciphertexts (replay refusal).
pub const CIPHERTEXT_SCOPE: &str = "flowc-ciphertext";
/// Once-marker scope of written destruction records.
const DESTRUCTION_SCOPE: &str = "flowc-destruction";
/// Audit-log kind of a destruction record (S26).
pub const DESTRUCTION_EVENT: &str = "flowc.txn_keys_destroyed";
/// How long a settlement or outbox may stay unfinished before the sweeper
/// takes it over from a request that may have crashed.
const TAKEOVER_MS: i64 = 30_000;

pub(super) fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(&e)
}

pub(super) fn now_ms(app: &AppState) -> u64 {
    u64::try_from(app.clock.now_ms()).unwrap_or(0)
}

/// The session id of a transaction.
pub fn session_id(txn_id: &TxnId) -> String {
    format!("flowc:{txn_id}")
}

/// The evidence subject of a transaction (what `evidence_export` takes).
pub fn evidence_subject(txn_id: &TxnId) -> String {
    session_id(txn_id)
}

/// The attempt-counter subject of a card's PIN.
pub fn pin_subject(card_id: &str) -> String {
    format!("flowc-pin:{card_id}")
}

/// What must happen after a state was saved.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "do", rename_all = "snake_case")]
pub(super) enum Outbox {
    /// Queue a signed artefact for a phone or a merchant (and keep it as
    /// evidence).
    Message {
        recipient: String,
        kind: String,
        artefact: String,
    },
    /// Delete the transaction key pair.
    DestroyKey { key_ref: String },
    /// Write the destruction record and purge the transaction's
    /// ciphertexts from the evidence store.
    Destruction { record: DestructionRecord },
}

/// The stored transaction.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Stored {
    pub txn: HostTxn,
    #[serde(default)]
    pub outbox: Vec<Outbox>,
}

/// A transaction read at a version.
#[derive(Debug, Clone)]
pub(super) struct Loaded {
    pub stored: Stored,
    pub version: i64,
}

/// The keys every step needs.
pub(super) struct Keys {
    pub signer: Signer,
    pub pvk: PinVerificationKey,
    pub config: HostConfig,
}

impl Keys {
    pub fn env(&self) -> HostEnv<'_> {
        HostEnv {
            signer: &self.signer,
            config: &self.config,
            pin_verification_key: &self.pvk,
        }
    }
}

/// The host's signer, the active PIN verification key and the settings.
pub(super) async fn keys(app: &AppState) -> Result<Keys, ApiError> {
    let (key_ref, key) = app.keys.host_signer().await.map_err(internal)?;
    let master = secrets::active_card_master(app).await?;
    Ok(Keys {
        signer: Signer::new(key, key_ref),
        pvk: secrets::pin_verification_key(app, &master).await?,
        config: app.settings.flow_c.host,
    })
}

/// Loads a transaction.
pub(super) async fn load(app: &AppState, txn_id: &TxnId) -> Result<Option<Loaded>, ApiError> {
    let Some(s) = flow_support::load_session(&app.db, &session_id(txn_id))
        .await
        .map_err(internal)?
    else {
        return Ok(None);
    };
    if s.flow != FLOW {
        return Ok(None);
    }
    let stored: Stored =
        serde_json::from_str(&s.state).map_err(|_| internal("stored flow C state is corrupt"))?;
    Ok(Some(Loaded {
        stored,
        version: s.version,
    }))
}

/// When the sweeper must look at the transaction next.
fn due_at(stored: &Stored, now: i64) -> i64 {
    if !stored.outbox.is_empty() || matches!(stored.txn.state(), HostState::Settling { .. }) {
        return now.saturating_add(TAKEOVER_MS);
    }
    stored
        .txn
        .deadline_ms()
        .and_then(|d| i64::try_from(d).ok())
        .unwrap_or(i64::MAX)
}

async fn save(
    app: &AppState,
    stored: &Stored,
    version: Option<i64>,
) -> Result<Option<i64>, ApiError> {
    let now = app.clock.now_ms();
    let id = session_id(&stored.txn.txn_id());
    let json = serde_json::to_string(stored).map_err(internal)?;
    let due = due_at(stored, now);
    let ok = match version {
        None => flow_support::create_session(&app.db, &id, FLOW, &json, now, due).await,
        Some(v) => flow_support::save_session(&app.db, &id, v, &json, now, due).await,
    }
    .map_err(internal)?;
    Ok(ok.then(|| version.map_or(1, |v| v + 1)))
}

fn busy() -> ApiError {
    ApiError::conflict(
        "transaction-busy",
        "The transaction was advanced by another request",
    )
    .with_detail("reload its state and retry")
}

/// Evidence binds of an artefact of `kind`, from the transaction's digests.
fn binds_of(txn: &HostTxn, kind: &str) -> Vec<[u8; 32]> {
    let c = txn.context();
    let one = |d: Option<ArtefactDigest>| d.map(|d| d.0).into_iter().collect::<Vec<_>>();
    match kind {
        "flowc-approval-request" => vec![c.payment_request.0],
        "flowc-approval-response" => vec![c.approval_request.0],
        "flowc-transaction-key" => one(c.approval_response),
        "flowc-card-data" => one(c.transaction_key),
        "flowc-pin-prompt" => one(c.card_data),
        "flowc-pin-block" => c
            .card_data
            .into_iter()
            .chain(c.pin_prompt)
            .map(|d| d.0)
            .collect(),
        "flowc-completion-phone" => vec![c.approval_request.0],
        "flowc-completion-merchant" => vec![c.payment_request.0],
        _ => Vec::new(),
    }
}

/// Keeps an artefact of the transaction in the evidence store. Ciphertexts
/// (`ciphertext = true`) are due for purging at once: the destruction at
/// the end of the transaction purges their bytes, leaving digest tombstones
/// the ledger's evidence links still resolve to.
pub(super) async fn keep_evidence(
    app: &AppState,
    txn: &HostTxn,
    bytes: &[u8],
    ciphertext: bool,
) -> Result<(), ApiError> {
    let peeked = kessai_crypto::cose::peek(bytes).map_err(|_| internal("unreadable artefact"))?;
    let kind = peeked.type_name().unwrap_or("unknown").to_owned();
    let signer = if ciphertext {
        String::new()
    } else {
        peeked.kid.to_string()
    };
    let now = app.clock.now_ms();
    let retention = app.settings.flow_c.evidence_retention_ms;
    let purge_after = if ciphertext {
        now
    } else {
        now.saturating_add(retention)
    };
    evidence::put(
        &app.db,
        &evidence::NewEvidence {
            kind: &kind,
            subject: &evidence_subject(&txn.txn_id()),
            signer: &signer,
            binds: &binds_of(txn, &kind),
            bytes,
            now_ms: now,
            purge_after_ms: Some(purge_after),
        },
    )
    .await
    .map_err(internal)?;
    Ok(())
}

fn message_kind(m: &PhoneMessage) -> (&'static str, &[u8]) {
    match m {
        PhoneMessage::ApprovalRequest(b) => ("approval_request", b),
        PhoneMessage::TransactionKey(b) => ("transaction_key", b),
        PhoneMessage::PinPrompt(b) => ("pin_prompt", b),
        PhoneMessage::Completion(b) => ("completion", b),
    }
}

/// Saves `txn` (read at `version`; `None`: a new transaction) and carries
/// out `effects` (see the module docs). Returns the saved transaction.
pub(super) async fn commit(
    app: &AppState,
    keys: &Keys,
    version: Option<i64>,
    txn: HostTxn,
    effects: Vec<Effect>,
) -> Result<HostTxn, ApiError> {
    let now = app.clock.now_ms();
    let txn_hex = txn.txn_id().to_string();
    let mut stored_key = None;
    let mut outbox = Vec::new();
    let mut settle = None;
    for e in effects {
        match e {
            Effect::StoreTransactionKey { key_ref, key_pair } => {
                if !secrets::store_txn_key(app, &txn_hex, &key_ref, &key_pair).await? {
                    return Err(busy());
                }
                stored_key = Some(key_ref);
            }
            Effect::RecordPinFailure { card_id } => {
                let max = i64::from(keys.config.max_pin_tries);
                let a =
                    flow_support::record_failure(&app.db, &pin_subject(card_id.as_str()), max, now)
                        .await
                        .map_err(internal)?;
                tracing::info!(card = %card_id, failures = a.failures, locked = a.locked, "flow C: wrong PIN");
                if a.locked {
                    kessai_store::audit_log::append(
                        &app.db,
                        now,
                        "flowc.pin_locked",
                        card_id.as_str(),
                        &serde_json::json!({ "failures": a.failures }),
                    )
                    .await
                    .map_err(internal)?;
                }
            }
            // Done by the PIN handler before the step is committed (it
            // must refuse a correct PIN on a card locked meanwhile).
            Effect::ResetPinFailures { .. } => {}
            Effect::SettleInLedger(t) => settle = Some(t),
            Effect::SendToPhone { device_id, message } => {
                let (kind, bytes) = message_kind(&message);
                outbox.push(Outbox::Message {
                    recipient: wire::phone_party(device_id.as_str()),
                    kind: kind.to_owned(),
                    artefact: wire::b64(bytes),
                });
            }
            Effect::NotifyMerchant {
                merchant_id,
                completion,
            } => outbox.push(Outbox::Message {
                recipient: wire::merchant_party(merchant_id.as_str()),
                kind: "completion".to_owned(),
                artefact: wire::b64(&completion),
            }),
            Effect::DestroyTransactionKey { key_ref } => outbox.push(Outbox::DestroyKey {
                key_ref: key_ref.to_string(),
            }),
            Effect::RecordDestruction(record) => outbox.push(Outbox::Destruction { record }),
        }
    }
    let mut stored = Stored { txn, outbox };
    let Some(version) = save(app, &stored, version).await? else {
        if let Some(k) = stored_key {
            store::destroy_txn_key(&app.db, &k.to_string())
                .await
                .map_err(internal)?;
        }
        return Err(busy());
    };
    let version = drain(app, &mut stored, version).await?;
    if let Some(transfer) = settle {
        let result = submit(app, transfer).await?;
        let mut txn = stored.txn.clone();
        let effects = txn
            .on_settlement(&result, &keys.env(), now_ms(app))
            .map_err(|e| flow_error(&e))?;
        return Box::pin(commit(app, keys, Some(version), txn, effects)).await;
    }
    Ok(stored.txn)
}

/// Submits the settlement transfer and hands back the ledger's answer in
/// the pure crate's terms.
async fn submit(
    app: &AppState,
    transfer: kessai_ledger::TransferRequest,
) -> Result<Result<Applied, LedgerError>, ApiError> {
    match app.db.ledger().submit(transfer, now_ms(app)).await {
        Err(e) => Err(internal(e)),
        Ok(Err(e)) => {
            app.metrics.ledger_outcome(e.code());
            Ok(Err(e))
        }
        Ok(Ok(r)) => {
            app.metrics
                .ledger_outcome(if r.replayed { "replayed" } else { "created" });
            Ok(Ok(Applied::AlreadyExists(r.record)))
        }
    }
}

/// Carries out and clears the outbox; returns the current version.
async fn drain(app: &AppState, stored: &mut Stored, version: i64) -> Result<i64, ApiError> {
    if stored.outbox.is_empty() {
        return Ok(version);
    }
    let now = app.clock.now_ms();
    let txn_hex = stored.txn.txn_id().to_string();
    for item in &stored.outbox {
        match item {
            Outbox::Message {
                recipient,
                kind,
                artefact,
            } => {
                let bytes = wire::unb64(artefact, "artefact")?;
                store::enqueue_message(&app.db, recipient, &txn_hex, kind, &bytes, now)
                    .await
                    .map_err(internal)?;
                keep_evidence(app, &stored.txn, &bytes, false).await?;
            }
            Outbox::DestroyKey { key_ref } => {
                store::destroy_txn_key(&app.db, key_ref)
                    .await
                    .map_err(internal)?;
            }
            Outbox::Destruction { record } => {
                let marker = record.txn_id.as_bytes();
                if !flow_support::was_used(&app.db, DESTRUCTION_SCOPE, marker)
                    .await
                    .map_err(internal)?
                {
                    let detail = serde_json::to_value(record).map_err(internal)?;
                    kessai_store::audit_log::append(
                        &app.db,
                        now,
                        DESTRUCTION_EVENT,
                        &session_id(&record.txn_id),
                        &detail,
                    )
                    .await
                    .map_err(internal)?;
                    flow_support::use_once(&app.db, DESTRUCTION_SCOPE, marker, now)
                        .await
                        .map_err(internal)?;
                    tracing::info!(txn = %record.txn_id, items = record.items.len(), "flow C: transaction key and ciphertexts destroyed");
                }
                // The transaction's ciphertexts were kept due at once.
                evidence::purge_due(&app.db, now).await.map_err(internal)?;
            }
        }
    }
    stored.outbox.clear();
    // Losing this race only means someone else drained too (idempotent).
    Ok(save(app, stored, Some(version)).await?.unwrap_or(version))
}

/// What one sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Transactions declined because their deadline passed.
    pub timed_out: usize,
    /// Unfinished settlements or outboxes taken over and finished.
    pub resumed: usize,
}

/// Declines every flow C transaction whose deadline has passed (S5, S8,
/// S17 → decline to both sides and destruction), and finishes settlements
/// and outboxes a crashed request left behind. Call it from a timer; every
/// flow C request calls it first too.
pub async fn sweep_timeouts(app: &AppState) -> Result<SweepReport, ApiError> {
    let now = app.clock.now_ms();
    let due = flow_support::expired_sessions(&app.db, FLOW, now, 100)
        .await
        .map_err(internal)?;
    let mut report = SweepReport::default();
    if due.is_empty() {
        return Ok(report);
    }
    let keys = keys(app).await?;
    for s in due {
        let Ok(mut stored) = serde_json::from_str::<Stored>(&s.state) else {
            tracing::error!(session = %s.id, "flow C: corrupt session skipped");
            continue;
        };
        match sweep_one(app, &keys, &mut stored, s.version).await {
            Ok(Some(r)) => match r {
                Swept::TimedOut => report.timed_out += 1,
                Swept::Resumed => report.resumed += 1,
            },
            Ok(None) => {}
            // Another request advanced it meanwhile: its business now.
            Err(e) if e.slug() == "transaction-busy" => {}
            Err(e) => return Err(e),
        }
    }
    Ok(report)
}

enum Swept {
    TimedOut,
    Resumed,
}

async fn sweep_one(
    app: &AppState,
    keys: &Keys,
    stored: &mut Stored,
    version: i64,
) -> Result<Option<Swept>, ApiError> {
    let had_outbox = !stored.outbox.is_empty();
    let version = drain(app, stored, version).await?;
    if let HostState::Settling { transfer, .. } = stored.txn.state() {
        let result = submit(app, transfer.clone()).await?;
        let mut txn = stored.txn.clone();
        let effects = txn
            .on_settlement(&result, &keys.env(), now_ms(app))
            .map_err(|e| flow_error(&e))?;
        commit(app, keys, Some(version), txn, effects).await?;
        return Ok(Some(Swept::Resumed));
    }
    let mut txn = stored.txn.clone();
    let effects = txn
        .on_timeout(&keys.env(), now_ms(app))
        .map_err(|e| flow_error(&e))?;
    if effects.is_empty() {
        if had_outbox {
            return Ok(Some(Swept::Resumed));
        }
        // Terminal or not yet due: park it until its next deadline.
        save(app, stored, Some(version)).await?;
        return Ok(None);
    }
    tracing::info!(txn = %txn.txn_id(), "flow C: deadline passed, declined");
    commit(app, keys, Some(version), txn, effects).await?;
    Ok(Some(Swept::TimedOut))
}

/// A step said `DeadlinePassed`: decline now (same as the sweeper would).
pub(super) async fn time_out_now(app: &AppState, keys: &Keys, loaded: Loaded) -> ApiError {
    let mut txn = loaded.stored.txn.clone();
    match txn.on_timeout(&keys.env(), now_ms(app)) {
        Ok(effects) if !effects.is_empty() => {
            if let Err(e) = commit(app, keys, Some(loaded.version), txn, effects).await
                && e.slug() != "transaction-busy"
            {
                return e;
            }
        }
        Ok(_) => {}
        Err(e) => return flow_error(&e),
    }
    flow_error(&FlowError::DeadlinePassed)
}

/// Maps a refused step to a problem (never echoing the input).
pub fn flow_error(e: &FlowError) -> ApiError {
    use axum::http::StatusCode;
    match e {
        FlowError::Artefact { what, .. } => {
            ApiError::bad_request("artefact-refused", "Artefact refused")
                .with_detail(format!("{what} did not verify or open"))
        }
        FlowError::UnknownMerchant | FlowError::MerchantSuspended | FlowError::MerchantMismatch => {
            ApiError::new(
                StatusCode::FORBIDDEN,
                "merchant-declined",
                "Declined: the merchant is not accepted",
            )
            .with_detail("unknown or suspended merchant, or a request not signed by its key (S9)")
        }
        FlowError::RequestExpired => {
            ApiError::unprocessable("payment-request-expired", "Payment request expired")
        }
        FlowError::AmountNotPositive => {
            ApiError::unprocessable("invalid-amount", "Amount must be positive")
        }
        FlowError::CurrencyMismatch => ApiError::unprocessable(
            "currency-mismatch",
            "Currency is not the merchant's settlement currency",
        ),
        FlowError::UnknownCustomer => {
            ApiError::unprocessable("unknown-customer", "No phone registered for the customer")
        }
        FlowError::OrderReferenceConflict => ApiError::conflict(
            "order-reference-conflict",
            "Order reference already used with different content",
        ),
        FlowError::MalformedField(f) => {
            ApiError::unprocessable("malformed-field", "Malformed field").with_detail(*f)
        }
        FlowError::InvalidTxnId => ApiError::not_found("transaction"),
        FlowError::WrongTransaction => ApiError::unprocessable(
            "wrong-transaction",
            "Artefact belongs to another transaction",
        ),
        FlowError::DigestMismatch(w) => {
            ApiError::unprocessable("digest-mismatch", "Bound digest does not match")
                .with_detail(*w)
        }
        FlowError::UnexpectedStep { state } => {
            ApiError::conflict("unexpected-step", "Step not expected now")
                .with_detail(format!("the transaction is {state}"))
        }
        FlowError::TransactionEnded | FlowError::TransactionKeyDestroyed => ApiError::conflict(
            "transaction-ended",
            "The transaction has ended; its key is destroyed",
        ),
        FlowError::DeadlinePassed => ApiError::conflict(
            "deadline-passed",
            "The deadline passed; the transaction is declined",
        ),
        FlowError::WrongPhone => ApiError::new(
            StatusCode::FORBIDDEN,
            "wrong-phone",
            "Not signed by the customer's registered phone",
        ),
        other => ApiError::unprocessable("flow-refused", "Refused").with_detail(other.to_string()),
    }
}

/// The state of a transaction as its merchant may see it.
pub(super) async fn view(
    app: &AppState,
    txn: &HostTxn,
    with_completion: bool,
) -> Result<TxnView, ApiError> {
    let c = txn.context();
    let decline_reason = match txn.state() {
        HostState::Declined { reason, .. } => Some(reason_code(&reason.for_merchant())),
        _ => None,
    };
    let completion = if with_completion && txn.state().is_terminal() {
        store::messages_for_txn(
            &app.db,
            &wire::merchant_party(c.merchant_id.as_str()),
            &txn.txn_id().to_string(),
        )
        .await
        .map_err(internal)?
        .into_iter()
        .rfind(|m| m.kind == "completion")
        .map(|m| wire::b64(&m.artefact))
    } else {
        None
    };
    Ok(TxnView {
        txn_id: txn.txn_id().to_string(),
        state: txn.state().name().to_owned(),
        merchant_id: c.merchant_id.to_string(),
        order_ref: c.order_ref.to_string(),
        amount_minor: c.amount.amount_minor,
        currency: c.amount.currency.code().to_owned(),
        deadline_ms: txn.deadline_ms(),
        decline_reason,
        completion,
    })
}

/// A decline reason's stable text (`pin_incorrect`, `approval_timeout`, ...).
pub fn reason_code(r: &DeclineReason) -> String {
    match serde_json::to_value(r) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(serde_json::Value::Object(m)) => m.keys().next().cloned().unwrap_or_default(),
        _ => String::new(),
    }
}

/// The outcome's stable text.
pub fn outcome_code(o: &Outcome) -> String {
    match o {
        Outcome::Settled { .. } => "settled".to_owned(),
        Outcome::Declined { reason } => format!("declined:{}", reason_code(reason)),
    }
}

/// The merchant-table row for the key that signed a request (S2), or
/// `None` (unknown merchant, unknown or retired key version, or a merchant
/// without its own payable account).
pub(super) async fn merchant_record(
    app: &AppState,
    kid: &KeyRef,
) -> Result<Option<MerchantRecord>, ApiError> {
    let Ok(store_id) = StoreId::new(kid.id.as_str()) else {
        return Ok(None);
    };
    let Some(m) = registry::merchant(&app.db, &store_id)
        .await
        .map_err(internal)?
    else {
        return Ok(None);
    };
    let Some(payable) = m.payable_account.clone() else {
        return Ok(None);
    };
    let keys = registry::merchant_keys(&app.db, &store_id)
        .await
        .map_err(internal)?;
    let Some(k) = keys
        .iter()
        .find(|k| k.version == kid.version && k.state != KeyState::Retired)
    else {
        return Ok(None);
    };
    let Ok(pk) = <[u8; 32]>::try_from(k.public_key.as_slice()) else {
        return Ok(None);
    };
    let Ok(key) = kessai_crypto::sign::VerifyingKey::from_bytes(&pk) else {
        return Ok(None);
    };
    Ok(Some(MerchantRecord {
        store_id,
        display_name: m.name.clone(),
        status: match m.status {
            registry::MerchantStatus::Active => MerchantStatus::Active,
            registry::MerchantStatus::Suspended => MerchantStatus::Suspended,
        },
        key_ref: kid.clone(),
        key,
        payable_account: payable,
        currency: m.currency,
    }))
}

/// A merchant's registered verifying key by ref (channel auth).
pub(super) async fn merchant_key(
    app: &AppState,
    kid: &KeyRef,
) -> Result<Option<kessai_crypto::sign::VerifyingKey>, ApiError> {
    Ok(merchant_record(app, kid).await?.map(|m| m.key))
}

/// A registered phone as the pure crate needs it (`None`: unknown or
/// suspended).
pub(super) fn customer_phone(row: &store::PhoneRow) -> Option<CustomerPhone> {
    if row.status != "active" {
        return None;
    }
    let device_id = DeviceId::new(row.device_id.as_str()).ok()?;
    let key_ref = device_key_ref(&row.device_id, row.key_version)?;
    let pk: [u8; 32] = row.public_key.as_slice().try_into().ok()?;
    let key = kessai_crypto::sign::VerifyingKey::from_bytes(&pk).ok()?;
    Some(CustomerPhone {
        device_id,
        key_ref,
        key,
    })
}

/// `<device id>#<version>`.
pub fn device_key_ref(device_id: &str, version: i64) -> Option<KeyRef> {
    KeyRef::new(KeyId::new(device_id).ok()?, u32::try_from(version).ok()?).ok()
}

/// The funding account of a card row.
pub(super) fn funding_account(row: &store::CardRow) -> Result<AccountId, ApiError> {
    AccountId::new(row.funding_account.as_str()).map_err(|_| internal("corrupt card row"))
}
