//! `ApiJson<T>`: a JSON body extractor whose rejections are problem details
//! that never echo submitted values (a card number sent in the wrong field
//! must not bounce back in an error or reach a log line).

use axum::extract::{FromRequest, Request};
use axum::http::header;
use serde::de::DeserializeOwned;

use crate::problem::ApiError;

/// Largest accepted request body, in bytes.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// A JSON request body, deserialized with the type's own rules
/// (`deny_unknown_fields` on every API type).
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| {
                let ct = ct.split(';').next().unwrap_or("").trim();
                ct == "application/json" || ct.ends_with("+json")
            });
        if !is_json {
            return Err(ApiError::new(
                axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Body must be application/json",
            ));
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|_| {
                ApiError::new(
                    axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                    "body-unreadable",
                    "Request body could not be read or is too large",
                )
            })?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Parses a JSON body into `T`, mapping errors to problems that name the
/// failing field or position but never the submitted value.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Syntax | Category::Eof | Category::Io => {
                ApiError::bad_request("malformed-json", "Body is not valid JSON").with_detail(
                    format!("syntax error at line {} column {}", e.line(), e.column()),
                )
            }
            Category::Data => {
                let msg = e.to_string();
                // serde's messages for these two name only fields.
                let safe = msg.starts_with("unknown field") || msg.starts_with("missing field");
                let detail = if safe {
                    msg.split(" at line").next().unwrap_or("").to_string()
                } else {
                    format!(
                        "a value does not match the schema (line {} column {})",
                        e.line(),
                        e.column()
                    )
                };
                ApiError::bad_request("invalid-body", "Body does not match the schema")
                    .with_detail(detail)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        pan: kessai_secrets::CardNumber,
        n: u32,
    }

    #[test]
    fn errors_never_echo_values() {
        let e = parse_json::<Body>(br#"{"pan":"4111111111111112","n":1}"#).unwrap_err();
        assert_eq!(e.slug(), "invalid-body");
        assert!(!format!("{:?}", e.to_problem()).contains("4111111111111112"));
        let e = parse_json::<Body>(br#"{"pan":4111111111111111,"n":1}"#).unwrap_err();
        assert!(!format!("{:?}", e.to_problem()).contains("4111111111111111"));
        let e = parse_json::<Body>(br#"{"pan":"4111111111111111","n":1,"x":2}"#).unwrap_err();
        assert!(e.to_problem().detail.unwrap().contains("unknown field `x`"));
        let e = parse_json::<Body>(b"{not json").unwrap_err();
        assert_eq!(e.slug(), "malformed-json");
    }
}
