//! Messages between host and wallet (the wallet relays card APDUs). They are
//! serde values so the HTTP edge can carry them as JSON (byte strings as
//! hex; COSE artefacts inside are opaque bytes).

use kessai_ids::TransferId;
use kessai_money::Money;
use serde::{Deserialize, Serialize};

use crate::artefacts::{Digest, InfoEnvelope};
use crate::bytes;
use kessai_crypto::digest::sha256;

/// Host → wallet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum HostToWallet {
    /// SCP03 handshake commands to relay in order (SELECT + INITIALIZE
    /// UPDATE, then EXTERNAL AUTHENTICATE).
    CardExchange {
        /// The host session.
        #[serde(with = "bytes::array")]
        session_id: [u8; 16],
        /// Step number; the wallet answers with the same.
        step: u16,
        /// Command APDUs.
        #[serde(with = "bytes::vecs")]
        apdus: Vec<Vec<u8>>,
    },
    /// SETTLEMENT INFORMATION (purchase), SECOND SIGNATURE or unsigned.
    Settlement {
        /// The host session.
        #[serde(with = "bytes::array")]
        session_id: [u8; 16],
        /// Step number.
        step: u16,
        /// The artefact.
        info: InfoEnvelope,
    },
    /// VALUE UPDATE (top-up) with the FIFTH SIGNATURE.
    ValueUpdate {
        /// The host session.
        #[serde(with = "bytes::array")]
        session_id: [u8; 16],
        /// Step number.
        step: u16,
        /// COSE_Sign1 bytes.
        #[serde(with = "bytes::vec")]
        cose: Vec<u8>,
    },
    /// SETTLEMENT COMPLETION (ACN) with the THIRD SIGNATURE.
    Completion {
        /// The host session.
        #[serde(with = "bytes::array")]
        session_id: [u8; 16],
        /// COSE_Sign1 bytes.
        #[serde(with = "bytes::vec")]
        acn: Vec<u8>,
    },
    /// The top-up is done.
    TopUpCompleted {
        /// The host session.
        #[serde(with = "bytes::array")]
        session_id: [u8; 16],
        /// Summary.
        summary: TopUpSummary,
    },
    /// The session ended without moving value (after any recovery it
    /// performed).
    Aborted {
        /// The host session.
        #[serde(with = "bytes::array")]
        session_id: [u8; 16],
        /// Why.
        reason: AbortReason,
    },
}

impl HostToWallet {
    /// The session the message belongs to.
    pub fn session_id(&self) -> [u8; 16] {
        match self {
            Self::CardExchange { session_id, .. }
            | Self::Settlement { session_id, .. }
            | Self::ValueUpdate { session_id, .. }
            | Self::Completion { session_id, .. }
            | Self::TopUpCompleted { session_id, .. }
            | Self::Aborted { session_id, .. } => *session_id,
        }
    }
}

/// Why a session ended without moving value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AbortReason {
    /// The card balance is below the bill amount.
    InsufficientBalance,
    /// The top-up would exceed the purse maximum.
    PurseFull,
}

/// What the host tells the wallet at the end of a top-up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopUpSummary {
    /// The amount loaded.
    pub amount: Money,
    /// Card balance after, minor units.
    pub balance_minor: u64,
    /// Card counter after.
    pub counter: u32,
    /// The posting transfer.
    pub transfer_id: TransferId,
}

/// Wallet → host: the card's responses to one step, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardResponses {
    /// The host session.
    #[serde(with = "bytes::array")]
    pub session_id: [u8; 16],
    /// The step answered.
    pub step: u16,
    /// Response APDUs (data ‖ SW), one per command.
    #[serde(with = "bytes::vecs")]
    pub responses: Vec<Vec<u8>>,
}

impl CardResponses {
    /// SHA-256 over the responses, length-framed: identifies a duplicate.
    pub fn digest(&self) -> Digest {
        let mut parts: Vec<Vec<u8>> =
            vec![self.session_id.to_vec(), self.step.to_be_bytes().to_vec()];
        for r in &self.responses {
            parts.push((r.len() as u64).to_be_bytes().to_vec());
            parts.push(r.clone());
        }
        let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        sha256(&refs)
    }
}
