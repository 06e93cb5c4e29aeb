//! What the host's database tells the pure flow: registered merchant keys,
//! card records with their shadow balance and unresolved card operation,
//! bill status, funding accounts. The flow never looks anything up itself;
//! the caller loads these rows and passes them in.

use kessai_crypto::sign::VerifyingKey;
use kessai_ids::{AccountId, CardId, KeyRef, MallId, StoreId, TransferId};
use kessai_money::Currency;
use serde::{Deserialize, Serialize};

use crate::artefacts::{BillKey, Digest};
use crate::bytes;

/// A set of public keys by key reference (a store's registered keys, the
/// host's published keys). Retired keys are simply not in the set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyDirectory {
    keys: Vec<(KeyRef, VerifyingKey)>,
}

impl KeyDirectory {
    /// An empty directory.
    pub fn new() -> Self {
        Self::default()
    }

    /// A directory with one key.
    pub fn single(key_ref: KeyRef, key: VerifyingKey) -> Self {
        Self {
            keys: vec![(key_ref, key)],
        }
    }

    /// Adds a key.
    pub fn with(mut self, key_ref: KeyRef, key: VerifyingKey) -> Self {
        self.keys.push((key_ref, key));
        self
    }

    /// The key registered under `key_ref`.
    pub fn resolve(&self, key_ref: &KeyRef) -> Option<VerifyingKey> {
        self.keys
            .iter()
            .find(|(r, _)| r == key_ref)
            .map(|(_, k)| *k)
    }
}

/// A merchant's standing at the issuer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MerchantStatus {
    /// May take payments.
    Active,
    /// Temporarily refused.
    Suspended,
    /// Permanently refused.
    Closed,
}

/// A registered store (or member store of a mall).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreRecord {
    /// The store.
    pub store_id: StoreId,
    /// Its standing.
    pub status: MerchantStatus,
    /// Its registered signing keys (SIG1 / SIG4 of a stand-alone store).
    pub keys: KeyDirectory,
    /// Its merchant payable account (credited by its sales).
    pub payable_account: AccountId,
    /// The mall it belongs to, if it is a member store.
    pub mall_id: Option<MallId>,
}

/// A registered mall: it signs bills and receipts for its member stores.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MallRecord {
    /// The mall.
    pub mall_id: MallId,
    /// Its standing.
    pub status: MerchantStatus,
    /// Its registered signing keys.
    pub keys: KeyDirectory,
}

/// The merchant rows a bill needs: the selling store and, for a mall bill,
/// the mall. Load them after [`crate::host::peek_bill_route`].
#[derive(Clone, Copy, Debug)]
pub struct MerchantRows<'a> {
    /// The selling store.
    pub store: &'a StoreRecord,
    /// The mall, when the bill names one.
    pub mall: Option<&'a MallRecord>,
}

impl MerchantRows<'_> {
    /// The keys that may sign this merchant's bills and receipts: the
    /// mall's for a member store, else the store's own.
    pub fn signing_keys(&self) -> &KeyDirectory {
        match self.mall {
            Some(m) => &m.keys,
            None => &self.store.keys,
        }
    }
}

/// What the database knows about a bill's key (input; the database's
/// unique constraints make it true under concurrency).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BillStatus {
    /// Never reserved, or reserved and voided.
    Open,
    /// A card debit for it is in flight (a hold exists).
    Reserved,
    /// Paid.
    Settled,
}

/// The host's copy of a card's purse state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shadow {
    /// Balance the host believes the card holds, minor units.
    pub balance_minor: u64,
    /// Last transaction counter value the host saw.
    pub counter: u32,
}

/// Whether a card may be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CardStatus {
    /// Usable.
    Active,
    /// Blocked by the issuer.
    Blocked,
}

/// Debit or credit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PurseOp {
    /// A purchase (SPC).
    Debit,
    /// A top-up (CREDIT).
    Credit,
}

/// A card operation the host sent under a ledger hold whose outcome it has
/// not yet seen (the PCN or CREDIT response may have been lost). Recorded
/// by [`crate::Effect::RecordPendingOp`]; at the card's next contact the
/// host reads counter and log and posts or voids the hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingCardOp {
    /// The card.
    pub card_id: CardId,
    /// Debit or credit.
    pub op: PurseOp,
    /// The ledger hold (its id is also the card log reference).
    pub hold_id: TransferId,
    /// Amount, minor units.
    pub amount_minor: u64,
    /// Currency.
    pub currency: Currency,
    /// Card counter before the command (from the BRC in that session).
    pub counter_before: u32,
    /// Card balance before the command.
    pub balance_before_minor: u64,
    /// The bill (purchases).
    pub bill: Option<PendingBill>,
    /// The funding authorization (top-ups).
    #[serde(with = "bytes::opt_array")]
    pub authorization_ref: Option<[u8; 16]>,
}

impl PendingCardOp {
    /// The 16-byte reference the card writes to its log: the hold's id.
    pub fn reference(&self) -> [u8; 16] {
        *self.hold_id.as_bytes()
    }
}

/// What a pending debit needs to complete a bill later.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingBill {
    /// The bill's key.
    pub key: BillKey,
    /// The mall, for a member store.
    pub mall_id: Option<MallId>,
    /// Digest of the bill's COSE bytes.
    #[serde(with = "bytes::array")]
    pub bill_digest: Digest,
    /// Digest of the settlement information that carried the SPC.
    #[serde(with = "bytes::array")]
    pub settlement_info_digest: Digest,
    /// The store's payable account.
    pub payable_account: AccountId,
}

/// A card as the host's database knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardRecord {
    /// The card.
    pub card_id: CardId,
    /// Purse currency.
    pub currency: Currency,
    /// SCP03 key version of the card's static keys.
    pub key_version: u8,
    /// The card's e-money outstanding account.
    pub emoney_account: AccountId,
    /// Whether it may be used.
    pub status: CardStatus,
    /// The host's shadow of the purse.
    pub shadow: Shadow,
    /// An operation whose outcome is unknown, if any.
    pub pending: Option<PendingCardOp>,
}
