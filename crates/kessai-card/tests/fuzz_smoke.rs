//! Stable-toolchain fuzz smoke test: 120 000 pseudo-random and mutated
//! valid APDUs (fixed seed) through `Card::transmit`, inside and outside a
//! secure channel. No panic, every response ends in a status word, and the
//! invariants hold: balance ≤ purse maximum, counter never decreases, a
//! successful purse change always consumes a counter value.

mod common;

use common::*;
use kessai_card::harness::HostDriver;
use kessai_scp03::host::{HostHandshake, HostSession};
use kessai_scp03::{CommandApdu, SecurityLevel};

/// xorshift64*: deterministic, dependency-free.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

fn corpus() -> Vec<Vec<u8>> {
    vec![
        select_apdu(),
        vec![0x80, 0x50, 0x00, 0x00, 0x08, 1, 2, 3, 4, 5, 6, 7, 8, 0x00],
        vec![
            0x84, 0x82, 0x33, 0x00, 0x10, 1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8,
        ],
        vec![0x00, 0x84, 0x00, 0x00, 0x08],
        vec![
            0x00, 0x20, 0x00, 0x80, 0x08, 0x24, 0x12, 0x34, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
        ],
        vec![0x80, 0xCA, 0x00, 0x00, 0x00],
        vec![
            0x80, 0xAE, 0x00, 0x00, 18, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0, 0, 0, 9, 0x01, 0x88,
            0x00,
        ],
        HostDriver::purse_command(true, 10, 392, [1; 16], [2; 16])
            .encode()
            .unwrap(),
        vec![0x80, 0x5A, 0x00, 0x00, 0x00, 0x00, 0x00],
    ]
}

/// SELECT + INITIALIZE UPDATE + EXTERNAL AUTHENTICATE by hand.
fn open_raw(
    card: &mut kessai_card::Card<kessai_card::MemNvm>,
    level: SecurityLevel,
    challenge: [u8; 8],
) -> HostSession {
    assert_eq!(sw(&card.transmit(&select_apdu())), 0x9000);
    let hs = HostHandshake::new(1, challenge);
    let r = card.transmit(&hs.initialize_update());
    let parsed = hs.parse_response(&r).unwrap();
    let (pending, ea) = hs
        .authenticate(&parsed, &keys().static_keys, level)
        .unwrap();
    pending.confirm(&card.transmit(&ea)).unwrap()
}

#[test]
fn transmit_survives_random_and_mutated_apdus() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut card = card_with(50_000);
    let corpus = corpus();
    let mut session: Option<HostSession> = None;
    let mut last_counter = card.snapshot().counter;
    let mut last_balance = card.snapshot().balance.amount_minor;
    let mut wrapped: Vec<Vec<u8>> = Vec::new();
    let mut purse_ok = 0u32;
    for i in 0..120_000usize {
        // Every so often: a fresh legitimate session, so that correctly
        // wrapped (then mutated or replayed) commands reach the SM paths.
        if i % 1_000 == 0 {
            card.power_on();
            let level = [
                SecurityLevel::CMac,
                SecurityLevel::CMacCDec,
                SecurityLevel::Full,
            ][(i / 1_000) % 3];
            session = Some(open_raw(&mut card, level, rng.next().to_be_bytes()));
            wrapped.clear();
        }
        let r = match rng.below(5) {
            0 => {
                let n = rng.below(300) as usize;
                let a: Vec<u8> = (0..n).map(|_| rng.byte()).collect();
                card.transmit(&a)
            }
            1 => {
                let mut a = corpus[rng.below(corpus.len() as u64) as usize].clone();
                mutate(&mut rng, &mut a);
                card.transmit(&a)
            }
            _ => {
                let cmd = match rng.below(4) {
                    0 => CommandApdu::new(0x80, 0x5C, 0, 0, vec![]).with_le(256),
                    1 => HostDriver::purse_command(
                        rng.below(2) == 0,
                        rng.below(3_000) + 1,
                        if rng.below(8) == 0 { 978 } else { 392 },
                        [rng.byte(); 16],
                        [0; 16],
                    ),
                    2 => CommandApdu::new(0x80, 0x5A, rng.byte() % 20, 0, vec![]).with_le(256),
                    _ => CommandApdu::new(
                        0x80,
                        rng.byte(),
                        rng.byte(),
                        rng.byte(),
                        vec![rng.byte(); rng.below(40) as usize],
                    ),
                };
                if session.as_ref().is_none_or(|s| s.is_closed()) && rng.below(2) == 0 {
                    let level =
                        [SecurityLevel::CMacCDec, SecurityLevel::Full][rng.below(2) as usize];
                    session = Some(open_raw(&mut card, level, rng.next().to_be_bytes()));
                }
                match session.as_mut().filter(|s| !s.is_closed()) {
                    Some(s) => {
                        let mut a = s.wrap(&cmd).unwrap();
                        let pristine = rng.below(3) != 0;
                        if pristine {
                            wrapped.push(a.clone());
                        } else if rng.below(4) == 0 && !wrapped.is_empty() {
                            a = wrapped[rng.below(wrapped.len() as u64) as usize].clone();
                        } else {
                            mutate(&mut rng, &mut a);
                        }
                        let r = card.transmit(&a);
                        match s.unwrap(&r) {
                            Ok(out) => {
                                if pristine
                                    && out.sw == 0x9000
                                    && (cmd.ins == 0x54 || cmd.ins == 0x52)
                                {
                                    purse_ok += 1;
                                }
                            }
                            Err(_) => session = None,
                        }
                        r
                    }
                    None => card.transmit(&cmd.encode().unwrap()),
                }
            }
        };
        assert!(r.len() >= 2, "response without status word");
        let s = card.snapshot();
        assert!(
            s.balance.amount_minor >= 0 && s.balance.amount_minor <= s.purse_max.amount_minor,
            "balance out of range"
        );
        assert!(s.counter >= last_counter, "counter went backwards");
        if s.balance.amount_minor != last_balance {
            assert!(
                s.counter > last_counter,
                "balance changed without a counter value"
            );
        }
        last_counter = s.counter;
        last_balance = s.balance.amount_minor;
    }
    assert!(
        purse_ok > 100,
        "the smoke run must reach successful purse commands ({purse_ok})"
    );
}

fn mutate(rng: &mut Rng, a: &mut Vec<u8>) {
    match rng.below(5) {
        0 if !a.is_empty() => {
            let i = rng.below(a.len() as u64) as usize;
            a[i] ^= 1 << rng.below(8);
        }
        1 if !a.is_empty() => {
            let i = rng.below(a.len() as u64) as usize;
            a[i] = rng.byte();
        }
        2 if !a.is_empty() => {
            let n = rng.below(a.len() as u64) as usize;
            a.truncate(n);
        }
        3 => a.push(rng.byte()),
        _ => {
            if a.len() > 4 {
                a.remove(4);
            }
        }
    }
}
