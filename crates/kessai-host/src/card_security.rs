//! The issuer host's card security module (flows B and D): issues cards
//! (registers them with an e-money outstanding account and derives their
//! keys from the issuer card master key), re-derives a card's keys when the
//! host talks to it, and keeps the host's shadow of each card's balance and
//! counter, moved only by responses the card authenticated (R-MAC).
//!
//! The wallet between host and card is untrusted: the host builds every
//! APDU itself (SCP03 host side from `kessai-scp03`, driven through
//! [`kessai_card::harness::HostDriver`] over any relay) and the relay only
//! forwards bytes it cannot read or forge.

use kessai_card::{IssuerCardKeys, issuer_card_keys};
use kessai_ids::{AccountId, CardId, CardholderId};
use kessai_ledger::{Account, AccountKind, BalanceLimit};
use kessai_money::Currency;
use kessai_scp03::AesKey;
use kessai_store::cards::{self, CardRecord};

use crate::keystore::KeyStoreError;
use crate::state::AppState;

/// SCP03 key version number written on cards issued by this host.
pub const CARD_KEY_VERSION: u8 = 1;

/// Card issuance and key failures.
#[derive(Debug, thiserror::Error)]
pub enum CardSecurityError {
    /// A card with this id exists already.
    #[error("card already issued")]
    AlreadyIssued,
    /// No such card.
    #[error("unknown card")]
    UnknownCard,
    /// The purse maximum must be positive.
    #[error("purse maximum must be positive")]
    InvalidPurseMax,
    /// The ledger refused the e-money account.
    #[error("ledger: {0}")]
    Ledger(kessai_ledger::LedgerError),
    /// Key store.
    #[error(transparent)]
    Keys(#[from] KeyStoreError),
    /// Database.
    #[error(transparent)]
    Store(#[from] kessai_store::StoreError),
}

/// What to issue.
#[derive(Debug, Clone)]
pub struct IssueCard {
    /// New card id.
    pub card_id: CardId,
    /// Purse currency.
    pub currency: Currency,
    /// Purse maximum, minor units.
    pub purse_max_minor: i64,
    /// Owner, if any.
    pub cardholder_id: Option<CardholderId>,
}

/// The e-money outstanding account of a card.
pub fn emoney_account_id(card: &CardId) -> AccountId {
    crate::ledger_api::party_account_id("emoney", card.as_str())
}

/// Registers a card and returns its record and keys (for personalization;
/// the keys never leave the issuer's machine).
pub async fn issue_card(
    app: &AppState,
    req: &IssueCard,
) -> Result<(CardRecord, IssuerCardKeys), CardSecurityError> {
    if req.purse_max_minor <= 0 {
        return Err(CardSecurityError::InvalidPurseMax);
    }
    if cards::card(&app.db, &req.card_id).await?.is_some() {
        return Err(CardSecurityError::AlreadyIssued);
    }
    let (master_ref, master) = app.keys.card_master().await?;
    let account = emoney_account_id(&req.card_id);
    let now = app.clock.now_ms();
    match app
        .db
        .ledger()
        .create_account(
            &Account::new(
                account.clone(),
                AccountKind::EmoneyOutstanding,
                req.currency,
                BalanceLimit::MaxNetDebit(0),
            ),
            u64::try_from(now).unwrap_or(0),
        )
        .await?
    {
        Ok(_) => {}
        Err(e) => return Err(CardSecurityError::Ledger(e)),
    }
    let record = CardRecord {
        card_id: req.card_id.clone(),
        master_key_ref: master_ref,
        key_version: CARD_KEY_VERSION,
        currency: req.currency,
        purse_max_minor: req.purse_max_minor,
        emoney_account: account,
        cardholder_id: req.cardholder_id.clone(),
        blocked: false,
        shadow_balance_minor: 0,
        shadow_counter: 0,
        created_at_ms: now,
    };
    if !cards::insert_card(&app.db, &record).await? {
        return Err(CardSecurityError::AlreadyIssued);
    }
    kessai_store::audit_log::append(
        &app.db,
        now,
        "card.issued",
        req.card_id.as_str(),
        &serde_json::json!({ "master_key": record.master_key_ref.to_string(), "key_version": CARD_KEY_VERSION }),
    )
    .await?;
    let keys = issuer_card_keys(
        &AesKey::Aes128(*master.expose()),
        &req.card_id,
        CARD_KEY_VERSION,
    );
    Ok((record, keys))
}

/// Re-derives a registered card's keys (same master key version it was
/// issued under).
pub async fn card_keys(
    app: &AppState,
    card_id: &CardId,
) -> Result<(CardRecord, IssuerCardKeys), CardSecurityError> {
    let record = cards::card(&app.db, card_id)
        .await?
        .ok_or(CardSecurityError::UnknownCard)?;
    let master = app.keys.card_master_version(&record.master_key_ref).await?;
    let keys = issuer_card_keys(
        &AesKey::Aes128(*master.expose()),
        card_id,
        record.key_version,
    );
    Ok((record, keys))
}

/// Moves the shadow of a card forward to what the card authenticated.
/// Returns `false` if the counter did not advance (stale or replayed
/// response: nothing changes).
pub async fn record_card_state(
    app: &AppState,
    card_id: &CardId,
    balance_minor: u64,
    counter: u32,
) -> Result<bool, CardSecurityError> {
    let balance = i64::try_from(balance_minor).map_err(|_| CardSecurityError::InvalidPurseMax)?;
    Ok(cards::advance_shadow(&app.db, card_id, balance, i64::from(counter)).await?)
}
