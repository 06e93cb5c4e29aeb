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

/// A host-issued card (`--card-id` alone) whose state file already exists is
/// refused before the host registers anything: the same card id can still
/// be personalized once the path is free, and only once.
#[test]
fn host_issued_card_is_not_registered_when_the_state_file_exists() {
    let dir = std::env::temp_dir().join(format!("kessai-card-cli-host-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("data");
    let state = dir.join("card.state");
    std::fs::write(&state, b"someone else's card").unwrap();
    let run = |state: &std::path::Path| {
        kessai(&[
            "card",
            "personalize",
            "--state",
            state.to_str().unwrap(),
            "--card-id",
            "host-card-3",
            "--data-dir",
            data.to_str().unwrap(),
        ])
    };

    let o = run(&state);
    assert!(!o.status.success(), "{}", text(&o));
    let out = text(&o);
    assert_eq!(out.matches("refusing to overwrite").count(), 1, "{out}");
    assert_eq!(std::fs::read(&state).unwrap(), b"someone else's card");

    // The refused attempt registered nothing: the id is still free.
    std::fs::remove_file(&state).unwrap();
    let o = run(&state);
    assert!(o.status.success(), "{}", text(&o));
    let o = kessai(&["card", "show", "--state", state.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["card_id"], "host-card-3");
    assert_eq!(v["balance_minor"], 0);

    // Issuing the same id again is refused by the host, and the new state
    // file it would have needed is not left behind.
    let second = dir.join("second.state");
    let o = run(&second);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(!second.exists());
    std::fs::remove_dir_all(&dir).ok();
}
