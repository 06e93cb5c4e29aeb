//! Two `kessai serve` processes on one PostgreSQL: exactly-once posting and
//! credit limits hold across them because the database enforces them.
//! Run with `--ignored` and KESSAI_TEST_POSTGRES_URL (CI does).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

const TOKEN: &str = "kst_multiprocess_test_token_0123456789abcdef";

struct Host {
    child: Child,
    addr: String,
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn env(c: &mut Command, url: &str, schema: &str) {
    c.env("KESSAI_MASTER_KEY", "11".repeat(32))
        .env("KESSAI_ADMIN_TOKEN", TOKEN)
        .env("KESSAI_DATABASE_URL", url)
        .env("KESSAI_DATABASE_SCHEMA", schema)
        .env("KESSAI_LOG", "warn");
}

fn start(url: &str, schema: &str, dir: &std::path::Path) -> Host {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kessai"));
    env(&mut c, url, schema);
    let mut child = c
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines.next().expect("host exited before listening").unwrap();
        if let Some(rest) = line.strip_prefix("kessai host listening on http://") {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    // Keep draining stderr so the host never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Host { child, addr }
}

fn post(addr: &str, path: &str, key: &str, body: &str) -> (u16, serde_json::Value) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer {TOKEN}\r\n\
         Idempotency-Key: {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status: u16 = resp[9..12].parse().unwrap();
    let body = resp.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    // Bodies are small: axum sends them with Content-Length, not chunked.
    (
        status,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

fn get(addr: &str, path: &str) -> serde_json::Value {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer {TOKEN}\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    serde_json::from_str(resp.split_once("\r\n\r\n").unwrap().1).unwrap()
}

fn payment(natural_key: &str, amount: i64) -> String {
    serde_json::json!({"natural_key": natural_key, "currency": "JPY", "code": 1,
        "legs": [{"account": "funding.alice", "side": "debit", "amount_minor": amount},
                 {"account": "payable.store-1", "side": "credit", "amount_minor": amount}]})
    .to_string()
}

#[test]
#[ignore = "needs PostgreSQL: set KESSAI_TEST_POSTGRES_URL and run with --ignored"]
fn two_hosts_on_one_postgres_post_exactly_once_and_respect_limits() {
    let url = std::env::var("KESSAI_TEST_POSTGRES_URL")
        .expect("KESSAI_TEST_POSTGRES_URL must be set to run the PostgreSQL suite");
    let mut r = [0u8; 6];
    rand::fill(&mut r);
    let schema = format!("mp_{}", hex::encode(r));
    let d1 = tempfile::tempdir().unwrap();
    let d2 = tempfile::tempdir().unwrap();
    let h1 = start(&url, &schema, d1.path());
    let h2 = start(&url, &schema, d2.path());
    let hosts = [h1.addr.clone(), h2.addr.clone()];

    let sk = kessai_crypto::sign::SigningKey::from_seed(&[8; 32]);
    use base64::Engine as _;
    let pk = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sk.verifying_key().to_bytes());
    let (st, b) = post(&hosts[0], "/v1/admin/merchants", "m1",
        &serde_json::json!({"id": "store-1", "kind": "store", "name": "S", "currency": "JPY", "public_key": pk}).to_string());
    assert_eq!(st, 201, "{b}");
    let (st, b) = post(&hosts[1], "/v1/admin/cardholders", "c1",
        &serde_json::json!({"id": "alice", "name": "Alice", "currency": "JPY", "credit_limit_minor": 10000}).to_string());
    assert_eq!(st, 201, "{b}");

    // The same payment submitted 16 times at once to both hosts, each with
    // its own idempotency key: one posting.
    let threads: Vec<_> = (0..16)
        .map(|i| {
            let addr = hosts[i % 2].clone();
            std::thread::spawn(move || {
                post(
                    &addr,
                    "/v1/admin/transfers",
                    &format!("same-{i}"),
                    &payment("order-1", 2500),
                )
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let created = results.iter().filter(|(s, _)| *s == 201).count();
    let existed = results.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!((created, existed), (1, 15), "{results:?}");
    let ids: std::collections::BTreeSet<_> =
        results.iter().map(|(_, b)| b["id"].to_string()).collect();
    assert_eq!(ids.len(), 1);

    // Eight different payments of 2500 race a limit with 7500 left: exactly
    // three fit, whichever host they hit.
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let addr = hosts[i % 2].clone();
            std::thread::spawn(move || {
                post(
                    &addr,
                    "/v1/admin/transfers",
                    &format!("diff-{i}"),
                    &payment(&format!("o-{i}"), 2500),
                )
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let created = results.iter().filter(|(s, _)| *s == 201).count();
    let refused: Vec<_> = results.iter().filter(|(s, _)| *s == 422).collect();
    assert_eq!(created, 3, "{results:?}");
    assert_eq!(refused.len(), 5);
    assert!(
        refused
            .iter()
            .all(|(_, b)| b["type"] == "urn:kessai:problem:exceeds_limit")
    );

    let acct = get(&hosts[1], "/v1/admin/accounts/funding.alice");
    assert_eq!(acct["debits_posted"], 10000, "{acct}");
    let payable = get(&hosts[0], "/v1/admin/accounts/payable.store-1");
    assert_eq!(payable["credits_posted"], 10000, "{payable}");

    // The auditor agrees.
    let mut c = Command::new(env!("CARGO_BIN_EXE_kessai"));
    env(&mut c, &url, &schema);
    let out = c
        .args(["audit", "--data-dir"])
        .arg(d1.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
