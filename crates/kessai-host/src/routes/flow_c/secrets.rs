//! The issuer secrets flow C derives or seals, all from keys of the issuer
//! key store (themselves sealed under the master key):
//!
//! - the **PIN verification key** and the **PAN index key** are derived
//!   from a version of the issuer card master key:
//!   `SHA-256(label ‖ 0x00 ‖ key ref ‖ 0x00 ‖ card master)`, one label per
//!   purpose, so neither can stand in for the other or for the card keys
//!   flows B and D diversify from the same master. Each card row records the
//!   key ref it was made under, so rotating the card master keeps old cards
//!   working while that version is not retired;
//! - a card is found by `SHA-256(index key ‖ 0x00 ‖ PAN digits)` (a keyed
//!   hash: without the issuer key a stolen table does not reveal or confirm
//!   card numbers);
//! - the per-transaction HPKE key pair (S6) is kept until the transaction
//!   ends with its 32-byte secret **sealed to the issuer's storage key**
//!   (HPKE base mode, info = this module's label, AAD = the transaction key
//!   ref): readable only by a host holding the master key, bound to its row.

use kessai_crypto::hpke::{self, HpkeKeyPair};
use kessai_ids::KeyRef;
use kessai_pin::PinVerificationKey;
use kessai_secrets::{CardNumber, SecretKey};
use kessai_store::flow_c as store;

use crate::keystore::KeyPurpose;
use crate::problem::ApiError;
use crate::state::AppState;

const PVK_LABEL: &[u8] = b"kessai/flow-c/pin-verification-key/v1";
const INDEX_LABEL: &[u8] = b"kessai/flow-c/pan-index-key/v1";
const TXN_KEY_INFO: &[u8] = b"kessai/flow-c/transaction-key-at-rest/v1";

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

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(&e)
}

/// The active card master's ref (what new cards are registered under).
pub async fn active_card_master(app: &AppState) -> Result<KeyRef, ApiError> {
    Ok(app.keys.card_master().await.map_err(internal)?.0)
}

/// Every card master version still usable (active and retiring).
async fn usable_card_masters(app: &AppState) -> Result<Vec<KeyRef>, ApiError> {
    Ok(app
        .keys
        .list()
        .await
        .map_err(internal)?
        .into_iter()
        .filter(|k| k.purpose == KeyPurpose::CardMaster && k.state != "retired")
        .map(|k| k.key_ref)
        .collect())
}

/// The PIN verification key derived from card master `key_ref`.
pub async fn pin_verification_key(
    app: &AppState,
    key_ref: &KeyRef,
) -> Result<PinVerificationKey, ApiError> {
    let master = app
        .keys
        .card_master_version(key_ref)
        .await
        .map_err(internal)?;
    Ok(PinVerificationKey::new(derive(PVK_LABEL, key_ref, &master)))
}

/// The PAN index under card master `key_ref`.
pub async fn pan_index(
    app: &AppState,
    key_ref: &KeyRef,
    pan: &CardNumber,
) -> Result<[u8; 32], ApiError> {
    let master = app
        .keys
        .card_master_version(key_ref)
        .await
        .map_err(internal)?;
    let key = derive(INDEX_LABEL, key_ref, &master);
    Ok(kessai_crypto::digest::sha256(&[
        key.expose(),
        &[0],
        pan.expose_digits(),
    ]))
}

/// The card registered for `pan`, under any usable card master version.
pub async fn card_by_pan(
    app: &AppState,
    pan: &CardNumber,
) -> Result<Option<store::CardRow>, ApiError> {
    for key_ref in usable_card_masters(app).await? {
        let index = pan_index(app, &key_ref, pan).await?;
        if let Some(row) = store::card_by_index(&app.db, &index)
            .await
            .map_err(internal)?
            && row.index_key_ref == key_ref.to_string()
        {
            return Ok(Some(row));
        }
    }
    Ok(None)
}

/// Stores a transaction key pair durably, sealed to the storage key.
/// `Ok(false)` if one is already stored under `key_ref`.
pub async fn store_txn_key(
    app: &AppState,
    txn_id: &str,
    key_ref: &KeyRef,
    key_pair: &HpkeKeyPair,
) -> Result<bool, ApiError> {
    let (storage_ref, storage_pk) = app
        .keys
        .hpke_public(KeyPurpose::Storage)
        .await
        .map_err(internal)?;
    let aad = key_ref.to_string();
    let (enc, sealed) = {
        let secret = key_pair.secret_bytes();
        let mut rng = rand::rng();
        hpke::seal(
            &storage_pk,
            TXN_KEY_INFO,
            aad.as_bytes(),
            secret.expose(),
            &mut rng,
        )
    };
    store::put_txn_key(
        &app.db,
        &store::TxnKeyRow {
            key_ref: aad,
            txn_id: txn_id.to_owned(),
            storage_key_ref: storage_ref.to_string(),
            enc: enc.to_vec(),
            sealed_secret: sealed,
            created_at_ms: app.clock.now_ms(),
        },
    )
    .await
    .map_err(internal)
}

/// The transaction key pair stored under `key_ref`, if it still exists.
pub async fn load_txn_key(
    app: &AppState,
    key_ref: Option<&KeyRef>,
) -> Result<Option<HpkeKeyPair>, ApiError> {
    let Some(key_ref) = key_ref else {
        return Ok(None);
    };
    let aad = key_ref.to_string();
    let Some(row) = store::txn_key(&app.db, &aad).await.map_err(internal)? else {
        return Ok(None);
    };
    let storage_ref: KeyRef = row
        .storage_key_ref
        .parse()
        .map_err(|_| internal("stored storage key ref is invalid"))?;
    let storage = app
        .keys
        .hpke_keypair(&storage_ref, KeyPurpose::Storage)
        .await
        .map_err(internal)?;
    let enc: [u8; 32] = row
        .enc
        .as_slice()
        .try_into()
        .map_err(|_| internal("stored transaction key is malformed"))?;
    let clear = hpke::open(
        &storage,
        &enc,
        TXN_KEY_INFO,
        aad.as_bytes(),
        &row.sealed_secret,
    )
    .map_err(|_| internal("stored transaction key does not open"))?;
    let secret: [u8; 32] = clear
        .expose()
        .try_into()
        .map_err(|_| internal("stored transaction key is malformed"))?;
    let secret = SecretKey::new(secret);
    Ok(Some(HpkeKeyPair::from_secret_bytes(secret.expose())))
}
