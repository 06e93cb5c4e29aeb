//! The messages of flow A and their COSE types.
//!
//! | message (seed words) | from → to | form | `typ` name |
//! |---|---|---|---|
//! | REGISTRATION REQUEST | device → host | plain (the device has no key yet) | — |
//! | identity identification request | host → device | COSE_Sign1, issuer key | `flow-a.identity-request` |
//! | IDENTITY IDENTIFICATION (customer number, enrolment code) | device → host | COSE_Encrypt0 to the transmission key | `flow-a.identity` |
//! | REGISTRATION PERMISSION | host → device | COSE_Sign1, issuer key | `flow-a.permission` |
//! | card information | host → (device) → host | COSE_Encrypt0 to the storage key | `flow-a.card-info` |
//! | master fingerprint data | device → (device) → host | COSE_Encrypt0 blob to the storage key | `flow-a.master-template` |
//! | personal public key registration | device → host | COSE_Sign1, personal key | `flow-a.key-registration` |
//! | commodity ORDER INFORMATION | merchant → device → host | COSE_Sign1, merchant key | `flow-a.order` |
//! | TRANSACTION DATA (encrypted part) | device → host | COSE_Encrypt0 to the transmission key | `flow-a.txn-content` |
//! | TRANSACTION DATA (signed) | device → host | COSE_Sign1, personal key | `flow-a.txn` |
//! | settlement RESULT | host → device | COSE_Sign1, issuer key | `flow-a.result` |
//! | settlement result for the merchant | host → merchant | COSE_Sign1, issuer key | `flow-a.merchant-result` |
//! | unlock | host → device | COSE_Sign1, issuer key | `flow-a.unlock` |
//! | KEY UPDATE | host → device | COSE_Sign1, issuer key | `flow-a.key-update` |
//! | key update confirmation | device → host | COSE_Sign1, personal key | `flow-a.key-update-confirm` |
//!
//! Byte fields are CBOR byte strings (hex in JSON). Digests are SHA-256
//! over the exact COSE bytes of the artefact they name.

use kessai_crypto::cose::{Artefact, BlobKind};
use kessai_crypto::sign::VerifyingKey;
use kessai_ids::{AccountId, CardholderId, DeviceId, KeyRef, OrderId, StoreId, TransferId};
use kessai_money::Money;
use kessai_secrets::CardNumber;
use serde::{Deserialize, Serialize};

use crate::model::{BindingSecret, CardExpiry, EnrolmentCode, PublishedKey, bytes_serde};

macro_rules! artefact {
    ($ty:ty, $name:literal) => {
        impl Artefact for $ty {
            const TYPE: &'static str = $name;
            const VERSION: u32 = 1;
        }
    };
}

/// REGISTRATION REQUEST (claim 7): the device asks to be registered. Not
/// signed: the device has no key yet; the nonce binds what follows to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationRequest {
    /// The device asking.
    pub device_id: DeviceId,
    /// Fresh device randomness, echoed in the permission.
    #[serde(with = "bytes_serde::array")]
    pub device_nonce: [u8; 16],
}

/// The host's request for identity identification (claim 7), signed by the
/// issuer. Carries the transmission key the device seals its answer to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityRequest {
    /// The device being registered.
    pub device_id: DeviceId,
    /// The device's nonce from the registration request.
    #[serde(with = "bytes_serde::array")]
    pub device_nonce: [u8; 16],
    /// The host's session nonce.
    #[serde(with = "bytes_serde::array")]
    pub session_nonce: [u8; 16],
    /// Where to seal the identity identification.
    pub transmission_key: PublishedKey,
    /// The session ends at this instant.
    pub expires_at_ms: u64,
}
artefact!(IdentityRequest, "flow-a.identity-request");

/// IDENTITY IDENTIFICATION (claim 7): customer number and one-time
/// enrolment code, sealed to the host's transmission key so the terminal
/// that relays it never sees the code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityIdentification {
    /// The device being registered.
    pub device_id: DeviceId,
    /// The host's session nonce.
    #[serde(with = "bytes_serde::array")]
    pub session_nonce: [u8; 16],
    /// The customer number.
    pub customer: CardholderId,
    /// The one-time enrolment code given out of band.
    pub code: EnrolmentCode,
    /// A fresh device secret, known only to this device and the host: the
    /// key registration carries a MAC under it, so a terminal that relays
    /// the (clear) registration permission cannot register its own key.
    pub binding_secret: BindingSecret,
}
artefact!(IdentityIdentification, "flow-a.identity");

/// The card information for one device as the permission and key update
/// carry it: sealed for the host, plus what the device may display.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedCard {
    /// COSE_Encrypt0 of [`CardInfoPayload`] to the storage key, bound to
    /// the device id. Only the host can open it.
    #[serde(with = "bytes_serde")]
    pub sealed: Vec<u8>,
    /// BIN + last four, for display.
    pub masked_pan: String,
    /// Expiry, for display.
    pub expiry: CardExpiry,
}

/// REGISTRATION PERMISSION (claims 6, 7), signed by the issuer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationPermission {
    /// The device permitted to register.
    pub device_id: DeviceId,
    /// Echo of the device's nonce.
    #[serde(with = "bytes_serde::array")]
    pub device_nonce: [u8; 16],
    /// Echo of the session nonce.
    #[serde(with = "bytes_serde::array")]
    pub session_nonce: [u8; 16],
    /// The customer identified.
    pub cardholder: CardholderId,
    /// Storage public key (claims 2, 5).
    pub storage_key: PublishedKey,
    /// Transmission public key (claims 1, 5).
    pub transmission_key: PublishedKey,
    /// The card information for this device.
    pub card: SealedCard,
    /// The personal key's reference the host expects.
    pub personal_key_ref: KeyRef,
    /// The key registration must arrive before this instant.
    pub register_by_ms: u64,
}
artefact!(RegistrationPermission, "flow-a.permission");

/// The clear card information inside [`SealedCard::sealed`]. Never leaves
/// the host in clear.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardInfoPayload {
    /// The device the card information was issued for.
    pub device_id: DeviceId,
    /// The card's holder.
    pub cardholder: CardholderId,
    /// The funding account.
    pub funding_account: AccountId,
    /// The card number.
    #[serde(serialize_with = "serialize_pan")]
    pub pan: CardNumber,
    /// Expiry month.
    pub expiry: CardExpiry,
}
artefact!(CardInfoPayload, "flow-a.card-info");

fn serialize_pan<S: serde::Serializer>(pan: &CardNumber, s: S) -> Result<S::Ok, S::Error> {
    // The digits are ASCII by construction; the serializer writes into the
    // zeroized plaintext buffer of `seal_artefact`.
    let digits = std::str::from_utf8(pan.expose_digits())
        .map_err(|_| serde::ser::Error::custom("card number is not ASCII"))?;
    s.serialize_str(digits)
}

/// The blob kind of the storage-sealed master template (the ISO/IEC
/// 19794-2 record bytes).
#[derive(Debug)]
pub struct MasterTemplateBlob;
impl BlobKind for MasterTemplateBlob {
    const TYPE: &'static str = "flow-a.master-template";
    const VERSION: u32 = 1;
}

/// Public-key registration with proof of possession (claim 6), signed by
/// the new personal key itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRegistrationPayload {
    /// The device.
    pub device_id: DeviceId,
    /// SHA-256 of the registration permission this answers.
    #[serde(with = "bytes_serde::array")]
    pub permission_digest: [u8; 32],
    /// Echo of the session nonce.
    #[serde(with = "bytes_serde::array")]
    pub session_nonce: [u8; 16],
    /// The personal public key (must equal the key that signed this).
    pub public_key: VerifyingKey,
    /// HMAC-SHA256 under the binding secret over the permission digest and
    /// the public key.
    #[serde(with = "bytes_serde::array")]
    pub binding_mac: [u8; 32],
    /// The master template sealed to the storage key (claim 2): the host
    /// checks it opens, and records its digest.
    #[serde(with = "bytes_serde")]
    pub sealed_template: Vec<u8>,
}
artefact!(KeyRegistrationPayload, "flow-a.key-registration");

/// What the device sends to register its key: the signed payload and the
/// public key to check it with (the same key is inside the payload).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRegistration {
    /// The personal public key.
    pub public_key: VerifyingKey,
    /// COSE_Sign1 of [`KeyRegistrationPayload`].
    #[serde(with = "bytes_serde")]
    pub signed: Vec<u8>,
}

/// Commodity ORDER INFORMATION, signed by the merchant (store) key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderInformation {
    /// The store (merchant id).
    pub store: StoreId,
    /// The merchant's order number.
    pub order_id: OrderId,
    /// The amount to pay, in minor units.
    pub amount: Money,
    /// SHA-256 of the merchant's item list (kept by the merchant).
    #[serde(with = "bytes_serde::array")]
    pub items_digest: [u8; 32],
    /// When the order was made.
    pub created_at_ms: u64,
    /// The order cannot be paid from this instant on.
    pub expires_at_ms: u64,
}
artefact!(OrderInformation, "flow-a.order");

/// The encrypted part of TRANSACTION DATA (claims 1, 5, 8): order
/// information and the stored card information, sealed to the
/// transmission key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionContent {
    /// The merchant-signed order (COSE_Sign1 bytes).
    #[serde(with = "bytes_serde")]
    pub order: Vec<u8>,
    /// The storage-sealed card information, as stored on the device.
    #[serde(with = "bytes_serde")]
    pub card: Vec<u8>,
    /// The amount the customer saw and approved with their finger.
    pub approved: Money,
}
artefact!(TransactionContent, "flow-a.txn-content");

/// TRANSACTION DATA as signed with the personal key (claims 1, 5, 8).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionData {
    /// The device.
    pub device_id: DeviceId,
    /// Strictly increasing per device; the host refuses anything not above
    /// the last one it accepted.
    pub counter: u64,
    /// Device time of the purchase (informational).
    pub created_at_ms: u64,
    /// SHA-256 of the merchant-signed order inside `content`.
    #[serde(with = "bytes_serde::array")]
    pub order_digest: [u8; 32],
    /// COSE_Encrypt0 of [`TransactionContent`] to the transmission key,
    /// bound to device id and counter.
    #[serde(with = "bytes_serde")]
    pub content: Vec<u8>,
}
artefact!(TransactionData, "flow-a.txn");

/// The settlement RESULT for the device, signed by the issuer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionResult {
    /// The device.
    pub device_id: DeviceId,
    /// The transaction's counter.
    pub counter: u64,
    /// SHA-256 of the signed transaction data.
    #[serde(with = "bytes_serde::array")]
    pub transaction_digest: [u8; 32],
    /// The ledger transfer that settled it.
    pub transfer_id: TransferId,
    /// The store paid.
    pub store: StoreId,
    /// The merchant's order number.
    pub order_id: OrderId,
    /// The amount settled.
    pub amount: Money,
    /// The card, masked.
    pub masked_pan: String,
    /// When the host settled it.
    pub settled_at_ms: u64,
}
artefact!(TransactionResult, "flow-a.result");

/// The settlement result for the merchant, signed by the issuer. No card
/// data and no device identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerchantResult {
    /// The store paid.
    pub store: StoreId,
    /// The merchant's order number.
    pub order_id: OrderId,
    /// SHA-256 of the merchant-signed order.
    #[serde(with = "bytes_serde::array")]
    pub order_digest: [u8; 32],
    /// The amount settled.
    pub amount: Money,
    /// The ledger transfer that settled it.
    pub transfer_id: TransferId,
    /// When the host settled it.
    pub settled_at_ms: u64,
}
artefact!(MerchantResult, "flow-a.merchant-result");

/// Unlock of a device locked after too many fingerprint mismatches, signed
/// by the issuer. Names the lock it lifts, so it cannot lift a later one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unlock {
    /// The device.
    pub device_id: DeviceId,
    /// The lock lifted (the device's lock sequence number).
    pub lock_seq: u32,
    /// When the issuer granted it.
    pub issued_at_ms: u64,
}
artefact!(Unlock, "flow-a.unlock");

/// KEY UPDATE (claims 4, 11), signed by the issuer, addressed to one
/// device: the new storage and transmission public keys, and the card
/// information re-sealed by the host under the new storage key (the device
/// cannot open the old sealed copy, so it cannot re-seal it itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyUpdate {
    /// The device.
    pub device_id: DeviceId,
    /// The storage key being replaced.
    pub previous_storage_key: KeyRef,
    /// The transmission key being replaced.
    pub previous_transmission_key: KeyRef,
    /// New storage public key.
    pub storage_key: PublishedKey,
    /// New transmission public key.
    pub transmission_key: PublishedKey,
    /// The card information sealed under the new storage key.
    pub card: SealedCard,
    /// Until when the host still honours the previous keys.
    pub previous_honoured_until_ms: u64,
    /// When the host issued it.
    pub issued_at_ms: u64,
}
artefact!(KeyUpdate, "flow-a.key-update");

/// Confirmation of a key update, signed with the personal key: the device
/// replaced its stored card information and master template with the
/// copies under the new storage key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyUpdateConfirmation {
    /// The device.
    pub device_id: DeviceId,
    /// SHA-256 of the key update applied.
    #[serde(with = "bytes_serde::array")]
    pub key_update_digest: [u8; 32],
    /// The new storage key now in use.
    pub storage_key: KeyRef,
    /// The new transmission key now in use.
    pub transmission_key: KeyRef,
    /// The master template re-sealed under the new storage key.
    #[serde(with = "bytes_serde")]
    pub sealed_template: Vec<u8>,
}
artefact!(KeyUpdateConfirmation, "flow-a.key-update-confirm");
