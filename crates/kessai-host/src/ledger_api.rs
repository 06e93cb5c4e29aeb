//! The host's calls into the ledger store, mapping store failures to 500s
//! and ledger refusals to problems with the ledger's stable result codes.

use kessai_ids::{AccountId, TransferId};
use kessai_ledger::{Account, LedgerError, TransferRecord, TransferRequest};

use crate::problem::ApiError;
use crate::routes::admin::ledger_error;
use crate::state::AppState;

/// The ledger account id `<prefix>.<id>` of a party (`payable.store-1`,
/// `funding.alice`, `emoney.card-1`). Ids are at most 64 characters, so the
/// prefix can push one past the limit: such ids fall back to
/// `<prefix>.<first 16 bytes of SHA-256(id), hex>`, stable for the same id.
pub fn party_account_id(prefix: &str, id: &str) -> AccountId {
    AccountId::new(format!("{prefix}.{id}")).unwrap_or_else(|_| {
        let d = kessai_crypto::digest::sha256(&[id.as_bytes()]);
        AccountId::new(format!("{prefix}.{}", hex::encode(&d[..16])))
            .expect("a short prefix and 32 hex digits form a valid id")
    })
}

fn now_u64(app: &AppState) -> u64 {
    u64::try_from(app.clock.now_ms()).unwrap_or(0)
}

/// Creates an account (idempotent when the definition is the same).
pub async fn create_account(app: &AppState, account: Account) -> Result<Account, ApiError> {
    match app.db.ledger().create_account(&account, now_u64(app)).await {
        Err(e) => Err(ApiError::internal(&e)),
        Ok(Err(e)) => Err(ledger_error(&e)),
        Ok(Ok(_)) => account_or_404(app, &account.id).await,
    }
}

async fn account_or_404(app: &AppState, id: &AccountId) -> Result<Account, ApiError> {
    account(app, id)
        .await?
        .ok_or_else(|| ApiError::not_found("account"))
}

/// An account with balances.
pub async fn account(app: &AppState, id: &AccountId) -> Result<Option<Account>, ApiError> {
    app.db
        .ledger()
        .account(id)
        .await
        .map_err(|e| ApiError::internal(&e))
}

/// A recorded transfer.
pub async fn transfer(app: &AppState, id: &TransferId) -> Result<Option<TransferRecord>, ApiError> {
    Ok(app
        .db
        .ledger()
        .transfer(id)
        .await
        .map_err(|e| ApiError::internal(&e))?
        .map(|(_, r)| r))
}

/// Submits a transfer; returns the record and whether this call created it.
pub async fn submit(
    app: &AppState,
    req: TransferRequest,
) -> Result<(TransferRecord, bool), ApiError> {
    match app.db.ledger().submit(req, now_u64(app)).await {
        Err(e) => Err(ApiError::internal(&e)),
        Ok(Err(e)) => {
            app.metrics.ledger_outcome(e.code());
            Err(ledger_error(&e))
        }
        Ok(Ok(r)) => {
            app.metrics
                .ledger_outcome(if r.replayed { "replayed" } else { "created" });
            Ok((r.record, !r.replayed))
        }
    }
}

/// Keeps `LedgerError` in the public surface of this module for docs.
pub type Refusal = LedgerError;

#[cfg(test)]
mod tests {
    use super::party_account_id;

    #[test]
    fn party_account_ids_are_prefixed_and_fall_back_to_a_stable_digest() {
        assert_eq!(
            party_account_id("payable", "store-1").as_str(),
            "payable.store-1"
        );
        let long = "s".repeat(64);
        let a = party_account_id("payable", &long);
        assert_eq!(a, party_account_id("payable", &long));
        assert!(a.as_str().starts_with("payable.") && a.as_str().len() == "payable.".len() + 32);
        assert_ne!(a, party_account_id("funding", &long));
        assert_ne!(a, party_account_id("payable", &"t".repeat(64)));
    }
}
