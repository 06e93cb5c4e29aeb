//! Flow D's signed and sealed artefacts (COSE through kessai-crypto), each
//! with its own type name and version:
//!
//! | type | structure | from → to | binds |
//! |---|---|---|---|
//! | `flow-d-cardholder` v1 | COSE_Encrypt0 (HPKE) | phone → host | settlement information and personal identification; external AAD = challenge ‖ card id ‖ counter |
//! | `flow-d-receipt` v1 | COSE_Sign1 (host key) | host → POS, phone | transfer id, merchant, terminal, amount, goods, masked card, counter |
//! | `flow-d-card-profile` v1 | COSE_Sign1 (issuer key) | issuer → phone | card id, PAN digest, expiry, name (claim 10) |
//!
//! # PIN transport
//!
//! The PIN travels as an ISO 9564-1 **format-4** PIN block (kessai-pin)
//! enciphered under a fresh AES-128 key the phone draws for this one
//! authorization; key and block travel together inside the
//! `flow-d-cardholder` COSE_Encrypt0 sealed to the host's HPKE key (key
//! transport by public-key encryption, as ANSI TR-34 does for terminal
//! keys). The sealed object's external AAD binds the host challenge, card id
//! and counter, so it cannot be replayed into another authorization. The
//! host deciphers the block and checks it against the keyed
//! `PinVerificationData`; neither PIN nor block is ever stored.

use std::fmt;

use kessai_crypto::cose::{self, Artefact};
use kessai_crypto::hpke::{HpkeKeyPair, HpkePublicKey};
use kessai_crypto::sign::{SigningKey, VerifyingKey};
use kessai_ids::{CardId, KeyRef, StoreId, TerminalId, TransferId};
use kessai_money::{Currency, Money};
use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::FlowDError;

/// The external AAD of a sealed cardholder payload.
pub fn cardholder_aad(challenge: &[u8; 8], card_id: &CardId, counter: u32) -> Vec<u8> {
    let mut aad = b"kessai/flow-d/cardholder/v1\0".to_vec();
    aad.extend_from_slice(challenge);
    aad.extend_from_slice(&(card_id.as_str().len() as u16).to_be_bytes());
    aad.extend_from_slice(card_id.as_str().as_bytes());
    aad.extend_from_slice(&counter.to_be_bytes());
    aad
}

/// Settlement information and personal identification, sealed to the host
/// (never seen by the POS or the application-server gateway). Zeroized on
/// drop; `Debug` is redacted.
#[derive(Clone, Serialize, Deserialize, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct CardholderPayload {
    /// Card number, ASCII digits.
    pub pan: String,
    /// Expiry `YYMM`.
    pub expiry_yymm: String,
    /// Cardholder name.
    pub name: String,
    /// Online PIN: the per-authorization AES-128 key (16 bytes) and the
    /// format-4 PIN block (16 bytes) enciphered under it.
    pub pin: Option<(Vec<u8>, Vec<u8>)>,
    /// Registered secret (claim 17), as the customer typed it.
    pub secret: Option<String>,
}

impl fmt::Debug for CardholderPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CardholderPayload(redacted)")
    }
}

impl Artefact for CardholderPayload {
    const TYPE: &'static str = "flow-d-cardholder";
    const VERSION: u32 = 1;
}

/// Seals `payload` to the host's cardholder key.
pub fn seal_cardholder(
    payload: &CardholderPayload,
    host_key: &HpkePublicKey,
    host_key_ref: &KeyRef,
    aad: &[u8],
    rng: &mut impl CryptoRng,
) -> Result<Vec<u8>, FlowDError> {
    Ok(cose::seal_artefact(
        payload,
        host_key,
        host_key_ref,
        aad,
        rng,
    )?)
}

/// Opens a sealed cardholder payload (host side).
pub fn open_cardholder(
    bytes: &[u8],
    key_ref: &KeyRef,
    key: &HpkeKeyPair,
    aad: &[u8],
) -> Result<CardholderPayload, FlowDError> {
    let opened = cose::open_artefact::<CardholderPayload, &HpkeKeyPair>(
        bytes,
        |r| (r == key_ref).then_some(key),
        aad,
    )
    .map_err(|_| FlowDError::BadSealedData)?;
    Ok(opened.into_payload())
}

/// One line of goods (claim 12: "commodity information").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineItem {
    /// What was sold (1–64 printable characters).
    pub description: String,
    /// How many (1–10 000).
    pub quantity: u32,
    /// Unit price, minor units (> 0).
    pub unit_price_minor: i64,
}

/// Σ quantity × unit price, checked; `None` on overflow or a malformed
/// line (empty or over-long description, zero quantity, non-positive price,
/// no lines, more than 100 lines).
pub fn goods_total(goods: &[LineItem]) -> Option<i64> {
    if goods.is_empty() || goods.len() > 100 {
        return None;
    }
    let mut total = 0i64;
    for g in goods {
        let desc_ok = (1..=64).contains(&g.description.chars().count())
            && g.description.chars().all(|c| !c.is_control());
        if !desc_ok || !(1..=10_000).contains(&g.quantity) || g.unit_price_minor <= 0 {
            return None;
        }
        total = total.checked_add(g.unit_price_minor.checked_mul(i64::from(g.quantity))?)?;
    }
    Some(total)
}

/// Checks that `goods` add up to `amount` exactly.
pub fn check_goods(goods: &[LineItem], amount: Money) -> Result<(), FlowDError> {
    match goods_total(goods) {
        Some(t) if t == amount.amount_minor && t > 0 => Ok(()),
        _ => Err(FlowDError::GoodsMismatch),
    }
}

/// Which flow-D path settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Variant {
    /// Temporary password keyed in or scanned at the POS (claims 1, 5, 6).
    Password,
    /// Customer and merchant IC cards in the phone (claims 2, 7, 8).
    MerchantCard,
    /// Phone and POS over the short-range link (claims 3, 11–14).
    ShortRange,
}

/// The settlement receipt (claims 4, 15): signed by the host, printed by
/// the POS, shown on the phone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The ledger transfer that settled the sale.
    pub transfer_id: TransferId,
    /// Which path settled.
    pub variant: Variant,
    /// The merchant.
    pub merchant: StoreId,
    /// The merchant's display name.
    pub merchant_name: String,
    /// The POS terminal, if one took part.
    pub terminal: Option<TerminalId>,
    /// The amount settled.
    pub amount: Money,
    /// The goods.
    pub goods: Vec<LineItem>,
    /// The customer's card, masked (BIN + last 4).
    pub card_masked: String,
    /// The card counter of the authorizing cryptogram.
    pub card_counter: u32,
    /// When the host settled, unix ms.
    pub settled_at_ms: u64,
}

impl Artefact for Receipt {
    const TYPE: &'static str = "flow-d-receipt";
    const VERSION: u32 = 1;
}

fn fmt_money(amount_minor: i64, currency: Currency) -> String {
    Money::new(amount_minor, currency).to_string()
}

impl Receipt {
    /// The printable text for the POS printer and the phone's display.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        s.push_str("        kessai  RECEIPT\n");
        s.push_str(&format!("{}\n", self.merchant_name));
        s.push_str(&format!("merchant {}\n", self.merchant));
        if let Some(t) = &self.terminal {
            s.push_str(&format!("terminal {t}\n"));
        }
        s.push_str("--------------------------------\n");
        for g in &self.goods {
            let line = fmt_money(
                g.unit_price_minor.saturating_mul(i64::from(g.quantity)),
                self.amount.currency,
            );
            s.push_str(&format!("{} x{}  {}\n", g.description, g.quantity, line));
        }
        s.push_str("--------------------------------\n");
        s.push_str(&format!("TOTAL  {}\n", self.amount));
        s.push_str(&format!(
            "card   {}  (ctr {})\n",
            self.card_masked, self.card_counter
        ));
        s.push_str(&format!("txn    {}\n", self.transfer_id));
        s.push_str(&format!("at     {} ms\n", self.settled_at_ms));
        s
    }
}

/// A signed receipt: the COSE_Sign1 bytes and the decoded receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedReceipt {
    /// COSE_Sign1 bytes (type `flow-d-receipt`).
    pub cose: Vec<u8>,
    /// The receipt.
    pub receipt: Receipt,
}

/// Signs a receipt with the host key.
pub fn sign_receipt(
    r: Receipt,
    key: &SigningKey,
    key_ref: &KeyRef,
) -> Result<SignedReceipt, FlowDError> {
    let cose = cose::sign_artefact(&r, key, key_ref)?;
    Ok(SignedReceipt { cose, receipt: r })
}

/// Verifies a receipt (POS and phone side).
pub fn verify_receipt(
    bytes: &[u8],
    host_key_ref: &KeyRef,
    host_key: &VerifyingKey,
) -> Result<Receipt, FlowDError> {
    let v = cose::verify_artefact::<Receipt>(bytes, |r| (r == host_key_ref).then_some(*host_key))?;
    Ok(v.into_payload())
}

/// The issuer-signed card profile the phone keeps for the in-phone card
/// check (claim 10); see [`crate::phone::check_card_in_phone`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardProfile {
    /// The card.
    pub card_id: CardId,
    /// SHA-256 of `card id ‖ 00 ‖ PAN digits` (the profile lives on the
    /// customer's own phone next to the card; see the claim-10 notes).
    #[serde(with = "crate::hexser")]
    pub pan_digest: [u8; 32],
    /// Expiry `YYMM`.
    pub expiry_yymm: String,
    /// Cardholder name.
    pub name: String,
    /// SCP03 key version the card was personalized with.
    pub key_version: u8,
    /// ISO 4217 numeric currency of the card.
    pub currency_numeric: u16,
}

impl Artefact for CardProfile {
    const TYPE: &'static str = "flow-d-card-profile";
    const VERSION: u32 = 1;
}

/// Signs a card profile (issuer side, at enrolment).
pub fn sign_card_profile(
    p: &CardProfile,
    key: &SigningKey,
    key_ref: &KeyRef,
) -> Result<Vec<u8>, FlowDError> {
    Ok(cose::sign_artefact(p, key, key_ref)?)
}

/// The PAN digest used in [`CardProfile`].
pub fn profile_pan_digest(card_id: &CardId, pan_digits: &[u8]) -> [u8; 32] {
    kessai_crypto::digest::sha256(&[card_id.as_str().as_bytes(), &[0], pan_digits])
}
