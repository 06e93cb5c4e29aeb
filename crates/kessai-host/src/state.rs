//! Shared state of the host's HTTP handlers.

use std::sync::Arc;

use kessai_store::Db;

use crate::bootstrap::AdminTokenHash;
use crate::clock::Clock;
use crate::keystore::IssuerKeys;
use crate::metrics::Metrics;

/// Everything a handler may use (cheap to clone).
#[derive(Debug, Clone)]
pub struct AppState {
    /// The database (ledger, registry, keys, idempotency, audit log).
    pub db: Db,
    /// Issuer keys.
    pub keys: IssuerKeys,
    /// The clock (injected for tests).
    pub clock: Arc<dyn Clock>,
    /// Hash of the admin token.
    pub admin_token: AdminTokenHash,
    /// Metrics registry.
    pub metrics: Metrics,
    /// Flow settings.
    pub settings: Arc<crate::settings::Settings>,
}
