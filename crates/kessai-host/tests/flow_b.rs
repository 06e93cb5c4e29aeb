//! Flow B through the host's HTTP API, in-process, against SQLite (always)
//! and PostgreSQL (`--ignored`, with `KESSAI_TEST_POSTGRES_URL`): store and
//! mall purchases, top-ups, recovery after lost messages, the second
//! embodiment, and every bad input of the issue — each refused with a typed
//! problem and followed by a check that nothing changed (ledger balances,
//! card purse, shadow, bill row, pending operation, PIN counter), and by
//! the auditor.
//!
//! The wallet is the pure `kessai_flow_b::wallet` driven over HTTP; the
//! card is a real `kessai_card::Card` issued by the host
//! (`card_security::issue_card`).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use base64::Engine as _;
use kessai_card::{Card, MemNvm, PersonalizationParams};
use kessai_crypto::cose;
use kessai_crypto::hpke::HpkePublicKey;
use kessai_crypto::sign::{SigningKey, VerifyingKey};
use kessai_flow_b::artefacts::{InfoEnvelope, SettlementInformation};
use kessai_flow_b::host::Sig2Mode;
use kessai_flow_b::messages::{CardResponses, HostToWallet};
use kessai_flow_b::registry::KeyDirectory;
use kessai_flow_b::store::{IssuedBill, Store, StoreIdentity};
use kessai_flow_b::wallet::{WalletAction, WalletConfig, WalletSession};
use kessai_host::clock::{Clock, ManualClock};
use kessai_host::state::AppState;
use kessai_ids::{CardId, KeyRef};
use kessai_money::{Currency, Money};
use kessai_secrets::{CardNumber, Pin};
use serde_json::{Value, json};
use tower::ServiceExt as _;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;
const T0: i64 = 1_800_000_000_000;
const FUNDING_PAN: &str = "4111111111111111";
const FUNDING_PIN: &str = "4321";

fn jpy() -> Currency {
    Currency::from_code("JPY").unwrap()
}

fn id<T: std::str::FromStr>(s: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    s.parse().unwrap()
}

fn store_key() -> SigningKey {
    SigningKey::from_seed(&[1; 32])
}
fn mall_key() -> SigningKey {
    SigningKey::from_seed(&[2; 32])
}
fn other_key() -> SigningKey {
    SigningKey::from_seed(&[3; 32])
}

#[derive(Debug)]
struct Reply {
    status: StatusCode,
    body: Value,
}

impl Reply {
    fn problem(&self) -> &str {
        self.body["type"].as_str().unwrap_or("")
    }
}

/// A host with flow B's merchants, a cardholder with a funding card, and
/// IC cards issued by it.
struct H {
    app: axum::Router,
    state: AppState,
    clock: ManualClock,
    token: String,
    postgres: bool,
    db_url: Option<(String, String)>,
    _dir: tempfile::TempDir,
}

impl H {
    async fn new(postgres: bool) -> H {
        Self::with_sig2(postgres, Sig2Mode::Signed).await
    }

    async fn with_sig2(postgres: bool, sig2: Sig2Mode) -> H {
        let dir = tempfile::tempdir().unwrap();
        let (db, db_url) = if postgres {
            let url = std::env::var("KESSAI_TEST_POSTGRES_URL")
                .expect("KESSAI_TEST_POSTGRES_URL must be set to run the PostgreSQL suite");
            let mut cfg = kessai_store::DbConfig::new(url.clone());
            let mut r = [0u8; 6];
            rand::fill(&mut r);
            let schema = format!("flowb_test_{}", hex::encode(r));
            cfg.postgres_schema = Some(schema.clone());
            (
                kessai_store::Db::open_with(cfg).await.unwrap(),
                Some((url, schema)),
            )
        } else {
            (
                kessai_store::Db::open(dir.path().to_str().unwrap())
                    .await
                    .unwrap(),
                None,
            )
        };
        let clock = ManualClock::new(T0);
        let mut state = kessai_host::app::state_for_db(db, dir.path(), Arc::new(clock.clone()))
            .await
            .unwrap();
        let mut settings = kessai_host::settings::Settings::default();
        settings.flow_b.sig2 = sig2;
        state.settings = Arc::new(settings);
        let (token, _) = kessai_host::bootstrap::admin_token(dir.path(), None).unwrap();
        let h = H {
            app: kessai_host::app::router(state.clone()),
            state,
            clock,
            token: token.to_string(),
            postgres,
            db_url,
            _dir: dir,
        };
        h.seed().await;
        h
    }

    /// The same database and secrets, a fresh process state (a restart).
    async fn restart(&self) -> H {
        let db = match &self.db_url {
            Some((url, schema)) => {
                let mut cfg = kessai_store::DbConfig::new(url.clone());
                cfg.postgres_schema = Some(schema.clone());
                kessai_store::Db::open_with(cfg).await.unwrap()
            }
            None => kessai_store::Db::open(self._dir.path().to_str().unwrap())
                .await
                .unwrap(),
        };
        let clock = ManualClock::new(self.clock.now_ms());
        let mut state =
            kessai_host::app::state_for_db(db, self._dir.path(), Arc::new(clock.clone()))
                .await
                .unwrap();
        state.settings = self.state.settings.clone();
        H {
            app: kessai_host::app::router(state.clone()),
            state,
            clock,
            token: self.token.clone(),
            postgres: self.postgres,
            db_url: self.db_url.clone(),
            _dir: tempfile::tempdir().unwrap(),
        }
    }

    async fn send(&self, req: Request<Body>) -> Reply {
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 22)
            .await
            .unwrap();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Reply { status, body }
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        admin: bool,
        body: Option<&Value>,
    ) -> Request<Body> {
        let mut b = Request::builder().method(method).uri(path);
        if admin {
            b = b.header(header::AUTHORIZATION, format!("Bearer {}", self.token));
        }
        let mut key = [0u8; 16];
        rand::fill(&mut key);
        b = b.header("idempotency-key", hex::encode(key));
        match body {
            Some(v) => b
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(v.to_string()))
                .unwrap(),
            None => b.body(Body::empty()).unwrap(),
        }
    }

    async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(self.request(Method::POST, path, false, Some(&body)))
            .await
    }

    async fn admin_post(&self, path: &str, body: Value) -> Reply {
        let r = self
            .send(self.request(Method::POST, path, true, Some(&body)))
            .await;
        assert!(r.status.is_success(), "{path}: {} {}", r.status, r.body);
        r
    }

    async fn get(&self, path: &str) -> Reply {
        self.send(self.request(Method::GET, path, false, None))
            .await
    }

    async fn seed(&self) {
        let key = |k: SigningKey| B64.encode(k.verifying_key().to_bytes());
        for (mid, kind, mall, pk) in [
            ("store-1", "store", None, Some(key(store_key()))),
            ("store-2", "store", None, Some(key(other_key()))),
            ("mall-1", "mall", None, Some(key(mall_key()))),
            ("shop-a", "member", Some("mall-1"), None),
        ] {
            self.admin_post(
                "/v1/admin/merchants",
                json!({"id": mid, "kind": kind, "name": mid, "currency": "JPY",
                       "mall_id": mall, "public_key": pk}),
            )
            .await;
        }
        self.admin_post(
            "/v1/admin/cardholders",
            json!({"id": "alice", "name": "Alice", "currency": "JPY", "credit_limit_minor": 100000}),
        )
        .await;
        let r = self
            .admin_post(
                "/v1/flow-b/admin/funding-cards",
                json!({"cardholder_id": "alice", "pan": FUNDING_PAN, "expiry_yymm": "3012",
                       "pin": FUNDING_PIN}),
            )
            .await;
        assert_eq!(r.body["pan_masked"], "411111******1111");
    }

    /// Issues a card and personalizes an in-memory card with its keys.
    async fn issue(&self, card: &str) -> Card<MemNvm> {
        let (_, keys) = kessai_host::card_security::issue_card(
            &self.state,
            &kessai_host::card_security::IssueCard {
                card_id: id(card),
                currency: jpy(),
                purse_max_minor: 100_000,
                cardholder_id: None,
            },
        )
        .await
        .unwrap();
        let p = PersonalizationParams::new(id(card), keys, jpy(), 100_000, [5; 32]);
        let mut c = Card::personalize(p, MemNvm::new()).unwrap();
        c.power_on();
        c
    }

    async fn wallet_config(&self) -> WalletConfig {
        let keys = self.get("/v1/flow-b/keys").await.body;
        let dir = |list: &Value| {
            let mut d = KeyDirectory::new();
            for k in list.as_array().unwrap() {
                let pk: [u8; 32] = B64
                    .decode(k["public_key"].as_str().unwrap())
                    .unwrap()
                    .try_into()
                    .unwrap();
                d = d.with(
                    id(k["key_ref"].as_str().unwrap()),
                    VerifyingKey::from_bytes(&pk).unwrap(),
                );
            }
            d
        };
        WalletConfig {
            host_keys: dir(&keys["host_keys"]),
            merchant_keys: dir(&keys["merchant_keys"]),
            sig2: if keys["sig2"] == "omitted" {
                Sig2Mode::Omitted
            } else {
                Sig2Mode::Signed
            },
        }
    }

    async fn host_keys(&self) -> KeyDirectory {
        self.wallet_config().await.host_keys
    }

    async fn store(&self) -> Store {
        Store {
            identity: StoreIdentity::Store(id("store-1")),
            signing_key: store_key(),
            key_ref: id("store-1#1"),
            host_keys: self.host_keys().await,
            bill_ttl_ms: 600_000,
        }
    }

    async fn mall(&self) -> Store {
        Store {
            identity: StoreIdentity::Mall {
                mall_id: id("mall-1"),
                members: vec![id("shop-a")],
            },
            signing_key: mall_key(),
            key_ref: id("mall-1#1"),
            host_keys: self.host_keys().await,
            bill_ttl_ms: 600_000,
        }
    }

    fn now(&self) -> u64 {
        self.clock.now_ms() as u64
    }

    async fn bill(&self, order: &str, amount: i64) -> IssuedBill {
        self.store()
            .await
            .create_bill(
                &id("store-1"),
                id(order),
                Money::new(amount, jpy()),
                [0xAB; 32],
                self.now(),
                &mut rand::rng(),
            )
            .unwrap()
    }

    async fn begin(&self, bill: &[u8], card: &str) -> Reply {
        self.post(
            "/v1/flow-b/purchases",
            json!({"bill": B64.encode(bill), "card_id": card}),
        )
        .await
    }

    async fn respond(&self, msg: &CardResponses) -> Reply {
        self.post(
            &format!(
                "/v1/flow-b/sessions/{}/responses",
                hex::encode(msg.session_id)
            ),
            serde_json::to_value(msg).unwrap(),
        )
        .await
    }

    async fn top_up_with(&self, card: &str, amount: i64, pan: &str, pin: &str) -> Reply {
        let keys = self.get("/v1/flow-b/keys").await.body;
        let t = &keys["transmission_key"];
        let pk: [u8; 32] = B64
            .decode(t["public_key"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        let sealed = kessai_host::routes::flow_b::seal_funding_credentials(
            &id::<KeyRef>(t["key_ref"].as_str().unwrap()),
            &HpkePublicKey::from_bytes(&pk).unwrap(),
            &id(card),
            Money::new(amount, jpy()),
            &CardNumber::new(pan).unwrap(),
            "3012",
            &Pin::new(pin).unwrap(),
        )
        .unwrap();
        self.post(
            "/v1/flow-b/top-ups",
            json!({"card_id": card, "amount_minor": amount, "currency": "JPY", "credentials": sealed}),
        )
        .await
    }

    async fn balances(&self, account: &str) -> Value {
        let a = self
            .state
            .db
            .ledger()
            .account(&id(account))
            .await
            .unwrap()
            .unwrap();
        json!([
            a.balances.debits_posted,
            a.balances.credits_posted,
            a.balances.debits_pending,
            a.balances.credits_pending
        ])
    }

    /// Everything flow B can change about `card` and the bills it paid.
    async fn snapshot(&self, card: &Card<MemNvm>, orders: &[&str]) -> Value {
        let s = card.snapshot();
        let card_id = s.card_id.to_string();
        let row = kessai_store::cards::card(&self.state.db, &s.card_id)
            .await
            .unwrap()
            .unwrap();
        let mut bills = Vec::new();
        for o in orders {
            bills.push(format!(
                "{:?}",
                kessai_store::flow_b::bill(&self.state.db, "store-1", o)
                    .await
                    .unwrap()
            ));
        }
        let attempts = kessai_store::flow_support::attempts(
            &self.state.db,
            "flow-b/funding-pin/funding.alice",
        )
        .await
        .unwrap();
        json!({
            "card": [s.balance.amount_minor, s.counter],
            "shadow": [row.shadow_balance_minor, row.shadow_counter],
            "pending": kessai_store::flow_b::pending_op(&self.state.db, &card_id).await.unwrap(),
            "emoney": self.balances(&format!("emoney.{card_id}")).await,
            "store": self.balances("payable.store-1").await,
            "shop": self.balances("payable.shop-a").await,
            "funding": self.balances("funding.alice").await,
            "bills": bills,
            "pin": [attempts.failures, attempts.locked],
        })
    }

    async fn assert_consistent(&self, card: &Card<MemNvm>) {
        let s = card.snapshot();
        let row = kessai_store::cards::card(&self.state.db, &s.card_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            row.shadow_balance_minor, s.balance.amount_minor,
            "shadow == card"
        );
        assert_eq!(row.shadow_counter, i64::from(s.counter), "shadow counter");
        assert!(
            kessai_store::flow_b::pending_op(&self.state.db, s.card_id.as_str())
                .await
                .unwrap()
                .is_none(),
            "nothing pending"
        );
        let b = self.balances(&format!("emoney.{}", s.card_id)).await;
        assert_eq!(
            b[1].as_i64().unwrap() - b[0].as_i64().unwrap(),
            s.balance.amount_minor,
            "e-money outstanding == card balance"
        );
        assert_eq!(
            (b[2].as_i64(), b[3].as_i64()),
            (Some(0), Some(0)),
            "no hold left"
        );
        let report = kessai_store::audit::audit(&self.state.db).await.unwrap();
        assert!(report.is_clean(), "auditor findings: {report:?}");
        let links = kessai_store::evidence::audit_links(&self.state.db)
            .await
            .unwrap();
        assert!(links.findings.is_empty(), "evidence findings: {links:?}");
        assert!(links.links > 0);
    }
}

/// How a driven session ends.
#[derive(Debug)]
enum End {
    Paid {
        acn: Vec<u8>,
        recovered: bool,
    },
    ToppedUp(i64),
    Aborted,
    /// The host refused a message.
    Refused(Reply),
    /// Cut where asked.
    Cut,
}

/// Interference with a session, at the purse command (SPC / CREDIT).
#[derive(Debug, Clone, PartialEq, Eq)]
enum At {
    Nothing,
    /// The card's responses to the purse command never reach the host.
    LosePcn,
    /// Send this command to the card instead of the purse command.
    SwapCommand(Vec<u8>),
    /// Give the host this response instead of the card's.
    SwapResponse(Vec<u8>),
    /// Pull the card out before the purse command.
    RemoveCard,
    /// Let the clock pass the session deadline before relaying the
    /// purse response.
    Timeout,
}

struct Run {
    spc: Option<Vec<u8>>,
    pcn: Option<Vec<u8>>,
}

async fn drive(
    h: &H,
    cfg: &WalletConfig,
    mut wallet: WalletSession,
    first: Reply,
    card: &mut Card<MemNvm>,
    at: At,
    run: &mut Run,
) -> End {
    if !first.status.is_success() {
        return End::Refused(first);
    }
    let mut reply: HostToWallet = serde_json::from_value(first.body).unwrap();
    loop {
        let (w, mut action) = wallet.on_host(cfg, &reply, h.now()).unwrap();
        wallet = w;
        if let WalletAction::Confirm(c) = &action {
            assert_eq!(Some(c.amount), wallet.bill().map(|b| b.amount));
            let (w, a) = wallet.confirm().unwrap();
            wallet = w;
            action = a;
        }
        match action {
            WalletAction::ToCard(apdus) => {
                let purse = apdus.len() == 1 && matches!(apdus[0].get(1), Some(0x54 | 0x52));
                let mut responses: Vec<Vec<u8>>;
                if purse {
                    run.spc = Some(apdus[0].clone());
                    responses = match &at {
                        At::SwapCommand(c) => vec![card.transmit(c)],
                        At::RemoveCard => {
                            card.power_off();
                            let r = vec![card.transmit(&apdus[0])];
                            card.power_on();
                            r
                        }
                        _ => apdus.iter().map(|a| card.transmit(a)).collect(),
                    };
                    run.pcn = Some(responses[0].clone());
                    match &at {
                        At::LosePcn => return End::Cut,
                        At::SwapResponse(r) => responses = vec![r.clone()],
                        At::Timeout => h.clock.advance(300_000),
                        _ => {}
                    }
                } else {
                    responses = apdus.iter().map(|a| card.transmit(a)).collect();
                }
                let (w, msg) = wallet.on_card(responses).unwrap();
                wallet = w;
                let r = h.respond(&msg).await;
                if !r.status.is_success() {
                    return End::Refused(r);
                }
                reply = serde_json::from_value(r.body).unwrap();
            }
            WalletAction::Paid(c) => {
                return End::Paid {
                    acn: wallet.completion().unwrap().to_vec(),
                    recovered: c.recovered,
                };
            }
            WalletAction::ToppedUp(s) => return End::ToppedUp(s.balance_minor as i64),
            WalletAction::Aborted(_) => return End::Aborted,
            WalletAction::Confirm(_) => unreachable!(),
        }
    }
}

async fn pay(h: &H, bill: &IssuedBill, card: &mut Card<MemNvm>, at: At) -> (End, Run) {
    let cfg = h.wallet_config().await;
    let card_id = card.snapshot().card_id;
    let wallet = WalletSession::purchase(&cfg, &bill.bytes, card_id.clone(), h.now()).unwrap();
    let first = h.begin(&bill.bytes, card_id.as_str()).await;
    let mut run = Run {
        spc: None,
        pcn: None,
    };
    let end = drive(h, &cfg, wallet, first, card, at, &mut run).await;
    (end, run)
}

async fn top_up(h: &H, card: &mut Card<MemNvm>, amount: i64, at: At) -> End {
    let cfg = h.wallet_config().await;
    let card_id: CardId = card.snapshot().card_id;
    let wallet = WalletSession::top_up(card_id.clone(), Money::new(amount, jpy())).unwrap();
    let first = h
        .top_up_with(card_id.as_str(), amount, FUNDING_PAN, FUNDING_PIN)
        .await;
    let mut run = Run {
        spc: None,
        pcn: None,
    };
    drive(h, &cfg, wallet, first, card, at, &mut run).await
}

/// Store verifies SIG3, issues SIG4; the host verifies and keeps it.
async fn store_receipt(h: &H, store: &Store, bill: &IssuedBill, acn: &[u8]) -> Reply {
    let v = store.verify_completion(bill, acn).unwrap();
    let d = store.issue_receipt(&v, h.now(), &mut rand::rng()).unwrap();
    h.post(
        "/v1/flow-b/receipts",
        json!({"store_id": bill.bill.store_id.to_string(), "order_id": bill.bill.order_id.to_string(),
               "receipt": B64.encode(&d.receipt)}),
    )
    .await
}

/// A card issued and loaded with 20 000 JPY by a top-up.
async fn loaded_card(h: &H, card: &str) -> Card<MemNvm> {
    let mut c = h.issue(card).await;
    match top_up(h, &mut c, 20_000, At::Nothing).await {
        End::ToppedUp(b) => assert_eq!(b, 20_000),
        e => panic!("top-up: {e:?}"),
    }
    c
}

/// Replaces the only occurrence of `from` in `bytes` (a tampering
/// attacker who does not re-sign).
fn replace_once(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let hits: Vec<usize> = (0..=bytes.len() - from.len())
        .filter(|&i| &bytes[i..i + from.len()] == from)
        .collect();
    assert_eq!(hits.len(), 1, "pattern must occur exactly once");
    let mut out = bytes.to_vec();
    out[hits[0]..hits[0] + to.len()].copy_from_slice(to);
    out
}

/// CBOR of 1 234 567 and of 1 234 568 (an amount an attacker changes).
const AMOUNT: i64 = 1_234_567;
const AMOUNT_CBOR: [u8; 5] = [0x1A, 0x00, 0x12, 0xD6, 0x87];
const OTHER_CBOR: [u8; 5] = [0x1A, 0x00, 0x12, 0xD6, 0x88];

// ------------------------------------------------------------------ tests

async fn purchases_at_a_store_and_a_mall_member_store(h: H) {
    let mut card = loaded_card(&h, "card-1").await;
    h.assert_consistent(&card).await;

    let bill = h.bill("order-1", 1_200).await;
    let (end, _) = pay(&h, &bill, &mut card, At::Nothing).await;
    let End::Paid { acn, recovered } = end else {
        panic!("{end:?}")
    };
    assert!(!recovered);
    assert_eq!(card.snapshot().balance.amount_minor, 18_800);
    let r = store_receipt(&h, &h.store().await, &bill, &acn).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["recorded"], true);
    let v = h.get("/v1/flow-b/bills/store-1/order-1").await.body;
    assert_eq!(v["status"], "settled");
    assert_eq!(v["receipts"], 1);
    assert_eq!(B64.decode(v["completion"].as_str().unwrap()).unwrap(), acn);
    assert_eq!(h.balances("payable.store-1").await, json!([0, 1200, 0, 0]));

    // A mall signs for its member store; the member store is credited.
    let mall = h.mall().await;
    let mbill = mall
        .create_bill(
            &id("shop-a"),
            id("m-1"),
            Money::new(800, jpy()),
            [0xCD; 32],
            h.now(),
            &mut rand::rng(),
        )
        .unwrap();
    let (end, _) = pay(&h, &mbill, &mut card, At::Nothing).await;
    let End::Paid { acn, .. } = end else {
        panic!("{end:?}")
    };
    let r = store_receipt(&h, &mall, &mbill, &acn).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(h.balances("payable.shop-a").await, json!([0, 800, 0, 0]));
    assert_eq!(card.snapshot().balance.amount_minor, 18_000);
    h.assert_consistent(&card).await;

    // The evidence of a settlement exports and verifies with the keys.
    let dir = tempfile::tempdir().unwrap();
    let index = kessai_host::evidence_export::export(
        &h.state,
        &[kessai_host::routes::flow_b::bill_subject(
            "store-1", "order-1",
        )],
        dir.path(),
        &[],
    )
    .await
    .unwrap();
    let kinds: Vec<&str> = index.iter().map(|e| e.kind.as_str()).collect();
    for k in [
        "flow-b.bill",
        "flow-b.settlement-info",
        "flow-b.completion",
        "flow-b.receipt",
    ] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }
    for e in index.iter().filter(|e| !e.signer.is_empty()) {
        let pem =
            std::fs::read_to_string(dir.path().join("keys").join(format!("{}.pem", e.signer)))
                .unwrap();
        let key = VerifyingKey::from_public_pem(&pem).unwrap();
        let bytes = std::fs::read(dir.path().join(&e.file)).unwrap();
        cose::verify_sign1_raw(&bytes, &key, &[]).unwrap();
    }
}

async fn tampered_foreign_and_expired_bills_change_nothing(h: H) {
    let mut card = loaded_card(&h, "card-1").await;
    let before = h.snapshot(&card, &["order-1"]).await;
    let bill = h.bill("order-1", AMOUNT).await;
    let amount = replace_once(&bill.bytes, &AMOUNT_CBOR, &OTHER_CBOR);
    let mut from = vec![0x67];
    from.extend_from_slice(b"store-1");
    let mut to = vec![0x67];
    to.extend_from_slice(b"store-2");
    let store = replace_once(&bill.bytes, &from, &to);
    let foreign = Store {
        signing_key: other_key(),
        key_ref: id("store-2#1"),
        ..h.store().await
    }
    .create_bill(
        &id("store-1"),
        id("order-1"),
        Money::new(1_000, jpy()),
        [0; 32],
        h.now(),
        &mut rand::rng(),
    )
    .unwrap();
    for (bytes, problem) in [
        (amount, "urn:kessai:problem:signature-invalid"),
        (store, "urn:kessai:problem:signature-invalid"),
        (foreign.bytes, "urn:kessai:problem:signature-invalid"),
        (
            b"not a bill".to_vec(),
            "urn:kessai:problem:malformed-artefact",
        ),
    ] {
        let r = h.begin(&bytes, "card-1").await;
        assert_eq!(r.problem(), problem, "{}", r.body);
        assert!(r.status.is_client_error());
    }
    h.clock.advance(600_001);
    let r = h.begin(&bill.bytes, "card-1").await;
    assert_eq!(r.problem(), "urn:kessai:problem:bill-expired");
    assert_eq!(h.snapshot(&card, &["order-1"]).await, before);
    // Unknown card.
    let fresh = h.bill("order-2", 100).await;
    let r = h.begin(&fresh.bytes, "card-404").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let (end, _) = pay(&h, &fresh, &mut card, At::Nothing).await;
    assert!(matches!(end, End::Paid { .. }));
    h.assert_consistent(&card).await;
}

async fn a_bill_settles_once_sequentially_and_concurrently(h: H) {
    let mut card1 = loaded_card(&h, "card-1").await;
    let mut card2 = loaded_card(&h, "card-2").await;
    let bill = h.bill("order-1", 1_000).await;
    let (end, _) = pay(&h, &bill, &mut card1, At::Nothing).await;
    assert!(matches!(end, End::Paid { .. }), "{end:?}");
    // Sequentially: a second payment of the paid bill.
    let before = h.snapshot(&card2, &["order-1"]).await;
    let r = h.begin(&bill.bytes, "card-2").await;
    assert_eq!(r.problem(), "urn:kessai:problem:bill-already-settled");
    assert_eq!(h.snapshot(&card2, &["order-1"]).await, before);

    // Concurrently: two cards race one bill up to the SPC.
    let bill = h.bill("order-2", 700).await;
    let cfg = h.wallet_config().await;
    let mut sides = Vec::new();
    for card in [&mut card1, &mut card2] {
        let cid = card.snapshot().card_id;
        let mut w = WalletSession::purchase(&cfg, &bill.bytes, cid.clone(), h.now()).unwrap();
        let mut reply: HostToWallet =
            serde_json::from_value(h.begin(&bill.bytes, cid.as_str()).await.body).unwrap();
        // Handshake (2 steps); stop with the balance response in hand.
        let mut pending = None;
        for _ in 0..3 {
            let (w2, a) = w.on_host(&cfg, &reply, h.now()).unwrap();
            let WalletAction::ToCard(apdus) = a else {
                panic!()
            };
            let rs = apdus.iter().map(|x| card.transmit(x)).collect();
            let (w3, msg) = w2.on_card(rs).unwrap();
            w = w3;
            if pending.is_none() && matches!(reply, HostToWallet::Settlement { .. }) {
                pending = Some(msg);
                break;
            }
            reply = serde_json::from_value(h.respond(&msg).await.body).unwrap();
        }
        sides.push((w, pending.expect("balance response")));
    }
    let (r1, r2) = tokio::join!(h.respond(&sides[0].1), h.respond(&sides[1].1));
    let winners = [&r1, &r2].iter().filter(|r| r.status.is_success()).count();
    assert_eq!(winners, 1, "{} / {}", r1.body, r2.body);
    let loser = if r1.status.is_success() { &r2 } else { &r1 };
    assert_eq!(
        loser.problem(),
        "urn:kessai:problem:bill-in-flight",
        "{}",
        loser.body
    );
    let row = kessai_store::flow_b::bill(&h.state.db, "store-1", "order-2")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.status, "reserved");
    // Finish the winner; the loser's card was never debited.
    let (winner_idx, reply) = if r1.status.is_success() {
        (0, r1)
    } else {
        (1, r2)
    };
    let (w, _) = sides.swap_remove(winner_idx);
    let card = if winner_idx == 0 {
        &mut card1
    } else {
        &mut card2
    };
    let mut run = Run {
        spc: None,
        pcn: None,
    };
    let end = drive(&h, &cfg, w, reply, card, At::Nothing, &mut run).await;
    assert!(matches!(end, End::Paid { .. }), "{end:?}");
    assert_eq!(h.balances("payable.store-1").await, json!([0, 1700, 0, 0]));
    h.assert_consistent(&card1).await;
    h.assert_consistent(&card2).await;
}

async fn tampered_or_foreign_sig2_and_wrong_amount_are_not_forwarded(h: H) {
    let mut card = loaded_card(&h, "card-1").await;
    let bill = h.bill("order-1", 1_000).await;
    let cfg = h.wallet_config().await;
    let cid = card.snapshot().card_id;
    let mut w = WalletSession::purchase(&cfg, &bill.bytes, cid.clone(), h.now()).unwrap();
    let mut reply: HostToWallet =
        serde_json::from_value(h.begin(&bill.bytes, cid.as_str()).await.body).unwrap();
    // Up to the first settlement information.
    while !matches!(reply, HostToWallet::Settlement { .. }) {
        let (w2, a) = w.on_host(&cfg, &reply, h.now()).unwrap();
        let WalletAction::ToCard(apdus) = a else {
            panic!()
        };
        let (w3, msg) = w2
            .on_card(apdus.iter().map(|x| card.transmit(x)).collect())
            .unwrap();
        w = w3;
        reply = serde_json::from_value(h.respond(&msg).await.body).unwrap();
    }
    let HostToWallet::Settlement {
        session_id,
        step,
        info: InfoEnvelope::Signed(signed),
    } = &reply
    else {
        panic!()
    };
    let before = card.snapshot();
    let (host_ref, host_key) = h.state.keys.host_signer().await.unwrap();
    let with = |info: Vec<u8>| HostToWallet::Settlement {
        session_id: *session_id,
        step: *step,
        info: InfoEnvelope::Signed(info),
    };
    // Tampered (signature no longer matches).
    let info: SettlementInformation =
        cose::verify_artefact::<SettlementInformation>(signed, |_| Some(host_key.verifying_key()))
            .unwrap()
            .into_payload();
    let mut flipped = info.command.clone();
    flipped[10] ^= 1;
    let tampered = replace_once(signed, &info.command, &flipped);
    assert!(w.on_host(&cfg, &with(tampered), h.now()).is_err());
    // Signed by an unknown key.
    let unknown =
        cose::sign_artefact(&info, &SigningKey::from_seed(&[9; 32]), &id("host-sign#7")).unwrap();
    assert!(w.on_host(&cfg, &with(unknown), h.now()).is_err());
    // Validly signed, but the amount is not the bill's.
    let mut wrong = info.clone();
    wrong.amount = Money::new(999, jpy());
    let wrong = cose::sign_artefact(&wrong, &host_key, &host_ref).unwrap();
    let e = w.on_host(&cfg, &with(wrong), h.now()).unwrap_err();
    assert_eq!(e, kessai_flow_b::FlowError::AmountMismatch);
    // Nothing reached the card; the genuine message still works.
    assert_eq!(card.snapshot().counter, before.counter);
    assert_eq!(card.snapshot().balance, before.balance);
    let mut run = Run {
        spc: None,
        pcn: None,
    };
    let end = drive(
        &h,
        &cfg,
        w,
        Reply {
            status: StatusCode::OK,
            body: serde_json::to_value(&reply).unwrap(),
        },
        &mut card,
        At::Nothing,
        &mut run,
    )
    .await;
    assert!(matches!(end, End::Paid { .. }), "{end:?}");
    h.assert_consistent(&card).await;
}

async fn replayed_spc_and_pcn_and_foreign_pcn_are_refused(h: H) {
    let mut card = loaded_card(&h, "card-1").await;
    let mut card2 = loaded_card(&h, "card-2").await;
    let (end, first) = pay(&h, &h.bill("order-1", 1_000).await, &mut card, At::Nothing).await;
    assert!(matches!(end, End::Paid { .. }));
    let old_spc = first.spc.unwrap();
    let old_pcn = first.pcn.unwrap();

    // Replayed SPC from the earlier session: the card refuses it, the host
    // refuses the error; the card did not move.
    let before = card.snapshot();
    let (end, _) = pay(
        &h,
        &h.bill("order-2", 500).await,
        &mut card,
        At::SwapCommand(old_spc),
    )
    .await;
    let End::Refused(r) = end else {
        panic!("{end:?}")
    };
    assert!(r.status.is_client_error(), "{}", r.body);
    assert_eq!(card.snapshot().balance, before.balance);
    assert_eq!(card.snapshot().counter, before.counter);
    assert_eq!(
        h.balances("payable.store-1").await,
        json!([0, 1000, 0, 500])
    );

    // Next contact: recovery voids that hold; then a replayed PCN.
    let (end, _) = pay(
        &h,
        &h.bill("order-3", 300).await,
        &mut card,
        At::SwapResponse(old_pcn),
    )
    .await;
    let End::Refused(r) = end else {
        panic!("{end:?}")
    };
    assert_eq!(
        r.problem(),
        "urn:kessai:problem:secure-channel-failed",
        "{}",
        r.body
    );
    // The card did debit (the real PCN was withheld): nothing is posted yet.
    assert_eq!(
        h.balances("payable.store-1").await,
        json!([0, 1000, 0, 300])
    );

    // PCN of another card into this card's session.
    let (_, other) = pay(&h, &h.bill("order-4", 100).await, &mut card2, At::Nothing).await;
    let (end, _) = pay(
        &h,
        &h.bill("order-5", 200).await,
        &mut card,
        At::SwapResponse(other.pcn.unwrap()),
    )
    .await;
    let End::Refused(r) = end else {
        panic!("{end:?}")
    };
    assert!(r.status.is_client_error(), "{}", r.body);

    // The next contact recovers order-3 and order-5 (the card debited
    // both) exactly once.
    let (end, _) = pay(&h, &h.bill("order-6", 50).await, &mut card, At::Nothing).await;
    assert!(matches!(end, End::Paid { .. }), "{end:?}");
    for (o, s) in [
        ("order-2", "open"),
        ("order-3", "settled"),
        ("order-5", "settled"),
    ] {
        let row = kessai_store::flow_b::bill(&h.state.db, "store-1", o)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.status, s, "{o}");
    }
    h.assert_consistent(&card).await;
    h.assert_consistent(&card2).await;
}

async fn recovery_when_the_pcn_is_lost(h: H) {
    let mut card = loaded_card(&h, "card-1").await;
    let bill = h.bill("order-1", 1_500).await;
    let (end, _) = pay(&h, &bill, &mut card, At::LosePcn).await;
    assert!(matches!(end, End::Cut));
    assert_eq!(card.snapshot().balance.amount_minor, 18_500);
    let row = kessai_store::flow_b::bill(&h.state.db, "store-1", "order-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.status, "reserved");
    // The customer retries the same bill: the host reads the card log and
    // completes the lost settlement; the card is not debited again.
    let (end, _) = pay(&h, &bill, &mut card, At::Nothing).await;
    let End::Paid { acn, recovered } = end else {
        panic!("{end:?}")
    };
    assert!(recovered);
    assert_eq!(card.snapshot().balance.amount_minor, 18_500);
    let r = store_receipt(&h, &h.store().await, &bill, &acn).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    h.assert_consistent(&card).await;

    // Lost again, and the next contact is a top-up: recovered there.
    let bill = h.bill("order-2", 500).await;
    let (end, _) = pay(&h, &bill, &mut card, At::LosePcn).await;
    assert!(matches!(end, End::Cut));
    assert!(matches!(
        top_up(&h, &mut card, 1_000, At::Nothing).await,
        End::ToppedUp(19_000)
    ));
    let v = h.get("/v1/flow-b/bills/store-1/order-2").await.body;
    assert_eq!(v["status"], "settled");
    assert_eq!(v["recovered"], true);
    assert_eq!(h.balances("payable.store-1").await, json!([0, 2000, 0, 0]));
    h.assert_consistent(&card).await;
    // The top-up uploaded the card log to the audit store.
    assert!(
        !kessai_store::flow_b::card_log(&h.state.db, "card-1")
            .await
            .unwrap()
            .is_empty()
    );
}

async fn card_removed_mid_session_and_session_timeout(h: H) {
    let mut card = loaded_card(&h, "card-1").await;
    let (end, _) = pay(
        &h,
        &h.bill("order-1", 1_000).await,
        &mut card,
        At::RemoveCard,
    )
    .await;
    let End::Refused(r) = end else {
        panic!("{end:?}")
    };
    assert!(r.status.is_client_error(), "{}", r.body);
    assert_eq!(card.snapshot().balance.amount_minor, 20_000);
    // Timed out after the card debited: refused, resolved at next contact.
    let (end, _) = pay(&h, &h.bill("order-2", 400).await, &mut card, At::Timeout).await;
    let End::Refused(r) = end else {
        panic!("{end:?}")
    };
    assert_eq!(
        r.problem(),
        "urn:kessai:problem:session-timed-out",
        "{}",
        r.body
    );
    // Timed out before anything moved: nothing changes.
    let cfg = h.wallet_config().await;
    let bill = h.bill("order-3", 100).await;
    let w = WalletSession::purchase(&cfg, &bill.bytes, id("card-1"), h.now()).unwrap();
    let first: HostToWallet =
        serde_json::from_value(h.begin(&bill.bytes, "card-1").await.body).unwrap();
    let (w, a) = w.on_host(&cfg, &first, h.now()).unwrap();
    let WalletAction::ToCard(apdus) = a else {
        panic!()
    };
    let (_, msg) = w
        .on_card(apdus.iter().map(|x| card.transmit(x)).collect())
        .unwrap();
    h.clock.advance(300_000);
    let snap = h.snapshot(&card, &["order-3"]).await;
    let r = h.respond(&msg).await;
    assert_eq!(r.problem(), "urn:kessai:problem:session-timed-out");
    assert_eq!(h.snapshot(&card, &["order-3"]).await, snap);
    // Next contact: order-1 voided (card removed), order-2 posted.
    let (end, _) = pay(&h, &h.bill("order-4", 100).await, &mut card, At::Nothing).await;
    assert!(matches!(end, End::Paid { .. }), "{end:?}");
    assert_eq!(card.snapshot().balance.amount_minor, 19_500);
    assert_eq!(h.balances("payable.store-1").await, json!([0, 500, 0, 0]));
    h.assert_consistent(&card).await;
}

async fn receipts_with_a_wrong_signature_are_refused(h: H) {
    let mut card = loaded_card(&h, "card-1").await;
    let bill = h.bill("order-1", 1_000).await;
    let (End::Paid { acn, .. }, _) = pay(&h, &bill, &mut card, At::Nothing).await else {
        panic!()
    };
    let store = h.store().await;
    let v = store.verify_completion(&bill, &acn).unwrap();
    let d = store.issue_receipt(&v, h.now(), &mut rand::rng()).unwrap();
    let forged = Store {
        signing_key: other_key(),
        ..h.store().await
    }
    .issue_receipt(&v, h.now(), &mut rand::rng())
    .unwrap();
    let mut from = vec![0x67];
    from.extend_from_slice(b"store-1");
    let mut to = vec![0x67];
    to.extend_from_slice(b"store-2");
    let tampered = replace_once(&d.receipt, &from, &to);
    for bad in [forged.receipt, tampered] {
        let r = h
            .post(
                "/v1/flow-b/receipts",
                json!({"store_id": "store-1", "order_id": "order-1", "receipt": B64.encode(bad)}),
            )
            .await;
        assert_eq!(
            r.problem(),
            "urn:kessai:problem:signature-invalid",
            "{}",
            r.body
        );
    }
    assert_eq!(
        h.get("/v1/flow-b/bills/store-1/order-1").await.body["receipts"],
        0
    );
    let r = h
        .post(
            "/v1/flow-b/receipts",
            json!({"store_id": "store-1", "order_id": "order-1", "receipt": B64.encode(&d.receipt)}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        h.get("/v1/flow-b/bills/store-1/order-1").await.body["receipts"],
        1
    );
}

async fn top_up_pin_lockout_persists_and_credit_limit_holds(h: H) {
    let card = h.issue("card-1").await;
    let before = h.snapshot(&card, &[]).await;
    // Wrong card number / wrong PIN.
    let r = h
        .top_up_with("card-1", 1_000, "4000056655665556", FUNDING_PIN)
        .await;
    assert_eq!(r.problem(), "urn:kessai:problem:funding-card-refused");
    let r = h.top_up_with("card-1", 1_000, FUNDING_PAN, "0000").await;
    assert_eq!(r.problem(), "urn:kessai:problem:wrong-pin");
    assert_eq!(r.body["detail"], "wrong PIN, 2 tries left");
    let mut after_one = before.clone();
    after_one["pin"] = json!([1, false]);
    assert_eq!(h.snapshot(&card, &[]).await, after_one);
    // Over the credit limit (100 000): refused, no hold.
    let r = h
        .top_up_with("card-1", 100_001, FUNDING_PAN, FUNDING_PIN)
        .await;
    assert_eq!(r.problem(), "urn:kessai:problem:over-credit-limit");
    assert_eq!(
        h.snapshot(&card, &[]).await,
        before,
        "a good PIN resets the counter"
    );
    for pin in ["1111", "2222", "3333"] {
        let r = h.top_up_with("card-1", 1_000, FUNDING_PAN, pin).await;
        assert!(r.status.is_client_error());
    }
    let r = h
        .top_up_with("card-1", 1_000, FUNDING_PAN, FUNDING_PIN)
        .await;
    assert_eq!(r.problem(), "urn:kessai:problem:pin-locked");
    // After a restart the lockout holds.
    let h2 = h.restart().await;
    let r = h2
        .top_up_with("card-1", 1_000, FUNDING_PAN, FUNDING_PIN)
        .await;
    assert_eq!(r.problem(), "urn:kessai:problem:pin-locked");
    assert_eq!(h.balances("funding.alice").await, json!([0, 0, 0, 0]));
    assert!(
        !format!("{}", h.get("/v1/flow-b/keys").await.body).contains(FUNDING_PAN),
        "no card number published"
    );
}

async fn top_up_envelope_bound_to_card_and_amount(h: H) {
    let _card = h.issue("card-1").await;
    let _card2 = h.issue("card-2").await;
    let keys = h.get("/v1/flow-b/keys").await.body;
    let t = &keys["transmission_key"];
    let pk: [u8; 32] = B64
        .decode(t["public_key"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let sealed = kessai_host::routes::flow_b::seal_funding_credentials(
        &id::<KeyRef>(t["key_ref"].as_str().unwrap()),
        &HpkePublicKey::from_bytes(&pk).unwrap(),
        &id("card-1"),
        Money::new(1_000, jpy()),
        &CardNumber::new(FUNDING_PAN).unwrap(),
        "3012",
        &Pin::new(FUNDING_PIN).unwrap(),
    )
    .unwrap();
    for (card, amount) in [("card-2", 1_000), ("card-1", 9_000)] {
        let r = h
            .post(
                "/v1/flow-b/top-ups",
                json!({"card_id": card, "amount_minor": amount, "currency": "JPY", "credentials": sealed}),
            )
            .await;
        assert_eq!(r.problem(), "urn:kessai:problem:credentials-mismatch");
    }
    let mut garbled = B64.decode(&sealed).unwrap();
    let n = garbled.len() - 3;
    garbled[n] ^= 1;
    let r = h
        .post(
            "/v1/flow-b/top-ups",
            json!({"card_id": "card-1", "amount_minor": 1000, "currency": "JPY", "credentials": B64.encode(garbled)}),
        )
        .await;
    assert_eq!(r.problem(), "urn:kessai:problem:credentials-unreadable");
    assert_eq!(h.balances("funding.alice").await, json!([0, 0, 0, 0]));
}

async fn duplicated_step_messages_settle_once(h: H) {
    let mut card = loaded_card(&h, "card-1").await;
    let bill = h.bill("order-1", 1_000).await;
    let cfg = h.wallet_config().await;
    let mut w = WalletSession::purchase(&cfg, &bill.bytes, id("card-1"), h.now()).unwrap();
    let mut reply: HostToWallet =
        serde_json::from_value(h.begin(&bill.bytes, "card-1").await.body).unwrap();
    loop {
        let (w2, mut a) = w.on_host(&cfg, &reply, h.now()).unwrap();
        w = w2;
        if let WalletAction::Confirm(_) = a {
            let (w3, a2) = w.confirm().unwrap();
            w = w3;
            a = a2;
        }
        let WalletAction::ToCard(apdus) = a else {
            assert!(matches!(a, WalletAction::Paid(_)));
            break;
        };
        let (w3, msg) = w
            .on_card(apdus.iter().map(|x| card.transmit(x)).collect())
            .unwrap();
        w = w3;
        // Every step is sent twice at once (a retrying wallet, two host
        // workers): exactly one advances the session.
        let (a, b) = tokio::join!(h.respond(&msg), h.respond(&msg));
        let ok: Vec<&Reply> = [&a, &b]
            .into_iter()
            .filter(|r| r.status.is_success())
            .collect();
        assert!(!ok.is_empty(), "{} / {}", a.body, b.body);
        if ok.len() == 2 {
            // Both succeeded: only possible for the final message (the
            // duplicate gets the same completion back).
            assert_eq!(a.body, b.body);
        }
        reply = serde_json::from_value(ok[0].body.clone()).unwrap();
    }
    assert_eq!(h.balances("payable.store-1").await, json!([0, 1000, 0, 0]));
    h.assert_consistent(&card).await;
}

async fn second_embodiment_omits_sig2(h: H) {
    let h = if h.postgres {
        H::with_sig2(true, Sig2Mode::Omitted).await
    } else {
        H::with_sig2(false, Sig2Mode::Omitted).await
    };
    let mut card = loaded_card(&h, "card-1").await;
    let bill = h.bill("order-1", 1_000).await;
    // A wallet that insists on SIG2 refuses to forward.
    let mut strict = h.wallet_config().await;
    assert_eq!(strict.sig2, Sig2Mode::Omitted);
    strict.sig2 = Sig2Mode::Signed;
    let w = WalletSession::purchase(&strict, &bill.bytes, id("card-1"), h.now()).unwrap();
    let first = h.begin(&bill.bytes, "card-1").await;
    let mut reply: HostToWallet = serde_json::from_value(first.body).unwrap();
    let mut w = w;
    let refused = loop {
        match w.on_host(&strict, &reply, h.now()) {
            Err(e) => break e,
            Ok((w2, WalletAction::ToCard(apdus))) => {
                let (w3, msg) = w2
                    .on_card(apdus.iter().map(|x| card.transmit(x)).collect())
                    .unwrap();
                w = w3;
                reply = serde_json::from_value(h.respond(&msg).await.body).unwrap();
            }
            Ok(other) => panic!("{other:?}"),
        }
    };
    assert_eq!(
        refused,
        kessai_flow_b::FlowError::UnsignedSettlementInformation
    );
    // The matching wallet pays (the abandoned session's nothing-moved
    // state needs no recovery: no SPC was issued).
    h.clock.advance(300_000);
    let bill = h.bill("order-2", 1_000).await;
    let (end, _) = pay(&h, &bill, &mut card, At::Nothing).await;
    let End::Paid { acn, .. } = end else {
        panic!("{end:?}")
    };
    let r = store_receipt(&h, &h.store().await, &bill, &acn).await;
    assert_eq!(r.status, StatusCode::OK);
    h.assert_consistent(&card).await;
}

async fn idempotency_and_admin_auth(h: H) {
    let _card = h.issue("card-1").await;
    let bill = h.bill("order-1", 100).await;
    let body = json!({"bill": B64.encode(&bill.bytes), "card_id": "card-1"});
    let req = |key: &str| {
        Request::post("/v1/flow-b/purchases")
            .header(header::CONTENT_TYPE, "application/json")
            .header("idempotency-key", key)
            .body(Body::from(body.to_string()))
            .unwrap()
    };
    let a = h.send(req("k-1")).await;
    let b = h.send(req("k-1")).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body, b.body, "a replay returns the same session");
    // Admin routes need the token, before the body is read.
    let r = h
        .send(
            Request::post("/v1/flow-b/admin/funding-cards")
                .header(header::CONTENT_TYPE, "application/json")
                .header("idempotency-key", "x")
                .body(Body::from("{}"))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // Unknown fields are refused; a card number sent is never echoed.
    let r = h
        .send(h.request(
            Method::POST,
            "/v1/flow-b/admin/funding-cards",
            true,
            Some(&json!({"cardholder_id": "alice", "pan": "4111111111111112", "expiry_yymm": "3012", "pin": "1234"})),
        ))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(!r.body.to_string().contains("4111111111111112"));
    let openapi = h.get("/openapi.json").await.body;
    for p in [
        "/v1/flow-b/purchases",
        "/v1/flow-b/sessions/{id}/responses",
        "/v1/flow-b/top-ups",
    ] {
        assert!(openapi["paths"][p].is_object(), "{p} missing from OpenAPI");
    }
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test] async fn $name() { super::$name(super::H::new(false).await).await; })*
        }
        mod postgres {
            $(#[tokio::test]
              #[ignore = "needs PostgreSQL: set KESSAI_TEST_POSTGRES_URL and run with --ignored"]
              async fn $name() { super::$name(super::H::new(true).await).await; })*
        }
    };
}

on_both_backends!(
    purchases_at_a_store_and_a_mall_member_store,
    tampered_foreign_and_expired_bills_change_nothing,
    a_bill_settles_once_sequentially_and_concurrently,
    tampered_or_foreign_sig2_and_wrong_amount_are_not_forwarded,
    replayed_spc_and_pcn_and_foreign_pcn_are_refused,
    recovery_when_the_pcn_is_lost,
    card_removed_mid_session_and_session_timeout,
    receipts_with_a_wrong_signature_are_refused,
    top_up_pin_lockout_persists_and_credit_limit_holds,
    top_up_envelope_bound_to_card_and_amount,
    duplicated_step_messages_settle_once,
    second_embodiment_omits_sig2,
    idempotency_and_admin_auth,
);
