//! Flow B on two `kessai serve` processes sharing one PostgreSQL: two
//! wallets (`kessai wallet pay`, two cards) race each bill, one through
//! each host process. Every bill settles exactly once, exactly one card is
//! debited for it, and card balances, the ledger and `kessai audit` agree —
//! because the database, not process memory, decides.
//! Run with `--ignored` and KESSAI_TEST_POSTGRES_URL (CI does).

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

const TOKEN: &str = "kst_flow_b_multiprocess_token_0123456789ab";

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn kessai(url: &str, schema: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kessai"));
    c.env("KESSAI_MASTER_KEY", "22".repeat(32))
        .env("KESSAI_ADMIN_TOKEN", TOKEN)
        .env("KESSAI_DATABASE_URL", url)
        .env("KESSAI_DATABASE_SCHEMA", schema)
        .env("KESSAI_LOG", "warn");
    c
}

fn ok(mut c: Command) -> String {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{:?} failed:\n{}\n{}",
        c,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn start(url: &str, schema: &str, dir: &std::path::Path) -> (Killed, String) {
    let mut child = kessai(url, schema)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("host exited before listening").unwrap();
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (Killed(child), addr)
}

async fn admin(url: &str, path: &str, body: Value) {
    let mut key = [0u8; 16];
    rand::fill(&mut key);
    let r = reqwest::Client::new()
        .post(format!("{url}{path}"))
        .bearer_auth(TOKEN)
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

fn balance(state: &std::path::Path) -> i64 {
    let out = Command::new(env!("CARGO_BIN_EXE_kessai"))
        .args(["card", "show", "--json", "--state"])
        .arg(state)
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["balance_minor"].as_i64().unwrap()
}

#[test]
#[ignore = "needs PostgreSQL: set KESSAI_TEST_POSTGRES_URL and run with --ignored"]
fn two_wallets_race_each_bill_on_two_host_processes() {
    let url = std::env::var("KESSAI_TEST_POSTGRES_URL").expect("KESSAI_TEST_POSTGRES_URL");
    let mut r = [0u8; 6];
    rand::fill(&mut r);
    let schema = format!("flowb_mp_{}", hex::encode(r));
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("host");
    let cards: Vec<std::path::PathBuf> = (1..=2)
        .map(|i| dir.path().join(format!("card-{i}.state")))
        .collect();
    for (i, state) in cards.iter().enumerate() {
        let mut c = kessai(&url, &schema);
        c.args([
            "card",
            "personalize",
            "--card-id",
            &format!("mp-card-{}", i + 1),
            "--state",
        ])
        .arg(state)
        .arg("--data-dir")
        .arg(&data);
        ok(c);
    }
    let (_a, url_a) = start(&url, &schema, &data);
    let (_b, url_b) = start(&url, &schema, &data);
    let (host_a, host_b) = (url_a, url_b);
    let key = dir.path().join("store.key");
    let mut c = kessai(&url, &schema);
    c.args(["shop", "keygen", "--id", "mp-store", "--out"])
        .arg(&key);
    let pk = ok(c).trim().to_string();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        admin(
            &host_a,
            "/v1/admin/merchants",
            json!({"id": "mp-store", "kind": "store",
            "name": "MP", "currency": "JPY", "public_key": pk}),
        )
        .await;
        admin(
            &host_b,
            "/v1/admin/cardholders",
            json!({"id": "carol", "name": "Carol",
            "currency": "JPY", "credit_limit_minor": 100000}),
        )
        .await;
        admin(
            &host_a,
            "/v1/flow-b/admin/funding-cards",
            json!({"cardholder_id": "carol",
            "pan": "4000056655665556", "expiry_yymm": "3012", "pin": "1357"}),
        )
        .await;
    });
    // Load both cards, one through each host.
    for (state, host) in cards.iter().zip([&host_a, &host_b]) {
        let mut c = kessai(&url, &schema);
        c.env("KESSAI_FUNDING_PIN", "1357")
            .args([
                "wallet",
                "topup",
                "--host",
                host,
                "--amount",
                "10000 JPY",
                "--funding-card",
                "4000056655665556",
                "--funding-expiry",
                "3012",
                "--card",
            ])
            .arg(format!("state:{}", state.display()));
        ok(c);
    }

    const ROUNDS: usize = 4;
    for round in 0..ROUNDS {
        let bill = dir.path().join(format!("bill-{round}.cose"));
        let mut c = kessai(&url, &schema);
        c.args(["shop", "bill", "--key"]).arg(&key).args([
            "--store",
            "mp-store",
            "--order",
            &format!("race-{round}"),
            "--amount",
            "700 JPY",
            "--out",
        ]);
        c.arg(&bill);
        ok(c);
        // Both wallets at once, each through its own host process.
        let racers: Vec<Child> = cards
            .iter()
            .zip([&host_a, &host_b])
            .map(|(state, host)| {
                kessai(&url, &schema)
                    .args(["wallet", "pay", "--yes", "--host", host, "--bill"])
                    .arg(&bill)
                    .arg("--card")
                    .arg(format!("state:{}", state.display()))
                    .arg("--receipts")
                    .arg(dir.path().join("receipts"))
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let outs: Vec<_> = racers
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect();
        let winners = outs.iter().filter(|o| o.status.success()).count();
        assert_eq!(
            winners,
            1,
            "round {round}: {:?}",
            outs.iter()
                .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
                .collect::<Vec<_>>()
        );
        let loser = outs.iter().find(|o| !o.status.success()).unwrap();
        let why = String::from_utf8_lossy(&loser.stderr);
        assert!(
            why.contains("bill-in-flight") || why.contains("bill-already-settled"),
            "round {round}: {why}"
        );
    }
    // Exactly ROUNDS debits of 700 across the two cards; the store got them.
    let total: i64 = cards.iter().map(|s| balance(s)).sum();
    assert_eq!(total, 20_000 - 700 * ROUNDS as i64);
    rt.block_on(async {
        for round in 0..ROUNDS {
            let v: Value = reqwest::get(format!("{host_b}/v1/flow-b/bills/mp-store/race-{round}"))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(v["status"], "settled");
        }
    });
    let mut c = kessai(&url, &schema);
    c.args(["audit", "--data-dir"]).arg(&data);
    ok(c);
}
