//! Custom resource admission: pruning, defaulting, structural-schema validation and CEL rules,
//! in the order the real API server applies them (prune, default, validate).

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::rc::Rc;

use kube::core::cel::CompiledSchema;
use serde_json::{Map, Value};

use crate::status::Cause;

const OBJECT_META_FIELDS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
    "selfLink",
];

/// Removes fields the schema does not know (and nulls of non-nullable fields); returns the
/// dotted paths removed, for `fieldValidation=Strict|Warn`.
pub fn prune_root(schema: &Value, obj: &mut Value) -> Vec<String> {
    let mut pruned = Vec::new();
    if let Value::Object(m) = obj {
        for (k, v) in m.iter_mut() {
            match k.as_str() {
                "apiVersion" | "kind" => {}
                "metadata" => prune_meta(v, &mut pruned),
                _ => {
                    if let Some(s) = schema["properties"].get(k) {
                        prune(s, v, k, &mut pruned);
                    }
                }
            }
        }
        let unknown: Vec<String> = m
            .keys()
            .filter(|k| {
                !matches!(k.as_str(), "apiVersion" | "kind" | "metadata")
                    && schema["properties"].get(k.as_str()).is_none()
            })
            .cloned()
            .collect();
        if schema["x-kubernetes-preserve-unknown-fields"] != Value::Bool(true) {
            for k in unknown {
                m.remove(&k);
                pruned.push(k);
            }
        }
    }
    pruned
}

fn prune_meta(meta: &mut Value, pruned: &mut Vec<String>) {
    if let Value::Object(m) = meta {
        let unknown: Vec<String> = m
            .keys()
            .filter(|k| !OBJECT_META_FIELDS.contains(&k.as_str()))
            .cloned()
            .collect();
        for k in unknown {
            m.remove(&k);
            pruned.push(format!("metadata.{k}"));
        }
    }
}

fn prune(schema: &Value, v: &mut Value, path: &str, pruned: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if schema["x-kubernetes-embedded-resource"] == Value::Bool(true)
                && let Some(meta) = m.get_mut("metadata")
            {
                prune_meta(meta, pruned);
            }
            let preserve = schema["x-kubernetes-preserve-unknown-fields"] == Value::Bool(true);
            let props = schema["properties"].as_object();
            let addl = schema.get("additionalProperties").filter(|a| a.is_object());
            let mut remove = Vec::new();
            for (k, child) in m.iter_mut() {
                let child_path = format!("{path}.{k}");
                if let Some(s) = props.and_then(|p| p.get(k)) {
                    if child.is_null() && s["nullable"] != Value::Bool(true) {
                        remove.push(k.clone());
                    } else {
                        prune(s, child, &child_path, pruned);
                    }
                } else if let Some(s) = addl {
                    prune(s, child, &child_path, pruned);
                } else {
                    let embedded_meta = schema["x-kubernetes-embedded-resource"]
                        == Value::Bool(true)
                        && matches!(k.as_str(), "apiVersion" | "kind" | "metadata");
                    if preserve || embedded_meta {
                        continue;
                    }
                    remove.push(k.clone());
                    pruned.push(child_path);
                }
            }
            for k in remove {
                m.remove(&k);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                prune(&schema["items"], item, &format!("{path}[{i}]"), pruned);
            }
        }
        _ => {}
    }
}

/// Applies schema `default`s (after pruning, before validation).
pub fn default(schema: &Value, obj: &Value) -> Value {
    kube::core::cel::apply_defaults(schema, obj)
}

fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Object(_) => "\"object\"".to_owned(),
        Value::Array(_) => "\"array\"".to_owned(),
        other => other.to_string(),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn cause(reason: &str, field: &str, message: String) -> Cause {
    Cause {
        reason: reason.to_owned(),
        message,
        field: field.to_owned(),
    }
}

/// Validates `v` at `path` against a structural schema; appends the failures.
pub fn validate(schema: &Value, v: &Value, path: &str, out: &mut Vec<Cause>) {
    if v.is_null() {
        return;
    }
    let int_or_string = schema["x-kubernetes-int-or-string"] == Value::Bool(true);
    if let Some(want) = schema["type"].as_str() {
        let have = type_name(v);
        let ok = have == want || (want == "number" && have == "integer");
        let int_or_string_ok = int_or_string && matches!(have, "integer" | "string");
        if !ok && !int_or_string_ok {
            out.push(cause(
                "FieldValueTypeInvalid",
                path,
                format!(
                    "Invalid value: {}: {path} in body must be of type {want}: \"{have}\"",
                    shown(v)
                ),
            ));
            return;
        }
    }
    if let Some(options) = schema["enum"].as_array()
        && !options.contains(v)
    {
        let list: Vec<String> = options.iter().map(shown).collect();
        out.push(cause(
            "FieldValueNotSupported",
            path,
            format!(
                "Unsupported value: {}: supported values: {}",
                shown(v),
                list.join(", ")
            ),
        ));
    }
    match v {
        Value::String(s) => {
            let len = s.chars().count() as u64;
            if let Some(max) = schema["maxLength"].as_u64()
                && len > max
            {
                out.push(cause(
                    "FieldValueTooLong",
                    path,
                    format!("Too long: may not be more than {max} bytes"),
                ));
            }
            if let Some(min) = schema["minLength"].as_u64()
                && len < min
            {
                out.push(cause(
                    "FieldValueInvalid",
                    path,
                    format!(
                        "Invalid value: {}: {path} in body should be at least {min} chars long",
                        shown(v)
                    ),
                ));
            }
            if let Some(p) = schema["pattern"].as_str() {
                match pattern(p) {
                    Ok(re) if !re.is_match(s) => out.push(cause(
                        "FieldValueInvalid",
                        path,
                        format!(
                            "Invalid value: {}: {path} in body should match '{p}'",
                            shown(v)
                        ),
                    )),
                    Ok(_) => {}
                    Err(e) => out.push(cause(
                        "FieldValueInvalid",
                        path,
                        format!("schema pattern {p:?} does not compile: {e}"),
                    )),
                }
            }
        }
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            let excl_min = schema["exclusiveMinimum"] == Value::Bool(true);
            let excl_max = schema["exclusiveMaximum"] == Value::Bool(true);
            if let Some(min) = schema["minimum"].as_f64()
                && (x < min || (excl_min && x == min))
            {
                let rel = if excl_min {
                    "greater than"
                } else {
                    "greater than or equal to"
                };
                out.push(cause(
                    "FieldValueInvalid",
                    path,
                    format!(
                        "Invalid value: {}: {path} in body should be {rel} {}",
                        shown(v),
                        schema["minimum"]
                    ),
                ));
            }
            if let Some(max) = schema["maximum"].as_f64()
                && (x > max || (excl_max && x == max))
            {
                let rel = if excl_max {
                    "less than"
                } else {
                    "less than or equal to"
                };
                out.push(cause(
                    "FieldValueInvalid",
                    path,
                    format!(
                        "Invalid value: {}: {path} in body should be {rel} {}",
                        shown(v),
                        schema["maximum"]
                    ),
                ));
            }
        }
        Value::Array(items) => {
            let n = items.len() as u64;
            if let Some(max) = schema["maxItems"].as_u64()
                && n > max
            {
                out.push(cause(
                    "FieldValueTooMany",
                    path,
                    format!("Too many: {n}: must have at most {max} items"),
                ));
            }
            if let Some(min) = schema["minItems"].as_u64()
                && n < min
            {
                out.push(cause(
                    "FieldValueInvalid",
                    path,
                    format!("Invalid value: {n}: {path} in body should have at least {min} items"),
                ));
            }
            if schema["x-kubernetes-list-type"] == "set" {
                for (i, item) in items.iter().enumerate() {
                    if items[..i].contains(item) {
                        out.push(cause(
                            "FieldValueDuplicate",
                            &format!("{path}[{i}]"),
                            format!("Duplicate value: {}", shown(item)),
                        ));
                    }
                }
            }
            for (i, item) in items.iter().enumerate() {
                validate(&schema["items"], item, &format!("{path}[{i}]"), out);
            }
        }
        Value::Object(m) => {
            if let Some(req) = schema["required"].as_array() {
                for r in req.iter().filter_map(Value::as_str) {
                    if m.get(r).is_none_or(Value::is_null) {
                        out.push(cause(
                            "FieldValueRequired",
                            &join(path, r),
                            "Required value".to_owned(),
                        ));
                    }
                }
            }
            let n = m.len() as u64;
            if let Some(max) = schema["maxProperties"].as_u64()
                && n > max
            {
                out.push(cause(
                    "FieldValueTooMany",
                    path,
                    format!("Too many: {n}: must have at most {max} items"),
                ));
            }
            if let Some(min) = schema["minProperties"].as_u64()
                && n < min
            {
                out.push(cause(
                    "FieldValueInvalid",
                    path,
                    format!(
                        "Invalid value: {n}: {path} in body should have at least {min} properties"
                    ),
                ));
            }
            let props = schema["properties"].as_object();
            for (k, child) in m {
                if let Some(s) = props.and_then(|p| p.get(k)) {
                    validate(s, child, &join(path, k), out);
                } else if schema["additionalProperties"].is_object() {
                    validate(&schema["additionalProperties"], child, &join(path, k), out);
                }
            }
        }
        _ => {}
    }
    validate_combinators(schema, v, path, out);
}

fn join(path: &str, k: &str) -> String {
    if path.is_empty() {
        k.to_owned()
    } else {
        format!("{path}.{k}")
    }
}

/// `allOf`, `anyOf`, `oneOf` and `not` (in structural schemas these carry only value checks).
fn validate_combinators(schema: &Value, v: &Value, path: &str, out: &mut Vec<Cause>) {
    let passes = |s: &Value| {
        let mut tmp = Vec::new();
        validate(s, v, path, &mut tmp);
        tmp.is_empty()
    };
    if let Some(all) = schema["allOf"].as_array() {
        for s in all {
            validate(s, v, path, out);
        }
    }
    if let Some(any) = schema["anyOf"].as_array()
        && !any.iter().any(passes)
    {
        out.push(cause(
            "FieldValueInvalid",
            path,
            format!(
                "Invalid value: {}: {path} in body must match at least one schema in anyOf",
                shown(v)
            ),
        ));
    }
    if let Some(one) = schema["oneOf"].as_array() {
        let n = one.iter().filter(|s| passes(s)).count();
        if n != 1 {
            out.push(cause(
                "FieldValueInvalid",
                path,
                format!(
                    "Invalid value: {}: {path} in body must match exactly one schema in oneOf",
                    shown(v)
                ),
            ));
        }
    }
    if schema["not"].is_object() && passes(&schema["not"]) {
        out.push(cause(
            "FieldValueInvalid",
            path,
            format!(
                "Invalid value: {}: {path} in body must not match the schema in not",
                shown(v)
            ),
        ));
    }
}

thread_local! {
    static PATTERNS: RefCell<HashMap<String, Result<regex::Regex, String>>> = RefCell::new(HashMap::new());
}

/// Compiled schema `pattern`s, cached: compiling a regex costs far more than matching it.
fn pattern(p: &str) -> Result<regex::Regex, String> {
    PATTERNS.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() > 1024 {
            c.clear();
        }
        c.entry(p.to_owned())
            .or_insert_with(|| regex::Regex::new(p).map_err(|e| e.to_string()))
            .clone()
    })
}

thread_local! {
    /// Compiled CEL programs per schema: compiling on every request dominated admission time.
    static COMPILED: RefCell<HashMap<u64, Rc<CompiledSchema>>> = RefCell::new(HashMap::new());
}

fn compiled(schema: &Value) -> Rc<CompiledSchema> {
    let mut h = DefaultHasher::new();
    schema.to_string().hash(&mut h);
    let key = h.finish();
    COMPILED.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() > 256 {
            c.clear();
        }
        c.entry(key)
            .or_insert_with(|| Rc::new(kube::core::cel::compile_schema(schema)))
            .clone()
    })
}

/// Runs the CEL `x-kubernetes-validations` rules; transition rules see `old` on updates.
pub fn validate_cel(schema: &Value, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    let program = compiled(schema);
    match kube::core::cel::validate_compiled(&program, obj, old) {
        Ok(()) => Vec::new(),
        Err(errors) => errors
            .iter()
            .map(|e| {
                let field = e.field_path.trim_start_matches('.').to_owned();
                let at = if field.is_empty() {
                    Value::Null
                } else {
                    cel_value_at(obj, &field)
                };
                let (reason, message) = match e.reason.as_deref() {
                    Some("FieldValueForbidden") => {
                        ("FieldValueForbidden", format!("Forbidden: {}", e.message))
                    }
                    Some("FieldValueRequired") => (
                        "FieldValueRequired",
                        format!("Required value: {}", e.message),
                    ),
                    Some("FieldValueDuplicate") => (
                        "FieldValueDuplicate",
                        format!("Duplicate value: {}", e.message),
                    ),
                    _ => (
                        "FieldValueInvalid",
                        format!("Invalid value: {}: {}", shown(&at), e.message),
                    ),
                };
                Cause {
                    reason: reason.to_owned(),
                    message,
                    field,
                }
            })
            .collect(),
    }
}

fn cel_value_at(obj: &Value, dotted: &str) -> Value {
    let mut cur = obj;
    for seg in dotted.split('.') {
        let (name, idx) = match seg.split_once('[') {
            Some((n, rest)) => (n, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (seg, None),
        };
        cur = &cur[name];
        if let Some(i) = idx {
            cur = &cur[i];
        }
    }
    if cur.is_null() {
        Value::Object(Map::new())
    } else {
        cur.clone()
    }
}

/// Full admission of a custom resource: prune, default, validate (schema, then CEL).
/// Returns the admitted object and the pruned field paths, or the validation causes.
pub fn admit(
    schema: &Value,
    mut obj: Value,
    old: Option<&Value>,
) -> Result<(Value, Vec<String>), Vec<Cause>> {
    let pruned = prune_root(schema, &mut obj);
    let obj = default(schema, &obj);
    let mut causes = Vec::new();
    if let Value::Object(m) = &obj {
        for (k, child) in m {
            if let Some(s) = schema["properties"].get(k)
                && k != "metadata"
            {
                validate(s, child, k, &mut causes);
            }
        }
        if let Some(req) = schema["required"].as_array() {
            for r in req.iter().filter_map(Value::as_str) {
                if m.get(r).is_none_or(Value::is_null) {
                    causes.push(cause("FieldValueRequired", r, "Required value".to_owned()));
                }
            }
        }
    }
    if causes.is_empty() {
        causes = validate_cel(schema, &obj, old);
    }
    if causes.is_empty() {
        Ok((obj, pruned))
    } else {
        Err(causes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "spec": {"type": "object", "required": ["name"],
                "x-kubernetes-validations": [{"rule": "self.replicas <= 5 || self.name == 'big'", "message": "replicas above 5 need the name big"}],
                "properties": {
                "name": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 8},
                "replicas": {"type": "integer", "minimum": 1, "default": 1},
                "mode": {"type": "string", "enum": ["a", "b"]},
                "tags": {"type": "array", "maxItems": 2, "items": {"type": "string"}},
                "frozen": {"type": "string", "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "frozen is immutable"}]}}},
            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}})
    }

    fn errors(obj: Value, old: Option<&Value>) -> Vec<String> {
        match admit(&schema(), obj, old) {
            Ok(_) => vec![],
            Err(c) => c
                .into_iter()
                .map(|c| format!("{}: {}", c.field, c.message))
                .collect(),
        }
    }

    #[test]
    fn prunes_unknown_fields_and_applies_defaults() {
        let (obj, pruned) = admit(&schema(), json!({"apiVersion": "x/v1", "kind": "K",
            "metadata": {"name": "a", "bogus": 1}, "spec": {"name": "a", "extra": true}, "status": {"free": 1}}), None).unwrap();
        assert_eq!(obj["spec"], json!({"name": "a", "replicas": 1}));
        assert_eq!(obj["status"], json!({"free": 1}));
        assert_eq!(pruned, ["metadata.bogus", "spec.extra"]);
    }

    #[test]
    fn schema_violations_name_the_field() {
        assert_eq!(
            errors(json!({"spec": {}}), None),
            ["spec.name: Required value"]
        );
        assert_eq!(
            errors(json!({"spec": {"name": "A"}}), None),
            ["spec.name: Invalid value: \"A\": spec.name in body should match '^[a-z]+$'"]
        );
        assert_eq!(
            errors(json!({"spec": {"name": "a", "replicas": "x"}}), None),
            [
                "spec.replicas: Invalid value: \"x\": spec.replicas in body must be of type integer: \"string\""
            ]
        );
        assert_eq!(
            errors(json!({"spec": {"name": "a", "mode": "c"}}), None),
            ["spec.mode: Unsupported value: \"c\": supported values: \"a\", \"b\""]
        );
        assert_eq!(
            errors(
                json!({"spec": {"name": "a", "tags": ["1", "2", "3"]}}),
                None
            ),
            ["spec.tags: Too many: 3: must have at most 2 items"]
        );
        assert_eq!(
            errors(json!({"spec": {"name": "a", "replicas": 0}}), None),
            [
                "spec.replicas: Invalid value: 0: spec.replicas in body should be greater than or equal to 1"
            ]
        );
        assert_eq!(
            errors(json!({"spec": {"name": "abcdefghi"}}), None),
            ["spec.name: Too long: may not be more than 8 bytes"]
        );
    }

    #[test]
    fn cel_rules_and_transition_rules_reject_with_their_message() {
        let e = errors(json!({"spec": {"name": "a", "replicas": 9}}), None);
        assert_eq!(e.len(), 1);
        assert!(
            e[0].starts_with("spec: Invalid value: \"object\": replicas above 5 need the name big"),
            "{e:?}"
        );
        let old = json!({"spec": {"name": "a", "frozen": "x"}});
        assert!(errors(json!({"spec": {"name": "a", "frozen": "x"}}), Some(&old)).is_empty());
        let e = errors(json!({"spec": {"name": "a", "frozen": "y"}}), Some(&old));
        assert_eq!(e.len(), 1);
        assert!(
            e[0].contains("spec.frozen") && e[0].contains("frozen is immutable"),
            "{e:?}"
        );
    }
}
