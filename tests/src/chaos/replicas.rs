//! Two operator replicas competing for the leader Lease, killed and restarted on the
//! schedule's word, and a monitor that records when no replica led.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::anyhow;
use chrono::{DateTime, Utc};
use k8s_openapi::api::coordination::v1::Lease;

use super::schedule::{KillTarget, Restart};
use crate::{Operator, World};

/// The operator's own settings for the campaign: quick retries (as the throttling suite), so a
/// refused DELETE is retried within a second or two of Azure taking requests again.
const OPERATOR_ENV: [(&str, &str); 1] = [("LAPSE_RETRY_AFTER", "1s")];

#[derive(Debug)]
struct Replica {
    name: String,
    op: Operator,
}

/// An interval of wall-clock time.
pub type Span = (DateTime<Utc>, DateTime<Utc>);

#[derive(Debug)]
pub struct Replicas {
    live: Vec<Replica>,
    /// Killed or exited processes, kept for their logs.
    dead: Vec<Replica>,
    /// Pods rescheduled so far (each gets a new name).
    rescheduled: usize,
    /// The health ports of the live replicas, for the monitor.
    ports: Arc<Mutex<Vec<u16>>>,
    /// Replicas that exited without being killed (e.g. after losing leadership), restarted.
    pub exits: Vec<String>,
}

impl Replicas {
    /// replica-a up and leading, replica-b started as its standby.
    pub async fn start(w: &World) -> anyhow::Result<Self> {
        let mut r = Self {
            live: Vec::new(),
            dead: Vec::new(),
            rescheduled: 0,
            ports: Arc::default(),
            exits: Vec::new(),
        };
        r.spawn(w, "replica-a")?;
        if let Some(first) = r.live.first_mut() {
            first.op.wait_ready(&w.http).await?;
        }
        r.spawn(w, "replica-b")?;
        Ok(r)
    }

    fn spawn(&mut self, w: &World, name: &str) -> anyhow::Result<()> {
        let mut env = vec![("POD_NAME", name)];
        env.extend(OPERATOR_ENV);
        let op = w.spawn_operator(&env)?;
        self.live.push(Replica {
            name: name.to_owned(),
            op,
        });
        self.publish_ports();
        Ok(())
    }

    fn publish_ports(&self) {
        let ports = self.live.iter().map(|r| r.op.health_port).collect();
        *self
            .ports
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = ports;
    }

    /// The index of the live replica that leads: the one whose /readyz says "ok", else the
    /// one the leader Lease names, else none.
    async fn leader(&self, w: &World) -> anyhow::Result<Option<usize>> {
        for (i, r) in self.live.iter().enumerate() {
            if readyz_ok(&w.http, r.op.health_port).await {
                return Ok(Some(i));
            }
        }
        let leases: kube::Api<Lease> = kube::Api::namespaced(w.kube.clone(), &w.operator_namespace);
        let holder = leases
            .get_opt("lapse-operator")
            .await?
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity);
        Ok(holder.and_then(|h| self.live.iter().position(|r| r.name == h)))
    }

    /// SIGKILLs the leader or the standby and restarts it at once, in place or as a
    /// rescheduled pod. Returns who was killed, and whether it was leading.
    pub async fn kill(
        &mut self,
        w: &World,
        target: KillTarget,
        restart: Restart,
    ) -> anyhow::Result<(String, bool)> {
        let leader = self.leader(w).await?;
        let victim = match (target, leader) {
            (KillTarget::Leader, Some(i)) => i,
            // No one leads right now (a failover is under way): the first replica.
            (KillTarget::Leader, None) => 0,
            (KillTarget::Standby, Some(i)) => usize::from(i == 0),
            (KillTarget::Standby, None) => self.live.len().saturating_sub(1),
        };
        if victim >= self.live.len() {
            return Err(anyhow!("no replica to kill"));
        }
        let mut r = self.live.remove(victim);
        r.op.kill();
        let role = if leader == Some(victim) {
            "leader"
        } else {
            "standby"
        };
        let name = match restart {
            Restart::SameName => r.name.clone(),
            Restart::NewName => {
                self.rescheduled += 1;
                format!("replica-r{}", self.rescheduled)
            }
        };
        let what = format!("killed {} ({role}), restarted as {name}", r.name);
        self.dead.push(r);
        self.spawn(w, &name)?;
        Ok((what, leader == Some(victim)))
    }

    /// Restarts, under the same name, any replica that exited by itself (an operator that
    /// lost leadership exits, and Kubernetes would restart it).
    pub fn revive_exited(&mut self, w: &World) -> anyhow::Result<()> {
        let mut i = 0;
        while i < self.live.len() {
            if self.live[i].op.is_running() {
                i += 1;
                continue;
            }
            let mut r = self.live.remove(i);
            let status =
                r.op.exit_status()
                    .map_or_else(|| "?".to_owned(), |s| s.to_string());
            self.exits.push(format!("{} exited ({status})", r.name));
            let name = r.name.clone();
            self.dead.push(r);
            self.spawn(w, &name)?;
        }
        Ok(())
    }

    /// Every operator log written, live and dead.
    pub fn logs(&self) -> Vec<(String, std::path::PathBuf)> {
        self.dead
            .iter()
            .chain(&self.live)
            .map(|r| (r.name.clone(), r.op.log.clone()))
            .collect()
    }

    /// Starts the monitor of who leads.
    pub fn monitor(&self, http: reqwest::Client) -> LeadershipMonitor {
        LeadershipMonitor::spawn(self.ports.clone(), http)
    }

    /// SIGTERM to every live replica (they give up the leader Lease).
    pub fn stop(&mut self) {
        for r in &mut self.live {
            r.op.stop();
        }
    }
}

async fn readyz_ok(http: &reqwest::Client, port: u16) -> bool {
    let url = format!("http://127.0.0.1:{port}/readyz");
    let probe = async {
        let r = http.get(&url).send().await.ok()?;
        if !r.status().is_success() {
            return None;
        }
        r.text().await.ok()
    };
    // A probe that takes longer than this counts as "not leading": a generous reading, since
    // time without a leader excuses overstay.
    matches!(
        tokio::time::timeout(Duration::from_secs(1), probe).await,
        Ok(Some(body)) if body.trim() == "ok"
    )
}

/// Polls every live replica's /readyz and records the spans when none answered "ok" (leading
/// with its caches loaded).
#[derive(Debug)]
pub struct LeadershipMonitor {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<Span>>,
}

const POLL: Duration = Duration::from_millis(200);

impl LeadershipMonitor {
    fn spawn(ports: Arc<Mutex<Vec<u16>>>, http: reqwest::Client) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let task = tokio::spawn(async move {
            let mut gaps: Vec<Span> = Vec::new();
            // The end of the last round that saw a leader.
            let mut last_led = Utc::now();
            let mut led = true;
            while !stopping.load(Ordering::Relaxed) {
                let round: Vec<u16> = ports
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone();
                let mut any = false;
                for port in round {
                    if readyz_ok(&http, port).await {
                        any = true;
                        break;
                    }
                }
                let now = Utc::now();
                match (led, any) {
                    (true, true) => last_led = now,
                    (true, false) => led = false,
                    (false, true) => {
                        gaps.push((last_led, now));
                        led = true;
                        last_led = now;
                    }
                    (false, false) => {}
                }
                tokio::time::sleep(POLL).await;
            }
            if !led {
                gaps.push((last_led, Utc::now()));
            }
            gaps
        });
        Self { stop, task }
    }

    /// Stops polling; the spans without a leader.
    pub async fn finish(self) -> anyhow::Result<Vec<Span>> {
        self.stop.store(true, Ordering::Relaxed);
        Ok(self.task.await?)
    }
}
