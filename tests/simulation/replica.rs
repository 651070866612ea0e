//! One operator process: the production `Context` over caches this simulation feeds, and the
//! production reconcilers, called by a scheduler that stands in for kube-runtime's: it runs an
//! object again when its reconcile asked (the `Action`), when something it depends on changed,
//! and when the operator's own triggers ask.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use kube::runtime::controller::Action;
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{self, ObjectRef, Store, store::Writer};
use kube::runtime::watcher;
use pim_operator::api::{AccessPolicy, ActivationRequest, EligibleAssignment, PimGrant, PimGroup};
use pim_operator::clock::Clock;
use pim_operator::config::Settings;
use pim_operator::controller::context::{Context, Failures, MembershipCache, Stores};
use pim_operator::controller::delivery::{self, Delivery};
use pim_operator::controller::events::Events;
use pim_operator::controller::index::{GroupIndex, InGroup};
use pim_operator::controller::{
    assignment, group, ledger, policy, priority::WritePriority, request, wakes,
};
use pim_operator::directory::Directories;
use pim_operator::engine::Attestor;
use pim_operator::lenient::Lenient;
use pim_operator::metrics::Metrics;
use pim_testkit::fake_apiserver::{FakeApi, FakeApiServer};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc::UnboundedReceiver;

use super::directory::{Flavor, SimDirectory, World};
use super::gate::Gate;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Policy,
    Group,
    Assignment,
    Request,
    Grant,
    /// A request's notifications and audit records (`controller::delivery`).
    Delivery,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Policy,
        Kind::Group,
        Kind::Assignment,
        Kind::Request,
        Kind::Grant,
    ];

    fn plural(self) -> &'static str {
        match self {
            Kind::Policy => "accesspolicies",
            Kind::Group => "pimgroups",
            Kind::Assignment => "eligibleassignments",
            Kind::Request => "activationrequests",
            Kind::Grant => "pimgrants",
            Kind::Delivery => "activationrequests",
        }
    }
}

type Key = (Kind, String);

struct Writers {
    policies: Writer<Lenient<AccessPolicy>>,
    groups: Writer<Lenient<PimGroup>>,
    assignments: Writer<Lenient<EligibleAssignment>>,
    requests: Writer<Lenient<ActivationRequest>>,
    grants: Writer<Lenient<PimGrant>>,
}

/// What one scheduler step did.
#[derive(Debug, Default, Clone, Copy)]
pub struct StepReport {
    pub reconciles: u64,
    pub errors: u64,
}

pub struct Replica {
    pub id: usize,
    pub gate: Gate,
    pub ctx: Arc<Context>,
    delivery: Arc<Delivery>,
    writers: Writers,
    /// resourceVersion of each object in the caches.
    seen: BTreeMap<Key, Seen>,
    /// Kinds whose next sync is a relist (a new process, a dropped watch, 410 Gone).
    relist: BTreeSet<Kind>,
    request_triggers: UnboundedReceiver<ObjectRef<Lenient<ActivationRequest>>>,
    group_triggers: UnboundedReceiver<ObjectRef<Lenient<PimGroup>>>,
    due: BTreeMap<Key, Timestamp>,
    synced_once: bool,
    /// Production's map from request changes to group wakes and early revocations.
    group_wakes: wakes::GroupWakes,
}

pub struct Parts<'a> {
    pub server: &'a FakeApiServer,
    pub settings: &'a Settings,
    pub clock: Arc<dyn Clock>,
    pub attestor: Arc<dyn Attestor>,
    pub directories: &'a [(String, Flavor)],
    pub world: &'a World,
}

impl Replica {
    pub fn start(id: usize, parts: Parts<'_>) -> Replica {
        let gate = Gate::new();
        let link_gate = gate.clone();
        let client = parts
            .server
            .client_through(Arc::new(move || link_gate.pass_api()));
        let mut directories = Directories::default();
        for (name, flavor) in parts.directories {
            directories.insert(
                name.clone(),
                Arc::new(SimDirectory {
                    name: name.clone(),
                    flavor: *flavor,
                    world: parts.world.clone(),
                    clock: parts.clock.clone(),
                    gate: gate.clone(),
                }),
            );
        }
        let (policies, policies_writer) = reflector::store();
        let (groups, groups_writer) = reflector::store();
        let (assignments, assignments_writer) = reflector::store();
        let (requests, requests_writer) = reflector::store();
        let (grants, grants_writer) = reflector::store();
        let (reviews, _reviews_writer) = reflector::store();
        let stores = Stores {
            reviews,
            policies,
            groups,
            assignments,
            requests,
            grants,
            assignments_by_group: Arc::new(GroupIndex::default()),
            requests_by_group: Arc::new(GroupIndex::default()),
            grants_by_group: Arc::new(GroupIndex::default()),
            principals: Arc::new(parts.settings.config.principals()),
        };
        let (request_tx, request_triggers) = tokio::sync::mpsc::unbounded_channel();
        let (group_tx, group_triggers) = tokio::sync::mpsc::unbounded_channel();
        let reporter = Reporter {
            controller: "pim-operator".into(),
            instance: Some(format!("replica-{id}")),
        };
        let ctx = Arc::new(Context {
            client: client.clone(),
            clock: parts.clock,
            settings: parts.settings.clone(),
            directories,
            attestor: parts.attestor,
            metrics: Arc::new(Metrics::new()),
            recorder: Events::new(client, reporter),
            stores,
            membership: MembershipCache::default(),
            ledger: ledger::LedgerMemory::default(),
            principal_groups: std::sync::Mutex::default(),
            request_status_writes: Arc::new(wakes::StatusOnly::default()),
            failures: Failures::default(),
            ledger_synced: tokio::sync::watch::Sender::new(false),
            caches_synced: tokio::sync::watch::Sender::new(false),
            group_deadlines: std::sync::Mutex::default(),
            // This replica looks at every object itself when its clock moves (`wake_all`).
            assignment_due: Arc::default(),
            priority: WritePriority::default(),
            group_writes: wakes::OwnWrites::default(),
            request_triggers: request_tx,
            grant_holds: Default::default(),
            group_triggers: group_tx,
            audit: Some(Arc::new(pim_operator::audit::sink::AuditSinks::log_only())),
            alerts: Default::default(),
        });
        let delivery = Delivery::start(ctx.clone());
        Replica {
            id,
            gate,
            ctx,
            delivery,
            writers: Writers {
                policies: policies_writer,
                groups: groups_writer,
                assignments: assignments_writer,
                requests: requests_writer,
                grants: grants_writer,
            },
            seen: BTreeMap::new(),
            relist: Kind::ALL.into_iter().collect(),
            request_triggers,
            group_triggers,
            due: BTreeMap::new(),
            synced_once: false,
            group_wakes: wakes::GroupWakes::default(),
        }
    }

    /// The next sync of every kind is a relist (the watches dropped, or their version expired).
    pub fn drop_watches(&mut self) {
        self.relist = Kind::ALL.into_iter().collect();
    }

    /// Brings the caches of `kinds` up to the server, as the watches would deliver it.
    pub fn sync(&mut self, api: &FakeApi, kinds: &[Kind]) {
        let now = self.ctx.now();
        for kind in kinds {
            let relist = self.relist.remove(kind);
            let stores = &self.ctx.stores;
            let changed = match kind {
                Kind::Policy => {
                    let (events, changed) =
                        diff(api, *kind, &stores.policies, &mut self.seen, relist);
                    apply(&mut self.writers.policies, &events);
                    changed
                }
                Kind::Group => {
                    let (events, changed) =
                        diff(api, *kind, &stores.groups, &mut self.seen, relist);
                    apply(&mut self.writers.groups, &events);
                    changed
                }
                Kind::Assignment => {
                    let (events, changed) =
                        diff(api, *kind, &stores.assignments, &mut self.seen, relist);
                    apply_indexed(
                        &mut self.writers.assignments,
                        &stores.assignments_by_group,
                        &stores.assignments,
                        &events,
                    );
                    changed
                }
                Kind::Request => {
                    let (events, changed) =
                        diff(api, *kind, &stores.requests, &mut self.seen, relist);
                    apply_indexed(
                        &mut self.writers.requests,
                        &stores.requests_by_group,
                        &stores.requests,
                        &events,
                    );
                    changed
                }
                Kind::Delivery => Vec::new(),
                Kind::Grant => {
                    let (events, changed) =
                        diff(api, *kind, &stores.grants, &mut self.seen, relist);
                    apply_indexed(
                        &mut self.writers.grants,
                        &stores.grants_by_group,
                        &stores.grants,
                        &events,
                    );
                    changed
                }
            };
            for change in changed {
                self.wake_for(change, now);
            }
        }
        if !self.synced_once && kinds.len() == Kind::ALL.len() {
            // As production: reconciles wait until the ledger and then every cache was listed.
            self.synced_once = true;
            self.ctx.ledger_synced.send_replace(true);
            self.ctx.caches_synced.send_replace(true);
        }
    }

    pub fn synced_once(&self) -> bool {
        self.synced_once
    }

    /// What a change wakes: the object, and what production's watches map it to (a superset).
    fn wake_for(&mut self, change: Change, now: Timestamp) {
        let Change {
            kind,
            name,
            group,
            deleted,
        } = change;
        if kind == Kind::Request && deleted {
            self.group_wakes.forget(&name);
        }
        if kind == Kind::Group && deleted {
            // As production's watch does on a PimGroup's DELETED event.
            pim_operator::controller::group_deleted(&self.ctx, &name);
        }
        self.due.insert((kind, name.clone()), now);
        let stores = &self.ctx.stores;
        let mut wake: Vec<Key> = Vec::new();
        match kind {
            Kind::Request => {
                // As the group controller's request watch: an early end puts the group's
                // revocation ahead of grants (controller::priority).
                if let Some(request) = stores.requests.get(&ObjectRef::new(&name)) {
                    let groups = &stores.groups;
                    let change = self.group_wakes.changed(&request, now, |g| {
                        pim_operator::controller::reports_standing(groups, g)
                    });
                    if let Some(group) = &change.revoked
                        && groups.get(&ObjectRef::new(group)).is_some()
                    {
                        self.ctx.priority.revocation_due(group, now);
                    }
                    wake.extend(change.groups.into_iter().map(|g| (Kind::Group, g)));
                }
                wake.push((Kind::Delivery, name.clone()));
                wake.extend(group.map(|g| (Kind::Group, g)));
            }
            Kind::Group | Kind::Assignment => {
                if let Some(g) = group {
                    wake.push((Kind::Group, g.clone()));
                    wake.extend(requests_of(stores, &g));
                    wake.extend(
                        stores
                            .assignments_of(&g)
                            .iter()
                            .filter_map(|a| a.metadata.name.clone())
                            .map(|n| (Kind::Assignment, n)),
                    );
                    wake.extend(
                        stores
                            .grants_of(&g)
                            .iter()
                            .filter_map(|e| e.metadata.name.clone())
                            .map(|n| (Kind::Grant, n)),
                    );
                }
            }
            Kind::Policy => {
                for g in stores.groups.state() {
                    if let Some(n) = g.metadata.name.clone() {
                        wake.extend(requests_of(stores, &n));
                        wake.push((Kind::Group, n));
                    }
                }
                for a in stores.assignments.state() {
                    wake.extend(a.metadata.name.clone().map(|n| (Kind::Assignment, n)));
                }
            }
            Kind::Grant => {
                if let Some(g) = group {
                    wake.push((Kind::Group, g));
                }
            }
            Kind::Delivery => {}
        }
        for key in wake {
            self.due.insert(key, now);
        }
    }

    fn drain_triggers(&mut self, now: Timestamp) {
        while let Ok(r) = self.request_triggers.try_recv() {
            self.due.insert((Kind::Request, r.name), now);
        }
        while let Ok(g) = self.group_triggers.try_recv() {
            self.due.insert((Kind::Group, g.name), now);
        }
    }

    /// Runs what is due, `width` reconciles at a time, in an order `order` shuffles; at most
    /// `budget` reconciles.
    pub async fn step(&mut self, order: u64, width: usize, budget: usize) -> StepReport {
        let mut report = StepReport::default();
        if !self.synced_once {
            return report;
        }
        let mut rng = super::rng::Rng::new(order);
        let mut left = budget;
        while left > 0 && !self.gate.is_dead() {
            let now = self.ctx.now();
            self.drain_triggers(now);
            let mut ready: Vec<Key> = self
                .due
                .iter()
                .filter(|(_, at)| **at <= now)
                .map(|(k, _)| k.clone())
                .collect();
            if ready.is_empty() {
                break;
            }
            rng.shuffle(&mut ready);
            ready.truncate(width.max(1).min(left));
            left -= ready.len();
            for key in &ready {
                self.due.remove(key);
            }
            let ctx = &self.ctx;
            let passes = ready
                .iter()
                .map(|key| reconcile(ctx.clone(), self.delivery.clone(), key.clone()));
            let results = futures::future::join_all(passes).await;
            let now = self.ctx.now();
            for (key, result) in ready.into_iter().zip(results) {
                let Some((action, failed)) = result else {
                    continue;
                };
                report.reconciles += 1;
                report.errors += u64::from(failed);
                if let Some(after) = requeue_after(&action) {
                    let at = now + SignedDuration::try_from(after).unwrap_or(SignedDuration::ZERO);
                    let entry = self.due.entry(key).or_insert(at);
                    *entry = (*entry).min(at);
                }
            }
        }
        report
    }

    /// Every cached object looks again (production's `reconcile_all_on` clock jumps).
    pub fn wake_all(&mut self) {
        let now = self.ctx.now();
        let stores = &self.ctx.stores;
        let mut keys: Vec<Key> = Vec::new();
        let names = |kind: Kind, metas: Vec<Option<String>>| {
            metas.into_iter().flatten().map(move |n| (kind, n))
        };
        keys.extend(names(
            Kind::Policy,
            stores
                .policies
                .state()
                .iter()
                .map(|o| o.metadata.name.clone())
                .collect(),
        ));
        keys.extend(names(
            Kind::Group,
            stores
                .groups
                .state()
                .iter()
                .map(|o| o.metadata.name.clone())
                .collect(),
        ));
        keys.extend(names(
            Kind::Assignment,
            stores
                .assignments
                .state()
                .iter()
                .map(|o| o.metadata.name.clone())
                .collect(),
        ));
        keys.extend(names(
            Kind::Request,
            stores
                .requests
                .state()
                .iter()
                .map(|o| o.metadata.name.clone())
                .collect(),
        ));
        keys.extend(names(
            Kind::Delivery,
            stores
                .requests
                .state()
                .iter()
                .map(|o| o.metadata.name.clone())
                .collect(),
        ));
        keys.extend(names(
            Kind::Grant,
            stores
                .grants
                .state()
                .iter()
                .map(|o| o.metadata.name.clone())
                .collect(),
        ));
        for key in keys {
            self.due.insert(key, now);
        }
    }
}

fn requests_of(stores: &Stores, group: &str) -> Vec<Key> {
    stores
        .requests_of(group)
        .iter()
        .filter_map(|r| r.metadata.name.clone())
        .map(|n| (Kind::Request, n))
        .collect()
}

/// One production reconcile (and its error policy on failure); `None` when the object is not in
/// the cache (kube-runtime skips those too).
async fn reconcile(
    ctx: Arc<Context>,
    deliveries: Arc<Delivery>,
    (kind, name): Key,
) -> Option<(Action, bool)> {
    macro_rules! run {
        ($store:expr, $reconcile:path, $error_policy:path) => {{
            let object = $store.get(&ObjectRef::new(&name))?;
            match $reconcile(object.clone(), ctx.clone()).await {
                Ok(action) => Some((action, false)),
                Err(error) => Some(($error_policy(object, &error, ctx.clone()), true)),
            }
        }};
    }
    match kind {
        Kind::Policy => run!(ctx.stores.policies, policy::reconcile, policy::error_policy),
        Kind::Group => run!(ctx.stores.groups, group::reconcile, group::error_policy),
        Kind::Assignment => run!(
            ctx.stores.assignments,
            assignment::reconcile,
            assignment::error_policy
        ),
        Kind::Request => run!(
            ctx.stores.requests,
            request::reconcile,
            request::error_policy
        ),
        Kind::Grant => run!(
            ctx.stores.grants,
            ledger::reconcile_orphan,
            ledger::error_policy
        ),
        Kind::Delivery => {
            let object = ctx.stores.requests.get(&ObjectRef::new(&name))?;
            match delivery::reconcile_request(object.clone(), deliveries.clone()).await {
                Ok(action) => Some((action, false)),
                Err(error) => Some((delivery::error_policy(object, &error, deliveries), true)),
            }
        }
    }
}

/// kube-runtime keeps `Action`'s delay private; its `Debug` form is all it shows.
fn requeue_after(action: &Action) -> Option<std::time::Duration> {
    let text = format!("{action:?}");
    let inner = text.split("Some(").nth(1)?.split(')').next()?;
    parse_debug_duration(inner)
}

fn parse_debug_duration(text: &str) -> Option<std::time::Duration> {
    let (number, unit) = ["ns", "µs", "ms", "s"]
        .iter()
        .find_map(|u| text.strip_suffix(u).map(|n| (n, *u)))?;
    let value: f64 = number.parse().ok()?;
    let seconds = match unit {
        "ns" => value / 1e9,
        "µs" => value / 1e6,
        "ms" => value / 1e3,
        _ => value,
    };
    Some(std::time::Duration::from_secs_f64(seconds))
}

/// The scheduler's requeues hang on this parse: a kube upgrade that changes `Action`'s `Debug`
/// form must fail here, not drop requeues silently.
#[test]
fn the_requeue_delay_is_read_from_actions_debug_form() {
    use std::time::Duration;
    for delay in [
        Duration::from_nanos(1_500),
        Duration::from_millis(250),
        Duration::from_secs_f64(1.5),
        Duration::from_secs(300),
        Duration::new(86_400, 1),
    ] {
        let read = requeue_after(&Action::requeue(delay));
        assert!(
            read.is_some_and(|r| r.abs_diff(delay) < Duration::from_micros(1)),
            "{delay:?} (Debug {:?}) read as {read:?}",
            Action::requeue(delay)
        );
    }
    assert_eq!(requeue_after(&Action::await_change()), None);
}

/// A changed object, with the PimGroup it belongs to.
struct Change {
    kind: Kind,
    name: String,
    group: Option<String>,
    deleted: bool,
}

fn group_of(kind: Kind, value: &serde_json::Value) -> Option<String> {
    let field = match kind {
        Kind::Group => return value.pointer("/metadata/name")?.as_str().map(str::to_owned),
        Kind::Policy => return None,
        _ => "/spec/group",
    };
    value.pointer(field)?.as_str().map(str::to_owned)
}

/// The server's state of one kind as watch events over what the cache holds, and what changed.
fn diff<K>(
    api: &FakeApi,
    kind: Kind,
    store: &Store<Lenient<K>>,
    seen: &mut BTreeMap<Key, Seen>,
    relist: bool,
) -> (Vec<watcher::Event<Lenient<K>>>, Vec<Change>)
where
    K: kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + 'static,
{
    let listed = api.store_list(kind.plural(), None);
    let mut events: Vec<watcher::Event<Lenient<K>>> = Vec::new();
    let mut changed = Vec::new();
    let mut names = BTreeSet::new();
    if relist {
        events.push(watcher::Event::Init);
    }
    let before: BTreeMap<String, Seen> = seen
        .iter()
        .filter(|((k, _), _)| *k == kind)
        .map(|((_, n), v)| (n.clone(), v.clone()))
        .collect();
    for value in &listed {
        let Some(name) = value.pointer("/metadata/name").and_then(|v| v.as_str()) else {
            continue;
        };
        let version = value
            .pointer("/metadata/resourceVersion")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned();
        names.insert(name.to_owned());
        let Ok(object) = serde_json::from_value::<Lenient<K>>(value.clone()) else {
            continue;
        };
        let is_new = before.get(name).map(|s| &s.version) != Some(&version);
        if relist {
            events.push(watcher::Event::InitApply(object));
        } else if is_new {
            events.push(watcher::Event::Apply(object));
        }
        let group = group_of(kind, value);
        if is_new || relist {
            changed.push(Change {
                kind,
                name: name.to_owned(),
                group: group.clone(),
                deleted: false,
            });
        }
        seen.insert((kind, name.to_owned()), Seen { version, group });
    }
    for (name, last) in before.iter().filter(|(n, _)| !names.contains(*n)) {
        seen.remove(&(kind, name.clone()));
        if !relist && let Some(object) = store.get(&ObjectRef::new(name)) {
            events.push(watcher::Event::Delete((*object).clone()));
        }
        changed.push(Change {
            kind,
            name: name.clone(),
            group: last.group.clone(),
            deleted: true,
        });
    }
    if relist {
        events.push(watcher::Event::InitDone);
    }
    (events, changed)
}

#[derive(Debug, Clone)]
struct Seen {
    version: String,
    group: Option<String>,
}

fn apply<K>(writer: &mut Writer<Lenient<K>>, events: &[watcher::Event<Lenient<K>>])
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    for event in events {
        writer.apply_watcher_event(event);
    }
}

/// As `apply`, with the group index's hooks around each event (as `run_controllers` has them).
fn apply_indexed<K>(
    writer: &mut Writer<Lenient<K>>,
    index: &GroupIndex<K>,
    store: &Store<Lenient<K>>,
    events: &[watcher::Event<Lenient<K>>],
) where
    K: kube::Resource<DynamicType = ()> + InGroup + Clone + 'static,
{
    for event in events {
        index.before_store(event);
        writer.apply_watcher_event(event);
        index.after_store(event, store);
    }
}
