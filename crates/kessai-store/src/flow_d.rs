//! Persistence of flow D (temporary password at the POS, seed 003):
//!
//! - **challenges**: host challenges, consumed once;
//! - **cards** ([`CardRow`]): customer and merchant IC cards as flow D knows
//!   them — keyed PAN digest, masked PAN and PIN verification data inside an
//!   opaque `profile` (never the PAN, PIN or PIN block), and the guarded
//!   counters (`last_counter`, `cvm_tries_left`, `blocked`) as columns;
//! - **terminals** ([`TerminalRow`]): POS terminals of registered merchants
//!   with their wrong-password counters;
//! - **passwords** ([`PasswordRow`]): temporary passwords by keyed hash;
//! - **receipts** ([`ReceiptRow`]): signed receipts queued for the phone and
//!   the POS (one row per recipient and transfer).
//!
//! The conditional updates the protocol rests on are the `tx_*` functions:
//! they run inside one [`DbTx`] and return the rows they changed, so the
//! caller rolls the whole transaction back when a guard fails (0 rows).
//! Several host processes sharing one PostgreSQL therefore agree: e.g. of
//! two `tx_mark_password_used` racing on one password exactly one sees 1.

use crate::{Db, DbTx, StoreError, on_pool, on_tx};

/// A flow-D card record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardRow {
    /// Card id (the card id of the `cards` table).
    pub card_id: String,
    /// `customer` or `merchant`.
    pub kind: String,
    /// ISO 4217 code.
    pub currency: String,
    /// Highest card counter accepted.
    pub last_counter: i64,
    /// Blocked for flow D.
    pub blocked: bool,
    /// PIN / secret tries left.
    pub cvm_tries_left: i64,
    /// Keyed PAN digest (customer cards).
    pub pan_digest: Option<Vec<u8>>,
    /// Opaque JSON profile (customer cards).
    pub profile: Option<String>,
    /// Owning store (merchant cards).
    pub store_id: Option<String>,
    /// Registration time, unix ms.
    pub created_at_ms: i64,
}

type CardTuple = (
    String,
    String,
    String,
    i64,
    i64,
    i64,
    Option<Vec<u8>>,
    Option<String>,
    Option<String>,
    i64,
);

fn card_from(r: CardTuple) -> CardRow {
    CardRow {
        card_id: r.0,
        kind: r.1,
        currency: r.2,
        last_counter: r.3,
        blocked: r.4 != 0,
        cvm_tries_left: r.5,
        pan_digest: r.6,
        profile: r.7,
        store_id: r.8,
        created_at_ms: r.9,
    }
}

const CARD_COLUMNS: &str = "card_id, kind, currency, last_counter, blocked, cvm_tries_left, \
     pan_digest, profile, store_id, created_at_ms";

/// Registers a card; `Ok(false)` if the card id, PAN digest or store (for a
/// merchant card) is registered already.
pub async fn insert_card(db: &Db, c: &CardRow) -> Result<bool, StoreError> {
    let n = on_pool!(db, |pool| {
        sqlx::query(
            "INSERT INTO flowd_cards (card_id, kind, currency, last_counter, blocked, cvm_tries_left, \
             pan_digest, profile, store_id, created_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING",
        )
        .bind(&c.card_id)
        .bind(&c.kind)
        .bind(&c.currency)
        .bind(c.last_counter)
        .bind(i64::from(c.blocked))
        .bind(c.cvm_tries_left)
        .bind(&c.pan_digest)
        .bind(&c.profile)
        .bind(&c.store_id)
        .bind(c.created_at_ms)
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
    })?;
    Ok(n == 1)
}

/// The card `card_id`.
pub async fn card(db: &Db, card_id: &str) -> Result<Option<CardRow>, StoreError> {
    let sql = format!("SELECT {CARD_COLUMNS} FROM flowd_cards WHERE card_id = $1");
    let row: Option<CardTuple> = on_pool!(db, |pool| {
        sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
            .bind(card_id)
            .fetch_optional(pool)
            .await
    })?;
    Ok(row.map(card_from))
}

/// The merchant card of `store_id`.
pub async fn merchant_card_of(db: &Db, store_id: &str) -> Result<Option<CardRow>, StoreError> {
    let sql = format!("SELECT {CARD_COLUMNS} FROM flowd_cards WHERE store_id = $1");
    let row: Option<CardTuple> = on_pool!(db, |pool| {
        sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
            .bind(store_id)
            .fetch_optional(pool)
            .await
    })?;
    Ok(row.map(card_from))
}

/// A POS terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TerminalRow {
    /// Terminal id.
    pub terminal_id: String,
    /// Its merchant.
    pub store_id: String,
    /// Wrong passwords in the current window.
    pub guess_failures: i64,
    /// Window start, unix ms.
    pub guess_window_start_ms: i64,
    /// Registration time, unix ms.
    pub created_at_ms: i64,
}

/// Registers a terminal; `Ok(false)` if the id is taken.
pub async fn insert_terminal(db: &Db, t: &TerminalRow) -> Result<bool, StoreError> {
    let n = on_pool!(db, |pool| {
        sqlx::query(
            "INSERT INTO flowd_terminals (terminal_id, store_id, guess_failures, guess_window_start_ms, created_at_ms) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(&t.terminal_id)
        .bind(&t.store_id)
        .bind(t.guess_failures)
        .bind(t.guess_window_start_ms)
        .bind(t.created_at_ms)
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
    })?;
    Ok(n == 1)
}

/// The terminal `terminal_id`.
pub async fn terminal(db: &Db, terminal_id: &str) -> Result<Option<TerminalRow>, StoreError> {
    let row: Option<(String, String, i64, i64, i64)> = on_pool!(db, |pool| {
        sqlx::query_as(
            "SELECT terminal_id, store_id, guess_failures, guess_window_start_ms, created_at_ms \
             FROM flowd_terminals WHERE terminal_id = $1",
        )
        .bind(terminal_id)
        .fetch_optional(pool)
        .await
    })?;
    Ok(row.map(|r| TerminalRow {
        terminal_id: r.0,
        store_id: r.1,
        guess_failures: r.2,
        guess_window_start_ms: r.3,
        created_at_ms: r.4,
    }))
}

/// A host challenge: `(expires_at_ms, consumed)`.
pub async fn challenge(db: &Db, challenge: &[u8]) -> Result<Option<(i64, bool)>, StoreError> {
    let row: Option<(i64, i64)> = on_pool!(db, |pool| {
        sqlx::query_as("SELECT expires_at_ms, consumed FROM flowd_challenges WHERE challenge = $1")
            .bind(challenge)
            .fetch_optional(pool)
            .await
    })?;
    Ok(row.map(|(e, c)| (e, c != 0)))
}

/// A stored temporary password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordRow {
    /// Keyed hash of the digits (32 bytes).
    pub id: Vec<u8>,
    /// The card it is bound to.
    pub card_id: String,
    /// Opaque JSON record as issued.
    pub record: String,
    /// End of validity, unix ms.
    pub expires_at_ms: i64,
    /// Redeemed.
    pub used: bool,
    /// When redeemed.
    pub used_at_ms: Option<i64>,
    /// The transfer that settled it.
    pub transfer_id: Option<String>,
    /// Issue time, unix ms.
    pub created_at_ms: i64,
}

/// The password with keyed hash `id`.
pub async fn password(db: &Db, id: &[u8]) -> Result<Option<PasswordRow>, StoreError> {
    type Row = (
        Vec<u8>,
        String,
        String,
        i64,
        i64,
        Option<i64>,
        Option<String>,
        i64,
    );
    let row: Option<Row> = on_pool!(db, |pool| {
        sqlx::query_as(
            "SELECT id, card_id, record, expires_at_ms, used, used_at_ms, transfer_id, created_at_ms \
             FROM flowd_passwords WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(pool)
        .await
    })?;
    Ok(row.map(|r| PasswordRow {
        id: r.0,
        card_id: r.1,
        record: r.2,
        expires_at_ms: r.3,
        used: r.4 != 0,
        used_at_ms: r.5,
        transfer_id: r.6,
        created_at_ms: r.7,
    }))
}

/// Deletes unused passwords that expired before `before_ms` (used ones are
/// kept: they justify a transfer). Returns how many.
pub async fn purge_expired_passwords(db: &Db, before_ms: i64) -> Result<u64, StoreError> {
    Ok(on_pool!(db, |pool| {
        sqlx::query("DELETE FROM flowd_passwords WHERE used = 0 AND expires_at_ms < $1")
            .bind(before_ms)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
    })?)
}

/// A queued signed receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptRow {
    /// Queue position.
    pub seq: i64,
    /// `card:<id>`, `terminal:<id>` or `store:<id>`.
    pub recipient: String,
    /// The settling transfer.
    pub transfer_id: String,
    /// COSE_Sign1 bytes.
    pub receipt: Vec<u8>,
    /// Queue time, unix ms.
    pub created_at_ms: i64,
}

/// Receipts for `recipient` after queue position `after`.
pub async fn receipts_after(
    db: &Db,
    recipient: &str,
    after: i64,
) -> Result<Vec<ReceiptRow>, StoreError> {
    let rows: Vec<(i64, String, String, Vec<u8>, i64)> = on_pool!(db, |pool| {
        sqlx::query_as(
            "SELECT seq, recipient, transfer_id, receipt, created_at_ms FROM flowd_receipts \
             WHERE recipient = $1 AND seq > $2 ORDER BY seq LIMIT 100",
        )
        .bind(recipient)
        .bind(after)
        .fetch_all(pool)
        .await
    })?;
    Ok(rows
        .into_iter()
        .map(|r| ReceiptRow {
            seq: r.0,
            recipient: r.1,
            transfer_id: r.2,
            receipt: r.3,
            created_at_ms: r.4,
        })
        .collect())
}

// ---- conditional writes inside one transaction ---------------------------

/// Stores a new challenge; 0 if it exists.
pub async fn tx_insert_challenge(
    tx: &mut DbTx,
    challenge: &[u8],
    expires_at_ms: i64,
) -> Result<u64, StoreError> {
    Ok(on_tx!(*tx, |conn| {
        sqlx::query(
            "INSERT INTO flowd_challenges (challenge, expires_at_ms, consumed) VALUES ($1, $2, 0) \
             ON CONFLICT DO NOTHING",
        )
        .bind(challenge)
        .bind(expires_at_ms)
        .execute(conn)
        .await
        .map(|r| r.rows_affected())
    })?)
}

/// Consumes an unconsumed challenge; 0 if unknown or consumed.
pub async fn tx_consume_challenge(tx: &mut DbTx, challenge: &[u8]) -> Result<u64, StoreError> {
    Ok(on_tx!(*tx, |conn| {
        sqlx::query(
            "UPDATE flowd_challenges SET consumed = 1 WHERE challenge = $1 AND consumed = 0",
        )
        .bind(challenge)
        .execute(conn)
        .await
        .map(|r| r.rows_affected())
    })?)
}

/// Raises a card's counter to `counter` if it is below; 0 otherwise.
pub async fn tx_advance_counter(
    tx: &mut DbTx,
    card_id: &str,
    counter: i64,
) -> Result<u64, StoreError> {
    Ok(on_tx!(*tx, |conn| {
        sqlx::query(
            "UPDATE flowd_cards SET last_counter = $2 WHERE card_id = $1 AND last_counter < $2",
        )
        .bind(card_id)
        .bind(counter)
        .execute(conn)
        .await
        .map(|r| r.rows_affected())
    })?)
}

/// Restores a card's PIN/secret tries after a correct verification.
pub async fn tx_reset_cvm_tries(
    tx: &mut DbTx,
    card_id: &str,
    tries: i64,
) -> Result<u64, StoreError> {
    Ok(on_tx!(*tx, |conn| {
        sqlx::query("UPDATE flowd_cards SET cvm_tries_left = $2 WHERE card_id = $1")
            .bind(card_id)
            .bind(tries)
            .execute(conn)
            .await
            .map(|r| r.rows_affected())
    })?)
}

/// Consumes one PIN/secret try, atomically (two concurrent wrong PINs
/// consume two), and blocks the card when none is left.
pub async fn tx_cvm_failure(tx: &mut DbTx, card_id: &str) -> Result<u64, StoreError> {
    Ok(on_tx!(*tx, |conn| {
        sqlx::query(
            "UPDATE flowd_cards SET \
             cvm_tries_left = CASE WHEN cvm_tries_left > 0 THEN cvm_tries_left - 1 ELSE 0 END, \
             blocked = CASE WHEN cvm_tries_left <= 1 THEN 1 ELSE blocked END \
             WHERE card_id = $1",
        )
        .bind(card_id)
        .execute(conn)
        .await
        .map(|r| r.rows_affected())
    })?)
}

/// Stores a new password; 0 if its id collides with a stored one.
pub async fn tx_insert_password(tx: &mut DbTx, p: &PasswordRow) -> Result<u64, StoreError> {
    Ok(on_tx!(*tx, |conn| {
        sqlx::query(
            "INSERT INTO flowd_passwords (id, card_id, record, expires_at_ms, used, created_at_ms) \
             VALUES ($1, $2, $3, $4, 0, $5) ON CONFLICT DO NOTHING",
        )
        .bind(&p.id)
        .bind(&p.card_id)
        .bind(&p.record)
        .bind(p.expires_at_ms)
        .bind(p.created_at_ms)
        .execute(conn)
        .await
        .map(|r| r.rows_affected())
    })?)
}

/// Marks an unused password used; 0 if unknown or used already.
pub async fn tx_mark_password_used(
    tx: &mut DbTx,
    id: &[u8],
    at_ms: i64,
    transfer_id: &str,
) -> Result<u64, StoreError> {
    Ok(on_tx!(*tx, |conn| {
        sqlx::query(
            "UPDATE flowd_passwords SET used = 1, used_at_ms = $2, transfer_id = $3 \
             WHERE id = $1 AND used = 0",
        )
        .bind(id)
        .bind(at_ms)
        .bind(transfer_id)
        .execute(conn)
        .await
        .map(|r| r.rows_affected())
    })?)
}

/// Passwords marked used before `used_before_ms` that are still valid at
/// `valid_at_ms`, with the transfer id they were marked for (the
/// reconciliation candidates: a mark whose posting never happened).
pub async fn used_valid_passwords(
    db: &Db,
    used_before_ms: i64,
    valid_at_ms: i64,
    limit: i64,
) -> Result<Vec<(Vec<u8>, String)>, StoreError> {
    Ok(on_pool!(db, |pool| {
        sqlx::query_as::<_, (Vec<u8>, String)>(
            "SELECT id, transfer_id FROM flowd_passwords              WHERE used = 1 AND used_at_ms < $1 AND expires_at_ms > $2                AND transfer_id IS NOT NULL              ORDER BY used_at_ms LIMIT $3",
        )
        .bind(used_before_ms)
        .bind(valid_at_ms)
        .bind(limit)
        .fetch_all(pool)
        .await
    })?)
}

/// Releases a password marked used by `transfer_id` whose posting the
/// ledger refused (the transfer does not exist); 0 if it is not so marked.
pub async fn release_password(db: &Db, id: &[u8], transfer_id: &str) -> Result<u64, StoreError> {
    Ok(on_pool!(db, |pool| {
        sqlx::query(
            "UPDATE flowd_passwords SET used = 0, used_at_ms = NULL, transfer_id = NULL \
             WHERE id = $1 AND used = 1 AND transfer_id = $2",
        )
        .bind(id)
        .bind(transfer_id)
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
    })?)
}

/// Counts one wrong password at a terminal, atomically: within the
/// window starting at `window_start_ms` the count is incremented (two
/// concurrent guesses count two); a new window starts at `failures`.
pub async fn tx_record_guess_failure(
    tx: &mut DbTx,
    terminal_id: &str,
    failures: i64,
    window_start_ms: i64,
) -> Result<u64, StoreError> {
    Ok(on_tx!(*tx, |conn| {
        sqlx::query(
            "UPDATE flowd_terminals SET guess_failures = CASE WHEN guess_window_start_ms = $3 \
             THEN guess_failures + 1 ELSE $2 END, guess_window_start_ms = $3 \
             WHERE terminal_id = $1",
        )
        .bind(terminal_id)
        .bind(failures)
        .bind(window_start_ms)
        .execute(conn)
        .await
        .map(|r| r.rows_affected())
    })?)
}

/// Queues a receipt for `recipient` (no-op if queued already).
pub async fn enqueue_receipt(
    db: &Db,
    recipient: &str,
    transfer_id: &str,
    receipt: &[u8],
    now_ms: i64,
) -> Result<(), StoreError> {
    on_pool!(db, |pool| {
        sqlx::query(
            "INSERT INTO flowd_receipts (recipient, transfer_id, receipt, created_at_ms) \
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(recipient)
        .bind(transfer_id)
        .bind(receipt)
        .bind(now_ms)
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn db() -> (Db, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        (Db::open(dir.path().to_str().unwrap()).await.unwrap(), dir)
    }

    #[tokio::test]
    async fn password_is_marked_used_once_and_counters_only_rise() {
        let (db, _d) = db().await;
        let row = CardRow {
            card_id: "card-1".into(),
            kind: "customer".into(),
            currency: "JPY".into(),
            last_counter: 0,
            blocked: false,
            cvm_tries_left: 3,
            pan_digest: Some(vec![1; 32]),
            profile: Some("{}".into()),
            store_id: None,
            created_at_ms: 1,
        };
        assert!(insert_card(&db, &row).await.unwrap());
        assert!(!insert_card(&db, &row).await.unwrap());
        let mut tx = db.begin_write().await.unwrap();
        assert_eq!(tx_advance_counter(&mut tx, "card-1", 5).await.unwrap(), 1);
        assert_eq!(tx_advance_counter(&mut tx, "card-1", 5).await.unwrap(), 0);
        assert_eq!(tx_advance_counter(&mut tx, "card-1", 4).await.unwrap(), 0);
        let p = PasswordRow {
            id: vec![9; 32],
            card_id: "card-1".into(),
            record: "{}".into(),
            expires_at_ms: 100,
            used: false,
            used_at_ms: None,
            transfer_id: None,
            created_at_ms: 1,
        };
        assert_eq!(tx_insert_password(&mut tx, &p).await.unwrap(), 1);
        assert_eq!(tx_insert_password(&mut tx, &p).await.unwrap(), 0);
        tx.commit().await.unwrap();
        let mut tx = db.begin_write().await.unwrap();
        assert_eq!(
            tx_mark_password_used(&mut tx, &p.id, 2, "t1")
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            tx_mark_password_used(&mut tx, &p.id, 2, "t1")
                .await
                .unwrap(),
            0
        );
        tx.commit().await.unwrap();
        assert!(password(&db, &p.id).await.unwrap().unwrap().used);
        assert_eq!(release_password(&db, &p.id, "other").await.unwrap(), 0);
        assert_eq!(release_password(&db, &p.id, "t1").await.unwrap(), 1);
        assert!(!password(&db, &p.id).await.unwrap().unwrap().used);
        assert_eq!(card(&db, "card-1").await.unwrap().unwrap().last_counter, 5);

        // PIN tries go down one per failure and block at zero.
        for left in [2, 1, 0, 0] {
            let mut tx = db.begin_write().await.unwrap();
            tx_cvm_failure(&mut tx, "card-1").await.unwrap();
            tx.commit().await.unwrap();
            let c = card(&db, "card-1").await.unwrap().unwrap();
            assert_eq!((c.cvm_tries_left, c.blocked), (left, left == 0));
        }
    }

    #[tokio::test]
    async fn guess_failures_increment_within_a_window() {
        let (db, _d) = db().await;
        let t = TerminalRow {
            terminal_id: "pos-1".into(),
            store_id: "shop-1".into(),
            guess_failures: 0,
            guess_window_start_ms: 0,
            created_at_ms: 0,
        };
        assert!(insert_terminal(&db, &t).await.unwrap());
        // Two requests that both read "0 failures" still count two.
        for _ in 0..2 {
            let mut tx = db.begin_write().await.unwrap();
            tx_record_guess_failure(&mut tx, "pos-1", 1, 1000)
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
        assert_eq!(
            terminal(&db, "pos-1")
                .await
                .unwrap()
                .unwrap()
                .guess_failures,
            2
        );
        // A new window restarts the count.
        let mut tx = db.begin_write().await.unwrap();
        tx_record_guess_failure(&mut tx, "pos-1", 1, 5000)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let r = terminal(&db, "pos-1").await.unwrap().unwrap();
        assert_eq!((r.guess_failures, r.guess_window_start_ms), (1, 5000));
    }
}
