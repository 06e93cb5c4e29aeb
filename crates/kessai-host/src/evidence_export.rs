//! Evidence export: every artefact of one settlement (or any set of
//! subjects) as separate `.cose` files, an `index.json` naming each file's
//! artefact type, signer key id and the digests it binds, and the public
//! keys that verify them in `keys/` as PEM SubjectPublicKeyInfo files named
//! by key id (`host-sign#1.pem`, `store-1#1.pem`), so any COSE
//! implementation can check them with the published keys.

use std::path::Path;

use kessai_store::evidence::{self, EvidenceRecord};
use kessai_store::registry;
use serde::Serialize;

use crate::keystore::KeyStoreError;
use crate::state::AppState;

/// One exported artefact.
#[derive(Debug, Clone, Serialize)]
pub struct IndexEntry {
    /// File name in the export directory.
    pub file: String,
    /// Artefact type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Signer key id (`id#version`), empty for encrypted-only artefacts.
    pub signer: String,
    /// SHA-256 of the file, hex.
    pub digest: String,
    /// Digests (hex) of the artefacts it binds.
    pub binds: Vec<String>,
    /// What it belongs to.
    pub subject: String,
    /// Purged by retention: the file is absent, only the digest remains.
    pub purged: bool,
}

/// Export failures.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Nothing stored for the subjects.
    #[error("no evidence stored for {0}")]
    NothingStored(String),
    /// Files.
    #[error("export: {0}")]
    Io(#[from] std::io::Error),
    /// Database.
    #[error(transparent)]
    Store(#[from] kessai_store::StoreError),
    /// Keys.
    #[error(transparent)]
    Keys(#[from] KeyStoreError),
    /// JSON.
    #[error("index: {0}")]
    Json(#[from] serde_json::Error),
}

/// Writes the artefacts of `subjects` to `out` (see module docs).
/// `extra_keys` are `(key ref, PEM)` pairs of signers the host registry
/// does not hold as merchant keys (e.g. device personal keys).
pub async fn export(
    app: &AppState,
    subjects: &[String],
    out: &Path,
    extra_keys: &[(String, String)],
) -> Result<Vec<IndexEntry>, ExportError> {
    let mut records: Vec<EvidenceRecord> = Vec::new();
    for s in subjects {
        records.extend(evidence::by_subject(&app.db, s).await?);
    }
    if records.is_empty() {
        return Err(ExportError::NothingStored(subjects.join(", ")));
    }
    std::fs::create_dir_all(out.join("keys"))?;
    let mut index = Vec::with_capacity(records.len());
    for (i, r) in records.iter().enumerate() {
        let file = format!("{:02}-{}.cose", i + 1, r.kind);
        let purged = r.purged_at_ms.is_some();
        if !purged {
            std::fs::write(out.join(&file), &r.bytes)?;
        }
        index.push(IndexEntry {
            file,
            kind: r.kind.clone(),
            signer: r.signer.clone(),
            digest: hex::encode(r.digest),
            binds: r.binds.iter().map(hex::encode).collect(),
            subject: r.subject.clone(),
            purged,
        });
    }
    // Issuer keys.
    app.keys.export_public(&out.join("keys")).await?;
    // Merchant keys of the signers named in the index.
    for e in &index {
        let Some((id, v)) = e.signer.rsplit_once('#') else {
            continue;
        };
        let (Ok(store), Ok(version)) = (id.parse::<kessai_ids::StoreId>(), v.parse::<u32>()) else {
            continue;
        };
        for k in registry::merchant_keys(&app.db, &store).await? {
            if k.version != version {
                continue;
            }
            let Ok(pk) = <[u8; 32]>::try_from(k.public_key.as_slice()) else {
                continue;
            };
            if let Ok(vk) = kessai_crypto::sign::VerifyingKey::from_bytes(&pk) {
                std::fs::write(
                    out.join("keys").join(format!("{}.pem", e.signer)),
                    vk.to_public_pem(),
                )?;
            }
        }
    }
    for (name, pem) in extra_keys {
        std::fs::write(out.join("keys").join(format!("{name}.pem")), pem)?;
    }
    std::fs::write(out.join("index.json"), serde_json::to_vec_pretty(&index)?)?;
    Ok(index)
}
