//! Watch streams: [`WatchRequest`] (what a `?watch=true` request asks for) and [`stream()`], the
//! chunked response body of one JSON event per line.
//!
//! Without a `resourceVersion` (or with `"0"`, or with `sendInitialEvents=true`) the stream
//! starts with an `ADDED` event per matching object, then follows changes; with one it replays
//! the store's log after that version (an `ERROR` event with a 410 `Status` when the log no
//! longer reaches back that far). It ends cleanly after `timeoutSeconds`, at server shutdown,
//! or when the client falls too far behind (it then resumes from its last resourceVersion).
//!
//! When the request asked for a table (`kubectl get -w`), each object is sent as a one-row
//! `Table`, as the API server does.
//!
//! Simplification: an object that stops (or starts) matching the selectors is not reported as
//! `DELETED` (or `ADDED`) the way the watch cache does; events are filtered on the new object.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use futures::stream;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Bytes, Frame};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};
use tokio::time::{Instant, sleep_until};

use super::errors::ApiError;
use super::kinds::ResourceKind;
use super::selectors::{FieldSelector, LabelSelector};
use super::server::{Body, Query, stopped};
use super::store::{Store, WatchEvent};
use super::tables::TableRequest;

/// How often a watch that allows bookmarks gets one.
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(10);

/// What one watch request selects and how its stream behaves.
#[derive(Debug, Clone)]
pub struct WatchRequest {
    pub kind: &'static ResourceKind,
    /// `None` watches all namespaces.
    pub namespace: Option<String>,
    /// Set when the URL names one object.
    pub name: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    /// Resume after this version; `None` (absent or `"0"`) starts with the current objects.
    pub resource_version: Option<u64>,
    pub send_initial_events: bool,
    pub bookmarks: bool,
    pub timeout: Option<Duration>,
    /// Send objects as one-row tables (`Accept: ...;as=Table`).
    pub table: Option<TableRequest>,
}

impl WatchRequest {
    /// Reads `labelSelector`, `fieldSelector`, `resourceVersion`, `sendInitialEvents`,
    /// `allowWatchBookmarks` and `timeoutSeconds`.
    ///
    /// # Errors
    /// `BadRequest` for a malformed selector, resourceVersion or timeout.
    pub(super) fn from_query(
        kind: &'static ResourceKind,
        namespace: Option<String>,
        name: Option<String>,
        query: &Query,
    ) -> Result<Self, ApiError> {
        let resource_version = match query.get("resourceVersion") {
            None | Some("0") => None,
            Some(rv) => {
                Some(rv.parse::<u64>().map_err(|_| ApiError::bad_request(format!("invalid resource version {rv:?}")))?)
            }
        };
        // As in Kubernetes, 0 means the server's default: here, no timeout.
        let timeout = match query.get("timeoutSeconds") {
            None => None,
            Some(secs) => match secs.parse::<u64>() {
                Ok(0) => None,
                Ok(secs) => Some(Duration::from_secs(secs)),
                Err(_) => {
                    return Err(ApiError::bad_request(format!("invalid timeoutSeconds {secs:?}")));
                }
            },
        };
        Ok(WatchRequest {
            kind,
            namespace,
            name,
            labels: LabelSelector::parse(query.get("labelSelector").unwrap_or_default())?,
            fields: FieldSelector::parse(query.get("fieldSelector").unwrap_or_default())?,
            resource_version,
            send_initial_events: query.flag("sendInitialEvents"),
            bookmarks: query.flag("allowWatchBookmarks"),
            timeout,
            table: None,
        })
    }

    fn selects(&self, namespace: &str, object: &Value) -> bool {
        self.namespace.as_deref().is_none_or(|ns| ns == namespace)
            && self
                .name
                .as_deref()
                .is_none_or(|name| object.pointer("/metadata/name").and_then(Value::as_str) == Some(name))
            && self.labels.matches(object)
            && self.fields.matches(object)
    }

    fn selects_event(&self, event: &WatchEvent) -> bool {
        event.kind == self.kind && self.selects(&event.namespace, &event.object)
    }

    /// The line of an event about `object`, as a table row when asked for.
    fn object_line(&self, event_type: &str, object: &Value) -> Bytes {
        match &self.table {
            Some(table) => event_line(event_type, &table.render(self.kind, &[object], None)),
            None => event_line(event_type, object),
        }
    }
}

/// The response body of a watch: events as they happen, one JSON object per line.
pub fn stream(store: &Store, request: WatchRequest, shutdown: watch::Receiver<bool>) -> Body {
    let start = Instant::now();
    let mut pending = VecDeque::new();
    let initial = request.resource_version.is_none() || request.send_initial_events;
    let (events, seen) = if initial {
        // Subscribe before listing, so no change falls between the list and the stream;
        // changes the list already shows are skipped by their resourceVersion.
        let events = match store.watch_from(0) {
            Ok((_, events)) => events,
            Err(e) => return error_body(&e),
        };
        let (items, listed_at) = store.list(request.kind, request.namespace.as_deref());
        for item in items.iter().filter(|o| request.selects(namespace_of(o), o)) {
            pending.push_back(request.object_line("ADDED", item));
        }
        if request.send_initial_events {
            pending.push_back(event_line("BOOKMARK", &bookmark(request.kind, listed_at, true)));
        }
        (events, listed_at)
    } else {
        let from = request.resource_version.unwrap_or_default();
        match store.watch_from(from) {
            Ok((backlog, events)) => {
                for event in backlog.iter().filter(|e| request.selects_event(e)) {
                    pending.push_back(request.object_line(event.event_type.as_str(), &event.object));
                }
                let seen = backlog.last().map_or(from, |e| e.resource_version);
                (events, seen)
            }
            Err(e) => return error_body(&e),
        }
    };
    let watch = Watch {
        deadline: request.timeout.map(|t| start + t),
        next_bookmark: start + BOOKMARK_INTERVAL,
        request,
        pending,
        events,
        seen,
        shutdown,
        finished: false,
    };
    StreamBody::new(stream::unfold(watch, Watch::next_frame)).boxed_unsync()
}

/// The state of one open watch stream.
struct Watch {
    request: WatchRequest,
    /// Lines ready to send.
    pending: VecDeque<Bytes>,
    events: broadcast::Receiver<WatchEvent>,
    /// The latest resourceVersion this stream has accounted for; older events are skipped.
    seen: u64,
    deadline: Option<Instant>,
    next_bookmark: Instant,
    shutdown: watch::Receiver<bool>,
    finished: bool,
}

enum Wake {
    Event(Result<WatchEvent, broadcast::error::RecvError>),
    Bookmark,
    End,
}

impl Watch {
    async fn next_frame(mut self) -> Option<(Result<Frame<Bytes>, Infallible>, Self)> {
        loop {
            if let Some(line) = self.pending.pop_front() {
                return Some((Ok(Frame::data(line)), self));
            }
            if self.finished {
                return None;
            }
            let deadline = self.deadline;
            // Events already published go out before a deadline or shutdown ends the stream.
            let wake = tokio::select! {
                biased;
                received = self.events.recv() => Wake::Event(received),
                () = sleep_until(self.next_bookmark), if self.request.bookmarks => Wake::Bookmark,
                () = async { match deadline {
                    Some(deadline) => sleep_until(deadline).await,
                    None => std::future::pending().await,
                } } => Wake::End,
                () = stopped(&mut self.shutdown) => Wake::End,
            };
            match wake {
                Wake::Event(Ok(event)) => self.offer(&event),
                // Lagging behind (or a closed store): end, and let the client resume.
                Wake::Event(Err(_)) | Wake::End => self.finished = true,
                Wake::Bookmark => {
                    self.next_bookmark += BOOKMARK_INTERVAL;
                    self.pending.push_back(event_line("BOOKMARK", &bookmark(self.request.kind, self.seen, false)));
                }
            }
        }
    }

    fn offer(&mut self, event: &WatchEvent) {
        if event.resource_version <= self.seen {
            return;
        }
        self.seen = event.resource_version;
        if self.request.selects_event(event) {
            let line = self.request.object_line(event.event_type.as_str(), &event.object);
            self.pending.push_back(line);
        }
    }
}

fn namespace_of(object: &Value) -> &str {
    object.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default()
}

/// A `BOOKMARK` object: only the kind and the resourceVersion the client may resume from.
fn bookmark(kind: &ResourceKind, resource_version: u64, initial_events_end: bool) -> Value {
    let mut object = json!({
        "kind": kind.kind,
        "apiVersion": kind.api_version(),
        "metadata": {"resourceVersion": resource_version.to_string()},
    });
    if initial_events_end {
        object["metadata"]["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    object
}

#[derive(Serialize)]
struct EventLine<'a> {
    #[serde(rename = "type")]
    event_type: &'a str,
    object: &'a Value,
}

fn event_line(event_type: &str, object: &Value) -> Bytes {
    // Serializing borrowed `Value`s cannot fail: their map keys are strings.
    let mut line = serde_json::to_vec(&EventLine { event_type, object }).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

/// A stream of one `ERROR` event carrying `error` as a `Status`, as Kubernetes reports a
/// watch that cannot start (410 Gone).
fn error_body(error: &ApiError) -> Body {
    let line = event_line("ERROR", &error.to_status());
    StreamBody::new(stream::iter([Ok::<_, Infallible>(Frame::data(line))])).boxed_unsync()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::kinds;

    async fn lines(body: Body) -> Vec<Value> {
        let bytes = body.collect().await.unwrap().to_bytes();
        bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()).map(|l| serde_json::from_slice(l).unwrap()).collect()
    }

    fn request(query: &str) -> WatchRequest {
        WatchRequest::from_query(&kinds::CONFIG_MAP, Some("a".into()), None, &Query::parse(query)).unwrap()
    }

    fn store() -> Store {
        let store = Store::new();
        store.create(&kinds::NAMESPACE, "", json!({"metadata": {"name": "a"}})).unwrap();
        store
    }

    #[tokio::test]
    async fn initial_events_then_end_of_initial_events_bookmark() {
        let store = store();
        let labels = json!({"metadata": {"name": "x", "labels": {"app": "web"}}});
        store.create(&kinds::CONFIG_MAP, "a", labels).unwrap();
        store.create(&kinds::CONFIG_MAP, "a", json!({"metadata": {"name": "y"}})).unwrap();
        let (stop, shutdown) = watch::channel(false);
        let body = stream(&store, request("labelSelector=app%3Dweb&sendInitialEvents=true"), shutdown);
        stop.send_replace(true);
        let events = lines(body).await;
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(events[0]["type"], "ADDED");
        assert_eq!(events[0]["object"]["metadata"]["name"], "x");
        assert_eq!(events[1]["type"], "BOOKMARK");
        assert_eq!(events[1]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"], "true");
    }

    #[tokio::test]
    async fn table_watches_send_one_row_tables() {
        let store = store();
        store.create(&kinds::CONFIG_MAP, "a", json!({"metadata": {"name": "x"}, "data": {"k": "v"}})).unwrap();
        let (stop, shutdown) = watch::channel(false);
        let mut table_request = request("");
        table_request.table = TableRequest::from_accept("application/json;as=Table;v=v1;g=meta.k8s.io", None);
        let body = stream(&store, table_request, shutdown);
        store.delete(&kinds::CONFIG_MAP, "a", "x").unwrap();
        stop.send_replace(true);
        let events = lines(body).await;
        let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(types, ["ADDED", "DELETED"]);
        for event in &events {
            assert_eq!(event["object"]["kind"], "Table");
            assert_eq!(event["object"]["rows"][0]["cells"][0], "x");
            assert_eq!(event["object"]["rows"][0]["cells"][1], "1", "the Data column");
        }
    }

    #[tokio::test]
    async fn resumes_after_a_resource_version_and_follows_until_shutdown() {
        let store = store();
        let rv = store.resource_version();
        store.create(&kinds::CONFIG_MAP, "a", json!({"metadata": {"name": "x"}})).unwrap();
        let (stop, shutdown) = watch::channel(false);
        let body = stream(&store, request(&format!("resourceVersion={rv}")), shutdown);
        store.delete(&kinds::CONFIG_MAP, "a", "x").unwrap();
        stop.send_replace(true);
        let events = lines(body).await;
        let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(types, ["ADDED", "DELETED"]);
    }

    #[tokio::test]
    async fn too_old_resource_version_is_an_error_event() {
        let store = store();
        for i in 0..4100 {
            store.create(&kinds::CONFIG_MAP, "a", json!({"metadata": {"name": format!("c{i}")}})).unwrap();
        }
        let (_stop, shutdown) = watch::channel(false);
        let events = lines(stream(&store, request("resourceVersion=1"), shutdown)).await;
        assert_eq!(events.len(), 1);
        assert_eq!(events[0]["type"], "ERROR");
        assert_eq!(events[0]["object"]["code"], 410);
    }

    #[test]
    fn malformed_parameters_are_bad_requests() {
        for query in ["resourceVersion=abc", "timeoutSeconds=-1", "labelSelector=%3Dx"] {
            let err = WatchRequest::from_query(&kinds::SECRET, None, None, &Query::parse(query)).unwrap_err();
            assert_eq!(err.code, 400, "{query}");
        }
    }
}
