//! A snapshot of our four kinds, indexed by name, with the lookups every decision needs.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;

use super::attestation::Attestor;
use super::request::proven_request_grant;
use crate::api::access_review::DeniedAssignment;
use crate::api::common::{Principal, Role};
use crate::api::{AccessPolicy, AccessReview, ActivationRequest, EligibleAssignment, PimGroup};
use crate::core::eligibility::{
    AssignmentEntry, AssignmentWindow, Eligibility, ReviewDenial, assignment_window,
    eligibilities_for,
};
use crate::core::identity::{CaseInsensitive, Principals, Unmapped, user_key};
use crate::core::ledger::ProvenGrant;
use crate::core::lifecycle::Target;
use crate::core::membership::{Grant, Member, assignment_grant, request_access_end};
use crate::core::policy::Policy;
use crate::core::violation::{Violation, summarize};

/// All objects of the four kinds, as the controller's caches or a folder of manifests hold them.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub policies: BTreeMap<String, Arc<AccessPolicy>>,
    pub groups: BTreeMap<String, Arc<PimGroup>>,
    pub assignments: BTreeMap<String, Arc<EligibleAssignment>>,
    pub requests: BTreeMap<String, Arc<ActivationRequest>>,
    pub reviews: BTreeMap<String, Arc<AccessReview>>,
    /// What each review's status says it denied, by assignment name: kept on insert, read
    /// for every assignment window.
    review_denials: BTreeMap<String, Vec<(String, DeniedAssignment)>>,
    /// The names of the requests that name each request in `spec.extends`, kept on insert:
    /// an expiry asks for its extensions without a scan.
    extensions: BTreeMap<String, std::collections::BTreeSet<String>>,
    /// The names of the assignments and requests of each (group, role), kept on insert and
    /// `remove_*`: a lookup of one group must not scan every group's (a folder of 10k manifests
    /// made `validate` and `simulate` quadratic). A superset after removals from the maps
    /// themselves; readers check each object's group and role again.
    assignments_by_target: BTreeMap<(String, Role), std::collections::BTreeSet<String>>,
    /// The same assignments by the principal they name: a request's eligibility needs only
    /// its principal's and the group-granted ones, not the windows of the whole group's
    /// (`simulate` of 10k requests spent two thirds of its time there). Also a superset.
    assignments_by_principal: BTreeMap<(String, Role), PrincipalIndex>,
    requests_by_target: BTreeMap<(String, Role), std::collections::BTreeSet<String>>,
    /// The names of each requester's requests, by the [`user_key`] of the stamped username: the
    /// webhook counts a caller's open requests on every create, among 10k.
    requests_by_requester: BTreeMap<String, std::collections::BTreeSet<String>>,
    /// Each policy parsed once, on insert: every lookup of a (group, role) needs it.
    parsed_policies: BTreeMap<String, Result<Policy, String>>,
    /// How the policies compare requester and approver names (the operator's
    /// `usernameMapping.caseInsensitive`); see [`Catalog::set_identities`].
    identities: CaseInsensitive,
    /// Each directory's username mapping; see [`Catalog::set_principals`].
    principals: Arc<Principals>,
}

/// The assignment names of one (group, role), by the principal they name.
#[derive(Debug, Clone, Default)]
struct PrincipalIndex {
    users: BTreeMap<String, std::collections::BTreeSet<String>>,
    /// Granted to directory groups: whether they cover a user depends on `is_member_of`.
    groups: std::collections::BTreeSet<String>,
}

/// The policy behind a (group, role), or why there is none. Owns what [`Target`] borrows.
#[derive(Debug, Clone, PartialEq)]
pub enum ResolvedTarget {
    Found {
        policy_name: String,
        /// Boxed: a policy is much larger than the other variants.
        policy: Box<Policy>,
    },
    GroupNotFound,
    RoleNotManaged,
    PolicyNotFound {
        policy_name: String,
    },
    PolicyInvalid {
        policy_name: String,
        problem: String,
    },
}

impl ResolvedTarget {
    pub fn as_target(&self) -> Target<'_> {
        match self {
            ResolvedTarget::Found { policy, .. } => Target::Found(policy),
            ResolvedTarget::GroupNotFound => Target::GroupNotFound,
            ResolvedTarget::RoleNotManaged => Target::RoleNotManaged,
            ResolvedTarget::PolicyNotFound { .. } => Target::PolicyNotFound,
            ResolvedTarget::PolicyInvalid { problem, .. } => Target::PolicyInvalid(problem),
        }
    }

    pub fn policy(&self) -> Option<&Policy> {
        match self {
            ResolvedTarget::Found { policy, .. } => Some(policy.as_ref()),
            _ => None,
        }
    }
}

fn name_of<K: kube::Resource>(object: &K) -> String {
    object.meta().name.clone().unwrap_or_default()
}

/// When an object was created; `fallback` for manifests that were never applied.
pub fn created_at<K: kube::Resource>(object: &K, fallback: Timestamp) -> Timestamp {
    object
        .meta()
        .creation_timestamp
        .as_ref()
        .map_or(fallback, |t| t.0)
}

impl Catalog {
    pub fn insert_policy(&mut self, object: impl Into<Arc<AccessPolicy>>) {
        let object = object.into();
        let name = name_of(object.as_ref());
        let parsed = Policy::from_spec(&object.spec)
            .map(|p| p.with_identities(self.identities))
            .map_err(|v| summarize(&v));
        self.parsed_policies.insert(name.clone(), parsed);
        self.policies.insert(name, object);
    }

    /// Policies found here compare names under `rule` (issue 14 finding 8).
    pub fn set_identities(&mut self, rule: CaseInsensitive) {
        self.identities = rule;
        for policy in self.parsed_policies.values_mut().flatten() {
            policy.identities = rule;
        }
    }

    /// Usernames become principals, and names compare, as `principals` says.
    pub fn set_principals(&mut self, principals: Arc<Principals>) {
        self.set_identities(principals.names);
        self.principals = principals;
    }

    pub fn principals(&self) -> &Principals {
        &self.principals
    }

    /// The directory of the PimGroup `group`, if there is such a group.
    pub fn directory_of(&self, group: &str) -> Option<&str> {
        self.groups.get(group).map(|g| g.spec.directory.as_str())
    }

    /// The principal the Kubernetes user `username` is in the directory of `group`; nobody when
    /// there is no such group.
    pub fn principal_in_group(&self, group: &str, username: &str) -> Result<String, Unmapped> {
        let directory = self
            .directory_of(group)
            .ok_or_else(|| Unmapped::NoSuchGroup {
                group: group.to_owned(),
            })?;
        self.principals.principal_in(directory, username)
    }

    pub fn insert_group(&mut self, object: impl Into<Arc<PimGroup>>) {
        let object = object.into();
        self.groups.insert(name_of(object.as_ref()), object);
    }

    pub fn remove_group(&mut self, name: &str) {
        self.groups.remove(name);
    }

    /// Adds an access review, and the denials its status records.
    pub fn insert_review(&mut self, object: impl Into<Arc<AccessReview>>) {
        let object = object.into();
        let name = name_of(object.as_ref());
        self.remove_review(&name);
        for denied in object.status.iter().flat_map(|s| &s.denied) {
            self.review_denials
                .entry(denied.assignment.clone())
                .or_default()
                .push((name.clone(), denied.clone()));
        }
        self.reviews.insert(name, object);
    }

    pub fn remove_review(&mut self, name: &str) {
        if self.reviews.remove(name).is_none() {
            return;
        }
        self.review_denials.retain(|_, denials| {
            denials.retain(|(review, _)| review != name);
            !denials.is_empty()
        });
    }

    /// The earliest review denial of this assignment, if any. A denial of an assignment since
    /// re-created under the same name (another uid) is not one of it.
    pub fn review_denial(&self, assignment: &EligibleAssignment) -> Option<ReviewDenial> {
        let name = assignment.metadata.name.as_deref()?;
        let uid = assignment.metadata.uid.as_deref();
        self.review_denials
            .get(name)?
            .iter()
            .filter(|(_, d)| d.uid.is_none() || uid.is_none() || d.uid.as_deref() == uid)
            .map(|(review, d)| ReviewDenial {
                review: review.clone(),
                at: d.at.0,
                by: d.by.clone(),
            })
            .min_by_key(|d| d.at)
    }

    pub fn insert_assignment(&mut self, object: impl Into<Arc<EligibleAssignment>>) {
        let object = object.into();
        let name = name_of(object.as_ref());
        let key = (object.spec.group.clone(), object.spec.role);
        // A long-lived catalog (the webhook's) sees an assignment change: its old entries go.
        if let Some(old) = self.assignments.get(&name).cloned() {
            self.unindex_principal(&old, &name);
            if old.spec.group != key.0 || old.spec.role != key.1 {
                let old_key = (old.spec.group.clone(), old.spec.role);
                unindex(&mut self.assignments_by_target, &old_key, &name);
            }
        }
        let by_principal = self
            .assignments_by_principal
            .entry(key.clone())
            .or_default();
        match object.spec.principal.resolve() {
            Some(Principal::User(user)) => {
                by_principal
                    .users
                    .entry(user.to_owned())
                    .or_default()
                    .insert(name.clone());
            }
            Some(Principal::Group(_)) => {
                by_principal.groups.insert(name.clone());
            }
            // Malformed: it names nobody, so it makes nobody eligible.
            None => {}
        }
        self.assignments_by_target
            .entry(key)
            .or_default()
            .insert(name.clone());
        self.assignments.insert(name, object);
    }

    /// Removes an assignment and its index entry.
    pub fn remove_assignment(&mut self, name: &str) -> Option<Arc<EligibleAssignment>> {
        let removed = self.assignments.remove(name)?;
        let key = (removed.spec.group.clone(), removed.spec.role);
        unindex(&mut self.assignments_by_target, &key, name);
        self.unindex_principal(&removed, name);
        Some(removed)
    }

    /// Drops `name`'s entry in the principal index, as `assignment` spelt it.
    fn unindex_principal(&mut self, assignment: &EligibleAssignment, name: &str) {
        let key = (assignment.spec.group.clone(), assignment.spec.role);
        let Some(index) = self.assignments_by_principal.get_mut(&key) else {
            return;
        };
        match assignment.spec.principal.resolve() {
            Some(Principal::User(user)) => unindex(&mut index.users, &user.to_owned(), name),
            Some(Principal::Group(_)) => {
                index.groups.remove(name);
            }
            None => {}
        }
        if index.users.is_empty() && index.groups.is_empty() {
            self.assignments_by_principal.remove(&key);
        }
    }

    pub fn insert_request(&mut self, object: impl Into<Arc<ActivationRequest>>) {
        let object = object.into();
        let name = name_of(object.as_ref());
        // The spec is immutable in a cluster, but a replaced request may differ in manifests:
        // its old entries go.
        if let Some(old) = self.requests.get(&name) {
            if old.spec.group != object.spec.group || old.spec.role() != object.spec.role() {
                let old_key = (old.spec.group.clone(), old.spec.role());
                unindex(&mut self.requests_by_target, &old_key, &name);
            }
            if old.spec.extends != object.spec.extends
                && let Some(extends) = old.spec.extends.clone()
            {
                unindex(&mut self.extensions, &extends, &name);
            }
            if let Some(key) = requester_key(old)
                && requester_key(&object).as_ref() != Some(&key)
            {
                unindex(&mut self.requests_by_requester, &key, &name);
            }
        }
        if let Some(key) = requester_key(&object) {
            self.requests_by_requester
                .entry(key)
                .or_default()
                .insert(name.clone());
        }
        if let Some(extends) = &object.spec.extends {
            self.extensions
                .entry(extends.clone())
                .or_default()
                .insert(name.clone());
        }
        let key = (object.spec.group.clone(), object.spec.role());
        self.requests_by_target
            .entry(key)
            .or_default()
            .insert(name.clone());
        self.requests.insert(name, object);
    }

    /// Removes a request and its index entries.
    pub fn remove_request(&mut self, name: &str) -> Option<Arc<ActivationRequest>> {
        let removed = self.requests.remove(name)?;
        let key = (removed.spec.group.clone(), removed.spec.role());
        unindex(&mut self.requests_by_target, &key, name);
        if let Some(extends) = &removed.spec.extends {
            unindex(&mut self.extensions, extends, name);
        }
        if let Some(key) = requester_key(&removed) {
            unindex(&mut self.requests_by_requester, &key, name);
        }
        Some(removed)
    }

    /// The requests whose stamped requester may be `username` (the same [`user_key`]), in name
    /// order; [`Principals::same_user`] decides which are.
    pub fn requests_by(&self, username: &str) -> impl Iterator<Item = &Arc<ActivationRequest>> {
        let key = user_key(username);
        self.requests_by_requester
            .get(&key)
            .into_iter()
            .flatten()
            .filter_map(|name| self.requests.get(name))
            .filter(move |r| requester_key(r).as_ref() == Some(&key))
    }

    /// The assignments of `group`/`role`, in name order.
    pub fn assignments_of(
        &self,
        group: &str,
        role: Role,
    ) -> impl Iterator<Item = (&String, &Arc<EligibleAssignment>)> {
        let key = (group.to_owned(), role);
        self.assignments_by_target
            .get(&key)
            .into_iter()
            .flatten()
            .filter_map(|name| self.assignments.get_key_value(name))
            .filter(move |(_, a)| a.spec.group == group && a.spec.role == role)
    }

    /// The requests of `group`/`role`, in name order.
    pub fn requests_of(
        &self,
        group: &str,
        role: Role,
    ) -> impl Iterator<Item = (&String, &Arc<ActivationRequest>)> {
        let key = (group.to_owned(), role);
        self.requests_by_target
            .get(&key)
            .into_iter()
            .flatten()
            .filter_map(|name| self.requests.get_key_value(name))
            .filter(move |(_, r)| r.spec.group == group && r.spec.role() == role)
    }

    /// The requests here that extend `name` (`spec.extends`).
    pub fn extensions_of(&self, name: &str) -> Vec<&Arc<ActivationRequest>> {
        self.extensions
            .get(name)
            .into_iter()
            .flatten()
            .filter_map(|n| self.requests.get(n))
            .filter(|r| r.spec.extends.as_deref() == Some(name))
            .collect()
    }

    pub fn remove_policy(&mut self, name: &str) {
        self.policies.remove(name);
        self.parsed_policies.remove(name);
    }

    /// The name of the AccessPolicy governing `role` of `group`.
    pub fn policy_name(&self, group: &str, role: Role) -> Option<&str> {
        let roles = &self.groups.get(group)?.spec.roles;
        match role {
            Role::Member => Some(roles.member.policy.as_str()),
            Role::Owner => roles.owner.as_ref().map(|o| o.policy.as_str()),
        }
    }

    pub fn target(&self, group: &str, role: Role) -> ResolvedTarget {
        // A PimGroup being deleted grants nothing more: its pass is revoking everything, and a
        // request must not go on reading Active once its member is gone (found by the
        // simulation: a deletion held up by Entra's last-owner rule left it so for good).
        let live = self
            .groups
            .get(group)
            .is_some_and(|g| g.metadata.deletion_timestamp.is_none());
        if !live {
            return ResolvedTarget::GroupNotFound;
        }
        let Some(policy_name) = self.policy_name(group, role) else {
            return ResolvedTarget::RoleNotManaged;
        };
        let policy_name = policy_name.to_owned();
        let Some(policy) = self.policies.get(&policy_name) else {
            return ResolvedTarget::PolicyNotFound { policy_name };
        };
        // Parsed on insert: parsing again for every assignment window was most of `simulate`.
        let parsed = match self.parsed_policies.get(&policy_name) {
            Some(parsed) => parsed.clone(),
            None => Policy::from_spec(&policy.spec)
                .map(|p| p.with_identities(self.identities))
                .map_err(|v| summarize(&v)),
        };
        match parsed {
            Ok(policy) => ResolvedTarget::Found {
                policy_name,
                policy: Box::new(policy),
            },
            Err(problem) => ResolvedTarget::PolicyInvalid {
                policy_name,
                problem,
            },
        }
    }

    /// An assignment's window under the caps of its group's policy for its role, ending where
    /// an access review denied it.
    pub fn assignment_window(
        &self,
        assignment: &EligibleAssignment,
        now: Timestamp,
    ) -> Result<AssignmentWindow, Vec<Violation>> {
        let mut window = self.scheduled_window(assignment, now)?;
        if let Some(denial) = self.review_denial(assignment) {
            let end = window.end.map_or(denial.at, |end| end.min(denial.at));
            window.end = Some(end.max(window.start));
            window.denied = Some(denial);
        }
        Ok(window)
    }

    fn scheduled_window(
        &self,
        assignment: &EligibleAssignment,
        now: Timestamp,
    ) -> Result<AssignmentWindow, Vec<Violation>> {
        let spec = &assignment.spec;
        // The common case borrows the parsed policy: `target` clones it, once per assignment
        // of the group for every request decided, which `simulate` did millions of times.
        let live = self
            .groups
            .get(&spec.group)
            .is_some_and(|g| g.metadata.deletion_timestamp.is_none());
        if live
            && let Some(policy_name) = self.policy_name(&spec.group, spec.role)
            && self.policies.contains_key(policy_name)
            && let Some(Ok(policy)) = self.parsed_policies.get(policy_name)
        {
            return assignment_window(spec, created_at(assignment, now), &policy.assignments);
        }
        let target = self.target(&spec.group, spec.role);
        let Some(policy) = target.policy() else {
            return Err(vec![target_violation(&target, &spec.group, spec.role)]);
        };
        assignment_window(spec, created_at(assignment, now), &policy.assignments)
    }

    /// Valid assignments of `group`/`role` with their windows, in name order.
    pub fn assignment_windows(
        &self,
        group: &str,
        role: Role,
        now: Timestamp,
    ) -> Vec<(&str, &EligibleAssignment, AssignmentWindow)> {
        self.assignments_of(group, role)
            .filter_map(|(name, a)| {
                Some((
                    name.as_str(),
                    a.as_ref(),
                    self.assignment_window(a, now).ok()?,
                ))
            })
            .collect()
    }

    /// The ways `principal` is eligible for `group`/`role`; `is_member_of` answers group lookups.
    pub fn eligibilities(
        &self,
        principal: &str,
        group: &str,
        role: Role,
        now: Timestamp,
        is_member_of: impl Fn(&str) -> bool,
    ) -> Vec<Eligibility> {
        let key = (group.to_owned(), role);
        let mut names: Vec<&String> = match self.assignments_by_principal.get(&key) {
            Some(index) => index
                .users
                .get(principal)
                .into_iter()
                .flatten()
                .chain(&index.groups)
                .collect(),
            None => Vec::new(),
        };
        // In name order, as a scan of the group's assignments gives them.
        names.sort_unstable();
        names.dedup();
        let windows: Vec<_> = names
            .into_iter()
            .filter_map(|name| self.assignments.get_key_value(name))
            .filter(|(_, a)| a.spec.group == group && a.spec.role == role)
            .filter_map(|(name, a)| Some((name.as_str(), a, self.assignment_window(a, now).ok()?)))
            .collect();
        let entries = windows.iter().map(|(name, a, window)| AssignmentEntry {
            name,
            spec: &a.spec,
            window,
        });
        eligibilities_for(principal, group, role, entries, is_member_of)
    }

    /// The latest time at or before `now` when a grant of `member` in `group`/`role` ended,
    /// whether its request is still live or already finished. Revocation lag is measured from it.
    pub fn access_ended(
        &self,
        group: &str,
        role: Role,
        member: &Member,
        now: Timestamp,
    ) -> Option<Timestamp> {
        let from_requests = self
            .requests_of(group, role)
            .filter_map(|(_, r)| request_access_end(&r.spec, r.status.as_ref()?))
            .filter(|(m, _)| m == member)
            .map(|(_, end)| end);
        let from_assignments = self
            .assignment_windows(group, role, now)
            .into_iter()
            .filter_map(|(name, a, window)| assignment_grant(name, &a.spec, &window))
            .filter(|g| &g.member == member)
            .filter_map(|g| g.end);
        from_requests
            .chain(from_assignments)
            .filter(|end| *end <= now)
            .max()
    }

    /// Every grant of `group`/`role` that signed inputs prove: requests decided again from their
    /// signatures (never from their stored status), and Active-type assignments.
    pub fn grants(&self, group: &str, role: Role, now: Timestamp, proof: &Proof<'_>) -> Vec<Grant> {
        self.proven_grants(group, role, now, proof)
            .into_iter()
            .map(|p| p.grant)
            .collect()
    }

    /// [`Catalog::grants`], each with its source's uid (the name, for manifests never applied).
    pub fn proven_grants(
        &self,
        group: &str,
        role: Role,
        now: Timestamp,
        proof: &Proof<'_>,
    ) -> Vec<ProvenGrant> {
        let uid_of = |meta: &kube::core::ObjectMeta, name: &str| {
            meta.uid.clone().unwrap_or_else(|| name.to_owned())
        };
        let from_requests = self
            .requests_of(group, role)
            // A finished request never grants again (the decision keeps a terminal phase), and
            // retention keeps them for weeks: not worth deciding again on every pass.
            .filter(|(_, r)| {
                !r.status
                    .as_ref()
                    .and_then(|s| s.phase)
                    .is_some_and(crate::api::Phase::is_terminal)
            })
            .filter_map(|(name, r)| {
                let is_member_of = |g: &str| (proof.is_member_of)(r, g);
                let grant = proven_request_grant(self, r, proof.attestor, &is_member_of, now)?;
                Some(ProvenGrant {
                    grant,
                    uid: uid_of(&r.metadata, name),
                })
            });
        let from_assignments = self
            .assignment_windows(group, role, now)
            .into_iter()
            .filter_map(|(name, a, window)| {
                Some(ProvenGrant {
                    grant: assignment_grant(name, &a.spec, &window)?,
                    uid: uid_of(&a.metadata, name),
                })
            });
        from_requests.chain(from_assignments).collect()
    }
}

fn requester_key(request: &ActivationRequest) -> Option<String> {
    request
        .spec
        .requester
        .as_ref()
        .map(|r| user_key(&r.username))
}

/// Takes `name` out of `index`'s set under `key`, and the set once empty.
fn unindex<K: Ord>(
    index: &mut BTreeMap<K, std::collections::BTreeSet<String>>,
    key: &K,
    name: &str,
) {
    if let Some(names) = index.get_mut(key) {
        names.remove(name);
        if names.is_empty() {
            index.remove(key);
        }
    }
}

/// What proving a request's grant needs beyond the catalog: the signature checks, and whether
/// its principal is in a directory group (for eligibility granted to a group).
#[derive(Clone, Copy)]
pub struct Proof<'a> {
    pub attestor: &'a dyn Attestor,
    pub is_member_of: &'a (dyn Fn(&ActivationRequest, &str) -> bool + Sync),
}

impl<'a> Proof<'a> {
    /// Group memberships from the requester's signed stamp only.
    pub fn stamped(attestor: &'a dyn Attestor) -> Proof<'a> {
        Proof {
            attestor,
            is_member_of: &stamped_groups,
        }
    }
}

/// Whether the group is among those the API server reported for the requester at admission.
pub fn stamped_groups(request: &ActivationRequest, group: &str) -> bool {
    request
        .spec
        .requester
        .as_ref()
        .is_some_and(|r| r.groups.iter().any(|g| g == group))
}

/// Why a (group, role) has no usable policy, as a violation on an object referring to it.
pub fn target_violation(target: &ResolvedTarget, group: &str, role: Role) -> Violation {
    use crate::api::conditions::reasons;
    match target {
        ResolvedTarget::Found { .. } => Violation::new("spec.group", reasons::VALID, "ok", ""),
        ResolvedTarget::GroupNotFound => Violation::new(
            "spec.group",
            reasons::GROUP_NOT_FOUND,
            format!("PimGroup {group:?} does not exist"),
            format!("create PimGroup {group:?}, or set spec.group to an existing PimGroup"),
        ),
        ResolvedTarget::RoleNotManaged => Violation::new(
            "spec.role",
            reasons::ROLE_NOT_MANAGED,
            format!("PimGroup {group:?} has no policy for the {role} role"),
            format!(
                "set spec.role to member, or add spec.roles.{role}.policy to PimGroup {group:?}"
            ),
        ),
        ResolvedTarget::PolicyNotFound { policy_name } => Violation::new(
            "spec.group",
            reasons::POLICY_NOT_FOUND,
            format!("AccessPolicy {policy_name:?} of PimGroup {group:?} does not exist"),
            format!(
                "create AccessPolicy {policy_name:?}, or name an existing AccessPolicy in PimGroup {group:?}'s spec.roles"
            ),
        ),
        ResolvedTarget::PolicyInvalid {
            policy_name,
            problem,
        } => Violation::new(
            "spec.group",
            reasons::INVALID_POLICY,
            format!("AccessPolicy {policy_name:?} of PimGroup {group:?} is invalid: {problem}"),
            format!(
                "correct AccessPolicy {policy_name:?} first, field by field as its Ready condition lists them"
            ),
        ),
    }
}

#[cfg(test)]
mod index_tests {
    use super::*;
    use crate::api::PrincipalRef;
    use crate::api::activation_request::ActivationRequestSpec;
    use crate::api::eligible_assignment::EligibleAssignmentSpec;

    fn assignment(name: &str, group: &str) -> EligibleAssignment {
        let spec = EligibleAssignmentSpec {
            group: group.into(),
            principal: PrincipalRef::user("alice@contoso.com"),
            ..Default::default()
        };
        EligibleAssignment::new(name, spec)
    }

    fn request(name: &str, group: &str, extends: Option<&str>) -> ActivationRequest {
        let spec = ActivationRequestSpec {
            group: group.into(),
            extends: extends.map(str::to_owned),
            ..Default::default()
        };
        ActivationRequest::new(name, spec)
    }

    /// The webhook keeps one catalog for the life of the process: what leaves it leaves the
    /// indexes too, or they would grow with every request ever made.
    #[test]
    fn removed_and_moved_objects_leave_no_index_entries() {
        let mut c = Catalog::default();
        c.insert_assignment(assignment("a1", "g1"));
        c.insert_assignment(assignment("a1", "g2"));
        let keys: Vec<_> = c.assignments_by_target.keys().cloned().collect();
        assert_eq!(keys, [("g2".to_owned(), Role::Member)]);
        assert_eq!(c.assignments_of("g2", Role::Member).count(), 1);
        assert!(c.remove_assignment("a1").is_some());
        assert!(c.assignments_by_target.is_empty());
        assert!(c.remove_assignment("a1").is_none());

        c.insert_request(request("r0", "g1", None));
        c.insert_request(request("r1", "g1", Some("r0")));
        assert_eq!(c.extensions_of("r0").len(), 1);
        c.insert_request(request("r1", "g2", None));
        assert!(c.extensions.is_empty());
        assert_eq!(c.requests_of("g1", Role::Member).count(), 1);
        assert_eq!(c.requests_of("g2", Role::Member).count(), 1);
        c.remove_request("r1");
        c.remove_request("r0");
        assert!(c.requests.is_empty());
        assert!(c.requests_by_target.is_empty());

        let mut by = |name: &str, username: &str| {
            let mut r = request(name, "g1", None);
            r.spec.requester = Some(crate::api::activation_request::Requester {
                username: username.into(),
                ..Default::default()
            });
            c.insert_request(r);
        };
        by("r2", "oidc:Alice");
        by("r3", "oidc:bob");
        by("r4", "oidc:alice");
        let alices = |c: &Catalog| -> Vec<String> {
            c.requests_by("OIDC:ALICE")
                .filter_map(|r| r.metadata.name.clone())
                .collect()
        };
        assert_eq!(alices(&c), ["r2", "r4"]);
        let mut r4 = (*c.requests["r4"]).clone();
        r4.spec.requester = None;
        c.insert_request(r4);
        assert_eq!(alices(&c), ["r2"]);
        c.remove_request("r2");
        c.remove_request("r3");
        assert!(c.requests_by_requester.is_empty());

        c.insert_group(PimGroup::new("g1", Default::default()));
        c.remove_group("g1");
        assert!(c.groups.is_empty());
    }
}
