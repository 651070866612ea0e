//! What every reconciler shares: the client, the clock, the directories, the caches of the four
//! kinds, and what the directories last told us about membership.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use tokio::sync::mpsc;

use super::lenient::Lenient;
use super::priority::WritePriority;
use crate::api::activation_request::Phase;
use crate::api::common::Role;
use crate::api::{AccessPolicy, ActivationRequest, EligibleAssignment, PimGroup};
use crate::clock::Clock;
use crate::config::Settings;
use crate::core::membership::{Member, request_grant};
use crate::directory::Directories;
use crate::engine::{Attestor, Catalog};
use crate::metrics::Metrics;

/// Objects that belong to one PimGroup.
pub trait InGroup {
    fn group_name(&self) -> &str;
}

impl InGroup for EligibleAssignment {
    fn group_name(&self) -> &str {
        &self.spec.group
    }
}

impl InGroup for ActivationRequest {
    fn group_name(&self) -> &str {
        &self.spec.group
    }
}

/// The names of one kind's objects by the PimGroup they name, kept up to date from the watch,
/// so that a reconcile reads only its own group's objects. (Scanning every cache on every
/// reconcile made 10,000 activations quadratic.)
///
/// It may name more objects than the cache holds, never fewer: a name enters before the cache
/// stores the object ([`GroupIndex::before_store`]) and leaves after the cache dropped it
/// ([`GroupIndex::after_store`]). Readers look every name up in the cache and check its group
/// there, so they see exactly what a scan of the cache would.
pub struct GroupIndex<K: kube::Resource<DynamicType = ()> + 'static> {
    inner: Mutex<IndexInner<K>>,
}

struct IndexInner<K: kube::Resource<DynamicType = ()> + 'static> {
    by_group: HashMap<String, HashSet<ObjectRef<Lenient<K>>>>,
    /// The group each name was last stored under.
    group_of: HashMap<String, String>,
}

impl<K: kube::Resource<DynamicType = ()> + 'static> Default for IndexInner<K> {
    fn default() -> Self {
        IndexInner {
            by_group: HashMap::new(),
            group_of: HashMap::new(),
        }
    }
}

impl<K: kube::Resource<DynamicType = ()> + 'static> Default for GroupIndex<K> {
    fn default() -> Self {
        GroupIndex {
            inner: Mutex::default(),
        }
    }
}

impl<K: kube::Resource<DynamicType = ()> + 'static> IndexInner<K> {
    fn link(&mut self, group: &str, name: &str) {
        self.by_group
            .entry(group.to_owned())
            .or_default()
            .insert(ObjectRef::new(name));
    }

    fn unlink(&mut self, group: &str, name: &str) {
        if let Some(names) = self.by_group.get_mut(group) {
            names.remove(&ObjectRef::new(name));
            if names.is_empty() {
                self.by_group.remove(group);
            }
        }
    }
}

impl<K> GroupIndex<K>
where
    K: InGroup + kube::Resource<DynamicType = ()> + Clone + 'static,
{
    fn lock(&self) -> std::sync::MutexGuard<'_, IndexInner<K>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Before the cache applies `event`: new objects enter the index.
    pub fn before_store(&self, event: &watcher::Event<Lenient<K>>) {
        if let watcher::Event::Apply(object) | watcher::Event::InitApply(object) = event
            && let (Some(name), Some(parsed)) = (&object.metadata.name, object.object())
        {
            self.lock().link(parsed.group_name(), name);
        }
    }

    /// After the cache applied `event`: objects gone from a group leave it. A relist rebuilds
    /// the index from the cache.
    pub fn after_store(&self, event: &watcher::Event<Lenient<K>>, store: &Store<Lenient<K>>) {
        match event {
            watcher::Event::Apply(object) => {
                let Some(name) = &object.metadata.name else {
                    return;
                };
                let group = object.object().map(|o| o.group_name().to_owned());
                let mut inner = self.lock();
                let before = match &group {
                    Some(group) => inner.group_of.insert(name.clone(), group.clone()),
                    None => inner.group_of.remove(name),
                };
                if let Some(before) = before.filter(|b| Some(b) != group.as_ref()) {
                    inner.unlink(&before, name);
                }
            }
            watcher::Event::Delete(object) => {
                let Some(name) = &object.metadata.name else {
                    return;
                };
                let mut inner = self.lock();
                if let Some(before) = inner.group_of.remove(name) {
                    inner.unlink(&before, name);
                }
                if let Some(parsed) = object.object() {
                    inner.unlink(parsed.group_name(), name);
                }
            }
            watcher::Event::InitDone => {
                let mut rebuilt = IndexInner::default();
                for object in store.state() {
                    if let (Some(name), Some(parsed)) = (&object.metadata.name, object.object()) {
                        rebuilt.link(parsed.group_name(), name);
                        rebuilt
                            .group_of
                            .insert(name.clone(), parsed.group_name().to_owned());
                    }
                }
                *self.lock() = rebuilt;
            }
            watcher::Event::Init | watcher::Event::InitApply(_) => {}
        }
    }

    /// The well-formed objects of `group` in `store`: the index may name more (a superset), so
    /// each object's group is checked in the cache.
    pub fn objects(&self, store: &Store<Lenient<K>>, group: &str) -> Vec<Arc<Lenient<K>>> {
        // Lock order: the index, then the cache; nothing takes them the other way round.
        let inner = self.lock();
        let Some(refs) = inner.by_group.get(group) else {
            return Vec::new();
        };
        refs.iter()
            .filter_map(|r| store.get(r))
            .filter(|o| o.object().is_some_and(|k| k.group_name() == group))
            .collect()
    }
}

/// The ActivationRequests that are Active, kept from the watch for the `active_elevations`
/// gauge (counting them by a scan on every transition was quadratic too).
#[derive(Debug, Default)]
pub struct ActiveRequests {
    names: Mutex<HashSet<String>>,
}

impl ActiveRequests {
    /// After the cache applied `event`; returns how many requests are Active now.
    pub fn after_store(
        &self,
        event: &watcher::Event<Lenient<ActivationRequest>>,
        store: &Store<Lenient<ActivationRequest>>,
    ) -> usize {
        let is_active = |r: &Lenient<ActivationRequest>| {
            r.object()
                .and_then(|o| o.status.as_ref())
                .and_then(|s| s.phase)
                == Some(Phase::Active)
        };
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            watcher::Event::Apply(r) => {
                if let Some(name) = &r.metadata.name {
                    if is_active(r) {
                        names.insert(name.clone());
                    } else {
                        names.remove(name);
                    }
                }
            }
            watcher::Event::Delete(r) => {
                if let Some(name) = &r.metadata.name {
                    names.remove(name);
                }
            }
            watcher::Event::InitDone => {
                *names = store
                    .state()
                    .iter()
                    .filter(|r| is_active(r))
                    .filter_map(|r| r.metadata.name.clone())
                    .collect();
            }
            watcher::Event::Init | watcher::Event::InitApply(_) => {}
        }
        names.len()
    }
}

/// What a group pass reads from one request: the rest of a request's changes (its own status
/// conditions, approvals still short of the minimum, the finalizer) cannot change the group's
/// membership, so they need not wake the group. Nor can the (group, role, principal) of a request
/// that grants nothing, except in a group with `standingAccess: Report`, where it marks the
/// principal as one the operator may remove.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Contribution {
    group: String,
    role: Role,
    principal: Option<String>,
    deleting: bool,
    /// The request's grant: (start, end).
    grant: Option<(Timestamp, Timestamp)>,
}

impl Contribution {
    fn of(request: &Lenient<ActivationRequest>) -> Option<Contribution> {
        let name = request.metadata.name.as_deref().unwrap_or_default();
        let object = request.object()?;
        let grant = object
            .status
            .as_ref()
            .and_then(|status| request_grant(name, &object.spec, status))
            .and_then(|g| Some((g.start, g.end?)));
        Some(Contribution {
            group: object.spec.group.clone(),
            role: object.spec.role(),
            principal: object.spec.principal.clone(),
            deleting: request.metadata.deletion_timestamp.is_some(),
            grant,
        })
    }

    /// The same, as far as it matters from `now` on: a grant that has ended grants nothing, so
    /// a request turning Expired after its end does not wake its group again.
    fn as_of(&self, now: Timestamp) -> Contribution {
        Contribution {
            grant: self.grant.filter(|(_, end)| *end > now),
            ..self.clone()
        }
    }

    /// Only what can change membership in a group whose standing access is `Remove`.
    fn granting(&self) -> Option<Granting<'_>> {
        self.grant.map(|grant| {
            (
                self.group.as_str(),
                self.role,
                self.principal.as_deref(),
                self.deleting,
                grant,
            )
        })
    }

    fn grants_at(&self, now: Timestamp) -> bool {
        !self.deleting
            && self
                .grant
                .is_some_and(|(start, end)| start <= now && now < end)
    }
}

/// (group, role, principal, being deleted, (start, end)) of a request that grants.
type Granting<'a> = (&'a str, Role, Option<&'a str>, bool, (Timestamp, Timestamp));

/// Which PimGroups a request change must wake (DESIGN §5: the group converges on its requests).
#[derive(Debug, Default)]
pub struct GroupWakes {
    seen: Mutex<HashMap<String, Contribution>>,
}

/// What one request change means for the groups.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Wake {
    pub groups: Vec<String>,
    /// A grant ended early: the group has a revocation to make at once.
    pub revoked: Option<String>,
}

impl GroupWakes {
    /// What the change to `request` means at `now`; `reports(group)` tells whether a group has
    /// `standingAccess: Report` (or is unknown).
    pub fn changed(
        &self,
        request: &Lenient<ActivationRequest>,
        now: Timestamp,
        reports: impl Fn(&str) -> bool,
    ) -> Wake {
        let Some(name) = request.metadata.name.clone() else {
            return Wake::default();
        };
        let new = Contribution::of(request);
        let old = {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            match &new {
                Some(c) => seen.insert(name, c.clone()),
                None => seen.remove(&name),
            }
        };
        let (old_now, new_now) = (
            old.as_ref().map(|c| c.as_of(now)),
            new.as_ref().map(|c| c.as_of(now)),
        );
        if old_now == new_now {
            return Wake::default();
        }
        let granting_changed = old_now.as_ref().and_then(Contribution::granting)
            != new_now.as_ref().and_then(Contribution::granting);
        let mut groups: Vec<String> = old_now
            .iter()
            .chain(&new_now)
            .map(|c| c.group.clone())
            .filter(|g| granting_changed || reports(g))
            .collect();
        groups.dedup();
        let revoked = old
            .as_ref()
            .filter(|old| old.grants_at(now))
            .filter(|_| !new.as_ref().is_some_and(|new| new.grants_at(now)))
            .map(|old| old.group.clone());
        Wake { groups, revoked }
    }

    pub fn forget(&self, request: &str) {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(request);
    }

    /// Keeps only the requests still in the cache (after a relist, which has no deletions).
    pub fn retain_in(&self, store: &Store<Lenient<ActivationRequest>>) {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|name, _| store.get(&ObjectRef::new(name)).is_some());
    }
}

/// Which PimGroups an EligibleAssignment change concerns. Decisions read an assignment's spec,
/// never its status, so a change that moves neither its generation nor its deletion (its own
/// status writes, a notification recorded on it) concerns nobody.
#[derive(Debug, Default)]
pub struct AssignmentChanges {
    /// Per assignment: (generation, being deleted, group) as last seen.
    seen: Mutex<HashMap<String, AssignmentSeen>>,
}

type AssignmentSeen = (Option<i64>, bool, String);

impl AssignmentChanges {
    /// The groups (the old and the new one) whose decisions `assignment`'s change may move.
    pub fn groups(&self, assignment: &Lenient<EligibleAssignment>) -> Vec<String> {
        let (Some(name), Some(parsed)) = (&assignment.metadata.name, assignment.object()) else {
            return Vec::new();
        };
        let now = (
            assignment.metadata.generation,
            assignment.metadata.deletion_timestamp.is_some(),
            parsed.spec.group.clone(),
        );
        let before = self
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.clone(), now.clone());
        match before {
            Some(before) if before == now => Vec::new(),
            Some(before) if before.2 != now.2 => vec![before.2, now.2],
            _ => vec![now.2],
        }
    }

    pub fn forget(&self, assignment: &str) {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(assignment);
    }
}

/// Tells a controller's own objects' status-only changes apart. A reconciler whose output is
/// the status need not run again because of a status write, its own or the notifier's: the next
/// pass would decide the same, and what it waits for (the directory, a deadline) wakes it by
/// other means. A change of spec (generation) or finalizers still passes, so does every change
/// of an object being deleted (its finalizer waits on others' status writes), and so does every
/// object the first time it is seen.
#[derive(Debug, Default)]
pub struct StatusOnly {
    /// Per object: (generation, deletion requested, finalizers) as last passed on.
    seen: Mutex<HashMap<String, MetadataSeen>>,
}

type MetadataSeen = (Option<i64>, bool, Vec<String>);

impl StatusOnly {
    /// Whether the change to `meta` is more than its status (it is passed on when so).
    pub fn passes(&self, meta: &kube::core::ObjectMeta) -> bool {
        let Some(name) = &meta.name else {
            return true;
        };
        let key = (
            meta.generation,
            meta.deletion_timestamp.is_some(),
            meta.finalizers.clone().unwrap_or_default(),
        );
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.get(name) == Some(&key) && meta.deletion_timestamp.is_none() {
            return false;
        }
        seen.insert(name.clone(), key);
        true
    }

    pub fn forget(&self, name: &str) {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
    }
}

/// The resourceVersion each object had when this process last wrote its status. A pass that
/// still reads that version runs before its own write came back through the watch, and a status
/// write based on it would only fail with 409 Conflict (writes carry the version they read).
/// Only for a moment ([`OwnWrites::WATCH_DELAY`]): a write that changed nothing on the server
/// sends no watch event, and must not make the object look behind for ever.
#[derive(Debug, Default)]
pub struct OwnWrites {
    based_on: Mutex<HashMap<String, (String, std::time::Instant)>>,
}

impl OwnWrites {
    /// How long a write may take to come back through the watch.
    pub const WATCH_DELAY: std::time::Duration = std::time::Duration::from_secs(2);

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, std::time::Instant)>> {
        self.based_on.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A status write based on version `read` of `name` succeeded.
    pub fn wrote(&self, name: &str, read: Option<&str>) {
        if let Some(read) = read {
            self.lock().insert(
                name.to_owned(),
                (read.to_owned(), std::time::Instant::now()),
            );
        }
    }

    /// Whether version `read` of `name` is one this process wrote over a moment ago.
    pub fn behind(&self, name: &str, read: Option<&str>) -> bool {
        read.is_some_and(|read| {
            self.lock()
                .get(name)
                .is_some_and(|(based_on, at)| based_on == read && at.elapsed() < Self::WATCH_DELAY)
        })
    }

    pub fn forget(&self, name: &str) {
        self.lock().remove(name);
    }
}

/// Reflector caches of the four kinds, shared by every controller, with the assignments and
/// requests indexed by group.
#[derive(Clone)]
pub struct Stores {
    pub policies: Store<Lenient<AccessPolicy>>,
    pub groups: Store<Lenient<PimGroup>>,
    pub assignments: Store<Lenient<EligibleAssignment>>,
    pub requests: Store<Lenient<ActivationRequest>>,
    pub assignments_by_group: Arc<GroupIndex<EligibleAssignment>>,
    pub requests_by_group: Arc<GroupIndex<ActivationRequest>>,
}

impl Stores {
    /// A snapshot of every well-formed object. Objects being deleted still count: a request
    /// being deleted still needs its grant removed, which its finalizer waits for.
    pub fn catalog(&self) -> Catalog {
        let mut catalog = self.policies_only();
        for g in self.groups.state() {
            if let Ok(object) = &g.parsed {
                catalog.insert_group(object.clone());
            }
        }
        for a in self.assignments.state() {
            if let Ok(object) = &a.parsed {
                catalog.insert_assignment(object.clone());
            }
        }
        for r in self.requests.state() {
            if let Ok(object) = &r.parsed {
                catalog.insert_request(object.clone());
            }
        }
        catalog
    }

    /// What decisions about one PimGroup need: all policies, the group, and its assignments and
    /// requests, found through the indexes: its cost does not grow with the other groups.
    pub fn catalog_for(&self, group: &str) -> Catalog {
        let mut catalog = self.policies_only();
        if let Some(g) = self.groups.get(&ObjectRef::new(group))
            && let Ok(object) = &g.parsed
        {
            catalog.insert_group(object.clone());
        }
        for a in self.assignments_of(group) {
            if let Ok(object) = &a.parsed {
                catalog.insert_assignment(object.clone());
            }
        }
        for r in self.requests_of(group) {
            if let Ok(object) = &r.parsed {
                catalog.insert_request(object.clone());
            }
        }
        catalog
    }

    fn policies_only(&self) -> Catalog {
        let mut catalog = Catalog::default();
        for p in self.policies.state() {
            if let Ok(object) = &p.parsed {
                catalog.insert_policy(object.clone());
            }
        }
        catalog
    }

    /// The well-formed requests naming `group`.
    pub fn requests_of(&self, group: &str) -> Vec<Arc<Lenient<ActivationRequest>>> {
        self.requests_by_group.objects(&self.requests, group)
    }

    /// The well-formed assignments naming `group`.
    pub fn assignments_of(&self, group: &str) -> Vec<Arc<Lenient<EligibleAssignment>>> {
        self.assignments_by_group.objects(&self.assignments, group)
    }
}

/// Kubernetes Events, through several recorders. A `Recorder` keeps the Events it published in
/// the last few minutes (to count repeats) and sweeps all of them on every publish; one shared
/// recorder made 10,000 transitions cost 10,000 sweeps of up to 10,000 Events. Each object
/// always goes to the same recorder, so repeats are still counted.
#[derive(Clone)]
pub struct Events {
    shards: Vec<Recorder>,
}

/// How many recorders [`Events`] spreads objects over.
const EVENT_SHARDS: usize = 64;

impl Events {
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Events {
            shards: (0..EVENT_SHARDS)
                .map(|_| Recorder::new(client.clone(), reporter.clone()))
                .collect(),
        }
    }

    /// Publishes `event` about the object `reference`, as [`Recorder::publish`].
    pub async fn publish(
        &self,
        event: &Event,
        reference: &ObjectReference,
    ) -> Result<(), kube::Error> {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one((
            &reference.namespace,
            &reference.name,
            &reference.uid,
        ));
        let shard = usize::try_from(hash % EVENT_SHARDS as u64).unwrap_or_default();
        match self.shards.get(shard) {
            Some(recorder) => recorder.publish(event, reference).await,
            None => Ok(()),
        }
    }
}

/// What the directories last reported (or were last told) about each (PimGroup, role).
#[derive(Debug, Default)]
pub struct MembershipCache {
    members: Mutex<HashMap<(String, Role), BTreeSet<Member>>>,
    /// Failed removals per (PimGroup, role): members kept past the end of their access.
    overdue: Mutex<HashMap<(String, Role), usize>>,
}

impl MembershipCache {
    /// Records what the directory now holds; returns what was recorded before (`None`: nothing
    /// since start).
    pub fn set(
        &self,
        group: &str,
        role: Role,
        members: BTreeSet<Member>,
    ) -> Option<BTreeSet<Member>> {
        self.lock().insert((group.to_owned(), role), members)
    }

    pub fn forget(&self, group: &str) {
        self.lock().retain(|(g, _), _| g != group);
        self.overdue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(g, _), _| g != group);
    }

    /// Records the overdue revocations of one (PimGroup, role); returns the total over all.
    pub fn set_overdue(&self, group: &str, role: Role, count: usize) -> usize {
        let mut overdue = self.overdue.lock().unwrap_or_else(|e| e.into_inner());
        overdue.insert((group.to_owned(), role), count);
        overdue.values().sum()
    }

    /// `None` when the group has not been listed since start: unknown, not absent.
    pub fn contains(&self, group: &str, role: Role, member: &Member) -> Option<bool> {
        self.lock()
            .get(&(group.to_owned(), role))
            .map(|m| m.contains(member))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, Role), BTreeSet<Member>>> {
        self.members.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct Context {
    pub client: Client,
    pub clock: Arc<dyn Clock>,
    pub settings: Settings,
    pub directories: Directories,
    pub attestor: Arc<dyn Attestor>,
    pub metrics: Arc<Metrics>,
    pub recorder: Events,
    pub stores: Stores,
    pub membership: MembershipCache,
    /// Revocations before grants when a directory throttles.
    pub priority: WritePriority,
    /// PimGroup status writes, to tell a cache that has not caught up with them.
    pub group_writes: OwnWrites,
    /// Asks the request controller to look at requests again (after the directory confirmed a
    /// change, say).
    pub request_triggers: mpsc::UnboundedSender<ObjectRef<Lenient<ActivationRequest>>>,
    /// Asks the group controller to look at groups again (grants held back, now free to go).
    pub group_triggers: mpsc::UnboundedSender<ObjectRef<Lenient<PimGroup>>>,
}

impl Context {
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// How long until `deadline`, capped by the resync interval: the next look at an object.
    pub fn requeue_for(&self, deadline: Option<Timestamp>) -> std::time::Duration {
        let resync = self.settings.resync;
        let Some(deadline) = deadline else {
            return resync;
        };
        requeue_delay(deadline.duration_since(self.now()), resync)
    }

    /// Wakes every request of `group`.
    pub fn trigger_requests_of(&self, group: &str) {
        for r in self.stores.requests_of(group) {
            let _ = self.request_triggers.send(ObjectRef::from_obj(r.as_ref()));
        }
    }

    /// Wakes the requests of `group`/`role` whose principal is one of `members`: those whose
    /// view of the directory changed.
    pub fn trigger_requests_for(&self, group: &str, role: Role, members: &BTreeSet<Member>) {
        if members.is_empty() {
            return;
        }
        for r in self.stores.requests_of(group) {
            let concerned = r.object().is_some_and(|o| {
                o.spec.role() == role
                    && o.spec
                        .principal
                        .as_ref()
                        .is_some_and(|p| members.contains(&Member::User(p.clone())))
            });
            if concerned {
                let _ = self.request_triggers.send(ObjectRef::from_obj(r.as_ref()));
            }
        }
    }

    /// Wakes the named groups.
    pub fn trigger_groups(&self, groups: impl IntoIterator<Item = String>) {
        for group in groups {
            let _ = self.group_triggers.send(ObjectRef::new(&group));
        }
    }
}

/// How long to wait for a deadline `until` away: a moment past it, so the next pass sees it
/// reached; at once when it has already passed; never longer than the resync interval.
pub fn requeue_delay(
    until: jiff::SignedDuration,
    resync: std::time::Duration,
) -> std::time::Duration {
    let margin = std::time::Duration::from_millis(10);
    if until.is_negative() {
        return margin;
    }
    (until.unsigned_abs() + margin).min(resync)
}

/// Runs one reconcile of `kind`, recording how long it took.
pub async fn timed(
    kind: &str,
    ctx: &Context,
    pass: impl std::future::Future<
        Output = Result<kube::runtime::controller::Action, super::error::Error>,
    >,
) -> Result<kube::runtime::controller::Action, super::error::Error> {
    let started = std::time::Instant::now();
    let result = pass.await;
    ctx.metrics.observe_reconcile(kind, started);
    result
}

/// The error policy of every kind: log, count by category, and back off as the error asks.
pub fn back_off(
    kind: &str,
    error: &super::error::Error,
    ctx: &Context,
) -> kube::runtime::controller::Action {
    tracing::warn!(kind, %error, "reconcile failed");
    ctx.metrics.reconcile_error(kind, error.category());
    kube::runtime::controller::Action::requeue(error.backoff())
}

#[cfg(test)]
mod tests {
    use super::requeue_delay;
    use jiff::SignedDuration;
    use std::time::Duration;

    #[test]
    fn a_passed_deadline_is_looked_at_now_not_later() {
        let resync = Duration::from_secs(300);
        assert_eq!(
            requeue_delay(SignedDuration::from_mins(-5), resync),
            Duration::from_millis(10)
        );
        assert_eq!(
            requeue_delay(SignedDuration::from_secs(30), resync),
            Duration::from_millis(30_010)
        );
        assert_eq!(requeue_delay(SignedDuration::from_hours(2), resync), resync);
    }
}
