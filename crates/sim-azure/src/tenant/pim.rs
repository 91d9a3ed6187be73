//! Privileged Identity Management for Azure resources (api-version 2020-10-01): role assignment
//! schedule requests (`AdminAssign`, `AdminUpdate`, `AdminExtend`, `AdminRemove`), the schedules
//! and schedule instances they make, and the role assignments behind them, which PIM removes
//! at their end by the simulator's own clock.
//!
//! Azure's answers followed here: `ActiveDurationTooShort` "The Active duration is too short.
//! Minimum Required is 5 minutes." for a schedule shorter than five minutes, PIM refusing to
//! remove an assignment within five minutes of its start (Microsoft Learn, PIM for Azure
//! resources), `AadPremiumLicenseRequired` "The tenant needs an AAD Premium 2 license." for a
//! tenant without the licence (checked by the ARM layer, `arm/pim.rs`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use super::assignments::role_definition_id;
use super::assignments::{AssignmentLimits, principal_not_found};
use super::{Assignment, LockedOp, Tenant, arm_time};
use crate::api_error::ApiError;
use crate::ids::{self, key};

/// Azure's shortest active assignment, and how long after its start PIM refuses to remove one.
pub(crate) const MINIMUM_ACTIVE: Duration = Duration::from_secs(5 * 60);

/// The request types the simulator serves (eligibilities and self-activation are not
/// simulated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestType {
    Assign,
    Update,
    Extend,
    Remove,
}

impl RequestType {
    fn parse(s: &str) -> Option<Self> {
        [Self::Assign, Self::Update, Self::Extend, Self::Remove]
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(s))
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Assign => "AdminAssign",
            Self::Update => "AdminUpdate",
            Self::Extend => "AdminExtend",
            Self::Remove => "AdminRemove",
        }
    }
}

/// `properties` of a schedule request PUT. Unknown properties (`linkedRoleEligibilityScheduleId`,
/// ...) are ignored; `ticketInfo` is only echoed.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RequestInput {
    pub principal_id: Option<String>,
    pub role_definition_id: Option<String>,
    pub request_type: Option<String>,
    pub schedule_info: Option<ScheduleInfoInput>,
    pub justification: Option<String>,
    pub condition: Option<String>,
    pub condition_version: Option<String>,
    pub ticket_info: Option<TicketInfoInput>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ScheduleInfoInput {
    pub start_date_time: Option<String>,
    pub expiration: Option<ExpirationInput>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ExpirationInput {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub end_date_time: Option<String>,
    pub duration: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TicketInfoInput {
    pub ticket_number: Option<String>,
    pub ticket_system: Option<String>,
}

/// A schedule request as PIM recorded it.
#[derive(Debug, Clone)]
pub(crate) struct ScheduleRequest {
    pub name: String,
    pub scope: String,
    pub role_guid: String,
    pub principal_id: String,
    pub principal_type: String,
    pub request_type: RequestType,
    pub status: &'static str,
    /// Effective start: `scheduleInfo.startDateTime`, else when the request was made.
    pub start: DateTime<Utc>,
    /// `scheduleInfo.expiration` as sent (`type`, `endDateTime`, `duration`).
    pub expiration: Option<ExpirationInput>,
    pub justification: Option<String>,
    pub condition: Option<String>,
    pub condition_version: Option<String>,
    pub ticket: TicketInfoInput,
    pub requestor_id: String,
    pub created_on: DateTime<Utc>,
    pub target_schedule_id: Option<String>,
    /// What a re-PUT under the same name must repeat to be the same request.
    fingerprint: Value,
}

impl ScheduleRequest {
    pub fn id(&self) -> String {
        request_id(&self.scope, &self.name)
    }
}

/// A role assignment schedule and its one instance.
#[derive(Debug, Clone)]
pub(crate) struct Schedule {
    pub name: String,
    pub scope: String,
    pub role_guid: String,
    pub principal_id: String,
    pub principal_type: String,
    /// Full ID of the request that made or last changed it.
    pub request_id: String,
    pub start: DateTime<Utc>,
    pub end: Option<DateTime<Utc>>,
    pub condition: Option<String>,
    pub condition_version: Option<String>,
    pub created_on: DateTime<Utc>,
    pub updated_on: DateTime<Utc>,
    /// The instance's name, which is also its role assignment's name.
    pub instance_name: String,
    /// Whether its role assignment exists (a schedule starting later has none yet).
    pub active: bool,
}

impl Schedule {
    pub fn id(&self) -> String {
        format!(
            "{}/providers/Microsoft.Authorization/RoleAssignmentSchedules/{}",
            self.scope, self.name
        )
    }

    pub fn instance_id(&self) -> String {
        format!(
            "{}/providers/Microsoft.Authorization/RoleAssignmentScheduleInstances/{}",
            self.scope, self.instance_name
        )
    }

    pub fn assignment_id(&self) -> String {
        assignment_id(&self.scope, &self.instance_name)
    }

    fn same_tuple(&self, principal: &str, role: &str, scope: &str) -> bool {
        self.principal_id.eq_ignore_ascii_case(principal)
            && self.role_guid.eq_ignore_ascii_case(role)
            && ids::same(&self.scope, scope)
    }
}

/// PIM's state in the tenant: its runtime settings and stores.
#[derive(Debug)]
pub(crate) struct Pim {
    /// Whether the tenant has the Entra ID P2 licence PIM needs.
    pub licensed: bool,
    /// Shortest active schedule, and how long after its start an assignment cannot be removed.
    pub minimum: Duration,
    /// Added to the wall clock for everything PIM decides (start, end, the five minutes).
    pub clock_offset: Duration,
    requests: BTreeMap<String, ScheduleRequest>,
    schedules: BTreeMap<String, Schedule>,
}

impl Default for Pim {
    fn default() -> Self {
        Self {
            licensed: true,
            minimum: MINIMUM_ACTIVE,
            clock_offset: Duration::ZERO,
            requests: BTreeMap::new(),
            schedules: BTreeMap::new(),
        }
    }
}

impl Pim {
    /// PIM's clock: the wall clock plus the test offset.
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::from_std(self.clock_offset).unwrap_or_default()
    }

    /// Drops the schedule whose role assignment `assignment_key` (lower-cased name) was deleted
    /// by other means (a plain DELETE, its scope deleted).
    pub(super) fn forget_assignment(&mut self, assignment_key: &str) {
        self.schedules
            .retain(|_, s| !(s.active && key(&s.instance_name) == assignment_key));
    }

    /// Drops every schedule at or below a deleted scope.
    pub(super) fn forget_scope(&mut self, scope: &str) {
        self.schedules
            .retain(|_, s| !ids::is_at_or_above(scope, &s.scope));
    }

    pub fn request(&self, scope: &str, name: &str) -> Option<&ScheduleRequest> {
        self.requests
            .get(&key(name))
            .filter(|r| ids::same(&r.scope, scope))
    }

    pub fn schedule(&self, scope: &str, name: &str) -> Option<&Schedule> {
        self.schedules
            .get(&key(name))
            .filter(|s| ids::same(&s.scope, scope))
    }

    pub fn instance(&self, scope: &str, name: &str) -> Option<&Schedule> {
        self.schedules
            .values()
            .find(|s| s.instance_name.eq_ignore_ascii_case(name) && ids::same(&s.scope, scope))
    }

    /// Requests visible from `scope` (at, above and below it; at and above with `atScope()`),
    /// optionally one principal's, in name order.
    pub fn requests_at(
        &self,
        scope: &str,
        filter: &super::AssignmentFilter,
    ) -> Vec<&ScheduleRequest> {
        self.requests
            .values()
            .filter(|r| visible(&r.scope, &r.principal_id, scope, filter))
            .collect()
    }

    /// Schedules (and so instances) visible from `scope`, as [`Pim::requests_at`].
    pub fn schedules_at(&self, scope: &str, filter: &super::AssignmentFilter) -> Vec<&Schedule> {
        self.schedules
            .values()
            .filter(|s| visible(&s.scope, &s.principal_id, scope, filter))
            .collect()
    }
}

fn visible(at: &str, principal: &str, scope: &str, filter: &super::AssignmentFilter) -> bool {
    let above = ids::is_at_or_above(at, scope);
    let below = ids::is_at_or_above(scope, at);
    let in_range = if filter.at_scope {
        above
    } else {
        above || below
    };
    in_range
        && filter
            .principal_id
            .as_deref()
            .is_none_or(|p| principal.eq_ignore_ascii_case(p))
}

pub(crate) fn request_id(scope: &str, name: &str) -> String {
    format!(
        "{}/providers/Microsoft.Authorization/RoleAssignmentScheduleRequests/{name}",
        scope.trim_end_matches('/')
    )
}

fn assignment_id(scope: &str, name: &str) -> String {
    format!(
        "{}/providers/Microsoft.Authorization/roleAssignments/{name}",
        scope.trim_end_matches('/')
    )
}

/// When a schedule ends, as a request asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Never,
    At(DateTime<Utc>),
    After(chrono::Duration),
}

impl End {
    /// The end counted from `start`.
    fn from(self, start: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            End::Never => None,
            End::At(t) => Some(t),
            End::After(d) => Some(start + d),
        }
    }

    fn fingerprint(self) -> Value {
        match self {
            End::Never => json!("never"),
            End::At(t) => json!({ "at": arm_time(t) }),
            End::After(d) => json!({ "afterMs": d.num_milliseconds() }),
        }
    }
}

/// A checked request body.
#[derive(Debug)]
struct Checked {
    request_type: RequestType,
    principal_id: String,
    role_guid: String,
    start: Option<DateTime<Utc>>,
    /// `None` when no expiration was sent.
    end: Option<End>,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::invalid_body(message)
}

fn parse_time(field: &str, s: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(s.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            invalid(format!(
                "The value '{s}' of '{field}' is not a valid date and time (ISO 8601)."
            ))
        })
}

/// An ISO 8601 duration of weeks, days, hours, minutes and seconds (`PT8H`, `P1DT30M`,
/// `PT90.5S`); years and months are refused (their length depends on the date).
pub(crate) fn parse_duration(s: &str) -> Option<chrono::Duration> {
    let upper = s.trim().to_ascii_uppercase();
    let rest = upper.strip_prefix('P')?;
    let (date, time) = match rest.split_once('T') {
        Some((d, t)) if !t.is_empty() => (d, Some(t)),
        Some(_) => return None,
        None => (rest, None),
    };
    let mut millis: f64 = 0.0;
    let mut any = false;
    let mut add = |part: &str, units: &[(char, f64)]| -> Option<()> {
        let mut number = String::new();
        for c in part.chars() {
            if c.is_ascii_digit() || c == '.' || c == ',' {
                number.push(if c == ',' { '.' } else { c });
                continue;
            }
            let (_, secs) = units.iter().find(|(u, _)| *u == c)?;
            let n: f64 = number.parse().ok()?;
            millis += n * secs * 1000.0;
            number.clear();
            any = true;
        }
        number.is_empty().then_some(())
    };
    add(date, &[('W', 604_800.0), ('D', 86_400.0)])?;
    if let Some(t) = time {
        add(t, &[('H', 3_600.0), ('M', 60.0), ('S', 1.0)])?;
    }
    if !any || !millis.is_finite() || millis > 3.2e12 {
        return None;
    }
    let ms = millis.round() as i64;
    Some(chrono::Duration::milliseconds(ms))
}

fn check(input: &RequestInput) -> Result<Checked, ApiError> {
    let raw_type = input.request_type.as_deref().ok_or_else(|| {
        invalid("The request is missing the required property 'properties.requestType'.")
    })?;
    let request_type = RequestType::parse(raw_type).ok_or_else(|| {
        ApiError::bad_request(
            "UnsupportedRequestType",
            format!(
                "The request type '{raw_type}' is not supported by the simulator: it serves AdminAssign, AdminUpdate, AdminExtend and AdminRemove (eligibility and self-activation are not simulated)."
            ),
        )
    })?;
    let principal_id = input
        .principal_id
        .as_deref()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .ok_or_else(|| {
            invalid("The request is missing the required property 'properties.principalId'.")
        })?
        .to_ascii_lowercase();
    let role_ref = input
        .role_definition_id
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .ok_or_else(|| {
            invalid("The request is missing the required property 'properties.roleDefinitionId'.")
        })?;
    let role_guid = role_ref
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(role_ref)
        .to_ascii_lowercase();
    let info = input.schedule_info.clone().unwrap_or_default();
    let start = info
        .start_date_time
        .as_deref()
        .map(|s| parse_time("scheduleInfo.startDateTime", s))
        .transpose()?;
    let end = match &info.expiration {
        None => None,
        Some(e) => {
            let kind = e.kind.as_deref().unwrap_or("NoExpiration");
            if kind.eq_ignore_ascii_case("NoExpiration") {
                Some(End::Never)
            } else if kind.eq_ignore_ascii_case("AfterDateTime") {
                let at = e.end_date_time.as_deref().ok_or_else(|| {
                    invalid(
                        "The request is missing 'scheduleInfo.expiration.endDateTime', required with the expiration type AfterDateTime.",
                    )
                })?;
                let at = parse_time("scheduleInfo.expiration.endDateTime", at)?;
                Some(End::At(at))
            } else if kind.eq_ignore_ascii_case("AfterDuration") {
                let d = e.duration.as_deref().ok_or_else(|| {
                    invalid(
                        "The request is missing 'scheduleInfo.expiration.duration', required with the expiration type AfterDuration.",
                    )
                })?;
                let d = parse_duration(d).ok_or_else(|| {
                    invalid(format!(
                        "The value '{d}' of 'scheduleInfo.expiration.duration' is not an ISO 8601 duration such as PT8H."
                    ))
                })?;
                Some(End::After(d))
            } else {
                return Err(invalid(format!(
                    "The expiration type '{kind}' is not valid. Valid values are 'AfterDuration', 'AfterDateTime' and 'NoExpiration'."
                )));
            }
        }
    };
    Ok(Checked {
        request_type,
        principal_id,
        role_guid,
        start,
        end,
    })
}

fn too_short(minimum: Duration) -> ApiError {
    ApiError::bad_request(
        "ActiveDurationTooShort",
        format!(
            "The Active duration is too short. Minimum Required is {} minutes.",
            minimum.as_secs() / 60
        ),
    )
}

fn does_not_exist() -> ApiError {
    ApiError::bad_request(
        "RoleAssignmentDoesNotExist",
        "The Role assignment does not exist.",
    )
}

impl Checked {
    /// The end this request asks for, counted from `start` for a duration; `None` when it sent
    /// no expiration.
    fn end_from(&self, start: DateTime<Utc>) -> Option<Option<DateTime<Utc>>> {
        self.end.map(|e| e.from(start))
    }
}

impl Tenant {
    /// A schedule request PUT, after the caller's authorization and the licence were checked:
    /// idempotence, the principal and role, the schedule's length, then what the request type
    /// does. Answers the stored request (always 201, as Azure answers a create).
    pub fn put_schedule_request(
        &mut self,
        scope: &str,
        name: &str,
        input: RequestInput,
        caller: &str,
        instant: Instant,
        limits: AssignmentLimits,
    ) -> Result<ScheduleRequest, ApiError> {
        let now = self.pim.now();
        let checked = check(&input)?;
        let scope = scope.trim_end_matches('/').to_owned();
        let scope = if scope.is_empty() {
            "/".to_owned()
        } else {
            scope
        };
        let fingerprint = json!({
            "scope": key(&scope),
            "principalId": checked.principal_id,
            "role": checked.role_guid,
            "requestType": checked.request_type.as_str(),
            "start": checked.start.map(arm_time),
            "end": checked.end.map(End::fingerprint),
            "justification": input.justification,
            "condition": input.condition,
            "conditionVersion": input.condition_version,
        });
        // A retry of a request PIM already took gets the same answer, whatever happened since.
        if let Some(existing) = self.pim.requests.get(&key(name)) {
            return if existing.fingerprint == fingerprint {
                Ok(existing.clone())
            } else {
                Err(ApiError::bad_request(
                    "InvalidRoleAssignmentRequest",
                    format!("A request with name {name} exists with other properties."),
                ))
            };
        }
        let principal = self.principals.get(&key(&checked.principal_id));
        let replicating = principal.is_some_and(|p| {
            p.created
                .is_some_and(|c| instant.saturating_duration_since(c) < limits.replication_window)
        });
        let principal_type = match principal {
            Some(p) if !replicating => p.kind.as_str().to_owned(),
            _ => return Err(principal_not_found(&checked.principal_id, &self.tenant_id)),
        };
        let role = self
            .role_defs
            .iter()
            .find(|r| r.id.eq_ignore_ascii_case(&checked.role_guid))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "RoleDefinitionDoesNotExist",
                    format!(
                        "The specified role definition with ID '{}' does not exist.",
                        checked.role_guid
                    ),
                )
            })?
            .id
            .clone();
        let start = checked.start.unwrap_or(now);
        let end = checked.end_from(start);
        let minimum = self.pim.minimum;
        let min = chrono::Duration::from_std(minimum).unwrap_or_default();
        let request_id = request_id(&scope, name);
        let condition_version = match (&input.condition, &input.condition_version) {
            (Some(_), None) => Some("2.0".to_owned()),
            (_, v) => v.clone(),
        };
        let (status, target) = match checked.request_type {
            RequestType::Assign => {
                if let Some(Some(e)) = end
                    && e - start < min
                {
                    return Err(too_short(minimum));
                }
                let taken = self.tuples.contains_key(&super::assignments::tuple_key(
                    &checked.principal_id,
                    &role,
                    &scope,
                )) || self
                    .pim
                    .schedules
                    .values()
                    .any(|s| s.same_tuple(&checked.principal_id, &role, &scope));
                if taken {
                    return Err(ApiError::bad_request(
                        "RoleAssignmentExists",
                        "The Role assignment already exists.",
                    ));
                }
                let instance_name = uuid::Uuid::new_v4().to_string();
                self.check_locks(&assignment_id(&scope, &instance_name), LockedOp::Write)?;
                self.check_assignment_limit(&scope, limits)?;
                let schedule = Schedule {
                    name: uuid::Uuid::new_v4().to_string(),
                    scope: scope.clone(),
                    role_guid: role.clone(),
                    principal_id: checked.principal_id.clone(),
                    principal_type: principal_type.clone(),
                    request_id: request_id.clone(),
                    start,
                    end: end.flatten(),
                    condition: input.condition.clone(),
                    condition_version: condition_version.clone(),
                    created_on: now,
                    updated_on: now,
                    instance_name,
                    active: false,
                };
                let id = schedule.id();
                let schedule_key = key(&schedule.name);
                self.pim.schedules.insert(schedule_key.clone(), schedule);
                if start <= now {
                    self.materialise(&schedule_key, caller, instant);
                }
                ("Provisioned", Some(id))
            }
            RequestType::Update | RequestType::Extend => {
                let (schedule_key, schedule_start) = self
                    .pim
                    .schedules
                    .iter()
                    .find(|(_, s)| s.same_tuple(&checked.principal_id, &role, &scope))
                    .map(|(k, s)| (k.clone(), s.start))
                    .ok_or_else(does_not_exist)?;
                // A new end is counted from the schedule's start; no expiration keeps the old one.
                let new_end = checked.end_from(checked.start.unwrap_or(now));
                if let Some(Some(e)) = new_end
                    && e - schedule_start < min
                {
                    return Err(too_short(minimum));
                }
                let assignment = self
                    .pim
                    .schedules
                    .get(&schedule_key)
                    .map(Schedule::assignment_id)
                    .unwrap_or_default();
                self.check_locks(&assignment, LockedOp::Write)?;
                let Some(s) = self.pim.schedules.get_mut(&schedule_key) else {
                    return Err(does_not_exist());
                };
                if let Some(e) = new_end {
                    s.end = e;
                }
                s.updated_on = now;
                s.request_id.clone_from(&request_id);
                ("Provisioned", Some(s.id()))
            }
            RequestType::Remove => {
                let schedule = self
                    .pim
                    .schedules
                    .iter()
                    .find(|(_, s)| s.same_tuple(&checked.principal_id, &role, &scope))
                    .map(|(k, s)| (k.clone(), s.clone()));
                let plain = self
                    .tuples
                    .get(&super::assignments::tuple_key(
                        &checked.principal_id,
                        &role,
                        &scope,
                    ))
                    .cloned();
                let target_assignment = match (&schedule, &plain) {
                    (Some((_, s)), _) => s.assignment_id(),
                    (None, Some(k)) => self
                        .assignments
                        .get(k)
                        .map(|a| assignment_id(&a.scope, &a.name))
                        .unwrap_or_default(),
                    (None, None) => return Err(does_not_exist()),
                };
                if let Some((_, s)) = &schedule
                    && s.active
                    && now < s.start + min
                {
                    return Err(ApiError::bad_request(
                        "ActiveDurationTooShort",
                        format!(
                            "The role assignment cannot be removed within {} minutes of its start: it started at {}, it can be removed from {} on.",
                            minimum.as_secs() / 60,
                            arm_time(s.start),
                            arm_time(s.start + min)
                        ),
                    ));
                }
                self.check_locks(&target_assignment, LockedOp::Delete)?;
                let target = schedule.as_ref().map(|(_, s)| s.id());
                if let Some((k, s)) = schedule {
                    self.pim.schedules.remove(&k);
                    if s.active {
                        self.delete_assignment(&s.scope, &s.instance_name, instant);
                    }
                }
                if let Some(k) = plain
                    && let Some(a) = self.assignments.get(&k).cloned()
                {
                    self.delete_assignment(&a.scope, &a.name, instant);
                }
                ("Revoked", target)
            }
        };
        let stored = ScheduleRequest {
            name: name.to_ascii_lowercase(),
            scope,
            role_guid: role,
            principal_id: checked.principal_id,
            principal_type,
            request_type: checked.request_type,
            status,
            start,
            expiration: input.schedule_info.and_then(|i| i.expiration),
            justification: input.justification,
            condition: input.condition,
            condition_version,
            ticket: input.ticket_info.unwrap_or_default(),
            requestor_id: caller.to_owned(),
            created_on: now,
            target_schedule_id: target,
            fingerprint,
        };
        self.pim.requests.insert(key(name), stored.clone());
        Ok(stored)
    }

    /// Creates the role assignment of a schedule whose start has come.
    fn materialise(&mut self, schedule_key: &str, caller: &str, instant: Instant) {
        let Some(s) = self.pim.schedules.get(schedule_key).cloned() else {
            return;
        };
        let tuple = super::assignments::tuple_key(&s.principal_id, &s.role_guid, &s.scope);
        if self.tuples.contains_key(&tuple) {
            // Someone assigned the same role directly while this schedule waited: PIM cannot
            // create a second assignment for the tuple.
            tracing::warn!(schedule = %s.id(), "PIM schedule dropped at its start: the role assignment exists already");
            self.pim.schedules.remove(schedule_key);
            return;
        }
        let now = Utc::now();
        self.insert_assignment(Assignment {
            name: s.instance_name.clone(),
            scope: s.scope.clone(),
            role_definition_guid: s.role_guid.clone(),
            principal_id: s.principal_id.clone(),
            principal_type: s.principal_type.clone(),
            description: None,
            condition: s.condition.clone(),
            condition_version: s.condition_version.clone(),
            created_on: now,
            updated_on: now,
            created_by: Some(caller.to_owned()),
            updated_by: Some(caller.to_owned()),
            created: Some(instant),
        });
        if let Some(s) = self.pim.schedules.get_mut(schedule_key) {
            s.active = true;
        }
    }

    /// PIM's clock at work: schedules whose end has passed are removed with their role
    /// assignment and instance, and schedules whose start has come get their role assignment.
    /// Returns the IDs of the role assignments it removed.
    pub fn pim_sweep(&mut self, instant: Instant) -> Vec<String> {
        let now = self.pim.now();
        let ended: Vec<(String, Schedule)> = self
            .pim
            .schedules
            .iter()
            .filter(|(_, s)| s.end.is_some_and(|e| e <= now))
            .map(|(k, s)| (k.clone(), s.clone()))
            .collect();
        let mut removed = Vec::new();
        for (k, s) in ended {
            self.pim.schedules.remove(&k);
            if s.active
                && self
                    .delete_assignment(&s.scope, &s.instance_name, instant)
                    .is_some()
            {
                tracing::info!(assignment = %s.assignment_id(), "PIM schedule ended: role assignment removed");
                removed.push(s.assignment_id());
            }
        }
        let starting: Vec<(String, String)> = self
            .pim
            .schedules
            .iter()
            .filter(|(_, s)| !s.active && s.start <= now)
            .map(|(k, s)| {
                let requestor = self
                    .pim
                    .requests
                    .values()
                    .find(|r| r.id().eq_ignore_ascii_case(&s.request_id))
                    .map(|r| r.requestor_id.clone())
                    .unwrap_or_default();
                (k.clone(), requestor)
            })
            .collect();
        for (k, requestor) in starting {
            self.materialise(&k, &requestor, instant);
        }
        removed
    }

    /// `expandedProperties` of a schedule, instance or request.
    fn expanded(
        &self,
        scope: &str,
        role_guid: &str,
        principal_id: &str,
        principal_type: &str,
    ) -> Value {
        let segs = ids::segments(scope);
        let (scope_name, scope_type) = match segs.len() {
            0 => ("/".to_owned(), "tenant"),
            2 if segs[0].eq_ignore_ascii_case("subscriptions") => (
                self.subscriptions
                    .get(&key(segs[1]))
                    .map_or_else(|| segs[1].to_owned(), |s| s.display_name.clone()),
                "subscription",
            ),
            4 if segs[2].eq_ignore_ascii_case("resourceGroups") => {
                (segs[3].to_owned(), "resourcegroup")
            }
            _ => (
                segs.last().copied().unwrap_or_default().to_owned(),
                "resource",
            ),
        };
        let role = self.find_role(role_guid);
        let principal = self.principals.get(&key(principal_id));
        json!({
            "scope": {"id": scope, "displayName": scope_name, "type": scope_type},
            "roleDefinition": {
                "id": role_definition_id(scope, role_guid),
                "displayName": role.map(|r| r.name.clone()),
                "type": role.map(|r| if r.built_in { "BuiltInRole" } else { "CustomRole" }),
            },
            "principal": {
                "id": principal_id,
                "displayName": principal.map(|p| p.display_name.clone()),
                // The directory does not model e-mail addresses.
                "email": Value::Null,
                "type": principal_type,
            },
        })
    }

    /// A request in 2020-10-01's `RoleAssignmentScheduleRequest` shape.
    pub fn schedule_request_json(&self, r: &ScheduleRequest) -> Value {
        let expiration = r.expiration.clone().unwrap_or_default();
        json!({
            "properties": {
                "targetRoleAssignmentScheduleId": r.target_schedule_id,
                "targetRoleAssignmentScheduleInstanceId": Value::Null,
                "scope": r.scope,
                "roleDefinitionId": role_definition_id(&r.scope, &r.role_guid),
                "principalId": r.principal_id,
                "principalType": r.principal_type,
                "requestType": r.request_type.as_str(),
                "status": r.status,
                "approvalId": Value::Null,
                "scheduleInfo": {
                    "startDateTime": arm_time(r.start),
                    "expiration": {
                        "type": expiration.kind,
                        "endDateTime": expiration.end_date_time,
                        "duration": expiration.duration,
                    }
                },
                "ticketInfo": {
                    "ticketNumber": r.ticket.ticket_number,
                    "ticketSystem": r.ticket.ticket_system,
                },
                "justification": r.justification,
                "requestorId": r.requestor_id,
                "createdOn": arm_time(r.created_on),
                "condition": r.condition,
                "conditionVersion": r.condition_version,
                "expandedProperties": self.expanded(&r.scope, &r.role_guid, &r.principal_id, &r.principal_type),
            },
            "name": r.name,
            "id": r.id(),
            "type": "Microsoft.Authorization/RoleAssignmentScheduleRequests",
        })
    }

    /// A schedule in 2020-10-01's `RoleAssignmentSchedule` shape.
    pub fn schedule_json(&self, s: &Schedule) -> Value {
        json!({
            "properties": {
                "scope": s.scope,
                "roleDefinitionId": role_definition_id(&s.scope, &s.role_guid),
                "principalId": s.principal_id,
                "principalType": s.principal_type,
                "roleAssignmentScheduleRequestId": s.request_id,
                "linkedRoleEligibilityScheduleId": Value::Null,
                "assignmentType": "Assigned",
                "memberType": "Direct",
                "status": "Provisioned",
                "startDateTime": arm_time(s.start),
                "endDateTime": s.end.map(arm_time),
                "condition": s.condition,
                "conditionVersion": s.condition_version,
                "createdOn": arm_time(s.created_on),
                "updatedOn": arm_time(s.updated_on),
                "expandedProperties": self.expanded(&s.scope, &s.role_guid, &s.principal_id, &s.principal_type),
            },
            "name": s.name,
            "id": s.id(),
            "type": "Microsoft.Authorization/RoleAssignmentSchedules",
        })
    }

    /// A schedule's instance in 2020-10-01's `RoleAssignmentScheduleInstance` shape.
    pub fn schedule_instance_json(&self, s: &Schedule) -> Value {
        json!({
            "properties": {
                "scope": s.scope,
                "roleDefinitionId": role_definition_id(&s.scope, &s.role_guid),
                "principalId": s.principal_id,
                "principalType": s.principal_type,
                "roleAssignmentScheduleId": s.id(),
                "originRoleAssignmentId": s.assignment_id(),
                "status": "Provisioned",
                "startDateTime": arm_time(s.start),
                "endDateTime": s.end.map(arm_time),
                "linkedRoleEligibilityScheduleId": Value::Null,
                "linkedRoleEligibilityScheduleInstanceId": Value::Null,
                "assignmentType": "Assigned",
                "memberType": "Direct",
                "condition": s.condition,
                "conditionVersion": s.condition_version,
                "createdOn": arm_time(s.created_on),
                "expandedProperties": self.expanded(&s.scope, &s.role_guid, &s.principal_id, &s.principal_type),
            },
            "name": s.instance_name,
            "id": s.instance_id(),
            "type": "Microsoft.Authorization/RoleAssignmentScheduleInstances",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_8601_durations_of_weeks_to_seconds() {
        let secs = |s: &str| parse_duration(s).map(|d| d.num_milliseconds());
        assert_eq!(secs("PT8H"), Some(8 * 3_600_000));
        assert_eq!(secs("P1DT30M"), Some(86_400_000 + 1_800_000));
        assert_eq!(secs("pt5m"), Some(300_000));
        assert_eq!(secs("PT90.5S"), Some(90_500));
        assert_eq!(secs("P2W"), Some(2 * 604_800_000));
        for bad in ["", "P", "PT", "8H", "P1Y", "P1M", "PT1X", "PT5"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn request_types_parse_case_insensitively_and_others_are_refused() {
        assert_eq!(RequestType::parse("adminassign"), Some(RequestType::Assign));
        assert_eq!(RequestType::parse("AdminRemove"), Some(RequestType::Remove));
        let input = RequestInput {
            request_type: Some("SelfActivate".into()),
            ..RequestInput::default()
        };
        assert_eq!(check(&input).unwrap_err().code, "UnsupportedRequestType");
    }
}
