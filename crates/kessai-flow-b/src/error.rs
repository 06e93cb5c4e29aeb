//! The crate's error enum. Messages never carry keys, PINs, card numbers
//! or payload contents.

use kessai_crypto::CoseError;
use kessai_scp03::Scp03Error;

use crate::registry::MerchantStatus;

/// Why a flow-B step refused its input. A refused step changes nothing:
/// no state advances and no effect is produced (the one exception, a wrong
/// PIN, is reported by [`crate::funding::FundingDecision::Declined`] with
/// its try-counter effect).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FlowError {
    /// A signature, type, version or key check of a COSE artefact failed
    /// (tampered, signed by an unregistered key, wrong artefact type ...).
    #[error(transparent)]
    Cose(#[from] CoseError),
    /// The bill names a store the issuer does not know, or the merchant
    /// rows passed in are not the bill's.
    #[error("bill names another store than the registered one")]
    StoreMismatch,
    /// The bill names a mall the store is not a member of.
    #[error("store is not a member of the mall named in the bill")]
    NotMallMember,
    /// The store or mall may not take payments.
    #[error("merchant is {0:?}")]
    MerchantNotActive(MerchantStatus),
    /// The bill has expired.
    #[error("bill has expired")]
    BillExpired,
    /// The bill amount is not positive.
    #[error("bill amount must be positive")]
    InvalidAmount,
    /// The bill was already paid.
    #[error("bill already settled")]
    BillAlreadySettled,
    /// A debit for this bill is in flight on another card.
    #[error("bill is being settled")]
    BillInFlight,
    /// The card may not be used.
    #[error("card is blocked")]
    CardBlocked,
    /// Currencies of bill, card or top-up differ.
    #[error("currency mismatch")]
    CurrencyMismatch,
    /// The card answering is not the card of the session (key
    /// diversification data or card cryptogram).
    #[error("card does not match the session")]
    CardMismatch,
    /// A message for another session or another step (replayed,
    /// duplicated or reordered).
    #[error("message does not belong to this step of the session")]
    OutOfSequence,
    /// The message does not fit the current state.
    #[error("unexpected message: {0}")]
    UnexpectedMessage(&'static str),
    /// The session's deadline passed.
    #[error("session timed out")]
    SessionTimedOut,
    /// Secure channel failure: bad card cryptogram, bad R-MAC (a replayed
    /// PCN, a PCN from another card or session), closed session.
    #[error(transparent)]
    Scp03(#[from] Scp03Error),
    /// The card answered an error status word (or nothing: removed).
    #[error("card returned status {0:04X}")]
    CardStatus(u16),
    /// A card response has the wrong layout.
    #[error("unexpected card response: {0}")]
    CardResponse(&'static str),
    /// The PCN does not describe the operation that was sent.
    #[error("PCN does not match the settlement: {0}")]
    PcnMismatch(&'static str),
    /// The card's balance or counter disagree with the host's shadow and no
    /// pending operation explains it.
    #[error("card purse disagrees with the host's shadow")]
    ShadowMismatch,
    /// The card log no longer reaches back to the pending operation.
    #[error("card log does not cover the pending operation")]
    RecoveryUndecidable,
    /// Wallet: the amount the host asks for is not the bill's.
    #[error("amount differs from the bill")]
    AmountMismatch,
    /// Wallet / store: an artefact binds another bill, completion or
    /// session than the one at hand.
    #[error("artefact is bound to something else: {0}")]
    BindingMismatch(&'static str),
    /// Wallet: unsigned settlement information while the wallet requires
    /// the SECOND SIGNATURE.
    #[error("settlement information without the second signature")]
    UnsignedSettlementInformation,
    /// Wallet: the host asked to relay a command that is not a handshake
    /// command outside a signed instruction.
    #[error("command may not be relayed without a signed instruction")]
    CommandNotAllowed,
    /// Wallet: the customer has not confirmed (or declined).
    #[error("customer did not confirm")]
    NotConfirmed,
    /// The session already completed with another final message.
    #[error("session already completed")]
    AlreadyCompleted,
    /// Top-up: the funding PIN is locked after too many failures.
    #[error("PIN is locked")]
    PinLocked,
    /// Top-up: wrong PIN (or a PIN block that does not decipher).
    #[error("wrong PIN, {tries_left} tries left")]
    WrongPin {
        /// Tries left before lockout.
        tries_left: u8,
    },
    /// Top-up: card number or expiry do not match the funding account, or
    /// it has expired.
    #[error("funding card refused")]
    FundingCardRefused,
    /// Top-up: the amount exceeds the available credit.
    #[error("over credit limit")]
    OverCreditLimit,
    /// Bytes that do not decode.
    #[error("malformed input: {0}")]
    Malformed(&'static str),
    /// A value could not be encoded.
    #[error("encoding failed")]
    Encode,
}
