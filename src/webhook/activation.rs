//! The admission rules of ActivationRequest (DESIGN §7): who may create one for whom, who may
//! approve, who may end it, and what the webhook stamps and signs. Pure: the catalog, the key and
//! `now` are arguments.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp, Unit};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::identity::Caller;
use crate::api::activation_request::Phase;
use crate::api::activation_request::{
    ActivationRequestSpec, Approval, Authentication, Decision, Requester,
};
use crate::attestation::Keyring;
use crate::core::authentication::Requirements;
use crate::core::extension::{MAX_CHAIN, adds_nothing};
use crate::core::identity::{CaseInsensitive, Principals, same_identity};
use crate::core::policy::Policy;
use crate::engine::Catalog;
use crate::engine::attestation::MAX_STAMP_SKEW;
use crate::engine::catalog::ResolvedTarget;

/// A refusal, naming the field and the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

pub(super) fn deny(field: impl Into<String>, message: impl Into<String>) -> Denied {
    Denied {
        field: field.into(),
        message: message.into(),
    }
}

/// What the rules need besides the object.
pub struct Rules<'a> {
    pub catalog: &'a Catalog,
    /// Each directory's username mapping, and how names compare.
    pub principals: &'a Principals,
    pub keyring: Option<&'a Keyring>,
    pub now: Timestamp,
}

impl Rules<'_> {
    pub(super) fn keyring(&self) -> Result<&Keyring, Denied> {
        self.keyring.ok_or_else(|| {
            deny(
                "spec",
                "the operator has no attestation key configured (attestation.keyFile), so it cannot sign what it verifies; ask the platform team to configure one",
            )
        })
    }

    /// The policy of the request's group and role, names compared as the operator is
    /// configured to; unknown groups are the semantic checks' to report.
    fn policy(&self, spec: &ActivationRequestSpec) -> Option<Policy> {
        match self.catalog.target(&spec.group, spec.role()) {
            ResolvedTarget::Found { policy, .. } => Some((*policy).with_identities(self.names())),
            _ => None,
        }
    }

    /// How requester and approver names compare (`usernameMapping.caseInsensitive`).
    fn names(&self) -> CaseInsensitive {
        self.principals.names
    }

    /// Whether two names are the same person (issue 14 finding 8).
    fn same(&self, a: &str, b: &str) -> bool {
        same_identity(a, b, self.names())
    }

    /// Whether two Kubernetes usernames are the same person in the directory of `group`: as
    /// written, or as the principals they map to (`oidc:BOB` and `oidc:bob` are both
    /// `bob@contoso.com`).
    fn same_user(&self, group: &str, a: &str, b: &str) -> bool {
        match self.catalog.directory_of(group) {
            Some(directory) => self.principals.same_user(directory, a, b),
            None => self.same(a, b),
        }
    }

    /// The caller's principal in the directory of `group`, or a refusal that says why they are
    /// nobody there (issue 17 finding 1).
    fn principal(&self, group: &str, caller: &Caller) -> Result<String, Denied> {
        let directory = self.catalog.directory_of(group).ok_or_else(|| {
            deny(
                "spec.group",
                format!(
                    "PimGroup {group:?} does not exist (`kubectl get pimgroups` lists those that do), so there is no directory to know you in"
                ),
            )
        })?;
        self.principals
            .principal_in(directory, &caller.username)
            .map_err(|why| {
                deny(
                    "userInfo.username",
                    format!(
                        "you have no principal in directory {directory:?} of PimGroup {group:?}: {why}"
                    ),
                )
            })
    }

    /// The webhook's time, to the second: the API server stores timestamps at that precision,
    /// and a signature must cover exactly what is stored.
    pub(super) fn stamp(&self) -> Time {
        Time(self.now.round(Unit::Second).unwrap_or(self.now))
    }
}

/// Stamps the requester and principal on a new request and signs them with the object's `name`.
pub fn mutate_create(
    rules: &Rules<'_>,
    caller: &Caller,
    name: &str,
    spec: &ActivationRequestSpec,
) -> Result<ActivationRequestSpec, Denied> {
    let principal = check_create(rules, caller, spec)?;
    if spec.requester.is_some() {
        return Err(deny(
            "spec.requester",
            "is stamped by the admission webhook from your credentials; leave it out",
        ));
    }
    let keyring = rules.keyring()?;
    let mut out = spec.clone();
    out.principal = Some(principal);
    out.requester = Some(Requester {
        username: caller.username.clone(),
        uid: caller.uid.clone(),
        groups: caller.groups.clone(),
        mfa: caller.mfa.clone(),
        authentication: evidence_for(rules, caller, spec, false),
        stamped_at: Some(rules.stamp()),
        attestation: None,
    });
    let signature = keyring.sign_requester(name, &out);
    if let Some(requester) = out.requester.as_mut() {
        requester.attestation = signature;
    }
    Ok(out)
}

/// Checks a new request after mutation: the stamp must be the caller's, fresh and signed under
/// the object's `name`.
pub fn validate_create(
    rules: &Rules<'_>,
    caller: &Caller,
    name: &str,
    spec: &ActivationRequestSpec,
) -> Result<(), Denied> {
    check_create(rules, caller, spec)?;
    let keyring = rules.keyring()?;
    let requester = spec.requester.as_ref().ok_or_else(|| {
        deny(
            "spec.requester",
            "missing: the mutating webhook did not run; check that pim-operator's MutatingWebhookConfiguration exists and its webhook activationrequests.mutate.pim.dev covers CREATE of activationrequests",
        )
    })?;
    if requester.username != caller.username
        || requester.uid != caller.uid
        || requester.groups != caller.groups
        || requester.mfa != caller.mfa
        || requester.authentication != evidence_for(rules, caller, spec, false)
    {
        return Err(deny(
            "spec.requester",
            "does not match the authenticated caller; it is stamped by the webhook and cannot be supplied",
        ));
    }
    let fresh = requester
        .stamped_at
        .as_ref()
        .is_some_and(|t| rules.now.duration_since(t.0).abs() <= MAX_STAMP_SKEW);
    if !fresh || !keyring.verify_requester(name, spec) {
        return Err(deny(
            "spec.requester.attestation",
            "is not the admission webhook's signature over this request under this name",
        ));
    }
    Ok(())
}

/// The rules shared by mutation and validation of a create; returns the caller's principal.
fn check_create(
    rules: &Rules<'_>,
    caller: &Caller,
    spec: &ActivationRequestSpec,
) -> Result<String, Denied> {
    let principal = rules.principal(&spec.group, caller)?;
    if let Some(asked) = spec.principal.as_deref()
        && !rules.same(asked, &principal)
    {
        return Err(deny(
            "spec.principal",
            format!(
                "you may only activate for yourself: {:?} authenticates as {principal:?}, not {asked:?}",
                caller.username
            ),
        ));
    }
    if !spec.approvals.is_empty() {
        return Err(deny(
            "spec.approvals",
            "must be empty on creation; approvers add their own entries afterwards",
        ));
    }
    if let Some(name) = spec.extends.as_deref() {
        check_extension(rules, caller, spec, name)?;
    }
    if let Some(policy) = rules.policy(spec)
        && policy.require_mfa
        && caller.mfa.is_none()
    {
        return Err(deny(
            "userInfo.extra",
            format!(
                "the policy of {:?} requires MFA, and your credentials carry no MFA claim; sign in again with multi-factor authentication",
                spec.group
            ),
        ));
    }
    if let Some(policy) = rules.policy(spec) {
        let unmet = policy
            .authentication
            .unmet(&evidence(&policy.authentication, caller), rules.now);
        if !unmet.is_empty() {
            return Err(deny(
                "userInfo.extra",
                format!(
                    "the policy of {:?} asks more of your sign-in (spec.activation.requiredClaims, maxAuthenticationAge): {}; sign in again as it asks (for an authentication context, through the app that requests it)",
                    spec.group,
                    unmet.join("; ")
                ),
            ));
        }
        // The request an extension replaces does not count: it ends as the extension goes on.
        let open: Vec<&str> = open_requests_of(rules, &caller.username)
            .into_iter()
            .filter(|name| Some(*name) != spec.extends.as_deref())
            .collect();
        if open.len() >= policy.max_open_requests {
            return Err(deny(
                "spec",
                format!(
                    "you have {} open requests ({}), the most the policy of {:?} allows (spec.activation.maxOpenRequests: {}); deactivate one you no longer need (kubectl pim deactivate NAME) or wait until one ends",
                    open.len(),
                    open.join(", "),
                    spec.group,
                    policy.max_open_requests
                ),
            ));
        }
    }
    Ok(principal)
}

/// An extension names a running activation of the caller's own, of the same group and role,
/// with time left to add. Read from the statuses as written, to refuse at once what the
/// controller would reject; the controller proves it again from signed inputs.
fn check_extension(
    rules: &Rules<'_>,
    caller: &Caller,
    spec: &ActivationRequestSpec,
    name: &str,
) -> Result<(), Denied> {
    let field = "spec.extends";
    if spec.start_time.is_some() {
        return Err(deny(
            "spec.startTime",
            "an extension (spec.extends) has no start time: it continues the access it extends",
        ));
    }
    let original = rules.catalog.requests.get(name).ok_or_else(|| {
        deny(
            field,
            format!("ActivationRequest {name:?} does not exist; `kubectl pim status` lists yours"),
        )
    })?;
    let theirs = original
        .spec
        .requester
        .as_ref()
        .map(|r| r.username.as_str())
        .unwrap_or_default();
    if !rules.same_user(&original.spec.group, theirs, &caller.username) {
        return Err(deny(
            field,
            format!("you may extend only your own requests, and {name:?} is {theirs:?}'s"),
        ));
    }
    if original.spec.group != spec.group || original.spec.role() != spec.role() {
        return Err(deny(
            field,
            format!(
                "an extension is for the group and role of the request it extends: {name:?} is for the {} role of {:?}",
                original.spec.role(),
                original.spec.group
            ),
        ));
    }
    let status = original.status.clone().unwrap_or_default();
    let running = matches!(status.phase, Some(Phase::Scheduled | Phase::Active))
        && status.approved_at.is_some();
    let (Some(start), Some(end)) = (&status.starts_at, &status.expires_at) else {
        return Err(not_running(name, &status));
    };
    if !running || end.0 <= rules.now {
        return Err(not_running(name, &status));
    }
    // From the catalog's index of extensions, not a scan of every request: one review in
    // three at 500 a second is a create.
    if let Some(other) = rules
        .catalog
        .extensions_of(name)
        .into_iter()
        .filter(|r| r.is_open())
        .filter_map(|r| r.metadata.name.as_deref())
        .min()
    {
        return Err(deny(
            field,
            format!(
                "ActivationRequest {other:?} already extends {name:?}; once it is approved, extend {other:?} instead (or withdraw it: kubectl pim deactivate {other})"
            ),
        ));
    }
    let origin = chain_origin(rules.catalog, original, start.0);
    if let Some(policy) = rules.policy(spec)
        && let Some(why) = adds_nothing(end.0, origin, &policy)
    {
        return Err(deny(field, format!("nothing to extend: {why}")));
    }
    Ok(())
}

fn not_running(name: &str, status: &crate::api::ActivationRequestStatus) -> Denied {
    deny(
        "spec.extends",
        format!(
            "ActivationRequest {name:?} is {} and only a running activation can be extended; create a new request (kubectl pim activate)",
            status.phase.unwrap_or_default()
        ),
    )
}

/// The start of the first request of the chain `request` belongs to, from the statuses.
fn chain_origin(
    catalog: &Catalog,
    request: &crate::api::ActivationRequest,
    start: Timestamp,
) -> Timestamp {
    let mut origin = start;
    let mut current = request;
    for _ in 0..MAX_CHAIN {
        let Some(earlier) = current
            .spec
            .extends
            .as_deref()
            .and_then(|n| catalog.requests.get(n))
        else {
            break;
        };
        if let Some(start) = earlier.status.as_ref().and_then(|s| s.starts_at.as_ref()) {
            origin = origin.min(start.0);
        }
        current = earlier;
    }
    origin
}

/// What the webhook saw of the caller's sign-in that `requirements` ask about; nothing when
/// they ask nothing.
fn evidence(requirements: &Requirements, caller: &Caller) -> Authentication {
    if requirements.is_empty() {
        return Authentication::default();
    }
    requirements.evidence(
        |key| caller.extra.get(key).map_or(&[][..], Vec::as_slice),
        caller.authenticated_at,
    )
}

/// The sign-in evidence stamped on a new request (`approver` false) or an approval entry:
/// what the request's policy asks of requesters or of approvers.
fn evidence_for(
    rules: &Rules<'_>,
    caller: &Caller,
    spec: &ActivationRequestSpec,
    approver: bool,
) -> Authentication {
    let Some(policy) = rules.policy(spec) else {
        return Authentication::default();
    };
    let requirements = if approver {
        policy.approval.map(|a| a.authentication)
    } else {
        Some(policy.authentication)
    };
    requirements
        .map(|r| evidence(&r, caller))
        .unwrap_or_default()
}

/// The names of the requests `username` made that have not ended, in every group. From the
/// catalog's index by requester: comparing the caller with every request's requester was most
/// of a create's time with 10k requests (docs/performance.md).
fn open_requests_of<'c>(rules: &Rules<'c>, username: &str) -> Vec<&'c str> {
    rules
        .catalog
        .requests_by(username)
        .filter(|r| r.is_open())
        .filter(|r| {
            r.spec
                .requester
                .as_ref()
                .is_some_and(|q| rules.same_user(&r.spec.group, &q.username, username))
        })
        .filter_map(|r| r.metadata.name.as_deref())
        .collect()
}

/// How an update changes the approval entries, keyed by approver.
struct ApprovalChanges<'a> {
    removed: Vec<&'a str>,
    /// New or edited entries, with the old entry when edited.
    changed: Vec<(&'a Approval, Option<&'a Approval>)>,
}

fn approval_changes<'a>(
    old: &'a ActivationRequestSpec,
    new: &'a ActivationRequestSpec,
) -> ApprovalChanges<'a> {
    let old_by: BTreeMap<&str, &Approval> = old
        .approvals
        .iter()
        .map(|a| (a.approver.as_str(), a))
        .collect();
    let new_by: BTreeMap<&str, &Approval> = new
        .approvals
        .iter()
        .map(|a| (a.approver.as_str(), a))
        .collect();
    ApprovalChanges {
        removed: old_by
            .keys()
            .filter(|k| !new_by.contains_key(*k))
            .copied()
            .collect(),
        changed: new_by
            .iter()
            .filter_map(|(k, a)| match old_by.get(k) {
                Some(before) if *before == *a => None,
                before => Some((*a, before.copied())),
            })
            .collect(),
    }
}

/// The spec without what may change after creation, an omitted role as the `member` it means
/// (the API server's schema default fills it in on one side and not, for older objects, on the
/// other).
fn fixed_part(spec: &ActivationRequestSpec) -> ActivationRequestSpec {
    ActivationRequestSpec {
        approvals: Vec::new(),
        deactivate: None,
        role: Some(spec.role()),
        ..spec.clone()
    }
}

/// Checks an update; returns the approval entries the caller added or edited, by index in `new`.
fn check_update(
    rules: &Rules<'_>,
    caller: &Caller,
    old: &ActivationRequestSpec,
    new: &ActivationRequestSpec,
) -> Result<Vec<usize>, Denied> {
    if fixed_part(old) != fixed_part(new) {
        return Err(deny(
            "spec",
            "is immutable after creation, except approvals and deactivate; create a new request instead",
        ));
    }
    let requester = old.requester.as_ref();
    // By the stamped username, which is exact; by the principal only for a request nobody
    // stamped, since a principal may be the mapped name of another authenticator's user.
    let is_requester = match requester {
        Some(r) => rules.same_user(&old.group, &r.username, &caller.username),
        None => old.principal.as_deref().is_some_and(|p| {
            rules
                .principal(&old.group, caller)
                .is_ok_and(|mine| rules.same(p, &mine))
        }),
    };
    if new.deactivate_requested() != old.deactivate_requested() {
        if !new.deactivate_requested() {
            return Err(deny("spec.deactivate", "cannot be undone"));
        }
        if !is_requester {
            return Err(deny(
                "spec.deactivate",
                format!(
                    "only the requester ({}) may end this request",
                    requester.map_or("unknown", |r| r.username.as_str())
                ),
            ));
        }
    }
    let changes = approval_changes(old, new);
    if let Some(removed) = changes.removed.first() {
        return Err(deny(
            format!("spec.approvals[approver={removed}]"),
            "a recorded decision cannot be removed",
        ));
    }
    let mut touched = Vec::new();
    for (entry, before) in &changes.changed {
        let field = format!("spec.approvals[approver={}]", entry.approver);
        if !rules.same_user(&old.group, &entry.approver, &caller.username) {
            return Err(deny(
                field,
                format!(
                    "{:?} may write only their own approval entry (approver: {:?})",
                    caller.username, caller.username
                ),
            ));
        }
        if let Some(before) = before
            && before.decision != entry.decision
        {
            return Err(deny(
                format!("{field}.decision"),
                "a recorded decision cannot be changed",
            ));
        }
        // One entry per person: a second spelling of the same name would be a second vote, or
        // a way around "a recorded decision cannot be changed".
        if let Some(other) = new.approvals.iter().find(|a| {
            a.approver != entry.approver
                && rules.same_user(&old.group, &a.approver, &entry.approver)
        }) {
            return Err(deny(
                field,
                format!(
                    "one entry per person: {:?} already has one as {:?} (the same person under usernameMapping, caseInsensitive: {})",
                    caller.username,
                    other.approver,
                    rules.names().as_str()
                ),
            ));
        }
        let policy = rules.policy(old).ok_or_else(|| {
            deny(
                "spec.group",
                format!(
                    "PimGroup {:?} has no usable policy for the {} role, so nobody can approve",
                    old.group,
                    old.role()
                ),
            )
        })?;
        let Some(approval) = &policy.approval else {
            return Err(deny(
                field,
                "the policy needs no approval for this role; approvals are not accepted",
            ));
        };
        // Policies name approvers as the directory's principals; a username that is nobody
        // in the directory approves nothing there (the controller ignores such an entry too).
        let principal = rules
            .principal(&old.group, caller)
            .map_err(|refusal| Denied {
                field: field.clone(),
                message: refusal.message,
            })?;
        if !approval.allows(&principal, &caller.groups, policy.identities) {
            return Err(deny(
                field,
                format!(
                    "{:?} is not an approver under the policy of {:?}, as a user or through a group",
                    caller.username, old.group
                ),
            ));
        }
        if is_requester && !approval.allow_self_approval {
            return Err(deny(
                field,
                "you cannot approve or deny your own request (the policy does not allow self-approval)",
            ));
        }
        if entry.decision == Decision::Approve {
            let unmet = approval
                .authentication
                .unmet(&evidence(&approval.authentication, caller), rules.now);
            if !unmet.is_empty() {
                return Err(deny(
                    field,
                    format!(
                        "the policy of {:?} asks more of an approver's sign-in (spec.activation.approval.requiredClaims, maxAuthenticationAge): {}; sign in again as it asks",
                        old.group,
                        unmet.join("; ")
                    ),
                ));
            }
        }
        if entry.decision == Decision::Approve && approval.require_mfa && caller.mfa.is_none() {
            return Err(deny(
                field,
                format!(
                    "the policy of {:?} requires approvers to have signed in with MFA (spec.activation.approval.requireMfa), and your credentials carry no MFA claim; sign in again with multi-factor authentication",
                    old.group
                ),
            ));
        }
        if let Some(i) = new
            .approvals
            .iter()
            .position(|a| a.approver == entry.approver)
        {
            touched.push(i);
        }
    }
    Ok(touched)
}

/// The approver's groups that the policy names: all the controller needs to re-check the
/// approver, and small enough to store.
fn approver_groups(
    rules: &Rules<'_>,
    spec: &ActivationRequestSpec,
    caller: &Caller,
) -> Vec<String> {
    let Some(approval) = rules.policy(spec).and_then(|p| p.approval) else {
        return Vec::new();
    };
    caller
        .groups
        .iter()
        .filter(|g| approval.allows("", std::slice::from_ref(g), rules.names()))
        .cloned()
        .collect()
}

/// Stamps and signs the caller's own approval entry. `uid` is the request's.
pub fn mutate_update(
    rules: &Rules<'_>,
    caller: &Caller,
    uid: &str,
    old: &ActivationRequestSpec,
    new: &ActivationRequestSpec,
) -> Result<ActivationRequestSpec, Denied> {
    let touched = check_update(rules, caller, old, new)?;
    if touched.is_empty() {
        return Ok(new.clone());
    }
    let keyring = rules.keyring()?;
    let mut out = new.clone();
    let groups = approver_groups(rules, old, caller);
    for i in touched {
        let Some(entry) = out.approvals.get_mut(i) else {
            continue;
        };
        // An edited entry keeps the time of its decision; a new one gets the webhook's.
        let kept = old
            .approvals
            .iter()
            .find(|a| a.approver == entry.approver)
            .and_then(|a| a.time.clone());
        entry.time = Some(kept.unwrap_or_else(|| rules.stamp()));
        entry.groups = groups.clone();
        entry.mfa = caller.mfa.clone();
        entry.authentication = evidence_for(rules, caller, old, true);
        entry.attestation = None;
        entry.attestation = Some(keyring.sign_approval(uid, entry));
    }
    Ok(out)
}

/// Checks an update after mutation: every entry the caller touched carries a fresh signature.
pub fn validate_update(
    rules: &Rules<'_>,
    caller: &Caller,
    uid: &str,
    old: &ActivationRequestSpec,
    new: &ActivationRequestSpec,
) -> Result<(), Denied> {
    let touched = check_update(rules, caller, old, new)?;
    if touched.is_empty() {
        return Ok(());
    }
    let keyring = rules.keyring()?;
    let groups = approver_groups(rules, old, caller);
    for i in touched {
        let Some(entry) = new.approvals.get(i) else {
            continue;
        };
        let field = format!("spec.approvals[approver={}]", entry.approver);
        let is_new = !old.approvals.iter().any(|a| a.approver == entry.approver);
        let fresh = entry.time.as_ref().is_some_and(|t| {
            !is_new || rules.now.duration_since(t.0).abs() <= SignedDuration::from_mins(5)
        });
        if !fresh
            || entry.groups != groups
            || entry.mfa != caller.mfa
            || entry.authentication != evidence_for(rules, caller, old, true)
            || !keyring.verify_approval(uid, entry)
        {
            return Err(deny(
                format!("{field}.attestation"),
                "is not the admission webhook's signature over this entry",
            ));
        }
    }
    Ok(())
}
