//! Persistence of the issuer's own keys: id, version, purpose, algorithm,
//! lifecycle state, public part, and the secret part *sealed* under the
//! master key by the caller (this module never sees a clear secret).
//!
//! Invariant (database-enforced): at most one active version per key id.

use kessai_ids::{KeyId, KeyRef};

use crate::registry::KeyState;
use crate::{Db, StoreError, on_pool};

/// One stored version of an issuer key.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// Id and version.
    pub key_ref: KeyRef,
    /// What the key is for (`host-sign`, `transmission`, `storage`, ...).
    pub purpose: String,
    /// Algorithm name (`Ed25519`, `HPKE-X25519-SHA256-AES128GCM`, `AES-128`).
    pub algorithm: String,
    /// Lifecycle state.
    pub state: KeyState,
    /// Creation time, unix ms.
    pub created_at_ms: i64,
    /// Time of the last state change, unix ms (grace periods count from it).
    pub state_changed_at_ms: i64,
    /// Public key bytes (empty for symmetric keys).
    pub public_key: Vec<u8>,
    /// The secret, sealed under the master key.
    pub sealed_secret: Vec<u8>,
}

impl std::fmt::Debug for KeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRecord")
            .field("key_ref", &self.key_ref)
            .field("purpose", &self.purpose)
            .field("algorithm", &self.algorithm)
            .field("state", &self.state)
            .field("created_at_ms", &self.created_at_ms)
            .finish_non_exhaustive()
    }
}

type Row = (
    String,
    i64,
    String,
    String,
    String,
    i64,
    i64,
    Vec<u8>,
    Vec<u8>,
);

fn from_row(r: Row) -> Result<KeyRecord, StoreError> {
    let bad = |w: &str| StoreError::corrupt("issuer_keys", w.to_string());
    let id = KeyId::new(r.0).map_err(|_| bad("key_id"))?;
    let version = u32::try_from(r.1).map_err(|_| bad("version"))?;
    Ok(KeyRecord {
        key_ref: KeyRef::new(id, version).map_err(|_| bad("version"))?,
        purpose: r.2,
        algorithm: r.3,
        state: KeyState::from_code("issuer_keys", &r.4)?,
        created_at_ms: r.5,
        state_changed_at_ms: r.6,
        public_key: r.7,
        sealed_secret: r.8,
    })
}

const COLUMNS: &str = "key_id, version, purpose, algorithm, state, created_at_ms, \
                       state_changed_at_ms, public_key, sealed_secret";

/// Every version of every key, by id then version.
pub async fn all_keys(db: &Db) -> Result<Vec<KeyRecord>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM issuer_keys ORDER BY key_id, version");
    let rows: Vec<Row> = on_pool!(db, |pool| {
        sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
            .fetch_all(pool)
            .await
    })?;
    rows.into_iter().map(from_row).collect()
}

/// One version of one key.
pub async fn key(db: &Db, key_ref: &KeyRef) -> Result<Option<KeyRecord>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM issuer_keys WHERE key_id = $1 AND version = $2");
    let row: Option<Row> = on_pool!(db, |pool| {
        sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
            .bind(key_ref.id.as_str())
            .bind(i64::from(key_ref.version))
            .fetch_optional(pool)
            .await
    })?;
    row.map(from_row).transpose()
}

/// The active version of a key id, if any.
pub async fn active_key(db: &Db, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM issuer_keys WHERE key_id = $1 AND state = 'active'");
    let row: Option<Row> = on_pool!(db, |pool| {
        sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
            .bind(id.as_str())
            .fetch_optional(pool)
            .await
    })?;
    row.map(from_row).transpose()
}

/// The next version number for `id` (1 if none).
pub async fn next_version(db: &Db, id: &KeyId) -> Result<u32, StoreError> {
    let max: Option<i64> = on_pool!(db, |pool| {
        sqlx::query_scalar("SELECT MAX(version) FROM issuer_keys WHERE key_id = $1")
            .bind(id.as_str())
            .fetch_one(pool)
            .await
    })?;
    u32::try_from(max.unwrap_or(0) + 1).map_err(|_| StoreError::corrupt("issuer_keys", "version"))
}

/// Outcome of [`insert_active`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertActive {
    /// The record is stored and active; the previous active version (if
    /// any) is now retiring.
    Inserted,
    /// Another process stored this version first (lost a race): reload.
    Raced,
}

/// Stores `record` as the active version of its key id, moving the current
/// active version to *retiring*, in one transaction. The caller computes
/// the version with [`next_version`]; a concurrent rotation makes one of the
/// two inserts fail on the primary key and that caller gets `Raced`.
pub async fn insert_active(
    db: &Db,
    record: &KeyRecord,
    now_ms: i64,
) -> Result<InsertActive, StoreError> {
    let mut tx = db.begin_write().await?;
    crate::on_tx!(tx, |conn| {
        sqlx::query(
            "UPDATE issuer_keys SET state = 'retiring', state_changed_at_ms = $1 \
             WHERE key_id = $2 AND state = 'active'",
        )
        .bind(now_ms)
        .bind(record.key_ref.id.as_str())
        .execute(&mut *conn)
        .await
        .map(|r| r.rows_affected())
    })?;
    let sql = format!(
        "INSERT INTO issuer_keys ({COLUMNS}) VALUES ($1, $2, $3, $4, 'active', $5, $6, $7, $8)"
    );
    let res = crate::on_tx!(tx, |conn| {
        sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .bind(record.key_ref.id.as_str())
            .bind(i64::from(record.key_ref.version))
            .bind(&record.purpose)
            .bind(&record.algorithm)
            .bind(record.created_at_ms)
            .bind(now_ms)
            .bind(&record.public_key)
            .bind(&record.sealed_secret)
            .execute(&mut *conn)
            .await
            .map(|r| r.rows_affected())
    });
    match res {
        Ok(_) => {
            tx.commit().await?;
            Ok(InsertActive::Inserted)
        }
        Err(e) if crate::db::is_unique_violation(&e) => {
            tx.rollback().await?;
            Ok(InsertActive::Raced)
        }
        Err(e) => Err(e.into()),
    }
}

/// Moves one version to `state` (e.g. retiring → retired after the grace
/// period). Returns false if no such version exists.
pub async fn set_state(
    db: &Db,
    key_ref: &KeyRef,
    state: KeyState,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let n = on_pool!(db, |pool| {
        sqlx::query(
            "UPDATE issuer_keys SET state = $1, state_changed_at_ms = $2 WHERE key_id = $3 AND version = $4",
        )
        .bind(state.code())
        .bind(now_ms)
        .bind(key_ref.id.as_str())
        .bind(i64::from(key_ref.version))
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
    })?;
    Ok(n == 1)
}
