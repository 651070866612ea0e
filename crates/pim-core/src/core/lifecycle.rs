//! The ActivationRequest state machine (DESIGN §4): one pure function from the request, the
//! facts the controller gathered, and `now`, to the phase, the conditions and the next deadline.
//!
//! Rules that never bend, and where they live here:
//! - access only inside `[start, end)` of an approved, validated request, with eligibility
//!   effective at the start; the end is clipped to the eligibility and the policy maximum;
//! - a window already granted can end earlier on a later pass, never later (`shrink_window`);
//! - a terminal phase never changes.

use jiff::{SignedDuration, Timestamp};

use super::activation::{Requested, Window, plan_window, validate_request_created};
use super::eligibility::{Eligibility, covering};
use super::extension::{Extended, Extension, adds_nothing, plan_extension};
use super::policy::{ApprovalRules, HARD_MAX_ACTIVATION, Policy};
use super::violation::{primary_reason, summarize};
use super::{duration, time::add};
use crate::api::activation_request::{
    ActivationRequestSpec, ActivationRequestStatus, Decision as Vote, EndClippedBy, Phase,
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
    /// Signed, but the stamped principal is not what the requester's username maps to in the
    /// group's directory now: access would go to a name the requester may not hold.
    PrincipalMismatch,
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
    /// Whether the webhook saw (and signed) MFA evidence for the approver.
    pub mfa: bool,
    /// What the webhook saw (and signed) of the approver's sign-in.
    pub authentication: crate::api::activation_request::Authentication,
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
    /// Approval entries that count for nothing, each with why (no valid webhook signature, or an
    /// approver who is nobody in the group's directory); reported in status.
    pub unverified_approvals: &'a [String],
    /// The directory lists the principal in the group's role now.
    pub member_present: bool,
    /// The grant ledger holds an open entry for this request: the directory may still hold its
    /// access. An end (Expired, Deactivated, Revoked) is written only once it does not.
    pub access_held: bool,
    /// When the directory confirmed the removal of this request's access, if this process saw it.
    pub removal_confirmed_at: Option<Timestamp>,
    /// How long past a window's end a removal may take before it is reported overdue.
    pub revocation_grace: SignedDuration,
    /// Why the removal was not made on its last try, as a sentence: the directory refused it (a
    /// rule of the directory's, such as Entra's five minutes), or the PimGroup keeps its last
    /// member. Reported while the removal waits.
    pub removal_refused: Option<&'a str>,
    /// For an extension (`spec.extends`): what the request it names grants.
    pub extension: Option<Extension<'a>>,
    /// An approved extension that holds this request's access on past its end, by name (told
    /// in the message of the expiry).
    pub extended_by: Option<&'a str>,
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
    /// What the stored status claimed that the signed inputs do not prove (tampering with the
    /// status subresource): the decision ignored it, and the caller reports it.
    pub not_proven: Vec<String>,
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

/// The state one decision builds up. What earlier passes stored is a cache: approval and the
/// window are worked out again from signed inputs on every pass, and the stored values can only
/// make them smaller (DESIGN §5: status is never a source of authority).
struct Pass<'a> {
    request: RequestView<'a>,
    facts: &'a Facts<'a>,
    now: Timestamp,
    prior: Phase,
    out: Decision,
    validated: ConditionState,
    approved: ConditionState,
    /// The window and approval the stored status claims.
    stored_window: Option<Window>,
    stored_approved_at: Option<Timestamp>,
    /// An end waiting for the directory to confirm the removal: the phase it will be.
    ending: Option<Phase>,
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

/// The part of `planned` (from signed inputs) that `stored` (a cache) also covers: a stored
/// window can shorten what is proven, never extend it.
fn intersect(planned: Window, stored: Option<Window>) -> Window {
    let Some(stored) = stored else {
        return planned;
    };
    let start = planned.start.max(stored.start);
    let (end, clipped_by) = if stored.end < planned.end {
        (stored.end, stored.clipped_by)
    } else {
        (planned.end, planned.clipped_by)
    };
    Window {
        start,
        end: end.max(start),
        clipped_by,
    }
}

impl<'a> Pass<'a> {
    fn new(request: RequestView<'a>, facts: &'a Facts<'a>, now: Timestamp) -> Self {
        let status = request.status;
        let prior = status.phase.unwrap_or_default();
        let terminal = prior.is_terminal();
        // A finished request keeps what it recorded; a live one proves it again below.
        let out = Decision {
            phase: prior,
            reason: reasons::AWAITING_VALIDATION,
            message: String::new(),
            conditions: Vec::new(),
            approved_at: status
                .approved_at
                .as_ref()
                .map(|t| t.0)
                .filter(|_| terminal),
            approved_by: if terminal {
                status.approved_by.clone()
            } else {
                Vec::new()
            },
            window: stored_window(status).filter(|_| terminal),
            matched_assignment: status.matched_assignment.clone(),
            activated_at: status.activated_at.as_ref().map(|t| t.0),
            ended_at: status.ended_at.as_ref().map(|t| t.0),
            next_deadline: None,
            not_proven: Vec::new(),
        };
        let validated = if terminal {
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
        let approved = condition(
            types::APPROVED,
            ConditionStatus::Unknown,
            reasons::AWAITING_VALIDATION,
            "not validated yet",
        );
        Pass {
            request,
            facts,
            now,
            prior,
            out,
            validated,
            approved,
            stored_window: stored_window(status),
            stored_approved_at: status.approved_at.as_ref().map(|t| t.0),
            ending: None,
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
            Attestation::PrincipalMismatch => {
                return self.refuse(
                    reasons::PRINCIPAL_MISMATCH,
                    reasons::PRINCIPAL_MISMATCH,
                    "the stamped principal is not what the requester's Kubernetes username maps to in the group's directory under the operator's usernameMapping now (the mapping or the PimGroup's directory changed since admission); access goes only to the requester's own principal, so create a new request".to_owned(),
                );
            }
            Attestation::KeyUnavailable if self.prior == Phase::Pending => {
                return self.hold(
                    reasons::ATTESTATION_KEY_MISSING,
                    "the operator has no attestation key configured, so it cannot verify the requester; no access is granted until one is",
                );
            }
            // Nothing can be proven without the key: access is suspended (not ended) until
            // it is back, and the request keeps its phase.
            Attestation::KeyUnavailable => {
                return self.hold(
                    reasons::ATTESTATION_KEY_MISSING,
                    "the operator has no attestation key configured, so it cannot verify the signatures; access is suspended until it has one",
                );
            }
        }
        let policy = match self.facts.target {
            Target::Found(policy) => policy,
            Target::GroupNotFound => {
                return self.refuse(
                    reasons::GROUP_NOT_FOUND,
                    reasons::GROUP_REMOVED,
                    format!(
                        "PimGroup {:?} does not exist or is being deleted",
                        spec.group
                    ),
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
                if self.stored_window.is_some() {
                    // A granted window runs out by time, within what the request allows.
                    return self.follow_time(None);
                }
                return self.hold(
                    reasons::INVALID_POLICY,
                    &format!("the AccessPolicy is invalid: {problem}"),
                );
            }
        };

        // Validated on every pass: a phase past Pending in the stored status proves nothing. A
        // duration over a shortened maximum is not a reason to end: the window is capped.
        // `startTime` is bounded from the API server's creationTimestamp (issue 14, finding 9).
        let created = Some(self.request.created);
        let violations: Vec<_> =
            match validate_request_created(spec, policy, self.facts.mfa_verified, created) {
                Ok(_) => Vec::new(),
                Err(violations) => violations
                    .into_iter()
                    .filter(|v| {
                        self.prior == Phase::Pending
                            || v.reason != reasons::DURATION_EXCEEDS_MAXIMUM
                    })
                    .collect(),
            };
        if !violations.is_empty() {
            let reason = primary_reason(&violations);
            return self.refuse(reason, reason, summarize(&violations));
        }
        // Validation refused every request whose duration or start does not read; should one
        // get here, it is refused too: an unreadable duration never grants the policy maximum.
        let requested = match Requested::read(spec, policy, created) {
            Ok(requested) => requested,
            Err(unreadable) => {
                let reason = primary_reason(&unreadable);
                return self.refuse(reason, reason, summarize(&unreadable));
            }
        };
        if let Some(extension) = self.facts.extension {
            let refusal = match extension.extended {
                Extended::NotRunning(why) => Some((
                    reasons::EXTENDED_REQUEST_NOT_RUNNING,
                    format!(
                        "ActivationRequest {:?}, which this one extends, {why}",
                        extension.of
                    ),
                )),
                Extended::Running { end, origin, .. } => {
                    adds_nothing(*end, *origin, policy).map(|why| {
                        (
                            reasons::EXTENSION_BEYOND_MAXIMUM,
                            format!("nothing to extend: {why}"),
                        )
                    })
                }
            };
            if let Some((reason, message)) = refusal {
                return self.refuse(reason, reason, message);
            }
        }
        self.validated = condition(
            types::VALIDATED,
            ConditionStatus::True,
            reasons::VALID,
            "the request satisfies its policy",
        );

        if !self.collect_approval(policy, requested) {
            return;
        }
        self.follow_time(Some((policy, requested)));
    }

    /// Works out approval. Returns false when the pass ends here (waiting, denied, timed out).
    fn collect_approval(&mut self, policy: &Policy, requested: Requested) -> bool {
        let Some(eligibility) = self.eligibility_at(requested.start(self.now)) else {
            // A granted window that has run out expires rather than being revoked.
            if let Some(stored) = self.stored_window
                && self.stored_approved_at.is_some()
                && self.now >= stored.end
            {
                self.out.window = Some(stored);
                self.out.approved_at = self.stored_approved_at;
                self.expire();
                return false;
            }
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
        let reached = tally.threshold_reached_at(rules.min_approvals);
        // A denial after the deciding approval changes nothing: the request was approved.
        let denial = tally
            .denial
            .clone()
            .filter(|_| match (tally.denied_at, reached) {
                (Some(denied), Some(reached)) => denied < reached,
                _ => true,
            });
        if let Some(denial) = denial {
            self.approved = condition(
                types::APPROVED,
                ConditionStatus::False,
                reasons::DENIED,
                denial.clone(),
            );
            self.end(Phase::Denied, reasons::DENIED, denial);
            return false;
        }
        if let Some(reached) = reached {
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
        if let Some(claimed) = self.stored_approved_at {
            // The stored status says approved; the signed approvals do not (a forged status, or
            // a policy that now asks for other or more approvers: a policy change shortens).
            self.out.not_proven.push(format!(
                "status.approvedAt {claimed} is not backed by enough signed approvals"
            ));
            let message = format!(
                "the signed approvals ({} of {}) do not meet the policy's approval rule now (changed since, or the status was written by hand)",
                tally.approvers.len(),
                rules.min_approvals
            );
            self.approved = condition(
                types::APPROVED,
                ConditionStatus::False,
                reasons::APPROVAL_NOT_PROVEN,
                message.clone(),
            );
            self.end(Phase::Revoked, reasons::APPROVAL_NOT_PROVEN, message);
            return false;
        }
        if let Some(end) = self.extended_end()
            && self.now >= end
        {
            self.extension_too_late(end);
            return false;
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
        let ignored: Vec<&str> = tally
            .ignored
            .iter()
            .chain(self.facts.unverified_approvals)
            .map(String::as_str)
            .collect();
        if !ignored.is_empty() {
            message.push_str(&format!("; ignored: {}", ignored.join(", ")));
        }
        let reason = if self.facts.unverified_approvals.is_empty() {
            reasons::WAITING_FOR_APPROVAL
        } else {
            reasons::UNVERIFIED_APPROVAL
        };
        self.approved = condition(
            types::APPROVED,
            ConditionStatus::False,
            reason,
            message.clone(),
        );
        self.out.matched_assignment = Some(assignment);
        // What counted so far, for `kubectl pim pending` to show as the controller counts.
        self.out.approved_by = tally.approvers;
        self.set(Phase::PendingApproval, reason, message);
        // The eligibility, or the access an extension continues, may run out before anyone
        // decides.
        self.out.next_deadline = [eligibility_end, self.extended_end()]
            .into_iter()
            .flatten()
            .chain([deadline])
            .min();
        false
    }

    /// The end of the window an extension continues, while the request it names runs.
    fn extended_end(&self) -> Option<Timestamp> {
        match self.facts.extension?.extended {
            Extended::Running { end, .. } => Some(*end),
            Extended::NotRunning(_) => None,
        }
    }

    /// An extension approved only after the access it continues ended: nothing is left to
    /// extend, and a new request is the way back in.
    fn extension_too_late(&mut self, end: Timestamp) {
        let of = self.facts.extension.map_or("", |e| e.of);
        let message = format!(
            "the access of ActivationRequest {of:?}, which this one extends, ended at {end} before this extension was approved; create a new request"
        );
        self.approved = condition(
            types::APPROVED,
            ConditionStatus::False,
            reasons::EXTENDED_REQUEST_NOT_RUNNING,
            message.clone(),
        );
        self.out.approved_at = None;
        self.out.approved_by = Vec::new();
        self.end(
            Phase::TimedOut,
            reasons::EXTENDED_REQUEST_NOT_RUNNING,
            message,
        );
    }

    /// Plans the window from signed inputs, caps it by what is stored, then moves with time.
    /// `policy` is `None` when the policy is invalid: then a window granted before runs out as
    /// stored, within the bounds the request itself sets. Else it comes with what the request
    /// asks for, read under it.
    fn follow_time(&mut self, policy: Option<(&Policy, Requested)>) {
        let window = match policy {
            None => {
                // Nothing can be proven without a valid policy: access is suspended, and the
                // stored window (a cache) only tells when the request ends.
                if let Some(stored) = self.stored_window
                    && self.now >= stored.end
                {
                    self.out.window = Some(stored);
                    return self.expire();
                }
                return self.hold(
                    reasons::INVALID_POLICY,
                    "the AccessPolicy is invalid; access is suspended until it is fixed",
                );
            }
            Some((policy, requested)) => {
                let Some(approved_at) = self.out.approved_at else {
                    return self.hold(reasons::AWAITING_VALIDATION, "not approved yet");
                };
                // The window starts at approval, or at the requested start time if later.
                let start = requested.start(approved_at);
                // Eligibility must hold at the start, or now once started.
                let Some(eligibility) = self.eligibility_at(start.max(self.now)) else {
                    if self.now >= self.stored_window.map_or(start, |w| w.end) {
                        self.out.window = self.stored_window;
                        return self.expire();
                    }
                    self.not_eligible();
                    return;
                };
                self.out.matched_assignment = Some(eligibility.assignment.clone());
                let (planned, extension) = match self.facts.extension.map(|e| e.extended) {
                    Some(Extended::Running { start, end, origin }) => {
                        if approved_at >= *end {
                            if self.stored_window.is_some() {
                                // Granted, and the end it continued has since moved before its
                                // approval (a policy or eligibility that shrank).
                                return self.end(
                                    Phase::Revoked,
                                    reasons::EXTENDED_REQUEST_NOT_RUNNING,
                                    format!(
                                        "the access of ActivationRequest {:?}, which this one extends, now ends at {end}, before this extension was approved",
                                        self.facts.extension.map_or("", |e| e.of)
                                    ),
                                );
                            }
                            return self.extension_too_late(*end);
                        }
                        let mut planned = plan_extension(
                            approved_at,
                            (*start, *end, *origin),
                            requested.duration,
                            policy,
                        );
                        if let Some(eligibility_end) = eligibility.end
                            && eligibility_end < planned.end
                        {
                            planned.end = eligibility_end.max(planned.start);
                            planned.clipped_by = Some(EndClippedBy::Eligibility);
                        }
                        (planned, true)
                    }
                    _ => (
                        plan_window(
                            start,
                            requested.duration,
                            policy.max_activation,
                            eligibility.end,
                        ),
                        false,
                    ),
                };
                self.check_stored_window(planned.start, extension, requested);
                intersect(planned, self.stored_window)
            }
        };
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
        if let Some(by) = self.facts.extended_by {
            let message = format!(
                "ended at {}; ActivationRequest {by:?} extends the access",
                window.end
            );
            self.end(Phase::Expired, reasons::EXTENDED, message);
            if self.ending.is_none() {
                self.out.ended_at = Some(window.end.min(self.now));
            }
            return;
        }
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
        if self.ending.is_none() {
            self.out.ended_at = Some(
                self.facts
                    .removal_confirmed_at
                    .unwrap_or(window.end.min(self.now)),
            );
        }
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

    /// Stays in the current phase until something outside changes. The stored window stays in
    /// the status (when the request ends), but only a proven approval grants anything.
    fn hold(&mut self, reason: &'static str, message: &str) {
        if self.out.window.is_none() {
            self.out.window = self.stored_window;
        }
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
        if self.facts.access_held {
            return self.wait_for_removal(phase, reason, message);
        }
        if self.out.window.is_none() && phase != Phase::Rejected {
            // The finished record keeps the window it ran under; it grants nothing any more.
            self.out.window = self.stored_window;
        }
        if self.out.approved_at.is_none()
            && reason != reasons::APPROVAL_NOT_PROVEN
            && phase != Phase::Rejected
            && let Some(approved_at) = self.stored_approved_at
        {
            // An end before this pass proved the approval again: the record keeps the approval
            // it ran under, for the audit trail. It grants nothing any more.
            self.out.approved_at = Some(approved_at);
            self.out.approved_by = self.request.status.approved_by.clone();
            self.approved = condition(
                types::APPROVED,
                ConditionStatus::True,
                reasons::APPROVED,
                approved_message(&self.out.approved_by),
            );
        }
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
        self.out.ended_at = Some(self.facts.removal_confirmed_at.unwrap_or(self.now));
        self.out.next_deadline = None;
    }

    /// The request's access has ended but the ledger says the directory may still hold it: the
    /// end is written once the removal is confirmed (the group controller closes the entry and
    /// wakes us). Until then the phase stays, and the conditions say what is awaited.
    fn wait_for_removal(&mut self, phase: Phase, reason: &'static str, message: String) {
        self.ending = Some(phase);
        if self.out.window.is_none() {
            self.out.window = self.stored_window;
        }
        let end = self.out.window.map(|w| w.end);
        let overdue_at = end.map(|end| add(end, self.facts.revocation_grace));
        let expiring = phase == Phase::Expired && self.prior == Phase::Active;
        if expiring && overdue_at.is_some_and(|t| self.now < t) {
            // A normal expiry: the removal is under way. Keep the stored state as it is (no
            // status write for a few hundred milliseconds of waiting) and look again when it
            // would be overdue.
            let end = end.unwrap_or(self.now);
            self.set(
                Phase::Active,
                reasons::ACTIVE,
                format!("active until {end}"),
            );
            self.out.next_deadline = overdue_at;
            return;
        }
        let kept = if self.prior.is_terminal() || self.prior == Phase::Pending {
            Phase::Active
        } else {
            self.prior
        };
        let refused = self
            .facts
            .removal_refused
            .map(|why| format!(" ({why})"))
            .unwrap_or_default();
        self.set(
            kept,
            reasons::REVOCATION_PENDING,
            format!(
                "{phase} ({reason}): {message}; waiting for the directory to confirm the removal{refused}"
            ),
        );
        self.out.next_deadline = overdue_at.filter(|t| *t > self.now);
    }

    /// A terminal request keeps its phase; only the revocation check can still change.
    fn stay_terminal(&mut self) {
        let stored = &self.request.status.conditions;
        let find = |t: &str| stored.iter().find(|c| c.type_ == t);
        let ended = find(types::EXPIRED);
        self.out.reason = ended
            .and_then(|c| reasons::request_reason(&c.reason))
            .unwrap_or(reasons::EXPIRED);
        self.out.message = ended.map(|c| c.message.clone()).unwrap_or_default();
        let keep = |t: &'static str, fallback: ConditionState| {
            find(t)
                .and_then(|c| {
                    Some(condition(
                        t,
                        status_constant(&c.status)?,
                        reasons::request_reason(&c.reason)?,
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
        let removing = self.ending.is_some() && self.out.reason == reasons::REVOCATION_PENDING;
        let active = if removing {
            // Overdue once the planned end is a grace period behind us, or once the directory
            // refused the removal (an early end the directory will not make yet).
            let overdue = self.facts.removal_refused.is_some()
                || self
                    .out
                    .window
                    .is_none_or(|w| self.now >= add(w.end, self.facts.revocation_grace));
            condition(
                types::ACTIVE,
                ConditionStatus::False,
                if overdue {
                    reasons::REVOCATION_OVERDUE
                } else {
                    reasons::REVOCATION_PENDING
                },
                self.out.message.clone(),
            )
        } else if phase.is_terminal() {
            condition(
                types::ACTIVE,
                ConditionStatus::False,
                self.out.reason,
                self.out.message.clone(),
            )
        } else if phase == Phase::Active && !self.suspended() {
            condition(
                types::ACTIVE,
                ConditionStatus::True,
                reasons::ACTIVE,
                self.out.message.clone(),
            )
        } else {
            let reason = match phase {
                Phase::Scheduled => self.out.reason,
                _ if self.suspended() => self.out.reason,
                _ => reasons::NOT_STARTED,
            };
            condition(
                types::ACTIVE,
                ConditionStatus::False,
                reason,
                self.out.message.clone(),
            )
        };
        let expired = if removing {
            condition(
                types::EXPIRED,
                ConditionStatus::False,
                reasons::REVOCATION_PENDING,
                self.out.message.clone(),
            )
        } else if phase.is_terminal() {
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

    /// Held without proof (no key, or an invalid policy): it keeps its phase, grants nothing.
    fn suspended(&self) -> bool {
        self.out.reason == reasons::ATTESTATION_KEY_MISSING
            || self.out.reason == reasons::INVALID_POLICY
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

    /// Notes a stored window that no policy could ever have given this request: starting before
    /// the signed approval allows, or longer than the request asked for (or the hard cap).
    /// `extension`: the window continues another request's, so it may also hold the rest of
    /// that one (at most the hard maximum) before its own duration.
    fn check_stored_window(
        &mut self,
        proven_start: Timestamp,
        extension: bool,
        requested: Requested,
    ) {
        let Some(stored) = self.stored_window else {
            return;
        };
        // Unset, the duration is the policy's maximum, which may have been longer when granted.
        let asked = self
            .request
            .spec
            .duration
            .is_some()
            .then_some(requested.duration);
        let longest = asked
            .unwrap_or(HARD_MAX_ACTIVATION)
            .min(HARD_MAX_ACTIVATION);
        if stored.start < proven_start {
            self.out.not_proven.push(format!(
                "status.startsAt {} is before the start the signed inputs give ({proven_start})",
                stored.start
            ));
        }
        let from = proven_start.max(stored.start);
        let latest = add(
            if extension {
                add(from, HARD_MAX_ACTIVATION)
            } else {
                from
            },
            longest,
        );
        if stored.end > latest {
            self.out.not_proven.push(format!(
                "status.expiresAt {} is past the longest window the request allows ({latest})",
                stored.end
            ));
        }
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
    /// When that denial was made.
    pub denied_at: Option<Timestamp>,
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
        } else if a.decision == Vote::Approve && rules.require_mfa && !a.mfa {
            Some("approved without MFA, which the policy requires of approvers")
        } else if a.decision == Vote::Approve
            && !rules
                .authentication
                .unmet(&a.authentication, a.time)
                .is_empty()
        {
            Some(
                "the approver's sign-in does not meet the policy's requiredClaims or maxAuthenticationAge",
            )
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
                out.denied_at = Some(a.time);
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

fn status_constant(stored: &str) -> Option<ConditionStatus> {
    match stored {
        "True" => Some(ConditionStatus::True),
        "False" => Some(ConditionStatus::False),
        "Unknown" => Some(ConditionStatus::Unknown),
        _ => None,
    }
}
