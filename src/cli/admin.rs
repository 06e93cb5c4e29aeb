//! `kessai admin ...`: issuer administration.
//!
//! Each command is sent as an HTTP request through the host's own router
//! in-process (same validation, authentication and idempotency as the
//! network API), against the data directory or database given.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use axum::body::Body;
use axum::http::{Method, Request, header};
use base64::Engine as _;
use serde_json::{Value, json};
use tower::ServiceExt as _;

use crate::DataArgs;

/// Admin subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum AdminCommand {
    /// Stores, malls and member stores.
    #[command(subcommand)]
    Merchants(MerchantsCommand),
    /// Cardholders and their funding accounts.
    #[command(subcommand)]
    Cardholders(CardholdersCommand),
    /// Ledger accounts.
    #[command(subcommand)]
    Accounts(AccountsCommand),
    /// Issuer keys: list, rotate, export public keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Retention of received artefacts (flow A transaction data, ...).
    #[command(subcommand)]
    Retention(RetentionCommand),
    /// Flow A (fingerprint device): enrolment codes, device unlock.
    #[command(subcommand, name = "flow-a")]
    FlowA(FlowACommand),
}

/// `kessai admin merchants ...`
#[derive(Debug, clap::Subcommand)]
pub enum MerchantsCommand {
    /// Register a store, a mall, or a member store of a mall.
    Add {
        #[command(flatten)]
        data: DataArgs,
        /// Merchant id.
        #[arg(long)]
        id: String,
        /// store, mall or member.
        #[arg(long, default_value = "store")]
        kind: String,
        /// Display name.
        #[arg(long)]
        name: String,
        /// The mall of a member store.
        #[arg(long)]
        mall: Option<String>,
        /// ISO 4217 settlement currency.
        #[arg(long)]
        currency: String,
        /// Ed25519 public key as a PEM SubjectPublicKeyInfo file (stores and
        /// malls).
        #[arg(long)]
        public_key_pem: Option<PathBuf>,
    },
    /// List merchants.
    List {
        #[command(flatten)]
        data: DataArgs,
    },
    /// Show one merchant.
    Show {
        #[command(flatten)]
        data: DataArgs,
        /// Merchant id.
        id: String,
    },
    /// Suspend a merchant (its payments are declined).
    Suspend {
        #[command(flatten)]
        data: DataArgs,
        /// Merchant id.
        id: String,
    },
    /// Reactivate a suspended merchant.
    Activate {
        #[command(flatten)]
        data: DataArgs,
        /// Merchant id.
        id: String,
    },
}

/// `kessai admin cardholders ...`
#[derive(Debug, clap::Subcommand)]
pub enum CardholdersCommand {
    /// Register a cardholder with a funding account.
    Add {
        #[command(flatten)]
        data: DataArgs,
        /// Cardholder id.
        #[arg(long)]
        id: String,
        /// Name.
        #[arg(long)]
        name: String,
        /// Currency of the funding account.
        #[arg(long)]
        currency: String,
        /// Credit limit in minor units (0: prepaid).
        #[arg(long, default_value_t = 0)]
        credit_limit_minor: i64,
    },
    /// Show a cardholder and their funding account.
    Show {
        #[command(flatten)]
        data: DataArgs,
        /// Cardholder id.
        id: String,
    },
}

/// `kessai admin accounts ...`
#[derive(Debug, clap::Subcommand)]
pub enum AccountsCommand {
    /// Show a ledger account with its balances.
    Show {
        #[command(flatten)]
        data: DataArgs,
        /// Account id.
        id: String,
    },
}

/// `kessai admin keys ...`
#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// List every issuer key version (public parts only).
    List {
        #[command(flatten)]
        data: DataArgs,
    },
    /// Create the next version of a key; the previous one becomes retiring.
    Rotate {
        #[command(flatten)]
        data: DataArgs,
        /// host_sign, transmission or storage.
        #[arg(long)]
        purpose: String,
    },
    /// Write every public key as a PEM SubjectPublicKeyInfo file named by its
    /// key id and version (e.g. host-sign#1.pem).
    Export {
        #[command(flatten)]
        data: DataArgs,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
}

/// `kessai admin retention ...`
#[derive(Debug, clap::Subcommand)]
pub enum RetentionCommand {
    /// Delete the bytes of every retained artefact past its retention
    /// period (a tombstone with the digest stays; ledger postings are
    /// kept). `kessai serve` also does this periodically.
    Purge {
        #[command(flatten)]
        data: DataArgs,
    },
}

/// `kessai admin flow-a ...`
#[derive(Debug, clap::Subcommand)]
pub enum FlowACommand {
    /// Issue a one-time enrolment code for a cardholder (shown once; give
    /// it to the customer out of band). Creates their flow-A card on first
    /// use.
    EnrolmentCode {
        #[command(flatten)]
        data: DataArgs,
        /// Cardholder (customer) id.
        #[arg(long)]
        cardholder: String,
    },
    /// Sign an unlock for a device locked after too many fingerprint
    /// mismatches (after identifying the customer out of band).
    Unlock {
        #[command(flatten)]
        data: DataArgs,
        /// Device id.
        #[arg(long)]
        device: String,
        /// The lock number the device shows.
        #[arg(long)]
        lock_seq: u32,
    },
}

/// An in-process admin client: the host router plus the admin token.
struct Client {
    router: axum::Router,
    token: zeroize::Zeroizing<String>,
    state: kessai_host::state::AppState,
}

impl Client {
    async fn open(data: &DataArgs) -> anyhow::Result<Self> {
        let config = data.host_config("127.0.0.1:0".parse().expect("static address"));
        let state =
            kessai_host::app::open_state(&config, Arc::new(kessai_host::clock::SystemClock))
                .await
                .context("opening the issuer data")?;
        let (token, _) = kessai_host::bootstrap::admin_token(
            &data.data_dir,
            std::env::var(kessai_host::bootstrap::ADMIN_TOKEN_ENV)
                .ok()
                .as_deref(),
        )?;
        Ok(Self {
            router: kessai_host::app::router(state.clone()),
            token,
            state,
        })
    }

    /// Sends one request; prints the JSON answer; exit code 0 on 2xx.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<ExitCode> {
        let mut b = Request::builder().method(method.clone()).uri(path).header(
            header::AUTHORIZATION,
            format!("Bearer {}", self.token.as_str()),
        );
        if method != Method::GET {
            let mut key = [0u8; 16];
            rand::fill(&mut key);
            b = b
                .header("idempotency-key", hex::encode(key))
                .header(header::CONTENT_TYPE, "application/json");
        }
        let req = b.body(match body {
            Some(v) => Body::from(serde_json::to_vec(&v)?),
            None => Body::empty(),
        })?;
        let resp = self.router.clone().oneshot(req).await?;
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 4 * 1024 * 1024).await?;
        let text = match serde_json::from_slice::<Value>(&bytes) {
            Ok(v) => serde_json::to_string_pretty(&v)?,
            Err(_) => String::from_utf8_lossy(&bytes).into_owned(),
        };
        if status.is_success() {
            println!("{text}");
            Ok(ExitCode::SUCCESS)
        } else {
            eprintln!("{status}\n{text}");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn read_public_key(path: &PathBuf) -> anyhow::Result<String> {
    let pem =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let vk = kessai_crypto::sign::VerifyingKey::from_public_pem(&pem)
        .map_err(|e| anyhow::anyhow!("{}: not an Ed25519 public key PEM ({e})", path.display()))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(vk.to_bytes()))
}

/// Runs an admin command.
pub async fn run(cmd: AdminCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AdminCommand::Merchants(m) => match m {
            MerchantsCommand::Add {
                data,
                id,
                kind,
                name,
                mall,
                currency,
                public_key_pem,
            } => {
                let public_key = public_key_pem.as_ref().map(read_public_key).transpose()?;
                let c = Client::open(&data).await?;
                c.call(
                    Method::POST,
                    "/v1/admin/merchants",
                    Some(
                        json!({ "id": id, "kind": kind, "name": name, "mall_id": mall,
                                 "currency": currency, "public_key": public_key }),
                    ),
                )
                .await
            }
            MerchantsCommand::List { data } => {
                Client::open(&data)
                    .await?
                    .call(Method::GET, "/v1/admin/merchants", None)
                    .await
            }
            MerchantsCommand::Show { data, id } => {
                Client::open(&data)
                    .await?
                    .call(Method::GET, &format!("/v1/admin/merchants/{id}"), None)
                    .await
            }
            MerchantsCommand::Suspend { data, id } => {
                Client::open(&data)
                    .await?
                    .call(
                        Method::POST,
                        &format!("/v1/admin/merchants/{id}/status"),
                        Some(json!({ "status": "suspended" })),
                    )
                    .await
            }
            MerchantsCommand::Activate { data, id } => {
                Client::open(&data)
                    .await?
                    .call(
                        Method::POST,
                        &format!("/v1/admin/merchants/{id}/status"),
                        Some(json!({ "status": "active" })),
                    )
                    .await
            }
        },
        AdminCommand::Cardholders(c) => match c {
            CardholdersCommand::Add {
                data,
                id,
                name,
                currency,
                credit_limit_minor,
            } => {
                Client::open(&data)
                    .await?
                    .call(
                        Method::POST,
                        "/v1/admin/cardholders",
                        Some(json!({ "id": id, "name": name, "currency": currency,
                                     "credit_limit_minor": credit_limit_minor })),
                    )
                    .await
            }
            CardholdersCommand::Show { data, id } => {
                Client::open(&data)
                    .await?
                    .call(Method::GET, &format!("/v1/admin/cardholders/{id}"), None)
                    .await
            }
        },
        AdminCommand::Accounts(AccountsCommand::Show { data, id }) => {
            Client::open(&data)
                .await?
                .call(Method::GET, &format!("/v1/admin/accounts/{id}"), None)
                .await
        }
        AdminCommand::Keys(k) => match k {
            KeysCommand::List { data } => {
                Client::open(&data)
                    .await?
                    .call(Method::GET, "/v1/admin/keys", None)
                    .await
            }
            KeysCommand::Rotate { data, purpose } => {
                Client::open(&data)
                    .await?
                    .call(
                        Method::POST,
                        &format!("/v1/admin/keys/{purpose}/rotate"),
                        None,
                    )
                    .await
            }
            KeysCommand::Export { data, out } => {
                let c = Client::open(&data).await?;
                let names = c.state.keys.export_public(&out).await?;
                for n in &names {
                    println!("{}", out.join(n).display());
                }
                eprintln!("exported {} public keys to {}", names.len(), out.display());
                Ok(ExitCode::SUCCESS)
            }
        },
        AdminCommand::Retention(RetentionCommand::Purge { data }) => {
            let c = Client::open(&data).await?;
            let n = kessai_host::routes::flow_a::purge_retention(&c.state)
                .await
                .map_err(|e| anyhow::anyhow!("retention purge: {e}"))?;
            println!("{}", serde_json::to_string_pretty(&json!({ "purged": n }))?);
            Ok(ExitCode::SUCCESS)
        }
        AdminCommand::FlowA(FlowACommand::EnrolmentCode { data, cardholder }) => {
            Client::open(&data)
                .await?
                .call(
                    Method::POST,
                    "/v1/flow-a/admin/enrolment-codes",
                    Some(json!({ "cardholder_id": cardholder })),
                )
                .await
        }
        AdminCommand::FlowA(FlowACommand::Unlock {
            data,
            device,
            lock_seq,
        }) => {
            Client::open(&data)
                .await?
                .call(
                    Method::POST,
                    &format!("/v1/flow-a/admin/devices/{device}/unlock"),
                    Some(json!({ "lock_seq": lock_seq })),
                )
                .await
        }
    }
}
