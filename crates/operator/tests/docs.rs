//! The user-facing docs stay true: docs/api.md lists exactly the schema's fields with their types,
//! required-ness and defaults, and every example manifest in README.md passes the CRD's schema
//! and CEL rules, so copying it into `kubectl apply` works.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers, not #[test] fns

use std::collections::BTreeMap;
use std::path::PathBuf;

use kube::CustomResourceExt;
use kube::core::cel::Validator;
use lapse_api::v1alpha1::{AccessApproval, AccessGrant, AccessPolicy};
use serde::Deserialize as _;
use serde_json::Value;

fn repo_file(rel: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn schema<K: CustomResourceExt>() -> Value {
    let crd = K::crd();
    serde_json::to_value(
        crd.spec.versions[0]
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .unwrap(),
    )
    .unwrap()
}

/// What the docs must say about one field.
#[derive(Debug, PartialEq)]
struct Field {
    type_word: &'static str,
    required: bool,
    default: Option<String>,
}

/// Every field below `spec` and `status`, as `spec.roles[].scope` style paths.
fn schema_fields(root: &Value) -> BTreeMap<String, Field> {
    fn walk(node: &Value, path: String, required: bool, out: &mut BTreeMap<String, Field>) {
        let type_word = if node.get("enum").is_some() {
            "enum"
        } else if node["format"] == "date-time" {
            "date-time"
        } else if node["format"] == "int64" {
            "int64"
        } else if node["type"] == "array" {
            "list"
        } else if node.get("additionalProperties").is_some() {
            "map"
        } else {
            match node["type"].as_str() {
                Some("string") => "string",
                Some("boolean") => "boolean",
                Some("object") => "object",
                Some("integer") => "integer",
                other => panic!("{path}: unexpected type {other:?}"),
            }
        };
        let default = node.get("default").map(|d| match d {
            Value::String(s) if s.is_empty() => "\"\"".to_owned(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        });
        let (props, required_list, prefix) = match node.get("items") {
            Some(items) => (
                items.get("properties"),
                items.get("required"),
                format!("{path}[]"),
            ),
            None => (node.get("properties"), node.get("required"), path.clone()),
        };
        out.insert(
            path,
            Field {
                type_word,
                required,
                default,
            },
        );
        for (k, child) in props.and_then(Value::as_object).into_iter().flatten() {
            let req = required_list
                .and_then(Value::as_array)
                .is_some_and(|r| r.iter().any(|x| x == k));
            walk(child, format!("{prefix}.{k}"), req, out);
        }
    }
    let mut out = BTreeMap::new();
    for top in ["spec", "status"] {
        if let Some(node) = root["properties"].get(top) {
            for (k, child) in node["properties"].as_object().into_iter().flatten() {
                let req = node["required"]
                    .as_array()
                    .is_some_and(|r| r.iter().any(|x| x == k));
                walk(child, format!("{top}.{k}"), req, &mut out);
            }
        }
    }
    out
}

/// Table rows of a docs section whose first cell is a backticked `spec.`/`status.` path:
/// path -> (type cell, default cell).
fn doc_rows(section: &str) -> BTreeMap<String, (String, String)> {
    section
        .lines()
        .filter(|l| l.starts_with("| `spec.") || l.starts_with("| `status."))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split(" | ").map(str::trim).collect();
            assert_eq!(cells.len(), 5, "malformed row: {l}");
            (
                cells[0].trim_matches('`').to_owned(),
                (cells[1].to_owned(), cells[3].trim_matches('`').to_owned()),
            )
        })
        .collect()
}

#[test]
fn api_doc_lists_exactly_the_schema_fields() {
    let doc = repo_file("docs/api.md");
    let (grant_doc, rest) = doc
        .split_once("\n## AccessPolicy\n")
        .expect("docs/api.md has an `## AccessPolicy` section after AccessGrant");
    let (policy_doc, approval_doc) = rest
        .split_once("\n## AccessApproval\n")
        .expect("docs/api.md has an `## AccessApproval` section after AccessPolicy");
    for (kind, section, root) in [
        ("AccessGrant", grant_doc, schema::<AccessGrant>()),
        ("AccessPolicy", policy_doc, schema::<AccessPolicy>()),
        ("AccessApproval", approval_doc, schema::<AccessApproval>()),
    ] {
        let fields = schema_fields(&root);
        let rows = doc_rows(section);
        let missing: Vec<_> = fields.keys().filter(|k| !rows.contains_key(*k)).collect();
        let extra: Vec<_> = rows.keys().filter(|k| !fields.contains_key(*k)).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{kind}: docs/api.md misses {missing:?} and documents unknown {extra:?}"
        );
        for (path, f) in &fields {
            let (type_cell, default_cell) = &rows[path];
            assert!(
                type_cell.starts_with(f.type_word),
                "{kind} {path}: documented as {type_cell:?}, schema says {}",
                f.type_word
            );
            assert_eq!(
                type_cell.contains("required"),
                f.required,
                "{kind} {path}: required-ness differs from the schema"
            );
            if let Some(default) = &f.default {
                assert_eq!(default_cell, default, "{kind} {path}: default differs");
            }
        }
    }
}

/// Schema keywords the apiserver checks before any CEL rule runs; returns `path: problem`s.
fn schema_errors(schema: &Value, v: &Value, path: &str, out: &mut Vec<String>) {
    if v.is_null() {
        if schema["nullable"] != true {
            out.push(format!("{path}: null"));
        }
        return;
    }
    let fits = match schema["type"].as_str() {
        Some("string") => v.is_string(),
        Some("boolean") => v.is_boolean(),
        Some("integer") => v.is_i64() || v.is_u64(),
        Some("number") => v.is_number(),
        Some("array") => v.is_array(),
        Some("object") => v.is_object(),
        _ => true,
    };
    if !fits {
        out.push(format!("{path}: not a {}", schema["type"]));
        return;
    }
    if let Some(e) = schema["enum"].as_array()
        && !e.contains(v)
    {
        out.push(format!("{path}: {v} not in {e:?}"));
    }
    if let Some(s) = v.as_str() {
        let len = s.chars().count() as u64;
        if schema["minLength"].as_u64().is_some_and(|m| len < m)
            || schema["maxLength"].as_u64().is_some_and(|m| len > m)
        {
            out.push(format!("{path}: length {len} out of bounds"));
        }
        if let Some(p) = schema["pattern"].as_str()
            && !regex::Regex::new(p).unwrap().is_match(s)
        {
            out.push(format!("{path}: {s:?} does not match {p}"));
        }
    }
    if let Some(items) = v.as_array() {
        let n = items.len() as u64;
        if schema["minItems"].as_u64().is_some_and(|m| n < m)
            || schema["maxItems"].as_u64().is_some_and(|m| n > m)
        {
            out.push(format!("{path}: {n} items out of bounds"));
        }
        for (i, item) in items.iter().enumerate() {
            schema_errors(&schema["items"], item, &format!("{path}[{i}]"), out);
        }
    }
    if let Some(obj) = v.as_object() {
        for r in schema["required"].as_array().into_iter().flatten() {
            if !obj.contains_key(r.as_str().unwrap_or_default()) {
                out.push(format!(
                    "{path}.{}: required",
                    r.as_str().unwrap_or_default()
                ));
            }
        }
        for (k, child) in obj {
            let at = format!("{path}.{k}");
            match (
                schema["properties"].get(k),
                schema.get("additionalProperties"),
            ) {
                (Some(s), _) => schema_errors(s, child, &at, out),
                (None, Some(ap)) if ap.is_object() => schema_errors(ap, child, &at, out),
                _ => out.push(format!("{at}: unknown field (the apiserver would drop it)")),
            }
        }
    }
}

#[test]
fn readme_examples_pass_schema_and_cel_rules() {
    let readme = repo_file("README.md");
    let blocks: Vec<&str> = readme
        .split("```yaml\n")
        .skip(1)
        .map(|rest| rest.split_once("```").map_or(rest, |(block, _)| block))
        .collect();
    let mut kinds = Vec::new();
    for block in blocks {
        for doc in serde_yaml_ng::Deserializer::from_str(block) {
            let v = Value::deserialize(doc).unwrap();
            let kind = v["kind"].as_str().unwrap_or_default().to_owned();
            let schema = match kind.as_str() {
                "AccessGrant" => {
                    serde_json::from_value::<AccessGrant>(v.clone()).unwrap();
                    schema::<AccessGrant>()
                }
                "AccessPolicy" => {
                    serde_json::from_value::<AccessPolicy>(v.clone()).unwrap();
                    schema::<AccessPolicy>()
                }
                other => panic!("README example of unexpected kind {other:?}"),
            };
            assert_eq!(v["apiVersion"], "lapse.dev/v1alpha1");
            let mut errors = Vec::new();
            schema_errors(
                &schema["properties"]["spec"],
                &v["spec"],
                "spec",
                &mut errors,
            );
            assert!(errors.is_empty(), "README {kind} example: {errors:?}");
            if let Err(e) = Validator::new().validate(&schema, &v, None) {
                panic!("README {kind} example fails CEL: {e}");
            }
            kinds.push(kind);
        }
    }
    assert_eq!(
        kinds,
        ["AccessPolicy", "AccessGrant"],
        "README shows one of each"
    );
}

#[test]
fn the_example_checker_catches_bad_specs() {
    let schema = schema::<AccessGrant>();
    let spec = serde_json::json!({
        "identity": {"managedIdentity": "not-an-id"},
        "roles": [],
        "duraton": "1h"
    });
    let mut errors = Vec::new();
    schema_errors(&schema["properties"]["spec"], &spec, "spec", &mut errors);
    for want in [
        "spec.identity.managedIdentity",
        "spec.roles: 0 items",
        "spec.duraton: unknown",
    ] {
        assert!(
            errors.iter().any(|e| e.starts_with(want)),
            "missed {want}: {errors:?}"
        );
    }
}
