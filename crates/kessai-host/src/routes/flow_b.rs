//! Flow B HTTP endpoints (IC-card e-money, seeds 001/004; see
//! ARCHITECTURE.md and the `kessai-flow-b` crate docs). Authentication of
//! these calls rests on the signed artefacts they carry and on the SCP03
//! secure channel to the card, not on the admin token; the `admin/` routes
//! need the admin token. Every state-changing call goes through the
//! idempotency layer.
//!
//! | endpoint | step (claim) |
//! |---|---|
//! | `GET /keys` | host signing keys (SIG2/3/5), registered store and mall keys (SIG1/4), the transmission key for top-up credentials |
//! | `POST /purchases` | BILL (SIG1) from the wallet → verify, open the card session (ST8–ST11; claims 2, 3) |
//! | `POST /sessions/{id}/responses` | relayed card responses → next APDUs inside SETTLEMENT INFORMATION (SIG2) or VALUE UPDATE (SIG5), or the completion ACN (SIG3) (ST12–ST19; claims 1, 4, 5, 8, 9) |
//! | `POST /top-ups` | VALUE UPDATE request: HPKE-sealed funding credentials → credit authorizer → card session |
//! | `POST /receipts` | the store's receipt (SIG4) → verified and kept (ST112; claims 6, 14) |
//! | `GET /bills/{store}/{order}` | a bill's status and completion, for the store (also completions reached by recovery) |
//! | `POST /admin/funding-cards` | register a cardholder's funding card (keyed hash, masked number, PIN verification data) |
//!
//! Each card-session step loads the session (optimistic version), runs the
//! pure [`kessai_flow_b::host::CardSession::handle`], and commits the new
//! state with every effect in one database transaction (bill reservation
//! and settlement under a unique key, the card's pending operation, the
//! shadow, the ledger requests in an outbox); the ledger requests are then
//! submitted by transfer id, before the reply leaves. A refused step
//! changes nothing.
//!
//! COSE artefacts travel base64url (no padding) inside JSON; the
//! wallet↔host messages are the flow crate's serde types (byte strings as
//! hex).

mod support;

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use kessai_crypto::cose::{self, Artefact};
use kessai_crypto::hpke::{HpkeKeyPair, HpkePublicKey};
use kessai_flow_b::Effect;
use kessai_flow_b::FlowError;
use kessai_flow_b::funding::{
    FundingAccountRecord, FundingCredentials, FundingDecision, TopUpRequest, authorize_funding,
};
use kessai_flow_b::host::{self, Sig2Mode};
use kessai_flow_b::messages::{CardResponses, HostToWallet};
use kessai_flow_b::registry::{BillStatus, MerchantRows};
use kessai_ids::{CardId, CardholderId, KeyRef, OrderId, StoreId};
use kessai_money::{Currency, Money};
use kessai_pin::{PinBlock, PinKey, PinVerificationData};
use kessai_secrets::{CardNumber, Pin};
use kessai_store::flow_b as store;
use kessai_store::flow_support;
use kessai_store::registry::{self, KeyState, MerchantKind};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};
use zeroize::Zeroize;

use crate::json::ApiJson;
use crate::keystore::KeyPurpose;
use crate::problem::{ApiError, Problem};
use crate::state::AppState;
use support::{flow_error, internal};

pub use support::{bill_subject, top_up_subject};

/// Settings of flow B, part of [`crate::settings::Settings`].
#[derive(Debug, Clone)]
pub struct Settings {
    /// First embodiment (`Signed`: settlement information carries the
    /// SECOND SIGNATURE) or second (`Omitted`).
    pub sig2: Sig2Mode,
    /// How long a card session may take from its start.
    pub session_timeout_ms: u64,
    /// Expiry of the ledger hold behind a card debit or credit. Recovery
    /// resolves it at the card's next contact, so it is very long (default
    /// ten years): a hold must not expire (`maintenance` sweeps expired
    /// holds) before the card is seen again, or a debit the card did make
    /// could no longer be posted.
    pub hold_ttl_ms: u64,
    /// Failed funding-PIN tries before the funding card locks.
    pub max_pin_tries: u8,
    /// Retention of the flow's evidence (`None`: keep).
    pub evidence_retention_ms: Option<u64>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            sig2: Sig2Mode::Signed,
            session_timeout_ms: 120_000,
            hold_ttl_ms: 3_650 * 86_400_000,
            max_pin_tries: 3,
            evidence_retention_ms: None,
        }
    }
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

fn b64_decode(field: &'static str, s: &str) -> Result<Vec<u8>, ApiError> {
    B64.decode(s.trim_end_matches('=')).map_err(|_| {
        ApiError::bad_request("invalid-base64", "Invalid base64url")
            .with_detail(format!("{field} is not base64url"))
    })
}

/// AAD of the sealed funding credentials.
pub const FUNDING_CREDENTIALS_AAD: &[u8] = b"kessai/flow-b/top-up-credentials/v1";

/// What a wallet seals to the host's transmission key for a top-up: the
/// funding card, its expiry, and the PIN as an ISO 9564 format-4 PIN block
/// under a fresh AES PIN key that travels inside the same HPKE envelope.
/// Binds the card and amount so it cannot be replayed for another top-up
/// target. Zeroized on drop; never logged.
#[derive(Serialize, Deserialize)]
pub struct FundingCredentialsEnvelope {
    /// The IC card to load.
    pub card_id: CardId,
    /// The amount.
    pub amount: Money,
    /// Funding card number, digits.
    pub pan: String,
    /// Its expiry, `YYMM`.
    pub expiry_yymm: String,
    /// AES-128 key of the PIN block.
    pub pin_key: Vec<u8>,
    /// The format-4 PIN block.
    pub pin_block: Vec<u8>,
}

impl std::fmt::Debug for FundingCredentialsEnvelope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FundingCredentialsEnvelope(redacted)")
    }
}

impl Drop for FundingCredentialsEnvelope {
    fn drop(&mut self) {
        self.pan.zeroize();
        self.pin_key.zeroize();
        self.pin_block.zeroize();
    }
}

impl Artefact for FundingCredentialsEnvelope {
    const TYPE: &'static str = "flow-b.funding-credentials";
    const VERSION: u32 = 1;
}

/// Wallet side: seals funding credentials to the host's transmission key
/// (from `GET /v1/flow-b/keys`) and returns the base64url COSE_Encrypt0.
pub fn seal_funding_credentials(
    transmission_ref: &KeyRef,
    transmission_key: &HpkePublicKey,
    card_id: &CardId,
    amount: Money,
    pan: &CardNumber,
    expiry_yymm: &str,
    pin: &Pin,
) -> Result<String, ApiError> {
    let mut rng = rand::rng();
    let mut key = zeroize::Zeroizing::new([0u8; 16]);
    rand::Rng::fill_bytes(&mut rng, &mut key[..]);
    let pin_key = PinKey::from_slice(&key[..]).map_err(internal)?;
    let block = kessai_pin::encipher_pin_block(pin, pan, &pin_key, &mut rng);
    let envelope = FundingCredentialsEnvelope {
        card_id: card_id.clone(),
        amount,
        pan: String::from_utf8_lossy(pan.expose_digits()).into_owned(),
        expiry_yymm: expiry_yymm.to_string(),
        pin_key: key.to_vec(),
        pin_block: block.expose_bytes().to_vec(),
    };
    let sealed = cose::seal_artefact(
        &envelope,
        transmission_key,
        transmission_ref,
        FUNDING_CREDENTIALS_AAD,
        &mut rng,
    )
    .map_err(internal)?;
    Ok(B64.encode(sealed))
}

// ------------------------------------------------------------------- keys

/// One published public key.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishedKey {
    /// `id#version` (the COSE `kid`).
    pub key_ref: String,
    /// Public key, base64url (Ed25519 or X25519).
    pub public_key: String,
    /// Merchant id, for store and mall keys.
    pub merchant_id: Option<String>,
    /// `store` or `mall`, for merchant keys.
    pub kind: Option<String>,
}

/// The keys wallets and stores need.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishedKeys {
    /// Host signing keys (SIG2, SIG3, SIG5), active and retiring.
    pub host_keys: Vec<PublishedKey>,
    /// Registered store and mall signing keys (SIG1, SIG4), active and
    /// retiring.
    pub merchant_keys: Vec<PublishedKey>,
    /// The active HPKE transmission key (top-up credentials).
    pub transmission_key: PublishedKey,
    /// `signed` or `omitted` (second embodiment).
    pub sig2: String,
}

/// The published keys.
#[utoipa::path(get, path = "/v1/flow-b/keys", tag = "flow-b",
    responses((status = 200, body = PublishedKeys)))]
pub async fn keys(State(app): State<AppState>) -> Result<Json<PublishedKeys>, ApiError> {
    let mut host_keys = Vec::new();
    for k in app.keys.list().await.map_err(internal)? {
        if k.purpose == KeyPurpose::HostSign && k.state != "retired" {
            host_keys.push(PublishedKey {
                key_ref: k.key_ref.to_string(),
                public_key: k.public_key,
                merchant_id: None,
                kind: None,
            });
        }
    }
    let mut merchant_keys = Vec::new();
    for m in registry::merchants(&app.db).await.map_err(internal)? {
        let kind = match m.kind {
            MerchantKind::Store => "store",
            MerchantKind::Mall => "mall",
            MerchantKind::Member => continue,
        };
        for k in registry::merchant_keys(&app.db, &m.id)
            .await
            .map_err(internal)?
        {
            if k.state == KeyState::Retired {
                continue;
            }
            merchant_keys.push(PublishedKey {
                key_ref: format!("{}#{}", m.id, k.version),
                public_key: B64.encode(&k.public_key),
                merchant_id: Some(m.id.to_string()),
                kind: Some(kind.to_string()),
            });
        }
    }
    let (tref, tpk) = app
        .keys
        .hpke_public(KeyPurpose::Transmission)
        .await
        .map_err(internal)?;
    Ok(Json(PublishedKeys {
        host_keys,
        merchant_keys,
        transmission_key: PublishedKey {
            key_ref: tref.to_string(),
            public_key: B64.encode(tpk.to_bytes()),
            merchant_id: None,
            kind: None,
        },
        sig2: match app.settings.flow_b.sig2 {
            Sig2Mode::Signed => "signed",
            Sig2Mode::Omitted => "omitted",
        }
        .to_string(),
    }))
}

// --------------------------------------------------------------- purchases

/// A wallet submits the store's bill for its card (ST8).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BeginPurchase {
    /// The BILL (COSE_Sign1 with the FIRST SIGNATURE), base64url.
    pub bill: String,
    /// The card that pays.
    #[schema(value_type = String)]
    pub card_id: CardId,
}

/// Verify a bill and open the card session: answers the SCP03 handshake
/// commands for the wallet to relay.
#[utoipa::path(post, path = "/v1/flow-b/purchases", tag = "flow-b",
    request_body = BeginPurchase,
    params(("Idempotency-Key" = String, Header, description = "required")),
    responses(
        (status = 200, description = "host → wallet message (card_exchange)", body = Object),
        (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn begin_purchase(
    State(app): State<AppState>,
    ApiJson(req): ApiJson<BeginPurchase>,
) -> Result<Json<HostToWallet>, ApiError> {
    let settings = &app.settings.flow_b;
    support::drain_outbox(&app).await?;
    let bill = b64_decode("bill", &req.bill)?;
    let (store_id, mall_id) = host::peek_bill_route(&bill).map_err(|e| flow_error(&e))?;
    let (store_rec, mall_rec) = support::merchant_rows(&app, &store_id, mall_id.as_ref()).await?;
    let (card, master_ref) = support::card_record(&app, &req.card_id).await?;
    let cfg = support::host_config(&app, settings, &master_ref, None, None).await?;
    let now = support::now_ms(&app);
    // The bill's key is only trusted after verification; read its status
    // with the verified key inside begin_purchase's decision.
    let verified = host::verify_bill(
        &bill,
        MerchantRows {
            store: &store_rec,
            mall: mall_rec.as_ref(),
        },
        now,
    )
    .map_err(|e| flow_error(&e))?;
    let key = verified.bill().key();
    let status = match store::bill(&app.db, key.store_id.as_str(), key.order_id.as_str())
        .await
        .map_err(internal)?
    {
        None => BillStatus::Open,
        Some(r) => match r.status.as_str() {
            "settled" => BillStatus::Settled,
            "reserved" => BillStatus::Reserved,
            _ => BillStatus::Open,
        },
    };
    let t = {
        let mut rng = rand::rng();
        host::begin_purchase(
            &cfg,
            &bill,
            MerchantRows {
                store: &store_rec,
                mall: mall_rec.as_ref(),
            },
            status,
            &card,
            now,
            &mut rng,
        )
        .map_err(|e| flow_error(&e))?
    };
    support::create_session(&app, &t).await?;
    if !t.effects.is_empty() {
        let (stored, _) = support::load_session(&app, &hex::encode(t.session.session_id())).await?;
        support::commit(&app, settings, Some(&stored), &t).await?;
    }
    tracing::info!(store = %key.store_id, order = %key.order_id, card = %req.card_id, "flow-b: purchase session opened");
    Ok(Json(t.reply))
}

/// The wallet relays the card's responses of one step.
#[utoipa::path(post, path = "/v1/flow-b/sessions/{id}/responses", tag = "flow-b",
    request_body(content = Object, description = "card responses: {session_id, step, responses[] (hex)}"),
    params(("id" = String, Path, description = "session id (hex)"),
           ("Idempotency-Key" = String, Header, description = "required")),
    responses(
        (status = 200, description = "next host → wallet message", body = Object),
        (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn session_responses(
    State(app): State<AppState>,
    Path(id): Path<String>,
    ApiJson(msg): ApiJson<CardResponses>,
) -> Result<Json<HostToWallet>, ApiError> {
    let settings = &app.settings.flow_b;
    support::drain_outbox(&app).await?;
    let (stored, session) = support::load_session(&app, &id).await?;
    let (card, master_ref) = support::card_record(&app, session.card_id()).await?;
    let cfg = support::host_config(&app, settings, &master_ref, None, None).await?;
    let t = session
        .handle(&cfg, &card, &msg, support::now_ms(&app))
        .map_err(|e| {
            tracing::info!(session = %id, error = %e, "flow-b: card responses refused");
            flow_error(&e)
        })?;
    support::commit(&app, settings, Some(&stored), &t).await?;
    Ok(Json(t.reply))
}

// ----------------------------------------------------------------- top-ups

/// A wallet asks for a top-up paid by a funding card.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BeginTopUp {
    /// The IC card to load.
    #[schema(value_type = String)]
    pub card_id: CardId,
    /// Amount, minor units.
    pub amount_minor: i64,
    /// ISO 4217 currency.
    #[schema(value_type = String, example = "JPY")]
    pub currency: Currency,
    /// [`FundingCredentialsEnvelope`] sealed (COSE_Encrypt0, HPKE) to the
    /// transmission key, base64url.
    pub credentials: String,
}

/// Value update: authorize the funding card, then open the card session
/// for the CREDIT under the FIFTH SIGNATURE.
#[utoipa::path(post, path = "/v1/flow-b/top-ups", tag = "flow-b",
    request_body = BeginTopUp,
    params(("Idempotency-Key" = String, Header, description = "required")),
    responses(
        (status = 200, description = "host → wallet message (card_exchange)", body = Object),
        (status = 422, body = Problem)))]
pub async fn begin_top_up(
    State(app): State<AppState>,
    ApiJson(req): ApiJson<BeginTopUp>,
) -> Result<Json<HostToWallet>, ApiError> {
    let settings = &app.settings.flow_b;
    support::drain_outbox(&app).await?;
    let amount = Money::new(req.amount_minor, req.currency);
    let sealed = b64_decode("credentials", &req.credentials)?;
    let unreadable =
        || ApiError::unprocessable("credentials-unreadable", "Funding credentials do not open");
    // Every non-retired transmission key version may have sealed it.
    let mut pairs: Vec<(KeyRef, HpkeKeyPair)> = Vec::new();
    for k in app.keys.list().await.map_err(internal)? {
        if k.purpose == KeyPurpose::Transmission && k.state != "retired" {
            let kp = app
                .keys
                .hpke_keypair(&k.key_ref, KeyPurpose::Transmission)
                .await
                .map_err(internal)?;
            pairs.push((k.key_ref, kp));
        }
    }
    let opened = cose::open_artefact::<FundingCredentialsEnvelope, &HpkeKeyPair>(
        &sealed,
        |r| pairs.iter().find(|(k, _)| k == r).map(|(_, p)| p),
        FUNDING_CREDENTIALS_AAD,
    )
    .map_err(|_| unreadable())?;
    let env = opened.payload();
    if env.card_id != req.card_id || env.amount != amount {
        return Err(ApiError::unprocessable(
            "credentials-mismatch",
            "Funding credentials were sealed for another top-up",
        ));
    }
    let refused = || flow_error(&FlowError::FundingCardRefused);
    let pan = CardNumber::new(&env.pan).map_err(|_| refused())?;
    let pin_block = PinBlock::from_slice(&env.pin_block).map_err(|_| unreadable())?;
    let pin_key = PinKey::from_slice(&env.pin_key).map_err(|_| unreadable())?;
    let mut found = None;
    for (key_ref, fk) in support::funding_key_versions(&app).await? {
        if let Some(row) = store::funding_card_by_index(&app.db, &fk.pan_index(&pan))
            .await
            .map_err(internal)?
            && row.key_ref == key_ref.to_string()
        {
            found = Some((row, fk));
            break;
        }
    }
    let Some((row, fk)) = found else {
        return Err(refused());
    };
    let account_id: kessai_ids::AccountId = row.account_id.parse().map_err(internal)?;
    let pin_subject = format!("flow-b/funding-pin/{}", row.account_id);
    let tries = flow_support::attempts(&app.db, &pin_subject)
        .await
        .map_err(internal)?;
    let failed = if tries.locked {
        settings.max_pin_tries
    } else {
        u8::try_from(tries.failures).unwrap_or(u8::MAX)
    };
    let ledger_account = crate::ledger_api::account(&app, &account_id)
        .await?
        .ok_or_else(|| ApiError::not_found("funding account"))?;
    let (card, master_ref) = support::card_record(&app, &req.card_id).await?;
    let cfg =
        support::host_config(&app, settings, &master_ref, Some(pin_key), Some(fk.pvk)).await?;
    let funding = FundingAccountRecord {
        account: account_id.clone(),
        pan: pan.clone(),
        expiry_yymm: row.expiry_yymm.clone(),
        pin_data: PinVerificationData::from_bytes(&row.pin_data).map_err(internal)?,
        failed_pin_tries: failed,
    };
    let request = TopUpRequest {
        card_id: req.card_id.clone(),
        amount,
        credentials: FundingCredentials {
            pan,
            expiry_yymm: env.expiry_yymm.clone(),
            pin_block,
        },
    };
    let now = support::now_ms(&app);
    let decision = {
        let mut rng = rand::rng();
        authorize_funding(&cfg, &request, &funding, &ledger_account, now, &mut rng)
    };
    let (result, effects) = match decision {
        FundingDecision::Approved {
            authorization,
            effects,
        } => (Ok(authorization), effects),
        FundingDecision::Declined { error, effects } => (Err(error), effects),
    };
    for e in &effects {
        if let Effect::RecordPinTry { failed_tries, .. } = e {
            if *failed_tries == 0 {
                flow_support::record_success(&app.db, &pin_subject)
                    .await
                    .map_err(internal)?;
            } else {
                let a = flow_support::record_failure(
                    &app.db,
                    &pin_subject,
                    i64::from(settings.max_pin_tries),
                    app.clock.now_ms(),
                )
                .await
                .map_err(internal)?;
                if a.locked {
                    kessai_store::audit_log::append(
                        &app.db,
                        app.clock.now_ms(),
                        "flow_b.funding_pin_locked",
                        &row.account_id,
                        &serde_json::json!({ "card": row.pan_masked }),
                    )
                    .await
                    .map_err(internal)?;
                }
            }
        }
    }
    let authorization = result.map_err(|e| {
        tracing::info!(card = %req.card_id, funding = %row.pan_masked, error = %e, "flow-b: top-up declined");
        flow_error(&e)
    })?;
    let t = {
        let mut rng = rand::rng();
        host::begin_top_up(&cfg, authorization, &card, now, &mut rng).map_err(|e| flow_error(&e))?
    };
    support::create_session(&app, &t).await?;
    tracing::info!(card = %req.card_id, funding = %row.pan_masked, amount = %amount, "flow-b: top-up authorized");
    Ok(Json(t.reply))
}

// ---------------------------------------------------------------- receipts

/// The store's receipt for a completion.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitReceipt {
    /// The selling store.
    #[schema(value_type = String)]
    pub store_id: StoreId,
    /// The order.
    #[schema(value_type = String)]
    pub order_id: OrderId,
    /// SETTLEMENT COMPLETION RECEIPT (COSE_Sign1, FOURTH SIGNATURE), base64url.
    pub receipt: String,
}

/// A verified receipt.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReceiptAccepted {
    /// SHA-256 of the receipt, hex.
    pub receipt_digest: String,
    /// False if this receipt was already kept.
    pub recorded: bool,
}

/// Verify and keep the store's receipt (SIG4).
#[utoipa::path(post, path = "/v1/flow-b/receipts", tag = "flow-b",
    request_body = SubmitReceipt,
    params(("Idempotency-Key" = String, Header, description = "required")),
    responses((status = 200, body = ReceiptAccepted),
        (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn submit_receipt(
    State(app): State<AppState>,
    ApiJson(req): ApiJson<SubmitReceipt>,
) -> Result<Json<ReceiptAccepted>, ApiError> {
    let receipt = b64_decode("receipt", &req.receipt)?;
    let completion = store::completion(&app.db, req.store_id.as_str(), req.order_id.as_str())
        .await
        .map_err(internal)?
        .ok_or_else(|| ApiError::not_found("completion"))?;
    let mall_id = completion
        .mall_id
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(internal)?;
    let (s, m) = support::merchant_rows(&app, &req.store_id, mall_id.as_ref()).await?;
    let (verified, _) = host::verify_receipt(
        &receipt,
        &completion.completion,
        MerchantRows {
            store: &s,
            mall: m.as_ref(),
        },
    )
    .map_err(|e| flow_error(&e))?;
    support::put_evidence(
        &app,
        &app.settings.flow_b,
        &bill_subject(req.store_id.as_str(), req.order_id.as_str()),
        kessai_flow_b::artefacts::EvidenceKind::Receipt,
        &receipt,
    )
    .await?;
    let recorded = store::insert_receipt(
        &app.db,
        req.store_id.as_str(),
        req.order_id.as_str(),
        &verified.receipt().completion_digest,
        &verified.digest(),
        app.clock.now_ms(),
    )
    .await
    .map_err(internal)?;
    Ok(Json(ReceiptAccepted {
        receipt_digest: hex::encode(verified.digest()),
        recorded,
    }))
}

/// A bill as the host knows it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BillView {
    /// `unknown`, `open`, `reserved` or `settled`.
    pub status: String,
    /// The completion (SIG3), base64url, once settled.
    pub completion: Option<String>,
    /// True if the settlement was completed by recovery.
    pub recovered: bool,
    /// Receipts (SIG4) kept.
    pub receipts: i64,
}

/// A bill's status and completion (for the store; also completions that
/// recovery reached after the customer's session ended).
#[utoipa::path(get, path = "/v1/flow-b/bills/{store_id}/{order_id}", tag = "flow-b",
    params(("store_id" = String, Path), ("order_id" = String, Path)),
    responses((status = 200, body = BillView)))]
pub async fn bill_status(
    State(app): State<AppState>,
    Path((store_id, order_id)): Path<(String, String)>,
) -> Result<Json<BillView>, ApiError> {
    let row = store::bill(&app.db, &store_id, &order_id)
        .await
        .map_err(internal)?;
    let completion = store::completion(&app.db, &store_id, &order_id)
        .await
        .map_err(internal)?;
    Ok(Json(BillView {
        status: row.map_or_else(|| "unknown".to_string(), |r| r.status),
        recovered: completion.as_ref().is_some_and(|c| c.recovered),
        completion: completion.map(|c| B64.encode(c.completion)),
        receipts: store::receipt_count(&app.db, &store_id, &order_id)
            .await
            .map_err(internal)?,
    }))
}

// ------------------------------------------------------------------- admin

/// Register a cardholder's funding (credit) card for top-ups. The PIN is
/// only used to compute keyed verification data; the card number is kept
/// as a keyed hash and a masked form.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterFundingCard {
    /// The cardholder (their funding account is the credit line).
    #[schema(value_type = String)]
    pub cardholder_id: CardholderId,
    /// Card number (ISO/IEC 7812).
    #[schema(value_type = String)]
    pub pan: CardNumber,
    /// Expiry, `YYMM`.
    pub expiry_yymm: String,
    /// PIN (4-12 digits).
    #[schema(value_type = String)]
    pub pin: PinText,
}

/// A PIN as it arrives in an admin body: zeroized on drop, never printed.
#[derive(Deserialize)]
#[serde(transparent)]
pub struct PinText(String);

impl std::fmt::Debug for PinText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PinText(redacted)")
    }
}

impl Drop for PinText {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// A registered funding card.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FundingCardView {
    /// Funding account.
    pub account_id: String,
    /// Masked card number.
    pub pan_masked: String,
    /// Expiry.
    pub expiry_yymm: String,
}

/// Register a funding card (admin).
#[utoipa::path(post, path = "/v1/flow-b/admin/funding-cards", tag = "flow-b",
    request_body = RegisterFundingCard,
    params(("Idempotency-Key" = String, Header, description = "required")),
    security(("admin" = [])),
    responses((status = 200, body = FundingCardView),
        (status = 401, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn register_funding_card(
    _admin: Admin,
    State(app): State<AppState>,
    ApiJson(req): ApiJson<RegisterFundingCard>,
) -> Result<Json<FundingCardView>, ApiError> {
    let b = req.expiry_yymm.as_bytes();
    if b.len() != 4
        || !b.iter().all(u8::is_ascii_digit)
        || !(1..=12).contains(&((b[2] - b'0') * 10 + (b[3] - b'0')))
    {
        return Err(ApiError::bad_request(
            "invalid-expiry",
            "Expiry must be YYMM",
        ));
    }
    let pin = Pin::new(&req.pin.0)
        .map_err(|_| ApiError::bad_request("invalid-pin", "PIN must be 4 to 12 digits"))?;
    let holder = registry::cardholder(&app.db, &req.cardholder_id)
        .await
        .map_err(internal)?
        .ok_or_else(|| ApiError::not_found("cardholder"))?;
    let (master_ref, master) = app.keys.card_master().await.map_err(internal)?;
    let fk = support::FundingKeys::derive(&master);
    let pin_data = {
        let mut rng = rand::rng();
        PinVerificationData::generate(&req.pan, &pin, &fk.pvk, &mut rng)
    };
    let row = store::FundingCardRow {
        account_id: holder.funding_account.to_string(),
        cardholder_id: req.cardholder_id.to_string(),
        pan_index: fk.pan_index(&req.pan).to_vec(),
        pan_masked: req.pan.masked(),
        expiry_yymm: req.expiry_yymm.clone(),
        pin_data: pin_data.to_bytes().to_vec(),
        key_ref: master_ref.to_string(),
        created_at_ms: app.clock.now_ms(),
    };
    if !store::upsert_funding_card(&app.db, &row)
        .await
        .map_err(internal)?
    {
        return Err(ApiError::conflict(
            "funding-card-taken",
            "This card number is registered to another cardholder",
        ));
    }
    kessai_store::audit_log::append(
        &app.db,
        app.clock.now_ms(),
        "flow_b.funding_card_registered",
        req.cardholder_id.as_str(),
        &serde_json::json!({ "card": row.pan_masked }),
    )
    .await
    .map_err(internal)?;
    Ok(Json(FundingCardView {
        account_id: row.account_id,
        pan_masked: row.pan_masked,
        expiry_yymm: row.expiry_yymm,
    }))
}

/// The flow's routes, nested under `/v1/flow-b`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/keys", get(keys))
        .route("/purchases", post(begin_purchase))
        .route("/sessions/{id}/responses", post(session_responses))
        .route("/top-ups", post(begin_top_up))
        .route("/receipts", post(submit_receipt))
        .route("/bills/{store_id}/{order_id}", get(bill_status))
        .route("/admin/funding-cards", post(register_funding_card))
}

pub use crate::auth::Admin;

/// OpenAPI description of the flow's routes, merged into `/openapi.json`.
#[derive(Debug, OpenApi)]
#[openapi(
    paths(
        keys,
        begin_purchase,
        session_responses,
        begin_top_up,
        submit_receipt,
        bill_status,
        register_funding_card
    ),
    components(schemas(
        PublishedKey,
        PublishedKeys,
        BeginPurchase,
        BeginTopUp,
        SubmitReceipt,
        ReceiptAccepted,
        BillView,
        RegisterFundingCard,
        FundingCardView
    ))
)]
pub struct Api;
