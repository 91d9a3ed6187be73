//! The error taxonomy: every failed call becomes exactly one of throttled, retryable, terminal,
//! auth (or invalid, for input refused before anything was sent), with Azure's code and message.

use std::fmt;
use std::time::{Duration, SystemTime};

use azure_core::http::headers::{HeaderName, Headers};
use serde::Deserialize;

/// The client call that failed: the `operation` label of metrics and the first word of messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    GetRoleDefinition,
    PutRoleAssignment,
    GetRoleAssignment,
    DeleteRoleAssignment,
    ListRoleAssignments,
    /// A PIM role assignment schedule request (`roleAssignmentScheduleRequests` PUT).
    PutScheduleRequest,
    /// PIM's active role assignment schedules (`roleAssignmentSchedules` list).
    ListRoleAssignmentSchedules,
    /// The caller's own permissions at a scope (`Microsoft.Authorization/permissions`).
    ListPermissions,
    /// The management locks that apply at a scope (`Microsoft.Authorization/locks`).
    ListLocks,
    GetManagedIdentity,
    ListManagedIdentities,
    PutFic,
    DeleteFic,
    ListFics,
    GetApplication,
    GetServicePrincipal,
    PutAppFic,
    DeleteAppFic,
    ListAppFics,
    /// The operator's own principal, read from its token (no ARM call).
    GetOwnIdentity,
    /// The subscriptions the caller can see (`GET /subscriptions`).
    ListSubscriptions,
    /// App registrations with their credentials (Graph `GET /applications`).
    ListApplications,
    /// A subscription's Activity Log (`Microsoft.Insights/eventtypes/management/values`).
    ListActivityLog,
    /// Workload sign-ins (Graph `beta/auditLogs/signIns`).
    ListSignIns,
}

impl Operation {
    pub const ALL: [Operation; 24] = [
        Operation::GetRoleDefinition,
        Operation::PutRoleAssignment,
        Operation::GetRoleAssignment,
        Operation::DeleteRoleAssignment,
        Operation::ListRoleAssignments,
        Operation::PutScheduleRequest,
        Operation::ListRoleAssignmentSchedules,
        Operation::ListPermissions,
        Operation::ListLocks,
        Operation::GetManagedIdentity,
        Operation::ListManagedIdentities,
        Operation::PutFic,
        Operation::DeleteFic,
        Operation::ListFics,
        Operation::GetApplication,
        Operation::GetServicePrincipal,
        Operation::PutAppFic,
        Operation::DeleteAppFic,
        Operation::ListAppFics,
        Operation::GetOwnIdentity,
        Operation::ListSubscriptions,
        Operation::ListApplications,
        Operation::ListActivityLog,
        Operation::ListSignIns,
    ];

    /// A stable snake_case name for metric labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::GetRoleDefinition => "get_role_definition",
            Operation::PutRoleAssignment => "put_role_assignment",
            Operation::GetRoleAssignment => "get_role_assignment",
            Operation::DeleteRoleAssignment => "delete_role_assignment",
            Operation::ListRoleAssignments => "list_role_assignments",
            Operation::PutScheduleRequest => "put_schedule_request",
            Operation::ListRoleAssignmentSchedules => "list_role_assignment_schedules",
            Operation::ListPermissions => "list_permissions",
            Operation::ListLocks => "list_locks",
            Operation::GetManagedIdentity => "get_managed_identity",
            Operation::ListManagedIdentities => "list_managed_identities",
            Operation::PutFic => "put_fic",
            Operation::DeleteFic => "delete_fic",
            Operation::ListFics => "list_fics",
            Operation::GetApplication => "get_application",
            Operation::GetServicePrincipal => "get_service_principal",
            Operation::PutAppFic => "put_app_fic",
            Operation::DeleteAppFic => "delete_app_fic",
            Operation::ListAppFics => "list_app_fics",
            Operation::GetOwnIdentity => "get_own_identity",
            Operation::ListSubscriptions => "list_subscriptions",
            Operation::ListApplications => "list_applications",
            Operation::ListActivityLog => "list_activity_log",
            Operation::ListSignIns => "list_sign_ins",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the caller should do about an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Wait for the given delay, then retry.
    Throttled,
    /// Retry with backoff: transient on Azure's side or on the way there.
    Retryable,
    /// Retrying the same request will not help.
    Terminal,
    /// The operator could not get (or use) a token: retry with backoff, but alert on it.
    Auth,
}

/// Why a call to ARM or Graph failed. Messages name the operation and the object, carry Azure's
/// code and message, and never contain tokens, secrets or client assertions.
#[derive(thiserror::Error, Debug)]
pub enum AzureError {
    /// HTTP 429. `retry_after` comes from `Retry-After` (seconds or HTTP date),
    /// `retry-after-ms`/`x-ms-retry-after-ms` or `x-ms-ratelimit-*-retry-after`.
    #[error("{operation} was throttled by Azure ({code}); retry after {}s", retry_after.as_secs_f64())]
    Throttled {
        operation: Operation,
        retry_after: Duration,
        code: String,
    },
    /// 5xx, 408, timeouts, connection errors, concurrent-write conflicts and replication delays.
    /// `status` is `None` when no response arrived.
    #[error("{operation} failed, will retry ({}{code}): {message}", status_prefix(*status))]
    Retryable {
        operation: Operation,
        status: Option<u16>,
        code: String,
        message: String,
    },
    /// Azure refused the request for a reason retrying will not change.
    #[error("{operation} was refused by Azure (HTTP {status} {code}): {message}")]
    Terminal {
        operation: Operation,
        status: u16,
        code: String,
        message: String,
    },
    /// No token could be obtained, or Azure rejected the one sent (HTTP 401).
    #[error("{operation} could not authenticate: {message}")]
    Auth {
        operation: Operation,
        message: String,
    },
    /// The request was refused before anything was sent (an argument this client cannot turn
    /// into a valid request). Classed as terminal.
    #[error("{operation} was not sent: {message}")]
    Invalid {
        operation: Operation,
        message: String,
    },
}

fn status_prefix(status: Option<u16>) -> String {
    status.map(|s| format!("HTTP {s} ")).unwrap_or_default()
}

impl AzureError {
    pub fn class(&self) -> ErrorClass {
        match self {
            AzureError::Throttled { .. } => ErrorClass::Throttled,
            AzureError::Retryable { .. } => ErrorClass::Retryable,
            AzureError::Terminal { .. } | AzureError::Invalid { .. } => ErrorClass::Terminal,
            AzureError::Auth { .. } => ErrorClass::Auth,
        }
    }

    /// The `outcome` label for metrics: one of `throttled`, `retryable`, `terminal`, `auth`.
    pub fn metric_label(&self) -> &'static str {
        match self.class() {
            ErrorClass::Throttled => "throttled",
            ErrorClass::Retryable => "retryable",
            ErrorClass::Terminal => "terminal",
            ErrorClass::Auth => "auth",
        }
    }

    /// Azure's error code (`RoleAssignmentExists`, `AuthorizationFailed`, ...), or this client's
    /// own (`Timeout`, `ConnectionFailed`, ...).
    pub fn code(&self) -> Option<&str> {
        match self {
            AzureError::Throttled { code, .. }
            | AzureError::Retryable { code, .. }
            | AzureError::Terminal { code, .. } => Some(code),
            AzureError::Auth { .. } | AzureError::Invalid { .. } => None,
        }
    }

    pub fn operation(&self) -> Operation {
        match self {
            AzureError::Throttled { operation, .. }
            | AzureError::Retryable { operation, .. }
            | AzureError::Terminal { operation, .. }
            | AzureError::Auth { operation, .. }
            | AzureError::Invalid { operation, .. } => *operation,
        }
    }

    /// The HTTP status Azure answered with, when there was an answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            AzureError::Throttled { .. } => Some(429),
            AzureError::Retryable { status, .. } => *status,
            AzureError::Terminal { status, .. } => Some(*status),
            AzureError::Auth { .. } | AzureError::Invalid { .. } => None,
        }
    }

    /// How long to wait before retrying, when Azure said so.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            AzureError::Throttled { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    pub fn is_retryable(&self) -> bool {
        self.class() != ErrorClass::Terminal
    }

    /// ARM refused because a management lock at or above the object forbids the operation
    /// (`409 ScopeLocked`). Terminal for this request: only removing the lock helps, so callers
    /// report it and retry with backoff rather than at once.
    pub fn is_scope_locked(&self) -> bool {
        matches!(self, AzureError::Terminal { status: 409, code, .. } if code.eq_ignore_ascii_case(SCOPE_LOCKED))
    }

    /// The scopes a `ScopeLocked` refusal names as locked (empty otherwise).
    pub fn locked_scopes(&self) -> Vec<String> {
        match self {
            AzureError::Terminal { message, .. } if self.is_scope_locked() => {
                lapse_api::lock::locked_scopes(message)
            }
            _ => Vec::new(),
        }
    }
}

/// ARM's code for an operation a management lock forbids.
pub const SCOPE_LOCKED: &str = "ScopeLocked";

/// Error codes that ARM documents as transient even though their status is 4xx.
pub(crate) const CONCURRENT_FIC_WRITES: &str =
    "ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity";
const RETRYABLE_CODES: &[&str] = &[
    CONCURRENT_FIC_WRITES,
    // A new principal is not yet replicated to ARM's directory cache.
    "PrincipalNotFound",
    // ARM's generic "another operation on this resource is running".
    "AnotherOperationInProgress",
];

/// Used when a 429 carries no usable retry header: ARM's buckets refill within seconds.
pub(crate) const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(10);
/// A zero or past retry time would make callers spin.
const MIN_RETRY_AFTER: Duration = Duration::from_secs(1);
/// Azure messages are prose; a runaway body must not flood logs, Events or status.
const MAX_MESSAGE_LEN: usize = 1024;

/// A non-success HTTP answer, ready to be classified.
pub(crate) struct Failure<'a> {
    pub operation: Operation,
    /// What the call was about, e.g. `role assignment <name> at <scope>`.
    pub target: &'a str,
    pub status: u16,
    pub headers: &'a Headers,
    pub body: &'a [u8],
}

impl Failure<'_> {
    pub(crate) fn into_error(self, now: SystemTime) -> AzureError {
        let parsed = ParsedError::parse(self.status, self.headers, self.body);
        let operation = self.operation;
        let code = parsed.code;
        let message = format!("{}: {}", self.target, parsed.message);
        match self.status {
            429 => AzureError::Throttled {
                operation,
                retry_after: retry_after(self.headers, now).unwrap_or(DEFAULT_RETRY_AFTER),
                code,
            },
            401 => AzureError::Auth {
                operation,
                message: format!("Azure rejected the access token (HTTP 401 {code}): {message}"),
            },
            408 | 500..=599 => AzureError::Retryable {
                operation,
                status: Some(self.status),
                code,
                message,
            },
            status
                if RETRYABLE_CODES
                    .iter()
                    .any(|c| c.eq_ignore_ascii_case(&code)) =>
            {
                AzureError::Retryable {
                    operation,
                    status: Some(status),
                    code,
                    message,
                }
            }
            status => AzureError::Terminal {
                operation,
                status,
                code,
                message,
            },
        }
    }
}

/// Azure's code and message from an ARM (`{"error":{"code","message"}}`, `x-ms-error-code`) or
/// Graph (`{"error":{"code","message","innerError":{"request-id"}}}`) error response.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ParsedError {
    pub code: String,
    pub message: String,
}

#[derive(Deserialize)]
struct Envelope {
    error: Option<ErrorBody>,
    // Some resource providers answer with the error object at the top level.
    code: Option<String>,
    message: Option<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    code: Option<String>,
    message: Option<String>,
    #[serde(rename = "innerError", alias = "innererror")]
    inner_error: Option<InnerError>,
}

#[derive(Deserialize)]
struct InnerError {
    #[serde(rename = "request-id")]
    request_id: Option<String>,
}

const X_MS_ERROR_CODE: HeaderName = HeaderName::from_static("x-ms-error-code");

impl ParsedError {
    pub(crate) fn parse(status: u16, headers: &Headers, body: &[u8]) -> ParsedError {
        let envelope = serde_json::from_slice::<Envelope>(body).ok();
        let (mut code, mut message, mut request_id) = (None, None, None);
        if let Some(env) = envelope {
            match env.error {
                Some(e) => {
                    code = e.code;
                    message = e.message;
                    request_id = e.inner_error.and_then(|i| i.request_id);
                }
                None => {
                    code = env.code;
                    message = env.message;
                }
            }
        }
        let code = code
            .filter(|c| !c.trim().is_empty())
            .or_else(|| headers.get_optional_string(&X_MS_ERROR_CODE))
            .unwrap_or_else(|| default_code(status).to_owned());
        let mut message = message
            .filter(|m| !m.trim().is_empty())
            .or_else(|| {
                let text = String::from_utf8_lossy(body);
                let text = text.trim();
                (!text.is_empty()).then(|| text.to_owned())
            })
            .unwrap_or_else(|| format!("HTTP {status} with no error body"));
        if let Some(id) = request_id {
            message.push_str(&format!(" (Graph request-id {id})"));
        }
        ParsedError {
            code: clean(&code, 128),
            message: clean(&message, MAX_MESSAGE_LEN),
        }
    }
}

fn default_code(status: u16) -> &'static str {
    match status {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        408 => "RequestTimeout",
        409 => "Conflict",
        412 => "PreconditionFailed",
        429 => "TooManyRequests",
        500 => "InternalServerError",
        502 => "BadGateway",
        503 => "ServiceUnavailable",
        504 => "GatewayTimeout",
        _ => "HttpError",
    }
}

/// Drops control characters and bounds the length, on a character boundary.
fn clean(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if out.len() > max {
        let mut end = max;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        out.push('…');
    }
    out
}

/// The longest delay any of Azure's retry headers asks for, at least [`MIN_RETRY_AFTER`].
pub(crate) fn retry_after(headers: &Headers, now: SystemTime) -> Option<Duration> {
    let mut longest: Option<Duration> = None;
    let mut consider = |d: Duration| longest = Some(longest.map_or(d, |l| l.max(d)));
    for (name, value) in headers.iter() {
        let name = name.as_str();
        let value = value.as_str().trim();
        match name {
            "retry-after" => {
                if let Ok(secs) = value.parse::<u64>() {
                    consider(Duration::from_secs(secs));
                } else if let Ok(at) = httpdate::parse_http_date(value) {
                    consider(at.duration_since(now).unwrap_or_default());
                }
            }
            "retry-after-ms" | "x-ms-retry-after-ms" => {
                if let Ok(ms) = value.parse::<u64>() {
                    consider(Duration::from_millis(ms));
                }
            }
            n if n.starts_with("x-ms-ratelimit-") && n.ends_with("-retry-after") => {
                if let Ok(secs) = value.parse::<f64>()
                    && secs.is_finite()
                    && secs >= 0.0
                {
                    consider(Duration::from_secs_f64(secs.min(86_400.0)));
                }
            }
            _ => {}
        }
    }
    longest.map(|d| d.max(MIN_RETRY_AFTER))
}

/// Removes anything that looks like a JWT (tokens, client assertions) and the given secrets
/// from a message that came from a credential library.
pub(crate) fn scrub(message: &str, secrets: &[&str]) -> String {
    let mut out = message.to_owned();
    for secret in secrets.iter().filter(|s| s.len() >= 4) {
        out = out.replace(secret, "[REDACTED]");
    }
    out.split_inclusive(|c: char| c.is_whitespace() || c == '"' || c == '\'')
        .map(|word| {
            let body = word.trim_end_matches(|c: char| c.is_whitespace() || c == '"' || c == '\'');
            if looks_like_jwt(body) {
                word.replacen(body, "[REDACTED]", 1)
            } else {
                word.to_owned()
            }
        })
        .collect()
}

fn looks_like_jwt(word: &str) -> bool {
    let word = word.trim_start_matches(|c: char| !c.is_ascii_alphanumeric());
    word.starts_with("eyJ") && word.matches('.').count() >= 2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> Headers {
        let mut h = Headers::new();
        for (k, v) in pairs {
            h.insert(*k, *v);
        }
        h
    }

    fn failure(status: u16, hdrs: &Headers, body: &str) -> AzureError {
        Failure {
            operation: Operation::PutRoleAssignment,
            target: "role assignment 42 at /subscriptions/s",
            status,
            headers: hdrs,
            body: body.as_bytes(),
        }
        .into_error(SystemTime::now())
    }

    #[test]
    fn arm_error_body_gives_code_and_message() {
        let h = Headers::new();
        let e = failure(
            409,
            &h,
            r#"{"error":{"code":"RoleAssignmentExists","message":"The role assignment already exists."}}"#,
        );
        assert_eq!(e.class(), ErrorClass::Terminal);
        assert_eq!(e.code(), Some("RoleAssignmentExists"));
        let text = e.to_string();
        assert!(text.contains("put_role_assignment"), "{text}");
        assert!(
            text.contains("role assignment 42 at /subscriptions/s"),
            "{text}"
        );
        assert!(
            text.contains("The role assignment already exists."),
            "{text}"
        );
    }

    #[test]
    fn arm_codes_come_from_the_body_without_a_code_header() {
        // ARM answers carry no `x-ms-error-code`; the front door adds only
        // `x-ms-failure-cause: gateway`.
        let gateway = headers(&[("x-ms-failure-cause", "gateway")]);
        let e = failure(
            404,
            &gateway,
            r#"{"error":{"code":"SubscriptionNotFound","message":"The subscription 's' could not be found."}}"#,
        );
        assert_eq!(e.code(), Some("SubscriptionNotFound"));
        assert_eq!(e.class(), ErrorClass::Terminal);
        let e = failure(
            403,
            &Headers::new(),
            r#"{"error":{"code":"AuthorizationFailed","message":"The client 'o' with object id 'o' does not have authorization to perform action 'Microsoft.Authorization/roleAssignments/delete' over scope '/subscriptions/s/resourceGroups/gone/providers/Microsoft.Authorization/roleAssignments/42' or the scope is invalid."}}"#,
        );
        assert_eq!(e.code(), Some("AuthorizationFailed"));
        assert!(e.to_string().contains("or the scope is invalid"), "{e}");
    }

    #[test]
    fn code_falls_back_to_x_ms_error_code_then_status() {
        let h = headers(&[("x-ms-error-code", "AuthorizationFailed")]);
        assert_eq!(failure(403, &h, "").code(), Some("AuthorizationFailed"));
        assert_eq!(failure(403, &Headers::new(), "").code(), Some("Forbidden"));
        let text = failure(502, &Headers::new(), "<html>bad gateway</html>").to_string();
        assert!(text.contains("<html>bad gateway</html>"), "{text}");
    }

    #[test]
    fn graph_error_keeps_request_id() {
        let body = r#"{"error":{"code":"Request_ResourceNotFound","message":"Resource 'x' does not exist.","innerError":{"date":"2026-01-01T00:00:00","request-id":"r-1","client-request-id":"c-1"}}}"#;
        let e = failure(400, &Headers::new(), body);
        assert_eq!(e.code(), Some("Request_ResourceNotFound"));
        assert!(e.to_string().contains("request-id r-1"), "{e}");
    }

    #[test]
    fn transient_codes_are_retryable_whatever_the_status() {
        let body = |code: &str| format!(r#"{{"error":{{"code":"{code}","message":"m"}}}}"#);
        let e = failure(400, &Headers::new(), &body("PrincipalNotFound"));
        assert_eq!(e.class(), ErrorClass::Retryable);
        assert_eq!(e.status(), Some(400));
        let e = failure(409, &Headers::new(), &body(CONCURRENT_FIC_WRITES));
        assert_eq!(e.class(), ErrorClass::Retryable);
        let e = failure(
            400,
            &Headers::new(),
            &body("RoleAssignmentUpdateNotPermitted"),
        );
        assert_eq!(e.class(), ErrorClass::Terminal);
        for status in [408, 500, 503, 504] {
            assert_eq!(
                failure(status, &Headers::new(), "").class(),
                ErrorClass::Retryable
            );
        }
        assert_eq!(failure(401, &Headers::new(), "").class(), ErrorClass::Auth);
    }

    #[test]
    fn retry_after_in_seconds_ms_date_and_ratelimit_headers() {
        let now = SystemTime::now();
        let secs = |pairs| retry_after(&headers(pairs), now).map(|d| d.as_millis());
        assert_eq!(secs(&[("retry-after", "7")]), Some(7_000));
        assert_eq!(secs(&[("x-ms-retry-after-ms", "2500")]), Some(2_500));
        assert_eq!(
            secs(&[("x-ms-ratelimit-microsoft.authorization-retry-after", "3")]),
            Some(3_000)
        );
        // The longest wins; zero is raised to the floor.
        assert_eq!(
            secs(&[("retry-after", "2"), ("retry-after-ms", "4000")]),
            Some(4_000)
        );
        assert_eq!(secs(&[("retry-after", "0")]), Some(1_000));
        assert_eq!(secs(&[("retry-after", "soon")]), None);

        let at = httpdate::fmt_http_date(now + Duration::from_secs(30));
        let h = Headers::from(std::collections::HashMap::from([(
            HeaderName::from_static("retry-after"),
            at.into(),
        )]));
        let d = retry_after(&h, now).map(|d| d.as_secs());
        // HTTP dates have one-second resolution.
        assert!(matches!(d, Some(29..=30)), "{d:?}");
    }

    #[test]
    fn throttled_without_header_uses_default() {
        let e = failure(429, &Headers::new(), "");
        assert_eq!(e.retry_after(), Some(DEFAULT_RETRY_AFTER));
        assert_eq!(e.code(), Some("TooManyRequests"));
    }

    #[test]
    fn long_messages_are_bounded_and_control_characters_dropped() {
        let long = "x".repeat(5000);
        let body = format!(r#"{{"error":{{"code":"C","message":"a\nb{long}"}}}}"#);
        let e = failure(400, &Headers::new(), &body);
        let AzureError::Terminal { message, .. } = &e else {
            panic!("{e:?}")
        };
        assert!(message.len() < MAX_MESSAGE_LEN + 64, "{}", message.len());
        assert!(!message.contains('\n'));
    }

    #[test]
    fn scrub_removes_jwts_and_secrets() {
        let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln";
        let msg = format!("bad assertion \"{jwt}\" with secret s3cr3t-value, ok");
        let out = scrub(&msg, &["s3cr3t-value"]);
        assert!(!out.contains(jwt), "{out}");
        assert!(!out.contains("s3cr3t-value"), "{out}");
        assert!(out.contains("bad assertion"), "{out}");
    }

    /// PIM's refusals, in the bodies Azure answers them with: retrying the same request cannot
    /// help (a licence, a longer schedule, another request type or name is needed).
    #[test]
    fn pim_refusals_are_terminal() {
        let h = Headers::new();
        for (code, message) in [
            (
                "AadPremiumLicenseRequired",
                "The tenant needs an AAD Premium 2 license.",
            ),
            (
                "ActiveDurationTooShort",
                "The Active duration is too short. Minimum Required is 5 minutes.",
            ),
            (
                "RoleAssignmentExists",
                "The Role assignment already exists.",
            ),
            (
                "RoleAssignmentDoesNotExist",
                "The Role assignment does not exist.",
            ),
            (
                "InvalidRoleAssignmentRequest",
                "A request with name 4b1a7d2e-0c55-4d0e-9a7e-3f1f2b8c9d10 exists with other properties.",
            ),
        ] {
            let body = format!(r#"{{"error":{{"code":"{code}","message":"{message}"}}}}"#);
            let e = Failure {
                operation: Operation::PutScheduleRequest,
                target: "role assignment schedule request 4b1a7d2e at /subscriptions/s",
                status: 400,
                headers: &h,
                body: body.as_bytes(),
            }
            .into_error(SystemTime::now());
            assert_eq!(e.class(), ErrorClass::Terminal, "{code}");
            assert_eq!(e.code(), Some(code));
            assert_eq!(e.status(), Some(400));
            assert!(!e.is_retryable(), "{code}");
            let text = e.to_string();
            assert!(text.contains(message), "{text}");
            assert!(
                text.starts_with("put_schedule_request was refused by Azure (HTTP 400"),
                "{text}"
            );
        }
    }

    #[test]
    fn every_operation_has_a_distinct_label() {
        let labels: std::collections::HashSet<_> =
            Operation::ALL.iter().map(|o| o.as_str()).collect();
        assert_eq!(labels.len(), Operation::ALL.len());
    }
}
