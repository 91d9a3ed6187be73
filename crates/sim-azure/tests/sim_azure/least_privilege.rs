//! What a least-privileged operator meets in Azure: the permissions API, role assignment
//! management delegated with ABAC conditions (Microsoft's "Constrain roles and principal types"
//! form), and custom role definitions.

use std::time::Duration;

use lapse_sim_azure::{Config, PrincipalKind, Seed};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::*;

const RBAC_ADMIN: &str = "f58310d9-a9f6-439a-9e8d-f62e7b41a168";
const BLOB_READER: &str = "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1";
const WRITE: &str = "Microsoft.Authorization/roleAssignments/write";
const DELETE: &str = "Microsoft.Authorization/roleAssignments/delete";

/// The condition `lapse-operator azure-role` writes, for Reader only: assign or delete Reader,
/// to service principals only.
fn reader_only_condition() -> String {
    let side = |source: &str, action: &str| {
        format!(
            "((!(ActionMatches{{'{action}'}})) OR (@{source}[Microsoft.Authorization/roleAssignments:RoleDefinitionId] ForAnyOfAnyValues:GuidEquals {{{READER}}} AND @{source}[Microsoft.Authorization/roleAssignments:PrincipalType] ForAnyOfAnyValues:StringEqualsIgnoreCase {{'ServicePrincipal'}}))"
        )
    };
    format!(
        "{} AND {}",
        side("Request", WRITE),
        side("Resource", DELETE)
    )
}

fn assignment_path(scope: &str, name: &str) -> String {
    format!("{scope}/providers/Microsoft.Authorization/roleAssignments/{name}?api-version={RA_API}")
}

fn permissions_path(scope: &str) -> String {
    format!("{scope}/providers/Microsoft.Authorization/permissions?api-version=2022-04-01")
}

/// Azure's message when only conditioned assignments could allow the action and none holds.
fn condition_message(oid: &str, action: &str, scope: &str, name: &str) -> String {
    format!(
        "The client '{oid}' with object id '{oid}' does not have authorization or an ABAC condition not fulfilled to perform action '{action}' over scope '{scope}/providers/Microsoft.Authorization/roleAssignments/{name}' or the scope is invalid. If access was recently granted, please refresh your credentials."
    )
}

/// The sandbox, its operator's token (User Access Administrator on the subscription: the
/// administrator here), and a delegate service principal with its token.
struct Fx {
    env: Env,
    admin: String,
    delegate_oid: String,
    delegate: String,
}

impl Fx {
    async fn start(config: Config) -> Fx {
        let env = Env::start(config, Seed::sandbox_default()).await;
        let admin = env.operator_token().await;
        let d = env
            .sim
            .create_principal("delegate", PrincipalKind::ServicePrincipal);
        let delegate = env
            .secret_token(&d.client_id, d.client_secret.as_deref().unwrap())
            .await;
        Fx {
            env,
            admin,
            delegate_oid: d.object_id,
            delegate,
        }
    }

    /// As the administrator: `role` for `principal` at `scope`, with an optional condition.
    async fn assign(
        &self,
        scope: &str,
        principal: &str,
        role: &str,
        condition: Option<&str>,
    ) -> String {
        let name = guid();
        let mut props = json!({
            "roleDefinitionId": format!("/providers/Microsoft.Authorization/roleDefinitions/{role}"),
            "principalId": principal,
            "principalType": "ServicePrincipal",
        });
        if let Some(c) = condition {
            props["condition"] = json!(c);
            props["conditionVersion"] = json!("2.0");
        }
        let r = self
            .env
            .arm(
                Method::PUT,
                &assignment_path(scope, &name),
                &self.admin,
                Some(json!({ "properties": props })),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        name
    }

    /// As the delegate: `role` for `principal` at `scope`.
    async fn delegate_assigns(
        &self,
        scope: &str,
        name: &str,
        principal: &str,
        role: &str,
        principal_type: Option<&str>,
    ) -> Resp {
        self.env
            .put_assignment(&self.delegate, scope, name, principal, role, principal_type)
            .await
    }
}

#[tokio::test]
async fn a_condition_limits_which_roles_a_delegate_assigns_and_deletes() {
    let fx = Fx::start(Config::default()).await;
    let env = &fx.env;
    let (rg, account) = (env.rg_scope(), env.account_scope());
    let (_, workload, _) = env.sim.identity("backup-runner").unwrap();
    let condition = reader_only_condition();
    fx.assign(&rg, &fx.delegate_oid, RBAC_ADMIN, Some(&condition))
        .await;

    // The listed role, to a service principal, below the assignment's scope: allowed.
    let reader = guid();
    let r = fx
        .delegate_assigns(
            &account,
            &reader,
            &workload,
            READER,
            Some("ServicePrincipal"),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    // The 201 names the writer in `updatedBy`; `createdBy` is null until the next read.
    assert_eq!(r.body["properties"]["updatedBy"], fx.delegate_oid.as_str());
    assert!(r.body["properties"]["createdBy"].is_null(), "{}", r.body);

    // A role the condition does not list: Azure's 403, naming the role assignment.
    let blob = guid();
    let r = fx
        .delegate_assigns(
            &account,
            &blob,
            &workload,
            BLOB_READER,
            Some("ServicePrincipal"),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert_eq!(r.code(), "AuthorizationFailed");
    assert_eq!(r.header("x-ms-error-code"), None);
    assert_eq!(
        r.body["error"]["message"],
        condition_message(&fx.delegate_oid, WRITE, &account, &blob).as_str()
    );
    assert!(env.sim.role_assignments().iter().all(|a| a.name != blob));

    // The listed role to a user: the principal type is constrained too, whether the request
    // says it (@Request PrincipalType) or the directory does.
    let user = env.sim.create_principal("someone", PrincipalKind::User);
    for given in [Some("User"), None] {
        let name = guid();
        let r = fx
            .delegate_assigns(&account, &name, &user.object_id, READER, given)
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{given:?}: {}", r.body);
        assert!(
            r.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("ABAC condition not fulfilled"),
            "{}",
            r.body
        );
    }

    // Outside the assignment's scope no assignment applies: the plain AuthorizationFailed.
    let sub = format!("/subscriptions/{}", env.sub());
    let r = fx
        .delegate_assigns(&sub, &guid(), &workload, READER, Some("ServicePrincipal"))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(
        r.body["error"]["message"],
        format!(
            "The client '{0}' with object id '{0}' does not have authorization to perform action '{WRITE}' over scope '{sub}' or the scope is invalid. If access was recently granted, please refresh your credentials.",
            fx.delegate_oid
        )
        .as_str()
    );

    // Deletes are judged on the assignment deleted (@Resource): not someone's Blob Data Reader,
    // but the delegate's own Reader, and an absent one is the usual 204.
    let admins_blob = fx.assign(&account, &workload, BLOB_READER, None).await;
    let r = env
        .arm(
            Method::DELETE,
            &assignment_path(&account, &admins_blob),
            &fx.delegate,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert_eq!(
        r.body["error"]["message"],
        condition_message(&fx.delegate_oid, DELETE, &account, &admins_blob).as_str()
    );
    let r = env
        .arm(
            Method::DELETE,
            &assignment_path(&account, &reader),
            &fx.delegate,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = env
        .arm(
            Method::DELETE,
            &assignment_path(&account, &guid()),
            &fx.delegate,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);

    // Reads are not constrained: the role's */read applies as usual.
    let list =
        format!("{rg}/providers/Microsoft.Authorization/roleAssignments?api-version={RA_API}");
    assert_eq!(
        env.arm(Method::GET, &list, &fx.delegate, None).await.status,
        StatusCode::OK
    );

    // Every refusal is in Azure's log with its code.
    let refused: Vec<_> = env
        .sim
        .audit()
        .entries()
        .into_iter()
        .filter(|e| e.status == 403)
        .collect();
    assert_eq!(refused.len(), 5, "{refused:?}");
    assert!(
        refused
            .iter()
            .all(|e| e.error_code.as_deref() == Some("AuthorizationFailed"))
    );
}

#[tokio::test]
async fn an_assignment_without_a_condition_still_allows_and_a_broken_condition_never_does() {
    let fx = Fx::start(Config::default()).await;
    let env = &fx.env;
    let account = env.account_scope();
    let (_, workload, _) = env.sim.identity("backup-runner").unwrap();
    fx.assign(
        &env.rg_scope(),
        &fx.delegate_oid,
        RBAC_ADMIN,
        Some(&reader_only_condition()),
    )
    .await;
    let r = fx
        .delegate_assigns(
            &account,
            &guid(),
            &workload,
            BLOB_READER,
            Some("ServicePrincipal"),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // Any assignment that allows the action without a condition is enough (Azure's "condition
    // not enforced" trap: conditions only narrow the assignment that carries them).
    fx.assign(&account, &fx.delegate_oid, RBAC_ADMIN, None)
        .await;
    let r = fx
        .delegate_assigns(
            &account,
            &guid(),
            &workload,
            BLOB_READER,
            Some("ServicePrincipal"),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);

    // A condition the simulator cannot read allows nothing (fail closed).
    let d = env
        .sim
        .create_principal("garbled", PrincipalKind::ServicePrincipal);
    let token = env
        .secret_token(&d.client_id, d.client_secret.as_deref().unwrap())
        .await;
    fx.assign(
        &account,
        &d.object_id,
        RBAC_ADMIN,
        Some("((!(ActionMatches{'x'}) OR"),
    )
    .await;
    let r = env
        .put_assignment(
            &token,
            &account,
            &guid(),
            &workload,
            READER,
            Some("ServicePrincipal"),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ABAC condition not fulfilled")
    );
}

#[tokio::test]
async fn permissions_list_the_callers_effective_assignments_at_a_scope() {
    let fx = Fx::start(Config {
        page_size: 1,
        ..Config::default()
    })
    .await;
    let env = &fx.env;
    let (rg, account) = (env.rg_scope(), env.account_scope());
    let sub = format!("/subscriptions/{}", env.sub());

    // The administrator: User Access Administrator and Managed Identity Contributor on the
    // subscription, one entry each, one per page here.
    let first = env
        .arm(Method::GET, &permissions_path(&rg), &fx.admin, None)
        .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let entries = first.body["value"].as_array().unwrap();
    assert_eq!(entries.len(), 1);
    let next = first.body["nextLink"].as_str().unwrap();
    assert!(next.starts_with(env.sim.url()), "{next}");
    let next = next.strip_prefix(env.sim.url()).unwrap();
    let second = env.arm(Method::GET, next, &fx.admin, None).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.body);
    assert!(second.body.get("nextLink").is_none());
    let mut all: Vec<Value> = entries.clone();
    all.extend(second.body["value"].as_array().unwrap().iter().cloned());
    let uaa = json!({
        "actions": ["*/read", "Microsoft.Authorization/*", "Microsoft.Support/*"],
        "notActions": [], "dataActions": [], "notDataActions": []
    });
    assert!(all.contains(&uaa), "{all:?}");
    assert!(
        all.iter().any(|e| e["actions"]
            .as_array()
            .unwrap()
            .contains(&json!("Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/write"))),
        "{all:?}"
    );

    // The delegate: a conditioned Role Based Access Control Administrator on the group shows
    // at the group and at a resource in it (inherited), without its condition; not above.
    fx.assign(
        &rg,
        &fx.delegate_oid,
        RBAC_ADMIN,
        Some(&reader_only_condition()),
    )
    .await;
    let rbac_admin = json!([{
        "actions": [WRITE, DELETE, "*/read", "Microsoft.Support/*"],
        "notActions": [], "dataActions": [], "notDataActions": []
    }]);
    for scope in [&rg, &account] {
        let r = env
            .arm(Method::GET, &permissions_path(scope), &fx.delegate, None)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{scope}: {}", r.body);
        assert_eq!(r.body["value"], rbac_admin, "{scope}");
    }
    let r = env
        .arm(Method::GET, &permissions_path(&sub), &fx.delegate, None)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert_eq!(r.code(), "AuthorizationFailed");
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("'Microsoft.Authorization/permissions/read' over scope"),
        "{}",
        r.body
    );

    // ARM's errors: a missing group, a missing or unsupported api-version, another method.
    let missing = format!("{sub}/resourceGroups/no-such-rg");
    let r = env
        .arm(Method::GET, &permissions_path(&missing), &fx.admin, None)
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::NOT_FOUND, "ResourceGroupNotFound")
    );
    let bare = format!("{rg}/providers/Microsoft.Authorization/permissions");
    let r = env.arm(Method::GET, &bare, &fx.admin, None).await;
    assert_eq!(r.code(), "MissingApiVersionParameter");
    let r = env
        .arm(
            Method::GET,
            &format!("{bare}?api-version=1999-01-01"),
            &fx.admin,
            None,
        )
        .await;
    assert_eq!(r.code(), "InvalidApiVersionParameter");
    let r = env
        .arm(Method::POST, &permissions_path(&rg), &fx.admin, None)
        .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn permissions_follow_role_assignment_propagation() {
    let fx = Fx::start(Config::default()).await;
    let env = &fx.env;
    let rg = env.rg_scope();
    env.sim
        .faults()
        .set_propagation_delay(Duration::from_millis(600));
    let name = fx.assign(&rg, &fx.delegate_oid, READER, None).await;
    let r = env
        .arm(Method::GET, &permissions_path(&rg), &fx.delegate, None)
        .await;
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "not yet propagated: {}",
        r.body
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    let r = env
        .arm(Method::GET, &permissions_path(&rg), &fx.delegate, None)
        .await;
    assert_eq!(
        r.body["value"][0]["actions"],
        json!(["*/read"]),
        "{}",
        r.body
    );
    let del = env
        .arm(
            Method::DELETE,
            &assignment_path(&rg, &name),
            &fx.admin,
            None,
        )
        .await;
    assert_eq!(del.status, StatusCode::OK);
    // A deletion counts only once it has propagated.
    let r = env
        .arm(Method::GET, &permissions_path(&rg), &fx.delegate, None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let r = env
        .arm(Method::GET, &permissions_path(&rg), &fx.delegate, None)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
}

#[tokio::test]
async fn custom_role_definitions_are_created_assigned_and_unique_by_name() {
    let fx = Fx::start(Config::default()).await;
    let env = &fx.env;
    let sub = format!("/subscriptions/{}", env.sub());
    let id = guid();
    let path = |id: &str| {
        format!(
            "{sub}/providers/Microsoft.Authorization/roleDefinitions/{id}?api-version=2022-04-01"
        )
    };
    let body = |name: &str, actions: &[&str]| {
        json!({"properties": {
            "roleName": name,
            "description": "reads role assignments",
            "type": "CustomRole",
            "permissions": [{"actions": actions, "notActions": []}],
            "assignableScopes": [sub],
        }})
    };
    let r = env
        .arm(
            Method::PUT,
            &path(&id),
            &fx.admin,
            Some(body(
                "Assignment Reader",
                &["Microsoft.Authorization/roleAssignments/read"],
            )),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["name"], id.as_str());
    assert_eq!(r.body["properties"]["type"], "CustomRole");
    assert_eq!(r.body["properties"]["assignableScopes"], json!([sub]));
    let got = env.arm(Method::GET, &path(&id), &fx.admin, None).await;
    assert_eq!(got.body["properties"]["roleName"], "Assignment Reader");

    // Assigned, it allows exactly its actions.
    fx.assign(&sub, &fx.delegate_oid, &id, None).await;
    let list =
        format!("{sub}/providers/Microsoft.Authorization/roleAssignments?api-version={RA_API}");
    assert_eq!(
        env.arm(Method::GET, &list, &fx.delegate, None).await.status,
        StatusCode::OK
    );
    let identity = env.sim.identity("backup-runner").unwrap().0;
    let read_identity = format!("{identity}?api-version={MSI_API}");
    assert_eq!(
        env.arm(Method::GET, &read_identity, &fx.delegate, None)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    // Updated in place (same ID), the new actions apply.
    let r = env
        .arm(
            Method::PUT,
            &path(&id),
            &fx.admin,
            Some(body(
                "Assignment Reader",
                &[
                    "Microsoft.Authorization/roleAssignments/read",
                    "Microsoft.ManagedIdentity/userAssignedIdentities/read",
                ],
            )),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(
        env.arm(Method::GET, &read_identity, &fx.delegate, None)
            .await
            .status,
        StatusCode::OK
    );

    // Names are unique in the tenant, built-in names included.
    for name in ["assignment reader", "Reader"] {
        let r = env
            .arm(
                Method::PUT,
                &path(&guid()),
                &fx.admin,
                Some(body(name, &["*/read"])),
            )
            .await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{name}: {}", r.body);
        assert_eq!(r.code(), "RoleDefinitionWithSameNameExists");
        assert_eq!(
            r.body["error"]["message"],
            "A custom role with the same name already exists in this directory."
        );
    }
    // Refusals: no roleDefinitions/write, a built-in role, not a GUID, no roleName.
    let r = env
        .arm(
            Method::PUT,
            &path(&guid()),
            &fx.delegate,
            Some(body("Mine", &["*/read"])),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::FORBIDDEN, "AuthorizationFailed")
    );
    let r = env
        .arm(
            Method::PUT,
            &path(READER),
            &fx.admin,
            Some(body("Reader", &["*"])),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    let r = env
        .arm(
            Method::PUT,
            &path("not-a-guid"),
            &fx.admin,
            Some(body("X", &["*/read"])),
        )
        .await;
    assert_eq!(r.code(), "InvalidRoleDefinitionId");
    let r = env
        .arm(
            Method::PUT,
            &path(&guid()),
            &fx.admin,
            Some(json!({"properties": {"assignableScopes": [sub]}})),
        )
        .await;
    assert_eq!(r.code(), "InvalidRequestContent");
}
