//! RFC 9457 problem details: the only shape in which the host reports
//! errors over HTTP.
//!
//! Core crates return their own error enums; this module maps them to a
//! status, a stable `type` URI (`urn:kessai:problem:<slug>`), a short
//! `title` and a `detail` that never contains secrets or internals. Internal
//! failures are logged with an opaque incident id and answered as a bare 500.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Media type of problem documents (RFC 9457 §3).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem details document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// URI identifying the problem type: `urn:kessai:problem:<slug>`.
    #[serde(rename = "type")]
    pub type_uri: String,
    /// Short human summary of the problem type.
    pub title: String,
    /// HTTP status code.
    pub status: u16,
    /// Human explanation of this occurrence (never secrets).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// An error a handler returns; converts into a problem response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    status: StatusCode,
    slug: &'static str,
    title: &'static str,
    detail: Option<String>,
}

impl ApiError {
    /// A problem with the given status, slug and title.
    pub fn new(status: StatusCode, slug: &'static str, title: &'static str) -> Self {
        Self {
            status,
            slug,
            title,
            detail: None,
        }
    }

    /// Adds a detail sentence. Callers pass only text that is safe to show
    /// to the client (no card numbers, PINs, keys, SQL).
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The problem slug (last part of the type URI).
    pub fn slug(&self) -> &'static str {
        self.slug
    }

    /// 400 with a slug.
    pub fn bad_request(slug: &'static str, title: &'static str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, slug, title)
    }

    /// 401: missing or wrong credentials.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Missing or invalid credentials",
        )
    }

    /// 404.
    pub fn not_found(what: &'static str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "Not found")
            .with_detail(format!("no such {what}"))
    }

    /// 409 conflict.
    pub fn conflict(slug: &'static str, title: &'static str) -> Self {
        Self::new(StatusCode::CONFLICT, slug, title)
    }

    /// 422: well-formed but refused by a business rule.
    pub fn unprocessable(slug: &'static str, title: &'static str) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, slug, title)
    }

    /// 500: logs the cause under an incident id and hides it from the client.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        let incident = incident_id();
        tracing::error!(incident = %incident, error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
        )
        .with_detail(format!("incident {incident}"))
    }

    /// The problem document.
    pub fn to_problem(&self) -> Problem {
        Problem {
            type_uri: format!("urn:kessai:problem:{}", self.slug),
            title: self.title.to_string(),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
        }
    }
}

fn incident_id() -> String {
    let mut b = [0u8; 8];
    // Not a secret: only correlates a log line with a response.
    rand::fill(&mut b);
    hex::encode(b)
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.title, self.slug)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, Json(self.to_problem())).into_response();
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_document_has_rfc9457_members() {
        let p = ApiError::unprocessable("over-limit", "Over the limit")
            .with_detail("x")
            .to_problem();
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["type"], "urn:kessai:problem:over-limit");
        assert_eq!(v["title"], "Over the limit");
        assert_eq!(v["status"], 422);
        assert_eq!(v["detail"], "x");
    }

    #[test]
    fn internal_errors_hide_the_cause() {
        let e = ApiError::internal(&"database password=hunter2 failed");
        let p = e.to_problem();
        assert_eq!(p.status, 500);
        assert!(!p.detail.unwrap().contains("hunter2"));
    }
}
