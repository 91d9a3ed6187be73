//! Ticket checks (DESIGN §11 "Tickets", docs/approval.md): the operator asks a policy's
//! checker whether the ticket a grant names is open (`POST {"ticket": "<id>"}` →
//! `{"open": bool}`), and hands what it knows to the decision core as a [`TicketView`].
//!
//! No reconcile waits on a checker: [`Tickets::view`] answers from the cache and starts a check
//! in the background when one is due; the answer wakes the grants that name the ticket. A
//! loop re-checks the tickets of every grant not yet ended every `recheck`, so a ticket closed
//! under a live lease ends it within one re-check (plus a reconcile). A checker that fails keeps
//! its last answer standing for `stale_after`, then no answer is believed (fail closed).
//!
//! Checker URLs come from a Secret (they may carry a token): never logged, never in an error
//! message, never in a metric.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use lapse_api::ticket::{TicketKey, TicketState, TicketView};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, broadcast, watch};

use crate::grant_ref::GrantRef;
use crate::metrics::ResultLabels;
use crate::triggers::Affected;

/// How ticket checks are made and how long answers stand.
#[derive(Clone, Debug)]
pub struct TicketSettings {
    /// Checker name → URL (from the operator's checkers Secret).
    pub checkers: BTreeMap<String, SecretString>,
    /// How long one check may take, connecting included.
    pub timeout: Duration,
    /// How old an answer may get before it is asked again (the cache's TTL).
    pub recheck: Duration,
    /// How long the last answer stands while the checker fails; then none is believed.
    pub stale_after: Duration,
    /// Most tickets cached at once; the least recently used go first.
    pub cache_size: usize,
}

impl Default for TicketSettings {
    fn default() -> Self {
        Self {
            checkers: BTreeMap::new(),
            timeout: Duration::from_secs(5),
            recheck: Duration::from_secs(60),
            stale_after: Duration::from_secs(300),
            cache_size: 10_000,
        }
    }
}

/// Checks at once, across checkers: a slow tracker ties up this many tasks, no more.
const CONCURRENT_CHECKS: usize = 16;
/// How soon a ticket never answered is asked again after a failed check.
const FIRST_ANSWER_RETRY: Duration = Duration::from_secs(1);

#[derive(Serialize)]
struct CheckRequest<'a> {
    ticket: &'a str,
}

#[derive(Deserialize)]
struct CheckAnswer {
    open: bool,
}

/// What is cached of one ticket.
#[derive(Debug)]
struct Entry {
    /// The last answer (open?) and when it came.
    answer: Option<(bool, Instant)>,
    /// Checks have failed since this instant; the last failure.
    failing: Option<(Instant, String)>,
    last_attempt: Option<Instant>,
    in_flight: bool,
    last_used: Instant,
    /// The grants known to name the ticket: woken when its state changes.
    grants: BTreeSet<GrantRef>,
    /// The state the grants were last woken for.
    reported: TicketState,
}

impl Entry {
    fn new(now: Instant) -> Self {
        Self {
            answer: None,
            failing: None,
            last_attempt: None,
            in_flight: false,
            last_used: now,
            grants: BTreeSet::new(),
            reported: TicketState::Unknown,
        }
    }

    /// What the core is told. An answer stands for `recheck` and, while re-checks fail, for
    /// `stale_after` more; checks failing for `stale_after` believe nothing (fail closed).
    fn state(&self, key: &TicketKey, now: Instant, s: &TicketSettings) -> TicketState {
        if let Some((since, error)) = &self.failing
            && now.saturating_duration_since(*since) >= s.stale_after
        {
            return TicketState::Unavailable {
                detail: format!(
                    "the checker {} has not answered for {}s (the stale period is {}s): {error}",
                    key.checker,
                    now.saturating_duration_since(*since).as_secs(),
                    s.stale_after.as_secs()
                ),
            };
        }
        match self.answer {
            Some((open, at)) if now.saturating_duration_since(at) < s.recheck + s.stale_after => {
                if open {
                    TicketState::Open
                } else {
                    TicketState::Closed
                }
            }
            _ => TicketState::Unknown,
        }
    }

    /// Whether a check should start now.
    fn due(&self, now: Instant, s: &TicketSettings) -> bool {
        if self.in_flight {
            return false;
        }
        let since_attempt = self
            .last_attempt
            .map_or(Duration::MAX, |t| now.saturating_duration_since(t));
        match self.answer {
            None => since_attempt >= FIRST_ANSWER_RETRY.min(s.recheck),
            Some((_, at)) => {
                now.saturating_duration_since(at) >= s.recheck && since_attempt >= s.recheck
            }
        }
    }
}

/// The ticket cache, its checks and its re-check loop.
pub struct Tickets {
    settings: TicketSettings,
    client: reqwest::Client,
    cache: Mutex<HashMap<TicketKey, Entry>>,
    limit: Semaphore,
    checks: Family<ResultLabels, Counter>,
    cache_entries: Gauge,
    /// Wakes grants whose ticket changed (the controllers' triggers).
    affected: broadcast::Sender<Affected>,
    /// Makes decisions taken before a change stale.
    epoch: watch::Sender<u64>,
}

impl std::fmt::Debug for Tickets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the URLs.
        f.debug_struct("Tickets")
            .field(
                "checkers",
                &self.settings.checkers.keys().collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A plain map: a panic elsewhere leaves it usable.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A transport error without its URL (which may carry the checker's token).
fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_decode() {
        "answered without {\"open\": bool}"
    } else {
        "request failed"
    };
    let mut detail = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() || e.is_decode() {
        what.to_owned()
    } else {
        format!("{what}: {detail}")
    }
}

impl Tickets {
    pub fn new(
        settings: TicketSettings,
        checks: Family<ResultLabels, Counter>,
        cache_entries: Gauge,
        affected: broadcast::Sender<Affected>,
        epoch: watch::Sender<u64>,
    ) -> Result<Self, String> {
        for (name, url) in &settings.checkers {
            let parsed = reqwest::Url::parse(url.expose_secret().trim())
                .map_err(|e| format!("ticket checker {name}: not a URL: {e}"))?;
            if !matches!(parsed.scheme(), "https" | "http") {
                return Err(format!(
                    "ticket checker {name}: scheme {:?}: only https (or http) checkers are supported",
                    parsed.scheme()
                ));
            }
        }
        let client = reqwest::Client::builder()
            .connect_timeout(settings.timeout)
            .timeout(settings.timeout)
            // A redirect could carry the ticket elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("lapse-operator/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("ticket checker client: {}", e.without_url()))?;
        for result in ["open", "closed", "error", "stale"] {
            drop(checks.get_or_create(&ResultLabels {
                result: result.into(),
            }));
        }
        Ok(Self {
            settings,
            client,
            cache: Mutex::default(),
            limit: Semaphore::new(CONCURRENT_CHECKS),
            checks,
            cache_entries,
            affected,
            epoch,
        })
    }

    /// What is known of `keys`, for `grant`'s decision; starts the checks that are due.
    pub fn view(self: &Arc<Self>, keys: &[TicketKey], grant: &GrantRef) -> TicketView {
        let now = Instant::now();
        let mut states = BTreeMap::new();
        let mut start = Vec::new();
        {
            let mut cache = locked(&self.cache);
            for key in keys {
                if let Some(state) = self.unconfigured(key) {
                    states.insert(key.clone(), state);
                    continue;
                }
                let e = cache.entry(key.clone()).or_insert_with(|| Entry::new(now));
                e.last_used = now;
                e.grants.insert(grant.clone());
                if e.due(now, &self.settings) {
                    e.in_flight = true;
                    e.last_attempt = Some(now);
                    start.push(key.clone());
                }
                states.insert(key.clone(), e.state(key, now, &self.settings));
            }
            self.bound(&mut cache);
        }
        for key in start {
            self.spawn_check(key);
        }
        TicketView { states }
    }

    /// The state of one ticket, without touching the cache (for routing a grant to a lane).
    pub fn peek(&self, key: &TicketKey) -> TicketState {
        if let Some(state) = self.unconfigured(key) {
            return state;
        }
        let cache = locked(&self.cache);
        cache.get(key).map_or(TicketState::Unknown, |e| {
            e.state(key, Instant::now(), &self.settings)
        })
    }

    /// A checker the operator does not have can never say a ticket is open.
    fn unconfigured(&self, key: &TicketKey) -> Option<TicketState> {
        (!self.settings.checkers.contains_key(&key.checker)).then(|| TicketState::Unavailable {
            detail: format!(
                "the operator has no ticket checker named {} (its checkers Secret, \
                 --ticket-checkers-dir)",
                key.checker
            ),
        })
    }

    /// Keeps the cache within its size: the least recently used entries go first.
    fn bound(&self, cache: &mut HashMap<TicketKey, Entry>) {
        let over = cache.len().saturating_sub(self.settings.cache_size.max(1));
        if over > 0 {
            let mut by_use: Vec<(Instant, TicketKey)> = cache
                .iter()
                .map(|(k, e)| (e.last_used, k.clone()))
                .collect();
            by_use.sort();
            for (_, k) in by_use.into_iter().take(over) {
                cache.remove(&k);
            }
        }
        self.cache_entries
            .set(i64::try_from(cache.len()).unwrap_or(i64::MAX));
    }

    fn spawn_check(self: &Arc<Self>, key: TicketKey) {
        let this = self.clone();
        tokio::spawn(async move {
            let answer = match this.limit.acquire().await {
                Ok(_permit) => this.ask(&key).await,
                Err(_) => Err("shutting down".to_owned()),
            };
            this.record(&key, answer);
        });
    }

    /// One check.
    async fn ask(&self, key: &TicketKey) -> Result<bool, String> {
        let url = self
            .settings
            .checkers
            .get(&key.checker)
            .ok_or_else(|| format!("no checker named {}", key.checker))?;
        let resp = self
            .client
            .post(url.expose_secret().trim())
            .json(&CheckRequest {
                ticket: &key.ticket,
            })
            .send()
            .await
            .map_err(|e| describe(&e))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("answered HTTP {}", status.as_u16()));
        }
        let answer: CheckAnswer = resp.json().await.map_err(|e| describe(&e))?;
        Ok(answer.open)
    }

    /// Records a check's outcome and wakes the grants naming the ticket if its state changed.
    fn record(&self, key: &TicketKey, answer: Result<bool, String>) {
        let now = Instant::now();
        let (result, wake) = {
            let mut cache = locked(&self.cache);
            let Some(e) = cache.get_mut(key) else {
                return;
            };
            e.in_flight = false;
            let result = match answer {
                Ok(open) => {
                    e.answer = Some((open, now));
                    e.failing = None;
                    if open { "open" } else { "closed" }
                }
                Err(error) => {
                    tracing::warn!(checker = %key.checker, ticket = %key.ticket, %error, "ticket check failed");
                    let since = e.failing.as_ref().map_or(now, |(s, _)| *s);
                    e.failing = Some((since, error));
                    // The last answer still stands (within the stale period) or none does.
                    match e.state(key, now, &self.settings) {
                        TicketState::Open | TicketState::Closed => "stale",
                        TicketState::Unknown | TicketState::Unavailable { .. } => "error",
                    }
                }
            };
            (result, self.changed(key, e, now))
        };
        self.checks
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .inc();
        tracing::debug!(checker = %key.checker, ticket = %key.ticket, result, "ticket checked");
        self.wake(wake);
    }

    /// The grants to wake when the ticket's state is not the one they were last woken for.
    fn changed(&self, key: &TicketKey, e: &mut Entry, now: Instant) -> Vec<GrantRef> {
        let state = e.state(key, now, &self.settings);
        if state == e.reported {
            return Vec::new();
        }
        tracing::info!(checker = %key.checker, ticket = %key.ticket, ?state, "ticket state changed");
        e.reported = state;
        e.grants.iter().cloned().collect()
    }

    fn wake(&self, grants: Vec<GrantRef>) {
        if grants.is_empty() {
            return;
        }
        self.epoch.send_modify(|n| *n += 1);
        for g in grants {
            let _ = self.affected.send(Affected::Grant(
                g.namespace().to_owned(),
                g.name().to_owned(),
            ));
        }
    }

    /// One pass of the re-check loop over `named` (every ticket that a grant not yet ended
    /// names, with those grants): each is kept, checked when due, and its grants woken when its
    /// state changed (the stale period running out included); tickets nobody names any more are
    /// forgotten.
    pub fn tick(self: &Arc<Self>, named: HashMap<TicketKey, BTreeSet<GrantRef>>) {
        let now = Instant::now();
        let mut start = Vec::new();
        let mut wake = Vec::new();
        {
            let mut cache = locked(&self.cache);
            cache.retain(|k, e| {
                named.contains_key(k)
                    || now.saturating_duration_since(e.last_used) < self.settings.recheck
            });
            for (key, refs) in named {
                if self.unconfigured(&key).is_some() {
                    continue;
                }
                let e = cache.entry(key.clone()).or_insert_with(|| Entry::new(now));
                e.last_used = now;
                e.grants = refs;
                if e.due(now, &self.settings) {
                    e.in_flight = true;
                    e.last_attempt = Some(now);
                    start.push(key.clone());
                }
                wake.extend(self.changed(&key, e, now));
            }
            self.bound(&mut cache);
        }
        for key in start {
            self.spawn_check(key);
        }
        self.wake(wake);
    }

    /// Whether any checker is configured (otherwise there is nothing to re-check).
    pub fn any_checker(&self) -> bool {
        !self.settings.checkers.is_empty()
    }

    /// How often the re-check loop looks: often enough that a due check starts within a
    /// fraction of the re-check interval, at most once a second.
    pub fn tick_every(&self) -> Duration {
        (self.settings.recheck / 2).clamp(Duration::from_millis(200), Duration::from_secs(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> TicketSettings {
        TicketSettings {
            recheck: Duration::from_secs(60),
            stale_after: Duration::from_secs(300),
            ..TicketSettings::default()
        }
    }

    fn key() -> TicketKey {
        TicketKey {
            checker: "jira".into(),
            ticket: "OPS-1".into(),
        }
    }

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn an_answer_stands_through_failures_for_the_stale_period_then_nothing_is_believed() {
        let s = settings();
        let t = Instant::now();
        let mut e = Entry::new(t);
        assert_eq!(e.state(&key(), t, &s), TicketState::Unknown);
        assert!(e.due(t, &s), "a new ticket is asked at once");
        e.answer = Some((true, t));
        e.last_attempt = Some(t);
        assert!(!e.due(t + S(59), &s));
        assert!(
            e.due(t + S(60), &s),
            "asked again after the re-check interval"
        );
        // The re-check at +60s fails; the answer stands until 300s after that.
        e.failing = Some((t + S(60), "could not connect".into()));
        e.last_attempt = Some(t + S(60));
        assert_eq!(e.state(&key(), t + S(359), &s), TicketState::Open);
        let TicketState::Unavailable { detail } = e.state(&key(), t + S(360), &s) else {
            panic!("believed past the stale period");
        };
        assert_eq!(
            detail,
            "the checker jira has not answered for 300s (the stale period is 300s): could not \
             connect"
        );
        // A closed answer is one too.
        let mut e = Entry::new(t);
        e.answer = Some((false, t));
        assert_eq!(e.state(&key(), t + S(10), &s), TicketState::Closed);
        // An answer nobody re-checked (nobody named the ticket) is forgotten.
        assert_eq!(e.state(&key(), t + S(400), &s), TicketState::Unknown);
    }

    #[test]
    fn a_ticket_never_answered_is_asked_again_soon_and_fails_closed_after_the_stale_period() {
        let s = settings();
        let t = Instant::now();
        let mut e = Entry::new(t);
        e.last_attempt = Some(t);
        e.failing = Some((t, "timed out".into()));
        assert!(!e.due(t + Duration::from_millis(500), &s));
        assert!(e.due(t + S(1), &s));
        assert_eq!(e.state(&key(), t + S(299), &s), TicketState::Unknown);
        assert!(matches!(
            e.state(&key(), t + S(300), &s),
            TicketState::Unavailable { .. }
        ));
    }
}
