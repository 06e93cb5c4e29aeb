//! Measures ledger throughput with durable commits.
//!
//! ```text
//! cargo run --release -p kessai-store --example ledger_bench -- [URL|DIR] [SECONDS] [CONCURRENCY] [ACCOUNTS]
//! ```
//!
//! Without a URL it uses a fresh SQLite directory under the temp dir
//! (removed afterwards). Prints the report as JSON.

use std::time::Duration;

use kessai_store::bench::{BenchConfig, bench_ledger};
use kessai_store::{Db, StoreError};

#[tokio::main]
async fn main() -> Result<(), StoreError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let temp = std::env::temp_dir().join(format!("kessai-bench-{}", std::process::id()));
    let url = args
        .first()
        .cloned()
        .unwrap_or_else(|| temp.to_string_lossy().into_owned());
    let arg = |i: usize, default: u64| -> u64 {
        args.get(i).and_then(|s| s.parse().ok()).unwrap_or(default)
    };
    let config = BenchConfig {
        duration: Duration::from_secs(arg(1, 5)),
        concurrency: arg(2, 256) as usize,
        accounts: arg(3, 1000) as usize,
        ..BenchConfig::default()
    };
    let db = Db::open(&url).await?;
    let report = bench_ledger(&db, config).await?;
    db.close().await;
    if args.is_empty() {
        std::fs::remove_dir_all(&temp).ok();
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&report).unwrap_or_default()
    );
    Ok(())
}
