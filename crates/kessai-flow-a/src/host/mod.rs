//! The card management device (issuer host) side of flow A (claims 1–4,
//! 7–11), as pure functions over records the caller has looked up.
//!
//! [`Issuer`] borrows the host's keys ([`HostKeys`]) and [`Policy`]; every
//! method takes the already-loaded records (enrolment code, registration
//! session, device record, funding account, merchant keys) plus `now_ms`,
//! and returns either the new records and artefacts to store and send, or
//! a typed [`FlowAError`] — in which case the caller stores nothing. The
//! caller's store must apply the returned records with the usual guards:
//! a device's `last_counter` only moves up (compare-and-set on the value
//! it read), an enrolment code is consumed once (row lock or conditional
//! update), and the settlement transfer goes to the ledger under its
//! natural-key id, so a retry can never post twice.

mod key_update;
mod registration;
mod transaction;

use kessai_crypto::sign::VerifyingKey;
use kessai_ids::{AccountId, CardholderId, DeviceId, KeyRef, StoreId};
use serde::{Deserialize, Serialize};

use crate::keys::HostKeys;
use crate::model::{BindingSecret, Policy, bytes_serde};

pub use key_update::KeyUpdateIssued;
pub use registration::{IdentityDecision, RegistrationStarted};
pub use transaction::{Settlement, transaction_device};

/// The host's flow-A logic over its keys and policy.
#[derive(Debug)]
pub struct Issuer<'a> {
    keys: &'a HostKeys,
    policy: Policy,
}

impl<'a> Issuer<'a> {
    /// The issuer with `keys` and `policy`.
    pub fn new(keys: &'a HostKeys, policy: Policy) -> Self {
        Self { keys, policy }
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }
}

/// Who used an enrolment code, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeUse {
    /// The device registered with it.
    pub device_id: DeviceId,
    /// When.
    pub at_ms: u64,
}

/// An issued one-time enrolment code, as the host stores it: a keyed hash,
/// never the code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrolmentCodeRecord {
    /// The customer it was issued to (the customer number).
    pub cardholder: CardholderId,
    /// HMAC-SHA256 under [`HostKeys::code_key`] over the customer number
    /// and the code.
    #[serde(with = "bytes_serde::array")]
    pub code_mac: [u8; 32],
    /// Wrong entries still allowed.
    pub tries_left: u8,
    /// The code is refused from this instant on.
    pub expires_at_ms: u64,
    /// Set once the code registered a device; a used code is refused.
    pub used: Option<CodeUse>,
}

/// What the host has granted in a registration session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    /// Identity identification requested, not yet answered correctly.
    AwaitingIdentity,
    /// A registration permission was sent; the key registration may come.
    Permitted(Box<Permitted>),
}

/// The grant recorded when a registration permission is sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permitted {
    /// The customer identified.
    pub cardholder: CardholderId,
    /// The customer's funding account.
    pub funding_account: AccountId,
    /// SHA-256 of the permission sent.
    #[serde(with = "bytes_serde::array")]
    pub permission_digest: [u8; 32],
    /// The storage key handed out.
    pub storage_key: KeyRef,
    /// The transmission key handed out.
    pub transmission_key: KeyRef,
    /// SHA-256 of the sealed card information handed out.
    #[serde(with = "bytes_serde::array")]
    pub card_digest: [u8; 32],
    /// The personal key reference expected.
    pub personal_key_ref: KeyRef,
    /// The device's binding secret (secret: store the session encrypted).
    pub binding_secret: BindingSecret,
    /// The key registration must arrive before this instant.
    pub register_by_ms: u64,
}

/// One registration in progress (at most one per device id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationSession {
    /// The device registering.
    pub device_id: DeviceId,
    /// The device's nonce.
    #[serde(with = "bytes_serde::array")]
    pub device_nonce: [u8; 16],
    /// The host's nonce.
    #[serde(with = "bytes_serde::array")]
    pub session_nonce: [u8; 16],
    /// The transmission key the identity identification is sealed to.
    pub transmission_key: KeyRef,
    /// When it started.
    pub created_at_ms: u64,
    /// It ends at this instant.
    pub expires_at_ms: u64,
    /// Progress.
    pub state: SessionState,
}

/// Whether a registered device may transact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceStatus {
    /// Registered and usable.
    Active,
    /// Revoked by the issuer (lost device, re-enrolment): refused.
    Revoked,
}

/// The host's record of a registered device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// The device.
    pub device_id: DeviceId,
    /// Its owner.
    pub cardholder: CardholderId,
    /// The account its payments draw on.
    pub funding_account: AccountId,
    /// Reference of the registered personal key (`<device id>#<generation>`).
    pub personal_key_ref: KeyRef,
    /// The registered personal public key.
    pub personal_key: VerifyingKey,
    /// The highest transaction counter accepted (0: none yet).
    pub last_counter: u64,
    /// The storage key the device's data is sealed under.
    pub storage_key: KeyRef,
    /// The transmission key the device has.
    pub transmission_key: KeyRef,
    /// SHA-256 of the device's sealed card information.
    #[serde(with = "bytes_serde::array")]
    pub card_digest: [u8; 32],
    /// SHA-256 of the device's storage-sealed master template.
    #[serde(with = "bytes_serde::array")]
    pub template_digest: [u8; 32],
    /// Active or revoked.
    pub status: DeviceStatus,
    /// When it registered.
    pub registered_at_ms: u64,
    /// When it last confirmed a key update.
    pub keys_updated_at_ms: Option<u64>,
}

/// A key update sent to a device and not yet confirmed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingKeyUpdate {
    /// The device.
    pub device_id: DeviceId,
    /// SHA-256 of the key update artefact.
    #[serde(with = "bytes_serde::array")]
    pub key_update_digest: [u8; 32],
    /// The new storage key.
    pub storage_key: KeyRef,
    /// The new transmission key.
    pub transmission_key: KeyRef,
    /// SHA-256 of the re-sealed card information.
    #[serde(with = "bytes_serde::array")]
    pub card_digest: [u8; 32],
    /// When it was issued.
    pub issued_at_ms: u64,
}

/// A merchant (store) signing key as the host's merchant registry knows
/// it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerchantKey {
    /// The store the key belongs to.
    pub store: StoreId,
    /// The store's order-signing key.
    pub key: VerifyingKey,
    /// The store's merchant payable account.
    pub payable_account: AccountId,
}

/// The personal key reference of a device's `generation`-th personal key:
/// key id = device id.
pub fn personal_key_ref(device: &DeviceId, generation: u32) -> Result<KeyRef, FlowAError> {
    let id = kessai_ids::KeyId::new(device.as_str())
        .map_err(|_| FlowAError::Malformed("device id is not a key id"))?;
    KeyRef::new(id, generation).map_err(|_| FlowAError::Malformed("key generation is zero"))
}

use crate::FlowAError;
