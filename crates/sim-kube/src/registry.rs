//! The resource types the server serves: built-ins and those defined by established CRDs.

use serde_json::Value;

/// A printer column (`additionalPrinterColumns` or a built-in one).
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    pub type_: String,
    pub format: String,
    pub description: String,
    pub priority: i64,
    /// JSONPath such as `.status.phase`; empty for the NAME column.
    pub json_path: String,
}

impl Column {
    pub fn new(name: &str, type_: &str, json_path: &str, priority: i64) -> Self {
        Self {
            name: name.to_owned(),
            type_: type_.to_owned(),
            format: String::new(),
            description: String::new(),
            priority,
            json_path: json_path.to_owned(),
        }
    }
}

/// One served group/version/resource.
#[derive(Debug, Clone)]
pub struct ResourceType {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub has_status: bool,
    /// Whether spec writes bump `metadata.generation` (CRs and workload-like built-ins).
    pub tracks_generation: bool,
    /// Printer columns after NAME; empty means NAME and AGE.
    pub columns: Vec<Column>,
    /// The structural schema (`openAPIV3Schema`) of a CRD version; `None` for built-ins.
    pub schema: Option<Value>,
    /// The CRD that defines this type.
    pub crd: Option<String>,
    /// The version objects are stored in (CRDs: the `storage: true` version).
    pub storage_version: String,
    /// Review-style resources (TokenReview, SubjectAccessReview) that only accept `create`.
    pub create_only: bool,
    /// The group whose storage holds the objects (events.k8s.io Events live with core Events).
    pub storage_group: String,
}

impl ResourceType {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
    pub fn verbs(&self) -> Vec<&'static str> {
        if self.create_only {
            return vec!["create"];
        }
        vec![
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ]
    }
}

#[allow(clippy::too_many_arguments)]
fn builtin(
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
    namespaced: bool,
    short_names: &[&str],
    categories: &[&str],
    has_status: bool,
    tracks_generation: bool,
    columns: Vec<Column>,
) -> ResourceType {
    ResourceType {
        group: group.to_owned(),
        version: version.to_owned(),
        kind: kind.to_owned(),
        plural: plural.to_owned(),
        singular: kind.to_lowercase(),
        namespaced,
        short_names: short_names.iter().map(|s| (*s).to_owned()).collect(),
        categories: categories.iter().map(|s| (*s).to_owned()).collect(),
        has_status,
        tracks_generation,
        columns,
        schema: None,
        crd: None,
        storage_version: version.to_owned(),
        create_only: false,
        storage_group: group.to_owned(),
    }
}

/// The built-in kinds, with the printer columns kubectl shows for them.
pub fn builtins() -> Vec<ResourceType> {
    let c = Column::new;
    let review_at = |group: &str, version: &str, kind: &str, plural: &str| ResourceType {
        create_only: true,
        ..builtin(
            group,
            version,
            kind,
            plural,
            false,
            &[],
            &[],
            false,
            false,
            vec![],
        )
    };
    let review = |group: &str, kind: &str, plural: &str| review_at(group, "v1", kind, plural);
    let mut types = vec![
        builtin(
            "",
            "v1",
            "Namespace",
            "namespaces",
            false,
            &["ns"],
            &[],
            true,
            false,
            vec![c("Status", "string", ".status.phase", 0)],
        ),
        builtin(
            "",
            "v1",
            "ServiceAccount",
            "serviceaccounts",
            true,
            &["sa"],
            &[],
            false,
            false,
            vec![c("Secrets", "string", "#secrets", 0)],
        ),
        builtin(
            "",
            "v1",
            "Secret",
            "secrets",
            true,
            &[],
            &[],
            false,
            false,
            vec![
                c("Type", "string", ".type", 0),
                c("Data", "string", "#data", 0),
            ],
        ),
        builtin(
            "",
            "v1",
            "ConfigMap",
            "configmaps",
            true,
            &["cm"],
            &[],
            false,
            false,
            vec![c("Data", "string", "#data", 0)],
        ),
        builtin(
            "",
            "v1",
            "Event",
            "events",
            true,
            &["ev"],
            &[],
            false,
            false,
            vec![
                c("Type", "string", ".type", 0),
                c("Reason", "string", ".reason", 0),
                c("Object", "string", ".involvedObject.name", 0),
                c("Message", "string", ".message", 0),
            ],
        ),
        builtin(
            "",
            "v1",
            "Service",
            "services",
            true,
            &["svc"],
            &["all"],
            true,
            false,
            vec![
                c("Type", "string", ".spec.type", 0),
                c("Cluster-IP", "string", ".spec.clusterIP", 0),
                c("Port(s)", "string", "#ports", 0),
            ],
        ),
        builtin(
            "events.k8s.io",
            "v1",
            "Event",
            "events",
            true,
            &["ev"],
            &[],
            false,
            false,
            vec![
                c("Type", "string", ".type", 0),
                c("Reason", "string", ".reason", 0),
                c("Object", "string", ".regarding.name", 0),
                c("Note", "string", ".note", 0),
            ],
        ),
        builtin(
            "coordination.k8s.io",
            "v1",
            "Lease",
            "leases",
            true,
            &[],
            &[],
            false,
            false,
            vec![c("Holder", "string", ".spec.holderIdentity", 0)],
        ),
        builtin(
            "apps",
            "v1",
            "Deployment",
            "deployments",
            true,
            &["deploy"],
            &["all"],
            true,
            true,
            vec![
                c("Ready", "string", "#ready", 0),
                c("Up-to-date", "integer", ".status.updatedReplicas", 0),
                c("Available", "integer", ".status.availableReplicas", 0),
            ],
        ),
        builtin(
            "policy",
            "v1",
            "PodDisruptionBudget",
            "poddisruptionbudgets",
            true,
            &["pdb"],
            &[],
            true,
            true,
            vec![
                c("Min Available", "string", "#min-available", 0),
                c("Max Unavailable", "string", "#max-unavailable", 0),
                c(
                    "Allowed Disruptions",
                    "integer",
                    ".status.disruptionsAllowed",
                    0,
                ),
            ],
        ),
        builtin(
            "networking.k8s.io",
            "v1",
            "NetworkPolicy",
            "networkpolicies",
            true,
            &["netpol"],
            &[],
            false,
            true,
            vec![c("Pod-Selector", "string", "#pod-selector", 0)],
        ),
        builtin(
            "admissionregistration.k8s.io",
            "v1",
            "ValidatingAdmissionPolicy",
            "validatingadmissionpolicies",
            false,
            &[],
            &["api-extensions"],
            true,
            true,
            vec![
                c("Validations", "integer", "#validations", 0),
                c("ParamKind", "string", "#param-kind", 0),
            ],
        ),
        builtin(
            "admissionregistration.k8s.io",
            "v1",
            "ValidatingAdmissionPolicyBinding",
            "validatingadmissionpolicybindings",
            false,
            &[],
            &["api-extensions"],
            false,
            true,
            vec![
                c("PolicyName", "string", ".spec.policyName", 0),
                c("ParamRef", "string", "#param-ref", 0),
            ],
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "Role",
            "roles",
            true,
            &[],
            &[],
            false,
            false,
            vec![],
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "RoleBinding",
            "rolebindings",
            true,
            &[],
            &[],
            false,
            false,
            vec![c("Role", "string", "#roleref", 0)],
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRole",
            "clusterroles",
            false,
            &[],
            &[],
            false,
            false,
            vec![],
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRoleBinding",
            "clusterrolebindings",
            false,
            &[],
            &[],
            false,
            false,
            vec![c("Role", "string", "#roleref", 0)],
        ),
        builtin(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            false,
            &["crd", "crds"],
            &["api-extensions"],
            true,
            true,
            vec![c("Created At", "date", ".metadata.creationTimestamp", 0)],
        ),
    ];
    // events.k8s.io/v1 Events are the core Events, in another shape (see `events`).
    for t in types.iter_mut().filter(|t| t.group == "events.k8s.io") {
        t.storage_group = String::new();
    }
    types.push(review(
        "authentication.k8s.io",
        "TokenReview",
        "tokenreviews",
    ));
    types.push(review(
        "authentication.k8s.io",
        "SelfSubjectReview",
        "selfsubjectreviews",
    ));
    // kubectl 1.27's `auth whoami` asks v1beta1 (v1 is served since Kubernetes 1.28).
    types.push(review_at(
        "authentication.k8s.io",
        "v1beta1",
        "SelfSubjectReview",
        "selfsubjectreviews",
    ));
    types.push(review(
        "authorization.k8s.io",
        "SelfSubjectAccessReview",
        "selfsubjectaccessreviews",
    ));
    types.push(review(
        "authorization.k8s.io",
        "SubjectAccessReview",
        "subjectaccessreviews",
    ));
    types
}

/// Builds the served types of a CRD object (one per served version).
pub fn from_crd(crd: &Value) -> Vec<ResourceType> {
    let spec = &crd["spec"];
    let name = crd["metadata"]["name"].as_str().unwrap_or_default();
    let group = spec["group"].as_str().unwrap_or_default();
    let names = &spec["names"];
    let strs = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let kind = names["kind"].as_str().unwrap_or_default();
    let plural = names["plural"].as_str().unwrap_or_default();
    let singular = names["singular"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| kind.to_lowercase());
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    let storage_version = versions
        .iter()
        .find(|v| v["storage"].as_bool() == Some(true))
        .and_then(|v| v["name"].as_str())
        .unwrap_or_default()
        .to_owned();
    versions
        .iter()
        .filter(|v| v["served"].as_bool().unwrap_or(true))
        .map(|v| {
            let columns = v["additionalPrinterColumns"]
                .as_array()
                .map(|cols| {
                    cols.iter()
                        .map(|c| Column {
                            name: c["name"].as_str().unwrap_or_default().to_owned(),
                            type_: c["type"].as_str().unwrap_or("string").to_owned(),
                            format: c["format"].as_str().unwrap_or_default().to_owned(),
                            description: c["description"].as_str().unwrap_or_default().to_owned(),
                            priority: c["priority"].as_i64().unwrap_or(0),
                            json_path: c["jsonPath"].as_str().unwrap_or_default().to_owned(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            ResourceType {
                group: group.to_owned(),
                version: v["name"].as_str().unwrap_or_default().to_owned(),
                kind: kind.to_owned(),
                plural: plural.to_owned(),
                singular: singular.clone(),
                namespaced: spec["scope"].as_str() != Some("Cluster"),
                short_names: strs(&names["shortNames"]),
                categories: strs(&names["categories"]),
                has_status: v["subresources"]["status"].is_object(),
                tracks_generation: true,
                columns,
                schema: v["schema"]["openAPIV3Schema"]
                    .is_object()
                    .then(|| v["schema"]["openAPIV3Schema"].clone()),
                crd: Some(name.to_owned()),
                storage_version: storage_version.clone(),
                create_only: false,
                storage_group: group.to_owned(),
            }
        })
        .collect()
}
