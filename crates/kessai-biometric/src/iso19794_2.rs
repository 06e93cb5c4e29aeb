//! ISO/IEC 19794-2:2005 finger minutiae record: strict parser and writer.
//!
//! Layout (all integers big-endian):
//!
//! | bytes | field |
//! |---|---|
//! | 4 | format identifier `"FMR\0"` |
//! | 4 | version `" 20\0"` |
//! | 4 | total record length in bytes |
//! | 2 | capture equipment certification (4 bits) + capture device type (12 bits) |
//! | 2, 2 | image width, height (pixels) |
//! | 2, 2 | horizontal, vertical resolution (pixels per cm) |
//! | 1 | number of finger views |
//! | 1 | reserved, 0 |
//!
//! then per finger view: finger position (1), view number (4 bits) +
//! impression type (4 bits), finger quality (1), number of minutiae (1);
//! 6 bytes per minutia: type (2 bits) + x (14 bits), reserved (2 bits) +
//! y (14 bits), angle (1, units of 360/256°), quality (1); extended data
//! block length (2) followed by that many bytes of extended data, which this
//! parser skips (and the writer never emits).
//!
//! The parser refuses, with a typed [`IsoError`], anything malformed:
//! truncation, wrong identifiers, a length field that disagrees with the
//! bytes, reserved bits set, codes out of range, minutiae outside the image,
//! trailing bytes. It never panics.

use crate::template::{
    MAX_COORDINATE, MAX_MINUTIAE, Minutia, MinutiaKind, Template, TemplateError,
};

/// Format identifier, `"FMR\0"`.
pub const FORMAT_ID: [u8; 4] = *b"FMR\0";
/// Version of ISO/IEC 19794-2:2005, `" 20\0"`.
pub const VERSION_2005: [u8; 4] = *b" 20\0";
/// Length of the record header.
pub const HEADER_LEN: usize = 24;
/// Length of a finger view header.
pub const VIEW_HEADER_LEN: usize = 4;
/// Length of one minutia.
pub const MINUTIA_LEN: usize = 6;

/// Errors from parsing or writing a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IsoError {
    /// The bytes end before the structure does.
    #[error("record truncated at offset {offset}")]
    Truncated {
        /// Offset of the first missing byte.
        offset: usize,
    },
    /// The first four bytes are not `"FMR\0"`.
    #[error("not a finger minutiae record (format identifier)")]
    FormatIdentifier,
    /// The version is not `" 20\0"` (ISO/IEC 19794-2:2005).
    #[error("unsupported record version")]
    Version,
    /// The length field disagrees with the number of bytes.
    #[error("record length field says {declared} bytes, got {actual}")]
    RecordLength {
        /// The length field.
        declared: u32,
        /// The bytes given.
        actual: usize,
    },
    /// The reserved header byte is not zero.
    #[error("reserved header byte is not zero")]
    ReservedByte,
    /// A resolution of zero.
    #[error("image resolution is zero")]
    ZeroResolution,
    /// Image size beyond the 14-bit coordinate range.
    #[error("image size exceeds 16384 pixels")]
    ImageTooLarge,
    /// A finger position code above 10.
    #[error("finger view {view}: finger position code {code} is not defined")]
    FingerPosition {
        /// Index of the finger view.
        view: usize,
        /// The code.
        code: u8,
    },
    /// An impression type code above 8.
    #[error("finger view {view}: impression type code {code} is not defined")]
    ImpressionType {
        /// Index of the finger view.
        view: usize,
        /// The code.
        code: u8,
    },
    /// A finger quality above 100.
    #[error("finger view {view}: finger quality above 100")]
    FingerQuality {
        /// Index of the finger view.
        view: usize,
    },
    /// Minutia type `11` (reserved).
    #[error("finger view {view}, minutia {index}: reserved minutia type")]
    MinutiaType {
        /// Index of the finger view.
        view: usize,
        /// Index of the minutia.
        index: usize,
    },
    /// The two reserved bits before y are set.
    #[error("finger view {view}, minutia {index}: reserved bits set")]
    MinutiaReservedBits {
        /// Index of the finger view.
        view: usize,
        /// Index of the minutia.
        index: usize,
    },
    /// A minutia outside the declared image.
    #[error("finger view {view}, minutia {index}: outside the image")]
    MinutiaOutsideImage {
        /// Index of the finger view.
        view: usize,
        /// Index of the minutia.
        index: usize,
    },
    /// A minutia quality above 100.
    #[error("finger view {view}, minutia {index}: quality above 100")]
    MinutiaQuality {
        /// Index of the finger view.
        view: usize,
        /// Index of the minutia.
        index: usize,
    },
    /// Bytes after the last finger view.
    #[error("{count} bytes after the last finger view")]
    TrailingBytes {
        /// How many.
        count: usize,
    },
    /// The record has no finger view (or not the one asked for).
    #[error("no finger view {view} in the record")]
    NoFingerView {
        /// The index asked for.
        view: usize,
    },
    /// More than 255 finger views to write.
    #[error("more than 255 finger views")]
    TooManyViews,
    /// A view number above 15 to write (it has 4 bits).
    #[error("finger view {view}: view number above 15")]
    ViewNumber {
        /// Index of the finger view.
        view: usize,
    },
    /// A view whose image geometry differs from the first view's (the
    /// record has one geometry, in its header).
    #[error("finger view {view}: image geometry differs from the first view")]
    ViewGeometry {
        /// Index of the finger view.
        view: usize,
    },
    /// A finger view does not satisfy the template invariants.
    #[error("finger view {view}: {source}")]
    View {
        /// Index of the finger view.
        view: usize,
        /// What is wrong.
        source: TemplateError,
    },
}

/// Finger position codes 0–10 of ISO/IEC 19794-2 (table shared with
/// ISO/IEC 19794-4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FingerPosition(u8);

impl FingerPosition {
    /// Unknown finger (code 0).
    pub const UNKNOWN: Self = Self(0);
    /// Right index finger (code 2).
    pub const RIGHT_INDEX: Self = Self(2);
    /// Left index finger (code 7).
    pub const LEFT_INDEX: Self = Self(7);

    /// From the code; `None` above 10.
    pub fn new(code: u8) -> Option<Self> {
        (code <= 10).then_some(Self(code))
    }

    /// The code: 0 unknown, 1–5 right thumb…little, 6–10 left thumb…little.
    pub fn code(self) -> u8 {
        self.0
    }
}

/// Impression type codes of ISO/IEC 19794-2:2005.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ImpressionType {
    /// 0: live-scan plain (a device sensor).
    LiveScanPlain,
    /// 1: live-scan rolled.
    LiveScanRolled,
    /// 2: non-live-scan plain (ink).
    NonLiveScanPlain,
    /// 3: non-live-scan rolled.
    NonLiveScanRolled,
    /// 4: latent impression.
    LatentImpression,
    /// 5: latent tracing.
    LatentTracing,
    /// 6: latent photo.
    LatentPhoto,
    /// 7: latent lift.
    LatentLift,
    /// 8: swipe sensor.
    Swipe,
}

impl ImpressionType {
    const ALL: [Self; 9] = [
        Self::LiveScanPlain,
        Self::LiveScanRolled,
        Self::NonLiveScanPlain,
        Self::NonLiveScanRolled,
        Self::LatentImpression,
        Self::LatentTracing,
        Self::LatentPhoto,
        Self::LatentLift,
        Self::Swipe,
    ];

    /// The 4-bit code.
    pub fn code(self) -> u8 {
        match self {
            Self::LiveScanPlain => 0,
            Self::LiveScanRolled => 1,
            Self::NonLiveScanPlain => 2,
            Self::NonLiveScanRolled => 3,
            Self::LatentImpression => 4,
            Self::LatentTracing => 5,
            Self::LatentPhoto => 6,
            Self::LatentLift => 7,
            Self::Swipe => 8,
        }
    }

    /// From the code; `None` for undefined codes.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.get(usize::from(code)).copied()
    }
}

/// One finger view of a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FingerView {
    /// Which finger.
    pub finger_position: FingerPosition,
    /// View number 0–15 (several views of the same finger).
    pub view_number: u8,
    /// How the impression was taken.
    pub impression_type: ImpressionType,
    /// Finger quality 0–100.
    pub finger_quality: u8,
    /// Minutiae with the record's image geometry.
    pub template: Template,
}

/// A whole finger minutiae record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FingerMinutiaeRecord {
    /// Capture equipment certification flags (4 bits).
    pub equipment_certification: u8,
    /// Capture device type identifier (12 bits), 0 if unreported.
    pub device_type: u16,
    /// Finger views; all share the header's image geometry.
    pub views: Vec<FingerView>,
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], IsoError> {
        let end = self.pos.checked_add(n).ok_or(IsoError::Truncated {
            offset: self.bytes.len(),
        })?;
        let s = self.bytes.get(self.pos..end).ok_or(IsoError::Truncated {
            offset: self.bytes.len(),
        })?;
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, IsoError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, IsoError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, IsoError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// Parses a complete record. Every view's minutiae are checked against
/// the header's image geometry.
pub fn parse(bytes: &[u8]) -> Result<FingerMinutiaeRecord, IsoError> {
    let mut r = Reader { bytes, pos: 0 };
    if r.take(4)? != FORMAT_ID {
        return Err(IsoError::FormatIdentifier);
    }
    if r.take(4)? != VERSION_2005 {
        return Err(IsoError::Version);
    }
    let declared = r.u32()?;
    if usize::try_from(declared).ok() != Some(bytes.len()) {
        return Err(IsoError::RecordLength {
            declared,
            actual: bytes.len(),
        });
    }
    let equipment = r.u16()?;
    let width = r.u16()?;
    let height = r.u16()?;
    let x_res = r.u16()?;
    let y_res = r.u16()?;
    let view_count = r.u8()?;
    if r.u8()? != 0 {
        return Err(IsoError::ReservedByte);
    }
    if x_res == 0 || y_res == 0 {
        return Err(IsoError::ZeroResolution);
    }
    if width > MAX_COORDINATE + 1 || height > MAX_COORDINATE + 1 {
        return Err(IsoError::ImageTooLarge);
    }
    let mut views = Vec::with_capacity(usize::from(view_count));
    for view in 0..usize::from(view_count) {
        let code = r.u8()?;
        let finger_position =
            FingerPosition::new(code).ok_or(IsoError::FingerPosition { view, code })?;
        let vi = r.u8()?;
        let impression_type =
            ImpressionType::from_code(vi & 0x0F).ok_or(IsoError::ImpressionType {
                view,
                code: vi & 0x0F,
            })?;
        let finger_quality = r.u8()?;
        if finger_quality > 100 {
            return Err(IsoError::FingerQuality { view });
        }
        let count = usize::from(r.u8()?);
        let mut minutiae = Vec::with_capacity(count);
        for index in 0..count {
            let tx = r.u16()?;
            let ry = r.u16()?;
            let angle = r.u8()?;
            let quality = r.u8()?;
            let kind = MinutiaKind::from_code((tx >> 14) as u8)
                .ok_or(IsoError::MinutiaType { view, index })?;
            if ry >> 14 != 0 {
                return Err(IsoError::MinutiaReservedBits { view, index });
            }
            let (x, y) = (tx & MAX_COORDINATE, ry & MAX_COORDINATE);
            if x >= width || y >= height {
                return Err(IsoError::MinutiaOutsideImage { view, index });
            }
            if quality > 100 {
                return Err(IsoError::MinutiaQuality { view, index });
            }
            minutiae.push(Minutia {
                x,
                y,
                angle,
                kind,
                quality,
            });
        }
        let extended = usize::from(r.u16()?);
        r.take(extended)?;
        // Resolution: the template keeps the horizontal one (square pixels
        // are the norm; both are checked non-zero above).
        let template = Template::new(width, height, x_res, minutiae)
            .map_err(|source| IsoError::View { view, source })?;
        views.push(FingerView {
            finger_position,
            view_number: vi >> 4,
            impression_type,
            finger_quality,
            template,
        });
    }
    if r.pos != bytes.len() {
        return Err(IsoError::TrailingBytes {
            count: bytes.len() - r.pos,
        });
    }
    Ok(FingerMinutiaeRecord {
        equipment_certification: (equipment >> 12) as u8,
        device_type: equipment & 0x0FFF,
        views,
    })
}

impl FingerMinutiaeRecord {
    /// A one-view record of a live-scan plain impression.
    pub fn single(template: Template, finger_position: FingerPosition) -> Self {
        Self {
            equipment_certification: 0,
            device_type: 0,
            views: vec![FingerView {
                finger_position,
                view_number: 0,
                impression_type: ImpressionType::LiveScanPlain,
                finger_quality: 0,
                template,
            }],
        }
    }

    /// Writes the record. The header's image geometry is the first view's;
    /// every view must share it. Extended data length is written as 0.
    pub fn to_bytes(&self) -> Result<Vec<u8>, IsoError> {
        let count = u8::try_from(self.views.len()).map_err(|_| IsoError::TooManyViews)?;
        let first = self
            .views
            .first()
            .ok_or(IsoError::NoFingerView { view: 0 })?;
        let (w, h, res) = (
            first.template.width_px(),
            first.template.height_px(),
            first.template.resolution_ppcm(),
        );
        let mut len = HEADER_LEN;
        for (view, v) in self.views.iter().enumerate() {
            let t = &v.template;
            if (t.width_px(), t.height_px(), t.resolution_ppcm()) != (w, h, res) {
                // Geometry lives in the header only.
                return Err(IsoError::ViewGeometry { view });
            }
            if v.view_number > 15 {
                return Err(IsoError::ViewNumber { view });
            }
            if v.finger_quality > 100 {
                return Err(IsoError::FingerQuality { view });
            }
            len += VIEW_HEADER_LEN + MINUTIA_LEN * t.len() + 2;
        }
        let total = u32::try_from(len).map_err(|_| IsoError::TooManyViews)?;
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(&FORMAT_ID);
        out.extend_from_slice(&VERSION_2005);
        out.extend_from_slice(&total.to_be_bytes());
        let equipment =
            (u16::from(self.equipment_certification & 0x0F) << 12) | (self.device_type & 0x0FFF);
        out.extend_from_slice(&equipment.to_be_bytes());
        for v in [w, h, res, res] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        out.push(count);
        out.push(0);
        for v in &self.views {
            out.push(v.finger_position.code());
            out.push((v.view_number << 4) | v.impression_type.code());
            out.push(v.finger_quality);
            // Template guarantees at most MAX_MINUTIAE.
            debug_assert!(v.template.len() <= MAX_MINUTIAE);
            out.push(v.template.len() as u8);
            for m in v.template.minutiae() {
                out.extend_from_slice(&((u16::from(m.kind.code()) << 14) | m.x).to_be_bytes());
                out.extend_from_slice(&m.y.to_be_bytes());
                out.push(m.angle);
                out.push(m.quality);
            }
            out.extend_from_slice(&0u16.to_be_bytes());
        }
        debug_assert_eq!(out.len(), len);
        Ok(out)
    }
}

impl Template {
    /// Parses an ISO/IEC 19794-2:2005 record and returns its first finger
    /// view.
    pub fn from_iso19794_2(bytes: &[u8]) -> Result<Template, IsoError> {
        let record = parse(bytes)?;
        record
            .views
            .into_iter()
            .next()
            .map(|v| v.template)
            .ok_or(IsoError::NoFingerView { view: 0 })
    }

    /// Writes this template as a one-view ISO/IEC 19794-2:2005 record
    /// (finger position unknown, live-scan plain).
    pub fn to_iso19794_2(&self) -> Vec<u8> {
        let record = FingerMinutiaeRecord::single(self.clone(), FingerPosition::UNKNOWN);
        // A single view built from a valid template always encodes.
        match record.to_bytes() {
            Ok(bytes) => bytes,
            Err(e) => unreachable!("valid template failed to encode: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chacha20::ChaCha8Rng;
    use rand_core::{Rng, SeedableRng};

    fn sample() -> Template {
        let minutiae = (0..40u16)
            .map(|i| Minutia {
                x: i * 7,
                y: 399 - i * 9,
                angle: (i * 37 % 256) as u8,
                kind: MinutiaKind::from_code((i % 3) as u8).unwrap(),
                quality: (i * 3 % 101) as u8,
            })
            .collect();
        Template::new(300, 400, 197, minutiae).unwrap()
    }

    #[test]
    fn round_trip() {
        let t = sample();
        let bytes = t.to_iso19794_2();
        assert_eq!(bytes.len(), 24 + 4 + 40 * 6 + 2);
        assert_eq!(&bytes[..8], b"FMR\0 20\0");
        assert_eq!(Template::from_iso19794_2(&bytes).unwrap(), t);
        let empty = Template::new(10, 10, 197, vec![]).unwrap();
        assert_eq!(
            Template::from_iso19794_2(&empty.to_iso19794_2()).unwrap(),
            empty
        );
    }

    #[test]
    fn multi_view_round_trip() {
        let mut rec = FingerMinutiaeRecord::single(sample(), FingerPosition::RIGHT_INDEX);
        rec.equipment_certification = 0x8;
        rec.device_type = 0x123;
        rec.views.push(FingerView {
            finger_position: FingerPosition::LEFT_INDEX,
            view_number: 3,
            impression_type: ImpressionType::Swipe,
            finger_quality: 77,
            template: Template::new(300, 400, 197, sample().minutiae()[..5].to_vec()).unwrap(),
        });
        let bytes = rec.to_bytes().unwrap();
        assert_eq!(parse(&bytes).unwrap(), rec);
    }

    #[test]
    fn writer_refuses_what_the_format_cannot_carry() {
        let mut rec = FingerMinutiaeRecord::single(sample(), FingerPosition::RIGHT_INDEX);
        rec.views[0].view_number = 16;
        assert_eq!(rec.to_bytes(), Err(IsoError::ViewNumber { view: 0 }));
        rec.views[0].view_number = 0;
        rec.views[0].finger_quality = 101;
        assert_eq!(rec.to_bytes(), Err(IsoError::FingerQuality { view: 0 }));
        rec.views[0].finger_quality = 0;
        rec.views.push(FingerView {
            template: Template::new(200, 400, 197, vec![]).unwrap(),
            ..rec.views[0].clone()
        });
        assert_eq!(rec.to_bytes(), Err(IsoError::ViewGeometry { view: 1 }));
        rec.views.clear();
        assert_eq!(rec.to_bytes(), Err(IsoError::NoFingerView { view: 0 }));
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = sample().to_iso19794_2();
        for n in 0..bytes.len() {
            assert!(parse(&bytes[..n]).is_err(), "prefix {n} accepted");
        }
        // Truncated but with the length field patched to match: still refused.
        for n in HEADER_LEN..bytes.len() {
            let mut b = bytes[..n].to_vec();
            b[8..12].copy_from_slice(&(n as u32).to_be_bytes());
            assert!(parse(&b).is_err(), "patched prefix {n} accepted");
        }
    }

    #[test]
    fn typed_errors() {
        let good = sample().to_iso19794_2();
        let patch = |i: usize, v: u8| {
            let mut b = good.clone();
            b[i] = v;
            parse(&b)
        };
        assert_eq!(patch(0, b'X'), Err(IsoError::FormatIdentifier));
        assert_eq!(patch(5, b'3'), Err(IsoError::Version));
        assert!(matches!(patch(11, 0), Err(IsoError::RecordLength { .. })));
        assert_eq!(patch(23, 1), Err(IsoError::ReservedByte));
        assert_eq!(patch(19, 0), Err(IsoError::ZeroResolution));
        assert_eq!(
            patch(24, 11),
            Err(IsoError::FingerPosition { view: 0, code: 11 })
        );
        assert_eq!(
            patch(25, 0x09),
            Err(IsoError::ImpressionType { view: 0, code: 9 })
        );
        assert_eq!(patch(26, 101), Err(IsoError::FingerQuality { view: 0 }));
        // First minutia at offset 28.
        assert_eq!(
            patch(28, 0xC0),
            Err(IsoError::MinutiaType { view: 0, index: 0 })
        );
        assert_eq!(
            patch(30, 0x41),
            Err(IsoError::MinutiaReservedBits { view: 0, index: 0 })
        );
        assert_eq!(
            patch(30, 0x02),
            Err(IsoError::MinutiaOutsideImage { view: 0, index: 0 })
        );
        assert_eq!(
            patch(33, 101),
            Err(IsoError::MinutiaQuality { view: 0, index: 0 })
        );
        // One view too many announced.
        assert!(matches!(patch(22, 2), Err(IsoError::Truncated { .. })));
        // Fewer minutiae announced than present: trailing bytes.
        assert!(matches!(patch(27, 0), Err(IsoError::TrailingBytes { .. })));
        // No views at all: parses, but there is no template.
        let mut none = good[..24].to_vec();
        none[8..12].copy_from_slice(&24u32.to_be_bytes());
        none[22] = 0;
        assert_eq!(parse(&none).unwrap().views.len(), 0);
        assert_eq!(
            Template::from_iso19794_2(&none),
            Err(IsoError::NoFingerView { view: 0 })
        );
    }

    #[test]
    fn extended_data_is_skipped() {
        let good = sample().to_iso19794_2();
        let mut b = good[..good.len() - 2].to_vec();
        // Extended data block of 6 bytes: type 0x0001 (ridge count), length 6, 2 bytes data.
        b.extend_from_slice(&[0x00, 0x06, 0x00, 0x01, 0x00, 0x06, 0x00, 0x00]);
        let n = b.len() as u32;
        b[8..12].copy_from_slice(&n.to_be_bytes());
        assert_eq!(Template::from_iso19794_2(&b).unwrap(), sample());
        // Extended length pointing past the end.
        let last = b.len() - 7;
        b[last] = 0x07;
        assert!(matches!(parse(&b), Err(IsoError::Truncated { .. })));
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = ChaCha8Rng::seed_from_u64(19794);
        let good = sample().to_iso19794_2();
        for i in 0..20_000 {
            let mut b = if i % 2 == 0 {
                let mut v = vec![0u8; (rng.next_u32() % 300) as usize];
                rng.fill_bytes(&mut v);
                if v.len() >= 8 && i % 4 == 0 {
                    v[..8].copy_from_slice(b"FMR\0 20\0");
                }
                v
            } else {
                good.clone()
            };
            // Flip a few bytes of the valid record.
            if i % 2 == 1 {
                for _ in 0..1 + rng.next_u32() % 3 {
                    let at = (rng.next_u32() as usize) % b.len();
                    b[at] = rng.next_u32() as u8;
                }
            }
            if let Ok(rec) = parse(&b) {
                // Whatever parses re-encodes to a record that parses back to
                // the same value.
                if let Ok(out) = rec.to_bytes()
                    && out.len() == b.len()
                {
                    assert_eq!(parse(&out).unwrap(), rec);
                }
            }
        }
    }
}
