//! The durable ledger: accounts and transfers in the database, decided by
//! the pure rules of [`kessai_ledger`], written with group commit.
//!
//! # Shape
//!
//! [`Ledger`] is a cheap handle obtained from [`Db::ledger`]. It is one
//! concrete type for both backends (enum dispatch over [`DbPool`] inside,
//! SQL generated per backend from one source in `sql.rs`) rather than a
//! trait with two implementations: the two backends share every rule and
//! almost every statement, and callers never need to be generic.
//!
//! # Group commit
//!
//! [`Ledger::submit`] hands the request to a writer task over a channel
//! and waits for its answer. A writer takes everything that is waiting (up
//! to [`MAX_BATCH`] requests), and in **one** database transaction:
//!
//! 1. loads the batch's transfers (its ids, the pendings it resolves and
//!    their existing resolutions) and then its accounts **in id order**,
//!    with `SELECT ... FOR UPDATE` on PostgreSQL (on SQLite the
//!    `BEGIN IMMEDIATE` write lock excludes every other writer, including
//!    other processes);
//! 2. runs every request through [`kessai_ledger::MemLedger::submit`] over
//!    that working set, in arrival order, so later requests see earlier
//!    ones (two requests with the same id in one batch: the second is a
//!    replay);
//! 3. appends the new transfers and writes the touched accounts' balances;
//! 4. commits once, durably, and answers every caller.
//!
//! Refusals are decided in memory before anything is written, so a
//! refused request never makes a statement fail and never aborts its batch
//! (this replaces a SAVEPOINT per request, with no per-request round
//! trips). If the database itself fails the batch — a serialization
//! failure or deadlock, or a unique-key violation because another process
//! recorded the same transfer id or a resolution of the same pending
//! first — the whole batch is rolled back and re-run from step 1; on the
//! re-run the other process's rows are visible and the requests get their
//! correct answers (replay, `PendingAlreadyPosted`, ...). Any other error
//! splits the batch into single-request transactions so only the request
//! that triggers it fails.
//!
//! Correctness therefore rests on the database, not on process memory:
//! primary and unique keys make each transfer id and each pending's
//! resolution exist at most once; row locks taken in a global order make
//! limit checks see the latest balances.
//!
//! PostgreSQL runs [`POSTGRES_WRITERS`] writer tasks, each taking a pooled
//! connection per batch. SQLite runs one writer task per `Db`, which
//! gathers the batch and hands it whole to one OS thread with its own
//! `rusqlite` connection (`sqlite_thread`): the batch's statements run
//! there, prepared once, with no async hand-off per statement, and the
//! connection's page cache stays warm between batches. [`Db::close`]
//! stops that thread and closes its connection.
//!
//! # What the SQLite writer remembers
//!
//! Between batches the SQLite writer thread keeps the accounts it has read
//! and committed ([`WriterMemo`]). It uses them only while `PRAGMA
//! data_version` on its connection is unchanged, which SQLite guarantees
//! means no other connection — in this process or another — has committed
//! anything since; otherwise it reads them again inside the batch's
//! `BEGIN IMMEDIATE`. After any failed batch it forgets everything and
//! opens a new connection for the next one. The same writer moves legs into the
//! account history in chunks of [`crate::DbConfig::ledger_history_chunk`]
//! transfers (see `migrations/sqlite/0010_ledger_legs_by_seq.sql`).

pub(crate) mod sql;
mod sqlite_thread;

use std::collections::BTreeSet;
use std::sync::Arc;

use kessai_ids::{AccountId, TransferId};
use kessai_ledger::{
    Account, Applied, LedgerError, MemLedger, TransferKind, TransferRecord, TransferRequest, codes,
};
use kessai_money::Currency;
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::StoreError;
use crate::db::{Db, DbPool, is_retryable, is_unique_violation};

/// Default [`crate::DbConfig::ledger_history_chunk`]: transfers between two
/// account-history merges on SQLite. A history query scans at most about
/// this many transfers' legs past the mark.
pub const DEFAULT_HISTORY_CHUNK: i64 = 8192;
/// Most requests one writer commits together.
pub const MAX_BATCH: usize = 512;
/// Writer tasks per `Db` on PostgreSQL (SQLite has one writer). Two
/// overlap one batch's commit with the next batch's work; more mostly add
/// row-lock waits between writers on shared accounts. Measured on the
/// 2-core machine (`examples/ledger_bench`, 8-s runs, 1,000 accounts,
/// 256 tasks, four runs each): 2 writers 6.3k postings/s on average, 4
/// writers 5.2k; with 1,024 tasks 8.0k against 6.1k.
pub const POSTGRES_WRITERS: usize = 2;
/// How many times a writer lets ready submitters run before it starts a
/// batch, while each round brings new requests.
const GATHER_YIELDS: usize = 8;
/// How often a batch is re-run after a conflict before it is split.
pub(crate) const MAX_CONFLICT_RETRIES: usize = 20;
/// Page size when listing.
const PAGE: i64 = 1000;

/// The answer to a submitted transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferResult {
    /// The recorded transfer (for a replay: the original one).
    pub record: TransferRecord,
    /// Commit-order sequence number of the transfer.
    pub seq: i64,
    /// True if this id had already been recorded with the same content and
    /// nothing was changed by this call.
    pub replayed: bool,
}

/// What [`Ledger::expire_due`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExpirySweep {
    /// Pending transfers this call expired.
    pub expired: Vec<TransferId>,
    /// Pending transfers found due but resolved by someone else in the
    /// meantime (posted, voided, or expired by another process).
    pub already_resolved: Vec<TransferId>,
}

/// One request waiting for a writer.
struct Job {
    req: TransferRequest,
    now_ms: u64,
    reply: oneshot::Sender<Result<Result<TransferResult, LedgerError>, StoreError>>,
}

/// Handle to the group-commit writer task(s) of one [`Db`].
#[derive(Debug)]
pub(crate) struct WriterHandle {
    tx: mpsc::Sender<Job>,
    /// SQLite: the writer thread (`sqlite_thread`).
    sqlite: Option<std::sync::Mutex<std::sync::mpsc::Sender<sqlite_thread::Command>>>,
}

impl WriterHandle {
    /// Stops the SQLite writer thread and waits until its connection is
    /// closed (for [`Db::close`]); later submissions get
    /// [`StoreError::WriterStopped`].
    pub(crate) async fn stop(&self) {
        let Some(thread) = &self.sqlite else {
            return;
        };
        let (ack, closed) = oneshot::channel();
        let sent = thread
            .lock()
            .map(|t| t.send(sqlite_thread::Command::Stop(ack)).is_ok())
            .unwrap_or(false);
        if sent {
            let _ = closed.await;
        }
    }
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("id", &self.req.id).finish()
    }
}

/// The ledger stored in a [`Db`]. Obtain it with [`Db::ledger`].
#[derive(Debug, Clone)]
pub struct Ledger {
    db: Db,
}

impl Db {
    /// The ledger in this database.
    pub fn ledger(&self) -> Ledger {
        Ledger { db: self.clone() }
    }
}

/// A batch's decisions, in request order: sequence number (0 until
/// written), record, replayed.
pub(crate) type BatchAnswers = Vec<Result<(i64, TransferRecord, bool), LedgerError>>;

impl Ledger {
    /// Creates an account with zero balances at `now_ms`. `Ok(Ok(true))`:
    /// created; `Ok(Ok(false))`: it already existed with the same kind,
    /// currency and limit; `Ok(Err(AccountExistsWithDifferentContent))`
    /// otherwise.
    pub async fn create_account(
        &self,
        account: &Account,
        now_ms: u64,
    ) -> Result<Result<bool, LedgerError>, StoreError> {
        if let Err(e) = account.validate_new() {
            return Ok(Err(e));
        }
        let now = sql::ms(now_ms)?;
        let created = match self.db.pool() {
            DbPool::Sqlite(p) => {
                let mut c = p.acquire().await?;
                sql::sqlite::insert_account(&mut c, account, now).await?
            }
            DbPool::Postgres(p) => {
                let mut c = p.acquire().await?;
                sql::postgres::insert_account(&mut c, account, now).await?
            }
        };
        if created {
            return Ok(Ok(true));
        }
        match self.account(&account.id).await? {
            Some(existing) if existing.same_definition(account) => Ok(Ok(false)),
            _ => Ok(Err(LedgerError::AccountExistsWithDifferentContent)),
        }
    }

    /// An account with its current balances.
    pub async fn account(&self, id: &AccountId) -> Result<Option<Account>, StoreError> {
        let ids = [id];
        let mut v = match self.db.pool() {
            DbPool::Sqlite(p) => {
                sql::sqlite::accounts_by_ids(&mut *p.acquire().await?, &ids, false).await?
            }
            DbPool::Postgres(p) => {
                sql::postgres::accounts_by_ids(&mut *p.acquire().await?, &ids, false).await?
            }
        };
        Ok(v.pop())
    }

    /// All accounts, by id.
    pub async fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        match self.db.pool() {
            DbPool::Sqlite(p) => sql::sqlite::all_accounts(&mut *p.acquire().await?).await,
            DbPool::Postgres(p) => sql::postgres::all_accounts(&mut *p.acquire().await?).await,
        }
    }

    /// A recorded transfer and its sequence number.
    pub async fn transfer(
        &self,
        id: &TransferId,
    ) -> Result<Option<(i64, TransferRecord)>, StoreError> {
        let ids = [*id];
        let v = match self.db.pool() {
            DbPool::Sqlite(p) => {
                sql::sqlite::transfers_by_ids(&mut *p.acquire().await?, &ids, &[]).await?
            }
            DbPool::Postgres(p) => {
                sql::postgres::transfers_by_ids(&mut *p.acquire().await?, &ids, &[]).await?
            }
        };
        Ok(v.into_iter().next())
    }

    /// Up to `limit` transfers with a leg on `account` and a sequence number
    /// greater than `after_seq` (0 for the start), in commit order.
    pub async fn transfers_for_account(
        &self,
        account: &AccountId,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<(i64, TransferRecord)>, StoreError> {
        let limit = i64::from(limit);
        match self.db.pool() {
            DbPool::Sqlite(p) => {
                sql::sqlite::transfers_for_account(
                    &mut *p.acquire().await?,
                    account,
                    after_seq,
                    limit,
                )
                .await
            }
            DbPool::Postgres(p) => {
                sql::postgres::transfers_for_account(
                    &mut *p.acquire().await?,
                    account,
                    after_seq,
                    limit,
                )
                .await
            }
        }
    }

    /// Up to `limit` transfers with a sequence number greater than
    /// `after_seq`, in commit order (for the auditor and exports).
    pub async fn transfers_page(
        &self,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<(i64, TransferRecord)>, StoreError> {
        let limit = i64::from(limit);
        match self.db.pool() {
            DbPool::Sqlite(p) => {
                sql::sqlite::transfers_page(&mut *p.acquire().await?, after_seq, limit).await
            }
            DbPool::Postgres(p) => {
                sql::postgres::transfers_page(&mut *p.acquire().await?, after_seq, limit).await
            }
        }
    }

    /// Every transfer in commit order.
    pub async fn all_transfers(&self) -> Result<Vec<(i64, TransferRecord)>, StoreError> {
        let mut out = Vec::new();
        let mut after = 0;
        loop {
            let page = self.transfers_page(after, PAGE as u32).await?;
            let Some((last, _)) = page.last() else {
                return Ok(out);
            };
            after = *last;
            out.extend(page);
        }
    }

    /// Records `req` at `now_ms` (idempotent by transfer id).
    ///
    /// The outer `Result` is the infrastructure: on `Err` the outcome is
    /// unknown and the caller may retry the same request safely. The inner
    /// one is the ledger's decision: `Ok` with the record (`replayed` if
    /// it existed already with the same content), or a refusal.
    pub async fn submit(
        &self,
        req: TransferRequest,
        now_ms: u64,
    ) -> Result<Result<TransferResult, LedgerError>, StoreError> {
        let writer = self
            .db
            .ledger_writer_cell()
            .get_or_init(|| start_writers(&self.db));
        let (reply, answer) = oneshot::channel();
        writer
            .tx
            .send(Job { req, now_ms, reply })
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        answer.await.map_err(|_| StoreError::WriterStopped)?
    }

    /// Expires up to `limit` unresolved pending transfers whose expiry is
    /// at or before `now_ms`. Each expiry is a transfer with an id derived
    /// from the pending id, so concurrent sweeps (other processes) cannot
    /// expire a hold twice.
    pub async fn expire_due(&self, now_ms: u64, limit: u32) -> Result<ExpirySweep, StoreError> {
        let now = sql::ms(now_ms)?;
        let due = match self.db.pool() {
            DbPool::Sqlite(p) => {
                sql::sqlite::due_pendings(&mut *p.acquire().await?, now, i64::from(limit)).await?
            }
            DbPool::Postgres(p) => {
                sql::postgres::due_pendings(&mut *p.acquire().await?, now, i64::from(limit)).await?
            }
        };
        let mut waiting = Vec::with_capacity(due.len());
        for (pending_id, currency) in due {
            let currency = u16::try_from(currency)
                .ok()
                .and_then(|c| Currency::from_numeric(c).ok())
                .ok_or_else(|| StoreError::corrupt("ledger_transfers", "unknown currency"))?;
            let req = TransferRequest::resolution(
                expiry_id(&pending_id),
                currency,
                codes::HOLD_EXPIRY,
                TransferKind::ExpirePending { pending_id },
            );
            let this = self.clone();
            waiting.push((
                pending_id,
                tokio::spawn(async move { this.submit(req, now_ms).await }),
            ));
        }
        let mut sweep = ExpirySweep::default();
        for (pending_id, handle) in waiting {
            match handle.await.map_err(|_| StoreError::WriterStopped)?? {
                Ok(r) if !r.replayed => sweep.expired.push(pending_id),
                Ok(_)
                | Err(
                    LedgerError::PendingAlreadyPosted
                    | LedgerError::PendingAlreadyVoided
                    | LedgerError::PendingAlreadyExpired,
                ) => sweep.already_resolved.push(pending_id),
                Err(e) => {
                    return Err(StoreError::corrupt(
                        "ledger_transfers",
                        format!("expiry of {pending_id} refused: {}", e.code()),
                    ));
                }
            }
        }
        Ok(sweep)
    }
}

/// The id of the expiry of `pending_id` (the same in every process).
pub fn expiry_id(pending_id: &TransferId) -> TransferId {
    TransferId::derive("kessai/ledger/expire", &[pending_id.as_bytes()])
}

fn start_writers(db: &Db) -> WriterHandle {
    let (tx, rx) = mpsc::channel::<Job>(MAX_BATCH * 4);
    let rx = Arc::new(Mutex::new(rx));
    let (target, writers) = match (db.pool(), db.sqlite_path()) {
        (DbPool::Sqlite(_), Some(path)) => (
            Target::Sqlite(sqlite_thread::spawn(sqlite_thread::SqliteWriterConfig {
                path: path.to_path_buf(),
                busy_timeout: db.busy_timeout(),
                history_chunk: db.ledger_history_chunk(),
            })),
            1,
        ),
        (DbPool::Sqlite(_), None) => unreachable!("an SQLite Db always has its file path"),
        (DbPool::Postgres(p), _) => (Target::Postgres(p.clone()), POSTGRES_WRITERS),
    };
    let sqlite = match &target {
        Target::Sqlite(t) => Some(std::sync::Mutex::new(t.clone())),
        Target::Postgres(_) => None,
    };
    for _ in 0..writers {
        let rx = rx.clone();
        let target = target.clone();
        tokio::spawn(async move { writer_loop(target, rx).await });
    }
    WriterHandle { tx, sqlite }
}

/// Where a writer runs its batches: the SQLite writer thread (one per
/// `Db`; it keeps its connection and page cache between batches), or a
/// pooled PostgreSQL connection per batch.
#[derive(Clone)]
enum Target {
    Sqlite(std::sync::mpsc::Sender<sqlite_thread::Command>),
    Postgres(sqlx::PgPool),
}

/// What the SQLite writer remembers between its batches. The database
/// stays the authority: the accounts are used only while `PRAGMA
/// data_version` shows that no other connection (in this process or
/// another) has committed since they were read, and the history mark is
/// only a hint that is re-read inside the transaction that acts on it.
#[derive(Debug, Default)]
pub(crate) struct WriterMemo {
    /// `data_version` of the writer's connection when `accounts` was valid.
    pub(crate) version: Option<i64>,
    /// Accounts as committed, by id.
    pub(crate) accounts: std::collections::HashMap<AccountId, Account>,
    /// Highest transfer sequence number known to be in the account
    /// history (`ledger_history_mark.upto`).
    pub(crate) history_upto: Option<i64>,
    /// [`crate::DbConfig::ledger_history_chunk`].
    pub(crate) history_chunk: i64,
}

impl WriterMemo {
    /// Most accounts remembered; past this the memo starts over.
    pub(crate) const MAX_ACCOUNTS: usize = 100_000;

    fn new(history_chunk: i64) -> Self {
        Self {
            history_chunk,
            ..Self::default()
        }
    }

    /// Forgets everything (after any failed batch).
    fn reset(&mut self) {
        *self = Self::new(self.history_chunk);
    }

    /// Drops the remembered accounts unless `data_version` (read inside
    /// the batch's transaction) is the one they were valid at: another
    /// connection has committed since.
    pub(crate) fn check(&mut self, data_version: i64) {
        if self.version != Some(data_version) || self.accounts.len() > Self::MAX_ACCOUNTS {
            self.accounts.clear();
            self.history_upto = None;
            self.version = Some(data_version);
        }
    }

    /// Records a committed batch's balances and history mark.
    fn committed(&mut self, balances: &[(&AccountId, kessai_ledger::Balances)], upto: Option<i64>) {
        for (id, b) in balances {
            if let Some(a) = self.accounts.get_mut(*id) {
                a.balances = *b;
            }
        }
        if upto.is_some() {
            self.history_upto = upto;
        }
    }
}

async fn writer_loop(target: Target, rx: Arc<Mutex<mpsc::Receiver<Job>>>) {
    loop {
        let mut jobs = Vec::new();
        {
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else {
                return;
            };
            jobs.push(first);
            // Take what is waiting; while that keeps growing, let the
            // submitters that are ready run once more (no timer: a yield
            // only lets runnable tasks in) so that callers just answered by
            // the previous commit can join this one.
            let mut yields = 0;
            loop {
                let before = jobs.len();
                while jobs.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(j) => jobs.push(j),
                        Err(_) => break,
                    }
                }
                if jobs.len() == MAX_BATCH
                    || (jobs.len() == before && yields > 0)
                    || yields == GATHER_YIELDS
                {
                    break;
                }
                yields += 1;
                tokio::task::yield_now().await;
            }
        }
        let (reqs, replies): (Vec<_>, Vec<_>) = jobs
            .into_iter()
            .map(|j| ((j.req, j.now_ms), j.reply))
            .unzip();
        let answers = match &target {
            Target::Sqlite(thread) => {
                let (reply, answers) = oneshot::channel();
                let n = reqs.len();
                match thread.send(sqlite_thread::Command::Batch { reqs, reply }) {
                    Ok(()) => answers.await.unwrap_or_else(|_| stopped(n)),
                    Err(_) => stopped(n),
                }
            }
            Target::Postgres(p) => {
                let reqs: Vec<(&TransferRequest, u64)> =
                    reqs.iter().map(|(r, now)| (r, *now)).collect();
                run_jobs(p, &reqs).await
            }
        };
        for (reply, answer) in replies.into_iter().zip(answers) {
            // The caller may have gone away; its answer is then unused.
            let _ = reply.send(answer);
        }
    }
}

/// `n` answers for a batch the SQLite writer thread did not take (it was
/// stopped by [`Db::close`]).
fn stopped(n: usize) -> Vec<Answer> {
    (0..n).map(|_| Err(StoreError::WriterStopped)).collect()
}

pub(crate) type Answer = Result<Result<TransferResult, LedgerError>, StoreError>;

/// Runs a batch on PostgreSQL, retrying conflicts and splitting on other
/// errors (the SQLite thread has the same policy in `sqlite_thread`).
async fn run_jobs(pool: &sqlx::PgPool, reqs: &[(&TransferRequest, u64)]) -> Vec<Answer> {
    let mut attempt = 0;
    loop {
        match run_batch(pool, reqs).await {
            Ok(Some(answers)) => return answers.into_iter().map(to_answer).collect(),
            Ok(None) if attempt < MAX_CONFLICT_RETRIES => attempt += 1,
            Err(StoreError::Database(e))
                if (is_retryable(&e) || is_unique_violation(&e))
                    && attempt < MAX_CONFLICT_RETRIES =>
            {
                attempt += 1;
                tracing::debug!(attempt, error = %e, "ledger batch conflict; re-running");
                tokio::task::yield_now().await;
            }
            other if reqs.len() > 1 => {
                if let Err(e) = &other {
                    tracing::warn!(error = %e, n = reqs.len(), "ledger batch failed; splitting");
                }
                let mut out = Vec::with_capacity(reqs.len());
                for one in reqs {
                    out.push(run_single(pool, *one).await);
                }
                return out;
            }
            Err(e) => return vec![Err(e)],
            Ok(None) => return vec![Err(StoreError::Contention)],
        }
    }
}

async fn run_single(pool: &sqlx::PgPool, req: (&TransferRequest, u64)) -> Answer {
    let mut attempt = 0;
    loop {
        match run_batch(pool, &[req]).await {
            Ok(Some(mut a)) => return to_answer(a.pop().unwrap_or(Err(LedgerError::Overflow))),
            Ok(None) if attempt < MAX_CONFLICT_RETRIES => attempt += 1,
            Ok(None) => return Err(StoreError::Contention),
            Err(StoreError::Database(e))
                if (is_retryable(&e) || is_unique_violation(&e))
                    && attempt < MAX_CONFLICT_RETRIES =>
            {
                attempt += 1;
                tokio::task::yield_now().await;
            }
            Err(e) => return Err(e),
        }
    }
}

pub(crate) fn to_answer(a: Result<(i64, TransferRecord, bool), LedgerError>) -> Answer {
    Ok(a.map(|(seq, record, replayed)| TransferResult {
        record,
        seq,
        replayed,
    }))
}

/// The transfer ids a batch must read: its own ids and the pendings it
/// resolves (all of them), and the pendings alone (whose resolutions are
/// read too), each sorted.
pub(crate) fn batch_transfer_ids(
    reqs: &[(&TransferRequest, u64)],
) -> (BTreeSet<TransferId>, BTreeSet<TransferId>) {
    let mut ids = BTreeSet::new();
    let mut pending_ids = BTreeSet::new();
    for (r, _) in reqs {
        ids.insert(r.id);
        if let Some(p) = r.kind.pending_id() {
            ids.insert(p);
            pending_ids.insert(p);
        }
    }
    (ids, pending_ids)
}

/// Accounts a batch touches: its legs and the legs of the pendings it
/// resolves.
pub(crate) fn accounts_needed(
    reqs: &[(&TransferRequest, u64)],
    loaded: &[(i64, TransferRecord)],
) -> BTreeSet<AccountId> {
    let mut acc: BTreeSet<AccountId> = BTreeSet::new();
    for (r, _) in reqs {
        acc.extend(r.legs.iter().map(|l| l.account.clone()));
    }
    for (_, t) in loaded {
        if matches!(t.kind, TransferKind::Pending { .. }) {
            acc.extend(t.legs.iter().map(|l| l.account.clone()));
        }
    }
    acc
}

/// A batch decided by the ledger rules over its working set (step 3 of the
/// module docs), before anything is written.
pub(crate) struct Decided {
    mem: MemLedger,
    /// Sequence numbers of the loaded transfers; the writer adds the new
    /// ones once inserted.
    pub(crate) seqs: std::collections::HashMap<TransferId, i64>,
    answers: BatchAnswers,
    /// Indexes into `answers` of the transfers this batch creates.
    created: Vec<usize>,
    /// Accounts whose balances changed.
    touched: BTreeSet<AccountId>,
}

impl Decided {
    /// Loads the working set and runs every request, in order, so later
    /// requests see earlier ones.
    pub(crate) fn run(
        accounts: Vec<Account>,
        loaded: Vec<(i64, TransferRecord)>,
        reqs: &[(&TransferRequest, u64)],
    ) -> Result<Self, StoreError> {
        let mut mem = MemLedger::new();
        for a in accounts {
            mem.insert_account(a).map_err(|e| {
                StoreError::corrupt("ledger_accounts", format!("cannot load: {}", e.code()))
            })?;
        }
        let mut seqs = std::collections::HashMap::new();
        for (seq, t) in loaded {
            seqs.insert(t.id, seq);
            mem.load_transfer(t);
        }
        let mut answers = Vec::with_capacity(reqs.len());
        let mut created = Vec::new();
        let mut touched = BTreeSet::new();
        for (i, (r, now)) in reqs.iter().enumerate() {
            match mem.submit(r, *now) {
                Ok(Applied::Created(effect)) => {
                    touched.extend(effect.accounts.iter().map(|c| c.id.clone()));
                    created.push(i);
                    answers.push(Ok((0, effect.record, false)));
                }
                Ok(Applied::AlreadyExists(rec)) => {
                    let seq = seqs.get(&rec.id).copied().unwrap_or(0);
                    answers.push(Ok((seq, rec, true)));
                }
                Err(e) => answers.push(Err(e)),
            }
        }
        Ok(Self {
            mem,
            seqs,
            answers,
            created,
            touched,
        })
    }

    /// The transfers to append, in request order.
    pub(crate) fn new_records(&self) -> Vec<&TransferRecord> {
        self.created
            .iter()
            .filter_map(|&i| self.answers[i].as_ref().ok().map(|(_, r, _)| r))
            .collect()
    }

    /// The new balances of every touched account, by id.
    pub(crate) fn balances(&self) -> Vec<(&AccountId, kessai_ledger::Balances)> {
        self.touched
            .iter()
            .filter_map(|id| self.mem.account(id).map(|a| (id, a.balances)))
            .collect()
    }

    /// The answers, with the sequence numbers of transfers created (and
    /// replayed) in this batch filled in from `seqs`.
    pub(crate) fn answers(self) -> BatchAnswers {
        let seqs = self.seqs;
        let mut answers = self.answers;
        for a in answers.iter_mut().flatten() {
            if a.0 == 0 {
                a.0 = seqs.get(&a.1.id).copied().unwrap_or(0);
            }
        }
        answers
    }
}

/// One PostgreSQL transaction for the whole batch; see the module docs.
/// `Ok(None)`: the working set moved under us, run the batch again.
async fn run_batch(
    pool: &sqlx::PgPool,
    reqs: &[(&TransferRequest, u64)],
) -> Result<Option<BatchAnswers>, StoreError> {
    let mut tx = pool.begin().await?;
    let conn = &mut *tx;
    // 1. transfers: the batch's ids and the pendings it resolves, plus any
    //    resolutions of those pendings.
    let (ids, pending_ids) = batch_transfer_ids(reqs);
    let ids: Vec<TransferId> = ids.into_iter().collect();
    let pending_ids: Vec<TransferId> = pending_ids.into_iter().collect();
    let loaded = sql::postgres::transfers_by_ids(conn, &ids, &pending_ids).await?;
    // 2. accounts, in id order, locked.
    let acc = accounts_needed(reqs, &loaded);
    let acc_refs: Vec<&AccountId> = acc.iter().collect();
    let accounts = sql::postgres::accounts_by_ids(conn, &acc_refs, true).await?;
    // The transfers were read before the locks were held: read them again
    // now. Any resolution or transfer that moved these accounts committed
    // before we got the locks and is visible to this new statement (READ
    // COMMITTED). If the reload needs accounts we have not locked (a
    // pending that appeared meanwhile), re-run the batch.
    let loaded = sql::postgres::transfers_by_ids(conn, &ids, &pending_ids).await?;
    if !accounts_needed(reqs, &loaded).is_subset(&acc) {
        return Ok(None);
    }
    // 3. decide in order.
    let mut decided = Decided::run(accounts, loaded, reqs)?;
    // 4. write.
    let new_seqs = sql::postgres_writer::insert_transfers(conn, &decided.new_records()).await?;
    decided.seqs.extend(new_seqs);
    sql::postgres_writer::update_balances(conn, &decided.balances()).await?;
    tx.commit().await?;
    Ok(Some(decided.answers()))
}
