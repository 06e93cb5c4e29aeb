//! Every bad input of issue 5 (flow A): each is refused with a typed error
//! and changes nothing (ledger, device record, device state), except what
//! the step itself says (a wrong code spends a try, a mismatch counts
//! towards the lock).

mod common;

use common::*;
use kessai_crypto::CoseError;
use kessai_crypto::cose;
use kessai_crypto::digest::sha256;
use kessai_crypto::hpke::HpkeKeyPair;
use kessai_crypto::sign::SigningKey;
use kessai_flow_a::artefacts::{
    KeyRegistration, KeyRegistrationPayload, KeyUpdate, RegistrationPermission, TransactionContent,
    TransactionData, Unlock,
};
use kessai_flow_a::device::{DeviceSecrets, DeviceState, LockState};
use kessai_flow_a::host::{DeviceRecord, IdentityDecision, SessionState};
use kessai_flow_a::{EnrolmentCode, FlowAError};
use kessai_ids::CardholderId;
use kessai_secrets::SecretKey;

/// The transaction associated data, rebuilt from its documented framing.
fn txn_aad(device: &str, counter: u64) -> Vec<u8> {
    let mut out = b"kessai/flow-a/transaction/v1\0".to_vec();
    out.extend_from_slice(&(device.len() as u32).to_be_bytes());
    out.extend_from_slice(device.as_bytes());
    out.extend_from_slice(&8u32.to_be_bytes());
    out.extend_from_slice(&counter.to_be_bytes());
    out
}

/// A device whose personal key the test knows: the enrolled device's
/// record with the key replaced (what a device with an extractable key, or
/// an attacker holding one, could sign).
fn known_key_record(d: &Enrolled, key: &SigningKey) -> DeviceRecord {
    DeviceRecord {
        personal_key: key.verifying_key(),
        ..d.record.clone()
    }
}

fn sign_txn(
    w: &World,
    d: &Enrolled,
    key: &SigningKey,
    kid: &str,
    (counter, content_counter): (u64, u64),
    order: &[u8],
    r: &mut rand::rngs::StdRng,
) -> Vec<u8> {
    let content = cose::seal_artefact(
        &TransactionContent {
            order: order.to_vec(),
            card: d.state.sealed_data().unwrap().0.to_vec(),
            approved: cose_amount(order),
        },
        &w.keys.transmission.active_public().public_key,
        w.keys.transmission.active_ref(),
        &txn_aad(d.record.device_id.as_str(), content_counter),
        r,
    )
    .unwrap();
    cose::sign_artefact(
        &TransactionData {
            device_id: d.record.device_id.clone(),
            counter,
            created_at_ms: T0,
            order_digest: sha256(&[order]),
            content,
        },
        key,
        &kr(kid),
    )
    .unwrap()
}

/// The amount inside a signed order (the test trusts its own merchant).
fn cose_amount(order: &[u8]) -> kessai_money::Money {
    let key = SigningKey::from_seed(&[0x55; 32]).verifying_key();
    cose::verify_artefact::<kessai_flow_a::artefacts::OrderInformation>(order, |_| Some(key))
        .unwrap()
        .payload()
        .amount
}

#[test]
fn wrong_finger_no_match_then_lock_only_issuer_unlocks() {
    let mut r = rng(10);
    let mut w = World::new();
    let mut d = w.enrol("dev-1", "cust-1", 7, &mut r);
    let ledger_before = w.ledger_snapshot();

    // No finger: does not count.
    d.reader.presented = None;
    assert_eq!(
        d.state
            .confirm_identity(&mut d.reader, &d.secrets)
            .unwrap_err(),
        FlowAError::CaptureFailed
    );
    assert_eq!(
        d.state.lock_state(),
        Some(LockState::Unlocked { failed_matches: 0 })
    );

    // Wrong finger: counts, then locks at the limit (3).
    d.reader.presented = Some(8);
    assert_eq!(
        d.state
            .confirm_identity(&mut d.reader, &d.secrets)
            .unwrap_err(),
        FlowAError::NoMatch { attempts_left: 2 }
    );
    assert_eq!(
        d.state
            .confirm_identity(&mut d.reader, &d.secrets)
            .unwrap_err(),
        FlowAError::NoMatch { attempts_left: 1 }
    );
    assert_eq!(
        d.state
            .confirm_identity(&mut d.reader, &d.secrets)
            .unwrap_err(),
        FlowAError::DeviceLocked { lock_seq: 1 }
    );
    // Locked: even the right finger is refused, and no transaction was made.
    d.reader.presented = Some(7);
    assert_eq!(
        d.state
            .confirm_identity(&mut d.reader, &d.secrets)
            .unwrap_err(),
        FlowAError::DeviceLocked { lock_seq: 1 }
    );
    assert_eq!(d.state.counter(), Some(0));
    assert_eq!(w.ledger_snapshot(), ledger_before);
    let locked = device_snapshot(&d);

    // An unlock not signed by the issuer, or for another lock, changes nothing.
    let forged = cose::sign_artefact(
        &Unlock {
            device_id: d.record.device_id.clone(),
            lock_seq: 1,
            issued_at_ms: T0,
        },
        &SigningKey::from_seed(&[0x99; 32]),
        &w.keys.signing_ref,
    )
    .unwrap();
    assert_eq!(
        d.state.apply_unlock(&forged),
        Err(FlowAError::NotFromIssuer)
    );
    let wrong_lock = w.issuer().issue_unlock(&d.record, 2, T0).unwrap();
    assert_eq!(
        d.state.apply_unlock(&wrong_lock),
        Err(FlowAError::UnlockMismatch)
    );
    assert_eq!(device_snapshot(&d), locked);

    // The issuer's unlock lifts it; it cannot be replayed for a later lock.
    let unlock = w.issuer().issue_unlock(&d.record, 1, T0).unwrap();
    d.state.apply_unlock(&unlock).unwrap();
    assert_eq!(
        d.state.lock_state(),
        Some(LockState::Unlocked { failed_matches: 0 })
    );
    assert_eq!(
        d.state.apply_unlock(&unlock),
        Err(FlowAError::UnlockMismatch)
    );
    d.reader.presented = Some(8);
    for _ in 0..3 {
        let _ = d.state.confirm_identity(&mut d.reader, &d.secrets);
    }
    assert_eq!(
        d.state.lock_state(),
        Some(LockState::Locked { lock_seq: 2 })
    );
    assert_eq!(
        d.state.apply_unlock(&unlock),
        Err(FlowAError::UnlockMismatch)
    );
    let unlock2 = w.issuer().issue_unlock(&d.record, 2, T0).unwrap();
    d.state.apply_unlock(&unlock2).unwrap();

    // A match resets the count, and the purchase goes through.
    d.reader.presented = Some(7);
    let order = w.order("order-1", yen(100), T0);
    let txn = w.device_transaction(&mut d, &order, yen(100), T0, &mut r);
    w.host_process(&mut d, &txn, T0).unwrap();
}

/// Registration up to the identity identification, for the code tests.
struct Pending {
    state: DeviceState,
    secrets: DeviceSecrets,
    started: kessai_flow_a::host::RegistrationStarted,
}

fn start(w: &World, device: &str, r: &mut rand::rngs::StdRng) -> Pending {
    let mut state = DeviceState::new(device.parse().unwrap(), w.keys.anchor(), 3);
    let request = state.registration_request(r).unwrap();
    let started = w
        .issuer()
        .begin_registration(&request, None, T0, r)
        .unwrap();
    Pending {
        state,
        secrets: DeviceSecrets::new(SecretKey::new([1; 32])),
        started,
    }
}

fn identify(
    w: &World,
    p: &mut Pending,
    customer: &CardholderId,
    code: &EnrolmentCode,
    record: &kessai_flow_a::host::EnrolmentCodeRecord,
    r: &mut rand::rngs::StdRng,
) -> IdentityDecision {
    let sealed = p
        .state
        .answer_identity_request(
            &p.started.identity_request,
            customer,
            code,
            &p.secrets,
            T0,
            r,
        )
        .unwrap();
    let ident = w
        .issuer()
        .open_identification(&p.started.session, &sealed, T0)
        .unwrap();
    let card = w.card_for(customer, &funding_id(customer.as_str()));
    w.issuer()
        .decide_identity(&p.started.session, &ident, Some(record), &card, T0, r)
}

#[test]
fn wrong_or_reused_enrolment_code() {
    let mut r = rng(11);
    let w = World::new();
    let customer: CardholderId = "cust-1".parse().unwrap();
    let (code, mut record) = w
        .issuer()
        .issue_enrolment_code(&customer, T0, &mut r)
        .unwrap();
    let wrong = EnrolmentCode::parse(if code.expose() == "0000000000" {
        "1111111111"
    } else {
        "0000000000"
    })
    .unwrap();

    // Wrong code: a try is spent, no permission, session unchanged.
    let mut p = start(&w, "dev-1", &mut r);
    match identify(&w, &mut p, &customer, &wrong, &record, &mut r) {
        IdentityDecision::Refused {
            error,
            code: Some(updated),
        } => {
            assert_eq!(error, FlowAError::EnrolmentCodeWrong { tries_left: 2 });
            assert_eq!(updated.tries_left, 2);
            assert_eq!(updated.used, None);
            assert_eq!(updated.code_mac, record.code_mac);
            record = updated;
        }
        other => panic!("expected a refusal spending a try, got {other:?}"),
    }
    assert_eq!(p.started.session.state, SessionState::AwaitingIdentity);
    // The device cannot register without the permission.
    let mut reader = TestReader::with(7);
    assert!(
        p.state
            .register(b"\xd2", &mut reader, &p.secrets, T0, &mut r)
            .is_err()
    );
    assert!(!p.state.is_registered());
    assert_eq!(reader.master_reads, 0);

    // Unknown customer number.
    let other: CardholderId = "cust-2".parse().unwrap();
    let sealed = p
        .state
        .answer_identity_request(
            &p.started.identity_request,
            &other,
            &code,
            &p.secrets,
            T0,
            &mut r,
        )
        .unwrap();
    let ident = w
        .issuer()
        .open_identification(&p.started.session, &sealed, T0)
        .unwrap();
    let card = w.card_for(&other, &funding_id("cust-2"));
    assert!(matches!(
        w.issuer()
            .decide_identity(&p.started.session, &ident, Some(&record), &card, T0, &mut r),
        IdentityDecision::Refused {
            error: FlowAError::UnknownCustomer,
            code: None
        }
    ));

    // The right code works and is consumed.
    let used = match identify(&w, &mut p, &customer, &code, &record, &mut r) {
        IdentityDecision::Permitted { code, .. } => code,
        other => panic!("expected a permission, got {other:?}"),
    };
    assert_eq!(used.used.as_ref().unwrap().device_id.as_str(), "dev-1");

    // Reused by another device: refused, nothing spent.
    let mut p2 = start(&w, "dev-2", &mut r);
    assert!(matches!(
        identify(&w, &mut p2, &customer, &code, &used, &mut r),
        IdentityDecision::Refused {
            error: FlowAError::EnrolmentCodeUsed,
            code: None
        }
    ));

    // Exhausted after the limit, then even the right code is refused.
    let (code3, mut rec3) = w
        .issuer()
        .issue_enrolment_code(&customer, T0, &mut r)
        .unwrap();
    let wrong3 = EnrolmentCode::parse(if code3.expose() == "0000000000" {
        "1111111111"
    } else {
        "0000000000"
    })
    .unwrap();
    let mut p3 = start(&w, "dev-3", &mut r);
    let mut last = None;
    for _ in 0..3 {
        if let IdentityDecision::Refused {
            error,
            code: Some(u),
        } = identify(&w, &mut p3, &customer, &wrong3, &rec3, &mut r)
        {
            rec3 = u;
            last = Some(error);
        }
    }
    assert_eq!(last, Some(FlowAError::EnrolmentCodeExhausted));
    assert_eq!(rec3.tries_left, 0);
    assert!(matches!(
        identify(&w, &mut p3, &customer, &code3, &rec3, &mut r),
        IdentityDecision::Refused {
            error: FlowAError::EnrolmentCodeExhausted,
            code: None
        }
    ));

    // Expired code.
    let (code4, rec4) = w
        .issuer()
        .issue_enrolment_code(&customer, T0 - 8 * DAY_MS, &mut r)
        .unwrap();
    let mut p4 = start(&w, "dev-4", &mut r);
    assert!(matches!(
        identify(&w, &mut p4, &customer, &code4, &rec4, &mut r),
        IdentityDecision::Refused {
            error: FlowAError::EnrolmentCodeExpired,
            code: None
        }
    ));
}

#[test]
fn registration_without_permission() {
    let mut r = rng(12);
    let mut w = World::new();
    w.open_funding("cust-1", 100_000);
    let customer: CardholderId = "cust-1".parse().unwrap();
    let (code, record) = w
        .issuer()
        .issue_enrolment_code(&customer, T0, &mut r)
        .unwrap();
    let mut p = start(&w, "dev-1", &mut r);
    let mut reader = TestReader::with(7);

    // Device side: no identity step done → no permission to act on.
    let before = serde_json::to_string(&p.state).unwrap();
    assert_eq!(
        p.state
            .register(b"", &mut reader, &p.secrets, T0, &mut r)
            .unwrap_err(),
        FlowAError::NoRegistrationPermission
    );
    assert_eq!(serde_json::to_string(&p.state).unwrap(), before);

    let IdentityDecision::Permitted {
        session,
        permission,
        ..
    } = identify(&w, &mut p, &customer, &code, &record, &mut r)
    else {
        panic!("identity refused");
    };

    // A permission not signed by the issuer: refused, nothing read.
    let genuine = cose::verify_artefact::<RegistrationPermission>(&permission, |_| {
        Some(w.keys.signing.verifying_key())
    })
    .unwrap()
    .into_payload();
    let forged = cose::sign_artefact(
        &genuine,
        &SigningKey::from_seed(&[0x98; 32]),
        &w.keys.signing_ref,
    )
    .unwrap();
    let before = serde_json::to_string(&p.state).unwrap();
    assert_eq!(
        p.state
            .register(&forged, &mut reader, &p.secrets, T0, &mut r)
            .unwrap_err(),
        FlowAError::NotFromIssuer
    );
    assert_eq!(reader.master_reads, 0);
    assert_eq!(serde_json::to_string(&p.state).unwrap(), before);

    // A failed master reading changes nothing either.
    reader.presented = None;
    assert!(matches!(
        p.state
            .register(&permission, &mut reader, &p.secrets, T0, &mut r),
        Err(FlowAError::Reader(_))
    ));
    assert_eq!(serde_json::to_string(&p.state).unwrap(), before);
    reader.presented = Some(7);

    let registration = p
        .state
        .register(&permission, &mut reader, &p.secrets, T0, &mut r)
        .unwrap();

    // Host side: no session, or a session never permitted → refused.
    assert_eq!(
        w.issuer().complete_registration(None, &registration, T0),
        Err(FlowAError::NoRegistrationPermission)
    );
    assert_eq!(
        w.issuer()
            .complete_registration(Some(&p.started.session), &registration, T0),
        Err(FlowAError::NoRegistrationPermission)
    );

    // A relaying terminal that registers its own key with the (clear)
    // permission: proof of possession holds, the binding MAC does not.
    let attacker = SigningKey::from_seed(&[0x97; 32]);
    let hijack = KeyRegistration {
        public_key: attacker.verifying_key(),
        signed: cose::sign_artefact(
            &KeyRegistrationPayload {
                device_id: "dev-1".parse().unwrap(),
                permission_digest: sha256(&[&permission]),
                session_nonce: session.session_nonce,
                public_key: attacker.verifying_key(),
                binding_mac: [0; 32],
                sealed_template: p.state.sealed_data().unwrap().1.to_vec(),
            },
            &attacker,
            &kr("dev-1#1"),
        )
        .unwrap(),
    };
    assert_eq!(
        w.issuer()
            .complete_registration(Some(&session), &hijack, T0),
        Err(FlowAError::BindingMismatch)
    );
    // A registration whose signature is not by the key it registers.
    let swapped = KeyRegistration {
        public_key: attacker.verifying_key(),
        signed: registration.signed.clone(),
    };
    assert_eq!(
        w.issuer()
            .complete_registration(Some(&session), &swapped, T0),
        Err(FlowAError::Cose(CoseError::BadSignature))
    );
    // After the session's deadline.
    assert_eq!(
        w.issuer()
            .complete_registration(Some(&session), &registration, session.expires_at_ms),
        Err(FlowAError::SessionExpired)
    );
    // The genuine one is accepted.
    let rec = w
        .issuer()
        .complete_registration(Some(&session), &registration, T0)
        .unwrap();
    assert_eq!(rec.personal_key, registration.public_key);

    // And a registered device cannot start again while active.
    let again = kessai_flow_a::artefacts::RegistrationRequest {
        device_id: "dev-1".parse().unwrap(),
        device_nonce: [0; 16],
    };
    assert!(matches!(
        w.issuer()
            .begin_registration(&again, Some(&rec), T0, &mut r),
        Err(FlowAError::AlreadyRegistered)
    ));
}

#[test]
fn transaction_signed_by_unregistered_or_another_devices_key() {
    let mut r = rng(13);
    let mut w = World::new();
    let mut a = w.enrol("dev-a", "cust-1", 7, &mut r);
    let mut b = w.enrol("dev-b", "cust-2", 8, &mut r);
    let ledger_before = w.ledger_snapshot();
    let order = w.order("order-1", yen(100), T0);

    // B's genuine transaction presented as A's: kid is not A's key.
    let txn_b = w.device_transaction(&mut b, &order, yen(100), T0, &mut r);
    let funding_a = w.ledger.account(&a.record.funding_account).unwrap().clone();
    assert_eq!(
        w.issuer()
            .process_transaction(&txn_b, &a.record, &funding_a, w.merchant_keys(), T0)
            .unwrap_err(),
        FlowAError::UnregisteredDeviceKey
    );

    // An unregistered key claiming to be A's key.
    let rogue = SigningKey::from_seed(&[0x96; 32]);
    let forged = sign_txn(&w, &a, &rogue, "dev-a#1", (1, 1), &order, &mut r);
    assert_eq!(
        w.issuer()
            .process_transaction(&forged, &a.record, &funding_a, w.merchant_keys(), T0)
            .unwrap_err(),
        FlowAError::Cose(CoseError::BadSignature)
    );

    // B's own key signing a transaction that says it is A's.
    let b_key = SigningKey::from_seed(&[0x95; 32]);
    let b_rec = known_key_record(&b, &b_key);
    let a_data_b_key = sign_txn(&w, &a, &b_key, "dev-b#1", (1, 1), &order, &mut r);
    let funding_b = w.ledger.account(&b.record.funding_account).unwrap().clone();
    assert_eq!(
        w.issuer()
            .process_transaction(&a_data_b_key, &b_rec, &funding_b, w.merchant_keys(), T0)
            .unwrap_err(),
        FlowAError::WrongDevice
    );

    // A revoked device's genuine transaction.
    let txn_a = w.device_transaction(&mut a, &order, yen(100), T0, &mut r);
    let revoked = DeviceRecord {
        status: kessai_flow_a::host::DeviceStatus::Revoked,
        ..a.record.clone()
    };
    assert_eq!(
        w.issuer()
            .process_transaction(&txn_a, &revoked, &funding_a, w.merchant_keys(), T0)
            .unwrap_err(),
        FlowAError::DeviceNotActive
    );

    assert_eq!(w.ledger_snapshot(), ledger_before);
    assert_eq!((a.record.last_counter, b.record.last_counter), (0, 0));
    // A's own transaction still settles.
    let txn_a = w.device_transaction(&mut a, &order, yen(100), T0, &mut r);
    w.host_process(&mut a, &txn_a, T0).unwrap();
}

#[test]
fn tampered_ciphertext_is_refused() {
    let mut r = rng(14);
    let mut w = World::new();
    let mut d = w.enrol("dev-1", "cust-1", 7, &mut r);
    let ledger_before = w.ledger_snapshot();
    let order = w.order("order-1", yen(100), T0);
    let funding = w.ledger.account(&d.record.funding_account).unwrap().clone();

    // Any flipped byte of the signed transaction data: refused.
    let txn = w.device_transaction(&mut d, &order, yen(100), T0, &mut r);
    for i in [txn.len() / 3, txn.len() / 2, txn.len() - 70] {
        let mut t = txn.clone();
        t[i] ^= 0x01;
        assert!(
            w.issuer()
                .process_transaction(&t, &d.record, &funding, w.merchant_keys(), T0)
                .is_err(),
            "byte {i}"
        );
    }

    // Correctly signed, but the ciphertext inside was altered: the
    // transmission layer refuses it.
    let key = SigningKey::from_seed(&[0x94; 32]);
    let rec = known_key_record(&d, &key);
    let good = sign_txn(&w, &d, &key, "dev-1#1", (1, 1), &order, &mut r);
    let data = cose::verify_artefact::<TransactionData>(&good, |_| Some(key.verifying_key()))
        .unwrap()
        .into_payload();
    let mut content = data.content.clone();
    let n = content.len();
    content[n - 20] ^= 0x80;
    let tampered = cose::sign_artefact(
        &TransactionData {
            content,
            ..data.clone()
        },
        &key,
        &kr("dev-1#1"),
    )
    .unwrap();
    assert_eq!(
        w.issuer()
            .process_transaction(&tampered, &rec, &funding, w.merchant_keys(), T0)
            .unwrap_err(),
        FlowAError::Cose(CoseError::DecryptionFailed)
    );
    // Content sealed for counter 1, put in an envelope with counter 2.
    let moved = sign_txn(&w, &d, &key, "dev-1#1", (2, 1), &order, &mut r);
    assert_eq!(
        w.issuer()
            .process_transaction(&moved, &rec, &funding, w.merchant_keys(), T0)
            .unwrap_err(),
        FlowAError::Cose(CoseError::DecryptionFailed)
    );
    // The order digest in the envelope must be the order inside.
    let other_order = w.order("order-2", yen(100), T0);
    let mismatched = cose::sign_artefact(
        &TransactionData {
            order_digest: sha256(&[&other_order]),
            ..data
        },
        &key,
        &kr("dev-1#1"),
    )
    .unwrap();
    assert_eq!(
        w.issuer()
            .process_transaction(&mismatched, &rec, &funding, w.merchant_keys(), T0)
            .unwrap_err(),
        FlowAError::ContentMismatch
    );
    assert_eq!(w.ledger_snapshot(), ledger_before);
    // The untampered one from the known-key device settles.
    let s = w
        .issuer()
        .process_transaction(&good, &rec, &funding, w.merchant_keys(), T0)
        .unwrap();
    assert_eq!(s.device.last_counter, 1);
}

#[test]
fn replayed_transaction_data_is_refused() {
    let mut r = rng(15);
    let mut w = World::new();
    let mut d = w.enrol("dev-1", "cust-1", 7, &mut r);
    let order1 = w.order("order-1", yen(100), T0);
    let txn1 = w.device_transaction(&mut d, &order1, yen(100), T0, &mut r);
    w.host_process(&mut d, &txn1, T0).unwrap();
    let order2 = w.order("order-2", yen(200), T0);
    let txn2 = w.device_transaction(&mut d, &order2, yen(200), T0, &mut r);
    w.host_process(&mut d, &txn2, T0).unwrap();
    let ledger_before = w.ledger_snapshot();
    let record_before = d.record.clone();

    for (txn, counter) in [(&txn2, 2), (&txn1, 1)] {
        assert_eq!(
            w.host_process(&mut d, txn, T0 + 1).unwrap_err(),
            FlowAError::Replay {
                counter,
                last_seen: 2
            }
        );
    }
    assert_eq!(w.ledger_snapshot(), ledger_before);
    assert_eq!(d.record, record_before);
    // Even if the counter check were bypassed, the ledger refuses a second
    // posting: the transfer id is derived from device id + counter.
    let funding = w.ledger.account(&d.record.funding_account).unwrap().clone();
    let stale = DeviceRecord {
        last_counter: 1,
        ..d.record.clone()
    };
    let again = w
        .issuer()
        .process_transaction(&txn2, &stale, &funding, w.merchant_keys(), T0 + 2)
        .unwrap();
    assert!(matches!(
        w.ledger.submit(&again.transfer, T0 + 2),
        Ok(kessai_ledger::Applied::AlreadyExists(_))
    ));
    assert_eq!(w.ledger_snapshot().1, ledger_before.1);
}

#[test]
fn retired_transmission_key_after_grace_then_update_fixes_it() {
    let mut r = rng(16);
    let mut w = World::new();
    let mut d = w.enrol("dev-1", "cust-1", 7, &mut r);
    let rot = T0 + DAY_MS;
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
    let late = rot + w.policy.key_grace_ms;
    let order = w.order("order-1", yen(100), late);
    let txn = w.device_transaction(&mut d, &order, yen(100), late, &mut r);
    let ledger_before = w.ledger_snapshot();
    let err = w.host_process(&mut d, &txn, late).unwrap_err();
    assert_eq!(
        err,
        FlowAError::TransmissionKeyRetired {
            used: kr("fa-tx#1"),
            current: kr("fa-tx#2")
        }
    );
    assert!(
        err.to_string()
            .contains("update the device keys to fa-tx#2")
    );
    assert_eq!(w.ledger_snapshot(), ledger_before);
    assert_eq!(d.record.last_counter, 0);

    // The device applies the update and retries with a new transaction.
    let issued = w
        .issuer()
        .issue_key_update(&d.record, &d.card, late, &mut r)
        .unwrap();
    let confirmation = d
        .state
        .apply_key_update(&issued.key_update, &d.secrets, &mut r)
        .unwrap();
    d.record = w
        .issuer()
        .confirm_key_update(&d.record, Some(&issued.pending), &confirmation, late)
        .unwrap();
    let txn = w.device_transaction(&mut d, &order, yen(100), late, &mut r);
    w.host_process(&mut d, &txn, late).unwrap();
    assert_eq!(d.record.last_counter, 2);
}

#[test]
fn key_update_not_signed_by_the_issuer_is_refused() {
    let mut r = rng(17);
    let mut w = World::new();
    let mut d = w.enrol("dev-1", "cust-1", 7, &mut r);
    let mut other = w.enrol("dev-2", "cust-2", 8, &mut r);
    w.keys
        .transmission
        .rotate(kr("fa-tx#2"), HpkeKeyPair::derive(&[0x66; 32]), T0, 1)
        .unwrap();
    w.keys
        .storage
        .rotate(kr("fa-st#2"), HpkeKeyPair::derive(&[0x67; 32]), T0, 1)
        .unwrap();
    let issued = w
        .issuer()
        .issue_key_update(&d.record, &d.card, T0, &mut r)
        .unwrap();
    let genuine = cose::verify_artefact::<KeyUpdate>(&issued.key_update, |_| {
        Some(w.keys.signing.verifying_key())
    })
    .unwrap()
    .into_payload();
    // Attacker keys.
    let evil = KeyUpdate {
        transmission_key: kessai_flow_a::PublishedKey {
            key_ref: kr("fa-tx#3"),
            public_key: HpkeKeyPair::derive(&[0x01; 32]).public_key().clone(),
        },
        ..genuine.clone()
    };
    let before = device_snapshot(&d);
    // Signed by a key that is not the issuer's, under the issuer's kid or
    // under another kid.
    let signer = SigningKey::from_seed(&[0x93; 32]);
    for kid in [w.keys.signing_ref.clone(), kr("evil#1")] {
        let forged = cose::sign_artefact(&evil, &signer, &kid).unwrap();
        assert_eq!(
            d.state
                .apply_key_update(&forged, &d.secrets, &mut r)
                .unwrap_err(),
            FlowAError::NotFromIssuer
        );
    }
    // The issuer's own update for another device.
    let for_other = w
        .issuer()
        .issue_key_update(&other.record, &other.card, T0, &mut r)
        .unwrap();
    assert_eq!(
        d.state
            .apply_key_update(&for_other.key_update, &d.secrets, &mut r)
            .unwrap_err(),
        FlowAError::WrongDevice
    );
    assert_eq!(device_snapshot(&d), before);
    assert_eq!(d.state.key_refs(), Some((&kr("fa-st#1"), &kr("fa-tx#1"))));

    // Host side: a confirmation without an update pending, or signed by
    // another key, is refused.
    let confirmation = d
        .state
        .apply_key_update(&issued.key_update, &d.secrets, &mut r)
        .unwrap();
    assert_eq!(
        w.issuer()
            .confirm_key_update(&d.record, None, &confirmation, T0),
        Err(FlowAError::NoPendingKeyUpdate)
    );
    assert_eq!(
        w.issuer()
            .confirm_key_update(&d.record, Some(&for_other.pending), &confirmation, T0),
        Err(FlowAError::NoPendingKeyUpdate)
    );
    let other_conf = other
        .state
        .apply_key_update(&for_other.key_update, &other.secrets, &mut r)
        .unwrap();
    assert!(
        w.issuer()
            .confirm_key_update(&d.record, Some(&issued.pending), &other_conf, T0)
            .is_err()
    );
    other.record = w
        .issuer()
        .confirm_key_update(&other.record, Some(&for_other.pending), &other_conf, T0)
        .unwrap();
    assert_eq!(other.record.storage_key, kr("fa-st#2"));
}

#[test]
fn order_over_the_credit_limit_is_refused() {
    let mut r = rng(18);
    let mut w = World::new();
    w.open_funding("cust-1", 1_000);
    let mut d = w.enrol("dev-1", "cust-1", 7, &mut r);
    let order = w.order("order-1", yen(800), T0);
    let txn = w.device_transaction(&mut d, &order, yen(800), T0, &mut r);
    w.host_process(&mut d, &txn, T0).unwrap();

    let ledger_before = w.ledger_snapshot();
    let record_before = d.record.clone();
    let order = w.order("order-2", yen(201), T0);
    let txn = w.device_transaction(&mut d, &order, yen(201), T0, &mut r);
    assert_eq!(
        w.host_process(&mut d, &txn, T0).unwrap_err(),
        FlowAError::OverLimit {
            account: funding_id("cust-1")
        }
    );
    assert_eq!(w.ledger_snapshot(), ledger_before);
    assert_eq!(d.record, record_before);
    // Exactly the remaining room still fits.
    let order = w.order("order-3", yen(200), T0);
    let txn = w.device_transaction(&mut d, &order, yen(200), T0, &mut r);
    w.host_process(&mut d, &txn, T0).unwrap();
}

#[test]
fn order_checks_amount_merchant_and_expiry() {
    let mut r = rng(19);
    let mut w = World::new();
    let mut d = w.enrol("dev-1", "cust-1", 7, &mut r);
    let ledger_before = w.ledger_snapshot();

    // The customer approved another amount than the merchant signed.
    let order = w.order("order-1", yen(900), T0);
    let txn = w.device_transaction(&mut d, &order, yen(90), T0, &mut r);
    assert_eq!(
        w.host_process(&mut d, &txn, T0).unwrap_err(),
        FlowAError::AmountMismatch
    );

    // The order has expired.
    let txn = w.device_transaction(&mut d, &order, yen(900), T0, &mut r);
    assert_eq!(
        w.host_process(&mut d, &txn, T0 + 15 * 60_000).unwrap_err(),
        FlowAError::OrderExpired
    );

    // An order signed by a key the issuer does not know.
    let stranger = SigningKey::from_seed(&[0x92; 32]);
    let bad_order = cose::sign_artefact(
        &kessai_flow_a::artefacts::OrderInformation {
            store: w.store.clone(),
            order_id: "order-9".parse().unwrap(),
            amount: yen(900),
            items_digest: [0; 32],
            created_at_ms: T0,
            expires_at_ms: T0 + 60_000,
        },
        &stranger,
        &kr("stranger#1"),
    )
    .unwrap();
    let txn = w.device_transaction(&mut d, &bad_order, yen(900), T0, &mut r);
    assert_eq!(
        w.host_process(&mut d, &txn, T0).unwrap_err(),
        FlowAError::UnknownKey(kr("stranger#1"))
    );
    // A store key signing an order for another store.
    let other_store = cose::sign_artefact(
        &kessai_flow_a::artefacts::OrderInformation {
            store: "store-2".parse().unwrap(),
            order_id: "order-9".parse().unwrap(),
            amount: yen(900),
            items_digest: [0; 32],
            created_at_ms: T0,
            expires_at_ms: T0 + 60_000,
        },
        &w.store_key,
        &w.store_key_ref,
    )
    .unwrap();
    let txn = w.device_transaction(&mut d, &other_store, yen(900), T0, &mut r);
    assert_eq!(
        w.host_process(&mut d, &txn, T0).unwrap_err(),
        FlowAError::OrderSignerMismatch
    );
    assert_eq!(w.ledger_snapshot(), ledger_before);
    assert_eq!(d.record.last_counter, 0);

    // A device result for another transaction is refused by the device.
    let order = w.order("order-5", yen(10), T0);
    let txn = w.device_transaction(&mut d, &order, yen(10), T0, &mut r);
    let s = w.host_process(&mut d, &txn, T0).unwrap();
    let order = w.order("order-6", yen(10), T0);
    let _txn = w.device_transaction(&mut d, &order, yen(10), T0, &mut r);
    assert_eq!(
        d.state.accept_result(&s.device_result),
        Err(FlowAError::ResultMismatch)
    );
}

#[test]
fn garbage_bytes_never_panic() {
    let mut r = rng(20);
    let mut w = World::new();
    let mut d = w.enrol("dev-1", "cust-1", 7, &mut r);
    let funding = w.ledger.account(&d.record.funding_account).unwrap().clone();
    let inputs: [&[u8]; 4] = [b"", b"\x00", b"\xd2\x84\x40\xa0\x40\x40", &[0xff; 64]];
    for bad in inputs {
        assert!(kessai_flow_a::host::transaction_device(bad).is_err());
        assert!(
            w.issuer()
                .process_transaction(bad, &d.record, &funding, w.merchant_keys(), T0)
                .is_err()
        );
        assert!(d.state.apply_key_update(bad, &d.secrets, &mut r).is_err());
        assert!(d.state.apply_unlock(bad).is_err());
        assert!(d.state.accept_result(bad).is_err());
    }
    // Still works afterwards.
    let order = w.order("order-1", yen(10), T0);
    let txn = w.device_transaction(&mut d, &order, yen(10), T0, &mut r);
    w.host_process(&mut d, &txn, T0).unwrap();
}
