//! Prometheus metrics. Never carries a token, secret or assertion: labels are phases,
//! operations, outcomes and error classes only.

use std::collections::HashMap;
use std::sync::Mutex;

use lapse_api::v1alpha1::GrantPhase;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::grant_ref::GrantRef;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub operation: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    /// `activity/<subscription>`, `signins/<kind>` or `conclusions`.
    pub source: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SweepLabels {
    pub kind: String,
}

/// All of the operator's metrics.
#[derive(Debug)]
pub struct Metrics {
    pub grants: Family<PhaseLabels, Gauge>,
    pub reconciles: Family<ResultLabels, Counter>,
    pub reconcile_seconds: Histogram,
    pub azure_calls: Family<CallLabels, Counter>,
    pub throttle_waits: Counter,
    pub throttle_wait_seconds: Counter<f64>,
    pub throttled_responses: Counter,
    /// Lease end to delete acknowledged, for leases that lapsed by time.
    pub overstay_seconds: Histogram,
    /// Leases that ended more than the overdue threshold ago and still owe deletes, counted
    /// from the lease end whatever held the revocation up (set when scraped).
    pub overdue_revocations: Gauge,
    /// Grants whose revocation a management lock refuses (`RevocationBlocked=True`).
    pub revocations_blocked: Gauge,
    /// Live leases the synchronized-expiry plan ends early (their subscription's delete budget
    /// cannot delete every lease ending with them in time).
    pub leases_ending_early: Gauge,
    pub orphans_deleted: Family<SweepLabels, Counter>,
    /// Events dropped because the publishing queue was full.
    pub events_dropped: Counter,
    /// Statuses found not written by the operator (each ended its lease).
    pub status_tampered: Counter,
    /// Activations deferred because their namespace held its whole share of the lane.
    pub fair_share_waits: Counter,
    /// Azure objects under this cluster's name that another operator owns (set when scraped).
    pub twin_objects: Gauge,
    /// Objects of lapse's kinds this version cannot read, by kind.
    pub unreadable_objects: Family<KindLabels, Gauge>,
    /// Notifications by kind and result (delivered, failed, dropped).
    pub notifications: Family<crate::notify::NotifyLabels, Counter>,
    /// Ticket checks by result: open, closed, error (no answer stands), stale (the check failed
    /// and the last answer stands, within the stale period).
    pub ticket_checks: Family<ResultLabels, Counter>,
    /// Tickets in the checkers' cache.
    pub ticket_cache_entries: Gauge,
    /// Log events read for usage evidence, by source and result (counted, duplicate, ignored).
    pub usage_events: Family<SourceLabels, Counter>,
    /// Usage polls by source and result (ok, error).
    pub usage_polls: Family<SourceLabels, Counter>,
    /// Usage findings by kind.
    pub usage_findings: Family<KindLabels, Counter>,
    phases: Mutex<HashMap<GrantRef, GrantPhase>>,
    blocked: Mutex<std::collections::HashSet<GrantRef>>,
    limiter_seen: Mutex<(u64, f64, u64)>,
    azure_seen: Mutex<HashMap<(lapse_azure::Operation, lapse_azure::Outcome), u64>>,
}

fn phase_label(p: GrantPhase) -> String {
    p.as_str().to_owned()
}

impl Metrics {
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self {
            grants: Family::default(),
            reconciles: Family::default(),
            reconcile_seconds: Histogram::new([
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            azure_calls: Family::default(),
            throttle_waits: Counter::default(),
            throttle_wait_seconds: Counter::default(),
            throttled_responses: Counter::default(),
            overstay_seconds: Histogram::new([
                0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0,
            ]),
            overdue_revocations: Gauge::default(),
            revocations_blocked: Gauge::default(),
            leases_ending_early: Gauge::default(),
            orphans_deleted: Family::default(),
            events_dropped: Counter::default(),
            status_tampered: Counter::default(),
            fair_share_waits: Counter::default(),
            twin_objects: Gauge::default(),
            unreadable_objects: Family::default(),
            notifications: Family::default(),
            ticket_checks: Family::default(),
            ticket_cache_entries: Gauge::default(),
            usage_events: Family::default(),
            usage_polls: Family::default(),
            usage_findings: Family::default(),
            phases: Mutex::default(),
            blocked: Mutex::default(),
            limiter_seen: Mutex::default(),
            azure_seen: Mutex::default(),
        };
        // Every phase and the common outcome exist from the start, so dashboards read 0, not
        // "no data".
        for p in [
            GrantPhase::Pending,
            GrantPhase::PendingApproval,
            GrantPhase::Scheduled,
            GrantPhase::Activating,
            GrantPhase::Active,
            GrantPhase::Revoking,
            GrantPhase::Expired,
            GrantPhase::Revoked,
            GrantPhase::Denied,
            GrantPhase::Failed,
        ] {
            drop(m.grants.get_or_create(&PhaseLabels {
                phase: phase_label(p),
            }));
        }
        drop(m.reconciles.get_or_create(&ResultLabels {
            result: "ok".into(),
        }));
        for kind in ["role_assignment", "fic"] {
            drop(
                m.orphans_deleted
                    .get_or_create(&SweepLabels { kind: kind.into() }),
            );
        }
        for labels in crate::notify::NotifyLabels::all() {
            drop(m.notifications.get_or_create(&labels));
        }
        let r = registry.sub_registry_with_prefix("lapse");
        r.register("grants", "AccessGrants by phase", m.grants.clone());
        r.register(
            "reconciles",
            "Grant reconciles by result",
            m.reconciles.clone(),
        );
        r.register(
            "reconcile_duration_seconds",
            "Time to reconcile one grant",
            m.reconcile_seconds.clone(),
        );
        r.register(
            "azure_calls",
            "Azure calls by operation and outcome",
            m.azure_calls.clone(),
        );
        r.register(
            "throttle_waits",
            "Azure calls that waited for ARM budget",
            m.throttle_waits.clone(),
        );
        r.register(
            "throttle_wait_seconds",
            "Time spent waiting for ARM budget",
            m.throttle_wait_seconds.clone(),
        );
        r.register(
            "azure_throttled_responses",
            "429 responses from Azure",
            m.throttled_responses.clone(),
        );
        r.register(
            "overstay_seconds",
            "Lease end to delete acknowledged by Azure",
            m.overstay_seconds.clone(),
        );
        r.register(
            "revocations_overdue",
            "Grants whose revocation is overdue",
            m.overdue_revocations.clone(),
        );
        r.register(
            "revocations_blocked",
            "Grants whose revocation a management lock refuses (409 ScopeLocked)",
            m.revocations_blocked.clone(),
        );
        r.register(
            "leases_ending_early",
            "Live leases whose deletes start before their end: more leases of a subscription end together than its ARM delete budget deletes in time",
            m.leases_ending_early.clone(),
        );
        r.register(
            "orphans_deleted",
            "Orphaned Azure objects deleted by the sweep",
            m.orphans_deleted.clone(),
        );
        r.register(
            "events_dropped",
            "Kubernetes Events dropped because the publishing queue was full",
            m.events_dropped.clone(),
        );
        r.register(
            "status_tampered",
            "AccessGrant statuses not written by the operator (each ended its lease)",
            m.status_tampered.clone(),
        );
        r.register(
            "fair_share_waits",
            "Activations deferred because their namespace held its share of the activation lane",
            m.fair_share_waits.clone(),
        );
        r.register(
            "twin_objects",
            "Azure objects under this cluster name owned by another operator (never swept)",
            m.twin_objects.clone(),
        );
        r.register(
            "notifications",
            "Notifications by kind and result: delivered, failed (refused or retries exhausted), dropped (queue full)",
            m.notifications.clone(),
        );
        r.register(
            "ticket_checks",
            "Ticket checks by result: open, closed, error (no answer stands: fails closed after the stale period), stale (failed; the last answer stands)",
            m.ticket_checks.clone(),
        );
        r.register(
            "usage_events",
            "Log events read for usage evidence, by source and result: counted (attributed or a finding), duplicate (counted by an earlier read), ignored (nothing lapse governs)",
            m.usage_events.clone(),
        );
        r.register(
            "usage_polls",
            "Usage log polls by source and result (ok, error)",
            m.usage_polls.clone(),
        );
        r.register(
            "usage_findings",
            "Usage findings by kind: UseAfterEnd, UseWithoutLease, SensitiveAction, PrivilegeChain, UnusedGrant, RightSize",
            m.usage_findings.clone(),
        );
        r.register(
            "ticket_cache_entries",
            "Tickets cached with their checkers' last answers",
            m.ticket_cache_entries.clone(),
        );
        r.register(
            "unreadable_objects",
            "AccessGrants and AccessPolicies this operator version cannot read (left out)",
            m.unreadable_objects.clone(),
        );
        for kind in ["AccessGrant", "AccessPolicy"] {
            m.unreadable_objects
                .get_or_create(&KindLabels { kind: kind.into() })
                .set(0);
        }
        m
    }

    /// Records a grant's phase (for the per-phase gauges); `None` once it is gone.
    pub fn observe_grant(&self, grant: &GrantRef, phase: Option<GrantPhase>) {
        let mut phases = self
            .phases
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let old = match phase {
            Some(p) => phases.insert(grant.clone(), p),
            None => phases.remove(grant),
        };
        if let Some(p) = old {
            self.grants
                .get_or_create(&PhaseLabels {
                    phase: phase_label(p),
                })
                .dec();
        }
        if let Some(p) = phase {
            self.grants
                .get_or_create(&PhaseLabels {
                    phase: phase_label(p),
                })
                .inc();
        }
    }

    pub fn usage_events(&self, source: &str, result: &str, n: u64) {
        if n == 0 {
            return;
        }
        self.usage_events
            .get_or_create(&SourceLabels {
                source: source.to_owned(),
                result: result.to_owned(),
            })
            .inc_by(n);
    }

    pub fn usage_poll(&self, source: &str, result: &str) {
        self.usage_polls
            .get_or_create(&SourceLabels {
                source: source.to_owned(),
                result: result.to_owned(),
            })
            .inc();
    }

    pub fn usage_finding(&self, kind: lapse_api::usage::FindingKind) {
        self.usage_findings
            .get_or_create(&KindLabels {
                kind: kind.as_str().to_owned(),
            })
            .inc();
    }

    /// Records whether a management lock blocks a grant's revocation (`RevocationBlocked`);
    /// `false` once it no longer does or the grant is gone.
    pub fn observe_blocked(&self, grant: &GrantRef, blocked: bool) {
        let mut set = self
            .blocked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if blocked {
            set.insert(grant.clone());
        } else {
            set.remove(grant);
        }
        self.revocations_blocked
            .set(i64::try_from(set.len()).unwrap_or(i64::MAX));
    }

    /// Folds the Azure client's cumulative call counts into `lapse_azure_calls_total`.
    pub fn azure_call_totals(&self, counts: &[lapse_azure::CallCount]) {
        let mut seen = self
            .azure_seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for c in counts {
            let key = (c.operation, c.outcome);
            let before = seen.insert(key, c.count).unwrap_or(0);
            self.azure_calls
                .get_or_create(&CallLabels {
                    operation: c.operation.as_str().into(),
                    outcome: c.outcome.as_str().into(),
                })
                .inc_by(c.count.saturating_sub(before));
        }
    }

    /// Folds the Azure client's cumulative limiter counters into the counters.
    pub fn limiter_totals(&self, waits: u64, wait_seconds: f64, throttled: u64) {
        let mut seen = self
            .limiter_seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.throttle_waits.inc_by(waits.saturating_sub(seen.0));
        let dw = wait_seconds - seen.1;
        if dw > 0.0 {
            self.throttle_wait_seconds.inc_by(dw);
        }
        self.throttled_responses
            .inc_by(throttled.saturating_sub(seen.2));
        *seen = (
            waits.max(seen.0),
            wait_seconds.max(seen.1),
            throttled.max(seen.2),
        );
    }
}
