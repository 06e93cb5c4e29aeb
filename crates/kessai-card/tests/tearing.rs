//! Tearing sweep: cut power after every single NVM write of DEBIT, CREDIT,
//! an aborted DEBIT, GENERATE CRYPTOGRAM and VERIFY PIN; after the next
//! power-up the state must be exactly the old or exactly the new one, and
//! the transaction counter must never go backwards.

mod common;

use common::*;
use kessai_card::harness::HostDriver;
use kessai_card::{Card, CardSnapshot, MemNvm, Nvm, format2_pin_block};
use kessai_scp03::SecurityLevel;

/// Runs `op` on a clone of `card` without faults, returning the number of
/// writes it made and the resulting state.
fn reference_run(
    card: &Card<MemNvm>,
    host_for: &dyn Fn(&mut Card<MemNvm>) -> HostDriver,
    op: &dyn Fn(&mut Card<MemNvm>, &mut HostDriver),
) -> (u64, CardSnapshot) {
    let mut c = Card::load(card.nvm().clone()).unwrap();
    let mut host = host_for(&mut c);
    let before = c.nvm().write_count();
    op(&mut c, &mut host);
    let writes = c.nvm().write_count() - before;
    (writes, c.snapshot())
}

fn sweep(
    start_balance: i64,
    host_for: &dyn Fn(&mut Card<MemNvm>) -> HostDriver,
    op: &dyn Fn(&mut Card<MemNvm>, &mut HostDriver),
    min_writes: u64,
) {
    let base = card_with(start_balance);
    let old = base.snapshot();
    let (writes, new) = reference_run(&base, host_for, op);
    assert!(writes >= min_writes, "operation made {writes} writes");
    assert_ne!(old, new);
    let mut saw_old = false;
    let mut saw_new = false;
    for k in 0..=writes {
        let mut card = Card::load(base.nvm().clone()).unwrap();
        let mut host = host_for(&mut card);
        card.nvm_mut().cut_power_after(k);
        op(&mut card, &mut host);
        // Power cut: the reader sees nothing more; power comes back.
        card.power_off();
        card.nvm_mut().restore_power();
        card.power_on();
        let after = card.snapshot();
        assert!(
            after == old || after == new,
            "cut after write {k}/{writes}: state is neither old nor new\nold {old:?}\nnew {new:?}\ngot {after:?}"
        );
        assert!(
            after.counter >= old.counter,
            "counter went backwards at k={k}"
        );
        if k == writes {
            assert_eq!(after, new, "all writes done: must be new");
        }
        saw_old |= after == old;
        saw_new |= after == new;
        // No journal is left behind and the card still works.
        assert_eq!(
            card.nvm().read(kessai_card::RecordId(0x00FF)).unwrap(),
            None
        );
        let mut host = HostDriver::new(keys().static_keys);
        host.select(&mut card).unwrap();
        host.open(&mut card, SecurityLevel::Full, [0x77; 8])
            .unwrap();
        let bal = host.read_balance(&mut card).unwrap();
        assert_eq!(bal.counter, after.counter);
        assert_eq!(bal.balance_minor as i64, after.balance.amount_minor);
    }
    assert!(saw_old && saw_new);
}

fn full(card: &mut Card<MemNvm>) -> HostDriver {
    open(card, SecurityLevel::Full)
}

#[test]
fn debit_is_atomic_at_every_write() {
    sweep(
        5_000,
        &full,
        &|card, host| {
            let _ = host.debit(card, 1_234, [0xAB; 16], [0xCD; 16]);
        },
        4,
    );
}

#[test]
fn credit_is_atomic_at_every_write() {
    sweep(
        5_000,
        &full,
        &|card, host| {
            let _ = host.credit(card, 777, [0x11; 16], [0x22; 16]);
        },
        4,
    );
}

#[test]
fn debit_into_a_full_log_ring_is_atomic() {
    // Fill the ring first so the debit overwrites the oldest slot.
    let base = card_with(MAX);
    let mut card = Card::load(base.nvm().clone()).unwrap();
    let mut host = full(&mut card);
    for i in 0..16u8 {
        host.debit(&mut card, 1, [i; 16], [0; 16]).unwrap();
    }
    let nvm = card.into_nvm();
    let old = Card::load(nvm.clone()).unwrap().snapshot();
    for k in 0..=4 {
        let mut card = Card::load(nvm.clone()).unwrap();
        let mut host = full(&mut card);
        card.nvm_mut().cut_power_after(k);
        let _ = host.debit(&mut card, 5, [0xEE; 16], [0; 16]);
        card.nvm_mut().restore_power();
        card.power_on();
        let s = card.snapshot();
        assert_eq!(s.log.len(), 16);
        if k < 1 {
            assert_eq!(s, old);
        } else {
            assert_eq!(s.counter, old.counter + 1);
            assert_eq!(s.log[0].reference, [0xEE; 16]);
            assert_eq!(
                s.log[15], old.log[14],
                "oldest record dropped, the rest kept"
            );
            assert_eq!(s.balance.amount_minor, old.balance.amount_minor - 5);
        }
    }
}

#[test]
fn aborted_debit_consumes_the_counter_atomically() {
    sweep(
        100,
        &full,
        &|card, host| {
            let _ = host.debit(card, 1_000, [1; 16], [0; 16]);
        },
        1,
    );
}

#[test]
fn generate_cryptogram_counter_bump_is_atomic() {
    sweep(
        0,
        &|card| {
            card.transmit(&select_apdu());
            HostDriver::new(keys().static_keys)
        },
        &|card, _| {
            let mut a = vec![0x80, 0xAE, 0x00, 0x00, 18];
            a.extend_from_slice(&[1; 8]);
            a.extend_from_slice(&100u64.to_be_bytes());
            a.extend_from_slice(&392u16.to_be_bytes());
            card.transmit(&a);
        },
        1,
    );
}

fn verify_apdu(pin: &[u8]) -> Vec<u8> {
    let mut a = vec![0x00, 0x20, 0x00, 0x80, 0x08];
    a.extend_from_slice(&format2_pin_block(pin));
    a
}

#[test]
fn torn_pin_attempt_never_resets_the_try_counter() {
    for (pin, prior_failures) in [(&b"9999"[..], 0u8), (&b"1234"[..], 1), (&b"1234"[..], 2)] {
        let mut base = card_with(0);
        base.transmit(&select_apdu());
        for _ in 0..prior_failures {
            assert_eq!(sw(&base.transmit(&verify_apdu(b"0000"))) & 0xFFF0, 0x63C0);
        }
        let old = base.snapshot().pin_tries_left.unwrap();
        let nvm = base.into_nvm();
        let mut probe = Card::load(nvm.clone()).unwrap();
        probe.transmit(&select_apdu());
        let before = probe.nvm().write_count();
        probe.transmit(&verify_apdu(pin));
        let writes = probe.nvm().write_count() - before;
        assert_eq!(writes, if pin == b"1234" { 2 } else { 1 });
        for k in 0..=writes {
            let mut card = Card::load(nvm.clone()).unwrap();
            card.transmit(&select_apdu());
            card.nvm_mut().cut_power_after(k);
            card.transmit(&verify_apdu(pin));
            card.nvm_mut().restore_power();
            card.power_on();
            let tries = card.snapshot().pin_tries_left.unwrap();
            if k == 0 {
                assert_eq!(tries, old, "attempt did not happen");
            } else if k < writes {
                assert_eq!(tries, old - 1, "torn attempt counts as a failure");
            } else if pin == b"1234" {
                assert_eq!(tries, 3, "completed correct attempt resets");
            } else {
                assert_eq!(tries, old - 1);
            }
            // Never a reset without the full, successful attempt.
            assert!(tries <= old || (k == writes && pin == b"1234"));
        }
    }
}

#[test]
fn memory_failure_makes_the_card_mute_until_power_on() {
    let mut card = card_with(1_000);
    let mut host = full(&mut card);
    card.nvm_mut().cut_power_after(1);
    let r = host.send(
        &mut card,
        &HostDriver::purse_command(true, 10, 392, [1; 16], [0; 16]),
    );
    assert_eq!(r.unwrap().sw, 0x6581);
    assert_eq!(card.transmit(&select_apdu()), [0x65, 0x81]);
    card.nvm_mut().restore_power();
    card.power_on();
    // The journal had been written: the debit completed at power-up.
    assert_eq!(purse_state(&card), (990, 1, 1));
}

/// A cut during recovery itself: once the journal of a DEBIT is written
/// (its commit point), power-up re-applies it. Cut that re-application
/// after each of its own writes, power up again, and the card must come
/// back with exactly the new state and no journal, however many times
/// recovery was interrupted.
#[test]
fn recovery_cut_at_every_write_still_ends_in_the_new_state() {
    let base = card_with(5_000);
    let op = |card: &mut Card<MemNvm>, host: &mut HostDriver| {
        let _ = host.debit(card, 1_234, [0xAB; 16], [0xCD; 16]);
    };
    let (writes, new) = reference_run(&base, &full, &op);
    let journal = kessai_card::RecordId(0x00FF);
    let mut torn_with_journal = 0;
    for k in 0..writes {
        let mut card = Card::load(base.nvm().clone()).unwrap();
        let mut host = full(&mut card);
        card.nvm_mut().cut_power_after(k);
        op(&mut card, &mut host);
        card.power_off();
        card.nvm_mut().restore_power();
        if card.nvm().read(journal).unwrap().is_none() {
            continue;
        }
        torn_with_journal += 1;
        let torn = card.nvm().clone();
        // How many writes an uninterrupted recovery makes.
        let before = torn.write_count();
        let recovered = Card::load(torn.clone()).unwrap();
        assert_eq!(recovered.snapshot(), new);
        let recovery_writes = recovered.nvm().write_count() - before;
        assert!(
            recovery_writes >= 2,
            "recovery made {recovery_writes} writes"
        );
        for j in 0..recovery_writes {
            // The same torn memory; this power-up's recovery is cut after
            // its j-th write (the card goes mute), and the next one runs.
            *card.nvm_mut() = torn.clone();
            card.nvm_mut().cut_power_after(j);
            card.power_on();
            assert!(
                card.nvm().write_count() - before <= j,
                "recovery cut after write {j} kept writing"
            );
            card.power_off();
            card.nvm_mut().restore_power();
            card.power_on();
            assert_eq!(card.snapshot(), new, "recovery cut after write {j}");
            assert_eq!(card.nvm().read(journal).unwrap(), None);
        }
    }
    assert!(torn_with_journal > 0, "no cut left a journal behind");
}
