//! The ledger's SQL, generated once per backend.
//!
//! The statements are the same text on SQLite and PostgreSQL (`$n`
//! placeholders, `i64`/`Vec<u8>`/`String` binds); what differs is the
//! connection type and the row lock (`FOR UPDATE` on PostgreSQL; on SQLite
//! the `BEGIN IMMEDIATE` write lock already excludes other writers). The
//! `backend!` macro stamps out one module per backend from one source.

use kessai_ids::{AccountId, TransferId};
use kessai_ledger::{
    Account, AccountKind, BalanceLimit, Balances, Evidence, Leg, Side, TransferKind, TransferRecord,
};
use kessai_money::Currency;

use crate::StoreError;

/// Columns of `ledger_transfers` read by every query, in this order.
pub(crate) const TRANSFER_COLUMNS: &str =
    "seq, id, kind, currency, code, expires_at_ms, pending_id, reference, digest, created_at_ms";

/// `$first, $first+1, ..., $first+n-1`.
pub(crate) fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// SQLite version of [`placeholders`]: anonymous `?` parameters, bound in
/// order. SQLite resolves each `$N` name by a linear search, at parse and at
/// bind time, which made multi-row statements quadratic in their row count.
/// Every generated statement binds its parameters in numbering order, so
/// the two forms are equivalent.
pub(crate) fn placeholders_anon(_first: usize, n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// A `ledger_transfers` row before its legs and evidence are attached.
#[derive(Debug)]
pub(crate) struct TransferRow {
    pub seq: i64,
    pub id: Vec<u8>,
    pub kind: i64,
    pub currency: i64,
    pub code: i64,
    pub expires_at_ms: Option<i64>,
    pub pending_id: Option<Vec<u8>>,
    pub reference: String,
    pub digest: Vec<u8>,
    pub created_at_ms: i64,
}

/// A `ledger_legs` row.
#[derive(Debug)]
pub(crate) struct LegRow {
    pub transfer_seq: i64,
    pub leg_index: i64,
    pub account_id: String,
    pub side: i64,
    pub amount_minor: i64,
}

/// A `ledger_evidence` row.
#[derive(Debug)]
pub(crate) struct EvidenceRow {
    pub transfer_seq: i64,
    pub ev_index: i64,
    pub kind: String,
    pub digest: Vec<u8>,
}

/// A `ledger_accounts` row.
#[derive(Debug)]
pub(crate) struct AccountRow {
    pub id: String,
    pub kind: i64,
    pub currency: i64,
    pub limit_kind: i64,
    pub limit_minor: i64,
    pub balances: [i64; 4],
}

pub(crate) fn transfer_id(bytes: &[u8], table: &'static str) -> Result<TransferId, StoreError> {
    let arr: [u8; 16] = bytes
        .try_into()
        .map_err(|_| StoreError::corrupt(table, "transfer id is not 16 bytes"))?;
    Ok(TransferId(arr))
}

pub(crate) fn account_from_row(r: AccountRow) -> Result<Account, StoreError> {
    let id: AccountId =
        r.id.parse()
            .map_err(|_| StoreError::corrupt("ledger_accounts", "invalid account id"))?;
    let bad = |what: &str| StoreError::corrupt("ledger_accounts", format!("{id}: {what}"));
    let kind = AccountKind::from_code(r.kind).ok_or_else(|| bad("unknown kind"))?;
    let currency = u16::try_from(r.currency)
        .ok()
        .and_then(|c| Currency::from_numeric(c).ok())
        .ok_or_else(|| bad("unknown currency"))?;
    let limit =
        BalanceLimit::from_parts(r.limit_kind, r.limit_minor).ok_or_else(|| bad("bad limit"))?;
    let [
        debits_pending,
        debits_posted,
        credits_pending,
        credits_posted,
    ] = r.balances;
    Ok(Account {
        id,
        kind,
        currency,
        limit,
        balances: Balances {
            debits_pending,
            debits_posted,
            credits_pending,
            credits_posted,
        },
    })
}

/// Joins transfer rows with their legs and evidence (in any order: they are
/// grouped here by transfer sequence number and sorted by index).
pub(crate) fn assemble(
    rows: Vec<TransferRow>,
    legs: Vec<LegRow>,
    evidence: Vec<EvidenceRow>,
) -> Result<Vec<(i64, TransferRecord)>, StoreError> {
    use std::collections::HashMap;
    const T: &str = "ledger_transfers";
    let mut legs_by: HashMap<i64, Vec<LegRow>> = HashMap::new();
    for l in legs {
        legs_by.entry(l.transfer_seq).or_default().push(l);
    }
    let mut ev_by: HashMap<i64, Vec<EvidenceRow>> = HashMap::new();
    for e in evidence {
        ev_by.entry(e.transfer_seq).or_default().push(e);
    }
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let id = transfer_id(&r.id, T)?;
        let bad = |what: &str| StoreError::corrupt(T, format!("{id}: {what}"));
        let pending_id = r
            .pending_id
            .as_deref()
            .map(|p| transfer_id(p, T))
            .transpose()?;
        let expires = r
            .expires_at_ms
            .map(|e| u64::try_from(e).map_err(|_| bad("negative expiry")))
            .transpose()?;
        let kind =
            TransferKind::from_parts(r.kind, expires, pending_id).ok_or_else(|| bad("bad kind"))?;
        let currency = u16::try_from(r.currency)
            .ok()
            .and_then(|c| Currency::from_numeric(c).ok())
            .ok_or_else(|| bad("unknown currency"))?;
        let code = u16::try_from(r.code).map_err(|_| bad("code out of range"))?;
        let digest: [u8; 32] = r
            .digest
            .as_slice()
            .try_into()
            .map_err(|_| bad("digest is not 32 bytes"))?;
        let created_at_ms = u64::try_from(r.created_at_ms).map_err(|_| bad("negative time"))?;
        let mut lrows = legs_by.remove(&r.seq).unwrap_or_default();
        lrows.sort_by_key(|l| l.leg_index);
        let mut legs = Vec::with_capacity(lrows.len());
        for l in lrows {
            legs.push(Leg {
                account: l
                    .account_id
                    .parse()
                    .map_err(|_| bad("invalid account id"))?,
                side: Side::from_code(l.side).ok_or_else(|| bad("bad side"))?,
                amount_minor: l.amount_minor,
            });
        }
        let mut erows = ev_by.remove(&r.seq).unwrap_or_default();
        erows.sort_by_key(|e| e.ev_index);
        let mut evidence = Vec::with_capacity(erows.len());
        for e in erows {
            evidence.push(Evidence {
                kind: e.kind,
                digest: e
                    .digest
                    .as_slice()
                    .try_into()
                    .map_err(|_| bad("evidence digest is not 32 bytes"))?,
            });
        }
        out.push((
            r.seq,
            TransferRecord {
                id,
                kind,
                currency,
                code,
                legs,
                evidence,
                reference: r.reference,
                digest,
                created_at_ms,
            },
        ));
    }
    Ok(out)
}

/// Rows per multi-row statement (≤ 9 binds per row keeps every
/// statement far below SQLite's 32766 and PostgreSQL's 65535 bind limits).
const ROWS_PER_STATEMENT: usize = 256;

/// Converts `u64` milliseconds for an `i64` column.
pub(crate) fn ms(v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::corrupt("input", "time does not fit in i64"))
}

macro_rules! backend {
    ($module:ident, $Db:ty, $Conn:ty, lock = $lock:literal, ph = $ph:ident, history = $history:literal) => {
        /// Ledger queries for one backend.
        pub(crate) mod $module {
            use sqlx::Row;

            use super::*;

            fn transfer_row(r: &<$Db as sqlx::Database>::Row) -> Result<TransferRow, sqlx::Error> {
                Ok(TransferRow {
                    seq: r.try_get(0)?,
                    id: r.try_get(1)?,
                    kind: r.try_get(2)?,
                    currency: r.try_get(3)?,
                    code: r.try_get(4)?,
                    expires_at_ms: r.try_get(5)?,
                    pending_id: r.try_get(6)?,
                    reference: r.try_get(7)?,
                    digest: r.try_get(8)?,
                    created_at_ms: r.try_get(9)?,
                })
            }

            fn account_row(r: &<$Db as sqlx::Database>::Row) -> Result<AccountRow, sqlx::Error> {
                Ok(AccountRow {
                    id: r.try_get(0)?,
                    kind: r.try_get(1)?,
                    currency: r.try_get(2)?,
                    limit_kind: r.try_get(3)?,
                    limit_minor: r.try_get(4)?,
                    balances: [r.try_get(5)?, r.try_get(6)?, r.try_get(7)?, r.try_get(8)?],
                })
            }

            const ACCOUNT_COLUMNS: &str = "id, kind, currency, limit_kind, limit_minor, \
                debits_pending, debits_posted, credits_pending, credits_posted";

            /// Attaches legs and evidence to transfer rows.
            async fn complete(
                conn: &mut $Conn,
                rows: Vec<TransferRow>,
            ) -> Result<Vec<(i64, TransferRecord)>, StoreError> {
                if rows.is_empty() {
                    return Ok(Vec::new());
                }
                let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
                let ph = $ph(1, seqs.len());
                let sql = format!(
                    "SELECT transfer_seq, leg_index, account_id, side, amount_minor \
                     FROM ledger_legs WHERE transfer_seq IN ({ph})"
                );
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                for seq in &seqs {
                    q = q.bind(*seq);
                }
                let mut legs = Vec::new();
                for r in q.fetch_all(&mut *conn).await? {
                    legs.push(LegRow {
                        transfer_seq: r.try_get(0)?,
                        leg_index: r.try_get(1)?,
                        account_id: r.try_get(2)?,
                        side: r.try_get(3)?,
                        amount_minor: r.try_get(4)?,
                    });
                }
                let sql = format!(
                    "SELECT transfer_seq, ev_index, kind, digest \
                     FROM ledger_evidence WHERE transfer_seq IN ({ph})"
                );
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                for seq in &seqs {
                    q = q.bind(*seq);
                }
                let mut evidence = Vec::new();
                for r in q.fetch_all(&mut *conn).await? {
                    evidence.push(EvidenceRow {
                        transfer_seq: r.try_get(0)?,
                        ev_index: r.try_get(1)?,
                        kind: r.try_get(2)?,
                        digest: r.try_get(3)?,
                    });
                }
                assemble(rows, legs, evidence)
            }

            /// Transfers whose `id` is in `ids`, and those whose
            /// `pending_id` is in `pending_ids` (the resolutions of those
            /// pendings).
            pub(crate) async fn transfers_by_ids(
                conn: &mut $Conn,
                ids: &[TransferId],
                pending_ids: &[TransferId],
            ) -> Result<Vec<(i64, TransferRecord)>, StoreError> {
                let mut rows = Vec::new();
                let mut seen = std::collections::HashSet::new();
                for (column, list) in [("id", ids), ("pending_id", pending_ids)] {
                    // `IS NOT NULL` lets SQLite use the partial unique index.
                    if list.is_empty() {
                        continue;
                    }
                    let sql = format!(
                        "SELECT {TRANSFER_COLUMNS} FROM ledger_transfers \
                         WHERE {column} IS NOT NULL AND {column} IN ({})",
                        $ph(1, list.len())
                    );
                    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                    for id in list {
                        q = q.bind(id.as_bytes().as_slice());
                    }
                    for r in q.fetch_all(&mut *conn).await? {
                        let row = transfer_row(&r)?;
                        // A resolution may be found by both lists.
                        if seen.insert(row.id.clone()) {
                            rows.push(row);
                        }
                    }
                }
                complete(conn, rows).await
            }

            /// Transfers with `seq > after_seq`, in commit order.
            pub(crate) async fn transfers_page(
                conn: &mut $Conn,
                after_seq: i64,
                limit: i64,
            ) -> Result<Vec<(i64, TransferRecord)>, StoreError> {
                let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {TRANSFER_COLUMNS} FROM ledger_transfers \
                     WHERE seq > $1 ORDER BY seq LIMIT $2"
                )))
                .bind(after_seq)
                .bind(limit)
                .fetch_all(&mut *conn)
                .await?
                .iter()
                .map(transfer_row)
                .collect::<Result<Vec<_>, _>>()?;
                complete(conn, rows).await
            }

            /// Transfers with a leg on `account`, in commit order.
            pub(crate) async fn transfers_for_account(
                conn: &mut $Conn,
                account: &AccountId,
                after_seq: i64,
                limit: i64,
            ) -> Result<Vec<(i64, TransferRecord)>, StoreError> {
                let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {TRANSFER_COLUMNS} FROM ledger_transfers \
                     WHERE seq > $2 AND seq IN ({}) ORDER BY seq LIMIT $3",
                    $history
                )))
                .bind(account.as_str())
                .bind(after_seq)
                .bind(limit)
                .fetch_all(&mut *conn)
                .await?
                .iter()
                .map(transfer_row)
                .collect::<Result<Vec<_>, _>>()?;
                complete(conn, rows).await
            }

            /// Unresolved pending transfers due at `now_ms`, oldest first.
            pub(crate) async fn due_pendings(
                conn: &mut $Conn,
                now_ms: i64,
                limit: i64,
            ) -> Result<Vec<(TransferId, i64)>, StoreError> {
                let rows = sqlx::query(
                    "SELECT t.id, t.currency FROM ledger_transfers t \
                     WHERE t.kind = 1 AND t.expires_at_ms <= $1 \
                       AND NOT EXISTS (SELECT 1 FROM ledger_transfers r WHERE r.pending_id = t.id) \
                     ORDER BY t.expires_at_ms, t.seq LIMIT $2",
                )
                .bind(now_ms)
                .bind(limit)
                .fetch_all(&mut *conn)
                .await?;
                let mut out = Vec::with_capacity(rows.len());
                for r in rows {
                    let id: Vec<u8> = r.try_get(0)?;
                    out.push((transfer_id(&id, "ledger_transfers")?, r.try_get(1)?));
                }
                Ok(out)
            }

            /// Accounts by id, sorted by id; with `lock`, locked for the
            /// rest of the transaction (PostgreSQL `FOR UPDATE`).
            pub(crate) async fn accounts_by_ids(
                conn: &mut $Conn,
                ids: &[&AccountId],
                lock: bool,
            ) -> Result<Vec<Account>, StoreError> {
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                let sql = format!(
                    "SELECT {ACCOUNT_COLUMNS} FROM ledger_accounts WHERE id IN ({}) ORDER BY id{}",
                    $ph(1, ids.len()),
                    if lock { $lock } else { "" }
                );
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                for id in ids {
                    q = q.bind(id.as_str());
                }
                q.fetch_all(&mut *conn)
                    .await?
                    .iter()
                    .map(|r| account_from_row(account_row(r)?))
                    .collect()
            }

            /// All accounts, by id (no lock).
            pub(crate) async fn all_accounts(conn: &mut $Conn) -> Result<Vec<Account>, StoreError> {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {ACCOUNT_COLUMNS} FROM ledger_accounts ORDER BY id"
                )))
                .fetch_all(&mut *conn)
                .await?
                .iter()
                .map(|r| account_from_row(account_row(r)?))
                .collect()
            }

            /// Inserts a new account; `Ok(false)` if the id exists.
            pub(crate) async fn insert_account(
                conn: &mut $Conn,
                a: &Account,
                now_ms: i64,
            ) -> Result<bool, StoreError> {
                let (limit_kind, limit_minor) = a.limit.to_parts();
                let done = sqlx::query(
                    "INSERT INTO ledger_accounts (id, kind, currency, limit_kind, limit_minor, \
                     debits_pending, debits_posted, credits_pending, credits_posted, created_at_ms) \
                     VALUES ($1, $2, $3, $4, $5, 0, 0, 0, 0, $6) ON CONFLICT (id) DO NOTHING",
                )
                .bind(a.id.as_str())
                .bind(a.kind.code())
                .bind(i64::from(a.currency.numeric()))
                .bind(limit_kind)
                .bind(limit_minor)
                .bind(now_ms)
                .execute(&mut *conn)
                .await?;
                Ok(done.rows_affected() == 1)
            }


        }
    };
}

backend!(
    sqlite,
    sqlx::Sqlite,
    sqlx::SqliteConnection,
    lock = "",
    ph = placeholders_anon,
    history = "SELECT transfer_seq FROM ledger_account_history \
               WHERE account_id = $1 AND transfer_seq > $2 \
               UNION ALL \
               SELECT transfer_seq FROM ledger_legs \
               WHERE transfer_seq > max($2, coalesce((SELECT upto FROM ledger_history_mark), 0)) \
                 AND account_id = $1"
);
backend!(
    postgres,
    sqlx::Postgres,
    sqlx::PgConnection,
    lock = " FOR UPDATE",
    ph = placeholders,
    history = "SELECT transfer_seq FROM ledger_legs WHERE account_id = $1 AND transfer_seq > $2"
);

/// The PostgreSQL ledger writer's statements (the SQLite writer has its
/// own, in `sqlite_thread.rs`).
pub(crate) mod postgres_writer {
    use sqlx::{PgConnection, Row};

    use super::*;

    /// Appends transfers with their legs and evidence, a few
    /// multi-row statements per chunk; returns each new
    /// transfer's sequence number.
    pub(crate) async fn insert_transfers(
        conn: &mut PgConnection,
        records: &[&TransferRecord],
    ) -> Result<std::collections::HashMap<TransferId, i64>, StoreError> {
        let mut seqs = std::collections::HashMap::with_capacity(records.len());
        for chunk in records.chunks(ROWS_PER_STATEMENT) {
            let values = (0..chunk.len())
                .map(|i| format!("({})", placeholders(1 + 9 * i, 9)))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "INSERT INTO ledger_transfers (id, kind, currency, code, expires_at_ms, \
                 pending_id, reference, digest, created_at_ms) VALUES {values} \
                 RETURNING id, seq"
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for t in chunk {
                q = q
                    .bind(t.id.as_bytes().as_slice())
                    .bind(t.kind.code())
                    .bind(i64::from(t.currency.numeric()))
                    .bind(i64::from(t.code))
                    .bind(t.kind.expires_at_ms().map(ms).transpose()?)
                    .bind(t.kind.pending_id().map(|p| p.0.to_vec()))
                    .bind(t.reference.as_str())
                    .bind(t.digest.as_slice())
                    .bind(ms(t.created_at_ms)?);
            }
            for r in q.fetch_all(&mut *conn).await? {
                let id: Vec<u8> = r.try_get(0)?;
                seqs.insert(transfer_id(&id, "ledger_transfers")?, r.try_get(1)?);
            }
        }
        let seq_of = |t: &TransferRecord| -> Result<i64, StoreError> {
            seqs.get(&t.id).copied().ok_or_else(|| {
                StoreError::corrupt("ledger_transfers", "insert returned no sequence number")
            })
        };
        let legs: Vec<(i64, usize, &Leg)> = records
            .iter()
            .map(|t| Ok((seq_of(t)?, *t)))
            .collect::<Result<Vec<_>, StoreError>>()?
            .into_iter()
            .flat_map(|(seq, t)| t.legs.iter().enumerate().map(move |(i, l)| (seq, i, l)))
            .collect();
        for chunk in legs.chunks(ROWS_PER_STATEMENT) {
            let values = (0..chunk.len())
                .map(|i| format!("({})", placeholders(1 + 5 * i, 5)))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "INSERT INTO ledger_legs (transfer_seq, leg_index, account_id, side, \
                 amount_minor) VALUES {values}"
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (seq, i, leg) in chunk {
                q = q
                    .bind(*seq)
                    .bind(*i as i64)
                    .bind(leg.account.as_str())
                    .bind(leg.side.code())
                    .bind(leg.amount_minor);
            }
            q.execute(&mut *conn).await?;
        }
        let evidence: Vec<(i64, usize, &Evidence)> = records
            .iter()
            .map(|t| Ok((seq_of(t)?, *t)))
            .collect::<Result<Vec<_>, StoreError>>()?
            .into_iter()
            .flat_map(|(seq, t)| t.evidence.iter().enumerate().map(move |(i, e)| (seq, i, e)))
            .collect();
        for chunk in evidence.chunks(ROWS_PER_STATEMENT) {
            let values = (0..chunk.len())
                .map(|i| format!("({})", placeholders(1 + 4 * i, 4)))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "INSERT INTO ledger_evidence (transfer_seq, ev_index, kind, digest) \
                 VALUES {values}"
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (seq, i, ev) in chunk {
                q = q
                    .bind(*seq)
                    .bind(*i as i64)
                    .bind(ev.kind.as_str())
                    .bind(ev.digest.as_slice());
            }
            q.execute(&mut *conn).await?;
        }
        Ok(seqs)
    }

    /// Writes accounts' new balances, many accounts per statement.
    pub(crate) async fn update_balances(
        conn: &mut PgConnection,
        accounts: &[(&AccountId, Balances)],
    ) -> Result<(), StoreError> {
        for chunk in accounts.chunks(ROWS_PER_STATEMENT) {
            let values = (0..chunk.len())
                .map(|i| format!("({})", placeholders(1 + 5 * i, 5)))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "UPDATE ledger_accounts SET debits_pending = v.column2, \
                 debits_posted = v.column3, credits_pending = v.column4, \
                 credits_posted = v.column5 \
                 FROM (VALUES {values}) AS v WHERE ledger_accounts.id = v.column1"
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (id, b) in chunk {
                q = q
                    .bind(id.as_str())
                    .bind(b.debits_pending)
                    .bind(b.debits_posted)
                    .bind(b.credits_pending)
                    .bind(b.credits_posted);
            }
            let done = q.execute(&mut *conn).await?;
            if done.rows_affected() != chunk.len() as u64 {
                return Err(StoreError::corrupt(
                    "ledger_accounts",
                    "balance update missed an account",
                ));
            }
        }
        Ok(())
    }
}
