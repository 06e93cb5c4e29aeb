//! The phone's side of the IC card (claims 1, 5, 7, 11: "IC card
//! read/write function"): SELECT, READ CARD DATA, GENERATE CRYPTOGRAM and
//! offline VERIFY PIN of the kessai applet (`docs/CARD.md`), over any
//! [`ApduTransport`] (in-process card, PC/SC reader).

use std::fmt;

use kessai_card::harness::ApduTransport;
use kessai_card::{AID, format2_pin_block};
use kessai_ids::CardId;
use kessai_secrets::{CardNumber, Pin};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::{FlowDError, tlv};

/// What READ CARD DATA returned.
#[derive(Clone, PartialEq, Eq)]
pub struct CardData {
    /// The card's identifier.
    pub card_id: CardId,
    /// Its transaction counter (the last value consumed).
    pub counter: u32,
    /// Purse currency, ISO 4217 numeric.
    pub currency_numeric: u16,
    /// SCP03 key version.
    pub key_version: u8,
    /// Lifecycle byte: 01 personalized, 02 blocked, 03 terminated.
    pub lifecycle: u8,
    /// Settlement information (claim 7: card number, expiry, name), present
    /// on customer cards; merchant cards carry none.
    pub cardholder: Option<Cardholder>,
}

/// Card number, expiry (`YYMM`) and name.
#[derive(Clone, PartialEq, Eq)]
pub struct Cardholder {
    /// The PAN.
    pub pan: CardNumber,
    /// Expiry, four ASCII digits `YYMM`.
    pub expiry_yymm: String,
    /// Cardholder name.
    pub name: String,
}

impl fmt::Debug for CardData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CardData")
            .field("card_id", &self.card_id)
            .field("counter", &self.counter)
            .field("lifecycle", &self.lifecycle)
            .field("pan", &self.cardholder.as_ref().map(|c| c.pan.masked()))
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Cardholder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cardholder({}, redacted)", self.pan.masked())
    }
}

/// The result of GENERATE CRYPTOGRAM, as the phone sends it to the host
/// (the card's "authentication information").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardAuth {
    /// The card that computed it.
    pub card_id: CardId,
    /// Amount the cryptogram covers, minor units (cap or sale amount).
    pub amount_minor: u64,
    /// Card counter value consumed.
    pub counter: u32,
    /// CVM result byte bound into the cryptogram (see [`crate::host::Cvm`]).
    pub cvm: u8,
    /// AES-CMAC cryptogram (16 bytes).
    #[serde(with = "crate::hexser")]
    pub cryptogram: [u8; 16],
}

fn sw(resp: &[u8]) -> Result<(u16, &[u8]), FlowDError> {
    match resp {
        [data @ .., a, b] => Ok((u16::from_be_bytes([*a, *b]), data)),
        _ => Err(FlowDError::Card("response shorter than a status word")),
    }
}

fn ok(resp: &[u8]) -> Result<&[u8], FlowDError> {
    match sw(resp)? {
        (0x9000, data) => Ok(data),
        (s, _) => Err(FlowDError::CardStatus(s)),
    }
}

/// SELECT the kessai applet.
pub fn select(card: &mut impl ApduTransport) -> Result<(), FlowDError> {
    let mut apdu = vec![0x00, 0xA4, 0x04, 0x00, AID.len() as u8];
    apdu.extend_from_slice(&AID);
    apdu.push(0x00);
    ok(&card.transmit_apdu(&apdu)).map(|_| ())
}

fn bcd_digits(b: &[u8]) -> Result<Vec<u8>, FlowDError> {
    let mut out = Vec::new();
    for nib in b.iter().flat_map(|x| [x >> 4, x & 0x0F]) {
        match nib {
            0..=9 => out.push(b'0' + nib),
            0x0F => {}
            _ => return Err(FlowDError::Card("bad BCD in card data")),
        }
    }
    Ok(out)
}

/// READ CARD DATA (clear; no session needed).
pub fn read_card_data(card: &mut impl ApduTransport) -> Result<CardData, FlowDError> {
    let resp = card.transmit_apdu(&[0x80, 0xCA, 0x00, 0x00, 0x00]);
    let data = ok(&resp)?;
    let objs = tlv::parse(data).map_err(|_| FlowDError::Card("card data is not BER-TLV"))?;
    let get = |tag| objs.iter().find(|o| o.tag == tag).map(|o| o.value);
    let e = FlowDError::Card("card data incomplete");
    let card_id = std::str::from_utf8(get(0xDF01).ok_or(e.clone())?)
        .ok()
        .and_then(|s| s.parse::<CardId>().ok())
        .ok_or(FlowDError::Card("bad card id"))?;
    let counter = u32::from_be_bytes(
        get(0xDF02)
            .ok_or(e.clone())?
            .try_into()
            .map_err(|_| e.clone())?,
    );
    let cur = bcd_digits(get(0x9F42).ok_or(e.clone())?)?;
    let currency_numeric = std::str::from_utf8(&cur)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(e.clone())?;
    let key_version = *get(0xDF03).and_then(|v| v.first()).ok_or(e.clone())?;
    let lifecycle = *get(0xDF04).and_then(|v| v.first()).ok_or(e.clone())?;
    let cardholder = match (get(0x5A), get(0x5F24), get(0x5F20)) {
        (Some(pan), Some(exp), Some(name)) => {
            let digits = Zeroizing::new(bcd_digits(pan)?);
            let pan = CardNumber::new(std::str::from_utf8(&digits).map_err(|_| e.clone())?)
                .map_err(|_| FlowDError::Card("card number invalid"))?;
            let ymd = bcd_digits(exp)?;
            if ymd.len() != 6 {
                return Err(FlowDError::Card("bad expiry"));
            }
            let name = std::str::from_utf8(name)
                .map_err(|_| FlowDError::Card("bad name"))?
                .to_owned();
            Some(Cardholder {
                pan,
                expiry_yymm: String::from_utf8_lossy(&ymd[..4]).into_owned(),
                name,
            })
        }
        (None, None, None) => None,
        _ => return Err(e),
    };
    Ok(CardData {
        card_id,
        counter,
        currency_numeric,
        key_version,
        lifecycle,
        cardholder,
    })
}

/// GENERATE CRYPTOGRAM over the host challenge, amount and currency.
pub fn generate_cryptogram(
    card: &mut impl ApduTransport,
    card_id: &CardId,
    host_challenge: &[u8; 8],
    amount_minor: u64,
    currency_numeric: u16,
) -> Result<CardAuth, FlowDError> {
    let mut apdu = vec![0x80, 0xAE, 0x00, 0x00, 18];
    apdu.extend_from_slice(host_challenge);
    apdu.extend_from_slice(&amount_minor.to_be_bytes());
    apdu.extend_from_slice(&currency_numeric.to_be_bytes());
    apdu.push(0x00);
    let resp = card.transmit_apdu(&apdu);
    let d = ok(&resp)?;
    if d.len() != 21 {
        return Err(FlowDError::Card("GENERATE CRYPTOGRAM length"));
    }
    let mut cryptogram = [0u8; 16];
    cryptogram.copy_from_slice(&d[5..21]);
    Ok(CardAuth {
        card_id: card_id.clone(),
        amount_minor,
        counter: u32::from_be_bytes([d[0], d[1], d[2], d[3]]),
        cvm: d[4],
        cryptogram,
    })
}

/// VERIFY (biometric) on the card (claim 16): sends the live fingerprint
/// (ISO/IEC 19794-2 record from the phone's sensor) for comparison with the
/// template enrolled in the card; a match makes the card's next cryptogram
/// carry CVM `02`. The phone never sees the reference template.
/// `63Cx` is [`FlowDError::WrongPin`] (no match, x tries left), `6983`
/// [`FlowDError::PinLocked`], `6A88` (no fingerprint enrolled)
/// [`FlowDError::CvmNotAvailable`].
pub fn verify_fingerprint_on_card(
    card: &mut impl ApduTransport,
    live: &kessai_biometric::Template,
) -> Result<(), FlowDError> {
    let data = Zeroizing::new(kessai_card::biometric_verify_data(&live.to_iso19794_2()));
    let len = u16::try_from(data.len()).map_err(|_| FlowDError::Encoding("fingerprint record"))?;
    // Extended length: a minutiae record is usually above 255 bytes.
    let mut apdu = Zeroizing::new(vec![0x00, 0x21, 0x00, 0x81, 0x00]);
    apdu.extend_from_slice(&len.to_be_bytes());
    apdu.extend_from_slice(&data);
    match sw(&card.transmit_apdu(&apdu))?.0 {
        0x9000 => Ok(()),
        s if s & 0xFFF0 == 0x63C0 => Err(FlowDError::WrongPin {
            tries_left: (s & 0x0F) as u8,
        }),
        0x6983 => Err(FlowDError::PinLocked),
        0x6A88 => Err(FlowDError::CvmNotAvailable),
        s => Err(FlowDError::CardStatus(s)),
    }
}

/// Offline VERIFY PIN on the card (format-2 plaintext PIN block, as EMV
/// offline plaintext PIN). Success makes the card's next cryptogram carry
/// CVM `01`. `63Cx` is [`FlowDError::WrongPin`], `6983` [`FlowDError::PinLocked`].
pub fn verify_pin_offline(card: &mut impl ApduTransport, pin: &Pin) -> Result<(), FlowDError> {
    let digits = pin.expose_digits();
    let ascii: Zeroizing<Vec<u8>> = Zeroizing::new(digits.iter().map(|d| b'0' + d).collect());
    let block = Zeroizing::new(format2_pin_block(&ascii));
    let mut apdu = Zeroizing::new(vec![0x00, 0x20, 0x00, 0x80, 8]);
    apdu.extend_from_slice(&block[..]);
    match sw(&card.transmit_apdu(&apdu))?.0 {
        0x9000 => Ok(()),
        s if s & 0xFFF0 == 0x63C0 => Err(FlowDError::WrongPin {
            tries_left: (s & 0x0F) as u8,
        }),
        0x6983 => Err(FlowDError::PinLocked),
        s => Err(FlowDError::CardStatus(s)),
    }
}
