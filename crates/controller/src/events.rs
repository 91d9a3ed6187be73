//! Events leave through one queue and are published, in order, by one task. A reconcile never
//! waits for the API server to record an Event before it acts on Azure: a revocation's DELETE
//! must not queue behind its own "Expired" Event (the status, which crash safety needs first,
//! is still patched before any Azure call).
//!
//! Publishing is kube-runtime's `Recorder`'s, without its cache: the Recorder keeps a copy of
//! every Event it sent for six minutes (to count repeats into a series), about 2 KiB each, which
//! at 10,000 leases was the operator's largest allocation (docs/performance.md). Here a repeat
//! is remembered by a 64-bit hash of what the Recorder keys a series on (object, type, action,
//! reason, related) with the Event's name and count.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Reporter};
use kube::{Api, Client};
use prometheus_client::metrics::counter::Counter;
use serde_json::json;
use tokio::sync::mpsc;

use crate::repeat::RepeatWindow;

/// Events waiting to be published, at most; beyond it new ones are dropped and counted
/// (Kubernetes Events are best effort; the grant's status and the metrics are the record).
const CAPACITY: usize = 10_000;

/// How long an Event identical to one already published for the same object is not sent
/// again. A reconcile that runs on a watch cache not yet showing our own status write decides
/// the same transition twice; its Event must still appear once.
const REPEAT_WINDOW: Duration = Duration::from_secs(60);

/// How long after its last occurrence a repeat still counts into the same Event's series
/// (kube-runtime's Recorder: 6 minutes), rather than being a new Event.
const SERIES_TTL: Duration = Duration::from_secs(360);

/// What to do with an Event.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Publish {
    /// The same went out within [`REPEAT_WINDOW`].
    Skip,
    /// News: a new Event object.
    Create,
    /// A repeat after the window: count it into the Event already published.
    Series {
        namespace: String,
        name: String,
        count: i32,
    },
}

/// An Event published in the last [`SERIES_TTL`]. Its namespace is the object's (the series
/// key names the object), so it is not kept: one of these per Event of the last six minutes.
#[derive(Debug)]
struct Published {
    name: Box<str>,
    count: i32,
    last: Instant,
}

/// Events published recently: exact repeats (object, reason, note) within [`REPEAT_WINDOW`],
/// and, by a hash of what kube-runtime's Recorder keys a series on (object, type, action,
/// reason, related; not the note), the Event a later repeat counts into.
#[derive(Debug)]
struct Recent {
    exact: RepeatWindow<(String, String, String)>,
    series: HashMap<u64, Published>,
    pruned: Option<Instant>,
}

impl Default for Recent {
    fn default() -> Self {
        Self {
            exact: RepeatWindow::new(REPEAT_WINDOW),
            series: HashMap::new(),
            pruned: None,
        }
    }
}

fn object_of(reference: &ObjectReference) -> String {
    reference.uid.clone().unwrap_or_else(|| {
        format!(
            "{}/{}",
            reference.namespace.as_deref().unwrap_or_default(),
            reference.name.as_deref().unwrap_or_default()
        )
    })
}

fn series_key(event: &Event, object: &str) -> u64 {
    let mut h = DefaultHasher::new();
    object.hash(&mut h);
    let type_ = match event.type_ {
        EventType::Normal => "Normal",
        EventType::Warning => "Warning",
    };
    (type_, &event.action, &event.reason).hash(&mut h);
    event
        .secondary
        .as_ref()
        .map(|r| (&r.uid, &r.namespace, &r.name))
        .hash(&mut h);
    h.finish()
}

impl Recent {
    /// Whether and how to publish `event` for `reference` at `now`.
    fn decide(&mut self, event: &Event, reference: &ObjectReference, now: Instant) -> Publish {
        let object = object_of(reference);
        let series = series_key(event, &object);
        let exact = (
            object,
            event.reason.clone(),
            event.note.clone().unwrap_or_default(),
        );
        if !self.exact.first(exact, now) {
            return Publish::Skip;
        }
        self.prune(now);
        match self.series.get_mut(&series) {
            Some(p) if now.saturating_duration_since(p.last) < SERIES_TTL => {
                p.count += 1;
                p.last = now;
                Publish::Series {
                    namespace: reference.namespace.clone().unwrap_or_default(),
                    name: p.name.to_string(),
                    count: p.count,
                }
            }
            _ => Publish::Create,
        }
    }

    /// Remembers the Event just created under `name`.
    fn created(&mut self, event: &Event, reference: &ObjectReference, name: String, now: Instant) {
        self.series.insert(
            series_key(event, &object_of(reference)),
            Published {
                name: name.into(),
                count: 1,
                last: now,
            },
        );
    }

    /// Forgets what is past its series once per repeat window, and gives the room back: a
    /// burst of leases must not leave its peak allocated.
    fn prune(&mut self, now: Instant) {
        if self
            .pruned
            .is_some_and(|at| now.saturating_duration_since(at) < REPEAT_WINDOW)
        {
            return;
        }
        self.series
            .retain(|_, p| now.saturating_duration_since(p.last) < SERIES_TTL);
        if self.series.capacity() > 2 * self.series.len() + 64 {
            self.series.shrink_to_fit();
        }
        self.pruned = Some(now);
    }
}

/// What kube-runtime's Recorder writes for a new Event (events.k8s.io/v1).
fn new_event(reporter: &Reporter, event: &Event, reference: &ObjectReference) -> K8sEvent {
    let now = Timestamp::now();
    K8sEvent {
        action: Some(event.action.clone()),
        reason: Some(event.reason.clone()),
        event_time: Some(MicroTime(now)),
        regarding: Some(reference.clone()),
        note: event.note.clone(),
        metadata: ObjectMeta {
            namespace: reference.namespace.clone(),
            name: Some(format!(
                "{}.{:x}",
                reference.name.as_ref().unwrap_or(&reporter.controller),
                now.as_nanosecond()
            )),
            ..Default::default()
        },
        reporting_controller: Some(reporter.controller.clone()),
        reporting_instance: Some(
            reporter
                .instance
                .clone()
                .unwrap_or_else(|| reporter.controller.clone()),
        ),
        type_: Some(
            match event.type_ {
                EventType::Normal => "Normal",
                EventType::Warning => "Warning",
            }
            .into(),
        ),
        related: event.secondary.clone(),
        ..Default::default()
    }
}

/// Publishes one Event: created, counted into its series, or skipped.
async fn publish(
    client: &Client,
    reporter: &Reporter,
    recent: &mut Recent,
    event: &Event,
    reference: &ObjectReference,
) -> Result<(), kube::Error> {
    let now = Instant::now();
    match recent.decide(event, reference, now) {
        Publish::Skip => Ok(()),
        Publish::Create => {
            let e = new_event(reporter, event, reference);
            let ns = e.metadata.namespace.as_deref().unwrap_or("default");
            let created = Api::<K8sEvent>::namespaced(client.clone(), ns)
                .create(&PostParams::default(), &e)
                .await?;
            recent.created(
                event,
                reference,
                created.metadata.name.unwrap_or_default(),
                now,
            );
            Ok(())
        }
        Publish::Series {
            namespace,
            name,
            count,
        } => {
            let series = EventSeries {
                count,
                last_observed_time: MicroTime(Timestamp::now()),
            };
            let ns = if namespace.is_empty() {
                "default"
            } else {
                &namespace
            };
            Api::<K8sEvent>::namespaced(client.clone(), ns)
                .patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({ "series": series })),
                )
                .await
                .map(|_| ())
        }
    }
}

/// The sending side, shared by every reconcile.
#[derive(Clone, Debug)]
pub struct EventQueue {
    tx: mpsc::Sender<(Event, ObjectReference)>,
    dropped: Counter,
}

impl EventQueue {
    /// Starts the publishing task on the current runtime.
    pub fn start(client: Client, reporter: Reporter, dropped: Counter) -> Self {
        let (tx, mut rx) = mpsc::channel::<(Event, ObjectReference)>(CAPACITY);
        tokio::spawn(async move {
            let mut recent = Recent::default();
            while let Some((event, reference)) = rx.recv().await {
                if let Err(err) = publish(&client, &reporter, &mut recent, &event, &reference).await
                {
                    tracing::warn!(error = %err, reason = event.reason, "publishing an Event");
                }
            }
        });
        Self { tx, dropped }
    }

    /// Queues an Event without waiting.
    pub fn send(&self, event: Event, reference: ObjectReference) {
        if let Err(err) = self.tx.try_send((event, reference)) {
            self.dropped.inc();
            let (event, _) = match err {
                mpsc::error::TrySendError::Full(e) | mpsc::error::TrySendError::Closed(e) => e,
            };
            tracing::warn!(reason = event.reason, "Event queue full: Event dropped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::events::EventType;

    fn event(reason: &str) -> Event {
        Event {
            type_: EventType::Normal,
            reason: reason.into(),
            note: None,
            action: "Reconcile".into(),
            secondary: None,
        }
    }

    fn grant(uid: &str) -> ObjectReference {
        ObjectReference {
            uid: Some(uid.into()),
            namespace: Some("ns".into()),
            ..Default::default()
        }
    }

    /// `decide`, remembering a creation as the publisher does.
    fn publish(recent: &mut Recent, e: &Event, r: &ObjectReference, at: Instant) -> Publish {
        let d = recent.decide(e, r, at);
        if d == Publish::Create {
            recent.created(e, r, format!("{}.1", e.reason), at);
        }
        d
    }

    #[test]
    fn the_same_event_for_the_same_object_goes_out_once_a_minute() {
        let mut recent = Recent::default();
        let mut activated = event("Activated");
        activated.note = Some("access is active until 10:00".into());
        let t0 = Instant::now();
        assert_eq!(
            publish(&mut recent, &activated, &grant("a"), t0),
            Publish::Create
        );
        // The same transition decided again on a lagging cache: not sent twice.
        let again = t0 + Duration::from_secs(1);
        assert_eq!(
            publish(&mut recent, &activated, &grant("a"), again),
            Publish::Skip
        );
        // Another grant, another reason: each its own Event.
        assert_eq!(
            publish(&mut recent, &activated, &grant("b"), t0),
            Publish::Create
        );
        assert_eq!(
            publish(&mut recent, &event("Expired"), &grant("a"), t0),
            Publish::Create
        );
        // Another note for the same reason counts into that Event's series, as kube-runtime's
        // Recorder does (its series key leaves the note out).
        let mut extended = event("Activated");
        extended.note = Some("access is active until 11:00".into());
        assert_eq!(
            publish(&mut recent, &extended, &grant("a"), t0),
            Publish::Series {
                namespace: "ns".into(),
                name: "Activated.1".into(),
                count: 2
            }
        );
    }

    #[test]
    fn a_repeat_after_the_window_counts_into_the_same_event_until_its_series_lapses() {
        let mut recent = Recent::default();
        let pending = event("RevocationPending");
        let t0 = Instant::now();
        assert_eq!(
            publish(&mut recent, &pending, &grant("a"), t0),
            Publish::Create
        );
        let series = |count| Publish::Series {
            namespace: "ns".into(),
            name: "RevocationPending.1".into(),
            count,
        };
        let t1 = t0 + REPEAT_WINDOW;
        assert_eq!(publish(&mut recent, &pending, &grant("a"), t1), series(2));
        let t2 = t1 + REPEAT_WINDOW;
        assert_eq!(publish(&mut recent, &pending, &grant("a"), t2), series(3));
        // Quiet for longer than the series lives: forgotten, and news again.
        let t3 = t2 + SERIES_TTL;
        assert_eq!(
            publish(&mut recent, &pending, &grant("a"), t3),
            Publish::Create
        );
    }

    #[test]
    fn what_a_burst_published_is_forgotten_and_its_room_given_back() {
        let mut recent = Recent::default();
        let t0 = Instant::now();
        for i in 0..10_000 {
            publish(
                &mut recent,
                &event("Activated"),
                &grant(&format!("g{i}")),
                t0,
            );
        }
        assert_eq!(recent.series.len(), 10_000);
        publish(
            &mut recent,
            &event("Activated"),
            &grant("late"),
            t0 + SERIES_TTL,
        );
        assert_eq!(recent.series.len(), 1);
        assert!(
            recent.series.capacity() < 1_000,
            "{}",
            recent.series.capacity()
        );
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let (tx, _rx) = mpsc::channel(1);
        let q = EventQueue {
            tx,
            dropped: Counter::default(),
        };
        q.send(event("Activated"), ObjectReference::default());
        q.send(event("Expired"), ObjectReference::default());
        assert_eq!(q.dropped.get(), 1);
    }
}
