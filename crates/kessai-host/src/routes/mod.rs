//! HTTP routes, one file per area.

pub mod admin;
pub mod flow_a;
pub mod flow_b;
pub mod flow_c;
pub mod flow_d;
pub mod system;
