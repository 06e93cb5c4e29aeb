//! The crate's error enum.
//!
//! Messages name what failed and never carry card numbers, PINs, passwords,
//! keys or cryptograms: an error may be logged or mapped to an RFC 9457
//! problem at the HTTP edge.

use kessai_ids::{CardId, StoreId, TerminalId};

/// Why a flow-D step was refused. Every variant is a stable, typed reason;
/// on any of them nothing settles (the effects that *do* accompany some
/// refusals — a PIN try, a guess failure — are listed with each variant).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FlowDError {
    // ---- authorization (claims 1, 5, 6) -----------------------------------
    /// The host challenge is unknown (never issued, or purged).
    #[error("unknown host challenge")]
    UnknownChallenge,
    /// The host challenge was already used by an earlier authorization.
    #[error("host challenge already used")]
    ChallengeUsed,
    /// The host challenge is past its lifetime.
    #[error("host challenge expired")]
    ChallengeExpired,
    /// No card with this id is registered.
    #[error("unknown card {0}")]
    UnknownCard(CardId),
    /// The card is blocked at the host (or its verification tries are used up).
    #[error("card {0} is blocked")]
    CardBlocked(CardId),
    /// The card's expiry (from the settlement information) has passed, or
    /// does not match the host's record.
    #[error("card expired or expiry mismatch")]
    CardExpired,
    /// The card cryptogram does not verify under the card's key.
    #[error("card cryptogram does not verify")]
    BadCryptogram,
    /// The card counter is not strictly greater than the last one seen
    /// (replayed cryptogram or counter).
    #[error("card counter {got} is not above the last seen {last}")]
    CounterReplay {
        /// Counter in the request.
        got: u32,
        /// Highest counter the host has accepted for this card.
        last: u32,
    },
    /// The sealed cardholder payload does not open, or names another card.
    #[error("sealed cardholder data does not open or does not match the card")]
    BadSealedData,
    /// The card number in the settlement information is not the registered one.
    #[error("settlement information does not match the registered card")]
    SettlementMismatch,
    /// The cardholder verification method asked for is not set up for this
    /// card, or the card's CVM result does not match it.
    #[error("cardholder verification method not available or inconsistent")]
    CvmNotAvailable,
    /// Wrong PIN or secret. Effect: one verification try consumed.
    #[error("cardholder verification failed, {tries_left} tries left")]
    WrongPin {
        /// Tries left after this one.
        tries_left: u8,
    },
    /// Verification tries are used up; the card is locked for flow D.
    /// Effect (on the try that reached zero): the card is blocked.
    #[error("cardholder verification locked")]
    PinLocked,
    /// The amount or cap is not positive, or above the host's ceiling.
    #[error("amount is not acceptable")]
    BadAmount,
    /// The amount's currency differs from the card's or the account's.
    #[error("currency mismatch")]
    CurrencyMismatch,

    // ---- redemption (claims 1, 4, 6, 15) ----------------------------------
    /// The typed password is not 12 decimal digits.
    #[error("password must be 12 decimal digits")]
    PasswordFormat,
    /// No live password matches. Effect: one guess failure on the terminal.
    #[error("unknown password")]
    UnknownPassword,
    /// The password's validity window has passed.
    #[error("password expired")]
    PasswordExpired,
    /// The password already settled a sale (or a concurrent redemption won).
    #[error("password already used")]
    PasswordUsed,
    /// The QR code's card data (cryptogram, counter) belongs to another
    /// card than the password. Effect: one guess failure on the terminal.
    #[error("password belongs to another card")]
    PasswordOfAnotherCard,
    /// The sale amount is above the password's cap.
    #[error("amount above the password's cap")]
    AboveCap,
    /// The terminal is not registered.
    #[error("unknown terminal {0}")]
    UnknownTerminal(TerminalId),
    /// The terminal reached its guess limit in the current window.
    #[error("terminal {0} is locked after too many wrong passwords")]
    TerminalLocked(TerminalId),
    /// The merchant is unknown or not active.
    #[error("merchant {0} is not registered or not active")]
    UnknownMerchant(StoreId),
    /// The merchant IC card is not registered to an active merchant.
    #[error("merchant card {0} is not registered to an active merchant")]
    UnknownMerchantCard(CardId),
    /// The goods do not add up to the amount, or are malformed.
    #[error("goods do not match the amount")]
    GoodsMismatch,

    // ---- QR (EMVCo consumer-presented mode) -------------------------------
    /// The QR payload is not valid base64, BER-TLV, or the kessai profile.
    #[error("malformed QR payload: {0}")]
    MalformedQr(&'static str),
    /// The data is too long for a QR code.
    #[error("payload too long for a QR code")]
    QrTooLong,

    // ---- short-range link (claims 3, 11–14) -------------------------------
    /// A link frame is malformed, fails authentication, or is out of order.
    #[error("bad link frame: {0}")]
    BadFrame(&'static str),
    /// The link is closed (the peer went away).
    #[error("link closed")]
    LinkClosed,
    /// A message arrived for a session that does not exist or belongs to
    /// another connection.
    #[error("unknown session")]
    UnknownSession,
    /// A message that the session's current state does not expect.
    #[error("unexpected message in state {0}")]
    UnexpectedMessage(&'static str),
    /// The POS's basket does not match the goods and sum the phone sent.
    #[error("basket does not match")]
    BasketMismatch,

    // ---- in-phone check (claim 10) and artefacts --------------------------
    /// The card data does not match the issuer-signed card profile.
    #[error("card profile check failed: {0}")]
    ProfileMismatch(&'static str),
    /// A signed or sealed artefact did not verify.
    #[error("artefact does not verify: {0}")]
    Artefact(#[from] kessai_crypto::CoseError),
    /// The ledger refused the settlement (everything rolled back).
    #[error("ledger refused: {0}")]
    Ledger(kessai_ledger::LedgerError),
    /// The card answered an error status word or a malformed response.
    #[error("card error: {0}")]
    Card(&'static str),
    /// The card answered this status word.
    #[error("card returned status {0:04X}")]
    CardStatus(u16),
    /// A message could not be encoded or decoded.
    #[error("encoding error: {0}")]
    Encoding(&'static str),
}
