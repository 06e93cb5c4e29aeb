//! Small sampling helpers over an injected `rand_core::Rng`.

use rand_core::Rng;

/// Uniform in `[0, 1)` with 24 bits of precision.
pub(crate) fn unit<R: Rng + ?Sized>(rng: &mut R) -> f32 {
    (rng.next_u32() >> 8) as f32 * (1.0 / 16_777_216.0)
}

/// Uniform in `[lo, hi)`.
pub(crate) fn uniform<R: Rng + ?Sized>(rng: &mut R, lo: f32, hi: f32) -> f32 {
    lo + (hi - lo) * unit(rng)
}

/// Standard normal (Box–Muller).
pub(crate) fn normal<R: Rng + ?Sized>(rng: &mut R) -> f32 {
    // 1 - unit() is in (0, 1], so the logarithm is finite.
    let u1 = 1.0 - unit(rng);
    let u2 = unit(rng);
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

/// `true` with probability `p`.
pub(crate) fn chance<R: Rng + ?Sized>(rng: &mut R, p: f32) -> bool {
    unit(rng) < p
}

/// Uniform integer in `0..n` (`n > 0`), by rejection (no modulo bias).
pub(crate) fn below<R: Rng + ?Sized>(rng: &mut R, n: u32) -> u32 {
    debug_assert!(n > 0);
    let zone = u32::MAX - (u32::MAX % n);
    loop {
        let v = rng.next_u32();
        if v < zone {
            return v % n;
        }
    }
}

/// Fisher–Yates shuffle.
pub(crate) fn shuffle<T, R: Rng + ?Sized>(rng: &mut R, items: &mut [T]) {
    for i in (1..items.len()).rev() {
        let j = below(rng, (i + 1) as u32) as usize;
        items.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chacha20::ChaCha8Rng;
    use rand_core::SeedableRng;

    #[test]
    fn moments_are_plausible() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let n = 20_000;
        let (mut s, mut s2, mut u) = (0.0f64, 0.0f64, 0.0f64);
        for _ in 0..n {
            let z = f64::from(normal(&mut rng));
            s += z;
            s2 += z * z;
            u += f64::from(unit(&mut rng));
        }
        let mean = s / f64::from(n);
        let var = s2 / f64::from(n) - mean * mean;
        assert!(mean.abs() < 0.05, "mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "var {var}");
        assert!((u / f64::from(n) - 0.5).abs() < 0.02);
    }

    #[test]
    fn below_stays_in_range_and_shuffle_permutes() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let mut seen = [false; 7];
        for _ in 0..500 {
            let v = below(&mut rng, 7) as usize;
            seen[v] = true;
        }
        assert!(seen.iter().all(|&s| s));
        let mut v: Vec<u32> = (0..50).collect();
        shuffle(&mut rng, &mut v);
        assert_ne!(v, (0..50).collect::<Vec<_>>());
        v.sort_unstable();
        assert_eq!(v, (0..50).collect::<Vec<_>>());
    }
}
