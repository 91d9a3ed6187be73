//! Azure's own logs, read for usage evidence (docs/usage.md): the ARM Activity Log of a
//! subscription (`Microsoft.Insights/eventtypes/management/values`, api-version 2015-04-01) and
//! Entra's sign-in log of workload identities (Graph `beta/auditLogs/signIns`; the workload
//! filters exist on beta only). Both are read a page at a time (memory stays bounded by one
//! page whatever the log's size) as background calls: they wait behind every other call for a
//! slot and spend only the upper half of the read budget (`limiter.rs`), so a log backlog never
//! delays a revocation.

use azure_core::http::Method;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use uuid::Uuid;

use url::Url;

use crate::client::{AzureClient, build_url, call, invalid};
use crate::error::{AzureError, Operation};
use crate::limiter::{Budget, Priority};
use crate::models::{ArmPage, GraphPage};
use crate::rest::{Api, Call};

/// api-version of the Activity Log.
pub const ACTIVITY_LOG_API_VERSION: &str = "2015-04-01";

/// One page of a log, and where the next one starts.
#[derive(Clone, Debug, PartialEq)]
pub struct LogPage<T> {
    pub items: Vec<T>,
    /// `None` on the last page.
    pub next: Option<LogCursor>,
}

/// Where the next page of a log starts: Azure's next-page link, already moved onto the
/// configured endpoint. Opaque; hand it back to the method that returned it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogCursor {
    log: Log,
    url: Url,
}

/// Which log a cursor belongs to: a cursor of one is refused by the other (the ARM token must
/// not go to Graph, nor Graph's to ARM).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Log {
    Activity,
    SignIns,
}

/// One Activity Log event (a write, delete or action: ARM does not log reads).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActivityEvent {
    /// `eventDataId`: the key of de-duplication.
    pub id: String,
    /// `eventTimestamp`.
    pub time: DateTime<Utc>,
    /// `submissionTimestamp`: when it entered the log.
    pub submitted: Option<DateTime<Utc>>,
    /// The caller's object ID (the `objectidentifier` claim, else `caller` when a GUID).
    pub caller: Option<Uuid>,
    /// `operationName.value` (`Microsoft.Authorization/roleAssignments/write`).
    pub action: String,
    /// `resourceId`.
    pub resource_id: String,
    /// `status.value`: `Succeeded`, `Failed`, `Started`, ...
    pub status: String,
    /// `properties.requestbody`, which Azure logs for role assignment writes.
    pub request_body: Option<String>,
}

impl ActivityEvent {
    pub fn succeeded(&self) -> bool {
        self.status.eq_ignore_ascii_case("Succeeded")
    }

    /// The principal a role assignment or federated credential write gave access to, when the
    /// request body names it (`properties.principalId`).
    pub fn grantee(&self) -> Option<Uuid> {
        let body: serde_json::Value = serde_json::from_str(self.request_body.as_deref()?).ok()?;
        body.pointer("/properties/principalId")
            .and_then(serde_json::Value::as_str)
            .and_then(|p| Uuid::try_parse(p).ok())
    }
}

/// Which workload sign-ins to read (`signInEventTypes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignInKind {
    ServicePrincipal,
    ManagedIdentity,
}

impl SignInKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::ServicePrincipal => "servicePrincipal",
            Self::ManagedIdentity => "managedIdentity",
        }
    }
}

/// One token Entra issued to a workload identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignInRecord {
    pub id: String,
    /// `createdDateTime`.
    pub time: DateTime<Utc>,
    /// `servicePrincipalId`.
    pub principal_id: Option<Uuid>,
    pub app_id: Option<String>,
    /// `resourceId`: whom the token is for.
    pub resource_id: Option<String>,
    /// `clientCredentialType` (`clientSecret`, `federatedIdentityCredential`, ...).
    pub credential_type: Option<String>,
    /// `federatedCredentialId`: the federated credential exchanged, if one was.
    pub federated_credential: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Localized {
    value: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireActivityEvent {
    event_data_id: String,
    event_timestamp: DateTime<Utc>,
    submission_timestamp: Option<DateTime<Utc>>,
    caller: Option<String>,
    #[serde(default)]
    claims: serde_json::Map<String, serde_json::Value>,
    operation_name: Localized,
    resource_id: String,
    status: Localized,
    #[serde(default)]
    properties: serde_json::Map<String, serde_json::Value>,
}

const OID_CLAIM: &str = "http://schemas.microsoft.com/identity/claims/objectidentifier";

impl From<WireActivityEvent> for ActivityEvent {
    fn from(w: WireActivityEvent) -> Self {
        let caller = w
            .claims
            .get(OID_CLAIM)
            .or_else(|| w.claims.get("oid"))
            .and_then(serde_json::Value::as_str)
            .or(w.caller.as_deref())
            .and_then(|c| Uuid::try_parse(c).ok());
        Self {
            id: w.event_data_id,
            time: w.event_timestamp,
            submitted: w.submission_timestamp,
            caller,
            action: w.operation_name.value,
            resource_id: w.resource_id,
            status: w.status.value,
            request_body: w
                .properties
                .get("requestbody")
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireSignIn {
    id: String,
    created_date_time: DateTime<Utc>,
    service_principal_id: Option<String>,
    app_id: Option<String>,
    resource_id: Option<String>,
    client_credential_type: Option<String>,
    federated_credential_id: Option<String>,
}

impl From<WireSignIn> for SignInRecord {
    fn from(w: WireSignIn) -> Self {
        Self {
            id: w.id,
            time: w.created_date_time,
            principal_id: w
                .service_principal_id
                .as_deref()
                .and_then(|p| Uuid::try_parse(p).ok()),
            app_id: w.app_id,
            resource_id: w.resource_id,
            credential_type: w.client_credential_type,
            federated_credential: w.federated_credential_id,
        }
    }
}

fn odata_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

impl AzureClient {
    /// One page of the Activity Log of a subscription from `from` (to `to`, if given), newest
    /// first; `next` is the cursor of the previous page (`None` for the first). ARM requires a
    /// start. Needs `Microsoft.Insights/eventtypes/values/read`. A background call.
    pub async fn activity_log_page(
        &self,
        subscription: &str,
        from: DateTime<Utc>,
        to: Option<DateTime<Utc>>,
        next: Option<&LogCursor>,
    ) -> Result<LogPage<ActivityEvent>, AzureError> {
        let op = Operation::ListActivityLog;
        let budget = crate::arm::subscription_budget(op, subscription)?;
        let target = format!("the Activity Log of subscription {subscription}");
        let url = match next {
            Some(cursor) => cursor.url_for(Log::Activity, op)?,
            None => {
                let mut filter = format!("eventTimestamp ge '{}'", odata_time(from));
                if let Some(to) = to {
                    filter.push_str(&format!(" and eventTimestamp le '{}'", odata_time(to)));
                }
                build_url(
                    &self.endpoints().arm,
                    [
                        "subscriptions",
                        subscription,
                        "providers",
                        "Microsoft.Insights",
                        "eventtypes",
                        "management",
                        "values",
                    ],
                    &[
                        ("api-version", ACTIVITY_LOG_API_VERSION),
                        ("$filter", &filter),
                    ],
                )
                .ok_or_else(|| invalid(op, "the ARM endpoint cannot take a path"))?
            }
        };
        let call = call(op, Api::Arm, budget, Method::Get, url, &target);
        self.log_page(Log::Activity, call, |page: ArmPage<WireActivityEvent>| {
            (
                page.value.into_iter().map(Into::into).collect(),
                page.next_link,
            )
        })
        .await
    }

    /// One page (up to 1,000) of workload sign-ins of `kind` from `from`, newest first as Graph
    /// answers; `next` is the cursor of the previous page (`None` for the first). Needs the
    /// Graph application permission `AuditLog.Read.All` and Microsoft Entra ID P1 or P2. A
    /// background call.
    pub async fn sign_ins_page(
        &self,
        kind: SignInKind,
        from: DateTime<Utc>,
        next: Option<&LogCursor>,
    ) -> Result<LogPage<SignInRecord>, AzureError> {
        let op = Operation::ListSignIns;
        let target = format!("{} sign-ins", kind.as_str());
        let url = match next {
            Some(cursor) => cursor.url_for(Log::SignIns, op)?,
            None => {
                let filter = format!(
                    "signInEventTypes/any(t: t eq '{}') and createdDateTime ge {}",
                    kind.as_str(),
                    odata_time(from)
                );
                build_url(
                    &self.endpoints().graph,
                    ["beta", "auditLogs", "signIns"],
                    &[("$filter", &filter), ("$top", "1000")],
                )
                .ok_or_else(|| invalid(op, "the Graph endpoint cannot take a path"))?
            }
        };
        let call = call(op, Api::Graph, Budget::Graph, Method::Get, url, &target);
        self.log_page(Log::SignIns, call, |page: GraphPage<WireSignIn>| {
            (
                page.value.into_iter().map(Into::into).collect(),
                page.next_link,
            )
        })
        .await
    }

    /// One page of `log` through `call`, sent as a background call, with the cursor of the
    /// page after it.
    async fn log_page<T, W>(
        &self,
        log: Log,
        call: Call<'_>,
        items: impl Fn(W) -> (Vec<T>, Option<String>),
    ) -> Result<LogPage<T>, AzureError>
    where
        W: serde::de::DeserializeOwned,
    {
        let (items, next) = self.fetch_page(&background(call), items).await?;
        Ok(LogPage {
            items,
            next: next.map(|url| LogCursor { log, url }),
        })
    }
}

impl LogCursor {
    fn url_for(&self, log: Log, op: Operation) -> Result<Url, AzureError> {
        if self.log == log {
            Ok(self.url.clone())
        } else {
            Err(invalid(op, "a cursor of another log"))
        }
    }
}

fn background(mut call: Call<'_>) -> Call<'_> {
    call.priority = Priority::Background;
    call
}
