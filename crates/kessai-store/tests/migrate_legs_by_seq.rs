//! Migration 0010 on a SQLite ledger written under migrations 0001–0009:
//! legs and evidence re-keyed by transfer sequence number, the account
//! history filled, and nothing lost (every transfer reads back whole, the
//! auditor passes, new postings and history queries work).

use kessai_ids::{AccountId, TransferId};
use kessai_ledger::{Leg, TransferRequest, codes};
use kessai_money::Currency;
use kessai_store::Db;
use kessai_store::audit::audit;
use kessai_store::db::SQLITE_MIGRATOR;
use sqlx::sqlite::SqliteConnectOptions;

fn acc(s: &str) -> AccountId {
    s.parse().unwrap()
}

fn pay(n: u8, from: &str, to: &str, amount: i64) -> TransferRequest {
    TransferRequest::posted(
        TransferId::derive("migration", &[&[n]]),
        Currency::from_code("JPY").unwrap(),
        codes::CARD_PAYMENT,
        vec![Leg::debit(acc(from), amount), Leg::credit(acc(to), amount)],
    )
    .with_evidence("cose/bill", [n; 32])
    .with_reference(format!("order-{n}"))
}

#[tokio::test]
async fn ledger_written_before_0010_survives_it() {
    let dir = std::env::temp_dir().join(format!("kessai-migrate-0010-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("kessai.db");
    let old = [
        pay(1, "clearing", "prepaid", 500),
        pay(2, "prepaid", "shop", 200),
    ];
    {
        let pool = sqlx::SqlitePool::connect_with(
            SqliteConnectOptions::new()
                .filename(&file)
                .create_if_missing(true),
        )
        .await
        .unwrap();
        SQLITE_MIGRATOR.run_to(9, &pool).await.unwrap();
        // The 0001 schema, written the way the writer of that time did:
        // legs and evidence keyed by the 16-byte transfer id.
        for (id, kind, limit_kind) in [("clearing", 5, 0), ("prepaid", 2, 1), ("shop", 3, 1)] {
            sqlx::query(
                "INSERT INTO ledger_accounts (id, kind, currency, limit_kind, limit_minor, \
                 created_at_ms) VALUES ($1, $2, 392, $3, 0, 1)",
            )
            .bind(id)
            .bind(kind)
            .bind(limit_kind)
            .execute(&pool)
            .await
            .unwrap();
        }
        for (i, t) in old.iter().enumerate() {
            sqlx::query(
                "INSERT INTO ledger_transfers (id, kind, currency, code, reference, digest, \
                 created_at_ms) VALUES ($1, 0, 392, $2, $3, $4, $5)",
            )
            .bind(t.id.as_bytes().as_slice())
            .bind(i64::from(t.code))
            .bind(&t.reference)
            .bind(t.digest().as_slice())
            .bind(10 + i as i64)
            .execute(&pool)
            .await
            .unwrap();
            for (j, leg) in t.legs.iter().enumerate() {
                sqlx::query(
                    "INSERT INTO ledger_legs (transfer_id, leg_index, account_id, side, \
                     amount_minor) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(t.id.as_bytes().as_slice())
                .bind(j as i64)
                .bind(leg.account.as_str())
                .bind(leg.side.code())
                .bind(leg.amount_minor)
                .execute(&pool)
                .await
                .unwrap();
            }
            let ev = &t.evidence[0];
            sqlx::query(
                "INSERT INTO ledger_evidence (transfer_id, ev_index, kind, digest) \
                 VALUES ($1, 0, $2, $3)",
            )
            .bind(t.id.as_bytes().as_slice())
            .bind(&ev.kind)
            .bind(ev.digest.as_slice())
            .execute(&pool)
            .await
            .unwrap();
        }
        for (id, dp, cp) in [
            ("clearing", 500, 0),
            ("prepaid", 200, 500),
            ("shop", 0, 200),
        ] {
            sqlx::query(
                "UPDATE ledger_accounts SET debits_posted = $2, credits_posted = $3 WHERE id = $1",
            )
            .bind(id)
            .bind(dp)
            .bind(cp)
            .execute(&pool)
            .await
            .unwrap();
        }
        pool.close().await;
    }

    let db = Db::open(dir.to_str().unwrap()).await.unwrap();
    let l = db.ledger();
    for (i, t) in old.iter().enumerate() {
        let (seq, rec) = l.transfer(&t.id).await.unwrap().unwrap();
        assert_eq!(seq, i as i64 + 1);
        assert_eq!(rec.legs, t.legs);
        assert_eq!(rec.evidence, t.evidence);
        assert_eq!(rec.digest, t.digest());
    }
    let report = audit(&db).await.unwrap();
    assert!(report.is_clean(), "{:#?}", report.findings);
    assert_eq!(report.transfers, 2);
    // The history holds the old legs; new postings join them.
    let r = l
        .submit(pay(3, "prepaid", "shop", 50), 20)
        .await
        .unwrap()
        .unwrap();
    assert!(!r.replayed);
    let prepaid: Vec<TransferId> = l
        .transfers_for_account(&acc("prepaid"), 0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, t)| t.id)
        .collect();
    assert_eq!(prepaid, vec![old[0].id, old[1].id, r.record.id]);
    assert!(audit(&db).await.unwrap().is_clean());
    db.close().await;
    std::fs::remove_dir_all(&dir).ok();
}
