//! `kessai demo --flow d`: the temporary password at the POS (seed 003),
//! narrated against the embedded host. The phone and POS roles are the code
//! `kessai phone` / `kessai pos` run (HTTP to the host, the IC card as an
//! emulator state file read through the same card transport):
//!
//! 1. basic flow: card + PIN on the phone → one-time password (digits and
//!    EMVCo QR) → keyed in at the POS with the sale → settled, signed
//!    receipt printed and pushed to the phone; reusing it is refused;
//! 2. the QR path, and an expired password (the virtual clock moves);
//! 3. a wrong PIN (one try consumed, nothing issued);
//! 4. the merchant-IC-card variant: both cards in the phone, the customer
//!    enters the amount, the POS is signalled;
//! 5. the in-phone card check against the issuer-signed card profile
//!    (claim 10), then a stranger's finger refused and the cardholder's
//!    finger matched on the card (claim 16, CVM `02`) for a payment;
//! 6. the short-range variant: a POS (`kessai pos serve-link` code) on a
//!    TCP loopback link serves twelve phones at once, each paying its own
//!    basket; one receipt per basket, no cross-talk;
//! 7. with `--evidence-dir`, every receipt (signed) and sealed cardholder
//!    payload (encrypted) with the host's public keys.

use std::path::PathBuf;

use anyhow::{Context as _, bail, ensure};
use base64::Engine as _;
use kessai_card::{Card, CardholderData, PersonalizationParams};
use kessai_card_emu::{FileNvm, Relay};
use kessai_flow_d::artefacts::{LineItem, verify_receipt};
use kessai_flow_d::emvqr::render_text;
use kessai_flow_d::host::HostPublic;
use kessai_flow_d::phone::{CustomerVerification, build_merchant_card_request};
use kessai_host::card_security::{self, IssueCard};
use kessai_host::routes::flow_d::{MerchantCardBody, evidence_subject};
use kessai_ids::CardId;
use kessai_money::{Currency, Money};
use kessai_secrets::{CardNumber, Pin};
use serde_json::{Value, json};

use super::DemoCtx;
use crate::cli::phone::{authorize, challenge, host_public, pay_link};
use crate::cli::pos::{LinkPos, serve_link};
use crate::cli::wallet::{CardSpec, Http, Refusal, open_card};

/// Phones in the short-range part.
const PHONES: usize = 12;

/// A Luhn-valid test card number: number `i` of the series starting at
/// `series` (the demo's phones use 100 000; tests use other series).
pub(crate) fn test_pan(series: usize, i: usize) -> String {
    let body = format!("400000{:09}", series + i);
    let sum: u32 = body
        .bytes()
        .rev()
        .enumerate()
        .map(|(k, b)| {
            let d = u32::from(b - b'0');
            if k % 2 == 0 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    format!("{body}{}", (10 - sum % 10) % 10)
}

/// A test card number (Luhn-valid, test range).
const PAN: &str = "4000056655665556";
pub(crate) const PIN: &str = "730519";
const WRONG_PIN: &str = "111999";
/// Taro's finger (synthetic finger on the simulated sensor), enrolled on
/// his card; and somebody else's.
const TARO_FINGER: u64 = 3;
const OTHER_FINGER: u64 = 4;
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

pub(crate) fn goods(items: &[(&str, u32, i64)]) -> Vec<LineItem> {
    items
        .iter()
        .map(|(d, q, p)| LineItem {
            description: (*d).into(),
            quantity: *q,
            unit_price_minor: *p,
        })
        .collect()
}

fn refusal_slug(e: &anyhow::Error) -> Option<String> {
    e.downcast_ref::<Refusal>().map(|r| r.problem.clone())
}

/// Issues card `id` at the host and personalizes it into
/// `WORK_DIR/<id>.card`: with `pan`, a customer card with PIN [`PIN`];
/// with `finger`, that synthetic finger enrolled.
pub(crate) async fn issue(
    ctx: &DemoCtx,
    id: &str,
    pan: Option<&str>,
    finger: Option<u64>,
) -> anyhow::Result<PathBuf> {
    let jpy = Currency::from_code("JPY")?;
    let cid: CardId = id.parse()?;
    let (_, keys) = card_security::issue_card(
        &ctx.app,
        &IssueCard {
            card_id: cid.clone(),
            currency: jpy,
            purse_max_minor: 1,
            cardholder_id: None,
        },
    )
    .await?;
    let mut seed = [0u8; 32];
    rand::fill(&mut seed);
    let mut p = PersonalizationParams::new(cid, keys, jpy, 1, seed);
    if let Some(pan) = pan {
        p.pin = Some(Pin::new(PIN)?);
        p.cardholder = Some(CardholderData {
            pan: CardNumber::new(pan)?,
            expiry_yymm: "3012".into(),
            name: "TARO YAMADA".into(),
        });
    }
    if let Some(f) = finger {
        p.fingerprint = Some(crate::cli::device::enrol_fingerprint(f)?);
    }
    let path = ctx.work_dir.join(format!("{id}.card"));
    Card::personalize(p, FileNvm::create(&path)?)
        .map_err(|e| anyhow::anyhow!("personalization: {e}"))?;
    Ok(path)
}

async fn balance(ctx: &DemoCtx, account: &str) -> anyhow::Result<i64> {
    let a = ctx
        .app
        .db
        .ledger()
        .account(&account.parse()?)
        .await?
        .context("account")?;
    Ok(a.balances.credits_posted - a.balances.debits_posted)
}

fn receipt_text(ctx: &DemoCtx, public: &HostPublic, b64: &str) -> anyhow::Result<String> {
    let r = verify_receipt(
        &B64.decode(b64)?,
        &public.receipt_key_ref,
        &public.receipt_key,
    )
    .map_err(|e| anyhow::anyhow!("receipt does not verify: {e}"))?;
    ctx.say(
        "pos",
        format!(
            "receipt signature verified under {} ({} {}, card {})",
            public.receipt_key_ref, r.amount, r.merchant, r.card_masked
        ),
    );
    Ok(r.to_text())
}

async fn redeem(host: &Http, body: Value) -> anyhow::Result<Value> {
    host.post("/v1/flow-d/redemptions", &body).await
}

/// Runs the flow D demo.
pub async fn run(evidence_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let ctx = DemoCtx::start(evidence_dir, kessai_host::settings::Settings::default()).await?;
    let host = Http::new(&ctx.base_url);
    let masked = CardNumber::new(PAN)?.masked();
    println!("flow D: temporary password at the POS (seed 003)");

    // ------------------------------------------------------------ setup
    let shop_key = kessai_crypto::sign::SigningKey::from_seed(&{
        let mut s = [0u8; 32];
        rand::fill(&mut s);
        s
    });
    ctx.admin_post(
        "/v1/admin/merchants",
        json!({"id": "konbini-d", "kind": "store", "name": "Konbini D", "currency": "JPY",
               "public_key": B64.encode(shop_key.verifying_key().to_bytes())}),
    )
    .await?;
    let holder = ctx
        .admin_post(
            "/v1/admin/cardholders",
            json!({"id": "taro", "name": "Taro", "currency": "JPY", "credit_limit_minor": 50000}),
        )
        .await?;
    let funding = holder["funding_account"]["id"]
        .as_str()
        .context("funding account")?
        .to_owned();
    for t in ["till-1", "till-2"] {
        ctx.admin_post(
            "/v1/flow-d/admin/terminals",
            json!({"terminal_id": t, "store_id": "konbini-d"}),
        )
        .await?;
    }
    let card_path = issue(&ctx, "taro-card", Some(PAN), Some(TARO_FINGER)).await?;
    let mcard_path = issue(&ctx, "konbini-d-card", None, None).await?;
    let registered = ctx
        .admin_post(
            "/v1/flow-d/admin/cards",
            json!({"card_id": "taro-card", "pan": PAN, "expiry_yymm": "3012",
                   "funding_account": funding, "currency": "JPY", "pin": PIN,
                   "biometric_enrolled": true, "name": "TARO YAMADA"}),
        )
        .await?;
    // The card profile goes to Taro's phone with the card (claim 10).
    let profile_path = ctx.work_dir.join("taro-card.profile.json");
    std::fs::write(
        &profile_path,
        serde_json::to_vec_pretty(registered.get("profile").context("card profile")?)?,
    )?;
    ctx.admin_post(
        "/v1/flow-d/admin/merchant-cards",
        json!({"card_id": "konbini-d-card", "store_id": "konbini-d", "currency": "JPY"}),
    )
    .await?;
    ctx.say(
        "issuer",
        format!(
            "issued card taro-card ({masked}) and merchant card konbini-d-card; terminals till-1, till-2 of Konbini D"
        ),
    );
    let public = host_public(&host).await?;
    let card_spec = CardSpec::State(card_path.clone());
    let pin = CustomerVerification::OnlinePin(Pin::new(PIN)?);
    let jpy = Currency::from_code("JPY")?;

    // ------------------------------------------------------------ 1. basic
    println!("\n-- 1. basic flow: password keyed in at the POS");
    let (t, _) = open_card(&card_spec, None)?;
    let g = authorize(
        &host,
        &public,
        &mut Relay::new(t),
        Money::new(5_000, jpy),
        &pin,
    )
    .await?;
    let digits = g["password"].as_str().context("password")?.to_owned();
    ctx.say(
        "phone",
        format!(
            "card read, cryptogram + PIN block sent; temporary password {} (cap 5,000 JPY, valid {} s)",
            g["password_grouped"].as_str().unwrap_or(""),
            ctx.app.settings.flow_d.host.password_ttl_ms / 1000
        ),
    );
    let qr = g["qr_payload"].as_str().context("qr")?.to_owned();
    println!("{}", render_text(&qr)?);
    let sale = goods(&[("onigiri", 2, 180), ("green tea", 1, 150)]);
    let s = redeem(
        &host,
        json!({"terminal_id": "till-1", "password": digits, "amount_minor": 510,
               "currency": "JPY", "goods": sale}),
    )
    .await?;
    ctx.say("pos", "till-1 keyed in the password with 510 JPY: settled");
    println!(
        "{}",
        receipt_text(&ctx, &public, s["receipt"].as_str().context("receipt")?)?
    );
    let pushed = host.get("/v1/flow-d/cards/taro-card/receipts").await?;
    ensure!(
        pushed.as_array().map(Vec::len) == Some(1),
        "receipt not pushed to the phone"
    );
    ctx.say("phone", "receipt pushed to the phone (claim 15)");
    ensure!(balance(&ctx, &funding).await? == -510, "ledger");
    match redeem(
        &host,
        json!({"terminal_id": "till-2", "password": digits, "amount_minor": 510,
               "currency": "JPY", "goods": sale}),
    )
    .await
    {
        Err(e) if refusal_slug(&e).as_deref() == Some("password-used") => ctx.say(
            "pos",
            "till-2 tries the same password again: refused (password-used)",
        ),
        other => bail!("reuse was not refused: {other:?}"),
    }

    // ------------------------------------------------------------ 2. QR, expiry
    println!("\n-- 2. QR code scanned at the POS; an expired password");
    let (t, _) = open_card(&card_spec, None)?;
    let g = authorize(
        &host,
        &public,
        &mut Relay::new(t),
        Money::new(3_000, jpy),
        &pin,
    )
    .await?;
    let s = redeem(
        &host,
        json!({"terminal_id": "till-2", "qr_payload": g["qr_payload"], "amount_minor": 1_200,
               "currency": "JPY", "goods": goods(&[("bento", 1, 1_200)])}),
    )
    .await?;
    ctx.say(
        "pos",
        "till-2 scanned the EMVCo QR code, 1,200 JPY: settled",
    );
    receipt_text(&ctx, &public, s["receipt"].as_str().context("receipt")?)?;
    let (t, _) = open_card(&card_spec, None)?;
    let g = authorize(
        &host,
        &public,
        &mut Relay::new(t),
        Money::new(3_000, jpy),
        &pin,
    )
    .await?;
    ctx.clock.advance(121_000);
    ctx.say("clock", "121 s pass");
    match redeem(
        &host,
        json!({"terminal_id": "till-1", "password": g["password"], "amount_minor": 300,
               "currency": "JPY", "goods": goods(&[("gum", 1, 300)])}),
    )
    .await
    {
        Err(e) if refusal_slug(&e).as_deref() == Some("password-expired") => ctx.say(
            "pos",
            "password keyed in too late: refused (password-expired)",
        ),
        other => bail!("expired password was not refused: {other:?}"),
    }

    // ------------------------------------------------------------ 3. wrong PIN
    println!("\n-- 3. wrong PIN");
    let (t, _) = open_card(&card_spec, None)?;
    let wrong = CustomerVerification::OnlinePin(Pin::new(WRONG_PIN)?);
    match authorize(
        &host,
        &public,
        &mut Relay::new(t),
        Money::new(1_000, jpy),
        &wrong,
    )
    .await
    {
        Err(e) if refusal_slug(&e).as_deref() == Some("wrong-pin") => {
            ctx.say("host", format!("PIN block does not verify: {e}"))
        }
        other => bail!("wrong PIN was not refused: {other:?}"),
    }

    // ------------------------------------------------------------ 4. merchant card
    println!("\n-- 4. merchant IC card in the phone");
    let (ct, _) = open_card(&card_spec, None)?;
    let (mt, _) = open_card(&CardSpec::State(mcard_path.clone()), None)?;
    let ch = challenge(&host).await?;
    let basket = goods(&[("umbrella", 1, 2_500)]);
    let req = build_merchant_card_request(
        &mut Relay::new(ct),
        &mut Relay::new(mt),
        &public,
        &ch,
        Money::new(2_500, jpy),
        basket,
        Some("till-1".parse()?),
        &pin,
        &mut rand::rng(),
    )
    .map_err(|e| anyhow::anyhow!("cards: {e}"))?;
    ctx.say(
        "phone",
        "read the customer card and the merchant card konbini-d-card; customer entered 2,500 JPY",
    );
    host.post(
        "/v1/flow-d/merchant-card-settlements",
        &serde_json::to_value(MerchantCardBody::from_request(&req))?,
    )
    .await?;
    let signalled = host.get("/v1/flow-d/terminals/till-1/receipts").await?;
    let last = signalled
        .as_array()
        .and_then(|a| a.last())
        .context("POS not signalled")?;
    ctx.say(
        "host",
        "both cards authenticated, settled; till-1 signalled",
    );
    println!(
        "{}",
        receipt_text(&ctx, &public, last["receipt"].as_str().context("receipt")?)?
    );
    let total = balance(&ctx, &funding).await?;
    ensure!(total == -(510 + 1_200 + 2_500), "ledger: {total}");
    ctx.say(
        "ledger",
        format!(
            "card {masked}: {} JPY charged, Konbini D payable {} JPY",
            -total,
            balance(&ctx, "payable.konbini-d").await?
        ),
    );

    // ------------------------------------------------------------ 5. claims 10, 16
    println!("\n-- 5. card checked in the phone; fingerprint matched on the card");
    let (t, _) = open_card(&card_spec, None)?;
    let mut card = Relay::new(t);
    crate::cli::phone::check_profile(&mut card, &profile_path)?;
    ctx.say(
        "phone",
        "taro-card checked in the phone against its issuer-signed profile before anything was sent (claim 10)",
    );
    let (mt, _) = open_card(&CardSpec::State(mcard_path.clone()), None)?;
    match crate::cli::phone::check_profile(&mut Relay::new(mt), &profile_path) {
        Err(e) => ctx.say("phone", format!("another card in the reader: {e}")),
        Ok(_) => bail!("the in-phone check accepted another card"),
    }
    let stranger =
        CustomerVerification::OnCardBiometric(crate::cli::device::live_fingerprint(OTHER_FINGER)?);
    match authorize(&host, &public, &mut card, Money::new(2_000, jpy), &stranger).await {
        Err(e) if e.to_string().contains("cardholder verification failed") => ctx.say(
            "card",
            "somebody else's finger on the phone's sensor: the card's matcher says no; no authorization sent",
        ),
        other => bail!("a stranger's finger was not refused by the card: {other:?}"),
    }
    let live =
        CustomerVerification::OnCardBiometric(crate::cli::device::live_fingerprint(TARO_FINGER)?);
    let g = authorize(&host, &public, &mut card, Money::new(2_000, jpy), &live).await?;
    ctx.say(
        "card",
        "Taro's finger matched on the card (claim 16): CVM 02 bound into the cryptogram; password issued",
    );
    redeem(
        &host,
        json!({"terminal_id": "till-2", "password": g["password"], "amount_minor": 800,
               "currency": "JPY", "goods": goods(&[("sandwich", 2, 400)])}),
    )
    .await?;
    let total = balance(&ctx, &funding).await?;
    ensure!(total == -(510 + 1_200 + 2_500 + 800), "ledger: {total}");
    ctx.say(
        "pos",
        "till-2 keyed in the fingerprint-authorized password with 800 JPY: settled",
    );

    // ------------------------------------------------------------ 6. short range
    println!("\n-- 6. short-range link: one POS, {PHONES} phones at once");
    let mut phones = Vec::new();
    for i in 0..PHONES {
        let id = format!("phone-card-{i:02}");
        let pan = test_pan(100_000, i);
        let path = issue(&ctx, &id, Some(&pan), None).await?;
        ctx.admin_post(
            "/v1/flow-d/admin/cards",
            json!({"card_id": id, "pan": pan, "expiry_yymm": "3012",
                   "funding_account": funding, "currency": "JPY", "pin": PIN}),
        )
        .await?;
        phones.push((id, path));
    }
    let baskets: Vec<(String, Vec<LineItem>)> = (0..PHONES)
        .map(|i| {
            (
                format!("basket-{i:02}"),
                goods(&[("rice ball", 1, 100 + 10 * i as i64), ("water", 1, 90)]),
            )
        })
        .collect();
    let basket_total: i64 = baskets
        .iter()
        .map(|(_, g)| g.iter().map(|l| l.unit_price_minor).sum::<i64>())
        .sum();
    let link_key = kessai_crypto::hpke::HpkeKeyPair::generate(&mut rand::rng());
    let link_ref: kessai_ids::KeyRef = "till-2-link#1".parse()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let pos_addr = listener.local_addr()?.to_string();
    let pos_pub = link_key.public_key().clone();
    let printed = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sink = printed.clone();
    let pos_task = tokio::spawn(serve_link(
        listener,
        LinkPos {
            host: host.clone(),
            public: public.clone(),
            terminal: "till-2".parse()?,
            baskets: baskets.clone(),
            currency: jpy,
            key: link_key,
            key_ref: link_ref.clone(),
        },
        move |text| {
            if let Ok(mut p) = sink.lock() {
                p.push(text.to_owned());
            }
        },
    ));
    ctx.say(
        "pos",
        format!("till-2 listening on {pos_addr} (link key {link_ref}), {PHONES} baskets rung up"),
    );
    let mut tasks = Vec::new();
    for (i, (_, path)) in phones.iter().enumerate() {
        let (t, _) = open_card(&CardSpec::State(path.clone()), None)?;
        let (addr, key_ref, key, public) = (
            pos_addr.clone(),
            link_ref.clone(),
            pos_pub.clone(),
            public.clone(),
        );
        let basket = format!("basket-{i:02}");
        tasks.push(tokio::spawn(async move {
            let mut card = Relay::new(t);
            let v = CustomerVerification::OnlinePin(Pin::new(PIN)?);
            pay_link(&addr, &key_ref, &key, &public, &mut card, &basket, &v).await
        }));
    }
    let mut transfers = std::collections::BTreeSet::new();
    for (i, t) in tasks.into_iter().enumerate() {
        let r = t.await??;
        ensure!(
            r.terminal.as_ref().map(|t| t.as_str()) == Some("till-2"),
            "receipt of another terminal"
        );
        ensure!(
            r.goods == baskets[i].1,
            "phone {i} got a receipt for another basket"
        );
        transfers.insert(r.transfer_id);
    }
    let n = pos_task.await??;
    let printed = printed.lock().map(|p| p.len()).unwrap_or(0);
    ensure!(
        n == PHONES && printed == PHONES && transfers.len() == PHONES,
        "short range: {n} receipts, {printed} printed, {} transfers",
        transfers.len()
    );
    ctx.say(
        "pos",
        format!(
            "{PHONES} phones paid {PHONES} baskets concurrently over the link: {PHONES} receipts printed, each phone verified its own (signature + goods), {basket_total} JPY in total"
        ),
    );
    let after = balance(&ctx, &funding).await?;
    ensure!(
        after == total - basket_total,
        "ledger after short range: {after}"
    );

    // ------------------------------------------------------------ evidence
    if let Some(dir) = ctx.evidence_for("flow-d")? {
        let mut subjects = vec![evidence_subject(&"taro-card".parse()?)];
        for (id, _) in &phones {
            subjects.push(evidence_subject(&id.parse()?));
        }
        let index = kessai_host::evidence_export::export(&ctx.app, &subjects, &dir, &[]).await?;
        ctx.say(
            "evidence",
            format!("{} artefacts exported to {}", index.len(), dir.display()),
        );
    }
    Ok(())
}
