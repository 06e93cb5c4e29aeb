//! The kessai ledger's rules: double-entry, append-only, integer minor units,
//! two-phase transfers, explicit result codes. Pure: no I/O, no clock.
//!
//! What it does:
//! - Defines [`Account`]s (kind, currency, [`BalanceLimit`], four balance
//!   counters) and [`TransferRequest`]s (legs, business code, evidence
//!   digests, free-text reference).
//! - [`apply`] decides one request against a [`LedgerView`] (the accounts
//!   and transfers it touches) at a caller-supplied `now_ms`, and returns
//!   either the [`Effect`] to record (the new [`TransferRecord`] and the
//!   per-account [`BalanceDelta`]s), the original record of a same-content
//!   retry, or a typed [`LedgerError`].
//! - [`TransferRequest::digest`] is the SHA-256 of a documented canonical
//!   encoding; it decides same-content retries and lets an auditor detect
//!   edited rows.
//! - [`MemLedger`] keeps a whole ledger in memory with the same rules: used
//!   by tests and simulations, and by `kessai-store` as the working set of
//!   one commit batch.
//!
//! What it does not do: storage, locking, durability (`kessai-store`), or
//! deciding *whether* a payment should happen (the issuer logic).
//!
//! # Accounts and the limit convention
//!
//! Every account counts `debits_pending`, `debits_posted`,
//! `credits_pending`, `credits_posted` (all ≥ 0). Limits bound the
//! account's *exposure*, counting pending amounts that could still be
//! posted against it but never pending amounts in its favour:
//!
//! - [`BalanceLimit::MaxNetDebit`]`(L)`:
//!   `debits_pending + debits_posted − credits_posted ≤ L`. A cardholder
//!   credit account with credit limit `L` is `MaxNetDebit(L)`; a prepaid
//!   balance, an e-money float or a merchant payable — liabilities that may
//!   never go negative — are `MaxNetDebit(0)`.
//! - [`BalanceLimit::MaxNetCredit`]`(L)`:
//!   `credits_pending + credits_posted − debits_posted ≤ L`.
//! - [`BalanceLimit::Unlimited`]: no bound (the issuer's clearing account).
//!
//! A transfer is refused with [`LedgerError::ExceedsLimit`] if, after it,
//! an account is over its limit *and* the transfer increased that
//! account's exposure (so reductions are always accepted).
//!
//! # The life of a transfer
//!
//! ```text
//!  request ──► Posted                  (one step: balances *_posted move)
//!  request ──► Pending{expires_at_ms}  (hold: balances *_pending move)
//!                 │
//!                 ├── PostPending ───► posted    (pending → posted, full amount)
//!                 ├── VoidPending ───► voided    (pending released)
//!                 └── ExpirePending ─► expired   (pending released, only once
//!                                                  now_ms ≥ expires_at_ms)
//! ```
//!
//! A pending transfer row never changes. Its resolution is a *new*
//! transfer whose `kind` names the pending id; it carries no legs of its
//! own in the request and records a copy of the pending legs. At most one
//! resolution per pending exists (the store enforces this with a unique
//! key; [`apply`] refuses a second one with `PendingAlreadyPosted` /
//! `PendingAlreadyVoided` / `PendingAlreadyExpired`). From
//! `now_ms ≥ expires_at_ms` on, post and void are refused with
//! `PendingExpired` and only expiry is accepted; before that expiry is
//! refused with `PendingNotYetExpired`.
//!
//! # Invariants
//!
//! 1. Every recorded transfer has ≥ 2 legs, positive amounts, one currency
//!    (the accounts'), no account on both sides, and Σ debits = Σ credits.
//! 2. An account's four counters equal the sums over the legs that touch
//!    it (pending legs add to `*_pending`, posted to `*_posted`, a post
//!    moves pending to posted, a void/expire removes pending).
//! 3. No transfer leaves an account over its limit with more exposure than
//!    before.
//! 4. Transfer ids are unique; a retry with the same id and the same
//!    content digest returns the original record, a different digest is
//!    refused with `ExistsWithDifferentContent`.
//! 5. Each pending has at most one resolution, with the pending's legs.
//! 6. Arithmetic is checked; overflow is an error, never a wrap.
//!
//! # Order of checks
//!
//! Existing id (replay / different content) → shape (legs, amounts,
//! balance, reference) → expiry in the future (pending) → pending lookup
//! and state (resolutions) → accounts exist and currency → limits.
//!
//! # Example
//!
//! ```
//! use kessai_ids::{AccountId, TransferId};
//! use kessai_ledger::*;
//! use kessai_money::Currency;
//!
//! let jpy = Currency::from_code("JPY").unwrap();
//! let card: AccountId = "card-1".parse().unwrap();
//! let shop: AccountId = "shop-1".parse().unwrap();
//! let mut l = MemLedger::new();
//! l.insert_account(Account::new(card.clone(), AccountKind::CardholderFunding, jpy, BalanceLimit::MaxNetDebit(1000))).unwrap();
//! l.insert_account(Account::new(shop.clone(), AccountKind::MerchantPayable, jpy, BalanceLimit::Unlimited)).unwrap();
//!
//! let pay = TransferRequest::posted(
//!     TransferId::derive("example", &[b"order-1"]), jpy, codes::CARD_PAYMENT,
//!     vec![Leg::debit(card.clone(), 800), Leg::credit(shop.clone(), 800)],
//! );
//! assert!(matches!(l.submit(&pay, 1_000).unwrap(), Applied::Created(_)));
//! assert!(matches!(l.submit(&pay, 2_000).unwrap(), Applied::AlreadyExists(_)));
//!
//! let too_much = TransferRequest::posted(
//!     TransferId::derive("example", &[b"order-2"]), jpy, codes::CARD_PAYMENT,
//!     vec![Leg::debit(card.clone(), 201), Leg::credit(shop, 201)],
//! );
//! assert_eq!(l.submit(&too_much, 3_000), Err(LedgerError::ExceedsLimit { account: card }));
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod apply;
mod digest;
mod mem;
mod types;

pub use apply::{AccountChange, Applied, BalanceDelta, Effect, LedgerView, apply};
pub use mem::MemLedger;
pub use types::*;

/// Why the ledger refused a request. Each variant is a stable result code
/// ([`LedgerError::code`]); none carries free text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// A transfer with this id exists with a different content digest.
    #[error("transfer id exists with different content")]
    ExistsWithDifferentContent,
    /// An account with this id exists with a different kind, currency or
    /// limit.
    #[error("account exists with different content")]
    AccountExistsWithDifferentContent,
    /// A leg names an account that does not exist.
    #[error("account not found: {account}")]
    AccountNotFound {
        /// The missing account.
        account: kessai_ids::AccountId,
    },
    /// An account's currency differs from the transfer's (or a
    /// resolution's currency differs from its pending's).
    #[error("currency mismatch")]
    CurrencyMismatch,
    /// Σ debit amounts ≠ Σ credit amounts.
    #[error("debits and credits do not balance")]
    Unbalanced,
    /// A leg amount (or a limit) is zero or negative.
    #[error("amount must be positive")]
    AmountNotPositive,
    /// A posted or pending transfer needs at least one debit and one
    /// credit leg.
    #[error("a transfer needs at least one debit and one credit leg")]
    TooFewLegs,
    /// The same account appears on the debit and the credit side.
    #[error("same account on both sides")]
    SameAccountBothSides,
    /// Too many legs or evidence items, or a reference/evidence kind that
    /// is too long.
    #[error("transfer too large")]
    TooLarge,
    /// Post/void/expire carry no legs of their own.
    #[error("a resolution must not carry legs")]
    ResolutionWithLegs,
    /// A pending transfer's expiry is not after `now_ms`.
    #[error("pending transfer would already be expired")]
    ExpiryNotInFuture,
    /// The transfer would leave this account over its limit.
    #[error("exceeds the limit of account {account}")]
    ExceedsLimit {
        /// The account whose limit would be exceeded.
        account: kessai_ids::AccountId,
    },
    /// The referenced transfer does not exist or is not pending.
    #[error("pending transfer not found")]
    PendingNotFound,
    /// The pending transfer was already posted.
    #[error("pending transfer already posted")]
    PendingAlreadyPosted,
    /// The pending transfer was already voided.
    #[error("pending transfer already voided")]
    PendingAlreadyVoided,
    /// The pending transfer already expired (an expiry was recorded).
    #[error("pending transfer already expired")]
    PendingAlreadyExpired,
    /// Post or void at or after the pending's expiry.
    #[error("pending transfer has expired")]
    PendingExpired,
    /// Expiry requested before the pending's expiry time.
    #[error("pending transfer has not expired yet")]
    PendingNotYetExpired,
    /// A sum or balance would overflow `i64`.
    #[error("arithmetic overflow")]
    Overflow,
}

impl LedgerError {
    /// Stable snake-case result code, for APIs and logs.
    pub fn code(&self) -> &'static str {
        match self {
            Self::ExistsWithDifferentContent => "exists_with_different_content",
            Self::AccountExistsWithDifferentContent => "account_exists_with_different_content",
            Self::AccountNotFound { .. } => "account_not_found",
            Self::CurrencyMismatch => "currency_mismatch",
            Self::Unbalanced => "unbalanced",
            Self::AmountNotPositive => "amount_not_positive",
            Self::TooFewLegs => "too_few_legs",
            Self::SameAccountBothSides => "same_account_both_sides",
            Self::TooLarge => "too_large",
            Self::ResolutionWithLegs => "resolution_with_legs",
            Self::ExpiryNotInFuture => "expiry_not_in_future",
            Self::ExceedsLimit { .. } => "exceeds_limit",
            Self::PendingNotFound => "pending_not_found",
            Self::PendingAlreadyPosted => "pending_already_posted",
            Self::PendingAlreadyVoided => "pending_already_voided",
            Self::PendingAlreadyExpired => "pending_already_expired",
            Self::PendingExpired => "pending_expired",
            Self::PendingNotYetExpired => "pending_not_yet_expired",
            Self::Overflow => "overflow",
        }
    }
}
