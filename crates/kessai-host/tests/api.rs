//! The host's HTTP API through its public router, in-process, against
//! SQLite (always) and PostgreSQL (`--ignored`, with
//! `KESSAI_TEST_POSTGRES_URL`): health, OpenAPI, admin authentication,
//! idempotency, problem details and every bad input of the foundation,
//! each followed by a check that nothing changed and the auditor is clean.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use base64::Engine as _;
use kessai_host::clock::ManualClock;
use kessai_host::state::AppState;
use serde_json::{Value, json};
use tower::ServiceExt as _;

struct TestHost {
    app: axum::Router,
    state: AppState,
    token: String,
    _dir: tempfile::TempDir,
}

struct Reply {
    status: StatusCode,
    content_type: String,
    replayed: Option<String>,
    body: Value,
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
            cfg.postgres_schema = Some(format!("host_test_{}", hex::encode(r)));
            kessai_store::Db::open_with(cfg).await.unwrap()
        } else {
            kessai_store::Db::open(dir.path().to_str().unwrap())
                .await
                .unwrap()
        };
        let clock = ManualClock::new(1_800_000_000_000);
        let state = kessai_host::app::state_for_db(db, dir.path(), Arc::new(clock))
            .await
            .unwrap();
        let (token, _) = kessai_host::bootstrap::admin_token(dir.path(), None).unwrap();
        TestHost {
            app: kessai_host::app::router(state.clone()),
            state,
            token: token.to_string(),
            _dir: dir,
        }
    }

    async fn send(&self, req: Request<Body>) -> Reply {
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let content_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let replayed = resp
            .headers()
            .get("idempotent-replayed")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 22)
            .await
            .unwrap();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Reply {
            status,
            content_type,
            replayed,
            body,
        }
    }

    fn admin(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<&str>,
    ) -> Request<Body> {
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token));
        if let Some(k) = key {
            b = b.header("idempotency-key", k);
        }
        match body {
            Some(s) => b
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(s.to_string()))
                .unwrap(),
            None => b.body(Body::empty()).unwrap(),
        }
    }

    async fn post(&self, path: &str, key: &str, body: Value) -> Reply {
        self.send(self.admin(Method::POST, path, Some(key), Some(&body.to_string())))
            .await
    }

    async fn get(&self, path: &str) -> Reply {
        self.send(self.admin(Method::GET, path, None, None)).await
    }

    /// A snapshot of everything the foundation can change.
    async fn snapshot(&self) -> Value {
        json!({
            "merchants": self.get("/v1/admin/merchants").await.body,
            "alice": self.get("/v1/admin/cardholders/alice").await.body,
            "clearing": self.get("/v1/admin/accounts/clearing.main").await.body,
            "payable": self.get("/v1/admin/accounts/payable.store-1").await.body,
        })
    }

    async fn assert_audit_clean(&self) {
        let report = kessai_store::audit::audit(&self.state.db).await.unwrap();
        assert!(report.is_clean(), "auditor findings: {report:?}");
    }
}

fn store_key_b64() -> String {
    let sk = kessai_crypto::sign::SigningKey::from_seed(&[7u8; 32]);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sk.verifying_key().to_bytes())
}

/// Registers a store, a cardholder with a 10 000 JPY credit line, and a
/// clearing account.
async fn seed(h: &TestHost) {
    let r = h
        .post(
            "/v1/admin/merchants",
            "seed-store",
            json!({"id": "store-1", "kind": "store", "name": "Store One", "currency": "JPY",
                   "public_key": store_key_b64()}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let r = h
        .post(
            "/v1/admin/cardholders",
            "seed-alice",
            json!({"id": "alice", "name": "Alice", "currency": "JPY", "credit_limit_minor": 10000}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let r = h
        .post(
            "/v1/admin/accounts",
            "seed-clearing",
            json!({"id": "clearing.main", "kind": "issuer_clearing", "currency": "JPY",
                   "limit": {"kind": "unlimited"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
}

fn payment(natural_key: &str, amount: i64) -> Value {
    json!({"natural_key": natural_key, "currency": "JPY", "code": 1,
           "legs": [{"account": "funding.alice", "side": "debit", "amount_minor": amount},
                    {"account": "payable.store-1", "side": "credit", "amount_minor": amount}]})
}

async fn health_and_openapi(h: TestHost) {
    let r = h
        .send(Request::get("/health").body(Body::empty()).unwrap())
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["status"], "ok");
    let r = h
        .send(Request::get("/openapi.json").body(Body::empty()).unwrap())
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body["openapi"].as_str().unwrap().starts_with("3.1"));
    for path in [
        "/v1/admin/merchants",
        "/v1/admin/transfers",
        "/health",
        "/metrics",
    ] {
        assert!(
            r.body["paths"][path].is_object(),
            "{path} missing from OpenAPI"
        );
    }
    let r = h
        .send(Request::get("/metrics").body(Body::empty()).unwrap())
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.body
            .as_str()
            .unwrap()
            .contains("kessai_http_requests_total")
    );
    let r = h
        .send(Request::get("/nope").body(Body::empty()).unwrap())
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.content_type, "application/problem+json");
}

async fn admin_calls_need_the_token(h: TestHost) {
    seed(&h).await;
    let before = h.snapshot().await;
    for auth in [None, Some("Bearer wrong-token"), Some("Basic abc")] {
        let mut b = Request::post("/v1/admin/transfers")
            .header("idempotency-key", "k-unauth")
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(a) = auth {
            b = b.header(header::AUTHORIZATION, a);
        }
        let r = h
            .send(
                b.body(Body::from(payment("unauth", 100).to_string()))
                    .unwrap(),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(r.content_type, "application/problem+json");
        assert_eq!(r.body["type"], "urn:kessai:problem:unauthorized");
    }
    let r = h
        .send(
            Request::get("/v1/admin/merchants")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(h.snapshot().await, before);
    // The idempotency key was not consumed by the refused calls.
    let r = h
        .post("/v1/admin/transfers", "k-unauth", payment("unauth", 100))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    h.assert_audit_clean().await;
}

async fn idempotency_semantics(h: TestHost) {
    seed(&h).await;
    let first = h
        .post("/v1/admin/transfers", "pay-1", payment("order-1", 700))
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{:?}", first.body);
    assert_eq!(first.replayed.as_deref(), Some("false"));
    let after_first = h.snapshot().await;
    // Same key, same body: the same response, replayed; nothing moves.
    let again = h
        .post("/v1/admin/transfers", "pay-1", payment("order-1", 700))
        .await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(again.body, first.body);
    assert_eq!(again.replayed.as_deref(), Some("true"));
    assert_eq!(h.snapshot().await, after_first);
    // Same key, different body: 422 and nothing moves.
    let other = h
        .post("/v1/admin/transfers", "pay-1", payment("order-2", 700))
        .await;
    assert_eq!(other.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        other.body["type"],
        "urn:kessai:problem:idempotency-key-reused"
    );
    assert_eq!(h.snapshot().await, after_first);
    // Missing key: 400.
    let r = h
        .send(h.admin(
            Method::POST,
            "/v1/admin/transfers",
            None,
            Some(&payment("order-3", 1).to_string()),
        ))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        r.body["type"],
        "urn:kessai:problem:idempotency-key-required"
    );
    // A claim still in flight (another process is working on it): 409.
    let fp = [9u8; 32];
    let scope = {
        use sha2::Digest;
        hex::encode(&sha2::Sha256::digest(format!("Bearer {}", h.token).as_bytes())[..16])
    };
    let now = h.state.clock.now_ms();
    let begun = kessai_store::idempotency::begin(&h.state.db, &scope, "busy", &fp, now, 60_000)
        .await
        .unwrap();
    assert_eq!(begun, kessai_store::idempotency::IdempotencyBegin::Proceed);
    let r = h
        .post("/v1/admin/transfers", "busy", payment("order-4", 1))
        .await;
    // Different fingerprint than the claim: mismatch wins over in-flight.
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let body = payment("order-4", 1).to_string();
    let fp_real: [u8; 32] = {
        use hmac::{KeyInit, Mac};
        let k = h
            .state
            .keys
            .derived_key(kessai_host::idempotency::FINGERPRINT_KEY_LABEL);
        let mut d = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(k.expose()).unwrap();
        d.update(b"POST\0/v1/admin/transfers\0");
        d.update(body.as_bytes());
        d.finalize().into_bytes().into()
    };
    kessai_store::idempotency::begin(&h.state.db, &scope, "busy-2", &fp_real, now, 60_000)
        .await
        .unwrap();
    let r = h
        .send(h.admin(
            Method::POST,
            "/v1/admin/transfers",
            Some("busy-2"),
            Some(&body),
        ))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    assert_eq!(r.body["type"], "urn:kessai:problem:idempotency-in-flight");
    assert_eq!(h.snapshot().await, after_first);
    // Stored idempotency records reveal neither request nor response: the
    // fingerprint is keyed and the response sealed.
    let plain_fp: [u8; 32] = {
        use sha2::Digest;
        let mut d = sha2::Sha256::new();
        d.update(b"POST\0/v1/admin/transfers\0");
        d.update(payment("order-1", 700).to_string().as_bytes());
        d.finalize().into()
    };
    let rows: Vec<(Vec<u8>, Option<Vec<u8>>)> = kessai_store::on_pool!(h.state.db, |pool| {
        sqlx::query_as("SELECT fingerprint, body FROM idempotency_keys")
            .fetch_all(pool)
            .await
    })
    .unwrap();
    assert!(!rows.is_empty());
    for (fp, body) in rows {
        assert_ne!(fp, plain_fp.to_vec());
        if let Some(b) = body {
            assert!(!String::from_utf8_lossy(&b).contains("order-1"));
            assert!(!String::from_utf8_lossy(&b).contains("funding.alice"));
        }
    }
    h.assert_audit_clean().await;
}

async fn bad_input_changes_nothing(h: TestHost) {
    seed(&h).await;
    let ok = h
        .post("/v1/admin/transfers", "ok-1", payment("order-ok", 1000))
        .await;
    assert_eq!(ok.status, StatusCode::CREATED, "{:?}", ok.body);
    let before = h.snapshot().await;
    let store_key = store_key_b64();
    let cases: Vec<(&str, &str, String, StatusCode, &str)> = vec![
        ("malformed json", "/v1/admin/transfers", "{\"natural_key\": ".into(), StatusCode::BAD_REQUEST, "malformed-json"),
        ("unknown field", "/v1/admin/transfers",
         json!({"natural_key": "x", "currency": "JPY", "code": 1, "legs": [], "bogus": 1}).to_string(),
         StatusCode::BAD_REQUEST, "invalid-body"),
        ("negative amount", "/v1/admin/transfers", payment("neg", -5).to_string(), StatusCode::UNPROCESSABLE_ENTITY, "amount_not_positive"),
        ("overflowing amount", "/v1/admin/transfers",
         payment("big", 1).to_string().replace("\"amount_minor\":1", "\"amount_minor\":92233720368547758070"),
         StatusCode::BAD_REQUEST, "invalid-body"),
        ("unknown currency", "/v1/admin/transfers", payment("cur", 5).to_string().replace("JPY", "QQQ"),
         StatusCode::BAD_REQUEST, "invalid-body"),
        ("currency of other accounts", "/v1/admin/transfers", payment("cur2", 5).to_string().replace("JPY", "EUR"),
         StatusCode::UNPROCESSABLE_ENTITY, "currency_mismatch"),
        ("over the credit limit", "/v1/admin/transfers", payment("limit", 9001).to_string(),
         StatusCode::UNPROCESSABLE_ENTITY, "exceeds_limit"),
        ("unbalanced", "/v1/admin/transfers",
         json!({"natural_key": "unbal", "currency": "JPY", "code": 1,
                "legs": [{"account": "funding.alice", "side": "debit", "amount_minor": 10},
                         {"account": "payable.store-1", "side": "credit", "amount_minor": 9}]}).to_string(),
         StatusCode::UNPROCESSABLE_ENTITY, "unbalanced"),
        ("duplicate transfer id, other content", "/v1/admin/transfers", payment("order-ok", 999).to_string(),
         StatusCode::CONFLICT, "exists_with_different_content"),
        ("unknown account", "/v1/admin/transfers",
         payment("ghost", 5).to_string().replace("payable.store-1", "payable.ghost"),
         StatusCode::NOT_FOUND, "account_not_found"),
        ("invalid store public key", "/v1/admin/merchants",
         json!({"id": "store-2", "kind": "store", "name": "S2", "currency": "JPY", "public_key": "AAAA"}).to_string(),
         StatusCode::BAD_REQUEST, "invalid-public-key"),
        ("member store without a mall", "/v1/admin/merchants",
         json!({"id": "store-3", "kind": "member", "name": "S3", "currency": "JPY"}).to_string(),
         StatusCode::UNPROCESSABLE_ENTITY, "invalid-registration"),
        ("duplicate merchant", "/v1/admin/merchants",
         json!({"id": "store-1", "kind": "store", "name": "Again", "currency": "JPY", "public_key": store_key}).to_string(),
         StatusCode::CONFLICT, "already-registered"),
        ("negative credit limit", "/v1/admin/cardholders",
         json!({"id": "bob", "name": "Bob", "currency": "JPY", "credit_limit_minor": -1}).to_string(),
         StatusCode::BAD_REQUEST, "invalid-limit"),
        ("unknown currency for cardholder", "/v1/admin/cardholders",
         json!({"id": "bob", "name": "Bob", "currency": "XAU", "credit_limit_minor": 1}).to_string(),
         StatusCode::BAD_REQUEST, "invalid-body"),
    ];
    for (i, (what, path, body, status, slug)) in cases.into_iter().enumerate() {
        let r = h
            .send(h.admin(Method::POST, path, Some(&format!("bad-{i}")), Some(&body)))
            .await;
        assert_eq!(r.status, status, "{what}: {:?}", r.body);
        assert_eq!(r.content_type, "application/problem+json", "{what}");
        assert_eq!(
            r.body["type"],
            format!("urn:kessai:problem:{slug}"),
            "{what}: {:?}",
            r.body
        );
        assert_eq!(h.snapshot().await, before, "{what} changed state");
    }
    // An invalid card number never echoes in the problem.
    let r = kessai_host::json::parse_json::<kessai_secrets::CardNumber>(b"\"4111111111111112\"")
        .unwrap_err();
    assert!(!format!("{:?}", r.to_problem()).contains("4111111111111112"));
    h.assert_audit_clean().await;
}

async fn keys_rotate_and_export(h: TestHost) {
    let r = h.get("/v1/admin/keys").await;
    assert_eq!(r.status, StatusCode::OK);
    let keys = r.body.as_array().unwrap().clone();
    assert_eq!(
        keys.len(),
        4,
        "one active key per purpose on first run: {keys:?}"
    );
    let card_master = keys.iter().find(|k| k["purpose"] == "card_master").unwrap();
    assert_eq!(
        card_master["public_key"], "",
        "a symmetric key has no public part"
    );
    let r = h
        .post("/v1/admin/keys/host_sign/rotate", "rot-1", json!({}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let listed = r.body.as_array().unwrap();
    let host: Vec<_> = listed
        .iter()
        .filter(|k| k["purpose"] == "host_sign")
        .collect();
    assert_eq!(host.len(), 2);
    assert_eq!(host[0]["key_ref"], "host-sign#1");
    assert_eq!(host[0]["state"], "retiring");
    assert_eq!(host[1]["key_ref"], "host-sign#2");
    assert_eq!(host[1]["state"], "active");
    // The active signer is the new version; the old one still verifies.
    let (kref, signer) = h.state.keys.host_signer().await.unwrap();
    assert_eq!(kref.to_string(), "host-sign#2");
    let sig = signer.sign(b"m");
    let vk = h.state.keys.host_verifier(&kref).await.unwrap();
    vk.verify(b"m", &sig).unwrap();
    assert!(
        h.state
            .keys
            .host_verifier(&"host-sign#1".parse().unwrap())
            .await
            .is_ok()
    );
    assert!(
        h.state
            .keys
            .host_verifier(&"host-sign#9".parse().unwrap())
            .await
            .is_err()
    );
    // Secrets are sealed at rest: no stored row contains the clear seed.
    let seed = signer.seed_bytes();
    let rows = kessai_store::keys::all_keys(&h.state.db).await.unwrap();
    for r in &rows {
        assert!(!r.sealed_secret.windows(32).any(|w| w == seed.expose()));
    }
    let out = tempfile::tempdir().unwrap();
    let names = h.state.keys.export_public(out.path()).await.unwrap();
    assert_eq!(names.len(), 4);
    let pem = std::fs::read_to_string(out.path().join("host-sign#2.pem")).unwrap();
    let parsed = kessai_crypto::sign::VerifyingKey::from_public_pem(&pem).unwrap();
    assert_eq!(parsed.to_bytes(), vk.to_bytes());
    let x = std::fs::read_to_string(out.path().join("transmission#1.pem")).unwrap();
    assert!(x.starts_with("-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VuAyEA"));
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
    health_and_openapi,
    admin_calls_need_the_token,
    idempotency_semantics,
    bad_input_changes_nothing,
    keys_rotate_and_export,
);
