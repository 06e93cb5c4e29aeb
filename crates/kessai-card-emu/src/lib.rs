//! The IC-card emulator's I/O side (the applet itself is the pure
//! `kessai-card`): [`FileNvm`] keeps the card's non-volatile memory in a
//! state file with atomic replace-on-write, so a killed emulator behaves
//! like a card pulled from the reader.
//!
//! [`EmulatedCard`] puts the applet in a reader slot (in-process or the
//! vpcd virtual reader of pcsc-lite); [`Relay`] lets the issuer's host-side
//! driver reach a card through any transport (PC/SC included).
//!
//! What it does not do: interpret APDUs (the applet does) or implement the
//! transports (`kessai-card-io` does).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod file_nvm;
pub mod slot;

pub use file_nvm::{FileNvm, FileNvmError};
pub use slot::{EmulatedCard, Relay};
