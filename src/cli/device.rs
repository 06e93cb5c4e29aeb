//! `kessai device ...`: an emulated fingerprint device of flow A (seed
//! 000). Its state — the flow crate's `DeviceState` (personal key, keys,
//! card information and master template sealed for the issuer, counter,
//! lock) — lives in a JSON state file; the device-local sealing key that
//! protects the secrets inside it lives next to it in `<state>.key`
//! (mode 0600). The sensor is the biometric crate's simulated sensor over a
//! synthetic finger chosen by seed, matched with its minutiae matcher at
//! the benchmark-derived threshold; templates travel as ISO/IEC 19794-2
//! records.
//!
//! The device talks to the issuer host over HTTP (`--host`); in a shop the
//! terminal relays these calls, and it only ever sees signed or encrypted
//! artefacts.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use kessai_biometric::{Matcher, Sensor as _, SensorError, SimulatedSensor};
use kessai_flow_a::artefacts::TransactionResult;
use kessai_flow_a::device::{DeviceSecrets, DeviceState};
use kessai_flow_a::{
    EnrolmentCode, FingerprintReader, IssuerAnchor, MasterReading, MatchOutcome, ReaderError,
    Template,
};
use kessai_ids::{CardholderId, DeviceId};
use kessai_money::Money;
use kessai_secrets::SecretKey;
use rand::SeedableRng as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Fingerprint mismatches before the device locks.
pub const MAX_MATCH_ATTEMPTS: u8 = 3;
/// Impressions read at enrolment (the best is kept as master).
pub const ENROL_IMPRESSIONS: usize = 3;
/// Touches an enrolment may take before giving up.
pub const MAX_ENROL_TOUCHES: usize = 12;

/// Device subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum DeviceCommand {
    /// Register a new device with the issuer: registration request,
    /// identity identification with the customer number and the one-time
    /// enrolment code from the issuer, then (on the registration
    /// permission) read the master fingerprint, generate the personal key
    /// and register it. Creates the state file.
    Enrol {
        #[command(flatten)]
        state: StateArgs,
        /// Issuer host URL.
        #[arg(long, default_value = "http://127.0.0.1:8420")]
        host: String,
        /// This device's id.
        #[arg(long)]
        device_id: String,
        /// Customer (cardholder) number.
        #[arg(long)]
        customer: String,
        /// One-time enrolment code (10 digits) given by the issuer.
        #[arg(long)]
        code: String,
        /// Which synthetic finger the owner enrols (any number).
        #[arg(long)]
        finger_seed: u64,
    },
    /// Pay a merchant's signed order: confirm identity by fingerprint, then
    /// send TRANSACTION DATA (order + card information encrypted to the
    /// issuer, signed with the personal key) and check the signed result.
    Buy {
        #[command(flatten)]
        state: StateArgs,
        /// Issuer host URL.
        #[arg(long, default_value = "http://127.0.0.1:8420")]
        host: String,
        /// The merchant-signed order (COSE_Sign1 `flow-a.order`): a file
        /// with its bytes or their base64url text.
        #[arg(long)]
        order: PathBuf,
        /// The amount the customer approves, e.g. "1200 JPY" (must equal
        /// the order's).
        #[arg(long)]
        amount: String,
        /// Present another finger than the enrolled one (to try a wrong
        /// finger).
        #[arg(long)]
        finger_seed: Option<u64>,
    },
    /// Fetch the issuer-signed key update after a key rotation, replace the
    /// stored card information and master template with copies under the
    /// new storage key, and confirm with the personal key.
    UpdateKeys {
        #[command(flatten)]
        state: StateArgs,
        /// Issuer host URL.
        #[arg(long, default_value = "http://127.0.0.1:8420")]
        host: String,
    },
    /// Apply an issuer-signed unlock (from `kessai admin flow-a unlock`).
    Unlock {
        #[command(flatten)]
        state: StateArgs,
        /// The unlock artefact, base64url.
        #[arg(long)]
        unlock: String,
    },
    /// Show the device: id, registration, masked card, keys, counter, lock.
    Show {
        #[command(flatten)]
        state: StateArgs,
    },
}

/// Where the device keeps its state.
#[derive(Debug, Clone, clap::Args)]
pub struct StateArgs {
    /// Device state file (JSON); the device-local key is `<file>.key`.
    #[arg(long, default_value = "kessai-device.json")]
    pub state: PathBuf,
}

// ------------------------------------------------------------------ sensor

/// The device's sensor + matcher: the biometric crate's simulated sensor
/// presenting a synthetic finger chosen by seed, its enrolment (best of
/// several impressions) and its matcher at the default threshold (set
/// from `kessai bench biometric` at FMR = 0.01 %).
#[derive(Debug)]
pub struct SimulatedReader {
    sensor: SimulatedSensor,
    matcher: Matcher,
}

impl SimulatedReader {
    /// A sensor presenting finger `finger_seed`; `touch_seed` seeds the
    /// noise of the impressions.
    pub fn new(finger_seed: u64, touch_seed: u64) -> Self {
        Self {
            sensor: simulated_sensor(finger_seed, touch_seed),
            matcher: Matcher::default(),
        }
    }
}

/// The simulated sensor with synthetic finger `finger_seed` on it (the same
/// finger for the same seed in every command: flow A's device, flow D's
/// card enrolment and phone).
pub fn simulated_sensor(finger_seed: u64, touch_seed: u64) -> SimulatedSensor {
    let mut rng = rand::rngs::StdRng::seed_from_u64(finger_seed);
    let finger = kessai_biometric::synth::SyntheticFinger::generate(&mut rng);
    SimulatedSensor::from_seed(Some(finger), touch_seed)
}

/// One usable impression of finger `finger_seed` (a touch too poor to use
/// is retried, as a user would touch again).
pub fn live_fingerprint(finger_seed: u64) -> anyhow::Result<kessai_biometric::Template> {
    let mut sensor = simulated_sensor(finger_seed, rand::random());
    for _ in 0..MAX_ENROL_TOUCHES {
        match sensor.capture() {
            Ok(t) => return Ok(t),
            Err(SensorError::PoorCapture { .. }) => continue,
            Err(e) => bail!("fingerprint sensor: {e}"),
        }
    }
    bail!("fingerprint sensor: no usable touch")
}

/// Enrols finger `finger_seed` (flow D card personalization) the way the
/// flow A device does; see [`enrol_from`].
pub fn enrol_fingerprint(finger_seed: u64) -> anyhow::Result<kessai_biometric::Template> {
    let mut sensor = simulated_sensor(finger_seed, rand::random());
    let (master, _) = enrol_from(&mut sensor, &Matcher::default())
        .map_err(|e| anyhow::anyhow!("fingerprint enrolment: {e}"))?;
    Ok(master)
}

/// Enrolment like a real one: touch until there are enough usable
/// impressions; one that does not match the others (a slipped or partial
/// touch) is dropped and the user touches again. Returns the master
/// template and the impressions it was made from.
fn enrol_from(
    sensor: &mut SimulatedSensor,
    matcher: &Matcher,
) -> Result<(kessai_biometric::Template, Vec<kessai_biometric::Template>), ReaderError> {
    let mut impressions = Vec::with_capacity(ENROL_IMPRESSIONS);
    for _ in 0..MAX_ENROL_TOUCHES {
        match sensor.capture() {
            Ok(t) => impressions.push(t),
            Err(SensorError::PoorCapture { .. }) => continue,
            Err(SensorError::NoFinger) => return Err(ReaderError::NoFinger),
            Err(SensorError::Unavailable) => return Err(ReaderError::Unavailable),
        }
        if impressions.len() < ENROL_IMPRESSIONS {
            continue;
        }
        match kessai_biometric::enrol(&impressions, matcher) {
            Ok(master) => return Ok((master, impressions)),
            Err(kessai_biometric::EnrolError::Inconsistent { impression }) => {
                impressions.remove(impression);
            }
            Err(_) => return Err(ReaderError::PoorCapture),
        }
    }
    Err(ReaderError::Inconsistent)
}

fn to_record(t: &kessai_biometric::Template) -> Result<Template, ReaderError> {
    Template::from_iso19794_2(t.to_iso19794_2()).map_err(|_| ReaderError::PoorCapture)
}

impl FingerprintReader for SimulatedReader {
    fn read_master(&mut self) -> Result<MasterReading, ReaderError> {
        let (master, impressions) = enrol_from(&mut self.sensor, &self.matcher)?;
        Ok(MasterReading {
            template: to_record(&master)?,
            impressions: impressions
                .iter()
                .map(to_record)
                .collect::<Result<_, _>>()?,
        })
    }

    fn capture_and_match(&mut self, reference: &Template) -> MatchOutcome {
        // A reference that is not a well-formed ISO/IEC 19794-2 record, or
        // a capture that failed, decides nothing (and does not count).
        let Ok(reference) = kessai_biometric::Template::from_iso19794_2(reference.expose()) else {
            return MatchOutcome::NoCapture;
        };
        let Ok(probe) = self.sensor.capture() else {
            return MatchOutcome::NoCapture;
        };
        if self.matcher.verify(&probe, &reference).is_match() {
            MatchOutcome::Match
        } else {
            MatchOutcome::NoMatch
        }
    }
}

// -------------------------------------------------------------- state file

/// What the state file holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceFile {
    /// The flow crate's device state (secrets inside sealed under the
    /// device-local key).
    pub device: DeviceState,
    /// The enrolled finger of the simulated sensor.
    pub finger_seed: u64,
    /// Touches so far (seeds the next impressions' noise).
    pub touches: u64,
}

fn key_path(state: &Path) -> PathBuf {
    let mut p = state.as_os_str().to_owned();
    p.push(".key");
    PathBuf::from(p)
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write as _;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            opts.mode(0o600);
        }
        let mut f = opts
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// A device with its state file, local key and host connection: what the
/// `kessai device` commands and `kessai demo --flow a` drive.
#[derive(Debug)]
pub struct Device {
    path: PathBuf,
    /// The state.
    pub file: DeviceFile,
    secrets: DeviceSecrets,
    http: reqwest::Client,
    host: String,
}

/// A refusal from the issuer host (RFC 9457 problem).
#[derive(Debug, Clone)]
pub struct HostRefusal {
    /// HTTP status.
    pub status: u16,
    /// Problem slug (`urn:kessai:problem:<slug>`).
    pub problem: String,
    /// The problem's detail.
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

fn unb64(v: &Value, field: &str) -> anyhow::Result<Vec<u8>> {
    let s = v[field]
        .as_str()
        .with_context(|| format!("host answer without {field}"))?;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .with_context(|| format!("{field} is not base64url"))
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Unix ms now (the device's own clock).
pub fn system_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The issuer's trust anchor as `GET /v1/flow-a/issuer` gives it.
pub async fn fetch_anchor(http: &reqwest::Client, host: &str) -> anyhow::Result<IssuerAnchor> {
    let v = get_json(http, host, "/v1/flow-a/issuer").await?;
    serde_json::from_value(v).context("issuer key")
}

async fn get_json(http: &reqwest::Client, host: &str, path: &str) -> anyhow::Result<Value> {
    let resp = http
        .get(format!("{}{path}", host.trim_end_matches('/')))
        .send()
        .await
        .with_context(|| format!("GET {path}"))?;
    answer(resp).await
}

/// POSTs `body` with a fresh Idempotency-Key; a problem answer becomes a
/// [`HostRefusal`].
pub async fn post_json(
    http: &reqwest::Client,
    host: &str,
    path: &str,
    body: &Value,
) -> anyhow::Result<Value> {
    let mut key = [0u8; 16];
    rand::fill(&mut key);
    let resp = http
        .post(format!("{}{path}", host.trim_end_matches('/')))
        .header("idempotency-key", hex::encode(key))
        .json(body)
        .send()
        .await
        .with_context(|| format!("POST {path}"))?;
    answer(resp).await
}

async fn answer(resp: reqwest::Response) -> anyhow::Result<Value> {
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        return Err(HostRefusal {
            status: status.as_u16(),
            problem: v["type"]
                .as_str()
                .and_then(|t| t.strip_prefix("urn:kessai:problem:"))
                .unwrap_or("unknown")
                .to_string(),
            detail: v["detail"]
                .as_str()
                .or(v["title"].as_str())
                .unwrap_or("")
                .to_string(),
        }
        .into());
    }
    Ok(v)
}

/// What a purchase returned.
#[derive(Debug)]
pub struct Purchase {
    /// The verified signed result for the device.
    pub result: TransactionResult,
    /// The signed TRANSACTION DATA sent.
    pub transaction: Vec<u8>,
    /// The host's JSON answer (device and merchant results, transfer id).
    pub answer: Value,
}

impl Device {
    /// Creates a fresh device (not registered) with a new local key.
    pub fn create(
        path: &Path,
        device_id: DeviceId,
        anchor: IssuerAnchor,
        finger_seed: u64,
        http: reqwest::Client,
        host: &str,
    ) -> anyhow::Result<Device> {
        let mut key = [0u8; 32];
        rand::fill(&mut key);
        write_private(&key_path(path), hex::encode(key).as_bytes())?;
        let d = Device {
            path: path.to_path_buf(),
            file: DeviceFile {
                device: DeviceState::new(device_id, anchor, MAX_MATCH_ATTEMPTS),
                finger_seed,
                touches: 0,
            },
            secrets: DeviceSecrets::new(SecretKey::new(key)),
            http,
            host: host.to_string(),
        };
        d.save()?;
        Ok(d)
    }

    /// Opens a device's state file and local key.
    pub fn open(path: &Path, http: reqwest::Client, host: &str) -> anyhow::Result<Device> {
        let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let file: DeviceFile = serde_json::from_slice(&text)
            .with_context(|| format!("{} is not a device state file", path.display()))?;
        let kp = key_path(path);
        let hex_key = zeroize::Zeroizing::new(
            std::fs::read_to_string(&kp).with_context(|| format!("reading {}", kp.display()))?,
        );
        let mut key = [0u8; 32];
        hex::decode_to_slice(hex_key.trim(), &mut key)
            .with_context(|| format!("{} is not a 32-byte hex key", kp.display()))?;
        Ok(Device {
            path: path.to_path_buf(),
            file,
            secrets: DeviceSecrets::new(SecretKey::new(key)),
            http,
            host: host.to_string(),
        })
    }

    /// Writes the state file (atomically).
    pub fn save(&self) -> anyhow::Result<()> {
        write_private(&self.path, &serde_json::to_vec_pretty(&self.file)?)
    }

    fn reader(&mut self, finger_seed: Option<u64>) -> SimulatedReader {
        self.file.touches += 1;
        SimulatedReader::new(
            finger_seed.unwrap_or(self.file.finger_seed),
            self.file.finger_seed ^ self.file.touches.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        )
    }

    /// Registration (claims 6, 7): request, identity identification,
    /// permission, master fingerprint, personal key, key registration.
    /// Returns the host's answer (key refs).
    pub async fn enrol(
        &mut self,
        customer: &CardholderId,
        code: &EnrolmentCode,
        now_ms: u64,
    ) -> anyhow::Result<Value> {
        let id = self.file.device.device_id().clone();
        let request = {
            let mut rng = rand::rng();
            self.file.device.registration_request(&mut rng)?
        };
        self.save()?;
        let v = post_json(
            &self.http,
            &self.host,
            "/v1/flow-a/registrations",
            &json!({"device_id": id, "device_nonce": hex::encode(request.device_nonce)}),
        )
        .await?;
        let identity_request = unb64(&v, "identity_request")?;
        let sealed = {
            let mut rng = rand::rng();
            self.file.device.answer_identity_request(
                &identity_request,
                customer,
                code,
                &self.secrets,
                now_ms,
                &mut rng,
            )?
        };
        self.save()?;
        let v = post_json(
            &self.http,
            &self.host,
            &format!("/v1/flow-a/registrations/{id}/identity"),
            &json!({"identification": b64(&sealed)}),
        )
        .await?;
        let permission = unb64(&v, "permission")?;
        let mut reader = self.reader(None);
        let registration = {
            let mut rng = rand::rng();
            self.file
                .device
                .register(&permission, &mut reader, &self.secrets, now_ms, &mut rng)?
        };
        self.save()?;
        post_json(
            &self.http,
            &self.host,
            &format!("/v1/flow-a/registrations/{id}/key"),
            &json!({"public_key": hex::encode(registration.public_key.to_bytes()),
                    "signed": b64(&registration.signed)}),
        )
        .await
    }

    /// Purchase (claims 1, 5, 8): fingerprint confirmation, TRANSACTION
    /// DATA, settlement, signed result checked.
    pub async fn buy(
        &mut self,
        order: &[u8],
        approved: Money,
        finger_seed: Option<u64>,
        now_ms: u64,
    ) -> anyhow::Result<Purchase> {
        let mut reader = self.reader(finger_seed);
        let confirmed = self
            .file
            .device
            .confirm_identity(&mut reader, &self.secrets);
        // A mismatch counts towards the lock: keep that.
        self.save()?;
        let confirmed = confirmed?;
        let transaction = {
            let mut rng = rand::rng();
            self.file.device.build_transaction(
                confirmed,
                order,
                approved,
                &self.secrets,
                now_ms,
                &mut rng,
            )?
        };
        self.save()?;
        let answer = post_json(
            &self.http,
            &self.host,
            "/v1/flow-a/transactions",
            &json!({"transaction": b64(&transaction)}),
        )
        .await?;
        let result = self
            .file
            .device
            .accept_result(&unb64(&answer, "device_result")?)?;
        self.save()?;
        Ok(Purchase {
            result,
            transaction,
            answer,
        })
    }

    /// Key update (claims 4, 11): fetch, apply (re-sealed card
    /// information and master template), confirm. Returns the host's
    /// answer (the new key refs).
    pub async fn update_keys(&mut self) -> anyhow::Result<Value> {
        let id = self.file.device.device_id().clone();
        let v = post_json(
            &self.http,
            &self.host,
            &format!("/v1/flow-a/devices/{id}/key-update"),
            &Value::Null,
        )
        .await?;
        let update = unb64(&v, "key_update")?;
        let confirmation = {
            let mut rng = rand::rng();
            self.file
                .device
                .apply_key_update(&update, &self.secrets, &mut rng)?
        };
        self.save()?;
        post_json(
            &self.http,
            &self.host,
            &format!("/v1/flow-a/devices/{id}/key-update/confirm"),
            &json!({"confirmation": b64(&confirmation)}),
        )
        .await
    }

    /// Applies an issuer-signed unlock.
    pub fn unlock(&mut self, unlock: &[u8]) -> anyhow::Result<()> {
        self.file.device.apply_unlock(unlock)?;
        self.save()
    }

    /// A summary for display (card masked).
    pub fn summary(&self) -> Value {
        let d = &self.file.device;
        json!({
            "device_id": d.device_id(),
            "registered": d.is_registered(),
            "card": d.card_display().map(|(pan, exp)| format!("{pan} exp {}", exp.display())),
            "keys": d.key_refs().map(|(s, t)| json!({"storage": s.to_string(), "transmission": t.to_string()})),
            "personal_key": d.personal_key().map(|(r, _)| r.to_string()),
            "counter": d.counter(),
            "lock": d.lock_state(),
        })
    }
}

fn read_order(path: &Path) -> anyhow::Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    let t = text.trim();
    if !t.is_empty()
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(t)
            .context("order file is not base64url");
    }
    Ok(bytes)
}

/// Runs a device command.
pub async fn run(cmd: DeviceCommand) -> anyhow::Result<ExitCode> {
    let http = reqwest::Client::new();
    match cmd {
        DeviceCommand::Enrol {
            state,
            host,
            device_id,
            customer,
            code,
            finger_seed,
        } => {
            if state.state.exists() {
                bail!(
                    "{} exists: one state file per device",
                    state.state.display()
                );
            }
            let device_id: DeviceId = device_id.parse()?;
            let customer: CardholderId = customer.parse()?;
            let code = EnrolmentCode::parse(&code)?;
            let anchor = fetch_anchor(&http, &host).await?;
            let mut d = Device::create(&state.state, device_id, anchor, finger_seed, http, &host)?;
            let v = d.enrol(&customer, &code, system_now_ms()).await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
            println!("{}", serde_json::to_string_pretty(&d.summary())?);
            Ok(ExitCode::SUCCESS)
        }
        DeviceCommand::Buy {
            state,
            host,
            order,
            amount,
            finger_seed,
        } => {
            let order = read_order(&order)?;
            let amount: Money = amount.parse()?;
            let mut d = Device::open(&state.state, http, &host)?;
            let p = d.buy(&order, amount, finger_seed, system_now_ms()).await?;
            println!("{}", serde_json::to_string_pretty(&p.answer)?);
            eprintln!(
                "paid {} to {} (order {}), card {}, transfer {}",
                p.result.amount,
                p.result.store,
                p.result.order_id,
                p.result.masked_pan,
                p.result.transfer_id
            );
            Ok(ExitCode::SUCCESS)
        }
        DeviceCommand::UpdateKeys { state, host } => {
            let mut d = Device::open(&state.state, http, &host)?;
            let v = d.update_keys().await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(ExitCode::SUCCESS)
        }
        DeviceCommand::Unlock { state, unlock } => {
            let mut d = Device::open(&state.state, http, "")?;
            let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(unlock.trim())
                .context("--unlock is not base64url")?;
            d.unlock(&bytes)?;
            println!("{}", serde_json::to_string_pretty(&d.summary())?);
            Ok(ExitCode::SUCCESS)
        }
        DeviceCommand::Show { state } => {
            let d = Device::open(&state.state, http, "")?;
            println!("{}", serde_json::to_string_pretty(&d.summary())?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_simulated_reader_enrols_matches_the_owner_and_refuses_others() {
        let mut owner = SimulatedReader::new(11, 1);
        let master = owner.read_master().unwrap();
        assert_eq!(master.impressions.len(), ENROL_IMPRESSIONS);
        assert!(master.template.expose().starts_with(b"FMR\0"));
        let mut again = SimulatedReader::new(11, 2);
        assert_eq!(
            again.capture_and_match(&master.template),
            MatchOutcome::Match
        );
        let mut other = SimulatedReader::new(12, 3);
        assert_eq!(
            other.capture_and_match(&master.template),
            MatchOutcome::NoMatch
        );
    }

    #[test]
    fn a_malformed_iso_record_decides_nothing() {
        // The flow crate's shallow check passes (magic + size), the
        // biometric parser refuses: no capture, no count towards the lock.
        let mut rec = b"FMR\0 20\0".to_vec();
        rec.resize(64, 0xFF);
        let bad = Template::from_iso19794_2(rec).unwrap();
        let mut reader = SimulatedReader::new(11, 4);
        assert_eq!(reader.capture_and_match(&bad), MatchOutcome::NoCapture);
        assert!(Template::from_iso19794_2(b"XMR\0".repeat(10)).is_err());
    }

    #[test]
    fn order_files_take_bytes_or_base64url() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("o");
        std::fs::write(&p, b64(&[0xd2, 0x84, 0x43])).unwrap();
        assert_eq!(read_order(&p).unwrap(), vec![0xd2, 0x84, 0x43]);
        std::fs::write(&p, [0xd2, 0x84, 0x43]).unwrap();
        assert_eq!(read_order(&p).unwrap(), vec![0xd2, 0x84, 0x43]);
    }
}
