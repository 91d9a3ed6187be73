//! `AzureClient`: construction, shared state (limiter, role definition cache, per-identity FIC
//! locks) and the helpers the ARM and Graph calls share.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use azure_core::http::{HttpClient, Method};
use serde::de::DeserializeOwned;
use tokio::time::Instant;
use url::Url;

use crate::config::{AzureConfig, ConfigError, Endpoints};
use crate::error::{AzureError, CONCURRENT_FIC_WRITES, Operation};
use crate::limiter::{Budget, CallKind, LimiterSnapshot, Priority};
use crate::models::RoleDefinition;
use crate::rest::{Api, Call, Reply, Rest};

/// Role definitions change rarely (custom roles can be renamed): found ones are trusted this long.
pub(crate) const ROLE_CACHE_TTL: Duration = Duration::from_secs(600);
/// An unknown role name is asked again after this long, so a new custom role is found soon.
pub(crate) const ROLE_MISS_TTL: Duration = Duration::from_secs(60);
/// Attempts after a `ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity` 409
/// before it is surfaced, and the first backoff (doubling).
pub(crate) const FIC_CONFLICT_RETRIES: u32 = 3;
pub(crate) const FIC_CONFLICT_BACKOFF: Duration = Duration::from_secs(1);
/// A bound on `nextLink` chains, should a server ever loop.
const MAX_PAGES: usize = 1000;

/// The operator's typed Azure client. Cheap to clone; clones share the limiter, caches and locks.
#[derive(Clone)]
pub struct AzureClient {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) rest: Rest,
    pub(crate) role_cache: RoleCache,
    fic_locks: KeyedLocks,
}

impl std::fmt::Debug for AzureClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureClient")
            .field("endpoints", &self.inner.rest.endpoints)
            .finish_non_exhaustive()
    }
}

impl AzureClient {
    /// Builds the client: checks the configuration, loads the CA bundle and sets up the
    /// credential. Makes no network call (the first token is fetched by the first request).
    pub fn new(cfg: AzureConfig) -> Result<Self, ConfigError> {
        let http = crate::rest::http_client(&cfg)?;
        Self::with_transport(cfg, http)
    }

    /// Like [`AzureClient::new`] but sends every request (token requests included) through
    /// `transport`; `cfg.ca_bundle` is then the transport's business and is ignored.
    pub fn with_transport(
        cfg: AzureConfig,
        transport: Arc<dyn HttpClient>,
    ) -> Result<Self, ConfigError> {
        let rest = Rest::new(&cfg, transport)?;
        Ok(AzureClient {
            inner: Arc::new(Inner {
                rest,
                role_cache: RoleCache::default(),
                fic_locks: KeyedLocks::default(),
            }),
        })
    }

    pub fn endpoints(&self) -> &Endpoints {
        &self.inner.rest.endpoints
    }

    /// The principal (object ID) the operator acts as in Azure, from its own token.
    pub async fn own_principal(&self) -> Result<uuid::Uuid, AzureError> {
        self.inner.rest.own_principal().await
    }

    /// Throttle counters for metrics.
    /// Every exchange with Azure since this client was built, by operation and outcome.
    pub fn call_counts(&self) -> Vec<crate::calls::CallCount> {
        self.inner.rest.calls.snapshot()
    }

    /// The budget this client paces itself to.
    pub fn limits(&self) -> &crate::LimitsConfig {
        self.inner.rest.limiter.config()
    }

    pub fn limiter_snapshot(&self) -> LimiterSnapshot {
        self.inner.rest.limiter.snapshot()
    }

    pub(crate) fn rest(&self) -> &Rest {
        &self.inner.rest
    }

    /// Sends a FIC write and hands the answer to `handle`, holding the identity's lock only
    /// while the request is in flight (budget and slot are taken first, so a delete is never
    /// stuck behind a create that waits for write budget). ARM's concurrent-write 409 is
    /// retried with backoff (someone outside this client may be writing too) before it is
    /// returned as retryable.
    ///
    /// `handle` must not call Azure: a follow-up call made under the lock could wait for a slot
    /// held by a caller waiting for this lock.
    pub(crate) async fn fic_write<T, F>(
        &self,
        key: &str,
        call: &Call<'_>,
        handle: F,
    ) -> Result<T, AzureError>
    where
        F: Fn(Reply) -> Result<T, AzureError>,
    {
        let mut backoff = FIC_CONFLICT_BACKOFF;
        let mut retries = 0;
        loop {
            let permit = self.rest().acquire(call).await;
            let guard = self.inner.fic_locks.lock(key.to_owned()).await;
            let result = match self.rest().send_acquired(call, permit).await {
                Ok(reply) => handle(reply),
                Err(e) => Err(e),
            };
            drop(guard);
            match result {
                Err(e)
                    if e.code() == Some(CONCURRENT_FIC_WRITES)
                        && retries < FIC_CONFLICT_RETRIES =>
                {
                    tracing::debug!(error = %e, retries, "concurrent FIC write; backing off");
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                    retries += 1;
                }
                result => return result,
            }
        }
    }

    /// Fetches every page of a list, following `nextLink` (ARM) or `@odata.nextLink` (Graph).
    /// Each page is a read against the call's budget.
    pub(crate) async fn list_all<T, W, P>(
        &self,
        mut call: Call<'_>,
        page: P,
    ) -> Result<Vec<T>, AzureError>
    where
        W: DeserializeOwned,
        P: Fn(W) -> (Vec<T>, Option<String>),
    {
        let mut out = Vec::new();
        for _ in 0..MAX_PAGES {
            let (items, next) = self.fetch_page(&call, &page).await?;
            out.extend(items);
            match next {
                None => return Ok(out),
                Some(url) => call.url = url,
            }
        }
        Err(AzureError::Retryable {
            operation: call.operation,
            status: Some(200),
            code: "InvalidResponse".to_owned(),
            message: format!("{}: more than {MAX_PAGES} pages", call.target),
        })
    }

    /// Fetches one page of a list and the URL of the next, if any. Links are re-rooted on the
    /// configured endpoint so the token never goes to a host the operator was not configured
    /// for; a link to the page itself is refused (a server looping).
    pub(crate) async fn fetch_page<T, W, P>(
        &self,
        call: &Call<'_>,
        page: P,
    ) -> Result<(Vec<T>, Option<Url>), AzureError>
    where
        W: DeserializeOwned,
        P: Fn(W) -> (Vec<T>, Option<String>),
    {
        let base = match call.api {
            Api::Arm => &self.endpoints().arm,
            Api::Graph => &self.endpoints().graph,
        };
        let reply = self.rest().send(call).await?;
        if reply.status != 200 {
            return Err(reply.failure(call));
        }
        let (items, next) = page(reply.json::<W>(call)?);
        let Some(next) = next.filter(|n| !n.is_empty()) else {
            return Ok((items, None));
        };
        let bad = |why: &str| AzureError::Retryable {
            operation: call.operation,
            status: Some(200),
            code: "InvalidResponse".to_owned(),
            message: format!("{}: {why}", call.target),
        };
        let url = rebase(base, &call.url, &next).ok_or_else(|| bad("unusable next page link"))?;
        if url == call.url {
            return Err(bad("next page link points to itself"));
        }
        Ok((items, Some(url)))
    }
}

/// Resolves a next-page link against the current URL and moves it onto `base`'s origin.
fn rebase(base: &Url, current: &Url, link: &str) -> Option<Url> {
    let mut url = current.join(link).ok()?;
    if url.origin() != base.origin() {
        url.set_scheme(base.scheme()).ok()?;
        url.set_host(base.host_str()).ok()?;
        url.set_port(base.port()).ok()?;
    }
    Some(url)
}

/// `base` with `segments` appended as path segments (percent-encoded: a segment can never
/// introduce a query or another path level) and `query` pairs.
pub(crate) fn build_url<'a>(
    base: &Url,
    segments: impl IntoIterator<Item = &'a str>,
    query: &[(&str, &str)],
) -> Option<Url> {
    let mut url = base.clone();
    {
        let mut path = url.path_segments_mut().ok()?;
        path.pop_if_empty();
        path.extend(segments);
    }
    if !query.is_empty() {
        let pairs: Vec<String> = query
            .iter()
            .map(|(k, v)| format!("{}={}", encode_query(k), encode_query(v)))
            .collect();
        url.set_query(Some(&pairs.join("&")));
    }
    Some(url)
}

/// Percent-encodes a query key or value the way Azure's SDKs do: spaces as `%20` (not `+`), and
/// `$filter`/`$select` keys left readable.
fn encode_query(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' => out.push(b as char),
            b'-' | b'.' | b'_' | b'~' | b'$' | b'\'' | b'(' | b')' | b',' | b':' | b'@' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

pub(crate) fn invalid(operation: Operation, message: impl Into<String>) -> AzureError {
    AzureError::Invalid {
        operation,
        message: message.into(),
    }
}

/// A call with the method's usual budget kind.
pub(crate) fn call<'a>(
    operation: Operation,
    api: Api,
    budget: Budget,
    method: Method,
    url: Url,
    target: &'a str,
) -> Call<'a> {
    let kind = match method {
        Method::Get | Method::Head => CallKind::Read,
        Method::Delete => CallKind::Delete,
        _ => CallKind::Write,
    };
    Call {
        operation,
        api,
        budget,
        kind,
        priority: Priority::Foreground,
        method,
        url,
        body: None,
        target,
    }
}

/// Parses a 200/201 answer, or turns anything else into the classified error.
pub(crate) fn expect_json<T: DeserializeOwned>(
    reply: &Reply,
    call: &Call<'_>,
    ok: &[u16],
) -> Result<T, AzureError> {
    if ok.contains(&reply.status) {
        reply.json(call)
    } else {
        Err(reply.failure(call))
    }
}

// ---- role definition cache ----

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum RoleKey {
    /// (lowercase subscription, lowercase trimmed name)
    Name(String, String),
    Guid(String, uuid::Uuid),
}

#[derive(Clone, Debug)]
struct RoleEntry {
    value: Option<RoleDefinition>,
    fetched: Instant,
}

impl RoleEntry {
    fn fresh(&self, now: Instant) -> bool {
        let ttl = if self.value.is_some() {
            ROLE_CACHE_TTL
        } else {
            ROLE_MISS_TTL
        };
        now.saturating_duration_since(self.fetched) < ttl
    }
}

type RoleSlot = Arc<tokio::sync::Mutex<Option<RoleEntry>>>;

/// Role definitions by (subscription, name) and (subscription, GUID). Concurrent lookups of one
/// key wait for a single ARM read (a burst of grants for `Reader` costs one call, not hundreds).
#[derive(Default)]
pub(crate) struct RoleCache {
    slots: Mutex<HashMap<RoleKey, RoleSlot>>,
}

impl RoleCache {
    fn slot(&self, key: &RoleKey) -> RoleSlot {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.entry(key.clone()).or_default().clone()
    }

    /// The cached value for `key`, or the result of `fetch` (cached unless it failed).
    pub(crate) async fn get_or_fetch<F, Fut>(
        &self,
        key: RoleKey,
        fetch: F,
    ) -> Result<Option<RoleDefinition>, AzureError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<RoleDefinition>, AzureError>>,
    {
        let slot = self.slot(&key);
        let mut entry = slot.lock().await;
        if let Some(e) = entry.as_ref().filter(|e| e.fresh(Instant::now())) {
            return Ok(e.value.clone());
        }
        let value = fetch().await?;
        *entry = Some(RoleEntry {
            value: value.clone(),
            fetched: Instant::now(),
        });
        drop(entry);
        if let (RoleKey::Name(sub, _), Some(def)) = (&key, &value) {
            self.remember(RoleKey::Guid(sub.clone(), def.guid), def.clone());
        }
        Ok(value)
    }

    /// Stores a definition found another way, unless a lookup of that key is running.
    fn remember(&self, key: RoleKey, def: RoleDefinition) {
        let slot = self.slot(&key);
        if let Ok(mut entry) = slot.try_lock() {
            *entry = Some(RoleEntry {
                value: Some(def),
                fetched: Instant::now(),
            });
        }
    }
}

// ---- per-key async locks ----

type KeyedLock = Arc<tokio::sync::Mutex<()>>;

/// Async locks by key, created on demand and dropped when nobody holds or waits for them.
#[derive(Default)]
pub(crate) struct KeyedLocks {
    locks: Arc<Mutex<HashMap<String, KeyedLock>>>,
}

pub(crate) struct KeyedGuard {
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
    lock: KeyedLock,
    key: String,
    locks: Arc<Mutex<HashMap<String, KeyedLock>>>,
}

impl KeyedLocks {
    pub(crate) async fn lock(&self, key: String) -> KeyedGuard {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.entry(key.clone()).or_default().clone()
        };
        let guard = lock.clone().lock_owned().await;
        KeyedGuard {
            guard: Some(guard),
            lock,
            key,
            locks: self.locks.clone(),
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.locks.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl Drop for KeyedGuard {
    fn drop(&mut self) {
        self.guard.take();
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        // Clones are only made under this map lock, so the count cannot grow while we look:
        // two references (the map's and ours) mean nobody else holds or waits for the lock.
        if Arc::strong_count(&self.lock) == 2 {
            locks.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_url_encodes_segments_and_keeps_base_path() {
        let base = Url::parse("https://host:8443/arm/").unwrap();
        let url = build_url(
            &base,
            ["subscriptions", "a b?c#d"],
            &[("api-version", "1"), ("$filter", "roleName eq 'A&B=C'")],
        )
        .unwrap();
        assert_eq!(
            url.as_str(),
            "https://host:8443/arm/subscriptions/a%20b%3Fc%23d?api-version=1&$filter=roleName%20eq%20%27A%26B%3DC%27"
        );
    }

    #[test]
    fn next_links_are_kept_on_the_configured_endpoint() {
        let base = Url::parse("https://127.0.0.1:8443/").unwrap();
        let current = Url::parse("https://127.0.0.1:8443/x?api-version=1").unwrap();
        let url = rebase(&base, &current, "https://evil.example/x?$skipToken=2").unwrap();
        assert_eq!(url.as_str(), "https://127.0.0.1:8443/x?$skipToken=2");
        let url = rebase(&base, &current, "/x?page=3").unwrap();
        assert_eq!(url.as_str(), "https://127.0.0.1:8443/x?page=3");
    }

    #[tokio::test(start_paused = true)]
    async fn keyed_locks_serialise_per_key_and_clean_up() {
        let locks = KeyedLocks::default();
        let a = locks.lock("a".into()).await;
        // Another key is independent.
        let b = locks.lock("b".into()).await;
        assert!(
            tokio::time::timeout(Duration::from_millis(20), locks.lock("a".into()))
                .await
                .is_err()
        );
        drop(a);
        drop(b);
        let again = locks.lock("a".into()).await;
        drop(again);
        assert_eq!(locks.len(), 0);
    }
}
