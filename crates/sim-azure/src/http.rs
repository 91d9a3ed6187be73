//! Request and reply values the handlers work with, independent of hyper's body types.

use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use hyper::{HeaderMap, Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::api_error::ApiError;

/// Locks a mutex, recovering the data if a panicking thread poisoned it (the simulator's
/// state stays usable for the remaining requests of a test).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A buffered request.
#[derive(Debug)]
pub(crate) struct Req {
    pub method: Method,
    pub path: String,
    pub raw_query: Option<String>,
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Req {
    /// A query parameter by case-insensitive name.
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The JSON body, or ARM's 400 for an unreadable one.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            ApiError::invalid_body(format!(
                "The request content was invalid and could not be deserialized: '{e}'."
            ))
        })
    }

    /// The form-encoded body as pairs.
    pub fn form(&self) -> Vec<(String, String)> {
        url::form_urlencoded::parse(&self.body)
            .into_owned()
            .collect()
    }

    /// Checks `api-version` against the versions a resource type serves.
    pub fn require_api_version(&self, supported: &[&str]) -> Result<(), ApiError> {
        match self.query("api-version") {
            None => Err(ApiError::missing_api_version()),
            Some(v) if supported.contains(&v) => Ok(()),
            Some(v) => Err(ApiError::invalid_api_version(v, supported)),
        }
    }
}

/// A reply before the common headers are added.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: StatusCode,
    pub headers: Vec<(String, String)>,
    pub body: Option<Bytes>,
    pub content_type: &'static str,
    pub error_code: Option<String>,
    /// An ARM front-door refusal (`ApiError::gateway`): no throttling token is spent on it.
    pub gateway: bool,
}

impl Reply {
    pub fn json(status: StatusCode, body: &Value) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Some(Bytes::from(body.to_string())),
            content_type: "application/json; charset=utf-8",
            error_code: None,
            gateway: false,
        }
    }

    pub fn empty(status: StatusCode) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: None,
            content_type: "application/json; charset=utf-8",
            error_code: None,
            gateway: false,
        }
    }

    /// An error answer. ARM and Graph carry the code in the body only: neither sends the
    /// `x-ms-error-code` header the storage data plane uses.
    pub fn error(err: &ApiError, request_id: &str) -> Self {
        Self::error_for(err, request_id, None)
    }

    /// An error answer naming the client's `client-request-id` (Graph's `innerError`).
    pub fn error_for(err: &ApiError, request_id: &str, client_request_id: Option<&str>) -> Self {
        let mut reply = Self::json(err.status, &err.body(request_id, client_request_id));
        reply.error_code = Some(err.code.clone());
        if err.gateway {
            reply.gateway = true;
            reply
                .headers
                .push(("x-ms-failure-cause".to_owned(), "gateway".to_owned()));
        }
        if let Some(secs) = err.retry_after {
            reply
                .headers
                .push(("retry-after".to_owned(), secs.to_string()));
        }
        reply
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }
}
