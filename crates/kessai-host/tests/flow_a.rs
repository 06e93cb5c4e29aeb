//! Flow A over the host's HTTP API, in-process, against SQLite (always)
//! and PostgreSQL (`--ignored`, with `KESSAI_TEST_POSTGRES_URL`): a device
//! (the flow crate's `DeviceState` with a fingerprint-reader test double)
//! enrols with an enrolment code, buys, the issuer rotates keys, the device
//! updates, and retention purges; then every bad input of issue 5 that
//! crosses HTTP, each followed by a check that nothing changed (ledger
//! balances, device counter, evidence) and that the auditor is clean.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine as _;
use kessai_crypto::cose;
use kessai_crypto::sign::SigningKey;
use kessai_flow_a::artefacts::{KeyUpdate, OrderInformation, TransactionData};
use kessai_flow_a::device::{DeviceSecrets, DeviceState, LockState};
use kessai_flow_a::{
    EnrolmentCode, FingerprintReader, FlowAError, IssuerAnchor, MasterReading, MatchOutcome,
    ReaderError, Template, merchant,
};
use kessai_host::clock::ManualClock;
use kessai_host::state::AppState;
use kessai_ids::{CardholderId, KeyRef};
use kessai_money::{Currency, Money};
use kessai_secrets::SecretKey;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::{Value, json};
use tower::ServiceExt as _;

const DAY_MS: i64 = 86_400_000;
const T0: i64 = 1_800_000_000_000;

struct TestHost {
    app: axum::Router,
    state: AppState,
    clock: ManualClock,
    token: String,
    keys: u64,
    _dir: tempfile::TempDir,
}

struct Reply {
    status: StatusCode,
    body: Value,
}

impl Reply {
    fn problem(&self) -> &str {
        self.body["type"]
            .as_str()
            .and_then(|t| t.strip_prefix("urn:kessai:problem:"))
            .unwrap_or("")
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(v: &Value) -> Vec<u8> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(v.as_str().expect("base64url string"))
        .unwrap()
}

fn jpy() -> Currency {
    Currency::from_code("JPY").unwrap()
}

fn kr(s: &str) -> KeyRef {
    s.parse().unwrap()
}

fn store_key() -> SigningKey {
    SigningKey::from_seed(&[7u8; 32])
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
            cfg.postgres_schema = Some(format!("flow_a_test_{}", hex::encode(r)));
            kessai_store::Db::open_with(cfg).await.unwrap()
        } else {
            kessai_store::Db::open(dir.path().to_str().unwrap())
                .await
                .unwrap()
        };
        let clock = ManualClock::new(T0);
        let mut state = kessai_host::app::state_for_db(db, dir.path(), Arc::new(clock.clone()))
            .await
            .unwrap();
        let mut settings = kessai_host::settings::Settings::default();
        settings.flow_a.policy.retention_days = 30;
        settings.flow_a.policy.key_grace_ms = 2 * DAY_MS as u64;
        state.settings = Arc::new(settings);
        let (token, _) = kessai_host::bootstrap::admin_token(dir.path(), None).unwrap();
        let h = TestHost {
            app: kessai_host::app::router(state.clone()),
            state,
            clock,
            token: token.to_string(),
            keys: 0,
            _dir: dir,
        };
        h.seed().await;
        h
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

    fn next_key(&mut self) -> String {
        self.keys += 1;
        format!("k-{}", self.keys)
    }

    async fn post_with(&mut self, path: &str, body: Value, admin: bool) -> Reply {
        let key = self.next_key();
        let mut b = Request::post(path)
            .header("idempotency-key", key)
            .header(header::CONTENT_TYPE, "application/json");
        if admin {
            b = b.header(header::AUTHORIZATION, format!("Bearer {}", self.token));
        }
        self.send(b.body(Body::from(body.to_string())).unwrap())
            .await
    }

    async fn post(&mut self, path: &str, body: Value) -> Reply {
        self.post_with(path, body, false).await
    }

    async fn admin(&mut self, path: &str, body: Value) -> Reply {
        self.post_with(path, body, true).await
    }

    async fn get(&self, path: &str) -> Reply {
        self.send(
            Request::get(path)
                .header(header::AUTHORIZATION, format!("Bearer {}", self.token))
                .body(Body::empty())
                .unwrap(),
        )
        .await
    }

    async fn seed(&self) {
        let mut me = TestHost {
            app: self.app.clone(),
            state: self.state.clone(),
            clock: self.clock.clone(),
            token: self.token.clone(),
            keys: 1000,
            _dir: tempfile::tempdir().unwrap(),
        };
        let pk = b64(&store_key().verifying_key().to_bytes());
        let r = me
            .admin(
                "/v1/admin/merchants",
                json!({"id": "store-1", "kind": "store", "name": "Store One", "currency": "JPY",
                       "public_key": pk}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        for (id, limit) in [("alice", 10_000), ("bob", 10_000)] {
            let r = me
                .admin(
                    "/v1/admin/cardholders",
                    json!({"id": id, "name": id, "currency": "JPY", "credit_limit_minor": limit}),
                )
                .await;
            assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(kessai_host::clock::Clock::now_ms(&self.clock)).unwrap()
    }

    async fn debits(&self, account: &str) -> i64 {
        let r = self.get(&format!("/v1/admin/accounts/{account}")).await;
        r.body["debits_posted"].as_i64().unwrap()
    }

    async fn last_counter(&self, device: &str) -> Option<i64> {
        kessai_store::flow_a::device(&self.state.db, device)
            .await
            .unwrap()
            .map(|d| d.last_counter)
    }

    async fn evidence_count(&self, device: &str) -> usize {
        kessai_store::evidence::by_subject(&self.state.db, &format!("flow-a:{device}"))
            .await
            .unwrap()
            .len()
    }

    async fn assert_audit_clean(&self) {
        let report = kessai_store::audit::audit(&self.state.db).await.unwrap();
        assert!(report.is_clean(), "auditor findings: {report:?}");
        let links = kessai_store::evidence::audit_links(&self.state.db)
            .await
            .unwrap();
        assert!(links.findings.is_empty(), "evidence findings: {links:?}");
    }

    async fn issue_code(&mut self, cardholder: &str) -> EnrolmentCode {
        let r = self
            .admin(
                "/v1/flow-a/admin/enrolment-codes",
                json!({"cardholder_id": cardholder}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        assert!(r.body["masked_pan"].as_str().unwrap().contains("******"));
        EnrolmentCode::parse(r.body["code"].as_str().unwrap()).unwrap()
    }

    async fn anchor(&self) -> IssuerAnchor {
        let r = self.get("/v1/flow-a/issuer").await;
        assert_eq!(r.status, StatusCode::OK);
        serde_json::from_value(r.body).unwrap()
    }
}

/// The fingerprint reader test double: templates carry a finger number the
/// double matches on (the real sensor and matcher are tested in the
/// biometric crate and by the `kessai device` role).
#[derive(Debug)]
struct Finger(u8);

fn template(finger: u8, impression: u8) -> Template {
    let mut rec = b"FMR\0 20\0".to_vec();
    rec.push(finger);
    rec.push(impression);
    rec.resize(48, 0xEE);
    Template::from_iso19794_2(rec).unwrap()
}

impl FingerprintReader for Finger {
    fn read_master(&mut self) -> Result<MasterReading, ReaderError> {
        let impressions: Vec<Template> = (0..3).map(|i| template(self.0, i)).collect();
        Ok(MasterReading {
            template: impressions[1].clone(),
            impressions,
        })
    }
    fn capture_and_match(&mut self, reference: &Template) -> MatchOutcome {
        if reference.expose()[8] == self.0 {
            MatchOutcome::Match
        } else {
            MatchOutcome::NoMatch
        }
    }
}

struct Device {
    id: String,
    state: DeviceState,
    secrets: DeviceSecrets,
    finger: Finger,
}

fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

async fn new_device(h: &TestHost, id: &str, finger: u8) -> Device {
    Device {
        id: id.to_string(),
        state: DeviceState::new(id.parse().unwrap(), h.anchor().await, 3),
        secrets: DeviceSecrets::new(SecretKey::new([finger; 32])),
        finger: Finger(finger),
    }
}

/// Registration request + identity identification; returns the reply to
/// the identification.
async fn identify(
    h: &mut TestHost,
    d: &mut Device,
    customer: &str,
    code: &EnrolmentCode,
    r: &mut StdRng,
) -> Reply {
    let req = d.state.registration_request(r).unwrap();
    let reply = h
        .post(
            "/v1/flow-a/registrations",
            json!({"device_id": d.id, "device_nonce": hex::encode(req.device_nonce)}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    let ir = unb64(&reply.body["identity_request"]);
    let customer: CardholderId = customer.parse().unwrap();
    let sealed = d
        .state
        .answer_identity_request(&ir, &customer, code, &d.secrets, h.now(), r)
        .unwrap();
    h.post(
        &format!("/v1/flow-a/registrations/{}/identity", d.id),
        json!({"identification": b64(&sealed)}),
    )
    .await
}

async fn enrol(
    h: &mut TestHost,
    d: &mut Device,
    customer: &str,
    code: &EnrolmentCode,
    r: &mut StdRng,
) {
    let reply = identify(h, d, customer, code, r).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let permission = unb64(&reply.body["permission"]);
    let reg = d
        .state
        .register(&permission, &mut d.finger, &d.secrets, h.now(), r)
        .unwrap();
    let reply = h
        .post(
            &format!("/v1/flow-a/registrations/{}/key", d.id),
            json!({"public_key": hex::encode(reg.public_key.to_bytes()), "signed": b64(&reg.signed)}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    assert_eq!(reply.body["personal_key_ref"], format!("{}#1", d.id));
}

fn order(h: &TestHost, order_id: &str, amount: i64) -> Vec<u8> {
    let now = h.now();
    merchant::sign_order(
        &OrderInformation {
            store: "store-1".parse().unwrap(),
            order_id: order_id.parse().unwrap(),
            amount: Money::new(amount, jpy()),
            items_digest: [3; 32],
            created_at_ms: now,
            expires_at_ms: now + 600_000,
        },
        &store_key(),
        &kr("store-1#1"),
    )
    .unwrap()
}

/// Fingerprint confirmation + TRANSACTION DATA for `amount` (the device's
/// counter moves on).
fn transaction(
    h: &TestHost,
    d: &mut Device,
    order_id: &str,
    amount: i64,
    r: &mut StdRng,
) -> Vec<u8> {
    let o = order(h, order_id, amount);
    let confirmed = d.state.confirm_identity(&mut d.finger, &d.secrets).unwrap();
    d.state
        .build_transaction(
            confirmed,
            &o,
            Money::new(amount, jpy()),
            &d.secrets,
            h.now(),
            r,
        )
        .unwrap()
}

async fn submit(h: &mut TestHost, txn: &[u8]) -> Reply {
    h.post("/v1/flow-a/transactions", json!({"transaction": b64(txn)}))
        .await
}

async fn buy(
    h: &mut TestHost,
    d: &mut Device,
    order_id: &str,
    amount: i64,
    r: &mut StdRng,
) -> Reply {
    let txn = transaction(h, d, order_id, amount, r);
    let reply = submit(h, &txn).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let res = d
        .state
        .accept_result(&unb64(&reply.body["device_result"]))
        .unwrap();
    assert_eq!(res.amount, Money::new(amount, jpy()));
    assert!(res.masked_pan.starts_with("999001"));
    reply
}

// ------------------------------------------------------------------ tests

async fn enrol_buy_rotate_update_and_purge(mut h: TestHost) {
    let mut r = rng(1);
    let code = h.issue_code("alice").await;
    let mut d = new_device(&h, "dev-1", 7).await;
    enrol(&mut h, &mut d, "alice", &code, &mut r).await;
    assert!(d.state.is_registered());
    assert_eq!(
        d.state.key_refs(),
        Some((&kr("storage#1"), &kr("transmission#1")))
    );

    // Two purchases: settled in the ledger, signed results for both sides.
    let anchor = h.anchor().await;
    for (i, amount) in [(1, 1_200), (2, 3_400)] {
        let o = order(&h, &format!("order-{i}"), amount);
        let confirmed = d.state.confirm_identity(&mut d.finger, &d.secrets).unwrap();
        let txn = d
            .state
            .build_transaction(
                confirmed,
                &o,
                Money::new(amount, jpy()),
                &d.secrets,
                h.now(),
                &mut r,
            )
            .unwrap();
        let reply = submit(&mut h, &txn).await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        d.state
            .accept_result(&unb64(&reply.body["device_result"]))
            .unwrap();
        let m =
            merchant::verify_merchant_result(&unb64(&reply.body["merchant_result"]), &o, &anchor)
                .unwrap();
        assert_eq!(m.amount, Money::new(amount, jpy()));
        assert_eq!(reply.body["store_id"], "store-1");
        assert_eq!(h.last_counter("dev-1").await, Some(i));
        h.clock.advance(DAY_MS);
    }
    assert_eq!(h.debits("funding.alice").await, 4_600);
    // Permission, card info, key registration, and 4 per transaction.
    assert_eq!(h.evidence_count("dev-1").await, 3 + 2 * 4);

    // Rotation of both keys; during the grace period the old ones work.
    for p in ["transmission", "storage"] {
        let r = h
            .admin(&format!("/v1/admin/keys/{p}/rotate"), json!(null))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    }
    h.clock.advance(DAY_MS);
    buy(&mut h, &mut d, "order-3", 500, &mut r).await;

    // After the grace period: refused with a typed problem naming the fix.
    h.clock.advance(2 * DAY_MS);
    let before = h.debits("funding.alice").await;
    let txn = transaction(&h, &mut d, "order-4", 800, &mut r);
    let reply = submit(&mut h, &txn).await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        reply.problem(),
        "transmission-key-retired",
        "{:?}",
        reply.body
    );
    assert!(
        reply.body["detail"]
            .as_str()
            .unwrap()
            .contains("transmission#2")
    );
    assert_eq!(h.debits("funding.alice").await, before);
    assert_eq!(h.last_counter("dev-1").await, Some(3));

    // Key update: fetch (twice: the same bytes), apply, confirm.
    let u1 = h
        .post("/v1/flow-a/devices/dev-1/key-update", json!(null))
        .await;
    assert_eq!(u1.status, StatusCode::OK, "{:?}", u1.body);
    let u2 = h
        .post("/v1/flow-a/devices/dev-1/key-update", json!(null))
        .await;
    assert_eq!(u1.body, u2.body);
    let update = unb64(&u1.body["key_update"]);
    let confirmation = d
        .state
        .apply_key_update(&update, &d.secrets, &mut r)
        .unwrap();
    let reply = h
        .post(
            "/v1/flow-a/devices/dev-1/key-update/confirm",
            json!({"confirmation": b64(&confirmation)}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.body["storage_key"], "storage#2");
    assert_eq!(reply.body["transmission_key"], "transmission#2");
    // Nothing more to update.
    let again = h
        .post("/v1/flow-a/devices/dev-1/key-update", json!(null))
        .await;
    assert_eq!(again.problem(), "keys-current");
    buy(&mut h, &mut d, "order-5", 800, &mut r).await;
    assert_eq!(h.debits("funding.alice").await, 5_900);
    assert_eq!(h.last_counter("dev-1").await, Some(5));

    // Retention: 30 days after the first purchases, their data goes; the
    // ledger keeps every posting and the auditor stays clean.
    h.clock.advance(27 * DAY_MS);
    let reply = h
        .admin("/v1/flow-a/admin/retention/purge", json!(null))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.body["purged"], 8, "{:?}", reply.body);
    let records = kessai_store::evidence::by_subject(&h.state.db, "flow-a:dev-1")
        .await
        .unwrap();
    let purged: Vec<_> = records
        .iter()
        .filter(|e| e.purged_at_ms.is_some())
        .collect();
    assert_eq!(purged.len(), 8);
    assert!(purged.iter().all(|e| e.bytes.is_empty()));
    assert!(
        records
            .iter()
            .any(|e| e.kind == "flow-a.txn" && e.purged_at_ms.is_none())
    );
    assert_eq!(h.debits("funding.alice").await, 5_900);
    h.assert_audit_clean().await;
    let events = kessai_store::audit_log::events(&h.state.db, Some("evidence"))
        .await
        .unwrap();
    assert_eq!(events.last().unwrap().kind, "retention.purged");
    // Purging again finds nothing.
    let reply = h
        .admin("/v1/flow-a/admin/retention/purge", json!(null))
        .await;
    assert_eq!(reply.body["purged"], 0);

    // No card number in clear anywhere in the database (SQLite file).
    if let Some(path) = h.state.db.sqlite_path() {
        let bytes = std::fs::read(path).unwrap();
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let wal = std::fs::read(std::path::PathBuf::from(wal)).unwrap_or_default();
        for b in [bytes, wal] {
            assert!(
                !b.windows(12)
                    .any(|w| w.starts_with(b"999001") && w.iter().all(u8::is_ascii_digit)),
                "a card number in clear in the database"
            );
        }
    }
}

async fn enrolment_bad_inputs_change_nothing(mut h: TestHost) {
    let mut r = rng(2);
    let code = h.issue_code("alice").await;
    let mut d = new_device(&h, "dev-1", 7).await;

    // Wrong code: refused (typed), a try is spent, no device registered.
    let wrong = EnrolmentCode::parse(if code.expose() == "0000000000" {
        "1111111111"
    } else {
        "0000000000"
    })
    .unwrap();
    let reply = identify(&mut h, &mut d, "alice", &wrong, &mut r).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.problem(), "enrolment-code-refused");
    // Unknown customer: the same answer (customer numbers cannot be probed).
    let reply2 = identify(&mut h, &mut d, "nobody", &code, &mut r).await;
    assert_eq!(reply2.body, reply.body);
    assert_eq!(h.last_counter("dev-1").await, None);

    // Key registration without a permission (session awaits identity).
    let key = SigningKey::from_seed(&[5; 32]);
    let reply = h
        .post(
            "/v1/flow-a/registrations/dev-1/key",
            json!({"public_key": hex::encode(key.verifying_key().to_bytes()), "signed": b64(b"junk")}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{:?}", reply.body);
    assert_eq!(reply.problem(), "no-registration-permission");
    // ... and for a device that never asked.
    let reply = h
        .post(
            "/v1/flow-a/registrations/dev-9/key",
            json!({"public_key": hex::encode(key.verifying_key().to_bytes()), "signed": b64(b"junk")}),
        )
        .await;
    assert_eq!(reply.problem(), "no-registration-permission");
    assert_eq!(h.last_counter("dev-9").await, None);

    // The right code still works (tries left), then is used up.
    enrol(&mut h, &mut d, "alice", &code, &mut r).await;
    let mut other = new_device(&h, "dev-2", 8).await;
    let reply = identify(&mut h, &mut other, "alice", &code, &mut r).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.problem(), "enrolment-code-refused");
    assert_eq!(h.last_counter("dev-2").await, None);

    // A registered device cannot register again.
    let reply = h
        .post(
            "/v1/flow-a/registrations",
            json!({"device_id": "dev-1", "device_nonce": hex::encode([1u8; 16])}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(reply.problem(), "already-registered");

    // Too many wrong codes exhaust a fresh code.
    let code = h.issue_code("bob").await;
    let mut bobs = new_device(&h, "dev-3", 9).await;
    for _ in 0..3 {
        let reply = identify(&mut h, &mut bobs, "bob", &wrong, &mut r).await;
        assert_eq!(reply.problem(), "enrolment-code-refused");
    }
    let reply = identify(&mut h, &mut bobs, "bob", &code, &mut r).await;
    assert_eq!(reply.problem(), "enrolment-code-refused");
    assert_eq!(h.last_counter("dev-3").await, None);

    // Malformed bodies.
    let reply = h
        .post(
            "/v1/flow-a/registrations",
            json!({"device_id": "dev-4", "device_nonce": "zz"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let reply = h
        .post(
            "/v1/flow-a/registrations",
            json!({"device_id": "dev-4", "device_nonce": hex::encode([1u8; 16]), "x": 1}),
        )
        .await;
    assert_eq!(reply.problem(), "invalid-body");

    // Admin routes need the token.
    let reply = h
        .post(
            "/v1/flow-a/admin/enrolment-codes",
            json!({"cardholder_id": "alice"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let reply = h
        .post("/v1/flow-a/admin/retention/purge", json!(null))
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    h.assert_audit_clean().await;
}

async fn transaction_bad_inputs_change_nothing(mut h: TestHost) {
    let mut r = rng(3);
    let code = h.issue_code("alice").await;
    let mut d = new_device(&h, "dev-1", 7).await;
    enrol(&mut h, &mut d, "alice", &code, &mut r).await;
    buy(&mut h, &mut d, "order-1", 1_000, &mut r).await;
    let evidence = h.evidence_count("dev-1").await;

    // Replay of settled TRANSACTION DATA (new Idempotency-Key).
    let txn = transaction(&h, &mut d, "order-2", 2_000, &mut r);
    let reply = submit(&mut h, &txn).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    d.state
        .accept_result(&unb64(&reply.body["device_result"]))
        .unwrap();
    let reply = submit(&mut h, &txn).await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(reply.problem(), "replayed-transaction");
    assert_eq!(h.debits("funding.alice").await, 3_000);
    assert_eq!(h.last_counter("dev-1").await, Some(2));
    let evidence = evidence + 4;
    assert_eq!(h.evidence_count("dev-1").await, evidence);

    // Tampered ciphertext: one byte of the signed envelope flipped.
    let good = transaction(&h, &mut d, "order-3", 500, &mut r);
    let mut bad = good.clone();
    let n = bad.len();
    bad[n - 80] ^= 0x01;
    let reply = submit(&mut h, &bad).await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        reply.body
    );
    assert_eq!(reply.problem(), "artefact-refused");

    // Signed by a key that is not the registered one (another device's or
    // an attacker's), under this device's key id.
    let payload: TransactionData = cose::verify_artefact::<TransactionData>(&good, |_| {
        Some(d.state.personal_key().unwrap().1)
    })
    .unwrap()
    .into_payload();
    let forged =
        cose::sign_artefact(&payload, &SigningKey::from_seed(&[9; 32]), &kr("dev-1#1")).unwrap();
    let reply = submit(&mut h, &forged).await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.problem(), "artefact-refused");
    // ... or under an unregistered device's key id.
    let forged =
        cose::sign_artefact(&payload, &SigningKey::from_seed(&[9; 32]), &kr("dev-7#1")).unwrap();
    let reply = submit(&mut h, &forged).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.problem(), "unregistered-device-key");
    // Not a COSE object at all / not base64url.
    let reply = submit(&mut h, b"not cose").await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    let reply = h
        .post("/v1/flow-a/transactions", json!({"transaction": "***"}))
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);

    // The untampered one still settles: nothing was consumed.
    let reply = submit(&mut h, &good).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    d.state
        .accept_result(&unb64(&reply.body["device_result"]))
        .unwrap();
    assert_eq!(h.debits("funding.alice").await, 3_500);
    let evidence = evidence + 4;
    assert_eq!(h.evidence_count("dev-1").await, evidence);

    // Over the credit limit (10 000): refused, nothing posted.
    let txn = transaction(&h, &mut d, "order-4", 7_000, &mut r);
    let reply = submit(&mut h, &txn).await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.problem(), "over-limit", "{:?}", reply.body);
    assert_eq!(h.debits("funding.alice").await, 3_500);
    assert_eq!(h.last_counter("dev-1").await, Some(3));
    assert_eq!(h.evidence_count("dev-1").await, evidence);

    // Wrong finger: no match, then the device locks; only an issuer-signed
    // unlock (admin) lifts it.
    d.finger = Finger(99);
    for left in [2u8, 1] {
        assert_eq!(
            d.state
                .confirm_identity(&mut d.finger, &d.secrets)
                .unwrap_err(),
            FlowAError::NoMatch {
                attempts_left: left
            }
        );
    }
    assert_eq!(
        d.state
            .confirm_identity(&mut d.finger, &d.secrets)
            .unwrap_err(),
        FlowAError::DeviceLocked { lock_seq: 1 }
    );
    d.finger = Finger(7);
    assert_eq!(
        d.state
            .confirm_identity(&mut d.finger, &d.secrets)
            .unwrap_err(),
        FlowAError::DeviceLocked { lock_seq: 1 }
    );
    let reply = h
        .post(
            "/v1/flow-a/admin/devices/dev-1/unlock",
            json!({"lock_seq": 1}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let reply = h
        .admin(
            "/v1/flow-a/admin/devices/dev-1/unlock",
            json!({"lock_seq": 1}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    d.state.apply_unlock(&unb64(&reply.body["unlock"])).unwrap();
    assert_eq!(
        d.state.lock_state(),
        Some(LockState::Unlocked { failed_matches: 0 })
    );
    buy(&mut h, &mut d, "order-5", 100, &mut r).await;
    h.assert_audit_clean().await;
}

async fn key_update_not_from_the_issuer_is_refused(mut h: TestHost) {
    let mut r = rng(4);
    let code = h.issue_code("alice").await;
    let mut d = new_device(&h, "dev-1", 7).await;
    enrol(&mut h, &mut d, "alice", &code, &mut r).await;
    for p in ["transmission", "storage"] {
        h.admin(&format!("/v1/admin/keys/{p}/rotate"), json!(null))
            .await;
    }
    let reply = h
        .post("/v1/flow-a/devices/dev-1/key-update", json!(null))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let genuine = unb64(&reply.body["key_update"]);
    let anchor = h.anchor().await;
    let payload: KeyUpdate = cose::verify_artefact::<KeyUpdate>(&genuine, |k| {
        (k == &anchor.key_ref).then_some(anchor.key)
    })
    .unwrap()
    .into_payload();
    // The same content signed by someone else, under the issuer's key id.
    let forged =
        cose::sign_artefact(&payload, &SigningKey::from_seed(&[6; 32]), &anchor.key_ref).unwrap();
    let before = serde_json::to_string(&d.state).unwrap();
    assert!(
        d.state
            .apply_key_update(&forged, &d.secrets, &mut r)
            .is_err()
    );
    assert_eq!(serde_json::to_string(&d.state).unwrap(), before);
    // A forged confirmation (not signed by the personal key).
    let reply = h
        .post(
            "/v1/flow-a/devices/dev-1/key-update/confirm",
            json!({"confirmation": b64(&forged)}),
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        reply.body
    );
    let rec = kessai_store::flow_a::device(&h.state.db, "dev-1")
        .await
        .unwrap()
        .unwrap();
    assert!(rec.record.contains("storage#1"));
    // The genuine one applies.
    let confirmation = d
        .state
        .apply_key_update(&genuine, &d.secrets, &mut r)
        .unwrap();
    let reply = h
        .post(
            "/v1/flow-a/devices/dev-1/key-update/confirm",
            json!({"confirmation": b64(&confirmation)}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    h.assert_audit_clean().await;
}

async fn openapi_lists_flow_a(h: TestHost) {
    let r = h
        .send(Request::get("/openapi.json").body(Body::empty()).unwrap())
        .await;
    for p in [
        "/v1/flow-a/registrations",
        "/v1/flow-a/transactions",
        "/v1/flow-a/admin/enrolment-codes",
        "/v1/flow-a/admin/retention/purge",
    ] {
        assert!(r.body["paths"][p].is_object(), "{p} missing from OpenAPI");
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
    enrol_buy_rotate_update_and_purge,
    enrolment_bad_inputs_change_nothing,
    transaction_bad_inputs_change_nothing,
    key_update_not_from_the_issuer_is_refused,
    openapi_lists_flow_a,
);
