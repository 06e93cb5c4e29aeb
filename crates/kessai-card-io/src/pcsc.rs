//! PC/SC client transport over pcsc-lite (cargo feature `pcsc`).
//!
//! Lists readers, picks one by name or by "has a card", connects shared or
//! exclusive with T=0 and/or T=1, and transmits APDUs. For T=0 it follows
//! `61xx` with GET RESPONSE and `6Cxx` by resending with the right Le, so
//! callers see whole responses whatever the protocol. PC/SC failures become
//! typed [`TransportError`]s.
//!
//! Calls block (PC/SC is a blocking API); from async code run them on
//! `tokio::task::spawn_blocking`.

use std::ffi::CString;
use std::time::{Duration, Instant};

use pcsc::{Context, Disposition, ReaderState, Scope, ShareMode, State};

use crate::{CardTransport, TransportError};

/// Which reader to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReaderSelector {
    /// Readers whose name contains this text; among them the first with a
    /// card present, else the first.
    NameContains(String),
    /// The first reader with a card present.
    FirstWithCard,
}

/// Whether other applications may use the card at the same time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// Other applications may connect too (PC/SC transactions keep
    /// sequences atomic).
    Shared,
    /// Nobody else may connect while we are.
    Exclusive,
}

/// Which transmission protocols to accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocols {
    /// T=0 only.
    T0,
    /// T=1 only.
    T1,
    /// Whatever the card and reader agree on.
    Any,
}

/// A reader as seen by PC/SC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReaderInfo {
    /// The reader's name, e.g. `Virtual PCD 00 00`.
    pub name: String,
    /// Whether a card is in it.
    pub card_present: bool,
    /// The card's ATR, when one is present.
    pub atr: Vec<u8>,
}

/// Maps a PC/SC error to the transport's vocabulary.
pub fn map_error(e: pcsc::Error) -> TransportError {
    use pcsc::Error as E;
    match e {
        E::NoReadersAvailable | E::UnknownReader | E::ReaderUnavailable => TransportError::NoReader,
        E::NoSmartcard => TransportError::NoCard,
        E::RemovedCard => TransportError::CardRemoved,
        E::ResetCard => TransportError::CardReset,
        E::UnresponsiveCard | E::UnpoweredCard | E::CommError => TransportError::CardUnresponsive,
        E::SharingViolation => TransportError::SharingViolation,
        E::NoService | E::ServiceStopped | E::InvalidHandle => TransportError::ServiceUnavailable,
        other => TransportError::Reader(format!("{other:?}")),
    }
}

fn establish() -> Result<Context, TransportError> {
    Context::establish(Scope::User).map_err(map_error)
}

/// Lists readers with their card state.
pub fn list_readers() -> Result<Vec<ReaderInfo>, TransportError> {
    let ctx = establish()?;
    list_with(&ctx)
}

fn list_with(ctx: &Context) -> Result<Vec<ReaderInfo>, TransportError> {
    let names = match ctx.list_readers_owned() {
        Ok(n) => n,
        Err(pcsc::Error::NoReadersAvailable) => return Ok(Vec::new()),
        Err(e) => return Err(map_error(e)),
    };
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let mut states: Vec<ReaderState> = names
        .iter()
        .map(|n| ReaderState::new(n.clone(), State::UNAWARE))
        .collect();
    match ctx.get_status_change(Duration::ZERO, &mut states) {
        Ok(()) | Err(pcsc::Error::Timeout) => {}
        Err(e) => return Err(map_error(e)),
    }
    Ok(states
        .iter()
        .map(|s| {
            let present = s.event_state().contains(State::PRESENT);
            ReaderInfo {
                name: s.name().to_string_lossy().into_owned(),
                card_present: present,
                atr: if present {
                    s.atr().to_vec()
                } else {
                    Vec::new()
                },
            }
        })
        .collect())
}

fn choose(readers: &[ReaderInfo], selector: &ReaderSelector) -> Result<String, TransportError> {
    let candidates: Vec<&ReaderInfo> = match selector {
        ReaderSelector::NameContains(s) => readers.iter().filter(|r| r.name.contains(s)).collect(),
        ReaderSelector::FirstWithCard => readers.iter().collect(),
    };
    if let Some(r) = candidates.iter().find(|r| r.card_present) {
        return Ok(r.name.clone());
    }
    match (selector, candidates.first()) {
        (_, None) => Err(TransportError::NoReader),
        (ReaderSelector::FirstWithCard, Some(_)) => Err(TransportError::NoCard),
        (ReaderSelector::NameContains(_), Some(r)) => Ok(r.name.clone()),
    }
}

/// Waits until a reader matching `selector` holds a card, for at most
/// `timeout`. Event driven (PC/SC `SCardGetStatusChange`), no polling of
/// the card itself. Returns the reader's name.
pub fn wait_for_card(
    selector: &ReaderSelector,
    timeout: Duration,
) -> Result<String, TransportError> {
    let ctx = establish()?;
    let deadline = Instant::now() + timeout;
    loop {
        let readers = list_with(&ctx)?;
        match choose(&readers, selector) {
            Ok(name) if readers.iter().any(|r| r.name == name && r.card_present) => {
                return Ok(name);
            }
            Ok(_) | Err(TransportError::NoCard) | Err(TransportError::NoReader) => {}
            Err(e) => return Err(e),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(if readers.is_empty() {
                TransportError::NoReader
            } else {
                TransportError::NoCard
            });
        }
        // Block until any reader changes (or readers are added), bounded by
        // the time left.
        let mut states: Vec<ReaderState> = readers
            .iter()
            .filter_map(|r| CString::new(r.name.clone()).ok())
            .map(|n| ReaderState::new(n, State::UNAWARE))
            .chain(std::iter::once(ReaderState::new(
                pcsc::PNP_NOTIFICATION(),
                State::UNAWARE,
            )))
            .collect();
        // First call learns the current state, second one waits for a change.
        match ctx.get_status_change(Duration::ZERO, &mut states) {
            Ok(()) | Err(pcsc::Error::Timeout) => {}
            Err(e) => return Err(map_error(e)),
        }
        for s in &mut states {
            s.sync_current_state();
        }
        match ctx.get_status_change(left.min(Duration::from_secs(1)), &mut states) {
            Ok(()) | Err(pcsc::Error::Timeout) => {}
            Err(e) => return Err(map_error(e)),
        }
    }
}

/// How to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcscOptions {
    /// Which reader.
    pub reader: ReaderSelector,
    /// Shared or exclusive.
    pub sharing: Sharing,
    /// T=0, T=1 or either.
    pub protocols: Protocols,
}

impl Default for PcscOptions {
    fn default() -> Self {
        Self {
            reader: ReaderSelector::FirstWithCard,
            sharing: Sharing::Shared,
            protocols: Protocols::Any,
        }
    }
}

/// A connection to a card through PC/SC.
pub struct PcscTransport {
    /// Keeps the PC/SC context alive as long as the card handle.
    _ctx: Context,
    /// The card handle.
    card: pcsc::Card,
    /// Reader we are connected through.
    reader: String,
    /// ATR at connect / last reset.
    atr: Vec<u8>,
    /// For reconnects.
    share: ShareMode,
    /// For reconnects.
    protocols: pcsc::Protocols,
}

impl std::fmt::Debug for PcscTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcscTransport")
            .field("reader", &self.reader)
            .field("protocol", &self.card_protocol())
            .finish_non_exhaustive()
    }
}

impl PcscTransport {
    /// Connects to a card as `options` say.
    pub fn connect(options: &PcscOptions) -> Result<Self, TransportError> {
        let ctx = establish()?;
        let readers = list_with(&ctx)?;
        let reader = choose(&readers, &options.reader)?;
        let share = match options.sharing {
            Sharing::Shared => ShareMode::Shared,
            Sharing::Exclusive => ShareMode::Exclusive,
        };
        let protocols = match options.protocols {
            Protocols::T0 => pcsc::Protocols::T0,
            Protocols::T1 => pcsc::Protocols::T1,
            Protocols::Any => pcsc::Protocols::ANY,
        };
        let name = CString::new(reader.clone()).map_err(|_| TransportError::NoReader)?;
        let card = ctx.connect(&name, share, protocols).map_err(map_error)?;
        let mut t = Self {
            _ctx: ctx,
            card,
            reader,
            atr: Vec::new(),
            share,
            protocols,
        };
        t.refresh_atr()?;
        tracing::info!(reader = %t.reader, protocol = ?t.card_protocol(), "pcsc: connected");
        Ok(t)
    }

    /// The reader this transport is connected through.
    pub fn reader_name(&self) -> &str {
        &self.reader
    }

    /// The negotiated protocol, `"T=0"` or `"T=1"`.
    pub fn card_protocol(&self) -> Option<&'static str> {
        match self.card.status2_owned().ok()?.protocol2()? {
            pcsc::Protocol::T0 => Some("T=0"),
            pcsc::Protocol::T1 => Some("T=1"),
            pcsc::Protocol::RAW => Some("raw"),
        }
    }

    fn refresh_atr(&mut self) -> Result<(), TransportError> {
        let status = self.card.status2_owned().map_err(map_error)?;
        self.atr = status.atr().to_vec();
        Ok(())
    }

    fn is_t0(&self) -> bool {
        matches!(
            self.card.status2_owned().ok().and_then(|s| s.protocol2()),
            Some(pcsc::Protocol::T0)
        )
    }

    fn raw_transmit(&self, command: &[u8]) -> Result<Vec<u8>, TransportError> {
        if command.len() > pcsc::MAX_BUFFER_SIZE_EXTENDED {
            return Err(TransportError::CommandTooLong { len: command.len() });
        }
        let mut buf = vec![0u8; pcsc::MAX_BUFFER_SIZE_EXTENDED];
        let r = self.card.transmit(command, &mut buf).map_err(map_error)?;
        if r.len() < 2 {
            return Err(TransportError::ResponseTooShort);
        }
        Ok(r.to_vec())
    }
}

/// What to send next under T=0 after `response` to `command`, if anything
/// (ISO 7816-3 / 7816-4: `61xx` → GET RESPONSE, `6Cxx` → resend with
/// Le = xx). Returns `None` when the response is final.
pub fn t0_follow_up(command: &[u8], response: &[u8]) -> Option<Vec<u8>> {
    let [.., sw1, sw2] = response else {
        return None;
    };
    match *sw1 {
        0x61 => Some(vec![
            command.first().copied().unwrap_or(0) & 0x03,
            0xC0,
            0x00,
            0x00,
            *sw2,
        ]),
        0x6C if command.len() >= 4 => {
            // Resend the same command with Le = sw2 (case 2 short).
            let mut c = command[..4].to_vec();
            c.push(*sw2);
            Some(c)
        }
        _ => None,
    }
}

impl CardTransport for PcscTransport {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, TransportError> {
        let mut response = self.raw_transmit(command)?;
        if !self.is_t0() {
            return Ok(response);
        }
        // Collected data of chained GET RESPONSEs; bounded so a card that
        // keeps answering 61xx cannot loop us forever.
        let mut data = Vec::new();
        let mut last_command = command.to_vec();
        for _ in 0..256 {
            let Some(next) = t0_follow_up(&last_command, &response) else {
                data.extend_from_slice(&response);
                return Ok(data);
            };
            let (body, sw) = response.split_at(response.len() - 2);
            if sw[0] == 0x61 {
                // GET RESPONSE answers carry data before a further 61xx.
                data.extend_from_slice(body);
            }
            response = self.raw_transmit(&next)?;
            last_command = next;
        }
        Err(TransportError::Reader(
            "T=0 response chaining did not end".into(),
        ))
    }

    fn atr(&self) -> &[u8] {
        &self.atr
    }

    fn reset(&mut self) -> Result<(), TransportError> {
        self.card
            .reconnect(self.share, self.protocols, Disposition::ResetCard)
            .map_err(map_error)?;
        self.refresh_atr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(name: &str, present: bool) -> ReaderInfo {
        ReaderInfo {
            name: name.into(),
            card_present: present,
            atr: vec![],
        }
    }

    #[test]
    fn selector_prefers_readers_with_cards() {
        let rs = [
            reader("Virtual PCD 00 00", false),
            reader("Virtual PCD 00 01", true),
            reader("ACS ACR122U", true),
        ];
        let by_name = ReaderSelector::NameContains("Virtual PCD".into());
        assert_eq!(choose(&rs, &by_name).unwrap(), "Virtual PCD 00 01");
        assert_eq!(
            choose(&rs, &ReaderSelector::FirstWithCard).unwrap(),
            "Virtual PCD 00 01"
        );
        let none = [reader("Virtual PCD 00 00", false)];
        assert_eq!(choose(&none, &by_name).unwrap(), "Virtual PCD 00 00");
        assert_eq!(
            choose(&none, &ReaderSelector::FirstWithCard),
            Err(TransportError::NoCard)
        );
        assert_eq!(
            choose(&rs, &ReaderSelector::NameContains("Gemalto".into())),
            Err(TransportError::NoReader)
        );
        assert_eq!(
            choose(&[], &ReaderSelector::FirstWithCard),
            Err(TransportError::NoReader)
        );
    }

    #[test]
    fn errors_map_to_transport_vocabulary() {
        assert_eq!(
            map_error(pcsc::Error::NoReadersAvailable),
            TransportError::NoReader
        );
        assert_eq!(map_error(pcsc::Error::NoSmartcard), TransportError::NoCard);
        assert_eq!(
            map_error(pcsc::Error::RemovedCard),
            TransportError::CardRemoved
        );
        assert_eq!(map_error(pcsc::Error::ResetCard), TransportError::CardReset);
        assert_eq!(
            map_error(pcsc::Error::NoService),
            TransportError::ServiceUnavailable
        );
        assert_eq!(
            map_error(pcsc::Error::SharingViolation),
            TransportError::SharingViolation
        );
        assert!(matches!(
            map_error(pcsc::Error::InvalidAtr),
            TransportError::Reader(_)
        ));
    }

    #[test]
    fn t0_follow_ups() {
        let cmd = [0x00, 0xB0, 0x00, 0x00, 0x00];
        assert_eq!(t0_follow_up(&cmd, &[0x90, 0x00]), None);
        assert_eq!(
            t0_follow_up(&cmd, &[0x61, 0x10]),
            Some(vec![0x00, 0xC0, 0x00, 0x00, 0x10])
        );
        // Logical channel bits of CLA carried into GET RESPONSE.
        assert_eq!(
            t0_follow_up(&[0x03, 0xB0, 0, 0, 0], &[0x61, 0x02]).unwrap()[0],
            0x03
        );
        assert_eq!(
            t0_follow_up(&cmd, &[0x6C, 0x20]),
            Some(vec![0x00, 0xB0, 0x00, 0x00, 0x20])
        );
        assert_eq!(t0_follow_up(&cmd, &[0x6C]), None);
        assert_eq!(t0_follow_up(&[0x00], &[0x6C, 0x01]), None);
    }
}
