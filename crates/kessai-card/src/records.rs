//! Persistent card state: record layouts in [`Nvm`](crate::Nvm), and the
//! journal that makes a multi-record purse update atomic.
//!
//! Journal (redo log): an update of several records is first written as one
//! `JOURNAL` record (the list of new record values plus a SHA-256 check
//! value) — that single atomic write is the commit point — then each record
//! is written, then the journal is erased. At power-up, a journal that is
//! present is applied again (writes are whole-record replacements, so
//! re-applying is harmless) and erased. A power cut before the journal write
//! leaves the old state, after it the new state.

use kessai_scp03::{AesKey, StaticKeys};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::CardError;
use crate::nvm::{Nvm, NvmError, RecordId};

/// Record: identity and keys (written at personalization only).
pub const REC_IDENTITY: RecordId = RecordId(0x0001);
/// Record: lifecycle state (1 byte).
pub const REC_LIFECYCLE: RecordId = RecordId(0x0002);
/// Record: purse (balance, transaction counter, log ring position).
pub const REC_PURSE: RecordId = RecordId(0x0003);
/// Record: PIN verification data and try counter.
pub const REC_PIN: RecordId = RecordId(0x0004);
/// Record: SCP03 sequence counter (pseudo-random card challenges).
pub const REC_SEQUENCE: RecordId = RecordId(0x0005);
/// Record: challenge generator reservation.
pub const REC_RNG: RecordId = RecordId(0x0006);
/// Record: fingerprint reference template and its try counter (claim 16).
pub const REC_BIO: RecordId = RecordId(0x0007);
/// Record: the journal.
pub const REC_JOURNAL: RecordId = RecordId(0x00FF);
/// First log slot record; slot `i` is `LOG_BASE + i`.
pub const LOG_BASE: u16 = 0x0100;
/// Number of log slots (the bounded log ring).
pub const LOG_CAPACITY: usize = 16;
/// Encoded length of one log record.
pub const LOG_RECORD_LEN: usize = 55;

const FORMAT_VERSION: u8 = 1;

/// Lifecycle of the purse application.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifecycle {
    /// Issued and usable.
    Personalized,
    /// Blocked by the issuer: no purse operation or cryptogram; can be
    /// unblocked.
    Blocked,
    /// Permanently terminated.
    Terminated,
}

impl Lifecycle {
    /// Wire byte (SET STATUS P2, READ CARD DATA tag DF04).
    pub fn byte(self) -> u8 {
        match self {
            Self::Personalized => 0x01,
            Self::Blocked => 0x02,
            Self::Terminated => 0x03,
        }
    }
    /// Parses the wire byte.
    pub fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            0x01 => Self::Personalized,
            0x02 => Self::Blocked,
            0x03 => Self::Terminated,
            _ => return None,
        })
    }
}

/// What a log record records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogKind {
    /// Value left the purse (DEBIT).
    Debit,
    /// Value was loaded (CREDIT).
    Credit,
}

/// One entry of the card's transaction log; also the data of the DEBIT /
/// CREDIT response (the Processing Completion Notification).
///
/// Layout (55 bytes, big-endian): counter (4) ‖ kind (1: `01` debit, `02`
/// credit) ‖ amount (8) ‖ currency numeric (2) ‖ balance after (8) ‖
/// transaction reference (16) ‖ counterparty (16).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogRecord {
    /// Transaction counter value this operation consumed.
    pub counter: u32,
    /// Debit or credit.
    pub kind: LogKind,
    /// Amount in minor units (> 0).
    pub amount_minor: u64,
    /// ISO 4217 numeric currency code.
    pub currency_numeric: u16,
    /// Balance after the operation, minor units.
    pub balance_after_minor: u64,
    /// The host's 16-byte transaction reference.
    pub reference: [u8; 16],
    /// Opaque 16 bytes from the host (store / issuer reference).
    pub counterparty: [u8; 16],
}

impl LogRecord {
    /// Encodes the 55-byte layout.
    pub fn encode(&self) -> [u8; LOG_RECORD_LEN] {
        let mut out = [0u8; LOG_RECORD_LEN];
        out[0..4].copy_from_slice(&self.counter.to_be_bytes());
        out[4] = match self.kind {
            LogKind::Debit => 0x01,
            LogKind::Credit => 0x02,
        };
        out[5..13].copy_from_slice(&self.amount_minor.to_be_bytes());
        out[13..15].copy_from_slice(&self.currency_numeric.to_be_bytes());
        out[15..23].copy_from_slice(&self.balance_after_minor.to_be_bytes());
        out[23..39].copy_from_slice(&self.reference);
        out[39..55].copy_from_slice(&self.counterparty);
        out
    }

    /// Decodes the 55-byte layout.
    pub fn decode(b: &[u8]) -> Option<Self> {
        if b.len() != LOG_RECORD_LEN {
            return None;
        }
        let kind = match b[4] {
            0x01 => LogKind::Debit,
            0x02 => LogKind::Credit,
            _ => return None,
        };
        Some(Self {
            counter: u32::from_be_bytes(b[0..4].try_into().ok()?),
            kind,
            amount_minor: u64::from_be_bytes(b[5..13].try_into().ok()?),
            currency_numeric: u16::from_be_bytes(b[13..15].try_into().ok()?),
            balance_after_minor: u64::from_be_bytes(b[15..23].try_into().ok()?),
            reference: b[23..39].try_into().ok()?,
            counterparty: b[39..55].try_into().ok()?,
        })
    }
}

/// Cardholder settlement data for flow D (readable in clear, like EMV).
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct StoredCardholder {
    pub(crate) pan: Zeroizing<Vec<u8>>,
    pub(crate) expiry_yymm: [u8; 4],
    pub(crate) name: String,
}

/// Identity and keys; written once.
#[derive(Clone)]
pub(crate) struct Identity {
    pub(crate) card_id: String,
    pub(crate) currency_numeric: u16,
    pub(crate) purse_max_minor: u64,
    pub(crate) keys: StaticKeys,
    pub(crate) cryptogram_key: AesKey,
    pub(crate) pin_key: Zeroizing<[u8; 32]>,
    pub(crate) rng_key: Zeroizing<[u8; 32]>,
    pub(crate) cardholder: Option<StoredCardholder>,
}

/// Purse state: the part a transaction changes together with one log slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Purse {
    pub(crate) balance_minor: u64,
    pub(crate) counter: u32,
    /// Ring slot the next log record goes to.
    pub(crate) log_next: u16,
    /// Number of valid log records (≤ LOG_CAPACITY).
    pub(crate) log_count: u16,
}

/// Verification reference data — the PIN verifier, the fingerprint
/// template — with its persistent try counter (`tries_left ≤ max_tries`).
/// Never leaves the card: no command reads it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Reference<D> {
    pub(crate) tries_left: u8,
    pub(crate) max_tries: u8,
    pub(crate) data: D,
}

/// PIN verification data: a keyed hash of the PIN.
pub(crate) type PinState = Reference<[u8; 32]>;

/// Biometric reference data: an ISO/IEC 19794-2 finger minutiae record
/// enrolled at personalization.
pub(crate) type BioState = Reference<Zeroizing<Vec<u8>>>;

// ---- byte encoding helpers ----

#[derive(Default)]
pub(crate) struct Writer(pub(crate) Vec<u8>);

impl Writer {
    pub(crate) fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    pub(crate) fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub(crate) fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub(crate) fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub(crate) fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.u16(v.len() as u16);
        self.0.extend_from_slice(v);
        self
    }
}

pub(crate) struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    pub(crate) fn new(b: &'a [u8]) -> Self {
        Self(b)
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], CardError> {
        if self.0.len() < n {
            return Err(CardError::Corrupt("record too short"));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    pub(crate) fn u8(&mut self) -> Result<u8, CardError> {
        Ok(self.take(1)?[0])
    }
    pub(crate) fn u16(&mut self) -> Result<u16, CardError> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().expect("2")))
    }
    pub(crate) fn u32(&mut self) -> Result<u32, CardError> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().expect("4")))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, CardError> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().expect("8")))
    }
    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], CardError> {
        let n = usize::from(self.u16()?);
        self.take(n)
    }
    pub(crate) fn end(&self) -> Result<(), CardError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(CardError::Corrupt("trailing bytes in record"))
        }
    }
}

impl Identity {
    pub(crate) fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut w = Writer::default();
        w.u8(FORMAT_VERSION)
            .bytes(self.card_id.as_bytes())
            .u16(self.currency_numeric)
            .u64(self.purse_max_minor)
            .u8(self.keys.version())
            .bytes(self.keys.enc().expose())
            .bytes(self.keys.mac().expose())
            .bytes(self.keys.dek().expose())
            .bytes(self.cryptogram_key.expose())
            .bytes(&self.pin_key[..])
            .bytes(&self.rng_key[..]);
        match &self.cardholder {
            None => {
                w.u8(0);
            }
            Some(c) => {
                w.u8(1)
                    .bytes(&c.pan)
                    .bytes(&c.expiry_yymm)
                    .bytes(c.name.as_bytes());
            }
        }
        Zeroizing::new(w.0)
    }

    pub(crate) fn decode(b: &[u8]) -> Result<Self, CardError> {
        let mut r = Reader::new(b);
        if r.u8()? != FORMAT_VERSION {
            return Err(CardError::Corrupt("unknown identity format"));
        }
        let card_id = String::from_utf8(r.bytes()?.to_vec())
            .map_err(|_| CardError::Corrupt("card id not UTF-8"))?;
        let currency_numeric = r.u16()?;
        let purse_max_minor = r.u64()?;
        let version = r.u8()?;
        let key = |r: &mut Reader| {
            AesKey::from_slice(r.bytes()?).map_err(|_| CardError::Corrupt("key length"))
        };
        let enc = key(&mut r)?;
        let mac = key(&mut r)?;
        let dek = key(&mut r)?;
        let keys = StaticKeys::new(enc, mac, dek, version)
            .map_err(|_| CardError::Corrupt("key set lengths"))?;
        let cryptogram_key = key(&mut r)?;
        let pin_key: [u8; 32] = r
            .bytes()?
            .try_into()
            .map_err(|_| CardError::Corrupt("PIN key length"))?;
        let rng_key: [u8; 32] = r
            .bytes()?
            .try_into()
            .map_err(|_| CardError::Corrupt("RNG key length"))?;
        let cardholder = match r.u8()? {
            0 => None,
            1 => {
                let pan = Zeroizing::new(r.bytes()?.to_vec());
                let expiry_yymm: [u8; 4] = r
                    .bytes()?
                    .try_into()
                    .map_err(|_| CardError::Corrupt("expiry length"))?;
                let name = String::from_utf8(r.bytes()?.to_vec())
                    .map_err(|_| CardError::Corrupt("name not UTF-8"))?;
                Some(StoredCardholder {
                    pan,
                    expiry_yymm,
                    name,
                })
            }
            _ => return Err(CardError::Corrupt("cardholder flag")),
        };
        r.end()?;
        Ok(Self {
            card_id,
            currency_numeric,
            purse_max_minor,
            keys,
            cryptogram_key,
            pin_key: Zeroizing::new(pin_key),
            rng_key: Zeroizing::new(rng_key),
            cardholder,
        })
    }
}

impl Purse {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(FORMAT_VERSION)
            .u64(self.balance_minor)
            .u32(self.counter)
            .u16(self.log_next)
            .u16(self.log_count);
        w.0
    }
    pub(crate) fn decode(b: &[u8]) -> Result<Self, CardError> {
        let mut r = Reader::new(b);
        if r.u8()? != FORMAT_VERSION {
            return Err(CardError::Corrupt("unknown purse format"));
        }
        let p = Self {
            balance_minor: r.u64()?,
            counter: r.u32()?,
            log_next: r.u16()?,
            log_count: r.u16()?,
        };
        r.end()?;
        if usize::from(p.log_next) >= LOG_CAPACITY || usize::from(p.log_count) > LOG_CAPACITY {
            return Err(CardError::Corrupt("log ring position"));
        }
        Ok(p)
    }
}

impl<D: AsRef<[u8]> + Clone> Reference<D> {
    /// A fresh reference with all `max_tries` tries.
    pub(crate) fn new(max_tries: u8, data: D) -> Self {
        Self {
            tries_left: max_tries,
            max_tries,
            data,
        }
    }
    pub(crate) fn with_tries(&self, tries_left: u8) -> Self {
        Self {
            tries_left,
            ..self.clone()
        }
    }
    /// `version ‖ tries left ‖ max tries ‖ data`.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(FORMAT_VERSION).u8(self.tries_left).u8(self.max_tries);
        w.0.extend_from_slice(self.data.as_ref());
        w.0
    }
    /// Decodes [`Self::encode`]'s output; `data` validates the data bytes.
    /// `errors`: how an unknown format version, and a bad counter or data,
    /// are reported.
    pub(crate) fn decode(
        b: &[u8],
        errors: (&'static str, &'static str),
        data: impl FnOnce(&[u8]) -> Option<D>,
    ) -> Result<Self, CardError> {
        let &[version, tries_left, max_tries, ref rest @ ..] = b else {
            return Err(CardError::Corrupt("record too short"));
        };
        if version != FORMAT_VERSION {
            return Err(CardError::Corrupt(errors.0));
        }
        let data = data(rest)
            .filter(|_| tries_left <= max_tries)
            .ok_or(CardError::Corrupt(errors.1))?;
        Ok(Self {
            tries_left,
            max_tries,
            data,
        })
    }
}

impl PinState {
    pub(crate) fn decode_pin(b: &[u8]) -> Result<Self, CardError> {
        Self::decode(b, ("unknown PIN format", "PIN record"), |d| {
            d.try_into().ok()
        })
    }
}

impl BioState {
    pub(crate) fn decode_bio(b: &[u8]) -> Result<Self, CardError> {
        Self::decode(b, ("unknown biometric format", "biometric record"), |d| {
            (!d.is_empty()).then(|| Zeroizing::new(d.to_vec()))
        })
    }
}

/// Record id of log slot `i`.
pub(crate) fn log_slot(i: u16) -> RecordId {
    RecordId(LOG_BASE + i)
}

fn journal_encode(entries: &[(RecordId, Vec<u8>)]) -> Vec<u8> {
    let mut w = Writer::default();
    w.u8(FORMAT_VERSION).u8(entries.len() as u8);
    for (id, data) in entries {
        w.u16(id.0).bytes(data);
    }
    let check = Sha256::digest(&w.0);
    w.0.extend_from_slice(&check[..8]);
    w.0
}

fn journal_decode(b: &[u8]) -> Option<Vec<(RecordId, Vec<u8>)>> {
    if b.len() < 10 {
        return None;
    }
    let (body, check) = b.split_at(b.len() - 8);
    if Sha256::digest(body)[..8] != *check {
        return None;
    }
    let mut r = Reader::new(body);
    if r.u8().ok()? != FORMAT_VERSION {
        return None;
    }
    let n = r.u8().ok()?;
    let mut out = Vec::with_capacity(usize::from(n));
    for _ in 0..n {
        let id = RecordId(r.u16().ok()?);
        let data = r.bytes().ok()?.to_vec();
        out.push((id, data));
    }
    r.end().ok()?;
    Some(out)
}

/// Commits `entries` atomically: journal, records, erase journal
/// (`2 + entries.len()` writes).
pub(crate) fn commit<N: Nvm>(nvm: &mut N, entries: &[(RecordId, Vec<u8>)]) -> Result<(), NvmError> {
    nvm.write(REC_JOURNAL, &journal_encode(entries))?;
    for (id, data) in entries {
        nvm.write(*id, data)?;
    }
    nvm.erase(REC_JOURNAL)
}

/// Power-up recovery: re-applies a committed journal, drops a damaged one.
pub(crate) fn recover<N: Nvm>(nvm: &mut N) -> Result<(), CardError> {
    let Some(raw) = nvm.read(REC_JOURNAL)? else {
        return Ok(());
    };
    if let Some(entries) = journal_decode(&raw) {
        for (id, data) in &entries {
            nvm.write(*id, data)?;
        }
    }
    // A journal that does not verify was never committed (only possible
    // with an NVM that breaks the atomic-write contract): old state stands.
    nvm.erase(REC_JOURNAL)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nvm::MemNvm;

    #[test]
    fn log_record_round_trips() {
        let r = LogRecord {
            counter: 7,
            kind: LogKind::Credit,
            amount_minor: 1234,
            currency_numeric: 392,
            balance_after_minor: 5000,
            reference: [1; 16],
            counterparty: [2; 16],
        };
        assert_eq!(LogRecord::decode(&r.encode()), Some(r));
        let mut bad = r.encode();
        bad[4] = 9;
        assert_eq!(LogRecord::decode(&bad), None);
        assert_eq!(LogRecord::decode(&bad[..54]), None);
    }

    #[test]
    fn journal_commit_and_recovery() {
        let mut m = MemNvm::new();
        let entries = vec![
            (RecordId(10), b"new-a".to_vec()),
            (RecordId(11), b"new-b".to_vec()),
        ];
        for k in 0..4 {
            let mut n = m.clone();
            n.write(RecordId(10), b"old-a").unwrap();
            n.write(RecordId(11), b"old-b").unwrap();
            n.cut_power_after(k);
            assert!(commit(&mut n, &entries).is_err());
            n.restore_power();
            recover(&mut n).unwrap();
            let a = n.read(RecordId(10)).unwrap().unwrap();
            let b = n.read(RecordId(11)).unwrap().unwrap();
            if k == 0 {
                assert_eq!((a.as_slice(), b.as_slice()), (&b"old-a"[..], &b"old-b"[..]));
            } else {
                assert_eq!((a.as_slice(), b.as_slice()), (&b"new-a"[..], &b"new-b"[..]));
            }
            assert_eq!(n.read(REC_JOURNAL).unwrap(), None);
        }
        commit(&mut m, &entries).unwrap();
        assert_eq!(m.read(REC_JOURNAL).unwrap(), None);
        // A damaged journal is discarded.
        m.write(REC_JOURNAL, b"garbage-garbage").unwrap();
        recover(&mut m).unwrap();
        assert_eq!(m.read(REC_JOURNAL).unwrap(), None);
        assert_eq!(m.read(RecordId(10)).unwrap().unwrap(), b"new-a");
    }
}
