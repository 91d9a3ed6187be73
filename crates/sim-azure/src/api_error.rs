//! Error responses in the shapes Azure serves: ARM's `{"error":{"code","message"}}`, Entra's
//! OAuth error with `AADSTS` codes, and Microsoft Graph's error with `innerError`.

use hyper::StatusCode;

/// Which service shape an error response takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorShape {
    Arm,
    Graph,
}

/// An error the simulator answers with (ARM or Graph shape).
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    pub shape: ErrorShape,
    /// Seconds for `Retry-After` (429 and some 5xx).
    pub retry_after: Option<u64>,
    /// Refused by ARM's front door before any resource provider or throttling saw the request
    /// (unknown subscription, missing or unsupported api-version): answered with
    /// `x-ms-failure-cause: gateway` and no `x-ms-ratelimit-*` header.
    pub gateway: bool,
}

impl ApiError {
    pub fn arm(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.to_owned(),
            message: message.into(),
            shape: ErrorShape::Arm,
            retry_after: None,
            gateway: false,
        }
    }

    pub fn graph(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            shape: ErrorShape::Graph,
            ..Self::arm(status, code, message)
        }
    }

    pub fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self::arm(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(code: &str, message: impl Into<String>) -> Self {
        Self::arm(StatusCode::NOT_FOUND, code, message)
    }

    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// Marks the error as ARM front-door's (see `gateway`).
    pub fn at_gateway(mut self) -> Self {
        self.gateway = true;
        self
    }

    /// ARM's 404 for a subscription it does not know.
    pub fn subscription_not_found(subscription: &str) -> Self {
        Self::not_found(
            "SubscriptionNotFound",
            format!("The subscription '{subscription}' could not be found."),
        )
        .at_gateway()
    }

    /// ARM's answer for an api-version the resource type does not serve.
    pub fn invalid_api_version(given: &str, supported: &[&str]) -> Self {
        Self::bad_request(
            "InvalidApiVersionParameter",
            format!(
                "The api-version '{given}' is invalid. The supported versions are '{}'. The supported locations are ''.",
                supported.join(",")
            ),
        )
        .at_gateway()
    }

    pub fn missing_api_version() -> Self {
        Self::bad_request(
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        )
        .at_gateway()
    }

    /// ARM's 403 for a caller without the action at the scope.
    pub fn authorization_failed(object_id: &str, action: &str, scope: &str) -> Self {
        Self::arm(
            StatusCode::FORBIDDEN,
            "AuthorizationFailed",
            format!(
                "The client '{object_id}' with object id '{object_id}' does not have authorization to perform action '{action}' over scope '{scope}' or the scope is invalid. If access was recently granted, please refresh your credentials."
            ),
        )
    }

    /// ARM's 403 when the caller's only grants of a role assignment write or delete carry ABAC
    /// conditions and none holds. Azure names the role assignment's full ID as the scope
    /// (Microsoft's "Troubleshoot Azure role assignment conditions", "Symptom - Unable to
    /// assign a role").
    pub fn condition_not_fulfilled(object_id: &str, action: &str, assignment_id: &str) -> Self {
        Self::arm(
            StatusCode::FORBIDDEN,
            "AuthorizationFailed",
            format!(
                "The client '{object_id}' with object id '{object_id}' does not have authorization or an ABAC condition not fulfilled to perform action '{action}' over scope '{assignment_id}' or the scope is invalid. If access was recently granted, please refresh your credentials."
            ),
        )
    }

    pub fn invalid_body(reason: impl Into<String>) -> Self {
        Self::bad_request("InvalidRequestContent", reason)
    }

    /// The JSON body for this error. Graph's `innerError` names the request and the client's
    /// `client-request-id` (the request ID when the client sent none, as Graph does).
    pub fn body(&self, request_id: &str, client_request_id: Option<&str>) -> serde_json::Value {
        match self.shape {
            ErrorShape::Arm => serde_json::json!({
                "error": { "code": self.code, "message": self.message }
            }),
            ErrorShape::Graph => serde_json::json!({
                "error": {
                    "code": self.code,
                    "message": self.message,
                    "innerError": {
                        "date": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S").to_string(),
                        "request-id": request_id,
                        "client-request-id": client_request_id.unwrap_or(request_id),
                    }
                }
            }),
        }
    }
}
