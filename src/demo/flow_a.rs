//! `kessai demo --flow a`: the fingerprint device (seed 000), narrated.
//!
//! The issuer issues an enrolment code out of band; the device (the same
//! code as `kessai device`, with the simulated sensor) enrols: identity
//! identification, registration permission, master fingerprint, personal
//! key. It buys twice at a store (the merchant signs each order); a wrong
//! finger is refused. The issuer rotates the transmission and storage
//! keys; after the grace period the old key is refused with a typed
//! problem, the device fetches the signed key update, re-seals and
//! confirms, and buys again. Then the clock passes the retention period
//! and a purge deletes the retained transaction data while the ledger
//! keeps every posting and the auditor stays clean.

use std::path::PathBuf;

use anyhow::{Context as _, bail, ensure};
use kessai_crypto::sign::SigningKey;
use kessai_flow_a::artefacts::OrderInformation;
use kessai_flow_a::{EnrolmentCode, FlowAError, merchant};
use kessai_host::clock::Clock as _;
use kessai_ids::{AccountId, CardholderId, KeyRef};
use kessai_money::{Currency, Money};
use serde_json::json;

use super::DemoCtx;
use crate::cli::device::{Device, HostRefusal, fetch_anchor};

const DAY_MS: i64 = 86_400_000;
const RETENTION_DAYS: u32 = 30;
const GRACE_DAYS: i64 = 3;
/// The customer's finger (any seed) and a stranger's.
const OWNER_FINGER: u64 = 42;
const OTHER_FINGER: u64 = 4242;

fn now(ctx: &DemoCtx) -> u64 {
    u64::try_from(ctx.clock.now_ms()).unwrap_or(0)
}

async fn debits(ctx: &DemoCtx, account: &str) -> anyhow::Result<i64> {
    let id: AccountId = account.parse()?;
    let a = ctx
        .app
        .db
        .ledger()
        .account(&id)
        .await?
        .with_context(|| format!("account {account}"))?;
    Ok(a.balances.debits_posted)
}

struct Store {
    key: SigningKey,
    key_ref: KeyRef,
}

impl Store {
    fn order(&self, ctx: &DemoCtx, order_id: &str, amount: Money) -> anyhow::Result<Vec<u8>> {
        let t = now(ctx);
        Ok(merchant::sign_order(
            &OrderInformation {
                store: "store-1".parse()?,
                order_id: order_id.parse()?,
                amount,
                items_digest: kessai_crypto::digest::sha256(&[order_id.as_bytes(), b" items"]),
                created_at_ms: t,
                expires_at_ms: t + 15 * 60_000,
            },
            &self.key,
            &self.key_ref,
        )?)
    }
}

/// Runs the demo; `evidence_dir` gets the flow's artefacts.
pub async fn run(evidence_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let mut settings = kessai_host::settings::Settings::default();
    settings.flow_a.policy.retention_days = RETENTION_DAYS;
    settings.flow_a.policy.key_grace_ms = u64::try_from(GRACE_DAYS * DAY_MS)?;
    let ctx = DemoCtx::start(evidence_dir, settings).await?;
    let jpy = Currency::from_code("JPY")?;

    // ---- setup: a store and a customer with a credit line.
    let store = {
        let mut rng = rand::rng();
        Store {
            key: SigningKey::generate(&mut rng),
            key_ref: "store-1#1".parse()?,
        }
    };
    let pk = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        store.key.verifying_key().to_bytes(),
    );
    ctx.admin_post(
        "/v1/admin/merchants",
        json!({"id": "store-1", "kind": "store", "name": "Store One", "currency": "JPY", "public_key": pk}),
    )
    .await?;
    ctx.admin_post(
        "/v1/admin/cardholders",
        json!({"id": "alice", "name": "Alice", "currency": "JPY", "credit_limit_minor": 50_000}),
    )
    .await?;
    ctx.say("issuer", "store-1 registered (Ed25519 order key store-1#1); cardholder alice with a 50000 JPY credit line");

    // ---- enrolment code, out of band.
    let v = ctx
        .admin_post(
            "/v1/flow-a/admin/enrolment-codes",
            json!({"cardholder_id": "alice"}),
        )
        .await?;
    let code = EnrolmentCode::parse(v["code"].as_str().context("code")?)?;
    ctx.say(
        "issuer",
        format!(
            "one-time enrolment code for alice handed over out of band ({}******, {} tries, host keeps only a keyed hash); card {}",
            &code.expose()[..4],
            v["tries"],
            v["masked_pan"].as_str().unwrap_or("?")
        ),
    );

    // ---- the device enrols.
    let anchor = fetch_anchor(&ctx.http, &ctx.base_url).await?;
    ctx.say(
        "device",
        format!("trusts issuer key {} (set at manufacture)", anchor.key_ref),
    );
    let mut device = Device::create(
        &ctx.work_dir.join("fp-device-1.json"),
        "fp-device-1".parse()?,
        anchor.clone(),
        OWNER_FINGER,
        ctx.http.clone(),
        &ctx.base_url,
    )?;
    let customer: CardholderId = "alice".parse()?;
    let v = device.enrol(&customer, &code, now(&ctx)).await?;
    ctx.say(
        "device",
        "REGISTRATION REQUEST sent; identity request verified (issuer signature)",
    );
    ctx.say(
        "device",
        "IDENTITY IDENTIFICATION (customer number + code) sealed to the transmission key",
    );
    ctx.say(
        "device",
        "REGISTRATION PERMISSION verified; master fingerprint read (3 impressions, ISO/IEC 19794-2), personal Ed25519 key generated from the reading + device randomness",
    );
    ctx.say(
        "issuer",
        format!(
            "personal key {} registered (proof of possession + binding MAC checked); storage key {}, transmission key {}",
            v["personal_key_ref"].as_str().unwrap_or("?"),
            v["storage_key"].as_str().unwrap_or("?"),
            v["transmission_key"].as_str().unwrap_or("?")
        ),
    );
    let (pan, expiry) = device
        .file
        .device
        .card_display()
        .context("device registered without card")?;
    ctx.say(
        "device",
        format!(
            "stores card {pan} exp {} and the master template sealed under the storage key (it cannot open them); matching template sealed locally",
            expiry.display()
        ),
    );
    // A reused code is refused.
    let mut intruder = Device::create(
        &ctx.work_dir.join("intruder.json"),
        "fp-device-2".parse()?,
        anchor.clone(),
        OTHER_FINGER,
        ctx.http.clone(),
        &ctx.base_url,
    )?;
    match intruder.enrol(&customer, &code, now(&ctx)).await {
        Err(e) if refusal(&e).is_some_and(|r| r.problem == "enrolment-code-refused") => ctx.say(
            "issuer",
            "a second device presenting the same code: refused (enrolment-code-refused, single use)",
        ),
        other => bail!("reused enrolment code was not refused: {other:?}"),
    }

    // ---- two purchases.
    let mut settled = 0i64;
    for (i, amount) in [(1, 1_200i64), (2, 3_400)] {
        let amount = Money::new(amount, jpy);
        let order = store.order(&ctx, &format!("order-{i}"), amount)?;
        ctx.say(
            "store",
            format!("order-{i} for {amount} signed with store-1#1, shown on the terminal"),
        );
        if i == 2 {
            match device
                .buy(&order, amount, Some(OTHER_FINGER), now(&ctx))
                .await
            {
                Err(e)
                    if matches!(
                        e.downcast_ref::<FlowAError>(),
                        Some(FlowAError::NoMatch { .. })
                    ) =>
                {
                    ctx.say(
                        "device",
                        format!("someone else's finger: {e} (nothing sent)"),
                    );
                }
                other => bail!("a wrong finger was not refused: {other:?}"),
            }
        }
        let p = device.buy(&order, amount, None, now(&ctx)).await?;
        settled += amount.amount_minor;
        ctx.say(
            "device",
            format!(
                "fingerprint matched; TRANSACTION DATA #{} ({} bytes: order + sealed card, HPKE to {}) signed with the personal key",
                p.result.counter,
                p.transaction.len(),
                device.file.device.key_refs().map(|(_, t)| t.to_string()).unwrap_or_default()
            ),
        );
        let m = merchant::verify_merchant_result(
            &crate_b64(&p.answer["merchant_result"])?,
            &order,
            &anchor,
        )?;
        ctx.say(
            "issuer",
            format!(
                "signature, counter, both decryptions and the credit line checked; settled {} from {} to store-1 (transfer {})",
                p.result.amount, p.result.masked_pan, p.result.transfer_id
            ),
        );
        ctx.say(
            "store",
            format!(
                "issuer-signed result verified for {} {} (no card data in it)",
                m.order_id, m.amount
            ),
        );
        ctx.clock.advance(DAY_MS);
    }
    ensure!(
        debits(&ctx, "funding.alice").await? == settled,
        "funding account does not show the two payments"
    );

    // ---- key rotation.
    for purpose in ["transmission", "storage"] {
        ctx.admin_post(&format!("/v1/admin/keys/{purpose}/rotate"), json!(null))
            .await?;
    }
    ctx.say(
        "issuer",
        format!("kessai admin keys rotate: transmission#2 and storage#2 active; the #1 keys honoured for {GRACE_DAYS} more days"),
    );
    ctx.clock.advance((GRACE_DAYS + 1) * DAY_MS);
    let amount = Money::new(800, jpy);
    let order = store.order(&ctx, "order-3", amount)?;
    match device.buy(&order, amount, None, now(&ctx)).await {
        Err(e) if refusal(&e).is_some_and(|r| r.problem == "transmission-key-retired") => {
            ctx.say(
                "issuer",
                format!(
                    "{GRACE_DAYS} days later a purchase under transmission#1 is refused: {}",
                    refusal(&e).map(|r| r.detail.clone()).unwrap_or_default()
                ),
            );
        }
        other => bail!("the retired transmission key was not refused: {other:?}"),
    }
    ensure!(
        debits(&ctx, "funding.alice").await? == settled,
        "a refused purchase moved money"
    );
    let v = device.update_keys().await?;
    ctx.say(
        "device",
        format!(
            "issuer-signed KEY UPDATE applied: card information (re-sealed by the issuer) and master template (re-sealed by the device) now under {}; confirmed with the personal key (transmission {})",
            v["storage_key"].as_str().unwrap_or("?"),
            v["transmission_key"].as_str().unwrap_or("?")
        ),
    );
    let order = store.order(&ctx, "order-4", amount)?;
    let p = device.buy(&order, amount, None, now(&ctx)).await?;
    settled += amount.amount_minor;
    ctx.say(
        "issuer",
        format!(
            "order-4 settled under the new keys: {} from {}",
            p.result.amount, p.result.masked_pan
        ),
    );
    ensure!(
        debits(&ctx, "funding.alice").await? == settled,
        "funding account does not show three payments"
    );

    // ---- evidence.
    let device_id = device.file.device.device_id().to_string();
    let subject = format!("flow-a:{device_id}");
    if let Some(dir) = ctx.evidence_for("flow-a")? {
        let (personal_ref, personal_key) = device
            .file
            .device
            .personal_key()
            .context("no personal key")?;
        let index = kessai_host::evidence_export::export(
            &ctx.app,
            std::slice::from_ref(&subject),
            &dir,
            &[(personal_ref.to_string(), personal_key.to_public_pem())],
        )
        .await?;
        ctx.say(
            "issuer",
            format!(
                "evidence: {} artefacts (.cose), index.json and verifying keys written to {}",
                index.len(),
                dir.display()
            ),
        );
    }

    // ---- retention.
    let kept = kessai_store::evidence::by_subject(&ctx.app.db, &subject).await?;
    let txns = kept.iter().filter(|e| e.kind == "flow-a.txn").count();
    ctx.clock
        .advance(i64::from(RETENTION_DAYS) * DAY_MS - (GRACE_DAYS + 1) * DAY_MS);
    let purged = kessai_host::routes::flow_a::purge_retention(&ctx.app)
        .await
        .map_err(|e| anyhow::anyhow!("purge: {e}"))?;
    let after = kessai_store::evidence::by_subject(&ctx.app.db, &subject).await?;
    let purged_txns = after
        .iter()
        .filter(|e| e.kind == "flow-a.txn" && e.purged_at_ms.is_some())
        .count();
    ensure!(
        purged_txns == 2,
        "expected the first two transactions purged, got {purged_txns}"
    );
    ctx.say(
        "issuer",
        format!(
            "{RETENTION_DAYS} days after the first purchases: kessai admin retention purge deleted {purged} artefacts ({purged_txns} of {txns} signed transaction data), tombstones keep their digests"
        ),
    );
    ensure!(
        debits(&ctx, "funding.alice").await? == settled,
        "the purge changed the ledger"
    );
    let audit = kessai_store::audit::audit(&ctx.app.db).await?;
    ensure!(audit.is_clean(), "auditor findings: {:?}", audit.findings);
    let links = kessai_store::evidence::audit_links(&ctx.app.db).await?;
    ensure!(
        links.findings.is_empty(),
        "evidence findings: {:?}",
        links.findings
    );
    ctx.say(
        "auditor",
        format!(
            "ledger clean: {} transfers, {} evidence links ({} to purged artefacts), alice owes {} JPY",
            audit.transfers, links.links, links.purged, settled
        ),
    );
    Ok(())
}

fn refusal(e: &anyhow::Error) -> Option<&HostRefusal> {
    e.downcast_ref::<HostRefusal>()
}

fn crate_b64(v: &serde_json::Value) -> anyhow::Result<Vec<u8>> {
    base64::Engine::decode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        v.as_str().context("base64url field")?,
    )
    .context("base64url")
}
