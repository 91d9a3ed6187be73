//! Azure's own logs of what the simulator served (docs/sim-azure.md, "Activity Log and sign-in
//! logs"): the ARM Activity Log (`Microsoft.Insights/eventtypes/management/values`, api-version
//! 2015-04-01: writes, deletes and actions, never reads) and Entra's sign-in log (Graph
//! `beta/auditLogs/signIns`: every token issued to a service principal or managed identity).
//! Both appear after a configurable ingestion delay, as Azure's do (minutes there), and keep
//! the latest `log_capacity` events each. For benchmarks, a subscription's Activity Log can also
//! serve any number of synthetic events, generated per page from their index, never stored.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use hyper::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::api_error::ApiError;
use crate::http::{Reply, Req, lock};
use crate::server::Shared;
use crate::tokens::AccessClaims;

/// api-version of the Activity Log list.
pub(crate) const ACTIVITY_API_VERSION: &str = "2015-04-01";
/// Most events per page (both logs), as Azure serves them.
pub(crate) const PAGE: usize = 1000;

/// One ARM Activity Log event.
#[derive(Debug, Clone)]
pub(crate) struct ActivityEvent {
    pub id: String,
    pub time: DateTime<Utc>,
    pub subscription: String,
    pub caller: String,
    pub action: String,
    pub resource: String,
    pub method: String,
    pub status: u16,
    /// The request body, kept for role assignment and federated credential writes (Azure logs
    /// `requestbody` for them).
    pub request_body: Option<String>,
}

/// One Entra sign-in of a workload identity.
#[derive(Debug, Clone)]
pub(crate) struct SignIn {
    pub id: String,
    pub time: DateTime<Utc>,
    pub principal: String,
    pub app_id: Option<String>,
    pub display_name: String,
    pub managed_identity: Option<String>,
    pub resource: String,
    pub credential_type: &'static str,
    pub federated_credential: Option<String>,
    pub federated_issuer: Option<String>,
}

/// Synthetic Activity Log events for a benchmark (`PUT /admin/logs {"syntheticEvents": …}`):
/// `count` events of `subscription` spread evenly over `from`..`to`, served with the real ones
/// in the same newest-first pages but never stored. Event `i` (0 the oldest) is a successful
/// `Microsoft.Compute/virtualMachines/write` of `vm-{i % 1000}` in resource group
/// [`SYNTHETIC_RESOURCE_GROUP`], at `from + (to - from) * i / count`, by a caller whose object
/// ID, like the event's ID, is derived from the subscription and `i` and matches nobody.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SyntheticEvents {
    /// Subscription ID.
    pub subscription: String,
    /// How many; 0 removes the subscription's synthetic events.
    pub count: u64,
    /// The oldest event's time.
    pub from: DateTime<Utc>,
    /// The newest event's time is just before this (`from` when before it).
    pub to: DateTime<Utc>,
}

/// The resource group synthetic events' resources are in.
pub const SYNTHETIC_RESOURCE_GROUP: &str = "lapse-synthetic-rg";

impl SyntheticEvents {
    fn time(&self, i: u64) -> DateTime<Utc> {
        let span = (self.to - self.from).num_microseconds().unwrap_or(0).max(0);
        let offset = i128::from(span) * i128::from(i) / i128::from(self.count.max(1));
        self.from + chrono::TimeDelta::microseconds(i64::try_from(offset).unwrap_or(0))
    }

    /// How many events are before `t` (`inclusive`: at or before it); times grow with the
    /// index, so this is a binary search.
    fn count_before(&self, t: DateTime<Utc>, inclusive: bool) -> u64 {
        let (mut lo, mut hi) = (0, self.count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let time = self.time(mid);
            if time < t || (inclusive && time == t) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    fn event(&self, i: u64) -> ActivityEvent {
        let derive = |what: &str| {
            Uuid::new_v5(
                &Uuid::NAMESPACE_URL,
                format!("lapse-synthetic:{}:{i}:{what}", self.subscription).as_bytes(),
            )
            .to_string()
        };
        ActivityEvent {
            id: derive("event"),
            time: self.time(i),
            subscription: self.subscription.clone(),
            caller: derive("caller"),
            action: "Microsoft.Compute/virtualMachines/write".to_owned(),
            resource: format!(
                "/subscriptions/{}/resourceGroups/{SYNTHETIC_RESOURCE_GROUP}/providers/Microsoft.Compute/virtualMachines/vm-{}",
                self.subscription,
                i % 1000
            ),
            method: "PUT".to_owned(),
            status: 200,
            request_body: None,
        }
    }
}

/// The synthetic events one request may see: indices `lo..hi`, served newest first.
struct SyntheticRange {
    events: SyntheticEvents,
    lo: u64,
    hi: u64,
}

impl SyntheticRange {
    fn len(&self) -> u64 {
        self.hi - self.lo
    }

    /// The index of the `k`-th newest.
    fn index(&self, k: u64) -> u64 {
        self.hi - 1 - k
    }
}

#[derive(Debug, Default)]
struct Store {
    activity: VecDeque<ActivityEvent>,
    signins: VecDeque<SignIn>,
}

/// Both logs.
#[derive(Debug)]
pub(crate) struct Logs {
    store: Mutex<Store>,
    capacity: usize,
    /// Most events per page (Azure: 1,000 for both logs).
    page: usize,
    delay: Mutex<Duration>,
    /// By lower-cased subscription.
    synthetic: Mutex<HashMap<String, SyntheticEvents>>,
}

impl Logs {
    pub(crate) fn new(capacity: usize, delay: Duration, page: usize) -> Self {
        Self {
            store: Mutex::new(Store::default()),
            capacity: capacity.max(1),
            page: page.clamp(1, PAGE),
            delay: Mutex::new(delay),
            synthetic: Mutex::new(HashMap::new()),
        }
    }

    /// Sets (or, with a count of 0, removes) a subscription's synthetic events.
    pub(crate) fn set_synthetic(&self, mut events: SyntheticEvents) {
        events.subscription = events.subscription.to_ascii_lowercase();
        events.to = events.to.max(events.from);
        let mut synthetic = lock(&self.synthetic);
        if events.count == 0 {
            synthetic.remove(&events.subscription);
        } else {
            synthetic.insert(events.subscription.clone(), events);
        }
    }

    pub(crate) fn set_delay(&self, delay: Duration) {
        *lock(&self.delay) = delay;
    }

    fn visible_before(&self) -> DateTime<Utc> {
        let delay = *lock(&self.delay);
        Utc::now() - chrono::TimeDelta::from_std(delay).unwrap_or_default()
    }

    /// Records an ARM request a caller made, if the Activity Log would show it: not a read,
    /// under a subscription, by an authenticated caller.
    pub(crate) fn record_request(
        &self,
        req: &Req,
        time: DateTime<Utc>,
        caller: Option<&str>,
        status: u16,
    ) {
        let Some(caller) = caller else { return };
        if req.method == Method::GET || req.method == Method::HEAD {
            return;
        }
        let Some(subscription) = crate::ids::subscription_of(&req.path) else {
            return;
        };
        let Some((action, resource)) = operation_of(&req.method, &req.path) else {
            return;
        };
        let lower = action.to_ascii_lowercase();
        let request_body = (lower.starts_with("microsoft.authorization/roleassignment")
            || lower.contains("federatedidentitycredentials"))
        .then(|| String::from_utf8_lossy(&req.body).into_owned());
        let event = ActivityEvent {
            id: uuid::Uuid::new_v4().to_string(),
            time,
            subscription: subscription.to_ascii_lowercase(),
            caller: caller.to_owned(),
            action,
            resource,
            method: req.method.to_string(),
            status,
            request_body,
        };
        let mut s = lock(&self.store);
        if s.activity.len() >= self.capacity {
            s.activity.pop_front();
        }
        s.activity.push_back(event);
    }

    pub(crate) fn record_signin(&self, signin: SignIn) {
        let mut s = lock(&self.store);
        if s.signins.len() >= self.capacity {
            s.signins.pop_front();
        }
        s.signins.push_back(signin);
    }
}

/// `(operationName, resourceId)` of an ARM write, delete or action:
/// `…/providers/Microsoft.Storage/storageAccounts/acct/listKeys` (POST) is
/// `Microsoft.Storage/storageAccounts/listKeys/action` on the account.
pub(crate) fn operation_of(method: &Method, path: &str) -> Option<(String, String)> {
    let path = path.trim_end_matches('/');
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let verb = match *method {
        Method::PUT | Method::PATCH => "write",
        Method::DELETE => "delete",
        Method::POST => "action",
        _ => return None,
    };
    let last_provider = segs
        .iter()
        .rposition(|s| s.eq_ignore_ascii_case("providers"));
    let (namespace, rest): (&str, &[&str]) = match last_provider {
        Some(i) if i + 1 < segs.len() => (segs[i + 1], &segs[i + 2..]),
        // No provider: a subscription or resource group (Microsoft.Resources).
        _ => ("Microsoft.Resources", &segs[..]),
    };
    // Types at the even positions of `rest`, names at the odd ones; an action is a trailing
    // odd segment.
    let (types_part, action, resource) = if verb == "action" && rest.len() % 2 == 1 {
        let action = rest[rest.len() - 1];
        let resource = &path[..path.len() - action.len() - 1];
        (&rest[..rest.len() - 1], Some(action), resource.to_owned())
    } else {
        (rest, None, path.to_owned())
    };
    let types: Vec<&str> = types_part.iter().step_by(2).copied().collect();
    if types.is_empty() {
        return None;
    }
    let op = match action {
        Some(a) => format!("{namespace}/{}/{a}/action", types.join("/")),
        None => format!("{namespace}/{}/{verb}", types.join("/")),
    };
    Some((op, resource))
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// The value of `field op '…'` in an OData filter (`eventTimestamp ge '2026-…'`), if present.
fn filter_value<'a>(filter: &'a str, field: &str, op: &str) -> Option<&'a str> {
    let lower = filter.to_ascii_lowercase();
    let needle = format!("{} {op} ", field.to_ascii_lowercase());
    let at = lower.find(&needle)? + needle.len();
    let rest = filter[at..].trim_start();
    match rest.strip_prefix('\'') {
        Some(quoted) => quoted.split('\'').next(),
        // OData's unquoted literals (Graph's DateTimeOffset: `createdDateTime ge 2026-…Z`).
        None => rest
            .split(|c: char| c.is_whitespace() || c == ')')
            .next()
            .filter(|v| !v.is_empty()),
    }
}

fn filter_time(filter: &str, field: &str, op: &str) -> Result<Option<DateTime<Utc>>, String> {
    filter_value(filter, field, op)
        .map(|v| {
            DateTime::parse_from_rfc3339(v)
                .map(|d| d.to_utc())
                .map_err(|e| format!("{field} {op} '{v}': {e}"))
        })
        .transpose()
}

fn bad_filter(message: String) -> ApiError {
    ApiError::arm(StatusCode::BAD_REQUEST, "BadRequest", message)
}

/// `GET /subscriptions/{sub}/providers/Microsoft.Insights/eventtypes/management/values`:
/// events of one subscription with `eventTimestamp` in the filter's range (a start is required,
/// as in Azure), newest first, `nextLink` with a `$skipToken`. Needs
/// `Microsoft.Insights/eventtypes/values/read` (Reader's `*/read`).
pub(crate) fn list_activity(
    shared: &Shared,
    req: &Req,
    claims: &AccessClaims,
    subscription: &str,
) -> Result<Reply, ApiError> {
    if req.method != Method::GET {
        return Err(ApiError::arm(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "The Activity Log is read-only.",
        ));
    }
    {
        let world = lock(&shared.world);
        crate::arm::authorize(
            shared,
            &world,
            claims,
            "Microsoft.Insights/eventtypes/values/read",
            &format!("/subscriptions/{subscription}"),
        )?;
    }
    let filter = req.query("$filter").unwrap_or_default();
    let from = filter_time(filter, "eventTimestamp", "ge")
        .map_err(bad_filter)?
        .ok_or_else(|| {
            bad_filter("The $filter must name a start time: eventTimestamp ge '<time>'.".to_owned())
        })?;
    let to = filter_time(filter, "eventTimestamp", "le").map_err(bad_filter)?;
    let caller = filter_value(filter, "caller", "eq").map(str::to_ascii_lowercase);
    let resource_group =
        filter_value(filter, "resourceGroupName", "eq").map(str::to_ascii_lowercase);
    // `{real}` or `{real}.{synthetic}`: how many of each this listing has served already.
    let token = req.query("$skipToken").unwrap_or_default();
    let (real_token, synthetic_token) = token.split_once('.').unwrap_or((token, ""));
    let mut real_pos: usize = real_token.parse().unwrap_or(0);
    let mut synthetic_pos: u64 = synthetic_token.parse().unwrap_or(0);
    let visible = shared.logs.visible_before();
    let sub = subscription.to_ascii_lowercase();
    // Synthetic events have random callers (no caller filter matches them) and their own group.
    let synthetic = lock(&shared.logs.synthetic)
        .get(&sub)
        .filter(|_| caller.is_none())
        .filter(|_| {
            resource_group
                .as_deref()
                .is_none_or(|g| g.eq_ignore_ascii_case(SYNTHETIC_RESOURCE_GROUP))
        })
        .cloned()
        .map(|events| {
            let upper = to.map_or(visible, |t| t.min(visible));
            let lo = events.count_before(from, false);
            let hi = events.count_before(upper, true).max(lo);
            SyntheticRange { events, lo, hi }
        });
    let (items, more) = {
        let s = lock(&shared.logs.store);
        let real: Vec<&ActivityEvent> = s
            .activity
            .iter()
            .rev()
            .filter(|e| e.subscription == sub && e.time <= visible)
            .filter(|e| e.time >= from && to.is_none_or(|t| e.time <= t))
            .filter(|e| {
                caller
                    .as_deref()
                    .is_none_or(|c| e.caller.eq_ignore_ascii_case(c))
            })
            .filter(|e| {
                resource_group.as_deref().is_none_or(|g| {
                    crate::ids::segments(&e.resource).windows(2).any(|w| {
                        w[0].eq_ignore_ascii_case("resourceGroups") && w[1].eq_ignore_ascii_case(g)
                    })
                })
            })
            .collect();
        let synthetic_len = synthetic.as_ref().map_or(0, SyntheticRange::len);
        let mut items = Vec::new();
        // Both streams are newest first: merge them, the newer first (real on a tie).
        while items.len() < shared.logs.page {
            let next_synthetic = synthetic
                .as_ref()
                .filter(|_| synthetic_pos < synthetic_len)
                .map(|r| r.events.event(r.index(synthetic_pos)));
            match (real.get(real_pos), next_synthetic) {
                (None, None) => break,
                (Some(e), Some(syn)) if syn.time <= e.time => {
                    items.push(activity_json(e, shared));
                    real_pos += 1;
                }
                (Some(e), None) => {
                    items.push(activity_json(e, shared));
                    real_pos += 1;
                }
                (_, Some(syn)) => {
                    items.push(activity_json(&syn, shared));
                    synthetic_pos += 1;
                }
            }
        }
        let more = real_pos < real.len() || synthetic_pos < synthetic_len;
        (items, more)
    };
    let next = more.then(|| {
        let mut q: Vec<(String, String)> = req
            .query
            .iter()
            .filter(|(k, _)| k != "$skipToken")
            .cloned()
            .collect();
        let token = if synthetic.is_some() {
            format!("{real_pos}.{synthetic_pos}")
        } else {
            real_pos.to_string()
        };
        q.push(("$skipToken".into(), token));
        let qs = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(q)
            .finish();
        format!("{}{}?{qs}", shared.base_url, req.path)
    });
    Ok(Reply::json(StatusCode::OK, &crate::arm::page(items, next)))
}

fn activity_json(e: &ActivityEvent, shared: &Shared) -> Value {
    let succeeded = (200..300).contains(&e.status);
    let group = {
        let segs = crate::ids::segments(&e.resource);
        segs.windows(2)
            .find(|w| w[0].eq_ignore_ascii_case("resourceGroups"))
            .map(|w| w[1].to_owned())
    };
    let provider = e.action.split('/').next().unwrap_or_default().to_owned();
    let delay = *lock(&shared.logs.delay);
    let submitted = e.time + chrono::TimeDelta::from_std(delay).unwrap_or_default();
    let mut properties = json!({"statusCode": e.status.to_string()});
    if let Some(body) = &e.request_body {
        properties["requestbody"] = Value::String(body.clone());
    }
    json!({
        "authorization": {"action": e.action, "scope": e.resource},
        "caller": e.caller,
        "claims": {
            "http://schemas.microsoft.com/identity/claims/objectidentifier": e.caller,
            "aud": shared.base_url,
        },
        "correlationId": e.id,
        "description": "",
        "eventDataId": e.id,
        "eventName": {"value": "EndRequest", "localizedValue": "End request"},
        "category": {"value": "Administrative", "localizedValue": "Administrative"},
        "httpRequest": {"method": e.method},
        "id": format!("{}/events/{}/ticks/{}", e.resource, e.id, e.time.timestamp_micros() * 10),
        "level": if succeeded { "Informational" } else { "Error" },
        "resourceGroupName": group,
        "resourceProviderName": {"value": provider, "localizedValue": provider},
        "resourceId": e.resource,
        "operationId": e.id,
        "operationName": {"value": e.action, "localizedValue": e.action},
        "properties": properties,
        "status": {
            "value": if succeeded { "Succeeded" } else { "Failed" },
            "localizedValue": if succeeded { "Succeeded" } else { "Failed" },
        },
        "subStatus": {"value": e.status.to_string(), "localizedValue": format!("HTTP Status Code: {}", e.status)},
        "eventTimestamp": ts(e.time),
        "submissionTimestamp": ts(submitted),
        "subscriptionId": e.subscription,
    })
}

/// `GET /beta/auditLogs/signIns`: workload sign-ins, newest first, filtered by
/// `signInEventTypes/any(t: t eq 'servicePrincipal'|'managedIdentity')` (without it, Graph
/// returns interactive user sign-ins only: none here), `createdDateTime ge|le`,
/// `servicePrincipalId eq`; `$top` up to 1,000; `@odata.nextLink` with a `$skiptoken`. Needs
/// the application permission `AuditLog.Read.All` (or `Directory.Read.All`).
pub(crate) fn list_signins(
    shared: &Shared,
    req: &Req,
    claims: &AccessClaims,
) -> Result<Reply, ApiError> {
    if !claims
        .roles
        .iter()
        .any(|r| r == "AuditLog.Read.All" || r == "Directory.Read.All")
    {
        return Err(ApiError::graph(
            StatusCode::FORBIDDEN,
            "Authorization_RequestDenied",
            "Insufficient privileges to complete the operation.",
        ));
    }
    let filter = req.query("$filter").unwrap_or_default();
    let lower = filter.to_ascii_lowercase();
    let wants = |kind: &str| lower.contains(&format!("t eq '{}'", kind.to_ascii_lowercase()));
    let (sp, mi) = (wants("servicePrincipal"), wants("managedIdentity"));
    let bad = |m: String| ApiError::graph(StatusCode::BAD_REQUEST, "BadRequest", m);
    let from = filter_time(filter, "createdDateTime", "ge").map_err(bad)?;
    let to = filter_time(filter, "createdDateTime", "le").map_err(bad)?;
    let principal = filter_value(filter, "servicePrincipalId", "eq").map(str::to_ascii_lowercase);
    let top: usize = req
        .query("$top")
        .and_then(|t| t.parse().ok())
        .unwrap_or(shared.logs.page)
        .clamp(1, shared.logs.page);
    let skip: usize = req
        .query("$skiptoken")
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let visible = shared.logs.visible_before();
    let items: Vec<Value> = {
        let s = lock(&shared.logs.store);
        s.signins
            .iter()
            .rev()
            .filter(|e| e.time <= visible)
            .filter(|e| if e.managed_identity.is_some() { mi } else { sp })
            .filter(|e| from.is_none_or(|f| e.time >= f) && to.is_none_or(|t| e.time <= t))
            .filter(|e| {
                principal
                    .as_deref()
                    .is_none_or(|p| e.principal.eq_ignore_ascii_case(p))
            })
            .skip(skip)
            .take(top + 1)
            .map(signin_json)
            .collect()
    };
    let more = items.len() > top;
    let items: Vec<Value> = items.into_iter().take(top).collect();
    let mut body = json!({
        "@odata.context": format!("{}/beta/$metadata#auditLogs/signIns", shared.base_url),
        "value": items,
    });
    if more {
        let qs = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(
                req.query
                    .iter()
                    .filter(|(k, _)| k != "$skiptoken")
                    .map(|(k, v)| (k.as_str(), v.as_str())),
            )
            .append_pair("$skiptoken", &(skip + top).to_string())
            .finish();
        body["@odata.nextLink"] = Value::String(format!("{}{}?{qs}", shared.base_url, req.path));
    }
    Ok(Reply::json(StatusCode::OK, &body))
}

fn signin_json(e: &SignIn) -> Value {
    let kind = if e.managed_identity.is_some() {
        "managedIdentity"
    } else {
        "servicePrincipal"
    };
    json!({
        "id": e.id,
        "createdDateTime": e.time.to_rfc3339_opts(SecondsFormat::Secs, true),
        "appId": e.app_id,
        "appDisplayName": e.display_name,
        "servicePrincipalId": e.principal,
        "servicePrincipalName": e.display_name,
        "resourceId": e.resource,
        "resourceDisplayName": e.resource,
        "signInEventTypes": [kind],
        "clientCredentialType": e.credential_type,
        "federatedCredentialId": e.federated_credential,
        "managedServiceIdentity": e.managed_identity.as_ref().map(|id| json!({
            "msiType": "userAssigned",
            "associatedResourceId": id,
            "federatedTokenId": e.federated_credential,
            "federatedTokenIssuer": e.federated_issuer,
        })),
        "status": {"errorCode": 0, "failureReason": null},
        "ipAddress": "127.0.0.1",
        "correlationId": e.id,
    })
}
