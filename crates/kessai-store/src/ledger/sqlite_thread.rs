//! The SQLite ledger writer: one OS thread with its own connection.
//!
//! Every statement through sqlx's SQLite driver is a message to sqlx's
//! worker thread and an async wake-up back, about ten per batch, and the
//! driver cannot keep a statement prepared across varying row counts. With
//! one SQLite writer per database there is nothing to gain from async here,
//! so the writer runs the whole batch — reads, ledger rules, inserts,
//! balances, commit — on a thread of its own through `rusqlite` (the same
//! SQLite library as sqlx: one `libsqlite3-sys`), with each statement
//! prepared once and stepped per row. The async side hands it one batch
//! and gets one answer back.
//!
//! The transaction is the same as the PostgreSQL one in spirit
//! (`ledger.rs` module docs): `BEGIN IMMEDIATE` takes the database write
//! lock before the first read, so no other connection, in any process, can
//! commit between the batch's reads and its commit; the unique index on
//! transfer ids and the partial unique index on resolutions stay the last
//! word. The connection is opened on the first batch and after any failed
//! one, with the same settings as the pool's.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use kessai_ids::{AccountId, TransferId};
use kessai_ledger::{Account, Balances, TransferRecord, TransferRequest};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::oneshot;

use super::sql::{
    AccountRow, EvidenceRow, LegRow, TRANSFER_COLUMNS, TransferRow, account_from_row, assemble, ms,
};
use super::{
    Answer, BatchAnswers, Decided, MAX_CONFLICT_RETRIES, WriterMemo, accounts_needed,
    batch_transfer_ids, to_answer,
};
use crate::StoreError;

/// What the SQLite writer thread needs to open its connection.
#[derive(Debug, Clone)]
pub(crate) struct SqliteWriterConfig {
    /// The database file (already created and migrated by the pool).
    pub path: PathBuf,
    /// How long `BEGIN IMMEDIATE` waits for another writer.
    pub busy_timeout: Duration,
    /// [`crate::DbConfig::ledger_history_chunk`].
    pub history_chunk: i64,
}

/// A message to the writer thread.
pub(crate) enum Command {
    /// Run these requests as one batch and answer each, in order.
    Batch {
        reqs: Vec<(TransferRequest, u64)>,
        reply: oneshot::Sender<Vec<Answer>>,
    },
    /// Close the connection and end the thread; acknowledged once closed.
    Stop(oneshot::Sender<()>),
}

/// Starts the thread; it ends on [`Command::Stop`] or when every sender is
/// gone.
pub(crate) fn spawn(config: SqliteWriterConfig) -> std::sync::mpsc::Sender<Command> {
    let (tx, rx) = std::sync::mpsc::channel::<Command>();
    let spawned = std::thread::Builder::new()
        .name("kessai-ledger-sqlite".into())
        .spawn(move || {
            let mut writer = Writer {
                memo: WriterMemo::new(config.history_chunk),
                conn: None,
                config,
            };
            while let Ok(cmd) = rx.recv() {
                match cmd {
                    Command::Batch { reqs, reply } => {
                        let reqs: Vec<(&TransferRequest, u64)> =
                            reqs.iter().map(|(r, now)| (r, *now)).collect();
                        // The caller may have gone away; its answer is then unused.
                        let _ = reply.send(writer.run_jobs(&reqs));
                    }
                    Command::Stop(ack) => {
                        drop(writer.conn.take());
                        let _ = ack.send(());
                        return;
                    }
                }
            }
        });
    if let Err(e) = spawned {
        // Without a thread every batch is answered `WriterStopped` (the
        // receiver is gone with the closure).
        tracing::error!(error = %e, "cannot start the SQLite ledger writer thread");
    }
    tx
}

struct Writer {
    config: SqliteWriterConfig,
    conn: Option<Connection>,
    memo: WriterMemo,
}

impl Writer {
    /// Runs a batch, retrying conflicts and splitting on other errors (the
    /// same policy as the PostgreSQL writers').
    fn run_jobs(&mut self, reqs: &[(&TransferRequest, u64)]) -> Vec<Answer> {
        let mut attempt = 0;
        loop {
            match self.run_batch_or_forget(reqs) {
                Ok(answers) => return answers.into_iter().map(to_answer).collect(),
                Err(e) if conflict(&e) && attempt < MAX_CONFLICT_RETRIES => {
                    attempt += 1;
                    tracing::debug!(attempt, error = %e, "ledger batch conflict; re-running");
                }
                Err(e) if reqs.len() > 1 => {
                    tracing::warn!(error = %e, n = reqs.len(), "ledger batch failed; splitting");
                    return reqs.iter().map(|one| self.run_single(*one)).collect();
                }
                Err(e) => return vec![Err(e)],
            }
        }
    }

    fn run_single(&mut self, req: (&TransferRequest, u64)) -> Answer {
        let mut attempt = 0;
        loop {
            match self.run_batch_or_forget(&[req]) {
                Ok(mut a) => {
                    return to_answer(a.pop().unwrap_or(Err(kessai_ledger::LedgerError::Overflow)));
                }
                Err(e) if conflict(&e) && attempt < MAX_CONFLICT_RETRIES => attempt += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// [`run_batch`]; after any failure the memo and the connection are
    /// dropped: nothing remembered is trusted, and the next batch opens a
    /// fresh connection.
    fn run_batch_or_forget(
        &mut self,
        reqs: &[(&TransferRequest, u64)],
    ) -> Result<BatchAnswers, StoreError> {
        if self.conn.is_none() {
            self.conn = Some(open(&self.config)?);
        }
        let conn = self.conn.as_mut().expect("opened above");
        let out = run_batch(conn, &mut self.memo, reqs);
        if out.is_err() {
            self.memo.reset();
            self.conn = None;
        }
        out
    }
}

/// Busy / locked (another writer held the lock past the busy timeout) or a
/// unique-key violation: re-run the batch, which then sees the other
/// writer's rows.
fn conflict(e: &StoreError) -> bool {
    let StoreError::Sqlite(rusqlite::Error::SqliteFailure(f, _)) = e else {
        return false;
    };
    matches!(
        f.code,
        rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
    ) || matches!(
        f.extended_code,
        rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
    )
}

/// Opens the writer's connection with the pool's settings (`db.rs`).
fn open(config: &SqliteWriterConfig) -> Result<Connection, StoreError> {
    let conn = Connection::open(&config.path)?;
    conn.busy_timeout(config.busy_timeout)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; \
         PRAGMA synchronous = FULL; \
         PRAGMA foreign_keys = ON; \
         PRAGMA temp_store = memory; \
         PRAGMA cache_size = -65536; \
         PRAGMA mmap_size = 268435456; \
         PRAGMA wal_autocheckpoint = 16384;",
    )?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

const ACCOUNT_COLUMNS: &str = "id, kind, currency, limit_kind, limit_minor, \
    debits_pending, debits_posted, credits_pending, credits_posted";

fn transfer_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TransferRow> {
    Ok(TransferRow {
        seq: r.get(0)?,
        id: r.get(1)?,
        kind: r.get(2)?,
        currency: r.get(3)?,
        code: r.get(4)?,
        expires_at_ms: r.get(5)?,
        pending_id: r.get(6)?,
        reference: r.get(7)?,
        digest: r.get(8)?,
        created_at_ms: r.get(9)?,
    })
}

/// One transaction for the whole batch.
fn run_batch(
    conn: &mut Connection,
    memo: &mut WriterMemo,
    reqs: &[(&TransferRequest, u64)],
) -> Result<BatchAnswers, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // 1. transfers: the batch's ids and the pendings it resolves, plus any
    //    resolutions of those pendings.
    let (ids, pending_ids) = batch_transfer_ids(reqs);
    let loaded = transfers_by_ids(&tx, &ids, &pending_ids)?;
    // 2. accounts, in id order: from the memo while no other connection
    //    has committed (`data_version` unchanged), the rest read.
    let acc = accounts_needed(reqs, &loaded);
    let version: i64 = tx.query_row("PRAGMA data_version", [], |r| r.get(0))?;
    memo.check(version);
    {
        let mut st = tx.prepare_cached(&format!(
            "SELECT {ACCOUNT_COLUMNS} FROM ledger_accounts WHERE id = ?1"
        ))?;
        for id in &acc {
            if memo.accounts.contains_key(id) {
                continue;
            }
            let row = st
                .query_row([id.as_str()], |r| {
                    Ok(AccountRow {
                        id: r.get(0)?,
                        kind: r.get(1)?,
                        currency: r.get(2)?,
                        limit_kind: r.get(3)?,
                        limit_minor: r.get(4)?,
                        balances: [r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?],
                    })
                })
                .optional()?;
            if let Some(row) = row {
                let a = account_from_row(row)?;
                memo.accounts.insert(a.id.clone(), a);
            }
        }
    }
    let accounts: Vec<Account> = acc
        .iter()
        .filter_map(|id| memo.accounts.get(id).cloned())
        .collect();
    // 3. decide in order.
    let mut decided = Decided::run(accounts, loaded, reqs)?;
    // 4. write.
    let new_seqs = insert_transfers(&tx, &decided.new_records())?;
    let upto = match new_seqs.values().max() {
        Some(&last) => extend_history(&tx, memo, last)?,
        None => None,
    };
    decided.seqs.extend(new_seqs);
    let balances = decided.balances();
    update_balances(&tx, &balances)?;
    tx.commit()?;
    memo.committed(&balances, upto);
    Ok(decided.answers())
}

/// Transfers whose id is in `ids`, and the resolutions of `pending_ids`,
/// with their legs and evidence; a statement per id, prepared once.
fn transfers_by_ids(
    tx: &rusqlite::Transaction<'_>,
    ids: &BTreeSet<TransferId>,
    pending_ids: &BTreeSet<TransferId>,
) -> Result<Vec<(i64, TransferRecord)>, StoreError> {
    let mut rows = Vec::new();
    let mut seen = HashSet::new();
    for (column, list) in [("id", ids), ("pending_id", pending_ids)] {
        if list.is_empty() {
            continue;
        }
        // `IS NOT NULL` lets SQLite use the partial unique index.
        let mut st = tx.prepare_cached(&format!(
            "SELECT {TRANSFER_COLUMNS} FROM ledger_transfers \
             WHERE {column} IS NOT NULL AND {column} = ?1"
        ))?;
        for id in list {
            if let Some(row) = st
                .query_row([id.as_bytes().as_slice()], transfer_row)
                .optional()?
                && seen.insert(row.seq)
            {
                rows.push(row);
            }
        }
    }
    let mut legs = Vec::new();
    let mut evidence = Vec::new();
    if !rows.is_empty() {
        let mut leg_st = tx.prepare_cached(
            "SELECT transfer_seq, leg_index, account_id, side, amount_minor \
             FROM ledger_legs WHERE transfer_seq = ?1",
        )?;
        let mut ev_st = tx.prepare_cached(
            "SELECT transfer_seq, ev_index, kind, digest FROM ledger_evidence \
             WHERE transfer_seq = ?1",
        )?;
        for row in &rows {
            for l in leg_st.query_map([row.seq], |r| {
                Ok(LegRow {
                    transfer_seq: r.get(0)?,
                    leg_index: r.get(1)?,
                    account_id: r.get(2)?,
                    side: r.get(3)?,
                    amount_minor: r.get(4)?,
                })
            })? {
                legs.push(l?);
            }
            for e in ev_st.query_map([row.seq], |r| {
                Ok(EvidenceRow {
                    transfer_seq: r.get(0)?,
                    ev_index: r.get(1)?,
                    kind: r.get(2)?,
                    digest: r.get(3)?,
                })
            })? {
                evidence.push(e?);
            }
        }
    }
    assemble(rows, legs, evidence)
}

/// Appends transfers with their legs and evidence; returns each new
/// transfer's sequence number (its rowid).
fn insert_transfers(
    tx: &rusqlite::Transaction<'_>,
    records: &[&TransferRecord],
) -> Result<HashMap<TransferId, i64>, StoreError> {
    let mut seqs = HashMap::with_capacity(records.len());
    let mut t_st = tx.prepare_cached(
        "INSERT INTO ledger_transfers (id, kind, currency, code, expires_at_ms, pending_id, \
         reference, digest, created_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    let mut l_st = tx.prepare_cached(
        "INSERT INTO ledger_legs (transfer_seq, leg_index, account_id, side, amount_minor) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    let mut e_st = tx.prepare_cached(
        "INSERT INTO ledger_evidence (transfer_seq, ev_index, kind, digest) \
         VALUES (?1, ?2, ?3, ?4)",
    )?;
    for t in records {
        let seq = t_st.insert(params![
            t.id.as_bytes().as_slice(),
            t.kind.code(),
            i64::from(t.currency.numeric()),
            i64::from(t.code),
            t.kind.expires_at_ms().map(ms).transpose()?,
            t.kind.pending_id().map(|p| p.0.to_vec()),
            t.reference.as_str(),
            t.digest.as_slice(),
            ms(t.created_at_ms)?,
        ])?;
        for (i, leg) in t.legs.iter().enumerate() {
            l_st.execute(params![
                seq,
                i as i64,
                leg.account.as_str(),
                leg.side.code(),
                leg.amount_minor
            ])?;
        }
        for (i, ev) in t.evidence.iter().enumerate() {
            e_st.execute(params![
                seq,
                i as i64,
                ev.kind.as_str(),
                ev.digest.as_slice()
            ])?;
        }
        seqs.insert(t.id, seq);
    }
    Ok(seqs)
}

/// Moves the legs of transfers after the history mark into
/// `ledger_account_history` once at least `memo.history_chunk` transfers
/// have gathered (`last`: the batch's highest sequence number). One sorted
/// insert then touches each account's history page once per chunk instead
/// of once per batch. Returns the new mark if it moved, or the mark read.
fn extend_history(
    tx: &rusqlite::Transaction<'_>,
    memo: &WriterMemo,
    last: i64,
) -> Result<Option<i64>, StoreError> {
    if let Some(upto) = memo.history_upto
        && last - upto < memo.history_chunk
    {
        return Ok(None);
    }
    let upto: i64 = tx.query_row(
        "SELECT upto FROM ledger_history_mark WHERE id = 1",
        [],
        |r| r.get(0),
    )?;
    if last - upto < memo.history_chunk {
        return Ok(Some(upto));
    }
    tx.execute(
        "INSERT OR IGNORE INTO ledger_account_history (account_id, transfer_seq) \
         SELECT account_id, transfer_seq FROM ledger_legs WHERE transfer_seq > ?1 \
         ORDER BY account_id, transfer_seq",
        [upto],
    )?;
    tx.execute(
        "UPDATE ledger_history_mark SET upto = ?1 WHERE id = 1",
        [last],
    )?;
    Ok(Some(last))
}

/// Writes accounts' new balances, one prepared `UPDATE` per account.
fn update_balances(
    tx: &rusqlite::Transaction<'_>,
    accounts: &[(&AccountId, Balances)],
) -> Result<(), StoreError> {
    let mut st = tx.prepare_cached(
        "UPDATE ledger_accounts SET debits_pending = ?2, debits_posted = ?3, \
         credits_pending = ?4, credits_posted = ?5 WHERE id = ?1",
    )?;
    for (id, b) in accounts {
        let n = st.execute(params![
            id.as_str(),
            b.debits_pending,
            b.debits_posted,
            b.credits_pending,
            b.credits_posted
        ])?;
        if n != 1 {
            return Err(StoreError::corrupt(
                "ledger_accounts",
                "balance update missed an account",
            ));
        }
    }
    Ok(())
}
