//! The append-only audit log: security-relevant events that are not money
//! movements (key rotation and destruction, enrolment, lockouts, card
//! history uploads, retention purges). Details are JSON objects written by
//! the caller, who must keep card numbers, PINs, PIN blocks and keys out.

use crate::{Db, StoreError, on_pool};

/// One audit event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// Position in the log (increasing).
    pub seq: i64,
    /// When, unix ms.
    pub at_ms: i64,
    /// Event kind, e.g. `key.rotated`, `txn.keys_destroyed`.
    pub kind: String,
    /// What it is about (a key ref, a transaction id, a card id).
    pub subject: String,
    /// JSON details.
    pub detail: String,
}

/// Appends an event.
pub async fn append(
    db: &Db,
    at_ms: i64,
    kind: &str,
    subject: &str,
    detail: &serde_json::Value,
) -> Result<(), StoreError> {
    let detail = detail.to_string();
    on_pool!(db, |pool| {
        sqlx::query("INSERT INTO audit_log (at_ms, kind, subject, detail) VALUES ($1, $2, $3, $4)")
            .bind(at_ms)
            .bind(kind)
            .bind(subject)
            .bind(&detail)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
    })?;
    Ok(())
}

/// Events about `subject`, oldest first; `None` lists everything.
pub async fn events(db: &Db, subject: Option<&str>) -> Result<Vec<AuditEvent>, StoreError> {
    let rows: Vec<(i64, i64, String, String, String)> = match subject {
        Some(s) => on_pool!(db, |pool| {
            sqlx::query_as(
                "SELECT seq, at_ms, kind, subject, detail FROM audit_log WHERE subject = $1 ORDER BY seq",
            )
            .bind(s)
            .fetch_all(pool)
            .await
        })?,
        None => on_pool!(db, |pool| {
            sqlx::query_as("SELECT seq, at_ms, kind, subject, detail FROM audit_log ORDER BY seq")
                .fetch_all(pool)
                .await
        })?,
    };
    Ok(rows
        .into_iter()
        .map(|r| AuditEvent {
            seq: r.0,
            at_ms: r.1,
            kind: r.2,
            subject: r.3,
            detail: r.4,
        })
        .collect())
}
