//! `kessai`: the one command-line entry point of kessai — the issuer host,
//! admin, audit and benchmarks (and, as the flows land, the customer-side
//! roles and the demo).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

mod cli;
mod demo;

/// kessai: secure card settlement where card secrets stay in hardware the
/// customer holds. The issuer host settles every payment exactly once in a
/// double-entry ledger; every message is signed or encrypted end to end.
#[derive(Debug, Parser)]
#[command(name = "kessai", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the issuer's data lives (shared by every subcommand that opens it).
#[derive(Debug, Clone, clap::Args)]
pub struct DataArgs {
    /// Data directory: embedded SQLite database, master key, admin token.
    /// Created on first run.
    #[arg(long, env = "KESSAI_DATA_DIR", default_value = "kessai-data")]
    pub data_dir: PathBuf,
    /// Use PostgreSQL instead of the embedded SQLite, e.g.
    /// postgres://user@127.0.0.1:5432/kessai. The master key and admin token
    /// still come from the data directory or the KESSAI_MASTER_KEY /
    /// KESSAI_ADMIN_TOKEN environment variables.
    #[arg(long, env = "KESSAI_DATABASE_URL")]
    pub database_url: Option<String>,
    /// PostgreSQL schema to use (created on first run); lets several
    /// deployments or test runs share one database.
    #[arg(long, env = "KESSAI_DATABASE_SCHEMA", requires = "database_url")]
    pub database_schema: Option<String>,
}

impl DataArgs {
    /// The host configuration for these data arguments.
    pub fn host_config(&self, listen: std::net::SocketAddr) -> kessai_host::app::HostConfig {
        kessai_host::app::HostConfig {
            data_dir: self.data_dir.clone(),
            listen,
            database_url: self.database_url.clone(),
            database_schema: self.database_schema.clone(),
        }
    }

    /// Opens the database only (no keys, no token).
    pub async fn open_db(&self) -> anyhow::Result<kessai_store::Db> {
        Ok(self
            .host_config("127.0.0.1:0".parse().expect("static address"))
            .open_db()
            .await?)
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the issuer host (HTTP API) until Ctrl-C.
    Serve(cli::serve::ServeArgs),
    /// Recompute every ledger balance from the transfers and report any
    /// difference (exit 1 if the ledger is inconsistent).
    Audit(cli::audit::AuditArgs),
    /// Administer the issuer: merchants, cardholders, accounts, keys.
    #[command(subcommand)]
    Admin(cli::admin::AdminCommand),
    /// Measure performance (reports, never pass/fail).
    #[command(subcommand)]
    Bench(cli::bench::BenchCommand),
    /// The IC card emulator: personalize, show, and plug into PC/SC.
    #[command(subcommand)]
    Card(cli::card::CardCommand),
    /// Run the payment flows end to end against an embedded host, narrated.
    Demo(cli::demo::DemoArgs),
    /// The customer's phone of flow D: card + PIN → one-time temporary
    /// password (digits + QR), merchant-card payment, pushed receipts.
    Phone(cli::phone::PhoneArgs),
    /// The merchant's POS of flow D: key in / scan the temporary password
    /// with the sale, print the signed receipt.
    Pos(cli::pos::PosArgs),
    /// The customer's wallet of flow B (IC-card e-money): pay a bill with a
    /// card, load value onto a card.
    #[command(subcommand)]
    Wallet(cli::wallet::WalletCommand),
    /// The merchant side of flow B: key files, bills, the shop server.
    #[command(subcommand)]
    Shop(cli::shop::ShopCommand),
    /// Flow C roles: the phone with its card reader, and the merchant terminal.
    #[command(subcommand)]
    Reader(cli::reader::ReaderCommand),
    /// An emulated fingerprint device (flow A): enrol with the issuer, buy,
    /// update keys, unlock, show.
    #[command(subcommand)]
    Device(cli::device::DeviceCommand),
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("KESSAI_LOG")
        // PostgreSQL's NOTICEs (e.g. "drop cascades to ...") are not ours.
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx::postgres::notice=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // KESSAI_LOG_FORMAT=json: one JSON object per line, for log shippers.
    if std::env::var("KESSAI_LOG_FORMAT").is_ok_and(|v| v == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        match cli.command {
            Command::Serve(a) => cli::serve::run(a).await,
            Command::Audit(a) => cli::audit::run(a).await,
            Command::Admin(a) => cli::admin::run(a).await,
            Command::Bench(a) => cli::bench::run(a).await,
            Command::Card(a) => cli::card::run(a).await,
            Command::Demo(a) => cli::demo::run(a).await,
            Command::Phone(a) => cli::phone::run(a).await,
            Command::Pos(a) => cli::pos::run(a).await,
            Command::Wallet(a) => cli::wallet::run(a).await,
            Command::Shop(a) => cli::shop::run(a).await,
            Command::Reader(a) => cli::reader::run(a).await,
            Command::Device(a) => cli::device::run(a).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
