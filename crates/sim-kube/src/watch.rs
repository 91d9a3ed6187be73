//! Watch: ADDED/MODIFIED/DELETED from a resourceVersion, bookmarks, 410 Gone for compacted
//! history, `timeoutSeconds`, and streaming lists (`sendInitialEvents=true`).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::Response;
use hyper::body::Frame;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use crate::api::{Target, field_selector, matching, present};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::server::{Body, Req, State, error_response};
use crate::status::ApiError;
use crate::store::{Change, EventType};
use crate::table::{self, Include};

struct Filter {
    target: Target,
    labels: LabelSelector,
    fields: FieldSelector,
    /// Set when the URL names one object (`/{plural}/{name}?watch=true`).
    name: Option<String>,
}

impl Filter {
    fn matches(&self, obj: &Value) -> bool {
        self.labels.matches(obj)
            && self.fields.matches(obj)
            && self
                .name
                .as_ref()
                .is_none_or(|n| obj["metadata"]["name"].as_str() == Some(n))
    }

    /// The event a watcher sees for a change, after namespace and selector filtering.
    fn event(&self, c: &Change) -> Option<(&'static str, Value)> {
        let rt = &self.target.rt;
        if c.group != rt.storage_group || c.plural != rt.plural {
            return None;
        }
        if self.target.ns.as_ref().is_some_and(|ns| *ns != c.namespace) {
            return None;
        }
        let object = present(rt, &c.object);
        let now = self.matches(&object);
        let before = c
            .prev
            .as_ref()
            .is_some_and(|p| self.matches(&present(rt, p)));
        let type_ = match (c.type_, before, now) {
            (EventType::Added, _, true) => "ADDED",
            (EventType::Deleted, _, true) => "DELETED",
            (EventType::Modified, true, true) => "MODIFIED",
            (EventType::Modified, false, true) => "ADDED",
            (EventType::Modified, true, false) => "DELETED",
            _ => return None,
        };
        Some((type_, object))
    }
}

struct Line {
    table: Option<Include>,
}

impl Line {
    fn render(&self, rt: &crate::registry::ResourceType, type_: &str, obj: Value) -> Bytes {
        let object = match self.table {
            Some(include) if type_ != "BOOKMARK" && type_ != "ERROR" => {
                let meta = json!({"resourceVersion": obj["metadata"]["resourceVersion"]});
                table::table(rt, &[obj], meta, include)
            }
            _ => obj,
        };
        let mut s = json!({"type": type_, "object": object}).to_string();
        s.push('\n');
        Bytes::from(s)
    }
}

fn bookmark(rt: &crate::registry::ResourceType, rv: u64, initial_end: bool) -> Value {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"kind": rt.kind, "apiVersion": rt.api_version(), "metadata": meta})
}

pub(crate) fn watch(state: &Arc<State>, req: &Req, t: &Target) -> Response<Body> {
    match start(state, req, t) {
        Ok(r) => r,
        Err(e) => error_response(&e),
    }
}

fn start(state: &Arc<State>, req: &Req, t: &Target) -> Result<Response<Body>, ApiError> {
    let mut t = t.clone();
    let name = t.name.take();
    let filter = Filter {
        labels: LabelSelector::parse(req.q("labelSelector").unwrap_or_default())?,
        fields: field_selector(req, &t.rt)?,
        target: t.clone(),
        name,
    };
    let bookmarks = req.flag("allowWatchBookmarks");
    let send_initial = req.flag("sendInitialEvents");
    if send_initial && req.q("resourceVersionMatch") != Some("NotOlderThan") {
        return Err(ApiError::new(
            422,
            "Invalid",
            "resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
        ));
    }
    let timeout = req
        .q("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(state.config.watch_timeout);
    let line = Line {
        table: req
            .wants_table()
            .then(|| Include::parse(req.q("includeObject"))),
    };
    let rv_param = req.q("resourceVersion");

    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let mut initial: Vec<Bytes> = Vec::new();
    let mut sub: broadcast::Receiver<Arc<Change>>;
    let mut last_rv: u64;
    {
        let store = state.store();
        sub = store.tx.subscribe();
        let current = store.current_rv();
        let rt = &t.rt;
        match (send_initial, rv_param) {
            (true, _) | (false, None | Some("0")) => {
                for obj in matching(&store, &t, &filter.labels, &filter.fields)
                    .into_iter()
                    .filter(|o| filter.matches(o))
                {
                    initial.push(line.render(rt, "ADDED", obj));
                }
                if send_initial {
                    initial.push(line.render(rt, "BOOKMARK", bookmark(rt, current, true)));
                }
                last_rv = current;
            }
            (false, Some(rv)) => {
                let from: u64 = rv.parse().map_err(|_| {
                    ApiError::bad_request(format!("invalid resource version: {rv}"))
                })?;
                match store.changes_since(from) {
                    Some(changes) => {
                        for c in changes {
                            if let Some((type_, obj)) = filter.event(&c) {
                                initial.push(line.render(rt, type_, obj));
                            }
                        }
                        last_rv = current.max(from);
                    }
                    None => {
                        let err = ApiError::gone(format!(
                            "too old resource version: {from} ({})",
                            store.compacted_below().saturating_sub(1)
                        ));
                        initial.push(line.render(rt, "ERROR", err.to_status()));
                        last_rv = u64::MAX;
                    }
                }
            }
        }
    }
    let expired = last_rv == u64::MAX;
    let mut epoch = state.watch_epoch.subscribe();
    let bookmark_every = state.config.bookmark_interval;
    let rt = t.rt.clone();
    tokio::spawn(async move {
        for b in initial {
            if tx.send(b).await.is_err() {
                return;
            }
        }
        if expired {
            return;
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval(bookmark_every);
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = epoch.changed() => return,
                _ = ticker.tick(), if bookmarks => {
                    if tx.send(line.render(&rt, "BOOKMARK", bookmark(&rt, last_rv, false))).await.is_err() {
                        return;
                    }
                }
                msg = sub.recv() => match msg {
                    Ok(c) => {
                        if c.rv <= last_rv {
                            continue;
                        }
                        last_rv = c.rv;
                        if let Some((type_, obj)) = filter.event(&c)
                            && tx.send(line.render(&rt, type_, obj)).await.is_err()
                        {
                            return;
                        }
                    }
                    // A slow watcher is cut off; it re-watches from its last resourceVersion.
                    Err(_) => return,
                }
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    let mut resp = Response::new(StreamBody::new(stream).boxed_unsync());
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}
