//! `kessai bench ...`: benchmarks print numbers; they never pass or fail.

use std::process::ExitCode;
use std::time::Duration;

/// Benchmarks.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Ledger postings per second with durable commits, commit latency, and
    /// the same machine's raw durable single-row insert rate as a reference.
    Ledger(LedgerBench),
    /// Fingerprint matcher accuracy on a generated set (flow A device):
    /// genuine and impostor comparisons, FNMR at FMR 1 % / 0.1 % / 0.01 %,
    /// EER, DET curve as PNG, match time.
    Biometric(BiometricBench),
}

/// Arguments of `kessai bench biometric`.
#[derive(Debug, clap::Args)]
pub struct BiometricBench {
    /// Synthetic fingers.
    #[arg(long, default_value_t = 500)]
    fingers: u32,
    /// Impressions per finger (at least 2).
    #[arg(long, default_value_t = 8)]
    impressions: u32,
    /// Seed of the whole data set.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Worker threads for the comparisons.
    #[arg(long, default_value_t = 2)]
    threads: u32,
    /// Write the DET curve (FNMR against FMR, log axes) as a PNG here.
    #[arg(long)]
    det_png: Option<std::path::PathBuf>,
    /// Print one JSON object (fields: fingers, impressions, seed,
    /// genuine, impostor, operating_points [target_fmr_ppm, threshold,
    /// fmr_ppm, fnmr_ppm, resolved], eer_ppm, eer_threshold,
    /// mean_match_ns, p99_match_ns, max_match_ns, device_threshold).
    #[arg(long)]
    json: bool,
}

/// Which database to measure.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Backend {
    /// Embedded SQLite (synchronous=FULL) in a fresh temporary directory.
    Sqlite,
    /// PostgreSQL (synchronous_commit=on) in a fresh schema.
    Postgres,
}

/// Arguments of `kessai bench ledger`.
#[derive(Debug, clap::Args)]
pub struct LedgerBench {
    /// Database backend.
    #[arg(long, value_enum, default_value = "sqlite")]
    backend: Backend,
    /// PostgreSQL URL (with --backend postgres).
    #[arg(
        long,
        env = "KESSAI_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    database_url: String,
    /// Concurrent submitting tasks.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Seconds to post for.
    #[arg(long, default_value_t = 5)]
    duration: u64,
    /// Accounts to post between.
    #[arg(long, default_value_t = 1000)]
    accounts: usize,
    /// Print one JSON object (fields: backend, concurrency, accounts,
    /// elapsed_ms, postings, refused, postings_per_s, p50_commit_ms,
    /// p99_commit_ms, max_commit_ms, raw_single_row_inserts,
    /// raw_single_row_inserts_per_s).
    #[arg(long)]
    json: bool,
}

/// Runs a benchmark.
pub async fn run(cmd: BenchCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCommand::Ledger(a) => ledger(a).await,
        BenchCommand::Biometric(a) => biometric(a).await,
    }
}

async fn ledger(a: LedgerBench) -> anyhow::Result<ExitCode> {
    let tmp = tempfile::tempdir()?;
    let db = match a.backend {
        Backend::Sqlite => kessai_store::Db::open(tmp.path().to_str().unwrap_or(".")).await?,
        Backend::Postgres => {
            let mut cfg = kessai_store::DbConfig::new(a.database_url.clone());
            let mut r = [0u8; 6];
            rand::fill(&mut r);
            cfg.postgres_schema = Some(format!("bench_{}", hex::encode(r)));
            kessai_store::Db::open_with(cfg).await?
        }
    };
    let config = kessai_store::bench::BenchConfig {
        concurrency: a.concurrency.max(1),
        duration: Duration::from_secs(a.duration.max(1)),
        accounts: a.accounts.max(2),
        ..Default::default()
    };
    if !a.json {
        eprintln!(
            "posting for {}s with {} concurrent submitters over {} accounts ...",
            a.duration, config.concurrency, config.accounts
        );
    }
    let report = kessai_store::bench::bench_ledger(&db, config).await?;
    if let (Backend::Postgres, kessai_store::DbPool::Postgres(pool)) = (a.backend, db.pool()) {
        // Leave nothing behind in the shared database.
        let schema: String = sqlx::query_scalar("SELECT current_schema()")
            .fetch_one(pool)
            .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA \"{schema}\" CASCADE"
        )))
        .execute(pool)
        .await?;
    }
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("backend              {}", report.backend);
        println!(
            "postings             {} in {} ms ({} refused)",
            report.postings, report.elapsed_ms, report.refused
        );
        println!("postings/s           {:.0}", report.postings_per_s);
        println!("commit latency p50   {:.2} ms", report.p50_commit_ms);
        println!("commit latency p99   {:.2} ms", report.p99_commit_ms);
        println!("commit latency max   {:.2} ms", report.max_commit_ms);
        println!(
            "raw durable inserts  {:.0}/s (one row per commit, reference)",
            report.raw_single_row_inserts_per_s
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn biometric(a: BiometricBench) -> anyhow::Result<ExitCode> {
    use kessai_biometric::bench::{BenchConfig, det_png, run_accuracy};
    if a.impressions < 2 || a.fingers < 2 {
        anyhow::bail!("need at least 2 fingers and 2 impressions per finger");
    }
    let mut config = BenchConfig::new(a.fingers, a.impressions, a.seed);
    config.threads = a.threads.max(1);
    eprintln!(
        "generating {} fingers x {} impressions (seed {}) and comparing...",
        a.fingers, a.impressions, a.seed
    );
    let report = tokio::task::spawn_blocking(move || run_accuracy(&config)).await?;
    if let Some(path) = &a.det_png {
        std::fs::write(path, det_png(&report))?;
        eprintln!("DET curve written to {}", path.display());
    }
    // Rates are integer ppm; print them as percentages with integer
    // arithmetic (4 decimals).
    let pct = |ppm: u32| format!("{}.{:04} %", ppm / 10_000, ppm % 10_000);
    let us = |ns: u64| format!("{}.{:03} ms", ns / 1_000_000, ns / 1_000 % 1_000);
    let device = kessai_biometric::Matcher::DEFAULT_THRESHOLD;
    if a.json {
        let points: Vec<_> = report
            .fnmr_at_fmr
            .iter()
            .map(|p| {
                serde_json::json!({
                    "target_fmr_ppm": p.target_fmr_ppm, "threshold": p.threshold,
                    "fmr_ppm": p.fmr_ppm, "fnmr_ppm": p.fnmr_ppm, "resolved": p.resolved,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "fingers": a.fingers, "impressions": a.impressions, "seed": a.seed,
                "genuine": report.genuine_scores.len(), "impostor": report.impostor_scores.len(),
                "operating_points": points, "eer_ppm": report.eer_ppm,
                "eer_threshold": report.eer_threshold, "mean_match_ns": report.mean_match_ns,
                "p99_match_ns": report.p99_match_ns, "max_match_ns": report.max_match_ns,
                "device_threshold": device,
            })
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "fingerprint matcher: {} fingers x {} impressions, seed {}",
        a.fingers, a.impressions, a.seed
    );
    println!(
        "  comparisons: {} genuine, {} impostor",
        report.genuine_scores.len(),
        report.impostor_scores.len()
    );
    println!("  FMR target   threshold   FMR measured   FNMR");
    for p in &report.fnmr_at_fmr {
        println!(
            "  {:>10}   {:>9}   {:>12}   {}{}",
            pct(p.target_fmr_ppm),
            p.threshold,
            pct(p.fmr_ppm),
            pct(p.fnmr_ppm),
            if p.resolved {
                ""
            } else {
                "  (unresolved: too few impostor comparisons)"
            }
        );
    }
    println!(
        "  EER {} at threshold {}",
        pct(report.eer_ppm),
        report.eer_threshold
    );
    println!(
        "  match time: mean {}, p99 {}, max {}",
        us(report.mean_match_ns),
        us(report.p99_match_ns),
        us(report.max_match_ns)
    );
    println!("  device threshold (Matcher::DEFAULT_THRESHOLD): {device}");
    Ok(ExitCode::SUCCESS)
}
