//! `kessai shop ...`: the merchant side of flow B — a store, or a mall
//! selling for its member stores. The protocol decisions are
//! `kessai_flow_b::store`; this module keeps keys, issued bills and
//! deliveries, and talks HTTP.
//!
//! - `keygen`: a signing key file (the public key is registered with
//!   `kessai admin`).
//! - `bill`: one-shot, for scripts: a BILL with the FIRST SIGNATURE.
//! - `serve`: the shop server (axum on its own port): catalogue, estimate,
//!   bill (SIG1), completion (verify SIG3, issue the SIG4 receipt, hand it
//!   to the host, deliver a download token), downloads.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, bail};
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use kessai_crypto::cose::verify_artefact;
use kessai_crypto::digest::sha256;
use kessai_crypto::sign::SigningKey;
use kessai_flow_b::artefacts::SettlementCompletion;
use kessai_flow_b::registry::KeyDirectory;
use kessai_flow_b::store::{IssuedBill, Store, StoreIdentity};
use kessai_ids::{MallId, OrderId, StoreId};
use kessai_money::Money;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::cli::wallet::{Http, system_now_ms, wallet_config};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Shop commands.
#[derive(Debug, clap::Subcommand)]
pub enum ShopCommand {
    /// Create a signing key file for a store or a mall; prints the public
    /// key to register with `kessai admin`.
    Keygen {
        /// Store or mall id.
        #[arg(long)]
        id: String,
        /// `store` or `mall`.
        #[arg(long, default_value = "store")]
        kind: String,
        /// Member stores (a mall).
        #[arg(long = "member")]
        members: Vec<String>,
        /// Key version as registered (1 for a new merchant).
        #[arg(long, default_value_t = 1)]
        key_version: u32,
        /// The key file to create (refuses to overwrite).
        #[arg(long)]
        out: PathBuf,
    },
    /// Issue one bill (FIRST SIGNATURE) to a file.
    Bill {
        /// Signing key file.
        #[arg(long)]
        key: PathBuf,
        /// Selling store (this store, or a member store of this mall).
        #[arg(long)]
        store: String,
        /// Order number.
        #[arg(long)]
        order: String,
        /// Amount, e.g. "1200 JPY".
        #[arg(long)]
        amount: String,
        /// Seconds the bill stays payable.
        #[arg(long, default_value_t = 600)]
        ttl_secs: u64,
        /// Output file (COSE bytes).
        #[arg(long)]
        out: PathBuf,
    },
    /// Run the shop server until Ctrl-C.
    Serve {
        /// Signing key file.
        #[arg(long)]
        key: PathBuf,
        /// The issuer host.
        #[arg(long, default_value = "http://127.0.0.1:8420")]
        host: String,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8430")]
        listen: SocketAddr,
    },
}

/// A shop's key file.
#[derive(Serialize, Deserialize)]
pub struct KeyFile {
    /// Store or mall id.
    pub merchant_id: String,
    /// `store` or `mall`.
    pub kind: String,
    /// Member stores of a mall.
    #[serde(default)]
    pub members: Vec<String>,
    /// Registered key version.
    pub version: u32,
    /// Ed25519 seed, hex.
    pub seed: String,
}

impl std::fmt::Debug for KeyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyFile")
            .field("merchant_id", &self.merchant_id)
            .field("kind", &self.kind)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl KeyFile {
    /// A new key file with a fresh key.
    pub fn generate(
        id: &str,
        kind: &str,
        members: Vec<String>,
        version: u32,
    ) -> anyhow::Result<Self> {
        if kind != "store" && kind != "mall" {
            bail!("--kind must be store or mall");
        }
        let mut seed = zeroize::Zeroizing::new([0u8; 32]);
        rand::fill(&mut seed[..]);
        Ok(Self {
            merchant_id: id.to_string(),
            kind: kind.to_string(),
            members,
            version,
            seed: hex::encode(&seed[..]),
        })
    }

    fn signing_key(&self) -> anyhow::Result<SigningKey> {
        let bytes = zeroize::Zeroizing::new(hex::decode(&self.seed).context("seed is not hex")?);
        let seed: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .context("seed must be 32 bytes")?;
        Ok(SigningKey::from_seed(&seed))
    }

    /// The public key, base64url (what `kessai admin` registers).
    pub fn public_key_b64(&self) -> anyhow::Result<String> {
        Ok(B64.encode(self.signing_key()?.verifying_key().to_bytes()))
    }

    /// The pure store of this key, trusting `host_keys` for SIG3.
    pub fn store(&self, host_keys: KeyDirectory, bill_ttl_ms: u64) -> anyhow::Result<Store> {
        let identity = if self.kind == "mall" {
            StoreIdentity::Mall {
                mall_id: self.merchant_id.parse::<MallId>()?,
                members: self
                    .members
                    .iter()
                    .map(|m| m.parse())
                    .collect::<Result<_, _>>()?,
            }
        } else {
            StoreIdentity::Store(self.merchant_id.parse()?)
        };
        Ok(Store {
            identity,
            signing_key: self.signing_key()?,
            key_ref: format!("{}#{}", self.merchant_id, self.version).parse()?,
            host_keys,
            bill_ttl_ms,
        })
    }

    /// Reads a key file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = zeroize::Zeroizing::new(
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?,
        );
        serde_json::from_str(&text).with_context(|| format!("{} is not a key file", path.display()))
    }

    /// Writes a new key file (never overwrites).
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .with_context(|| format!("create {}", path.display()))?;
        std::io::Write::write_all(&mut f, serde_json::to_string_pretty(self)?.as_bytes())?;
        Ok(())
    }
}

// ------------------------------------------------------------ shop server

/// One catalogue item.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Item {
    /// Stock keeping unit.
    pub sku: String,
    /// Name.
    pub name: String,
    /// The store that sells it (a member store in a mall).
    pub store_id: String,
    /// Unit price.
    pub price: Money,
}

/// What a customer asks for.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Order {
    /// `(sku, quantity)` lines.
    pub items: Vec<Line>,
}

/// One order line.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Line {
    /// Item.
    pub sku: String,
    /// Quantity (1..=99).
    pub qty: u32,
}

/// A shop's state (shared by its handlers).
#[derive(Debug)]
pub struct Shop {
    store: Store,
    host: Http,
    /// Its public URL (for bills and download links).
    pub base_url: String,
    catalogue: Vec<Item>,
    bills: Mutex<HashMap<String, IssuedBill>>,
    deliveries: Mutex<HashMap<[u8; 32], String>>,
    next_order: Mutex<u64>,
}

/// A catalogue of digital goods for `sellers`.
pub fn default_catalogue(sellers: &[String], currency: kessai_money::Currency) -> Vec<Item> {
    let mut out = Vec::new();
    for (i, s) in sellers.iter().enumerate() {
        for (j, (name, price)) in [("e-book", 1_200), ("album", 800), ("game", 3_000)]
            .into_iter()
            .enumerate()
        {
            out.push(Item {
                sku: format!("{s}-{j}"),
                name: format!("{name} #{}", i + 1),
                store_id: s.clone(),
                price: Money::new(price, currency),
            });
        }
    }
    out
}

impl Shop {
    /// A shop for `key`, trusting the host's published keys.
    pub async fn new(key: &KeyFile, host: &str, base_url: String) -> anyhow::Result<Self> {
        let host = Http::new(host);
        let (cfg, _) = wallet_config(&host).await?;
        let store = key.store(cfg.host_keys, 600_000)?;
        let sellers = if key.kind == "mall" {
            key.members.clone()
        } else {
            vec![key.merchant_id.clone()]
        };
        let jpy = kessai_money::Currency::from_code("JPY").expect("JPY is ISO 4217");
        Ok(Self {
            store,
            host,
            base_url,
            catalogue: default_catalogue(&sellers, jpy),
            bills: Mutex::new(HashMap::new()),
            deliveries: Mutex::new(HashMap::new()),
            next_order: Mutex::new(1),
        })
    }

    /// The priced lines of an order: total, seller, digest of the lines.
    fn estimate(&self, order: &Order) -> Result<(Money, String, [u8; 32], Vec<Value>), String> {
        if order.items.is_empty() {
            return Err("an order needs at least one item".into());
        }
        let mut total: Option<Money> = None;
        let mut seller: Option<String> = None;
        let mut lines = Vec::new();
        for l in &order.items {
            let item = self
                .catalogue
                .iter()
                .find(|i| i.sku == l.sku)
                .ok_or("unknown item")?;
            if !(1..=99).contains(&l.qty) {
                return Err("quantity must be 1 to 99".into());
            }
            if seller.as_ref().is_some_and(|s| *s != item.store_id) {
                return Err("one bill per selling store".into());
            }
            seller = Some(item.store_id.clone());
            let line = Money::new(
                item.price
                    .amount_minor
                    .checked_mul(i64::from(l.qty))
                    .ok_or("amount overflow")?,
                item.price.currency,
            );
            total = Some(match total {
                None => line,
                Some(t) => t.checked_add(line).map_err(|_| "amount overflow")?,
            });
            lines.push(json!({"sku": item.sku, "name": item.name, "qty": l.qty, "amount": line.to_string()}));
        }
        let text = serde_json::to_vec(&lines).map_err(|_| "encode")?;
        Ok((
            total.ok_or("empty")?,
            seller.ok_or("empty")?,
            sha256(&[b"kessai/shop/items\0", &text]),
            lines,
        ))
    }

    /// Issues a bill for an order.
    pub fn issue_bill(&self, order: &Order) -> Result<(String, IssuedBill), String> {
        let (total, seller, digest, _) = self.estimate(order)?;
        let n = {
            let mut g = self.next_order.lock().map_err(|_| "lock")?;
            let n = *g;
            *g += 1;
            n
        };
        let order_id = format!("o-{}-{n}", system_now_ms());
        let bill = self
            .store
            .create_bill(
                &seller.parse::<StoreId>().map_err(|_| "store id")?,
                order_id.parse::<OrderId>().map_err(|_| "order id")?,
                total,
                digest,
                system_now_ms(),
                &mut rand::rng(),
            )
            .map_err(|e| e.to_string())?;
        self.bills
            .lock()
            .map_err(|_| "lock")?
            .insert(order_id.clone(), bill.clone());
        Ok((order_id, bill))
    }

    /// ST111–ST112: verifies a completion (SIG3) of one of this shop's
    /// bills, issues the receipt (SIG4), hands it to the host, and keeps a
    /// download token for the customer.
    pub async fn complete(&self, acn: &[u8]) -> anyhow::Result<Value> {
        let c = verify_artefact::<SettlementCompletion>(acn, |r| self.store.host_keys.resolve(r))
            .map_err(|e| anyhow::anyhow!("completion refused: {e}"))?;
        let order = c.payload().order_id.to_string();
        let issued = self
            .bills
            .lock()
            .map_err(|_| anyhow::anyhow!("lock"))?
            .get(&order)
            .cloned()
            .context("completion of a bill this shop did not issue")?;
        let verified = self
            .store
            .verify_completion(&issued, acn)
            .map_err(|e| anyhow::anyhow!("completion refused: {e}"))?;
        let delivery = self
            .store
            .issue_receipt(&verified, system_now_ms(), &mut rand::rng())?;
        self.host
            .post(
                "/v1/flow-b/receipts",
                &json!({"store_id": issued.bill.store_id.to_string(), "order_id": order,
                        "receipt": B64.encode(&delivery.receipt)}),
            )
            .await
            .context("host refused the receipt")?;
        let token = hex::encode(delivery.token.expose());
        self.deliveries
            .lock()
            .map_err(|_| anyhow::anyhow!("lock"))?
            .insert(delivery.token.digest(), format!("content of order {order}"));
        Ok(json!({
            "receipt": B64.encode(&delivery.receipt),
            "download_token": token,
            "download_url": format!("{}/downloads/{token}", self.base_url),
        }))
    }
}

fn problem(status: StatusCode, slug: &str, detail: &str) -> Response {
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/problem+json")],
        Json(
            json!({"type": format!("urn:kessai:problem:{slug}"), "title": slug,
                    "status": status.as_u16(), "detail": detail}),
        ),
    )
        .into_response()
}

async fn catalogue(State(s): State<Arc<Shop>>) -> Json<Vec<Item>> {
    Json(s.catalogue.clone())
}

async fn estimate(State(s): State<Arc<Shop>>, Json(o): Json<Order>) -> Response {
    match s.estimate(&o) {
        Ok((total, seller, digest, lines)) => Json(json!({
            "store_id": seller, "total": total.to_string(), "total_minor": total.amount_minor,
            "items_digest": hex::encode(digest), "lines": lines,
        }))
        .into_response(),
        Err(e) => problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid-order", &e),
    }
}

async fn create_bill(State(s): State<Arc<Shop>>, Json(o): Json<Order>) -> Response {
    match s.issue_bill(&o) {
        Ok((order, bill)) => Json(json!({
            "order_id": order, "bill": B64.encode(&bill.bytes), "shop": s.base_url,
            "amount": bill.bill.amount.to_string(),
        }))
        .into_response(),
        Err(e) => problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid-order", &e),
    }
}

async fn get_bill(State(s): State<Arc<Shop>>, UrlPath(order): UrlPath<String>) -> Response {
    let bill = s.bills.lock().ok().and_then(|b| b.get(&order).cloned());
    match bill {
        Some(b) => {
            Json(json!({"order_id": order, "bill": B64.encode(&b.bytes), "shop": s.base_url}))
                .into_response()
        }
        None => problem(StatusCode::NOT_FOUND, "not-found", "no such bill"),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CompletionBody {
    completion: String,
}

async fn completion(State(s): State<Arc<Shop>>, Json(b): Json<CompletionBody>) -> Response {
    let Ok(acn) = B64.decode(b.completion.trim_end_matches('=')) else {
        return problem(
            StatusCode::BAD_REQUEST,
            "invalid-base64",
            "completion is not base64url",
        );
    };
    match s.complete(&acn).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "completion-refused",
            &format!("{e:#}"),
        ),
    }
}

async fn download(State(s): State<Arc<Shop>>, UrlPath(token): UrlPath<String>) -> Response {
    let Some(bytes) = hex::decode(&token)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
    else {
        return problem(StatusCode::NOT_FOUND, "not-found", "no such download");
    };
    let digest = kessai_flow_b::store::DeliveryToken::from_bytes(bytes).digest();
    match s
        .deliveries
        .lock()
        .ok()
        .and_then(|d| d.get(&digest).cloned())
    {
        Some(content) => content.into_response(),
        None => problem(StatusCode::NOT_FOUND, "not-found", "no such download"),
    }
}

/// The shop's routes.
pub fn router(shop: Arc<Shop>) -> Router {
    Router::new()
        .route("/catalogue", get(catalogue))
        .route("/estimate", post(estimate))
        .route("/bills", post(create_bill))
        .route("/bills/{order}", get(get_bill))
        .route("/completions", post(completion))
        .route("/downloads/{token}", get(download))
        .with_state(shop)
}

/// Runs a shop on `listener` until the task is dropped.
pub async fn serve_on(listener: tokio::net::TcpListener, shop: Arc<Shop>) -> anyhow::Result<()> {
    axum::serve(listener, router(shop)).await?;
    Ok(())
}

async fn one_bill(
    key: PathBuf,
    store: String,
    order: String,
    amount: String,
    ttl_secs: u64,
    out: PathBuf,
) -> anyhow::Result<ExitCode> {
    let k = KeyFile::load(&key)?;
    let s = k.store(KeyDirectory::new(), ttl_secs.saturating_mul(1000))?;
    let amount: Money = amount.parse().context("--amount")?;
    let bill = s
        .create_bill(
            &store.parse()?,
            order.parse()?,
            amount,
            sha256(&[b"kessai/shop/items\0", order.as_bytes()]),
            system_now_ms(),
            &mut rand::rng(),
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    std::fs::write(&out, &bill.bytes).with_context(|| format!("write {}", out.display()))?;
    println!(
        "bill for order {order} of {amount} at {store} signed by {}#{} (SIG1), written to {}",
        k.merchant_id,
        k.version,
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Runs a shop command.
pub async fn run(cmd: ShopCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ShopCommand::Keygen {
            id,
            kind,
            members,
            key_version,
            out,
        } => {
            let k = KeyFile::generate(&id, &kind, members, key_version)?;
            k.save(&out)?;
            println!("{}", k.public_key_b64()?);
            eprintln!(
                "key of {kind} {id} written to {}; register the public key above with kessai admin",
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        ShopCommand::Bill {
            key,
            store,
            order,
            amount,
            ttl_secs,
            out,
        } => one_bill(key, store, order, amount, ttl_secs, out).await,
        ShopCommand::Serve { key, host, listen } => {
            let k = KeyFile::load(&key)?;
            let listener = tokio::net::TcpListener::bind(listen).await?;
            let addr = listener.local_addr()?;
            let shop = Arc::new(Shop::new(&k, &host, format!("http://{addr}")).await?);
            eprintln!(
                "shop {} listening on http://{addr} (GET /catalogue, POST /estimate, POST /bills, POST /completions)",
                k.merchant_id
            );
            tokio::select! {
                r = serve_on(listener, shop) => r?,
                _ = tokio::signal::ctrl_c() => {}
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
