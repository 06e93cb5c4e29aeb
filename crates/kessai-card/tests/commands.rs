//! The command set end to end, and every bad input the issue lists: each
//! asserts the status word, that balance / log / counter stay consistent,
//! and whether the session survives.

mod common;

use common::*;
use kessai_card::harness::{DriverError, HostDriver};
use kessai_card::{Lifecycle, LogKind, application_cryptogram, atr, format2_pin_block};
use kessai_scp03::host::HostHandshake;
use kessai_scp03::{CommandApdu, Scp03Error, SecurityLevel};

fn debit_cmd(amount: u64, currency: u16) -> CommandApdu {
    HostDriver::purse_command(true, amount, currency, [0xD1; 16], [0xC0; 16])
}

#[test]
fn power_on_returns_the_atr_and_select_answers_fci() {
    let mut card = card_with(0);
    assert_eq!(card.power_on(), atr());
    let r = card.transmit(&select_apdu());
    assert_eq!(sw(&r), 0x9000);
    assert_eq!(&r[..4], &[0x6F, 0x10, 0x84, 0x08]);
    assert_eq!(&r[4..12], &kessai_card::AID);
    // Unknown AID.
    let r = card.transmit(&[0x00, 0xA4, 0x04, 0x00, 0x02, 0xA0, 0x00]);
    assert_eq!(r, [0x6A, 0x82]);
    // Nothing selected now: commands are refused.
    assert_eq!(card.transmit(&[0x80, 0xCA, 0x00, 0x00, 0x00]), [0x69, 0x85]);
}

#[test]
fn debit_and_credit_return_a_verifiable_pcn_and_log() {
    let mut card = card_with(5_000);
    let mut host = open(&mut card, SecurityLevel::Full);
    let c = host.credit(&mut card, 2_000, [1; 16], [2; 16]).unwrap();
    assert_eq!(
        (c.kind, c.counter, c.balance_after_minor),
        (LogKind::Credit, 1, 7_000)
    );
    for i in 0..6u8 {
        let d = host.debit(&mut card, 100, [10 + i; 16], [3; 16]).unwrap();
        assert_eq!(d.counter, 2 + u32::from(i));
        assert_eq!(d.balance_after_minor, 7_000 - 100 * (u64::from(i) + 1));
        assert_eq!(d.currency_numeric, 392);
    }
    let bal = host.read_balance(&mut card).unwrap();
    assert_eq!(
        (bal.balance_minor, bal.counter, bal.purse_max_minor),
        (6_400, 7, MAX as u64)
    );
    // Short READ LOG returns at most 4, extended returns all 7.
    let short = host.read_log(&mut card, 4).unwrap();
    assert_eq!(short.len(), 4);
    assert_eq!(short[0].reference, [15; 16]);
    let all = host.read_log(&mut card, 16).unwrap();
    assert_eq!(all.len(), 7);
    assert_eq!(all[6].kind, LogKind::Credit);
    assert_eq!(card.snapshot().log, all);
}

#[test]
fn every_security_level_works_and_purse_updates_need_c_dec() {
    for level in [
        SecurityLevel::CMac,
        SecurityLevel::CMacCDec,
        SecurityLevel::Full,
    ] {
        let mut card = card_with(1_000);
        let mut host = open(&mut card, level);
        assert_eq!(host.read_balance(&mut card).unwrap().balance_minor, 1_000);
        let r = host.debit(&mut card, 10, [1; 16], [0; 16]);
        if level == SecurityLevel::CMac {
            assert_eq!(r.unwrap_err(), DriverError::Status(0x6982));
            assert!(!card.has_session());
            assert_eq!(purse_state(&card), (1_000, 0, 0));
        } else {
            assert_eq!(r.unwrap().balance_after_minor, 990);
            assert!(card.has_session());
        }
    }
}

#[test]
fn log_ring_keeps_the_most_recent_sixteen() {
    let mut card = card_with(MAX);
    let mut host = open(&mut card, SecurityLevel::Full);
    for i in 0..20u8 {
        host.debit(&mut card, 1, [i; 16], [0; 16]).unwrap();
    }
    let log = host.read_log(&mut card, 16).unwrap();
    assert_eq!(log.len(), 16);
    assert_eq!(log[0].reference, [19; 16]);
    assert_eq!(log[15].reference, [4; 16]);
    assert_eq!(log[0].counter, 20);
}

#[test]
fn wrong_card_cryptogram_is_detected_by_the_host() {
    let mut card = card_with(1_000);
    let wrong = kessai_card::issuer_card_keys(
        &kessai_scp03::AesKey::Aes128([0x43; 16]),
        &"card-0001".parse().unwrap(),
        1,
    );
    let mut host = HostDriver::new(wrong.static_keys);
    host.select(&mut card).unwrap();
    assert_eq!(
        host.open(&mut card, SecurityLevel::Full, [1; 8])
            .unwrap_err(),
        DriverError::Scp03(Scp03Error::CardCryptogramMismatch)
    );
    assert!(!card.has_session());
    assert_eq!(purse_state(&card), (1_000, 0, 0));
}

/// INITIALIZE UPDATE by hand; returns the EXTERNAL AUTHENTICATE the right
/// host would send and the pending host session.
fn handshake(
    card: &mut kessai_card::Card<kessai_card::MemNvm>,
    challenge: [u8; 8],
) -> (kessai_scp03::host::PendingHostSession, Vec<u8>) {
    let hs = HostHandshake::new(1, challenge);
    let r = card.transmit(&hs.initialize_update());
    let parsed = hs.parse_response(&r).unwrap();
    hs.authenticate(&parsed, &keys().static_keys, SecurityLevel::Full)
        .unwrap()
}

#[test]
fn wrong_host_cryptogram_or_ext_auth_mac_gives_6300_6982_and_no_session() {
    let mut card = card_with(1_000);
    assert_eq!(sw(&card.transmit(&select_apdu())), 0x9000);
    let (_, mut ea) = handshake(&mut card, [2; 8]);
    ea[5] ^= 0x01; // host cryptogram
    assert_eq!(card.transmit(&ea), [0x63, 0x00]);
    assert!(!card.has_session());
    // The handshake is consumed: the right EXTERNAL AUTHENTICATE now fails too.
    ea[5] ^= 0x01;
    assert_eq!(card.transmit(&ea), [0x69, 0x85]);
    let (_, mut ea) = handshake(&mut card, [3; 8]);
    let n = ea.len();
    ea[n - 1] ^= 0x01; // C-MAC
    assert_eq!(card.transmit(&ea), [0x69, 0x82]);
    assert!(!card.has_session());
    // A secured command without a session.
    let r = card.transmit(&[0x84, 0x5C, 0x00, 0x00, 0x08, 1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(r, [0x69, 0x82]);
    assert_eq!(purse_state(&card), (1_000, 0, 0));
}

#[test]
fn replayed_external_authenticate_is_refused() {
    let mut card = card_with(1_000);
    card.transmit(&select_apdu());
    let (pending, ea) = handshake(&mut card, [4; 8]);
    assert_eq!(card.transmit(&ea), [0x90, 0x00]);
    let _session = pending.confirm(&[0x90, 0x00]).unwrap();
    assert!(card.has_session());
    // Replay inside the session: not expected now; the session is dropped.
    assert_eq!(card.transmit(&ea), [0x69, 0x85]);
    assert!(!card.has_session());
    // Replay after a fresh INITIALIZE UPDATE with the same host challenge:
    // the card challenge moved on (sequence counter), so the cryptogram is wrong.
    let (_, _ea2) = handshake(&mut card, [4; 8]);
    assert_eq!(card.transmit(&ea), [0x63, 0x00]);
    assert!(!card.has_session());
    assert_eq!(purse_state(&card), (1_000, 0, 0));
}

/// Opens a session by hand, returning the host session for raw wrapping.
fn raw_session(
    card: &mut kessai_card::Card<kessai_card::MemNvm>,
) -> kessai_scp03::host::HostSession {
    card.transmit(&select_apdu());
    let (pending, ea) = handshake(card, [5; 8]);
    assert_eq!(card.transmit(&ea), [0x90, 0x00]);
    pending.confirm(&[0x90, 0x00]).unwrap()
}

#[test]
fn tampered_c_mac_and_tampered_ciphertext_drop_the_session() {
    for byte in [usize::MAX, 7] {
        let mut card = card_with(1_000);
        let mut host = raw_session(&mut card);
        let mut apdu = host.wrap(&debit_cmd(100, 392)).unwrap();
        // Last data byte is in the C-MAC (before Le); byte 7 is ciphertext.
        let i = if byte == usize::MAX {
            apdu.len() - 2
        } else {
            byte
        };
        apdu[i] ^= 0x80;
        assert_eq!(card.transmit(&apdu), [0x69, 0x82]);
        assert!(!card.has_session());
        assert_eq!(purse_state(&card), (1_000, 0, 0));
    }
}

#[test]
fn out_of_order_and_replayed_secured_apdus_are_refused() {
    let mut card = card_with(1_000);
    let mut host = raw_session(&mut card);
    let c1 = host.wrap(&debit_cmd(100, 392)).unwrap();
    let c2 = host.wrap(&debit_cmd(200, 392)).unwrap();
    assert_eq!(card.transmit(&c2), [0x69, 0x82]);
    assert!(!card.has_session());
    assert_eq!(purse_state(&card), (1_000, 0, 0));

    let mut host = raw_session(&mut card);
    let c1b = host.wrap(&debit_cmd(100, 392)).unwrap();
    assert_ne!(c1, c1b);
    let r = card.transmit(&c1b);
    assert_eq!(host.unwrap(&r).unwrap().sw, 0x9000);
    assert_eq!(purse_state(&card), (900, 1, 1));
    // Replay of the same secured DEBIT: refused, debited once only.
    assert_eq!(card.transmit(&c1b), [0x69, 0x82]);
    assert!(!card.has_session());
    assert_eq!(purse_state(&card), (900, 1, 1));
}

#[test]
fn purse_commands_without_a_session_are_refused() {
    let mut card = card_with(1_000);
    card.transmit(&select_apdu());
    for apdu in [
        vec![0x80, 0x5C, 0x00, 0x00, 0x00],
        debit_cmd(1, 392).encode().unwrap(),
        HostDriver::purse_command(false, 1, 392, [0; 16], [0; 16])
            .encode()
            .unwrap(),
        vec![0x80, 0x5A, 0x04, 0x00, 0x00],
        vec![0x80, 0xF0, 0x00, 0x02],
    ] {
        assert_eq!(card.transmit(&apdu), [0x69, 0x82], "{apdu:02X?}");
    }
    assert_eq!(purse_state(&card), (1_000, 0, 0));
    // A clear command inside a session ends it.
    let mut host = open(&mut card, SecurityLevel::Full);
    assert_eq!(card.transmit(&[0x80, 0xCA, 0x00, 0x00, 0x00]), [0x69, 0x82]);
    assert!(!card.has_session());
    assert!(host.read_balance(&mut card).is_err());
}

#[test]
fn debit_beyond_balance_credit_beyond_max_and_wrong_currency() {
    let mut card = card_with(1_000);
    let mut host = open(&mut card, SecurityLevel::Full);
    // Beyond balance: 6985, counter consumed, nothing else changes, session kept.
    assert_eq!(
        host.debit(&mut card, 1_001, [1; 16], [0; 16]).unwrap_err(),
        DriverError::Status(0x6985)
    );
    assert_eq!(purse_state(&card), (1_000, 1, 0));
    assert!(card.has_session());
    // Beyond the purse maximum: 6A84.
    assert_eq!(
        host.credit(&mut card, (MAX - 1_000 + 1) as u64, [2; 16], [0; 16])
            .unwrap_err(),
        DriverError::Status(0x6A84)
    );
    assert_eq!(purse_state(&card), (1_000, 2, 0));
    // Exactly to the maximum is fine.
    host.credit(&mut card, (MAX - 1_000) as u64, [3; 16], [0; 16])
        .unwrap();
    assert_eq!(purse_state(&card), (MAX, 3, 1));
    // Wrong currency (EUR 978): 6A80, counter consumed.
    let r = host.send(&mut card, &debit_cmd(10, 978)).unwrap();
    assert_eq!(r.sw, 0x6A80);
    assert_eq!(purse_state(&card), (MAX, 4, 1));
    // Zero amount is malformed: no counter value consumed.
    assert_eq!(host.send(&mut card, &debit_cmd(0, 392)).unwrap().sw, 0x6A80);
    assert_eq!(purse_state(&card), (MAX, 4, 1));
    // Wrong data length: 6700, no counter consumed, session kept.
    let mut short = debit_cmd(10, 392);
    short.data.pop();
    assert_eq!(host.send(&mut card, &short).unwrap().sw, 0x6700);
    assert_eq!(purse_state(&card), (MAX, 4, 1));
    assert!(card.has_session());
    assert_eq!(
        host.debit(&mut card, 10, [4; 16], [0; 16]).unwrap().counter,
        5
    );
}

#[test]
fn malformed_truncated_and_extended_apdus() {
    let mut card = card_with(1_000);
    card.transmit(&select_apdu());
    let cases: &[(&[u8], u16)] = &[
        (&[], 0x6700),
        (&[0x00], 0x6700),
        (&[0x00, 0xA4, 0x04], 0x6700),
        (&[0x80, 0xCA, 0x00, 0x00, 0x05, 0x01], 0x6700), // Lc says 5, 1 byte follows
        (&[0x80, 0xCA, 0x00, 0x00, 0x01, 0x01, 0x00, 0x00], 0x6700),
        (&[0xFF, 0xCA, 0x00, 0x00], 0x6E00),
        (&[0x90, 0xCA, 0x00, 0x00], 0x6884), // chaining
        (&[0x81, 0xCA, 0x00, 0x00], 0x6881), // logical channel
        (&[0x88, 0xCA, 0x00, 0x00], 0x6882), // ISO SM
        (&[0x40, 0xCA, 0x00, 0x00], 0x6E00),
        (&[0x80, 0x10, 0x00, 0x00], 0x6D00),
        (&[0x00, 0xCA, 0x00, 0x00], 0x6E00), // right INS, wrong class
        (&[0x80, 0xCA, 0x01, 0x00], 0x6A86),
        (&[0x00, 0x84, 0x00, 0x00, 0x04], 0x6C08),
        // Extended length where not allowed: GET CHALLENGE, SELECT.
        (&[0x00, 0x84, 0x00, 0x00, 0x00, 0x00, 0x08], 0x6700),
        (
            &[
                0x00, 0xA4, 0x04, 0x00, 0x00, 0x00, 0x08, 0xF0, 0x6B, 0x65, 0x73, 0x73, 0x61, 0x69,
                0x01,
            ],
            0x6700,
        ),
    ];
    for (apdu, expected) in cases {
        let r = card.transmit(apdu);
        assert_eq!(r, expected.to_be_bytes(), "{apdu:02X?}");
    }
    assert_eq!(purse_state(&card), (1_000, 0, 0));
    // Truncated secured APDU: parse error, 6700; the session survives
    // (no secure messaging was checked) and the next command works.
    let mut host = raw_session(&mut card);
    let apdu = host.wrap(&debit_cmd(10, 392)).unwrap();
    assert_eq!(card.transmit(&apdu[..apdu.len() - 3]), [0x67, 0x00]);
    assert!(card.has_session());
    let r = card.transmit(&apdu);
    assert_eq!(host.unwrap(&r).unwrap().sw, 0x9000);
    assert_eq!(purse_state(&card), (990, 1, 1));
    // The same secured DEBIT re-encoded with an extended Lc, where only
    // READ LOG and the fingerprint VERIFY allow it: 6700 before secure
    // messaging, nothing debited, and the session carries on.
    let apdu = host.wrap(&debit_cmd(10, 392)).unwrap();
    let lc = usize::from(apdu[4]);
    let mut extended = apdu[..4].to_vec();
    extended.extend_from_slice(&[0x00, 0x00, apdu[4]]);
    extended.extend_from_slice(&apdu[5..5 + lc]);
    assert_eq!(card.transmit(&extended), [0x67, 0x00]);
    assert!(card.has_session());
    assert_eq!(purse_state(&card), (990, 1, 1));
    let r = card.transmit(&apdu);
    assert_eq!(host.unwrap(&r).unwrap().sw, 0x9000);
    assert_eq!(purse_state(&card), (980, 2, 2));
}

#[test]
fn get_challenge_gives_fresh_values_across_power_cycles() {
    let mut card = card_with(0);
    let mut seen = std::collections::HashSet::new();
    for _ in 0..3 {
        card.power_on();
        card.transmit(&select_apdu());
        for _ in 0..300 {
            let r = card.transmit(&[0x00, 0x84, 0x00, 0x00, 0x08]);
            assert_eq!(r.len(), 10);
            assert_eq!(sw(&r), 0x9000);
            assert!(seen.insert(r[..8].to_vec()), "challenge repeated");
        }
    }
}

#[test]
fn verify_pin_counts_tries_and_blocks() {
    let mut card = card_with(0);
    card.transmit(&select_apdu());
    let verify = |pin: &[u8]| {
        let mut a = vec![0x00, 0x20, 0x00, 0x80, 0x08];
        a.extend_from_slice(&format2_pin_block(pin));
        a
    };
    assert_eq!(card.transmit(&[0x00, 0x20, 0x00, 0x80]), [0x63, 0xC3]);
    assert_eq!(card.transmit(&verify(b"9999")), [0x63, 0xC2]);
    assert_eq!(card.transmit(&verify(b"1234")), [0x90, 0x00]);
    assert_eq!(card.transmit(&[0x00, 0x20, 0x00, 0x80]), [0x90, 0x00]);
    assert_eq!(card.snapshot().pin_tries_left, Some(3));
    // Malformed block: no try consumed.
    assert_eq!(
        card.transmit(&[
            0x00, 0x20, 0x00, 0x80, 0x08, 0x24, 0x12, 0x3A, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF
        ]),
        [0x6A, 0x80]
    );
    assert_eq!(card.snapshot().pin_tries_left, Some(3));
    assert_eq!(card.transmit(&verify(b"0000")), [0x63, 0xC2]);
    assert_eq!(card.transmit(&verify(b"0000")), [0x63, 0xC1]);
    // Tries survive a power cycle.
    card.power_on();
    card.transmit(&select_apdu());
    assert_eq!(card.transmit(&verify(b"0000")), [0x63, 0xC0]);
    assert_eq!(card.transmit(&verify(b"1234")), [0x69, 0x83]);
    assert_eq!(card.snapshot().pin_tries_left, Some(0));
}

#[test]
fn generate_cryptogram_binds_challenge_amount_counter_and_pin_status() {
    let mut card = card_with(0);
    card.transmit(&select_apdu());
    let mut a = vec![0x80, 0xAE, 0x00, 0x00, 18];
    a.extend_from_slice(&[9; 8]);
    a.extend_from_slice(&5_000u64.to_be_bytes());
    a.extend_from_slice(&392u16.to_be_bytes());
    a.push(0x00);
    let r = card.transmit(&a);
    assert_eq!(sw(&r), 0x9000);
    assert_eq!(r.len(), 4 + 1 + 16 + 2);
    let counter = u32::from_be_bytes(r[0..4].try_into().unwrap());
    assert_eq!((counter, r[4]), (1, 0x00));
    let k = keys().cryptogram_key;
    let expected = application_cryptogram(&k, &[9; 8], 5_000, 392, 1, 0, "card-0001");
    assert_eq!(&r[5..21], &expected);
    // After VERIFY, the CVM byte is 01 and the counter moved on.
    let mut v = vec![0x00, 0x20, 0x00, 0x80, 0x08];
    v.extend_from_slice(&format2_pin_block(b"1234"));
    assert_eq!(card.transmit(&v), [0x90, 0x00]);
    let r2 = card.transmit(&a);
    assert_eq!(&r2[0..5], &[0, 0, 0, 2, 0x01]);
    assert_eq!(
        &r2[5..21],
        &application_cryptogram(&k, &[9; 8], 5_000, 392, 2, 1, "card-0001")
    );
    // Wrong currency: refused, no counter consumed.
    let mut bad = a.clone();
    bad[21] = 0x03;
    bad[22] = 0xD2; // 978
    assert_eq!(card.transmit(&bad), [0x6A, 0x80]);
    assert_eq!(card.snapshot().counter, 2);
}

#[test]
fn read_card_data_exposes_id_counter_and_cardholder_data() {
    let mut card = card_with(0);
    card.transmit(&select_apdu());
    let r = card.transmit(&[0x80, 0xCA, 0x00, 0x00, 0x00]);
    assert_eq!(sw(&r), 0x9000);
    let h = hex::encode_upper(&r);
    assert!(h.starts_with("DF0109636172642D30303031")); // "card-0001"
    assert!(h.contains("DF020400000000"));
    assert!(h.contains("9F42020392"));
    assert!(h.contains("5A084111111111111111"));
    assert!(h.contains("5F2403281231"));
    assert!(h.contains(&hex::encode_upper(b"HANAKO YAMADA")));
    // The snapshot masks the PAN.
    assert_eq!(
        card.snapshot().pan_masked.as_deref(),
        Some("411111******1111")
    );
    assert!(!format!("{:?}", card.snapshot()).contains("4111111111111111"));
}

#[test]
fn set_status_blocks_and_unblocks_the_purse() {
    let mut card = card_with(1_000);
    let mut host = open(&mut card, SecurityLevel::Full);
    let block = CommandApdu::new(0x80, 0xF0, 0x00, 0x02, vec![]);
    assert_eq!(host.send(&mut card, &block).unwrap().sw, 0x9000);
    assert_eq!(card.snapshot().lifecycle, Lifecycle::Blocked);
    assert_eq!(
        host.debit(&mut card, 1, [0; 16], [0; 16]).unwrap_err(),
        DriverError::Status(0x6A81)
    );
    // SELECT warns 6283 but selects; the issuer can unblock.
    assert_eq!(card.transmit(&select_apdu()), [0x62, 0x83]);
    let mut host = HostDriver::new(keys().static_keys);
    host.open(&mut card, SecurityLevel::Full, [8; 8]).unwrap();
    let unblock = CommandApdu::new(0x80, 0xF0, 0x00, 0x01, vec![]);
    assert_eq!(host.send(&mut card, &unblock).unwrap().sw, 0x9000);
    assert_eq!(
        host.debit(&mut card, 1, [0; 16], [0; 16])
            .unwrap()
            .balance_after_minor,
        999
    );
    // Terminate: irreversible, only READ CARD DATA still answers.
    let term = CommandApdu::new(0x80, 0xF0, 0x00, 0x03, vec![]);
    assert_eq!(host.send(&mut card, &term).unwrap().sw, 0x9000);
    assert_eq!(card.transmit(&select_apdu()), [0x62, 0x83]);
    assert_eq!(sw(&card.transmit(&[0x80, 0xCA, 0x00, 0x00, 0x00])), 0x9000);
    let hs = HostHandshake::new(1, [1; 8]);
    assert_eq!(card.transmit(&hs.initialize_update()), [0x6A, 0x81]);
}

#[test]
fn state_survives_reload_from_memory() {
    let mut card = card_with(1_000);
    let mut host = open(&mut card, SecurityLevel::Full);
    host.debit(&mut card, 250, [1; 16], [0; 16]).unwrap();
    let before = card.snapshot();
    let card2 = kessai_card::Card::load(card.into_nvm()).unwrap();
    assert_eq!(card2.snapshot(), before);
    assert_eq!(
        kessai_card::Card::load(kessai_card::MemNvm::new()).unwrap_err(),
        kessai_card::CardError::NotPersonalized
    );
}
