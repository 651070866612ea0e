//! WATCH: a chunked HTTP body of newline-delimited `WatchEvent`s (ADDED, MODIFIED, DELETED,
//! BOOKMARK, ERROR) in the Kubernetes wire format. A stream reads the store's history from its
//! position on, so a watch resumed from any retained resourceVersion misses nothing; one older
//! than the history gets the 410 `Expired` ERROR event, as from a real server.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;

use super::Shared;
use super::registry::{ResourceType, TypeIdx};
use super::selectors::Selector;
use super::status::ApiError;
use super::store::{Change, EventKind};

/// Where a new watch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start {
    /// No resourceVersion, "0", or `sendInitialEvents`: ADDED for every current object first.
    CurrentState,
    /// After this resourceVersion.
    After(u64),
}

/// A watch request, parsed.
#[derive(Debug, Clone)]
pub(crate) struct WatchRequest {
    pub ty: TypeIdx,
    pub namespace: Option<String>,
    pub selector: Selector,
    pub start: Start,
    pub bookmarks: bool,
    /// Close the initial events with the `k8s.io/initial-events-end` bookmark.
    pub send_initial_events: bool,
    pub timeout: Duration,
}

struct Stream {
    shared: Arc<Shared>,
    rt: Arc<ResourceType>,
    req: WatchRequest,
    /// The resourceVersion up to which the store has been read.
    position: u64,
    pending: VecDeque<String>,
    deadline: Instant,
    next_bookmark: Instant,
    bookmark_every: Duration,
    changes: watch::Receiver<u64>,
    drops: watch::Receiver<u64>,
    shutdown: watch::Receiver<bool>,
    done: bool,
    _open: OpenWatch,
}

/// Counts open watch streams while alive (for `FakeApi::open_watches`).
struct OpenWatch(Arc<Shared>);

impl OpenWatch {
    fn new(shared: Arc<Shared>) -> Self {
        shared.open_watches.fetch_add(1, Ordering::SeqCst);
        Self(shared)
    }
}

impl Drop for OpenWatch {
    fn drop(&mut self) {
        self.0.open_watches.fetch_sub(1, Ordering::SeqCst);
    }
}

fn line(kind: &str, object: &Value) -> String {
    let mut s = json!({"type": kind, "object": object}).to_string();
    s.push('\n');
    s
}

/// A BOOKMARK: only kind, apiVersion and the resourceVersion (plus annotations).
fn bookmark(rt: &ResourceType, rv: u64, initial_end: bool) -> String {
    let mut metadata = json!({"resourceVersion": rv.to_string(), "creationTimestamp": null});
    if initial_end && let Some(m) = metadata.as_object_mut() {
        m.insert(
            "annotations".into(),
            json!({"k8s.io/initial-events-end": "true"}),
        );
    }
    line(
        "BOOKMARK",
        &json!({"kind": rt.kind, "apiVersion": rt.api_version(), "metadata": metadata}),
    )
}

/// The single ERROR event a too-old watch gets before the stream ends.
fn expired_line(err: &ApiError) -> String {
    line("ERROR", &err.to_status())
}

impl Stream {
    fn matches(&self, namespace: &str, obj: &Value) -> bool {
        self.req
            .namespace
            .as_deref()
            .is_none_or(|ns| ns == namespace)
            && self.req.selector.matches(obj)
    }

    /// A change as this watch sees it: with selectors, an object that starts or stops matching
    /// is ADDED or DELETED, as the API server's watch cache reports it.
    fn translate(&self, change: &Change) -> Option<String> {
        if change.key.ty != self.req.ty {
            return None;
        }
        let ns = change.key.namespace.as_str();
        let now = self.matches(ns, &change.object);
        let before = change.prev.as_deref().is_some_and(|p| self.matches(ns, p));
        match change.kind {
            EventKind::Added => now.then(|| line("ADDED", &change.object)),
            EventKind::Deleted => before.then(|| line("DELETED", &change.object)),
            EventKind::Modified => match (before, now) {
                (true, true) => Some(line("MODIFIED", &change.object)),
                (false, true) => Some(line("ADDED", &change.object)),
                (true, false) => {
                    // The previous state, at the new resourceVersion.
                    let mut prev = change.prev.as_deref().cloned().unwrap_or(Value::Null);
                    super::meta::set_meta(
                        &mut prev,
                        "resourceVersion",
                        Value::String(change.rv.to_string()),
                    );
                    Some(line("DELETED", &prev))
                }
                (false, false) => None,
            },
        }
    }

    /// Reads what changed since `position`. Returns false if the history moved past it (the
    /// stream cannot continue; the client re-watches and gets 410).
    fn pull(&mut self) -> bool {
        self.changes.borrow_and_update();
        let store = self.shared.lock_store();
        if self.position < store.evicted() {
            return false;
        }
        let changes = store.changes_after(self.position);
        self.position = store.resource_version();
        drop(store);
        for change in changes {
            if let Some(l) = self.translate(&change) {
                self.pending.push_back(l);
            }
        }
        true
    }

    async fn next_line(&mut self) -> Option<String> {
        loop {
            if let Some(l) = self.pending.pop_front() {
                return Some(l);
            }
            if self.done {
                return None;
            }
            // A drop or shutdown wins over pending changes, so it takes effect at once.
            if self.drops.has_changed().unwrap_or(true) || *self.shutdown.borrow() {
                self.done = true;
                continue;
            }
            if !self.pull() {
                self.done = true;
                continue;
            }
            if !self.pending.is_empty() {
                continue;
            }
            let bookmarks = self.req.bookmarks;
            tokio::select! {
                biased;
                _ = self.shutdown.changed() => self.done = true,
                _ = self.drops.changed() => self.done = true,
                _ = tokio::time::sleep_until(self.deadline) => self.done = true,
                r = self.changes.changed() => if r.is_err() { self.done = true },
                _ = tokio::time::sleep_until(self.next_bookmark), if bookmarks => {
                    self.next_bookmark = Instant::now() + self.bookmark_every;
                    if self.pull() {
                        let b = bookmark(&self.rt, self.position, false);
                        self.pending.push_back(b);
                    } else {
                        self.done = true;
                    }
                }
            }
        }
    }
}

/// Opens a watch: the lines to send, as a stream that ends on timeout, `drop_watches`,
/// shutdown, or when it falls behind the history.
pub(crate) fn open(
    shared: Arc<Shared>,
    req: WatchRequest,
) -> Result<impl futures::Stream<Item = Result<String, Infallible>> + Send + 'static, ApiError> {
    let rt = shared
        .registry
        .get(req.ty)
        .cloned()
        .ok_or_else(ApiError::no_route)?;
    let mut pending = VecDeque::new();
    let mut done = false;
    let (position, changes) = {
        let store = shared.lock_store();
        let changes = store.subscribe();
        let position = match req.start {
            Start::CurrentState => {
                for (key, obj) in store.list(req.ty, req.namespace.as_deref()) {
                    if req.selector.matches(&obj)
                        && req
                            .namespace
                            .as_deref()
                            .is_none_or(|ns| ns == key.namespace)
                    {
                        pending.push_back(line("ADDED", &obj));
                    }
                }
                let rv = store.resource_version();
                if req.send_initial_events {
                    pending.push_back(bookmark(&rt, rv, true));
                }
                rv
            }
            Start::After(rv) => {
                if rv < store.compacted() {
                    pending.push_back(expired_line(&ApiError::expired(format!(
                        "too old resource version: {rv} ({})",
                        store.compacted()
                    ))));
                    done = true;
                }
                rv
            }
        };
        (position, changes)
    };
    let bookmark_every = shared.options.bookmark_interval;
    let now = Instant::now();
    let stream = Stream {
        _open: OpenWatch::new(shared.clone()),
        drops: shared.drop_watches.subscribe(),
        shutdown: shared.shutdown.subscribe(),
        shared,
        rt,
        position,
        pending,
        deadline: now + req.timeout,
        next_bookmark: now + bookmark_every,
        bookmark_every,
        req,
        changes,
        done,
    };
    Ok(futures::stream::unfold(stream, |mut s| async move {
        s.next_line().await.map(|l| (Ok(l), s))
    }))
}
