//! The POS (business-establishment settlement terminal) of the short-range
//! variant (claims 3, 4, 11–14) as a pure state machine serving many phones
//! at once.
//!
//! Per session (claim 12's order):
//!
//! ```text
//! phone Hello{basket}           → POS reserves the basket, asks host for a challenge
//! host Challenge                → POS sends challenge + basket (goods, sum) to the phone
//! phone CardAuth{request}       → POS relays card authentication + sealed PIN to the host
//! host Authorized{password}     → POS keeps the password, tells the phone "authorized"
//! phone Purchase{amount, goods} → POS checks goods and sum against the basket,
//!                                 sends password + amount + goods + its terminal id to the host
//! host Settled{receipt}         → POS verifies the signed receipt, prints it, sends it to the phone
//! ```
//!
//! Sessions are keyed by a random [`SessionId`] and bound to the link
//! connection that opened them: a message naming another connection's
//! session is refused, so phones cannot cross-talk. A basket is reserved by
//! one session at a time and printed once. A link drop before the POS
//! submitted the sale ends the session (basket reopened, the unredeemed
//! password simply expires); after it, the settlement still completes and
//! the receipt is printed (the phone gets it from the host's push, claim 15).

use std::collections::BTreeMap;

use kessai_ids::TerminalId;
use kessai_money::Money;
use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};

use crate::FlowDError;
use crate::artefacts::{LineItem, Receipt, check_goods, goods_total, verify_receipt};
use crate::host::{
    AuthorizationRequest, HostChallenge, HostPublic, PasswordGrant, PasswordInput,
    RedemptionChannel, RedemptionRequest,
};
use crate::password::TemporaryPassword;

/// A link connection, numbered by the transport.
pub type ConnId = u64;

/// A POS session id (16 random bytes, hex in serde).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SessionId(#[serde(with = "crate::hexser")] pub [u8; 16]);

/// Phone → POS messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "msg")]
pub enum PhoneToPos {
    /// Start paying basket `basket` (shown at the till).
    Hello {
        /// The basket reference.
        basket: String,
    },
    /// Card authentication and sealed personal identification.
    CardAuth {
        /// The session.
        session: SessionId,
        /// The request for the authorization server.
        request: AuthorizationRequest,
    },
    /// The customer confirms the sum and goods (claim 12).
    Purchase {
        /// The session.
        session: SessionId,
        /// The sum.
        amount: Money,
        /// The goods.
        goods: Vec<LineItem>,
    },
}

/// POS → phone messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "msg")]
pub enum PosToPhone {
    /// The host challenge and what is being paid.
    Challenge {
        /// The session.
        session: SessionId,
        /// The host challenge.
        challenge: HostChallenge,
        /// Basket total.
        amount: Money,
        /// Basket goods.
        goods: Vec<LineItem>,
    },
    /// Card and customer verified.
    Authorized {
        /// The session.
        session: SessionId,
    },
    /// The signed receipt (COSE_Sign1).
    Receipt {
        /// The session.
        session: SessionId,
        /// The receipt bytes.
        receipt: Vec<u8>,
    },
    /// The payment was refused; nothing settled.
    Declined {
        /// The session.
        session: SessionId,
        /// Why (the error's message).
        reason: String,
    },
}

/// POS → host requests (the basic flow's three endpoints).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "req")]
pub enum PosToHost {
    /// Issue a challenge.
    Challenge,
    /// Authorize (relayed from the phone).
    Authorize(AuthorizationRequest),
    /// Redeem the password with the sale.
    Redeem(RedemptionRequest),
}

/// Host → POS answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostToPos {
    /// A challenge.
    Challenge(HostChallenge),
    /// The authorization's password grant.
    Authorized(PasswordGrant),
    /// The signed receipt.
    Settled(Vec<u8>),
    /// The host refused.
    Refused(FlowDError),
}

/// What the POS wants done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PosOutput {
    /// Send to the phone on this connection.
    ToPhone(ConnId, PosToPhone),
    /// Send to the host; route the answer back with this session.
    ToHost(SessionId, PosToHost),
    /// Print this receipt (claim 4).
    Print(SessionId, String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitChallenge,
    AwaitCardAuth,
    AwaitAuthorization,
    AwaitPurchase,
    AwaitSettlement,
    Done,
    Failed,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::AwaitChallenge => "await_challenge",
            State::AwaitCardAuth => "await_card_auth",
            State::AwaitAuthorization => "await_authorization",
            State::AwaitPurchase => "await_purchase",
            State::AwaitSettlement => "await_settlement",
            State::Done => "done",
            State::Failed => "failed",
        }
    }
}

#[derive(Debug)]
struct Session {
    conn: ConnId,
    basket: String,
    state: State,
    challenge: Option<[u8; 8]>,
    password: Option<TemporaryPassword>,
    phone_gone: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum BasketState {
    Open,
    Reserved(SessionId),
    Paid,
}

#[derive(Debug, Clone)]
struct Basket {
    amount: Money,
    goods: Vec<LineItem>,
    state: BasketState,
}

/// The POS: baskets rung up at the till and the phone sessions paying them.
#[derive(Debug)]
pub struct Pos {
    terminal_id: TerminalId,
    host: HostPublic,
    baskets: BTreeMap<String, Basket>,
    sessions: BTreeMap<SessionId, Session>,
    receipts_printed: usize,
}

impl Pos {
    /// A POS with this terminal id, trusting the host's receipt key.
    pub fn new(terminal_id: TerminalId, host: HostPublic) -> Self {
        Self {
            terminal_id,
            host,
            baskets: BTreeMap::new(),
            sessions: BTreeMap::new(),
            receipts_printed: 0,
        }
    }

    /// Rings up a basket; returns its total.
    pub fn ring_up(
        &mut self,
        basket: &str,
        goods: Vec<LineItem>,
        currency: kessai_money::Currency,
    ) -> Result<Money, FlowDError> {
        if basket.is_empty() || basket.len() > 32 || self.baskets.contains_key(basket) {
            return Err(FlowDError::BasketMismatch);
        }
        let total = goods_total(&goods).ok_or(FlowDError::GoodsMismatch)?;
        let amount = Money::new(total, currency);
        self.baskets.insert(
            basket.to_owned(),
            Basket {
                amount,
                goods,
                state: BasketState::Open,
            },
        );
        Ok(amount)
    }

    /// The state name of a session (for tests and the CLI).
    pub fn session_state(&self, s: &SessionId) -> Option<&'static str> {
        self.sessions.get(s).map(|x| x.state.name())
    }

    /// How many receipts were printed.
    pub fn receipts_printed(&self) -> usize {
        self.receipts_printed
    }

    /// Whether a basket is paid.
    pub fn basket_paid(&self, basket: &str) -> bool {
        self.baskets
            .get(basket)
            .is_some_and(|b| b.state == BasketState::Paid)
    }

    fn own_session(&mut self, conn: ConnId, s: &SessionId) -> Result<&mut Session, FlowDError> {
        self.sessions
            .get_mut(s)
            .filter(|x| x.conn == conn)
            .ok_or(FlowDError::UnknownSession)
    }

    /// Handles one message from the phone on connection `conn`. An error
    /// changes nothing (the transport may answer it or close the link).
    pub fn on_phone(
        &mut self,
        conn: ConnId,
        msg: PhoneToPos,
        rng: &mut impl CryptoRng,
    ) -> Result<Vec<PosOutput>, FlowDError> {
        match msg {
            PhoneToPos::Hello { basket } => {
                let b = self
                    .baskets
                    .get_mut(&basket)
                    .ok_or(FlowDError::BasketMismatch)?;
                if b.state != BasketState::Open {
                    return Err(FlowDError::BasketMismatch);
                }
                let mut id = [0u8; 16];
                rng.fill_bytes(&mut id);
                let session = SessionId(id);
                b.state = BasketState::Reserved(session);
                self.sessions.insert(
                    session,
                    Session {
                        conn,
                        basket,
                        state: State::AwaitChallenge,
                        challenge: None,
                        password: None,
                        phone_gone: false,
                    },
                );
                Ok(vec![PosOutput::ToHost(session, PosToHost::Challenge)])
            }
            PhoneToPos::CardAuth { session, request } => {
                let s = self.own_session(conn, &session)?;
                if s.state != State::AwaitCardAuth {
                    return Err(FlowDError::UnexpectedMessage(s.state.name()));
                }
                if s.challenge != Some(request.challenge) {
                    return Err(FlowDError::UnknownChallenge);
                }
                s.state = State::AwaitAuthorization;
                Ok(vec![PosOutput::ToHost(
                    session,
                    PosToHost::Authorize(request),
                )])
            }
            PhoneToPos::Purchase {
                session,
                amount,
                goods,
            } => {
                let terminal_id = self.terminal_id.clone();
                let s = self.sessions.get(&session).filter(|x| x.conn == conn);
                let s = s.ok_or(FlowDError::UnknownSession)?;
                if s.state != State::AwaitPurchase {
                    return Err(FlowDError::UnexpectedMessage(s.state.name()));
                }
                let basket = self
                    .baskets
                    .get(&s.basket)
                    .ok_or(FlowDError::BasketMismatch)?;
                // Claim 12: the settlement terminal examines goods and sum.
                if basket.amount != amount || basket.goods != goods {
                    return Err(FlowDError::BasketMismatch);
                }
                check_goods(&goods, amount)?;
                let password = s
                    .password
                    .as_ref()
                    .ok_or(FlowDError::UnexpectedMessage("no password"))?;
                let req = RedemptionRequest {
                    terminal_id,
                    password: PasswordInput::Digits(password.expose_digits().to_owned()),
                    amount,
                    goods,
                    channel: RedemptionChannel::ShortRange,
                };
                let s = self.own_session(conn, &session)?;
                s.state = State::AwaitSettlement;
                s.password = None;
                Ok(vec![PosOutput::ToHost(session, PosToHost::Redeem(req))])
            }
        }
    }

    fn fail(&mut self, session: SessionId, reason: &FlowDError) -> Vec<PosOutput> {
        let Some(s) = self.sessions.get_mut(&session) else {
            return vec![];
        };
        s.state = State::Failed;
        s.password = None;
        if let Some(b) = self.baskets.get_mut(&s.basket)
            && b.state == BasketState::Reserved(session)
        {
            b.state = BasketState::Open;
        }
        if s.phone_gone {
            return vec![];
        }
        vec![PosOutput::ToPhone(
            s.conn,
            PosToPhone::Declined {
                session,
                reason: reason.to_string(),
            },
        )]
    }

    /// Handles the host's answer for `session`. A duplicate or unexpected
    /// answer is refused and changes nothing (no second receipt).
    pub fn on_host(
        &mut self,
        session: SessionId,
        msg: HostToPos,
    ) -> Result<Vec<PosOutput>, FlowDError> {
        let s = self
            .sessions
            .get_mut(&session)
            .ok_or(FlowDError::UnknownSession)?;
        match (s.state, msg) {
            (
                State::AwaitChallenge | State::AwaitAuthorization | State::AwaitSettlement,
                HostToPos::Refused(e),
            ) => Ok(self.fail(session, &e)),
            (
                State::AwaitChallenge | State::AwaitAuthorization,
                HostToPos::Challenge(_) | HostToPos::Authorized(_),
            ) if s.phone_gone => Ok(self.fail(session, &FlowDError::LinkClosed)),
            (State::AwaitChallenge, HostToPos::Challenge(c)) => {
                s.challenge = Some(c.challenge);
                s.state = State::AwaitCardAuth;
                let b = self
                    .baskets
                    .get(&s.basket)
                    .ok_or(FlowDError::BasketMismatch)?;
                Ok(vec![PosOutput::ToPhone(
                    s.conn,
                    PosToPhone::Challenge {
                        session,
                        challenge: c,
                        amount: b.amount,
                        goods: b.goods.clone(),
                    },
                )])
            }
            (State::AwaitAuthorization, HostToPos::Authorized(grant)) => {
                s.password = Some(grant.password);
                s.state = State::AwaitPurchase;
                Ok(vec![PosOutput::ToPhone(
                    s.conn,
                    PosToPhone::Authorized { session },
                )])
            }
            (State::AwaitSettlement, HostToPos::Settled(bytes)) => {
                let receipt: Receipt =
                    verify_receipt(&bytes, &self.host.receipt_key_ref, &self.host.receipt_key)?;
                let b = self
                    .baskets
                    .get(&s.basket)
                    .ok_or(FlowDError::BasketMismatch)?;
                if receipt.amount != b.amount
                    || receipt.goods != b.goods
                    || receipt.terminal.as_ref() != Some(&self.terminal_id)
                {
                    return Err(FlowDError::BasketMismatch);
                }
                s.state = State::Done;
                let conn = s.conn;
                let gone = s.phone_gone;
                let basket = s.basket.clone();
                if let Some(b) = self.baskets.get_mut(&basket) {
                    b.state = BasketState::Paid;
                }
                self.receipts_printed += 1;
                let mut out = vec![PosOutput::Print(session, receipt.to_text())];
                if !gone {
                    out.push(PosOutput::ToPhone(
                        conn,
                        PosToPhone::Receipt {
                            session,
                            receipt: bytes,
                        },
                    ));
                }
                Ok(out)
            }
            (state, _) => Err(FlowDError::UnexpectedMessage(state.name())),
        }
    }

    /// The link of `conn` dropped. Sessions that had not submitted the sale
    /// end (nothing settled, basket reopened); a submitted one completes.
    pub fn on_disconnect(&mut self, conn: ConnId) -> Vec<PosOutput> {
        let ids: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.conn == conn)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some(s) = self.sessions.get_mut(&id) {
                s.phone_gone = true;
                // Sessions waiting for the host end when its answer arrives.
                if matches!(s.state, State::AwaitCardAuth | State::AwaitPurchase) {
                    let _ = self.fail(id, &FlowDError::LinkClosed);
                }
            }
        }
        vec![]
    }
}
