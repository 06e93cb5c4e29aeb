//! `kessai demo --flow c`: the card reader plugged into the phone (seed
//! 002), narrated: an approved purchase, a rejected one, one the cardholder
//! never answers (the virtual clock passes the approval timeout) and one
//! with a wrong PIN. Every role is the code `kessai reader` runs, talking
//! HTTP to the embedded host. At the end the demo replays a captured
//! ciphertext (refused), shows one key-destruction record per transaction
//! in the audit log, scans the database files for the clear card number and
//! PIN (none), and with `--evidence-dir` exports every artefact.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail, ensure};
use kessai_flow_c::TxnId;
use kessai_flow_c::artefacts::{Decision, Outcome, TrustedKeys};
use kessai_flow_c::reader::EmulatedCard;
use kessai_host::routes::flow_c::{self as host_c, wire};
use kessai_ids::{AccountId, KeyRef};
use kessai_money::Money;
use kessai_secrets::CardNumber;
use serde_json::json;
use zeroize::Zeroizing;

use super::DemoCtx;
use crate::cli::reader::{Channel, Event, KeyFile, Merchant, PhoneReader, describe};

const PHONE: &str = "+819011112222";
/// A test card number (Luhn-valid, test BIN range).
const PAN: &str = "4000056655665556";
/// Six digits, so a scan of the database for it is meaningful.
const PIN: &str = "730519";
const WRONG_PIN: &str = "111999";

fn now(ctx: &DemoCtx) -> u64 {
    u64::try_from(kessai_host::clock::Clock::now_ms(&ctx.clock)).unwrap_or(0)
}

/// Runs the flow C demo.
pub async fn run(evidence_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let ctx = DemoCtx::start(evidence_dir, kessai_host::settings::Settings::default()).await?;
    let cfg = ctx.app.settings.flow_c.host;

    // ------------------------------------------------------------ setup
    let (_, shop_key) = KeyFile::generate(&"cafe-c#1".parse::<KeyRef>()?);
    let (_, phone_key) = KeyFile::generate(&"hanako-phone#1".parse::<KeyRef>()?);
    ctx.admin_post(
        "/v1/admin/merchants",
        json!({"id": "cafe-c", "kind": "store", "name": "Cafe C", "currency": "JPY",
               "public_key": wire::b64(&shop_key.verifying_key().to_bytes())}),
    )
    .await?;
    ctx.admin_post(
        "/v1/admin/cardholders",
        json!({"id": "hanako", "name": "Hanako", "currency": "JPY", "credit_limit_minor": 50000}),
    )
    .await?;
    ctx.admin_post(
        "/v1/flow-c/admin/phones",
        json!({"device_id": "hanako-phone", "phone_number": PHONE, "cardholder_id": "hanako",
               "public_key": wire::b64(&phone_key.verifying_key().to_bytes())}),
    )
    .await?;
    let card = ctx
        .admin_post(
            "/v1/flow-c/admin/cards",
            json!({"card_id": "hanako-card", "cardholder_id": "hanako", "pan": PAN,
                   "expiry_yymm": "2912", "pin": PIN}),
        )
        .await?;
    let masked = card["masked_pan"].as_str().unwrap_or("").to_owned();
    ensure!(
        !card.to_string().contains(PAN),
        "the card answer echoed the PAN"
    );
    ctx.say(
        "issuer",
        format!(
            "registered merchant cafe-c, cardholder hanako (credit 50000 JPY), phone {PHONE}, card {masked} (PIN kept only as keyed verification data)"
        ),
    );
    // The reader and the merchant hold the issuer's public key (what
    // `kessai admin keys export` publishes).
    let (host_ref, host_key) = ctx.app.keys.host_signer().await?;
    let trust = TrustedKeys::new([(host_ref.clone(), host_key.verifying_key())]);
    ctx.say(
        "issuer",
        format!("issuer signing key {host_ref} published to readers and merchants"),
    );
    let channel = Channel::new(ctx.http.clone(), &ctx.base_url);
    let pan = CardNumber::new(PAN)?;
    let mut phone = PhoneReader::new(
        channel.clone(),
        phone_key.clone(),
        EmulatedCard::new(pan, "2912", "HANAKO SATO")?,
        trust.clone(),
    )?;
    let mut shop = Merchant::new(channel, shop_key, trust)?;

    let funding: AccountId = "funding.hanako".parse()?;
    let payable: AccountId = "payable.cafe-c".parse()?;

    // ------------------------------------------------------------ 1. approved
    println!("\n  -- 1. approved purchase --");
    let (t1, o1) = purchase(
        &ctx,
        &mut shop,
        &mut phone,
        "order-1001",
        "1200 JPY",
        Some(Decision::Approve),
        PIN,
    )
    .await?;
    ensure!(
        matches!(o1, Outcome::Settled { .. }),
        "purchase 1 did not settle: {o1:?}"
    );
    let captured_card = phone
        .last_card_data
        .clone()
        .context("no card data captured")?;
    let captured_pin = phone
        .last_pin_block
        .clone()
        .context("no PIN block captured")?;
    let f = ctx
        .app
        .db
        .ledger()
        .account(&funding)
        .await?
        .context("funding account")?;
    let p = ctx
        .app
        .db
        .ledger()
        .account(&payable)
        .await?
        .context("payable account")?;
    ctx.say(
        "ledger",
        format!(
            "funding.hanako debits {} JPY, payable.cafe-c credits {} JPY",
            f.balances.debits_posted, p.balances.credits_posted
        ),
    );
    ensure!(
        f.balances.debits_posted == 1200 && p.balances.credits_posted == 1200,
        "ledger mismatch"
    );

    // ------------------------------------------------------------ 2. rejected
    println!("\n  -- 2. the cardholder rejects on the phone --");
    let (t2, o2) = purchase(
        &ctx,
        &mut shop,
        &mut phone,
        "order-1002",
        "800 JPY",
        Some(Decision::Reject),
        PIN,
    )
    .await?;
    ensure!(declined_for(&o2, "rejected"), "purchase 2: {o2:?}");

    // ------------------------------------------------------------ 3. timeout
    println!("\n  -- 3. the cardholder never answers (approval timeout) --");
    let (t3, o3) = purchase(
        &ctx,
        &mut shop,
        &mut phone,
        "order-1003",
        "450 JPY",
        None,
        PIN,
    )
    .await?;
    ensure!(declined_for(&o3, "approval_timeout"), "purchase 3: {o3:?}");

    // ------------------------------------------------------------ 4. wrong PIN
    println!("\n  -- 4. wrong PIN on the reader's keypad --");
    let (t4, o4) = purchase(
        &ctx,
        &mut shop,
        &mut phone,
        "order-1004",
        "300 JPY",
        Some(Decision::Approve),
        WRONG_PIN,
    )
    .await?;
    ensure!(declined_for(&o4, "pin_incorrect"), "purchase 4: {o4:?}");
    let a = kessai_store::flow_support::attempts(&ctx.app.db, &host_c::pin_subject("hanako-card"))
        .await?;
    ctx.say(
        "host",
        format!(
            "PIN try counter of {masked}: {} of {} (kept in the database)",
            a.failures, cfg.max_pin_tries
        ),
    );
    ensure!(a.failures == 1, "PIN counter not 1");

    // ------------------------------------------------------------ replay
    println!("\n  -- replaying captured ciphertexts --");
    for (what, path, field, bytes) in [
        (
            "card data",
            format!("/v1/flow-c/transactions/{t1}/card-data"),
            "sealed_card_data",
            &captured_card,
        ),
        (
            "PIN block",
            format!("/v1/flow-c/transactions/{t1}/pin-block"),
            "sealed_pin_block",
            &captured_pin,
        ),
    ] {
        let r = crate::cli::reader::Channel::new(ctx.http.clone(), &ctx.base_url)
            .post::<serde_json::Value>(&path, &json!({ field: wire::b64(bytes) }))
            .await;
        match r {
            Err(e) => ctx.say(
                "attacker",
                format!("replayed {what} of purchase 1: refused — {e}"),
            ),
            Ok(v) => bail!("a replayed {what} was accepted: {v}"),
        }
    }
    let f2 = ctx
        .app
        .db
        .ledger()
        .account(&funding)
        .await?
        .context("funding account")?;
    ensure!(f2.balances.debits_posted == 1200, "money moved on a replay");

    // ------------------------------------------------------------ audit log
    println!("\n  -- key destruction in the audit log --");
    let events = kessai_store::audit_log::events(&ctx.app.db, None).await?;
    let mut destroyed = 0;
    for t in [&t1, &t2, &t3, &t4] {
        let subject = host_c::session_id(t);
        let e = events
            .iter()
            .find(|e| e.kind == host_c::DESTRUCTION_EVENT && e.subject == subject)
            .with_context(|| format!("no destruction record for {t}"))?;
        let v: serde_json::Value = serde_json::from_str(&e.detail)?;
        let items: Vec<&str> = v["items"]
            .as_array()
            .map(|a| a.iter().filter_map(|i| i["kind"].as_str()).collect())
            .unwrap_or_default();
        ctx.say(
            "audit",
            format!(
                "#{} {} {}: key {}; destroyed [{}]",
                e.seq,
                e.kind,
                short(t),
                v["key_ref"]
                    .as_str()
                    .unwrap_or("none generated (ended before S6)"),
                items.join(", ")
            ),
        );
        destroyed += 1;
        let key_ref = t.transaction_key_ref().to_string();
        ensure!(
            kessai_store::flow_c::txn_key(&ctx.app.db, &key_ref)
                .await?
                .is_none(),
            "key of {t} still stored"
        );
    }
    ensure!(destroyed == 4, "expected 4 destruction records");
    ensure!(
        kessai_store::audit::audit(&ctx.app.db).await?.is_clean(),
        "auditor findings"
    );
    ctx.say(
        "auditor",
        "ledger balances recomputed from the transfers: clean",
    );

    // ------------------------------------------------------------ scan
    if let Some(db) = ctx.app.db.sqlite_path() {
        let hay = read_db_files(db)?;
        ensure!(
            !hay.contains(PAN),
            "clear card number found in the database files"
        );
        ensure!(!hay.contains(PIN), "clear PIN found in the database files");
        ensure!(
            !hay.contains(WRONG_PIN),
            "clear PIN found in the database files"
        );
        ctx.say(
            "scan",
            format!(
                "{} bytes of database files: no clear card number, no PIN",
                hay.len()
            ),
        );
    }

    // ------------------------------------------------------------ evidence
    if let Some(dir) = ctx.evidence_for("flow-c")? {
        let subjects: Vec<String> = [&t1, &t2, &t3, &t4]
            .iter()
            .map(|t| host_c::evidence_subject(t))
            .collect();
        let extra = vec![(
            phone_key.key_ref().to_string(),
            phone_key.verifying_key().to_public_pem(),
        )];
        let index = kessai_host::evidence_export::export(&ctx.app, &subjects, &dir, &extra).await?;
        let captured = append_captured(&dir, &t1, &captured_card, &captured_pin)?;
        ctx.say(
            "evidence",
            format!(
                "{} artefacts exported to {} ({} ciphertexts purged at destruction, kept as digests; {} captured ciphertexts added)",
                index.len(),
                dir.display(),
                index.iter().filter(|e| e.purged).count(),
                captured
            ),
        );
    }
    Ok(())
}

fn short(t: &TxnId) -> String {
    t.to_string()[..8].to_owned()
}

fn declined_for(o: &Outcome, code: &str) -> bool {
    matches!(o, Outcome::Declined { reason } if host_c::reason_code(reason) == code)
}

/// One purchase: merchant request, then the phone's channel until the
/// completion. `decision = None`: the cardholder presses nothing and the
/// virtual clock passes the approval timeout.
async fn purchase(
    ctx: &DemoCtx,
    shop: &mut Merchant,
    phone: &mut PhoneReader,
    order: &str,
    amount: &str,
    decision: Option<Decision>,
    pin: &str,
) -> anyhow::Result<(TxnId, Outcome)> {
    let amount: Money = amount.parse()?;
    let v = shop
        .request(PHONE, amount, order, now(ctx), 600_000)
        .await?;
    ctx.say(
        "merchant",
        format!(
            "signed payment request {order} for {amount} to {PHONE} → host: {} (txn {})",
            v.state,
            &v.txn_id[..8]
        ),
    );
    let txn: TxnId = v.txn_id.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut decide = |r: &kessai_flow_c::artefacts::ApprovalRequest| {
        ctx.say(
            "phone",
            format!(
                "host-signed request verified: \"{}\" asks {} — {}",
                r.merchant_name,
                r.amount,
                match decision {
                    Some(Decision::Approve) => "APPROVE",
                    Some(Decision::Reject) => "REJECT",
                    None => "(no key pressed)",
                }
            ),
        );
        decision
    };
    let typed = pin.to_owned();
    let mut keypad =
        move || -> anyhow::Result<Zeroizing<String>> { Ok(Zeroizing::new(typed.clone())) };
    let mut waited = false;
    for _ in 0..20 {
        let msgs = phone.poll(500).await?;
        if msgs.is_empty() {
            if decision.is_none() && !waited {
                let ms = i64::try_from(ctx.app.settings.flow_c.host.approval_timeout_ms)?;
                ctx.clock.advance(ms + 1_000);
                ctx.say(
                    "clock",
                    format!("{} s pass without an answer", ms / 1000 + 1),
                );
                waited = true;
                continue;
            }
            bail!("the host sent nothing for transaction {txn}");
        }
        for m in msgs {
            match phone.handle(&m, now(ctx), &mut decide, &mut keypad).await? {
                Event::Shown { .. } => {}
                Event::Answered {
                    decision, state, ..
                } => {
                    ctx.say(
                        "phone",
                        format!("{decision:?} signed with the device key → host: {state}"),
                    );
                }
                Event::CardSent {
                    ciphertext_len,
                    state,
                } => {
                    ctx.say(
                        "reader",
                        "transaction key verified against the issuer key; kept in memory only",
                    );
                    ctx.say("reader", format!("card read and sealed to the transaction key (COSE_Encrypt0, {ciphertext_len} bytes); the phone relays it → host: {state}"));
                }
                Event::PinSent { state } => {
                    if let Some(d) = phone.reader_display().iter().rev().nth(1) {
                        ctx.say("reader", format!("display: {d}"));
                    }
                    ctx.say("reader", format!("PIN typed on the reader's keypad → ISO 9564 format-4 block, sealed → host: {state}"));
                }
                Event::Completed { txn_id, outcome } => {
                    ensure!(
                        txn_id == txn.to_string(),
                        "completion for another transaction"
                    );
                    ensure!(!phone.reader_has_key(), "the reader kept its key");
                    ctx.say(
                        "phone",
                        format!(
                            "host-signed completion verified: {}; reader discarded its key",
                            describe(&outcome)
                        ),
                    );
                    let view = shop.view(&txn_id, 5_000).await?;
                    let (done, _) = shop.verify(&view)?;
                    ensure!(
                        done.outcome == outcome || matches!(outcome, Outcome::Declined { .. }),
                        "merchant and phone disagree"
                    );
                    ctx.say(
                        "merchant",
                        format!(
                            "completion verified (host signature): {} card {}",
                            describe(&done.outcome),
                            done.masked_pan.as_deref().unwrap_or("-")
                        ),
                    );
                    ensure!(
                        !view.completion.unwrap_or_default().contains(PAN),
                        "PAN in a merchant message"
                    );
                    return Ok((txn, outcome));
                }
            }
        }
    }
    bail!("transaction {txn} did not complete")
}

fn read_db_files(db: &Path) -> anyhow::Result<String> {
    let mut bytes = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        let f = PathBuf::from(format!("{}{suffix}", db.display()));
        if let Ok(b) = std::fs::read(&f) {
            bytes.extend(b);
        }
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Adds the ciphertexts the phone relayed in purchase 1 (what an
/// eavesdropper holds; the host destroyed its copies and the key) to the
/// export as `.cose` files with index entries.
fn append_captured(dir: &Path, t: &TxnId, card: &[u8], pin: &[u8]) -> anyhow::Result<usize> {
    let path = dir.join("index.json");
    let mut index: Vec<serde_json::Value> = serde_json::from_slice(&std::fs::read(&path)?)?;
    let n = index.len();
    for (i, (kind, bytes)) in [("flowc-card-data", card), ("flowc-pin-block", pin)]
        .into_iter()
        .enumerate()
    {
        let file = format!("{:02}-captured-{kind}.cose", n + i + 1);
        std::fs::write(dir.join(&file), bytes)?;
        index.push(json!({
            "file": file,
            "type": kind,
            "signer": "",
            "digest": hex::encode(kessai_crypto::digest::sha256(&[bytes])),
            "binds": [],
            "subject": host_c::evidence_subject(t),
            "purged": false,
            "note": "captured on the phone's link; undecryptable: the transaction key is destroyed",
        }));
    }
    std::fs::write(&path, serde_json::to_vec_pretty(&index)?)?;
    Ok(2)
}
