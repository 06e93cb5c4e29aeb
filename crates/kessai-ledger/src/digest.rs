//! Canonical content digest of a [`TransferRequest`].
//!
//! SHA-256 over this byte string (integers big-endian, `str` = u32 length
//! then UTF-8 bytes):
//!
//! ```text
//! "kessai/ledger/transfer/v1" 0x00
//! id                      16 bytes
//! kind                    u8: 0 posted | 1 pending | 2 post | 3 void | 4 expire
//!   pending:              expires_at_ms u64
//!   post/void/expire:     pending_id 16 bytes
//! currency                u16 ISO 4217 numeric
//! code                    u16
//! legs                    u32 count, then per leg: account str, side u8 (0 debit,
//!                         1 credit), amount_minor i64
//! evidence                u32 count, then per item: kind str, digest 32 bytes
//! reference               str
//! ```
//!
//! The order of legs and evidence is significant (it is stored). The
//! recording time is not part of the digest, so a retry at a later time
//! has the same digest.

use sha2::{Digest, Sha256};

use crate::{TransferKind, TransferRequest};

const DOMAIN: &[u8] = b"kessai/ledger/transfer/v1\0";

fn put_str(h: &mut Sha256, s: &str) {
    // Lengths are bounded by validation; a longer string (never accepted)
    // still hashes unambiguously because the length saturates only above
    // 4 GiB, which cannot be in memory as a reference here.
    h.update(u32::try_from(s.len()).unwrap_or(u32::MAX).to_be_bytes());
    h.update(s.as_bytes());
}

pub(crate) fn digest(req: &TransferRequest) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(DOMAIN);
    h.update(req.id.as_bytes());
    match req.kind {
        TransferKind::Posted => h.update([0u8]),
        TransferKind::Pending { expires_at_ms } => {
            h.update([1u8]);
            h.update(expires_at_ms.to_be_bytes());
        }
        TransferKind::PostPending { pending_id } => {
            h.update([2u8]);
            h.update(pending_id.as_bytes());
        }
        TransferKind::VoidPending { pending_id } => {
            h.update([3u8]);
            h.update(pending_id.as_bytes());
        }
        TransferKind::ExpirePending { pending_id } => {
            h.update([4u8]);
            h.update(pending_id.as_bytes());
        }
    }
    h.update(req.currency.numeric().to_be_bytes());
    h.update(req.code.to_be_bytes());
    h.update(
        u32::try_from(req.legs.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    for leg in &req.legs {
        put_str(&mut h, leg.account.as_str());
        h.update([leg.side.code() as u8]);
        h.update(leg.amount_minor.to_be_bytes());
    }
    h.update(
        u32::try_from(req.evidence.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    for ev in &req.evidence {
        put_str(&mut h, &ev.kind);
        h.update(ev.digest);
    }
    put_str(&mut h, &req.reference);
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Leg, codes};
    use kessai_ids::TransferId;
    use kessai_money::Currency;

    fn sample() -> TransferRequest {
        TransferRequest::posted(
            TransferId([7; 16]),
            Currency::from_code("JPY").unwrap(),
            codes::CARD_PAYMENT,
            vec![
                Leg::debit("a".parse().unwrap(), 500),
                Leg::credit("b".parse().unwrap(), 500),
            ],
        )
        .with_evidence("cose/bill", [9; 32])
        .with_reference("order-1")
    }

    /// Independent re-derivation of the documented encoding, byte by byte,
    /// so a change to either the code or the docs is caught.
    #[test]
    fn digest_matches_documented_encoding() {
        let mut m = Vec::new();
        m.extend_from_slice(b"kessai/ledger/transfer/v1\0");
        m.extend_from_slice(&[7; 16]);
        m.push(0);
        m.extend_from_slice(&392u16.to_be_bytes());
        m.extend_from_slice(&1u16.to_be_bytes());
        m.extend_from_slice(&2u32.to_be_bytes());
        m.extend_from_slice(&1u32.to_be_bytes());
        m.extend_from_slice(b"a");
        m.push(0);
        m.extend_from_slice(&500i64.to_be_bytes());
        m.extend_from_slice(&1u32.to_be_bytes());
        m.extend_from_slice(b"b");
        m.push(1);
        m.extend_from_slice(&500i64.to_be_bytes());
        m.extend_from_slice(&1u32.to_be_bytes());
        m.extend_from_slice(&9u32.to_be_bytes());
        m.extend_from_slice(b"cose/bill");
        m.extend_from_slice(&[9; 32]);
        m.extend_from_slice(&7u32.to_be_bytes());
        m.extend_from_slice(b"order-1");
        let expected: [u8; 32] = Sha256::digest(&m).into();
        assert_eq!(sample().digest(), expected);
    }

    #[test]
    fn every_field_changes_the_digest() {
        let base = sample().digest();
        let mut v = Vec::new();
        let mut r = sample();
        r.id = TransferId([8; 16]);
        v.push(r);
        let mut r = sample();
        r.kind = TransferKind::Pending { expires_at_ms: 1 };
        v.push(r);
        let mut r = sample();
        r.currency = Currency::from_code("EUR").unwrap();
        v.push(r);
        let mut r = sample();
        r.code = 2;
        v.push(r);
        let mut r = sample();
        r.legs[0].amount_minor = 501;
        v.push(r);
        let mut r = sample();
        r.legs.swap(0, 1);
        v.push(r);
        let mut r = sample();
        r.evidence[0].digest[0] = 0;
        v.push(r);
        let mut r = sample();
        r.reference.push('x');
        v.push(r);
        for r in v {
            assert_ne!(r.digest(), base, "{r:?}");
        }
        // Boundaries are length-prefixed: moving a byte between account
        // and reference changes the digest.
        let mut r = sample();
        r.legs[0].account = "ab".parse().unwrap();
        r.reference = "rder-1".into();
        assert_ne!(r.digest(), base);
    }
}
