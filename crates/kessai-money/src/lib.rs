//! Money for kessai: an amount in integer **minor units** plus an ISO 4217
//! currency.
//!
//! What it does:
//! - [`Currency`] wraps an ISO 4217 code from the maintained `iso_currency`
//!   table and knows its minor-unit exponent (JPY 0, EUR 2, BHD 3).
//!   Codes without a minor unit definition (XAU, XXX, ...) are refused: they
//!   cannot be settled.
//! - [`Money`] is `amount_minor: i64` + currency. Arithmetic is checked and
//!   returns [`MoneyError`]; there is no `Add` that can overflow or mix
//!   currencies.
//! - Parsing and formatting of decimal amounts follow the currency exponent
//!   exactly: `"12.34 JPY"` is an error because JPY has no minor unit, and
//!   `"12.3 EUR"` is `1230` minor units.
//!
//! What it does not do: exchange rates, rounding, or any float arithmetic.
//!
//! ```
//! use kessai_money::{Currency, Money};
//! let eur = Currency::from_code("EUR").unwrap();
//! let a: Money = "12.34 EUR".parse().unwrap();
//! assert_eq!(a, Money::new(1234, eur));
//! assert_eq!(a.checked_add(Money::new(66, eur)).unwrap().to_string(), "13.00 EUR");
//! assert!("12.34 JPY".parse::<Money>().is_err());
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Errors from money construction, parsing and arithmetic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// The code is not an ISO 4217 currency with a defined minor unit.
    #[error("unknown or unsettleable currency code")]
    UnknownCurrency,
    /// Two amounts in different currencies were combined.
    #[error("currency mismatch: {left} vs {right}")]
    CurrencyMismatch {
        /// Currency of the left operand.
        left: Currency,
        /// Currency of the right operand.
        right: Currency,
    },
    /// The result does not fit in a signed 64-bit count of minor units.
    #[error("amount overflow")]
    Overflow,
    /// The text is not `<decimal> <CODE>` with at most the currency's number
    /// of fraction digits.
    #[error("malformed amount: {0}")]
    Malformed(&'static str),
    /// The amount must be strictly positive here.
    #[error("amount must be positive")]
    NotPositive,
}

/// An ISO 4217 currency with a defined minor unit.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency(iso_currency::Currency);

impl Currency {
    /// Looks up an alphabetic ISO 4217 code (upper case, e.g. `"JPY"`).
    pub fn from_code(code: &str) -> Result<Self, MoneyError> {
        let c = iso_currency::Currency::from_code(code).ok_or(MoneyError::UnknownCurrency)?;
        // Currencies without a minor unit (precious metals, XXX test code)
        // cannot be expressed in minor units: refuse them.
        c.exponent().ok_or(MoneyError::UnknownCurrency)?;
        Ok(Self(c))
    }

    /// Looks up a numeric ISO 4217 code (e.g. 392 for JPY), as carried on
    /// cards and in EMV data.
    pub fn from_numeric(numeric: u16) -> Result<Self, MoneyError> {
        let c = iso_currency::Currency::from_numeric(numeric).ok_or(MoneyError::UnknownCurrency)?;
        c.exponent().ok_or(MoneyError::UnknownCurrency)?;
        Ok(Self(c))
    }

    /// The alphabetic code, e.g. `"EUR"`.
    pub fn code(self) -> &'static str {
        self.0.code()
    }

    /// The numeric code, e.g. `978` for EUR.
    pub fn numeric(self) -> u16 {
        self.0.numeric()
    }

    /// Number of decimal digits of the minor unit (JPY 0, EUR 2, BHD 3).
    pub fn exponent(self) -> u32 {
        // Checked at construction: every `Currency` has an exponent.
        u32::from(self.0.exponent().unwrap_or(0))
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Currency {
    type Err = MoneyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_code(s)
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Currency::from_code(&s).map_err(serde::de::Error::custom)
    }
}

/// An amount of money: integer minor units and a currency.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Money {
    /// Count of minor units (cents for EUR, yen for JPY). May be negative
    /// for balances; amounts to move are checked positive where it matters.
    pub amount_minor: i64,
    /// The ISO 4217 currency.
    pub currency: Currency,
}

impl Money {
    /// An amount of `amount_minor` minor units of `currency`.
    pub const fn new(amount_minor: i64, currency: Currency) -> Self {
        Self {
            amount_minor,
            currency,
        }
    }

    /// Zero in `currency`.
    pub const fn zero(currency: Currency) -> Self {
        Self::new(0, currency)
    }

    /// An amount that must be strictly positive (a payment, a top-up).
    pub fn positive(amount_minor: i64, currency: Currency) -> Result<Self, MoneyError> {
        if amount_minor <= 0 {
            return Err(MoneyError::NotPositive);
        }
        Ok(Self::new(amount_minor, currency))
    }

    fn same_currency(self, other: Money) -> Result<(), MoneyError> {
        if self.currency != other.currency {
            return Err(MoneyError::CurrencyMismatch {
                left: self.currency,
                right: other.currency,
            });
        }
        Ok(())
    }

    /// `self + other`, refusing mixed currencies and overflow.
    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        let v = self
            .amount_minor
            .checked_add(other.amount_minor)
            .ok_or(MoneyError::Overflow)?;
        Ok(Money::new(v, self.currency))
    }

    /// `self - other`, refusing mixed currencies and overflow.
    pub fn checked_sub(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        let v = self
            .amount_minor
            .checked_sub(other.amount_minor)
            .ok_or(MoneyError::Overflow)?;
        Ok(Money::new(v, self.currency))
    }

    /// `-self`, refusing overflow (`i64::MIN`).
    pub fn checked_neg(self) -> Result<Money, MoneyError> {
        let v = self
            .amount_minor
            .checked_neg()
            .ok_or(MoneyError::Overflow)?;
        Ok(Money::new(v, self.currency))
    }

    /// True if the amount is strictly positive.
    pub fn is_positive(self) -> bool {
        self.amount_minor > 0
    }

    /// Parses a decimal amount in major units for `currency`, e.g. `"12.34"`
    /// for EUR is 1234. More fraction digits than the exponent is an error.
    pub fn parse_major(text: &str, currency: Currency) -> Result<Money, MoneyError> {
        let (negative, body) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (int_part, frac_part) = match body.split_once('.') {
            Some((i, f)) => (i, Some(f)),
            None => (body, None),
        };
        if int_part.is_empty() || !int_part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(MoneyError::Malformed("integer part must be decimal digits"));
        }
        let exp = currency.exponent();
        let frac = frac_part.unwrap_or("");
        if frac_part.is_some() && frac.is_empty() {
            return Err(MoneyError::Malformed("empty fraction"));
        }
        if !frac.bytes().all(|b| b.is_ascii_digit()) {
            return Err(MoneyError::Malformed("fraction must be decimal digits"));
        }
        if frac.len() > exp as usize {
            return Err(MoneyError::Malformed(
                "more fraction digits than the currency's minor unit",
            ));
        }
        let scale = 10i64.checked_pow(exp).ok_or(MoneyError::Overflow)?;
        let major: i64 = int_part.parse().map_err(|_| MoneyError::Overflow)?;
        let mut minor: i64 = 0;
        for (i, b) in frac.bytes().enumerate() {
            let digit = i64::from(b - b'0');
            let place = 10i64.pow(exp - 1 - i as u32);
            minor += digit * place;
        }
        let total = major
            .checked_mul(scale)
            .and_then(|v| v.checked_add(minor))
            .ok_or(MoneyError::Overflow)?;
        Ok(Money::new(if negative { -total } else { total }, currency))
    }
}

impl fmt::Debug for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let exp = self.currency.exponent();
        let sign = if self.amount_minor < 0 { "-" } else { "" };
        let abs = self.amount_minor.unsigned_abs();
        if exp == 0 {
            return write!(f, "{sign}{abs} {}", self.currency);
        }
        let scale = 10u64.pow(exp);
        write!(
            f,
            "{sign}{}.{:0width$} {}",
            abs / scale,
            abs % scale,
            self.currency,
            width = exp as usize
        )
    }
}

impl FromStr for Money {
    type Err = MoneyError;
    /// Parses `"<decimal> <CODE>"`, e.g. `"12.34 EUR"` or `"500 JPY"`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (amount, code) = s
            .trim()
            .split_once(' ')
            .ok_or(MoneyError::Malformed("expected '<amount> <CODE>'"))?;
        let currency = Currency::from_code(code.trim())?;
        Money::parse_major(amount.trim(), currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(code: &str) -> Currency {
        Currency::from_code(code).unwrap()
    }

    #[test]
    fn exponents_come_from_iso_table() {
        assert_eq!(c("JPY").exponent(), 0);
        assert_eq!(c("EUR").exponent(), 2);
        assert_eq!(c("BHD").exponent(), 3);
        assert_eq!(c("JPY").numeric(), 392);
        assert_eq!(Currency::from_numeric(978).unwrap(), c("EUR"));
    }

    #[test]
    fn unknown_and_unsettleable_currencies_are_refused() {
        assert_eq!(Currency::from_code("ZZZ"), Err(MoneyError::UnknownCurrency));
        assert_eq!(Currency::from_code("eur"), Err(MoneyError::UnknownCurrency));
        // Gold has no minor unit.
        assert_eq!(Currency::from_code("XAU"), Err(MoneyError::UnknownCurrency));
        assert!(serde_json::from_str::<Currency>("\"QQQ\"").is_err());
    }

    #[test]
    fn parse_respects_exponent() {
        assert_eq!(
            "12.34 EUR".parse::<Money>().unwrap(),
            Money::new(1234, c("EUR"))
        );
        assert_eq!(
            "12.3 EUR".parse::<Money>().unwrap(),
            Money::new(1230, c("EUR"))
        );
        assert_eq!(
            "500 JPY".parse::<Money>().unwrap(),
            Money::new(500, c("JPY"))
        );
        assert_eq!(
            "1.234 BHD".parse::<Money>().unwrap(),
            Money::new(1234, c("BHD"))
        );
        assert_eq!(
            "-0.05 EUR".parse::<Money>().unwrap(),
            Money::new(-5, c("EUR"))
        );
        assert!(matches!(
            "12.34 JPY".parse::<Money>(),
            Err(MoneyError::Malformed(_))
        ));
        assert!(matches!(
            "1.234 EUR".parse::<Money>(),
            Err(MoneyError::Malformed(_))
        ));
        assert!(matches!(
            "1. EUR".parse::<Money>(),
            Err(MoneyError::Malformed(_))
        ));
        assert!(matches!(
            "1e3 EUR".parse::<Money>(),
            Err(MoneyError::Malformed(_))
        ));
        assert!(matches!(
            "EUR".parse::<Money>(),
            Err(MoneyError::Malformed(_))
        ));
        assert_eq!(
            "99999999999999999999 EUR".parse::<Money>(),
            Err(MoneyError::Overflow)
        );
        assert_eq!(
            "92233720368547758.08 EUR".parse::<Money>(),
            Err(MoneyError::Overflow)
        );
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "12.34 EUR",
            "0.05 EUR",
            "-0.05 EUR",
            "500 JPY",
            "1.234 BHD",
            "0.00 USD",
        ] {
            assert_eq!(s.parse::<Money>().unwrap().to_string(), s);
        }
        assert_eq!(
            Money::new(i64::MIN, c("JPY")).to_string(),
            "-9223372036854775808 JPY"
        );
    }

    #[test]
    fn arithmetic_is_checked() {
        let eur = c("EUR");
        let a = Money::new(i64::MAX, eur);
        assert_eq!(a.checked_add(Money::new(1, eur)), Err(MoneyError::Overflow));
        assert_eq!(
            Money::new(i64::MIN, eur).checked_sub(Money::new(1, eur)),
            Err(MoneyError::Overflow)
        );
        assert_eq!(
            Money::new(i64::MIN, eur).checked_neg(),
            Err(MoneyError::Overflow)
        );
        assert!(matches!(
            Money::new(1, eur).checked_add(Money::new(1, c("JPY"))),
            Err(MoneyError::CurrencyMismatch { .. })
        ));
        assert_eq!(
            Money::new(5, eur).checked_sub(Money::new(7, eur)).unwrap(),
            Money::new(-2, eur)
        );
        assert_eq!(Money::positive(0, eur), Err(MoneyError::NotPositive));
        assert_eq!(Money::positive(-1, eur), Err(MoneyError::NotPositive));
    }

    #[test]
    fn serde_shape_is_minor_units_and_code() {
        let m = Money::new(1234, c("EUR"));
        let j = serde_json::to_string(&m).unwrap();
        assert_eq!(j, r#"{"amount_minor":1234,"currency":"EUR"}"#);
        assert_eq!(serde_json::from_str::<Money>(&j).unwrap(), m);
        assert!(serde_json::from_str::<Money>(r#"{"amount_minor":1.5,"currency":"EUR"}"#).is_err());
        assert!(
            serde_json::from_str::<Money>(r#"{"amount_minor":1,"currency":"EUR","x":1}"#).is_err()
        );
    }
}
