//! Persistence of flow B (IC-card e-money, seeds 001/004):
//!
//! - **bills** ([`BillRow`]): one row per bill key (store + order number)
//!   moving `open → reserved → settled` (or back to `open` when the hold is
//!   voided); each move is a conditional statement, so a bill settles
//!   exactly once whichever host process asks;
//! - **pending card operations**: at most one per card (primary key), the
//!   debit or credit sent under a ledger hold whose outcome is not yet
//!   known (recovery reads it at the card's next contact);
//! - **ledger outbox**: the ledger requests a step decided, written in the
//!   same transaction as the step and submitted right after (by transfer
//!   id, so a second submission is a replay);
//! - **completions** (SIG3) for stores to collect, **receipts** (SIG4),
//!   the **card log** uploaded for information management, and the
//!   **funding cards** of top-ups (keyed hash + masked number + keyed PIN
//!   verification data; never a card number, PIN or PIN block).
//!
//! [`commit_step`] applies one step of a card session atomically: the
//! session's new state (optimistic version from
//! [`crate::flow_support`]) and every [`StepOp`], or nothing.

use crate::{Db, DbTx, StoreError, on_pool};

/// The flow name of flow-B sessions in `flow_sessions`.
pub const FLOW: &str = "b";

/// Why [`commit_step`] refused (and rolled back) a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepRefusal {
    /// Another request advanced the session first.
    SessionMoved,
    /// The bill is already reserved by another hold, or settled.
    BillNotOpen,
    /// The bill is not reserved by this hold (settled already, or voided).
    BillNotReserved,
    /// The card already has an unresolved operation.
    CardBusy,
    /// The pending operation to clear is not the card's.
    PendingMismatch,
}

/// One write of a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOp {
    /// Reserve an open (or new) bill for a hold.
    ReserveBill {
        /// Store.
        store_id: String,
        /// Order.
        order_id: String,
        /// Mall of a member store.
        mall_id: Option<String>,
        /// Digest of the bill.
        bill_digest: Vec<u8>,
        /// The hold.
        hold_id: Vec<u8>,
    },
    /// Release a bill reserved by `hold_id` (its hold was voided).
    ReleaseBill {
        /// Store.
        store_id: String,
        /// Order.
        order_id: String,
        /// The voided hold.
        hold_id: Vec<u8>,
    },
    /// Settle a reserved bill.
    SettleBill {
        /// Store.
        store_id: String,
        /// Order.
        order_id: String,
        /// The posting transfer.
        transfer_id: Vec<u8>,
    },
    /// Record the card's pending operation (JSON).
    SetPending {
        /// Card.
        card_id: String,
        /// Hold.
        hold_id: Vec<u8>,
        /// Serialized operation.
        op: String,
    },
    /// Clear the card's pending operation of `hold_id`.
    ClearPending {
        /// Card.
        card_id: String,
        /// Hold.
        hold_id: Vec<u8>,
    },
    /// Move the card's shadow forward (ignored if the counter did not
    /// advance, like [`crate::cards::advance_shadow`]).
    Shadow {
        /// Card.
        card_id: String,
        /// Balance, minor units.
        balance_minor: i64,
        /// Counter.
        counter: i64,
    },
    /// Queue a ledger request (JSON of a `TransferRequest`).
    Ledger {
        /// Its transfer id.
        transfer_id: Vec<u8>,
        /// Serialized request.
        request: String,
    },
    /// Keep a signed completion for the store.
    Completion {
        /// Store.
        store_id: String,
        /// Order.
        order_id: String,
        /// Mall.
        mall_id: Option<String>,
        /// Card that paid.
        card_id: String,
        /// COSE bytes.
        completion: Vec<u8>,
        /// Their digest.
        digest: Vec<u8>,
        /// Completed by recovery.
        recovered: bool,
    },
    /// Keep one card log record (JSON), idempotent per counter.
    CardLog {
        /// Card.
        card_id: String,
        /// Record counter.
        counter: i64,
        /// Serialized record.
        entry: String,
    },
}

/// The session part of a step.
#[derive(Debug, Clone)]
pub struct SessionWrite<'a> {
    /// Session id.
    pub id: &'a str,
    /// The version read.
    pub version: i64,
    /// New state (JSON).
    pub state: &'a str,
    /// New expiry.
    pub expires_at_ms: i64,
}

async fn exec(tx: &mut DbTx, sql: &'static str, binds: Vec<Bind>) -> Result<u64, StoreError> {
    macro_rules! run {
        ($conn:ident) => {{
            let mut q = sqlx::query(sql);
            for b in &binds {
                q = match b {
                    Bind::Text(s) => q.bind(s.clone()),
                    Bind::OptText(s) => q.bind(s.clone()),
                    Bind::Int(i) => q.bind(*i),
                    Bind::Blob(v) => q.bind(v.clone()),
                };
            }
            q.execute(&mut *$conn).await.map(|r| r.rows_affected())
        }};
    }
    Ok(match tx {
        DbTx::Sqlite(t) => {
            let conn = &mut **t;
            run!(conn)?
        }
        DbTx::Postgres(t) => {
            let conn = &mut **t;
            run!(conn)?
        }
    })
}

enum Bind {
    Text(String),
    OptText(Option<String>),
    Int(i64),
    Blob(Vec<u8>),
}

/// Applies one step atomically: saves the session (if given) at the
/// version read and every op, or nothing. `Ok(Err(_))` names the
/// constraint that refused it.
pub async fn commit_step(
    db: &Db,
    session: Option<SessionWrite<'_>>,
    ops: &[StepOp],
    now_ms: i64,
) -> Result<Result<(), StepRefusal>, StoreError> {
    let mut tx = db.begin_write().await?;
    if let Some(s) = &session {
        let n = exec(
            &mut tx,
            "UPDATE flow_sessions SET state = $1, version = version + 1, updated_at_ms = $2, expires_at_ms = $3 \
             WHERE id = $4 AND version = $5",
            vec![
                Bind::Text(s.state.to_string()),
                Bind::Int(now_ms),
                Bind::Int(s.expires_at_ms),
                Bind::Text(s.id.to_string()),
                Bind::Int(s.version),
            ],
        )
        .await?;
        if n != 1 {
            tx.rollback().await?;
            return Ok(Err(StepRefusal::SessionMoved));
        }
    }
    for op in ops {
        if let Err(refusal) = apply(&mut tx, op, now_ms).await? {
            tx.rollback().await?;
            return Ok(Err(refusal));
        }
    }
    tx.commit().await?;
    Ok(Ok(()))
}

async fn apply(
    tx: &mut DbTx,
    op: &StepOp,
    now_ms: i64,
) -> Result<Result<(), StepRefusal>, StoreError> {
    use Bind::*;
    let ok = |n: u64, r: StepRefusal| if n == 1 { Ok(()) } else { Err(r) };
    Ok(match op {
        StepOp::ReserveBill {
            store_id,
            order_id,
            mall_id,
            bill_digest,
            hold_id,
        } => {
            let n = exec(
                tx,
                "INSERT INTO flowb_bills (store_id, order_id, status, mall_id, bill_digest, hold_id, updated_at_ms) \
                 VALUES ($1, $2, 'reserved', $3, $4, $5, $6) \
                 ON CONFLICT (store_id, order_id) DO UPDATE SET status = 'reserved', mall_id = $3, \
                 bill_digest = $4, hold_id = $5, updated_at_ms = $6 WHERE flowb_bills.status = 'open'",
                vec![
                    Text(store_id.clone()),
                    Text(order_id.clone()),
                    OptText(mall_id.clone()),
                    Blob(bill_digest.clone()),
                    Blob(hold_id.clone()),
                    Int(now_ms),
                ],
            )
            .await?;
            ok(n, StepRefusal::BillNotOpen)
        }
        StepOp::ReleaseBill {
            store_id,
            order_id,
            hold_id,
        } => {
            let n = exec(
                tx,
                "UPDATE flowb_bills SET status = 'open', hold_id = NULL, updated_at_ms = $4 \
                 WHERE store_id = $1 AND order_id = $2 AND hold_id = $3 AND status = 'reserved'",
                vec![
                    Text(store_id.clone()),
                    Text(order_id.clone()),
                    Blob(hold_id.clone()),
                    Int(now_ms),
                ],
            )
            .await?;
            ok(n, StepRefusal::BillNotReserved)
        }
        StepOp::SettleBill {
            store_id,
            order_id,
            transfer_id,
        } => {
            let n = exec(
                tx,
                "UPDATE flowb_bills SET status = 'settled', transfer_id = $3, updated_at_ms = $4 \
                 WHERE store_id = $1 AND order_id = $2 AND status = 'reserved'",
                vec![
                    Text(store_id.clone()),
                    Text(order_id.clone()),
                    Blob(transfer_id.clone()),
                    Int(now_ms),
                ],
            )
            .await?;
            ok(n, StepRefusal::BillNotReserved)
        }
        StepOp::SetPending {
            card_id,
            hold_id,
            op,
        } => {
            let n = exec(
                tx,
                "INSERT INTO flowb_pending_ops (card_id, hold_id, op, created_at_ms) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT DO NOTHING",
                vec![
                    Text(card_id.clone()),
                    Blob(hold_id.clone()),
                    Text(op.clone()),
                    Int(now_ms),
                ],
            )
            .await?;
            ok(n, StepRefusal::CardBusy)
        }
        StepOp::ClearPending { card_id, hold_id } => {
            let n = exec(
                tx,
                "DELETE FROM flowb_pending_ops WHERE card_id = $1 AND hold_id = $2",
                vec![Text(card_id.clone()), Blob(hold_id.clone())],
            )
            .await?;
            ok(n, StepRefusal::PendingMismatch)
        }
        StepOp::Shadow {
            card_id,
            balance_minor,
            counter,
        } => {
            exec(
                tx,
                "UPDATE cards SET shadow_balance_minor = $1, shadow_counter = $2 \
                 WHERE card_id = $3 AND shadow_counter < $2",
                vec![Int(*balance_minor), Int(*counter), Text(card_id.clone())],
            )
            .await?;
            Ok(())
        }
        StepOp::Ledger {
            transfer_id,
            request,
        } => {
            exec(
                tx,
                "INSERT INTO flowb_outbox (transfer_id, request, created_at_ms) VALUES ($1, $2, $3)",
                vec![Blob(transfer_id.clone()), Text(request.clone()), Int(now_ms)],
            )
            .await?;
            Ok(())
        }
        StepOp::Completion {
            store_id,
            order_id,
            mall_id,
            card_id,
            completion,
            digest,
            recovered,
        } => {
            exec(
                tx,
                "INSERT INTO flowb_completions (store_id, order_id, mall_id, card_id, completion, digest, recovered, created_at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
                vec![
                    Text(store_id.clone()),
                    Text(order_id.clone()),
                    OptText(mall_id.clone()),
                    Text(card_id.clone()),
                    Blob(completion.clone()),
                    Blob(digest.clone()),
                    Int(i64::from(*recovered)),
                    Int(now_ms),
                ],
            )
            .await?;
            Ok(())
        }
        StepOp::CardLog {
            card_id,
            counter,
            entry,
        } => {
            exec(
                tx,
                "INSERT INTO flowb_card_log (card_id, counter, entry, uploaded_at_ms) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT DO NOTHING",
                vec![
                    Text(card_id.clone()),
                    Int(*counter),
                    Text(entry.clone()),
                    Int(now_ms),
                ],
            )
            .await?;
            Ok(())
        }
    })
}

/// A bill's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillRow {
    /// `open`, `reserved` or `settled`.
    pub status: String,
    /// Mall of a member store.
    pub mall_id: Option<String>,
    /// Digest of the bill last reserved.
    pub bill_digest: Vec<u8>,
    /// The hold that reserved it.
    pub hold_id: Option<Vec<u8>>,
    /// The posting transfer once settled.
    pub transfer_id: Option<Vec<u8>>,
}

type BillTuple = (
    String,
    Option<String>,
    Vec<u8>,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
);

/// The row of a bill key, if the host ever reserved it.
pub async fn bill(db: &Db, store_id: &str, order_id: &str) -> Result<Option<BillRow>, StoreError> {
    let r: Option<BillTuple> = on_pool!(db, |pool| {
        sqlx::query_as(
            "SELECT status, mall_id, bill_digest, hold_id, transfer_id FROM flowb_bills \
             WHERE store_id = $1 AND order_id = $2",
        )
        .bind(store_id)
        .bind(order_id)
        .fetch_optional(pool)
        .await
    })?;
    Ok(r.map(|r| BillRow {
        status: r.0,
        mall_id: r.1,
        bill_digest: r.2,
        hold_id: r.3,
        transfer_id: r.4,
    }))
}

/// The card's pending operation (JSON), if any.
pub async fn pending_op(db: &Db, card_id: &str) -> Result<Option<String>, StoreError> {
    Ok(on_pool!(db, |pool| {
        sqlx::query_scalar("SELECT op FROM flowb_pending_ops WHERE card_id = $1")
            .bind(card_id)
            .fetch_optional(pool)
            .await
    })?)
}

/// One queued ledger request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    /// Queue position.
    pub seq: i64,
    /// Transfer id.
    pub transfer_id: Vec<u8>,
    /// Serialized request.
    pub request: String,
}

/// Queued ledger requests, oldest first.
pub async fn outbox(db: &Db, limit: i64) -> Result<Vec<OutboxRow>, StoreError> {
    let rows: Vec<(i64, Vec<u8>, String)> = on_pool!(db, |pool| {
        sqlx::query_as("SELECT seq, transfer_id, request FROM flowb_outbox ORDER BY seq LIMIT $1")
            .bind(limit)
            .fetch_all(pool)
            .await
    })?;
    Ok(rows
        .into_iter()
        .map(|r| OutboxRow {
            seq: r.0,
            transfer_id: r.1,
            request: r.2,
        })
        .collect())
}

/// Removes a submitted (or finally refused) request from the outbox.
pub async fn outbox_done(db: &Db, seq: i64) -> Result<(), StoreError> {
    on_pool!(db, |pool| {
        sqlx::query("DELETE FROM flowb_outbox WHERE seq = $1")
            .bind(seq)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
    })?;
    Ok(())
}

/// A stored completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletionRow {
    /// Mall.
    pub mall_id: Option<String>,
    /// Card that paid.
    pub card_id: String,
    /// COSE bytes.
    pub completion: Vec<u8>,
    /// Completed by recovery.
    pub recovered: bool,
}

/// The completion of a bill key.
pub async fn completion(
    db: &Db,
    store_id: &str,
    order_id: &str,
) -> Result<Option<CompletionRow>, StoreError> {
    let r: Option<(Option<String>, String, Vec<u8>, i64)> = on_pool!(db, |pool| {
        sqlx::query_as(
            "SELECT mall_id, card_id, completion, recovered FROM flowb_completions \
             WHERE store_id = $1 AND order_id = $2",
        )
        .bind(store_id)
        .bind(order_id)
        .fetch_optional(pool)
        .await
    })?;
    Ok(r.map(|r| CompletionRow {
        mall_id: r.0,
        card_id: r.1,
        completion: r.2,
        recovered: r.3 != 0,
    }))
}

/// Keeps a verified receipt; `Ok(false)` if it was kept already.
pub async fn insert_receipt(
    db: &Db,
    store_id: &str,
    order_id: &str,
    completion_digest: &[u8],
    receipt_digest: &[u8],
    now_ms: i64,
) -> Result<bool, StoreError> {
    let n = on_pool!(db, |pool| {
        sqlx::query(
            "INSERT INTO flowb_receipts (store_id, order_id, completion_digest, receipt_digest, created_at_ms) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(store_id)
        .bind(order_id)
        .bind(completion_digest)
        .bind(receipt_digest)
        .bind(now_ms)
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
    })?;
    Ok(n == 1)
}

/// Number of receipts kept for a bill key.
pub async fn receipt_count(db: &Db, store_id: &str, order_id: &str) -> Result<i64, StoreError> {
    Ok(on_pool!(db, |pool| {
        sqlx::query_scalar(
            "SELECT COUNT(*) FROM flowb_receipts WHERE store_id = $1 AND order_id = $2",
        )
        .bind(store_id)
        .bind(order_id)
        .fetch_one(pool)
        .await
    })?)
}

/// Uploaded card log records (JSON), newest first.
pub async fn card_log(db: &Db, card_id: &str) -> Result<Vec<String>, StoreError> {
    Ok(on_pool!(db, |pool| {
        sqlx::query_scalar(
            "SELECT entry FROM flowb_card_log WHERE card_id = $1 ORDER BY counter DESC",
        )
        .bind(card_id)
        .fetch_all(pool)
        .await
    })?)
}

/// A cardholder's funding card for top-ups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FundingCardRow {
    /// The funding (credit line) ledger account.
    pub account_id: String,
    /// Its cardholder.
    pub cardholder_id: String,
    /// Keyed hash of the card number.
    pub pan_index: Vec<u8>,
    /// Masked card number (BIN + last 4).
    pub pan_masked: String,
    /// Expiry, `YYMM`.
    pub expiry_yymm: String,
    /// Keyed PIN verification data.
    pub pin_data: Vec<u8>,
    /// Issuer key version the index and PIN keys derive from.
    pub key_ref: String,
    /// Registration time.
    pub created_at_ms: i64,
}

type FundingTuple = (
    String,
    String,
    Vec<u8>,
    String,
    String,
    Vec<u8>,
    String,
    i64,
);

fn funding_from(r: FundingTuple) -> FundingCardRow {
    FundingCardRow {
        account_id: r.0,
        cardholder_id: r.1,
        pan_index: r.2,
        pan_masked: r.3,
        expiry_yymm: r.4,
        pin_data: r.5,
        key_ref: r.6,
        created_at_ms: r.7,
    }
}

/// Registers (or replaces, for the same account) a funding card;
/// `Ok(false)` if the card number is registered to another account.
pub async fn upsert_funding_card(db: &Db, f: &FundingCardRow) -> Result<bool, StoreError> {
    let other: Option<String> = on_pool!(db, |pool| {
        sqlx::query_scalar("SELECT account_id FROM flowb_funding_cards WHERE pan_index = $1")
            .bind(&f.pan_index)
            .fetch_optional(pool)
            .await
    })?;
    if other.is_some_and(|a| a != f.account_id) {
        return Ok(false);
    }
    on_pool!(db, |pool| {
        sqlx::query(
            "INSERT INTO flowb_funding_cards (account_id, cardholder_id, pan_index, pan_masked, expiry_yymm, pin_data, key_ref, created_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (account_id) DO UPDATE SET pan_index = $3, pan_masked = $4, expiry_yymm = $5, \
             pin_data = $6, key_ref = $7",
        )
        .bind(&f.account_id)
        .bind(&f.cardholder_id)
        .bind(&f.pan_index)
        .bind(&f.pan_masked)
        .bind(&f.expiry_yymm)
        .bind(&f.pin_data)
        .bind(&f.key_ref)
        .bind(f.created_at_ms)
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
    })?;
    Ok(true)
}

/// The funding card with this keyed card-number hash.
pub async fn funding_card_by_index(
    db: &Db,
    pan_index: &[u8],
) -> Result<Option<FundingCardRow>, StoreError> {
    let r: Option<FundingTuple> = on_pool!(db, |pool| {
        sqlx::query_as(
            "SELECT account_id, cardholder_id, pan_index, pan_masked, expiry_yymm, pin_data, key_ref, created_at_ms \
             FROM flowb_funding_cards WHERE pan_index = $1",
        )
        .bind(pan_index)
        .fetch_optional(pool)
        .await
    })?;
    Ok(r.map(funding_from))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn db() -> (Db, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path().to_str().unwrap()).await.unwrap();
        (db, dir)
    }

    fn reserve(order: &str, hold: u8) -> StepOp {
        StepOp::ReserveBill {
            store_id: "s".into(),
            order_id: order.into(),
            mall_id: None,
            bill_digest: vec![1; 32],
            hold_id: vec![hold; 16],
        }
    }

    #[tokio::test]
    async fn a_bill_moves_open_reserved_settled_once() {
        let (db, _d) = db().await;
        assert_eq!(
            commit_step(&db, None, &[reserve("o", 1)], 1).await.unwrap(),
            Ok(())
        );
        assert_eq!(
            commit_step(&db, None, &[reserve("o", 2)], 2).await.unwrap(),
            Err(StepRefusal::BillNotOpen)
        );
        let release = StepOp::ReleaseBill {
            store_id: "s".into(),
            order_id: "o".into(),
            hold_id: vec![1; 16],
        };
        assert_eq!(
            commit_step(&db, None, std::slice::from_ref(&release), 3)
                .await
                .unwrap(),
            Ok(())
        );
        assert_eq!(
            commit_step(&db, None, &[release], 3).await.unwrap(),
            Err(StepRefusal::BillNotReserved)
        );
        assert_eq!(
            commit_step(&db, None, &[reserve("o", 2)], 4).await.unwrap(),
            Ok(())
        );
        let settle = StepOp::SettleBill {
            store_id: "s".into(),
            order_id: "o".into(),
            transfer_id: vec![9; 16],
        };
        assert_eq!(
            commit_step(&db, None, std::slice::from_ref(&settle), 5)
                .await
                .unwrap(),
            Ok(())
        );
        assert_eq!(
            commit_step(&db, None, &[settle], 6).await.unwrap(),
            Err(StepRefusal::BillNotReserved)
        );
        assert_eq!(
            commit_step(&db, None, &[reserve("o", 3)], 7).await.unwrap(),
            Err(StepRefusal::BillNotOpen)
        );
        assert_eq!(
            bill(&db, "s", "o").await.unwrap().unwrap().status,
            "settled"
        );
    }

    #[tokio::test]
    async fn a_refused_op_rolls_the_whole_step_back() {
        let (db, _d) = db().await;
        crate::flow_support::create_session(&db, "x", FLOW, "{}", 1, 100)
            .await
            .unwrap();
        let set = |h: u8| StepOp::SetPending {
            card_id: "c".into(),
            hold_id: vec![h; 16],
            op: "{}".into(),
        };
        assert_eq!(commit_step(&db, None, &[set(1)], 1).await.unwrap(), Ok(()));
        let s = SessionWrite {
            id: "x",
            version: 1,
            state: "{\"n\":2}",
            expires_at_ms: 100,
        };
        // The card is busy: the bill reservation and session save roll back.
        assert_eq!(
            commit_step(&db, Some(s.clone()), &[reserve("p", 5), set(2)], 2)
                .await
                .unwrap(),
            Err(StepRefusal::CardBusy)
        );
        assert!(bill(&db, "s", "p").await.unwrap().is_none());
        let stored = crate::flow_support::load_session(&db, "x")
            .await
            .unwrap()
            .unwrap();
        assert_eq!((stored.version, stored.state.as_str()), (1, "{}"));
        // A stale version is refused.
        assert_eq!(
            commit_step(&db, Some(s.clone()), &[], 3).await.unwrap(),
            Ok(())
        );
        assert_eq!(
            commit_step(&db, Some(s), &[], 4).await.unwrap(),
            Err(StepRefusal::SessionMoved)
        );
    }
}
