//! `kessai reader ...`: flow C's roles outside the issuer (seed 002).
//!
//! - **The phone with the card reader plugged in** (`keygen`, `card-file`,
//!   `run`): the phone keeps a channel open to the host (long poll on
//!   `GET /v1/flow-c/phones/{device}/messages`, each poll authenticated by
//!   the device key over a fresh host challenge), shows the approval request
//!   and answers approve / reject signed with the device key, passes the
//!   host-signed transaction key to the reader, which verifies it against
//!   the issuer's public key and keeps it in memory only, reads the card
//!   (card record file), takes the PIN on its own keypad (environment
//!   variable `KESSAI_READER_PIN` or a prompt — never the command line),
//!   and seals card data and the format-4 PIN block to the transaction key.
//!   The completion makes the reader discard its key.
//! - **The merchant terminal** (`merchant-keygen`, `merchant-request`):
//!   signs the payment request with the merchant key, sends it, waits for
//!   the host-signed completion (merchant copy: masked PAN only) and
//!   verifies it.
//!
//! Key files hold Ed25519 seeds in clear (emulators; keep them `0600`).
//! The issuer's public keys come from `kessai admin keys export` (PEM files
//! named `<key ref>.pem`), never from the host being checked.

use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use kessai_crypto::sign::{SigningKey, VerifyingKey};
use kessai_flow_c::artefacts::{
    ApprovalRequest, CustomerRef, Decision, MerchantCompletion, Outcome, Signer, TrustedKeys,
};
use kessai_flow_c::merchant::MerchantTerminal;
use kessai_flow_c::phone::Phone;
use kessai_flow_c::reader::{EmulatedCard, Reader};
use kessai_host::routes::flow_c::wire::{self, MessagesView, TxnView};
use kessai_ids::{KeyRef, OrderId, StoreId};
use kessai_money::Money;
use kessai_secrets::CardNumber;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use zeroize::Zeroizing;

/// Environment variable the reader takes the PIN from (else it prompts).
pub const PIN_ENV: &str = "KESSAI_READER_PIN";
/// Environment variable `card-file` takes the card number from (else it
/// prompts).
pub const PAN_ENV: &str = "KESSAI_READER_PAN";

/// Flow C roles.
#[derive(Debug, clap::Subcommand)]
pub enum ReaderCommand {
    /// Create the phone's device key file and print the public key to
    /// register (`POST /v1/flow-c/admin/phones`).
    Keygen {
        /// Key file to create.
        #[arg(long)]
        out: PathBuf,
        /// The phone's device id (its key ref is `<device id>#1`).
        #[arg(long)]
        device_id: String,
    },
    /// Create the emulated card's record file (PAN, expiry, cardholder
    /// name). The PAN comes from KESSAI_READER_PAN or a prompt.
    CardFile {
        /// Card file to create.
        #[arg(long)]
        out: PathBuf,
        /// Expiry, YYMM.
        #[arg(long)]
        expiry: String,
        /// Cardholder name as on the card.
        #[arg(long)]
        name: String,
    },
    /// Run the phone and its card reader: keep the channel to the host
    /// open, approve or reject payment requests, read the card, take the
    /// PIN on the reader's keypad.
    Run(RunArgs),
    /// Create a merchant key file and print its public key (base64url and
    /// PEM) for `kessai admin merchants add`.
    MerchantKeygen {
        /// Key file to create.
        #[arg(long)]
        out: PathBuf,
        /// Merchant id (its key ref is `<merchant id>#1`).
        #[arg(long)]
        merchant_id: String,
    },
    /// Merchant terminal: send a signed payment request and wait for the
    /// host's signed completion.
    MerchantRequest(MerchantArgs),
}

/// Arguments of `kessai reader run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Issuer host URL.
    #[arg(long, default_value = "http://127.0.0.1:8420")]
    pub host: String,
    /// Device key file (`kessai reader keygen`).
    #[arg(long)]
    pub device: PathBuf,
    /// Card record file (`kessai reader card-file`).
    #[arg(long)]
    pub card: PathBuf,
    /// Issuer public key PEM files named `<key ref>.pem` (from `kessai admin
    /// keys export`); repeat for several versions.
    #[arg(long = "issuer-key", required = true)]
    pub issuer_keys: Vec<PathBuf>,
    /// Approve every request without asking.
    #[arg(long, conflicts_with = "reject")]
    pub approve: bool,
    /// Reject every request without asking.
    #[arg(long)]
    pub reject: bool,
    /// Stop after the first completed (or declined) transaction.
    #[arg(long)]
    pub once: bool,
}

/// Arguments of `kessai reader merchant-request`.
#[derive(Debug, clap::Args)]
pub struct MerchantArgs {
    /// Issuer host URL.
    #[arg(long, default_value = "http://127.0.0.1:8420")]
    pub host: String,
    /// Merchant key file (`kessai reader merchant-keygen`).
    #[arg(long)]
    pub merchant_key: PathBuf,
    /// Issuer public key PEM files named `<key ref>.pem`.
    #[arg(long = "issuer-key", required = true)]
    pub issuer_keys: Vec<PathBuf>,
    /// The customer's phone number (E.164, e.g. +819012345678).
    #[arg(long)]
    pub phone: String,
    /// Amount, e.g. "1200 JPY".
    #[arg(long)]
    pub amount: String,
    /// Merchant order reference (the transaction's natural key).
    #[arg(long)]
    pub order: String,
    /// How long the request is valid, ms.
    #[arg(long, default_value_t = 600_000)]
    pub ttl_ms: u64,
    /// How long to wait for the completion, seconds.
    #[arg(long, default_value_t = 300)]
    pub wait_s: u64,
}

/// A signing key file: `{"key_ref": "...", "seed": "<hex>"}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct KeyFile {
    /// `id#version`.
    pub key_ref: String,
    /// Ed25519 seed, hex.
    pub seed: String,
}

impl KeyFile {
    /// A fresh key for `key_ref`.
    pub fn generate(key_ref: &KeyRef) -> (KeyFile, Signer) {
        let mut seed = Zeroizing::new([0u8; 32]);
        rand::fill(&mut seed[..]);
        let key = SigningKey::from_seed(&seed);
        (
            KeyFile {
                key_ref: key_ref.to_string(),
                seed: hex::encode(&seed[..]),
            },
            Signer::new(key, key_ref.clone()),
        )
    }

    /// The signer.
    pub fn signer(&self) -> anyhow::Result<Signer> {
        let mut seed = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(&self.seed, &mut seed[..]).context("key file: seed")?;
        let key_ref: KeyRef = self.key_ref.parse().context("key file: key_ref")?;
        Ok(Signer::new(SigningKey::from_seed(&seed), key_ref))
    }
}

/// The emulated card's record: what the card read unit reads.
#[derive(Serialize, Deserialize)]
pub struct CardFile {
    /// Card number.
    pub pan: String,
    /// Expiry, YYMM.
    pub expiry_yymm: String,
    /// Cardholder name.
    pub cardholder_name: String,
}

impl std::fmt::Debug for CardFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CardFile(redacted)")
    }
}

impl CardFile {
    /// The card.
    pub fn card(&self) -> anyhow::Result<EmulatedCard> {
        let pan = CardNumber::new(&self.pan).context("card file: card number")?;
        EmulatedCard::new(pan, &self.expiry_yymm, &self.cardholder_name)
            .context("card file: expiry or name")
    }
}

fn write_private(path: &Path, value: &impl Serialize) -> anyhow::Result<()> {
    let bytes = serde_json::to_vec_pretty(value)?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(&bytes)?;
    Ok(())
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> anyhow::Result<T> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
}

/// Issuer keys from PEM files named `<key ref>.pem`.
pub fn issuer_trust(files: &[PathBuf]) -> anyhow::Result<TrustedKeys> {
    let mut keys = Vec::new();
    for f in files {
        let name = f
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".pem"))
            .with_context(|| format!("{}: name it <key ref>.pem", f.display()))?;
        let key_ref: KeyRef = name
            .parse()
            .with_context(|| format!("{}: not a key ref", f.display()))?;
        let pem = std::fs::read_to_string(f)?;
        let vk = VerifyingKey::from_public_pem(&pem)
            .with_context(|| format!("{}: not an Ed25519 public key", f.display()))?;
        keys.push((key_ref, vk));
    }
    Ok(TrustedKeys::new(keys))
}

/// A refusal from the issuer host (RFC 9457 problem).
#[derive(Debug, Clone)]
pub struct HostRefusal {
    /// HTTP status.
    pub status: u16,
    /// Problem slug.
    pub problem: String,
    /// Detail.
    pub detail: String,
}

impl std::fmt::Display for HostRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "host refused ({} {}): {}",
            self.status, self.problem, self.detail
        )
    }
}

impl std::error::Error for HostRefusal {}

async fn answer<T: for<'de> Deserialize<'de>>(resp: reqwest::Response) -> anyhow::Result<T> {
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        return Err(HostRefusal {
            status: status.as_u16(),
            problem: v["type"]
                .as_str()
                .and_then(|t| t.strip_prefix("urn:kessai:problem:"))
                .unwrap_or("unknown")
                .to_owned(),
            detail: v["detail"]
                .as_str()
                .or(v["title"].as_str())
                .unwrap_or("")
                .to_owned(),
        }
        .into());
    }
    serde_json::from_value(v).context("unexpected host answer")
}

/// HTTP access to the host's flow C API for one party.
#[derive(Debug, Clone)]
pub struct Channel {
    http: reqwest::Client,
    host: String,
}

impl Channel {
    /// A client of `host` (`http://127.0.0.1:8420`).
    pub fn new(http: reqwest::Client, host: &str) -> Self {
        Self {
            http,
            host: host.trim_end_matches('/').to_owned(),
        }
    }

    /// POST with a fresh Idempotency-Key.
    pub async fn post<T: for<'de> Deserialize<'de>>(
        &self,
        path: &str,
        body: &Value,
    ) -> anyhow::Result<T> {
        let mut key = [0u8; 16];
        rand::fill(&mut key);
        let resp = self
            .http
            .post(format!("{}{path}", self.host))
            .header("idempotency-key", hex::encode(key))
            .json(body)
            .send()
            .await
            .with_context(|| format!("POST {path}"))?;
        answer(resp).await
    }

    /// A channel-authenticated GET as `party` (see
    /// `kessai_host::routes::flow_c::wire`).
    pub async fn signed_get<T: for<'de> Deserialize<'de>>(
        &self,
        path: &str,
        query: &str,
        party: &str,
        signer: &Signer,
    ) -> anyhow::Result<T> {
        let c: wire::ChallengeView = answer(
            self.http
                .get(format!("{}/v1/flow-c/challenge", self.host))
                .send()
                .await
                .context("GET challenge")?,
        )
        .await?;
        let auth = wire::sign_channel_auth(&c.challenge, party, &format!("GET {path}"), signer)
            .map_err(|e| anyhow::anyhow!("signing the channel auth: {e}"))?;
        let resp = self
            .http
            .get(format!("{}{path}{query}", self.host))
            .header(wire::CHALLENGE_HEADER, c.challenge)
            .header(wire::AUTH_HEADER, auth)
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        answer(resp).await
    }
}

/// One message from the host, as the phone received it.
#[derive(Debug, Clone)]
pub struct Message {
    /// Transaction id.
    pub txn_id: String,
    /// `approval_request`, `transaction_key`, `pin_prompt`, `completion`.
    pub kind: String,
    /// The host-signed artefact.
    pub artefact: Vec<u8>,
}

/// What the phone and reader did with one message.
#[derive(Debug, Clone)]
pub enum Event {
    /// S31: shown on the phone, not answered (yet).
    Shown {
        /// The request shown.
        request: ApprovalRequest,
    },
    /// S31–S33 / S46: shown, answered, and the host's new state.
    Answered {
        /// The request shown.
        request: ApprovalRequest,
        /// The cardholder's answer.
        decision: Decision,
        /// The host's state after it.
        state: String,
    },
    /// S34–S37: key verified and loaded, card read, sealed card data sent.
    CardSent {
        /// Size of the ciphertext.
        ciphertext_len: usize,
        /// The host's state after it.
        state: String,
    },
    /// S39–S42: PIN prompt verified and shown on the reader, PIN typed,
    /// sealed format-4 block sent.
    PinSent {
        /// The host's state after it.
        state: String,
    },
    /// S44–S45: completion verified, reader key discarded.
    Completed {
        /// The transaction.
        txn_id: String,
        /// How it ended.
        outcome: Outcome,
    },
}

/// The phone with the card reader plugged in.
pub struct PhoneReader {
    channel: Channel,
    device_id: String,
    signer: Signer,
    phone: Phone,
    reader: Reader,
    cursor: i64,
    /// Sealed card data last sent (what a network eavesdropper could
    /// capture): kept to show that a replay is refused.
    pub last_card_data: Option<Vec<u8>>,
    /// Sealed PIN block last sent.
    pub last_pin_block: Option<Vec<u8>>,
}

impl std::fmt::Debug for PhoneReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PhoneReader")
            .field("device_id", &self.device_id)
            .field("reader", &self.reader)
            .finish_non_exhaustive()
    }
}

impl PhoneReader {
    /// A phone registered as `signer`'s device with `card` in its reader.
    pub fn new(
        channel: Channel,
        signer: Signer,
        card: EmulatedCard,
        issuer: TrustedKeys,
    ) -> anyhow::Result<Self> {
        let device_id = signer.key_ref().id.as_str().to_owned();
        let mut reader = Reader::new(issuer.clone());
        reader.insert_card(card);
        Ok(Self {
            channel,
            phone: Phone::new(
                device_id.parse().context("device id")?,
                signer.clone(),
                issuer,
                u64::MAX,
            ),
            device_id,
            signer,
            reader,
            cursor: 0,
            last_card_data: None,
            last_pin_block: None,
        })
    }

    /// The reader's display, oldest first.
    pub fn reader_display(&self) -> &[String] {
        self.reader.display()
    }

    /// True while the reader holds a transaction key.
    pub fn reader_has_key(&self) -> bool {
        self.reader.has_transaction_key()
    }

    /// Long-polls the channel for up to `wait_ms`.
    pub async fn poll(&mut self, wait_ms: u64) -> anyhow::Result<Vec<Message>> {
        let path = format!("/v1/flow-c/phones/{}/messages", self.device_id);
        let query = format!("?after={}&wait_ms={wait_ms}", self.cursor);
        let party = wire::phone_party(&self.device_id);
        let v: MessagesView = self
            .channel
            .signed_get(&path, &query, &party, &self.signer)
            .await?;
        self.cursor = v.last_seq;
        v.messages
            .into_iter()
            .map(|m| {
                Ok(Message {
                    txn_id: m.txn_id,
                    kind: m.kind,
                    artefact: wire::unb64(&m.artefact, "artefact")
                        .map_err(|e| anyhow::anyhow!("{e}"))?,
                })
            })
            .collect()
    }

    /// Handles one message: `decide` answers approval requests (`None`:
    /// the cardholder presses nothing), `pin` yields the digits typed on
    /// the reader's keypad.
    pub async fn handle(
        &mut self,
        m: &Message,
        now_ms: u64,
        decide: &mut dyn FnMut(&ApprovalRequest) -> Option<Decision>,
        pin: &mut dyn FnMut() -> anyhow::Result<Zeroizing<String>>,
    ) -> anyhow::Result<Event> {
        let txn_path = |step: &str| format!("/v1/flow-c/transactions/{}/{step}", m.txn_id);
        match m.kind.as_str() {
            "approval_request" => {
                let request = self
                    .phone
                    .receive_approval_request(&m.artefact, now_ms)
                    .context("approval request refused by the phone")?;
                let Some(decision) = decide(&request) else {
                    return Ok(Event::Shown { request });
                };
                let response = self.phone.answer(decision)?;
                let v: TxnView = self
                    .channel
                    .post(
                        &txn_path("approval"),
                        &json!({ "approval_response": wire::b64(&response) }),
                    )
                    .await?;
                Ok(Event::Answered {
                    request,
                    decision,
                    state: v.state,
                })
            }
            "transaction_key" => {
                let key = self
                    .phone
                    .relay_transaction_key(&m.artefact)
                    .context("transaction key refused by the phone")?;
                self.reader
                    .load_transaction_key(&key)
                    .context("transaction key refused by the reader")?;
                let sealed = {
                    let mut rng = rand::rng();
                    self.reader.read_card(&mut rng)?
                };
                let sealed = self.phone.relay_to_host(&sealed);
                let v: TxnView = self
                    .channel
                    .post(
                        &txn_path("card-data"),
                        &json!({ "sealed_card_data": wire::b64(&sealed) }),
                    )
                    .await?;
                let ciphertext_len = sealed.len();
                self.last_card_data = Some(sealed);
                Ok(Event::CardSent {
                    ciphertext_len,
                    state: v.state,
                })
            }
            "pin_prompt" => {
                let prompt = self
                    .phone
                    .relay_pin_prompt(&m.artefact)
                    .context("PIN prompt refused by the phone")?;
                let digits = pin()?;
                self.reader.type_pin(&digits);
                let sealed = {
                    let mut rng = rand::rng();
                    self.reader.handle_pin_prompt(&prompt, &mut rng)?
                };
                let sealed = self.phone.relay_to_host(&sealed);
                let v: TxnView = self
                    .channel
                    .post(
                        &txn_path("pin-block"),
                        &json!({ "sealed_pin_block": wire::b64(&sealed) }),
                    )
                    .await?;
                self.last_pin_block = Some(sealed);
                Ok(Event::PinSent { state: v.state })
            }
            "completion" => {
                let outcome = self
                    .phone
                    .receive_completion(&m.artefact)
                    .context("completion refused by the phone")?;
                if self.reader.has_transaction_key() {
                    self.reader.handle_completion(&m.artefact)?;
                }
                Ok(Event::Completed {
                    txn_id: m.txn_id.clone(),
                    outcome,
                })
            }
            other => bail!("unknown message kind {other}"),
        }
    }
}

/// The merchant terminal.
pub struct Merchant {
    channel: Channel,
    store_id: StoreId,
    signer: Signer,
    terminal: MerchantTerminal,
}

impl std::fmt::Debug for Merchant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Merchant({})", self.store_id)
    }
}

impl Merchant {
    /// A terminal of the merchant whose key is `signer` (`<store>#<v>`).
    pub fn new(channel: Channel, signer: Signer, issuer: TrustedKeys) -> anyhow::Result<Self> {
        let store_id: StoreId = signer
            .key_ref()
            .id
            .as_str()
            .parse()
            .context("merchant id")?;
        Ok(Self {
            channel,
            terminal: MerchantTerminal::new(store_id.clone(), signer.clone(), issuer),
            store_id,
            signer,
        })
    }

    /// S1: signs and sends a payment request. Returns the host's answer.
    pub async fn request(
        &mut self,
        phone: &str,
        amount: Money,
        order: &str,
        now_ms: u64,
        ttl_ms: u64,
    ) -> anyhow::Result<TxnView> {
        let order: OrderId = order.parse().context("order reference")?;
        let customer = CustomerRef::phone(phone).context("phone number")?;
        let bytes = {
            let mut rng = rand::rng();
            self.terminal
                .payment_request(customer, amount, order, now_ms, ttl_ms, &mut rng)?
        };
        self.channel
            .post(
                "/v1/flow-c/payment-requests",
                &json!({ "payment_request": wire::b64(&bytes) }),
            )
            .await
    }

    /// The transaction as the merchant sees it, waiting up to `wait_ms` for
    /// it to end.
    pub async fn view(&self, txn_id: &str, wait_ms: u64) -> anyhow::Result<TxnView> {
        let path = format!(
            "/v1/flow-c/merchants/{}/transactions/{txn_id}",
            self.store_id
        );
        self.channel
            .signed_get(
                &path,
                &format!("?wait_ms={wait_ms}"),
                &wire::merchant_party(self.store_id.as_str()),
                &self.signer,
            )
            .await
    }

    /// Verifies the host's signed completion in `view`.
    pub fn verify(&self, view: &TxnView) -> anyhow::Result<(MerchantCompletion, Vec<u8>)> {
        let b = view
            .completion
            .as_deref()
            .context("the transaction has not ended yet")?;
        let bytes = wire::unb64(b, "completion").map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok((self.terminal.verify_completion(&bytes)?, bytes))
    }
}

/// Unix ms now.
pub fn system_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn prompt_line(question: &str) -> anyhow::Result<Zeroizing<String>> {
    eprint!("{question}");
    std::io::stderr().flush()?;
    let mut line = Zeroizing::new(String::new());
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(Zeroizing::new(line.trim().to_owned()))
}

/// Describes an outcome for people.
pub fn describe(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Settled { transfer_id } => format!("settled (transfer {transfer_id})"),
        Outcome::Declined { reason } => format!(
            "declined ({})",
            kessai_host::routes::flow_c::reason_code(reason)
        ),
    }
}

/// Runs a `kessai reader` command.
pub async fn run(cmd: ReaderCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ReaderCommand::Keygen { out, device_id } => {
            let key_ref = kessai_host::routes::flow_c::device_key_ref(&device_id, 1)
                .context("invalid device id")?;
            let (file, signer) = KeyFile::generate(&key_ref);
            write_private(&out, &file)?;
            println!("device key {key_ref} written to {}", out.display());
            println!(
                "public key (base64url): {}",
                wire::b64(&signer.verifying_key().to_bytes())
            );
            Ok(ExitCode::SUCCESS)
        }
        ReaderCommand::CardFile { out, expiry, name } => {
            let pan = match std::env::var(PAN_ENV) {
                Ok(p) => Zeroizing::new(p),
                Err(_) => prompt_line("card number: ")?,
            };
            let file = CardFile {
                pan: pan.to_string(),
                expiry_yymm: expiry,
                cardholder_name: name,
            };
            let card = file.card()?;
            write_private(&out, &file)?;
            println!("card {card:?} written to {}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        ReaderCommand::MerchantKeygen { out, merchant_id } => {
            let key_ref: KeyRef = format!("{merchant_id}#1")
                .parse()
                .context("invalid merchant id")?;
            let (file, signer) = KeyFile::generate(&key_ref);
            write_private(&out, &file)?;
            println!("merchant key {key_ref} written to {}", out.display());
            println!(
                "public key (base64url): {}",
                wire::b64(&signer.verifying_key().to_bytes())
            );
            print!("{}", signer.verifying_key().to_public_pem());
            Ok(ExitCode::SUCCESS)
        }
        ReaderCommand::Run(a) => run_phone(a).await,
        ReaderCommand::MerchantRequest(a) => run_merchant(a).await,
    }
}

async fn run_phone(a: RunArgs) -> anyhow::Result<ExitCode> {
    let trust = issuer_trust(&a.issuer_keys)?;
    let signer = read_json::<KeyFile>(&a.device)?.signer()?;
    let card = read_json::<CardFile>(&a.card)?.card()?;
    let channel = Channel::new(reqwest::Client::new(), &a.host);
    let mut phone = PhoneReader::new(channel, signer, card, trust)?;
    println!(
        "phone {} connected to {}; waiting for payment requests",
        phone.device_id, a.host
    );
    let (approve, reject) = (a.approve, a.reject);
    let mut decide = move |r: &ApprovalRequest| {
        println!(
            "[phone] {} asks {} (order {})",
            r.merchant_name, r.amount, r.order_ref
        );
        if approve {
            return Some(Decision::Approve);
        }
        if reject {
            return Some(Decision::Reject);
        }
        Some(match prompt_line("[phone] approve? [y/N] ") {
            Ok(s) if s.eq_ignore_ascii_case("y") || s.eq_ignore_ascii_case("yes") => {
                Decision::Approve
            }
            _ => Decision::Reject,
        })
    };
    let mut pin = || -> anyhow::Result<Zeroizing<String>> {
        match std::env::var(PIN_ENV) {
            Ok(p) => Ok(Zeroizing::new(p)),
            Err(_) => prompt_line("[reader keypad] PIN: "),
        }
    };
    loop {
        for m in phone.poll(20_000).await? {
            match phone
                .handle(&m, system_now_ms(), &mut decide, &mut pin)
                .await
            {
                Ok(ev) => {
                    if let Some(d) = phone.reader_display().last() {
                        println!("[reader display] {d}");
                    }
                    match ev {
                        Event::Shown { request } => {
                            println!("[phone] order {} left unanswered", request.order_ref)
                        }
                        Event::Answered {
                            request,
                            decision,
                            state,
                        } => println!(
                            "[phone] order {}: answered {decision:?}; host: {state}",
                            request.order_ref
                        ),
                        Event::CardSent {
                            ciphertext_len,
                            state,
                        } => println!(
                            "[reader] card read and sealed to the transaction key ({ciphertext_len} bytes); host: {state}"
                        ),
                        Event::PinSent { state } => {
                            println!("[reader] PIN block sealed and sent; host: {state}")
                        }
                        Event::Completed { txn_id, outcome } => {
                            println!("[phone] transaction {txn_id}: {}", describe(&outcome));
                            if a.once {
                                return Ok(ExitCode::SUCCESS);
                            }
                        }
                    }
                }
                Err(e) => eprintln!("[phone] {}: {e:#}", m.kind),
            }
        }
    }
}

async fn run_merchant(a: MerchantArgs) -> anyhow::Result<ExitCode> {
    let trust = issuer_trust(&a.issuer_keys)?;
    let signer = read_json::<KeyFile>(&a.merchant_key)?.signer()?;
    let amount: Money = a.amount.parse().context("amount, e.g. \"1200 JPY\"")?;
    let mut m = Merchant::new(Channel::new(reqwest::Client::new(), &a.host), signer, trust)?;
    let v = m
        .request(&a.phone, amount, &a.order, system_now_ms(), a.ttl_ms)
        .await?;
    println!(
        "[merchant] transaction {} for {amount}: {}",
        v.txn_id, v.state
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(a.wait_s);
    loop {
        let v = m.view(&v.txn_id, 20_000).await?;
        if v.completion.is_some() {
            let (done, _) = m.verify(&v)?;
            println!(
                "[merchant] completion verified (host signature): {} {} card {}",
                describe(&done.outcome),
                done.amount,
                done.masked_pan.as_deref().unwrap_or("-")
            );
            return Ok(match done.outcome {
                Outcome::Settled { .. } => ExitCode::SUCCESS,
                Outcome::Declined { .. } => ExitCode::from(2),
            });
        }
        if std::time::Instant::now() >= deadline {
            bail!("no completion within {} s (state {})", a.wait_s, v.state);
        }
    }
}
