//! The portable electronic device having a fingerprint sensor (claims 5,
//! 6, 1, 4): its persistent state and every step it takes.
//!
//! [`DeviceState`] is plain data (serde), so an emulator can keep it in a
//! JSON file; everything secret inside it — the personal key seed, the
//! local matching template, the registration binding secret — is sealed
//! with AES-256-GCM under the device-local key in [`DeviceSecrets`], which
//! a real device keeps in its secure element and the emulator in its own
//! key file. Card information and the master template are additionally
//! stored sealed under the host's storage public key (claims 2, 5), which
//! the device itself cannot open.
//!
//! Every method either succeeds and updates the state, or returns an error
//! and leaves the state as it was — except a fingerprint mismatch, which
//! counts towards the lock (that is its purpose).
//!
//! ```text
//! Fresh ─registration_request─► Requested ─answer_identity_request─► Identifying
//!   ─register (permission, master fingerprint, personal key)─► Registered
//! Registered: confirm_identity → IdentityConfirmed → build_transaction → accept_result
//!             too many mismatches → Locked ─apply_unlock (issuer-signed)─► Unlocked
//!             apply_key_update (issuer-signed) → confirmation
//! ```

use std::fmt;

use kessai_crypto::at_rest::{open_at_rest, seal_at_rest};
use kessai_crypto::cose::{self, Verified};
use kessai_crypto::digest::sha256;
use kessai_crypto::sign::{SigningKey, VerifyingKey};
use kessai_ids::{CardholderId, DeviceId, KeyRef};
use kessai_money::Money;
use kessai_secrets::SecretKey;
use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::FlowAError;
use crate::artefacts::{
    IdentityIdentification, IdentityRequest, KeyRegistration, KeyRegistrationPayload, KeyUpdate,
    KeyUpdateConfirmation, MasterTemplateBlob, RegistrationPermission, RegistrationRequest,
    SealedCard, TransactionContent, TransactionData, TransactionResult, Unlock,
};
use crate::fingerprint::{FingerprintReader, MatchOutcome};
use crate::model::{
    BINDING_LABEL, BindingSecret, CardExpiry, EnrolmentCode, IssuerAnchor, PublishedKey, Template,
    bytes_serde, framed, identity_aad, template_aad, txn_aad,
};
use crate::personal_key::{derive_personal_seed, personal_key};

/// The device-local sealing key. Not part of [`DeviceState`]; never
/// serialized.
pub struct DeviceSecrets {
    local_key: SecretKey<32>,
}

impl DeviceSecrets {
    /// Wraps the device-local key.
    pub fn new(local_key: SecretKey<32>) -> Self {
        Self { local_key }
    }
}

impl fmt::Debug for DeviceSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DeviceSecrets(redacted)")
    }
}

/// Proof that the owner's fingerprint matched just now. Only
/// [`DeviceState::confirm_identity`] makes one; [`DeviceState::build_transaction`]
/// consumes it, so no transaction data is signed without a match.
#[derive(Debug)]
#[must_use = "a confirmed identity is needed to build the transaction"]
pub struct IdentityConfirmed {
    device_id: DeviceId,
}

/// Whether the device accepts fingerprints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum LockState {
    /// Accepting fingerprints.
    Unlocked {
        /// Consecutive mismatches so far.
        failed_matches: u8,
    },
    /// Locked after too many mismatches; an issuer-signed unlock naming
    /// `lock_seq` lifts it.
    Locked {
        /// Which lock this is (1 for the first).
        lock_seq: u32,
    },
}

/// The device's persistent state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceState {
    device_id: DeviceId,
    issuer: IssuerAnchor,
    max_match_attempts: u8,
    phase: Phase,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "phase")]
enum Phase {
    Fresh,
    Requested {
        #[serde(with = "bytes_serde::array")]
        device_nonce: [u8; 16],
    },
    Identifying {
        #[serde(with = "bytes_serde::array")]
        device_nonce: [u8; 16],
        #[serde(with = "bytes_serde::array")]
        session_nonce: [u8; 16],
        /// The binding secret, sealed under the device-local key.
        #[serde(with = "bytes_serde")]
        binding_sealed: Vec<u8>,
    },
    Registered(Box<Registered>),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Registered {
    cardholder: CardholderId,
    personal_key_ref: KeyRef,
    personal_public: VerifyingKey,
    /// Personal key seed sealed under the device-local key.
    #[serde(with = "bytes_serde")]
    personal_seed_sealed: Vec<u8>,
    storage: PublishedKey,
    transmission: PublishedKey,
    /// Card information sealed under the storage key (from the host).
    card: SealedCard,
    /// Master template sealed under the storage key.
    #[serde(with = "bytes_serde")]
    template_sealed: Vec<u8>,
    /// Matching template sealed under the device-local key.
    #[serde(with = "bytes_serde")]
    template_local: Vec<u8>,
    /// Last transaction counter used.
    counter: u64,
    lock: LockState,
    /// Number of locks so far.
    locks: u32,
    /// The transaction awaiting its result: counter and digest.
    awaiting_result: Option<AwaitingResult>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct AwaitingResult {
    counter: u64,
    #[serde(with = "bytes_serde::array")]
    digest: [u8; 32],
}

/// What a device-local envelope holds.
#[derive(Clone, Copy)]
enum Local {
    PersonalSeed,
    Template,
    Binding,
}

impl Local {
    fn label(self) -> &'static [u8] {
        match self {
            Local::PersonalSeed => b"personal-key-seed",
            Local::Template => b"matching-template",
            Local::Binding => b"binding-secret",
        }
    }
}

fn local_aad(device: &DeviceId, what: Local) -> Vec<u8> {
    framed(
        "kessai/flow-a/device-local/v1",
        &[device.as_str().as_bytes(), what.label()],
    )
}

impl DeviceState {
    /// A fresh device trusting `issuer`, locking after
    /// `max_match_attempts` consecutive mismatches (at least 1).
    pub fn new(device_id: DeviceId, issuer: IssuerAnchor, max_match_attempts: u8) -> Self {
        Self {
            device_id,
            issuer,
            max_match_attempts: max_match_attempts.max(1),
            phase: Phase::Fresh,
        }
    }

    /// The device id.
    pub fn device_id(&self) -> &DeviceId {
        &self.device_id
    }

    /// True once registered.
    pub fn is_registered(&self) -> bool {
        matches!(self.phase, Phase::Registered(_))
    }

    /// The lock state (`None` before registration).
    pub fn lock_state(&self) -> Option<LockState> {
        self.registered().ok().map(|r| r.lock)
    }

    /// The last transaction counter used (`None` before registration).
    pub fn counter(&self) -> Option<u64> {
        self.registered().ok().map(|r| r.counter)
    }

    /// Masked card number and expiry for display.
    pub fn card_display(&self) -> Option<(&str, CardExpiry)> {
        self.registered()
            .ok()
            .map(|r| (r.card.masked_pan.as_str(), r.card.expiry))
    }

    /// The storage and transmission key references in use.
    pub fn key_refs(&self) -> Option<(&KeyRef, &KeyRef)> {
        self.registered()
            .ok()
            .map(|r| (&r.storage.key_ref, &r.transmission.key_ref))
    }

    /// The storage-sealed card information and master template, as stored.
    pub fn sealed_data(&self) -> Option<(&[u8], &[u8])> {
        self.registered()
            .ok()
            .map(|r| (r.card.sealed.as_slice(), r.template_sealed.as_slice()))
    }

    /// The personal public key and its reference.
    pub fn personal_key(&self) -> Option<(&KeyRef, VerifyingKey)> {
        self.registered()
            .ok()
            .map(|r| (&r.personal_key_ref, r.personal_public))
    }

    fn registered(&self) -> Result<&Registered, FlowAError> {
        match &self.phase {
            Phase::Registered(r) => Ok(r),
            _ => Err(FlowAError::NotRegistered),
        }
    }

    fn registered_mut(&mut self) -> Result<&mut Registered, FlowAError> {
        match &mut self.phase {
            Phase::Registered(r) => Ok(r),
            _ => Err(FlowAError::NotRegistered),
        }
    }

    fn verify_issuer<A: cose::Artefact>(&self, bytes: &[u8]) -> Result<Verified<A>, FlowAError> {
        cose::verify_artefact::<A>(bytes, |r| self.issuer.resolve(r)).map_err(|e| match e {
            kessai_crypto::CoseError::UnknownKey(_) | kessai_crypto::CoseError::BadSignature => {
                FlowAError::NotFromIssuer
            }
            other => FlowAError::Cose(other),
        })
    }

    fn open_local(
        &self,
        secrets: &DeviceSecrets,
        what: Local,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, FlowAError> {
        let opened = open_at_rest(
            &secrets.local_key,
            &local_aad(&self.device_id, what),
            sealed,
        )?;
        Ok(Zeroizing::new(opened.expose().to_vec()))
    }

    fn seal_local(
        &self,
        secrets: &DeviceSecrets,
        what: Local,
        plaintext: &[u8],
        rng: &mut impl CryptoRng,
    ) -> Vec<u8> {
        seal_at_rest(
            &secrets.local_key,
            &local_aad(&self.device_id, what),
            plaintext,
            rng,
        )
    }

    fn signing_key(
        &self,
        secrets: &DeviceSecrets,
        r: &Registered,
    ) -> Result<SigningKey, FlowAError> {
        let seed = self.open_local(secrets, Local::PersonalSeed, &r.personal_seed_sealed)?;
        let seed = SecretKey::<32>::from_slice(&seed)
            .map_err(|_| FlowAError::Malformed("personal key seed length"))?;
        Ok(personal_key(&seed))
    }

    fn local_template(
        &self,
        secrets: &DeviceSecrets,
        r: &Registered,
    ) -> Result<Template, FlowAError> {
        let bytes = self.open_local(secrets, Local::Template, &r.template_local)?;
        Template::from_iso19794_2(bytes.to_vec())
    }

    // ----- registration (claims 6, 7) -----

    /// Starts registration: a REGISTRATION REQUEST with a fresh nonce.
    /// Allowed before registration (again after an abandoned attempt).
    pub fn registration_request(
        &mut self,
        rng: &mut impl CryptoRng,
    ) -> Result<RegistrationRequest, FlowAError> {
        if self.is_registered() {
            return Err(FlowAError::AlreadyRegistered);
        }
        let mut device_nonce = [0u8; 16];
        rng.fill_bytes(&mut device_nonce);
        self.phase = Phase::Requested { device_nonce };
        Ok(RegistrationRequest {
            device_id: self.device_id.clone(),
            device_nonce,
        })
    }

    /// Answers the host's identity identification request with the
    /// customer number and enrolment code, sealed to the transmission key
    /// the (issuer-signed) request names. May be repeated after a wrong
    /// code.
    pub fn answer_identity_request(
        &mut self,
        request: &[u8],
        customer: &CardholderId,
        code: &EnrolmentCode,
        secrets: &DeviceSecrets,
        now_ms: u64,
        rng: &mut impl CryptoRng,
    ) -> Result<Vec<u8>, FlowAError> {
        let device_nonce = match &self.phase {
            Phase::Requested { device_nonce } | Phase::Identifying { device_nonce, .. } => {
                *device_nonce
            }
            Phase::Fresh => return Err(FlowAError::WrongState("no registration requested")),
            Phase::Registered(_) => return Err(FlowAError::AlreadyRegistered),
        };
        let req = self
            .verify_issuer::<IdentityRequest>(request)?
            .into_payload();
        if req.device_id != self.device_id {
            return Err(FlowAError::WrongDevice);
        }
        if req.device_nonce != device_nonce {
            return Err(FlowAError::SessionMismatch);
        }
        if now_ms >= req.expires_at_ms {
            return Err(FlowAError::SessionExpired);
        }
        let binding_secret = BindingSecret::generate(rng);
        let ident = IdentityIdentification {
            device_id: self.device_id.clone(),
            session_nonce: req.session_nonce,
            customer: customer.clone(),
            code: code.clone(),
            binding_secret: binding_secret.clone(),
        };
        let sealed = cose::seal_artefact(
            &ident,
            &req.transmission_key.public_key,
            &req.transmission_key.key_ref,
            &identity_aad(&self.device_id, &req.session_nonce),
            rng,
        )?;
        let binding_sealed = self.seal_local(secrets, Local::Binding, binding_secret.expose(), rng);
        self.phase = Phase::Identifying {
            device_nonce,
            session_nonce: req.session_nonce,
            binding_sealed,
        };
        Ok(sealed)
    }

    /// On a REGISTRATION PERMISSION (claim 6): verifies it, reads the
    /// master fingerprint, generates the personal key from the fingerprint
    /// data read together with fresh device randomness, stores the card
    /// information and master template sealed under the storage public key
    /// (and the matching template sealed locally), and returns the key
    /// registration with proof of possession.
    ///
    /// Without a permission issued for this device's registration in
    /// progress, nothing is read and nothing changes.
    pub fn register(
        &mut self,
        permission: &[u8],
        reader: &mut impl FingerprintReader,
        secrets: &DeviceSecrets,
        now_ms: u64,
        rng: &mut impl CryptoRng,
    ) -> Result<KeyRegistration, FlowAError> {
        let (device_nonce, session_nonce, binding_sealed) = match &self.phase {
            Phase::Identifying {
                device_nonce,
                session_nonce,
                binding_sealed,
            } => (*device_nonce, *session_nonce, binding_sealed.clone()),
            Phase::Registered(_) => return Err(FlowAError::AlreadyRegistered),
            _ => return Err(FlowAError::NoRegistrationPermission),
        };
        let verified = self.verify_issuer::<RegistrationPermission>(permission)?;
        let permission_digest = verified.digest();
        let p = verified.into_payload();
        if p.device_id != self.device_id {
            return Err(FlowAError::WrongDevice);
        }
        if p.device_nonce != device_nonce || p.session_nonce != session_nonce {
            return Err(FlowAError::SessionMismatch);
        }
        if now_ms >= p.register_by_ms {
            return Err(FlowAError::SessionExpired);
        }
        if p.personal_key_ref.id.as_str() != self.device_id.as_str() {
            return Err(FlowAError::Malformed(
                "personal key id is not the device id",
            ));
        }
        if cose::peek(&p.card.sealed)?.kid != p.storage_key.key_ref {
            return Err(FlowAError::ContentMismatch);
        }
        let binding = self.open_local(secrets, Local::Binding, &binding_sealed)?;
        let binding = binding_from_bytes(&binding)?;

        // Read the master fingerprint and generate the personal key.
        let reading = reader.read_master()?;
        let mut random = [0u8; 32];
        rng.fill_bytes(&mut random);
        let random = SecretKey::new(random);
        let seed = derive_personal_seed(
            &random,
            &reading.impressions,
            &self.device_id,
            &permission_digest,
        );
        let key = personal_key(&seed);
        let public = key.verifying_key();

        let template_sealed = cose::seal_bytes::<MasterTemplateBlob>(
            reading.template.expose(),
            &p.storage_key.public_key,
            &p.storage_key.key_ref,
            &template_aad(&self.device_id),
            rng,
        )?;
        let binding_mac = binding.mac(BINDING_LABEL, &[&permission_digest, &public.to_bytes()]);
        let signed = cose::sign_artefact(
            &KeyRegistrationPayload {
                device_id: self.device_id.clone(),
                permission_digest,
                session_nonce,
                public_key: public,
                binding_mac,
                sealed_template: template_sealed.clone(),
            },
            &key,
            &p.personal_key_ref,
        )?;
        let personal_seed_sealed =
            self.seal_local(secrets, Local::PersonalSeed, seed.expose(), rng);
        let template_local =
            self.seal_local(secrets, Local::Template, reading.template.expose(), rng);
        self.phase = Phase::Registered(Box::new(Registered {
            cardholder: p.cardholder,
            personal_key_ref: p.personal_key_ref,
            personal_public: public,
            personal_seed_sealed,
            storage: p.storage_key,
            transmission: p.transmission_key,
            card: p.card,
            template_sealed,
            template_local,
            counter: 0,
            lock: LockState::Unlocked { failed_matches: 0 },
            locks: 0,
            awaiting_result: None,
        }));
        Ok(KeyRegistration {
            public_key: public,
            signed,
        })
    }

    // ----- purchase (claims 1, 5, 8) -----

    /// One identity confirmation attempt: reads a finger and matches it
    /// against the master template. A mismatch counts; at the limit the
    /// device locks ([`FlowAError::DeviceLocked`]). A failed capture does
    /// not count.
    pub fn confirm_identity(
        &mut self,
        reader: &mut impl FingerprintReader,
        secrets: &DeviceSecrets,
    ) -> Result<IdentityConfirmed, FlowAError> {
        let r = self.registered()?;
        if let LockState::Locked { lock_seq } = r.lock {
            return Err(FlowAError::DeviceLocked { lock_seq });
        }
        let template = self.local_template(secrets, r)?;
        let outcome = reader.capture_and_match(&template);
        let max = self.max_match_attempts;
        let device_id = self.device_id.clone();
        let r = self.registered_mut()?;
        let failed = match r.lock {
            LockState::Unlocked { failed_matches } => failed_matches,
            LockState::Locked { lock_seq } => return Err(FlowAError::DeviceLocked { lock_seq }),
        };
        match outcome {
            MatchOutcome::Match => {
                r.lock = LockState::Unlocked { failed_matches: 0 };
                Ok(IdentityConfirmed { device_id })
            }
            MatchOutcome::NoCapture => Err(FlowAError::CaptureFailed),
            MatchOutcome::NoMatch => {
                let failed = failed.saturating_add(1);
                if failed >= max {
                    r.locks = r.locks.saturating_add(1);
                    r.lock = LockState::Locked { lock_seq: r.locks };
                    Err(FlowAError::DeviceLocked { lock_seq: r.locks })
                } else {
                    r.lock = LockState::Unlocked {
                        failed_matches: failed,
                    };
                    Err(FlowAError::NoMatch {
                        attempts_left: max - failed,
                    })
                }
            }
        }
    }

    /// Builds TRANSACTION DATA: the merchant-signed `order` and the stored
    /// (storage-sealed) card information, with the amount the customer
    /// approved, encrypted under the transmission public key and signed
    /// with the personal key under the next device counter.
    pub fn build_transaction(
        &mut self,
        confirmed: IdentityConfirmed,
        order: &[u8],
        approved: Money,
        secrets: &DeviceSecrets,
        now_ms: u64,
        rng: &mut impl CryptoRng,
    ) -> Result<Vec<u8>, FlowAError> {
        if confirmed.device_id != self.device_id {
            return Err(FlowAError::WrongDevice);
        }
        let r = self.registered()?;
        if let LockState::Locked { lock_seq } = r.lock {
            return Err(FlowAError::DeviceLocked { lock_seq });
        }
        if approved.amount_minor <= 0 {
            return Err(FlowAError::AmountNotPositive);
        }
        let counter = r
            .counter
            .checked_add(1)
            .ok_or(FlowAError::Malformed("counter exhausted"))?;
        let content = cose::seal_artefact(
            &TransactionContent {
                order: order.to_vec(),
                card: r.card.sealed.clone(),
                approved,
            },
            &r.transmission.public_key,
            &r.transmission.key_ref,
            &txn_aad(&self.device_id, counter),
            rng,
        )?;
        let key = self.signing_key(secrets, r)?;
        let signed = cose::sign_artefact(
            &TransactionData {
                device_id: self.device_id.clone(),
                counter,
                created_at_ms: now_ms,
                order_digest: sha256(&[order]),
                content,
            },
            &key,
            &r.personal_key_ref,
        )?;
        let digest = sha256(&[&signed]);
        let r = self.registered_mut()?;
        r.counter = counter;
        r.awaiting_result = Some(AwaitingResult { counter, digest });
        Ok(signed)
    }

    /// Checks the host's signed RESULT for the last transaction.
    pub fn accept_result(&mut self, result: &[u8]) -> Result<TransactionResult, FlowAError> {
        self.registered()?;
        let res = self
            .verify_issuer::<TransactionResult>(result)?
            .into_payload();
        if res.device_id != self.device_id {
            return Err(FlowAError::WrongDevice);
        }
        let r = self.registered_mut()?;
        match r.awaiting_result {
            Some(a) if a.counter == res.counter && a.digest == res.transaction_digest => {
                r.awaiting_result = None;
                Ok(res)
            }
            _ => Err(FlowAError::ResultMismatch),
        }
    }

    /// Lifts a lock with an issuer-signed unlock naming the current lock.
    pub fn apply_unlock(&mut self, unlock: &[u8]) -> Result<(), FlowAError> {
        self.registered()?;
        let u = self.verify_issuer::<Unlock>(unlock)?.into_payload();
        if u.device_id != self.device_id {
            return Err(FlowAError::WrongDevice);
        }
        let r = self.registered_mut()?;
        match r.lock {
            LockState::Locked { lock_seq } if lock_seq == u.lock_seq => {
                r.lock = LockState::Unlocked { failed_matches: 0 };
                Ok(())
            }
            _ => Err(FlowAError::UnlockMismatch),
        }
    }

    // ----- key update (claims 4, 11) -----

    /// Applies an issuer-signed KEY UPDATE: takes the new storage and
    /// transmission public keys, replaces the stored card information with
    /// the host's copy sealed under the new storage key and the stored
    /// master template with a copy the device seals under it from its
    /// local matching template, and returns the confirmation signed with
    /// the personal key.
    pub fn apply_key_update(
        &mut self,
        key_update: &[u8],
        secrets: &DeviceSecrets,
        rng: &mut impl CryptoRng,
    ) -> Result<Vec<u8>, FlowAError> {
        let r = self.registered()?;
        let verified = self.verify_issuer::<KeyUpdate>(key_update)?;
        let digest = verified.digest();
        let u = verified.into_payload();
        if u.device_id != self.device_id {
            return Err(FlowAError::WrongDevice);
        }
        if u.previous_storage_key != r.storage.key_ref
            || u.previous_transmission_key != r.transmission.key_ref
        {
            return Err(FlowAError::WrongState("key update is for other keys"));
        }
        let newer = |old: &KeyRef, new: &KeyRef| new.id == old.id && new.version >= old.version;
        if !newer(&r.storage.key_ref, &u.storage_key.key_ref)
            || !newer(&r.transmission.key_ref, &u.transmission_key.key_ref)
            || (u.storage_key.key_ref == r.storage.key_ref
                && u.transmission_key.key_ref == r.transmission.key_ref)
        {
            return Err(FlowAError::KeyNotNewer);
        }
        if cose::peek(&u.card.sealed)?.kid != u.storage_key.key_ref {
            return Err(FlowAError::ContentMismatch);
        }
        let template = self.local_template(secrets, r)?;
        let template_sealed = cose::seal_bytes::<MasterTemplateBlob>(
            template.expose(),
            &u.storage_key.public_key,
            &u.storage_key.key_ref,
            &template_aad(&self.device_id),
            rng,
        )?;
        let key = self.signing_key(secrets, r)?;
        let confirmation = cose::sign_artefact(
            &KeyUpdateConfirmation {
                device_id: self.device_id.clone(),
                key_update_digest: digest,
                storage_key: u.storage_key.key_ref.clone(),
                transmission_key: u.transmission_key.key_ref.clone(),
                sealed_template: template_sealed.clone(),
            },
            &key,
            &r.personal_key_ref,
        )?;
        let r = self.registered_mut()?;
        r.storage = u.storage_key;
        r.transmission = u.transmission_key;
        r.card = u.card;
        r.template_sealed = template_sealed;
        Ok(confirmation)
    }
}

fn binding_from_bytes(bytes: &[u8]) -> Result<BindingSecret, FlowAError> {
    let arr: [u8; 32] = bytes
        .try_into()
        .map_err(|_| FlowAError::Malformed("binding secret length"))?;
    Ok(BindingSecret::from_bytes(arr))
}
