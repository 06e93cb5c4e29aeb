//! `Idempotency-Key` handling for every state-changing call.
//!
//! - The header is required on POST/PUT/PATCH/DELETE (400 without it).
//! - Same key + same request (method, path, body) → the stored response is
//!   sent again with `Idempotent-Replayed: true`.
//! - Same key + different request → 422 `idempotency-key-reused`.
//! - Same key while the first request is still running → 409
//!   `idempotency-in-flight`.
//! - A 5xx answer is not stored: the key is released so the client can retry;
//!   neither is a 401 (an unauthenticated call changes nothing, not even the
//!   idempotency record).
//!
//! Keys are scoped by caller (a hash of the `Authorization` header), and the
//! claim lives in the database, so two host processes behind one PostgreSQL
//! agree on it.
//!
//! Nothing stored reveals a request or a response: bodies may carry card
//! numbers, PIN blocks or one-time codes, so the request fingerprint is an
//! HMAC under a key derived from the master key (a plain hash of a
//! low-entropy body could be brute-forced from a database copy), and the
//! stored response is sealed with AES-256-GCM under another derived key.

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use kessai_store::idempotency::{self, IdempotencyBegin, StoredResponse};
use sha2::{Digest, Sha256};

use crate::json::MAX_BODY_BYTES;
use crate::problem::ApiError;
use crate::state::AppState;

/// The request header.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Response header telling a client it got a stored response.
pub const REPLAYED: &str = "idempotent-replayed";
/// How long a claim is held before another request may take it over.
const LOCK_MS: i64 = 60_000;
/// Largest response body stored for replay.
const MAX_STORED_RESPONSE: usize = 1024 * 1024;
/// Derived-key label of the request fingerprint HMAC.
pub const FINGERPRINT_KEY_LABEL: &str = "idempotency-fingerprint";
/// Derived-key label of the stored-response sealing key.
const RESPONSE_KEY_LABEL: &str = "idempotency-response";

fn response_aad(scope: &str, key: &str) -> Vec<u8> {
    format!("kessai/idempotency/v1\0{scope}\0{key}").into_bytes()
}

fn state_changing(m: &Method) -> bool {
    matches!(
        *m,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

fn valid_key(k: &str) -> bool {
    (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic())
}

/// The middleware; mount it with `axum::middleware::from_fn_with_state`.
pub async fn layer(State(app): State<AppState>, req: Request, next: Next) -> Response {
    if !state_changing(req.method()) {
        return next.run(req).await;
    }
    let key = match req
        .headers()
        .get(IDEMPOTENCY_KEY)
        .and_then(|v| v.to_str().ok())
    {
        Some(k) if valid_key(k) => k.to_string(),
        Some(_) => {
            return ApiError::bad_request("idempotency-key-invalid", "Invalid Idempotency-Key")
                .with_detail("1 to 255 printable ASCII characters")
                .into_response();
        }
        None => {
            return ApiError::bad_request(
                "idempotency-key-required",
                "Idempotency-Key header required",
            )
            .with_detail("every state-changing call needs an Idempotency-Key header")
            .into_response();
        }
    };
    let scope = {
        let auth = req
            .headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes().to_vec())
            .unwrap_or_default();
        hex::encode(&Sha256::digest(&auth)[..16])
    };
    let (parts, body) = req.into_parts();
    let bytes = match to_bytes(body, MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body-unreadable",
                "Request body could not be read or is too large",
            )
            .into_response();
        }
    };
    let fingerprint: [u8; 32] = {
        use hmac::{KeyInit, Mac};
        let fp_key = app.keys.derived_key(FINGERPRINT_KEY_LABEL);
        let mut h = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(fp_key.expose())
            .expect("HMAC accepts any key length");
        h.update(parts.method.as_str().as_bytes());
        h.update(&[0]);
        // The full path: inside a nested router `parts.uri` lacks the prefix.
        let uri = parts
            .extensions
            .get::<axum::extract::OriginalUri>()
            .map(|o| &o.0)
            .unwrap_or(&parts.uri);
        h.update(
            uri.path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("")
                .as_bytes(),
        );
        h.update(&[0]);
        h.update(&bytes);
        h.finalize().into_bytes().into()
    };
    let now = app.clock.now_ms();
    let begin = idempotency::begin(&app.db, &scope, &key, &fingerprint, now, LOCK_MS).await;
    match begin {
        Err(e) => ApiError::internal(&e).into_response(),
        Ok(IdempotencyBegin::Mismatch) => ApiError::unprocessable(
            "idempotency-key-reused",
            "Idempotency-Key reused with a different request",
        )
        .into_response(),
        Ok(IdempotencyBegin::InFlight) => ApiError::conflict(
            "idempotency-in-flight",
            "A request with this Idempotency-Key is still being processed",
        )
        .into_response(),
        Ok(IdempotencyBegin::Replay(mut stored)) => {
            match app.keys.open_secret(
                RESPONSE_KEY_LABEL,
                &response_aad(&scope, &key),
                &stored.body,
            ) {
                Some(body) => {
                    stored.body = body.expose().to_vec();
                    replay(stored)
                }
                None => ApiError::internal(&"stored idempotent response does not authenticate")
                    .into_response(),
            }
        }
        Ok(IdempotencyBegin::Proceed) => {
            let resp = next
                .run(Request::from_parts(parts, Body::from(bytes)))
                .await;
            let (rparts, rbody) = resp.into_parts();
            let rbytes = match to_bytes(rbody, MAX_STORED_RESPONSE).await {
                Ok(b) => b,
                Err(e) => {
                    let _ = idempotency::release(&app.db, &scope, &key).await;
                    return ApiError::internal(&e).into_response();
                }
            };
            // Not stored: server errors (the client may retry) and
            // authentication failures (the request was never processed, so
            // an unauthenticated call must not consume the key).
            if rparts.status.is_server_error() || rparts.status == StatusCode::UNAUTHORIZED {
                if let Err(e) = idempotency::release(&app.db, &scope, &key).await {
                    tracing::error!(error = %e, "could not release idempotency key");
                }
            } else {
                let stored = StoredResponse {
                    status: rparts.status.as_u16(),
                    content_type: rparts
                        .headers
                        .get(header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("application/json")
                        .to_string(),
                    body: app.keys.seal_secret(
                        RESPONSE_KEY_LABEL,
                        &response_aad(&scope, &key),
                        &rbytes,
                    ),
                };
                if let Err(e) = idempotency::complete(&app.db, &scope, &key, &stored).await {
                    return ApiError::internal(&e).into_response();
                }
            }
            let mut resp = Response::from_parts(rparts, Body::from(rbytes));
            resp.headers_mut()
                .insert(REPLAYED, HeaderValue::from_static("false"));
            resp
        }
    }
}

fn replay(stored: StoredResponse) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let mut resp = (status, stored.body).into_response();
    if let Ok(ct) = HeaderValue::from_str(&stored.content_type) {
        resp.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    resp.headers_mut()
        .insert(REPLAYED, HeaderValue::from_static("true"));
    resp
}
