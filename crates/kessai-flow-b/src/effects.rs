//! Effects: every decision of the host that changes money, counters or
//! records, returned as a value for the caller to commit (in one database
//! transaction together with the new session state) before it sends the
//! reply. The pure flow never applies anything itself.

use kessai_ids::{AccountId, CardId, MallId, TransferId};
use kessai_ledger::TransferRequest;
use serde::{Deserialize, Serialize};

use crate::artefacts::{BillKey, Digest, EvidenceKind};
use crate::bytes;
use crate::card_apdu::CardLogEntry;
use crate::registry::{PendingCardOp, Shadow};

/// One thing the caller must commit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "effect")]
pub enum Effect {
    /// Submit this transfer to the ledger (hold, post, void). Its id is
    /// derived from the natural key, so a retry cannot post twice.
    Ledger(TransferRequest),
    /// Mark the bill reserved by this hold. The database refuses it (unique
    /// key) if the bill is already reserved or settled: then the whole
    /// transaction, and the reply carrying the SPC, must be dropped.
    ReserveBill {
        /// The bill.
        bill: BillKey,
        /// Digest of the bill's COSE bytes.
        #[serde(with = "bytes::array")]
        bill_digest: Digest,
        /// The hold.
        hold_id: TransferId,
    },
    /// The hold was voided (the card did not debit): the bill may be paid
    /// again.
    ReleaseBill {
        /// The bill.
        bill: BillKey,
        /// The voided hold.
        hold_id: TransferId,
    },
    /// The bill is paid (exactly once: unique key on the bill).
    MarkBillSettled {
        /// The bill.
        bill: BillKey,
        /// Digest of the bill's COSE bytes.
        #[serde(with = "bytes::array")]
        bill_digest: Digest,
        /// The posting transfer.
        transfer_id: TransferId,
    },
    /// Remember a card operation sent under a hold until its outcome is
    /// known (at most one per card).
    RecordPendingOp(PendingCardOp),
    /// The pending card operation is resolved (posted or voided).
    ClearPendingOp {
        /// The card.
        card_id: CardId,
        /// The hold that was resolved.
        hold_id: TransferId,
    },
    /// Set the host's shadow of the card's purse.
    UpdateShadow {
        /// The card.
        card_id: CardId,
        /// New shadow.
        shadow: Shadow,
    },
    /// Keep an artefact in the evidence/audit store.
    StoreEvidence {
        /// What it is.
        kind: EvidenceKind,
        /// SHA-256 of `bytes`.
        #[serde(with = "bytes::array")]
        digest: Digest,
        /// The exact bytes.
        #[serde(with = "bytes::vec")]
        bytes: Vec<u8>,
    },
    /// Upload the card's history to the information-management (audit)
    /// store.
    UploadCardLog {
        /// The card.
        card_id: CardId,
        /// Records, newest first.
        entries: Vec<CardLogEntry>,
    },
    /// Send this completion (SIG3) to the store: a settlement that was
    /// completed by recovery, not in the customer's session.
    DeliverCompletion {
        /// The bill.
        bill: BillKey,
        /// The mall, for a member store.
        mall_id: Option<MallId>,
        /// The COSE bytes.
        #[serde(with = "bytes::vec")]
        completion: Vec<u8>,
    },
    /// Persist the funding account's PIN try counter (survives restarts).
    RecordPinTry {
        /// The cardholder funding account.
        account: AccountId,
        /// Consecutive failed tries after this one (0 after a success).
        failed_tries: u8,
        /// True once the configured number of failures is reached.
        locked: bool,
    },
    /// The store's receipt (SIG4) was verified; keep it with the bill.
    RecordReceipt {
        /// The bill.
        bill: BillKey,
        /// Digest of the completion it acknowledges.
        #[serde(with = "bytes::array")]
        completion_digest: Digest,
        /// Digest of the receipt.
        #[serde(with = "bytes::array")]
        receipt_digest: Digest,
    },
}
