//! What the real control plane's controllers would do, done synchronously: CRD names and
//! `Established`, the served-type registry, Service defaults and a Deployment stand-in.

use serde_json::{Value, json};

use crate::api::now;
use crate::registry::{self, ResourceType};
use crate::status::{ApiError, Cause};
use crate::store::Store;

pub(crate) const CRD_GROUP: &str = "apiextensions.k8s.io";

pub(crate) const CRD_PLURAL: &str = "customresourcedefinitions";

/// Stands in for the Deployment controller and kubelets: a Deployment is at once fully rolled
/// out and available (no pods run), so `helm --wait`, kstatus and `kubectl rollout status` finish.
pub(crate) fn simulate_deployment(rt: &ResourceType, obj: &mut Value) {
    if rt.group != "apps" || rt.plural != "deployments" {
        return;
    }
    let replicas = obj["spec"]["replicas"].as_i64().unwrap_or(1);
    let now = now();
    let cond = |type_: &str, reason: &str, message: &str| {
        json!({"type": type_, "status": "True", "reason": reason, "message": message,
            "lastUpdateTime": now, "lastTransitionTime": now})
    };
    obj["status"] = json!({
        "observedGeneration": obj["metadata"]["generation"],
        "replicas": replicas, "updatedReplicas": replicas, "readyReplicas": replicas,
        "availableReplicas": replicas,
        "conditions": [
            cond("Available", "MinimumReplicasAvailable", "Deployment has minimum availability."),
            cond("Progressing", "NewReplicaSetAvailable", "ReplicaSet has successfully progressed."),
        ],
    });
}

/// Stands in for the disruption controller: no pods exist, so a PodDisruptionBudget expects
/// none, has none healthy and allows no disruption (`DisruptionAllowed=False`,
/// `InsufficientPods`).
pub(crate) fn simulate_pdb(rt: &ResourceType, obj: &mut Value) {
    if rt.group != "policy" || rt.plural != "poddisruptionbudgets" {
        return;
    }
    let generation = obj["metadata"]["generation"].clone();
    // minAvailable as a number is what must stay healthy; maxUnavailable and percentages apply
    // to the expected count, which is 0.
    let desired = obj["spec"]["minAvailable"].as_i64().unwrap_or(0).max(0);
    let since = obj["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "DisruptionAllowed"))
        .and_then(|c| c["lastTransitionTime"].as_str().map(str::to_owned))
        .unwrap_or_else(now);
    obj["status"] = json!({
        "observedGeneration": generation,
        "disruptionsAllowed": 0,
        "currentHealthy": 0,
        "desiredHealthy": desired,
        "expectedPods": 0,
        "conditions": [{
            "type": "DisruptionAllowed", "status": "False", "reason": "InsufficientPods",
            "message": "", "observedGeneration": generation, "lastTransitionTime": since,
        }],
    });
}

/// NetworkPolicy defaults (`SetDefaults_NetworkPolicy`): `policyTypes` is `Ingress`, plus
/// `Egress` when egress rules are given; rule ports default to TCP.
pub(crate) fn default_network_policy(rt: &ResourceType, obj: &mut Value) {
    if rt.group != "networking.k8s.io" || rt.plural != "networkpolicies" {
        return;
    }
    let spec = &mut obj["spec"];
    if spec["podSelector"].is_null() {
        spec["podSelector"] = json!({});
    }
    for dir in ["ingress", "egress"] {
        for rule in spec[dir].as_array_mut().into_iter().flatten() {
            for port in rule["ports"].as_array_mut().into_iter().flatten() {
                if port["protocol"].is_null() {
                    port["protocol"] = json!("TCP");
                }
            }
        }
    }
    if spec["policyTypes"].as_array().is_none_or(Vec::is_empty) {
        let mut types = vec![json!("Ingress")];
        if spec["egress"].as_array().is_some_and(|e| !e.is_empty()) {
            types.push(json!("Egress"));
        }
        spec["policyTypes"] = Value::Array(types);
    }
}

/// Service defaults: type ClusterIP, a cluster IP (an address nothing listens on), port
/// protocol TCP and targetPort = port.
pub(crate) fn default_service(svc: &mut Value, seq: u64) {
    let spec = &mut svc["spec"];
    if spec["type"].as_str().is_none_or(str::is_empty) {
        spec["type"] = json!("ClusterIP");
    }
    if spec["clusterIP"].as_str().is_none_or(str::is_empty) && spec["type"] != "ExternalName" {
        let ip = format!("10.96.{}.{}", (seq / 250) % 250, seq % 250 + 2);
        spec["clusterIP"] = json!(ip);
        spec["clusterIPs"] = json!([ip]);
    }
    if let Some(ports) = spec["ports"].as_array_mut() {
        for p in ports {
            if p["protocol"].is_null() {
                p["protocol"] = json!("TCP");
            }
            if p["targetPort"].is_null() {
                p["targetPort"] = p["port"].clone();
            }
        }
    }
}

pub(crate) fn set_condition(
    obj: &mut Value,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
) {
    let now = now();
    let cond = json!({"type": type_, "status": status, "reason": reason, "message": message, "lastTransitionTime": now});
    if !obj["status"]["conditions"].is_array() {
        obj["status"]["conditions"] = json!([]);
    }
    if let Some(list) = obj["status"]["conditions"].as_array_mut() {
        match list.iter_mut().find(|c| c["type"] == type_) {
            Some(c) if c["status"] == status => {}
            Some(c) => *c = cond,
            None => list.push(cond),
        }
    }
}

/// Validates a CRD and plays the part of the CRD controllers: names accepted, established.
pub(crate) fn crd_admit(mut crd: Value, store: &Store) -> Result<Value, ApiError> {
    let name = crd["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let spec = &crd["spec"];
    let group = spec["group"].as_str().unwrap_or_default().to_owned();
    let plural = spec["names"]["plural"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut causes = Vec::new();
    let mut bad = |field: &str, message: String| {
        causes.push(Cause {
            reason: "FieldValueInvalid".to_owned(),
            message,
            field: field.to_owned(),
        })
    };
    if group.is_empty() {
        bad("spec.group", "Required value".to_owned());
    }
    if plural.is_empty() {
        bad("spec.names.plural", "Required value".to_owned());
    }
    if spec["names"]["kind"]
        .as_str()
        .unwrap_or_default()
        .is_empty()
    {
        bad("spec.names.kind", "Required value".to_owned());
    }
    if name != format!("{plural}.{group}") {
        bad(
            "metadata.name",
            format!("Invalid value: {name:?}: must be spec.names.plural+\".\"+spec.group"),
        );
    }
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    if versions.is_empty() {
        bad(
            "spec.versions",
            "Required value: must have exactly one version marked as storage version".to_owned(),
        );
    } else if versions
        .iter()
        .filter(|v| v["storage"].as_bool() == Some(true))
        .count()
        != 1
    {
        bad(
            "spec.versions",
            format!(
                "Invalid value: {}: must have exactly one version marked as storage version",
                Value::Array(versions.clone())
            ),
        );
    }
    for (i, v) in versions.iter().enumerate() {
        if !v["schema"]["openAPIV3Schema"].is_object() {
            bad(
                &format!("spec.versions[{i}].schema.openAPIV3Schema"),
                "Required value: schemas are required".to_owned(),
            );
        }
    }
    if !causes.is_empty() {
        return Err(ApiError::invalid(
            CRD_GROUP,
            "CustomResourceDefinition",
            &name,
            causes,
        ));
    }
    // Another CRD serving the same group/plural makes the names conflict.
    let taken = store.types.iter().any(|t| {
        t.group == group
            && t.plural == plural
            && t.crd.as_deref() != Some(name.as_str())
            && t.crd.is_some()
    });
    let mut accepted = crd["spec"]["names"].clone();
    if accepted["singular"].is_null() {
        accepted["singular"] = json!(accepted["kind"].as_str().unwrap_or_default().to_lowercase());
    }
    if accepted["listKind"].is_null() {
        accepted["listKind"] = json!(format!(
            "{}List",
            accepted["kind"].as_str().unwrap_or_default()
        ));
    }
    if taken {
        set_condition(
            &mut crd,
            "NamesAccepted",
            "False",
            "NameConflict",
            &format!("\"{plural}\" is already in use"),
        );
        set_condition(
            &mut crd,
            "Established",
            "False",
            "NotAccepted",
            "not all names are accepted",
        );
        return Ok(crd);
    }
    let storage = versions
        .iter()
        .find(|v| v["storage"].as_bool() == Some(true))
        .and_then(|v| v["name"].as_str())
        .unwrap_or_default()
        .to_owned();
    let mut stored: Vec<Value> = crd["status"]["storedVersions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if !stored.contains(&json!(storage)) {
        stored.push(json!(storage));
    }
    crd["status"]["acceptedNames"] = accepted;
    crd["status"]["storedVersions"] = json!(stored);
    set_condition(
        &mut crd,
        "NamesAccepted",
        "True",
        "NoConflicts",
        "no conflicts found",
    );
    set_condition(
        &mut crd,
        "Established",
        "True",
        "InitialNamesAccepted",
        "the initial names have been accepted",
    );
    Ok(crd)
}

/// Rebuilds the served types: built-ins plus every established CRD.
pub(crate) fn refresh_crd_types(store: &mut Store) {
    let mut types = registry::builtins();
    if let Some(b) = store.bucket(CRD_GROUP, CRD_PLURAL) {
        for crd in b.values() {
            let established = crd["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Established" && c["status"] == "True")
            });
            if established {
                types.extend(registry::from_crd(crd));
            }
        }
    }
    store.types = types;
}
