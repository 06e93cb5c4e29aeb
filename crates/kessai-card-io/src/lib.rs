//! How kessai talks to cards: the seam between a card (real or emulated)
//! and the programs that use it.
//!
//! Two sides, two traits:
//! - [`CardSlot`] is what a **card** exposes to a reader: power on (ATR),
//!   power off, reset, and one command APDU in → one response APDU out
//!   (data ‖ SW1 SW2). The card emulator implements it (through a small
//!   adapter; this crate does not depend on the applet).
//! - [`CardTransport`] is what a **client** (wallet, phone, tests) uses to
//!   reach a card: `transmit`, the ATR, `reset`. Errors are typed
//!   ([`TransportError`]): no reader, no card, card removed, card reset by
//!   someone else, service down.
//!
//! Transports provided:
//! - [`InProcess`]: a client talking straight to a [`CardSlot`] in the same
//!   process — unit tests and the all-in-one demo.
//! - [`vpcd`]: the card side of vsmartcard's virtual reader driver for
//!   pcsc-lite. [`vpcd::serve_vpcd`] connects *out* to `vpcd` (inside
//!   `pcscd`, default `127.0.0.1:35963`) and answers its power/ATR/APDU
//!   requests from a [`CardSlot`], so an emulated card appears in every PC/SC
//!   application as a card in the reader "Virtual PCD".
//! - `pcsc::PcscTransport` (cargo feature `pcsc`): a client over the real
//!   PC/SC stack (pcsc-lite), for physical readers and for the virtual one.
//!   The default build does not need libpcsclite.
//!
//! What it does not do: parse or build APDUs beyond the transport's own
//! needs (T=0 `61xx`/`6Cxx` follow-up), secure messaging, or anything about
//! what the card applet means. Nothing here logs APDU contents: they can
//! carry PIN blocks and keys; logs carry lengths only.
//!
//! ```
//! use kessai_card_io::{CardTransport, EchoSlot, InProcess};
//!
//! let mut card = InProcess::new(EchoSlot::new());
//! assert_eq!(card.atr(), EchoSlot::ATR);
//! // SELECT the echo applet, then echo three bytes.
//! let mut select = vec![0x00, 0xA4, 0x04, 0x00, EchoSlot::AID.len() as u8];
//! select.extend_from_slice(EchoSlot::AID);
//! assert_eq!(card.transmit(&select).unwrap(), [0x90, 0x00]);
//! let echoed = card.transmit(&[0x80, 0xEE, 0x00, 0x00, 0x03, 1, 2, 3]).unwrap();
//! assert_eq!(echoed, [1, 2, 3, 0x90, 0x00]);
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod echo;
mod in_process;
#[cfg(feature = "pcsc")]
pub mod pcsc;
pub mod vpcd;

pub use echo::EchoSlot;
pub use in_process::InProcess;

/// The card side of a reader: what a card (or card emulator) exposes.
///
/// Implementations must not panic on any command bytes: a malformed APDU is
/// answered with an ISO 7816-4 status word (e.g. `67 00`, `6D 00`).
pub trait CardSlot {
    /// Cold reset: power the card and return its ATR. Volatile state (selected
    /// applet, secure channel) starts fresh.
    fn power_on(&mut self) -> Vec<u8>;
    /// Remove power. Volatile state is lost; persistent state stays.
    fn power_off(&mut self);
    /// Warm reset: like power off + power on; returns the ATR.
    fn reset(&mut self) -> Vec<u8>;
    /// One command APDU in, one response APDU (data ‖ SW1 SW2) out.
    fn transmit(&mut self, command: &[u8]) -> Vec<u8>;
}

impl<T: CardSlot + ?Sized> CardSlot for &mut T {
    fn power_on(&mut self) -> Vec<u8> {
        (**self).power_on()
    }
    fn power_off(&mut self) {
        (**self).power_off()
    }
    fn reset(&mut self) -> Vec<u8> {
        (**self).reset()
    }
    fn transmit(&mut self, command: &[u8]) -> Vec<u8> {
        (**self).transmit(command)
    }
}

impl<T: CardSlot + ?Sized> CardSlot for Box<T> {
    fn power_on(&mut self) -> Vec<u8> {
        (**self).power_on()
    }
    fn power_off(&mut self) {
        (**self).power_off()
    }
    fn reset(&mut self) -> Vec<u8> {
        (**self).reset()
    }
    fn transmit(&mut self, command: &[u8]) -> Vec<u8> {
        (**self).transmit(command)
    }
}

/// The client side: how a wallet or phone reaches a card, whatever the
/// transport.
pub trait CardTransport {
    /// Sends one command APDU and returns the response APDU (data ‖ SW1 SW2,
    /// always at least two bytes).
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, TransportError>;

    /// The card's ATR as of the last connect or reset.
    fn atr(&self) -> &[u8];

    /// Resets the card and re-establishes the connection. All card session
    /// state (selected applet, secure channel) is gone afterwards. Use it to
    /// start over and to recover from [`TransportError::CardReset`].
    fn reset(&mut self) -> Result<(), TransportError>;
}

impl<T: CardTransport + ?Sized> CardTransport for &mut T {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, TransportError> {
        (**self).transmit(command)
    }
    fn atr(&self) -> &[u8] {
        (**self).atr()
    }
    fn reset(&mut self) -> Result<(), TransportError> {
        (**self).reset()
    }
}

impl<T: CardTransport + ?Sized> CardTransport for Box<T> {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, TransportError> {
        (**self).transmit(command)
    }
    fn atr(&self) -> &[u8] {
        (**self).atr()
    }
    fn reset(&mut self) -> Result<(), TransportError> {
        (**self).reset()
    }
}

/// Why a transport could not deliver a command or its response. Never
/// contains APDU contents.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// No reader is attached, or none matches the requested name.
    #[error("no card reader found")]
    NoReader,
    /// The reader is there but holds no card.
    #[error("no card in the reader")]
    NoCard,
    /// The card was removed during the session.
    #[error("card removed")]
    CardRemoved,
    /// The card was reset (by another application or the reader); session
    /// state is lost. Call [`CardTransport::reset`] and start over.
    #[error("card was reset; session state lost")]
    CardReset,
    /// The card does not answer (mute card, bad contact).
    #[error("card does not respond")]
    CardUnresponsive,
    /// Another application holds the reader exclusively.
    #[error("reader is in exclusive use by another application")]
    SharingViolation,
    /// The smart-card service (pcscd) is not running or went away.
    #[error("smart card service unavailable")]
    ServiceUnavailable,
    /// The command is longer than the transport can carry.
    #[error("command APDU too long ({len} bytes)")]
    CommandTooLong {
        /// Length of the refused command.
        len: usize,
    },
    /// The response is shorter than a status word.
    #[error("response APDU shorter than two bytes")]
    ResponseTooShort,
    /// Any other reader or stack failure, by name.
    #[error("reader error: {0}")]
    Reader(String),
}
