//! Shared fixture: an issuer host with two customer cards, one merchant
//! card, two merchants and their terminals, over a MemHost store.
#![allow(dead_code)]

use kessai_card::{Card, CardholderData, MemNvm, PersonalizationParams, issuer_card_keys};
use kessai_crypto::hpke::HpkeKeyPair;
use kessai_crypto::sign::SigningKey;
use kessai_flow_d::artefacts::LineItem;
use kessai_flow_d::host::{
    CardRecord, CustomerPart, Host, HostConfig, HostKeys, MerchantRecord, TerminalRecord,
};
use kessai_flow_d::memstore::MemHost;
use kessai_flow_d::password::PasswordKey;
use kessai_ids::{AccountId, CardId};
use kessai_ledger::{Account, AccountKind, BalanceLimit, Balances};
use kessai_money::{Currency, Money};
use kessai_pin::{PinVerificationData, PinVerificationKey};
use kessai_scp03::AesKey;
use kessai_secrets::{CardNumber, Pin, SecretKey};
use rand::SeedableRng;
use rand::rngs::StdRng;

/// 2026-01-01T00:00:00Z.
pub const NOW: u64 = 1_767_225_600_000;
pub const MASTER: [u8; 16] = [0x42; 16];
pub const PAN_A: &str = "4111111111111111";
pub const PAN_B: &str = "5555555555554444";
pub const SECRET_A: &str = "blue heron";
pub const CREDIT_LIMIT: i64 = 100_000;

pub fn jpy() -> Currency {
    Currency::from_code("JPY").unwrap()
}

pub fn yen(n: i64) -> Money {
    Money::new(n, jpy())
}

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// A generator with a seed never used before in this test process.
pub fn fresh() -> StdRng {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1_000_000);
    StdRng::seed_from_u64(NEXT.fetch_add(1, Ordering::Relaxed))
}

pub fn id<T: std::str::FromStr>(s: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    s.parse().unwrap()
}

pub fn goods(total: i64) -> Vec<LineItem> {
    vec![
        LineItem {
            description: "green tea".into(),
            quantity: 2,
            unit_price_minor: 150,
        },
        LineItem {
            description: "bento".into(),
            quantity: 1,
            unit_price_minor: total - 300,
        },
    ]
}

pub fn master() -> AesKey {
    AesKey::Aes128(MASTER)
}

/// A customer card's personalization: PIN 1234, cardholder data.
pub fn customer_params(card_id: &str, pan: &str, seed: u8) -> PersonalizationParams {
    let cid: CardId = id(card_id);
    let keys = issuer_card_keys(&master(), &cid, 1);
    let mut p = PersonalizationParams::new(cid, keys, jpy(), 50_000, [seed; 32]);
    p.pin = Some(Pin::new("1234").unwrap());
    p.cardholder = Some(CardholderData {
        pan: CardNumber::new(pan).unwrap(),
        expiry_yymm: "3012".into(),
        name: "TARO YAMADA".into(),
    });
    p
}

pub fn personalized(p: PersonalizationParams) -> Card<MemNvm> {
    let mut card = Card::personalize(p, MemNvm::new()).unwrap();
    card.power_on();
    card
}

pub fn customer_card(card_id: &str, pan: &str, seed: u8) -> Card<MemNvm> {
    personalized(customer_params(card_id, pan, seed))
}

pub fn merchant_card(card_id: &str) -> Card<MemNvm> {
    let cid: CardId = id(card_id);
    let keys = issuer_card_keys(&master(), &cid, 1);
    let p = PersonalizationParams::new(cid, keys, jpy(), 1, [9; 32]);
    let mut card = Card::personalize(p, MemNvm::new()).unwrap();
    card.power_on();
    card
}

pub fn pvk() -> PinVerificationKey {
    PinVerificationKey::new(SecretKey::new([0x22; 32]))
}

pub fn host_keys() -> HostKeys {
    HostKeys {
        card_master: master(),
        card_key_version: 1,
        cardholder_key: HpkeKeyPair::derive(b"kessai test flow-d cardholder key"),
        cardholder_key_ref: id("host-flow-d-hpke#1"),
        pin_verification: pvk(),
        password_key: PasswordKey::new(SecretKey::new([0x33; 32])),
        record_key: SecretKey::new([0x44; 32]),
        receipt_key: SigningKey::from_seed(&[0x55; 32]),
        receipt_key_ref: id("host-sign#1"),
    }
}

pub struct World {
    pub host: Host,
    pub store: MemHost,
    pub card_a: Card<MemNvm>,
    pub card_b: Card<MemNvm>,
    pub mcard: Card<MemNvm>,
}

pub fn customer_record(host: &Host, card_id: &str, pan: &str, funding: &str) -> CardRecord {
    let cid: CardId = id(card_id);
    let pan = CardNumber::new(pan).unwrap();
    let pvd = PinVerificationData::derive(&pan, &Pin::new("1234").unwrap(), &pvk(), [7; 16]);
    CardRecord {
        card_id: cid.clone(),
        currency: jpy(),
        last_counter: 0,
        blocked: false,
        customer: Some(CustomerPart {
            pan_digest: host.pan_digest(&pan),
            pan_masked: pan.masked(),
            expiry_yymm: "3012".into(),
            pin_verification: Some(pvd.to_bytes().to_vec()),
            secret_digest: Some(host.secret_digest(&cid, SECRET_A)),
            biometric_enrolled: true,
            cvm_tries_left: 3,
            funding_account: id(funding),
        }),
    }
}

pub fn world() -> World {
    world_with(HostConfig::default())
}

pub fn world_with(config: HostConfig) -> World {
    let host = Host::new(config, host_keys());
    let mut store = MemHost::new();
    for (cid, pan, fund) in [
        ("card-a", PAN_A, "fund-card-a"),
        ("card-b", PAN_B, "fund-card-b"),
    ] {
        store
            .cards
            .insert(id(cid), customer_record(&host, cid, pan, fund));
        store
            .ledger
            .insert_account(Account::new(
                id(fund),
                AccountKind::CardholderFunding,
                jpy(),
                BalanceLimit::MaxNetDebit(CREDIT_LIMIT),
            ))
            .unwrap();
    }
    store.cards.insert(
        id("mcard-shop-1"),
        CardRecord {
            card_id: id("mcard-shop-1"),
            currency: jpy(),
            last_counter: 0,
            blocked: false,
            customer: None,
        },
    );
    for (shop, active, mcard) in [
        ("shop-1", true, Some("mcard-shop-1")),
        ("shop-2", false, None),
    ] {
        let pay: AccountId = id(&format!("pay-{shop}"));
        store
            .ledger
            .insert_account(Account::new(
                pay.clone(),
                AccountKind::MerchantPayable,
                jpy(),
                BalanceLimit::Unlimited,
            ))
            .unwrap();
        store.merchants.insert(
            id(shop),
            MerchantRecord {
                store_id: id(shop),
                name: format!("Konbini {shop}"),
                active,
                payable_account: pay,
                merchant_card: mcard.map(id),
            },
        );
    }
    for (t, shop) in [
        ("pos-1", "shop-1"),
        ("pos-2", "shop-1"),
        ("pos-x", "shop-2"),
    ] {
        store.terminals.insert(
            id(t),
            TerminalRecord {
                terminal_id: id(t),
                store_id: id(shop),
                guess_failures: 0,
                guess_window_start_ms: 0,
            },
        );
    }
    World {
        host,
        store,
        card_a: customer_card("card-a", PAN_A, 1),
        card_b: customer_card("card-b", PAN_B, 2),
        mcard: merchant_card("mcard-shop-1"),
    }
}

pub fn balances(store: &MemHost, account: &str) -> Balances {
    store.ledger.account(&id(account)).unwrap().balances
}

/// Everything observable in the store, for "nothing changed" checks.
pub fn snapshot(store: &MemHost) -> String {
    format!(
        "{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
        store.challenges,
        store.cards,
        store.merchants,
        store.terminals,
        store.passwords,
        store.ledger.accounts().collect::<Vec<_>>(),
        store.ledger.transfers().collect::<Vec<_>>(),
        (store.phone_pushes.len(), store.pos_signals.len()),
    )
}

/// The owner's finger and a stranger's, and a customer card with the
/// owner's fingerprint enrolled (claim 16): the card's own matcher decides.
pub struct Fingers {
    pub owner: kessai_biometric::synth::SyntheticFinger,
    pub stranger: kessai_biometric::synth::SyntheticFinger,
    pub rng: chacha20::ChaCha8Rng,
}

impl Fingers {
    pub fn new(seed: u64) -> Self {
        use rand_core::SeedableRng as _;
        let mut rng = chacha20::ChaCha8Rng::seed_from_u64(seed);
        let owner = kessai_biometric::synth::SyntheticFinger::generate(&mut rng);
        let stranger = kessai_biometric::synth::SyntheticFinger::generate(&mut rng);
        Self {
            owner,
            stranger,
            rng,
        }
    }

    /// One live impression from the phone's (simulated) sensor.
    pub fn touch(&mut self, owner: bool) -> kessai_biometric::Template {
        let f = if owner { &self.owner } else { &self.stranger };
        f.impression(&Default::default(), &mut self.rng)
    }

    /// `customer_card` with the owner's finger enrolled.
    pub fn enrolled_card(&mut self, card_id: &str, pan: &str, seed: u8) -> Card<MemNvm> {
        let reference = self
            .owner
            .enrol(&kessai_biometric::Matcher::default(), &mut self.rng)
            .unwrap();
        let mut p = customer_params(card_id, pan, seed);
        p.pin = None;
        p.fingerprint = Some(reference);
        personalized(p)
    }
}
