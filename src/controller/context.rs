//! What every reconciler shares: the client, the clock, the directories, the caches of the four
//! kinds, and what the directories last told us about membership.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use kube::Client;
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::sync::mpsc;

use super::events::Events;
use super::index::GroupIndex;
use super::priority::WritePriority;
use super::wakes::OwnWrites;
use crate::api::common::Role;
use crate::api::{
    AccessPolicy, AccessReview, ActivationRequest, EligibleAssignment, PimGrant, PimGroup,
};
use crate::audit::sink::AuditSinks;
use crate::clock::Clock;
use crate::config::Settings;
use crate::core::identity::Principals;
use crate::core::membership::Member;
use crate::directory::Directories;
use crate::engine::{Attestor, Catalog};
use crate::lenient::Lenient;
use crate::metrics::Metrics;

/// Reflector caches of the four kinds, shared by every controller, with the assignments and
/// requests indexed by group.
#[derive(Clone)]
pub struct Stores {
    pub policies: Store<Lenient<AccessPolicy>>,
    pub groups: Store<Lenient<PimGroup>>,
    pub assignments: Store<Lenient<EligibleAssignment>>,
    pub requests: Store<Lenient<ActivationRequest>>,
    /// The grant ledger.
    pub grants: Store<Lenient<PimGrant>>,
    /// Their status holds the denials that end assignments.
    pub reviews: Store<Lenient<AccessReview>>,
    pub assignments_by_group: Arc<GroupIndex<EligibleAssignment>>,
    pub requests_by_group: Arc<GroupIndex<ActivationRequest>>,
    pub grants_by_group: Arc<GroupIndex<PimGrant>>,
    /// Each directory's username mapping, and how names compare
    /// (`usernameMapping.caseInsensitive`).
    pub principals: Arc<Principals>,
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
        catalog.set_principals(self.principals.clone());
        for p in self.policies.state() {
            if let Ok(object) = &p.parsed {
                catalog.insert_policy(object.clone());
            }
        }
        for r in self.reviews.state() {
            if let Some(object) = crate::lenient::review_for_catalog(&r) {
                catalog.insert_review(object);
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

    /// The well-formed ledger entries of PimGroup `group`.
    pub fn grants_of(&self, group: &str) -> Vec<Arc<Lenient<PimGrant>>> {
        self.grants_by_group.objects(&self.grants, group)
    }
}

/// What the directories last reported (or were last told) about each (PimGroup, role).
#[derive(Debug, Default)]
pub struct MembershipCache {
    members: Mutex<HashMap<(String, Role), BTreeSet<Member>>>,
    /// Failed removals per (PimGroup, role): members kept past the end of their access.
    overdue: Mutex<HashMap<(String, Role), usize>>,
    /// Why the directory last refused to remove a member, per (PimGroup, role, member): the
    /// request waiting for that removal reports it.
    refused: Mutex<HashMap<(String, Role, Member), String>>,
}

impl MembershipCache {
    /// Records what the directory now holds; returns what was recorded before (`None`: nothing
    /// since start). A refused removal of a member no longer held (the directory ended it
    /// itself, say) is forgotten with it.
    pub fn set(
        &self,
        group: &str,
        role: Role,
        members: BTreeSet<Member>,
    ) -> Option<BTreeSet<Member>> {
        self.refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(g, r, m), _| g != group || *r != role || members.contains(m));
        self.lock().insert((group.to_owned(), role), members)
    }

    /// Records why the directory refused to remove `member` (`None`: the removal went through).
    pub fn set_removal_refused(
        &self,
        group: &str,
        role: Role,
        member: &Member,
        why: Option<String>,
    ) {
        let mut refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        let key = (group.to_owned(), role, member.clone());
        match why {
            Some(why) => refused.insert(key, why),
            None => refused.remove(&key),
        };
    }

    /// Why the directory last refused to remove `member`, if it did.
    pub fn removal_refused(&self, group: &str, role: Role, member: &Member) -> Option<String> {
        self.refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(group.to_owned(), role, member.clone()))
            .cloned()
    }

    pub fn forget(&self, group: &str) {
        self.lock().retain(|(g, _), _| g != group);
        self.refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(g, _, _), _| g != group);
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
    /// What this process wrote to and closed in the grant ledger, and removals it confirmed.
    pub ledger: super::ledger::LedgerMemory,
    /// The directory groups the request controller found each request's principal in (by
    /// request uid), for eligibility granted to a directory group.
    pub principal_groups: Mutex<HashMap<String, Vec<String>>>,
    /// What the request controller last wrote to each request's status, so that a status
    /// written by anyone else wakes it (see `wakes::StatusOnly`).
    pub request_status_writes: Arc<super::wakes::StatusOnly>,
    /// Failures in a row per object, for the back-off.
    pub failures: Failures,
    /// Set once the grant ledger's cache has been listed (see `ledger_ready`).
    pub ledger_synced: tokio::sync::watch::Sender<bool>,
    /// Set once every cache has been listed: only then does a PimGroup missing from the cache
    /// mean it is gone.
    pub caches_synced: tokio::sync::watch::Sender<bool>,
    /// Each PimGroup's next deadline as its last pass saw it: a failing group still looks
    /// again then, whatever its back-off (another member's grant may end meanwhile).
    pub group_deadlines: Mutex<HashMap<String, Timestamp>>,
    /// When each assignment's status next changes by time, for a manual clock's jumps.
    pub assignment_due: Arc<super::jumps::DueTimes>,
    /// Revocations before grants when a directory throttles.
    pub priority: WritePriority,
    /// PimGroup status writes, to tell a cache that has not caught up with them.
    pub group_writes: OwnWrites,
    /// Asks the request controller to look at requests again (after the directory confirmed a
    /// change, say).
    pub request_triggers: mpsc::UnboundedSender<ObjectRef<Lenient<ActivationRequest>>>,
    /// Requests whose grant is due waiting for the directory before they write `Scheduled`.
    pub grant_holds: super::request::GrantHolds,
    /// Asks the group controller to look at groups again (grants held back, now free to go).
    pub group_triggers: mpsc::UnboundedSender<ObjectRef<Lenient<PimGroup>>>,
    /// The audit sinks of the config; `None` when they could not be set up (then nothing counts
    /// as audited, and retention waits).
    pub audit: Option<Arc<AuditSinks>>,
    /// Objects under a policy alert that metrics count.
    pub alerts: AlertBoard,
}

/// The Eligible assignments now `Stale`, for `pim_stale_assignments`.
#[derive(Default)]
pub struct AlertBoard {
    stale: Mutex<StaleSet>,
    /// (request uid, alert) counted in this process: a pass that runs before the cache holds
    /// our own status write must not count the alert again.
    raised: Mutex<std::collections::HashSet<(String, &'static str)>>,
}

#[derive(Default)]
struct StaleSet {
    names: BTreeSet<String>,
    pruned: Option<std::time::Instant>,
}

/// How often the stale set forgets deleted assignments: a resync reconciles every assignment,
/// and pruning on each would cost stale × all.
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

impl AlertBoard {
    /// Whether `alert` on the request `uid` is raised for the first time in this process.
    pub fn first_raise(&self, uid: &str, alert: &'static str) -> bool {
        let mut raised = self.raised.lock().unwrap_or_else(|e| e.into_inner());
        raised.insert((uid.to_owned(), alert))
    }

    /// Records whether `assignment` is stale; true when it newly is.
    pub fn set_stale(&self, assignment: &str, stale: bool) -> bool {
        let mut set = self.stale.lock().unwrap_or_else(|e| e.into_inner());
        if stale {
            set.names.insert(assignment.to_owned())
        } else {
            set.names.remove(assignment);
            false
        }
    }

    /// How many are stale, forgetting now and then the assignments deleted since (the
    /// reconciler does not see deletions).
    pub fn stale_count(&self, stores: &Stores) -> i64 {
        let mut set = self.stale.lock().unwrap_or_else(|e| e.into_inner());
        if set.pruned.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
            set.names
                .retain(|name| stores.assignments.get(&ObjectRef::new(name)).is_some());
            set.pruned = Some(std::time::Instant::now());
        }
        i64::try_from(set.names.len()).unwrap_or(i64::MAX)
    }
}

/// The audit sinks `settings` configure, or `None` (logged) when they cannot be set up.
pub fn audit_sinks(settings: &Settings, clock: Arc<dyn Clock>) -> Option<Arc<AuditSinks>> {
    match AuditSinks::new(&settings.config.audit, clock) {
        Ok(sinks) => Some(Arc::new(sinks)),
        Err(problem) => {
            tracing::error!(%problem, "audit sinks not set up; no request is deleted by retention until they are");
            None
        }
    }
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

    /// Whether `request`'s principal is in directory group `group`, for proving its grant: the
    /// groups the API server stamped at admission, else what the request controller last looked
    /// up. Before it has looked (just after a start), the assignment its status names is taken
    /// as the answer, so that a restart does not drop and re-add members; the request
    /// controller looks within the same moment and corrects it.
    pub fn member_of(&self, catalog: &Catalog, request: &ActivationRequest, group: &str) -> bool {
        if crate::engine::stamped_groups(request, group) {
            return true;
        }
        let uid = request.metadata.uid.as_deref().unwrap_or_default();
        let looked_up = self
            .principal_groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(uid)
            .map(|groups| groups.iter().any(|g| g == group));
        looked_up.unwrap_or_else(|| {
            request
                .status
                .as_ref()
                .and_then(|s| s.matched_assignment.as_ref())
                .and_then(|a| catalog.assignments.get(a))
                .is_some_and(|a| a.spec.principal.group.as_deref() == Some(group))
        })
    }

    /// Waits until the ledger's cache has been listed once. Many reconciles wait at once, so they
    /// wait on a broadcast: the store's own `wait_until_ready` wakes only its latest waiter (it
    /// keeps one waker), which left requests waiting for ever.
    pub async fn ledger_ready(&self) {
        let mut ready = self.ledger_synced.subscribe();
        if ready.wait_for(|synced| *synced).await.is_err() {
            // Only when the sender is gone, that is while stopping.
            tracing::warn!("the grant ledger's cache was never listed");
        }
    }

    /// Waits until every cache has been listed once.
    pub async fn caches_ready(&self) {
        let mut ready = self.caches_synced.subscribe();
        if ready.wait_for(|synced| *synced).await.is_err() {
            tracing::warn!("the caches were never listed");
        }
    }

    /// Wakes every request of `group`.
    pub fn trigger_requests_of(&self, group: &str) {
        for r in self.stores.requests_of(group) {
            // Fails only once the controller has stopped: nothing is left to wake.
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
                // Fails only once the controller has stopped: nothing is left to wake.
                let _ = self.request_triggers.send(ObjectRef::from_obj(r.as_ref()));
            }
        }
    }

    /// Wakes the named groups.
    pub fn trigger_groups(&self, groups: impl IntoIterator<Item = String>) {
        for group in groups {
            // Fails only once the controller has stopped: nothing is left to wake.
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

/// Runs one reconcile of `kind` for object `name`, recording how long it took; a success ends
/// the object's run of failures.
pub async fn timed(
    kind: &str,
    ctx: &Context,
    name: Option<&str>,
    pass: impl std::future::Future<
        Output = Result<kube::runtime::controller::Action, super::error::Error>,
    >,
) -> Result<kube::runtime::controller::Action, super::error::Error> {
    let started = std::time::Instant::now();
    let result = pass.await;
    ctx.metrics.observe_reconcile(kind, started);
    if result.is_ok() {
        ctx.failures.succeeded(kind, name.unwrap_or_default());
    }
    result
}

/// The error policy of every kind: log with the object's name, count by category, and back
/// off as the error asks, doubling with each failure in a row of the same object (a 409 from a
/// stale cache included: issue 14, finding 10).
pub fn back_off(
    kind: &str,
    name: Option<&str>,
    error: &super::error::Error,
    ctx: &Context,
) -> kube::runtime::controller::Action {
    kube::runtime::controller::Action::requeue(back_off_delay(kind, name, error, ctx))
}

/// [`back_off`]'s wait, for an error policy that may look again sooner.
pub fn back_off_delay(
    kind: &str,
    name: Option<&str>,
    error: &super::error::Error,
    ctx: &Context,
) -> std::time::Duration {
    record_failure(kind, name, error, &ctx.failures, &ctx.metrics)
}

/// Counts one failure of the object, logs it (once, here: reconcilers return their errors
/// rather than log them) and says how long to wait.
fn record_failure(
    kind: &str,
    name: Option<&str>,
    error: &super::error::Error,
    failures: &Failures,
    metrics: &Metrics,
) -> std::time::Duration {
    let name = name.unwrap_or_default();
    let failures = failures.failed(kind, name);
    let delay = growing_backoff(error.backoff(), failures);
    tracing::warn!(kind, name, %error, failures, retry_in = ?delay, "reconcile failed");
    metrics.reconcile_error(kind, error.category());
    delay
}

/// The longest wait between tries of a failing object.
const MAX_BACKOFF: std::time::Duration = std::time::Duration::from_secs(60);

/// `first`, doubled for each failure after the first, capped at a minute (never below `first`,
/// which may be a directory's Retry-After).
pub fn growing_backoff(first: std::time::Duration, failures: u32) -> std::time::Duration {
    let doublings = failures.saturating_sub(1).min(16);
    first
        .saturating_mul(1u32 << doublings)
        .min(MAX_BACKOFF)
        .max(first)
}

/// Failures in a row, per (kind, object).
#[derive(Debug, Default)]
pub struct Failures {
    counts: Mutex<HashMap<(String, String), u32>>,
}

impl Failures {
    pub(crate) fn failed(&self, kind: &str, name: &str) -> u32 {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts
            .entry((kind.to_owned(), name.to_owned()))
            .or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    pub(crate) fn succeeded(&self, kind: &str, name: &str) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if !counts.is_empty() {
            counts.remove(&(kind.to_owned(), name.to_owned()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Failures, growing_backoff, record_failure, requeue_delay};
    use crate::controller::error::Error;
    use crate::directory::DirectoryError;
    use crate::metrics::Metrics;
    use jiff::SignedDuration;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    /// Log output, for the subscriber under test.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    // Issue 22: each failure is logged once, at warn, with the object's kind and name, the
    // error and the wait; the wait grows per object, and another object's failures do not count.
    #[test]
    fn a_failure_is_logged_once_with_the_object_and_its_wait() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber =
            crate::logging::subscriber(tracing_subscriber::EnvFilter::new("info"), move || {
                writer.clone()
            });
        let failures = Failures::default();
        let metrics = Metrics::new();
        let error = Error::Directory(DirectoryError::transient("add member", "timed out"));
        let waits = tracing::subscriber::with_default(subscriber, || {
            [
                record_failure("PimGroup", Some("ops"), &error, &failures, &metrics),
                record_failure("PimGroup", Some("ops"), &error, &failures, &metrics),
                record_failure("PimGroup", Some("dev"), &error, &failures, &metrics),
            ]
        });
        let two = Duration::from_secs(2);
        assert_eq!(waits, [two, two * 2, two]);
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3, "{text}");
        for (line, (name, failures)) in lines.iter().zip([("ops", 1), ("ops", 2), ("dev", 1)]) {
            let field = |key: &str| line.get(key).or_else(|| line["fields"].get(key)).cloned();
            assert_eq!(line["level"], "WARN", "{line}");
            assert_eq!(field("kind"), Some("PimGroup".into()), "{line}");
            assert_eq!(field("name"), Some(name.into()), "{line}");
            assert_eq!(field("failures"), Some(failures.into()), "{line}");
            let logged_error = field("error").unwrap_or_default();
            assert!(
                logged_error
                    .as_str()
                    .is_some_and(|e| e.contains("timed out")),
                "{line}"
            );
            assert!(field("retry_in").is_some(), "{line}");
        }
    }

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

    // Issue 14 finding 10: a 409 from a stale cache is retried with growing waits, not every
    // 200 ms for as long as writes fail.
    #[test]
    fn failures_in_a_row_back_off_longer_and_longer() {
        let first = Duration::from_millis(200);
        let waits: Vec<_> = (1..=12).map(|n| growing_backoff(first, n)).collect();
        assert_eq!(waits[0], first);
        assert_eq!(waits[1], Duration::from_millis(400));
        assert_eq!(waits[4], Duration::from_millis(3200));
        assert!(waits.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(waits[11], Duration::from_secs(60));
        // A Retry-After longer than the cap is still honoured.
        assert_eq!(
            growing_backoff(Duration::from_secs(120), 5),
            Duration::from_secs(120)
        );
    }
}

#[cfg(test)]
mod membership_tests {
    use super::*;

    #[test]
    fn a_refusal_goes_with_the_member_the_directory_no_longer_lists() {
        // Entra ended the assignment itself: the member is gone, the refusal must not stay
        // behind for the request to report.
        let cache = MembershipCache::default();
        let alice = Member::User("alice".into());
        let bob = Member::User("bob".into());
        for member in [&alice, &bob] {
            cache.set_removal_refused("g", Role::Member, member, Some("too soon".into()));
        }
        cache.set("g", Role::Member, BTreeSet::from([bob.clone()]));
        assert_eq!(cache.removal_refused("g", Role::Member, &alice), None);
        assert_eq!(
            cache.removal_refused("g", Role::Member, &bob).as_deref(),
            Some("too soon")
        );
    }
}
