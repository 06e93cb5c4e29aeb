//! Evidence export writes the artefacts, an index and the verifying keys,
//! so that a third party can check every signature from the files alone.

use std::sync::Arc;

use kessai_crypto::cose::{Artefact, sign_artefact, verify_sign1_raw};
use kessai_crypto::sign::{SigningKey, VerifyingKey};
use kessai_host::clock::ManualClock;
use kessai_store::evidence::{self, NewEvidence};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct TestBill {
    amount_minor: i64,
}

impl Artefact for TestBill {
    const TYPE: &'static str = "kessai-test-bill";
    const VERSION: u32 = 1;
}

#[tokio::test]
async fn export_is_verifiable_from_the_files_alone() {
    let dir = tempfile::tempdir().unwrap();
    let db = kessai_store::Db::open(dir.path().to_str().unwrap())
        .await
        .unwrap();
    let app = kessai_host::app::state_for_db(db, dir.path(), Arc::new(ManualClock::new(5)))
        .await
        .unwrap();
    let store_key = SigningKey::from_seed(&[4; 32]);
    kessai_store::registry::insert_merchant(
        &app.db,
        &kessai_store::registry::NewMerchant {
            id: "store-1".parse().unwrap(),
            kind: kessai_store::registry::MerchantKind::Store,
            name: "S".into(),
            mall_id: None,
            currency: kessai_money::Currency::from_code("JPY").unwrap(),
            payable_account: Some("payable.store-1".parse().unwrap()),
            public_key: Some(store_key.verifying_key().to_bytes()),
            now_ms: 5,
        },
    )
    .await
    .unwrap();
    let bill = sign_artefact(
        &TestBill { amount_minor: 700 },
        &store_key,
        &"store-1#1".parse().unwrap(),
    )
    .unwrap();
    let (host_ref, host_key) = app.keys.host_signer().await.unwrap();
    let ack = sign_artefact(&TestBill { amount_minor: 700 }, &host_key, &host_ref).unwrap();
    let bill_digest = evidence::put(
        &app.db,
        &NewEvidence {
            kind: "kessai-test-bill",
            subject: "bill:x",
            signer: "store-1#1",
            binds: &[],
            bytes: &bill,
            now_ms: 5,
            purge_after_ms: None,
        },
    )
    .await
    .unwrap();
    let host_ref_text = host_ref.to_string();
    evidence::put(
        &app.db,
        &NewEvidence {
            kind: "kessai-test-ack",
            subject: "bill:x",
            signer: &host_ref_text,
            binds: &[bill_digest],
            bytes: &ack,
            now_ms: 6,
            purge_after_ms: None,
        },
    )
    .await
    .unwrap();

    let out = dir.path().join("evidence");
    let index = kessai_host::evidence_export::export(&app, &["bill:x".to_string()], &out, &[])
        .await
        .unwrap();
    assert_eq!(index.len(), 2);
    let parsed: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
    assert_eq!(parsed[1]["binds"][0], hex::encode(bill_digest));
    for e in parsed.as_array().unwrap() {
        let bytes = std::fs::read(out.join(e["file"].as_str().unwrap())).unwrap();
        let pem = std::fs::read_to_string(
            out.join("keys")
                .join(format!("{}.pem", e["signer"].as_str().unwrap())),
        )
        .unwrap();
        let vk = VerifyingKey::from_public_pem(&pem).unwrap();
        verify_sign1_raw(&bytes, &vk, b"").unwrap();
        use sha2::Digest;
        assert_eq!(
            hex::encode(sha2::Sha256::digest(&bytes)),
            e["digest"].as_str().unwrap()
        );
    }
    assert!(
        kessai_host::evidence_export::export(&app, &["bill:none".to_string()], &out, &[])
            .await
            .is_err()
    );
}
