//! `kessai card ...`: the IC card emulator — personalize a card state file
//! (issued by the host, or a standalone test card with given static keys),
//! show it, and run it in a virtual PC/SC reader (vsmartcard vpcd).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use kessai_card::{Card, CardholderData, PersonalizationParams};
use kessai_card_emu::{EmulatedCard, FileNvm};
use kessai_ids::CardId;
use kessai_money::Currency;
use kessai_scp03::{AesKey, StaticKeys};
use kessai_secrets::{CardNumber, Pin};
use serde_json::json;

use crate::DataArgs;

/// Card emulator commands.
#[derive(Debug, clap::Subcommand)]
pub enum CardCommand {
    /// Create a card state file. With --static-keys: a standalone test card
    /// whose ENC/MAC/DEK keys are the given key (no host involved). Without:
    /// the host issues the card (registers it, derives its keys from the
    /// issuer card master key).
    Personalize(Box<PersonalizeArgs>),
    /// Print the card's AID, id, key version, balance, counter and log
    /// (card number masked).
    Show {
        /// Card state file.
        #[arg(long)]
        state: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run the card in the vsmartcard vpcd virtual reader of pcsc-lite, so
    /// any PC/SC application sees it, until Ctrl-C.
    Emulate {
        /// Card state file.
        #[arg(long)]
        state: PathBuf,
        /// vpcd address (pcscd's vpcd driver listens there).
        #[arg(long, env = "KESSAI_VPCD_ADDR", default_value = "127.0.0.1:35963")]
        vpcd: SocketAddr,
    },
}

/// Arguments of `kessai card personalize`.
#[derive(Debug, clap::Args)]
pub struct PersonalizeArgs {
    /// The card state file to create (refuses to overwrite).
    #[arg(long)]
    state: PathBuf,
    /// Card id (default for a test card: test-card-1).
    #[arg(long)]
    card_id: Option<String>,
    /// Standalone test card: the ENC = MAC = DEK static key as hex (16 or 32
    /// bytes), e.g. the GlobalPlatform test key
    /// 404142434445464748494A4B4C4D4E4F.
    #[arg(long)]
    static_keys: Option<String>,
    /// SCP03 key version number of a test card (1-127).
    #[arg(long, default_value_t = 0x30)]
    key_version: u8,
    /// Purse currency.
    #[arg(long, default_value = "JPY")]
    currency: String,
    /// Purse maximum, minor units.
    #[arg(long, default_value_t = 100_000)]
    purse_max_minor: i64,
    /// Initial balance of a test card, minor units (host-issued cards start
    /// at 0 and are loaded by a top-up).
    #[arg(long, default_value_t = 0)]
    balance_minor: i64,
    /// Cardholder settlement data for flow D: card number (the PIN, if any,
    /// comes from the KESSAI_CARD_PIN environment variable, never argv).
    #[arg(long)]
    pan: Option<String>,
    /// Card expiry YYMM (with --pan).
    #[arg(long, default_value = "3012")]
    expiry: String,
    /// Cardholder name (with --pan).
    #[arg(long, default_value = "KESSAI TEST")]
    name: String,
    /// Owner (cardholder id) of a host-issued card.
    #[arg(long)]
    cardholder: Option<String>,
    /// Enrol the cardholder's fingerprint on the card for on-card matching
    /// (flow D claim 16): synthetic finger N on the simulated sensor.
    #[arg(long)]
    finger_seed: Option<u64>,
    #[command(flatten)]
    data: DataArgs,
}

fn seed() -> [u8; 32] {
    let mut s = [0u8; 32];
    rand::fill(&mut s);
    s
}

async fn personalize(a: PersonalizeArgs) -> anyhow::Result<ExitCode> {
    let currency = Currency::from_code(&a.currency).context("currency")?;
    let pin = match std::env::var("KESSAI_CARD_PIN") {
        Ok(p) => Some(Pin::new(&p).context("KESSAI_CARD_PIN")?),
        Err(_) => None,
    };
    let cardholder = match &a.pan {
        Some(pan) => Some(CardholderData {
            pan: CardNumber::new(pan).context("--pan")?,
            expiry_yymm: a.expiry.clone(),
            name: a.name.clone(),
        }),
        None => None,
    };
    let fingerprint = a
        .finger_seed
        .map(crate::cli::device::enrol_fingerprint)
        .transpose()?;
    // The state file first: a host-issued card registers its id for good, so
    // nothing may be issued for a file that cannot then be written.
    let nvm = FileNvm::create(&a.state)?;
    let personalized = async {
        let (card_id, mut params) = build_params(&a, currency).await?;
        params.cardholder = cardholder;
        params.pin = pin;
        params.fingerprint = fingerprint;
        let card = Card::personalize(params, nvm)
            .map_err(|e| anyhow::anyhow!("personalization refused: {e}"))?;
        anyhow::Ok((card_id, card))
    }
    .await;
    let (card_id, card) = match personalized {
        Ok(v) => v,
        Err(e) => {
            // No card was written: the image just created goes with it.
            std::fs::remove_file(&a.state).ok();
            return Err(e);
        }
    };
    let s = card.snapshot();
    eprintln!(
        "personalized card {card_id} in {} (key version {}, balance {}, purse max {})",
        a.state.display(),
        s.key_version,
        s.balance,
        s.purse_max
    );
    Ok(ExitCode::SUCCESS)
}

/// The card id and personalization parameters: from `--static-keys` for a
/// standalone test card, or issued by the host (card row and ledger account)
/// for `--card-id` alone.
async fn build_params(
    a: &PersonalizeArgs,
    currency: Currency,
) -> anyhow::Result<(CardId, PersonalizationParams)> {
    Ok(match &a.static_keys {
        Some(hex_key) => {
            let bytes = zeroize::Zeroizing::new(
                hex::decode(hex_key.trim()).context("--static-keys is not hex")?,
            );
            let key = AesKey::from_slice(&bytes)
                .map_err(|_| anyhow::anyhow!("--static-keys must be 16 or 32 bytes"))?;
            if !(1..=0x7F).contains(&a.key_version) {
                bail!("--key-version must be 1-127");
            }
            let card_id: CardId = a.card_id.as_deref().unwrap_or("test-card-1").parse()?;
            let keys = kessai_card::IssuerCardKeys {
                static_keys: StaticKeys::single(key.clone(), a.key_version),
                // A test card uses the same key for its flow-D cryptograms.
                cryptogram_key: key,
            };
            let mut p = PersonalizationParams::new(
                card_id.clone(),
                keys,
                currency,
                a.purse_max_minor,
                seed(),
            );
            p.initial_balance_minor = a.balance_minor;
            (card_id, p)
        }
        None => {
            let Some(id) = &a.card_id else {
                bail!(
                    "give --card-id (card issued by the host) or --static-keys (standalone test card)"
                );
            };
            if a.balance_minor != 0 {
                bail!("a host-issued card starts empty; load it with a top-up");
            }
            let card_id: CardId = id.parse()?;
            let config = a
                .data
                .host_config("127.0.0.1:0".parse().expect("static address"));
            let state =
                kessai_host::app::open_state(&config, Arc::new(kessai_host::clock::SystemClock))
                    .await?;
            let (_, keys) = kessai_host::card_security::issue_card(
                &state,
                &kessai_host::card_security::IssueCard {
                    card_id: card_id.clone(),
                    currency,
                    purse_max_minor: a.purse_max_minor,
                    cardholder_id: a.cardholder.as_deref().map(str::parse).transpose()?,
                },
            )
            .await?;
            (
                card_id.clone(),
                PersonalizationParams::new(card_id, keys, currency, a.purse_max_minor, seed()),
            )
        }
    })
}

fn show(state: PathBuf, as_json: bool) -> anyhow::Result<ExitCode> {
    let card = Card::load(FileNvm::open(&state)?)
        .map_err(|e| anyhow::anyhow!("{}: {e}", state.display()))?;
    let s = card.snapshot();
    let log: Vec<_> = s
        .log
        .iter()
        .map(|r| {
            json!({
                "counter": r.counter,
                "kind": format!("{:?}", r.kind).to_lowercase(),
                "amount_minor": r.amount_minor,
                "balance_after_minor": r.balance_after_minor,
                "reference": hex::encode(r.reference),
            })
        })
        .collect();
    let v = json!({
        "aid": hex::encode_upper(s.aid),
        "card_id": s.card_id.to_string(),
        "key_version": s.key_version,
        "balance": s.balance.to_string(),
        "balance_minor": s.balance.amount_minor,
        "currency": s.balance.currency.code(),
        "purse_max": s.purse_max.to_string(),
        "counter": s.counter,
        "lifecycle": format!("{:?}", s.lifecycle).to_lowercase(),
        "pan": s.pan_masked,
        "pin_tries_left": s.pin_tries_left,
        "fingerprint_tries_left": s.fingerprint_tries_left,
        "log": log,
    });
    if as_json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("AID          {}", v["aid"].as_str().unwrap_or(""));
        println!("card id      {}", s.card_id);
        println!("key version  {}", s.key_version);
        println!("balance      {} (max {})", s.balance, s.purse_max);
        println!("counter      {}", s.counter);
        println!("lifecycle    {}", v["lifecycle"].as_str().unwrap_or(""));
        if let Some(p) = &s.pan_masked {
            println!("card number  {p}");
        }
        println!("log ({} records, newest first)", s.log.len());
        for r in &s.log {
            println!(
                "  #{:<6} {:<6} {:>12} -> balance {:>12}  ref {}",
                r.counter,
                format!("{:?}", r.kind).to_lowercase(),
                r.amount_minor,
                r.balance_after_minor,
                hex::encode(r.reference)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn emulate(state: PathBuf, vpcd: SocketAddr) -> anyhow::Result<ExitCode> {
    let card = Card::load(FileNvm::open(&state)?)
        .map_err(|e| anyhow::anyhow!("{}: {e}", state.display()))?;
    let id = card.snapshot().card_id;
    let mut slot = EmulatedCard(card);
    let config = kessai_card_io::vpcd::VpcdConfig {
        addr: vpcd,
        ..Default::default()
    };
    eprintln!("card {id} connecting to vpcd at {vpcd} (Ctrl-C to stop)");
    kessai_card_io::vpcd::serve_vpcd(&config, &mut slot, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    eprintln!("card {id} removed");
    Ok(ExitCode::SUCCESS)
}

/// Runs a card command.
pub async fn run(cmd: CardCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        CardCommand::Personalize(a) => personalize(*a).await,
        CardCommand::Show { state, json } => show(state, json),
        CardCommand::Emulate { state, vpcd } => emulate(state, vpcd).await,
    }
}
