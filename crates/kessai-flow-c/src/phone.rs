//! The customer's phone (携帯端末 2, figures 6 and 7): shows the host's
//! approval request, signs the cardholder's approve / reject with its
//! registered device key, and relays between host and reader.
//!
//! The phone never sees card data or the PIN: the reader seals them to the
//! transaction key before they leave it, and the PIN is typed on the
//! reader's own keypad. The phone verifies the host's signature on what it
//! shows and forwards, so it does not display or pass on forgeries.

use kessai_ids::DeviceId;

use crate::FlowError;
use crate::artefacts::{
    ApprovalRequest, ApprovalResponse, Decision, Outcome, PhoneCompletion, PinPrompt, Signer,
    TransactionKey, TrustedKeys,
};
use crate::ids::{ArtefactDigest, TxnId};

/// An approval prompt on screen.
#[derive(Debug, Clone)]
struct Pending {
    request: ApprovalRequest,
    digest: ArtefactDigest,
    shown_at_ms: u64,
}

/// The phone emulator.
#[derive(Debug)]
pub struct Phone {
    device_id: DeviceId,
    key: Signer,
    issuer: TrustedKeys,
    /// S32: no key press within this long → reject (S46).
    answer_timeout_ms: u64,
    display: Vec<String>,
    pending: Option<Pending>,
    current: Option<TxnId>,
}

impl Phone {
    /// A phone registered as `device_id` with device key `key`, trusting
    /// `issuer` keys.
    pub fn new(
        device_id: DeviceId,
        key: Signer,
        issuer: TrustedKeys,
        answer_timeout_ms: u64,
    ) -> Self {
        Self {
            device_id,
            key,
            issuer,
            answer_timeout_ms,
            display: Vec::new(),
            pending: None,
            current: None,
        }
    }

    /// The phone's id.
    pub fn device_id(&self) -> &DeviceId {
        &self.device_id
    }

    /// Everything the screen has shown, oldest first.
    pub fn display(&self) -> &[String] {
        &self.display
    }

    /// S31: an approval request from the host. Verified (issuer signature,
    /// addressed to this phone), then shown with amount and merchant name.
    pub fn receive_approval_request(
        &mut self,
        bytes: &[u8],
        now_ms: u64,
    ) -> Result<ApprovalRequest, FlowError> {
        let (request, digest) = self
            .issuer
            .verify::<ApprovalRequest>(bytes, "approval request")?;
        if request.device_id != self.device_id {
            return Err(FlowError::WrongPhone);
        }
        self.display.push(format!(
            "{} asks {} (order {}). Approve?",
            request.merchant_name, request.amount, request.order_ref
        ));
        self.pending = Some(Pending {
            request: request.clone(),
            digest,
            shown_at_ms: now_ms,
        });
        Ok(request)
    }

    /// S32–S33 / S46: the cardholder's key press, signed with the device key.
    pub fn answer(&mut self, decision: Decision) -> Result<Vec<u8>, FlowError> {
        let pending = self.pending.as_ref().ok_or(FlowError::NoPendingApproval)?;
        let response = ApprovalResponse {
            txn_id: pending.request.txn_id,
            device_id: self.device_id.clone(),
            decision,
            approval_request: pending.digest,
        };
        let bytes = self.key.sign(&response)?;
        self.current = Some(pending.request.txn_id);
        self.pending = None;
        self.display.push(match decision {
            Decision::Approve => "Approved: follow the card reader".to_owned(),
            Decision::Reject => "Rejected".to_owned(),
        });
        Ok(bytes)
    }

    /// S32 (no key press in time) → S46: the signed rejection to send, once
    /// the prompt has been on screen for the answer timeout.
    pub fn on_timeout(&mut self, now_ms: u64) -> Result<Option<Vec<u8>>, FlowError> {
        match &self.pending {
            Some(p) if now_ms >= p.shown_at_ms.saturating_add(self.answer_timeout_ms) => {
                self.answer(Decision::Reject).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// S34: the transaction key for the reader. Checked (issuer signature,
    /// the transaction this phone approved) and passed on unchanged.
    pub fn relay_transaction_key(&mut self, bytes: &[u8]) -> Result<Vec<u8>, FlowError> {
        let (key, _) = self
            .issuer
            .verify::<TransactionKey>(bytes, "transaction key")?;
        self.expect_current(key.txn_id)?;
        self.display
            .push("Insert your card into the reader".to_owned());
        Ok(bytes.to_vec())
    }

    /// S37 / S42: sealed card data or PIN block from the reader, passed to
    /// the host unchanged (the phone cannot open it).
    pub fn relay_to_host(&self, sealed: &[u8]) -> Vec<u8> {
        sealed.to_vec()
    }

    /// S39: the PIN prompt for the reader. The phone tells the cardholder
    /// to use the reader's keypad; it never asks for the PIN itself.
    pub fn relay_pin_prompt(&mut self, bytes: &[u8]) -> Result<Vec<u8>, FlowError> {
        let (prompt, _) = self.issuer.verify::<PinPrompt>(bytes, "PIN prompt")?;
        self.expect_current(prompt.txn_id)?;
        self.display
            .push("Enter your PIN on the card reader".to_owned());
        Ok(bytes.to_vec())
    }

    /// S38 / S44: the completion or decline notice: shown, and returned for
    /// the reader (which then discards its key).
    pub fn receive_completion(&mut self, bytes: &[u8]) -> Result<Outcome, FlowError> {
        let (done, _) = self.issuer.verify::<PhoneCompletion>(bytes, "completion")?;
        let ours = self.current == Some(done.txn_id)
            || self.pending.as_ref().map(|p| p.request.txn_id) == Some(done.txn_id);
        if !ours {
            return Err(FlowError::WrongTransaction);
        }
        self.display.push(match &done.outcome {
            Outcome::Settled { .. } => format!("Paid {} to {}", done.amount, done.merchant_name),
            Outcome::Declined { reason } => format!("Payment declined ({reason:?})"),
        });
        self.pending = None;
        self.current = None;
        Ok(done.outcome)
    }

    fn expect_current(&self, txn_id: TxnId) -> Result<(), FlowError> {
        if self.current != Some(txn_id) {
            return Err(FlowError::WrongTransaction);
        }
        Ok(())
    }
}
