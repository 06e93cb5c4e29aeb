//! `kessai serve`.

use std::net::SocketAddr;
use std::process::ExitCode;

use crate::DataArgs;

/// Arguments of `kessai serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Address to listen on.
    #[arg(long, env = "KESSAI_LISTEN", default_value = "127.0.0.1:8420")]
    listen: SocketAddr,
}

/// Runs the host until Ctrl-C / SIGTERM.
pub async fn run(a: ServeArgs) -> anyhow::Result<ExitCode> {
    let config = a.data.host_config(a.listen);
    kessai_host::app::serve(config, shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}
