//! ARM calls: role definitions, role assignments (2022-04-01), PIM role assignment schedules
//! and their requests (2020-10-01), user-assigned managed identities and their federated
//! identity credentials (2023-01-31).

use azure_core::http::Method;
use lapse_api::arm::ArmId;
use uuid::Uuid;

use crate::client::{AzureClient, RoleKey, build_url, call, expect_json, invalid};
use crate::error::{AzureError, Operation};
use crate::limiter::Budget;
use crate::models::{
    ArmPage, Fic, FicRequest, ManagedIdentity, Permission, RoleAssignment, RoleAssignmentRequest,
    RoleAssignmentSchedule, RoleDefinition, ScheduleRequest, ScheduleRequestRecord, Subscription,
    WireArmFic, WireIdentity, WireLock, WirePermissionEntry, WireRoleAssignment,
    WireRoleAssignmentCreate, WireRoleAssignmentSchedule, WireRoleDefinition, WireScheduleRequest,
    WireScheduleRequestCreate, WireSubscription,
};
use crate::rest::Api;

pub const ROLE_API_VERSION: &str = "2022-04-01";
pub const MSI_API_VERSION: &str = "2023-01-31";
/// Microsoft.Resources subscriptions.
pub const SUBSCRIPTIONS_API_VERSION: &str = "2022-12-01";
/// Microsoft.Authorization management locks.
pub const LOCKS_API_VERSION: &str = "2016-09-01";
/// Microsoft.Authorization PIM role assignment schedules and their requests.
pub const PIM_API_VERSION: &str = "2020-10-01";

const AUTHZ: [&str; 2] = ["providers", "Microsoft.Authorization"];

impl AzureClient {
    /// The role definition named `name` (case-insensitively) in `subscription`, if any.
    pub async fn role_definition_by_name(
        &self,
        subscription: &str,
        name: &str,
    ) -> Result<Option<RoleDefinition>, AzureError> {
        let op = Operation::GetRoleDefinition;
        let budget = subscription_budget(op, subscription)?;
        let name = name.trim();
        if name.is_empty() {
            return Err(invalid(op, "role name is empty"));
        }
        let key = RoleKey::Name(subscription.to_ascii_lowercase(), name.to_lowercase());
        self.inner
            .role_cache
            .get_or_fetch(key, || self.fetch_role_by_name(budget, subscription, name))
            .await
    }

    /// The role definition with GUID `guid` as seen from `subscription`, if any.
    pub async fn role_definition_by_id(
        &self,
        subscription: &str,
        guid: &Uuid,
    ) -> Result<Option<RoleDefinition>, AzureError> {
        let op = Operation::GetRoleDefinition;
        let budget = subscription_budget(op, subscription)?;
        let key = RoleKey::Guid(subscription.to_ascii_lowercase(), *guid);
        self.inner
            .role_cache
            .get_or_fetch(key, || async move {
                let target = format!("role definition {guid} in subscription {subscription}");
                let guid = guid.to_string();
                let url = self.arm_url(
                    op,
                    ["subscriptions", subscription]
                        .into_iter()
                        .chain(AUTHZ)
                        .chain(["roleDefinitions", guid.as_str()]),
                    &[("api-version", ROLE_API_VERSION)],
                )?;
                let call = call(op, Api::Arm, budget, Method::Get, url, &target);
                let reply = self.rest().send(&call).await?;
                match reply.status {
                    404 => Ok(None),
                    _ => expect_json::<WireRoleDefinition>(&reply, &call, &[200])
                        .map(|w| Some(w.into())),
                }
            })
            .await
    }

    async fn fetch_role_by_name(
        &self,
        budget: Budget,
        subscription: &str,
        name: &str,
    ) -> Result<Option<RoleDefinition>, AzureError> {
        let op = Operation::GetRoleDefinition;
        let target = format!("role definition `{name}` in subscription {subscription}");
        // OData string literals escape a quote by doubling it.
        let filter = format!("roleName eq '{}'", name.replace('\'', "''"));
        let url = self.arm_url(
            op,
            ["subscriptions", subscription]
                .into_iter()
                .chain(AUTHZ)
                .chain(["roleDefinitions"]),
            &[("api-version", ROLE_API_VERSION), ("$filter", &filter)],
        )?;
        let call = call(op, Api::Arm, budget, Method::Get, url, &target);
        let found: Vec<RoleDefinition> = self
            .list_all(call, |page: ArmPage<WireRoleDefinition>| {
                (
                    page.value.into_iter().map(Into::into).collect(),
                    page.next_link,
                )
            })
            .await?;
        // The filter may match loosely; the exact spelling wins over a case-insensitive match.
        let exact = found.iter().find(|d| d.role_name.trim() == name);
        let loose = || {
            found
                .iter()
                .find(|d| d.role_name.trim().to_lowercase() == name.to_lowercase())
        };
        Ok(exact.or_else(loose).cloned())
    }

    /// Creates (or confirms) a role assignment. `principalType: ServicePrincipal` is always sent;
    /// a condition goes with `conditionVersion: "2.0"`.
    pub async fn put_role_assignment(
        &self,
        req: &RoleAssignmentRequest,
    ) -> Result<RoleAssignment, AzureError> {
        let op = Operation::PutRoleAssignment;
        let (scope, budget) = scope_budget(op, &req.scope)?;
        if req.role_definition_id.trim().is_empty() {
            return Err(invalid(op, "role_definition_id is empty"));
        }
        if req
            .condition
            .as_deref()
            .is_some_and(|c| c.trim().is_empty())
        {
            return Err(invalid(op, "condition is empty; leave it out instead"));
        }
        let target = format!("role assignment {} at {}", req.name, scope.as_str());
        let mut call = call(
            op,
            Api::Arm,
            budget,
            Method::Put,
            self.role_assignment_url(op, &scope, &req.name)?,
            &target,
        );
        call.body = Some(to_json(op, &WireRoleAssignmentCreate::from(req))?);
        let reply = self.rest().send(&call).await?;
        expect_json::<WireRoleAssignment>(&reply, &call, &[200, 201])
            .map(|w| w.into_model(scope.as_str()))
    }

    pub async fn get_role_assignment(
        &self,
        scope: &str,
        name: &Uuid,
    ) -> Result<Option<RoleAssignment>, AzureError> {
        let op = Operation::GetRoleAssignment;
        let (scope, budget) = scope_budget(op, scope)?;
        let target = format!("role assignment {name} at {}", scope.as_str());
        let url = self.role_assignment_url(op, &scope, name)?;
        let call = call(op, Api::Arm, budget, Method::Get, url, &target);
        let reply = self.rest().send(&call).await?;
        match reply.status {
            404 => Ok(None),
            _ => expect_json::<WireRoleAssignment>(&reply, &call, &[200])
                .map(|w| Some(w.into_model(scope.as_str()))),
        }
    }

    /// Deletes a role assignment. `Ok(true)` if it existed (200), `Ok(false)` if it was already
    /// gone (204, or 404 when its scope is gone too).
    pub async fn delete_role_assignment(
        &self,
        scope: &str,
        name: &Uuid,
    ) -> Result<bool, AzureError> {
        let op = Operation::DeleteRoleAssignment;
        let (scope, budget) = scope_budget(op, scope)?;
        let target = format!("role assignment {name} at {}", scope.as_str());
        let url = self.role_assignment_url(op, &scope, name)?;
        let call = call(op, Api::Arm, budget, Method::Delete, url, &target);
        let reply = self.rest().send(&call).await?;
        match reply.status {
            200 => Ok(true),
            204 | 404 => Ok(false),
            _ => Err(reply.failure(&call)),
        }
    }

    /// Every role assignment visible from `subscription` (at, above and below it), optionally
    /// only those of one principal (`$filter=principalId eq '...'`). Follows `nextLink`.
    pub async fn list_role_assignments(
        &self,
        subscription: &str,
        principal_id: Option<&Uuid>,
    ) -> Result<Vec<RoleAssignment>, AzureError> {
        let op = Operation::ListRoleAssignments;
        let budget = subscription_budget(op, subscription)?;
        let target = match principal_id {
            Some(p) => format!("role assignments of principal {p} in subscription {subscription}"),
            None => format!("role assignments in subscription {subscription}"),
        };
        let filter = principal_id.map(|p| format!("principalId eq '{p}'"));
        let mut query = vec![("api-version", ROLE_API_VERSION)];
        if let Some(f) = &filter {
            query.push(("$filter", f));
        }
        let url = self.arm_url(
            op,
            ["subscriptions", subscription]
                .into_iter()
                .chain(AUTHZ)
                .chain(["roleAssignments"]),
            &query,
        )?;
        let call = call(op, Api::Arm, budget, Method::Get, url, &target);
        self.list_all(call, |page: ArmPage<WireRoleAssignment>| {
            (
                page.value.into_iter().map(|w| w.into_model("")).collect(),
                page.next_link,
            )
        })
        .await
    }

    /// Sends a PIM role assignment schedule request (`PUT {scope}/providers/
    /// Microsoft.Authorization/roleAssignmentScheduleRequests/{name}`, api-version 2020-10-01):
    /// `AdminAssign` makes an active assignment that Azure itself removes at `ends_at`,
    /// `AdminExtend`/`AdminUpdate` move its end, `AdminRemove` removes it. A re-PUT of the same
    /// request under the same name answers the recorded one. Azure's refusals
    /// (`AadPremiumLicenseRequired`, `ActiveDurationTooShort`, `RoleAssignmentExists`,
    /// `RoleAssignmentDoesNotExist`, `InvalidRoleAssignmentRequest`) are terminal.
    pub async fn put_schedule_request(
        &self,
        req: &ScheduleRequest,
    ) -> Result<ScheduleRequestRecord, AzureError> {
        let op = Operation::PutScheduleRequest;
        let (scope, budget) = scope_budget(op, &req.scope)?;
        if req.role_definition_id.trim().is_empty() {
            return Err(invalid(op, "role_definition_id is empty"));
        }
        if req
            .condition
            .as_deref()
            .is_some_and(|c| c.trim().is_empty())
        {
            return Err(invalid(op, "condition is empty; leave it out instead"));
        }
        let name = req.name.to_string();
        let target = format!(
            "role assignment schedule request {} ({}) at {}",
            req.name,
            req.request_type.as_str(),
            scope.as_str()
        );
        let url = self.arm_url(
            op,
            segments(&scope)
                .chain(AUTHZ)
                .chain(["roleAssignmentScheduleRequests", name.as_str()]),
            &[("api-version", PIM_API_VERSION)],
        )?;
        let mut call = call(op, Api::Arm, budget, Method::Put, url, &target);
        call.body = Some(to_json(op, &WireScheduleRequestCreate::from(req))?);
        let reply = self.rest().send(&call).await?;
        expect_json::<WireScheduleRequest>(&reply, &call, &[200, 201]).map(Into::into)
    }

    /// Every active role assignment schedule visible from the subscription (at, above, below),
    /// optionally one principal's (`$filter=principalId eq '...'`). Follows nextLink.
    pub async fn list_role_assignment_schedules(
        &self,
        subscription: &str,
        principal_id: Option<&Uuid>,
    ) -> Result<Vec<RoleAssignmentSchedule>, AzureError> {
        let op = Operation::ListRoleAssignmentSchedules;
        let budget = subscription_budget(op, subscription)?;
        let target = match principal_id {
            Some(p) => {
                format!("role assignment schedules of principal {p} in subscription {subscription}")
            }
            None => format!("role assignment schedules in subscription {subscription}"),
        };
        let filter = principal_id.map(|p| format!("principalId eq '{p}'"));
        let mut query = vec![("api-version", PIM_API_VERSION)];
        if let Some(f) = &filter {
            query.push(("$filter", f));
        }
        let url = self.arm_url(
            op,
            ["subscriptions", subscription]
                .into_iter()
                .chain(AUTHZ)
                .chain(["roleAssignmentSchedules"]),
            &query,
        )?;
        let call = call(op, Api::Arm, budget, Method::Get, url, &target);
        self.list_all(call, |page: ArmPage<WireRoleAssignmentSchedule>| {
            (
                page.value.into_iter().map(Into::into).collect(),
                page.next_link,
            )
        })
        .await
    }

    /// What the caller (the operator's own identity) may do at `scope`: one entry per role
    /// assignment of the caller at or above it (`GET {scope}/providers/Microsoft.Authorization/
    /// permissions`, api-version 2022-04-01; all pages). A subscription, resource group or
    /// resource; ABAC conditions are not part of the answer.
    pub async fn list_permissions(&self, scope: &str) -> Result<Vec<Permission>, AzureError> {
        let op = Operation::ListPermissions;
        let (scope, budget) = scope_budget(op, scope)?;
        let target = format!("permissions of the caller at {}", scope.as_str());
        let url = self.arm_url(
            op,
            segments(&scope).chain(AUTHZ).chain(["permissions"]),
            &[("api-version", ROLE_API_VERSION)],
        )?;
        let call = call(op, Api::Arm, budget, Method::Get, url, &target);
        self.list_all(call, |page: ArmPage<WirePermissionEntry>| {
            (
                page.value.into_iter().map(Into::into).collect(),
                page.next_link,
            )
        })
        .await
    }

    /// The management locks that apply at `scope` (a subscription, resource group or resource,
    /// a managed identity included): those at it and above it, as ARM answers
    /// `GET {scope}/providers/Microsoft.Authorization/locks?$filter=atScope()` (api-version
    /// 2016-09-01; all pages).
    pub async fn list_locks(
        &self,
        scope: &str,
    ) -> Result<Vec<lapse_api::lock::ManagementLock>, AzureError> {
        let op = Operation::ListLocks;
        let (scope, budget) = scope_budget(op, scope)?;
        let target = format!("management locks at {}", scope.as_str());
        let url = self.arm_url(
            op,
            segments(&scope).chain(AUTHZ).chain(["locks"]),
            &[("api-version", LOCKS_API_VERSION), ("$filter", "atScope()")],
        )?;
        let call = call(op, Api::Arm, budget, Method::Get, url, &target);
        self.list_all(call, |page: ArmPage<WireLock>| {
            (
                page.value.into_iter().map(Into::into).collect(),
                page.next_link,
            )
        })
        .await
    }

    /// Every management lock in a subscription: at it, on its resource groups and on their
    /// resources, as ARM answers `GET /subscriptions/{id}/providers/Microsoft.Authorization/locks`
    /// without a filter (api-version 2016-09-01; all pages). One read for a whole subscription,
    /// where [`list_locks`](Self::list_locks) answers for one scope.
    pub async fn list_subscription_locks(
        &self,
        subscription: &str,
    ) -> Result<Vec<lapse_api::lock::ManagementLock>, AzureError> {
        let op = Operation::ListLocks;
        let budget = subscription_budget(op, subscription)?;
        let target = format!("management locks in subscription {subscription}");
        let url = self.arm_url(
            op,
            ["subscriptions", subscription]
                .into_iter()
                .chain(AUTHZ)
                .chain(["locks"]),
            &[("api-version", LOCKS_API_VERSION)],
        )?;
        let call = call(op, Api::Arm, budget, Method::Get, url, &target);
        self.list_all(call, |page: ArmPage<WireLock>| {
            (
                page.value.into_iter().map(Into::into).collect(),
                page.next_link,
            )
        })
        .await
    }

    pub async fn get_managed_identity(
        &self,
        id: &ArmId,
    ) -> Result<Option<ManagedIdentity>, AzureError> {
        let op = Operation::GetManagedIdentity;
        let budget = identity_budget(op, id)?;
        let target = format!("managed identity {}", id.as_str());
        let url = self.arm_url(op, segments(id), &[("api-version", MSI_API_VERSION)])?;
        let call = call(op, Api::Arm, budget, Method::Get, url, &target);
        let reply = self.rest().send(&call).await?;
        match reply.status {
            404 => Ok(None),
            _ => expect_json::<WireIdentity>(&reply, &call, &[200]).map(|w| Some(w.into())),
        }
    }

    /// Every user-assigned managed identity of a subscription (the start-up sweep looks for
    /// orphaned FICs on each).
    pub async fn list_managed_identities(
        &self,
        subscription: &str,
    ) -> Result<Vec<ManagedIdentity>, AzureError> {
        let op = Operation::ListManagedIdentities;
        let budget = subscription_budget(op, subscription)?;
        let target = format!("managed identities in subscription {subscription}");
        let url = self.arm_url(
            op,
            [
                "subscriptions",
                subscription,
                "providers",
                "Microsoft.ManagedIdentity",
                "userAssignedIdentities",
            ],
            &[("api-version", MSI_API_VERSION)],
        )?;
        let call = call(op, Api::Arm, budget, Method::Get, url, &target);
        self.list_all(call, |page: ArmPage<WireIdentity>| {
            (
                page.value.into_iter().map(Into::into).collect(),
                page.next_link,
            )
        })
        .await
    }

    /// Every subscription the caller can see (`GET /subscriptions`, api-version 2022-12-01,
    /// all pages). Paid from the tenant-level budget: the call names no subscription.
    pub async fn list_subscriptions(&self) -> Result<Vec<Subscription>, AzureError> {
        let op = Operation::ListSubscriptions;
        let target = "subscriptions".to_owned();
        let url = self.arm_url(
            op,
            ["subscriptions"],
            &[("api-version", SUBSCRIPTIONS_API_VERSION)],
        )?;
        let call = call(op, Api::Arm, Budget::Tenant, Method::Get, url, &target);
        self.list_all(call, |page: ArmPage<WireSubscription>| {
            (
                page.value.into_iter().map(Into::into).collect(),
                page.next_link,
            )
        })
        .await
    }

    /// Creates or updates a FIC on a managed identity. Writes to one identity are serialised, and
    /// ARM's concurrent-write 409 is retried a few times before it is returned as retryable.
    pub async fn put_fic(&self, identity: &ArmId, fic: &FicRequest) -> Result<Fic, AzureError> {
        let op = Operation::PutFic;
        let budget = identity_budget(op, identity)?;
        check_fic_name(op, &fic.name)?;
        if fic.audiences.is_empty() {
            return Err(invalid(op, "audiences is empty"));
        }
        let target = format!("federated credential {} on {}", fic.name, identity.as_str());
        let url = self.fic_url(op, identity, &fic.name)?;
        let mut call = call(op, Api::Arm, budget, Method::Put, url, &target);
        call.body = Some(to_json(op, &WireArmFic::request(fic))?);
        let fallback_id = format!(
            "{}/federatedIdentityCredentials/{}",
            identity.as_str(),
            fic.name
        );
        let call = &call;
        self.fic_write(&fic_lock_key(identity), call, |reply| {
            expect_json::<WireArmFic>(&reply, call, &[200, 201])
                .map(|w| w.into_model(&fallback_id, &fic.name))
        })
        .await
    }

    /// Deletes a FIC from a managed identity: `Ok(true)` if it existed (200), `Ok(false)` if not
    /// (204, or 404 when the identity itself is gone).
    pub async fn delete_fic(&self, identity: &ArmId, name: &str) -> Result<bool, AzureError> {
        let op = Operation::DeleteFic;
        let budget = identity_budget(op, identity)?;
        check_fic_name(op, name)?;
        let target = format!("federated credential {name} on {}", identity.as_str());
        let url = self.fic_url(op, identity, name)?;
        let call = call(op, Api::Arm, budget, Method::Delete, url, &target);
        let call = &call;
        self.fic_write(&fic_lock_key(identity), call, |reply| match reply.status {
            200 => Ok(true),
            204 | 404 => Ok(false),
            _ => Err(reply.failure(call)),
        })
        .await
    }

    pub async fn list_fics(&self, identity: &ArmId) -> Result<Vec<Fic>, AzureError> {
        let op = Operation::ListFics;
        let budget = identity_budget(op, identity)?;
        let target = format!("federated credentials on {}", identity.as_str());
        let url = self.arm_url(
            op,
            segments(identity).chain(["federatedIdentityCredentials"]),
            &[("api-version", MSI_API_VERSION)],
        )?;
        let call = call(op, Api::Arm, budget, Method::Get, url, &target);
        self.list_all(call, |page: ArmPage<WireArmFic>| {
            (
                page.value
                    .into_iter()
                    .map(|w| w.into_model("", ""))
                    .collect(),
                page.next_link,
            )
        })
        .await
    }

    fn arm_url<'a>(
        &self,
        op: Operation,
        segments: impl IntoIterator<Item = &'a str>,
        query: &[(&str, &str)],
    ) -> Result<url::Url, AzureError> {
        build_url(&self.endpoints().arm, segments, query)
            .ok_or_else(|| invalid(op, "the ARM endpoint cannot take a path"))
    }

    fn role_assignment_url(
        &self,
        op: Operation,
        scope: &ArmId,
        name: &Uuid,
    ) -> Result<url::Url, AzureError> {
        let name = name.to_string();
        self.arm_url(
            op,
            segments(scope)
                .chain(AUTHZ)
                .chain(["roleAssignments", name.as_str()]),
            &[("api-version", ROLE_API_VERSION)],
        )
    }

    fn fic_url(&self, op: Operation, identity: &ArmId, name: &str) -> Result<url::Url, AzureError> {
        self.arm_url(
            op,
            segments(identity).chain(["federatedIdentityCredentials", name]),
            &[("api-version", MSI_API_VERSION)],
        )
    }
}

fn segments(id: &ArmId) -> impl Iterator<Item = &str> {
    id.as_str().trim_start_matches('/').split('/')
}

fn to_json<T: serde::Serialize>(op: Operation, body: &T) -> Result<Vec<u8>, AzureError> {
    serde_json::to_vec(body).map_err(|e| invalid(op, format!("request body: {e}")))
}

pub(crate) fn fic_lock_key(identity: &ArmId) -> String {
    format!("arm:{}", identity.key())
}

/// ARM's pattern for FIC names, `^[a-zA-Z0-9][a-zA-Z0-9-_]{2,119}$` (Graph's is laxer).
pub(crate) fn check_fic_name(op: Operation, name: &str) -> Result<(), AzureError> {
    let ok = (3..=120).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            op,
            format!(
                "federated credential name `{name}` must match ^[a-zA-Z0-9][a-zA-Z0-9-_]{{2,119}}$"
            ),
        ))
    }
}

pub(crate) fn subscription_budget(op: Operation, subscription: &str) -> Result<Budget, AzureError> {
    let ok = !subscription.is_empty()
        && subscription.len() <= 64
        && subscription
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-');
    if !ok {
        return Err(invalid(
            op,
            format!("subscription `{subscription}` is not a subscription ID"),
        ));
    }
    Ok(Budget::Subscription(subscription.to_ascii_lowercase()))
}

/// Parses a role assignment scope; its subscription (or the tenant) pays for the call.
fn scope_budget(op: Operation, scope: &str) -> Result<(ArmId, Budget), AzureError> {
    let id = ArmId::parse(scope).map_err(|e| invalid(op, format!("scope `{scope}`: {e}")))?;
    if !id.is_scope() {
        return Err(invalid(
            op,
            format!(
                "scope `{scope}` is not a subscription, resource group, resource or management group"
            ),
        ));
    }
    let budget = match id.subscription() {
        Some(s) => Budget::Subscription(s.to_ascii_lowercase()),
        None => Budget::Tenant,
    };
    Ok((id, budget))
}

fn identity_budget(op: Operation, id: &ArmId) -> Result<Budget, AzureError> {
    match id.subscription() {
        Some(s) if id.is_managed_identity() => Ok(Budget::Subscription(s.to_ascii_lowercase())),
        _ => Err(invalid(
            op,
            format!(
                "`{}` is not a user-assigned managed identity ID",
                id.as_str()
            ),
        )),
    }
}
