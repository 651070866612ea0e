//! Which watch events wake which controller: a change wakes a reconciler only when it can
//! change what that reconciler decides (DESIGN §5), so 10,000 status writes do not become
//! 10,000 group passes.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use jiff::Timestamp;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::api::common::Role;
use crate::api::{ActivationRequest, EligibleAssignment};
use crate::core::membership::request_grant;
use crate::lenient::Lenient;

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

/// The open extensions (`spec.extends`) of each request, kept from the request watch, so that a
/// request's end wakes exactly its extensions (which end with it) without a scan of its group.
#[derive(Debug, Default)]
pub struct ExtensionWakes {
    open: Mutex<HashMap<String, BTreeSet<String>>>,
}

impl ExtensionWakes {
    /// Records what `request` extends while it is open; returns its open extensions once it
    /// has ended or is being deleted.
    pub fn changed(
        &self,
        request: &Lenient<ActivationRequest>,
    ) -> Vec<ObjectRef<Lenient<ActivationRequest>>> {
        let (Some(name), Some(object)) = (request.metadata.name.as_deref(), request.object())
        else {
            return Vec::new();
        };
        let ended = request.metadata.deletion_timestamp.is_some() || !object.is_open();
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(of) = object.spec.extends.as_deref() {
            if ended {
                if let Some(extensions) = open.get_mut(of) {
                    extensions.remove(name);
                    if extensions.is_empty() {
                        open.remove(of);
                    }
                }
            } else {
                open.entry(of.to_owned())
                    .or_default()
                    .insert(name.to_owned());
            }
        }
        if !ended {
            return Vec::new();
        }
        open.get(name)
            .map(|extensions| extensions.iter().map(|e| ObjectRef::new(e)).collect())
            .unwrap_or_default()
    }
}

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
///
/// With a status fingerprint ([`StatusOnly::passes_status`]), a status that is neither what was
/// last seen nor what the controller itself last wrote passes too: somebody else wrote it (a
/// hand-made status must be corrected at once, not at the next resync).
#[derive(Debug, Default)]
pub struct StatusOnly {
    /// Per object: (uid, generation, deletion requested, finalizers) as last passed on.
    seen: Mutex<HashMap<String, MetadataSeen>>,
    /// Per object: the fingerprint of the status last seen, and of the one the controller wrote.
    status: Mutex<HashMap<String, (u64, Option<u64>)>>,
}

/// (uid, generation, deletion requested, finalizers): a new object of the same name differs.
type MetadataSeen = (Option<String>, Option<i64>, bool, Vec<String>);

impl StatusOnly {
    /// Whether the change to `meta` is more than its status (it is passed on when so).
    pub fn passes(&self, meta: &kube::core::ObjectMeta) -> bool {
        let Some(name) = &meta.name else {
            return true;
        };
        let key = (
            meta.uid.clone(),
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

    /// [`StatusOnly::passes`], or a status (by `fingerprint`) that someone other than the
    /// controller wrote.
    pub fn passes_status(&self, meta: &kube::core::ObjectMeta, fingerprint: u64) -> bool {
        let by_meta = self.passes(meta);
        let Some(name) = &meta.name else {
            return true;
        };
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        let entry = status.entry(name.clone()).or_insert((fingerprint, None));
        let foreign = entry.0 != fingerprint && entry.1 != Some(fingerprint);
        entry.0 = fingerprint;
        by_meta || foreign
    }

    /// The controller wrote a status with this fingerprint: its watch event is not news.
    pub fn wrote(&self, name: &str, fingerprint: u64) {
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        status
            .entry(name.to_owned())
            .or_insert((fingerprint, None))
            .1 = Some(fingerprint);
    }

    pub fn forget(&self, name: &str) {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
    }
}

/// A fingerprint of what the request controller decides in a request's status: everything but
/// the parts other writers own (`delivery`: the notifier; `directory`: the group controller).
pub fn request_status_fingerprint(status: Option<&crate::api::ActivationRequestStatus>) -> u64 {
    use std::hash::{Hash, Hasher};
    let decided = status.map(|s| crate::api::ActivationRequestStatus {
        delivery: None,
        directory: None,
        ..s.clone()
    });
    let text = serde_json::to_string(&decided).unwrap_or_default();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}

/// The resourceVersion each object had when this process last wrote its status. A pass that
/// still reads that version runs before its own write came back through the watch, and a status
/// write based on it would only fail with 409 Conflict (writes carry the version they read).
/// Only for a moment ([`OwnWrites::WATCH_DELAY`]): a write that changed nothing on the server
/// sends no watch event, and must not make the object look behind for ever.
#[derive(Debug, Default)]
pub struct OwnWrites {
    based_on: Mutex<HashMap<String, (String, tokio::time::Instant)>>,
}

impl OwnWrites {
    /// How long a write may take to come back through the watch (in Tokio's monotonic time, so
    /// that a paused runtime's virtual time moves it too).
    pub const WATCH_DELAY: std::time::Duration = std::time::Duration::from_secs(2);

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, tokio::time::Instant)>> {
        self.based_on.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A status write based on version `read` of `name` succeeded.
    pub fn wrote(&self, name: &str, read: Option<&str>) {
        if let Some(read) = read {
            self.lock().insert(
                name.to_owned(),
                (read.to_owned(), tokio::time::Instant::now()),
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

#[cfg(test)]
mod tests {
    use super::{ExtensionWakes, OwnWrites};
    use crate::api::activation_request::Phase;
    use crate::lenient::Lenient;
    use std::time::Duration;

    fn request(
        name: &str,
        extends: Option<&str>,
        phase: Phase,
    ) -> Lenient<crate::api::ActivationRequest> {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "pim.dev/v1alpha1", "kind": "ActivationRequest",
            "metadata": {"name": name},
            "spec": {"group": "g", "extends": extends},
            "status": {"phase": phase},
        }))
        .unwrap()
    }

    fn names(
        refs: Vec<kube::runtime::reflector::ObjectRef<Lenient<crate::api::ActivationRequest>>>,
    ) -> Vec<String> {
        refs.into_iter().map(|r| r.name).collect()
    }

    #[test]
    fn an_end_wakes_exactly_the_open_extensions() {
        let wakes = ExtensionWakes::default();
        assert!(names(wakes.changed(&request("r1", None, Phase::Active))).is_empty());
        assert!(
            names(wakes.changed(&request("x1", Some("r1"), Phase::PendingApproval))).is_empty()
        );
        assert!(names(wakes.changed(&request("x2", Some("r1"), Phase::Active))).is_empty());
        assert!(names(wakes.changed(&request("y1", Some("r9"), Phase::Active))).is_empty());
        // x1 ends (denied): it no longer needs waking.
        assert!(names(wakes.changed(&request("x1", Some("r1"), Phase::Denied))).is_empty());
        assert_eq!(
            names(wakes.changed(&request("r1", None, Phase::Deactivated))),
            ["x2"]
        );
        // A status write on r1 once more wakes x2 again; it is cheap and changes nothing.
        assert_eq!(
            names(wakes.changed(&request("r1", None, Phase::Deactivated))),
            ["x2"]
        );
        assert!(names(wakes.changed(&request("x2", Some("r1"), Phase::Revoked))).is_empty());
        assert!(names(wakes.changed(&request("r1", None, Phase::Deactivated))).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn an_own_write_looks_behind_only_for_a_moment() {
        let writes = OwnWrites::default();
        writes.wrote("g", Some("41"));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(writes.behind("g", Some("41")));
        assert!(!writes.behind("g", Some("42")));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(!writes.behind("g", Some("41")));
    }
}
