//! Persistence shared by the payment flows, enforced by the database so
//! that several host processes sharing one PostgreSQL agree:
//!
//! - **sessions**: serialized protocol state with optimistic concurrency —
//!   [`save_session`] only succeeds on the version it read, so two
//!   processes cannot both advance the same run;
//! - **attempt counters**: failures of a secret check with lockout
//!   ([`record_failure`] is one atomic statement);
//! - **once markers**: [`use_once`] succeeds exactly once per
//!   `(scope, marker)`, whoever asks;
//! - **monotonic counters**: [`advance_counter`] only moves a counter up.

use crate::{Db, StoreError, on_pool};

/// A stored session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSession {
    /// Session id.
    pub id: String,
    /// Which flow.
    pub flow: String,
    /// Serialized state (JSON).
    pub state: String,
    /// Version read; pass it to [`save_session`].
    pub version: i64,
    /// Expiry, unix ms.
    pub expires_at_ms: i64,
}

/// Creates a session; `Ok(false)` if the id exists.
pub async fn create_session(
    db: &Db,
    id: &str,
    flow: &str,
    state: &str,
    now_ms: i64,
    expires_at_ms: i64,
) -> Result<bool, StoreError> {
    let n = on_pool!(db, |pool| {
        sqlx::query(
            "INSERT INTO flow_sessions (id, flow, state, version, created_at_ms, updated_at_ms, expires_at_ms) \
             VALUES ($1, $2, $3, 1, $4, $4, $5) ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(flow)
        .bind(state)
        .bind(now_ms)
        .bind(expires_at_ms)
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
    })?;
    Ok(n == 1)
}

/// Loads a session.
pub async fn load_session(db: &Db, id: &str) -> Result<Option<StoredSession>, StoreError> {
    let row: Option<(String, String, String, i64, i64)> = on_pool!(db, |pool| {
        sqlx::query_as(
            "SELECT id, flow, state, version, expires_at_ms FROM flow_sessions WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(pool)
        .await
    })?;
    Ok(row.map(|r| StoredSession {
        id: r.0,
        flow: r.1,
        state: r.2,
        version: r.3,
        expires_at_ms: r.4,
    }))
}

/// Replaces the state of a session read at `version`; `Ok(false)` if
/// someone else saved first (reload and retry, or refuse).
pub async fn save_session(
    db: &Db,
    id: &str,
    version: i64,
    state: &str,
    now_ms: i64,
    expires_at_ms: i64,
) -> Result<bool, StoreError> {
    let n = on_pool!(db, |pool| {
        sqlx::query(
            "UPDATE flow_sessions SET state = $1, version = version + 1, updated_at_ms = $2, expires_at_ms = $3 \
             WHERE id = $4 AND version = $5",
        )
        .bind(state)
        .bind(now_ms)
        .bind(expires_at_ms)
        .bind(id)
        .bind(version)
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
    })?;
    Ok(n == 1)
}

/// Sessions of `flow` whose expiry is at or before `now_ms` (for timeout
/// sweeps), oldest first, at most `limit`.
pub async fn expired_sessions(
    db: &Db,
    flow: &str,
    now_ms: i64,
    limit: i64,
) -> Result<Vec<StoredSession>, StoreError> {
    let rows: Vec<(String, String, String, i64, i64)> = on_pool!(db, |pool| {
        sqlx::query_as(
            "SELECT id, flow, state, version, expires_at_ms FROM flow_sessions \
             WHERE flow = $1 AND expires_at_ms <= $2 ORDER BY expires_at_ms LIMIT $3",
        )
        .bind(flow)
        .bind(now_ms)
        .bind(limit)
        .fetch_all(pool)
        .await
    })?;
    Ok(rows
        .into_iter()
        .map(|r| StoredSession {
            id: r.0,
            flow: r.1,
            state: r.2,
            version: r.3,
            expires_at_ms: r.4,
        })
        .collect())
}

/// Deletes a session (terminal state reached and recorded elsewhere).
pub async fn delete_session(db: &Db, id: &str) -> Result<(), StoreError> {
    on_pool!(db, |pool| {
        sqlx::query("DELETE FROM flow_sessions WHERE id = $1")
            .bind(id)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
    })?;
    Ok(())
}

/// State of an attempt counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempts {
    /// Consecutive failures.
    pub failures: i64,
    /// Locked out (until [`reset_attempts`] by the issuer, or a success
    /// before the limit).
    pub locked: bool,
}

/// The counter of `subject` (zero if never failed).
pub async fn attempts(db: &Db, subject: &str) -> Result<Attempts, StoreError> {
    let row: Option<(i64, i64)> = on_pool!(db, |pool| {
        sqlx::query_as("SELECT failures, locked FROM attempt_counters WHERE subject = $1")
            .bind(subject)
            .fetch_optional(pool)
            .await
    })?;
    Ok(row.map_or(
        Attempts {
            failures: 0,
            locked: false,
        },
        |(f, l)| Attempts {
            failures: f,
            locked: l != 0,
        },
    ))
}

/// Records one failure atomically and locks at `max_failures`. Returns the
/// new state.
pub async fn record_failure(
    db: &Db,
    subject: &str,
    max_failures: i64,
    now_ms: i64,
) -> Result<Attempts, StoreError> {
    let row: (i64, i64) = on_pool!(db, |pool| {
        sqlx::query_as(
            "INSERT INTO attempt_counters (subject, failures, locked, updated_at_ms) \
             VALUES ($1, 1, CASE WHEN 1 >= $2 THEN 1 ELSE 0 END, $3) \
             ON CONFLICT (subject) DO UPDATE SET \
               failures = attempt_counters.failures + 1, \
               locked = CASE WHEN attempt_counters.failures + 1 >= $2 THEN 1 ELSE attempt_counters.locked END, \
               updated_at_ms = $3 \
             RETURNING failures, locked",
        )
        .bind(subject)
        .bind(max_failures)
        .bind(now_ms)
        .fetch_one(pool)
        .await
    })?;
    Ok(Attempts {
        failures: row.0,
        locked: row.1 != 0,
    })
}

/// Clears a counter after a success (only if not locked) — returns false if
/// it is locked, in which case the success must not be honoured.
pub async fn record_success(db: &Db, subject: &str) -> Result<bool, StoreError> {
    let locked = attempts(db, subject).await?.locked;
    if locked {
        return Ok(false);
    }
    on_pool!(db, |pool| {
        sqlx::query("DELETE FROM attempt_counters WHERE subject = $1 AND locked = 0")
            .bind(subject)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
    })?;
    Ok(true)
}

/// Lifts a lockout (issuer action).
pub async fn reset_attempts(db: &Db, subject: &str) -> Result<(), StoreError> {
    on_pool!(db, |pool| {
        sqlx::query("DELETE FROM attempt_counters WHERE subject = $1")
            .bind(subject)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
    })?;
    Ok(())
}

/// Marks `(scope, marker)` used; `Ok(true)` for the first use only.
pub async fn use_once(
    db: &Db,
    scope: &str,
    marker: &[u8],
    now_ms: i64,
) -> Result<bool, StoreError> {
    let n = on_pool!(db, |pool| {
        sqlx::query(
            "INSERT INTO once_markers (scope, marker, used_at_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (scope, marker) DO NOTHING",
        )
        .bind(scope)
        .bind(marker)
        .bind(now_ms)
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
    })?;
    Ok(n == 1)
}

/// True if `(scope, marker)` was used.
pub async fn was_used(db: &Db, scope: &str, marker: &[u8]) -> Result<bool, StoreError> {
    let n: i64 = on_pool!(db, |pool| {
        sqlx::query_scalar("SELECT COUNT(*) FROM once_markers WHERE scope = $1 AND marker = $2")
            .bind(scope)
            .bind(marker)
            .fetch_one(pool)
            .await
    })?;
    Ok(n > 0)
}

/// Moves `subject`'s counter to `value` if `value` is larger than the
/// stored one (or none is stored); `Ok(false)` otherwise (a replay).
pub async fn advance_counter(
    db: &Db,
    subject: &str,
    value: i64,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let n = on_pool!(db, |pool| {
        sqlx::query(
            "INSERT INTO monotonic_counters (subject, value, updated_at_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (subject) DO UPDATE SET value = $2, updated_at_ms = $3 \
             WHERE monotonic_counters.value < $2",
        )
        .bind(subject)
        .bind(value)
        .bind(now_ms)
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
    })?;
    Ok(n == 1)
}

/// The current value of a counter.
pub async fn counter(db: &Db, subject: &str) -> Result<Option<i64>, StoreError> {
    Ok(on_pool!(db, |pool| {
        sqlx::query_scalar("SELECT value FROM monotonic_counters WHERE subject = $1")
            .bind(subject)
            .fetch_optional(pool)
            .await
    })?)
}
