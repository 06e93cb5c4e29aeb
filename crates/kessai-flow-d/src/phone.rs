//! The phone (mobile information terminal, claims 1–3, 5–8, 10–12, 20):
//! reads the IC card(s), takes the customer's verification, builds the
//! requests for the host, shows the password, verifies receipts, and — in
//! the claim-10 mode — checks the card's legitimacy itself first.
//!
//! # What the in-phone check (claim 10) can and cannot prove
//!
//! The kessai card holds only symmetric keys shared with the issuer, so a
//! phone cannot verify a card cryptogram. What it can verify offline:
//!
//! 1. the card's data against an **issuer-signed card profile**
//!    ([`CardProfile`], COSE_Sign1 under the issuer's Ed25519 key, stored on
//!    the phone at enrolment): card id, PAN digest, expiry, name, key
//!    version, currency — like EMV static data authentication;
//! 2. the card's own state: lifecycle *personalized*, expiry not passed,
//!    counter not exhausted;
//! 3. the cardholder, by **offline PIN** on the card (VERIFY), whose
//!    success the card then binds into its cryptogram (CVM `01`).
//!
//! What it cannot prove: that the chip is genuine rather than a clone of
//! the same readable data (that needs a secret only the card and issuer
//! share — the host's cryptogram check — or a card private key, which this
//! applet does not have). So the in-phone check stops a wrong, expired,
//! blocked or tampered card and a wrong PIN before anything reaches the
//! server; the host still verifies the cryptogram.

use kessai_card::harness::ApduTransport;
use kessai_crypto::cose;
use kessai_crypto::sign::VerifyingKey;
use kessai_ids::{KeyRef, TerminalId};
use kessai_money::Money;
use kessai_pin::{PinKey, encipher_pin_block};
use kessai_secrets::Pin;
use rand_core::CryptoRng;
use zeroize::Zeroizing;

use crate::FlowDError;
use crate::artefacts::{
    CardProfile, CardholderPayload, LineItem, cardholder_aad, profile_pan_digest, seal_cardholder,
};
use crate::cardio::{self, CardAuth, CardData};
use crate::host::{
    AuthorizationRequest, CvmMethod, HostChallenge, HostPublic, MerchantCardRequest, year_month,
};

/// How the customer verifies themself on the phone.
#[derive(Debug, Clone)]
pub enum CustomerVerification {
    /// PIN sent to the host as a format-4 PIN block.
    OnlinePin(Pin),
    /// PIN verified by the card.
    OfflinePin(Pin),
    /// Fingerprint matched on the card (claim 16): the live impression from
    /// the phone's sensor goes to the card, whose matcher compares it with
    /// the enrolled template and sets CVM `02` on a match.
    OnCardBiometric(kessai_biometric::Template),
    /// A secret registered in advance (claim 17).
    RegisteredSecret(String),
}

impl CustomerVerification {
    fn method(&self) -> CvmMethod {
        match self {
            Self::OnlinePin(_) => CvmMethod::OnlinePin,
            Self::OfflinePin(_) => CvmMethod::OfflinePin,
            Self::OnCardBiometric(_) => CvmMethod::OnCardBiometric,
            Self::RegisteredSecret(_) => CvmMethod::RegisteredSecret,
        }
    }
}

/// Reads the customer card, verifies offline PIN if asked, generates the
/// cryptogram over `amount` and seals the cardholder payload: the parts
/// shared by every variant.
fn customer_part(
    card: &mut impl ApduTransport,
    host: &HostPublic,
    challenge: &[u8; 8],
    amount: Money,
    verification: &CustomerVerification,
    rng: &mut impl CryptoRng,
) -> Result<(CardAuth, Vec<u8>), FlowDError> {
    cardio::select(card)?;
    let data = cardio::read_card_data(card)?;
    let ch = data
        .cardholder
        .as_ref()
        .ok_or(FlowDError::Card("not a customer card"))?;
    if data.currency_numeric != amount.currency.numeric() {
        return Err(FlowDError::CurrencyMismatch);
    }
    let amount_minor = u64::try_from(amount.amount_minor)
        .ok()
        .filter(|a| *a > 0)
        .ok_or(FlowDError::BadAmount)?;
    match verification {
        CustomerVerification::OfflinePin(pin) => cardio::verify_pin_offline(card, pin)?,
        CustomerVerification::OnCardBiometric(live) => {
            cardio::verify_fingerprint_on_card(card, live)?;
        }
        _ => {}
    }
    let auth = cardio::generate_cryptogram(
        card,
        &data.card_id,
        challenge,
        amount_minor,
        data.currency_numeric,
    )?;
    let pin = match verification {
        CustomerVerification::OnlinePin(pin) => {
            let mut key = Zeroizing::new([0u8; 16]);
            rng.fill_bytes(&mut key[..]);
            let pk = PinKey::from_slice(&key[..]).map_err(|_| FlowDError::Encoding("PIN key"))?;
            let block = encipher_pin_block(pin, &ch.pan, &pk, rng);
            Some((key.to_vec(), block.expose_bytes().to_vec()))
        }
        _ => None,
    };
    let secret = match verification {
        CustomerVerification::RegisteredSecret(s) => Some(s.clone()),
        _ => None,
    };
    let payload = CardholderPayload {
        pan: String::from_utf8_lossy(ch.pan.expose_digits()).into_owned(),
        expiry_yymm: ch.expiry_yymm.clone(),
        name: ch.name.clone(),
        pin,
        secret,
    };
    let aad = cardholder_aad(challenge, &auth.card_id, auth.counter);
    let sealed = seal_cardholder(
        &payload,
        &host.cardholder_key,
        &host.cardholder_key_ref,
        &aad,
        rng,
    )?;
    Ok((auth, sealed))
}

/// Builds the authorization request of the basic flow (claims 1, 5, 6):
/// `cap` is the most the password may settle.
pub fn build_authorization(
    card: &mut impl ApduTransport,
    host: &HostPublic,
    challenge: &HostChallenge,
    cap: Money,
    verification: &CustomerVerification,
    rng: &mut impl CryptoRng,
) -> Result<AuthorizationRequest, FlowDError> {
    if cap.amount_minor > challenge.max_amount_minor {
        return Err(FlowDError::BadAmount);
    }
    let (auth, sealed) = customer_part(card, host, &challenge.challenge, cap, verification, rng)?;
    Ok(AuthorizationRequest {
        challenge: challenge.challenge,
        card: auth,
        currency: cap.currency,
        method: verification.method(),
        sealed,
    })
}

/// Builds the merchant-IC-card request (claims 2, 7, 8): reads the
/// merchant card, then the customer card, both cryptograms over the same
/// challenge and the amount the customer entered.
#[allow(clippy::too_many_arguments)]
pub fn build_merchant_card_request(
    customer_card: &mut impl ApduTransport,
    merchant_card: &mut impl ApduTransport,
    host: &HostPublic,
    challenge: &HostChallenge,
    amount: Money,
    goods: Vec<LineItem>,
    terminal_id: Option<TerminalId>,
    verification: &CustomerVerification,
    rng: &mut impl CryptoRng,
) -> Result<MerchantCardRequest, FlowDError> {
    let amount_minor = u64::try_from(amount.amount_minor)
        .ok()
        .filter(|a| *a > 0)
        .ok_or(FlowDError::BadAmount)?;
    cardio::select(merchant_card)?;
    let m = cardio::read_card_data(merchant_card)?;
    let merchant = cardio::generate_cryptogram(
        merchant_card,
        &m.card_id,
        &challenge.challenge,
        amount_minor,
        amount.currency.numeric(),
    )?;
    let (customer, sealed) = customer_part(
        customer_card,
        host,
        &challenge.challenge,
        amount,
        verification,
        rng,
    )?;
    Ok(MerchantCardRequest {
        challenge: challenge.challenge,
        customer,
        merchant,
        currency: amount.currency,
        goods,
        terminal_id,
        method: verification.method(),
        sealed,
    })
}

/// The claim-10 in-phone card check (see the module docs): verifies the
/// issuer-signed profile and compares it with the card's data and state.
/// Returns the card data on success; nothing is sent anywhere.
pub fn check_card_in_phone(
    card: &mut impl ApduTransport,
    profile: &[u8],
    issuer_key_ref: &KeyRef,
    issuer_key: &VerifyingKey,
    now_ms: u64,
) -> Result<CardData, FlowDError> {
    let profile = cose::verify_artefact::<CardProfile>(profile, |r| {
        (r == issuer_key_ref).then_some(*issuer_key)
    })?
    .into_payload();
    cardio::select(card)?;
    let data = cardio::read_card_data(card)?;
    let ch = data
        .cardholder
        .as_ref()
        .ok_or(FlowDError::ProfileMismatch("no cardholder data"))?;
    if data.card_id != profile.card_id {
        return Err(FlowDError::ProfileMismatch("card id"));
    }
    if profile_pan_digest(&data.card_id, ch.pan.expose_digits()) != profile.pan_digest {
        return Err(FlowDError::ProfileMismatch("card number"));
    }
    if ch.expiry_yymm != profile.expiry_yymm || ch.name != profile.name {
        return Err(FlowDError::ProfileMismatch("expiry or name"));
    }
    if data.key_version != profile.key_version || data.currency_numeric != profile.currency_numeric
    {
        return Err(FlowDError::ProfileMismatch("key version or currency"));
    }
    if data.lifecycle != 0x01 {
        return Err(FlowDError::ProfileMismatch("card is blocked or terminated"));
    }
    if data.counter == u32::MAX {
        return Err(FlowDError::ProfileMismatch("card counter exhausted"));
    }
    let e = ch.expiry_yymm.as_bytes();
    let yy = i64::from((e[0] - b'0') * 10 + (e[1] - b'0'));
    let mm = u32::from((e[2] - b'0') * 10 + (e[3] - b'0'));
    if (2000 + yy, mm) < year_month(now_ms) {
        return Err(FlowDError::CardExpired);
    }
    Ok(data)
}
