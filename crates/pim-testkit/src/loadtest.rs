//! The load harness (DESIGN §12): the operator (`controller::run`, on a Tokio runtime of its own
//! whose threads are named [`OPERATOR_THREADS`]), the memory directory and the harness's own
//! client and watch in this process; the fake API server in this process too
//! (`tests/it/load_smoke.rs`, CI's smoke run, which checks the write counts) or in a process of
//! its own ([`Options::apiserver_process`]; `benches/loadtest.rs` by default), so that this
//! process's memory is the operator's and the harness's alone. CPU is counted per thread, so
//! the operator's share is known either way.
//!
//! Time is a [`ManualClock`] that stands still while requests activate, so every window starts
//! and ends at the same instant: moving the clock to that end makes all grants expire at once,
//! the worst case of "10,000 expiring in the same minute", without waiting an hour. Latencies are
//! wall time ([`Instant`]), measured from the moment an object is created or a deadline is
//! reached to the moment the directory or the status shows the effect.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use kube::runtime::watcher;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::api::access_policy::{AccessPolicySpec, ActivationSettings};
use crate::api::activation_request::{ActivationRequestSpec, FINALIZER, Phase, Requester};
use crate::api::common::{PrincipalRef, Role};
use crate::api::eligible_assignment::{EligibleAssignmentSpec, Schedule};
use crate::api::pim_group::{
    DirectoryGroupRef, GroupRoles, PimGroupSpec, RoleSettings, StandingAccess,
};
use crate::api::{AccessPolicy, ActivationRequest, EligibleAssignment, PimGroup};
use crate::clock::{Clock, ManualClock};
use crate::config::Config;
use crate::controller::{self, Dependencies, Health};
use crate::core::membership::Member;
use crate::directory::instrumented::Instrumented;
use crate::directory::memory::MemoryDirectory;
use crate::directory::{Directories, Directory};
use crate::engine::TrustAsWritten;
use crate::metrics::Metrics;

mod server;
mod usage;

pub use server::{Observed, Server, ServerProgram};
pub use usage::{cpu_seconds, cpu_seconds_of, rss_mb, rss_mb_of, thread_cpu_seconds};

/// The name of the operator's runtime threads, to tell its CPU from the harness's.
pub const OPERATOR_THREADS: &str = "pim-operator";

const T0: &str = "2026-03-02T09:00:00Z";
/// How often the harness looks whether a phase is done. Its times come from the watch and the
/// directory's write log, not from these looks, which only cost CPU that the operator, on a
/// 2-core machine, would otherwise have (at 20 ms, the look over 500 groups was a third of the
/// process's samples during revocation).
const POLL: Duration = Duration::from_millis(100);
/// How long requests in the main run last; all end together at T0 + this.
const DURATION_MINS: i64 = 60;
/// How long the requests that come due in the priority run last.
const DUE_DURATION_MINS: i64 = 10;

/// What to run. Defaults are the DESIGN §12 targets.
#[derive(Debug, Clone)]
pub struct Options {
    pub requests: usize,
    pub assignments: usize,
    pub groups: usize,
    /// Latency of every directory call.
    pub latency: Duration,
    /// Directory calls in flight at once; `None` for no limit.
    pub directory_concurrency: Option<usize>,
    /// Directory writes per second during the main run; `None` for no limit.
    pub write_rate: Option<f64>,
    /// The operator's reconciles at once, per kind.
    pub operator_concurrency: u16,
    /// Creates in flight at once from the harness.
    pub create_concurrency: usize,
    /// The idle window over which CPU is measured.
    pub idle: Duration,
    /// Gives up waiting for any phase after this long.
    pub timeout: Duration,
    /// The revocation-priority run, when set.
    pub priority: Option<PriorityOptions>,
    /// Only the fake API server and the harness, with the same objects and no operator: the
    /// memory they take without it, to tell the operator's share of the peak RSS.
    pub without_operator: bool,
    /// Runs the fake API server as this program, apart from the operator; `None`: in this
    /// process.
    pub apiserver_process: Option<ServerProgram>,
    /// The operator's `removalConcurrency`; `None` for its default.
    pub removal_concurrency: Option<u16>,
}

/// Revocation priority under throttling: `pending` grants queue up behind a directory limited
/// to `write_rate` writes a second, while `due` earlier grants reach their end.
#[derive(Debug, Clone)]
pub struct PriorityOptions {
    pub write_rate: f64,
    pub pending: usize,
    pub due: usize,
    /// How long after the pending grants are created the due ones end.
    pub after: Duration,
    /// The pending grants end at the same instant as the due ones: those not yet written must
    /// never be, and those written must be removed.
    pub pending_end_too: bool,
    /// After the due removals, wait until every pending grant is written (or, with
    /// `pending_end_too`, removed again): none is dropped, and revocations do not starve grants.
    pub wait_pending: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            requests: 10_000,
            assignments: 10_000,
            groups: 500,
            latency: Duration::from_millis(20),
            directory_concurrency: None,
            write_rate: None,
            operator_concurrency: 16,
            create_concurrency: 64,
            idle: Duration::from_secs(10),
            timeout: Duration::from_secs(120),
            priority: None,
            without_operator: false,
            apiserver_process: None,
            removal_concurrency: None,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Percentiles {
    pub count: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    pub fn of(mut samples: Vec<Duration>) -> Percentiles {
        samples.sort();
        let at = |q: f64| {
            if samples.is_empty() {
                return 0.0;
            }
            let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
            samples[rank - 1].as_secs_f64() * 1000.0
        };
        Percentiles {
            count: samples.len(),
            p50_ms: at(0.50),
            p95_ms: at(0.95),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        }
    }
}

/// The JSON summary.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub requests: usize,
    pub assignments: usize,
    pub groups: usize,
    pub directory_latency_ms: f64,
    pub operator_concurrency: u16,
    /// `removalConcurrency` as the operator ran with it.
    pub removal_concurrency: u16,
    /// Whether the fake API server ran as a process of its own: then `peak_rss_mb` and
    /// `process_cpu_*` are the operator's and the harness's, without the server's.
    pub apiserver_process: bool,
    /// Setup: groups and assignments created and every group Ready.
    pub setup_seconds: f64,
    /// Created → Active, per request.
    pub created_to_active: Percentiles,
    /// Its parts: created → Scheduled (the request controller decided), Scheduled → the
    /// directory add (the group controller), the add → Active (the request controller saw it).
    pub created_to_scheduled: Percentiles,
    pub scheduled_to_granted: Percentiles,
    pub granted_to_active: Percentiles,
    /// First create → last Active.
    pub activation_wall_seconds: f64,
    /// Requests reaching Active per second of `activation_wall_seconds`.
    pub activations_per_second: f64,
    /// End time → removal confirmed by the directory, per grant.
    pub revocation_lag: Percentiles,
    /// End time → last removal.
    pub revocation_wall_seconds: f64,
    pub revocations_per_second: f64,
    pub directory_adds: usize,
    pub directory_removes: usize,
    pub writes_per_grant: f64,
    pub writes_per_revocation: f64,
    /// Membership listings while requests activated, and in the revocation pass.
    pub list_calls_activation: u64,
    pub list_calls_revocation: u64,
    /// Listings in one resync (every object looked at again, nothing changed), per group and role.
    pub list_calls_per_group_per_resync: f64,
    /// Members granted by a request still in the directory after every end passed.
    pub grants_outliving_end: usize,
    /// Grants written after the clock had passed their end (must be 0).
    pub adds_after_end: usize,
    /// API requests the operator made in the idle window.
    pub idle_api_requests: u64,
    /// The writes among them, by field manager and resource.
    pub idle_api_writes: BTreeMap<String, usize>,
    /// API writes while requests activated, and in the revocation pass, by field manager and
    /// resource.
    pub api_writes_activation: BTreeMap<String, usize>,
    pub api_writes_revocation: BTreeMap<String, usize>,
    pub idle_directory_calls: u64,
    pub idle_window_seconds: f64,
    /// CPU seconds of this process (the operator, the harness, and the fake API server unless
    /// it runs apart) in the idle window.
    pub idle_cpu_seconds: f64,
    pub idle_cpu_percent: f64,
    /// Of which the operator's threads.
    pub idle_operator_cpu_seconds: f64,
    /// This process's peak resident memory (`VmHWM`): the operator, the memory directory and
    /// the harness, and the fake API server unless it runs apart.
    pub peak_rss_mb: f64,
    pub rss_after_load_mb: f64,
    /// CPU seconds of the operator's threads while requests activated (first create to last
    /// Active) and in the revocation pass, and per 1,000 of them.
    pub operator_cpu_activation_seconds: f64,
    pub operator_cpu_per_1k_activations: f64,
    pub operator_cpu_revocation_seconds: f64,
    pub operator_cpu_per_1k_revocations: f64,
    /// The same for this whole process (the operator, the harness's creates, watch and polls,
    /// and the fake API server unless it runs apart).
    pub process_cpu_per_1k_activations: f64,
    pub process_cpu_per_1k_revocations: f64,
    /// The fake API server process, when it runs apart: peak and after-load resident memory,
    /// and its CPU seconds per 1,000 activations.
    pub apiserver_peak_rss_mb: Option<f64>,
    pub apiserver_rss_after_load_mb: Option<f64>,
    pub apiserver_cpu_per_1k_activations: Option<f64>,
    /// The most removals the directory had in flight at once in the revocation pass.
    pub removals_in_flight_max: usize,
    pub priority: Option<PrioritySummary>,
    /// Reconciles per kind over the whole run (from the operator's metrics).
    pub reconciles: BTreeMap<String, u64>,
    /// Reconciles per kind in the activation phase (first create until quiet after the last
    /// Active), per activation; then in the resync minute and in the revocation phase, per
    /// revocation (issue 21, item 3).
    pub reconciles_per_activation: BTreeMap<String, f64>,
    pub reconciles_resync: BTreeMap<String, u64>,
    pub reconciles_per_revocation: BTreeMap<String, f64>,
    /// Their mean duration per kind, in milliseconds.
    pub reconcile_mean_ms: BTreeMap<String, f64>,
    pub total_seconds: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct PrioritySummary {
    pub write_rate: f64,
    pub pending_grants: usize,
    pub due_revocations: usize,
    /// Grants still not written when the due revocations' end came.
    pub grants_pending_at_end: usize,
    /// End time → removal confirmed, for the due revocations.
    pub revocation_lag: Percentiles,
    /// Grants written between the end time and the last due removal.
    pub grants_written_before_last_revocation: usize,
    /// The most grants written after the end time and before any one due removal: how many
    /// grants a due revocation waited behind.
    pub grants_ahead_of_a_revocation_max: usize,
    /// Due grants still in the directory when the harness stopped waiting (must be 0).
    pub due_left: usize,
    /// Due grants written after their end (must be 0).
    pub adds_after_end: usize,
    /// Pending grants that took effect after the end; with `pending_end_too`, at most the adds
    /// already in flight (the add lanes) when the end came.
    pub pending_added_after_end: usize,
    /// With `wait_pending`: pending grants never written, or (with `pending_end_too`) still in
    /// the directory after their end (must be 0).
    pub pending_left: usize,
    /// The time a revocation would wait queued behind the grants pending at the end, at the
    /// directory's rate.
    pub fifo_wait_estimate_ms: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("fake API server: {0}")]
    Server(String),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("{0}")]
    Setup(String),
}

fn user(i: usize) -> String {
    format!("u{i}")
}

fn group_name(j: usize) -> String {
    format!("g{j}")
}

fn group_id(j: usize) -> String {
    format!("g{j}-id")
}

/// The world: server, clock, directory, operator.
pub struct World {
    pub server: Server,
    /// The harness's client.
    pub client: kube::Client,
    /// The operator's clock; move it with [`World::set_clock`], which moves the server's too.
    pub clock: Arc<ManualClock>,
    pub directory: Arc<MemoryDirectory>,
    pub metrics: Arc<Metrics>,
    stop: CancellationToken,
    /// The operator's thread, and a signal that it has stopped.
    operator: Option<(
        std::thread::JoinHandle<()>,
        tokio::sync::oneshot::Receiver<()>,
    )>,
    /// When each request was first seen Active.
    active_at: Arc<Mutex<HashMap<String, Instant>>>,
    /// When each request was first seen Scheduled (approved, waiting for the directory).
    scheduled_at: Arc<Mutex<HashMap<String, Instant>>>,
    watch_task: Option<tokio::task::JoinHandle<()>>,
    options: Options,
}

impl World {
    pub async fn start(options: Options) -> Result<World, LoadError> {
        let clock = Arc::new(ManualClock::new(
            T0.parse().map_err(|e| LoadError::Setup(format!("{e}")))?,
        ));
        let server = Server::start(options.apiserver_process.as_ref(), clock.clone()).await?;
        let client = kube::Client::try_from(server.config()?)?;
        let directory = Arc::new(MemoryDirectory::new());
        directory.set_latency(options.latency);
        directory.set_concurrency_limit(options.directory_concurrency);
        directory.set_write_rate(options.write_rate);
        Ok(World {
            server,
            client,
            clock,
            directory,
            metrics: Arc::new(Metrics::new()),
            stop: CancellationToken::new(),
            operator: None,
            active_at: Arc::default(),
            scheduled_at: Arc::default(),
            watch_task: None,
            options,
        })
    }

    /// Moves the clock to `at`: the server's first, so that what it stamps from then on is
    /// never behind what the operator decides on.
    pub fn set_clock(&self, at: Timestamp) -> Result<(), LoadError> {
        self.server.set_clock(at)?;
        self.clock.set(at);
        Ok(())
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<DynamicType = (), Scope = kube::core::ClusterResourceScope>,
    {
        Api::all(self.client.clone())
    }

    /// One policy (1h, no approval), the groups, and Eligible assignments spread over them.
    pub async fn seed(&self) -> Result<(), LoadError> {
        let pp = PostParams::default();
        let policy = AccessPolicySpec {
            activation: ActivationSettings {
                max_duration: Some("1h".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        self.api::<AccessPolicy>()
            .create(&pp, &AccessPolicy::new("p", policy))
            .await?;
        let groups = (0..self.options.groups).map(|j| {
            let spec = PimGroupSpec {
                directory: "memory".into(),
                group: DirectoryGroupRef {
                    id: Some(group_id(j)),
                    ..Default::default()
                },
                roles: GroupRoles {
                    member: RoleSettings { policy: "p".into() },
                    owner: None,
                },
                standing_access: StandingAccess::Remove,
                rbac: None,
                ..Default::default()
            };
            PimGroup::new(&group_name(j), spec)
        });
        let api = self.api::<PimGroup>();
        futures::stream::iter(groups)
            .map(|g| {
                let api = api.clone();
                async move { api.create(&PostParams::default(), &g).await.map(drop) }
            })
            .buffer_unordered(self.options.create_concurrency)
            .try_collect::<Vec<_>>()
            .await?;
        let assignments = (0..self.options.assignments).map(|i| {
            let spec = EligibleAssignmentSpec {
                group: group_name(i % self.options.groups.max(1)),
                principal: PrincipalRef::user(user(i)),
                schedule: Schedule {
                    duration: Some("30d".into()),
                    ..Default::default()
                },
                justification: Some("on call".into()),
                ..Default::default()
            };
            EligibleAssignment::new(&format!("a{i}"), spec)
        });
        let api = self.api::<EligibleAssignment>();
        futures::stream::iter(assignments)
            .map(|a| {
                let api = api.clone();
                async move { api.create(&PostParams::default(), &a).await.map(drop) }
            })
            .buffer_unordered(self.options.create_concurrency)
            .try_collect::<Vec<_>>()
            .await?;
        Ok(())
    }

    /// Starts the operator, and the harness's own watch of request phases.
    pub fn launch(&mut self) -> Result<(), LoadError> {
        let removal = self
            .options
            .removal_concurrency
            .map_or(String::new(), |n| format!("removalConcurrency: {n}\n"));
        let text = format!(
            "resyncInterval: 1h\nconcurrency: {}\n{removal}leaderElection: {{enabled: false}}\nnamespace: pim-system\n",
            self.options.operator_concurrency
        );
        let settings =
            Config::parse(&text, "loadtest").map_err(|e| LoadError::Setup(e.to_string()))?;
        let mut directories = Directories::default();
        let memory: Arc<dyn Directory> = self.directory.clone();
        directories.insert("memory", Instrumented::wrap(memory, self.metrics.clone()));
        let config = self.server.config()?;
        let (clock, metrics) = (self.clock.clone(), self.metrics.clone());
        let token = self.stop.clone();
        let (stopped, on_stop) = tokio::sync::oneshot::channel();
        // A runtime of its own, as in its own process: its threads' CPU is the operator's, and
        // its client's connections live and die with it.
        let thread = std::thread::Builder::new()
            .name(OPERATOR_THREADS.into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .thread_name(OPERATOR_THREADS)
                    .enable_all()
                    .build();
                match runtime {
                    Ok(runtime) => runtime.block_on(async move {
                        let client = match kube::Client::try_from(config) {
                            Ok(client) => client,
                            Err(error) => {
                                tracing::error!(%error, "no client for the operator");
                                return;
                            }
                        };
                        let deps = Dependencies {
                            client,
                            settings,
                            directories,
                            attestor: Arc::new(TrustAsWritten),
                            clock,
                            metrics,
                            health: Arc::new(Health::default()),
                        };
                        if let Err(error) = controller::run(deps, token).await {
                            tracing::error!(%error, "operator stopped");
                        }
                    }),
                    Err(error) => tracing::error!(%error, "no runtime for the operator"),
                }
                let _ = stopped.send(());
            })
            .map_err(|e| LoadError::Setup(format!("cannot start the operator's thread: {e}")))?;
        self.operator = Some((thread, on_stop));
        self.watch_phases();
        Ok(())
    }

    /// The harness's own watch of request phases.
    fn watch_phases(&mut self) {
        let api = self.api::<ActivationRequest>();
        let active_at = self.active_at.clone();
        let scheduled_at = self.scheduled_at.clone();
        self.watch_task = Some(tokio::spawn(async move {
            watcher(api, watcher::Config::default())
                .for_each(|event| {
                    let record = |r: &ActivationRequest| {
                        let seen = match r.status.as_ref().and_then(|s| s.phase) {
                            Some(Phase::Active) => &active_at,
                            Some(Phase::Scheduled) => &scheduled_at,
                            _ => return,
                        };
                        let name = r.metadata.name.clone().unwrap_or_default();
                        seen.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .entry(name)
                            .or_insert_with(Instant::now);
                    };
                    if let Ok(watcher::Event::Apply(r) | watcher::Event::InitApply(r)) = event {
                        record(&r);
                    }
                    async {}
                })
                .await;
        }));
    }

    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some((thread, stopped)) = self.operator.take()
            && tokio::time::timeout(Duration::from_secs(10), stopped)
                .await
                .is_ok()
        {
            // It has stopped; joining is immediate. One that did not stop is left behind.
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        if let Some(task) = self.watch_task.take() {
            task.abort();
        }
        self.server.shutdown().await;
    }

    /// Waits until every group reports Ready.
    async fn wait_groups_ready(&self) -> Result<(), LoadError> {
        let api = self.api::<PimGroup>();
        let deadline = Instant::now() + self.options.timeout;
        loop {
            let groups = api.list(&Default::default()).await?;
            let ready = groups
                .items
                .iter()
                .filter(|g| {
                    g.status.as_ref().is_some_and(|s| {
                        s.conditions
                            .iter()
                            .any(|c| c.type_ == "Ready" && c.status == "True")
                    })
                })
                .count();
            if ready == self.options.groups {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(LoadError::Timeout(format!(
                    "{ready} of {} groups Ready",
                    self.options.groups
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until every assignment has a status: the operator has looked at each, and nothing
    /// of the setup still competes with the activations that follow.
    async fn wait_assignments_settled(&self) -> Result<(), LoadError> {
        let api = self.api::<EligibleAssignment>();
        let deadline = Instant::now() + self.options.timeout;
        loop {
            let assignments = api.list(&Default::default()).await?;
            let settled = assignments
                .items
                .iter()
                .filter(|a| a.status.as_ref().is_some_and(|s| s.phase.is_some()))
                .count();
            if settled == self.options.assignments {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(LoadError::Timeout(format!(
                    "{settled} of {} assignments have a status",
                    self.options.assignments
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Creates requests `names` for assignments `indices`, lasting `minutes`; returns when each
    /// create was sent.
    async fn create_requests(
        &self,
        indices: impl Iterator<Item = usize>,
        minutes: i64,
    ) -> Result<HashMap<String, Instant>, LoadError> {
        let m = self.options.assignments.max(1);
        let g = self.options.groups.max(1);
        let api = self.api::<ActivationRequest>();
        let created = Arc::new(Mutex::new(HashMap::new()));
        futures::stream::iter(indices)
            .map(|i| {
                let api = api.clone();
                let created = created.clone();
                let a = i % m;
                let spec = ActivationRequestSpec {
                    group: group_name(a % g),
                    duration: Some(format!("{minutes}m")),
                    justification: Some("load test".into()),
                    requester: Some(Requester {
                        username: user(a),
                        ..Default::default()
                    }),
                    principal: Some(user(a)),
                    ..Default::default()
                };
                let name = format!("r{i}");
                let mut request = ActivationRequest::new(&name, spec);
                // The mutating webhook puts the finalizer on at create.
                request.metadata.finalizers = Some(vec![FINALIZER.to_owned()]);
                async move {
                    let sent = Instant::now();
                    api.create(&PostParams::default(), &request).await?;
                    created
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(name, sent);
                    Ok::<_, LoadError>(())
                }
            })
            .buffer_unordered(self.options.create_concurrency)
            .try_collect::<Vec<_>>()
            .await?;
        let created = std::mem::take(&mut *created.lock().unwrap_or_else(|e| e.into_inner()));
        Ok(created)
    }

    async fn wait_active(&self, names: &HashMap<String, Instant>) -> Result<(), LoadError> {
        let deadline = Instant::now() + self.options.timeout;
        loop {
            let done = {
                let active = self.active_at.lock().unwrap_or_else(|e| e.into_inner());
                names.keys().filter(|n| active.contains_key(*n)).count()
            };
            if done == names.len() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(LoadError::Timeout(format!(
                    "{done} of {} requests Active",
                    names.len()
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Principals of `group` that are users, over every group.
    fn members_of_users(&self, users: &BTreeSet<(String, String)>) -> usize {
        (0..self.options.groups)
            .map(|j| {
                let members = self.directory.members(&group_id(j), Role::Member);
                members
                    .iter()
                    .filter(|m| match m {
                        Member::User(u) => users.contains(&(group_id(j), u.clone())),
                        Member::Group(_) => false,
                    })
                    .count()
            })
            .sum()
    }

    /// Waits until none of `grants` ((group id, user)) is in the directory.
    async fn wait_removed(&self, grants: &BTreeSet<(String, String)>) -> Result<(), LoadError> {
        match self.wait_removed_or_timeout(grants).await {
            0 => Ok(()),
            left => Err(LoadError::Timeout(format!("{left} grants not yet removed"))),
        }
    }

    /// Waits until none of `grants` is in the directory, or the timeout; returns how many are.
    async fn wait_removed_or_timeout(&self, grants: &BTreeSet<(String, String)>) -> usize {
        let deadline = Instant::now() + self.options.timeout;
        loop {
            let left = self.members_of_users(grants);
            if left == 0 || Instant::now() > deadline {
                return left;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until the directory has seen no call for `quiet`.
    async fn wait_quiet(&self, quiet: Duration) {
        let deadline = Instant::now() + self.options.timeout;
        let mut last = (self.directory.writes().len(), self.directory.list_calls());
        let mut since = Instant::now();
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = (self.directory.writes().len(), self.directory.list_calls());
            if now != last {
                last = now;
                since = Instant::now();
            } else if since.elapsed() >= quiet {
                return;
            }
        }
    }

    /// API writes after the first `skip`, by field manager, verb and resource.
    fn api_writes_since(&self, skip: usize) -> Result<BTreeMap<String, usize>, LoadError> {
        Ok(self.server.observe(skip)?.by)
    }

    /// The operator's reconciles so far, per kind.
    fn reconciles(&self) -> BTreeMap<String, f64> {
        reconcile_metric(&self.metrics.encode(), "count")
    }

    /// API writes logged so far.
    fn api_writes(&self) -> Result<usize, LoadError> {
        Ok(self.server.observe(usize::MAX)?.writes)
    }

    fn grant_of(&self, i: usize) -> (String, String) {
        let a = i % self.options.assignments.max(1);
        (group_id(a % self.options.groups.max(1)), user(a))
    }
}

/// Runs the whole harness and returns its summary.
pub async fn run(options: Options) -> Result<Summary, LoadError> {
    let mut world = World::start(options.clone()).await?;
    let result = run_in_world(&mut world, &options).await;
    world.shutdown().await;
    result
}

/// Runs the harness in a started world, leaving it running for the caller to inspect.
pub async fn run_in_world(world: &mut World, options: &Options) -> Result<Summary, LoadError> {
    let started = Instant::now();
    let mut summary = Summary {
        requests: options.requests,
        assignments: options.assignments,
        groups: options.groups,
        directory_latency_ms: options.latency.as_secs_f64() * 1000.0,
        operator_concurrency: options.operator_concurrency,
        removal_concurrency: options
            .removal_concurrency
            .unwrap_or(Config::default().removal_concurrency),
        apiserver_process: options.apiserver_process.is_some(),
        ..Default::default()
    };
    let t0: Timestamp = T0.parse().map_err(|e| LoadError::Setup(format!("{e}")))?;

    if options.without_operator {
        return memory_without_operator(world, options, summary).await;
    }

    // Setup: everything but the requests, then the operator, until every group is Ready.
    world.seed().await?;
    world.launch()?;
    world.wait_groups_ready().await?;
    world.wait_assignments_settled().await?;
    world.wait_quiet(Duration::from_millis(500)).await;
    summary.setup_seconds = started.elapsed().as_secs_f64();

    // Activation: N requests, no approval needed.
    let writes_before = world.directory.writes().len();
    let lists_before = world.directory.list_calls();
    let api_mark = world.api_writes()?;
    let server_cpu_before = world.server.usage().map(|(.., cpu)| cpu);
    let (operator_cpu_before, cpu_before) = (thread_cpu_seconds(OPERATOR_THREADS), cpu_seconds());
    let reconciles_before = world.reconciles();
    // Phase marks (RUST_LOG=loadtest=info), to attach a profiler to one phase.
    tracing::info!(target: "loadtest", "activation starts");
    let first_create = Instant::now();
    let created = world
        .create_requests(0..options.requests, DURATION_MINS)
        .await?;
    world.wait_active(&created).await?;
    let active_at = world
        .active_at
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let latencies: Vec<Duration> = created
        .iter()
        .filter_map(|(name, sent)| Some(active_at.get(name)?.saturating_duration_since(*sent)))
        .collect();
    let last_active = created
        .keys()
        .filter_map(|n| active_at.get(n))
        .max()
        .copied()
        .unwrap_or(first_create);
    summary.created_to_active = Percentiles::of(latencies);
    let scheduled_at = world
        .scheduled_at
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let granted_at: HashMap<(String, String), Instant> = world
        .directory
        .timed_writes()
        .into_iter()
        .filter(|(_, added, ..)| *added)
        .filter_map(|(t, _, g, _, m)| match m {
            Member::User(u) => Some(((g.0, u), t)),
            Member::Group(_) => None,
        })
        .collect();
    let mut parts = (Vec::new(), Vec::new(), Vec::new());
    for (name, sent) in &created {
        let i = name
            .strip_prefix('r')
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or_default();
        let (scheduled, granted, active) = (
            scheduled_at.get(name),
            granted_at.get(&world.grant_of(i)),
            active_at.get(name),
        );
        if let (Some(scheduled), Some(granted), Some(active)) = (scheduled, granted, active) {
            parts.0.push(scheduled.saturating_duration_since(*sent));
            parts.1.push(granted.saturating_duration_since(*scheduled));
            parts.2.push(active.saturating_duration_since(*granted));
        }
    }
    summary.created_to_scheduled = Percentiles::of(parts.0);
    summary.scheduled_to_granted = Percentiles::of(parts.1);
    summary.granted_to_active = Percentiles::of(parts.2);
    summary.activation_wall_seconds = last_active
        .saturating_duration_since(first_create)
        .as_secs_f64();
    summary.activations_per_second =
        options.requests as f64 / summary.activation_wall_seconds.max(1e-9);
    world.wait_quiet(Duration::from_millis(500)).await;
    // Once quiet, so that the work that follows Active (Events, records) counts too.
    let (operator_cpu, cpu) = (thread_cpu_seconds(OPERATOR_THREADS), cpu_seconds());
    let thousands = options.requests.max(1) as f64 / 1000.0;
    summary.reconciles_per_activation =
        per(&world.reconciles(), &reconciles_before, options.requests);
    summary.operator_cpu_activation_seconds = operator_cpu - operator_cpu_before;
    summary.operator_cpu_per_1k_activations = summary.operator_cpu_activation_seconds / thousands;
    summary.process_cpu_per_1k_activations = (cpu - cpu_before) / thousands;
    if let (Some(before), Some((.., after))) = (server_cpu_before, world.server.usage()) {
        summary.apiserver_cpu_per_1k_activations = Some((after - before) / thousands);
    }
    let grants: BTreeSet<(String, String)> =
        (0..options.requests).map(|i| world.grant_of(i)).collect();
    summary.list_calls_activation = world.directory.list_calls() - lists_before;
    summary.api_writes_activation = world.api_writes_since(api_mark)?;
    let (_, rss_now) = rss_mb();
    summary.rss_after_load_mb = rss_now;
    if let Some((_, server_now, _)) = world.server.usage() {
        summary.apiserver_rss_after_load_mb = Some(server_now);
    }

    // Idle: nothing due for an hour; the operator should do nothing.
    let api_before = world.server.observe(usize::MAX)?;
    let calls_before = (world.directory.writes().len(), world.directory.list_calls());
    let cpu_before = cpu_seconds();
    let operator_cpu_before = thread_cpu_seconds(OPERATOR_THREADS);
    let idle_started = Instant::now();
    tokio::time::sleep(options.idle).await;
    summary.idle_cpu_seconds = cpu_seconds() - cpu_before;
    summary.idle_operator_cpu_seconds = thread_cpu_seconds(OPERATOR_THREADS) - operator_cpu_before;
    summary.idle_window_seconds = idle_started.elapsed().as_secs_f64();
    summary.idle_cpu_percent =
        100.0 * summary.idle_cpu_seconds / summary.idle_window_seconds.max(1e-9);
    let api_after = world.server.observe(api_before.writes)?;
    summary.idle_api_requests = api_after.requests.saturating_sub(api_before.requests);
    summary.idle_api_writes = api_after.by;
    summary.idle_directory_calls =
        (world.directory.writes().len() + world.directory.list_calls() as usize)
            .saturating_sub(calls_before.0 + calls_before.1 as usize) as u64;

    // A resync with nothing to change: a minute passes, every object is looked at again.
    let lists_before = world.directory.list_calls();
    let reconciles_before = world.reconciles();
    world.set_clock(world.clock.now() + SignedDuration::from_mins(1))?;
    world.wait_quiet(Duration::from_millis(1000)).await;
    summary.reconciles_resync = per(&world.reconciles(), &reconciles_before, 1)
        .into_iter()
        .map(|(kind, n)| (kind, n as u64))
        .collect();
    summary.list_calls_per_group_per_resync =
        (world.directory.list_calls() - lists_before) as f64 / options.groups.max(1) as f64;

    // Revocation: every window ends at T0 + DURATION_MINS; move the clock there.
    let lists_before = world.directory.list_calls();
    let end = t0 + SignedDuration::from_mins(DURATION_MINS);
    let writes_mark = world.directory.writes().len();
    let api_mark = world.api_writes()?;
    world.directory.reset_removals_in_flight_max();
    let (operator_cpu_before, cpu_before) = (thread_cpu_seconds(OPERATOR_THREADS), cpu_seconds());
    let reconciles_before = world.reconciles();
    tracing::info!(target: "loadtest", "revocation starts");
    let ended = Instant::now();
    world.set_clock(end)?;
    world.wait_removed(&grants).await?;
    tracing::info!(target: "loadtest", "revocation done");
    summary.removals_in_flight_max = world.directory.removals_in_flight_max();
    let removes: Vec<_> = world.directory.timed_writes()[writes_mark..]
        .iter()
        .filter(|(_, added, ..)| !added)
        .map(|(t, ..)| t.saturating_duration_since(ended))
        .collect();
    summary.revocation_wall_seconds = removes
        .iter()
        .max()
        .copied()
        .unwrap_or_default()
        .as_secs_f64();
    summary.revocations_per_second =
        removes.len() as f64 / summary.revocation_wall_seconds.max(1e-9);
    summary.revocation_lag = Percentiles::of(removes);
    world.wait_quiet(Duration::from_millis(500)).await;
    let (operator_cpu, cpu) = (thread_cpu_seconds(OPERATOR_THREADS), cpu_seconds());
    summary.reconciles_per_revocation = per(&world.reconciles(), &reconciles_before, grants.len());
    summary.list_calls_revocation = world.directory.list_calls() - lists_before;
    summary.api_writes_revocation = world.api_writes_since(api_mark)?;
    summary.grants_outliving_end = world.members_of_users(&grants);
    summary.adds_after_end = adds_after(&world.directory.timed_writes(), ended, &grants);

    let writes = world.directory.writes()[writes_before..].to_vec();
    summary.directory_adds = writes.iter().filter(|w| w.0).count();
    summary.directory_removes = writes.iter().filter(|w| !w.0).count();
    summary.writes_per_grant = summary.directory_adds as f64 / grants.len().max(1) as f64;
    summary.writes_per_revocation = summary.directory_removes as f64 / grants.len().max(1) as f64;
    let revoked = (grants.len().max(1) as f64) / 1000.0;
    summary.operator_cpu_revocation_seconds = operator_cpu - operator_cpu_before;
    summary.operator_cpu_per_1k_revocations = summary.operator_cpu_revocation_seconds / revoked;
    summary.process_cpu_per_1k_revocations = (cpu - cpu_before) / revoked;

    if let Some(priority) = &options.priority {
        summary.priority = Some(run_priority(world, options, priority).await?);
    }
    let (peak, _) = rss_mb();
    summary.peak_rss_mb = peak;
    if let Some((server_peak, ..)) = world.server.usage() {
        summary.apiserver_peak_rss_mb = Some(server_peak);
    }
    let metrics = world.metrics.encode();
    summary.reconciles = reconcile_metric(&metrics, "count")
        .into_iter()
        .map(|(kind, n)| (kind, n as u64))
        .collect();
    summary.reconcile_mean_ms = reconcile_metric(&metrics, "sum")
        .into_iter()
        .map(|(kind, sum)| {
            let n = summary.reconciles.get(&kind).copied().unwrap_or(1).max(1);
            (kind, 1000.0 * sum / n as f64)
        })
        .collect();
    summary.total_seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// The same objects with no operator: what the fake API server and the harness take.
async fn memory_without_operator(
    world: &mut World,
    options: &Options,
    mut summary: Summary,
) -> Result<Summary, LoadError> {
    let started = Instant::now();
    world.seed().await?;
    world.watch_phases();
    world
        .create_requests(0..options.requests, DURATION_MINS)
        .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (peak, now) = rss_mb();
    summary.peak_rss_mb = peak;
    summary.rss_after_load_mb = now;
    if let Some((server_peak, server_now, _)) = world.server.usage() {
        summary.apiserver_peak_rss_mb = Some(server_peak);
        summary.apiserver_rss_after_load_mb = Some(server_now);
    }
    summary.total_seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// Revocation priority: `due` grants are Active; the directory is throttled; `pending` grants
/// are requested; then the due ones reach their end while the grants queue.
async fn run_priority(
    world: &mut World,
    options: &Options,
    priority: &PriorityOptions,
) -> Result<PrioritySummary, LoadError> {
    // New requests, after the main run's: r{N}…, for the same assignments.
    let base = options.requests;
    let due_range = base..base + priority.due;
    let pending_range = base + priority.due..base + priority.due + priority.pending;
    let due_created = world
        .create_requests(due_range.clone(), DUE_DURATION_MINS)
        .await?;
    world.wait_active(&due_created).await?;
    world.wait_quiet(Duration::from_millis(500)).await;
    let due: BTreeSet<(String, String)> = due_range.map(|i| world.grant_of(i)).collect();
    let pending: BTreeSet<(String, String)> =
        pending_range.clone().map(|i| world.grant_of(i)).collect();
    if !due.is_disjoint(&pending) {
        return Err(LoadError::Setup(
            "due and pending grants overlap; use more assignments".into(),
        ));
    }

    world.directory.set_write_rate(Some(priority.write_rate));
    let writes_mark = world.directory.writes().len();
    let pending_minutes = if priority.pending_end_too {
        DUE_DURATION_MINS
    } else {
        DURATION_MINS
    };
    let pending_created = world
        .create_requests(pending_range, pending_minutes)
        .await?;
    tokio::time::sleep(priority.after).await;
    let now = world.clock.now();
    let end = now + SignedDuration::from_mins(DUE_DURATION_MINS);
    let granted_before_end = world.directory.writes()[writes_mark..]
        .iter()
        .filter(|w| w.0)
        .count();
    let ended = Instant::now();
    world.set_clock(end)?;
    let due_left = world.wait_removed_or_timeout(&due).await;
    let pending_left = match (priority.wait_pending, priority.pending_end_too) {
        (false, _) => 0,
        (true, true) => world.wait_removed_or_timeout(&pending).await,
        (true, false) => match world.wait_active(&pending_created).await {
            Ok(()) => 0,
            Err(_) => {
                let active = world.active_at.lock().unwrap_or_else(|e| e.into_inner());
                pending_created
                    .keys()
                    .filter(|n| !active.contains_key(*n))
                    .count()
            }
        },
    };
    let timed = world.directory.timed_writes()[writes_mark..].to_vec();
    let due_removes: Vec<Instant> = timed
        .iter()
        .filter(|(_, added, g, _, m)| {
            !added && matches!(m, Member::User(u) if due.contains(&(g.0.clone(), u.clone())))
        })
        .map(|(t, ..)| *t)
        .collect();
    let last_removal = due_removes.iter().max().copied().unwrap_or(ended);
    let grants_between = timed
        .iter()
        .filter(|(t, added, ..)| *added && *t > ended && *t <= last_removal)
        .count();
    let add_times: Vec<Instant> = timed
        .iter()
        .filter(|(t, added, ..)| *added && *t > ended)
        .map(|(t, ..)| *t)
        .collect();
    let grants_ahead_max = due_removes
        .iter()
        .map(|removed| add_times.iter().filter(|t| *t <= removed).count())
        .max()
        .unwrap_or_default();
    let pending_at_end = pending.len().saturating_sub(granted_before_end);
    world.directory.set_write_rate(options.write_rate);
    Ok(PrioritySummary {
        write_rate: priority.write_rate,
        pending_grants: priority.pending,
        due_revocations: priority.due,
        grants_pending_at_end: pending_at_end,
        revocation_lag: Percentiles::of(
            due_removes
                .iter()
                .map(|t| t.saturating_duration_since(ended))
                .collect(),
        ),
        grants_written_before_last_revocation: grants_between,
        grants_ahead_of_a_revocation_max: grants_ahead_max,
        due_left,
        adds_after_end: adds_after(&timed, ended, &due),
        pending_added_after_end: adds_after(&timed, ended, &pending),
        pending_left,
        fifo_wait_estimate_ms: 1000.0 * pending_at_end as f64 / priority.write_rate,
    })
}

/// The reconciles per kind made between two counts, divided by `n`.
fn per(
    after: &BTreeMap<String, f64>,
    before: &BTreeMap<String, f64>,
    n: usize,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(kind, count)| {
            let made = count - before.get(kind).copied().unwrap_or(0.0);
            (kind.clone(), made / n.max(1) as f64)
        })
        .collect()
}

/// `pim_reconcile_duration_seconds_{what}{kind="…"} N` lines of the metrics text, by kind.
fn reconcile_metric(metrics: &str, what: &str) -> BTreeMap<String, f64> {
    let prefix = format!("pim_reconcile_duration_seconds_{what}{{");
    metrics
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| {
            let kind = l.split("kind=\"").nth(1)?.split('"').next()?;
            let n = l.rsplit(' ').next()?.parse().ok()?;
            Some((kind.to_owned(), n))
        })
        .collect()
}

/// Adds of `grants` ((group id, user)) that took effect after `end`, when the clock passed
/// their end.
fn adds_after(
    writes: &[(Instant, bool, crate::directory::GroupId, Role, Member)],
    end: Instant,
    grants: &BTreeSet<(String, String)>,
) -> usize {
    writes
        .iter()
        .filter(|(t, added, group, _, member)| {
            *added
                && *t > end
                && matches!(member, Member::User(u) if grants.contains(&(group.0.clone(), u.clone())))
        })
        .count()
}

/// Counts of writes per (group id, user), for checks.
pub fn writes_by_grant(
    writes: &[(bool, crate::directory::GroupId, Role, Member)],
) -> BTreeMap<(String, String), (usize, usize)> {
    let mut by = BTreeMap::<(String, String), (usize, usize)>::new();
    for (added, group, _, member) in writes {
        if let Member::User(u) = member {
            let entry = by.entry((group.0.clone(), u.clone())).or_default();
            if *added {
                entry.0 += 1;
            } else {
                entry.1 += 1;
            }
        }
    }
    by
}
