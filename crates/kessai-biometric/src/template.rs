//! Minutiae templates.

use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

/// Largest coordinate the ISO/IEC 19794-2 record can carry (14 bits).
pub const MAX_COORDINATE: u16 = 0x3FFF;

/// Most minutiae one finger view can carry (the count is one byte).
pub const MAX_MINUTIAE: usize = 255;

/// Minutia type, as coded in ISO/IEC 19794-2 (2 bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MinutiaKind {
    /// Code `00`: other / not determined.
    Other,
    /// Code `01`: ridge ending.
    RidgeEnding,
    /// Code `10`: ridge bifurcation.
    Bifurcation,
}

impl MinutiaKind {
    /// The 2-bit ISO code.
    pub fn code(self) -> u8 {
        match self {
            Self::Other => 0,
            Self::RidgeEnding => 1,
            Self::Bifurcation => 2,
        }
    }

    /// From the 2-bit ISO code; `11` is reserved and refused.
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(Self::Other),
            1 => Some(Self::RidgeEnding),
            2 => Some(Self::Bifurcation),
            _ => None,
        }
    }
}

/// One minutia in image coordinates (pixels, origin top-left, y down).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Minutia {
    /// Column, pixels from the left edge (14 bits in the record).
    pub x: u16,
    /// Row, pixels from the top edge (14 bits in the record).
    pub y: u16,
    /// Direction in units of 360/256 degrees, counter-clockwise from the
    /// horizontal axis pointing right (ISO/IEC 19794-2).
    pub angle: u8,
    /// Ridge ending, bifurcation or other.
    pub kind: MinutiaKind,
    /// Extractor's confidence, 0–100 (0: not reported).
    pub quality: u8,
}

impl Zeroize for Minutia {
    fn zeroize(&mut self) {
        self.x.zeroize();
        self.y.zeroize();
        self.angle.zeroize();
        self.quality.zeroize();
        self.kind = MinutiaKind::Other;
    }
}

/// Why a [`Template`] cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// More than 255 minutiae (the ISO count is one byte).
    #[error("{count} minutiae; at most 255 fit in a finger view")]
    TooManyMinutiae {
        /// How many were given.
        count: usize,
    },
    /// A resolution of zero pixels per centimetre.
    #[error("image resolution must not be zero")]
    ZeroResolution,
    /// The image is larger than the 14-bit coordinates can address.
    #[error("image size exceeds 16384 pixels")]
    ImageTooLarge,
    /// A minutia lies outside the image.
    #[error("minutia {index} lies outside the image")]
    MinutiaOutsideImage {
        /// Position of the minutia in the list.
        index: usize,
    },
    /// A minutia quality above 100.
    #[error("minutia {index} has quality above 100")]
    MinutiaQuality {
        /// Position of the minutia in the list.
        index: usize,
    },
}

/// A minutiae template: one finger view with its image geometry.
///
/// Invariants (checked by [`Template::new`]): at most 255 minutiae, each
/// inside the `width_px × height_px` image, quality ≤ 100, resolution > 0.
/// A fingerprint is not a secret, but it is personal data: the template is
/// zeroized on drop and `Debug` prints only the minutiae count.
#[derive(Clone, PartialEq, Eq)]
pub struct Template {
    width_px: u16,
    height_px: u16,
    resolution_ppcm: u16,
    minutiae: Vec<Minutia>,
}

impl Template {
    /// 500 dpi expressed in pixels per centimetre (ISO/IEC 19794-2 unit).
    pub const RESOLUTION_500_DPI: u16 = 197;

    /// Builds a template after checking the invariants.
    pub fn new(
        width_px: u16,
        height_px: u16,
        resolution_ppcm: u16,
        minutiae: Vec<Minutia>,
    ) -> Result<Self, TemplateError> {
        // Build first so that a refused list is still zeroized on drop.
        let t = Self {
            width_px,
            height_px,
            resolution_ppcm,
            minutiae,
        };
        if t.minutiae.len() > MAX_MINUTIAE {
            return Err(TemplateError::TooManyMinutiae {
                count: t.minutiae.len(),
            });
        }
        if resolution_ppcm == 0 {
            return Err(TemplateError::ZeroResolution);
        }
        if width_px > MAX_COORDINATE + 1 || height_px > MAX_COORDINATE + 1 {
            return Err(TemplateError::ImageTooLarge);
        }
        for (index, m) in t.minutiae.iter().enumerate() {
            if m.x >= width_px || m.y >= height_px {
                return Err(TemplateError::MinutiaOutsideImage { index });
            }
            if m.quality > 100 {
                return Err(TemplateError::MinutiaQuality { index });
            }
        }
        Ok(t)
    }

    /// Image width in pixels.
    pub fn width_px(&self) -> u16 {
        self.width_px
    }

    /// Image height in pixels.
    pub fn height_px(&self) -> u16 {
        self.height_px
    }

    /// Resolution in pixels per centimetre (197 for 500 dpi).
    pub fn resolution_ppcm(&self) -> u16 {
        self.resolution_ppcm
    }

    /// The minutiae, in extractor order.
    pub fn minutiae(&self) -> &[Minutia] {
        &self.minutiae
    }

    /// Number of minutiae.
    pub fn len(&self) -> usize {
        self.minutiae.len()
    }

    /// `true` when there are no minutiae.
    pub fn is_empty(&self) -> bool {
        self.minutiae.is_empty()
    }
}

impl Zeroize for Template {
    fn zeroize(&mut self) {
        self.minutiae.zeroize();
        self.width_px.zeroize();
        self.height_px.zeroize();
        self.resolution_ppcm.zeroize();
    }
}

impl Drop for Template {
    fn drop(&mut self) {
        self.zeroize();
    }
}

impl ZeroizeOnDrop for Template {}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Template")
            .field("minutiae", &self.minutiae.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(x: u16, y: u16) -> Minutia {
        Minutia {
            x,
            y,
            angle: 10,
            kind: MinutiaKind::RidgeEnding,
            quality: 60,
        }
    }

    #[test]
    fn debug_shows_only_the_count() {
        let t = Template::new(300, 400, 197, vec![m(123, 321), m(5, 6)]).unwrap();
        let s = format!("{t:?}");
        assert_eq!(s, "Template { minutiae: 2, .. }");
        assert!(!s.contains("123") && !s.contains("321"));
    }

    #[test]
    fn invariants_are_checked() {
        assert_eq!(
            Template::new(300, 400, 197, vec![m(300, 1)]),
            Err(TemplateError::MinutiaOutsideImage { index: 0 })
        );
        assert_eq!(
            Template::new(300, 400, 197, vec![m(1, 1), m(1, 400)]),
            Err(TemplateError::MinutiaOutsideImage { index: 1 })
        );
        assert_eq!(
            Template::new(300, 400, 0, vec![]),
            Err(TemplateError::ZeroResolution)
        );
        assert_eq!(
            Template::new(300, 400, 197, vec![m(1, 1); 256]),
            Err(TemplateError::TooManyMinutiae { count: 256 })
        );
        let mut q = m(1, 1);
        q.quality = 101;
        assert_eq!(
            Template::new(300, 400, 197, vec![q]),
            Err(TemplateError::MinutiaQuality { index: 0 })
        );
        assert_eq!(
            Template::new(20_000, 400, 197, vec![]),
            Err(TemplateError::ImageTooLarge)
        );
        assert!(Template::new(300, 400, 197, vec![m(299, 399); 255]).is_ok());
    }

    #[test]
    fn zeroize_clears_minutiae() {
        let mut t = Template::new(300, 400, 197, vec![m(12, 34)]).unwrap();
        t.zeroize();
        assert!(t.is_empty());
        assert_eq!(t.width_px(), 0);
    }

    #[test]
    fn kind_codes() {
        for k in [
            MinutiaKind::Other,
            MinutiaKind::RidgeEnding,
            MinutiaKind::Bifurcation,
        ] {
            assert_eq!(MinutiaKind::from_code(k.code()), Some(k));
        }
        assert_eq!(MinutiaKind::from_code(3), None);
    }
}
