//! Matcher accuracy benchmark (what `kessai bench biometric` runs).
//!
//! Protocol (the FVC one):
//! - **genuine**: for every finger, every pair of its impressions `a < b`,
//!   impression `b` as probe against `a` as reference — `fingers ×
//!   impressions × (impressions − 1) / 2` comparisons (14 000 for 500 × 8);
//! - **impostor**: the first impression of every pair of fingers `a < b`,
//!   `b` as probe against `a` — `fingers × (fingers − 1) / 2` comparisons
//!   (124 750 for 500 fingers, enough to resolve FMR = 0.01 % with a dozen
//!   errors allowed).
//!
//! Rates are integers in parts per million (1 % = 10 000 ppm). A decision is
//! "match" when `score ≥ threshold`, so FMR(t) = share of impostor scores
//! ≥ t and FNMR(t) = share of genuine scores < t.
//!
//! [`run_accuracy`] generates the data from the seed, compares and times
//! every match (the only clock reading in this crate);
//! [`AccuracyReport::from_scores`] turns scores into rates and is pure.
//!
//! Measured with the defaults (500 × 8, seed 1, release build):
//!
//! | FMR target | threshold | FMR measured | FNMR |
//! |---|---|---|---|
//! | 1 % | 530 | 0.998 % | 0.29 % |
//! | 0.1 % | 682 | 0.099 % | 0.67 % |
//! | 0.01 % | 845 | 0.0096 % | 1.14 % |
//!
//! EER 0.42 % (threshold 589). A comparison (both templates prepared from
//! scratch) takes about 0.35 ms of CPU on the 2-core build machine.

use std::time::Instant;

use chacha20::ChaCha8Rng;
use rand_core::SeedableRng;

use crate::matcher::match_score;
use crate::png::Canvas;
use crate::synth::{FingerParams, ImpressionParams, SyntheticFinger};
use crate::template::Template;

/// FMR targets reported: 1 %, 0.1 %, 0.01 %.
pub const TARGET_FMR_PPM: [u32; 3] = [10_000, 1_000, 100];

/// What to generate and compare.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchConfig {
    /// Number of synthetic fingers.
    pub fingers: u32,
    /// Impressions per finger (at least 2 for genuine comparisons).
    pub impressions: u32,
    /// Seed of the whole data set.
    pub seed: u64,
    /// Worker threads for the comparisons (1 or more).
    pub threads: u32,
    /// Finger shape.
    pub finger: FingerParams,
    /// Impression noise.
    pub impression: ImpressionParams,
}

impl BenchConfig {
    /// `fingers × impressions` with the given seed, 2 threads and default
    /// finger and impression parameters.
    pub fn new(fingers: u32, impressions: u32, seed: u64) -> Self {
        Self {
            fingers,
            impressions,
            seed,
            threads: 2,
            finger: FingerParams::default(),
            impression: ImpressionParams::default(),
        }
    }
}

impl Default for BenchConfig {
    /// 500 fingers × 8 impressions, seed 1.
    fn default() -> Self {
        Self::new(500, 8, 1)
    }
}

/// FNMR at the smallest threshold meeting an FMR target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OperatingPoint {
    /// The FMR target, ppm.
    pub target_fmr_ppm: u32,
    /// Smallest threshold whose measured FMR is within the target.
    pub threshold: u32,
    /// Measured FMR at that threshold, ppm.
    pub fmr_ppm: u32,
    /// Measured FNMR at that threshold, ppm.
    pub fnmr_ppm: u32,
    /// `false` when there are fewer impostor comparisons than 1 / target:
    /// the point is then an extrapolation from zero observed errors.
    pub resolved: bool,
}

/// One point of the DET curve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DetPoint {
    /// Threshold.
    pub threshold: u32,
    /// FMR at the threshold, ppm.
    pub fmr_ppm: u32,
    /// FNMR at the threshold, ppm.
    pub fnmr_ppm: u32,
}

/// Result of a benchmark run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccuracyReport {
    /// Genuine comparison scores, in protocol order.
    pub genuine_scores: Vec<u32>,
    /// Impostor comparison scores, in protocol order.
    pub impostor_scores: Vec<u32>,
    /// FNMR at FMR = 1 %, 0.1 %, 0.01 %.
    pub fnmr_at_fmr: Vec<OperatingPoint>,
    /// Equal error rate, ppm (mean of FMR and FNMR where they are closest).
    pub eer_ppm: u32,
    /// Threshold at the EER.
    pub eer_threshold: u32,
    /// DET curve, thresholds ascending (FMR falling, FNMR rising).
    pub det_points: Vec<DetPoint>,
    /// Mean time of one comparison, nanoseconds (0 if not timed).
    pub mean_match_ns: u64,
    /// 99th percentile of the comparison time, nanoseconds.
    pub p99_match_ns: u64,
    /// Slowest comparison, nanoseconds.
    pub max_match_ns: u64,
}

fn ppm(count: usize, total: usize) -> u32 {
    if total == 0 {
        return 0;
    }
    ((count as u64 * 1_000_000 + total as u64 / 2) / total as u64) as u32
}

impl AccuracyReport {
    /// Rates, operating points, EER and DET curve from scores, plus timing
    /// statistics from per-comparison durations (may be empty). Pure.
    pub fn from_scores(
        genuine_scores: Vec<u32>,
        impostor_scores: Vec<u32>,
        match_ns: &[u64],
    ) -> Self {
        let mut gen_sorted = genuine_scores.clone();
        gen_sorted.sort_unstable();
        let mut imp_sorted = impostor_scores.clone();
        imp_sorted.sort_unstable();
        let (ng, ni) = (gen_sorted.len(), imp_sorted.len());
        // Counts at threshold t: impostors ≥ t, genuine < t.
        let imp_at_or_above = |t: u32| ni - imp_sorted.partition_point(|&s| s < t);
        let gen_below = |t: u32| gen_sorted.partition_point(|&s| s < t);

        // Every distinct score (and one above the top) is a threshold where
        // a rate changes.
        let mut thresholds: Vec<u32> = gen_sorted.iter().chain(&imp_sorted).copied().collect();
        let top = thresholds.iter().max().copied().unwrap_or(0);
        thresholds.push(top.saturating_add(1));
        thresholds.sort_unstable();
        thresholds.dedup();
        let det_points: Vec<DetPoint> = thresholds
            .iter()
            .map(|&t| DetPoint {
                threshold: t,
                fmr_ppm: ppm(imp_at_or_above(t), ni),
                fnmr_ppm: ppm(gen_below(t), ng),
            })
            .collect();

        let fnmr_at_fmr = TARGET_FMR_PPM
            .iter()
            .map(|&target| {
                let threshold = threshold_for(&imp_sorted, target);
                OperatingPoint {
                    target_fmr_ppm: target,
                    threshold,
                    fmr_ppm: ppm(imp_at_or_above(threshold), ni),
                    fnmr_ppm: ppm(gen_below(threshold), ng),
                    resolved: resolvable(ni, target),
                }
            })
            .collect();

        let eer_at = det_points
            .iter()
            .min_by_key(|p| (p.fmr_ppm.abs_diff(p.fnmr_ppm), p.threshold))
            .copied()
            .unwrap_or(DetPoint {
                threshold: 0,
                fmr_ppm: 0,
                fnmr_ppm: 0,
            });

        let mut times = match_ns.to_vec();
        times.sort_unstable();
        let mean_match_ns = if times.is_empty() {
            0
        } else {
            times.iter().sum::<u64>() / times.len() as u64
        };
        let p99_match_ns = times
            .get((times.len() * 99).div_ceil(100).saturating_sub(1))
            .copied()
            .unwrap_or(0);
        Self {
            genuine_scores,
            impostor_scores,
            fnmr_at_fmr,
            eer_ppm: (eer_at.fmr_ppm + eer_at.fnmr_ppm) / 2,
            eer_threshold: eer_at.threshold,
            det_points,
            mean_match_ns,
            p99_match_ns,
            max_match_ns: times.last().copied().unwrap_or(0),
        }
    }
}

fn resolvable(impostors: usize, target_fmr_ppm: u32) -> bool {
    impostors as u64 * u64::from(target_fmr_ppm) >= 1_000_000
}

/// Smallest threshold with at most `target` ppm of impostor scores at or
/// above it. `sorted` ascending.
fn threshold_for(sorted: &[u32], target_fmr_ppm: u32) -> u32 {
    let n = sorted.len();
    let allowed = (n as u64 * u64::from(target_fmr_ppm) / 1_000_000) as usize;
    if allowed >= n {
        return 0;
    }
    // The (allowed+1)-th highest impostor score must fall below the threshold.
    sorted[n - 1 - allowed].saturating_add(1)
}

/// The device threshold for an FMR target (ppm), or `None` when the report
/// has too few impostor comparisons to measure that rate (fewer than
/// 1 / target).
pub fn recommended_threshold(report: &AccuracyReport, target_fmr_ppm: u32) -> Option<u32> {
    if !resolvable(report.impostor_scores.len(), target_fmr_ppm) {
        return None;
    }
    let mut sorted = report.impostor_scores.clone();
    sorted.sort_unstable();
    Some(threshold_for(&sorted, target_fmr_ppm))
}

fn finger_seed(seed: u64, index: u32) -> u64 {
    seed ^ (u64::from(index) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Generates the data set of `config`: `impressions` templates per finger.
pub fn generate_set(config: &BenchConfig) -> Vec<Vec<Template>> {
    (0..config.fingers)
        .map(|f| {
            let mut rng = ChaCha8Rng::seed_from_u64(finger_seed(config.seed, f));
            let finger = SyntheticFinger::generate_with(&config.finger, &mut rng);
            (0..config.impressions)
                .map(|_| finger.impression(&config.impression, &mut rng))
                .collect()
        })
        .collect()
}

/// Runs the benchmark: generates the set, compares and times. Scores are
/// deterministic from the seed whatever the thread count; times are not.
pub fn run_accuracy(config: &BenchConfig) -> AccuracyReport {
    let set = generate_set(config);
    let mut jobs: Vec<(&Template, &Template)> = Vec::new();
    for imps in &set {
        for a in 0..imps.len() {
            for b in a + 1..imps.len() {
                jobs.push((&imps[b], &imps[a]));
            }
        }
    }
    let genuine = jobs.len();
    for a in 0..set.len() {
        for b in a + 1..set.len() {
            if let (Some(ra), Some(pb)) = (set[a].first(), set[b].first()) {
                jobs.push((pb, ra));
            }
        }
    }
    let threads = config.threads.max(1) as usize;
    let chunk = jobs.len().div_ceil(threads).max(1);
    let results: Vec<(u32, u64)> = std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|(probe, reference)| {
                            let start = Instant::now();
                            let score = match_score(probe, reference);
                            let ns = start.elapsed().as_nanos() as u64;
                            (score, ns)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| match h.join() {
                Ok(v) => v,
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    });
    let scores: Vec<u32> = results.iter().map(|r| r.0).collect();
    let times: Vec<u64> = results.iter().map(|r| r.1).collect();
    AccuracyReport::from_scores(
        scores[..genuine].to_vec(),
        scores[genuine..].to_vec(),
        &times,
    )
}

const WHITE: u8 = 0;
const BLACK: u8 = 1;
const GRID: u8 = 2;
const CURVE: u8 = 3;
const MARK: u8 = 4;
const PALETTE: [[u8; 3]; 5] = [
    [255, 255, 255],
    [0, 0, 0],
    [215, 215, 215],
    [20, 70, 200],
    [210, 40, 40],
];

/// Renders the DET curve (FNMR against FMR, both on log axes from 0.001 %
/// and 0.01 % to 100 %) as a 640 × 480 PNG, with the EER line, the EER point
/// and the three operating points marked.
pub fn det_png(report: &AccuracyReport) -> Vec<u8> {
    let (w, h) = (640i32, 480i32);
    let (left, right, top, bottom) = (78i32, 20i32, 44i32, 52i32);
    let (x_min, x_max) = (-5.0f64, 0.0f64); // log10 FMR
    let (y_min, y_max) = (-4.0f64, 0.0f64); // log10 FNMR
    let px = |log_fmr: f64| {
        left + ((log_fmr - x_min) / (x_max - x_min) * f64::from(w - left - right - 1)).round()
            as i32
    };
    let py = |log_fnmr: f64| {
        h - bottom
            - 1
            - ((log_fnmr - y_min) / (y_max - y_min) * f64::from(h - top - bottom - 1)).round()
                as i32
    };
    let log_rate = |ppm: u32, floor: f64| {
        if ppm == 0 {
            floor
        } else {
            (f64::from(ppm) / 1e6).log10().clamp(floor, 0.0)
        }
    };
    let mut c = Canvas::new(w as u32, h as u32);
    c.rect((0, 0), (w - 1, h - 1), WHITE);
    let labels = ["0.001%", "0.01%", "0.1%", "1%", "10%", "100%"];
    for d in -5..=0 {
        let x = px(f64::from(d));
        c.line((x, top), (x, h - bottom - 1), GRID, 0);
        let s = labels[(d + 5) as usize];
        c.text(
            x - Canvas::text_width(s, 1) / 2,
            h - bottom + 8,
            s,
            BLACK,
            1,
        );
    }
    for d in -4..=0 {
        let y = py(f64::from(d));
        c.line((left, y), (w - right - 1, y), GRID, 0);
        let s = labels[(d + 5) as usize];
        c.text(left - 6 - Canvas::text_width(s, 1), y - 3, s, BLACK, 1);
    }
    // Frame.
    c.line((left, top), (w - right - 1, top), BLACK, 0);
    c.line(
        (left, h - bottom - 1),
        (w - right - 1, h - bottom - 1),
        BLACK,
        0,
    );
    c.line((left, top), (left, h - bottom - 1), BLACK, 0);
    c.line(
        (w - right - 1, top),
        (w - right - 1, h - bottom - 1),
        BLACK,
        0,
    );
    // FMR = FNMR.
    c.line((px(-4.0), py(-4.0)), (px(0.0), py(0.0)), BLACK, 3);

    let mut prev: Option<(i32, i32)> = None;
    // Zero rates have no place on log axes.
    for p in report
        .det_points
        .iter()
        .filter(|p| p.fmr_ppm > 0 && p.fnmr_ppm > 0)
    {
        let pt = (
            px(log_rate(p.fmr_ppm, x_min)),
            py(log_rate(p.fnmr_ppm, y_min)),
        );
        if let Some(q) = prev {
            c.line(q, pt, CURVE, 0);
            c.line((q.0, q.1 + 1), (pt.0, pt.1 + 1), CURVE, 0);
        }
        prev = Some(pt);
    }
    for op in &report.fnmr_at_fmr {
        let (x, y) = (
            px(log_rate(op.target_fmr_ppm, x_min)),
            py(log_rate(op.fnmr_ppm, y_min)),
        );
        c.rect((x - 3, y - 3), (x + 3, y + 3), MARK);
    }
    let e = log_rate(report.eer_ppm, y_min);
    let (ex, ey) = (px(e.max(x_min)), py(e));
    c.line((ex - 5, ey - 5), (ex + 5, ey + 5), BLACK, 0);
    c.line((ex - 5, ey + 5), (ex + 5, ey - 5), BLACK, 0);

    c.text(left, 12, "DET CURVE", BLACK, 2);
    let eer = format!(
        "EER {}.{:03}%",
        report.eer_ppm / 10_000,
        report.eer_ppm % 10_000 / 10
    );
    c.text(w - right - Canvas::text_width(&eer, 2), 12, &eer, BLACK, 2);
    c.text(
        (left + w - right) / 2 - Canvas::text_width("FMR", 2) / 2,
        h - 24,
        "FMR",
        BLACK,
        2,
    );
    c.text(6, top - 14, "FNMR", BLACK, 1);
    c.encode(&PALETTE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_from_known_scores() {
        // 10 genuine, 10 impostor.
        let genuine = vec![50, 60, 70, 80, 90, 100, 110, 120, 130, 140];
        let impostor = vec![0, 5, 10, 15, 20, 25, 30, 35, 40, 55];
        let r = AccuracyReport::from_scores(genuine, impostor, &[10, 20, 30, 40]);
        // Target 10 % = 1 impostor allowed: threshold just above 40.
        let sorted: Vec<u32> = {
            let mut s = r.impostor_scores.clone();
            s.sort_unstable();
            s
        };
        assert_eq!(threshold_for(&sorted, 100_000), 41);
        assert_eq!(threshold_for(&sorted, 0), 56);
        assert_eq!(threshold_for(&sorted, 1_000_000), 0);
        // At 50: impostor 55 passes (FMR 10 %), every genuine passes.
        let p = r.det_points.iter().find(|p| p.threshold == 50).unwrap();
        assert_eq!((p.fmr_ppm, p.fnmr_ppm), (100_000, 0));
        let p = r.det_points.iter().find(|p| p.threshold == 55).unwrap();
        assert_eq!((p.fmr_ppm, p.fnmr_ppm), (100_000, 100_000));
        // EER: at 55 both rates are 10 % (impostor 55 in, genuine 50 out).
        assert_eq!(r.eer_ppm, 100_000);
        assert_eq!(r.eer_threshold, 55);
        assert_eq!(r.mean_match_ns, 25);
        assert_eq!(r.p99_match_ns, 40);
        assert_eq!(r.max_match_ns, 40);
        // 10 impostors cannot resolve 1 % or below.
        assert!(r.fnmr_at_fmr.iter().all(|op| !op.resolved));
        assert_eq!(recommended_threshold(&r, 100), None);
        assert_eq!(recommended_threshold(&r, 100_000), Some(41));
    }

    #[test]
    fn det_is_monotone_on_a_small_run() {
        let cfg = BenchConfig {
            threads: 2,
            ..BenchConfig::new(12, 3, 99)
        };
        let r = run_accuracy(&cfg);
        assert_eq!(r.genuine_scores.len(), 12 * 3);
        assert_eq!(r.impostor_scores.len(), 12 * 11 / 2);
        for w in r.det_points.windows(2) {
            assert!(w[0].threshold < w[1].threshold);
            assert!(w[0].fmr_ppm >= w[1].fmr_ppm, "FMR falls with the threshold");
            assert!(
                w[0].fnmr_ppm <= w[1].fnmr_ppm,
                "FNMR rises with the threshold"
            );
        }
        let last = r.det_points.last().unwrap();
        assert_eq!((last.fmr_ppm, last.fnmr_ppm), (0, 1_000_000));
        // Same seed, one thread: same scores.
        let r1 = run_accuracy(&BenchConfig { threads: 1, ..cfg });
        assert_eq!(r1.genuine_scores, r.genuine_scores);
        assert_eq!(r1.impostor_scores, r.impostor_scores);
        assert!(r.mean_match_ns > 0);
        // Genuine scores are clearly above impostor ones on average.
        let mean = |v: &[u32]| v.iter().map(|&s| u64::from(s)).sum::<u64>() / v.len() as u64;
        assert!(mean(&r.genuine_scores) > 3 * mean(&r.impostor_scores).max(1));
        let png = det_png(&r);
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&png[16..24], &[0, 0, 2, 128, 0, 0, 1, 224]);
    }
}
