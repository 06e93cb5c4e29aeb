//! Flow A (fingerprint device) persistence: the card information the
//! issuer gives a cardholder's devices (card number sealed by the caller),
//! one-time enrolment codes (keyed hashes, compare-and-set), registered
//! devices with their replay counter, and pending key updates.
//!
//! Records are JSON text written and read by the host (the flow crate's
//! serde types); this module only guarantees the concurrency rules, which
//! hold across processes sharing one database:
//! - a code record is replaced only on the version read ([`update_code`]);
//! - a device id registers once ([`insert_device`]);
//! - a device's `last_counter` only moves up, on the version read
//!   ([`update_device`]).
//!
//! Registration sessions use [`crate::flow_support`] sessions.

use crate::{Db, StoreError, on_pool};

/// The card of a cardholder for flow A.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardRow {
    /// Owner.
    pub cardholder_id: String,
    /// Funding account.
    pub funding_account: String,
    /// BIN + last four.
    pub masked_pan: String,
    /// The card number, sealed by the caller.
    pub pan_sealed: Vec<u8>,
    /// Key ref of the key it is sealed under.
    pub seal_key_ref: String,
    /// Expiry year.
    pub expiry_year: i64,
    /// Expiry month.
    pub expiry_month: i64,
    /// Creation time, unix ms.
    pub created_at_ms: i64,
}

/// Stores a card; `Ok(false)` if the cardholder has one already.
pub async fn insert_card(db: &Db, c: &CardRow) -> Result<bool, StoreError> {
    let n = on_pool!(db, |pool| {
        sqlx::query(
            "INSERT INTO flow_a_cards (cardholder_id, funding_account, masked_pan, pan_sealed, \
             seal_key_ref, expiry_year, expiry_month, created_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (cardholder_id) DO NOTHING",
        )
        .bind(&c.cardholder_id)
        .bind(&c.funding_account)
        .bind(&c.masked_pan)
        .bind(&c.pan_sealed)
        .bind(&c.seal_key_ref)
        .bind(c.expiry_year)
        .bind(c.expiry_month)
        .bind(c.created_at_ms)
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
    })?;
    Ok(n == 1)
}

type CardTuple = (String, String, String, Vec<u8>, String, i64, i64, i64);

/// The card of a cardholder.
pub async fn card(db: &Db, cardholder_id: &str) -> Result<Option<CardRow>, StoreError> {
    let row: Option<CardTuple> = on_pool!(db, |pool| {
        sqlx::query_as(
            "SELECT cardholder_id, funding_account, masked_pan, pan_sealed, seal_key_ref, \
             expiry_year, expiry_month, created_at_ms FROM flow_a_cards WHERE cardholder_id = $1",
        )
        .bind(cardholder_id)
        .fetch_optional(pool)
        .await
    })?;
    Ok(row.map(|r| CardRow {
        cardholder_id: r.0,
        funding_account: r.1,
        masked_pan: r.2,
        pan_sealed: r.3,
        seal_key_ref: r.4,
        expiry_year: r.5,
        expiry_month: r.6,
        created_at_ms: r.7,
    }))
}

/// A stored enrolment code record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeRow {
    /// The customer.
    pub cardholder_id: String,
    /// JSON record (keyed hash, tries, expiry, use).
    pub record: String,
    /// Key ref of the key the hash is keyed with.
    pub code_key_ref: String,
    /// Version read; pass it to [`update_code`].
    pub version: i64,
    /// Issue time, unix ms.
    pub issued_at_ms: i64,
}

/// Issues a code: inserts, or replaces whatever code the cardholder had.
pub async fn put_code(
    db: &Db,
    cardholder_id: &str,
    record: &str,
    code_key_ref: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    on_pool!(db, |pool| {
        sqlx::query(
            "INSERT INTO flow_a_codes (cardholder_id, record, code_key_ref, version, issued_at_ms) \
             VALUES ($1, $2, $3, 1, $4) ON CONFLICT (cardholder_id) DO UPDATE SET \
             record = $2, code_key_ref = $3, version = flow_a_codes.version + 1, issued_at_ms = $4",
        )
        .bind(cardholder_id)
        .bind(record)
        .bind(code_key_ref)
        .bind(now_ms)
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
    })?;
    Ok(())
}

/// The code record of a cardholder.
pub async fn code(db: &Db, cardholder_id: &str) -> Result<Option<CodeRow>, StoreError> {
    let row: Option<(String, String, String, i64, i64)> = on_pool!(db, |pool| {
        sqlx::query_as(
            "SELECT cardholder_id, record, code_key_ref, version, issued_at_ms FROM flow_a_codes \
             WHERE cardholder_id = $1",
        )
        .bind(cardholder_id)
        .fetch_optional(pool)
        .await
    })?;
    Ok(row.map(|r| CodeRow {
        cardholder_id: r.0,
        record: r.1,
        code_key_ref: r.2,
        version: r.3,
        issued_at_ms: r.4,
    }))
}

/// Replaces a code record read at `version`; `Ok(false)` if it changed
/// since (a concurrent try or a new code).
pub async fn update_code(
    db: &Db,
    cardholder_id: &str,
    version: i64,
    record: &str,
) -> Result<bool, StoreError> {
    let n = on_pool!(db, |pool| {
        sqlx::query(
            "UPDATE flow_a_codes SET record = $1, version = version + 1 \
             WHERE cardholder_id = $2 AND version = $3",
        )
        .bind(record)
        .bind(cardholder_id)
        .bind(version)
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
    })?;
    Ok(n == 1)
}

/// A registered device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRow {
    /// Device id.
    pub device_id: String,
    /// Owner.
    pub cardholder_id: String,
    /// JSON record.
    pub record: String,
    /// Highest transaction counter accepted.
    pub last_counter: i64,
    /// Version read; pass it to [`update_device`].
    pub version: i64,
}

/// Registers a device; `Ok(false)` if the id is registered already.
pub async fn insert_device(
    db: &Db,
    device_id: &str,
    cardholder_id: &str,
    record: &str,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let n = on_pool!(db, |pool| {
        sqlx::query(
            "INSERT INTO flow_a_devices (device_id, cardholder_id, record, last_counter, version, updated_at_ms) \
             VALUES ($1, $2, $3, 0, 1, $4) ON CONFLICT (device_id) DO NOTHING",
        )
        .bind(device_id)
        .bind(cardholder_id)
        .bind(record)
        .bind(now_ms)
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
    })?;
    Ok(n == 1)
}

/// A device by id.
pub async fn device(db: &Db, device_id: &str) -> Result<Option<DeviceRow>, StoreError> {
    let row: Option<(String, String, String, i64, i64)> = on_pool!(db, |pool| {
        sqlx::query_as(
            "SELECT device_id, cardholder_id, record, last_counter, version FROM flow_a_devices \
             WHERE device_id = $1",
        )
        .bind(device_id)
        .fetch_optional(pool)
        .await
    })?;
    Ok(row.map(|r| DeviceRow {
        device_id: r.0,
        cardholder_id: r.1,
        record: r.2,
        last_counter: r.3,
        version: r.4,
    }))
}

/// Replaces a device record read at `version`, with `last_counter` not
/// below the stored one; `Ok(false)` if someone else updated it first or
/// the counter would go down.
pub async fn update_device(
    db: &Db,
    device_id: &str,
    version: i64,
    record: &str,
    last_counter: i64,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let n = on_pool!(db, |pool| {
        sqlx::query(
            "UPDATE flow_a_devices SET record = $1, last_counter = $2, version = version + 1, \
             updated_at_ms = $3 WHERE device_id = $4 AND version = $5 AND last_counter <= $2",
        )
        .bind(record)
        .bind(last_counter)
        .bind(now_ms)
        .bind(device_id)
        .bind(version)
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
    })?;
    Ok(n == 1)
}

/// A key update sent to a device and not yet confirmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyUpdateRow {
    /// Device.
    pub device_id: String,
    /// JSON of the pending update.
    pub pending: String,
    /// The signed key update bytes.
    pub key_update: Vec<u8>,
    /// Issue time, unix ms.
    pub issued_at_ms: i64,
}

/// Records a key update for a device (replacing an earlier unconfirmed
/// one).
pub async fn put_key_update(db: &Db, u: &KeyUpdateRow) -> Result<(), StoreError> {
    on_pool!(db, |pool| {
        sqlx::query(
            "INSERT INTO flow_a_key_updates (device_id, pending, key_update, issued_at_ms) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (device_id) DO UPDATE SET \
             pending = $2, key_update = $3, issued_at_ms = $4",
        )
        .bind(&u.device_id)
        .bind(&u.pending)
        .bind(&u.key_update)
        .bind(u.issued_at_ms)
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
    })?;
    Ok(())
}

/// The pending key update of a device.
pub async fn key_update(db: &Db, device_id: &str) -> Result<Option<KeyUpdateRow>, StoreError> {
    let row: Option<(String, String, Vec<u8>, i64)> = on_pool!(db, |pool| {
        sqlx::query_as(
            "SELECT device_id, pending, key_update, issued_at_ms FROM flow_a_key_updates \
             WHERE device_id = $1",
        )
        .bind(device_id)
        .fetch_optional(pool)
        .await
    })?;
    Ok(row.map(|r| KeyUpdateRow {
        device_id: r.0,
        pending: r.1,
        key_update: r.2,
        issued_at_ms: r.3,
    }))
}

/// Deletes the pending key update of a device if it is still `key_update`
/// (the one confirmed); `Ok(false)` if it was replaced or gone.
pub async fn delete_key_update(
    db: &Db,
    device_id: &str,
    key_update: &[u8],
) -> Result<bool, StoreError> {
    let n = on_pool!(db, |pool| {
        sqlx::query("DELETE FROM flow_a_key_updates WHERE device_id = $1 AND key_update = $2")
            .bind(device_id)
            .bind(key_update)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
    })?;
    Ok(n == 1)
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
    async fn codes_are_compare_and_set() {
        let (db, _d) = db().await;
        assert_eq!(code(&db, "alice").await.unwrap(), None);
        put_code(&db, "alice", "{\"a\":1}", "card-master#1", 5)
            .await
            .unwrap();
        let c = code(&db, "alice").await.unwrap().unwrap();
        assert_eq!(c.version, 1);
        assert!(update_code(&db, "alice", 1, "{\"a\":2}").await.unwrap());
        // A second writer that read version 1 loses.
        assert!(!update_code(&db, "alice", 1, "{\"a\":3}").await.unwrap());
        assert_eq!(
            code(&db, "alice").await.unwrap().unwrap().record,
            "{\"a\":2}"
        );
        // Re-issuing replaces the record and bumps the version.
        put_code(&db, "alice", "{\"b\":1}", "card-master#1", 6)
            .await
            .unwrap();
        let c = code(&db, "alice").await.unwrap().unwrap();
        assert_eq!((c.version, c.record.as_str()), (3, "{\"b\":1}"));
    }

    #[tokio::test]
    async fn device_counters_only_move_up_on_the_version_read() {
        let (db, _d) = db().await;
        assert!(insert_device(&db, "dev-1", "alice", "{}", 1).await.unwrap());
        assert!(!insert_device(&db, "dev-1", "bob", "{}", 1).await.unwrap());
        let d = device(&db, "dev-1").await.unwrap().unwrap();
        assert_eq!((d.last_counter, d.version), (0, 1));
        assert!(
            update_device(&db, "dev-1", 1, "{\"c\":3}", 3, 2)
                .await
                .unwrap()
        );
        assert!(
            !update_device(&db, "dev-1", 1, "{\"c\":4}", 4, 2)
                .await
                .unwrap()
        );
        assert!(
            !update_device(&db, "dev-1", 2, "{\"c\":2}", 2, 2)
                .await
                .unwrap()
        );
        let d = device(&db, "dev-1").await.unwrap().unwrap();
        assert_eq!((d.last_counter, d.version), (3, 2));
    }

    #[tokio::test]
    async fn cards_and_key_updates_round_trip() {
        let (db, _d) = db().await;
        let row = CardRow {
            cardholder_id: "alice".into(),
            funding_account: "funding.alice".into(),
            masked_pan: "400000******0002".into(),
            pan_sealed: vec![1, 2, 3],
            seal_key_ref: "card-master#1".into(),
            expiry_year: 2030,
            expiry_month: 11,
            created_at_ms: 7,
        };
        assert!(insert_card(&db, &row).await.unwrap());
        assert!(!insert_card(&db, &row).await.unwrap());
        assert_eq!(card(&db, "alice").await.unwrap(), Some(row));
        let u = KeyUpdateRow {
            device_id: "dev-1".into(),
            pending: "{}".into(),
            key_update: vec![9; 4],
            issued_at_ms: 3,
        };
        put_key_update(&db, &u).await.unwrap();
        assert_eq!(key_update(&db, "dev-1").await.unwrap(), Some(u));
        assert!(!delete_key_update(&db, "dev-1", &[8; 4]).await.unwrap());
        assert!(delete_key_update(&db, "dev-1", &[9; 4]).await.unwrap());
        assert_eq!(key_update(&db, "dev-1").await.unwrap(), None);
    }
}
