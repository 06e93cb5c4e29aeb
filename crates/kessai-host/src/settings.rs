//! Host settings: one section per flow, each defined in its route module.

use crate::routes::{flow_a, flow_b, flow_c, flow_d};

/// Everything configurable about the flows.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Flow A (fingerprint device).
    pub flow_a: flow_a::Settings,
    /// Flow B (IC-card e-money).
    pub flow_b: flow_b::Settings,
    /// Flow C (card reader on the phone).
    pub flow_c: flow_c::Settings,
    /// Flow D (temporary password at the POS).
    pub flow_d: flow_d::Settings,
}
