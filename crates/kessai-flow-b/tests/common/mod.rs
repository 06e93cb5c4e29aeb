//! An in-process world for flow B: issuer host, a store, a mall with member
//! stores, a wallet, a real `kessai_card::Card` on `MemNvm`, a `MemLedger`,
//! and a small "database" that commits effects with the constraints the
//! real store enforces (unique bill reservation/settlement, one pending
//! operation per card). Deterministic: seeded RNG, virtual clock.
#![allow(dead_code)]

use std::collections::HashMap;

use kessai_card::{Card, MemNvm, PersonalizationParams, issuer_card_keys};
use kessai_crypto::cose::Artefact;
use kessai_crypto::sign::SigningKey;
use kessai_flow_b::Effect;
use kessai_flow_b::FlowError;
use kessai_flow_b::artefacts::{BillKey, Digest, EvidenceKind};
use kessai_flow_b::card_apdu::CardLogEntry;
use kessai_flow_b::funding::{
    FundingAccountRecord, FundingCredentials, FundingDecision, TopUpRequest, authorize_funding,
};
use kessai_flow_b::host::{self, CardSession, HostConfig, Sig2Mode};
use kessai_flow_b::messages::{AbortReason, CardResponses, HostToWallet, TopUpSummary};
use kessai_flow_b::registry::{
    BillStatus, CardRecord, CardStatus, KeyDirectory, MallRecord, MerchantRows, MerchantStatus,
    Shadow, StoreRecord,
};
use kessai_flow_b::store::{IssuedBill, Store, StoreIdentity};
use kessai_flow_b::wallet::{WalletAction, WalletConfig, WalletSession};
use kessai_ids::{AccountId, StoreId, TransferId};
use kessai_ledger::{Account, AccountKind, BalanceLimit, Leg, MemLedger, TransferRequest, codes};
use kessai_money::{Currency, Money};
use kessai_pin::{PinKey, PinVerificationData, PinVerificationKey, encipher_pin_block};
use kessai_scp03::AesKey;
use kessai_secrets::{CardNumber, Pin, SecretKey};
use rand::SeedableRng;
use rand::rngs::StdRng;

pub const T0: u64 = 1_767_225_600_000; // 2026-01-01T00:00Z
pub const INITIAL: i64 = 50_000;
pub const PURSE_MAX: i64 = 100_000;
pub const CREDIT_LIMIT: i64 = 30_000;
pub const FUNDING_PAN: &str = "4111111111111111";

pub fn jpy() -> Currency {
    Currency::from_code("JPY").unwrap()
}

pub fn yen(n: i64) -> Money {
    Money::new(n, jpy())
}

pub fn id<T: std::str::FromStr>(s: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    s.parse().unwrap()
}

pub fn master() -> AesKey {
    AesKey::Aes128([0x42; 16])
}

pub fn host_config(seed: u8, sig2: Sig2Mode) -> HostConfig {
    HostConfig {
        signing_key: SigningKey::from_seed(&[seed; 32]),
        key_ref: id(&format!("host-sign-{seed}#1")),
        card_master_key: master(),
        sig2,
        session_timeout_ms: 120_000,
        hold_ttl_ms: 30 * 86_400_000,
        pin_key: PinKey::from_slice(&[0x55; 16]).unwrap(),
        pin_verification_key: PinVerificationKey::new(SecretKey::new([0x66; 32])),
        max_pin_tries: 3,
    }
}

/// How a run ends.
#[derive(Debug)]
pub enum Outcome {
    /// Paid; with the completion (ACN) bytes and the receipt bytes.
    Paid {
        acn: Vec<u8>,
        recovered: bool,
    },
    ToppedUp(TopUpSummary),
    Aborted(AbortReason),
    /// The run was cut where the test asked.
    Interrupted,
    /// The database refused to commit a step's effects (constraint).
    CommitRefused(String),
}

/// Interference at the card for the purse command (SPC / CREDIT).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Swap {
    None,
    /// Send this (earlier session's) command instead of the real one.
    Command(Vec<u8>),
    /// Hand the host this response instead of the card's.
    Response(Vec<u8>),
    /// The card is pulled out before the command reaches it.
    RemoveCardBefore,
}

/// Where to cut a run (simulating a lost message, a crash, a removed card).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    None,
    /// The host committed step `n` but its reply never reached the wallet.
    HostReplyLost(u16),
    /// The card answered step `n` but the responses never reached the host.
    ResponsesLost(u16),
    /// The final reply (completion) never reached the wallet.
    FinalReplyLost,
}

pub struct World {
    pub now: u64,
    pub rng: StdRng,
    pub host: HostConfig,
    pub wallet_cfg: WalletConfig,
    pub store: Store,
    pub mall: Store,
    pub stores: HashMap<StoreId, StoreRecord>,
    pub mall_rec: MallRecord,
    pub ledger: MemLedger,
    pub card: Card<MemNvm>,
    pub card_rec: CardRecord,
    pub bills: HashMap<BillKey, BillStatus>,
    pub settled: Vec<(BillKey, TransferId)>,
    pub evidence: Vec<(EvidenceKind, Digest)>,
    pub log_uploads: Vec<Vec<CardLogEntry>>,
    pub delivered: Vec<Vec<u8>>,
    pub receipts: Vec<(BillKey, Digest)>,
    pub funding: FundingAccountRecord,
    pub pin_locked: bool,
    /// Every wallet session that reached the card, for replay tests.
    pub last_spc: Option<Vec<u8>>,
    pub last_pcn: Option<Vec<u8>>,
    /// Interference for the next purse command.
    pub swap: Swap,
}

pub fn emoney() -> AccountId {
    id("emoney-card-1")
}
pub fn funding_account() -> AccountId {
    id("funding-1")
}
pub fn payable(store: &str) -> AccountId {
    id(&format!("payable-{store}"))
}

fn store_record(name: &str, key: &SigningKey, mall: Option<&str>) -> StoreRecord {
    StoreRecord {
        store_id: id(name),
        status: MerchantStatus::Active,
        keys: KeyDirectory::single(id(&format!("{name}-sign#1")), key.verifying_key()),
        payable_account: payable(name),
        mall_id: mall.map(id),
    }
}

impl World {
    pub fn new(sig2: Sig2Mode) -> Self {
        Self::with_card("card-1", sig2, 7)
    }

    /// A world whose card has id `card` (its keys follow from the id).
    pub fn with_card(card: &str, sig2: Sig2Mode, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let host = host_config(9, sig2);
        let store_key = SigningKey::from_seed(&[1; 32]);
        let mall_key = SigningKey::from_seed(&[2; 32]);
        let other_key = SigningKey::from_seed(&[3; 32]);
        let mut stores = HashMap::new();
        stores.insert(id("store-1"), store_record("store-1", &store_key, None));
        stores.insert(id("store-2"), store_record("store-2", &other_key, None));
        for m in ["shop-a", "shop-b"] {
            let mut r = store_record(m, &mall_key, Some("mall-1"));
            r.keys = KeyDirectory::new();
            stores.insert(id(m), r);
        }
        let mall_rec = MallRecord {
            mall_id: id("mall-1"),
            status: MerchantStatus::Active,
            keys: KeyDirectory::single(id("mall-1-sign#1"), mall_key.verifying_key()),
        };
        let wallet_cfg = WalletConfig {
            host_keys: host.key_directory(),
            merchant_keys: KeyDirectory::single(id("store-1-sign#1"), store_key.verifying_key())
                .with(id("store-2-sign#1"), other_key.verifying_key())
                .with(id("mall-1-sign#1"), mall_key.verifying_key()),
            sig2,
        };
        let store = Store {
            identity: StoreIdentity::Store(id("store-1")),
            signing_key: store_key,
            key_ref: id("store-1-sign#1"),
            host_keys: host.key_directory(),
            bill_ttl_ms: 600_000,
        };
        let mall = Store {
            identity: StoreIdentity::Mall {
                mall_id: id("mall-1"),
                members: vec![id("shop-a"), id("shop-b")],
            },
            signing_key: mall_key,
            key_ref: id("mall-1-sign#1"),
            host_keys: host.key_directory(),
            bill_ttl_ms: 600_000,
        };

        // The card, issued with INITIAL on it.
        let keys = issuer_card_keys(&master(), &id(card), 1);
        let mut p = PersonalizationParams::new(id(card), keys, jpy(), PURSE_MAX, [7; 32]);
        p.initial_balance_minor = INITIAL;
        let mut card_dev = Card::personalize(p, MemNvm::new()).unwrap();
        card_dev.power_on();
        let card_rec = CardRecord {
            card_id: id(card),
            currency: jpy(),
            key_version: 1,
            emoney_account: emoney(),
            status: CardStatus::Active,
            shadow: Shadow {
                balance_minor: INITIAL as u64,
                counter: 0,
            },
            pending: None,
        };

        // The ledger: the issued value is the issuer's liability.
        let mut ledger = MemLedger::new();
        let acc = |id: AccountId, kind, limit| Account::new(id, kind, jpy(), limit);
        ledger
            .insert_account(acc(
                id("clearing"),
                AccountKind::IssuerClearing,
                BalanceLimit::Unlimited,
            ))
            .unwrap();
        ledger
            .insert_account(acc(
                emoney(),
                AccountKind::EmoneyOutstanding,
                BalanceLimit::MaxNetDebit(0),
            ))
            .unwrap();
        for s in ["store-1", "store-2", "shop-a", "shop-b"] {
            ledger
                .insert_account(acc(
                    payable(s),
                    AccountKind::MerchantPayable,
                    BalanceLimit::MaxNetDebit(0),
                ))
                .unwrap();
        }
        ledger
            .insert_account(acc(
                funding_account(),
                AccountKind::CardholderFunding,
                BalanceLimit::MaxNetDebit(CREDIT_LIMIT),
            ))
            .unwrap();
        ledger
            .submit(
                &TransferRequest::posted(
                    TransferId::derive("test/issue", &[b"card-1"]),
                    jpy(),
                    codes::FUNDING,
                    vec![
                        Leg::debit(id("clearing"), INITIAL),
                        Leg::credit(emoney(), INITIAL),
                    ],
                ),
                T0,
            )
            .unwrap();

        let pan = CardNumber::new(FUNDING_PAN).unwrap();
        let pin_data = PinVerificationData::generate(
            &pan,
            &Pin::new("4321").unwrap(),
            &host.pin_verification_key,
            &mut rng,
        );
        let funding = FundingAccountRecord {
            account: funding_account(),
            pan,
            expiry_yymm: "2812".into(),
            pin_data,
            failed_pin_tries: 0,
        };
        Self {
            now: T0,
            rng,
            host,
            wallet_cfg,
            store,
            mall,
            stores,
            mall_rec,
            ledger,
            card: card_dev,
            card_rec,
            bills: HashMap::new(),
            settled: Vec::new(),
            evidence: Vec::new(),
            log_uploads: Vec::new(),
            delivered: Vec::new(),
            receipts: Vec::new(),
            funding,
            pin_locked: false,
            last_spc: None,
            last_pcn: None,
            swap: Swap::None,
        }
    }

    pub fn bill(&mut self, amount: i64, order: &str) -> IssuedBill {
        self.store
            .create_bill(
                &id("store-1"),
                id(order),
                yen(amount),
                [0xAB; 32],
                self.now,
                &mut self.rng,
            )
            .unwrap()
    }

    pub fn mall_bill(&mut self, member: &str, amount: i64, order: &str) -> IssuedBill {
        self.mall
            .create_bill(
                &id(member),
                id(order),
                yen(amount),
                [0xCD; 32],
                self.now,
                &mut self.rng,
            )
            .unwrap()
    }

    /// The merchant rows for a bill, loaded by peeking its route.
    pub fn rows_for(&self, bill: &[u8]) -> (StoreRecord, Option<MallRecord>) {
        let (store, mall) = host::peek_bill_route(bill).unwrap();
        let s = self
            .stores
            .get(&store)
            .cloned()
            .unwrap_or_else(|| StoreRecord {
                store_id: store.clone(),
                status: MerchantStatus::Closed,
                keys: KeyDirectory::new(),
                payable_account: payable("unknown"),
                mall_id: None,
            });
        let m = mall.map(|_| self.mall_rec.clone());
        (s, m)
    }

    /// Commits effects atomically, enforcing the database's constraints.
    pub fn commit(&mut self, effects: &[Effect]) -> Result<(), String> {
        let mut ledger = self.ledger.clone();
        let mut card_rec = self.card_rec.clone();
        let mut bills = self.bills.clone();
        let mut settled = self.settled.clone();
        let mut evidence = self.evidence.clone();
        let mut uploads = self.log_uploads.clone();
        let mut delivered = self.delivered.clone();
        let mut receipts = self.receipts.clone();
        let mut failed = self.funding.failed_pin_tries;
        let mut locked = self.pin_locked;
        for e in effects {
            match e {
                Effect::Ledger(req) => {
                    ledger
                        .submit(req, self.now)
                        .map_err(|e| format!("ledger: {e}"))?;
                }
                Effect::ReserveBill { bill, .. } => {
                    let s = bills.entry(bill.clone()).or_insert(BillStatus::Open);
                    if *s != BillStatus::Open {
                        return Err(format!("bill {bill:?} is {s:?}"));
                    }
                    *s = BillStatus::Reserved;
                }
                Effect::ReleaseBill { bill, .. } => {
                    bills.insert(bill.clone(), BillStatus::Open);
                }
                Effect::MarkBillSettled {
                    bill, transfer_id, ..
                } => {
                    if bills.get(bill) == Some(&BillStatus::Settled) {
                        return Err("bill settled twice".into());
                    }
                    bills.insert(bill.clone(), BillStatus::Settled);
                    settled.push((bill.clone(), *transfer_id));
                }
                Effect::RecordPendingOp(op) => {
                    if card_rec.pending.is_some() {
                        return Err("card already has a pending operation".into());
                    }
                    card_rec.pending = Some(op.clone());
                }
                Effect::ClearPendingOp { hold_id, .. } => {
                    if card_rec.pending.as_ref().map(|p| p.hold_id) != Some(*hold_id) {
                        return Err("no such pending operation".into());
                    }
                    card_rec.pending = None;
                }
                Effect::UpdateShadow { shadow, .. } => card_rec.shadow = *shadow,
                Effect::StoreEvidence { kind, digest, .. } => evidence.push((*kind, *digest)),
                Effect::UploadCardLog { entries, .. } => uploads.push(entries.clone()),
                Effect::DeliverCompletion { completion, .. } => delivered.push(completion.clone()),
                Effect::RecordPinTry {
                    failed_tries,
                    locked: l,
                    ..
                } => {
                    failed = *failed_tries;
                    locked = *l;
                }
                Effect::RecordReceipt {
                    bill,
                    receipt_digest,
                    ..
                } => receipts.push((bill.clone(), *receipt_digest)),
            }
        }
        self.ledger = ledger;
        self.card_rec = card_rec;
        self.bills = bills;
        self.settled = settled;
        self.evidence = evidence;
        self.log_uploads = uploads;
        self.delivered = delivered;
        self.receipts = receipts;
        self.funding.failed_pin_tries = failed;
        self.pin_locked = locked;
        Ok(())
    }

    pub fn transmit(&mut self, apdus: &[Vec<u8>]) -> Vec<Vec<u8>> {
        apdus.iter().map(|a| self.card.transmit(a)).collect()
    }

    /// Starts a purchase: wallet verifies the bill, host verifies it and
    /// opens the card session.
    pub fn begin(
        &mut self,
        bill: &IssuedBill,
    ) -> Result<(WalletSession, CardSession, HostToWallet), FlowError> {
        let wallet = WalletSession::purchase(
            &self.wallet_cfg,
            &bill.bytes,
            self.card_rec.card_id.clone(),
            self.now,
        )?;
        let (store, mall) = self.rows_for(&bill.bytes);
        let status = self
            .bills
            .get(&bill.bill.key())
            .copied()
            .unwrap_or(BillStatus::Open);
        let t = host::begin_purchase(
            &self.host,
            &bill.bytes,
            MerchantRows {
                store: &store,
                mall: mall.as_ref(),
            },
            status,
            &self.card_rec,
            self.now,
            &mut self.rng,
        )?;
        self.commit(&t.effects).unwrap();
        Ok((wallet, t.session, t.reply))
    }

    /// Runs a session to its end (or the cut), confirming every payment.
    pub fn drive(
        &mut self,
        mut wallet: WalletSession,
        mut session: CardSession,
        mut reply: HostToWallet,
        bill: Option<&IssuedBill>,
        cut: Cut,
    ) -> Result<Outcome, FlowError> {
        loop {
            if let HostToWallet::CardExchange { step, .. }
            | HostToWallet::Settlement { step, .. }
            | HostToWallet::ValueUpdate { step, .. } = &reply
            {
                if cut == Cut::HostReplyLost(*step) {
                    return Ok(Outcome::Interrupted);
                }
            } else if cut == Cut::FinalReplyLost {
                return Ok(Outcome::Interrupted);
            }
            let (w, mut action) = wallet.on_host(&self.wallet_cfg, &reply, self.now)?;
            wallet = w;
            if let WalletAction::Confirm(c) = &action {
                assert_eq!(Some(c.amount), bill.map(|b| b.bill.amount));
                let (w, a) = wallet.confirm()?;
                wallet = w;
                action = a;
            }
            match action {
                WalletAction::ToCard(apdus) => {
                    let is_purse = apdus.len() == 1 && matches!(apdus[0].get(1), Some(0x54 | 0x52));
                    let responses;
                    if is_purse {
                        self.last_spc = Some(apdus[0].clone());
                        match std::mem::replace(&mut self.swap, Swap::None) {
                            Swap::None => responses = self.transmit(&apdus),
                            Swap::Command(c) => responses = self.transmit(&[c]),
                            Swap::Response(r) => {
                                self.transmit(&apdus);
                                responses = vec![r];
                            }
                            Swap::RemoveCardBefore => {
                                self.card.power_off();
                                responses = self.transmit(&apdus);
                            }
                        }
                        self.last_pcn = Some(responses[0].clone());
                    } else {
                        responses = self.transmit(&apdus);
                    }
                    let (w, msg) = wallet.on_card(responses)?;
                    wallet = w;
                    if cut == Cut::ResponsesLost(msg.step) {
                        return Ok(Outcome::Interrupted);
                    }
                    // The host keeps the session in its database between
                    // requests: round-trip it through JSON every step.
                    session =
                        serde_json::from_str(&serde_json::to_string(&session).unwrap()).unwrap();
                    wallet =
                        serde_json::from_str(&serde_json::to_string(&wallet).unwrap()).unwrap();
                    let t = session.handle(&self.host, &self.card_rec.clone(), &msg, self.now)?;
                    if let Err(e) = self.commit(&t.effects) {
                        return Ok(Outcome::CommitRefused(e));
                    }
                    session = t.session;
                    reply = t.reply;
                }
                WalletAction::Paid(c) => {
                    let acn = wallet.completion().unwrap().to_vec();
                    let bill = bill.expect("a purchase");
                    self.finish_with_store(bill, &acn, Some(&wallet))?;
                    return Ok(Outcome::Paid {
                        acn,
                        recovered: c.recovered,
                    });
                }
                WalletAction::ToppedUp(s) => return Ok(Outcome::ToppedUp(s)),
                WalletAction::Aborted(r) => return Ok(Outcome::Aborted(r)),
                WalletAction::Confirm(_) => unreachable!("confirmed above"),
            }
        }
    }

    /// ST111–ST112: the store verifies SIG3 and returns SIG4; host and
    /// wallet verify it.
    pub fn finish_with_store(
        &mut self,
        bill: &IssuedBill,
        acn: &[u8],
        wallet: Option<&WalletSession>,
    ) -> Result<(), FlowError> {
        let store = if bill.bill.mall_id.is_some() {
            &self.mall
        } else {
            &self.store
        };
        let verified = store.verify_completion(bill, acn)?;
        let delivery = store.issue_receipt(&verified, self.now, &mut self.rng)?;
        let (s, m) = self.rows_for(&bill.bytes);
        let (_, effects) = host::verify_receipt(
            &delivery.receipt,
            acn,
            MerchantRows {
                store: &s,
                mall: m.as_ref(),
            },
        )?;
        self.commit(&effects).unwrap();
        if let Some(w) = wallet {
            let (w2, r) = w.on_receipt(&self.wallet_cfg, &delivery.receipt)?;
            assert!(kessai_flow_b::store::token_matches(
                &delivery.token,
                r.receipt()
            ));
            assert_eq!(w2.receipt(), Some(delivery.receipt.as_slice()));
        }
        Ok(())
    }

    /// A whole purchase.
    pub fn pay(&mut self, bill: &IssuedBill, cut: Cut) -> Result<Outcome, FlowError> {
        let (w, s, r) = self.begin(bill)?;
        self.drive(w, s, r, Some(bill), cut)
    }

    pub fn top_up_request(&mut self, amount: i64, pin: &str) -> TopUpRequest {
        let pan = CardNumber::new(FUNDING_PAN).unwrap();
        let block = encipher_pin_block(
            &Pin::new(pin).unwrap(),
            &pan,
            &self.host.pin_key,
            &mut self.rng,
        );
        TopUpRequest {
            card_id: self.card_rec.card_id.clone(),
            amount: yen(amount),
            credentials: FundingCredentials {
                pan,
                expiry_yymm: "2812".into(),
                pin_block: block,
            },
        }
    }

    /// Authorization only; commits its effects (PIN counter).
    pub fn authorize(&mut self, amount: i64, pin: &str) -> FundingDecision {
        let req = self.top_up_request(amount, pin);
        let account = self.ledger.account(&funding_account()).unwrap().clone();
        let d = authorize_funding(
            &self.host,
            &req,
            &self.funding,
            &account,
            self.now,
            &mut self.rng,
        );
        let effects = match &d {
            FundingDecision::Approved { effects, .. }
            | FundingDecision::Declined { effects, .. } => effects.clone(),
        };
        self.commit(&effects).unwrap();
        d
    }

    /// A whole top-up.
    pub fn top_up(&mut self, amount: i64, pin: &str, cut: Cut) -> Result<Outcome, FlowError> {
        let authorization = match self.authorize(amount, pin) {
            FundingDecision::Approved { authorization, .. } => authorization,
            FundingDecision::Declined { error, .. } => return Err(error),
        };
        let wallet = WalletSession::top_up(self.card_rec.card_id.clone(), yen(amount))?;
        let t = host::begin_top_up(
            &self.host,
            authorization,
            &self.card_rec,
            self.now,
            &mut self.rng,
        )?;
        self.commit(&t.effects).unwrap();
        self.drive(wallet, t.session, t.reply, None, cut)
    }

    pub fn card_balance(&self) -> i64 {
        self.card.snapshot().balance.amount_minor
    }

    pub fn account_net(&self, a: &AccountId) -> i64 {
        self.ledger
            .account(a)
            .unwrap()
            .balances
            .net_credit_posted()
            .unwrap()
    }

    /// SPEC §7 invariants 1–3 for this world, once no operation is pending.
    pub fn assert_consistent(&self) {
        assert!(
            self.card_rec.pending.is_none(),
            "a card operation is pending"
        );
        let snap = self.card.snapshot();
        assert_eq!(
            self.card_rec.shadow.balance_minor as i64, snap.balance.amount_minor,
            "shadow balance == card balance"
        );
        assert_eq!(self.card_rec.shadow.counter, snap.counter, "shadow counter");
        assert_eq!(
            self.account_net(&emoney()),
            snap.balance.amount_minor,
            "e-money outstanding == card balance"
        );
        // Every transfer balances and the balances recompute.
        let recomputed = self.ledger.recompute_balances().unwrap();
        for a in self.ledger.accounts() {
            assert_eq!(
                recomputed.get(&a.id).copied().unwrap_or_default(),
                a.balances
            );
            assert_eq!(a.balances.debits_pending, 0, "no hold left on {}", a.id);
            assert_eq!(a.balances.credits_pending, 0, "no hold left on {}", a.id);
        }
        // Each bill settled at most once.
        let mut keys: Vec<_> = self.settled.iter().map(|(k, _)| k.clone()).collect();
        keys.sort();
        let n = keys.len();
        keys.dedup();
        assert_eq!(keys.len(), n, "a bill settled twice");
    }
}

/// Re-signs nothing: rebuilds a COSE_Sign1 with a changed payload and the
/// original signature (a tampering attacker).
pub fn tamper<A: Artefact>(bytes: &[u8], f: impl FnOnce(&mut A)) -> Vec<u8> {
    use ciborium::Value;
    let v: Value = ciborium::de::from_reader(bytes).unwrap();
    let Value::Tag(18, inner) = v else { panic!() };
    let Value::Array(mut items) = *inner else {
        panic!()
    };
    let Value::Bytes(payload) = items[2].clone() else {
        panic!()
    };
    let mut a: A = ciborium::de::from_reader(payload.as_slice()).unwrap();
    f(&mut a);
    let mut p = Vec::new();
    ciborium::ser::into_writer(&a, &mut p).unwrap();
    items[2] = Value::Bytes(p);
    let mut out = Vec::new();
    ciborium::ser::into_writer(&Value::Tag(18, Box::new(Value::Array(items))), &mut out).unwrap();
    out
}

/// Sends fixed responses for the current step to the host.
pub fn responses(session: &CardSession, responses: Vec<Vec<u8>>) -> CardResponses {
    CardResponses {
        session_id: session.session_id(),
        step: session.step(),
        responses,
    }
}
