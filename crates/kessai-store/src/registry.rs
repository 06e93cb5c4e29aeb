//! The issuer's registry of merchants (stores, malls, member stores) with
//! their signing keys, and of cardholders.
//!
//! A *store* signs its own bills; a *mall* signs bills for its *member
//! stores* (seed 001, mall embodiment), so a member store has no key of its
//! own and is paid into its own payable account. Merchant keys are Ed25519
//! public keys with versions; registering a new key makes it active and the
//! previous one *retiring* (still accepted for artefacts already issued).

use kessai_ids::{AccountId, CardholderId, StoreId};
use kessai_money::Currency;

use crate::{Db, StoreError, on_pool};

/// Why a registry call was refused.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A merchant or cardholder with this id exists already.
    #[error("already registered")]
    AlreadyExists,
    /// No such merchant / cardholder / mall.
    #[error("not registered")]
    NotFound,
    /// The request contradicts the registry (member of a non-mall, key for a
    /// member store, ...).
    #[error("invalid registration: {0}")]
    Invalid(&'static str),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for RegistryError {
    fn from(e: sqlx::Error) -> Self {
        if crate::db::is_unique_violation(&e) {
            RegistryError::AlreadyExists
        } else {
            RegistryError::Store(StoreError::Database(e))
        }
    }
}

/// What kind of merchant a registry entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MerchantKind {
    /// A store with its own signing key.
    Store,
    /// A mall: signs for its member stores.
    Mall,
    /// A member store of a mall.
    Member,
}

impl MerchantKind {
    fn code(self) -> &'static str {
        match self {
            Self::Store => "store",
            Self::Mall => "mall",
            Self::Member => "member",
        }
    }
    fn from_code(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "store" => Self::Store,
            "mall" => Self::Mall,
            "member" => Self::Member,
            _ => return Err(StoreError::corrupt("merchants", "unknown kind")),
        })
    }
}

/// Whether a merchant may take payments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MerchantStatus {
    /// Payments accepted.
    Active,
    /// Payments refused (declined as an unknown merchant would be).
    Suspended,
}

impl MerchantStatus {
    fn code(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Suspended => "suspended",
        }
    }
    fn from_code(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "active" => Self::Active,
            "suspended" => Self::Suspended,
            _ => return Err(StoreError::corrupt("merchants", "unknown status")),
        })
    }
}

/// Lifecycle of a (merchant or issuer) key version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    /// Used for new signatures / encryptions; accepted.
    Active,
    /// Superseded: accepted for verification/decryption during a grace
    /// period, never used for new artefacts.
    Retiring,
    /// Refused.
    Retired,
}

impl KeyState {
    pub(crate) fn code(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Retiring => "retiring",
            Self::Retired => "retired",
        }
    }
    pub(crate) fn from_code(table: &'static str, s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "active" => Self::Active,
            "retiring" => Self::Retiring,
            "retired" => Self::Retired,
            _ => return Err(StoreError::corrupt(table, "unknown key state")),
        })
    }
}

/// A registered merchant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merchant {
    /// Merchant id (malls share the id space with stores).
    pub id: StoreId,
    /// Store, mall or member store.
    pub kind: MerchantKind,
    /// Display name shown to customers.
    pub name: String,
    /// The mall of a member store.
    pub mall_id: Option<StoreId>,
    /// Active or suspended.
    pub status: MerchantStatus,
    /// Settlement currency.
    pub currency: Currency,
    /// Ledger account credited with its sales (`None` for a mall).
    pub payable_account: Option<AccountId>,
    /// Registration time, unix ms.
    pub created_at_ms: i64,
}

/// One version of a merchant's Ed25519 public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerchantKey {
    /// Owner.
    pub merchant_id: StoreId,
    /// Version, from 1.
    pub version: u32,
    /// 32-byte Ed25519 public key.
    pub public_key: Vec<u8>,
    /// Lifecycle state.
    pub state: KeyState,
    /// Registration time, unix ms.
    pub created_at_ms: i64,
}

/// A cardholder at the issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cardholder {
    /// Cardholder id.
    pub id: CardholderId,
    /// Name (shown masked nowhere: it is not a secret, but keep it off
    /// merchant messages).
    pub name: String,
    /// The cardholder funding account (credit line or balance).
    pub funding_account: AccountId,
    /// Registration time, unix ms.
    pub created_at_ms: i64,
}

type MerchantRow = (
    String,
    String,
    String,
    Option<String>,
    String,
    String,
    Option<String>,
    i64,
);

fn merchant_from_row(r: MerchantRow) -> Result<Merchant, StoreError> {
    let bad = |what: &str| StoreError::corrupt("merchants", what.to_string());
    Ok(Merchant {
        id: StoreId::new(r.0).map_err(|_| bad("id"))?,
        kind: MerchantKind::from_code(&r.1)?,
        name: r.2,
        mall_id: r
            .3
            .map(StoreId::new)
            .transpose()
            .map_err(|_| bad("mall_id"))?,
        status: MerchantStatus::from_code(&r.4)?,
        currency: Currency::from_code(&r.5).map_err(|_| bad("currency"))?,
        payable_account: r
            .6
            .map(AccountId::new)
            .transpose()
            .map_err(|_| bad("payable_account"))?,
        created_at_ms: r.7,
    })
}

const MERCHANT_COLUMNS: &str =
    "id, kind, name, mall_id, status, currency, payable_account, created_at_ms";

/// A new merchant registration.
#[derive(Debug, Clone)]
pub struct NewMerchant {
    /// Id.
    pub id: StoreId,
    /// Kind.
    pub kind: MerchantKind,
    /// Display name.
    pub name: String,
    /// Mall, for a member store.
    pub mall_id: Option<StoreId>,
    /// Settlement currency.
    pub currency: Currency,
    /// Payable account (already created in the ledger); `None` for a mall.
    pub payable_account: Option<AccountId>,
    /// Ed25519 public key (stores and malls; `None` for member stores).
    pub public_key: Option<[u8; 32]>,
    /// Registration time, unix ms.
    pub now_ms: i64,
}

/// Registers a merchant (and its first key) in one transaction.
pub async fn insert_merchant(db: &Db, m: &NewMerchant) -> Result<Merchant, RegistryError> {
    match (m.kind, &m.mall_id, &m.public_key, &m.payable_account) {
        (MerchantKind::Member, None, _, _) => {
            return Err(RegistryError::Invalid("a member store needs a mall"));
        }
        (MerchantKind::Member, Some(_), Some(_), _) => {
            return Err(RegistryError::Invalid(
                "a member store signs through its mall and has no key",
            ));
        }
        (MerchantKind::Store | MerchantKind::Mall, Some(_), _, _) => {
            return Err(RegistryError::Invalid(
                "only member stores belong to a mall",
            ));
        }
        (MerchantKind::Store | MerchantKind::Mall, None, None, _) => {
            return Err(RegistryError::Invalid("a store or mall needs a public key"));
        }
        (MerchantKind::Mall, _, _, Some(_)) => {
            return Err(RegistryError::Invalid("a mall has no payable account"));
        }
        (MerchantKind::Store | MerchantKind::Member, _, _, None) => {
            return Err(RegistryError::Invalid("a store needs a payable account"));
        }
        _ => {}
    }
    if let Some(mall) = &m.mall_id {
        let parent = merchant(db, mall).await?.ok_or(RegistryError::NotFound)?;
        if parent.kind != MerchantKind::Mall {
            return Err(RegistryError::Invalid("the parent is not a mall"));
        }
    }
    let mut tx = db.begin_write().await?;
    crate::on_tx!(tx, |conn| {
        sqlx::query(
            "INSERT INTO merchants (id, kind, name, mall_id, status, currency, payable_account, created_at_ms) \
             VALUES ($1, $2, $3, $4, 'active', $5, $6, $7)",
        )
        .bind(m.id.as_str())
        .bind(m.kind.code())
        .bind(&m.name)
        .bind(m.mall_id.as_ref().map(|x| x.as_str().to_string()))
        .bind(m.currency.code())
        .bind(m.payable_account.as_ref().map(|x| x.as_str().to_string()))
        .bind(m.now_ms)
        .execute(&mut *conn)
        .await.map(|r| r.rows_affected())
    })?;
    if let Some(pk) = &m.public_key {
        crate::on_tx!(tx, |conn| {
            sqlx::query(
                "INSERT INTO merchant_keys (merchant_id, version, public_key, state, created_at_ms) \
                 VALUES ($1, 1, $2, 'active', $3)",
            )
            .bind(m.id.as_str())
            .bind(pk.to_vec())
            .bind(m.now_ms)
            .execute(&mut *conn)
            .await.map(|r| r.rows_affected())
        })?;
    }
    tx.commit().await?;
    merchant(db, &m.id).await?.ok_or(RegistryError::NotFound)
}

/// Looks a merchant up.
pub async fn merchant(db: &Db, id: &StoreId) -> Result<Option<Merchant>, StoreError> {
    let sql = format!("SELECT {MERCHANT_COLUMNS} FROM merchants WHERE id = $1");
    let row: Option<MerchantRow> = on_pool!(db, |pool| {
        sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
            .bind(id.as_str())
            .fetch_optional(pool)
            .await
    })?;
    row.map(merchant_from_row).transpose()
}

/// All merchants, by id.
pub async fn merchants(db: &Db) -> Result<Vec<Merchant>, StoreError> {
    let sql = format!("SELECT {MERCHANT_COLUMNS} FROM merchants ORDER BY id");
    let rows: Vec<MerchantRow> = on_pool!(db, |pool| {
        sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
            .fetch_all(pool)
            .await
    })?;
    rows.into_iter().map(merchant_from_row).collect()
}

/// Suspends or reactivates a merchant.
pub async fn set_merchant_status(
    db: &Db,
    id: &StoreId,
    status: MerchantStatus,
) -> Result<(), RegistryError> {
    let n = on_pool!(db, |pool| {
        sqlx::query("UPDATE merchants SET status = $1 WHERE id = $2")
            .bind(status.code())
            .bind(id.as_str())
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
    })?;
    if n == 0 {
        return Err(RegistryError::NotFound);
    }
    Ok(())
}

type KeyRow = (String, i64, Vec<u8>, String, i64);

/// Every key version of a merchant, oldest first.
pub async fn merchant_keys(db: &Db, id: &StoreId) -> Result<Vec<MerchantKey>, StoreError> {
    let rows: Vec<KeyRow> = on_pool!(db, |pool| {
        sqlx::query_as(
            "SELECT merchant_id, version, public_key, state, created_at_ms FROM merchant_keys \
             WHERE merchant_id = $1 ORDER BY version",
        )
        .bind(id.as_str())
        .fetch_all(pool)
        .await
    })?;
    rows.into_iter()
        .map(|r| {
            Ok(MerchantKey {
                merchant_id: StoreId::new(r.0)
                    .map_err(|_| StoreError::corrupt("merchant_keys", "merchant_id"))?,
                version: u32::try_from(r.1)
                    .map_err(|_| StoreError::corrupt("merchant_keys", "version"))?,
                public_key: r.2,
                state: KeyState::from_code("merchant_keys", &r.3)?,
                created_at_ms: r.4,
            })
        })
        .collect()
}

/// Registers a new key version for a store or mall: it becomes active, the
/// previous active version becomes retiring. Returns the new version.
pub async fn rotate_merchant_key(
    db: &Db,
    id: &StoreId,
    public_key: [u8; 32],
    now_ms: i64,
) -> Result<u32, RegistryError> {
    let m = merchant(db, id).await?.ok_or(RegistryError::NotFound)?;
    if m.kind == MerchantKind::Member {
        return Err(RegistryError::Invalid(
            "a member store signs through its mall and has no key",
        ));
    }
    let mut tx = db.begin_write().await?;
    let max: Option<i64> = crate::on_tx!(tx, |conn| {
        sqlx::query_scalar("SELECT MAX(version) FROM merchant_keys WHERE merchant_id = $1")
            .bind(id.as_str())
            .fetch_one(&mut *conn)
            .await
    })?;
    let next = max.unwrap_or(0) + 1;
    crate::on_tx!(tx, |conn| {
        sqlx::query("UPDATE merchant_keys SET state = 'retiring' WHERE merchant_id = $1 AND state = 'active'")
            .bind(id.as_str())
            .execute(&mut *conn)
            .await.map(|r| r.rows_affected())
    })?;
    crate::on_tx!(tx, |conn| {
        sqlx::query(
            "INSERT INTO merchant_keys (merchant_id, version, public_key, state, created_at_ms) \
             VALUES ($1, $2, $3, 'active', $4)",
        )
        .bind(id.as_str())
        .bind(next)
        .bind(public_key.to_vec())
        .bind(now_ms)
        .execute(&mut *conn)
        .await
        .map(|r| r.rows_affected())
    })?;
    tx.commit().await?;
    u32::try_from(next).map_err(|_| RegistryError::Invalid("key version overflow"))
}

/// Registers a cardholder whose funding account already exists.
pub async fn insert_cardholder(db: &Db, c: &Cardholder) -> Result<(), RegistryError> {
    on_pool!(db, |pool| {
        sqlx::query(
            "INSERT INTO cardholders (id, name, funding_account, created_at_ms) VALUES ($1, $2, $3, $4)",
        )
        .bind(c.id.as_str())
        .bind(&c.name)
        .bind(c.funding_account.as_str())
        .bind(c.created_at_ms)
        .execute(pool)
        .await.map(|r| r.rows_affected())
    })?;
    Ok(())
}

/// Looks a cardholder up.
pub async fn cardholder(db: &Db, id: &CardholderId) -> Result<Option<Cardholder>, StoreError> {
    let row: Option<(String, String, String, i64)> = on_pool!(db, |pool| {
        sqlx::query_as(
            "SELECT id, name, funding_account, created_at_ms FROM cardholders WHERE id = $1",
        )
        .bind(id.as_str())
        .fetch_optional(pool)
        .await
    })?;
    row.map(|r| {
        Ok(Cardholder {
            id: CardholderId::new(r.0).map_err(|_| StoreError::corrupt("cardholders", "id"))?,
            name: r.1,
            funding_account: AccountId::new(r.2)
                .map_err(|_| StoreError::corrupt("cardholders", "funding_account"))?,
            created_at_ms: r.3,
        })
    })
    .transpose()
}
