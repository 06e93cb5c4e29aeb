//! Ledger values: accounts, limits, balances, legs, requests, records.

use kessai_ids::{AccountId, TransferId};
use kessai_money::Currency;
use serde::{Deserialize, Serialize};

use crate::LedgerError;

/// Most legs one transfer may have.
pub const MAX_LEGS: usize = 16;
/// Most evidence items one transfer may link.
pub const MAX_EVIDENCE: usize = 16;
/// Longest free-text reference, in bytes.
pub const MAX_REFERENCE_LEN: usize = 256;
/// Longest evidence kind label, in bytes.
pub const MAX_EVIDENCE_KIND_LEN: usize = 64;

/// Business event codes carried in [`TransferRequest::code`]. They say
/// *why* money moved; the ledger rules do not depend on them.
pub mod codes {
    /// Card payment (flows A, C, D): cardholder funding → merchant payable.
    /// Used for the hold (pending) and for its post.
    pub const CARD_PAYMENT: u16 = 1;
    /// IC-card e-money payment (flow B): e-money outstanding → merchant
    /// payable.
    pub const EMONEY_PAYMENT: u16 = 2;
    /// E-money top-up (flow B value update): cardholder funding → e-money
    /// outstanding.
    pub const EMONEY_TOP_UP: u16 = 3;
    /// Issuer fee: merchant payable (or cardholder) → issuer fees.
    pub const FEE: u16 = 4;
    /// Funding from outside the ledger: issuer clearing → an account
    /// (prepaid deposit, test funding).
    pub const FUNDING: u16 = 5;
    /// Refund of a payment: merchant payable → cardholder/e-money.
    pub const REFUND: u16 = 6;
    /// Merchant payout: merchant payable → issuer clearing.
    pub const MERCHANT_PAYOUT: u16 = 7;
    /// Recovery of an interrupted settlement (flow B step 10).
    pub const RECOVERY: u16 = 8;
    /// Automatic expiry of a hold (`expire_due`).
    pub const HOLD_EXPIRY: u16 = 9;
}

/// What an account represents in the issuer's books.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountKind {
    /// A cardholder's funding account: a credit line (`MaxNetDebit(limit)`)
    /// or a prepaid balance (`MaxNetDebit(0)`, funded by credits). Card
    /// payments debit it.
    CardholderFunding,
    /// Value held on one IC card: the issuer's e-money liability. Top-ups
    /// credit it, card payments debit it; `MaxNetDebit(0)`.
    EmoneyOutstanding,
    /// What the issuer owes one store (malls: one member store). Payments
    /// credit it, payouts debit it.
    MerchantPayable,
    /// The issuer's fee income.
    IssuerFees,
    /// The issuer's own settlement/funding counter-account for money that
    /// enters or leaves the ledger (bank transfers, external top-ups,
    /// payouts); usually `Unlimited`.
    IssuerClearing,
}

impl AccountKind {
    /// Stable storage code.
    pub fn code(self) -> i64 {
        match self {
            Self::CardholderFunding => 1,
            Self::EmoneyOutstanding => 2,
            Self::MerchantPayable => 3,
            Self::IssuerFees => 4,
            Self::IssuerClearing => 5,
        }
    }

    /// Inverse of [`AccountKind::code`].
    pub fn from_code(code: i64) -> Option<Self> {
        Some(match code {
            1 => Self::CardholderFunding,
            2 => Self::EmoneyOutstanding,
            3 => Self::MerchantPayable,
            4 => Self::IssuerFees,
            5 => Self::IssuerClearing,
            _ => return None,
        })
    }
}

/// A bound on an account's exposure; see the crate docs for the
/// convention. Limits are ≥ 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BalanceLimit {
    /// No bound.
    Unlimited,
    /// `debits_pending + debits_posted − credits_posted ≤ L`.
    MaxNetDebit(i64),
    /// `credits_pending + credits_posted − debits_posted ≤ L`.
    MaxNetCredit(i64),
}

impl BalanceLimit {
    /// Storage encoding: `(kind, limit_minor)`, kind 0 unlimited, 1 max net
    /// debit, 2 max net credit.
    pub fn to_parts(self) -> (i64, i64) {
        match self {
            Self::Unlimited => (0, 0),
            Self::MaxNetDebit(l) => (1, l),
            Self::MaxNetCredit(l) => (2, l),
        }
    }

    /// Inverse of [`BalanceLimit::to_parts`]; `None` for an unknown kind or
    /// a negative limit.
    pub fn from_parts(kind: i64, limit_minor: i64) -> Option<Self> {
        if limit_minor < 0 {
            return None;
        }
        Some(match kind {
            0 if limit_minor == 0 => Self::Unlimited,
            1 => Self::MaxNetDebit(limit_minor),
            2 => Self::MaxNetCredit(limit_minor),
            _ => return None,
        })
    }

    /// True if `balances` respect this limit. Overflow counts as a
    /// violation.
    pub fn holds(self, b: &Balances) -> bool {
        match (self, self.exposure(b)) {
            (Self::Unlimited, _) => true,
            (Self::MaxNetDebit(l) | Self::MaxNetCredit(l), Some(e)) => e <= l,
            (_, None) => false,
        }
    }

    /// The quantity the limit bounds (`None` on overflow; `Some(0)` when
    /// unlimited).
    pub fn exposure(self, b: &Balances) -> Option<i64> {
        match self {
            Self::Unlimited => Some(0),
            Self::MaxNetDebit(_) => b
                .debits_pending
                .checked_add(b.debits_posted)?
                .checked_sub(b.credits_posted),
            Self::MaxNetCredit(_) => b
                .credits_pending
                .checked_add(b.credits_posted)?
                .checked_sub(b.debits_posted),
        }
    }
}

/// The four counters of an account, in minor units, all ≥ 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Balances {
    /// Sum of debit legs of unresolved pending transfers.
    pub debits_pending: i64,
    /// Sum of debit legs of posted transfers and posted pendings.
    pub debits_posted: i64,
    /// Sum of credit legs of unresolved pending transfers.
    pub credits_pending: i64,
    /// Sum of credit legs of posted transfers and posted pendings.
    pub credits_posted: i64,
}

impl Balances {
    /// `credits_posted − debits_posted` (`None` on overflow): the posted
    /// net credit balance, positive for a funded liability.
    pub fn net_credit_posted(&self) -> Option<i64> {
        self.credits_posted.checked_sub(self.debits_posted)
    }
}

/// A ledger account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// Unique id.
    pub id: AccountId,
    /// What it represents.
    pub kind: AccountKind,
    /// Every leg on this account must be in this currency.
    pub currency: Currency,
    /// Bound on exposure.
    pub limit: BalanceLimit,
    /// Current counters.
    pub balances: Balances,
}

impl Account {
    /// A new account with zero balances.
    pub fn new(id: AccountId, kind: AccountKind, currency: Currency, limit: BalanceLimit) -> Self {
        Self {
            id,
            kind,
            currency,
            limit,
            balances: Balances::default(),
        }
    }

    /// Checks a new account's definition: limits must be ≥ 0.
    pub fn validate_new(&self) -> Result<(), LedgerError> {
        match self.limit {
            BalanceLimit::MaxNetDebit(l) | BalanceLimit::MaxNetCredit(l) if l < 0 => {
                Err(LedgerError::AmountNotPositive)
            }
            _ => Ok(()),
        }
    }

    /// True if `other` has the same id, kind, currency and limit (the
    /// balances are not compared): an idempotent re-creation.
    pub fn same_definition(&self, other: &Account) -> bool {
        self.id == other.id
            && self.kind == other.kind
            && self.currency == other.currency
            && self.limit == other.limit
    }
}

/// Which side of an account a leg moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// Debit.
    Debit,
    /// Credit.
    Credit,
}

impl Side {
    /// Storage code: 0 debit, 1 credit.
    pub fn code(self) -> i64 {
        match self {
            Self::Debit => 0,
            Self::Credit => 1,
        }
    }

    /// Inverse of [`Side::code`].
    pub fn from_code(code: i64) -> Option<Self> {
        match code {
            0 => Some(Self::Debit),
            1 => Some(Self::Credit),
            _ => None,
        }
    }
}

/// One leg of a transfer: an amount on one side of one account.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Leg {
    /// The account moved.
    pub account: AccountId,
    /// Debit or credit.
    pub side: Side,
    /// Positive amount in minor units of the transfer's currency.
    pub amount_minor: i64,
}

impl Leg {
    /// A debit leg.
    pub fn debit(account: AccountId, amount_minor: i64) -> Self {
        Self {
            account,
            side: Side::Debit,
            amount_minor,
        }
    }

    /// A credit leg.
    pub fn credit(account: AccountId, amount_minor: i64) -> Self {
        Self {
            account,
            side: Side::Credit,
            amount_minor,
        }
    }
}

/// A link to the signed artefact that justified a transfer: its kind (e.g.
/// `"cose/bill"`, `"cose/pcn"`) and SHA-256 digest. The artefact itself is
/// stored elsewhere (audit store).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Evidence {
    /// What the artefact is (≤ 64 bytes).
    pub kind: String,
    /// SHA-256 of the artefact's bytes.
    #[serde(with = "hex_digest")]
    pub digest: [u8; 32],
}

/// What a transfer does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferKind {
    /// Moves posted balances at once.
    Posted,
    /// Reserves (holds) the amounts until posted, voided or expired.
    Pending {
        /// From this instant on the hold can only expire.
        expires_at_ms: u64,
    },
    /// Posts a pending transfer in full.
    PostPending {
        /// The pending transfer.
        pending_id: TransferId,
    },
    /// Releases a pending transfer.
    VoidPending {
        /// The pending transfer.
        pending_id: TransferId,
    },
    /// Releases a pending transfer whose expiry has passed.
    ExpirePending {
        /// The pending transfer.
        pending_id: TransferId,
    },
}

impl TransferKind {
    /// Storage code: 0 posted, 1 pending, 2 post, 3 void, 4 expire.
    pub fn code(self) -> i64 {
        match self {
            Self::Posted => 0,
            Self::Pending { .. } => 1,
            Self::PostPending { .. } => 2,
            Self::VoidPending { .. } => 3,
            Self::ExpirePending { .. } => 4,
        }
    }

    /// Rebuilds a kind from its storage columns; `None` if they do not
    /// fit together.
    pub fn from_parts(
        code: i64,
        expires_at_ms: Option<u64>,
        pending_id: Option<TransferId>,
    ) -> Option<Self> {
        Some(match (code, expires_at_ms, pending_id) {
            (0, None, None) => Self::Posted,
            (1, Some(expires_at_ms), None) => Self::Pending { expires_at_ms },
            (2, None, Some(pending_id)) => Self::PostPending { pending_id },
            (3, None, Some(pending_id)) => Self::VoidPending { pending_id },
            (4, None, Some(pending_id)) => Self::ExpirePending { pending_id },
            _ => return None,
        })
    }

    /// The pending transfer a resolution acts on.
    pub fn pending_id(self) -> Option<TransferId> {
        match self {
            Self::PostPending { pending_id }
            | Self::VoidPending { pending_id }
            | Self::ExpirePending { pending_id } => Some(pending_id),
            Self::Posted | Self::Pending { .. } => None,
        }
    }

    /// The expiry of a pending transfer.
    pub fn expires_at_ms(self) -> Option<u64> {
        match self {
            Self::Pending { expires_at_ms } => Some(expires_at_ms),
            _ => None,
        }
    }
}

/// A request to record one transfer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferRequest {
    /// Natural-key id ([`TransferId::derive`]); a retry reuses it.
    pub id: TransferId,
    /// Posted, pending, or a resolution of a pending.
    pub kind: TransferKind,
    /// Currency of every leg (for a resolution: the pending's).
    pub currency: Currency,
    /// The legs; empty for resolutions.
    pub legs: Vec<Leg>,
    /// Business event, see [`codes`].
    pub code: u16,
    /// Digests of the signed artefacts that justify this transfer.
    pub evidence: Vec<Evidence>,
    /// Free text for people (order number, ...). Never secrets.
    pub reference: String,
}

impl TransferRequest {
    /// A posted transfer with no evidence and an empty reference.
    pub fn posted(id: TransferId, currency: Currency, code: u16, legs: Vec<Leg>) -> Self {
        Self {
            id,
            kind: TransferKind::Posted,
            currency,
            legs,
            code,
            evidence: Vec::new(),
            reference: String::new(),
        }
    }

    /// A pending transfer (hold) expiring at `expires_at_ms`.
    pub fn pending(
        id: TransferId,
        currency: Currency,
        code: u16,
        legs: Vec<Leg>,
        expires_at_ms: u64,
    ) -> Self {
        Self {
            kind: TransferKind::Pending { expires_at_ms },
            ..Self::posted(id, currency, code, legs)
        }
    }

    /// A resolution (`PostPending`/`VoidPending`/`ExpirePending`) of kind
    /// `kind`, without legs.
    pub fn resolution(id: TransferId, currency: Currency, code: u16, kind: TransferKind) -> Self {
        Self {
            kind,
            ..Self::posted(id, currency, code, Vec::new())
        }
    }

    /// Adds an evidence link.
    pub fn with_evidence(mut self, kind: impl Into<String>, digest: [u8; 32]) -> Self {
        self.evidence.push(Evidence {
            kind: kind.into(),
            digest,
        });
        self
    }

    /// Sets the reference text.
    pub fn with_reference(mut self, reference: impl Into<String>) -> Self {
        self.reference = reference.into();
        self
    }

    /// SHA-256 over the canonical encoding (see [`crate::digest`]).
    pub fn digest(&self) -> [u8; 32] {
        crate::digest::digest(self)
    }
}

/// A recorded transfer: the request, the legs it actually moved (a
/// resolution's are the pending's), its digest and when it was recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferRecord {
    /// Id.
    pub id: TransferId,
    /// Kind.
    pub kind: TransferKind,
    /// Currency.
    pub currency: Currency,
    /// Business event code.
    pub code: u16,
    /// Legs moved (for a resolution: a copy of the pending's legs).
    pub legs: Vec<Leg>,
    /// Evidence links.
    pub evidence: Vec<Evidence>,
    /// Reference text.
    pub reference: String,
    /// [`TransferRequest::digest`] of the request that created it.
    #[serde(with = "hex_digest")]
    pub digest: [u8; 32],
    /// The `now_ms` at which it was recorded.
    pub created_at_ms: u64,
}

impl TransferRecord {
    /// The request this record was created from (legs dropped for
    /// resolutions). Its digest equals [`TransferRecord::digest`] unless
    /// the record was edited.
    pub fn request(&self) -> TransferRequest {
        let legs = if self.kind.pending_id().is_some() {
            Vec::new()
        } else {
            self.legs.clone()
        };
        TransferRequest {
            id: self.id,
            kind: self.kind,
            currency: self.currency,
            legs,
            code: self.code,
            evidence: self.evidence.clone(),
            reference: self.reference.clone(),
        }
    }
}

mod hex_digest {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(&s, &mut out).map_err(serde::de::Error::custom)?;
        Ok(out)
    }
}
