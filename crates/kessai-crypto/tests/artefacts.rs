//! The COSE artefact layer through the public API: round trips, cross-type
//! safety, tampering, unknown keys, and hostile bytes.

use ciborium::Value;
use coset::{CoseSign1, TaggedCborSerializable, iana};
use kessai_crypto::CoseError;
use kessai_crypto::cose::{
    self, Artefact, BlobKind, Structure, VERSION_LABEL, open_artefact, open_bytes, peek,
    seal_artefact, seal_bytes, sign_artefact, verify_artefact, verify_sign1_raw,
};
use kessai_crypto::digest::sha256;
use kessai_crypto::hpke::HpkeKeyPair;
use kessai_crypto::sign::{SigningKey, VerifyingKey};
use kessai_ids::KeyRef;
use rand::rngs::StdRng;
use rand::{Rng, RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Bill {
    order: String,
    amount_minor: u64,
}
impl Artefact for Bill {
    const TYPE: &'static str = "bill";
    const VERSION: u32 = 1;
}

/// Same shape as a bill, different purpose.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Receipt {
    order: String,
    amount_minor: u64,
}
impl Artefact for Receipt {
    const TYPE: &'static str = "receipt";
    const VERSION: u32 = 1;
}

/// The next format version of the bill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct BillV2 {
    order: String,
    amount_minor: u64,
}
impl Artefact for BillV2 {
    const TYPE: &'static str = "bill";
    const VERSION: u32 = 2;
}

/// Claims to be a bill but has a different payload shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct NotABill {
    order: u64,
}
impl Artefact for NotABill {
    const TYPE: &'static str = "bill";
    const VERSION: u32 = 1;
}

/// Card data as a secret payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct CardData {
    pan: String,
}
impl Artefact for CardData {
    const TYPE: &'static str = "card-data";
    const VERSION: u32 = 1;
}

struct CardBlob;
impl BlobKind for CardBlob {
    const TYPE: &'static str = "card-data";
    const VERSION: u32 = 1;
}

struct PinBlob;
impl BlobKind for PinBlob {
    const TYPE: &'static str = "pin-block";
    const VERSION: u32 = 1;
}

struct BadName;
impl BlobKind for BadName {
    const TYPE: &'static str = "Not Valid";
    const VERSION: u32 = 1;
}

fn bill() -> Bill {
    Bill {
        order: "order-7".into(),
        amount_minor: 1200,
    }
}

fn kref(s: &str) -> KeyRef {
    s.parse().unwrap()
}

struct Signer {
    key: SigningKey,
    key_ref: KeyRef,
}

impl Signer {
    fn new(seed: u8, key_ref: &str) -> Self {
        Self {
            key: SigningKey::from_seed(&[seed; 32]),
            key_ref: kref(key_ref),
        }
    }

    fn resolver(&self) -> impl Fn(&KeyRef) -> Option<VerifyingKey> + '_ {
        move |r| (r == &self.key_ref).then(|| self.key.verifying_key())
    }
}

/// Re-encodes a Sign1 after `edit`, keeping the original signature.
fn edit_sign1(bytes: &[u8], edit: impl FnOnce(&mut CoseSign1)) -> Vec<u8> {
    let mut s = CoseSign1::from_tagged_slice(bytes).unwrap();
    edit(&mut s);
    s.to_tagged_vec().unwrap()
}

/// Signs an arbitrary protected header with `key` (for building objects
/// our own signer refuses to make).
fn sign_with_header(header: coset::Header, payload: Vec<u8>, key: &SigningKey) -> Vec<u8> {
    coset::CoseSign1Builder::new()
        .protected(header)
        .payload(payload)
        .create_signature(b"", |tbs| key.sign(tbs).to_vec())
        .build()
        .to_tagged_vec()
        .unwrap()
}

fn profile_header(key_ref: &KeyRef, typ: &str, version: u32) -> coset::HeaderBuilder {
    coset::HeaderBuilder::new()
        .algorithm(iana::Algorithm::EdDSA)
        .key_id(key_ref.to_kid())
        .value(16, Value::Text(typ.into()))
        .value(VERSION_LABEL, Value::from(version))
}

fn cbor<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::ser::into_writer(v, &mut out).unwrap();
    out
}

#[test]
fn sign_and_verify_round_trip() {
    let s = Signer::new(1, "store-1-sign#1");
    let bytes = sign_artefact(&bill(), &s.key, &s.key_ref).unwrap();
    let v = verify_artefact::<Bill>(&bytes, s.resolver()).unwrap();
    assert_eq!(v.payload(), &bill());
    assert_eq!(v.signer(), &s.key_ref);
    assert_eq!(v.bytes(), &bytes[..]);
    assert_eq!(v.digest(), sha256(&[&bytes]));
    assert!(format!("{v:?}").contains("store-1-sign#1"));
    assert_eq!(v.into_payload(), bill());
    // Ed25519 and the encoding are deterministic: same input, same bytes.
    assert_eq!(sign_artefact(&bill(), &s.key, &s.key_ref).unwrap(), bytes);
}

#[test]
fn output_is_a_plain_cose_sign1_for_coset_and_the_raw_verifier() {
    let s = Signer::new(2, "host-sign#3");
    let bytes = sign_artefact(&bill(), &s.key, &s.key_ref).unwrap();
    assert_eq!(bytes[0], 0xd2, "tag 18");
    let parsed = CoseSign1::from_tagged_slice(&bytes).unwrap();
    let h = &parsed.protected.header;
    assert_eq!(
        h.alg,
        Some(coset::Algorithm::Assigned(iana::Algorithm::EdDSA))
    );
    assert_eq!(h.key_id, b"host-sign#3");
    assert!(h.crit.is_empty());
    assert_eq!(
        h.rest,
        vec![
            (
                coset::Label::Int(16),
                Value::Text("application/kessai-bill+cbor".into())
            ),
            (coset::Label::Int(VERSION_LABEL), Value::from(1)),
        ]
    );
    assert!(parsed.unprotected.is_empty());
    assert_eq!(parsed.payload.as_deref(), Some(&cbor(&bill())[..]));
    let vk = s.key.verifying_key();
    parsed
        .verify_signature(b"", |sig, tbs| vk.verify(tbs, sig.try_into().unwrap()))
        .unwrap();
    assert_eq!(verify_sign1_raw(&bytes, &vk, b"").unwrap(), cbor(&bill()));
}

#[test]
fn an_artefact_of_one_type_never_verifies_as_another() {
    let s = Signer::new(3, "store-1-sign#1");
    let bytes = sign_artefact(&bill(), &s.key, &s.key_ref).unwrap();
    assert_eq!(
        verify_artefact::<Receipt>(&bytes, s.resolver()).unwrap_err(),
        CoseError::WrongType {
            expected: "receipt",
            found: "bill".into()
        }
    );
    assert_eq!(
        verify_artefact::<BillV2>(&bytes, s.resolver()).unwrap_err(),
        CoseError::WrongVersion {
            expected: 2,
            found: 1
        }
    );
    let receipt = Receipt {
        order: "order-7".into(),
        amount_minor: 1200,
    };
    let rbytes = sign_artefact(&receipt, &s.key, &s.key_ref).unwrap();
    assert!(matches!(
        verify_artefact::<Bill>(&rbytes, s.resolver()),
        Err(CoseError::WrongType {
            expected: "bill",
            ..
        })
    ));
    // Relabelling the type in the protected header breaks the signature.
    let relabelled = edit_sign1(&bytes, |c| {
        c.protected.original_data = None;
        c.protected.header.rest[0].1 = Value::Text("application/kessai-receipt+cbor".into());
    });
    assert_eq!(
        verify_artefact::<Receipt>(&relabelled, s.resolver()).unwrap_err(),
        CoseError::BadSignature
    );
    // A signed object is not an encrypted one and vice versa.
    assert_eq!(
        open_artefact::<Bill, HpkeKeyPair>(&bytes, |_| None, b"").unwrap_err(),
        CoseError::Malformed("wrong COSE tag")
    );
}

#[test]
fn tampering_is_detected() {
    let s = Signer::new(4, "store-1-sign#1");
    let bytes = sign_artefact(&bill(), &s.key, &s.key_ref).unwrap();

    let more_money = edit_sign1(&bytes, |c| {
        c.payload = Some(cbor(&Bill {
            order: "order-7".into(),
            amount_minor: 1,
        }))
    });
    assert_eq!(
        verify_artefact::<Bill>(&more_money, s.resolver()).unwrap_err(),
        CoseError::BadSignature
    );
    let bad_sig = edit_sign1(&bytes, |c| c.signature[5] ^= 0x20);
    assert_eq!(
        verify_artefact::<Bill>(&bad_sig, s.resolver()).unwrap_err(),
        CoseError::BadSignature
    );
    let short_sig = edit_sign1(&bytes, |c| {
        c.signature.pop();
    });
    assert_eq!(
        verify_artefact::<Bill>(&short_sig, s.resolver()).unwrap_err(),
        CoseError::BadSignature
    );
    // A different protected header (another known key's kid) with the old
    // signature.
    let other = Signer::new(5, "store-2-sign#1");
    let rekeyed = edit_sign1(&bytes, |c| {
        c.protected.original_data = None;
        c.protected.header.key_id = other.key_ref.to_kid();
    });
    let both = |r: &KeyRef| {
        if r == &s.key_ref {
            Some(s.key.verifying_key())
        } else if r == &other.key_ref {
            Some(other.key.verifying_key())
        } else {
            None
        }
    };
    assert_eq!(
        verify_artefact::<Bill>(&rekeyed, both).unwrap_err(),
        CoseError::BadSignature
    );
    // Every single-bit change anywhere is refused.
    for i in 0..bytes.len() {
        for bit in [0x01u8, 0x80] {
            let mut bad = bytes.clone();
            bad[i] ^= bit;
            assert!(
                verify_artefact::<Bill>(&bad, s.resolver()).is_err(),
                "byte {i} bit {bit:#x}"
            );
        }
    }
}

#[test]
fn unknown_or_wrong_keys() {
    let s = Signer::new(6, "store-1-sign#1");
    let bytes = sign_artefact(&bill(), &s.key, &s.key_ref).unwrap();
    assert_eq!(
        verify_artefact::<Bill>(&bytes, |_| None).unwrap_err(),
        CoseError::UnknownKey(s.key_ref.clone())
    );
    // The resolver hands back a key, but not the signer's.
    let impostor = SigningKey::from_seed(&[66; 32]).verifying_key();
    assert_eq!(
        verify_artefact::<Bill>(&bytes, |_| Some(impostor)).unwrap_err(),
        CoseError::BadSignature
    );
    // Rotation: version 2 of the same key id is a different key.
    let v2 = kref("store-1-sign#2");
    assert_eq!(
        verify_artefact::<Bill>(&bytes, |r| (r == &v2).then(|| s.key.verifying_key())).unwrap_err(),
        CoseError::UnknownKey(s.key_ref.clone())
    );
}

#[test]
fn headers_outside_the_profile_are_refused() {
    let s = Signer::new(7, "store-1-sign#1");
    let typ = "application/kessai-bill+cbor";
    let payload = cbor(&bill());

    let with_crit = sign_with_header(
        profile_header(&s.key_ref, typ, 1)
            .add_critical(iana::HeaderParameter::Kid)
            .build(),
        payload.clone(),
        &s.key,
    );
    assert_eq!(
        verify_artefact::<Bill>(&with_crit, s.resolver()).unwrap_err(),
        CoseError::CriticalHeader
    );

    let with_content_type = sign_with_header(
        profile_header(&s.key_ref, typ, 1)
            .content_format(iana::CoapContentFormat::Cbor)
            .build(),
        payload.clone(),
        &s.key,
    );
    assert_eq!(
        verify_artefact::<Bill>(&with_content_type, s.resolver()).unwrap_err(),
        CoseError::UnexpectedHeader("unknown protected label")
    );

    let es256 = sign_with_header(
        profile_header(&s.key_ref, typ, 1)
            .algorithm(iana::Algorithm::ES256)
            .build(),
        payload.clone(),
        &s.key,
    );
    assert_eq!(
        verify_artefact::<Bill>(&es256, s.resolver()).unwrap_err(),
        CoseError::UnsupportedAlgorithm
    );

    let no_typ = sign_with_header(
        coset::HeaderBuilder::new()
            .algorithm(iana::Algorithm::EdDSA)
            .key_id(s.key_ref.to_kid())
            .value(VERSION_LABEL, Value::from(1))
            .build(),
        payload.clone(),
        &s.key,
    );
    assert_eq!(
        verify_artefact::<Bill>(&no_typ, s.resolver()).unwrap_err(),
        CoseError::MissingHeader("typ")
    );

    let bad_kid = sign_with_header(
        profile_header(&kref("a#1"), typ, 1)
            .key_id(b"no version".to_vec())
            .build(),
        payload.clone(),
        &s.key,
    );
    assert_eq!(
        verify_artefact::<Bill>(&bad_kid, s.resolver()).unwrap_err(),
        CoseError::BadKeyRef
    );

    // Anything in the unprotected bucket, even a correct kid.
    let bytes = sign_artefact(&bill(), &s.key, &s.key_ref).unwrap();
    let unprotected_kid = edit_sign1(&bytes, |c| c.unprotected.key_id = s.key_ref.to_kid());
    assert_eq!(
        verify_artefact::<Bill>(&unprotected_kid, s.resolver()).unwrap_err(),
        CoseError::UnexpectedHeader("unprotected header must be empty")
    );

    // Detached payload.
    let detached = edit_sign1(&bytes, |c| c.payload = None);
    assert_eq!(
        verify_artefact::<Bill>(&detached, s.resolver()).unwrap_err(),
        CoseError::Malformed("detached payload")
    );
}

#[test]
fn payloads_that_do_not_decode_are_refused_after_the_signature() {
    let s = Signer::new(8, "store-1-sign#1");
    let impostor = sign_artefact(&NotABill { order: 7 }, &s.key, &s.key_ref).unwrap();
    assert_eq!(
        verify_artefact::<Bill>(&impostor, s.resolver()).unwrap_err(),
        CoseError::MalformedPayload
    );
    // Trailing bytes after a valid payload item.
    let mut payload = cbor(&bill());
    payload.push(0x00);
    let trailing = sign_with_header(
        profile_header(&s.key_ref, "application/kessai-bill+cbor", 1).build(),
        payload,
        &s.key,
    );
    assert_eq!(
        verify_artefact::<Bill>(&trailing, s.resolver()).unwrap_err(),
        CoseError::MalformedPayload
    );
}

#[test]
fn non_canonical_re_encodings_are_refused() {
    let s = Signer::new(9, "store-1-sign#1");
    let bytes = sign_artefact(&bill(), &s.key, &s.key_ref).unwrap();
    // 0x84 (array of 4) written as 0x98 0x04: same value, other bytes, so
    // a different digest for the same signed bill — refused.
    assert_eq!(bytes[1], 0x84);
    let mut longer = vec![0xd2, 0x98, 0x04];
    longer.extend_from_slice(&bytes[2..]);
    assert!(verify_sign1_raw(&longer, &s.key.verifying_key(), b"").is_ok());
    assert_eq!(
        verify_artefact::<Bill>(&longer, s.resolver()).unwrap_err(),
        CoseError::Malformed("non-canonical CBOR encoding")
    );
    // Untagged.
    assert_eq!(
        verify_artefact::<Bill>(&bytes[1..], s.resolver()).unwrap_err(),
        CoseError::Malformed("missing COSE tag")
    );
}

#[test]
fn truncated_and_garbage_bytes_are_errors_not_panics() {
    let s = Signer::new(10, "store-1-sign#1");
    let mut rng = StdRng::seed_from_u64(10);
    let kp = HpkeKeyPair::generate(&mut rng);
    let recipient = kref("host-enc#1");
    let signed = sign_artefact(&bill(), &s.key, &s.key_ref).unwrap();
    let sealed = seal_artefact(&bill(), kp.public_key(), &recipient, b"", &mut rng).unwrap();
    let resolve_kp = |r: &KeyRef| (r == &recipient).then_some(&kp);
    let vk = s.key.verifying_key();

    let check = |bytes: &[u8]| {
        assert!(verify_artefact::<Bill>(bytes, s.resolver()).is_err());
        assert!(open_artefact::<Bill, _>(bytes, resolve_kp, b"").is_err());
        assert!(open_bytes::<CardBlob, _>(bytes, resolve_kp, b"").is_err());
        assert!(verify_sign1_raw(bytes, &vk, b"").is_err());
        assert!(cose::open_encrypt0_raw(bytes, &kp, b"", b"").is_err());
        let _ = peek(bytes);
    };
    for n in 0..signed.len() {
        check(&signed[..n]);
    }
    for n in 0..sealed.len() {
        check(&sealed[..n]);
    }
    for _ in 0..3000 {
        let len = rng.random_range(0..160);
        let mut junk = vec![0u8; len];
        rng.fill_bytes(&mut junk);
        // Half of them start like a COSE object to get past the first byte.
        if len > 2 && rng.random::<bool>() {
            junk[0] = if rng.random::<bool>() { 0xd2 } else { 0xd0 };
            junk[1] = 0x84 - u8::from(junk[0] == 0xd0);
        }
        check(&junk);
    }
    // Random multi-byte mutations of valid objects.
    for _ in 0..2000 {
        for base in [&signed, &sealed] {
            let mut m = base.clone();
            for _ in 0..rng.random_range(1..4) {
                let i = rng.random_range(0..m.len());
                m[i] ^= rng.random_range(1..=255u8);
            }
            check(&m);
        }
    }
}

#[test]
fn seal_and_open_round_trip() {
    let mut rng = StdRng::seed_from_u64(20);
    let kp = HpkeKeyPair::generate(&mut rng);
    let recipient = kref("host-transmission#2");
    let card = CardData {
        pan: "4111111111111111".into(),
    };
    let bytes = seal_artefact(&card, kp.public_key(), &recipient, b"txn-9", &mut rng).unwrap();
    assert_eq!(bytes[0], 0xd0, "tag 16");
    let opened =
        open_artefact::<CardData, _>(&bytes, |r| (r == &recipient).then_some(&kp), b"txn-9")
            .unwrap();
    assert_eq!(opened.payload(), &card);
    assert_eq!(opened.recipient(), &recipient);
    assert_eq!(opened.digest(), sha256(&[&bytes]));
    assert_eq!(opened.bytes(), &bytes[..]);
    let dbg = format!("{opened:?}");
    assert!(!dbg.contains("4111"), "{dbg}");
    assert!(dbg.contains("redacted"));
    // The resolver may hand out owned key pairs too.
    let owned =
        open_artefact::<CardData, HpkeKeyPair>(&bytes, |_| Some(kp.clone()), b"txn-9").unwrap();
    assert_eq!(owned.into_payload(), card);
    // The plaintext never appears in the object.
    assert!(!bytes.windows(4).any(|w| w == b"4111"));
    // Two seals differ (fresh ephemeral key) but both open.
    let again = seal_artefact(&card, kp.public_key(), &recipient, b"txn-9", &mut rng).unwrap();
    assert_ne!(again, bytes);

    let p = peek(&bytes).unwrap();
    assert_eq!(p.structure, Structure::Encrypt0);
    assert_eq!(p.kid, recipient);
    assert_eq!(p.version, 1);
    assert_eq!(p.typ, "application/kessai-card-data+cbor");
    assert_eq!(p.type_name(), Some("card-data"));
}

#[test]
fn sealed_artefacts_refuse_every_mismatch() {
    let mut rng = StdRng::seed_from_u64(21);
    let kp = HpkeKeyPair::generate(&mut rng);
    let other_kp = HpkeKeyPair::generate(&mut rng);
    let recipient = kref("host-transmission#2");
    let resolve = |r: &KeyRef| (r == &recipient).then_some(&kp);
    let bytes = seal_artefact(&bill(), kp.public_key(), &recipient, b"aad", &mut rng).unwrap();

    assert_eq!(
        open_artefact::<Bill, _>(&bytes, resolve, b"other").unwrap_err(),
        CoseError::DecryptionFailed
    );
    assert_eq!(
        open_artefact::<Bill, _>(&bytes, |_| Some(&other_kp), b"aad").unwrap_err(),
        CoseError::DecryptionFailed
    );
    assert_eq!(
        open_artefact::<Bill, HpkeKeyPair>(&bytes, |_| None, b"aad").unwrap_err(),
        CoseError::UnknownKey(recipient.clone())
    );
    assert_eq!(
        open_artefact::<Receipt, _>(&bytes, resolve, b"aad").unwrap_err(),
        CoseError::WrongType {
            expected: "receipt",
            found: "bill".into()
        }
    );
    assert_eq!(
        open_artefact::<BillV2, _>(&bytes, resolve, b"aad").unwrap_err(),
        CoseError::WrongVersion {
            expected: 2,
            found: 1
        }
    );
    assert!(matches!(
        verify_artefact::<Bill>(&bytes, |_| None),
        Err(CoseError::Malformed("wrong COSE tag"))
    ));

    // Header swap: a receipt's protected header on the bill's ciphertext.
    let receipt = Receipt {
        order: "order-7".into(),
        amount_minor: 1200,
    };
    let rbytes = seal_artefact(&receipt, kp.public_key(), &recipient, b"aad", &mut rng).unwrap();
    let parts = |b: &[u8]| -> Vec<Value> {
        match ciborium::de::from_reader::<Value, _>(b).unwrap() {
            Value::Tag(16, inner) => match *inner {
                Value::Array(a) => a,
                _ => panic!(),
            },
            _ => panic!(),
        }
    };
    let assemble = |items: Vec<Value>| {
        let mut out = Vec::new();
        ciborium::ser::into_writer(&Value::Tag(16, Box::new(Value::Array(items))), &mut out)
            .unwrap();
        out
    };
    let (b, r) = (parts(&bytes), parts(&rbytes));
    let swapped = assemble(vec![r[0].clone(), b[1].clone(), b[2].clone()]);
    assert_eq!(
        open_artefact::<Receipt, _>(&swapped, resolve, b"aad").unwrap_err(),
        CoseError::DecryptionFailed
    );
    // The receipt's ek with the bill's ciphertext.
    let swapped_ek = assemble(vec![b[0].clone(), r[1].clone(), b[2].clone()]);
    assert_eq!(
        open_artefact::<Bill, _>(&swapped_ek, resolve, b"aad").unwrap_err(),
        CoseError::DecryptionFailed
    );
    // Extra unprotected header.
    let Value::Map(mut unprot) = b[1].clone() else {
        panic!()
    };
    unprot.push((
        Value::from(4),
        Value::Bytes(b"host-transmission#2".to_vec()),
    ));
    let extra = assemble(vec![b[0].clone(), Value::Map(unprot), b[2].clone()]);
    assert_eq!(
        open_artefact::<Bill, _>(&extra, resolve, b"aad").unwrap_err(),
        CoseError::UnexpectedHeader("unprotected header other than ek")
    );
    // Missing ek.
    let no_ek = assemble(vec![b[0].clone(), Value::Map(vec![]), b[2].clone()]);
    assert_eq!(
        open_artefact::<Bill, _>(&no_ek, resolve, b"aad").unwrap_err(),
        CoseError::MissingHeader("ek")
    );
    // Every single-bit change is refused.
    for i in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[i] ^= 0x04;
        assert!(
            open_artefact::<Bill, _>(&bad, resolve, b"aad").is_err(),
            "byte {i}"
        );
    }
}

#[test]
fn our_encrypt0_is_readable_by_the_draft_rules() {
    let mut rng = StdRng::seed_from_u64(22);
    let kp = HpkeKeyPair::generate(&mut rng);
    let recipient = kref("host-transmission#2");
    let bytes = seal_bytes::<CardBlob>(
        b"track2 data",
        kp.public_key(),
        &recipient,
        b"ext",
        &mut rng,
    )
    .unwrap();
    let pt = cose::open_encrypt0_raw(&bytes, &kp, b"ext", b"").unwrap();
    assert_eq!(pt.expose(), b"track2 data");
}

#[test]
fn blobs_round_trip_and_stay_in_their_lane() {
    let mut rng = StdRng::seed_from_u64(23);
    let kp = HpkeKeyPair::generate(&mut rng);
    let recipient = kref("txn-key#1");
    let resolve = |r: &KeyRef| (r == &recipient).then_some(&kp);
    let bytes = seal_bytes::<CardBlob>(
        b"\x01\x02secret",
        kp.public_key(),
        &recipient,
        b"",
        &mut rng,
    )
    .unwrap();
    let opened = open_bytes::<CardBlob, _>(&bytes, resolve, b"").unwrap();
    assert_eq!(opened.payload().expose(), b"\x01\x02secret");
    assert_eq!(opened.recipient(), &recipient);
    assert_eq!(
        open_bytes::<PinBlob, _>(&bytes, resolve, b"").unwrap_err(),
        CoseError::WrongType {
            expected: "pin-block",
            found: "card-data".into()
        }
    );
    // A blob named "card-data" is not the artefact named "card-data".
    assert!(matches!(
        open_artefact::<CardData, _>(&bytes, resolve, b""),
        Err(CoseError::WrongType {
            expected: "card-data",
            ..
        })
    ));
    let p = peek(&bytes).unwrap();
    assert_eq!(p.typ, "application/kessai-card-data");
    assert_eq!(p.type_name(), Some("card-data"));
    // Invalid type names are refused when sealing.
    assert_eq!(
        seal_bytes::<BadName>(b"x", kp.public_key(), &recipient, b"", &mut rng).unwrap_err(),
        CoseError::Encode
    );
}

#[test]
fn peek_reads_without_verifying() {
    let s = Signer::new(11, "store-1-sign#1");
    let bytes = sign_artefact(&bill(), &s.key, &s.key_ref).unwrap();
    let p = peek(&bytes).unwrap();
    assert_eq!(p.structure, Structure::Sign1);
    assert_eq!(p.kid, s.key_ref);
    assert_eq!(p.version, 1);
    assert_eq!(p.type_name(), Some("bill"));
    // A forged signature still peeks fine: peek proves nothing.
    let forged = edit_sign1(&bytes, |c| c.signature = vec![0; 64]);
    assert_eq!(peek(&forged).unwrap(), p);
    assert!(verify_artefact::<Bill>(&forged, s.resolver()).is_err());
    assert!(peek(b"").is_err());
    assert!(peek(&[0xd2]).is_err());
    assert!(peek(&bytes[1..]).is_err());
}

#[test]
fn oversized_objects_are_refused_both_ways() {
    let mut rng = StdRng::seed_from_u64(30);
    let kp = HpkeKeyPair::generate(&mut rng);
    let recipient = kref("host-enc#1");
    let huge = vec![0u8; cose::MAX_OBJECT_LEN];
    assert_eq!(
        seal_bytes::<CardBlob>(&huge, kp.public_key(), &recipient, b"", &mut rng).unwrap_err(),
        CoseError::TooLarge {
            max: cose::MAX_OBJECT_LEN
        }
    );
    let s = Signer::new(12, "store-1-sign#1");
    let big_bill = Bill {
        order: "x".repeat(cose::MAX_OBJECT_LEN),
        amount_minor: 1,
    };
    assert_eq!(
        sign_artefact(&big_bill, &s.key, &s.key_ref).unwrap_err(),
        CoseError::TooLarge {
            max: cose::MAX_OBJECT_LEN
        }
    );
    // Just under the limit still works.
    let ok = vec![7u8; cose::MAX_OBJECT_LEN - 200];
    let bytes = seal_bytes::<CardBlob>(&ok, kp.public_key(), &recipient, b"", &mut rng).unwrap();
    let opened = open_bytes::<CardBlob, _>(&bytes, |_| Some(&kp), b"").unwrap();
    assert_eq!(opened.payload().expose(), &ok[..]);
    let mut too_long = bytes.clone();
    too_long.resize(cose::MAX_OBJECT_LEN + 1, 0);
    assert_eq!(
        peek(&too_long).unwrap_err(),
        CoseError::TooLarge {
            max: cose::MAX_OBJECT_LEN
        }
    );
}
