//! Field ownership (`metadata.managedFields`, FieldsV1) and server-side apply.
//!
//! A field path is a list of FieldsV1 keys: `f:<name>` for a map key, `k:{...}` for an item of
//! an associative list, `v:<json>` for an item of a set. Lists that are neither are atomic.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

/// A set of leaf field paths.
pub type FieldSet = BTreeSet<Vec<String>>;

/// How a list at some path merges.
#[derive(Debug, Clone, PartialEq)]
pub enum ListType {
    Atomic,
    Set,
    Map(Vec<String>),
}

/// Decides list types from a CRD schema (`x-kubernetes-list-type`) or well-known built-in fields.
#[derive(Debug, Clone, Copy)]
pub struct Shape<'a> {
    pub schema: Option<&'a Value>,
}

impl Shape<'_> {
    /// The list type at `path` (plain field names, list items skipped).
    pub fn list_type(&self, names: &[&str]) -> ListType {
        if names == ["metadata", "finalizers"] {
            return ListType::Set;
        }
        if names == ["metadata", "ownerReferences"] {
            return ListType::Map(vec!["uid".to_owned()]);
        }
        let Some(mut s) = self.schema else {
            return ListType::Atomic;
        };
        for n in names {
            if s["type"] == "array" {
                s = &s["items"];
            }
            s = if s["properties"][*n].is_object() {
                &s["properties"][*n]
            } else {
                &s["additionalProperties"]
            };
        }
        match s["x-kubernetes-list-type"].as_str() {
            Some("set") => ListType::Set,
            Some("map") => ListType::Map(
                s["x-kubernetes-list-map-keys"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|k| k.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default(),
            ),
            _ => ListType::Atomic,
        }
    }
}

fn item_key(item: &Value, keys: &[String]) -> Option<String> {
    let mut m = Map::new();
    for k in keys {
        m.insert(k.clone(), item.get(k)?.clone());
    }
    Some(format!("k:{}", Value::Object(m)))
}

/// Whether a top-level or metadata field is tracked by field management.
fn tracked(path: &[String]) -> bool {
    match path {
        [] => true,
        [first, ..] if first == "f:apiVersion" || first == "f:kind" => false,
        [first] if first == "f:metadata" => false,
        [first, second, ..] if first == "f:metadata" => matches!(
            second.as_str(),
            "f:labels" | "f:annotations" | "f:finalizers" | "f:ownerReferences"
        ),
        _ => true,
    }
}

/// The leaf paths set in `v`.
pub fn leaves(v: &Value, shape: Shape<'_>) -> FieldSet {
    let mut out = FieldSet::new();
    walk(v, shape, &mut Vec::new(), &mut Vec::new(), &mut out);
    out.retain(|p| !p.is_empty() && tracked(p));
    out
}

fn walk<'a>(
    v: &'a Value,
    shape: Shape<'_>,
    names: &mut Vec<&'a str>,
    path: &mut Vec<String>,
    out: &mut FieldSet,
) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                names.push(k);
                path.push(format!("f:{k}"));
                walk(child, shape, names, path, out);
                path.pop();
                names.pop();
            }
        }
        Value::Array(items) if !items.is_empty() => match shape.list_type(names) {
            ListType::Set => {
                for item in items {
                    path.push(format!("v:{item}"));
                    out.insert(path.clone());
                    path.pop();
                }
            }
            ListType::Map(keys) => {
                for item in items {
                    match item_key(item, &keys) {
                        Some(k) => {
                            path.push(k);
                            let before = out.len();
                            walk(item, shape, names, path, out);
                            if out.len() == before {
                                out.insert(path.clone());
                            }
                            path.pop();
                        }
                        None => {
                            out.insert(path.clone());
                        }
                    }
                }
            }
            ListType::Atomic => {
                out.insert(path.clone());
            }
        },
        _ => {
            out.insert(path.clone());
        }
    }
}

/// The value at a field path, if present.
pub fn value_at<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = v;
    for p in path {
        cur = step(cur, p)?;
    }
    Some(cur)
}

fn step<'a>(cur: &'a Value, p: &str) -> Option<&'a Value> {
    if let Some(f) = p.strip_prefix("f:") {
        cur.get(f)
    } else if let Some(k) = p.strip_prefix("k:") {
        let want: Map<String, Value> = serde_json::from_str(k).ok()?;
        cur.as_array()?
            .iter()
            .find(|i| want.iter().all(|(kk, vv)| i.get(kk) == Some(vv)))
    } else if let Some(x) = p.strip_prefix("v:") {
        let want: Value = serde_json::from_str(x).ok()?;
        cur.as_array()?.iter().find(|i| **i == want)
    } else {
        None
    }
}

/// Removes the field at `path` (a map key, an associative-list item or a set item).
pub fn remove_at(v: &mut Value, path: &[String]) {
    let Some((last, parent_path)) = path.split_last() else {
        return;
    };
    let mut cur = v;
    for p in parent_path {
        let next = match cur {
            Value::Object(m) => p.strip_prefix("f:").and_then(|f| m.get_mut(f)),
            Value::Array(a) => {
                let idx = step(&Value::Array(a.clone()), p)
                    .and_then(|found| a.iter().position(|i| i == found));
                idx.and_then(move |i| a.get_mut(i))
            }
            _ => None,
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    match cur {
        Value::Object(m) => {
            if let Some(f) = last.strip_prefix("f:") {
                m.remove(f);
            }
        }
        Value::Array(a) => {
            let found = step(&Value::Array(a.clone()), last).cloned();
            if let Some(found) = found {
                a.retain(|i| *i != found);
            }
        }
        _ => {}
    }
}

/// Merges an applied configuration into `target`: maps recursively, associative lists by key,
/// sets by union, atomic lists and scalars by replacement.
pub fn apply_merge(target: &mut Value, applied: &Value, shape: Shape<'_>, names: &mut Vec<String>) {
    match (target, applied) {
        (Value::Object(t), Value::Object(a)) => {
            for (k, av) in a {
                names.push(k.clone());
                match t.get_mut(k) {
                    Some(tv) => apply_merge(tv, av, shape, names),
                    None => {
                        t.insert(k.clone(), av.clone());
                    }
                }
                names.pop();
            }
        }
        (t @ Value::Array(_), Value::Array(items)) => {
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            match shape.list_type(&refs) {
                ListType::Set => {
                    if let Value::Array(cur) = t {
                        for i in items {
                            if !cur.contains(i) {
                                cur.push(i.clone());
                            }
                        }
                    }
                }
                ListType::Map(keys) => {
                    if let Value::Array(cur) = t {
                        for i in items {
                            let key = item_key(i, &keys);
                            let pos = cur
                                .iter()
                                .position(|c| key.is_some() && item_key(c, &keys) == key);
                            match pos {
                                Some(p) => apply_merge(&mut cur[p], i, shape, names),
                                None => cur.push(i.clone()),
                            }
                        }
                    }
                }
                ListType::Atomic => *t = applied.clone(),
            }
        }
        (t, a) => *t = a.clone(),
    }
}

/// FieldsV1 JSON of a set.
pub fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut cur = &mut root;
        for p in path {
            let next = cur.entry(p.clone()).or_insert_with(|| json!({}));
            match next {
                Value::Object(m) => cur = m,
                _ => break,
            }
        }
    }
    Value::Object(root)
}

/// The leaf paths of a FieldsV1 JSON tree (`.` markers are dropped).
pub fn from_fields_v1(v: &Value) -> FieldSet {
    fn go(v: &Value, path: &mut Vec<String>, out: &mut FieldSet) {
        let Some(m) = v.as_object() else { return };
        let children: Vec<_> = m.iter().filter(|(k, _)| k.as_str() != ".").collect();
        if children.is_empty() {
            if !path.is_empty() {
                out.insert(path.clone());
            }
            return;
        }
        for (k, child) in children {
            path.push(k.clone());
            go(child, path, out);
            path.pop();
        }
    }
    let mut out = FieldSet::new();
    go(v, &mut Vec::new(), &mut out);
    out
}

/// One `managedFields` entry, keyed by (manager, operation, subresource).
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub manager: String,
    pub operation: String,
    pub subresource: String,
    pub api_version: String,
    pub time: String,
    pub fields: FieldSet,
}

pub fn read_entries(obj: &Value) -> Vec<Entry> {
    obj["metadata"]["managedFields"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| Entry {
                    manager: e["manager"].as_str().unwrap_or_default().to_owned(),
                    operation: e["operation"].as_str().unwrap_or("Update").to_owned(),
                    subresource: e["subresource"].as_str().unwrap_or_default().to_owned(),
                    api_version: e["apiVersion"].as_str().unwrap_or_default().to_owned(),
                    time: e["time"].as_str().unwrap_or_default().to_owned(),
                    fields: from_fields_v1(&e["fieldsV1"]),
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn write_entries(obj: &mut Value, entries: &[Entry]) {
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut v = json!({
                "manager": e.manager, "operation": e.operation, "apiVersion": e.api_version,
                "time": e.time, "fieldsType": "FieldsV1", "fieldsV1": to_fields_v1(&e.fields),
            });
            if !e.subresource.is_empty() {
                v["subresource"] = json!(e.subresource);
            }
            v
        })
        .collect();
    if obj.is_object() && !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if list.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".to_owned(), Value::Array(list));
        }
    }
}

/// Records an ordinary write (create/update/patch) by `manager`: it now owns every field it
/// changed; other managers lose those, and fields that disappeared are owned by nobody.
pub fn record_update(
    old: &Value,
    new: &mut Value,
    manager: &str,
    subresource: &str,
    api_version: &str,
    now: &str,
    shape: Shape<'_>,
) {
    let mut entries = read_entries(old);
    let old_leaves = leaves(&strip_meta(old), shape);
    let new_leaves = leaves(&strip_meta(new), shape);
    let changed: FieldSet = new_leaves
        .iter()
        .filter(|p| value_at(old, p) != value_at(new, p) || !old_leaves.contains(*p))
        .cloned()
        .collect();
    for e in &mut entries {
        e.fields
            .retain(|p| new_leaves.contains(p) && !changed.contains(p));
    }
    if !changed.is_empty() {
        let idx = entries.iter().position(|e| {
            e.manager == manager && e.operation == "Update" && e.subresource == subresource
        });
        let e = match idx {
            Some(i) => &mut entries[i],
            None => {
                entries.push(Entry {
                    manager: manager.to_owned(),
                    operation: "Update".to_owned(),
                    subresource: subresource.to_owned(),
                    api_version: api_version.to_owned(),
                    time: now.to_owned(),
                    fields: FieldSet::new(),
                });
                let last = entries.len() - 1;
                &mut entries[last]
            }
        };
        e.fields.extend(changed);
        e.time = now.to_owned();
        e.api_version = api_version.to_owned();
    }
    write_entries(new, &entries);
}

/// Drops `managedFields` before comparing or walking an object.
pub fn strip_meta(v: &Value) -> Value {
    let mut c = v.clone();
    if let Some(m) = c.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("managedFields");
    }
    c
}

/// A conflict: another manager owns `path` with a different value.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    pub manager: String,
    pub api_version: String,
    pub path: Vec<String>,
}

/// Renders a path the way the real server does in conflict messages (`.spec.x`).
pub fn dotted(path: &[String]) -> String {
    path.iter()
        .map(|p| {
            if let Some(f) = p.strip_prefix("f:") {
                format!(".{f}")
            } else if let Some(k) = p.strip_prefix("k:") {
                format!("[{k}]")
            } else if let Some(v) = p.strip_prefix("v:") {
                format!("[={v}]")
            } else {
                p.clone()
            }
        })
        .collect()
}

/// Server-side apply of `applied` by `manager` onto `current` (which may be `{}` for a create).
/// Returns the merged object with updated managedFields, or the conflicts.
#[allow(clippy::too_many_arguments)]
pub fn server_side_apply(
    current: &Value,
    applied: &Value,
    manager: &str,
    subresource: &str,
    api_version: &str,
    now: &str,
    force: bool,
    shape: Shape<'_>,
) -> Result<Value, Vec<Conflict>> {
    let mut entries = read_entries(current);
    let applied_set = leaves(applied, shape);
    let is_me =
        |e: &Entry| e.manager == manager && e.operation == "Apply" && e.subresource == subresource;

    let mut conflicts = Vec::new();
    for e in entries.iter().filter(|e| !is_me(e)) {
        for p in e.fields.intersection(&applied_set) {
            if value_at(current, p) != value_at(applied, p) {
                conflicts.push(Conflict {
                    manager: e.manager.clone(),
                    api_version: e.api_version.clone(),
                    path: p.clone(),
                });
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflicts);
    }
    let mut merged = current.clone();
    // Fields this manager applied before but no longer does are removed unless someone else owns them.
    let previously: FieldSet = entries
        .iter()
        .filter(|e| is_me(e))
        .flat_map(|e| e.fields.iter().cloned())
        .collect();
    let others: FieldSet = entries
        .iter()
        .filter(|e| !is_me(e))
        .flat_map(|e| e.fields.iter().cloned())
        .collect();
    for p in previously.difference(&applied_set) {
        if !others.contains(p) {
            remove_at(&mut merged, p);
        }
    }
    apply_merge(&mut merged, applied, shape, &mut Vec::new());
    let changed: BTreeMap<Vec<String>, bool> = applied_set
        .iter()
        .map(|p| (p.clone(), value_at(current, p) != value_at(applied, p)))
        .collect();
    for e in entries.iter_mut().filter(|e| !is_me(e)) {
        e.fields
            .retain(|p| !changed.get(p).copied().unwrap_or(false));
    }
    entries.retain(|e| !is_me(e));
    entries.push(Entry {
        manager: manager.to_owned(),
        operation: "Apply".to_owned(),
        subresource: subresource.to_owned(),
        api_version: api_version.to_owned(),
        time: now.to_owned(),
        fields: applied_set,
    });
    write_entries(&mut merged, &entries);
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2026-01-01T00:00:00Z";

    fn apply(
        cur: &Value,
        applied: Value,
        manager: &str,
        force: bool,
    ) -> Result<Value, Vec<Conflict>> {
        server_side_apply(
            cur,
            &applied,
            manager,
            "",
            "v1",
            NOW,
            force,
            Shape { schema: None },
        )
    }

    #[test]
    fn apply_conflicts_with_other_manager_unless_same_value_or_forced() {
        let base = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
        let a = apply(
            &base,
            json!({"metadata": {"name": "c"}, "data": {"k": "1"}}),
            "alice",
            false,
        )
        .unwrap();
        // Same value: shared ownership, no conflict.
        let b = apply(&a, json!({"data": {"k": "1"}}), "bob", false).unwrap();
        let owners: Vec<_> = read_entries(&b).into_iter().map(|e| e.manager).collect();
        assert_eq!(owners, ["alice", "bob"]);
        // Different value: conflict naming the manager and the field.
        let err = apply(&b, json!({"data": {"k": "2"}}), "carol", false).unwrap_err();
        assert_eq!(err.len(), 2);
        assert_eq!(dotted(&err[0].path), ".data.k");
        // Forced: carol takes the field from both.
        let c = apply(&b, json!({"data": {"k": "2"}}), "carol", true).unwrap();
        assert_eq!(c["data"]["k"], "2");
        let entries = read_entries(&c);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].manager, "carol");
    }

    #[test]
    fn apply_removes_fields_the_manager_stopped_applying() {
        let base = json!({"metadata": {"name": "c"}});
        let a = apply(&base, json!({"data": {"k": "1", "j": "2"}}), "alice", false).unwrap();
        let b = apply(&a, json!({"data": {"k": "1"}}), "alice", false).unwrap();
        assert_eq!(b["data"], json!({"k": "1"}));
    }

    #[test]
    fn update_takes_ownership_of_changed_fields() {
        let old = apply(&json!({}), json!({"data": {"k": "1"}}), "alice", false).unwrap();
        let mut new = old.clone();
        new["data"]["k"] = json!("9");
        record_update(
            &old,
            &mut new,
            "kubectl-edit",
            "",
            "v1",
            NOW,
            Shape { schema: None },
        );
        let err = apply(&new, json!({"data": {"k": "1"}}), "alice", false).unwrap_err();
        assert_eq!(err[0].manager, "kubectl-edit");
    }

    #[test]
    fn fields_v1_round_trips_and_map_lists_use_keys() {
        let schema = json!({"type": "object", "properties": {"status": {"type": "object", "properties": {
            "conditions": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"],
                "items": {"type": "object"}}}}}});
        let v = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        let set = leaves(
            &v,
            Shape {
                schema: Some(&schema),
            },
        );
        let want: FieldSet = [
            vec![
                "f:status".to_owned(),
                "f:conditions".to_owned(),
                "k:{\"type\":\"Ready\"}".to_owned(),
                "f:status".to_owned(),
            ],
            vec![
                "f:status".to_owned(),
                "f:conditions".to_owned(),
                "k:{\"type\":\"Ready\"}".to_owned(),
                "f:type".to_owned(),
            ],
        ]
        .into_iter()
        .collect();
        assert_eq!(set, want);
        assert_eq!(from_fields_v1(&to_fields_v1(&set)), set);
    }
}
