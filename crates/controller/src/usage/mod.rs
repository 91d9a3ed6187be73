//! Usage evidence (docs/usage.md): Azure's own logs read incrementally, attributed to leases by
//! the pure core (`lapse_api::usage`), counted exactly once into `status.usage` through a
//! ledger persisted in the cluster, and findings told as Events, notifications, metrics and
//! audit lines. Off unless a source is enabled.

pub mod ingest;
pub mod ledger;
mod report;
mod rightsize;
pub mod windows;

use std::sync::Arc;

pub use crate::usage_book::{UsageBook, UsageSettings};
pub use report::leased as report_leased;

use crate::context::Context;

/// The ingestion loop: loads the ledger (retrying until it can: starting without it would
/// count twice), hands its pending batches back to the reconcilers, then polls.
pub async fn run(ctx: Arc<Context>) {
    let settings = ctx.settings.usage.clone();
    if !settings.enabled() {
        return;
    }
    let _ = ctx.ready.subscribe().wait_for(|ready| *ready).await;
    let store = ledger::LedgerStore::new(
        ctx.client.clone(),
        &ctx.settings.operator_namespace,
        settings.ledger_name.clone(),
    );
    let ledger = loop {
        match store.load().await {
            Ok(l) => break l,
            Err(e) => {
                tracing::error!(error = %e, "usage ingestion waits for its ledger");
                tokio::time::sleep(settings.poll_every).await;
            }
        }
    };
    ctx.usage.restore(ledger.pending.clone());
    tracing::info!(
        ledger = store.name(),
        sequence = ledger.sequence,
        activity_log = settings.activity_log,
        sign_ins = settings.sign_ins,
        "usage ingestion started"
    );
    let mut ingest = ingest::Ingest {
        ctx: ctx.clone(),
        settings: settings.clone(),
        store,
        ledger,
    };
    let mut ticker = tokio::time::interval(settings.poll_every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if let Err(e) = ingest.round(chrono::Utc::now()).await {
            tracing::warn!(error = %e, "usage ingestion round incomplete; the next resumes");
        }
    }
}
