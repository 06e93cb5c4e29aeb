//! Flow D HTTP endpoints: the temporary password at the POS (seed 003,
//! SPEC.md flow D), driving the pure decisions of `kessai-flow-d` from the
//! database.
//!
//! | endpoint | who | claims |
//! |---|---|---|
//! | `GET /v1/flow-d/keys` | phone, POS | published keys (HPKE cardholder key, receipt key) |
//! | `POST /v1/flow-d/challenges` | phone | host challenge the card cryptogram covers |
//! | `POST /v1/flow-d/authorizations` | phone | 1, 5, 6, 16, 17: card + customer verified → temporary password + EMVCo QR payload |
//! | `POST /v1/flow-d/redemptions` | POS | 1, 4, 6, 15: password + sale → settlement + signed receipt |
//! | `POST /v1/flow-d/merchant-card-settlements` | phone | 2, 7, 8: customer + merchant IC cards → settlement, POS signalled |
//! | `GET /v1/flow-d/cards/{card}/receipts?after=` | phone | 15: receipt pushed to the phone (poll) |
//! | `GET /v1/flow-d/terminals/{terminal}/receipts?after=` | POS | 8: the settlement server signals the POS |
//! | `POST /v1/flow-d/admin/terminals`, `/admin/cards`, `/admin/merchant-cards` | issuer (admin token) | registration |
//!
//! # Carrying out the pure crate's effects
//!
//! Every [`Outcome`] is applied in **one** database transaction
//! (`begin_write`): challenge consumption, `last_counter < n`, PIN tries,
//! guess counters and `MarkPasswordUsed` (`UPDATE … WHERE used = 0`) are
//! conditional statements; a guard that changes 0 rows rolls the whole
//! transaction back and the caller gets the typed refusal.
//!
//! # Order of settlement (at most once, never a lost acknowledgement)
//!
//! The ledger has its own writer, so the password mark and the ledger
//! posting are two commits. We **mark first, then post**:
//!
//! 1. commit the outcome's conditional effects (the password is now used;
//!    of two racing redemptions — also on two host processes over one
//!    PostgreSQL — exactly one sees `rows_affected = 1`);
//! 2. post the transfer, whose id is derived from the password id (the
//!    ledger refuses a second transfer with that id: a second guard);
//! 3. only then queue the signed receipt for the phone and the POS and
//!    answer 201.
//!
//! A double settlement would need two processes past step 1: impossible.
//! An acknowledged settlement is never lost: the answer is sent after the
//! posting committed. If the ledger *refuses* the posting (e.g. the
//! funding account's limit) the transfer does not exist, so the password
//! is released again (`release_password`, conditional on the transfer id)
//! and the refusal is answered; if the posting fails for another reason
//! (database down) or the host stops between the two commits, the
//! password stays marked and no money moved: the maintenance pass
//! (`maintenance::release_flow_d_orphans`) releases a mark older than
//! `FLOW_D_ORPHAN_GRACE_MS` whose transfer is not in the ledger, so a
//! still-valid password can be keyed in again. A posting that arrives
//! after such a release is harmless: the transfer id is derived from the
//! password id, so the ledger keeps at most one transfer for it.
//!
//! # Keys
//!
//! All from the issuer key store: the card's master key version (cards are
//! issued by [`crate::card_security`]) diversifies the card keys and, with
//! a per-purpose label, the PIN verification key and the record key (keyed
//! PAN and secret digests); the password key comes from the active card
//! master (rotating it invalidates passwords still outstanding, at most
//! `password_ttl_ms`); cardholder payloads are sealed to the active
//! transmission HPKE key; receipts are signed with the host signing key.

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use base64::Engine as _;
use kessai_flow_d::FlowDError;
use kessai_flow_d::artefacts::LineItem;
use kessai_flow_d::cardio::CardAuth;
use kessai_flow_d::host::{
    AuthorizationRequest, CardRecord, ChallengeRecord, CustomerPart, CvmMethod, Effect, Host,
    HostConfig, HostKeys, MerchantCardRequest, MerchantRecord, Outcome, PasswordInput,
    PasswordRecord, PasswordState, RedemptionChannel, RedemptionRequest, Settled, TerminalRecord,
};
use kessai_flow_d::password::{PasswordId, PasswordKey};
use kessai_ids::{AccountId, CardId, KeyRef, StoreId, TerminalId, TransferId};
use kessai_money::{Currency, Money};
use kessai_pin::{PinVerificationData, PinVerificationKey};
use kessai_scp03::AesKey;
use kessai_secrets::{CardNumber, Pin, SecretKey};
use kessai_store::{evidence, flow_d as store, registry};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use crate::keystore::KeyPurpose;
use crate::problem::{ApiError, Problem};
use crate::routes::admin::ledger_error;
use crate::state::AppState;
use crate::{card_security, json::ApiJson};

/// Settings of flow D, part of [`crate::settings::Settings`].
#[derive(Debug, Clone)]
pub struct Settings {
    /// Password / challenge lifetimes, PIN tries, guess limit, ceiling.
    pub host: HostConfig,
    /// How long signed receipts are kept as evidence (default 7 years).
    pub receipt_retention_ms: i64,
    /// How long sealed cardholder payloads (they hold the encrypted PIN
    /// block) are kept before retention purges their bytes (default 1 day).
    pub sealed_retention_ms: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            host: HostConfig::default(),
            receipt_retention_ms: 7 * 365 * 86_400_000,
            sealed_retention_ms: 86_400_000,
        }
    }
}

type ApiResult<T> = Result<T, ApiError>;

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(&e)
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(s: &str) -> ApiResult<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|_| ApiError::bad_request("invalid-base64", "Field is not base64url"))
}

fn now_ms(app: &AppState) -> u64 {
    u64::try_from(app.clock.now_ms()).unwrap_or(0)
}

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The RFC 9457 problem of a flow-D refusal (stable slugs; never card
/// numbers, PINs or passwords in the text).
pub fn flow_error(e: &FlowDError) -> ApiError {
    use FlowDError as E;
    use StatusCode as S;
    let (status, slug, title) = match e {
        E::UnknownChallenge => (
            S::UNPROCESSABLE_ENTITY,
            "unknown-challenge",
            "Unknown host challenge",
        ),
        E::ChallengeUsed => (S::CONFLICT, "challenge-used", "Host challenge already used"),
        E::ChallengeExpired => (
            S::UNPROCESSABLE_ENTITY,
            "challenge-expired",
            "Host challenge expired",
        ),
        E::UnknownCard(_) => (
            S::UNPROCESSABLE_ENTITY,
            "unknown-card",
            "Card not registered for flow D",
        ),
        E::CardBlocked(_) => (S::FORBIDDEN, "card-blocked", "Card is blocked"),
        E::CardExpired => (
            S::UNPROCESSABLE_ENTITY,
            "card-expired",
            "Card expired or expiry mismatch",
        ),
        E::BadCryptogram => (
            S::FORBIDDEN,
            "bad-cryptogram",
            "Card cryptogram does not verify",
        ),
        E::CounterReplay { .. } => (S::CONFLICT, "counter-replay", "Card counter replayed"),
        E::BadSealedData => (
            S::UNPROCESSABLE_ENTITY,
            "bad-sealed-data",
            "Sealed cardholder data does not open",
        ),
        E::SettlementMismatch => (
            S::FORBIDDEN,
            "settlement-mismatch",
            "Settlement information does not match the card",
        ),
        E::CvmNotAvailable => (
            S::UNPROCESSABLE_ENTITY,
            "cvm-not-available",
            "Verification method not available",
        ),
        E::WrongPin { tries_left } => {
            return ApiError::new(S::FORBIDDEN, "wrong-pin", "Cardholder verification failed")
                .with_detail(format!("{tries_left} tries left"));
        }
        E::PinLocked => (S::FORBIDDEN, "pin-locked", "Cardholder verification locked"),
        E::BadAmount => (
            S::UNPROCESSABLE_ENTITY,
            "bad-amount",
            "Amount is not acceptable",
        ),
        E::CurrencyMismatch => (
            S::UNPROCESSABLE_ENTITY,
            "currency-mismatch",
            "Currency mismatch",
        ),
        E::PasswordFormat => (
            S::BAD_REQUEST,
            "password-format",
            "Password must be 12 decimal digits",
        ),
        E::UnknownPassword => (
            S::UNPROCESSABLE_ENTITY,
            "unknown-password",
            "Unknown password",
        ),
        E::PasswordExpired => (
            S::UNPROCESSABLE_ENTITY,
            "password-expired",
            "Password expired",
        ),
        E::PasswordUsed => (S::CONFLICT, "password-used", "Password already used"),
        E::PasswordOfAnotherCard => (
            S::UNPROCESSABLE_ENTITY,
            "password-of-another-card",
            "Password belongs to another card",
        ),
        E::AboveCap => (
            S::UNPROCESSABLE_ENTITY,
            "above-cap",
            "Amount above the password's cap",
        ),
        E::UnknownTerminal(_) => (S::FORBIDDEN, "unknown-terminal", "Terminal not registered"),
        E::TerminalLocked(_) => (
            S::TOO_MANY_REQUESTS,
            "terminal-locked",
            "Terminal locked after too many wrong passwords",
        ),
        E::UnknownMerchant(_) => (
            S::FORBIDDEN,
            "unknown-merchant",
            "Merchant not registered or not active",
        ),
        E::UnknownMerchantCard(_) => (
            S::FORBIDDEN,
            "unknown-merchant-card",
            "Merchant card not registered",
        ),
        E::GoodsMismatch => (
            S::UNPROCESSABLE_ENTITY,
            "goods-mismatch",
            "Goods do not match the amount",
        ),
        E::MalformedQr(_) | E::QrTooLong => {
            (S::BAD_REQUEST, "malformed-qr", "Malformed QR payload")
        }
        E::Ledger(l) => return ledger_error(l),
        E::Artefact(_) => (
            S::UNPROCESSABLE_ENTITY,
            "bad-artefact",
            "Artefact does not verify",
        ),
        _ => (
            S::UNPROCESSABLE_ENTITY,
            "flow-d-refused",
            "Flow D request refused",
        ),
    };
    ApiError::new(status, slug, title)
}

// ---- keys ------------------------------------------------------------------

const PVK_LABEL: &[u8] = b"kessai/flow-d/pin-verification-key/v1";
const RECORD_LABEL: &[u8] = b"kessai/flow-d/record-key/v1";
const PASSWORD_LABEL: &[u8] = b"kessai/flow-d/password-key/v1";

fn derive(label: &[u8], key_ref: &KeyRef, master: &SecretKey<16>) -> SecretKey<32> {
    let r = key_ref.to_string();
    SecretKey::new(kessai_crypto::digest::sha256(&[
        label,
        &[0],
        r.as_bytes(),
        &[0],
        master.expose(),
    ]))
}

/// The pure host for requests about `card` (its card master version), or
/// about no card in particular (the active card master).
pub async fn host_for(app: &AppState, card: Option<&CardId>) -> ApiResult<Host> {
    let (active_ref, active) = app.keys.card_master().await.map_err(internal)?;
    let (card_ref, card_master, version) = match card {
        Some(id) => match kessai_store::cards::card(&app.db, id)
            .await
            .map_err(internal)?
        {
            Some(rec) => {
                let m = app
                    .keys
                    .card_master_version(&rec.master_key_ref)
                    .await
                    .map_err(internal)?;
                (rec.master_key_ref, m, rec.key_version)
            }
            None => (
                active_ref.clone(),
                active.clone(),
                card_security::CARD_KEY_VERSION,
            ),
        },
        None => (
            active_ref.clone(),
            active.clone(),
            card_security::CARD_KEY_VERSION,
        ),
    };
    let (hpke_ref, _) = app
        .keys
        .hpke_public(KeyPurpose::Transmission)
        .await
        .map_err(internal)?;
    let hpke = app
        .keys
        .hpke_keypair(&hpke_ref, KeyPurpose::Transmission)
        .await
        .map_err(internal)?;
    let (sign_ref, signer) = app.keys.host_signer().await.map_err(internal)?;
    let keys = HostKeys {
        card_master: AesKey::Aes128(*card_master.expose()),
        card_key_version: version,
        cardholder_key: hpke,
        cardholder_key_ref: hpke_ref,
        pin_verification: PinVerificationKey::new(derive(PVK_LABEL, &card_ref, &card_master)),
        password_key: PasswordKey::new(derive(PASSWORD_LABEL, &active_ref, &active)),
        record_key: derive(RECORD_LABEL, &card_ref, &card_master),
        receipt_key: signer,
        receipt_key_ref: sign_ref,
    };
    Ok(Host::new(app.settings.flow_d.host.clone(), keys))
}

// ---- loading records ------------------------------------------------------------

async fn load_challenge(app: &AppState, c: &[u8; 8]) -> ApiResult<Option<ChallengeRecord>> {
    Ok(store::challenge(&app.db, c)
        .await
        .map_err(internal)?
        .map(|(exp, consumed)| ChallengeRecord {
            challenge: *c,
            expires_at_ms: u64::try_from(exp).unwrap_or(0),
            consumed,
        }))
}

async fn load_card(app: &AppState, id: &CardId) -> ApiResult<Option<CardRecord>> {
    let Some(row) = store::card(&app.db, id.as_str()).await.map_err(internal)? else {
        return Ok(None);
    };
    let currency = Currency::from_code(&row.currency).map_err(internal)?;
    let customer = match &row.profile {
        Some(p) => {
            let mut c: CustomerPart = serde_json::from_str(p).map_err(internal)?;
            c.cvm_tries_left = u8::try_from(row.cvm_tries_left).unwrap_or(0);
            Some(c)
        }
        None => None,
    };
    Ok(Some(CardRecord {
        card_id: id.clone(),
        currency,
        last_counter: u32::try_from(row.last_counter).unwrap_or(u32::MAX),
        blocked: row.blocked,
        customer,
    }))
}

async fn load_merchant(app: &AppState, store_id: &StoreId) -> ApiResult<Option<MerchantRecord>> {
    let Some(m) = registry::merchant(&app.db, store_id)
        .await
        .map_err(internal)?
    else {
        return Ok(None);
    };
    let Some(payable) = m.payable_account.clone() else {
        return Ok(None);
    };
    let card = store::merchant_card_of(&app.db, store_id.as_str())
        .await
        .map_err(internal)?;
    Ok(Some(MerchantRecord {
        store_id: m.id.clone(),
        name: m.name.clone(),
        active: m.status == registry::MerchantStatus::Active,
        payable_account: payable,
        merchant_card: card.and_then(|c| c.card_id.parse().ok()),
    }))
}

async fn load_terminal(app: &AppState, id: &TerminalId) -> ApiResult<Option<TerminalRecord>> {
    let Some(t) = store::terminal(&app.db, id.as_str())
        .await
        .map_err(internal)?
    else {
        return Ok(None);
    };
    Ok(Some(TerminalRecord {
        terminal_id: id.clone(),
        store_id: t.store_id.parse().map_err(internal)?,
        guess_failures: u32::try_from(t.guess_failures).unwrap_or(u32::MAX),
        guess_window_start_ms: u64::try_from(t.guess_window_start_ms).unwrap_or(0),
    }))
}

async fn load_password(app: &AppState, id: &PasswordId) -> ApiResult<Option<PasswordRecord>> {
    let Some(row) = store::password(&app.db, &id.0).await.map_err(internal)? else {
        return Ok(None);
    };
    let mut rec: PasswordRecord = serde_json::from_str(&row.record).map_err(internal)?;
    if row.used {
        rec.state = PasswordState::Used {
            at_ms: u64::try_from(row.used_at_ms.unwrap_or(0)).unwrap_or(0),
            transfer_id: row
                .transfer_id
                .as_deref()
                .and_then(|t| t.parse().ok())
                .unwrap_or_else(|| TransferId::derive("flow-d/password", &[&id.0])),
        };
    }
    Ok(Some(rec))
}

// ---- applying outcomes --------------------------------------------------------------

enum CommitError {
    Refused(FlowDError),
    /// A freshly issued password's hash collides with a stored one.
    PasswordCollision,
    Api(ApiError),
}

impl From<kessai_store::StoreError> for CommitError {
    fn from(e: kessai_store::StoreError) -> Self {
        CommitError::Api(internal(e))
    }
}

impl From<CommitError> for ApiError {
    fn from(e: CommitError) -> Self {
        match e {
            CommitError::Refused(f) => flow_error(&f),
            CommitError::PasswordCollision => flow_error(&FlowDError::PasswordUsed),
            CommitError::Api(a) => a,
        }
    }
}

/// Applies the conditional effects of one outcome in one transaction.
async fn commit_effects(app: &AppState, effects: &[Effect], now: u64) -> Result<(), CommitError> {
    let mut tx = app.db.begin_write().await?;
    let max_tries = app.settings.flow_d.host.max_cvm_tries;
    for e in effects {
        let fail = match e {
            Effect::StoreChallenge(c) => {
                (store::tx_insert_challenge(&mut tx, &c.challenge, i(c.expires_at_ms)).await? != 1)
                    .then_some(CommitError::Refused(FlowDError::ChallengeUsed))
            }
            Effect::ConsumeChallenge { challenge } => {
                (store::tx_consume_challenge(&mut tx, challenge).await? != 1)
                    .then_some(CommitError::Refused(FlowDError::ChallengeUsed))
            }
            Effect::AdvanceCardCounter { card_id, counter } => {
                (store::tx_advance_counter(&mut tx, card_id.as_str(), i64::from(*counter)).await?
                    != 1)
                    .then_some(CommitError::Refused(FlowDError::CounterReplay {
                        got: *counter,
                        last: *counter,
                    }))
            }
            Effect::RecordCvmFailure { card_id, .. } => {
                store::tx_cvm_failure(&mut tx, card_id.as_str()).await?;
                None
            }
            Effect::ResetCvmTries { card_id, tries } => {
                let t = (*tries).min(max_tries);
                store::tx_reset_cvm_tries(&mut tx, card_id.as_str(), i64::from(t)).await?;
                None
            }
            Effect::StorePassword(p) => {
                let row = store::PasswordRow {
                    id: p.id.0.to_vec(),
                    card_id: p.card_id.to_string(),
                    record: serde_json::to_string(p).map_err(|e| CommitError::Api(internal(e)))?,
                    expires_at_ms: i(p.expires_at_ms),
                    used: false,
                    used_at_ms: None,
                    transfer_id: None,
                    created_at_ms: i(now),
                };
                (store::tx_insert_password(&mut tx, &row).await? != 1)
                    .then_some(CommitError::PasswordCollision)
            }
            Effect::MarkPasswordUsed {
                id,
                at_ms,
                transfer_id,
            } => {
                (store::tx_mark_password_used(&mut tx, &id.0, i(*at_ms), &transfer_id.to_string())
                    .await?
                    != 1)
                    .then_some(CommitError::Refused(FlowDError::PasswordUsed))
            }
            Effect::RecordGuessFailure {
                terminal_id,
                failures,
                window_start_ms,
            } => {
                store::tx_record_guess_failure(
                    &mut tx,
                    terminal_id.as_str(),
                    i64::from(*failures),
                    i(*window_start_ms),
                )
                .await?;
                None
            }
            Effect::Settle(_) | Effect::PushReceiptToPhone { .. } | Effect::SignalPos { .. } => {
                None
            }
        };
        if let Some(f) = fail {
            tx.rollback().await?;
            return Err(f);
        }
    }
    tx.commit().await?;
    Ok(())
}

/// Carries out a settling outcome: conditional effects, then the ledger
/// posting, then the receipt queue and evidence (see the module docs).
async fn run_settlement(app: &AppState, outcome: Outcome<Settled>, now: u64) -> ApiResult<Settled> {
    // Refusals that carry effects (guess failures, PIN tries) commit them.
    let settled = match outcome.result {
        Ok(s) => s,
        Err(e) => {
            commit_effects(app, &outcome.effects, now).await?;
            return Err(flow_error(&e));
        }
    };
    commit_effects(app, &outcome.effects, now).await?;
    let transfer_id = settled.transfer.id;
    match app
        .db
        .ledger()
        .submit(settled.transfer.clone(), now)
        .await
        .map_err(internal)?
    {
        Ok(r) => app
            .metrics
            .ledger_outcome(if r.replayed { "replayed" } else { "created" }),
        Err(refusal) => {
            app.metrics.ledger_outcome(refusal.code());
            for e in &outcome.effects {
                if let Effect::MarkPasswordUsed { id, .. } = e {
                    store::release_password(&app.db, &id.0, &transfer_id.to_string())
                        .await
                        .map_err(internal)?;
                }
            }
            return Err(flow_error(&FlowDError::Ledger(refusal)));
        }
    }
    let t = transfer_id.to_string();
    for e in &outcome.effects {
        match e {
            Effect::PushReceiptToPhone { card_id, receipt } => {
                store::enqueue_receipt(&app.db, &format!("card:{card_id}"), &t, receipt, i(now))
                    .await
                    .map_err(internal)?;
                keep_evidence(app, card_id, receipt, false).await?;
            }
            Effect::SignalPos {
                store_id,
                terminal_id,
                receipt,
            } => {
                let to = match terminal_id {
                    Some(t) => format!("terminal:{t}"),
                    None => format!("store:{store_id}"),
                };
                store::enqueue_receipt(&app.db, &to, &t, receipt, i(now))
                    .await
                    .map_err(internal)?;
            }
            _ => {}
        }
    }
    if let Some(term) = &settled.receipt.receipt.terminal {
        // The POS that keyed the password in also gets it in its queue.
        store::enqueue_receipt(
            &app.db,
            &format!("terminal:{term}"),
            &t,
            &settled.receipt.cose,
            i(now),
        )
        .await
        .map_err(internal)?;
    }
    tracing::info!(transfer = %transfer_id, merchant = %settled.receipt.receipt.merchant,
        card = %settled.receipt.receipt.card_masked, "flow D settled");
    Ok(settled)
}

/// The evidence subject of a card's flow-D artefacts.
pub fn evidence_subject(card_id: &CardId) -> String {
    format!("flowd:card:{card_id}")
}

async fn keep_evidence(
    app: &AppState,
    card_id: &CardId,
    bytes: &[u8],
    ciphertext: bool,
) -> ApiResult<()> {
    let peeked = kessai_crypto::cose::peek(bytes).map_err(|_| internal("unreadable artefact"))?;
    let kind = peeked.type_name().unwrap_or("flow-d-artefact").to_owned();
    let signer = if ciphertext {
        String::new()
    } else {
        peeked.kid.to_string()
    };
    let now = app.clock.now_ms();
    let s = &app.settings.flow_d;
    let keep = if ciphertext {
        s.sealed_retention_ms
    } else {
        s.receipt_retention_ms
    };
    evidence::put(
        &app.db,
        &evidence::NewEvidence {
            kind: &kind,
            subject: &evidence_subject(card_id),
            signer: &signer,
            binds: &[],
            bytes,
            now_ms: now,
            purge_after_ms: Some(now.saturating_add(keep)),
        },
    )
    .await
    .map_err(internal)?;
    Ok(())
}

// ---- wire types ------------------------------------------------------------------------

/// The published keys of flow D.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KeysView {
    /// Key ref of the HPKE key cardholder payloads are sealed to.
    pub cardholder_key_ref: String,
    /// Its X25519 public key, base64url.
    pub cardholder_key: String,
    /// Key ref of the receipt signing key.
    pub receipt_key_ref: String,
    /// Its Ed25519 public key, base64url.
    pub receipt_key: String,
    /// Largest cap per authorization, minor units.
    pub max_amount_minor: i64,
    /// Password lifetime, ms.
    pub password_ttl_ms: u64,
}

/// A host challenge.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ChallengeView {
    /// 8 bytes, hex.
    pub challenge: String,
    /// Largest cap the host accepts, minor units.
    pub max_amount_minor: i64,
    /// Expiry, unix ms.
    pub expires_at_ms: u64,
}

/// The phone's authorization request (claims 1, 5, 6).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthorizationBody {
    /// The host challenge, hex.
    pub challenge: String,
    /// Card authentication information (cryptogram over challenge + cap).
    #[schema(value_type = Object)]
    pub card: CardAuth,
    /// Cap currency.
    #[schema(value_type = String)]
    pub currency: Currency,
    /// How the customer is verified.
    #[schema(value_type = String)]
    pub method: CvmMethod,
    /// Sealed cardholder payload (COSE_Encrypt0), base64url.
    pub sealed: String,
}

impl AuthorizationBody {
    /// The wire form of a pure request.
    pub fn from_request(r: &AuthorizationRequest) -> Self {
        Self {
            challenge: hex::encode(r.challenge),
            card: r.card.clone(),
            currency: r.currency,
            method: r.method,
            sealed: b64(&r.sealed),
        }
    }

    fn into_request(self) -> ApiResult<AuthorizationRequest> {
        Ok(AuthorizationRequest {
            challenge: parse_challenge(&self.challenge)?,
            card: self.card,
            currency: self.currency,
            method: self.method,
            sealed: unb64(&self.sealed)?,
        })
    }
}

fn parse_challenge(s: &str) -> ApiResult<[u8; 8]> {
    hex::decode(s)
        .ok()
        .and_then(|v| <[u8; 8]>::try_from(v).ok())
        .ok_or_else(|| ApiError::bad_request("invalid-challenge", "Challenge must be 8 bytes hex"))
}

/// The temporary password (answer to the phone only).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GrantView {
    /// The 12 digits.
    pub password: String,
    /// The digits grouped for display (`1234 5678 9012`).
    pub password_grouped: String,
    /// EMVCo CPM QR payload (base64).
    pub qr_payload: String,
    /// End of validity, unix ms.
    pub expires_at_ms: u64,
    /// Cap, minor units.
    pub cap_minor: i64,
    /// Cap currency.
    pub currency: String,
}

/// How the POS presents the password.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedemptionBody {
    /// The POS terminal.
    pub terminal_id: String,
    /// Keyed-in digits (exactly one of `password`, `qr_payload`).
    #[serde(default)]
    pub password: Option<String>,
    /// Scanned QR payload.
    #[serde(default)]
    pub qr_payload: Option<String>,
    /// Sale amount, minor units.
    pub amount_minor: i64,
    /// Sale currency.
    pub currency: String,
    /// Goods (must add up to the amount).
    #[schema(value_type = Vec<Object>)]
    pub goods: Vec<LineItem>,
    /// Relayed over the short-range link (names the receipt's variant).
    #[serde(default)]
    pub short_range: bool,
}

/// The merchant-IC-card request (claims 2, 7, 8).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MerchantCardBody {
    /// The host challenge, hex.
    pub challenge: String,
    /// Customer card authentication (amount = sale amount).
    #[schema(value_type = Object)]
    pub customer: CardAuth,
    /// Merchant card authentication (same amount).
    #[schema(value_type = Object)]
    pub merchant: CardAuth,
    /// Currency.
    #[schema(value_type = String)]
    pub currency: Currency,
    /// Goods the customer confirmed.
    #[schema(value_type = Vec<Object>)]
    pub goods: Vec<LineItem>,
    /// POS to signal.
    #[serde(default)]
    pub terminal_id: Option<String>,
    /// Customer verification method.
    #[schema(value_type = String)]
    pub method: CvmMethod,
    /// Sealed cardholder payload, base64url.
    pub sealed: String,
}

impl MerchantCardBody {
    /// The wire form of a pure request.
    pub fn from_request(r: &MerchantCardRequest) -> Self {
        Self {
            challenge: hex::encode(r.challenge),
            customer: r.customer.clone(),
            merchant: r.merchant.clone(),
            currency: r.currency,
            goods: r.goods.clone(),
            terminal_id: r.terminal_id.as_ref().map(|t| t.to_string()),
            method: r.method,
            sealed: b64(&r.sealed),
        }
    }
}

/// A settled sale.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SettledView {
    /// The ledger transfer.
    pub transfer_id: String,
    /// Signed receipt (COSE_Sign1), base64url.
    pub receipt: String,
    /// Printable receipt text.
    pub receipt_text: String,
}

fn settled_view(s: &Settled) -> SettledView {
    SettledView {
        transfer_id: s.transfer.id.to_string(),
        receipt: b64(&s.receipt.cose),
        receipt_text: s.receipt.receipt.to_text(),
    }
}

/// A queued receipt.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReceiptView {
    /// Queue position (poll with `after=` it).
    pub seq: i64,
    /// The transfer.
    pub transfer_id: String,
    /// Signed receipt, base64url.
    pub receipt: String,
}

/// Poll position.
#[derive(Debug, Clone, Deserialize, utoipa::IntoParams)]
pub struct AfterQuery {
    /// Return receipts after this position (default 0).
    #[serde(default)]
    pub after: i64,
}

/// Registers a POS terminal for a merchant.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterTerminal {
    /// Terminal id.
    pub terminal_id: String,
    /// Registered merchant.
    pub store_id: String,
}

/// Registers an issued IC card as a flow-D customer card. The PAN and PIN
/// are used once (keyed digest, PIN verification data) and never stored.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterCard {
    /// Card id (issued by the card security module).
    pub card_id: String,
    /// Card number (as personalized on the card).
    pub pan: String,
    /// Expiry `YYMM`.
    pub expiry_yymm: String,
    /// The cardholder's funding account payments draw on.
    pub funding_account: String,
    /// Card currency.
    pub currency: String,
    /// PIN for online verification (optional).
    #[serde(default)]
    pub pin: Option<String>,
    /// Registered secret (claim 17, optional).
    #[serde(default)]
    pub secret: Option<String>,
    /// A fingerprint template is enrolled on the card (claim 16).
    #[serde(default)]
    pub biometric_enrolled: bool,
    /// Cardholder name as personalized on the card (2-26 printable ASCII).
    /// When given, the answer carries the issuer-signed card profile the
    /// customer's phone keeps for the in-phone card check (claim 10).
    #[serde(default)]
    pub name: Option<String>,
}

/// Registers an issued IC card as a merchant's business-establishment card.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterMerchantCard {
    /// Card id.
    pub card_id: String,
    /// The merchant.
    pub store_id: String,
    /// Card currency.
    pub currency: String,
}

/// A registered card (masked).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CardView {
    /// Card id.
    pub card_id: String,
    /// `customer` or `merchant`.
    pub kind: String,
    /// Masked PAN (customer cards).
    pub pan_masked: Option<String>,
    /// Issuer-signed card profile for the phone (claim 10), when the
    /// registration gave the cardholder name. Not stored by the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<CardProfileView>,
}

/// The claim-10 card profile as delivered to the customer's phone: the
/// COSE_Sign1 `flow-d-card-profile` artefact and the issuer key that signed
/// it, which the phone pins at enrolment so the in-phone check needs no
/// network.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CardProfileView {
    /// COSE_Sign1, base64url without padding.
    pub cose: String,
    /// Signing key id#version.
    pub key_ref: String,
    /// Ed25519 public key, base64url without padding.
    pub public_key: String,
}

fn bad(slug: &'static str, title: &'static str) -> ApiError {
    ApiError::bad_request(slug, title)
}

// ---- handlers -------------------------------------------------------------------

/// Published keys.
#[utoipa::path(get, path = "/v1/flow-d/keys", tag = "flow-d",
    responses((status = 200, body = KeysView)))]
pub async fn keys(State(app): State<AppState>) -> ApiResult<Json<KeysView>> {
    let host = host_for(&app, None).await?;
    let p = host.public();
    Ok(Json(KeysView {
        cardholder_key_ref: p.cardholder_key_ref.to_string(),
        cardholder_key: b64(&p.cardholder_key.to_bytes()),
        receipt_key_ref: p.receipt_key_ref.to_string(),
        receipt_key: b64(&p.receipt_key.to_bytes()),
        max_amount_minor: host.config().max_amount_minor,
        password_ttl_ms: host.config().password_ttl_ms,
    }))
}

/// Issues a host challenge.
#[utoipa::path(post, path = "/v1/flow-d/challenges", tag = "flow-d",
    params(("Idempotency-Key" = String, Header, description = "Required on every state-changing call")),
    responses((status = 201, body = ChallengeView), (status = 400, body = Problem)))]
pub async fn challenge(
    State(app): State<AppState>,
) -> ApiResult<(StatusCode, Json<ChallengeView>)> {
    let host = host_for(&app, None).await?;
    let now = now_ms(&app);
    for _ in 0..3 {
        let o = {
            let mut rng = rand::rng();
            host.issue_challenge(&mut rng, now)
        };
        let ch = o.result.map_err(|e| flow_error(&e))?;
        match commit_effects(&app, &o.effects, now).await {
            Ok(()) => {
                return Ok((
                    StatusCode::CREATED,
                    Json(ChallengeView {
                        challenge: hex::encode(ch.challenge),
                        max_amount_minor: ch.max_amount_minor,
                        expires_at_ms: ch.expires_at_ms,
                    }),
                ));
            }
            Err(CommitError::Refused(FlowDError::ChallengeUsed)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(internal("could not issue a fresh challenge"))
}

/// Authorization and password issue (claims 1, 5, 6, 16, 17).
#[utoipa::path(post, path = "/v1/flow-d/authorizations", tag = "flow-d",
    request_body = AuthorizationBody,
    params(("Idempotency-Key" = String, Header, description = "Required on every state-changing call")),
    responses((status = 201, body = GrantView), (status = 400, body = Problem), (status = 403, body = Problem),
              (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn authorize(
    State(app): State<AppState>,
    ApiJson(body): ApiJson<AuthorizationBody>,
) -> ApiResult<(StatusCode, Json<GrantView>)> {
    let req = body.into_request()?;
    let host = host_for(&app, Some(&req.card.card_id)).await?;
    let now = now_ms(&app);
    let challenge = load_challenge(&app, &req.challenge).await?;
    let card = load_card(&app, &req.card.card_id).await?;
    for _ in 0..3 {
        let o = {
            let mut rng = rand::rng();
            host.authorize(&req, challenge.as_ref(), card.as_ref(), &mut rng, now)
        };
        match commit_effects(&app, &o.effects, now).await {
            Ok(()) => {}
            // 1 in 10^12: draw another password (everything rolled back).
            Err(CommitError::PasswordCollision) => continue,
            Err(e) => return Err(e.into()),
        }
        let grant = o.result.map_err(|e| flow_error(&e))?;
        keep_evidence(&app, &req.card.card_id, &req.sealed, true).await?;
        tracing::info!(card = %req.card.card_id, counter = req.card.counter, "flow D password issued");
        return Ok((
            StatusCode::CREATED,
            Json(GrantView {
                password: grant.password.expose_digits().to_owned(),
                password_grouped: grant.password.grouped(),
                qr_payload: grant.qr_payload,
                expires_at_ms: grant.expires_at_ms,
                cap_minor: grant.cap.amount_minor,
                currency: grant.cap.currency.code().to_owned(),
            }),
        ));
    }
    Err(internal("could not issue a unique password"))
}

/// Redemption at the POS (claims 1, 4, 6, 15).
#[utoipa::path(post, path = "/v1/flow-d/redemptions", tag = "flow-d",
    request_body = RedemptionBody,
    params(("Idempotency-Key" = String, Header, description = "Required on every state-changing call")),
    responses((status = 201, body = SettledView), (status = 400, body = Problem), (status = 403, body = Problem),
              (status = 409, body = Problem), (status = 422, body = Problem), (status = 429, body = Problem)))]
pub async fn redeem(
    State(app): State<AppState>,
    ApiJson(body): ApiJson<RedemptionBody>,
) -> ApiResult<(StatusCode, Json<SettledView>)> {
    let terminal_id: TerminalId = body
        .terminal_id
        .parse()
        .map_err(|_| bad("invalid-terminal-id", "Invalid terminal id"))?;
    let currency = Currency::from_code(&body.currency)
        .map_err(|_| bad("invalid-currency", "Unknown currency"))?;
    let password = match (body.password, body.qr_payload) {
        (Some(d), None) => PasswordInput::Digits(d),
        (None, Some(q)) => PasswordInput::Qr(q),
        _ => {
            return Err(bad(
                "invalid-password-input",
                "Give exactly one of password, qr_payload",
            ));
        }
    };
    let req = RedemptionRequest {
        terminal_id: terminal_id.clone(),
        password,
        amount: Money::new(body.amount_minor, currency),
        goods: body.goods,
        channel: if body.short_range {
            RedemptionChannel::ShortRange
        } else {
            RedemptionChannel::KeyedOrScanned
        },
    };
    let host = host_for(&app, None).await?;
    let now = now_ms(&app);
    let presented = host.present(&req.password).map_err(|e| flow_error(&e))?;
    let terminal = load_terminal(&app, &terminal_id).await?;
    let merchant = match &terminal {
        Some(t) => load_merchant(&app, &t.store_id).await?,
        None => None,
    };
    let pw = load_password(&app, &presented.id).await?;
    let o = host.redeem(
        &req,
        &presented,
        terminal.as_ref(),
        merchant.as_ref(),
        pw.as_ref(),
        now,
    );
    let s = run_settlement(&app, o, now).await?;
    Ok((StatusCode::CREATED, Json(settled_view(&s))))
}

/// The merchant-IC-card variant (claims 2, 7, 8).
#[utoipa::path(post, path = "/v1/flow-d/merchant-card-settlements", tag = "flow-d",
    request_body = MerchantCardBody,
    params(("Idempotency-Key" = String, Header, description = "Required on every state-changing call")),
    responses((status = 201, body = SettledView), (status = 400, body = Problem), (status = 403, body = Problem),
              (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn merchant_card(
    State(app): State<AppState>,
    ApiJson(body): ApiJson<MerchantCardBody>,
) -> ApiResult<(StatusCode, Json<SettledView>)> {
    let req = MerchantCardRequest {
        challenge: parse_challenge(&body.challenge)?,
        customer: body.customer,
        merchant: body.merchant,
        currency: body.currency,
        goods: body.goods,
        terminal_id: body
            .terminal_id
            .map(|t| t.parse())
            .transpose()
            .map_err(|_| bad("invalid-terminal-id", "Invalid terminal id"))?,
        method: body.method,
        sealed: unb64(&body.sealed)?,
    };
    let host = host_for(&app, Some(&req.customer.card_id)).await?;
    let now = now_ms(&app);
    let challenge = load_challenge(&app, &req.challenge).await?;
    let customer = load_card(&app, &req.customer.card_id).await?;
    let mcard_row = store::card(&app.db, req.merchant.card_id.as_str())
        .await
        .map_err(internal)?;
    let mcard = load_card(&app, &req.merchant.card_id).await?;
    let merchant = match mcard_row.and_then(|r| r.store_id) {
        Some(s) => load_merchant(&app, &s.parse().map_err(internal)?).await?,
        None => None,
    };
    let o = host.settle_with_merchant_card(
        &req,
        challenge.as_ref(),
        customer.as_ref(),
        mcard.as_ref(),
        merchant.as_ref(),
        now,
    );
    let settled_ok = o.result.is_ok();
    let s = run_settlement(&app, o, now).await?;
    if settled_ok {
        keep_evidence(&app, &req.customer.card_id, &req.sealed, true).await?;
    }
    Ok((StatusCode::CREATED, Json(settled_view(&s))))
}

async fn receipts(
    app: &AppState,
    recipient: String,
    after: i64,
) -> ApiResult<Json<Vec<ReceiptView>>> {
    let rows = store::receipts_after(&app.db, &recipient, after)
        .await
        .map_err(internal)?;
    Ok(Json(
        rows.into_iter()
            .map(|r| ReceiptView {
                seq: r.seq,
                transfer_id: r.transfer_id,
                receipt: b64(&r.receipt),
            })
            .collect(),
    ))
}

/// Receipts pushed to the customer's phone (claim 15).
#[utoipa::path(get, path = "/v1/flow-d/cards/{card_id}/receipts", tag = "flow-d",
    params(("card_id" = String, Path), AfterQuery),
    responses((status = 200, body = Vec<ReceiptView>)))]
pub async fn card_receipts(
    State(app): State<AppState>,
    Path(card_id): Path<String>,
    Query(q): Query<AfterQuery>,
) -> ApiResult<Json<Vec<ReceiptView>>> {
    let id: CardId = card_id
        .parse()
        .map_err(|_| bad("invalid-card-id", "Invalid card id"))?;
    receipts(&app, format!("card:{id}"), q.after).await
}

/// Receipts signalled to a POS terminal (claims 2, 8).
#[utoipa::path(get, path = "/v1/flow-d/terminals/{terminal_id}/receipts", tag = "flow-d",
    params(("terminal_id" = String, Path), AfterQuery),
    responses((status = 200, body = Vec<ReceiptView>)))]
pub async fn terminal_receipts(
    State(app): State<AppState>,
    Path(terminal_id): Path<String>,
    Query(q): Query<AfterQuery>,
) -> ApiResult<Json<Vec<ReceiptView>>> {
    let id: TerminalId = terminal_id
        .parse()
        .map_err(|_| bad("invalid-terminal-id", "Invalid terminal id"))?;
    receipts(&app, format!("terminal:{id}"), q.after).await
}

/// Registers a POS terminal of a registered merchant.
#[utoipa::path(post, path = "/v1/flow-d/admin/terminals", tag = "flow-d",
    request_body = RegisterTerminal,
    params(("Idempotency-Key" = String, Header, description = "Required on every state-changing call")),
    responses((status = 201, body = RegisterTerminal), (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 404, body = Problem), (status = 409, body = Problem)),
    security(("admin_token" = [])))]
pub async fn register_terminal(
    _admin: Admin,
    State(app): State<AppState>,
    ApiJson(body): ApiJson<RegisterTerminal>,
) -> ApiResult<(StatusCode, Json<RegisterTerminal>)> {
    let t: TerminalId = body
        .terminal_id
        .parse()
        .map_err(|_| bad("invalid-terminal-id", "Invalid terminal id"))?;
    let s: StoreId = body
        .store_id
        .parse()
        .map_err(|_| bad("invalid-store-id", "Invalid store id"))?;
    if registry::merchant(&app.db, &s)
        .await
        .map_err(internal)?
        .is_none()
    {
        return Err(ApiError::not_found("merchant"));
    }
    let ok = store::insert_terminal(
        &app.db,
        &store::TerminalRow {
            terminal_id: t.to_string(),
            store_id: s.to_string(),
            guess_failures: 0,
            guess_window_start_ms: 0,
            created_at_ms: app.clock.now_ms(),
        },
    )
    .await
    .map_err(internal)?;
    if !ok {
        return Err(ApiError::conflict(
            "already-registered",
            "Already registered",
        ));
    }
    Ok((StatusCode::CREATED, Json(body)))
}

async fn issued(app: &AppState, id: &CardId) -> ApiResult<()> {
    if kessai_store::cards::card(&app.db, id)
        .await
        .map_err(internal)?
        .is_none()
    {
        return Err(ApiError::not_found("card"));
    }
    Ok(())
}

/// Registers an issued IC card as a flow-D customer card.
#[utoipa::path(post, path = "/v1/flow-d/admin/cards", tag = "flow-d",
    request_body = RegisterCard,
    params(("Idempotency-Key" = String, Header, description = "Required on every state-changing call")),
    responses((status = 201, body = CardView), (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 404, body = Problem), (status = 409, body = Problem)),
    security(("admin_token" = [])))]
pub async fn register_card(
    _admin: Admin,
    State(app): State<AppState>,
    ApiJson(body): ApiJson<RegisterCard>,
) -> ApiResult<(StatusCode, Json<CardView>)> {
    let id: CardId = body
        .card_id
        .parse()
        .map_err(|_| bad("invalid-card-id", "Invalid card id"))?;
    let pan = CardNumber::new(&body.pan).map_err(|_| bad("invalid-pan", "Invalid card number"))?;
    let currency = Currency::from_code(&body.currency)
        .map_err(|_| bad("invalid-currency", "Unknown currency"))?;
    let funding: AccountId = body
        .funding_account
        .parse()
        .map_err(|_| bad("invalid-account", "Invalid funding account id"))?;
    let e = body.expiry_yymm.as_bytes();
    if e.len() != 4 || !e.iter().all(u8::is_ascii_digit) {
        return Err(bad("invalid-expiry", "Expiry must be YYMM"));
    }
    issued(&app, &id).await?;
    if crate::ledger_api::account(&app, &funding).await?.is_none() {
        return Err(ApiError::not_found("account"));
    }
    if let Some(n) = &body.name
        && (!(2..=26).contains(&n.len()) || !n.bytes().all(|b| (0x20..0x7F).contains(&b)))
    {
        return Err(bad("invalid-name", "Name must be 2-26 printable ASCII"));
    }
    let host = host_for(&app, Some(&id)).await?;
    let (card_ref, master, key_version) = {
        let rec = kessai_store::cards::card(&app.db, &id)
            .await
            .map_err(internal)?
            .ok_or_else(|| ApiError::not_found("card"))?;
        let m = app
            .keys
            .card_master_version(&rec.master_key_ref)
            .await
            .map_err(internal)?;
        (rec.master_key_ref, m, rec.key_version)
    };
    let pvd = match &body.pin {
        Some(p) => {
            let pin = Pin::new(p).map_err(|_| bad("invalid-pin", "PIN must be 4-12 digits"))?;
            let pvk = PinVerificationKey::new(derive(PVK_LABEL, &card_ref, &master));
            let mut salt = [0u8; 16];
            rand::fill(&mut salt);
            Some(
                PinVerificationData::derive(&pan, &pin, &pvk, salt)
                    .to_bytes()
                    .to_vec(),
            )
        }
        None => None,
    };
    let tries = app.settings.flow_d.host.max_cvm_tries;
    let part = CustomerPart {
        pan_digest: host.pan_digest(&pan),
        pan_masked: pan.masked(),
        expiry_yymm: body.expiry_yymm.clone(),
        pin_verification: pvd,
        secret_digest: body.secret.as_deref().map(|s| host.secret_digest(&id, s)),
        biometric_enrolled: body.biometric_enrolled,
        cvm_tries_left: tries,
        funding_account: funding,
    };
    let ok = store::insert_card(
        &app.db,
        &store::CardRow {
            card_id: id.to_string(),
            kind: "customer".into(),
            currency: currency.code().into(),
            last_counter: 0,
            blocked: false,
            cvm_tries_left: i64::from(tries),
            pan_digest: Some(part.pan_digest.to_vec()),
            profile: Some(serde_json::to_string(&part).map_err(internal)?),
            store_id: None,
            created_at_ms: app.clock.now_ms(),
        },
    )
    .await
    .map_err(internal)?;
    if !ok {
        return Err(ApiError::conflict(
            "already-registered",
            "Already registered",
        ));
    }
    let profile = match &body.name {
        Some(name) => {
            let (key_ref, key) = app.keys.host_signer().await.map_err(internal)?;
            let p = kessai_flow_d::artefacts::CardProfile {
                card_id: id.clone(),
                pan_digest: kessai_flow_d::artefacts::profile_pan_digest(&id, pan.expose_digits()),
                expiry_yymm: body.expiry_yymm.clone(),
                name: name.clone(),
                key_version,
                currency_numeric: currency.numeric(),
            };
            let cose = kessai_flow_d::artefacts::sign_card_profile(&p, &key, &key_ref)
                .map_err(|e| internal(e.to_string()))?;
            Some(CardProfileView {
                cose: b64(&cose),
                key_ref: key_ref.to_string(),
                public_key: b64(&key.verifying_key().to_bytes()),
            })
        }
        None => None,
    };
    Ok((
        StatusCode::CREATED,
        Json(CardView {
            card_id: id.to_string(),
            kind: "customer".into(),
            pan_masked: Some(part.pan_masked),
            profile,
        }),
    ))
}

/// Registers an issued IC card as a merchant's card (claims 2, 7).
#[utoipa::path(post, path = "/v1/flow-d/admin/merchant-cards", tag = "flow-d",
    request_body = RegisterMerchantCard,
    params(("Idempotency-Key" = String, Header, description = "Required on every state-changing call")),
    responses((status = 201, body = CardView), (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 404, body = Problem), (status = 409, body = Problem)),
    security(("admin_token" = [])))]
pub async fn register_merchant_card(
    _admin: Admin,
    State(app): State<AppState>,
    ApiJson(body): ApiJson<RegisterMerchantCard>,
) -> ApiResult<(StatusCode, Json<CardView>)> {
    let id: CardId = body
        .card_id
        .parse()
        .map_err(|_| bad("invalid-card-id", "Invalid card id"))?;
    let s: StoreId = body
        .store_id
        .parse()
        .map_err(|_| bad("invalid-store-id", "Invalid store id"))?;
    let currency = Currency::from_code(&body.currency)
        .map_err(|_| bad("invalid-currency", "Unknown currency"))?;
    issued(&app, &id).await?;
    if registry::merchant(&app.db, &s)
        .await
        .map_err(internal)?
        .is_none()
    {
        return Err(ApiError::not_found("merchant"));
    }
    let ok = store::insert_card(
        &app.db,
        &store::CardRow {
            card_id: id.to_string(),
            kind: "merchant".into(),
            currency: currency.code().into(),
            last_counter: 0,
            blocked: false,
            cvm_tries_left: 0,
            pan_digest: None,
            profile: None,
            store_id: Some(s.to_string()),
            created_at_ms: app.clock.now_ms(),
        },
    )
    .await
    .map_err(internal)?;
    if !ok {
        return Err(ApiError::conflict(
            "already-registered",
            "Already registered",
        ));
    }
    Ok((
        StatusCode::CREATED,
        Json(CardView {
            card_id: id.to_string(),
            kind: "merchant".into(),
            pan_masked: None,
            profile: None,
        }),
    ))
}

pub use crate::auth::Admin;

/// The flow's routes, nested under `/v1/flow-d`.
pub fn router() -> Router<AppState> {
    let admin = Router::new()
        .route("/admin/terminals", post(register_terminal))
        .route("/admin/cards", post(register_card))
        .route("/admin/merchant-cards", post(register_merchant_card));
    Router::new()
        .route("/keys", get(keys))
        .route("/challenges", post(challenge))
        .route("/authorizations", post(authorize))
        .route("/redemptions", post(redeem))
        .route("/merchant-card-settlements", post(merchant_card))
        .route("/cards/{card_id}/receipts", get(card_receipts))
        .route("/terminals/{terminal_id}/receipts", get(terminal_receipts))
        .merge(admin)
}

/// OpenAPI description of the flow's routes, merged into `/openapi.json`.
#[derive(Debug, OpenApi)]
#[openapi(paths(
    keys,
    challenge,
    authorize,
    redeem,
    merchant_card,
    card_receipts,
    terminal_receipts,
    register_terminal,
    register_card,
    register_merchant_card
))]
pub struct Api;
