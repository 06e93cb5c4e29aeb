//! `kessai phone ...`: the customer's phone of flow D (temporary password
//! at the POS). The protocol is `kessai_flow_d::phone`; this module reads
//! the IC card (emulator state file, or PC/SC with `--features pcsc`),
//! talks HTTP to the host, and shows the password.
//!
//! - `authorize`: challenge → card cryptogram + sealed cardholder data +
//!   PIN block (PIN from `KESSAI_CARD_PIN`, never argv) → the host's
//!   one-time password, shown as digits and as an EMVCo QR code in the
//!   terminal (and as a PNG with `--qr-png`).
//! - `merchant-card`: the merchant-IC-card variant (claims 2, 7, 8): reads
//!   the customer's and the merchant's cards, the customer enters the
//!   amount; the host settles and signals the POS.
//! - `receipts`: the receipts the host pushed to this card's phone
//!   (claim 15), signatures verified.
//! - `pay-link`: the short-range variant (claims 3, 11–14): connect to a
//!   POS over the link (`kessai pos serve-link`), pay a basket rung up at
//!   its till; the POS relays the card authentication and sealed PIN.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use kessai_card_emu::Relay;
use kessai_crypto::hpke::HpkePublicKey;
use kessai_crypto::sign::VerifyingKey;
use kessai_flow_d::artefacts::{LineItem, verify_receipt};
use kessai_flow_d::emvqr::{render_png, render_text};
use kessai_flow_d::host::{HostChallenge, HostPublic};
use kessai_flow_d::phone::{
    CustomerVerification, build_authorization, build_merchant_card_request,
};
use kessai_host::routes::flow_d::{AuthorizationBody, MerchantCardBody};
use kessai_ids::KeyRef;
use kessai_money::Money;
use kessai_secrets::Pin;
use serde_json::Value;

use crate::cli::wallet::{CardSpec, Http, open_card};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Phone commands.
#[derive(Debug, clap::Subcommand)]
pub enum PhoneCommand {
    /// Get a one-time temporary password for the card (PIN from the
    /// KESSAI_CARD_PIN environment variable).
    Authorize {
        /// Host URL.
        #[arg(long, default_value = "http://127.0.0.1:8420")]
        host: String,
        /// The card: `state:FILE` (emulator state file) or `pcsc[:READER]`.
        #[arg(long)]
        card: CardSpec,
        /// Card id (needed for `pcsc`).
        #[arg(long)]
        card_id: Option<String>,
        /// The most the password may settle, e.g. "5000 JPY".
        #[arg(long)]
        cap: String,
        #[command(flatten)]
        verify: VerifyArgs,
        /// Also write the QR code as a PNG image.
        #[arg(long)]
        qr_png: Option<PathBuf>,
        /// Write the grant (password, QR payload, expiry) as JSON here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Pay with the customer's card and the merchant's IC card in the phone.
    MerchantCard {
        /// Host URL.
        #[arg(long, default_value = "http://127.0.0.1:8420")]
        host: String,
        /// Customer card: `state:FILE` or `pcsc[:READER]`.
        #[arg(long)]
        card: CardSpec,
        /// Merchant card: `state:FILE` or `pcsc[:READER]`.
        #[arg(long)]
        merchant_card: CardSpec,
        /// Goods, `DESCRIPTION:QUANTITY:UNIT_PRICE_MINOR` (repeat).
        #[arg(long = "item", required = true)]
        items: Vec<String>,
        /// Currency of the unit prices.
        #[arg(long, default_value = "JPY")]
        currency: String,
        /// The POS terminal to signal.
        #[arg(long)]
        terminal: Option<String>,
        #[command(flatten)]
        verify: VerifyArgs,
    },
    /// Pay a basket at a POS over the short-range link (TCP).
    PayLink {
        /// Host URL (for the host's published keys).
        #[arg(long, default_value = "http://127.0.0.1:8420")]
        host: String,
        /// The POS link address.
        #[arg(long)]
        pos: String,
        /// The POS link key file (written by `kessai pos serve-link`).
        #[arg(long)]
        pos_key: PathBuf,
        /// The basket shown at the till.
        #[arg(long)]
        basket: String,
        /// The card: `state:FILE` or `pcsc[:READER]`.
        #[arg(long)]
        card: CardSpec,
        /// Card id (needed for `pcsc`).
        #[arg(long)]
        card_id: Option<String>,
        #[command(flatten)]
        verify: VerifyArgs,
    },
    /// Show the receipts the host pushed to this card's phone.
    Receipts {
        /// Host URL.
        #[arg(long, default_value = "http://127.0.0.1:8420")]
        host: String,
        /// Card id.
        #[arg(long)]
        card_id: String,
        /// Only receipts after this queue position.
        #[arg(long, default_value_t = 0)]
        after: i64,
    },
}

/// How the customer verifies themself.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// `online-pin` (PIN block to the host), `offline-pin` (the card checks
    /// it), `secret` (the registered secret from KESSAI_CARD_SECRET, claim
    /// 17) or `fingerprint` (matched on the card, claim 16; the finger comes
    /// from --finger-seed). PINs come from KESSAI_CARD_PIN.
    #[arg(long, default_value = "online-pin")]
    pub method: String,
    /// With `--method fingerprint`: the synthetic finger the phone's
    /// simulated sensor reads.
    #[arg(long)]
    pub finger_seed: Option<u64>,
    /// Check the customer card in the phone first (claim 10) against this
    /// issuer-signed card profile (the `profile` object of the card's
    /// registration answer, as JSON); a card that fails is refused before
    /// anything is sent to the host.
    #[arg(long)]
    pub profile: Option<PathBuf>,
}

/// The claim-10 in-phone check when `--profile` was given; before any
/// network traffic.
fn precheck(
    card: &mut impl kessai_card::harness::ApduTransport,
    v: &VerifyArgs,
) -> anyhow::Result<()> {
    if let Some(p) = &v.profile {
        let data = check_profile(card, p)?;
        println!(
            "card {} checked in the phone against its issuer-signed profile",
            data.card_id
        );
    }
    Ok(())
}

/// `kessai phone` arguments.
#[derive(Debug, clap::Args)]
pub struct PhoneArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: PhoneCommand,
}

/// The host's published flow-D keys.
pub async fn host_public(host: &Http) -> anyhow::Result<HostPublic> {
    let k = host.get("/v1/flow-d/keys").await?;
    let field = |n: &str| -> anyhow::Result<Vec<u8>> {
        Ok(B64.decode(k[n].as_str().context("host keys")?)?)
    };
    let hpke: [u8; 32] = field("cardholder_key")?
        .try_into()
        .map_err(|_| anyhow::anyhow!("cardholder key length"))?;
    let sig: [u8; 32] = field("receipt_key")?
        .try_into()
        .map_err(|_| anyhow::anyhow!("receipt key length"))?;
    Ok(HostPublic {
        cardholder_key: HpkePublicKey::from_bytes(&hpke)?,
        cardholder_key_ref: k["cardholder_key_ref"]
            .as_str()
            .context("key ref")?
            .parse()?,
        receipt_key: VerifyingKey::from_bytes(&sig)?,
        receipt_key_ref: k["receipt_key_ref"].as_str().context("key ref")?.parse()?,
    })
}

/// A fresh host challenge.
pub async fn challenge(host: &Http) -> anyhow::Result<HostChallenge> {
    let c = host
        .post("/v1/flow-d/challenges", &serde_json::json!({}))
        .await?;
    Ok(HostChallenge {
        challenge: hex::decode(c["challenge"].as_str().context("challenge")?)?
            .try_into()
            .map_err(|_| anyhow::anyhow!("challenge length"))?,
        max_amount_minor: c["max_amount_minor"].as_i64().context("max")?,
        expires_at_ms: c["expires_at_ms"].as_u64().context("expiry")?,
    })
}

/// The customer verification named by `method` (PIN / secret from the
/// environment, fingerprint from the phone's sensor).
pub fn verification(v: &VerifyArgs) -> anyhow::Result<CustomerVerification> {
    let method = v.method.as_str();
    let pin = || -> anyhow::Result<Pin> {
        let p = std::env::var("KESSAI_CARD_PIN")
            .context("set KESSAI_CARD_PIN to the card's PIN (never on the command line)")?;
        Pin::new(&p).context("KESSAI_CARD_PIN")
    };
    Ok(match method {
        "online-pin" => CustomerVerification::OnlinePin(pin()?),
        "offline-pin" => CustomerVerification::OfflinePin(pin()?),
        "secret" => CustomerVerification::RegisteredSecret(
            std::env::var("KESSAI_CARD_SECRET").context("set KESSAI_CARD_SECRET")?,
        ),
        "fingerprint" => {
            let seed = v
                .finger_seed
                .context("--method fingerprint needs --finger-seed (the finger on the sensor)")?;
            CustomerVerification::OnCardBiometric(crate::cli::device::live_fingerprint(seed)?)
        }
        other => bail!("unknown --method {other} (online-pin, offline-pin, secret, fingerprint)"),
    })
}

/// Parses `DESCRIPTION:QUANTITY:UNIT_PRICE_MINOR`.
pub fn parse_item(s: &str) -> anyhow::Result<LineItem> {
    let mut parts = s.rsplitn(3, ':');
    let price = parts.next().context("item price")?;
    let qty = parts.next().context("item quantity")?;
    let desc = parts
        .next()
        .context("item: DESCRIPTION:QUANTITY:UNIT_PRICE_MINOR")?;
    Ok(LineItem {
        description: desc.to_string(),
        quantity: qty.parse().context("item quantity")?,
        unit_price_minor: price.parse().context("item price")?,
    })
}

/// Σ quantity × price of the goods.
pub fn total(items: &[LineItem]) -> anyhow::Result<i64> {
    kessai_flow_d::artefacts::goods_total(items).context("malformed goods")
}

/// Authorizes on the host; returns the grant JSON.
pub async fn authorize(
    host: &Http,
    public: &HostPublic,
    card: &mut impl kessai_card::harness::ApduTransport,
    cap: Money,
    v: &CustomerVerification,
) -> anyhow::Result<Value> {
    let ch = challenge(host).await?;
    let req = build_authorization(card, public, &ch, cap, v, &mut rand::rng())
        .map_err(|e| anyhow::anyhow!("card: {e}"))?;
    host.post(
        "/v1/flow-d/authorizations",
        &serde_json::to_value(AuthorizationBody::from_request(&req))?,
    )
    .await
}

/// Prints a verified receipt.
pub fn print_receipt(public: &HostPublic, b64_receipt: &str) -> anyhow::Result<()> {
    let r = verify_receipt(
        &B64.decode(b64_receipt)?,
        &public.receipt_key_ref,
        &public.receipt_key,
    )
    .map_err(|e| anyhow::anyhow!("receipt: {e}"))?;
    println!("{}", r.to_text());
    println!("(signature verified under {})", public.receipt_key_ref);
    Ok(())
}

/// Runs `kessai phone`.
pub async fn run(args: PhoneArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        PhoneCommand::Authorize {
            host,
            card,
            card_id,
            cap,
            verify,
            qr_png,
            out,
        } => {
            let cap: Money = cap.parse().context("--cap, e.g. \"5000 JPY\"")?;
            let v = verification(&verify)?;
            let (t, id) = open_card(&card, card_id.as_deref())?;
            let mut card = Relay::new(t);
            precheck(&mut card, &verify)?;
            let host = Http::new(&host);
            let public = host_public(&host).await?;
            let g = authorize(&host, &public, &mut card, cap, &v).await?;
            let payload = g["qr_payload"].as_str().context("qr payload")?;
            println!(
                "card {id}: temporary password {} (cap {cap}, valid until {} ms)",
                g["password_grouped"].as_str().unwrap_or(""),
                g["expires_at_ms"]
            );
            println!("{}", render_text(payload)?);
            println!("QR payload (EMVCo CPM): {payload}");
            if let Some(p) = qr_png {
                std::fs::write(&p, render_png(payload, 6)?)
                    .with_context(|| p.display().to_string())?;
                println!("QR code written to {}", p.display());
            }
            if let Some(o) = out {
                std::fs::write(&o, serde_json::to_vec_pretty(&g)?)?;
            }
        }
        PhoneCommand::MerchantCard {
            host,
            card,
            merchant_card,
            items,
            currency,
            terminal,
            verify,
        } => {
            let goods = items
                .iter()
                .map(|s| parse_item(s))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let amount = Money::new(
                total(&goods)?,
                kessai_money::Currency::from_code(&currency)?,
            );
            let v = verification(&verify)?;
            let (ct, _) = open_card(&card, None)?;
            let (mt, _) = open_card(&merchant_card, None)?;
            let (mut c, mut m) = (Relay::new(ct), Relay::new(mt));
            precheck(&mut c, &verify)?;
            let host = Http::new(&host);
            let public = host_public(&host).await?;
            let ch = challenge(&host).await?;
            let req = build_merchant_card_request(
                &mut c,
                &mut m,
                &public,
                &ch,
                amount,
                goods,
                terminal.map(|t| t.parse()).transpose()?,
                &v,
                &mut rand::rng(),
            )
            .map_err(|e| anyhow::anyhow!("card: {e}"))?;
            let s = host
                .post(
                    "/v1/flow-d/merchant-card-settlements",
                    &serde_json::to_value(MerchantCardBody::from_request(&req))?,
                )
                .await?;
            print_receipt(&public, s["receipt"].as_str().context("receipt")?)?;
        }
        PhoneCommand::PayLink {
            host,
            pos,
            pos_key,
            basket,
            card,
            card_id,
            verify,
        } => {
            let v = verification(&verify)?;
            let (t, _) = open_card(&card, card_id.as_deref())?;
            let mut card = Relay::new(t);
            precheck(&mut card, &verify)?;
            let host = Http::new(&host);
            let public = host_public(&host).await?;
            let (key_ref, key) = read_link_key(&pos_key)?;
            let r = pay_link(&pos, &key_ref, &key, &public, &mut card, &basket, &v).await?;
            println!("{}", r.to_text());
            println!("(signature verified under {})", public.receipt_key_ref);
        }
        PhoneCommand::Receipts {
            host,
            card_id,
            after,
        } => {
            let host = Http::new(&host);
            let public = host_public(&host).await?;
            let list = host
                .get(&format!(
                    "/v1/flow-d/cards/{card_id}/receipts?after={after}"
                ))
                .await?;
            for r in list.as_array().into_iter().flatten() {
                println!("--- #{} transfer {}", r["seq"], r["transfer_id"]);
                print_receipt(&public, r["receipt"].as_str().context("receipt")?)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The claim-10 in-phone card check against a stored profile file (the
/// `profile` object of the card's registration answer). Uses only the file
/// and the card: nothing goes to the network.
pub fn check_profile(
    card: &mut impl kessai_card::harness::ApduTransport,
    path: &std::path::Path,
) -> anyhow::Result<kessai_flow_d::cardio::CardData> {
    let v: Value = serde_json::from_slice(
        &std::fs::read(path).with_context(|| format!("--profile {}", path.display()))?,
    )
    .context("--profile is not JSON")?;
    let cose = B64.decode(v["cose"].as_str().context("profile: cose")?)?;
    let key_ref: KeyRef = v["key_ref"]
        .as_str()
        .context("profile: key_ref")?
        .parse()
        .map_err(|e| anyhow::anyhow!("profile: key_ref: {e}"))?;
    let pk: [u8; 32] = B64
        .decode(v["public_key"].as_str().context("profile: public_key")?)?
        .try_into()
        .map_err(|_| anyhow::anyhow!("profile: public_key is not 32 bytes"))?;
    let key = VerifyingKey::from_bytes(&pk).context("profile: public_key")?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64;
    kessai_flow_d::phone::check_card_in_phone(card, &cose, &key_ref, &key, now)
        .map_err(|e| anyhow::anyhow!("in-phone card check refused the card: {e}"))
}

/// Reads a POS link key file.
pub fn read_link_key(path: &std::path::Path) -> anyhow::Result<(KeyRef, HpkePublicKey)> {
    let v: Value = serde_json::from_slice(&std::fs::read(path)?)?;
    let pk: [u8; 32] = B64
        .decode(v["public_key"].as_str().context("public_key")?)?
        .try_into()
        .map_err(|_| anyhow::anyhow!("link key length"))?;
    Ok((
        v["key_ref"].as_str().context("key_ref")?.parse()?,
        HpkePublicKey::from_bytes(&pk)?,
    ))
}

/// How a link payment failed.
#[derive(Debug)]
pub enum LinkPayError {
    /// The POS declined (reason as the POS gave it).
    Declined(String),
    /// The link closed before a receipt arrived.
    Closed,
}

impl std::fmt::Display for LinkPayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Declined(r) => write!(f, "declined by the POS: {r}"),
            Self::Closed => write!(f, "link closed before the receipt"),
        }
    }
}

impl std::error::Error for LinkPayError {}

/// Pays `basket` at the POS at `addr` over the short-range link; returns the
/// verified receipt.
#[allow(clippy::too_many_arguments)]
pub async fn pay_link(
    addr: &str,
    pos_key_ref: &KeyRef,
    pos_key: &HpkePublicKey,
    public: &HostPublic,
    card: &mut (impl kessai_card::harness::ApduTransport + Send),
    basket: &str,
    v: &CustomerVerification,
) -> anyhow::Result<kessai_flow_d::artefacts::Receipt> {
    use kessai_flow_d::link::LinkSession;
    use kessai_flow_d::pos::{PhoneToPos, PosToPhone};

    use crate::cli::pos::{read_frame, write_frame};
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("POS link {addr}"))?;
    // Small request/response frames: no Nagle delay.
    stream.set_nodelay(true)?;
    let (mut rd, mut wr) = stream.into_split();
    let (mut link, hello) = LinkSession::phone_open(pos_key, pos_key_ref, &mut rand::rng())?;
    write_frame(&mut wr, &hello).await?;
    let send = |link: &mut LinkSession, m: &PhoneToPos| -> anyhow::Result<Vec<u8>> {
        Ok(link.seal(&serde_json::to_vec(m)?)?)
    };
    let f = send(
        &mut link,
        &PhoneToPos::Hello {
            basket: basket.into(),
        },
    )?;
    write_frame(&mut wr, &f).await?;
    let mut pending = None;
    loop {
        let Some(frame) = read_frame(&mut rd).await? else {
            return Err(LinkPayError::Closed.into());
        };
        let msg: PosToPhone = serde_json::from_slice(&link.open(&frame)?)?;
        let reply = match msg {
            PosToPhone::Challenge {
                session,
                challenge,
                amount,
                goods,
            } => {
                // The customer sees the basket on the phone and authorizes
                // exactly its sum.
                let request =
                    build_authorization(card, public, &challenge, amount, v, &mut rand::rng())
                        .map_err(|e| anyhow::anyhow!("card: {e}"))?;
                pending = Some((session, amount, goods));
                PhoneToPos::CardAuth { session, request }
            }
            PosToPhone::Authorized { session } => match pending.take() {
                Some((s, amount, goods)) if s == session => PhoneToPos::Purchase {
                    session,
                    amount,
                    goods,
                },
                _ => bail!("authorization for an unknown session"),
            },
            PosToPhone::Receipt { receipt, .. } => {
                return verify_receipt(&receipt, &public.receipt_key_ref, &public.receipt_key)
                    .map_err(|e| anyhow::anyhow!("receipt: {e}"));
            }
            PosToPhone::Declined { reason, .. } => {
                return Err(LinkPayError::Declined(reason).into());
            }
        };
        let f = send(&mut link, &reply)?;
        write_frame(&mut wr, &f).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(method: &str, finger_seed: Option<u64>) -> VerifyArgs {
        VerifyArgs {
            method: method.into(),
            finger_seed,
            profile: None,
        }
    }

    #[test]
    fn fingerprint_method_reads_the_sensor_and_needs_a_finger() {
        let e = verification(&args("fingerprint", None)).unwrap_err();
        assert!(e.to_string().contains("--finger-seed"), "{e}");
        match verification(&args("fingerprint", Some(3))).unwrap() {
            CustomerVerification::OnCardBiometric(t) => assert!(!t.minutiae().is_empty()),
            other => panic!("{other:?}"),
        }
        let e = verification(&args("iris", None)).unwrap_err();
        assert!(e.to_string().contains("unknown --method iris"), "{e}");
    }

    #[test]
    fn profile_file_errors_are_clear() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("profile.json");
        let mut card = kessai_card::Card::personalize(
            kessai_card::PersonalizationParams::new(
                "c-1".parse().unwrap(),
                kessai_card::issuer_card_keys(
                    &kessai_scp03::AesKey::Aes128([1; 16]),
                    &"c-1".parse().unwrap(),
                    1,
                ),
                kessai_money::Currency::from_code("JPY").unwrap(),
                1,
                [0; 32],
            ),
            kessai_card::MemNvm::new(),
        )
        .unwrap();
        let e = check_profile(&mut card, &path).unwrap_err();
        assert!(e.to_string().contains("--profile"), "{e}");
        std::fs::write(&path, b"{\"cose\": \"AA\"}").unwrap();
        let e = check_profile(&mut card, &path).unwrap_err();
        assert!(e.to_string().contains("key_ref"), "{e}");
    }
}
