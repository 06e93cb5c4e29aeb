//! Encryption key update (claims 4, 11) and device unlock, host side.
//!
//! Design of the update. The device holds its card information and master
//! template sealed under the storage *public* key; it cannot open either.
//! - **Card information**: the host has the card in its own records, so it
//!   re-seals it under the new storage key and sends it inside the signed
//!   KEY UPDATE (addressed to one device).
//! - **Master template**: the host never keeps the device's template in
//!   clear; the device has its matching copy sealed locally, so *it*
//!   re-seals that under the new storage public key and returns it in the
//!   confirmation, which the host opens to check.
//!
//! The device replaces both copies at once and confirms with its personal
//! key. Until the previous keys' grace period ends the host accepts
//! transactions under either version; afterwards the old transmission key
//! is refused with [`FlowAError::TransmissionKeyRetired`], which names the
//! current key so the device knows to fetch the update.

use kessai_crypto::cose::{self, Verified};
use kessai_crypto::digest::sha256;
use rand_core::CryptoRng;

use super::{DeviceRecord, Issuer, PendingKeyUpdate};
use crate::FlowAError;
use crate::artefacts::{KeyUpdate, KeyUpdateConfirmation, Unlock};
use crate::model::CardInformation;

/// What [`Issuer::issue_key_update`] produces.
#[derive(Debug)]
pub struct KeyUpdateIssued {
    /// The signed KEY UPDATE to send to the device.
    pub key_update: Vec<u8>,
    /// What to store until the device confirms.
    pub pending: PendingKeyUpdate,
}

impl Issuer<'_> {
    /// Builds the KEY UPDATE for `device` after a rotation: the active
    /// storage and transmission public keys and `card` re-sealed under the
    /// new storage key. Refused with [`FlowAError::KeysCurrent`] if the
    /// device already has both active keys.
    pub fn issue_key_update(
        &self,
        device: &DeviceRecord,
        card: &CardInformation,
        now_ms: u64,
        rng: &mut impl CryptoRng,
    ) -> Result<KeyUpdateIssued, FlowAError> {
        let storage = self.keys.storage.active_public();
        let transmission = self.keys.transmission.active_public();
        if device.storage_key == storage.key_ref && device.transmission_key == transmission.key_ref
        {
            return Err(FlowAError::KeysCurrent);
        }
        if card.cardholder != device.cardholder || card.funding_account != device.funding_account {
            return Err(FlowAError::CardNotForCustomer);
        }
        let sealed_card = self.seal_card(&device.device_id, card, &storage, rng)?;
        let card_digest = sha256(&[&sealed_card.sealed]);
        // The earliest deadline among the device's current keys; 0 if one
        // of them is already gone from the rings.
        let deadline = |ring: &crate::keys::KeyRing, r: &kessai_ids::KeyRef| {
            ring.keys()
                .find(|k| &k.key_ref == r)
                .map(|k| k.honoured_until_ms.unwrap_or(u64::MAX))
                .unwrap_or(0)
        };
        let previous_honoured_until_ms = deadline(&self.keys.storage, &device.storage_key)
            .min(deadline(&self.keys.transmission, &device.transmission_key));
        let key_update = self.keys.sign(&KeyUpdate {
            device_id: device.device_id.clone(),
            previous_storage_key: device.storage_key.clone(),
            previous_transmission_key: device.transmission_key.clone(),
            storage_key: storage.clone(),
            transmission_key: transmission.clone(),
            card: sealed_card,
            previous_honoured_until_ms,
            issued_at_ms: now_ms,
        })?;
        Ok(KeyUpdateIssued {
            pending: PendingKeyUpdate {
                device_id: device.device_id.clone(),
                key_update_digest: sha256(&[&key_update]),
                storage_key: storage.key_ref,
                transmission_key: transmission.key_ref,
                card_digest,
                issued_at_ms: now_ms,
            },
            key_update,
        })
    }

    /// Checks the device's confirmation of a key update (signed with its
    /// personal key, naming the update's digest, carrying the master
    /// template re-sealed under the new storage key) and returns the
    /// updated device record. Store it and delete `pending`.
    pub fn confirm_key_update(
        &self,
        device: &DeviceRecord,
        pending: Option<&PendingKeyUpdate>,
        confirmation: &[u8],
        now_ms: u64,
    ) -> Result<DeviceRecord, FlowAError> {
        let pending = pending
            .filter(|p| p.device_id == device.device_id)
            .ok_or(FlowAError::NoPendingKeyUpdate)?;
        let verified: Verified<KeyUpdateConfirmation> = cose::verify_artefact(confirmation, |r| {
            (r == &device.personal_key_ref).then_some(device.personal_key)
        })?;
        let c = verified.payload();
        if c.device_id != device.device_id {
            return Err(FlowAError::WrongDevice);
        }
        if c.key_update_digest != pending.key_update_digest
            || c.storage_key != pending.storage_key
            || c.transmission_key != pending.transmission_key
        {
            return Err(FlowAError::NoPendingKeyUpdate);
        }
        self.open_template(
            &device.device_id,
            &c.sealed_template,
            &pending.storage_key,
            now_ms,
        )?;
        Ok(DeviceRecord {
            storage_key: pending.storage_key.clone(),
            transmission_key: pending.transmission_key.clone(),
            card_digest: pending.card_digest,
            template_digest: sha256(&[&c.sealed_template]),
            keys_updated_at_ms: Some(now_ms),
            ..device.clone()
        })
    }

    /// Signs an unlock for `device`'s lock number `lock_seq`, after the
    /// issuer has identified the customer out of band.
    pub fn issue_unlock(
        &self,
        device: &DeviceRecord,
        lock_seq: u32,
        now_ms: u64,
    ) -> Result<Vec<u8>, FlowAError> {
        self.keys.sign(&Unlock {
            device_id: device.device_id.clone(),
            lock_seq,
            issued_at_ms: now_ms,
        })
    }
}
