//! The crate's error enum.

use kessai_crypto::CoseError;

/// Why a flow C step refused its input.
///
/// An `Err` from any step means **nothing changed**: the host state is
/// as before, no effect was produced, no key was consumed, and the reader
/// and phone are in the state they were. Declines that the protocol
/// itself decides (cardholder rejected, unknown card, wrong PIN, timeout,
/// over the limit) are not errors: they are `Ok` transitions to
/// [`crate::host::HostState::Declined`] with their effects.
///
/// Messages name what failed, never a card number, PIN, key or payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FlowError {
    /// A COSE artefact failed to verify or open: wrong signer, bad
    /// signature, wrong type or version, tampered or foreign ciphertext.
    #[error("{what} refused: {source}")]
    Artefact {
        /// Which artefact.
        what: &'static str,
        /// The COSE-level reason.
        source: CoseError,
    },
    /// No merchant is registered for the request's key (S3 N → S9).
    #[error("unknown merchant")]
    UnknownMerchant,
    /// The merchant is registered but suspended (S3 N → S9).
    #[error("merchant is suspended")]
    MerchantSuspended,
    /// The request names a merchant other than the owner of its signing
    /// key.
    #[error("request names another merchant than its signer")]
    MerchantMismatch,
    /// The payment request's expiry has passed.
    #[error("payment request expired")]
    RequestExpired,
    /// The amount is zero or negative.
    #[error("amount must be positive")]
    AmountNotPositive,
    /// The amount's currency is not the merchant's settlement currency.
    #[error("currency is not the merchant's")]
    CurrencyMismatch,
    /// No phone is registered for the customer the request names.
    #[error("unknown customer phone or wallet")]
    UnknownCustomer,
    /// The merchant order reference is already used by a transaction with
    /// different content (amount, currency or customer).
    #[error("order reference already used with different content")]
    OrderReferenceConflict,
    /// A text field (merchant name, cardholder name, expiry) is malformed.
    #[error("malformed field: {0}")]
    MalformedField(&'static str),
    /// A transaction id is not 32 hex digits.
    #[error("invalid transaction id")]
    InvalidTxnId,
    /// The artefact belongs to another transaction.
    #[error("artefact belongs to another transaction")]
    WrongTransaction,
    /// An artefact's bound digest does not match the artefact it names.
    #[error("bound digest does not match: {0}")]
    DigestMismatch(&'static str),
    /// The step does not apply in the current state.
    #[error("not expected now: the transaction is {state}")]
    UnexpectedStep {
        /// The current state's name.
        state: &'static str,
    },
    /// The transaction has ended (settled or declined); its key and
    /// ciphertexts are destroyed and nothing more is accepted.
    #[error("transaction has ended")]
    TransactionEnded,
    /// The deadline of the current step has passed; the host's timeout
    /// handling ([`crate::host::HostTxn::on_timeout`]) declines the
    /// transaction.
    #[error("deadline has passed")]
    DeadlinePassed,
    /// The transaction key pair is gone (destroyed, or never stored).
    #[error("transaction key is destroyed")]
    TransactionKeyDestroyed,
    /// The approval response was signed by a key other than the
    /// customer's registered phone key.
    #[error("approval not signed by the customer's phone")]
    WrongPhone,
    /// The card record passed in is not the card of this transaction.
    #[error("card record does not belong to this transaction")]
    WrongCard,
    /// The card record passed in does not match the opened card data.
    #[error("card record does not match the card data")]
    CardRecordMismatch,
    /// A ledger outcome that does not belong to this transaction's
    /// transfer.
    #[error("ledger outcome for another transfer")]
    WrongTransfer,
    /// The reader has no transaction key loaded.
    #[error("reader has no transaction key")]
    NoTransactionKey,
    /// No card is in the reader.
    #[error("no card in the reader")]
    NoCard,
    /// The card has not been read in this transaction yet.
    #[error("card not read yet")]
    CardNotRead,
    /// Nothing was typed on the PIN pad.
    #[error("no PIN entered")]
    NoPinEntered,
    /// The PIN typed on the PIN pad is not 4 to 12 digits.
    #[error("PIN must be 4 to 12 digits")]
    PinFormat,
    /// The phone has no pending approval prompt.
    #[error("no approval prompt is pending")]
    NoPendingApproval,
    /// The completion does not answer a request this merchant sent.
    #[error("completion for an unknown order")]
    UnknownOrder,
    /// Encoding an artefact failed (a bug, never caused by input).
    #[error("artefact could not be encoded")]
    Encode,
}

impl FlowError {
    pub(crate) fn artefact(what: &'static str) -> impl FnOnce(CoseError) -> FlowError {
        move |source| FlowError::Artefact { what, source }
    }
}
