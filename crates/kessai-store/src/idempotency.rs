//! Idempotency records for state-changing HTTP calls (`Idempotency-Key`).
//!
//! State machine of one `(scope, key)`:
//!
//! ```text
//!   (absent) --begin--> in_flight --complete--> done (response stored)
//!                          |  \--release--> (absent)   [5xx: client may retry]
//!                          \-- lock expired: the next begin takes it over
//! ```
//!
//! `begin` with the same key and the same request fingerprint replays a
//! stored response; with a different fingerprint it is a mismatch; while the
//! first request is in flight it is a conflict. The database's primary key
//! decides the race between two host processes, not process memory.

use crate::{Db, StoreError, on_pool};

/// What the caller must do with a request carrying an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyBegin {
    /// First time (or a stale lock taken over): run the request, then
    /// [`complete`] or [`release`].
    Proceed,
    /// Same key, same request, already answered: send this response again.
    Replay(StoredResponse),
    /// Same key, same request, still being processed elsewhere.
    InFlight,
    /// Same key, different request.
    Mismatch,
}

/// A stored HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// HTTP status.
    pub status: u16,
    /// Content type of the body.
    pub content_type: String,
    /// The body bytes.
    pub body: Vec<u8>,
}

type Row = (
    Vec<u8>,
    String,
    i64,
    Option<i64>,
    Option<String>,
    Option<Vec<u8>>,
);

/// Claims `(scope, key)` for a request with `fingerprint`, holding the claim
/// until `now_ms + lock_ms` unless completed or released first.
pub async fn begin(
    db: &Db,
    scope: &str,
    key: &str,
    fingerprint: &[u8; 32],
    now_ms: i64,
    lock_ms: i64,
) -> Result<IdempotencyBegin, StoreError> {
    let locked_until = now_ms.saturating_add(lock_ms);
    let inserted = on_pool!(db, |pool| {
        sqlx::query(
            "INSERT INTO idempotency_keys (scope, idem_key, fingerprint, state, locked_until_ms, created_at_ms) \
             VALUES ($1, $2, $3, 'in_flight', $4, $5) ON CONFLICT (scope, idem_key) DO NOTHING",
        )
        .bind(scope)
        .bind(key)
        .bind(fingerprint.to_vec())
        .bind(locked_until)
        .bind(now_ms)
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
    })?;
    if inserted == 1 {
        return Ok(IdempotencyBegin::Proceed);
    }
    let row: Option<Row> = on_pool!(db, |pool| {
        sqlx::query_as(
            "SELECT fingerprint, state, locked_until_ms, status, content_type, body \
             FROM idempotency_keys WHERE scope = $1 AND idem_key = $2",
        )
        .bind(scope)
        .bind(key)
        .fetch_optional(pool)
        .await
    })?;
    let Some((fp, state, lock, status, ct, body)) = row else {
        // Released between our insert and select: the caller may retry.
        return Ok(IdempotencyBegin::InFlight);
    };
    if fp.as_slice() != fingerprint.as_slice() {
        return Ok(IdempotencyBegin::Mismatch);
    }
    match state.as_str() {
        "done" => Ok(IdempotencyBegin::Replay(StoredResponse {
            status: status
                .and_then(|s| u16::try_from(s).ok())
                .ok_or_else(|| StoreError::corrupt("idempotency_keys", "status"))?,
            content_type: ct.unwrap_or_default(),
            body: body.unwrap_or_default(),
        })),
        "in_flight" if lock > now_ms => Ok(IdempotencyBegin::InFlight),
        "in_flight" => {
            // The first holder died: take the claim over, if nobody else did.
            let n = on_pool!(db, |pool| {
                sqlx::query(
                    "UPDATE idempotency_keys SET locked_until_ms = $1 \
                     WHERE scope = $2 AND idem_key = $3 AND state = 'in_flight' AND locked_until_ms = $4",
                )
                .bind(locked_until)
                .bind(scope)
                .bind(key)
                .bind(lock)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
            })?;
            Ok(if n == 1 {
                IdempotencyBegin::Proceed
            } else {
                IdempotencyBegin::InFlight
            })
        }
        _ => Err(StoreError::corrupt("idempotency_keys", "state")),
    }
}

/// Stores the response of a request that was allowed to proceed.
pub async fn complete(
    db: &Db,
    scope: &str,
    key: &str,
    response: &StoredResponse,
) -> Result<(), StoreError> {
    on_pool!(db, |pool| {
        sqlx::query(
            "UPDATE idempotency_keys SET state = 'done', status = $1, content_type = $2, body = $3 \
             WHERE scope = $4 AND idem_key = $5",
        )
        .bind(i64::from(response.status))
        .bind(&response.content_type)
        .bind(&response.body)
        .bind(scope)
        .bind(key)
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
    })?;
    Ok(())
}

/// Forgets an in-flight claim (the request failed in a way the client may
/// retry, e.g. a 5xx).
pub async fn release(db: &Db, scope: &str, key: &str) -> Result<(), StoreError> {
    on_pool!(db, |pool| {
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE scope = $1 AND idem_key = $2 AND state = 'in_flight'",
        )
        .bind(scope)
        .bind(key)
        .execute(pool)
        .await.map(|r| r.rows_affected())
    })?;
    Ok(())
}
