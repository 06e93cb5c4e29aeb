//! What the device needs from its fingerprint sensor and matcher.
//!
//! The biometric crate (ISO/IEC 19794-2 records, minutiae matcher,
//! simulated sensor) implements [`FingerprintReader`]; this crate never
//! parses or matches templates itself, so any sensor and extractor that
//! writes ISO/IEC 19794-2 records can be plugged in.

use crate::error::ReaderError;
use crate::model::Template;

/// The result of reading the master fingerprint at registration (claim 6).
#[derive(Debug)]
pub struct MasterReading {
    /// The master template kept for matching: the best of the impressions.
    pub template: Template,
    /// Every impression read during enrolment, in order: the "fingerprint
    /// data read when reading the master fingerprint data" that the
    /// personal key is generated from (claim 6).
    pub impressions: Vec<Template>,
}

/// One identity-confirmation attempt (claims 1, 5, 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOutcome {
    /// The captured finger matches the reference.
    Match,
    /// A usable capture that does not match: counts towards the lock.
    NoMatch,
    /// Nothing usable was captured (no finger, poor capture): does not
    /// count.
    NoCapture,
}

/// The device's fingerprint sensor together with its matcher.
pub trait FingerprintReader {
    /// Reads several impressions of one finger and builds the master
    /// template (enrolment). Fails if the impressions are unusable or come
    /// from different fingers.
    fn read_master(&mut self) -> Result<MasterReading, ReaderError>;

    /// Reads one impression and compares it with `reference` at the
    /// device's decision threshold.
    fn capture_and_match(&mut self, reference: &Template) -> MatchOutcome;
}
