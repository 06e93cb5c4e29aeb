//! The card side of vsmartcard's virtual reader (`vpcd`) for pcsc-lite.
//!
//! `vpcd` is a pcsc-lite reader driver (Debian package `vsmartcard-vpcd`).
//! With the stock `/etc/reader.conf.d/vpcd` (`DEVICENAME /dev/null:0x8C7B`)
//! it listens inside `pcscd` on TCP port 35963 and shows up as the reader
//! "Virtual PCD 00 00". A virtual card connects **out** to that port; from
//! then on `vpcd` drives the exchange:
//!
//! - every message, both ways, is a 2-byte big-endian length followed by
//!   that many bytes;
//! - a 1-byte message from `vpcd` is a control: `00` power off, `01` power
//!   on, `02` reset (none of these gets an answer), `04` get ATR (answered
//!   with the ATR);
//! - anything longer is a command APDU, answered with the response APDU;
//! - a 0-length answer means "no card" to `vpcd`, so this module never
//!   sends one; `vpcd` polls with "get ATR" to see whether the card is
//!   still there, and a closed connection is a removed card.
//!
//! (Checked against vsmartcard `virtualsmartcard/src/vpcd/vpcd.{c,h}`,
//! `ifd-vpcd/ifd-vpcd.c` and vpicc's `VirtualSmartcard.py`.)
//!
//! [`VpcdCard`] is that protocol with no I/O (one request in, optional reply
//! out). [`serve_vpcd`] is the tokio driver: it connects, serves until the
//! connection drops, reconnects with bounded exponential backoff (so a
//! `pcscd` restart is survived), and stops cleanly when `shutdown`
//! completes. The card is powered off whenever the connection is gone,
//! as a card pulled from a reader would be.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::CardSlot;

/// The port `vpcd` listens on by default (`0x8C7B`).
pub const DEFAULT_PORT: u16 = 35963;
/// Control byte: power off (no answer).
pub const CTRL_POWER_OFF: u8 = 0x00;
/// Control byte: power on (no answer).
pub const CTRL_POWER_ON: u8 = 0x01;
/// Control byte: reset (no answer).
pub const CTRL_RESET: u8 = 0x02;
/// Control byte: get ATR (answered with the ATR).
pub const CTRL_GET_ATR: u8 = 0x04;
/// Largest payload a 2-byte length can carry.
pub const MAX_PAYLOAD: usize = u16::MAX as usize;

/// Status word sent when the card's own answer cannot be framed (empty,
/// shorter than a status word, or over 65535 bytes): `6F 00`, "no precise
/// diagnosis".
const SW_NO_PRECISE_DIAGNOSIS: [u8; 2] = [0x6F, 0x00];

/// Errors of the vpcd client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VpcdError {
    /// Could not reach `vpcd` (is `pcscd` running with the vpcd driver?)
    /// within the configured number of attempts.
    #[error(
        "vpcd at {addr} unreachable after {attempts} attempts ({last_error}); is pcscd running with the vsmartcard-vpcd driver?"
    )]
    Unreachable {
        /// Where we tried to connect.
        addr: SocketAddr,
        /// Consecutive failed attempts.
        attempts: u32,
        /// The last failure, for the operator.
        last_error: String,
    },
    /// A payload longer than 65535 bytes cannot be framed.
    #[error("vpcd payload of {len} bytes exceeds 65535")]
    FrameTooLarge {
        /// The refused length.
        len: usize,
    },
}

/// One message from `vpcd` to the card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VpcdRequest {
    /// `00`: remove power.
    PowerOff,
    /// `01`: apply power (cold reset).
    PowerOn,
    /// `02`: warm reset.
    Reset,
    /// `04`: send the ATR.
    GetAtr,
    /// Another 1-byte message; ignored (as vpicc does).
    UnknownControl(u8),
    /// A command APDU (2 bytes or more).
    Apdu(Vec<u8>),
}

impl VpcdRequest {
    /// Classifies a received payload; `None` for an empty one (vpicc logs
    /// and ignores those too).
    pub fn from_payload(payload: &[u8]) -> Option<Self> {
        Some(match payload {
            [] => return None,
            [CTRL_POWER_OFF] => VpcdRequest::PowerOff,
            [CTRL_POWER_ON] => VpcdRequest::PowerOn,
            [CTRL_RESET] => VpcdRequest::Reset,
            [CTRL_GET_ATR] => VpcdRequest::GetAtr,
            [other] => VpcdRequest::UnknownControl(*other),
            apdu => VpcdRequest::Apdu(apdu.to_vec()),
        })
    }
}

/// Frames a payload: 2-byte big-endian length ‖ payload.
pub fn encode_frame(payload: &[u8]) -> Result<Vec<u8>, VpcdError> {
    let len = u16::try_from(payload.len())
        .map_err(|_| VpcdError::FrameTooLarge { len: payload.len() })?;
    let mut out = Vec::with_capacity(2 + payload.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}

/// The card side of the vpcd protocol as a state machine without I/O.
#[derive(Debug)]
pub struct VpcdCard<S: CardSlot> {
    /// The card being served.
    slot: S,
    /// ATR from the last power-on/reset; `vpcd` asks for it at any time,
    /// including before it ever powered the card.
    atr: Option<Vec<u8>>,
    /// Whether vpcd has the card powered (so a lost connection powers it off).
    powered: bool,
}

impl<S: CardSlot> VpcdCard<S> {
    /// Wraps a card; it stays unpowered until `vpcd` powers it.
    pub fn new(slot: S) -> Self {
        Self {
            slot,
            atr: None,
            powered: false,
        }
    }

    /// Handles one request; returns the reply payload, if the request has
    /// one. A reply is never empty and never longer than 65535 bytes.
    pub fn handle(&mut self, request: VpcdRequest) -> Option<Vec<u8>> {
        match request {
            VpcdRequest::PowerOff => {
                tracing::debug!("vpcd: power off");
                self.slot.power_off();
                self.powered = false;
                None
            }
            VpcdRequest::PowerOn => {
                tracing::debug!("vpcd: power on");
                self.atr = Some(self.slot.power_on());
                self.powered = true;
                None
            }
            VpcdRequest::Reset => {
                tracing::debug!("vpcd: reset");
                self.atr = Some(self.slot.reset());
                self.powered = true;
                None
            }
            VpcdRequest::GetAtr => Some(self.atr()),
            VpcdRequest::UnknownControl(byte) => {
                tracing::warn!(byte, "vpcd: unknown control byte ignored");
                None
            }
            VpcdRequest::Apdu(command) => {
                let response = self.slot.transmit(&command);
                tracing::debug!(
                    command_len = command.len(),
                    response_len = response.len(),
                    "vpcd: apdu"
                );
                if response.len() < 2 || response.len() > MAX_PAYLOAD {
                    tracing::warn!(
                        response_len = response.len(),
                        "vpcd: card answer cannot be framed; sending 6F00"
                    );
                    return Some(SW_NO_PRECISE_DIAGNOSIS.to_vec());
                }
                Some(response)
            }
        }
    }

    /// The ATR to report. If the card was never powered, it is powered on
    /// once to learn its ATR and powered off again (a physical card, too,
    /// only gives its ATR when powered).
    fn atr(&mut self) -> Vec<u8> {
        if self.atr.is_none() {
            self.atr = Some(self.slot.power_on());
            if !self.powered {
                self.slot.power_off();
            }
        }
        self.atr.clone().unwrap_or_default()
    }

    /// The connection to `vpcd` is gone: the card leaves the reader, so it
    /// loses power.
    pub fn detach(&mut self) {
        if self.powered {
            self.slot.power_off();
            self.powered = false;
        }
    }

    /// The card being served.
    pub fn slot(&self) -> &S {
        &self.slot
    }
}

/// Where and how persistently to connect to `vpcd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VpcdConfig {
    /// `vpcd`'s address; default `127.0.0.1:35963`.
    pub addr: SocketAddr,
    /// Consecutive failed connection attempts before giving up. A session
    /// that exchanged at least one message resets the count.
    pub max_connect_attempts: u32,
    /// Wait after the first failure; doubles after each further one.
    pub initial_backoff: Duration,
    /// Upper bound of the wait between attempts.
    pub max_backoff: Duration,
}

impl Default for VpcdConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, DEFAULT_PORT)),
            max_connect_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// How one connection ended.
enum SessionEnd {
    /// `shutdown` completed.
    Shutdown,
    /// The connection closed or failed after `messages` requests.
    Closed { messages: u64, reason: String },
}

/// Serves `slot` to `vpcd` until `shutdown` completes.
///
/// Connects to `config.addr`; when the connection drops (e.g. `pcscd`
/// restarts) the card is powered off and the client reconnects, waiting
/// `initial_backoff`, doubling up to `max_backoff`. After
/// `max_connect_attempts` consecutive failures (refused connections, or
/// connections closed before any message) it returns
/// [`VpcdError::Unreachable`]. Returns `Ok(())` when `shutdown` completes;
/// the card is left powered off.
///
/// Tokio-based; the slot is only borrowed, so a caller can inspect it
/// afterwards. Run it in a task (`async move { serve_vpcd(&cfg, &mut
/// slot, rx).await }`) next to the rest of the program.
pub async fn serve_vpcd<S: CardSlot + ?Sized>(
    config: &VpcdConfig,
    slot: &mut S,
    shutdown: impl Future<Output = ()>,
) -> Result<(), VpcdError> {
    let mut card = VpcdCard::new(slot);
    tokio::pin!(shutdown);
    let mut failures: u32 = 0;
    let mut backoff = config.initial_backoff;
    loop {
        let connected = tokio::select! {
            () = &mut shutdown => return Ok(()),
            r = TcpStream::connect(config.addr) => r,
        };
        let (last_error, productive) = match connected {
            Ok(stream) => {
                tracing::info!(addr = %config.addr, "vpcd: connected");
                let end = tokio::select! {
                    () = &mut shutdown => SessionEnd::Shutdown,
                    end = run_session(&mut card, stream) => end,
                };
                card.detach();
                match end {
                    SessionEnd::Shutdown => return Ok(()),
                    SessionEnd::Closed { messages, reason } => {
                        tracing::info!(messages, %reason, "vpcd: connection ended");
                        (reason, messages > 0)
                    }
                }
            }
            Err(e) => (e.to_string(), false),
        };
        if productive {
            failures = 0;
            backoff = config.initial_backoff;
        } else {
            failures += 1;
        }
        if failures >= config.max_connect_attempts {
            return Err(VpcdError::Unreachable {
                addr: config.addr,
                attempts: failures,
                last_error,
            });
        }
        tracing::debug!(?backoff, failures, "vpcd: reconnecting after backoff");
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(config.max_backoff);
    }
}

/// Serves one connection until it closes or fails.
async fn run_session<S: CardSlot>(card: &mut VpcdCard<S>, mut stream: TcpStream) -> SessionEnd {
    // Small request/response messages: don't let Nagle hold them back.
    let _ = stream.set_nodelay(true);
    let mut messages = 0u64;
    loop {
        let mut len = [0u8; 2];
        if let Err(e) = stream.read_exact(&mut len).await {
            return SessionEnd::Closed {
                messages,
                reason: e.to_string(),
            };
        }
        let mut payload = vec![0u8; usize::from(u16::from_be_bytes(len))];
        if let Err(e) = stream.read_exact(&mut payload).await {
            return SessionEnd::Closed {
                messages,
                reason: e.to_string(),
            };
        }
        messages += 1;
        let Some(request) = VpcdRequest::from_payload(&payload) else {
            tracing::warn!("vpcd: empty message ignored");
            continue;
        };
        let Some(reply) = card.handle(request) else {
            continue;
        };
        // `handle` keeps replies within 1..=65535 bytes, so framing succeeds.
        let frame = match encode_frame(&reply) {
            Ok(f) => f,
            Err(e) => {
                return SessionEnd::Closed {
                    messages,
                    reason: e.to_string(),
                };
            }
        };
        if let Err(e) = stream.write_all(&frame).await {
            return SessionEnd::Closed {
                messages,
                reason: e.to_string(),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EchoSlot;

    #[test]
    fn classifies_payloads() {
        assert_eq!(VpcdRequest::from_payload(&[]), None);
        assert_eq!(VpcdRequest::from_payload(&[0]), Some(VpcdRequest::PowerOff));
        assert_eq!(VpcdRequest::from_payload(&[1]), Some(VpcdRequest::PowerOn));
        assert_eq!(VpcdRequest::from_payload(&[2]), Some(VpcdRequest::Reset));
        assert_eq!(VpcdRequest::from_payload(&[4]), Some(VpcdRequest::GetAtr));
        assert_eq!(
            VpcdRequest::from_payload(&[3]),
            Some(VpcdRequest::UnknownControl(3))
        );
        assert_eq!(
            VpcdRequest::from_payload(&[0, 1]),
            Some(VpcdRequest::Apdu(vec![0, 1]))
        );
    }

    #[test]
    fn frames_are_big_endian_length_prefixed() {
        assert_eq!(encode_frame(&[0x90, 0x00]).unwrap(), [0, 2, 0x90, 0x00]);
        assert_eq!(encode_frame(&[]).unwrap(), [0, 0]);
        let big = vec![7u8; 0x1234];
        assert_eq!(&encode_frame(&big).unwrap()[..2], &[0x12, 0x34]);
        assert_eq!(
            encode_frame(&vec![0; MAX_PAYLOAD]).unwrap().len(),
            MAX_PAYLOAD + 2
        );
        assert_eq!(
            encode_frame(&vec![0; MAX_PAYLOAD + 1]),
            Err(VpcdError::FrameTooLarge {
                len: MAX_PAYLOAD + 1
            })
        );
    }

    #[test]
    fn controls_drive_the_slot_and_get_no_reply() {
        let mut card = VpcdCard::new(EchoSlot::new());
        // ATR before any power-on: learned by a power cycle, card left off.
        assert_eq!(card.handle(VpcdRequest::GetAtr).unwrap(), EchoSlot::ATR);
        assert!(!card.slot().is_powered());
        assert_eq!(card.handle(VpcdRequest::PowerOn), None);
        assert!(card.slot().is_powered());
        assert_eq!(card.handle(VpcdRequest::Reset), None);
        assert_eq!(card.slot().resets(), 1);
        assert_eq!(card.handle(VpcdRequest::UnknownControl(9)), None);
        assert_eq!(
            card.handle(VpcdRequest::Apdu(vec![0x80, 0xEE, 0, 0, 1, 5]))
                .unwrap(),
            [5, 0x90, 0x00]
        );
        assert_eq!(card.handle(VpcdRequest::PowerOff), None);
        assert!(!card.slot().is_powered());
        // ATR still answered while off (vpcd polls presence this way).
        assert_eq!(card.handle(VpcdRequest::GetAtr).unwrap(), EchoSlot::ATR);
        assert!(!card.slot().is_powered());
    }

    #[test]
    fn detach_powers_the_card_off() {
        let mut card = VpcdCard::new(EchoSlot::new());
        card.handle(VpcdRequest::PowerOn);
        card.detach();
        assert!(!card.slot().is_powered());
    }

    /// A card that answers with a fixed (possibly unframeable) response.
    struct Fixed(Vec<u8>);
    impl CardSlot for Fixed {
        fn power_on(&mut self) -> Vec<u8> {
            vec![0x3B, 0x00]
        }
        fn power_off(&mut self) {}
        fn reset(&mut self) -> Vec<u8> {
            vec![0x3B, 0x00]
        }
        fn transmit(&mut self, _: &[u8]) -> Vec<u8> {
            self.0.clone()
        }
    }

    #[test]
    fn unframeable_answers_become_6f00() {
        for bad in [vec![], vec![0x90], vec![0u8; MAX_PAYLOAD + 1]] {
            let mut card = VpcdCard::new(Fixed(bad));
            assert_eq!(
                card.handle(VpcdRequest::Apdu(vec![0, 0, 0, 0])).unwrap(),
                [0x6F, 0x00]
            );
        }
        let mut card = VpcdCard::new(Fixed(vec![0u8; MAX_PAYLOAD]));
        assert_eq!(
            card.handle(VpcdRequest::Apdu(vec![0, 0, 0, 0]))
                .unwrap()
                .len(),
            MAX_PAYLOAD
        );
    }
}
