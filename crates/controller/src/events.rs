//! Events leave through one queue and are published, in order, by one task. A reconcile never
//! waits for the API server to record an Event before it acts on Azure: a revocation's DELETE
//! must not queue behind its own "Expired" Event (the status, which crash safety needs first,
//! is still patched before any Azure call).

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, Recorder};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;

/// Events waiting to be published, at most; beyond it new ones are dropped and counted
/// (Kubernetes Events are best effort; the grant's status and the metrics are the record).
const CAPACITY: usize = 10_000;

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
            while let Some((event, reference)) = rx.recv().await {
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
