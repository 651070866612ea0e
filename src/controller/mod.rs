//! The controllers of the four kinds, over one shared watch per kind. Each reconciler follows
//! one pipeline: snapshot the caches → decide with the engine (pure) → apply to the directory →
//! write status by server-side apply.

pub mod assignment;
pub mod context;
pub mod delivery;
pub mod error;
pub mod events;
pub mod fence;
pub mod group;
pub mod index;
pub mod jumps;
pub mod ledger;
pub mod policy;
pub mod priority;
pub mod request;
pub mod retention;
pub mod review;
pub mod wakes;
pub mod writes;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use futures::{Stream, StreamExt};
use kube::api::{Api, ListParams};
use kube::runtime::controller::Config as ControllerConfig;
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{UnboundedReceiverStream, WatchStream};
use tokio_util::sync::CancellationToken;

use self::context::{Context, MembershipCache, Stores};
use self::events::Events;
use self::fence::{Fenced, LeaseFence};
use self::index::{ActiveRequests, GroupIndex};
use self::wakes::{AssignmentChanges, GroupWakes, OwnWrites, StatusOnly};
use crate::api::pim_grant::GrantSourceKind;
use crate::api::pim_group::StandingAccess;
use crate::api::{
    AccessPolicy, AccessReview, ActivationRequest, EligibleAssignment, PimGrant, PimGroup,
};
use crate::clock::Clock;
use crate::config::Settings;
use crate::directory::Directories;
use crate::engine::Attestor;
use crate::lenient::Lenient;
use crate::metrics::Metrics;

/// Buffer of each shared watch; a slow controller makes the watch wait rather than lose events.
const SHARED_BUFFER: usize = 1024;

/// What `/readyz` and `/healthz` report.
#[derive(Debug, Default)]
pub struct Health {
    /// 0 unknown, 1 follower, 2 leader.
    leadership: AtomicU8,
    caches_synced: AtomicBool,
    /// Why no request can be granted (no webhook, no attestation key), set at start.
    cannot_grant: std::sync::OnceLock<String>,
}

impl Health {
    /// Records leadership, logging one line when it changes.
    pub fn set_leader(&self, leader: bool) {
        let now = if leader { 2 } else { 1 };
        let before = self.leadership.swap(now, Ordering::SeqCst);
        if !leader {
            self.caches_synced.store(false, Ordering::SeqCst);
        }
        if before != now {
            if leader {
                tracing::info!(leader = true, "this replica is the leader: controllers run");
            } else {
                tracing::info!(
                    leader = false,
                    "this replica is a follower: another holds the lease, controllers wait"
                );
            }
        }
    }

    pub fn set_synced(&self) {
        self.caches_synced.store(true, Ordering::SeqCst);
    }

    pub fn is_leader(&self) -> bool {
        self.leadership.load(Ordering::SeqCst) == 2
    }

    /// Ready once leadership is known, and, for the leader, once its caches are synced.
    pub fn is_ready(&self) -> bool {
        match self.leadership.load(Ordering::SeqCst) {
            1 => true,
            2 => self.caches_synced.load(Ordering::SeqCst),
            _ => false,
        }
    }

    /// Says, in `/readyz`, why nothing can be granted (see `startup::Startup::cannot_grant`).
    pub fn set_cannot_grant(&self, why: String) {
        // Set once at start; a second reason would only repeat the first.
        let _ = self.cannot_grant.set(why);
    }

    pub fn cannot_grant(&self) -> Option<&str> {
        self.cannot_grant.get().map(String::as_str)
    }
}

/// Everything the controllers need from outside.
pub struct Dependencies {
    pub client: Client,
    pub settings: Settings,
    pub directories: Directories,
    pub attestor: Arc<dyn Attestor>,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "the {0} CustomResourceDefinition is not installed in this cluster; install the CRDs with `pim-operator crds | kubectl apply -f -`"
    )]
    CrdMissing(String),
    #[error("cannot reach the Kubernetes API server: {0}")]
    Unreachable(kube::Error),
    #[error("leader election: {0}")]
    LeaderElection(String),
}

/// Checks that the API server answers and serves our four kinds.
pub async fn preflight(client: &Client) -> Result<(), StartError> {
    async fn check<K>(client: &Client) -> Result<(), StartError>
    where
        K: Resource<DynamicType = (), Scope = kube::core::ClusterResourceScope>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        let api: Api<Lenient<K>> = Api::all(client.clone());
        match api.list(&ListParams::default().limit(1)).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Err(StartError::CrdMissing(
                format!("{}.{}", K::plural(&()), K::group(&())),
            )),
            Err(error) => Err(StartError::Unreachable(error)),
        }
    }
    check::<AccessPolicy>(client).await?;
    check::<PimGroup>(client).await?;
    check::<EligibleAssignment>(client).await?;
    check::<ActivationRequest>(client).await?;
    // Denials live in AccessReview status: without the kind, a denied assignment would grant.
    check::<AccessReview>(client).await?;
    // The grant ledger: without it nothing can be granted or revoked (Helm never upgrades CRDs).
    check::<PimGrant>(client).await
}

/// A shared watch of one kind: its cache, and a way to subscribe more controllers to it.
struct Shared<K: Resource<DynamicType = ()> + Clone + 'static> {
    store: Store<Lenient<K>>,
    writer: Option<reflector::store::Writer<Lenient<K>>>,
}

impl<K> Shared<K>
where
    K: Resource<DynamicType = (), Scope = kube::core::ClusterResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    fn new() -> Self {
        let (store, writer) = reflector::store_shared(SHARED_BUFFER);
        Shared {
            store,
            writer: Some(writer),
        }
    }

    fn subscribe(&self) -> impl Stream<Item = Arc<Lenient<K>>> + Send + 'static {
        self.writer
            .as_ref()
            .and_then(|w| w.subscribe())
            .map(|h| h.boxed())
            .unwrap_or_else(|| futures::stream::empty().boxed())
    }

    /// The watch itself; it must be polled for any subscriber to see anything. `before` sees
    /// each event before the cache applies it, `after` once it has (shared streams carry changes
    /// but not deletions, so deletions are handled there).
    fn run(
        &mut self,
        client: Client,
        before: impl Fn(&watcher::Event<Lenient<K>>) + Send + Sync + 'static,
        after: impl Fn(&watcher::Event<Lenient<K>>) + Send + Sync + 'static,
    ) -> impl Future<Output = ()> + Send + 'static {
        let api: Api<Lenient<K>> = Api::all(client);
        let writer = self.writer.take();
        async move {
            let Some(writer) = writer else { return };
            watcher(api, watcher::Config::default())
                // Before the cache: it holds only what the controllers read.
                .modify(Lenient::strip_unread)
                .default_backoff()
                .inspect(move |event| {
                    if let Ok(event) = event {
                        before(event);
                    }
                })
                .reflect_shared(writer)
                .for_each(|event| {
                    match event {
                        Ok(event) => after(&event),
                        Err(error) => {
                            tracing::warn!(kind = K::kind(&()).as_ref(), %error, "watch error; retrying")
                        }
                    }
                    async {}
                })
                .await;
        }
    }
}

fn name_of<K: Resource>(object: &K) -> String {
    object.meta().name.clone().unwrap_or_default()
}

/// Requests affected by a change to the named groups.
fn requests_of(stores: &Stores, groups: &[String]) -> Vec<ObjectRef<Lenient<ActivationRequest>>> {
    groups
        .iter()
        .flat_map(|g| stores.requests_of(g))
        .map(|r| ObjectRef::from_obj(r.as_ref()))
        .collect()
}

fn assignments_of(
    stores: &Stores,
    groups: &[String],
) -> Vec<ObjectRef<Lenient<EligibleAssignment>>> {
    groups
        .iter()
        .flat_map(|g| stores.assignments_of(g))
        .map(|a| ObjectRef::from_obj(a.as_ref()))
        .collect()
}

/// PimGroups whose roles use the named policy.
fn groups_using(store: &Store<Lenient<PimGroup>>, policy: &str) -> Vec<String> {
    store
        .state()
        .iter()
        .filter_map(|g| g.object())
        .filter(|g| {
            g.spec.roles.member.policy == policy
                || g.spec
                    .roles
                    .owner
                    .as_ref()
                    .is_some_and(|o| o.policy == policy)
        })
        .map(name_of)
        .collect()
}

/// Whether a PimGroup event is more than its own status write: a spec change, a deletion.
fn group_changed(store: &Store<Lenient<PimGroup>>, group: &Lenient<PimGroup>) -> bool {
    let gone = store.get(&ObjectRef::from_obj(group)).is_none();
    let observed = group
        .object()
        .and_then(|g| g.status.as_ref())
        .and_then(|s| s.observed_generation);
    gone || group.metadata.deletion_timestamp.is_some() || observed != group.metadata.generation
}

fn clock_jumps(clock: &dyn Clock) -> impl Stream<Item = ()> + Send + 'static {
    match clock.jumps() {
        Some(rx) => WatchStream::from_changes(rx).map(|_| ()).boxed(),
        None => futures::stream::empty().boxed(),
    }
}

/// Whether PimGroup `group` reports standing access rather than removing it (or is unknown).
pub fn reports_standing(groups: &Store<Lenient<PimGroup>>, group: &str) -> bool {
    groups
        .get(&ObjectRef::new(group))
        .and_then(|g| g.object().map(|g| g.spec.standing_access))
        .is_none_or(|standing| standing == StandingAccess::Report)
}

/// What a PimGroup's deletion ends in this process's memory: its status writes, and its place in
/// the revocation priority (grants it held back are woken).
pub fn group_deleted(ctx: &Context, name: &str) {
    ctx.group_writes.forget(name);
    ctx.trigger_groups(ctx.priority.forget(name, ctx.now()));
}

/// Runs the four controllers until `stop` fires. Call only while holding leadership; with a
/// `fence`, directory writes start only while it is open (the lease renewed recently).
pub async fn run_controllers(
    deps: &Dependencies,
    stop: CancellationToken,
    fence: Option<Arc<LeaseFence>>,
) {
    let client = deps.client.clone();
    let mut policies = Shared::<AccessPolicy>::new();
    let mut groups = Shared::<PimGroup>::new();
    let mut assignments = Shared::<EligibleAssignment>::new();
    let mut requests = Shared::<ActivationRequest>::new();
    let mut grants = Shared::<PimGrant>::new();
    let mut reviews = Shared::<AccessReview>::new();
    let stores = Stores {
        reviews: reviews.store.clone(),
        policies: policies.store.clone(),
        groups: groups.store.clone(),
        assignments: assignments.store.clone(),
        requests: requests.store.clone(),
        grants: grants.store.clone(),
        assignments_by_group: Arc::new(GroupIndex::default()),
        requests_by_group: Arc::new(GroupIndex::default()),
        grants_by_group: Arc::new(GroupIndex::default()),
        principals: Arc::new(deps.settings.config.principals()),
    };
    let (request_triggers, triggered) = mpsc::unbounded_channel();
    let (group_triggers, groups_triggered) =
        mpsc::unbounded_channel::<ObjectRef<Lenient<PimGroup>>>();
    let (assignment_triggers, assignments_triggered) =
        mpsc::unbounded_channel::<ObjectRef<Lenient<EligibleAssignment>>>();
    let (grant_triggers, grants_triggered) =
        mpsc::unbounded_channel::<ObjectRef<Lenient<PimGrant>>>();
    let (review_triggers, reviews_triggered) =
        mpsc::unbounded_channel::<ObjectRef<Lenient<AccessReview>>>();
    let reporter = Reporter {
        controller: "pim-operator".into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    // What the group and the assignment controllers last saw of their own objects.
    let status_only = (
        Arc::new(StatusOnly::default()),
        Arc::new(StatusOnly::default()),
        Arc::new(StatusOnly::default()),
    );
    let ctx = Arc::new(Context {
        client: client.clone(),
        clock: deps.clock.clone(),
        settings: deps.settings.clone(),
        directories: match &fence {
            Some(fence) => Fenced::wrap_all(&deps.directories, fence),
            None => deps.directories.clone(),
        },
        attestor: deps.attestor.clone(),
        metrics: deps.metrics.clone(),
        recorder: Events::new(client.clone(), reporter),
        stores: stores.clone(),
        membership: MembershipCache::default(),
        ledger: ledger::LedgerMemory::default(),
        principal_groups: std::sync::Mutex::default(),
        request_status_writes: status_only.2.clone(),
        failures: context::Failures::default(),
        ledger_synced: tokio::sync::watch::Sender::new(false),
        group_deadlines: std::sync::Mutex::default(),
        assignment_due: Arc::new(jumps::DueTimes::for_clock(deps.clock.as_ref())),
        caches_synced: tokio::sync::watch::Sender::new(false),
        priority: priority::WritePriority::new(
            priority::ADD_LANES,
            usize::from(deps.settings.config.removal_concurrency),
        ),
        group_writes: OwnWrites::default(),
        request_triggers,
        grant_holds: request::GrantHolds::default(),
        group_triggers: group_triggers.clone(),
        audit: context::audit_sinks(&deps.settings, deps.clock.clone()),
        alerts: context::AlertBoard::default(),
    });
    let wakes = Arc::new(GroupWakes::default());
    // What the request and the group controllers last saw of each assignment.
    let assignment_changes = (
        Arc::new(AssignmentChanges::default()),
        Arc::new(AssignmentChanges::default()),
        Arc::new(AssignmentChanges::default()),
    );
    let config = ControllerConfig::default().concurrency(deps.settings.config.concurrency);
    let shutdown = {
        let stop = stop.clone();
        move || {
            let stop = stop.clone();
            async move { stop.cancelled().await }
        }
    };

    let request_controller = {
        let (by_group, by_assignment, by_policy) = (stores.clone(), stores.clone(), stores.clone());
        let extensions = wakes::ExtensionWakes::default();
        let groups_store = stores.groups.clone();
        let groups_store_for_policy = stores.groups.clone();
        let assignment_changes = assignment_changes.0.clone();
        // Request status writes (ours: three per activation; the notifier's) make no new
        // decision; approvals, deactivation and deletion change the spec or the metadata.
        let own = status_only.2.clone();
        let own_events = requests.subscribe().filter(move |r| {
            let fingerprint =
                wakes::request_status_fingerprint(r.object().and_then(|o| o.status.as_ref()));
            futures::future::ready(own.passes_status(&r.metadata, fingerprint))
        });
        Controller::for_shared_stream(own_events, stores.requests.clone())
            .with_config(config.clone())
            .watches_shared_stream(groups.subscribe(), move |g| {
                if group_changed(&groups_store, &g) {
                    requests_of(&by_group, &[name_of(g.as_ref())])
                } else {
                    Vec::new()
                }
            })
            // Assignments' own status writes would wake every request of their group.
            .watches_shared_stream(assignments.subscribe(), move |a| {
                requests_of(&by_assignment, &assignment_changes.groups(&a))
            })
            .watches_shared_stream(policies.subscribe(), move |p| {
                requests_of(
                    &by_policy,
                    &groups_using(&groups_store_for_policy, &name_of(p.as_ref())),
                )
            })
            // An extension ends with the request it extends, when that one ends early.
            .watches_shared_stream(requests.subscribe(), move |r| extensions.changed(&r))
            .reconcile_on(UnboundedReceiverStream::new(triggered))
            .reconcile_all_on(clock_jumps(deps.clock.as_ref()))
            .graceful_shutdown_on(shutdown())
            .run(request::reconcile, request::error_policy, ctx.clone())
            .for_each(|_| async {})
    };
    let group_controller = {
        let groups_for_policy = stores.groups.clone();
        let (wakes, ctx_for_requests) = (wakes.clone(), ctx.clone());
        let groups_for_requests = stores.groups.clone();
        let assignment_changes = assignment_changes.1.clone();
        let own = status_only.0.clone();
        // Its own status writes do not make a group pass again (another listing, for nothing).
        let own_events = groups
            .subscribe()
            .filter(move |g| futures::future::ready(own.passes(&g.metadata)));
        Controller::for_shared_stream(own_events, stores.groups.clone())
            .with_config(config.clone())
            // Only request changes that can change membership wake the group: each request's
            // own status writes would otherwise make every group pass several times over.
            .watches_shared_stream(requests.subscribe(), move |r| {
                let now = ctx_for_requests.now();
                let wake = wakes.changed(&r, now, |g| reports_standing(&groups_for_requests, g));
                // A group gone from the cache makes no pass that would clear it.
                if let Some(group) = &wake.revoked
                    && groups_for_requests.get(&ObjectRef::new(group)).is_some()
                {
                    ctx_for_requests.priority.revocation_due(group, now);
                }
                wake.groups
                    .iter()
                    .map(|g| ObjectRef::new(g))
                    .collect::<Vec<_>>()
            })
            .watches_shared_stream(assignments.subscribe(), move |a| {
                assignment_changes
                    .groups(&a)
                    .iter()
                    .map(|g| ObjectRef::new(g))
                    .collect::<Vec<_>>()
            })
            .watches_shared_stream(policies.subscribe(), move |p| {
                groups_using(&groups_for_policy, &name_of(p.as_ref()))
                    .iter()
                    .map(|g| ObjectRef::new(g))
                    .collect::<Vec<_>>()
            })
            .reconcile_on(UnboundedReceiverStream::new(groups_triggered))
            .reconcile_all_on(clock_jumps(deps.clock.as_ref()))
            .graceful_shutdown_on(shutdown())
            .run(group::reconcile, group::error_policy, ctx.clone())
            .for_each(|_| async {})
    };
    let assignment_controller = {
        let (by_group, by_policy) = (stores.clone(), stores.clone());
        let groups_store = stores.groups.clone();
        let groups_for_policy = stores.groups.clone();
        let own = status_only.1.clone();
        let own_events = assignments
            .subscribe()
            .filter(move |a| futures::future::ready(own.passes(&a.metadata)));
        Controller::for_shared_stream(own_events, stores.assignments.clone())
            .with_config(config.clone())
            .watches_shared_stream(groups.subscribe(), move |g| {
                if group_changed(&groups_store, &g) {
                    assignments_of(&by_group, &[name_of(g.as_ref())])
                } else {
                    Vec::new()
                }
            })
            .watches_shared_stream(policies.subscribe(), move |p| {
                assignments_of(
                    &by_policy,
                    &groups_using(&groups_for_policy, &name_of(p.as_ref())),
                )
            })
            .reconcile_on(UnboundedReceiverStream::new(assignments_triggered))
            // An assignment's status changes with time only at its window's edges.
            .reconcile_on(jumps::due_on_jumps(
                deps.clock.as_ref(),
                stores.assignments.clone(),
                ctx.assignment_due.clone(),
            ))
            .graceful_shutdown_on(shutdown())
            .run(assignment::reconcile, assignment::error_policy, ctx.clone())
            .for_each(|_| async {})
    };
    // Ledger entries whose PimGroup is gone (deleted around its finalizer) or unreadable: no
    // group pass will revoke them, so this does.
    let orphan_controller =
        Controller::for_shared_stream(grants.subscribe(), stores.grants.clone())
            .with_config(config.clone())
            .reconcile_on(UnboundedReceiverStream::new(grants_triggered))
            .graceful_shutdown_on(shutdown())
            .run(ledger::reconcile_orphan, ledger::error_policy, ctx.clone())
            .for_each(|_| async {});
    let review_controller = {
        let (for_assignments, for_groups, for_policies) = (
            stores.reviews.clone(),
            stores.reviews.clone(),
            stores.reviews.clone(),
        );
        let assignment_changes = assignment_changes.2.clone();
        let groups_for_reviews = stores.groups.clone();
        let seen_labels = std::sync::Mutex::new(std::collections::HashMap::<
            String,
            std::collections::BTreeMap<String, String>,
        >::new());
        let all = |store: &Store<Lenient<AccessReview>>| {
            store
                .state()
                .iter()
                .map(|r| ObjectRef::from_obj(r.as_ref()))
                .collect::<Vec<_>>()
        };
        Controller::for_shared_stream(reviews.subscribe(), stores.reviews.clone())
            .with_config(config.clone())
            // Items follow the assignments in scope: a new, changed or deleted one (not their
            // status writes, which every assignment makes; resyncs refresh recommendations).
            .watches_shared_stream(assignments.subscribe(), move |a| {
                if assignment_changes.groups(&a).is_empty() {
                    Vec::new()
                } else {
                    all(&for_assignments)
                }
            })
            // Scopes name groups and select them by label: a group's spec change, deletion or
            // new labels (not its status writes).
            .watches_shared_stream(groups.subscribe(), move |g| {
                let labels = g.metadata.labels.clone().unwrap_or_default();
                let name = name_of(g.as_ref());
                let relabelled = seen_labels
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(name, labels.clone())
                    .is_none_or(|before| before != labels);
                if relabelled || group_changed(&groups_for_reviews, &g) {
                    all(&for_groups)
                } else {
                    Vec::new()
                }
            })
            // Policy approvers review under `policyApprovers`.
            .watches_shared_stream(policies.subscribe(), move |_| all(&for_policies))
            .reconcile_on(UnboundedReceiverStream::new(reviews_triggered))
            .reconcile_all_on(clock_jumps(deps.clock.as_ref()))
            .graceful_shutdown_on(shutdown())
            .run(review::reconcile, review::error_policy, ctx.clone())
            .for_each(|_| async {})
    };
    let policy_controller =
        Controller::for_shared_stream(policies.subscribe(), stores.policies.clone())
            .with_config(config)
            .graceful_shutdown_on(shutdown())
            .run(policy::reconcile, policy::error_policy, ctx.clone())
            .for_each(|_| async {});

    // Notifications, audit and retention, from the same watches; they never hold up the above.
    let delivery_stop = stop.child_token();
    let delivery = tokio::spawn(delivery::run(
        ctx.clone(),
        requests.subscribe(),
        assignments.subscribe(),
        reviews.subscribe(),
        delivery_stop.clone(),
    ));
    let watches = futures::future::join4(
        policies.run(client.clone(), |_| {}, {
            let (stores, requests, groups, assignments) = (
                stores.clone(),
                ctx.request_triggers.clone(),
                group_triggers.clone(),
                assignment_triggers.clone(),
            );
            move |event| {
                let watcher::Event::Delete(p) = event else {
                    return;
                };
                let using = groups_using(&stores.groups, &name_of(p));
                requests_of(&stores, &using)
                    .into_iter()
                    .for_each(|r| drop(requests.send(r)));
                assignments_of(&stores, &using)
                    .into_iter()
                    .for_each(|a| drop(assignments.send(a)));
                using
                    .iter()
                    .for_each(|g| drop(groups.send(ObjectRef::new(g))));
            }
        }),
        groups.run(client.clone(), |_| {}, {
            let (stores, ctx, assignments, own, grants) = (
                stores.clone(),
                ctx.clone(),
                assignment_triggers.clone(),
                status_only.0.clone(),
                grant_triggers.clone(),
            );
            move |event| {
                let watcher::Event::Delete(g) = event else {
                    return;
                };
                let name = [name_of(g)];
                own.forget(&name[0]);
                group_deleted(&ctx, &name[0]);
                // Its ledger entries should all be closed; any left are orphans now.
                ctx.stores
                    .grants_of(&name[0])
                    .into_iter()
                    .for_each(|e| drop(grants.send(ObjectRef::from_obj(e.as_ref()))));
                requests_of(&stores, &name)
                    .into_iter()
                    .for_each(|r| drop(ctx.request_triggers.send(r)));
                assignments_of(&stores, &name)
                    .into_iter()
                    .for_each(|a| drop(assignments.send(a)));
            }
        }),
        assignments.run(
            client.clone(),
            {
                let index = stores.assignments_by_group.clone();
                move |event| index.before_store(event)
            },
            {
                let (stores, requests, groups, changes, own, reviews) = (
                    stores.clone(),
                    ctx.request_triggers.clone(),
                    group_triggers.clone(),
                    assignment_changes.clone(),
                    status_only.1.clone(),
                    review_triggers.clone(),
                );
                move |event| {
                    stores
                        .assignments_by_group
                        .after_store(event, &stores.assignments);
                    match event {
                        watcher::Event::Delete(a) => {
                            if let Some(name) = &a.metadata.name {
                                changes.0.forget(name);
                                changes.1.forget(name);
                                changes.2.forget(name);
                                own.forget(name);
                            }
                            // Shared streams carry no deletions: a review lists what to
                            // remove, and one gone leaves its list.
                            for r in stores.reviews.state() {
                                drop(reviews.send(ObjectRef::from_obj(r.as_ref())));
                            }
                            if let Some(a) = a.object() {
                                requests_of(&stores, std::slice::from_ref(&a.spec.group))
                                    .into_iter()
                                    .for_each(|r| drop(requests.send(r)));
                                drop(groups.send(ObjectRef::new(&a.spec.group)));
                            }
                        }
                        // A relist carries no deletions: every group and request looks again.
                        watcher::Event::InitDone => {
                            for g in stores.groups.state() {
                                drop(groups.send(ObjectRef::from_obj(g.as_ref())));
                            }
                            for r in stores.requests.state() {
                                drop(requests.send(ObjectRef::from_obj(r.as_ref())));
                            }
                        }
                        _ => {}
                    }
                }
            },
        ),
        requests.run(
            client,
            {
                let index = stores.requests_by_group.clone();
                move |event| index.before_store(event)
            },
            {
                let (stores, groups, wakes, metrics, own) = (
                    stores.clone(),
                    group_triggers.clone(),
                    wakes.clone(),
                    deps.metrics.clone(),
                    status_only.2.clone(),
                );
                let active = ActiveRequests::default();
                move |event| {
                    stores
                        .requests_by_group
                        .after_store(event, &stores.requests);
                    let active = active.after_store(event, &stores.requests);
                    metrics
                        .active_elevations
                        .set(i64::try_from(active).unwrap_or(i64::MAX));
                    match event {
                        watcher::Event::Delete(r) => {
                            if let Some(name) = &r.metadata.name {
                                wakes.forget(name);
                                own.forget(name);
                            }
                            if let Some(r) = r.object() {
                                drop(groups.send(ObjectRef::new(&r.spec.group)));
                            }
                        }
                        // A relist carries no deletions: every group looks again.
                        watcher::Event::InitDone => {
                            wakes.retain_in(&stores.requests);
                            for g in stores.groups.state() {
                                drop(groups.send(ObjectRef::from_obj(g.as_ref())));
                            }
                        }
                        _ => {}
                    }
                }
            },
        ),
    );
    // The grant ledger: a closed entry wakes the request it served (its end can now be
    // written) and its group; one removed by someone else makes the group look again.
    let ledger_watch = grants.run(
        deps.client.clone(),
        {
            let index = stores.grants_by_group.clone();
            move |event| index.before_store(event)
        },
        {
            let (stores, requests, groups) = (
                stores.clone(),
                ctx.request_triggers.clone(),
                group_triggers.clone(),
            );
            move |event| {
                stores.grants_by_group.after_store(event, &stores.grants);
                if let watcher::Event::Delete(g) = event
                    && let Some(g) = g.object()
                {
                    if g.spec.source.kind == GrantSourceKind::ActivationRequest {
                        drop(requests.send(ObjectRef::new(&g.spec.source.name)));
                    }
                    drop(groups.send(ObjectRef::new(&g.spec.group)));
                }
            }
        },
    );
    // A review's denials end assignments: their groups, requests and conditions look again.
    let review_watch = reviews.run(deps.client.clone(), |_| {}, {
        let (stores, requests, groups, assignments) = (
            stores.clone(),
            ctx.request_triggers.clone(),
            group_triggers.clone(),
            assignment_triggers.clone(),
        );
        let last_denied = std::sync::Mutex::new(std::collections::HashMap::<
            String,
            Vec<(String, Option<String>)>,
        >::new());
        move |event| {
            // Only a change of a review's denials moves anything (not its other status writes).
            let (name, now_denied) = match event {
                watcher::Event::Apply(r) | watcher::Event::InitApply(r) => (
                    name_of(r),
                    crate::lenient::review_for_catalog(r)
                        .and_then(|r| r.status.clone())
                        .map(|s| {
                            s.denied
                                .into_iter()
                                .map(|d| (d.assignment, d.uid))
                                .collect::<Vec<_>>()
                        })
                        .unwrap_or_default(),
                ),
                watcher::Event::Delete(r) => (name_of(r), Vec::new()),
                _ => return,
            };
            let before = {
                let mut seen = last_denied.lock().unwrap_or_else(|e| e.into_inner());
                let before = seen
                    .insert(name.clone(), now_denied.clone())
                    .unwrap_or_default();
                if matches!(event, watcher::Event::Delete(_)) {
                    seen.remove(&name);
                }
                before
            };
            if before == now_denied {
                return;
            }
            let denied: Vec<String> = match event {
                watcher::Event::Apply(r)
                | watcher::Event::Delete(r)
                | watcher::Event::InitApply(r) => r
                    .object()
                    .and_then(|r| r.status.as_ref())
                    .map(|s| s.denied.iter().map(|d| d.assignment.clone()).collect())
                    .unwrap_or_default(),
                _ => Vec::new(),
            };
            let mut touched = std::collections::BTreeSet::new();
            for name in denied {
                let Some(a) = stores.assignments.get(&ObjectRef::new(&name)) else {
                    continue;
                };
                drop(assignments.send(ObjectRef::from_obj(a.as_ref())));
                if let Some(a) = a.object() {
                    touched.insert(a.spec.group.clone());
                }
            }
            let touched: Vec<String> = touched.into_iter().collect();
            requests_of(&stores, &touched)
                .into_iter()
                .for_each(|r| drop(requests.send(r)));
            touched
                .iter()
                .for_each(|g| drop(groups.send(ObjectRef::new(g))));
        }
    });
    let watches = futures::future::join3(watches, ledger_watch, review_watch);
    let health = deps.health.clone();
    let ledger_synced = ctx.clone();
    let synced = async move {
        // The only waiter on each store's readiness (it wakes one waiter only); reconciles
        // wait on `Context::ledger_ready`, which this releases.
        // A failed wait means the store's watch is gone (the term is ending): nothing is
        // marked synced then, so neither reconciles nor `/readyz` act on a cache never listed.
        // Reviews first too: a pass that did not know a denial would grant the denied.
        if store_ready("PimGrant", &stores.grants).await
            && store_ready("AccessReview", &stores.reviews).await
        {
            ledger_synced.ledger_synced.send_replace(true);
            if store_ready("AccessPolicy", &stores.policies).await
                && store_ready("PimGroup", &stores.groups).await
                && store_ready("EligibleAssignment", &stores.assignments).await
                && store_ready("ActivationRequest", &stores.requests).await
            {
                ledger_synced.caches_synced.send_replace(true);
                health.set_synced();
            }
        }
        futures::future::pending::<()>().await;
    };
    let controllers = futures::future::join(
        futures::future::join4(
            request_controller,
            group_controller,
            assignment_controller,
            policy_controller,
        ),
        futures::future::join(orphan_controller, review_controller),
    );
    tokio::select! {
        _ = controllers => {}
        _ = watches => {}
        _ = synced => {}
        _ = stop.cancelled() => {}
    }
    // Lets sends under way finish and be recorded (bounded by `delivery::DRAIN_LIMIT`).
    delivery_stop.cancel();
    if let Err(error) = delivery.await {
        // Its outbox was not drained: sends under way may go unrecorded and be sent again by
        // the next leader (same delivery ids).
        tracing::error!(%error, "the delivery controller panicked; notifications under way may be sent again");
    }
}

/// Waits until `store` has been listed once; `false` (logged) when its writer is gone first.
async fn store_ready<K>(kind: &str, store: &Store<K>) -> bool
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    match store.wait_until_ready().await {
        Ok(()) => true,
        Err(error) => {
            tracing::info!(kind, %error, "cache stopped before it was listed; not reporting ready");
            false
        }
    }
}

/// A lease holder name unique to this process, for replicas started without `POD_NAME`: two
/// replicas with one name would both believe they hold the lease.
fn random_identity() -> String {
    use std::hash::{BuildHasher, Hasher};
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    format!("pim-operator-{}-{random:016x}", std::process::id())
}

/// Records whether this replica leads, for `/readyz` and the `pim_leader` metric.
fn lead(deps: &Dependencies, leader: bool) {
    deps.health.set_leader(leader);
    deps.metrics.leader.set(i64::from(leader));
    if !leader {
        deps.metrics.forget_access_state();
    }
}

/// Runs the controllers while this replica leads, until `shutdown` fires. Without leader
/// election, this replica always leads.
///
/// With it, directory writes are fenced by lease renewals ([`fence`]): a leader cut off from the
/// API server keeps believing it leads (the lease manager retries quietly), but starts no
/// directory write once a lease duration has passed without a renewal. Leader election ending
/// by itself (its task stopped or panicked) is an error: the process must not run on without
/// it, nor exit as if all were well.
pub async fn run(deps: Dependencies, shutdown: CancellationToken) -> Result<(), StartError> {
    let election = &deps.settings.config.leader_election;
    if !election.enabled {
        lead(&deps, true);
        run_controllers(&deps, shutdown, None).await;
        return Ok(());
    }
    let namespace = deps
        .settings
        .config
        .namespace
        .clone()
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .unwrap_or_else(|| "pim-system".to_owned());
    let identity = std::env::var("POD_NAME").unwrap_or_else(|_| random_identity());
    let lease_seconds = deps
        .settings
        .lease_duration
        .as_secs()
        .max(crate::config::MIN_LEASE_SECONDS);
    let fence = Arc::new(LeaseFence::new(std::time::Duration::from_secs(
        lease_seconds,
    )));
    let lease_client = fence::observed_client(
        deps.client.clone(),
        fence.clone(),
        &namespace,
        &election.lease_name,
        &identity,
    );
    let manager = kube_lease_manager::LeaseManagerBuilder::new(lease_client, &election.lease_name)
        .with_namespace(&namespace)
        .with_identity(&identity)
        .with_duration(lease_seconds)
        // Renew well before expiry; the library requires 0 < grace < duration.
        .with_grace((lease_seconds / 5).max(1))
        .build()
        .await
        .map_err(|e| {
            let error = StartError::LeaderElection(e.to_string());
            tracing::error!(%error, "leader election could not start");
            error
        })?;
    let (mut leading, lease_task) = manager.watch().await;
    lead(&deps, *leading.borrow_and_update());
    loop {
        if *leading.borrow_and_update() {
            lead(&deps, true);
            let term = shutdown.child_token();
            let lost = {
                let term = term.clone();
                let mut leading = leading.clone();
                async move {
                    while leading.changed().await.is_ok() {
                        if !*leading.borrow() {
                            break;
                        }
                    }
                    term.cancel();
                }
            };
            tokio::select! {
                _ = run_controllers(&deps, term.clone(), Some(fence.clone())) => {}
                _ = lost => {}
            }
            term.cancel();
        }
        lead(&deps, false);
        tokio::select! {
            changed = leading.changed() => if changed.is_err() { break },
            _ = shutdown.cancelled() => break,
        }
        if shutdown.is_cancelled() {
            break;
        }
    }
    // The loop ends on shutdown, or because the lease task stopped (its channel closed).
    let stopping = shutdown.is_cancelled();
    // Dropping the receiver makes the lease manager release the lease.
    drop(leading);
    if stopping {
        // Bounded: an unreachable API server must not hold up shutdown; the lease then
        // simply expires.
        let release = std::time::Duration::from_secs(lease_seconds);
        return match tokio::time::timeout(release, lease_task).await {
            Ok(outcome) => {
                if let Err(error) = lease_outcome(outcome) {
                    tracing::warn!(%error, "the lease was not released; it expires on its own");
                }
                Ok(())
            }
            Err(_) => {
                tracing::warn!("the lease was not released in time; it expires on its own");
                Ok(())
            }
        };
    }
    let error = match lease_outcome(lease_task.await) {
        Err(error) => error,
        Ok(()) => StartError::LeaderElection("the lease manager stopped by itself".to_owned()),
    };
    tracing::error!(%error, "leader election failed; stopping");
    Err(error)
}

/// What the lease task's end says: `Ok` when it stopped cleanly (having released the lease).
fn lease_outcome<T, E: std::fmt::Display>(
    ended: Result<Result<T, E>, tokio::task::JoinError>,
) -> Result<(), StartError> {
    match ended {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(StartError::LeaderElection(error.to_string())),
        Err(error) => Err(StartError::LeaderElection(format!(
            "the lease task failed: {error}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // issue 14 finding 6: the lease task ending is an error, never a quiet success.
    #[tokio::test]
    async fn issue_14_finding_6_a_failed_lease_task_is_a_leader_election_error() {
        let failed: Result<Result<(), String>, _> = Ok(Err("Kube error: gone".to_owned()));
        assert!(matches!(
            lease_outcome(failed),
            Err(StartError::LeaderElection(m)) if m == "Kube error: gone"
        ));
        fn lease_bug() -> Result<(), String> {
            panic!("lease bug")
        }
        let panicked = tokio::spawn(async { lease_bug() }).await;
        match lease_outcome(panicked) {
            Err(StartError::LeaderElection(m)) => {
                assert!(m.starts_with("the lease task failed"), "{m}")
            }
            other => panic!("expected a leader election error, got {other:?}"),
        }
        let clean: Result<Result<(), String>, tokio::task::JoinError> = Ok(Ok(()));
        assert!(lease_outcome(clean).is_ok());
    }
}
