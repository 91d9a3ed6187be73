//! Events leave through one queue and are published, in order, by one task. A reconcile never
//! waits for the API server to record an Event before it acts on Azure: a revocation's DELETE
//! must not queue behind its own "Expired" Event (the status, which crash safety needs first,
//! is still patched before any Azure call).

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, Recorder};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;

use crate::repeat::RepeatWindow;

/// Events waiting to be published, at most; beyond it new ones are dropped and counted
/// (Kubernetes Events are best effort; the grant's status and the metrics are the record).
const CAPACITY: usize = 10_000;

/// How long an Event identical to one already published for the same object is not sent
/// again. A reconcile that runs on a watch cache not yet showing our own status write decides
/// the same transition twice; its Event must still appear once.
const REPEAT_WINDOW: Duration = Duration::from_secs(60);

/// Events published in the last [`REPEAT_WINDOW`], by object, reason and note.
#[derive(Debug)]
struct Recent(RepeatWindow<(String, String, String)>);

impl Default for Recent {
    fn default() -> Self {
        Self(RepeatWindow::new(REPEAT_WINDOW))
    }
}

impl Recent {
    /// True unless the same Event went out for the same object within the window.
    fn first_in_window(
        &mut self,
        event: &Event,
        reference: &ObjectReference,
        now: Instant,
    ) -> bool {
        let object = reference.uid.clone().unwrap_or_else(|| {
            format!(
                "{}/{}",
                reference.namespace.as_deref().unwrap_or_default(),
                reference.name.as_deref().unwrap_or_default()
            )
        });
        let key = (
            object,
            event.reason.clone(),
            event.note.clone().unwrap_or_default(),
        );
        self.0.first(key, now)
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
    pub fn start(recorder: Recorder, dropped: Counter) -> Self {
        let (tx, mut rx) = mpsc::channel::<(Event, ObjectReference)>(CAPACITY);
        tokio::spawn(async move {
            let mut recent = Recent::default();
            while let Some((event, reference)) = rx.recv().await {
                if !recent.first_in_window(&event, &reference, Instant::now()) {
                    continue;
                }
                if let Err(err) = recorder.publish(&event, &reference).await {
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

    #[test]
    fn the_same_event_for_the_same_object_goes_out_once_a_minute() {
        let mut recent = Recent::default();
        let grant = |uid: &str| ObjectReference {
            uid: Some(uid.into()),
            ..Default::default()
        };
        let mut activated = event("Activated");
        activated.note = Some("access is active until 10:00".into());
        let t0 = Instant::now();
        assert!(recent.first_in_window(&activated, &grant("a"), t0));
        // The same transition decided again on a lagging cache: not sent twice.
        assert!(!recent.first_in_window(&activated, &grant("a"), t0 + Duration::from_secs(1)));
        // Another grant, another reason, another note: each its own Event.
        assert!(recent.first_in_window(&activated, &grant("b"), t0));
        assert!(recent.first_in_window(&event("Expired"), &grant("a"), t0));
        let mut extended = event("Activated");
        extended.note = Some("access is active until 11:00".into());
        assert!(recent.first_in_window(&extended, &grant("a"), t0));
        // After the window it is news again.
        assert!(recent.first_in_window(&activated, &grant("a"), t0 + REPEAT_WINDOW));
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
