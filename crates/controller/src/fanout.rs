//! One grant watch, several consumers (the two lanes and the lease clock), each handed the object
//! its event carried.
//!
//! Why not kube-runtime's shared reflector subscribers: a `ReflectHandle` receives only an
//! `ObjectRef` and looks the object up in the store when it is polled; if the object is gone
//! by then (deleted right after the event) it returns `Pending` without registering a waker
//! (kube-runtime 5.0.0, `reflector/dispatcher.rs`), and that consumer stalls until something
//! else happens to poll it. A grant deleted and re-applied under the same name (a GitOps tool
//! re-creating it) hit this: its lane saw nothing for 45 s. Here no event depends on the store.
//!
//! Like kube's dispatcher, objects of a re-list are handed out once it is complete (the store
//! swaps in the new list then), and a consumer that falls `capacity` events behind makes the
//! watch wait rather than memory grow.

use std::sync::Arc;

use futures::StreamExt;
use futures::stream::BoxStream;
use kube::runtime::watcher;
use tokio::sync::mpsc;

/// Hands each applied object of a watch to every subscriber.
#[derive(Debug)]
pub struct FanOut<K> {
    senders: Vec<mpsc::Sender<Arc<K>>>,
    capacity: usize,
    /// Objects of a re-list in progress, handed out at its end.
    relist: Vec<Arc<K>>,
}

impl<K: Send + Sync + 'static> FanOut<K> {
    pub fn new(capacity: usize) -> Self {
        Self {
            senders: Vec::new(),
            capacity: capacity.max(1),
            relist: Vec::new(),
        }
    }

    /// A new consumer: every object applied from now on.
    pub fn subscribe(&mut self) -> BoxStream<'static, Arc<K>> {
        let (tx, rx) = mpsc::channel(self.capacity);
        self.senders.push(tx);
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|k| (k, rx)) })
            .boxed()
    }

    /// Passes one watch event on (after the store has applied it).
    pub async fn dispatch(&mut self, event: &watcher::Event<K>)
    where
        K: Clone,
    {
        match event {
            watcher::Event::Apply(obj) => self.send(Arc::new(obj.clone())).await,
            watcher::Event::Init => self.relist.clear(),
            watcher::Event::InitApply(obj) => self.relist.push(Arc::new(obj.clone())),
            watcher::Event::InitDone => {
                for obj in std::mem::take(&mut self.relist) {
                    self.send(obj).await;
                }
            }
            watcher::Event::Delete(_) => {}
        }
    }

    async fn send(&mut self, obj: Arc<K>) {
        let mut closed = false;
        for tx in &self.senders {
            closed |= tx.send(obj.clone()).await.is_err();
        }
        if closed {
            // A consumer that ended (its controller shut down) is no reason to stop the rest.
            self.senders.retain(|tx| !tx.is_closed());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;

    use super::*;

    fn cm(name: &str, rv: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                resource_version: Some(rv.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn rv(k: &Arc<ConfigMap>) -> String {
        k.metadata.resource_version.clone().unwrap_or_default()
    }

    /// The case kube's shared subscribers lose: an object deleted before the consumer reads its
    /// event, then re-created under the same name. Every consumer still gets every version, in
    /// order, without being polled by anything else.
    #[tokio::test]
    async fn an_object_deleted_before_its_event_is_read_still_reaches_every_consumer() {
        let mut fan = FanOut::new(8);
        let mut a = fan.subscribe();
        let mut b = fan.subscribe();
        fan.dispatch(&watcher::Event::Apply(cm("old", "1"))).await;
        fan.dispatch(&watcher::Event::Delete(cm("old", "2"))).await;
        fan.dispatch(&watcher::Event::Apply(cm("old", "3"))).await;
        for consumer in [&mut a, &mut b] {
            let got: Vec<String> =
                tokio::time::timeout(Duration::from_secs(5), consumer.take(2).collect::<Vec<_>>())
                    .await
                    .unwrap_or_default()
                    .iter()
                    .map(rv)
                    .collect();
            assert_eq!(got, ["1", "3"]);
        }
    }

    #[tokio::test]
    async fn a_relist_is_handed_out_when_complete_and_an_ended_consumer_is_dropped() {
        let mut fan = FanOut::new(8);
        let mut a = fan.subscribe();
        let ended = fan.subscribe();
        drop(ended);
        fan.dispatch(&watcher::Event::Init).await;
        fan.dispatch(&watcher::Event::InitApply(cm("x", "5"))).await;
        fan.dispatch(&watcher::Event::InitApply(cm("y", "6"))).await;
        fan.dispatch(&watcher::Event::InitDone).await;
        fan.dispatch(&watcher::Event::Apply(cm("x", "7"))).await;
        assert_eq!(fan.senders.len(), 1, "the ended consumer is dropped");
        let got: Vec<String> = tokio::time::timeout(
            Duration::from_secs(5),
            a.by_ref().take(3).collect::<Vec<_>>(),
        )
        .await
        .unwrap_or_default()
        .iter()
        .map(rv)
        .collect();
        assert_eq!(got, ["5", "6", "7"]);
    }
}
