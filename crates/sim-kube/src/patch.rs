//! JSON merge patch (RFC 7386), JSON patch (RFC 6902) and the subset of strategic merge patch
//! that kubectl sends for built-in kinds.

use serde_json::{Map, Value};

use crate::status::ApiError;

/// RFC 7386: objects merge recursively, `null` deletes, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// RFC 6902. As in the real server, a `test` for `null` passes when the path is absent
/// (kube-rs's finalizer helper relies on this).
pub fn json_patch(target: &mut Value, patch: &Value) -> Result<(), ApiError> {
    let mut ops = patch.as_array().cloned().unwrap_or_default();
    ops.retain(|op| {
        let absent_null_test = op["op"] == "test"
            && op["value"].is_null()
            && op["path"]
                .as_str()
                .is_some_and(|p| target.pointer(p).is_none());
        !absent_null_test
    });
    let p: json_patch::Patch = serde_json::from_value(Value::Array(ops))
        .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
    json_patch::patch(target, &p).map_err(|e| {
        ApiError::new(
            422,
            "Invalid",
            format!("the server rejected our request due to an error in our request: {e}"),
        )
    })
}

/// Merge keys of lists that strategic merge patch merges by key instead of replacing
/// (from the Kubernetes Go types' `patchMergeKey` tags).
fn merge_key(field: &str) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "secrets" => "name",
        "ports" => "containerPort",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "conditions" => "type",
        "ownerReferences" => "uid",
        "tolerations" | "hostAliases" => return None,
        _ => return None,
    })
}

/// Lists of scalars that strategic merge patch merges as sets.
fn is_primitive_merge_list(field: &str) -> bool {
    field == "finalizers"
}

/// Strategic merge patch for built-in kinds: merge patch, plus lists merged by their merge key,
/// `$patch: delete|replace`, `$deleteFromPrimitiveList/<f>` and `$retainKeys`; `$setElementOrder`
/// directives are accepted and ignored (order is kept as stored, new items appended).
pub fn strategic_merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut clean = patch.clone();
        strip_directives(&mut clean);
        *target = clean;
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(t) = target else { return };
    if let Some(Value::Array(keep)) = p.get("$retainKeys") {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        t.retain(|k, _| keep.contains(&k.as_str()) || p.contains_key(k));
    }
    for (k, v) in p {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Value::Array(del)) = (t.get_mut(field), v) {
                list.retain(|x| !del.contains(x));
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        if v.is_null() {
            t.remove(k);
            continue;
        }
        match (t.get_mut(k), v) {
            (Some(Value::Array(cur)), Value::Array(items)) if merge_key(k).is_some() => {
                let key = merge_key(k).unwrap_or("name");
                for item in items {
                    let id = &item[key];
                    let pos = cur.iter().position(|c| &c[key] == id);
                    let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
                    match (pos, delete) {
                        (Some(i), true) => {
                            cur.remove(i);
                        }
                        (None, true) => {}
                        (Some(i), false) => strategic_merge_patch(&mut cur[i], item),
                        (None, false) => {
                            let mut clean = item.clone();
                            strip_directives(&mut clean);
                            cur.push(clean);
                        }
                    }
                }
            }
            (Some(Value::Array(cur)), Value::Array(items)) if is_primitive_merge_list(k) => {
                for item in items {
                    if !cur.contains(item) {
                        cur.push(item.clone());
                    }
                }
            }
            (Some(cur @ Value::Object(_)), Value::Object(_)) => strategic_merge_patch(cur, v),
            _ => {
                let mut clean = v.clone();
                strip_directives(&mut clean);
                t.insert(k.clone(), clean);
            }
        }
    }
}

fn strip_directives(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|k, _| !k.starts_with('$'));
            m.values_mut().for_each(strip_directives);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_directives),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_deletes_with_null_and_merges_objects() {
        let mut t = json!({"a": {"b": 1, "c": 2}, "l": [1, 2]});
        merge_patch(&mut t, &json!({"a": {"b": null, "d": 3}, "l": [3]}));
        assert_eq!(t, json!({"a": {"c": 2, "d": 3}, "l": [3]}));
    }

    #[test]
    fn strategic_merge_merges_containers_by_name_and_finalizers_as_set() {
        let mut t = json!({"metadata": {"finalizers": ["a"]},
            "spec": {"containers": [{"name": "x", "image": "1"}, {"name": "y", "image": "1"}]}});
        strategic_merge_patch(
            &mut t,
            &json!({
            "metadata": {"finalizers": ["b"]},
            "spec": {"$setElementOrder/containers": [{"name": "x"}],
                     "containers": [{"name": "x", "image": "2"}, {"name": "y", "$patch": "delete"}]}}),
        );
        assert_eq!(
            t,
            json!({"metadata": {"finalizers": ["a", "b"]},
            "spec": {"containers": [{"name": "x", "image": "2"}]}})
        );
    }

    #[test]
    fn json_patch_test_null_passes_for_absent_path() {
        let mut t = json!({"metadata": {}});
        json_patch(
            &mut t,
            &json!([{"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": ["f"]}]),
        )
        .unwrap();
        assert_eq!(t, json!({"metadata": {"finalizers": ["f"]}}));
    }

    #[test]
    fn json_patch_test_failure_is_rejected() {
        let mut t = json!({"a": 1});
        let err =
            json_patch(&mut t, &json!([{"op": "test", "path": "/a", "value": 2}])).unwrap_err();
        assert_eq!(err.code, 422);
    }
}
