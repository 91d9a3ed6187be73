//! Ingestion (docs/usage.md): one poller per subscription's Activity Log and per kind of
//! workload sign-in, each incremental by time with a trailing re-read window for the logs'
//! delay, page by page (memory bounded by a page, whatever the log volume), de-duplicated by
//! event ID. A page's effects are persisted in the ledger before they are handed to the
//! reconcilers, and a source's cursor moves only after its last page: a restart re-reads what
//! was not finished and skips what was counted.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use lapse_api::arm::ArmId;
use lapse_api::policy::NamedPolicy;
use lapse_api::usage::{
    Attribution, Finding, Operation, TokenIssue, UsageDelta, apply_deltas, attribute,
    attribute_token, end_findings, findings_for_operation, findings_for_token,
};
use lapse_azure::{ActivityEvent, AzureError, LogCursor, SignInKind, SignInRecord};

use super::ledger::{Ledger, LedgerError, LedgerStore};
use super::windows::{Leases, gather};
use super::{UsageSettings, report};
use crate::context::Context;

/// How much earlier than its start a read may return events (its filter's time is sent in
/// whole seconds).
const FILTER_SLACK: TimeDelta = TimeDelta::seconds(2);

/// A poll that could not finish; the next one starts where this one's source last stood.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("reading {source_key}: {error}")]
    Azure {
        source_key: String,
        error: AzureError,
    },
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// What one page of a log does.
#[derive(Debug, Default, PartialEq)]
pub struct PageEffects {
    /// By lease index.
    pub deltas: BTreeMap<usize, UsageDelta>,
    /// Findings no lease carries (`UseWithoutLease`).
    pub unleased: Vec<Finding>,
    /// Event IDs now counted, with their times.
    pub counted: Vec<(String, DateTime<Utc>)>,
    /// Events already counted by an earlier read.
    pub duplicates: u64,
    /// Events lapse does not govern.
    pub ignored: u64,
}

impl PageEffects {
    fn delta(&mut self, i: usize) -> &mut UsageDelta {
        self.deltas.entry(i).or_default()
    }

    fn changes_anything(&self) -> bool {
        !self.deltas.is_empty() || !self.unleased.is_empty()
    }
}

/// An Activity Log event as attribution reads it; `None` when it names no caller object ID or
/// no ARM resource (nothing lapse could attribute).
pub fn operation_of(e: &ActivityEvent) -> Option<Operation> {
    Some(Operation {
        id: e.id.clone(),
        time: e.time,
        caller: e.caller?,
        action: e.action.to_ascii_lowercase(),
        resource: ArmId::parse(&e.resource_id).ok()?,
        succeeded: e.succeeded(),
        grantee: e.grantee(),
    })
}

/// The items a read asked for: a log that returns events from before the read's start (its
/// filter ignored) would otherwise have them counted again once their IDs are forgotten.
fn within<T>(items: Vec<T>, time: impl Fn(&T) -> DateTime<Utc>, from: DateTime<Utc>) -> Vec<T> {
    let before = items.len();
    let kept: Vec<T> = items
        .into_iter()
        .filter(|i| time(i) >= from - FILTER_SLACK)
        .collect();
    if kept.len() < before {
        tracing::warn!(
            dropped = before - kept.len(),
            "a log read returned events from before its start; they are not counted"
        );
    }
    kept
}

/// What a page of Activity Log events does to the leases.
pub fn operations_page(
    items: &[ActivityEvent],
    leases: &Leases,
    seen: &HashSet<String>,
    bound: TimeDelta,
) -> PageEffects {
    let mut fx = PageEffects::default();
    for e in items {
        if seen.contains(&e.id) {
            fx.duplicates += 1;
            continue;
        }
        let Some(op) = operation_of(e) else {
            fx.ignored += 1;
            continue;
        };
        let a = attribute(&op, &leases.windows, &leases.governed, bound);
        let findings = findings_for_operation(&op, a, &leases.windows);
        match a {
            Attribution::Lease(i) => {
                let d = fx.delta(i);
                d.count_operation(&op);
                d.findings.extend(findings);
            }
            Attribution::AfterEnd(i) => fx.delta(i).findings.extend(findings),
            Attribution::WithoutLease => fx.unleased.extend(findings),
            Attribution::Ungoverned => {
                fx.ignored += 1;
                continue;
            }
        }
        fx.counted.push((op.id, op.time));
    }
    fx
}

/// What a page of sign-ins does to the leases.
pub fn tokens_page(
    items: &[SignInRecord],
    leases: &Leases,
    seen: &HashSet<String>,
    bound: TimeDelta,
) -> PageEffects {
    let mut fx = PageEffects::default();
    for s in items {
        if seen.contains(&s.id) {
            fx.duplicates += 1;
            continue;
        }
        let Some(principal) = s.principal_id else {
            fx.ignored += 1;
            continue;
        };
        let token = TokenIssue {
            id: s.id.clone(),
            time: s.time,
            principal,
            federated_credential: s.federated_credential.clone(),
        };
        let mut counted = false;
        if let Some(i) = attribute_token(&token, &leases.windows, bound) {
            fx.delta(i).count_token(&token);
            counted = true;
        }
        for f in findings_for_token(&token, &leases.windows) {
            if let Some(i) = leases
                .windows
                .iter()
                .position(|l| Some(&l.grant) == f.grant.as_ref())
            {
                fx.delta(i).findings.push(f);
                counted = true;
            }
        }
        if counted {
            fx.counted.push((token.id, token.time));
        } else {
            fx.ignored += 1;
        }
    }
    fx
}

/// The state of ingestion between polls.
#[derive(Debug)]
pub struct Ingest {
    pub ctx: Arc<Context>,
    pub settings: UsageSettings,
    pub store: LedgerStore,
    pub ledger: Ledger,
}

impl Ingest {
    fn reread(&self) -> TimeDelta {
        TimeDelta::from_std(self.settings.reread).unwrap_or(TimeDelta::minutes(15))
    }

    fn bound(&self) -> TimeDelta {
        self.ctx.settings.residual.propagation
    }

    /// Persists `fx` (numbering its batches, with the IDs it counted) and hands it over.
    async fn commit(
        &mut self,
        source_key: &str,
        fx: PageEffects,
        leases: &Leases,
        policies: &[NamedPolicy],
    ) -> Result<(), LedgerError> {
        let metrics = &self.ctx.metrics;
        metrics.usage_events(source_key, "duplicate", fx.duplicates);
        metrics.usage_events(source_key, "ignored", fx.ignored);
        metrics.usage_events(source_key, "counted", fx.counted.len() as u64);
        if !fx.changes_anything() {
            return Ok(());
        }
        let mut next = self.ledger.clone();
        let mut batch = Vec::new();
        for (i, mut d) in fx.deltas {
            let Some(lease) = leases.leases.get(i) else {
                continue;
            };
            next.sequence += 1;
            d.sequence = next.sequence;
            batch.push((lease.uid.clone(), lease.grant.clone(), d));
        }
        next.pending = self.ctx.usage.snapshot_with(&batch);
        if !fx.counted.is_empty() {
            next.sources
                .entry(source_key.to_owned())
                .or_default()
                .seen
                .extend(fx.counted);
        }
        next.add_unleased(fx.unleased.iter().cloned());
        self.store.save(&next).await?;
        self.ledger = next;
        self.ctx.usage.add(batch);
        for f in &fx.unleased {
            report::unleased(&self.ctx, f, policies);
        }
        Ok(())
    }

    /// Reads one source from its cursor (less the re-read window) to `now`, page by page.
    async fn poll_source(
        &mut self,
        source: &Source,
        now: DateTime<Utc>,
        leases: &Leases,
        policies: &[NamedPolicy],
    ) -> Result<(), IngestError> {
        let key = source.key();
        let since = self.ledger.since.unwrap_or(now);
        let from = self
            .ledger
            .sources
            .get(&key)
            .and_then(|c| c.through)
            .unwrap_or(since)
            - self.reread();
        let mut next: Option<LogCursor> = None;
        loop {
            let azure = |error| IngestError::Azure {
                source_key: key.clone(),
                error,
            };
            let seen = self
                .ledger
                .sources
                .get(&key)
                .map(|c| c.seen_set())
                .unwrap_or_default();
            let (fx, more) = match source {
                Source::Activity(sub) => {
                    let page = self
                        .ctx
                        .azure
                        .activity_log_page(sub, from, Some(now), next.as_ref())
                        .await
                        .map_err(azure)?;
                    let items = within(page.items, |e| e.time, from);
                    (
                        operations_page(&items, leases, &seen, self.bound()),
                        page.next,
                    )
                }
                Source::SignIns(kind) => {
                    let page = self
                        .ctx
                        .azure
                        .sign_ins_page(*kind, from, next.as_ref())
                        .await
                        .map_err(azure)?;
                    let items = within(page.items, |s| s.time, from);
                    (tokens_page(&items, leases, &seen, self.bound()), page.next)
                }
            };
            self.commit(&key, fx, leases, policies).await?;
            match more {
                Some(n) => next = Some(n),
                None => break,
            }
        }
        let reread = self.reread();
        let cursor = self.ledger.sources.entry(key).or_default();
        cursor.through = Some(now);
        // The next read starts at `now - reread`, sent in whole seconds (rounded down): keep
        // the IDs of that second and the one before, or they would be counted again.
        cursor.prune(now - reread - FILTER_SLACK);
        Ok(())
    }

    /// The leases whose logs have been read past their end, the propagation bound and the
    /// re-read window, not yet concluded: their end findings.
    async fn conclude(
        &mut self,
        leases: &Leases,
        policies: &[NamedPolicy],
        watermark: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        let Some(since) = self.ledger.since else {
            return Ok(());
        };
        let mut fx = PageEffects::default();
        for (i, lease) in leases.leases.iter().enumerate() {
            let Some(ended) = lease.window.ended_at else {
                continue;
            };
            let settled = ended + self.bound() + self.reread() <= watermark;
            if !settled
                // The first read went back one re-read window before `since`.
                || lease.window.activated_at < since - self.reread()
                || lease.usage.as_ref().is_some_and(|u| u.concluded)
                || self.ctx.usage.concluding(&lease.uid)
            {
                continue;
            }
            let (usage, _) = apply_deltas(
                lease.usage.as_ref(),
                &self.ctx.usage.pending_for(&lease.uid),
            );
            let usage = usage.unwrap_or_default();
            let narrower =
                match super::rightsize::narrower(&self.ctx, lease, &usage, policies).await {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::warn!(grant = %lease.grant, error = %e, "right-sizing postponed");
                        continue;
                    }
                };
            tracing::debug!(grant = %lease.grant, operations = usage.operations, tokens = usage.tokens, ?narrower, "usage concluded");
            let d = fx.delta(i);
            d.concluded = true;
            d.findings = end_findings(&lease.window, &usage, &narrower);
        }
        self.commit("conclusions", fx, leases, policies).await
    }

    /// One round over every source, then the conclusions, then the cursors persisted.
    pub async fn round(&mut self, now: DateTime<Utc>) -> Result<(), IngestError> {
        if self.ledger.since.is_none() {
            self.ledger.since = Some(now);
        }
        let policies = self.ctx.policies.snapshot();
        let leases = gather(&self.ctx, &policies);
        let mut sources: Vec<Source> = Vec::new();
        if self.settings.activity_log {
            sources.extend(leases.subscriptions.iter().cloned().map(Source::Activity));
        }
        if self.settings.sign_ins {
            sources.push(Source::SignIns(SignInKind::ServicePrincipal));
            sources.push(Source::SignIns(SignInKind::ManagedIdentity));
        }
        tracing::debug!(
            sources = sources.len(),
            leases = leases.leases.len(),
            "usage round"
        );
        let mut failed = None;
        for source in &sources {
            let result = self.poll_source(source, now, &leases, &policies).await;
            self.ctx
                .metrics
                .usage_poll(&source.key(), if result.is_ok() { "ok" } else { "error" });
            if let Err(e) = result {
                tracing::warn!(error = %e, "usage ingestion: a source could not be read");
                failed = Some(e);
            }
        }
        // Conclusions wait for every source to have read past the lease's end.
        let watermark = sources
            .iter()
            .map(|s| {
                self.ledger
                    .sources
                    .get(&s.key())
                    .and_then(|c| c.through)
                    .unwrap_or(DateTime::<Utc>::MIN_UTC)
            })
            .min();
        if let Some(w) = watermark {
            self.conclude(&leases, &policies, w).await?;
        }
        // Grants that are gone take their pending batches with them.
        let uids: HashSet<&str> = leases.leases.iter().map(|l| l.uid.as_str()).collect();
        self.ctx.usage.retain(|uid| uids.contains(uid));
        self.ledger.pending = self.ctx.usage.snapshot_with(&[]);
        self.store.save(&self.ledger).await?;
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// A log source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The ARM Activity Log of a subscription.
    Activity(String),
    SignIns(SignInKind),
}

impl Source {
    pub fn key(&self) -> String {
        match self {
            Source::Activity(sub) => format!("activity/{sub}"),
            Source::SignIns(SignInKind::ServicePrincipal) => "signins/servicePrincipal".into(),
            Source::SignIns(SignInKind::ManagedIdentity) => "signins/managedIdentity".into(),
        }
    }
}
