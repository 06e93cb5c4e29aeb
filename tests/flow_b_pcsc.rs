//! Flow B over the real PC/SC path, every party its own process as a user
//! runs them: `kessai serve` (the issuer host), `kessai card personalize`
//! (a host-issued card), `kessai card emulate` (the card in pcsc-lite's
//! vsmartcard vpcd reader), `kessai shop keygen` / `kessai shop bill` (the
//! store), and `kessai wallet topup` / `kessai wallet pay --card pcsc`
//! (the wallet reaching the card through PC/SC). Then the card's state
//! file, the host's bill status and `kessai audit` must agree.
//!
//! Needs pcscd with vpcd on 127.0.0.1:35963, or where `KESSAI_VPCD_ADDR`
//! says (`.ci/pcsc.sh` sets it up and
//! runs this with `--features pcsc -- --ignored`).
#![cfg(feature = "pcsc")]

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kessai_card_io::pcsc::{ReaderSelector, wait_for_card};
use serde_json::{Value, json};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn kessai(args: &[&str], envs: &[(&str, &str)]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_kessai"))
        .args(args)
        .envs(envs.iter().copied())
        .env("KESSAI_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kessai {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Starts `kessai serve` on a free port; returns it and its URL (read from
/// its start-up line, no polling).
fn serve(data: &Path) -> (Killed, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kessai"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .env("KESSAI_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let url = loop {
        let line = lines
            .next()
            .expect("kessai serve exited before listening")
            .unwrap();
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    // Keep draining its stderr so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (Killed(child), url)
}

async fn admin(http: &reqwest::Client, url: &str, token: &str, path: &str, body: Value) {
    let mut key = [0u8; 16];
    rand::fill(&mut key);
    let r = http
        .post(format!("{url}{path}"))
        .bearer_auth(token)
        .header("idempotency-key", hex::encode(key))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    assert!(
        status.is_success(),
        "{path}: {status} {}",
        r.text().await.unwrap()
    );
}

#[test]
#[ignore = "needs pcscd + vsmartcard vpcd: run by .ci/pcsc.sh"]
fn purchase_through_pcsc_lite_with_every_party_a_process() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("host");
    let data_s = data.to_str().unwrap();
    let state = dir.path().join("card.state");
    let state_s = state.to_str().unwrap();
    let key = dir.path().join("store.key");
    let key_s = key.to_str().unwrap();

    // The issuer issues the card (the host database is created here).
    kessai(
        &[
            "card",
            "personalize",
            "--state",
            state_s,
            "--card-id",
            "card-pcsc-b",
            "--data-dir",
            data_s,
        ],
        &[],
    );
    let (_host, url) = serve(&data);
    let token = std::fs::read_to_string(data.join("admin.token"))
        .unwrap()
        .trim()
        .to_string();
    let out = kessai(
        &["shop", "keygen", "--id", "store-pcsc", "--out", key_s],
        &[],
    );
    let public_key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let http = reqwest::Client::new();
        admin(
            &http,
            &url,
            &token,
            "/v1/admin/merchants",
            json!({"id": "store-pcsc", "kind": "store",
            "name": "PC/SC store", "currency": "JPY", "public_key": public_key}),
        )
        .await;
        admin(
            &http,
            &url,
            &token,
            "/v1/admin/cardholders",
            json!({"id": "bob", "name": "Bob",
            "currency": "JPY", "credit_limit_minor": 50000}),
        )
        .await;
        admin(
            &http,
            &url,
            &token,
            "/v1/flow-b/admin/funding-cards",
            json!({"cardholder_id": "bob",
            "pan": "5555555555554444", "expiry_yymm": "3012", "pin": "2468"}),
        )
        .await;
    });

    // The card goes into the vpcd reader.
    let _emulator = Killed(
        Command::new(env!("CARGO_BIN_EXE_kessai"))
            .args(["card", "emulate", "--state", state_s])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let reader = wait_for_card(
        &ReaderSelector::NameContains("Virtual PCD".into()),
        Duration::from_secs(30),
    )
    .expect("the emulated card never appeared in the Virtual PCD reader");
    let card = format!("pcsc:{reader}");

    // Top-up through PC/SC (PIN from the environment).
    let out = kessai(
        &[
            "wallet",
            "topup",
            "--host",
            &url,
            "--amount",
            "5000 JPY",
            "--funding-card",
            "5555555555554444",
            "--funding-expiry",
            "3012",
            "--card",
            &card,
            "--card-id",
            "card-pcsc-b",
        ],
        &[("KESSAI_FUNDING_PIN", "2468")],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("card balance 5000"), "{text}");
    assert!(
        !text.contains("5555555555554444"),
        "clear card number in {text}"
    );

    // The store bills; the wallet pays through PC/SC.
    let bill = dir.path().join("bill.cose");
    kessai(
        &[
            "shop",
            "bill",
            "--key",
            key_s,
            "--store",
            "store-pcsc",
            "--order",
            "pcsc-1",
            "--amount",
            "1200 JPY",
            "--out",
            bill.to_str().unwrap(),
        ],
        &[],
    );
    let receipts = dir.path().join("wallet");
    let out = kessai(
        &[
            "wallet",
            "pay",
            "--host",
            &url,
            "--bill",
            bill.to_str().unwrap(),
            "--card",
            &card,
            "--card-id",
            "card-pcsc-b",
            "--yes",
            "--receipts",
            receipts.to_str().unwrap(),
        ],
        &[],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("paid 1200 JPY for order pcsc-1"), "{text}");
    assert!(receipts.join("store-pcsc-pcsc-1.completion.cose").exists());
    // The same bill again is refused by the host.
    let again = Command::new(env!("CARGO_BIN_EXE_kessai"))
        .args([
            "wallet",
            "pay",
            "--host",
            &url,
            "--bill",
            bill.to_str().unwrap(),
            "--card",
            &card,
            "--card-id",
            "card-pcsc-b",
            "--yes",
            "--receipts",
            receipts.to_str().unwrap(),
        ])
        .env("KESSAI_LOG", "warn")
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("bill-already-settled"));

    let status: Value = rt.block_on(async {
        reqwest::get(format!("{url}/v1/flow-b/bills/store-pcsc/pcsc-1"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    assert_eq!(status["status"], "settled");

    // The card state (durable in its file) and the auditor agree.
    drop(_emulator);
    let out = kessai(&["card", "show", "--state", state_s, "--json"], &[]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["balance_minor"], 3_800);
    assert_eq!(v["counter"], 2);
    kessai(&["audit", "--data-dir", data_s], &[]);
}
