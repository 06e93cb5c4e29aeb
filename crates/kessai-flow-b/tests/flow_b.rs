//! Flow B end to end in one process: store, wallet, host, a real card and a
//! ledger; happy paths, recovery after every lost message, and every bad
//! input of issue 4 (each refused with a typed error, nothing changed).

mod common;

use common::*;
use kessai_crypto::CoseError;
use kessai_crypto::cose::{sign_artefact, verify_artefact};
use kessai_crypto::sign::SigningKey;
use kessai_flow_b::Effect;
use kessai_flow_b::FlowError;
use kessai_flow_b::artefacts::{
    Bill, EvidenceKind, InfoEnvelope, SettlementCompletion, SettlementInformation,
    SettlementReceipt, Stage,
};
use kessai_flow_b::funding::FundingDecision;
use kessai_flow_b::host::{self, Sig2Mode};
use kessai_flow_b::messages::{AbortReason, HostToWallet};
use kessai_flow_b::registry::{MerchantRows, MerchantStatus};
use kessai_flow_b::store::{Store, StoreIdentity};
use kessai_flow_b::wallet::{WalletAction, WalletSession};

/// Relays one host message through the wallet to the card and back;
/// returns the wallet's message for the host.
fn relay(
    w: &mut World,
    wallet: &WalletSession,
    reply: &HostToWallet,
) -> (WalletSession, kessai_flow_b::messages::CardResponses) {
    let (wallet, action) = wallet.on_host(&w.wallet_cfg, reply, w.now).unwrap();
    let (wallet, action) = match action {
        WalletAction::Confirm(_) => wallet.confirm().unwrap(),
        a => (wallet, a),
    };
    let WalletAction::ToCard(apdus) = action else {
        panic!("expected card commands, got {action:?}")
    };
    let responses = w.transmit(&apdus);
    wallet.on_card(responses).unwrap()
}

fn snapshot(w: &World) -> (i64, u32, usize, usize) {
    let s = w.card.snapshot();
    (
        s.balance.amount_minor,
        s.counter,
        w.ledger.transfers().count(),
        w.settled.len(),
    )
}

#[test]
fn purchase_at_a_store() {
    let mut w = World::new(Sig2Mode::Signed);
    let bill = w.bill(1_200, "order-1");
    let out = w.pay(&bill, Cut::None).unwrap();
    let Outcome::Paid { acn, recovered } = out else {
        panic!("{out:?}")
    };
    assert!(!recovered);
    assert_eq!(w.card_balance(), INITIAL - 1_200);
    assert_eq!(w.account_net(&payable("store-1")), 1_200);
    assert_eq!(w.settled.len(), 1);
    assert_eq!(w.receipts.len(), 1);
    w.assert_consistent();
    // The completion binds the bill and the verified PCN.
    let c = verify_artefact::<SettlementCompletion>(&acn, |r| w.host.key_directory().resolve(r))
        .unwrap()
        .into_payload();
    assert_eq!(c.bill_digest, bill.digest);
    assert_eq!(c.pcn.balance_after_minor, (INITIAL - 1_200) as u64);
    assert_eq!(c.pcn.counter, 1);
    assert_eq!(c.transfer_id, w.settled[0].1);
    // Every artefact went to the evidence store.
    for kind in [
        EvidenceKind::Bill,
        EvidenceKind::SettlementInformation,
        EvidenceKind::Pcn,
        EvidenceKind::Completion,
        EvidenceKind::Receipt,
    ] {
        assert!(w.evidence.iter().any(|(k, _)| *k == kind), "{kind:?}");
    }
    // The posting links its evidence.
    let post = w.ledger.transfer(&c.transfer_id).unwrap();
    assert!(
        post.evidence
            .iter()
            .any(|e| e.kind == EvidenceKind::Pcn.label())
    );
}

#[test]
fn purchase_at_a_mall_member_store() {
    let mut w = World::new(Sig2Mode::Signed);
    let bill = w.mall_bill("shop-a", 3_000, "m-order-1");
    assert_eq!(bill.bill.mall_id, Some(id("mall-1")));
    let Outcome::Paid { acn, .. } = w.pay(&bill, Cut::None).unwrap() else {
        panic!()
    };
    assert_eq!(w.account_net(&payable("shop-a")), 3_000);
    assert_eq!(w.account_net(&payable("shop-b")), 0);
    let c = verify_artefact::<SettlementCompletion>(&acn, |r| w.host.key_directory().resolve(r))
        .unwrap()
        .into_payload();
    assert_eq!(c.mall_id, Some(id("mall-1")));
    assert_eq!(c.store_id, id("shop-a"));
    w.assert_consistent();

    // The mall cannot bill for a store that is not its member ...
    assert_eq!(
        w.mall
            .create_bill(&id("store-1"), id("x"), yen(1), [0; 32], w.now, &mut w.rng)
            .unwrap_err(),
        FlowError::NotMallMember
    );
    // ... and the host refuses a mall bill for a store registered outside
    // the mall.
    let bill = w.mall_bill("shop-b", 500, "m-order-2");
    w.stores.get_mut(&id("shop-b")).unwrap().mall_id = None;
    let before = snapshot(&w);
    assert_eq!(
        w.pay(&bill, Cut::None).unwrap_err(),
        FlowError::NotMallMember
    );
    assert_eq!(snapshot(&w), before);
}

#[test]
fn top_up() {
    let mut w = World::new(Sig2Mode::Signed);
    let Outcome::ToppedUp(s) = w.top_up(10_000, "4321", Cut::None).unwrap() else {
        panic!()
    };
    assert_eq!(s.balance_minor, (INITIAL + 10_000) as u64);
    assert_eq!(w.card_balance(), INITIAL + 10_000);
    assert_eq!(w.account_net(&funding_account()), -10_000);
    assert_eq!(
        w.log_uploads.len(),
        1,
        "card history uploaded to the audit store"
    );
    assert!(
        w.evidence
            .iter()
            .any(|(k, _)| *k == EvidenceKind::ValueUpdate)
    );
    w.assert_consistent();
    // The card history now holds the credit; a later purchase uploads
    // nothing (only top-ups read the log unconditionally) and still works.
    let bill = w.bill(700, "after-top-up");
    assert!(matches!(
        w.pay(&bill, Cut::None).unwrap(),
        Outcome::Paid { .. }
    ));
    assert_eq!(w.card_balance(), INITIAL + 10_000 - 700);
    w.assert_consistent();
}

#[test]
fn second_embodiment_without_sig2() {
    let mut w = World::new(Sig2Mode::Omitted);
    let bill = w.bill(2_500, "order-2e");
    assert!(matches!(
        w.pay(&bill, Cut::None).unwrap(),
        Outcome::Paid { .. }
    ));
    assert_eq!(w.card_balance(), INITIAL - 2_500);
    w.assert_consistent();

    // A wallet that requires SIG2 refuses unsigned settlement information
    // and forwards nothing to the card.
    let mut w = World::new(Sig2Mode::Omitted);
    w.wallet_cfg.sig2 = Sig2Mode::Signed;
    let bill = w.bill(2_500, "order-2e");
    let before = snapshot(&w);
    assert_eq!(
        w.pay(&bill, Cut::None).unwrap_err(),
        FlowError::UnsignedSettlementInformation
    );
    assert_eq!(snapshot(&w), before);
}

/// Cut the purchase at every message that can be lost, then let the
/// customer try again: the bill settles exactly once and the shadow equals
/// the card.
#[test]
fn recovery_after_every_lost_message() {
    let mut cuts = vec![Cut::FinalReplyLost];
    for step in 1..=4 {
        cuts.push(Cut::HostReplyLost(step));
        cuts.push(Cut::ResponsesLost(step));
    }
    for cut in cuts {
        let mut w = World::new(Sig2Mode::Signed);
        let bill = w.bill(1_500, "order-r");
        assert!(
            matches!(w.pay(&bill, cut).unwrap(), Outcome::Interrupted),
            "{cut:?}"
        );
        w.now += 1_000;
        let again = w.pay(&bill, Cut::None);
        match cut {
            Cut::FinalReplyLost => {
                assert_eq!(again.unwrap_err(), FlowError::BillAlreadySettled);
            }
            Cut::ResponsesLost(4) => {
                // The card debited but the PCN was lost: the next contact
                // finds the debit in the card log and completes the bill.
                let Outcome::Paid { recovered, acn } = again.unwrap() else {
                    panic!()
                };
                assert!(recovered, "{cut:?}");
                assert_eq!(w.delivered, vec![acn.clone()], "ACN delivered to the store");
                w.finish_with_store(&bill, &acn, None).unwrap();
            }
            _ => {
                let Outcome::Paid { recovered, .. } = again.unwrap() else {
                    panic!("{cut:?}")
                };
                assert!(!recovered, "{cut:?}");
            }
        }
        assert_eq!(w.card_balance(), INITIAL - 1_500, "{cut:?}");
        assert_eq!(w.settled.len(), 1, "{cut:?}");
        assert_eq!(w.account_net(&payable("store-1")), 1_500, "{cut:?}");
        w.assert_consistent();
        // And the bill cannot be paid again.
        assert_eq!(
            w.pay(&bill, Cut::None).unwrap_err(),
            FlowError::BillAlreadySettled
        );
    }
}

/// A lost PCN is also recovered when the next contact is another purchase
/// or a top-up; a lost SPC (never reached the card) is voided.
#[test]
fn recovery_at_the_next_contact_of_any_kind() {
    // PCN lost, next contact: a purchase of another bill.
    let mut w = World::new(Sig2Mode::Signed);
    let b1 = w.bill(1_000, "o-1");
    assert!(matches!(
        w.pay(&b1, Cut::ResponsesLost(4)).unwrap(),
        Outcome::Interrupted
    ));
    assert!(w.card_rec.pending.is_some());
    let b2 = w.bill(2_000, "o-2");
    assert!(matches!(
        w.pay(&b2, Cut::None).unwrap(),
        Outcome::Paid {
            recovered: false,
            ..
        }
    ));
    assert_eq!(w.settled.len(), 2);
    assert_eq!(w.delivered.len(), 1, "b1's ACN goes to the store");
    assert_eq!(w.card_balance(), INITIAL - 3_000);
    w.assert_consistent();

    // SPC lost, next contact: a top-up; the hold is voided, the log uploaded.
    let mut w = World::new(Sig2Mode::Signed);
    let b1 = w.bill(1_000, "o-1");
    assert!(matches!(
        w.pay(&b1, Cut::HostReplyLost(4)).unwrap(),
        Outcome::Interrupted
    ));
    assert!(matches!(
        w.top_up(5_000, "4321", Cut::None).unwrap(),
        Outcome::ToppedUp(_)
    ));
    assert!(w.settled.is_empty());
    assert_eq!(w.card_balance(), INITIAL + 5_000);
    w.assert_consistent();
    // The voided bill can be paid.
    assert!(matches!(
        w.pay(&b1, Cut::None).unwrap(),
        Outcome::Paid { .. }
    ));
    w.assert_consistent();
}

#[test]
fn top_up_recovery() {
    // Top-up steps: 1 handshake, 2 EA, 3 BRC, 4 READ LOG, 5 CREDIT.
    for (cut, credited) in [
        (Cut::ResponsesLost(5), true),
        (Cut::HostReplyLost(5), false),
    ] {
        let mut w = World::new(Sig2Mode::Signed);
        assert!(matches!(
            w.top_up(4_000, "4321", cut).unwrap(),
            Outcome::Interrupted
        ));
        let bill = w.bill(100, "o-after");
        assert!(matches!(
            w.pay(&bill, Cut::None).unwrap(),
            Outcome::Paid { .. }
        ));
        let expected = INITIAL - 100 + if credited { 4_000 } else { 0 };
        assert_eq!(w.card_balance(), expected, "{cut:?}");
        assert_eq!(
            w.account_net(&funding_account()),
            if credited { -4_000 } else { 0 },
            "{cut:?}"
        );
        w.assert_consistent();
    }
}

#[test]
fn duplicated_and_reordered_messages() {
    let mut w = World::new(Sig2Mode::Signed);
    let bill = w.bill(800, "dup");
    let (wallet, session, reply) = w.begin(&bill).unwrap();
    // Step 1.
    let (wallet, m1) = relay(&mut w, &wallet, &reply);
    let t1 = session
        .handle(&w.host, &w.card_rec.clone(), &m1, w.now)
        .unwrap();
    w.commit(&t1.effects).unwrap();
    // The wallet gets the step-2 message twice: the second is refused.
    let (wallet2, m2) = relay(&mut w, &wallet, &t1.reply);
    assert!(wallet2.on_host(&w.wallet_cfg, &t1.reply, w.now).is_err());
    let t2 = t1
        .session
        .handle(&w.host, &w.card_rec.clone(), &m2, w.now)
        .unwrap();
    w.commit(&t2.effects).unwrap();
    // Step-1 responses again (duplicate / reordered): refused, no effect.
    assert_eq!(
        t2.session
            .handle(&w.host, &w.card_rec.clone(), &m1, w.now)
            .unwrap_err(),
        FlowError::OutOfSequence
    );
    // The wallet refuses a host message from the past, and card
    // responses it did not ask for.
    let (wallet3, m3) = relay(&mut w, &wallet2, &t2.reply);
    assert_eq!(
        wallet3
            .on_host(&w.wallet_cfg, &t1.reply, w.now)
            .unwrap_err(),
        FlowError::OutOfSequence
    );
    assert!(matches!(
        wallet3.on_card(vec![vec![0x90, 0x00]]).unwrap_err(),
        FlowError::UnexpectedMessage(_)
    ));
    let t3 = t2
        .session
        .handle(&w.host, &w.card_rec.clone(), &m3, w.now)
        .unwrap();
    w.commit(&t3.effects).unwrap();
    let (_wallet4, m4) = relay(&mut w, &wallet3, &t3.reply);
    let t4 = t3
        .session
        .handle(&w.host, &w.card_rec.clone(), &m4, w.now)
        .unwrap();
    w.commit(&t4.effects).unwrap();
    assert!(matches!(t4.reply, HostToWallet::Completion { .. }));
    assert_eq!(w.settled.len(), 1);
    // The PCN delivered twice: same completion, no effect, nothing posted
    // twice.
    let again = t4
        .session
        .handle(&w.host, &w.card_rec.clone(), &m4, w.now)
        .unwrap();
    assert_eq!(again.reply, t4.reply);
    assert!(again.effects.is_empty());
    // Other responses after completion are refused.
    assert_eq!(
        t4.session
            .handle(&w.host, &w.card_rec.clone(), &m3, w.now)
            .unwrap_err(),
        FlowError::AlreadyCompleted
    );
    w.assert_consistent();
}

#[test]
fn tampered_and_foreign_bills_are_refused() {
    let mut w = World::new(Sig2Mode::Signed);
    let bill = w.bill(1_200, "order-t");
    let before = snapshot(&w);

    // Amount changed after signing.
    let mut t = bill.clone();
    t.bytes = tamper::<Bill>(&bill.bytes, |b| b.amount = yen(12));
    assert_eq!(
        w.pay(&t, Cut::None).unwrap_err(),
        FlowError::Cose(CoseError::BadSignature)
    );
    // The host refuses it too (not only the wallet).
    let (s, m) = w.rows_for(&t.bytes);
    let rows = MerchantRows {
        store: &s,
        mall: m.as_ref(),
    };
    assert_eq!(
        host::verify_bill(&t.bytes, rows, w.now).unwrap_err(),
        FlowError::Cose(CoseError::BadSignature)
    );

    // Store id changed after signing: routed to store-2, whose keys do not
    // include store-1's.
    let forged = tamper::<Bill>(&bill.bytes, |b| b.store_id = id("store-2"));
    let (s, m) = w.rows_for(&forged);
    assert_eq!(s.store_id, id("store-2"));
    assert!(matches!(
        host::verify_bill(
            &forged,
            MerchantRows {
                store: &s,
                mall: m.as_ref()
            },
            w.now
        ),
        Err(FlowError::Cose(CoseError::UnknownKey(_)))
    ));

    // A bill for store-1 signed by store-2's key (its own kid, or store-1's
    // kid).
    for kid in ["store-2-sign#1", "store-1-sign#1"] {
        let impostor = Store {
            identity: StoreIdentity::Store(id("store-1")),
            signing_key: SigningKey::from_seed(&[3; 32]),
            key_ref: id(kid),
            host_keys: w.host.key_directory(),
            bill_ttl_ms: 600_000,
        };
        let b = impostor
            .create_bill(
                &id("store-1"),
                id("order-i"),
                yen(10),
                [0; 32],
                w.now,
                &mut w.rng,
            )
            .unwrap();
        let (s, m) = w.rows_for(&b.bytes);
        let err = host::verify_bill(
            &b.bytes,
            MerchantRows {
                store: &s,
                mall: m.as_ref(),
            },
            w.now,
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                FlowError::Cose(CoseError::UnknownKey(_) | CoseError::BadSignature)
            ),
            "{err:?}"
        );
    }

    // Suspended store.
    w.stores.get_mut(&id("store-1")).unwrap().status = MerchantStatus::Suspended;
    let err = w.pay(&bill, Cut::None).unwrap_err();
    assert_eq!(err, FlowError::MerchantNotActive(MerchantStatus::Suspended));
    w.stores.get_mut(&id("store-1")).unwrap().status = MerchantStatus::Active;

    // Expired.
    w.now += 600_000;
    assert_eq!(w.pay(&bill, Cut::None).unwrap_err(), FlowError::BillExpired);
    let (s, m) = w.rows_for(&bill.bytes);
    assert_eq!(
        host::verify_bill(
            &bill.bytes,
            MerchantRows {
                store: &s,
                mall: m.as_ref()
            },
            w.now
        )
        .unwrap_err(),
        FlowError::BillExpired
    );
    assert_eq!(snapshot(&w), before);
    assert!(w.card_rec.pending.is_none());
}

#[test]
fn a_bill_settles_once_sequentially_and_concurrently() {
    let mut w = World::new(Sig2Mode::Signed);
    let bill = w.bill(900, "once");
    assert!(matches!(
        w.pay(&bill, Cut::None).unwrap(),
        Outcome::Paid { .. }
    ));
    let before = snapshot(&w);
    assert_eq!(
        w.pay(&bill, Cut::None).unwrap_err(),
        FlowError::BillAlreadySettled
    );
    assert_eq!(snapshot(&w), before);

    // Two sessions start while the bill is open (two wallets, two host
    // processes). The first pays; the second's reservation is refused by
    // the database, so its SPC never reaches the wallet.
    let mut w = World::new(Sig2Mode::Signed);
    let bill = w.bill(900, "race");
    let (w2, s2, r2) = w.begin(&bill).unwrap();
    assert!(matches!(
        w.pay(&bill, Cut::None).unwrap(),
        Outcome::Paid { .. }
    ));
    let before = snapshot(&w);
    let out = w.drive(w2, s2, r2, Some(&bill), Cut::None).unwrap();
    let Outcome::CommitRefused(e) = out else {
        panic!("{out:?}")
    };
    assert!(e.contains("Settled"), "{e}");
    assert_eq!(snapshot(&w).0, before.0, "card balance unchanged");
    assert_eq!(w.settled.len(), 1);
    w.assert_consistent();
}

/// Runs a purchase up to the settlement information carrying the SPC and
/// returns it (the hold is committed), with the wallet waiting for it.
fn up_to_spc(
    w: &mut World,
    bill: &kessai_flow_b::store::IssuedBill,
) -> (WalletSession, HostToWallet) {
    let (mut wallet, mut session, mut reply) = w.begin(bill).unwrap();
    for _ in 0..3 {
        let (wl, m) = relay(w, &wallet, &reply);
        let t = session
            .handle(&w.host, &w.card_rec.clone(), &m, w.now)
            .unwrap();
        w.commit(&t.effects).unwrap();
        wallet = wl;
        session = t.session;
        reply = t.reply;
    }
    (wallet, reply)
}

#[test]
fn tampered_or_foreign_sig2_is_not_forwarded() {
    let mut w = World::new(Sig2Mode::Signed);
    let bill = w.bill(1_000, "sig2");
    let (wallet, reply) = up_to_spc(&mut w, &bill);
    let HostToWallet::Settlement {
        session_id,
        step,
        info: InfoEnvelope::Signed(bytes),
    } = &reply
    else {
        panic!()
    };
    let card_before = w.card.snapshot();

    // Tampered (the BI the customer sees raised).
    let tampered = tamper::<SettlementInformation>(bytes, |i| i.balance_minor = Some(1_000_000));
    let msg = HostToWallet::Settlement {
        session_id: *session_id,
        step: *step,
        info: InfoEnvelope::Signed(tampered),
    };
    assert_eq!(
        wallet.on_host(&w.wallet_cfg, &msg, w.now).unwrap_err(),
        FlowError::Cose(CoseError::BadSignature)
    );

    // Signed by a key the wallet does not know.
    let info =
        verify_artefact::<SettlementInformation>(bytes, |r| w.host.key_directory().resolve(r))
            .unwrap()
            .into_payload();
    assert_eq!(info.stage, Stage::Debit);
    let rogue = SigningKey::from_seed(&[0xEE; 32]);
    let msg = HostToWallet::Settlement {
        session_id: *session_id,
        step: *step,
        info: InfoEnvelope::Signed(sign_artefact(&info, &rogue, &id("host-sign-x#1")).unwrap()),
    };
    assert!(matches!(
        wallet.on_host(&w.wallet_cfg, &msg, w.now).unwrap_err(),
        FlowError::Cose(CoseError::UnknownKey(_))
    ));

    // Signed by the host but with an amount that is not the bill's.
    let mut other = info.clone();
    other.amount = yen(10_000);
    let msg = HostToWallet::Settlement {
        session_id: *session_id,
        step: *step,
        info: InfoEnvelope::Signed(
            sign_artefact(&other, &w.host.signing_key, &w.host.key_ref).unwrap(),
        ),
    };
    assert_eq!(
        wallet.on_host(&w.wallet_cfg, &msg, w.now).unwrap_err(),
        FlowError::AmountMismatch
    );

    // For another bill.
    let mut other = info.clone();
    other.bill_digest = [0; 32];
    let msg = HostToWallet::Settlement {
        session_id: *session_id,
        step: *step,
        info: InfoEnvelope::Signed(
            sign_artefact(&other, &w.host.signing_key, &w.host.key_ref).unwrap(),
        ),
    };
    assert!(matches!(
        wallet.on_host(&w.wallet_cfg, &msg, w.now).unwrap_err(),
        FlowError::BindingMismatch(_)
    ));

    // A DEBIT smuggled in as a handshake command is not relayed.
    let msg = HostToWallet::CardExchange {
        session_id: *session_id,
        step: *step,
        apdus: vec![info.command.clone()],
    };
    assert_eq!(
        wallet.on_host(&w.wallet_cfg, &msg, w.now).unwrap_err(),
        FlowError::CommandNotAllowed
    );

    // Nothing reached the card.
    assert_eq!(w.card.snapshot(), card_before);
    // The customer declining also sends nothing.
    let (confirming, action) = wallet.on_host(&w.wallet_cfg, &reply, w.now).unwrap();
    assert!(matches!(action, WalletAction::Confirm(_)));
    assert_eq!(
        confirming.on_card(vec![]).unwrap_err(),
        FlowError::NotConfirmed
    );
    confirming.decline().unwrap();
    assert_eq!(w.card.snapshot(), card_before);

    // The hold taken for the SPC is voided at the next contact.
    assert!(w.card_rec.pending.is_some());
    assert!(matches!(
        w.pay(&bill, Cut::None).unwrap(),
        Outcome::Paid { .. }
    ));
    w.assert_consistent();
}

#[test]
fn unknown_host_key_is_refused_by_the_wallet() {
    let mut w = World::new(Sig2Mode::Signed);
    w.host = host_config(10, Sig2Mode::Signed); // the wallet trusts host 9
    let bill = w.bill(1_000, "rogue-host");
    let before = snapshot(&w);
    assert!(matches!(
        w.pay(&bill, Cut::None).unwrap_err(),
        FlowError::Cose(CoseError::UnknownKey(_))
    ));
    assert_eq!(snapshot(&w), before);
}

#[test]
fn replayed_spc_from_an_earlier_session_does_nothing() {
    let mut w = World::new(Sig2Mode::Signed);
    let b1 = w.bill(1_000, "first");
    assert!(matches!(
        w.pay(&b1, Cut::None).unwrap(),
        Outcome::Paid { .. }
    ));
    let old_spc = w.last_spc.clone().unwrap();
    let balance = w.card_balance();

    let b2 = w.bill(2_000, "second");
    w.swap = Swap::Command(old_spc);
    let err = w.pay(&b2, Cut::None).unwrap_err();
    assert_eq!(
        err,
        FlowError::CardStatus(0x6982),
        "the card's MAC check refuses it"
    );
    assert_eq!(w.card_balance(), balance);
    assert_eq!(w.settled.len(), 1);
    // Next contact voids the hold and the bill is paid once.
    assert!(matches!(
        w.pay(&b2, Cut::None).unwrap(),
        Outcome::Paid { .. }
    ));
    assert_eq!(w.card_balance(), balance - 2_000);
    w.assert_consistent();
}

#[test]
fn replayed_pcn_and_pcn_from_another_card_are_refused() {
    // A PCN from an earlier session of the same card.
    let mut w = World::new(Sig2Mode::Signed);
    let b1 = w.bill(1_000, "first");
    assert!(matches!(
        w.pay(&b1, Cut::None).unwrap(),
        Outcome::Paid { .. }
    ));
    let old_pcn = w.last_pcn.clone().unwrap();
    let b2 = w.bill(2_000, "second");
    w.swap = Swap::Response(old_pcn);
    let err = w.pay(&b2, Cut::None).unwrap_err();
    assert_eq!(
        err,
        FlowError::Scp03(kessai_scp03::Scp03Error::RMacMismatch)
    );
    assert_eq!(w.settled.len(), 1, "nothing posted for the replay");
    // The card did debit b2 (its real PCN was swapped away): recovered.
    assert!(matches!(
        w.pay(&b2, Cut::None).unwrap(),
        Outcome::Paid {
            recovered: true,
            ..
        }
    ));
    w.assert_consistent();

    // A PCN from another card.
    let mut other = World::with_card("card-2", Sig2Mode::Signed, 99);
    let ob = other.bill(2_000, "second");
    assert!(matches!(
        other.pay(&ob, Cut::None).unwrap(),
        Outcome::Paid { .. }
    ));
    let foreign = other.last_pcn.clone().unwrap();
    let mut w = World::new(Sig2Mode::Signed);
    let b = w.bill(2_000, "second");
    w.swap = Swap::Response(foreign);
    assert_eq!(
        w.pay(&b, Cut::None).unwrap_err(),
        FlowError::Scp03(kessai_scp03::Scp03Error::RMacMismatch)
    );
    assert!(w.settled.is_empty());
    assert!(matches!(
        w.pay(&b, Cut::None).unwrap(),
        Outcome::Paid {
            recovered: true,
            ..
        }
    ));
    w.assert_consistent();
}

#[test]
fn receipt_with_a_wrong_signature_is_refused() {
    let mut w = World::new(Sig2Mode::Signed);
    let bill = w.bill(1_000, "receipt");
    let Outcome::Paid { acn, .. } = w.pay(&bill, Cut::None).unwrap() else {
        panic!()
    };
    let verified = w.store.verify_completion(&bill, &acn).unwrap();
    let good = w.store.issue_receipt(&verified, w.now, &mut w.rng).unwrap();
    let (s, m) = w.rows_for(&bill.bytes);
    let rows = MerchantRows {
        store: &s,
        mall: m.as_ref(),
    };

    // Signed by another store.
    let payload =
        verify_artefact::<SettlementReceipt>(&good.receipt, |r| rows.signing_keys().resolve(r))
            .unwrap()
            .into_payload();
    let foreign = sign_artefact(
        &payload,
        &SigningKey::from_seed(&[3; 32]),
        &id("store-2-sign#1"),
    )
    .unwrap();
    assert!(matches!(
        host::verify_receipt(&foreign, &acn, rows).unwrap_err(),
        FlowError::Cose(CoseError::UnknownKey(_))
    ));
    // Tampered.
    let tampered = tamper::<SettlementReceipt>(&good.receipt, |r| r.amount = yen(1));
    assert_eq!(
        host::verify_receipt(&tampered, &acn, rows).unwrap_err(),
        FlowError::Cose(CoseError::BadSignature)
    );
    // For another completion.
    let mut other = payload.clone();
    other.completion_digest = [7; 32];
    let rebound = sign_artefact(&other, &w.store.signing_key, &w.store.key_ref).unwrap();
    assert!(matches!(
        host::verify_receipt(&rebound, &acn, rows).unwrap_err(),
        FlowError::BindingMismatch(_)
    ));
    // The wallet refuses them as well.
    let wallet = WalletSession::purchase(&w.wallet_cfg, &bill.bytes, id("card-1"), w.now).unwrap();
    let msg = HostToWallet::Completion {
        session_id: [0; 16],
        acn: acn.clone(),
    };
    assert!(
        wallet.on_host(&w.wallet_cfg, &msg, w.now).is_err(),
        "no session yet"
    );
    // A completion tampered for the store is refused by the store.
    let t = tamper::<SettlementCompletion>(&acn, |c| c.amount = yen(1));
    assert_eq!(
        w.store.verify_completion(&bill, &t).unwrap_err(),
        FlowError::Cose(CoseError::BadSignature)
    );
    assert_eq!(w.receipts.len(), 1, "only the good receipt was recorded");
}

#[test]
fn top_up_with_wrong_pin_counts_and_locks() {
    let mut w = World::new(Sig2Mode::Signed);
    let before = snapshot(&w);
    for (i, tries_left) in [2u8, 1].into_iter().enumerate() {
        let FundingDecision::Declined { error, effects } = w.authorize(1_000, "0000") else {
            panic!()
        };
        assert_eq!(error, FlowError::WrongPin { tries_left });
        assert!(
            matches!(effects[0], Effect::RecordPinTry { failed_tries, locked: false, .. } if failed_tries == i as u8 + 1)
        );
    }
    let FundingDecision::Declined { error, .. } = w.authorize(1_000, "0000") else {
        panic!()
    };
    assert_eq!(error, FlowError::PinLocked);
    assert!(w.pin_locked);
    assert_eq!(w.funding.failed_pin_tries, 3);
    // After a restart (new host configuration, same database row) the
    // right PIN is still refused.
    w.host = host_config(9, Sig2Mode::Signed);
    assert_eq!(
        w.top_up(1_000, "4321", Cut::None).unwrap_err(),
        FlowError::PinLocked
    );
    assert_eq!(snapshot(&w), before);

    // A success resets the counter.
    let mut w = World::new(Sig2Mode::Signed);
    let _ = w.authorize(1_000, "0000");
    assert_eq!(w.funding.failed_pin_tries, 1);
    assert!(matches!(
        w.top_up(1_000, "4321", Cut::None).unwrap(),
        Outcome::ToppedUp(_)
    ));
    assert_eq!(w.funding.failed_pin_tries, 0);
}

#[test]
fn top_up_over_credit_limit_or_with_wrong_card_data() {
    let mut w = World::new(Sig2Mode::Signed);
    let before = snapshot(&w);
    assert_eq!(
        w.top_up(CREDIT_LIMIT + 1, "4321", Cut::None).unwrap_err(),
        FlowError::OverCreditLimit
    );
    assert_eq!(w.funding.failed_pin_tries, 0);
    // Wrong expiry.
    let mut req = w.top_up_request(1_000, "4321");
    req.credentials.expiry_yymm = "2901".into();
    let account = w.ledger.account(&funding_account()).unwrap().clone();
    let d = kessai_flow_b::funding::authorize_funding(
        &w.host, &req, &w.funding, &account, w.now, &mut w.rng,
    );
    assert!(
        matches!(d, FundingDecision::Declined { error: FlowError::FundingCardRefused, ref effects } if effects.is_empty())
    );
    // Expired funding card.
    w.funding.expiry_yymm = "2512".into();
    let mut req = w.top_up_request(1_000, "4321");
    req.credentials.expiry_yymm = "2512".into();
    let d = kessai_flow_b::funding::authorize_funding(
        &w.host, &req, &w.funding, &account, w.now, &mut w.rng,
    );
    assert!(matches!(
        d,
        FundingDecision::Declined {
            error: FlowError::FundingCardRefused,
            ..
        }
    ));
    assert_eq!(snapshot(&w), before);
}

#[test]
fn top_up_beyond_the_purse_maximum_is_aborted() {
    let mut w = World::new(Sig2Mode::Signed);
    w.ledger = {
        // Lift the credit limit for this test.
        let mut l = kessai_ledger::MemLedger::new();
        for a in w.ledger.accounts() {
            let mut a = a.clone();
            if a.id == funding_account() {
                a.limit = kessai_ledger::BalanceLimit::MaxNetDebit(1_000_000);
            }
            l.insert_account(a).unwrap();
        }
        for t in w.ledger.transfers() {
            l.load_transfer(t.clone());
        }
        l
    };
    let out = w
        .top_up(PURSE_MAX - INITIAL + 1, "4321", Cut::None)
        .unwrap();
    assert!(matches!(out, Outcome::Aborted(AbortReason::PurseFull)));
    assert_eq!(w.card_balance(), INITIAL);
    w.assert_consistent();
}

#[test]
fn card_removed_mid_session() {
    // Removed before the SPC reaches it: no debit; the hold is voided at
    // the next contact.
    let mut w = World::new(Sig2Mode::Signed);
    let bill = w.bill(1_000, "removed");
    w.swap = Swap::RemoveCardBefore;
    assert_eq!(
        w.pay(&bill, Cut::None).unwrap_err(),
        FlowError::CardStatus(0x6F00)
    );
    assert_eq!(w.card_balance(), INITIAL);
    w.card.power_on();
    assert!(matches!(
        w.pay(&bill, Cut::None).unwrap(),
        Outcome::Paid {
            recovered: false,
            ..
        }
    ));
    w.assert_consistent();

    // Removed during the handshake: nothing happened at all.
    let mut w = World::new(Sig2Mode::Signed);
    let bill = w.bill(1_000, "removed-2");
    let (wallet, session, reply) = w.begin(&bill).unwrap();
    let (wallet, m1) = relay(&mut w, &wallet, &reply);
    let t1 = session
        .handle(&w.host, &w.card_rec.clone(), &m1, w.now)
        .unwrap();
    w.commit(&t1.effects).unwrap();
    w.card.power_off();
    let (_, m2) = relay(&mut w, &wallet, &t1.reply);
    let before = snapshot(&w);
    assert!(matches!(
        t1.session
            .handle(&w.host, &w.card_rec.clone(), &m2, w.now)
            .unwrap_err(),
        FlowError::Scp03(kessai_scp03::Scp03Error::Status(0x6F00))
    ));
    assert_eq!(snapshot(&w), before);
    w.card.power_on();
    assert!(matches!(
        w.pay(&bill, Cut::None).unwrap(),
        Outcome::Paid { .. }
    ));
    w.assert_consistent();
}

#[test]
fn session_timeout() {
    let mut w = World::new(Sig2Mode::Signed);
    let bill = w.bill(1_000, "slow");
    let (wallet, session, reply) = w.begin(&bill).unwrap();
    let (_, m1) = relay(&mut w, &wallet, &reply);
    let before = snapshot(&w);
    w.now = session.deadline_ms() + 1;
    assert_eq!(
        session
            .handle(&w.host, &w.card_rec.clone(), &m1, w.now)
            .unwrap_err(),
        FlowError::SessionTimedOut
    );
    assert_eq!(snapshot(&w), before);
    // The wallet also refuses an instruction past its deadline.
    let mut w = World::new(Sig2Mode::Signed);
    let bill = w.bill(1_000, "slow-2");
    let (wallet, reply) = up_to_spc(&mut w, &bill);
    w.now += 10 * 60_000;
    assert_eq!(
        wallet.on_host(&w.wallet_cfg, &reply, w.now).unwrap_err(),
        FlowError::SessionTimedOut
    );
    // A later contact (new bill, the old one expired) voids the hold.
    let fresh = w.bill(1_000, "slow-3");
    assert!(matches!(
        w.pay(&fresh, Cut::None).unwrap(),
        Outcome::Paid { .. }
    ));
    assert_eq!(
        w.bills.get(&bill.bill.key()),
        Some(&kessai_flow_b::registry::BillStatus::Open)
    );
    w.assert_consistent();
}

#[test]
fn insufficient_balance_ends_without_moving_value() {
    let mut w = World::new(Sig2Mode::Signed);
    let bill = w.bill(INITIAL + 1, "too-much");
    assert!(matches!(
        w.pay(&bill, Cut::None).unwrap(),
        Outcome::Aborted(AbortReason::InsufficientBalance)
    ));
    assert_eq!(w.card_balance(), INITIAL);
    assert!(!w.bills.contains_key(&bill.bill.key()));
    w.assert_consistent();
}

#[test]
fn artefacts_name_their_type_and_bind_each_other() {
    let mut w = World::new(Sig2Mode::Signed);
    let bill = w.bill(1_000, "types");
    let Outcome::Paid { acn, .. } = w.pay(&bill, Cut::None).unwrap() else {
        panic!()
    };
    // A completion is not a bill, a bill is not a completion.
    let hk = w.host.key_directory();
    assert!(matches!(
        verify_artefact::<Bill>(&acn, |r| hk.resolve(r)).unwrap_err(),
        CoseError::WrongType { .. }
    ));
    // A completion for another bill of the same store is refused by it.
    let other = w.bill(1_000, "types-2");
    assert!(matches!(
        w.store.verify_completion(&other, &acn).unwrap_err(),
        FlowError::BindingMismatch(_)
    ));
    // The bill route can be peeked, garbage cannot.
    assert_eq!(
        host::peek_bill_route(&bill.bytes).unwrap(),
        (id("store-1"), None)
    );
    assert!(host::peek_bill_route(b"\x00garbage").is_err());
    assert!(host::peek_bill_route(&acn).is_err());
}
