//! Host and card sides of this crate talking to each other at every
//! security level, with extended-length commands and error responses.

use kessai_scp03::card::{self, CardChallenge, CardSession};
use kessai_scp03::host::{HostHandshake, HostSession};
use kessai_scp03::keys::{kdd_for_card_id, pseudo_random_card_challenge};
use kessai_scp03::{AesKey, CommandApdu, Scp03Error, SecurityLevel, StaticKeys};

const AID: &[u8] = b"\xF0kessai\x01";

fn open(keys: &StaticKeys, level: SecurityLevel, seq: u32) -> (HostSession, CardSession) {
    let kdd = kdd_for_card_id("card-7");
    let hs = HostHandshake::new(keys.version(), [0x11; 8]);
    let iu = hs.initialize_update();
    let (pending, mut data) = card::initialize_update(
        keys,
        &kdd,
        AID,
        iu[2],
        iu[3],
        &iu[5..13],
        CardChallenge::PseudoRandom {
            sequence_counter: seq,
        },
    )
    .unwrap();
    data.extend_from_slice(&[0x90, 0x00]);
    let parsed = hs.parse_response(&data).unwrap();
    assert_eq!(parsed.kdd, kdd);
    assert_eq!(parsed.sequence_counter, Some(seq));
    assert_eq!(
        parsed.card_challenge,
        pseudo_random_card_challenge(keys, seq, AID)
    );
    let (pending_host, ea) = hs.authenticate(&parsed, keys, level).unwrap();
    let cs = pending
        .external_authenticate(ea[..4].try_into().unwrap(), false, &ea[5..])
        .unwrap();
    (pending_host.confirm(&[0x90, 0x00]).unwrap(), cs)
}

/// Parses an encoded command the way a card would (short or extended).
fn split(apdu: &[u8]) -> ([u8; 4], bool, Vec<u8>) {
    let h: [u8; 4] = apdu[..4].try_into().unwrap();
    let body = &apdu[4..];
    if body.is_empty() {
        return (h, false, vec![]);
    }
    if body[0] == 0 && body.len() > 3 {
        let n = usize::from(u16::from_be_bytes([body[1], body[2]]));
        return (h, true, body[3..3 + n].to_vec());
    }
    let n = usize::from(body[0]);
    (h, false, body[1..1 + n].to_vec())
}

#[test]
fn every_level_round_trips_both_key_lengths() {
    let levels = [
        SecurityLevel::CMac,
        SecurityLevel::CMacCDec,
        SecurityLevel::CMacRMac,
        SecurityLevel::CMacCDecRMac,
        SecurityLevel::Full,
    ];
    for key in [AesKey::Aes128([0x40; 16]), AesKey::Aes256([0x5A; 32])] {
        let keys = StaticKeys::single(key, 1);
        for (i, level) in levels.into_iter().enumerate() {
            let (mut host, mut card) = open(&keys, level, i as u32);
            for len in [0usize, 1, 15, 16, 17, 200, 300, 1000] {
                let payload: Vec<u8> = (0..len).map(|b| b as u8).collect();
                let cmd = host
                    .wrap(&CommandApdu::new(0x80, 0x54, 1, 2, payload.clone()).with_le(256))
                    .unwrap();
                assert_eq!(cmd[0], 0x84);
                let (h, ext, data) = split(&cmd);
                assert_eq!(ext, len + 24 > 255, "len {len}");
                if level.c_dec() && len >= 16 {
                    assert_ne!(&data[..16], &payload[..16], "data must travel encrypted");
                } else if !level.c_dec() {
                    assert_eq!(&data[..len], &payload[..], "C-MAC only: data in clear");
                }
                let plain = card.unwrap_command(h, ext, &data).unwrap();
                assert_eq!(&plain[..], &payload[..]);
                let reply = card.wrap_response(&payload, 0x9000).unwrap();
                if level.r_mac() {
                    assert!(reply.len() >= payload.len() + 10);
                }
                let out = host.unwrap(&reply).unwrap();
                assert_eq!((&out.data[..], out.sw), (&payload[..], 0x9000));
            }
            // Error status words travel bare under R-MAC and are accepted.
            let cmd = host
                .wrap(&CommandApdu::new(0x80, 0x54, 0, 0, vec![1]))
                .unwrap();
            let (h, ext, data) = split(&cmd);
            card.unwrap_command(h, ext, &data).unwrap();
            let reply = card.wrap_response(b"secret", 0x6985).unwrap();
            if level.r_mac() {
                assert_eq!(reply, [0x69, 0x85]);
            }
            assert_eq!(host.unwrap(&reply).unwrap().sw, 0x6985);
            assert!(!host.is_closed());
        }
    }
}

#[test]
fn replayed_and_reordered_commands_fail_the_mac_chain() {
    let keys = StaticKeys::single(AesKey::Aes128([0x40; 16]), 1);
    let (mut host, mut card) = open(&keys, SecurityLevel::Full, 9);
    let c0 = host
        .wrap(&CommandApdu::new(0x80, 0x54, 0, 0, vec![9]))
        .unwrap();
    let c1 = host
        .wrap(&CommandApdu::new(0x80, 0x54, 0, 0, vec![1, 2, 3]))
        .unwrap();
    // Out of order: the second command before the first.
    let (h1, e1, d1) = split(&c1);
    assert_eq!(
        card.unwrap_command(h1, e1, &d1).unwrap_err(),
        Scp03Error::MacMismatch
    );
    let (mut host, mut card) = open(&keys, SecurityLevel::Full, 10);
    let c1 = host
        .wrap(&CommandApdu::new(0x80, 0x54, 0, 0, vec![1, 2, 3]))
        .unwrap();
    let (h, e, d) = split(&c1);
    card.unwrap_command(h, e, &d).unwrap();
    // The same bytes again: the MCV has moved on.
    assert_eq!(
        card.unwrap_command(h, e, &d).unwrap_err(),
        Scp03Error::MacMismatch
    );
    // A command without the SM bit is refused.
    assert_eq!(
        card.unwrap_command([0x80, 0x54, 0, 0], false, &[0; 8])
            .unwrap_err(),
        Scp03Error::NotSecured
    );
    let _ = c0;
}

#[test]
fn pseudo_random_challenges_differ_per_counter_and_key() {
    let k1 = StaticKeys::single(AesKey::Aes128([1; 16]), 1);
    let k2 = StaticKeys::single(AesKey::Aes128([2; 16]), 1);
    let a = pseudo_random_card_challenge(&k1, 1, AID);
    assert_ne!(a, pseudo_random_card_challenge(&k1, 2, AID));
    assert_ne!(a, pseudo_random_card_challenge(&k2, 1, AID));
    assert_ne!(a, pseudo_random_card_challenge(&k1, 1, b"other"));
}

#[test]
fn card_refuses_bad_initialize_update_and_levels() {
    let keys = StaticKeys::single(AesKey::Aes128([0x40; 16]), 0x30);
    let kdd = [0; 10];
    let ch = CardChallenge::Random([0; 8]);
    assert!(matches!(
        card::initialize_update(&keys, &kdd, AID, 0x31, 0, &[0; 8], ch),
        Err(Scp03Error::KeyVersionMismatch {
            requested: 0x31,
            returned: 0x30
        })
    ));
    assert!(card::initialize_update(&keys, &kdd, AID, 0, 0, &[0; 7], ch).is_err());
    assert!(card::initialize_update(&keys, &kdd, AID, 0, 1, &[0; 8], ch).is_err());
    assert_eq!(
        card::initialize_update(
            &keys,
            &kdd,
            AID,
            0,
            0,
            &[0; 8],
            CardChallenge::PseudoRandom {
                sequence_counter: 1 << 24
            }
        )
        .unwrap_err(),
        Scp03Error::CounterExhausted
    );
    let (pending, _) = card::initialize_update(&keys, &kdd, AID, 0, 0, &[0; 8], ch).unwrap();
    assert_eq!(
        pending
            .external_authenticate([0x84, 0x82, 0x00, 0x00], false, &[0; 16])
            .unwrap_err(),
        Scp03Error::SecurityLevelNotSupported(0)
    );
}

/// A host whose session lives in a database between requests: after every
/// exchange the session is reduced to its [`HostSessionState`] bytes and
/// rebuilt from them and the static keys. The card never notices.
#[test]
fn persisted_host_session_state_resumes_at_every_step() {
    use kessai_scp03::host::{HostSessionState, PendingHostSession};

    let keys = StaticKeys::single(AesKey::Aes128([0x33; 16]), 2);
    let kdd = kdd_for_card_id("card-9");
    let hs = HostHandshake::new(2, [0x22; 8]);
    let iu = hs.initialize_update();
    let (pending_card, mut data) = card::initialize_update(
        &keys,
        &kdd,
        AID,
        iu[2],
        iu[3],
        &iu[5..13],
        CardChallenge::Random([0x77; 8]),
    )
    .unwrap();
    data.extend_from_slice(&[0x90, 0x00]);
    let parsed = hs.parse_response(&data).unwrap();
    let (pending, ea) = hs
        .authenticate(&parsed, &keys, SecurityLevel::Full)
        .unwrap();
    // Persist the pending session, drop it, resume it.
    let stored = pending.state().to_bytes();
    assert_eq!(stored.len(), HostSessionState::ENCODED_LEN);
    drop(pending);
    let mut card_session = pending_card
        .external_authenticate(ea[..4].try_into().unwrap(), false, &ea[5..])
        .unwrap();
    let state = HostSessionState::from_bytes(&stored).unwrap();
    assert!(
        format!("{state:?}").ends_with("redacted)"),
        "Debug hides the MCV"
    );
    let pending = PendingHostSession::resume(&state, &keys).unwrap();
    let mut host = pending.confirm(&[0x90, 0x00]).unwrap();

    for round in 0u8..4 {
        // Persist and resume before every command.
        let bytes = host.state().unwrap().to_bytes();
        let state = HostSessionState::from_bytes(&bytes).unwrap();
        assert_eq!(state.counter(), u32::from(round));
        assert_eq!(state.level(), SecurityLevel::Full);
        assert_eq!(state.key_version(), 2);
        host = HostSession::resume(&state, &keys).unwrap();
        let payload = vec![round; 20];
        let cmd = host
            .wrap(&CommandApdu::new(0x80, 0x54, 0, 0, payload.clone()).with_le(256))
            .unwrap();
        let (h, ext, data) = split(&cmd);
        let plain = card_session.unwrap_command(h, ext, &data).unwrap();
        assert_eq!(&plain[..], &payload[..]);
        let resp = card_session.wrap_response(&[round, 1, 2], 0x9000).unwrap();
        // Resume again between wrap and unwrap: the state after wrapping
        // carries the MCV the R-MAC is computed over.
        let bytes = host.state().unwrap().to_bytes();
        host = HostSession::resume(&HostSessionState::from_bytes(&bytes).unwrap(), &keys).unwrap();
        let out = host.unwrap(&resp).unwrap();
        assert_eq!(&out.data[..], &[round, 1, 2]);
    }

    // A response replayed into the resumed session fails its R-MAC and
    // closes the session; a closed session has no state to persist.
    let cmd = host
        .wrap(&CommandApdu::new(0x80, 0x5C, 0, 0, vec![]).with_le(256))
        .unwrap();
    let (h, ext, data) = split(&cmd);
    card_session.unwrap_command(h, ext, &data).unwrap();
    let stale = card_session.wrap_response(&[9], 0x9000).unwrap();
    let mut tampered = stale.clone();
    tampered[0] ^= 1;
    assert_eq!(
        host.unwrap(&tampered).unwrap_err(),
        Scp03Error::RMacMismatch
    );
    assert_eq!(host.state().unwrap_err(), Scp03Error::SessionClosed);
}

#[test]
fn host_session_state_refuses_bad_encodings_and_other_key_versions() {
    use kessai_scp03::host::HostSessionState;

    let keys = StaticKeys::single(AesKey::Aes128([0x40; 16]), 1);
    let (host, _card) = open(&keys, SecurityLevel::CMacCDecRMac, 3);
    let bytes = host.state().unwrap().to_bytes();
    assert!(HostSessionState::from_bytes(&bytes[..38]).is_err());
    let mut bad = bytes.to_vec();
    bad[0] = 2;
    assert_eq!(
        HostSessionState::from_bytes(&bad).unwrap_err(),
        Scp03Error::Malformed("session state format")
    );
    let mut bad = bytes.to_vec();
    bad[2] = 0x00;
    assert_eq!(
        HostSessionState::from_bytes(&bad).unwrap_err(),
        Scp03Error::SecurityLevelNotSupported(0)
    );
    let state = HostSessionState::from_bytes(&bytes).unwrap();
    let other = keys.clone().with_version(5);
    assert!(matches!(
        HostSession::resume(&state, &other),
        Err(Scp03Error::KeyVersionMismatch { .. })
    ));
}
