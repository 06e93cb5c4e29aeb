//! Flow C on the wire: request bodies and answers of the HTTP API, and the
//! channel-authentication artefacts phones and merchants sign to read their
//! messages. Shared with the `kessai reader` role commands, so client and
//! host cannot drift apart.
//!
//! # Channel authentication (phones and merchants reading their messages)
//!
//! 1. `GET /v1/flow-c/challenge` returns a [`ChannelChallenge`] signed by the
//!    host (`host-sign#N`): 16 random bytes and a validity window
//!    ([`super::Settings::challenge_ttl_ms`]). The host keeps no state for it.
//! 2. The client signs a [`ChannelAuth`] with its registered key (phone:
//!    device key `<device id>#<version>`; merchant: `<store id>#<version>`)
//!    naming the challenge's digest, itself (`phone:<device>` /
//!    `merchant:<store>`) and the request (`GET <path>`).
//! 3. It sends both, base64url, in the [`CHALLENGE_HEADER`] and
//!    [`AUTH_HEADER`] headers. The host checks its own signature and the
//!    window, the client's signature under the registered key, the party
//!    and request, and marks the auth's digest used in the database
//!    (`flow_support::use_once`): a captured header pair cannot be replayed,
//!    by this process or another, and cannot be used for another path.
//!
//! The phone needs no clock of its own: freshness comes from the host's
//! challenge.

use base64::Engine as _;
use kessai_crypto::cose::Artefact;
use kessai_flow_c::artefacts::Signer;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::problem::ApiError;

/// Header carrying the host-signed [`ChannelChallenge`] (base64url).
pub const CHALLENGE_HEADER: &str = "x-kessai-challenge";
/// Header carrying the client-signed [`ChannelAuth`] (base64url).
pub const AUTH_HEADER: &str = "x-kessai-auth";

/// base64url without padding.
pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64url (padding tolerated); `field` names the field in the
/// problem, never the value.
pub fn unb64(s: &str, field: &'static str) -> Result<Vec<u8>, ApiError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|_| {
            ApiError::bad_request("invalid-base64", "Field is not base64url")
                .with_detail(format!("{field} must be base64url"))
        })
}

/// The party string of a phone.
pub fn phone_party(device_id: &str) -> String {
    format!("phone:{device_id}")
}

/// The party string of a merchant.
pub fn merchant_party(store_id: &str) -> String {
    format!("merchant:{store_id}")
}

/// A host-signed challenge (step 1 of channel authentication).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelChallenge {
    /// 16 random bytes, hex.
    pub nonce: String,
    /// When the host issued it, unix ms.
    pub issued_at_ms: u64,
    /// The host refuses it from this instant on.
    pub expires_at_ms: u64,
}

impl Artefact for ChannelChallenge {
    const TYPE: &'static str = "flowc-channel-challenge";
    const VERSION: u32 = 1;
}

/// A client's signed answer to a challenge (step 2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelAuth {
    /// SHA-256 of the challenge's COSE bytes, hex.
    pub challenge: String,
    /// `phone:<device id>` or `merchant:<store id>`.
    pub party: String,
    /// `GET <path>` of the request it authorizes.
    pub request: String,
}

impl Artefact for ChannelAuth {
    const TYPE: &'static str = "flowc-channel-auth";
    const VERSION: u32 = 1;
}

/// Signs the [`ChannelAuth`] for `challenge_b64` (as the host sent it) and
/// returns it base64url, for [`AUTH_HEADER`].
pub fn sign_channel_auth(
    challenge_b64: &str,
    party: &str,
    request: &str,
    signer: &Signer,
) -> Result<String, ApiError> {
    let challenge = unb64(challenge_b64, "challenge")?;
    let auth = ChannelAuth {
        challenge: hex::encode(kessai_crypto::digest::sha256(&[&challenge])),
        party: party.to_owned(),
        request: request.to_owned(),
    };
    let bytes = signer
        .sign(&auth)
        .map_err(|e| ApiError::internal(&e.to_string()))?;
    Ok(b64(&bytes))
}

/// A merchant's signed payment request (S1).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentRequestBody {
    /// COSE_Sign1 `flowc-payment-request`, base64url, signed with the
    /// merchant's registered key.
    pub payment_request: String,
}

/// The phone's signed approve / reject (S33 / S46).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApprovalBody {
    /// COSE_Sign1 `flowc-approval-response`, base64url, signed with the
    /// phone's device key.
    pub approval_response: String,
}

/// Card data the reader sealed to the transaction key (S36–S37).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CardDataBody {
    /// COSE_Encrypt0 `flowc-card-data`, base64url.
    pub sealed_card_data: String,
}

/// The PIN block the reader sealed to the transaction key (S41–S42).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PinBlockBody {
    /// COSE_Encrypt0 `flowc-pin-block`, base64url.
    pub sealed_pin_block: String,
}

/// Where a transaction is, as its merchant or phone may see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TxnView {
    /// Transaction id (32 hex digits).
    pub txn_id: String,
    /// `awaiting_approval`, `awaiting_card_data`, `awaiting_pin`,
    /// `settling`, `settled` or `declined`.
    pub state: String,
    /// The merchant.
    pub merchant_id: String,
    /// The merchant's order reference.
    pub order_ref: String,
    /// Amount in minor units.
    pub amount_minor: i64,
    /// ISO 4217 currency.
    pub currency: String,
    /// When the host declines if the awaited party does not answer.
    pub deadline_ms: Option<u64>,
    /// Why it was declined, as the merchant may see it (card and PIN
    /// details coarsened).
    pub decline_reason: Option<String>,
    /// The host-signed merchant completion (COSE_Sign1
    /// `flowc-completion-merchant`, base64url), once the transaction ended;
    /// only on the merchant's views.
    pub completion: Option<String>,
}

/// A host-signed challenge for channel authentication.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ChallengeView {
    /// COSE_Sign1 `flowc-channel-challenge`, base64url.
    pub challenge: String,
    /// Sign the auth and use it before this instant (unix ms).
    pub expires_at_ms: u64,
}

/// One message for a phone.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MessageView {
    /// Queue position; pass the last one seen as `after`.
    pub seq: i64,
    /// The transaction.
    pub txn_id: String,
    /// `approval_request`, `transaction_key`, `pin_prompt` or `completion`.
    pub kind: String,
    /// The host-signed artefact, base64url.
    pub artefact: String,
}

/// Messages waiting for a phone.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MessagesView {
    /// Oldest first.
    pub messages: Vec<MessageView>,
    /// The largest `seq` returned, or the `after` given.
    pub last_seq: i64,
}

/// Register a customer's phone for flow C.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterPhone {
    /// Device (wallet) id; its key ref is `<device id>#1`.
    pub device_id: String,
    /// E.164 phone number the merchant will name (`+` and 8–15 digits).
    pub phone_number: String,
    /// The cardholder the phone pays for.
    pub cardholder_id: String,
    /// Ed25519 device public key, base64url.
    pub public_key: String,
}

/// A registered phone.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PhoneView {
    /// Device id.
    pub device_id: String,
    /// Phone number.
    pub phone_number: String,
    /// Cardholder.
    pub cardholder_id: String,
    /// Device key ref (`<device id>#<version>`).
    pub key_ref: String,
    /// `active` or `suspended`.
    pub status: String,
}

/// Register a card for flow C. The PAN is kept only as a keyed hash and a
/// masked form, the PIN only as keyed verification data; neither is ever
/// echoed.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterCard {
    /// Card id.
    pub card_id: String,
    /// Owner (must be registered).
    pub cardholder_id: String,
    /// Card number (ISO/IEC 7812, Luhn).
    pub pan: String,
    /// Expiry `YYMM`.
    pub expiry_yymm: String,
    /// The PIN the cardholder chose (4–12 digits).
    pub pin: String,
}

impl std::fmt::Debug for RegisterCard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegisterCard")
            .field("card_id", &self.card_id)
            .field("cardholder_id", &self.cardholder_id)
            .finish_non_exhaustive()
    }
}

impl Drop for RegisterCard {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.pan);
        zeroize::Zeroize::zeroize(&mut self.pin);
        zeroize::Zeroize::zeroize(&mut self.expiry_yymm);
    }
}

/// A registered card (never the PAN).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CardView {
    /// Card id.
    pub card_id: String,
    /// BIN + last four.
    pub masked_pan: String,
    /// Owner.
    pub cardholder_id: String,
    /// `active` or `blocked`.
    pub status: String,
    /// Consecutive wrong PINs.
    pub pin_failures: i64,
    /// PIN locked (reset by the issuer only).
    pub pin_locked: bool,
}

/// Block or reactivate a card.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetCardStatus {
    /// `active` or `blocked`.
    pub status: String,
}
