//! Runs the matcher accuracy benchmark and writes the DET curve.
//!
//! ```text
//! cargo run --release -p kessai-biometric --example bench_biometric -- det.png [fingers] [impressions] [seed] [threads]
//! ```
#![allow(clippy::float_arithmetic, reason = "printing rates")]

use std::time::Instant;

use kessai_biometric::bench::{BenchConfig, det_png, recommended_threshold, run_accuracy};

fn percent(ppm: u32) -> String {
    format!("{:.4}%", f64::from(ppm) / 10_000.0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = args
        .first()
        .cloned()
        .unwrap_or_else(|| "det.png".to_owned());
    let fingers = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(500);
    let impressions = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(8);
    let seed = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(1);
    let mut config = BenchConfig::new(fingers, impressions, seed);
    if let Some(t) = args.get(4) {
        config.threads = t.parse()?;
    }
    let start = Instant::now();
    let report = run_accuracy(&config);
    let elapsed = start.elapsed();
    println!(
        "{} fingers x {} impressions, seed {}: {} genuine, {} impostor comparisons in {:.1} s ({} threads)",
        fingers,
        impressions,
        seed,
        report.genuine_scores.len(),
        report.impostor_scores.len(),
        elapsed.as_secs_f64(),
        config.threads
    );
    for op in &report.fnmr_at_fmr {
        println!(
            "FMR <= {:>8}: threshold {:>5}  FMR {:>9}  FNMR {:>9}{}",
            percent(op.target_fmr_ppm),
            op.threshold,
            percent(op.fmr_ppm),
            percent(op.fnmr_ppm),
            if op.resolved {
                ""
            } else {
                "  (not resolved: too few impostors)"
            }
        );
    }
    println!(
        "EER {} at threshold {}",
        percent(report.eer_ppm),
        report.eer_threshold
    );
    println!(
        "match time: mean {:.1} us, p99 {:.1} us, max {:.1} us",
        report.mean_match_ns as f64 / 1000.0,
        report.p99_match_ns as f64 / 1000.0,
        report.max_match_ns as f64 / 1000.0
    );
    println!(
        "recommended threshold (FMR 0.01%): {:?}",
        recommended_threshold(&report, 100)
    );
    let max_imp = report.impostor_scores.iter().max().copied().unwrap_or(0);
    let mut g = report.genuine_scores.clone();
    g.sort_unstable();
    println!(
        "impostor max {}, genuine p1 {} p3 {} p10 {} median {}",
        max_imp,
        g[g.len() / 100],
        g[g.len() * 3 / 100],
        g[g.len() / 10],
        g[g.len() / 2]
    );
    std::fs::write(&out, det_png(&report))?;
    println!("DET curve written to {out}");
    Ok(())
}
