//! Flow C HTTP endpoints: the card reader plugged into the customer's phone
//! (seed 002, JP 2002-259866 A; SPEC.md flow C), driving the pure state
//! machine of `kessai-flow-c` from the database.
//!
//! | endpoint | who | seed steps |
//! |---|---|---|
//! | `POST /v1/flow-c/payment-requests` | merchant (signed request) | S1–S4, S9 |
//! | `GET /v1/flow-c/challenge` | phone, merchant | channel authentication ([`wire`]) |
//! | `GET /v1/flow-c/phones/{device}/messages?after=&wait_ms=` | phone (long poll, signed) | S4 → S31, S7 → S34, S16 → S39, S24 → S44 |
//! | `POST /v1/flow-c/transactions/{txn}/approval` | phone (device-key signed) | S5, S6–S7, S33 / S46 |
//! | `POST /v1/flow-c/transactions/{txn}/card-data` | phone relaying the reader | S8, S10–S16, S27 |
//! | `POST /v1/flow-c/transactions/{txn}/pin-block` | phone relaying the reader | S17–S26 |
//! | `GET /v1/flow-c/merchants/{merchant}/transactions/{txn}?wait_ms=` | merchant (signed) | completion 211 |
//! | `POST /v1/flow-c/admin/phones`, `/admin/cards`, `GET /admin/cards/{id}`, `POST /admin/cards/{id}/pin-reset`, `/status` | issuer (admin token) | registration |
//!
//! Authentication rests on the signed artefacts the calls carry (merchant
//! key, device key, AEAD to the transaction key), on channel
//! authentication for the reads, and on the admin token for registration.
//! Every state-changing call goes through the idempotency layer.
//!
//! Timeouts: [`sweep_timeouts`] declines every transaction whose deadline
//! passed (S5, S8, S17) and finishes work a crashed request left behind;
//! call it from a timer (the lead starts it in `serve`), and every flow C
//! request calls it first. A step that finds its deadline passed declines
//! the transaction at once and answers `deadline-passed`.
//!
//! Storage: the transaction is a `flow_support` session (optimistic
//! versions), its key pair is sealed to the issuer's storage key and
//! deleted at the end (see [`secrets`]), PIN try counters are
//! `flow_support` attempt counters (`flowc-pin:<card>`), accepted
//! ciphertexts are once-markers, and every artefact is kept in the evidence
//! store under `flowc:<txn id>` — ciphertexts only until the transaction
//! ends (then their bytes are purged, leaving digests).

use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use kessai_crypto::cose;
use kessai_flow_c::TxnId;
use kessai_flow_c::artefacts::CustomerRef;
use kessai_flow_c::host::{self, CardRecord, CardStatus, HostTxn};
use kessai_flow_c::{ArtefactDigest, FlowError};
use kessai_ids::{CardId, CardholderId, KeyRef};
use kessai_pin::PinVerificationData;
use kessai_secrets::{CardNumber, Pin};
use kessai_store::{flow_c as store, flow_support, registry};
use serde::Deserialize;
use utoipa::OpenApi;

use crate::json::ApiJson;
use crate::problem::{ApiError, Problem};
use crate::state::AppState;

mod engine;
pub mod secrets;
pub mod wire;

pub use engine::{
    DESTRUCTION_EVENT, SweepReport, device_key_ref, evidence_subject, flow_error, outcome_code,
    pin_subject, reason_code, session_id, sweep_timeouts,
};
use engine::{Loaded, internal, load, now_ms};
use wire::{
    ApprovalBody, CardDataBody, CardView, ChallengeView, ChannelAuth, ChannelChallenge,
    MessageView, MessagesView, PaymentRequestBody, PhoneView, PinBlockBody, RegisterCard,
    RegisterPhone, SetCardStatus, TxnView,
};

/// Settings of flow C, part of [`crate::settings::Settings`].
#[derive(Debug, Clone)]
pub struct Settings {
    /// Timeouts (approval S5, card data S8, PIN S17) and PIN tries.
    pub host: host::HostConfig,
    /// How long a channel challenge is valid.
    pub challenge_ttl_ms: u64,
    /// Longest long-poll wait a client may ask for.
    pub max_wait_ms: u64,
    /// How long signed artefacts are kept as evidence (ciphertexts are
    /// purged when their transaction ends).
    pub evidence_retention_ms: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            host: host::HostConfig::default(),
            challenge_ttl_ms: 60_000,
            max_wait_ms: 25_000,
            // About seven years.
            evidence_retention_ms: 7 * 366 * 86_400_000,
        }
    }
}

/// The flow's routes, nested under `/v1/flow-c`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/payment-requests", post(create_payment))
        .route("/challenge", get(challenge))
        .route("/phones/{device}/messages", get(phone_messages))
        .route("/transactions/{txn}/approval", post(approval))
        .route("/transactions/{txn}/card-data", post(card_data))
        .route("/transactions/{txn}/pin-block", post(pin_block))
        .route(
            "/merchants/{merchant}/transactions/{txn}",
            get(merchant_transaction),
        )
        .route("/admin/phones", post(register_phone))
        .route("/admin/cards", post(register_card))
        .route("/admin/cards/{id}", get(get_card))
        .route("/admin/cards/{id}/pin-reset", post(reset_pin))
        .route("/admin/cards/{id}/status", post(set_card_status))
}

/// OpenAPI description of the flow's routes, merged into `/openapi.json`.
#[derive(Debug, OpenApi)]
#[openapi(
    paths(
        create_payment, challenge, phone_messages, approval, card_data, pin_block,
        merchant_transaction, register_phone, register_card, get_card, reset_pin, set_card_status,
    ),
    components(schemas(
        PaymentRequestBody, ApprovalBody, CardDataBody, PinBlockBody, TxnView, ChallengeView,
        MessageView, MessagesView, RegisterPhone, PhoneView, RegisterCard, CardView, SetCardStatus,
    )),
    tags((name = "flow-c", description = "Flow C: card reader plugged into the phone (seed 002)")),
)]
pub struct Api;

type ApiResult<T> = Result<T, ApiError>;

/// Runs the sweeper before a request; a failure is logged, not fatal.
async fn sweep_first(app: &AppState) {
    if let Err(e) = sweep_timeouts(app).await {
        tracing::warn!(error = %e, "flow C: timeout sweep failed");
    }
}

fn parse_txn(s: &str) -> ApiResult<TxnId> {
    s.parse().map_err(|_| ApiError::not_found("transaction"))
}

async fn load_or_404(app: &AppState, txn_id: &TxnId) -> ApiResult<Loaded> {
    load(app, txn_id)
        .await?
        .ok_or_else(|| ApiError::not_found("transaction"))
}

/// Refuses a ciphertext accepted before (in this or any transaction).
async fn refuse_replayed(app: &AppState, bytes: &[u8]) -> ApiResult<()> {
    let d = ArtefactDigest::of(bytes);
    if flow_support::was_used(&app.db, engine::CIPHERTEXT_SCOPE, &d.0)
        .await
        .map_err(internal)?
    {
        return Err(replayed());
    }
    Ok(())
}

fn replayed() -> ApiError {
    ApiError::conflict("ciphertext-replayed", "Ciphertext was already used")
        .with_detail("a captured card-data or PIN ciphertext is never accepted twice")
}

async fn mark_used(app: &AppState, bytes: &[u8]) -> ApiResult<()> {
    let d = ArtefactDigest::of(bytes);
    if !flow_support::use_once(&app.db, engine::CIPHERTEXT_SCOPE, &d.0, app.clock.now_ms())
        .await
        .map_err(internal)?
    {
        return Err(replayed());
    }
    Ok(())
}

/// Maps a step's refusal; `DeadlinePassed` declines the transaction first.
async fn step_error(app: &AppState, keys: &engine::Keys, loaded: Loaded, e: FlowError) -> ApiError {
    if e == FlowError::DeadlinePassed {
        return engine::time_out_now(app, keys, loaded).await;
    }
    flow_error(&e)
}

// ------------------------------------------------------------ merchant side

/// S1–S4: a merchant's signed payment request. Unknown or suspended
/// merchant → `merchant-declined` (S9) and nothing else happens. The same
/// order reference with the same content answers the existing transaction
/// (200); with other content `order-reference-conflict`.
#[utoipa::path(post, path = "/v1/flow-c/payment-requests", tag = "flow-c",
    request_body = PaymentRequestBody,
    params(("Idempotency-Key" = String, Header, description = "Required on every state-changing call")),
    responses((status = 201, body = TxnView, description = "Transaction opened; approval requested on the phone"),
              (status = 200, body = TxnView, description = "Same order again: the existing transaction"),
              (status = 400, body = Problem), (status = 403, body = Problem, description = "merchant-declined (S9)"),
              (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create_payment(
    State(app): State<AppState>,
    ApiJson(body): ApiJson<PaymentRequestBody>,
) -> ApiResult<(StatusCode, Json<TxnView>)> {
    sweep_first(&app).await;
    let bytes = wire::unb64(&body.payment_request, "payment_request")?;
    let kid = host::payment_request_signer(&bytes).map_err(|e| flow_error(&e))?;
    let merchant = engine::merchant_record(&app, &kid).await?;
    let now = now_ms(&app);
    let verified = match host::verify_payment_request(&bytes, merchant.as_ref(), now) {
        Ok(v) => v,
        Err(e) => {
            tracing::info!(signer = %kid, error = %e, "flow C: merchant request refused");
            return Err(flow_error(&e));
        }
    };
    let txn_id = verified.txn_id();
    if let Some(existing) = load(&app, &txn_id).await? {
        existing
            .stored
            .txn
            .check_duplicate(&verified)
            .map_err(|e| flow_error(&e))?;
        let v = engine::view(&app, &existing.stored.txn, true).await?;
        return Ok((StatusCode::OK, Json(v)));
    }
    let phone = match verified.customer() {
        CustomerRef::Phone(n) => store::phone_by_number(&app.db, n).await,
        CustomerRef::Wallet(d) => store::phone_by_device(&app.db, d.as_str()).await,
    }
    .map_err(internal)?;
    let phone = phone.as_ref().and_then(engine::customer_phone);
    let keys = engine::keys(&app).await?;
    let (txn, effects) =
        HostTxn::begin(&verified, phone.as_ref(), &keys.env(), now).map_err(|e| flow_error(&e))?;
    engine::keep_evidence(&app, &txn, &bytes, false).await?;
    let txn = engine::commit(&app, &keys, None, txn, effects).await?;
    tracing::info!(txn = %txn.txn_id(), merchant = %txn.context().merchant_id, amount = %txn.context().amount, "flow C: approval requested");
    Ok((
        StatusCode::CREATED,
        Json(engine::view(&app, &txn, true).await?),
    ))
}

/// Long-poll query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct WaitQuery {
    /// Wait up to this long (capped by the host) for something new.
    #[serde(default)]
    pub wait_ms: u64,
}

/// The merchant's view of its transaction, with the signed completion once
/// it ended (long poll with `wait_ms`). Channel-authenticated as
/// `merchant:<id>`; a merchant sees only its own transactions.
#[utoipa::path(get, path = "/v1/flow-c/merchants/{merchant}/transactions/{txn}", tag = "flow-c",
    params(("merchant" = String, Path, description = "Merchant id"),
           ("txn" = String, Path, description = "Transaction id"),
           WaitQuery,
           ("x-kessai-challenge" = String, Header, description = "Host-signed challenge"),
           ("x-kessai-auth" = String, Header, description = "Merchant-signed channel auth")),
    responses((status = 200, body = TxnView), (status = 401, body = Problem), (status = 404, body = Problem)))]
pub async fn merchant_transaction(
    State(app): State<AppState>,
    Path((merchant, txn)): Path<(String, String)>,
    Query(q): Query<WaitQuery>,
    headers: HeaderMap,
) -> ApiResult<Json<TxnView>> {
    sweep_first(&app).await;
    let request = format!("GET /v1/flow-c/merchants/{merchant}/transactions/{txn}");
    authenticate(&app, &headers, &wire::merchant_party(&merchant), &request).await?;
    let txn_id = parse_txn(&txn)?;
    let deadline = tokio::time::Instant::now() + wait_for(&app, q.wait_ms);
    loop {
        let loaded = load_or_404(&app, &txn_id).await?;
        if loaded.stored.txn.context().merchant_id.as_str() != merchant {
            return Err(ApiError::not_found("transaction"));
        }
        if loaded.stored.txn.state().is_terminal() || tokio::time::Instant::now() >= deadline {
            return Ok(Json(engine::view(&app, &loaded.stored.txn, true).await?));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
        sweep_first(&app).await;
    }
}

const POLL_INTERVAL: Duration = Duration::from_millis(100);

fn wait_for(app: &AppState, wait_ms: u64) -> Duration {
    Duration::from_millis(wait_ms.min(app.settings.flow_c.max_wait_ms))
}

// ---------------------------------------------------------------- channel

/// A host-signed challenge for channel authentication (see [`wire`]).
#[utoipa::path(get, path = "/v1/flow-c/challenge", tag = "flow-c",
    responses((status = 200, body = ChallengeView)))]
pub async fn challenge(State(app): State<AppState>) -> ApiResult<Json<ChallengeView>> {
    let now = now_ms(&app);
    let mut nonce = [0u8; 16];
    rand::fill(&mut nonce);
    let c = ChannelChallenge {
        nonce: hex::encode(nonce),
        issued_at_ms: now,
        expires_at_ms: now.saturating_add(app.settings.flow_c.challenge_ttl_ms),
    };
    let keys = engine::keys(&app).await?;
    let bytes = keys.signer.sign(&c).map_err(internal)?;
    Ok(Json(ChallengeView {
        challenge: wire::b64(&bytes),
        expires_at_ms: c.expires_at_ms,
    }))
}

fn unauthorized(why: &'static str) -> ApiError {
    ApiError::unauthorized().with_detail(why)
}

/// Checks the channel-auth headers for `party` and `request` (see
/// [`wire`]); the auth is single-use.
async fn authenticate(
    app: &AppState,
    headers: &HeaderMap,
    party: &str,
    request: &str,
) -> ApiResult<()> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| unauthorized("x-kessai-challenge and x-kessai-auth headers required"))
    };
    let challenge = wire::unb64(&header(wire::CHALLENGE_HEADER)?, "challenge")?;
    let auth = wire::unb64(&header(wire::AUTH_HEADER)?, "auth")?;
    // The host's own challenge, in its window.
    let kid = cose::peek(&challenge)
        .map_err(|_| unauthorized("challenge unreadable"))?
        .kid;
    let host_vk = app
        .keys
        .host_verifier(&kid)
        .await
        .map_err(|_| unauthorized("challenge not signed by this host"))?;
    let c =
        cose::verify_artefact::<ChannelChallenge>(&challenge, |r| (r == &kid).then_some(host_vk))
            .map_err(|_| unauthorized("challenge not signed by this host"))?
            .into_payload();
    let now = now_ms(app);
    if now >= c.expires_at_ms || c.issued_at_ms > now.saturating_add(5_000) {
        return Err(unauthorized("challenge expired"));
    }
    // The client's signature under its registered key.
    let signer = cose::peek(&auth)
        .map_err(|_| unauthorized("auth unreadable"))?
        .kid;
    let vk = party_key(app, party, &signer)
        .await?
        .ok_or_else(|| unauthorized("auth not signed by the party's registered key"))?;
    let verified = cose::verify_artefact::<ChannelAuth>(&auth, |r| (r == &signer).then_some(vk))
        .map_err(|_| unauthorized("auth not signed by the party's registered key"))?;
    let digest = verified.digest();
    let a = verified.into_payload();
    if a.challenge != hex::encode(kessai_crypto::digest::sha256(&[&challenge]))
        || a.party != party
        || a.request != request
    {
        return Err(unauthorized(
            "auth is for another challenge, party or request",
        ));
    }
    if !flow_support::use_once(&app.db, "flowc-channel-auth", &digest, app.clock.now_ms())
        .await
        .map_err(internal)?
    {
        return Err(unauthorized("auth already used"));
    }
    Ok(())
}

async fn party_key(
    app: &AppState,
    party: &str,
    signer: &KeyRef,
) -> ApiResult<Option<kessai_crypto::sign::VerifyingKey>> {
    if let Some(device) = party.strip_prefix("phone:") {
        let Some(row) = store::phone_by_device(&app.db, device)
            .await
            .map_err(internal)?
        else {
            return Ok(None);
        };
        Ok(engine::customer_phone(&row)
            .filter(|p| &p.key_ref == signer)
            .map(|p| p.key))
    } else if let Some(m) = party.strip_prefix("merchant:") {
        if signer.id.as_str() != m {
            return Ok(None);
        }
        engine::merchant_key(app, signer).await
    } else {
        Ok(None)
    }
}

// ---------------------------------------------------------------- phone side

/// Messages query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct MessagesQuery {
    /// Return messages after this queue position (0: from the start).
    #[serde(default)]
    pub after: i64,
    /// Wait up to this long (capped by the host) if there is none.
    #[serde(default)]
    pub wait_ms: u64,
}

/// The phone's channel (long poll): host-signed approval requests,
/// transaction keys, PIN prompts and completions, oldest first.
/// Channel-authenticated as `phone:<device>` with the device key.
#[utoipa::path(get, path = "/v1/flow-c/phones/{device}/messages", tag = "flow-c",
    params(("device" = String, Path, description = "Device id"), MessagesQuery,
           ("x-kessai-challenge" = String, Header, description = "Host-signed challenge"),
           ("x-kessai-auth" = String, Header, description = "Device-signed channel auth")),
    responses((status = 200, body = MessagesView), (status = 401, body = Problem)))]
pub async fn phone_messages(
    State(app): State<AppState>,
    Path(device): Path<String>,
    Query(q): Query<MessagesQuery>,
    headers: HeaderMap,
) -> ApiResult<Json<MessagesView>> {
    sweep_first(&app).await;
    let request = format!("GET /v1/flow-c/phones/{device}/messages");
    let party = wire::phone_party(&device);
    authenticate(&app, &headers, &party, &request).await?;
    let deadline = tokio::time::Instant::now() + wait_for(&app, q.wait_ms);
    loop {
        let rows = store::messages_after(&app.db, &party, q.after, 100)
            .await
            .map_err(internal)?;
        if !rows.is_empty() || tokio::time::Instant::now() >= deadline {
            let last_seq = rows.last().map_or(q.after, |m| m.seq);
            return Ok(Json(MessagesView {
                messages: rows
                    .into_iter()
                    .map(|m| MessageView {
                        seq: m.seq,
                        txn_id: m.txn_id,
                        kind: m.kind,
                        artefact: wire::b64(&m.artefact),
                    })
                    .collect(),
                last_seq,
            }));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
        sweep_first(&app).await;
    }
}

/// S5 / S33 / S46: the phone's signed approve or reject. Approve → a key
/// pair for this transaction only (stored sealed), its public key signed
/// and queued for the phone; reject → declined to both sides.
#[utoipa::path(post, path = "/v1/flow-c/transactions/{txn}/approval", tag = "flow-c",
    request_body = ApprovalBody,
    params(("txn" = String, Path, description = "Transaction id"),
           ("Idempotency-Key" = String, Header, description = "Required on every state-changing call")),
    responses((status = 200, body = TxnView), (status = 400, body = Problem), (status = 403, body = Problem),
              (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn approval(
    State(app): State<AppState>,
    Path(txn): Path<String>,
    ApiJson(body): ApiJson<ApprovalBody>,
) -> ApiResult<Json<TxnView>> {
    sweep_first(&app).await;
    let txn_id = parse_txn(&txn)?;
    let bytes = wire::unb64(&body.approval_response, "approval_response")?;
    let loaded = load_or_404(&app, &txn_id).await?;
    let keys = engine::keys(&app).await?;
    let mut txn = loaded.stored.txn.clone();
    let step = {
        let mut rng = rand::rng();
        txn.on_approval(&bytes, &keys.env(), now_ms(&app), &mut rng)
    };
    let effects = match step {
        Ok(e) => e,
        Err(e) => return Err(step_error(&app, &keys, loaded, e).await),
    };
    engine::keep_evidence(&app, &txn, &bytes, false).await?;
    let txn = engine::commit(&app, &keys, Some(loaded.version), txn, effects).await?;
    tracing::info!(txn = %txn.txn_id(), state = txn.state().name(), "flow C: phone answered");
    Ok(Json(engine::view(&app, &txn, false).await?))
}

/// S8, S10–S16: sealed card data relayed by the phone. Opened and
/// authenticated with the transaction key (AEAD replaces the seed's
/// re-encrypt-and-compare), the card looked up by keyed PAN hash; unknown
/// card → declined to both (S27); otherwise the PIN prompt goes out.
#[utoipa::path(post, path = "/v1/flow-c/transactions/{txn}/card-data", tag = "flow-c",
    request_body = CardDataBody,
    params(("txn" = String, Path, description = "Transaction id"),
           ("Idempotency-Key" = String, Header, description = "Required on every state-changing call")),
    responses((status = 200, body = TxnView), (status = 400, body = Problem), (status = 404, body = Problem),
              (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn card_data(
    State(app): State<AppState>,
    Path(txn): Path<String>,
    ApiJson(body): ApiJson<CardDataBody>,
) -> ApiResult<Json<TxnView>> {
    sweep_first(&app).await;
    let txn_id = parse_txn(&txn)?;
    let bytes = wire::unb64(&body.sealed_card_data, "sealed_card_data")?;
    let loaded = load_or_404(&app, &txn_id).await?;
    refuse_replayed(&app, &bytes).await?;
    let keys = engine::keys(&app).await?;
    let mut txn = loaded.stored.txn.clone();
    let key_pair = secrets::load_txn_key(&app, txn.transaction_key_ref().as_ref()).await?;
    let opened = match txn.open_card_data(&bytes, key_pair.as_ref(), now_ms(&app)) {
        Ok(o) => o,
        Err(e) => return Err(step_error(&app, &keys, loaded, e).await),
    };
    let card = card_record(&app, &txn, secrets::card_by_pan(&app, opened.pan()).await?).await?;
    let effects = match txn.accept_card(opened, card.as_ref(), &keys.env(), now_ms(&app)) {
        Ok(e) => e,
        Err(e) => return Err(step_error(&app, &keys, loaded, e).await),
    };
    mark_used(&app, &bytes).await?;
    engine::keep_evidence(&app, &txn, &bytes, true).await?;
    let txn = engine::commit(&app, &keys, Some(loaded.version), txn, effects).await?;
    tracing::info!(txn = %txn.txn_id(), state = txn.state().name(), "flow C: card data received");
    Ok(Json(engine::view(&app, &txn, false).await?))
}

/// The card record the pure crate needs, with the persisted PIN counter.
/// A card of another cardholder than the phone's counts as unknown.
async fn card_record(
    app: &AppState,
    txn: &HostTxn,
    row: Option<store::CardRow>,
) -> ApiResult<Option<CardRecord>> {
    let Some(row) = row else { return Ok(None) };
    let phone = store::phone_by_device(&app.db, txn.context().device_id.as_str())
        .await
        .map_err(internal)?;
    if phone.is_none_or(|p| p.cardholder_id != row.cardholder_id) {
        return Ok(None);
    }
    record_from_row(app, &row).await.map(Some)
}

async fn record_from_row(app: &AppState, row: &store::CardRow) -> ApiResult<CardRecord> {
    let max = app.settings.flow_c.host.max_pin_tries;
    let a = flow_support::attempts(&app.db, &pin_subject(&row.card_id))
        .await
        .map_err(internal)?;
    let failures = if a.locked {
        max
    } else {
        u32::try_from(a.failures).unwrap_or(u32::MAX)
    };
    Ok(CardRecord {
        card_id: CardId::new(row.card_id.as_str()).map_err(|_| internal("corrupt card row"))?,
        funding_account: engine::funding_account(row)?,
        expiry_yymm: row.expiry_yymm.clone(),
        status: if row.status == "active" {
            CardStatus::Active
        } else {
            CardStatus::Blocked
        },
        pin_verification: PinVerificationData::from_bytes(&row.pin_verification)
            .map_err(|_| internal("corrupt card row"))?,
        pin_failures: failures,
    })
}

/// S17–S26: the sealed PIN block relayed by the phone. Verified against
/// keyed verification data with the persisted try counter; correct →
/// settlement (cardholder funding → merchant payable), completion to phone
/// and merchant, key and ciphertexts destroyed with an audit record; wrong
/// → one failed try (locks at the limit) and declined to both.
#[utoipa::path(post, path = "/v1/flow-c/transactions/{txn}/pin-block", tag = "flow-c",
    request_body = PinBlockBody,
    params(("txn" = String, Path, description = "Transaction id"),
           ("Idempotency-Key" = String, Header, description = "Required on every state-changing call")),
    responses((status = 200, body = TxnView), (status = 400, body = Problem), (status = 404, body = Problem),
              (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn pin_block(
    State(app): State<AppState>,
    Path(txn): Path<String>,
    ApiJson(body): ApiJson<PinBlockBody>,
) -> ApiResult<Json<TxnView>> {
    sweep_first(&app).await;
    let txn_id = parse_txn(&txn)?;
    let bytes = wire::unb64(&body.sealed_pin_block, "sealed_pin_block")?;
    let loaded = load_or_404(&app, &txn_id).await?;
    refuse_replayed(&app, &bytes).await?;
    let keys = engine::keys(&app).await?;
    let before = loaded.stored.txn.clone();
    let Some(card_id) = before.card_id().cloned() else {
        let mut probe = before.clone();
        // Not awaiting a PIN: let the state machine name the refusal.
        let e = probe.on_timeout(&keys.env(), now_ms(&app)).err().unwrap_or(
            if before.state().is_terminal() {
                FlowError::TransactionEnded
            } else {
                FlowError::UnexpectedStep {
                    state: before.state().name(),
                }
            },
        );
        return Err(step_error(&app, &keys, loaded, e).await);
    };
    let row = store::card_by_id(&app.db, card_id.as_str())
        .await
        .map_err(internal)?
        .ok_or_else(|| internal("card of a transaction vanished"))?;
    let pvk_ref: KeyRef = row
        .pvk_ref
        .parse()
        .map_err(|_| internal("corrupt card row"))?;
    let pvk = secrets::pin_verification_key(&app, &pvk_ref).await?;
    let env = kessai_flow_c::host::HostEnv {
        signer: &keys.signer,
        config: &keys.config,
        pin_verification_key: &pvk,
    };
    let key_pair = secrets::load_txn_key(&app, before.transaction_key_ref().as_ref()).await?;
    let mut record = record_from_row(&app, &row).await?;
    let mut txn = before.clone();
    let mut effects = match txn.on_pin_block(&bytes, key_pair.as_ref(), &record, &env, now_ms(&app))
    {
        Ok(e) => e,
        Err(e) => return Err(step_error(&app, &keys, loaded, e).await),
    };
    let correct = effects
        .iter()
        .any(|e| matches!(e, kessai_flow_c::host::Effect::ResetPinFailures { .. }));
    if correct
        && !flow_support::record_success(&app.db, &pin_subject(card_id.as_str()))
            .await
            .map_err(internal)?
    {
        // Locked by a concurrent wrong PIN meanwhile: a correct PIN must not
        // be honoured now. Decide again with the locked counter.
        record.pin_failures = keys.config.max_pin_tries;
        txn = before.clone();
        effects = txn
            .on_pin_block(&bytes, key_pair.as_ref(), &record, &env, now_ms(&app))
            .map_err(|e| flow_error(&e))?;
    }
    mark_used(&app, &bytes).await?;
    engine::keep_evidence(&app, &txn, &bytes, true).await?;
    let txn = engine::commit(&app, &keys, Some(loaded.version), txn, effects).await?;
    tracing::info!(txn = %txn.txn_id(), state = txn.state().name(), "flow C: PIN block received");
    Ok(Json(engine::view(&app, &txn, false).await?))
}

// --------------------------------------------------------------------- admin

pub use crate::auth::Admin;

/// Registers a customer's phone: phone number ↔ device key ↔ cardholder.
#[utoipa::path(post, path = "/v1/flow-c/admin/phones", tag = "flow-c",
    request_body = RegisterPhone,
    params(("Idempotency-Key" = String, Header, description = "Required on every state-changing call")),
    responses((status = 201, body = PhoneView), (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 404, body = Problem), (status = 409, body = Problem)),
    security(("admin_token" = [])))]
pub async fn register_phone(
    _admin: Admin,
    State(app): State<AppState>,
    ApiJson(req): ApiJson<RegisterPhone>,
) -> ApiResult<(StatusCode, Json<PhoneView>)> {
    let key_ref = device_key_ref(&req.device_id, 1)
        .ok_or_else(|| ApiError::bad_request("invalid-id", "Invalid device id"))?;
    CustomerRef::phone(&req.phone_number)
        .map_err(|_| ApiError::bad_request("invalid-phone-number", "Phone number must be E.164"))?;
    let pk = decode_ed25519(&req.public_key)?;
    let holder = CardholderId::new(req.cardholder_id.as_str())
        .map_err(|_| ApiError::bad_request("invalid-id", "Invalid cardholder id"))?;
    registry::cardholder(&app.db, &holder)
        .await
        .map_err(internal)?
        .ok_or_else(|| ApiError::not_found("cardholder"))?;
    let row = store::PhoneRow {
        device_id: req.device_id.clone(),
        phone_number: req.phone_number.clone(),
        cardholder_id: req.cardholder_id.clone(),
        key_version: 1,
        public_key: pk.to_vec(),
        status: "active".into(),
        created_at_ms: app.clock.now_ms(),
    };
    if !store::insert_phone(&app.db, &row).await.map_err(internal)? {
        return Err(ApiError::conflict(
            "already-registered",
            "Device id or phone number already registered",
        ));
    }
    kessai_store::audit_log::append(
        &app.db,
        row.created_at_ms,
        "flowc.phone_registered",
        &row.device_id,
        &serde_json::json!({ "key_ref": key_ref.to_string(), "cardholder": row.cardholder_id }),
    )
    .await
    .map_err(internal)?;
    Ok((
        StatusCode::CREATED,
        Json(PhoneView {
            device_id: row.device_id,
            phone_number: row.phone_number,
            cardholder_id: row.cardholder_id,
            key_ref: key_ref.to_string(),
            status: row.status,
        }),
    ))
}

fn decode_ed25519(b64: &str) -> ApiResult<[u8; 32]> {
    let bytes = wire::unb64(b64, "public_key")?;
    let pk: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
        ApiError::bad_request("invalid-public-key", "Invalid public key")
            .with_detail("an Ed25519 public key is 32 bytes, base64url")
    })?;
    kessai_crypto::sign::VerifyingKey::from_bytes(&pk).map_err(|_| {
        ApiError::bad_request("invalid-public-key", "Invalid public key")
            .with_detail("not a valid Ed25519 point")
    })?;
    Ok(pk)
}

/// Registers a card: the PAN is kept only as a keyed hash and its masked
/// form, the PIN only as keyed verification data.
#[utoipa::path(post, path = "/v1/flow-c/admin/cards", tag = "flow-c",
    request_body = RegisterCard,
    params(("Idempotency-Key" = String, Header, description = "Required on every state-changing call")),
    responses((status = 201, body = CardView), (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 404, body = Problem), (status = 409, body = Problem)),
    security(("admin_token" = [])))]
pub async fn register_card(
    _admin: Admin,
    State(app): State<AppState>,
    ApiJson(req): ApiJson<RegisterCard>,
) -> ApiResult<(StatusCode, Json<CardView>)> {
    let card_id = CardId::new(req.card_id.as_str())
        .map_err(|_| ApiError::bad_request("invalid-id", "Invalid card id"))?;
    let pan = CardNumber::new(&req.pan)
        .map_err(|_| ApiError::bad_request("invalid-card-number", "Invalid card number"))?;
    let pin = Pin::new(&req.pin)
        .map_err(|_| ApiError::bad_request("invalid-pin", "PIN must be 4 to 12 digits"))?;
    kessai_flow_c::reader::EmulatedCard::new(pan.clone(), &req.expiry_yymm, "CARDHOLDER")
        .map_err(|_| ApiError::bad_request("invalid-expiry", "Expiry must be YYMM"))?;
    let holder = CardholderId::new(req.cardholder_id.as_str())
        .map_err(|_| ApiError::bad_request("invalid-id", "Invalid cardholder id"))?;
    let holder = registry::cardholder(&app.db, &holder)
        .await
        .map_err(internal)?
        .ok_or_else(|| ApiError::not_found("cardholder"))?;
    if secrets::card_by_pan(&app, &pan).await?.is_some() {
        return Err(ApiError::conflict(
            "already-registered",
            "Card already registered",
        ));
    }
    let master = secrets::active_card_master(&app).await?;
    let index = secrets::pan_index(&app, &master, &pan).await?;
    let pvk = secrets::pin_verification_key(&app, &master).await?;
    let pvd = {
        let mut rng = rand::rng();
        PinVerificationData::generate(&pan, &pin, &pvk, &mut rng)
    };
    let row = store::CardRow {
        card_id: card_id.to_string(),
        pan_index: index.to_vec(),
        index_key_ref: master.to_string(),
        masked_pan: pan.masked(),
        expiry_yymm: req.expiry_yymm.clone(),
        cardholder_id: holder.id.to_string(),
        funding_account: holder.funding_account.to_string(),
        pin_verification: pvd.to_bytes().to_vec(),
        pvk_ref: master.to_string(),
        status: "active".into(),
        created_at_ms: app.clock.now_ms(),
    };
    if !store::insert_card(&app.db, &row).await.map_err(internal)? {
        return Err(ApiError::conflict(
            "already-registered",
            "Card already registered",
        ));
    }
    kessai_store::audit_log::append(
        &app.db,
        row.created_at_ms,
        "flowc.card_registered",
        &row.card_id,
        &serde_json::json!({ "masked_pan": row.masked_pan, "cardholder": row.cardholder_id,
                             "key_ref": row.pvk_ref }),
    )
    .await
    .map_err(internal)?;
    tracing::info!(card = %row.card_id, pan = %row.masked_pan, "flow C: card registered");
    Ok((StatusCode::CREATED, Json(card_view(&app, &row).await?)))
}

async fn card_view(app: &AppState, row: &store::CardRow) -> ApiResult<CardView> {
    let a = flow_support::attempts(&app.db, &pin_subject(&row.card_id))
        .await
        .map_err(internal)?;
    Ok(CardView {
        card_id: row.card_id.clone(),
        masked_pan: row.masked_pan.clone(),
        cardholder_id: row.cardholder_id.clone(),
        status: row.status.clone(),
        pin_failures: a.failures,
        pin_locked: a.locked,
    })
}

async fn card_row(app: &AppState, id: &str) -> ApiResult<store::CardRow> {
    store::card_by_id(&app.db, id)
        .await
        .map_err(internal)?
        .ok_or_else(|| ApiError::not_found("card"))
}

/// A card: masked PAN, status, PIN try counter.
#[utoipa::path(get, path = "/v1/flow-c/admin/cards/{id}", tag = "flow-c",
    params(("id" = String, Path, description = "Card id")),
    responses((status = 200, body = CardView), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("admin_token" = [])))]
pub async fn get_card(
    _admin: Admin,
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<CardView>> {
    let row = card_row(&app, &id).await?;
    Ok(Json(card_view(&app, &row).await?))
}

/// Lifts a PIN lockout (issuer action, audited).
#[utoipa::path(post, path = "/v1/flow-c/admin/cards/{id}/pin-reset", tag = "flow-c",
    params(("id" = String, Path, description = "Card id"),
           ("Idempotency-Key" = String, Header, description = "Required on every state-changing call")),
    responses((status = 200, body = CardView), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("admin_token" = [])))]
pub async fn reset_pin(
    _admin: Admin,
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<CardView>> {
    let row = card_row(&app, &id).await?;
    flow_support::reset_attempts(&app.db, &pin_subject(&row.card_id))
        .await
        .map_err(internal)?;
    kessai_store::audit_log::append(
        &app.db,
        app.clock.now_ms(),
        "flowc.pin_reset",
        &row.card_id,
        &serde_json::json!({}),
    )
    .await
    .map_err(internal)?;
    Ok(Json(card_view(&app, &row).await?))
}

/// Blocks or reactivates a card.
#[utoipa::path(post, path = "/v1/flow-c/admin/cards/{id}/status", tag = "flow-c",
    request_body = SetCardStatus,
    params(("id" = String, Path, description = "Card id"),
           ("Idempotency-Key" = String, Header, description = "Required on every state-changing call")),
    responses((status = 200, body = CardView), (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 404, body = Problem)),
    security(("admin_token" = [])))]
pub async fn set_card_status(
    _admin: Admin,
    State(app): State<AppState>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<SetCardStatus>,
) -> ApiResult<Json<CardView>> {
    if !matches!(req.status.as_str(), "active" | "blocked") {
        return Err(ApiError::bad_request(
            "invalid-status",
            "Status must be active or blocked",
        ));
    }
    let row = card_row(&app, &id).await?;
    store::set_card_status(&app.db, &row.card_id, &req.status)
        .await
        .map_err(internal)?;
    let row = card_row(&app, &id).await?;
    Ok(Json(card_view(&app, &row).await?))
}
