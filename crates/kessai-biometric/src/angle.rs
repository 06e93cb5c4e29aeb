//! Angle conventions shared by the generator and the matcher.
//!
//! ISO/IEC 19794-2 stores a minutia direction in one byte, in units of
//! 360/256 degrees, counter-clockwise from the horizontal axis pointing
//! right, as seen on the image (whose y axis points down). Internally we
//! work in a y-up plane (`(x, -y)`) where that angle is the ordinary
//! mathematical angle in radians.

use std::f32::consts::TAU;

/// ISO angle byte → radians in `[0, 2π)`.
pub(crate) fn iso_to_rad(angle: u8) -> f32 {
    f32::from(angle) * (TAU / 256.0)
}

/// Radians (any value) → nearest ISO angle byte.
pub(crate) fn rad_to_iso(rad: f32) -> u8 {
    let turns = rad.rem_euclid(TAU) / TAU * 256.0;
    // `turns` is in [0, 256]; 256 wraps to 0.
    (turns.round() as u32 % 256) as u8
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f32::consts::PI;

    #[test]
    fn iso_units_round_trip() {
        for a in 0..=255u8 {
            assert_eq!(rad_to_iso(iso_to_rad(a)), a);
        }
        assert_eq!(rad_to_iso(TAU - 0.0001), 0);
        assert_eq!(rad_to_iso(-PI / 2.0), 192);
        assert_eq!(rad_to_iso(PI / 2.0), 64);
    }
}
