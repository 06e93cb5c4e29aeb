//! Building the router and running the server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};

use crate::bootstrap::{self, AdminTokenHash, Origin};
use crate::clock::{Clock, SystemClock};
use crate::keystore::IssuerKeys;
use crate::metrics::{HttpLabels, Metrics};
use crate::routes::{admin, system};
use crate::state::AppState;

/// How to run the host.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Data directory: SQLite database (default backend), master key and
    /// admin token files.
    pub data_dir: PathBuf,
    /// Address to listen on.
    pub listen: SocketAddr,
    /// `postgres://...` to use PostgreSQL instead of the embedded SQLite.
    pub database_url: Option<String>,
    /// PostgreSQL schema to use (created if missing); `None`: the
    /// connection's default search path.
    pub database_schema: Option<String>,
}

impl HostConfig {
    /// Opens (creating and migrating on first use) the configured database.
    pub async fn open_db(&self) -> Result<kessai_store::Db, kessai_store::StoreError> {
        let url = self
            .database_url
            .clone()
            .unwrap_or_else(|| self.data_dir.to_string_lossy().into_owned());
        let mut cfg = kessai_store::DbConfig::new(url);
        cfg.postgres_schema = self.database_schema.clone();
        kessai_store::Db::open_with(cfg).await
    }
}

/// Host start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// Master key / admin token bootstrap.
    #[error(transparent)]
    Bootstrap(#[from] bootstrap::BootstrapError),
    /// Database.
    #[error(transparent)]
    Store(#[from] kessai_store::StoreError),
    /// Key store.
    #[error(transparent)]
    Keys(#[from] crate::keystore::KeyStoreError),
    /// Socket.
    #[error("listen: {0}")]
    Io(#[from] std::io::Error),
}

/// Opens the database and secrets of `config` and builds the shared state.
pub async fn open_state(config: &HostConfig, clock: Arc<dyn Clock>) -> Result<AppState, HostError> {
    let db = config.open_db().await?;
    state_for_db(db, &config.data_dir, clock).await
}

/// Builds the shared state over an already open database; the master key
/// and admin token come from the environment or `data_dir`.
pub async fn state_for_db(
    db: kessai_store::Db,
    data_dir: &std::path::Path,
    clock: Arc<dyn Clock>,
) -> Result<AppState, HostError> {
    let config_dir = data_dir;
    let (master, origin) = bootstrap::master_key(
        config_dir,
        std::env::var(bootstrap::MASTER_KEY_ENV).ok().as_deref(),
    )?;
    if origin == Origin::Generated {
        let path = config_dir.join(bootstrap::MASTER_KEY_FILE);
        tracing::warn!(path = %path.display(), "generated a NEW master key: back it up; every issuer key is sealed under it");
        eprintln!(
            "\n*** kessai: generated a new master key at {} ***\n*** Back it up: without it the issuer keys cannot be opened. ***\n",
            path.display()
        );
    }
    let (token, origin) = bootstrap::admin_token(
        config_dir,
        std::env::var(bootstrap::ADMIN_TOKEN_ENV).ok().as_deref(),
    )?;
    if origin == Origin::Generated {
        let path = config_dir.join(bootstrap::ADMIN_TOKEN_FILE);
        eprintln!(
            "*** kessai: generated an admin token at {} (use it as 'Authorization: Bearer <token>') ***\n",
            path.display()
        );
    }
    let keys = IssuerKeys::new(db.clone(), master, clock.clone());
    keys.ensure_all().await?;
    Ok(AppState {
        db,
        keys,
        clock,
        admin_token: AdminTokenHash::of(&token),
        metrics: Metrics::new(),
        settings: Arc::new(crate::settings::Settings::default()),
    })
}

async fn track(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let start = Instant::now();
    let resp = next.run(req).await;
    let labels = HttpLabels {
        method,
        route,
        status: resp.status().as_u16(),
    };
    app.metrics.http_requests.get_or_create(&labels).inc();
    app.metrics
        .http_latency
        .get_or_create(&labels)
        .observe(start.elapsed().as_secs_f64());
    resp
}

/// The router with every route and layer.
pub fn router(state: AppState) -> Router {
    let admin_routes = Router::new()
        .route(
            "/merchants",
            post(admin::create_merchant).get(admin::list_merchants),
        )
        .route("/merchants/{id}", get(admin::get_merchant))
        .route("/merchants/{id}/keys", post(admin::rotate_merchant_key))
        .route("/merchants/{id}/status", post(admin::set_merchant_status))
        .route("/cardholders", post(admin::create_cardholder))
        .route("/cardholders/{id}", get(admin::get_cardholder))
        .route("/accounts", post(admin::create_account))
        .route("/accounts/{id}", get(admin::get_account))
        .route("/transfers", post(admin::create_transfer))
        .route("/transfers/{id}/resolve", post(admin::resolve_transfer))
        .route("/keys", get(admin::list_keys))
        .route("/keys/{purpose}/rotate", post(admin::rotate_key))
        // Layers run outside-in in reverse order of `.layer` calls: auth
        // first, then idempotency, then the handler.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::idempotency::layer,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::auth::require_admin,
        ));
    let idempotent = |r: Router<AppState>| {
        r.layer(middleware::from_fn_with_state(
            state.clone(),
            crate::idempotency::layer,
        ))
    };
    Router::new()
        .nest("/v1/flow-a", idempotent(crate::routes::flow_a::router()))
        .nest("/v1/flow-b", idempotent(crate::routes::flow_b::router()))
        .nest("/v1/flow-c", idempotent(crate::routes::flow_c::router()))
        .nest("/v1/flow-d", idempotent(crate::routes::flow_d::router()))
        .route("/health", get(system::health))
        .route("/openapi.json", get(system::openapi))
        .route("/metrics", get(system::metrics))
        .nest("/v1/admin", admin_routes)
        .fallback(|| async { crate::problem::ApiError::not_found("route") })
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

/// Runs the host until `shutdown` resolves.
pub async fn serve(
    config: HostConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), HostError> {
    let state = open_state(&config, Arc::new(SystemClock)).await?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, backend = ?state.db.backend(), "kessai host listening");
    eprintln!("kessai host listening on http://{addr} (GET /health, /openapi.json, /metrics)");
    let maintenance = tokio::spawn(crate::maintenance::run_forever(state.clone()));
    let served = axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await;
    maintenance.abort();
    served?;
    Ok(())
}
