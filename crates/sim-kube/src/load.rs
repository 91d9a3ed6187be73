//! What kube-apiserver does under load, and how it says so: at most
//! `--max-requests-inflight` (400) read-only and `--max-mutating-requests-inflight` (200)
//! mutating requests at once, every request beyond answered 429 `TooManyRequests` with
//! `Retry-After: 1` (long-running requests, watches, are not counted); and
//! `apiserver_request_total{verb,resource,subresource,code}` on `/metrics`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use hyper::Method;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::status::ApiError;

/// What a request is, in apiserver_request_total's terms.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct RequestKind {
    /// `GET`, `LIST`, `WATCH`, `POST`, `PUT`, `PATCH`, `APPLY`, `DELETE`, `DELETECOLLECTION`.
    pub verb: &'static str,
    /// The resource's plural, empty for a non-resource URL.
    pub resource: String,
    pub subresource: String,
}

impl RequestKind {
    /// Classifies a request from its method, path, query and content type.
    pub fn of(
        method: &Method,
        path: &str,
        query: &HashMap<String, String>,
        content_type: &str,
    ) -> Self {
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        // /api/v1/... or /apis/{group}/{version}/..., then namespaces/{ns}/ when namespaced.
        let rest: &[&str] = match segs.as_slice() {
            ["api", _, rest @ ..] => rest,
            ["apis", _, _, rest @ ..] => rest,
            _ => &[],
        };
        let rest = match rest {
            ["namespaces", _, more @ ..] if !more.is_empty() => more,
            other => other,
        };
        let (resource, name, subresource) = match rest {
            [] => ("", None, ""),
            [r] => (*r, None, ""),
            [r, n] => (*r, Some(*n), ""),
            [r, n, s, ..] => (*r, Some(*n), *s),
        };
        let flag = |k: &str| query.get(k).is_some_and(|v| v == "true" || v == "1");
        let verb = match *method {
            Method::GET if flag("watch") => "WATCH",
            Method::GET if name.is_none() && !resource.is_empty() => "LIST",
            Method::GET => "GET",
            Method::POST => "POST",
            Method::PUT => "PUT",
            Method::PATCH if content_type.starts_with("application/apply-patch") => "APPLY",
            Method::PATCH => "PATCH",
            Method::DELETE if name.is_none() => "DELETECOLLECTION",
            Method::DELETE => "DELETE",
            _ => "OTHER",
        };
        Self {
            verb,
            resource: resource.to_owned(),
            subresource: subresource.to_owned(),
        }
    }

    /// Watches run for minutes: kube-apiserver's in-flight limits leave them out.
    fn long_running(&self) -> bool {
        self.verb == "WATCH"
    }

    fn mutating(&self) -> bool {
        !matches!(self.verb, "GET" | "LIST" | "WATCH")
    }
}

/// The in-flight limits and the request counters.
#[derive(Debug)]
pub(crate) struct Load {
    read_only: std::sync::Arc<Semaphore>,
    mutating: std::sync::Arc<Semaphore>,
    counts: Mutex<BTreeMap<(RequestKind, u16), u64>>,
}

impl Load {
    pub fn new(max_read_only: usize, max_mutating: usize) -> Self {
        Self {
            read_only: std::sync::Arc::new(Semaphore::new(max_read_only)),
            mutating: std::sync::Arc::new(Semaphore::new(max_mutating)),
            counts: Mutex::new(BTreeMap::new()),
        }
    }

    /// A slot for the request, held until its answer is written; `Err` is the 429 to answer.
    /// `None` for requests no limit applies to.
    pub fn admit(&self, kind: &RequestKind) -> Result<Option<OwnedSemaphorePermit>, ApiError> {
        if kind.long_running() {
            return Ok(None);
        }
        let pool = if kind.mutating() {
            &self.mutating
        } else {
            &self.read_only
        };
        match pool.clone().try_acquire_owned() {
            Ok(permit) => Ok(Some(permit)),
            Err(_) => Err(ApiError::too_many_requests(1)),
        }
    }

    pub fn record(&self, kind: RequestKind, code: u16) {
        *self
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((kind, code))
            .or_default() += 1;
    }

    /// The Prometheus text exposition of `apiserver_request_total`.
    pub fn exposition(&self) -> String {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::from(
            "# HELP apiserver_request_total Counter of apiserver requests broken out for each verb, dry run value, group, version, resource, scope, component, and HTTP response code.\n\
             # TYPE apiserver_request_total counter\n",
        );
        for ((kind, code), n) in counts.iter() {
            out.push_str(&format!(
                "apiserver_request_total{{code=\"{code}\",resource=\"{}\",subresource=\"{}\",verb=\"{}\"}} {n}\n",
                kind.resource, kind.subresource, kind.verb
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(method: Method, path: &str, query: &[(&str, &str)], ct: &str) -> RequestKind {
        let q = query
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        RequestKind::of(&method, path, &q, ct)
    }

    #[test]
    fn requests_are_named_as_apiserver_request_total_names_them() {
        let k = kind(
            Method::PATCH,
            "/apis/lapse.dev/v1alpha1/namespaces/a/accessgrants/g/status",
            &[],
            "application/apply-patch+yaml",
        );
        assert_eq!(
            (k.verb, k.resource.as_str(), k.subresource.as_str()),
            ("APPLY", "accessgrants", "status")
        );
        let k = kind(
            Method::GET,
            "/apis/lapse.dev/v1alpha1/accessgrants",
            &[("watch", "true")],
            "",
        );
        assert_eq!((k.verb, k.resource.as_str()), ("WATCH", "accessgrants"));
        let k = kind(Method::GET, "/api/v1/namespaces", &[], "");
        assert_eq!((k.verb, k.resource.as_str()), ("LIST", "namespaces"));
        let k = kind(Method::GET, "/api/v1/namespaces/demo", &[], "");
        assert_eq!((k.verb, k.resource.as_str()), ("GET", "namespaces"));
        let k = kind(Method::POST, "/api/v1/namespaces/demo/configmaps", &[], "");
        assert_eq!((k.verb, k.resource.as_str()), ("POST", "configmaps"));
        let k = kind(
            Method::PATCH,
            "/api/v1/namespaces/demo/configmaps/c",
            &[],
            "application/json-patch+json",
        );
        assert_eq!(k.verb, "PATCH");
        let k = kind(Method::GET, "/version", &[], "");
        assert_eq!((k.verb, k.resource.as_str()), ("GET", ""));
    }

    #[test]
    fn beyond_the_limit_a_request_is_answered_429_and_a_finished_one_frees_its_slot() {
        let load = Load::new(1, 1);
        let write = kind(Method::POST, "/api/v1/namespaces/demo/configmaps", &[], "");
        let read = kind(Method::GET, "/api/v1/namespaces/demo/configmaps", &[], "");
        let held = load.admit(&write);
        assert!(matches!(held, Ok(Some(_))));
        let refused = load
            .admit(&write)
            .expect_err("a second write is over the limit");
        assert_eq!(refused.code, 429);
        // Reads have their own limit; watches none.
        assert!(matches!(load.admit(&read), Ok(Some(_))));
        let watch = kind(Method::GET, "/api/v1/configmaps", &[("watch", "1")], "");
        assert!(matches!(load.admit(&watch), Ok(None)));
        drop(held);
        assert!(matches!(load.admit(&write), Ok(Some(_))));
    }

    #[test]
    fn counts_are_exposed_by_verb_resource_and_code() {
        let load = Load::new(1, 1);
        let k = kind(
            Method::PATCH,
            "/apis/lapse.dev/v1alpha1/namespaces/a/accessgrants/g",
            &[],
            "application/json-patch+json",
        );
        load.record(k.clone(), 422);
        load.record(k, 422);
        assert!(load.exposition().contains(
            "apiserver_request_total{code=\"422\",resource=\"accessgrants\",subresource=\"\",verb=\"PATCH\"} 2"
        ));
    }
}
