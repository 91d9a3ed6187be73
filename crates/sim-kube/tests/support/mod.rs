//! Shared test helpers: an in-process sim-kube, a kube-rs client for it, and the Widget fixture.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResource;
use kube::api::{Api, PostParams};
use lapse_sim_kube::{Config, SimKube, SimKubeHandle};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const WIDGET_CRD: &str = include_str!("../fixtures/widgets.yaml");

#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, JsonSchema)]
#[kube(
    group = "test.lapse.dev",
    version = "v1",
    kind = "Widget",
    namespaced,
    status = "WidgetStatus"
)]
pub struct WidgetSpec {
    pub size: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct WidgetStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(
        rename = "observedGeneration",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub observed_generation: Option<i64>,
}

pub async fn start() -> SimKubeHandle {
    // In a workspace build rustls has both crypto providers (ring via kube, aws-lc via the
    // Azure SDK's reqwest); kube's TLS config needs a process-wide choice.
    let _ = rustls::crypto::ring::default_provider().install_default();
    SimKube::start(Config {
        namespaces: vec!["default".into(), "kube-system".into(), "demo".into()],
        bookmark_interval: Duration::from_millis(200),
        ..Config::default()
    })
    .await
    .expect("sim-kube starts")
}

pub async fn client(h: &SimKubeHandle) -> kube::Client {
    let kc = kube::config::Kubeconfig::from_yaml(&h.kubeconfig()).expect("kubeconfig parses");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .expect("kubeconfig loads");
    kube::Client::try_from(cfg).expect("client builds")
}

/// A kube-rs client that authenticates with `token` (a static user's or a ServiceAccount's).
pub async fn client_with_token(h: &SimKubeHandle, token: &str) -> kube::Client {
    let kc = kube::config::Kubeconfig::from_yaml(&h.kubeconfig_with_token("user", token))
        .expect("kubeconfig parses");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .expect("kubeconfig loads");
    kube::Client::try_from(cfg).expect("client builds")
}

/// Creates the Widget CRD through the API, as a user would.
pub async fn install_widget_crd(client: &kube::Client) {
    let crd: CustomResourceDefinition =
        serde_yaml_ng::from_str(WIDGET_CRD).expect("fixture parses");
    Api::<CustomResourceDefinition>::all(client.clone())
        .create(&PostParams::default(), &crd)
        .await
        .expect("CRD created");
}

/// Polls `f` until it returns `Some`, for at most 10 seconds.
pub async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
