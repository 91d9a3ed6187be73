//! Client-side pacing of ARM and Graph calls, shared by every call of one `AzureClient`.
//!
//! ARM throttles per subscription (and principal) with token buckets for reads, writes and
//! deletes. Mirroring those buckets here lets the operator pace itself instead of collecting
//! 429s. A 429 pauses the bucket it hit until Azure's retry time has passed. A global cap on
//! requests in flight hands free slots to waiting deletes first, then reads (a revocation may
//! need a read), then writes: revocations are never queued behind creates. Background calls
//! (reads of Azure's own logs for usage evidence) come after all of those, and spend only the
//! upper half of their bucket: the lower half stays for the foreground reads a revocation needs.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

/// The ARM budget a call draws from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CallKind {
    Read,
    Write,
    Delete,
}

impl CallKind {
    pub const ALL: [CallKind; 3] = [CallKind::Read, CallKind::Write, CallKind::Delete];

    pub fn as_str(self) -> &'static str {
        match self {
            CallKind::Read => "read",
            CallKind::Write => "write",
            CallKind::Delete => "delete",
        }
    }

    /// Lower goes first when callers wait for a slot.
    fn priority(self) -> u8 {
        match self {
            CallKind::Delete => 0,
            CallKind::Read => 1,
            CallKind::Write => 2,
        }
    }

    fn index(self) -> usize {
        self.priority() as usize
    }
}

/// How urgently a call needs its budget and slot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub(crate) enum Priority {
    /// The operator's own work: deletes, then reads, then writes.
    #[default]
    Foreground,
    /// Work that may wait for everything else (log reads): a slot only when no foreground call
    /// waits, and a token only while its bucket is more than half full.
    Background,
}

/// Slot priority of a background call: behind every kind of foreground call.
const BACKGROUND_SLOT_PRIORITY: u8 = 3;

/// One token bucket: up to `capacity` calls at once, refilled at `refill_per_second`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BucketConfig {
    pub capacity: u32,
    pub refill_per_second: f64,
}

/// The client's budget. Defaults are ARM's documented per-subscription limits.
#[derive(Clone, Debug, PartialEq)]
pub struct LimitsConfig {
    /// ARM reads per subscription: 250, refilled at 25/s.
    pub reads: BucketConfig,
    /// ARM writes (PUT) per subscription: 200, refilled at 10/s.
    pub writes: BucketConfig,
    /// ARM deletes per subscription: 200, refilled at 10/s.
    pub deletes: BucketConfig,
    /// Microsoft Graph calls per tenant, all kinds alike. `None` (the default) paces Graph only by
    /// its 429s: Graph's limits are per app and tenant and much larger than ours.
    pub graph: Option<BucketConfig>,
    /// Requests in flight at once across all subscriptions; free slots go to deletes first.
    pub max_in_flight: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            reads: BucketConfig {
                capacity: 250,
                refill_per_second: 25.0,
            },
            writes: BucketConfig {
                capacity: 200,
                refill_per_second: 10.0,
            },
            deletes: BucketConfig {
                capacity: 200,
                refill_per_second: 10.0,
            },
            graph: None,
            max_in_flight: 32,
        }
    }
}

impl LimitsConfig {
    pub(crate) fn validate(&self) -> Result<(), String> {
        let named = [
            ("reads", Some(self.reads)),
            ("writes", Some(self.writes)),
            ("deletes", Some(self.deletes)),
            ("graph", self.graph),
        ];
        for (name, bucket) in named {
            if let Some(b) = bucket {
                if b.capacity == 0 {
                    return Err(format!("limits.{name}.capacity must be at least 1"));
                }
                if !(b.refill_per_second.is_finite() && b.refill_per_second > 0.0) {
                    return Err(format!(
                        "limits.{name}.refill_per_second must be a positive number, not {}",
                        b.refill_per_second
                    ));
                }
            }
        }
        if self.max_in_flight == 0 {
            return Err("limits.max_in_flight must be at least 1".to_owned());
        }
        Ok(())
    }
}

/// Whose budget a call spends.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Budget {
    /// ARM, one subscription (lowercase GUID).
    Subscription(String),
    /// ARM calls above any subscription (management groups).
    Tenant,
    Graph,
}

/// Counters for one [`CallKind`], since the client was created.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct KindStats {
    /// Calls that waited for their bucket to refill or for a 429 pause to end.
    pub throttle_waits: u64,
    /// Total time those calls waited.
    pub throttle_wait_seconds: f64,
    /// HTTP 429 answers received.
    pub throttled_responses: u64,
    /// Calls that waited for a free slot under `max_in_flight`.
    pub slot_waits: u64,
}

/// A point-in-time copy of the limiter's counters, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LimiterSnapshot {
    pub reads: KindStats,
    pub writes: KindStats,
    pub deletes: KindStats,
    /// Requests being sent right now.
    pub in_flight: u64,
}

impl LimiterSnapshot {
    /// All kinds added up.
    pub fn total(&self) -> KindStats {
        let all = [self.reads, self.writes, self.deletes];
        KindStats {
            throttle_waits: all.iter().map(|k| k.throttle_waits).sum(),
            throttle_wait_seconds: all.iter().map(|k| k.throttle_wait_seconds).sum(),
            throttled_responses: all.iter().map(|k| k.throttled_responses).sum(),
            slot_waits: all.iter().map(|k| k.slot_waits).sum(),
        }
    }

    pub fn kind(&self, kind: CallKind) -> &KindStats {
        match kind {
            CallKind::Read => &self.reads,
            CallKind::Write => &self.writes,
            CallKind::Delete => &self.deletes,
        }
    }
}

#[derive(Debug, Default)]
struct KindCounters {
    throttle_waits: AtomicU64,
    throttle_wait_micros: AtomicU64,
    throttled_responses: AtomicU64,
    slot_waits: AtomicU64,
}

impl KindCounters {
    fn snapshot(&self) -> KindStats {
        KindStats {
            throttle_waits: self.throttle_waits.load(Ordering::Relaxed),
            throttle_wait_seconds: self.throttle_wait_micros.load(Ordering::Relaxed) as f64 / 1e6,
            throttled_responses: self.throttled_responses.load(Ordering::Relaxed),
            slot_waits: self.slot_waits.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug)]
struct Bucket {
    /// May go negative: each waiting caller has reserved a future token (FIFO by construction).
    tokens: f64,
    updated: Instant,
    paused_until: Option<Instant>,
}

#[derive(Debug, Default)]
struct State {
    buckets: HashMap<(Budget, CallKind), Bucket>,
    in_flight: usize,
    /// Callers waiting for a slot, by (priority, arrival).
    waiters: BTreeMap<(u8, u64), oneshot::Sender<()>>,
    next_seq: u64,
}

/// Shared pacing state; cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct Limiter {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: LimitsConfig,
    state: Mutex<State>,
    counters: [KindCounters; 3],
}

/// Held while a request is in flight; frees the slot when dropped.
#[derive(Debug)]
pub(crate) struct Permit {
    limiter: Limiter,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut state = self.limiter.lock();
        release_slot(&mut state);
    }
}

/// Hands a freed slot to the first waiter in priority order, or returns it to the pool.
fn release_slot(state: &mut State) {
    while let Some((_, waiter)) = state.waiters.pop_first() {
        if waiter.send(()).is_ok() {
            return;
        }
    }
    state.in_flight = state.in_flight.saturating_sub(1);
}

/// A caller queued for a slot. If it is dropped (the call was cancelled) after a slot was handed
/// to it, the slot is passed on rather than leaked.
struct PendingSlot<'a> {
    limiter: &'a Limiter,
    key: (u8, u64),
    rx: oneshot::Receiver<()>,
    settled: bool,
}

impl Drop for PendingSlot<'_> {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let mut state = self.limiter.lock();
        if state.waiters.remove(&self.key).is_none() && self.rx.try_recv().is_ok() {
            release_slot(&mut state);
        }
    }
}

impl Limiter {
    pub(crate) fn new(config: LimitsConfig) -> Limiter {
        Limiter {
            inner: Arc::new(Inner {
                config,
                state: Mutex::new(State::default()),
                counters: Default::default(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent at every await-free step, so a poisoned lock is still usable.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn bucket_config(&self, budget: &Budget, kind: CallKind) -> Option<BucketConfig> {
        match budget {
            Budget::Graph => self.inner.config.graph,
            Budget::Subscription(_) | Budget::Tenant => Some(match kind {
                CallKind::Read => self.inner.config.reads,
                CallKind::Write => self.inner.config.writes,
                CallKind::Delete => self.inner.config.deletes,
            }),
        }
    }

    /// Waits for budget, then for a slot. The slot is taken last so that a caller waiting for
    /// its bucket never holds a slot another kind could use.
    #[cfg(test)]
    pub(crate) async fn acquire(&self, budget: &Budget, kind: CallKind) -> Permit {
        self.acquire_as(budget, kind, Priority::Foreground).await
    }

    /// [`Limiter::acquire`] at `priority`.
    pub(crate) async fn acquire_as(
        &self,
        budget: &Budget,
        kind: CallKind,
        priority: Priority,
    ) -> Permit {
        self.take_budget(budget, kind, priority).await;
        self.take_slot(kind, priority).await
    }

    async fn take_budget(&self, budget: &Budget, kind: CallKind, priority: Priority) {
        let config = self.bucket_config(budget, kind);
        let started = Instant::now();
        let mut reserved = false;
        let mut waited = false;
        loop {
            let wake_at = {
                let mut state = self.lock();
                let now = Instant::now();
                let bucket = bucket_entry(&mut state, budget, kind, config, now);
                match bucket.paused_until {
                    Some(until) if until > now => Some(until),
                    _ if reserved => None,
                    _ => match (config, priority) {
                        (None, _) => None,
                        (Some(c), Priority::Foreground) => {
                            reserved = true;
                            bucket.tokens -= 1.0;
                            (bucket.tokens < 0.0).then(|| {
                                now + Duration::from_secs_f64(-bucket.tokens / c.refill_per_second)
                            })
                        }
                        // No reservation: a foreground caller arriving meanwhile goes first, and
                        // this one looks again when the refill should have raised the bucket
                        // into its upper half.
                        (Some(c), Priority::Background) => {
                            let threshold = background_threshold(c);
                            if bucket.tokens + 1e-9 >= threshold {
                                reserved = true;
                                bucket.tokens -= 1.0;
                                None
                            } else {
                                let missing = threshold - bucket.tokens;
                                Some(now + Duration::from_secs_f64(missing / c.refill_per_second))
                            }
                        }
                    },
                }
            };
            match wake_at {
                None => break,
                Some(at) => {
                    waited = true;
                    tokio::time::sleep_until(at).await;
                }
            }
        }
        if waited {
            let counters = &self.inner.counters[kind.index()];
            counters.throttle_waits.fetch_add(1, Ordering::Relaxed);
            let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            counters
                .throttle_wait_micros
                .fetch_add(micros, Ordering::Relaxed);
        }
    }

    async fn take_slot(&self, kind: CallKind, priority: Priority) -> Permit {
        let slot_priority = match priority {
            Priority::Foreground => kind.priority(),
            Priority::Background => BACKGROUND_SLOT_PRIORITY,
        };
        loop {
            let (key, rx) = {
                let mut state = self.lock();
                if state.in_flight < self.inner.config.max_in_flight && state.waiters.is_empty() {
                    state.in_flight += 1;
                    return Permit {
                        limiter: self.clone(),
                    };
                }
                let key = (slot_priority, state.next_seq);
                state.next_seq += 1;
                let (tx, rx) = oneshot::channel();
                state.waiters.insert(key, tx);
                (key, rx)
            };
            self.inner.counters[kind.index()]
                .slot_waits
                .fetch_add(1, Ordering::Relaxed);
            let mut pending = PendingSlot {
                limiter: self,
                key,
                rx,
                settled: false,
            };
            let handed_over = (&mut pending.rx).await.is_ok();
            pending.settled = true;
            if handed_over {
                return Permit {
                    limiter: self.clone(),
                };
            }
            // The sender vanished without a slot (cannot happen while we hold the limiter): queue
            // again rather than fail.
        }
    }

    /// Azure answered 429: nothing more of this kind goes to this budget until `retry_after` has
    /// passed, and the bucket restarts empty.
    pub(crate) fn throttled(&self, budget: &Budget, kind: CallKind, retry_after: Duration) {
        let config = self.bucket_config(budget, kind);
        {
            let mut state = self.lock();
            let now = Instant::now();
            let bucket = bucket_entry(&mut state, budget, kind, config, now);
            let until = now + retry_after;
            bucket.paused_until = Some(bucket.paused_until.map_or(until, |p| p.max(until)));
            bucket.tokens = bucket.tokens.min(0.0);
        }
        self.inner.counters[kind.index()]
            .throttled_responses
            .fetch_add(1, Ordering::Relaxed);
    }

    /// ARM reported how much of the budget is left (`x-ms-ratelimit-remaining-subscription-*`):
    /// other clients of the same principal, or a previous run, may have spent some of it.
    pub(crate) fn observe_remaining(&self, budget: &Budget, kind: CallKind, remaining: u32) {
        let config = self.bucket_config(budget, kind);
        if config.is_none() {
            return;
        }
        let mut state = self.lock();
        let bucket = bucket_entry(&mut state, budget, kind, config, Instant::now());
        bucket.tokens = bucket.tokens.min(f64::from(remaining));
    }

    pub(crate) fn config(&self) -> &LimitsConfig {
        &self.inner.config
    }

    pub(crate) fn snapshot(&self) -> LimiterSnapshot {
        let [deletes, reads, writes] = [CallKind::Delete, CallKind::Read, CallKind::Write]
            .map(|k| self.inner.counters[k.index()].snapshot());
        LimiterSnapshot {
            reads,
            writes,
            deletes,
            in_flight: self.lock().in_flight as u64,
        }
    }
}

/// The fewest tokens a bucket must hold for a background call to take one: more than half its
/// capacity (a full bucket of one).
fn background_threshold(c: BucketConfig) -> f64 {
    f64::from(c.capacity / 2 + 1)
}

/// The bucket for (budget, kind), refilled up to now.
fn bucket_entry<'a>(
    state: &'a mut State,
    budget: &Budget,
    kind: CallKind,
    config: Option<BucketConfig>,
    now: Instant,
) -> &'a mut Bucket {
    let capacity = config.map_or(0.0, |c| f64::from(c.capacity));
    let bucket = state
        .buckets
        .entry((budget.clone(), kind))
        .or_insert_with(|| Bucket {
            tokens: capacity,
            updated: now,
            paused_until: None,
        });
    if let Some(c) = config {
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * c.refill_per_second).min(capacity);
    }
    bucket.updated = now;
    if bucket.paused_until.is_some_and(|p| p <= now) {
        bucket.paused_until = None;
    }
    bucket
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Mutex as StdMutex;

    fn sub(s: &str) -> Budget {
        Budget::Subscription(s.to_owned())
    }

    fn config(capacity: u32, rate: f64, max_in_flight: usize) -> LimitsConfig {
        let b = BucketConfig {
            capacity,
            refill_per_second: rate,
        };
        LimitsConfig {
            reads: b,
            writes: b,
            deletes: b,
            graph: None,
            max_in_flight,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_bucket_serves_its_capacity_then_paces_at_the_refill_rate() {
        let limiter = Limiter::new(config(5, 2.0, 100));
        let start = Instant::now();
        let mut granted = Vec::new();
        for _ in 0..9 {
            drop(limiter.acquire(&sub("a"), CallKind::Write).await);
            granted.push(start.elapsed().as_millis());
        }
        assert_eq!(granted, vec![0, 0, 0, 0, 0, 500, 1000, 1500, 2000]);
        let stats = limiter.snapshot().writes;
        assert_eq!(stats.throttle_waits, 4);
        // Four sequential callers waited half a second each.
        assert!(
            (stats.throttle_wait_seconds - 2.0).abs() < 1e-3,
            "{stats:?}"
        );
        // Other kinds and subscriptions have their own buckets.
        let before = Instant::now();
        drop(limiter.acquire(&sub("a"), CallKind::Delete).await);
        drop(limiter.acquire(&sub("b"), CallKind::Write).await);
        assert_eq!(before.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_bucket_refills_to_capacity_and_no_further() {
        let limiter = Limiter::new(config(3, 1.0, 100));
        for _ in 0..3 {
            drop(limiter.acquire(&sub("a"), CallKind::Read).await);
        }
        tokio::time::sleep(Duration::from_secs(60)).await;
        let start = Instant::now();
        for _ in 0..4 {
            drop(limiter.acquire(&sub("a"), CallKind::Read).await);
        }
        assert_eq!(start.elapsed(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_pauses_only_its_subscription_and_kind() {
        let limiter = Limiter::new(LimitsConfig::default());
        limiter.throttled(&sub("a"), CallKind::Write, Duration::from_secs(7));
        let start = Instant::now();
        drop(limiter.acquire(&sub("a"), CallKind::Delete).await);
        drop(limiter.acquire(&sub("b"), CallKind::Write).await);
        assert_eq!(start.elapsed(), Duration::ZERO);
        drop(limiter.acquire(&sub("a"), CallKind::Write).await);
        assert_eq!(start.elapsed(), Duration::from_secs(7));
        let stats = limiter.snapshot().writes;
        assert_eq!(stats.throttled_responses, 1);
        assert_eq!(stats.throttle_waits, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn graph_is_unpaced_by_default_but_honours_429() {
        let limiter = Limiter::new(LimitsConfig::default());
        let start = Instant::now();
        for _ in 0..1000 {
            drop(limiter.acquire(&Budget::Graph, CallKind::Write).await);
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
        limiter.throttled(&Budget::Graph, CallKind::Write, Duration::from_secs(3));
        drop(limiter.acquire(&Budget::Graph, CallKind::Write).await);
        assert_eq!(start.elapsed(), Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn remaining_header_lowers_the_local_budget() {
        let limiter = Limiter::new(config(200, 10.0, 100));
        limiter.observe_remaining(&sub("a"), CallKind::Write, 1);
        let start = Instant::now();
        drop(limiter.acquire(&sub("a"), CallKind::Write).await);
        assert_eq!(start.elapsed(), Duration::ZERO);
        drop(limiter.acquire(&sub("a"), CallKind::Write).await);
        assert_eq!(start.elapsed(), Duration::from_millis(100));
    }

    /// Queues writes, reads and deletes behind a full slot pool (writes first), then frees the
    /// slot: deletes must come out first, then reads, then writes, each in arrival order.
    #[tokio::test(start_paused = true)]
    async fn free_slots_go_to_deletes_then_reads_then_writes() {
        let limiter = Limiter::new(config(1000, 1000.0, 1));
        let held = limiter.acquire(&sub("a"), CallKind::Write).await;
        let order = Arc::new(StdMutex::new(Vec::new()));
        let arrivals = [
            ("w1", CallKind::Write),
            ("w2", CallKind::Write),
            ("r1", CallKind::Read),
            ("d1", CallKind::Delete),
            ("w3", CallKind::Write),
            ("d2", CallKind::Delete),
        ];
        let mut tasks = Vec::new();
        for (name, kind) in arrivals {
            let (limiter, order) = (limiter.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let permit = limiter.acquire(&sub("a"), kind).await;
                order.lock().unwrap().push(name);
                tokio::time::sleep(Duration::from_millis(10)).await;
                drop(permit);
            }));
            // Let it queue before the next arrives.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        drop(held);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(
            *order.lock().unwrap(),
            vec!["d1", "d2", "r1", "w1", "w2", "w3"]
        );
        assert_eq!(limiter.snapshot().writes.slot_waits, 3);
        assert_eq!(limiter.snapshot().in_flight, 0);
    }

    /// A background caller queued first still gets a slot only after a delete, a read and a
    /// write that arrived after it.
    #[tokio::test(start_paused = true)]
    async fn a_background_waiter_gets_a_slot_after_later_foreground_callers() {
        let limiter = Limiter::new(config(1000, 1000.0, 1));
        let held = limiter.acquire(&sub("a"), CallKind::Write).await;
        let order = Arc::new(StdMutex::new(Vec::new()));
        let arrivals = [
            ("log1", CallKind::Read, Priority::Background),
            ("log2", CallKind::Read, Priority::Background),
            ("w1", CallKind::Write, Priority::Foreground),
            ("r1", CallKind::Read, Priority::Foreground),
            ("d1", CallKind::Delete, Priority::Foreground),
        ];
        let mut tasks = Vec::new();
        for (name, kind, priority) in arrivals {
            let (limiter, order) = (limiter.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let permit = limiter.acquire_as(&sub("a"), kind, priority).await;
                order.lock().unwrap().push(name);
                tokio::time::sleep(Duration::from_millis(10)).await;
                drop(permit);
            }));
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        drop(held);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(
            *order.lock().unwrap(),
            vec!["d1", "r1", "w1", "log1", "log2"]
        );
        assert_eq!(limiter.snapshot().in_flight, 0);
    }

    /// With the read bucket at half its capacity a foreground read goes at once, a background
    /// read waits until the refill lifts the bucket above half, and never spends the lower half.
    #[tokio::test(start_paused = true)]
    async fn a_background_read_leaves_the_lower_half_of_the_bucket_to_foreground_reads() {
        // Capacity 10, one token a second: background needs at least 6 tokens.
        let limiter = Limiter::new(config(10, 1.0, 100));
        let start = Instant::now();
        // Background takes the upper half (10 -> 5) without waiting.
        for _ in 0..5 {
            drop(
                limiter
                    .acquire_as(&sub("a"), CallKind::Read, Priority::Background)
                    .await,
            );
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
        // At half (5 tokens): a background read waits for one token of refill...
        let l2 = limiter.clone();
        let background = tokio::spawn(async move {
            drop(
                l2.acquire_as(&sub("a"), CallKind::Read, Priority::Background)
                    .await,
            );
            start.elapsed()
        });
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(!background.is_finished());
        // ...while foreground reads spend the lower half at once.
        for _ in 0..5 {
            drop(limiter.acquire(&sub("a"), CallKind::Read).await);
        }
        assert_eq!(start.elapsed(), Duration::from_millis(1));
        // The bucket is (nearly) empty now, so the background read waits until the refill has
        // brought it back to 6 tokens: 6 seconds after it stood at 0 (t = 0 plus the millisecond
        // of refill the foreground reads found).
        let waited = background.await.unwrap();
        assert_eq!(waited, Duration::from_secs(6));
        assert_eq!(limiter.snapshot().reads.throttle_waits, 1);
    }

    /// A 429 pauses the read budget for background reads as for foreground ones, until its
    /// retry time.
    #[tokio::test(start_paused = true)]
    async fn a_429_pauses_background_reads_until_retry_after() {
        let limiter = Limiter::new(config(10, 10.0, 100));
        limiter.throttled(&sub("a"), CallKind::Read, Duration::from_secs(3));
        let start = Instant::now();
        drop(
            limiter
                .acquire_as(&sub("a"), CallKind::Read, Priority::Background)
                .await,
        );
        assert_eq!(start.elapsed(), Duration::from_secs(3));
        // Other budgets are untouched.
        drop(
            limiter
                .acquire_as(&sub("b"), CallKind::Read, Priority::Background)
                .await,
        );
        assert_eq!(start.elapsed(), Duration::from_secs(3));
        assert_eq!(limiter.snapshot().reads.throttle_waits, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_waiter_does_not_leak_its_slot() {
        let limiter = Limiter::new(config(1000, 1000.0, 1));
        let held = limiter.acquire(&sub("a"), CallKind::Write).await;
        let l2 = limiter.clone();
        let waiter = tokio::spawn(async move { l2.acquire(&sub("a"), CallKind::Delete).await });
        tokio::time::sleep(Duration::from_millis(1)).await;
        waiter.abort();
        let _ = waiter.await;
        drop(held);
        // With the slot leaked this would never finish.
        let permit = tokio::time::timeout(
            Duration::from_secs(1),
            limiter.acquire(&sub("a"), CallKind::Write),
        )
        .await;
        assert!(permit.is_ok());
        drop(permit);
        assert_eq!(limiter.snapshot().in_flight, 0);
    }

    #[test]
    fn invalid_limits_are_named() {
        let mut c = LimitsConfig::default();
        c.writes.refill_per_second = 0.0;
        assert!(c.validate().unwrap_err().contains("limits.writes"));
        let c = LimitsConfig {
            max_in_flight: 0,
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().contains("max_in_flight"));
        assert!(LimitsConfig::default().validate().is_ok());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// For any arrival pattern, the calls granted by time t never exceed
        /// capacity + rate * t (the bucket's promise to ARM), and every call is granted as soon as
        /// that bound allows (no needless waiting).
        #[test]
        fn grants_follow_the_token_bucket(
            capacity in 1u32..20,
            rate in 1u32..50,
            gaps_ms in proptest::collection::vec(0u64..300, 1..60),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap();
            let grants: Vec<f64> = rt.block_on(async {
                let limiter = Limiter::new(config(capacity, f64::from(rate), 1000));
                let start = Instant::now();
                let mut handles = Vec::new();
                for gap in &gaps_ms {
                    tokio::time::sleep(Duration::from_millis(*gap)).await;
                    let limiter = limiter.clone();
                    handles.push(tokio::spawn(async move {
                        drop(limiter.acquire(&sub("s"), CallKind::Write).await);
                        start.elapsed().as_secs_f64()
                    }));
                }
                let mut out = Vec::new();
                for h in handles {
                    out.push(h.await.unwrap());
                }
                out
            });
            // Arrival times, to check nobody waited longer than the model demands.
            let mut arrivals = Vec::new();
            let mut t = 0u64;
            for g in &gaps_ms {
                t += g;
                arrivals.push(t as f64 / 1000.0);
            }
            // Model: a bucket where each caller reserves the next token on arrival.
            let (cap, r) = (f64::from(capacity), f64::from(rate));
            let mut tokens = cap;
            let mut last_arrival = 0.0f64;
            let mut previous_grant = 0.0f64;
            for (i, (&arrival, &granted)) in arrivals.iter().zip(&grants).enumerate() {
                tokens = (tokens + (arrival - last_arrival) * r).min(cap) - 1.0;
                last_arrival = arrival;
                let at = arrival + (-tokens).max(0.0) / r;
                prop_assert!((granted - at).abs() < 0.01, "call {i}: granted {granted}, model {at}");
                prop_assert!(granted + 1e-9 >= previous_grant, "call {i} overtook an earlier caller");
                previous_grant = granted;
                let served = grants.iter().filter(|g| **g <= granted + 1e-9).count() as f64;
                prop_assert!(served <= cap + r * granted + 1.0 + 1e-6);
            }
        }
    }
}
