//! Deletion: finalizers, preconditions, deletecollection, garbage collection of dependents,
//! and the namespace and CRD termination that follow removals.

use serde_json::{Value, json};

use crate::api::{
    Target, dry_run, field_selector, matching, now, parse_body, present, validating_admission,
};
use crate::controllers::{CRD_GROUP, CRD_PLURAL, refresh_crd_types, set_condition};
use crate::selectors::LabelSelector;
use crate::server::{Req, State};
use crate::status::{self, ApiError};
use crate::store::Store;

/// `DeleteOptions` from the body and query.
fn delete_options(req: &Req) -> Result<Value, ApiError> {
    if req.body.is_empty() {
        return Ok(json!({}));
    }
    parse_body(req)
}

pub(crate) fn delete(state: &State, req: &Req, t: &Target) -> Result<(u16, Value), ApiError> {
    let opts = delete_options(req)?;
    let mut store = state.store();
    let out = delete_locked(&mut store, t, &opts, dry_run(req), Some(req))?;
    Ok((200, out))
}

/// Deletes one object: with finalizers it is marked (deletionTimestamp) and kept; without, removed.
/// `req` is the API request being served (admitted as DELETE); `None` for the server's own
/// controllers (garbage collection, namespace and CRD cleanup).
pub(crate) fn delete_locked(
    store: &mut Store,
    t: &Target,
    opts: &Value,
    dry_run: bool,
    req: Option<&Req>,
) -> Result<Value, ApiError> {
    let rt = &t.rt;
    let ns = t.ns().to_owned();
    let obj = store
        .get(&rt.storage_group, &rt.plural, &ns, t.name())
        .cloned()
        .ok_or_else(|| ApiError::not_found(t.subject()))?;
    let pre = &opts["preconditions"];
    if let Some(uid) = pre["uid"].as_str()
        && Some(uid) != obj["metadata"]["uid"].as_str()
    {
        return Err(ApiError::conflict(
            t.subject(),
            &format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                obj["metadata"]["uid"].as_str().unwrap_or_default()
            ),
        ));
    }
    if let Some(rv) = pre["resourceVersion"].as_str()
        && Some(rv) != obj["metadata"]["resourceVersion"].as_str()
    {
        return Err(ApiError::conflict(
            t.subject(),
            &format!(
                "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                obj["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or_default()
            ),
        ));
    }
    if let Some(req) = req {
        validating_admission(store, req, t, "DELETE", t.name(), None, Some(&obj))?;
    }
    if dry_run {
        return Ok(present(rt, &obj));
    }
    let is_ns = rt.group.is_empty() && rt.plural == "namespaces";
    let is_crd = rt.group == CRD_GROUP && rt.plural == CRD_PLURAL;
    let has_finalizers = obj["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|a| !a.is_empty());
    if has_finalizers || is_ns || is_crd {
        if obj["metadata"]["deletionTimestamp"].is_string() {
            return Ok(present(rt, &obj));
        }
        let mut marked = obj.clone();
        marked["metadata"]["deletionTimestamp"] = json!(now());
        marked["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        if let Some(g) = marked["metadata"]["generation"].as_i64() {
            marked["metadata"]["generation"] = json!(g + 1);
        }
        if is_ns {
            marked["status"]["phase"] = json!("Terminating");
        }
        if is_crd {
            set_condition(
                &mut marked,
                "Terminating",
                "True",
                "InstanceDeletionInProgress",
                "CustomResource deletion is in progress",
            );
        }
        store.put(&rt.storage_group, &rt.plural, &ns, t.name(), marked);
        if is_ns {
            terminate_namespace(store, t.name());
        }
        if is_crd {
            terminate_crd(store, &obj);
        }
        // Terminating containers may already be empty, and then the object is gone by now.
        return Ok(
            match store.get(&rt.storage_group, &rt.plural, &ns, t.name()) {
                Some(o) => present(rt, o),
                None => status::success(
                    t.subject(),
                    obj["metadata"]["uid"].as_str().unwrap_or_default(),
                ),
            },
        );
    }
    remove_object(store, &rt.storage_group, &rt.plural, &ns, t.name());
    Ok(status::success(
        t.subject(),
        obj["metadata"]["uid"].as_str().unwrap_or_default(),
    ))
}

pub(crate) fn delete_collection(
    state: &State,
    req: &Req,
    t: &Target,
) -> Result<(u16, Value), ApiError> {
    let opts = delete_options(req)?;
    let labels = LabelSelector::parse(req.q("labelSelector").unwrap_or_default())?;
    let fields = field_selector(req, &t.rt)?;
    let mut store = state.store();
    let items = matching(&store, t, &labels, &fields);
    let mut deleted = Vec::new();
    for item in &items {
        let one = Target {
            ns: item["metadata"]["namespace"].as_str().map(str::to_owned),
            name: item["metadata"]["name"].as_str().map(str::to_owned),
            ..t.clone()
        };
        delete_locked(&mut store, &one, &opts, dry_run(req), Some(req))?;
        deleted.push(item.clone());
    }
    let rv = store.current_rv().to_string();
    Ok((
        200,
        json!({"kind": format!("{}List", t.rt.kind), "apiVersion": t.rt.api_version(), "metadata": {"resourceVersion": rv}, "items": deleted}),
    ))
}

/// Removes an object for good, then deletes dependents it was the last owner of (background
/// propagation, as the garbage collector does) and finishes terminating namespaces and CRDs.
pub(crate) fn remove_object(
    store: &mut Store,
    group: &str,
    plural: &str,
    ns: &str,
    name: &str,
) -> Option<Value> {
    let gone = store.remove(group, plural, ns, name)?;
    if let Some(uid) = gone["metadata"]["uid"].as_str() {
        for (g, p, dns, dname) in store.orphans_of(uid) {
            let Some(rt) = store
                .types
                .iter()
                .find(|t| t.group == g && t.plural == p)
                .cloned()
            else {
                continue;
            };
            let t = Target {
                rt,
                ns: Some(dns),
                name: Some(dname),
                sub: None,
            };
            // A dependent that is already gone or terminating needs nothing more.
            let _ = delete_locked(store, &t, &json!({}), false, None);
        }
    }
    after_removal(store, group, plural, ns);
    Some(gone)
}

/// Finishes terminating namespaces and CRDs once their content is gone.
fn after_removal(store: &mut Store, group: &str, plural: &str, ns: &str) {
    if !ns.is_empty() {
        let terminating = store
            .get("", "namespaces", "", ns)
            .is_some_and(|n| n["metadata"]["deletionTimestamp"].is_string());
        if terminating && store.all_keys_in_namespace(ns).is_empty() {
            finish_namespace(store, ns);
        }
    }
    let crd_name = store
        .types
        .iter()
        .find(|t| t.group == group && t.plural == plural)
        .and_then(|t| t.crd.clone());
    if let Some(crd) = crd_name {
        let terminating = store
            .get(CRD_GROUP, CRD_PLURAL, "", &crd)
            .is_some_and(|c| c["metadata"]["deletionTimestamp"].is_string());
        let empty = store.bucket(group, plural).is_none_or(|b| b.is_empty());
        if terminating && empty {
            finish_crd(store, &crd);
        }
    }
}

fn terminate_namespace(store: &mut Store, ns: &str) {
    for (group, plural, name) in store.all_keys_in_namespace(ns) {
        let Some(rt) = store
            .types
            .iter()
            .find(|t| t.group == group && t.plural == plural)
            .cloned()
        else {
            continue;
        };
        let t = Target {
            rt,
            ns: Some(ns.to_owned()),
            name: Some(name),
            sub: None,
        };
        let _ = delete_locked(store, &t, &json!({}), false, None);
    }
    if store.all_keys_in_namespace(ns).is_empty() {
        finish_namespace(store, ns);
    }
}

fn finish_namespace(store: &mut Store, ns: &str) {
    let has_finalizers = store.get("", "namespaces", "", ns).is_some_and(|n| {
        n["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    });
    if !has_finalizers {
        remove_object(store, "", "namespaces", "", ns);
    }
}

fn terminate_crd(store: &mut Store, crd: &Value) {
    let group = crd["spec"]["group"].as_str().unwrap_or_default().to_owned();
    let plural = crd["spec"]["names"]["plural"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let name = crd["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let keys: Vec<(String, String)> = store
        .bucket(&group, &plural)
        .map(|b| b.keys().cloned().collect())
        .unwrap_or_default();
    let rt = store
        .types
        .iter()
        .find(|t| t.group == group && t.plural == plural)
        .cloned();
    if let Some(rt) = rt {
        for (ns, n) in keys {
            let t = Target {
                rt: rt.clone(),
                ns: Some(ns),
                name: Some(n),
                sub: None,
            };
            let _ = delete_locked(store, &t, &json!({}), false, None);
        }
    }
    if store.bucket(&group, &plural).is_none_or(|b| b.is_empty()) {
        finish_crd(store, &name);
    }
}

fn finish_crd(store: &mut Store, name: &str) {
    remove_object(store, CRD_GROUP, CRD_PLURAL, "", name);
    refresh_crd_types(store);
}
