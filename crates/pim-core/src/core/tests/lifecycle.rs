//! Scenario tests of the request state machine, one rule each.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::world::{World, at, eligibility, mins};
use crate::api::activation_request::{Decision as Vote, EndClippedBy, Phase};
use crate::api::conditions::{reasons, types};
use crate::core::lifecycle::Attestation;
use jiff::SignedDuration;

fn cond(w: &World, t: &str) -> (String, String) {
    w.condition(t)
}

fn is(status: &str, reason: &str) -> (String, String) {
    (status.to_owned(), reason.to_owned())
}

#[test]
fn activation_without_approval_runs_to_expiry() {
    let mut w = World::new();
    assert_eq!(w.step(0), Phase::Scheduled);
    assert_eq!(cond(&w, types::VALIDATED), is("True", reasons::VALID));
    assert_eq!(
        cond(&w, types::APPROVED),
        is("True", reasons::APPROVAL_NOT_REQUIRED)
    );
    assert_eq!(cond(&w, types::ACTIVE), is("False", reasons::PROVISIONING));
    assert_eq!(w.last().next_deadline, Some(at(60)));
    assert!(w.last().grants_access_at(at(0)));

    w.member_present = true;
    assert_eq!(w.step(1), Phase::Active);
    assert_eq!(cond(&w, types::ACTIVE), is("True", reasons::ACTIVE));
    assert_eq!(w.status.activated_at.as_ref().map(|t| t.0), Some(at(1)));
    // The window is counted from approval, not from confirmation.
    assert_eq!(w.expires_at(), Some(at(60)));
    assert_eq!(cond(&w, types::EXPIRED), is("False", reasons::IN_PROGRESS));

    w.member_present = false;
    assert_eq!(w.step(60), Phase::Expired);
    assert_eq!(cond(&w, types::EXPIRED), is("True", reasons::EXPIRED));
    assert_eq!(cond(&w, types::ACTIVE), is("False", reasons::EXPIRED));
    assert_eq!(w.status.ended_at.as_ref().map(|t| t.0), Some(at(60)));
    assert_eq!(w.last().next_deadline, None);
    let phases: Vec<_> = w.status.history.iter().map(|h| h.phase).collect();
    assert_eq!(phases, [Phase::Scheduled, Phase::Active, Phase::Expired]);
}

#[test]
fn one_of_two_approvers_is_enough_by_default() {
    let mut w = World::new().with_approval(&["bob", "carol"], 1);
    assert_eq!(w.step(0), Phase::PendingApproval);
    assert_eq!(
        cond(&w, types::APPROVED),
        is("False", reasons::WAITING_FOR_APPROVAL)
    );
    assert_eq!(w.last().next_deadline, Some(at(24 * 60)));
    assert!(!w.last().grants_access_at(at(0)));
    w.approve("carol", 5);
    assert_eq!(w.step(5), Phase::Scheduled);
    assert_eq!(w.status.approved_by, ["carol"]);
    assert_eq!(w.expires_at(), Some(at(65)));
    assert_eq!(
        w.status.matched_assignment.as_deref(),
        Some("alice-finreport")
    );
}

#[test]
fn two_of_two_needs_two_distinct_approvers() {
    let mut w = World::new().with_approval(&["bob", "carol"], 2);
    w.step(0);
    w.approve("bob", 1);
    w.approve("bob", 2);
    assert_eq!(w.step(3), Phase::PendingApproval);
    assert!(
        w.last().message.starts_with("1 of 2 approvals"),
        "{}",
        w.last().message
    );
    w.approve("carol", 4);
    assert_eq!(w.step(4), Phase::Scheduled);
    assert_eq!(w.status.approved_by, ["bob", "carol"]);
}

#[test]
fn self_approval_and_strangers_do_not_count() {
    let mut w = World::new().with_approval(&["alice", "bob"], 1);
    w.approve("alice", 1);
    w.approve("mallory", 1);
    assert_eq!(w.step(2), Phase::PendingApproval);
    let message = &w.last().message;
    assert!(
        message.contains("alice (self-approval is not allowed)"),
        "{message}"
    );
    assert!(
        message.contains("mallory (not an approver under the policy)"),
        "{message}"
    );

    let mut allowed = World::new().with_approval(&["alice"], 1);
    if let Some(rules) = allowed.policy.approval.as_mut() {
        rules.allow_self_approval = true;
    }
    allowed.approve("alice", 1);
    assert_eq!(allowed.step(2), Phase::Scheduled);
}

#[test]
fn unsigned_approvals_are_reported_and_count_for_nothing() {
    let mut w = World::new().with_approval(&["bob"], 1);
    // As the engine reports them: the approver and why the entry counts for nothing.
    w.unverified_approvals = vec!["bob (not signed by the admission webhook)".into()];
    assert_eq!(w.step(2), Phase::PendingApproval);
    assert_eq!(
        cond(&w, types::APPROVED),
        is("False", reasons::UNVERIFIED_APPROVAL)
    );
    let message = &w.last().message;
    assert!(
        message.contains("not signed by the admission webhook") && message.contains("bob"),
        "{message}"
    );
    // Once bob approves through the webhook, the signed entry counts.
    w.unverified_approvals.clear();
    w.approve("bob", 3);
    assert_eq!(w.step(4), Phase::Scheduled);
}

// Issue 17 finding 6: under approval.requireMfa an approval without the approver's MFA
// evidence counts for nothing, and says why; a denial counts without it.
#[test]
fn issue_17_finding_6_approvals_without_mfa_do_not_count_where_the_policy_requires_it() {
    let mut w = World::new().with_approval(&["bob", "carol"], 1);
    if let Some(rules) = w.policy.approval.as_mut() {
        rules.require_mfa = true;
    }
    w.approve_without_mfa("carol", 1);
    assert_eq!(w.step(2), Phase::PendingApproval);
    let message = &w.last().message;
    assert!(
        message.contains("carol (approved without MFA, which the policy requires of approvers)"),
        "{message}"
    );
    assert!(w.status.approved_by.is_empty());
    assert!(!w.last().grants_access_at(at(2)));
    w.approve("bob", 3);
    assert_eq!(w.step(3), Phase::Scheduled);
    assert_eq!(w.status.approved_by, ["bob"]);

    let mut lax = World::new().with_approval(&["carol"], 1);
    lax.approve_without_mfa("carol", 1);
    assert_eq!(lax.step(2), Phase::Scheduled);

    let mut denied = World::new().with_approval(&["carol"], 1);
    if let Some(rules) = denied.policy.approval.as_mut() {
        rules.require_mfa = true;
    }
    denied.vote("carol", Vote::Deny, 1);
    if let Some(last) = denied.approvals.last_mut() {
        last.mfa = false;
    }
    assert_eq!(denied.step(2), Phase::Denied);
}

// Issue 17 finding 5: an approval whose signed evidence lacks a claim the policy requires of
// approvers counts for nothing, and says why.
#[test]
fn issue_17_finding_5_approvals_without_the_required_claims_do_not_count() {
    use crate::api::access_policy::ClaimRequirement;
    let mut w = World::new().with_approval(&["bob", "carol"], 1);
    if let Some(rules) = w.policy.approval.as_mut() {
        rules.authentication.claims = vec![ClaimRequirement {
            key: "pim.dev/acrs".into(),
            values: vec!["c1".into()],
        }];
    }
    w.approve("carol", 1);
    assert_eq!(w.step(2), Phase::PendingApproval);
    assert!(
        w.last()
            .message
            .contains("carol (the approver's sign-in does not meet"),
        "{}",
        w.last().message
    );
    w.approve("bob", 3);
    if let Some(last) = w.approvals.last_mut() {
        last.authentication.claims = vec!["pim.dev/acrs=c1".into()];
    }
    assert_eq!(w.step(3), Phase::Scheduled);
    assert_eq!(w.status.approved_by, ["bob"]);
}

// Issue 17 finding 6: while approvals are collected, status.approvedBy holds what counted so
// far, which `kubectl pim pending` shows.
#[test]
fn approved_by_shows_the_approvals_counted_so_far() {
    let mut w = World::new().with_approval(&["bob", "carol"], 2);
    w.approve("bob", 1);
    assert_eq!(w.step(2), Phase::PendingApproval);
    assert_eq!(w.status.approved_by, ["bob"]);
}

#[test]
fn approvers_qualify_through_groups() {
    let mut w = World::new();
    w.policy.approval = Some(crate::core::policy::ApprovalRules {
        approvers: vec![crate::api::common::PrincipalRef::group("sec-leads")],
        min_approvals: 1,
        timeout: mins(60),
        allow_self_approval: false,
        require_mfa: false,
        authentication: Default::default(),
    });
    w.approve("dave", 1);
    assert_eq!(w.step(2), Phase::PendingApproval);
    if let Some(a) = w.approvals.last_mut() {
        a.groups = vec!["sec-leads".into()];
    }
    assert_eq!(w.step(3), Phase::Scheduled);
}

#[test]
fn one_denial_decides() {
    let mut w = World::new().with_approval(&["bob", "carol"], 2);
    w.approve("bob", 1);
    w.vote("carol", Vote::Deny, 2);
    assert_eq!(w.step(3), Phase::Denied);
    assert_eq!(cond(&w, types::APPROVED), is("False", reasons::DENIED));
    assert_eq!(cond(&w, types::EXPIRED), is("True", reasons::DENIED));
    assert_eq!(w.last().message, "denied by carol: ok");
}

#[test]
fn no_decision_in_time_is_a_timeout_and_late_votes_do_not_count() {
    let mut w = World::new().with_approval(&["bob"], 1);
    assert_eq!(w.step(0), Phase::PendingApproval);
    assert_eq!(w.step(24 * 60 - 1), Phase::PendingApproval);
    w.approve("bob", 24 * 60);
    assert_eq!(w.step(24 * 60), Phase::TimedOut);
    assert_eq!(cond(&w, types::APPROVED), is("False", reasons::TIMED_OUT));
    // An approval given in time but seen late still counts.
    let mut late_seen = World::new().with_approval(&["bob"], 1);
    late_seen.approve("bob", 10);
    assert_eq!(late_seen.step(25 * 60), Phase::Expired);
}

#[test]
fn scheduled_start_waits_then_activates() {
    let mut w = World::new();
    w.set_start_time(120);
    assert_eq!(w.step(0), Phase::Scheduled);
    assert_eq!(cond(&w, types::ACTIVE), is("False", reasons::SCHEDULED));
    assert_eq!(w.last().next_deadline, Some(at(120)));
    assert!(!w.last().grants_access_at(at(119)));
    assert_eq!(w.expires_at(), Some(at(180)));
    w.member_present = true;
    assert_eq!(w.step(119), Phase::Scheduled);
    assert_eq!(w.step(120), Phase::Active);
    assert_eq!(w.step(180), Phase::Expired);
}

#[test]
fn a_start_time_in_the_past_starts_at_approval() {
    let mut w = World::new();
    w.set_start_time(-600);
    w.step(0);
    assert_eq!(w.status.starts_at.as_ref().map(|t| t.0), Some(at(0)));
    assert_eq!(w.expires_at(), Some(at(60)));
}

#[test]
fn deactivation_ends_early_or_withdraws() {
    let mut w = World::new();
    w.member_present = true;
    assert_eq!(w.step(0), Phase::Active);
    w.spec.deactivate = Some(true);
    assert_eq!(w.step(10), Phase::Deactivated);
    assert_eq!(w.last().message, "ended early by the requester");
    assert_eq!(w.status.ended_at.as_ref().map(|t| t.0), Some(at(10)));

    let mut pending = World::new().with_approval(&["bob"], 1);
    pending.step(0);
    pending.spec.deactivate = Some(true);
    assert_eq!(pending.step(1), Phase::Deactivated);
    assert_eq!(
        cond(&pending, types::APPROVED),
        is("False", reasons::DEACTIVATED)
    );
    assert_eq!(
        pending.last().message,
        "withdrawn by the requester before it started"
    );
}

// Issue 14 finding 11: an end is written only once the directory confirmed the removal, and
// `endedAt` carries the confirmation time, not the planned end.
#[test]
fn the_end_waits_for_the_directory_to_confirm_the_removal() {
    let mut w = World::new();
    w.member_present = true;
    w.access_held = true;
    assert_eq!(w.step(0), Phase::Active);
    let before = w.status.clone();
    // At the end, within the grace: the removal is under way; nothing to write.
    assert_eq!(w.step(60), Phase::Active);
    assert_eq!(w.status, before, "no status write within the grace");
    assert_eq!(
        w.last().next_deadline,
        Some(at(60) + SignedDuration::from_secs(30))
    );
    // Past the grace: overdue, and still not Expired.
    assert_eq!(w.step(61), Phase::Active);
    assert_eq!(
        cond(&w, types::ACTIVE),
        is("False", reasons::REVOCATION_OVERDUE)
    );
    assert_eq!(
        cond(&w, types::EXPIRED),
        is("False", reasons::REVOCATION_PENDING)
    );
    assert!(!w.last().grants_access_at(at(61)));
    // Confirmed at 62, seen at 63.
    w.access_held = false;
    w.removal_confirmed_at = Some(at(62));
    assert_eq!(w.step(63), Phase::Expired);
    assert_eq!(cond(&w, types::EXPIRED), is("True", reasons::EXPIRED));
    assert_eq!(w.status.ended_at.as_ref().map(|t| t.0), Some(at(62)));
    assert_eq!(w.status.expires_at.as_ref().map(|t| t.0), Some(at(60)));
}

// Issue 14 finding 11: an early end waits the same way.
#[test]
fn a_deactivation_waits_for_the_removal_too() {
    let mut w = World::new();
    w.member_present = true;
    w.access_held = true;
    w.step(0);
    w.spec.deactivate = Some(true);
    assert_eq!(w.step(10), Phase::Active);
    assert_eq!(
        cond(&w, types::ACTIVE),
        is("False", reasons::REVOCATION_PENDING)
    );
    w.access_held = false;
    w.removal_confirmed_at = Some(at(11));
    assert_eq!(w.step(12), Phase::Deactivated);
    assert_eq!(w.status.ended_at.as_ref().map(|t| t.0), Some(at(11)));
}

// Issue 16: an early end the directory refuses (Entra's five minutes, a last owner) is overdue
// at once, and says why; it is not "under way" until the window's planned end.
#[test]
fn a_refused_removal_is_overdue_with_the_directory_s_reason() {
    let mut w = World::new();
    w.member_present = true;
    w.access_held = true;
    w.step(0);
    w.spec.deactivate = Some(true);
    w.removal_refused =
        Some("the directory refused it: ActiveDurationTooShort; removed at 09:05:00Z".to_owned());
    assert_eq!(w.step(1), Phase::Active);
    assert_eq!(
        cond(&w, types::ACTIVE),
        is("False", reasons::REVOCATION_OVERDUE)
    );
    assert!(
        w.last()
            .message
            .ends_with("(the directory refused it: ActiveDurationTooShort; removed at 09:05:00Z)"),
        "{}",
        w.last().message
    );
    w.access_held = false;
    w.removal_refused = None;
    w.removal_confirmed_at = Some(at(5));
    assert_eq!(w.step(6), Phase::Deactivated);
}

#[test]
fn window_is_clipped_to_the_end_of_eligibility() {
    let mut w = World::new();
    w.eligibilities = vec![eligibility("short", -60, Some(90))];
    w.step(0);
    assert_eq!(w.expires_at(), Some(at(30)));
    assert_eq!(w.status.end_clipped_by, Some(EndClippedBy::Eligibility));
    w.member_present = true;
    assert_eq!(w.step(29), Phase::Active);
    assert_eq!(w.step(30), Phase::Expired);
    assert!(
        w.last()
            .message
            .contains("clipped by the end of eligibility"),
        "{}",
        w.last().message
    );
}

#[test]
fn eligibility_removed_while_active_revokes() {
    let mut w = World::new();
    w.member_present = true;
    assert_eq!(w.step(0), Phase::Active);
    w.eligibilities.clear();
    assert_eq!(w.step(5), Phase::Revoked);
    assert_eq!(
        cond(&w, types::EXPIRED),
        is("True", reasons::ELIGIBILITY_ENDED)
    );
    // Ended only once the ledger no longer holds the access (see
    // the_end_waits_for_the_directory_to_confirm_the_removal).
    assert_eq!(
        cond(&w, types::ACTIVE),
        is("False", reasons::ELIGIBILITY_ENDED)
    );
}

#[test]
fn eligibility_shortened_while_active_pulls_the_end_in() {
    let mut w = World::new();
    w.member_present = true;
    w.step(0);
    w.eligibilities = vec![eligibility("alice-finreport", -24 * 60, Some(24 * 60 + 20))];
    assert_eq!(w.step(5), Phase::Active);
    assert_eq!(w.expires_at(), Some(at(20)));
    assert_eq!(w.step(20), Phase::Expired);
}

#[test]
fn lowering_the_policy_maximum_shortens_and_raising_never_lengthens() {
    let mut w = World::new();
    w.member_present = true;
    w.step(0);
    assert_eq!(w.expires_at(), Some(at(60)));
    w.policy.max_activation = mins(30);
    assert_eq!(w.step(10), Phase::Active);
    assert_eq!(w.expires_at(), Some(at(30)));
    assert_eq!(w.status.end_clipped_by, Some(EndClippedBy::Policy));
    w.policy.max_activation = mins(8 * 60);
    w.step(11);
    assert_eq!(w.expires_at(), Some(at(30)));
    w.policy.max_activation = mins(5);
    assert_eq!(w.step(12), Phase::Expired);
    assert_eq!(w.status.ended_at.as_ref().map(|t| t.0), Some(at(5)));
}

#[test]
fn policy_violations_reject_with_the_field_named() {
    let mut w = World::new();
    w.spec.justification = None;
    w.spec.duration = Some("9h".into());
    assert_eq!(w.step(0), Phase::Rejected);
    assert_eq!(
        cond(&w, types::VALIDATED),
        is("False", reasons::JUSTIFICATION_REQUIRED)
    );
    let message = &w.last().message;
    assert!(
        message.contains("spec.justification: the policy requires a justification"),
        "{message}"
    );
    assert!(
        message.contains("spec.duration: 9h is longer than the policy's maximum of 8h"),
        "{message}"
    );
    assert!(!w.last().grants_access_at(at(0)));

    let mut no_mfa = World::new();
    no_mfa.policy.require_mfa = true;
    no_mfa.mfa_verified = false;
    assert_eq!(no_mfa.step(0), Phase::Rejected);
    assert_eq!(
        cond(&no_mfa, types::VALIDATED),
        is("False", reasons::MFA_REQUIRED)
    );
}

// issue 14 finding 9: a request scheduled 30 days after its creation is Rejected, naming
// spec.startTime, even though its principal is eligible then: it would bank today's checks.
#[test]
fn issue_14_finding_9_a_start_30_days_ahead_is_rejected() {
    let mut w = World::new();
    w.eligibilities = vec![eligibility("alice-finreport", -24 * 60, Some(90 * 24 * 60))];
    if let Some(requester) = w.spec.requester.as_mut() {
        requester.stamped_at = Some(Time(w.created));
    }
    w.set_start_time(30 * 24 * 60);
    assert_eq!(w.step(0), Phase::Rejected);
    assert_eq!(
        cond(&w, types::VALIDATED),
        is("False", reasons::INVALID_START_TIME)
    );
    let message = &w.last().message;
    assert!(
        message.starts_with("spec.startTime: ") && message.contains("maxStartDelay is 14d"),
        "{message}"
    );
    assert!(!w.last().grants_access_at(at(30 * 24 * 60)));

    // Within the policy's cap it is scheduled as before.
    let mut soon = World::new();
    if let Some(requester) = soon.spec.requester.as_mut() {
        requester.stamped_at = Some(Time(soon.created));
    }
    soon.set_start_time(14 * 24 * 60);
    assert_eq!(soon.step(0), Phase::Scheduled);
}

#[test]
fn not_eligible_is_rejected() {
    let mut w = World::new();
    w.eligibilities = vec![eligibility("later", 60, None)];
    assert_eq!(w.step(0), Phase::Rejected);
    assert_eq!(
        cond(&w, types::VALIDATED),
        is("False", reasons::NOT_ELIGIBLE)
    );
    // A scheduled start inside a future eligibility is fine.
    let mut scheduled = World::new();
    scheduled.eligibilities = vec![eligibility("later", 60, None)];
    scheduled.set_start_time(90);
    assert_eq!(scheduled.step(0), Phase::Scheduled);
}

#[test]
fn missing_group_or_policy_rejects_new_and_revokes_granted() {
    let mut w = World::new();
    w.target = super::world::TargetState::GroupNotFound;
    assert_eq!(w.step(0), Phase::Rejected);
    assert_eq!(
        cond(&w, types::VALIDATED),
        is("False", reasons::GROUP_NOT_FOUND)
    );

    let mut granted = World::new();
    granted.member_present = true;
    granted.step(0);
    granted.target = super::world::TargetState::PolicyNotFound;
    assert_eq!(granted.step(1), Phase::Revoked);
    assert_eq!(
        cond(&granted, types::EXPIRED),
        is("True", reasons::POLICY_REMOVED)
    );
}

#[test]
fn an_invalid_policy_holds_new_requests_and_lets_granted_ones_run_out() {
    let mut w = World::new();
    w.target = super::world::TargetState::PolicyInvalid;
    assert_eq!(w.step(0), Phase::Pending);
    assert_eq!(
        cond(&w, types::VALIDATED),
        is("Unknown", reasons::INVALID_POLICY)
    );

    let mut granted = World::new();
    granted.member_present = true;
    granted.step(0);
    granted.target = super::world::TargetState::PolicyInvalid;
    // Suspended: nothing can be proven without a valid policy, so it grants nothing (the
    // stored status is no authority), and ends by time.
    assert_eq!(granted.step(30), Phase::Active);
    assert!(!granted.last().grants_access_at(at(30)));
    assert_eq!(
        cond(&granted, types::ACTIVE),
        is("False", reasons::INVALID_POLICY)
    );
    assert_eq!(granted.step(60), Phase::Expired);
}

// A missing attestation key suspends a running request; it does not end it.
#[test]
fn a_missing_key_suspends_without_ending() {
    let mut w = World::new().with_approval(&["bob"], 1);
    w.approve("bob", 1);
    w.member_present = true;
    assert_eq!(w.step(2), Phase::Active);
    w.attestation = Attestation::KeyUnavailable;
    w.approvals.clear();
    assert_eq!(w.step(10), Phase::Active);
    assert!(!w.last().grants_access_at(at(10)));
    assert_eq!(
        cond(&w, types::ACTIVE),
        is("False", reasons::ATTESTATION_KEY_MISSING)
    );
    // The key is back: proven again.
    w.attestation = Attestation::Verified;
    w.approve("bob", 1);
    assert_eq!(w.step(20), Phase::Active);
    assert!(w.last().grants_access_at(at(20)));
}

#[test]
fn unverified_requesters_are_refused_and_a_missing_key_holds() {
    let mut w = World::new();
    w.attestation = Attestation::Unverified;
    assert_eq!(w.step(0), Phase::Rejected);
    assert_eq!(
        cond(&w, types::VALIDATED),
        is("False", reasons::UNVERIFIED_REQUESTER)
    );

    let mut no_key = World::new();
    no_key.attestation = Attestation::KeyUnavailable;
    assert_eq!(no_key.step(0), Phase::Pending);
    assert_eq!(
        cond(&no_key, types::VALIDATED),
        is("Unknown", reasons::ATTESTATION_KEY_MISSING)
    );
    assert_eq!(no_key.last().next_deadline, None);
    no_key.attestation = Attestation::Verified;
    assert_eq!(no_key.step(1), Phase::Scheduled);
}

#[test]
fn terminal_phases_never_change() {
    let mut w = World::new();
    w.spec.justification = None;
    assert_eq!(w.step(0), Phase::Rejected);
    w.spec.justification = Some("now with a reason".into());
    w.member_present = true;
    for minute in [1, 60, 10_000] {
        assert_eq!(w.step(minute), Phase::Rejected);
        assert_eq!(
            cond(&w, types::VALIDATED),
            is("False", reasons::JUSTIFICATION_REQUIRED)
        );
    }
}

#[test]
fn an_unchanged_request_yields_an_identical_status() {
    let mut w = World::new().with_approval(&["bob"], 1);
    w.step(0);
    let first = w.status.clone();
    w.step(5);
    assert_eq!(
        w.status, first,
        "re-deciding without change must not touch the status"
    );
    w.approve("bob", 6);
    w.step(6);
    let approved = w
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == types::APPROVED)
        .cloned();
    let validated = w
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == types::VALIDATED)
        .cloned();
    assert_eq!(approved.map(|c| c.last_transition_time.0), Some(at(6)));
    // Validated did not change status, so its transition time stays at the first pass.
    assert_eq!(validated.map(|c| c.last_transition_time.0), Some(at(0)));
}

#[test]
fn deleting_a_live_request_ends_it_as_a_transition_of_its_own() {
    let mut w = World::new();
    assert_eq!(w.step(0), Phase::Scheduled);
    w.member_present = true;
    assert_eq!(w.step(1), Phase::Active);
    w.deleting = true;
    assert_eq!(w.step(5), Phase::Revoked);
    assert_eq!(w.last().reason, reasons::DELETED);
    assert!(!w.last().grants_access_at(at(5)));
    assert_eq!(w.status.ended_at.as_ref().map(|t| t.0), Some(at(5)));
    let last = w.status.history.last().map(|h| (h.phase, h.reason.clone()));
    assert_eq!(last, Some((Phase::Revoked, reasons::DELETED.to_owned())));

    // One never validated is rejected; one already over stays as it ended.
    let mut fresh = World::new();
    fresh.deleting = true;
    assert_eq!(fresh.step(0), Phase::Rejected);
    assert_eq!(fresh.last().reason, reasons::DELETED);
    let mut over = World::new();
    over.step(0);
    over.step(60);
    assert_eq!(over.status.phase, Some(Phase::Expired));
    over.deleting = true;
    assert_eq!(over.step(61), Phase::Expired);

    // Issue 22: a request ended as Deleted keeps that reason on every later pass (the list of
    // reasons a finished request carries forward used to miss it, and wrote Expired instead).
    let mut kept = World::new();
    kept.deleting = true;
    assert_eq!(kept.step(0), Phase::Rejected);
    assert_eq!(kept.step(3), Phase::Rejected);
    assert_eq!(kept.last().reason, reasons::DELETED);
    assert_eq!(
        cond(&kept, types::EXPIRED),
        ("True".to_owned(), reasons::DELETED.to_owned())
    );
}

// Issue 14 finding 7: a status-only patch that re-opens an Expired request with a far end grants
// nothing: the window is worked out again from the signed inputs, and the claim is reported.
#[test]
fn a_forged_status_does_not_reopen_an_expired_request() {
    let mut w = World::new();
    w.member_present = true;
    w.step(0);
    assert_eq!(w.step(60), Phase::Expired);
    w.status.phase = Some(Phase::Active);
    w.status.expires_at = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at(60
        * 24
        * 30)));
    let decision = w.decide_at(at(120));
    assert!(!decision.grants_access_at(at(120)));
    assert_eq!(decision.phase, Phase::Expired);
    assert_eq!(decision.window.map(|w| w.end), Some(at(60)));
    assert!(
        decision.not_proven.iter().any(|c| c.contains("expiresAt")),
        "{:?}",
        decision.not_proven
    );
}

// Issue 14 finding 7: a stored approval is not an approval; only signed ones count.
#[test]
fn a_forged_approval_grants_nothing() {
    let mut w = World::new().with_approval(&["bob"], 1);
    assert_eq!(w.step(0), Phase::PendingApproval);
    w.status.approved_at = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at(1)));
    w.status.approved_by = vec!["bob".into()];
    w.status.phase = Some(Phase::Active);
    let decision = w.decide_at(at(2));
    assert!(!decision.grants_access_at(at(2)));
    assert_eq!(decision.reason, reasons::APPROVAL_NOT_PROVEN);
    assert!(!decision.not_proven.is_empty());
}

// Issue 14 finding 7: a window stretched in status past what the request asked for is cut back
// while the request runs.
#[test]
fn a_stretched_window_is_cut_back_to_the_signed_one() {
    let mut w = World::new();
    w.member_present = true;
    w.step(0);
    w.status.expires_at = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at(
        600,
    )));
    assert_eq!(w.step(30), Phase::Active);
    assert_eq!(w.expires_at(), Some(at(60)));
    assert!(!w.last().not_proven.is_empty());
    // A later approval denial changes nothing once approved.
    let mut approved = World::new().with_approval(&["bob", "carol"], 1);
    approved.approve("bob", 1);
    approved.member_present = true;
    approved.step(2);
    approved.vote("carol", Vote::Deny, 3);
    assert_eq!(approved.step(4), Phase::Active);
}

// Issue 22: a duration that does not read never falls back to the policy maximum; the request
// is refused before approval and revoked after, and grants nothing either way.
#[test]
fn issue_22_an_unreadable_duration_grants_nothing() {
    let mut pending = World::new();
    pending.spec.duration = Some("forever".into());
    assert_eq!(pending.step(0), Phase::Rejected);
    assert_eq!(pending.last().reason, reasons::INVALID_DURATION);
    assert!(!pending.last().grants_access_at(at(0)));
    assert_eq!(pending.expires_at(), None);

    let mut granted = World::new();
    granted.member_present = true;
    assert_eq!(granted.step(0), Phase::Active);
    assert_eq!(granted.expires_at(), Some(at(60)));
    granted.spec.duration = Some("0m".into());
    assert_eq!(granted.step(1), Phase::Revoked);
    assert_eq!(granted.last().reason, reasons::INVALID_DURATION);
    assert!(!granted.last().grants_access_at(at(1)));
    // Not widened to the policy's 8h.
    assert!(granted.expires_at().is_none_or(|end| end <= at(60)));
}

// A duration over a maximum that shrank after the grant is cut by the policy, not refused.
#[test]
fn issue_22_a_granted_duration_over_a_shrunk_maximum_is_cut() {
    let mut w = World::new();
    w.member_present = true;
    assert_eq!(w.step(0), Phase::Active);
    w.policy.max_activation = mins(30);
    assert_eq!(w.step(1), Phase::Active);
    assert_eq!(w.expires_at(), Some(at(30)));
    assert_eq!(
        w.last().window.map(|w| w.clipped_by),
        Some(Some(EndClippedBy::Policy))
    );
}

mod extension {
    //! Extensions (`spec.extends`): the original ran from T0-30m to T0+30m under an 8h policy.

    use super::*;
    use crate::core::extension::Extended;

    fn extension() -> World {
        let mut w = World::new();
        w.spec.extends = Some("original".into());
        w.extended = Some(Extended::Running {
            start: at(-30),
            end: at(30),
            origin: at(-30),
        });
        w
    }

    #[test]
    fn runs_from_approval_to_its_duration_past_the_original_end() {
        let mut w = extension();
        w.member_present = true;
        assert_eq!(w.step(0), Phase::Active);
        assert_eq!(w.status.starts_at.as_ref().map(|t| t.0), Some(at(0)));
        // 1h past the original's end, not 1h from now.
        assert_eq!(w.expires_at(), Some(at(90)));
        // The original ran out on its own: the extension holds on.
        w.extended = Some(Extended::Running {
            start: at(-30),
            end: at(30),
            origin: at(-30),
        });
        assert_eq!(w.step(45), Phase::Active);
        w.member_present = false;
        assert_eq!(w.step(90), Phase::Expired);
    }

    #[test]
    fn stops_at_the_maximum_from_the_original_start_unless_renewal_is_allowed() {
        let mut w = extension();
        w.spec.duration = Some("8h".into());
        w.member_present = true;
        assert_eq!(w.step(0), Phase::Active);
        assert_eq!(w.expires_at(), Some(at(-30 + 8 * 60)));
        assert_eq!(w.status.end_clipped_by, Some(EndClippedBy::Policy));

        let mut renewing = extension();
        renewing.policy.allow_renewal = true;
        renewing.spec.duration = Some("8h".into());
        renewing.member_present = true;
        assert_eq!(renewing.step(0), Phase::Active);
        assert_eq!(renewing.expires_at(), Some(at(30 + 8 * 60)));
    }

    #[test]
    fn adding_nothing_is_rejected() {
        let mut w = extension();
        // The original already runs to 8h from its start.
        w.extended = Some(Extended::Running {
            start: at(-30),
            end: at(-30 + 8 * 60),
            origin: at(-30),
        });
        assert_eq!(w.step(0), Phase::Rejected);
        assert_eq!(
            cond(&w, types::VALIDATED),
            is("False", reasons::EXTENSION_BEYOND_MAXIMUM)
        );
        assert!(
            w.last().message.contains("allowRenewal"),
            "{}",
            w.last().message
        );
    }

    #[test]
    fn an_original_that_is_not_running_is_nothing_to_extend() {
        let mut w = extension();
        w.extended = Some(Extended::NotRunning(
            "is Deactivated (Deactivated: ended early by the requester)".into(),
        ));
        assert_eq!(w.step(0), Phase::Rejected);
        assert!(
            w.last()
                .message
                .contains("\"original\", which this one extends, is Deactivated"),
            "{}",
            w.last().message
        );

        // Once running, an extension ends with an original that ends early.
        let mut w = extension();
        w.member_present = true;
        assert_eq!(w.step(0), Phase::Active);
        w.extended = Some(Extended::NotRunning("is Deactivated".into()));
        w.member_present = false;
        assert_eq!(w.step(5), Phase::Revoked);
        assert_eq!(w.last().reason, reasons::EXTENDED_REQUEST_NOT_RUNNING);
    }

    #[test]
    fn must_be_approved_before_the_original_ends() {
        let mut w = extension().with_approval(&["bob"], 1);
        assert_eq!(w.step(0), Phase::PendingApproval);
        // The original's end is the deadline to look again.
        assert_eq!(w.last().next_deadline, Some(at(30)));
        assert_eq!(w.step(30), Phase::TimedOut);
        assert_eq!(
            cond(&w, types::APPROVED),
            is("False", reasons::EXTENDED_REQUEST_NOT_RUNNING)
        );
        assert!(!w.last().grants_access_at(at(30)));

        // Approved in time, the extension starts at the approval.
        let mut w = extension().with_approval(&["bob"], 1);
        w.step(0);
        w.approve("bob", 20);
        w.member_present = true;
        assert_eq!(w.step(20), Phase::Active);
        assert_eq!(w.status.starts_at.as_ref().map(|t| t.0), Some(at(20)));
        assert_eq!(w.expires_at(), Some(at(90)));
    }

    #[test]
    fn a_granted_extension_whose_original_now_ends_before_its_approval_is_revoked() {
        let mut w = extension();
        w.member_present = true;
        assert_eq!(w.step(0), Phase::Active);
        // A shorter policy moved the original's end before the extension's approval.
        w.extended = Some(Extended::Running {
            start: at(-30),
            end: at(-10),
            origin: at(-30),
        });
        w.member_present = false;
        assert_eq!(w.step(5), Phase::Revoked);
        assert_eq!(w.last().reason, reasons::EXTENDED_REQUEST_NOT_RUNNING);
        assert!(w.last().not_proven.is_empty(), "{:?}", w.last().not_proven);
    }

    #[test]
    fn a_denied_extension_grants_nothing() {
        let mut w = extension().with_approval(&["bob"], 1);
        w.step(0);
        w.vote("bob", Vote::Deny, 10);
        assert_eq!(w.step(10), Phase::Denied);
        assert!(!w.last().grants_access_at(at(10)));
    }

    #[test]
    fn the_original_expires_saying_what_extends_it() {
        let mut w = World::new();
        w.member_present = true;
        w.step(0);
        w.extended_by = Some("original-ext".into());
        assert_eq!(w.step(60), Phase::Expired);
        assert_eq!(w.last().reason, reasons::EXTENDED);
        assert!(w.last().message.contains("\"original-ext\" extends"));
        assert_eq!(w.status.ended_at.as_ref().map(|t| t.0), Some(at(60)));
    }
}
