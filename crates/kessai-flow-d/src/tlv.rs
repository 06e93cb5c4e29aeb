//! Strict BER-TLV (ISO/IEC 8825-1 as profiled by EMV Book 3 annex B): the
//! encoding of EMVCo QR consumer-presented-mode payloads.
//!
//! Strict means: tags of 1–3 bytes in their shortest form, definite lengths
//! in their shortest form (`00`–`7F`, `81 80`–`81 FF`, `82 0100`–`82 FFFF`),
//! no indefinite length, no trailing bytes, values inside their parent.

/// One parsed data object: its tag (1–3 bytes, as a big-endian number) and
/// value bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tlv<'a> {
    /// The tag as written, big-endian (`0x9F26`, `0x61`, ...).
    pub tag: u32,
    /// The value bytes.
    pub value: &'a [u8],
}

/// True if the tag's first byte has the constructed bit (`20`).
pub fn is_constructed(tag: u32) -> bool {
    first_tag_byte(tag) & 0x20 != 0
}

fn first_tag_byte(tag: u32) -> u8 {
    let b = tag.to_be_bytes();
    b.iter().copied().find(|x| *x != 0).unwrap_or(0)
}

fn tag_bytes(tag: u32) -> Vec<u8> {
    let b = tag.to_be_bytes();
    let skip = b.iter().take_while(|x| **x == 0).count().min(3);
    b[skip..].to_vec()
}

/// Parses a sequence of data objects that must fill `bytes` exactly.
pub fn parse(bytes: &[u8]) -> Result<Vec<Tlv<'_>>, &'static str> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let (tlv, tail) = parse_one(rest)?;
        out.push(tlv);
        rest = tail;
    }
    Ok(out)
}

fn parse_one(bytes: &[u8]) -> Result<(Tlv<'_>, &[u8]), &'static str> {
    let (&first, mut rest) = bytes.split_first().ok_or("truncated tag")?;
    if first == 0x00 || first == 0xFF {
        return Err("padding or invalid tag byte");
    }
    let mut tag = u32::from(first);
    if first & 0x1F == 0x1F {
        let mut n = 0;
        loop {
            let (&b, r) = rest.split_first().ok_or("truncated tag")?;
            rest = r;
            if n == 0 && b & 0x7F == 0 {
                return Err("non-minimal tag");
            }
            tag = (tag << 8) | u32::from(b);
            n += 1;
            if b & 0x80 == 0 {
                break;
            }
            if n == 2 {
                return Err("tag longer than 3 bytes");
            }
        }
    }
    let (&l0, r) = rest.split_first().ok_or("truncated length")?;
    rest = r;
    let len = match l0 {
        0x00..=0x7F => usize::from(l0),
        0x81 => {
            let (&l, r) = rest.split_first().ok_or("truncated length")?;
            rest = r;
            if l < 0x80 {
                return Err("non-minimal length");
            }
            usize::from(l)
        }
        0x82 => {
            if rest.len() < 2 {
                return Err("truncated length");
            }
            let l = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
            rest = &rest[2..];
            if l < 0x100 {
                return Err("non-minimal length");
            }
            l
        }
        0x80 => return Err("indefinite length"),
        _ => return Err("length too long"),
    };
    if rest.len() < len {
        return Err("value longer than its container");
    }
    let (value, tail) = rest.split_at(len);
    Ok((Tlv { tag, value }, tail))
}

/// Appends one data object in the shortest form. Values above 65 535 bytes
/// are a caller bug (nothing in a QR code comes near).
pub fn encode(out: &mut Vec<u8>, tag: u32, value: &[u8]) {
    out.extend_from_slice(&tag_bytes(tag));
    let len = value.len();
    if len < 0x80 {
        out.push(len as u8);
    } else if len <= 0xFF {
        out.extend_from_slice(&[0x81, len as u8]);
    } else {
        assert!(len <= 0xFFFF, "BER-TLV value above 65535 bytes");
        out.push(0x82);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    }
    out.extend_from_slice(value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_short_and_long_forms() {
        let mut out = Vec::new();
        encode(&mut out, 0x85, b"CPV01");
        encode(&mut out, 0x9F26, &[1; 8]);
        encode(&mut out, 0x5F20, &[b'A'; 200]);
        encode(&mut out, 0x61, &[0; 300]);
        assert_eq!(&out[..7], &[0x85, 5, b'C', b'P', b'V', b'0', b'1']);
        assert_eq!(&out[7..10], &[0x9F, 0x26, 8]);
        assert_eq!(&out[18..21], &[0x5F, 0x20, 0x81]);
        let parsed = parse(&out).unwrap();
        let tags: Vec<u32> = parsed.iter().map(|t| t.tag).collect();
        assert_eq!(tags, [0x85, 0x9F26, 0x5F20, 0x61]);
        assert_eq!(parsed[3].value.len(), 300);
        assert!(is_constructed(0x61) && !is_constructed(0x9F26) && is_constructed(0xBF0C));
    }

    #[test]
    fn refuses_non_strict_encodings() {
        assert_eq!(
            parse(&[0x85, 0x05, 1, 2]),
            Err("value longer than its container")
        );
        assert_eq!(parse(&[0x85, 0x80]), Err("indefinite length"));
        assert_eq!(
            parse(&[0x85, 0x81, 0x05, 1, 2, 3, 4, 5]),
            Err("non-minimal length")
        );
        assert_eq!(parse(&[0x85, 0x83, 0, 0, 1, 0]), Err("length too long"));
        assert_eq!(parse(&[0x9F]), Err("truncated tag"));
        assert_eq!(parse(&[0x9F, 0x80, 0x01, 0x00]), Err("non-minimal tag"));
        // EMV uses two-byte tags below 31 (9F02, 9F10): accepted.
        assert_eq!(parse(&[0x9F, 0x10, 0x00]).unwrap()[0].tag, 0x9F10);
        assert_eq!(
            parse(&[0x9F, 0x81, 0x81, 0x01, 0x00]),
            Err("tag longer than 3 bytes")
        );
        assert_eq!(parse(&[0x00, 0x00]), Err("padding or invalid tag byte"));
        assert_eq!(parse(&[0x85]), Err("truncated length"));
        assert!(parse(&[]).unwrap().is_empty());
    }
}
