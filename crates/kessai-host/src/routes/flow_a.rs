//! Flow A HTTP endpoints (fingerprint device, seed 000; see ARCHITECTURE.md
//! and the `kessai-flow-a` crate docs). Authentication of the device calls
//! rests on the signed artefacts they carry, not on the admin token; the
//! `admin/` routes need the admin token. Every state-changing call goes
//! through the idempotency layer.
//!
//! | endpoint | step (claim) |
//! |---|---|
//! | `GET /issuer` | the issuer signing key devices trust |
//! | `POST /registrations` | REGISTRATION REQUEST → signed identity request (7) |
//! | `POST /registrations/{device}/identity` | IDENTITY IDENTIFICATION → REGISTRATION PERMISSION (6, 7) |
//! | `POST /registrations/{device}/key` | personal public key with proof of possession (6) |
//! | `POST /transactions` | TRANSACTION DATA → verify, decrypt, settle, retain (1, 2, 3, 8–10) |
//! | `POST /devices/{device}/key-update` | signed KEY UPDATE after a rotation (4, 11) |
//! | `POST /devices/{device}/key-update/confirm` | the device's confirmation (4, 11) |
//! | `POST /admin/enrolment-codes` | one-time enrolment code, out of band |
//! | `POST /admin/devices/{device}/unlock` | signed unlock of a locked device |
//! | `POST /admin/retention/purge` | purge retained data past its period (3, 10) |
//!
//! COSE artefacts travel base64url (no padding) inside JSON.

mod support;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use kessai_crypto::cose;
use kessai_crypto::digest::sha256;
use kessai_flow_a::artefacts::{KeyRegistration, RegistrationPermission, RegistrationRequest};
use kessai_flow_a::host::{
    DeviceRecord, IdentityDecision, Issuer, PendingKeyUpdate, transaction_device,
};
use kessai_flow_a::{FlowAError, Policy};
use kessai_ids::{CardholderId, DeviceId, KeyRef};
use kessai_store::evidence::{self, NewEvidence};
use kessai_store::flow_a as store;
use kessai_store::registry;
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use crate::json::ApiJson;
use crate::ledger_api;
use crate::problem::{ApiError, Problem};
use crate::state::AppState;
use support::{
    ApiResult, b64, b64_field, flow_error, hex_field, host_keys, i64_of, internal, now_u64, refused,
};

/// Settings of flow A, part of [`crate::settings::Settings`].
#[derive(Debug, Clone)]
pub struct Settings {
    /// Enrolment-code tries and lifetime, registration session lifetime,
    /// `retention_days` (claims 3, 10) and `key_grace_ms`: how long a
    /// transmission or storage key that became *retiring* in a rotation is
    /// still honoured (claims 4, 11).
    pub policy: Policy,
    /// Issuer identification number of the card numbers issued for flow A
    /// (6 digits).
    pub card_bin: String,
    /// Validity of an issued flow-A card, in months.
    pub card_validity_months: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            policy: Policy::default(),
            // A BIN from the 9xxxxx range reserved for national
            // assignment: never a real scheme's card.
            card_bin: "999001".to_string(),
            card_validity_months: 48,
        }
    }
}

/// The flow's routes, nested under `/v1/flow-a`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/issuer", get(issuer))
        .route("/registrations", post(begin_registration))
        .route("/registrations/{device}/identity", post(identify))
        .route("/registrations/{device}/key", post(register_key))
        .route("/transactions", post(submit_transaction))
        .route("/devices/{device}/key-update", post(key_update))
        .route(
            "/devices/{device}/key-update/confirm",
            post(confirm_key_update),
        )
        .nest("/admin", admin_router())
}

fn admin_router() -> Router<AppState> {
    Router::new()
        .route("/enrolment-codes", post(issue_enrolment_code))
        .route("/devices/{device}/unlock", post(unlock_device))
        .route("/retention/purge", post(purge))
}

pub use crate::auth::Admin;

/// OpenAPI description of the flow's routes, merged into `/openapi.json`.
#[derive(Debug, OpenApi)]
#[openapi(
    paths(
        issuer,
        begin_registration,
        identify,
        register_key,
        submit_transaction,
        key_update,
        confirm_key_update,
        issue_enrolment_code,
        unlock_device,
        purge
    ),
    components(schemas(Problem)),
    tags((name = "flow-a", description = "Flow A: fingerprint device (seed 000)"))
)]
pub struct Api;

fn subject(device: &DeviceId) -> String {
    format!("flow-a:{device}")
}

/// Keeps an artefact of `device` in the evidence store.
async fn keep(
    app: &AppState,
    kind: &str,
    device: &DeviceId,
    signer: &str,
    binds: &[[u8; 32]],
    bytes: &[u8],
    purge_after_ms: Option<u64>,
) -> ApiResult<()> {
    evidence::put(
        &app.db,
        &NewEvidence {
            kind,
            subject: &subject(device),
            signer,
            binds,
            bytes,
            now_ms: app.clock.now_ms(),
            purge_after_ms: purge_after_ms.map(i64_of),
        },
    )
    .await
    .map_err(internal)?;
    Ok(())
}

// ------------------------------------------------------------------ issuer

/// The issuer signing key devices verify every issuer artefact with.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct IssuerView {
    /// `<key id>#<version>`.
    pub key_ref: String,
    /// Ed25519 public key, hex.
    pub key: String,
}

/// The issuer's signing key (the devices' trust anchor).
#[utoipa::path(get, path = "/v1/flow-a/issuer", tag = "flow-a",
    responses((status = 200, body = IssuerView)))]
pub async fn issuer(State(app): State<AppState>) -> ApiResult<Json<IssuerView>> {
    let (key_ref, key) = app.keys.host_signer().await.map_err(internal)?;
    Ok(Json(IssuerView {
        key_ref: key_ref.to_string(),
        key: hex::encode(key.verifying_key().to_bytes()),
    }))
}

// ------------------------------------------------------------ registration

/// A REGISTRATION REQUEST.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegistrationBody {
    /// The device asking to be registered.
    #[schema(value_type = String)]
    pub device_id: DeviceId,
    /// 16 random bytes of the device, hex.
    pub device_nonce: String,
}

/// The host's signed identity identification request.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct IdentityRequestView {
    /// COSE_Sign1 `flow-a.identity-request`, base64url.
    pub identity_request: String,
}

/// Starts a registration: answers with a signed request for identity
/// identification (customer number + enrolment code).
#[utoipa::path(post, path = "/v1/flow-a/registrations", tag = "flow-a",
    request_body = RegistrationBody,
    params(("Idempotency-Key" = String, Header, description = "Required on every state-changing call")),
    responses((status = 201, body = IdentityRequestView), (status = 400, body = Problem),
              (status = 409, body = Problem)))]
pub async fn begin_registration(
    State(app): State<AppState>,
    ApiJson(req): ApiJson<RegistrationBody>,
) -> ApiResult<(StatusCode, Json<IdentityRequestView>)> {
    let request = RegistrationRequest {
        device_nonce: hex_field::<16>(&req.device_nonce, "device_nonce")?,
        device_id: req.device_id,
    };
    let existing = support::load_device(&app, &request.device_id).await?;
    let keys = host_keys(&app, None).await?;
    let issuer = Issuer::new(&keys, app.settings.flow_a.policy);
    let started = {
        let mut rng = rand::rng();
        issuer.begin_registration(
            &request,
            existing.as_ref().map(|d| &d.record),
            now_u64(&app),
            &mut rng,
        )
    }
    .map_err(|e| flow_error(&e))?;
    let prior = support::load_session(&app, &request.device_id).await?;
    if !support::save_session(&app, &started.session, prior.map(|p| p.version)).await? {
        return Err(ApiError::conflict(
            "registration-in-progress",
            "Another registration request for this device is in progress",
        ));
    }
    Ok((
        StatusCode::CREATED,
        Json(IdentityRequestView {
            identity_request: b64(&started.identity_request),
        }),
    ))
}

/// The sealed IDENTITY IDENTIFICATION.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IdentityBody {
    /// COSE_Encrypt0 `flow-a.identity` to the transmission key, base64url.
    pub identification: String,
}

/// The signed REGISTRATION PERMISSION.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PermissionView {
    /// COSE_Sign1 `flow-a.permission`, base64url.
    pub permission: String,
}

/// Identity identification: checks the customer number and one-time
/// enrolment code (limited tries, single use) and answers with the signed
/// registration permission (storage and transmission public keys, card
/// information sealed for the host).
#[utoipa::path(post, path = "/v1/flow-a/registrations/{device}/identity", tag = "flow-a",
    request_body = IdentityBody,
    params(("device" = String, Path, description = "Device id"),
           ("Idempotency-Key" = String, Header, description = "Required on every state-changing call")),
    responses((status = 200, body = PermissionView), (status = 403, body = Problem),
              (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn identify(
    State(app): State<AppState>,
    Path(device): Path<DeviceId>,
    ApiJson(req): ApiJson<IdentityBody>,
) -> ApiResult<Json<PermissionView>> {
    let sealed = b64_field(&req.identification, "identification")?;
    let loaded = support::load_session(&app, &device)
        .await?
        .ok_or_else(|| ApiError::not_found("registration"))?;
    let now = now_u64(&app);
    let mut keys = host_keys(&app, None).await?;
    let ident = match Issuer::new(&keys, app.settings.flow_a.policy).open_identification(
        &loaded.session,
        &sealed,
        now,
    ) {
        Ok(i) => i,
        Err(e) => return Err(refused(&app, e).await),
    };
    let code_row = store::code(&app.db, ident.customer.as_str())
        .await
        .map_err(internal)?;
    let card = support::card_information(&app, &ident.customer).await?;
    let (Some(code_row), Some(card)) = (code_row, card) else {
        return Err(flow_error(&FlowAError::UnknownCustomer));
    };
    let code_ref: KeyRef = code_row.code_key_ref.parse().map_err(internal)?;
    keys.code_key = support::derived_keys(&app, Some(&code_ref)).await?.code;
    let code: kessai_flow_a::host::EnrolmentCodeRecord =
        serde_json::from_str(&code_row.record).map_err(internal)?;
    let decision = {
        let mut rng = rand::rng();
        Issuer::new(&keys, app.settings.flow_a.policy).decide_identity(
            &loaded.session,
            &ident,
            Some(&code),
            &card,
            now,
            &mut rng,
        )
    };
    match decision {
        IdentityDecision::Refused { error, code } => {
            if let Some(spent) = code {
                let json = serde_json::to_string(&spent).map_err(internal)?;
                store::update_code(&app.db, &code_row.cardholder_id, code_row.version, &json)
                    .await
                    .map_err(internal)?;
                kessai_store::audit_log::append(
                    &app.db,
                    app.clock.now_ms(),
                    "flow-a.enrolment_code_wrong",
                    code_row.cardholder_id.as_str(),
                    &serde_json::json!({ "device": device.as_str(), "tries_left": spent.tries_left }),
                )
                .await
                .map_err(internal)?;
            }
            Err(flow_error(&error))
        }
        IdentityDecision::Permitted {
            session,
            code,
            permission,
        } => {
            // Single use first: the code is consumed only on the version read.
            let json = serde_json::to_string(&code).map_err(internal)?;
            if !store::update_code(&app.db, &code_row.cardholder_id, code_row.version, &json)
                .await
                .map_err(internal)?
            {
                return Err(ApiError::conflict(
                    "concurrent-identification",
                    "The enrolment code changed meanwhile; try again",
                ));
            }
            if !support::save_session(&app, &session, Some(loaded.version)).await? {
                return Err(ApiError::conflict(
                    "registration-in-progress",
                    "The registration changed meanwhile; start again",
                ));
            }
            let signer = keys.signing_ref.to_string();
            keep(
                &app,
                "flow-a.permission",
                &device,
                &signer,
                &[],
                &permission,
                None,
            )
            .await?;
            if let Ok(p) = cose::verify_artefact::<RegistrationPermission>(&permission, |r| {
                (r == &keys.signing_ref).then(|| keys.signing.verifying_key())
            }) {
                let permission_digest = sha256(&[&permission]);
                keep(
                    &app,
                    "flow-a.card-info",
                    &device,
                    "",
                    &[permission_digest],
                    &p.payload().card.sealed,
                    None,
                )
                .await?;
            }
            Ok(Json(PermissionView {
                permission: b64(&permission),
            }))
        }
    }
}

/// The personal public key registration.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyRegistrationBody {
    /// The personal Ed25519 public key, hex.
    pub public_key: String,
    /// COSE_Sign1 `flow-a.key-registration` signed by that key, base64url.
    pub signed: String,
}

/// A registered device.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RegisteredView {
    /// Device id.
    pub device_id: String,
    /// Reference of its personal key.
    pub personal_key_ref: String,
    /// Storage key its data is sealed under.
    pub storage_key: String,
    /// Transmission key it encrypts to.
    pub transmission_key: String,
}

/// Registers the device's personal public key (proof of possession,
/// binding MAC, storage-sealed master template). Refused without a
/// registration permission.
#[utoipa::path(post, path = "/v1/flow-a/registrations/{device}/key", tag = "flow-a",
    request_body = KeyRegistrationBody,
    params(("device" = String, Path, description = "Device id"),
           ("Idempotency-Key" = String, Header, description = "Required on every state-changing call")),
    responses((status = 201, body = RegisteredView), (status = 403, body = Problem),
              (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn register_key(
    State(app): State<AppState>,
    Path(device): Path<DeviceId>,
    ApiJson(req): ApiJson<KeyRegistrationBody>,
) -> ApiResult<(StatusCode, Json<RegisteredView>)> {
    let pk = hex_field::<32>(&req.public_key, "public_key")?;
    let public_key = kessai_crypto::sign::VerifyingKey::from_bytes(&pk).map_err(|_| {
        ApiError::bad_request("invalid-public-key", "Invalid public key")
            .with_detail("not a valid Ed25519 point")
    })?;
    let registration = KeyRegistration {
        public_key,
        signed: b64_field(&req.signed, "signed")?,
    };
    let loaded = support::load_session(&app, &device).await?;
    let keys = host_keys(&app, None).await?;
    let record = match Issuer::new(&keys, app.settings.flow_a.policy).complete_registration(
        loaded.as_ref().map(|l| &l.session),
        &registration,
        now_u64(&app),
    ) {
        Ok(r) => r,
        Err(e) => return Err(refused(&app, e).await),
    };
    if record.device_id != device {
        return Err(flow_error(&FlowAError::WrongDevice));
    }
    let json = serde_json::to_string(&record).map_err(internal)?;
    if !store::insert_device(
        &app.db,
        device.as_str(),
        record.cardholder.as_str(),
        &json,
        app.clock.now_ms(),
    )
    .await
    .map_err(internal)?
    {
        return Err(flow_error(&FlowAError::AlreadyRegistered));
    }
    support::delete_session(&app, &device).await?;
    keep(
        &app,
        "flow-a.key-registration",
        &device,
        &record.personal_key_ref.to_string(),
        &[],
        &registration.signed,
        None,
    )
    .await?;
    kessai_store::audit_log::append(
        &app.db,
        app.clock.now_ms(),
        "flow-a.device_registered",
        device.as_str(),
        &serde_json::json!({
            "cardholder": record.cardholder.as_str(),
            "personal_key": record.personal_key_ref.to_string(),
        }),
    )
    .await
    .map_err(internal)?;
    Ok((StatusCode::CREATED, Json(registered_view(&record))))
}

fn registered_view(record: &DeviceRecord) -> RegisteredView {
    RegisteredView {
        device_id: record.device_id.to_string(),
        personal_key_ref: record.personal_key_ref.to_string(),
        storage_key: record.storage_key.to_string(),
        transmission_key: record.transmission_key.to_string(),
    }
}

// ------------------------------------------------------------ transactions

/// TRANSACTION DATA relayed by a terminal.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransactionBody {
    /// COSE_Sign1 `flow-a.txn` signed with the device's personal key,
    /// base64url.
    pub transaction: String,
}

/// The signed results of a settled transaction.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SettledView {
    /// COSE_Sign1 `flow-a.result` for the device, base64url.
    pub device_result: String,
    /// COSE_Sign1 `flow-a.merchant-result` for the merchant (no card
    /// data), base64url.
    pub merchant_result: String,
    /// The ledger transfer.
    pub transfer_id: String,
    /// Store paid.
    pub store_id: String,
    /// The merchant's order number.
    pub order_id: String,
    /// Amount, minor units.
    pub amount_minor: i64,
    /// ISO 4217 currency.
    pub currency: String,
    /// Retained until (unix ms).
    pub retained_until_ms: u64,
}

/// Receives TRANSACTION DATA: verifies the personal-key signature, rejects
/// replays by the device counter, decrypts with the transmission and
/// storage secret keys, authorizes against the cardholder's funding
/// account, settles in the ledger, retains the signed data for the
/// retention period, and answers with signed results for device and
/// merchant.
#[utoipa::path(post, path = "/v1/flow-a/transactions", tag = "flow-a",
    request_body = TransactionBody,
    params(("Idempotency-Key" = String, Header, description = "Required on every state-changing call")),
    responses((status = 200, body = SettledView), (status = 400, body = Problem),
              (status = 403, body = Problem), (status = 409, body = Problem),
              (status = 422, body = Problem)))]
pub async fn submit_transaction(
    State(app): State<AppState>,
    ApiJson(req): ApiJson<TransactionBody>,
) -> ApiResult<Json<SettledView>> {
    let bytes = b64_field(&req.transaction, "transaction")?;
    let device_id = transaction_device(&bytes).map_err(|e| flow_error(&e))?;
    let device = support::load_device(&app, &device_id)
        .await?
        .ok_or_else(|| flow_error(&FlowAError::UnregisteredDeviceKey))?;
    let funding = ledger_api::account(&app, &device.record.funding_account)
        .await?
        .ok_or_else(|| internal("funding account of a registered device is missing"))?;
    let keys = host_keys(&app, None).await?;
    let issuer = Issuer::new(&keys, app.settings.flow_a.policy);
    let now = now_u64(&app);
    // The crate resolves the merchant key synchronously while checking; the
    // order (and the key it names) is only visible after decryption, so a
    // first pass learns the key reference and a second pass has it loaded.
    let mut merchant: Option<kessai_flow_a::host::MerchantKey> = None;
    let mut attempts = 0;
    let settlement = loop {
        attempts += 1;
        let asked = std::cell::RefCell::new(None);
        let result = issuer.process_transaction(
            &bytes,
            &device.record,
            &funding,
            |kid| {
                *asked.borrow_mut() = Some(kid.clone());
                merchant.clone()
            },
            now,
        );
        match (result, asked.into_inner()) {
            (Ok(s), _) => break s,
            (Err(FlowAError::UnknownKey(k)), Some(asked)) if k == asked && attempts == 1 => {
                match support::merchant_key(&app, &asked).await? {
                    Some(m) => merchant = Some(m),
                    None => return Err(flow_error(&FlowAError::OrderSignerMismatch)),
                }
            }
            (Err(e), _) => return Err(refused(&app, e).await),
        }
    };
    let purge_after = settlement.retained.purge_after_ms;
    let personal = device.record.personal_key_ref.to_string();
    let txn_digest = settlement.retained.digest;
    let order_digest = settlement.retained.order_digest;
    // Evidence before the posting, so a transfer never links to an
    // artefact the store does not have.
    keep(
        &app,
        "flow-a.txn",
        &device_id,
        &personal,
        &[order_digest],
        &settlement.retained.bytes,
        Some(purge_after),
    )
    .await?;
    let order_signer = cose::peek(&settlement.order_bytes)
        .map(|p| p.kid.to_string())
        .unwrap_or_default();
    keep(
        &app,
        "flow-a.order",
        &device_id,
        &order_signer,
        &[],
        &settlement.order_bytes,
        Some(purge_after),
    )
    .await?;
    let transfer_id = settlement.transfer.id;
    ledger_api::submit(&app, settlement.transfer.clone()).await?;
    if !support::save_device(&app, &settlement.device, device.version).await? {
        return Err(flow_error(&FlowAError::Replay {
            counter: settlement.device.last_counter,
            last_seen: settlement.device.last_counter,
        }));
    }
    let signer = keys.signing_ref.to_string();
    keep(
        &app,
        "flow-a.result",
        &device_id,
        &signer,
        &[txn_digest],
        &settlement.device_result,
        Some(purge_after),
    )
    .await?;
    keep(
        &app,
        "flow-a.merchant-result",
        &device_id,
        &signer,
        &[order_digest],
        &settlement.merchant_result,
        Some(purge_after),
    )
    .await?;
    Ok(Json(SettledView {
        device_result: b64(&settlement.device_result),
        merchant_result: b64(&settlement.merchant_result),
        transfer_id: transfer_id.to_string(),
        store_id: settlement.order.store.to_string(),
        order_id: settlement.order.order_id.to_string(),
        amount_minor: settlement.order.amount.amount_minor,
        currency: settlement.order.amount.currency.code().to_string(),
        retained_until_ms: purge_after,
    }))
}

// -------------------------------------------------------------- key update

/// The signed KEY UPDATE for a device.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct KeyUpdateView {
    /// COSE_Sign1 `flow-a.key-update`, base64url.
    pub key_update: String,
}

/// Fetches the signed key update of a device after a key rotation: new
/// storage and transmission public keys and the card information
/// re-sealed under the new storage key. The same update is answered until
/// the device confirms it.
#[utoipa::path(post, path = "/v1/flow-a/devices/{device}/key-update", tag = "flow-a",
    params(("device" = String, Path, description = "Device id"),
           ("Idempotency-Key" = String, Header, description = "Required on every state-changing call")),
    responses((status = 200, body = KeyUpdateView), (status = 404, body = Problem),
              (status = 409, body = Problem)))]
pub async fn key_update(
    State(app): State<AppState>,
    Path(device_id): Path<DeviceId>,
) -> ApiResult<Json<KeyUpdateView>> {
    let device = support::load_device(&app, &device_id)
        .await?
        .ok_or_else(|| ApiError::not_found("device"))?;
    let keys = host_keys(&app, None).await?;
    if let Some(row) = store::key_update(&app.db, device_id.as_str())
        .await
        .map_err(internal)?
    {
        let pending: PendingKeyUpdate = serde_json::from_str(&row.pending).map_err(internal)?;
        if &pending.storage_key == keys.storage.active_ref()
            && &pending.transmission_key == keys.transmission.active_ref()
        {
            return Ok(Json(KeyUpdateView {
                key_update: b64(&row.key_update),
            }));
        }
    }
    let card = support::card_information(&app, &device.record.cardholder)
        .await?
        .ok_or_else(|| internal("card of a registered device is missing"))?;
    let now = now_u64(&app);
    let issued = {
        let mut rng = rand::rng();
        Issuer::new(&keys, app.settings.flow_a.policy).issue_key_update(
            &device.record,
            &card,
            now,
            &mut rng,
        )
    }
    .map_err(|e| flow_error(&e))?;
    store::put_key_update(
        &app.db,
        &store::KeyUpdateRow {
            device_id: device_id.to_string(),
            pending: serde_json::to_string(&issued.pending).map_err(internal)?,
            key_update: issued.key_update.clone(),
            issued_at_ms: i64_of(now),
        },
    )
    .await
    .map_err(internal)?;
    keep(
        &app,
        "flow-a.key-update",
        &device_id,
        &keys.signing_ref.to_string(),
        &[issued.pending.card_digest],
        &issued.key_update,
        None,
    )
    .await?;
    Ok(Json(KeyUpdateView {
        key_update: b64(&issued.key_update),
    }))
}

/// The device's confirmation of a key update.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmBody {
    /// COSE_Sign1 `flow-a.key-update-confirm` signed with the personal
    /// key, base64url.
    pub confirmation: String,
}

/// Confirms a key update: the device now holds card information and
/// master template sealed under the new storage key.
#[utoipa::path(post, path = "/v1/flow-a/devices/{device}/key-update/confirm", tag = "flow-a",
    request_body = ConfirmBody,
    params(("device" = String, Path, description = "Device id"),
           ("Idempotency-Key" = String, Header, description = "Required on every state-changing call")),
    responses((status = 200, body = RegisteredView), (status = 404, body = Problem),
              (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn confirm_key_update(
    State(app): State<AppState>,
    Path(device_id): Path<DeviceId>,
    ApiJson(req): ApiJson<ConfirmBody>,
) -> ApiResult<Json<RegisteredView>> {
    let confirmation = b64_field(&req.confirmation, "confirmation")?;
    let device = support::load_device(&app, &device_id)
        .await?
        .ok_or_else(|| ApiError::not_found("device"))?;
    let row = store::key_update(&app.db, device_id.as_str())
        .await
        .map_err(internal)?;
    let pending: Option<PendingKeyUpdate> = row
        .as_ref()
        .map(|r| serde_json::from_str(&r.pending))
        .transpose()
        .map_err(internal)?;
    let keys = host_keys(&app, None).await?;
    let updated = match Issuer::new(&keys, app.settings.flow_a.policy).confirm_key_update(
        &device.record,
        pending.as_ref(),
        &confirmation,
        now_u64(&app),
    ) {
        Ok(u) => u,
        Err(e) => return Err(refused(&app, e).await),
    };
    let row = row.ok_or_else(|| flow_error(&FlowAError::NoPendingKeyUpdate))?;
    if !support::save_device(&app, &updated, device.version).await? {
        return Err(ApiError::conflict(
            "device-changed",
            "The device record changed meanwhile; retry",
        ));
    }
    store::delete_key_update(&app.db, device_id.as_str(), &row.key_update)
        .await
        .map_err(internal)?;
    keep(
        &app,
        "flow-a.key-update-confirm",
        &device_id,
        &device.record.personal_key_ref.to_string(),
        &[sha256(&[&row.key_update])],
        &confirmation,
        None,
    )
    .await?;
    Ok(Json(registered_view(&updated)))
}

// ------------------------------------------------------------------- admin

/// Issue a one-time enrolment code.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrolmentCodeBody {
    /// The customer (cardholder) number.
    #[schema(value_type = String)]
    pub cardholder_id: CardholderId,
}

/// An issued enrolment code: give it to the customer out of band. Shown
/// once; the host keeps only a keyed hash.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EnrolmentCodeView {
    /// The customer number.
    pub cardholder_id: String,
    /// The 10-digit code.
    pub code: String,
    /// Refused from this instant on (unix ms).
    pub expires_at_ms: u64,
    /// Tries allowed.
    pub tries: u8,
    /// The customer's flow-A card, masked.
    pub masked_pan: String,
}

/// Issues a one-time enrolment code for a cardholder (creating their
/// flow-A card on first use); a new code replaces an unused one.
#[utoipa::path(post, path = "/v1/flow-a/admin/enrolment-codes", tag = "flow-a",
    request_body = EnrolmentCodeBody,
    params(("Idempotency-Key" = String, Header, description = "Required on every state-changing call")),
    responses((status = 201, body = EnrolmentCodeView), (status = 401, body = Problem),
              (status = 404, body = Problem)),
    security(("admin_token" = [])))]
pub async fn issue_enrolment_code(
    _admin: Admin,
    State(app): State<AppState>,
    ApiJson(req): ApiJson<EnrolmentCodeBody>,
) -> ApiResult<(StatusCode, Json<EnrolmentCodeView>)> {
    let holder = registry::cardholder(&app.db, &req.cardholder_id)
        .await
        .map_err(internal)?
        .ok_or_else(|| ApiError::not_found("cardholder"))?;
    let masked_pan = support::ensure_card(&app, &holder.id, &holder.funding_account).await?;
    let keys = host_keys(&app, None).await?;
    let code_ref = support::derived_keys(&app, None).await?.key_ref;
    let now = now_u64(&app);
    let (code, record) = {
        let mut rng = rand::rng();
        Issuer::new(&keys, app.settings.flow_a.policy)
            .issue_enrolment_code(&holder.id, now, &mut rng)
    }
    .map_err(|e| flow_error(&e))?;
    let json = serde_json::to_string(&record).map_err(internal)?;
    store::put_code(
        &app.db,
        holder.id.as_str(),
        &json,
        &code_ref.to_string(),
        i64_of(now),
    )
    .await
    .map_err(internal)?;
    kessai_store::audit_log::append(
        &app.db,
        i64_of(now),
        "flow-a.enrolment_code_issued",
        holder.id.as_str(),
        &serde_json::json!({ "expires_at_ms": record.expires_at_ms }),
    )
    .await
    .map_err(internal)?;
    Ok((
        StatusCode::CREATED,
        Json(EnrolmentCodeView {
            cardholder_id: holder.id.to_string(),
            code: code.expose().to_string(),
            expires_at_ms: record.expires_at_ms,
            tries: record.tries_left,
            masked_pan,
        }),
    ))
}

/// Unlock a device locked after too many fingerprint mismatches.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UnlockBody {
    /// The lock number the device shows.
    pub lock_seq: u32,
}

/// A signed unlock.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UnlockView {
    /// COSE_Sign1 `flow-a.unlock`, base64url.
    pub unlock: String,
}

/// Signs an unlock for a device's lock, after the issuer identified the
/// customer out of band.
#[utoipa::path(post, path = "/v1/flow-a/admin/devices/{device}/unlock", tag = "flow-a",
    request_body = UnlockBody,
    params(("device" = String, Path, description = "Device id"),
           ("Idempotency-Key" = String, Header, description = "Required on every state-changing call")),
    responses((status = 200, body = UnlockView), (status = 401, body = Problem),
              (status = 404, body = Problem)),
    security(("admin_token" = [])))]
pub async fn unlock_device(
    _admin: Admin,
    State(app): State<AppState>,
    Path(device_id): Path<DeviceId>,
    ApiJson(req): ApiJson<UnlockBody>,
) -> ApiResult<Json<UnlockView>> {
    let device = support::load_device(&app, &device_id)
        .await?
        .ok_or_else(|| ApiError::not_found("device"))?;
    let keys = host_keys(&app, None).await?;
    let unlock = Issuer::new(&keys, app.settings.flow_a.policy)
        .issue_unlock(&device.record, req.lock_seq, now_u64(&app))
        .map_err(|e| flow_error(&e))?;
    keep(
        &app,
        "flow-a.unlock",
        &device_id,
        &keys.signing_ref.to_string(),
        &[],
        &unlock,
        None,
    )
    .await?;
    kessai_store::audit_log::append(
        &app.db,
        app.clock.now_ms(),
        "flow-a.device_unlocked",
        device_id.as_str(),
        &serde_json::json!({ "lock_seq": req.lock_seq }),
    )
    .await
    .map_err(internal)?;
    Ok(Json(UnlockView {
        unlock: b64(&unlock),
    }))
}

/// What a retention purge did.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PurgeView {
    /// Artefacts whose bytes were deleted.
    pub purged: u64,
    /// The instant used (unix ms).
    pub at_ms: i64,
}

/// Purges retained artefacts past their retention period (claims 3, 10):
/// their bytes are deleted, a tombstone with the digest stays, and the
/// ledger keeps its postings. Also run periodically by `kessai serve`.
#[utoipa::path(post, path = "/v1/flow-a/admin/retention/purge", tag = "flow-a",
    params(("Idempotency-Key" = String, Header, description = "Required on every state-changing call")),
    responses((status = 200, body = PurgeView), (status = 401, body = Problem)),
    security(("admin_token" = [])))]
pub async fn purge(_admin: Admin, State(app): State<AppState>) -> ApiResult<Json<PurgeView>> {
    let purged = purge_retention(&app).await?;
    Ok(Json(PurgeView {
        purged,
        at_ms: app.clock.now_ms(),
    }))
}

/// Deletes the bytes of every retained artefact whose retention period
/// ended (at the host clock's now) and records the purge in the audit log.
/// Returns how many artefacts were purged. For `kessai admin retention
/// purge` and the periodic task of `kessai serve`.
pub async fn purge_retention(app: &AppState) -> Result<u64, ApiError> {
    let now = app.clock.now_ms();
    let purged = evidence::purge_due(&app.db, now).await.map_err(internal)?;
    if purged > 0 {
        kessai_store::audit_log::append(
            &app.db,
            now,
            "retention.purged",
            "evidence",
            &serde_json::json!({ "artefacts": purged }),
        )
        .await
        .map_err(internal)?;
    }
    Ok(purged)
}
