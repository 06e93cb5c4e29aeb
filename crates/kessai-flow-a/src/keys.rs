//! The host's flow-A keys: its signing key, and the versioned transmission
//! and storage key rings with their grace periods (claims 4, 7, 11).
//!
//! A [`KeyRing`] holds one *active* HPKE key pair (handed to devices) and
//! any number of *previous* ones, each honoured until its own instant.
//! [`KeyRing::rotate`] makes a new version active and gives the old active
//! one a deadline; [`KeyRing::resolve`] is the only way the host picks a
//! decryption key for what a device sent, so a retired key is refused with
//! a typed error naming the current key.
//!
//! The rings are in memory and hold secrets: the host's key store loads
//! them (decrypting at rest) and builds them with [`KeyRing::new`] and
//! [`KeyRing::with_previous`].

use std::fmt;

use kessai_crypto::hpke::HpkeKeyPair;
use kessai_crypto::sign::SigningKey;
use kessai_ids::KeyRef;
use kessai_secrets::SecretKey;

use crate::FlowAError;
use crate::model::PublishedKey;

/// Which ring a key belongs to, for error reporting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPurpose {
    /// Transmission keys: transaction data and identity identification.
    Transmission,
    /// Storage keys: card information and master templates.
    Storage,
}

/// One HPKE key version in a ring.
#[derive(Clone)]
pub struct RingKey {
    /// Its reference.
    pub key_ref: KeyRef,
    /// The key pair.
    pub pair: HpkeKeyPair,
    /// `None` for the active key; for a previous key, the first instant
    /// at which it is no longer honoured.
    pub honoured_until_ms: Option<u64>,
}

impl fmt::Debug for RingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RingKey")
            .field("key_ref", &self.key_ref)
            .field("honoured_until_ms", &self.honoured_until_ms)
            .finish_non_exhaustive()
    }
}

/// The versions of one purpose's key.
#[derive(Debug, Clone)]
pub struct KeyRing {
    purpose: KeyPurpose,
    active: RingKey,
    previous: Vec<RingKey>,
}

impl KeyRing {
    /// A ring with only an active key.
    pub fn new(purpose: KeyPurpose, key_ref: KeyRef, pair: HpkeKeyPair) -> Self {
        Self {
            purpose,
            active: RingKey {
                key_ref,
                pair,
                honoured_until_ms: None,
            },
            previous: Vec::new(),
        }
    }

    /// Adds a previous version honoured until `honoured_until_ms` (when
    /// loading a ring from the key store).
    pub fn with_previous(
        mut self,
        key_ref: KeyRef,
        pair: HpkeKeyPair,
        honoured_until_ms: u64,
    ) -> Self {
        self.previous.push(RingKey {
            key_ref,
            pair,
            honoured_until_ms: Some(honoured_until_ms),
        });
        self
    }

    /// Generates a fresh key pair for a new version (claim 7, "encryption
    /// key generation means").
    pub fn generate_pair(rng: &mut impl rand_core::CryptoRng) -> HpkeKeyPair {
        HpkeKeyPair::generate(rng)
    }

    /// Makes `key_ref` / `pair` the active key. The old active key is
    /// honoured until `now_ms + grace_ms`. The new version must have the
    /// active key's id and a higher version ([`FlowAError::KeyNotNewer`]).
    pub fn rotate(
        &mut self,
        key_ref: KeyRef,
        pair: HpkeKeyPair,
        now_ms: u64,
        grace_ms: u64,
    ) -> Result<(), FlowAError> {
        if key_ref.id != self.active.key_ref.id || key_ref.version <= self.active.key_ref.version {
            return Err(FlowAError::KeyNotNewer);
        }
        let until = now_ms
            .checked_add(grace_ms)
            .ok_or(FlowAError::TimeOverflow)?;
        let old = std::mem::replace(
            &mut self.active,
            RingKey {
                key_ref,
                pair,
                honoured_until_ms: None,
            },
        );
        self.previous.push(RingKey {
            honoured_until_ms: Some(until),
            ..old
        });
        Ok(())
    }

    /// Drops previous keys whose grace period ended before `now_ms`
    /// (returns their references, for the key store to delete).
    pub fn prune(&mut self, now_ms: u64) -> Vec<KeyRef> {
        let mut gone = Vec::new();
        self.previous.retain(|k| {
            let keep = k.honoured_until_ms.is_some_and(|u| now_ms < u);
            if !keep {
                gone.push(k.key_ref.clone());
            }
            keep
        });
        gone
    }

    /// The active key's reference.
    pub fn active_ref(&self) -> &KeyRef {
        &self.active.key_ref
    }

    /// The active public key, to hand to devices.
    pub fn active_public(&self) -> PublishedKey {
        PublishedKey {
            key_ref: self.active.key_ref.clone(),
            public_key: self.active.pair.public_key().clone(),
        }
    }

    /// Every version with its deadline.
    pub fn keys(&self) -> impl Iterator<Item = &RingKey> {
        std::iter::once(&self.active).chain(self.previous.iter())
    }

    /// The key pair to open something sealed to `key_ref` at `now_ms`:
    /// the active key, or a previous key still in its grace period.
    /// A previous key past its deadline is refused with
    /// [`FlowAError::TransmissionKeyRetired`] / [`FlowAError::StorageKeyRetired`]
    /// (naming the current key); an unknown one with
    /// [`FlowAError::UnknownKey`].
    pub fn resolve(&self, key_ref: &KeyRef, now_ms: u64) -> Result<&HpkeKeyPair, FlowAError> {
        let key = self
            .keys()
            .find(|k| &k.key_ref == key_ref)
            .ok_or_else(|| FlowAError::UnknownKey(key_ref.clone()))?;
        match key.honoured_until_ms {
            Some(until) if now_ms >= until => {
                let used = key_ref.clone();
                let current = self.active.key_ref.clone();
                Err(match self.purpose {
                    KeyPurpose::Transmission => {
                        FlowAError::TransmissionKeyRetired { used, current }
                    }
                    KeyPurpose::Storage => FlowAError::StorageKeyRetired { used, current },
                })
            }
            _ => Ok(&key.pair),
        }
    }

    /// The ring's purpose.
    pub fn purpose(&self) -> KeyPurpose {
        self.purpose
    }
}

/// Everything secret the host's flow-A logic uses.
pub struct HostKeys {
    /// The issuer signing key's reference (what devices hold as their
    /// trust anchor).
    pub signing_ref: KeyRef,
    /// The issuer signing key.
    pub signing: SigningKey,
    /// Transmission key ring.
    pub transmission: KeyRing,
    /// Storage key ring.
    pub storage: KeyRing,
    /// Key of the keyed hash (HMAC-SHA256) of enrolment codes, so a copy
    /// of the code table does not reveal the codes.
    pub code_key: SecretKey<32>,
}

impl fmt::Debug for HostKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostKeys")
            .field("signing_ref", &self.signing_ref)
            .field("transmission", &self.transmission)
            .field("storage", &self.storage)
            .finish_non_exhaustive()
    }
}

impl HostKeys {
    /// The trust anchor devices are given.
    pub fn anchor(&self) -> crate::model::IssuerAnchor {
        crate::model::IssuerAnchor {
            key_ref: self.signing_ref.clone(),
            key: self.signing.verifying_key(),
        }
    }

    /// Signs `payload` with the issuer key.
    pub(crate) fn sign(
        &self,
        payload: &impl kessai_crypto::cose::Artefact,
    ) -> Result<Vec<u8>, FlowAError> {
        Ok(kessai_crypto::cose::sign_artefact(
            payload,
            &self.signing,
            &self.signing_ref,
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kr(s: &str) -> KeyRef {
        s.parse().unwrap()
    }

    #[test]
    fn rotation_honours_old_key_for_the_grace_period_only() {
        let mut ring = KeyRing::new(
            KeyPurpose::Transmission,
            kr("tx#1"),
            HpkeKeyPair::derive(&[1; 32]),
        );
        assert!(ring.resolve(&kr("tx#1"), 0).is_ok());
        ring.rotate(kr("tx#2"), HpkeKeyPair::derive(&[2; 32]), 1_000, 500)
            .unwrap();
        assert_eq!(ring.active_ref(), &kr("tx#2"));
        assert!(ring.resolve(&kr("tx#1"), 1_499).is_ok());
        assert_eq!(
            ring.resolve(&kr("tx#1"), 1_500).unwrap_err(),
            FlowAError::TransmissionKeyRetired {
                used: kr("tx#1"),
                current: kr("tx#2")
            }
        );
        assert!(ring.resolve(&kr("tx#2"), 10_000).is_ok());
        assert_eq!(
            ring.resolve(&kr("tx#9"), 0).unwrap_err(),
            FlowAError::UnknownKey(kr("tx#9"))
        );
        assert_eq!(
            ring.rotate(kr("tx#2"), HpkeKeyPair::derive(&[3; 32]), 2_000, 1),
            Err(FlowAError::KeyNotNewer)
        );
        assert_eq!(
            ring.rotate(kr("other#3"), HpkeKeyPair::derive(&[3; 32]), 2_000, 1),
            Err(FlowAError::KeyNotNewer)
        );
        assert_eq!(ring.prune(1_499), Vec::<KeyRef>::new());
        assert_eq!(ring.prune(1_500), vec![kr("tx#1")]);
        assert_eq!(ring.keys().count(), 1);
    }

    #[test]
    fn storage_ring_reports_storage_retirement() {
        let ring = KeyRing::new(
            KeyPurpose::Storage,
            kr("st#2"),
            HpkeKeyPair::derive(&[2; 32]),
        )
        .with_previous(kr("st#1"), HpkeKeyPair::derive(&[1; 32]), 100);
        assert!(ring.resolve(&kr("st#1"), 99).is_ok());
        assert!(matches!(
            ring.resolve(&kr("st#1"), 100),
            Err(FlowAError::StorageKeyRetired { .. })
        ));
        assert!(!format!("{ring:?}").contains("secret"));
    }
}
