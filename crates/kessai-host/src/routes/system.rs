//! Unauthenticated system endpoints: health, OpenAPI document, metrics.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;

use crate::state::AppState;

/// Health report.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` when the database answers.
    pub status: String,
    /// `sqlite` or `postgres`.
    pub backend: String,
    /// Host version.
    pub version: String,
}

/// Liveness and database reachability.
#[utoipa::path(get, path = "/health", tag = "system",
    responses((status = 200, description = "Host and database are up", body = Health),
              (status = 503, description = "Database unreachable", body = crate::problem::Problem)))]
pub async fn health(State(app): State<AppState>) -> impl IntoResponse {
    let backend = match app.db.backend() {
        kessai_store::Backend::Sqlite => "sqlite",
        kessai_store::Backend::Postgres => "postgres",
    };
    let ok: Result<i64, sqlx::Error> = kessai_store::on_pool!(app.db, |pool| {
        sqlx::query_scalar("SELECT CAST(1 AS BIGINT)")
            .fetch_one(pool)
            .await
    });
    let (status, text) = match ok {
        Ok(_) => (StatusCode::OK, "ok"),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "database unreachable"),
    };
    (
        status,
        Json(Health {
            status: text.to_string(),
            backend: backend.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }),
    )
}

/// The OpenAPI 3.1 document of this API, generated from the code.
#[utoipa::path(get, path = "/openapi.json", tag = "system",
    responses((status = 200, description = "OpenAPI document", content_type = "application/json")))]
pub async fn openapi() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::openapi::document()
            .to_pretty_json()
            .unwrap_or_default(),
    )
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "system",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.metrics.render(),
    )
}
