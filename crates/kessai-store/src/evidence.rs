//! The evidence store: artefacts (COSE bytes) addressed by their SHA-256,
//! with their type, signer, the digests they bind and what they belong to.
//! Inserting the same bytes twice is a no-op; the digest is computed here,
//! never trusted from the caller.

use sha2::{Digest, Sha256};

use crate::{Db, StoreError, on_pool};

/// One stored artefact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvidenceRecord {
    /// SHA-256 of `bytes`.
    pub digest: [u8; 32],
    /// Artefact type.
    pub kind: String,
    /// What it belongs to.
    pub subject: String,
    /// Signer key ref (`id#version`), or empty.
    pub signer: String,
    /// Digests of the artefacts it binds.
    pub binds: Vec<[u8; 32]>,
    /// The exact artefact bytes.
    pub bytes: Vec<u8>,
    /// When stored, unix ms.
    pub created_at_ms: i64,
    /// Retention limit, unix ms.
    pub purge_after_ms: Option<i64>,
    /// When retention purged the bytes (then `bytes` is empty).
    pub purged_at_ms: Option<i64>,
}

/// A new artefact to keep.
#[derive(Debug, Clone)]
pub struct NewEvidence<'a> {
    /// Artefact type.
    pub kind: &'a str,
    /// What it belongs to.
    pub subject: &'a str,
    /// Signer key ref, or empty.
    pub signer: &'a str,
    /// Digests it binds.
    pub binds: &'a [[u8; 32]],
    /// The bytes.
    pub bytes: &'a [u8],
    /// Now, unix ms.
    pub now_ms: i64,
    /// Retention limit.
    pub purge_after_ms: Option<i64>,
}

/// Stores an artefact (idempotent) and returns its digest.
pub async fn put(db: &Db, e: &NewEvidence<'_>) -> Result<[u8; 32], StoreError> {
    let digest: [u8; 32] = Sha256::digest(e.bytes).into();
    let binds = serde_json::to_string(&e.binds.iter().map(hex::encode).collect::<Vec<_>>())
        .map_err(|_| StoreError::corrupt("evidence", "binds"))?;
    on_pool!(db, |pool| {
        sqlx::query(
            "INSERT INTO evidence (digest, kind, subject, signer, binds, bytes, created_at_ms, purge_after_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (digest) DO NOTHING",
        )
        .bind(digest.to_vec())
        .bind(e.kind)
        .bind(e.subject)
        .bind(e.signer)
        .bind(&binds)
        .bind(e.bytes)
        .bind(e.now_ms)
        .bind(e.purge_after_ms)
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
    })?;
    Ok(digest)
}

type Row = (
    Vec<u8>,
    String,
    String,
    String,
    String,
    Vec<u8>,
    i64,
    Option<i64>,
    Option<i64>,
);

fn from_row(r: Row) -> Result<EvidenceRecord, StoreError> {
    let bad = |w: &str| StoreError::corrupt("evidence", w.to_string());
    let digest: [u8; 32] = r.0.as_slice().try_into().map_err(|_| bad("digest"))?;
    let hexes: Vec<String> = serde_json::from_str(&r.4).map_err(|_| bad("binds"))?;
    let mut binds = Vec::with_capacity(hexes.len());
    for h in hexes {
        let mut d = [0u8; 32];
        hex::decode_to_slice(&h, &mut d).map_err(|_| bad("binds"))?;
        binds.push(d);
    }
    Ok(EvidenceRecord {
        digest,
        kind: r.1,
        subject: r.2,
        signer: r.3,
        binds,
        bytes: r.5,
        created_at_ms: r.6,
        purge_after_ms: r.7,
        purged_at_ms: r.8,
    })
}

const COLUMNS: &str =
    "digest, kind, subject, signer, binds, bytes, created_at_ms, purge_after_ms, purged_at_ms";

/// One artefact by digest.
pub async fn get(db: &Db, digest: &[u8; 32]) -> Result<Option<EvidenceRecord>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM evidence WHERE digest = $1");
    let row: Option<Row> = on_pool!(db, |pool| {
        sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
            .bind(digest.to_vec())
            .fetch_optional(pool)
            .await
    })?;
    row.map(from_row).transpose()
}

/// Every artefact of a subject, oldest first.
pub async fn by_subject(db: &Db, subject: &str) -> Result<Vec<EvidenceRecord>, StoreError> {
    let sql =
        format!("SELECT {COLUMNS} FROM evidence WHERE subject = $1 ORDER BY created_at_ms, digest");
    let rows: Vec<Row> = on_pool!(db, |pool| {
        sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
            .bind(subject)
            .fetch_all(pool)
            .await
    })?;
    rows.into_iter().map(from_row).collect()
}

/// Purges the bytes of artefacts whose retention ended at or before
/// `now_ms` and returns how many. The row stays as a tombstone (digest,
/// type, subject, purge time): ledger postings keep their links, and the
/// auditor tells purged evidence from missing evidence.
pub async fn purge_due(db: &Db, now_ms: i64) -> Result<u64, StoreError> {
    Ok(on_pool!(db, |pool| {
        sqlx::query(
            "UPDATE evidence SET bytes = $1, purged_at_ms = $2 \
             WHERE purge_after_ms IS NOT NULL AND purge_after_ms <= $2 AND purged_at_ms IS NULL",
        )
        .bind(Vec::<u8>::new())
        .bind(now_ms)
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
    })?)
}

/// A problem with the evidence behind the ledger.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "finding", rename_all = "snake_case")]
pub enum EvidenceFinding {
    /// A transfer links to an artefact the store does not have.
    MissingEvidence {
        /// The transfer.
        transfer: String,
        /// The missing digest (hex).
        digest: String,
    },
    /// The stored bytes do not hash to their digest (edited artefact).
    TamperedEvidence {
        /// The digest (hex).
        digest: String,
    },
}

/// What [`audit_links`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct EvidenceReport {
    /// Links checked.
    pub links: usize,
    /// Links to artefacts purged by retention (fine).
    pub purged: usize,
    /// Problems.
    pub findings: Vec<EvidenceFinding>,
}

/// Checks every evidence link of every ledger transfer: the artefact is in
/// the store (or was purged by retention) and its bytes hash to its digest.
pub async fn audit_links(db: &Db) -> Result<EvidenceReport, StoreError> {
    let mut report = EvidenceReport::default();
    for (_, t) in db.ledger().all_transfers().await? {
        for e in &t.evidence {
            report.links += 1;
            let row: Option<(Vec<u8>, Option<i64>)> = on_pool!(db, |pool| {
                sqlx::query_as("SELECT bytes, purged_at_ms FROM evidence WHERE digest = $1")
                    .bind(e.digest.to_vec())
                    .fetch_optional(pool)
                    .await
            })?;
            match row {
                None => report.findings.push(EvidenceFinding::MissingEvidence {
                    transfer: t.id.to_string(),
                    digest: hex::encode(e.digest),
                }),
                Some((_, Some(_))) => report.purged += 1,
                Some((bytes, None)) => {
                    let d: [u8; 32] = Sha256::digest(&bytes).into();
                    if d != e.digest {
                        report.findings.push(EvidenceFinding::TamperedEvidence {
                            digest: hex::encode(e.digest),
                        });
                    }
                }
            }
        }
    }
    Ok(report)
}
