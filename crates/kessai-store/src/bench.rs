//! Benchmark core: how many durable postings per second the ledger
//! sustains, next to the machine's raw durable single-row insert rate on
//! the same backend.
//!
//! [`bench_ledger`] creates `accounts` fresh accounts (names unique to the
//! run), then `concurrency` tasks submit posted transfers between
//! pseudo-random pairs of them for `duration`, each waiting for its
//! durable commit; it records every commit latency. Afterwards it measures
//! one-insert-per-commit into a scratch table for a short while (the
//! reference a naive one-transaction-per-posting design could reach at
//! best). This module reads the clock; it is not used on any money path.
//! Integer arithmetic throughout; floats only for the reported rates.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kessai_ids::{AccountId, TransferId};
use kessai_ledger::{Account, AccountKind, BalanceLimit, Leg, TransferRequest, codes};
use kessai_money::Currency;
use serde::Serialize;

use crate::StoreError;
use crate::db::{Db, DbPool};

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Concurrent submitting tasks.
    pub concurrency: usize,
    /// How long to submit.
    pub duration: Duration,
    /// Accounts to post between (≥ 2).
    pub accounts: usize,
    /// How long to measure raw single-row inserts (zero: skip).
    pub raw_insert_duration: Duration,
    /// Seed of the account-pair generator.
    pub seed: u64,
}

impl Default for BenchConfig {
    fn default() -> Self {
        Self {
            concurrency: 256,
            duration: Duration::from_secs(5),
            accounts: 1000,
            raw_insert_duration: Duration::from_secs(2),
            seed: 1,
        }
    }
}

/// What was measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// `"sqlite"` or `"postgres"`.
    pub backend: &'static str,
    /// Submitting tasks.
    pub concurrency: usize,
    /// Accounts used.
    pub accounts: usize,
    /// Wall time of the posting phase, in milliseconds.
    pub elapsed_ms: u64,
    /// Transfers recorded (each durably committed before it was counted).
    pub postings: u64,
    /// Submissions refused by the ledger (should be 0).
    pub refused: u64,
    /// Postings per second.
    pub postings_per_s: f64,
    /// Median submit-to-durable-answer latency, in milliseconds.
    pub p50_commit_ms: f64,
    /// 99th percentile latency, in milliseconds.
    pub p99_commit_ms: f64,
    /// Worst latency, in milliseconds.
    pub max_commit_ms: f64,
    /// Raw inserts measured (one row per durable commit, one connection).
    pub raw_single_row_inserts: u64,
    /// Raw single-row durable inserts per second.
    pub raw_single_row_inserts_per_s: f64,
}

/// xorshift64*: a small deterministic generator for picking accounts.
struct Pick(u64);

impl Pick {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn percentile_us(sorted: &[u32], per_mille: usize) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = (sorted.len() - 1) * per_mille / 1000;
    sorted[idx]
}

#[allow(clippy::float_arithmetic)] // reported rates only; never money
fn rate(count: u64, elapsed: Duration) -> f64 {
    let s = elapsed.as_secs_f64();
    if s > 0.0 { count as f64 / s } else { 0.0 }
}

#[allow(clippy::float_arithmetic)] // reported latencies only
fn us_to_ms(us: u32) -> f64 {
    f64::from(us) / 1000.0
}

/// Runs the benchmark; see the module docs.
pub async fn bench_ledger(db: &Db, config: BenchConfig) -> Result<BenchReport, StoreError> {
    let n_accounts = config.accounts.max(2);
    let concurrency = config.concurrency.max(1);
    let jpy = Currency::from_code("JPY")
        .map_err(|_| StoreError::corrupt("bench", "JPY missing from the currency table"))?;
    let run = now_ms();
    let ledger = db.ledger();
    let mut ids = Vec::with_capacity(n_accounts);
    for i in 0..n_accounts {
        let id: AccountId = format!("bench-{run}-{i}")
            .parse()
            .map_err(|_| StoreError::corrupt("bench", "account id"))?;
        let account = Account::new(
            id.clone(),
            AccountKind::IssuerClearing,
            jpy,
            BalanceLimit::MaxNetDebit(i64::MAX / 4),
        );
        ledger
            .create_account(&account, run)
            .await?
            .map_err(|e| StoreError::corrupt("bench", e.code()))?;
        ids.push(id);
    }
    let ids = std::sync::Arc::new(ids);

    let start = Instant::now();
    let deadline = start + config.duration;
    let mut tasks = Vec::with_capacity(concurrency);
    for task in 0..concurrency {
        let ledger = ledger.clone();
        let ids = ids.clone();
        let mut pick = Pick(
            config
                .seed
                .wrapping_add(task as u64)
                .wrapping_mul(0x9e37_79b9)
                | 1,
        );
        tasks.push(tokio::spawn(async move {
            let mut latencies: Vec<u32> = Vec::new();
            let (mut posted, mut refused) = (0u64, 0u64);
            let mut n: u64 = 0;
            while Instant::now() < deadline {
                let a = pick.below(ids.len());
                let mut b = pick.below(ids.len() - 1);
                if b >= a {
                    b += 1;
                }
                let amount = 1 + (pick.next() % 10_000) as i64;
                let req = TransferRequest::posted(
                    TransferId::derive(
                        "kessai/bench",
                        &[
                            &run.to_be_bytes(),
                            &(task as u64).to_be_bytes(),
                            &n.to_be_bytes(),
                        ],
                    ),
                    jpy,
                    codes::FUNDING,
                    vec![
                        Leg::debit(ids[a].clone(), amount),
                        Leg::credit(ids[b].clone(), amount),
                    ],
                );
                n += 1;
                let t0 = Instant::now();
                let r = ledger.submit(req, now_ms()).await?;
                latencies.push(u32::try_from(t0.elapsed().as_micros()).unwrap_or(u32::MAX));
                match r {
                    Ok(_) => posted += 1,
                    Err(_) => refused += 1,
                }
            }
            Ok::<_, StoreError>((posted, refused, latencies))
        }));
    }
    let (mut postings, mut refused, mut latencies) = (0u64, 0u64, Vec::new());
    for t in tasks {
        let (p, r, l) = t.await.map_err(|_| StoreError::WriterStopped)??;
        postings += p;
        refused += r;
        latencies.extend(l);
    }
    let elapsed = start.elapsed();
    latencies.sort_unstable();

    let (raw, raw_elapsed) = raw_inserts(db, config.raw_insert_duration).await?;

    Ok(BenchReport {
        backend: match db.backend() {
            crate::Backend::Sqlite => "sqlite",
            crate::Backend::Postgres => "postgres",
        },
        concurrency,
        accounts: n_accounts,
        elapsed_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        postings,
        refused,
        postings_per_s: rate(postings, elapsed),
        p50_commit_ms: us_to_ms(percentile_us(&latencies, 500)),
        p99_commit_ms: us_to_ms(percentile_us(&latencies, 990)),
        max_commit_ms: us_to_ms(latencies.last().copied().unwrap_or(0)),
        raw_single_row_inserts: raw,
        raw_single_row_inserts_per_s: rate(raw, raw_elapsed),
    })
}

/// One row per autocommit insert, one connection, for `duration`.
async fn raw_inserts(db: &Db, duration: Duration) -> Result<(u64, Duration), StoreError> {
    if duration.is_zero() {
        return Ok((0, Duration::ZERO));
    }
    const CREATE: &str =
        "CREATE TABLE IF NOT EXISTS kessai_bench_raw (n BIGINT NOT NULL, payload BYTEA NOT NULL)";
    const CREATE_SQLITE: &str =
        "CREATE TABLE IF NOT EXISTS kessai_bench_raw (n INTEGER NOT NULL, payload BLOB NOT NULL)";
    const INSERT: &str = "INSERT INTO kessai_bench_raw (n, payload) VALUES ($1, $2)";
    const DROP: &str = "DROP TABLE IF EXISTS kessai_bench_raw";
    let payload = vec![0u8; 64];
    let mut count: u64 = 0;
    macro_rules! run {
        ($pool:expr, $create:expr) => {{
            let mut conn = $pool.acquire().await?;
            sqlx::query($create).execute(&mut *conn).await?;
            let start = Instant::now();
            while start.elapsed() < duration {
                sqlx::query(INSERT)
                    .bind(count as i64)
                    .bind(payload.as_slice())
                    .execute(&mut *conn)
                    .await?;
                count += 1;
            }
            let elapsed = start.elapsed();
            sqlx::query(DROP).execute(&mut *conn).await?;
            elapsed
        }};
    }
    let elapsed = match db.pool() {
        DbPool::Sqlite(p) => run!(p, CREATE_SQLITE),
        DbPool::Postgres(p) => run!(p, CREATE),
    };
    Ok((count, elapsed))
}
