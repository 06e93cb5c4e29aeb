//! Flow D: one temporary password submitted at the same instant by many
//! POS terminals through TWO `kessai serve` processes on one PostgreSQL
//! settles exactly once (issue 7). The database decides: the password is
//! marked used by a conditional `UPDATE … WHERE used = 0` before the ledger
//! posting, whose transfer id is derived from the password.
//! Run with `--ignored` and KESSAI_TEST_POSTGRES_URL (CI does).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};

use base64::Engine as _;
use kessai_card::{Card, CardholderData, MemNvm, PersonalizationParams};
use kessai_crypto::hpke::HpkePublicKey;
use kessai_crypto::sign::VerifyingKey;
use kessai_flow_d::host::{HostChallenge, HostPublic};
use kessai_flow_d::phone::{CustomerVerification, build_authorization};
use kessai_host::routes::flow_d::AuthorizationBody;
use kessai_money::{Currency, Money};
use kessai_secrets::{CardNumber, Pin};
use serde_json::{Value, json};

const TOKEN: &str = "kst_flow_d_race_test_token_0123456789abcdef";
const MASTER: &str = "2222222222222222222222222222222222222222222222222222222222222222";
const PAN: &str = "4111111111111111";

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

fn start(url: &str, schema: &str, dir: &std::path::Path) -> Host {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kessai"))
        .env("KESSAI_MASTER_KEY", MASTER)
        .env("KESSAI_ADMIN_TOKEN", TOKEN)
        .env("KESSAI_DATABASE_URL", url)
        .env("KESSAI_DATABASE_SCHEMA", schema)
        .env("KESSAI_LOG", "warn")
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
    std::thread::spawn(move || for _ in lines {});
    Host { child, addr }
}

fn b64d(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .unwrap()
}

async fn post(c: &reqwest::Client, addr: &str, path: &str, key: &str, body: Value) -> (u16, Value) {
    let r = c
        .post(format!("http://{addr}{path}"))
        .bearer_auth(TOKEN)
        .header("idempotency-key", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

#[test]
#[ignore = "needs PostgreSQL: set KESSAI_TEST_POSTGRES_URL and run with --ignored"]
fn one_password_many_terminals_two_hosts_settles_once() {
    let url = std::env::var("KESSAI_TEST_POSTGRES_URL")
        .expect("KESSAI_TEST_POSTGRES_URL must be set to run the PostgreSQL suite");
    let mut r = [0u8; 6];
    rand::fill(&mut r);
    let schema = format!("fdrace_{}", hex::encode(r));
    let d1 = tempfile::tempdir().unwrap();
    let d2 = tempfile::tempdir().unwrap();
    let h1 = start(&url, &schema, d1.path());
    let h2 = start(&url, &schema, d2.path());
    let hosts = [h1.addr.clone(), h2.addr.clone()];
    let rt = tokio::runtime::Runtime::new().unwrap();
    let c = reqwest::Client::new();
    let jpy = Currency::from_code("JPY").unwrap();

    // Issue the customer card with the hosts' card master (an issuer-side
    // step: same database, same master key).
    let mut card: Card<MemNvm> = rt.block_on(async {
        let issuer_dir = tempfile::tempdir().unwrap();
        std::fs::write(issuer_dir.path().join("master.key"), MASTER).unwrap();
        std::fs::write(issuer_dir.path().join("admin.token"), TOKEN).unwrap();
        let mut cfg = kessai_store::DbConfig::new(url.clone());
        cfg.postgres_schema = Some(schema.clone());
        let db = kessai_store::Db::open_with(cfg).await.unwrap();
        let state = kessai_host::app::state_for_db(
            db,
            issuer_dir.path(),
            Arc::new(kessai_host::clock::SystemClock),
        )
        .await
        .unwrap();
        let (_, keys) = kessai_host::card_security::issue_card(
            &state,
            &kessai_host::card_security::IssueCard {
                card_id: "race-card".parse().unwrap(),
                currency: jpy,
                purse_max_minor: 1,
                cardholder_id: None,
            },
        )
        .await
        .unwrap();
        let mut p = PersonalizationParams::new("race-card".parse().unwrap(), keys, jpy, 1, [3; 32]);
        p.pin = Some(Pin::new("1234").unwrap());
        p.cardholder = Some(CardholderData {
            pan: CardNumber::new(PAN).unwrap(),
            expiry_yymm: "3012".into(),
            name: "RACE TEST".into(),
        });
        let mut card = Card::personalize(p, MemNvm::new()).unwrap();
        card.power_on();
        card
    });

    let public = rt.block_on(async {
        let sk = kessai_crypto::sign::SigningKey::from_seed(&[8; 32]);
        let pk = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(sk.verifying_key().to_bytes());
        let (s, b) = post(&c, &hosts[0], "/v1/admin/merchants", "m1",
            json!({"id": "shop-1", "kind": "store", "name": "Race shop", "currency": "JPY", "public_key": pk})).await;
        assert_eq!(s, 201, "{b}");
        let (s, b) = post(&c, &hosts[1], "/v1/admin/cardholders", "c1",
            json!({"id": "alice", "name": "Alice", "currency": "JPY", "credit_limit_minor": 100000})).await;
        assert_eq!(s, 201, "{b}");
        let funding = b["funding_account"]["id"].as_str().unwrap().to_owned();
        for t in 0..8 {
            let (s, b) = post(&c, &hosts[t % 2], "/v1/flow-d/admin/terminals", &format!("t{t}"),
                json!({"terminal_id": format!("pos-{t}"), "store_id": "shop-1"})).await;
            assert_eq!(s, 201, "{b}");
        }
        let (s, b) = post(&c, &hosts[0], "/v1/flow-d/admin/cards", "card",
            json!({"card_id": "race-card", "pan": PAN, "expiry_yymm": "3012",
                "funding_account": funding, "currency": "JPY", "pin": "1234"})).await;
        assert_eq!(s, 201, "{b}");
        let k: Value = c
            .get(format!("http://{}/v1/flow-d/keys", hosts[1]))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        HostPublic {
            cardholder_key: HpkePublicKey::from_bytes(
                &b64d(k["cardholder_key"].as_str().unwrap()).try_into().unwrap(),
            )
            .unwrap(),
            cardholder_key_ref: k["cardholder_key_ref"].as_str().unwrap().parse().unwrap(),
            receipt_key: VerifyingKey::from_bytes(
                &b64d(k["receipt_key"].as_str().unwrap()).try_into().unwrap(),
            )
            .unwrap(),
            receipt_key_ref: k["receipt_key_ref"].as_str().unwrap().parse().unwrap(),
        }
    });

    let mut total = 0;
    for round in 0..5 {
        // The phone authorizes on host 1 or 2.
        let digits = rt.block_on(async {
            let (s, ch) = post(
                &c,
                &hosts[round % 2],
                "/v1/flow-d/challenges",
                &format!("ch{round}"),
                json!({}),
            )
            .await;
            assert_eq!(s, 201, "{ch}");
            let challenge = HostChallenge {
                challenge: hex::decode(ch["challenge"].as_str().unwrap())
                    .unwrap()
                    .try_into()
                    .unwrap(),
                max_amount_minor: ch["max_amount_minor"].as_i64().unwrap(),
                expires_at_ms: ch["expires_at_ms"].as_u64().unwrap(),
            };
            let req = build_authorization(
                &mut card,
                &public,
                &challenge,
                Money::new(5_000, jpy),
                &CustomerVerification::OnlinePin(Pin::new("1234").unwrap()),
                &mut rand::rng(),
            )
            .unwrap();
            let body = serde_json::to_value(AuthorizationBody::from_request(&req)).unwrap();
            let (s, g) = post(
                &c,
                &hosts[(round + 1) % 2],
                "/v1/flow-d/authorizations",
                &format!("a{round}"),
                body,
            )
            .await;
            assert_eq!(s, 201, "{g}");
            g["password"].as_str().unwrap().to_owned()
        });
        // 16 threads, 8 terminals, both hosts, released together.
        let barrier = Arc::new(Barrier::new(16));
        let threads: Vec<_> = (0..16)
            .map(|i| {
                let addr = hosts[i % 2].clone();
                let digits = digits.clone();
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    let c = reqwest::Client::new();
                    let body = json!({"terminal_id": format!("pos-{}", i % 8), "password": digits,
                        "amount_minor": 1000, "currency": "JPY",
                        "goods": [{"description": "tea", "quantity": 1, "unit_price_minor": 1000}]});
                    // Connect first, then all send at once.
                    rt.block_on(async {
                        let _ = c.get(format!("http://{addr}/v1/flow-d/keys")).send().await;
                        barrier.wait();
                        post(&c, &addr, "/v1/flow-d/redemptions", &format!("r{round}-{i}"), body).await
                    })
                })
            })
            .collect();
        let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let created = results.iter().filter(|(s, _)| *s == 201).count();
        let used = results
            .iter()
            .filter(|(s, b)| *s == 409 && b["type"] == "urn:kessai:problem:password-used")
            .count();
        assert_eq!((created, used), (1, 15), "round {round}: {results:?}");
        total += 1000;
        let acct: Value = rt.block_on(async {
            c.get(format!(
                "http://{}/v1/admin/accounts/payable.shop-1",
                hosts[round % 2]
            ))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
        });
        assert_eq!(acct["credits_posted"], total, "{acct}");
    }
}
