//! Test harness: an issuer with keys and a ledger, a merchant, and devices
//! with a fingerprint-reader test double, all in process.
#![allow(dead_code)]

use kessai_crypto::hpke::HpkeKeyPair;
use kessai_crypto::sign::SigningKey;
use kessai_flow_a::artefacts::OrderInformation;
use kessai_flow_a::device::{DeviceSecrets, DeviceState};
use kessai_flow_a::host::{DeviceRecord, IdentityDecision, Issuer, MerchantKey, Settlement};
use kessai_flow_a::keys::{HostKeys, KeyPurpose, KeyRing};
use kessai_flow_a::{
    CardExpiry, CardInformation, FingerprintReader, FlowAError, MasterReading, MatchOutcome,
    Policy, ReaderError, Template, merchant,
};
use kessai_ids::{AccountId, CardholderId, DeviceId, KeyRef, StoreId};
use kessai_ledger::{Account, AccountKind, Applied, BalanceLimit, MemLedger};
use kessai_money::{Currency, Money};
use kessai_secrets::{CardNumber, SecretKey};
use rand::SeedableRng;
use rand::rngs::StdRng;

pub const DAY_MS: u64 = 86_400_000;
/// 2026-01-01T00:00:00Z.
pub const T0: u64 = 1_767_225_600_000;

pub fn jpy() -> Currency {
    Currency::from_code("JPY").unwrap()
}

pub fn yen(n: i64) -> Money {
    Money::new(n, jpy())
}

pub fn kr(s: &str) -> KeyRef {
    s.parse().unwrap()
}

/// An ISO/IEC 19794-2-shaped record: magic, version, then the finger and
/// impression numbers the test double matches on.
pub fn template(finger: u8, impression: u8) -> Template {
    let mut rec = b"FMR\0 20\0".to_vec();
    rec.push(finger);
    rec.push(impression);
    rec.resize(48, 0xEE);
    Template::from_iso19794_2(rec).unwrap()
}

/// The fingerprint reader test double: `presented` is the finger on the
/// sensor (or none); a capture matches a reference of the same finger.
#[derive(Debug, Default)]
pub struct TestReader {
    pub presented: Option<u8>,
    pub master_reads: u32,
}

impl TestReader {
    pub fn with(finger: u8) -> Self {
        Self {
            presented: Some(finger),
            master_reads: 0,
        }
    }
}

impl FingerprintReader for TestReader {
    fn read_master(&mut self) -> Result<MasterReading, ReaderError> {
        self.master_reads += 1;
        let f = self.presented.ok_or(ReaderError::NoFinger)?;
        let impressions: Vec<Template> = (0..3).map(|i| template(f, i)).collect();
        Ok(MasterReading {
            template: impressions[1].clone(),
            impressions,
        })
    }

    fn capture_and_match(&mut self, reference: &Template) -> MatchOutcome {
        match self.presented {
            None => MatchOutcome::NoCapture,
            Some(f) if reference.expose()[8] == f => MatchOutcome::Match,
            Some(_) => MatchOutcome::NoMatch,
        }
    }
}

pub struct World {
    pub keys: HostKeys,
    pub policy: Policy,
    pub ledger: MemLedger,
    pub store: StoreId,
    pub store_key: SigningKey,
    pub store_key_ref: KeyRef,
    pub payable: AccountId,
}

pub struct Enrolled {
    pub state: DeviceState,
    pub secrets: DeviceSecrets,
    pub record: DeviceRecord,
    pub card: CardInformation,
    pub reader: TestReader,
    pub customer: CardholderId,
}

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

pub fn funding_id(customer: &str) -> AccountId {
    format!("fund-{customer}").parse().unwrap()
}

impl World {
    /// An issuer with version-1 keys, a store, and a ledger with the
    /// store's payable account.
    pub fn new() -> Self {
        let keys = HostKeys {
            signing_ref: kr("issuer-sign#1"),
            signing: SigningKey::from_seed(&[0x11; 32]),
            transmission: KeyRing::new(
                KeyPurpose::Transmission,
                kr("fa-tx#1"),
                HpkeKeyPair::derive(&[0x22; 32]),
            ),
            storage: KeyRing::new(
                KeyPurpose::Storage,
                kr("fa-st#1"),
                HpkeKeyPair::derive(&[0x33; 32]),
            ),
            code_key: SecretKey::new([0x44; 32]),
        };
        let payable: AccountId = "pay-store-1".parse().unwrap();
        let mut ledger = MemLedger::new();
        ledger
            .insert_account(Account::new(
                payable.clone(),
                AccountKind::MerchantPayable,
                jpy(),
                BalanceLimit::MaxNetDebit(0),
            ))
            .unwrap();
        Self {
            keys,
            policy: Policy {
                retention_days: 30,
                key_grace_ms: 7 * DAY_MS,
                ..Policy::default()
            },
            ledger,
            store: "store-1".parse().unwrap(),
            store_key: SigningKey::from_seed(&[0x55; 32]),
            store_key_ref: kr("store-1-sign#1"),
            payable,
        }
    }

    pub fn issuer(&self) -> Issuer<'_> {
        Issuer::new(&self.keys, self.policy)
    }

    pub fn merchant_keys(&self) -> impl Fn(&KeyRef) -> Option<MerchantKey> + '_ {
        move |r: &KeyRef| {
            (r == &self.store_key_ref).then(|| MerchantKey {
                store: self.store.clone(),
                key: self.store_key.verifying_key(),
                payable_account: self.payable.clone(),
            })
        }
    }

    /// Opens a funding account with a credit limit for `customer`.
    pub fn open_funding(&mut self, customer: &str, limit: i64) -> AccountId {
        let id = funding_id(customer);
        self.ledger
            .insert_account(Account::new(
                id.clone(),
                AccountKind::CardholderFunding,
                jpy(),
                BalanceLimit::MaxNetDebit(limit),
            ))
            .unwrap();
        id
    }

    pub fn card_for(&self, customer: &CardholderId, funding: &AccountId) -> CardInformation {
        CardInformation {
            pan: CardNumber::new("4111111111111111").unwrap(),
            expiry: CardExpiry::new(2030, 12).unwrap(),
            cardholder: customer.clone(),
            funding_account: funding.clone(),
        }
    }

    /// Registers `device` for `customer` with finger `finger`, all steps
    /// succeeding.
    pub fn enrol(&mut self, device: &str, customer: &str, finger: u8, r: &mut StdRng) -> Enrolled {
        let customer: CardholderId = customer.parse().unwrap();
        let funding = self
            .ledger
            .account(&funding_id(customer.as_str()))
            .map(|a| a.id.clone())
            .unwrap_or_else(|| self.open_funding(customer.as_str(), 100_000));
        let card = self.card_for(&customer, &funding);
        let issuer = self.issuer();
        let (code, code_record) = issuer.issue_enrolment_code(&customer, T0, r).unwrap();

        let device_id: DeviceId = device.parse().unwrap();
        let mut state = DeviceState::new(device_id, self.keys.anchor(), 3);
        let secrets = DeviceSecrets::new(SecretKey::new([finger; 32]));
        let mut reader = TestReader::with(finger);

        let request = state.registration_request(r).unwrap();
        let started = issuer.begin_registration(&request, None, T0, r).unwrap();
        let sealed = state
            .answer_identity_request(
                &started.identity_request,
                &customer,
                &code,
                &secrets,
                T0 + 1,
                r,
            )
            .unwrap();
        let ident = issuer
            .open_identification(&started.session, &sealed, T0 + 2)
            .unwrap();
        let IdentityDecision::Permitted {
            session,
            code: used,
            permission,
        } = issuer.decide_identity(
            &started.session,
            &ident,
            Some(&code_record),
            &card,
            T0 + 3,
            r,
        )
        else {
            panic!("identity refused");
        };
        assert!(used.used.is_some());
        let registration = state
            .register(&permission, &mut reader, &secrets, T0 + 4, r)
            .unwrap();
        let record = issuer
            .complete_registration(Some(&session), &registration, T0 + 5)
            .unwrap();
        Enrolled {
            state,
            secrets,
            record,
            card,
            reader,
            customer,
        }
    }

    pub fn order(&self, order_id: &str, amount: Money, now: u64) -> Vec<u8> {
        merchant::sign_order(
            &OrderInformation {
                store: self.store.clone(),
                order_id: order_id.parse().unwrap(),
                amount,
                items_digest: [0x77; 32],
                created_at_ms: now,
                expires_at_ms: now + 15 * 60_000,
            },
            &self.store_key,
            &self.store_key_ref,
        )
        .unwrap()
    }

    /// Fingerprint match + transaction data from the device.
    pub fn device_transaction(
        &self,
        d: &mut Enrolled,
        order: &[u8],
        approved: Money,
        now: u64,
        r: &mut StdRng,
    ) -> Vec<u8> {
        let ok = d.state.confirm_identity(&mut d.reader, &d.secrets).unwrap();
        d.state
            .build_transaction(ok, order, approved, &d.secrets, now, r)
            .unwrap()
    }

    /// Host processing of `txn` for `d`; on success applies the settlement
    /// like the real host would (ledger, device record).
    pub fn host_process(
        &mut self,
        d: &mut Enrolled,
        txn: &[u8],
        now: u64,
    ) -> Result<Settlement, FlowAError> {
        let funding = self
            .ledger
            .account(&d.record.funding_account)
            .unwrap()
            .clone();
        let s = self.issuer().process_transaction(
            txn,
            &d.record,
            &funding,
            self.merchant_keys(),
            now,
        )?;
        let applied = self.ledger.submit(&s.transfer, now).unwrap();
        assert!(matches!(applied, Applied::Created(_)));
        d.record = s.device.clone();
        Ok(s)
    }

    /// Ledger accounts and transfer count, to check nothing changed.
    pub fn ledger_snapshot(&self) -> (Vec<Account>, usize) {
        (
            self.ledger.accounts().cloned().collect(),
            self.ledger.transfers().count(),
        )
    }
}

pub fn device_snapshot(d: &Enrolled) -> String {
    serde_json::to_string(&d.state).unwrap()
}
