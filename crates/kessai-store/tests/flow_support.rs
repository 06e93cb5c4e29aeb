//! Flow persistence on SQLite and (with `--ignored` and
//! KESSAI_TEST_POSTGRES_URL) PostgreSQL, with two independent `Db` handles
//! (as two host processes would have) racing each primitive.

use kessai_store::flow_support as fs;
use kessai_store::{Db, DbConfig};

async fn two_handles(postgres: bool, dir: &std::path::Path) -> (Db, Db) {
    if postgres {
        let url = std::env::var("KESSAI_TEST_POSTGRES_URL")
            .expect("KESSAI_TEST_POSTGRES_URL must be set to run the PostgreSQL suite");
        let mut r = [0u8; 6];
        rand::fill(&mut r);
        let schema = format!("flows_{}", hex::encode(r));
        let mut a = DbConfig::new(url.clone());
        a.postgres_schema = Some(schema.clone());
        let mut b = DbConfig::new(url);
        b.postgres_schema = Some(schema);
        let a = Db::open_with(a).await.unwrap();
        (a, Db::open_with(b).await.unwrap())
    } else {
        let a = Db::open(dir.to_str().unwrap()).await.unwrap();
        (a, Db::open(dir.to_str().unwrap()).await.unwrap())
    }
}

async fn primitives_hold_across_handles(postgres: bool) {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_handles(postgres, dir.path()).await;

    // Once markers: 2 handles × 16 tasks race one marker; exactly one wins.
    let mut tasks = Vec::new();
    for i in 0..32 {
        let db = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            fs::use_once(&db, "pw", b"123456", 1).await.unwrap()
        }));
    }
    let mut wins = 0;
    for t in tasks {
        wins += usize::from(t.await.unwrap());
    }
    assert_eq!(wins, 1);
    assert!(fs::was_used(&b, "pw", b"123456").await.unwrap());
    assert!(!fs::was_used(&b, "pw", b"654321").await.unwrap());

    // Monotonic counters: only increases succeed.
    assert!(fs::advance_counter(&a, "dev-1", 5, 1).await.unwrap());
    assert!(!fs::advance_counter(&b, "dev-1", 5, 2).await.unwrap());
    assert!(!fs::advance_counter(&b, "dev-1", 4, 2).await.unwrap());
    assert!(fs::advance_counter(&b, "dev-1", 6, 3).await.unwrap());
    assert_eq!(fs::counter(&a, "dev-1").await.unwrap(), Some(6));
    let mut tasks = Vec::new();
    for i in 0..20 {
        let db = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            fs::advance_counter(&db, "dev-1", 7, 4).await.unwrap()
        }));
    }
    let mut wins = 0;
    for t in tasks {
        wins += usize::from(t.await.unwrap());
    }
    assert_eq!(wins, 1, "one replay of counter 7 wins");

    // Attempt counters: failures from both handles add up; lock at 3.
    let s1 = fs::record_failure(&a, "pin:card-1", 3, 1).await.unwrap();
    assert_eq!((s1.failures, s1.locked), (1, false));
    assert!(fs::record_success(&b, "pin:card-1").await.unwrap());
    assert_eq!(fs::attempts(&a, "pin:card-1").await.unwrap().failures, 0);
    let mut tasks = Vec::new();
    for i in 0..6 {
        let db = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            fs::record_failure(&db, "pin:card-1", 3, 2).await.unwrap()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let st = fs::attempts(&b, "pin:card-1").await.unwrap();
    assert_eq!((st.failures, st.locked), (6, true));
    assert!(
        !fs::record_success(&a, "pin:card-1").await.unwrap(),
        "locked: success not honoured"
    );
    fs::reset_attempts(&a, "pin:card-1").await.unwrap();
    assert!(!fs::attempts(&b, "pin:card-1").await.unwrap().locked);

    // Sessions: optimistic concurrency, one writer per version.
    assert!(
        fs::create_session(&a, "s1", "b", "{\"step\":1}", 1, 100)
            .await
            .unwrap()
    );
    assert!(
        !fs::create_session(&b, "s1", "b", "{}", 1, 100)
            .await
            .unwrap()
    );
    let s = fs::load_session(&b, "s1").await.unwrap().unwrap();
    let mut tasks = Vec::new();
    for i in 0..10 {
        let db = if i % 2 == 0 { a.clone() } else { b.clone() };
        let v = s.version;
        tasks.push(tokio::spawn(async move {
            fs::save_session(&db, "s1", v, &format!("{{\"step\":{}}}", i + 2), 2, 100)
                .await
                .unwrap()
        }));
    }
    let mut wins = 0;
    for t in tasks {
        wins += usize::from(t.await.unwrap());
    }
    assert_eq!(wins, 1);
    let s2 = fs::load_session(&a, "s1").await.unwrap().unwrap();
    assert_eq!(s2.version, s.version + 1);
    assert_eq!(
        fs::expired_sessions(&a, "b", 99, 10).await.unwrap().len(),
        0
    );
    assert_eq!(
        fs::expired_sessions(&a, "b", 100, 10).await.unwrap().len(),
        1
    );
    fs::delete_session(&b, "s1").await.unwrap();
    assert!(fs::load_session(&a, "s1").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_primitives_hold_across_handles() {
    primitives_hold_across_handles(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set KESSAI_TEST_POSTGRES_URL and run with --ignored"]
async fn postgres_primitives_hold_across_handles() {
    primitives_hold_across_handles(true).await;
}
