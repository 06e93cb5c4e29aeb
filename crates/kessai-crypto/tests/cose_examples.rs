//! Interoperability known answers: the cose-wg Ed25519 COSE_Sign1 example
//! and the draft-ietf-cose-hpke-25 HPKE-3 COSE_Encrypt0 vectors.

mod common;

use coset::{CborSerializable, CoseSign1, TaggedCborSerializable};
use kessai_crypto::CoseError;
use kessai_crypto::cose::{open_encrypt0_raw, verify_sign1_raw};
use kessai_crypto::hpke::HpkeKeyPair;
use kessai_crypto::sign::{SigningKey, VerifyingKey};

#[test]
fn cose_wg_eddsa_sig_01_verifies() {
    let recs = common::records(include_str!("vectors/cose-wg-eddsa-sig-01.txt"));
    let ex = &recs[0];
    let vk = VerifyingKey::from_bytes(&ex.arr::<32>("x")).unwrap();
    let cbor = ex.hex("cbor");

    let payload = verify_sign1_raw(&cbor, &vk, b"").unwrap();
    assert_eq!(payload, ex.hex("plaintext"));
    assert_eq!(payload, b"This is the content.");

    // The example's intermediate ToBeSign is what gets signed, and Ed25519
    // is deterministic: our signer reproduces the example's signature.
    let sign1 = CoseSign1::from_tagged_slice(&cbor).unwrap();
    assert_eq!(sign1.tbs_data(b""), ex.hex("to_be_signed"));
    let sk = SigningKey::from_seed(&ex.arr::<32>("d"));
    assert_eq!(sk.verifying_key(), vk);
    assert_eq!(sk.sign(&ex.hex("to_be_signed")).to_vec(), sign1.signature);

    // Wrong external AAD, wrong key, flipped bits: all refused.
    assert_eq!(
        verify_sign1_raw(&cbor, &vk, b"x"),
        Err(CoseError::BadSignature)
    );
    let other = SigningKey::from_seed(&[9; 32]).verifying_key();
    assert_eq!(
        verify_sign1_raw(&cbor, &other, b""),
        Err(CoseError::BadSignature)
    );
    // Bytes 8..13 are the unprotected header {4: '11'}, which RFC 9052
    // leaves unsigned: changing the kid there still verifies. That is why
    // kessai's profile requires an empty unprotected header.
    let unprotected = 8..13;
    assert_eq!(&cbor[unprotected.clone()], &[0xa1, 0x04, 0x42, 0x31, 0x31]);
    for i in (0..cbor.len()).filter(|i| !unprotected.contains(i)) {
        let mut bad = cbor.clone();
        bad[i] ^= 0x01;
        assert!(
            verify_sign1_raw(&bad, &vk, b"").is_err(),
            "flipped byte {i}"
        );
    }
    let mut other_kid = cbor.clone();
    other_kid[12] = b'2';
    assert_eq!(verify_sign1_raw(&other_kid, &vk, b"").unwrap(), payload);
    // Untagged form of the same object verifies too (raw reader).
    let untagged = sign1.clone().to_vec().unwrap();
    assert_eq!(verify_sign1_raw(&untagged, &vk, b"").unwrap(), payload);
}

#[test]
fn draft_cose_hpke_25_hpke3_encrypt0_vectors_open() {
    let recs = common::records(include_str!("vectors/cose-hpke-25-hpke3-encrypt0.txt"));
    let key = &recs[0];
    let kp = HpkeKeyPair::from_secret_bytes(&key.arr::<32>("d"));
    assert_eq!(kp.public_key().to_bytes(), key.arr::<32>("x"));
    let plaintext = key.get("plaintext").as_bytes();
    let external_aad = key.get("external_aad").as_bytes();
    let external_info = key.get("external_info").as_bytes();

    let cases = &recs[1..];
    assert_eq!(cases.len(), 4);
    for case in cases {
        let name = case.get("name");
        let ct = case.hex("ct");
        let aad: &[u8] = match case.get("aad") {
            "default" => b"",
            "external" => external_aad,
            other => panic!("aad {other}"),
        };
        let info: &[u8] = match case.get("info") {
            "default" => b"",
            "external" => external_info,
            other => panic!("info {other}"),
        };
        let pt = open_encrypt0_raw(&ct, &kp, aad, info).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(pt.expose(), plaintext, "{name}");

        // Swapping the AAD or info in or out breaks it.
        let other_aad: &[u8] = if aad.is_empty() { external_aad } else { b"" };
        assert_eq!(
            open_encrypt0_raw(&ct, &kp, other_aad, info),
            Err(CoseError::DecryptionFailed),
            "{name}"
        );
        let other_info: &[u8] = if info.is_empty() { external_info } else { b"" };
        assert_eq!(
            open_encrypt0_raw(&ct, &kp, aad, other_info),
            Err(CoseError::DecryptionFailed),
            "{name}"
        );
    }

    // The vectors carry `kid` unprotected; the strict kessai reader refuses
    // that shape, the raw reader does not care.
    let first = cases[0].hex("ct");
    assert!(matches!(
        kessai_crypto::cose::peek(&first),
        Err(CoseError::UnsupportedAlgorithm | CoseError::MissingHeader(_))
    ));
    // A different recipient key cannot open it.
    let other = HpkeKeyPair::derive(&[1; 32]);
    assert_eq!(
        open_encrypt0_raw(&first, &other, b"", b""),
        Err(CoseError::DecryptionFailed)
    );
}
