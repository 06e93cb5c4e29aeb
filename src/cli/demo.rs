//! `kessai demo`: run the flows end to end, narrated.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::demo::{self, Flow};

/// Arguments of `kessai demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Run one flow only (default: every flow).
    #[arg(long, value_enum)]
    flow: Option<Flow>,
    /// Write every signed or encrypted artefact of the demo's settlements
    /// (`.cose` files, `index.json`, verifying public keys in `keys/`) under
    /// this directory, one subdirectory per flow.
    #[arg(long)]
    evidence_dir: Option<PathBuf>,
}

/// Runs the demo; exit 0 only if every selected flow succeeded.
pub async fn run(a: DemoArgs) -> anyhow::Result<ExitCode> {
    let flows: Vec<Flow> = match a.flow {
        Some(f) => vec![f],
        None => vec![Flow::A, Flow::B, Flow::C, Flow::D],
    };
    let mut failed = Vec::new();
    for f in flows {
        println!("\n=== flow {f:?} ===");
        if let Err(e) = demo::run_flow(f, a.evidence_dir.clone()).await {
            println!("  flow {f:?} FAILED: {e:#}");
            failed.push(f);
        } else {
            println!("  flow {f:?} ok");
        }
    }
    if failed.is_empty() {
        println!("\nall flows succeeded");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("\nfailed: {failed:?}");
        Ok(ExitCode::FAILURE)
    }
}
