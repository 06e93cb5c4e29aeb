//! Flow C end to end, in process: merchant terminal, host state machine
//! (persisted as JSON between every step, as the real host does), phone and
//! reader, with a deterministic RNG, a virtual clock and a real MemLedger.
//!
//! The `World` below plays the host's I/O layer: merchant / phone / card
//! tables, key store, persisted PIN counters, audit log, ledger, and the
//! carrying out of every `Effect`.

use std::collections::BTreeMap;

use kessai_crypto::CoseError;
use kessai_crypto::hpke::HpkeKeyPair;
use kessai_crypto::sign::SigningKey;
use kessai_flow_c::artefacts::{
    CardData, CustomerRef, Decision, DeclineReason, MerchantCompletion, Outcome, PinPrompt, Signer,
    TransactionKey, TrustedKeys, seal_card_data, seal_pin_block,
};
use kessai_flow_c::host::{
    self, CardRecord, CardStatus, CustomerPhone, DestroyedKind, DestructionRecord, Effect,
    HostConfig, HostEnv, HostState, HostTxn, MerchantRecord, MerchantStatus, PhoneMessage,
};
use kessai_flow_c::merchant::MerchantTerminal;
use kessai_flow_c::phone::Phone;
use kessai_flow_c::reader::{EmulatedCard, Reader};
use kessai_flow_c::{ArtefactDigest, FlowError, TxnId};
use kessai_ids::{AccountId, CardId, KeyRef, OrderId};
use kessai_ledger::{Account, AccountKind, Applied, BalanceLimit, Balances, MemLedger};
use kessai_money::{Currency, Money};
use kessai_pin::{PinBlock, PinVerificationData, PinVerificationKey, encipher_pin_block};
use kessai_secrets::{CardNumber, Pin, SecretKey};
use rand::SeedableRng;
use rand::rngs::StdRng;

const PAN: &str = "4012888888881881";
const PIN: &str = "73051986";
const NAME: &str = "HANAKO SUZUKI";
const PHONE_NO: &str = "+819012345678";
/// 2024-03-01T00:00:00Z.
const T0: u64 = 1_709_251_200_000;
const CREDIT_LIMIT: i64 = 50_000;

fn jpy(n: i64) -> Money {
    Money::new(n, Currency::from_code("JPY").unwrap())
}
fn kref(s: &str) -> KeyRef {
    s.parse().unwrap()
}
fn acc(s: &str) -> AccountId {
    s.parse().unwrap()
}
fn order(s: &str) -> OrderId {
    s.parse().unwrap()
}
fn pan() -> CardNumber {
    CardNumber::new(PAN).unwrap()
}

struct CardRow {
    pan: CardNumber,
    record: CardRecord,
}

struct World {
    rng: StdRng,
    now: u64,
    cfg: HostConfig,
    host_key: Signer,
    pvk: PinVerificationKey,
    merchants: Vec<MerchantRecord>,
    phones: Vec<(CustomerRef, CustomerPhone)>,
    cards: Vec<CardRow>,
    key_store: BTreeMap<KeyRef, HpkeKeyPair>,
    /// Persisted host state, one JSON document per transaction.
    txns: BTreeMap<TxnId, String>,
    ledger: MemLedger,
    audit: Vec<DestructionRecord>,
    to_phone: Vec<PhoneMessage>,
    to_merchant: Vec<Vec<u8>>,
    merchant: MerchantTerminal,
    phone: Phone,
    reader: Reader,
}

impl World {
    fn new() -> Self {
        let mut rng = StdRng::seed_from_u64(42);
        let host_key = Signer::new(SigningKey::from_seed(&[1; 32]), kref("host-sign#1"));
        let host_trust = TrustedKeys::new([(host_key.key_ref().clone(), host_key.verifying_key())]);
        let shop_key = Signer::new(SigningKey::from_seed(&[2; 32]), kref("shop-1-sign#1"));
        let phone_key = Signer::new(SigningKey::from_seed(&[3; 32]), kref("phone-1-key#1"));
        let suspended_key = Signer::new(SigningKey::from_seed(&[9; 32]), kref("shop-9-sign#1"));
        let pvk = PinVerificationKey::new(SecretKey::new([0x5c; 32]));
        let merchants = vec![
            MerchantRecord {
                store_id: "shop-1".parse().unwrap(),
                display_name: "Shop One".into(),
                status: MerchantStatus::Active,
                key_ref: shop_key.key_ref().clone(),
                key: shop_key.verifying_key(),
                payable_account: acc("payable-shop-1"),
                currency: jpy(0).currency,
            },
            MerchantRecord {
                store_id: "shop-9".parse().unwrap(),
                display_name: "Shop Nine".into(),
                status: MerchantStatus::Suspended,
                key_ref: suspended_key.key_ref().clone(),
                key: suspended_key.verifying_key(),
                payable_account: acc("payable-shop-9"),
                currency: jpy(0).currency,
            },
        ];
        let phones = vec![(
            CustomerRef::phone(PHONE_NO).unwrap(),
            CustomerPhone {
                device_id: "phone-1".parse().unwrap(),
                key_ref: phone_key.key_ref().clone(),
                key: phone_key.verifying_key(),
            },
        )];
        let pin = Pin::new(PIN).unwrap();
        let cards = vec![CardRow {
            pan: pan(),
            record: CardRecord {
                card_id: "card-1".parse().unwrap(),
                funding_account: acc("funding-card-1"),
                expiry_yymm: "2912".into(),
                status: CardStatus::Active,
                pin_verification: PinVerificationData::generate(&pan(), &pin, &pvk, &mut rng),
                pin_failures: 0,
            },
        }];
        let mut ledger = MemLedger::new();
        ledger
            .insert_account(Account::new(
                acc("funding-card-1"),
                AccountKind::CardholderFunding,
                jpy(0).currency,
                BalanceLimit::MaxNetDebit(CREDIT_LIMIT),
            ))
            .unwrap();
        ledger
            .insert_account(Account::new(
                acc("payable-shop-1"),
                AccountKind::MerchantPayable,
                jpy(0).currency,
                BalanceLimit::MaxNetDebit(0),
            ))
            .unwrap();
        let merchant =
            MerchantTerminal::new("shop-1".parse().unwrap(), shop_key, host_trust.clone());
        let phone = Phone::new(
            "phone-1".parse().unwrap(),
            phone_key,
            host_trust.clone(),
            30_000,
        );
        let mut reader = Reader::new(host_trust);
        reader.insert_card(EmulatedCard::new(pan(), "2912", NAME).unwrap());
        Self {
            rng,
            now: T0,
            cfg: HostConfig::default(),
            host_key,
            pvk,
            merchants,
            phones,
            cards,
            key_store: BTreeMap::new(),
            txns: BTreeMap::new(),
            ledger,
            audit: Vec::new(),
            to_phone: Vec::new(),
            to_merchant: Vec::new(),
            merchant,
            phone,
            reader,
        }
    }

    // ---- the host's I/O layer ----

    fn env(&self) -> HostEnv<'_> {
        HostEnv {
            signer: &self.host_key,
            config: &self.cfg,
            pin_verification_key: &self.pvk,
        }
    }

    fn load(&self, id: TxnId) -> HostTxn {
        serde_json::from_str(&self.txns[&id]).unwrap()
    }

    fn save(&mut self, t: &HostTxn) {
        self.txns
            .insert(t.txn_id(), serde_json::to_string(t).unwrap());
    }

    fn submit_request(&mut self, bytes: &[u8]) -> Result<TxnId, FlowError> {
        let kid = host::payment_request_signer(bytes)?;
        let record = self.merchants.iter().find(|m| m.key_ref == kid).cloned();
        let verified = host::verify_payment_request(bytes, record.as_ref(), self.now)?;
        if self.txns.contains_key(&verified.txn_id()) {
            return self.load(verified.txn_id()).check_duplicate(&verified);
        }
        let phone = self
            .phones
            .iter()
            .find(|(c, _)| c == verified.customer())
            .map(|(_, p)| p.clone());
        let (t, effects) = HostTxn::begin(&verified, phone.as_ref(), &self.env(), self.now)?;
        let id = t.txn_id();
        self.save(&t);
        self.apply(id, effects);
        Ok(id)
    }

    fn approval(&mut self, id: TxnId, bytes: &[u8]) -> Result<(), FlowError> {
        let mut t = self.load(id);
        let env = HostEnv {
            signer: &self.host_key,
            config: &self.cfg,
            pin_verification_key: &self.pvk,
        };
        let effects = t.on_approval(bytes, &env, self.now, &mut self.rng)?;
        self.save(&t);
        self.apply(id, effects);
        Ok(())
    }

    fn card_data(&mut self, id: TxnId, bytes: &[u8]) -> Result<(), FlowError> {
        let mut t = self.load(id);
        let key = t
            .transaction_key_ref()
            .and_then(|r| self.key_store.get(&r).cloned());
        let opened = t.open_card_data(bytes, key.as_ref(), self.now)?;
        let card = self
            .cards
            .iter()
            .find(|c| &c.pan == opened.pan())
            .map(|c| c.record.clone());
        let effects = t.accept_card(opened, card.as_ref(), &self.env(), self.now)?;
        self.save(&t);
        self.apply(id, effects);
        Ok(())
    }

    fn pin(&mut self, id: TxnId, bytes: &[u8]) -> Result<(), FlowError> {
        let mut t = self.load(id);
        let key = t
            .transaction_key_ref()
            .and_then(|r| self.key_store.get(&r).cloned());
        let card = match t.card_id() {
            Some(cid) => self.card(cid).clone(),
            None => self.cards[0].record.clone(),
        };
        let effects = t.on_pin_block(bytes, key.as_ref(), &card, &self.env(), self.now)?;
        self.save(&t);
        self.apply(id, effects);
        Ok(())
    }

    fn tick(&mut self, id: TxnId) -> usize {
        let mut t = self.load(id);
        let effects = t.on_timeout(&self.env(), self.now).unwrap();
        let n = effects.len();
        self.save(&t);
        self.apply(id, effects);
        n
    }

    fn apply(&mut self, id: TxnId, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::StoreTransactionKey { key_ref, key_pair } => {
                    assert!(self.key_store.insert(key_ref, key_pair).is_none());
                }
                Effect::SendToPhone { device_id, message } => {
                    assert_eq!(&device_id, self.phone.device_id());
                    self.to_phone.push(message);
                }
                Effect::NotifyMerchant { completion, .. } => self.to_merchant.push(completion),
                Effect::RecordPinFailure { card_id } => self.card_mut(&card_id).pin_failures += 1,
                Effect::ResetPinFailures { card_id } => self.card_mut(&card_id).pin_failures = 0,
                Effect::SettleInLedger(transfer) => {
                    let result = self.ledger.submit(&transfer, self.now);
                    let mut t = self.load(id);
                    let more = t.on_settlement(&result, &self.env(), self.now).unwrap();
                    self.save(&t);
                    self.apply(id, more);
                }
                Effect::DestroyTransactionKey { key_ref } => {
                    assert!(self.key_store.remove(&key_ref).is_some());
                }
                Effect::RecordDestruction(record) => self.audit.push(record),
            }
        }
    }

    fn card(&self, id: &CardId) -> &CardRecord {
        &self
            .cards
            .iter()
            .find(|c| &c.record.card_id == id)
            .unwrap()
            .record
    }

    fn card_mut(&mut self, id: &CardId) -> &mut CardRecord {
        &mut self
            .cards
            .iter_mut()
            .find(|c| &c.record.card_id == id)
            .unwrap()
            .record
    }

    fn balances(&self, account: &str) -> Balances {
        self.ledger.account(&acc(account)).unwrap().balances
    }

    /// Everything a refused input must leave untouched.
    fn fingerprint(&self) -> String {
        let balances: Vec<_> = self
            .ledger
            .accounts()
            .map(|a| (a.id.clone(), a.balances))
            .collect();
        let failures: Vec<_> = self.cards.iter().map(|c| c.record.pin_failures).collect();
        let keys: Vec<_> = self.key_store.keys().collect();
        format!(
            "{:?}|{balances:?}|{}|{failures:?}|{keys:?}|{}|{}|{}",
            self.txns,
            self.ledger.transfers().count(),
            self.to_phone.len(),
            self.to_merchant.len(),
            self.audit.len()
        )
    }

    fn state(&self, id: TxnId) -> HostState {
        self.load(id).state().clone()
    }

    // ---- customer and merchant side ----

    fn request(&mut self, order_ref: &str, amount: Money) -> Vec<u8> {
        self.merchant
            .payment_request(
                CustomerRef::phone(PHONE_NO).unwrap(),
                amount,
                order(order_ref),
                self.now,
                60_000,
                &mut self.rng,
            )
            .unwrap()
    }

    fn last_to_phone(&self) -> PhoneMessage {
        self.to_phone.last().unwrap().clone()
    }

    fn phone_answers(&mut self, decision: Decision) -> Vec<u8> {
        let PhoneMessage::ApprovalRequest(bytes) = self.last_to_phone() else {
            panic!("expected an approval request");
        };
        self.phone
            .receive_approval_request(&bytes, self.now)
            .unwrap();
        self.phone.answer(decision).unwrap()
    }

    fn transaction_key_bytes(&self) -> Vec<u8> {
        let PhoneMessage::TransactionKey(bytes) = self.last_to_phone() else {
            panic!("expected a transaction key");
        };
        bytes
    }

    /// S34–S37: the key goes to the reader, which reads and seals the card.
    fn reader_reads_card(&mut self) -> Vec<u8> {
        let key = self.transaction_key_bytes();
        let for_reader = self.phone.relay_transaction_key(&key).unwrap();
        self.reader.load_transaction_key(&for_reader).unwrap();
        let sealed = self.reader.read_card(&mut self.rng).unwrap();
        self.phone.relay_to_host(&sealed)
    }

    fn pin_prompt_bytes(&self) -> Vec<u8> {
        let PhoneMessage::PinPrompt(bytes) = self.last_to_phone() else {
            panic!("expected a PIN prompt");
        };
        bytes
    }

    /// S39–S42: the prompt goes to the reader, the PIN is typed on its pad.
    fn reader_enters_pin(&mut self, pin: &str) -> Vec<u8> {
        let prompt = self.pin_prompt_bytes();
        let for_reader = self.phone.relay_pin_prompt(&prompt).unwrap();
        self.reader.type_pin(pin);
        let sealed = self
            .reader
            .handle_pin_prompt(&for_reader, &mut self.rng)
            .unwrap();
        self.phone.relay_to_host(&sealed)
    }

    /// S44–S45 and the merchant's side of S24.
    fn deliver_completion(&mut self) -> (Outcome, MerchantCompletion) {
        let PhoneMessage::Completion(bytes) = self.last_to_phone() else {
            panic!("expected a completion");
        };
        let phone_outcome = self.phone.receive_completion(&bytes).unwrap();
        if self.reader.has_transaction_key() {
            assert_eq!(
                self.reader.handle_completion(&bytes).unwrap(),
                phone_outcome
            );
        }
        assert!(!self.reader.has_transaction_key());
        let merchant = self
            .merchant
            .verify_completion(self.to_merchant.last().unwrap())
            .unwrap();
        (phone_outcome, merchant)
    }

    /// Merchant request through to the PIN prompt.
    fn run_to_pin_prompt(&mut self, order_ref: &str, amount: Money) -> (TxnId, Vec<u8>) {
        let req = self.request(order_ref, amount);
        let id = self.submit_request(&req).unwrap();
        let yes = self.phone_answers(Decision::Approve);
        self.approval(id, &yes).unwrap();
        let card = self.reader_reads_card();
        self.card_data(id, &card).unwrap();
        (id, card)
    }

    /// The whole purchase; returns the ciphertexts the network saw.
    fn purchase(&mut self, order_ref: &str, amount: Money, pin: &str) -> (TxnId, Vec<u8>, Vec<u8>) {
        let (id, card) = self.run_to_pin_prompt(order_ref, amount);
        let sealed_pin = self.reader_enters_pin(pin);
        self.pin(id, &sealed_pin).unwrap();
        (id, card, sealed_pin)
    }
}

fn declined(reason: DeclineReason) -> Outcome {
    Outcome::Declined { reason }
}

fn assert_destroyed(w: &World, id: TxnId, key_expected: bool) -> DestructionRecord {
    let record = w
        .audit
        .iter()
        .find(|r| r.txn_id == id)
        .expect("a destruction record")
        .clone();
    assert_eq!(record.key_ref.is_some(), key_expected);
    if key_expected {
        assert!(!w.key_store.contains_key(&id.transaction_key_ref()));
        assert!(
            record
                .items
                .iter()
                .any(|i| i.kind == DestroyedKind::TransactionKeyPair)
        );
    }
    assert!(w.load(id).transaction_key_ref().is_none());
    assert!(w.load(id).state().is_terminal());
    let json = &w.txns[&id];
    assert!(!json.contains("sealed_card_data"), "{json}");
    record
}

#[test]
fn approved_purchase_settles_exactly_once() {
    let mut w = World::new();
    let (id, sealed_card, sealed_pin) = w.purchase("order-1", jpy(1200), PIN);

    // Settled, in the ledger exactly once.
    let HostState::Settled {
        transfer_id,
        masked_pan,
        ..
    } = w.state(id)
    else {
        panic!("not settled: {:?}", w.state(id));
    };
    assert_eq!(transfer_id, id.transfer_id());
    assert_eq!(masked_pan, "401288******1881");
    assert_eq!(w.balances("funding-card-1").debits_posted, 1200);
    assert_eq!(w.balances("payable-shop-1").credits_posted, 1200);
    assert_eq!(w.ledger.transfers().count(), 1);
    let record = w.ledger.transfer(&transfer_id).unwrap();
    let kinds: Vec<_> = record.evidence.iter().map(|e| e.kind.as_str()).collect();
    assert!(kinds.contains(&"cose/flowc-payment-request"));
    assert!(kinds.contains(&"cose/flowc-pin-block"));
    assert_eq!(
        record
            .evidence
            .iter()
            .find(|e| e.kind == "cose/flowc-card-data")
            .unwrap()
            .digest,
        ArtefactDigest::of(&sealed_card).0
    );

    // A retried settlement after a crash returns the original record.
    let HostState::Settled { .. } = w.state(id) else {
        unreachable!()
    };
    let again = w.ledger.submit(&record.request(), w.now + 5).unwrap();
    assert!(matches!(again, Applied::AlreadyExists(_)));
    assert_eq!(w.ledger.transfers().count(), 1);
    assert_eq!(w.balances("funding-card-1").debits_posted, 1200);

    // Completions: phone, reader (key discarded) and merchant.
    let (outcome, merchant) = w.deliver_completion();
    assert_eq!(outcome, Outcome::Settled { transfer_id });
    assert_eq!(merchant.outcome, Outcome::Settled { transfer_id });
    assert_eq!(merchant.masked_pan.as_deref(), Some("401288******1881"));
    assert_eq!(merchant.amount, jpy(1200));
    assert!(
        w.reader
            .display()
            .iter()
            .any(|l| l.starts_with("Enter PIN: 1200 JPY to Shop One")),
        "{:?}",
        w.reader.display()
    );
    assert!(w.reader.display().last().unwrap().starts_with("Paid"));
    assert!(
        w.phone
            .display()
            .iter()
            .any(|l| l.contains("Enter your PIN on the card reader"))
    );

    // Key and ciphertexts destroyed, with an audit record naming them.
    let destruction = assert_destroyed(&w, id, true);
    assert_eq!(destruction.outcome, Outcome::Settled { transfer_id });
    let items: Vec<_> = destruction
        .items
        .iter()
        .map(|i| (i.kind, i.digest))
        .collect();
    assert!(items.contains(&(
        DestroyedKind::SealedCardData,
        Some(ArtefactDigest::of(&sealed_card))
    )));
    assert!(items.contains(&(
        DestroyedKind::SealedPinBlock,
        Some(ArtefactDigest::of(&sealed_pin))
    )));
    assert!(items.contains(&(DestroyedKind::PinPlaintext, None)));
    assert!(items.contains(&(DestroyedKind::CardDataPlaintext, None)));
    assert_eq!(w.card(&"card-1".parse().unwrap()).pin_failures, 0);
}

#[test]
fn rejected_on_the_phone_declines_to_both_sides() {
    let mut w = World::new();
    let req = w.request("order-r", jpy(800));
    let id = w.submit_request(&req).unwrap();
    let no = w.phone_answers(Decision::Reject);
    w.approval(id, &no).unwrap();
    assert!(matches!(
        w.state(id),
        HostState::Declined {
            reason: DeclineReason::Rejected,
            ..
        }
    ));
    let (outcome, merchant) = w.deliver_completion();
    assert_eq!(outcome, declined(DeclineReason::Rejected));
    assert_eq!(merchant.outcome, declined(DeclineReason::Rejected));
    assert_eq!(merchant.masked_pan, None);
    // No key was ever made; the record says so.
    assert!(w.key_store.is_empty());
    let destruction = assert_destroyed(&w, id, false);
    assert!(destruction.items.is_empty());
    assert_eq!(w.ledger.transfers().count(), 0);
}

#[test]
fn phone_that_gets_no_key_press_rejects_by_itself_s46() {
    let mut w = World::new();
    let req = w.request("order-s46", jpy(800));
    let id = w.submit_request(&req).unwrap();
    let PhoneMessage::ApprovalRequest(bytes) = w.last_to_phone() else {
        panic!()
    };
    w.phone.receive_approval_request(&bytes, w.now).unwrap();
    assert_eq!(w.phone.on_timeout(w.now + 29_999).unwrap(), None);
    let rejection = w
        .phone
        .on_timeout(w.now + 30_000)
        .unwrap()
        .expect("a rejection");
    w.now += 30_000;
    w.approval(id, &rejection).unwrap();
    assert!(matches!(
        w.state(id),
        HostState::Declined {
            reason: DeclineReason::Rejected,
            ..
        }
    ));
}

#[test]
fn approval_timeout_s5_declines_and_a_late_approval_is_refused() {
    let mut w = World::new();
    let req = w.request("order-t5", jpy(800));
    let id = w.submit_request(&req).unwrap();
    let yes = w.phone_answers(Decision::Approve);
    let deadline = w.load(id).deadline_ms().unwrap();
    assert_eq!(deadline, T0 + w.cfg.approval_timeout_ms);

    // Nothing due before the deadline.
    w.now = deadline - 1;
    assert_eq!(w.tick(id), 0);
    // At the deadline, an approval that arrives before the timer fires is
    // refused and changes nothing ...
    w.now = deadline;
    let before = w.fingerprint();
    assert_eq!(w.approval(id, &yes), Err(FlowError::DeadlinePassed));
    assert_eq!(w.fingerprint(), before);
    // ... the timer declines (S5 N → S9) ...
    assert!(w.tick(id) > 0);
    assert!(matches!(
        w.state(id),
        HostState::Declined {
            reason: DeclineReason::ApprovalTimeout,
            ..
        }
    ));
    let (_, merchant) = w.deliver_completion();
    assert_eq!(merchant.outcome, declined(DeclineReason::ApprovalTimeout));
    assert_destroyed(&w, id, false);
    // ... and an approval after it is refused too, changing nothing.
    let before = w.fingerprint();
    assert_eq!(w.approval(id, &yes), Err(FlowError::TransactionEnded));
    assert_eq!(w.fingerprint(), before);
    assert!(w.key_store.is_empty());
}

#[test]
fn card_data_timeout_s8_declines_and_destroys_the_key() {
    let mut w = World::new();
    let req = w.request("order-t8", jpy(800));
    let id = w.submit_request(&req).unwrap();
    let yes = w.phone_answers(Decision::Approve);
    w.approval(id, &yes).unwrap();
    let key_bytes = w.transaction_key_bytes();
    let for_reader = w.phone.relay_transaction_key(&key_bytes).unwrap();
    w.reader.load_transaction_key(&for_reader).unwrap();
    assert_eq!(w.key_store.len(), 1);

    w.now += w.cfg.card_data_timeout_ms;
    assert!(w.tick(id) > 0);
    assert!(matches!(
        w.state(id),
        HostState::Declined {
            reason: DeclineReason::CardDataTimeout,
            ..
        }
    ));
    let (outcome, _) = w.deliver_completion();
    assert_eq!(outcome, declined(DeclineReason::CardDataTimeout));
    assert_destroyed(&w, id, true);
    // The reader discarded its key: it cannot seal anything any more.
    assert_eq!(
        w.reader.read_card(&mut w.rng),
        Err(FlowError::NoTransactionKey)
    );
}

#[test]
fn pin_timeout_s17_declines_and_destroys_everything() {
    let mut w = World::new();
    let (id, sealed_card) = w.run_to_pin_prompt("order-t17", jpy(800));
    let prompt = w.pin_prompt_bytes();
    w.reader.type_pin(PIN);
    let sealed_pin = w.reader.handle_pin_prompt(&prompt, &mut w.rng).unwrap();

    w.now += w.cfg.pin_timeout_ms;
    let before = w.fingerprint();
    assert_eq!(w.pin(id, &sealed_pin), Err(FlowError::DeadlinePassed));
    assert_eq!(w.fingerprint(), before);
    assert!(w.tick(id) > 0);
    let HostState::Declined {
        reason, masked_pan, ..
    } = w.state(id)
    else {
        panic!()
    };
    assert_eq!(reason, DeclineReason::PinTimeout);
    assert_eq!(masked_pan.as_deref(), Some("401288******1881"));
    let (_, merchant) = w.deliver_completion();
    assert_eq!(merchant.outcome, declined(DeclineReason::PinTimeout));
    let destruction = assert_destroyed(&w, id, true);
    assert!(
        destruction
            .items
            .iter()
            .any(|i| i.kind == DestroyedKind::SealedCardData
                && i.digest == Some(ArtefactDigest::of(&sealed_card)))
    );
    assert_eq!(w.ledger.transfers().count(), 0);
}

#[test]
fn unknown_suspended_and_forged_merchant_requests_change_nothing() {
    let mut w = World::new();
    let host_trust = TrustedKeys::new([(w.host_key.key_ref().clone(), w.host_key.verifying_key())]);
    let customer = CustomerRef::phone(PHONE_NO).unwrap();
    let before = w.fingerprint();

    // Unknown merchant: a key the merchant table does not hold (S3 N → S9).
    let mut stranger = MerchantTerminal::new(
        "shop-x".parse().unwrap(),
        Signer::new(SigningKey::from_seed(&[7; 32]), kref("shop-x-sign#1")),
        host_trust.clone(),
    );
    let req = stranger
        .payment_request(
            customer.clone(),
            jpy(100),
            order("o-x"),
            w.now,
            60_000,
            &mut w.rng,
        )
        .unwrap();
    assert_eq!(w.submit_request(&req), Err(FlowError::UnknownMerchant));

    // Suspended merchant.
    let mut suspended = MerchantTerminal::new(
        "shop-9".parse().unwrap(),
        Signer::new(SigningKey::from_seed(&[9; 32]), kref("shop-9-sign#1")),
        host_trust.clone(),
    );
    let req = suspended
        .payment_request(
            customer.clone(),
            jpy(100),
            order("o-9"),
            w.now,
            60_000,
            &mut w.rng,
        )
        .unwrap();
    assert_eq!(w.submit_request(&req), Err(FlowError::MerchantSuspended));

    // Forged: shop-1's kid, someone else's key.
    let mut forger = MerchantTerminal::new(
        "shop-1".parse().unwrap(),
        Signer::new(SigningKey::from_seed(&[8; 32]), kref("shop-1-sign#1")),
        host_trust.clone(),
    );
    let req = forger
        .payment_request(
            customer.clone(),
            jpy(100),
            order("o-f"),
            w.now,
            60_000,
            &mut w.rng,
        )
        .unwrap();
    assert!(matches!(
        w.submit_request(&req),
        Err(FlowError::Artefact {
            source: CoseError::BadSignature,
            ..
        })
    ));

    // A suspended merchant's valid key claiming to be shop-1.
    let mut impostor = MerchantTerminal::new(
        "shop-1".parse().unwrap(),
        Signer::new(SigningKey::from_seed(&[9; 32]), kref("shop-9-sign#1")),
        host_trust,
    );
    let req = impostor
        .payment_request(
            customer.clone(),
            jpy(100),
            order("o-i"),
            w.now,
            60_000,
            &mut w.rng,
        )
        .unwrap();
    assert_eq!(w.submit_request(&req), Err(FlowError::MerchantMismatch));

    // A genuine request with one byte changed, an expired one, an unsigned
    // blob, and one for an unknown customer.
    let mut req = w.request("o-t", jpy(100));
    let n = req.len();
    req[n - 70] ^= 1;
    assert!(matches!(
        w.submit_request(&req),
        Err(FlowError::Artefact { .. })
    ));
    let req = w.request("o-e", jpy(100));
    w.now += 60_000;
    assert_eq!(w.submit_request(&req), Err(FlowError::RequestExpired));
    assert!(matches!(
        w.submit_request(b"not cose"),
        Err(FlowError::Artefact { .. })
    ));
    let req = w
        .merchant
        .payment_request(
            CustomerRef::phone("+819099999999").unwrap(),
            jpy(100),
            order("o-u"),
            w.now,
            60_000,
            &mut w.rng,
        )
        .unwrap();
    assert_eq!(w.submit_request(&req), Err(FlowError::UnknownCustomer));

    assert_eq!(w.fingerprint(), before);
    assert!(w.txns.is_empty() && w.to_phone.is_empty() && w.to_merchant.is_empty());
}

#[test]
fn duplicate_order_reference_is_idempotent_and_conflicts_are_refused() {
    let mut w = World::new();
    let req = w.request("order-d", jpy(900));
    let id = w.submit_request(&req).unwrap();
    let before = w.fingerprint();
    // The same bytes again, and a fresh request with the same content.
    assert_eq!(w.submit_request(&req), Ok(id));
    let again = w.request("order-d", jpy(900));
    assert_ne!(again, req);
    assert_eq!(w.submit_request(&again), Ok(id));
    assert_eq!(w.fingerprint(), before, "nothing sent twice");
    // Same order reference, different amount.
    let other = w.request("order-d", jpy(901));
    assert_eq!(
        w.submit_request(&other),
        Err(FlowError::OrderReferenceConflict)
    );
    assert_eq!(w.fingerprint(), before);
    // The completion answers the first request, which the merchant knows.
    let no = w.phone_answers(Decision::Reject);
    w.approval(id, &no).unwrap();
    let (_, merchant) = w.deliver_completion();
    assert_eq!(merchant.payment_request, ArtefactDigest::of(&req));
}

#[test]
fn approval_signed_by_another_phone_is_refused() {
    let mut w = World::new();
    let req = w.request("order-p", jpy(900));
    let id = w.submit_request(&req).unwrap();
    let PhoneMessage::ApprovalRequest(bytes) = w.last_to_phone() else {
        panic!()
    };
    let host_trust = TrustedKeys::new([(w.host_key.key_ref().clone(), w.host_key.verifying_key())]);
    // Another registered-looking phone with its own key.
    let mut other = Phone::new(
        "phone-1".parse().unwrap(),
        Signer::new(SigningKey::from_seed(&[4; 32]), kref("phone-2-key#1")),
        host_trust.clone(),
        30_000,
    );
    other.receive_approval_request(&bytes, w.now).unwrap();
    let forged = other.answer(Decision::Approve).unwrap();
    // The same kid as the real phone, a different key.
    let mut cloned = Phone::new(
        "phone-1".parse().unwrap(),
        Signer::new(SigningKey::from_seed(&[5; 32]), kref("phone-1-key#1")),
        host_trust,
        30_000,
    );
    cloned.receive_approval_request(&bytes, w.now).unwrap();
    let cloned_answer = cloned.answer(Decision::Approve).unwrap();

    let before = w.fingerprint();
    assert_eq!(w.approval(id, &forged), Err(FlowError::WrongPhone));
    assert!(matches!(
        w.approval(id, &cloned_answer),
        Err(FlowError::Artefact {
            source: CoseError::BadSignature,
            ..
        })
    ));
    // The host's own approval request is not an approval response.
    assert!(matches!(
        w.approval(id, &bytes),
        Err(FlowError::Artefact {
            source: CoseError::WrongType { .. },
            ..
        })
    ));
    assert_eq!(w.fingerprint(), before);
    assert!(w.key_store.is_empty());
    assert!(matches!(w.state(id), HostState::AwaitingApproval { .. }));
}

#[test]
fn reader_refuses_a_public_key_not_signed_by_the_host() {
    let mut w = World::new();
    let req = w.request("order-k", jpy(900));
    let id = w.submit_request(&req).unwrap();
    let yes = w.phone_answers(Decision::Approve);
    w.approval(id, &yes).unwrap();
    let genuine = w.transaction_key_bytes();

    // An attacker's own key pair, presented as this transaction's key,
    // signed with an attacker key under the host's kid and under its own.
    let attacker_pair = HpkeKeyPair::generate(&mut w.rng);
    let fake = TransactionKey {
        txn_id: id,
        key_ref: id.transaction_key_ref(),
        public_key: attacker_pair.public_key().clone(),
        approval_response: ArtefactDigest([0; 32]),
        deadline_ms: w.now + 1,
    };
    for kid in ["host-sign#1", "evil-sign#1"] {
        let bytes = Signer::new(SigningKey::from_seed(&[6; 32]), kref(kid))
            .sign(&fake)
            .unwrap();
        let err = w.reader.load_transaction_key(&bytes).unwrap_err();
        assert!(
            matches!(
                err,
                FlowError::Artefact {
                    source: CoseError::BadSignature | CoseError::UnknownKey(_),
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(w.phone.relay_transaction_key(&bytes).is_err());
        assert!(!w.reader.has_transaction_key());
        assert_eq!(
            w.reader.read_card(&mut w.rng),
            Err(FlowError::NoTransactionKey)
        );
    }
    // A host-signed artefact of another type is not a key either.
    let PhoneMessage::TransactionKey(_) = w.last_to_phone() else {
        panic!()
    };
    assert!(w.reader.load_transaction_key(&req).is_err());
    // The genuine one is accepted.
    w.reader.load_transaction_key(&genuine).unwrap();
    assert!(w.reader.has_transaction_key());
}

#[test]
fn tampered_and_foreign_card_data_are_refused_without_ending_the_transaction() {
    let mut w = World::new();
    // Transaction A up to its card data.
    let req_a = w.request("order-a", jpy(700));
    let a = w.submit_request(&req_a).unwrap();
    let yes = w.phone_answers(Decision::Approve);
    w.approval(a, &yes).unwrap();
    let card_a = w.reader_reads_card();
    // Transaction B, waiting for card data too.
    let req_b = w.request("order-b", jpy(700));
    let b = w.submit_request(&req_b).unwrap();
    let yes = w.phone_answers(Decision::Approve);
    w.approval(b, &yes).unwrap();

    let before = w.fingerprint();
    // A's ciphertext in B: it names A's key, which B does not have.
    assert!(matches!(
        w.card_data(b, &card_a),
        Err(FlowError::Artefact {
            source: CoseError::UnknownKey(_),
            ..
        })
    ));
    // A tampered ciphertext in A.
    for i in [card_a.len() - 3, card_a.len() / 2, 12] {
        let mut tampered = card_a.clone();
        tampered[i] ^= 0x40;
        assert!(w.card_data(a, &tampered).is_err(), "byte {i}");
    }
    // A ciphertext sealed by someone else to A's public key but for B's
    // transaction id (and so B's AAD) does not open in A.
    let (key_a, key_a_digest) = {
        let t = w.load(a);
        let ctx = t.context();
        let trust = TrustedKeys::new([(w.host_key.key_ref().clone(), w.host_key.verifying_key())]);
        let bytes = w.to_phone.iter().rev().find_map(|m| match m {
            PhoneMessage::TransactionKey(b) => {
                let (k, d) = trust.verify::<TransactionKey>(b, "key").unwrap();
                (k.txn_id == a).then_some((k, d))
            }
            _ => None,
        });
        let (k, d) = bytes.unwrap();
        assert_eq!(Some(d), ctx.transaction_key);
        (k, d)
    };
    let mut relabelled = key_a.clone();
    relabelled.txn_id = b;
    let card = CardData::new(pan(), "2912", NAME, SecretKey::new([1; 16])).unwrap();
    let cross = seal_card_data(&card, &relabelled, &key_a_digest, &mut w.rng).unwrap();
    assert!(matches!(
        w.card_data(a, &cross),
        Err(FlowError::Artefact {
            source: CoseError::DecryptionFailed,
            ..
        })
    ));
    assert_eq!(w.fingerprint(), before);
    assert!(matches!(w.state(a), HostState::AwaitingCardData { .. }));

    // The genuine card data still completes A.
    w.card_data(a, &card_a).unwrap();
    assert!(matches!(w.state(a), HostState::AwaitingPin { .. }));
}

#[test]
fn unknown_card_declines_to_both_sides_s27() {
    let mut w = World::new();
    let other = CardNumber::new("4111111111111111").unwrap();
    w.reader
        .insert_card(EmulatedCard::new(other, "2912", "JOHN DOE").unwrap());
    let req = w.request("order-u", jpy(700));
    let id = w.submit_request(&req).unwrap();
    let yes = w.phone_answers(Decision::Approve);
    w.approval(id, &yes).unwrap();
    let sealed = w.reader_reads_card();
    w.card_data(id, &sealed).unwrap();
    let HostState::Declined { reason, .. } = w.state(id) else {
        panic!()
    };
    assert_eq!(reason, DeclineReason::UnknownCard);
    let (outcome, merchant) = w.deliver_completion();
    assert_eq!(outcome, declined(DeclineReason::UnknownCard));
    assert_eq!(merchant.outcome, declined(DeclineReason::CardRefused));
    let destruction = assert_destroyed(&w, id, true);
    assert!(
        destruction
            .items
            .iter()
            .any(|i| i.kind == DestroyedKind::SealedCardData)
    );
    assert_eq!(w.ledger.transfers().count(), 0);
}

#[test]
fn blocked_and_mismatching_cards_are_declined() {
    let mut w = World::new();
    w.card_mut(&"card-1".parse().unwrap()).status = CardStatus::Blocked;
    let (id, _) = w.run_to_card_decision("order-bl");
    assert!(matches!(
        w.state(id),
        HostState::Declined {
            reason: DeclineReason::CardBlocked,
            ..
        }
    ));

    let mut w = World::new();
    w.reader
        .insert_card(EmulatedCard::new(pan(), "3001", NAME).unwrap());
    let (id, _) = w.run_to_card_decision("order-mm");
    assert!(matches!(
        w.state(id),
        HostState::Declined {
            reason: DeclineReason::CardDataMismatch,
            ..
        }
    ));

    let mut w = World::new();
    w.card_mut(&"card-1".parse().unwrap()).expiry_yymm = "2402".into();
    w.reader
        .insert_card(EmulatedCard::new(pan(), "2402", NAME).unwrap());
    let (id, _) = w.run_to_card_decision("order-ex");
    assert!(matches!(
        w.state(id),
        HostState::Declined {
            reason: DeclineReason::CardExpired,
            ..
        }
    ));
}

impl World {
    fn run_to_card_decision(&mut self, order_ref: &str) -> (TxnId, Vec<u8>) {
        let req = self.request(order_ref, jpy(500));
        let id = self.submit_request(&req).unwrap();
        let yes = self.phone_answers(Decision::Approve);
        self.approval(id, &yes).unwrap();
        let card = self.reader_reads_card();
        self.card_data(id, &card).unwrap();
        (id, card)
    }
}

#[test]
fn wrong_pin_counts_locks_and_the_lock_persists() {
    let mut w = World::new();
    let card_id: CardId = "card-1".parse().unwrap();
    let max = w.cfg.max_pin_tries;
    for n in 1..=max {
        let (id, _, _) = w.purchase(&format!("order-w{n}"), jpy(300), "0000");
        let HostState::Declined { reason, .. } = w.state(id) else {
            panic!()
        };
        if n < max {
            assert_eq!(
                reason,
                DeclineReason::PinIncorrect {
                    tries_remaining: max - n
                }
            );
        } else {
            assert_eq!(reason, DeclineReason::PinLocked);
        }
        assert_eq!(w.card(&card_id).pin_failures, n);
        let (outcome, merchant) = w.deliver_completion();
        assert_eq!(outcome, declined(reason));
        assert_eq!(
            merchant.outcome,
            declined(DeclineReason::CardholderNotVerified)
        );
        assert_destroyed(&w, id, true);
    }
    // Locked: the right PIN is not even asked for in the next transaction
    // (a fresh host state, the counter read from the card table).
    let (id, _) = w.run_to_card_decision("order-after-lock");
    assert!(matches!(
        w.state(id),
        HostState::Declined {
            reason: DeclineReason::PinLocked,
            ..
        }
    ));
    assert_eq!(w.card(&card_id).pin_failures, max);
    assert_eq!(w.ledger.transfers().count(), 0);
}

#[test]
fn a_correct_pin_resets_the_counter_and_a_locked_counter_stops_verification() {
    let mut w = World::new();
    let card_id: CardId = "card-1".parse().unwrap();
    let (_, _, _) = w.purchase("order-w1", jpy(300), "0000");
    assert_eq!(w.card(&card_id).pin_failures, 1);
    let (id, _, _) = w.purchase("order-ok", jpy(300), PIN);
    assert!(matches!(w.state(id), HostState::Settled { .. }));
    assert_eq!(w.card(&card_id).pin_failures, 0);

    // The counter reaches the limit in another host process while this
    // transaction waits for the PIN: the correct PIN is then refused.
    let (id, _) = w.run_to_pin_prompt("order-race", jpy(300));
    let sealed = w.reader_enters_pin(PIN);
    w.card_mut(&card_id).pin_failures = w.cfg.max_pin_tries;
    w.pin(id, &sealed).unwrap();
    assert!(matches!(
        w.state(id),
        HostState::Declined {
            reason: DeclineReason::PinLocked,
            ..
        }
    ));
    assert_eq!(w.ledger.transfers().count(), 1);
}

#[test]
fn pin_block_bound_to_another_pan_is_a_failed_try() {
    let mut w = World::new();
    let req = w.request("order-pan", jpy(400));
    let id = w.submit_request(&req).unwrap();
    let yes = w.phone_answers(Decision::Approve);
    w.approval(id, &yes).unwrap();
    // A reader that seals the real card with a known PIN key ...
    let trust = TrustedKeys::new([(w.host_key.key_ref().clone(), w.host_key.verifying_key())]);
    let (key, key_digest) = trust
        .verify::<TransactionKey>(&w.transaction_key_bytes(), "key")
        .unwrap();
    let pin_key = SecretKey::new([0x33; 16]);
    let card = CardData::new(pan(), "2912", NAME, pin_key.clone()).unwrap();
    let sealed_card = seal_card_data(&card, &key, &key_digest, &mut w.rng).unwrap();
    w.card_data(id, &sealed_card).unwrap();
    let (_, prompt_digest) = trust
        .verify::<PinPrompt>(&w.pin_prompt_bytes(), "prompt")
        .unwrap();
    // ... but enciphers the right PIN for another PAN.
    let other = CardNumber::new("4111111111111111").unwrap();
    let block = encipher_pin_block(
        &Pin::new(PIN).unwrap(),
        &other,
        &kessai_pin::PinKey::Aes128(pin_key),
        &mut w.rng,
    );
    let sealed = seal_pin_block(
        &block,
        &key,
        &ArtefactDigest::of(&sealed_card),
        &prompt_digest,
        &mut w.rng,
    )
    .unwrap();
    w.pin(id, &sealed).unwrap();
    assert!(matches!(
        w.state(id),
        HostState::Declined {
            reason: DeclineReason::PinIncorrect { tries_remaining: 2 },
            ..
        }
    ));
    assert_eq!(w.card(&"card-1".parse().unwrap()).pin_failures, 1);
    assert_eq!(w.ledger.transfers().count(), 0);
    assert_destroyed(&w, id, true);
}

#[test]
fn pin_block_bound_to_other_artefacts_is_refused_and_changes_nothing() {
    let mut w = World::new();
    let (id, sealed_card) = w.run_to_pin_prompt("order-aad", jpy(400));
    let trust = TrustedKeys::new([(w.host_key.key_ref().clone(), w.host_key.verifying_key())]);
    let (key, _) = trust
        .verify::<TransactionKey>(
            &w.to_phone
                .iter()
                .find_map(|m| match m {
                    PhoneMessage::TransactionKey(b) => Some(b.clone()),
                    _ => None,
                })
                .unwrap(),
            "key",
        )
        .unwrap();
    let (_, prompt_digest) = trust
        .verify::<PinPrompt>(&w.pin_prompt_bytes(), "prompt")
        .unwrap();
    let block = PinBlock::from_bytes([7; 16]);
    let before = w.fingerprint();
    // Bound to another card-data digest, another prompt digest: no open.
    for (card_d, prompt_d) in [
        (ArtefactDigest([1; 32]), prompt_digest),
        (ArtefactDigest::of(&sealed_card), ArtefactDigest([2; 32])),
    ] {
        let sealed = seal_pin_block(&block, &key, &card_d, &prompt_d, &mut w.rng).unwrap();
        assert!(matches!(
            w.pin(id, &sealed),
            Err(FlowError::Artefact {
                source: CoseError::DecryptionFailed,
                ..
            })
        ));
    }
    // The card data ciphertext is not a PIN block.
    assert!(matches!(
        w.pin(id, &sealed_card),
        Err(FlowError::Artefact {
            source: CoseError::WrongType { .. },
            ..
        })
    ));
    assert_eq!(w.fingerprint(), before);
}

#[test]
fn replayed_ciphertexts_never_settle_again() {
    let mut w = World::new();
    let (a, card_a, pin_a) = w.purchase("order-1", jpy(1000), PIN);
    assert!(matches!(w.state(a), HostState::Settled { .. }));
    w.deliver_completion();
    let before = w.fingerprint();

    // (1) Same transaction after completion: single-use state.
    assert_eq!(w.card_data(a, &card_a), Err(FlowError::TransactionEnded));
    assert_eq!(w.pin(a, &pin_a), Err(FlowError::TransactionEnded));
    // (2) The key is destroyed: even a host that skipped the state check
    // could not open them.
    assert!(!w.key_store.contains_key(&a.transaction_key_ref()));
    assert_eq!(w.load(a).transaction_key_ref(), None);
    assert_eq!(w.fingerprint(), before);

    // (3) A later transaction of the same customer and card.
    let req = w.request("order-2", jpy(1000));
    let b = w.submit_request(&req).unwrap();
    let yes = w.phone_answers(Decision::Approve);
    w.approval(b, &yes).unwrap();
    let before = w.fingerprint();
    assert!(matches!(
        w.card_data(b, &card_a),
        Err(FlowError::Artefact {
            source: CoseError::UnknownKey(_),
            ..
        })
    ));
    assert_eq!(w.fingerprint(), before);
    let card_b = w.reader_reads_card();
    w.card_data(b, &card_b).unwrap();
    let before = w.fingerprint();
    assert!(matches!(
        w.pin(b, &pin_a),
        Err(FlowError::Artefact {
            source: CoseError::UnknownKey(_),
            ..
        })
    ));
    assert_eq!(w.fingerprint(), before);
    // And B's own PIN block once settled cannot be sent twice either.
    let pin_b = w.reader_enters_pin(PIN);
    w.pin(b, &pin_b).unwrap();
    assert_eq!(w.pin(b, &pin_b), Err(FlowError::TransactionEnded));
    assert_eq!(w.ledger.transfers().count(), 2);
    assert_eq!(w.balances("funding-card-1").debits_posted, 2000);
}

#[test]
fn amount_over_the_credit_limit_is_declined_and_moves_nothing() {
    let mut w = World::new();
    let (id, _, _) = w.purchase("order-big", jpy(CREDIT_LIMIT + 1), PIN);
    let HostState::Declined { reason, .. } = w.state(id) else {
        panic!("{:?}", w.state(id))
    };
    assert_eq!(reason, DeclineReason::InsufficientCredit);
    assert_eq!(w.ledger.transfers().count(), 0);
    assert_eq!(w.balances("funding-card-1"), Balances::default());
    let (_, merchant) = w.deliver_completion();
    assert_eq!(
        merchant.outcome,
        declined(DeclineReason::InsufficientCredit)
    );
    assert_destroyed(&w, id, true);
    // The PIN was right: no failure counted.
    assert_eq!(w.card(&"card-1".parse().unwrap()).pin_failures, 0);
    // Exactly the limit still settles.
    let (id, _, _) = w.purchase("order-limit", jpy(CREDIT_LIMIT), PIN);
    assert!(matches!(w.state(id), HostState::Settled { .. }));
}

#[test]
fn steps_out_of_order_are_refused() {
    let mut w = World::new();
    let req = w.request("order-o", jpy(400));
    let id = w.submit_request(&req).unwrap();
    let before = w.fingerprint();
    assert_eq!(
        w.card_data(id, b"x"),
        Err(FlowError::UnexpectedStep {
            state: "awaiting_approval"
        })
    );
    assert_eq!(
        w.pin(id, b"x"),
        Err(FlowError::UnexpectedStep {
            state: "awaiting_approval"
        })
    );
    let mut t = w.load(id);
    let ok = t.on_settlement(&Err(kessai_ledger::LedgerError::Overflow), &w.env(), w.now);
    assert_eq!(
        ok.unwrap_err(),
        FlowError::UnexpectedStep {
            state: "awaiting_approval"
        }
    );
    assert_eq!(w.fingerprint(), before);
    // The phone does not relay a PIN prompt or key for a transaction it
    // did not approve, and the reader refuses a prompt before a card read.
    let yes = w.phone_answers(Decision::Approve);
    w.approval(id, &yes).unwrap();
    let key = w.transaction_key_bytes();
    w.reader.load_transaction_key(&key).unwrap();
    // (a host-signed artefact of another type is not a prompt at all)
    assert!(matches!(
        w.reader.handle_pin_prompt(&key, &mut w.rng),
        Err(FlowError::Artefact {
            source: CoseError::WrongType { .. },
            ..
        })
    ));
    let prompt = w
        .host_key
        .sign(&PinPrompt {
            txn_id: id,
            card_data: ArtefactDigest([0; 32]),
            masked_pan: "401288******1881".into(),
            amount: jpy(400),
            merchant_name: "Shop One".into(),
            deadline_ms: w.now + 1,
        })
        .unwrap();
    w.reader.type_pin(PIN);
    assert_eq!(
        w.reader.handle_pin_prompt(&prompt, &mut w.rng).unwrap_err(),
        FlowError::CardNotRead
    );
}

#[test]
fn published_format4_blocks_verify_at_the_host() {
    let text = include_str!("vectors/format4_x9_24_3.txt");
    let mut lines = 0;
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let f: Vec<&str> = line.split_whitespace().collect();
        let pin_key: [u8; 16] = hex::decode(f[0]).unwrap().try_into().unwrap();
        let block: [u8; 16] = hex::decode(f[3]).unwrap().try_into().unwrap();
        let vector_pan = CardNumber::new(f[2]).unwrap();
        for (registered_pin, expect_settled) in [(f[1], true), ("4321", false)] {
            let mut w = World::new();
            {
                let row = &mut w.cards[0];
                row.pan = vector_pan.clone();
                row.record.pin_verification = PinVerificationData::generate(
                    &vector_pan,
                    &Pin::new(registered_pin).unwrap(),
                    &w.pvk,
                    &mut w.rng,
                );
            }
            let req = w.request(&format!("kat-{lines}"), jpy(100));
            let id = w.submit_request(&req).unwrap();
            let yes = w.phone_answers(Decision::Approve);
            w.approval(id, &yes).unwrap();
            let trust =
                TrustedKeys::new([(w.host_key.key_ref().clone(), w.host_key.verifying_key())]);
            let (key, key_digest) = trust
                .verify::<TransactionKey>(&w.transaction_key_bytes(), "key")
                .unwrap();
            let card =
                CardData::new(vector_pan.clone(), "2912", NAME, SecretKey::new(pin_key)).unwrap();
            let sealed_card = seal_card_data(&card, &key, &key_digest, &mut w.rng).unwrap();
            w.card_data(id, &sealed_card).unwrap();
            let (_, prompt_digest) = trust
                .verify::<PinPrompt>(&w.pin_prompt_bytes(), "prompt")
                .unwrap();
            let sealed = seal_pin_block(
                &PinBlock::from_bytes(block),
                &key,
                &ArtefactDigest::of(&sealed_card),
                &prompt_digest,
                &mut w.rng,
            )
            .unwrap();
            w.pin(id, &sealed).unwrap();
            let settled = matches!(w.state(id), HostState::Settled { .. });
            assert_eq!(
                settled, expect_settled,
                "{line} registered {registered_pin}"
            );
        }
        lines += 1;
    }
    assert_eq!(lines, 8);
}

#[test]
fn no_card_number_or_pin_reaches_the_merchant_side_or_debug_output() {
    let mut w = World::new();
    let (id, card, pin) = w.purchase("order-1", jpy(1200), PIN);
    let (_, merchant) = w.deliver_completion();
    let (id2, _, _) = w.purchase("order-2", jpy(1200), "0000");
    w.deliver_completion();
    let secrets = [PAN, PIN, NAME];
    let hex_pan = hex::encode(PAN);

    // Merchant side: every completion byte and its decoded form.
    let mut merchant_side: Vec<String> = w
        .to_merchant
        .iter()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect();
    merchant_side.push(format!("{merchant:?}"));
    merchant_side.push(format!("{:?}", w.merchant));
    // Host side: persisted state, its Debug, the audit log, the ledger.
    let mut host_side: Vec<String> = w.txns.values().cloned().collect();
    host_side.push(format!("{:?} {:?}", w.load(id), w.load(id2)));
    host_side.push(serde_json::to_string(&w.audit).unwrap());
    host_side.push(format!("{:?}", w.audit));
    host_side.push(format!("{:?}", w.ledger.transfers().collect::<Vec<_>>()));
    host_side.push(format!(
        "{:?}",
        w.cards.iter().map(|c| &c.record).collect::<Vec<_>>()
    ));
    host_side.push(format!("{:?}", w.key_store));
    // Customer side Debug (the phone relays only ciphertext).
    host_side.push(format!("{:?} {:?}", w.phone, w.reader));
    host_side.push(w.phone.display().join("\n"));
    // Errors never echo secrets either.
    host_side.push(format!("{:?}", w.card_data(id, &card)));
    host_side.push(format!("{:?}", w.pin(id, &pin)));
    // The network: ciphertexts and phone messages, raw.
    let mut wire: Vec<String> = vec![
        String::from_utf8_lossy(&card).into_owned(),
        String::from_utf8_lossy(&pin).into_owned(),
    ];
    wire.extend(w.to_phone.iter().map(|m| format!("{m:?}")));

    for text in merchant_side.iter().chain(&host_side).chain(&wire) {
        for s in secrets {
            assert!(!text.contains(s), "{s:?} leaked into {text}");
        }
        assert!(!text.contains(&hex_pan));
    }
    // The merchant sees the masked PAN at most.
    assert!(merchant_side[0].contains("401288******1881"));
}
