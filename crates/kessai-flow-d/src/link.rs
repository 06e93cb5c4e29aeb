//! The short-range link between phone and POS (claims 3, 11, 14): a
//! framed, authenticated transport over any byte-frame carrier ([`Link`]:
//! TCP on loopback in the demo, BLE or NFC in a device).
//!
//! # Handshake
//!
//! The POS publishes a link key (X25519, shown at the till as its key
//! reference and fingerprint). The phone draws a 32-byte link secret and
//! HPKE-seals it to that key (COSE_Encrypt0, blob kind `flow-d-link-key`);
//! that sealed hello is the first frame. Only the POS can open it, so the
//! phone knows it talks to that POS. The POS does not learn who the phone
//! is: customers are authenticated end to end by their card cryptogram and
//! PIN, which the POS relays but cannot read or forge.
//!
//! # Frames
//!
//! `length (4, big-endian, of what follows) ‖ sequence (8) ‖ payload ‖ tag (16)`,
//! tag = first 16 bytes of HMAC-SHA-256(direction key, sequence ‖ payload),
//! direction keys = HMAC-SHA-256(secret, `"kessai/flow-d/link/phone->pos"` or
//! `"…/pos->phone"`). Each direction counts from 0; a frame with any other
//! sequence number (replayed, dropped, reordered) or a wrong tag is refused
//! and the link must be closed. Frames are authenticated, not encrypted:
//! everything secret in them (PAN, PIN block) is already sealed to the host.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::rc::Rc;

use hmac::{Hmac, KeyInit, Mac};
use kessai_crypto::cose::{self, BlobKind};
use kessai_crypto::hpke::{HpkeKeyPair, HpkePublicKey};
use kessai_ids::KeyRef;
use rand_core::CryptoRng;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

use crate::FlowDError;

/// Largest payload a frame may carry.
pub const MAX_FRAME_PAYLOAD: usize = 64 * 1024;
const TAG_LEN: usize = 16;

/// A carrier of whole frames (the lead's TCP adapter, a BLE characteristic,
/// an in-memory pair in tests).
pub trait Link {
    /// Sends one frame. [`FlowDError::LinkClosed`] if the peer is gone.
    fn send(&mut self, frame: &[u8]) -> Result<(), FlowDError>;
    /// The next received frame, `Ok(None)` if none is waiting,
    /// [`FlowDError::LinkClosed`] if the peer is gone and nothing is left.
    fn recv(&mut self) -> Result<Option<Vec<u8>>, FlowDError>;
}

struct LinkKey;
impl BlobKind for LinkKey {
    const TYPE: &'static str = "flow-d-link-key";
    const VERSION: u32 = 1;
}

/// Which end of the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The customer's phone.
    Phone,
    /// The merchant's POS.
    Pos,
}

/// One end's keys and sequence counters.
pub struct LinkSession {
    tx_key: Zeroizing<[u8; 32]>,
    rx_key: Zeroizing<[u8; 32]>,
    tx_seq: u64,
    rx_seq: u64,
}

impl fmt::Debug for LinkSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "LinkSession(tx {}, rx {}, redacted)",
            self.tx_seq, self.rx_seq
        )
    }
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

const AAD: &[u8] = b"kessai/flow-d/link/v1";

impl LinkSession {
    fn from_secret(secret: &[u8; 32], role: Role) -> Self {
        let p2s = Zeroizing::new(hmac(secret, &[b"kessai/flow-d/link/phone->pos"]));
        let s2p = Zeroizing::new(hmac(secret, &[b"kessai/flow-d/link/pos->phone"]));
        let (tx_key, rx_key) = match role {
            Role::Phone => (p2s, s2p),
            Role::Pos => (s2p, p2s),
        };
        Self {
            tx_key,
            rx_key,
            tx_seq: 0,
            rx_seq: 0,
        }
    }

    /// Phone side: a new session and the hello frame to send first.
    pub fn phone_open(
        pos_key: &HpkePublicKey,
        pos_key_ref: &KeyRef,
        rng: &mut impl CryptoRng,
    ) -> Result<(Self, Vec<u8>), FlowDError> {
        let mut secret = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut secret[..]);
        let hello = cose::seal_bytes::<LinkKey>(&secret[..], pos_key, pos_key_ref, AAD, rng)?;
        Ok((Self::from_secret(&secret, Role::Phone), hello))
    }

    /// POS side: accepts a hello frame.
    pub fn pos_accept(
        hello: &[u8],
        pos_key: &HpkeKeyPair,
        pos_key_ref: &KeyRef,
    ) -> Result<Self, FlowDError> {
        let opened = cose::open_bytes::<LinkKey, &HpkeKeyPair>(
            hello,
            |r| (r == pos_key_ref).then_some(pos_key),
            AAD,
        )
        .map_err(|_| FlowDError::BadFrame("hello does not open"))?;
        let mut secret: [u8; 32] = opened
            .payload()
            .expose()
            .try_into()
            .map_err(|_| FlowDError::BadFrame("hello secret length"))?;
        let s = Self::from_secret(&secret, Role::Pos);
        secret.zeroize();
        Ok(s)
    }

    /// Frames `payload` for sending.
    pub fn seal(&mut self, payload: &[u8]) -> Result<Vec<u8>, FlowDError> {
        if payload.len() > MAX_FRAME_PAYLOAD {
            return Err(FlowDError::BadFrame("payload too large"));
        }
        let seq = self.tx_seq.to_be_bytes();
        let tag = hmac(&self.tx_key[..], &[&seq, payload]);
        let mut out = Vec::with_capacity(4 + 8 + payload.len() + TAG_LEN);
        out.extend_from_slice(&((8 + payload.len() + TAG_LEN) as u32).to_be_bytes());
        out.extend_from_slice(&seq);
        out.extend_from_slice(payload);
        out.extend_from_slice(&tag[..TAG_LEN]);
        self.tx_seq += 1;
        Ok(out)
    }

    /// Checks and unframes one received frame.
    pub fn open(&mut self, frame: &[u8]) -> Result<Vec<u8>, FlowDError> {
        if frame.len() < 4 + 8 + TAG_LEN {
            return Err(FlowDError::BadFrame("frame too short"));
        }
        let len = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
        if len != frame.len() - 4 || len > 8 + MAX_FRAME_PAYLOAD + TAG_LEN {
            return Err(FlowDError::BadFrame("frame length"));
        }
        let seq = &frame[4..12];
        let payload = &frame[12..frame.len() - TAG_LEN];
        let tag = &frame[frame.len() - TAG_LEN..];
        let expect = hmac(&self.rx_key[..], &[seq, payload]);
        if !bool::from(expect[..TAG_LEN].ct_eq(tag)) {
            return Err(FlowDError::BadFrame("authentication failed"));
        }
        if seq != self.rx_seq.to_be_bytes() {
            return Err(FlowDError::BadFrame("out of sequence"));
        }
        self.rx_seq += 1;
        Ok(payload.to_vec())
    }
}

#[derive(Debug, Default)]
struct Pipe {
    to_a: VecDeque<Vec<u8>>,
    to_b: VecDeque<Vec<u8>>,
    closed: bool,
}

/// One end of an in-memory link pair (tests, simulations).
#[derive(Debug, Clone)]
pub struct MemLink {
    pipe: Rc<RefCell<Pipe>>,
    is_a: bool,
}

impl MemLink {
    /// Two connected ends.
    pub fn pair() -> (MemLink, MemLink) {
        let pipe = Rc::new(RefCell::new(Pipe::default()));
        (
            MemLink {
                pipe: pipe.clone(),
                is_a: true,
            },
            MemLink { pipe, is_a: false },
        )
    }

    /// Drops the connection (both ends see it closed).
    pub fn close(&self) {
        self.pipe.borrow_mut().closed = true;
    }
}

impl Link for MemLink {
    fn send(&mut self, frame: &[u8]) -> Result<(), FlowDError> {
        let mut p = self.pipe.borrow_mut();
        if p.closed {
            return Err(FlowDError::LinkClosed);
        }
        if self.is_a {
            p.to_b.push_back(frame.to_vec());
        } else {
            p.to_a.push_back(frame.to_vec());
        }
        Ok(())
    }

    fn recv(&mut self) -> Result<Option<Vec<u8>>, FlowDError> {
        let mut p = self.pipe.borrow_mut();
        let q = if self.is_a { &mut p.to_a } else { &mut p.to_b };
        match q.pop_front() {
            Some(f) => Ok(Some(f)),
            None if p.closed => Err(FlowDError::LinkClosed),
            None => Ok(None),
        }
    }
}

/// A link with its session: sends and receives authenticated payloads.
#[derive(Debug)]
pub struct SecureLink<L: Link> {
    link: L,
    session: LinkSession,
}

impl<L: Link> SecureLink<L> {
    /// Wraps an established session.
    pub fn new(link: L, session: LinkSession) -> Self {
        Self { link, session }
    }

    /// Sends one payload.
    pub fn send(&mut self, payload: &[u8]) -> Result<(), FlowDError> {
        let f = self.session.seal(payload)?;
        self.link.send(&f)
    }

    /// Receives one payload if one is waiting.
    pub fn recv(&mut self) -> Result<Option<Vec<u8>>, FlowDError> {
        match self.link.recv()? {
            Some(f) => self.session.open(&f).map(Some),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn setup() -> (SecureLink<MemLink>, SecureLink<MemLink>, MemLink) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let pos_key = HpkeKeyPair::generate(&mut rng);
        let kref: KeyRef = "pos-1-link#1".parse().unwrap();
        let (mut a, mut b) = MemLink::pair();
        let (phone, hello) =
            LinkSession::phone_open(pos_key.public_key(), &kref, &mut rng).unwrap();
        a.send(&hello).unwrap();
        let pos = LinkSession::pos_accept(&b.recv().unwrap().unwrap(), &pos_key, &kref).unwrap();
        let raw = a.clone();
        (SecureLink::new(a, phone), SecureLink::new(b, pos), raw)
    }

    #[test]
    fn frames_round_trip_both_ways() {
        let (mut phone, mut pos, _) = setup();
        phone.send(b"hello pos").unwrap();
        phone.send(b"second").unwrap();
        assert_eq!(pos.recv().unwrap().unwrap(), b"hello pos");
        assert_eq!(pos.recv().unwrap().unwrap(), b"second");
        assert_eq!(pos.recv().unwrap(), None);
        pos.send(b"hello phone").unwrap();
        assert_eq!(phone.recv().unwrap().unwrap(), b"hello phone");
    }

    #[test]
    fn tampered_replayed_and_reflected_frames_are_refused() {
        let (mut phone, mut pos, mut raw) = setup();
        let f = phone.session.seal(b"pay 100").unwrap();
        let mut bad = f.clone();
        bad[13] ^= 1;
        assert_eq!(
            pos.session.open(&bad),
            Err(FlowDError::BadFrame("authentication failed"))
        );
        assert_eq!(pos.session.open(&f).unwrap(), b"pay 100");
        assert_eq!(
            pos.session.open(&f),
            Err(FlowDError::BadFrame("out of sequence"))
        );
        // A frame the phone sent cannot be reflected back to the phone.
        let g = phone.session.seal(b"x").unwrap();
        assert_eq!(
            phone.session.open(&g),
            Err(FlowDError::BadFrame("authentication failed"))
        );
        assert_eq!(
            pos.session.open(&f[..10]),
            Err(FlowDError::BadFrame("frame too short"))
        );
        // A hello under another POS key does not open.
        let mut rng = rand::rngs::StdRng::seed_from_u64(6);
        let other = HpkeKeyPair::generate(&mut rng);
        let kref: KeyRef = "pos-1-link#1".parse().unwrap();
        let (_, hello) = LinkSession::phone_open(other.public_key(), &kref, &mut rng).unwrap();
        let mine = HpkeKeyPair::generate(&mut rng);
        assert!(LinkSession::pos_accept(&hello, &mine, &kref).is_err());
        // Closing is seen by both ends.
        raw.close();
        assert_eq!(phone.send(b"y"), Err(FlowDError::LinkClosed));
        assert_eq!(pos.recv(), Err(FlowDError::LinkClosed));
        let _ = raw.recv();
    }
}
