//! Host side (off-card entity): build INITIALIZE UPDATE, check the card
//! cryptogram, build EXTERNAL AUTHENTICATE, wrap commands, unwrap responses.
//!
//! The types are steps of the handshake: [`HostHandshake`] →
//! [`PendingHostSession`] (EXTERNAL AUTHENTICATE sent) → [`HostSession`]
//! (card answered `9000`). A session exists only after the card cryptogram
//! was verified, so a skipped check does not compile.

use std::fmt;

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::Scp03Error;
use crate::apdu::{CommandApdu, SecurityLevel, split_response};
use crate::keys::{KDD_LEN, StaticKeys, card_cryptogram, host_cryptogram};
use crate::sm::{Channel, MAC_LEN, secured_lc};

/// SCP identifier of SCP03 in the key information of INITIALIZE UPDATE.
pub const SCP03_ID: u8 = 0x03;
/// i parameter bit: S16 mode (16-byte challenges and MACs; not supported).
pub const I_S16: u8 = 0x01;
/// i parameter bit: pseudo-random card challenge (sequence counter present).
pub const I_PSEUDO_RANDOM_CHALLENGE: u8 = 0x10;
/// i parameter bit: R-MAC supported.
pub const I_RMAC: u8 = 0x20;
/// i parameter bit: R-ENCRYPTION supported (with R-MAC).
pub const I_RENC: u8 = 0x40;

/// The data of a successful INITIALIZE UPDATE response (S8 mode).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitializeUpdateResponse {
    /// Key diversification data: tells the host which card's keys to use.
    pub kdd: [u8; KDD_LEN],
    /// Key version number of the key set the card used.
    pub key_version: u8,
    /// Secure channel protocol identifier (03).
    pub scp_id: u8,
    /// The "i" implementation parameter.
    pub i_param: u8,
    /// Card challenge.
    pub card_challenge: [u8; 8],
    /// Card cryptogram.
    pub card_cryptogram: [u8; 8],
    /// Sequence counter (24 bits), present with pseudo-random challenges.
    pub sequence_counter: Option<u32>,
}

impl InitializeUpdateResponse {
    /// Parses the response data (without status word).
    pub fn parse(data: &[u8]) -> Result<Self, Scp03Error> {
        if data.len() != 29 && data.len() != 32 {
            return Err(Scp03Error::Malformed("INITIALIZE UPDATE response length"));
        }
        let mut kdd = [0u8; KDD_LEN];
        kdd.copy_from_slice(&data[..10]);
        let mut card_challenge = [0u8; 8];
        card_challenge.copy_from_slice(&data[13..21]);
        let mut card_cryptogram = [0u8; 8];
        card_cryptogram.copy_from_slice(&data[21..29]);
        let i_param = data[12];
        let sequence_counter = if data.len() == 32 {
            Some(u32::from_be_bytes([0, data[29], data[30], data[31]]))
        } else {
            None
        };
        if sequence_counter.is_some() != (i_param & I_PSEUDO_RANDOM_CHALLENGE != 0) {
            return Err(Scp03Error::Malformed(
                "sequence counter disagrees with i parameter",
            ));
        }
        Ok(Self {
            kdd,
            key_version: data[10],
            scp_id: data[11],
            i_param,
            card_challenge,
            card_cryptogram,
            sequence_counter,
        })
    }

    /// Encodes the response data (without status word).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32);
        out.extend_from_slice(&self.kdd);
        out.extend_from_slice(&[self.key_version, self.scp_id, self.i_param]);
        out.extend_from_slice(&self.card_challenge);
        out.extend_from_slice(&self.card_cryptogram);
        if let Some(seq) = self.sequence_counter {
            out.extend_from_slice(&seq.to_be_bytes()[1..]);
        }
        out
    }
}

/// Start of the host side: holds the host challenge.
#[derive(Debug)]
pub struct HostHandshake {
    key_version: u8,
    host_challenge: [u8; 8],
}

impl HostHandshake {
    /// `key_version` 0 asks the card for its default key set; the host
    /// challenge must come from a CSPRNG (injected by the caller).
    pub fn new(key_version: u8, host_challenge: [u8; 8]) -> Self {
        Self {
            key_version,
            host_challenge,
        }
    }

    /// The INITIALIZE UPDATE command: `80 50 KVN 00 08 <host challenge> 00`.
    pub fn initialize_update(&self) -> Vec<u8> {
        let mut apdu = vec![0x80, 0x50, self.key_version, 0x00, 0x08];
        apdu.extend_from_slice(&self.host_challenge);
        apdu.push(0x00);
        apdu
    }

    /// Parses the card's answer to INITIALIZE UPDATE (data ‖ SW) and checks
    /// protocol, mode and key version. Use the returned KDD to pick or
    /// derive the card's keys, then call [`authenticate`](Self::authenticate).
    pub fn parse_response(&self, response: &[u8]) -> Result<InitializeUpdateResponse, Scp03Error> {
        let (data, sw) = split_response(response)?;
        if sw != 0x9000 {
            return Err(Scp03Error::Status(sw));
        }
        let r = InitializeUpdateResponse::parse(data)?;
        if r.scp_id != SCP03_ID {
            return Err(Scp03Error::UnsupportedProtocol(r.scp_id));
        }
        if r.i_param & I_S16 != 0 {
            return Err(Scp03Error::UnsupportedParameter(r.i_param));
        }
        if self.key_version != 0 && r.key_version != self.key_version {
            return Err(Scp03Error::KeyVersionMismatch {
                requested: self.key_version,
                returned: r.key_version,
            });
        }
        Ok(r)
    }

    /// Derives the session keys, verifies the card cryptogram (constant
    /// time) and builds EXTERNAL AUTHENTICATE for `level`:
    /// `84 82 <level> 00 10 <host cryptogram> <C-MAC>`.
    pub fn authenticate(
        self,
        response: &InitializeUpdateResponse,
        keys: &StaticKeys,
        level: SecurityLevel,
    ) -> Result<(PendingHostSession, Vec<u8>), Scp03Error> {
        if keys.version() != 0 && keys.version() != response.key_version {
            return Err(Scp03Error::KeyVersionMismatch {
                requested: keys.version(),
                returned: response.key_version,
            });
        }
        if (level.r_mac() && response.i_param & I_RMAC == 0)
            || (level.r_enc() && response.i_param & I_RENC == 0)
        {
            return Err(Scp03Error::SecurityLevelNotSupported(level.byte()));
        }
        let mut context = [0u8; 16];
        context[..8].copy_from_slice(&self.host_challenge);
        context[8..].copy_from_slice(&response.card_challenge);
        let session_keys = keys.session_keys(&context);
        let expected = card_cryptogram(&session_keys, &context);
        if !bool::from(expected.ct_eq(&response.card_cryptogram)) {
            return Err(Scp03Error::CardCryptogramMismatch);
        }
        let host_crypto = host_cryptogram(&session_keys, &context);
        let mut channel = Channel::new(session_keys, level);
        let key_version = response.key_version;
        let header = [0x84, 0x82, level.byte(), 0x00];
        let lc = [0x10u8];
        let mac = channel.c_mac(&header, &lc, &host_crypto);
        let mut apdu = Vec::with_capacity(21);
        apdu.extend_from_slice(&header);
        apdu.extend_from_slice(&lc);
        apdu.extend_from_slice(&host_crypto);
        apdu.extend_from_slice(&mac);
        Ok((
            PendingHostSession {
                channel,
                key_version,
                context,
            },
            apdu,
        ))
    }
}

/// EXTERNAL AUTHENTICATE was built; waiting for the card's answer.
pub struct PendingHostSession {
    channel: Channel,
    key_version: u8,
    /// Host challenge ‖ card challenge: with the static keys it yields the
    /// session keys again ([`PendingHostSession::resume`]).
    context: [u8; 16],
}

impl fmt::Debug for PendingHostSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PendingHostSession({:?})", self.channel.level)
    }
}

impl PendingHostSession {
    /// Accepts the card's answer to EXTERNAL AUTHENTICATE (`9000`, no data).
    pub fn confirm(self, response: &[u8]) -> Result<HostSession, Scp03Error> {
        let (data, sw) = split_response(response)?;
        if sw != 0x9000 {
            return Err(Scp03Error::Status(sw));
        }
        if !data.is_empty() {
            return Err(Scp03Error::Malformed("EXTERNAL AUTHENTICATE returned data"));
        }
        Ok(HostSession {
            channel: self.channel,
            key_version: self.key_version,
            context: self.context,
            closed: false,
        })
    }

    /// The state to persist while the card's answer travels (see
    /// [`HostSessionState`]).
    pub fn state(&self) -> HostSessionState {
        HostSessionState::of(&self.channel, self.key_version, self.context)
    }

    /// Rebuilds a pending session from its persisted state and the card's
    /// static keys (the session keys are derived again).
    pub fn resume(state: &HostSessionState, keys: &StaticKeys) -> Result<Self, Scp03Error> {
        let channel = state.channel(keys)?;
        Ok(Self {
            channel,
            key_version: state.key_version,
            context: state.context,
        })
    }
}

/// A response unwrapped by the host: verified (if R-MAC) and decrypted
/// (if R-ENC).
#[derive(Clone, PartialEq, Eq)]
pub struct HostResponse {
    /// Plain response data.
    pub data: Zeroizing<Vec<u8>>,
    /// Status word.
    pub sw: u16,
}

impl fmt::Debug for HostResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "HostResponse({} bytes, sw {:04X})",
            self.data.len(),
            self.sw
        )
    }
}

/// An open SCP03 session, host side.
pub struct HostSession {
    channel: Channel,
    key_version: u8,
    context: [u8; 16],
    closed: bool,
}

impl fmt::Debug for HostSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "HostSession({:?}, counter {}, closed {})",
            self.channel.level, self.channel.counter, self.closed
        )
    }
}

impl HostSession {
    /// The negotiated security level.
    pub fn level(&self) -> SecurityLevel {
        self.channel.level
    }

    /// The state to persist between two commands when the host is spread
    /// over several requests or processes (see [`HostSessionState`]). A
    /// closed session has none.
    pub fn state(&self) -> Result<HostSessionState, Scp03Error> {
        if self.closed {
            return Err(Scp03Error::SessionClosed);
        }
        Ok(HostSessionState::of(
            &self.channel,
            self.key_version,
            self.context,
        ))
    }

    /// Rebuilds an open session from its persisted state and the card's
    /// static keys. The state must have been taken after the response to
    /// the last wrapped command was unwrapped (or right after
    /// [`PendingHostSession::confirm`]).
    pub fn resume(state: &HostSessionState, keys: &StaticKeys) -> Result<Self, Scp03Error> {
        let channel = state.channel(keys)?;
        Ok(Self {
            channel,
            key_version: state.key_version,
            context: state.context,
            closed: false,
        })
    }

    /// True once a verification failed or the card reported a security
    /// error; every later call fails with [`Scp03Error::SessionClosed`].
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Protects a command: sets the secure-messaging bit in CLA, encrypts
    /// the data (C-DECRYPTION), appends the C-MAC, and encodes the APDU
    /// (extended length only when needed). Each wrapped command must be
    /// followed by [`unwrap`](Self::unwrap) of its response.
    pub fn wrap(&mut self, command: &CommandApdu) -> Result<Vec<u8>, Scp03Error> {
        if self.closed {
            return Err(Scp03Error::SessionClosed);
        }
        self.channel.next_command()?;
        let body = self.channel.encrypt_command(&command.data)?;
        let mut secured = CommandApdu {
            cla: command.cla | 0x04,
            ins: command.ins,
            p1: command.p1,
            p2: command.p2,
            data: body,
            le: command.le,
        };
        // Size the Lc field with the MAC included, as the card will see it.
        secured.data.extend_from_slice(&[0u8; MAC_LEN]);
        let extended = secured.needs_extended();
        let lc = secured_lc(secured.data.len(), extended);
        let n = secured.data.len() - MAC_LEN;
        let header = [secured.cla, secured.ins, secured.p1, secured.p2];
        let mac = self.channel.c_mac(&header, &lc, &secured.data[..n]);
        secured.data[n..].copy_from_slice(&mac);
        secured.encode()
    }

    /// Verifies the R-MAC and decrypts the data of the response to the
    /// last wrapped command. An R-MAC failure closes the session, as does a
    /// `6982`/`6988` status word (the card has dropped its session).
    pub fn unwrap(&mut self, response: &[u8]) -> Result<HostResponse, Scp03Error> {
        if self.closed {
            return Err(Scp03Error::SessionClosed);
        }
        let (data, sw) = split_response(response)?;
        match self.channel.unwrap_response(data, sw) {
            Ok(plain) => {
                if sw == 0x6982 || sw == 0x6988 {
                    self.closed = true;
                }
                Ok(HostResponse { data: plain, sw })
            }
            Err(e) => {
                self.closed = true;
                Err(e)
            }
        }
    }
}

/// The persistent part of a host-side session, for hosts that handle one
/// session over several requests or processes (the card is reached through
/// a relay such as a customer's wallet).
///
/// It holds **no key material**: key version, security level, the
/// handshake context (host challenge ‖ card challenge, both sent in clear
/// on the wire), the MAC chaining value and the encryption counter. The
/// session keys are derived again from the card's static keys on
/// [`HostSession::resume`]. The MAC chaining value is zeroized on drop and
/// `Debug` does not print it.
///
/// Encoding ([`to_bytes`](Self::to_bytes)), 39 bytes: format `01` ‖ key
/// version ‖ level ‖ context (16) ‖ MCV (16) ‖ counter (4, big-endian).
#[derive(Clone, PartialEq, Eq)]
pub struct HostSessionState {
    key_version: u8,
    level: SecurityLevel,
    context: [u8; 16],
    mcv: [u8; 16],
    counter: u32,
}

impl Drop for HostSessionState {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.mcv);
    }
}

impl fmt::Debug for HostSessionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "HostSessionState(kvn {:#04x}, {:?}, counter {}, redacted)",
            self.key_version, self.level, self.counter
        )
    }
}

impl HostSessionState {
    /// Length of [`to_bytes`](Self::to_bytes).
    pub const ENCODED_LEN: usize = 39;
    const FORMAT: u8 = 0x01;

    fn of(channel: &Channel, key_version: u8, context: [u8; 16]) -> Self {
        Self {
            key_version,
            level: channel.level,
            context,
            mcv: channel.mcv,
            counter: channel.counter,
        }
    }

    fn channel(&self, keys: &StaticKeys) -> Result<Channel, Scp03Error> {
        if keys.version() != self.key_version {
            return Err(Scp03Error::KeyVersionMismatch {
                requested: self.key_version,
                returned: keys.version(),
            });
        }
        let mut channel = Channel::new(keys.session_keys(&self.context), self.level);
        channel.mcv = self.mcv;
        channel.counter = self.counter;
        Ok(channel)
    }

    /// The key version of the static keys the session was opened with.
    pub fn key_version(&self) -> u8 {
        self.key_version
    }

    /// The negotiated security level.
    pub fn level(&self) -> SecurityLevel {
        self.level
    }

    /// The encryption counter (number of secured commands so far, when
    /// the level includes C-DECRYPTION).
    pub fn counter(&self) -> u32 {
        self.counter
    }

    /// The 39-byte encoding.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(Self::ENCODED_LEN));
        out.extend_from_slice(&[Self::FORMAT, self.key_version, self.level.byte()]);
        out.extend_from_slice(&self.context);
        out.extend_from_slice(&self.mcv);
        out.extend_from_slice(&self.counter.to_be_bytes());
        out
    }

    /// Parses [`to_bytes`](Self::to_bytes) output.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Scp03Error> {
        if bytes.len() != Self::ENCODED_LEN {
            return Err(Scp03Error::Malformed("session state length"));
        }
        if bytes[0] != Self::FORMAT {
            return Err(Scp03Error::Malformed("session state format"));
        }
        let level = SecurityLevel::from_byte(bytes[2])
            .ok_or(Scp03Error::SecurityLevelNotSupported(bytes[2]))?;
        let mut context = [0u8; 16];
        context.copy_from_slice(&bytes[3..19]);
        let mut mcv = [0u8; 16];
        mcv.copy_from_slice(&bytes[19..35]);
        let counter = u32::from_be_bytes([bytes[35], bytes[36], bytes[37], bytes[38]]);
        Ok(Self {
            key_version: bytes[1],
            level,
            context,
            mcv,
            counter,
        })
    }
}
