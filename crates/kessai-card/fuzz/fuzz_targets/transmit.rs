//! Feeds arbitrary bytes to `Card::transmit`: the input is split into
//! APDUs (a two-byte big-endian length, capped at 1 024, then that many
//! bytes, so extended-length commands such as the fingerprint VERIFY are
//! reachable); the card has a fingerprint enrolled; if the first byte is odd,
//! a legitimate SCP03 session (level 33) is opened first so that mutated
//! secured commands reach the secure-messaging and purse code. Invariants:
//! no panic, a status word on every response, balance ≤ maximum, counter
//! never decreases.
#![no_main]

use kessai_card::harness::HostDriver;
use kessai_card::{Card, MemNvm, PersonalizationParams, issuer_card_keys};
use kessai_money::Currency;
use kessai_scp03::{AesKey, SecurityLevel};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

/// One enrolled fingerprint for every run (generating it per input would
/// dominate the fuzzing time).
fn reference() -> &'static kessai_biometric::Template {
    static T: OnceLock<kessai_biometric::Template> = OnceLock::new();
    T.get_or_init(|| {
        use rand_core::SeedableRng as _;
        let mut rng = chacha20::ChaCha8Rng::seed_from_u64(5);
        let finger = kessai_biometric::synth::SyntheticFinger::generate(&mut rng);
        finger
            .enrol(&kessai_biometric::Matcher::default(), &mut rng)
            .expect("enrol")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    let jpy = Currency::from_code("JPY").expect("JPY");
    let card_id = "fuzz-card".parse().expect("id");
    let keys = issuer_card_keys(&AesKey::Aes128([0x42; 16]), &card_id, 1);
    let mut params = PersonalizationParams::new(card_id, keys.clone(), jpy, 100_000, [7; 32]);
    params.initial_balance_minor = 50_000;
    params.fingerprint = Some(reference().clone());
    let mut card = Card::personalize(params, MemNvm::new()).expect("personalize");
    card.power_on();
    if mode & 1 == 1 {
        let mut host = HostDriver::new(keys.static_keys);
        host.select(&mut card).expect("select");
        host.open(&mut card, SecurityLevel::Full, [mode; 8])
            .expect("open");
    }
    let mut counter = card.snapshot().counter;
    while let [hi, lo, tail @ ..] = rest {
        let n = usize::from(u16::from_be_bytes([*hi, *lo]))
            .min(1024)
            .min(tail.len());
        let (apdu, next) = tail.split_at(n);
        rest = next;
        let r = card.transmit(apdu);
        assert!(r.len() >= 2);
        let s = card.snapshot();
        assert!(s.balance.amount_minor >= 0 && s.balance.amount_minor <= s.purse_max.amount_minor);
        assert!(s.counter >= counter);
        counter = s.counter;
    }
});
