//! `kessai pos ...`: the merchant's POS terminal of flow D. Keys in (or
//! takes the scanned QR payload of) the customer's temporary password with
//! the sale's goods, sends them to the host's settlement server and prints
//! the signed receipt (signature verified first).
//!
//! - `redeem`: one sale.
//! - `receipts`: receipts the host signalled to this terminal (the
//!   merchant-card variant, claims 2, 8).
//! - `serve-link`: the short-range variant (claims 3, 11–14): the POS
//!   listens on TCP (loopback in tests and the demo; the carrier is
//!   abstracted by `kessai_flow_d::link::Link`, so BLE or NFC plug in the
//!   same way), speaks the crate's framed, authenticated link protocol with
//!   any number of phones at once, relays their card authentication and
//!   sealed PIN to the host, checks goods and sum against the basket rung
//!   up at the till, settles and prints one receipt per basket.
//!
//! TCP carrier: every link frame travels as `length (4, big-endian) ‖
//! frame`; the first frame of a connection is the phone's sealed hello.

use std::path::PathBuf;
use std::process::ExitCode;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use kessai_crypto::hpke::HpkeKeyPair;
use kessai_flow_d::FlowDError;
use kessai_flow_d::artefacts::LineItem;
use kessai_flow_d::host::{HostPublic, PasswordGrant, PasswordInput, RedemptionChannel};
use kessai_flow_d::link::LinkSession;
use kessai_flow_d::password::TemporaryPassword;
use kessai_flow_d::pos::{
    ConnId, HostToPos, PhoneToPos, Pos, PosOutput, PosToHost, PosToPhone, SessionId,
};
use kessai_host::routes::flow_d::AuthorizationBody;
use kessai_ids::{KeyRef, TerminalId};
use kessai_money::{Currency, Money};
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::cli::phone::{host_public, parse_item, print_receipt, total};
use crate::cli::wallet::{Http, Refusal};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;
/// Largest TCP carrier frame (a link frame of the largest payload).
const MAX_CARRIER_FRAME: usize = kessai_flow_d::link::MAX_FRAME_PAYLOAD + 64;

/// POS commands.
#[derive(Debug, clap::Subcommand)]
pub enum PosCommand {
    /// Settle a sale with the customer's temporary password.
    Redeem {
        /// Host URL.
        #[arg(long, default_value = "http://127.0.0.1:8420")]
        host: String,
        /// This terminal's id (registered for the merchant).
        #[arg(long)]
        terminal: String,
        /// The password as keyed in (12 digits; spaces allowed).
        #[arg(long, conflicts_with_all = ["qr", "qr_file"])]
        password: Option<String>,
        /// The scanned QR payload (base64 text the scanner returns).
        #[arg(long, conflicts_with = "qr_file")]
        qr: Option<String>,
        /// A file holding the scanned QR payload text.
        #[arg(long)]
        qr_file: Option<PathBuf>,
        /// Goods, `DESCRIPTION:QUANTITY:UNIT_PRICE_MINOR` (repeat); the
        /// amount is their sum.
        #[arg(long = "item", required = true)]
        items: Vec<String>,
        /// Currency.
        #[arg(long, default_value = "JPY")]
        currency: String,
    },
    /// Serve phones over the short-range link (TCP) until every basket is
    /// paid.
    ServeLink {
        /// Host URL.
        #[arg(long, default_value = "http://127.0.0.1:8420")]
        host: String,
        /// This terminal's id.
        #[arg(long)]
        terminal: String,
        /// Where to listen (loopback).
        #[arg(long, default_value = "127.0.0.1:8470")]
        listen: String,
        /// A basket rung up at the till:
        /// `NAME=DESC:QTY:PRICE[;DESC:QTY:PRICE...]` (repeat).
        #[arg(long = "basket", required = true)]
        baskets: Vec<String>,
        /// Currency.
        #[arg(long, default_value = "JPY")]
        currency: String,
        /// Write the POS link key (key ref + public key) here for phones.
        #[arg(long)]
        key_out: PathBuf,
    },
    /// Show receipts the host signalled to this terminal.
    Receipts {
        /// Host URL.
        #[arg(long, default_value = "http://127.0.0.1:8420")]
        host: String,
        /// Terminal id.
        #[arg(long)]
        terminal: String,
        /// Only receipts after this queue position.
        #[arg(long, default_value_t = 0)]
        after: i64,
    },
}

/// `kessai pos` arguments.
#[derive(Debug, clap::Args)]
pub struct PosArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: PosCommand,
}

/// Runs `kessai pos`.
pub async fn run(args: PosArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        PosCommand::Redeem {
            host,
            terminal,
            password,
            qr,
            qr_file,
            items,
            currency,
        } => {
            let host = Http::new(&host);
            let public = host_public(&host).await?;
            let goods = items
                .iter()
                .map(|s| parse_item(s))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let amount = total(&goods)?;
            let qr = match (qr, qr_file) {
                (Some(q), _) => Some(q),
                (None, Some(f)) => Some(
                    std::fs::read_to_string(&f)
                        .with_context(|| f.display().to_string())?
                        .trim()
                        .to_string(),
                ),
                _ => None,
            };
            let mut body = json!({"terminal_id": terminal, "amount_minor": amount,
                "currency": currency, "goods": goods});
            match (password, qr) {
                (Some(p), None) => body["password"] = json!(p),
                (None, Some(q)) => body["qr_payload"] = json!(q),
                _ => bail!("give --password or --qr / --qr-file"),
            }
            let s = host.post("/v1/flow-d/redemptions", &body).await?;
            print_receipt(&public, s["receipt"].as_str().context("receipt")?)?;
        }
        PosCommand::ServeLink {
            host,
            terminal,
            listen,
            baskets,
            currency,
            key_out,
        } => {
            let host = Http::new(&host);
            let public = host_public(&host).await?;
            let currency = Currency::from_code(&currency)?;
            let baskets = baskets
                .iter()
                .map(|b| parse_basket(b))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let terminal: TerminalId = terminal.parse()?;
            let key = HpkeKeyPair::generate(&mut rand::rng());
            let key_ref: KeyRef = format!("{terminal}-link#1").parse()?;
            write_link_key(&key_out, &key_ref, &key)?;
            let listener = TcpListener::bind(&listen).await?;
            eprintln!(
                "POS {terminal} listening on {} (link key {key_ref} in {})",
                listener.local_addr()?,
                key_out.display()
            );
            let cfg = LinkPos {
                host,
                public,
                terminal,
                baskets,
                currency,
                key,
                key_ref,
            };
            let n = serve_link(listener, cfg, |text| println!("{text}")).await?;
            eprintln!("all {n} baskets paid");
        }
        PosCommand::Receipts {
            host,
            terminal,
            after,
        } => {
            let host = Http::new(&host);
            let public = host_public(&host).await?;
            let list = host
                .get(&format!(
                    "/v1/flow-d/terminals/{terminal}/receipts?after={after}"
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

/// Parses `NAME=DESC:QTY:PRICE[;DESC:QTY:PRICE...]`.
pub fn parse_basket(s: &str) -> anyhow::Result<(String, Vec<LineItem>)> {
    let (name, items) = s.split_once('=').context("basket: NAME=ITEMS")?;
    let items = items
        .split(';')
        .map(parse_item)
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok((name.to_string(), items))
}

/// Writes the POS link key file (`{"key_ref", "public_key"}` JSON).
pub fn write_link_key(
    path: &std::path::Path,
    key_ref: &KeyRef,
    key: &HpkeKeyPair,
) -> anyhow::Result<()> {
    std::fs::write(
        path,
        serde_json::to_vec_pretty(&json!({"key_ref": key_ref.to_string(),
            "public_key": B64.encode(key.public_key().to_bytes())}))?,
    )?;
    Ok(())
}

/// Writes one carrier frame: length and body in one write, so the frame
/// leaves in one segment (two writes let Nagle's algorithm hold the body
/// back, and an abrupt close could then lose it).
pub async fn write_frame(
    w: &mut (impl tokio::io::AsyncWrite + Unpin),
    frame: &[u8],
) -> std::io::Result<()> {
    let len = u32::try_from(frame.len()).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    let mut buf = Vec::with_capacity(4 + frame.len());
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(frame);
    w.write_all(&buf).await?;
    w.flush().await
}

/// Reads one carrier frame; `None` at a clean end of stream.
pub async fn read_frame(
    r: &mut (impl tokio::io::AsyncRead + Unpin),
) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let n = u32::from_be_bytes(len) as usize;
    if n > MAX_CARRIER_FRAME {
        return Err(std::io::ErrorKind::InvalidData.into());
    }
    let mut buf = vec![0u8; n];
    r.read_exact(&mut buf).await?;
    Ok(Some(buf))
}

/// What the link POS needs.
#[derive(Debug)]
pub struct LinkPos {
    /// The host.
    pub host: Http,
    /// The host's published keys.
    pub public: HostPublic,
    /// This terminal.
    pub terminal: TerminalId,
    /// Baskets rung up at the till.
    pub baskets: Vec<(String, Vec<LineItem>)>,
    /// Their currency.
    pub currency: Currency,
    /// The link key phones seal their hello to.
    pub key: HpkeKeyPair,
    /// Its key ref.
    pub key_ref: KeyRef,
}

enum Ev {
    Open(
        ConnId,
        mpsc::UnboundedSender<PosToPhone>,
        tokio::sync::oneshot::Receiver<()>,
    ),
    Frame(ConnId, PhoneToPos),
    Gone(ConnId),
    Host(SessionId, HostToPos),
}

/// A host problem as the pure crate's refusal (the reason the phone sees).
fn refusal(e: &anyhow::Error) -> FlowDError {
    let Some(r) = e.downcast_ref::<Refusal>() else {
        return FlowDError::Encoding("host unreachable");
    };
    match r.problem.as_str() {
        "wrong-pin" => FlowDError::WrongPin {
            tries_left: r
                .detail
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0),
        },
        "pin-locked" => FlowDError::PinLocked,
        "bad-cryptogram" => FlowDError::BadCryptogram,
        "counter-replay" => FlowDError::CounterReplay { got: 0, last: 0 },
        "password-used" => FlowDError::PasswordUsed,
        "password-expired" => FlowDError::PasswordExpired,
        "above-cap" => FlowDError::AboveCap,
        "goods-mismatch" => FlowDError::GoodsMismatch,
        "bad-amount" => FlowDError::BadAmount,
        _ => FlowDError::Encoding("refused by the host"),
    }
}

async fn call_host(host: &Http, req: PosToHost) -> HostToPos {
    let r: anyhow::Result<HostToPos> = async {
        Ok(match req {
            PosToHost::Challenge => HostToPos::Challenge(crate::cli::phone::challenge(host).await?),
            PosToHost::Authorize(a) => {
                let g = host
                    .post(
                        "/v1/flow-d/authorizations",
                        &serde_json::to_value(AuthorizationBody::from_request(&a))?,
                    )
                    .await?;
                let currency = Currency::from_code(g["currency"].as_str().context("currency")?)?;
                HostToPos::Authorized(PasswordGrant {
                    password: TemporaryPassword::parse(g["password"].as_str().context("password")?)
                        .map_err(|e| anyhow::anyhow!("{e}"))?,
                    expires_at_ms: g["expires_at_ms"].as_u64().context("expiry")?,
                    cap: Money::new(g["cap_minor"].as_i64().context("cap")?, currency),
                    qr_payload: g["qr_payload"].as_str().unwrap_or("").to_owned(),
                })
            }
            PosToHost::Redeem(r) => {
                let PasswordInput::Digits(d) = &r.password else {
                    bail!("the link POS redeems digits");
                };
                let s = host
                    .post(
                        "/v1/flow-d/redemptions",
                        &json!({"terminal_id": r.terminal_id.to_string(), "password": d,
                            "amount_minor": r.amount.amount_minor,
                            "currency": r.amount.currency.code(), "goods": r.goods,
                            "short_range": r.channel == RedemptionChannel::ShortRange}),
                    )
                    .await?;
                HostToPos::Settled(B64.decode(s["receipt"].as_str().context("receipt")?)?)
            }
        })
    }
    .await;
    r.unwrap_or_else(|e| HostToPos::Refused(refusal(&e)))
}

async fn connection(
    conn: ConnId,
    stream: tokio::net::TcpStream,
    key: Arc<(HpkeKeyPair, KeyRef)>,
    ev: mpsc::UnboundedSender<Ev>,
) {
    let (mut rd, mut wr) = stream.into_split();
    let session = match read_frame(&mut rd).await {
        Ok(Some(hello)) => match LinkSession::pos_accept(&hello, &key.0, &key.1) {
            Ok(s) => Arc::new(Mutex::new(s)),
            Err(e) => {
                tracing::warn!(conn, error = %e, "link hello refused");
                return;
            }
        },
        _ => return,
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<PosToPhone>();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let _ = ev.send(Ev::Open(conn, tx, done_rx));
    let ws = session.clone();
    let writer = tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            let Ok(payload) = serde_json::to_vec(&msg) else {
                break;
            };
            let frame = match ws.lock().map(|mut s| s.seal(&payload)) {
                Ok(Ok(f)) => f,
                _ => break,
            };
            if write_frame(&mut wr, &frame).await.is_err() {
                break;
            }
        }
        let _ = done_tx.send(());
    });
    loop {
        let frame = match read_frame(&mut rd).await {
            Ok(Some(f)) => f,
            _ => break,
        };
        let opened = session.lock().map(|mut s| s.open(&frame));
        let Ok(Ok(payload)) = opened else {
            tracing::warn!(conn, "bad link frame: closing the link");
            break;
        };
        match serde_json::from_slice::<PhoneToPos>(&payload) {
            Ok(m) => {
                let _ = ev.send(Ev::Frame(conn, m));
            }
            Err(_) => break,
        }
    }
    writer.abort();
    let _ = ev.send(Ev::Gone(conn));
}

/// Runs the link POS until every basket is paid; `print` receives each
/// receipt text (claim 4). Returns the number of receipts printed.
pub async fn serve_link(
    listener: TcpListener,
    cfg: LinkPos,
    mut print: impl FnMut(&str),
) -> anyhow::Result<usize> {
    let mut pos = Pos::new(cfg.terminal.clone(), cfg.public.clone());
    let names: Vec<String> = cfg.baskets.iter().map(|(n, _)| n.clone()).collect();
    for (name, goods) in cfg.baskets {
        pos.ring_up(&name, goods, cfg.currency)
            .map_err(|e| anyhow::anyhow!("basket {name}: {e}"))?;
    }
    let key = Arc::new((cfg.key, cfg.key_ref));
    let host = cfg.host;
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel::<Ev>();
    let mut conns: BTreeMap<ConnId, mpsc::UnboundedSender<PosToPhone>> = BTreeMap::new();
    let mut writers = Vec::new();
    let mut next: ConnId = 0;
    while !names.iter().all(|n| pos.basket_paid(n)) {
        let outs = tokio::select! {
            a = listener.accept() => {
                let (stream, _) = a?;
                // Small request/response frames: no Nagle delay (an
                // error here only costs latency).
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(error = %e, "link: TCP_NODELAY not set");
                }
                next += 1;
                tokio::spawn(connection(next, stream, key.clone(), ev_tx.clone()));
                continue;
            }
            e = ev_rx.recv() => match e.context("event channel closed")? {
                Ev::Open(c, tx, done) => {
                    conns.insert(c, tx);
                    writers.push(done);
                    continue;
                }
                Ev::Frame(c, m) => match pos.on_phone(c, m, &mut rand::rng()) {
                    Ok(o) => o,
                    Err(e) => {
                        // Refused: nothing changed; close that link.
                        tracing::warn!(conn = c, error = %e, "phone message refused");
                        conns.remove(&c);
                        pos.on_disconnect(c)
                    }
                },
                Ev::Gone(c) => {
                    conns.remove(&c);
                    pos.on_disconnect(c)
                }
                Ev::Host(s, answer) => pos.on_host(s, answer).unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "host answer refused");
                    vec![]
                }),
            }
        };
        for o in outs {
            match o {
                PosOutput::ToPhone(c, m) => {
                    if let Some(tx) = conns.get(&c) {
                        let _ = tx.send(m);
                    }
                }
                PosOutput::ToHost(s, req) => {
                    let (host, ev) = (host.clone(), ev_tx.clone());
                    tokio::spawn(async move {
                        let a = call_host(&host, req).await;
                        let _ = ev.send(Ev::Host(s, a));
                    });
                }
                PosOutput::Print(_, text) => print(&text),
            }
        }
    }
    // Close every phone's queue and let the writers flush the last
    // receipts (bounded: a vanished phone does not hold the POS).
    drop(conns);
    for w in writers {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), w).await;
    }
    Ok(pos.receipts_printed())
}

#[cfg(test)]
#[path = "pos_link_tests.rs"]
mod link_tests;
