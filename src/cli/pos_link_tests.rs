//! Transport-level tests of the short-range link POS (`serve_link`, issue 7,
//! "bad input"): a dropped link mid-session and a phone that vanishes after
//! the POS submitted the sale, through the real TCP carrier.
//!
//! Each test starts the demo's embedded host (fresh SQLite data dir, real
//! HTTP on 127.0.0.1), registers a merchant, a terminal and a few cards,
//! runs `serve_link` in-process on a loopback listener and plays the phones
//! with raw link frames (`LinkSession` + `write_frame` / `read_frame`), so a
//! phone can drop its TCP stream at the exact protocol step. What is
//! asserted is what can be observed from outside the POS: receipts printed
//! (the `print` closure), the host's ledger and receipt queues, and the POS
//! answering (or refusing) other phones. Nothing sleeps: every wait is on
//! an event, under a `timeout` that only bounds it and fails the test.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use base64::Engine as _;
use kessai_card_emu::Relay;
use kessai_crypto::hpke::{HpkeKeyPair, HpkePublicKey};
use kessai_flow_d::artefacts::{LineItem, Receipt, verify_receipt};
use kessai_flow_d::host::{HostChallenge, HostPublic};
use kessai_flow_d::link::LinkSession;
use kessai_flow_d::phone::{CustomerVerification, build_authorization};
use kessai_flow_d::pos::{PhoneToPos, PosToPhone, SessionId};
use kessai_ids::{AccountId, CardId, KeyRef, TransferId};
use kessai_money::{Currency, Money};
use kessai_secrets::Pin;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{LinkPos, read_frame, serve_link, write_frame};
use crate::cli::phone::{host_public, pay_link};
use crate::cli::wallet::{CardSpec, Http, open_card};
use crate::demo::DemoCtx;

use crate::demo::flow_d::PIN;
const TERMINAL: &str = "till-link";
/// Upper bound for one awaited event (the machine may be busy building).
const BOUND: Duration = Duration::from_secs(30);
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Awaits `f`, failing the test if it takes longer than [`BOUND`].
async fn within<T>(what: &str, f: impl Future<Output = T>) -> anyhow::Result<T> {
    tokio::time::timeout(BOUND, f)
        .await
        .map_err(|_| anyhow::anyhow!("timed out waiting for {what}"))
}

/// A Luhn-valid test card number for card `i` (own series).
fn test_pan(i: usize) -> String {
    crate::demo::flow_d::test_pan(700_000, i)
}

use crate::demo::flow_d::goods;

fn sum(goods: &[LineItem]) -> i64 {
    goods
        .iter()
        .map(|l| l.unit_price_minor * i64::from(l.quantity))
        .sum()
}

fn pin() -> anyhow::Result<CustomerVerification> {
    Ok(CustomerVerification::OnlinePin(Pin::new(PIN)?))
}

/// The transfer id a printed receipt names (its `txn` line).
fn printed_txn(text: &str) -> anyhow::Result<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("txn"))
        .map(|s| s.trim().to_owned())
        .context("printed receipt without a txn line")
}

/// A host, a link POS serving `baskets` and the cards of `cards` phones.
struct Till {
    ctx: DemoCtx,
    host: Http,
    public: HostPublic,
    funding: AccountId,
    cards: Vec<(CardId, PathBuf)>,
    baskets: Vec<(String, Vec<LineItem>)>,
    addr: String,
    key_ref: KeyRef,
    key: HpkePublicKey,
    /// Every receipt text the POS printed, in order.
    printed: mpsc::UnboundedReceiver<String>,
    pos: JoinHandle<anyhow::Result<usize>>,
}

async fn issue_card(ctx: &DemoCtx, i: usize, funding: &AccountId) -> anyhow::Result<CardId> {
    let id: CardId = format!("link-card-{i}").parse()?;
    let pan = test_pan(i);
    crate::demo::flow_d::issue(ctx, id.as_str(), Some(&pan), None).await?;
    ctx.admin_post(
        "/v1/flow-d/admin/cards",
        json!({"card_id": id.to_string(), "pan": pan, "expiry_yymm": "3012",
               "funding_account": funding.to_string(), "currency": "JPY", "pin": PIN}),
    )
    .await?;
    Ok(id)
}

impl Till {
    async fn start(cards: usize, baskets: Vec<(String, Vec<LineItem>)>) -> anyhow::Result<Till> {
        let ctx = DemoCtx::start(None, kessai_host::settings::Settings::default()).await?;
        let shop_key = kessai_crypto::sign::SigningKey::from_seed(&[7; 32]);
        ctx.admin_post(
            "/v1/admin/merchants",
            json!({"id": "shop-link", "kind": "store", "name": "Shop Link", "currency": "JPY",
                   "public_key": B64.encode(shop_key.verifying_key().to_bytes())}),
        )
        .await?;
        let holder = ctx
            .admin_post(
                "/v1/admin/cardholders",
                json!({"id": "hanako", "name": "Hanako", "currency": "JPY",
                       "credit_limit_minor": 50_000}),
            )
            .await?;
        let funding: AccountId = holder["funding_account"]["id"]
            .as_str()
            .context("funding account")?
            .parse()?;
        ctx.admin_post(
            "/v1/flow-d/admin/terminals",
            json!({"terminal_id": TERMINAL, "store_id": "shop-link"}),
        )
        .await?;
        let mut ids = Vec::new();
        for i in 0..cards {
            let id = issue_card(&ctx, i, &funding).await?;
            let path = ctx.work_dir.join(format!("{id}.card"));
            ids.push((id, path));
        }
        let host = Http::new(&ctx.base_url);
        let public = host_public(&host).await?;
        let key = HpkeKeyPair::generate(&mut rand::rng());
        let key_ref: KeyRef = format!("{TERMINAL}-link#1").parse()?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let pub_key = key.public_key().clone();
        let (print_tx, printed) = mpsc::unbounded_channel();
        let pos = tokio::spawn(serve_link(
            listener,
            LinkPos {
                host: host.clone(),
                public: public.clone(),
                terminal: TERMINAL.parse()?,
                baskets: baskets.clone(),
                currency: Currency::from_code("JPY")?,
                key,
                key_ref: key_ref.clone(),
            },
            move |text| {
                let _ = print_tx.send(text.to_owned());
            },
        ));
        let till = Till {
            ctx,
            host,
            public,
            funding,
            cards: ids,
            baskets,
            addr,
            key_ref,
            key: pub_key,
            printed,
            pos,
        };
        ensure!(
            till.settlements().await?.is_empty(),
            "fresh ledger has transfers"
        );
        Ok(till)
    }

    fn basket(&self, name: &str) -> anyhow::Result<&[LineItem]> {
        self.baskets
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, g)| g.as_slice())
            .context("no such basket")
    }

    /// Every ledger transfer touching the cardholder's funding account:
    /// (transfer id, amount moved on that account).
    async fn settlements(&self) -> anyhow::Result<Vec<(TransferId, i64)>> {
        let rows = self
            .ctx
            .app
            .db
            .ledger()
            .transfers_for_account(&self.funding, 0, 1_000)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(_, r)| {
                let moved = r
                    .legs
                    .iter()
                    .filter(|l| l.account == self.funding)
                    .map(|l| l.amount_minor)
                    .sum();
                (r.id, moved)
            })
            .collect())
    }

    /// The funding account's posted balance and pending debits.
    async fn balance(&self) -> anyhow::Result<(i64, i64)> {
        let a = self
            .ctx
            .app
            .db
            .ledger()
            .account(&self.funding)
            .await?
            .context("funding account")?;
        Ok((
            a.balances.credits_posted - a.balances.debits_posted,
            a.balances.debits_pending,
        ))
    }

    /// How many receipts the host queued for this terminal and for a card's
    /// phone (claims 8, 15).
    async fn queued_receipts(&self, card: Option<&CardId>) -> anyhow::Result<usize> {
        let path = match card {
            Some(c) => format!("/v1/flow-d/cards/{c}/receipts"),
            None => format!("/v1/flow-d/terminals/{TERMINAL}/receipts"),
        };
        let v = self.host.get(&path).await?;
        v.as_array().map(Vec::len).context("receipt list")
    }

    /// Fails if the POS printed anything not yet taken from the channel.
    fn assert_nothing_printed(&mut self) -> anyhow::Result<()> {
        match self.printed.try_recv() {
            Ok(t) => bail!("unexpected receipt printed:\n{t}"),
            Err(_) => Ok(()),
        }
    }

    /// The next receipt the POS prints.
    async fn next_print(&mut self) -> anyhow::Result<String> {
        within("a printed receipt", self.printed.recv())
            .await?
            .context("the POS stopped without printing")
    }

    /// The POS still serves: another phone pays `basket` with card `card`
    /// through the real phone adapter (`kessai phone pay-link`'s code) and
    /// the POS prints that receipt.
    async fn serves_another_phone(&mut self, card: usize, basket: &str) -> anyhow::Result<Receipt> {
        let r = self.pay_with_phone_adapter(card, basket).await?;
        let text = self.next_print().await?;
        ensure!(printed_txn(&text)? == r.transfer_id.to_string(), "{text}");
        Ok(r)
    }

    /// True if a new phone's Hello for `basket` is refused (it is paid).
    async fn refuses_basket(&self, basket: &str) -> anyhow::Result<bool> {
        let mut p = RawPhone::connect(self).await?;
        Ok(p.hello(basket).await?.is_none())
    }

    /// A phone paying `basket` with card `card` through the real phone
    /// adapter (`kessai phone pay-link`'s code).
    async fn pay_with_phone_adapter(&self, card: usize, basket: &str) -> anyhow::Result<Receipt> {
        let (t, _) = open_card(&CardSpec::State(self.cards[card].1.clone()), None)?;
        let mut card = Relay::new(t);
        within(
            "pay-link",
            pay_link(
                &self.addr,
                &self.key_ref,
                &self.key,
                &self.public,
                &mut card,
                basket,
                &pin()?,
            ),
        )
        .await?
    }

    /// Waits for `serve_link` to end (every basket paid); its answer and
    /// every receipt printed since the last [`Till::next_print`] (the print
    /// channel closes when `serve_link` returns).
    async fn finish(&mut self) -> anyhow::Result<(usize, Vec<String>)> {
        let n = within("serve_link to return", &mut self.pos).await???;
        let mut rest = Vec::new();
        while let Some(t) = within("the print channel to close", self.printed.recv()).await? {
            rest.push(t);
        }
        Ok((n, rest))
    }
}

/// A phone played with raw link frames over TCP.
struct RawPhone {
    stream: TcpStream,
    link: LinkSession,
}

/// What the POS showed the phone after its Hello.
struct Offer {
    session: SessionId,
    challenge: HostChallenge,
    amount: Money,
    goods: Vec<LineItem>,
}

impl RawPhone {
    /// Opens the link: TCP connect and the sealed hello frame.
    async fn connect(t: &Till) -> anyhow::Result<RawPhone> {
        let mut stream = within("connect", TcpStream::connect(&t.addr)).await??;
        // Every frame leaves the phone when `write_frame` returns (no Nagle
        // hold-back of the frame after its length prefix), so a phone that
        // vanishes "after sending" has really sent; with an abortive close
        // (RST) a held-back segment would be discarded by the phone's own
        // kernel and never reach the POS.
        stream.set_nodelay(true)?;
        let (link, hello) = LinkSession::phone_open(&t.key, &t.key_ref, &mut rand::rng())?;
        write_frame(&mut stream, &hello).await?;
        Ok(RawPhone { stream, link })
    }

    async fn send(&mut self, m: &PhoneToPos) -> anyhow::Result<()> {
        let f = self.link.seal(&serde_json::to_vec(m)?)?;
        write_frame(&mut self.stream, &f).await?;
        Ok(())
    }

    /// The POS's next message; `None` if the POS closed the link.
    async fn recv(&mut self) -> anyhow::Result<Option<PosToPhone>> {
        match within("the POS", read_frame(&mut self.stream)).await? {
            Ok(Some(f)) => Ok(Some(serde_json::from_slice(&self.link.open(&f)?)?)),
            Ok(None) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Says Hello for `basket`: the offer, or `None` if the POS refused
    /// (closed the link).
    async fn hello(&mut self, basket: &str) -> anyhow::Result<Option<Offer>> {
        self.send(&PhoneToPos::Hello {
            basket: basket.into(),
        })
        .await?;
        match self.recv().await? {
            Some(PosToPhone::Challenge {
                session,
                challenge,
                amount,
                goods,
            }) => Ok(Some(Offer {
                session,
                challenge,
                amount,
                goods,
            })),
            None => Ok(None),
            Some(other) => bail!("expected a challenge, got {other:?}"),
        }
    }

    /// Opens a session for `basket`, trying again while the POS refuses the
    /// Hello. The basket reopens when the POS handles a dropped link, which
    /// arrives from another connection's task: a Hello that overtakes it is
    /// refused (the POS closes that link) and the phone simply reconnects.
    /// Every try waits for the POS's answer; [`BOUND`] bounds them all.
    async fn open_session(t: &Till, basket: &str) -> anyhow::Result<(RawPhone, Offer)> {
        within("the basket to reopen", async {
            loop {
                let mut p = RawPhone::connect(t).await?;
                if let Some(o) = p.hello(basket).await? {
                    return Ok((p, o));
                }
            }
        })
        .await?
    }

    /// Builds the card authentication for the offer with card `card` and
    /// sends it.
    async fn card_auth(&mut self, t: &Till, card: usize, o: &Offer) -> anyhow::Result<()> {
        let (tr, _) = open_card(&CardSpec::State(t.cards[card].1.clone()), None)?;
        let request = build_authorization(
            &mut Relay::new(tr),
            &t.public,
            &o.challenge,
            o.amount,
            &pin()?,
            &mut rand::rng(),
        )
        .map_err(|e| anyhow::anyhow!("card: {e}"))?;
        self.send(&PhoneToPos::CardAuth {
            session: o.session,
            request,
        })
        .await
    }

    async fn expect_authorized(&mut self, o: &Offer) -> anyhow::Result<()> {
        match self.recv().await? {
            Some(PosToPhone::Authorized { session }) if session == o.session => Ok(()),
            other => bail!("expected authorized, got {other:?}"),
        }
    }

    async fn purchase(&mut self, o: &Offer) -> anyhow::Result<()> {
        self.send(&PhoneToPos::Purchase {
            session: o.session,
            amount: o.amount,
            goods: o.goods.clone(),
        })
        .await
    }

    async fn expect_receipt(&mut self, t: &Till, o: &Offer) -> anyhow::Result<Receipt> {
        match self.recv().await? {
            Some(PosToPhone::Receipt { session, receipt }) if session == o.session => {
                verify_receipt(&receipt, &t.public.receipt_key_ref, &t.public.receipt_key)
                    .map_err(|e| anyhow::anyhow!("receipt: {e}"))
            }
            other => bail!("expected the receipt, got {other:?}"),
        }
    }

    /// The whole payment with raw frames.
    async fn pay(t: &Till, card: usize, basket: &str) -> anyhow::Result<Receipt> {
        let (mut p, o) = RawPhone::open_session(t, basket).await?;
        ensure!(
            o.goods == t.basket(basket)? && o.amount.amount_minor == sum(&o.goods),
            "offer is not the basket"
        );
        p.card_auth(t, card, &o).await?;
        p.expect_authorized(&o).await?;
        p.purchase(&o).await?;
        p.expect_receipt(t, &o).await
    }
}

/// Where the first phone's link drops.
#[derive(Debug, Clone, Copy)]
enum DropAt {
    /// Challenge received, no CardAuth sent.
    BeforeCardAuth,
    /// CardAuth sent; the link drops while the host authorizes.
    AfterCardAuth,
    /// Authorized received, no Purchase sent.
    BeforePurchase,
}

/// Issue 7, "dropped short-range link mid-session": nothing settles for the
/// dropped session, the POS keeps serving, and the same basket is then paid
/// by another phone exactly once.
async fn dropped_link(at: DropAt) -> anyhow::Result<()> {
    let contested = goods(&[("rice ball", 2, 150), ("tea", 1, 130)]);
    let other = goods(&[("bread", 1, 240)]);
    let mut t = Till::start(
        3,
        vec![
            ("b-drop".into(), contested.clone()),
            ("b-other".into(), other.clone()),
        ],
    )
    .await?;

    // Phone 0 opens the link, says Hello, gets the challenge ...
    let (mut p0, o0) = RawPhone::open_session(&t, "b-drop").await?;
    ensure!(o0.goods == contested && o0.amount.amount_minor == 430);
    match at {
        DropAt::BeforeCardAuth => {}
        DropAt::AfterCardAuth => p0.card_auth(&t, 0, &o0).await?,
        DropAt::BeforePurchase => {
            p0.card_auth(&t, 0, &o0).await?;
            p0.expect_authorized(&o0).await?;
        }
    }
    // ... and its TCP connection drops.
    drop(p0);

    // Another phone can open a session for the same basket: the POS ended
    // the dropped one (and is still serving).
    let (mut p1, o1) = RawPhone::open_session(&t, "b-drop").await?;
    ensure!(o1.session != o0.session, "the dropped session was reused");
    // Nothing settled and nothing printed for the dropped session.
    t.assert_nothing_printed()?;
    ensure!(
        t.settlements().await?.is_empty(),
        "{at:?}: the dropped session settled"
    );
    ensure!(t.balance().await? == (0, 0), "{at:?}: ledger moved");
    ensure!(t.queued_receipts(None).await? == 0);
    ensure!(t.queued_receipts(Some(&t.cards[0].0)).await? == 0);

    // Phone 1 pays the basket.
    p1.card_auth(&t, 1, &o1).await?;
    p1.expect_authorized(&o1).await?;
    p1.purchase(&o1).await?;
    let r1 = p1.expect_receipt(&t, &o1).await?;
    ensure!(r1.goods == contested && r1.amount.amount_minor == 430);
    let text = t.next_print().await?;
    ensure!(printed_txn(&text)? == r1.transfer_id.to_string(), "{text}");
    t.assert_nothing_printed()?;
    let s = t.settlements().await?;
    ensure!(
        s == vec![(r1.transfer_id, 430)],
        "{at:?}: settlements {s:?}"
    );
    ensure!(t.balance().await? == (-430, 0), "{at:?}: ledger");
    ensure!(t.queued_receipts(Some(&t.cards[1].0)).await? == 1);

    // Exactly once: the paid basket is refused to a third phone ...
    ensure!(
        t.refuses_basket("b-drop").await?,
        "{at:?}: a paid basket was offered again"
    );
    // ... and the POS still serves other phones (real phone adapter).
    let r2 = t.serves_another_phone(2, "b-other").await?;
    ensure!(r2.goods == other);

    let (n, rest) = t.finish().await?;
    ensure!(n == 2 && rest.is_empty(), "{at:?}: {n} receipts, {rest:?}");
    ensure!(t.settlements().await?.len() == 2, "{at:?}: transfers");
    ensure!(t.balance().await? == (-430 - 240, 0), "{at:?}: ledger");
    ensure!(
        t.queued_receipts(None).await? == 2,
        "{at:?}: terminal queue"
    );
    ensure!(t.queued_receipts(Some(&t.cards[0].0)).await? == 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_link_before_card_auth_settles_nothing() -> anyhow::Result<()> {
    dropped_link(DropAt::BeforeCardAuth).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_link_while_authorizing_settles_nothing() -> anyhow::Result<()> {
    dropped_link(DropAt::AfterCardAuth).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_link_before_purchase_settles_nothing() -> anyhow::Result<()> {
    dropped_link(DropAt::BeforePurchase).await
}

/// How the first phone vanishes right after sending Purchase.
#[derive(Debug, Clone, Copy)]
enum Vanish {
    /// Closes its TCP stream (FIN).
    Close,
    /// Aborts it (RST, as a killed app may).
    Reset,
    /// Stays connected but never reads again (out of range, frozen).
    Silent,
}

/// Issue 7, "phone that vanishes after the POS submitted": the POS still
/// settles exactly once, prints exactly one receipt, keeps serving.
async fn vanished_phone(how: Vanish) -> anyhow::Result<()> {
    let sale = goods(&[("umbrella", 1, 1_200), ("towel", 2, 300)]);
    let other = goods(&[("milk", 1, 210)]);
    let mut t = Till::start(
        3,
        vec![
            ("b-gone".into(), sale.clone()),
            ("b-other".into(), other.clone()),
        ],
    )
    .await?;

    let (mut p0, o0) = RawPhone::open_session(&t, "b-gone").await?;
    p0.card_auth(&t, 0, &o0).await?;
    p0.expect_authorized(&o0).await?;
    p0.purchase(&o0).await?;
    let silent = match how {
        Vanish::Close => {
            drop(p0);
            None
        }
        Vanish::Reset => {
            p0.stream.set_zero_linger()?;
            drop(p0);
            None
        }
        Vanish::Silent => Some(p0),
    };

    // The POS settles and prints exactly one receipt for the basket.
    let text = t.next_print().await?;
    let txn = printed_txn(&text)?;
    ensure!(text.contains(&format!("terminal {TERMINAL}")), "{text}");
    let s = t.settlements().await?;
    ensure!(
        s.len() == 1 && s[0].0.to_string() == txn && s[0].1 == 1_800,
        "{how:?}: settlements {s:?}, printed {txn}"
    );
    ensure!(t.balance().await? == (-1_800, 0), "{how:?}: ledger");
    ensure!(t.queued_receipts(None).await? == 1);
    // The vanished phone gets its receipt from the host's push (claim 15).
    ensure!(t.queued_receipts(Some(&t.cards[0].0)).await? == 1);

    // Nothing is settled twice: the basket is paid, another phone's Hello
    // for it is refused.
    ensure!(
        t.refuses_basket("b-gone").await?,
        "{how:?}: a paid basket was offered again"
    );
    t.assert_nothing_printed()?;

    // The POS keeps serving other phones (real phone adapter).
    let r = t.serves_another_phone(2, "b-other").await?;
    ensure!(r.goods == other);

    // It returns (every basket paid) without hanging on the vanished phone.
    let (n, rest) = t.finish().await?;
    ensure!(n == 2 && rest.is_empty(), "{how:?}: {n} receipts, {rest:?}");
    ensure!(t.settlements().await?.len() == 2, "{how:?}: transfers");
    ensure!(t.balance().await? == (-1_800 - 210, 0), "{how:?}: ledger");
    ensure!(
        t.queued_receipts(None).await? == 2,
        "{how:?}: terminal queue"
    );
    ensure!(t.queued_receipts(Some(&t.cards[0].0)).await? == 1);
    drop(silent);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_closing_after_purchase_is_settled_once() -> anyhow::Result<()> {
    vanished_phone(Vanish::Close).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_resetting_after_purchase_is_settled_once() -> anyhow::Result<()> {
    vanished_phone(Vanish::Reset).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_going_silent_after_purchase_is_settled_once() -> anyhow::Result<()> {
    vanished_phone(Vanish::Silent).await
}

/// The raw-frame phone of these tests pays a basket like the real one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_frame_phone_pays_a_basket() -> anyhow::Result<()> {
    let sale = goods(&[("pen", 3, 120)]);
    let mut t = Till::start(1, vec![("b-1".into(), sale.clone())]).await?;
    let r = RawPhone::pay(&t, 0, "b-1").await?;
    ensure!(r.goods == sale && r.amount.amount_minor == 360);
    let text = t.next_print().await?;
    ensure!(printed_txn(&text)? == r.transfer_id.to_string());
    let (n, rest) = t.finish().await?;
    ensure!(n == 1 && rest.is_empty());
    ensure!(t.settlements().await? == vec![(r.transfer_id, 360)]);
    Ok(())
}
