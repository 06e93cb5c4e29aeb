//! Deciding one transfer request: [`apply`].

use std::collections::{BTreeMap, BTreeSet};

use kessai_ids::{AccountId, TransferId};

use crate::LedgerError;
use crate::types::*;

/// Read access to the part of the ledger a request touches. The store
/// implements it over rows it has locked; [`crate::MemLedger`] over maps.
pub trait LedgerView {
    /// The account, with its current balances.
    fn account(&self, id: &AccountId) -> Option<&Account>;
    /// A recorded transfer of any kind.
    fn transfer(&self, id: &TransferId) -> Option<&TransferRecord>;
    /// The resolution (post/void/expire) recorded for a pending transfer.
    fn resolution_of(&self, pending_id: &TransferId) -> Option<&TransferRecord>;
}

/// Signed change of an account's four counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BalanceDelta {
    /// Change of `debits_pending`.
    pub debits_pending: i64,
    /// Change of `debits_posted`.
    pub debits_posted: i64,
    /// Change of `credits_pending`.
    pub credits_pending: i64,
    /// Change of `credits_posted`.
    pub credits_posted: i64,
}

impl BalanceDelta {
    /// `b + self`, refusing overflow and negative counters (which would
    /// mean the view was inconsistent) with [`LedgerError::Overflow`].
    pub fn apply_to(&self, b: &Balances) -> Result<Balances, LedgerError> {
        fn add(x: i64, d: i64) -> Result<i64, LedgerError> {
            x.checked_add(d)
                .filter(|v| *v >= 0)
                .ok_or(LedgerError::Overflow)
        }
        Ok(Balances {
            debits_pending: add(b.debits_pending, self.debits_pending)?,
            debits_posted: add(b.debits_posted, self.debits_posted)?,
            credits_pending: add(b.credits_pending, self.credits_pending)?,
            credits_posted: add(b.credits_posted, self.credits_posted)?,
        })
    }

    fn add_leg(&mut self, kind: TransferKind, side: Side, amount: i64) -> Result<(), LedgerError> {
        fn bump(x: &mut i64, d: i64) -> Result<(), LedgerError> {
            *x = x.checked_add(d).ok_or(LedgerError::Overflow)?;
            Ok(())
        }
        let neg = amount.checked_neg().ok_or(LedgerError::Overflow)?;
        let (pending, posted) = match side {
            Side::Debit => (&mut self.debits_pending, &mut self.debits_posted),
            Side::Credit => (&mut self.credits_pending, &mut self.credits_posted),
        };
        match kind {
            TransferKind::Posted => bump(posted, amount),
            TransferKind::Pending { .. } => bump(pending, amount),
            TransferKind::PostPending { .. } => {
                bump(pending, neg)?;
                bump(posted, amount)
            }
            TransferKind::VoidPending { .. } | TransferKind::ExpirePending { .. } => {
                bump(pending, neg)
            }
        }
    }
}

/// How one account changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountChange {
    /// The account.
    pub id: AccountId,
    /// Signed change of its counters.
    pub delta: BalanceDelta,
    /// Its counters after the transfer.
    pub after: Balances,
}

/// What recording a new transfer does: the record to append and the
/// account changes (sorted by account id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effect {
    /// The transfer to append.
    pub record: TransferRecord,
    /// Balance changes, one per distinct account, sorted by id.
    pub accounts: Vec<AccountChange>,
}

/// A successful decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// A new transfer: record it and apply the changes.
    Created(Effect),
    /// Same id, same content: nothing to do; this is the original record.
    AlreadyExists(TransferRecord),
}

fn check_shape(req: &TransferRequest) -> Result<(), LedgerError> {
    if req.legs.len() > MAX_LEGS
        || req.evidence.len() > MAX_EVIDENCE
        || req.reference.len() > MAX_REFERENCE_LEN
        || req
            .evidence
            .iter()
            .any(|e| e.kind.is_empty() || e.kind.len() > MAX_EVIDENCE_KIND_LEN)
    {
        return Err(LedgerError::TooLarge);
    }
    Ok(())
}

fn check_legs(legs: &[Leg]) -> Result<(), LedgerError> {
    if legs.iter().any(|l| l.amount_minor <= 0) {
        return Err(LedgerError::AmountNotPositive);
    }
    let debits: BTreeSet<&AccountId> = legs
        .iter()
        .filter(|l| l.side == Side::Debit)
        .map(|l| &l.account)
        .collect();
    let credits: BTreeSet<&AccountId> = legs
        .iter()
        .filter(|l| l.side == Side::Credit)
        .map(|l| &l.account)
        .collect();
    if debits.is_empty() || credits.is_empty() {
        return Err(LedgerError::TooFewLegs);
    }
    if !debits.is_disjoint(&credits) {
        return Err(LedgerError::SameAccountBothSides);
    }
    let (mut d, mut c) = (0i64, 0i64);
    for l in legs {
        let sum = match l.side {
            Side::Debit => &mut d,
            Side::Credit => &mut c,
        };
        *sum = sum
            .checked_add(l.amount_minor)
            .ok_or(LedgerError::Overflow)?;
    }
    if d != c {
        return Err(LedgerError::Unbalanced);
    }
    Ok(())
}

/// Decides `req` against `view` at `now_ms`. Does not change anything: the
/// caller records [`Applied::Created`]'s effect (see
/// [`crate::MemLedger::submit`] for the reference way to do so). The order
/// of checks is in the crate docs.
pub fn apply(
    view: &impl LedgerView,
    req: &TransferRequest,
    now_ms: u64,
) -> Result<Applied, LedgerError> {
    let digest = req.digest();
    if let Some(existing) = view.transfer(&req.id) {
        return if existing.digest == digest {
            Ok(Applied::AlreadyExists(existing.clone()))
        } else {
            Err(LedgerError::ExistsWithDifferentContent)
        };
    }
    check_shape(req)?;
    let legs: Vec<Leg> = match req.kind {
        TransferKind::Posted | TransferKind::Pending { .. } => {
            check_legs(&req.legs)?;
            if let TransferKind::Pending { expires_at_ms } = req.kind
                && expires_at_ms <= now_ms
            {
                return Err(LedgerError::ExpiryNotInFuture);
            }
            req.legs.clone()
        }
        TransferKind::PostPending { pending_id }
        | TransferKind::VoidPending { pending_id }
        | TransferKind::ExpirePending { pending_id } => {
            if !req.legs.is_empty() {
                return Err(LedgerError::ResolutionWithLegs);
            }
            let pending = view
                .transfer(&pending_id)
                .filter(|p| matches!(p.kind, TransferKind::Pending { .. }))
                .ok_or(LedgerError::PendingNotFound)?;
            if pending.currency != req.currency {
                return Err(LedgerError::CurrencyMismatch);
            }
            if let Some(r) = view.resolution_of(&pending_id) {
                return Err(match r.kind {
                    TransferKind::PostPending { .. } => LedgerError::PendingAlreadyPosted,
                    TransferKind::VoidPending { .. } => LedgerError::PendingAlreadyVoided,
                    _ => LedgerError::PendingAlreadyExpired,
                });
            }
            let expired = pending.kind.expires_at_ms().is_some_and(|t| now_ms >= t);
            match (req.kind, expired) {
                (TransferKind::ExpirePending { .. }, false) => {
                    return Err(LedgerError::PendingNotYetExpired);
                }
                (TransferKind::PostPending { .. } | TransferKind::VoidPending { .. }, true) => {
                    return Err(LedgerError::PendingExpired);
                }
                _ => {}
            }
            pending.legs.clone()
        }
    };

    let mut deltas: BTreeMap<AccountId, BalanceDelta> = BTreeMap::new();
    for leg in &legs {
        let account = view
            .account(&leg.account)
            .ok_or_else(|| LedgerError::AccountNotFound {
                account: leg.account.clone(),
            })?;
        if account.currency != req.currency {
            return Err(LedgerError::CurrencyMismatch);
        }
        deltas.entry(leg.account.clone()).or_default().add_leg(
            req.kind,
            leg.side,
            leg.amount_minor,
        )?;
    }

    let mut accounts = Vec::with_capacity(deltas.len());
    for (id, delta) in deltas {
        // Present: looked up in the loop above.
        let Some(account) = view.account(&id) else {
            return Err(LedgerError::AccountNotFound { account: id });
        };
        let before = account.balances;
        let after = delta.apply_to(&before)?;
        if !account.limit.holds(&after) {
            let e_before = account.limit.exposure(&before);
            let e_after = account.limit.exposure(&after);
            match (e_before, e_after) {
                (Some(b), Some(a)) if a <= b => {}
                (_, None) => return Err(LedgerError::Overflow),
                _ => return Err(LedgerError::ExceedsLimit { account: id }),
            }
        }
        accounts.push(AccountChange { id, delta, after });
    }

    Ok(Applied::Created(Effect {
        record: TransferRecord {
            id: req.id,
            kind: req.kind,
            currency: req.currency,
            code: req.code,
            legs,
            evidence: req.evidence.clone(),
            reference: req.reference.clone(),
            digest,
            created_at_ms: now_ms,
        },
        accounts,
    }))
}
