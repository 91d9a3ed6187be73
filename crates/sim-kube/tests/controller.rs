//! A kube-rs Controller with a finalizer and server-side-applied status keeps working through
//! dropped watches, 410 Gone, a simulated restart and injected conflicts.
// Test code: helpers outside #[test] functions may panic too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{Event, finalizer};
use kube::runtime::watcher;
use lapse_sim_kube::FailRule;
use serde_json::json;
use support::{Widget, WidgetSpec, client, eventually, install_widget_crd, start};

const FINALIZER: &str = "test.lapse.dev/cleanup";

#[derive(Debug, thiserror::Error)]
enum Error {
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Finalizer(#[from] Box<kube::runtime::finalizer::Error<kube::Error>>),
}

struct Ctx {
    client: kube::Client,
    cleanups: AtomicUsize,
}

async fn reconcile(w: Arc<Widget>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let api: Api<Widget> = Api::namespaced(
        ctx.client.clone(),
        &w.metadata.namespace.clone().unwrap_or_default(),
    );
    finalizer(&api, FINALIZER, w, |event| async {
        match event {
            Event::Apply(w) => {
                let status = json!({"apiVersion": "test.lapse.dev/v1", "kind": "Widget",
                    "status": {"phase": format!("size-{}", w.spec.size), "observedGeneration": w.metadata.generation}});
                api.patch_status(&w.metadata.name.clone().unwrap_or_default(), &PatchParams::apply("widget-controller").force(), &Patch::Apply(&status))
                    .await?;
                Ok(Action::await_change())
            }
            Event::Cleanup(_) => {
                ctx.cleanups.fetch_add(1, Ordering::SeqCst);
                Ok(Action::await_change())
            }
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

fn error_policy(_: Arc<Widget>, _: &Error, _: Arc<Ctx>) -> Action {
    Action::requeue(Duration::from_millis(100))
}

#[tokio::test]
async fn controller_survives_watch_faults() {
    let h = start().await;
    let c = client(&h).await;
    install_widget_crd(&c).await;
    let api: Api<Widget> = Api::namespaced(c.clone(), "demo");
    let ctx = Arc::new(Ctx {
        client: c.clone(),
        cleanups: AtomicUsize::new(0),
    });
    let controller = Controller::new(
        Api::<Widget>::all(c.clone()),
        watcher::Config::default().streaming_lists(),
    )
    .run(reconcile, error_policy, ctx.clone())
    .for_each(|_| async {});
    let task = tokio::spawn(controller);

    let phase = |name: &'static str, want: String| {
        let api = api.clone();
        async move {
            eventually(&format!("{name} to reach {want}"), || {
                let (api, want) = (api.clone(), want.clone());
                async move {
                    let w = api.get(name).await.ok()?;
                    let s = w.status.clone()?;
                    (s.phase.as_deref() == Some(want.as_str())
                        && s.observed_generation == w.metadata.generation)
                        .then_some(w)
                }
            })
            .await
        }
    };

    api.create(
        &PostParams::default(),
        &Widget::new(
            "a",
            WidgetSpec {
                size: 1,
                color: None,
                owner: None,
            },
        ),
    )
    .await
    .unwrap();
    let a = phase("a", "size-1".into()).await;
    assert_eq!(
        a.metadata.finalizers.as_deref(),
        Some(&[FINALIZER.to_owned()][..])
    );

    // Watches dropped and history compacted: the controller re-lists and still sees changes.
    h.drop_watches();
    h.compact();
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"size": 2}})),
    )
    .await
    .unwrap();
    phase("a", "size-2".into()).await;

    // Status writes fail with conflicts twice; the controller retries.
    h.fail_next(FailRule {
        verb: "patch".into(),
        resource: "widgets/status".into(),
        count: 2,
        code: 409,
        delay_ms: 0,
    });
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"size": 3}})),
    )
    .await
    .unwrap();
    phase("a", "size-3".into()).await;

    // A simulated API server restart closes every connection; new objects are still handled.
    h.restart();
    api.create(
        &PostParams::default(),
        &Widget::new(
            "b",
            WidgetSpec {
                size: 4,
                color: None,
                owner: None,
            },
        ),
    )
    .await
    .unwrap();
    phase("b", "size-4".into()).await;

    // Deletion runs the cleanup, then the finalizer is removed and the object goes away.
    api.delete("a", &DeleteParams::default()).await.unwrap();
    eventually("a to be gone", || {
        let api = api.clone();
        async move { api.get_opt("a").await.ok()?.is_none().then_some(()) }
    })
    .await;
    assert_eq!(ctx.cleanups.load(Ordering::SeqCst), 1);
    task.abort();
    h.shutdown().await;
}
