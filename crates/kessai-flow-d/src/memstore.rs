//! An in-memory host store that carries out [`Effect`]s with the same
//! conditional rules the database must enforce (see [`crate::host`]):
//! the reference for the SQL store, and the store of tests and
//! simulations. All effects of one outcome commit together or not at all.

use std::collections::BTreeMap;

use kessai_ids::{CardId, StoreId, TerminalId};
use kessai_ledger::{Applied, MemLedger};
use rand_core::CryptoRng;

use crate::FlowDError;
use crate::host::{
    AuthorizationRequest, CardRecord, ChallengeRecord, Effect, Host, HostChallenge,
    MerchantCardRequest, MerchantRecord, Outcome, PasswordGrant, PasswordRecord, PasswordState,
    RedemptionRequest, Settled, TerminalRecord,
};
use crate::password::PasswordId;

/// The host's flow-D tables and ledger, in memory.
#[derive(Debug, Clone, Default)]
pub struct MemHost {
    /// Issued challenges.
    pub challenges: BTreeMap<[u8; 8], ChallengeRecord>,
    /// Cards by id.
    pub cards: BTreeMap<CardId, CardRecord>,
    /// Merchants by id.
    pub merchants: BTreeMap<StoreId, MerchantRecord>,
    /// Terminals by id.
    pub terminals: BTreeMap<TerminalId, TerminalRecord>,
    /// Passwords by keyed hash.
    pub passwords: BTreeMap<PasswordId, PasswordRecord>,
    /// The ledger.
    pub ledger: MemLedger,
    /// Receipts pushed to phones (claim 15).
    pub phone_pushes: Vec<(CardId, Vec<u8>)>,
    /// Receipts signalled to POS terminals (claims 2, 8).
    pub pos_signals: Vec<(StoreId, Option<TerminalId>, Vec<u8>)>,
}

impl MemHost {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies `effects` atomically. A failed conditional update or a
    /// ledger refusal leaves everything unchanged and returns the error the
    /// caller must answer instead.
    pub fn commit(&mut self, effects: &[Effect], now_ms: u64) -> Result<(), FlowDError> {
        let mut next = Self {
            ledger: MemLedger::new(),
            ..self.clone()
        };
        let mut settle = None;
        for e in effects {
            match e {
                Effect::StoreChallenge(c) => {
                    if next.challenges.insert(c.challenge, c.clone()).is_some() {
                        return Err(FlowDError::ChallengeUsed);
                    }
                }
                Effect::ConsumeChallenge { challenge } => {
                    let c = next
                        .challenges
                        .get_mut(challenge)
                        .ok_or(FlowDError::UnknownChallenge)?;
                    if c.consumed {
                        return Err(FlowDError::ChallengeUsed);
                    }
                    c.consumed = true;
                }
                Effect::AdvanceCardCounter { card_id, counter } => {
                    let c = next
                        .cards
                        .get_mut(card_id)
                        .ok_or_else(|| FlowDError::UnknownCard(card_id.clone()))?;
                    if *counter <= c.last_counter {
                        return Err(FlowDError::CounterReplay {
                            got: *counter,
                            last: c.last_counter,
                        });
                    }
                    c.last_counter = *counter;
                }
                Effect::RecordCvmFailure {
                    card_id,
                    tries_left,
                } => {
                    let c = next
                        .cards
                        .get_mut(card_id)
                        .ok_or_else(|| FlowDError::UnknownCard(card_id.clone()))?;
                    if let Some(cust) = c.customer.as_mut() {
                        cust.cvm_tries_left = *tries_left;
                    }
                    if *tries_left == 0 {
                        c.blocked = true;
                    }
                }
                Effect::ResetCvmTries { card_id, tries } => {
                    if let Some(cust) = next
                        .cards
                        .get_mut(card_id)
                        .and_then(|c| c.customer.as_mut())
                    {
                        cust.cvm_tries_left = *tries;
                    }
                }
                Effect::StorePassword(p) => {
                    if next.passwords.insert(p.id, p.clone()).is_some() {
                        // A 1-in-10^12 collision with a stored password: refuse.
                        return Err(FlowDError::PasswordUsed);
                    }
                }
                Effect::MarkPasswordUsed {
                    id,
                    at_ms,
                    transfer_id,
                } => {
                    let p = next
                        .passwords
                        .get_mut(id)
                        .ok_or(FlowDError::UnknownPassword)?;
                    if p.state != PasswordState::Unused {
                        return Err(FlowDError::PasswordUsed);
                    }
                    p.state = PasswordState::Used {
                        at_ms: *at_ms,
                        transfer_id: *transfer_id,
                    };
                }
                Effect::RecordGuessFailure {
                    terminal_id,
                    failures,
                    window_start_ms,
                } => {
                    if let Some(t) = next.terminals.get_mut(terminal_id) {
                        t.guess_failures = *failures;
                        t.guess_window_start_ms = *window_start_ms;
                    }
                }
                Effect::Settle(t) => settle = Some(t),
                Effect::PushReceiptToPhone { card_id, receipt } => {
                    next.phone_pushes.push((card_id.clone(), receipt.clone()));
                }
                Effect::SignalPos {
                    store_id,
                    terminal_id,
                    receipt,
                } => {
                    next.pos_signals
                        .push((store_id.clone(), terminal_id.clone(), receipt.clone()))
                }
            }
        }
        if let Some(t) = settle {
            match self.ledger.submit(t, now_ms) {
                Ok(Applied::Created(_)) => {}
                // The same transfer already posted: a concurrent redemption won.
                Ok(Applied::AlreadyExists(_)) => return Err(FlowDError::PasswordUsed),
                Err(e) => return Err(FlowDError::Ledger(e)),
            }
        }
        next.ledger = std::mem::take(&mut self.ledger);
        *self = next;
        Ok(())
    }

    /// Commits an outcome's effects and returns its result (or the commit's
    /// error).
    pub fn run<T>(&mut self, outcome: Outcome<T>, now_ms: u64) -> Result<T, FlowDError> {
        self.commit(&outcome.effects, now_ms)?;
        outcome.result
    }

    /// Issues and stores a challenge.
    pub fn issue_challenge(
        &mut self,
        host: &Host,
        rng: &mut impl CryptoRng,
        now_ms: u64,
    ) -> Result<HostChallenge, FlowDError> {
        let o = host.issue_challenge(rng, now_ms);
        self.run(o, now_ms)
    }

    /// Looks up, authorizes, commits.
    pub fn authorize(
        &mut self,
        host: &Host,
        req: &AuthorizationRequest,
        rng: &mut impl CryptoRng,
        now_ms: u64,
    ) -> Result<PasswordGrant, FlowDError> {
        let o = host.authorize(
            req,
            self.challenges.get(&req.challenge),
            self.cards.get(&req.card.card_id),
            rng,
            now_ms,
        );
        self.run(o, now_ms)
    }

    /// Computes a redemption against the current state without committing
    /// it (what one host process does before its transaction commits).
    pub fn plan_redeem(
        &self,
        host: &Host,
        req: &RedemptionRequest,
        now_ms: u64,
    ) -> Outcome<Settled> {
        let presented = match host.present(&req.password) {
            Ok(p) => p,
            Err(e) => {
                return Outcome {
                    effects: vec![],
                    result: Err(e),
                };
            }
        };
        let terminal = self.terminals.get(&req.terminal_id);
        let merchant = terminal.and_then(|t| self.merchants.get(&t.store_id));
        host.redeem(
            req,
            &presented,
            terminal,
            merchant,
            self.passwords.get(&presented.id),
            now_ms,
        )
    }

    /// Looks up, redeems, commits.
    pub fn redeem(
        &mut self,
        host: &Host,
        req: &RedemptionRequest,
        now_ms: u64,
    ) -> Result<Settled, FlowDError> {
        let o = self.plan_redeem(host, req, now_ms);
        self.run(o, now_ms)
    }

    /// Looks up, settles the merchant-card variant, commits.
    pub fn settle_with_merchant_card(
        &mut self,
        host: &Host,
        req: &MerchantCardRequest,
        now_ms: u64,
    ) -> Result<Settled, FlowDError> {
        let merchant = self
            .merchants
            .values()
            .find(|m| m.merchant_card.as_ref() == Some(&req.merchant.card_id));
        let o = host.settle_with_merchant_card(
            req,
            self.challenges.get(&req.challenge),
            self.cards.get(&req.customer.card_id),
            self.cards.get(&req.merchant.card_id),
            merchant,
            now_ms,
        );
        self.run(o, now_ms)
    }
}
