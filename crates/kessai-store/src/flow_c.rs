//! Persistence of flow C (card reader plugged into the phone, seed 002):
//!
//! - **phones** ([`PhoneRow`]): the customer's phone number, its registered
//!   device key and the cardholder it pays for;
//! - **cards** ([`CardRow`]): the seed's cardholder table, found by a keyed
//!   hash of the PAN ([`card_by_index`]) and never holding the PAN, the PIN
//!   or a PIN block — only the masked PAN and keyed PIN verification data;
//! - **transaction keys** ([`TxnKeyRow`]): the per-transaction HPKE key pair
//!   with its secret sealed by the caller, deleted by [`destroy_txn_key`]
//!   when the transaction ends;
//! - **messages** ([`MessageRow`]): signed artefacts queued for a phone or a
//!   merchant to collect ([`messages_after`]); enqueueing the same artefact
//!   twice for one recipient is a no-op, so effects can be retried.
//!
//! Transaction state itself lives in [`crate::flow_support`] sessions and
//! PIN try counters in its attempt counters. Every write is one statement
//! whose outcome the database decides, so several host processes sharing
//! one PostgreSQL agree.

use sha2::{Digest, Sha256};

use crate::{Db, StoreError, on_pool};

/// A registered phone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhoneRow {
    /// Device (wallet) id.
    pub device_id: String,
    /// E.164 phone number.
    pub phone_number: String,
    /// The cardholder it pays for.
    pub cardholder_id: String,
    /// Version of the device key (the `#N` of its key ref).
    pub key_version: i64,
    /// Ed25519 public key (32 bytes).
    pub public_key: Vec<u8>,
    /// `active` or `suspended`.
    pub status: String,
    /// Registration time, unix ms.
    pub created_at_ms: i64,
}

type PhoneTuple = (String, String, String, i64, Vec<u8>, String, i64);

fn phone_from(r: PhoneTuple) -> PhoneRow {
    PhoneRow {
        device_id: r.0,
        phone_number: r.1,
        cardholder_id: r.2,
        key_version: r.3,
        public_key: r.4,
        status: r.5,
        created_at_ms: r.6,
    }
}

const PHONE_COLUMNS: &str =
    "device_id, phone_number, cardholder_id, key_version, public_key, status, created_at_ms";

/// Registers a phone; `Ok(false)` if the device id or the phone number is
/// taken.
pub async fn insert_phone(db: &Db, p: &PhoneRow) -> Result<bool, StoreError> {
    let n = on_pool!(db, |pool| {
        sqlx::query(
            "INSERT INTO flowc_phones (device_id, phone_number, cardholder_id, key_version, public_key, status, created_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        )
        .bind(&p.device_id)
        .bind(&p.phone_number)
        .bind(&p.cardholder_id)
        .bind(p.key_version)
        .bind(&p.public_key)
        .bind(&p.status)
        .bind(p.created_at_ms)
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
    })?;
    Ok(n == 1)
}

/// The phone registered under `device_id`.
pub async fn phone_by_device(db: &Db, device_id: &str) -> Result<Option<PhoneRow>, StoreError> {
    let sql = format!("SELECT {PHONE_COLUMNS} FROM flowc_phones WHERE device_id = $1");
    let row: Option<PhoneTuple> = on_pool!(db, |pool| {
        sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
            .bind(device_id)
            .fetch_optional(pool)
            .await
    })?;
    Ok(row.map(phone_from))
}

/// The phone registered for `phone_number`.
pub async fn phone_by_number(db: &Db, phone_number: &str) -> Result<Option<PhoneRow>, StoreError> {
    let sql = format!("SELECT {PHONE_COLUMNS} FROM flowc_phones WHERE phone_number = $1");
    let row: Option<PhoneTuple> = on_pool!(db, |pool| {
        sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
            .bind(phone_number)
            .fetch_optional(pool)
            .await
    })?;
    Ok(row.map(phone_from))
}

/// A card of the issuer's cardholder table. Holds no card number and no
/// PIN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardRow {
    /// Card id.
    pub card_id: String,
    /// Keyed hash of the PAN (32 bytes).
    pub pan_index: Vec<u8>,
    /// Key ref of the issuer key the index key was derived from.
    pub index_key_ref: String,
    /// BIN + last four.
    pub masked_pan: String,
    /// Expiry on record, `YYMM`.
    pub expiry_yymm: String,
    /// Owner.
    pub cardholder_id: String,
    /// Funding account payments debit.
    pub funding_account: String,
    /// Keyed PIN verification data (kessai-pin stored form).
    pub pin_verification: Vec<u8>,
    /// Key ref of the issuer key the PIN verification key was derived from.
    pub pvk_ref: String,
    /// `active` or `blocked`.
    pub status: String,
    /// Registration time, unix ms.
    pub created_at_ms: i64,
}

type CardTuple = (
    String,
    Vec<u8>,
    String,
    String,
    String,
    String,
    String,
    Vec<u8>,
    String,
    String,
    i64,
);

fn card_from(r: CardTuple) -> CardRow {
    CardRow {
        card_id: r.0,
        pan_index: r.1,
        index_key_ref: r.2,
        masked_pan: r.3,
        expiry_yymm: r.4,
        cardholder_id: r.5,
        funding_account: r.6,
        pin_verification: r.7,
        pvk_ref: r.8,
        status: r.9,
        created_at_ms: r.10,
    }
}

const CARD_COLUMNS: &str = "card_id, pan_index, index_key_ref, masked_pan, expiry_yymm, \
     cardholder_id, funding_account, pin_verification, pvk_ref, status, created_at_ms";

/// Registers a card; `Ok(false)` if the card id or the PAN (its index) is
/// registered already.
pub async fn insert_card(db: &Db, c: &CardRow) -> Result<bool, StoreError> {
    let n = on_pool!(db, |pool| {
        sqlx::query(
            "INSERT INTO flowc_cards (card_id, pan_index, index_key_ref, masked_pan, expiry_yymm, \
             cardholder_id, funding_account, pin_verification, pvk_ref, status, created_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT DO NOTHING",
        )
        .bind(&c.card_id)
        .bind(&c.pan_index)
        .bind(&c.index_key_ref)
        .bind(&c.masked_pan)
        .bind(&c.expiry_yymm)
        .bind(&c.cardholder_id)
        .bind(&c.funding_account)
        .bind(&c.pin_verification)
        .bind(&c.pvk_ref)
        .bind(&c.status)
        .bind(c.created_at_ms)
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
    })?;
    Ok(n == 1)
}

/// The card whose PAN index is `pan_index`.
pub async fn card_by_index(db: &Db, pan_index: &[u8]) -> Result<Option<CardRow>, StoreError> {
    let sql = format!("SELECT {CARD_COLUMNS} FROM flowc_cards WHERE pan_index = $1");
    let row: Option<CardTuple> = on_pool!(db, |pool| {
        sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
            .bind(pan_index)
            .fetch_optional(pool)
            .await
    })?;
    Ok(row.map(card_from))
}

/// The card `card_id`.
pub async fn card_by_id(db: &Db, card_id: &str) -> Result<Option<CardRow>, StoreError> {
    let sql = format!("SELECT {CARD_COLUMNS} FROM flowc_cards WHERE card_id = $1");
    let row: Option<CardTuple> = on_pool!(db, |pool| {
        sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
            .bind(card_id)
            .fetch_optional(pool)
            .await
    })?;
    Ok(row.map(card_from))
}

/// Blocks or reactivates a card; `Ok(false)` if there is no such card.
pub async fn set_card_status(db: &Db, card_id: &str, status: &str) -> Result<bool, StoreError> {
    let n = on_pool!(db, |pool| {
        sqlx::query("UPDATE flowc_cards SET status = $1 WHERE card_id = $2")
            .bind(status)
            .bind(card_id)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
    })?;
    Ok(n == 1)
}

/// A transaction key pair at rest: the secret sealed by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnKeyRow {
    /// `flowc-txn-<txn id>#1`.
    pub key_ref: String,
    /// The transaction.
    pub txn_id: String,
    /// The issuer key the secret is sealed to.
    pub storage_key_ref: String,
    /// HPKE encapsulated key.
    pub enc: Vec<u8>,
    /// Sealed secret.
    pub sealed_secret: Vec<u8>,
    /// When stored, unix ms.
    pub created_at_ms: i64,
}

/// Stores a transaction key durably; `Ok(false)` if one exists under this
/// key ref (another request generated it first).
pub async fn put_txn_key(db: &Db, k: &TxnKeyRow) -> Result<bool, StoreError> {
    let n = on_pool!(db, |pool| {
        sqlx::query(
            "INSERT INTO flowc_txn_keys (key_ref, txn_id, storage_key_ref, enc, sealed_secret, created_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (key_ref) DO NOTHING",
        )
        .bind(&k.key_ref)
        .bind(&k.txn_id)
        .bind(&k.storage_key_ref)
        .bind(&k.enc)
        .bind(&k.sealed_secret)
        .bind(k.created_at_ms)
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
    })?;
    Ok(n == 1)
}

type TxnKeyTuple = (String, String, String, Vec<u8>, Vec<u8>, i64);

/// A stored transaction key.
pub async fn txn_key(db: &Db, key_ref: &str) -> Result<Option<TxnKeyRow>, StoreError> {
    let row: Option<TxnKeyTuple> = on_pool!(db, |pool| {
        sqlx::query_as(
            "SELECT key_ref, txn_id, storage_key_ref, enc, sealed_secret, created_at_ms \
             FROM flowc_txn_keys WHERE key_ref = $1",
        )
        .bind(key_ref)
        .fetch_optional(pool)
        .await
    })?;
    Ok(row.map(|r| TxnKeyRow {
        key_ref: r.0,
        txn_id: r.1,
        storage_key_ref: r.2,
        enc: r.3,
        sealed_secret: r.4,
        created_at_ms: r.5,
    }))
}

/// Destroys a transaction key: overwrites the sealed secret, then deletes
/// the row. `Ok(true)` if this call removed it (idempotent).
pub async fn destroy_txn_key(db: &Db, key_ref: &str) -> Result<bool, StoreError> {
    let mut tx = db.begin_write().await?;
    crate::on_tx!(tx, |conn| {
        sqlx::query("UPDATE flowc_txn_keys SET sealed_secret = $1, enc = $1 WHERE key_ref = $2")
            .bind(vec![0u8; 32])
            .bind(key_ref)
            .execute(&mut *conn)
            .await
            .map(|r| r.rows_affected())
    })?;
    let n = crate::on_tx!(tx, |conn| {
        sqlx::query("DELETE FROM flowc_txn_keys WHERE key_ref = $1")
            .bind(key_ref)
            .execute(&mut *conn)
            .await
            .map(|r| r.rows_affected())
    })?;
    tx.commit().await?;
    Ok(n == 1)
}

/// A queued message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRow {
    /// Queue position (increasing per database).
    pub seq: i64,
    /// `phone:<device id>` or `merchant:<store id>`.
    pub recipient: String,
    /// The transaction.
    pub txn_id: String,
    /// What it is (`approval_request`, `transaction_key`, ...).
    pub kind: String,
    /// The signed artefact.
    pub artefact: Vec<u8>,
    /// When queued, unix ms.
    pub created_at_ms: i64,
}

/// Queues `artefact` for `recipient`; a second call with the same artefact
/// for the same recipient is a no-op. Returns `Ok(true)` if queued now.
pub async fn enqueue_message(
    db: &Db,
    recipient: &str,
    txn_id: &str,
    kind: &str,
    artefact: &[u8],
    now_ms: i64,
) -> Result<bool, StoreError> {
    let digest: [u8; 32] = Sha256::digest(artefact).into();
    let n = on_pool!(db, |pool| {
        sqlx::query(
            "INSERT INTO flowc_messages (recipient, txn_id, kind, artefact, digest, created_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (recipient, digest) DO NOTHING",
        )
        .bind(recipient)
        .bind(txn_id)
        .bind(kind)
        .bind(artefact)
        .bind(digest.to_vec())
        .bind(now_ms)
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
    })?;
    Ok(n == 1)
}

type MessageTuple = (i64, String, String, String, Vec<u8>, i64);

/// Messages for `recipient` after position `after_seq`, oldest first, at
/// most `limit`.
pub async fn messages_after(
    db: &Db,
    recipient: &str,
    after_seq: i64,
    limit: i64,
) -> Result<Vec<MessageRow>, StoreError> {
    let rows: Vec<MessageTuple> = on_pool!(db, |pool| {
        sqlx::query_as(
            "SELECT seq, recipient, txn_id, kind, artefact, created_at_ms FROM flowc_messages \
             WHERE recipient = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(recipient)
        .bind(after_seq)
        .bind(limit)
        .fetch_all(pool)
        .await
    })?;
    Ok(rows
        .into_iter()
        .map(|r| MessageRow {
            seq: r.0,
            recipient: r.1,
            txn_id: r.2,
            kind: r.3,
            artefact: r.4,
            created_at_ms: r.5,
        })
        .collect())
}

/// Messages of one transaction for `recipient`, oldest first.
pub async fn messages_for_txn(
    db: &Db,
    recipient: &str,
    txn_id: &str,
) -> Result<Vec<MessageRow>, StoreError> {
    let rows: Vec<MessageTuple> = on_pool!(db, |pool| {
        sqlx::query_as(
            "SELECT seq, recipient, txn_id, kind, artefact, created_at_ms FROM flowc_messages \
             WHERE recipient = $1 AND txn_id = $2 ORDER BY seq",
        )
        .bind(recipient)
        .bind(txn_id)
        .fetch_all(pool)
        .await
    })?;
    Ok(rows
        .into_iter()
        .map(|r| MessageRow {
            seq: r.0,
            recipient: r.1,
            txn_id: r.2,
            kind: r.3,
            artefact: r.4,
            created_at_ms: r.5,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn db() -> (Db, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path().to_str().unwrap()).await.unwrap();
        (db, dir)
    }

    #[tokio::test]
    async fn phones_are_unique_by_device_and_number() {
        let (db, _d) = db().await;
        let p = PhoneRow {
            device_id: "phone-1".into(),
            phone_number: "+819012345678".into(),
            cardholder_id: "alice".into(),
            key_version: 1,
            public_key: vec![1; 32],
            status: "active".into(),
            created_at_ms: 1,
        };
        assert!(insert_phone(&db, &p).await.unwrap());
        assert!(!insert_phone(&db, &p).await.unwrap());
        let other_device = PhoneRow {
            device_id: "phone-2".into(),
            ..p.clone()
        };
        assert!(!insert_phone(&db, &other_device).await.unwrap());
        assert_eq!(
            phone_by_number(&db, "+819012345678").await.unwrap(),
            Some(p.clone())
        );
        assert_eq!(phone_by_device(&db, "phone-1").await.unwrap(), Some(p));
        assert_eq!(phone_by_device(&db, "phone-2").await.unwrap(), None);
    }

    #[tokio::test]
    async fn txn_keys_are_stored_once_and_destroyed() {
        let (db, _d) = db().await;
        let k = TxnKeyRow {
            key_ref: "flowc-txn-00#1".into(),
            txn_id: "00".into(),
            storage_key_ref: "storage#1".into(),
            enc: vec![2; 32],
            sealed_secret: vec![3; 48],
            created_at_ms: 5,
        };
        assert!(put_txn_key(&db, &k).await.unwrap());
        assert!(!put_txn_key(&db, &k).await.unwrap());
        assert_eq!(txn_key(&db, &k.key_ref).await.unwrap(), Some(k.clone()));
        assert!(destroy_txn_key(&db, &k.key_ref).await.unwrap());
        assert!(!destroy_txn_key(&db, &k.key_ref).await.unwrap());
        assert_eq!(txn_key(&db, &k.key_ref).await.unwrap(), None);
    }

    #[tokio::test]
    async fn messages_queue_once_per_recipient_in_order() {
        let (db, _d) = db().await;
        assert!(
            enqueue_message(&db, "phone:p", "t1", "a", b"one", 1)
                .await
                .unwrap()
        );
        assert!(
            !enqueue_message(&db, "phone:p", "t1", "a", b"one", 2)
                .await
                .unwrap()
        );
        assert!(
            enqueue_message(&db, "merchant:m", "t1", "a", b"one", 2)
                .await
                .unwrap()
        );
        assert!(
            enqueue_message(&db, "phone:p", "t1", "b", b"two", 3)
                .await
                .unwrap()
        );
        let all = messages_after(&db, "phone:p", 0, 10).await.unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].artefact, b"one");
        assert_eq!(all[1].kind, "b");
        let rest = messages_after(&db, "phone:p", all[0].seq, 10)
            .await
            .unwrap();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].artefact, b"two");
        assert_eq!(
            messages_for_txn(&db, "merchant:m", "t1")
                .await
                .unwrap()
                .len(),
            1
        );
    }
}
