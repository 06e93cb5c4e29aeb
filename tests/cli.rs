//! The `kessai` binary end to end: `serve` answers /health and
//! /openapi.json with no setup; `admin` and `audit` work on a data
//! directory; `audit` reports planted corruptions and exits non-zero.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};

fn kessai() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kessai"));
    c.env_remove("KESSAI_MASTER_KEY")
        .env_remove("KESSAI_ADMIN_TOKEN")
        .env_remove("KESSAI_DATABASE_URL")
        .env_remove("KESSAI_DATA_DIR")
        .env("KESSAI_LOG", "warn");
    c
}

fn run_ok(args: &[&str], data: &Path) -> String {
    let out = kessai()
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kessai {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status: u16 = resp[9..12].parse().unwrap();
    let body = resp
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_string();
    (status, body)
}

#[test]
fn serve_answers_health_and_openapi_with_no_setup() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("fresh-data-dir");
    let mut child = kessai()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let mut addr = None;
    let mut seen = Vec::new();
    // The host prints its address once it is listening (this read blocks
    // until then: no sleep involved).
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("kessai host listening on http://") {
            addr = Some(rest.split_whitespace().next().unwrap().to_string());
            break;
        }
        seen.push(line);
    }
    let addr = addr.unwrap_or_else(|| panic!("host did not start: {seen:?}"));
    let notice = seen.join("\n");
    assert!(notice.contains("generated a new master key"), "{notice}");
    let (status, body) = http_get(&addr, "/health");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"status\":\"ok\""), "{body}");
    let (status, body) = http_get(&addr, "/openapi.json");
    assert_eq!(status, 200);
    assert!(
        body.contains("\"openapi\": \"3.1"),
        "{}",
        &body[..body.len().min(200)]
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(data.join("kessai.db").exists());
    assert!(data.join("master.key").exists());
    assert!(data.join("admin.token").exists());
}

#[test]
fn admin_audit_and_key_export_on_a_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    // A store key as PEM, as a merchant would hand it over.
    let sk = kessai_crypto::sign::SigningKey::from_seed(&[3u8; 32]);
    let pem_path = dir.path().join("store.pem");
    std::fs::write(&pem_path, sk.verifying_key().to_public_pem()).unwrap();
    let out = run_ok(
        &[
            "admin",
            "merchants",
            "add",
            "--id",
            "store-1",
            "--name",
            "Store One",
            "--currency",
            "JPY",
            "--public-key-pem",
            pem_path.to_str().unwrap(),
        ],
        &data,
    );
    assert!(
        out.contains("\"payable_account\": \"payable.store-1\""),
        "{out}"
    );
    let out = run_ok(
        &[
            "admin",
            "cardholders",
            "add",
            "--id",
            "alice",
            "--name",
            "Alice",
            "--currency",
            "JPY",
            "--credit-limit-minor",
            "5000",
        ],
        &data,
    );
    assert!(out.contains("\"limit_minor\": 5000"), "{out}");
    let out = run_ok(
        &["admin", "keys", "rotate", "--purpose", "host_sign"],
        &data,
    );
    assert!(out.contains("host-sign#2"), "{out}");
    let keys = dir.path().join("keys");
    run_ok(
        &["admin", "keys", "export", "--out", keys.to_str().unwrap()],
        &data,
    );
    for name in [
        "host-sign#1.pem",
        "host-sign#2.pem",
        "transmission#1.pem",
        "storage#1.pem",
    ] {
        let pem = std::fs::read_to_string(keys.join(name)).unwrap();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"), "{name}");
    }
    // Refused admin input: non-zero exit, problem on stderr, nothing changed.
    let out = kessai()
        .args([
            "admin",
            "merchants",
            "add",
            "--id",
            "store-1",
            "--name",
            "Dup",
            "--currency",
            "JPY",
            "--public-key-pem",
            pem_path.to_str().unwrap(),
            "--data-dir",
        ])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already-registered"));

    let out = run_ok(&["audit"], &data);
    assert!(out.contains("ledger consistent"), "{out}");

    // Plant a corruption directly in the database: the auditor must see it.
    let db = data.join("kessai.db");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use sqlx::Connection;
        let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
            .await
            .unwrap();
        let n = sqlx::query("UPDATE ledger_accounts SET credits_posted = credits_posted + 7 WHERE id = 'payable.store-1'")
            .execute(&mut c)
            .await
            .unwrap()
            .rows_affected();
        assert_eq!(n, 1);
    });
    let out = kessai()
        .args(["audit", "--json", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["findings"][0]["finding"], "balance_mismatch",
        "{report}"
    );
}
