//! The host's credit authorizer for value updates (seed 001, "electronic
//! money payment system" (5)): the issuer's own cardholder credit accounts.
//! A top-up is authorized when the card number and expiry match the
//! funding account, the account's card has not expired, the ISO 9564
//! format-4 PIN block verifies against the stored
//! [`PinVerificationData`], and the amount fits the credit limit.
//!
//! The try counter and lockout are inputs ([`FundingAccountRecord`]) and
//! effects ([`Effect::RecordPinTry`]): the database keeps them, so they
//! survive restarts and hold across host processes.

use kessai_ids::{AccountId, CardId};
use kessai_ledger::{Account, BalanceLimit};
use kessai_money::Money;
use kessai_pin::{PinBlock, PinVerificationData, verify_pin_block};
use kessai_secrets::CardNumber;
use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};

use crate::bytes;
use crate::effects::Effect;
use crate::error::FlowError;
use crate::host::HostConfig;

/// The funding credentials the customer enters in the wallet. The PIN
/// travels only as a format-4 PIN block enciphered under the host's PIN
/// key ([`HostConfig::pin_key`]).
#[derive(Debug)]
pub struct FundingCredentials {
    /// The credit card number.
    pub pan: CardNumber,
    /// Its expiry, `YYMM`.
    pub expiry_yymm: String,
    /// The PIN block.
    pub pin_block: PinBlock,
}

/// A top-up request: which card, how much, paid by what.
#[derive(Debug)]
pub struct TopUpRequest {
    /// The IC card to load.
    pub card_id: CardId,
    /// The amount (positive, the card's currency).
    pub amount: Money,
    /// The funding credentials.
    pub credentials: FundingCredentials,
}

/// A cardholder funding account as the database holds it.
#[derive(Debug)]
pub struct FundingAccountRecord {
    /// The ledger account (a credit line, `MaxNetDebit(limit)`).
    pub account: AccountId,
    /// The credit card number (the database keeps it encrypted at rest).
    pub pan: CardNumber,
    /// Expiry, `YYMM`.
    pub expiry_yymm: String,
    /// Keyed PIN verification data (never the PIN).
    pub pin_data: PinVerificationData,
    /// Consecutive failed PIN tries so far.
    pub failed_pin_tries: u8,
}

/// Proof that the credit authorizer approved a top-up. Only
/// [`authorize_funding`] makes one (deserializing is for the host's own
/// session rows).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FundingAuthorized {
    #[serde(with = "bytes::array")]
    authorization_ref: [u8; 16],
    funding_account: AccountId,
    card_id: CardId,
    amount: Money,
    authorized_at_ms: u64,
}

impl FundingAuthorized {
    /// The authorization's reference (bound into the VALUE UPDATE).
    pub fn authorization_ref(&self) -> [u8; 16] {
        self.authorization_ref
    }
    /// The funding account to debit.
    pub fn funding_account(&self) -> &AccountId {
        &self.funding_account
    }
    /// The card to credit.
    pub fn card_id(&self) -> &CardId {
        &self.card_id
    }
    /// The amount.
    pub fn amount(&self) -> Money {
        self.amount
    }
}

/// The credit authorizer's answer.
#[derive(Debug)]
pub enum FundingDecision {
    /// Approved; commit `effects` (a PIN counter reset) with the session.
    Approved {
        /// The proof to start the card session with.
        authorization: FundingAuthorized,
        /// Effects to commit.
        effects: Vec<Effect>,
    },
    /// Refused. `effects` is empty except after a wrong PIN, where it holds
    /// the try-counter update that must be committed.
    Declined {
        /// Why.
        error: FlowError,
        /// Effects to commit anyway.
        effects: Vec<Effect>,
    },
}

/// `YYMM` of a unix-ms instant (UTC).
pub fn yymm_of(now_ms: u64) -> u16 {
    // Civil-from-days (H. Hinnant), for days since 1970-01-01.
    let days = (now_ms / 86_400_000) as i64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    ((year % 100) * 100 + month) as u16
}

fn parse_yymm(s: &str) -> Option<u16> {
    let b = s.as_bytes();
    if b.len() != 4 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let v: u16 = s.parse().ok()?;
    (1..=12).contains(&(v % 100)).then_some(v)
}

/// Decides a top-up's funding: card number, expiry, PIN (with try counter
/// and lockout at `cfg.max_pin_tries`), credit limit of `ledger_account`
/// (the funding account's current ledger row).
pub fn authorize_funding(
    cfg: &HostConfig,
    request: &TopUpRequest,
    funding: &FundingAccountRecord,
    ledger_account: &Account,
    now_ms: u64,
    rng: &mut impl CryptoRng,
) -> FundingDecision {
    let declined = |error| FundingDecision::Declined {
        error,
        effects: Vec::new(),
    };
    if ledger_account.id != funding.account {
        return declined(FlowError::FundingCardRefused);
    }
    if request.amount.amount_minor <= 0 {
        return declined(FlowError::InvalidAmount);
    }
    if ledger_account.currency != request.amount.currency {
        return declined(FlowError::CurrencyMismatch);
    }
    if funding.failed_pin_tries >= cfg.max_pin_tries {
        return declined(FlowError::PinLocked);
    }
    let creds = &request.credentials;
    let expiry = parse_yymm(&funding.expiry_yymm);
    if creds.pan != funding.pan
        || creds.expiry_yymm != funding.expiry_yymm
        || expiry.is_none_or(|e| e < yymm_of(now_ms))
    {
        return declined(FlowError::FundingCardRefused);
    }
    let mut effects = Vec::new();
    match verify_pin_block(
        &creds.pin_block,
        &funding.pan,
        &cfg.pin_key,
        &funding.pin_data,
        &cfg.pin_verification_key,
    ) {
        Ok(()) => {
            if funding.failed_pin_tries > 0 {
                effects.push(Effect::RecordPinTry {
                    account: funding.account.clone(),
                    failed_tries: 0,
                    locked: false,
                });
            }
        }
        Err(_) => {
            // A mismatch and a block that does not decipher both count.
            let failed = funding.failed_pin_tries.saturating_add(1);
            let locked = failed >= cfg.max_pin_tries;
            return FundingDecision::Declined {
                error: if locked {
                    FlowError::PinLocked
                } else {
                    FlowError::WrongPin {
                        tries_left: cfg.max_pin_tries - failed,
                    }
                },
                effects: vec![Effect::RecordPinTry {
                    account: funding.account.clone(),
                    failed_tries: failed,
                    locked,
                }],
            };
        }
    }
    let within_limit = match ledger_account.limit {
        BalanceLimit::Unlimited => true,
        BalanceLimit::MaxNetDebit(limit) => BalanceLimit::MaxNetDebit(limit)
            .exposure(&ledger_account.balances)
            .and_then(|e| e.checked_add(request.amount.amount_minor))
            .is_some_and(|e| e <= limit),
        BalanceLimit::MaxNetCredit(_) => false,
    };
    if !within_limit {
        return FundingDecision::Declined {
            error: FlowError::OverCreditLimit,
            effects,
        };
    }
    let mut authorization_ref = [0u8; 16];
    rng.fill_bytes(&mut authorization_ref);
    FundingDecision::Approved {
        authorization: FundingAuthorized {
            authorization_ref,
            funding_account: funding.account.clone(),
            card_id: request.card_id.clone(),
            amount: request.amount,
            authorized_at_ms: now_ms,
        },
        effects,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yymm_matches_known_dates() {
        assert_eq!(yymm_of(0), 7001);
        // 2000-02-29T12:00Z = 951_825_600 s.
        assert_eq!(yymm_of(951_825_600_000), 2);
        // 2026-12-31T23:59:59Z = 1_798_761_599 s.
        assert_eq!(yymm_of(1_798_761_599_000), 2612);
        assert_eq!(yymm_of(1_798_761_600_000), 2701);
        assert_eq!(parse_yymm("2613"), None);
        assert_eq!(parse_yymm("26x1"), None);
        assert_eq!(parse_yymm("2601"), Some(2601));
    }
}
