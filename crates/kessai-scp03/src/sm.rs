//! Secure messaging (GP Amendment D §6.2). The state shared by both ends of an SCP03 session:
//! session keys, security level, MAC chaining value and encryption counter.
//! Host and card run the very same code here, each in its own direction.
//!
//! The free functions are the secure-messaging primitives of GP Amendment D
//! §6.2 (C-MAC, R-MAC, C-DECRYPTION / R-ENCRYPTION with counter ICV), public
//! so they can be checked against published vectors.

use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

use crate::Scp03Error;
use crate::apdu::{SecurityLevel, lc_field, sw_carries_rmac};
use crate::crypto::{AesKey, BLOCK_LEN, pad, unpad};
use crate::keys::SessionKeys;

/// Length of C-MAC, R-MAC and cryptograms in S8 mode.
pub const MAC_LEN: usize = 8;

/// One SCP03 session's secure-messaging state.
pub(crate) struct Channel {
    pub(crate) keys: SessionKeys,
    pub(crate) level: SecurityLevel,
    /// MAC chaining value: the full 16-byte C-MAC of the previous command
    /// (all zero before EXTERNAL AUTHENTICATE).
    pub(crate) mcv: [u8; BLOCK_LEN],
    /// Encryption counter of the last command (0 before the first
    /// command after EXTERNAL AUTHENTICATE).
    pub(crate) counter: u32,
}

impl Drop for Channel {
    fn drop(&mut self) {
        self.mcv.zeroize();
    }
}

impl Channel {
    pub(crate) fn new(keys: SessionKeys, level: SecurityLevel) -> Self {
        Self {
            keys,
            level,
            mcv: [0; BLOCK_LEN],
            counter: 0,
        }
    }

    /// C-MAC over `MCV ‖ header ‖ Lc ‖ data`; updates the MCV and returns the
    /// 8-byte MAC to append.
    pub(crate) fn c_mac(&mut self, header: &[u8; 4], lc: &[u8], data: &[u8]) -> [u8; MAC_LEN] {
        self.mcv = c_mac(&self.keys.s_mac, &self.mcv, header, lc, data);
        let mut mac = [0u8; MAC_LEN];
        mac.copy_from_slice(&self.mcv[..MAC_LEN]);
        mac
    }

    /// Verifies a received C-MAC. On success the MCV advances; on failure it
    /// is left unchanged (the caller ends the session anyway).
    pub(crate) fn verify_c_mac(
        &mut self,
        header: &[u8; 4],
        lc: &[u8],
        data: &[u8],
        mac: &[u8],
    ) -> Result<(), Scp03Error> {
        let full = c_mac(&self.keys.s_mac, &self.mcv, header, lc, data);
        if mac.len() != MAC_LEN || !bool::from(full[..MAC_LEN].ct_eq(mac)) {
            return Err(Scp03Error::MacMismatch);
        }
        self.mcv = full;
        Ok(())
    }

    /// Advances the encryption counter for a new command (only counted
    /// when the level includes C-DECRYPTION). Both sides call this once per
    /// secured command, whether or not it has data.
    pub(crate) fn next_command(&mut self) -> Result<(), Scp03Error> {
        if self.level.c_dec() {
            self.counter = self
                .counter
                .checked_add(1)
                .ok_or(Scp03Error::CounterExhausted)?;
        }
        Ok(())
    }

    /// C-DECRYPTION, sending side: pad and encrypt command data with
    /// `ICV = AES(S-ENC, counter)`. Empty data stays empty.
    pub(crate) fn encrypt_command(&self, data: &[u8]) -> Result<Vec<u8>, Scp03Error> {
        if data.is_empty() || !self.level.c_dec() {
            return Ok(data.to_vec());
        }
        Ok(encrypt(
            &self.keys.s_enc,
            self.counter,
            Direction::Command,
            data,
        ))
    }

    /// C-DECRYPTION, receiving side.
    pub(crate) fn decrypt_command(&self, data: &[u8]) -> Result<Zeroizing<Vec<u8>>, Scp03Error> {
        if data.is_empty() || !self.level.c_dec() {
            return Ok(Zeroizing::new(data.to_vec()));
        }
        decrypt(&self.keys.s_enc, self.counter, Direction::Command, data)
    }

    /// R-MAC over `MCV ‖ response data ‖ SW` with S-RMAC.
    pub(crate) fn r_mac(&self, data: &[u8], sw: u16) -> [u8; MAC_LEN] {
        r_mac(&self.keys.s_rmac, &self.mcv, data, sw)
    }

    /// Card side: protects a response according to the level.
    pub(crate) fn wrap_response(&self, data: &[u8], sw: u16) -> Result<Vec<u8>, Scp03Error> {
        if !self.level.r_mac() {
            let mut out = data.to_vec();
            out.extend_from_slice(&sw.to_be_bytes());
            return Ok(out);
        }
        if !sw_carries_rmac(sw) {
            // Error status words travel bare, without data or R-MAC.
            return Ok(sw.to_be_bytes().to_vec());
        }
        let mut body = if self.level.r_enc() && !data.is_empty() {
            encrypt(&self.keys.s_enc, self.counter, Direction::Response, data)
        } else {
            data.to_vec()
        };
        let mac = self.r_mac(&body, sw);
        body.extend_from_slice(&mac);
        body.extend_from_slice(&sw.to_be_bytes());
        Ok(body)
    }

    /// Host side: verifies and decrypts a response according to the level.
    pub(crate) fn unwrap_response(
        &self,
        data: &[u8],
        sw: u16,
    ) -> Result<Zeroizing<Vec<u8>>, Scp03Error> {
        if !self.level.r_mac() {
            return Ok(Zeroizing::new(data.to_vec()));
        }
        if !sw_carries_rmac(sw) {
            if data.is_empty() {
                return Ok(Zeroizing::new(Vec::new()));
            }
            return Err(Scp03Error::Malformed(
                "error status word with response data",
            ));
        }
        if data.len() < MAC_LEN {
            return Err(Scp03Error::Malformed("response shorter than its R-MAC"));
        }
        let (body, mac) = data.split_at(data.len() - MAC_LEN);
        let expected = self.r_mac(body, sw);
        if !bool::from(expected.ct_eq(mac)) {
            return Err(Scp03Error::RMacMismatch);
        }
        if self.level.r_enc() && !body.is_empty() {
            return decrypt(&self.keys.s_enc, self.counter, Direction::Response, body);
        }
        Ok(Zeroizing::new(body.to_vec()))
    }
}

/// Which way a message travels; selects the ICV variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Host to card (C-DECRYPTION): ICV = AES(S-ENC, counter).
    Command,
    /// Card to host (R-ENCRYPTION): ICV = AES(S-ENC, 80 ‖ counter).
    Response,
}

/// The CBC initial chaining vector for encryption counter `counter`: the
/// counter as a 16-byte big-endian block (first byte `80` for responses),
/// encrypted under S-ENC.
pub fn icv(s_enc: &AesKey, counter: u32, direction: Direction) -> [u8; BLOCK_LEN] {
    let mut block = [0u8; BLOCK_LEN];
    block[12..].copy_from_slice(&counter.to_be_bytes());
    if direction == Direction::Response {
        block[0] = 0x80;
    }
    s_enc.encrypt_block(&mut block);
    block
}

/// The full 16-byte C-MAC `CMAC(S-MAC, MCV ‖ header ‖ Lc ‖ data)`; its
/// first 8 bytes travel in the command, all 16 become the next MCV.
/// `header` carries CLA with the secure-messaging bit, `lc` the Lc field
/// as transmitted (counting the 8 MAC bytes), `data` the (encrypted) data.
pub fn c_mac(
    s_mac: &AesKey,
    mcv: &[u8; BLOCK_LEN],
    header: &[u8; 4],
    lc: &[u8],
    data: &[u8],
) -> [u8; BLOCK_LEN] {
    s_mac.cmac(&[mcv, header, lc, data])
}

/// The 8-byte R-MAC `CMAC(S-RMAC, MCV ‖ response data ‖ SW)`, where MCV
/// is the C-MAC chaining value of the command being answered.
pub fn r_mac(s_rmac: &AesKey, mcv: &[u8; BLOCK_LEN], data: &[u8], sw: u16) -> [u8; MAC_LEN] {
    let full = s_rmac.cmac(&[mcv, data, &sw.to_be_bytes()]);
    let mut mac = [0u8; MAC_LEN];
    mac.copy_from_slice(&full[..MAC_LEN]);
    mac
}

/// Pads (ISO/IEC 9797-1 method 2) and AES-CBC encrypts `data` under S-ENC
/// with the ICV of `counter` and `direction`.
pub fn encrypt(s_enc: &AesKey, counter: u32, direction: Direction, data: &[u8]) -> Vec<u8> {
    let mut buf = pad(data);
    s_enc
        .cbc_encrypt(&icv(s_enc, counter, direction), &mut buf)
        .expect("padded to whole blocks");
    buf.to_vec()
}

/// Decrypts and unpads data produced by [`encrypt`].
pub fn decrypt(
    s_enc: &AesKey,
    counter: u32,
    direction: Direction,
    data: &[u8],
) -> Result<Zeroizing<Vec<u8>>, Scp03Error> {
    let mut buf = Zeroizing::new(data.to_vec());
    s_enc.cbc_decrypt(&icv(s_enc, counter, direction), &mut buf)?;
    let plain = unpad(&buf)?;
    Ok(Zeroizing::new(plain.to_vec()))
}

/// The Lc field a secured command carries: the C-MAC is part of Nc.
pub(crate) fn secured_lc(nc_with_mac: usize, extended: bool) -> Vec<u8> {
    lc_field(nc_with_mac, extended)
}
