//! `serve_vpcd` against an in-test fake `vpcd`: a TCP listener on
//! 127.0.0.1:0 that plays pcscd's side of the protocol.

use std::net::SocketAddr;
use std::time::Duration;

use kessai_card_io::EchoSlot;
use kessai_card_io::vpcd::{VpcdConfig, VpcdError, serve_vpcd};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::time::timeout;

/// Upper bound for any single step, so a bug fails the test instead of
/// hanging it.
const STEP: Duration = Duration::from_secs(10);

fn config(addr: SocketAddr) -> VpcdConfig {
    VpcdConfig {
        addr,
        max_connect_attempts: 5,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(50),
    }
}

async fn send(s: &mut TcpStream, payload: &[u8]) {
    let mut frame = (payload.len() as u16).to_be_bytes().to_vec();
    frame.extend_from_slice(payload);
    s.write_all(&frame).await.unwrap();
}

async fn recv(s: &mut TcpStream) -> Vec<u8> {
    let mut len = [0u8; 2];
    timeout(STEP, s.read_exact(&mut len))
        .await
        .unwrap()
        .unwrap();
    let mut payload = vec![0u8; usize::from(u16::from_be_bytes(len))];
    timeout(STEP, s.read_exact(&mut payload))
        .await
        .unwrap()
        .unwrap();
    payload
}

async fn accept(l: &TcpListener) -> TcpStream {
    timeout(STEP, l.accept()).await.unwrap().unwrap().0
}

fn select_echo() -> Vec<u8> {
    let mut c = vec![0x00, 0xA4, 0x04, 0x00, EchoSlot::AID.len() as u8];
    c.extend_from_slice(EchoSlot::AID);
    c
}

/// The client task: yields the outcome and the slot for inspection.
type ClientTask = tokio::task::JoinHandle<(Result<(), VpcdError>, EchoSlot)>;

/// Spawns the client with its own slot; returns the shutdown trigger and the
/// task.
fn spawn_client(cfg: VpcdConfig) -> (oneshot::Sender<()>, ClientTask) {
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut slot = EchoSlot::new();
        let r = serve_vpcd(&cfg, &mut slot, async {
            let _ = rx.await;
        })
        .await;
        (r, slot)
    });
    (tx, task)
}

#[tokio::test]
async fn full_pcscd_style_exchange() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (stop, task) = spawn_client(config(listener.local_addr().unwrap()));
    let mut s = accept(&listener).await;

    // Presence poll before any power-on.
    send(&mut s, &[0x04]).await;
    assert_eq!(recv(&mut s).await, EchoSlot::ATR);
    // pcscd powers the card up, then reads the ATR.
    send(&mut s, &[0x01]).await;
    send(&mut s, &[0x04]).await;
    assert_eq!(recv(&mut s).await, EchoSlot::ATR);
    // APDUs.
    send(&mut s, &select_echo()).await;
    assert_eq!(recv(&mut s).await, [0x90, 0x00]);
    send(&mut s, &[0x80, 0xEE, 0x00, 0x00, 0x02, 0xCA, 0xFE]).await;
    assert_eq!(recv(&mut s).await, [0xCA, 0xFE, 0x90, 0x00]);
    // Reset: counter restarts (GET DATA counts itself).
    send(&mut s, &[0x02]).await;
    send(&mut s, &[0x00, 0xCA, 0x00, 0x01, 0x00]).await;
    assert_eq!(recv(&mut s).await, [0, 0, 0, 1, 0x90, 0x00]);
    // Empty and unknown control messages are ignored, the session goes on.
    send(&mut s, &[]).await;
    send(&mut s, &[0x03]).await;
    send(&mut s, &[0x04]).await;
    assert_eq!(recv(&mut s).await, EchoSlot::ATR);
    // Power off: APDUs now meet an unpowered card.
    send(&mut s, &[0x00]).await;
    send(&mut s, &[0x80, 0xEE, 0x00, 0x00]).await;
    assert_eq!(recv(&mut s).await, [0x6F, 0x00]);

    stop.send(()).unwrap();
    let (r, slot) = timeout(STEP, task).await.unwrap().unwrap();
    assert_eq!(r, Ok(()));
    // One probe power-on for the first ATR plus pcscd's power-on.
    assert_eq!(slot.power_ons(), 2);
    assert_eq!(slot.resets(), 1);
    assert!(!slot.is_powered());
}

#[tokio::test]
async fn frames_split_across_segments_and_large_apdus() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (stop, task) = spawn_client(config(listener.local_addr().unwrap()));
    let mut s = accept(&listener).await;
    send(&mut s, &[0x01]).await;

    // One frame dribbled out a byte at a time.
    let apdu = [0x80, 0xEE, 0x00, 0x00, 0x01, 0x77];
    let mut frame = (apdu.len() as u16).to_be_bytes().to_vec();
    frame.extend_from_slice(&apdu);
    for b in frame {
        s.write_all(&[b]).await.unwrap();
        s.flush().await.unwrap();
    }
    assert_eq!(recv(&mut s).await, [0x77, 0x90, 0x00]);

    // An extended-length echo of 60000 bytes: the reply frame is
    // 60002 bytes, close to the 65535 limit.
    let data: Vec<u8> = (0..60000u32).map(|i| (i % 251) as u8).collect();
    let mut cmd = vec![0x80, 0xEE, 0x00, 0x00, 0x00];
    cmd.extend_from_slice(&(data.len() as u16).to_be_bytes());
    cmd.extend_from_slice(&data);
    send(&mut s, &cmd).await;
    let r = recv(&mut s).await;
    assert_eq!(r.len(), 60002);
    assert_eq!(&r[..60000], &data[..]);
    assert_eq!(&r[60000..], [0x90, 0x00]);

    stop.send(()).unwrap();
    let (r, _) = timeout(STEP, task).await.unwrap().unwrap();
    assert_eq!(r, Ok(()));
}

/// pcscd restarting: the connection drops, the card is powered off, the
/// client reconnects and serves again.
#[tokio::test]
async fn reconnects_after_vpcd_goes_away() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (stop, task) = spawn_client(config(listener.local_addr().unwrap()));

    let mut first = accept(&listener).await;
    send(&mut first, &[0x01]).await;
    send(&mut first, &[0x04]).await;
    assert_eq!(recv(&mut first).await, EchoSlot::ATR);
    drop(first);

    let mut second = accept(&listener).await;
    // The card lost power with the connection: an APDU before power-on
    // meets an unpowered card.
    send(&mut second, &[0x80, 0xEE, 0x00, 0x00]).await;
    assert_eq!(recv(&mut second).await, [0x6F, 0x00]);
    send(&mut second, &[0x01]).await;
    send(&mut second, &select_echo()).await;
    assert_eq!(recv(&mut second).await, [0x90, 0x00]);

    stop.send(()).unwrap();
    let (r, slot) = timeout(STEP, task).await.unwrap().unwrap();
    assert_eq!(r, Ok(()));
    assert_eq!(slot.power_ons(), 2);
}

#[tokio::test]
async fn gives_up_with_a_clear_error_when_nobody_listens() {
    // Reserve a port, then free it: connections are refused.
    let addr = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let mut slot = EchoSlot::new();
    let cfg = VpcdConfig {
        max_connect_attempts: 3,
        ..config(addr)
    };
    let err = timeout(STEP, serve_vpcd(&cfg, &mut slot, std::future::pending()))
        .await
        .unwrap()
        .unwrap_err();
    match &err {
        VpcdError::Unreachable {
            addr: a, attempts, ..
        } => {
            assert_eq!(*a, addr);
            assert_eq!(*attempts, 3);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().contains("pcscd"));
}

/// A peer that accepts and hangs up at once, forever, is not a working
/// vpcd: those empty sessions count as failures too.
#[tokio::test]
async fn empty_sessions_count_towards_the_limit() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hangup = tokio::spawn(async move {
        loop {
            let (s, _) = listener.accept().await.unwrap();
            drop(s);
        }
    });
    let mut slot = EchoSlot::new();
    let cfg = VpcdConfig {
        max_connect_attempts: 4,
        ..config(addr)
    };
    let err = timeout(STEP, serve_vpcd(&cfg, &mut slot, std::future::pending()))
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, VpcdError::Unreachable { attempts: 4, .. }));
    hangup.abort();
}

#[tokio::test]
async fn shutdown_while_connected_returns_and_unpowers() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (stop, task) = spawn_client(config(listener.local_addr().unwrap()));
    let mut s = accept(&listener).await;
    send(&mut s, &[0x01]).await;
    send(&mut s, &[0x04]).await;
    assert_eq!(recv(&mut s).await, EchoSlot::ATR);
    stop.send(()).unwrap();
    let (r, slot) = timeout(STEP, task).await.unwrap().unwrap();
    assert_eq!(r, Ok(()));
    assert!(!slot.is_powered());
    // vpcd sees the card go: the connection is closed.
    let mut buf = [0u8; 1];
    assert_eq!(timeout(STEP, s.read(&mut buf)).await.unwrap().unwrap(), 0);
}
