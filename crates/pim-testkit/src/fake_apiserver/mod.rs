//! An in-process fake Kubernetes API server on 127.0.0.1, for integration tests and the load
//! harness. Test support: its fidelity is part of the test suite's honesty.
//!
//! The real kube client and the real kube-runtime `Controller` talk to it over HTTP, or, for
//! the deterministic simulation (tests/simulation), in memory through the same router
//! ([`FakeApiServer::in_memory`], [`FakeApiServer::client_through`]), with uids drawn from a
//! seed ([`seed_ids`]). It serves
//! our CRDs (from `api::crd::all()`) and the built-in types the operator touches, with the API
//! server's semantics for what we use: discovery, get/list/watch (resourceVersions, pagination,
//! selectors, bookmarks, 410 Gone), create/update/delete, merge, JSON and server-side apply
//! patches, the status subresource, `generation`, finalizers and `deletionTimestamp`, schema
//! pruning, defaulting and validation. Tests flip fault switches and read request counters and a
//! write log through [`FakeApi`].
//!
//! # Faithful to the real API server
//! - One global resourceVersion counter across all types (etcd's revision); uid,
//!   creationTimestamp, generation (custom resources) stamped on create; no-op writes store
//!   nothing (same resourceVersion, no watch event).
//! - LIST: `resourceVersion` in the list metadata; `limit`/`continue` pages are a consistent
//!   snapshot at the first page's version (410 `Expired` once the history no longer reaches it);
//!   `remainingItemCount`; `resourceVersion`/`resourceVersionMatch` (Exact, NotOlderThan, 504
//!   for a version from the future); equality- and set-based `labelSelector`; `fieldSelector` on
//!   `metadata.name`/`metadata.namespace` (others: 400, as for CRDs).
//! - WATCH: ADDED/MODIFIED/DELETED/BOOKMARK/ERROR lines; resume from any retained version, 410
//!   ERROR event (`Expired`) from an older one; synthetic ADDED for a watch without version or
//!   from "0"; `sendInitialEvents` with the `k8s.io/initial-events-end` bookmark; periodic
//!   bookmarks with the global version; `timeoutSeconds`; objects that stop/start matching a
//!   selector are sent as DELETED/ADDED; a DELETED object carries the deletion's version.
//! - Writes: 409 AlreadyExists; 409 Conflict on a stale `metadata.resourceVersion` (PUT and
//!   patches) or mismatched uid; custom resources need a resourceVersion on PUT (422); 400 on
//!   apiVersion/kind/name/namespace mismatches; `dryRun=All`; DELETE preconditions.
//! - Status subresource: main-resource writes keep the stored status, /status writes change
//!   only status (CRD strategies); `generation` moves only when something outside metadata and
//!   status changes; status is dropped on create.
//! - Finalizers: DELETE sets deletionTimestamp (and bumps generation) and answers with the
//!   object; removing the last finalizer deletes the object (a DELETED event, no MODIFIED, the
//!   update answered with the last stored state); no new finalizers while deleting (422);
//!   deletionTimestamp cannot be changed by clients. DELETE without finalizers answers a
//!   `Status` Success.
//! - Patches: merge patch (RFC 7386), JSON patch (RFC 6902; `test` of null matches a missing
//!   path, as in the API server), server-side apply: fieldManager required, merge by schema
//!   (maps recursively, `x-kubernetes-list-type: map` lists entry by entry on their keys, `set`
//!   lists by value, other lists atomic), conflicts (409, with causes) when changing a field
//!   another manager owns unless `force`, removal of fields a manager stops applying,
//!   `managedFields` with fieldsV1 per manager/operation/subresource, apply creates.
//! - Custom resources are pruned, defaulted and validated against the CRD schema (type, enum,
//!   required, min/max length/items/properties, minimum/maximum, date-time and int32 formats,
//!   unique list-map keys and set items, nulls pruned unless nullable), with ratcheting
//!   (unchanged invalid values pass).
//! - Errors are `Status` objects with the real reasons, messages and details.
//! - Table output for custom resources (what `kubectl get` prints): GET and LIST with `Accept:
//!   application/json;as=Table;v=v1;g=meta.k8s.io` (or `v1beta1`), the clauses taken in
//!   goautoneg's order, plain JSON for clients that do not ask; `columnDefinitions` from the
//!   CRD's printer columns (with priority; `Age` when it has none), cells as apiextensions'
//!   table convertor makes them (string columns through the JSONPath printer, `date` columns as
//!   `HumanDuration` since then on the server's clock, `<invalid>` beyond a second in the
//!   future, `null` where the path finds nothing), and each row's `object` per `includeObject`
//!   (a `PartialObjectMetadata` by default).
//!
//! # Simplified or missing
//! - No authentication or authorization: every caller may do everything. SelfSubjectReview
//!   (and admission's `userInfo`) report the identity set by [`FakeApi::set_identity`], or the
//!   one in `Impersonate-User`/`Impersonate-Group` with the groups the real server adds.
//! - Admission webhooks are called (see `admission.rs` for what is simplified there: Services
//!   are reached through [`Options::services`], selectors are not evaluated); no built-in
//!   admission plugins, no ValidatingAdmissionPolicy.
//! - CRD validation: no CEL rules (`x-kubernetes-validations`), no `pattern`, no
//!   `allOf`/`anyOf`/`oneOf`/`not`; metadata is not validated beyond the name and label values.
//! - Only the storage version of each CRD is served; no conversion.
//! - Built-in types are stored as given: no validation, no defaulting, strategic merge patch
//!   is applied as a merge patch (lists replaced), Secret `stringData` is folded into `data`.
//! - No garbage collector (ownerReferences and propagationPolicy are ignored), no namespace
//!   lifecycle (namespaces need not exist; deleting one deletes nothing else and is immediate).
//! - Server-side apply: new list entries are appended after the live ones (the real merge may
//!   order them differently); an entry is removed only when nobody else owns anything in it;
//!   `managedFields` sent by clients are ignored (the real server lets a client reset them);
//!   explicit `null`s in an applied configuration are ignored.
//! - Table output for custom resources only: built-in types answer plain JSON (kubectl then
//!   prints NAME and AGE itself); watches answer JSON events even when a Table is asked for
//!   (`kubectl get -w`); no `PartialObjectMetadata` conversion; an `Accept` header naming only
//!   types this server does not write gets JSON, not 406. Printer-column JSONPath: fields,
//!   `[n]`, `[*]` and `==`/`!=` filters (what CRD columns use); other syntax ends the columns
//!   there, as an unparsable path does in the real convertor.
//! - No protobuf, no `/openapi`; watches are not compressed; bookmarks are periodic, not also
//!   sent right before a watch times out.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use pim_testkit::fake_apiserver::FakeApiServer;
//! let server = FakeApiServer::start().await?;
//! let client = server.client();
//! server.fail_next(1, 500);
//! # Ok(()) }
//! ```

mod admission;
mod discovery;
mod faults;
mod jsonpath;
mod managed;
mod memory;
mod merge;
mod meta;
mod objects;
mod observe;
pub mod process;
mod registry;
mod routes;
mod schema;
mod selectors;
mod status;
mod store;
mod table;
mod watch;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value;
use tokio::sync::watch as signal;

use crate::clock::{Clock, SystemClock};
use tokio::task::JoinHandle;

pub use faults::FaultScope;
pub use memory::Link;
pub use meta::seed_ids;
pub use observe::{RequestCounts, Verb, WriteRecord};

use faults::Faults;
use observe::Observations;
use registry::Registry;
use store::{ObjKey, Store};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, #[source] std::io::Error),
    #[error("cannot build a kube client for {url}: {source}")]
    Client {
        url: String,
        #[source]
        source: kube::Error,
    },
    #[error("invalid server URL {0}")]
    Url(String),
}

/// Why a test helper could not do what it was asked.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HelperError {
    #[error("unknown resource {0:?} (use its plural, or plural.group)")]
    UnknownResource(String),
    #[error("{0} is namespaced: give a namespace")]
    NamespaceRequired(String),
    #[error("the object has no metadata.name")]
    NoName,
    #[error("the object is not a JSON object")]
    NotAnObject,
}

/// Server settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// How many changes the history keeps (watch resume, consistent pagination). Older
    /// resourceVersions get 410 Gone.
    pub history: usize,
    /// How often an idle watch that asked for bookmarks gets one (the real server: about a minute).
    pub bookmark_interval: Duration,
    /// Extra CRDs to serve besides ours.
    pub extra_crds: Vec<CustomResourceDefinition>,
    /// The identity SelfSubjectReview reports.
    pub username: String,
    pub groups: Vec<String>,
    /// Where to listen (127.0.0.1 and an ephemeral port by default).
    pub listen: SocketAddr,
    /// Where admission webhooks that name a Service are called: `namespace/name` to a local
    /// address (the real server finds the Service's endpoints; see `admission`).
    pub services: HashMap<String, SocketAddr>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            history: 1000,
            bookmark_interval: Duration::from_secs(60),
            extra_crds: Vec::new(),
            username: "kubernetes-admin".into(),
            groups: vec!["system:masters".into(), "system:authenticated".into()],
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            services: HashMap::new(),
        }
    }
}

/// State shared by the HTTP handlers, the watch streams and the handle.
pub(crate) struct Shared {
    registry: Registry,
    store: Mutex<Store>,
    faults: Mutex<Faults>,
    observations: Mutex<Observations>,
    identity: Mutex<(String, Vec<String>)>,
    /// The time the server stamps (creation, deletion, managedFields).
    clock: Mutex<Arc<dyn Clock>>,
    /// Bumped by `drop_watches`: every open watch ends.
    drop_watches: signal::Sender<u64>,
    shutdown: signal::Sender<bool>,
    open_watches: AtomicUsize,
    options: Options,
    /// `127.0.0.1:PORT`.
    address: String,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock (there should be none) must not wedge every later request.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub(crate) fn lock_store(&self) -> MutexGuard<'_, Store> {
        lock(&self.store)
    }

    pub(crate) fn lock_faults(&self) -> MutexGuard<'_, Faults> {
        lock(&self.faults)
    }

    pub(crate) fn lock_observations(&self) -> MutexGuard<'_, Observations> {
        lock(&self.observations)
    }

    pub(crate) fn identity(&self) -> (String, Vec<String>) {
        lock(&self.identity).clone()
    }

    /// Now, as a Kubernetes `Time`.
    pub(crate) fn now(&self) -> String {
        meta::format_time(self.clock_now())
    }

    /// Now, on the server's clock (what Table output measures ages from).
    pub(crate) fn clock_now(&self) -> jiff::Timestamp {
        let clock = lock(&self.clock).clone();
        clock.now()
    }
}

/// The running server. Dropping it (or [`shutdown`](Self::shutdown)) stops it. Derefs to
/// [`FakeApi`], the controls and observations tests use.
pub struct FakeApiServer {
    api: FakeApi,
    client: kube::Client,
    url: String,
    task: Option<JoinHandle<()>>,
}

impl FakeApiServer {
    /// Starts a server with default [`Options`] on 127.0.0.1 and an ephemeral port.
    pub async fn start() -> Result<Self, StartError> {
        Self::start_with(Options::default()).await
    }

    /// Starts a server with these options.
    pub async fn start_with(options: Options) -> Result<Self, StartError> {
        let listen = options.listen;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| StartError::Bind(listen, e))?;
        let address = listener
            .local_addr()
            .map_err(|e| StartError::Bind(listen, e))?
            .to_string();
        let url = format!("http://{address}");
        let (shared, mut shutdown_rx) = Self::shared(options, address);

        // The client needs no connection to be built; build it first so that a failure leaves
        // no server task behind.
        let uri: http::Uri = url.parse().map_err(|_| StartError::Url(url.clone()))?;
        let client = kube::Client::try_from(kube::Config::new(uri)).map_err(|source| {
            StartError::Client {
                url: url.clone(),
                source,
            }
        })?;
        let app = routes::router(shared.clone());
        let task = tokio::spawn(async move {
            let stop = async move {
                // Ends on `true` or when the sender (the server's state) is gone.
                while !*shutdown_rx.borrow_and_update() {
                    if shutdown_rx.changed().await.is_err() {
                        break;
                    }
                }
            };
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await
            {
                tracing::warn!(error = %e, "fake API server stopped with an error");
            }
        });
        Ok(Self {
            api: FakeApi { shared },
            client,
            url,
            task: Some(task),
        })
    }

    /// A server reached only in memory (see [`client_through`](Self::client_through)): no port,
    /// no task of its own. Call it inside a Tokio runtime.
    pub fn in_memory(options: Options) -> Self {
        let (shared, _) = Self::shared(options, "in-memory".into());
        let always: Link = Arc::new(|| true);
        let client = memory::client(routes::router(shared.clone()), always);
        Self {
            api: FakeApi { shared },
            client,
            url: "http://in-memory.invalid".into(),
            task: None,
        }
    }

    /// A client that reaches this server in memory, each request only while `link` answers
    /// `true`: one per simulated replica, cut when it crashes or is partitioned.
    pub fn client_through(&self, link: Link) -> kube::Client {
        memory::client(routes::router(self.api.shared.clone()), link)
    }

    fn shared(options: Options, address: String) -> (Arc<Shared>, signal::Receiver<bool>) {
        let mut crds = crate::api::crd::all();
        crds.extend(options.extra_crds.iter().cloned());
        let (drop_watches, _) = signal::channel(0);
        let (shutdown, shutdown_rx) = signal::channel(false);
        let shared = Arc::new(Shared {
            registry: Registry::new(&crds),
            store: Mutex::new(Store::new(options.history)),
            faults: Mutex::new(Faults::default()),
            observations: Mutex::new(Observations::default()),
            identity: Mutex::new((options.username.clone(), options.groups.clone())),
            clock: Mutex::new(Arc::new(SystemClock)),
            drop_watches,
            shutdown,
            open_watches: AtomicUsize::new(0),
            options,
            address,
        });
        (shared, shutdown_rx)
    }

    /// A kube client for this server (no auth; kube's default retry of 429/503/504 is on, as in
    /// production).
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// A kube `Config` for this server, to build clients with other settings.
    pub fn config(&self) -> kube::Config {
        let uri: http::Uri = self.url.parse().unwrap_or_default();
        kube::Config::new(uri)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A handle to the controls that does not keep the server alive.
    pub fn handle(&self) -> FakeApi {
        self.api.clone()
    }

    /// Stops the server: open watches end, in-flight requests finish, the port is released.
    pub async fn shutdown(mut self) {
        self.api.shared.shutdown.send_replace(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.api.shared.shutdown.send_replace(true);
    }
}

impl Deref for FakeApiServer {
    type Target = FakeApi;

    fn deref(&self) -> &FakeApi {
        &self.api
    }
}

/// Controls, fault switches and observations of a running server. Cheap to clone.
#[derive(Clone)]
pub struct FakeApi {
    shared: Arc<Shared>,
}

impl FakeApi {
    // --- identity -------------------------------------------------------------------------

    /// The user SelfSubjectReview reports from now on.
    pub fn set_identity(&self, username: impl Into<String>, groups: &[&str]) {
        *lock(&self.shared.identity) = (
            username.into(),
            groups.iter().map(|g| g.to_string()).collect(),
        );
    }

    /// Replaces the server's clock (the system clock by default), e.g. with the `ManualClock`
    /// the operator under test uses, so the timestamps it stamps (creation, deletion,
    /// managedFields) are on the same timeline.
    pub fn set_clock(&self, clock: Arc<dyn Clock>) {
        *lock(&self.shared.clock) = clock;
    }

    // --- faults ---------------------------------------------------------------------------

    /// Ends every open watch stream now (clients resume from their last resourceVersion).
    pub fn drop_watches(&self) {
        self.shared.drop_watches.send_modify(|n| *n += 1);
    }

    /// Compacts the history: the resourceVersion moves on and every version handed out so far is
    /// too old, so the next watch (or continued list) from one of them gets 410 Gone. Open
    /// watches carry on; combine with [`drop_watches`](Self::drop_watches) to force a re-list.
    pub fn expire_history(&self) {
        self.shared.lock_store().expire();
    }

    /// Changes how many changes the history keeps.
    pub fn set_history(&self, capacity: usize) {
        self.shared.lock_store().set_capacity(capacity);
    }

    /// The next `n` resource requests fail with `status_code` (a `Status` body; 429 with
    /// `Retry-After: 1`). Note that kube retries 429, 503 and 504 by itself.
    pub fn fail_next(&self, n: u32, status_code: u16) {
        self.fail_next_in(n, status_code, FaultScope::all());
    }

    /// Like [`fail_next`](Self::fail_next), for requests in `scope` only.
    pub fn fail_next_in(&self, n: u32, status_code: u16, scope: FaultScope) {
        self.shared.lock_faults().fail_next(n, status_code, scope);
    }

    /// Every request in `scope` fails with `status_code` until [`clear_faults`](Self::clear_faults).
    pub fn fail_all(&self, status_code: u16, scope: FaultScope) {
        self.shared.lock_faults().fail_always(status_code, scope);
    }

    /// Stops all injected failures (latency stays).
    pub fn clear_faults(&self) {
        self.shared.lock_faults().clear();
    }

    /// Delay added before every request is handled (zero to stop).
    pub fn set_latency(&self, latency: Duration) {
        self.shared.lock_faults().latency = latency;
    }

    // --- observations ---------------------------------------------------------------------

    /// Request counts by verb and resource since start or the last reset.
    pub fn requests(&self) -> RequestCounts {
        self.shared.lock_observations().counts.clone()
    }

    /// Shorthand: requests with this verb, any resource.
    pub fn request_count(&self, verb: Verb) -> u64 {
        self.requests().verb(verb)
    }

    /// Every write request (successful or not) since start or the last reset, in order.
    pub fn writes(&self) -> Vec<WriteRecord> {
        self.shared.lock_observations().writes.clone()
    }

    /// The write log, emptied.
    pub fn take_writes(&self) -> Vec<WriteRecord> {
        std::mem::take(&mut self.shared.lock_observations().writes)
    }

    /// Discovery requests served.
    pub fn discovery_requests(&self) -> u64 {
        self.shared.lock_observations().discovery
    }

    /// Resets request counts and the write log.
    pub fn reset_observations(&self) {
        let mut obs = self.shared.lock_observations();
        *obs = Observations::default();
    }

    /// Watch streams open right now.
    pub fn open_watches(&self) -> usize {
        self.shared.open_watches.load(Ordering::SeqCst)
    }

    /// The current (global) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock_store().resource_version()
    }

    // --- direct storage access ------------------------------------------------------------

    fn key(
        &self,
        resource: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<ObjKey, HelperError> {
        let ty = self
            .shared
            .registry
            .by_name(resource)
            .ok_or_else(|| HelperError::UnknownResource(resource.to_string()))?;
        let namespaced = self.shared.registry.get(ty).is_some_and(|t| t.namespaced);
        let namespace = match (namespaced, namespace) {
            (true, Some(ns)) => ns.to_string(),
            (true, None) => return Err(HelperError::NamespaceRequired(resource.to_string())),
            (false, _) => String::new(),
        };
        Ok(ObjKey {
            ty,
            namespace,
            name: name.to_string(),
        })
    }

    /// The stored object, straight from storage. `resource` is the plural (or plural.group);
    /// `namespace` is ignored for cluster-scoped types.
    pub fn store_get(&self, resource: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
        let key = self.key(resource, namespace, name).ok()?;
        self.shared.lock_store().get(&key).map(|o| (*o).clone())
    }

    /// The stored objects of a type (in one namespace, or all), sorted by namespace and name.
    pub fn store_list(&self, resource: &str, namespace: Option<&str>) -> Vec<Value> {
        let Some(ty) = self.shared.registry.by_name(resource) else {
            return Vec::new();
        };
        self.shared
            .lock_store()
            .list(ty, namespace)
            .into_iter()
            .map(|(_, o)| (*o).clone())
            .collect()
    }

    /// Writes an object straight into storage, bypassing validation, admission, strategies and
    /// preconditions (as someone with etcd access, or a disabled webhook, would). It still gets
    /// the next resourceVersion, a uid and creationTimestamp if missing, and watchers see it.
    /// Returns the stored object.
    pub fn store_put(
        &self,
        resource: &str,
        namespace: Option<&str>,
        object: Value,
    ) -> Result<Value, HelperError> {
        if !object.is_object() {
            return Err(HelperError::NotAnObject);
        }
        let name = meta::meta_str(&object, "name")
            .ok_or(HelperError::NoName)?
            .to_string();
        let key = self.key(resource, namespace, &name)?;
        let mut object = object;
        if let Some(rt) = self.shared.registry.get(key.ty) {
            if let Some(map) = object.as_object_mut() {
                map.entry("apiVersion")
                    .or_insert_with(|| Value::String(rt.api_version()));
                map.entry("kind")
                    .or_insert_with(|| Value::String(rt.kind.clone()));
            }
            if rt.namespaced {
                meta::set_meta(
                    &mut object,
                    "namespace",
                    Value::String(key.namespace.clone()),
                );
            }
        }
        let now = self.shared.now();
        let mut store = self.shared.lock_store();
        let existing = store.get(&key);
        for field in ["uid", "creationTimestamp"] {
            if meta::meta_str(&object, field).is_none() {
                let value = existing
                    .as_deref()
                    .and_then(|e| meta::meta_str(e, field))
                    .map(str::to_string)
                    .unwrap_or_else(|| {
                        if field == "uid" {
                            meta::new_uid()
                        } else {
                            now.clone()
                        }
                    });
                meta::set_meta(&mut object, field, Value::String(value));
            }
        }
        Ok((*store.put(key, object)).clone())
    }

    /// Deletes an object straight from storage (no finalizers honoured). Returns whether it existed.
    pub fn store_delete(&self, resource: &str, namespace: Option<&str>, name: &str) -> bool {
        match self.key(resource, namespace, name) {
            Ok(key) => self.shared.lock_store().remove(&key).is_some(),
            Err(_) => false,
        }
    }
}
