//! The real stack: an emulated card served to pcscd through vsmartcard's
//! `vpcd`, reached back through PC/SC (`PcscTransport`) and through a
//! third-party tool (`opensc-tool`).
//!
//! Ignored by default. `.ci/pcsc.sh` installs pcscd + vsmartcard-vpcd +
//! opensc, starts pcscd and runs
//! `KESSAI_TEST_PCSC=1 cargo test -p kessai-card-io --features pcsc -- --ignored`.
//! With `KESSAI_TEST_PCSC=1` a missing pcscd, vpcd reader or opensc-tool is
//! a **failure**; without it, the test says why it skips and returns.
#![cfg(feature = "pcsc")]

use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use kessai_card_io::pcsc::{
    PcscOptions, PcscTransport, Protocols, ReaderSelector, Sharing, list_readers, wait_for_card,
};
use kessai_card_io::vpcd::{VpcdConfig, VpcdError, serve_vpcd};
use kessai_card_io::{CardTransport, EchoSlot, TransportError};

const READER: &str = "Virtual PCD";

/// Where pcscd's vpcd driver listens: `KESSAI_VPCD_ADDR` (set by
/// `.ci/pcsc.sh` when it had to move off the default port), else the default.
fn vpcd_config() -> VpcdConfig {
    let mut cfg = VpcdConfig::default();
    if let Ok(addr) = std::env::var("KESSAI_VPCD_ADDR") {
        cfg.addr = addr
            .parse()
            .unwrap_or_else(|e| panic!("KESSAI_VPCD_ADDR={addr:?}: {e}"));
    }
    cfg
}

/// Precondition failure: panic when the stack is required, else skip.
fn unavailable(why: &str) -> bool {
    if std::env::var("KESSAI_TEST_PCSC").as_deref() == Ok("1") {
        panic!("KESSAI_TEST_PCSC=1 but {why}");
    }
    eprintln!("skipping real PC/SC test: {why} (set KESSAI_TEST_PCSC=1 to make this a failure)");
    true
}

fn hex_colon(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The vpcd card side, on its own thread and runtime.
struct Server {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<(Result<(), VpcdError>, EchoSlot)>>,
}

impl Server {
    fn start() -> Self {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            let mut slot = EchoSlot::new();
            let r = rt.block_on(serve_vpcd(&vpcd_config(), &mut slot, async {
                let _ = rx.await;
            }));
            (r, slot)
        });
        Self {
            stop: Some(tx),
            thread: Some(thread),
        }
    }

    fn stop(&mut self) -> (Result<(), VpcdError>, EchoSlot) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.thread
            .take()
            .expect("server already stopped")
            .join()
            .expect("vpcd server thread panicked")
    }

    /// If the server already gave up, say why.
    fn check_alive(&mut self) {
        if self.thread.as_ref().is_some_and(|t| t.is_finished()) {
            let (r, _) = self.stop();
            panic!("vpcd client stopped early: {r:?}");
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

fn select_echo() -> Vec<u8> {
    let mut c = vec![0x00, 0xA4, 0x04, 0x00, EchoSlot::AID.len() as u8];
    c.extend_from_slice(EchoSlot::AID);
    c
}

/// Waits (event driven, bounded) until the named reader shows no card.
fn wait_for_removal(reader: &str, timeout: Duration) {
    use pcsc::{Context, ReaderState, Scope, State};
    let ctx = Context::establish(Scope::User).expect("pcsc context");
    let name = std::ffi::CString::new(reader).unwrap();
    let mut states = [ReaderState::new(name, State::UNAWARE)];
    let deadline = Instant::now() + timeout;
    loop {
        match ctx.get_status_change(Duration::from_millis(500), &mut states) {
            Ok(()) | Err(pcsc::Error::Timeout) => {}
            Err(e) => panic!("SCardGetStatusChange: {e:?}"),
        }
        if states[0].event_state().contains(State::EMPTY) {
            return;
        }
        states[0].sync_current_state();
        assert!(
            Instant::now() < deadline,
            "card still present after the vpcd client stopped"
        );
    }
}

#[test]
#[ignore = "needs pcscd with vsmartcard-vpcd; CI runs it through .ci/pcsc.sh"]
fn virtual_card_through_pcscd() {
    // --- preconditions --------------------------------------------------
    let readers = match list_readers() {
        Ok(r) => r,
        Err(TransportError::ServiceUnavailable) => {
            if unavailable("pcscd is not running") {
                return;
            }
            unreachable!()
        }
        Err(e) => panic!("listing readers: {e}"),
    };
    if !readers.iter().any(|r| r.name.contains(READER))
        && unavailable(
            "no \"Virtual PCD\" reader (is vsmartcard-vpcd installed and pcscd restarted?)",
        )
    {
        return;
    }
    if Command::new("opensc-tool")
        .arg("--version")
        .output()
        .is_err()
        && unavailable("opensc-tool is not installed")
    {
        return;
    }

    // --- insert the virtual card ----------------------------------------
    let mut server = Server::start();
    let selector = ReaderSelector::NameContains(READER.into());
    let reader = match wait_for_card(&selector, Duration::from_secs(30)) {
        Ok(r) => r,
        Err(e) => {
            server.check_alive();
            panic!("card never appeared in {READER}: {e}");
        }
    };
    let listed = list_readers().unwrap();
    let entry = listed.iter().find(|r| r.name == reader).unwrap();
    assert!(entry.card_present);
    assert_eq!(entry.atr, EchoSlot::ATR, "ATR as pcscd reports it");

    // --- APDUs through PC/SC ---------------------------------------------
    let mut card = PcscTransport::connect(&PcscOptions {
        reader: selector.clone(),
        sharing: Sharing::Shared,
        protocols: Protocols::Any,
    })
    .expect("connect through pcscd");
    assert_eq!(card.reader_name(), reader);
    assert_eq!(card.atr(), EchoSlot::ATR);
    assert_eq!(card.card_protocol(), Some("T=1"));
    assert_eq!(card.transmit(&select_echo()).unwrap(), [0x90, 0x00]);
    assert_eq!(
        card.transmit(&[0x80, 0xEE, 0x00, 0x00, 0x04, 0xDE, 0xAD, 0xBE, 0xEF])
            .unwrap(),
        [0xDE, 0xAD, 0xBE, 0xEF, 0x90, 0x00]
    );
    let data: Vec<u8> = (0..=254u8).collect();
    let mut long = vec![0x80, 0xEE, 0x00, 0x00, data.len() as u8];
    long.extend_from_slice(&data);
    let r = card.transmit(&long).unwrap();
    assert_eq!(&r[..255], &data[..]);
    assert_eq!(&r[255..], [0x90, 0x00]);
    assert_eq!(
        card.transmit(&[0x00, 0x12, 0x00, 0x00]).unwrap(),
        [0x6D, 0x00]
    );

    // A reset through PC/SC reaches the emulated card: its APDU counter
    // starts again (GET DATA counts itself).
    card.reset().unwrap();
    assert_eq!(card.atr(), EchoSlot::ATR);
    assert_eq!(
        card.transmit(&[0x00, 0xCA, 0x00, 0x01, 0x00]).unwrap(),
        [0x00, 0x00, 0x00, 0x01, 0x90, 0x00]
    );

    // While we hold the card shared, nobody gets it exclusively.
    let excl = PcscTransport::connect(&PcscOptions {
        reader: selector.clone(),
        sharing: Sharing::Exclusive,
        protocols: Protocols::Any,
    });
    assert_eq!(excl.unwrap_err(), TransportError::SharingViolation);

    // --- a third-party PC/SC client sees the same card ---------------------
    let list = Command::new("opensc-tool")
        .arg("--list-readers")
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    println!("opensc-tool --list-readers:\n{list}");
    let line = list
        .lines()
        .find(|l| l.contains(&reader))
        .unwrap_or_else(|| panic!("opensc-tool does not list {reader}"));
    assert!(
        line.contains("Yes"),
        "opensc-tool shows no card in {reader}: {line}"
    );
    let index = line.split_whitespace().next().unwrap();
    let atr = Command::new("opensc-tool")
        .args(["-r", index, "-a"])
        .output()
        .unwrap();
    let atr_out = String::from_utf8_lossy(&atr.stdout);
    println!("opensc-tool -r {index} -a:\n{atr_out}");
    assert!(
        atr_out.to_lowercase().contains(&hex_colon(EchoSlot::ATR)),
        "opensc-tool printed {atr_out:?}, stderr {:?}",
        String::from_utf8_lossy(&atr.stderr)
    );

    // --- pulling the card -------------------------------------------------
    let (served, slot) = server.stop();
    assert_eq!(served, Ok(()));
    assert!(slot.power_ons() >= 1, "pcscd never powered the card");
    assert!(slot.resets() >= 1, "the PC/SC reset never reached the card");
    wait_for_removal(&reader, Duration::from_secs(30));
    assert_eq!(
        card.transmit(&select_echo()).unwrap_err(),
        TransportError::CardRemoved
    );
}
