//! Leader election on a `coordination.k8s.io/v1` Lease, so two replicas never both act.
//!
//! The holder renews every `renew_every`; another replica takes over only once the lease has
//! not been renewed for `lease_duration`. Writes use the Lease's resourceVersion, so two
//! candidates racing for an expired lease cannot both win (one gets 409 Conflict).

use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};

#[derive(Clone, Debug)]
pub struct LeaderConfig {
    pub namespace: String,
    pub lease_name: String,
    /// This replica's identity (its pod name).
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_every: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("reading or writing Lease {namespace}/{name}: {source}")]
    Api {
        namespace: String,
        name: String,
        source: kube::Error,
    },
}

#[derive(Debug)]
pub struct LeaderElector {
    api: Api<Lease>,
    cfg: LeaderConfig,
}

impl LeaderElector {
    pub fn new(client: kube::Client, cfg: LeaderConfig) -> Self {
        Self {
            api: Api::namespaced(client, &cfg.namespace),
            cfg,
        }
    }

    fn err(&self, source: kube::Error) -> LeaderError {
        LeaderError::Api {
            namespace: self.cfg.namespace.clone(),
            name: self.cfg.lease_name.clone(),
            source,
        }
    }

    /// One attempt: true when this replica holds the lease afterwards.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, LeaderError> {
        let now = Utc::now();
        let stamp = MicroTime(
            k8s_openapi::jiff::Timestamp::from_millisecond(now.timestamp_millis())
                .unwrap_or_default(),
        );
        let secs = i32::try_from(self.cfg.lease_duration.as_secs()).unwrap_or(i32::MAX);
        match self
            .api
            .get_opt(&self.cfg.lease_name)
            .await
            .map_err(|e| self.err(e))?
        {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.cfg.lease_name.clone()),
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
                match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                    Err(e) => Err(self.err(e)),
                }
            }
            Some(mut lease) => {
                let spec = lease.spec.get_or_insert_with(Default::default);
                let mine = spec.holder_identity.as_deref() == Some(self.cfg.identity.as_str());
                let renewed = spec
                    .renew_time
                    .as_ref()
                    .map(|t| t.0.as_millisecond())
                    .unwrap_or(0);
                let held_for = spec.lease_duration_seconds.map_or(0, i64::from) * 1000;
                let expired = now.timestamp_millis() > renewed + held_for;
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
                    .replace(&self.cfg.lease_name, &PostParams::default(), &lease)
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
            match self.try_acquire_or_renew().await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader election"),
            }
            tokio::time::sleep(self.cfg.renew_every).await;
        }
    }

    /// Renews until leadership is lost (returns then). A renewal that keeps failing for the
    /// whole lease duration counts as lost: another replica may have taken over.
    pub async fn hold(&self) {
        let mut last_ok = std::time::Instant::now();
        loop {
            tokio::time::sleep(self.cfg.renew_every).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_ok = std::time::Instant::now(),
                Ok(false) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "renewing leadership");
                    if last_ok.elapsed() >= self.cfg.lease_duration {
                        return;
                    }
                }
            }
        }
    }

    /// Gives the lease up on shutdown so a successor need not wait for it to expire.
    pub async fn release(&self) {
        if let Ok(Some(mut lease)) = self.api.get_opt(&self.cfg.lease_name).await
            && let Some(spec) = lease.spec.as_mut()
            && spec.holder_identity.as_deref() == Some(self.cfg.identity.as_str())
        {
            spec.holder_identity = None;
            let _ = self
                .api
                .replace(&self.cfg.lease_name, &PostParams::default(), &lease)
                .await;
        }
    }
}
