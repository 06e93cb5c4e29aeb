//! The crate's error enum.
//!
//! Messages name what failed, never key material, card numbers, enrolment
//! codes or template bytes: an error may be logged or mapped to an RFC 9457
//! problem at the HTTP edge (which may collapse the enrolment-code variants
//! into one answer so that customer numbers cannot be probed).

use kessai_crypto::{CoseError, CryptoError};
use kessai_ids::{AccountId, KeyRef};
use kessai_ledger::LedgerError;

/// Why the fingerprint reader could not produce a master reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReaderError {
    /// Nothing on the sensor.
    #[error("no finger on the sensor")]
    NoFinger,
    /// Captures too poor to use.
    #[error("capture too poor")]
    PoorCapture,
    /// The impressions do not all come from one finger.
    #[error("impressions do not match each other")]
    Inconsistent,
    /// The sensor is unreachable or failed.
    #[error("sensor unavailable")]
    Unavailable,
}

/// Everything that can go wrong in flow A. Every variant is a refusal that
/// changed nothing, except where the variant says otherwise (a wrong
/// enrolment code spends a try; a fingerprint mismatch counts towards the
/// lock).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FlowAError {
    // ----- artefacts and keys -----
    /// A COSE artefact failed to parse, verify or decrypt.
    #[error("artefact refused: {0}")]
    Cose(#[from] CoseError),
    /// A sealed-at-rest value on the device failed to open (wrong device
    /// key or corrupted state file).
    #[error("device storage refused: {0}")]
    AtRest(#[from] CryptoError),
    /// A message or field that is not what the protocol allows (the text is
    /// a fixed description, never input).
    #[error("malformed message: {0}")]
    Malformed(&'static str),
    /// The key named by an artefact is not one the host holds.
    #[error("unknown key {0}")]
    UnknownKey(KeyRef),
    /// The device used a transmission key that the host no longer honours:
    /// the grace period after a key update is over. The device must fetch
    /// and apply the key update, then retry.
    #[error("transmission key {used} is retired; update the device keys to {current} and retry")]
    TransmissionKeyRetired {
        /// The key the device used.
        used: KeyRef,
        /// The key to update to.
        current: KeyRef,
    },
    /// The card information or template is sealed under a storage key the
    /// host no longer honours. The device must apply the key update.
    #[error("storage key {used} is retired; update the device keys to {current} and retry")]
    StorageKeyRetired {
        /// The key the data is sealed under.
        used: KeyRef,
        /// The key to update to.
        current: KeyRef,
    },
    /// A new key version is not newer than the one it replaces.
    #[error("key version does not increase")]
    KeyNotNewer,

    // ----- device state -----
    /// The device is not registered yet.
    #[error("device is not registered")]
    NotRegistered,
    /// The device (or the host's record of it) is already registered.
    #[error("device is already registered")]
    AlreadyRegistered,
    /// The device is in a state where this step cannot happen.
    #[error("step not allowed in this state: {0}")]
    WrongState(&'static str),
    /// An artefact addressed to another device.
    #[error("artefact is for another device")]
    WrongDevice,
    /// An artefact not signed by the issuer the device trusts.
    #[error("not signed by the issuer")]
    NotFromIssuer,

    // ----- fingerprint -----
    /// The fingerprint did not match; the device is still unlocked.
    #[error("fingerprint does not match; {attempts_left} attempts left")]
    NoMatch {
        /// Attempts left before the device locks.
        attempts_left: u8,
    },
    /// The device is locked after too many mismatches; only an unlock
    /// signed by the issuer lifts it. (Also returned by the attempt that
    /// locks it.)
    #[error("device locked; ask the issuer to unlock (lock {lock_seq})")]
    DeviceLocked {
        /// Which lock this is, to be quoted in the unlock request.
        lock_seq: u32,
    },
    /// The sensor captured nothing usable; the attempt does not count.
    #[error("no usable capture; try again")]
    CaptureFailed,
    /// The master fingerprint could not be read.
    #[error("master fingerprint not read: {0}")]
    Reader(ReaderError),
    /// A template that is not an ISO/IEC 19794-2 record of acceptable size.
    #[error("template is not an ISO/IEC 19794-2 record")]
    BadTemplate,

    // ----- registration -----
    /// The enrolment code is not well-formed (10 digits).
    #[error("enrolment code must be 10 digits")]
    EnrolmentCodeFormat,
    /// No enrolment code was issued for this customer number.
    #[error("no enrolment code for this customer")]
    UnknownCustomer,
    /// The enrolment code is wrong; one try was spent.
    #[error("enrolment code is wrong; {tries_left} tries left")]
    EnrolmentCodeWrong {
        /// Tries left on this code.
        tries_left: u8,
    },
    /// The enrolment code was already used to register a device.
    #[error("enrolment code already used")]
    EnrolmentCodeUsed,
    /// The enrolment code has no tries left; the issuer must issue a new one.
    #[error("enrolment code has no tries left")]
    EnrolmentCodeExhausted,
    /// The enrolment code has expired.
    #[error("enrolment code expired")]
    EnrolmentCodeExpired,
    /// The registration session has expired; start again.
    #[error("registration session expired")]
    SessionExpired,
    /// Nonces, device id or session do not match the registration in
    /// progress.
    #[error("registration does not match the session in progress")]
    SessionMismatch,
    /// A key registration without a registration permission issued for it.
    #[error("no registration permission for this device")]
    NoRegistrationPermission,
    /// The proof that the registering device is the one that identified
    /// the customer (the binding MAC) is wrong.
    #[error("key registration is not bound to the identified device")]
    BindingMismatch,
    /// The card information given to the host is not the customer's.
    #[error("card does not belong to the identified customer")]
    CardNotForCustomer,

    // ----- transactions -----
    /// A transaction signed by a key that is not the device's registered
    /// personal key.
    #[error("not signed by the registered device key")]
    UnregisteredDeviceKey,
    /// The device record is not active (revoked or awaiting re-enrolment).
    #[error("device is not active")]
    DeviceNotActive,
    /// The device counter is not above the last one seen: a replay.
    #[error("replayed transaction: counter {counter} is not above {last_seen}")]
    Replay {
        /// The counter in the transaction.
        counter: u64,
        /// The last counter the host accepted.
        last_seen: u64,
    },
    /// The order's digest, the card binding or an inner field does not
    /// match the signed envelope.
    #[error("transaction content does not match its envelope")]
    ContentMismatch,
    /// The order is not signed by a registered merchant key of its store.
    #[error("order not signed by the store it names")]
    OrderSignerMismatch,
    /// The order has expired.
    #[error("order expired")]
    OrderExpired,
    /// The amount the customer approved differs from the merchant's order.
    #[error("approved amount differs from the order amount")]
    AmountMismatch,
    /// The order amount is not positive.
    #[error("order amount must be positive")]
    AmountNotPositive,
    /// The order's currency is not the funding account's.
    #[error("currency differs from the funding account's")]
    CurrencyMismatch,
    /// The card has expired.
    #[error("card expired")]
    CardExpired,
    /// The sealed card information belongs to another device or customer.
    #[error("card information is not this device's")]
    CardNotForDevice,
    /// The funding account given is not the device's.
    #[error("funding account is not the device's")]
    FundingAccountMismatch,
    /// Authorization refused: the payment would exceed the funding
    /// account's limit.
    #[error("over the limit of account {account}")]
    OverLimit {
        /// The funding account.
        account: AccountId,
    },
    /// The settlement transfer could not be built.
    #[error("ledger refused: {0}")]
    Ledger(#[from] LedgerError),
    /// A result that does not answer the transaction the device sent.
    #[error("result does not answer the last transaction")]
    ResultMismatch,

    // ----- key update and unlock -----
    /// A key update confirmation without a matching key update issued.
    #[error("no key update pending for this device")]
    NoPendingKeyUpdate,
    /// The device already has the host's current keys.
    #[error("device keys are current")]
    KeysCurrent,
    /// An unlock artefact for another lock (an old one, or the device is
    /// not locked).
    #[error("unlock does not match the current lock")]
    UnlockMismatch,

    // ----- retention -----
    /// A retention period or time computation overflowed.
    #[error("time arithmetic overflow")]
    TimeOverflow,
}

impl From<ReaderError> for FlowAError {
    fn from(e: ReaderError) -> Self {
        Self::Reader(e)
    }
}
