//! Contract tests: every example in `third_party/azure-rest-api-specs` is replayed against the
//! simulator; each documented status must come back, with a body valid against the operation's
//! swagger schema (no undeclared properties) and shaped like the example's body. Error answers
//! of each operation are validated against its `default` (ARM error) schema.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lapse_sim_azure::{
    Config, Seed, SeedIdentity, SeedPrincipal, SeedResourceGroup, SeedRoleAssignment,
    SeedRoleDefinition, SeedSubscription,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::*;

const CUSTOM_ROLE: &str = "0b5fe924-9a61-425c-96af-cfe6e287ca2d";
const EXAMPLE_USER: &str = "ce2ce14e-85d7-4629-bdbc-454d0519d987";
const EXAMPLE_ASSIGNMENT: &str = "b0f43c54-e787-4862-89b1-a653fa9cf747";
const OWNER: &str = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635";
const PIM_SUBSCRIPTION: &str = "dfa2a084-766f-4003-8ae1-c4aeb893a99f";
const PIM_USER: &str = "a3bb8764-cb92-4276-9d2a-ca1e895e55ea";
const PIM_ROLE: &str = "c8d4ff99-41c3-41a8-9f60-21dfdad59608";
/// The schedule and instance names the PIM examples read; the simulator names its own (random
/// GUIDs), learnt after the create example is replayed.
const PIM_EXAMPLE_SCHEDULE: &str = "c9e264ff-3133-4776-a81a-ebc7c33c8ec6";
const PIM_EXAMPLE_INSTANCE: &str = "ed9b8180-cef7-4c77-a63c-b8566ecfc412";

/// The vendored swagger files and examples (`third_party/azure-rest-api-specs/README.md` says
/// where each came from).
pub(crate) fn specs_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../third_party/azure-rest-api-specs");
    assert!(
        root.join("specification").is_dir(),
        "Azure specs not found at {}: they are part of the repository",
        root.display()
    );
    root
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            walk(&p, out);
        } else if p.extension().is_some_and(|e| e == "json") {
            out.push(p);
        }
    }
}

/// Loaded JSON documents by canonical path (for cross-file `$ref`s).
pub(crate) struct Docs(pub(crate) BTreeMap<PathBuf, Value>);

impl Docs {
    fn get(&mut self, path: &Path) -> &Value {
        // v4 common types are not in the fixture; their Resource/ProxyResource/TrackedResource/
        // ErrorResponse definitions are the same as v2's.
        let text = path
            .to_string_lossy()
            .replace("/resource-management/v4/", "/resource-management/v2/");
        let path = PathBuf::from(text);
        let canon =
            std::fs::canonicalize(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        self.0.entry(canon.clone()).or_insert_with(|| {
            serde_json::from_str(&std::fs::read_to_string(&canon).unwrap()).unwrap()
        })
    }

    /// Resolves a `$ref` relative to `file`: the target schema and the file it lives in.
    fn resolve(&mut self, file: &Path, reference: &str) -> (PathBuf, Value) {
        let (rel, pointer) = reference.split_once('#').unwrap_or((reference, ""));
        let target = if rel.is_empty() {
            file.to_path_buf()
        } else {
            file.parent().unwrap().join(rel)
        };
        let doc = self.get(&target).clone();
        let schema = doc
            .pointer(pointer)
            .unwrap_or_else(|| panic!("unresolved $ref {reference} from {}", file.display()))
            .clone();
        (target, schema)
    }
}

/// Declared property names of a schema, through `allOf` and `$ref`.
fn declared(docs: &mut Docs, file: &Path, schema: &Value, out: &mut Vec<String>) -> bool {
    let (file, schema) = match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => docs.resolve(file, r),
        None => (file.to_path_buf(), schema.clone()),
    };
    let mut open = schema.get("additionalProperties").is_some();
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        out.extend(props.keys().cloned());
    }
    for part in schema
        .get("allOf")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    {
        open |= declared(docs, &file, &part, out);
    }
    open
}

/// A swagger 2.0 schema check: types, required, enums (unless modelAsString), formats uuid /
/// date-time, items, additionalProperties, and no undeclared properties on objects.
pub(crate) fn validate(
    docs: &mut Docs,
    file: &Path,
    schema: &Value,
    value: &Value,
    at: &str,
    errors: &mut Vec<String>,
) {
    check(docs, file, schema, value, at, true, errors);
}

/// `closed`: whether undeclared properties are errors here (not inside an `allOf` part, whose
/// siblings declare the rest).
fn check(
    docs: &mut Docs,
    file: &Path,
    schema: &Value,
    value: &Value,
    at: &str,
    closed: bool,
    errors: &mut Vec<String>,
) {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let (f, s) = docs.resolve(file, r);
        return check(docs, &f, &s, value, at, closed, errors);
    }
    for part in schema
        .get("allOf")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    {
        check(docs, file, &part, value, at, false, errors);
    }
    let ty = schema
        .get("type")
        .and_then(Value::as_str)
        .or_else(|| schema.get("properties").map(|_| "object"));
    let type_ok = match ty {
        Some("object") => value.is_object(),
        Some("string") => value.is_string(),
        Some("array") => value.is_array(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        Some("boolean") => value.is_boolean(),
        _ => true,
    };
    if !type_ok {
        errors.push(format!("{at}: expected {ty:?}, got {value}"));
        return;
    }
    if let (Some(s), Some(format)) = (value.as_str(), schema.get("format").and_then(Value::as_str))
    {
        let ok = match format {
            "uuid" => uuid::Uuid::try_parse(s).is_ok(),
            "date-time" => chrono::DateTime::parse_from_rfc3339(s).is_ok(),
            "uri" => url::Url::parse(s).is_ok(),
            _ => true,
        };
        if !ok {
            errors.push(format!("{at}: '{s}' is not a valid {format}"));
        }
    }
    if let (Some(allowed), false) = (
        schema.get("enum").and_then(Value::as_array),
        schema
            .pointer("/x-ms-enum/modelAsString")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    ) && !allowed.contains(value)
    {
        errors.push(format!("{at}: {value} not in {allowed:?}"));
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), value.as_array()) {
        for (i, v) in arr.iter().enumerate() {
            validate(docs, file, items, v, &format!("{at}[{i}]"), errors);
        }
    }
    if let Some(obj) = value.as_object() {
        for req in schema
            .get("required")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
        {
            let name = req.as_str().unwrap_or_default();
            if !obj.contains_key(name) {
                errors.push(format!("{at}: missing required '{name}'"));
            }
        }
        let props = schema
            .get("properties")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let required: Vec<Value> = schema
            .get("required")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for (k, v) in obj {
            // ARM renders an unset optional property as `null` (Microsoft's role assignment
            // REST examples show all twelve properties, the unset ones null); swagger 2.0 has
            // no nullable, so null is accepted where the property is not required.
            if v.is_null() && !required.iter().any(|r| r.as_str() == Some(k.as_str())) {
                continue;
            }
            if let Some(s) = props.get(k) {
                validate(docs, file, s, v, &format!("{at}.{k}"), errors);
            } else if let Some(extra) = schema.get("additionalProperties").filter(|a| a.is_object())
            {
                validate(docs, file, extra, v, &format!("{at}.{k}"), errors);
            }
        }
        if closed && (schema.get("properties").is_some() || schema.get("allOf").is_some()) {
            let mut names = Vec::new();
            let open = declared(docs, file, schema, &mut names);
            if !open {
                for k in obj.keys().filter(|k| !names.contains(k)) {
                    errors.push(format!(
                        "{at}: property '{k}' is not declared by the schema"
                    ));
                }
            }
        }
    }
}

/// Fields the PIM examples fill that the simulator does not model, answered `null` (as Azure
/// answers them for what the simulator serves): the examples activate an eligibility
/// (`SelfActivate`), the simulator serves admin requests only; its directory has no e-mail
/// addresses.
const UNMODELLED: &[&str] = &[
    "linkedRoleEligibilityScheduleId",
    "linkedRoleEligibilityScheduleInstanceId",
    "email",
];

/// The actual body has every field of the example body, with the same JSON kinds.
fn same_shape(example: &Value, actual: &Value, at: &str, errors: &mut Vec<String>) {
    let field = at.rsplit('.').next().unwrap_or_default();
    match (example, actual) {
        (Value::String(_), Value::Null) if UNMODELLED.contains(&field) => {}
        (Value::Object(e), Value::Object(a)) => {
            for (k, ev) in e {
                // Free-form maps and continuation links depend on the data, not the contract.
                if (k == "tags" && a.get(k).is_some_and(Value::is_object)) || k == "nextLink" {
                    continue;
                }
                match a.get(k) {
                    Some(av) => same_shape(ev, av, &format!("{at}.{k}"), errors),
                    None => errors.push(format!("{at}: example field '{k}' missing")),
                }
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            if let (Some(ev), Some(av)) = (e.first(), a.first()) {
                same_shape(ev, av, &format!("{at}[0]"), errors);
            } else if !e.is_empty() {
                errors.push(format!("{at}: example has items, answer has none"));
            }
        }
        (e, a) if std::mem::discriminant(e) == std::mem::discriminant(a) => {}
        (Value::Number(_), Value::Number(_)) => {}
        (e, a) => errors.push(format!("{at}: example {e} vs answer {a}")),
    }
}

struct Operation {
    swagger: Option<PathBuf>,
    method: Method,
    template: String,
    op: Value,
}

fn operations_by_example(docs: &mut Docs, swaggers: &[PathBuf]) -> BTreeMap<PathBuf, Operation> {
    let mut map = BTreeMap::new();
    for file in swaggers {
        let doc = docs.get(file).clone();
        for (template, ops) in doc["paths"].as_object().unwrap() {
            for (method, op) in ops.as_object().unwrap() {
                let Ok(method) = method.to_ascii_uppercase().parse::<Method>() else {
                    continue;
                };
                for ex in op
                    .get("x-ms-examples")
                    .and_then(Value::as_object)
                    .map(|m| m.values().cloned().collect::<Vec<_>>())
                    .unwrap_or_default()
                {
                    let rel = ex["$ref"].as_str().unwrap();
                    if let Ok(p) = std::fs::canonicalize(file.parent().unwrap().join(rel)) {
                        map.insert(
                            p,
                            Operation {
                                swagger: Some(file.clone()),
                                method: method.clone(),
                                template: template.clone(),
                                op: op.clone(),
                            },
                        );
                    }
                }
            }
        }
    }
    map
}

/// Examples whose swagger is not part of the fixture: their operation, by file name.
fn fallback_operation(example: &Path) -> Operation {
    let name = example.file_name().unwrap().to_string_lossy().to_string();
    let template = match name.as_str() {
        "GetRoleDefinitionByName.json" => {
            "/{scope}/providers/Microsoft.Authorization/roleDefinitions/{roleDefinitionId}"
        }
        "FlexibleFederatedIdentityCredentialGet.json" => {
            "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{resourceName}/federatedIdentityCredentials/{federatedIdentityCredentialResourceName}"
        }
        other => panic!("example {other} has no operation in the fixture swaggers and no fallback"),
    };
    Operation {
        swagger: None,
        method: Method::GET,
        template: template.to_owned(),
        op: json!({}),
    }
}

pub(crate) fn contract_seed() -> Seed {
    let rg_with_identity = || SeedResourceGroup {
        name: "rgName".into(),
        identities: vec![SeedIdentity {
            name: "resourceName".into(),
            ..SeedIdentity::default()
        }],
        ..SeedResourceGroup::default()
    };
    // The management lock examples' resource group.
    let lock_rg = || SeedResourceGroup {
        name: "resourcegroupname".into(),
        ..SeedResourceGroup::default()
    };
    let subs = [
        "a925f2f7-5c63-4b7b-8799-25a5f97bc3b2",
        "subid",
        "12345678-1234-5678-9012-123456789012",
        "c267c0e7-0a73-4789-9e17-d26aeb0904e5",
        "subscriptionId",
        // The PIM (2020-10-01) examples' subscription.
        PIM_SUBSCRIPTION,
    ];
    let mut role_assignments: Vec<SeedRoleAssignment> = subs
        .iter()
        .map(|s| SeedRoleAssignment {
            principal: "contract-caller".into(),
            role: OWNER.into(),
            scope: format!("/subscriptions/{s}"),
            name: None,
        })
        .collect();
    // Reader, not the custom role: the create example assigns the custom role to the same
    // principal at the same scope, which would otherwise be a RoleAssignmentExists conflict.
    role_assignments.push(SeedRoleAssignment {
        principal: EXAMPLE_USER.into(),
        role: READER.into(),
        scope: "/subscriptions/a925f2f7-5c63-4b7b-8799-25a5f97bc3b2".into(),
        name: Some(EXAMPLE_ASSIGNMENT.into()),
    });
    Seed {
        tenant_id: Some("b6c948ef-f6b5-4384-8354-da3a15eca969".into()),
        subscriptions: subs
            .iter()
            .map(|s| SeedSubscription {
                id: (*s).into(),
                display_name: None,
                resource_groups: vec![rg_with_identity(), lock_rg()],
            })
            .collect(),
        principals: vec![
            SeedPrincipal {
                display_name: "contract-caller".into(),
                client_secret: Some("contract".into()),
                ..SeedPrincipal::default()
            },
            SeedPrincipal {
                display_name: "example-user".into(),
                kind: lapse_sim_azure::PrincipalKind::User,
                object_id: Some(EXAMPLE_USER.into()),
                ..SeedPrincipal::default()
            },
            SeedPrincipal {
                display_name: "User Account".into(),
                kind: lapse_sim_azure::PrincipalKind::User,
                object_id: Some(PIM_USER.into()),
                ..SeedPrincipal::default()
            },
        ],
        applications: Vec::new(),
        role_definitions: vec![
            SeedRoleDefinition {
                id: CUSTOM_ROLE.into(),
                role_name: "Example custom role".into(),
                description: "Custom role of the upstream examples".into(),
                actions: vec!["Microsoft.Storage/*/read".into()],
                data_actions: vec![
                    "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read".into(),
                ],
                assignable_scopes: vec!["/".into()],
                ..SeedRoleDefinition::default()
            },
            // The PIM examples' role (they call it Contributor, whose GUID it is not).
            SeedRoleDefinition {
                id: PIM_ROLE.into(),
                role_name: "Example PIM role".into(),
                description: "Custom role of the upstream PIM examples".into(),
                actions: vec!["*/read".into()],
                assignable_scopes: vec!["/".into()],
                ..SeedRoleDefinition::default()
            },
        ],
        role_assignments,
        locks: Vec::new(),
    }
}

/// Fills the path template from the example's parameters; upstream placeholders that are not
/// valid ARM values (`scope`, `roleDefinitionId`) become seeded ones. The PIM examples' scope
/// `providers/Microsoft.Subscription/subscriptions/{id}` (an alias ARM accepts for a
/// subscription) becomes `subscriptions/{id}`, the form the simulator serves; `renames` maps
/// the examples' schedule and instance names to the simulator's.
fn request_path(op: &Operation, params: &Value, renames: &BTreeMap<String, String>) -> String {
    let mut path = op.template.clone();
    for (k, v) in params.as_object().unwrap() {
        let v = match (k.as_str(), v.as_str()) {
            ("scope", Some("scope")) => "subscriptions/subid".to_owned(),
            ("roleDefinitionId", Some("roleDefinitionId")) => CUSTOM_ROLE.to_owned(),
            ("scope", Some(s)) if s.starts_with("providers/Microsoft.Subscription/") => s
                .trim_start_matches("providers/Microsoft.Subscription/")
                .to_owned(),
            (_, Some(s)) => renames.get(s).cloned().unwrap_or_else(|| s.to_owned()),
            _ => continue,
        };
        path = path.replace(&format!("{{{k}}}"), &v);
    }
    assert!(!path.contains('{'), "unfilled template {path}");
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    q.append_pair("api-version", params["api-version"].as_str().unwrap());
    for p in op
        .op
        .get("parameters")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    {
        if let Some(name) = p.get("name").and_then(Value::as_str)
            && p.get("in").and_then(Value::as_str) == Some("query")
            && let Some(v) = params
                .get(name)
                .or_else(|| params.get(name.trim_start_matches('$')))
        {
            q.append_pair(
                name,
                &v.as_str().map_or_else(|| v.to_string(), str::to_owned),
            );
        }
    }
    format!("{path}?{}", q.finish())
}

fn status_order(code: &str) -> u8 {
    match code {
        "201" => 0,
        "200" => 1,
        "204" => 2,
        _ => 3,
    }
}

#[tokio::test]
async fn every_example_replays_with_documented_status_and_valid_body() {
    let root = specs_root();
    let mut files = Vec::new();
    walk(&root.join("specification"), &mut files);
    let (examples, swaggers): (Vec<PathBuf>, Vec<PathBuf>) = files
        .into_iter()
        .partition(|p| p.components().any(|c| c.as_os_str() == "examples"));
    let swaggers: Vec<PathBuf> = swaggers
        .into_iter()
        .filter(|p| !p.to_string_lossy().contains("common-types"))
        .collect();
    let mut docs = Docs(BTreeMap::new());
    let mut by_example = operations_by_example(&mut docs, &swaggers);

    let env = Env::start(Config::default(), contract_seed()).await;
    let caller = env.sim.credentials("contract-caller").unwrap();
    let token = env.secret_token(&caller.client_id, "contract").await;

    // The flexible FIC example reads a FIC that must exist first (preview API only).
    let flexible = env
        .arm(
            Method::PUT,
            "/subscriptions/c267c0e7-0a73-4789-9e17-d26aeb0904e5/resourceGroups/rgName/providers/Microsoft.ManagedIdentity/userAssignedIdentities/resourceName/federatedIdentityCredentials/ficResourceName?api-version=2025-01-31-preview",
            &token,
            Some(json!({"properties": {"issuer": "https://oidc.prod-aks.azure.com/TenantGUID/IssuerGUID", "audiences": ["api://AzureADTokenExchange"], "claimsMatchingExpression": {"languageVersion": 1, "value": "claims['sub'] matches system:serviceaccount:ns:*"}}})),
        )
        .await;
    assert_eq!(flexible.status, StatusCode::CREATED, "{}", flexible.body);
    // The resource group lock example deletes a lock that must exist first (the upstream
    // fixture has no example creating it).
    let rg_lock = env
        .arm(
            Method::PUT,
            "/subscriptions/subscriptionId/resourceGroups/resourcegroupname/providers/Microsoft.Authorization/locks/testlock?api-version=2016-09-01",
            &token,
            Some(json!({"properties": {"level": "CanNotDelete"}})),
        )
        .await;
    assert_eq!(rg_lock.status, StatusCode::CREATED, "{}", rg_lock.body);

    let mut cases: Vec<(PathBuf, Operation, Value)> = examples
        .iter()
        .map(|ex| {
            let canon = std::fs::canonicalize(ex).unwrap();
            let op = by_example
                .remove(&canon)
                .unwrap_or_else(|| fallback_operation(ex));
            let example: Value =
                serde_json::from_str(&std::fs::read_to_string(ex).unwrap()).unwrap();
            (ex.clone(), op, example)
        })
        .collect();
    // Creates before reads before deletes, as the examples assume.
    let rank = |m: &Method| {
        if *m == Method::PUT {
            0
        } else if *m == Method::DELETE {
            2
        } else {
            1
        }
    };
    cases.sort_by_key(|(p, op, _)| (rank(&op.method), p.clone()));
    assert!(
        cases.len() >= 24,
        "expected all fixture examples, found {}",
        cases.len()
    );

    let mut failures = Vec::new();
    let mut checked = 0;
    let mut renames = BTreeMap::new();
    for (path, op, example) in &cases {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let params = &example["parameters"];
        let url = request_path(op, params, &renames);
        let mut body = params.get("parameters").cloned();
        if name == "PutRoleAssignmentScheduleRequest.json"
            && let Some(props) = body.as_mut().and_then(|b| b.get_mut("properties"))
        {
            // The example activates an eligibility, which the simulator does not model: the
            // same assignment is made by an administrator instead, starting now (the
            // example's start is in 2020, so its eight hours would be over).
            props["requestType"] = json!("AdminAssign");
            if let Some(p) = props.as_object_mut() {
                p.remove("linkedRoleEligibilityScheduleId");
            }
            if let Some(info) = props["scheduleInfo"].as_object_mut() {
                info.remove("startDateTime");
            }
        }
        let mut statuses: Vec<&String> = example["responses"].as_object().unwrap().keys().collect();
        statuses.sort_by_key(|s| status_order(s));
        for status in statuses {
            let resp = env.arm(op.method.clone(), &url, &token, body.clone()).await;
            checked += 1;
            if resp.status.as_str() != status {
                failures.push(format!(
                    "{name}: expected {status}, got {} {}",
                    resp.status, resp.body
                ));
                continue;
            }
            let mut errors = Vec::new();
            let documented = &example["responses"][status.as_str()]["body"];
            if documented.is_null() {
                if !resp.body.is_null() {
                    errors.push(format!("expected no body, got {}", resp.body));
                }
            } else {
                same_shape(documented, &resp.body, "$", &mut errors);
            }
            if let (Some(file), Some(schema)) = (
                &op.swagger,
                op.op["responses"][status.as_str()].get("schema"),
            ) {
                validate(&mut docs, file, schema, &resp.body, "$", &mut errors);
            }
            if !errors.is_empty() {
                failures.push(format!("{name} ({status}): {}", errors.join("; ")));
            }
        }
        if name == "PutRoleAssignmentScheduleRequest.json" {
            let instances = env
                .arm(
                    Method::GET,
                    &format!("/subscriptions/{PIM_SUBSCRIPTION}/providers/Microsoft.Authorization/roleAssignmentScheduleInstances?api-version=2020-10-01"),
                    &token,
                    None,
                )
                .await;
            let instance = &instances.body["value"][0];
            let schedule = instance["properties"]["roleAssignmentScheduleId"]
                .as_str()
                .and_then(|id| id.rsplit('/').next())
                .unwrap_or_default();
            renames.insert(PIM_EXAMPLE_SCHEDULE.to_owned(), schedule.to_owned());
            renames.insert(
                PIM_EXAMPLE_INSTANCE.to_owned(),
                instance["name"].as_str().unwrap_or_default().to_owned(),
            );
        }
        // The same operation with an unsupported api-version answers ARM's error shape.
        let bad_url = url.replace(params["api-version"].as_str().unwrap(), "1999-01-01");
        let err = env
            .arm(op.method.clone(), &bad_url, &token, body.clone())
            .await;
        // ARM's front door refuses it: the code in the body only, `x-ms-failure-cause: gateway`.
        if err.status != StatusCode::BAD_REQUEST
            || err.code() != "InvalidApiVersionParameter"
            || err.header("x-ms-error-code").is_some()
            || err.header("x-ms-failure-cause") != Some("gateway")
        {
            failures.push(format!(
                "{name}: bad api-version answered {} {}",
                err.status, err.body
            ));
        }
        if let (Some(file), Some(schema)) =
            (&op.swagger, op.op["responses"]["default"].get("schema"))
        {
            let mut errors = Vec::new();
            validate(&mut docs, file, schema, &err.body, "$", &mut errors);
            if !errors.is_empty() {
                failures.push(format!("{name} (default): {}", errors.join("; ")));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} replays failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checked >= 31, "only {checked} replays");
}

#[test]
fn validator_rejects_what_the_schema_forbids() {
    let root = specs_root();
    let file = root.join("specification/authorization/resource-manager/Microsoft.Authorization/stable/2022-04-01/authorization-RoleAssignmentsCalls.json");
    let mut docs = Docs(BTreeMap::new());
    let schema = json!({"$ref": "#/definitions/RoleAssignment"});
    let good = json!({"id": "x", "name": "n", "type": "t", "properties": {"roleDefinitionId": "r", "principalId": "p", "createdOn": "2024-01-01T00:00:00Z"}});
    let mut errors = Vec::new();
    validate(&mut docs, &file, &schema, &good, "$", &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    for bad in [
        json!({"properties": {"principalId": "p"}}),
        json!({"properties": {"roleDefinitionId": "r", "principalId": 5}}),
        json!({"properties": {"roleDefinitionId": "r", "principalId": "p", "createdOn": "yesterday"}}),
        json!({"properties": {"roleDefinitionId": "r", "principalId": "p"}, "surprise": true}),
    ] {
        let mut errors = Vec::new();
        validate(&mut docs, &file, &schema, &bad, "$", &mut errors);
        assert!(!errors.is_empty(), "accepted {bad}");
    }
}

/// `PermissionGetResult` and `Permission` of `authorization-RoleDefinitionsCalls.json`
/// (Azure/azure-rest-api-specs, `specification/authorization/resource-manager/
/// Microsoft.Authorization/stable/2022-04-01`, commit 007a51db374076edb902fd44eb8299eea6336335),
/// transcribed: that swagger and its permissions examples are not vendored (the examples could
/// not be copied byte for byte), so the operations `Permissions_ListForResourceGroup` and
/// `Permissions_ListForResource` are replayed here by hand.
fn permission_get_result() -> Value {
    let strings = json!({"type": "array", "items": {"type": "string"}});
    json!({
        "type": "object",
        "properties": {
            "value": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "actions": strings,
                        "notActions": strings,
                        "dataActions": strings,
                        "notDataActions": strings,
                    }
                }
            },
            "nextLink": {"type": "string"}
        }
    })
}

#[tokio::test]
async fn permissions_answers_follow_the_2022_04_01_schema() {
    let root = specs_root();
    // Any vendored swagger of the same folder resolves the common error type's relative $ref.
    let file = root.join("specification/authorization/resource-manager/Microsoft.Authorization/stable/2022-04-01/authorization-RoleAssignmentsCalls.json");
    let error = json!({"$ref": "../../../../../common-types/resource-management/v2/types.json#/definitions/ErrorResponse"});
    let mut docs = Docs(BTreeMap::new());
    let env = Env::start(Config::default(), contract_seed()).await;
    let caller = env.sim.credentials("contract-caller").unwrap();
    let token = env.secret_token(&caller.client_id, "contract").await;
    // The paths of the two operations (resource group; resource, with a parent resource path
    // as the swagger's template has one), filled in as the upstream examples do.
    let sub = "/subscriptions/subid";
    let identity = format!(
        "{sub}/resourceGroups/rgName/providers/Microsoft.ManagedIdentity/userAssignedIdentities/resourceName"
    );
    let mut failures = Vec::new();
    for scope in [format!("{sub}/resourcegroups/rgName"), identity] {
        let url =
            format!("{scope}/providers/Microsoft.Authorization/permissions?api-version=2022-04-01");
        let resp = env.arm(Method::GET, &url, &token, None).await;
        assert_eq!(resp.status, StatusCode::OK, "{scope}: {}", resp.body);
        // Owner on the subscription: one entry, `*`.
        assert_eq!(resp.body["value"][0]["actions"], json!(["*"]), "{scope}");
        let mut errors = Vec::new();
        validate(
            &mut docs,
            &file,
            &permission_get_result(),
            &resp.body,
            "$",
            &mut errors,
        );
        let missing = env
            .arm(
                Method::GET,
                &url.replace("rgName", "noSuchGroup"),
                &token,
                None,
            )
            .await;
        assert_eq!(missing.status, StatusCode::NOT_FOUND, "{}", missing.body);
        validate(&mut docs, &file, &error, &missing.body, "$", &mut errors);
        if !errors.is_empty() {
            failures.push(format!("{scope}: {}", errors.join("; ")));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The validator is not vacuous for this schema.
    let mut errors = Vec::new();
    validate(
        &mut docs,
        &file,
        &permission_get_result(),
        &json!({"value": [{"actions": "*"}]}),
        "$",
        &mut errors,
    );
    assert!(!errors.is_empty());
}
