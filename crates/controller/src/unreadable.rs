//! Objects of lapse's kinds that this operator version cannot read: one must never keep the
//! caches from loading or stall the rest (docs/architecture.md, "Unreadable objects").
//!
//! The watches deserialize through kube's `DeserializeGuard`, so a bad object arrives as an
//! error of its own instead of failing the whole list. Such an object is reported (a Warning
//! Event on it, the `lapse_unreadable_objects` gauge, a log line naming it) and kept out of the
//! cache: if a good version of it was cached, that version is withdrawn as if deleted. For a
//! grant this fails closed: nothing claims its Azure objects any more, so the next sweep (run
//! at once) deletes them; its lease ends early rather than late. A grant being deleted loses
//! our finalizer, since what it would wait for is the sweep's job now.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource;
use kube::api::{Api, Patch, PatchParams};
use kube::core::error_boundary::{DeserializeGuard, InvalidObject};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use lapse_api::lease::Reason;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Notify;

use crate::events::EventQueue;
use crate::metrics::KindLabels;

type Key = (String, String, String);

/// Every unreadable object, by kind, namespace and name, with why.
pub struct Unreadable {
    objects: Mutex<HashMap<Key, String>>,
    /// Keys seen during the current re-list of each kind; what is not seen again is gone.
    relisting: Mutex<HashMap<String, HashSet<Key>>>,
    gauge: Family<KindLabels, Gauge>,
    events: EventQueue,
    /// Asks the sweep to run now (a grant's claims went with it).
    pub sweep_soon: Arc<Notify>,
    client: kube::Client,
}

impl std::fmt::Debug for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unreadable")
            .field("objects", &self.objects)
            .finish_non_exhaustive()
    }
}

impl Unreadable {
    pub fn new(client: kube::Client, events: EventQueue, gauge: Family<KindLabels, Gauge>) -> Self {
        Self {
            objects: Mutex::default(),
            relisting: Mutex::default(),
            gauge,
            events,
            sweep_soon: Arc::default(),
            client,
        }
    }

    /// How many objects of `kind` cannot be read now.
    pub fn count(&self, kind: &str) -> usize {
        locked(&self.objects)
            .keys()
            .filter(|(k, _, _)| k == kind)
            .count()
    }

    fn set_gauge(&self, kind: &str) {
        let n = i64::try_from(self.count(kind)).unwrap_or(i64::MAX);
        self.gauge
            .get_or_create(&KindLabels { kind: kind.into() })
            .set(n);
    }

    fn report<K: Resource<DynamicType = ()>>(&self, bad: &InvalidObject) {
        let kind = K::kind(&()).into_owned();
        let ns = bad.metadata.namespace.clone().unwrap_or_default();
        let name = bad.metadata.name.clone().unwrap_or_default();
        let key = (kind.clone(), ns.clone(), name.clone());
        if let Some(seen) = locked(&self.relisting).get_mut(&kind) {
            seen.insert(key.clone());
        }
        let first = locked(&self.objects)
            .insert(key, bad.error.clone())
            .as_ref()
            != Some(&bad.error);
        self.set_gauge(&kind);
        if !first {
            return;
        }
        tracing::error!(
            object = %object_name(&kind, &ns, &name),
            error = %bad.error,
            "cannot read this object; it is left out (a grant's lease ends)"
        );
        let note = format!(
            "this operator version cannot read the {kind}: {}. It is ignored until fixed{}",
            truncate(&bad.error, 512),
            if kind == "AccessGrant" {
                "; its lease has ended and its Azure objects are removed"
            } else {
                ""
            }
        );
        self.events.send(
            Event {
                type_: EventType::Warning,
                reason: Reason::Unreadable.as_str().into(),
                note: Some(note),
                action: "Read".into(),
                secondary: None,
            },
            ObjectReference {
                api_version: Some(K::api_version(&()).into_owned()),
                kind: Some(kind),
                name: bad.metadata.name.clone(),
                namespace: bad.metadata.namespace.clone(),
                uid: bad.metadata.uid.clone(),
                resource_version: bad.metadata.resource_version.clone(),
                ..Default::default()
            },
        );
    }

    fn forget<K: Resource<DynamicType = ()>>(&self, meta: &kube::core::ObjectMeta) {
        let kind = K::kind(&()).into_owned();
        let key = (
            kind.clone(),
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone().unwrap_or_default(),
        );
        if locked(&self.objects).remove(&key).is_some() {
            tracing::info!(object = %object_name(&key.0, &key.1, &key.2), "readable again");
            self.set_gauge(&kind);
        }
    }

    fn relist_started(&self, kind: &str) {
        locked(&self.relisting).insert(kind.to_owned(), HashSet::new());
    }

    fn relist_done(&self, kind: &str) {
        let Some(seen) = locked(&self.relisting).remove(kind) else {
            return;
        };
        locked(&self.objects).retain(|key, _| key.0 != kind || seen.contains(key));
        self.set_gauge(kind);
    }

    /// Removes `finalizer` from an unreadable object being deleted. The JSON patch tests the
    /// UID and the finalizer's position, so it never touches a successor or another finalizer.
    pub fn release<K>(&self, bad: &InvalidObject, finalizer: &str)
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + std::fmt::Debug
            + serde::de::DeserializeOwned
            + Send
            + Sync
            + 'static,
    {
        let meta = &bad.metadata;
        let (Some(ns), Some(name), Some(uid)) = (&meta.namespace, &meta.name, &meta.uid) else {
            return;
        };
        if meta.deletion_timestamp.is_none() {
            return;
        }
        let Some(index) = meta
            .finalizers
            .as_ref()
            .and_then(|f| f.iter().position(|f| f == finalizer))
        else {
            return;
        };
        let api: Api<DeserializeGuard<K>> = Api::namespaced(self.client.clone(), ns);
        let patch = serde_json::json!([
            {"op": "test", "path": "/metadata/uid", "value": uid},
            {"op": "test", "path": format!("/metadata/finalizers/{index}"), "value": finalizer},
            {"op": "remove", "path": format!("/metadata/finalizers/{index}")},
        ]);
        let (name, what) = (name.clone(), format!("{ns}/{name}"));
        tokio::spawn(async move {
            let patch = match serde_json::from_value::<json_patch::Patch>(patch) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(error = %e, "building the finalizer patch");
                    return;
                }
            };
            match api
                .patch(&name, &PatchParams::default(), &Patch::<()>::Json(patch))
                .await
            {
                Ok(_) => {
                    tracing::info!(object = %what, "finalizer removed from an unreadable object being deleted")
                }
                Err(e) => {
                    tracing::warn!(object = %what, error = %e, "removing the finalizer of an unreadable object")
                }
            }
        });
    }
}

fn object_name(kind: &str, ns: &str, name: &str) -> String {
    if ns.is_empty() {
        format!("{kind} {name}")
    } else {
        format!("{kind} {ns}/{name}")
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Turns a watch of guarded objects into a watch of readable ones: unreadable objects are
/// reported (and handed to `on_bad`) and left out, and a cached good version of one is
/// withdrawn (a Delete). `cached` is the store the result feeds.
pub fn readable<K>(
    events: impl Stream<Item = Result<watcher::Event<DeserializeGuard<K>>, watcher::Error>>
    + Send
    + 'static,
    cached: Store<K>,
    unreadable: Arc<Unreadable>,
    on_bad: impl Fn(&InvalidObject) + Send + 'static,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + Send + Sync + 'static,
{
    events.filter_map(move |ev| {
        let out = match ev {
            Err(e) => Some(Err(e)),
            Ok(ev) => sort_with::<K>(ev, &cached, &unreadable, &on_bad).map(Ok),
        };
        futures::future::ready(out)
    })
}

fn sort_with<K>(
    ev: watcher::Event<DeserializeGuard<K>>,
    cached: &Store<K>,
    unreadable: &Arc<Unreadable>,
    on_bad: &impl Fn(&InvalidObject),
) -> Option<watcher::Event<K>>
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + Send + Sync + 'static,
{
    let kind = K::kind(&()).into_owned();
    let withdraw = |bad: &InvalidObject| {
        let name = bad.metadata.name.clone().unwrap_or_default();
        let mut r = ObjectRef::<K>::new(&name);
        if let Some(ns) = &bad.metadata.namespace {
            r = r.within(ns);
        }
        cached
            .get(&r)
            .map(|last| watcher::Event::Delete((*last).clone()))
    };
    match ev {
        watcher::Event::Init => {
            unreadable.relist_started(&kind);
            Some(watcher::Event::Init)
        }
        watcher::Event::InitDone => {
            unreadable.relist_done(&kind);
            Some(watcher::Event::InitDone)
        }
        watcher::Event::InitApply(DeserializeGuard(Ok(k))) => {
            unreadable.forget::<K>(k.meta());
            Some(watcher::Event::InitApply(k))
        }
        watcher::Event::Apply(DeserializeGuard(Ok(k))) => {
            unreadable.forget::<K>(k.meta());
            Some(watcher::Event::Apply(k))
        }
        watcher::Event::Delete(DeserializeGuard(Ok(k))) => {
            unreadable.forget::<K>(k.meta());
            Some(watcher::Event::Delete(k))
        }
        // During a re-list the store is rebuilt from what is listed: leaving it out is enough.
        watcher::Event::InitApply(DeserializeGuard(Err(bad))) => {
            unreadable.report::<K>(&bad);
            on_bad(&bad);
            unreadable.sweep_soon.notify_one();
            None
        }
        watcher::Event::Apply(DeserializeGuard(Err(bad))) => {
            unreadable.report::<K>(&bad);
            on_bad(&bad);
            unreadable.sweep_soon.notify_one();
            withdraw(&bad)
        }
        watcher::Event::Delete(DeserializeGuard(Err(bad))) => {
            unreadable.forget::<K>(&bad.metadata);
            withdraw(&bad)
        }
    }
}
