//! The engine over a small catalog: one policy, one group, one eligible user.

use std::collections::BTreeSet;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::*;
use crate::api::access_policy::{AccessPolicySpec, ActivationSettings};
use crate::api::activation_request::{ActivationRequestSpec, Phase, Requester};
use crate::api::common::{PrincipalRef, Role};
use crate::api::eligible_assignment::{AssignmentType, EligibleAssignmentSpec, Schedule};
use crate::api::pim_group::{
    DirectoryGroupRef, GroupRoles, PimGroupSpec, RoleSettings, StandingAccess,
};
use crate::api::{AccessPolicy, ActivationRequest, EligibleAssignment, PimGroup};
use crate::core::membership::Member;

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn catalog() -> Catalog {
    let mut c = Catalog::default();
    let mut policy = AccessPolicy::new(
        "p",
        AccessPolicySpec {
            activation: ActivationSettings {
                max_duration: Some("1h".into()),
                ..Default::default()
            },
            ..Default::default()
        },
    );
    policy.metadata.creation_timestamp = Some(Time(ts("2026-01-01T00:00:00Z")));
    c.insert_policy(policy);
    c.insert_group(PimGroup::new(
        "g",
        PimGroupSpec {
            directory: "memory".into(),
            group: DirectoryGroupRef {
                id: Some("g-id".into()),
                ..Default::default()
            },
            roles: GroupRoles {
                member: RoleSettings { policy: "p".into() },
                owner: None,
            },
            standing_access: StandingAccess::Remove,
            rbac: None,
            ..Default::default()
        },
    ));
    let mut eligible = EligibleAssignment::new(
        "alice-g",
        EligibleAssignmentSpec {
            group: "g".into(),
            principal: PrincipalRef::user("alice"),
            schedule: Schedule {
                duration: Some("30d".into()),
                ..Default::default()
            },
            justification: Some("on call".into()),
            ..Default::default()
        },
    );
    eligible.metadata.creation_timestamp = Some(Time(ts("2026-01-01T00:00:00Z")));
    c.insert_assignment(eligible);
    c
}

fn request(name: &str, created: &str) -> ActivationRequest {
    let mut r = ActivationRequest::new(
        name,
        ActivationRequestSpec {
            group: "g".into(),
            duration: Some("30m".into()),
            justification: Some("incident 7".into()),
            requester: Some(Requester {
                username: "alice".into(),
                ..Default::default()
            }),
            principal: Some("alice".into()),
            ..Default::default()
        },
    );
    r.metadata.creation_timestamp = Some(Time(ts(created)));
    r
}

fn no_groups(_: &str) -> bool {
    false
}

#[test]
fn target_problems_are_named() {
    let c = catalog();
    assert!(matches!(
        c.target("g", Role::Member),
        ResolvedTarget::Found { .. }
    ));
    assert_eq!(
        c.target("nope", Role::Member),
        ResolvedTarget::GroupNotFound
    );
    assert_eq!(c.target("g", Role::Owner), ResolvedTarget::RoleNotManaged);
    let mut broken = c.clone();
    broken.remove_policy("p");
    assert_eq!(
        broken.target("g", Role::Member),
        ResolvedTarget::PolicyNotFound {
            policy_name: "p".into()
        }
    );
}

#[test]
fn a_request_is_granted_converged_and_confirmed() {
    let mut c = catalog();
    let now = ts("2026-01-05T10:00:00Z");
    let r = request("r1", "2026-01-05T10:00:00Z");
    let first = reconcile_request(
        &c,
        &r,
        &TrustAsWritten,
        DirectoryObservation::default(),
        &no_groups,
        now,
    );
    assert_eq!(first.transition, Some((None, Phase::Scheduled)));
    assert_eq!(first.status.matched_assignment.as_deref(), Some("alice-g"));

    let mut stored = r.clone();
    stored.status = Some(first.status.clone());
    c.insert_request(stored.clone());
    let outcome = reconcile_group(
        &c,
        "g",
        Role::Member,
        &BTreeSet::new(),
        &BTreeSet::new(),
        now,
        &Proof::stamped(&TrustAsWritten),
    );
    assert_eq!(outcome.plan.add, vec![Member::User("alice".into())]);
    assert_eq!(
        outcome.desired.next_change,
        Some(ts("2026-01-05T10:30:00Z"))
    );

    let confirmed = reconcile_request(
        &c,
        &stored,
        &TrustAsWritten,
        DirectoryObservation {
            member_present: true,
            ..Default::default()
        },
        &no_groups,
        now,
    );
    assert_eq!(
        confirmed.transition,
        Some((Some(Phase::Scheduled), Phase::Active))
    );
    assert!(confirmed.status_changed(stored.status.as_ref()));
    let mut active = stored.clone();
    active.status = Some(confirmed.status.clone());
    let again = reconcile_request(
        &c,
        &active,
        &TrustAsWritten,
        DirectoryObservation {
            member_present: true,
            ..Default::default()
        },
        &no_groups,
        now,
    );
    assert!(
        !again.status_changed(active.status.as_ref()),
        "an unchanged request must not be rewritten"
    );

    let later = ts("2026-01-05T10:30:00Z");
    c.insert_request(active);
    let actual = BTreeSet::from([Member::User("alice".into())]);
    assert_eq!(
        reconcile_group(
            &c,
            "g",
            Role::Member,
            &actual,
            &BTreeSet::new(),
            later,
            &Proof::stamped(&TrustAsWritten)
        )
        .plan
        .remove,
        vec![Member::User("alice".into())]
    );
}

#[test]
fn another_grant_keeps_the_member_and_is_not_an_overdue_revocation() {
    let mut c = catalog();
    let now = ts("2026-01-05T10:40:00Z");
    for (name, created) in [
        ("early", "2026-01-05T10:00:00Z"),
        ("late", "2026-01-05T10:20:00Z"),
    ] {
        let r = request(name, created);
        let outcome = reconcile_request(
            &c,
            &r,
            &TrustAsWritten,
            DirectoryObservation::default(),
            &no_groups,
            ts(created),
        );
        let mut stored = r.clone();
        stored.status = Some(outcome.status);
        c.insert_request(stored);
    }
    let early = c.requests["early"].as_ref().clone();
    let outcome = reconcile_request(
        &c,
        &early,
        &TrustAsWritten,
        DirectoryObservation {
            member_present: true,
            ..Default::default()
        },
        &no_groups,
        now,
    );
    assert_eq!(outcome.decision.phase, Phase::Expired);
    let active_reason = outcome
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "Active")
        .map(|c| c.reason.clone());
    assert_eq!(
        active_reason.as_deref(),
        Some("Expired"),
        "the later request explains the membership"
    );
    assert!(
        reconcile_group(
            &c,
            "g",
            Role::Member,
            &BTreeSet::new(),
            &BTreeSet::new(),
            now,
            &Proof::stamped(&TrustAsWritten)
        )
        .desired
        .contains(&Member::User("alice".into()))
    );
}

#[test]
fn active_assignments_grant_and_deleting_requests_do_not() {
    let mut c = catalog();
    let mut standing = EligibleAssignment::new(
        "ops-g",
        EligibleAssignmentSpec {
            group: "g".into(),
            principal: PrincipalRef::group("ops"),
            assignment_type: AssignmentType::Active,
            schedule: Schedule {
                duration: Some("7d".into()),
                ..Default::default()
            },
            justification: Some("rota".into()),
            ..Default::default()
        },
    );
    standing.metadata.creation_timestamp = Some(Time(ts("2026-01-01T00:00:00Z")));
    c.insert_assignment(standing);
    let now = ts("2026-01-05T10:00:00Z");
    let r = request("r1", "2026-01-05T10:00:00Z");
    let outcome = reconcile_request(
        &c,
        &r,
        &TrustAsWritten,
        DirectoryObservation::default(),
        &no_groups,
        now,
    );
    let mut deleting = r.clone();
    deleting.status = Some(outcome.status);
    deleting.metadata.deletion_timestamp = Some(Time(now));
    c.insert_request(deleting);
    let desired = reconcile_group(
        &c,
        "g",
        Role::Member,
        &BTreeSet::new(),
        &BTreeSet::new(),
        now,
        &Proof::stamped(&TrustAsWritten),
    )
    .desired;
    assert_eq!(desired.set(), BTreeSet::from([Member::Group("ops".into())]));
    let after_week = reconcile_group(
        &c,
        "g",
        Role::Member,
        &BTreeSet::new(),
        &BTreeSet::new(),
        ts("2026-01-08T00:00:00Z"),
        &Proof::stamped(&TrustAsWritten),
    )
    .desired;
    assert!(after_week.members.is_empty());
}
