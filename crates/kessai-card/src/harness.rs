//! In-process host-side driver: the SCP03 host side of `kessai-scp03`
//! wired to a card through any [`ApduTransport`], with helpers for the
//! purse commands. Used by this crate's tests and reusable by flows and by
//! transports (PC/SC, virtual reader) that implement [`ApduTransport`].

use kessai_scp03::host::{HostHandshake, HostResponse, HostSession};
use kessai_scp03::{CommandApdu, Scp03Error, SecurityLevel, StaticKeys};

use crate::nvm::Nvm;
use crate::records::{LOG_RECORD_LEN, LogKind, LogRecord};
use crate::{AID, Card};

/// Anything that carries one command APDU to a card and returns its
/// response APDU.
pub trait ApduTransport {
    /// Sends `command`, returns data ‖ SW1 SW2.
    fn transmit_apdu(&mut self, command: &[u8]) -> Vec<u8>;
}

impl<N: Nvm> ApduTransport for Card<N> {
    fn transmit_apdu(&mut self, command: &[u8]) -> Vec<u8> {
        self.transmit(command)
    }
}

/// Failures seen by the host driver.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DriverError {
    /// Secure channel failure (wrong card cryptogram, bad R-MAC, ...).
    #[error(transparent)]
    Scp03(#[from] Scp03Error),
    /// The card answered an error status word.
    #[error("card returned status {0:04X}")]
    Status(u16),
    /// The card's answer does not match the command (amount, reference, ...).
    #[error("unexpected card response: {0}")]
    Unexpected(&'static str),
    /// No session is open.
    #[error("no secure channel session")]
    NoSession,
}

/// READ BALANCE result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BalanceInfo {
    /// Balance, minor units.
    pub balance_minor: u64,
    /// ISO 4217 numeric currency.
    pub currency_numeric: u16,
    /// Transaction counter.
    pub counter: u32,
    /// Purse maximum, minor units.
    pub purse_max_minor: u64,
}

/// Host driver holding the card's static keys and, once opened, a session.
#[derive(Debug)]
pub struct HostDriver {
    keys: StaticKeys,
    session: Option<HostSession>,
}

fn sw_of(r: &[u8]) -> u16 {
    match r {
        [.., a, b] => u16::from_be_bytes([*a, *b]),
        _ => 0,
    }
}

impl HostDriver {
    /// A driver for a card with these static keys.
    pub fn new(keys: StaticKeys) -> Self {
        Self {
            keys,
            session: None,
        }
    }

    /// The open session, if any.
    pub fn session(&self) -> Option<&HostSession> {
        self.session.as_ref()
    }

    /// SELECT the kessai applet (drops any session).
    pub fn select(&mut self, card: &mut impl ApduTransport) -> Result<(), DriverError> {
        self.session = None;
        let mut apdu = vec![0x00, 0xA4, 0x04, 0x00, AID.len() as u8];
        apdu.extend_from_slice(&AID);
        apdu.push(0x00);
        match sw_of(&card.transmit_apdu(&apdu)) {
            0x9000 => Ok(()),
            sw => Err(DriverError::Status(sw)),
        }
    }

    /// INITIALIZE UPDATE + EXTERNAL AUTHENTICATE at `level` with the given
    /// host challenge (from a CSPRNG in production).
    pub fn open(
        &mut self,
        card: &mut impl ApduTransport,
        level: SecurityLevel,
        host_challenge: [u8; 8],
    ) -> Result<(), DriverError> {
        self.session = None;
        let hs = HostHandshake::new(self.keys.version(), host_challenge);
        let resp = card.transmit_apdu(&hs.initialize_update());
        let parsed = hs.parse_response(&resp)?;
        let (pending, ea) = hs.authenticate(&parsed, &self.keys, level)?;
        let resp = card.transmit_apdu(&ea);
        self.session = Some(pending.confirm(&resp)?);
        Ok(())
    }

    /// Wraps, sends and unwraps one command in the session.
    pub fn send(
        &mut self,
        card: &mut impl ApduTransport,
        command: &CommandApdu,
    ) -> Result<HostResponse, DriverError> {
        let session = self.session.as_mut().ok_or(DriverError::NoSession)?;
        let wrapped = session.wrap(command)?;
        let resp = card.transmit_apdu(&wrapped);
        let out = session.unwrap(&resp);
        if session.is_closed() {
            self.session = None;
        }
        Ok(out?)
    }

    fn ok(
        &mut self,
        card: &mut impl ApduTransport,
        command: &CommandApdu,
    ) -> Result<Vec<u8>, DriverError> {
        let r = self.send(card, command)?;
        if r.sw != 0x9000 {
            return Err(DriverError::Status(r.sw));
        }
        Ok(r.data.to_vec())
    }

    /// READ BALANCE.
    pub fn read_balance(
        &mut self,
        card: &mut impl ApduTransport,
    ) -> Result<BalanceInfo, DriverError> {
        let d = self.ok(
            card,
            &CommandApdu::new(0x80, 0x5C, 0, 0, vec![]).with_le(256),
        )?;
        if d.len() != 22 {
            return Err(DriverError::Unexpected("READ BALANCE length"));
        }
        Ok(BalanceInfo {
            balance_minor: u64::from_be_bytes(d[0..8].try_into().expect("8")),
            currency_numeric: u16::from_be_bytes([d[8], d[9]]),
            counter: u32::from_be_bytes(d[10..14].try_into().expect("4")),
            purse_max_minor: u64::from_be_bytes(d[14..22].try_into().expect("8")),
        })
    }

    /// The DEBIT / CREDIT command for `amount_minor` in the card's currency.
    pub fn purse_command(
        ins_debit: bool,
        amount_minor: u64,
        currency_numeric: u16,
        reference: [u8; 16],
        counterparty: [u8; 16],
    ) -> CommandApdu {
        let mut data = Vec::with_capacity(42);
        data.extend_from_slice(&amount_minor.to_be_bytes());
        data.extend_from_slice(&currency_numeric.to_be_bytes());
        data.extend_from_slice(&reference);
        data.extend_from_slice(&counterparty);
        CommandApdu::new(0x80, if ins_debit { 0x54 } else { 0x52 }, 0, 0, data).with_le(256)
    }

    fn purse(
        &mut self,
        card: &mut impl ApduTransport,
        kind: LogKind,
        amount_minor: u64,
        reference: [u8; 16],
        counterparty: [u8; 16],
    ) -> Result<LogRecord, DriverError> {
        let currency = self.read_balance(card)?.currency_numeric;
        let cmd = Self::purse_command(
            kind == LogKind::Debit,
            amount_minor,
            currency,
            reference,
            counterparty,
        );
        let d = self.ok(card, &cmd)?;
        let rec = LogRecord::decode(&d).ok_or(DriverError::Unexpected("PCN layout"))?;
        // The PCN must name exactly the operation we asked for.
        if rec.kind != kind
            || rec.amount_minor != amount_minor
            || rec.reference != reference
            || rec.counterparty != counterparty
            || rec.currency_numeric != currency
        {
            return Err(DriverError::Unexpected("PCN does not match the command"));
        }
        Ok(rec)
    }

    /// DEBIT; returns the verified PCN (the log record the card wrote).
    /// Open the session at [`SecurityLevel::Full`] for the PCN to be
    /// authenticated by R-MAC.
    pub fn debit(
        &mut self,
        card: &mut impl ApduTransport,
        amount_minor: u64,
        reference: [u8; 16],
        counterparty: [u8; 16],
    ) -> Result<LogRecord, DriverError> {
        self.purse(card, LogKind::Debit, amount_minor, reference, counterparty)
    }

    /// CREDIT (value update); returns the verified log record.
    pub fn credit(
        &mut self,
        card: &mut impl ApduTransport,
        amount_minor: u64,
        reference: [u8; 16],
        counterparty: [u8; 16],
    ) -> Result<LogRecord, DriverError> {
        self.purse(card, LogKind::Credit, amount_minor, reference, counterparty)
    }

    /// READ LOG: up to `n` most recent records, newest first (extended
    /// length when more than 4 are asked for).
    pub fn read_log(
        &mut self,
        card: &mut impl ApduTransport,
        n: u8,
    ) -> Result<Vec<LogRecord>, DriverError> {
        let le = if n > 4 { 65_536 } else { 256 };
        let d = self.ok(
            card,
            &CommandApdu::new(0x80, 0x5A, n, 0, vec![]).with_le(le),
        )?;
        if d.len() % LOG_RECORD_LEN != 0 {
            return Err(DriverError::Unexpected("READ LOG length"));
        }
        d.chunks(LOG_RECORD_LEN)
            .map(|c| LogRecord::decode(c).ok_or(DriverError::Unexpected("log record layout")))
            .collect()
    }
}
