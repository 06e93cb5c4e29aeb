//! The flow-B artefacts: typed, versioned COSE_Sign1 payloads (via
//! `kessai_crypto::cose`), each binding the ones before it by digest.
//!
//! | artefact | seed name | signer | binds |
//! |---|---|---|---|
//! | [`Bill`] | settlement request information + FIRST SIGNATURE | store (or mall) | items digest, nonce |
//! | [`SettlementInformation`] | settlement information (BRC / SPC, BI) + SECOND SIGNATURE | host | bill, previous settlement information |
//! | [`SettlementCompletion`] | settlement completion ACN + THIRD SIGNATURE | host | bill, last settlement information, PCN |
//! | [`SettlementReceipt`] | settlement completion receipt + FOURTH SIGNATURE | store (or mall) | completion, bill, delivery token |
//! | [`ValueUpdate`] | value update information + FIFTH SIGNATURE | host | funding authorization, previous value update |
//!
//! A digest is SHA-256 over the exact COSE bytes
//! ([`kessai_crypto::cose::Verified::digest`]), so a completion cannot be
//! paired with another bill, nor a receipt with another completion.

use kessai_crypto::cose::{self, Artefact};
use kessai_crypto::digest::sha256;
use kessai_ids::{CardId, MallId, OrderId, StoreId, TransferId};
use kessai_money::Money;
use serde::{Deserialize, Serialize};

use crate::bytes;

/// SHA-256 digest of an artefact's bytes.
pub type Digest = [u8; 32];

/// The natural key of a bill: the store that sells and its order number.
/// A bill settles at most once per key (the database enforces it through
/// [`crate::Effect::ReserveBill`] / [`crate::Effect::MarkBillSettled`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BillKey {
    /// The selling store (a member store for a mall bill).
    pub store_id: StoreId,
    /// The store's order number.
    pub order_id: OrderId,
}

/// BILL — settlement request information with the FIRST SIGNATURE (seed
/// 001 step ST5; claims 2, 17).
///
/// Signed by the store's key, or for a mall's member store by the mall's
/// key (claim 7): then `mall_id` names the mall and `store_id` the member
/// store whose payable account is credited.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bill {
    /// The selling store (member store for a mall).
    pub store_id: StoreId,
    /// The mall that issued the bill for its member store, if any.
    pub mall_id: Option<MallId>,
    /// The store's order number.
    pub order_id: OrderId,
    /// The amount charged (positive) and its currency.
    pub amount: Money,
    /// SHA-256 of the store's itemised order (the estimate the customer
    /// agreed to, ST3–ST4).
    #[serde(with = "bytes::array")]
    pub items_digest: Digest,
    /// When the store issued it (unix ms).
    pub issued_at_ms: u64,
    /// After this instant the host refuses it (unix ms).
    pub expires_at_ms: u64,
    /// Store randomness: two bills for the same order differ.
    #[serde(with = "bytes::array")]
    pub nonce: [u8; 16],
}

impl Artefact for Bill {
    const TYPE: &'static str = "flow-b.bill";
    const VERSION: u32 = 1;
}

impl Bill {
    /// The bill's natural key.
    pub fn key(&self) -> BillKey {
        BillKey {
            store_id: self.store_id.clone(),
            order_id: self.order_id.clone(),
        }
    }
}

/// What a host instruction asks the card to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// READ BALANCE: the balance-read request BRC (ST12).
    BalanceReadout,
    /// READ LOG: card history for recovery and the audit store.
    LogReadout,
    /// DEBIT: the settlement processing request SPC (ST14).
    Debit,
    /// CREDIT: the value update (top-up).
    Credit,
}

/// SETTLEMENT INFORMATION with the SECOND SIGNATURE (ST12, ST14; claims
/// 1, 4, 10, 12): one secure-messaging APDU for the card plus what the
/// wallet shows the customer. `command` is opaque to the wallet (C-MAC,
/// C-DECRYPTION under the session keys derived from the card's common key).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettlementInformation {
    /// The host's card session.
    #[serde(with = "bytes::array")]
    pub session_id: [u8; 16],
    /// Position in the session (1, 2, ...): a reordered or replayed
    /// instruction is refused by the wallet.
    pub step: u16,
    /// What `command` does.
    pub stage: Stage,
    /// The card the session is open with.
    pub card_id: CardId,
    /// Digest of the [`Bill`] COSE bytes.
    #[serde(with = "bytes::array")]
    pub bill_digest: Digest,
    /// The bill amount.
    pub amount: Money,
    /// The plain balance BI read from the card (with the SPC only).
    pub balance_minor: Option<u64>,
    /// The secured command APDU.
    #[serde(with = "bytes::vec")]
    pub command: Vec<u8>,
    /// Digest of the previous instruction of this session, if any.
    #[serde(with = "bytes::opt_array")]
    pub previous_digest: Option<Digest>,
    /// The session's deadline (unix ms).
    pub expires_at_ms: u64,
}

impl Artefact for SettlementInformation {
    const TYPE: &'static str = "flow-b.settlement-info";
    const VERSION: u32 = 1;
}

/// VALUE UPDATE information with the FIFTH SIGNATURE (claims 8, 9, 15, 16):
/// like [`SettlementInformation`] for a top-up, bound to the funding
/// authorization instead of a bill.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValueUpdate {
    /// The host's card session.
    #[serde(with = "bytes::array")]
    pub session_id: [u8; 16],
    /// Position in the session.
    pub step: u16,
    /// What `command` does.
    pub stage: Stage,
    /// The card.
    pub card_id: CardId,
    /// The credit authorization that funds this top-up.
    #[serde(with = "bytes::array")]
    pub authorization_ref: [u8; 16],
    /// The top-up amount.
    pub amount: Money,
    /// The plain card balance before the credit (with the CREDIT only).
    pub balance_minor: Option<u64>,
    /// The secured command APDU.
    #[serde(with = "bytes::vec")]
    pub command: Vec<u8>,
    /// Digest of the previous instruction of this session, if any.
    #[serde(with = "bytes::opt_array")]
    pub previous_digest: Option<Digest>,
    /// The session's deadline (unix ms).
    pub expires_at_ms: u64,
}

impl Artefact for ValueUpdate {
    const TYPE: &'static str = "flow-b.value-update";
    const VERSION: u32 = 1;
}

/// What the card's PCN (the R-MAC'd DEBIT response) said, as the host
/// verified it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PcnSummary {
    /// Card transaction counter consumed by the debit.
    pub counter: u32,
    /// Card balance after the debit.
    pub balance_after_minor: u64,
    /// Transaction reference written to the card log.
    #[serde(with = "bytes::array")]
    pub reference: [u8; 16],
    /// SHA-256 of the response APDU as received (data ‖ R-MAC ‖ SW); for
    /// a recovered settlement, of the READ LOG response that proved it.
    #[serde(with = "bytes::array")]
    pub digest: Digest,
}

/// SETTLEMENT COMPLETION (ACN) with the THIRD SIGNATURE (ST19, ST111;
/// claims 5, 13, 20).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettlementCompletion {
    /// Digest of the [`Bill`] COSE bytes.
    #[serde(with = "bytes::array")]
    pub bill_digest: Digest,
    /// The selling store.
    pub store_id: StoreId,
    /// The mall, for a member store.
    pub mall_id: Option<MallId>,
    /// The order.
    pub order_id: OrderId,
    /// The amount settled.
    pub amount: Money,
    /// The card that paid.
    pub card_id: CardId,
    /// Digest of the last settlement information (the one carrying the
    /// SPC): signed COSE bytes, or the unsigned payload in the second
    /// embodiment. "Settlement completion information including the
    /// settlement information" (claim 5).
    #[serde(with = "bytes::array")]
    pub settlement_info_digest: Digest,
    /// The verified PCN.
    pub pcn: PcnSummary,
    /// The ledger transfer that posted the payment.
    pub transfer_id: TransferId,
    /// True if the PCN was lost and the settlement was completed from the
    /// card log at a later contact (SPEC flow B step 10).
    pub recovered: bool,
    /// When the host completed it (unix ms).
    pub completed_at_ms: u64,
}

impl Artefact for SettlementCompletion {
    const TYPE: &'static str = "flow-b.completion";
    const VERSION: u32 = 1;
}

/// SETTLEMENT COMPLETION RECEIPT with the FOURTH SIGNATURE (ST112;
/// claims 6, 14, 21).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettlementReceipt {
    /// Digest of the [`SettlementCompletion`] COSE bytes.
    #[serde(with = "bytes::array")]
    pub completion_digest: Digest,
    /// Digest of the [`Bill`] COSE bytes.
    #[serde(with = "bytes::array")]
    pub bill_digest: Digest,
    /// The selling store.
    pub store_id: StoreId,
    /// The order.
    pub order_id: OrderId,
    /// The amount.
    pub amount: Money,
    /// SHA-256 of the delivery (download) token the store hands the
    /// customer.
    #[serde(with = "bytes::array")]
    pub delivery_token_digest: Digest,
    /// When the store issued it (unix ms).
    pub issued_at_ms: u64,
}

impl Artefact for SettlementReceipt {
    const TYPE: &'static str = "flow-b.receipt";
    const VERSION: u32 = 1;
}

/// Settlement information as it travels to the wallet: signed (first
/// embodiment) or, when the host is configured to omit the SECOND
/// SIGNATURE (second embodiment, ST109), the bare CBOR payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "bytes")]
pub enum InfoEnvelope {
    /// COSE_Sign1 bytes with the SECOND SIGNATURE.
    Signed(#[serde(with = "bytes::vec")] Vec<u8>),
    /// The CBOR payload alone; origin rests on the secure channel.
    Unsigned(#[serde(with = "bytes::vec")] Vec<u8>),
}

/// Domain label of the digest of an unsigned settlement information.
const UNSIGNED_INFO_DOMAIN: &[u8] = b"kessai/flow-b/unsigned-settlement-info/v1\0";

impl InfoEnvelope {
    /// The digest later artefacts bind: SHA-256 of the COSE bytes, or of a
    /// domain label ‖ the CBOR payload when unsigned.
    pub fn digest(&self) -> Digest {
        match self {
            Self::Signed(b) => sha256(&[b]),
            Self::Unsigned(b) => sha256(&[UNSIGNED_INFO_DOMAIN, b]),
        }
    }

    /// The envelope's bytes (for evidence).
    pub fn bytes(&self) -> &[u8] {
        match self {
            Self::Signed(b) | Self::Unsigned(b) => b,
        }
    }

    /// The bytes to keep as evidence: exactly those whose SHA-256 is
    /// [`Self::digest`] (the COSE bytes, or the domain label ‖ the CBOR
    /// payload when unsigned), so an evidence store that addresses
    /// artefacts by SHA-256 finds what the ledger links.
    pub fn evidence_bytes(&self) -> Vec<u8> {
        match self {
            Self::Signed(b) => b.clone(),
            Self::Unsigned(b) => [UNSIGNED_INFO_DOMAIN, b.as_slice()].concat(),
        }
    }
}

/// Encodes an unsigned settlement information payload.
pub(crate) fn encode_unsigned(info: &SettlementInformation) -> Result<Vec<u8>, crate::FlowError> {
    let mut out = Vec::new();
    ciborium::ser::into_writer(info, &mut out).map_err(|_| crate::FlowError::Encode)?;
    Ok(out)
}

/// Decodes an unsigned settlement information payload.
pub(crate) fn decode_unsigned(bytes: &[u8]) -> Result<SettlementInformation, crate::FlowError> {
    if bytes.len() > cose::MAX_OBJECT_LEN {
        return Err(crate::FlowError::Malformed(
            "settlement information too large",
        ));
    }
    ciborium::de::from_reader(bytes)
        .map_err(|_| crate::FlowError::Malformed("unsigned settlement information"))
}

/// Which artefact a piece of evidence is (for [`crate::Effect::StoreEvidence`]
/// and the ledger's evidence links).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvidenceKind {
    /// [`Bill`].
    Bill,
    /// [`SettlementInformation`] (signed or unsigned).
    SettlementInformation,
    /// The card's PCN response APDU.
    Pcn,
    /// A READ LOG response APDU that proved or disproved a card operation.
    CardLog,
    /// [`SettlementCompletion`].
    Completion,
    /// [`SettlementReceipt`].
    Receipt,
    /// [`ValueUpdate`].
    ValueUpdate,
    /// The card's CREDIT response APDU.
    CreditResponse,
}

impl EvidenceKind {
    /// The label used in ledger evidence links (`kessai_ledger::Evidence::kind`).
    pub fn label(self) -> &'static str {
        match self {
            Self::Bill => "cose/flow-b.bill",
            Self::SettlementInformation => "cose/flow-b.settlement-info",
            Self::Pcn => "apdu/flow-b.pcn",
            Self::CardLog => "apdu/flow-b.card-log",
            Self::Completion => "cose/flow-b.completion",
            Self::Receipt => "cose/flow-b.receipt",
            Self::ValueUpdate => "cose/flow-b.value-update",
            Self::CreditResponse => "apdu/flow-b.credit-response",
        }
    }
}

/// The digests an artefact binds (what an evidence index lists), read from
/// bytes the caller produced or already verified — this decodes without
/// checking any signature and proves nothing. Unknown or undecodable input
/// binds nothing.
pub fn binds(kind: EvidenceKind, bytes: &[u8]) -> Vec<Digest> {
    fn payload<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Option<T> {
        use ciborium::Value;
        if bytes.len() > cose::MAX_OBJECT_LEN {
            return None;
        }
        let Value::Tag(18, inner) = ciborium::de::from_reader(bytes).ok()? else {
            return None;
        };
        let Value::Array(items) = *inner else {
            return None;
        };
        let Value::Bytes(p) = items.get(2)? else {
            return None;
        };
        ciborium::de::from_reader(p.as_slice()).ok()
    }
    match kind {
        EvidenceKind::SettlementInformation => payload::<SettlementInformation>(bytes)
            .or_else(|| {
                bytes
                    .strip_prefix(UNSIGNED_INFO_DOMAIN)
                    .and_then(|b| decode_unsigned(b).ok())
            })
            .map(|i| {
                std::iter::once(i.bill_digest)
                    .chain(i.previous_digest)
                    .collect()
            })
            .unwrap_or_default(),
        EvidenceKind::Completion => payload::<SettlementCompletion>(bytes)
            .map(|c| vec![c.bill_digest, c.settlement_info_digest, c.pcn.digest])
            .unwrap_or_default(),
        EvidenceKind::Receipt => payload::<SettlementReceipt>(bytes)
            .map(|r| vec![r.completion_digest, r.bill_digest])
            .unwrap_or_default(),
        EvidenceKind::ValueUpdate => payload::<ValueUpdate>(bytes)
            .map(|v| v.previous_digest.into_iter().collect())
            .unwrap_or_default(),
        EvidenceKind::Bill
        | EvidenceKind::Pcn
        | EvidenceKind::CardLog
        | EvidenceKind::CreditResponse => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kessai_crypto::sign::SigningKey;
    use kessai_money::Currency;

    #[test]
    fn binds_lists_what_each_artefact_binds() {
        let key = SigningKey::from_seed(&[4; 32]);
        let kid = "store-1#1".parse().unwrap();
        let receipt = SettlementReceipt {
            completion_digest: [1; 32],
            bill_digest: [2; 32],
            store_id: "store-1".parse().unwrap(),
            order_id: "o-1".parse().unwrap(),
            amount: Money::new(5, Currency::from_code("JPY").unwrap()),
            delivery_token_digest: [3; 32],
            issued_at_ms: 1,
        };
        let bytes = cose::sign_artefact(&receipt, &key, &kid).unwrap();
        assert_eq!(binds(EvidenceKind::Receipt, &bytes), vec![[1; 32], [2; 32]]);
        // Undecodable input or a kind that binds nothing: empty.
        assert!(binds(EvidenceKind::Receipt, b"junk").is_empty());
        assert!(binds(EvidenceKind::Bill, &bytes).is_empty());
        assert!(binds(EvidenceKind::Completion, &bytes).is_empty());
    }
}
