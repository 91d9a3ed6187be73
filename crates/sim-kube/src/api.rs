//! Resource endpoints: dispatch, get, list, create, update, patch (incl. server-side apply) and
//! the `status` subresource, with the real API server's semantics. Deletion is in `delete`.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{SecondsFormat, Utc};
use hyper::{Method, Response};
use serde_json::{Value, json};

use crate::admission;
use crate::controllers::{
    CRD_GROUP, CRD_PLURAL, crd_admit, default_network_policy, default_service, refresh_crd_types,
    simulate_deployment, simulate_pdb,
};
use crate::delete::{delete, delete_collection, remove_object};
use crate::events;
use crate::fields::{self, Shape};
use crate::rbac::{self, Attrs};
use crate::registry::ResourceType;
use crate::schema;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::server::{Body, Req, State, error_response, json_response};
use crate::status::{ApiError, Cause, Subject};
use crate::store::Store;
use crate::table::{self, Include};
use crate::watch;

pub(crate) fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A resolved resource URL.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub rt: ResourceType,
    /// `None` means all namespaces (list/watch) or a cluster-scoped resource.
    pub ns: Option<String>,
    pub name: Option<String>,
    pub sub: Option<String>,
}

impl Target {
    pub(crate) fn ns(&self) -> &str {
        self.ns.as_deref().unwrap_or_default()
    }
    pub(crate) fn name(&self) -> &str {
        self.name.as_deref().unwrap_or_default()
    }
    pub(crate) fn subject(&self) -> Subject<'_> {
        Subject {
            group: &self.rt.group,
            resource: &self.rt.plural,
            name: self.name(),
        }
    }
}

fn resolve(store: &Store, group: &str, version: &str, rest: &[&str]) -> Result<Target, ApiError> {
    let nf = ApiError::path_not_found;
    let (ns, rest) = match rest {
        ["namespaces", ns, plural, tail @ ..]
            if store
                .find_type(group, version, plural)
                .is_some_and(|t| t.namespaced) =>
        {
            (Some((*ns).to_owned()), [&[*plural][..], tail].concat())
        }
        other => (None, other.to_vec()),
    };
    let (plural, name, sub) = match rest.as_slice() {
        [p] => (*p, None, None),
        [p, n] => (*p, Some((*n).to_owned()), None),
        [p, n, s] => (*p, Some((*n).to_owned()), Some((*s).to_owned())),
        _ => return Err(nf()),
    };
    let rt = store
        .find_type(group, version, plural)
        .ok_or_else(nf)?
        .clone();
    if ns.is_some() && !rt.namespaced {
        return Err(nf());
    }
    if let Some(s) = &sub
        && !(s == "status" && rt.has_status)
    {
        return Err(nf());
    }
    Ok(Target { rt, ns, name, sub })
}

/// Entry point for `/api/v1/...` and `/apis/{g}/{v}/...`.
pub(crate) async fn resource(
    state: &Arc<State>,
    req: Req,
    group: &str,
    version: &str,
    rest: &[&str],
) -> Response<Body> {
    let target = {
        let store = state.store();
        resolve(&store, group, version, rest)
    };
    let t = match target {
        Ok(t) => t,
        Err(e) => return error_response(&e),
    };
    let verb = match (&req.method, t.name.is_some()) {
        (&Method::GET, _) if req.flag("watch") => "watch",
        (&Method::GET, false) => "list",
        (&Method::GET, true) => "get",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, true) => "delete",
        (&Method::DELETE, false) => "deletecollection",
        _ => "unknown",
    };
    let resource = match &t.sub {
        Some(sub) => format!("{}/{sub}", t.rt.plural),
        None => t.rt.plural.clone(),
    };
    let injected = state.faults().check(verb, &resource);
    if let Some(injected) = injected {
        if !injected.delay.is_zero() {
            tokio::time::sleep(injected.delay).await;
        }
        if let Some(e) = injected.error {
            return error_response(&e);
        }
    }
    let attrs = Attrs::Resource {
        verb: verb.to_owned(),
        group: t.rt.group.clone(),
        resource: t.rt.plural.clone(),
        subresource: t.sub.clone().unwrap_or_default(),
        name: t.name.clone().unwrap_or_default(),
        namespace: t.ns.clone().unwrap_or_default(),
    };
    if !rbac::allowed(&state.store(), &req.user, &attrs) {
        return error_response(&rbac::forbidden(&req.user, &attrs));
    }
    if t.rt.create_only && verb != "create" {
        return error_response(&ApiError::method_not_allowed());
    }
    if verb == "watch" {
        return watch::watch(state, &req, &t);
    }
    let result = match (&req.method, t.name.is_some()) {
        (&Method::GET, false) => list(state, &req, &t),
        (&Method::GET, true) => get(state, &req, &t),
        (&Method::POST, false) => create(state, &req, &t),
        (&Method::PUT, true) => update(state, &req, &t),
        (&Method::PATCH, true) => patch(state, &req, &t),
        (&Method::DELETE, true) => delete(state, &req, &t),
        (&Method::DELETE, false) => delete_collection(state, &req, &t),
        _ => Err(ApiError::method_not_allowed()),
    };
    let mut resp = match result {
        Ok((code, v)) => json_response(code, &v),
        Err(e) => error_response(&e),
    };
    req.add_warnings(&mut resp);
    resp
}

/// Serves a stored object at the requested version.
pub(crate) fn present(rt: &ResourceType, obj: &Value) -> Value {
    let mut o = events::from_storage(rt, obj.clone());
    o["apiVersion"] = json!(rt.api_version());
    o["kind"] = json!(rt.kind);
    o
}

fn get(state: &State, req: &Req, t: &Target) -> Result<(u16, Value), ApiError> {
    let store = state.store();
    let obj = store
        .get(&t.rt.storage_group, &t.rt.plural, t.ns(), t.name())
        .ok_or_else(|| ApiError::not_found(t.subject()))?;
    let obj = present(&t.rt, obj);
    if req.wants_table() {
        let meta = json!({"resourceVersion": obj["metadata"]["resourceVersion"]});
        return Ok((
            200,
            table::table(&t.rt, &[obj], meta, Include::parse(req.q("includeObject"))),
        ));
    }
    Ok((200, obj))
}

/// Field selectors supported: metadata.name/namespace everywhere, any field of built-ins
/// (events need involvedObject.*, which kubectl describe uses).
pub(crate) fn field_selector(req: &Req, rt: &ResourceType) -> Result<FieldSelector, ApiError> {
    let builtin = rt.crd.is_none();
    FieldSelector::parse(req.q("fieldSelector").unwrap_or_default(), |k| {
        matches!(k, "metadata.name" | "metadata.namespace") || builtin
    })
}

pub(crate) fn matching(
    store: &Store,
    t: &Target,
    labels: &LabelSelector,
    fields: &FieldSelector,
) -> Vec<Value> {
    store
        .bucket(&t.rt.storage_group, &t.rt.plural)
        .map(|b| {
            b.iter()
                .filter(|((ns, _), _)| t.ns.as_ref().is_none_or(|want| want == ns))
                .map(|(_, v)| present(&t.rt, v))
                .filter(|v| labels.matches(v) && fields.matches(v))
                .collect()
        })
        .unwrap_or_default()
}

/// One page of a list.
struct Page {
    items: Vec<Value>,
    /// More items match after the last one.
    more: bool,
    /// How many: known only without selectors, as kube-apiserver says (`remainingItemCount`).
    remaining: Option<usize>,
}

/// The objects after `after` (in key order) that match, at most `limit` of them. Only the page
/// is copied out of the store: copying every object for each page made listing n objects in
/// pages cost n²/limit copies, seconds under the store's lock at 10,000 grants.
fn page(
    store: &Store,
    t: &Target,
    labels: &LabelSelector,
    fields: &FieldSelector,
    after: Option<(String, String)>,
    limit: Option<usize>,
) -> Page {
    use std::ops::Bound;
    let mut page = Page {
        items: Vec::new(),
        more: false,
        remaining: None,
    };
    let Some(bucket) = store.bucket(&t.rt.storage_group, &t.rt.plural) else {
        return page;
    };
    let from = after.map_or(Bound::Unbounded, Bound::Excluded);
    let mut keys = bucket
        .range((from, Bound::Unbounded))
        .filter(|((ns, _), _)| t.ns.as_ref().is_none_or(|want| want == ns));
    for (_, v) in keys.by_ref() {
        let o = present(&t.rt, v);
        if !(labels.matches(&o) && fields.matches(&o)) {
            continue;
        }
        if limit.is_some_and(|l| page.items.len() == l) {
            page.more = true;
            break;
        }
        page.items.push(o);
    }
    if page.more && labels.is_empty() && fields.is_empty() {
        page.remaining = Some(1 + keys.count());
    }
    page
}

fn list(state: &State, req: &Req, t: &Target) -> Result<(u16, Value), ApiError> {
    let labels = LabelSelector::parse(req.q("labelSelector").unwrap_or_default())?;
    let fields = field_selector(req, &t.rt)?;
    // Pages continue after the last key served (a consistent snapshot is not kept).
    let after = match req.q("continue") {
        Some(token) => Some(
            B64.decode(token)
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .map(|d| {
                    (
                        d["ns"].as_str().unwrap_or_default().to_owned(),
                        d["name"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .ok_or_else(|| {
                    ApiError::bad_request("continue key is not valid: illegal base64 data")
                })?,
        ),
        None => None,
    };
    let limit = req
        .q("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    let store = state.store();
    let rv = store.current_rv().to_string();
    let page = page(&store, t, &labels, &fields, after, limit);
    drop(store);
    let mut meta = json!({"resourceVersion": rv});
    if let Some(last) = page.items.last().filter(|_| page.more) {
        let token = json!({"ns": last["metadata"]["namespace"].as_str().unwrap_or_default(), "name": last["metadata"]["name"]});
        meta["continue"] = json!(B64.encode(token.to_string()));
        if let Some(remaining) = page.remaining {
            meta["remainingItemCount"] = json!(remaining);
        }
    }
    let items = page.items;
    if req.wants_table() {
        return Ok((
            200,
            table::table(&t.rt, &items, meta, Include::parse(req.q("includeObject"))),
        ));
    }
    Ok((
        200,
        json!({"kind": format!("{}List", t.rt.kind), "apiVersion": t.rt.api_version(), "metadata": meta, "items": items}),
    ))
}

pub(crate) fn parse_body(req: &Req) -> Result<Value, ApiError> {
    let ct = req
        .content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim();
    let v: Value = match ct {
        "application/yaml" | "application/apply-patch+yaml" => serde_yaml_ng::from_slice(&req.body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?,
        ""
        | "application/json"
        | "application/merge-patch+json"
        | "application/json-patch+json"
        | "application/strategic-merge-patch+json"
        | "*/*" => serde_json::from_slice(&req.body)
            .map_err(|e| ApiError::bad_request(format!("error decoding JSON: {e}")))?,
        "application/vnd.kubernetes.protobuf" => crate::proto::decode(&req.body)?,
        other => return Err(ApiError::unsupported_media_type(other)),
    };
    Ok(v)
}

/// The field manager: `fieldManager`, else the user agent's program name (as the real server does).
fn manager(req: &Req) -> String {
    req.q("fieldManager").map(str::to_owned).unwrap_or_else(|| {
        req.user_agent
            .split('/')
            .next()
            .filter(|s| !s.is_empty())
            .unwrap_or("unknown")
            .to_owned()
    })
}

pub(crate) fn dry_run(req: &Req) -> bool {
    req.q("dryRun") == Some("All")
}

pub(crate) fn shape(rt: &ResourceType) -> Shape<'_> {
    Shape {
        schema: rt.schema.as_ref(),
    }
}

/// `metadata.name`: a DNS-1123 subdomain; RBAC objects only need to be a valid path segment
/// (`system:discovery`), as in the real server.
fn check_name(rt: &ResourceType, name: &str) -> Result<(), ApiError> {
    if rt.group == "rbac.authorization.k8s.io" {
        if name.is_empty() || name == "." || name == ".." || name.contains(['/', '%']) {
            return Err(ApiError::invalid(
                &rt.group,
                &rt.kind,
                name,
                vec![Cause {
                    reason: "FieldValueInvalid".to_owned(),
                    message: format!(
                        "Invalid value: {name:?}: may not contain '/' or '%' and may not be '.' or '..'"
                    ),
                    field: "metadata.name".to_owned(),
                }],
            ));
        }
        return Ok(());
    }
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        return Ok(());
    }
    Err(ApiError::invalid(
        &rt.group,
        &rt.kind,
        name,
        vec![Cause {
            reason: "FieldValueInvalid".to_owned(),
            message: format!(
                "Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
            ),
            field: "metadata.name".to_owned(),
        }],
    ))
}

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    uuid::Uuid::new_v4().as_bytes()[..5]
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// Admission for custom resources (prune, default, validate) and the `fieldValidation` rule.
fn admit(
    rt: &ResourceType,
    req: &Req,
    obj: Value,
    old: Option<&Value>,
    warnings: &mut Vec<String>,
) -> Result<Value, ApiError> {
    let Some(schema) = &rt.schema else {
        return Ok(obj);
    };
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    match schema::admit(schema, obj, old) {
        Ok((obj, pruned)) => {
            if !pruned.is_empty() {
                match req.q("fieldValidation") {
                    Some("Strict") => {
                        let list: Vec<String> = pruned
                            .iter()
                            .map(|p| format!("unknown field \"{p}\""))
                            .collect();
                        return Err(ApiError::bad_request(format!(
                            "strict decoding error: {}",
                            list.join(", ")
                        )));
                    }
                    Some("Ignore") => {}
                    _ => warnings.extend(pruned.iter().map(|p| format!("unknown field \"{p}\""))),
                }
            }
            Ok(obj)
        }
        Err(causes) => Err(ApiError::invalid(&rt.group, &rt.kind, &name, causes)),
    }
}

fn create(state: &State, req: &Req, t: &Target) -> Result<(u16, Value), ApiError> {
    let body = parse_body(req)?;
    let mut store = state.store();
    let obj = create_locked(&mut store, req, t, body, &manager(req))?;
    Ok((201, present(&t.rt, &obj)))
}

pub(crate) fn create_locked(
    store: &mut Store,
    req: &Req,
    t: &Target,
    obj: Value,
    manager: &str,
) -> Result<Value, ApiError> {
    let rt = &t.rt;
    let mut obj = events::to_storage(rt, obj);
    if !obj.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request must be a JSON object",
        ));
    }
    if let Some(kind) = obj["kind"].as_str()
        && kind != rt.kind
    {
        return Err(ApiError::bad_request(format!(
            "the kind of the provided object ({kind}) does not match the resource ({})",
            rt.kind
        )));
    }
    obj["apiVersion"] = json!(rt.api_version());
    obj["kind"] = json!(rt.kind);
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    let meta = &mut obj["metadata"];
    if meta["name"].as_str().unwrap_or_default().is_empty() {
        match meta["generateName"].as_str().filter(|g| !g.is_empty()) {
            Some(prefix) => meta["name"] = json!(format!("{prefix}{}", random_suffix())),
            None => {
                return Err(ApiError::invalid(
                    &rt.group,
                    &rt.kind,
                    "",
                    vec![Cause {
                        reason: "FieldValueRequired".to_owned(),
                        message: "Required value: name or generateName is required".to_owned(),
                        field: "metadata.name".to_owned(),
                    }],
                ));
            }
        }
    }
    let name = meta["name"].as_str().unwrap_or_default().to_owned();
    check_name(rt, &name)?;
    if meta["resourceVersion"]
        .as_str()
        .is_some_and(|rv| !rv.is_empty())
    {
        return Err(ApiError::bad_request(
            "resourceVersion should not be set on objects to be created",
        ));
    }
    if rt.namespaced {
        let ns = t.ns();
        match meta["namespace"].as_str() {
            Some(n) if !n.is_empty() && n != ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            _ => meta["namespace"] = json!(ns),
        }
        match store.get("", "namespaces", "", ns) {
            None => {
                return Err(ApiError::not_found(Subject {
                    group: "",
                    resource: "namespaces",
                    name: ns,
                }));
            }
            Some(n) if n["metadata"]["deletionTimestamp"].is_string() => {
                return Err(ApiError::forbidden(format!(
                    "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                    rt.plural
                )));
            }
            Some(_) => {}
        }
    } else if let Some(m) = meta.as_object_mut() {
        m.remove("namespace");
    }
    let subject = Subject {
        group: &rt.group,
        resource: &rt.plural,
        name: &name,
    };
    if store
        .get(&rt.storage_group, &rt.plural, t.ns(), &name)
        .is_some()
    {
        return Err(ApiError::already_exists(subject));
    }
    let now = now();
    if let Some(m) = meta.as_object_mut() {
        m.insert("uid".to_owned(), json!(uuid::Uuid::new_v4().to_string()));
        m.insert("creationTimestamp".to_owned(), json!(now));
        for k in [
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "resourceVersion",
            "selfLink",
        ] {
            m.remove(k);
        }
        if rt.tracks_generation {
            m.insert("generation".to_owned(), json!(1));
        } else {
            m.remove("generation");
        }
    }
    if rt.has_status
        && let Some(m) = obj.as_object_mut()
    {
        m.remove("status");
    }
    let mut warnings = Vec::new();
    let mut obj = admit(rt, req, obj, None, &mut warnings)?;
    if rt.group.is_empty() && rt.plural == "namespaces" {
        obj["status"] = json!({"phase": "Active"});
    }
    if rt.group.is_empty()
        && rt.plural == "secrets"
        && obj["type"].as_str().is_none_or(str::is_empty)
    {
        obj["type"] = json!("Opaque");
    }
    if rt.group.is_empty() && rt.plural == "services" {
        default_service(&mut obj, store.current_rv());
    }
    if rt.group == CRD_GROUP && rt.plural == CRD_PLURAL {
        obj = crd_admit(obj, store)?;
    }
    default_network_policy(rt, &mut obj);
    if rt.group == admission::GROUP {
        admission::default(rt, &mut obj);
        admission::check(rt, &obj)?;
    }
    if obj["metadata"]["managedFields"].is_null() {
        fields::record_update(
            &json!({}),
            &mut obj,
            manager,
            "",
            &rt.api_version(),
            &now,
            shape(rt),
        );
    }
    validating_admission(store, req, t, "CREATE", &name, Some(&obj), None)?;
    simulate_deployment(rt, &mut obj);
    simulate_pdb(rt, &mut obj);
    admission::simulate_status(rt, &mut obj);
    if dry_run(req) {
        return Ok(obj);
    }
    let stored = store.put(&rt.storage_group, &rt.plural, t.ns(), &name, obj);
    if rt.group == CRD_GROUP && rt.plural == CRD_PLURAL {
        refresh_crd_types(store);
    }
    Ok(stored)
}

/// ValidatingAdmissionPolicy admission of a write, as the request's user. Objects are seen at
/// the version the request uses; warnings of `Warn` bindings go to the response.
pub(crate) fn validating_admission(
    store: &Store,
    req: &Req,
    t: &Target,
    operation: &'static str,
    name: &str,
    object: Option<&Value>,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    if !admission::active(store) {
        return Ok(());
    }
    let object = object.map(|o| present(&t.rt, o));
    let old = old.map(|o| present(&t.rt, o));
    let attrs = admission::Attributes::new(
        operation,
        &t.rt,
        t.sub.as_deref().unwrap_or_default(),
        t.ns(),
        name,
        object.as_ref(),
        old.as_ref(),
        &req.user,
        dry_run(req),
    );
    let warnings = admission::validate(store, &attrs)?;
    req.warn(warnings);
    Ok(())
}

/// What `metadata.generation` tracks: everything but metadata (and status, when status is a
/// subresource).
fn spec_half(v: &Value, has_status: bool) -> Value {
    let mut c = v.clone();
    if let Some(m) = c.as_object_mut() {
        for k in ["metadata", "apiVersion", "kind"] {
            m.remove(k);
        }
        if has_status {
            m.remove("status");
        }
    }
    c
}

/// Applies an update (PUT, or the result of a patch) to `old`, with the status-subresource,
/// generation, finalizer and optimistic-concurrency rules. Returns the stored object.
pub(crate) fn update_locked(
    store: &mut Store,
    req: &Req,
    t: &Target,
    old: &Value,
    mut new: Value,
    manager: &str,
) -> Result<Value, ApiError> {
    let rt = &t.rt;
    let subject = t.subject();
    if !new.is_object() || !new["metadata"].is_object() {
        return Err(ApiError::bad_request(
            "the body of the request must be an object with metadata",
        ));
    }
    if let Some(n) = new["metadata"]["name"].as_str()
        && n != t.name()
    {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({n}) does not match the name on the URL ({})",
            t.name()
        )));
    }
    if let Some(rv) = new["metadata"]["resourceVersion"]
        .as_str()
        .filter(|s| !s.is_empty())
        && Some(rv) != old["metadata"]["resourceVersion"].as_str()
    {
        return Err(ApiError::stale(subject));
    }
    new["apiVersion"] = json!(rt.api_version());
    new["kind"] = json!(rt.kind);
    if t.sub.as_deref() == Some("status") {
        // A status write changes only status (and managedFields).
        let mut merged = old.clone();
        match new.get("status") {
            Some(s) => merged["status"] = s.clone(),
            None => {
                if let Some(m) = merged.as_object_mut() {
                    m.remove("status");
                }
            }
        }
        merged["metadata"]["managedFields"] = new["metadata"]["managedFields"].clone();
        new = merged;
    } else {
        for k in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "namespace",
            "name",
        ] {
            match old["metadata"].get(k) {
                Some(v) => new["metadata"][k] = v.clone(),
                None => {
                    if let Some(m) = new["metadata"].as_object_mut() {
                        m.remove(k);
                    }
                }
            }
        }
        if rt.has_status {
            match old.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    if let Some(m) = new.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
        }
    }
    if old["metadata"]["deletionTimestamp"].is_string() {
        let before: Vec<&Value> = old["metadata"]["finalizers"]
            .as_array()
            .map(|a| a.iter().collect())
            .unwrap_or_default();
        let added = new["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|a| a.iter().any(|f| !before.contains(&f)));
        if added {
            return Err(ApiError::invalid(
                &rt.group,
                &rt.kind,
                t.name(),
                vec![Cause {
                    reason: "FieldValueForbidden".to_owned(),
                    message:
                        "Forbidden: no new finalizers can be added if the object is being deleted"
                            .to_owned(),
                    field: "metadata.finalizers".to_owned(),
                }],
            ));
        }
    }
    let mut warnings = Vec::new();
    new = admit(rt, req, new, Some(old), &mut warnings)?;
    if rt.group == CRD_GROUP && rt.plural == CRD_PLURAL {
        new = crd_admit(new, store)?;
        if old["metadata"]["deletionTimestamp"].is_string() {
            new["status"] = old["status"].clone();
        }
    }
    if t.sub.is_none() {
        default_network_policy(rt, &mut new);
        if rt.group == admission::GROUP {
            admission::default(rt, &mut new);
            admission::check(rt, &new)?;
        }
    }
    if rt.tracks_generation && spec_half(&new, rt.has_status) != spec_half(old, rt.has_status) {
        let g = old["metadata"]["generation"].as_i64().unwrap_or(0);
        new["metadata"]["generation"] = json!(g + 1);
    }
    let now = now();
    let api_version = rt.api_version();
    let sub = t.sub.clone().unwrap_or_default();
    // managedFields the request sets (server-side apply, kubectl's client-side-apply upgrade)
    // are taken as given; omitted ones are kept and updated with what this write changed.
    let client_set = !new["metadata"]["managedFields"].is_null()
        && new["metadata"]["managedFields"] != old["metadata"]["managedFields"];
    if !client_set {
        new["metadata"]["managedFields"] = old["metadata"]["managedFields"].clone();
        fields::record_update(old, &mut new, manager, &sub, &api_version, &now, shape(rt));
    }
    if new["metadata"]["managedFields"].is_null()
        && let Some(m) = new["metadata"].as_object_mut()
    {
        m.remove("managedFields");
    }
    validating_admission(store, req, t, "UPDATE", t.name(), Some(&new), Some(old))?;
    if t.sub.is_none() && new["metadata"]["generation"] != old["metadata"]["generation"] {
        simulate_deployment(rt, &mut new);
        simulate_pdb(rt, &mut new);
        admission::simulate_status(rt, &mut new);
    }
    new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
    if fields::strip_meta(&new) == fields::strip_meta(old)
        && new["metadata"]["managedFields"] == old["metadata"]["managedFields"]
    {
        // A no-op write neither bumps resourceVersion nor emits an event.
        return Ok(old.clone());
    }
    if dry_run(req) {
        return Ok(new);
    }
    let finalized = new["metadata"]["deletionTimestamp"].is_string()
        && new["metadata"]["finalizers"]
            .as_array()
            .is_none_or(Vec::is_empty);
    let ns = t.ns().to_owned();
    if finalized {
        store.put(&rt.storage_group, &rt.plural, &ns, t.name(), new);
        let gone =
            remove_object(store, &rt.storage_group, &rt.plural, &ns, t.name()).unwrap_or_default();
        return Ok(gone);
    }
    let stored = store.put(&rt.storage_group, &rt.plural, &ns, t.name(), new);
    if rt.group == CRD_GROUP && rt.plural == CRD_PLURAL {
        refresh_crd_types(store);
    }
    Ok(stored)
}

fn update(state: &State, req: &Req, t: &Target) -> Result<(u16, Value), ApiError> {
    let body = events::to_storage(&t.rt, parse_body(req)?);
    let mut store = state.store();
    let old = store
        .get(&t.rt.storage_group, &t.rt.plural, t.ns(), t.name())
        .cloned()
        .ok_or_else(|| ApiError::not_found(t.subject()))?;
    if body["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default()
        .is_empty()
        && t.rt.crd.is_some()
    {
        // Custom resources require a resourceVersion on update, unlike most built-ins.
        return Err(ApiError::invalid(
            &t.rt.group,
            &t.rt.kind,
            t.name(),
            vec![Cause {
                reason: "FieldValueInvalid".to_owned(),
                message: "Invalid value: 0x0: must be specified for an update".to_owned(),
                field: "metadata.resourceVersion".to_owned(),
            }],
        ));
    }
    let stored = update_locked(&mut store, req, t, &old, body, &manager(req))?;
    Ok((200, present(&t.rt, &stored)))
}

fn patch(state: &State, req: &Req, t: &Target) -> Result<(u16, Value), ApiError> {
    let ct = req
        .content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned();
    let body = parse_body(req)?;
    let mut store = state.store();
    let old = store
        .get(&t.rt.storage_group, &t.rt.plural, t.ns(), t.name())
        .cloned();
    if ct == "application/apply-patch+yaml" {
        return apply(&mut store, req, t, old, body);
    }
    let old = old.ok_or_else(|| ApiError::not_found(t.subject()))?;
    // Patches apply to the object as this endpoint serves it.
    let mut new = present(&t.rt, &old);
    match ct.as_str() {
        "application/merge-patch+json" => crate::patch::merge_patch(&mut new, &body),
        "application/json-patch+json" => crate::patch::json_patch(&mut new, &body)?,
        "application/strategic-merge-patch+json" => {
            if t.rt.crd.is_some() {
                return Err(ApiError::unsupported_media_type(&ct));
            }
            crate::patch::strategic_merge_patch(&mut new, &body);
        }
        other => return Err(ApiError::unsupported_media_type(other)),
    }
    // A patch that sets resourceVersion is a precondition; otherwise the patch applies to the latest.
    let new = events::to_storage(&t.rt, new);
    let stored = update_locked(&mut store, req, t, &old, new, &manager(req))?;
    Ok((200, present(&t.rt, &stored)))
}

fn apply(
    store: &mut Store,
    req: &Req,
    t: &Target,
    old: Option<Value>,
    applied: Value,
) -> Result<(u16, Value), ApiError> {
    let rt = &t.rt;
    let Some(manager) = req.q("fieldManager") else {
        return Err(ApiError::invalid(
            "meta.k8s.io",
            "PatchOptions",
            "",
            vec![Cause {
                reason: "FieldValueRequired".to_owned(),
                message: "Required value: is required for apply patch".to_owned(),
                field: "fieldManager".to_owned(),
            }],
        ));
    };
    if !applied.is_object() {
        return Err(ApiError::bad_request("apply patch must be an object"));
    }
    if applied["apiVersion"].as_str() != Some(&rt.api_version())
        || applied["kind"].as_str() != Some(&rt.kind)
    {
        return Err(ApiError::bad_request(format!(
            "apply patch must set apiVersion {} and kind {}",
            rt.api_version(),
            rt.kind
        )));
    }
    if let Some(n) = applied["metadata"]["name"].as_str()
        && n != t.name()
    {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({n}) does not match the name on the URL ({})",
            t.name()
        )));
    }
    let sub = t.sub.clone().unwrap_or_default();
    let mut applied = applied;
    // The applied configuration covers only the half of the object this endpoint writes.
    if rt.has_status
        && let Some(m) = applied.as_object_mut()
    {
        if sub == "status" {
            m.retain(|k, _| matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status"));
        } else {
            m.remove("status");
        }
    }
    if let Some(m) = applied["metadata"].as_object_mut() {
        for k in [
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "generation",
            "managedFields",
            "namespace",
            "name",
        ] {
            m.remove(k);
        }
    }
    let force = req.flag("force");
    let now = now();
    let current = old.as_ref().map(|o| present(rt, o)).unwrap_or_else(
        || json!({"apiVersion": rt.api_version(), "kind": rt.kind, "metadata": {"name": t.name()}}),
    );
    let merged = fields::server_side_apply(
        &current,
        &applied,
        manager,
        &sub,
        &rt.api_version(),
        &now,
        force,
        shape(rt),
    )
    .map_err(|conflicts| conflict_error(t, &conflicts))?;
    match old {
        Some(old) => {
            let merged = events::to_storage(rt, merged);
            let stored = update_locked(store, req, t, &old, merged, manager)?;
            Ok((200, present(rt, &stored)))
        }
        None => {
            if !sub.is_empty() {
                return Err(ApiError::not_found(t.subject()));
            }
            let stored = create_locked(store, req, t, merged, manager)?;
            Ok((201, present(rt, &stored)))
        }
    }
}

fn conflict_error(t: &Target, conflicts: &[fields::Conflict]) -> ApiError {
    let n = conflicts.len();
    let lines: Vec<String> = conflicts
        .iter()
        .map(|c| {
            format!(
                "conflict with \"{}\" using {}: {}",
                c.manager,
                c.api_version,
                fields::dotted(&c.path)
            )
        })
        .collect();
    let message = if n == 1 {
        format!("Apply failed with 1 conflict: {}", lines.join(""))
    } else {
        format!("Apply failed with {n} conflicts: {}", lines.join("\n"))
    };
    let causes = conflicts
        .iter()
        .map(|c| Cause {
            reason: "FieldManagerConflict".to_owned(),
            message: format!("conflict with \"{}\" using {}", c.manager, c.api_version),
            field: fields::dotted(&c.path),
        })
        .collect();
    ApiError {
        message,
        ..ApiError::conflict(t.subject(), "")
    }
    .with_causes(causes)
}
