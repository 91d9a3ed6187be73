//! ValidatingAdmissionPolicy (`admissionregistration.k8s.io/v1`): policies and their bindings
//! are checked on every create, update (including subresources such as `status`) and delete,
//! with the matching, CEL evaluation, failure policy and denial response of kube-apiserver's
//! `validating` admission plugin (k8s.io/apiserver/pkg/admission/plugin/policy/validating).
//!
//! Not supported: `paramKind`/`paramRef` (such a binding is a configuration error handled by the
//! policy's `failurePolicy`), `auditAnnotations` (accepted, never evaluated), the `authorizer`
//! CEL variable, and type checking beyond undeclared variables.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;

use kube::core::cel::KubeCelExt;
use kube::core::cel::cel::objects::{Key, Map};
use kube::core::cel::cel::{Context, Program, Value as Cel};
use serde_json::{Value, json};

use crate::rbac::User;
use crate::registry::ResourceType;
use crate::status::{ApiError, Cause};
use crate::store::Store;

pub(crate) const GROUP: &str = "admissionregistration.k8s.io";
pub(crate) const POLICIES: &str = "validatingadmissionpolicies";
pub(crate) const BINDINGS: &str = "validatingadmissionpolicybindings";

/// `celconfig.MaxEvaluatedMessageExpressionSizeBytes`.
const MAX_MESSAGE_BYTES: usize = 5 * 1024;

/// What is being admitted (kube-apiserver's `admission.Attributes`).
#[derive(Debug, Clone)]
pub(crate) struct Attributes<'a> {
    /// `CREATE`, `UPDATE` or `DELETE`.
    pub operation: &'static str,
    pub rt: &'a ResourceType,
    /// The subresource (`status`), empty for the main resource.
    pub sub: &'a str,
    /// For a Namespace, its own name (as the real server sets it).
    pub namespace: &'a str,
    pub name: &'a str,
    /// The new object; `None` on DELETE.
    pub object: Option<&'a Value>,
    /// The existing object; `None` on CREATE.
    pub old: Option<&'a Value>,
    pub user: &'a User,
    pub dry_run: bool,
    /// `CreateOptions`, `UpdateOptions` or `DeleteOptions`.
    pub options: Value,
}

impl<'a> Attributes<'a> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        operation: &'static str,
        rt: &'a ResourceType,
        sub: &'a str,
        namespace: &'a str,
        name: &'a str,
        object: Option<&'a Value>,
        old: Option<&'a Value>,
        user: &'a User,
        dry_run: bool,
    ) -> Self {
        let options_kind = match operation {
            "CREATE" => "CreateOptions",
            "UPDATE" => "UpdateOptions",
            _ => "DeleteOptions",
        };
        let namespace = if rt.group.is_empty() && rt.plural == "namespaces" {
            name
        } else {
            namespace
        };
        Self {
            operation,
            rt,
            sub,
            namespace,
            name,
            object,
            old,
            user,
            dry_run,
            options: json!({"kind": options_kind, "apiVersion": "meta.k8s.io/v1"}),
        }
    }

    fn is_namespace_resource(&self) -> bool {
        self.rt.group.is_empty() && self.rt.plural == "namespaces"
    }
}

/// One resource a rule is checked against: the requested one or an equivalent (another version
/// or group serving the same storage).
#[derive(Debug, Clone, PartialEq)]
struct Gvr<'a> {
    group: &'a str,
    version: &'a str,
    resource: &'a str,
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn exact_or_wildcard(items: &[&str], requested: &str) -> bool {
    items.iter().any(|i| *i == "*" || *i == requested)
}

/// `rules.Matcher`: scope, operations, apiGroups, apiVersions and `resource/subresource`.
fn rule_matches(rule: &Value, a: &Attributes<'_>, gvr: &Gvr<'_>) -> bool {
    let is_ns = gvr.group.is_empty() && gvr.resource == "namespaces";
    let scope = match rule["scope"].as_str() {
        None | Some("*") => true,
        Some("Namespaced") => !is_ns && !a.namespace.is_empty(),
        Some("Cluster") => is_ns || a.namespace.is_empty(),
        Some(_) => false,
    };
    let operation = exact_or_wildcard(&strs(&rule["operations"]), a.operation);
    let resource = strs(&rule["resources"]).iter().any(|r| {
        let (res, sub) = r.split_once('/').unwrap_or((r, ""));
        (res == "*" || res == gvr.resource) && (sub == "*" || sub == a.sub)
    });
    scope
        && operation
        && exact_or_wildcard(&strs(&rule["apiGroups"]), gvr.group)
        && exact_or_wildcard(&strs(&rule["apiVersions"]), gvr.version)
        && resource
}

fn named_rule_matches(rule: &Value, a: &Attributes<'_>, gvr: &Gvr<'_>) -> bool {
    if !rule_matches(rule, a, gvr) {
        return false;
    }
    let names = strs(&rule["resourceNames"]);
    names.is_empty() || names.contains(&a.name)
}

/// `matchesResourceRules`: the requested resource, then (unless `matchPolicy: Exact`) its
/// equivalents.
fn rules_match(
    rules: &Value,
    match_policy: Option<&str>,
    a: &Attributes<'_>,
    equivalents: &[Gvr<'_>],
) -> bool {
    let Some(rules) = rules.as_array() else {
        return false;
    };
    let own = Gvr {
        group: &a.rt.group,
        version: &a.rt.version,
        resource: &a.rt.plural,
    };
    if rules.iter().any(|r| named_rule_matches(r, a, &own)) {
        return true;
    }
    if matches!(match_policy, None | Some("Exact")) {
        return false;
    }
    equivalents
        .iter()
        .filter(|e| **e != own)
        .any(|e| rules.iter().any(|r| named_rule_matches(r, a, e)))
}

/// Whether a `metav1.LabelSelector` selects nothing in particular (matches everything).
fn selector_is_empty(sel: &Value) -> bool {
    sel["matchLabels"].as_object().is_none_or(|m| m.is_empty())
        && sel["matchExpressions"]
            .as_array()
            .is_none_or(|e| e.is_empty())
}

/// Evaluates a `metav1.LabelSelector` against a label map.
pub(crate) fn selector_matches(sel: &Value, labels: &Value) -> bool {
    let get = |k: &str| labels.get(k).and_then(Value::as_str);
    let by_label = sel["matchLabels"]
        .as_object()
        .is_none_or(|m| m.iter().all(|(k, v)| get(k) == v.as_str()));
    let by_expression = sel["matchExpressions"].as_array().is_none_or(|es| {
        es.iter().all(|e| {
            let key = e["key"].as_str().unwrap_or_default();
            let values = strs(&e["values"]);
            match e["operator"].as_str() {
                Some("In") => get(key).is_some_and(|v| values.contains(&v)),
                Some("NotIn") => get(key).is_none_or(|v| !values.contains(&v)),
                Some("Exists") => get(key).is_some(),
                Some("DoesNotExist") => get(key).is_none(),
                _ => false,
            }
        })
    });
    by_label && by_expression
}

fn namespace_selector_matches(
    store: &Store,
    sel: &Value,
    a: &Attributes<'_>,
) -> Result<bool, ApiError> {
    if a.namespace.is_empty() && !a.is_namespace_resource() {
        // Cluster-scoped resources other than namespaces are never exempted.
        return Ok(true);
    }
    if selector_is_empty(sel) {
        return Ok(true);
    }
    let writing_namespace =
        a.is_namespace_resource() && a.sub.is_empty() && a.operation != "DELETE";
    let labels = match (writing_namespace, a.object) {
        (true, Some(obj)) => obj["metadata"]["labels"].clone(),
        _ => store
            .get("", "namespaces", "", a.namespace)
            .map(|n| n["metadata"]["labels"].clone())
            .ok_or_else(|| {
                ApiError::not_found(crate::status::Subject {
                    group: "",
                    resource: "namespaces",
                    name: a.namespace,
                })
            })?,
    };
    Ok(selector_matches(sel, &labels))
}

fn object_selector_matches(sel: &Value, a: &Attributes<'_>) -> bool {
    if selector_is_empty(sel) {
        return true;
    }
    [a.object, a.old]
        .into_iter()
        .flatten()
        .any(|o| selector_matches(sel, &o["metadata"]["labels"]))
}

/// `matching.Matcher.Matches` for a policy's `matchConstraints` or a binding's `matchResources`.
fn criteria_match(
    store: &Store,
    criteria: &Value,
    a: &Attributes<'_>,
    equivalents: &[Gvr<'_>],
    is_binding: bool,
) -> Result<bool, ApiError> {
    if !namespace_selector_matches(store, &criteria["namespaceSelector"], a)? {
        return Ok(false);
    }
    if !object_selector_matches(&criteria["objectSelector"], a) {
        return Ok(false);
    }
    let policy = criteria["matchPolicy"].as_str();
    if rules_match(&criteria["excludeResourceRules"], policy, a, equivalents) {
        return Ok(false);
    }
    if is_binding && criteria["resourceRules"].is_null() {
        return Ok(true);
    }
    Ok(rules_match(
        &criteria["resourceRules"],
        policy,
        a,
        equivalents,
    ))
}

/// Requests on admission configuration itself are never subject to policies.
fn exempt(rt: &ResourceType) -> bool {
    rt.group == GROUP
        && matches!(
            rt.kind.as_str(),
            "ValidatingWebhookConfiguration"
                | "MutatingWebhookConfiguration"
                | "ValidatingAdmissionPolicy"
                | "ValidatingAdmissionPolicyBinding"
                | "MutatingAdmissionPolicy"
                | "MutatingAdmissionPolicyBinding"
        )
}

/// A denial: the policy, its binding (absent for policy configuration errors), the message and
/// the `reason` (empty: `Invalid`).
#[derive(Debug, Clone, PartialEq)]
struct Denial {
    policy: String,
    binding: Option<String>,
    message: String,
    reason: Option<String>,
}

/// One outcome of evaluating a policy for one binding.
#[derive(Debug, Clone, PartialEq)]
struct Decision {
    message: String,
    reason: Option<String>,
}

/// Whether any policy is bound (so requests need admission at all).
pub(crate) fn active(store: &Store) -> bool {
    let any = |plural: &str| store.bucket(GROUP, plural).is_some_and(|b| !b.is_empty());
    any(POLICIES) && any(BINDINGS)
}

/// Runs every ValidatingAdmissionPolicy that a binding applies to this request. `Ok` carries
/// the warnings of bindings with `validationActions: [Warn]`; `Err` is the first denial, as
/// kube-apiserver reports it.
pub(crate) fn validate(store: &Store, a: &Attributes<'_>) -> Result<Vec<String>, ApiError> {
    if exempt(a.rt) {
        return Ok(Vec::new());
    }
    let (Some(policies), Some(bindings)) =
        (store.bucket(GROUP, POLICIES), store.bucket(GROUP, BINDINGS))
    else {
        return Ok(Vec::new());
    };
    let equivalents: Vec<Gvr<'_>> = store
        .types
        .iter()
        .filter(|t| t.storage_group == a.rt.storage_group && t.plural == a.rt.plural)
        .map(|t| Gvr {
            group: &t.group,
            version: &t.version,
            resource: &t.plural,
        })
        .collect();
    let mut denials = Vec::new();
    let mut warnings = Vec::new();
    for policy in policies.values() {
        let policy_name = policy["metadata"]["name"].as_str().unwrap_or_default();
        let spec = &policy["spec"];
        let bound: Vec<&Value> = bindings
            .values()
            .filter(|b| b["spec"]["policyName"].as_str() == Some(policy_name))
            .collect();
        if bound.is_empty() {
            continue;
        }
        let fail = spec["failurePolicy"].as_str() != Some("Ignore");
        let config_error = |denials: &mut Vec<Denial>, binding: Option<&str>, err: String| {
            if fail {
                let what = if binding.is_some() {
                    "binding"
                } else {
                    "policy"
                };
                denials.push(Denial {
                    policy: policy_name.to_owned(),
                    binding: binding.map(str::to_owned),
                    message: format!("failed to configure {what}: {err}"),
                    reason: None,
                });
            }
        };
        match criteria_match(store, &spec["matchConstraints"], a, &equivalents, false) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                config_error(&mut denials, None, e.message);
                continue;
            }
        }
        for binding in bound {
            let binding_name = binding["metadata"]["name"].as_str().unwrap_or_default();
            let bspec = &binding["spec"];
            if !bspec["matchResources"].is_null() {
                match criteria_match(store, &bspec["matchResources"], a, &equivalents, true) {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(e) => {
                        config_error(&mut denials, Some(binding_name), e.message);
                        continue;
                    }
                }
            }
            if !spec["paramKind"].is_null() {
                config_error(
                    &mut denials,
                    Some(binding_name),
                    "paramKind is not supported by sim-kube".to_owned(),
                );
                continue;
            }
            let namespace_object = (!a.namespace.is_empty() && !a.is_namespace_resource())
                .then(|| store.get("", "namespaces", "", a.namespace))
                .flatten();
            for decision in evaluate(spec, a, namespace_object) {
                for action in strs(&bspec["validationActions"]) {
                    match action {
                        "Deny" => denials.push(Denial {
                            policy: policy_name.to_owned(),
                            binding: Some(binding_name.to_owned()),
                            message: decision.message.clone(),
                            reason: decision.reason.clone(),
                        }),
                        "Warn" => warnings.push(format!(
                            "Validation failed for ValidatingAdmissionPolicy '{policy_name}' with binding '{binding_name}': {}",
                            decision.message
                        )),
                        // Audit goes to the audit log, which sim-kube does not keep.
                        _ => {}
                    }
                }
            }
        }
    }
    match denials.into_iter().next() {
        None => Ok(warnings),
        Some(d) => {
            tracing::debug!(policy = %d.policy, binding = ?d.binding, message = %d.message, "admission denied");
            Err(denial_error(a, &d))
        }
    }
}

/// `admission.NewForbidden` with the policy's reason and code, and the message as a cause.
fn denial_error(a: &Attributes<'_>, d: &Denial) -> ApiError {
    let message = match &d.binding {
        Some(b) => format!(
            "ValidatingAdmissionPolicy '{}' with binding '{b}' denied request: {}",
            d.policy, d.message
        ),
        None => format!(
            "ValidatingAdmissionPolicy '{}' denied request: {}",
            d.policy, d.message
        ),
    };
    let name = if !a.name.is_empty() {
        a.name.to_owned()
    } else {
        let meta = &a.object.map(|o| o["metadata"].clone()).unwrap_or_default();
        meta["name"]
            .as_str()
            .filter(|n| !n.is_empty())
            .or_else(|| meta["generateName"].as_str().filter(|n| !n.is_empty()))
            .unwrap_or("Unknown")
            .to_owned()
    };
    let qualified = if a.rt.group.is_empty() {
        a.rt.plural.clone()
    } else {
        format!("{}.{}", a.rt.plural, a.rt.group)
    };
    let (code, reason) = match d.reason.as_deref() {
        Some("Forbidden") => (403, "Forbidden"),
        Some("Unauthorized") => (401, "Unauthorized"),
        Some("RequestEntityTooLarge") => (413, "RequestEntityTooLarge"),
        _ => (422, "Invalid"),
    };
    ApiError {
        details: Some(json!({"name": name, "group": a.rt.group, "kind": a.rt.plural})),
        ..ApiError::new(
            code,
            reason,
            format!("{qualified} \"{name}\" is forbidden: {message}"),
        )
    }
    .with_causes(vec![Cause {
        reason: String::new(),
        message,
        field: String::new(),
    }])
}

/// JSON to CEL, with integers as `int` (the schema type of Kubernetes integers).
fn to_cel(v: &Value) -> Cel {
    match v {
        Value::Null => Cel::Null,
        Value::Bool(b) => Cel::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Cel::Int(i),
            (None, Some(u)) => Cel::UInt(u),
            _ => Cel::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Cel::String(Arc::new(s.clone())),
        Value::Array(items) => Cel::List(Arc::new(items.iter().map(to_cel).collect())),
        Value::Object(m) => Cel::Map(Map {
            map: Arc::new(
                m.iter()
                    .map(|(k, v)| (Key::String(Arc::new(k.clone())), to_cel(v)))
                    .collect::<HashMap<_, _>>(),
            ),
        }),
    }
}

/// The `request` variable (an `admission/v1` AdmissionRequest without object and oldObject).
fn request_value(a: &Attributes<'_>) -> Value {
    let kind = json!({"group": a.rt.group, "version": a.rt.version, "kind": a.rt.kind});
    let resource = json!({"group": a.rt.group, "version": a.rt.version, "resource": a.rt.plural});
    json!({
        "kind": kind, "resource": resource, "subResource": a.sub,
        "requestKind": kind, "requestResource": resource, "requestSubResource": a.sub,
        "name": a.name, "namespace": a.namespace, "operation": a.operation,
        "userInfo": {"username": a.user.name, "uid": a.user.uid, "groups": a.user.groups, "extra": a.user.extra},
        "dryRun": a.dry_run, "options": a.options,
    })
}

thread_local! {
    /// Compiled expressions: parsing on every request would dominate admission time.
    static PROGRAMS: RefCell<HashMap<String, Rc<Result<Program, String>>>> = RefCell::new(HashMap::new());
}

fn program(expr: &str) -> Rc<Result<Program, String>> {
    PROGRAMS.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() > 1024 {
            c.clear();
        }
        c.entry(expr.to_owned())
            .or_insert_with(|| Rc::new(Program::compile(expr).map_err(|e| e.to_string())))
            .clone()
    })
}

/// Variables every admission expression may use.
const DECLARED: &[&str] = &[
    "object",
    "oldObject",
    "request",
    "namespaceObject",
    "variables",
    "authorizer",
];

/// Compiles an expression as the API server does when a policy is written: it must parse and
/// may only refer to declared variables (and `params` when the policy has a `paramKind`).
pub(crate) fn compile_check(expr: &str, has_params: bool) -> Result<(), String> {
    let p = program(expr);
    let program = p.as_ref().as_ref().map_err(Clone::clone)?;
    let refs = program.references();
    for var in refs.variables() {
        let declared = DECLARED.contains(&var) || (has_params && var == "params");
        // Comprehension variables (`x` in `all(x, ...)`) are reported as references too, so
        // only names that cannot be loop variables of this expression are refused.
        let bound_in_macro =
            expr.contains(&format!("({var},")) || expr.contains(&format!("({var} ,"));
        if !declared && !bound_in_macro {
            return Err(format!(
                "ERROR: <input>: undeclared reference to '{var}' (in container '')"
            ));
        }
    }
    Ok(())
}

fn eval(expr: &str, ctx: &Context<'_>) -> Result<Cel, String> {
    let p = program(expr);
    let program = p
        .as_ref()
        .as_ref()
        .map_err(|e| format!("compilation error: {e}"))?;
    program
        .execute(ctx)
        .map_err(|e| format!("expression '{expr}' resulted in error: {e}"))
}

/// The error of a composited variable this expression uses, if one failed to evaluate.
fn failed_variable(expr: &str, failed: &BTreeMap<String, String>) -> Option<String> {
    failed.iter().find_map(|(name, err)| {
        let used = expr.match_indices(&format!("variables.{name}")).any(|(i, m)| {
            !expr[i + m.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        });
        used.then(|| {
            format!("expression '{expr}' resulted in error: composited variable \"{name}\" fails to evaluate: {err}")
        })
    })
}

/// `validator.Validate`: matchConditions, then variables, then validations. Returns the
/// decisions that deny (failed validations, and evaluation errors under `failurePolicy: Fail`).
fn evaluate(spec: &Value, a: &Attributes<'_>, namespace_object: Option<&Value>) -> Vec<Decision> {
    let fail = spec["failurePolicy"].as_str() != Some("Ignore");
    let mut ctx = Context::default().with_all();
    let object = a.object.map(to_cel).unwrap_or(Cel::Null);
    let old = a.old.map(to_cel).unwrap_or(Cel::Null);
    ctx.add_variable_from_value("object", object);
    ctx.add_variable_from_value("oldObject", old);
    ctx.add_variable_from_value("request", to_cel(&request_value(a)));
    ctx.add_variable_from_value(
        "namespaceObject",
        namespace_object.map(to_cel).unwrap_or(Cel::Null),
    );
    let mut variables: HashMap<Key, Cel> = HashMap::new();
    let mut failed: BTreeMap<String, String> = BTreeMap::new();
    let set_variables = |ctx: &mut Context<'_>, vars: &HashMap<Key, Cel>| {
        ctx.add_variable_from_value(
            "variables",
            Cel::Map(Map {
                map: Arc::new(vars.clone()),
            }),
        );
    };
    set_variables(&mut ctx, &variables);
    let on_error = |message: String| {
        fail.then_some(Decision {
            message,
            reason: None,
        })
    };
    let checked = |expr: &str, ctx: &Context<'_>, failed: &BTreeMap<String, String>| {
        eval(expr, ctx).map_err(|e| failed_variable(expr, failed).unwrap_or(e))
    };

    let mut errors = Vec::new();
    for mc in spec["matchConditions"].as_array().into_iter().flatten() {
        let expr = mc["expression"].as_str().unwrap_or_default();
        match checked(expr, &ctx, &failed) {
            Ok(Cel::Bool(true)) => {}
            Ok(Cel::Bool(false)) => return Vec::new(),
            Ok(other) => errors.push(format!(
                "expression '{expr}' resulted in error: no such overload: {other:?} is not a bool"
            )),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        let message = if errors.len() == 1 {
            errors.remove(0)
        } else {
            format!("[{}]", errors.join(", "))
        };
        return on_error(message).into_iter().collect();
    }

    for v in spec["variables"].as_array().into_iter().flatten() {
        let name = v["name"].as_str().unwrap_or_default();
        let expr = v["expression"].as_str().unwrap_or_default();
        match eval(expr, &ctx) {
            Ok(value) => {
                variables.insert(Key::String(Arc::new(name.to_owned())), value);
                set_variables(&mut ctx, &variables);
            }
            Err(e) => {
                let cause = e
                    .strip_prefix(&format!("expression '{expr}' resulted in error: "))
                    .unwrap_or(&e)
                    .to_owned();
                failed.insert(name.to_owned(), cause);
            }
        }
    }

    let mut decisions = Vec::new();
    for v in spec["validations"].as_array().into_iter().flatten() {
        let expr = v["expression"].as_str().unwrap_or_default();
        match checked(expr, &ctx, &failed) {
            Ok(Cel::Bool(true)) => {}
            Err(e) => decisions.extend(on_error(e)),
            Ok(_) => {
                let from_expression = v["messageExpression"]
                    .as_str()
                    .and_then(|me| match checked(me, &ctx, &failed) {
                        Ok(Cel::String(s)) => Some(s.trim().to_owned()),
                        Ok(_) => None,
                        Err(e) => {
                            tracing::debug!(error = %e, "messageExpression failed");
                            None
                        }
                    })
                    .filter(|m| !m.is_empty() && m.len() <= MAX_MESSAGE_BYTES && !m.contains('\n'));
                let message = from_expression
                    .or_else(|| {
                        v["message"]
                            .as_str()
                            .map(|m| m.trim().to_owned())
                            .filter(|m| !m.is_empty())
                    })
                    .unwrap_or_else(|| format!("failed expression: {}", expr.trim()));
                decisions.push(Decision {
                    message,
                    reason: Some(v["reason"].as_str().unwrap_or("Invalid").to_owned()),
                });
            }
        }
    }
    decisions
}

/// Server-side defaults of `matchConstraints`/`matchResources` (`SetDefaults_MatchResources`,
/// `SetDefaults_Rule`).
fn default_match_resources(mr: &mut Value) {
    if !mr.is_object() {
        return;
    }
    if mr["matchPolicy"].is_null() {
        mr["matchPolicy"] = json!("Equivalent");
    }
    for sel in ["namespaceSelector", "objectSelector"] {
        if mr[sel].is_null() {
            mr[sel] = json!({});
        }
    }
    for rules in ["resourceRules", "excludeResourceRules"] {
        for rule in mr[rules].as_array_mut().into_iter().flatten() {
            if rule["scope"].is_null() {
                rule["scope"] = json!("*");
            }
        }
    }
}

/// Defaults a policy or binding as the API server stores it.
pub(crate) fn default(rt: &ResourceType, obj: &mut Value) {
    match rt.plural.as_str() {
        POLICIES => {
            if obj["spec"]["failurePolicy"].is_null() {
                obj["spec"]["failurePolicy"] = json!("Fail");
            }
            default_match_resources(&mut obj["spec"]["matchConstraints"]);
        }
        BINDINGS => default_match_resources(&mut obj["spec"]["matchResources"]),
        _ => {}
    }
}

fn invalid_cause(field: String, message: String) -> Cause {
    Cause {
        reason: "FieldValueInvalid".to_owned(),
        message,
        field,
    }
}

fn required(field: &str, detail: &str) -> Cause {
    Cause {
        reason: "FieldValueRequired".to_owned(),
        message: if detail.is_empty() {
            "Required value".to_owned()
        } else {
            format!("Required value: {detail}")
        },
        field: field.to_owned(),
    }
}

fn unsupported(field: String, value: &str, supported: &[&str]) -> Cause {
    let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
    Cause {
        reason: "FieldValueNotSupported".to_owned(),
        message: format!(
            "Unsupported value: {value:?}: supported values: {}",
            list.join(", ")
        ),
        field,
    }
}

fn check_rules(mr: &Value, path: &str, causes: &mut Vec<Cause>) {
    for key in ["resourceRules", "excludeResourceRules"] {
        for (i, rule) in mr[key].as_array().into_iter().flatten().enumerate() {
            for (j, op) in strs(&rule["operations"]).iter().enumerate() {
                if !matches!(*op, "*" | "CREATE" | "UPDATE" | "DELETE" | "CONNECT") {
                    causes.push(unsupported(
                        format!("{path}.{key}[{i}].operations[{j}]"),
                        op,
                        &["*", "CONNECT", "CREATE", "DELETE", "UPDATE"],
                    ));
                }
            }
        }
    }
}

fn check_expression(field: String, expr: Option<&str>, has_params: bool, causes: &mut Vec<Cause>) {
    match expr {
        None | Some("") => causes.push(required(&field, "")),
        Some(e) => {
            if let Err(err) = compile_check(e, has_params) {
                causes.push(invalid_cause(
                    field,
                    format!("Invalid value: {e:?}: compilation failed: {err}"),
                ));
            }
        }
    }
}

/// `ValidateValidatingAdmissionPolicy` / `...Binding` (the checks clients would notice).
pub(crate) fn check(rt: &ResourceType, obj: &Value) -> Result<(), ApiError> {
    let spec = &obj["spec"];
    let mut causes = Vec::new();
    match rt.plural.as_str() {
        POLICIES => {
            let has_params = !spec["paramKind"].is_null();
            let mc = &spec["matchConstraints"];
            if mc.is_null() {
                causes.push(required("spec.matchConstraints", ""));
            } else {
                if mc["resourceRules"].as_array().is_none_or(Vec::is_empty) {
                    causes.push(required("spec.matchConstraints.resourceRules", ""));
                }
                check_rules(mc, "spec.matchConstraints", &mut causes);
            }
            if let Some(fp) = spec["failurePolicy"].as_str()
                && !matches!(fp, "Fail" | "Ignore")
            {
                causes.push(unsupported(
                    "spec.failurePolicy".to_owned(),
                    fp,
                    &["Fail", "Ignore"],
                ));
            }
            let validations = spec["validations"].as_array();
            let audits = spec["auditAnnotations"].as_array();
            if validations.is_none_or(Vec::is_empty) && audits.is_none_or(Vec::is_empty) {
                causes.push(required(
                    "spec.validations",
                    "validations or auditAnnotations must contain at least one item",
                ));
            }
            for (i, v) in validations.into_iter().flatten().enumerate() {
                let at = format!("spec.validations[{i}]");
                check_expression(
                    format!("{at}.expression"),
                    v["expression"].as_str(),
                    has_params,
                    &mut causes,
                );
                if let Some(me) = v["messageExpression"].as_str() {
                    check_expression(
                        format!("{at}.messageExpression"),
                        Some(me),
                        has_params,
                        &mut causes,
                    );
                }
                if let Some(r) = v["reason"].as_str()
                    && !matches!(
                        r,
                        "Unauthorized" | "Forbidden" | "Invalid" | "RequestEntityTooLarge"
                    )
                {
                    causes.push(unsupported(
                        format!("{at}.reason"),
                        r,
                        &[
                            "Unauthorized",
                            "Forbidden",
                            "Invalid",
                            "RequestEntityTooLarge",
                        ],
                    ));
                }
            }
            for (i, v) in spec["variables"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                let at = format!("spec.variables[{i}]");
                let name = v["name"].as_str().unwrap_or_default();
                let ident = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !ident {
                    causes.push(invalid_cause(
                        format!("{at}.name"),
                        format!("Invalid value: {name:?}: name is not a valid CEL identifier"),
                    ));
                }
                check_expression(
                    format!("{at}.expression"),
                    v["expression"].as_str(),
                    has_params,
                    &mut causes,
                );
            }
            for (i, mc) in spec["matchConditions"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                let at = format!("spec.matchConditions[{i}]");
                if mc["name"].as_str().is_none_or(str::is_empty) {
                    causes.push(required(&format!("{at}.name"), ""));
                }
                check_expression(
                    format!("{at}.expression"),
                    mc["expression"].as_str(),
                    has_params,
                    &mut causes,
                );
            }
        }
        BINDINGS => {
            if spec["policyName"].as_str().is_none_or(str::is_empty) {
                causes.push(required("spec.policyName", ""));
            }
            let actions = strs(&spec["validationActions"]);
            if actions.is_empty() {
                causes.push(required(
                    "spec.validationActions",
                    "at least one validation action is required",
                ));
            }
            for (i, act) in actions.iter().enumerate() {
                if !matches!(*act, "Deny" | "Warn" | "Audit") {
                    causes.push(unsupported(
                        format!("spec.validationActions[{i}]"),
                        act,
                        &["Audit", "Deny", "Warn"],
                    ));
                }
            }
            if actions.contains(&"Deny") && actions.contains(&"Warn") {
                causes.push(invalid_cause(
                    "spec.validationActions".to_owned(),
                    format!("Invalid value: {}: must not contain both Deny and Warn (repeating the same validation failure information in the API response and headers serves no purpose)", spec["validationActions"]),
                ));
            }
            if spec["matchResources"].is_object() {
                check_rules(&spec["matchResources"], "spec.matchResources", &mut causes);
            }
        }
        _ => {}
    }
    if causes.is_empty() {
        return Ok(());
    }
    Err(ApiError::invalid(
        &rt.group,
        &rt.kind,
        obj["metadata"]["name"].as_str().unwrap_or_default(),
        causes,
    ))
}

/// The policy status the type-checking controller writes (no type warnings).
pub(crate) fn simulate_status(rt: &ResourceType, obj: &mut Value) {
    if rt.group == GROUP && rt.plural == POLICIES {
        obj["status"] = json!({
            "observedGeneration": obj["metadata"]["generation"],
            "typeChecking": {},
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry;

    fn rt(group: &str, plural: &str) -> ResourceType {
        registry::builtins()
            .into_iter()
            .find(|t| t.group == group && t.plural == plural)
            .unwrap()
    }

    fn attrs<'a>(
        op: &'static str,
        rt: &'a ResourceType,
        sub: &'a str,
        ns: &'a str,
        obj: Option<&'a Value>,
        user: &'a User,
    ) -> Attributes<'a> {
        Attributes::new(op, rt, sub, ns, "c1", obj, None, user, false)
    }

    fn own<'a>(rt: &'a ResourceType) -> Vec<Gvr<'a>> {
        vec![Gvr {
            group: &rt.group,
            version: &rt.version,
            resource: &rt.plural,
        }]
    }

    #[test]
    fn resource_rules_match_operations_groups_versions_and_subresources() {
        let user = User::admin();
        let cms = rt("", "configmaps");
        let create = attrs("CREATE", &cms, "", "demo", None, &user);
        let rule = |v: Value| json!([v]);
        let m = |r: Value, a: &Attributes<'_>| rules_match(&r, Some("Equivalent"), a, &own(a.rt));
        assert!(m(
            rule(
                json!({"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["configmaps"]})
            ),
            &create
        ));
        assert!(!m(
            rule(
                json!({"apiGroups": [""], "apiVersions": ["v1"], "operations": ["UPDATE"], "resources": ["configmaps"]})
            ),
            &create
        ));
        assert!(!m(
            rule(
                json!({"apiGroups": ["apps"], "apiVersions": ["*"], "operations": ["*"], "resources": ["*"]})
            ),
            &create
        ));
        // `*` alone is every main resource but no subresource; `*/*` is everything.
        let widgets = ResourceType {
            group: "lapse.dev".into(),
            plural: "accessgrants".into(),
            ..cms.clone()
        };
        let status = attrs("UPDATE", &widgets, "status", "demo", None, &user);
        let any = |res: &str| {
            rule(
                json!({"apiGroups": ["*"], "apiVersions": ["*"], "operations": ["*"], "resources": [res]}),
            )
        };
        assert!(!m(any("*"), &status));
        assert!(m(any("*/*"), &status));
        assert!(m(any("accessgrants/status"), &status));
        assert!(m(any("*/status"), &status));
        assert!(!m(any("accessgrants"), &status));
        assert!(!m(any("accessgrants/scale"), &status));
        // resourceNames restrict by the request's name.
        let named = rule(
            json!({"apiGroups": [""], "apiVersions": ["v1"], "operations": ["*"], "resources": ["configmaps"], "resourceNames": ["other"]}),
        );
        assert!(!m(named, &create));
    }

    #[test]
    fn scope_and_equivalent_versions_follow_match_policy() {
        let user = User::admin();
        let cms = rt("", "configmaps");
        let ns = rt("", "namespaces");
        let namespaced = attrs("CREATE", &cms, "", "demo", None, &user);
        let a_namespace =
            Attributes::new("CREATE", &ns, "", "", "team-a", None, None, &user, false);
        assert_eq!(a_namespace.namespace, "team-a");
        let scoped = |scope: &str| json!([{"apiGroups": ["*"], "apiVersions": ["*"], "operations": ["*"], "resources": ["*"], "scope": scope}]);
        let m = |r: Value, a: &Attributes<'_>| rules_match(&r, None, a, &[]);
        assert!(m(scoped("Namespaced"), &namespaced));
        assert!(!m(scoped("Cluster"), &namespaced));
        assert!(m(scoped("Cluster"), &a_namespace));
        assert!(!m(scoped("Namespaced"), &a_namespace));

        // A rule for events.k8s.io/v1 matches a core Event only with matchPolicy Equivalent.
        let events = rt("", "events");
        let a = attrs("CREATE", &events, "", "demo", None, &user);
        let eq = vec![
            Gvr {
                group: "",
                version: "v1",
                resource: "events",
            },
            Gvr {
                group: "events.k8s.io",
                version: "v1",
                resource: "events",
            },
        ];
        let r = json!([{"apiGroups": ["events.k8s.io"], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["events"]}]);
        assert!(rules_match(&r, Some("Equivalent"), &a, &eq));
        assert!(!rules_match(&r, Some("Exact"), &a, &eq));
    }

    #[test]
    fn selectors_use_object_old_object_and_namespace_labels() {
        let user = User::admin();
        let cms = rt("", "configmaps");
        let obj = json!({"metadata": {"name": "c1", "labels": {"team": "a", "tier": "web"}}});
        let sel = json!({"matchLabels": {"team": "a"}, "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["web", "db"]},
            {"key": "legacy", "operator": "DoesNotExist"}]});
        assert!(selector_matches(&sel, &obj["metadata"]["labels"]));
        assert!(!selector_matches(
            &json!({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["web"]}]}),
            &obj["metadata"]["labels"]
        ));
        assert!(object_selector_matches(
            &sel,
            &attrs("CREATE", &cms, "", "demo", Some(&obj), &user)
        ));
        // DELETE has no object: the old object's labels decide.
        let del = Attributes::new(
            "DELETE",
            &cms,
            "",
            "demo",
            "c1",
            None,
            Some(&obj),
            &user,
            false,
        );
        assert!(object_selector_matches(&sel, &del));
        let none = attrs("DELETE", &cms, "", "demo", None, &user);
        assert!(!object_selector_matches(&sel, &none));
        assert!(object_selector_matches(&json!({}), &none));

        let mut store = Store::new(16, registry::builtins());
        store.put(
            "",
            "namespaces",
            "",
            "demo",
            json!({"metadata": {"name": "demo", "labels": {"env": "prod"}}}),
        );
        let a = attrs("CREATE", &cms, "", "demo", Some(&obj), &user);
        assert!(
            namespace_selector_matches(&store, &json!({"matchLabels": {"env": "prod"}}), &a)
                .unwrap()
        );
        assert!(
            !namespace_selector_matches(&store, &json!({"matchLabels": {"env": "dev"}}), &a)
                .unwrap()
        );
        let missing = attrs("CREATE", &cms, "", "nowhere", Some(&obj), &user);
        assert_eq!(
            namespace_selector_matches(&store, &json!({"matchLabels": {"env": "prod"}}), &missing)
                .unwrap_err()
                .code,
            404
        );
        // Cluster-scoped resources other than namespaces are never exempted.
        let crs = rt("rbac.authorization.k8s.io", "clusterroles");
        let cluster = attrs("CREATE", &crs, "", "", Some(&obj), &user);
        assert!(
            namespace_selector_matches(&store, &json!({"matchLabels": {"env": "dev"}}), &cluster)
                .unwrap()
        );
    }

    fn policy(validations: Value, extra: Value) -> Value {
        let mut spec = json!({"failurePolicy": "Fail", "validations": validations});
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        spec
    }

    #[test]
    fn validations_messages_variables_and_failure_policy() {
        let user = User::named("alice@example.com", "", vec!["dev".into()]);
        let cms = rt("", "configmaps");
        let obj = json!({"metadata": {"name": "c1", "labels": {"team": "a"}}, "data": {"n": "3"}});
        let a = attrs("CREATE", &cms, "", "demo", Some(&obj), &user);
        let decide = |spec: Value| evaluate(&spec, &a, None);

        assert!(
            decide(policy(
                json!([{"expression": "object.metadata.labels.team == 'a'"}]),
                json!({})
            ))
            .is_empty()
        );
        assert_eq!(
            decide(policy(
                json!([{"expression": "has(object.metadata.labels.owner)"}]),
                json!({})
            )),
            vec![Decision {
                message: "failed expression: has(object.metadata.labels.owner)".into(),
                reason: Some("Invalid".into())
            }]
        );
        assert_eq!(
            decide(policy(
                json!([{"expression": "request.userInfo.username.endsWith('@corp')", "message": "static",
                        "messageExpression": "request.userInfo.username + ' may not ' + request.operation", "reason": "Forbidden"}]),
                json!({})
            )),
            vec![Decision {
                message: "alice@example.com may not CREATE".into(),
                reason: Some("Forbidden".into())
            }]
        );
        // A messageExpression that is not a string falls back to the message.
        assert_eq!(
            decide(policy(
                json!([{"expression": "false", "message": "static", "messageExpression": "1"}]),
                json!({})
            ))[0]
                .message,
            "static"
        );
        // Variables are visible to later variables and validations.
        let vars = json!({"variables": [
            {"name": "team", "expression": "object.metadata.labels.team"},
            {"name": "isA", "expression": "variables.team == 'a'"}]});
        assert!(
            decide(policy(
                json!([{"expression": "variables.isA && 'dev' in request.userInfo.groups"}]),
                vars.clone()
            ))
            .is_empty()
        );
        // An evaluation error denies under Fail and is ignored under Ignore.
        let broken = json!([{"expression": "object.spec.replicas > 1"}]);
        let denied = decide(policy(broken.clone(), json!({})));
        assert_eq!(denied.len(), 1);
        assert!(
            denied[0]
                .message
                .starts_with("expression 'object.spec.replicas > 1' resulted in error: "),
            "{denied:?}"
        );
        assert_eq!(denied[0].reason, None);
        assert!(decide(policy(broken, json!({"failurePolicy": "Ignore"}))).is_empty());
        // A failed variable is reported where it is used.
        let bad_var = json!({"variables": [{"name": "r", "expression": "object.spec.replicas"}]});
        let d = decide(policy(json!([{"expression": "variables.r > 1"}]), bad_var));
        assert!(
            d[0].message
                .contains("composited variable \"r\" fails to evaluate"),
            "{d:?}"
        );
        // matchConditions: any false skips the policy; errors follow the failure policy.
        let skip = json!({"matchConditions": [{"name": "only-b", "expression": "object.metadata.labels.team == 'b'"}]});
        assert!(decide(policy(json!([{"expression": "false"}]), skip)).is_empty());
        let err = json!({"matchConditions": [{"name": "e", "expression": "object.nope == 1"}]});
        assert_eq!(
            decide(policy(json!([{"expression": "true"}]), err)).len(),
            1
        );
    }

    #[test]
    fn policies_are_checked_when_written() {
        let vap = rt(GROUP, POLICIES);
        let ok = json!({"metadata": {"name": "p"}, "spec": {"matchConstraints": {"resourceRules": [
            {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["configmaps"]}]},
            "validations": [{"expression": "object.data.all(k, k.size() < 10)"}]}});
        check(&vap, &ok).unwrap();
        let mut bad = ok.clone();
        bad["spec"]["validations"][0]["expression"] = json!("object.data ==");
        let e = check(&vap, &bad).unwrap_err();
        assert_eq!(e.code, 422);
        assert!(e.message.contains("spec.validations[0].expression: Invalid value: \"object.data ==\": compilation failed"), "{}", e.message);
        bad["spec"]["validations"][0]["expression"] = json!("params.max > 1");
        assert!(
            check(&vap, &bad)
                .unwrap_err()
                .message
                .contains("undeclared reference to 'params'")
        );
        bad["spec"]["validations"] = json!([]);
        assert!(
            check(&vap, &bad)
                .unwrap_err()
                .message
                .contains("validations or auditAnnotations must contain at least one item")
        );

        let vapb = rt(GROUP, BINDINGS);
        let e = check(&vapb, &json!({"metadata": {"name": "b"}, "spec": {"policyName": "p", "validationActions": ["Deny", "Warn"]}})).unwrap_err();
        assert!(
            e.message.contains("must not contain both Deny and Warn"),
            "{}",
            e.message
        );
        let e = check(&vapb, &json!({"metadata": {"name": "b"}, "spec": {}})).unwrap_err();
        assert!(
            e.message.contains("spec.policyName: Required value"),
            "{}",
            e.message
        );

        let mut defaulted = ok.clone();
        default(&vap, &mut defaulted);
        assert_eq!(defaulted["spec"]["failurePolicy"], "Fail");
        assert_eq!(
            defaulted["spec"]["matchConstraints"]["matchPolicy"],
            "Equivalent"
        );
        assert_eq!(
            defaulted["spec"]["matchConstraints"]["resourceRules"][0]["scope"],
            "*"
        );
    }

    #[test]
    fn denials_answer_like_kube_apiserver() {
        let user = User::admin();
        let deploys = rt("apps", "deployments");
        let a = attrs("CREATE", &deploys, "", "demo", None, &user);
        let d = Denial {
            policy: "demo-policy.example.com".into(),
            binding: Some("demo-binding-test.example.com".into()),
            message: "failed expression: object.spec.replicas <= 5".into(),
            reason: None,
        };
        let e = denial_error(&a, &d);
        assert_eq!((e.code, e.reason), (422, "Invalid"));
        assert_eq!(
            e.message,
            "deployments.apps \"c1\" is forbidden: ValidatingAdmissionPolicy 'demo-policy.example.com' with binding 'demo-binding-test.example.com' denied request: failed expression: object.spec.replicas <= 5"
        );
        let details = e.details.unwrap();
        assert_eq!(details["kind"], "deployments");
        assert_eq!(
            details["causes"][0]["message"],
            "ValidatingAdmissionPolicy 'demo-policy.example.com' with binding 'demo-binding-test.example.com' denied request: failed expression: object.spec.replicas <= 5"
        );
        let forbidden = denial_error(
            &a,
            &Denial {
                reason: Some("Forbidden".into()),
                ..d
            },
        );
        assert_eq!((forbidden.code, forbidden.reason), (403, "Forbidden"));
    }
}
