//! The card commands flow B uses (plain forms, before secure messaging) and
//! the parsing of their plain responses. Layouts are `kessai-card`'s
//! (`docs/CARD.md`).

use kessai_card::harness::HostDriver;
use kessai_card::records::{LOG_CAPACITY, LOG_RECORD_LEN};
use kessai_card::{AID, LogKind, LogRecord};
use kessai_scp03::CommandApdu;
use serde::{Deserialize, Serialize};

use crate::FlowError;
use crate::bytes;
use crate::registry::PurseOp;

/// SELECT the kessai applet by AID.
pub fn select() -> Vec<u8> {
    let mut apdu = vec![0x00, 0xA4, 0x04, 0x00, AID.len() as u8];
    apdu.extend_from_slice(&AID);
    apdu.push(0x00);
    apdu
}

/// READ BALANCE (the BRC).
pub(crate) fn read_balance() -> CommandApdu {
    CommandApdu::new(0x80, 0x5C, 0, 0, vec![]).with_le(256)
}

/// READ LOG of the `n` newest records (`n` ≤ 4 keeps a short Le).
pub(crate) fn read_log(n: u8) -> CommandApdu {
    let le = if n > 4 { 65_536 } else { 256 };
    CommandApdu::new(0x80, 0x5A, n, 0, vec![]).with_le(le)
}

/// DEBIT (the SPC) or CREDIT.
pub(crate) fn purse(
    op: PurseOp,
    amount_minor: u64,
    currency_numeric: u16,
    reference: [u8; 16],
    counterparty: [u8; 16],
) -> CommandApdu {
    HostDriver::purse_command(
        op == PurseOp::Debit,
        amount_minor,
        currency_numeric,
        reference,
        counterparty,
    )
}

/// The plain balance information BI from READ BALANCE.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalanceInfo {
    /// Balance, minor units.
    pub balance_minor: u64,
    /// ISO 4217 numeric currency.
    pub currency_numeric: u16,
    /// Transaction counter (last value consumed).
    pub counter: u32,
    /// Purse maximum, minor units.
    pub purse_max_minor: u64,
}

pub(crate) fn parse_balance(d: &[u8]) -> Result<BalanceInfo, FlowError> {
    if d.len() != 22 {
        return Err(FlowError::CardResponse("READ BALANCE length"));
    }
    let u64_at = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&d[i..i + 8]);
        u64::from_be_bytes(b)
    };
    Ok(BalanceInfo {
        balance_minor: u64_at(0),
        currency_numeric: u16::from_be_bytes([d[8], d[9]]),
        counter: u32::from_be_bytes([d[10], d[11], d[12], d[13]]),
        purse_max_minor: u64_at(14),
    })
}

/// One card log record in a serializable form (for the audit store upload
/// and recovery evidence).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardLogEntry {
    /// Counter value the operation consumed.
    pub counter: u32,
    /// Debit or credit.
    pub op: PurseOp,
    /// Amount, minor units.
    pub amount_minor: u64,
    /// ISO 4217 numeric currency.
    pub currency_numeric: u16,
    /// Balance after, minor units.
    pub balance_after_minor: u64,
    /// The host's reference (the ledger hold id).
    #[serde(with = "bytes::array")]
    pub reference: [u8; 16],
    /// The counterparty tag.
    #[serde(with = "bytes::array")]
    pub counterparty: [u8; 16],
}

impl From<LogRecord> for CardLogEntry {
    fn from(r: LogRecord) -> Self {
        Self {
            counter: r.counter,
            op: match r.kind {
                LogKind::Debit => PurseOp::Debit,
                LogKind::Credit => PurseOp::Credit,
            },
            amount_minor: r.amount_minor,
            currency_numeric: r.currency_numeric,
            balance_after_minor: r.balance_after_minor,
            reference: r.reference,
            counterparty: r.counterparty,
        }
    }
}

pub(crate) fn parse_record(d: &[u8]) -> Result<CardLogEntry, FlowError> {
    LogRecord::decode(d)
        .map(CardLogEntry::from)
        .ok_or(FlowError::CardResponse("log record layout"))
}

pub(crate) fn parse_log(d: &[u8]) -> Result<Vec<CardLogEntry>, FlowError> {
    if !d.len().is_multiple_of(LOG_RECORD_LEN) || d.len() / LOG_RECORD_LEN > LOG_CAPACITY {
        return Err(FlowError::CardResponse("READ LOG length"));
    }
    d.chunks(LOG_RECORD_LEN).map(parse_record).collect()
}

/// True if `apdu` is a command the wallet may relay without a signed host
/// instruction: SELECT of the kessai AID, INITIALIZE UPDATE, or EXTERNAL
/// AUTHENTICATE (the SCP03 handshake, which the card checks itself and
/// which moves no value).
pub fn is_handshake_command(apdu: &[u8]) -> bool {
    match apdu {
        [0x00, 0xA4, 0x04, 0x00, n, rest @ ..] => {
            usize::from(*n) == AID.len() && rest.len() == AID.len() + 1 && rest[..8] == AID
        }
        [0x80, 0x50, _, 0x00, 0x08, rest @ ..] => rest.len() == 9,
        [0x84, 0x82, _, 0x00, 0x10, rest @ ..] => rest.len() == 16,
        _ => false,
    }
}
