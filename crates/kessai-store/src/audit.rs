//! The auditor: recomputes the ledger from its transfers and reports every
//! difference as a typed [`Finding`].
//!
//! Two independent passes over one consistent snapshot (a read
//! transaction; `REPEATABLE READ` on PostgreSQL):
//!
//! 1. **Sums.** Every account's four balance columns are recomputed from
//!    the stored legs alone and compared with the stored columns
//!    ([`Finding::BalanceMismatch`]); every stored balance must respect
//!    its limit ([`Finding::LimitViolated`]).
//! 2. **Replay.** Every transfer, in commit order, is re-decided by the
//!    pure rules ([`kessai_ledger::apply`]) at its own `created_at_ms`
//!    against a ledger rebuilt from zero: it must be accepted
//!    ([`Finding::TransferRefused`]: unbalanced, over limit, a second
//!    resolution, a resolution of a missing pending, ...), its stored
//!    digest must match its content ([`Finding::DigestMismatch`]), and a
//!    resolution must carry exactly its pending's legs
//!    ([`Finding::ResolutionLegsDiffer`]).
//!
//! 3. **History** (SQLite). The account history that the ledger writer
//!    fills in chunks must hold exactly one `(account, transfer)` pair for
//!    every leg up to its mark, and nothing else
//!    ([`Finding::AccountHistoryMismatch`]).
//!
//! An edited amount shows up as a digest mismatch and a balance mismatch;
//! a deleted transfer as a balance mismatch; a copy under a new id as a
//! digest mismatch (the digest covers the id) and a balance mismatch; an
//! edited balance as a balance mismatch.
//!
//! The auditor holds the whole ledger in memory while replaying.

use std::collections::BTreeMap;

use kessai_ids::{AccountId, TransferId};
use kessai_ledger::{Account, Applied, Balances, MemLedger, TransferKind, TransferRecord};
use serde::Serialize;

use crate::StoreError;
use crate::db::{Db, DbPool};
use crate::ledger::sql;

/// One difference the auditor found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "finding", rename_all = "snake_case")]
pub enum Finding {
    /// Stored balance columns differ from the sums of the legs.
    BalanceMismatch {
        /// The account.
        account: AccountId,
        /// What the account row says.
        stored: Balances,
        /// What the legs add up to.
        recomputed: Balances,
    },
    /// Legs touch an account that does not exist, or sums overflow.
    LegsUnaccountable {
        /// The transfer.
        transfer: TransferId,
    },
    /// An account's stored balances exceed its limit.
    LimitViolated {
        /// The account.
        account: AccountId,
    },
    /// The stored digest does not match the transfer's content.
    DigestMismatch {
        /// The transfer.
        transfer: TransferId,
    },
    /// The ledger rules refuse this transfer when replayed in order.
    TransferRefused {
        /// The transfer.
        transfer: TransferId,
        /// The result code the rules give
        /// ([`kessai_ledger::LedgerError::code`]).
        code: &'static str,
    },
    /// A resolution's legs are not its pending's legs.
    ResolutionLegsDiffer {
        /// The resolution.
        transfer: TransferId,
        /// The pending it resolves.
        pending: TransferId,
    },
    /// SQLite: the account history and the legs disagree (at most 100
    /// are reported).
    AccountHistoryMismatch {
        /// The account, as stored.
        account: String,
        /// The transfer's sequence number.
        transfer_seq: i64,
        /// True: a leg up to the mark has no history entry; false: a
        /// history entry has no leg, or lies past the mark.
        missing: bool,
    },
    /// A row could not be decoded (bad id, unknown code, wrong length).
    CorruptRow {
        /// Which table and what was wrong.
        detail: String,
    },
}

/// The auditor's result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AuditReport {
    /// Accounts checked.
    pub accounts: usize,
    /// Transfers checked.
    pub transfers: usize,
    /// Everything that did not add up; empty for a clean ledger.
    pub findings: Vec<Finding>,
}

impl AuditReport {
    /// True if nothing was found.
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
    }
}

const PAGE: i64 = 2000;

/// Audits the ledger in `db`; see the module docs.
pub async fn audit(db: &Db) -> Result<AuditReport, StoreError> {
    macro_rules! load {
        ($tx:expr, $m:ident) => {{
            let mut tx = $tx;
            let accounts = sql::$m::all_accounts(&mut *tx).await;
            let mut transfers = Vec::new();
            let mut after = 0;
            let result = match accounts {
                Err(e) => Err(e),
                Ok(accounts) => loop {
                    match sql::$m::transfers_page(&mut *tx, after, PAGE).await {
                        Err(e) => break Err(e),
                        Ok(page) => {
                            let Some((last, _)) = page.last() else {
                                break Ok((accounts, transfers));
                            };
                            after = *last;
                            transfers.extend(page.into_iter().map(|(_, t)| t));
                        }
                    }
                },
            };
            tx.rollback().await?;
            result
        }};
    }
    let loaded = match db.pool() {
        DbPool::Sqlite(p) => load!(p.begin_with("BEGIN").await?, sqlite),
        DbPool::Postgres(p) => load!(
            p.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .await?,
            postgres
        ),
    };
    match loaded {
        Ok((accounts, transfers)) => {
            let mut report = check(&accounts, &transfers);
            if let DbPool::Sqlite(p) = db.pool() {
                report.findings.extend(history_findings(p).await?);
            }
            Ok(report)
        }
        Err(StoreError::Corrupt { table, detail }) => Ok(AuditReport {
            findings: vec![Finding::CorruptRow {
                detail: format!("{table}: {detail}"),
            }],
            ..AuditReport::default()
        }),
        Err(e) => Err(e),
    }
}

/// Pass 3 on SQLite, in one statement (one snapshot).
async fn history_findings(pool: &sqlx::SqlitePool) -> Result<Vec<Finding>, StoreError> {
    let rows: Vec<(String, i64, bool)> = sqlx::query_as(
        "SELECT l.account_id, l.transfer_seq, 1 FROM ledger_legs l, ledger_history_mark m \
         WHERE m.id = 1 AND l.transfer_seq <= m.upto AND NOT EXISTS \
           (SELECT 1 FROM ledger_account_history h \
            WHERE h.account_id = l.account_id AND h.transfer_seq = l.transfer_seq) \
         UNION ALL \
         SELECT h.account_id, h.transfer_seq, 0 FROM ledger_account_history h, ledger_history_mark m \
         WHERE m.id = 1 AND (h.transfer_seq > m.upto OR NOT EXISTS \
           (SELECT 1 FROM ledger_legs l \
            WHERE l.transfer_seq = h.transfer_seq AND l.account_id = h.account_id)) \
         LIMIT 100",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(account, transfer_seq, missing)| Finding::AccountHistoryMismatch {
                account,
                transfer_seq,
                missing,
            },
        )
        .collect())
}

/// The checks, on loaded data (pure).
pub fn check(accounts: &[Account], transfers: &[TransferRecord]) -> AuditReport {
    let mut findings = Vec::new();

    // Pass 1: sums.
    let mut sums: BTreeMap<&AccountId, Balances> = accounts
        .iter()
        .map(|a| (&a.id, Balances::default()))
        .collect();
    for t in transfers {
        let mut ok = true;
        for leg in &t.legs {
            let Some(b) = sums.get_mut(&leg.account) else {
                ok = false;
                continue;
            };
            let a = leg.amount_minor;
            let (pending, posted) = match leg.side {
                kessai_ledger::Side::Debit => (&mut b.debits_pending, &mut b.debits_posted),
                kessai_ledger::Side::Credit => (&mut b.credits_pending, &mut b.credits_posted),
            };
            let r = match t.kind {
                TransferKind::Posted => posted.checked_add(a).map(|v| *posted = v),
                TransferKind::Pending { .. } => pending.checked_add(a).map(|v| *pending = v),
                TransferKind::PostPending { .. } => pending
                    .checked_sub(a)
                    .map(|v| *pending = v)
                    .and_then(|_| posted.checked_add(a).map(|v| *posted = v)),
                TransferKind::VoidPending { .. } | TransferKind::ExpirePending { .. } => {
                    pending.checked_sub(a).map(|v| *pending = v)
                }
            };
            ok &= r.is_some();
        }
        if !ok {
            findings.push(Finding::LegsUnaccountable { transfer: t.id });
        }
    }
    for a in accounts {
        if let Some(re) = sums.get(&a.id)
            && *re != a.balances
        {
            findings.push(Finding::BalanceMismatch {
                account: a.id.clone(),
                stored: a.balances,
                recomputed: *re,
            });
        }
        if !a.limit.holds(&a.balances) {
            findings.push(Finding::LimitViolated {
                account: a.id.clone(),
            });
        }
    }

    // Pass 2: replay.
    let mut replay = MemLedger::new();
    for a in accounts {
        let fresh = Account {
            balances: Balances::default(),
            ..a.clone()
        };
        if replay.insert_account(fresh).is_err() {
            findings.push(Finding::CorruptRow {
                detail: format!("ledger_accounts: {}: invalid definition", a.id),
            });
        }
    }
    for t in transfers {
        let req = t.request();
        if req.digest() != t.digest {
            findings.push(Finding::DigestMismatch { transfer: t.id });
        }
        match kessai_ledger::apply(&replay, &req, t.created_at_ms) {
            Ok(Applied::Created(effect)) => {
                if let Some(pending) = t.kind.pending_id()
                    && effect.record.legs != t.legs
                {
                    findings.push(Finding::ResolutionLegsDiffer {
                        transfer: t.id,
                        pending,
                    });
                }
                replay.record(&effect);
            }
            Ok(Applied::AlreadyExists(_)) => findings.push(Finding::TransferRefused {
                transfer: t.id,
                code: "duplicate_id",
            }),
            Err(e) => {
                findings.push(Finding::TransferRefused {
                    transfer: t.id,
                    code: e.code(),
                });
                // Keep it visible to later resolutions without moving
                // balances (pass 1 already accounts for its legs).
                replay.load_transfer(t.clone());
            }
        }
    }

    AuditReport {
        accounts: accounts.len(),
        transfers: transfers.len(),
        findings,
    }
}
