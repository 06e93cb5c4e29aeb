//! `kessai card personalize` and `kessai card show` on a standalone test
//! card, in the default test run (no host, no PC/SC): the state file holds
//! what was asked for, `show` prints it with the card number masked (text
//! and JSON), and an existing state file is never overwritten.

use std::process::{Command, Output};

const PAN: &str = "4111111111111111";

fn kessai(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kessai"))
        .args(args)
        .env_remove("KESSAI_DATA_DIR")
        .env_remove("KESSAI_DATABASE_URL")
        .env("KESSAI_CARD_PIN", "1234")
        .env("KESSAI_LOG", "warn")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn personalize_then_show_masks_the_card_number() {
    let dir = std::env::temp_dir().join(format!("kessai-card-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let state = dir.join("card.state");
    let state_s = state.to_str().unwrap();
    let personalize = [
        "card",
        "personalize",
        "--state",
        state_s,
        "--card-id",
        "cli-card-7",
        "--static-keys",
        "404142434445464748494A4B4C4D4E4F",
        "--key-version",
        "5",
        "--balance-minor",
        "1500",
        "--pan",
        PAN,
    ];
    let o = kessai(&personalize);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!text(&o).contains(PAN), "{}", text(&o));

    let o = kessai(&["card", "show", "--state", state_s, "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!text(&o).contains(PAN));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["aid"], "F06B657373616901");
    assert_eq!(v["card_id"], "cli-card-7");
    assert_eq!(v["key_version"], 5);
    assert_eq!(v["balance_minor"], 1500);
    assert_eq!(v["currency"], "JPY");
    assert_eq!(v["counter"], 0);
    assert_eq!(v["pan"], "411111******1111");
    assert_eq!(v["pin_tries_left"], 3);

    let o = kessai(&["card", "show", "--state", state_s]);
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    assert!(!out.contains(PAN), "{out}");
    assert!(out.contains("card number  411111******1111"), "{out}");
    assert!(out.contains("card id      cli-card-7"), "{out}");
    assert!(out.contains("key version  5"), "{out}");

    // A second personalization of the same file is refused and changes
    // nothing.
    let before = std::fs::read(&state).unwrap();
    let mut again = personalize;
    again[5] = "other-card";
    let o = kessai(&again);
    assert!(!o.status.success(), "{}", text(&o));
    assert_eq!(std::fs::read(&state).unwrap(), before);

    // Out-of-range key version: refused, no file written.
    let other = dir.join("other.state");
    let o = kessai(&[
        "card",
        "personalize",
        "--state",
        other.to_str().unwrap(),
        "--static-keys",
        "404142434445464748494A4B4C4D4E4F",
        "--key-version",
        "200",
    ]);
    assert!(!o.status.success());
    assert!(!other.exists());
    std::fs::remove_dir_all(&dir).ok();
}
