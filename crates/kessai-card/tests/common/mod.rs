//! Shared setup for the integration tests.
#![allow(dead_code)]

use kessai_card::harness::HostDriver;
use kessai_card::{
    Card, CardSnapshot, CardholderData, IssuerCardKeys, MemNvm, PersonalizationParams,
    issuer_card_keys,
};
use kessai_money::Currency;
use kessai_scp03::{AesKey, SecurityLevel};
use kessai_secrets::{CardNumber, Pin};

pub const MAX: i64 = 100_000;

pub fn jpy() -> Currency {
    Currency::from_code("JPY").unwrap()
}

pub fn keys() -> IssuerCardKeys {
    issuer_card_keys(
        &AesKey::Aes128([0x42; 16]),
        &"card-0001".parse().unwrap(),
        1,
    )
}

/// A personalized, powered card with `balance` and PIN 1234.
pub fn card_with(balance: i64) -> Card<MemNvm> {
    let mut p =
        PersonalizationParams::new("card-0001".parse().unwrap(), keys(), jpy(), MAX, [7; 32]);
    p.initial_balance_minor = balance;
    p.pin = Some(Pin::new("1234").unwrap());
    p.cardholder = Some(CardholderData {
        pan: CardNumber::new("4111111111111111").unwrap(),
        expiry_yymm: "2812".into(),
        name: "HANAKO YAMADA".into(),
    });
    let mut card = Card::personalize(p, MemNvm::new()).unwrap();
    card.power_on();
    card
}

pub fn select_apdu() -> Vec<u8> {
    let mut a = vec![0x00, 0xA4, 0x04, 0x00, 0x08];
    a.extend_from_slice(&kessai_card::AID);
    a.push(0x00);
    a
}

/// Selected card with an open session at `level`.
pub fn open(card: &mut Card<MemNvm>, level: SecurityLevel) -> HostDriver {
    let mut host = HostDriver::new(keys().static_keys);
    host.select(card).unwrap();
    host.open(card, level, [0x5C; 8]).unwrap();
    host
}

pub fn sw(r: &[u8]) -> u16 {
    u16::from_be_bytes([r[r.len() - 2], r[r.len() - 1]])
}

/// Balance, counter and log: what must stay consistent.
pub fn purse_state(card: &Card<MemNvm>) -> (i64, u32, usize) {
    let s: CardSnapshot = card.snapshot();
    (s.balance.amount_minor, s.counter, s.log.len())
}
