//! Flow D (temporary password at the POS) through the host's HTTP router,
//! in-process, against SQLite (always) and PostgreSQL (`--ignored` with
//! `KESSAI_TEST_POSTGRES_URL`). The customer and merchant IC cards are the
//! real applet (issued by the host's card security module, personalized in
//! memory); the phone side is the pure crate's `phone` module; every byte
//! between them and the host crosses the HTTP API.
//!
//! Every bad input of issue 7 that crosses HTTP is tried here and followed
//! by a check that nothing changed (ledger balances, card counters, PIN
//! tries, password state).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use base64::Engine as _;
use kessai_card::{Card, CardholderData, MemNvm, PersonalizationParams};
use kessai_crypto::hpke::HpkePublicKey;
use kessai_crypto::sign::VerifyingKey;
use kessai_flow_d::artefacts::{LineItem, Variant, verify_receipt};
use kessai_flow_d::emvqr::{PasswordQr, TokenBin};
use kessai_flow_d::host::{HostChallenge, HostPublic};
use kessai_flow_d::phone::{
    CustomerVerification, build_authorization, build_merchant_card_request,
};
use kessai_host::card_security::{self, IssueCard};
use kessai_host::clock::ManualClock;
use kessai_host::routes::flow_d::{AuthorizationBody, MerchantCardBody};
use kessai_host::state::AppState;
use kessai_ids::{AccountId, CardId};
use kessai_ledger::{Account, AccountKind, BalanceLimit};
use kessai_money::{Currency, Money};
use kessai_secrets::{CardNumber, Pin};
use serde_json::{Value, json};
use tower::ServiceExt as _;

const PAN_A: &str = "4111111111111111";
const PAN_B: &str = "5555555555554444";
const LIMIT: i64 = 100_000;

fn jpy() -> Currency {
    Currency::from_code("JPY").unwrap()
}

fn yen(n: i64) -> Money {
    Money::new(n, jpy())
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn unb64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .unwrap()
}

struct TestHost {
    app: axum::Router,
    state: AppState,
    clock: ManualClock,
    token: String,
    dir: tempfile::TempDir,
}

struct Reply {
    status: StatusCode,
    body: Value,
}

impl Reply {
    fn slug(&self) -> &str {
        self.body["type"]
            .as_str()
            .unwrap_or("")
            .trim_start_matches("urn:kessai:problem:")
    }
}

static KEY: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn key() -> String {
    format!(
        "k-{}",
        KEY.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

impl TestHost {
    async fn new(postgres: bool) -> TestHost {
        let dir = tempfile::tempdir().unwrap();
        let db = if postgres {
            let url = std::env::var("KESSAI_TEST_POSTGRES_URL")
                .expect("KESSAI_TEST_POSTGRES_URL must be set to run the PostgreSQL suite");
            let mut cfg = kessai_store::DbConfig::new(url);
            let mut r = [0u8; 6];
            rand::fill(&mut r);
            cfg.postgres_schema = Some(format!("flowd_test_{}", hex::encode(r)));
            kessai_store::Db::open_with(cfg).await.unwrap()
        } else {
            kessai_store::Db::open(dir.path().to_str().unwrap())
                .await
                .unwrap()
        };
        // 2027-01-15: the cards expire 3012.
        let clock = ManualClock::new(1_800_000_000_000);
        let state = kessai_host::app::state_for_db(db, dir.path(), Arc::new(clock.clone()))
            .await
            .unwrap();
        let (token, _) = kessai_host::bootstrap::admin_token(dir.path(), None).unwrap();
        TestHost {
            app: kessai_host::app::router(state.clone()),
            state,
            clock,
            token: token.to_string(),
            dir,
        }
    }

    /// A second host process over the same database.
    async fn second(&self) -> TestHost {
        let dir = tempfile::tempdir().unwrap();
        for f in [
            kessai_host::bootstrap::MASTER_KEY_FILE,
            kessai_host::bootstrap::ADMIN_TOKEN_FILE,
        ] {
            std::fs::copy(self.dir.path().join(f), dir.path().join(f)).unwrap();
        }
        let state = kessai_host::app::state_for_db(
            self.state.db.clone(),
            dir.path(),
            Arc::new(self.clock.clone()),
        )
        .await
        .unwrap();
        TestHost {
            app: kessai_host::app::router(state.clone()),
            state,
            clock: self.clock.clone(),
            token: self.token.clone(),
            dir,
        }
    }

    async fn send(&self, method: Method, path: &str, body: Option<Value>, admin: bool) -> Reply {
        let mut b = Request::builder().method(method.clone()).uri(path);
        if admin {
            b = b.header(header::AUTHORIZATION, format!("Bearer {}", self.token));
        }
        if method == Method::POST {
            b = b.header("idempotency-key", key());
        }
        let req = match body {
            Some(v) => b
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(v.to_string()))
                .unwrap(),
            None => b.body(Body::empty()).unwrap(),
        };
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 22)
            .await
            .unwrap();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Reply { status, body }
    }

    async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(Method::POST, path, Some(body), false).await
    }

    async fn admin(&self, path: &str, body: Value) -> Reply {
        let r = self.send(Method::POST, path, Some(body), true).await;
        assert!(r.status.is_success(), "{path}: {} {}", r.status, r.body);
        r
    }

    async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, None, false).await
    }

    async fn balance(&self, account: &str) -> i64 {
        let a = self
            .state
            .db
            .ledger()
            .account(&account.parse().unwrap())
            .await
            .unwrap()
            .unwrap();
        a.balances.credits_posted - a.balances.debits_posted
    }

    async fn public(&self) -> HostPublic {
        let k = self.get("/v1/flow-d/keys").await.body;
        let hpke: [u8; 32] = unb64(k["cardholder_key"].as_str().unwrap())
            .try_into()
            .unwrap();
        let sig: [u8; 32] = unb64(k["receipt_key"].as_str().unwrap())
            .try_into()
            .unwrap();
        HostPublic {
            cardholder_key: HpkePublicKey::from_bytes(&hpke).unwrap(),
            cardholder_key_ref: k["cardholder_key_ref"].as_str().unwrap().parse().unwrap(),
            receipt_key: VerifyingKey::from_bytes(&sig).unwrap(),
            receipt_key_ref: k["receipt_key_ref"].as_str().unwrap().parse().unwrap(),
        }
    }

    async fn challenge(&self) -> HostChallenge {
        let r = self.post("/v1/flow-d/challenges", json!({})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let c: [u8; 8] = hex::decode(r.body["challenge"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        HostChallenge {
            challenge: c,
            max_amount_minor: r.body["max_amount_minor"].as_i64().unwrap(),
            expires_at_ms: r.body["expires_at_ms"].as_u64().unwrap(),
        }
    }

    /// Issues a card at the host and personalizes the applet with its keys.
    async fn card(&self, id: &str, pan: Option<&str>) -> Card<MemNvm> {
        let cid: CardId = id.parse().unwrap();
        let (_, keys) = card_security::issue_card(
            &self.state,
            &IssueCard {
                card_id: cid.clone(),
                currency: jpy(),
                purse_max_minor: 1,
                cardholder_id: None,
            },
        )
        .await
        .unwrap();
        let mut p = PersonalizationParams::new(cid, keys, jpy(), 1, [id.len() as u8; 32]);
        if let Some(pan) = pan {
            p.pin = Some(Pin::new("1234").unwrap());
            p.cardholder = Some(CardholderData {
                pan: CardNumber::new(pan).unwrap(),
                expiry_yymm: "3012".into(),
                name: "TARO YAMADA".into(),
            });
        }
        let mut card = Card::personalize(p, MemNvm::new()).unwrap();
        card.power_on();
        card
    }
}

struct World {
    h: TestHost,
    public: HostPublic,
    a: Card<MemNvm>,
    b: Card<MemNvm>,
    m: Card<MemNvm>,
}

async fn world(postgres: bool) -> World {
    let h = TestHost::new(postgres).await;
    let sk = kessai_crypto::sign::SigningKey::from_seed(&[7u8; 32]);
    for (shop, active) in [("shop-1", true), ("shop-2", false)] {
        h.send(
            Method::POST,
            "/v1/admin/merchants",
            Some(
                json!({"id": shop, "kind": "store", "name": format!("Konbini {shop}"),
                "currency": "JPY", "public_key": b64(&sk.verifying_key().to_bytes())}),
            ),
            true,
        )
        .await;
        if !active {
            h.admin(
                &format!("/v1/admin/merchants/{shop}/status"),
                json!({"status": "suspended"}),
            )
            .await;
        }
    }
    for (t, shop) in [
        ("pos-1", "shop-1"),
        ("pos-2", "shop-1"),
        ("pos-x", "shop-2"),
    ] {
        h.admin(
            "/v1/flow-d/admin/terminals",
            json!({"terminal_id": t, "store_id": shop}),
        )
        .await;
    }
    let a = h.card("card-a", Some(PAN_A)).await;
    let b = h.card("card-b", Some(PAN_B)).await;
    let m = h.card("mcard-1", None).await;
    for (cid, pan, fund) in [("card-a", PAN_A, "fund.a"), ("card-b", PAN_B, "fund.b")] {
        kessai_host::ledger_api::create_account(
            &h.state,
            Account::new(
                fund.parse::<AccountId>().unwrap(),
                AccountKind::CardholderFunding,
                jpy(),
                BalanceLimit::MaxNetDebit(LIMIT),
            ),
        )
        .await
        .unwrap();
        let r = h
            .admin(
                "/v1/flow-d/admin/cards",
                json!({"card_id": cid, "pan": pan, "expiry_yymm": "3012", "funding_account": fund,
                    "currency": "JPY", "pin": "1234", "secret": "blue heron"}),
            )
            .await;
        // Only the masked number comes back.
        assert!(!r.body.to_string().contains(pan), "{}", r.body);
    }
    h.admin(
        "/v1/flow-d/admin/merchant-cards",
        json!({"card_id": "mcard-1", "store_id": "shop-1", "currency": "JPY"}),
    )
    .await;
    let public = h.public().await;
    World { h, public, a, b, m }
}

fn pin(p: &str) -> CustomerVerification {
    CustomerVerification::OnlinePin(Pin::new(p).unwrap())
}

fn goods(total: i64) -> Vec<LineItem> {
    vec![
        LineItem {
            description: "green tea".into(),
            quantity: 2,
            unit_price_minor: 150,
        },
        LineItem {
            description: "bento".into(),
            quantity: 1,
            unit_price_minor: total - 300,
        },
    ]
}

impl World {
    async fn auth_body(&mut self, which: char, cap: i64, v: &CustomerVerification) -> Value {
        let ch = self.h.challenge().await;
        let card = if which == 'a' {
            &mut self.a
        } else {
            &mut self.b
        };
        let req =
            build_authorization(card, &self.public, &ch, yen(cap), v, &mut rand::rng()).unwrap();
        serde_json::to_value(AuthorizationBody::from_request(&req)).unwrap()
    }

    async fn authorize(&mut self, which: char, cap: i64) -> Value {
        let body = self.auth_body(which, cap, &pin("1234")).await;
        let r = self.h.post("/v1/flow-d/authorizations", body).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        r.body
    }

    async fn tries(&self, card: &str) -> i64 {
        kessai_store::flow_d::card(&self.h.state.db, card)
            .await
            .unwrap()
            .unwrap()
            .cvm_tries_left
    }

    /// Temporary passwords stored at the host.
    async fn passwords(&self) -> i64 {
        kessai_store::on_pool!(self.h.state.db, |pool| {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM flowd_passwords")
                .fetch_one(pool)
                .await
        })
        .unwrap()
    }

    async fn last_counter(&self, card: &str) -> i64 {
        kessai_store::flow_d::card(&self.h.state.db, card)
            .await
            .unwrap()
            .unwrap()
            .last_counter
    }
}

fn sale(terminal: &str, password: &str, amount: i64) -> Value {
    json!({"terminal_id": terminal, "password": password, "amount_minor": amount,
        "currency": "JPY", "goods": goods(amount)})
}

fn sale_qr(terminal: &str, qr: &str, amount: i64) -> Value {
    json!({"terminal_id": terminal, "qr_payload": qr, "amount_minor": amount,
        "currency": "JPY", "goods": goods(amount)})
}

async fn basic_flow_settles_once_and_pushes_the_receipt(postgres: bool) {
    let mut w = world(postgres).await;
    let g = w.authorize('a', 5_000).await;
    let digits = g["password"].as_str().unwrap().to_owned();
    assert_eq!(digits.len(), 12);
    assert!(g["qr_payload"].as_str().unwrap().starts_with("hQVDUFYwMW"));
    // The database never holds the digits or the PAN.
    let pw_rows: Vec<(String,)> = kessai_store::on_pool!(w.h.state.db, |pool| {
        sqlx::query_as("SELECT record FROM flowd_passwords")
            .fetch_all(pool)
            .await
    })
    .unwrap();
    for (r,) in &pw_rows {
        assert!(!r.contains(&digits) && !r.contains(PAN_A), "{r}");
    }
    let cards: Vec<(Option<String>,)> = kessai_store::on_pool!(w.h.state.db, |pool| {
        sqlx::query_as("SELECT profile FROM flowd_cards")
            .fetch_all(pool)
            .await
    })
    .unwrap();
    for (p,) in &cards {
        assert!(!p.clone().unwrap_or_default().contains(PAN_A));
    }

    let r =
        w.h.post("/v1/flow-d/redemptions", sale("pos-1", &digits, 1_200))
            .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let receipt = verify_receipt(
        &unb64(r.body["receipt"].as_str().unwrap()),
        &w.public.receipt_key_ref,
        &w.public.receipt_key,
    )
    .unwrap();
    assert_eq!(receipt.amount, yen(1_200));
    assert_eq!(receipt.variant, Variant::Password);
    assert_eq!(
        receipt.card_masked,
        CardNumber::new(PAN_A).unwrap().masked()
    );
    assert!(
        r.body["receipt_text"]
            .as_str()
            .unwrap()
            .contains("Konbini shop-1")
    );
    assert_eq!(w.h.balance("fund.a").await, -1_200);
    assert_eq!(w.h.balance("payable.shop-1").await, 1_200);
    // Pushed to the phone and queued for the POS.
    let pushed = w.h.get("/v1/flow-d/cards/card-a/receipts?after=0").await;
    assert_eq!(pushed.body.as_array().unwrap().len(), 1);
    assert_eq!(pushed.body[0]["transfer_id"], r.body["transfer_id"]);
    let pos = w.h.get("/v1/flow-d/terminals/pos-1/receipts").await;
    assert_eq!(pos.body.as_array().unwrap().len(), 1);

    // Reused: refused, nothing moves.
    let again =
        w.h.post("/v1/flow-d/redemptions", sale("pos-2", &digits, 1_200))
            .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.slug(), "password-used");
    assert_eq!(w.h.balance("fund.a").await, -1_200);

    // QR path.
    let g2 = w.authorize('a', 3_000).await;
    let r =
        w.h.post(
            "/v1/flow-d/redemptions",
            sale_qr("pos-2", g2["qr_payload"].as_str().unwrap(), 3_000),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(w.h.balance("fund.a").await, -4_200);
}

async fn wrong_pin_counts_down_then_locks(postgres: bool) {
    let mut w = world(postgres).await;
    for left in [2, 1, 0] {
        let body = w.auth_body('a', 1_000, &pin("9999")).await;
        let r = w.h.post("/v1/flow-d/authorizations", body).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
        assert_eq!(r.slug(), "wrong-pin");
        assert!(!r.body.to_string().contains("9999"));
        assert_eq!(w.tries("card-a").await, left);
    }
    // Locked: the right PIN no longer helps.
    let body = w.auth_body('a', 1_000, &pin("1234")).await;
    let r = w.h.post("/v1/flow-d/authorizations", body).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.slug(), "card-blocked");
    assert_eq!(w.passwords().await, 0);
    assert_eq!(w.h.balance("fund.a").await, 0);
}

async fn replayed_and_forged_authorizations_change_nothing(postgres: bool) {
    let mut w = world(postgres).await;
    let body = w.auth_body('a', 1_000, &pin("1234")).await;
    let r = w.h.post("/v1/flow-d/authorizations", body.clone()).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let counter = w.last_counter("card-a").await;
    // Same request again (new idempotency key): challenge used.
    let r = w.h.post("/v1/flow-d/authorizations", body.clone()).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.slug(), "challenge-used");
    // Same cryptogram and counter under a fresh challenge: does not verify.
    let ch = w.h.challenge().await;
    let mut replay = body.clone();
    replay["challenge"] = json!(hex::encode(ch.challenge));
    let r = w.h.post("/v1/flow-d/authorizations", replay).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.slug(), "bad-cryptogram");
    // Forged cryptogram.
    let mut forged = w.auth_body('a', 1_000, &pin("1234")).await;
    let c = forged["card"]["cryptogram"].as_str().unwrap().to_owned();
    let flipped = format!("{}{}", if &c[..1] == "0" { "1" } else { "0" }, &c[1..]);
    forged["card"]["cryptogram"] = json!(flipped);
    let r = w.h.post("/v1/flow-d/authorizations", forged).await;
    assert_eq!(r.slug(), "bad-cryptogram");
    // A lower counter (an old cryptogram) is a replay.
    let mut old = w.auth_body('a', 1_000, &pin("1234")).await;
    // Pretend the host already saw this counter.
    let n = old["card"]["counter"].as_u64().unwrap();
    kessai_store::on_pool!(w.h.state.db, |pool| {
        sqlx::query("UPDATE flowd_cards SET last_counter = $1 WHERE card_id = 'card-a'")
            .bind(n as i64)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
    })
    .unwrap();
    let r = w.h.post("/v1/flow-d/authorizations", old.clone()).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.slug(), "counter-replay");
    assert!(w.last_counter("card-a").await >= counter);
    // Malformed body fields.
    old["sealed"] = json!("***");
    let r = w.h.post("/v1/flow-d/authorizations", old.clone()).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    old["extra"] = json!(1);
    let r = w.h.post("/v1/flow-d/authorizations", old).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(w.h.balance("fund.a").await, 0);
}

async fn redemption_refusals_are_typed_and_change_nothing(postgres: bool) {
    let mut w = world(postgres).await;
    let g = w.authorize('a', 2_000).await;
    let digits = g["password"].as_str().unwrap().to_owned();
    let qr = g["qr_payload"].as_str().unwrap().to_owned();
    let cases: Vec<(Value, StatusCode, &str)> = vec![
        (
            sale("pos-1", &digits, 2_001),
            StatusCode::UNPROCESSABLE_ENTITY,
            "above-cap",
        ),
        (
            sale("pos-nobody", &digits, 100 + 300),
            StatusCode::FORBIDDEN,
            "unknown-terminal",
        ),
        (
            sale("pos-x", &digits, 400),
            StatusCode::FORBIDDEN,
            "unknown-merchant",
        ),
        (
            sale("pos-1", "12345", 400),
            StatusCode::BAD_REQUEST,
            "password-format",
        ),
        (
            sale_qr("pos-1", "not!!base64", 400),
            StatusCode::BAD_REQUEST,
            "malformed-qr",
        ),
        (
            sale_qr("pos-1", "hQVDUFYwMQ", 400),
            StatusCode::BAD_REQUEST,
            "malformed-qr",
        ),
        (
            json!({"terminal_id": "pos-1", "password": digits, "amount_minor": 500,
                "currency": "JPY", "goods": goods(400)}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "goods-mismatch",
        ),
    ];
    for (body, status, slug) in cases {
        let r = w.h.post("/v1/flow-d/redemptions", body).await;
        assert_eq!((r.status, r.slug()), (status, slug), "{}", r.body);
        assert!(!r.body.to_string().contains(&digits));
    }
    // Password of another card: card B's QR data with card A's digits.
    let gb = w.authorize('b', 2_000).await;
    let qb =
        PasswordQr::from_payload(gb["qr_payload"].as_str().unwrap(), &TokenBin::default()).unwrap();
    let qa = PasswordQr::from_payload(&qr, &TokenBin::default()).unwrap();
    let mixed = PasswordQr {
        password: qa.password.clone(),
        ..qb
    }
    .to_payload(&TokenBin::default());
    let r =
        w.h.post("/v1/flow-d/redemptions", sale_qr("pos-1", &mixed, 400))
            .await;
    assert_eq!(r.slug(), "password-of-another-card");
    assert_eq!(w.h.balance("fund.a").await, 0);
    assert_eq!(w.h.balance("fund.b").await, 0);
    // Still redeemable after all that.
    let r =
        w.h.post("/v1/flow-d/redemptions", sale("pos-1", &digits, 2_000))
            .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);

    // Expired.
    let g = w.authorize('b', 1_000).await;
    w.h.clock.advance(120_000);
    let r =
        w.h.post(
            "/v1/flow-d/redemptions",
            sale("pos-1", g["password"].as_str().unwrap(), 400),
        )
        .await;
    assert_eq!(r.slug(), "password-expired");
    assert_eq!(w.h.balance("fund.b").await, 0);
}

async fn guessing_is_limited_per_terminal(postgres: bool) {
    let mut w = world(postgres).await;
    let g = w.authorize('a', 1_000).await;
    let digits = g["password"].as_str().unwrap().to_owned();
    let wrong = if digits == "000000000000" {
        "000000000001"
    } else {
        "000000000000"
    };
    for _ in 0..5 {
        let r =
            w.h.post("/v1/flow-d/redemptions", sale("pos-1", wrong, 400))
                .await;
        assert_eq!(r.slug(), "unknown-password");
    }
    // Locked: even the right password is refused at this terminal ...
    let r =
        w.h.post("/v1/flow-d/redemptions", sale("pos-1", &digits, 400))
            .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.slug(), "terminal-locked");
    assert_eq!(w.h.balance("fund.a").await, 0);
    // ... but not at another one.
    let r =
        w.h.post("/v1/flow-d/redemptions", sale("pos-2", &digits, 400))
            .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
}

async fn concurrent_double_redemption_on_two_hosts_settles_once(postgres: bool) {
    let mut w = world(postgres).await;
    let other = w.h.second().await;
    for round in 0..3 {
        let g = w.authorize('a', 1_000).await;
        let digits = g["password"].as_str().unwrap().to_owned();
        let mut tasks = Vec::new();
        for i in 0..8 {
            let app = if i % 2 == 0 {
                w.h.app.clone()
            } else {
                other.app.clone()
            };
            let body = sale(if i % 2 == 0 { "pos-1" } else { "pos-2" }, &digits, 400);
            tasks.push(tokio::spawn(async move {
                let req = Request::builder()
                    .method(Method::POST)
                    .uri("/v1/flow-d/redemptions")
                    .header("idempotency-key", key())
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from(body.to_string()))
                    .unwrap();
                app.oneshot(req).await.unwrap().status()
            }));
        }
        let mut created = 0;
        for t in tasks {
            let s = t.await.unwrap();
            if s == StatusCode::CREATED {
                created += 1;
            } else {
                assert_eq!(s, StatusCode::CONFLICT);
            }
        }
        assert_eq!(created, 1, "round {round}");
        assert_eq!(w.h.balance("fund.a").await, -400 * (round + 1));
    }
}

async fn ledger_refusal_releases_the_password(postgres: bool) {
    let mut w = world(postgres).await;
    // Use most of card B's credit line elsewhere.
    let g = w.authorize('b', 1_000_000).await;
    let big = LIMIT + 300;
    let r =
        w.h.post(
            "/v1/flow-d/redemptions",
            sale("pos-1", g["password"].as_str().unwrap(), big),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert_eq!(w.h.balance("fund.b").await, 0);
    // The refusal did not burn the password: a smaller sale settles.
    let r =
        w.h.post(
            "/v1/flow-d/redemptions",
            sale("pos-1", g["password"].as_str().unwrap(), 5_000),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(w.h.balance("fund.b").await, -5_000);
}

async fn merchant_card_variant_settles_and_signals_the_pos(postgres: bool) {
    let mut w = world(postgres).await;
    let ch = w.h.challenge().await;
    let req = build_merchant_card_request(
        &mut w.a,
        &mut w.m,
        &w.public,
        &ch,
        yen(2_500),
        goods(2_500),
        Some("pos-1".parse().unwrap()),
        &pin("1234"),
        &mut rand::rng(),
    )
    .unwrap();
    let body = serde_json::to_value(MerchantCardBody::from_request(&req)).unwrap();
    let r =
        w.h.post("/v1/flow-d/merchant-card-settlements", body.clone())
            .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let receipt = verify_receipt(
        &unb64(r.body["receipt"].as_str().unwrap()),
        &w.public.receipt_key_ref,
        &w.public.receipt_key,
    )
    .unwrap();
    assert_eq!(receipt.variant, Variant::MerchantCard);
    assert_eq!(w.h.balance("fund.a").await, -2_500);
    let pos = w.h.get("/v1/flow-d/terminals/pos-1/receipts").await;
    assert_eq!(pos.body.as_array().unwrap().len(), 1);
    // Replayed: refused, nothing moves.
    let r = w.h.post("/v1/flow-d/merchant-card-settlements", body).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert_eq!(w.h.balance("fund.a").await, -2_500);
    // Evidence: receipt signed, cardholder payload sealed.
    let ev = kessai_store::evidence::by_subject(&w.h.state.db, "flowd:card:card-a")
        .await
        .unwrap();
    assert!(ev.iter().any(|e| e.kind == "flow-d-receipt"));
}

async fn admin_endpoints_need_the_token(postgres: bool) {
    let w = world(postgres).await;
    let r =
        w.h.send(
            Method::POST,
            "/v1/flow-d/admin/terminals",
            Some(json!({"terminal_id": "pos-9", "store_id": "shop-1"})),
            false,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(
        kessai_store::flow_d::terminal(&w.h.state.db, "pos-9")
            .await
            .unwrap()
            .is_none()
    );
    let r =
        w.h.send(
            Method::POST,
            "/v1/flow-d/admin/terminals",
            Some(json!({"terminal_id": "pos-9", "store_id": "no-such-shop"})),
            true,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

/// A customer card issued by the host with the owner's fingerprint
/// enrolled (claim 16), registered with PIN, secret and biometric, and with
/// its name so the registration returns the claim-10 card profile.
struct Fingerprinted {
    card: Card<MemNvm>,
    owner: kessai_biometric::synth::SyntheticFinger,
    stranger: kessai_biometric::synth::SyntheticFinger,
    rng: chacha20::ChaCha8Rng,
    registration: Value,
}

const PAN_C: &str = "4000056655665556";

impl Fingerprinted {
    async fn new(h: &TestHost) -> Self {
        use rand_core::SeedableRng as _;
        let mut rng = chacha20::ChaCha8Rng::seed_from_u64(21);
        let owner = kessai_biometric::synth::SyntheticFinger::generate(&mut rng);
        let stranger = kessai_biometric::synth::SyntheticFinger::generate(&mut rng);
        let reference = owner
            .enrol(&kessai_biometric::Matcher::default(), &mut rng)
            .unwrap();
        let cid: CardId = "card-c".parse().unwrap();
        let (_, keys) = card_security::issue_card(
            &h.state,
            &IssueCard {
                card_id: cid.clone(),
                currency: jpy(),
                purse_max_minor: 1,
                cardholder_id: None,
            },
        )
        .await
        .unwrap();
        let mut p = PersonalizationParams::new(cid, keys, jpy(), 1, [3; 32]);
        p.pin = Some(Pin::new("2468").unwrap());
        p.fingerprint = Some(reference);
        p.cardholder = Some(CardholderData {
            pan: CardNumber::new(PAN_C).unwrap(),
            expiry_yymm: "3012".into(),
            name: "HANAKO SATO".into(),
        });
        let mut card = Card::personalize(p, MemNvm::new()).unwrap();
        card.power_on();
        kessai_host::ledger_api::create_account(
            &h.state,
            Account::new(
                "fund.c".parse::<AccountId>().unwrap(),
                AccountKind::CardholderFunding,
                jpy(),
                BalanceLimit::MaxNetDebit(LIMIT),
            ),
        )
        .await
        .unwrap();
        let r = h
            .admin(
                "/v1/flow-d/admin/cards",
                json!({"card_id": "card-c", "pan": PAN_C, "expiry_yymm": "3012",
                    "funding_account": "fund.c", "currency": "JPY", "pin": "2468",
                    "secret": "white crane", "biometric_enrolled": true,
                    "name": "HANAKO SATO"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        assert!(!r.body.to_string().contains(PAN_C), "{}", r.body);
        Self {
            card,
            owner,
            stranger,
            rng,
            registration: r.body,
        }
    }

    fn touch(&mut self, owner: bool) -> kessai_biometric::Template {
        let f = if owner { &self.owner } else { &self.stranger };
        f.impression(&Default::default(), &mut self.rng)
    }

    /// The phone's side for a 2 000 JPY cap: card, verification, request.
    async fn build(
        &mut self,
        w: &World,
        v: &CustomerVerification,
    ) -> Result<kessai_flow_d::host::AuthorizationRequest, kessai_flow_d::FlowDError> {
        let ch = w.h.challenge().await;
        build_authorization(
            &mut self.card,
            &w.public,
            &ch,
            yen(2_000),
            v,
            &mut rand::rng(),
        )
    }

    /// Builds the authorization with `v` and posts it.
    async fn authorize(
        &mut self,
        w: &World,
        v: &CustomerVerification,
        tamper: impl FnOnce(&mut kessai_flow_d::host::AuthorizationRequest),
    ) -> Reply {
        let mut req = self.build(w, v).await.unwrap();
        tamper(&mut req);
        w.h.post(
            "/v1/flow-d/authorizations",
            serde_json::to_value(AuthorizationBody::from_request(&req)).unwrap(),
        )
        .await
    }
}

async fn every_verification_method_works_over_http(postgres: bool) {
    let w = world(postgres).await;
    let mut c = Fingerprinted::new(&w.h).await;
    // Offline PIN: the card checks it, its cryptogram carries CVM 01.
    let v = CustomerVerification::OfflinePin(Pin::new("2468").unwrap());
    let r = c.authorize(&w, &v, |_| {}).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    // A wrong offline PIN never leaves the phone: the card refuses.
    let wrong = CustomerVerification::OfflinePin(Pin::new("1357").unwrap());
    assert_eq!(
        c.build(&w, &wrong).await.unwrap_err(),
        kessai_flow_d::FlowDError::WrongPin { tries_left: 2 }
    );
    // Registered secret (claim 17): right, then wrong (a host try is used).
    let v = CustomerVerification::RegisteredSecret("white crane".into());
    let r = c.authorize(&w, &v, |_| {}).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let before = w.tries("card-c").await;
    let v = CustomerVerification::RegisteredSecret("black crane".into());
    let r = c.authorize(&w, &v, |_| {}).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert_eq!(r.slug(), "wrong-pin");
    assert!(!r.body.to_string().contains("crane"));
    assert_eq!(w.tries("card-c").await, before - 1);
    // On-card fingerprint (claim 16): the card's matcher, CVM 02; a
    // success resets the host tries.
    let live = c.touch(true);
    let r = c
        .authorize(&w, &CustomerVerification::OnCardBiometric(live), |_| {})
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let g = r.body;
    // Redeem the fingerprint-authorized password at the till.
    let r =
        w.h.post(
            "/v1/flow-d/redemptions",
            sale("pos-1", g["password"].as_str().unwrap(), 1_200),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(w.h.balance("fund.c").await, -1_200);
    // A stranger's finger is refused by the card: nothing is sent.
    let stranger = CustomerVerification::OnCardBiometric(c.touch(false));
    assert_eq!(
        c.build(&w, &stranger).await.unwrap_err(),
        kessai_flow_d::FlowDError::WrongPin { tries_left: 4 }
    );
    // A phone claiming the fingerprint method without the card's CVM 02,
    // or rewriting the CVM byte: refused, no password, no money moves.
    let n = w.passwords().await;
    let pin_v = CustomerVerification::OnlinePin(Pin::new("2468").unwrap());
    let r = c
        .authorize(&w, &pin_v, |req| {
            req.method = kessai_flow_d::host::CvmMethod::OnCardBiometric;
        })
        .await;
    assert_eq!(r.slug(), "cvm-not-available", "{}", r.body);
    let r = c
        .authorize(&w, &pin_v, |req| {
            req.method = kessai_flow_d::host::CvmMethod::OnCardBiometric;
            req.card.cvm = 2;
        })
        .await;
    assert_eq!(r.slug(), "bad-cryptogram", "{}", r.body);
    assert_eq!(w.passwords().await, n);
    assert_eq!(w.h.balance("fund.c").await, -1_200);
}

async fn registration_issues_the_in_phone_card_profile(postgres: bool) {
    use kessai_flow_d::phone::check_card_in_phone;
    let mut w = world(postgres).await;
    let mut c = Fingerprinted::new(&w.h).await;
    let p = &c.registration["profile"];
    let cose = unb64(p["cose"].as_str().unwrap());
    let key_ref: kessai_ids::KeyRef = p["key_ref"].as_str().unwrap().parse().unwrap();
    let key =
        VerifyingKey::from_bytes(&unb64(p["public_key"].as_str().unwrap()).try_into().unwrap())
            .unwrap();
    // The pinned key is the host's published signing key.
    assert_eq!(key, w.public.receipt_key);
    let now = kessai_host::clock::Clock::now_ms(&w.h.clock) as u64;
    // The card it was issued for passes, with no network involved.
    let data = check_card_in_phone(&mut c.card, &cose, &key_ref, &key, now).unwrap();
    assert_eq!(data.card_id.as_str(), "card-c");
    // Another card, a tampered profile, another key: refused.
    assert_eq!(
        check_card_in_phone(&mut w.a, &cose, &key_ref, &key, now).unwrap_err(),
        kessai_flow_d::FlowDError::ProfileMismatch("card id")
    );
    let mut bad = cose.clone();
    let n = bad.len();
    bad[n - 1] ^= 1;
    assert!(matches!(
        check_card_in_phone(&mut c.card, &bad, &key_ref, &key, now),
        Err(kessai_flow_d::FlowDError::Artefact(_))
    ));
    let other = kessai_crypto::sign::SigningKey::from_seed(&[9; 32]).verifying_key();
    assert!(matches!(
        check_card_in_phone(&mut c.card, &cose, &key_ref, &other, now),
        Err(kessai_flow_d::FlowDError::Artefact(_))
    ));
    // A bad name is refused before anything is stored.
    let cid: CardId = "card-d".parse().unwrap();
    card_security::issue_card(
        &w.h.state,
        &IssueCard {
            card_id: cid,
            currency: jpy(),
            purse_max_minor: 1,
            cardholder_id: None,
        },
    )
    .await
    .unwrap();
    let r =
        w.h.send(
            Method::POST,
            "/v1/flow-d/admin/cards",
            Some(
                json!({"card_id": "card-d", "pan": "6011111111111117", "expiry_yymm": "3012",
                "funding_account": "fund.b", "currency": "JPY", "name": "X"}),
            ),
            true,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(r.slug(), "invalid-name");
    assert!(
        kessai_store::flow_d::card(&w.h.state.db, "card-d")
            .await
            .unwrap()
            .is_none()
    );
    let r =
        w.h.admin(
            "/v1/flow-d/admin/cards",
            json!({"card_id": "card-d", "pan": "6011111111111117", "expiry_yymm": "3012",
                "funding_account": "fund.b", "currency": "JPY"}),
        )
        .await;
    // Registered without a name: no profile.
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert!(r.body.get("profile").is_none(), "{}", r.body);
}

/// A host that stopped between marking a password used and posting its
/// transfer leaves a used password and no money moved; the maintenance
/// reconciliation releases such a mark after a grace period, and never a
/// mark whose transfer exists.
async fn orphaned_password_mark_is_released_by_maintenance(postgres: bool) {
    use kessai_host::maintenance::{FLOW_D_ORPHAN_GRACE_MS, run_once};
    let mut w = world(postgres).await;
    let g = w.authorize('a', 5_000).await;
    let digits = g["password"].as_str().unwrap().to_owned();
    // The crash: the mark committed, the posting never ran.
    let now = kessai_host::clock::Clock::now_ms(&w.h.clock);
    let (id,): (Vec<u8>,) = kessai_store::on_pool!(w.h.state.db, |pool| {
        sqlx::query_as("SELECT id FROM flowd_passwords")
            .fetch_one(pool)
            .await
    })
    .unwrap();
    let transfer = kessai_ids::TransferId::derive("flow-d/password", &[&id]).to_string();
    let marked = kessai_store::on_pool!(w.h.state.db, |pool| {
        sqlx::query(
            "UPDATE flowd_passwords SET used = 1, used_at_ms = $1, transfer_id = $2 WHERE id = $3",
        )
        .bind(now)
        .bind(&transfer)
        .bind(&id)
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
    })
    .unwrap();
    assert_eq!(marked, 1);
    let r =
        w.h.post("/v1/flow-d/redemptions", sale("pos-1", &digits, 1_000))
            .await;
    assert_eq!(r.slug(), "password-used", "{}", r.body);
    // Within the grace period the mark may still be on its way: kept.
    assert_eq!(run_once(&w.h.state).await.flow_d_released_orphans, 0);
    w.h.clock.advance(FLOW_D_ORPHAN_GRACE_MS + 1);
    assert_eq!(run_once(&w.h.state).await.flow_d_released_orphans, 1);
    assert_eq!(w.h.balance("fund.a").await, 0, "the release moves no money");
    // The POS keys it in again: settled exactly once.
    let r =
        w.h.post("/v1/flow-d/redemptions", sale("pos-1", &digits, 1_000))
            .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(w.h.balance("fund.a").await, -1_000);
    // A settled mark is never released.
    w.h.clock.advance(FLOW_D_ORPHAN_GRACE_MS + 1);
    assert_eq!(run_once(&w.h.state).await.flow_d_released_orphans, 0);
    let r =
        w.h.post("/v1/flow-d/redemptions", sale("pos-2", &digits, 1_000))
            .await;
    assert_eq!(r.slug(), "password-used", "{}", r.body);
    assert_eq!(w.h.balance("fund.a").await, -1_000);
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() { super::$name(false).await })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            #[ignore = "needs KESSAI_TEST_POSTGRES_URL"]
            async fn $name() { super::$name(true).await })*
        }
    };
}

on_both_backends!(
    basic_flow_settles_once_and_pushes_the_receipt,
    wrong_pin_counts_down_then_locks,
    replayed_and_forged_authorizations_change_nothing,
    redemption_refusals_are_typed_and_change_nothing,
    guessing_is_limited_per_terminal,
    concurrent_double_redemption_on_two_hosts_settles_once,
    ledger_refusal_releases_the_password,
    merchant_card_variant_settles_and_signals_the_pos,
    admin_endpoints_need_the_token,
    every_verification_method_works_over_http,
    registration_issues_the_in_phone_card_profile,
    orphaned_password_mark_is_released_by_maintenance,
);
