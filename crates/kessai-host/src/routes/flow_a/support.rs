//! What the flow-A handlers share: the flow crate's [`HostKeys`] built from
//! the issuer key store, the host-side secrets derived from the card master
//! key, card information, registration sessions sealed at rest, device
//! records, and the mapping of [`FlowAError`] to problem details.
//!
//! Host-side flow-A secrets. The enrolment-code hash key and the at-rest
//! key (card numbers, registration sessions holding the binding secret)
//! are derived from an issuer card master key version:
//! `SHA-256("kessai/flow-a/<purpose>/v1" || 0x00 || card master key)`, a
//! domain-separated hash of a uniformly random 128-bit secret. Each stored
//! value names the card master version it was made under, so a rotation of
//! the card master does not orphan it while that version is retiring.

use base64::Engine as _;
use kessai_crypto::at_rest::{open_at_rest, seal_at_rest};
use kessai_crypto::digest::sha256;
use kessai_flow_a::host::{DeviceRecord, MerchantKey, RegistrationSession};
use kessai_flow_a::keys::{HostKeys, KeyPurpose as RingPurpose, KeyRing};
use kessai_flow_a::{CardExpiry, CardInformation, FlowAError};
use kessai_ids::{AccountId, CardholderId, DeviceId, KeyRef, StoreId};
use kessai_secrets::{CardNumber, SecretKey};
use kessai_store::flow_a as store;
use kessai_store::flow_support;
use kessai_store::keys as key_records;
use kessai_store::registry::{self, KeyState, MerchantKind, MerchantStatus};

use crate::keystore::KeyPurpose;
use crate::problem::ApiError;
use crate::state::AppState;

/// Flow name of the registration sessions in `flow_sessions`.
pub const SESSION_FLOW: &str = "flow-a";

pub(super) type ApiResult<T> = Result<T, ApiError>;

pub(super) fn now_u64(app: &AppState) -> u64 {
    u64::try_from(app.clock.now_ms()).unwrap_or(0)
}

pub(super) fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(super) fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(&e)
}

// ------------------------------------------------------------------ bytes

/// Decodes a base64url (no padding accepted or not) COSE field.
pub(super) fn b64_field(value: &str, field: &'static str) -> ApiResult<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(value.trim_end_matches('='))
        .map_err(|_| {
            ApiError::bad_request("invalid-encoding", "Field is not base64url")
                .with_detail(format!("{field} must be base64url"))
        })
}

/// Encodes bytes as base64url without padding.
pub(super) fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes a fixed-length hex field.
pub(super) fn hex_field<const N: usize>(value: &str, field: &'static str) -> ApiResult<[u8; N]> {
    let mut out = [0u8; N];
    hex::decode_to_slice(value, &mut out).map_err(|_| {
        ApiError::bad_request("invalid-encoding", "Field is not hex of the right length")
            .with_detail(format!("{field} must be {} hex digits", N * 2))
    })?;
    Ok(out)
}

// ------------------------------------------------------------------- keys

fn derived(label: &str, master: &[u8]) -> SecretKey<32> {
    SecretKey::new(sha256(&[
        b"kessai/flow-a/",
        label.as_bytes(),
        b"/v1\0",
        master,
    ]))
}

/// A host-side flow-A secret and the card master version it comes from.
pub(super) struct Derived {
    pub key_ref: KeyRef,
    pub at_rest: SecretKey<32>,
    pub code: SecretKey<32>,
}

/// The flow-A secrets under the active card master key, or under the
/// version `key_ref` (active or retiring).
pub(super) async fn derived_keys(app: &AppState, key_ref: Option<&KeyRef>) -> ApiResult<Derived> {
    let (key_ref, master) = match key_ref {
        Some(r) => (
            r.clone(),
            app.keys.card_master_version(r).await.map_err(internal)?,
        ),
        None => app.keys.card_master().await.map_err(internal)?,
    };
    Ok(Derived {
        at_rest: derived("at-rest", master.expose()),
        code: derived("code-key", master.expose()),
        key_ref,
    })
}

/// The flow crate's host keys from the issuer key store: the active host
/// signing key, and the transmission and storage rings — the active
/// version plus every *retiring* version, honoured until it became
/// retiring + `grace_ms`. `code_key_ref` picks the card master version of
/// the enrolment-code hash key (default: active).
pub(super) async fn host_keys(
    app: &AppState,
    code_key_ref: Option<&KeyRef>,
) -> ApiResult<HostKeys> {
    let (signing_ref, signing) = app.keys.host_signer().await.map_err(internal)?;
    let grace = app.settings.flow_a.policy.key_grace_ms;
    let records = key_records::all_keys(&app.db).await.map_err(internal)?;
    let mut rings = Vec::with_capacity(2);
    for (purpose, ring_purpose) in [
        (KeyPurpose::Transmission, RingPurpose::Transmission),
        (KeyPurpose::Storage, RingPurpose::Storage),
    ] {
        let (active_ref, _) = app.keys.hpke_public(purpose).await.map_err(internal)?;
        let active = app
            .keys
            .hpke_keypair(&active_ref, purpose)
            .await
            .map_err(internal)?;
        let mut ring = KeyRing::new(ring_purpose, active_ref, active);
        for r in records
            .iter()
            .filter(|r| r.purpose == purpose.code() && r.state == KeyState::Retiring)
        {
            let pair = app
                .keys
                .hpke_keypair(&r.key_ref, purpose)
                .await
                .map_err(internal)?;
            let changed = u64::try_from(r.state_changed_at_ms).unwrap_or(0);
            ring = ring.with_previous(r.key_ref.clone(), pair, changed.saturating_add(grace));
        }
        rings.push(ring);
    }
    let storage = rings.pop().ok_or_else(|| internal("no storage ring"))?;
    let transmission = rings
        .pop()
        .ok_or_else(|| internal("no transmission ring"))?;
    let code_key = derived_keys(app, code_key_ref).await?.code;
    Ok(HostKeys {
        signing_ref,
        signing,
        transmission,
        storage,
        code_key,
    })
}

/// Turns a refusal naming a key the rings do not hold into the typed
/// "retired, update the device" refusal when that key is a retired
/// transmission or storage version (the key store no longer opens retired
/// secrets, so they are not in the rings).
pub(super) async fn refine_unknown_key(app: &AppState, e: FlowAError) -> FlowAError {
    let FlowAError::UnknownKey(used) = &e else {
        return e;
    };
    for purpose in [KeyPurpose::Transmission, KeyPurpose::Storage] {
        if used.id != purpose.key_id() {
            continue;
        }
        let Ok(Some(rec)) = key_records::key(&app.db, used).await else {
            return e;
        };
        if rec.state != KeyState::Retired {
            return e;
        }
        let Ok((current, _)) = app.keys.hpke_public(purpose).await else {
            return e;
        };
        let used = used.clone();
        return match purpose {
            KeyPurpose::Transmission => FlowAError::TransmissionKeyRetired { used, current },
            _ => FlowAError::StorageKeyRetired { used, current },
        };
    }
    e
}

// ------------------------------------------------------------------ cards

fn pan_aad(cardholder: &str) -> Vec<u8> {
    format!("kessai/flow-a/pan/v1\0{cardholder}").into_bytes()
}

/// `(year, month)` of a unix-ms instant (UTC), H. Hinnant's
/// `civil_from_days`.
fn year_month(now_ms: u64) -> (i64, i64) {
    let z = i64::try_from(now_ms / 86_400_000).unwrap_or(0) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m)
}

/// A fresh 16-digit card number under `bin` with a valid Luhn digit.
fn generate_pan(bin: &str) -> ApiResult<CardNumber> {
    let mut digits = zeroize::Zeroizing::new(String::with_capacity(16));
    digits.push_str(bin);
    while digits.len() < 15 {
        let mut b = [0u8; 1];
        rand::fill(&mut b);
        if b[0] < 250 {
            digits.push(char::from(b'0' + b[0] % 10));
        }
    }
    for check in 0..10u8 {
        let mut candidate = zeroize::Zeroizing::new(digits.to_string());
        candidate.push(char::from(b'0' + check));
        if let Ok(pan) = CardNumber::new(&candidate) {
            return Ok(pan);
        }
    }
    Err(internal("no Luhn check digit found"))
}

/// The flow-A card of `cardholder`, created on first use: a card number
/// under the configured BIN, sealed at rest, expiring after the configured
/// validity. Returns the card's masked number.
pub(super) async fn ensure_card(
    app: &AppState,
    cardholder: &CardholderId,
    funding_account: &AccountId,
) -> ApiResult<String> {
    if let Some(c) = store::card(&app.db, cardholder.as_str())
        .await
        .map_err(internal)?
    {
        return Ok(c.masked_pan);
    }
    let s = &app.settings.flow_a;
    let pan = generate_pan(&s.card_bin)?;
    let keys = derived_keys(app, None).await?;
    let sealed = {
        let mut rng = rand::rng();
        seal_at_rest(
            &keys.at_rest,
            &pan_aad(cardholder.as_str()),
            pan.expose_digits(),
            &mut rng,
        )
    };
    let now = now_u64(app);
    let (y, m) = year_month(now);
    let months = y * 12 + (m - 1) + i64::from(s.card_validity_months);
    let row = store::CardRow {
        cardholder_id: cardholder.to_string(),
        funding_account: funding_account.to_string(),
        masked_pan: pan.masked(),
        pan_sealed: sealed,
        seal_key_ref: keys.key_ref.to_string(),
        expiry_year: months / 12,
        expiry_month: months % 12 + 1,
        created_at_ms: i64_of(now),
    };
    store::insert_card(&app.db, &row).await.map_err(internal)?;
    // A concurrent issue may have won: report what is stored.
    Ok(store::card(&app.db, cardholder.as_str())
        .await
        .map_err(internal)?
        .map(|c| c.masked_pan)
        .unwrap_or(row.masked_pan))
}

/// The card information of `cardholder` (card number opened from its
/// sealed form), or `None` if the cardholder has no flow-A card.
pub(super) async fn card_information(
    app: &AppState,
    cardholder: &CardholderId,
) -> ApiResult<Option<CardInformation>> {
    let Some(row) = store::card(&app.db, cardholder.as_str())
        .await
        .map_err(internal)?
    else {
        return Ok(None);
    };
    let key_ref: KeyRef = row.seal_key_ref.parse().map_err(internal)?;
    let keys = derived_keys(app, Some(&key_ref)).await?;
    let clear = open_at_rest(&keys.at_rest, &pan_aad(&row.cardholder_id), &row.pan_sealed)
        .map_err(internal)?;
    let digits = std::str::from_utf8(clear.expose()).map_err(internal)?;
    let pan = CardNumber::new(digits).map_err(internal)?;
    let expiry = CardExpiry::new(
        u16::try_from(row.expiry_year).map_err(internal)?,
        u8::try_from(row.expiry_month).map_err(internal)?,
    )
    .map_err(internal)?;
    Ok(Some(CardInformation {
        pan,
        expiry,
        cardholder: cardholder.clone(),
        funding_account: row.funding_account.parse().map_err(internal)?,
    }))
}

// --------------------------------------------------------------- sessions

fn session_id(device: &DeviceId) -> String {
    format!("flow-a/registration/{device}")
}

fn session_aad(device: &DeviceId) -> Vec<u8> {
    format!("kessai/flow-a/session/v1\0{device}").into_bytes()
}

#[derive(serde::Serialize, serde::Deserialize)]
struct SealedSession {
    key: String,
    sealed: String,
}

/// A registration session as loaded, with its optimistic version.
pub(super) struct LoadedSession {
    pub session: RegistrationSession,
    pub version: i64,
}

/// Loads the registration session of `device` (sealed at rest: it holds
/// the binding secret once permitted).
pub(super) async fn load_session(
    app: &AppState,
    device: &DeviceId,
) -> ApiResult<Option<LoadedSession>> {
    let Some(row) = flow_support::load_session(&app.db, &session_id(device))
        .await
        .map_err(internal)?
    else {
        return Ok(None);
    };
    let s: SealedSession = serde_json::from_str(&row.state).map_err(internal)?;
    let key_ref: KeyRef = s.key.parse().map_err(internal)?;
    let keys = derived_keys(app, Some(&key_ref)).await?;
    let sealed = hex::decode(&s.sealed).map_err(internal)?;
    let clear = open_at_rest(&keys.at_rest, &session_aad(device), &sealed).map_err(internal)?;
    let session: RegistrationSession = serde_json::from_slice(clear.expose()).map_err(internal)?;
    Ok(Some(LoadedSession {
        session,
        version: row.version,
    }))
}

/// Stores `session`: created if `version` is `None`, else replaced on the
/// version read. `Ok(false)` when another request got there first.
pub(super) async fn save_session(
    app: &AppState,
    session: &RegistrationSession,
    version: Option<i64>,
) -> ApiResult<bool> {
    let keys = derived_keys(app, None).await?;
    let json = zeroize::Zeroizing::new(serde_json::to_vec(session).map_err(internal)?);
    let sealed = {
        let mut rng = rand::rng();
        seal_at_rest(
            &keys.at_rest,
            &session_aad(&session.device_id),
            &json,
            &mut rng,
        )
    };
    let state = serde_json::to_string(&SealedSession {
        key: keys.key_ref.to_string(),
        sealed: hex::encode(sealed),
    })
    .map_err(internal)?;
    let id = session_id(&session.device_id);
    let now = app.clock.now_ms();
    let expires = i64_of(session.expires_at_ms);
    match version {
        None => flow_support::create_session(&app.db, &id, SESSION_FLOW, &state, now, expires)
            .await
            .map_err(internal),
        Some(v) => flow_support::save_session(&app.db, &id, v, &state, now, expires)
            .await
            .map_err(internal),
    }
}

/// Deletes the registration session of `device`.
pub(super) async fn delete_session(app: &AppState, device: &DeviceId) -> ApiResult<()> {
    flow_support::delete_session(&app.db, &session_id(device))
        .await
        .map_err(internal)
}

// ---------------------------------------------------------------- devices

/// A device record as loaded, with its optimistic version.
pub(super) struct LoadedDevice {
    pub record: DeviceRecord,
    pub version: i64,
}

/// Loads a registered device.
pub(super) async fn load_device(
    app: &AppState,
    device: &DeviceId,
) -> ApiResult<Option<LoadedDevice>> {
    let Some(row) = store::device(&app.db, device.as_str())
        .await
        .map_err(internal)?
    else {
        return Ok(None);
    };
    let mut record: DeviceRecord = serde_json::from_str(&row.record).map_err(internal)?;
    record.last_counter = u64::try_from(row.last_counter).map_err(internal)?;
    Ok(Some(LoadedDevice {
        record,
        version: row.version,
    }))
}

/// Stores `record` over the version read; `Ok(false)` if it changed since.
pub(super) async fn save_device(
    app: &AppState,
    record: &DeviceRecord,
    version: i64,
) -> ApiResult<bool> {
    let json = serde_json::to_string(record).map_err(internal)?;
    store::update_device(
        &app.db,
        record.device_id.as_str(),
        version,
        &json,
        i64_of(record.last_counter),
        app.clock.now_ms(),
    )
    .await
    .map_err(internal)
}

// -------------------------------------------------------------- merchants

/// The merchant key a flow-A order names (`<store id>#<version>`): an
/// active store (not a mall or member) with that key version not retired,
/// and its payable account.
pub(super) async fn merchant_key(app: &AppState, kid: &KeyRef) -> ApiResult<Option<MerchantKey>> {
    let Ok(store_id) = StoreId::new(kid.id.as_str()) else {
        return Ok(None);
    };
    let Some(m) = registry::merchant(&app.db, &store_id)
        .await
        .map_err(internal)?
    else {
        return Ok(None);
    };
    if m.status != MerchantStatus::Active || m.kind != MerchantKind::Store {
        return Ok(None);
    }
    let Some(payable_account) = m.payable_account else {
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
    Ok(Some(MerchantKey {
        store: store_id,
        key,
        payable_account,
    }))
}

// --------------------------------------------------------------- problems

/// Maps a flow-A refusal to a problem. Enrolment-code refusals collapse
/// into one answer so customer numbers cannot be probed; details are the
/// crate's fixed texts (never key material, codes or card numbers).
pub(super) fn flow_error(e: &FlowAError) -> ApiError {
    use axum::http::StatusCode as S;
    let (status, slug, title) = match e {
        FlowAError::Cose(_) => (
            S::UNPROCESSABLE_ENTITY,
            "artefact-refused",
            "Artefact refused",
        ),
        FlowAError::Malformed(_) | FlowAError::BadTemplate => {
            (S::BAD_REQUEST, "malformed-message", "Malformed message")
        }
        FlowAError::UnknownKey(_) => (S::UNPROCESSABLE_ENTITY, "unknown-key", "Unknown key"),
        FlowAError::TransmissionKeyRetired { .. } => (
            S::UNPROCESSABLE_ENTITY,
            "transmission-key-retired",
            "Transmission key retired: update the device keys",
        ),
        FlowAError::StorageKeyRetired { .. } => (
            S::UNPROCESSABLE_ENTITY,
            "storage-key-retired",
            "Storage key retired: update the device keys",
        ),
        FlowAError::AlreadyRegistered => (
            S::CONFLICT,
            "already-registered",
            "Device already registered",
        ),
        FlowAError::WrongState(_) => (S::CONFLICT, "wrong-state", "Step not allowed now"),
        FlowAError::WrongDevice => (
            S::UNPROCESSABLE_ENTITY,
            "wrong-device",
            "Artefact is for another device",
        ),
        FlowAError::EnrolmentCodeFormat
        | FlowAError::UnknownCustomer
        | FlowAError::EnrolmentCodeWrong { .. }
        | FlowAError::EnrolmentCodeUsed
        | FlowAError::EnrolmentCodeExhausted
        | FlowAError::EnrolmentCodeExpired => {
            return ApiError::new(
                S::FORBIDDEN,
                "enrolment-code-refused",
                "Customer number or enrolment code refused",
            )
            .with_detail(
                "codes are single use, expire, and allow a few tries; ask the issuer for a new one if needed",
            );
        }
        FlowAError::SessionExpired => (
            S::UNPROCESSABLE_ENTITY,
            "session-expired",
            "Registration session expired",
        ),
        FlowAError::SessionMismatch => (
            S::UNPROCESSABLE_ENTITY,
            "session-mismatch",
            "Does not match the registration in progress",
        ),
        FlowAError::NoRegistrationPermission => (
            S::FORBIDDEN,
            "no-registration-permission",
            "No registration permission for this device",
        ),
        FlowAError::BindingMismatch => (
            S::FORBIDDEN,
            "binding-mismatch",
            "Key registration not bound to the identified device",
        ),
        FlowAError::UnregisteredDeviceKey => (
            S::FORBIDDEN,
            "unregistered-device-key",
            "Not signed by the registered device key",
        ),
        FlowAError::DeviceNotActive => (S::FORBIDDEN, "device-not-active", "Device not active"),
        FlowAError::Replay { .. } => (S::CONFLICT, "replayed-transaction", "Replayed transaction"),
        FlowAError::OverLimit { .. } => (
            S::UNPROCESSABLE_ENTITY,
            "over-limit",
            "Over the funding account's limit",
        ),
        FlowAError::Ledger(l) => return crate::routes::admin::ledger_error(l),
        FlowAError::NoPendingKeyUpdate => (
            S::CONFLICT,
            "no-pending-key-update",
            "No key update pending for this device",
        ),
        FlowAError::KeysCurrent => (S::CONFLICT, "keys-current", "Device keys are current"),
        FlowAError::UnlockMismatch => (S::CONFLICT, "unlock-mismatch", "Unlock does not match"),
        FlowAError::TimeOverflow => return internal(e),
        _ => (
            S::UNPROCESSABLE_ENTITY,
            "transaction-refused",
            "Refused by flow A",
        ),
    };
    ApiError::new(status, slug, title).with_detail(e.to_string())
}

/// [`flow_error`] after [`refine_unknown_key`].
pub(super) async fn refused(app: &AppState, e: FlowAError) -> ApiError {
    flow_error(&refine_unknown_key(app, e).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn year_month_is_utc_civil() {
        // 2026-11-22T00:00:00Z
        assert_eq!(year_month(1_795_305_600_000), (2026, 11));
        // 2024-02-29T12:00:00Z
        assert_eq!(year_month(1_709_208_000_000), (2024, 2));
        assert_eq!(year_month(0), (1970, 1));
    }

    #[test]
    fn generated_pans_are_luhn_valid_under_the_bin() {
        let pan = generate_pan("999001").unwrap();
        assert!(pan.masked().starts_with("999001"));
        assert_eq!(pan.expose_digits().len(), 16);
    }

    #[test]
    fn enrolment_refusals_look_the_same() {
        let a = flow_error(&FlowAError::UnknownCustomer);
        let b = flow_error(&FlowAError::EnrolmentCodeWrong { tries_left: 2 });
        let c = flow_error(&FlowAError::EnrolmentCodeUsed);
        assert_eq!(a, b);
        assert_eq!(b, c);
        assert_eq!(a.status().as_u16(), 403);
    }
}
