//! Synthetic fingers and noisy impressions of them.
//!
//! A [`SyntheticFinger`] is a pattern class (arch, loops, whorl), an
//! orientation field built from its singular points with the Sherlock–Monro
//! zero-pole model (θ = θ₀ + ½ Σ arg(z − delta) − ½ Σ arg(z − core)), and a
//! set of minutiae scattered over an elliptic fingertip with a minimum
//! spacing, each pointing along the local ridge orientation.
//!
//! [`SyntheticFinger::impression`] simulates one touch on a sensor:
//! - skin distortion after Cappelli, Maio and Maltoni's plastic model: the
//!   skin near the contact centre sticks to the platen while the periphery
//!   is rotated, stretched and shifted a little, with a smooth transition,
//!   plus a low-frequency wave;
//! - a partial contact area (light touches cover less of the finger);
//! - a random rigid placement (rotation, translation) of the sensor window,
//!   and cropping to it, with unreliable minutiae near its edges;
//! - per-minutia position and direction jitter, missing minutiae, spurious
//!   ones, and ending/bifurcation confusion.
//!
//! Everything is drawn from the injected generator: same seed, same finger,
//! same impressions.
//!
//! Coordinates of a finger are in pixels at 500 dpi, centred on the
//! fingertip, y pointing down like an image. Minutia directions follow the
//! ISO/IEC 19794-2 convention (counter-clockwise as seen on the image): a
//! direction θ is the vector `(cos θ, −sin θ)` in image coordinates.

use std::f32::consts::PI;
use std::fmt;

use rand_core::Rng;

use crate::angle::rad_to_iso;
use crate::sample::{chance, normal, shuffle, uniform};
use crate::template::{MAX_MINUTIAE, Minutia, MinutiaKind, Template};

/// Henry pattern classes used by the generator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PatternClass {
    /// No core or delta.
    Arch,
    /// One core, one delta to the right (loop opening to the left).
    LeftLoop,
    /// One core, one delta to the left.
    RightLoop,
    /// Two cores, two deltas.
    Whorl,
}

/// Shape of generated fingers.
#[derive(Clone, Debug, PartialEq)]
pub struct FingerParams {
    /// Fewest minutiae on the whole fingertip.
    pub min_minutiae: u16,
    /// Most minutiae on the whole fingertip.
    pub max_minutiae: u16,
    /// Minimum distance between two minutiae, pixels.
    pub min_spacing_px: f32,
    /// Half width of the fingertip ellipse, pixels.
    pub semi_axis_x_px: f32,
    /// Half height of the fingertip ellipse, pixels.
    pub semi_axis_y_px: f32,
}

impl Default for FingerParams {
    /// A fingertip of about 17 × 23 mm at 500 dpi with 50–80 minutiae
    /// (a plain impression of 300 × 400 pixels sees 30–60 of them).
    fn default() -> Self {
        Self {
            min_minutiae: 50,
            max_minutiae: 80,
            min_spacing_px: 14.0,
            semi_axis_x_px: 170.0,
            semi_axis_y_px: 225.0,
        }
    }
}

/// How one impression departs from the finger.
#[derive(Clone, Debug, PartialEq)]
pub struct ImpressionParams {
    /// Sensor window width, pixels.
    pub window_width_px: u16,
    /// Sensor window height, pixels.
    pub window_height_px: u16,
    /// Rotation drawn uniformly in ± this many degrees.
    pub max_rotation_deg: f32,
    /// Standard deviation of the finger's offset on the sensor (each axis,
    /// clamped at 2.5 σ), pixels.
    pub translation_sigma_px: f32,
    /// Typical elastic displacement at the periphery of the contact, pixels.
    pub distortion_px: f32,
    /// Standard deviation of each minutia's position error, pixels.
    pub position_jitter_px: f32,
    /// Standard deviation of each minutia's direction error, degrees.
    pub angle_jitter_deg: f32,
    /// Share of minutiae the extractor misses.
    pub missing_rate: f32,
    /// Spurious minutiae added, as a share of the true ones seen.
    pub spurious_rate: f32,
    /// Share of minutiae whose type is reported wrongly.
    pub type_flip_rate: f32,
}

impl Default for ImpressionParams {
    /// A 300 × 400 pixel (15 × 20 mm) 500 dpi sensor, ±30° rotation,
    /// 10 px peripheral distortion, 20 % missing and 20 % spurious minutiae:
    /// the harsh end of what a plain live-scan impression and a decent
    /// extractor produce.
    fn default() -> Self {
        Self {
            window_width_px: 300,
            window_height_px: 400,
            max_rotation_deg: 30.0,
            translation_sigma_px: 30.0,
            distortion_px: 10.0,
            position_jitter_px: 2.0,
            angle_jitter_deg: 6.0,
            missing_rate: 0.20,
            spurious_rate: 0.20,
            type_flip_rate: 0.10,
        }
    }
}

#[derive(Clone, Copy)]
struct FingerMinutia {
    x: f32,
    y: f32,
    dir: f32,
    kind: MinutiaKind,
}

/// A generated finger: pattern, orientation field and minutiae.
#[derive(Clone)]
pub struct SyntheticFinger {
    class: PatternClass,
    base_angle: f32,
    /// Singular points in y-up coordinates.
    cores: Vec<(f32, f32)>,
    deltas: Vec<(f32, f32)>,
    semi_axes: (f32, f32),
    minutiae: Vec<FingerMinutia>,
}

impl fmt::Debug for SyntheticFinger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyntheticFinger")
            .field("class", &self.class)
            .field("minutiae", &self.minutiae.len())
            .finish_non_exhaustive()
    }
}

fn smoothstep(t: f32) -> f32 {
    let t = t.clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

impl SyntheticFinger {
    /// A finger with [`FingerParams::default`].
    pub fn generate<R: Rng + ?Sized>(rng: &mut R) -> Self {
        Self::generate_with(&FingerParams::default(), rng)
    }

    /// A finger with the given shape.
    pub fn generate_with<R: Rng + ?Sized>(params: &FingerParams, rng: &mut R) -> Self {
        let class = match crate::sample::below(rng, 100) {
            0..=9 => PatternClass::Arch,
            10..=42 => PatternClass::LeftLoop,
            43..=75 => PatternClass::RightLoop,
            _ => PatternClass::Whorl,
        };
        let cx = uniform(rng, -20.0, 20.0);
        let cy = uniform(rng, 30.0, 80.0);
        let (cores, deltas) = match class {
            PatternClass::Arch => (vec![], vec![]),
            PatternClass::LeftLoop | PatternClass::RightLoop => {
                let side = if class == PatternClass::LeftLoop {
                    1.0
                } else {
                    -1.0
                };
                let core = (cx, cy);
                let delta = (
                    cx + side * uniform(rng, 70.0, 130.0),
                    cy - uniform(rng, 110.0, 170.0),
                );
                (vec![core], vec![delta])
            }
            PatternClass::Whorl => {
                let d = uniform(rng, 12.0, 30.0);
                let tilt = uniform(rng, -0.6, 0.6);
                let cores = vec![
                    (cx + d * tilt.sin(), cy + d * tilt.cos()),
                    (cx - d * tilt.sin(), cy - d * tilt.cos()),
                ];
                let dy = cy - uniform(rng, 120.0, 170.0);
                let deltas = vec![
                    (
                        cx - uniform(rng, 90.0, 130.0),
                        dy + uniform(rng, -15.0, 15.0),
                    ),
                    (
                        cx + uniform(rng, 90.0, 130.0),
                        dy + uniform(rng, -15.0, 15.0),
                    ),
                ];
                (cores, deltas)
            }
        };
        let mut finger = Self {
            class,
            base_angle: uniform(rng, -0.15, 0.15),
            cores,
            deltas,
            semi_axes: (params.semi_axis_x_px, params.semi_axis_y_px),
            minutiae: Vec::new(),
        };

        let lo = u32::from(params.min_minutiae.min(params.max_minutiae));
        let hi = u32::from(params.max_minutiae.max(params.min_minutiae));
        let target = (lo + crate::sample::below(rng, hi - lo + 1)) as usize;
        let (a, b) = finger.semi_axes;
        let spacing2 = params.min_spacing_px * params.min_spacing_px;
        let mut attempts = 0;
        while finger.minutiae.len() < target && attempts < 50 * target.max(1) {
            attempts += 1;
            let x = uniform(rng, -a, a);
            let y = uniform(rng, -b, b);
            if (x / a).powi(2) + (y / b).powi(2) > 1.0 {
                continue;
            }
            if finger
                .minutiae
                .iter()
                .any(|m| (m.x - x).powi(2) + (m.y - y).powi(2) < spacing2)
            {
                continue;
            }
            // Minutiae are rare right at singular points; keep a small gap.
            if finger
                .cores
                .iter()
                .chain(&finger.deltas)
                .any(|&(sx, sy)| (sx - x).powi(2) + (sy + y).powi(2) < 100.0)
            {
                continue;
            }
            let sense = if chance(rng, 0.5) { 0.0 } else { PI };
            let dir = finger.orientation(x, y) + sense + normal(rng) * 2f32.to_radians();
            let kind = if chance(rng, 0.55) {
                MinutiaKind::RidgeEnding
            } else {
                MinutiaKind::Bifurcation
            };
            finger.minutiae.push(FingerMinutia { x, y, dir, kind });
        }
        finger
    }

    /// The pattern class.
    pub fn class(&self) -> PatternClass {
        self.class
    }

    /// Number of minutiae on the whole fingertip.
    pub fn minutia_count(&self) -> usize {
        self.minutiae.len()
    }

    /// Ridge orientation at a finger point (image coordinates, y down), in
    /// radians modulo π, counter-clockwise as seen on the image.
    pub fn orientation(&self, x: f32, y: f32) -> f32 {
        let (zx, zy) = (x, -y);
        if self.cores.is_empty() {
            // Arch: ridges bulge upwards around the centre line.
            let s = 110.0;
            let bump = (-((zy - 10.0) / 170.0).powi(2)).exp();
            let slope = -1.4 * (zx / s) * (-(zx / s).powi(2)).exp() * bump;
            return self.base_angle + slope.atan();
        }
        let mut t = self.base_angle;
        for &(dx, dy) in &self.deltas {
            t += 0.5 * (zy - dy).atan2(zx - dx);
        }
        for &(cx, cy) in &self.cores {
            t -= 0.5 * (zy - cy).atan2(zx - cx);
        }
        t
    }

    /// Enrols this finger as an enrolment station would: [`enrol`] over
    /// [`MIN_IMPRESSIONS`] impressions with the default noise. Tests and
    /// simulations use it to put a finger's reference into a card.
    ///
    /// [`enrol`]: crate::enrol
    /// [`MIN_IMPRESSIONS`]: crate::MIN_IMPRESSIONS
    pub fn enrol<R: Rng + ?Sized>(
        &self,
        matcher: &crate::Matcher,
        rng: &mut R,
    ) -> Result<Template, crate::EnrolError> {
        let impressions: Vec<Template> = (0..crate::MIN_IMPRESSIONS)
            .map(|_| self.impression(&ImpressionParams::default(), rng))
            .collect();
        crate::enrol(&impressions, matcher)
    }

    /// One impression as a sensor with an ideal extractor would report it,
    /// with the noise described by `params`.
    pub fn impression<R: Rng + ?Sized>(&self, params: &ImpressionParams, rng: &mut R) -> Template {
        let w = f32::from(params.window_width_px);
        let h = f32::from(params.window_height_px);
        let (a, b) = self.semi_axes;

        // Plastic distortion around a contact centre.
        let contact = (normal(rng) * 20.0, normal(rng) * 25.0);
        let contact_scale = uniform(rng, 0.75, 1.0);
        let d = params.distortion_px.max(0.0);
        let phi = normal(rng) * 0.6 * d / 200.0;
        let stretch = 1.0 + normal(rng) * 0.4 * d / 200.0;
        let shift = (normal(rng) * 0.4 * d, normal(rng) * 0.4 * d);
        let waves: Vec<(f32, f32, f32, f32, f32)> = (0..2)
            .map(|_| {
                let k = 2.0 * PI / uniform(rng, 150.0, 300.0);
                let dir = uniform(rng, 0.0, PI);
                (
                    k * dir.cos(),
                    k * dir.sin(),
                    uniform(rng, 0.0, 2.0 * PI),
                    normal(rng) * 0.2 * d,
                    normal(rng) * 0.2 * d,
                )
            })
            .collect();
        let (r0, r1) = (50.0, 200.0);
        let (sin_phi, cos_phi) = phi.sin_cos();
        let distort = |x: f32, y: f32| -> (f32, f32) {
            let (dx, dy) = (x - contact.0, y - contact.1);
            let s = smoothstep(((dx * dx + dy * dy).sqrt() - r0) / (r1 - r0));
            let tx = contact.0 + stretch * (cos_phi * dx - sin_phi * dy) + shift.0;
            let ty = contact.1 + stretch * (sin_phi * dx + cos_phi * dy) + shift.1;
            let (mut ox, mut oy) = (x + s * (tx - x), y + s * (ty - y));
            for &(kx, ky, ph, ax, ay) in &waves {
                let v = (kx * x + ky * y + ph).sin();
                ox += ax * v;
                oy += ay * v;
            }
            (ox, oy)
        };

        // Placement of the finger on the sensor.
        let psi = uniform(rng, -1.0, 1.0) * params.max_rotation_deg.to_radians();
        let clamp_t = 2.5 * params.translation_sigma_px;
        let tx = (normal(rng) * params.translation_sigma_px).clamp(-clamp_t, clamp_t);
        let ty = (normal(rng) * params.translation_sigma_px).clamp(-clamp_t, clamp_t);
        let (sin_psi, cos_psi) = psi.sin_cos();
        let place = |x: f32, y: f32| -> (f32, f32) {
            let (x, y) = distort(x, y);
            (
                cos_psi * x - sin_psi * y + w / 2.0 + tx,
                sin_psi * x + cos_psi * y + h / 2.0 + ty,
            )
        };
        // Maps a finger minutia to image position and direction.
        let transform = |m: &FingerMinutia| -> (f32, f32, f32) {
            let (px, py) = place(m.x, m.y);
            let (qx, qy) = place(m.x + 4.0 * m.dir.cos(), m.y - 4.0 * m.dir.sin());
            (px, py, (py - qy).atan2(qx - px))
        };
        let in_contact = |x: f32, y: f32| {
            ((x - contact.0) / (a * contact_scale)).powi(2)
                + ((y - contact.1) / (b * contact_scale)).powi(2)
                <= 1.0
        };

        let jitter_p = params.position_jitter_px.max(0.0);
        let jitter_a = params.angle_jitter_deg.max(0.0).to_radians();
        let edge = 10.0;
        let mut seen: Vec<(f32, f32, f32, MinutiaKind, u8)> = Vec::new();
        let mut true_seen = 0usize;
        for m in &self.minutiae {
            if !in_contact(m.x, m.y) {
                continue;
            }
            let (px, py, dir) = transform(m);
            let px = px + normal(rng) * jitter_p;
            let py = py + normal(rng) * jitter_p;
            if px < 0.0 || py < 0.0 || px >= w || py >= h {
                continue;
            }
            true_seen += 1;
            let near_edge = px < edge || py < edge || px >= w - edge || py >= h - edge;
            if chance(rng, params.missing_rate) || (near_edge && chance(rng, 0.5)) {
                continue;
            }
            let kind = if chance(rng, params.type_flip_rate) {
                match m.kind {
                    MinutiaKind::RidgeEnding => MinutiaKind::Bifurcation,
                    _ => MinutiaKind::RidgeEnding,
                }
            } else {
                m.kind
            };
            let quality = 30 + crate::sample::below(rng, 71) as u8;
            seen.push((px, py, dir + normal(rng) * jitter_a, kind, quality));
        }

        // Spurious minutiae: extractor artefacts, roughly along the ridges.
        let spurious_mean = params.spurious_rate.max(0.0) * true_seen as f32;
        let spurious = (spurious_mean * uniform(rng, 0.5, 1.5)).round() as usize;
        let mut placed = 0;
        let mut tries = 0;
        while placed < spurious && tries < 20 * spurious {
            tries += 1;
            let x = contact.0 + uniform(rng, -a, a) * contact_scale;
            let y = contact.1 + uniform(rng, -b, b) * contact_scale;
            if !in_contact(x, y) || (x / a).powi(2) + (y / b).powi(2) > 1.0 {
                continue;
            }
            let sense = if chance(rng, 0.5) { 0.0 } else { PI };
            let fake = FingerMinutia {
                x,
                y,
                dir: self.orientation(x, y) + sense + normal(rng) * 15f32.to_radians(),
                kind: if chance(rng, 0.5) {
                    MinutiaKind::RidgeEnding
                } else {
                    MinutiaKind::Bifurcation
                },
            };
            let (px, py, dir) = transform(&fake);
            if px < 0.0 || py < 0.0 || px >= w || py >= h {
                continue;
            }
            placed += 1;
            let quality = 20 + crate::sample::below(rng, 51) as u8;
            seen.push((px, py, dir, fake.kind, quality));
        }

        shuffle(rng, &mut seen);
        seen.truncate(MAX_MINUTIAE);
        let minutiae = seen
            .iter()
            .map(|&(x, y, dir, kind, quality)| Minutia {
                x: (x as u16).min(params.window_width_px.saturating_sub(1)),
                y: (y as u16).min(params.window_height_px.saturating_sub(1)),
                angle: rad_to_iso(dir),
                kind,
                quality,
            })
            .collect();
        match Template::new(
            params.window_width_px.max(1),
            params.window_height_px.max(1),
            Template::RESOLUTION_500_DPI,
            minutiae,
        ) {
            Ok(t) => t,
            Err(e) => unreachable!("generated minutiae are inside the window: {e}"),
        }
    }
}

/// Orientation difference modulo π, in `[0, π/2]`.
#[cfg(test)]
fn orientation_gap(a: f32, b: f32) -> f32 {
    let d = (a - b).rem_euclid(PI);
    d.min(PI - d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::angle::iso_to_rad;
    use chacha20::ChaCha8Rng;
    use rand_core::SeedableRng;

    #[test]
    fn same_seed_same_finger_and_impressions() {
        let p = ImpressionParams::default();
        let mut r1 = ChaCha8Rng::seed_from_u64(42);
        let mut r2 = ChaCha8Rng::seed_from_u64(42);
        let f1 = SyntheticFinger::generate(&mut r1);
        let f2 = SyntheticFinger::generate(&mut r2);
        for _ in 0..3 {
            assert_eq!(f1.impression(&p, &mut r1), f2.impression(&p, &mut r2));
        }
        let mut r3 = ChaCha8Rng::seed_from_u64(43);
        let f3 = SyntheticFinger::generate(&mut r3);
        assert_ne!(f1.impression(&p, &mut r1), f3.impression(&p, &mut r3));
    }

    #[test]
    fn density_is_realistic() {
        let p = ImpressionParams::default();
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut counts = Vec::new();
        for _ in 0..60 {
            let f = SyntheticFinger::generate(&mut rng);
            assert!(
                (50..=80).contains(&f.minutia_count()),
                "{}",
                f.minutia_count()
            );
            for _ in 0..2 {
                let t = f.impression(&p, &mut rng);
                assert_eq!((t.width_px(), t.height_px()), (300, 400));
                counts.push(t.len());
            }
        }
        counts.sort_unstable();
        let median = counts[counts.len() / 2];
        assert!((30..=60).contains(&median), "median {median}");
        assert!(counts[0] >= 12, "min {}", counts[0]);
    }

    #[test]
    fn spacing_is_respected_on_the_finger() {
        let mut rng = ChaCha8Rng::seed_from_u64(6);
        let f = SyntheticFinger::generate(&mut rng);
        for (i, a) in f.minutiae.iter().enumerate() {
            for b in &f.minutiae[i + 1..] {
                assert!(((a.x - b.x).powi(2) + (a.y - b.y).powi(2)).sqrt() >= 14.0);
            }
        }
    }

    #[test]
    fn noiseless_impression_follows_the_ridges() {
        // Without rotation, distortion or noise, an impression's directions
        // are the orientation field's (mod π) at the finger points.
        let p = ImpressionParams {
            max_rotation_deg: 0.0,
            translation_sigma_px: 0.0,
            distortion_px: 0.0,
            position_jitter_px: 0.0,
            angle_jitter_deg: 0.0,
            missing_rate: 0.0,
            spurious_rate: 0.0,
            type_flip_rate: 0.0,
            ..ImpressionParams::default()
        };
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        let f = SyntheticFinger::generate(&mut rng);
        let t = f.impression(&p, &mut rng);
        assert!(t.len() > 20);
        for m in t.minutiae() {
            let (x, y) = (f32::from(m.x) + 0.5 - 150.0, f32::from(m.y) + 0.5 - 200.0);
            let gap = orientation_gap(iso_to_rad(m.angle), f.orientation(x, y));
            // 2° generator noise, angle quantisation and the pixel grid.
            assert!(gap < 12f32.to_radians(), "gap {}", gap.to_degrees());
        }
    }

    #[test]
    fn classes_have_their_singular_points() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..80 {
            let f = SyntheticFinger::generate(&mut rng);
            let expected = match f.class() {
                PatternClass::Arch => (0, 0),
                PatternClass::LeftLoop | PatternClass::RightLoop => (1, 1),
                PatternClass::Whorl => (2, 2),
            };
            assert_eq!((f.cores.len(), f.deltas.len()), expected);
            seen.insert(f.class());
        }
        assert_eq!(seen.len(), 4);
    }
}
