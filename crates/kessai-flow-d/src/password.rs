//! The temporary password (claims 1, 5, 6): twelve decimal digits from a
//! CSPRNG, stored at the host only as a keyed hash.
//!
//! # How hard is guessing
//!
//! - Entropy: 12 uniformly drawn digits, 10¹² values, log₂ 10¹² ≈ **39.9 bits**.
//!   Digits are drawn by rejection sampling from 64-bit words, so every
//!   value is equally likely.
//! - A POS keying in a wrong password hits *some* live password with
//!   probability L / 10¹², where L is the number of passwords alive at that
//!   moment (each lives `password_ttl_ms`, default 120 s). A terminal gets
//!   [`crate::host::HostConfig::guess_limit`] (default **5**) wrong
//!   passwords per `guess_window_ms` (default 1 h), then it is locked.
//! - With L = 100 000 live passwords (a large issuer at peak) one terminal's
//!   five guesses succeed with probability 5 × 10⁵ / 10¹² = **5 × 10⁻⁷** per
//!   hour; 24 hours of continuous guessing: 1.2 × 10⁻⁵. To reach an even
//!   chance an attacker needs ~10⁶ terminal-hours of registered terminals,
//!   and every failed guess is recorded against the terminal's merchant.
//!   A guess also needs a terminal of a registered merchant, which the
//!   settlement pays, so a success is traceable.
//! - Against one *particular* customer (L = 1): 5 / 10¹² per terminal-hour.
//!
//! # Storage
//!
//! The host stores [`PasswordId`] = HMAC-SHA-256(password key,
//! `"kessai/flow-d/password/v1" ‖ 00 ‖ digits`), never the digits: with
//! only 10¹² values an unkeyed hash would fall to a brute force in hours,
//! so a database leak without the key reveals no live password.

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use kessai_secrets::SecretKey;
use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::FlowDError;

/// Number of decimal digits in a temporary password.
pub const PASSWORD_DIGITS: usize = 12;
const SPACE: u64 = 1_000_000_000_000;
const LABEL: &[u8] = b"kessai/flow-d/password/v1";

/// A one-time temporary password: 12 ASCII digits. Zeroized on drop,
/// redacted in `Debug`, compared in constant time; no `Display`.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct TemporaryPassword([u8; PASSWORD_DIGITS]);

impl TemporaryPassword {
    /// Draws a fresh password uniformly from 10¹² values.
    pub fn generate(rng: &mut impl CryptoRng) -> Self {
        // Largest multiple of 10^12 that fits in u64: reject above it so
        // the reduction is unbiased (rejection probability < 2^-24).
        let limit = u64::MAX - (u64::MAX % SPACE);
        let mut v = rng.next_u64();
        while v >= limit {
            v = rng.next_u64();
        }
        Self::from_value(v % SPACE)
    }

    fn from_value(mut v: u64) -> Self {
        let mut d = [b'0'; PASSWORD_DIGITS];
        for slot in d.iter_mut().rev() {
            *slot = b'0' + (v % 10) as u8;
            v /= 10;
        }
        Self(d)
    }

    /// Parses what a cashier keyed in: 12 digits, optionally grouped with
    /// spaces or `-`. Anything else is [`FlowDError::PasswordFormat`].
    pub fn parse(text: &str) -> Result<Self, FlowDError> {
        let mut d = [0u8; PASSWORD_DIGITS];
        let mut n = 0;
        for b in text.bytes() {
            match b {
                b'0'..=b'9' => {
                    if n == PASSWORD_DIGITS {
                        d.zeroize();
                        return Err(FlowDError::PasswordFormat);
                    }
                    d[n] = b;
                    n += 1;
                }
                b' ' | b'-' => {}
                _ => {
                    d.zeroize();
                    return Err(FlowDError::PasswordFormat);
                }
            }
        }
        if n != PASSWORD_DIGITS {
            d.zeroize();
            return Err(FlowDError::PasswordFormat);
        }
        Ok(Self(d))
    }

    /// The 12 digits, for display on the phone or keying at the POS.
    pub fn expose_digits(&self) -> &str {
        // Only ASCII digits are ever stored.
        std::str::from_utf8(&self.0).unwrap_or_else(|_| unreachable!("ASCII digits"))
    }

    /// The digits in three groups of four (`1234 5678 9012`), for display.
    pub fn grouped(&self) -> String {
        let d = self.expose_digits();
        format!("{} {} {}", &d[0..4], &d[4..8], &d[8..12])
    }
}

impl fmt::Debug for TemporaryPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TemporaryPassword(redacted)")
    }
}

impl PartialEq for TemporaryPassword {
    fn eq(&self, other: &Self) -> bool {
        bool::from(self.0.ct_eq(&other.0))
    }
}
impl Eq for TemporaryPassword {}

/// The host's key for password hashes (256 bits). Zeroized on drop, never
/// printed.
#[derive(Clone)]
pub struct PasswordKey(SecretKey<32>);

impl PasswordKey {
    /// Wraps 32 key bytes.
    pub fn new(key: SecretKey<32>) -> Self {
        Self(key)
    }

    /// The stored identifier of `password`.
    pub fn id_of(&self, password: &TemporaryPassword) -> PasswordId {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(self.0.expose())
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(LABEL);
        mac.update(&[0]);
        mac.update(&password.0);
        PasswordId(mac.finalize().into_bytes().into())
    }
}

impl fmt::Debug for PasswordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordKey(redacted)")
    }
}

/// The keyed hash a password is stored and looked up under (see the module
/// docs). Serialized as 64 hex digits; the database's unique key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PasswordId(pub [u8; 32]);

impl fmt::Debug for PasswordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PasswordId({})", hex::encode(&self.0[..8]))
    }
}

impl Serialize for PasswordId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(self.0))
    }
}

impl<'de> Deserialize<'de> for PasswordId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(&s, &mut out).map_err(serde::de::Error::custom)?;
        Ok(Self(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn generated_passwords_are_12_digits_and_differ() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let a = TemporaryPassword::generate(&mut rng);
        let b = TemporaryPassword::generate(&mut rng);
        assert_eq!(a.expose_digits().len(), 12);
        assert!(a.expose_digits().bytes().all(|c| c.is_ascii_digit()));
        assert_ne!(a, b);
        assert_eq!(format!("{a:?}"), "TemporaryPassword(redacted)");
    }

    #[test]
    fn digits_are_roughly_uniform() {
        // 20 000 passwords = 240 000 digits; each digit value should appear
        // 24 000 ± a few hundred times (5 sigma ≈ 735).
        let mut rng = rand::rngs::StdRng::seed_from_u64(99);
        let mut counts = [0u32; 10];
        for _ in 0..20_000 {
            for c in TemporaryPassword::generate(&mut rng)
                .expose_digits()
                .bytes()
            {
                counts[usize::from(c - b'0')] += 1;
            }
        }
        for c in counts {
            assert!((23_265..=24_735).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn parse_accepts_groups_and_refuses_everything_else() {
        let p = TemporaryPassword::parse("0123 4567-8901").unwrap();
        assert_eq!(p.expose_digits(), "012345678901");
        assert_eq!(p.grouped(), "0123 4567 8901");
        for bad in [
            "",
            "01234567890",
            "0123456789012",
            "01234567890a",
            "０12345678901",
        ] {
            assert_eq!(
                TemporaryPassword::parse(bad),
                Err(FlowDError::PasswordFormat),
                "{bad}"
            );
        }
        assert_eq!(
            TemporaryPassword::from_value(42).expose_digits(),
            "000000000042"
        );
    }

    #[test]
    fn ids_are_keyed() {
        let p = TemporaryPassword::parse("111122223333").unwrap();
        let k1 = PasswordKey::new(SecretKey::new([1; 32]));
        let k2 = PasswordKey::new(SecretKey::new([2; 32]));
        assert_eq!(k1.id_of(&p), k1.id_of(&p.clone()));
        assert_ne!(k1.id_of(&p), k2.id_of(&p));
        // Recompute by hand: HMAC(k, label ‖ 00 ‖ digits).
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&[1; 32]).unwrap();
        mac.update(b"kessai/flow-d/password/v1\x00111122223333");
        let expect: [u8; 32] = mac.finalize().into_bytes().into();
        assert_eq!(k1.id_of(&p).0, expect);
        let json = serde_json::to_string(&k1.id_of(&p)).unwrap();
        assert_eq!(
            serde_json::from_str::<PasswordId>(&json).unwrap(),
            k1.id_of(&p)
        );
    }
}
