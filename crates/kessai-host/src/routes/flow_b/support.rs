//! Flow B plumbing between the pure protocol and the database: loading the
//! rows the flow needs (merchants, cards, pending operations), building
//! the host's [`HostConfig`] from the key store, committing a step's
//! [`Effect`]s atomically with the session, and submitting the queued
//! ledger requests.

use kessai_crypto::digest::sha256;
use kessai_crypto::sign::VerifyingKey;
use kessai_flow_b::Effect;
use kessai_flow_b::FlowError;
use kessai_flow_b::artefacts::EvidenceKind;
use kessai_flow_b::host::{CardSession, HostConfig, Transition};
use kessai_flow_b::messages::HostToWallet;
use kessai_flow_b::registry::{
    CardRecord, CardStatus, KeyDirectory, MallRecord, MerchantStatus, PendingCardOp, Shadow,
    StoreRecord,
};
use kessai_ids::{CardId, KeyRef, MallId, StoreId};
use kessai_ledger::TransferRequest;
use kessai_pin::{PinKey, PinVerificationKey};
use kessai_scp03::AesKey;
use kessai_secrets::{CardNumber, SecretKey};
use kessai_store::flow_b::{self as store, StepOp, StepRefusal};
use kessai_store::flow_support::StoredSession;
use kessai_store::registry::{self, KeyState, MerchantKind};

use super::Settings;
use crate::keystore::KeyPurpose;
use crate::problem::ApiError;
use crate::state::AppState;

/// Now, unix ms, from the injected clock.
pub fn now_ms(app: &AppState) -> u64 {
    u64::try_from(app.clock.now_ms()).unwrap_or(0)
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The evidence subject of a bill.
pub fn bill_subject(store_id: &str, order_id: &str) -> String {
    format!("flow-b/bill/{store_id}/{order_id}")
}

/// The evidence subject of a top-up session.
pub fn top_up_subject(session_id: &[u8; 16]) -> String {
    format!("flow-b/top-up/{}", hex::encode(session_id))
}

/// Maps a flow refusal to a problem (details never carry secrets: the
/// flow's messages name only rules).
pub fn flow_error(e: &FlowError) -> ApiError {
    use FlowError as F;
    let (status, slug, title) = match e {
        F::Cose(_) => (
            422,
            "signature-invalid",
            "Signature or artefact check failed",
        ),
        F::StoreMismatch | F::NotMallMember => {
            (422, "unknown-merchant", "Bill names an unknown merchant")
        }
        F::MerchantNotActive(_) => (422, "merchant-not-active", "Merchant may not take payments"),
        F::BillExpired => (422, "bill-expired", "Bill has expired"),
        F::InvalidAmount => (422, "invalid-amount", "Amount must be positive"),
        F::BillAlreadySettled => (409, "bill-already-settled", "Bill already settled"),
        F::BillInFlight => (409, "bill-in-flight", "Bill is being settled"),
        F::CardBlocked => (422, "card-blocked", "Card is blocked"),
        F::CurrencyMismatch => (422, "currency-mismatch", "Currency mismatch"),
        F::CardMismatch => (422, "card-mismatch", "Card does not match the session"),
        F::OutOfSequence => (409, "out-of-sequence", "Message does not fit the session"),
        F::UnexpectedMessage(_) => (409, "unexpected-message", "Unexpected message"),
        F::SessionTimedOut => (422, "session-timed-out", "Card session timed out"),
        F::Scp03(_) => (422, "secure-channel-failed", "Secure channel check failed"),
        F::CardStatus(_) => (422, "card-error", "Card returned an error status"),
        F::CardResponse(_) | F::PcnMismatch(_) => {
            (422, "card-response-invalid", "Card response does not match")
        }
        F::ShadowMismatch => (
            409,
            "card-state-mismatch",
            "Card state disagrees with the host",
        ),
        F::RecoveryUndecidable => (409, "recovery-undecidable", "Card log does not decide"),
        F::AlreadyCompleted => (409, "session-completed", "Session already completed"),
        F::PinLocked => (422, "pin-locked", "PIN is locked"),
        F::WrongPin { .. } => (422, "wrong-pin", "Wrong PIN"),
        F::FundingCardRefused => (422, "funding-card-refused", "Funding card refused"),
        F::OverCreditLimit => (422, "over-credit-limit", "Over the credit limit"),
        F::Malformed(_) => (400, "malformed-artefact", "Malformed artefact"),
        _ => (422, "flow-refused", "Refused"),
    };
    let status = axum::http::StatusCode::from_u16(status)
        .unwrap_or(axum::http::StatusCode::UNPROCESSABLE_ENTITY);
    ApiError::new(status, slug, title).with_detail(e.to_string())
}

/// A database failure as a 500.
pub fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(&e)
}

fn merchant_status(s: registry::MerchantStatus) -> MerchantStatus {
    match s {
        registry::MerchantStatus::Active => MerchantStatus::Active,
        registry::MerchantStatus::Suspended => MerchantStatus::Suspended,
    }
}

/// The non-retired signing keys of a store or mall, by `id#version`.
pub async fn merchant_key_directory(
    app: &AppState,
    id: &StoreId,
) -> Result<KeyDirectory, ApiError> {
    let mut dir = KeyDirectory::new();
    for k in registry::merchant_keys(&app.db, id)
        .await
        .map_err(internal)?
    {
        if k.state == KeyState::Retired {
            continue;
        }
        let Ok(pk) = <[u8; 32]>::try_from(k.public_key.as_slice()) else {
            continue;
        };
        let (Ok(vk), Ok(r)) = (
            VerifyingKey::from_bytes(&pk),
            format!("{id}#{}", k.version).parse::<KeyRef>(),
        ) else {
            continue;
        };
        dir = dir.with(r, vk);
    }
    Ok(dir)
}

/// The registry rows of a store (and its mall). An unknown store or mall
/// comes back closed with no keys, so verification refuses it.
pub async fn merchant_rows(
    app: &AppState,
    store_id: &StoreId,
    mall_id: Option<&MallId>,
) -> Result<(StoreRecord, Option<MallRecord>), ApiError> {
    let unknown = || StoreRecord {
        store_id: store_id.clone(),
        status: MerchantStatus::Closed,
        keys: KeyDirectory::new(),
        payable_account: "unknown.payable"
            .parse()
            .expect("static account id is valid"),
        mall_id: None,
    };
    let store = match registry::merchant(&app.db, store_id)
        .await
        .map_err(internal)?
    {
        Some(m) if m.kind != MerchantKind::Mall => match &m.payable_account {
            Some(payable) => StoreRecord {
                store_id: store_id.clone(),
                status: merchant_status(m.status),
                keys: if m.kind == MerchantKind::Store {
                    merchant_key_directory(app, store_id).await?
                } else {
                    KeyDirectory::new()
                },
                payable_account: payable.clone(),
                mall_id: m.mall_id.as_ref().and_then(|x| x.as_str().parse().ok()),
            },
            None => unknown(),
        },
        _ => unknown(),
    };
    let mall = match mall_id {
        None => None,
        Some(mid) => {
            let sid: StoreId = mid
                .as_str()
                .parse()
                .map_err(|_| ApiError::unprocessable("unknown-merchant", "Unknown mall"))?;
            match registry::merchant(&app.db, &sid).await.map_err(internal)? {
                Some(m) if m.kind == MerchantKind::Mall => Some(MallRecord {
                    mall_id: mid.clone(),
                    status: merchant_status(m.status),
                    keys: merchant_key_directory(app, &sid).await?,
                }),
                _ => Some(MallRecord {
                    mall_id: mid.clone(),
                    status: MerchantStatus::Closed,
                    keys: KeyDirectory::new(),
                }),
            }
        }
    };
    Ok((store, mall))
}

/// A card as the flow sees it, and the master key version its keys come
/// from.
pub async fn card_record(
    app: &AppState,
    card_id: &CardId,
) -> Result<(CardRecord, KeyRef), ApiError> {
    let rec = kessai_store::cards::card(&app.db, card_id)
        .await
        .map_err(internal)?
        .ok_or_else(|| ApiError::not_found("card"))?;
    let pending = match store::pending_op(&app.db, card_id.as_str())
        .await
        .map_err(internal)?
    {
        Some(json) => Some(serde_json::from_str::<PendingCardOp>(&json).map_err(internal)?),
        None => None,
    };
    Ok((
        CardRecord {
            card_id: rec.card_id.clone(),
            currency: rec.currency,
            key_version: rec.key_version,
            emoney_account: rec.emoney_account.clone(),
            status: if rec.blocked {
                CardStatus::Blocked
            } else {
                CardStatus::Active
            },
            shadow: Shadow {
                balance_minor: u64::try_from(rec.shadow_balance_minor).unwrap_or(0),
                counter: u32::try_from(rec.shadow_counter).unwrap_or(0),
            },
            pending,
        },
        rec.master_key_ref,
    ))
}

/// Keys derived from one issuer card master key version for the funding
/// cards: the card-number index key and the PIN verification key.
pub struct FundingKeys {
    index_key: SecretKey<32>,
    /// PIN verification key.
    pub pvk: PinVerificationKey,
}

impl std::fmt::Debug for FundingKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FundingKeys(redacted)")
    }
}

impl FundingKeys {
    /// Derives both from a card master key.
    pub fn derive(master: &SecretKey<16>) -> Self {
        let index = sha256(&[b"kessai/flow-b/pan-index/v1\0", master.expose()]);
        let pvk = sha256(&[b"kessai/flow-b/pin-verification/v1\0", master.expose()]);
        Self {
            index_key: SecretKey::new(index),
            pvk: PinVerificationKey::new(SecretKey::new(pvk)),
        }
    }

    /// Keyed hash of a card number (fixed-length key prefix).
    pub fn pan_index(&self, pan: &CardNumber) -> [u8; 32] {
        sha256(&[self.index_key.expose(), pan.expose_digits()])
    }
}

/// The funding keys of every usable card master key version.
pub async fn funding_key_versions(app: &AppState) -> Result<Vec<(KeyRef, FundingKeys)>, ApiError> {
    let mut out = Vec::new();
    for k in app.keys.list().await.map_err(internal)? {
        if k.purpose != KeyPurpose::CardMaster || k.state == "retired" {
            continue;
        }
        let master = app
            .keys
            .card_master_version(&k.key_ref)
            .await
            .map_err(internal)?;
        out.push((k.key_ref, FundingKeys::derive(&master)));
    }
    Ok(out)
}

/// The host's flow-B configuration for a card issued under `master_ref`.
/// `pin_key` is the wallet's format-4 PIN key of a top-up (a fresh random
/// one otherwise: no PIN block is read then).
pub async fn host_config(
    app: &AppState,
    settings: &Settings,
    master_ref: &KeyRef,
    pin_key: Option<PinKey>,
    pvk: Option<PinVerificationKey>,
) -> Result<HostConfig, ApiError> {
    let (key_ref, signing_key) = app.keys.host_signer().await.map_err(internal)?;
    let master = app
        .keys
        .card_master_version(master_ref)
        .await
        .map_err(internal)?;
    let random_key = || {
        let mut b = zeroize::Zeroizing::new([0u8; 32]);
        rand::fill(&mut b[..]);
        b
    };
    let pin_key = match pin_key {
        Some(k) => k,
        None => PinKey::from_slice(&random_key()[..16]).map_err(internal)?,
    };
    let pin_verification_key =
        pvk.unwrap_or_else(|| PinVerificationKey::new(SecretKey::new(*random_key())));
    Ok(HostConfig {
        signing_key,
        key_ref,
        card_master_key: AesKey::Aes128(*master.expose()),
        sig2: settings.sig2,
        session_timeout_ms: settings.session_timeout_ms,
        hold_ttl_ms: settings.hold_ttl_ms,
        pin_key,
        pin_verification_key,
        max_pin_tries: settings.max_pin_tries,
    })
}

/// Loads a flow-B session.
pub async fn load_session(
    app: &AppState,
    id: &str,
) -> Result<(StoredSession, CardSession), ApiError> {
    let stored = kessai_store::flow_support::load_session(&app.db, id)
        .await
        .map_err(internal)?
        .filter(|s| s.flow == store::FLOW)
        .ok_or_else(|| ApiError::not_found("card session"))?;
    let session: CardSession = serde_json::from_str(&stored.state).map_err(internal)?;
    Ok((stored, session))
}

/// How long a finished session row is kept after its deadline (duplicate
/// final messages are answered from it).
const SESSION_KEEP_MS: u64 = 86_400_000;

/// Creates the row of a new session.
pub async fn create_session(app: &AppState, t: &Transition) -> Result<(), ApiError> {
    let id = hex::encode(t.session.session_id());
    let state = serde_json::to_string(&t.session).map_err(internal)?;
    let created = kessai_store::flow_support::create_session(
        &app.db,
        &id,
        store::FLOW,
        &state,
        app.clock.now_ms(),
        i64_of(t.session.deadline_ms().saturating_add(SESSION_KEEP_MS)),
    )
    .await
    .map_err(internal)?;
    if !created {
        return Err(internal("session id collision"));
    }
    Ok(())
}

/// The evidence type name of a kind.
fn evidence_type(kind: EvidenceKind) -> &'static str {
    match kind {
        EvidenceKind::Bill => "flow-b.bill",
        EvidenceKind::SettlementInformation => "flow-b.settlement-info",
        EvidenceKind::Pcn => "flow-b.pcn-apdu",
        EvidenceKind::CardLog => "flow-b.card-log-apdu",
        EvidenceKind::Completion => "flow-b.completion",
        EvidenceKind::Receipt => "flow-b.receipt",
        EvidenceKind::ValueUpdate => "flow-b.value-update",
        EvidenceKind::CreditResponse => "flow-b.credit-response-apdu",
    }
}

/// Keeps one artefact in the evidence store under `subject`.
pub async fn put_evidence(
    app: &AppState,
    settings: &Settings,
    subject: &str,
    kind: EvidenceKind,
    bytes: &[u8],
) -> Result<(), ApiError> {
    let signer = kessai_crypto::cose::peek(bytes)
        .map(|p| p.kid.to_string())
        .unwrap_or_default();
    let now = app.clock.now_ms();
    kessai_store::evidence::put(
        &app.db,
        &kessai_store::evidence::NewEvidence {
            kind: evidence_type(kind),
            subject,
            signer: &signer,
            binds: &kessai_flow_b::artefacts::binds(kind, bytes),
            bytes,
            now_ms: now,
            purge_after_ms: settings
                .evidence_retention_ms
                .map(|r| now.saturating_add(i64_of(r))),
        },
    )
    .await
    .map_err(internal)?;
    Ok(())
}

/// What a committed step leaves for after the commit.
#[derive(Debug, Default)]
pub struct Committed {
    /// Card log records uploaded (for the audit log line).
    pub log_uploads: usize,
}

/// Commits one step: evidence first (idempotent, by digest), then the
/// session and every database effect in one transaction, then the ledger
/// requests it queued. A refused step changes nothing and is a 409.
pub async fn commit(
    app: &AppState,
    settings: &Settings,
    stored: Option<&StoredSession>,
    t: &Transition,
) -> Result<Committed, ApiError> {
    let session = &t.session;
    let subject = match session.bill() {
        Some(b) => bill_subject(b.bill().store_id.as_str(), b.bill().order_id.as_str()),
        None => top_up_subject(&session.session_id()),
    };
    let mall_id = session
        .bill()
        .and_then(|b| b.bill().mall_id.as_ref().map(|m| m.to_string()));
    let mut ops = Vec::new();
    let mut committed = Committed::default();
    let mut ledger_ids = Vec::new();
    for e in &t.effects {
        match e {
            Effect::Ledger(req) => {
                ledger_ids.push(req.id);
                ops.push(StepOp::Ledger {
                    transfer_id: req.id.as_bytes().to_vec(),
                    request: serde_json::to_string(req).map_err(internal)?,
                });
            }
            Effect::ReserveBill {
                bill,
                bill_digest,
                hold_id,
            } => ops.push(StepOp::ReserveBill {
                store_id: bill.store_id.to_string(),
                order_id: bill.order_id.to_string(),
                mall_id: mall_id.clone(),
                bill_digest: bill_digest.to_vec(),
                hold_id: hold_id.as_bytes().to_vec(),
            }),
            Effect::ReleaseBill { bill, hold_id } => ops.push(StepOp::ReleaseBill {
                store_id: bill.store_id.to_string(),
                order_id: bill.order_id.to_string(),
                hold_id: hold_id.as_bytes().to_vec(),
            }),
            Effect::MarkBillSettled {
                bill, transfer_id, ..
            } => ops.push(StepOp::SettleBill {
                store_id: bill.store_id.to_string(),
                order_id: bill.order_id.to_string(),
                transfer_id: transfer_id.as_bytes().to_vec(),
            }),
            Effect::RecordPendingOp(op) => ops.push(StepOp::SetPending {
                card_id: op.card_id.to_string(),
                hold_id: op.hold_id.as_bytes().to_vec(),
                op: serde_json::to_string(op).map_err(internal)?,
            }),
            Effect::ClearPendingOp { card_id, hold_id } => ops.push(StepOp::ClearPending {
                card_id: card_id.to_string(),
                hold_id: hold_id.as_bytes().to_vec(),
            }),
            Effect::UpdateShadow { card_id, shadow } => ops.push(StepOp::Shadow {
                card_id: card_id.to_string(),
                balance_minor: i64_of(shadow.balance_minor),
                counter: i64::from(shadow.counter),
            }),
            Effect::StoreEvidence { kind, bytes, .. } => {
                // A recovered operation's artefacts belong to its own bill.
                put_evidence(app, settings, &subject, *kind, bytes).await?;
            }
            Effect::UploadCardLog { card_id, entries } => {
                committed.log_uploads += entries.len();
                for entry in entries {
                    ops.push(StepOp::CardLog {
                        card_id: card_id.to_string(),
                        counter: i64::from(entry.counter),
                        entry: serde_json::to_string(entry).map_err(internal)?,
                    });
                }
            }
            Effect::DeliverCompletion {
                bill,
                mall_id,
                completion,
            } => {
                put_evidence(
                    app,
                    settings,
                    &bill_subject(bill.store_id.as_str(), bill.order_id.as_str()),
                    EvidenceKind::Completion,
                    completion,
                )
                .await?;
                ops.push(StepOp::Completion {
                    store_id: bill.store_id.to_string(),
                    order_id: bill.order_id.to_string(),
                    mall_id: mall_id.as_ref().map(|m| m.to_string()),
                    card_id: session.card_id().to_string(),
                    completion: completion.clone(),
                    digest: sha256(&[completion]).to_vec(),
                    recovered: true,
                });
            }
            Effect::RecordPinTry { .. } | Effect::RecordReceipt { .. } => {
                // Not produced by card sessions (top-up authorization and
                // receipts are committed by their own handlers).
            }
        }
    }
    if let (HostToWallet::Completion { acn, .. }, Some(b)) = (&t.reply, session.bill())
        && !t.effects.is_empty()
    {
        ops.push(StepOp::Completion {
            store_id: b.bill().store_id.to_string(),
            order_id: b.bill().order_id.to_string(),
            mall_id: mall_id.clone(),
            card_id: session.card_id().to_string(),
            completion: acn.clone(),
            digest: sha256(&[acn]).to_vec(),
            recovered: false,
        });
    }
    let state = serde_json::to_string(session).map_err(internal)?;
    let write = stored.map(|s| store::SessionWrite {
        id: &s.id,
        version: s.version,
        state: &state,
        expires_at_ms: s.expires_at_ms,
    });
    match store::commit_step(&app.db, write, &ops, app.clock.now_ms())
        .await
        .map_err(internal)?
    {
        Ok(()) => {}
        Err(refusal) => return Err(step_refusal(app, session, refusal).await),
    }
    if committed.log_uploads > 0 {
        kessai_store::audit_log::append(
            &app.db,
            app.clock.now_ms(),
            "flow_b.card_log_uploaded",
            session.card_id().as_str(),
            &serde_json::json!({ "records": committed.log_uploads }),
        )
        .await
        .map_err(internal)?;
    }
    let refused = drain_outbox(app).await?;
    if let Some(id) = ledger_ids.iter().find(|id| refused.contains(id)) {
        tracing::error!(transfer = %id, "flow-b: the ledger refused a decided transfer");
        return Err(ApiError::unprocessable(
            "ledger-refused",
            "The ledger refused the settlement",
        ));
    }
    Ok(committed)
}

async fn step_refusal(app: &AppState, session: &CardSession, r: StepRefusal) -> ApiError {
    match r {
        StepRefusal::SessionMoved => {
            ApiError::conflict("session-moved", "Another request advanced the session")
        }
        StepRefusal::BillNotOpen => {
            let settled = match session.bill() {
                Some(b) => store::bill(
                    &app.db,
                    b.bill().store_id.as_str(),
                    b.bill().order_id.as_str(),
                )
                .await
                .ok()
                .flatten()
                .is_some_and(|r| r.status == "settled"),
                None => false,
            };
            if settled {
                flow_error(&FlowError::BillAlreadySettled)
            } else {
                flow_error(&FlowError::BillInFlight)
            }
        }
        StepRefusal::CardBusy => ApiError::conflict(
            "card-busy",
            "The card has an unresolved operation in another session",
        ),
        StepRefusal::BillNotReserved | StepRefusal::PendingMismatch => ApiError::conflict(
            "session-moved",
            "The settlement was resolved by another request",
        ),
    }
}

/// Submits every queued ledger request in order (a replay of one already
/// recorded is fine: ids derive from natural keys). Returns the ids the
/// ledger refused (logged and dropped from the queue); a database failure
/// leaves the queue for the next call.
pub async fn drain_outbox(app: &AppState) -> Result<Vec<kessai_ids::TransferId>, ApiError> {
    let mut refused = Vec::new();
    loop {
        let rows = store::outbox(&app.db, 64).await.map_err(internal)?;
        if rows.is_empty() {
            return Ok(refused);
        }
        for row in rows {
            let req: TransferRequest = serde_json::from_str(&row.request).map_err(internal)?;
            match app.db.ledger().submit(req.clone(), now_ms(app)).await {
                Err(e) => return Err(internal(e)),
                Ok(Ok(r)) => {
                    app.metrics
                        .ledger_outcome(if r.replayed { "replayed" } else { "created" });
                }
                Ok(Err(e)) => {
                    app.metrics.ledger_outcome(e.code());
                    kessai_store::audit_log::append(
                        &app.db,
                        app.clock.now_ms(),
                        "flow_b.ledger_refused",
                        &req.id.to_string(),
                        &serde_json::json!({ "code": e.code() }),
                    )
                    .await
                    .map_err(internal)?;
                    refused.push(req.id);
                }
            }
            store::outbox_done(&app.db, row.seq)
                .await
                .map_err(internal)?;
        }
    }
}
