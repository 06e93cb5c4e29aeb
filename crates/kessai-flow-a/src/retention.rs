//! Retention of received signed TRANSACTION DATA (claims 3, 10).
//!
//! The host keeps the exact COSE bytes of every transaction data it
//! settled for [`crate::Policy::retention_days`], indexed by digest. The
//! ledger keeps its postings for ever and links them to the same digest
//! (transfer evidence `cose/flow-a.txn`), so after a purge the ledger still
//! balances and names what justified each transfer, but the customer's
//! encrypted order and card data are gone.
//!
//! [`purge_due`] says which records to delete at `now_ms`;
//! [`RetainedTransaction::evidence_entry`] describes a record for an
//! evidence export (`.cose` file + `index.json` line).

use kessai_crypto::cose;
use kessai_crypto::digest::sha256;
use kessai_ids::DeviceId;
use serde::{Deserialize, Serialize};

use crate::FlowAError;
use crate::model::bytes_serde;

/// Milliseconds per day.
pub const MS_PER_DAY: u64 = 86_400_000;

/// One retained signed transaction data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetainedTransaction {
    /// SHA-256 of `bytes`: the key of the record and the ledger evidence
    /// digest.
    #[serde(with = "bytes_serde::array")]
    pub digest: [u8; 32],
    /// The exact COSE_Sign1 bytes received.
    #[serde(with = "bytes_serde")]
    pub bytes: Vec<u8>,
    /// The device that signed it.
    pub device_id: DeviceId,
    /// Its counter.
    pub counter: u64,
    /// SHA-256 of the merchant-signed order inside it.
    #[serde(with = "bytes_serde::array")]
    pub order_digest: [u8; 32],
    /// When the host received it.
    pub received_at_ms: u64,
    /// From this instant on it is due for purge.
    pub purge_after_ms: u64,
}

/// The part of a retained record a purge needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionIndex {
    /// The record's digest.
    #[serde(with = "bytes_serde::array")]
    pub digest: [u8; 32],
    /// Due for purge from this instant on.
    pub purge_after_ms: u64,
}

/// One line of an evidence export's `index.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceEntry {
    /// Suggested file name: `<digest hex>.cose`.
    pub file: String,
    /// The artefact type (`flow-a.txn`).
    #[serde(rename = "type")]
    pub artefact_type: String,
    /// The signer's key reference (the device's personal key).
    pub signer_kid: String,
    /// SHA-256 of the file, hex.
    pub digest: String,
    /// Digests the artefact binds, by name, hex.
    pub bound_digests: Vec<(String, String)>,
    /// When it was received.
    pub received_at_ms: u64,
    /// When it is due for purge.
    pub purge_after_ms: u64,
}

impl RetainedTransaction {
    /// What to retain of `bytes` received at `now_ms`, kept for
    /// `retention_days`.
    pub fn new(
        bytes: &[u8],
        device_id: &DeviceId,
        counter: u64,
        order_digest: [u8; 32],
        now_ms: u64,
        retention_days: u32,
    ) -> Result<Self, FlowAError> {
        let purge_after_ms = u64::from(retention_days)
            .checked_mul(MS_PER_DAY)
            .and_then(|d| now_ms.checked_add(d))
            .ok_or(FlowAError::TimeOverflow)?;
        Ok(Self {
            digest: sha256(&[bytes]),
            bytes: bytes.to_vec(),
            device_id: device_id.clone(),
            counter,
            order_digest,
            received_at_ms: now_ms,
            purge_after_ms,
        })
    }

    /// Its index entry.
    pub fn index(&self) -> RetentionIndex {
        RetentionIndex {
            digest: self.digest,
            purge_after_ms: self.purge_after_ms,
        }
    }

    /// Describes the record for an evidence export. Reads type and signer
    /// from the COSE header (the bytes were verified when received).
    pub fn evidence_entry(&self) -> Result<EvidenceEntry, FlowAError> {
        let peeked = cose::peek(&self.bytes)?;
        let digest = hex::encode(self.digest);
        Ok(EvidenceEntry {
            file: format!("{digest}.cose"),
            artefact_type: peeked.type_name().unwrap_or("unknown").to_owned(),
            signer_kid: peeked.kid.to_string(),
            digest,
            bound_digests: vec![("order".to_owned(), hex::encode(self.order_digest))],
            received_at_ms: self.received_at_ms,
            purge_after_ms: self.purge_after_ms,
        })
    }
}

/// The digests of the records due for purge at `now_ms`
/// (`now_ms >= purge_after_ms`), in input order.
pub fn purge_due<'a>(
    records: impl IntoIterator<Item = &'a RetentionIndex>,
    now_ms: u64,
) -> Vec<[u8; 32]> {
    records
        .into_iter()
        .filter(|r| now_ms >= r.purge_after_ms)
        .map(|r| r.digest)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_period_and_purge_boundary() {
        let d: DeviceId = "dev-1".parse().unwrap();
        let a = RetainedTransaction::new(b"a", &d, 1, [0; 32], 1_000, 2).unwrap();
        let b = RetainedTransaction::new(b"b", &d, 2, [0; 32], 5_000, 2).unwrap();
        assert_eq!(a.purge_after_ms, 1_000 + 2 * MS_PER_DAY);
        assert_eq!(a.digest, sha256(&[b"a"]));
        let idx = [a.index(), b.index()];
        assert!(purge_due(&idx, a.purge_after_ms - 1).is_empty());
        assert_eq!(purge_due(&idx, a.purge_after_ms), vec![a.digest]);
        assert_eq!(purge_due(&idx, b.purge_after_ms), vec![a.digest, b.digest]);
        assert_eq!(
            RetainedTransaction::new(b"c", &d, 3, [0; 32], u64::MAX - 1, 1),
            Err(FlowAError::TimeOverflow)
        );
    }

    #[test]
    fn index_round_trips_through_json() {
        let d: DeviceId = "dev-1".parse().unwrap();
        let a = RetainedTransaction::new(b"xyz", &d, 9, [7; 32], 0, 30).unwrap();
        let json = serde_json::to_string(&a).unwrap();
        assert!(json.contains(&hex::encode(a.digest)));
        let back: RetainedTransaction = serde_json::from_str(&json).unwrap();
        assert_eq!(back, a);
    }
}
