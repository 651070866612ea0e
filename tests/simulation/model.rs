//! What the simulation knows to be true, recorded as it acts (never read back from the
//! operator), and the specification the invariants hold the operator to: when a member of a
//! directory group is explained. It is a bound written from DESIGN §4–§5, not a second
//! implementation of the engine: it asks only whether *some* signed input allowed the access
//! at a given moment.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use pim_operator::api::common::Role;

use super::directory::Target;

pub const USERS: [&str; 4] = ["alice", "bob", "carol", "dave"];
/// Who may approve under `p-approve`; bob may also request (no self-approval).
pub const APPROVERS: [&str; 3] = ["bob", "carol", "erin"];
/// Who tries to approve: approvers, a requester, and someone no policy names.
pub const VOTERS: [&str; 5] = ["bob", "carol", "erin", "alice", "mallory"];
pub const POLICIES: [&str; 2] = ["p-approve", "p-auto"];

/// The PimGroups: name, first directory connection, member policy, owner policy.
pub const GROUPS: [(&str, &str, usize, Option<usize>); 3] = [
    ("g0", "ad", 0, None),
    ("g1", "entra", 1, Some(0)),
    ("g2", "ad", 1, Some(1)),
];

#[derive(Debug, Clone)]
pub struct RequestTruth {
    pub name: String,
    pub uid: String,
    pub user: String,
    pub group: usize,
    pub role: Role,
    pub minutes: i64,
    /// Stamped and signed as the webhook does.
    pub signed: bool,
    pub created: Timestamp,
    pub approvals: Vec<ApprovalTruth>,
    pub deactivated: Option<Timestamp>,
    pub deleted: Option<Timestamp>,
    /// Something it depends on changed after it was made, or the clock was set back (in the
    /// order things happened, which clock readings may not show).
    pub disturbed: bool,
    /// The request it extends (`spec.extends`), by index, for the same user, group and role.
    pub extends: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct ApprovalTruth {
    pub approver: String,
    pub at: Timestamp,
    /// Signed with the operator's key, as the webhook does.
    pub signed: bool,
    pub approve: bool,
    /// When the voter's next apply replaced this entry.
    pub replaced: Option<Timestamp>,
}

#[derive(Debug, Clone)]
pub struct PolicyVersion {
    pub from: Timestamp,
    pub exists: bool,
    pub max: SignedDuration,
    /// 0: no approval needed.
    pub min_approvals: usize,
    pub timeout: SignedDuration,
}

#[derive(Debug, Clone)]
pub struct GroupVersion {
    pub from: Timestamp,
    pub exists: bool,
    /// The directory connection it names.
    pub directory: String,
    pub id: String,
    pub remove_standing: bool,
}

#[derive(Debug, Clone)]
pub struct AssignmentVersion {
    pub from: Timestamp,
    pub exists: bool,
    pub active: bool,
    pub end: Option<Timestamp>,
}

#[derive(Debug, Default)]
pub struct Truth {
    pub requests: Vec<RequestTruth>,
    pub policies: Vec<Vec<PolicyVersion>>,
    pub groups: Vec<Vec<GroupVersion>>,
    pub assignments: BTreeMap<(String, usize, Role), Vec<AssignmentVersion>>,
    /// When a fault was injected or a process died: I1's lag restarts from there.
    pub disruptions: Vec<Timestamp>,
    /// Total of backward clock jumps: added to every lag.
    pub back_jumps: SignedDuration,
    /// Time as it passed (ticks only, no jumps), and the clock's reading then.
    pub elapsed: SignedDuration,
    pub readings: Vec<(SignedDuration, Timestamp)>,
}

/// The version in force at `at`: the last one (in the order they were made) that began by then.
fn version_at<T>(versions: &[T], at: Timestamp, from: impl Fn(&T) -> Timestamp) -> Option<&T> {
    versions.iter().rev().find(|v| from(v) <= at)
}

pub fn policy_of(group: usize, role: Role) -> Option<usize> {
    let (_, _, member, owner) = GROUPS[group];
    match role {
        Role::Member => Some(member),
        Role::Owner => owner,
    }
}

impl Truth {
    pub fn group_at(&self, group: usize, at: Timestamp) -> Option<&GroupVersion> {
        version_at(&self.groups[group], at, |v| v.from).filter(|v| v.exists)
    }

    pub fn policy_at(&self, policy: usize, at: Timestamp) -> Option<&PolicyVersion> {
        version_at(&self.policies[policy], at, |v| v.from).filter(|v| v.exists)
    }

    pub fn assignment_at(
        &self,
        user: &str,
        group: usize,
        role: Role,
        at: Timestamp,
    ) -> Option<&AssignmentVersion> {
        self.assignments
            .get(&(user.to_owned(), group, role))
            .and_then(|v| version_at(v, at, |a| a.from))
            .filter(|a| a.exists && a.end.is_none_or(|e| at < e))
    }

    /// The directory target PimGroup `group` manages for `role` at `at`.
    pub fn target_at(&self, group: usize, role: Role, at: Timestamp) -> Option<Target> {
        policy_of(group, role)?;
        let version = self.group_at(group, at)?;
        Some((version.directory.clone(), version.id.clone(), role))
    }

    /// Whether a PimGroup managed `target` at `at`, and whether it removed standing members.
    pub fn managed_at(&self, target: &Target, at: Timestamp) -> Option<bool> {
        (0..GROUPS.len()).find_map(|g| {
            (self.target_at(g, target.2, at).as_ref() == Some(target))
                .then(|| self.group_at(g, at).is_some_and(|v| v.remove_standing))
        })
    }

    /// When `request`'s approvals sufficed under `policy` (its creation when none are needed).
    pub fn approved_at(
        &self,
        request: &RequestTruth,
        policy: &PolicyVersion,
        at: Timestamp,
    ) -> Option<Timestamp> {
        if policy.min_approvals == 0 {
            return Some(request.created);
        }
        let deadline = request.created + policy.timeout;
        let mut approvers: Vec<(&str, Timestamp)> = Vec::new();
        for a in &request.approvals {
            let counts = a.signed
                && a.approve
                && a.at <= at
                && a.replaced.is_none_or(|r| r > at)
                && a.at <= deadline
                && a.approver != request.user
                && APPROVERS.contains(&a.approver.as_str())
                && !approvers.iter().any(|(n, _)| *n == a.approver);
            if counts {
                approvers.push((&a.approver, a.at));
            }
        }
        approvers.sort_by_key(|(_, t)| *t);
        approvers.get(policy.min_approvals - 1).map(|(_, t)| *t)
    }

    /// Whether `request` explained its principal's membership of `target` at `at`, its window
    /// judged at `window_at` (the moment of an add, for I2). `approvals: false` leaves the
    /// approvals out, to tell an I3 breach from an I2 one.
    pub fn request_explains(
        &self,
        request: &RequestTruth,
        target: &Target,
        at: Timestamp,
        window_at: Timestamp,
        approvals: bool,
    ) -> bool {
        self.request_live(request, at)
            && self.request_targets(request, target, at)
            && self.request_eligible(request, at)
            && self.request_window(request, at, window_at, approvals)
    }

    /// Signed, made (a clock set back may see it before the reading it was made at), neither
    /// deactivated nor deleted at `at`; for an extension, so is every request of its chain
    /// (an extension ends with what it extends).
    fn request_live(&self, request: &RequestTruth, at: Timestamp) -> bool {
        request.signed
            && request.created <= at + self.back_jumps
            && request.deactivated.is_none_or(|d| d > at)
            && request.deleted.is_none_or(|d| d > at)
            && request.extends.is_none_or(|b| {
                self.requests
                    .get(b)
                    .is_some_and(|b| self.request_live(b, at))
            })
    }

    /// The window `request` may hold under `policy` as approvals stand at `at`, and where its
    /// chain began: `[approval, approval + duration)`; an extension's from its approval (never
    /// before the start of what it extends, and only while that still ran) to its duration past
    /// that end, at most `max` after the chain began (the simulation's policies allow no
    /// renewal). DESIGN §4 and docs/resources.md, "Extending a running activation".
    fn window(
        &self,
        request: &RequestTruth,
        policy: &PolicyVersion,
        at: Timestamp,
    ) -> Option<(Timestamp, Timestamp, Timestamp)> {
        let approved = self.approved_at(request, policy, at)?;
        let minutes = SignedDuration::from_mins(request.minutes);
        let Some(base) = request.extends else {
            return Some((approved, approved + minutes.min(policy.max), approved));
        };
        let (start, end, origin) = self.window(self.requests.get(base)?, policy, at)?;
        if approved >= end + self.back_jumps {
            return None;
        }
        let ext_start = approved.max(start);
        Some((ext_start, (end + minutes).min(origin + policy.max), origin))
    }

    fn request_targets(&self, request: &RequestTruth, target: &Target, at: Timestamp) -> bool {
        request.role == target.2
            && self.target_at(request.group, request.role, at).as_ref() == Some(target)
    }

    /// Only an Eligible-type assignment makes a principal eligible to activate (DESIGN §3).
    fn request_eligible(&self, request: &RequestTruth, at: Timestamp) -> bool {
        self.assignment_at(&request.user, request.group, request.role, at)
            .is_some_and(|a| !a.active)
    }

    /// Under the policy in force at `at`: approved (unless `approvals` is false), and its window
    /// covers `window_at`.
    fn request_window(
        &self,
        request: &RequestTruth,
        at: Timestamp,
        window_at: Timestamp,
        approvals: bool,
    ) -> bool {
        let Some(policy) =
            policy_of(request.group, request.role).and_then(|p| self.policy_at(p, at))
        else {
            return false;
        };
        if !approvals {
            return true;
        }
        let Some((start, end, _)) = self.window(request, policy, at) else {
            return false;
        };
        start <= window_at + self.back_jumps && window_at < end
    }

    /// As `explains`, for an operator whose caches may each lag by up to `to - from`: every
    /// condition of some grant held at some moment of `[from, to]`, not necessarily the same
    /// one. The window itself is judged at `window_at` when given (an add), else at each moment.
    pub fn explained_lagged(
        &self,
        member: &str,
        target: &Target,
        from: Timestamp,
        to: Timestamp,
        window_at: Option<Timestamp>,
        approvals: bool,
    ) -> bool {
        let mut moments = self.moments(member, from, to);
        if self.back_jumps.is_positive() {
            let later: Vec<Timestamp> = moments.iter().map(|t| *t + self.back_jumps).collect();
            moments.extend(later);
        }
        let any = |f: &dyn Fn(Timestamp) -> bool| moments.iter().any(|t| f(*t));
        let by_assignment = (0..GROUPS.len()).any(|g| {
            any(&|t| self.target_at(g, target.2, t).as_ref() == Some(target))
                && any(&|t| {
                    self.assignment_at(member, g, target.2, t)
                        .is_some_and(|a| a.active)
                })
        });
        by_assignment
            || self.requests.iter().filter(|r| r.user == member).any(|r| {
                any(&|t| self.request_live(r, t))
                    && any(&|t| self.request_targets(r, target, t))
                    && any(&|t| self.request_eligible(r, t))
                    && any(&|t| self.request_window(r, t, window_at.unwrap_or(t), approvals))
            })
    }

    /// Whether an Active assignment held `member` in `target` at `at`.
    pub fn assignment_explains(&self, member: &str, target: &Target, at: Timestamp) -> bool {
        (0..GROUPS.len()).any(|g| {
            self.target_at(g, target.2, at).as_ref() == Some(target)
                && self
                    .assignment_at(member, g, target.2, at)
                    .is_some_and(|a| a.active)
        })
    }

    /// Whether some grant explained `member` in `target` at `at` (window judged at `window_at`).
    /// After the clock was set back, a change made at a later reading may already be in force:
    /// both readings are tried.
    pub fn explains(
        &self,
        member: &str,
        target: &Target,
        at: Timestamp,
        window_at: Timestamp,
        approvals: bool,
    ) -> bool {
        self.explains_at(member, target, at, window_at, approvals)
            || (self.back_jumps.is_positive()
                && self.explains_at(member, target, at + self.back_jumps, window_at, approvals))
    }

    fn explains_at(
        &self,
        member: &str,
        target: &Target,
        at: Timestamp,
        window_at: Timestamp,
        approvals: bool,
    ) -> bool {
        self.assignment_explains(member, target, at)
            || self
                .requests
                .iter()
                .filter(|r| r.user == member)
                .any(|r| self.request_explains(r, target, at, window_at, approvals))
    }

    /// Moments in `[from, to]` at which whether something is explained can change, and `to`:
    /// checking at these (and just before each) covers the whole span.
    pub fn moments(&self, member: &str, from: Timestamp, to: Timestamp) -> Vec<Timestamp> {
        let mut out = vec![to, from];
        let reach = to + self.back_jumps;
        let mut push = |t: Timestamp| {
            if t >= from && t <= reach {
                out.push(t);
                out.push(t - SignedDuration::from_nanos(1));
            }
        };
        for versions in &self.policies {
            versions.iter().for_each(|v| push(v.from));
        }
        for versions in &self.groups {
            versions.iter().for_each(|v| push(v.from));
        }
        for versions in self.assignments.values() {
            for v in versions {
                push(v.from);
                if let Some(e) = v.end {
                    push(e);
                }
            }
        }
        for r in self.requests.iter().filter(|r| r.user == member) {
            push(r.created);
            r.deactivated
                .into_iter()
                .chain(r.deleted)
                .for_each(&mut push);
            for a in &r.approvals {
                push(a.at);
                a.replaced.into_iter().for_each(&mut push);
            }
            for versions in &self.policies {
                for v in versions {
                    if let Some(q) = self.approved_at(r, v, to) {
                        push(q + SignedDuration::from_mins(r.minutes).min(v.max));
                    }
                    if let Some((start, end, _)) = self.window(r, v, to) {
                        push(start);
                        push(end);
                    }
                    push(r.created + v.timeout);
                }
            }
        }
        if self.back_jumps.is_positive() {
            let shifted: Vec<Timestamp> = out.iter().map(|t| *t - self.back_jumps).collect();
            out.extend(shifted);
        }
        out.retain(|t| *t >= from && *t <= to);
        out
    }

    /// Whether `request` must hold its access now: signed, approved, within its window with
    /// room to spare, and nothing it depends on changed since it was made (no edit of its
    /// policy, PimGroup or eligibility, no denial, no deactivation). I5's liveness half: a
    /// lower bound, where `explains` is an upper one.
    pub fn must_explain(&self, request: &RequestTruth, now: Timestamp) -> bool {
        let created = request.created;
        let Some(p) = policy_of(request.group, request.role) else {
            return false;
        };
        let changed_since = |from: Timestamp| from > created;
        if self.policies[p].iter().any(|v| changed_since(v.from))
            || self.groups[request.group]
                .iter()
                .any(|v| changed_since(v.from))
            || self
                .assignments
                .get(&(request.user.clone(), request.group, request.role))
                .is_none_or(|v| v.iter().any(|a| changed_since(a.from)))
            || request
                .approvals
                .iter()
                .any(|a| !a.approve || a.replaced.is_some())
            || request.deactivated.is_some()
            || request.deleted.is_some()
            || request.disturbed
            || !request.signed
            // Extensions are held to the upper bound only.
            || request.extends.is_some()
        {
            return false;
        }
        let (Some(policy), Some(target)) = (
            self.policy_at(p, created),
            self.target_at(request.group, request.role, created),
        ) else {
            return false;
        };
        if SignedDuration::from_mins(request.minutes) > policy.max
            || self
                .assignment_at(
                    &request.user,
                    request.group,
                    request.role,
                    now + SignedDuration::from_mins(5),
                )
                .is_none_or(|a| a.active)
        {
            return false;
        }
        let Some(start) = self.approved_at(request, policy, now) else {
            return false;
        };
        let end = start + SignedDuration::from_mins(request.minutes);
        start + SignedDuration::from_mins(2) <= now
            && now + SignedDuration::from_mins(5) < end
            && self.request_explains(request, &target, now, now, true)
    }

    /// Whether a fault hit since `from` (a reading after `to` too: the clock may have gone back).
    /// Records the clock's reading now (after a tick or a jump).
    pub fn read_clock(&mut self, now: Timestamp) {
        self.readings.push((self.elapsed, now));
    }

    /// The earliest clock reading within `span` of time as it passed: how far back a cache
    /// lagging by `span` can be, whatever the clock jumped meanwhile.
    pub fn earliest_reading_within(&self, span: SignedDuration, now: Timestamp) -> Timestamp {
        self.readings
            .iter()
            .rev()
            .take_while(|(at, _)| *at >= self.elapsed - span)
            .map(|(_, reading)| *reading)
            .fold(now, Timestamp::min)
    }

    /// Marks the requests `affected` picks as disturbed (see `RequestTruth::disturbed`).
    pub fn disturb(&mut self, affected: impl Fn(&RequestTruth) -> bool) {
        for r in self.requests.iter_mut().filter(|r| affected(r)) {
            r.disturbed = true;
        }
    }

    pub fn disrupted_since(&self, from: Timestamp) -> bool {
        self.disruptions.iter().any(|d| *d >= from)
    }
}
