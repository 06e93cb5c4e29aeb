//! Periodic host work that no request triggers: expiring ledger holds past
//! their expiry, purging retained artefacts past their retention period,
//! and the flows' own sweeps (timeouts).
//! Every step is idempotent and safe to run in several host processes at
//! once (the database decides), so each `kessai serve` runs this loop.

use std::time::Duration;

use crate::state::AppState;

/// How often the loop runs.
pub const PERIOD: Duration = Duration::from_secs(5);

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PassReport {
    /// Ledger holds expired.
    pub holds_expired: usize,
    /// Retained artefacts purged (flow A retention, claims 3 and 10).
    pub retention_purged: u64,
    /// Flow C transactions declined at their deadline (S5, S8, S17).
    pub flow_c_timed_out: usize,
    /// Flow D temporary passwords that expired unused, deleted.
    pub flow_d_expired_passwords: u64,
    /// Flow D passwords marked used whose posting never happened (the
    /// host stopped between the two commits), released for a new try.
    pub flow_d_released_orphans: u64,
}

/// How long a flow D password mark may wait for its ledger posting before
/// the reconciliation treats it as orphaned. Far above a posting's normal
/// latency (milliseconds); a late posting after a release is still safe,
/// since the transfer id is derived from the password id and the ledger
/// accepts one transfer per id.
pub const FLOW_D_ORPHAN_GRACE_MS: i64 = 10_000;

/// One maintenance pass at the host clock's current time.
pub async fn run_once(app: &AppState) -> PassReport {
    let mut report = PassReport::default();
    let now = u64::try_from(app.clock.now_ms()).unwrap_or(0);
    match app.db.ledger().expire_due(now, 1000).await {
        Ok(sweep) => report.holds_expired = sweep.expired.len(),
        Err(e) => tracing::warn!(error = %e, "expiring ledger holds failed; will retry"),
    }
    match crate::routes::flow_a::purge_retention(app).await {
        Ok(n) => report.retention_purged = n,
        Err(e) => tracing::warn!(error = %e, "retention purge failed; will retry"),
    }
    match crate::routes::flow_c::sweep_timeouts(app).await {
        Ok(r) => report.flow_c_timed_out = r.timed_out,
        Err(e) => tracing::warn!(error = %e, "flow C timeout sweep failed; will retry"),
    }
    match kessai_store::flow_d::purge_expired_passwords(&app.db, app.clock.now_ms()).await {
        Ok(n) => report.flow_d_expired_passwords = n,
        Err(e) => tracing::warn!(error = %e, "flow D password purge failed; will retry"),
    }
    match release_flow_d_orphans(app).await {
        Ok(n) => report.flow_d_released_orphans = n,
        Err(e) => tracing::warn!(error = %e, "flow D reconciliation failed; will retry"),
    }
    report
}

/// Flow D settles in two commits (mark the password used, then post the
/// transfer; see `routes::flow_d`). A host that stops between them leaves
/// a used password and no money moved. For passwords still valid, marked
/// longer than [`FLOW_D_ORPHAN_GRACE_MS`] ago, whose transfer is not in the
/// ledger, the mark is released so the POS can key the password in again.
async fn release_flow_d_orphans(app: &AppState) -> Result<u64, kessai_store::StoreError> {
    let now = app.clock.now_ms();
    let candidates =
        kessai_store::flow_d::used_valid_passwords(&app.db, now - FLOW_D_ORPHAN_GRACE_MS, now, 100)
            .await?;
    let mut released = 0;
    for (id, transfer) in candidates {
        let Ok(tid) = transfer.parse::<kessai_ids::TransferId>() else {
            tracing::warn!(
                transfer,
                "flow D password marked with an unreadable transfer id"
            );
            continue;
        };
        if app.db.ledger().transfer(&tid).await?.is_some() {
            continue;
        }
        let n = kessai_store::flow_d::release_password(&app.db, &id, &transfer).await?;
        if n == 1 {
            tracing::warn!(transfer = %tid, "flow D password mark without a posting released");
        }
        released += n;
    }
    Ok(released)
}

/// Runs [`run_once`] every [`PERIOD`] until the task is dropped.
pub async fn run_forever(app: AppState) {
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let r = run_once(&app).await;
        if r != PassReport::default() {
            tracing::info!(?r, "maintenance pass");
        }
    }
}
