//! The fingerprint component of kessai's biometric device (flow A, seed
//! 000): minutiae templates, a matcher, enrolment, a simulated sensor and
//! the accuracy benchmark that sets the device's threshold.
//!
//! What it does:
//! - [`Template`]: a minutiae template (positions, directions, types) with
//!   its image geometry; zeroized on drop, `Debug` shows only the count.
//! - [`iso19794_2`]: strict parser and writer of the ISO/IEC 19794-2:2005
//!   finger minutiae record, so a real sensor's extractor output can be used.
//! - [`matcher`]: a minutiae matcher tolerant to rotation, translation,
//!   elastic distortion, missing and spurious minutiae, with an integer score
//!   and an integer threshold ([`Matcher::verify`]).
//! - [`enrol`]: keeps the best of several impressions, refuses impressions
//!   of different fingers.
//! - [`synth`] and [`sensor`]: seeded synthetic fingers (orientation field
//!   with cores and deltas, realistic minutiae density) and noisy
//!   impressions of them (rotation, translation, skin distortion, jitter,
//!   missing and spurious minutiae, partial overlap), behind the [`Sensor`]
//!   trait a real device would implement too.
//! - [`bench`](mod@bench): genuine/impostor comparisons on a generated set, FNMR at
//!   fixed FMR, EER, DET curve as PNG, match time.
//!
//! What it does not do: image processing (no minutiae extraction from
//! pixels), liveness or presentation-attack detection, storage or sealing of
//! templates, key derivation, I/O. Everything is deterministic from the
//! injected randomness; only [`bench::run_accuracy`] reads the clock, to time
//! matches.
//!
//! Floats are used inside the matcher and the generator (this crate has
//! nothing to do with money); decisions are taken on integer scores.
//!
//! ```
//! use chacha20::ChaCha8Rng;
//! use kessai_biometric::synth::{ImpressionParams, SyntheticFinger};
//! use kessai_biometric::{MatchDecision, Matcher, enrol};
//! use rand_core::SeedableRng;
//!
//! let mut rng = ChaCha8Rng::seed_from_u64(7);
//! let alice = SyntheticFinger::generate(&mut rng);
//! let bob = SyntheticFinger::generate(&mut rng);
//! let params = ImpressionParams::default();
//! let impressions: Vec<_> = (0..3).map(|_| alice.impression(&params, &mut rng)).collect();
//! let master = enrol(&impressions, &Matcher::default()).unwrap();
//!
//! let matcher = Matcher::default();
//! let probe = alice.impression(&params, &mut rng);
//! assert!(matches!(matcher.verify(&probe, &master), MatchDecision::Match { .. }));
//! let other = bob.impression(&params, &mut rng);
//! assert!(matches!(matcher.verify(&other, &master), MatchDecision::NoMatch { .. }));
//!
//! // Templates travel as ISO/IEC 19794-2 records.
//! let bytes = master.to_iso19794_2();
//! assert_eq!(kessai_biometric::Template::from_iso19794_2(&bytes).unwrap(), master);
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![allow(
    clippy::float_arithmetic,
    reason = "geometry of minutiae; no money in this crate, decisions use integer scores"
)]

mod angle;
pub mod bench;
mod enrolment;
pub mod iso19794_2;
pub mod matcher;
mod png;
mod sample;
pub mod sensor;
pub mod synth;
mod template;

pub use enrolment::{EnrolError, MIN_IMPRESSIONS, MIN_MINUTIAE, enrol};
pub use matcher::{MatchDecision, Matcher, match_score};
pub use sensor::{Sensor, SensorError, SimulatedSensor};
pub use template::{Minutia, MinutiaKind, Template, TemplateError};
