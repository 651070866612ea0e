//! The ActivationRequest state machine (DESIGN §4): one pure function from the request, the
//! facts the controller gathered, and `now`, to the phase, the conditions and the next deadline.
//!
//! Rules that never bend, and where they live here:
//! - access only inside `[start, end)` of an approved, validated request, with eligibility
//!   effective at the start; the end is clipped to the eligibility and the policy maximum;
//! - a window already granted can end earlier on a later pass, never later (`shrink_window`);
//! - a terminal phase never changes.

use jiff::{SignedDuration, Timestamp};

use super::activation::{Window, plan_window, shrink_window, validate_request};
use super::eligibility::{Eligibility, covering};
use super::policy::{ApprovalRules, Policy};
use super::violation::{primary_reason, summarize};
use super::{duration, time::add};
use crate::api::activation_request::{
    ActivationRequestSpec, ActivationRequestStatus, Decision as Vote, Phase,
};
use crate::api::conditions::{reasons, types};

/// The request as stored: spec, creation time and the status written on earlier passes.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    pub spec: &'a ActivationRequestSpec,
    pub created: Timestamp,
    pub status: &'a ActivationRequestStatus,
    /// Its deletion was requested (`metadata.deletionTimestamp`).
    pub deleting: bool,
}

/// Whether the requester identity stamped at admission carries a valid signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attestation {
    Verified,
    /// Missing or forged: the request did not come through the webhook.
    Unverified,
    /// The operator has no key to check with, so it grants nothing until one is configured.
    KeyUnavailable,
}

/// An approval whose signature the controller checked. `groups` are the approver's groups as the
/// API server reported them at admission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedApproval {
    pub approver: String,
    pub groups: Vec<String>,
    pub decision: Vote,
    pub time: Timestamp,
    pub reason: Option<String>,
}

/// The group and policy behind the request, as the controller found them.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    Found(&'a Policy),
    GroupNotFound,
    /// The group exists but does not manage the requested role (no `owner` policy, say).
    RoleNotManaged,
    PolicyNotFound,
    /// The policy exists but breaks a rule; its message says which.
    PolicyInvalid(&'a str),
}

/// Everything outside the request that the decision depends on.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    pub target: Target<'a>,
    pub requester: Attestation,
    pub mfa_verified: bool,
    /// The requester's Eligible-type assignments for this group and role, at any time.
    pub eligibilities: &'a [Eligibility],
    pub approvals: &'a [VerifiedApproval],
    /// Approvers whose entries carry no valid webhook signature: they count for nothing and are
    /// reported.
    pub unverified_approvals: &'a [String],
    /// The directory lists the principal in the group's role now.
    pub member_present: bool,
    /// Another request or an Active assignment covers the principal now.
    pub granted_elsewhere: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

impl ConditionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionStatus::True => "True",
            ConditionStatus::False => "False",
            ConditionStatus::Unknown => "Unknown",
        }
    }
}

/// A condition as the decision wants it; `lastTransitionTime` is the status writer's business.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionState {
    pub type_: &'static str,
    pub status: ConditionStatus,
    pub reason: &'static str,
    pub message: String,
}

/// The outcome of one pass.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub phase: Phase,
    /// Why the request is in this phase; recorded in history when the phase changes.
    pub reason: &'static str,
    pub message: String,
    /// `Validated`, `Approved`, `Active` and `Expired`, always all four.
    pub conditions: Vec<ConditionState>,
    pub approved_at: Option<Timestamp>,
    pub approved_by: Vec<String>,
    pub window: Option<Window>,
    pub matched_assignment: Option<String>,
    pub activated_at: Option<Timestamp>,
    pub ended_at: Option<Timestamp>,
    /// When to look again: the earliest future instant at which the outcome can change by time
    /// alone. Always after `now`; `None` when only an outside change can move the request.
    pub next_deadline: Option<Timestamp>,
}

impl Decision {
    /// Whether the principal should be a member at `now` because of this request.
    pub fn grants_access_at(&self, now: Timestamp) -> bool {
        matches!(self.phase, Phase::Scheduled | Phase::Active)
            && self.approved_at.is_some()
            && self.window.is_some_and(|w| w.contains(now))
    }
}

/// Decides the request's phase at `now`.
pub fn decide(request: RequestView<'_>, facts: &Facts<'_>, now: Timestamp) -> Decision {
    let mut pass = Pass::new(request, facts, now);
    pass.run();
    pass.finish()
}

/// The state one decision builds up, starting from what earlier passes stored.
struct Pass<'a> {
    request: RequestView<'a>,
    facts: &'a Facts<'a>,
    now: Timestamp,
    prior: Phase,
    out: Decision,
    validated: ConditionState,
    approved: ConditionState,
}

fn condition(
    type_: &'static str,
    status: ConditionStatus,
    reason: &'static str,
    message: impl Into<String>,
) -> ConditionState {
    ConditionState {
        type_,
        status,
        reason,
        message: message.into(),
    }
}

fn stored_window(status: &ActivationRequestStatus) -> Option<Window> {
    let start = status.starts_at.as_ref()?.0;
    let end = status.expires_at.as_ref()?.0;
    Some(Window {
        start,
        end,
        clipped_by: status.end_clipped_by,
    })
}

impl<'a> Pass<'a> {
    fn new(request: RequestView<'a>, facts: &'a Facts<'a>, now: Timestamp) -> Self {
        let status = request.status;
        let prior = status.phase.unwrap_or_default();
        let out = Decision {
            phase: prior,
            reason: reasons::AWAITING_VALIDATION,
            message: String::new(),
            conditions: Vec::new(),
            approved_at: status.approved_at.as_ref().map(|t| t.0),
            approved_by: status.approved_by.clone(),
            window: stored_window(status),
            matched_assignment: status.matched_assignment.clone(),
            activated_at: status.activated_at.as_ref().map(|t| t.0),
            ended_at: status.ended_at.as_ref().map(|t| t.0),
            next_deadline: None,
        };
        let was_validated = prior != Phase::Pending;
        let validated = if was_validated {
            condition(
                types::VALIDATED,
                ConditionStatus::True,
                reasons::VALID,
                "the request satisfies its policy",
            )
        } else {
            condition(
                types::VALIDATED,
                ConditionStatus::Unknown,
                reasons::AWAITING_VALIDATION,
                "not validated yet",
            )
        };
        let approved = match (out.approved_at, prior) {
            (Some(_), _) => condition(
                types::APPROVED,
                ConditionStatus::True,
                reasons::APPROVED,
                approved_message(&out.approved_by),
            ),
            (None, _) => condition(
                types::APPROVED,
                ConditionStatus::Unknown,
                reasons::AWAITING_VALIDATION,
                "not validated yet",
            ),
        };
        Pass {
            request,
            facts,
            now,
            prior,
            out,
            validated,
            approved,
        }
    }

    fn run(&mut self) {
        if self.prior.is_terminal() {
            return self.stay_terminal();
        }
        // Deleting a live request ends it, as a transition of its own, so the audit trail
        // shows who lost access and why before the object is gone.
        if self.request.deleting {
            return self.refuse(
                reasons::DELETED,
                reasons::DELETED,
                "the ActivationRequest was deleted; its access is removed".to_owned(),
            );
        }
        let spec = self.request.spec;
        if spec.deactivate_requested() {
            let message = if self.out.activated_at.is_some() {
                "ended early by the requester"
            } else {
                "withdrawn by the requester before it started"
            };
            return self.end(Phase::Deactivated, reasons::DEACTIVATED, message.to_owned());
        }
        match self.facts.requester {
            Attestation::Verified => {}
            Attestation::Unverified => {
                return self.refuse(
                    reasons::UNVERIFIED_REQUESTER,
                    reasons::UNVERIFIED_REQUESTER,
                    "the requester identity carries no valid signature from the admission webhook"
                        .to_owned(),
                );
            }
            Attestation::KeyUnavailable if self.prior == Phase::Pending => {
                return self.hold(
                    reasons::ATTESTATION_KEY_MISSING,
                    "the operator has no attestation key configured, so it cannot verify the requester; no access is granted until one is",
                );
            }
            Attestation::KeyUnavailable => {}
        }
        let policy = match self.facts.target {
            Target::Found(policy) => policy,
            Target::GroupNotFound => {
                return self.refuse(
                    reasons::GROUP_NOT_FOUND,
                    reasons::GROUP_REMOVED,
                    format!("PimGroup {:?} does not exist", spec.group),
                );
            }
            Target::RoleNotManaged => {
                return self.refuse(
                    reasons::ROLE_NOT_MANAGED,
                    reasons::POLICY_REMOVED,
                    format!(
                        "PimGroup {:?} has no policy for the {} role",
                        spec.group,
                        spec.role()
                    ),
                );
            }
            Target::PolicyNotFound => {
                return self.refuse(
                    reasons::POLICY_NOT_FOUND,
                    reasons::POLICY_REMOVED,
                    format!(
                        "the AccessPolicy of PimGroup {:?} does not exist",
                        spec.group
                    ),
                );
            }
            Target::PolicyInvalid(problem) => {
                if self.out.window.is_some() {
                    // A granted window is already within the hard cap; let it run out by time.
                    return self.follow_time(None);
                }
                return self.hold(
                    reasons::INVALID_POLICY,
                    &format!("the AccessPolicy is invalid: {problem}"),
                );
            }
        };

        if self.prior == Phase::Pending {
            if let Err(violations) = validate_request(spec, policy, self.facts.mfa_verified) {
                return self.end(
                    Phase::Rejected,
                    primary_reason(&violations),
                    summarize(&violations),
                );
            }
            self.validated = condition(
                types::VALIDATED,
                ConditionStatus::True,
                reasons::VALID,
                "the request satisfies its policy",
            );
        }

        if self.out.approved_at.is_none() && !self.collect_approval(policy) {
            return;
        }
        self.follow_time(Some(policy));
    }

    /// Works out approval. Returns false when the pass ends here (waiting, denied, timed out).
    fn collect_approval(&mut self, policy: &Policy) -> bool {
        let Some(eligibility) = self.eligibility_at(self.requested_start(self.now)) else {
            return self.not_eligible();
        };
        let assignment = eligibility.assignment.clone();
        let eligibility_end = eligibility.end;
        let Some(rules) = &policy.approval else {
            // Counted from creation, so a slow or restarted controller shortens, never shifts.
            self.out.approved_at = Some(self.request.created.min(self.now));
            self.out.matched_assignment = Some(assignment);
            self.approved = condition(
                types::APPROVED,
                ConditionStatus::True,
                reasons::APPROVAL_NOT_REQUIRED,
                "the policy needs no approval",
            );
            return true;
        };
        let deadline = add(self.request.created, rules.timeout);
        let tally = tally(
            self.facts.approvals,
            rules,
            self.requester_name(),
            deadline,
            policy.identities,
        );
        if let Some(denial) = tally.denial {
            self.approved = condition(
                types::APPROVED,
                ConditionStatus::False,
                reasons::DENIED,
                denial.clone(),
            );
            self.end(Phase::Denied, reasons::DENIED, denial);
            return false;
        }
        if let Some(reached) = tally.threshold_reached_at(rules.min_approvals) {
            // Counted from the deciding approval, however late the controller saw it.
            self.out.approved_at = Some(reached.min(self.now));
            self.out.approved_by = tally.approvers;
            self.out.matched_assignment = Some(assignment);
            self.approved = condition(
                types::APPROVED,
                ConditionStatus::True,
                reasons::APPROVED,
                approved_message(&self.out.approved_by),
            );
            return true;
        }
        if self.now >= deadline {
            let message = format!("no decision within {}", duration::format(rules.timeout));
            self.approved = condition(
                types::APPROVED,
                ConditionStatus::False,
                reasons::TIMED_OUT,
                message.clone(),
            );
            self.end(Phase::TimedOut, reasons::TIMED_OUT, message);
            return false;
        }
        let mut message = format!(
            "{} of {} approvals; waiting until {deadline}",
            tally.approvers.len(),
            rules.min_approvals
        );
        if !tally.ignored.is_empty() {
            message.push_str(&format!("; ignored: {}", tally.ignored.join(", ")));
        }
        let reason = if self.facts.unverified_approvals.is_empty() {
            reasons::WAITING_FOR_APPROVAL
        } else {
            message.push_str(&format!(
                "; not signed by the admission webhook, so ignored: {}",
                self.facts.unverified_approvals.join(", ")
            ));
            reasons::UNVERIFIED_APPROVAL
        };
        self.approved = condition(
            types::APPROVED,
            ConditionStatus::False,
            reason,
            message.clone(),
        );
        self.out.matched_assignment = Some(assignment);
        self.set(Phase::PendingApproval, reason, message);
        // The eligibility may run out before anyone decides.
        self.out.next_deadline = Some(eligibility_end.map_or(deadline, |end| end.min(deadline)));
        false
    }

    /// Plans or re-caps the window, then moves with time. `policy` is `None` when the policy is
    /// invalid and the stored window runs as it is.
    fn follow_time(&mut self, policy: Option<&Policy>) {
        let Some(approved_at) = self.out.approved_at else {
            return self.hold(reasons::AWAITING_VALIDATION, "not approved yet");
        };
        let mut window = match (self.out.window, policy) {
            (Some(window), None) => window,
            (stored, Some(policy)) => {
                let start = stored.map_or_else(|| self.requested_start(approved_at), |w| w.start);
                // Eligibility must hold at the start, or now once started.
                let Some(eligibility) = self.eligibility_at(start.max(self.now)) else {
                    if stored.is_some_and(|w| self.now >= w.end) {
                        self.out.window = stored;
                        return self.expire();
                    }
                    self.not_eligible();
                    return;
                };
                self.out.matched_assignment = Some(eligibility.assignment.clone());
                match stored {
                    Some(w) => shrink_window(w, policy.max_activation, eligibility.end),
                    None => plan_window(
                        start,
                        self.requested_duration(policy),
                        policy.max_activation,
                        eligibility.end,
                    ),
                }
            }
            (None, None) => {
                return self.hold(reasons::INVALID_POLICY, "the AccessPolicy is invalid");
            }
        };
        if let Some(stored) = self.out.window {
            // Belt and braces: whatever happened above, a window never grows.
            window.end = window.end.min(stored.end);
        }
        self.out.window = Some(window);

        if self.now >= window.end {
            return self.expire();
        }
        if self.now < window.start {
            self.set(
                Phase::Scheduled,
                reasons::SCHEDULED,
                format!("starts at {}", window.start),
            );
            self.out.next_deadline = Some(window.start);
            return;
        }
        self.out.next_deadline = Some(window.end);
        if self.prior == Phase::Active || self.facts.member_present {
            self.out.activated_at.get_or_insert(self.now);
            self.set(
                Phase::Active,
                reasons::ACTIVE,
                format!("active until {}", window.end),
            );
        } else {
            self.set(
                Phase::Scheduled,
                reasons::PROVISIONING,
                "waiting for the directory to confirm the membership".to_owned(),
            );
        }
    }

    fn expire(&mut self) {
        let Some(window) = self.out.window else {
            return self.end(
                Phase::Expired,
                reasons::EXPIRED,
                "the window ended".to_owned(),
            );
        };
        let mut message = format!("ended at {}", window.end);
        if let Some(by) = window.clipped_by {
            message.push_str(&format!(
                " (clipped by {})",
                match by {
                    crate::api::activation_request::EndClippedBy::Eligibility =>
                        "the end of eligibility",
                    crate::api::activation_request::EndClippedBy::Policy => "the policy maximum",
                }
            ));
        }
        self.end(Phase::Expired, reasons::EXPIRED, message);
        self.out.ended_at = Some(window.end.min(self.now));
    }

    fn not_eligible(&mut self) -> bool {
        let message = format!(
            "{:?} holds no effective eligible assignment for the {} role of {:?}",
            self.request.spec.principal.as_deref().unwrap_or(""),
            self.request.spec.role(),
            self.request.spec.group
        );
        if self.prior == Phase::Pending {
            self.end(Phase::Rejected, reasons::NOT_ELIGIBLE, message);
        } else {
            self.end(Phase::Revoked, reasons::ELIGIBILITY_ENDED, message);
        }
        false
    }

    /// Refuses a request that was never validated, or revokes one that was.
    fn refuse(
        &mut self,
        rejected_reason: &'static str,
        revoked_reason: &'static str,
        message: String,
    ) {
        if self.prior == Phase::Pending {
            self.end(Phase::Rejected, rejected_reason, message);
        } else {
            self.end(Phase::Revoked, revoked_reason, message);
        }
    }

    /// Stays in the current phase until something outside changes.
    fn hold(&mut self, reason: &'static str, message: &str) {
        if self.prior == Phase::Pending {
            self.validated = condition(types::VALIDATED, ConditionStatus::Unknown, reason, message);
        }
        self.set(self.prior, reason, message.to_owned());
        if let Some(w) = self.out.window {
            self.out.next_deadline = [w.start, w.end].into_iter().find(|t| *t > self.now);
        }
    }

    fn set(&mut self, phase: Phase, reason: &'static str, message: String) {
        self.out.phase = phase;
        self.out.reason = reason;
        self.out.message = message;
    }

    fn end(&mut self, phase: Phase, reason: &'static str, message: String) {
        if phase == Phase::Rejected {
            self.validated = condition(
                types::VALIDATED,
                ConditionStatus::False,
                reason,
                message.clone(),
            );
            self.approved = condition(
                types::APPROVED,
                ConditionStatus::False,
                reasons::REJECTED,
                "the request was rejected",
            );
        } else if self.out.approved_at.is_none()
            && !matches!(phase, Phase::Denied | Phase::TimedOut)
        {
            self.approved = condition(
                types::APPROVED,
                ConditionStatus::False,
                reason,
                message.clone(),
            );
        }
        self.set(phase, reason, message);
        self.out.ended_at = Some(self.now);
        self.out.next_deadline = None;
    }

    /// A terminal request keeps its phase; only the revocation check can still change.
    fn stay_terminal(&mut self) {
        let stored = &self.request.status.conditions;
        let find = |t: &str| stored.iter().find(|c| c.type_ == t);
        let ended = find(types::EXPIRED);
        self.out.reason = ended
            .and_then(|c| reason_constant(&c.reason))
            .unwrap_or(reasons::EXPIRED);
        self.out.message = ended.map(|c| c.message.clone()).unwrap_or_default();
        let keep = |t: &'static str, fallback: ConditionState| {
            find(t)
                .and_then(|c| {
                    Some(condition(
                        t,
                        status_constant(&c.status)?,
                        reason_constant(&c.reason)?,
                        c.message.clone(),
                    ))
                })
                .unwrap_or(fallback)
        };
        self.validated = keep(types::VALIDATED, self.validated.clone());
        self.approved = keep(types::APPROVED, self.approved.clone());
    }

    fn finish(mut self) -> Decision {
        let phase = self.out.phase;
        let active = if phase.is_terminal() {
            // Provisioning may have added the member before confirmation was seen.
            let had_access = self.out.activated_at.is_some()
                || self
                    .out
                    .window
                    .is_some_and(|w| w.start <= self.now && self.out.approved_at.is_some());
            if had_access && self.facts.member_present && !self.facts.granted_elsewhere {
                condition(
                    types::ACTIVE,
                    ConditionStatus::False,
                    reasons::REVOCATION_OVERDUE,
                    "access has ended but the directory still lists the principal; removal is being retried",
                )
            } else {
                condition(
                    types::ACTIVE,
                    ConditionStatus::False,
                    self.out.reason,
                    self.out.message.clone(),
                )
            }
        } else if phase == Phase::Active {
            condition(
                types::ACTIVE,
                ConditionStatus::True,
                reasons::ACTIVE,
                self.out.message.clone(),
            )
        } else {
            let reason = match phase {
                Phase::Scheduled => self.out.reason,
                _ => reasons::NOT_STARTED,
            };
            condition(
                types::ACTIVE,
                ConditionStatus::False,
                reason,
                self.out.message.clone(),
            )
        };
        let expired = if phase.is_terminal() {
            condition(
                types::EXPIRED,
                ConditionStatus::True,
                self.out.reason,
                self.out.message.clone(),
            )
        } else {
            condition(
                types::EXPIRED,
                ConditionStatus::False,
                reasons::IN_PROGRESS,
                "the request is still in progress",
            )
        };
        self.out.conditions = vec![self.validated, self.approved, active, expired];
        let now = self.now;
        self.out.next_deadline = self.out.next_deadline.filter(|t| *t > now);
        self.out
    }

    /// The requester as approvers are named: the directory principal (approvers are mapped the
    /// same way), else the Kubernetes username.
    fn requester_name(&self) -> &str {
        let spec = self.request.spec;
        spec.principal
            .as_deref()
            .filter(|p| !p.is_empty())
            .or_else(|| spec.requester.as_ref().map(|r| r.username.as_str()))
            .unwrap_or("")
    }

    /// The window starts at approval, or at the requested start time if that is later.
    fn requested_start(&self, approved_at: Timestamp) -> Timestamp {
        self.request
            .spec
            .start_time
            .as_ref()
            .map_or(approved_at, |t| t.0.max(approved_at))
    }

    fn requested_duration(&self, policy: &Policy) -> SignedDuration {
        self.request
            .spec
            .duration
            .as_deref()
            .and_then(|d| duration::parse_positive("spec.duration", d).ok())
            .unwrap_or(policy.max_activation)
    }

    fn eligibility_at(&self, at: Timestamp) -> Option<&'a Eligibility> {
        covering(self.facts.eligibilities, at)
    }
}

fn approved_message(approvers: &[String]) -> String {
    if approvers.is_empty() {
        "approved".to_owned()
    } else {
        format!("approved by {}", approvers.join(", "))
    }
}

/// What the verified approvals add up to.
#[derive(Debug, Default, PartialEq)]
pub struct Tally {
    /// Distinct approvers whose approval counts, in the order they decided.
    pub approvers: Vec<String>,
    /// When each of `approvers` decided.
    pub approved_times: Vec<Timestamp>,
    /// The first valid denial, as a message.
    pub denial: Option<String>,
    /// Entries that do not count, with why.
    pub ignored: Vec<String>,
}

impl Tally {
    /// When the `min`-th distinct approval came in, if it has.
    pub fn threshold_reached_at(&self, min: usize) -> Option<Timestamp> {
        self.approved_times.get(min.checked_sub(1)?).copied()
    }
}

/// Counts approvals that are in time, from allowed approvers, and not the requester's own
/// (unless the policy allows self-approval). One valid denial decides. Names are compared under
/// `names` (issue 14 finding 8): `ALICE@x.org` is alice's own approval, and `Bob@x.org` and
/// `bob@x.org` are one approver.
pub fn tally(
    approvals: &[VerifiedApproval],
    rules: &ApprovalRules,
    requester: &str,
    deadline: Timestamp,
    names: super::identity::CaseInsensitive,
) -> Tally {
    use super::identity::{contains_identity, same_identity};
    let mut sorted: Vec<&VerifiedApproval> = approvals.iter().collect();
    sorted.sort_by(|a, b| {
        a.time
            .cmp(&b.time)
            .then_with(|| a.approver.cmp(&b.approver))
    });
    let mut out = Tally::default();
    for a in sorted {
        let why_not = if a.time >= deadline {
            Some("after the approval timeout")
        } else if !rules.allows(&a.approver, &a.groups, names) {
            Some("not an approver under the policy")
        } else if same_identity(&a.approver, requester, names) && !rules.allow_self_approval {
            Some("self-approval is not allowed")
        } else {
            None
        };
        if let Some(why) = why_not {
            out.ignored.push(format!("{} ({why})", a.approver));
            continue;
        }
        match a.decision {
            Vote::Deny if out.denial.is_none() => {
                let reason = a
                    .reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default();
                out.denial = Some(format!("denied by {}{reason}", a.approver));
            }
            Vote::Approve if !contains_identity(&out.approvers, &a.approver, names) => {
                out.approvers.push(a.approver.clone());
                out.approved_times.push(a.time);
            }
            _ => {}
        }
    }
    out
}

/// Maps a stored reason back to our constant, so a terminal request can carry it forward.
fn reason_constant(stored: &str) -> Option<&'static str> {
    use reasons::*;
    const ALL: &[&str] = &[
        VALID,
        AWAITING_VALIDATION,
        JUSTIFICATION_REQUIRED,
        TICKET_REQUIRED,
        MFA_REQUIRED,
        INVALID_DURATION,
        DURATION_EXCEEDS_MAXIMUM,
        INVALID_START_TIME,
        NOT_ELIGIBLE,
        PRINCIPAL_MISSING,
        UNVERIFIED_REQUESTER,
        UNVERIFIED_APPROVAL,
        ATTESTATION_KEY_MISSING,
        GROUP_NOT_FOUND,
        POLICY_NOT_FOUND,
        ROLE_NOT_MANAGED,
        INVALID_POLICY,
        APPROVAL_NOT_REQUIRED,
        WAITING_FOR_APPROVAL,
        APPROVED,
        DENIED,
        TIMED_OUT,
        SCHEDULED,
        PROVISIONING,
        ACTIVE,
        NOT_STARTED,
        EXPIRED,
        DEACTIVATED,
        REJECTED,
        ELIGIBILITY_ENDED,
        POLICY_REMOVED,
        GROUP_REMOVED,
        REVOCATION_OVERDUE,
        DIRECTORY_FAILED,
        IN_PROGRESS,
    ];
    ALL.iter().copied().find(|r| *r == stored)
}

fn status_constant(stored: &str) -> Option<ConditionStatus> {
    match stored {
        "True" => Some(ConditionStatus::True),
        "False" => Some(ConditionStatus::False),
        "Unknown" => Some(ConditionStatus::Unknown),
        _ => None,
    }
}
