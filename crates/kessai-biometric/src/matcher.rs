//! Minutiae matcher.
//!
//! The algorithm (our own, in the family of SourceAFIS and other
//! "local structure + consolidation" matchers):
//!
//! 1. **Local structures.** Each minutia is linked to its nearest neighbours.
//!    An edge `i → j` is described by its length and by the directions of
//!    both minutiae relative to the edge: a description that does not change
//!    under rotation or translation.
//! 2. **Roots.** Edges of the probe and the reference with similar
//!    descriptions (length, both relative angles) and a plausible relative
//!    rotation are candidate correspondences; the closest few are kept.
//! 3. **Growth.** From each root pair the pairing spreads along compatible
//!    neighbouring edges, best first. Only local geometry is compared, so
//!    elastic distortion (which is small over one edge but adds up across
//!    the finger) is tolerated; a bound on each pair's rotation keeps the
//!    growth from drifting.
//! 4. **Consolidation and score.** The pairing is checked against one
//!    global rigid alignment, with a tolerance that widens away from the
//!    paired centroid (plastic skin). The score rewards consistent pairs,
//!    supporting edges and the share of minutiae paired in the overlapping
//!    area; missing and spurious minutiae lower it gradually.
//!
//! The score is an integer so the device's threshold compares exactly. It is
//! deterministic but not exactly symmetric: roots are sought from the probe's
//! nearest neighbours only.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::f32::consts::PI;

use crate::angle::iso_to_rad;
use crate::template::Template;

/// Outcome of a verification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatchDecision {
    /// Score at or above the threshold.
    Match {
        /// The score.
        score: u32,
    },
    /// Score below the threshold.
    NoMatch {
        /// The score.
        score: u32,
    },
}

impl MatchDecision {
    /// `true` for [`MatchDecision::Match`].
    pub fn is_match(self) -> bool {
        matches!(self, Self::Match { .. })
    }

    /// The score either way.
    pub fn score(self) -> u32 {
        match self {
            Self::Match { score } | Self::NoMatch { score } => score,
        }
    }
}

/// A verifier with a decision threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Matcher {
    /// Scores at or above this are a match.
    pub threshold: u32,
}

impl Matcher {
    /// Threshold for a false match rate of at most 0.01 % (the FIDO
    /// biometric component requirement), from [`crate::bench::run_accuracy`]
    /// on 500 fingers × 8 impressions, seed 1, default impression noise:
    /// FMR 0.0096 % (12 of 124 750 impostor comparisons), FNMR 1.14 %.
    /// Re-measure when the matcher or the generator changes.
    pub const DEFAULT_THRESHOLD: u32 = 845;

    /// A matcher with the given threshold.
    pub fn new(threshold: u32) -> Self {
        Self { threshold }
    }

    /// Compares a probe with a reference template.
    pub fn verify(&self, probe: &Template, reference: &Template) -> MatchDecision {
        let score = match_score(probe, reference);
        if score >= self.threshold {
            MatchDecision::Match { score }
        } else {
            MatchDecision::NoMatch { score }
        }
    }
}

impl Default for Matcher {
    fn default() -> Self {
        Self::new(Self::DEFAULT_THRESHOLD)
    }
}

/// Wraps a difference of two angles in `(-π, π]` (or of such
/// differences, within `(-3π, 3π]`) into `(-π, π]` without a division.
fn wrap(mut a: f32) -> f32 {
    const TAU: f32 = 2.0 * PI;
    while a > PI {
        a -= TAU;
    }
    while a <= -PI {
        a += TAU;
    }
    a
}

// Tuning constants (pixels at 500 dpi, radians).
// Tuning constants (pixels at 500 dpi, radians), set with the benchmark.
/// Neighbours linked to each minutia.
const NEIGHBOURS: usize = 12;
/// Of those, the nearest ones used on the probe side to look for roots.
const ROOT_NEIGHBOURS: usize = 5;
const MIN_EDGE_PX: f32 = 8.0;
const MAX_EDGE_PX: f32 = 170.0;
/// Edge length tolerance: absolute plus relative part.
const LEN_TOL_PX: f32 = 6.0;
const LEN_TOL_REL: f32 = 0.05;
/// Tolerance on each relative minutia angle of an edge.
const ANGLE_TOL: f32 = 20.0 * PI / 180.0;
/// Largest relative rotation between probe and reference considered.
const MAX_ROTATION: f32 = 75.0 * PI / 180.0;
/// Largest departure of one pair's rotation from its root's during growth.
const PAIR_ROTATION_TOL: f32 = 30.0 * PI / 180.0;
/// Roots grown per comparison.
const ROOTS: usize = 40;
/// Global consistency: position tolerance (absolute plus relative to the
/// distance from the paired centroid) and angle tolerance.
const GLOBAL_TOL_PX: f32 = 8.0;
const GLOBAL_TOL_REL: f32 = 0.05;
const GLOBAL_ANGLE_TOL: f32 = 20.0 * PI / 180.0;
/// Weight of a supporting edge relative to a paired minutia.
const SUPPORT_WEIGHT: f32 = 0.25;
/// Minutiae within this distance outside the other side's convex hull still
/// count as overlapping.
const OVERLAP_MARGIN_PX: f32 = 10.0;

#[derive(Clone, Copy)]
struct Point {
    x: f32,
    /// y axis pointing up.
    y: f32,
    dir: f32,
}

#[derive(Clone, Copy)]
struct Edge {
    to: u16,
    len: f32,
    /// Direction of the edge.
    phi: f32,
    /// Direction of the origin minutia relative to the edge.
    alpha: f32,
    /// Direction of the end minutia relative to the edge.
    beta: f32,
}

struct Prepared {
    points: Vec<Point>,
    /// Per minutia, edges to its nearest neighbours.
    edges: Vec<Vec<Edge>>,
    /// All edges `(from, edge)` bucketed by length and origin angle, for
    /// root search: bucket `b` is `grid[grid_start[b]..grid_start[b + 1]]`.
    grid: Vec<(u16, Edge)>,
    grid_start: Vec<u32>,
}

const LEN_BIN_PX: f32 = 8.0;
const LEN_BINS: usize = (MAX_EDGE_PX / LEN_BIN_PX) as usize + 1;
const ALPHA_BINS: usize = 16;

fn len_bin(len: f32) -> usize {
    ((len.max(0.0) / LEN_BIN_PX) as usize).min(LEN_BINS - 1)
}

fn alpha_bin(alpha: f32) -> isize {
    // Offset by one turn so the value is positive and truncation floors.
    ((alpha + 3.0 * PI) / (2.0 * PI) * ALPHA_BINS as f32) as isize - ALPHA_BINS as isize
}

fn bucket(len: f32, alpha: f32) -> usize {
    len_bin(len) * ALPHA_BINS + alpha_bin(alpha).rem_euclid(ALPHA_BINS as isize) as usize
}

fn prepare(t: &Template) -> Prepared {
    let points: Vec<Point> = t
        .minutiae()
        .iter()
        .map(|m| Point {
            x: f32::from(m.x),
            y: -f32::from(m.y),
            dir: iso_to_rad(m.angle),
        })
        .collect();
    let mut edges = Vec::with_capacity(points.len());
    let mut near: Vec<(f32, u16)> = Vec::with_capacity(points.len());
    for (i, p) in points.iter().enumerate() {
        near.clear();
        for (j, q) in points.iter().enumerate() {
            if i == j {
                continue;
            }
            let d2 = (q.x - p.x).powi(2) + (q.y - p.y).powi(2);
            if (MIN_EDGE_PX * MIN_EDGE_PX..=MAX_EDGE_PX * MAX_EDGE_PX).contains(&d2) {
                near.push((d2, j as u16));
            }
        }
        let k = NEIGHBOURS.min(near.len());
        if k > 0 && k < near.len() {
            near.select_nth_unstable_by(k - 1, |a, b| a.0.total_cmp(&b.0));
        }
        near.truncate(k);
        near.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
        edges.push(
            near.iter()
                .map(|&(d2, j)| {
                    let q = points[usize::from(j)];
                    let phi = (q.y - p.y).atan2(q.x - p.x);
                    Edge {
                        to: j,
                        len: d2.sqrt(),
                        phi,
                        alpha: wrap(p.dir - phi),
                        beta: wrap(q.dir - phi),
                    }
                })
                .collect::<Vec<_>>(),
        );
    }
    // Counting sort of all edges into their buckets.
    let mut grid_start = vec![0u32; LEN_BINS * ALPHA_BINS + 1];
    for e in edges.iter().flatten() {
        grid_start[bucket(e.len, e.alpha) + 1] += 1;
    }
    for b in 1..grid_start.len() {
        grid_start[b] += grid_start[b - 1];
    }
    let mut fill = grid_start.clone();
    let empty = Edge {
        to: 0,
        len: 0.0,
        phi: 0.0,
        alpha: 0.0,
        beta: 0.0,
    };
    let mut grid = vec![(0u16, empty); grid_start[grid_start.len() - 1] as usize];
    for (i, es) in edges.iter().enumerate() {
        for e in es {
            let b = bucket(e.len, e.alpha);
            grid[fill[b] as usize] = (i as u16, *e);
            fill[b] += 1;
        }
    }
    Prepared {
        points,
        edges,
        grid,
        grid_start,
    }
}

fn len_tol(len: f32) -> f32 {
    LEN_TOL_PX + LEN_TOL_REL * len
}

/// Normalised mismatch of two edge descriptions, `None` beyond tolerance.
fn edge_error(a: &Edge, b: &Edge) -> Option<f32> {
    let dl = (a.len - b.len).abs() / len_tol(a.len.max(b.len));
    if dl > 1.0 {
        return None;
    }
    let da = wrap(a.alpha - b.alpha).abs() / ANGLE_TOL;
    if da > 1.0 {
        return None;
    }
    let db = wrap(a.beta - b.beta).abs() / ANGLE_TOL;
    if db > 1.0 {
        return None;
    }
    Some(dl + da + db)
}

/// Keys for the heaps: errors are small non-negative floats.
fn key(err: f32) -> u32 {
    (err * 65_536.0) as u32
}

const FREE: u16 = u16::MAX;

struct Growth {
    pair_p: Vec<u16>,
    pair_r: Vec<u16>,
    pairs: Vec<(u16, u16)>,
    support: u32,
    heap: BinaryHeap<Reverse<(u32, u16, u16)>>,
}

impl Growth {
    fn new(np: usize, nr: usize) -> Self {
        Self {
            pair_p: vec![FREE; np],
            pair_r: vec![FREE; nr],
            pairs: Vec::with_capacity(np.min(nr)),
            support: 0,
            heap: BinaryHeap::new(),
        }
    }

    fn reset(&mut self) {
        self.pair_p.iter_mut().for_each(|v| *v = FREE);
        self.pair_r.iter_mut().for_each(|v| *v = FREE);
        self.pairs.clear();
        self.support = 0;
        self.heap.clear();
    }

    fn add(&mut self, p: u16, r: u16, probe: &Prepared, reference: &Prepared) {
        self.pair_p[usize::from(p)] = r;
        self.pair_r[usize::from(r)] = p;
        self.pairs.push((p, r));
        for ep in &probe.edges[usize::from(p)] {
            let paired = self.pair_p[usize::from(ep.to)];
            for er in &reference.edges[usize::from(r)] {
                if paired != FREE && paired != er.to {
                    continue;
                }
                if paired == FREE && self.pair_r[usize::from(er.to)] != FREE {
                    continue;
                }
                if let Some(err) = edge_error(ep, er) {
                    if paired == er.to {
                        self.support += 1;
                    } else {
                        self.heap.push(Reverse((key(err), ep.to, er.to)));
                    }
                }
            }
        }
    }

    fn grow(&mut self, rotation: f32, probe: &Prepared, reference: &Prepared) {
        while let Some(Reverse((_, p, r))) = self.heap.pop() {
            if self.pair_p[usize::from(p)] != FREE || self.pair_r[usize::from(r)] != FREE {
                continue;
            }
            let turn = reference.points[usize::from(r)].dir - probe.points[usize::from(p)].dir;
            if wrap(turn - rotation).abs() > PAIR_ROTATION_TOL {
                continue;
            }
            self.add(p, r, probe, reference);
        }
    }
}

/// A rigid alignment fitted to a pairing.
#[derive(Clone, Copy)]
struct Alignment {
    /// Pairs consistent with the alignment.
    consistent: u32,
    /// Rotation, probe to reference.
    theta: f32,
    /// Centroid of the paired probe minutiae.
    probe_centre: (f32, f32),
    /// Centroid of the paired reference minutiae.
    reference_centre: (f32, f32),
}

impl Alignment {
    fn apply(&self, x: f32, y: f32) -> (f32, f32) {
        let (s, c) = self.theta.sin_cos();
        let (ax, ay) = (x - self.probe_centre.0, y - self.probe_centre.1);
        (
            c * ax - s * ay + self.reference_centre.0,
            s * ax + c * ay + self.reference_centre.1,
        )
    }
}

/// Fits a rotation about the centroids plus a translation to the pairs
/// (least squares) and counts the pairs consistent with it, with a position
/// tolerance that widens away from the centroid (plastic distortion).
fn consolidate(
    pairs: &[(u16, u16)],
    rotation: f32,
    probe: &Prepared,
    reference: &Prepared,
) -> Alignment {
    let n = pairs.len() as f32;
    let (mut pcx, mut pcy, mut rcx, mut rcy) = (0.0, 0.0, 0.0, 0.0);
    for &(p, r) in pairs {
        let (a, b) = (
            probe.points[usize::from(p)],
            reference.points[usize::from(r)],
        );
        pcx += a.x;
        pcy += a.y;
        rcx += b.x;
        rcy += b.y;
    }
    let (pcx, pcy, rcx, rcy) = (pcx / n, pcy / n, rcx / n, rcy / n);
    let (mut sxx, mut sxy) = (0.0f32, 0.0f32);
    for &(p, r) in pairs {
        let (a, b) = (
            probe.points[usize::from(p)],
            reference.points[usize::from(r)],
        );
        let (ax, ay, bx, by) = (a.x - pcx, a.y - pcy, b.x - rcx, b.y - rcy);
        sxx += ax * bx + ay * by;
        sxy += ax * by - ay * bx;
    }
    let theta = if sxx == 0.0 && sxy == 0.0 {
        rotation
    } else {
        sxy.atan2(sxx)
    };
    let mut alignment = Alignment {
        consistent: 0,
        theta,
        probe_centre: (pcx, pcy),
        reference_centre: (rcx, rcy),
    };
    for &(p, r) in pairs {
        let (a, b) = (
            probe.points[usize::from(p)],
            reference.points[usize::from(r)],
        );
        let (tx, ty) = alignment.apply(a.x, a.y);
        let dist = ((tx - b.x).powi(2) + (ty - b.y).powi(2)).sqrt();
        let radius = ((a.x - pcx).powi(2) + (a.y - pcy).powi(2)).sqrt();
        let turn = wrap(b.dir - a.dir - theta).abs();
        if dist <= GLOBAL_TOL_PX + GLOBAL_TOL_REL * radius && turn <= GLOBAL_ANGLE_TOL {
            alignment.consistent += 1;
        }
    }
    alignment
}

/// Convex hull (counter-clockwise, Andrew's monotone chain).
fn convex_hull(mut pts: Vec<(f32, f32)>) -> Vec<(f32, f32)> {
    pts.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    pts.dedup();
    if pts.len() < 3 {
        return pts;
    }
    let cross = |o: (f32, f32), a: (f32, f32), b: (f32, f32)| {
        (a.0 - o.0) * (b.1 - o.1) - (a.1 - o.1) * (b.0 - o.0)
    };
    let mut hull: Vec<(f32, f32)> = Vec::with_capacity(2 * pts.len());
    for pass in 0..2 {
        let start = hull.len();
        let iter: Box<dyn Iterator<Item = &(f32, f32)>> = if pass == 0 {
            Box::new(pts.iter())
        } else {
            Box::new(pts.iter().rev())
        };
        for &p in iter {
            while hull.len() >= start + 2
                && cross(hull[hull.len() - 2], hull[hull.len() - 1], p) <= 0.0
            {
                hull.pop();
            }
            hull.push(p);
        }
        hull.pop();
    }
    hull
}

/// `true` when `p` is inside the counter-clockwise hull grown by `margin`.
fn in_hull(hull: &[(f32, f32)], p: (f32, f32), margin: f32) -> bool {
    if hull.len() < 3 {
        return false;
    }
    hull.iter()
        .zip(hull.iter().cycle().skip(1))
        .all(|(&a, &b)| {
            let (ex, ey) = (b.0 - a.0, b.1 - a.1);
            let len = (ex * ex + ey * ey).sqrt().max(1e-3);
            // Signed distance of p to the left of edge a→b.
            (ex * (p.1 - a.1) - ey * (p.0 - a.0)) / len >= -margin
        })
}

/// What a comparison found; the score is computed from it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Features {
    /// Pairs consistent with the best alignment.
    consistent: u32,
    /// Supporting edges of the best pairing.
    support: u32,
    /// Probe minutiae that fall inside the reference's area.
    probe_overlap: u32,
    /// Reference minutiae that fall inside the probe's area.
    reference_overlap: u32,
}

/// Similarity of a probe to a reference: 0 for unrelated templates, growing
/// with the number of consistently paired minutiae. Deterministic.
pub fn match_score(probe: &Template, reference: &Template) -> u32 {
    score(&features(probe, reference))
}

/// The integer score of a comparison: paired minutiae plus a share of
/// supporting edges, weighted by how much of the overlapping area is paired
/// (`n² / (overlap_probe × overlap_reference)`, to the power ¼ so that small
/// overlaps are not over-rewarded), times 100.
fn score(f: &Features) -> u32 {
    let n = f.consistent as f32;
    let base = n + SUPPORT_WEIGHT * f.support as f32;
    let overlap = (f.probe_overlap.max(1) as f32) * (f.reference_overlap.max(1) as f32);
    let coverage = (n * n / overlap).min(1.0);
    (base * coverage.sqrt().sqrt() * 100.0).round() as u32
}

/// Compares and returns what the score is made of.
fn features(probe: &Template, reference: &Template) -> Features {
    if probe.len() < 2 || reference.len() < 2 {
        return Features::default();
    }
    let p = prepare(probe);
    let r = prepare(reference);

    // Root candidates.
    let mut roots: Vec<(u32, u16, u16, u16, u16, f32)> = Vec::new();
    for (i, edges) in p.edges.iter().enumerate() {
        // The shortest edges are the most stable under distortion; the
        // reference side offers all of its edges.
        for ep in edges.iter().take(ROOT_NEIGHBOURS) {
            // Tolerances are symmetric up to the larger length; widen the
            // length window a little and let `edge_error` decide.
            let tol = len_tol(ep.len + LEN_TOL_PX);
            let (l0, l1) = (len_bin(ep.len - tol), len_bin(ep.len + tol));
            let (a0, a1) = (
                alpha_bin(ep.alpha - ANGLE_TOL),
                alpha_bin(ep.alpha + ANGLE_TOL),
            );
            for lb in l0..=l1 {
                for ab in a0..=a1.min(a0 + ALPHA_BINS as isize - 1) {
                    let b = lb * ALPHA_BINS + ab.rem_euclid(ALPHA_BINS as isize) as usize;
                    let cell = &r.grid[r.grid_start[b] as usize..r.grid_start[b + 1] as usize];
                    for (k, er) in cell {
                        let rotation = wrap(er.phi - ep.phi);
                        if rotation.abs() > MAX_ROTATION {
                            continue;
                        }
                        if let Some(err) = edge_error(ep, er) {
                            roots.push((key(err), i as u16, ep.to, *k, er.to, rotation));
                        }
                    }
                }
            }
        }
    }
    if roots.is_empty() {
        return Features::default();
    }
    if roots.len() > ROOTS {
        roots.select_nth_unstable_by_key(ROOTS - 1, |r| (r.0, r.1, r.2, r.3, r.4));
        roots.truncate(ROOTS);
    }
    roots.sort_unstable_by_key(|r| (r.0, r.1, r.2, r.3, r.4));

    let mut g = Growth::new(p.points.len(), r.points.len());
    let nr = r.points.len();
    // Pairs already found by an earlier growth: a root made of two of them
    // would mostly regrow the same pairing.
    let mut covered = vec![false; p.points.len() * nr];
    let mut best: Option<(f32, Alignment, u32)> = None;
    for &(_, pi, pj, ri, rj, rotation) in &roots {
        let at = |p: u16, r: u16| usize::from(p) * nr + usize::from(r);
        if covered[at(pi, ri)] && covered[at(pj, rj)] {
            continue;
        }
        g.reset();
        g.add(pi, ri, &p, &r);
        if g.pair_p[usize::from(pj)] == FREE && g.pair_r[usize::from(rj)] == FREE {
            g.add(pj, rj, &p, &r);
        }
        g.grow(rotation, &p, &r);
        for &(a, b) in &g.pairs {
            covered[at(a, b)] = true;
        }
        if g.pairs.len() < 3 {
            continue;
        }
        let alignment = consolidate(&g.pairs, rotation, &p, &r);
        let value = alignment.consistent as f32 + SUPPORT_WEIGHT * g.support as f32;
        if best.is_none_or(|b| value > b.0) {
            best = Some((value, alignment, g.support));
        }
    }
    let Some((_, alignment, support)) = best else {
        return Features::default();
    };
    // Overlap: minutiae of each side inside the other's (aligned) area.
    let probe_aligned: Vec<(f32, f32)> =
        p.points.iter().map(|a| alignment.apply(a.x, a.y)).collect();
    let reference_pts: Vec<(f32, f32)> = r.points.iter().map(|b| (b.x, b.y)).collect();
    let probe_hull = convex_hull(probe_aligned.clone());
    let reference_hull = convex_hull(reference_pts.clone());
    Features {
        consistent: alignment.consistent,
        support,
        probe_overlap: probe_aligned
            .iter()
            .filter(|&&q| in_hull(&reference_hull, q, OVERLAP_MARGIN_PX))
            .count() as u32,
        reference_overlap: reference_pts
            .iter()
            .filter(|&&q| in_hull(&probe_hull, q, OVERLAP_MARGIN_PX))
            .count() as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{ImpressionParams, SyntheticFinger};
    use crate::template::{Minutia, MinutiaKind};
    use chacha20::ChaCha8Rng;
    use rand_core::SeedableRng;

    fn rotate(t: &Template, deg: f32, dx: f32, dy: f32) -> Template {
        let (s, c) = deg.to_radians().sin_cos();
        let (cx, cy) = (150.0, 200.0);
        let ms = t
            .minutiae()
            .iter()
            .filter_map(|m| {
                let (x, y) = (f32::from(m.x) - cx, f32::from(m.y) - cy);
                // Counter-clockwise on the image (y down).
                let (nx, ny) = (c * x + s * y + cx + dx, -s * x + c * y + cy + dy);
                if nx < 0.0 || ny < 0.0 || nx >= 300.0 || ny >= 400.0 {
                    return None;
                }
                Some(Minutia {
                    x: nx as u16,
                    y: ny as u16,
                    angle: crate::angle::rad_to_iso(iso_to_rad(m.angle) + deg.to_radians()),
                    ..*m
                })
            })
            .collect();
        Template::new(300, 400, 197, ms).unwrap()
    }

    #[test]
    fn identical_templates_score_high_and_empty_score_zero() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let f = SyntheticFinger::generate(&mut rng);
        let t = f.impression(&ImpressionParams::default(), &mut rng);
        let s = match_score(&t, &t);
        assert!(s >= 100 * t.len() as u32, "{s} for {} minutiae", t.len());
        let empty = Template::new(300, 400, 197, vec![]).unwrap();
        assert_eq!(match_score(&empty, &t), 0);
        assert_eq!(match_score(&t, &empty), 0);
        let one = Template::new(
            300,
            400,
            197,
            vec![Minutia {
                x: 1,
                y: 1,
                angle: 0,
                kind: MinutiaKind::Other,
                quality: 0,
            }],
        )
        .unwrap();
        assert_eq!(match_score(&one, &t), 0);
    }

    #[test]
    fn rotation_and_translation_are_tolerated() {
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        let f = SyntheticFinger::generate(&mut rng);
        let t = f.impression(&ImpressionParams::default(), &mut rng);
        let m = Matcher::default();
        for (deg, dx, dy) in [
            (0.0, 20.0, -15.0),
            (25.0, 0.0, 0.0),
            (-40.0, 10.0, 10.0),
            (55.0, -5.0, 20.0),
        ] {
            let moved = rotate(&t, deg, dx, dy);
            let d = m.verify(&moved, &t);
            assert!(d.is_match(), "rotation {deg}°: {d:?}");
        }
    }

    #[test]
    fn genuine_pairs_beat_impostor_pairs() {
        let p = ImpressionParams::default();
        let mut rng = ChaCha8Rng::seed_from_u64(13);
        let fingers: Vec<_> = (0..12)
            .map(|_| SyntheticFinger::generate(&mut rng))
            .collect();
        let imps: Vec<Vec<Template>> = fingers
            .iter()
            .map(|f| (0..3).map(|_| f.impression(&p, &mut rng)).collect())
            .collect();
        let m = Matcher::default();
        let mut genuine_ok = 0;
        let mut genuine = 0;
        for set in &imps {
            for a in 0..set.len() {
                for b in a + 1..set.len() {
                    genuine += 1;
                    genuine_ok += usize::from(m.verify(&set[b], &set[a]).is_match());
                }
            }
        }
        for a in 0..imps.len() {
            for b in a + 1..imps.len() {
                let d = m.verify(&imps[b][0], &imps[a][0]);
                assert!(!d.is_match(), "fingers {a} and {b}: {d:?}");
            }
        }
        // At the FMR 0.01 % threshold a few genuine failures are expected;
        // 36 comparisons with at most 3 failures keeps this test stable.
        assert!(genuine_ok + 3 >= genuine, "{genuine_ok}/{genuine}");
    }
}
