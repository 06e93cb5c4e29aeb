//! Basic flow D (claims 1, 4–6, 15–17) and its bad inputs, in process:
//! real applet, host decisions, MemHost store, MemLedger.

mod common;

use common::*;
use kessai_flow_d::FlowDError;
use kessai_flow_d::artefacts::{Variant, verify_receipt};
use kessai_flow_d::emvqr::{PasswordQr, TokenBin, render_text};
use kessai_flow_d::host::{
    AuthorizationRequest, PasswordGrant, PasswordInput, PasswordState, RedemptionChannel,
    RedemptionRequest,
};
use kessai_flow_d::phone::{CustomerVerification, build_authorization};
use kessai_ledger::Balances;
use kessai_secrets::Pin;

fn pin(p: &str) -> CustomerVerification {
    CustomerVerification::OnlinePin(Pin::new(p).unwrap())
}

fn request(
    w: &mut World,
    which: char,
    cap: i64,
    v: &CustomerVerification,
    seed: u64,
) -> AuthorizationRequest {
    let mut r = rng(seed);
    let ch = w.store.issue_challenge(&w.host, &mut r, NOW).unwrap();
    let public = w.host.public();
    let card = if which == 'a' {
        &mut w.card_a
    } else {
        &mut w.card_b
    };
    build_authorization(card, &public, &ch, yen(cap), v, &mut r).unwrap()
}

fn authorize(w: &mut World, which: char, cap: i64, seed: u64) -> PasswordGrant {
    let req = request(w, which, cap, &pin("1234"), seed);
    w.store
        .authorize(&w.host, &req, &mut rng(seed + 1000), NOW + 1_000)
        .unwrap()
}

fn sale(terminal: &str, password: PasswordInput, amount: i64) -> RedemptionRequest {
    RedemptionRequest {
        terminal_id: id(terminal),
        password,
        amount: yen(amount),
        goods: goods(amount),
        channel: RedemptionChannel::KeyedOrScanned,
    }
}

fn digits(g: &PasswordGrant) -> PasswordInput {
    PasswordInput::Digits(g.password.grouped())
}

#[test]
fn basic_flow_digits_then_qr_settles_once_and_pushes_the_receipt() {
    let mut w = world();
    let grant = authorize(&mut w, 'a', 5_000, 1);
    assert_eq!(grant.cap, yen(5_000));
    assert_eq!(grant.expires_at_ms, NOW + 1_000 + 120_000);
    assert_eq!(grant.password.expose_digits().len(), 12);
    // The phone can show it as a QR code.
    assert!(render_text(&grant.qr_payload).unwrap().lines().count() > 10);
    // Only the keyed hash is stored; the card counter advanced.
    let rec = w.store.passwords.values().next().unwrap().clone();
    assert_eq!(w.store.passwords.len(), 1);
    assert!(!format!("{:?}", w.store).contains(grant.password.expose_digits()));
    assert_eq!(w.store.cards[&id("card-a")].last_counter, 1);

    let settled = w
        .store
        .redeem(&w.host, &sale("pos-1", digits(&grant), 1_200), NOW + 30_000)
        .unwrap();
    let fund = balances(&w.store, "fund-card-a");
    assert_eq!(fund.debits_posted, 1_200);
    assert_eq!(balances(&w.store, "pay-shop-1").credits_posted, 1_200);
    assert!(matches!(
        w.store.passwords[&rec.id].state,
        PasswordState::Used { .. }
    ));
    // Receipt: verifies under the host key, printed at the POS, pushed to the phone.
    let public = w.host.public();
    let receipt = verify_receipt(
        &settled.receipt.cose,
        &public.receipt_key_ref,
        &public.receipt_key,
    )
    .unwrap();
    assert_eq!(receipt.amount, yen(1_200));
    assert_eq!(receipt.variant, Variant::Password);
    assert_eq!(receipt.card_masked, "411111******1111");
    assert!(receipt.to_text().contains("TOTAL  1200 JPY"));
    assert_eq!(
        w.store.phone_pushes,
        vec![(id("card-a"), settled.receipt.cose.clone())]
    );
    assert_eq!(settled.transfer.evidence.len(), 2);

    // Second authorization, redeemed by scanning the QR code at another terminal.
    let g2 = authorize(&mut w, 'a', 3_000, 2);
    let qr = PasswordQr::from_payload(&g2.qr_payload, &TokenBin::default()).unwrap();
    assert_eq!(qr.password, g2.password);
    assert_eq!(qr.counter, 2);
    w.store
        .redeem(
            &w.host,
            &sale("pos-2", PasswordInput::Qr(g2.qr_payload.clone()), 3_000),
            NOW + 2_000,
        )
        .unwrap();
    assert_eq!(balances(&w.store, "fund-card-a").debits_posted, 4_200);
    assert_eq!(w.store.ledger.transfers().count(), 2);
}

#[test]
fn offline_pin_biometric_and_registered_secret_verify_the_customer() {
    let mut w = world();
    // Offline PIN: the card checks it and binds CVM 01 into its cryptogram.
    let req = request(
        &mut w,
        'a',
        1_000,
        &CustomerVerification::OfflinePin(Pin::new("1234").unwrap()),
        3,
    );
    assert_eq!(req.card.cvm, 1);
    w.store.authorize(&w.host, &req, &mut rng(3), NOW).unwrap();
    // A wrong offline PIN is refused by the card: nothing reaches the host.
    let mut r = rng(4);
    let ch = w.store.issue_challenge(&w.host, &mut r, NOW).unwrap();
    let public = w.host.public();
    let wrong = CustomerVerification::OfflinePin(Pin::new("9999").unwrap());
    assert_eq!(
        build_authorization(&mut w.card_a, &public, &ch, yen(1_000), &wrong, &mut r),
        Err(FlowDError::WrongPin { tries_left: 2 })
    );
    // Claiming offline PIN without the card's CVM byte is refused.
    let mut forged = request(&mut w, 'a', 1_000, &pin("1234"), 5);
    forged.method = kessai_flow_d::host::CvmMethod::OfflinePin;
    let before = snapshot(&w.store);
    assert_eq!(
        w.store.authorize(&w.host, &forged, &mut rng(5), NOW),
        Err(FlowDError::CvmNotAvailable)
    );
    assert_ne!(
        snapshot(&w.store),
        before,
        "challenge and counter are consumed once the card verified"
    );

    // Registered secret (claim 17): right, then wrong (a try is consumed).
    let ok = request(
        &mut w,
        'a',
        1_000,
        &CustomerVerification::RegisteredSecret(SECRET_A.into()),
        6,
    );
    w.store.authorize(&w.host, &ok, &mut rng(6), NOW).unwrap();
    let bad = request(
        &mut w,
        'a',
        1_000,
        &CustomerVerification::RegisteredSecret("red heron".into()),
        7,
    );
    assert_eq!(
        w.store.authorize(&w.host, &bad, &mut rng(7), NOW),
        Err(FlowDError::WrongPin { tries_left: 2 })
    );

    // On-card fingerprint (claim 16): the card's matcher compares the live
    // impression with its enrolled template and sets CVM 02.
    let mut r = rng(8);
    let mut fingers = Fingers::new(8);
    let mut bio = fingers.enrolled_card("card-b", PAN_B, 2);
    let ch = w.store.issue_challenge(&w.host, &mut r, NOW).unwrap();
    let live = fingers.touch(true);
    let req = build_authorization(
        &mut bio,
        &public,
        &ch,
        yen(900),
        &CustomerVerification::OnCardBiometric(live),
        &mut r,
    )
    .unwrap();
    assert_eq!(req.card.cvm, 2);
    w.store.authorize(&w.host, &req, &mut r, NOW).unwrap();
    // A stranger's finger: the card refuses, no cryptogram is made.
    let ch = w.store.issue_challenge(&w.host, &mut r, NOW).unwrap();
    let stranger = fingers.touch(false);
    assert_eq!(
        build_authorization(
            &mut bio,
            &public,
            &ch,
            yen(900),
            &CustomerVerification::OnCardBiometric(stranger),
            &mut r,
        )
        .unwrap_err(),
        FlowDError::WrongPin { tries_left: 4 }
    );
    // A phone that skips the card's matcher but claims the biometric
    // method: the cryptogram says CVM 00 and the host refuses.
    let ch = w.store.issue_challenge(&w.host, &mut r, NOW).unwrap();
    let mut forged =
        build_authorization(&mut bio, &public, &ch, yen(900), &pin("1234"), &mut r).unwrap();
    forged.method = kessai_flow_d::host::CvmMethod::OnCardBiometric;
    assert_eq!(
        w.store.authorize(&w.host, &forged, &mut r, NOW),
        Err(FlowDError::CvmNotAvailable)
    );
    // Rewriting the CVM byte to 02 breaks the cryptogram.
    let ch = w.store.issue_challenge(&w.host, &mut r, NOW).unwrap();
    let mut rewritten =
        build_authorization(&mut bio, &public, &ch, yen(900), &pin("1234"), &mut r).unwrap();
    rewritten.method = kessai_flow_d::host::CvmMethod::OnCardBiometric;
    rewritten.card.cvm = 2;
    assert_eq!(
        w.store.authorize(&w.host, &rewritten, &mut r, NOW),
        Err(FlowDError::BadCryptogram)
    );
    assert_eq!(w.store.ledger.transfers().count(), 0);
}

#[test]
fn wrong_pin_counts_down_then_locks_and_nothing_settles() {
    let mut w = world();
    for (i, left) in [2u8, 1, 0].into_iter().enumerate() {
        let req = request(&mut w, 'a', 1_000, &pin("4321"), 10 + i as u64);
        assert_eq!(
            w.store.authorize(&w.host, &req, &mut fresh(), NOW),
            Err(FlowDError::WrongPin { tries_left: left })
        );
        let cust = w.store.cards[&id("card-a")].customer.clone().unwrap();
        assert_eq!(cust.cvm_tries_left, left);
    }
    assert!(w.store.cards[&id("card-a")].blocked);
    // Locked: even the right PIN is refused, and nothing changes.
    let req = request(&mut w, 'a', 1_000, &pin("1234"), 20);
    let before = snapshot(&w.store);
    assert_eq!(
        w.store.authorize(&w.host, &req, &mut fresh(), NOW),
        Err(FlowDError::CardBlocked(id("card-a")))
    );
    assert_eq!(snapshot(&w.store), before);
    assert!(w.store.passwords.is_empty());
    assert_eq!(balances(&w.store, "fund-card-a"), Balances::default());
    // A correct PIN before lockout resets the counter.
    let mut w = world();
    let bad = request(&mut w, 'b', 1_000, &pin("0000"), 30);
    assert!(w.store.authorize(&w.host, &bad, &mut fresh(), NOW).is_err());
    let good = request(&mut w, 'b', 1_000, &pin("1234"), 31);
    w.store
        .authorize(&w.host, &good, &mut fresh(), NOW)
        .unwrap();
    assert_eq!(
        w.store.cards[&id("card-b")]
            .customer
            .as_ref()
            .unwrap()
            .cvm_tries_left,
        3
    );
}

#[test]
fn replayed_forged_and_expired_authorizations_change_nothing() {
    let mut w = world();
    let req = request(&mut w, 'a', 1_000, &pin("1234"), 40);
    w.store.authorize(&w.host, &req, &mut fresh(), NOW).unwrap();
    let before = snapshot(&w.store);
    // Replay of the whole request.
    assert_eq!(
        w.store.authorize(&w.host, &req, &mut fresh(), NOW),
        Err(FlowDError::ChallengeUsed)
    );
    assert_eq!(snapshot(&w.store), before);

    // Replayed counter: a cryptogram made earlier (counter 2, held back)
    // submitted after a later one (counter 3) was accepted.
    let held = request(&mut w, 'a', 1_000, &pin("1234"), 41);
    let later = request(&mut w, 'a', 1_000, &pin("1234"), 42);
    w.store
        .authorize(&w.host, &later, &mut fresh(), NOW)
        .unwrap();
    let before = snapshot(&w.store);
    assert_eq!(
        w.store.authorize(&w.host, &held, &mut fresh(), NOW),
        Err(FlowDError::CounterReplay { got: 2, last: 3 })
    );
    assert_eq!(snapshot(&w.store), before);

    // Forged cryptogram, and a cap raised after the card signed.
    let mut forged = request(&mut w, 'a', 1_000, &pin("1234"), 43);
    forged.card.cryptogram[0] ^= 0x01;
    let mut raised = forged.clone();
    raised.card.cryptogram[0] ^= 0x01;
    raised.card.amount_minor = 90_000;
    let before = snapshot(&w.store);
    assert_eq!(
        w.store.authorize(&w.host, &forged, &mut fresh(), NOW),
        Err(FlowDError::BadCryptogram)
    );
    assert_eq!(
        w.store.authorize(&w.host, &raised, &mut fresh(), NOW),
        Err(FlowDError::BadCryptogram)
    );
    // Sealed data swapped in from another authorization does not open.
    let mut swapped = request(&mut w, 'a', 1_000, &pin("1234"), 44);
    let before2 = snapshot(&w.store);
    swapped.sealed = forged.sealed.clone();
    assert_eq!(
        w.store.authorize(&w.host, &swapped, &mut fresh(), NOW),
        Err(FlowDError::BadSealedData)
    );
    assert!(w.store.passwords.len() == 2 && snapshot(&w.store) != before2);
    assert_ne!(before, before2);
    // Expired challenge and unknown card.
    let late = request(&mut w, 'a', 1_000, &pin("1234"), 45);
    let before = snapshot(&w.store);
    assert_eq!(
        w.store
            .authorize(&w.host, &late, &mut fresh(), NOW + 120_000),
        Err(FlowDError::ChallengeExpired)
    );
    let mut unknown = late.clone();
    unknown.card.card_id = id("card-zz");
    assert_eq!(
        w.store.authorize(&w.host, &unknown, &mut fresh(), NOW),
        Err(FlowDError::UnknownCard(id("card-zz")))
    );
    assert_eq!(snapshot(&w.store), before);
}

#[test]
fn redemption_refusals_are_typed_and_change_nothing() {
    let mut w = world();
    let g = authorize(&mut w, 'a', 2_000, 50);
    let s0 = snapshot(&w.store);
    let cases = [
        (sale("pos-1", digits(&g), 2_001), NOW, FlowDError::AboveCap),
        (
            sale("pos-1", digits(&g), 1_000),
            NOW + 1_000 + 120_000,
            FlowDError::PasswordExpired,
        ),
        (
            sale("pos-9", digits(&g), 1_000),
            NOW,
            FlowDError::UnknownTerminal(id("pos-9")),
        ),
        (
            sale("pos-x", digits(&g), 1_000),
            NOW,
            FlowDError::UnknownMerchant(id("shop-2")),
        ),
        (
            sale("pos-1", PasswordInput::Digits("1234".into()), 1_000),
            NOW,
            FlowDError::PasswordFormat,
        ),
        (
            sale("pos-1", PasswordInput::Qr("hQVDUFYwMQ==".into()), 1_000),
            NOW,
            FlowDError::MalformedQr("no application template"),
        ),
        (
            sale("pos-1", PasswordInput::Qr("%%%".into()), 1_000),
            NOW,
            FlowDError::MalformedQr("not base64"),
        ),
    ];
    for (req, at, err) in cases {
        assert_eq!(w.store.redeem(&w.host, &req, at), Err(err.clone()), "{err}");
        assert_eq!(snapshot(&w.store), s0, "{err} changed state");
    }
    let mut wrong_goods = sale("pos-1", digits(&g), 1_000);
    wrong_goods.goods[0].quantity = 3;
    assert_eq!(
        w.store.redeem(&w.host, &wrong_goods, NOW),
        Err(FlowDError::GoodsMismatch)
    );
    assert_eq!(snapshot(&w.store), s0);

    // Then the password settles, and is refused when reused.
    w.store
        .redeem(&w.host, &sale("pos-1", digits(&g), 2_000), NOW)
        .unwrap();
    let s1 = snapshot(&w.store);
    assert_eq!(
        w.store
            .redeem(&w.host, &sale("pos-2", digits(&g), 500), NOW),
        Err(FlowDError::PasswordUsed)
    );
    assert_eq!(snapshot(&w.store), s1);
    assert_eq!(balances(&w.store, "fund-card-a").debits_posted, 2_000);
}

#[test]
fn guessing_is_limited_per_terminal() {
    let mut w = world();
    let g = authorize(&mut w, 'a', 2_000, 60);
    let mut r = rng(61);
    for n in 1..=5u32 {
        let guess = kessai_flow_d::password::TemporaryPassword::generate(&mut r);
        let req = sale(
            "pos-1",
            PasswordInput::Digits(guess.expose_digits().into()),
            500,
        );
        assert_eq!(
            w.store.redeem(&w.host, &req, NOW + u64::from(n)),
            Err(FlowDError::UnknownPassword)
        );
        assert_eq!(w.store.terminals[&id("pos-1")].guess_failures, n);
    }
    // Locked: even the right password is refused at this terminal ...
    let before = snapshot(&w.store);
    assert_eq!(
        w.store
            .redeem(&w.host, &sale("pos-1", digits(&g), 500), NOW + 10),
        Err(FlowDError::TerminalLocked(id("pos-1")))
    );
    assert_eq!(snapshot(&w.store), before);
    // ... but not at another one, and not after the window.
    w.store
        .redeem(&w.host, &sale("pos-2", digits(&g), 500), NOW + 11)
        .unwrap();
    let g2 = authorize(&mut w, 'a', 2_000, 62);
    // After the window the terminal is no longer locked (the password has
    // expired by then, which is the next check).
    let later = NOW + 3_600_000 + 100;
    let res = w
        .store
        .redeem(&w.host, &sale("pos-1", digits(&g2), 500), later);
    assert_eq!(
        res,
        Err(FlowDError::PasswordExpired),
        "terminal unlocked after the window"
    );
}

#[test]
fn password_of_another_card_is_refused_from_the_qr_code() {
    let mut w = world();
    let ga = authorize(&mut w, 'a', 2_000, 70);
    let gb = authorize(&mut w, 'b', 2_000, 71);
    // QR code with A's password but B's card data (cryptogram, counter).
    let bin = TokenBin::default();
    let qa = PasswordQr::from_payload(&ga.qr_payload, &bin).unwrap();
    let qb = PasswordQr::from_payload(&gb.qr_payload, &bin).unwrap();
    let mixed = PasswordQr {
        password: qa.password.clone(),
        ..qb
    };
    let before = snapshot(&w.store);
    let res = w.store.redeem(
        &w.host,
        &sale("pos-1", PasswordInput::Qr(mixed.to_payload(&bin)), 500),
        NOW,
    );
    assert_eq!(res, Err(FlowDError::PasswordOfAnotherCard));
    assert_eq!(w.store.terminals[&id("pos-1")].guess_failures, 1);
    assert_eq!(w.store.ledger.transfers().count(), 0);
    assert_ne!(snapshot(&w.store), before);
}

#[test]
fn concurrent_double_redemption_settles_once() {
    let mut w = world();
    let g = authorize(&mut w, 'a', 2_000, 80);
    // Two POS submit at the same instant: both host processes compute their
    // outcome from the same snapshot (both see the password unused) ...
    let r1 = sale("pos-1", digits(&g), 1_500);
    let r2 = sale("pos-2", digits(&g), 1_000);
    let o1 = w.store.plan_redeem(&w.host, &r1, NOW);
    let o2 = w.store.plan_redeem(&w.host, &r2, NOW);
    assert!(o1.result.is_ok() && o2.result.is_ok());
    // ... and the store's conditional update lets exactly one commit.
    w.store.run(o1, NOW).unwrap();
    let before = snapshot(&w.store);
    assert_eq!(w.store.run(o2, NOW), Err(FlowDError::PasswordUsed));
    assert_eq!(snapshot(&w.store), before);
    assert_eq!(w.store.ledger.transfers().count(), 1);
    assert_eq!(balances(&w.store, "fund-card-a").debits_posted, 1_500);
    assert_eq!(w.store.phone_pushes.len(), 1);
}

#[test]
fn ledger_refusal_rolls_back_the_redemption() {
    let mut w = world();
    let g = authorize(&mut w, 'a', 90_000, 90);
    let g2 = authorize(&mut w, 'a', 90_000, 91);
    w.store
        .redeem(&w.host, &sale("pos-1", digits(&g), 90_000), NOW)
        .unwrap();
    let before = snapshot(&w.store);
    // Credit limit 100 000: a second 90 000 exceeds it.
    let res = w
        .store
        .redeem(&w.host, &sale("pos-1", digits(&g2), 90_000), NOW);
    assert!(matches!(res, Err(FlowDError::Ledger(_))), "{res:?}");
    assert_eq!(snapshot(&w.store), before);
}
