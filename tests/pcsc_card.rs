//! The IC card through the real PC/SC stack: `kessai card emulate` plugs a
//! personalized card into pcsc-lite's vsmartcard vpcd reader; a PC/SC
//! client lists the reader, sees the ATR, selects the applet, opens an
//! SCP03 session and performs a debit; `opensc-tool` sees the card too.
//!
//! Needs pcscd with vpcd on 127.0.0.1:35963, or where `KESSAI_VPCD_ADDR`
//! says (`.ci/pcsc.sh` sets it up and
//! runs this with `--features pcsc -- --ignored`).
#![cfg(feature = "pcsc")]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kessai_card::harness::HostDriver;
use kessai_card_emu::Relay;
use kessai_card_io::CardTransport;
use kessai_card_io::pcsc::{PcscOptions, PcscTransport, ReaderSelector, wait_for_card};
use kessai_scp03::{AesKey, SecurityLevel, StaticKeys};

const GP_TEST_KEY: &str = "404142434445464748494A4B4C4D4E4F";

struct Emulator(Child);

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn kessai(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kessai"))
        .args(args)
        .env("KESSAI_LOG", "warn")
        .output()
        .unwrap()
}

#[test]
#[ignore = "needs pcscd + vsmartcard vpcd: run by .ci/pcsc.sh"]
fn debit_through_pcsc_lite_with_the_emulated_card() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("card.state");
    let s = state.to_str().unwrap();
    let out = kessai(&[
        "card",
        "personalize",
        "--state",
        s,
        "--static-keys",
        GP_TEST_KEY,
        "--card-id",
        "pcsc-card-1",
        "--balance-minor",
        "5000",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let emulator = Emulator(
        Command::new(env!("CARGO_BIN_EXE_kessai"))
            .args(["card", "emulate", "--state", s])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    // Event-driven wait until pcscd reports the card in the vpcd reader.
    let reader = wait_for_card(
        &ReaderSelector::NameContains("Virtual PCD".into()),
        Duration::from_secs(30),
    )
    .expect("the emulated card never appeared in the Virtual PCD reader");
    let t = PcscTransport::connect(&PcscOptions {
        reader: ReaderSelector::NameContains(reader.clone()),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        t.atr(),
        kessai_card::atr().as_slice(),
        "ATR seen through PC/SC"
    );

    let keys = StaticKeys::single(
        AesKey::from_slice(&hex::decode(GP_TEST_KEY).unwrap()).unwrap(),
        0x30,
    );
    let mut relay = Relay::new(t);
    let mut host = HostDriver::new(keys);
    host.select(&mut relay).unwrap();
    host.open(&mut relay, SecurityLevel::Full, [0x11; 8])
        .unwrap();
    let before = host.read_balance(&mut relay).unwrap();
    assert_eq!(before.balance_minor, 5000);
    let pcn = host.debit(&mut relay, 1_200, [0x42; 16], [0; 16]).unwrap();
    assert_eq!(pcn.balance_after_minor, 3_800);
    assert_eq!(pcn.amount_minor, 1_200);
    assert!(relay.last_error().is_none());
    drop(relay);

    // A third-party PC/SC tool sees the same card.
    let tool = Command::new("opensc-tool")
        .args(["-r", &reader, "-a"])
        .output();
    let tool = tool.expect("opensc-tool is installed by .ci/pcsc.sh");
    let atr_hex = kessai_card::atr()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    assert!(
        String::from_utf8_lossy(&tool.stdout).contains(&atr_hex),
        "opensc-tool output: {}",
        String::from_utf8_lossy(&tool.stdout)
    );

    // Stop the emulator: the debit is durable in the state file.
    drop(emulator);
    let out = kessai(&["card", "show", "--state", s, "--json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["balance_minor"], 3_800);
    assert_eq!(v["counter"], 1);
    assert_eq!(v["log"][0]["kind"], "debit");
    assert_eq!(v["log"][0]["amount_minor"], 1_200);
}
