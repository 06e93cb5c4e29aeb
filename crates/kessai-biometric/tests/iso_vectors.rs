//! Known ISO/IEC 19794-2:2005 records (see `tests/vectors/README.md`).

use kessai_biometric::iso19794_2::{FingerPosition, ImpressionType, parse};
use kessai_biometric::{Matcher, Minutia, MinutiaKind, Template};

fn vector(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(path).unwrap();
    let hex: String = text.split_whitespace().collect();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn fingerjetfx_two_view_record() {
    let bytes = vector("fingerjetfx_two_views.hex");
    assert_eq!(bytes.len(), 846);
    let rec = parse(&bytes).unwrap();
    assert_eq!(rec.equipment_certification, 0x8);
    assert_eq!(rec.device_type, 0x001);
    assert_eq!(rec.views.len(), 2);

    let v = &rec.views[0];
    assert_eq!(v.finger_position, FingerPosition::RIGHT_INDEX);
    assert_eq!(v.impression_type, ImpressionType::NonLiveScanPlain);
    assert_eq!((v.view_number, v.finger_quality), (0, 80));
    let t = &v.template;
    assert_eq!(
        (t.width_px(), t.height_px(), t.resolution_ppcm()),
        (314, 504, 197)
    );
    assert_eq!(t.len(), 70);
    assert_eq!(
        t.minutiae()[0],
        Minutia {
            x: 164,
            y: 231,
            angle: 0x5f,
            kind: MinutiaKind::Bifurcation,
            quality: 0
        }
    );

    let v = &rec.views[1];
    assert_eq!(v.finger_position, FingerPosition::LEFT_INDEX);
    assert_eq!(v.impression_type, ImpressionType::LiveScanPlain);
    assert_eq!(v.template.len(), 65);
    assert_eq!(
        v.template.minutiae()[0],
        Minutia {
            x: 117,
            y: 163,
            angle: 0x9f,
            kind: MinutiaKind::RidgeEnding,
            quality: 0
        }
    );

    // Re-encoding gives the published bytes back.
    assert_eq!(rec.to_bytes().unwrap(), bytes);
}

#[test]
fn fingerjetfx_extractor_output() {
    let bytes = vector("fingerjetfx_one_view.hex");
    let rec = parse(&bytes).unwrap();
    assert_eq!((rec.equipment_certification, rec.device_type), (0, 0));
    let v = &rec.views[0];
    assert_eq!(v.finger_position, FingerPosition::UNKNOWN);
    assert_eq!(v.finger_quality, 57);
    assert_eq!((v.template.width_px(), v.template.height_px()), (192, 350));
    assert_eq!(v.template.len(), 68);
    assert_eq!(
        v.template.minutiae()[0],
        Minutia {
            x: 92,
            y: 335,
            angle: 61,
            kind: MinutiaKind::Bifurcation,
            quality: 94
        }
    );
    assert_eq!(rec.to_bytes().unwrap(), bytes);
    // A bare template does not carry the finger quality (byte 26).
    let t = Template::from_iso19794_2(&bytes).unwrap();
    let mut ours = t.to_iso19794_2();
    assert_eq!(ours[26], 0);
    ours[26] = 57;
    assert_eq!(ours, bytes);
}

#[test]
fn hand_built_record() {
    let bytes = vector("hand_built.hex");
    let t = Template::from_iso19794_2(&bytes).unwrap();
    let expected = Template::new(
        300,
        400,
        197,
        vec![
            Minutia {
                x: 100,
                y: 200,
                angle: 64,
                kind: MinutiaKind::RidgeEnding,
                quality: 80,
            },
            Minutia {
                x: 150,
                y: 250,
                angle: 128,
                kind: MinutiaKind::Bifurcation,
                quality: 70,
            },
        ],
    )
    .unwrap();
    assert_eq!(t, expected);
    let rec = parse(&bytes).unwrap();
    assert_eq!(rec.views[0].finger_position, FingerPosition::RIGHT_INDEX);
    assert_eq!(rec.views[0].finger_quality, 60);
    // Our writer emits finger position "unknown" and quality 0 for a bare
    // template; everything else is byte-identical.
    let mut ours = expected.to_iso19794_2();
    ours[24] = 2;
    ours[26] = 60;
    assert_eq!(ours, bytes);
}

#[test]
fn real_extractor_templates_work_with_the_matcher() {
    let rec = parse(&vector("fingerjetfx_two_views.hex")).unwrap();
    let (right, left) = (&rec.views[0].template, &rec.views[1].template);
    let m = Matcher::default();
    assert!(m.verify(right, right).is_match());
    assert!(m.verify(left, left).is_match());
    // Right and left index fingers are different fingers.
    assert!(!m.verify(left, right).is_match());
    assert!(!m.verify(right, left).is_match());
}
