//! Persistence for kessai: SQLite (embedded default) and PostgreSQL.
//!
//! What it does:
//! - [`Db`] opens (creating on first run) and migrates the database:
//!   `sqlite://PATH`, a plain data directory, or `postgres://...`; see
//!   [`db`] for how other modules run queries on either backend.
//! - [`Ledger`] stores the double-entry ledger of [`kessai_ledger`]:
//!   accounts, append-only transfers with their legs and evidence digests,
//!   idempotent submission by transfer id, two-phase transfers, expiry
//!   sweeps, and **group commit** (many concurrent submissions share one
//!   durable commit). Exactly-once holds across processes sharing one
//!   PostgreSQL because it rests on keys and row locks, not memory.
//! - [`audit::audit`] recomputes every balance from the transfers and
//!   reports typed findings; [`bench::bench_ledger`] measures throughput.
//!
//! What it does not do: decide payments (issuer logic), read the clock
//! (callers pass `now_ms`; only the benchmark reads the clock), or hold
//! secrets.
//!
//! ```
//! # async fn demo() -> Result<(), kessai_store::StoreError> {
//! use kessai_ids::TransferId;
//! use kessai_ledger::{codes, Account, AccountKind, BalanceLimit, Leg, TransferRequest};
//! use kessai_money::Currency;
//!
//! let dir = std::env::temp_dir().join(format!("kessai-store-doc-{}", std::process::id()));
//! let db = kessai_store::Db::open(dir.to_str().unwrap()).await?;
//! let ledger = db.ledger();
//! let jpy = Currency::from_code("JPY").unwrap();
//! for (id, limit) in [("clearing", BalanceLimit::Unlimited), ("shop", BalanceLimit::MaxNetDebit(0))] {
//!     let a = Account::new(id.parse().unwrap(), AccountKind::IssuerClearing, jpy, limit);
//!     ledger.create_account(&a, 1).await?.unwrap();
//! }
//! let req = TransferRequest::posted(
//!     TransferId::derive("doc", &[b"1"]), jpy, codes::FUNDING,
//!     vec![Leg::debit("clearing".parse().unwrap(), 500), Leg::credit("shop".parse().unwrap(), 500)],
//! );
//! let first = ledger.submit(req.clone(), 2).await?.unwrap();
//! let again = ledger.submit(req, 3).await?.unwrap();
//! assert!(!first.replayed && again.replayed);
//! assert!(kessai_store::audit::audit(&db).await?.is_clean());
//! # db.close().await;
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok(()) }
//! # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod audit;
/// Append-only audit log of security events (lead-owned module).
pub mod audit_log;
pub mod bench;
/// IC cards and the host's shadow of them (lead-owned module).
pub mod cards;
pub mod db;
mod error;
/// Evidence store: artefacts by digest (lead-owned module).
pub mod evidence;
/// Flow A (fingerprint device): cards, enrolment codes, devices, key updates.
pub mod flow_a;
/// Flow B: bills settled once, pending card operations, ledger outbox, receipts.
pub mod flow_b;
/// Flow C: phones, cards (keyed PAN index), transaction keys, message queue.
pub mod flow_c;
/// Flow D: challenges, cards, terminals, temporary passwords, receipt queue.
pub mod flow_d;
/// Sessions, attempt counters, once markers, monotonic counters (lead-owned).
pub mod flow_support;
pub mod idempotency;
pub mod keys;
pub mod ledger;
pub mod registry;

pub use db::{Backend, Db, DbConfig, DbPool, DbTx};
pub use error::StoreError;
pub use ledger::{ExpirySweep, Ledger, TransferResult};
