//! Minimal command-APDU encoding (ISO/IEC 7816-3 §12.1, short and extended
//! length) for the host side, and the SCP03 security levels.

use crate::Scp03Error;

/// A command APDU to be encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandApdu {
    /// Class byte.
    pub cla: u8,
    /// Instruction byte.
    pub ins: u8,
    /// Parameter 1.
    pub p1: u8,
    /// Parameter 2.
    pub p2: u8,
    /// Command data (Nc = `data.len()`, at most 65 535 bytes).
    pub data: Vec<u8>,
    /// Expected response length Ne, if any (1..=65 536; 256 is encoded as
    /// a short `00`).
    pub le: Option<u32>,
}

impl CommandApdu {
    /// A command with data and no Le.
    pub fn new(cla: u8, ins: u8, p1: u8, p2: u8, data: impl Into<Vec<u8>>) -> Self {
        Self {
            cla,
            ins,
            p1,
            p2,
            data: data.into(),
            le: None,
        }
    }

    /// The same command expecting up to `le` response bytes.
    pub fn with_le(mut self, le: u32) -> Self {
        self.le = Some(le);
        self
    }

    /// True if this command needs the extended-length encoding
    /// (Nc > 255 or Ne > 256).
    pub fn needs_extended(&self) -> bool {
        self.data.len() > 255 || self.le.is_some_and(|le| le > 256)
    }

    /// The Lc field as it appears on the wire (empty, 1 byte, or `00 hi lo`).
    pub fn lc_field(&self) -> Vec<u8> {
        lc_field(self.data.len(), self.needs_extended())
    }

    /// Encodes the APDU, choosing the short form when possible.
    pub fn encode(&self) -> Result<Vec<u8>, Scp03Error> {
        if self.data.len() > 65_535 || self.le.is_some_and(|le| le == 0 || le > 65_536) {
            return Err(Scp03Error::TooLong);
        }
        let ext = self.needs_extended();
        let mut out = Vec::with_capacity(4 + 3 + self.data.len() + 3);
        out.extend_from_slice(&[self.cla, self.ins, self.p1, self.p2]);
        out.extend_from_slice(&self.lc_field());
        out.extend_from_slice(&self.data);
        if let Some(le) = self.le {
            if ext {
                if self.data.is_empty() {
                    out.push(0);
                }
                let v = if le == 65_536 { 0 } else { le as u16 };
                out.extend_from_slice(&v.to_be_bytes());
            } else {
                out.push(if le == 256 { 0 } else { le as u8 });
            }
        }
        Ok(out)
    }
}

/// The Lc field for `nc` data bytes in the short or extended encoding.
pub fn lc_field(nc: usize, extended: bool) -> Vec<u8> {
    if nc == 0 {
        Vec::new()
    } else if extended {
        let n = nc as u16;
        vec![0, (n >> 8) as u8, n as u8]
    } else {
        vec![nc as u8]
    }
}

/// Splits a response APDU into data and status word.
pub fn split_response(response: &[u8]) -> Result<(&[u8], u16), Scp03Error> {
    if response.len() < 2 {
        return Err(Scp03Error::Malformed("response shorter than a status word"));
    }
    let (data, sw) = response.split_at(response.len() - 2);
    Ok((data, u16::from_be_bytes([sw[0], sw[1]])))
}

/// True for `9000` and the warning status words `62xx` / `63xx`: the
/// responses that carry an R-MAC. Any other status word is an error and is
/// returned bare (GP Amendment D §6.2.5).
pub fn sw_carries_rmac(sw: u16) -> bool {
    sw == 0x9000 || (sw >> 8) == 0x62 || (sw >> 8) == 0x63
}

/// An SCP03 security level (EXTERNAL AUTHENTICATE P1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum SecurityLevel {
    /// C-MAC.
    CMac = 0x01,
    /// C-MAC and C-DECRYPTION.
    CMacCDec = 0x03,
    /// C-MAC and R-MAC.
    CMacRMac = 0x11,
    /// C-MAC, C-DECRYPTION and R-MAC.
    CMacCDecRMac = 0x13,
    /// C-MAC, C-DECRYPTION, R-MAC and R-ENCRYPTION.
    Full = 0x33,
}

impl SecurityLevel {
    /// Parses EXTERNAL AUTHENTICATE P1. `00` (no secure messaging) and the
    /// reserved combinations are refused.
    pub fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            0x01 => Self::CMac,
            0x03 => Self::CMacCDec,
            0x11 => Self::CMacRMac,
            0x13 => Self::CMacCDecRMac,
            0x33 => Self::Full,
            _ => return None,
        })
    }
    /// The P1 byte.
    pub fn byte(self) -> u8 {
        self as u8
    }
    /// Commands carry a C-MAC.
    pub fn c_mac(self) -> bool {
        self.byte() & 0x01 != 0
    }
    /// Command data is encrypted.
    pub fn c_dec(self) -> bool {
        self.byte() & 0x02 != 0
    }
    /// Responses carry an R-MAC.
    pub fn r_mac(self) -> bool {
        self.byte() & 0x10 != 0
    }
    /// Response data is encrypted.
    pub fn r_enc(self) -> bool {
        self.byte() & 0x20 != 0
    }
    /// True if this level provides every protection `required` asks for.
    pub fn satisfies(self, required: SecurityLevel) -> bool {
        self.byte() & required.byte() == required.byte()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_all_four_cases_short_and_extended() {
        let c1 = CommandApdu::new(0x00, 0xA4, 4, 0, vec![]);
        assert_eq!(c1.encode().unwrap(), [0x00, 0xA4, 4, 0]);
        let c2 = CommandApdu::new(0x80, 0x5C, 0, 0, vec![]).with_le(256);
        assert_eq!(c2.encode().unwrap(), [0x80, 0x5C, 0, 0, 0]);
        let c3 = CommandApdu::new(0x80, 0x50, 0, 0, vec![1, 2]);
        assert_eq!(c3.encode().unwrap(), [0x80, 0x50, 0, 0, 2, 1, 2]);
        let c4 = CommandApdu::new(0x80, 0x50, 0, 0, vec![1]).with_le(8);
        assert_eq!(c4.encode().unwrap(), [0x80, 0x50, 0, 0, 1, 1, 8]);
        let e2 = CommandApdu::new(0x80, 0x5A, 0, 0, vec![]).with_le(1000);
        assert_eq!(e2.encode().unwrap(), [0x80, 0x5A, 0, 0, 0, 0x03, 0xE8]);
        let e4 = CommandApdu::new(0x80, 0x5A, 0, 0, vec![9; 300]).with_le(65_536);
        let enc = e4.encode().unwrap();
        assert_eq!(&enc[4..7], &[0, 0x01, 0x2C]);
        assert_eq!(&enc[enc.len() - 2..], &[0, 0]);
        assert_eq!(
            CommandApdu::new(0, 0, 0, 0, vec![]).with_le(0).encode(),
            Err(Scp03Error::TooLong)
        );
    }

    #[test]
    fn security_levels_parse_and_compare() {
        assert_eq!(SecurityLevel::from_byte(0x00), None);
        assert_eq!(SecurityLevel::from_byte(0x02), None);
        let full = SecurityLevel::from_byte(0x33).unwrap();
        assert!(full.c_mac() && full.c_dec() && full.r_mac() && full.r_enc());
        assert!(full.satisfies(SecurityLevel::CMacCDec));
        assert!(!SecurityLevel::CMac.satisfies(SecurityLevel::CMacCDec));
        assert!(SecurityLevel::CMacCDec.satisfies(SecurityLevel::CMac));
        assert!(sw_carries_rmac(0x9000) && sw_carries_rmac(0x63C2) && !sw_carries_rmac(0x6982));
    }
}
