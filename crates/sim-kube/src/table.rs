//! Server-side printing: `meta.k8s.io/v1` Table responses built from printer columns.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::registry::{Column, ResourceType};
use crate::selectors::format_label_selector;

/// How much of each object a Table row carries (`includeObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Include {
    None,
    Metadata,
    Object,
}

impl Include {
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            Some("None") => Self::None,
            Some("Object") => Self::Object,
            _ => Self::Metadata,
        }
    }
}

/// The columns shown for a type: NAME, its printer columns, and AGE where the real server adds it.
pub fn columns(rt: &ResourceType) -> Vec<Column> {
    let mut cols = vec![Column {
        description: "Name must be unique within a namespace.".to_owned(),
        format: "name".to_owned(),
        ..Column::new("Name", "string", ".metadata.name", 0)
    }];
    cols.extend(rt.columns.iter().cloned());
    let builtin_with_age = rt.crd.is_none() && rt.plural != "customresourcedefinitions";
    if builtin_with_age || (rt.crd.is_some() && rt.columns.is_empty()) {
        cols.push(Column::new("Age", "date", ".metadata.creationTimestamp", 0));
    }
    cols
}

/// Evaluates a simple JSONPath (`.a.b`, `.a[0].b`, `.a[*].b`, optionally wrapped in `{}`).
pub fn json_path(obj: &Value, path: &str) -> Vec<Value> {
    let p = path.trim().trim_start_matches('{').trim_end_matches('}');
    let mut cur = vec![obj.clone()];
    for seg in p.split('.').filter(|s| !s.is_empty()) {
        let (name, index) = match seg.split_once('[') {
            Some((n, rest)) => (n, Some(rest.trim_end_matches(']'))),
            None => (seg, None),
        };
        let mut next = Vec::new();
        for v in cur {
            let field = if name.is_empty() {
                v
            } else {
                v.get(name).cloned().unwrap_or(Value::Null)
            };
            match index {
                None => next.push(field),
                Some("*") => next.extend(field.as_array().cloned().unwrap_or_default()),
                Some(i) => {
                    if let (Ok(i), Some(a)) = (i.parse::<usize>(), field.as_array()) {
                        next.push(a.get(i).cloned().unwrap_or(Value::Null));
                    }
                }
            }
        }
        cur = next;
    }
    cur.into_iter().filter(|v| !v.is_null()).collect()
}

/// Go's `duration.HumanDuration`, which the server uses for `date` columns (negative → `<invalid>`).
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".to_owned();
    }
    if secs < 0 {
        return "0s".to_owned();
    }
    if secs < 120 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 10 {
        let s = secs % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = secs / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// Cells the real server computes rather than reads (`#` paths in built-in columns).
fn computed(path: &str, obj: &Value) -> Option<Value> {
    let count = |v: &Value| v.as_object().map_or(0, |m| m.len()) + v.as_array().map_or(0, Vec::len);
    Some(match path {
        "#data" => json!(count(&obj["data"]) + count(&obj["binaryData"])),
        "#secrets" => json!(count(&obj["secrets"])),
        "#ready" => json!(format!(
            "{}/{}",
            obj["status"]["readyReplicas"].as_i64().unwrap_or(0),
            obj["spec"]["replicas"].as_i64().unwrap_or(1)
        )),
        "#roleref" => json!(format!(
            "{}/{}",
            obj["roleRef"]["kind"].as_str().unwrap_or_default(),
            obj["roleRef"]["name"].as_str().unwrap_or_default()
        )),
        "#ports" => {
            let ports: Vec<String> = obj["spec"]["ports"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .map(|p| {
                            format!("{}/{}", p["port"], p["protocol"].as_str().unwrap_or("TCP"))
                        })
                        .collect()
                })
                .unwrap_or_default();
            json!(if ports.is_empty() {
                "<none>".to_owned()
            } else {
                ports.join(",")
            })
        }
        "#min-available" => json!(int_or_string(&obj["spec"]["minAvailable"])),
        "#max-unavailable" => json!(int_or_string(&obj["spec"]["maxUnavailable"])),
        "#pod-selector" => json!(format_label_selector(&obj["spec"]["podSelector"])),
        "#validations" => json!(count(&obj["spec"]["validations"])),
        "#param-kind" => json!(match &obj["spec"]["paramKind"] {
            Value::Null => "<unset>".to_owned(),
            pk => format!(
                "{}/{}",
                pk["apiVersion"].as_str().unwrap_or_default(),
                pk["kind"].as_str().unwrap_or_default()
            ),
        }),
        "#param-ref" => json!(param_ref(&obj["spec"]["paramRef"])),
        _ => return None,
    })
}

/// An `IntOrString` as text, `N/A` when unset (PodDisruptionBudget columns).
fn int_or_string(v: &Value) -> String {
    match v {
        Value::Null => "N/A".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The binding's PARAMREF column: `namespace/name`, `*/name`, a selector or `<unset>`.
fn param_ref(pr: &Value) -> String {
    if pr.is_null() {
        return "<unset>".to_owned();
    }
    match (
        pr["name"].as_str().filter(|n| !n.is_empty()),
        pr["namespace"].as_str().filter(|n| !n.is_empty()),
    ) {
        (Some(name), Some(ns)) => format!("{ns}/{name}"),
        (Some(name), None) => format!("*/{name}"),
        (None, _) if pr["selector"].is_object() => {
            let s = format_label_selector(&pr["selector"]);
            if s == "<none>" { String::new() } else { s }
        }
        _ => "<unset>".to_owned(),
    }
}

fn cell(col: &Column, obj: &Value, now: DateTime<Utc>) -> Value {
    if let Some(v) = computed(&col.json_path, obj) {
        return v;
    }
    let found = json_path(obj, &col.json_path);
    if found.is_empty() {
        return Value::Null;
    }
    if col.type_ == "date" {
        return match found[0]
            .as_str()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        {
            Some(t) => json!(human_duration((now - t.with_timezone(&Utc)).num_seconds())),
            None => json!("<unknown>"),
        };
    }
    if found.len() == 1 {
        return match &found[0] {
            v @ (Value::String(_) | Value::Number(_) | Value::Bool(_)) => v.clone(),
            other => json!(other.to_string()),
        };
    }
    let parts: Vec<String> = found
        .iter()
        .map(|v| {
            v.as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| v.to_string())
        })
        .collect();
    json!(parts.join(","))
}

fn row_object(obj: &Value, include: Include) -> Value {
    match include {
        Include::None => Value::Null,
        Include::Object => obj.clone(),
        Include::Metadata => {
            let mut meta = obj["metadata"].clone();
            if let Some(m) = meta.as_object_mut() {
                m.remove("managedFields");
            }
            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta})
        }
    }
}

/// A Table of `objects`, with list metadata (`resourceVersion`, `continue`).
pub fn table(rt: &ResourceType, objects: &[Value], list_meta: Value, include: Include) -> Value {
    let cols = columns(rt);
    let now = Utc::now();
    let defs: Vec<Value> = cols
        .iter()
        .map(|c| json!({"name": c.name, "type": c.type_, "format": c.format, "description": c.description, "priority": c.priority}))
        .collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let mut row =
                json!({"cells": cols.iter().map(|c| cell(c, o, now)).collect::<Vec<_>>()});
            let obj = row_object(o, include);
            if !obj.is_null() {
                row["object"] = obj;
            }
            row
        })
        .collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta, "columnDefinitions": defs, "rows": rows})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_duration_matches_kubectl() {
        assert_eq!(human_duration(-5), "<invalid>");
        assert_eq!(human_duration(42), "42s");
        assert_eq!(human_duration(150), "2m30s");
        assert_eq!(human_duration(3600 * 5 + 60), "5h1m");
        assert_eq!(human_duration(3600 * 30), "30h");
        assert_eq!(human_duration(86400 * 3), "3d");
    }

    #[test]
    fn json_path_handles_wildcards_and_indexes() {
        let o = json!({"spec": {"roles": [{"scope": "a"}, {"scope": "b"}]}});
        assert_eq!(
            json_path(&o, ".spec.roles[*].scope"),
            vec![json!("a"), json!("b")]
        );
        assert_eq!(json_path(&o, ".spec.roles[1].scope"), vec![json!("b")]);
        assert!(json_path(&o, ".status.phase").is_empty());
    }
}
