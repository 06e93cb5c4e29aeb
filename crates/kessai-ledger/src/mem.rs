//! An in-memory ledger with the same rules as the store.

use std::collections::{BTreeMap, HashMap};

use kessai_ids::{AccountId, TransferId};

use crate::LedgerError;
use crate::apply::{Applied, Effect, LedgerView, apply};
use crate::types::*;

/// A ledger in memory: accounts, transfers, and the resolution of each
/// pending. Deterministic (ordered maps where order is visible).
///
/// `kessai-store` loads the rows one commit batch touches into a
/// `MemLedger`, runs the batch's requests through [`MemLedger::submit`],
/// and writes the [`Effect`]s back.
#[derive(Debug, Clone, Default)]
pub struct MemLedger {
    accounts: BTreeMap<AccountId, Account>,
    transfers: HashMap<TransferId, TransferRecord>,
    /// pending id → resolution id.
    resolutions: HashMap<TransferId, TransferId>,
    /// Ids in the order they were recorded (or loaded).
    order: Vec<TransferId>,
}

impl LedgerView for MemLedger {
    fn account(&self, id: &AccountId) -> Option<&Account> {
        self.accounts.get(id)
    }
    fn transfer(&self, id: &TransferId) -> Option<&TransferRecord> {
        self.transfers.get(id)
    }
    fn resolution_of(&self, pending_id: &TransferId) -> Option<&TransferRecord> {
        self.resolutions
            .get(pending_id)
            .and_then(|r| self.transfers.get(r))
    }
}

impl MemLedger {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an account. Re-adding the same definition is a no-op
    /// (`Ok(false)`); a different definition under the same id is
    /// refused. Balances of `account` are taken as given (a store loading
    /// its rows); a new account normally has zero balances.
    pub fn insert_account(&mut self, account: Account) -> Result<bool, LedgerError> {
        account.validate_new()?;
        if let Some(existing) = self.accounts.get(&account.id) {
            return if existing.same_definition(&account) {
                Ok(false)
            } else {
                Err(LedgerError::AccountExistsWithDifferentContent)
            };
        }
        self.accounts.insert(account.id.clone(), account);
        Ok(true)
    }

    /// Loads an already-recorded transfer without checks or balance
    /// changes (a store filling its working set).
    pub fn load_transfer(&mut self, record: TransferRecord) {
        if let Some(p) = record.kind.pending_id() {
            self.resolutions.insert(p, record.id);
        }
        if self.transfers.insert(record.id, record.clone()).is_none() {
            self.order.push(record.id);
        }
    }

    /// Decides `req` at `now_ms` and, if new, records it and applies its
    /// balance changes.
    pub fn submit(&mut self, req: &TransferRequest, now_ms: u64) -> Result<Applied, LedgerError> {
        let applied = apply(self, req, now_ms)?;
        if let Applied::Created(effect) = &applied {
            self.record(effect);
        }
        Ok(applied)
    }

    /// Records an effect produced by [`apply`] on this ledger.
    pub fn record(&mut self, effect: &Effect) {
        for change in &effect.accounts {
            if let Some(a) = self.accounts.get_mut(&change.id) {
                a.balances = change.after;
            }
        }
        self.load_transfer(effect.record.clone());
    }

    /// An account.
    pub fn account(&self, id: &AccountId) -> Option<&Account> {
        self.accounts.get(id)
    }

    /// A transfer.
    pub fn transfer(&self, id: &TransferId) -> Option<&TransferRecord> {
        self.transfers.get(id)
    }

    /// All accounts, by id.
    pub fn accounts(&self) -> impl Iterator<Item = &Account> {
        self.accounts.values()
    }

    /// All transfers, in recording order.
    pub fn transfers(&self) -> impl Iterator<Item = &TransferRecord> {
        self.order.iter().filter_map(|id| self.transfers.get(id))
    }

    /// Unresolved pending transfers with `expires_at_ms ≤ now_ms`, in
    /// recording order.
    pub fn due_for_expiry(&self, now_ms: u64) -> Vec<TransferId> {
        self.transfers()
            .filter(|t| {
                t.kind.expires_at_ms().is_some_and(|e| e <= now_ms)
                    && !self.resolutions.contains_key(&t.id)
            })
            .map(|t| t.id)
            .collect()
    }

    /// Recomputes every account's balances from the transfers (invariant
    /// 2 in the crate docs); `None` on overflow or an unknown account.
    pub fn recompute_balances(&self) -> Option<BTreeMap<AccountId, Balances>> {
        let mut out: BTreeMap<AccountId, Balances> = self
            .accounts
            .keys()
            .map(|id| (id.clone(), Balances::default()))
            .collect();
        for t in self.transfers() {
            for leg in &t.legs {
                let b = out.get_mut(&leg.account)?;
                let mut d = crate::BalanceDelta::default();
                let neg = -leg.amount_minor;
                let (pending, posted) = match leg.side {
                    Side::Debit => (&mut d.debits_pending, &mut d.debits_posted),
                    Side::Credit => (&mut d.credits_pending, &mut d.credits_posted),
                };
                match t.kind {
                    TransferKind::Posted => *posted = leg.amount_minor,
                    TransferKind::Pending { .. } => *pending = leg.amount_minor,
                    TransferKind::PostPending { .. } => {
                        *pending = neg;
                        *posted = leg.amount_minor;
                    }
                    TransferKind::VoidPending { .. } | TransferKind::ExpirePending { .. } => {
                        *pending = neg
                    }
                }
                *b = d.apply_to(b).ok()?;
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codes;
    use kessai_money::Currency;

    fn jpy() -> Currency {
        Currency::from_code("JPY").unwrap()
    }
    fn eur() -> Currency {
        Currency::from_code("EUR").unwrap()
    }
    fn acc(s: &str) -> AccountId {
        s.parse().unwrap()
    }
    fn tid(n: u8) -> TransferId {
        TransferId([n; 16])
    }

    /// card (credit line 1000), prepaid (balance-only), shop, clearing,
    /// an EUR account.
    fn ledger() -> MemLedger {
        let mut l = MemLedger::new();
        for (id, kind, cur, limit) in [
            (
                "card",
                AccountKind::CardholderFunding,
                jpy(),
                BalanceLimit::MaxNetDebit(1000),
            ),
            (
                "prepaid",
                AccountKind::EmoneyOutstanding,
                jpy(),
                BalanceLimit::MaxNetDebit(0),
            ),
            (
                "shop",
                AccountKind::MerchantPayable,
                jpy(),
                BalanceLimit::MaxNetCredit(5000),
            ),
            (
                "clearing",
                AccountKind::IssuerClearing,
                jpy(),
                BalanceLimit::Unlimited,
            ),
            (
                "eur",
                AccountKind::IssuerFees,
                eur(),
                BalanceLimit::Unlimited,
            ),
        ] {
            assert!(
                l.insert_account(Account::new(acc(id), kind, cur, limit))
                    .unwrap()
            );
        }
        l
    }

    fn pay(n: u8, from: &str, to: &str, amount: i64) -> TransferRequest {
        TransferRequest::posted(
            tid(n),
            jpy(),
            codes::CARD_PAYMENT,
            vec![Leg::debit(acc(from), amount), Leg::credit(acc(to), amount)],
        )
    }

    fn hold(n: u8, from: &str, to: &str, amount: i64, expires: u64) -> TransferRequest {
        TransferRequest::pending(
            tid(n),
            jpy(),
            codes::CARD_PAYMENT,
            vec![Leg::debit(acc(from), amount), Leg::credit(acc(to), amount)],
            expires,
        )
    }

    fn resolve(n: u8, kind: TransferKind) -> TransferRequest {
        TransferRequest::resolution(tid(n), jpy(), codes::CARD_PAYMENT, kind)
    }

    fn bal(l: &MemLedger, id: &str) -> Balances {
        l.account(&acc(id)).unwrap().balances
    }

    fn created(r: Result<Applied, LedgerError>) -> Effect {
        match r {
            Ok(Applied::Created(e)) => e,
            other => panic!("expected Created, got {other:?}"),
        }
    }

    fn assert_consistent(l: &MemLedger) {
        let re = l.recompute_balances().unwrap();
        for a in l.accounts() {
            assert_eq!(re[&a.id], a.balances, "{}", a.id);
            assert!(a.limit.holds(&a.balances), "{}", a.id);
        }
    }

    #[test]
    fn posted_transfer_moves_posted_balances() {
        let mut l = ledger();
        let e = created(l.submit(&pay(1, "card", "shop", 700), 10));
        assert_eq!(e.record.created_at_ms, 10);
        assert_eq!(e.accounts.len(), 2);
        assert_eq!(bal(&l, "card").debits_posted, 700);
        assert_eq!(bal(&l, "shop").credits_posted, 700);
        assert_consistent(&l);
    }

    #[test]
    fn replay_returns_original_and_changes_nothing() {
        let mut l = ledger();
        let first = created(l.submit(&pay(1, "card", "shop", 700), 10)).record;
        let again = l.submit(&pay(1, "card", "shop", 700), 99).unwrap();
        assert_eq!(again, Applied::AlreadyExists(first));
        assert_eq!(bal(&l, "card").debits_posted, 700);
        assert_eq!(
            l.submit(&pay(1, "card", "shop", 701), 99),
            Err(LedgerError::ExistsWithDifferentContent)
        );
        // Different content = any field, e.g. the reference.
        assert_eq!(
            l.submit(&pay(1, "card", "shop", 700).with_reference("x"), 99),
            Err(LedgerError::ExistsWithDifferentContent)
        );
        assert_consistent(&l);
    }

    #[test]
    fn shape_errors() {
        let mut l = ledger();
        let mut r = pay(1, "card", "shop", 5);
        r.legs.pop();
        assert_eq!(l.submit(&r, 1), Err(LedgerError::TooFewLegs));
        r.legs.clear();
        assert_eq!(l.submit(&r, 1), Err(LedgerError::TooFewLegs));
        assert_eq!(
            l.submit(&pay(1, "card", "shop", 0), 1),
            Err(LedgerError::AmountNotPositive)
        );
        assert_eq!(
            l.submit(&pay(1, "card", "shop", -5), 1),
            Err(LedgerError::AmountNotPositive)
        );
        let mut r = pay(1, "card", "shop", 5);
        r.legs[1].amount_minor = 6;
        assert_eq!(l.submit(&r, 1), Err(LedgerError::Unbalanced));
        let mut r = pay(1, "card", "shop", 5);
        r.legs.push(Leg::credit(acc("card"), 1));
        r.legs.push(Leg::debit(acc("clearing"), 1));
        assert_eq!(l.submit(&r, 1), Err(LedgerError::SameAccountBothSides));
        let mut r = pay(1, "card", "shop", i64::MAX);
        r.legs.push(Leg::debit(acc("clearing"), 1));
        r.legs.push(Leg::credit(acc("prepaid"), 1));
        assert_eq!(l.submit(&r, 1), Err(LedgerError::Overflow));
        let r = pay(1, "card", "shop", 5).with_reference("x".repeat(MAX_REFERENCE_LEN + 1));
        assert_eq!(l.submit(&r, 1), Err(LedgerError::TooLarge));
        let r = pay(1, "card", "shop", 5).with_evidence("", [0; 32]);
        assert_eq!(l.submit(&r, 1), Err(LedgerError::TooLarge));
        let mut r = pay(1, "card", "shop", 1);
        for _ in 0..MAX_LEGS {
            r.legs.push(Leg::debit(acc("clearing"), 1));
        }
        assert_eq!(l.submit(&r, 1), Err(LedgerError::TooLarge));
        assert_eq!(l.transfers().count(), 0);
    }

    #[test]
    fn account_errors() {
        let mut l = ledger();
        assert_eq!(
            l.submit(&pay(1, "card", "nobody", 5), 1),
            Err(LedgerError::AccountNotFound {
                account: acc("nobody")
            })
        );
        assert_eq!(
            l.submit(&pay(1, "card", "eur", 5), 1),
            Err(LedgerError::CurrencyMismatch)
        );
        assert_eq!(
            l.insert_account(Account::new(
                acc("card"),
                AccountKind::CardholderFunding,
                jpy(),
                BalanceLimit::MaxNetDebit(1000)
            )),
            Ok(false)
        );
        assert_eq!(
            l.insert_account(Account::new(
                acc("card"),
                AccountKind::CardholderFunding,
                jpy(),
                BalanceLimit::MaxNetDebit(999)
            )),
            Err(LedgerError::AccountExistsWithDifferentContent)
        );
        assert_eq!(
            l.insert_account(Account::new(
                acc("neg"),
                AccountKind::CardholderFunding,
                jpy(),
                BalanceLimit::MaxNetDebit(-1)
            )),
            Err(LedgerError::AmountNotPositive)
        );
    }

    #[test]
    fn limits_count_pending_debits_but_not_pending_credits() {
        let mut l = ledger();
        created(l.submit(&hold(1, "card", "shop", 600, 100), 1));
        // 600 held + 401 > 1000.
        assert_eq!(
            l.submit(&pay(2, "card", "shop", 401), 2),
            Err(LedgerError::ExceedsLimit {
                account: acc("card")
            })
        );
        created(l.submit(&pay(2, "card", "shop", 400), 2));
        // Prepaid: pending credit (a top-up hold) does not fund a debit.
        created(l.submit(&hold(3, "clearing", "prepaid", 300, 100), 3));
        assert_eq!(
            l.submit(&pay(4, "prepaid", "shop", 1), 4),
            Err(LedgerError::ExceedsLimit {
                account: acc("prepaid")
            })
        );
        created(l.submit(
            &resolve(5, TransferKind::PostPending { pending_id: tid(3) }),
            5,
        ));
        created(l.submit(&pay(4, "prepaid", "shop", 300), 6));
        assert_eq!(
            l.submit(&pay(6, "prepaid", "shop", 1), 7),
            Err(LedgerError::ExceedsLimit {
                account: acc("prepaid")
            })
        );
        // MaxNetCredit on shop (5000): credits count pending ones.
        created(l.submit(&pay(7, "clearing", "shop", 3700), 8));
        assert_eq!(bal(&l, "shop").credits_pending, 600);
        assert_eq!(
            l.submit(&pay(8, "clearing", "shop", 1), 9),
            Err(LedgerError::ExceedsLimit {
                account: acc("shop")
            })
        );
        // Reductions are always allowed: the shop pays out.
        created(l.submit(&pay(9, "shop", "clearing", 10), 10));
        assert_consistent(&l);
    }

    #[test]
    fn two_phase_post_void_expire() {
        let mut l = ledger();
        created(l.submit(&hold(1, "card", "shop", 500, 100), 1));
        assert_eq!(bal(&l, "card").debits_pending, 500);
        let post = created(l.submit(
            &resolve(2, TransferKind::PostPending { pending_id: tid(1) }),
            2,
        ));
        assert_eq!(post.record.legs, l.transfer(&tid(1)).unwrap().legs);
        assert_eq!(
            bal(&l, "card"),
            Balances {
                debits_posted: 500,
                ..Default::default()
            }
        );
        assert_eq!(
            bal(&l, "shop"),
            Balances {
                credits_posted: 500,
                ..Default::default()
            }
        );
        // Second resolution of any kind is refused with the state.
        for (n, k) in [
            (3, TransferKind::PostPending { pending_id: tid(1) }),
            (4, TransferKind::VoidPending { pending_id: tid(1) }),
        ] {
            assert_eq!(
                l.submit(&resolve(n, k), 3),
                Err(LedgerError::PendingAlreadyPosted)
            );
        }
        assert_eq!(
            l.submit(
                &resolve(4, TransferKind::ExpirePending { pending_id: tid(1) }),
                200
            ),
            Err(LedgerError::PendingAlreadyPosted)
        );

        created(l.submit(&hold(10, "card", "shop", 200, 100), 10));
        created(l.submit(
            &resolve(
                11,
                TransferKind::VoidPending {
                    pending_id: tid(10),
                },
            ),
            11,
        ));
        assert_eq!(
            l.submit(
                &resolve(
                    12,
                    TransferKind::PostPending {
                        pending_id: tid(10)
                    }
                ),
                12
            ),
            Err(LedgerError::PendingAlreadyVoided)
        );

        created(l.submit(&hold(20, "card", "shop", 200, 100), 20));
        assert_eq!(l.due_for_expiry(99), Vec::<TransferId>::new());
        assert_eq!(
            l.submit(
                &resolve(
                    21,
                    TransferKind::ExpirePending {
                        pending_id: tid(20)
                    }
                ),
                99
            ),
            Err(LedgerError::PendingNotYetExpired)
        );
        assert_eq!(l.due_for_expiry(100), vec![tid(20)]);
        assert_eq!(
            l.submit(
                &resolve(
                    21,
                    TransferKind::PostPending {
                        pending_id: tid(20)
                    }
                ),
                100
            ),
            Err(LedgerError::PendingExpired)
        );
        assert_eq!(
            l.submit(
                &resolve(
                    21,
                    TransferKind::VoidPending {
                        pending_id: tid(20)
                    }
                ),
                100
            ),
            Err(LedgerError::PendingExpired)
        );
        created(l.submit(
            &resolve(
                21,
                TransferKind::ExpirePending {
                    pending_id: tid(20),
                },
            ),
            100,
        ));
        assert_eq!(
            l.submit(
                &resolve(
                    22,
                    TransferKind::VoidPending {
                        pending_id: tid(20)
                    }
                ),
                50
            ),
            Err(LedgerError::PendingAlreadyExpired)
        );
        assert!(l.due_for_expiry(1000).is_empty());
        assert_eq!(bal(&l, "card").debits_pending, 0);
        assert_eq!(bal(&l, "card").debits_posted, 500);
        assert_consistent(&l);
    }

    #[test]
    fn resolution_errors() {
        let mut l = ledger();
        assert_eq!(
            l.submit(
                &resolve(2, TransferKind::PostPending { pending_id: tid(1) }),
                2
            ),
            Err(LedgerError::PendingNotFound)
        );
        created(l.submit(&pay(1, "card", "shop", 5), 1));
        // A posted transfer is not a pending one.
        assert_eq!(
            l.submit(
                &resolve(2, TransferKind::PostPending { pending_id: tid(1) }),
                2
            ),
            Err(LedgerError::PendingNotFound)
        );
        created(l.submit(&hold(3, "card", "shop", 5, 100), 3));
        let mut r = resolve(4, TransferKind::PostPending { pending_id: tid(3) });
        r.legs.push(Leg::debit(acc("card"), 5));
        assert_eq!(l.submit(&r, 4), Err(LedgerError::ResolutionWithLegs));
        let mut r = resolve(4, TransferKind::PostPending { pending_id: tid(3) });
        r.currency = eur();
        assert_eq!(l.submit(&r, 4), Err(LedgerError::CurrencyMismatch));
        assert_eq!(
            l.submit(&hold(5, "card", "shop", 5, 7), 7),
            Err(LedgerError::ExpiryNotInFuture)
        );
    }

    #[test]
    fn overflow_of_balances_is_refused() {
        let mut l = ledger();
        created(l.submit(&pay(1, "clearing", "prepaid", i64::MAX), 1));
        assert_eq!(
            l.submit(&pay(2, "clearing", "prepaid", 1), 2),
            Err(LedgerError::Overflow)
        );
        assert_consistent(&l);
    }

    #[test]
    fn error_codes_are_distinct() {
        let all = [
            LedgerError::ExistsWithDifferentContent,
            LedgerError::AccountExistsWithDifferentContent,
            LedgerError::AccountNotFound { account: acc("a") },
            LedgerError::CurrencyMismatch,
            LedgerError::Unbalanced,
            LedgerError::AmountNotPositive,
            LedgerError::TooFewLegs,
            LedgerError::SameAccountBothSides,
            LedgerError::TooLarge,
            LedgerError::ResolutionWithLegs,
            LedgerError::ExpiryNotInFuture,
            LedgerError::ExceedsLimit { account: acc("a") },
            LedgerError::PendingNotFound,
            LedgerError::PendingAlreadyPosted,
            LedgerError::PendingAlreadyVoided,
            LedgerError::PendingAlreadyExpired,
            LedgerError::PendingExpired,
            LedgerError::PendingNotYetExpired,
            LedgerError::Overflow,
        ];
        let codes: std::collections::BTreeSet<_> = all.iter().map(|e| e.code()).collect();
        assert_eq!(codes.len(), all.len());
    }

    #[test]
    fn storage_codes_round_trip() {
        for k in [
            AccountKind::CardholderFunding,
            AccountKind::EmoneyOutstanding,
            AccountKind::MerchantPayable,
            AccountKind::IssuerFees,
            AccountKind::IssuerClearing,
        ] {
            assert_eq!(AccountKind::from_code(k.code()), Some(k));
        }
        assert_eq!(AccountKind::from_code(0), None);
        for lim in [
            BalanceLimit::Unlimited,
            BalanceLimit::MaxNetDebit(5),
            BalanceLimit::MaxNetCredit(0),
        ] {
            let (k, v) = lim.to_parts();
            assert_eq!(BalanceLimit::from_parts(k, v), Some(lim));
        }
        assert_eq!(BalanceLimit::from_parts(1, -1), None);
        assert_eq!(BalanceLimit::from_parts(3, 0), None);
        for k in [
            TransferKind::Posted,
            TransferKind::Pending { expires_at_ms: 9 },
            TransferKind::PostPending { pending_id: tid(1) },
            TransferKind::VoidPending { pending_id: tid(1) },
            TransferKind::ExpirePending { pending_id: tid(1) },
        ] {
            assert_eq!(
                TransferKind::from_parts(k.code(), k.expires_at_ms(), k.pending_id()),
                Some(k)
            );
        }
        assert_eq!(TransferKind::from_parts(0, Some(1), None), None);
        assert_eq!(TransferKind::from_parts(2, None, None), None);
    }

    #[test]
    fn record_request_round_trips_digest() {
        let mut l = ledger();
        created(l.submit(&hold(1, "card", "shop", 5, 100), 1));
        let e = created(
            l.submit(
                &resolve(2, TransferKind::PostPending { pending_id: tid(1) })
                    .with_evidence("cose/pcn", [3; 32]),
                2,
            ),
        );
        assert_eq!(e.record.request().digest(), e.record.digest);
        let t = l.transfer(&tid(1)).unwrap();
        assert_eq!(t.request().digest(), t.digest);
    }
}
