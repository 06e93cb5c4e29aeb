//! RFC 8032 section 7.1 Ed25519 known answers through the public API.

mod common;

use kessai_crypto::CryptoError;
use kessai_crypto::sign::{SigningKey, VerifyingKey};

#[test]
fn rfc8032_section_7_1_vectors() {
    let recs = common::records(include_str!("vectors/rfc8032-7.1.txt"));
    let names: Vec<&str> = recs.iter().map(|r| r.get("name")).collect();
    assert_eq!(
        names,
        ["TEST 1", "TEST 2", "TEST 3", "TEST 1024", "TEST SHA(abc)"]
    );
    for r in &recs {
        let name = r.get("name");
        let sk = SigningKey::from_seed(&r.arr::<32>("secret_key"));
        let pk: [u8; 32] = r.arr("public_key");
        let msg = r.hex("message");
        let sig: [u8; 64] = r.arr("signature");
        if name == "TEST 1024" {
            assert_eq!(msg.len(), 1023);
        }
        // Public key derivation, deterministic signature, verification.
        assert_eq!(sk.verifying_key().to_bytes(), pk, "{name}: public key");
        assert_eq!(sk.sign(&msg), sig, "{name}: signature");
        let vk = VerifyingKey::from_bytes(&pk).unwrap();
        assert_eq!(vk.verify(&msg, &sig), Ok(()), "{name}: verify");
        // And the negative: one flipped message bit or signature bit fails.
        let mut bad_msg = msg.clone();
        bad_msg.push(0);
        assert_eq!(vk.verify(&bad_msg, &sig), Err(CryptoError::BadSignature));
        for i in [0, 31, 32, 63] {
            let mut bad = sig;
            bad[i] ^= 0x01;
            assert_eq!(
                vk.verify(&msg, &bad),
                Err(CryptoError::BadSignature),
                "{name}: flipped byte {i}"
            );
        }
    }
}

#[test]
fn non_canonical_s_is_refused() {
    // RFC 8032 section 5.1.7: S must be below the group order L. Adding L to
    // a valid S gives the same equation but must be rejected (malleability).
    let recs = common::records(include_str!("vectors/rfc8032-7.1.txt"));
    let r = &recs[0];
    let vk = VerifyingKey::from_bytes(&r.arr::<32>("public_key")).unwrap();
    let msg = r.hex("message");
    let mut sig: [u8; 64] = r.arr("signature");
    // L = 2^252 + 27742317777372353535851937790883648493, little-endian.
    let l: [u8; 32] =
        hex::decode("edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010")
            .unwrap()
            .try_into()
            .unwrap();
    let mut carry = 0u16;
    for i in 0..32 {
        let s = u16::from(sig[32 + i]) + u16::from(l[i]) + carry;
        sig[32 + i] = (s & 0xff) as u8;
        carry = s >> 8;
    }
    assert_eq!(carry, 0);
    assert_eq!(vk.verify(&msg, &sig), Err(CryptoError::BadSignature));
}
