//! One ledger/audit test suite, run against SQLite (a fresh temp directory
//! per test) always, and against PostgreSQL (a fresh schema per test) when
//! asked: the PostgreSQL tests are `#[ignore]`d so a plain `cargo test`
//! needs no server; run them with
//!
//! ```text
//! KESSAI_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo test -p kessai-store --test conformance -- --ignored
//! ```
//!
//! With `--ignored` and no `KESSAI_TEST_POSTGRES_URL` they fail.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};

use kessai_ids::{AccountId, TransferId};
use kessai_ledger::{
    Account, AccountKind, BalanceLimit, Balances, LedgerError, Leg, TransferKind, TransferRequest,
    codes,
};
use kessai_money::Currency;
use kessai_store::audit::{Finding, audit};
use kessai_store::{Backend, Db, DbConfig, DbPool, Ledger};

// ---------------------------------------------------------------- harness

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn unique() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{}_{}_{}",
        std::process::id(),
        nanos % 1_000_000_000_000,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A fresh database for one test, and how to open it again.
struct TestDb {
    db: Db,
    config: DbConfig,
    /// SQLite: the temp directory; PostgreSQL: the schema.
    place: String,
}

impl TestDb {
    async fn sqlite() -> TestDb {
        let dir = std::env::temp_dir().join(format!("kessai-store-test-{}", unique()));
        let config = DbConfig::new(dir.to_str().unwrap());
        let db = Db::open_with(config.clone()).await.unwrap();
        TestDb {
            db,
            config,
            place: dir.to_str().unwrap().to_owned(),
        }
    }

    async fn postgres() -> TestDb {
        let url = std::env::var("KESSAI_TEST_POSTGRES_URL").expect(
            "KESSAI_TEST_POSTGRES_URL must be set to run the PostgreSQL conformance tests \
             (e.g. postgres://postgres@127.0.0.1:5432/test)",
        );
        let schema = format!("kessai_test_{}", unique());
        let mut config = DbConfig::new(url);
        config.postgres_schema = Some(schema.clone());
        config.max_connections = Some(8);
        let db = Db::open_with(config.clone()).await.unwrap();
        TestDb {
            db,
            config,
            place: schema,
        }
    }

    /// A second, independent handle (its own pool and writer).
    async fn reopen(&self) -> Db {
        Db::open_with(self.config.clone()).await.unwrap()
    }

    fn ledger(&self) -> Ledger {
        self.db.ledger()
    }

    /// Runs raw SQL (corruption planting).
    async fn raw(&self, sql: &'static str) {
        match self.db.pool() {
            DbPool::Sqlite(p) => {
                sqlx::raw_sql(sql).execute(p).await.unwrap();
            }
            DbPool::Postgres(p) => {
                sqlx::raw_sql(sql).execute(p).await.unwrap();
            }
        }
    }

    async fn finish(self) {
        self.db.close().await;
        match self.db.backend() {
            Backend::Sqlite => {
                std::fs::remove_dir_all(&self.place).ok();
            }
            Backend::Postgres => {
                // A plain connection: opening a `Db` would migrate the
                // default schema, which this suite never touches.
                let admin = sqlx::PgPool::connect(&self.config.url).await.unwrap();
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP SCHEMA \"{}\" CASCADE",
                    self.place
                )))
                .execute(&admin)
                .await
                .unwrap();
                admin.close().await;
            }
        }
    }
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let t = super::TestDb::sqlite().await;
                    super::$name(&t).await;
                    t.finish().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[ignore = "needs PostgreSQL: set KESSAI_TEST_POSTGRES_URL and run with --ignored"]
                async fn $name() {
                    let t = super::TestDb::postgres().await;
                    super::$name(&t).await;
                    t.finish().await;
                }
            )*
        }
    };
}

conformance!(
    every_result_code,
    idempotent_retry_and_different_content,
    limits_count_pending,
    two_phase_post_void_expire,
    concurrent_same_id_one_created,
    two_handles_race_same_ids_and_limit,
    durability_after_reopen,
    listing,
    audit_clean_ledger,
    audit_edited_leg_amount,
    audit_deleted_transfer,
    audit_duplicated_transfer,
    audit_edited_balance,
    history_across_merges,
    writer_sees_other_handles_postings,
);

// ---------------------------------------------------------------- fixtures

fn jpy() -> Currency {
    Currency::from_code("JPY").unwrap()
}
fn eur() -> Currency {
    Currency::from_code("EUR").unwrap()
}
fn acc(s: &str) -> AccountId {
    s.parse().unwrap()
}
fn tid(n: u64) -> TransferId {
    TransferId::derive("conformance", &[&n.to_be_bytes()])
}

/// clearing (unlimited), card (credit line 1000), prepaid (balance only),
/// shop (payable), eur-fees (another currency).
async fn setup(l: &Ledger) {
    for (id, kind, cur, limit) in [
        (
            "clearing",
            AccountKind::IssuerClearing,
            jpy(),
            BalanceLimit::Unlimited,
        ),
        (
            "card",
            AccountKind::CardholderFunding,
            jpy(),
            BalanceLimit::MaxNetDebit(1000),
        ),
        (
            "prepaid",
            AccountKind::EmoneyOutstanding,
            jpy(),
            BalanceLimit::MaxNetDebit(0),
        ),
        (
            "shop",
            AccountKind::MerchantPayable,
            jpy(),
            BalanceLimit::MaxNetDebit(0),
        ),
        (
            "eur-fees",
            AccountKind::IssuerFees,
            eur(),
            BalanceLimit::Unlimited,
        ),
    ] {
        let created = l
            .create_account(&Account::new(acc(id), kind, cur, limit), 1)
            .await
            .unwrap()
            .unwrap();
        assert!(created, "{id}");
    }
}

fn pay(n: u64, from: &str, to: &str, amount: i64) -> TransferRequest {
    TransferRequest::posted(
        tid(n),
        jpy(),
        codes::CARD_PAYMENT,
        vec![Leg::debit(acc(from), amount), Leg::credit(acc(to), amount)],
    )
    .with_evidence("cose/bill", [n as u8; 32])
    .with_reference(format!("order-{n}"))
}

fn hold(n: u64, from: &str, to: &str, amount: i64, expires: u64) -> TransferRequest {
    TransferRequest::pending(
        tid(n),
        jpy(),
        codes::CARD_PAYMENT,
        vec![Leg::debit(acc(from), amount), Leg::credit(acc(to), amount)],
        expires,
    )
}

fn resolve(n: u64, kind: TransferKind) -> TransferRequest {
    TransferRequest::resolution(tid(n), jpy(), codes::CARD_PAYMENT, kind)
}

async fn ok(l: &Ledger, req: TransferRequest, now: u64) -> kessai_store::TransferResult {
    let r = l.submit(req, now).await.unwrap().unwrap();
    assert!(!r.replayed);
    assert!(r.seq > 0);
    r
}

async fn refused(l: &Ledger, req: TransferRequest, now: u64) -> LedgerError {
    l.submit(req, now).await.unwrap().unwrap_err()
}

async fn bal(l: &Ledger, id: &str) -> Balances {
    l.account(&acc(id)).await.unwrap().unwrap().balances
}

async fn assert_clean(db: &Db) {
    let report = audit(db).await.unwrap();
    assert!(report.is_clean(), "{:#?}", report.findings);
}

// ---------------------------------------------------------------- bodies

async fn every_result_code(t: &TestDb) {
    let l = t.ledger();
    setup(&l).await;
    ok(&l, pay(1, "clearing", "prepaid", 100), 10).await;
    // AlreadyExists → replay; ExistsWithDifferentContent.
    assert!(
        l.submit(pay(1, "clearing", "prepaid", 100), 11)
            .await
            .unwrap()
            .unwrap()
            .replayed
    );
    assert_eq!(
        refused(&l, pay(1, "clearing", "prepaid", 101), 11).await,
        LedgerError::ExistsWithDifferentContent
    );
    assert_eq!(
        refused(&l, pay(2, "clearing", "ghost", 5), 11).await,
        LedgerError::AccountNotFound {
            account: acc("ghost")
        }
    );
    assert_eq!(
        refused(&l, pay(2, "clearing", "eur-fees", 5), 11).await,
        LedgerError::CurrencyMismatch
    );
    let mut r = pay(2, "clearing", "prepaid", 5);
    r.legs[1].amount_minor = 4;
    assert_eq!(refused(&l, r, 11).await, LedgerError::Unbalanced);
    assert_eq!(
        refused(&l, pay(2, "clearing", "prepaid", 0), 11).await,
        LedgerError::AmountNotPositive
    );
    let mut r = pay(2, "clearing", "prepaid", 5);
    r.legs.truncate(1);
    assert_eq!(refused(&l, r, 11).await, LedgerError::TooFewLegs);
    let mut r = pay(2, "clearing", "prepaid", 5);
    r.legs.push(Leg::debit(acc("prepaid"), 1));
    r.legs.push(Leg::credit(acc("shop"), 1));
    assert_eq!(refused(&l, r, 11).await, LedgerError::SameAccountBothSides);
    assert_eq!(
        refused(&l, pay(2, "prepaid", "shop", 101), 11).await,
        LedgerError::ExceedsLimit {
            account: acc("prepaid")
        }
    );
    assert_eq!(
        refused(
            &l,
            resolve(
                2,
                TransferKind::PostPending {
                    pending_id: tid(99)
                }
            ),
            11
        )
        .await,
        LedgerError::PendingNotFound
    );
    ok(&l, hold(3, "card", "shop", 10, 100), 12).await;
    ok(
        &l,
        resolve(4, TransferKind::PostPending { pending_id: tid(3) }),
        13,
    )
    .await;
    assert_eq!(
        refused(
            &l,
            resolve(5, TransferKind::VoidPending { pending_id: tid(3) }),
            14
        )
        .await,
        LedgerError::PendingAlreadyPosted
    );
    ok(&l, hold(6, "card", "shop", 10, 100), 15).await;
    ok(
        &l,
        resolve(7, TransferKind::VoidPending { pending_id: tid(6) }),
        16,
    )
    .await;
    assert_eq!(
        refused(
            &l,
            resolve(8, TransferKind::PostPending { pending_id: tid(6) }),
            17
        )
        .await,
        LedgerError::PendingAlreadyVoided
    );
    ok(&l, hold(9, "card", "shop", 10, 100), 18).await;
    assert_eq!(
        refused(
            &l,
            resolve(10, TransferKind::ExpirePending { pending_id: tid(9) }),
            99
        )
        .await,
        LedgerError::PendingNotYetExpired
    );
    assert_eq!(
        refused(
            &l,
            resolve(10, TransferKind::PostPending { pending_id: tid(9) }),
            100
        )
        .await,
        LedgerError::PendingExpired
    );
    ok(
        &l,
        resolve(10, TransferKind::ExpirePending { pending_id: tid(9) }),
        100,
    )
    .await;
    assert_eq!(
        refused(
            &l,
            resolve(11, TransferKind::VoidPending { pending_id: tid(9) }),
            101
        )
        .await,
        LedgerError::PendingAlreadyExpired
    );
    assert_eq!(
        refused(&l, hold(12, "card", "shop", 10, 50), 50).await,
        LedgerError::ExpiryNotInFuture
    );
    let mut r = resolve(12, TransferKind::VoidPending { pending_id: tid(9) });
    r.legs.push(Leg::debit(acc("card"), 1));
    assert_eq!(refused(&l, r, 50).await, LedgerError::ResolutionWithLegs);
    assert_eq!(
        refused(&l, pay(12, "clearing", "prepaid", i64::MAX), 50).await,
        LedgerError::Overflow
    );
    // Accounts: idempotent creation, conflicting redefinition.
    let card = Account::new(
        acc("card"),
        AccountKind::CardholderFunding,
        jpy(),
        BalanceLimit::MaxNetDebit(1000),
    );
    assert_eq!(l.create_account(&card, 5).await.unwrap(), Ok(false));
    let other = Account {
        limit: BalanceLimit::MaxNetDebit(5),
        ..card
    };
    assert_eq!(
        l.create_account(&other, 5).await.unwrap(),
        Err(LedgerError::AccountExistsWithDifferentContent)
    );
    // Refusals left no trace.
    assert_eq!(l.all_transfers().await.unwrap().len(), 7);
    assert_clean(&t.db).await;
}

async fn idempotent_retry_and_different_content(t: &TestDb) {
    let l = t.ledger();
    setup(&l).await;
    let first = ok(&l, pay(1, "card", "shop", 300), 10).await;
    let again = l
        .submit(pay(1, "card", "shop", 300), 20)
        .await
        .unwrap()
        .unwrap();
    assert!(again.replayed);
    assert_eq!(again.record, first.record);
    assert_eq!(again.seq, first.seq);
    assert_eq!(again.record.created_at_ms, 10);
    assert_eq!(bal(&l, "card").await.debits_posted, 300);
    for changed in [
        pay(1, "card", "shop", 301),
        pay(1, "card", "shop", 300).with_reference("other"),
        pay(1, "card", "shop", 300).with_evidence("cose/pcn", [1; 32]),
        hold(1, "card", "shop", 300, 100),
    ] {
        assert_eq!(
            refused(&l, changed, 30).await,
            LedgerError::ExistsWithDifferentContent
        );
    }
    assert_eq!(bal(&l, "card").await.debits_posted, 300);
    let (_, stored) = l.transfer(&tid(1)).await.unwrap().unwrap();
    assert_eq!(stored, first.record);
    assert!(l.transfer(&tid(2)).await.unwrap().is_none());
    assert_clean(&t.db).await;
}

async fn limits_count_pending(t: &TestDb) {
    let l = t.ledger();
    setup(&l).await;
    ok(&l, hold(1, "card", "shop", 700, 1000), 10).await;
    assert_eq!(
        refused(&l, pay(2, "card", "shop", 301), 11).await,
        LedgerError::ExceedsLimit {
            account: acc("card")
        }
    );
    ok(&l, pay(2, "card", "shop", 300), 11).await;
    assert_eq!(
        bal(&l, "card").await,
        Balances {
            debits_pending: 700,
            debits_posted: 300,
            ..Default::default()
        }
    );
    // Voiding the hold frees the line.
    ok(
        &l,
        resolve(3, TransferKind::VoidPending { pending_id: tid(1) }),
        12,
    )
    .await;
    ok(&l, pay(4, "card", "shop", 700), 13).await;
    // A pending credit does not fund a debit; a posted one does.
    ok(&l, hold(5, "clearing", "prepaid", 50, 1000), 14).await;
    assert_eq!(
        refused(&l, pay(6, "prepaid", "shop", 1), 15).await,
        LedgerError::ExceedsLimit {
            account: acc("prepaid")
        }
    );
    ok(
        &l,
        resolve(7, TransferKind::PostPending { pending_id: tid(5) }),
        16,
    )
    .await;
    ok(&l, pay(6, "prepaid", "shop", 50), 17).await;
    assert_eq!(
        refused(&l, pay(8, "prepaid", "shop", 1), 18).await,
        LedgerError::ExceedsLimit {
            account: acc("prepaid")
        }
    );
    assert_clean(&t.db).await;
}

async fn two_phase_post_void_expire(t: &TestDb) {
    let l = t.ledger();
    setup(&l).await;
    ok(&l, hold(1, "card", "shop", 100, 1000), 10).await;
    ok(&l, hold(2, "card", "shop", 200, 1000), 10).await;
    ok(&l, hold(3, "card", "shop", 300, 500), 10).await;
    let post = ok(
        &l,
        resolve(4, TransferKind::PostPending { pending_id: tid(1) }),
        20,
    )
    .await;
    let (_, pending) = l.transfer(&tid(1)).await.unwrap().unwrap();
    assert_eq!(post.record.legs, pending.legs);
    ok(
        &l,
        resolve(5, TransferKind::VoidPending { pending_id: tid(2) }),
        20,
    )
    .await;
    assert_eq!(
        bal(&l, "card").await,
        Balances {
            debits_pending: 300,
            debits_posted: 100,
            ..Default::default()
        }
    );
    // Sweep before expiry: nothing.
    assert_eq!(l.expire_due(499, 100).await.unwrap().expired, vec![]);
    let sweep = l.expire_due(500, 100).await.unwrap();
    assert_eq!(sweep.expired, vec![tid(3)]);
    // A second sweep (another process) finds nothing to do.
    let again = l.expire_due(600, 100).await.unwrap();
    assert!(again.expired.is_empty() && again.already_resolved.is_empty());
    let (_, exp) = l
        .transfer(&kessai_store::ledger::expiry_id(&tid(3)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(exp.kind, TransferKind::ExpirePending { pending_id: tid(3) });
    assert_eq!(
        refused(
            &l,
            resolve(6, TransferKind::PostPending { pending_id: tid(3) }),
            600
        )
        .await,
        LedgerError::PendingAlreadyExpired
    );
    assert_eq!(
        bal(&l, "card").await,
        Balances {
            debits_posted: 100,
            ..Default::default()
        }
    );
    assert_eq!(
        bal(&l, "shop").await,
        Balances {
            credits_posted: 100,
            ..Default::default()
        }
    );
    assert_clean(&t.db).await;
}

async fn concurrent_same_id_one_created(t: &TestDb) {
    let l = t.ledger();
    setup(&l).await;
    let mut tasks = Vec::new();
    for i in 0..64u64 {
        let l = l.clone();
        tasks.push(tokio::spawn(async move {
            l.submit(pay(1, "card", "shop", 250), 10 + i).await
        }));
    }
    let mut created = 0;
    let mut seqs = BTreeSet::new();
    for task in tasks {
        let r = task.await.unwrap().unwrap().unwrap();
        created += usize::from(!r.replayed);
        seqs.insert(r.seq);
    }
    assert_eq!(created, 1);
    assert_eq!(seqs.len(), 1);
    assert_eq!(bal(&l, "card").await.debits_posted, 250);
    assert_clean(&t.db).await;
}

/// Two independent handles (separate pools and writers; on PostgreSQL the
/// situation of two `kessai serve` processes) race the same transfer ids
/// and the same limited account.
async fn two_handles_race_same_ids_and_limit(t: &TestDb) {
    let l = t.ledger();
    setup(&l).await;
    let other = t.reopen().await;
    let handles = [t.ledger(), other.ledger()];
    // 40 distinct payments of 100 from a card with a 1000 line: exactly
    // ten fit. Every payment is submitted 3 times through each handle.
    let mut tasks = Vec::new();
    for round in 0..3u64 {
        for n in 0..40u64 {
            for h in &handles {
                let h = h.clone();
                tasks.push(tokio::spawn(async move {
                    (n, h.submit(pay(n, "card", "shop", 100), 10 + round).await)
                }));
            }
        }
    }
    let mut created: BTreeSet<u64> = BTreeSet::new();
    let mut created_count = 0;
    for task in tasks {
        let (n, r) = task.await.unwrap();
        match r.unwrap() {
            Ok(r) if !r.replayed => {
                created_count += 1;
                created.insert(n);
            }
            Ok(_) => {}
            Err(LedgerError::ExceedsLimit { account }) => assert_eq!(account, acc("card")),
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(created_count, created.len(), "an id was created twice");
    assert_eq!(created.len(), 10);
    let card = bal(&l, "card").await;
    assert_eq!(card.debits_posted, 1000);
    assert_eq!(l.all_transfers().await.unwrap().len(), 10);
    // Every created id answers as a replay afterwards, from either handle.
    for n in &created {
        let r = handles[1]
            .submit(pay(*n, "card", "shop", 100), 99)
            .await
            .unwrap()
            .unwrap();
        assert!(r.replayed);
    }
    // The same with holds resolved concurrently: one resolution wins.
    let mut tasks = Vec::new();
    ok(&l, hold(1000, "clearing", "prepaid", 10, 10_000), 100).await;
    for i in 0..20u64 {
        let h = handles[(i % 2) as usize].clone();
        let kind = if i % 3 == 0 {
            TransferKind::VoidPending {
                pending_id: tid(1000),
            }
        } else {
            TransferKind::PostPending {
                pending_id: tid(1000),
            }
        };
        tasks.push(tokio::spawn(async move {
            h.submit(resolve(2000 + i, kind), 200).await
        }));
    }
    let mut winners = 0;
    for task in tasks {
        match task.await.unwrap().unwrap() {
            Ok(_) => winners += 1,
            Err(LedgerError::PendingAlreadyPosted | LedgerError::PendingAlreadyVoided) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(winners, 1);
    other.close().await;
    assert_clean(&t.db).await;
}

async fn durability_after_reopen(t: &TestDb) {
    let l = t.ledger();
    setup(&l).await;
    let mut records = Vec::new();
    for n in 0..20u64 {
        records.push(
            ok(&l, pay(n, "clearing", "prepaid", 10 + n as i64), 10)
                .await
                .record,
        );
    }
    ok(&l, hold(100, "prepaid", "shop", 5, 1000), 20).await;
    t.db.close().await;
    let db = t.reopen().await;
    let l2 = db.ledger();
    for r in &records {
        assert_eq!(&l2.transfer(&r.id).await.unwrap().unwrap().1, r);
    }
    assert!(
        l2.submit(pay(3, "clearing", "prepaid", 13), 30)
            .await
            .unwrap()
            .unwrap()
            .replayed
    );
    let b = l2.account(&acc("prepaid")).await.unwrap().unwrap().balances;
    assert_eq!(b.credits_posted, (10..30).sum::<i64>());
    assert_eq!(b.debits_pending, 5);
    assert_clean(&db).await;
    db.close().await;
}

async fn listing(t: &TestDb) {
    let l = t.ledger();
    setup(&l).await;
    ok(&l, pay(1, "clearing", "prepaid", 10), 10).await;
    ok(&l, pay(2, "clearing", "shop", 10), 11).await;
    ok(&l, pay(3, "prepaid", "shop", 5), 12).await;
    let p = l
        .transfers_for_account(&acc("prepaid"), 0, 100)
        .await
        .unwrap();
    assert_eq!(
        p.iter().map(|(_, t)| t.id).collect::<Vec<_>>(),
        vec![tid(1), tid(3)]
    );
    let after_first = l
        .transfers_for_account(&acc("prepaid"), p[0].0, 100)
        .await
        .unwrap();
    assert_eq!(after_first.len(), 1);
    assert_eq!(
        l.transfers_for_account(&acc("shop"), 0, 1)
            .await
            .unwrap()
            .len(),
        1
    );
    let all = l.all_transfers().await.unwrap();
    assert_eq!(all.len(), 3);
    assert!(all.windows(2).all(|w| w[0].0 < w[1].0));
    assert_eq!(l.accounts().await.unwrap().len(), 5);
}

/// A small but varied ledger for the audit tests.
async fn audit_fixture(t: &TestDb) {
    let l = t.ledger();
    setup(&l).await;
    ok(&l, pay(1, "clearing", "prepaid", 500), 10).await;
    ok(&l, pay(2, "prepaid", "shop", 200), 11).await;
    ok(&l, hold(3, "card", "shop", 300, 1000), 12).await;
    ok(
        &l,
        resolve(4, TransferKind::PostPending { pending_id: tid(3) }),
        13,
    )
    .await;
    ok(&l, hold(5, "card", "shop", 50, 100), 14).await;
    l.expire_due(100, 10).await.unwrap();
    assert_clean(&t.db).await;
}

async fn audit_clean_ledger(t: &TestDb) {
    audit_fixture(t).await;
    let r = audit(&t.db).await.unwrap();
    assert_eq!(r.accounts, 5);
    assert_eq!(r.transfers, 6);
    assert!(r.is_clean());
}

/// Raw SQL to lift the append-only triggers (an attacker with database
/// access could do the same); the auditor must still see the edit.
const DROP_GUARDS_SQLITE: &str = "DROP TRIGGER ledger_legs_no_update; \
    DROP TRIGGER ledger_legs_no_delete; DROP TRIGGER ledger_transfers_no_delete; \
    DROP TRIGGER ledger_evidence_no_delete;";
const DROP_GUARDS_PG: &str = "DROP TRIGGER ledger_legs_append_only ON ledger_legs; \
    DROP TRIGGER ledger_transfers_append_only ON ledger_transfers; \
    DROP TRIGGER ledger_evidence_append_only ON ledger_evidence;";

async fn drop_guards(t: &TestDb) {
    match t.db.backend() {
        Backend::Sqlite => t.raw(DROP_GUARDS_SQLITE).await,
        Backend::Postgres => t.raw(DROP_GUARDS_PG).await,
    }
}

async fn audit_edited_leg_amount(t: &TestDb) {
    audit_fixture(t).await;
    // The guards hold without being lifted.
    let refused = match t.db.pool() {
        DbPool::Sqlite(p) => sqlx::query("UPDATE ledger_legs SET amount_minor = 1")
            .execute(p)
            .await
            .is_err(),
        DbPool::Postgres(p) => sqlx::query("UPDATE ledger_legs SET amount_minor = 1")
            .execute(p)
            .await
            .is_err(),
    };
    assert!(refused, "append-only trigger did not fire");
    drop_guards(t).await;
    // Transfer 2 (prepaid → shop 200): both legs become 150.
    let id = tid(2);
    match t.db.pool() {
        DbPool::Sqlite(p) => {
            sqlx::query(
                "UPDATE ledger_legs SET amount_minor = 150 \
                 WHERE transfer_seq = (SELECT seq FROM ledger_transfers WHERE id = $1)",
            )
            .bind(id.as_bytes().as_slice())
            .execute(p)
            .await
            .unwrap();
        }
        DbPool::Postgres(p) => {
            sqlx::query(
                "UPDATE ledger_legs SET amount_minor = 150 \
                 WHERE transfer_seq = (SELECT seq FROM ledger_transfers WHERE id = $1)",
            )
            .bind(id.as_bytes().as_slice())
            .execute(p)
            .await
            .unwrap();
        }
    }
    let f = audit(&t.db).await.unwrap().findings;
    assert!(
        f.contains(&Finding::DigestMismatch { transfer: id }),
        "{f:#?}"
    );
    assert!(
        f.iter().any(
            |x| matches!(x, Finding::BalanceMismatch { account, .. } if *account == acc("prepaid"))
        ),
        "{f:#?}"
    );
    assert!(
        f.iter().any(
            |x| matches!(x, Finding::BalanceMismatch { account, .. } if *account == acc("shop"))
        ),
        "{f:#?}"
    );
}

async fn audit_deleted_transfer(t: &TestDb) {
    audit_fixture(t).await;
    drop_guards(t).await;
    let id = tid(1);
    macro_rules! del {
        ($p:expr) => {
            for sql in [
                "DELETE FROM ledger_evidence \
                 WHERE transfer_seq = (SELECT seq FROM ledger_transfers WHERE id = $1)",
                "DELETE FROM ledger_legs \
                 WHERE transfer_seq = (SELECT seq FROM ledger_transfers WHERE id = $1)",
                "DELETE FROM ledger_transfers WHERE id = $1",
            ] {
                sqlx::query(sql)
                    .bind(id.as_bytes().as_slice())
                    .execute($p)
                    .await
                    .unwrap();
            }
        };
    }
    match t.db.pool() {
        DbPool::Sqlite(p) => del!(p),
        DbPool::Postgres(p) => del!(p),
    }
    let f = audit(&t.db).await.unwrap().findings;
    assert!(
        f.iter().any(
            |x| matches!(x, Finding::BalanceMismatch { account, .. } if *account == acc("prepaid"))
        ),
        "{f:#?}"
    );
    assert!(
        f.iter().any(
            |x| matches!(x, Finding::BalanceMismatch { account, .. } if *account == acc("clearing"))
        ),
        "{f:#?}"
    );
    // Replayed without its funding, the prepaid payment is over the limit.
    assert!(
        f.contains(&Finding::TransferRefused {
            transfer: tid(2),
            code: "exceeds_limit"
        }),
        "{f:#?}"
    );
}

async fn audit_duplicated_transfer(t: &TestDb) {
    audit_fixture(t).await;
    let copy = tid(77);
    macro_rules! dup {
        ($p:expr) => {{
            sqlx::query(
                "INSERT INTO ledger_transfers (id, kind, currency, code, expires_at_ms, \
                 pending_id, reference, digest, created_at_ms) \
                 SELECT $2, kind, currency, code, expires_at_ms, pending_id, reference, digest, \
                 created_at_ms FROM ledger_transfers WHERE id = $1",
            )
            .bind(tid(2).as_bytes().as_slice())
            .bind(copy.as_bytes().as_slice())
            .execute($p)
            .await
            .unwrap();
            sqlx::query(
                "INSERT INTO ledger_legs (transfer_seq, leg_index, account_id, side, amount_minor) \
                 SELECT (SELECT seq FROM ledger_transfers WHERE id = $2), leg_index, account_id, \
                 side, amount_minor FROM ledger_legs \
                 WHERE transfer_seq = (SELECT seq FROM ledger_transfers WHERE id = $1)",
            )
            .bind(tid(2).as_bytes().as_slice())
            .bind(copy.as_bytes().as_slice())
            .execute($p)
            .await
            .unwrap();
        }};
    }
    match t.db.pool() {
        DbPool::Sqlite(p) => dup!(p),
        DbPool::Postgres(p) => dup!(p),
    }
    let f = audit(&t.db).await.unwrap().findings;
    assert!(
        f.contains(&Finding::DigestMismatch { transfer: copy }),
        "{f:#?}"
    );
    assert!(
        f.iter().any(
            |x| matches!(x, Finding::BalanceMismatch { account, .. } if *account == acc("shop"))
        ),
        "{f:#?}"
    );
}

async fn audit_edited_balance(t: &TestDb) {
    audit_fixture(t).await;
    t.raw("UPDATE ledger_accounts SET credits_posted = credits_posted + 1000 WHERE id = 'prepaid'")
        .await;
    let f = audit(&t.db).await.unwrap().findings;
    assert_eq!(f.len(), 1, "{f:#?}");
    match &f[0] {
        Finding::BalanceMismatch {
            account,
            stored,
            recomputed,
        } => {
            assert_eq!(*account, acc("prepaid"));
            assert_eq!(stored.credits_posted, recomputed.credits_posted + 1000);
        }
        other => panic!("{other:?}"),
    }
    // Overdrawing the balance directly also breaks the limit.
    t.raw("UPDATE ledger_accounts SET debits_posted = 1000000 WHERE id = 'shop'")
        .await;
    let f = audit(&t.db).await.unwrap().findings;
    assert!(
        f.contains(&Finding::LimitViolated {
            account: acc("shop")
        }),
        "{f:#?}"
    );
}

/// Account history stays exact while the SQLite writer merges legs into it
/// in chunks (here every 3 transfers): entries before the mark come from
/// the history, later ones from the legs, and a cursor between them works.
async fn history_across_merges(t: &TestDb) {
    let mut config = t.config.clone();
    config.ledger_history_chunk = 3;
    let db = Db::open_with(config).await.unwrap();
    let l = db.ledger();
    setup(&l).await;
    let mut prepaid = Vec::new();
    for n in 1..=11u64 {
        let r = if n % 3 == 0 {
            ok(&l, pay(n, "clearing", "shop", 7), 10 + n).await
        } else {
            ok(&l, pay(n, "clearing", "prepaid", 10), 10 + n).await
        };
        if n % 3 != 0 {
            prepaid.push((r.seq, tid(n)));
        }
        // Every prefix of every page is right, whatever the mark is now.
        let all = l
            .transfers_for_account(&acc("prepaid"), 0, 100)
            .await
            .unwrap();
        let got: Vec<(i64, TransferId)> = all.iter().map(|(s, t)| (*s, t.id)).collect();
        assert_eq!(got, prepaid, "after transfer {n}");
        for (i, (seq, _)) in prepaid.iter().enumerate() {
            let rest = l
                .transfers_for_account(&acc("prepaid"), *seq, 2)
                .await
                .unwrap();
            let want: Vec<TransferId> = prepaid[i + 1..].iter().take(2).map(|p| p.1).collect();
            assert_eq!(rest.iter().map(|(_, t)| t.id).collect::<Vec<_>>(), want);
        }
    }
    let clearing = l
        .transfers_for_account(&acc("clearing"), 0, 100)
        .await
        .unwrap();
    assert_eq!(clearing.len(), 11);
    assert_clean(&db).await;
    if let DbPool::Sqlite(p) = db.pool() {
        // The merges ran: the history holds what the mark says.
        let (upto, entries): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT upto FROM ledger_history_mark), \
             (SELECT count(*) FROM ledger_account_history)",
        )
        .fetch_one(p)
        .await
        .unwrap();
        assert!(upto >= 9, "mark {upto}");
        let legs_upto: i64 =
            sqlx::query_scalar("SELECT count(*) FROM ledger_legs WHERE transfer_seq <= $1")
                .bind(upto)
                .fetch_one(p)
                .await
                .unwrap();
        assert_eq!(entries, legs_upto);
        // A lost history entry is reported by the auditor.
        let (account, seq): (String, i64) = sqlx::query_as(
            "SELECT account_id, transfer_seq FROM ledger_account_history \
             ORDER BY transfer_seq LIMIT 1",
        )
        .fetch_one(p)
        .await
        .unwrap();
        sqlx::query(
            "DELETE FROM ledger_account_history WHERE account_id = $1 AND transfer_seq = $2",
        )
        .bind(&account)
        .bind(seq)
        .execute(p)
        .await
        .unwrap();
        let f = audit(&db).await.unwrap().findings;
        assert_eq!(
            f,
            vec![Finding::AccountHistoryMismatch {
                account,
                transfer_seq: seq,
                missing: true
            }]
        );
    }
    db.close().await;
}

/// A writer that has posted to an account must not trust what it
/// remembers once another handle (another process, on PostgreSQL or
/// SQLite) has posted to it: the limit counts both.
async fn writer_sees_other_handles_postings(t: &TestDb) {
    let a = t.ledger();
    setup(&a).await;
    ok(&a, pay(1, "card", "shop", 600), 10).await;
    let other = t.reopen().await;
    ok(&other.ledger(), pay(2, "card", "shop", 300), 11).await;
    // 600 + 300 + 200 is over the card's 1000 line.
    assert_eq!(
        refused(&a, pay(3, "card", "shop", 200), 12).await,
        LedgerError::ExceedsLimit {
            account: acc("card")
        }
    );
    ok(&a, pay(4, "card", "shop", 100), 13).await;
    assert_eq!(bal(&a, "card").await.debits_posted, 1000);
    // And the other way round.
    assert_eq!(
        refused(&other.ledger(), pay(5, "card", "shop", 1), 14).await,
        LedgerError::ExceedsLimit {
            account: acc("card")
        }
    );
    other.close().await;
    assert_clean(&t.db).await;
}

/// `Db::close` stops the SQLite writer thread and closes its connection: a
/// later submission is refused with `WriterStopped` and writes nothing,
/// and the database reopens with exactly what was committed before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_close_stops_the_writer() {
    let t = TestDb::sqlite().await;
    let l = t.ledger();
    setup(&l).await;
    ok(&l, pay(1, "card", "shop", 100), 10).await;
    t.db.close().await;
    let after = l.submit(pay(2, "card", "shop", 100), 11).await;
    assert!(
        matches!(after, Err(kessai_store::StoreError::WriterStopped)),
        "{after:?}"
    );
    let again = t.reopen().await;
    let l2 = again.ledger();
    assert!(l2.transfer(&tid(1)).await.unwrap().is_some());
    assert!(l2.transfer(&tid(2)).await.unwrap().is_none());
    assert_eq!(bal(&l2, "card").await.debits_posted, 100);
    assert_clean(&again).await;
    again.close().await;
    t.finish().await;
}
