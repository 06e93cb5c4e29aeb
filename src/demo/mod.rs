//! `kessai demo`: each flow narrated end to end against an embedded issuer
//! host (SQLite in a temporary directory — or PostgreSQL in a fresh schema
//! with `KESSAI_DEMO_DATABASE_URL` —, a virtual clock the demo can move,
//! real HTTP on 127.0.0.1), with every customer-side and merchant role
//! played in-process by the same code the role commands use.

pub mod flow_a;
pub mod flow_b;
pub mod flow_c;
pub mod flow_d;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use kessai_host::clock::ManualClock;
use kessai_host::state::AppState;

/// Which flows to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Flow {
    /// Flow A: fingerprint device.
    A,
    /// Flow B: IC-card e-money.
    B,
    /// Flow C: card reader plugged into the phone.
    C,
    /// Flow D: temporary password at the POS.
    D,
}

/// A running embedded host and what the demo roles need to reach it.
#[derive(Debug)]
pub struct DemoCtx {
    /// The host's state (ledger, registry, keys) for setup and checks.
    pub app: AppState,
    /// The host's clock; the demo moves it to show expiry and timeouts.
    pub clock: ManualClock,
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
    /// HTTP client for the roles.
    pub http: reqwest::Client,
    /// The admin bearer token (for setup calls).
    pub admin_token: String,
    /// Where to write evidence (`--evidence-dir`), per flow subdirectory.
    pub evidence_dir: Option<PathBuf>,
    /// Scratch directory (card state files, device state, receipts).
    pub work_dir: PathBuf,
    _tmp: tempfile::TempDir,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for DemoCtx {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// 2026-11-22T00:00:00Z: the demos' virtual clock starts here.
pub const DEMO_EPOCH_MS: i64 = 1_795_305_600_000;

impl DemoCtx {
    /// Starts an embedded host on a fresh SQLite database.
    pub async fn start(
        evidence_dir: Option<PathBuf>,
        settings: kessai_host::settings::Settings,
    ) -> anyhow::Result<DemoCtx> {
        let tmp = tempfile::tempdir()?;
        let data = tmp.path().join("host");
        // KESSAI_DEMO_DATABASE_URL=postgres://...: run the demo's host on
        // PostgreSQL instead, in a fresh schema (CI does).
        let db = match std::env::var("KESSAI_DEMO_DATABASE_URL") {
            Ok(url) => {
                let mut cfg = kessai_store::DbConfig::new(url);
                let mut r = [0u8; 6];
                rand::fill(&mut r);
                cfg.postgres_schema = Some(format!("demo_{}", hex::encode(r)));
                kessai_store::Db::open_with(cfg).await?
            }
            Err(_) => kessai_store::Db::open(data.to_str().context("temp path")?).await?,
        };
        let clock = ManualClock::new(DEMO_EPOCH_MS);
        let mut app = kessai_host::app::state_for_db(db, &data, Arc::new(clock.clone())).await?;
        app.settings = Arc::new(settings);
        let (token, _) = kessai_host::bootstrap::admin_token(&data, None)?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let router = kessai_host::app::router(app.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        let work_dir = tmp.path().join("work");
        std::fs::create_dir_all(&work_dir)?;
        Ok(DemoCtx {
            app,
            clock,
            base_url: format!("http://{addr}"),
            http: reqwest::Client::new(),
            admin_token: token.to_string(),
            evidence_dir,
            work_dir,
            _tmp: tmp,
            server,
        })
    }

    /// Prints one narrated step.
    pub fn say(&self, who: &str, what: impl std::fmt::Display) {
        println!("  [{who:>8}] {what}");
    }

    /// An admin call (setup): POST `path` with `body`, returning the JSON
    /// answer; any non-2xx is an error.
    pub async fn admin_post(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        let mut key = [0u8; 16];
        rand::fill(&mut key);
        let resp = self
            .http
            .post(format!("{}{path}", self.base_url))
            .bearer_auth(&self.admin_token)
            .header("idempotency-key", hex::encode(key))
            .json(&body)
            .send()
            .await?;
        let status = resp.status();
        let v: serde_json::Value = resp.json().await.unwrap_or(serde_json::Value::Null);
        if !status.is_success() {
            anyhow::bail!("admin {path}: {status}: {v}");
        }
        Ok(v)
    }

    /// The evidence directory of one flow, created, if `--evidence-dir` was given.
    pub fn evidence_for(&self, flow: &str) -> anyhow::Result<Option<PathBuf>> {
        match &self.evidence_dir {
            Some(d) => {
                let p = d.join(flow);
                std::fs::create_dir_all(&p)?;
                Ok(Some(p))
            }
            None => Ok(None),
        }
    }
}

/// Runs one flow's demo.
pub async fn run_flow(flow: Flow, evidence_dir: Option<PathBuf>) -> anyhow::Result<()> {
    match flow {
        Flow::A => flow_a::run(evidence_dir).await,
        Flow::C => flow_c::run(evidence_dir).await,
        Flow::B => flow_b::run(evidence_dir).await,
        Flow::D => flow_d::run(evidence_dir).await,
    }
}
