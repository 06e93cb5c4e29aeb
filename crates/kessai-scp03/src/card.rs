//! Card side (security domain / applet): answer INITIALIZE UPDATE, verify
//! EXTERNAL AUTHENTICATE, unwrap commands, wrap responses.
//!
//! [`CardHandshake`] exists between INITIALIZE UPDATE and EXTERNAL
//! AUTHENTICATE; [`CardSession`] only after the host cryptogram and the
//! C-MAC verified. The applet keeps them in its volatile state and throws
//! them away on any error, as GlobalPlatform requires.

use std::fmt;

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::Scp03Error;
use crate::apdu::SecurityLevel;
use crate::host::{I_PSEUDO_RANDOM_CHALLENGE, I_RENC, I_RMAC, InitializeUpdateResponse, SCP03_ID};
use crate::keys::{
    KDD_LEN, StaticKeys, card_cryptogram, host_cryptogram, pseudo_random_card_challenge,
};
use crate::sm::{Channel, MAC_LEN, secured_lc};

/// Where the card challenge comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CardChallenge {
    /// A random challenge supplied by the caller (i = `60`).
    Random([u8; 8]),
    /// Pseudo-random from the card's 24-bit sequence counter and the AID
    /// (i = `70`); the counter is returned in the response. The caller must
    /// never reuse a counter value with the same keys.
    PseudoRandom {
        /// The sequence counter value for this INITIALIZE UPDATE.
        sequence_counter: u32,
    },
    /// A challenge computed elsewhere, announced as pseudo-random (i = `70`)
    /// when a sequence counter is given, else as random (i = `60`). For
    /// replaying recorded transcripts and for cards that derive their
    /// challenge differently.
    Explicit {
        /// The card challenge.
        challenge: [u8; 8],
        /// The sequence counter to return, if any.
        sequence_counter: Option<u32>,
    },
}

/// Between INITIALIZE UPDATE and EXTERNAL AUTHENTICATE.
pub struct CardHandshake {
    channel: Channel,
    expected_host_cryptogram: [u8; 8],
}

impl fmt::Debug for CardHandshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CardHandshake(redacted)")
    }
}

/// Answers INITIALIZE UPDATE (`80 50 P1 P2 08 <host challenge>`).
///
/// `p1` is the requested key version (00 = the card's key set), `p2` must be
/// 00, `data` is the 8-byte host challenge, `aid` the selected
/// application's AID (context of pseudo-random challenges). Returns the
/// handshake state and the response data (without status word).
pub fn initialize_update(
    keys: &StaticKeys,
    kdd: &[u8; KDD_LEN],
    aid: &[u8],
    p1: u8,
    p2: u8,
    data: &[u8],
    challenge: CardChallenge,
) -> Result<(CardHandshake, Vec<u8>), Scp03Error> {
    if p1 != 0 && p1 != keys.version() {
        return Err(Scp03Error::KeyVersionMismatch {
            requested: p1,
            returned: keys.version(),
        });
    }
    if p2 != 0 {
        return Err(Scp03Error::Malformed("INITIALIZE UPDATE P2 must be 00"));
    }
    let host_challenge: [u8; 8] = data
        .try_into()
        .map_err(|_| Scp03Error::Malformed("host challenge must be 8 bytes"))?;
    let (card_challenge, i_param, sequence_counter) = match challenge {
        CardChallenge::Random(c) => (c, I_RMAC | I_RENC, None),
        CardChallenge::Explicit {
            challenge,
            sequence_counter: None,
        } => (challenge, I_RMAC | I_RENC, None),
        CardChallenge::Explicit {
            challenge,
            sequence_counter: Some(seq),
        } => {
            if seq > 0x00FF_FFFF {
                return Err(Scp03Error::CounterExhausted);
            }
            (
                challenge,
                I_PSEUDO_RANDOM_CHALLENGE | I_RMAC | I_RENC,
                Some(seq),
            )
        }
        CardChallenge::PseudoRandom { sequence_counter } => {
            if sequence_counter > 0x00FF_FFFF {
                return Err(Scp03Error::CounterExhausted);
            }
            (
                pseudo_random_card_challenge(keys, sequence_counter, aid),
                I_PSEUDO_RANDOM_CHALLENGE | I_RMAC | I_RENC,
                Some(sequence_counter),
            )
        }
    };
    let mut context = [0u8; 16];
    context[..8].copy_from_slice(&host_challenge);
    context[8..].copy_from_slice(&card_challenge);
    let session_keys = keys.session_keys(&context);
    let response = InitializeUpdateResponse {
        kdd: *kdd,
        key_version: keys.version(),
        scp_id: SCP03_ID,
        i_param,
        card_challenge,
        card_cryptogram: card_cryptogram(&session_keys, &context),
        sequence_counter,
    };
    let expected_host_cryptogram = host_cryptogram(&session_keys, &context);
    Ok((
        CardHandshake {
            // The level is fixed by EXTERNAL AUTHENTICATE; C-MAC until then.
            channel: Channel::new(session_keys, SecurityLevel::CMac),
            expected_host_cryptogram,
        },
        response.encode(),
    ))
}

impl CardHandshake {
    /// Verifies EXTERNAL AUTHENTICATE (`84 82 <level> 00 10 <host
    /// cryptogram> <C-MAC>`): first the host cryptogram
    /// ([`Scp03Error::HostCryptogramMismatch`], status `6300`), then the
    /// C-MAC ([`Scp03Error::MacMismatch`], `6982`). Consumes the handshake
    /// either way: a failed attempt cannot be retried.
    pub fn external_authenticate(
        self,
        header: [u8; 4],
        extended: bool,
        data: &[u8],
    ) -> Result<CardSession, Scp03Error> {
        let [cla, ins, p1, p2] = header;
        if cla & 0xFC != 0x84 || ins != 0x82 {
            return Err(Scp03Error::Malformed("not a secured EXTERNAL AUTHENTICATE"));
        }
        let level =
            SecurityLevel::from_byte(p1).ok_or(Scp03Error::SecurityLevelNotSupported(p1))?;
        if p2 != 0 {
            return Err(Scp03Error::Malformed("EXTERNAL AUTHENTICATE P2 must be 00"));
        }
        if data.len() != 16 {
            return Err(Scp03Error::Malformed(
                "EXTERNAL AUTHENTICATE data must be 16 bytes",
            ));
        }
        let (crypto, mac) = data.split_at(8);
        if !bool::from(crypto.ct_eq(&self.expected_host_cryptogram)) {
            return Err(Scp03Error::HostCryptogramMismatch);
        }
        let mut channel = self.channel;
        let lc = secured_lc(data.len(), extended);
        channel.verify_c_mac(&header, &lc, crypto, mac)?;
        channel.level = level;
        Ok(CardSession { channel })
    }
}

/// An authenticated SCP03 session, card side.
pub struct CardSession {
    channel: Channel,
}

impl fmt::Debug for CardSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CardSession({:?}, counter {})",
            self.channel.level, self.channel.counter
        )
    }
}

impl CardSession {
    /// The security level fixed by EXTERNAL AUTHENTICATE.
    pub fn level(&self) -> SecurityLevel {
        self.channel.level
    }

    /// Verifies the C-MAC of a secured command and decrypts its data.
    ///
    /// `header` is CLA INS P1 P2 as received (CLA with the secure-messaging
    /// bit `04`), `extended` whether Lc used the extended encoding, `data`
    /// the command data field including the trailing 8-byte C-MAC. Any
    /// error means the session must be dropped.
    pub fn unwrap_command(
        &mut self,
        header: [u8; 4],
        extended: bool,
        data: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, Scp03Error> {
        if header[0] & 0x04 == 0 {
            return Err(Scp03Error::NotSecured);
        }
        if data.len() < MAC_LEN {
            return Err(Scp03Error::Malformed("secured command without C-MAC"));
        }
        let (body, mac) = data.split_at(data.len() - MAC_LEN);
        let lc = secured_lc(data.len(), extended);
        self.channel.verify_c_mac(&header, &lc, body, mac)?;
        self.channel.next_command()?;
        self.channel.decrypt_command(body)
    }

    /// Protects a response to the last unwrapped command: R-ENC of the
    /// data, then R-MAC over `MCV ‖ data ‖ SW`, as the level requires.
    /// Error status words (not `9000`/`62xx`/`63xx`) are returned bare.
    pub fn wrap_response(&self, data: &[u8], sw: u16) -> Result<Vec<u8>, Scp03Error> {
        self.channel.wrap_response(data, sw)
    }
}
