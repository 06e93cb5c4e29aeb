//! `kessai demo --flow d --evidence-dir DIR` as a user runs it: exit 0, the
//! narration of every step, an `index.json` naming every artefact, the
//! `.cose` files, every signed artefact verifying with the exported public
//! key named by its signer (plain RFC 9052 verification), and no clear card
//! number or PIN in the output, the logs or the artefacts.

use std::process::Command;

use kessai_crypto::cose::verify_sign1_raw;
use kessai_crypto::sign::VerifyingKey;

/// The demo's card number and PINs (see `src/demo/flow_d.rs`).
const PAN: &str = "4000056655665556";
const PINS: [&str; 2] = ["730519", "111999"];

#[test]
fn demo_flow_d_writes_verifiable_evidence_and_leaks_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kessai"))
        .args(["demo", "--flow", "d", "--evidence-dir"])
        .arg(dir.path())
        .env("KESSAI_LOG", "debug")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("flow D ok"), "{stdout}");
    for step in [
        "temporary password",
        "keyed in the password with 510 JPY: settled",
        "receipt pushed to the phone",
        "refused (password-used)",
        "scanned the EMVCo QR code",
        "refused (password-expired)",
        "wrong-pin",
        "till-1 signalled",
        "checked in the phone against its issuer-signed profile",
        "in-phone card check refused the card",
        "the card's matcher says no",
        "matched on the card (claim 16)",
        "fingerprint-authorized password with 800 JPY: settled",
        "signature verified",
        "12 phones paid 12 baskets concurrently over the link: 12 receipts printed",
    ] {
        assert!(stdout.contains(step), "{step} missing from the narration");
    }
    assert!(stdout.contains("400005******5556"));
    for secret in std::iter::once(PAN).chain(PINS) {
        assert!(!stdout.contains(secret), "{secret} in the demo output");
        assert!(!stderr.contains(secret), "{secret} in the logs");
    }

    let ev = dir.path().join("flow-d");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ev.join("index.json")).unwrap()).unwrap();
    let entries = index.as_array().unwrap();
    let mut verified = 0;
    let mut sealed = 0;
    for e in entries {
        let file = ev.join(e["file"].as_str().unwrap());
        let signer = e["signer"].as_str().unwrap();
        let bytes = std::fs::read(&file).unwrap();
        assert_eq!(
            hex::encode(kessai_crypto::digest::sha256(&[&bytes])),
            e["digest"].as_str().unwrap()
        );
        assert!(
            !String::from_utf8_lossy(&bytes).contains(PAN),
            "clear PAN in {}",
            file.display()
        );
        if signer.is_empty() {
            assert_eq!(e["type"], "flow-d-cardholder");
            sealed += 1;
            continue;
        }
        assert_eq!(e["type"], "flow-d-receipt");
        let pem = std::fs::read_to_string(ev.join("keys").join(format!("{signer}.pem")))
            .unwrap_or_else(|_| panic!("no exported key for {signer}"));
        let vk = VerifyingKey::from_public_pem(&pem).unwrap();
        verify_sign1_raw(&bytes, &vk, b"")
            .unwrap_or_else(|err| panic!("{} does not verify: {err}", file.display()));
        verified += 1;
    }
    // 4 keyed/scanned/merchant-card/fingerprint sales + 12 short-range
    // sales.
    assert_eq!(verified, 16, "one signed receipt per settled sale");
    // Authorizations: 3 PIN (one expired unused) + merchant card +
    // fingerprint + 12 short-range.
    assert_eq!(
        sealed, 17,
        "one sealed cardholder payload per authorization"
    );
}
