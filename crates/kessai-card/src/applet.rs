//! The applet: command dispatch, secure messaging, and one handler per
//! command. Persistent state is mirrored in RAM and changed only after the
//! NVM write succeeded; after any NVM failure the card goes mute (answers
//! `6581`) until the next power-up, which recovers from the journal.

use iso7816::Status;
use iso7816::command::{CommandView, FromSliceError};
use kessai_ids::CardId;
use kessai_money::{Currency, Money};
use kessai_scp03::card::{self as scp, CardChallenge, CardHandshake, CardSession};
use kessai_scp03::keys::{KDD_LEN, kdd_for_card_id};
use kessai_scp03::{AesKey, Scp03Error, SecurityLevel};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::nvm::{Nvm, NvmError};
use crate::records::{
    BioState, Identity, LOG_CAPACITY, Lifecycle, LogKind, LogRecord, PinState, Purse, REC_BIO,
    REC_IDENTITY, REC_LIFECYCLE, REC_PIN, REC_PURSE, REC_RNG, REC_SEQUENCE, Reader, Reference,
    StoredCardholder, Writer, commit, log_slot, recover,
};
use crate::{AID, CardError, PersonalizationParams, application_cryptogram, atr, pin_verifier};

const INS_SELECT: u8 = 0xA4;
const INS_INITIALIZE_UPDATE: u8 = 0x50;
const INS_EXTERNAL_AUTHENTICATE: u8 = 0x82;
const INS_GET_CHALLENGE: u8 = 0x84;
const INS_VERIFY: u8 = 0x20;
/// VERIFY with BER-TLV data (ISO/IEC 7816-4 odd INS), used for biometric
/// verification data as in ISO/IEC 7816-11.
const INS_VERIFY_BIO: u8 = 0x21;
/// VERIFY P2 of the fingerprint reference (specific reference data 1).
const P2_BIO_REFERENCE: u8 = 0x81;
/// Tag of the biometric data template (ISO/IEC 7816-11) and of the
/// biometric data inside it.
const TAG_BIO_TEMPLATE: [u8; 2] = [0x7F, 0x2E];
const TAG_BIO_DATA: u8 = 0x81;
const INS_READ_BALANCE: u8 = 0x5C;
const INS_DEBIT: u8 = 0x54;
const INS_CREDIT: u8 = 0x52;
const INS_READ_LOG: u8 = 0x5A;
const INS_GENERATE_CRYPTOGRAM: u8 = 0xAE;
const INS_READ_CARD_DATA: u8 = 0xCA;
const INS_SET_STATUS: u8 = 0xF0;

/// Length of DEBIT / CREDIT command data.
const PURSE_DATA_LEN: usize = 42;
/// Log records per READ LOG with a short Le (fits 256 bytes with R-ENC + R-MAC).
const READ_LOG_SHORT_MAX: usize = 4;
/// Challenge-generator values reserved per NVM write.
const RNG_BLOCK: u64 = 256;

const SW_MEMORY_FAILURE: Status = Status::MemoryFailure;

/// Persistent state, mirrored from NVM.
struct Persistent {
    identity: Identity,
    kdd: [u8; KDD_LEN],
    lifecycle: Lifecycle,
    purse: Purse,
    log: Vec<Option<LogRecord>>,
    pin: Option<PinState>,
    bio: Option<BioState>,
    /// Next SCP03 sequence counter value to use.
    sequence: u32,
    /// Challenge-generator values below this are reserved (used or in use).
    rng_reserved: u64,
}

/// Volatile state: lost at power-off.
#[derive(Default)]
struct Volatile {
    powered: bool,
    /// An NVM write failed: refuse everything until the next power-up.
    mute: bool,
    selected: bool,
    handshake: Option<CardHandshake>,
    session: Option<CardSession>,
    pin_verified: bool,
    /// A live fingerprint matched the reference since the last SELECT.
    bio_verified: bool,
    rng_next: u64,
    rng_end: u64,
}

/// One command after parsing and (if secured) unwrapping.
struct Cmd<'a> {
    cla: u8,
    ins: u8,
    p1: u8,
    p2: u8,
    data: &'a [u8],
    le: usize,
    extended: bool,
    secured: Option<SecurityLevel>,
}

/// The card: applet logic over a non-volatile memory `N`.
pub struct Card<N: Nvm> {
    nvm: N,
    p: Persistent,
    v: Volatile,
}

impl<N: Nvm> std::fmt::Debug for Card<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Card({}, counter {}, powered {})",
            self.p.identity.card_id, self.p.purse.counter, self.v.powered
        )
    }
}

/// Read-only view of a card for display (`kessai card show`): no keys, the
/// PAN masked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CardSnapshot {
    /// The applet AID.
    pub aid: [u8; 8],
    /// Card id.
    pub card_id: CardId,
    /// SCP03 key version.
    pub key_version: u8,
    /// Balance.
    pub balance: Money,
    /// Purse maximum.
    pub purse_max: Money,
    /// Transaction counter (last value consumed).
    pub counter: u32,
    /// Lifecycle state.
    pub lifecycle: Lifecycle,
    /// Log records, newest first.
    pub log: Vec<LogRecord>,
    /// PAN as BIN + last 4, if cardholder data is present.
    pub pan_masked: Option<String>,
    /// PIN tries left, if a PIN is set.
    pub pin_tries_left: Option<u8>,
    /// Fingerprint comparison tries left, if a fingerprint is enrolled.
    pub fingerprint_tries_left: Option<u8>,
}

fn nvm_status(_: NvmError) -> Status {
    SW_MEMORY_FAILURE
}

impl Persistent {
    fn load<N: Nvm>(nvm: &N) -> Result<Self, CardError> {
        let identity =
            Identity::decode(&nvm.read(REC_IDENTITY)?.ok_or(CardError::NotPersonalized)?)?;
        let lifecycle = nvm
            .read(REC_LIFECYCLE)?
            .and_then(|b| (b.len() == 1).then(|| Lifecycle::from_byte(b[0])).flatten())
            .ok_or(CardError::Corrupt("lifecycle"))?;
        let purse = Purse::decode(
            &nvm.read(REC_PURSE)?
                .ok_or(CardError::Corrupt("purse missing"))?,
        )?;
        let mut log = vec![None; LOG_CAPACITY];
        for (i, slot) in log.iter_mut().enumerate() {
            if let Some(b) = nvm.read(log_slot(i as u16))? {
                *slot = Some(LogRecord::decode(&b).ok_or(CardError::Corrupt("log record"))?);
            }
        }
        for i in 0..usize::from(purse.log_count) {
            let idx = (usize::from(purse.log_next) + LOG_CAPACITY - 1 - i) % LOG_CAPACITY;
            if log[idx].is_none() {
                return Err(CardError::Corrupt("log record missing"));
            }
        }
        let pin = match nvm.read(REC_PIN)? {
            Some(b) => Some(PinState::decode_pin(&b)?),
            None => None,
        };
        let bio = match nvm.read(REC_BIO)? {
            Some(b) => Some(BioState::decode_bio(&b)?),
            None => None,
        };
        // Values the rest of the applet relies on without re-checking.
        if CardId::new(identity.card_id.clone()).is_err() {
            return Err(CardError::Corrupt("card id"));
        }
        if Currency::from_numeric(identity.currency_numeric).is_err() {
            return Err(CardError::Corrupt("currency"));
        }
        if identity.purse_max_minor > i64::MAX as u64
            || purse.balance_minor > identity.purse_max_minor
        {
            return Err(CardError::Corrupt("balance out of range"));
        }
        let sequence = u32::try_from(read_u64(nvm, REC_SEQUENCE)?)
            .map_err(|_| CardError::Corrupt("sequence counter"))?;
        let rng_reserved = read_u64(nvm, REC_RNG)?;
        let kdd = kdd_for_card_id(&identity.card_id);
        Ok(Self {
            identity,
            kdd,
            lifecycle,
            purse,
            log,
            pin,
            bio,
            sequence,
            rng_reserved,
        })
    }

    fn log_newest_first(&self, n: usize) -> Vec<LogRecord> {
        (0..n.min(usize::from(self.purse.log_count)))
            .filter_map(|i| {
                let idx = (usize::from(self.purse.log_next) + LOG_CAPACITY - 1 - i) % LOG_CAPACITY;
                self.log[idx]
            })
            .collect()
    }
}

fn read_u64<N: Nvm>(nvm: &N, id: crate::RecordId) -> Result<u64, CardError> {
    match nvm.read(id)? {
        None => Ok(0),
        Some(b) => {
            let mut r = Reader::new(&b);
            let v = r.u64()?;
            r.end()?;
            Ok(v)
        }
    }
}

fn u64_record(v: u64) -> Vec<u8> {
    let mut w = Writer::default();
    w.u64(v);
    w.0
}

fn scp_status(e: &Scp03Error) -> Status {
    match e {
        Scp03Error::HostCryptogramMismatch => Status::VerificationFailed,
        Scp03Error::MacMismatch | Scp03Error::NotSecured => Status::SecurityStatusNotSatisfied,
        Scp03Error::Padding | Scp03Error::BlockLength => {
            Status::IncorrectSecureMessagingDataObjects
        }
        Scp03Error::KeyVersionMismatch { .. } => Status::KeyReferenceNotFound,
        Scp03Error::SecurityLevelNotSupported(_) => Status::IncorrectP1OrP2Parameter,
        Scp03Error::CounterExhausted => Status::ConditionsOfUseNotSatisfied,
        _ => Status::WrongLength,
    }
}

/// Encodes a BER-TLV with a one- or two-byte tag and a short length.
/// Appends a BER-TLV with a definite length (values up to 65 535 bytes).
fn tlv(out: &mut Vec<u8>, tag: &[u8], value: &[u8]) {
    out.extend_from_slice(tag);
    match value.len() {
        n @ 0..=0x7F => out.push(n as u8),
        n @ 0x80..=0xFF => out.extend_from_slice(&[0x81, n as u8]),
        n => out.extend_from_slice(&[0x82, (n >> 8) as u8, n as u8]),
    }
    out.extend_from_slice(value);
}

/// Packs ASCII digits as BCD, padding an odd count with `F`.
/// VERIFY with empty data: `9000` if verified since SELECT, else the tries
/// left (`63Cx`) or blocked (`6983`).
fn verification_status(verified: bool, tries_left: u8) -> Result<(), Status> {
    if verified {
        Ok(())
    } else if tries_left == 0 {
        Err(Status::OperationBlocked)
    } else {
        Err(Status::RemainingRetries(tries_left))
    }
}

/// Reads one BER-TLV length at the start of `b`: (length, bytes used).
fn ber_length(b: &[u8]) -> Option<(usize, usize)> {
    match *b.first()? {
        n @ 0..=0x7F => Some((usize::from(n), 1)),
        0x81 => Some((usize::from(*b.get(1)?), 2)),
        0x82 => Some((usize::from(u16::from_be_bytes([*b.get(1)?, *b.get(2)?])), 3)),
        _ => None,
    }
}

/// The biometric data of a `7F2E L { 81 L data }` template filling all of
/// `b` (nothing before, between or after).
fn biometric_data(b: &[u8]) -> Option<&[u8]> {
    let rest = b.strip_prefix(&TAG_BIO_TEMPLATE)?;
    let (outer, used) = ber_length(rest)?;
    let inner = rest.get(used..)?;
    if inner.len() != outer {
        return None;
    }
    let inner = inner.strip_prefix(&[TAG_BIO_DATA])?;
    let (n, used) = ber_length(inner)?;
    let data = inner.get(used..)?;
    (data.len() == n && n > 0).then_some(data)
}

/// Wraps an ISO/IEC 19794-2 record as VERIFY (biometric) command data:
/// `7F2E L { 81 L record }`.
pub fn biometric_verify_data(record: &[u8]) -> Vec<u8> {
    let mut inner = Vec::with_capacity(record.len() + 4);
    tlv(&mut inner, &[TAG_BIO_DATA], record);
    let mut out = Vec::with_capacity(inner.len() + 5);
    tlv(&mut out, &TAG_BIO_TEMPLATE, &inner);
    out
}

fn bcd(digits: &[u8]) -> Vec<u8> {
    digits
        .chunks(2)
        .map(|c| {
            let hi = c[0] - b'0';
            let lo = c.get(1).map_or(0x0F, |d| d - b'0');
            (hi << 4) | lo
        })
        .collect()
}

fn last_day_of_month(yy: u8, mm: u8) -> u8 {
    match mm {
        2 if yy.is_multiple_of(4) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Parses an ISO 9564 format-2 (EMV plaintext offline) PIN block into
/// ASCII digits.
fn parse_pin_block(b: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    if b.len() != 8 || b[0] >> 4 != 0x2 {
        return None;
    }
    let n = usize::from(b[0] & 0x0F);
    if !(4..=12).contains(&n) {
        return None;
    }
    let mut digits = Zeroizing::new(Vec::with_capacity(n));
    for i in 0..14 {
        let byte = b[1 + i / 2];
        let nib = if i % 2 == 0 { byte >> 4 } else { byte & 0x0F };
        if i < n {
            if nib > 9 {
                return None;
            }
            digits.push(b'0' + nib);
        } else if nib != 0x0F {
            return None;
        }
    }
    Some(digits)
}

/// Encodes ASCII PIN digits as an ISO 9564 format-2 PIN block (what a
/// terminal sends in VERIFY).
pub fn format2_pin_block(digits: &[u8]) -> [u8; 8] {
    let mut nibbles = [0x0Fu8; 14];
    for (i, d) in digits.iter().take(12).enumerate() {
        nibbles[i] = d.wrapping_sub(b'0') & 0x0F;
    }
    let mut out = [0u8; 8];
    out[0] = 0x20 | (digits.len().min(12) as u8);
    for i in 0..7 {
        out[1 + i] = (nibbles[2 * i] << 4) | nibbles[2 * i + 1];
    }
    out
}

impl<N: Nvm> Card<N> {
    /// Writes a new card into `nvm` and loads it (powered on).
    ///
    /// Records are written identity-last, so an interrupted
    /// personalization leaves an unpersonalized memory.
    pub fn personalize(params: PersonalizationParams, mut nvm: N) -> Result<Self, CardError> {
        let kv = params.keys.version();
        if kv == 0 || kv > 0x7F {
            return Err(CardError::InvalidParams("key version must be 1..=0x7F"));
        }
        if params.purse_max_minor <= 0 {
            return Err(CardError::InvalidParams("purse maximum must be positive"));
        }
        if params.initial_balance_minor < 0 || params.initial_balance_minor > params.purse_max_minor
        {
            return Err(CardError::InvalidParams("initial balance out of range"));
        }
        if !(1..=15).contains(&params.pin_max_tries) {
            return Err(CardError::InvalidParams("PIN tries must be 1..=15"));
        }
        if !(1..=15).contains(&params.bio_max_tries) {
            return Err(CardError::InvalidParams("fingerprint tries must be 1..=15"));
        }
        let cardholder = match &params.cardholder {
            None => None,
            Some(c) => {
                let e = c.expiry_yymm.as_bytes();
                if e.len() != 4
                    || !e.iter().all(u8::is_ascii_digit)
                    || !(b"01".as_slice()..=b"12".as_slice()).contains(&&e[2..])
                {
                    return Err(CardError::InvalidParams("expiry must be YYMM"));
                }
                let n = c.name.as_bytes();
                if !(2..=26).contains(&n.len()) || !n.iter().all(|b| (0x20..0x7F).contains(b)) {
                    return Err(CardError::InvalidParams(
                        "name must be 2-26 printable ASCII",
                    ));
                }
                Some(StoredCardholder {
                    pan: Zeroizing::new(c.pan.expose_digits().to_vec()),
                    expiry_yymm: e.try_into().expect("4"),
                    name: c.name.clone(),
                })
            }
        };
        // Split the seed: one half keys the challenge generator, the other
        // the PIN verification data.
        let rng_key = Zeroizing::new(AesKey::Aes256(params.seed).cmac(&[b"kessai/card/rng-key"]));
        let pin_key_a = AesKey::Aes256(params.seed).cmac(&[b"kessai/card/pin-key/1"]);
        let pin_key_b = AesKey::Aes256(params.seed).cmac(&[b"kessai/card/pin-key/2"]);
        let mut pin_key = Zeroizing::new([0u8; 32]);
        pin_key[..16].copy_from_slice(&pin_key_a);
        pin_key[16..].copy_from_slice(&pin_key_b);
        let mut rng = Zeroizing::new([0u8; 32]);
        rng[..16].copy_from_slice(&rng_key[..]);
        rng[16..].copy_from_slice(&AesKey::Aes256(params.seed).cmac(&[b"kessai/card/rng-key/2"]));

        let identity = Identity {
            card_id: params.card_id.as_str().to_string(),
            currency_numeric: params.currency.numeric(),
            purse_max_minor: params.purse_max_minor as u64,
            keys: params.keys.clone(),
            cryptogram_key: params.cryptogram_key.clone(),
            pin_key,
            rng_key: rng,
            cardholder,
        };
        let pin = params.pin.as_ref().map(|pin| {
            let digits: Zeroizing<Vec<u8>> =
                Zeroizing::new(pin.expose_digits().iter().map(|d| b'0' + d).collect());
            PinState::new(
                params.pin_max_tries,
                pin_verifier(&identity.pin_key, &identity.card_id, &digits),
            )
        });
        let bio = match &params.fingerprint {
            None => None,
            Some(t) => {
                let reference = Zeroizing::new(t.to_iso19794_2());
                if reference.len() > crate::nvm::MAX_RECORD_LEN - 3 {
                    return Err(CardError::InvalidParams("fingerprint template too large"));
                }
                Some(BioState::new(params.bio_max_tries, reference))
            }
        };
        let purse = Purse {
            balance_minor: params.initial_balance_minor as u64,
            counter: 0,
            log_next: 0,
            log_count: 0,
        };
        for i in 0..LOG_CAPACITY {
            nvm.erase(log_slot(i as u16))?;
        }
        nvm.erase(REC_PIN)?;
        nvm.erase(REC_BIO)?;
        nvm.erase(crate::records::REC_JOURNAL)?;
        nvm.write(REC_LIFECYCLE, &[Lifecycle::Personalized.byte()])?;
        nvm.write(REC_PURSE, &purse.encode())?;
        if let Some(p) = &pin {
            nvm.write(REC_PIN, &p.encode())?;
        }
        if let Some(b) = &bio {
            nvm.write(REC_BIO, &b.encode())?;
        }
        nvm.write(REC_SEQUENCE, &u64_record(0))?;
        nvm.write(REC_RNG, &u64_record(0))?;
        nvm.write(REC_IDENTITY, &identity.encode())?;
        Self::load(nvm)
    }

    /// Loads a card from memory: completes or discards an interrupted
    /// update (journal recovery), then reads the records. The card comes
    /// back powered on with fresh volatile state.
    pub fn load(mut nvm: N) -> Result<Self, CardError> {
        recover(&mut nvm)?;
        let p = Persistent::load(&nvm)?;
        Ok(Self {
            nvm,
            p,
            v: Volatile {
                powered: true,
                ..Volatile::default()
            },
        })
    }

    /// Power-up (cold reset): clears volatile state, recovers from the
    /// journal, reloads persistent state, and returns the ATR. If the memory
    /// cannot be recovered the card stays mute (every command answers
    /// `6581`).
    pub fn power_on(&mut self) -> Vec<u8> {
        self.v = Volatile {
            powered: true,
            ..Volatile::default()
        };
        match recover(&mut self.nvm).and_then(|()| Persistent::load(&self.nvm)) {
            Ok(p) => self.p = p,
            Err(_) => self.v.mute = true,
        }
        atr()
    }

    /// Power-down: clears volatile state (session, selection, PIN status).
    pub fn power_off(&mut self) {
        self.v = Volatile::default();
    }

    /// The memory, e.g. to persist it or inject faults in tests.
    pub fn nvm(&self) -> &N {
        &self.nvm
    }

    /// Mutable access to the memory (fault injection in tests).
    pub fn nvm_mut(&mut self) -> &mut N {
        &mut self.nvm
    }

    /// Gives the memory back.
    pub fn into_nvm(self) -> N {
        self.nvm
    }

    /// True while an SCP03 session is open.
    pub fn has_session(&self) -> bool {
        self.v.session.is_some()
    }

    /// Read-only view of the persistent state.
    pub fn snapshot(&self) -> CardSnapshot {
        let currency = Currency::from_numeric(self.p.identity.currency_numeric)
            .expect("currency validated at personalization");
        let pan_masked = self.p.identity.cardholder.as_ref().and_then(|c| {
            std::str::from_utf8(&c.pan)
                .ok()
                .and_then(|s| kessai_secrets::CardNumber::new(s).ok())
                .map(|n| n.masked())
        });
        CardSnapshot {
            aid: AID,
            card_id: CardId::new(self.p.identity.card_id.clone())
                .expect("validated at personalization"),
            key_version: self.p.identity.keys.version(),
            balance: Money::new(self.p.purse.balance_minor as i64, currency),
            purse_max: Money::new(self.p.identity.purse_max_minor as i64, currency),
            counter: self.p.purse.counter,
            lifecycle: self.p.lifecycle,
            log: self.p.log_newest_first(LOG_CAPACITY),
            pan_masked,
            pin_tries_left: self.p.pin.as_ref().map(|p| p.tries_left),
            fingerprint_tries_left: self.p.bio.as_ref().map(|b| b.tries_left),
        }
    }

    /// Processes one command APDU and returns the response APDU
    /// (data ‖ SW1 SW2). Never panics on any input.
    pub fn transmit(&mut self, command: &[u8]) -> Vec<u8> {
        if !self.v.powered {
            return Status::UnspecifiedCheckingError
                .to_u16()
                .to_be_bytes()
                .to_vec();
        }
        if self.v.mute {
            return SW_MEMORY_FAILURE.to_u16().to_be_bytes().to_vec();
        }
        let mut reply = Vec::new();
        let sw = match self.handle(command, &mut reply) {
            Ok(()) => 0x9000,
            Err(s) => s.to_u16(),
        };
        reply.extend_from_slice(&sw.to_be_bytes());
        reply
    }

    fn drop_session(&mut self) {
        self.v.session = None;
        self.v.handshake = None;
    }

    fn go_mute(&mut self, e: NvmError) -> Status {
        self.v.mute = true;
        self.drop_session();
        nvm_status(e)
    }

    /// Parses, checks class and length, applies secure messaging, and
    /// dispatches. On error, `reply` is left empty unless a secured
    /// response carries an R-MAC.
    pub fn handle(&mut self, command: &[u8], reply: &mut Vec<u8>) -> Result<(), Status> {
        let view = CommandView::try_from(command).map_err(|e| match e {
            FromSliceError::InvalidClass => Status::ClassNotSupported,
            _ => Status::WrongLength,
        })?;
        let cla = view.class().into_inner();
        let ins: u8 = view.instruction().into();
        if cla & 0x10 != 0 {
            return Err(Status::CommandChainingNotSupported);
        }
        if cla & 0x03 != 0 {
            return Err(Status::LogicalChannelNotSupported);
        }
        if cla & 0x08 != 0 {
            return Err(Status::SecureMessagingNotSupported);
        }
        let base = cla & !0x04;
        if base != 0x00 && base != 0x80 {
            return Err(Status::ClassNotSupported);
        }
        let sm = cla & 0x04 != 0;
        if view.extended
            && !(base == 0x80 && ins == INS_READ_LOG)
            && !(base == 0x00 && ins == INS_VERIFY_BIO)
        {
            return Err(Status::WrongLength);
        }
        let header = [cla, ins, view.p1, view.p2];

        if base == 0x00 && ins == INS_SELECT && !sm {
            return self.select(view.p1, view.p2, view.data(), reply);
        }
        if !self.v.selected {
            return Err(Status::ConditionsOfUseNotSatisfied);
        }
        if base == 0x80 && ins == INS_INITIALIZE_UPDATE && !sm {
            return self.initialize_update(view.p1, view.p2, view.data(), reply);
        }
        if base == 0x80 && ins == INS_EXTERNAL_AUTHENTICATE && sm {
            return self.external_authenticate(header, view.extended, view.data());
        }

        if sm {
            let Some(session) = self.v.session.as_mut() else {
                self.drop_session();
                return Err(Status::SecurityStatusNotSatisfied);
            };
            let plain = match session.unwrap_command(header, view.extended, view.data()) {
                Ok(p) => p,
                Err(e) => {
                    self.drop_session();
                    return Err(scp_status(&e));
                }
            };
            let level = session.level();
            let mut inner = Vec::new();
            let cmd = Cmd {
                cla: base,
                ins,
                p1: view.p1,
                p2: view.p2,
                data: &plain,
                le: view.expected(),
                extended: view.extended,
                secured: Some(level),
            };
            let sw = match self.execute(&cmd, &mut inner) {
                Ok(()) => 0x9000,
                Err(s) => {
                    inner.clear();
                    s.to_u16()
                }
            };
            if sw == Status::SecurityStatusNotSatisfied.to_u16() {
                // 6982 always means the session is gone (level too low for
                // the command), on both sides.
                self.drop_session();
            }
            let Some(session) = self.v.session.as_ref() else {
                // The session ended (6982, memory failure): bare SW.
                return Err(Status::from_u16(sw));
            };
            let wrapped = session
                .wrap_response(&inner, sw)
                .map_err(|_| Status::UnspecifiedCheckingError)?;
            reply.extend_from_slice(&wrapped[..wrapped.len() - 2]);
            return if sw == 0x9000 {
                Ok(())
            } else {
                Err(Status::from_u16(sw))
            };
        }

        if self.v.session.is_some() {
            // GP: inside a session every command must carry secure messaging.
            self.drop_session();
            return Err(Status::SecurityStatusNotSatisfied);
        }
        let cmd = Cmd {
            cla: base,
            ins,
            p1: view.p1,
            p2: view.p2,
            data: view.data(),
            le: view.expected(),
            extended: view.extended,
            secured: None,
        };
        self.execute(&cmd, reply)
    }

    fn execute(&mut self, c: &Cmd<'_>, reply: &mut Vec<u8>) -> Result<(), Status> {
        if self.p.lifecycle == Lifecycle::Terminated
            && !(c.cla == 0x80 && c.ins == INS_READ_CARD_DATA)
        {
            return Err(Status::FunctionNotSupported);
        }
        match (c.cla, c.ins) {
            (0x00, INS_GET_CHALLENGE) => self.get_challenge(c, reply),
            (0x00, INS_VERIFY) => self.verify(c),
            (0x00, INS_VERIFY_BIO) => self.verify_fingerprint(c),
            (0x80, INS_READ_BALANCE) => self.read_balance(c, reply),
            (0x80, INS_DEBIT) => self.purse_update(c, LogKind::Debit, reply),
            (0x80, INS_CREDIT) => self.purse_update(c, LogKind::Credit, reply),
            (0x80, INS_READ_LOG) => self.read_log(c, reply),
            (0x80, INS_GENERATE_CRYPTOGRAM) => self.generate_cryptogram(c, reply),
            (0x80, INS_READ_CARD_DATA) => self.read_card_data(c, reply),
            (0x80, INS_SET_STATUS) => self.set_status(c),
            // INITIALIZE UPDATE under SM, SELECT under SM, EXTERNAL
            // AUTHENTICATE in clear: not in this state.
            (0x80, INS_INITIALIZE_UPDATE | INS_EXTERNAL_AUTHENTICATE) | (0x00, INS_SELECT) => {
                Err(Status::ConditionsOfUseNotSatisfied)
            }
            (0x80, INS_GET_CHALLENGE | INS_VERIFY | INS_VERIFY_BIO | INS_SELECT)
            | (
                0x00,
                INS_READ_BALANCE
                | INS_DEBIT
                | INS_CREDIT
                | INS_READ_LOG
                | INS_GENERATE_CRYPTOGRAM
                | INS_READ_CARD_DATA
                | INS_SET_STATUS
                | INS_INITIALIZE_UPDATE
                | INS_EXTERNAL_AUTHENTICATE,
            ) => Err(Status::ClassNotSupported),
            _ => Err(Status::InstructionNotSupportedOrInvalid),
        }
    }

    fn require(c: &Cmd<'_>, level: SecurityLevel) -> Result<(), Status> {
        match c.secured {
            Some(l) if l.satisfies(level) => Ok(()),
            _ => Err(Status::SecurityStatusNotSatisfied),
        }
    }

    fn p1p2_zero(c: &Cmd<'_>) -> Result<(), Status> {
        if c.p1 != 0 || c.p2 != 0 {
            return Err(Status::IncorrectP1OrP2Parameter);
        }
        Ok(())
    }

    fn select(&mut self, p1: u8, p2: u8, data: &[u8], reply: &mut Vec<u8>) -> Result<(), Status> {
        // Any SELECT ends the session and the PIN / fingerprint status.
        self.drop_session();
        self.v.pin_verified = false;
        self.v.bio_verified = false;
        if p1 != 0x04 || (p2 != 0x00 && p2 != 0x0C) {
            return Err(Status::IncorrectP1OrP2Parameter);
        }
        if data != AID {
            self.v.selected = false;
            return Err(Status::NotFound);
        }
        self.v.selected = true;
        if self.p.lifecycle != Lifecycle::Personalized {
            return Err(Status::SelectFileDeactivated);
        }
        if p2 == 0x00 {
            let mut inner = Vec::new();
            tlv(&mut inner, &[0x84], &AID);
            let mut prop = Vec::new();
            tlv(&mut prop, &[0xDF, 0x04], &[self.p.lifecycle.byte()]);
            tlv(&mut inner, &[0xA5], &prop);
            tlv(reply, &[0x6F], &inner);
        }
        Ok(())
    }

    fn initialize_update(
        &mut self,
        p1: u8,
        p2: u8,
        data: &[u8],
        reply: &mut Vec<u8>,
    ) -> Result<(), Status> {
        // A new INITIALIZE UPDATE aborts any session or handshake.
        self.drop_session();
        if self.p.lifecycle == Lifecycle::Terminated {
            return Err(Status::FunctionNotSupported);
        }
        if p2 != 0 {
            return Err(Status::IncorrectP1OrP2Parameter);
        }
        if data.len() != 8 {
            return Err(Status::WrongLength);
        }
        if p1 != 0 && p1 != self.p.identity.keys.version() {
            return Err(Status::KeyReferenceNotFound);
        }
        let seq = self.p.sequence;
        if seq > 0x00FF_FFFF {
            return Err(Status::ConditionsOfUseNotSatisfied);
        }
        // Persist the next value before using this one: a sequence value
        // (and so a card challenge) is never used twice.
        if let Err(e) = self
            .nvm
            .write(REC_SEQUENCE, &u64_record(u64::from(seq) + 1))
        {
            return Err(self.go_mute(e));
        }
        self.p.sequence = seq + 1;
        let (hs, data) = scp::initialize_update(
            &self.p.identity.keys,
            &self.p.kdd,
            &AID,
            p1,
            p2,
            data,
            CardChallenge::PseudoRandom {
                sequence_counter: seq,
            },
        )
        .map_err(|e| scp_status(&e))?;
        self.v.handshake = Some(hs);
        reply.extend_from_slice(&data);
        Ok(())
    }

    fn external_authenticate(
        &mut self,
        header: [u8; 4],
        extended: bool,
        data: &[u8],
    ) -> Result<(), Status> {
        self.v.session = None;
        let Some(hs) = self.v.handshake.take() else {
            // Not right after INITIALIZE UPDATE (e.g. a replay): refused,
            // and any session is gone.
            return Err(Status::ConditionsOfUseNotSatisfied);
        };
        match hs.external_authenticate(header, extended, data) {
            Ok(session) => {
                self.v.session = Some(session);
                Ok(())
            }
            Err(e) => Err(scp_status(&e)),
        }
    }

    fn get_challenge(&mut self, c: &Cmd<'_>, reply: &mut Vec<u8>) -> Result<(), Status> {
        Self::p1p2_zero(c)?;
        if !c.data.is_empty() {
            return Err(Status::WrongLength);
        }
        if c.le != 8 && c.le != 256 {
            return Err(Status::WrongLeField(8));
        }
        if self.v.rng_next >= self.v.rng_end {
            let start = self.p.rng_reserved;
            let end = start
                .checked_add(RNG_BLOCK)
                .ok_or(Status::FunctionNotSupported)?;
            if let Err(e) = self.nvm.write(REC_RNG, &u64_record(end)) {
                return Err(self.go_mute(e));
            }
            self.p.rng_reserved = end;
            self.v.rng_next = start;
            self.v.rng_end = end;
        }
        let n = self.v.rng_next;
        self.v.rng_next += 1;
        let key = AesKey::Aes256(*self.p.identity.rng_key);
        let block = key.cmac(&[b"kessai/card/challenge", &n.to_be_bytes()]);
        reply.extend_from_slice(&block[..8]);
        Ok(())
    }

    /// Counts one verification attempt against `state` (PIN or fingerprint
    /// reference): the decremented try counter is written *before*
    /// `matches` runs, and the counter is restored only after a match, so a
    /// torn attempt is a failed attempt or none at all. `record` is the NVM
    /// record of `state` and `mirror` its copy in RAM. On a mismatch the
    /// error carries the tries left.
    fn counted_attempt<D: AsRef<[u8]> + Clone>(
        &mut self,
        record: crate::RecordId,
        state: &Reference<D>,
        mirror: fn(&mut Persistent) -> &mut Option<Reference<D>>,
        matches: impl FnOnce() -> bool,
    ) -> Result<(), Status> {
        if state.tries_left == 0 {
            return Err(Status::OperationBlocked);
        }
        let after = state.with_tries(state.tries_left - 1);
        if let Err(e) = self.nvm.write(record, &after.encode()) {
            return Err(self.go_mute(e));
        }
        *mirror(&mut self.p) = Some(after.clone());
        if !matches() {
            return Err(Status::RemainingRetries(after.tries_left));
        }
        let reset = after.with_tries(after.max_tries);
        if let Err(e) = self.nvm.write(record, &reset.encode()) {
            return Err(self.go_mute(e));
        }
        *mirror(&mut self.p) = Some(reset);
        Ok(())
    }

    fn verify(&mut self, c: &Cmd<'_>) -> Result<(), Status> {
        if c.p1 != 0x00 || c.p2 != 0x80 {
            return Err(Status::IncorrectP1OrP2Parameter);
        }
        if self.p.lifecycle != Lifecycle::Personalized {
            return Err(Status::FunctionNotSupported);
        }
        let Some(pin) = self.p.pin.clone() else {
            return Err(Status::KeyReferenceNotFound);
        };
        if c.data.is_empty() {
            return verification_status(self.v.pin_verified, pin.tries_left);
        }
        if c.data.len() != 8 {
            return Err(Status::WrongLength);
        }
        let digits = parse_pin_block(c.data).ok_or(Status::IncorrectDataParameter)?;
        self.v.pin_verified = false;
        let (key, card_id) = (
            self.p.identity.pin_key.clone(),
            self.p.identity.card_id.clone(),
        );
        self.counted_attempt(
            REC_PIN,
            &pin,
            |p| &mut p.pin,
            || bool::from(pin_verifier(&key, &card_id, &digits).ct_eq(&pin.data)),
        )?;
        self.v.pin_verified = true;
        Ok(())
    }

    /// VERIFY (biometric, claim 16): compares a live fingerprint (ISO/IEC
    /// 19794-2 record in a `7F2E { 81 }` template) with the enrolled
    /// reference using the on-card matcher. Like the PIN: the try counter is
    /// decremented in memory before the comparison and restored only after
    /// a match; empty data asks the status.
    fn verify_fingerprint(&mut self, c: &Cmd<'_>) -> Result<(), Status> {
        if c.p1 != 0x00 || c.p2 != P2_BIO_REFERENCE {
            return Err(Status::IncorrectP1OrP2Parameter);
        }
        if self.p.lifecycle != Lifecycle::Personalized {
            return Err(Status::FunctionNotSupported);
        }
        let Some(bio) = self.p.bio.clone() else {
            return Err(Status::KeyReferenceNotFound);
        };
        if c.data.is_empty() {
            return verification_status(self.v.bio_verified, bio.tries_left);
        }
        let record = biometric_data(c.data).ok_or(Status::IncorrectDataParameter)?;
        let probe = kessai_biometric::Template::from_iso19794_2(record)
            .map_err(|_| Status::IncorrectDataParameter)?;
        let reference = kessai_biometric::Template::from_iso19794_2(&bio.data)
            .map_err(|_| Status::UnspecifiedCheckingError)?;
        self.v.bio_verified = false;
        self.counted_attempt(
            REC_BIO,
            &bio,
            |p| &mut p.bio,
            || {
                kessai_biometric::Matcher::default()
                    .verify(&probe, &reference)
                    .is_match()
            },
        )?;
        self.v.bio_verified = true;
        Ok(())
    }

    fn read_balance(&mut self, c: &Cmd<'_>, reply: &mut Vec<u8>) -> Result<(), Status> {
        Self::require(c, SecurityLevel::CMac)?;
        Self::p1p2_zero(c)?;
        if !c.data.is_empty() {
            return Err(Status::WrongLength);
        }
        reply.extend_from_slice(&self.p.purse.balance_minor.to_be_bytes());
        reply.extend_from_slice(&self.p.identity.currency_numeric.to_be_bytes());
        reply.extend_from_slice(&self.p.purse.counter.to_be_bytes());
        reply.extend_from_slice(&self.p.identity.purse_max_minor.to_be_bytes());
        Ok(())
    }

    /// Persists `purse` alone (a counter bump of an aborted command).
    fn write_purse(&mut self, purse: Purse) -> Result<(), Status> {
        if let Err(e) = self.nvm.write(REC_PURSE, &purse.encode()) {
            return Err(self.go_mute(e));
        }
        self.p.purse = purse;
        Ok(())
    }

    fn purse_update(
        &mut self,
        c: &Cmd<'_>,
        kind: LogKind,
        reply: &mut Vec<u8>,
    ) -> Result<(), Status> {
        Self::require(c, SecurityLevel::CMacCDec)?;
        if self.p.lifecycle != Lifecycle::Personalized {
            return Err(Status::FunctionNotSupported);
        }
        Self::p1p2_zero(c)?;
        if c.data.len() != PURSE_DATA_LEN {
            return Err(Status::WrongLength);
        }
        let amount = u64::from_be_bytes(c.data[0..8].try_into().expect("8"));
        if amount == 0 || amount > i64::MAX as u64 {
            return Err(Status::IncorrectDataParameter);
        }
        let currency = u16::from_be_bytes([c.data[8], c.data[9]]);
        let reference: [u8; 16] = c.data[10..26].try_into().expect("16");
        let counterparty: [u8; 16] = c.data[26..42].try_into().expect("16");

        // From here on the command is a purse operation: it consumes a
        // counter value whatever the outcome.
        let old = self.p.purse;
        let counter = old
            .counter
            .checked_add(1)
            .ok_or(Status::FunctionNotSupported)?;
        let bumped = Purse { counter, ..old };
        let max = self.p.identity.purse_max_minor;
        let refusal = if currency != self.p.identity.currency_numeric {
            Some(Status::IncorrectDataParameter)
        } else {
            match kind {
                LogKind::Debit if amount > old.balance_minor => {
                    Some(Status::ConditionsOfUseNotSatisfied)
                }
                LogKind::Credit
                    if old
                        .balance_minor
                        .checked_add(amount)
                        .is_none_or(|b| b > max) =>
                {
                    Some(Status::NotEnoughMemory)
                }
                _ => None,
            }
        };
        if let Some(status) = refusal {
            self.write_purse(bumped)?;
            return Err(status);
        }
        let balance = match kind {
            LogKind::Debit => old.balance_minor - amount,
            LogKind::Credit => old.balance_minor + amount,
        };
        let record = LogRecord {
            counter,
            kind,
            amount_minor: amount,
            currency_numeric: currency,
            balance_after_minor: balance,
            reference,
            counterparty,
        };
        let slot = old.log_next;
        let new = Purse {
            balance_minor: balance,
            counter,
            log_next: (slot + 1) % LOG_CAPACITY as u16,
            log_count: (old.log_count + 1).min(LOG_CAPACITY as u16),
        };
        let entries = [
            (REC_PURSE, new.encode()),
            (log_slot(slot), record.encode().to_vec()),
        ];
        if let Err(e) = commit(&mut self.nvm, &entries) {
            return Err(self.go_mute(e));
        }
        self.p.purse = new;
        self.p.log[usize::from(slot)] = Some(record);
        reply.extend_from_slice(&record.encode());
        Ok(())
    }

    fn read_log(&mut self, c: &Cmd<'_>, reply: &mut Vec<u8>) -> Result<(), Status> {
        Self::require(c, SecurityLevel::CMac)?;
        if c.p2 != 0 || usize::from(c.p1) > LOG_CAPACITY {
            return Err(Status::IncorrectP1OrP2Parameter);
        }
        if !c.data.is_empty() {
            return Err(Status::WrongLength);
        }
        let max = if c.extended {
            LOG_CAPACITY
        } else {
            READ_LOG_SHORT_MAX
        };
        let n = if c.p1 == 0 {
            max
        } else {
            usize::from(c.p1).min(max)
        };
        for r in self.p.log_newest_first(n) {
            reply.extend_from_slice(&r.encode());
        }
        Ok(())
    }

    fn generate_cryptogram(&mut self, c: &Cmd<'_>, reply: &mut Vec<u8>) -> Result<(), Status> {
        if self.p.lifecycle != Lifecycle::Personalized {
            return Err(Status::FunctionNotSupported);
        }
        Self::p1p2_zero(c)?;
        if c.data.len() != 18 {
            return Err(Status::WrongLength);
        }
        let challenge: [u8; 8] = c.data[0..8].try_into().expect("8");
        let amount = u64::from_be_bytes(c.data[8..16].try_into().expect("8"));
        let currency = u16::from_be_bytes([c.data[16], c.data[17]]);
        if amount == 0 || amount > i64::MAX as u64 || currency != self.p.identity.currency_numeric {
            return Err(Status::IncorrectDataParameter);
        }
        // The counter is incremented (durably) before the cryptogram exists.
        let old = self.p.purse;
        let counter = old
            .counter
            .checked_add(1)
            .ok_or(Status::FunctionNotSupported)?;
        self.write_purse(Purse { counter, ..old })?;
        // CVM result: 02 on-card fingerprint match, 01 offline PIN, 00 none.
        let cvm = if self.v.bio_verified {
            2
        } else {
            u8::from(self.v.pin_verified)
        };
        let ac = application_cryptogram(
            &self.p.identity.cryptogram_key,
            &challenge,
            amount,
            currency,
            counter,
            cvm,
            &self.p.identity.card_id,
        );
        reply.extend_from_slice(&counter.to_be_bytes());
        reply.push(cvm);
        reply.extend_from_slice(&ac);
        Ok(())
    }

    fn read_card_data(&mut self, c: &Cmd<'_>, reply: &mut Vec<u8>) -> Result<(), Status> {
        Self::p1p2_zero(c)?;
        if !c.data.is_empty() {
            return Err(Status::WrongLength);
        }
        let id = &self.p.identity;
        tlv(reply, &[0xDF, 0x01], id.card_id.as_bytes());
        tlv(reply, &[0xDF, 0x02], &self.p.purse.counter.to_be_bytes());
        let cur = format!("{:04}", id.currency_numeric);
        tlv(reply, &[0x9F, 0x42], &bcd(cur.as_bytes()));
        tlv(reply, &[0xDF, 0x03], &[id.keys.version()]);
        tlv(reply, &[0xDF, 0x04], &[self.p.lifecycle.byte()]);
        if let Some(ch) = &id.cardholder {
            tlv(reply, &[0x5A], &bcd(&ch.pan));
            let e = &ch.expiry_yymm;
            let yy = (e[0] - b'0') * 10 + (e[1] - b'0');
            let mm = (e[2] - b'0') * 10 + (e[3] - b'0');
            let dd = last_day_of_month(yy, mm);
            let ymd = format!("{yy:02}{mm:02}{dd:02}");
            tlv(reply, &[0x5F, 0x24], &bcd(ymd.as_bytes()));
            tlv(reply, &[0x5F, 0x20], ch.name.as_bytes());
        }
        Ok(())
    }

    fn set_status(&mut self, c: &Cmd<'_>) -> Result<(), Status> {
        Self::require(c, SecurityLevel::CMacCDec)?;
        if c.p1 != 0 {
            return Err(Status::IncorrectP1OrP2Parameter);
        }
        if !c.data.is_empty() {
            return Err(Status::WrongLength);
        }
        let target = Lifecycle::from_byte(c.p2).ok_or(Status::IncorrectP1OrP2Parameter)?;
        if self.p.lifecycle == Lifecycle::Terminated {
            return Err(Status::ConditionsOfUseNotSatisfied);
        }
        if let Err(e) = self.nvm.write(REC_LIFECYCLE, &[target.byte()]) {
            return Err(self.go_mute(e));
        }
        self.p.lifecycle = target;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_block_format2_round_trips_and_rejects_bad_blocks() {
        let b = format2_pin_block(b"1234");
        assert_eq!(b, [0x24, 0x12, 0x34, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]);
        assert_eq!(&parse_pin_block(&b).unwrap()[..], b"1234");
        let b12 = format2_pin_block(b"123456789012");
        assert_eq!(&parse_pin_block(&b12).unwrap()[..], b"123456789012");
        assert!(parse_pin_block(&[0x14, 0x12, 0x34, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]).is_none());
        assert!(parse_pin_block(&[0x23, 0x12, 0x3F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]).is_none());
        assert!(parse_pin_block(&[0x24, 0x12, 0x3A, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]).is_none());
        assert!(parse_pin_block(&[0x24, 0x12, 0x34, 0xFF, 0xFF, 0xFF, 0xFF, 0xFE]).is_none());
        assert!(parse_pin_block(&[0x24, 0x12, 0x34]).is_none());
    }

    #[test]
    fn atr_has_a_valid_check_byte() {
        let a = atr();
        assert_eq!(a[0], 0x3B);
        assert_eq!(a[1..].iter().fold(0u8, |x, y| x ^ y), 0);
        assert_eq!(usize::from(a[1] & 0x0F), a.len() - 5);
    }

    #[test]
    fn bcd_and_expiry_helpers() {
        assert_eq!(bcd(b"0392"), [0x03, 0x92]);
        assert_eq!(
            bcd(b"411111111111111"),
            [0x41, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1F]
        );
        assert_eq!(last_day_of_month(28, 2), 29);
        assert_eq!(last_day_of_month(29, 2), 28);
        assert_eq!(last_day_of_month(29, 4), 30);
        assert_eq!(last_day_of_month(29, 12), 31);
    }
}
