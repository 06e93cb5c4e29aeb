//! The issuer's key store: every issuer key has an id, a version, a purpose,
//! an algorithm and a state (active → retiring → retired); its secret part
//! is sealed at rest under the master key (AES-256-GCM, AAD = key ref and
//! purpose, so a sealed secret cannot be moved to another record).
//!
//! Rotation is a normal operation: [`IssuerKeys::rotate`] creates the next
//! version as active and moves the previous one to retiring (still accepted
//! for verification / decryption during a grace period).

use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use kessai_crypto::at_rest::{open_at_rest, seal_at_rest};
use kessai_crypto::hpke::{HpkeKeyPair, HpkePublicKey};
use kessai_crypto::sign::{SigningKey, VerifyingKey};
use kessai_ids::{KeyId, KeyRef};
use kessai_secrets::SecretKey;
use kessai_store::Db;
use kessai_store::keys::{self, InsertActive, KeyRecord};
use kessai_store::registry::KeyState;

use crate::clock::Clock;

/// What an issuer key is for.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum KeyPurpose {
    /// Ed25519: the host's signatures (SIG2, SIG3, SIG5, registration
    /// permissions, transaction keys, receipts).
    HostSign,
    /// HPKE X25519: devices encrypt transaction data to it (flow A).
    Transmission,
    /// HPKE X25519: devices seal stored card information to it (flow A).
    Storage,
    /// AES-128: the issuer card master key; every IC card's SCP03 and
    /// cryptogram keys are diversified from it and the card id (flows B, D).
    CardMaster,
}

impl KeyPurpose {
    /// Every purpose, in a stable order.
    pub const ALL: [KeyPurpose; 4] = [
        Self::HostSign,
        Self::Transmission,
        Self::Storage,
        Self::CardMaster,
    ];

    /// The key id used for this purpose.
    pub fn key_id(self) -> KeyId {
        let s = match self {
            Self::HostSign => "host-sign",
            Self::Transmission => "transmission",
            Self::Storage => "storage",
            Self::CardMaster => "card-master",
        };
        KeyId::new(s).expect("static key ids are valid")
    }

    /// Stable text code.
    pub fn code(self) -> &'static str {
        match self {
            Self::HostSign => "host_sign",
            Self::Transmission => "transmission",
            Self::Storage => "storage",
            Self::CardMaster => "card_master",
        }
    }

    /// Parses a code.
    pub fn from_code(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.code() == s)
    }

    fn algorithm(self) -> &'static str {
        match self {
            Self::HostSign => "Ed25519",
            Self::Transmission | Self::Storage => "HPKE-X25519-SHA256-AES128GCM",
            Self::CardMaster => "AES-128",
        }
    }
}

/// Key store failures.
#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    /// No such key version, or it is retired.
    #[error("unknown or retired key {0}")]
    Unknown(KeyRef),
    /// A sealed secret did not open under the master key (wrong master key,
    /// or a tampered record).
    #[error("key {0} cannot be unsealed: wrong master key or tampered record")]
    Unseal(KeyRef),
    /// The record's purpose or algorithm does not match its use.
    #[error("key {0} has the wrong purpose for this use")]
    WrongPurpose(KeyRef),
    /// Two rotations raced and this one lost repeatedly.
    #[error("concurrent rotation, try again")]
    Contended,
    /// Writing exported files failed.
    #[error("export: {0}")]
    Io(#[from] std::io::Error),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] kessai_store::StoreError),
}

/// Public view of a key version (what `keys list` shows).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct KeyInfo {
    /// `id#version`.
    #[schema(value_type = String)]
    pub key_ref: KeyRef,
    /// Purpose.
    pub purpose: KeyPurpose,
    /// Algorithm.
    pub algorithm: String,
    /// `active`, `retiring` or `retired`.
    pub state: String,
    /// Creation time, unix ms.
    pub created_at_ms: i64,
    /// Public key, base64url (no padding); empty for symmetric keys.
    pub public_key: String,
}

/// The issuer key store (cheap to clone).
#[derive(Debug, Clone)]
pub struct IssuerKeys {
    db: Db,
    master: Arc<SecretKey<32>>,
    clock: Arc<dyn Clock>,
}

fn aad(key_ref: &KeyRef, purpose: &str) -> Vec<u8> {
    format!("kessai/issuer-key/v1\0{key_ref}\0{purpose}").into_bytes()
}

impl IssuerKeys {
    /// A key store over `db`, sealing under `master`.
    pub fn new(db: Db, master: SecretKey<32>, clock: Arc<dyn Clock>) -> Self {
        Self {
            db,
            master: Arc::new(master),
            clock,
        }
    }

    /// A 32-byte key derived from the master key for one local purpose
    /// (HKDF-SHA256, info `kessai/derived/v1/<label>`): keyed hashes and
    /// at-rest sealing of host-side records. Every host process sharing the
    /// master key derives the same key; nothing derived is ever stored.
    pub fn derived_key(&self, label: &str) -> SecretKey<32> {
        let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(b"kessai"), self.master.expose());
        let mut out = zeroize::Zeroizing::new([0u8; 32]);
        let info = format!("kessai/derived/v1/{label}");
        // 32 bytes is far below HKDF-SHA256's output limit.
        hk.expand(info.as_bytes(), &mut out[..])
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        SecretKey::new(*out)
    }

    /// Seals a host-side secret record at rest (AES-256-GCM under a key
    /// derived for `label`, authenticating `aad`).
    pub fn seal_secret(&self, label: &str, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        seal_at_rest(&self.derived_key(label), aad, plaintext, &mut rand::rng())
    }

    /// Opens what [`IssuerKeys::seal_secret`] sealed with the same label and
    /// AAD; `None` if it does not authenticate.
    pub fn open_secret(
        &self,
        label: &str,
        aad: &[u8],
        sealed: &[u8],
    ) -> Option<kessai_secrets::SecretBytes> {
        open_at_rest(&self.derived_key(label), aad, sealed).ok()
    }

    /// Makes sure every purpose has an active key (first run).
    pub async fn ensure_all(&self) -> Result<(), KeyStoreError> {
        for p in KeyPurpose::ALL {
            if keys::active_key(&self.db, &p.key_id()).await?.is_none() {
                self.rotate(p).await?;
            }
        }
        Ok(())
    }

    /// Creates the next version of `purpose`'s key as active; the previous
    /// active version becomes retiring. Returns the new key ref.
    pub async fn rotate(&self, purpose: KeyPurpose) -> Result<KeyRef, KeyStoreError> {
        let id = purpose.key_id();
        for _ in 0..5 {
            let version = keys::next_version(&self.db, &id).await?;
            let key_ref = KeyRef::new(id.clone(), version).expect("versions start at 1");
            // ThreadRng is not Send: keep it out of the awaits below.
            let (public_key, sealed) = {
                let mut rng = rand::rng();
                let (public_key, secret) = match purpose {
                    KeyPurpose::HostSign => {
                        let k = SigningKey::generate(&mut rng);
                        let seed = k.seed_bytes();
                        (
                            k.verifying_key().to_bytes().to_vec(),
                            zeroize::Zeroizing::new(seed.expose().to_vec()),
                        )
                    }
                    KeyPurpose::Transmission | KeyPurpose::Storage => {
                        let k = HpkeKeyPair::generate(&mut rng);
                        let sk = k.secret_bytes();
                        (
                            k.public_key().to_bytes().to_vec(),
                            zeroize::Zeroizing::new(sk.expose().to_vec()),
                        )
                    }
                    KeyPurpose::CardMaster => {
                        // Symmetric: nothing public.
                        let mut k = zeroize::Zeroizing::new(vec![0u8; 16]);
                        rand::Rng::fill_bytes(&mut rng, &mut k[..]);
                        (Vec::new(), k)
                    }
                };
                let sealed = seal_at_rest(
                    &self.master,
                    &aad(&key_ref, purpose.code()),
                    &secret,
                    &mut rng,
                );
                (public_key, sealed)
            };
            let now = self.clock.now_ms();
            let record = KeyRecord {
                key_ref: key_ref.clone(),
                purpose: purpose.code().to_string(),
                algorithm: purpose.algorithm().to_string(),
                state: KeyState::Active,
                created_at_ms: now,
                state_changed_at_ms: now,
                public_key,
                sealed_secret: sealed,
            };
            if keys::insert_active(&self.db, &record, now).await? == InsertActive::Inserted {
                tracing::info!(key = %key_ref, "issuer key created");
                kessai_store::audit_log::append(
                    &self.db,
                    now,
                    "key.rotated",
                    &key_ref.to_string(),
                    &serde_json::json!({ "purpose": purpose.code() }),
                )
                .await?;
                return Ok(key_ref);
            }
        }
        Err(KeyStoreError::Contended)
    }

    /// Retires a version: it is refused from now on.
    pub async fn retire(&self, key_ref: &KeyRef) -> Result<(), KeyStoreError> {
        let now = self.clock.now_ms();
        if !keys::set_state(&self.db, key_ref, KeyState::Retired, now).await? {
            return Err(KeyStoreError::Unknown(key_ref.clone()));
        }
        kessai_store::audit_log::append(
            &self.db,
            now,
            "key.retired",
            &key_ref.to_string(),
            &serde_json::json!({}),
        )
        .await?;
        Ok(())
    }

    async fn usable(
        &self,
        key_ref: &KeyRef,
        purpose: KeyPurpose,
    ) -> Result<KeyRecord, KeyStoreError> {
        let rec = keys::key(&self.db, key_ref)
            .await?
            .filter(|r| r.state != KeyState::Retired)
            .ok_or_else(|| KeyStoreError::Unknown(key_ref.clone()))?;
        if rec.purpose != purpose.code() {
            return Err(KeyStoreError::WrongPurpose(key_ref.clone()));
        }
        Ok(rec)
    }

    fn unseal<const N: usize>(&self, rec: &KeyRecord) -> Result<SecretKey<N>, KeyStoreError> {
        let clear = open_at_rest(
            &self.master,
            &aad(&rec.key_ref, &rec.purpose),
            &rec.sealed_secret,
        )
        .map_err(|_| KeyStoreError::Unseal(rec.key_ref.clone()))?;
        SecretKey::from_slice(clear.expose())
            .map_err(|_| KeyStoreError::Unseal(rec.key_ref.clone()))
    }

    async fn active_record(&self, purpose: KeyPurpose) -> Result<KeyRecord, KeyStoreError> {
        if let Some(r) = keys::active_key(&self.db, &purpose.key_id()).await? {
            return Ok(r);
        }
        let key_ref = self.rotate(purpose).await?;
        self.usable(&key_ref, purpose).await
    }

    /// The active host signing key.
    pub async fn host_signer(&self) -> Result<(KeyRef, SigningKey), KeyStoreError> {
        let rec = self.active_record(KeyPurpose::HostSign).await?;
        let seed = self.unseal::<32>(&rec)?;
        Ok((rec.key_ref.clone(), SigningKey::from_seed(seed.expose())))
    }

    /// The verifying key of a host signing key version (active or retiring).
    pub async fn host_verifier(&self, key_ref: &KeyRef) -> Result<VerifyingKey, KeyStoreError> {
        let rec = self.usable(key_ref, KeyPurpose::HostSign).await?;
        let pk: [u8; 32] = rec
            .public_key
            .as_slice()
            .try_into()
            .map_err(|_| KeyStoreError::WrongPurpose(key_ref.clone()))?;
        VerifyingKey::from_bytes(&pk).map_err(|_| KeyStoreError::WrongPurpose(key_ref.clone()))
    }

    /// The active HPKE public key of `purpose`.
    pub async fn hpke_public(
        &self,
        purpose: KeyPurpose,
    ) -> Result<(KeyRef, HpkePublicKey), KeyStoreError> {
        let rec = self.active_record(purpose).await?;
        let pk: [u8; 32] = rec
            .public_key
            .as_slice()
            .try_into()
            .map_err(|_| KeyStoreError::WrongPurpose(rec.key_ref.clone()))?;
        let pk = HpkePublicKey::from_bytes(&pk)
            .map_err(|_| KeyStoreError::WrongPurpose(rec.key_ref.clone()))?;
        Ok((rec.key_ref, pk))
    }

    /// The HPKE key pair of a version (active or retiring).
    pub async fn hpke_keypair(
        &self,
        key_ref: &KeyRef,
        purpose: KeyPurpose,
    ) -> Result<HpkeKeyPair, KeyStoreError> {
        let rec = self.usable(key_ref, purpose).await?;
        let sk = self.unseal::<32>(&rec)?;
        Ok(HpkeKeyPair::from_secret_bytes(sk.expose()))
    }

    /// The active issuer card master key (AES-128) and its ref.
    pub async fn card_master(
        &self,
    ) -> Result<(KeyRef, kessai_secrets::SecretKey<16>), KeyStoreError> {
        let rec = self.active_record(KeyPurpose::CardMaster).await?;
        Ok((rec.key_ref.clone(), self.unseal::<16>(&rec)?))
    }

    /// A card master key version (active or retiring), for cards issued
    /// under it.
    pub async fn card_master_version(
        &self,
        key_ref: &KeyRef,
    ) -> Result<kessai_secrets::SecretKey<16>, KeyStoreError> {
        let rec = self.usable(key_ref, KeyPurpose::CardMaster).await?;
        self.unseal::<16>(&rec)
    }

    /// Every key version, public parts only.
    pub async fn list(&self) -> Result<Vec<KeyInfo>, KeyStoreError> {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        Ok(keys::all_keys(&self.db)
            .await?
            .into_iter()
            .filter_map(|r| {
                let state = r.state_code().to_string();
                Some(KeyInfo {
                    purpose: KeyPurpose::from_code(&r.purpose)?,
                    state,
                    key_ref: r.key_ref,
                    algorithm: r.algorithm,
                    created_at_ms: r.created_at_ms,
                    public_key: b64.encode(&r.public_key),
                })
            })
            .collect())
    }

    /// Writes every public key as a PEM SubjectPublicKeyInfo file named by
    /// its key ref (`host-sign#1.pem`) into `dir`. Returns the file names.
    pub async fn export_public(&self, dir: &Path) -> Result<Vec<String>, KeyStoreError> {
        std::fs::create_dir_all(dir)?;
        let mut names = Vec::new();
        for r in keys::all_keys(&self.db).await? {
            let Ok(pk) = <[u8; 32]>::try_from(r.public_key.as_slice()) else {
                continue;
            };
            let pem = match KeyPurpose::from_code(&r.purpose) {
                Some(KeyPurpose::HostSign) => match VerifyingKey::from_bytes(&pk) {
                    Ok(vk) => vk.to_public_pem(),
                    Err(_) => continue,
                },
                Some(KeyPurpose::Transmission | KeyPurpose::Storage) => x25519_spki_pem(&pk),
                Some(KeyPurpose::CardMaster) | None => continue,
            };
            let name = format!("{}.pem", r.key_ref);
            std::fs::write(dir.join(&name), pem)?;
            names.push(name);
        }
        Ok(names)
    }
}

/// PEM SubjectPublicKeyInfo of an X25519 public key (RFC 8410: algorithm
/// id-X25519 1.3.101.110, no parameters).
pub fn x25519_spki_pem(pk: &[u8; 32]) -> String {
    const PREFIX: [u8; 12] = [
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x03, 0x21, 0x00,
    ];
    let mut der = PREFIX.to_vec();
    der.extend_from_slice(pk);
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    format!("-----BEGIN PUBLIC KEY-----\n{b64}\n-----END PUBLIC KEY-----\n")
}

trait StateCode {
    fn state_code(&self) -> &'static str;
}

impl StateCode for KeyRecord {
    fn state_code(&self) -> &'static str {
        match self.state {
            KeyState::Active => "active",
            KeyState::Retiring => "retiring",
            KeyState::Retired => "retired",
        }
    }
}
