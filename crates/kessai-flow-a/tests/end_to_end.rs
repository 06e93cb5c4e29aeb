//! Flow A end to end, in process: enrol, buy twice, rotate keys, buy
//! during the grace period with the old keys, update the device, buy
//! again, purge expired retained data.

mod common;

use common::*;
use kessai_crypto::cose;
use kessai_crypto::digest::sha256;
use kessai_crypto::hpke::HpkeKeyPair;
use kessai_flow_a::artefacts::{CardInfoPayload, KeyUpdate};
use kessai_flow_a::device::LockState;
use kessai_flow_a::host::transaction_device;
use kessai_flow_a::merchant::verify_merchant_result;
use kessai_flow_a::retention::{RetentionIndex, purge_due};

#[test]
fn enrol_buy_twice_rotate_buy_again_and_purge() {
    let mut r = rng(1);
    let mut w = World::new();
    let mut d = w.enrol("dev-1", "cust-1", 7, &mut r);

    // Registration left what claims 2, 5 and 6 say on the device and host.
    assert!(d.state.is_registered());
    assert_eq!(
        d.state.card_display(),
        Some(("411111******1111", d.card.expiry))
    );
    let (card_sealed, template_sealed) = d.state.sealed_data().unwrap();
    assert_eq!(cose::peek(card_sealed).unwrap().kid, kr("fa-st#1"));
    assert_eq!(cose::peek(template_sealed).unwrap().kid, kr("fa-st#1"));
    assert_eq!(d.record.template_digest, sha256(&[template_sealed]));
    assert_eq!(d.record.card_digest, sha256(&[card_sealed]));
    assert_eq!(d.record.personal_key, d.state.personal_key().unwrap().1);
    assert_eq!(d.record.last_counter, 0);
    // The device's state file has no card number or template in clear.
    let json = serde_json::to_string(&d.state).unwrap();
    assert!(!json.contains("4111111111111111"));
    assert!(!json.contains(&hex::encode(template(7, 1).expose())));

    // Purchase 1 and 2.
    let mut retained: Vec<RetentionIndex> = Vec::new();
    let mut merchant_digests = Vec::new();
    for (i, amount) in [(1u64, 1_200i64), (2, 3_400)] {
        let now = T0 + i * DAY_MS;
        let order = w.order(&format!("order-{i}"), yen(amount), now);
        let txn = w.device_transaction(&mut d, &order, yen(amount), now, &mut r);
        assert_eq!(transaction_device(&txn).unwrap(), d.record.device_id);
        let s = w.host_process(&mut d, &txn, now + 1).unwrap();
        assert_eq!(s.device.last_counter, i);
        assert_eq!(s.order.amount, yen(amount));
        assert_eq!(s.transfer.evidence[0].digest, sha256(&[&txn]));
        assert_eq!(s.retained.digest, sha256(&[&txn]));
        assert_eq!(s.retained.purge_after_ms, now + 1 + 30 * DAY_MS);
        let res = d.state.accept_result(&s.device_result).unwrap();
        assert_eq!((res.counter, res.amount), (i, yen(amount)));
        assert_eq!(res.masked_pan, "411111******1111");
        let m = verify_merchant_result(&s.merchant_result, &order, &w.keys.anchor()).unwrap();
        assert_eq!(m.amount, yen(amount));
        assert_eq!(m.transfer_id, s.transfer.id);
        // The merchant copy carries no card data (CBOR text is raw UTF-8,
        // so a masked or clear PAN would show up in the bytes).
        let m_bytes = String::from_utf8_lossy(&s.merchant_result).to_string();
        assert!(!m_bytes.contains("411111"));
        assert!(String::from_utf8_lossy(&s.device_result).contains("411111******1111"));
        retained.push(s.retained.index());
        merchant_digests.push(s.retained.evidence_entry().unwrap());
    }
    let funding = w.ledger.account(&d.record.funding_account).unwrap();
    assert_eq!(funding.balances.debits_posted, 4_600);
    assert_eq!(
        w.ledger
            .account(&w.payable)
            .unwrap()
            .balances
            .credits_posted,
        4_600
    );
    assert_eq!(merchant_digests[0].artefact_type, "flow-a.txn");
    assert_eq!(merchant_digests[0].signer_kid, "dev-1#1");

    // Key rotation (claims 4, 11): new versions of both keys.
    let rot = T0 + 3 * DAY_MS;
    w.keys
        .transmission
        .rotate(
            kr("fa-tx#2"),
            HpkeKeyPair::derive(&[0x66; 32]),
            rot,
            w.policy.key_grace_ms,
        )
        .unwrap();
    w.keys
        .storage
        .rotate(
            kr("fa-st#2"),
            HpkeKeyPair::derive(&[0x67; 32]),
            rot,
            w.policy.key_grace_ms,
        )
        .unwrap();

    // Inside the grace period the old keys are still honoured.
    let now = rot + DAY_MS;
    let order = w.order("order-3", yen(500), now);
    let txn = w.device_transaction(&mut d, &order, yen(500), now, &mut r);
    w.host_process(&mut d, &txn, now).unwrap();

    // The device fetches the signed key update, re-seals, confirms.
    let issued = w
        .issuer()
        .issue_key_update(&d.record, &d.card, now, &mut r)
        .unwrap();
    let update = cose::verify_artefact::<KeyUpdate>(&issued.key_update, |k| {
        (k == &w.keys.signing_ref).then(|| w.keys.signing.verifying_key())
    })
    .unwrap();
    assert_eq!(
        update.payload().previous_honoured_until_ms,
        rot + w.policy.key_grace_ms
    );
    let confirmation = d
        .state
        .apply_key_update(&issued.key_update, &d.secrets, &mut r)
        .unwrap();
    assert_eq!(d.state.key_refs(), Some((&kr("fa-st#2"), &kr("fa-tx#2"))));
    let (card_sealed, template_sealed) = d.state.sealed_data().unwrap();
    assert_eq!(cose::peek(card_sealed).unwrap().kid, kr("fa-st#2"));
    assert_eq!(cose::peek(template_sealed).unwrap().kid, kr("fa-st#2"));
    // Only the new storage secret key opens the new card copy.
    let new_pair = HpkeKeyPair::derive(&[0x67; 32]);
    let opened = cose::open_artefact::<CardInfoPayload, _>(
        card_sealed,
        |k| (k == &kr("fa-st#2")).then_some(&new_pair),
        &kessai_flow_a_card_aad("dev-1"),
    )
    .unwrap();
    assert_eq!(opened.payload().pan, d.card.pan);
    let updated = w
        .issuer()
        .confirm_key_update(&d.record, Some(&issued.pending), &confirmation, now + 1)
        .unwrap();
    assert_eq!(updated.storage_key, kr("fa-st#2"));
    assert_eq!(updated.transmission_key, kr("fa-tx#2"));
    assert_eq!(updated.template_digest, sha256(&[template_sealed]));
    assert_eq!(updated.last_counter, 3);
    d.record = updated;
    // A second update with nothing new is refused.
    assert!(matches!(
        w.issuer().issue_key_update(&d.record, &d.card, now, &mut r),
        Err(kessai_flow_a::FlowAError::KeysCurrent)
    ));

    // Purchase after the grace period, under the new keys.
    let now = rot + w.policy.key_grace_ms + DAY_MS;
    let order = w.order("order-4", yen(800), now);
    let txn = w.device_transaction(&mut d, &order, yen(800), now, &mut r);
    let s = w.host_process(&mut d, &txn, now).unwrap();
    d.state.accept_result(&s.device_result).unwrap();
    retained.push(s.retained.index());
    assert_eq!(
        w.ledger
            .account(&d.record.funding_account)
            .unwrap()
            .balances
            .debits_posted,
        5_900
    );
    assert_eq!(
        d.state.lock_state(),
        Some(LockState::Unlocked { failed_matches: 0 })
    );

    // Purge: the first two are past 30 days, the last one is not; the
    // ledger keeps its postings.
    let purge_at = T0 + 2 * DAY_MS + 1 + 30 * DAY_MS;
    let due = purge_due(&retained, purge_at);
    assert_eq!(due, vec![retained[0].digest, retained[1].digest]);
    assert_eq!(w.ledger.transfers().count(), 4);
    let recomputed = w.ledger.recompute_balances().unwrap();
    assert_eq!(
        recomputed[&d.record.funding_account],
        w.ledger
            .account(&d.record.funding_account)
            .unwrap()
            .balances
    );
}

/// The card-information associated data, rebuilt from its documented
/// framing (`kessai/flow-a/card-info/v1`, device id).
fn kessai_flow_a_card_aad(device: &str) -> Vec<u8> {
    let mut out = b"kessai/flow-a/card-info/v1\0".to_vec();
    out.extend_from_slice(&(device.len() as u32).to_be_bytes());
    out.extend_from_slice(device.as_bytes());
    out
}

#[test]
fn device_state_survives_a_json_round_trip() {
    let mut r = rng(2);
    let mut w = World::new();
    let mut d = w.enrol("dev-1", "cust-1", 7, &mut r);
    let json = serde_json::to_string_pretty(&d.state).unwrap();
    d.state = serde_json::from_str(&json).unwrap();
    let order = w.order("order-1", yen(100), T0);
    let txn = w.device_transaction(&mut d, &order, yen(100), T0, &mut r);
    let s = w.host_process(&mut d, &txn, T0).unwrap();
    d.state.accept_result(&s.device_result).unwrap();
    assert_eq!(d.state.counter(), Some(1));
}
