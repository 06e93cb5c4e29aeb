//! Opening the database, running migrations, and running queries on either
//! backend.
//!
//! A [`Db`] is a cheap-to-clone handle over one of two backends:
//!
//! - **SQLite** (the embedded default): one file in a data directory,
//!   created with its directory on first open; `journal_mode=WAL`,
//!   `synchronous=FULL`, `foreign_keys=ON`, a busy timeout so concurrent
//!   writers wait instead of failing.
//! - **PostgreSQL**: `synchronous_commit=on` is forced on every connection
//!   so a commit that returned is on disk; an optional schema isolates a
//!   deployment (or a test) through `search_path`.
//!
//! Migrations live in `migrations/sqlite/` and `migrations/postgres/` (one
//! numbered file per feature: `0001_ledger.sql`, `0002_registry.sql`, ...)
//! and are embedded at compile time with `sqlx::migrate!`; [`Db::open`]
//! applies the pending ones.
//!
//! # Running a query on either backend
//!
//! SQL text written with `$1, $2, ...` placeholders, `INTEGER`/`BIGINT`
//! values bound as `i64`, blobs as `Vec<u8>`/`&[u8]` and text as `String`
//! reads the same on both engines, so most code writes the query once and
//! lets [`on_pool!`](crate::on_pool) (or [`on_tx!`](crate::on_tx) inside a
//! write transaction) expand it for each backend:
//!
//! ```
//! # async fn demo() -> Result<(), kessai_store::StoreError> {
//! let dir = std::env::temp_dir().join(format!("kessai-doc-{}", std::process::id()));
//! let db = kessai_store::Db::open(dir.to_str().unwrap()).await?;
//! let n: i64 = kessai_store::on_pool!(db, |pool| {
//!     sqlx::query_scalar("SELECT COUNT(*) FROM ledger_accounts").fetch_one(pool).await
//! })?;
//! assert_eq!(n, 0);
//!
//! let mut tx = db.begin_write().await?;
//! let transfers: i64 = kessai_store::on_tx!(tx, |conn| {
//!     // Both arms must have one type: decode to plain Rust values.
//!     sqlx::query_scalar("SELECT COUNT(*) FROM ledger_transfers").fetch_one(conn).await
//! })?;
//! assert_eq!(transfers, 0);
//! tx.commit().await?;
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok(()) }
//! # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
//! ```
//!
//! Where the engines differ (`FOR UPDATE`, upserts, error codes), match on
//! [`Db::pool`] / [`DbTx`] directly and write each branch.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Postgres, Sqlite, Transaction};

use crate::StoreError;

/// File name of the SQLite database inside a data directory.
pub const SQLITE_FILE_NAME: &str = "kessai.db";

/// Migrations for the SQLite backend, embedded at compile time.
pub static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
/// Migrations for the PostgreSQL backend, embedded at compile time.
pub static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// Which database engine a [`Db`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// Embedded SQLite file.
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

/// The connection pool of one backend.
#[derive(Debug, Clone)]
pub enum DbPool {
    /// SQLite pool (WAL readers + writers serialised by SQLite's lock).
    Sqlite(SqlitePool),
    /// PostgreSQL pool.
    Postgres(PgPool),
}

/// An open write transaction on either backend.
///
/// On SQLite it starts with `BEGIN IMMEDIATE`, taking the write lock up
/// front: a deferred transaction that reads and then writes can fail with
/// `SQLITE_BUSY` without waiting when another writer got in between.
/// Dropping it without [`DbTx::commit`] rolls back.
#[derive(Debug)]
pub enum DbTx {
    /// SQLite transaction.
    Sqlite(Transaction<'static, Sqlite>),
    /// PostgreSQL transaction.
    Postgres(Transaction<'static, Postgres>),
}

impl DbTx {
    /// Commits durably (SQLite `synchronous=FULL`, PostgreSQL
    /// `synchronous_commit=on`).
    pub async fn commit(self) -> Result<(), StoreError> {
        match self {
            DbTx::Sqlite(tx) => tx.commit().await?,
            DbTx::Postgres(tx) => tx.commit().await?,
        }
        Ok(())
    }

    /// Rolls back explicitly.
    pub async fn rollback(self) -> Result<(), StoreError> {
        match self {
            DbTx::Sqlite(tx) => tx.rollback().await?,
            DbTx::Postgres(tx) => tx.rollback().await?,
        }
        Ok(())
    }

    /// The backend of this transaction.
    pub fn backend(&self) -> Backend {
        match self {
            DbTx::Sqlite(_) => Backend::Sqlite,
            DbTx::Postgres(_) => Backend::Postgres,
        }
    }
}

/// Runs the same query code on whichever pool a [`Db`] holds.
///
/// `on_pool!(db, |pool| body)` expands to a `match` with `body` in both
/// arms, `pool` bound to `&SqlitePool` in one and `&PgPool` in the other.
/// The body must therefore type-check for both; it is usually one
/// `sqlx::query(...)...await` expression.
#[macro_export]
macro_rules! on_pool {
    ($db:expr, |$pool:ident| $body:expr) => {
        match $db.pool() {
            $crate::DbPool::Sqlite($pool) => $body,
            $crate::DbPool::Postgres($pool) => $body,
        }
    };
}

/// Runs the same query code inside a [`DbTx`] on either backend.
///
/// `on_tx!(tx, |conn| body)` binds `conn` to `&mut SqliteConnection` or
/// `&mut PgConnection` (re-borrow it with `&mut *conn` to use it twice).
#[macro_export]
macro_rules! on_tx {
    ($tx:expr, |$conn:ident| $body:expr) => {
        match &mut $tx {
            $crate::DbTx::Sqlite(t) => {
                let $conn = &mut **t;
                $body
            }
            $crate::DbTx::Postgres(t) => {
                let $conn = &mut **t;
                $body
            }
        }
    };
}

/// How to open a database. [`Db::open`] covers the usual case; tests and
/// deployments that share a PostgreSQL database use the schema field.
#[derive(Debug, Clone)]
pub struct DbConfig {
    /// `sqlite://PATH`, a plain directory path, or `postgres://...`.
    pub url: String,
    /// Pool size. `None`: 8 for SQLite, 16 for PostgreSQL.
    pub max_connections: Option<u32>,
    /// PostgreSQL only: a schema to create if missing and put first on
    /// every connection's `search_path` (1–63 of `a-z 0-9 _`, starting
    /// with a letter). Ignored for SQLite.
    pub postgres_schema: Option<String>,
    /// SQLite busy timeout: how long a writer waits for the lock.
    pub busy_timeout: Duration,
    /// SQLite: how many transfers gather after the account-history mark
    /// before the ledger writer moves their legs into the history (see
    /// `migrations/sqlite/0010_ledger_legs_by_seq.sql`). Larger: fewer,
    /// bigger merges and a longer tail for history queries to scan.
    pub ledger_history_chunk: i64,
}

impl DbConfig {
    /// Defaults for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: None,
            postgres_schema: None,
            busy_timeout: Duration::from_secs(30),
            ledger_history_chunk: crate::ledger::DEFAULT_HISTORY_CHUNK,
        }
    }
}

/// A handle to the kessai database (clone it freely; clones share the
/// pool and the ledger writer).
#[derive(Debug, Clone)]
pub struct Db {
    inner: Arc<DbInner>,
}

#[derive(Debug)]
struct DbInner {
    pool: DbPool,
    /// Where the SQLite file lives (None for PostgreSQL); shown by
    /// [`Db::location`].
    sqlite_path: Option<PathBuf>,
    /// The group-commit writer of the ledger, started on first use.
    pub(crate) ledger_writer: OnceLock<crate::ledger::WriterHandle>,
    /// [`DbConfig::ledger_history_chunk`], at least 1.
    ledger_history_chunk: i64,
    /// [`DbConfig::busy_timeout`] (for the SQLite ledger writer's own
    /// connection).
    busy_timeout: Duration,
}

/// Where a URL points.
#[derive(Debug, PartialEq, Eq)]
enum Location {
    SqliteFile(PathBuf),
    Postgres(String),
}

fn parse_location(url: &str) -> Result<Location, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Location::Postgres(url.to_owned()));
    }
    let path = if let Some(rest) = url.strip_prefix("sqlite://") {
        if rest.is_empty() {
            return Err(StoreError::InvalidUrl("empty sqlite path".into()));
        }
        // `sqlite://PATH`: an existing directory or a path ending in `/`
        // means "data directory", anything else is the database file.
        let p = PathBuf::from(rest);
        if rest.ends_with('/') || p.is_dir() {
            return Ok(Location::SqliteFile(p.join(SQLITE_FILE_NAME)));
        }
        return Ok(Location::SqliteFile(p));
    } else if url.contains("://") || url.starts_with("sqlite:") {
        return Err(StoreError::InvalidUrl(
            "expected sqlite://PATH, a directory, or postgres://".into(),
        ));
    } else {
        PathBuf::from(url)
    };
    if url.is_empty() {
        return Err(StoreError::InvalidUrl("empty path".into()));
    }
    // A plain path is always a data directory.
    Ok(Location::SqliteFile(path.join(SQLITE_FILE_NAME)))
}

fn valid_schema(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.as_bytes()[0].is_ascii_lowercase()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn create_dir_private(dir: &Path) -> Result<(), StoreError> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        // The data directory holds the ledger and keys: owner only.
        b.mode(0o700);
    }
    b.create(dir)?;
    Ok(())
}

impl Db {
    /// Opens (creating on first run) and migrates the database at `url`:
    /// `sqlite://PATH` (a file, or a directory → `DIR/kessai.db`), a plain
    /// directory path (→ `DIR/kessai.db`), or `postgres://...`.
    pub async fn open(url: &str) -> Result<Db, StoreError> {
        Self::open_with(DbConfig::new(url)).await
    }

    /// Opens with explicit settings; see [`DbConfig`].
    pub async fn open_with(config: DbConfig) -> Result<Db, StoreError> {
        match parse_location(&config.url)? {
            Location::SqliteFile(path) => {
                if let Some(parent) = path.parent() {
                    create_dir_private(parent)?;
                }
                let opts = SqliteConnectOptions::new()
                    .filename(&path)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full)
                    .foreign_keys(true)
                    .busy_timeout(config.busy_timeout)
                    // Statement journals and temporary tables in memory:
                    // they never need to survive a crash (the WAL does).
                    .pragma("temp_store", "memory")
                    // 64 MiB page cache per connection: the ledger's hot
                    // index pages stay in memory between batches.
                    .pragma("cache_size", "-65536")
                    // Read database pages through a 256 MiB mapping rather
                    // than a pread copy each (WAL frames are still read).
                    .pragma("mmap_size", "268435456")
                    // Checkpoint every 64 MiB of WAL instead of 4 MiB: the
                    // ledger writer pays the checkpoint inside its commit,
                    // and hot pages get written back once per interval.
                    .pragma("wal_autocheckpoint", "16384");
                let pool = SqlitePoolOptions::new()
                    .max_connections(config.max_connections.unwrap_or(8))
                    .connect_with(opts)
                    .await?;
                SQLITE_MIGRATOR.run(&pool).await?;
                Ok(Self::from_pool(DbPool::Sqlite(pool), Some(path), &config))
            }
            Location::Postgres(url) => {
                let mut opts =
                    PgConnectOptions::from_str(&url)?.options([("synchronous_commit", "on")]);
                if let Some(schema) = &config.postgres_schema {
                    if !valid_schema(schema) {
                        return Err(StoreError::InvalidUrl(
                            "schema must be 1-63 of a-z 0-9 _ starting with a letter".into(),
                        ));
                    }
                    // Create the schema with a one-off connection, then
                    // point every pooled connection at it.
                    let setup = PgPoolOptions::new()
                        .max_connections(1)
                        .connect_with(opts.clone())
                        .await?;
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "CREATE SCHEMA IF NOT EXISTS \"{schema}\""
                    )))
                    .execute(&setup)
                    .await?;
                    setup.close().await;
                    opts = opts.options([("search_path", schema.as_str())]);
                }
                let pool = PgPoolOptions::new()
                    .max_connections(config.max_connections.unwrap_or(16))
                    .connect_with(opts)
                    .await?;
                POSTGRES_MIGRATOR.run(&pool).await?;
                Ok(Self::from_pool(DbPool::Postgres(pool), None, &config))
            }
        }
    }

    fn from_pool(pool: DbPool, sqlite_path: Option<PathBuf>, config: &DbConfig) -> Db {
        Db {
            inner: Arc::new(DbInner {
                pool,
                sqlite_path,
                ledger_writer: OnceLock::new(),
                ledger_history_chunk: config.ledger_history_chunk.max(1),
                busy_timeout: config.busy_timeout,
            }),
        }
    }

    /// The connection pool, for queries that other modules run.
    pub fn pool(&self) -> &DbPool {
        &self.inner.pool
    }

    /// Which engine this is.
    pub fn backend(&self) -> Backend {
        match self.inner.pool {
            DbPool::Sqlite(_) => Backend::Sqlite,
            DbPool::Postgres(_) => Backend::Postgres,
        }
    }

    /// The SQLite database file, or `None` on PostgreSQL.
    pub fn sqlite_path(&self) -> Option<&Path> {
        self.inner.sqlite_path.as_deref()
    }

    /// Starts a write transaction (`BEGIN IMMEDIATE` on SQLite).
    pub async fn begin_write(&self) -> Result<DbTx, StoreError> {
        Ok(match &self.inner.pool {
            DbPool::Sqlite(p) => DbTx::Sqlite(p.begin_with("BEGIN IMMEDIATE").await?),
            DbPool::Postgres(p) => DbTx::Postgres(p.begin().await?),
        })
    }

    /// Closes the pool (waits for connections to be returned) and the
    /// SQLite ledger writer's connection. Other clones of this handle stop
    /// working.
    pub async fn close(&self) {
        if let Some(writer) = self.inner.ledger_writer.get() {
            writer.stop().await;
        }
        match &self.inner.pool {
            DbPool::Sqlite(p) => p.close().await,
            DbPool::Postgres(p) => p.close().await,
        }
    }

    pub(crate) fn ledger_writer_cell(&self) -> &OnceLock<crate::ledger::WriterHandle> {
        &self.inner.ledger_writer
    }

    pub(crate) fn ledger_history_chunk(&self) -> i64 {
        self.inner.ledger_history_chunk
    }

    pub(crate) fn busy_timeout(&self) -> Duration {
        self.inner.busy_timeout
    }
}

/// True if `e` is a unique / primary-key violation (a duplicate id).
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
}

/// True if `e` is a transient conflict worth retrying the whole
/// transaction for: PostgreSQL serialization failure (`40001`) or deadlock
/// (`40P01`), SQLite `BUSY`/`LOCKED` (including the extended codes).
pub fn is_retryable(e: &sqlx::Error) -> bool {
    let Some(d) = e.as_database_error() else {
        return false;
    };
    let Some(code) = d.code() else {
        return false;
    };
    match code.as_ref() {
        "40001" | "40P01" => true,
        c => c
            .parse::<i32>()
            // SQLite primary result code is the low byte: 5 BUSY, 6 LOCKED.
            .is_ok_and(|n| matches!(n & 0xff, 5 | 6)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse() {
        assert_eq!(
            parse_location("postgres://u@h/db").unwrap(),
            Location::Postgres("postgres://u@h/db".into())
        );
        assert_eq!(
            parse_location("/var/lib/kessai").unwrap(),
            Location::SqliteFile(PathBuf::from("/var/lib/kessai/kessai.db"))
        );
        assert_eq!(
            parse_location("sqlite:///tmp/x/ledger.sqlite").unwrap(),
            Location::SqliteFile(PathBuf::from("/tmp/x/ledger.sqlite"))
        );
        assert_eq!(
            parse_location("sqlite:///tmp/x/").unwrap(),
            Location::SqliteFile(PathBuf::from("/tmp/x/kessai.db"))
        );
        for bad in ["", "sqlite://", "mysql://h/db", "sqlite::memory:"] {
            assert!(parse_location(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn schema_names_validate() {
        assert!(valid_schema("kessai_test_01"));
        for bad in ["", "1abc", "a-b", "A", "a\"; drop", &"a".repeat(64)] {
            assert!(!valid_schema(bad), "{bad}");
        }
    }
}
