//! The kessai issuer host: the HTTP API (axum on tokio), the issuer key
//! store, admin, idempotency, RFC 9457 problem details and metrics.
//!
//! What it does: binds a socket, reads the clock and talks to the database
//! (through `kessai-store`); everything it decides about money is in
//! `kessai-ledger` and the flow crates, which it drives.
//!
//! What it does not do: hold card secrets in clear beyond one request, or
//! log them (card numbers are masked types; PINs and keys have no Display).
//!
//! ```no_run
//! # async fn run() -> Result<(), kessai_host::app::HostError> {
//! let config = kessai_host::app::HostConfig {
//!     data_dir: "kessai-data".into(),
//!     listen: "127.0.0.1:8420".parse().unwrap(),
//!     database_url: None,
//!     database_schema: None,
//! };
//! kessai_host::app::serve(config, std::future::pending()).await
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod app;
pub mod auth;
pub mod bootstrap;
pub mod card_security;
pub mod clock;
pub mod evidence_export;
pub mod idempotency;
pub mod json;
pub mod keystore;
pub mod ledger_api;
pub mod maintenance;
pub mod metrics;
pub mod openapi;
pub mod problem;
pub mod routes;
pub mod settings;
pub mod state;
