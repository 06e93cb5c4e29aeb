//! `kessai demo --flow c --evidence-dir DIR` as a user runs it: exit 0, an
//! `index.json` naming every artefact, the `.cose` files, every signed
//! artefact verifying with the exported public key named by its signer
//! (plain RFC 9052 verification, no kessai types), and no clear card number
//! or PIN in the demo's output (narration and logs at debug level) or in
//! the merchant's messages.

use std::process::Command;

use kessai_crypto::cose::verify_sign1_raw;
use kessai_crypto::sign::VerifyingKey;

/// The demo's card number and PINs (see `src/demo/flow_c.rs`).
const PAN: &str = "4000056655665556";
const PINS: [&str; 2] = ["730519", "111999"];

#[test]
fn demo_flow_c_writes_verifiable_evidence_and_leaks_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kessai"))
        .args(["demo", "--flow", "c", "--evidence-dir"])
        .arg(dir.path())
        .env("KESSAI_LOG", "debug")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("flow C ok"), "{stdout}");
    for step in [
        "settled",
        "declined (rejected)",
        "declined (approval_timeout)",
        "declined (pin_incorrect)",
        "ciphertext-replayed",
        "no clear card number, no PIN",
    ] {
        assert!(stdout.contains(step), "{step} missing from the narration");
    }
    assert_eq!(stdout.matches("flowc.txn_keys_destroyed").count(), 4);
    // The masked form is shown, the clear PAN and PINs never.
    assert!(stdout.contains("400005******5556"));
    for secret in std::iter::once(PAN).chain(PINS) {
        assert!(!stdout.contains(secret), "{secret} in the demo output");
        assert!(!stderr.contains(secret), "{secret} in the logs");
    }

    let ev = dir.path().join("flow-c");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ev.join("index.json")).unwrap()).unwrap();
    let entries = index.as_array().unwrap();
    let kinds: Vec<&str> = entries
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    for k in [
        "flowc-payment-request",
        "flowc-approval-request",
        "flowc-approval-response",
        "flowc-transaction-key",
        "flowc-card-data",
        "flowc-pin-prompt",
        "flowc-pin-block",
        "flowc-completion-phone",
        "flowc-completion-merchant",
    ] {
        assert!(kinds.contains(&k), "{k} missing from the index: {kinds:?}");
    }
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == "flowc-completion-merchant")
            .count(),
        4
    );
    let mut verified = 0;
    let mut sealed = 0;
    for e in entries {
        let file = ev.join(e["file"].as_str().unwrap());
        let signer = e["signer"].as_str().unwrap();
        if e["purged"].as_bool().unwrap() {
            // Ciphertexts destroyed with their transaction: digest only.
            assert!(!file.exists(), "{} should be purged", file.display());
            assert_eq!(signer, "");
            continue;
        }
        let bytes = std::fs::read(&file).unwrap();
        assert_eq!(
            hex::encode(kessai_crypto::digest::sha256(&[&bytes])),
            e["digest"].as_str().unwrap()
        );
        if signer.is_empty() {
            sealed += 1;
            continue;
        }
        let pem = std::fs::read_to_string(ev.join("keys").join(format!("{signer}.pem")))
            .unwrap_or_else(|_| panic!("no exported key for {signer}"));
        let vk = VerifyingKey::from_public_pem(&pem).unwrap();
        verify_sign1_raw(&bytes, &vk, b"")
            .unwrap_or_else(|err| panic!("{} does not verify: {err}", file.display()));
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(PAN), "clear PAN in {}", file.display());
        verified += 1;
    }
    assert!(verified >= 20, "only {verified} signed artefacts verified");
    assert_eq!(sealed, 2, "the two captured ciphertexts");
}
