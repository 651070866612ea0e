//! What every reconciler shares: the client, the clock, the directories, the caches of the four
//! kinds, and what the directories last told us about membership.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use kube::Client;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::sync::mpsc;

use super::lenient::Lenient;
use crate::api::common::Role;
use crate::api::{AccessPolicy, ActivationRequest, EligibleAssignment, PimGroup};
use crate::clock::Clock;
use crate::config::Settings;
use crate::core::membership::Member;
use crate::directory::Directories;
use crate::engine::{Attestor, Catalog};
use crate::metrics::Metrics;

/// Reflector caches of the four kinds, shared by every controller.
#[derive(Clone)]
pub struct Stores {
    pub policies: Store<Lenient<AccessPolicy>>,
    pub groups: Store<Lenient<PimGroup>>,
    pub assignments: Store<Lenient<EligibleAssignment>>,
    pub requests: Store<Lenient<ActivationRequest>>,
}

impl Stores {
    /// A snapshot of every well-formed object. Objects being deleted still count: a request
    /// being deleted still needs its grant removed, which its finalizer waits for.
    pub fn catalog(&self) -> Catalog {
        self.snapshot(None)
    }

    /// What decisions about one PimGroup need: all policies, the group, and its assignments and
    /// requests. Cheaper than the whole catalog when there are many groups.
    pub fn catalog_for(&self, group: &str) -> Catalog {
        self.snapshot(Some(group))
    }

    fn snapshot(&self, group: Option<&str>) -> Catalog {
        let in_scope = |g: &str| group.is_none_or(|wanted| wanted == g);
        let mut catalog = Catalog::default();
        for p in self.policies.state() {
            if let Ok(object) = &p.parsed {
                catalog.insert_policy(object.clone());
            }
        }
        for g in self.groups.state() {
            if let Ok(object) = &g.parsed
                && in_scope(g.metadata.name.as_deref().unwrap_or_default())
            {
                catalog.insert_group(object.clone());
            }
        }
        for a in self.assignments.state() {
            if let Ok(object) = &a.parsed
                && in_scope(&object.spec.group)
            {
                catalog.insert_assignment(object.clone());
            }
        }
        for r in self.requests.state() {
            if let Ok(object) = &r.parsed
                && in_scope(&object.spec.group)
            {
                catalog.insert_request(object.clone());
            }
        }
        catalog
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
    pub fn set(&self, group: &str, role: Role, members: BTreeSet<Member>) {
        self.lock().insert((group.to_owned(), role), members);
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
    pub recorder: Recorder,
    pub stores: Stores,
    pub membership: MembershipCache,
    /// Asks the request controller to look at requests again (after the directory confirmed a
    /// change, say).
    pub request_triggers: mpsc::UnboundedSender<ObjectRef<Lenient<ActivationRequest>>>,
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

    pub fn trigger_requests_of(&self, group: &str) {
        for r in self.stores.requests.state() {
            let matches = r.object().is_some_and(|o| o.spec.group == group);
            if matches {
                let _ = self.request_triggers.send(ObjectRef::from_obj(r.as_ref()));
            }
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
