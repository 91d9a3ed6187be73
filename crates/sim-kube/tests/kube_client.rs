//! kube-rs against sim-kube: CRUD semantics, errors, watches, server-side apply, status and finalizers.
// Test code: helpers outside #[test] functions may panic too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeMap;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::watcher;
use serde::Deserialize;
use serde_json::json;
use support::{Widget, WidgetSpec, client, eventually, install_widget_crd, start};

fn cm(name: &str, labels: &[(&str, &str)]) -> ConfigMap {
    let mut c = ConfigMap::default();
    c.metadata.name = Some(name.to_owned());
    c.metadata.labels = Some(
        labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    );
    c.data = Some(BTreeMap::from([("k".to_owned(), "1".to_owned())]));
    c
}

fn api_error(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn crud_optimistic_concurrency_and_status_errors() {
    let h = start().await;
    let api: Api<ConfigMap> = Api::namespaced(client(&h).await, "demo");
    let created = api
        .create(&PostParams::default(), &cm("a", &[("app", "x")]))
        .await
        .unwrap();
    let uid = created.metadata.uid.clone().unwrap();
    assert!(!uid.is_empty());
    assert!(created.metadata.creation_timestamp.is_some());

    let e = api_error(
        api.create(&PostParams::default(), &cm("a", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(e.message, "configmaps \"a\" already exists");

    let e = api_error(api.get("missing").await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (404, "NotFound"));

    // An update from a stale copy is refused.
    let mut fresh = created.clone();
    fresh.data = Some(BTreeMap::from([("k".to_owned(), "2".to_owned())]));
    let updated = api
        .replace("a", &PostParams::default(), &fresh)
        .await
        .unwrap();
    assert_ne!(
        updated.metadata.resource_version,
        created.metadata.resource_version
    );
    let e = api_error(
        api.replace("a", &PostParams::default(), &created)
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));

    // generateName, label selectors and paging.
    let mut generated = cm("", &[("app", "y")]);
    generated.metadata.name = None;
    generated.metadata.generate_name = Some("gen-".to_owned());
    let g = api
        .create(&PostParams::default(), &generated)
        .await
        .unwrap();
    assert!(g.metadata.name.unwrap().starts_with("gen-"));
    api.create(&PostParams::default(), &cm("c", &[("app", "y")]))
        .await
        .unwrap();
    let ys = api
        .list(&ListParams::default().labels("app=y"))
        .await
        .unwrap();
    assert_eq!(ys.items.len(), 2);
    let page = api.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(page.items.len(), 2);
    let token = page.metadata.continue_.clone().unwrap();
    let rest = api
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 1);
    assert!(rest.metadata.continue_.is_none());
    assert_eq!(page.metadata.remaining_item_count, Some(1));
    // With a selector the remaining count is unknown (kube-apiserver leaves it out), and pages
    // hold only matching objects, in name order.
    let first = api
        .list(&ListParams::default().labels("app=y").limit(1))
        .await
        .unwrap();
    assert_eq!(first.metadata.remaining_item_count, None);
    let token = first.metadata.continue_.clone().unwrap();
    let second = api
        .list(
            &ListParams::default()
                .labels("app=y")
                .limit(1)
                .continue_token(&token),
        )
        .await
        .unwrap();
    assert!(second.metadata.continue_.is_none());
    let names: Vec<String> = first
        .items
        .iter()
        .chain(&second.items)
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    assert_eq!(names.len(), 2);
    assert_eq!(names[0], "c");
    assert!(names[1].starts_with("gen-"), "{names:?}");
    let by_name = api
        .list(&ListParams::default().fields("metadata.name=c"))
        .await
        .unwrap();
    assert_eq!(by_name.items.len(), 1);

    // Delete with a wrong UID precondition is refused; deletecollection removes the rest.
    let dp = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: Some("nope".into()),
            resource_version: None,
        }),
        ..Default::default()
    };
    let e = api_error(api.delete("a", &dp).await.unwrap_err());
    assert_eq!(e.code, 409);
    api.delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .unwrap();
    assert!(
        api.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    h.shutdown().await;
}

#[tokio::test]
async fn watches_resume_bookmark_and_expire() {
    let h = start().await;
    let c = client(&h).await;
    let api: Api<ConfigMap> = Api::namespaced(c.clone(), "demo");
    let first = api
        .create(&PostParams::default(), &cm("w1", &[]))
        .await
        .unwrap();
    let rv = first.metadata.resource_version.clone().unwrap();
    api.create(&PostParams::default(), &cm("w2", &[]))
        .await
        .unwrap();
    api.delete("w1", &DeleteParams::default()).await.unwrap();

    // Resuming from a resourceVersion replays what happened after it.
    let wp = WatchParams::default().timeout(2).disable_bookmarks();
    let events: Vec<_> = api
        .watch(&wp, &rv)
        .await
        .unwrap()
        .take(2)
        .try_collect()
        .await
        .unwrap();
    assert!(
        matches!(&events[0], WatchEvent::Added(c) if c.metadata.name.as_deref() == Some("w2")),
        "{events:?}"
    );
    assert!(
        matches!(&events[1], WatchEvent::Deleted(c) if c.metadata.name.as_deref() == Some("w1")),
        "{events:?}"
    );

    // Bookmarks are sent when asked for.
    let wp = WatchParams::default().timeout(5);
    let mut s = api
        .watch(&wp, &h.resource_version().to_string())
        .await
        .unwrap()
        .boxed();
    let ev = s.try_next().await.unwrap().unwrap();
    assert!(matches!(ev, WatchEvent::Bookmark(_)), "{ev:?}");

    // The server ends a watch after timeoutSeconds.
    let wp = WatchParams::default().timeout(1).disable_bookmarks();
    let s = api
        .watch(&wp, &h.resource_version().to_string())
        .await
        .unwrap();
    let ended =
        tokio::time::timeout(std::time::Duration::from_secs(10), s.collect::<Vec<_>>()).await;
    assert!(
        ended.is_ok_and(|events| events.is_empty()),
        "the watch ends by itself without events"
    );

    // After compaction an old resourceVersion is 410 Gone.
    h.compact();
    let mut s = api
        .watch(&WatchParams::default().timeout(2), &rv)
        .await
        .unwrap()
        .boxed();
    match s.try_next().await.unwrap().unwrap() {
        WatchEvent::Error(e) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        other => panic!("expected 410, got {other:?}"),
    }
    h.shutdown().await;
}

async fn watcher_sees_lifecycle(config: watcher::Config) {
    let h = start().await;
    let api: Api<ConfigMap> = Api::namespaced(client(&h).await, "demo");
    api.create(&PostParams::default(), &cm("before", &[]))
        .await
        .unwrap();
    let mut events = watcher(api.clone(), config).boxed();
    let mut seen_init = Vec::new();
    loop {
        match events.try_next().await.unwrap().unwrap() {
            watcher::Event::Init => {}
            watcher::Event::InitApply(o) => seen_init.push(o.metadata.name.unwrap()),
            watcher::Event::InitDone => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen_init, ["before"]);
    api.create(&PostParams::default(), &cm("after", &[]))
        .await
        .unwrap();
    match events.try_next().await.unwrap().unwrap() {
        watcher::Event::Apply(o) => assert_eq!(o.metadata.name.as_deref(), Some("after")),
        other => panic!("unexpected {other:?}"),
    }
    // A dropped watch is resumed without losing the change made meanwhile.
    h.drop_watches();
    api.delete("before", &DeleteParams::default())
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let deleted = loop {
        // Re-listing after the dropped watch may replay Init events first.
        match tokio::time::timeout_at(deadline, events.try_next()).await {
            Ok(Ok(Some(watcher::Event::Delete(o)))) => break o.metadata.name,
            Ok(Ok(Some(_))) | Ok(Err(_)) => continue,
            Ok(Ok(None)) => panic!("watcher ended"),
            Err(_) => panic!("no delete event within 10s"),
        }
    };
    assert_eq!(deleted.as_deref(), Some("before"));
    h.shutdown().await;
}

#[tokio::test]
async fn watcher_with_list_then_watch() {
    watcher_sees_lifecycle(watcher::Config::default()).await;
}

#[tokio::test]
async fn watcher_with_streaming_list() {
    watcher_sees_lifecycle(watcher::Config::default().streaming_lists()).await;
}

#[tokio::test]
async fn custom_resources_validate_default_and_split_status() {
    let h = start().await;
    let c = client(&h).await;
    install_widget_crd(&c).await;
    let api: Api<Widget> = Api::namespaced(c.clone(), "demo");
    let w = eventually("the Widget type to be served", || {
        let api = api.clone();
        async move {
            api.create(
                &PostParams::default(),
                &Widget::new(
                    "w",
                    WidgetSpec {
                        size: 2,
                        color: None,
                        owner: Some("ann".into()),
                    },
                ),
            )
            .await
            .ok()
        }
    })
    .await;
    assert_eq!(
        w.spec.color.as_deref(),
        Some("green"),
        "schema default applied"
    );
    assert_eq!(w.metadata.generation, Some(1));

    // Schema and CEL violations are 422 Invalid naming the field.
    let e = api_error(
        api.create(
            &PostParams::default(),
            &Widget::new(
                "big",
                WidgetSpec {
                    size: 11,
                    color: None,
                    owner: None,
                },
            ),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert!(
        e.message
            .contains("spec: Invalid value: \"object\": sizes above 10 must be red"),
        "{}",
        e.message
    );
    let e = api_error(
        api.create(
            &PostParams::default(),
            &Widget::new(
                "neg",
                WidgetSpec {
                    size: 0,
                    color: None,
                    owner: None,
                },
            ),
        )
        .await
        .unwrap_err(),
    );
    assert!(
        e.message.contains(
            "spec.size: Invalid value: 0: spec.size in body should be greater than or equal to 1"
        ),
        "{}",
        e.message
    );
    let e = api_error(
        api.patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"owner": "bob"}})),
        )
        .await
        .unwrap_err(),
    );
    assert!(
        e.message.contains("spec.owner") && e.message.contains("owner is immutable"),
        "{}",
        e.message
    );

    // SSA of status does not bump generation and ignores spec; a spec apply does.
    let status = json!({"apiVersion": "test.lapse.dev/v1", "kind": "Widget", "spec": {"size": 9},
        "status": {"phase": "Ready", "observedGeneration": 1}});
    let ctrl = PatchParams::apply("widget-controller").force();
    let s = api
        .patch_status("w", &ctrl, &Patch::Apply(&status))
        .await
        .unwrap();
    assert_eq!(s.status.unwrap().phase.as_deref(), Some("Ready"));
    assert_eq!((s.spec.size, s.metadata.generation), (2, Some(1)));
    let spec = json!({"apiVersion": "test.lapse.dev/v1", "kind": "Widget", "spec": {"size": 3, "owner": "ann"}, "status": {"phase": "Hacked"}});
    // The creator owns spec.size (an Update), so taking it over needs force.
    let e = api_error(
        api.patch("w", &PatchParams::apply("user"), &Patch::Apply(&spec))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 409);
    let s = api
        .patch(
            "w",
            &PatchParams::apply("user").force(),
            &Patch::Apply(&spec),
        )
        .await
        .unwrap();
    assert_eq!((s.spec.size, s.metadata.generation), (3, Some(2)));
    assert_eq!(s.status.unwrap().phase.as_deref(), Some("Ready"));

    // A second manager applying a different value conflicts, unless forced.
    let other = json!({"apiVersion": "test.lapse.dev/v1", "kind": "Widget", "spec": {"size": 4}});
    let e = api_error(
        api.patch("w", &PatchParams::apply("intruder"), &Patch::Apply(&other))
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert!(
        e.message.contains("conflict with \"user\"") && e.message.contains(".spec.size"),
        "{}",
        e.message
    );
    let s = api
        .patch(
            "w",
            &PatchParams::apply("intruder").force(),
            &Patch::Apply(&other),
        )
        .await
        .unwrap();
    assert_eq!(s.spec.size, 4);

    // Finalizers hold deletion until they are removed.
    api.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": ["test/hold"]}})),
    )
    .await
    .unwrap();
    let d = api.delete("w", &DeleteParams::default()).await.unwrap();
    assert!(
        d.left()
            .is_some_and(|o| o.metadata.deletion_timestamp.is_some())
    );
    assert!(
        api.get("w")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    );
    let e = api_error(
        api.patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["test/hold", "test/new"]}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 422);
    api.patch(
        "w",
        &PatchParams::default(),
        &Patch::Json::<()>(
            serde_json::from_value(json!([{"op": "remove", "path": "/metadata/finalizers"}]))
                .unwrap(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(api_error(api.get("w").await.unwrap_err()).code, 404);
    h.shutdown().await;
}

#[tokio::test]
async fn namespace_deletion_terminates_and_honours_finalizers() {
    let h = start().await;
    let c = client(&h).await;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(c.clone());
    let mut ns = k8s_openapi::api::core::v1::Namespace::default();
    ns.metadata.name = Some("doomed".into());
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "doomed");
    let mut held = cm("held", &[]);
    held.metadata.finalizers = Some(vec!["test/hold".into()]);
    cms.create(&PostParams::default(), &held).await.unwrap();
    cms.create(&PostParams::default(), &cm("free", &[]))
        .await
        .unwrap();

    namespaces
        .delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    let n = namespaces.get("doomed").await.unwrap();
    assert_eq!(n.status.unwrap().phase.as_deref(), Some("Terminating"));
    assert_eq!(api_error(cms.get("free").await.unwrap_err()).code, 404);
    assert!(
        cms.get("held")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    );
    let e = api_error(
        cms.create(&PostParams::default(), &cm("new", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (403, "Forbidden"));

    cms.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert_eq!(
        api_error(namespaces.get("doomed").await.unwrap_err()).code,
        404
    );
    h.shutdown().await;
}

#[tokio::test]
async fn service_account_tokens_authenticate_and_rbac_limits_them() {
    let h = start().await;
    let admin = client(&h).await;
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(admin.clone(), "demo");
    let mut sa = k8s_openapi::api::core::v1::ServiceAccount::default();
    sa.metadata.name = Some("operator".into());
    sas.create(&PostParams::default(), &sa).await.unwrap();
    let tr = sas
        .create_token_request(
            "operator",
            &PostParams::default(),
            &k8s_openapi::api::authentication::v1::TokenRequest::default(),
        )
        .await
        .unwrap();
    let token = tr.status.unwrap().token;

    // TokenReview resolves the token to the ServiceAccount user.
    let reviews: Api<k8s_openapi::api::authentication::v1::TokenReview> = Api::all(admin.clone());
    let mut review = k8s_openapi::api::authentication::v1::TokenReview::default();
    review.spec.token = Some(token.clone());
    let r = reviews
        .create(&PostParams::default(), &review)
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(r.authenticated, Some(true));
    assert_eq!(
        r.user.unwrap().username.as_deref(),
        Some("system:serviceaccount:demo:operator")
    );

    // The same token as a client: forbidden until a RoleBinding allows it.
    let kc = kube::config::Kubeconfig::from_yaml(&h.kubeconfig()).unwrap();
    let mut cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    cfg.auth_info.token = Some(token.into());
    let sa_client = kube::Client::try_from(cfg).unwrap();
    let as_sa: Api<ConfigMap> = Api::namespaced(sa_client, "demo");
    let e = api_error(as_sa.list(&ListParams::default()).await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        e.message,
        "configmaps is forbidden: User \"system:serviceaccount:demo:operator\" cannot list resource \"configmaps\" in API group \"\" in the namespace \"demo\""
    );
    let rb: k8s_openapi::api::rbac::v1::RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "operator-view"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "ServiceAccount", "name": "operator", "namespace": "demo"}]}))
    .unwrap();
    Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(admin.clone(), "demo")
        .create(&PostParams::default(), &rb)
        .await
        .unwrap();
    as_sa.list(&ListParams::default()).await.unwrap();
    let e = api_error(
        as_sa
            .create(&PostParams::default(), &cm("x", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 403, "view does not allow create");

    // Deleting the ServiceAccount invalidates its tokens.
    sas.delete("operator", &DeleteParams::default())
        .await
        .unwrap();
    assert!(
        matches!(as_sa.list(&ListParams::default()).await.unwrap_err(), kube::Error::Api(s) if s.code == 401)
    );
    h.shutdown().await;
}

#[tokio::test]
async fn fault_endpoint_fails_matching_requests() {
    let h = start().await;
    let c = client(&h).await;
    let body = serde_json::to_vec(&json!({"action": "fail", "verb": "get", "resource": "configmaps", "count": 1, "code": 500})).unwrap();
    let req = http::Request::post("/sim-kube/faults")
        .header("content-type", "application/json")
        .body(body)
        .unwrap();
    let answer = c.request_text(req).await.unwrap();
    assert!(answer.contains("Success"), "{answer}");
    let api: Api<ConfigMap> = Api::namespaced(c, "demo");
    api.create(&PostParams::default(), &cm("f", &[]))
        .await
        .unwrap();
    let e = api_error(api.get("f").await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (500, "InternalError"));
    api.get("f").await.unwrap();
    h.shutdown().await;
}

#[tokio::test]
async fn owner_references_are_garbage_collected_and_deployments_roll_out() {
    let h = start().await;
    let c = client(&h).await;
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "demo");
    let owner = cms
        .create(&PostParams::default(), &cm("owner", &[]))
        .await
        .unwrap();
    let mut dep = cm("dependent", &[]);
    dep.metadata.owner_references = Some(vec![
        k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: "owner".into(),
            uid: owner.metadata.uid.clone().unwrap(),
            ..Default::default()
        },
    ]);
    cms.create(&PostParams::default(), &dep).await.unwrap();
    cms.delete("owner", &DeleteParams::default()).await.unwrap();
    assert_eq!(
        api_error(cms.get("dependent").await.unwrap_err()).code,
        404,
        "dependent collected"
    );

    // Deployments report a completed rollout for every generation (no pods run).
    let deploys: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(c, "demo");
    let d: k8s_openapi::api::apps::v1::Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}})).unwrap();
    let d = deploys.create(&PostParams::default(), &d).await.unwrap();
    let s = d.status.unwrap();
    assert_eq!(
        (s.observed_generation, s.available_replicas),
        (Some(1), Some(2))
    );
    let d = deploys
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    let s = d.status.unwrap();
    assert_eq!(
        (
            d.metadata.generation,
            s.observed_generation,
            s.ready_replicas
        ),
        (Some(2), Some(2), Some(3))
    );
    h.shutdown().await;
}

#[tokio::test]
async fn an_update_without_managed_fields_keeps_ownership() {
    let h = start().await;
    let api: Api<ConfigMap> = Api::namespaced(client(&h).await, "demo");
    let applied = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "m"}, "data": {"k": "1"}});
    api.patch("m", &PatchParams::apply("owner"), &Patch::Apply(&applied))
        .await
        .unwrap();
    let mut c = api.get("m").await.unwrap();
    c.metadata.managed_fields = None;
    c.data = Some(BTreeMap::from([
        ("k".to_owned(), "1".to_owned()),
        ("j".to_owned(), "2".to_owned()),
    ]));
    let updated = api.replace("m", &PostParams::default(), &c).await.unwrap();
    let managers: Vec<_> = updated
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .map(|e| e.manager.unwrap())
        .collect();
    assert!(managers.contains(&"owner".to_owned()), "{managers:?}");
    // The owner still owns data.k, so another manager changing it conflicts.
    let other = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "m"}, "data": {"k": "9"}});
    let e = api_error(
        api.patch("m", &PatchParams::apply("other"), &Patch::Apply(&other))
            .await
            .unwrap_err(),
    );
    assert!(
        e.message.contains("conflict with \"owner\""),
        "{}",
        e.message
    );
    h.shutdown().await;
}

#[tokio::test]
async fn events_recorded_through_events_v1_are_core_events_too() {
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};
    let h = start().await;
    let c = client(&h).await;
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "demo");
    let target = cms
        .create(&PostParams::default(), &cm("subject", &[]))
        .await
        .unwrap();
    let recorder = Recorder::new(
        c.clone(),
        Reporter {
            controller: "lapse-test".into(),
            instance: None,
        },
    );
    let ev = Event {
        type_: EventType::Normal,
        reason: "Activated".into(),
        note: Some("lease started".into()),
        action: "Activate".into(),
        secondary: None,
    };
    let reference = kube::Resource::object_ref(&target, &());
    recorder.publish(&ev, &reference).await.unwrap();
    recorder.publish(&ev, &reference).await.unwrap();

    // kubectl describe reads core/v1 Events by involvedObject fields.
    let core: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(c.clone(), "demo");
    let found = core
        .list(
            &ListParams::default()
                .fields("involvedObject.name=subject,involvedObject.kind=ConfigMap"),
        )
        .await
        .unwrap();
    assert_eq!(found.items.len(), 1);
    let e = &found.items[0];
    assert_eq!(
        (e.reason.as_deref(), e.message.as_deref()),
        (Some("Activated"), Some("lease started"))
    );
    assert_eq!(e.series.as_ref().map(|s| s.count), Some(Some(2)));
    let v1: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(c, "demo");
    let back = v1.get(&e.metadata.name.clone().unwrap()).await.unwrap();
    assert_eq!(back.note.as_deref(), Some("lease started"));
    assert_eq!(back.regarding.unwrap().name.as_deref(), Some("subject"));
    h.shutdown().await;
}

#[tokio::test]
async fn pod_disruption_budgets_and_network_policies_are_stored_with_defaults() {
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    let h = start().await;
    let c = client(&h).await;
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(c.clone(), "demo");
    let pdb: PodDisruptionBudget = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"maxUnavailable": "25%", "selector": {"matchLabels": {"app": "web"}}},
    }))
    .unwrap();
    let created = pdbs.create(&PostParams::default(), &pdb).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    let status = created.status.unwrap();
    assert_eq!(
        (
            status.observed_generation,
            status.disruptions_allowed,
            status.expected_pods
        ),
        (Some(1), 0, 0)
    );
    assert_eq!(status.conditions.unwrap()[0].reason, "InsufficientPods");
    // A spec change is a new generation, which the stand-in controller observes.
    let patched = pdbs
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"maxUnavailable": 1}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.metadata.generation, Some(2));
    assert_eq!(patched.status.unwrap().observed_generation, Some(2));
    assert_eq!(
        pdbs.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );

    let netpols: Api<NetworkPolicy> = Api::namespaced(c.clone(), "demo");
    let np: NetworkPolicy = serde_json::from_value(json!({
        "metadata": {"name": "db"},
        "spec": {"podSelector": {"matchLabels": {"app": "db"}},
                 "egress": [{"ports": [{"port": 5432}]}]},
    }))
    .unwrap();
    let created = netpols.create(&PostParams::default(), &np).await.unwrap();
    let spec = created.spec.unwrap();
    assert_eq!(
        spec.policy_types.unwrap(),
        ["Ingress", "Egress"],
        "policyTypes defaulted from the rules given"
    );
    assert_eq!(
        spec.egress.unwrap()[0].ports.as_ref().unwrap()[0]
            .protocol
            .as_deref(),
        Some("TCP")
    );
    netpols
        .delete("db", &DeleteParams::default())
        .await
        .unwrap();
    assert!(netpols.get_opt("db").await.unwrap().is_none());
    h.shutdown().await;
}

fn status_writer_policy() -> serde_json::Value {
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": "widget-status-writer"},
        "spec": {
            "matchConstraints": {"resourceRules": [{"apiGroups": ["test.lapse.dev"], "apiVersions": ["*"],
                "operations": ["UPDATE"], "resources": ["widgets/status"]}]},
            "matchConditions": [{"name": "not-admin", "expression": "!('system:masters' in request.userInfo.groups)"}],
            "validations": [{
                "expression": "request.userInfo.username == 'bob@example.com'",
                "messageExpression": "'only bob writes Widget status; ' + request.userInfo.username + ' may not'",
                "reason": "Forbidden",
            }],
        },
    })
}

#[tokio::test]
async fn validating_admission_policy_guards_a_status_subresource() {
    use k8s_openapi::api::admissionregistration::v1::{
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    };
    use lapse_sim_kube::StaticUser;
    let h = start().await;
    let admin = client(&h).await;
    install_widget_crd(&admin).await;
    let alice = StaticUser::new("alice@example.com", &["dev"]);
    let bob = StaticUser::new("bob@example.com", &["dev"]);
    h.add_user(&alice);
    h.add_user(&bob);
    h.create(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "widget-writer"},
        "rules": [{"apiGroups": ["test.lapse.dev"], "resources": ["widgets", "widgets/status"], "verbs": ["*"]}]}))
    .unwrap();
    h.create(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "dev-writes-widgets"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "widget-writer"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "dev"}]}))
    .unwrap();

    let vaps: Api<ValidatingAdmissionPolicy> = Api::all(admin.clone());
    let policy: ValidatingAdmissionPolicy = serde_json::from_value(status_writer_policy()).unwrap();
    let stored = vaps.create(&PostParams::default(), &policy).await.unwrap();
    let spec = stored.spec.unwrap();
    assert_eq!(spec.failure_policy.as_deref(), Some("Fail"), "defaulted");
    let constraints = spec.match_constraints.unwrap();
    assert_eq!(constraints.match_policy.as_deref(), Some("Equivalent"));
    assert_eq!(
        constraints.resource_rules.unwrap()[0].scope.as_deref(),
        Some("*")
    );
    assert_eq!(stored.status.unwrap().observed_generation, Some(1));
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(admin.clone());
    let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(json!({
        "metadata": {"name": "widget-status-writer"},
        "spec": {"policyName": "widget-status-writer", "validationActions": ["Deny"]},
    }))
    .unwrap();
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    // An expression that does not compile is refused when the policy is written.
    let mut bad = status_writer_policy();
    bad["metadata"]["name"] = json!("broken");
    bad["spec"]["validations"][0]["expression"] = json!("request.userInfo.username ==");
    let bad: ValidatingAdmissionPolicy = serde_json::from_value(bad).unwrap();
    let e = api_error(vaps.create(&PostParams::default(), &bad).await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert!(
        e.message
            .contains("spec.validations[0].expression: Invalid value"),
        "{}",
        e.message
    );

    let as_alice: Api<Widget> =
        Api::namespaced(support::client_with_token(&h, &alice.token).await, "demo");
    let as_bob: Api<Widget> =
        Api::namespaced(support::client_with_token(&h, &bob.token).await, "demo");
    let w = eventually("the Widget type to be served", || {
        let api = as_alice.clone();
        async move {
            api.create(
                &PostParams::default(),
                &Widget::new(
                    "w1",
                    WidgetSpec {
                        size: 1,
                        color: None,
                        owner: None,
                    },
                ),
            )
            .await
            .ok()
        }
    })
    .await;
    assert!(
        w.metadata.uid.is_some(),
        "alice may create (the policy covers status only)"
    );
    let status = |phase: &str| Patch::Merge(json!({"status": {"phase": phase}}));
    let e = api_error(
        as_alice
            .patch_status("w1", &PatchParams::default(), &status("Forged"))
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        e.message,
        "widgets.test.lapse.dev \"w1\" is forbidden: ValidatingAdmissionPolicy 'widget-status-writer' with binding 'widget-status-writer' denied request: only bob writes Widget status; alice@example.com may not"
    );
    let w = as_bob
        .patch_status("w1", &PatchParams::default(), &status("Ready"))
        .await
        .unwrap();
    assert_eq!(w.status.unwrap().phase.as_deref(), Some("Ready"));
    // The admin is exempted by the policy's matchCondition.
    Api::<Widget>::namespaced(admin.clone(), "demo")
        .patch_status("w1", &PatchParams::default(), &status("Reset"))
        .await
        .unwrap();
    // Main-resource writes by alice are not status writes.
    as_alice
        .patch(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 2}})),
        )
        .await
        .unwrap();
    // Deleting the binding lifts the policy at once.
    bindings
        .delete("widget-status-writer", &DeleteParams::default())
        .await
        .unwrap();
    as_alice
        .patch_status("w1", &PatchParams::default(), &status("Mine"))
        .await
        .unwrap();
    h.shutdown().await;
}

#[tokio::test]
async fn the_product_status_writer_policy_admits_only_the_operator() {
    // config/admission/status_writer.yaml, as shipped, against AccessGrant status writes.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let h = start().await;
    let admin = client(&h).await;
    for entry in std::fs::read_dir(dir.join("config/crd")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).unwrap();
            for doc in serde_yaml_ng::Deserializer::from_str(&text) {
                let v = serde_json::Value::deserialize(doc).unwrap();
                if v.is_object() {
                    h.create(v).unwrap();
                }
            }
        }
    }
    let text = std::fs::read_to_string(dir.join("config/admission/status_writer.yaml")).unwrap();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        h.create(serde_json::Value::deserialize(doc).unwrap())
            .unwrap();
    }
    let policy = h
        .object(
            "admissionregistration.k8s.io",
            "validatingadmissionpolicies",
            "",
            "lapse-status-writer",
        )
        .unwrap();
    let rule = &policy["spec"]["matchConstraints"]["resourceRules"][0];
    assert_eq!(rule["resources"], json!(["accessgrants/status"]));
    // The operator's ServiceAccount (its real token) may write AccessGrant status; a person with
    // the same RBAC may not, and is told why with the policy's reason (Forbidden).
    h.create_namespace("lapse-system").unwrap();
    h.create(json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "lapse-operator", "namespace": "lapse-system"}}))
        .unwrap();
    let alice = lapse_sim_kube::StaticUser::new("alice@example.com", &[]);
    h.add_user(&alice);
    h.create(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "grant-status"},
        "rules": [{"apiGroups": ["lapse.dev"], "resources": ["accessgrants", "accessgrants/status"], "verbs": ["*"]}]}))
    .unwrap();
    h.create(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "grant-status"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "grant-status"},
        "subjects": [{"kind": "ServiceAccount", "name": "lapse-operator", "namespace": "lapse-system"},
                     {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice@example.com"}]}))
    .unwrap();
    let resource = kube::api::ApiResource {
        group: "lapse.dev".into(),
        version: "v1alpha1".into(),
        api_version: "lapse.dev/v1alpha1".into(),
        kind: "AccessGrant".into(),
        plural: "accessgrants".into(),
    };
    let grants =
        |c: kube::Client| Api::<kube::api::DynamicObject>::namespaced_with(c, "demo", &resource);
    grants(admin.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "lapse.dev/v1alpha1", "kind": "AccessGrant",
                "metadata": {"name": "g1"},
                "spec": {"identity": {"servicePrincipal": {"objectId": "00000000-0000-0000-0000-000000000001"}},
                         "roles": [{"role": "Reader", "scope": "/subscriptions/s1"}], "duration": "1h"},
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let token: serde_json::Value = admin
        .request(
            http::Request::post(
                "/api/v1/namespaces/lapse-system/serviceaccounts/lapse-operator/token",
            )
            .header("content-type", "application/json")
            .body(br#"{"spec":{}}"#.to_vec())
            .unwrap(),
        )
        .await
        .unwrap();
    let operator = support::client_with_token(&h, token["status"]["token"].as_str().unwrap()).await;
    let person = support::client_with_token(&h, &alice.token).await;
    let status = Patch::Merge(json!({"status": {"phase": "Active"}}));
    let e = api_error(
        grants(person)
            .patch_status("g1", &PatchParams::default(), &status)
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        e.message,
        "accessgrants.lapse.dev \"g1\" is forbidden: ValidatingAdmissionPolicy 'lapse-status-writer' with binding 'lapse-status-writer' denied request: only lapse-operator writes AccessGrant status; alice@example.com may not (docs/security.md)"
    );
    let g = grants(operator)
        .patch_status("g1", &PatchParams::default(), &status)
        .await
        .unwrap();
    assert_eq!(g.data["status"]["phase"], "Active");
    h.shutdown().await;
}
