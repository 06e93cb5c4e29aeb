//! `kessai wallet ...`: the customer's wallet of flow B (IC-card e-money).
//! It relays between the issuer host and the IC card and shows the
//! customer what they approve; it never holds a card key.
//!
//! - `pay`: verifies the store's bill (SIG1) with the merchant keys the
//!   host publishes, opens the card session at the host, relays the SCP03
//!   handshake, verifies every SETTLEMENT INFORMATION (SIG2) before
//!   forwarding anything to the card, checks that its amount equals the
//!   bill, shows balance and amount and asks to confirm (`--yes` for
//!   scripts), verifies the completion (SIG3) and the store's receipt
//!   (SIG4), and stores the receipt.
//! - `topup`: seals the funding card number, expiry and a format-4 PIN
//!   block (PIN from `KESSAI_FUNDING_PIN`, never argv) to the host's
//!   transmission key, then relays the VALUE UPDATE (SIG5) to the card.
//!
//! Cards: `state:FILE` (the emulator's state file, in process) or
//! `pcsc[:READER]` (a card in a PC/SC reader; build with `--features pcsc`).
//! The protocol decisions are `kessai_flow_b::wallet`; this module only
//! moves bytes and talks to people.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use kessai_card::Card;
use kessai_card_emu::{EmulatedCard, FileNvm};
use kessai_card_io::{CardTransport, InProcess};
use kessai_crypto::hpke::HpkePublicKey;
use kessai_crypto::sign::VerifyingKey;
use kessai_flow_b::artefacts::SettlementCompletion;
use kessai_flow_b::host::Sig2Mode;
use kessai_flow_b::messages::{HostToWallet, TopUpSummary};
use kessai_flow_b::registry::KeyDirectory;
use kessai_flow_b::wallet::{Confirmation, WalletAction, WalletConfig, WalletSession};
use kessai_host::routes::flow_b::PublishedKeys;
use kessai_ids::{CardId, KeyRef};
use kessai_money::Money;
use kessai_secrets::{CardNumber, Pin};
use serde_json::{Value, json};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Wallet commands.
#[derive(Debug, clap::Subcommand)]
pub enum WalletCommand {
    /// Pay a store's bill with an IC card.
    Pay(PayArgs),
    /// Load value onto an IC card, paid by a funding (credit) card. The PIN
    /// comes from the KESSAI_FUNDING_PIN environment variable.
    Topup(TopupArgs),
}

/// Arguments of `kessai wallet pay`.
#[derive(Debug, clap::Args)]
pub struct PayArgs {
    /// The issuer host.
    #[arg(long, default_value = "http://127.0.0.1:8420")]
    pub host: String,
    /// The bill: a file with the COSE bytes (`kessai shop bill --out`), or
    /// a shop URL answering `{"bill": base64url}` (`kessai shop serve`).
    #[arg(long)]
    pub bill: String,
    /// The card: `state:FILE` (emulator state file) or `pcsc[:READER]`.
    #[arg(long)]
    pub card: String,
    /// Card id (needed for `pcsc`; read from the state file otherwise).
    #[arg(long)]
    pub card_id: Option<String>,
    /// The shop that issued the bill (to collect its receipt); taken from
    /// the bill URL when the bill came from one.
    #[arg(long)]
    pub shop: Option<String>,
    /// Pay without asking (scripts).
    #[arg(long)]
    pub yes: bool,
    /// Where receipts are kept.
    #[arg(long, default_value = "kessai-wallet")]
    pub receipts: PathBuf,
}

/// Arguments of `kessai wallet topup`.
#[derive(Debug, clap::Args)]
pub struct TopupArgs {
    /// The issuer host.
    #[arg(long, default_value = "http://127.0.0.1:8420")]
    pub host: String,
    /// Amount, e.g. "5000 JPY".
    #[arg(long)]
    pub amount: String,
    /// Funding card number (or KESSAI_FUNDING_CARD).
    #[arg(long, env = "KESSAI_FUNDING_CARD", hide_env_values = true)]
    pub funding_card: String,
    /// Funding card expiry, YYMM.
    #[arg(long)]
    pub funding_expiry: String,
    /// The card: `state:FILE` or `pcsc[:READER]`.
    #[arg(long)]
    pub card: String,
    /// Card id (needed for `pcsc`).
    #[arg(long)]
    pub card_id: Option<String>,
}

/// A refusal from the host or a shop (RFC 9457 problem).
#[derive(Debug, Clone)]
pub struct Refusal {
    /// HTTP status.
    pub status: u16,
    /// Problem slug.
    pub problem: String,
    /// Detail.
    pub detail: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "refused ({} {}): {}",
            self.status, self.problem, self.detail
        )
    }
}

impl std::error::Error for Refusal {}

/// JSON over HTTP to the host (or a shop), with a fresh Idempotency-Key
/// per POST and problems as [`Refusal`]s.
#[derive(Debug, Clone)]
pub struct Http {
    /// Base URL.
    pub base: String,
    /// Client.
    pub http: reqwest::Client,
}

impl Http {
    /// A client for `base`.
    pub fn new(base: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_string(),
            http: reqwest::Client::new(),
        }
    }

    /// GET `path`.
    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .with_context(|| format!("GET {}{path}", self.base))?;
        answer(resp).await
    }

    /// POST `body` to `path`.
    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let mut key = [0u8; 16];
        rand::fill(&mut key);
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .header("idempotency-key", hex::encode(key))
            .json(body)
            .send()
            .await
            .with_context(|| format!("POST {}{path}", self.base))?;
        answer(resp).await
    }
}

async fn answer(resp: reqwest::Response) -> anyhow::Result<Value> {
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        return Err(Refusal {
            status: status.as_u16(),
            problem: v["type"]
                .as_str()
                .and_then(|t| t.strip_prefix("urn:kessai:problem:"))
                .unwrap_or("unknown")
                .to_string(),
            detail: v["detail"].as_str().unwrap_or("").to_string(),
        }
        .into());
    }
    Ok(v)
}

/// Unix ms now (the wallet's own clock).
pub fn system_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn directory(keys: &[kessai_host::routes::flow_b::PublishedKey]) -> anyhow::Result<KeyDirectory> {
    let mut d = KeyDirectory::new();
    for k in keys {
        let pk: [u8; 32] = B64
            .decode(&k.public_key)
            .ok()
            .and_then(|b| b.try_into().ok())
            .context("published key is not 32 bytes base64url")?;
        d = d.with(
            k.key_ref.parse::<KeyRef>()?,
            VerifyingKey::from_bytes(&pk).context("published key")?,
        );
    }
    Ok(d)
}

/// The wallet's trust anchors from `GET /v1/flow-b/keys`.
pub async fn wallet_config(host: &Http) -> anyhow::Result<(WalletConfig, PublishedKeys)> {
    let keys: PublishedKeys =
        serde_json::from_value(host.get("/v1/flow-b/keys").await?).context("host keys")?;
    let cfg = WalletConfig {
        host_keys: directory(&keys.host_keys)?,
        merchant_keys: directory(&keys.merchant_keys)?,
        sig2: if keys.sig2 == "omitted" {
            Sig2Mode::Omitted
        } else {
            Sig2Mode::Signed
        },
    };
    Ok((cfg, keys))
}

/// Where the card is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CardSpec {
    /// The emulator's state file, driven in this process.
    State(PathBuf),
    /// A card in a PC/SC reader (the first with a card, or the named one).
    Pcsc(Option<String>),
}

impl std::str::FromStr for CardSpec {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        if let Some(p) = s.strip_prefix("state:") {
            return Ok(Self::State(PathBuf::from(p)));
        }
        if s == "pcsc" {
            return Ok(Self::Pcsc(None));
        }
        if let Some(r) = s.strip_prefix("pcsc:") {
            return Ok(Self::Pcsc(Some(r.to_string())));
        }
        bail!("--card must be state:FILE or pcsc[:READER]")
    }
}

/// An open card connection and its id.
pub type OpenCard = (Box<dyn CardTransport + Send>, CardId);

/// Connects to the card.
pub fn open_card(spec: &CardSpec, card_id: Option<&str>) -> anyhow::Result<OpenCard> {
    match spec {
        CardSpec::State(path) => {
            let card = Card::load(FileNvm::open(path)?)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            let id = card.snapshot().card_id;
            if let Some(given) = card_id
                && given != id.as_str()
            {
                bail!("the card in {} is {id}, not {given}", path.display());
            }
            Ok((Box::new(InProcess::new(EmulatedCard(card))), id))
        }
        #[cfg(feature = "pcsc")]
        CardSpec::Pcsc(reader) => {
            use kessai_card_io::pcsc::{PcscOptions, PcscTransport, ReaderSelector};
            let id: CardId = card_id
                .context("--card-id is needed with a PC/SC card (it is printed on the card)")?
                .parse()?;
            let mut options = PcscOptions::default();
            if let Some(r) = reader {
                options.reader = ReaderSelector::NameContains(r.clone());
            }
            let t = PcscTransport::connect(&options).context("PC/SC")?;
            Ok((Box::new(t), id))
        }
        #[cfg(not(feature = "pcsc"))]
        CardSpec::Pcsc(_) => {
            let _ = card_id;
            bail!("this kessai was built without PC/SC support (cargo build --features pcsc)")
        }
    }
}

/// Test and demo hooks: faults injected on the wallet's side.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// The card's answer to the purse command (the PCN) is lost before it
    /// reaches the host (a crash or network loss after the card debited).
    pub lose_pcn: bool,
}

/// How a wallet session ended.
#[derive(Debug)]
pub enum Ended {
    /// Paid: the verified completion.
    Paid {
        /// The completion (ACN) COSE bytes.
        acn: Vec<u8>,
        /// What it says.
        completion: Box<SettlementCompletion>,
        /// The wallet state (to verify the receipt with).
        wallet: Box<WalletSession>,
    },
    /// Top-up done.
    ToppedUp(TopUpSummary),
    /// The host ended the session without moving value.
    Aborted(String),
    /// The customer declined.
    Declined,
    /// The PCN was dropped (fault injection).
    PcnLost,
}

fn transmit(card: &mut dyn CardTransport, apdus: &[Vec<u8>]) -> Vec<Vec<u8>> {
    apdus
        .iter()
        .map(|a| match card.transmit(a) {
            Ok(r) => r,
            // Card removed or reader gone: the host refuses the empty
            // answer and resolves any debit at the card's next contact.
            Err(e) => {
                tracing::warn!(error = %e, "card transport failed");
                Vec::new()
            }
        })
        .collect()
}

/// Runs a session from the host's first message to its end. `confirm` is
/// asked once, with the balance and amount, before the SPC goes to the card.
pub async fn relay(
    host: &Http,
    cfg: &WalletConfig,
    mut wallet: WalletSession,
    first: Value,
    card: &mut dyn CardTransport,
    confirm: &mut dyn FnMut(&Confirmation) -> bool,
    faults: Faults,
) -> anyhow::Result<Ended> {
    let mut reply: HostToWallet = serde_json::from_value(first).context("host message")?;
    loop {
        let (w, mut action) = wallet
            .on_host(cfg, &reply, system_now_ms())
            .map_err(|e| anyhow::anyhow!("wallet refused the host's message: {e}"))?;
        wallet = w;
        if let WalletAction::Confirm(c) = &action {
            if !confirm(c) {
                let _ = wallet.decline();
                return Ok(Ended::Declined);
            }
            let (w, a) = wallet.confirm()?;
            wallet = w;
            action = a;
        }
        match action {
            WalletAction::ToCard(apdus) => {
                let purse = apdus.len() == 1 && matches!(apdus[0].get(1), Some(0x54 | 0x52));
                let responses = transmit(card, &apdus);
                if purse && faults.lose_pcn {
                    return Ok(Ended::PcnLost);
                }
                let (w, msg) = wallet.on_card(responses)?;
                wallet = w;
                let path = format!(
                    "/v1/flow-b/sessions/{}/responses",
                    hex::encode(msg.session_id)
                );
                reply =
                    serde_json::from_value(host.post(&path, &serde_json::to_value(&msg)?).await?)
                        .context("host message")?;
            }
            WalletAction::Paid(c) => {
                return Ok(Ended::Paid {
                    acn: wallet.completion().context("completion")?.to_vec(),
                    completion: Box::new(c),
                    wallet: Box::new(wallet),
                });
            }
            WalletAction::ToppedUp(s) => return Ok(Ended::ToppedUp(s)),
            WalletAction::Aborted(r) => return Ok(Ended::Aborted(format!("{r:?}"))),
            WalletAction::Confirm(_) => bail!("confirmation asked twice"),
        }
    }
}

/// A purchase: verify the bill, open the session, relay to the end.
pub async fn pay(
    host: &Http,
    cfg: &WalletConfig,
    bill: &[u8],
    card: &mut dyn CardTransport,
    card_id: &CardId,
    confirm: &mut dyn FnMut(&Confirmation) -> bool,
    faults: Faults,
) -> anyhow::Result<Ended> {
    let wallet = WalletSession::purchase(cfg, bill, card_id.clone(), system_now_ms())
        .map_err(|e| anyhow::anyhow!("bill refused: {e}"))?;
    let first = host
        .post(
            "/v1/flow-b/purchases",
            &json!({"bill": B64.encode(bill), "card_id": card_id.as_str()}),
        )
        .await?;
    relay(host, cfg, wallet, first, card, confirm, faults).await
}

/// A top-up: seal the funding credentials, open the session, relay.
#[allow(clippy::too_many_arguments)]
pub async fn top_up(
    host: &Http,
    cfg: &WalletConfig,
    keys: &PublishedKeys,
    card: &mut dyn CardTransport,
    card_id: &CardId,
    amount: Money,
    funding_card: &CardNumber,
    expiry_yymm: &str,
    pin: &Pin,
) -> anyhow::Result<Ended> {
    let pk: [u8; 32] = B64
        .decode(&keys.transmission_key.public_key)
        .ok()
        .and_then(|b| b.try_into().ok())
        .context("transmission key")?;
    let sealed = kessai_host::routes::flow_b::seal_funding_credentials(
        &keys.transmission_key.key_ref.parse()?,
        &HpkePublicKey::from_bytes(&pk).context("transmission key")?,
        card_id,
        amount,
        funding_card,
        expiry_yymm,
        pin,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let wallet = WalletSession::top_up(card_id.clone(), amount)?;
    let first = host
        .post(
            "/v1/flow-b/top-ups",
            &json!({"card_id": card_id.as_str(), "amount_minor": amount.amount_minor,
                    "currency": amount.currency.code(), "credentials": sealed}),
        )
        .await?;
    relay(
        host,
        cfg,
        wallet,
        first,
        card,
        &mut |_| true,
        Faults::default(),
    )
    .await
}

/// Reads a bill from a file (COSE bytes) or a shop URL (`{"bill": b64}`).
pub async fn load_bill(source: &str) -> anyhow::Result<(Vec<u8>, Option<String>)> {
    if source.starts_with("http://") || source.starts_with("https://") {
        let v = reqwest::get(source)
            .await?
            .error_for_status()?
            .json::<Value>()
            .await?;
        let bill = B64
            .decode(v["bill"].as_str().context("shop answer without bill")?)
            .context("bill is not base64url")?;
        let shop = v["shop"]
            .as_str()
            .map(str::to_string)
            .or_else(|| source.find("/bills").map(|i| source[..i].to_string()));
        return Ok((bill, shop));
    }
    Ok((
        std::fs::read(source).with_context(|| format!("read {source}"))?,
        None,
    ))
}

/// Asks the customer on the terminal.
fn ask(c: &Confirmation) -> bool {
    let at = match &c.mall_id {
        Some(m) => format!("{} (mall {m})", c.store_id),
        None => c.store_id.to_string(),
    };
    let balance = Money::new(
        i64::try_from(c.balance_minor).unwrap_or(i64::MAX),
        c.amount.currency,
    );
    print!(
        "Pay {} to {at} for order {}? Card balance {balance}. [y/N] ",
        c.amount, c.order_id
    );
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).is_ok() && matches!(line.trim(), "y" | "Y" | "yes")
}

/// The store's receipt for a completion: posted to the shop, which
/// verifies SIG3, answers SIG4 and a download token.
pub async fn collect_receipt(shop: &Http, acn: &[u8]) -> anyhow::Result<(Vec<u8>, Value)> {
    let v = shop
        .post("/completions", &json!({"completion": B64.encode(acn)}))
        .await?;
    let receipt = B64
        .decode(
            v["receipt"]
                .as_str()
                .context("shop answer without receipt")?,
        )
        .context("receipt is not base64url")?;
    Ok((receipt, v))
}

fn save(dir: &Path, name: &str, bytes: &[u8]) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let p = dir.join(name);
    std::fs::write(&p, bytes)?;
    Ok(p)
}

async fn run_pay(a: PayArgs) -> anyhow::Result<ExitCode> {
    let host = Http::new(&a.host);
    let (cfg, _) = wallet_config(&host).await?;
    let (bill, shop_from_url) = load_bill(&a.bill).await?;
    let spec: CardSpec = a.card.parse()?;
    let (mut card, card_id) = open_card(&spec, a.card_id.as_deref())?;
    let yes = a.yes;
    let mut confirm = |c: &Confirmation| {
        if yes {
            println!(
                "paying {} to {} for order {} (card balance {} minor units)",
                c.amount, c.store_id, c.order_id, c.balance_minor
            );
            true
        } else {
            ask(c)
        }
    };
    let ended = pay(
        &host,
        &cfg,
        &bill,
        card.as_mut(),
        &card_id,
        &mut confirm,
        Faults::default(),
    )
    .await?;
    match ended {
        Ended::Paid {
            acn,
            completion,
            wallet,
        } => {
            println!(
                "paid {} for order {} at {}: completion verified (SIG3 by {}), card balance {} minor units{}",
                completion.amount,
                completion.order_id,
                completion.store_id,
                kessai_crypto::cose::peek(&acn)
                    .map(|p| p.kid.to_string())
                    .unwrap_or_default(),
                completion.pcn.balance_after_minor,
                if completion.recovered {
                    " (recovered)"
                } else {
                    ""
                }
            );
            let name = format!("{}-{}", completion.store_id, completion.order_id);
            save(&a.receipts, &format!("{name}.completion.cose"), &acn)?;
            if let Some(shop) = a.shop.clone().or(shop_from_url) {
                let (receipt, v) = collect_receipt(&Http::new(&shop), &acn).await?;
                let (_, verified) = wallet
                    .on_receipt(&cfg, &receipt)
                    .map_err(|e| anyhow::anyhow!("receipt refused: {e}"))?;
                let p = save(&a.receipts, &format!("{name}.receipt.cose"), &receipt)?;
                println!(
                    "receipt verified (SIG4), kept in {}; download: {}",
                    p.display(),
                    v["download_url"].as_str().unwrap_or("-")
                );
                let _ = verified;
            } else {
                println!(
                    "no shop given: the completion is kept in {}",
                    a.receipts.display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Ended::Declined => {
            println!("declined: nothing was sent to the card");
            Ok(ExitCode::FAILURE)
        }
        Ended::Aborted(why) => {
            println!("the host ended the session without moving value: {why}");
            Ok(ExitCode::FAILURE)
        }
        Ended::ToppedUp(_) | Ended::PcnLost => bail!("unexpected end of a purchase"),
    }
}

async fn run_topup(a: TopupArgs) -> anyhow::Result<ExitCode> {
    let pin = Pin::new(
        &std::env::var("KESSAI_FUNDING_PIN")
            .context("set KESSAI_FUNDING_PIN (the PIN is never taken from the command line)")?,
    )
    .context("KESSAI_FUNDING_PIN")?;
    let pan = CardNumber::new(&a.funding_card).context("--funding-card")?;
    let amount: Money = a.amount.parse().context("--amount")?;
    let host = Http::new(&a.host);
    let (cfg, keys) = wallet_config(&host).await?;
    let spec: CardSpec = a.card.parse()?;
    let (mut card, card_id) = open_card(&spec, a.card_id.as_deref())?;
    match top_up(
        &host,
        &cfg,
        &keys,
        card.as_mut(),
        &card_id,
        amount,
        &pan,
        &a.funding_expiry,
        &pin,
    )
    .await?
    {
        Ended::ToppedUp(s) => {
            println!(
                "loaded {} onto {card_id} from {} (VALUE UPDATE verified, SIG5); card balance {} minor units",
                s.amount,
                pan.masked(),
                s.balance_minor
            );
            Ok(ExitCode::SUCCESS)
        }
        Ended::Aborted(why) => {
            println!("the host ended the top-up without moving value: {why}");
            Ok(ExitCode::FAILURE)
        }
        _ => bail!("unexpected end of a top-up"),
    }
}

/// Runs a wallet command.
pub async fn run(cmd: WalletCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        WalletCommand::Pay(a) => run_pay(a).await,
        WalletCommand::Topup(a) => run_topup(a).await,
    }
}
