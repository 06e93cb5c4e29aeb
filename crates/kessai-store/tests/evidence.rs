//! The evidence store and the auditor's evidence-link check, on SQLite and
//! (with `--ignored` and KESSAI_TEST_POSTGRES_URL) PostgreSQL.

use kessai_ids::TransferId;
use kessai_ledger::{Account, AccountKind, BalanceLimit, Leg, TransferRequest, codes};
use kessai_money::Currency;
use kessai_store::evidence::{self, EvidenceFinding, NewEvidence};
use kessai_store::{Db, DbConfig};

async fn open(postgres: bool, dir: &std::path::Path) -> Db {
    if postgres {
        let url = std::env::var("KESSAI_TEST_POSTGRES_URL")
            .expect("KESSAI_TEST_POSTGRES_URL must be set to run the PostgreSQL suite");
        let mut cfg = DbConfig::new(url);
        let mut r = [0u8; 6];
        rand::fill(&mut r);
        cfg.postgres_schema = Some(format!("evidence_{}", hex::encode(r)));
        Db::open_with(cfg).await.unwrap()
    } else {
        Db::open(dir.to_str().unwrap()).await.unwrap()
    }
}

async fn links_are_checked(postgres: bool) {
    let dir = tempfile::tempdir().unwrap();
    let db = open(postgres, dir.path()).await;
    let jpy = Currency::from_code("JPY").unwrap();
    for id in ["a", "b"] {
        let acct = Account::new(
            id.parse().unwrap(),
            AccountKind::IssuerClearing,
            jpy,
            BalanceLimit::Unlimited,
        );
        db.ledger().create_account(&acct, 1).await.unwrap().unwrap();
    }
    let bill = b"a signed bill".to_vec();
    let ne = NewEvidence {
        kind: "kessai-bill",
        subject: "bill:1",
        signer: "store-1#1",
        binds: &[],
        bytes: &bill,
        now_ms: 10,
        purge_after_ms: Some(1_000),
    };
    let d = evidence::put(&db, &ne).await.unwrap();
    assert_eq!(evidence::put(&db, &ne).await.unwrap(), d, "idempotent");
    let got = evidence::get(&db, &d).await.unwrap().unwrap();
    assert_eq!(got.bytes, bill);
    assert_eq!(evidence::by_subject(&db, "bill:1").await.unwrap().len(), 1);

    let missing = [7u8; 32];
    let t = |n: &[u8], ev: [u8; 32]| {
        TransferRequest::posted(
            TransferId::derive("t", &[n]),
            jpy,
            codes::FUNDING,
            vec![
                Leg::debit("a".parse().unwrap(), 5),
                Leg::credit("b".parse().unwrap(), 5),
            ],
        )
        .with_evidence("kessai-bill", ev)
    };
    db.ledger().submit(t(b"1", d), 20).await.unwrap().unwrap();
    let r = evidence::audit_links(&db).await.unwrap();
    assert_eq!((r.links, r.purged), (1, 0));
    assert!(r.findings.is_empty(), "{r:?}");

    db.ledger()
        .submit(t(b"2", missing), 21)
        .await
        .unwrap()
        .unwrap();
    let r = evidence::audit_links(&db).await.unwrap();
    assert!(
        matches!(&r.findings[..], [EvidenceFinding::MissingEvidence { .. }]),
        "{r:?}"
    );

    // Edit the stored bytes: the auditor sees the tampering.
    kessai_store::on_pool!(db, |pool| {
        sqlx::query("UPDATE evidence SET bytes = $1 WHERE subject = 'bill:1'")
            .bind(b"a forged bill".to_vec())
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
    })
    .unwrap();
    let r = evidence::audit_links(&db).await.unwrap();
    assert!(
        r.findings
            .iter()
            .any(|f| matches!(f, EvidenceFinding::TamperedEvidence { .. })),
        "{r:?}"
    );

    // Retention purge keeps a tombstone: purged, not missing.
    assert_eq!(evidence::purge_due(&db, 999).await.unwrap(), 0);
    assert_eq!(evidence::purge_due(&db, 1_000).await.unwrap(), 1);
    let tomb = evidence::get(&db, &d).await.unwrap().unwrap();
    assert!(tomb.bytes.is_empty() && tomb.purged_at_ms == Some(1_000));
    let r = evidence::audit_links(&db).await.unwrap();
    assert_eq!(r.purged, 1);
    assert!(
        matches!(&r.findings[..], [EvidenceFinding::MissingEvidence { .. }]),
        "{r:?}"
    );
}

#[tokio::test]
async fn sqlite_links_are_checked() {
    links_are_checked(false).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: set KESSAI_TEST_POSTGRES_URL and run with --ignored"]
async fn postgres_links_are_checked() {
    links_are_checked(true).await;
}
