//! The temporary password as an EMVCo QR code, consumer-presented mode
//! (EMV QRCPS-CPM v1.1): BER-TLV, base64, rendered as terminal text or PNG.
//!
//! # The generic layer: [`CpmPayload`]
//!
//! Strict encode and decode of any CPM payload: payload format indicator
//! `85` = "CPV01" first, then one or more application templates `61`, then at
//! most one common data template `62`, nothing else, nothing after. Inside a
//! template: primitive data objects, each tag at most once, plus at most one
//! transparent template (`63` in `61`, `64` in `62`) of primitive objects.
//! ADF name `4F` is 5–16 bytes, application label `50` 1–16, PAN `5A` at most
//! 10, track 2 equivalent `57` at most 19. The base64 is RFC 4648 with
//! canonical padding, as the specification requires. Tested against the
//! specification's example payloads (`tests/vectors/emvco_cpm_examples.txt`).
//!
//! # The kessai profile: [`PasswordQr`]
//!
//! ```text
//! 85 05 "CPV01"
//! 61 ..                        application template
//!    4F 08 F06B657373616901    ADF name = the kessai applet AID
//!    50 06 "kessai"            application label
//!    5A 0A <token PAN>         token BIN (6) ‖ password (12) ‖ Luhn digit, BCD, F-padded
//!    63 ..                     application specific transparent template
//!       9F26 08 <cryptogram>   first 8 bytes of the card cryptogram of the authorization
//!       9F36 02 <ATC>          low 16 bits of the card counter (EMV ATC size)
//!       9F10 06 01 <ctr 4> <cvm>  issuer application data: version, full counter, CVM
//! ```
//!
//! The card's real PAN never goes into the QR code (SPEC §3: no card number
//! on the merchant side): like an EMV payment token, the one-time password
//! travels in the PAN field behind an issuer-chosen token BIN. The host
//! checks the cryptogram prefix and counter against the password's record,
//! so a QR code whose card data belongs to another card is refused.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use kessai_card::AID;
use qrcode::{Color, EcLevel, QrCode};
use serde::{Deserialize, Serialize};

use crate::FlowDError;
use crate::password::TemporaryPassword;
use crate::tlv;

/// Payload format indicator value of CPM v1.
pub const PAYLOAD_FORMAT: &[u8] = b"CPV01";
/// Longest base64 payload accepted (far above what a kessai QR needs).
pub const MAX_PAYLOAD_CHARS: usize = 1024;
const APPLICATION_LABEL: &[u8] = b"kessai";

const T_PFI: u32 = 0x85;
const T_APP: u32 = 0x61;
const T_COMMON: u32 = 0x62;
const T_APP_TRANSPARENT: u32 = 0x63;
const T_COMMON_TRANSPARENT: u32 = 0x64;
const T_ADF: u32 = 0x4F;
const T_LABEL: u32 = 0x50;
const T_TRACK2: u32 = 0x57;
const T_PAN: u32 = 0x5A;
const T_CRYPTOGRAM: u32 = 0x9F26;
const T_ATC: u32 = 0x9F36;
const T_IAD: u32 = 0x9F10;

/// One primitive data object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataObject {
    /// Tag, big-endian (`0x5A`, `0x9F26`).
    pub tag: u32,
    /// Value bytes.
    pub value: Vec<u8>,
}

/// An application template (`61`) or the common data template (`62`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Template {
    /// Its primitive data objects, in order.
    pub objects: Vec<DataObject>,
    /// Its transparent template (`63` / `64`), if present.
    pub transparent: Option<Vec<DataObject>>,
}

impl Template {
    /// The value of primitive `tag`, if present.
    pub fn get(&self, tag: u32) -> Option<&[u8]> {
        self.objects
            .iter()
            .find(|o| o.tag == tag)
            .map(|o| o.value.as_slice())
    }

    /// The value of `tag` inside the transparent template, if present.
    pub fn get_transparent(&self, tag: u32) -> Option<&[u8]> {
        self.transparent
            .as_ref()?
            .iter()
            .find(|o| o.tag == tag)
            .map(|o| o.value.as_slice())
    }
}

/// A consumer-presented-mode payload (see the module docs for the rules).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CpmPayload {
    /// Application templates (`61`), at least one.
    pub applications: Vec<Template>,
    /// Common data template (`62`).
    pub common: Option<Template>,
}

fn bad(why: &'static str) -> FlowDError {
    FlowDError::MalformedQr(why)
}

fn parse_template(value: &[u8], transparent_tag: u32) -> Result<Template, FlowDError> {
    let mut t = Template::default();
    let mut seen = Vec::new();
    for obj in tlv::parse(value).map_err(bad)? {
        if seen.contains(&obj.tag) {
            return Err(bad("duplicate tag in template"));
        }
        seen.push(obj.tag);
        if obj.tag == transparent_tag {
            let mut inner = Vec::new();
            for o in tlv::parse(obj.value).map_err(bad)? {
                if tlv::is_constructed(o.tag) {
                    return Err(bad("constructed object in transparent template"));
                }
                if inner.iter().any(|x: &DataObject| x.tag == o.tag) {
                    return Err(bad("duplicate tag in transparent template"));
                }
                inner.push(DataObject {
                    tag: o.tag,
                    value: o.value.to_vec(),
                });
            }
            t.transparent = Some(inner);
            continue;
        }
        if tlv::is_constructed(obj.tag) {
            return Err(bad("unexpected constructed object in template"));
        }
        let ok = match obj.tag {
            T_ADF => (5..=16).contains(&obj.value.len()),
            T_LABEL => (1..=16).contains(&obj.value.len()),
            T_PAN => (1..=10).contains(&obj.value.len()),
            T_TRACK2 => (1..=19).contains(&obj.value.len()),
            _ => true,
        };
        if !ok {
            return Err(bad("data object of the wrong length"));
        }
        t.objects.push(DataObject {
            tag: obj.tag,
            value: obj.value.to_vec(),
        });
    }
    Ok(t)
}

fn encode_template(out: &mut Vec<u8>, tag: u32, t: &Template, transparent_tag: u32) {
    let mut body = Vec::new();
    for o in &t.objects {
        tlv::encode(&mut body, o.tag, &o.value);
    }
    if let Some(tr) = &t.transparent {
        let mut inner = Vec::new();
        for o in tr {
            tlv::encode(&mut inner, o.tag, &o.value);
        }
        tlv::encode(&mut body, transparent_tag, &inner);
    }
    tlv::encode(out, tag, &body);
}

impl CpmPayload {
    /// Decodes the BER-TLV bytes of a payload.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, FlowDError> {
        let top = tlv::parse(bytes).map_err(bad)?;
        let mut it = top.into_iter().peekable();
        match it.next() {
            Some(t) if t.tag == T_PFI && t.value == PAYLOAD_FORMAT => {}
            Some(t) if t.tag == T_PFI => return Err(bad("unsupported payload format indicator")),
            _ => return Err(bad("payload format indicator must come first")),
        }
        let mut p = CpmPayload::default();
        while let Some(t) = it.next_if(|t| t.tag == T_APP) {
            p.applications
                .push(parse_template(t.value, T_APP_TRANSPARENT)?);
        }
        if p.applications.is_empty() {
            return Err(bad("no application template"));
        }
        if let Some(t) = it.next_if(|t| t.tag == T_COMMON) {
            p.common = Some(parse_template(t.value, T_COMMON_TRANSPARENT)?);
        }
        if it.next().is_some() {
            return Err(bad("unexpected data object after the templates"));
        }
        Ok(p)
    }

    /// Decodes a base64 payload as read from the QR code.
    pub fn from_base64(text: &str) -> Result<Self, FlowDError> {
        if text.len() > MAX_PAYLOAD_CHARS {
            return Err(bad("payload too long"));
        }
        let bytes = STANDARD.decode(text).map_err(|_| bad("not base64"))?;
        Self::from_bytes(&bytes)
    }

    /// The BER-TLV bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        tlv::encode(&mut out, T_PFI, PAYLOAD_FORMAT);
        for a in &self.applications {
            encode_template(&mut out, T_APP, a, T_APP_TRANSPARENT);
        }
        if let Some(c) = &self.common {
            encode_template(&mut out, T_COMMON, c, T_COMMON_TRANSPARENT);
        }
        out
    }

    /// The base64 text that goes into the QR code.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.to_bytes())
    }
}

/// The issuer's token BIN: six digits put in front of the password in the
/// QR code's PAN field. Serialized as a 6-digit string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TokenBin([u8; 6]);

impl TokenBin {
    /// Six ASCII digits.
    pub fn new(digits: &str) -> Result<Self, FlowDError> {
        let b: [u8; 6] = digits
            .as_bytes()
            .try_into()
            .map_err(|_| FlowDError::Encoding("token BIN must be 6 digits"))?;
        if !b.iter().all(u8::is_ascii_digit) {
            return Err(FlowDError::Encoding("token BIN must be 6 digits"));
        }
        Ok(Self(b))
    }
}

impl TryFrom<String> for TokenBin {
    type Error = FlowDError;
    fn try_from(s: String) -> Result<Self, FlowDError> {
        Self::new(&s)
    }
}

impl From<TokenBin> for String {
    fn from(b: TokenBin) -> String {
        String::from_utf8_lossy(&b.0).into_owned()
    }
}

impl Default for TokenBin {
    /// `990001`: major industry identifier 9 (national use), kessai's
    /// token range.
    fn default() -> Self {
        Self(*b"990001")
    }
}

fn luhn_digit(digits: &[u8]) -> u8 {
    // Check digit for `digits` (without it): double every second digit
    // from the right, starting with the rightmost.
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(d - b'0');
        if i % 2 == 0 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    b'0' + ((10 - sum % 10) % 10) as u8
}

fn bcd_pack(digits: &[u8]) -> Vec<u8> {
    digits
        .chunks(2)
        .map(|c| {
            let hi = c[0] - b'0';
            let lo = c.get(1).map_or(0x0F, |d| d - b'0');
            (hi << 4) | lo
        })
        .collect()
}

fn bcd_unpack(bytes: &[u8]) -> Result<Vec<u8>, FlowDError> {
    let mut out = Vec::with_capacity(bytes.len() * 2);
    let n = bytes.len() * 2;
    for (i, nib) in bytes.iter().flat_map(|b| [b >> 4, b & 0x0F]).enumerate() {
        match nib {
            0..=9 => out.push(b'0' + nib),
            0x0F if i == n - 1 => {}
            _ => return Err(bad("PAN is not BCD")),
        }
    }
    Ok(out)
}

/// What a kessai QR code carries (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordQr {
    /// The temporary password.
    pub password: TemporaryPassword,
    /// First 8 bytes of the card cryptogram that authorized it.
    pub cryptogram_prefix: [u8; 8],
    /// The card counter of that cryptogram.
    pub counter: u32,
    /// The card's CVM result byte.
    pub cvm: u8,
}

impl PasswordQr {
    /// The CPM payload.
    pub fn to_cpm(&self, bin: &TokenBin) -> CpmPayload {
        let mut pan = bin.0.to_vec();
        pan.extend_from_slice(self.password.expose_digits().as_bytes());
        pan.push(luhn_digit(&pan));
        let mut iad = vec![0x01];
        iad.extend_from_slice(&self.counter.to_be_bytes());
        iad.push(self.cvm);
        let obj = |tag, value: &[u8]| DataObject {
            tag,
            value: value.to_vec(),
        };
        CpmPayload {
            applications: vec![Template {
                objects: vec![
                    obj(T_ADF, &AID),
                    obj(T_LABEL, APPLICATION_LABEL),
                    obj(T_PAN, &bcd_pack(&pan)),
                ],
                transparent: Some(vec![
                    obj(T_CRYPTOGRAM, &self.cryptogram_prefix),
                    obj(T_ATC, &(self.counter as u16).to_be_bytes()),
                    obj(T_IAD, &iad),
                ]),
            }],
            common: None,
        }
    }

    /// The base64 text for the QR code.
    pub fn to_payload(&self, bin: &TokenBin) -> String {
        self.to_cpm(bin).to_base64()
    }

    /// Decodes and validates a scanned payload against the kessai profile:
    /// exactly the objects listed in the module docs, the kessai AID, the
    /// issuer's token BIN, a correct Luhn digit, ATC = low 16 bits of the
    /// counter.
    pub fn from_payload(text: &str, bin: &TokenBin) -> Result<Self, FlowDError> {
        let cpm = CpmPayload::from_base64(text)?;
        if cpm.applications.len() != 1 || cpm.common.is_some() {
            return Err(bad("expected exactly one application template"));
        }
        let app = &cpm.applications[0];
        let tags: Vec<u32> = app.objects.iter().map(|o| o.tag).collect();
        if tags != [T_ADF, T_LABEL, T_PAN] {
            return Err(bad("application template is not the kessai profile"));
        }
        if app.get(T_ADF) != Some(&AID[..]) || app.get(T_LABEL) != Some(APPLICATION_LABEL) {
            return Err(bad("not a kessai application"));
        }
        let tr = app
            .transparent
            .as_ref()
            .ok_or(bad("missing transparent template"))?;
        let ttags: Vec<u32> = tr.iter().map(|o| o.tag).collect();
        if ttags != [T_CRYPTOGRAM, T_ATC, T_IAD] {
            return Err(bad("transparent template is not the kessai profile"));
        }
        let pan = bcd_unpack(app.get(T_PAN).unwrap_or_default())?;
        if pan.len() != 19 || pan[..6] != bin.0 {
            return Err(bad("PAN is not a kessai password token"));
        }
        if luhn_digit(&pan[..18]) != pan[18] {
            return Err(bad("token check digit is wrong"));
        }
        let password = TemporaryPassword::parse(
            std::str::from_utf8(&pan[6..18]).map_err(|_| bad("PAN is not BCD"))?,
        )?;
        let cryptogram_prefix: [u8; 8] = app
            .get_transparent(T_CRYPTOGRAM)
            .unwrap_or_default()
            .try_into()
            .map_err(|_| bad("cryptogram must be 8 bytes"))?;
        let atc: [u8; 2] = app
            .get_transparent(T_ATC)
            .unwrap_or_default()
            .try_into()
            .map_err(|_| bad("ATC must be 2 bytes"))?;
        let iad = app.get_transparent(T_IAD).unwrap_or_default();
        let [0x01, c0, c1, c2, c3, cvm] = *iad else {
            return Err(bad("issuer application data is not version 1"));
        };
        let counter = u32::from_be_bytes([c0, c1, c2, c3]);
        if u16::from_be_bytes(atc) != counter as u16 {
            return Err(bad("ATC does not match the counter"));
        }
        Ok(Self {
            password,
            cryptogram_prefix,
            counter,
            cvm,
        })
    }
}

fn qr(payload: &str) -> Result<QrCode, FlowDError> {
    QrCode::with_error_correction_level(payload.as_bytes(), EcLevel::M)
        .map_err(|_| FlowDError::QrTooLong)
}

/// The QR module matrix of `payload` (error correction level M): width in
/// modules and `true` for dark modules, row by row, without quiet zone.
pub fn qr_matrix(payload: &str) -> Result<(usize, Vec<bool>), FlowDError> {
    let code = qr(payload)?;
    let w = code.width();
    Ok((
        w,
        code.to_colors()
            .into_iter()
            .map(|c| c == Color::Dark)
            .collect(),
    ))
}

/// Renders `payload` for a terminal: two module rows per text line with
/// Unicode half blocks, dark on light, with the 4-module quiet zone.
pub fn render_text(payload: &str) -> Result<String, FlowDError> {
    let code = qr(payload)?;
    Ok(code
        .render::<qrcode::render::unicode::Dense1x2>()
        .dark_color(qrcode::render::unicode::Dense1x2::Light)
        .light_color(qrcode::render::unicode::Dense1x2::Dark)
        .quiet_zone(true)
        .build())
}

/// Renders `payload` as a PNG (greyscale), `module_px` pixels per module
/// (1–32), with the 4-module quiet zone.
pub fn render_png(payload: &str, module_px: u32) -> Result<Vec<u8>, FlowDError> {
    if !(1..=32).contains(&module_px) {
        return Err(FlowDError::Encoding("module size must be 1..=32 pixels"));
    }
    let (w, dark) = qr_matrix(payload)?;
    let modules = w as u32 + 8;
    let side = modules * module_px;
    let mut pixels = vec![255u8; (side * side) as usize];
    for y in 0..side {
        for x in 0..side {
            let (mx, my) = (x / module_px, y / module_px);
            if (4..modules - 4).contains(&mx)
                && (4..modules - 4).contains(&my)
                && dark[(my - 4) as usize * w + (mx - 4) as usize]
            {
                pixels[(y * side + x) as usize] = 0;
            }
        }
    }
    Ok(crate::png::encode_grey(side, side, &pixels))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vectors() -> Vec<(String, String)> {
        let text = include_str!("../tests/vectors/emvco_cpm_examples.txt");
        text.split("\n\n")
            .filter_map(|rec| {
                let mut b64 = None;
                let mut hex = None;
                for line in rec.lines() {
                    if let Some(v) = line.strip_prefix("base64: ") {
                        b64 = Some(v.to_owned());
                    }
                    if let Some(v) = line.strip_prefix("hex: ") {
                        hex = Some(v.to_owned());
                    }
                }
                Some((b64?, hex?))
            })
            .collect()
    }

    #[test]
    fn cpm_published_examples_round_trip() {
        let v = vectors();
        assert_eq!(v.len(), 2);
        // Example 1: one application template with track 2 equivalent data.
        let p1 = CpmPayload::from_base64(&v[0].0).unwrap();
        assert_eq!(hex::encode_upper(p1.to_bytes()), v[0].1);
        assert_eq!(p1.to_base64(), v[0].0);
        assert_eq!(p1.applications.len(), 1);
        assert_eq!(
            p1.applications[0].get(T_ADF),
            Some(&hex::decode("A0000000555555").unwrap()[..])
        );
        assert_eq!(
            hex::encode_upper(p1.applications[0].get(T_TRACK2).unwrap()),
            "1234567890123458D191220112345F"
        );
        // Example 2: two applications, common data with transparent template.
        let p2 = CpmPayload::from_base64(&v[1].0).unwrap();
        assert_eq!(hex::encode_upper(p2.to_bytes()), v[1].1);
        assert_eq!(p2.to_base64(), v[1].0);
        assert_eq!(p2.applications.len(), 2);
        assert_eq!(p2.applications[1].get(T_LABEL), Some(&b"Product2"[..]));
        let c = p2.common.as_ref().unwrap();
        assert_eq!(c.get(0x5F20), Some(&b"CARDHOLDER/EMV"[..]));
        assert_eq!(
            bcd_unpack(c.get(T_PAN).unwrap()).unwrap(),
            b"1234567890123458"
        );
        assert_eq!(
            hex::encode_upper(c.get_transparent(T_CRYPTOGRAM).unwrap()),
            "584FD385FA234BCC"
        );
        assert_eq!(c.get_transparent(T_ATC), Some(&[0x00, 0x01][..]));
        assert_eq!(
            hex::encode_upper(c.get_transparent(0x9F37).unwrap()),
            "6D58EF13"
        );
        // Neither is a kessai password QR.
        assert!(matches!(
            PasswordQr::from_payload(&v[1].0, &TokenBin::default()),
            Err(FlowDError::MalformedQr(_))
        ));
    }

    fn sample() -> PasswordQr {
        PasswordQr {
            password: TemporaryPassword::parse("012345678901").unwrap(),
            cryptogram_prefix: [0xA1, 0xB2, 0xC3, 0xD4, 0xE5, 0xF6, 0x07, 0x18],
            counter: 0x0001_0203,
            cvm: 0x01,
        }
    }

    #[test]
    fn kessai_profile_round_trips_with_the_documented_layout() {
        let bin = TokenBin::default();
        let q = sample();
        let payload = q.to_payload(&bin);
        let bytes = STANDARD.decode(&payload).unwrap();
        let expect = concat!(
            "8505435056303161",
            "39",
            "4F08F06B657373616901",
            "50066B6573736169",
            "5A0A",
            "9900010123456789015F",
            "6319",
            "9F2608A1B2C3D4E5F60718",
            "9F36020203",
            "9F1006010001020301"
        );
        // token PAN 990001 012345678901 + Luhn digit 5 (checked independently).
        assert_eq!(hex::encode_upper(&bytes), expect);
        assert_eq!(PasswordQr::from_payload(&payload, &bin).unwrap(), q);
    }

    #[test]
    fn malformed_payloads_are_refused() {
        let bin = TokenBin::default();
        let good = STANDARD.decode(sample().to_payload(&bin)).unwrap();
        let enc = |b: &[u8]| STANDARD.encode(b);
        let mut cases: Vec<(String, &str)> = vec![
            ("not base64!".into(), "not base64"),
            ("hQVDUFYwMQ".into(), "unpadded base64"),
            (enc(&good[..good.len() - 1]), "truncated"),
            (
                enc(&[&good[..], &[0x9F, 0x01, 0x00]].concat()),
                "trailing object",
            ),
            (enc(&[&good[..], &[0x00]].concat()), "trailing byte"),
            (enc(&good[7..]), "no format indicator"),
            ("A".repeat(2000), "too long"),
        ];
        let mut wrong_pfi = good.clone();
        wrong_pfi[6] = b'2';
        cases.push((enc(&wrong_pfi), "CPV02"));
        let mut wrong_luhn = good.clone();
        let pan_last = 9 + 10 + 8 + 2 + 9; // offset of the last PAN byte
        let d = wrong_luhn[pan_last] >> 4;
        wrong_luhn[pan_last] = (((d + 1) % 10) << 4) | 0x0F;
        cases.push((enc(&wrong_luhn), "Luhn"));
        let other_bin = PasswordQr::to_payload(&sample(), &TokenBin::new("990002").unwrap());
        cases.push((other_bin, "other token BIN"));
        let mut wrong_atc = good.clone();
        let atc_pos = bytes_find(&good, &[0x9F, 0x36, 0x02]) + 4;
        wrong_atc[atc_pos] ^= 1;
        cases.push((enc(&wrong_atc), "ATC mismatch"));
        let mut wrong_aid = good.clone();
        wrong_aid[11] ^= 1;
        cases.push((enc(&wrong_aid), "other AID"));
        for (payload, what) in cases {
            assert!(
                matches!(
                    PasswordQr::from_payload(&payload, &bin),
                    Err(FlowDError::MalformedQr(_) | FlowDError::PasswordFormat)
                ),
                "{what} accepted"
            );
        }
        // Duplicate tag inside a template.
        let mut dup = CpmPayload::from_bytes(&good).unwrap();
        let first = dup.applications[0].objects[1].clone();
        dup.applications[0].objects.push(first);
        assert!(CpmPayload::from_bytes(&dup.to_bytes()).is_err());
    }

    /// Mutation smoke test (fixed seed, stable toolchain): 20 000 mutated
    /// and random payloads. The decoder never panics, and whatever it
    /// accepts re-encodes to exactly the scanned text (no lax parse: an
    /// accepted payload has one meaning) and to the same CPM bytes.
    #[test]
    fn mutated_and_random_payloads_never_panic_and_accepted_ones_are_canonical() {
        let bin = TokenBin::default();
        let good = STANDARD.decode(sample().to_payload(&bin)).unwrap();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            x.wrapping_mul(0x2545_F491_4F6C_DD1D)
        };
        let mut accepted = 0;
        for round in 0..20_000u32 {
            let bytes = if round % 4 == 3 {
                (0..next() % 120).map(|_| next() as u8).collect::<Vec<u8>>()
            } else {
                let mut m = good.clone();
                for _ in 0..1 + next() % 3 {
                    let i = (next() as usize) % m.len();
                    match next() % 4 {
                        0 => m[i] ^= 1 << (next() % 8),
                        1 => m[i] = next() as u8,
                        2 => {
                            m.remove(i);
                        }
                        _ => m.insert(i, next() as u8),
                    }
                    if m.is_empty() {
                        break;
                    }
                }
                m
            };
            let text = STANDARD.encode(&bytes);
            if let Ok(cpm) = CpmPayload::from_bytes(&bytes) {
                assert_eq!(
                    cpm.to_bytes(),
                    bytes,
                    "lax CPM parse of {}",
                    hex::encode(&bytes)
                );
            }
            if let Ok(q) = PasswordQr::from_payload(&text, &bin) {
                assert_eq!(q.to_payload(&bin), text, "lax payload parse");
                accepted += 1;
            }
        }
        // Mutations of free-form bytes (cryptogram) stay valid payloads.
        assert!(accepted > 0);
    }

    fn bytes_find(hay: &[u8], needle: &[u8]) -> usize {
        hay.windows(needle.len()).position(|w| w == needle).unwrap()
    }

    #[test]
    fn renders_text_and_png_of_the_same_matrix() {
        let payload = sample().to_payload(&TokenBin::default());
        let (w, dark) = qr_matrix(&payload).unwrap();
        assert_eq!(dark.len(), w * w);
        // Finder pattern: top-left 7x7 square has a dark border.
        assert!((0..7).all(|i| dark[i] && dark[6 * w + i] && dark[i * w]));
        let text = render_text(&payload).unwrap();
        assert_eq!(text.lines().count(), (w + 8).div_ceil(2));
        let png = render_png(&payload, 3).unwrap();
        let (pw, ph, pixels) = crate::png::tests::decode_stored(&png);
        assert_eq!((pw, ph), (((w + 8) * 3) as u32, ((w + 8) * 3) as u32));
        for my in 0..w {
            for mx in 0..w {
                let px = pixels[((my + 4) * 3 + 1) * pw as usize + (mx + 4) * 3 + 1];
                assert_eq!(px == 0, dark[my * w + mx]);
            }
        }
        assert!(render_png(&payload, 0).is_err());
        assert_eq!(render_text(&"A".repeat(4000)), Err(FlowDError::QrTooLong));
    }
}
