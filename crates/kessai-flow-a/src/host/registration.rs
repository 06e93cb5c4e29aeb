//! Registration procedure processing (claim 7) and the host half of key
//! registration (claim 6).
//!
//! ```text
//! device                                   host
//!   REGISTRATION REQUEST (id, nonce) ──►  begin_registration
//!                                    ◄──  identity request (signed: nonces, transmission key)
//!   IDENTITY IDENTIFICATION ─────────►  open_identification → decide_identity
//!   (sealed: customer no., code,            code: keyed hash, tries, single use
//!    binding secret)               ◄──  REGISTRATION PERMISSION (signed: storage +
//!                                         transmission keys, sealed card information)
//!   reads master fingerprint, makes personal key
//!   key registration (signed by the ─►  complete_registration → DeviceRecord
//!   new key, binding MAC, sealed template)
//! ```

use kessai_crypto::cose::{self, Verified};
use kessai_crypto::digest::sha256;
use kessai_ids::{CardholderId, DeviceId};
use rand_core::CryptoRng;
use subtle::ConstantTimeEq;

use super::{
    CodeUse, DeviceRecord, DeviceStatus, EnrolmentCodeRecord, Issuer, Permitted,
    RegistrationSession, SessionState, personal_key_ref,
};
use crate::FlowAError;
use crate::artefacts::{
    CardInfoPayload, IdentityIdentification, IdentityRequest, KeyRegistration,
    KeyRegistrationPayload, MasterTemplateBlob, RegistrationPermission, RegistrationRequest,
    SealedCard,
};
use crate::model::{
    BINDING_LABEL, CardInformation, EnrolmentCode, PublishedKey, Template, card_aad, framed,
    hmac_sha256, identity_aad, template_aad,
};

/// What [`Issuer::begin_registration`] produces.
#[derive(Debug)]
pub struct RegistrationStarted {
    /// The session to store (replacing any earlier one for the device).
    pub session: RegistrationSession,
    /// The signed identity identification request to send to the device.
    pub identity_request: Vec<u8>,
}

/// The outcome of checking an identity identification.
#[derive(Debug)]
pub enum IdentityDecision {
    /// The customer is identified: store `session` and `code` (now used),
    /// send `permission` to the device.
    Permitted {
        /// The updated session (state `Permitted`).
        session: RegistrationSession,
        /// The enrolment code record, marked used.
        code: EnrolmentCodeRecord,
        /// The signed REGISTRATION PERMISSION.
        permission: Vec<u8>,
    },
    /// Refused. If `code` is `Some`, store it: a wrong code spent a try.
    /// Nothing else changes.
    Refused {
        /// Why.
        error: FlowAError,
        /// The code record with one try fewer, when a try was spent.
        code: Option<EnrolmentCodeRecord>,
    },
}

impl Issuer<'_> {
    /// Issues a one-time enrolment code for `cardholder` (`kessai admin`
    /// hands the code to the customer out of band). Store the record; show
    /// the code once.
    pub fn issue_enrolment_code(
        &self,
        cardholder: &CardholderId,
        now_ms: u64,
        rng: &mut impl CryptoRng,
    ) -> Result<(EnrolmentCode, EnrolmentCodeRecord), FlowAError> {
        let code = EnrolmentCode::generate(rng);
        let record = EnrolmentCodeRecord {
            cardholder: cardholder.clone(),
            code_mac: self.code_mac(cardholder, &code),
            tries_left: self.policy.enrolment_code_tries,
            expires_at_ms: now_ms
                .checked_add(self.policy.enrolment_code_ttl_ms)
                .ok_or(FlowAError::TimeOverflow)?,
            used: None,
        };
        Ok((code, record))
    }

    fn code_mac(&self, cardholder: &CardholderId, code: &EnrolmentCode) -> [u8; 32] {
        hmac_sha256(
            self.keys.code_key.expose(),
            &framed(
                "kessai/flow-a/enrolment-code/v1",
                &[cardholder.as_str().as_bytes(), code.expose().as_bytes()],
            ),
        )
    }

    /// Answers a REGISTRATION REQUEST with a signed identity identification
    /// request. `existing` is the host's record for the device id, if any:
    /// an active device cannot register again ([`FlowAError::AlreadyRegistered`];
    /// revoke it first).
    pub fn begin_registration(
        &self,
        request: &RegistrationRequest,
        existing: Option<&DeviceRecord>,
        now_ms: u64,
        rng: &mut impl CryptoRng,
    ) -> Result<RegistrationStarted, FlowAError> {
        if existing.is_some_and(|d| d.status == super::DeviceStatus::Active) {
            return Err(FlowAError::AlreadyRegistered);
        }
        let mut session_nonce = [0u8; 16];
        rng.fill_bytes(&mut session_nonce);
        let expires_at_ms = now_ms
            .checked_add(self.policy.registration_ttl_ms)
            .ok_or(FlowAError::TimeOverflow)?;
        let transmission_key = self.keys.transmission.active_public();
        let identity_request = self.keys.sign(&IdentityRequest {
            device_id: request.device_id.clone(),
            device_nonce: request.device_nonce,
            session_nonce,
            transmission_key: transmission_key.clone(),
            expires_at_ms,
        })?;
        Ok(RegistrationStarted {
            session: RegistrationSession {
                device_id: request.device_id.clone(),
                device_nonce: request.device_nonce,
                session_nonce,
                transmission_key: transmission_key.key_ref,
                created_at_ms: now_ms,
                expires_at_ms,
                state: SessionState::AwaitingIdentity,
            },
            identity_request,
        })
    }

    /// Decrypts an IDENTITY IDENTIFICATION for `session`. The caller then
    /// loads the enrolment code record and card of the customer number it
    /// names and calls [`Issuer::decide_identity`].
    pub fn open_identification(
        &self,
        session: &RegistrationSession,
        sealed: &[u8],
        now_ms: u64,
    ) -> Result<IdentityIdentification, FlowAError> {
        if session.state != SessionState::AwaitingIdentity {
            return Err(FlowAError::WrongState("identity already confirmed"));
        }
        if now_ms >= session.expires_at_ms {
            return Err(FlowAError::SessionExpired);
        }
        let kid = cose::peek(sealed)?.kid;
        if kid != session.transmission_key {
            return Err(FlowAError::SessionMismatch);
        }
        let pair = self.keys.transmission.resolve(&kid, now_ms)?;
        let opened = cose::open_artefact::<IdentityIdentification, _>(
            sealed,
            |r| (r == &kid).then_some(pair),
            &identity_aad(&session.device_id, &session.session_nonce),
        )?;
        let ident = opened.into_payload();
        if ident.device_id != session.device_id
            || !bool::from(ident.session_nonce.ct_eq(&session.session_nonce))
        {
            return Err(FlowAError::SessionMismatch);
        }
        Ok(ident)
    }

    /// Decides an identity identification: checks the one-time enrolment
    /// code (keyed hash, constant-time compare, limited tries, single use,
    /// expiry) and on success issues the REGISTRATION PERMISSION with the
    /// storage and transmission public keys and the card information
    /// sealed for the host. `code` is the record for the customer number
    /// in `ident` (`None` if there is none); `card` is that customer's card.
    pub fn decide_identity(
        &self,
        session: &RegistrationSession,
        ident: &IdentityIdentification,
        code: Option<&EnrolmentCodeRecord>,
        card: &CardInformation,
        now_ms: u64,
        rng: &mut impl CryptoRng,
    ) -> IdentityDecision {
        let refuse = |error| IdentityDecision::Refused { error, code: None };
        if session.state != SessionState::AwaitingIdentity {
            return refuse(FlowAError::WrongState("identity already confirmed"));
        }
        if now_ms >= session.expires_at_ms {
            return refuse(FlowAError::SessionExpired);
        }
        if ident.device_id != session.device_id || ident.session_nonce != session.session_nonce {
            return refuse(FlowAError::SessionMismatch);
        }
        let Some(record) = code.filter(|c| c.cardholder == ident.customer) else {
            return refuse(FlowAError::UnknownCustomer);
        };
        if record.used.is_some() {
            return refuse(FlowAError::EnrolmentCodeUsed);
        }
        if record.tries_left == 0 {
            return refuse(FlowAError::EnrolmentCodeExhausted);
        }
        if now_ms >= record.expires_at_ms {
            return refuse(FlowAError::EnrolmentCodeExpired);
        }
        let mac = self.code_mac(&ident.customer, &ident.code);
        if !bool::from(mac.ct_eq(&record.code_mac)) {
            let tries_left = record.tries_left - 1;
            return IdentityDecision::Refused {
                error: if tries_left == 0 {
                    FlowAError::EnrolmentCodeExhausted
                } else {
                    FlowAError::EnrolmentCodeWrong { tries_left }
                },
                code: Some(EnrolmentCodeRecord {
                    tries_left,
                    ..record.clone()
                }),
            };
        }
        if card.cardholder != ident.customer {
            return refuse(FlowAError::CardNotForCustomer);
        }
        match self.permit(session, ident, record, card, now_ms, rng) {
            Ok(d) => d,
            Err(error) => refuse(error),
        }
    }

    fn permit(
        &self,
        session: &RegistrationSession,
        ident: &IdentityIdentification,
        record: &EnrolmentCodeRecord,
        card: &CardInformation,
        now_ms: u64,
        rng: &mut impl CryptoRng,
    ) -> Result<IdentityDecision, FlowAError> {
        let storage_key = self.keys.storage.active_public();
        let transmission_key = self.keys.transmission.active_public();
        let sealed_card = self.seal_card(&session.device_id, card, &storage_key, rng)?;
        let personal_key_ref = personal_key_ref(&session.device_id, 1)?;
        let register_by_ms = session.expires_at_ms;
        let card_digest = sha256(&[&sealed_card.sealed]);
        let permission = self.keys.sign(&RegistrationPermission {
            device_id: session.device_id.clone(),
            device_nonce: session.device_nonce,
            session_nonce: session.session_nonce,
            cardholder: ident.customer.clone(),
            storage_key: storage_key.clone(),
            transmission_key: transmission_key.clone(),
            card: sealed_card,
            personal_key_ref: personal_key_ref.clone(),
            register_by_ms,
        })?;
        let permitted = Permitted {
            cardholder: ident.customer.clone(),
            funding_account: card.funding_account.clone(),
            permission_digest: sha256(&[&permission]),
            storage_key: storage_key.key_ref,
            transmission_key: transmission_key.key_ref,
            card_digest,
            personal_key_ref,
            binding_secret: ident.binding_secret.clone(),
            register_by_ms,
        };
        Ok(IdentityDecision::Permitted {
            session: RegistrationSession {
                state: SessionState::Permitted(Box::new(permitted)),
                ..session.clone()
            },
            code: EnrolmentCodeRecord {
                used: Some(CodeUse {
                    device_id: session.device_id.clone(),
                    at_ms: now_ms,
                }),
                ..record.clone()
            },
            permission,
        })
    }

    /// Seals `card` for `device` under `storage` (only the host can open
    /// it again).
    pub(crate) fn seal_card(
        &self,
        device: &DeviceId,
        card: &CardInformation,
        storage: &PublishedKey,
        rng: &mut impl CryptoRng,
    ) -> Result<SealedCard, FlowAError> {
        let payload = CardInfoPayload {
            device_id: device.clone(),
            cardholder: card.cardholder.clone(),
            funding_account: card.funding_account.clone(),
            pan: card.pan.clone(),
            expiry: card.expiry,
        };
        let sealed = cose::seal_artefact(
            &payload,
            &storage.public_key,
            &storage.key_ref,
            &card_aad(device),
            rng,
        )?;
        Ok(SealedCard {
            sealed,
            masked_pan: card.pan.masked(),
            expiry: card.expiry,
        })
    }

    /// Opens a master template sealed for `device`; `expected` is the
    /// storage key it must be sealed under.
    pub(crate) fn open_template(
        &self,
        device: &DeviceId,
        sealed: &[u8],
        expected: &kessai_ids::KeyRef,
        now_ms: u64,
    ) -> Result<Template, FlowAError> {
        let kid = cose::peek(sealed)?.kid;
        if &kid != expected {
            return Err(FlowAError::ContentMismatch);
        }
        let pair = self.keys.storage.resolve(&kid, now_ms)?;
        let opened = cose::open_bytes::<MasterTemplateBlob, _>(
            sealed,
            |r| (r == &kid).then_some(pair),
            &template_aad(device),
        )?;
        Template::from_iso19794_2(opened.payload().expose().to_vec())
    }

    /// Registers the device's personal public key (claim 6): proof of
    /// possession (the payload is signed by the key it registers), the
    /// permission digest and session nonce, the binding MAC, and the
    /// storage-sealed master template. `session` is the device's session,
    /// if any: without a permitted one the answer is
    /// [`FlowAError::NoRegistrationPermission`]. On success store the
    /// returned record and delete the session.
    pub fn complete_registration(
        &self,
        session: Option<&RegistrationSession>,
        registration: &KeyRegistration,
        now_ms: u64,
    ) -> Result<DeviceRecord, FlowAError> {
        let Some(session) = session else {
            return Err(FlowAError::NoRegistrationPermission);
        };
        let SessionState::Permitted(permitted) = &session.state else {
            return Err(FlowAError::NoRegistrationPermission);
        };
        if now_ms >= permitted.register_by_ms {
            return Err(FlowAError::SessionExpired);
        }
        let verified: Verified<KeyRegistrationPayload> =
            cose::verify_artefact(&registration.signed, |r| {
                (r == &permitted.personal_key_ref).then_some(registration.public_key)
            })?;
        let p = verified.payload();
        if p.public_key != registration.public_key {
            return Err(FlowAError::ContentMismatch);
        }
        if p.device_id != session.device_id
            || p.session_nonce != session.session_nonce
            || p.permission_digest != permitted.permission_digest
        {
            return Err(FlowAError::SessionMismatch);
        }
        let expected_mac = permitted.binding_secret.mac(
            BINDING_LABEL,
            &[&p.permission_digest, &p.public_key.to_bytes()],
        );
        if !bool::from(expected_mac.ct_eq(&p.binding_mac)) {
            return Err(FlowAError::BindingMismatch);
        }
        self.open_template(
            &session.device_id,
            &p.sealed_template,
            &permitted.storage_key,
            now_ms,
        )?;
        Ok(DeviceRecord {
            device_id: session.device_id.clone(),
            cardholder: permitted.cardholder.clone(),
            funding_account: permitted.funding_account.clone(),
            personal_key_ref: permitted.personal_key_ref.clone(),
            personal_key: registration.public_key,
            last_counter: 0,
            storage_key: permitted.storage_key.clone(),
            transmission_key: permitted.transmission_key.clone(),
            card_digest: permitted.card_digest,
            template_digest: sha256(&[&p.sealed_template]),
            status: DeviceStatus::Active,
            registered_at_ms: now_ms,
            keys_updated_at_ms: None,
        })
    }
}
