//! Admin endpoints (bearer admin token): merchants (stores, malls, member
//! stores) and their keys, cardholders, ledger accounts and transfers, and
//! issuer keys.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use base64::Engine as _;
use kessai_ids::{AccountId, CardholderId, StoreId, TransferId};
use kessai_ledger::{
    Account, AccountKind, BalanceLimit, Balances, LedgerError, TransferKind, TransferRecord,
    TransferRequest,
};
use kessai_money::Currency;
use kessai_store::registry::{self, MerchantKind, MerchantStatus, NewMerchant, RegistryError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::json::ApiJson;
use crate::keystore::{KeyInfo, KeyPurpose};
use crate::ledger_api;
use crate::problem::{ApiError, Problem};
use crate::state::AppState;

/// Result type of handlers.
pub type ApiResult<T> = Result<T, ApiError>;

fn registry_error(e: RegistryError) -> ApiError {
    match e {
        RegistryError::AlreadyExists => {
            ApiError::conflict("already-registered", "Already registered")
        }
        RegistryError::NotFound => ApiError::not_found("merchant"),
        RegistryError::Invalid(why) => {
            ApiError::unprocessable("invalid-registration", "Invalid registration").with_detail(why)
        }
        RegistryError::Store(e) => ApiError::internal(&e),
    }
}

/// Maps a ledger refusal to a problem (422 with the stable result code as
/// slug; 409 for an id reused with other content).
pub fn ledger_error(e: &LedgerError) -> ApiError {
    let status = match e {
        LedgerError::ExistsWithDifferentContent
        | LedgerError::AccountExistsWithDifferentContent => StatusCode::CONFLICT,
        LedgerError::AccountNotFound { .. } | LedgerError::PendingNotFound => StatusCode::NOT_FOUND,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    ApiError::new(status, e.code(), "Ledger refused the transfer").with_detail(e.to_string())
}

fn decode_public_key(b64: &str) -> ApiResult<[u8; 32]> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(b64.trim_end_matches('='))
        .map_err(|_| ApiError::bad_request("invalid-public-key", "Invalid public key"))?;
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

// ---------------------------------------------------------------- merchants

/// Register a store, a mall, or a member store of a mall.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateMerchant {
    /// Merchant id (1-64 of `A-Z a-z 0-9 . _ : -`).
    #[schema(value_type = String, example = "store-1")]
    pub id: StoreId,
    /// `store`, `mall` or `member`.
    #[schema(value_type = String, example = "store")]
    pub kind: MerchantKind,
    /// Display name.
    pub name: String,
    /// The mall of a member store.
    #[schema(value_type = Option<String>)]
    pub mall_id: Option<StoreId>,
    /// ISO 4217 settlement currency.
    #[schema(value_type = String, example = "JPY")]
    pub currency: Currency,
    /// Ed25519 public key, base64url (stores and malls only).
    pub public_key: Option<String>,
}

/// A merchant as the registry knows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct MerchantView {
    /// Id.
    pub id: String,
    /// `store`, `mall` or `member`.
    pub kind: String,
    /// Name.
    pub name: String,
    /// Mall of a member store.
    pub mall_id: Option<String>,
    /// `active` or `suspended`.
    pub status: String,
    /// Currency.
    pub currency: String,
    /// Ledger account credited with sales.
    pub payable_account: Option<String>,
    /// Key versions (stores and malls).
    pub keys: Vec<MerchantKeyView>,
}

/// One merchant key version.
#[derive(Debug, Serialize, ToSchema)]
pub struct MerchantKeyView {
    /// Version.
    pub version: u32,
    /// `active`, `retiring`, `retired`.
    pub state: String,
    /// Ed25519 public key, base64url.
    pub public_key: String,
}

fn enum_text<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

async fn merchant_view(app: &AppState, id: &StoreId) -> ApiResult<MerchantView> {
    let m = registry::merchant(&app.db, id)
        .await
        .map_err(|e| ApiError::internal(&e))?
        .ok_or_else(|| ApiError::not_found("merchant"))?;
    let keys = registry::merchant_keys(&app.db, id)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    Ok(MerchantView {
        id: m.id.to_string(),
        kind: enum_text(&m.kind),
        name: m.name,
        mall_id: m.mall_id.map(|x| x.to_string()),
        status: enum_text(&m.status),
        currency: m.currency.code().to_string(),
        payable_account: m.payable_account.map(|x| x.to_string()),
        keys: keys
            .into_iter()
            .map(|k| MerchantKeyView {
                version: k.version,
                state: enum_text(&k.state),
                public_key: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&k.public_key),
            })
            .collect(),
    })
}

/// The payable account id of a store or member store.
pub fn payable_account_id(store: &StoreId) -> AccountId {
    ledger_api::party_account_id("payable", store.as_str())
}

/// Registers a merchant; creates its payable account in the ledger.
#[utoipa::path(post, path = "/v1/admin/merchants", tag = "admin",
    request_body = CreateMerchant,
    params(("Idempotency-Key" = String, Header, description = "Required on every state-changing call")),
    responses((status = 201, body = MerchantView), (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("admin_token" = [])))]
pub async fn create_merchant(
    State(app): State<AppState>,
    ApiJson(req): ApiJson<CreateMerchant>,
) -> ApiResult<(StatusCode, Json<MerchantView>)> {
    if req.name.trim().is_empty() || req.name.len() > 200 {
        return Err(ApiError::bad_request(
            "invalid-name",
            "Name must be 1-200 characters",
        ));
    }
    let public_key = req
        .public_key
        .as_deref()
        .map(decode_public_key)
        .transpose()?;
    let payable = match req.kind {
        MerchantKind::Mall => None,
        MerchantKind::Store | MerchantKind::Member => Some(payable_account_id(&req.id)),
    };
    if registry::merchant(&app.db, &req.id)
        .await
        .map_err(|e| ApiError::internal(&e))?
        .is_some()
    {
        return Err(ApiError::conflict(
            "already-registered",
            "Already registered",
        ));
    }
    if let Some(acct) = &payable {
        let account = Account::new(
            acct.clone(),
            AccountKind::MerchantPayable,
            req.currency,
            BalanceLimit::MaxNetDebit(0),
        );
        ledger_api::create_account(&app, account).await?;
    }
    let now = app.clock.now_ms();
    registry::insert_merchant(
        &app.db,
        &NewMerchant {
            id: req.id.clone(),
            kind: req.kind,
            name: req.name,
            mall_id: req.mall_id,
            currency: req.currency,
            payable_account: payable,
            public_key,
            now_ms: now,
        },
    )
    .await
    .map_err(registry_error)?;
    tracing::info!(merchant = %req.id, kind = ?req.kind, "merchant registered");
    Ok((
        StatusCode::CREATED,
        Json(merchant_view(&app, &req.id).await?),
    ))
}

/// Lists merchants.
#[utoipa::path(get, path = "/v1/admin/merchants", tag = "admin",
    responses((status = 200, body = Vec<MerchantView>), (status = 401, body = Problem)),
    security(("admin_token" = [])))]
pub async fn list_merchants(State(app): State<AppState>) -> ApiResult<Json<Vec<MerchantView>>> {
    let all = registry::merchants(&app.db)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let mut out = Vec::with_capacity(all.len());
    for m in all {
        out.push(merchant_view(&app, &m.id).await?);
    }
    Ok(Json(out))
}

/// Shows one merchant.
#[utoipa::path(get, path = "/v1/admin/merchants/{id}", tag = "admin",
    params(("id" = String, Path, description = "Merchant id")),
    responses((status = 200, body = MerchantView), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("admin_token" = [])))]
pub async fn get_merchant(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<MerchantView>> {
    let id = StoreId::new(id).map_err(|_| ApiError::not_found("merchant"))?;
    Ok(Json(merchant_view(&app, &id).await?))
}

/// A new key version for a store or mall.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateMerchantKey {
    /// Ed25519 public key, base64url.
    pub public_key: String,
}

/// Registers a new key version (previous one becomes retiring).
#[utoipa::path(post, path = "/v1/admin/merchants/{id}/keys", tag = "admin",
    params(("id" = String, Path, description = "Merchant id"),
           ("Idempotency-Key" = String, Header, description = "Required on every state-changing call")),
    request_body = RotateMerchantKey,
    responses((status = 201, body = MerchantView), (status = 401, body = Problem), (status = 404, body = Problem),
              (status = 422, body = Problem)),
    security(("admin_token" = [])))]
pub async fn rotate_merchant_key(
    State(app): State<AppState>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<RotateMerchantKey>,
) -> ApiResult<(StatusCode, Json<MerchantView>)> {
    let id = StoreId::new(id).map_err(|_| ApiError::not_found("merchant"))?;
    let pk = decode_public_key(&req.public_key)?;
    registry::rotate_merchant_key(&app.db, &id, pk, app.clock.now_ms())
        .await
        .map_err(registry_error)?;
    Ok((StatusCode::CREATED, Json(merchant_view(&app, &id).await?)))
}

/// Suspend or reactivate a merchant.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetMerchantStatus {
    /// `active` or `suspended`.
    #[schema(value_type = String, example = "suspended")]
    pub status: MerchantStatus,
}

/// Sets a merchant's status.
#[utoipa::path(post, path = "/v1/admin/merchants/{id}/status", tag = "admin",
    params(("id" = String, Path, description = "Merchant id"),
           ("Idempotency-Key" = String, Header, description = "Required on every state-changing call")),
    request_body = SetMerchantStatus,
    responses((status = 200, body = MerchantView), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("admin_token" = [])))]
pub async fn set_merchant_status(
    State(app): State<AppState>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<SetMerchantStatus>,
) -> ApiResult<Json<MerchantView>> {
    let id = StoreId::new(id).map_err(|_| ApiError::not_found("merchant"))?;
    registry::set_merchant_status(&app.db, &id, req.status)
        .await
        .map_err(registry_error)?;
    Ok(Json(merchant_view(&app, &id).await?))
}

// -------------------------------------------------------------- cardholders

/// Register a cardholder with a funding account.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCardholder {
    /// Cardholder id.
    #[schema(value_type = String, example = "alice")]
    pub id: CardholderId,
    /// Name.
    pub name: String,
    /// Currency of the funding account.
    #[schema(value_type = String, example = "JPY")]
    pub currency: Currency,
    /// Credit limit in minor units (0 = prepaid: spend only what was
    /// credited).
    pub credit_limit_minor: i64,
}

/// A cardholder and the state of their funding account.
#[derive(Debug, Serialize, ToSchema)]
pub struct CardholderView {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Funding account.
    pub funding_account: AccountView,
}

/// A ledger account.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountView {
    /// Id.
    pub id: String,
    /// Kind (`cardholder_funding`, `emoney_outstanding`, `merchant_payable`,
    /// `issuer_fees`, `issuer_clearing`).
    pub kind: String,
    /// Currency.
    pub currency: String,
    /// Limit (`unlimited`, `max_net_debit`, `max_net_credit`).
    pub limit: LimitView,
    /// Sum of pending debits, minor units.
    pub debits_pending: i64,
    /// Sum of posted debits, minor units.
    pub debits_posted: i64,
    /// Sum of pending credits, minor units.
    pub credits_pending: i64,
    /// Sum of posted credits, minor units.
    pub credits_posted: i64,
}

/// An account limit.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitView {
    /// `unlimited`, `max_net_debit` or `max_net_credit`.
    pub kind: LimitKind,
    /// The bound in minor units (0 for unlimited).
    #[serde(default)]
    pub limit_minor: i64,
}

/// Kind of an account limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LimitKind {
    /// No bound.
    Unlimited,
    /// debits − credits (with pending debits) ≤ limit.
    MaxNetDebit,
    /// credits − debits (with pending credits) ≤ limit.
    MaxNetCredit,
}

impl LimitView {
    fn from_limit(l: BalanceLimit) -> Self {
        match l {
            BalanceLimit::Unlimited => Self {
                kind: LimitKind::Unlimited,
                limit_minor: 0,
            },
            BalanceLimit::MaxNetDebit(v) => Self {
                kind: LimitKind::MaxNetDebit,
                limit_minor: v,
            },
            BalanceLimit::MaxNetCredit(v) => Self {
                kind: LimitKind::MaxNetCredit,
                limit_minor: v,
            },
        }
    }
    fn to_limit(self) -> ApiResult<BalanceLimit> {
        if self.limit_minor < 0 {
            return Err(ApiError::bad_request("invalid-limit", "Limit must be ≥ 0"));
        }
        Ok(match self.kind {
            LimitKind::Unlimited => BalanceLimit::Unlimited,
            LimitKind::MaxNetDebit => BalanceLimit::MaxNetDebit(self.limit_minor),
            LimitKind::MaxNetCredit => BalanceLimit::MaxNetCredit(self.limit_minor),
        })
    }
}

/// Renders an account.
pub fn account_view(a: &Account) -> AccountView {
    let Balances {
        debits_pending,
        debits_posted,
        credits_pending,
        credits_posted,
    } = a.balances;
    AccountView {
        id: a.id.to_string(),
        kind: enum_text(&a.kind),
        currency: a.currency.code().to_string(),
        limit: LimitView::from_limit(a.limit),
        debits_pending,
        debits_posted,
        credits_pending,
        credits_posted,
    }
}

/// The funding account id of a cardholder.
pub fn funding_account_id(c: &CardholderId) -> AccountId {
    ledger_api::party_account_id("funding", c.as_str())
}

/// Registers a cardholder and creates their funding account.
#[utoipa::path(post, path = "/v1/admin/cardholders", tag = "admin",
    request_body = CreateCardholder,
    params(("Idempotency-Key" = String, Header, description = "Required on every state-changing call")),
    responses((status = 201, body = CardholderView), (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 409, body = Problem)),
    security(("admin_token" = [])))]
pub async fn create_cardholder(
    State(app): State<AppState>,
    ApiJson(req): ApiJson<CreateCardholder>,
) -> ApiResult<(StatusCode, Json<CardholderView>)> {
    if req.credit_limit_minor < 0 {
        return Err(ApiError::bad_request(
            "invalid-limit",
            "Credit limit must be ≥ 0",
        ));
    }
    if req.name.trim().is_empty() || req.name.len() > 200 {
        return Err(ApiError::bad_request(
            "invalid-name",
            "Name must be 1-200 characters",
        ));
    }
    if registry::cardholder(&app.db, &req.id)
        .await
        .map_err(|e| ApiError::internal(&e))?
        .is_some()
    {
        return Err(ApiError::conflict(
            "already-registered",
            "Already registered",
        ));
    }
    let acct = funding_account_id(&req.id);
    ledger_api::create_account(
        &app,
        Account::new(
            acct.clone(),
            AccountKind::CardholderFunding,
            req.currency,
            BalanceLimit::MaxNetDebit(req.credit_limit_minor),
        ),
    )
    .await?;
    registry::insert_cardholder(
        &app.db,
        &registry::Cardholder {
            id: req.id.clone(),
            name: req.name,
            funding_account: acct,
            created_at_ms: app.clock.now_ms(),
        },
    )
    .await
    .map_err(registry_error)?;
    Ok((
        StatusCode::CREATED,
        Json(cardholder_view(&app, &req.id).await?),
    ))
}

async fn cardholder_view(app: &AppState, id: &CardholderId) -> ApiResult<CardholderView> {
    let c = registry::cardholder(&app.db, id)
        .await
        .map_err(|e| ApiError::internal(&e))?
        .ok_or_else(|| ApiError::not_found("cardholder"))?;
    let a = ledger_api::account(app, &c.funding_account)
        .await?
        .ok_or_else(|| ApiError::not_found("account"))?;
    Ok(CardholderView {
        id: c.id.to_string(),
        name: c.name,
        funding_account: account_view(&a),
    })
}

/// Shows a cardholder.
#[utoipa::path(get, path = "/v1/admin/cardholders/{id}", tag = "admin",
    params(("id" = String, Path, description = "Cardholder id")),
    responses((status = 200, body = CardholderView), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("admin_token" = [])))]
pub async fn get_cardholder(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<CardholderView>> {
    let id = CardholderId::new(id).map_err(|_| ApiError::not_found("cardholder"))?;
    Ok(Json(cardholder_view(&app, &id).await?))
}

// ----------------------------------------------------------------- accounts

/// Create a ledger account.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAccount {
    /// Account id.
    #[schema(value_type = String, example = "clearing.main")]
    pub id: AccountId,
    /// Kind.
    #[schema(value_type = String, example = "issuer_clearing")]
    pub kind: AccountKind,
    /// Currency.
    #[schema(value_type = String, example = "JPY")]
    pub currency: Currency,
    /// Limit.
    pub limit: LimitView,
}

/// Creates a ledger account.
#[utoipa::path(post, path = "/v1/admin/accounts", tag = "admin",
    request_body = CreateAccount,
    params(("Idempotency-Key" = String, Header, description = "Required on every state-changing call")),
    responses((status = 201, body = AccountView), (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 409, body = Problem)),
    security(("admin_token" = [])))]
pub async fn create_account(
    State(app): State<AppState>,
    ApiJson(req): ApiJson<CreateAccount>,
) -> ApiResult<(StatusCode, Json<AccountView>)> {
    let a = Account::new(req.id, req.kind, req.currency, req.limit.to_limit()?);
    let created = ledger_api::create_account(&app, a).await?;
    Ok((StatusCode::CREATED, Json(account_view(&created))))
}

/// Shows a ledger account.
#[utoipa::path(get, path = "/v1/admin/accounts/{id}", tag = "admin",
    params(("id" = String, Path, description = "Account id")),
    responses((status = 200, body = AccountView), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("admin_token" = [])))]
pub async fn get_account(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<AccountView>> {
    let id = AccountId::new(id).map_err(|_| ApiError::not_found("account"))?;
    let a = ledger_api::account(&app, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("account"))?;
    Ok(Json(account_view(&a)))
}

/// One leg of a transfer.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LegBody {
    /// Account.
    #[schema(value_type = String)]
    pub account: AccountId,
    /// `debit` or `credit`.
    pub side: SideBody,
    /// Amount in minor units (> 0).
    pub amount_minor: i64,
}

/// Side of a leg.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SideBody {
    /// Debit.
    Debit,
    /// Credit.
    Credit,
}

/// Post a transfer (admin: funding, payouts, corrections).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTransfer {
    /// The natural key of this transfer (e.g. `payout-2026-11-22`); the
    /// transfer id derives from it, so a retry cannot post twice.
    pub natural_key: String,
    /// Currency of all legs.
    #[schema(value_type = String, example = "JPY")]
    pub currency: Currency,
    /// Legs: debits and credits must balance.
    pub legs: Vec<LegBody>,
    /// Business code (see the ledger's `codes`).
    pub code: u16,
    /// Free text (never secrets).
    #[serde(default)]
    pub reference: String,
    /// If set, a pending hold expiring at this unix ms.
    pub pending_expires_at_ms: Option<u64>,
}

/// A recorded transfer.
#[derive(Debug, Serialize, ToSchema)]
pub struct TransferView {
    /// Transfer id (32 hex digits).
    pub id: String,
    /// True if this call created it, false if it existed (same content).
    pub created: bool,
    /// The record.
    #[schema(value_type = Object)]
    pub record: TransferRecord,
}

/// Submits a transfer to the ledger.
#[utoipa::path(post, path = "/v1/admin/transfers", tag = "admin",
    request_body = CreateTransfer,
    params(("Idempotency-Key" = String, Header, description = "Required on every state-changing call")),
    responses((status = 201, body = TransferView), (status = 200, description = "Existed with the same content", body = TransferView),
              (status = 400, body = Problem), (status = 401, body = Problem), (status = 409, body = Problem),
              (status = 422, body = Problem)),
    security(("admin_token" = [])))]
pub async fn create_transfer(
    State(app): State<AppState>,
    ApiJson(req): ApiJson<CreateTransfer>,
) -> ApiResult<(StatusCode, Json<TransferView>)> {
    if req.natural_key.is_empty() || req.natural_key.len() > 200 {
        return Err(ApiError::bad_request(
            "invalid-natural-key",
            "natural_key must be 1-200 bytes",
        ));
    }
    let id = TransferId::derive("admin/transfer", &[req.natural_key.as_bytes()]);
    let legs = req
        .legs
        .iter()
        .map(|l| match l.side {
            SideBody::Debit => kessai_ledger::Leg::debit(l.account.clone(), l.amount_minor),
            SideBody::Credit => kessai_ledger::Leg::credit(l.account.clone(), l.amount_minor),
        })
        .collect();
    let request = match req.pending_expires_at_ms {
        Some(exp) => TransferRequest::pending(id, req.currency, req.code, legs, exp),
        None => TransferRequest::posted(id, req.currency, req.code, legs),
    }
    .with_reference(req.reference);
    let (record, created) = ledger_api::submit(&app, request).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(TransferView {
            id: record.id.to_string(),
            created,
            record,
        }),
    ))
}

/// Resolve a pending transfer.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveTransfer {
    /// `post` or `void`.
    pub action: ResolveAction,
}

/// What to do with a pending transfer.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResolveAction {
    /// Post it in full.
    Post,
    /// Release it.
    Void,
}

/// Posts or voids a pending transfer.
#[utoipa::path(post, path = "/v1/admin/transfers/{id}/resolve", tag = "admin",
    params(("id" = String, Path, description = "Pending transfer id"),
           ("Idempotency-Key" = String, Header, description = "Required on every state-changing call")),
    request_body = ResolveTransfer,
    responses((status = 201, body = TransferView), (status = 401, body = Problem), (status = 404, body = Problem),
              (status = 422, body = Problem)),
    security(("admin_token" = [])))]
pub async fn resolve_transfer(
    State(app): State<AppState>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ResolveTransfer>,
) -> ApiResult<(StatusCode, Json<TransferView>)> {
    let pending_id: TransferId = id.parse().map_err(|_| ApiError::not_found("transfer"))?;
    let pending = ledger_api::transfer(&app, &pending_id)
        .await?
        .ok_or_else(|| ApiError::not_found("transfer"))?;
    let (label, kind) = match req.action {
        ResolveAction::Post => ("post", TransferKind::PostPending { pending_id }),
        ResolveAction::Void => ("void", TransferKind::VoidPending { pending_id }),
    };
    let rid = TransferId::derive("admin/resolve", &[pending_id.as_bytes(), label.as_bytes()]);
    let request = TransferRequest::resolution(rid, pending.currency, pending.code, kind);
    let (record, created) = ledger_api::submit(&app, request).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(TransferView {
            id: record.id.to_string(),
            created,
            record,
        }),
    ))
}

// --------------------------------------------------------------------- keys

/// Lists issuer key versions (public parts).
#[utoipa::path(get, path = "/v1/admin/keys", tag = "admin",
    responses((status = 200, body = Vec<KeyInfo>), (status = 401, body = Problem)),
    security(("admin_token" = [])))]
pub async fn list_keys(State(app): State<AppState>) -> ApiResult<Json<Vec<KeyInfo>>> {
    Ok(Json(
        app.keys.list().await.map_err(|e| ApiError::internal(&e))?,
    ))
}

/// Rotates the issuer key of a purpose.
#[utoipa::path(post, path = "/v1/admin/keys/{purpose}/rotate", tag = "admin",
    params(("purpose" = String, Path, description = "host_sign, transmission, storage or card_master"),
           ("Idempotency-Key" = String, Header, description = "Required on every state-changing call")),
    responses((status = 201, body = Vec<KeyInfo>), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("admin_token" = [])))]
pub async fn rotate_key(
    State(app): State<AppState>,
    Path(purpose): Path<String>,
) -> ApiResult<(StatusCode, Json<Vec<KeyInfo>>)> {
    let p = KeyPurpose::from_code(&purpose).ok_or_else(|| ApiError::not_found("key purpose"))?;
    app.keys
        .rotate(p)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    Ok((
        StatusCode::CREATED,
        Json(app.keys.list().await.map_err(|e| ApiError::internal(&e))?),
    ))
}
