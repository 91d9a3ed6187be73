//! Decoding of the Kubernetes protobuf request encoding (`application/vnd.kubernetes.protobuf`)
//! into JSON, for the built-in kinds kubectl's typed clients send that way (`kubectl create
//! namespace|configmap|secret|serviceaccount|role|...`, `create token`, `auth can-i`).
//! Responses are always JSON, which those clients accept.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Map, Value, json};

use crate::status::ApiError;

#[derive(Debug, Clone, Copy)]
enum Ty {
    Str,
    /// Bytes rendered as base64, as JSON does for `[]byte`.
    Bytes,
    Int,
    Bool,
    Msg(&'static [F]),
    MapStr,
    MapBytes,
    /// `metav1.Time`: seconds = 1, nanos = 2.
    Time,
    /// `intstr.IntOrString`: type = 1 (0 int, 1 string), intVal = 2, strVal = 3.
    IntOrString,
}

/// A message field: number, JSON name, type, repeated.
#[derive(Debug, Clone, Copy)]
struct F(u32, &'static str, Ty, bool);

const OWNER_REF: &[F] = &[
    F(5, "apiVersion", Ty::Str, false),
    F(1, "kind", Ty::Str, false),
    F(3, "name", Ty::Str, false),
    F(4, "uid", Ty::Str, false),
    F(6, "controller", Ty::Bool, false),
    F(7, "blockOwnerDeletion", Ty::Bool, false),
];
const OBJECT_META: &[F] = &[
    F(1, "name", Ty::Str, false),
    F(2, "generateName", Ty::Str, false),
    F(3, "namespace", Ty::Str, false),
    F(5, "uid", Ty::Str, false),
    F(6, "resourceVersion", Ty::Str, false),
    F(7, "generation", Ty::Int, false),
    F(8, "creationTimestamp", Ty::Time, false),
    F(11, "labels", Ty::MapStr, false),
    F(12, "annotations", Ty::MapStr, false),
    F(13, "ownerReferences", Ty::Msg(OWNER_REF), true),
    F(14, "finalizers", Ty::Str, true),
];
const NAMESPACE: &[F] = &[F(1, "metadata", Ty::Msg(OBJECT_META), false)];
const CONFIG_MAP: &[F] = &[
    F(1, "metadata", Ty::Msg(OBJECT_META), false),
    F(2, "data", Ty::MapStr, false),
    F(3, "binaryData", Ty::MapBytes, false),
    F(4, "immutable", Ty::Bool, false),
];
const SECRET: &[F] = &[
    F(1, "metadata", Ty::Msg(OBJECT_META), false),
    F(2, "data", Ty::MapBytes, false),
    F(3, "type", Ty::Str, false),
    F(4, "stringData", Ty::MapStr, false),
    F(5, "immutable", Ty::Bool, false),
];
const SERVICE_ACCOUNT: &[F] = &[
    F(1, "metadata", Ty::Msg(OBJECT_META), false),
    F(4, "automountServiceAccountToken", Ty::Bool, false),
];
const POLICY_RULE: &[F] = &[
    F(1, "verbs", Ty::Str, true),
    F(2, "apiGroups", Ty::Str, true),
    F(3, "resources", Ty::Str, true),
    F(4, "resourceNames", Ty::Str, true),
    F(5, "nonResourceURLs", Ty::Str, true),
];
const ROLE: &[F] = &[
    F(1, "metadata", Ty::Msg(OBJECT_META), false),
    F(2, "rules", Ty::Msg(POLICY_RULE), true),
];
const SUBJECT: &[F] = &[
    F(1, "kind", Ty::Str, false),
    F(2, "apiGroup", Ty::Str, false),
    F(3, "name", Ty::Str, false),
    F(4, "namespace", Ty::Str, false),
];
const ROLE_REF: &[F] = &[
    F(1, "apiGroup", Ty::Str, false),
    F(2, "kind", Ty::Str, false),
    F(3, "name", Ty::Str, false),
];
const ROLE_BINDING: &[F] = &[
    F(1, "metadata", Ty::Msg(OBJECT_META), false),
    F(2, "subjects", Ty::Msg(SUBJECT), true),
    F(3, "roleRef", Ty::Msg(ROLE_REF), false),
];
const BOUND_REF: &[F] = &[
    F(1, "kind", Ty::Str, false),
    F(2, "apiVersion", Ty::Str, false),
    F(3, "name", Ty::Str, false),
    F(4, "uid", Ty::Str, false),
];
const TOKEN_REQUEST_SPEC: &[F] = &[
    F(1, "audiences", Ty::Str, true),
    F(4, "expirationSeconds", Ty::Int, false),
    F(3, "boundObjectRef", Ty::Msg(BOUND_REF), false),
];
const TOKEN_REQUEST: &[F] = &[
    F(1, "metadata", Ty::Msg(OBJECT_META), false),
    F(2, "spec", Ty::Msg(TOKEN_REQUEST_SPEC), false),
];
const RESOURCE_ATTRIBUTES: &[F] = &[
    F(1, "namespace", Ty::Str, false),
    F(2, "verb", Ty::Str, false),
    F(3, "group", Ty::Str, false),
    F(4, "version", Ty::Str, false),
    F(5, "resource", Ty::Str, false),
    F(6, "subresource", Ty::Str, false),
    F(7, "name", Ty::Str, false),
];
const NON_RESOURCE_ATTRIBUTES: &[F] = &[F(1, "path", Ty::Str, false), F(2, "verb", Ty::Str, false)];
const SSAR_SPEC: &[F] = &[
    F(1, "resourceAttributes", Ty::Msg(RESOURCE_ATTRIBUTES), false),
    F(
        2,
        "nonResourceAttributes",
        Ty::Msg(NON_RESOURCE_ATTRIBUTES),
        false,
    ),
];
const SSAR: &[F] = &[
    F(1, "metadata", Ty::Msg(OBJECT_META), false),
    F(2, "spec", Ty::Msg(SSAR_SPEC), false),
];
const TOKEN_REVIEW_SPEC: &[F] = &[
    F(1, "token", Ty::Str, false),
    F(2, "audiences", Ty::Str, true),
];
const TOKEN_REVIEW: &[F] = &[
    F(1, "metadata", Ty::Msg(OBJECT_META), false),
    F(2, "spec", Ty::Msg(TOKEN_REVIEW_SPEC), false),
];

const LABEL_SELECTOR_REQUIREMENT: &[F] = &[
    F(1, "key", Ty::Str, false),
    F(2, "operator", Ty::Str, false),
    F(3, "values", Ty::Str, true),
];
const LABEL_SELECTOR: &[F] = &[
    F(1, "matchLabels", Ty::MapStr, false),
    F(
        2,
        "matchExpressions",
        Ty::Msg(LABEL_SELECTOR_REQUIREMENT),
        true,
    ),
];
const PDB_SPEC: &[F] = &[
    F(1, "minAvailable", Ty::IntOrString, false),
    F(2, "selector", Ty::Msg(LABEL_SELECTOR), false),
    F(3, "maxUnavailable", Ty::IntOrString, false),
    F(4, "unhealthyPodEvictionPolicy", Ty::Str, false),
];
const PDB: &[F] = &[
    F(1, "metadata", Ty::Msg(OBJECT_META), false),
    F(2, "spec", Ty::Msg(PDB_SPEC), false),
];

const PRECONDITIONS: &[F] = &[
    F(1, "uid", Ty::Str, false),
    F(2, "resourceVersion", Ty::Str, false),
];
const DELETE_OPTIONS: &[F] = &[
    F(1, "gracePeriodSeconds", Ty::Int, false),
    F(2, "preconditions", Ty::Msg(PRECONDITIONS), false),
    F(3, "orphanDependents", Ty::Bool, false),
    F(4, "propagationPolicy", Ty::Str, false),
    F(5, "dryRun", Ty::Str, true),
];

fn schema_for(api_version: &str, kind: &str) -> Option<&'static [F]> {
    Some(match (api_version, kind) {
        (_, "DeleteOptions") => DELETE_OPTIONS,
        ("v1", "Namespace") => NAMESPACE,
        ("v1", "ConfigMap") => CONFIG_MAP,
        ("v1", "Secret") => SECRET,
        ("v1", "ServiceAccount") => SERVICE_ACCOUNT,
        ("rbac.authorization.k8s.io/v1", "Role" | "ClusterRole") => ROLE,
        ("rbac.authorization.k8s.io/v1", "RoleBinding" | "ClusterRoleBinding") => ROLE_BINDING,
        ("authentication.k8s.io/v1", "TokenRequest") => TOKEN_REQUEST,
        ("authentication.k8s.io/v1", "TokenReview") => TOKEN_REVIEW,
        ("authorization.k8s.io/v1", "SelfSubjectAccessReview") => SSAR,
        ("policy/v1", "PodDisruptionBudget") => PDB,
        _ => return None,
    })
}

#[derive(Debug)]
enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

fn bad(what: &str) -> ApiError {
    ApiError::bad_request(format!("protobuf body: {what}"))
}

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, ApiError> {
    let mut out = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos).ok_or_else(|| bad("truncated varint"))?;
        *pos += 1;
        out |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(out);
        }
    }
    Err(bad("varint too long"))
}

fn fields(buf: &[u8]) -> Result<Vec<(u32, Wire<'_>)>, ApiError> {
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < buf.len() {
        let key = varint(buf, &mut pos)?;
        let num = u32::try_from(key >> 3).map_err(|_| bad("field number"))?;
        match key & 7 {
            0 => out.push((num, Wire::Varint(varint(buf, &mut pos)?))),
            2 => {
                let len = usize::try_from(varint(buf, &mut pos)?).map_err(|_| bad("length"))?;
                let end = pos
                    .checked_add(len)
                    .filter(|e| *e <= buf.len())
                    .ok_or_else(|| bad("truncated field"))?;
                out.push((num, Wire::Bytes(&buf[pos..end])));
                pos = end;
            }
            1 => pos += 8,
            5 => pos += 4,
            t => return Err(bad(&format!("unsupported wire type {t}"))),
        }
    }
    Ok(out)
}

fn text(b: &[u8]) -> Result<String, ApiError> {
    String::from_utf8(b.to_vec()).map_err(|_| bad("string is not UTF-8"))
}

fn scalar(ty: Ty, w: &Wire<'_>) -> Result<Value, ApiError> {
    Ok(match (ty, w) {
        (Ty::Str, Wire::Bytes(b)) => json!(text(b)?),
        (Ty::Bytes, Wire::Bytes(b)) => json!(B64.encode(b)),
        (Ty::Int, Wire::Varint(v)) => json!(*v as i64),
        (Ty::Bool, Wire::Varint(v)) => json!(*v != 0),
        (Ty::Msg(schema), Wire::Bytes(b)) => message(schema, b)?,
        (Ty::Time, Wire::Bytes(b)) => {
            let secs = fields(b)?
                .iter()
                .find_map(|(n, w)| match (n, w) {
                    (1, Wire::Varint(v)) => Some(*v as i64),
                    _ => None,
                })
                .unwrap_or(0);
            chrono::DateTime::from_timestamp(secs, 0)
                .map(|t| json!(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)))
                .unwrap_or(Value::Null)
        }
        (Ty::IntOrString, Wire::Bytes(b)) => {
            let fs = fields(b)?;
            let is_string = fs
                .iter()
                .any(|(n, w)| matches!((n, w), (1, Wire::Varint(1))));
            if is_string {
                fs.iter()
                    .find_map(|(n, w)| match (n, w) {
                        (3, Wire::Bytes(s)) => Some(text(s)),
                        _ => None,
                    })
                    .transpose()?
                    .map(Value::from)
                    .unwrap_or_else(|| json!(""))
            } else {
                let v = fs
                    .iter()
                    .find_map(|(n, w)| match (n, w) {
                        // int32 is sign-extended to 64 bits on the wire.
                        (2, Wire::Varint(v)) => Some(*v as i64 as i32),
                        _ => None,
                    })
                    .unwrap_or(0);
                json!(v)
            }
        }
        _ => return Err(bad("field has an unexpected wire type")),
    })
}

fn message(schema: &[F], buf: &[u8]) -> Result<Value, ApiError> {
    let mut out = Map::new();
    for (num, w) in fields(buf)? {
        // Unknown fields are skipped, as a tolerant decoder does.
        let Some(F(_, name, ty, repeated)) = schema.iter().find(|f| f.0 == num).copied() else {
            continue;
        };
        match ty {
            Ty::MapStr | Ty::MapBytes => {
                let Wire::Bytes(entry) = w else {
                    return Err(bad("map entry"));
                };
                let mut k = String::new();
                let mut v = Value::Null;
                for (n, ew) in fields(entry)? {
                    match (n, ew) {
                        (1, Wire::Bytes(b)) => k = text(b)?,
                        (2, ew) => {
                            v = scalar(
                                if matches!(ty, Ty::MapStr) {
                                    Ty::Str
                                } else {
                                    Ty::Bytes
                                },
                                &ew,
                            )?
                        }
                        _ => {}
                    }
                }
                let m = out.entry(name).or_insert_with(|| json!({}));
                m[k] = if v.is_null() { json!("") } else { v };
            }
            _ if repeated => {
                let v = scalar(ty, &w)?;
                if let Some(a) = out.entry(name).or_insert_with(|| json!([])).as_array_mut() {
                    a.push(v);
                }
            }
            _ => {
                out.insert(name.to_owned(), scalar(ty, &w)?);
            }
        }
    }
    Ok(Value::Object(out))
}

/// Decodes a `k8s\0`-prefixed `runtime.Unknown` envelope into a JSON object.
pub fn decode(body: &[u8]) -> Result<Value, ApiError> {
    let inner = body
        .strip_prefix(b"k8s\0")
        .ok_or_else(|| bad("missing k8s magic prefix"))?;
    let mut api_version = String::new();
    let mut kind = String::new();
    let mut raw: &[u8] = &[];
    for (n, w) in fields(inner)? {
        match (n, w) {
            (1, Wire::Bytes(tm)) => {
                for (tn, tw) in fields(tm)? {
                    match (tn, tw) {
                        (1, Wire::Bytes(b)) => api_version = text(b)?,
                        (2, Wire::Bytes(b)) => kind = text(b)?,
                        _ => {}
                    }
                }
            }
            (2, Wire::Bytes(b)) => raw = b,
            _ => {}
        }
    }
    let schema = schema_for(&api_version, &kind).ok_or_else(|| {
        ApiError::unsupported_media_type(&format!(
            "application/vnd.kubernetes.protobuf for {api_version} {kind}"
        ))
    })?;
    let mut v = message(schema, raw)?;
    v["apiVersion"] = json!(api_version);
    v["kind"] = json!(kind);
    Ok(v)
}
