//! The connection, as kubectl makes it: the kubeconfig (`--kubeconfig`, else `$KUBECONFIG`, else
//! `~/.kube/config`, else in-cluster), `--context`, the namespace, impersonation (`--as`,
//! `--as-group`), and who the API server says the caller is (`SelfSubjectReview`, what
//! `kubectl auth whoami` asks).

use anyhow::Context as _;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::cli::Global;

/// A client and the namespace the command works in.
#[derive(Clone)]
pub struct Kube {
    pub client: kube::Client,
    /// `-n`, else the context's namespace, else `default`.
    pub namespace: String,
    /// `-A`.
    pub all_namespaces: bool,
}

impl std::fmt::Debug for Kube {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kube")
            .field("namespace", &self.namespace)
            .field("all_namespaces", &self.all_namespaces)
            .finish_non_exhaustive()
    }
}

/// The caller as the API server authenticated them (after impersonation).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Caller {
    pub username: String,
    pub groups: Vec<String>,
}

impl Kube {
    pub async fn connect(g: &Global) -> anyhow::Result<Self> {
        let mut config = if g.kubeconfig.is_some() || g.context.is_some() {
            let options = KubeConfigOptions {
                context: g.context.clone(),
                ..Default::default()
            };
            match &g.kubeconfig {
                Some(path) => {
                    let kc = Kubeconfig::read_from(path)
                        .with_context(|| format!("reading kubeconfig {}", path.display()))?;
                    kube::Config::from_custom_kubeconfig(kc, &options).await
                }
                None => kube::Config::from_kubeconfig(&options).await,
            }
            .with_context(|| match &g.context {
                Some(c) => format!("loading kubeconfig context {c:?}"),
                None => "loading the kubeconfig".to_owned(),
            })?
        } else {
            kube::Config::infer()
                .await
                .context("no kubeconfig found ($KUBECONFIG, ~/.kube/config) and not in a cluster")?
        };
        if let Some(user) = &g.as_user {
            config.auth_info.impersonate = Some(user.clone());
        }
        if !g.as_group.is_empty() {
            if g.as_user.is_none() {
                return Err(crate::exit::Stop::Usage(
                    "--as-group needs --as: a group is impersonated together with a user".into(),
                )
                .into());
            }
            config.auth_info.impersonate_groups = Some(g.as_group.clone());
        }
        let namespace = g
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = kube::Client::try_from(config).context("building the Kubernetes client")?;
        Ok(Self {
            client,
            namespace,
            all_namespaces: g.all_namespaces,
        })
    }

    /// Who the API server says the caller is: `SelfSubjectReview` (authentication.k8s.io/v1,
    /// Kubernetes ≥ 1.28), as `kubectl auth whoami`.
    pub async fn whoami(&self) -> anyhow::Result<Caller> {
        let api: Api<SelfSubjectReview> = Api::all(self.client.clone());
        let review = api
            .create(&PostParams::default(), &SelfSubjectReview::default())
            .await
            .context(
                "asking the API server who you are (SelfSubjectReview, authentication.k8s.io/v1, \
                 as `kubectl auth whoami`; Kubernetes 1.28 or later)",
            )?;
        let info = review.status.and_then(|s| s.user_info).unwrap_or_default();
        let username = info
            .username
            .filter(|u| !u.is_empty())
            .context("the API server's SelfSubjectReview named no user")?;
        Ok(Caller {
            username,
            groups: info.groups.unwrap_or_default(),
        })
    }

    /// The namespace's labels (policies may select namespaces by label). `None` when the caller
    /// may not read the namespace.
    pub async fn namespace_labels(
        &self,
        ns: &str,
    ) -> anyhow::Result<Option<std::collections::BTreeMap<String, String>>> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        match api.get(ns).await {
            Ok(n) => Ok(Some(n.metadata.labels.unwrap_or_default())),
            Err(e) if is_forbidden(&e) => Ok(None),
            Err(e) if is_not_found(&e) => Err(anyhow::anyhow!("namespace {ns:?} does not exist")),
            Err(e) => Err(e).with_context(|| format!("reading namespace {ns}")),
        }
    }
}

/// The field manager of the plugin's writes (managedFields say who changed what).
pub const FIELD_MANAGER: &str = "kubectl-lapse";

pub fn post_params() -> kube::api::PostParams {
    kube::api::PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..Default::default()
    }
}

pub fn patch_params() -> kube::api::PatchParams {
    kube::api::PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..Default::default()
    }
}

pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.is_not_found())
}

pub fn is_forbidden(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.is_forbidden())
}

pub fn is_already_exists(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.is_already_exists())
}

/// The API server's own message for an API error (what kubectl prints after "Error from
/// server"), else the error.
pub fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) if !s.message.is_empty() => s.message.clone(),
        other => other.to_string(),
    }
}
