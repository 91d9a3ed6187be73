//! `ExpiringSoon` notifications: a lease that ends within `LAPSE_NOTIFY_EXPIRING_BEFORE` is
//! announced once per expiry, saying how much time is left, whether its policy still allows an
//! extension (`maxDuration`, `maxExtensions`, `activeHours`) and the `kubectl lapse extend`
//! command that asks for it (an extension moves the expiry, and warns again before the new
//! one). Its own small loop over the grant caches, so no reconcile has to wake up for it.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use kube::ResourceExt;
use lapse_api::policy::extension_outlook;
use lapse_api::v1alpha1::GrantPhase;

use crate::context::Context;
use crate::notify::{GrantRecord, Kind, Notification, repeat_key};

/// How often the caches are looked at, at most; shorter lead times look more often.
const MAX_TICK: Duration = Duration::from_secs(15);

pub async fn run(ctx: Arc<Context>) {
    let Some(before) = ctx.notifier.expiring_before else {
        return;
    };
    let _ = ctx.ready.subscribe().wait_for(|ready| *ready).await;
    let tick = (before / 4).clamp(Duration::from_millis(500), MAX_TICK);
    let lead = chrono::TimeDelta::from_std(before).unwrap_or(chrono::TimeDelta::minutes(10));
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let now = Utc::now();
        let ending_soon = |phase: Option<GrantPhase>, expires: Option<chrono::DateTime<Utc>>| {
            phase == Some(GrantPhase::Active) && expires.is_some_and(|e| now < e && e - now <= lead)
        };
        for g in ctx.grants.state() {
            // The cache's summary first; the grant itself only for the few leases about to end.
            let summary = g.summary();
            if summary.revoked || !summary.sealed || !ending_soon(summary.phase, summary.expires_at)
            {
                continue;
            }
            let Some(g) = g.unpacked("expiring-soon notifications") else {
                continue;
            };
            // Sealed: the summary's seal check was of this status.
            let Some(st) = g.status.as_ref() else {
                continue;
            };
            let Some(expires) = st.expires_at else {
                continue;
            };
            let uid = g.uid().unwrap_or_default();
            let kind = Kind::ExpiringSoon;
            if !ctx.notifier.first(
                &uid,
                kind.as_str(),
                &repeat_key(kind, g.metadata.generation, st),
            ) {
                continue;
            }
            let left = (expires - now).num_seconds().max(0);
            // Whether (and how) it can still be extended: the policy that allows it decides.
            let policies = ctx.policies.snapshot();
            let rules = st
                .policy
                .as_deref()
                .and_then(|p| policies.iter().find(|n| n.name == p))
                .and_then(|n| n.rules.as_ref().ok());
            let outlook = extension_outlook(
                rules,
                st.activated_at.unwrap_or(expires),
                expires,
                st.extensions,
            );
            let message = format!(
                "access ends in {} (at {}); {}",
                human(left),
                expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                outlook.sentence(&g.namespace().unwrap_or_default(), &g.name_any())
            );
            ctx.notifier.send(Notification {
                id: uuid::Uuid::new_v4(),
                kind,
                reason: kind.as_str().into(),
                message,
                warning: false,
                time: now,
                grant: GrantRecord::of(&ctx.settings.cluster, &g, st, None),
            });
        }
    }
}

/// `9m 30s`, `45s`, `1h 5m`.
fn human(secs: i64) -> String {
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) if s == 0 => format!("{m}m"),
        (0, _) => format!("{m}m {s}s"),
        _ if m == 0 => format!("{h}h"),
        _ => format!("{h}h {m}m"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn time_left_reads_as_people_say_it() {
        assert_eq!(super::human(45), "45s");
        assert_eq!(super::human(600), "10m");
        assert_eq!(super::human(570), "9m 30s");
        assert_eq!(super::human(3600), "1h");
        assert_eq!(super::human(3900), "1h 5m");
    }
}
