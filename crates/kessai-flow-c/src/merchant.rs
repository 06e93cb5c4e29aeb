//! The merchant terminal (販売店のコンピュータ 4): signs the payment request
//! (S1, 201) and verifies the host's completion or decline (211, S42).
//!
//! The merchant learns the outcome, the amount and at most the masked PAN;
//! never card data or PIN.

use std::collections::BTreeMap;

use kessai_ids::{OrderId, StoreId};
use kessai_money::Money;
use rand_core::CryptoRng;

use crate::FlowError;
use crate::artefacts::{CustomerRef, MerchantCompletion, PaymentRequest, Signer, TrustedKeys};
use crate::ids::{ArtefactDigest, TxnId};

/// A request sent and not yet forgotten.
#[derive(Debug, Clone)]
struct Sent {
    txn_id: TxnId,
    digest: ArtefactDigest,
    amount: Money,
}

/// The merchant terminal emulator.
#[derive(Debug)]
pub struct MerchantTerminal {
    store_id: StoreId,
    key: Signer,
    host: TrustedKeys,
    sent: BTreeMap<OrderId, Vec<Sent>>,
}

impl MerchantTerminal {
    /// A terminal of merchant `store_id` signing with `key` and trusting
    /// `host` keys for completions.
    pub fn new(store_id: StoreId, key: Signer, host: TrustedKeys) -> Self {
        Self {
            store_id,
            key,
            host,
            sent: BTreeMap::new(),
        }
    }

    /// S1 (201): a signed payment request for `amount` from `customer`,
    /// valid for `ttl_ms`.
    pub fn payment_request(
        &mut self,
        customer: CustomerRef,
        amount: Money,
        order_ref: OrderId,
        now_ms: u64,
        ttl_ms: u64,
        rng: &mut impl CryptoRng,
    ) -> Result<Vec<u8>, FlowError> {
        if !amount.is_positive() {
            return Err(FlowError::AmountNotPositive);
        }
        let mut nonce = [0u8; 16];
        rng.fill_bytes(&mut nonce);
        let request = PaymentRequest {
            merchant_id: self.store_id.clone(),
            customer,
            amount,
            order_ref: order_ref.clone(),
            nonce,
            expires_at_ms: now_ms.saturating_add(ttl_ms),
        };
        let bytes = self.key.sign(&request)?;
        self.sent.entry(order_ref).or_default().push(Sent {
            txn_id: request.txn_id(),
            digest: ArtefactDigest::of(&bytes),
            amount,
        });
        Ok(bytes)
    }

    /// S42 (merchant side): verifies a completion: the host's signature,
    /// addressed to this merchant, answering a request this terminal sent,
    /// for the amount it asked.
    pub fn verify_completion(&self, bytes: &[u8]) -> Result<MerchantCompletion, FlowError> {
        let (done, _) = self
            .host
            .verify::<MerchantCompletion>(bytes, "completion")?;
        if done.merchant_id != self.store_id {
            return Err(FlowError::MerchantMismatch);
        }
        let sent = self
            .sent
            .get(&done.order_ref)
            .ok_or(FlowError::UnknownOrder)?;
        let matching = sent
            .iter()
            .find(|s| s.digest == done.payment_request)
            .ok_or(FlowError::DigestMismatch("payment request"))?;
        if matching.txn_id != done.txn_id {
            return Err(FlowError::WrongTransaction);
        }
        if matching.amount != done.amount {
            return Err(FlowError::DigestMismatch("amount"));
        }
        Ok(done)
    }
}
