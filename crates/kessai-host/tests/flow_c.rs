//! Flow C (card reader plugged into the phone) through the host's HTTP
//! router, in-process, against SQLite (always) and PostgreSQL (`--ignored`
//! with `KESSAI_TEST_POSTGRES_URL`). Merchant terminal, phone and reader are
//! the pure crate's emulators; every byte between them and the host crosses
//! the HTTP API.
//!
//! Every bad input of issue 6 is tried here and followed by a check that
//! nothing changed (ledger balances, PIN counters, transaction state).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use kessai_crypto::sign::SigningKey;
use kessai_flow_c::ArtefactDigest;
use kessai_flow_c::TxnId;
use kessai_flow_c::artefacts::{
    CardData, CustomerRef, Decision, Outcome, Signer, TransactionKey, TrustedKeys, seal_card_data,
    seal_pin_block,
};
use kessai_flow_c::merchant::MerchantTerminal;
use kessai_flow_c::phone::Phone;
use kessai_flow_c::reader::{EmulatedCard, Reader};
use kessai_host::clock::ManualClock;
use kessai_host::routes::flow_c::wire::{self, b64};
use kessai_host::state::AppState;
use kessai_money::Money;
use kessai_secrets::{CardNumber, Pin, SecretKey};
use serde_json::{Value, json};
use tower::ServiceExt as _;

const PAN: &str = "4111111111111111";
const OTHER_PAN: &str = "5500000000000004";
const PIN: &str = "1234";
const PHONE: &str = "+819012345678";

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

impl TestHost {
    async fn new(postgres: bool) -> TestHost {
        let dir = tempfile::tempdir().unwrap();
        let db = if postgres {
            let url = std::env::var("KESSAI_TEST_POSTGRES_URL")
                .expect("KESSAI_TEST_POSTGRES_URL must be set to run the PostgreSQL suite");
            let mut cfg = kessai_store::DbConfig::new(url);
            let mut r = [0u8; 6];
            rand::fill(&mut r);
            cfg.postgres_schema = Some(format!("flowc_test_{}", hex::encode(r)));
            kessai_store::Db::open_with(cfg).await.unwrap()
        } else {
            kessai_store::Db::open(dir.path().to_str().unwrap())
                .await
                .unwrap()
        };
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

    /// A second host process over the same database (a restart, or another
    /// `kessai serve` behind one PostgreSQL).
    async fn restart(&self) -> TestHost {
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

    async fn post(&self, path: &str, body: Value, admin: bool) -> Reply {
        let mut key = [0u8; 12];
        rand::fill(&mut key);
        let mut b = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header("idempotency-key", hex::encode(key))
            .header(header::CONTENT_TYPE, "application/json");
        if admin {
            b = b.header(header::AUTHORIZATION, format!("Bearer {}", self.token));
        }
        self.send(b.body(Body::from(body.to_string())).unwrap())
            .await
    }

    async fn admin_get(&self, path: &str) -> Reply {
        self.send(
            Request::get(path)
                .header(header::AUTHORIZATION, format!("Bearer {}", self.token))
                .body(Body::empty())
                .unwrap(),
        )
        .await
    }

    /// A channel-authenticated GET as `party` signing with `signer`.
    async fn signed_get(&self, path_and_query: &str, party: &str, signer: &Signer) -> Reply {
        let c = self
            .send(
                Request::get("/v1/flow-c/challenge")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(c.status, StatusCode::OK, "{:?}", c.body);
        let challenge = c.body["challenge"].as_str().unwrap().to_owned();
        let path = path_and_query.split('?').next().unwrap();
        let auth =
            wire::sign_channel_auth(&challenge, party, &format!("GET {path}"), signer).unwrap();
        self.send(
            Request::get(path_and_query)
                .header(wire::CHALLENGE_HEADER, challenge)
                .header(wire::AUTH_HEADER, auth)
                .body(Body::empty())
                .unwrap(),
        )
        .await
    }

    async fn host_trust(&self) -> TrustedKeys {
        let (r, k) = self.state.keys.host_signer().await.unwrap();
        TrustedKeys::new([(r, k.verifying_key())])
    }

    async fn account(&self, id: &str) -> Value {
        let r = self.admin_get(&format!("/v1/admin/accounts/{id}")).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        r.body
    }

    async fn balances(&self) -> Value {
        json!({
            "funding": self.account("funding.alice").await,
            "payable": self.account("payable.shop-1").await,
        })
    }

    async fn card(&self) -> Value {
        self.admin_get("/v1/flow-c/admin/cards/card-1").await.body
    }

    async fn destruction_records(&self) -> Vec<Value> {
        kessai_store::audit_log::events(&self.state.db, None)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == kessai_host::routes::flow_c::DESTRUCTION_EVENT)
            .map(|e| serde_json::from_str(&e.detail).unwrap())
            .collect()
    }

    fn now(&self) -> u64 {
        u64::try_from(kessai_host::clock::Clock::now_ms(&self.clock)).unwrap()
    }
}

fn merchant_signer() -> Signer {
    Signer::new(SigningKey::from_seed(&[7; 32]), "shop-1#1".parse().unwrap())
}

fn phone_signer(device: &str, seed: u8) -> Signer {
    Signer::new(
        SigningKey::from_seed(&[seed; 32]),
        format!("{device}#1").parse().unwrap(),
    )
}

/// Merchant shop-1, cardholder alice (10 000 JPY credit line) with phone
/// phone-1 and card card-1 (PIN 1234); cardholder bob with phone-2.
async fn seed(h: &TestHost) {
    let r = h
        .post(
            "/v1/admin/merchants",
            json!({"id": "shop-1", "kind": "store", "name": "Shop One", "currency": "JPY",
                   "public_key": b64(&merchant_signer().verifying_key().to_bytes())}),
            true,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    for (id, name) in [("alice", "Alice"), ("bob", "Bob")] {
        let r = h
            .post(
                "/v1/admin/cardholders",
                json!({"id": id, "name": name, "currency": "JPY", "credit_limit_minor": 10000}),
                true,
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    }
    for (device, number, holder, seed) in [
        ("phone-1", PHONE, "alice", 11u8),
        ("phone-2", "+819087654321", "bob", 12u8),
    ] {
        let r = h
            .post(
                "/v1/flow-c/admin/phones",
                json!({"device_id": device, "phone_number": number, "cardholder_id": holder,
                       "public_key": b64(&phone_signer(device, seed).verifying_key().to_bytes())}),
                true,
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    }
    let r = h
        .post(
            "/v1/flow-c/admin/cards",
            json!({"card_id": "card-1", "cardholder_id": "alice", "pan": PAN,
                   "expiry_yymm": "2912", "pin": PIN}),
            true,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(r.body["masked_pan"], "411111******1111");
    assert!(!r.body.to_string().contains(PAN));
}

/// The three parties around one host.
struct Parties {
    merchant: MerchantTerminal,
    phone: Phone,
    phone_key: Signer,
    reader: Reader,
    cursor: i64,
}

async fn parties(h: &TestHost) -> Parties {
    let trust = h.host_trust().await;
    let phone_key = phone_signer("phone-1", 11);
    let mut reader = Reader::new(trust.clone());
    reader.insert_card(
        EmulatedCard::new(CardNumber::new(PAN).unwrap(), "2912", "TARO YAMADA").unwrap(),
    );
    Parties {
        merchant: MerchantTerminal::new(
            "shop-1".parse().unwrap(),
            merchant_signer(),
            trust.clone(),
        ),
        phone: Phone::new("phone-1".parse().unwrap(), phone_key.clone(), trust, 30_000),
        phone_key,
        reader,
        cursor: 0,
    }
}

fn jpy(n: i64) -> Money {
    format!("{n} JPY").parse().unwrap()
}

impl Parties {
    fn request(&mut self, h: &TestHost, order: &str, amount: i64) -> Vec<u8> {
        let mut rng = rand::rng();
        self.merchant
            .payment_request(
                CustomerRef::phone(PHONE).unwrap(),
                jpy(amount),
                order.parse().unwrap(),
                h.now(),
                600_000,
                &mut rng,
            )
            .unwrap()
    }

    /// Polls the phone's channel; returns the new (kind, artefact) pairs.
    async fn poll(&mut self, h: &TestHost) -> Vec<(String, Vec<u8>)> {
        let r = h
            .signed_get(
                &format!("/v1/flow-c/phones/phone-1/messages?after={}", self.cursor),
                "phone:phone-1",
                &self.phone_key,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        self.cursor = r.body["last_seq"].as_i64().unwrap();
        r.body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["kind"].as_str().unwrap().to_owned(),
                    wire::unb64(m["artefact"].as_str().unwrap(), "a").unwrap(),
                )
            })
            .collect()
    }

    async fn expect(&mut self, h: &TestHost, kind: &str) -> Vec<u8> {
        let msgs = self.poll(h).await;
        let kinds: Vec<&str> = msgs.iter().map(|m| m.0.as_str()).collect();
        assert_eq!(kinds, [kind], "expected one {kind}");
        assert_eq!(msgs[0].0, kind);
        msgs[0].1.clone()
    }

    /// Merchant request → approval request on the phone. Returns the txn id.
    async fn open(&mut self, h: &TestHost, order: &str, amount: i64) -> String {
        let req = self.request(h, order, amount);
        let r = h
            .post(
                "/v1/flow-c/payment-requests",
                json!({"payment_request": b64(&req)}),
                false,
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        assert_eq!(r.body["state"], "awaiting_approval");
        let bytes = self.expect(h, "approval_request").await;
        self.phone
            .receive_approval_request(&bytes, h.now())
            .unwrap();
        r.body["txn_id"].as_str().unwrap().to_owned()
    }

    async fn approve(&mut self, h: &TestHost, txn: &str) -> Reply {
        let answer = self.phone.answer(Decision::Approve).unwrap();
        h.post(
            &format!("/v1/flow-c/transactions/{txn}/approval"),
            json!({"approval_response": b64(&answer)}),
            false,
        )
        .await
    }

    /// Approve → key to the reader → card data posted.
    async fn through_card(&mut self, h: &TestHost, txn: &str) -> (Vec<u8>, Reply) {
        let r = self.approve(h, txn).await;
        assert_eq!(r.body["state"], "awaiting_card_data", "{:?}", r.body);
        let key = self.expect(h, "transaction_key").await;
        let key = self.phone.relay_transaction_key(&key).unwrap();
        self.reader.load_transaction_key(&key).unwrap();
        let sealed = {
            let mut rng = rand::rng();
            self.reader.read_card(&mut rng).unwrap()
        };
        let r = post_card(h, txn, &sealed).await;
        (sealed, r)
    }

    /// PIN prompt → reader → sealed PIN block posted.
    async fn pin(&mut self, h: &TestHost, txn: &str, pin: &str) -> (Vec<u8>, Reply) {
        let prompt = self.expect(h, "pin_prompt").await;
        let prompt = self.phone.relay_pin_prompt(&prompt).unwrap();
        self.reader.type_pin(pin);
        let sealed = {
            let mut rng = rand::rng();
            self.reader.handle_pin_prompt(&prompt, &mut rng).unwrap()
        };
        let r = post_pin(h, txn, &sealed).await;
        (sealed, r)
    }

    /// The completion on the phone and the reader.
    async fn completion(&mut self, h: &TestHost) -> Outcome {
        let c = self.expect(h, "completion").await;
        let outcome = self.phone.receive_completion(&c).unwrap();
        if self.reader.has_transaction_key() {
            assert_eq!(self.reader.handle_completion(&c).unwrap(), outcome);
            assert!(!self.reader.has_transaction_key());
        }
        outcome
    }

    async fn merchant_view(&self, h: &TestHost, txn: &str) -> Value {
        let r = h
            .signed_get(
                &format!("/v1/flow-c/merchants/shop-1/transactions/{txn}"),
                "merchant:shop-1",
                &merchant_signer(),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        r.body
    }
}

async fn post_card(h: &TestHost, txn: &str, sealed: &[u8]) -> Reply {
    h.post(
        &format!("/v1/flow-c/transactions/{txn}/card-data"),
        json!({"sealed_card_data": b64(sealed)}),
        false,
    )
    .await
}

async fn post_pin(h: &TestHost, txn: &str, sealed: &[u8]) -> Reply {
    h.post(
        &format!("/v1/flow-c/transactions/{txn}/pin-block"),
        json!({"sealed_pin_block": b64(sealed)}),
        false,
    )
    .await
}

async fn txn_key_exists(h: &TestHost, txn: &str) -> bool {
    let t: TxnId = txn.parse().unwrap();
    kessai_store::flow_c::txn_key(&h.state.db, &t.transaction_key_ref().to_string())
        .await
        .unwrap()
        .is_some()
}

// ------------------------------------------------------------------ tests

async fn approved_purchase_settles_and_destroys(h: TestHost) {
    seed(&h).await;
    let mut p = parties(&h).await;
    let before = h.balances().await;
    let txn = p.open(&h, "order-1", 1200).await;
    let (card_ct, r) = p.through_card(&h, &txn).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["state"], "awaiting_pin");
    assert!(txn_key_exists(&h, &txn).await, "key stored while in use");
    let (pin_ct, r) = p.pin(&h, &txn, PIN).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["state"], "settled");
    assert!(matches!(p.completion(&h).await, Outcome::Settled { .. }));

    // Money moved once: funding.alice → payable.shop-1.
    let after = h.balances().await;
    assert_eq!(
        after["funding"]["debits_posted"].as_i64().unwrap()
            - before["funding"]["debits_posted"].as_i64().unwrap(),
        1200
    );
    assert_eq!(
        after["payable"]["credits_posted"].as_i64().unwrap()
            - before["payable"]["credits_posted"].as_i64().unwrap(),
        1200
    );
    // Merchant: signed completion with the masked PAN only.
    let v = p.merchant_view(&h, &txn).await;
    assert_eq!(v["state"], "settled");
    let completion = wire::unb64(v["completion"].as_str().unwrap(), "c").unwrap();
    let done = p.merchant.verify_completion(&completion).unwrap();
    assert_eq!(done.masked_pan.as_deref(), Some("411111******1111"));
    assert!(!v.to_string().contains(PAN));
    // Key destroyed, with an audit record naming key and ciphertexts.
    assert!(!txn_key_exists(&h, &txn).await);
    let records = h.destruction_records().await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["txn_id"], txn);
    let kinds: Vec<&str> = records[0]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["kind"].as_str().unwrap())
        .collect();
    for k in [
        "transaction_key_pair",
        "sealed_card_data",
        "card_data_plaintext",
        "sealed_pin_block",
        "pin_plaintext",
    ] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }
    // Ciphertexts purged from the evidence store; signed artefacts kept.
    let t: TxnId = txn.parse().unwrap();
    let ev = kessai_store::evidence::by_subject(
        &h.state.db,
        &kessai_host::routes::flow_c::evidence_subject(&t),
    )
    .await
    .unwrap();
    for e in &ev {
        let sealed = e.kind == "flowc-card-data" || e.kind == "flowc-pin-block";
        assert_eq!(e.purged_at_ms.is_some(), sealed, "{}", e.kind);
    }
    for k in [
        "flowc-payment-request",
        "flowc-approval-request",
        "flowc-approval-response",
        "flowc-transaction-key",
        "flowc-pin-prompt",
        "flowc-completion-phone",
        "flowc-completion-merchant",
    ] {
        assert!(ev.iter().any(|e| e.kind == k), "{k} not kept");
    }

    // Replays after completion: refused, nothing moves.
    let r = post_card(&h, &txn, &card_ct).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    assert_eq!(r.slug(), "ciphertext-replayed");
    let r = post_pin(&h, &txn, &pin_ct).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    // ... and in a later transaction.
    let txn2 = p.open(&h, "order-2", 500).await;
    let r = p.approve(&h, &txn2).await;
    assert_eq!(r.body["state"], "awaiting_card_data");
    let r = post_card(&h, &txn2, &card_ct).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    assert_eq!(h.balances().await, after);
    let v = p.merchant_view(&h, &txn2).await;
    assert_eq!(v["state"], "awaiting_card_data");

    // The channel auth is single-use and bound to its party.
    let c = h
        .send(
            Request::get("/v1/flow-c/challenge")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    let challenge = c.body["challenge"].as_str().unwrap().to_owned();
    let path = "/v1/flow-c/phones/phone-1/messages";
    let auth = wire::sign_channel_auth(
        &challenge,
        "phone:phone-1",
        &format!("GET {path}"),
        &p.phone_key,
    )
    .unwrap();
    let get = |a: &str| {
        Request::get(path)
            .header(wire::CHALLENGE_HEADER, &challenge)
            .header(wire::AUTH_HEADER, a)
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(h.send(get(&auth)).await.status, StatusCode::OK);
    assert_eq!(h.send(get(&auth)).await.status, StatusCode::UNAUTHORIZED);
    let other = phone_signer("phone-2", 12);
    let forged =
        wire::sign_channel_auth(&challenge, "phone:phone-1", &format!("GET {path}"), &other)
            .unwrap();
    assert_eq!(h.send(get(&forged)).await.status, StatusCode::UNAUTHORIZED);
    assert!(
        kessai_store::audit::audit(&h.state.db)
            .await
            .unwrap()
            .is_clean()
    );
}

async fn merchant_side_bad_input(h: TestHost) {
    seed(&h).await;
    let mut p = parties(&h).await;
    let before = h.balances().await;
    let send = |req: Vec<u8>| {
        let h = &h;
        async move {
            h.post(
                "/v1/flow-c/payment-requests",
                json!({"payment_request": b64(&req)}),
                false,
            )
            .await
        }
    };
    let trust = h.host_trust().await;
    // Unknown merchant (S9).
    let mut stranger = MerchantTerminal::new(
        "shop-9".parse().unwrap(),
        Signer::new(SigningKey::from_seed(&[9; 32]), "shop-9#1".parse().unwrap()),
        trust.clone(),
    );
    let mut rng = rand::rng();
    let req = stranger
        .payment_request(
            CustomerRef::phone(PHONE).unwrap(),
            jpy(100),
            "o-1".parse().unwrap(),
            h.now(),
            60_000,
            &mut rng,
        )
        .unwrap();
    let r = send(req).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    assert_eq!(r.slug(), "merchant-declined");
    // Forged: shop-1's key ref, another key.
    let mut forger = MerchantTerminal::new(
        "shop-1".parse().unwrap(),
        Signer::new(SigningKey::from_seed(&[8; 32]), "shop-1#1".parse().unwrap()),
        trust.clone(),
    );
    let req = forger
        .payment_request(
            CustomerRef::phone(PHONE).unwrap(),
            jpy(100),
            "o-2".parse().unwrap(),
            h.now(),
            60_000,
            &mut rng,
        )
        .unwrap();
    let r = send(req).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    assert_eq!(r.slug(), "artefact-refused");
    // Unsigned: not COSE at all.
    let r = send(b"{\"amount\": 100}".to_vec()).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    // Unknown customer phone.
    let req = p
        .merchant
        .payment_request(
            CustomerRef::phone("+10000000000").unwrap(),
            jpy(100),
            "o-3".parse().unwrap(),
            h.now(),
            60_000,
            &mut rng,
        )
        .unwrap();
    let r = send(req).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{:?}", r.body);
    assert_eq!(r.slug(), "unknown-customer");
    // Nothing queued for the phone by any of these.
    assert!(p.poll(&h).await.is_empty());

    // Duplicate order reference: same content → same transaction (200),
    // other content → conflict.
    let first = p.request(&h, "order-9", 700);
    let r = send(first.clone()).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let txn = r.body["txn_id"].as_str().unwrap().to_owned();
    let again = p.request(&h, "order-9", 700);
    let r = send(again).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["txn_id"], txn);
    let other = p.request(&h, "order-9", 701);
    let r = send(other).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    assert_eq!(r.slug(), "order-reference-conflict");
    assert_eq!(p.poll(&h).await.len(), 1, "one approval request only");

    // Suspended merchant → declined (S9), nothing else happens.
    let r = h
        .post(
            "/v1/admin/merchants/shop-1/status",
            json!({"status": "suspended"}),
            true,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = send(p.request(&h, "order-10", 100)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.slug(), "merchant-declined");
    assert!(p.poll(&h).await.is_empty());
    assert_eq!(h.balances().await, before);
    // The merchant's view needs the merchant's own signature.
    let r = h
        .signed_get(
            &format!("/v1/flow-c/merchants/shop-1/transactions/{txn}"),
            "merchant:shop-1",
            &phone_signer("phone-1", 11),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

async fn phone_and_reader_bad_input(h: TestHost) {
    seed(&h).await;
    let mut p = parties(&h).await;
    let before = h.balances().await;
    let txn = p.open(&h, "order-1", 1200).await;

    // Approval signed by another phone's key.
    let mut intruder = Phone::new(
        "phone-2".parse().unwrap(),
        phone_signer("phone-2", 12),
        h.host_trust().await,
        30_000,
    );
    let t: TxnId = txn.parse().unwrap();
    let r = p.merchant_view(&h, &txn).await;
    assert_eq!(r["state"], "awaiting_approval");
    // phone-2 cannot even take the prompt (addressed to phone-1): sign a
    // response with its key over phone-1's request instead.
    let msgs = kessai_store::flow_c::messages_for_txn(&h.state.db, "phone:phone-1", &txn)
        .await
        .unwrap();
    assert!(
        intruder
            .receive_approval_request(&msgs[0].artefact, h.now())
            .is_err()
    );
    let forged = phone_signer("phone-2", 12)
        .sign(&kessai_flow_c::artefacts::ApprovalResponse {
            txn_id: t,
            device_id: "phone-1".parse().unwrap(),
            decision: Decision::Approve,
            approval_request: ArtefactDigest::of(&msgs[0].artefact),
        })
        .unwrap();
    let r = h
        .post(
            &format!("/v1/flow-c/transactions/{txn}/approval"),
            json!({"approval_response": b64(&forged)}),
            false,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    assert_eq!(r.slug(), "wrong-phone");
    assert_eq!(
        p.merchant_view(&h, &txn).await["state"],
        "awaiting_approval"
    );

    // Approve properly; the key arrives.
    let r = p.approve(&h, &txn).await;
    assert_eq!(r.body["state"], "awaiting_card_data");
    let key_bytes = p.expect(&h, "transaction_key").await;
    // A public key not signed by the host: the reader refuses it.
    let (key, _) = h
        .host_trust()
        .await
        .verify::<TransactionKey>(&key_bytes, "k")
        .unwrap();
    let fake = Signer::new(
        SigningKey::from_seed(&[66; 32]),
        "host-sign#1".parse().unwrap(),
    )
    .sign(&key)
    .unwrap();
    assert!(p.reader.load_transaction_key(&fake).is_err());
    assert!(p.phone.relay_transaction_key(&fake).is_err());
    p.reader
        .load_transaction_key(&p.phone.relay_transaction_key(&key_bytes).unwrap())
        .unwrap();
    let sealed = {
        let mut rng = rand::rng();
        p.reader.read_card(&mut rng).unwrap()
    };
    // Tampered card-data ciphertext.
    let mut tampered = sealed.clone();
    let n = tampered.len();
    tampered[n - 3] ^= 0x40;
    let r = post_card(&h, &txn, &tampered).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    assert_eq!(r.slug(), "artefact-refused");
    // Card data sealed for another transaction.
    let r = post_card(&h, &"00".repeat(16), &sealed).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let txn_b = {
        let mut q = parties(&h).await;
        q.cursor = p.cursor;
        let id = q.open(&h, "order-2", 300).await;
        p.cursor = q.cursor;
        id
    };
    let r = post_card(&h, &txn_b, &sealed).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    assert_eq!(r.slug(), "unexpected-step");
    assert_eq!(
        p.merchant_view(&h, &txn).await["state"],
        "awaiting_card_data"
    );
    assert_eq!(h.balances().await, before);

    // The genuine card data is accepted once.
    let r = post_card(&h, &txn, &sealed).await;
    assert_eq!(r.body["state"], "awaiting_pin", "{:?}", r.body);

    // A PIN block the host cannot decipher for this card (wrong PIN key,
    // another PAN) counts as a wrong try; see also
    // `pin_block_bound_to_another_pan`.
    let prompt = p.expect(&h, "pin_prompt").await;
    let prompt = p.phone.relay_pin_prompt(&prompt).unwrap();
    let (key, _) = h
        .host_trust()
        .await
        .verify::<TransactionKey>(&key_bytes, "k")
        .unwrap();
    let (prompt_v, prompt_digest) = h
        .host_trust()
        .await
        .verify::<kessai_flow_c::artefacts::PinPrompt>(&prompt, "p")
        .unwrap();
    assert_eq!(prompt_v.card_data, ArtefactDigest::of(&sealed));
    let wrong_key_block = kessai_pin::encipher_pin_block(
        &Pin::new(PIN).unwrap(),
        &CardNumber::new(OTHER_PAN).unwrap(),
        &kessai_pin::PinKey::Aes128(SecretKey::new([1; 16])),
        &mut rand::rng(),
    );
    let sealed_other = seal_pin_block(
        &wrong_key_block,
        &key,
        &ArtefactDigest::of(&sealed),
        &prompt_digest,
        &mut rand::rng(),
    )
    .unwrap();
    let r = post_pin(&h, &txn, &sealed_other).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["state"], "declined");
    assert_eq!(r.body["decline_reason"], "cardholder_not_verified");
    assert_eq!(h.card().await["pin_failures"], 1);
    assert_eq!(h.balances().await, before);
    assert!(!txn_key_exists(&h, &txn).await);
    assert_eq!(h.destruction_records().await.len(), 1);
}

async fn pin_counter_locks_and_persists(h: TestHost) {
    seed(&h).await;
    let mut p = parties(&h).await;
    let before = h.balances().await;
    for (i, expected) in [(1, 1), (2, 2)] {
        let txn = p.open(&h, &format!("order-{i}"), 100).await;
        let (_, r) = p.through_card(&h, &txn).await;
        assert_eq!(r.body["state"], "awaiting_pin");
        let (_, r) = p.pin(&h, &txn, "9999").await;
        assert_eq!(r.body["state"], "declined", "{:?}", r.body);
        assert!(matches!(p.completion(&h).await, Outcome::Declined { .. }));
        assert_eq!(h.card().await["pin_failures"], expected);
    }
    // A restarted (or second) host process sees the same counter.
    let h2 = h.restart().await;
    assert_eq!(h2.card().await["pin_failures"], 2);
    let txn = p.open(&h2, "order-3", 100).await;
    let (_, r) = p.through_card(&h2, &txn).await;
    assert_eq!(r.body["state"], "awaiting_pin");
    let (_, r) = p.pin(&h2, &txn, "0000").await;
    assert_eq!(r.body["state"], "declined");
    let card = h.card().await;
    assert_eq!(card["pin_failures"], 3);
    assert_eq!(card["pin_locked"], true);
    p.completion(&h).await;
    // Locked: even the right PIN is refused now, on either process.
    let txn = p.open(&h, "order-4", 100).await;
    let (_, r) = p.through_card(&h, &txn).await;
    assert_eq!(r.body["state"], "declined", "{:?}", r.body);
    p.completion(&h).await;
    assert_eq!(h.balances().await, before);
    assert_eq!(h.destruction_records().await.len(), 4);
    // The issuer lifts the lockout; the right PIN settles.
    let r = h
        .post("/v1/flow-c/admin/cards/card-1/pin-reset", json!({}), true)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let txn = p.open(&h, "order-5", 100).await;
    let (_, r) = p.through_card(&h, &txn).await;
    assert_eq!(r.body["state"], "awaiting_pin");
    let (_, r) = p.pin(&h, &txn, PIN).await;
    assert_eq!(r.body["state"], "settled");
    // Admin calls need the token.
    let r = h
        .post("/v1/flow-c/admin/cards/card-1/pin-reset", json!({}), false)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

async fn timeouts_reject_unknown_card_and_limit(h: TestHost) {
    seed(&h).await;
    let mut p = parties(&h).await;
    let before = h.balances().await;
    let cfg = h.state.settings.flow_c.host;

    // Cardholder rejects on the phone.
    let txn = p.open(&h, "order-r", 100).await;
    let answer = p.phone.answer(Decision::Reject).unwrap();
    let r = h
        .post(
            &format!("/v1/flow-c/transactions/{txn}/approval"),
            json!({"approval_response": b64(&answer)}),
            false,
        )
        .await;
    assert_eq!(r.body["state"], "declined", "{:?}", r.body);
    assert_eq!(r.body["decline_reason"], "rejected");
    p.completion(&h).await;

    // No answer in time (S5): the sweeper declines; a late approval is
    // refused.
    let txn = p.open(&h, "order-t", 100).await;
    h.clock
        .advance(i64::try_from(cfg.approval_timeout_ms).unwrap());
    let late = p.phone.answer(Decision::Approve).unwrap();
    let r = h
        .post(
            &format!("/v1/flow-c/transactions/{txn}/approval"),
            json!({"approval_response": b64(&late)}),
            false,
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    assert_eq!(r.slug(), "transaction-ended");
    assert_eq!(
        p.merchant_view(&h, &txn).await["decline_reason"],
        "approval_timeout"
    );
    p.completion(&h).await;

    // No card data in time (S8): the key is destroyed.
    let txn = p.open(&h, "order-c", 100).await;
    let r = p.approve(&h, &txn).await;
    assert_eq!(r.body["state"], "awaiting_card_data");
    let key = p.expect(&h, "transaction_key").await;
    p.reader.load_transaction_key(&key).unwrap();
    h.clock
        .advance(i64::try_from(cfg.card_data_timeout_ms).unwrap());
    let sealed = p.reader.read_card(&mut rand::rng()).unwrap();
    let r = post_card(&h, &txn, &sealed).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    assert!(!txn_key_exists(&h, &txn).await);
    assert_eq!(
        p.merchant_view(&h, &txn).await["decline_reason"],
        "card_data_timeout"
    );
    p.completion(&h).await;

    // No PIN in time (S17), found by the step itself (no sweep first: a
    // direct HTTP call at the deadline).
    let txn = p.open(&h, "order-p", 100).await;
    let (_, r) = p.through_card(&h, &txn).await;
    assert_eq!(r.body["state"], "awaiting_pin");
    h.clock.advance(i64::try_from(cfg.pin_timeout_ms).unwrap());
    let report = kessai_host::routes::flow_c::sweep_timeouts(&h.state)
        .await
        .unwrap();
    assert_eq!(report.timed_out, 1);
    assert_eq!(
        p.merchant_view(&h, &txn).await["decline_reason"],
        "pin_timeout"
    );
    assert!(!txn_key_exists(&h, &txn).await);
    let _ = p.poll(&h).await;
    p.reader = Reader::new(h.host_trust().await);
    p.reader.insert_card(
        EmulatedCard::new(CardNumber::new(PAN).unwrap(), "2912", "TARO YAMADA").unwrap(),
    );

    // Unknown card (S15 N → S27): declined to both, key destroyed.
    let txn = p.open(&h, "order-u", 100).await;
    p.reader.insert_card(
        EmulatedCard::new(CardNumber::new(OTHER_PAN).unwrap(), "2912", "HANAKO").unwrap(),
    );
    let (_, r) = p.through_card(&h, &txn).await;
    assert_eq!(r.body["state"], "declined", "{:?}", r.body);
    assert_eq!(r.body["decline_reason"], "card_refused");
    p.completion(&h).await;
    assert!(!txn_key_exists(&h, &txn).await);

    // Over the credit limit (10 000 JPY): declined, nothing moves.
    p.reader.insert_card(
        EmulatedCard::new(CardNumber::new(PAN).unwrap(), "2912", "TARO YAMADA").unwrap(),
    );
    let txn = p.open(&h, "order-big", 10_001).await;
    let (_, r) = p.through_card(&h, &txn).await;
    assert_eq!(r.body["state"], "awaiting_pin");
    let (_, r) = p.pin(&h, &txn, PIN).await;
    assert_eq!(r.body["state"], "declined", "{:?}", r.body);
    assert_eq!(r.body["decline_reason"], "insufficient_credit");
    p.completion(&h).await;

    assert_eq!(h.balances().await, before);
    // One destruction record per finished transaction (6 of them).
    assert_eq!(h.destruction_records().await.len(), 6);
    assert_eq!(h.card().await["pin_failures"], 0);
    assert!(
        kessai_store::audit::audit(&h.state.db)
            .await
            .unwrap()
            .is_clean()
    );
}

/// Card data sealed by hand (not through the reader) with a known PIN key,
/// to show a block for another PAN is refused as a PIN failure.
async fn pin_block_bound_to_another_pan(h: TestHost) {
    seed(&h).await;
    let mut p = parties(&h).await;
    let txn = p.open(&h, "order-1", 100).await;
    let r = p.approve(&h, &txn).await;
    assert_eq!(r.body["state"], "awaiting_card_data");
    let key_bytes = p.expect(&h, "transaction_key").await;
    let (key, key_digest) = h
        .host_trust()
        .await
        .verify::<TransactionKey>(&key_bytes, "k")
        .unwrap();
    let pin_key = SecretKey::new([5; 16]);
    let data = CardData::new(
        CardNumber::new(PAN).unwrap(),
        "2912",
        "TARO YAMADA",
        pin_key.clone(),
    )
    .unwrap();
    let sealed = seal_card_data(&data, &key, &key_digest, &mut rand::rng()).unwrap();
    let r = post_card(&h, &txn, &sealed).await;
    assert_eq!(r.body["state"], "awaiting_pin", "{:?}", r.body);
    let prompt = p.expect(&h, "pin_prompt").await;
    let (_, prompt_digest) = h
        .host_trust()
        .await
        .verify::<kessai_flow_c::artefacts::PinPrompt>(&prompt, "p")
        .unwrap();
    // Right PIN, right PIN key, but the format-4 block is bound to OTHER_PAN.
    let block = kessai_pin::encipher_pin_block(
        &Pin::new(PIN).unwrap(),
        &CardNumber::new(OTHER_PAN).unwrap(),
        &kessai_pin::PinKey::Aes128(pin_key),
        &mut rand::rng(),
    );
    let ct = seal_pin_block(
        &block,
        &key,
        &ArtefactDigest::of(&sealed),
        &prompt_digest,
        &mut rand::rng(),
    )
    .unwrap();
    let before = h.balances().await;
    let r = post_pin(&h, &txn, &ct).await;
    assert_eq!(r.body["state"], "declined", "{:?}", r.body);
    assert_eq!(r.body["decline_reason"], "cardholder_not_verified");
    assert_eq!(h.card().await["pin_failures"], 1);
    assert_eq!(h.balances().await, before);
}

/// Nothing in the database holds the clear PAN or PIN (or the PAN's digits
/// in any column), after a settled and a declined transaction.
async fn no_clear_card_data_in_the_database(h: TestHost) {
    seed(&h).await;
    let mut p = parties(&h).await;
    let txn = p.open(&h, "order-1", 100).await;
    let _ = p.through_card(&h, &txn).await;
    let (_, r) = p.pin(&h, &txn, PIN).await;
    assert_eq!(r.body["state"], "settled");
    p.completion(&h).await;
    let txn = p.open(&h, "order-2", 100).await;
    let _ = p.through_card(&h, &txn).await;
    let (_, r) = p.pin(&h, &txn, "9876").await;
    assert_eq!(r.body["state"], "declined");
    if let Some(path) = h.state.db.sqlite_path() {
        h.state.db.close().await;
        let mut bytes = Vec::new();
        for suffix in ["", "-wal", "-shm"] {
            let f = std::path::PathBuf::from(format!("{}{suffix}", path.display()));
            if let Ok(b) = std::fs::read(&f) {
                bytes.extend(b);
            }
        }
        assert!(!bytes.is_empty());
        let hay = String::from_utf8_lossy(&bytes);
        assert!(!hay.contains(PAN), "clear PAN in the SQLite files");
        assert!(!hay.contains("9876"), "wrong PIN in the SQLite files");
        assert!(
            !hay.contains("TARO YAMADA"),
            "cardholder name in the SQLite files"
        );
    } else {
        // PostgreSQL: scan every text and blob column of the flow's and the
        // shared tables.
        for (table, cols) in [
            (
                "flowc_cards",
                "card_id || masked_pan || expiry_yymm || encode(pan_index, 'hex') || encode(pin_verification, 'hex')",
            ),
            ("flow_sessions", "state"),
            ("flowc_messages", "encode(artefact, 'escape')"),
            ("audit_log", "detail"),
            ("evidence", "encode(bytes, 'escape')"),
        ] {
            let kessai_store::DbPool::Postgres(pool) = h.state.db.pool() else {
                unreachable!()
            };
            let sql = format!("SELECT COUNT(*) FROM {table} WHERE ({cols}) LIKE '%{PAN}%'");
            let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .fetch_one(pool)
                .await
                .unwrap();
            assert_eq!(n, 0, "clear PAN in {table}");
        }
    }
}

async fn openapi_lists_flow_c(h: TestHost) {
    let r = h
        .send(Request::get("/openapi.json").body(Body::empty()).unwrap())
        .await;
    for path in [
        "/v1/flow-c/payment-requests",
        "/v1/flow-c/phones/{device}/messages",
        "/v1/flow-c/transactions/{txn}/pin-block",
        "/v1/flow-c/admin/cards",
    ] {
        assert!(r.body["paths"][path].is_object(), "{path} missing");
    }
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test] async fn $name() { super::$name(super::TestHost::new(false).await).await; })*
        }
        mod postgres {
            $(#[tokio::test]
              #[ignore = "needs PostgreSQL: set KESSAI_TEST_POSTGRES_URL and run with --ignored"]
              async fn $name() { super::$name(super::TestHost::new(true).await).await; })*
        }
    };
}

on_both_backends!(
    approved_purchase_settles_and_destroys,
    merchant_side_bad_input,
    phone_and_reader_bad_input,
    pin_counter_locks_and_persists,
    timeouts_reject_unknown_card_and_limit,
    pin_block_bound_to_another_pan,
    no_clear_card_data_in_the_database,
    openapi_lists_flow_c,
);
