//! Reception, decryption and settlement processing of TRANSACTION DATA
//! (claims 1, 2, 7, 8, 9) and what to retain of it (claims 3, 10).
//!
//! Order of checks in [`Issuer::process_transaction`], each a typed
//! refusal that changes nothing:
//!
//! 1. the COSE_Sign1 verifies under the device's registered personal key
//!    (kid = the record's key ref, else [`FlowAError::UnregisteredDeviceKey`]);
//!    the device is active; the payload names this device;
//! 2. the counter is above the last accepted one ([`FlowAError::Replay`]);
//! 3. the content opens with the **transmission secret key** the device
//!    used — the active one, or the previous one inside its grace period
//!    ([`FlowAError::TransmissionKeyRetired`] after it) — with the device
//!    id and counter as associated data, so a ciphertext cannot be moved
//!    into another envelope;
//! 4. the merchant-signed order verifies under a key of the store it names,
//!    its digest is the one the device signed, it has not expired, and the
//!    amount the customer approved equals the order amount;
//! 5. the card information opens with the **storage secret key** (claims
//!    2, 9), belongs to this device, customer and funding account, and the
//!    card has not expired;
//! 6. authorization: the funding account is the device's, in the order's
//!    currency, and the amount fits its limit ([`FlowAError::OverLimit`]).
//!
//! Then it returns the [`Settlement`]: the ledger transfer (id derived from
//! device id + counter, evidence = digests of the signed transaction data
//! and the order), the device record with the new counter, what to retain,
//! and the signed results for device and merchant.

use kessai_crypto::cose::{self, Verified};
use kessai_crypto::digest::sha256;
use kessai_ids::{DeviceId, KeyRef, TransferId};
use kessai_ledger::{Account, AccountKind, Leg, TransferRequest, codes};
use kessai_money::Money;

use super::{DeviceRecord, DeviceStatus, Issuer, MerchantKey};
use crate::FlowAError;
use crate::artefacts::{
    CardInfoPayload, MerchantResult, OrderInformation, TransactionContent, TransactionData,
    TransactionResult,
};
use crate::model::{card_aad, txn_aad};
use crate::retention::RetainedTransaction;

/// Domain label of flow-A transfer ids.
pub const TRANSFER_DOMAIN: &str = "flow-a/transaction";

/// Everything a settled transaction produces. Apply it in one database
/// transaction: submit `transfer` to the ledger, store `device` if its
/// `last_counter` is still the value read (compare-and-set), store
/// `retained`; only after that commit send `device_result` and
/// `merchant_result`.
#[derive(Debug)]
pub struct Settlement {
    /// The ledger transfer: cardholder funding → merchant payable, posted.
    pub transfer: TransferRequest,
    /// The device record with `last_counter` advanced.
    pub device: DeviceRecord,
    /// The signed transaction data to keep for the retention period.
    pub retained: RetainedTransaction,
    /// The verified order.
    pub order: OrderInformation,
    /// The merchant-signed order bytes (COSE_Sign1), as decrypted from
    /// the transaction: evidence of the transfer (`cose/flow-a.order`).
    pub order_bytes: Vec<u8>,
    /// Signed RESULT for the device (`flow-a.result`).
    pub device_result: Vec<u8>,
    /// Signed result for the merchant (`flow-a.merchant-result`), without
    /// card data.
    pub merchant_result: Vec<u8>,
}

/// The device a signed transaction data claims to come from, read from
/// its `kid` **without verifying anything**, so the caller can load the
/// device record.
pub fn transaction_device(bytes: &[u8]) -> Result<DeviceId, FlowAError> {
    let peeked = cose::peek(bytes)?;
    if peeked.type_name() != Some(<TransactionData as cose::Artefact>::TYPE) {
        return Err(FlowAError::Malformed("not flow-A transaction data"));
    }
    DeviceId::new(peeked.kid.id.as_str())
        .map_err(|_| FlowAError::Malformed("kid is not a device id"))
}

impl Issuer<'_> {
    /// Verifies, decrypts and authorizes one TRANSACTION DATA from
    /// `device` (see the module docs for the checks). `funding` is the
    /// current snapshot of the device's funding account; `merchant_key`
    /// resolves a merchant signing key reference.
    pub fn process_transaction(
        &self,
        bytes: &[u8],
        device: &DeviceRecord,
        funding: &Account,
        merchant_key: impl Fn(&KeyRef) -> Option<MerchantKey>,
        now_ms: u64,
    ) -> Result<Settlement, FlowAError> {
        // 1. Signature under the registered personal key.
        if device.status != DeviceStatus::Active {
            return Err(FlowAError::DeviceNotActive);
        }
        let peeked = cose::peek(bytes)?;
        if peeked.kid != device.personal_key_ref {
            return Err(FlowAError::UnregisteredDeviceKey);
        }
        let signed: Verified<TransactionData> = cose::verify_artefact(bytes, |r| {
            (r == &device.personal_key_ref).then_some(device.personal_key)
        })?;
        let txn = signed.payload();
        if txn.device_id != device.device_id {
            return Err(FlowAError::WrongDevice);
        }
        // 2. Replay.
        if txn.counter <= device.last_counter {
            return Err(FlowAError::Replay {
                counter: txn.counter,
                last_seen: device.last_counter,
            });
        }
        // 3. Transmission layer.
        let tx_kid = cose::peek(&txn.content)?.kid;
        let tx_pair = self.keys.transmission.resolve(&tx_kid, now_ms)?;
        let content = cose::open_artefact::<TransactionContent, _>(
            &txn.content,
            |r| (r == &tx_kid).then_some(tx_pair),
            &txn_aad(&device.device_id, txn.counter),
        )?
        .into_payload();
        // 4. Order.
        let order_digest = sha256(&[&content.order]);
        if order_digest != txn.order_digest {
            return Err(FlowAError::ContentMismatch);
        }
        let order_kid = cose::peek(&content.order)?.kid;
        let merchant =
            merchant_key(&order_kid).ok_or_else(|| FlowAError::UnknownKey(order_kid.clone()))?;
        let order = cose::verify_artefact::<OrderInformation>(&content.order, |r| {
            (r == &order_kid).then_some(merchant.key)
        })?
        .into_payload();
        if order.store != merchant.store {
            return Err(FlowAError::OrderSignerMismatch);
        }
        if now_ms >= order.expires_at_ms {
            return Err(FlowAError::OrderExpired);
        }
        if order.amount.amount_minor <= 0 {
            return Err(FlowAError::AmountNotPositive);
        }
        if content.approved != order.amount {
            return Err(FlowAError::AmountMismatch);
        }
        // 5. Storage layer: the card information.
        let card = self.open_card(&device.device_id, &content.card, now_ms)?;
        if card.device_id != device.device_id
            || card.cardholder != device.cardholder
            || card.funding_account != device.funding_account
        {
            return Err(FlowAError::CardNotForDevice);
        }
        if now_ms >= card.expiry.end_ms() {
            return Err(FlowAError::CardExpired);
        }
        // 6. Authorization against the funding account.
        authorize(device, funding, order.amount)?;

        let transfer_id = transfer_id(&device.device_id, txn.counter);
        let transfer = TransferRequest::posted(
            transfer_id,
            order.amount.currency,
            codes::CARD_PAYMENT,
            vec![
                Leg::debit(funding.id.clone(), order.amount.amount_minor),
                Leg::credit(merchant.payable_account.clone(), order.amount.amount_minor),
            ],
        )
        .with_evidence("cose/flow-a.txn", signed.digest())
        .with_evidence("cose/flow-a.order", order_digest)
        .with_reference(format!("flow-a {} {}", order.store, order.order_id));

        let device_result = self.keys.sign(&TransactionResult {
            device_id: device.device_id.clone(),
            counter: txn.counter,
            transaction_digest: signed.digest(),
            transfer_id,
            store: order.store.clone(),
            order_id: order.order_id.clone(),
            amount: order.amount,
            masked_pan: card.pan.masked(),
            settled_at_ms: now_ms,
        })?;
        let merchant_result = self.keys.sign(&MerchantResult {
            store: order.store.clone(),
            order_id: order.order_id.clone(),
            order_digest,
            amount: order.amount,
            transfer_id,
            settled_at_ms: now_ms,
        })?;
        let retained = RetainedTransaction::new(
            bytes,
            &device.device_id,
            txn.counter,
            order_digest,
            now_ms,
            self.policy.retention_days,
        )?;
        Ok(Settlement {
            transfer,
            device: DeviceRecord {
                last_counter: txn.counter,
                ..device.clone()
            },
            retained,
            order,
            order_bytes: content.order,
            device_result,
            merchant_result,
        })
    }

    /// Opens storage-sealed card information for `device` (claims 2, 9).
    pub(crate) fn open_card(
        &self,
        device: &DeviceId,
        sealed: &[u8],
        now_ms: u64,
    ) -> Result<CardInfoPayload, FlowAError> {
        let kid = cose::peek(sealed)?.kid;
        let pair = self.keys.storage.resolve(&kid, now_ms)?;
        Ok(cose::open_artefact::<CardInfoPayload, _>(
            sealed,
            |r| (r == &kid).then_some(pair),
            &card_aad(device),
        )?
        .into_payload())
    }
}

/// The ledger id of the transfer settling `device`'s transaction `counter`.
pub fn transfer_id(device: &DeviceId, counter: u64) -> TransferId {
    TransferId::derive(
        TRANSFER_DOMAIN,
        &[device.as_str().as_bytes(), &counter.to_be_bytes()],
    )
}

/// Checks the payment against the funding account snapshot with the
/// ledger's own limit rule. The ledger checks again when the transfer is
/// submitted (a concurrent payment may have used the room since).
fn authorize(device: &DeviceRecord, funding: &Account, amount: Money) -> Result<(), FlowAError> {
    if funding.id != device.funding_account || funding.kind != AccountKind::CardholderFunding {
        return Err(FlowAError::FundingAccountMismatch);
    }
    if funding.currency != amount.currency {
        return Err(FlowAError::CurrencyMismatch);
    }
    let mut after = funding.balances;
    after.debits_posted =
        after
            .debits_posted
            .checked_add(amount.amount_minor)
            .ok_or(FlowAError::OverLimit {
                account: funding.id.clone(),
            })?;
    if !funding.limit.holds(&after) {
        return Err(FlowAError::OverLimit {
            account: funding.id.clone(),
        });
    }
    Ok(())
}
