//! Flow D variants: merchant IC card (claims 2, 7, 8), in-phone card check
//! (claim 10), short-range link with many phones on one POS (claims 3,
//! 11–14), dropped links and vanished phones.

mod common;

use std::collections::BTreeMap;

use common::*;
use kessai_crypto::cose;
use kessai_crypto::hpke::HpkeKeyPair;
use kessai_crypto::sign::SigningKey;
use kessai_flow_d::FlowDError;
use kessai_flow_d::artefacts::{CardProfile, Variant, profile_pan_digest, verify_receipt};
use kessai_flow_d::host::HostChallenge;
use kessai_flow_d::link::{Link, LinkSession, MemLink, SecureLink};
use kessai_flow_d::phone::{
    CustomerVerification, build_authorization, build_merchant_card_request, check_card_in_phone,
};
use kessai_flow_d::pos::{
    ConnId, HostToPos, PhoneToPos, Pos, PosOutput, PosToHost, PosToPhone, SessionId,
};
use kessai_ids::KeyRef;
use kessai_ledger::Balances;
use kessai_secrets::Pin;

fn pin() -> CustomerVerification {
    CustomerVerification::OnlinePin(Pin::new("1234").unwrap())
}

#[test]
fn merchant_card_variant_authenticates_both_cards_and_signals_the_pos() {
    let mut w = world();
    let mut r = fresh();
    let public = w.host.public();
    let ch = w.store.issue_challenge(&w.host, &mut r, NOW).unwrap();
    let req = build_merchant_card_request(
        &mut w.card_a,
        &mut w.mcard,
        &public,
        &ch,
        yen(2_400),
        goods(2_400),
        Some(id("pos-1")),
        &pin(),
        &mut r,
    )
    .unwrap();
    let settled = w
        .store
        .settle_with_merchant_card(&w.host, &req, NOW)
        .unwrap();
    assert_eq!(settled.receipt.receipt.variant, Variant::MerchantCard);
    assert_eq!(balances(&w.store, "fund-card-a").debits_posted, 2_400);
    assert_eq!(balances(&w.store, "pay-shop-1").credits_posted, 2_400);
    assert_eq!(w.store.cards[&id("mcard-shop-1")].last_counter, 1);
    assert_eq!(w.store.cards[&id("card-a")].last_counter, 1);
    assert_eq!(w.store.pos_signals.len(), 1);
    assert_eq!(w.store.pos_signals[0].1, Some(id("pos-1")));
    let rec = verify_receipt(
        &w.store.pos_signals[0].2,
        &public.receipt_key_ref,
        &public.receipt_key,
    )
    .unwrap();
    assert!(rec.to_text().contains("Konbini shop-1"));
    // Replay changes nothing.
    let before = snapshot(&w.store);
    assert_eq!(
        w.store.settle_with_merchant_card(&w.host, &req, NOW),
        Err(FlowDError::ChallengeUsed)
    );
    assert_eq!(snapshot(&w.store), before);

    // An unregistered merchant card, a customer card posing as merchant
    // card, and a tampered amount are refused with nothing changed.
    let mut stranger = merchant_card("mcard-nobody");
    let ch = w.store.issue_challenge(&w.host, &mut r, NOW).unwrap();
    let req = build_merchant_card_request(
        &mut w.card_a,
        &mut stranger,
        &public,
        &ch,
        yen(1_000),
        goods(1_000),
        None,
        &pin(),
        &mut r,
    )
    .unwrap();
    let before = snapshot(&w.store);
    assert_eq!(
        w.store.settle_with_merchant_card(&w.host, &req, NOW),
        Err(FlowDError::UnknownCard(id("mcard-nobody")))
    );
    let ch = w.store.issue_challenge(&w.host, &mut r, NOW).unwrap();
    let mut posing = build_merchant_card_request(
        &mut w.card_a,
        &mut w.card_b,
        &public,
        &ch,
        yen(1_000),
        goods(1_000),
        None,
        &pin(),
        &mut r,
    )
    .unwrap();
    let before2 = snapshot(&w.store);
    assert_eq!(
        w.store.settle_with_merchant_card(&w.host, &posing, NOW),
        Err(FlowDError::UnknownMerchantCard(id("card-b")))
    );
    posing.customer.amount_minor = 10;
    assert_eq!(
        w.store.settle_with_merchant_card(&w.host, &posing, NOW),
        Err(FlowDError::BadAmount)
    );
    assert_eq!(snapshot(&w.store), before2);
    assert_ne!(before, before2, "only the new challenge was stored");
}

#[test]
fn in_phone_card_check_runs_before_anything_is_sent() {
    let w = world();
    let issuer = SigningKey::from_seed(&[0x66; 32]);
    let issuer_ref: KeyRef = id("issuer-profile#1");
    let profile = |card_id: &str, pan: &str, name: &str| CardProfile {
        card_id: id(card_id),
        pan_digest: profile_pan_digest(&id(card_id), pan.as_bytes()),
        expiry_yymm: "3012".into(),
        name: name.into(),
        key_version: 1,
        currency_numeric: 392,
    };
    let good = cose::sign_artefact(
        &profile("card-a", PAN_A, "TARO YAMADA"),
        &issuer,
        &issuer_ref,
    )
    .unwrap();
    let mut card = customer_card("card-a", PAN_A, 1);
    let vk = issuer.verifying_key();
    let data = check_card_in_phone(&mut card, &good, &issuer_ref, &vk, NOW).unwrap();
    assert_eq!(data.card_id, id("card-a"));
    // The card's counter is untouched by the check.
    assert_eq!(data.counter, 0);
    // Another card's profile, a changed name, a forged signature, an expired card.
    let other = cose::sign_artefact(
        &profile("card-b", PAN_B, "TARO YAMADA"),
        &issuer,
        &issuer_ref,
    )
    .unwrap();
    assert_eq!(
        check_card_in_phone(&mut card, &other, &issuer_ref, &vk, NOW),
        Err(FlowDError::ProfileMismatch("card id"))
    );
    let renamed =
        cose::sign_artefact(&profile("card-a", PAN_A, "HANAKO"), &issuer, &issuer_ref).unwrap();
    assert_eq!(
        check_card_in_phone(&mut card, &renamed, &issuer_ref, &vk, NOW),
        Err(FlowDError::ProfileMismatch("expiry or name"))
    );
    let rogue = SigningKey::from_seed(&[0x67; 32]);
    let forged = cose::sign_artefact(
        &profile("card-a", PAN_A, "TARO YAMADA"),
        &rogue,
        &issuer_ref,
    )
    .unwrap();
    assert!(matches!(
        check_card_in_phone(&mut card, &forged, &issuer_ref, &vk, NOW),
        Err(FlowDError::Artefact(_))
    ));
    // 2031-01-01: the card (expiry 12/2030) has expired.
    assert_eq!(
        check_card_in_phone(&mut card, &good, &issuer_ref, &vk, 1_924_992_000_000),
        Err(FlowDError::CardExpired)
    );
    drop(w);
}

// ---- short-range link ------------------------------------------------------

struct PhoneEnd {
    link: SecureLink<MemLink>,
    raw: MemLink,
    card: kessai_card::Card<kessai_card::MemNvm>,
    basket: String,
    session: Option<SessionId>,
    receipt: Option<Vec<u8>>,
    declined: Option<String>,
}

struct Harness {
    w: World,
    pos: Pos,
    pos_links: BTreeMap<ConnId, SecureLink<MemLink>>,
    phones: Vec<PhoneEnd>,
    printed: Vec<(SessionId, String)>,
}

fn harness(n: usize) -> Harness {
    let mut w = world();
    let mut r = fresh();
    let pos_key = HpkeKeyPair::generate(&mut r);
    let pos_ref: KeyRef = id("pos-1-link#1");
    let mut pos = Pos::new(id("pos-1"), w.host.public());
    let mut pos_links = BTreeMap::new();
    let mut phones = Vec::new();
    for i in 0..n {
        let basket = format!("basket-{i}");
        pos.ring_up(&basket, goods(1_000 + 100 * i as i64), jpy())
            .unwrap();
        let (mut a, mut b) = MemLink::pair();
        let (ps, hello) = LinkSession::phone_open(pos_key.public_key(), &pos_ref, &mut r).unwrap();
        a.send(&hello).unwrap();
        let ss = LinkSession::pos_accept(&b.recv().unwrap().unwrap(), &pos_key, &pos_ref).unwrap();
        pos_links.insert(i as ConnId, SecureLink::new(b, ss));
        // Each phone has its own card; even ones draw on account A, odd on B.
        let (pan, fund) = if i % 2 == 0 {
            (PAN_A, "fund-card-a")
        } else {
            (PAN_B, "fund-card-b")
        };
        let cid = format!("card-p{i}");
        let rec = customer_record(&w.host, &cid, pan, fund);
        w.store.cards.insert(id(&cid), rec);
        phones.push(PhoneEnd {
            link: SecureLink::new(a.clone(), ps),
            raw: a,
            card: customer_card(&cid, pan, i as u8),
            basket,
            session: None,
            receipt: None,
            declined: None,
        });
    }
    Harness {
        w,
        pos,
        pos_links,
        phones,
        printed: Vec::new(),
    }
}

fn send_phone(h: &mut Harness, i: usize, msg: &PhoneToPos) {
    let _ = h.phones[i].link.send(&serde_json::to_vec(msg).unwrap());
}

impl Harness {
    /// Delivers POS outputs: to phones over their links, to the host (MemHost), to the printer.
    fn deliver(&mut self, outs: Vec<PosOutput>) {
        let mut queue = std::collections::VecDeque::from(outs);
        while let Some(o) = queue.pop_front() {
            match o {
                PosOutput::ToPhone(conn, msg) => {
                    let link = self.pos_links.get_mut(&conn).unwrap();
                    let _ = link.send(&serde_json::to_vec(&msg).unwrap());
                }
                PosOutput::Print(s, text) => self.printed.push((s, text)),
                PosOutput::ToHost(session, req) => {
                    let ans = match req {
                        PosToHost::Challenge => {
                            match self
                                .w
                                .store
                                .issue_challenge(&self.w.host, &mut fresh(), NOW)
                            {
                                Ok(c) => HostToPos::Challenge(c),
                                Err(e) => HostToPos::Refused(e),
                            }
                        }
                        PosToHost::Authorize(a) => {
                            match self.w.store.authorize(&self.w.host, &a, &mut fresh(), NOW) {
                                Ok(g) => HostToPos::Authorized(g),
                                Err(e) => HostToPos::Refused(e),
                            }
                        }
                        PosToHost::Redeem(r) => match self.w.store.redeem(&self.w.host, &r, NOW) {
                            Ok(s) => HostToPos::Settled(s.receipt.cose),
                            Err(e) => HostToPos::Refused(e),
                        },
                    };
                    queue.extend(self.pos.on_host(session, ans).unwrap());
                }
            }
        }
    }

    /// POS reads every connection once.
    fn pos_poll(&mut self) {
        let conns: Vec<ConnId> = self.pos_links.keys().copied().collect();
        for c in conns {
            loop {
                let got = self.pos_links.get_mut(&c).unwrap().recv();
                match got {
                    Ok(Some(bytes)) => {
                        let msg: PhoneToPos = serde_json::from_slice(&bytes).unwrap();
                        let outs = self.pos.on_phone(c, msg, &mut fresh()).unwrap();
                        self.deliver(outs);
                    }
                    Ok(None) => break,
                    Err(FlowDError::LinkClosed) => {
                        self.pos_links.remove(&c);
                        let outs = self.pos.on_disconnect(c);
                        self.deliver(outs);
                        break;
                    }
                    Err(e) => panic!("{e}"),
                }
            }
        }
    }

    /// Phone `i` reads its link once and answers.
    fn phone_step(&mut self, i: usize) {
        let public = self.w.host.public();
        loop {
            let got = self.phones[i].link.recv();
            let Ok(Some(bytes)) = got else { return };
            let msg: PosToPhone = serde_json::from_slice(&bytes).unwrap();
            let reply = match msg {
                PosToPhone::Challenge {
                    session,
                    challenge,
                    amount,
                    goods,
                } => {
                    self.phones[i].session = Some(session);
                    let p = &mut self.phones[i];
                    let req = phone_auth(&mut p.card, &public, &challenge, amount);
                    let _ = goods;
                    Some(PhoneToPos::CardAuth {
                        session,
                        request: req,
                    })
                }
                PosToPhone::Authorized { session } => {
                    // The customer confirms the basket shown with the challenge.
                    let amount = yen(1_000 + 100 * i as i64);
                    Some(PhoneToPos::Purchase {
                        session,
                        amount,
                        goods: goods(amount.amount_minor),
                    })
                }
                PosToPhone::Receipt { session, receipt } => {
                    assert_eq!(Some(session), self.phones[i].session);
                    self.phones[i].receipt = Some(receipt);
                    None
                }
                PosToPhone::Declined { reason, .. } => {
                    self.phones[i].declined = Some(reason);
                    None
                }
            };
            if let Some(m) = reply {
                send_phone(self, i, &m);
            }
        }
    }
}

fn phone_auth(
    card: &mut kessai_card::Card<kessai_card::MemNvm>,
    public: &kessai_flow_d::host::HostPublic,
    challenge: &HostChallenge,
    amount: kessai_money::Money,
) -> kessai_flow_d::host::AuthorizationRequest {
    build_authorization(card, public, challenge, amount, &pin(), &mut fresh()).unwrap()
}

#[test]
fn twelve_phones_on_one_pos_settle_independently() {
    let n = 12;
    let mut h = harness(n);
    // All phones say hello at once, then everyone advances in interleaved rounds.
    for i in 0..n {
        let b = h.phones[i].basket.clone();
        send_phone(&mut h, i, &PhoneToPos::Hello { basket: b });
    }
    for _round in 0..6 {
        h.pos_poll();
        for i in (0..n).rev() {
            h.phone_step(i);
        }
    }
    let public = h.w.host.public();
    assert_eq!(h.printed.len(), n);
    assert_eq!(h.pos.receipts_printed(), n);
    assert_eq!(h.w.store.ledger.transfers().count(), n);
    let mut total_a = 0;
    for (i, p) in h.phones.iter().enumerate() {
        let r = verify_receipt(
            p.receipt.as_ref().unwrap(),
            &public.receipt_key_ref,
            &public.receipt_key,
        )
        .unwrap();
        // Each phone got the receipt of its own basket: no cross-talk.
        assert_eq!(r.amount, yen(1_000 + 100 * i as i64));
        assert_eq!(r.variant, Variant::ShortRange);
        assert!(h.pos.basket_paid(&p.basket));
        assert_eq!(h.pos.session_state(&p.session.unwrap()), Some("done"));
        if i % 2 == 0 {
            total_a += 1_000 + 100 * i as i64;
        }
    }
    assert_eq!(balances(&h.w.store, "fund-card-a").debits_posted, total_a);

    // A duplicate host answer prints nothing more.
    let s0 = h.phones[0].session.unwrap();
    let dup = h
        .pos
        .on_host(s0, HostToPos::Settled(h.phones[0].receipt.clone().unwrap()));
    assert_eq!(dup, Err(FlowDError::UnexpectedMessage("done")));
    assert_eq!(h.pos.receipts_printed(), n);
    // A phone cannot act in another phone's session, nor pay a paid basket.
    let msg = PhoneToPos::Purchase {
        session: s0,
        amount: yen(1_000),
        goods: goods(1_000),
    };
    assert_eq!(
        h.pos.on_phone(5, msg, &mut fresh()),
        Err(FlowDError::UnknownSession)
    );
    let hello = PhoneToPos::Hello {
        basket: "basket-0".into(),
    };
    assert_eq!(
        h.pos.on_phone(5, hello, &mut fresh()),
        Err(FlowDError::BasketMismatch)
    );
}

#[test]
fn pos_checks_goods_and_sum_against_its_basket() {
    let mut h = harness(1);
    let b = h.phones[0].basket.clone();
    send_phone(&mut h, 0, &PhoneToPos::Hello { basket: b });
    h.pos_poll();
    h.phone_step(0); // sends CardAuth
    h.pos_poll(); // relays, host authorizes, POS tells the phone
    let session = h.phones[0].session.unwrap();
    let before = snapshot(&h.w.store);
    let wrong = PhoneToPos::Purchase {
        session,
        amount: yen(999),
        goods: goods(999),
    };
    assert_eq!(
        h.pos.on_phone(0, wrong, &mut fresh()),
        Err(FlowDError::BasketMismatch)
    );
    assert_eq!(h.pos.session_state(&session), Some("await_purchase"));
    assert_eq!(snapshot(&h.w.store), before);
}

#[test]
fn dropped_link_mid_session_settles_nothing() {
    let mut h = harness(2);
    for i in 0..2 {
        let b = h.phones[i].basket.clone();
        send_phone(&mut h, i, &PhoneToPos::Hello { basket: b });
    }
    h.pos_poll();
    h.phone_step(0);
    h.phone_step(1);
    h.pos_poll(); // both authorized, passwords issued
    let s0 = h.phones[0].session.unwrap();
    assert_eq!(h.pos.session_state(&s0), Some("await_purchase"));
    let ledger_before = h.w.store.ledger.transfers().count();
    // Phone 0's link drops before it confirmed the purchase.
    h.phones[0].raw.close();
    h.pos_poll();
    assert_eq!(h.pos.session_state(&s0), Some("failed"));
    assert!(!h.pos.basket_paid("basket-0"));
    // Phone 1 is unaffected and completes.
    h.phone_step(1);
    h.pos_poll();
    h.phone_step(1);
    assert!(h.phones[1].receipt.is_some());
    assert_eq!(h.w.store.ledger.transfers().count(), ledger_before + 1);
    assert_eq!(balances(&h.w.store, "fund-card-a"), Balances::default());
    assert_eq!(h.pos.receipts_printed(), 1);
    // The abandoned basket can be paid by a new session later.
    let hello = PhoneToPos::Hello {
        basket: "basket-0".into(),
    };
    assert!(h.pos.on_phone(7, hello, &mut fresh()).is_ok());
}

#[test]
fn phone_vanishing_after_the_pos_submitted_still_settles_once() {
    let mut h = harness(1);
    let b = h.phones[0].basket.clone();
    send_phone(&mut h, 0, &PhoneToPos::Hello { basket: b });
    h.pos_poll();
    h.phone_step(0);
    h.pos_poll();
    h.phone_step(0); // sends Purchase
    // The POS reads the Purchase, but the phone is gone before the host answers:
    // model it by taking the message, closing the link, then handing it to the POS.
    let bytes = h.pos_links.get_mut(&0).unwrap().recv().unwrap().unwrap();
    h.phones[0].raw.close();
    let outs = h
        .pos
        .on_phone(0, serde_json::from_slice(&bytes).unwrap(), &mut fresh())
        .unwrap();
    let session = h.phones[0].session.unwrap();
    assert_eq!(h.pos.session_state(&session), Some("await_settlement"));
    let _ = h.pos.on_disconnect(0);
    h.pos_links.remove(&0);
    h.deliver(outs);
    // Settled exactly once, printed once, and the phone gets it from the host push.
    assert_eq!(h.pos.session_state(&session), Some("done"));
    assert_eq!(h.printed.len(), 1);
    assert_eq!(h.w.store.ledger.transfers().count(), 1);
    assert_eq!(h.w.store.phone_pushes.len(), 1);
    assert!(h.phones[0].receipt.is_none());
}
