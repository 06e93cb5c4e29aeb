//! A minimal PNG encoder for black-and-white QR images: 8-bit greyscale,
//! no interlace, the image data in zlib *stored* (uncompressed) deflate
//! blocks (RFC 1950 / 1951), chunks with CRC-32 (ISO 3309 / PNG spec).
//! Kept here so the crate needs no image library; QR images are small.

/// CRC-32 (IEEE 802.3 polynomial, reflected, as PNG uses).
pub(crate) fn crc32(parts: &[&[u8]]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for part in parts {
        for &b in *part {
            crc ^= u32::from(b);
            for _ in 0..8 {
                let mask = (crc & 1).wrapping_neg();
                crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
            }
        }
    }
    !crc
}

/// Adler-32 (RFC 1950).
pub(crate) fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &x in data {
        a = (a + u32::from(x)) % 65_521;
        b = (b + a) % 65_521;
    }
    (b << 16) | a
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    out.extend_from_slice(&crc32(&[kind, data]).to_be_bytes());
}

/// Encodes a greyscale image given row by row (`pixels.len() == width *
/// height`, 0 = black, 255 = white).
pub(crate) fn encode_grey(width: u32, height: u32, pixels: &[u8]) -> Vec<u8> {
    debug_assert_eq!(pixels.len(), width as usize * height as usize);
    // Raw scanlines: filter type 0 then the row.
    let mut raw = Vec::with_capacity(pixels.len() + height as usize);
    for row in pixels.chunks(width as usize) {
        raw.push(0);
        raw.extend_from_slice(row);
    }
    // zlib: CMF 78 (deflate, 32K window), FLG 01 (check bits), stored blocks.
    let mut z = vec![0x78, 0x01];
    let mut blocks = raw.chunks(65_535).peekable();
    if blocks.peek().is_none() {
        z.extend_from_slice(&[1, 0, 0, 0xFF, 0xFF]);
    }
    while let Some(block) = blocks.next() {
        let last = u8::from(blocks.peek().is_none());
        let len = block.len() as u16;
        z.push(last);
        z.extend_from_slice(&len.to_le_bytes());
        z.extend_from_slice(&(!len).to_le_bytes());
        z.extend_from_slice(block);
    }
    z.extend_from_slice(&adler32(&raw).to_be_bytes());

    let mut out = vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    // bit depth 8, colour type 0 (greyscale), deflate, filter 0, no interlace
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &z);
    chunk(&mut out, b"IEND", &[]);
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn checksums_match_published_check_values() {
        // CRC-32 check value from the CRC catalogue ("123456789").
        assert_eq!(crc32(&[b"123456789"]), 0xCBF4_3926);
        // PNG's IEND chunk CRC, as in every PNG file.
        assert_eq!(crc32(&[b"IEND"]), 0xAE42_6082);
        // Adler-32 of "Wikipedia" (RFC 1950 worked example on Wikipedia).
        assert_eq!(adler32(b"Wikipedia"), 0x11E6_0398);
    }

    /// Decodes what [`encode_grey`] writes (stored blocks only), checking
    /// every chunk CRC and the Adler-32: returns width, height, pixels.
    pub(crate) fn decode_stored(png: &[u8]) -> (u32, u32, Vec<u8>) {
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let mut pos = 8;
        let (mut w, mut h, mut idat) = (0, 0, Vec::new());
        loop {
            let len = u32::from_be_bytes(png[pos..pos + 4].try_into().unwrap()) as usize;
            let kind = &png[pos + 4..pos + 8];
            let data = &png[pos + 8..pos + 8 + len];
            let crc = u32::from_be_bytes(png[pos + 8 + len..pos + 12 + len].try_into().unwrap());
            assert_eq!(crc, crc32(&[kind, data]));
            match kind {
                b"IHDR" => {
                    w = u32::from_be_bytes(data[0..4].try_into().unwrap());
                    h = u32::from_be_bytes(data[4..8].try_into().unwrap());
                    assert_eq!(&data[8..], &[8, 0, 0, 0, 0]);
                }
                b"IDAT" => idat.extend_from_slice(data),
                b"IEND" => break,
                _ => panic!("unexpected chunk"),
            }
            pos += 12 + len;
        }
        assert_eq!(pos + 12, png.len());
        assert_eq!((u16::from_be_bytes([idat[0], idat[1]])) % 31, 0);
        let mut raw = Vec::new();
        let mut p = 2;
        loop {
            let last = idat[p] & 1;
            let len = u16::from_le_bytes([idat[p + 1], idat[p + 2]]);
            let nlen = u16::from_le_bytes([idat[p + 3], idat[p + 4]]);
            assert_eq!(nlen, !len);
            raw.extend_from_slice(&idat[p + 5..p + 5 + usize::from(len)]);
            p += 5 + usize::from(len);
            if last == 1 {
                break;
            }
        }
        assert_eq!(
            u32::from_be_bytes(idat[p..p + 4].try_into().unwrap()),
            adler32(&raw)
        );
        let mut pixels = Vec::new();
        for row in raw.chunks(w as usize + 1) {
            assert_eq!(row[0], 0);
            pixels.extend_from_slice(&row[1..]);
        }
        assert_eq!(pixels.len(), (w * h) as usize);
        (w, h, pixels)
    }

    #[test]
    fn large_images_span_several_stored_blocks() {
        let (w, h) = (400u32, 400u32);
        let pixels: Vec<u8> = (0..w * h)
            .map(|i| if i % 3 == 0 { 0 } else { 255 })
            .collect();
        let png = encode_grey(w, h, &pixels);
        let (w2, h2, back) = decode_stored(&png);
        assert_eq!((w2, h2), (w, h));
        assert_eq!(back, pixels);
    }
}
