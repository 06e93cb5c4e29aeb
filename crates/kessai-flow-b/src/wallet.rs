//! The wallet (client device): relays between host and card and shows the
//! customer what they approve (ST6–ST8, ST12–ST16, ST20; claims 3, 4, 9,
//! 24).
//!
//! Rules it enforces before anything reaches the card:
//! - outside a signed instruction only the SCP03 handshake (SELECT of the
//!   kessai AID, INITIALIZE UPDATE, EXTERNAL AUTHENTICATE) is relayed;
//! - every other command must arrive inside settlement information whose
//!   SECOND SIGNATURE verifies under the host's published key (or, only if
//!   the wallet is configured for the second embodiment, unsigned), or
//!   inside a value update with a valid FIFTH SIGNATURE;
//! - the instruction must name this session, the next step, this card,
//!   the bill the customer was shown (by digest) and its exact amount, and
//!   chain to the previous instruction by digest;
//! - the SPC goes to the card only after [`WalletSession::confirm`].
//!
//! Every method returns a new state and leaves `self` untouched, so a
//! refused message changes nothing.

use kessai_crypto::cose::verify_artefact;
use kessai_crypto::digest::sha256;
use kessai_ids::{CardId, MallId, OrderId, StoreId};
use kessai_money::Money;
use serde::{Deserialize, Serialize};

use crate::artefacts::{
    Bill, Digest, InfoEnvelope, SettlementCompletion, SettlementInformation, Stage, ValueUpdate,
    decode_unsigned,
};
use crate::bytes;
use crate::card_apdu::is_handshake_command;
use crate::error::FlowError;
use crate::host::{ReceiptVerified, Sig2Mode, check_receipt};
use crate::messages::{AbortReason, CardResponses, HostToWallet, TopUpSummary};
use crate::registry::KeyDirectory;

/// The wallet's trust anchors and settings.
#[derive(Clone, Debug)]
pub struct WalletConfig {
    /// The host's published keys (SIG2, SIG3, SIG5).
    pub host_keys: KeyDirectory,
    /// The registered store and mall keys the host publishes (SIG1, SIG4).
    pub merchant_keys: KeyDirectory,
    /// `Signed`: settlement information must carry SIG2. `Omitted`: the
    /// wallet talks to a second-embodiment host and accepts it unsigned.
    pub sig2: Sig2Mode,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Purpose {
    Purchase {
        bill: Bill,
        #[serde(with = "bytes::array")]
        bill_digest: Digest,
    },
    TopUp {
        amount: Money,
        #[serde(with = "bytes::opt_array")]
        authorization_ref: Option<[u8; 16]>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Phase {
    /// Waiting for the host's next message.
    AwaitHost,
    /// Commands handed to the card driver; waiting for its responses.
    AwaitCard { expected: usize },
    /// The SPC is held until the customer confirms.
    AwaitConfirmation {
        #[serde(with = "bytes::vec")]
        spc: Vec<u8>,
        balance_minor: u64,
    },
    /// Paid: the completion (SIG3) verified.
    Completed {
        #[serde(with = "bytes::vec")]
        completion: Vec<u8>,
        #[serde(with = "bytes::opt_array")]
        receipt_digest: Option<Digest>,
        #[serde(with = "bytes::vec")]
        receipt: Vec<u8>,
    },
    /// Top-up done.
    ToppedUp { summary: TopUpSummary },
    /// Ended without moving value, or declined by the customer.
    Ended,
}

/// What the customer is asked to confirm (ST15).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Confirmation {
    /// Card balance before the payment (the plain BI), minor units.
    pub balance_minor: u64,
    /// The bill amount.
    pub amount: Money,
    /// The selling store.
    pub store_id: StoreId,
    /// The mall, for a member store.
    pub mall_id: Option<MallId>,
    /// The order.
    pub order_id: OrderId,
}

/// What the wallet does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WalletAction {
    /// Send these APDUs to the card, in order, then call
    /// [`WalletSession::on_card`] with the responses.
    ToCard(Vec<Vec<u8>>),
    /// Show this and call [`WalletSession::confirm`] or
    /// [`WalletSession::decline`].
    Confirm(Confirmation),
    /// Paid: the verified completion (ACN).
    Paid(SettlementCompletion),
    /// Top-up done.
    ToppedUp(TopUpSummary),
    /// The host ended the session without moving value.
    Aborted(AbortReason),
}

/// One wallet session (purchase or top-up), as a serializable value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalletSession {
    card_id: CardId,
    purpose: Purpose,
    #[serde(with = "bytes::opt_array")]
    session_id: Option<[u8; 16]>,
    step: u16,
    #[serde(with = "bytes::opt_array")]
    last_digest: Option<Digest>,
    phase: Phase,
}

impl WalletSession {
    /// ST6: a bill arrives from the store. Verifies its FIRST SIGNATURE
    /// under the merchant keys the host publishes; the caller shows
    /// [`bill`](Self::bill) and, if the customer agrees, submits the bill
    /// bytes and card id to the host (ST8).
    pub fn purchase(
        cfg: &WalletConfig,
        bill_bytes: &[u8],
        card_id: CardId,
        now_ms: u64,
    ) -> Result<Self, FlowError> {
        let v = verify_artefact::<Bill>(bill_bytes, |r| cfg.merchant_keys.resolve(r))?;
        if now_ms >= v.payload().expires_at_ms {
            return Err(FlowError::BillExpired);
        }
        if v.payload().amount.amount_minor <= 0 {
            return Err(FlowError::InvalidAmount);
        }
        Ok(Self::new(
            card_id,
            Purpose::Purchase {
                bill_digest: v.digest(),
                bill: v.into_payload(),
            },
        ))
    }

    /// A top-up of `amount` for `card_id`.
    pub fn top_up(card_id: CardId, amount: Money) -> Result<Self, FlowError> {
        if amount.amount_minor <= 0 {
            return Err(FlowError::InvalidAmount);
        }
        Ok(Self::new(
            card_id,
            Purpose::TopUp {
                amount,
                authorization_ref: None,
            },
        ))
    }

    fn new(card_id: CardId, purpose: Purpose) -> Self {
        Self {
            card_id,
            purpose,
            session_id: None,
            step: 0,
            last_digest: None,
            phase: Phase::AwaitHost,
        }
    }

    /// The bill shown to the customer (purchases).
    pub fn bill(&self) -> Option<&Bill> {
        match &self.purpose {
            Purpose::Purchase { bill, .. } => Some(bill),
            Purpose::TopUp { .. } => None,
        }
    }

    /// The verified completion's COSE bytes, once paid.
    pub fn completion(&self) -> Option<&[u8]> {
        match &self.phase {
            Phase::Completed { completion, .. } => Some(completion),
            _ => None,
        }
    }

    /// The kept receipt (SIG4) bytes, once received.
    pub fn receipt(&self) -> Option<&[u8]> {
        match &self.phase {
            Phase::Completed {
                receipt,
                receipt_digest: Some(_),
                ..
            } => Some(receipt),
            _ => None,
        }
    }

    fn with(&self, phase: Phase) -> Self {
        Self {
            phase,
            ..self.clone()
        }
    }

    /// Checks session and step of a host message: the first message fixes
    /// the session; each next one must be the next step.
    fn sequence(&self, session_id: [u8; 16], step: u16) -> Result<(), FlowError> {
        if self.session_id.is_some_and(|s| s != session_id) || step != self.step + 1 {
            return Err(FlowError::OutOfSequence);
        }
        Ok(())
    }

    /// Handles a message from the host.
    pub fn on_host(
        &self,
        cfg: &WalletConfig,
        msg: &HostToWallet,
        now_ms: u64,
    ) -> Result<(Self, WalletAction), FlowError> {
        if !matches!(self.phase, Phase::AwaitHost) {
            return Err(FlowError::UnexpectedMessage(
                "wallet is not waiting for the host",
            ));
        }
        match msg {
            HostToWallet::CardExchange {
                session_id,
                step,
                apdus,
            } => {
                self.sequence(*session_id, *step)?;
                if apdus.is_empty() || !apdus.iter().all(|a| is_handshake_command(a)) {
                    return Err(FlowError::CommandNotAllowed);
                }
                let next = Self {
                    session_id: Some(*session_id),
                    step: *step,
                    phase: Phase::AwaitCard {
                        expected: apdus.len(),
                    },
                    ..self.clone()
                };
                Ok((next, WalletAction::ToCard(apdus.clone())))
            }
            HostToWallet::Settlement {
                session_id,
                step,
                info,
            } => {
                self.sequence(*session_id, *step)?;
                let Purpose::Purchase { bill, bill_digest } = &self.purpose else {
                    return Err(FlowError::UnexpectedMessage(
                        "settlement information in a top-up",
                    ));
                };
                let payload = self.open_info(cfg, info)?;
                self.check_instruction(
                    &payload.session_id,
                    payload.step,
                    &payload.card_id,
                    payload.previous_digest,
                    payload.expires_at_ms,
                    *session_id,
                    *step,
                    now_ms,
                )?;
                if payload.bill_digest != *bill_digest {
                    return Err(FlowError::BindingMismatch(
                        "settlement information names another bill",
                    ));
                }
                if payload.amount != bill.amount {
                    return Err(FlowError::AmountMismatch);
                }
                let advanced = Self {
                    session_id: Some(*session_id),
                    step: *step,
                    last_digest: Some(info.digest()),
                    ..self.clone()
                };
                match payload.stage {
                    Stage::BalanceReadout | Stage::LogReadout => Ok((
                        advanced.with(Phase::AwaitCard { expected: 1 }),
                        WalletAction::ToCard(vec![payload.command]),
                    )),
                    Stage::Debit => {
                        let balance_minor = payload
                            .balance_minor
                            .ok_or(FlowError::Malformed("SPC without balance"))?;
                        let prompt = Confirmation {
                            balance_minor,
                            amount: bill.amount,
                            store_id: bill.store_id.clone(),
                            mall_id: bill.mall_id.clone(),
                            order_id: bill.order_id.clone(),
                        };
                        Ok((
                            advanced.with(Phase::AwaitConfirmation {
                                spc: payload.command,
                                balance_minor,
                            }),
                            WalletAction::Confirm(prompt),
                        ))
                    }
                    Stage::Credit => Err(FlowError::UnexpectedMessage("credit in a purchase")),
                }
            }
            HostToWallet::ValueUpdate {
                session_id,
                step,
                cose,
            } => {
                self.sequence(*session_id, *step)?;
                let Purpose::TopUp {
                    amount,
                    authorization_ref,
                } = &self.purpose
                else {
                    return Err(FlowError::UnexpectedMessage("value update in a purchase"));
                };
                let v = verify_artefact::<ValueUpdate>(cose, |r| cfg.host_keys.resolve(r))?;
                let vu = v.payload();
                self.check_instruction(
                    &vu.session_id,
                    vu.step,
                    &vu.card_id,
                    vu.previous_digest,
                    vu.expires_at_ms,
                    *session_id,
                    *step,
                    now_ms,
                )?;
                if vu.amount != *amount {
                    return Err(FlowError::AmountMismatch);
                }
                if authorization_ref.is_some_and(|a| a != vu.authorization_ref) {
                    return Err(FlowError::BindingMismatch(
                        "value update names another authorization",
                    ));
                }
                if vu.stage == Stage::Debit {
                    return Err(FlowError::UnexpectedMessage("debit in a top-up"));
                }
                let next = Self {
                    session_id: Some(*session_id),
                    step: *step,
                    last_digest: Some(v.digest()),
                    purpose: Purpose::TopUp {
                        amount: *amount,
                        authorization_ref: Some(vu.authorization_ref),
                    },
                    phase: Phase::AwaitCard { expected: 1 },
                    ..self.clone()
                };
                Ok((next, WalletAction::ToCard(vec![vu.command.clone()])))
            }
            HostToWallet::Completion { session_id, acn } => {
                if self.session_id != Some(*session_id) {
                    return Err(FlowError::OutOfSequence);
                }
                let Purpose::Purchase { bill, bill_digest } = &self.purpose else {
                    return Err(FlowError::UnexpectedMessage("completion in a top-up"));
                };
                let v = verify_artefact::<SettlementCompletion>(acn, |r| cfg.host_keys.resolve(r))?;
                let c = v.payload();
                if c.bill_digest != *bill_digest || c.card_id != self.card_id {
                    return Err(FlowError::BindingMismatch(
                        "completion names another bill or card",
                    ));
                }
                if c.amount != bill.amount {
                    return Err(FlowError::AmountMismatch);
                }
                // A completion of this session binds the settlement
                // information that carried the SPC we relayed; a recovered
                // one binds an earlier session's.
                if !c.recovered && Some(c.settlement_info_digest) != self.last_digest {
                    return Err(FlowError::BindingMismatch(
                        "completion names other settlement information",
                    ));
                }
                let next = self.with(Phase::Completed {
                    completion: acn.clone(),
                    receipt_digest: None,
                    receipt: Vec::new(),
                });
                Ok((next, WalletAction::Paid(c.clone())))
            }
            HostToWallet::TopUpCompleted {
                session_id,
                summary,
            } => {
                if self.session_id != Some(*session_id) {
                    return Err(FlowError::OutOfSequence);
                }
                let Purpose::TopUp { amount, .. } = &self.purpose else {
                    return Err(FlowError::UnexpectedMessage("top-up result in a purchase"));
                };
                if summary.amount != *amount {
                    return Err(FlowError::AmountMismatch);
                }
                Ok((
                    self.with(Phase::ToppedUp {
                        summary: summary.clone(),
                    }),
                    WalletAction::ToppedUp(summary.clone()),
                ))
            }
            HostToWallet::Aborted { session_id, reason } => {
                if self.session_id != Some(*session_id) {
                    return Err(FlowError::OutOfSequence);
                }
                Ok((self.with(Phase::Ended), WalletAction::Aborted(*reason)))
            }
        }
    }

    fn open_info(
        &self,
        cfg: &WalletConfig,
        info: &InfoEnvelope,
    ) -> Result<SettlementInformation, FlowError> {
        match info {
            InfoEnvelope::Signed(b) => {
                Ok(
                    verify_artefact::<SettlementInformation>(b, |r| cfg.host_keys.resolve(r))?
                        .into_payload(),
                )
            }
            InfoEnvelope::Unsigned(b) => match cfg.sig2 {
                Sig2Mode::Signed => Err(FlowError::UnsignedSettlementInformation),
                Sig2Mode::Omitted => decode_unsigned(b),
            },
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn check_instruction(
        &self,
        inner_session: &[u8; 16],
        inner_step: u16,
        card_id: &CardId,
        previous_digest: Option<Digest>,
        expires_at_ms: u64,
        session_id: [u8; 16],
        step: u16,
        now_ms: u64,
    ) -> Result<(), FlowError> {
        if *inner_session != session_id || inner_step != step {
            return Err(FlowError::OutOfSequence);
        }
        if *card_id != self.card_id {
            return Err(FlowError::CardMismatch);
        }
        if previous_digest != self.last_digest {
            return Err(FlowError::BindingMismatch(
                "instruction does not chain to the previous one",
            ));
        }
        if now_ms > expires_at_ms {
            return Err(FlowError::SessionTimedOut);
        }
        Ok(())
    }

    /// ST16: the customer agreed; returns the SPC for the card.
    pub fn confirm(&self) -> Result<(Self, WalletAction), FlowError> {
        let Phase::AwaitConfirmation { spc, .. } = &self.phase else {
            return Err(FlowError::UnexpectedMessage("nothing to confirm"));
        };
        Ok((
            self.with(Phase::AwaitCard { expected: 1 }),
            WalletAction::ToCard(vec![spc.clone()]),
        ))
    }

    /// The customer declined: the SPC is dropped, nothing reaches the card.
    pub fn decline(&self) -> Result<Self, FlowError> {
        if !matches!(self.phase, Phase::AwaitConfirmation { .. }) {
            return Err(FlowError::UnexpectedMessage("nothing to decline"));
        }
        Ok(self.with(Phase::Ended))
    }

    /// The card's responses to the last [`WalletAction::ToCard`]; returns
    /// the message for the host.
    pub fn on_card(&self, responses: Vec<Vec<u8>>) -> Result<(Self, CardResponses), FlowError> {
        let Phase::AwaitCard { expected } = self.phase else {
            if matches!(self.phase, Phase::AwaitConfirmation { .. }) {
                return Err(FlowError::NotConfirmed);
            }
            return Err(FlowError::UnexpectedMessage(
                "no commands were sent to the card",
            ));
        };
        if responses.len() != expected {
            return Err(FlowError::CardResponse("wrong number of responses"));
        }
        let session_id = self
            .session_id
            .ok_or(FlowError::UnexpectedMessage("no session"))?;
        Ok((
            self.with(Phase::AwaitHost),
            CardResponses {
                session_id,
                step: self.step,
                responses,
            },
        ))
    }

    /// ST112 / claim 6: the store's receipt (SIG4), verified under the
    /// merchant's published key and bound to the completion; kept.
    pub fn on_receipt(
        &self,
        cfg: &WalletConfig,
        receipt: &[u8],
    ) -> Result<(Self, ReceiptVerified), FlowError> {
        let Phase::Completed { completion, .. } = &self.phase else {
            return Err(FlowError::UnexpectedMessage("no completion yet"));
        };
        let v = check_receipt(receipt, completion, &cfg.merchant_keys)?;
        let next = self.with(Phase::Completed {
            completion: completion.clone(),
            receipt_digest: Some(sha256(&[receipt])),
            receipt: receipt.to_vec(),
        });
        Ok((next, v))
    }
}
