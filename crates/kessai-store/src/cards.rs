//! IC cards issued by the host and the host's *shadow* of each card: the
//! last balance and transaction counter it verified from the card itself
//! (an R-MAC'd response). The shadow only moves forward: an update with a
//! counter not above the stored one is refused, so a replayed or stale card
//! response can never roll it back.

use kessai_ids::{AccountId, CardId, CardholderId, KeyRef};
use kessai_money::Currency;

use crate::{Db, StoreError, on_pool};

/// A registered card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardRecord {
    /// Card id.
    pub card_id: CardId,
    /// Issuer card master key version its keys come from.
    pub master_key_ref: KeyRef,
    /// SCP03 key version number on the card (1..=127).
    pub key_version: u8,
    /// Purse currency.
    pub currency: Currency,
    /// Purse maximum, minor units.
    pub purse_max_minor: i64,
    /// The e-money outstanding account of this card.
    pub emoney_account: AccountId,
    /// Owner, if registered to a cardholder.
    pub cardholder_id: Option<CardholderId>,
    /// `true` if blocked by the issuer.
    pub blocked: bool,
    /// Last verified balance, minor units.
    pub shadow_balance_minor: i64,
    /// Last verified transaction counter.
    pub shadow_counter: i64,
    /// Issuance time, unix ms.
    pub created_at_ms: i64,
}

type Row = (
    String,
    String,
    i64,
    String,
    i64,
    String,
    Option<String>,
    String,
    i64,
    i64,
    i64,
);

fn from_row(r: Row) -> Result<CardRecord, StoreError> {
    let bad = |w: &str| StoreError::corrupt("cards", w.to_string());
    Ok(CardRecord {
        card_id: CardId::new(r.0).map_err(|_| bad("card_id"))?,
        master_key_ref: r.1.parse().map_err(|_| bad("master_key_ref"))?,
        key_version: u8::try_from(r.2).map_err(|_| bad("key_version"))?,
        currency: Currency::from_code(&r.3).map_err(|_| bad("currency"))?,
        purse_max_minor: r.4,
        emoney_account: AccountId::new(r.5).map_err(|_| bad("emoney_account"))?,
        cardholder_id: r
            .6
            .map(CardholderId::new)
            .transpose()
            .map_err(|_| bad("cardholder_id"))?,
        blocked: match r.7.as_str() {
            "active" => false,
            "blocked" => true,
            _ => return Err(bad("status")),
        },
        shadow_balance_minor: r.8,
        shadow_counter: r.9,
        created_at_ms: r.10,
    })
}

const COLUMNS: &str = "card_id, master_key_ref, key_version, currency, purse_max_minor, emoney_account, \
                       cardholder_id, status, shadow_balance_minor, shadow_counter, created_at_ms";

/// Registers a card; `Ok(false)` if the id is taken.
pub async fn insert_card(db: &Db, c: &CardRecord) -> Result<bool, StoreError> {
    let sql = format!(
        "INSERT INTO cards ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
         ON CONFLICT (card_id) DO NOTHING"
    );
    let n = on_pool!(db, |pool| {
        sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .bind(c.card_id.as_str())
            .bind(c.master_key_ref.to_string())
            .bind(i64::from(c.key_version))
            .bind(c.currency.code())
            .bind(c.purse_max_minor)
            .bind(c.emoney_account.as_str())
            .bind(c.cardholder_id.as_ref().map(|x| x.as_str().to_string()))
            .bind(if c.blocked { "blocked" } else { "active" })
            .bind(c.shadow_balance_minor)
            .bind(c.shadow_counter)
            .bind(c.created_at_ms)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
    })?;
    Ok(n == 1)
}

/// Looks a card up.
pub async fn card(db: &Db, id: &CardId) -> Result<Option<CardRecord>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM cards WHERE card_id = $1");
    let row: Option<Row> = on_pool!(db, |pool| {
        sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
            .bind(id.as_str())
            .fetch_optional(pool)
            .await
    })?;
    row.map(from_row).transpose()
}

/// Moves the shadow forward to a balance and counter verified from the
/// card. Returns `false` (and changes nothing) if `counter` is not above the
/// stored counter.
pub async fn advance_shadow(
    db: &Db,
    id: &CardId,
    balance_minor: i64,
    counter: i64,
) -> Result<bool, StoreError> {
    let n = on_pool!(db, |pool| {
        sqlx::query(
            "UPDATE cards SET shadow_balance_minor = $1, shadow_counter = $2 \
             WHERE card_id = $3 AND shadow_counter < $2",
        )
        .bind(balance_minor)
        .bind(counter)
        .bind(id.as_str())
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
    })?;
    Ok(n == 1)
}
