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
use crate::core::eligibility::{AssignmentEntry, Eligibility, eligibilities_for};
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

/// An assignment created on 2026-01-01, lasting `duration`.
fn assignment(
    name: &str,
    group: &str,
    principal: PrincipalRef,
    kind: AssignmentType,
    duration: &str,
) -> EligibleAssignment {
    let mut a = EligibleAssignment::new(
        name,
        EligibleAssignmentSpec {
            group: group.into(),
            principal,
            assignment_type: kind,
            schedule: Schedule {
                duration: Some(duration.into()),
                ..Default::default()
            },
            justification: Some("rota".into()),
            ..Default::default()
        },
    );
    a.metadata.creation_timestamp = Some(Time(ts("2026-01-01T00:00:00Z")));
    a
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
    c.insert_assignment(assignment(
        "ops-g",
        "g",
        PrincipalRef::group("ops"),
        AssignmentType::Active,
        "7d",
    ));
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

/// The eligibilities found through the principal index are those a scan of every assignment
/// finds, in name order, after moves and removals too.
#[test]
fn eligibilities_are_what_a_scan_of_every_assignment_finds() {
    let mut c = catalog();
    let both = PrincipalRef {
        user: Some("alice".into()),
        group: Some("ops".into()),
    };
    for a in [
        assignment(
            "a0-ops",
            "g",
            PrincipalRef::group("ops"),
            AssignmentType::Eligible,
            "30d",
        ),
        assignment(
            "b-bob",
            "g",
            PrincipalRef::user("bob"),
            AssignmentType::Eligible,
            "30d",
        ),
        assignment(
            "c-alice-active",
            "g",
            PrincipalRef::user("alice"),
            AssignmentType::Active,
            "30d",
        ),
        assignment("d-malformed", "g", both, AssignmentType::Eligible, "30d"),
        assignment(
            "e-alice-moved",
            "g",
            PrincipalRef::user("alice"),
            AssignmentType::Eligible,
            "30d",
        ),
        assignment(
            "f-alice-removed",
            "g",
            PrincipalRef::user("alice"),
            AssignmentType::Eligible,
            "30d",
        ),
        assignment(
            "g-devs",
            "g",
            PrincipalRef::group("devs"),
            AssignmentType::Eligible,
            "30d",
        ),
    ] {
        c.insert_assignment(a);
    }
    // Moved to another group (the index keeps its old entry) and removed from the map.
    c.insert_assignment(assignment(
        "e-alice-moved",
        "elsewhere",
        PrincipalRef::user("alice"),
        AssignmentType::Eligible,
        "30d",
    ));
    c.assignments.remove("f-alice-removed");
    let now = ts("2026-01-05T10:00:00Z");
    let scan = |principal: &str, in_ops: bool| {
        let windows = c.assignment_windows("g", Role::Member, now);
        let entries = windows.iter().map(|(name, a, window)| AssignmentEntry {
            name,
            spec: &a.spec,
            window,
        });
        eligibilities_for(principal, "g", Role::Member, entries, |g| {
            in_ops && g == "ops"
        })
    };
    for (principal, in_ops) in [
        ("alice", false),
        ("alice", true),
        ("bob", true),
        ("carol", false),
    ] {
        let found = c.eligibilities(principal, "g", Role::Member, now, |g| in_ops && g == "ops");
        assert_eq!(
            found,
            scan(principal, in_ops),
            "{principal}, in ops: {in_ops}"
        );
    }
    let names = |found: Vec<Eligibility>| -> Vec<String> {
        found.into_iter().map(|e| e.assignment).collect()
    };
    assert_eq!(
        names(c.eligibilities("alice", "g", Role::Member, now, |g| g == "ops")),
        ["a0-ops", "alice-g"]
    );
    assert_eq!(
        names(c.eligibilities("bob", "g", Role::Member, now, no_groups)),
        ["b-bob"]
    );
    // The webhook's long-lived catalog removes and replaces assignments in place.
    c.remove_assignment("b-bob");
    assert!(
        c.eligibilities("bob", "g", Role::Member, now, no_groups)
            .is_empty()
    );
    c.insert_assignment(assignment(
        "alice-g",
        "g",
        PrincipalRef::user("carol"),
        AssignmentType::Eligible,
        "30d",
    ));
    assert!(names(c.eligibilities("alice", "g", Role::Member, now, no_groups)).is_empty());
    assert_eq!(
        names(c.eligibilities("carol", "g", Role::Member, now, no_groups)),
        ["alice-g"]
    );
}

mod extensions {
    //! What an extension (`spec.extends`) proves from the request it names. The policy allows 1h;
    //! `r1` (30m) was created and granted at 10:00.

    use super::*;
    use crate::api::conditions::reasons;
    use crate::core::lifecycle::Decision;

    /// Stores `r` as decided at `at`.
    fn stored(c: &mut Catalog, r: ActivationRequest, at: &str) -> ActivationRequest {
        let outcome = reconcile_request(
            c,
            &r,
            &TrustAsWritten,
            DirectoryObservation {
                member_present: true,
                ..Default::default()
            },
            &no_groups,
            ts(at),
        );
        let mut r = r;
        r.status = Some(outcome.status);
        c.insert_request(r.clone());
        r
    }

    fn extension(name: &str, of: &str, created: &str, duration: &str) -> ActivationRequest {
        let mut r = request(name, created);
        r.spec.extends = Some(of.into());
        r.spec.duration = Some(duration.into());
        r
    }

    fn decide_at(c: &Catalog, r: &ActivationRequest, at: &str) -> Decision {
        reconcile_request(
            c,
            r,
            &TrustAsWritten,
            DirectoryObservation {
                member_present: true,
                ..Default::default()
            },
            &no_groups,
            ts(at),
        )
        .decision
    }

    fn granted() -> Catalog {
        let mut c = catalog();
        stored(
            &mut c,
            request("r1", "2026-01-05T10:00:00Z"),
            "2026-01-05T10:00:00Z",
        );
        c
    }

    #[test]
    fn a_chain_counts_from_the_first_start() {
        let mut c = granted();
        let x1 = extension("x1", "r1", "2026-01-05T10:20:00Z", "20m");
        let x1 = stored(&mut c, x1, "2026-01-05T10:20:00Z");
        let status = x1.status.clone().unwrap();
        assert_eq!(status.phase, Some(Phase::Active));
        assert_eq!(status.expires_at.unwrap().0, ts("2026-01-05T10:50:00Z"));
        // Extending the extension: still 1h from 10:00 at most.
        let x2 = extension("x2", "x1", "2026-01-05T10:40:00Z", "30m");
        let d = decide_at(&c, &x2, "2026-01-05T10:40:00Z");
        assert_eq!(d.phase, Phase::Active);
        assert_eq!(d.window.unwrap().end, ts("2026-01-05T11:00:00Z"));
        // After r1 and x1 have expired on time, x2 still counts from 10:00.
        let mut c2 = c.clone();
        stored(
            &mut c2,
            c.requests["r1"].as_ref().clone(),
            "2026-01-05T10:30:00Z",
        );
        stored(&mut c2, x1.clone(), "2026-01-05T10:50:00Z");
        let x2 = stored(&mut c2, x2, "2026-01-05T10:40:00Z");
        let d = decide_at(&c2, &x2, "2026-01-05T10:55:00Z");
        assert_eq!(
            (d.phase, d.window.unwrap().end),
            (Phase::Active, ts("2026-01-05T11:00:00Z"))
        );
    }

    #[test]
    fn a_forged_finished_status_on_the_original_proves_nothing() {
        let mut c = granted();
        // Someone with status access marks r1 Expired with a late end before x1 is approved.
        let mut forged = c.requests["r1"].as_ref().clone();
        if let Some(status) = forged.status.as_mut() {
            status.phase = Some(Phase::Expired);
            status.reason = Some("Expired".into());
            status.expires_at = Some(Time(ts("2026-01-06T10:00:00Z")));
        }
        c.insert_request(forged);
        let x1 = extension("x1", "r1", "2026-01-05T10:20:00Z", "20m");
        let d = decide_at(&c, &x1, "2026-01-05T10:20:00Z");
        // The end r1's signed inputs give (10:30) and 20m past it: not the forged day.
        assert_eq!(d.window.unwrap().end, ts("2026-01-05T10:50:00Z"));

        // Marked Expired though it was never granted (no eligibility): nothing to extend.
        let mut c = catalog();
        let mut never = request("r9", "2026-01-05T10:00:00Z");
        never.spec.principal = Some("mallory".into());
        never.spec.requester = Some(Requester {
            username: "mallory".into(),
            ..Default::default()
        });
        never.status = Some(crate::api::ActivationRequestStatus {
            phase: Some(Phase::Expired),
            reason: Some("Expired".into()),
            approved_at: Some(Time(ts("2026-01-05T10:00:00Z"))),
            starts_at: Some(Time(ts("2026-01-05T10:00:00Z"))),
            expires_at: Some(Time(ts("2026-01-06T10:00:00Z"))),
            ..Default::default()
        });
        c.insert_request(never);
        let mut x = extension("x9", "r9", "2026-01-05T10:20:00Z", "20m");
        x.spec.principal = Some("mallory".into());
        let d = decide_at(&c, &x, "2026-01-05T10:20:00Z");
        assert!(d.phase.is_terminal(), "{d:?}");
        assert!(!d.grants_access_at(ts("2026-01-05T10:20:00Z")));
    }

    #[test]
    fn only_the_same_principal_group_and_role_and_an_earlier_request_count() {
        let c = granted();
        let mut bob = extension("xb", "r1", "2026-01-05T10:20:00Z", "20m");
        bob.spec.principal = Some("bob".into());
        bob.spec.requester = Some(Requester {
            username: "bob".into(),
            ..Default::default()
        });
        let d = decide_at(&c, &bob, "2026-01-05T10:20:00Z");
        assert_eq!(
            (d.phase, d.reason),
            (Phase::Rejected, reasons::EXTENDED_REQUEST_NOT_RUNNING)
        );
        assert!(
            d.message.contains("not this request's principal"),
            "{}",
            d.message
        );

        let before = extension("xe", "r1", "2026-01-05T09:00:00Z", "20m");
        let d = decide_at(&c, &before, "2026-01-05T10:20:00Z");
        assert!(
            d.message.contains("created after this extension"),
            "{}",
            d.message
        );

        let missing = extension("xm", "gone", "2026-01-05T10:20:00Z", "20m");
        let d = decide_at(&c, &missing, "2026-01-05T10:20:00Z");
        assert!(d.message.contains("does not exist"), "{}", d.message);
    }

    #[test]
    fn a_chain_with_a_link_gone_or_too_long_proves_nothing() {
        let mut c = granted();
        let x1 = stored(
            &mut c,
            extension("x1", "r1", "2026-01-05T10:20:00Z", "20m"),
            "2026-01-05T10:20:00Z",
        );
        let x2 = extension("x2", "x1", "2026-01-05T10:40:00Z", "10m");
        // r1 gone (deleted after it ended): x1 proves nothing, and x2 no new origin either.
        let mut without = c.clone();
        without.requests.remove("r1");
        let d = decide_at(&without, &x2, "2026-01-05T10:40:00Z");
        assert_eq!(d.reason, reasons::EXTENDED_REQUEST_NOT_RUNNING, "{d:?}");
        assert!(!d.grants_access_at(ts("2026-01-05T10:40:00Z")));
        let _ = x1;

        // A chain longer than MAX_CHAIN ends there.
        let mut c = granted();
        let mut previous = "r1".to_owned();
        for i in 0..=crate::core::extension::MAX_CHAIN {
            let name = format!("x{i}");
            let mut x = extension(&name, &previous, "2026-01-05T10:01:00Z", "1m");
            x.status = None;
            c.insert_request(x);
            previous = name;
        }
        let last = c.requests[&previous].as_ref().clone();
        let d = decide_at(&c, &last, "2026-01-05T10:02:00Z");
        assert!(!d.grants_access_at(ts("2026-01-05T10:02:00Z")), "{d:?}");
        assert!(d.message.contains("chain of more than"), "{}", d.message);
    }
}
