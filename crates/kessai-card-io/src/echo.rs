//! A trivial card for exercising transports end to end.

use crate::CardSlot;

/// A minimal ISO 7816-4 card for transport tests and reader diagnostics: it
/// echoes data, answers SELECT for its own AID, and counts what happened to
/// it so a test can see power-ons and resets that travelled through a real
/// stack.
///
/// Commands (short or extended length):
/// - `00 A4 04 00 Lc AID` SELECT: `90 00` for [`EchoSlot::AID`], else `6A 82`.
/// - `80 EE 00 00 Lc data` ECHO: `data ‖ 90 00`.
/// - `00 CA 00 01 00` GET DATA: APDUs since the last power-on/reset as a
///   4-byte big-endian count ‖ `90 00`.
/// - fewer than 4 bytes or an inconsistent Lc: `67 00`; other CLA: `6E 00`;
///   other INS: `6D 00`; any command while unpowered: `6F 00`.
#[derive(Debug, Default, Clone)]
pub struct EchoSlot {
    /// Powered and able to answer.
    powered: bool,
    /// Cold resets seen.
    power_ons: u32,
    /// Warm resets seen.
    resets: u32,
    /// APDUs since the last power-on or reset.
    apdus_since_reset: u32,
}

impl EchoSlot {
    /// `3B 88 80 01` (T=1), historical bytes `80` (compact-TLV) `56`
    /// (card issuer's data, 6 bytes) `KESSAI`, then TCK.
    pub const ATR: &'static [u8] = &[
        0x3B, 0x88, 0x80, 0x01, 0x80, 0x56, b'K', b'E', b'S', b'S', b'A', b'I', 0xD9,
    ];
    /// The echo applet's AID (proprietary RID range `F0`).
    pub const AID: &'static [u8] = &[0xF0, 0x6B, 0x65, 0x73, 0x73, 0x61, 0x69, 0x01];

    /// An unpowered card.
    pub fn new() -> Self {
        Self::default()
    }

    /// True between power-on and power-off.
    pub fn is_powered(&self) -> bool {
        self.powered
    }

    /// Number of cold resets (power-ons) so far.
    pub fn power_ons(&self) -> u32 {
        self.power_ons
    }

    /// Number of warm resets so far.
    pub fn resets(&self) -> u32 {
        self.resets
    }
}

/// Splits a command into (CLA, INS, P1, P2, data) if its length fields are
/// consistent (ISO 7816-3 cases 1–4, short and extended).
fn parse(command: &[u8]) -> Option<([u8; 4], &[u8])> {
    let header: [u8; 4] = command.get(..4)?.try_into().ok()?;
    let body = &command[4..];
    let data = match body.len() {
        // Case 1 (no body) or case 2 short (Le only).
        0 | 1 => &[][..],
        _ if body[0] != 0 => {
            // Short Lc.
            let lc = usize::from(body[0]);
            match body.len() - 1 {
                n if n == lc || n == lc + 1 => &body[1..1 + lc],
                _ => return None,
            }
        }
        // body[0] == 0: extended. Case 2E is 00 Le1 Le2.
        2 => return None,
        3 => &[][..],
        _ => {
            let lc = usize::from(u16::from_be_bytes([body[1], body[2]]));
            match body.len() - 3 {
                n if lc > 0 && (n == lc || n == lc + 2) => &body[3..3 + lc],
                _ => return None,
            }
        }
    };
    Some((header, data))
}

impl CardSlot for EchoSlot {
    fn power_on(&mut self) -> Vec<u8> {
        self.powered = true;
        self.power_ons += 1;
        self.apdus_since_reset = 0;
        Self::ATR.to_vec()
    }

    fn power_off(&mut self) {
        self.powered = false;
    }

    fn reset(&mut self) -> Vec<u8> {
        self.powered = true;
        self.resets += 1;
        self.apdus_since_reset = 0;
        Self::ATR.to_vec()
    }

    fn transmit(&mut self, command: &[u8]) -> Vec<u8> {
        if !self.powered {
            return vec![0x6F, 0x00];
        }
        self.apdus_since_reset = self.apdus_since_reset.saturating_add(1);
        let Some(([cla, ins, p1, p2], data)) = parse(command) else {
            return vec![0x67, 0x00];
        };
        match (cla, ins, p1, p2) {
            (0x00, 0xA4, 0x04, 0x00) if data == Self::AID => vec![0x90, 0x00],
            (0x00, 0xA4, _, _) => vec![0x6A, 0x82],
            (0x80, 0xEE, _, _) => {
                let mut r = data.to_vec();
                r.extend_from_slice(&[0x90, 0x00]);
                r
            }
            (0x00, 0xCA, 0x00, 0x01) => {
                let mut r = self.apdus_since_reset.to_be_bytes().to_vec();
                r.extend_from_slice(&[0x90, 0x00]);
                r
            }
            (0x00 | 0x80, _, _, _) => vec![0x6D, 0x00],
            _ => vec![0x6E, 0x00],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atr_check_byte_is_right() {
        // TCK makes the XOR of T0..TCK zero (ISO 7816-3 8.2.5).
        let x = EchoSlot::ATR[1..].iter().fold(0u8, |a, b| a ^ b);
        assert_eq!(x, 0);
        // T0 = 8 historical bytes and TD1 present; TD1 → TD2 present;
        // TD2 = T=1.
        assert_eq!(EchoSlot::ATR[1], 0x88);
        assert_eq!(EchoSlot::ATR.len(), 4 + 8 + 1);
    }

    #[test]
    fn answers_each_command_kind() {
        let mut s = EchoSlot::new();
        assert_eq!(s.transmit(&[0x80, 0xEE, 0, 0]), [0x6F, 0x00]);
        assert_eq!(s.power_on(), EchoSlot::ATR);
        let mut select = vec![0x00, 0xA4, 0x04, 0x00, 8];
        select.extend_from_slice(EchoSlot::AID);
        assert_eq!(s.transmit(&select), [0x90, 0x00]);
        select.push(0x00); // with Le
        assert_eq!(s.transmit(&select), [0x90, 0x00]);
        assert_eq!(
            s.transmit(&[0x00, 0xA4, 0x04, 0x00, 2, 0xA0, 0x00]),
            [0x6A, 0x82]
        );
        assert_eq!(
            s.transmit(&[0x80, 0xEE, 0, 0, 2, 7, 8, 0]),
            [7, 8, 0x90, 0x00]
        );
        assert_eq!(s.transmit(&[0x80, 0xEE, 0, 0]), [0x90, 0x00]);
        assert_eq!(s.transmit(&[0x80, 0xEE, 0, 0, 3, 1]), [0x67, 0x00]);
        assert_eq!(s.transmit(&[0x80]), [0x67, 0x00]);
        assert_eq!(s.transmit(&[0x00, 0x12, 0, 0]), [0x6D, 0x00]);
        assert_eq!(s.transmit(&[0xFF, 0x12, 0, 0]), [0x6E, 0x00]);
        assert_eq!(
            s.transmit(&[0x00, 0xCA, 0x00, 0x01, 0x00]),
            [0, 0, 0, 10, 0x90, 0x00]
        );
        s.reset();
        assert_eq!(
            s.transmit(&[0x00, 0xCA, 0x00, 0x01, 0x00]),
            [0, 0, 0, 1, 0x90, 0x00]
        );
        assert_eq!((s.power_ons(), s.resets()), (1, 1));
    }

    #[test]
    fn extended_length_echo() {
        let mut s = EchoSlot::new();
        s.power_on();
        let data: Vec<u8> = (0..1000u16).map(|i| i as u8).collect();
        let mut cmd = vec![0x80, 0xEE, 0, 0, 0x00, 0x03, 0xE8];
        cmd.extend_from_slice(&data);
        cmd.extend_from_slice(&[0x00, 0x00]); // Le extended
        let r = s.transmit(&cmd);
        assert_eq!(&r[..1000], &data[..]);
        assert_eq!(&r[1000..], [0x90, 0x00]);
        // Case 2E: 00 Le1 Le2.
        assert_eq!(s.transmit(&[0x80, 0xEE, 0, 0, 0, 0, 0]), [0x90, 0x00]);
        // Extended with inconsistent length.
        assert_eq!(s.transmit(&[0x80, 0xEE, 0, 0, 0, 0, 5, 1]), [0x67, 0x00]);
    }

    #[test]
    fn never_panics_on_arbitrary_short_inputs() {
        let mut s = EchoSlot::new();
        s.power_on();
        // Every command of length 0..=7 over a small alphabet.
        let alphabet = [0x00, 0x01, 0x02, 0x80, 0xEE, 0xFF];
        let mut buf = Vec::new();
        fn rec(s: &mut EchoSlot, buf: &mut Vec<u8>, alphabet: &[u8], depth: usize) {
            let r = s.transmit(buf);
            assert!(r.len() >= 2);
            if depth == 0 {
                return;
            }
            for &b in alphabet {
                buf.push(b);
                rec(s, buf, alphabet, depth - 1);
                buf.pop();
            }
        }
        rec(&mut s, &mut buf, &alphabet, 7);
    }
}
