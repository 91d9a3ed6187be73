//! Leader election on a `coordination.k8s.io/v1` Lease (the leader Lease), so two replicas
//! never both act.
//!
//! The holder renews every `renew_every`; another replica takes over only once it has seen the
//! leader Lease record unchanged for `leader_lease_duration`, measured on its own clock from when
//! it first saw that record (client-go's way: the holder's `renewTime` is another machine's
//! clock). Writes use the leader Lease's resourceVersion, so two candidates racing for an
//! expired leader Lease cannot both win (one gets 409 Conflict). Every call has a deadline: a
//! leader whose renewal hangs steps down within `renew_deadline`, before anyone else may take
//! over.
//!
//! "Lease" here is always this leader Lease, never an AccessGrant's lease.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::Utc;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};

#[derive(Clone, Debug)]
pub struct LeaderConfig {
    /// The leader Lease's namespace (the operator's own).
    pub namespace: String,
    /// The leader Lease's name.
    pub leader_lease_name: String,
    /// This replica's identity (its pod name).
    pub identity: String,
    /// How long the leader Lease holds without renewal (its `leaseDurationSeconds`).
    pub leader_lease_duration: Duration,
    pub renew_every: Duration,
    /// A leader that has not renewed for this long steps down; shorter than
    /// `leader_lease_duration`, so it has stopped before a standby may take over.
    pub renew_deadline: Duration,
}

#[derive(Debug, thiserror::Error)]
enum LeaderError {
    #[error("reading or writing the leader Lease {namespace}/{name}: {source}")]
    Api {
        namespace: String,
        name: String,
        source: kube::Error,
    },
    #[error("reading or writing the leader Lease {namespace}/{name}: no answer within {}s", after.as_secs())]
    Timeout {
        namespace: String,
        name: String,
        after: Duration,
    },
}

/// What of the leader Lease record a candidate last saw, and when (on its own clock).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Observed {
    holder: Option<String>,
    renew_time: Option<i64>,
    transitions: Option<i32>,
}

/// When this replica first saw the leader Lease record as it is now, on its own clock.
#[derive(Debug, Default)]
struct ObservationClock(Mutex<Option<(Observed, Instant)>>);

impl ObservationClock {
    /// A changed record restarts the clock.
    fn seen_since(&self, record: Observed, now: Instant) -> Instant {
        let mut observed = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match observed.as_ref() {
            Some((last, since)) if *last == record => *since,
            _ => {
                *observed = Some((record, now));
                now
            }
        }
    }
}

#[derive(Debug)]
pub struct LeaderElector {
    api: Api<Lease>,
    cfg: LeaderConfig,
    observed: ObservationClock,
}

impl LeaderElector {
    pub fn new(client: kube::Client, cfg: LeaderConfig) -> Self {
        Self {
            api: Api::namespaced(client, &cfg.namespace),
            cfg,
            observed: ObservationClock::default(),
        }
    }

    /// One attempt, bounded by `deadline`.
    async fn attempt(&self, deadline: Duration) -> Result<bool, LeaderError> {
        match tokio::time::timeout(deadline, self.try_acquire_or_renew()).await {
            Ok(result) => result,
            Err(_) => Err(LeaderError::Timeout {
                namespace: self.cfg.namespace.clone(),
                name: self.cfg.leader_lease_name.clone(),
                after: deadline,
            }),
        }
    }

    fn err(&self, source: kube::Error) -> LeaderError {
        LeaderError::Api {
            namespace: self.cfg.namespace.clone(),
            name: self.cfg.leader_lease_name.clone(),
            source,
        }
    }

    /// One attempt: true when this replica holds the leader Lease afterwards.
    async fn try_acquire_or_renew(&self) -> Result<bool, LeaderError> {
        let now = Utc::now();
        let stamp = MicroTime(
            k8s_openapi::jiff::Timestamp::from_millisecond(now.timestamp_millis())
                .unwrap_or_default(),
        );
        let secs = i32::try_from(self.cfg.leader_lease_duration.as_secs()).unwrap_or(i32::MAX);
        match self
            .api
            .get_opt(&self.cfg.leader_lease_name)
            .await
            .map_err(|e| self.err(e))?
        {
            None => {
                let leader_lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.cfg.leader_lease_name.clone()),
                        ..Default::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.cfg.identity.clone()),
                        lease_duration_seconds: Some(secs),
                        acquire_time: Some(stamp.clone()),
                        renew_time: Some(stamp),
                        lease_transitions: Some(0),
                        ..Default::default()
                    }),
                };
                match self.api.create(&PostParams::default(), &leader_lease).await {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                    Err(e) => Err(self.err(e)),
                }
            }
            Some(mut leader_lease) => {
                let spec = leader_lease.spec.get_or_insert_with(Default::default);
                let mine = spec.holder_identity.as_deref() == Some(self.cfg.identity.as_str());
                let record = Observed {
                    holder: spec.holder_identity.clone(),
                    renew_time: spec.renew_time.as_ref().map(|t| t.0.as_millisecond()),
                    transitions: spec.lease_transitions,
                };
                let since = self.observed.seen_since(record, Instant::now());
                let held_for = Duration::from_secs(
                    spec.lease_duration_seconds
                        .and_then(|s| u64::try_from(s).ok())
                        .unwrap_or(0),
                );
                let expired = since.elapsed() > held_for;
                if !mine && !expired && spec.holder_identity.is_some() {
                    return Ok(false);
                }
                if !mine {
                    spec.holder_identity = Some(self.cfg.identity.clone());
                    spec.acquire_time = Some(stamp.clone());
                    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                }
                spec.renew_time = Some(stamp);
                spec.lease_duration_seconds = Some(secs);
                // replace() carries the resourceVersion we read: a racing writer gets 409.
                match self
                    .api
                    .replace(
                        &self.cfg.leader_lease_name,
                        &PostParams::default(),
                        &leader_lease,
                    )
                    .await
                {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                    Err(e) => Err(self.err(e)),
                }
            }
        }
    }

    /// Waits until this replica leads.
    pub async fn acquire(&self) {
        loop {
            match self.attempt(self.cfg.renew_deadline).await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader election"),
            }
            tokio::time::sleep(self.cfg.renew_every).await;
        }
    }

    /// Renews until leadership is lost (returns then). No successful renewal for
    /// `renew_deadline` counts as lost, however the calls fail or hang: by then this replica must
    /// have stopped, because from `leader_lease_duration` on another may take over.
    pub async fn hold(&self) {
        let mut last_ok = Instant::now();
        loop {
            tokio::time::sleep(self.cfg.renew_every).await;
            let left = self.cfg.renew_deadline.saturating_sub(last_ok.elapsed());
            if left.is_zero() {
                return;
            }
            match self.attempt(left).await {
                Ok(true) => last_ok = Instant::now(),
                Ok(false) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "renewing leadership");
                    if last_ok.elapsed() >= self.cfg.renew_deadline {
                        return;
                    }
                }
            }
        }
    }

    /// Gives the leader Lease up on shutdown so a successor need not wait for it to expire.
    pub async fn release(&self) {
        let deadline = self.cfg.renew_every;
        if let Ok(Ok(Some(mut leader_lease))) =
            tokio::time::timeout(deadline, self.api.get_opt(&self.cfg.leader_lease_name)).await
            && let Some(spec) = leader_lease.spec.as_mut()
            && spec.holder_identity.as_deref() == Some(self.cfg.identity.as_str())
        {
            spec.holder_identity = None;
            let _ = tokio::time::timeout(
                deadline,
                self.api.replace(
                    &self.cfg.leader_lease_name,
                    &PostParams::default(),
                    &leader_lease,
                ),
            )
            .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(holder: &str, renewed: i64) -> Observed {
        Observed {
            holder: Some(holder.into()),
            renew_time: Some(renewed),
            transitions: Some(0),
        }
    }

    #[test]
    fn expiry_is_measured_on_the_local_clock_from_the_last_change_seen() {
        let e = ObservationClock::default();
        let t0 = Instant::now();
        // The holder's clock may say anything: what counts is when this replica saw it change.
        assert_eq!(e.seen_since(record("other", 1_000), t0), t0);
        let later = t0 + Duration::from_secs(20);
        assert_eq!(
            e.seen_since(record("other", 1_000), later),
            t0,
            "unchanged record"
        );
        assert_eq!(
            e.seen_since(record("other", 2_000), later),
            later,
            "renewed"
        );
        assert_eq!(
            e.seen_since(record("third", 2_000), later + Duration::from_secs(1)),
            later + Duration::from_secs(1)
        );
    }
}
