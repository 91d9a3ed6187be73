//! A grant deleted and applied again under the same name (a GitOps tool re-creating it from the
//! same manifest) is a new object: it is decided at once, every time. The lanes once missed the
//! new object's events when the old one's were read after it had left the cache (see
//! `crates/controller/src/fanout.rs`), and such a grant sat without a status until something
//! else woke its lane.

use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use kube::ResourceExt;
use kube::api::DeleteParams;
use lapse_api::v1alpha1::{GrantPhase, Window};

use crate::fixtures::*;

fn rfc3339(t: chrono::DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Cycles of delete and re-create; each gives the race another chance.
const CYCLES: usize = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_deleted_and_reapplied_under_its_name_is_decided_at_once_every_time() {
    let w = World::start().await.unwrap();
    w.allow(&["Reader"]).await.unwrap();
    let now = Utc::now();
    // A window already past: each incarnation ends as Expired without touching Azure, so the
    // cycles are only Kubernetes events.
    let mut g = grant(&w, "old", SA).unwrap().role("Reader", &w.storage());
    g.spec.duration = None;
    g.spec.window = Some(Box::new(Window {
        not_before: Some(rfc3339(now - TimeDelta::hours(2))),
        not_after: Some(rfc3339(now - TimeDelta::hours(1))),
    }));
    let mut slowest = Duration::ZERO;
    let mut uids = Vec::new();
    for _ in 0..CYCLES {
        let started = Instant::now();
        w.create(&g).await.unwrap();
        let seen = w.wait_phase("old", GrantPhase::Expired).await.unwrap();
        slowest = slowest.max(started.elapsed());
        uids.push(seen.uid().unwrap_or_default());
        w.grants()
            .delete("old", &DeleteParams::default())
            .await
            .unwrap();
        w.wait_gone("old").await.unwrap();
    }
    uids.dedup();
    assert_eq!(uids.len(), CYCLES, "each incarnation is its own object");
    assert!(w.calls("PUT", "/subscriptions/").is_empty());
    eprintln!("{CYCLES} re-created grants each decided; slowest {slowest:?}");
}
