//! Enrolment: several impressions in, one master template out.

use crate::matcher::{Matcher, match_score};
use crate::template::Template;

/// Fewest impressions [`enrol`] accepts.
pub const MIN_IMPRESSIONS: usize = 3;

/// Fewest minutiae an impression needs to be usable.
pub const MIN_MINUTIAE: usize = 12;

/// Why enrolment refused the impressions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnrolError {
    /// Fewer than [`MIN_IMPRESSIONS`] impressions.
    #[error("{got} impressions given, at least {required} needed")]
    TooFewImpressions {
        /// How many were given.
        got: usize,
        /// How many are needed.
        required: usize,
    },
    /// An impression with too few minutiae to be matched reliably.
    #[error("impression {impression} has {count} minutiae, at least {required} needed")]
    TooFewMinutiae {
        /// Index of the impression.
        impression: usize,
        /// Its minutiae count.
        count: usize,
        /// The minimum.
        required: usize,
    },
    /// An impression does not match the best one: another finger, or too
    /// poor a capture. The user should start again.
    #[error("impression {impression} does not match the others")]
    Inconsistent {
        /// Index of the impression.
        impression: usize,
    },
}

/// Keeps the impression that matches the others best, after checking that
/// every impression matches it at `matcher`'s threshold (so impressions of
/// different fingers are refused).
///
/// Scores are summed over both comparison directions; ties go to the
/// earlier impression.
pub fn enrol(impressions: &[Template], matcher: &Matcher) -> Result<Template, EnrolError> {
    if impressions.len() < MIN_IMPRESSIONS {
        return Err(EnrolError::TooFewImpressions {
            got: impressions.len(),
            required: MIN_IMPRESSIONS,
        });
    }
    for (impression, t) in impressions.iter().enumerate() {
        if t.len() < MIN_MINUTIAE {
            return Err(EnrolError::TooFewMinutiae {
                impression,
                count: t.len(),
                required: MIN_MINUTIAE,
            });
        }
    }
    let n = impressions.len();
    // scores[i][j]: impression i as probe against j as reference.
    let mut scores = vec![vec![0u32; n]; n];
    for i in 0..n {
        for j in 0..n {
            if i != j {
                scores[i][j] = match_score(&impressions[i], &impressions[j]);
            }
        }
    }
    let total = |j: usize| -> u64 {
        (0..n)
            .map(|i| u64::from(scores[i][j]) + u64::from(scores[j][i]))
            .sum()
    };
    let best = (0..n).fold(0, |b, j| if total(j) > total(b) { j } else { b });
    for i in (0..n).filter(|&i| i != best) {
        // The device will compare fresh probes against the master, so the
        // probe→master direction is the one that has to pass.
        if scores[i][best] < matcher.threshold {
            return Err(EnrolError::Inconsistent { impression: i });
        }
    }
    Ok(impressions[best].clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{ImpressionParams, SyntheticFinger};
    use chacha20::ChaCha8Rng;
    use rand_core::SeedableRng;

    #[test]
    fn keeps_one_of_the_impressions_and_refuses_mixed_fingers() {
        let p = ImpressionParams::default();
        let mut rng = ChaCha8Rng::seed_from_u64(21);
        let alice = SyntheticFinger::generate(&mut rng);
        let bob = SyntheticFinger::generate(&mut rng);
        let m = Matcher::default();
        let imps: Vec<_> = (0..4).map(|_| alice.impression(&p, &mut rng)).collect();
        let master = enrol(&imps, &m).unwrap();
        assert!(imps.contains(&master));

        let mut mixed = imps.clone();
        mixed[2] = bob.impression(&p, &mut rng);
        assert_eq!(
            enrol(&mixed, &m),
            Err(EnrolError::Inconsistent { impression: 2 })
        );
    }

    #[test]
    fn refuses_too_few_or_poor_impressions() {
        let p = ImpressionParams::default();
        let mut rng = ChaCha8Rng::seed_from_u64(22);
        let f = SyntheticFinger::generate(&mut rng);
        let m = Matcher::default();
        let imps: Vec<_> = (0..3).map(|_| f.impression(&p, &mut rng)).collect();
        assert_eq!(
            enrol(&imps[..2], &m),
            Err(EnrolError::TooFewImpressions {
                got: 2,
                required: 3
            })
        );
        let mut poor = imps.clone();
        poor[1] = Template::new(300, 400, 197, imps[1].minutiae()[..5].to_vec()).unwrap();
        assert_eq!(
            enrol(&poor, &m),
            Err(EnrolError::TooFewMinutiae {
                impression: 1,
                count: 5,
                required: MIN_MINUTIAE
            })
        );
    }
}
