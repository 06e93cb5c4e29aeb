//! The merchant's part of flow A: signing the commodity ORDER INFORMATION
//! and checking the issuer's settlement result.

use kessai_crypto::cose;
use kessai_crypto::digest::sha256;
use kessai_crypto::sign::SigningKey;
use kessai_ids::KeyRef;

use crate::FlowAError;
use crate::artefacts::{MerchantResult, OrderInformation};
use crate::model::IssuerAnchor;

/// Signs `order` with the store's key (`key_ref` must be registered with
/// the issuer as a key of `order.store`). Refuses a non-positive amount or
/// an order that expires before it was made.
pub fn sign_order(
    order: &OrderInformation,
    key: &SigningKey,
    key_ref: &KeyRef,
) -> Result<Vec<u8>, FlowAError> {
    if order.amount.amount_minor <= 0 {
        return Err(FlowAError::AmountNotPositive);
    }
    if order.expires_at_ms <= order.created_at_ms {
        return Err(FlowAError::OrderExpired);
    }
    Ok(cose::sign_artefact(order, key, key_ref)?)
}

/// Verifies the issuer's result for the merchant and that it answers the
/// order the merchant signed (`order` = the signed order bytes).
pub fn verify_merchant_result(
    result: &[u8],
    order: &[u8],
    issuer: &IssuerAnchor,
) -> Result<MerchantResult, FlowAError> {
    let res = cose::verify_artefact::<MerchantResult>(result, |r| issuer.resolve(r))
        .map_err(|e| match e {
            kessai_crypto::CoseError::UnknownKey(_) | kessai_crypto::CoseError::BadSignature => {
                FlowAError::NotFromIssuer
            }
            other => FlowAError::Cose(other),
        })?
        .into_payload();
    if res.order_digest != sha256(&[order]) {
        return Err(FlowAError::ResultMismatch);
    }
    Ok(res)
}
