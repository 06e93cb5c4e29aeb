//! Flow B demo (IC-card e-money, seeds 001/004), narrated: against an
//! embedded host, a store and a mall (two `kessai shop` servers on their
//! own ports) and a wallet with an emulated IC card (a state file, as
//! `kessai wallet --card state:FILE` uses it):
//!
//! 1. the issuer registers the merchants, a cardholder with a funding
//!    card, and issues the IC card;
//! 2. a top-up loads the card (VALUE UPDATE, FIFTH SIGNATURE);
//! 3. a purchase at a store (SIG1 → SIG2 → PCN → SIG3 → SIG4, download);
//! 4. a purchase at a mall member store (the mall signs for it);
//! 5. another top-up;
//! 6. a purchase whose PCN is lost after the card debited: the next
//!    contact recovers it from the card log, exactly once;
//!
//! then checks that card, host shadow and ledger agree and the auditor is
//! clean, and (with `--evidence-dir`) exports every settlement's evidence.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, bail, ensure};
use kessai_card::{Card, PersonalizationParams};
use kessai_card_emu::FileNvm;
use kessai_flow_b::wallet::Confirmation;
use kessai_host::clock::Clock as _;
use kessai_ids::CardId;
use kessai_money::{Currency, Money};
use kessai_secrets::{CardNumber, Pin};
use serde_json::json;

use super::DemoCtx;
use crate::cli::shop::{KeyFile, Shop, serve_on};
use crate::cli::wallet::{self, CardSpec, Ended, Faults, Http};

const FUNDING_PAN: &str = "4111111111111111";
const FUNDING_PIN: &str = "4321";

struct Demo {
    ctx: DemoCtx,
    host: Http,
    card_spec: CardSpec,
    card_id: CardId,
    settled: Vec<(String, String)>,
}

impl Demo {
    fn card_balance(&self) -> anyhow::Result<Money> {
        let CardSpec::State(p) = &self.card_spec else {
            bail!("the demo card is a state file");
        };
        let card = Card::load(FileNvm::open(p)?).map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(card.snapshot().balance)
    }

    async fn top_up(&self, amount: Money) -> anyhow::Result<()> {
        let (cfg, keys) = wallet::wallet_config(&self.host).await?;
        let (mut card, card_id) = wallet::open_card(&self.card_spec, None)?;
        let pan = CardNumber::new(FUNDING_PAN)?;
        self.ctx.say(
            "wallet",
            format!(
                "top-up of {amount} onto {card_id}, paid by funding card {} (card number, expiry and a format-4 PIN block sealed with HPKE to the host's {})",
                pan.masked(),
                keys.transmission_key.key_ref
            ),
        );
        match wallet::top_up(
            &self.host,
            &cfg,
            &keys,
            card.as_mut(),
            &card_id,
            amount,
            &pan,
            "3012",
            &Pin::new(FUNDING_PIN)?,
        )
        .await?
        {
            Ended::ToppedUp(s) => {
                self.ctx.say(
                    "host",
                    "credit authorizer approved (PIN verified against keyed verification data, within the credit limit)",
                );
                self.ctx.say(
                    "wallet",
                    format!(
                        "VALUE UPDATE verified (SIG5 by {}) and relayed; card credited: balance {} minor units, counter {}",
                        host_key(&keys),
                        s.balance_minor,
                        s.counter
                    ),
                );
                self.ctx.say(
                    "host",
                    format!("ledger posted {} (transfer {})", s.amount, s.transfer_id),
                );
                Ok(())
            }
            other => bail!("top-up did not complete: {other:?}"),
        }
    }

    /// Orders at `shop`, pays, collects the receipt. With `lose_pcn`, the
    /// first attempt loses the PCN and the retry recovers it.
    async fn purchase(&mut self, shop: &Http, sku: &str, lose_pcn: bool) -> anyhow::Result<()> {
        let estimate = shop
            .post("/estimate", &json!({"items": [{"sku": sku, "qty": 1}]}))
            .await?;
        self.ctx.say(
            "store",
            format!(
                "estimate for {}: {} (items digest {}…)",
                estimate["store_id"].as_str().unwrap_or("?"),
                estimate["total"].as_str().unwrap_or("?"),
                &estimate["items_digest"].as_str().unwrap_or("")[..16]
            ),
        );
        let created = shop
            .post("/bills", &json!({"items": [{"sku": sku, "qty": 1}]}))
            .await?;
        let order = created["order_id"]
            .as_str()
            .context("order id")?
            .to_string();
        let (bill, shop_url) = wallet::load_bill(&format!("{}/bills/{order}", shop.base)).await?;
        let (cfg, keys) = wallet::wallet_config(&self.host).await?;
        let peek = kessai_crypto::cose::peek(&bill)?;
        self.ctx.say(
            "store",
            format!("BILL for order {order}: FIRST SIGNATURE by {}", peek.kid),
        );
        let mut shown = None;
        let mut confirm = |c: &Confirmation| {
            shown = Some(c.clone());
            true
        };
        let (mut card, card_id) = wallet::open_card(&self.card_spec, None)?;
        let faults = Faults { lose_pcn };
        let first = wallet::pay(
            &self.host,
            &cfg,
            &bill,
            card.as_mut(),
            &card_id,
            &mut confirm,
            faults,
        )
        .await?;
        drop(card);
        if let Some(c) = &shown {
            self.ctx.say(
                "wallet",
                format!(
                    "SETTLEMENT INFORMATION verified (SIG2 by {}), amount {} == bill; shown: balance {} minor units, pay {} to {}{} — customer confirms",
                    host_key(&keys),
                    c.amount,
                    c.balance_minor,
                    c.amount,
                    c.store_id,
                    c.mall_id.as_ref().map(|m| format!(" (mall {m})")).unwrap_or_default()
                ),
            );
        }
        let ended = if lose_pcn {
            ensure!(
                matches!(first, Ended::PcnLost),
                "expected the PCN to be lost: {first:?}"
            );
            self.ctx.say(
                "card",
                format!(
                    "debited (balance now {}); its PCN is LOST before reaching the host (wallet crash)",
                    self.card_balance()?
                ),
            );
            let status = self
                .host
                .get(&format!(
                    "/v1/flow-b/bills/{}/{order}",
                    estimate["store_id"].as_str().unwrap_or("")
                ))
                .await?;
            self.ctx.say(
                "host",
                format!(
                    "bill {order} is {} under a ledger hold; nothing posted yet",
                    status["status"].as_str().unwrap_or("?")
                ),
            );
            self.ctx.say(
                "wallet",
                "next contact with the card: the customer retries the same bill",
            );
            let (mut card, card_id) = wallet::open_card(&self.card_spec, None)?;
            let retry = wallet::pay(
                &self.host,
                &cfg,
                &bill,
                card.as_mut(),
                &card_id,
                &mut |_| bail_confirm(),
                Faults::default(),
            )
            .await?;
            self.ctx.say(
                "host",
                "read the card's counter and log (READ LOG under the secure channel): the debit is there → hold posted, bill settled once",
            );
            retry
        } else {
            first
        };
        let Ended::Paid {
            acn,
            completion,
            wallet: session,
        } = ended
        else {
            bail!("purchase did not complete: {ended:?}");
        };
        ensure!(completion.recovered == lose_pcn, "recovered flag");
        self.ctx.say(
            "wallet",
            format!(
                "SETTLEMENT COMPLETION verified (SIG3 by {}{}): {} paid, card balance {} minor units",
                kessai_crypto::cose::peek(&acn)?.kid,
                if completion.recovered { ", recovered" } else { "" },
                completion.amount,
                completion.pcn.balance_after_minor
            ),
        );
        let shop_http = Http::new(shop_url.as_deref().unwrap_or(&shop.base));
        let (receipt, delivery) = wallet::collect_receipt(&shop_http, &acn).await?;
        session
            .on_receipt(&cfg, &receipt)
            .map_err(|e| anyhow::anyhow!("receipt refused by the wallet: {e}"))?;
        self.ctx.say(
            "store",
            format!(
                "verified SIG3, issued the RECEIPT (SIG4 by {}); the host verified and kept it",
                kessai_crypto::cose::peek(&receipt)?.kid
            ),
        );
        let url = delivery["download_url"].as_str().context("download url")?;
        let content = reqwest::get(url).await?.error_for_status()?.text().await?;
        self.ctx.say(
            "wallet",
            format!("receipt verified (SIG4); downloaded with the token: {content:?}"),
        );
        let view = self
            .host
            .get(&format!(
                "/v1/flow-b/bills/{}/{}",
                completion.store_id, completion.order_id
            ))
            .await?;
        ensure!(
            view["status"] == "settled" && view["receipts"] == 1,
            "bill state: {view}"
        );
        self.settled.push((
            completion.store_id.to_string(),
            completion.order_id.to_string(),
        ));
        Ok(())
    }
}

fn bail_confirm() -> bool {
    // A recovered settlement needs no second confirmation: the card is not
    // debited again. Being asked would be a failure.
    false
}

fn host_key(keys: &kessai_host::routes::flow_b::PublishedKeys) -> String {
    keys.host_keys
        .iter()
        .map(|k| k.key_ref.clone())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs the flow-B demo.
pub async fn run(evidence_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let ctx = DemoCtx::start(evidence_dir, kessai_host::settings::Settings::default()).await?;
    // Wallet and shops use the real clock for bill and instruction expiry;
    // bring the host's virtual clock to it.
    ctx.clock
        .advance(i64::try_from(wallet::system_now_ms())? - ctx.clock.now_ms());
    let jpy = Currency::from_code("JPY")?;

    // 1. Setup by the issuer.
    let store_key = KeyFile::generate("store-1", "store", Vec::new(), 1)?;
    let mall_key = KeyFile::generate(
        "mall-1",
        "mall",
        vec!["shop-a".to_string(), "shop-b".to_string()],
        1,
    )?;
    for (id, kind, mall, pk) in [
        ("store-1", "store", None, Some(store_key.public_key_b64()?)),
        ("mall-1", "mall", None, Some(mall_key.public_key_b64()?)),
        ("shop-a", "member", Some("mall-1"), None),
        ("shop-b", "member", Some("mall-1"), None),
    ] {
        ctx.admin_post(
            "/v1/admin/merchants",
            json!({"id": id, "kind": kind, "name": id, "currency": "JPY", "mall_id": mall, "public_key": pk}),
        )
        .await?;
    }
    ctx.say("issuer", "registered store-1, mall-1 with member stores shop-a and shop-b (Ed25519 keys store-1#1, mall-1#1)");
    ctx.admin_post(
        "/v1/admin/cardholders",
        json!({"id": "alice", "name": "Alice", "currency": "JPY", "credit_limit_minor": 50000}),
    )
    .await?;
    let v = ctx
        .admin_post(
            "/v1/flow-b/admin/funding-cards",
            json!({"cardholder_id": "alice", "pan": FUNDING_PAN, "expiry_yymm": "3012", "pin": FUNDING_PIN}),
        )
        .await?;
    ctx.say(
        "issuer",
        format!(
            "cardholder alice: credit line 50000 JPY, funding card {} (kept as a keyed hash + PIN verification data)",
            v["pan_masked"].as_str().unwrap_or("?")
        ),
    );
    let card_id: CardId = "card-b-1".parse()?;
    let (_, keys) = kessai_host::card_security::issue_card(
        &ctx.app,
        &kessai_host::card_security::IssueCard {
            card_id: card_id.clone(),
            currency: jpy,
            purse_max_minor: 100_000,
            cardholder_id: Some("alice".parse()?),
        },
    )
    .await?;
    let state = ctx.work_dir.join("card-b-1.card");
    let mut seed = [0u8; 32];
    rand::fill(&mut seed);
    Card::personalize(
        PersonalizationParams::new(card_id.clone(), keys, jpy, 100_000, seed),
        FileNvm::create(&state)?,
    )
    .map_err(|e| anyhow::anyhow!("personalization: {e}"))?;
    ctx.say(
        "issuer",
        format!("issued IC card {card_id} (SCP03 keys diversified from the issuer card master key); state file {}", state.display()),
    );

    // The store and the mall run their shop servers.
    let mut shops = Vec::new();
    for key in [&store_key, &mall_key] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let shop = Arc::new(Shop::new(key, &ctx.base_url, url.clone()).await?);
        tokio::spawn(serve_on(listener, shop));
        ctx.say("store", format!("{} shop server on {url}", key.merchant_id));
        shops.push(Http::new(&url));
    }

    let host = Http::new(&ctx.base_url);
    let mut demo = Demo {
        ctx,
        host,
        card_spec: CardSpec::State(state),
        card_id,
        settled: Vec::new(),
    };

    // 2. Load the card.
    println!("  -- top-up (value update)");
    demo.top_up(Money::new(10_000, jpy)).await?;
    // 3. A purchase at a store.
    println!("  -- purchase at a store");
    demo.purchase(&shops[0], "store-1-0", false).await?;
    // 4. A purchase at a mall member store.
    println!("  -- purchase at a mall member store");
    demo.purchase(&shops[1], "shop-a-1", false).await?;
    // 5. Another top-up.
    println!("  -- top-up");
    demo.top_up(Money::new(5_000, jpy)).await?;
    // 6. A purchase whose PCN is lost.
    println!("  -- purchase with the PCN lost, recovered at the next contact");
    demo.purchase(&shops[0], "store-1-2", true).await?;

    // Card, shadow and ledger agree; the auditor is clean.
    let balance = demo.card_balance()?;
    let expected = 10_000 - 1_200 - 800 + 5_000 - 3_000;
    ensure!(
        balance.amount_minor == expected,
        "card balance {balance}, expected {expected}"
    );
    let app = &demo.ctx.app;
    let row = kessai_store::cards::card(&app.db, &demo.card_id)
        .await?
        .context("card row")?;
    let emoney = app
        .db
        .ledger()
        .account(&kessai_host::card_security::emoney_account_id(
            &demo.card_id,
        ))
        .await?
        .context("e-money account")?;
    let outstanding = emoney
        .balances
        .net_credit_posted()
        .context("e-money balance overflow")?;
    ensure!(
        row.shadow_balance_minor == balance.amount_minor && outstanding == balance.amount_minor,
        "card {balance}, shadow {}, e-money outstanding {outstanding}",
        row.shadow_balance_minor
    );
    ensure!(
        kessai_store::flow_b::pending_op(&app.db, demo.card_id.as_str())
            .await?
            .is_none(),
        "a card operation is still pending"
    );
    let report = kessai_store::audit::audit(&app.db).await?;
    ensure!(report.is_clean(), "auditor findings: {:?}", report.findings);
    let links = kessai_store::evidence::audit_links(&app.db).await?;
    ensure!(
        links.findings.is_empty(),
        "evidence findings: {:?}",
        links.findings
    );
    demo.ctx.say(
        "auditor",
        format!(
            "card balance {balance} == host shadow == e-money outstanding; {} settlements, each once; ledger consistent; {} evidence links intact",
            demo.settled.len(),
            links.links
        ),
    );

    if let Some(dir) = demo.ctx.evidence_for("flow-b")? {
        let subjects: Vec<String> = demo
            .settled
            .iter()
            .map(|(s, o)| kessai_host::routes::flow_b::bill_subject(s, o))
            .collect();
        let index =
            kessai_host::evidence_export::export(&demo.ctx.app, &subjects, &dir, &[]).await?;
        demo.ctx.say(
            "evidence",
            format!(
                "{} artefacts of {} settlements written to {}",
                index.len(),
                subjects.len(),
                dir.display()
            ),
        );
    }
    Ok(())
}
