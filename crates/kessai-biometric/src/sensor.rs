//! The fingerprint sensor interface and its simulation.

use chacha20::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};

use crate::synth::{ImpressionParams, SyntheticFinger};
use crate::template::Template;

/// Why a capture produced no template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SensorError {
    /// Nothing on the sensor.
    #[error("no finger on the sensor")]
    NoFinger,
    /// A capture too poor to use (too few minutiae); try again.
    #[error("capture too poor: {minutiae} minutiae")]
    PoorCapture {
        /// Minutiae found.
        minutiae: usize,
    },
    /// The sensor is unreachable or failed.
    #[error("sensor unavailable")]
    Unavailable,
}

/// A fingerprint sensor with its minutiae extractor: each call is one touch.
pub trait Sensor {
    /// Captures one impression.
    fn capture(&mut self) -> Result<Template, SensorError>;
}

/// A sensor fed by a [`SyntheticFinger`] (or none), with seeded noise.
#[derive(Debug)]
pub struct SimulatedSensor<R = ChaCha8Rng> {
    finger: Option<SyntheticFinger>,
    params: ImpressionParams,
    min_minutiae: usize,
    rng: R,
}

impl SimulatedSensor<ChaCha8Rng> {
    /// A sensor with default impression noise and a ChaCha8 generator
    /// seeded from `seed`.
    pub fn from_seed(finger: Option<SyntheticFinger>, seed: u64) -> Self {
        Self::new(
            finger,
            ImpressionParams::default(),
            ChaCha8Rng::seed_from_u64(seed),
        )
    }
}

impl<R: Rng> SimulatedSensor<R> {
    /// Captures below this many minutiae are reported as
    /// [`SensorError::PoorCapture`].
    pub const DEFAULT_MIN_MINUTIAE: usize = crate::enrolment::MIN_MINUTIAE;

    /// A sensor presenting `finger` (or nothing), with the given noise.
    pub fn new(finger: Option<SyntheticFinger>, params: ImpressionParams, rng: R) -> Self {
        Self {
            finger,
            params,
            min_minutiae: Self::DEFAULT_MIN_MINUTIAE,
            rng,
        }
    }

    /// Puts another finger on the sensor, or lifts it (`None`).
    pub fn present(&mut self, finger: Option<SyntheticFinger>) {
        self.finger = finger;
    }
}

impl<R: Rng> Sensor for SimulatedSensor<R> {
    fn capture(&mut self) -> Result<Template, SensorError> {
        let finger = self.finger.as_ref().ok_or(SensorError::NoFinger)?;
        let t = finger.impression(&self.params, &mut self.rng);
        if t.len() < self.min_minutiae {
            return Err(SensorError::PoorCapture { minutiae: t.len() });
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matcher::Matcher;

    #[test]
    fn captures_are_deterministic_and_follow_the_finger() {
        let mut rng = ChaCha8Rng::seed_from_u64(31);
        let alice = SyntheticFinger::generate(&mut rng);
        let bob = SyntheticFinger::generate(&mut rng);
        let mut s1 = SimulatedSensor::from_seed(Some(alice.clone()), 5);
        let mut s2 = SimulatedSensor::from_seed(Some(alice.clone()), 5);
        let a1 = s1.capture().unwrap();
        assert_eq!(a1, s2.capture().unwrap());
        let a2 = s1.capture().unwrap();
        assert_ne!(a1, a2, "each touch differs");
        let m = Matcher::default();
        assert!(m.verify(&a2, &a1).is_match());
        s1.present(Some(bob));
        let b = s1.capture().unwrap();
        assert!(!m.verify(&b, &a1).is_match());
        s1.present(None);
        assert_eq!(s1.capture(), Err(SensorError::NoFinger));
    }

    #[test]
    fn poor_captures_are_reported() {
        let mut rng = ChaCha8Rng::seed_from_u64(32);
        let f = SyntheticFinger::generate(&mut rng);
        let params = ImpressionParams {
            missing_rate: 0.97,
            spurious_rate: 0.0,
            ..ImpressionParams::default()
        };
        let mut s = SimulatedSensor::new(Some(f), params, rng);
        assert!(matches!(s.capture(), Err(SensorError::PoorCapture { .. })));
    }
}
