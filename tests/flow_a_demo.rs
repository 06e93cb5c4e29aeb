//! `kessai demo --flow a --evidence-dir DIR` as a user runs it: exit 0,
//! an `index.json` naming every artefact, the `.cose` files, and every
//! signed artefact verifying with the exported public key named by its
//! signer (plain RFC 9052 verification, no kessai types).

use std::process::Command;

use kessai_crypto::cose::verify_sign1_raw;
use kessai_crypto::sign::VerifyingKey;

#[test]
fn demo_flow_a_writes_verifiable_evidence() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kessai"))
        .args(["demo", "--flow", "a", "--evidence-dir"])
        .arg(dir.path())
        .env("KESSAI_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("flow A ok"), "{stdout}");
    assert!(stdout.contains("transmission-key-retired") || stdout.contains("is retired"));
    assert!(stdout.contains("retention purge deleted"));
    // No card number in clear in the narration: only masked forms.
    assert!(
        !stdout
            .as_bytes()
            .windows(12)
            .any(|w| w.starts_with(b"999001") && w.iter().all(u8::is_ascii_digit)),
        "a card number in clear in the demo output"
    );

    let ev = dir.path().join("flow-a");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ev.join("index.json")).unwrap()).unwrap();
    let entries = index.as_array().unwrap();
    let kinds: Vec<&str> = entries
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    for k in [
        "flow-a.permission",
        "flow-a.card-info",
        "flow-a.key-registration",
        "flow-a.txn",
        "flow-a.order",
        "flow-a.result",
        "flow-a.merchant-result",
        "flow-a.key-update",
        "flow-a.key-update-confirm",
    ] {
        assert!(kinds.contains(&k), "{k} missing from the index: {kinds:?}");
    }
    assert_eq!(kinds.iter().filter(|k| **k == "flow-a.txn").count(), 3);
    let mut verified = 0;
    for e in entries {
        let file = ev.join(e["file"].as_str().unwrap());
        let bytes = std::fs::read(&file).unwrap();
        assert_eq!(
            hex::encode(kessai_crypto::digest::sha256(&[&bytes])),
            e["digest"].as_str().unwrap()
        );
        let signer = e["signer"].as_str().unwrap();
        if signer.is_empty() {
            // Encrypted-only (card information sealed to the storage key).
            assert_eq!(e["type"], "flow-a.card-info");
            continue;
        }
        let pem = std::fs::read_to_string(ev.join("keys").join(format!("{signer}.pem")))
            .unwrap_or_else(|_| panic!("no exported key for {signer}"));
        let key = VerifyingKey::from_public_pem(&pem).unwrap();
        verify_sign1_raw(&bytes, &key, b"").unwrap_or_else(|err| {
            panic!("{} does not verify under {signer}: {err}", file.display())
        });
        // And a flipped byte does not.
        let mut bad = bytes.clone();
        let n = bad.len();
        bad[n - 1] ^= 1;
        assert!(verify_sign1_raw(&bad, &key, b"").is_err());
        verified += 1;
    }
    assert!(verified >= 15, "only {verified} signed artefacts verified");
}
