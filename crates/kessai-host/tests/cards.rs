//! The host's card security module: issuing a card registers it with an
//! e-money account and derives keys the personalized card accepts; the
//! shadow balance only moves forward on authenticated card responses.

use std::sync::Arc;

use kessai_card::harness::HostDriver;
use kessai_card::{Card, MemNvm, PersonalizationParams};
use kessai_host::card_security::{self, CardSecurityError, IssueCard};
use kessai_host::clock::ManualClock;
use kessai_money::Currency;
use kessai_scp03::SecurityLevel;

#[tokio::test]
async fn issued_card_keys_open_a_session_and_shadow_only_moves_forward() {
    let dir = tempfile::tempdir().unwrap();
    let db = kessai_store::Db::open(dir.path().to_str().unwrap())
        .await
        .unwrap();
    let state = kessai_host::app::state_for_db(db, dir.path(), Arc::new(ManualClock::new(1_000)))
        .await
        .unwrap();
    let jpy = Currency::from_code("JPY").unwrap();
    let req = IssueCard {
        card_id: "card-77".parse().unwrap(),
        currency: jpy,
        purse_max_minor: 50_000,
        cardholder_id: None,
    };
    let (record, keys) = card_security::issue_card(&state, &req).await.unwrap();
    assert_eq!(record.emoney_account.as_str(), "emoney.card-77");
    assert!(matches!(
        card_security::issue_card(&state, &req).await,
        Err(CardSecurityError::AlreadyIssued)
    ));
    let acct = state
        .db
        .ledger()
        .account(&record.emoney_account)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(acct.kind, kessai_ledger::AccountKind::EmoneyOutstanding);

    // Personalize a card with the issued keys; the host re-derives the same
    // keys later from the master key version and the card id.
    let mut p = PersonalizationParams::new(req.card_id.clone(), keys, jpy, 50_000, [9; 32]);
    p.initial_balance_minor = 2_000;
    let mut card = Card::personalize(p, MemNvm::new()).unwrap();
    card.power_on();
    let (_, rederived) = card_security::card_keys(&state, &req.card_id)
        .await
        .unwrap();
    let mut host = HostDriver::new(rederived.static_keys);
    host.select(&mut card).unwrap();
    host.open(&mut card, SecurityLevel::Full, [4; 8]).unwrap();
    let pcn = host.debit(&mut card, 500, [1; 16], [0; 16]).unwrap();
    assert!(
        card_security::record_card_state(
            &state,
            &req.card_id,
            pcn.balance_after_minor,
            pcn.counter
        )
        .await
        .unwrap()
    );
    let shadow = kessai_store::cards::card(&state.db, &req.card_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (shadow.shadow_balance_minor, shadow.shadow_counter),
        (1_500, 1)
    );
    // A stale (replayed) state with the same counter changes nothing.
    assert!(
        !card_security::record_card_state(&state, &req.card_id, 2_000, pcn.counter)
            .await
            .unwrap()
    );
    let shadow = kessai_store::cards::card(&state.db, &req.card_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (shadow.shadow_balance_minor, shadow.shadow_counter),
        (1_500, 1)
    );
    // Unknown cards have no keys.
    assert!(matches!(
        card_security::card_keys(&state, &"nope".parse().unwrap()).await,
        Err(CardSecurityError::UnknownCard)
    ));
    // A wrong card's keys do not open this card's channel.
    let other = IssueCard {
        card_id: "card-78".parse().unwrap(),
        ..req
    };
    let (_, other_keys) = card_security::issue_card(&state, &other).await.unwrap();
    let mut wrong = HostDriver::new(other_keys.static_keys);
    wrong.select(&mut card).unwrap();
    assert!(wrong.open(&mut card, SecurityLevel::Full, [5; 8]).is_err());
    assert_eq!(card.snapshot().balance.amount_minor, 1_500);
}

#[tokio::test]
async fn maintenance_expires_due_holds_once() {
    use kessai_ledger::{Account, AccountKind, BalanceLimit, Leg, TransferRequest, codes};
    let dir = tempfile::tempdir().unwrap();
    let db = kessai_store::Db::open(dir.path().to_str().unwrap())
        .await
        .unwrap();
    let clock = ManualClock::new(1_000);
    let state = kessai_host::app::state_for_db(db, dir.path(), Arc::new(clock.clone()))
        .await
        .unwrap();
    let jpy = Currency::from_code("JPY").unwrap();
    for (id, limit) in [
        ("a", BalanceLimit::Unlimited),
        ("b", BalanceLimit::Unlimited),
    ] {
        let acct = Account::new(id.parse().unwrap(), AccountKind::IssuerClearing, jpy, limit);
        state
            .db
            .ledger()
            .create_account(&acct, 1)
            .await
            .unwrap()
            .unwrap();
    }
    let hold = TransferRequest::pending(
        kessai_ids::TransferId::derive("t", &[b"hold"]),
        jpy,
        codes::FUNDING,
        vec![
            Leg::debit("a".parse().unwrap(), 5),
            Leg::credit("b".parse().unwrap(), 5),
        ],
        5_000,
    );
    state
        .db
        .ledger()
        .submit(hold, 1_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        kessai_host::maintenance::run_once(&state)
            .await
            .holds_expired,
        0
    );
    clock.advance(4_000);
    assert_eq!(
        kessai_host::maintenance::run_once(&state)
            .await
            .holds_expired,
        1
    );
    assert_eq!(
        kessai_host::maintenance::run_once(&state)
            .await
            .holds_expired,
        0
    );
    let a = state
        .db
        .ledger()
        .account(&"a".parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (a.balances.debits_pending, a.balances.debits_posted),
        (0, 0)
    );
}
