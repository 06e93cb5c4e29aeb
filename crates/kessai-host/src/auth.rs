//! Admin authentication: `Authorization: Bearer <admin token>`.
//!
//! Mounted as a middleware in front of every admin route (and in front of
//! the idempotency layer), so an unauthenticated call is answered 401
//! before anything is read or written.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::problem::ApiError;
use crate::state::AppState;

/// True if the request carries the admin bearer token.
fn authorized(app: &AppState, headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|token| app.admin_token.matches(token.trim()))
}

/// The 401 answer (logged without the presented token).
fn refusal(path: &str) -> Response {
    tracing::warn!(path = %path, "admin call refused: bad or missing token");
    let mut resp = ApiError::unauthorized().into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        axum::http::HeaderValue::from_static("Bearer realm=\"kessai-admin\""),
    );
    resp
}

/// Middleware: refuses requests without the admin bearer token.
pub async fn require_admin(State(app): State<AppState>, req: Request, next: Next) -> Response {
    if authorized(&app, req.headers()) {
        next.run(req).await
    } else {
        refusal(req.uri().path())
    }
}

/// Extractor form of the same check, for admin handlers inside routers
/// that are built without their state (the flow routers): a handler that
/// takes `_admin: Admin` is refused with the same 401 before its body is
/// read.
#[derive(Debug)]
pub struct Admin;

impl axum::extract::FromRequestParts<AppState> for Admin {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        app: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if authorized(app, &parts.headers) {
            Ok(Admin)
        } else {
            Err(refusal(parts.uri.path()))
        }
    }
}
