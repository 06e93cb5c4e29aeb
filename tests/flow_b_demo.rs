//! `kessai demo --flow b --evidence-dir DIR` as a user runs it: exit 0, the
//! narration of every part (top-up, store purchase, mall member purchase,
//! recovered purchase), an `index.json` naming every artefact, the `.cose`
//! files, every signed artefact verifying with the exported public key
//! named by its signer (plain RFC 9052 verification, no kessai types), and
//! no clear funding card number or PIN in the output or the logs.

use std::process::Command;

use kessai_crypto::cose::verify_sign1_raw;
use kessai_crypto::sign::VerifyingKey;

/// The demo's funding card number and PIN (see `src/demo/flow_b.rs`).
const PAN: &str = "4111111111111111";
const PIN: &str = "4321";

#[test]
fn demo_flow_b_writes_verifiable_evidence() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kessai"))
        .args(["demo", "--flow", "b", "--evidence-dir"])
        .arg(dir.path())
        .env("KESSAI_LOG", "debug")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("flow B ok"), "{stdout}");
    for step in [
        "purchase at a store",
        "purchase at a mall member store",
        "VALUE UPDATE verified (SIG5",
        "SETTLEMENT INFORMATION verified (SIG2",
        "SETTLEMENT COMPLETION verified (SIG3",
        "RECEIPT (SIG4",
        "PCN is LOST",
        ", recovered",
        "ledger consistent",
        "411111******1111",
    ] {
        assert!(
            stdout.contains(step),
            "{step:?} missing from the narration:\n{stdout}"
        );
    }
    assert!(
        !stdout.contains(PAN) && !stderr.contains(PAN),
        "clear card number"
    );
    assert!(
        !stdout.contains(&format!("\"{PIN}\"")) && !stderr.contains(&format!("\"{PIN}\"")),
        "clear PIN"
    );

    let ev = dir.path().join("flow-b");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ev.join("index.json")).unwrap()).unwrap();
    let entries = index.as_array().unwrap();
    let kinds: Vec<&str> = entries
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    for k in [
        "flow-b.bill",
        "flow-b.settlement-info",
        "flow-b.pcn-apdu",
        "flow-b.completion",
        "flow-b.receipt",
        "flow-b.card-log-apdu",
    ] {
        assert!(kinds.contains(&k), "{k} missing from the index: {kinds:?}");
    }
    // Three settlements, each with one completion and one receipt.
    assert_eq!(
        kinds.iter().filter(|k| **k == "flow-b.completion").count(),
        3
    );
    assert_eq!(kinds.iter().filter(|k| **k == "flow-b.receipt").count(), 3);
    let mut verified = 0;
    for e in entries {
        let file = ev.join(e["file"].as_str().unwrap());
        let bytes = std::fs::read(&file).unwrap();
        let digest = hex::encode(kessai_crypto::digest::sha256(&[&bytes]));
        assert_eq!(e["digest"].as_str().unwrap(), digest, "{file:?} digest");
        let signer = e["signer"].as_str().unwrap();
        if signer.is_empty() {
            continue;
        }
        let pem = std::fs::read_to_string(ev.join("keys").join(format!("{signer}.pem")))
            .unwrap_or_else(|_| panic!("no key {signer}.pem"));
        let key = VerifyingKey::from_public_pem(&pem).unwrap();
        verify_sign1_raw(&bytes, &key, &[])
            .unwrap_or_else(|err| panic!("{file:?} does not verify: {err}"));
        verified += 1;
    }
    assert!(verified >= 12, "only {verified} signed artefacts");
}

/// The role commands parse (clap's own consistency checks run on every
/// subcommand) and the one-shot shop commands work without a host.
#[test]
fn wallet_and_shop_commands_parse_and_bill_offline() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_kessai"))
            .args(args)
            .output()
            .unwrap()
    };
    for cmd in [
        &["wallet", "pay", "--help"][..],
        &["wallet", "topup", "--help"],
        &["shop", "keygen", "--help"],
        &["shop", "bill", "--help"],
        &["shop", "serve", "--help"],
        &["audit", "evidence", "--help"],
    ] {
        let out = run(cmd);
        assert!(
            out.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("mall.key");
    let out = run(&[
        "shop",
        "keygen",
        "--id",
        "mall-9",
        "--kind",
        "mall",
        "--member",
        "shop-x",
        "--out",
        key.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let pk = String::from_utf8(out.stdout).unwrap();
    assert_eq!(pk.trim().len(), 43, "a base64url Ed25519 public key");
    // A mall bills for its member store; not for a stranger.
    let bill = dir.path().join("bill.cose");
    let args = |store: &str| {
        vec![
            "shop".to_string(),
            "bill".into(),
            "--key".into(),
            key.to_str().unwrap().into(),
            "--store".into(),
            store.into(),
            "--order".into(),
            "o-1".into(),
            "--amount".into(),
            "700 JPY".into(),
            "--out".into(),
            bill.to_str().unwrap().into(),
        ]
    };
    let out = Command::new(env!("CARGO_BIN_EXE_kessai"))
        .args(args("shop-x"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&bill).unwrap();
    let peek = kessai_crypto::cose::peek(&bytes).unwrap();
    assert_eq!(peek.kid.to_string(), "mall-9#1");
    let pem_key = VerifyingKey::from_bytes(&base64_decode(pk.trim()).try_into().unwrap()).unwrap();
    verify_sign1_raw(&bytes, &pem_key, &[]).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kessai"))
        .args(args("stranger"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    // Keys are never overwritten.
    let out = run(&[
        "shop",
        "keygen",
        "--id",
        "mall-9",
        "--out",
        key.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .unwrap()
}
