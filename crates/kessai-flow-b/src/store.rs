//! The store device (a stand-alone store, or a mall signing for its member
//! stores): creates bills with the FIRST SIGNATURE, verifies the host's
//! completion (THIRD SIGNATURE), issues the receipt with the FOURTH
//! SIGNATURE and a download token for delivery (ST5, ST20, ST112; claims
//! 2, 6, 7, 17–21).
//!
//! The store keeps its [`IssuedBill`]s (serde) and its deliveries; this
//! module only decides.

use kessai_crypto::cose::{self, verify_artefact};
use kessai_crypto::digest::sha256;
use kessai_crypto::sign::SigningKey;
use kessai_ids::{KeyRef, MallId, OrderId, StoreId};
use kessai_money::Money;
use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::artefacts::{Bill, Digest, SettlementCompletion, SettlementReceipt};
use crate::bytes;
use crate::error::FlowError;
use crate::registry::KeyDirectory;

/// Who signs: a store for itself, or a mall for its member stores.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreIdentity {
    /// A stand-alone store.
    Store(StoreId),
    /// A mall and the member stores it sells for.
    Mall {
        /// The mall.
        mall_id: MallId,
        /// Its member stores.
        members: Vec<StoreId>,
    },
}

/// A store's (or mall's) keys and settings.
pub struct Store {
    /// Who it is.
    pub identity: StoreIdentity,
    /// Signs SIG1 and SIG4.
    pub signing_key: SigningKey,
    /// Its registered key reference.
    pub key_ref: KeyRef,
    /// The host's published keys (to verify SIG3).
    pub host_keys: KeyDirectory,
    /// How long a bill stays payable.
    pub bill_ttl_ms: u64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("identity", &self.identity)
            .field("key_ref", &self.key_ref)
            .finish_non_exhaustive()
    }
}

/// A bill the store issued: keep it to match the completion later.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedBill {
    /// The bill.
    pub bill: Bill,
    /// Its COSE bytes (what the wallet receives).
    #[serde(with = "bytes::vec")]
    pub bytes: Vec<u8>,
    /// SHA-256 of the bytes.
    #[serde(with = "bytes::array")]
    pub digest: Digest,
}

/// A completion whose THIRD SIGNATURE verified and that settles one of
/// this store's issued bills. Only [`Store::verify_completion`] makes one.
#[derive(Clone, Debug)]
pub struct CompletionVerified {
    completion: SettlementCompletion,
    digest: Digest,
}

impl CompletionVerified {
    /// The completion.
    pub fn completion(&self) -> &SettlementCompletion {
        &self.completion
    }
    /// Digest of its COSE bytes.
    pub fn digest(&self) -> Digest {
        self.digest
    }
}

/// The download token for digital delivery (ST20): 32 random bytes. The
/// receipt carries only its digest. Zeroized on drop; `Debug` redacted.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct DeliveryToken([u8; 32]);

impl std::fmt::Debug for DeliveryToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeliveryToken(redacted)")
    }
}

impl DeliveryToken {
    /// Wraps received token bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
    /// The token bytes (for a download URL).
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
    /// Its digest, as carried in the receipt.
    pub fn digest(&self) -> Digest {
        sha256(&[b"kessai/flow-b/delivery-token\0", &self.0])
    }
}

/// What the store returns after a verified completion.
#[derive(Debug)]
pub struct StoreDelivery {
    /// The receipt's COSE bytes (FOURTH SIGNATURE), for host and wallet.
    pub receipt: Vec<u8>,
    /// Its digest.
    pub receipt_digest: Digest,
    /// The download token for the customer.
    pub token: DeliveryToken,
}

impl Store {
    fn sells_for(&self, store_id: &StoreId) -> Option<Option<MallId>> {
        match &self.identity {
            StoreIdentity::Store(s) if s == store_id => Some(None),
            StoreIdentity::Mall { mall_id, members } if members.contains(store_id) => {
                Some(Some(mall_id.clone()))
            }
            _ => None,
        }
    }

    /// ST5: creates a bill with the FIRST SIGNATURE for `store_id` (this
    /// store, or a member store of this mall).
    pub fn create_bill(
        &self,
        store_id: &StoreId,
        order_id: OrderId,
        amount: Money,
        items_digest: Digest,
        now_ms: u64,
        rng: &mut impl CryptoRng,
    ) -> Result<IssuedBill, FlowError> {
        let mall_id = self.sells_for(store_id).ok_or(FlowError::NotMallMember)?;
        if amount.amount_minor <= 0 {
            return Err(FlowError::InvalidAmount);
        }
        let mut nonce = [0u8; 16];
        rng.fill_bytes(&mut nonce);
        let bill = Bill {
            store_id: store_id.clone(),
            mall_id,
            order_id,
            amount,
            items_digest,
            issued_at_ms: now_ms,
            expires_at_ms: now_ms.saturating_add(self.bill_ttl_ms),
            nonce,
        };
        let bytes = cose::sign_artefact(&bill, &self.signing_key, &self.key_ref)?;
        let digest = sha256(&[&bytes]);
        Ok(IssuedBill {
            bill,
            bytes,
            digest,
        })
    }

    /// Verifies the host's completion (SIG3) for `issued`: signature under
    /// the host's published key, and it names exactly this bill.
    pub fn verify_completion(
        &self,
        issued: &IssuedBill,
        completion: &[u8],
    ) -> Result<CompletionVerified, FlowError> {
        let v = verify_artefact::<SettlementCompletion>(completion, |r| self.host_keys.resolve(r))?;
        let c = v.payload();
        if c.bill_digest != issued.digest
            || c.store_id != issued.bill.store_id
            || c.mall_id != issued.bill.mall_id
            || c.order_id != issued.bill.order_id
        {
            return Err(FlowError::BindingMismatch("completion names another bill"));
        }
        if c.amount != issued.bill.amount {
            return Err(FlowError::AmountMismatch);
        }
        Ok(CompletionVerified {
            completion: c.clone(),
            digest: v.digest(),
        })
    }

    /// ST112: issues the receipt (SIG4) and the download token.
    pub fn issue_receipt(
        &self,
        completion: &CompletionVerified,
        now_ms: u64,
        rng: &mut impl CryptoRng,
    ) -> Result<StoreDelivery, FlowError> {
        let mut t = [0u8; 32];
        rng.fill_bytes(&mut t);
        let token = DeliveryToken(t);
        t.zeroize();
        let c = &completion.completion;
        let receipt = SettlementReceipt {
            completion_digest: completion.digest,
            bill_digest: c.bill_digest,
            store_id: c.store_id.clone(),
            order_id: c.order_id.clone(),
            amount: c.amount,
            delivery_token_digest: token.digest(),
            issued_at_ms: now_ms,
        };
        let bytes = cose::sign_artefact(&receipt, &self.signing_key, &self.key_ref)?;
        Ok(StoreDelivery {
            receipt_digest: sha256(&[&bytes]),
            receipt: bytes,
            token,
        })
    }
}

/// Checks a presented download token against the digest in the receipt.
pub fn token_matches(token: &DeliveryToken, receipt: &SettlementReceipt) -> bool {
    token.digest() == receipt.delivery_token_digest
}
