//! OpenAPI: `/openapi/v3` per group-version documents (PATCH operations that declare the
//! `fieldValidation` parameter, so kubectl validates server-side, and CRD schemas for `kubectl
//! explain`), and a minimal `/openapi/v2` (protobuf or JSON) with no definitions, so kubectl
//! falls back to its compiled-in types for strategic merge of built-ins.

use std::hash::{DefaultHasher, Hash, Hasher};

use serde_json::{Map, Value, json};

use crate::registry::ResourceType;
use crate::server::{Body, Req, State, error_response, json_response};
use crate::status::ApiError;
use hyper::Response;

fn gv_path(t: &ResourceType) -> String {
    if t.group.is_empty() {
        format!("api/{}", t.version)
    } else {
        format!("apis/{}/{}", t.group, t.version)
    }
}

/// Reverse-DNS schema name, as the real server names CRD schemas (`dev.lapse.v1alpha1.AccessGrant`).
fn schema_name(t: &ResourceType) -> String {
    let group: Vec<&str> = if t.group.is_empty() {
        vec!["io", "k8s", "api", "core"]
    } else {
        t.group.split('.').rev().collect()
    };
    format!("{}.{}.{}", group.join("."), t.version, t.kind)
}

fn object_meta_schema() -> Value {
    let s = |d: &str| json!({"type": "string", "description": d});
    json!({"type": "object", "description": "ObjectMeta is metadata that all persisted resources must have.",
    "properties": {
        "name": s("Name must be unique within a namespace."),
        "generateName": s("An optional prefix used by the server to generate a unique name."),
        "namespace": s("Namespace defines the space within which each name must be unique."),
        "uid": s("UID is the unique in time and space value for this object."),
        "resourceVersion": s("An opaque value that represents the internal version of this object."),
        "generation": {"type": "integer", "format": "int64", "description": "A sequence number representing a specific generation of the desired state."},
        "creationTimestamp": s("CreationTimestamp is a timestamp representing the server time when this object was created."),
        "deletionTimestamp": s("DeletionTimestamp is RFC 3339 date and time at which this resource will be deleted."),
        "labels": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Map of string keys and values that can be used to organize and categorize objects."},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Annotations is an unstructured key value map."},
        "finalizers": {"type": "array", "items": {"type": "string"}, "description": "Must be empty before the object is deleted from the registry."},
        "ownerReferences": {"type": "array", "items": {"type": "object"}, "description": "List of objects depended by this object."},
        "managedFields": {"type": "array", "items": {"type": "object"}, "description": "ManagedFields maps workflow-id and version to the set of fields that are managed by that workflow."},
    }})
}

fn gvk(t: &ResourceType) -> Value {
    json!([{"group": t.group, "version": t.version, "kind": t.kind}])
}

/// The OpenAPI v3 document of one group-version.
pub fn gv_doc(types: &[ResourceType], group: &str, version: &str) -> Option<Value> {
    let ts: Vec<&ResourceType> = types
        .iter()
        .filter(|t| t.group == group && t.version == version)
        .collect();
    if ts.is_empty() {
        return None;
    }
    let mut paths = Map::new();
    let mut schemas = Map::new();
    schemas.insert(
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta".to_owned(),
        object_meta_schema(),
    );
    let params = json!([
        {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
        {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
        {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
        {"name": "force", "in": "query", "schema": {"type": "boolean", "uniqueItems": true}},
    ]);
    for t in ts {
        let base = format!("/{}", gv_path(t));
        let item = if t.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}/{{name}}", t.plural)
        } else {
            format!("{base}/{}/{{name}}", t.plural)
        };
        let name = schema_name(t);
        let ok = json!({"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{name}")}}}}});
        let op = |action: &str| {
            json!({
                "operationId": format!("{action}{}", t.kind), "parameters": params,
                "responses": ok, "x-kubernetes-action": action, "x-kubernetes-group-version-kind": gvk(t)[0],
            })
        };
        paths.insert(item, json!({"get": op("get"), "put": op("put"), "patch": op("patch"), "delete": op("delete")}));
        if let Some(schema) = &t.schema {
            let mut s = schema.clone();
            s["x-kubernetes-group-version-kind"] = gvk(t);
            if let Some(props) = s.get_mut("properties").and_then(Value::as_object_mut) {
                props.insert("apiVersion".to_owned(), json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."}));
                props.insert("kind".to_owned(), json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents."}));
                props.insert("metadata".to_owned(), json!({"allOf": [{"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}], "description": "Standard object's metadata."}));
            }
            schemas.insert(name, s);
        }
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}

fn hash(v: &Value) -> String {
    let mut h = DefaultHasher::new();
    v.to_string().hash(&mut h);
    format!("{:016X}", h.finish())
}

pub fn v3_root(state: &State) -> Response<Body> {
    let store = state.store();
    let mut paths = Map::new();
    let mut seen = Vec::new();
    for t in &store.types {
        let p = gv_path(t);
        if seen.contains(&p) {
            continue;
        }
        seen.push(p.clone());
        if let Some(doc) = gv_doc(&store.types, &t.group, &t.version) {
            paths.insert(
                p.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={}", hash(&doc))}),
            );
        }
    }
    json_response(200, &json!({"paths": paths}))
}

pub fn v3_group_version(state: &State, rest: &[&str]) -> Response<Body> {
    let (group, version) = match rest {
        ["api", v] => ("", *v),
        ["apis", g, v] => (*g, *v),
        _ => return error_response(&ApiError::path_not_found()),
    };
    let store = state.store();
    match gv_doc(&store.types, group, version) {
        Some(doc) => json_response(200, &doc),
        None => error_response(&ApiError::path_not_found()),
    }
}

/// Protobuf length-delimited field.
fn pb_field(tag: u8, bytes: &[u8], out: &mut Vec<u8>) {
    out.push(tag);
    let mut n = bytes.len();
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            break;
        }
        out.push(b | 0x80);
    }
    out.extend_from_slice(bytes);
}

pub fn v2(_state: &State, req: &Req) -> Response<Body> {
    if req.accept.contains("protobuf") {
        // gnostic openapi_v2.Document{swagger: "2.0", info: {title, version}}.
        let mut info = Vec::new();
        pb_field(0x0a, b"Kubernetes", &mut info);
        pb_field(0x12, b"v1.33.0", &mut info);
        let mut doc = Vec::new();
        pb_field(0x0a, b"2.0", &mut doc);
        pb_field(0x12, &info, &mut doc);
        let mut resp = Response::new(http_body_util::BodyExt::boxed_unsync(
            http_body_util::Full::new(bytes::Bytes::from(doc)),
        ));
        resp.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static(
                "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
            ),
        );
        return resp;
    }
    json_response(
        200,
        &json!({"swagger": "2.0", "info": {"title": "Kubernetes", "version": "v1.33.0"}, "paths": {}, "definitions": {}}),
    )
}
