//! Access reviews over a small catalog: schedules, scope, reviewers, recommendations, and a
//! recurring review run on virtual time across a month.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};

use super::*;
use crate::api::access_policy::{AccessPolicySpec, ActivationSettings, ApprovalSettings};
use crate::api::access_review::{
    AccessReview, AccessReviewSpec, InstancePhase, Recurrence, ReviewDecision, ReviewSchedule,
    ReviewScope, Reviewers, UnreviewedAction,
};
use crate::api::access_review::{DENIED_MAX, ITEMS_MAX};
use crate::api::activation_request::{
    ActivationRequest, ActivationRequestSpec, ActivationRequestStatus, Decision,
};
use crate::api::common::{PrincipalRef, Role};
use crate::api::eligible_assignment::{AssignmentType, EligibleAssignmentSpec, Schedule};
use crate::api::pim_group::{DirectoryGroupRef, GroupRoles, PimGroupSpec, RoleSettings};
use crate::api::{AccessPolicy, EligibleAssignment, PimGroup};
use crate::engine::TrustAsWritten;

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn group(name: &str, labels: &[(&str, &str)]) -> PimGroup {
    let mut g = PimGroup::new(
        name,
        PimGroupSpec {
            directory: "memory".into(),
            group: DirectoryGroupRef {
                id: Some(format!("{name}-id")),
                ..Default::default()
            },
            roles: GroupRoles {
                member: RoleSettings { policy: "p".into() },
                owner: None,
            },
            ..Default::default()
        },
    );
    g.metadata.labels = Some(
        labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    );
    g
}

fn assignment(name: &str, group: &str, user: &str, kind: AssignmentType) -> EligibleAssignment {
    let mut a = EligibleAssignment::new(
        name,
        EligibleAssignmentSpec {
            group: group.into(),
            principal: PrincipalRef::user(user),
            assignment_type: kind,
            schedule: Schedule {
                duration: Some("180d".into()),
                ..Default::default()
            },
            justification: Some("quarter close".into()),
            ..Default::default()
        },
    );
    a.metadata.creation_timestamp = Some(Time(ts("2026-01-01T00:00:00Z")));
    a.metadata.uid = Some(format!("uid-{name}"));
    a
}

/// Policy `p` (approver `boss`), groups `fin` (labelled tier=critical) and `ops`; eligible
/// alice and carol on fin, bob on ops, and an Active dave on fin.
fn catalog() -> Catalog {
    let mut c = Catalog::default();
    c.insert_policy(AccessPolicy::new(
        "p",
        AccessPolicySpec {
            activation: ActivationSettings {
                approval: Some(ApprovalSettings {
                    approvers: vec![PrincipalRef::user("boss")],
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        },
    ));
    c.insert_group(group("fin", &[("tier", "critical")]));
    c.insert_group(group("ops", &[]));
    c.insert_assignment(assignment(
        "alice-fin",
        "fin",
        "alice",
        AssignmentType::Eligible,
    ));
    c.insert_assignment(assignment(
        "carol-fin",
        "fin",
        "carol",
        AssignmentType::Eligible,
    ));
    c.insert_assignment(assignment(
        "bob-ops",
        "ops",
        "bob",
        AssignmentType::Eligible,
    ));
    c.insert_assignment(assignment(
        "dave-fin",
        "fin",
        "dave",
        AssignmentType::Active,
    ));
    c
}

fn review(recurrence: Recurrence, duration: &str, unreviewed: UnreviewedAction) -> AccessReview {
    let mut r = AccessReview::new(
        "fin-review",
        AccessReviewSpec {
            scope: ReviewScope {
                groups: vec!["fin".into()],
                ..Default::default()
            },
            reviewers: Reviewers {
                principals: vec![PrincipalRef::user("auditor"), PrincipalRef::group("sec")],
                ..Default::default()
            },
            schedule: ReviewSchedule {
                start: Time(ts("2026-03-02T09:00:00Z")),
                recurrence,
                duration: duration.into(),
            },
            when_unreviewed: unreviewed,
            ..Default::default()
        },
    );
    r.metadata.uid = Some("review-uid".into());
    r
}

fn decide(
    review: &mut AccessReview,
    instance: &str,
    assignment: &str,
    decision: Decision,
    at: &str,
) {
    review.spec.decisions.push(ReviewDecision {
        instance: instance.into(),
        assignment: assignment.into(),
        reviewer: "auditor".into(),
        decision,
        reason: "checked with the team".into(),
        time: Some(Time(ts(at))),
        assignment_uid: Some(format!("uid-{assignment}")),
        ..Default::default()
    });
}

/// Runs one pass and stores its status, as the controller does.
fn pass(catalog: &mut Catalog, review: &mut AccessReview, now: Timestamp) -> ReviewOutcome {
    let out = reconcile_review(catalog, review, &TrustAsWritten, now);
    review.status = Some(out.status.clone());
    catalog.insert_review(review.clone());
    out
}

#[test]
fn monthly_instances_keep_the_day_of_month_and_clamp_short_months() {
    let first = ts("2026-01-31T09:00:00Z");
    let starts: Vec<String> = (0..4)
        .map(|k| {
            nth_start(first, Recurrence::Monthly, k)
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        starts,
        [
            "2026-01-31T09:00:00Z",
            "2026-02-28T09:00:00Z",
            "2026-03-31T09:00:00Z",
            "2026-04-30T09:00:00Z"
        ]
    );
    assert_eq!(
        nth_start(first, Recurrence::Quarterly, 1).unwrap(),
        ts("2026-04-30T09:00:00Z")
    );
    assert_eq!(nth_start(first, Recurrence::Once, 1), None);
}

#[test]
fn timeline_finds_the_running_the_ended_and_the_next_instance() {
    let first = ts("2026-01-31T09:00:00Z");
    let week = SignedDuration::from_hours(7 * 24);
    let line = timeline(first, Recurrence::Monthly, week, ts("2026-03-10T00:00:00Z"));
    assert_eq!(line.current, None);
    assert_eq!(line.ended.unwrap().id, "2026-02-28T09:00:00Z");
    assert_eq!(line.next_start, Some(ts("2026-03-31T09:00:00Z")));
    let line = timeline(first, Recurrence::Monthly, week, ts("2026-04-01T00:00:00Z"));
    assert_eq!(line.current.unwrap().id, "2026-03-31T09:00:00Z");
    assert_eq!(line.ended.unwrap().id, "2026-02-28T09:00:00Z");
    let before = timeline(first, Recurrence::Weekly, week, ts("2026-01-01T00:00:00Z"));
    assert_eq!((before.current, before.ended), (None, None));
    assert_eq!(before.next_start, Some(first));
    let once = timeline(first, Recurrence::Once, week, ts("2027-01-01T00:00:00Z"));
    assert_eq!(once.ended.unwrap().end, ts("2026-02-07T09:00:00Z"));
    assert_eq!(once.next_start, None);
}

#[test]
fn an_instance_longer_than_its_period_is_refused_by_field() {
    let r = review(Recurrence::Weekly, "8d", UnreviewedAction::Keep);
    let problems = settings(&r.spec).unwrap_err();
    assert_eq!(problems[0].field, "spec.schedule.duration");
    assert!(
        problems[0].message.contains("overlap"),
        "{}",
        problems[0].message
    );
    let mut r = review(Recurrence::Monthly, "28d", UnreviewedAction::Keep);
    assert!(settings(&r.spec).is_ok());
    r.spec.recommend_deny_after = Some("soon".into());
    assert_eq!(
        settings(&r.spec).unwrap_err()[0].field,
        "spec.recommendDenyAfter"
    );
}

#[test]
fn scope_by_name_selector_role_and_type() {
    let c = catalog();
    let mut r = review(Recurrence::Once, "7d", UnreviewedAction::Keep);
    let names = |r: &AccessReview| -> Vec<String> {
        subjects(&c, &r.spec, ts("2026-03-03T00:00:00Z"))
            .into_iter()
            .map(|(a, _)| a.metadata.name.clone().unwrap())
            .collect()
    };
    assert_eq!(names(&r), ["alice-fin", "carol-fin", "dave-fin"]);
    r.spec.scope.assignment_types = vec![AssignmentType::Active];
    assert_eq!(names(&r), ["dave-fin"]);
    r.spec.scope = ReviewScope {
        group_selector: Some(LabelSelector {
            match_labels: Some([("tier".to_owned(), "critical".to_owned())].into()),
            ..Default::default()
        }),
        roles: vec![Role::Owner],
        ..Default::default()
    };
    assert!(names(&r).is_empty(), "fin has no owner assignments");
    r.spec.scope.roles = vec![Role::Member];
    assert_eq!(names(&r), ["alice-fin", "carol-fin", "dave-fin"]);
}

#[test]
fn reviewers_are_named_users_groups_approvers_or_the_principal_when_allowed() {
    let c = catalog();
    let mut r = review(Recurrence::Once, "7d", UnreviewedAction::Keep);
    let alice = c.assignments["alice-fin"].clone();
    let role = |r: &AccessReview, user: &str, groups: &[&str]| {
        let groups: Vec<String> = groups.iter().map(|g| (*g).to_owned()).collect();
        reviewer_role(&c, &r.spec, &alice, user, &groups)
    };
    assert_eq!(role(&r, "auditor", &[]).unwrap(), "user");
    assert_eq!(role(&r, "eve", &["sec"]).unwrap(), "group:sec");
    assert!(
        role(&r, "boss", &[]).is_err(),
        "approvers review only when asked"
    );
    r.spec.reviewers.policy_approvers = true;
    assert_eq!(role(&r, "boss", &[]).unwrap(), "approver");
    // Alice is in `sec`, but may not review herself...
    let refused = role(&r, "alice", &["sec"]).unwrap_err();
    assert!(refused.contains("self-review"), "{refused}");
    // ...unless the review says so.
    r.spec.reviewers.self_review = true;
    assert_eq!(role(&r, "alice", &[]).unwrap(), "self");
    assert!(role(&r, "mallory", &[]).is_err());
}

#[test]
fn recommendations_follow_activation_history() {
    let mut c = catalog();
    let at = ts("2026-03-03T00:00:00Z");
    let since = ts("2026-01-01T00:00:00Z");
    let month = DEFAULT_RECOMMEND_DENY_AFTER;
    let (decision, why) =
        recommendation(&c, &c.assignments["alice-fin"], since, month, at).unwrap();
    assert_eq!(decision, Decision::Deny);
    assert!(why.contains("never activated"), "{why}");
    // Carol activated a week ago.
    let mut request = ActivationRequest::new(
        "carol-1",
        ActivationRequestSpec {
            group: "fin".into(),
            ..Default::default()
        },
    );
    request.status = Some(ActivationRequestStatus {
        matched_assignment: Some("carol-fin".into()),
        activated_at: Some(Time(ts("2026-02-24T00:00:00Z"))),
        ..Default::default()
    });
    c.insert_request(request);
    let carol = c.assignments["carol-fin"].clone();
    assert_eq!(
        recommendation(&c, &carol, since, month, at).unwrap().0,
        Decision::Approve
    );
    // Only history up to the moment counts.
    assert_eq!(
        recommendation(&c, &carol, since, month, ts("2026-02-20T00:00:00Z"))
            .unwrap()
            .0,
        Decision::Deny
    );
    assert_eq!(
        recommendation(&c, &c.assignments["dave-fin"], since, month, at),
        None
    );
}

#[test]
fn unreviewed_assignments_follow_when_unreviewed() {
    let outcomes = |action| {
        let mut c = catalog();
        let mut r = review(Recurrence::Once, "7d", action);
        pass(&mut c, &mut r, ts("2026-03-02T09:00:00Z"));
        decide(
            &mut r,
            "2026-03-02T09:00:00Z",
            "carol-fin",
            Decision::Deny,
            "2026-03-03T10:00:00Z",
        );
        let out = pass(&mut c, &mut r, ts("2026-03-09T09:00:00Z"));
        let (_, denied) = out.completed.unwrap();
        denied
            .into_iter()
            .map(|d| format!("{}:{}", d.assignment, d.by))
            .collect::<Vec<_>>()
    };
    assert_eq!(outcomes(UnreviewedAction::Keep), ["carol-fin:auditor"]);
    assert_eq!(
        outcomes(UnreviewedAction::Remove),
        [
            "alice-fin:unreviewed",
            "carol-fin:auditor",
            "dave-fin:unreviewed"
        ]
    );
    // Alice never activated: the recommendation denies her; Dave is Active: none, kept.
    assert_eq!(
        outcomes(UnreviewedAction::Recommendation),
        ["alice-fin:unreviewed", "carol-fin:auditor"]
    );
}

#[test]
fn decisions_without_a_signature_or_for_a_recreated_assignment_do_not_count() {
    struct OnlySigned;
    impl Attestor for OnlySigned {
        fn requester(&self, _: &ActivationRequest) -> crate::core::lifecycle::Attestation {
            crate::core::lifecycle::Attestation::Unverified
        }
        fn approvals(
            &self,
            _: &ActivationRequest,
        ) -> Vec<crate::core::lifecycle::VerifiedApproval> {
            Vec::new()
        }
        fn mfa_verified(&self, _: &ActivationRequest) -> bool {
            false
        }
        fn review_decision(&self, _: &AccessReview, d: &ReviewDecision) -> bool {
            d.attestation.as_deref() == Some("signed")
        }
    }
    let mut c = catalog();
    let mut r = review(Recurrence::Once, "7d", UnreviewedAction::Keep);
    let id = "2026-03-02T09:00:00Z";
    decide(
        &mut r,
        id,
        "alice-fin",
        Decision::Deny,
        "2026-03-03T10:00:00Z",
    );
    decide(
        &mut r,
        id,
        "carol-fin",
        Decision::Deny,
        "2026-03-03T10:00:00Z",
    );
    r.spec.decisions[1].attestation = Some("signed".into());
    r.spec.decisions[1].assignment_uid = Some("uid-of-an-older-carol-fin".into());
    r.status = Some(reconcile_review(&c, &r, &OnlySigned, ts(id)).status);
    c.insert_review(r.clone());
    let out = reconcile_review(&c, &r, &OnlySigned, ts("2026-03-09T09:00:00Z"));
    assert_eq!(out.completed.unwrap().1, Vec::new());
    let valid = find_condition(&out.status, "Valid").unwrap();
    assert_eq!(valid.reason, "UnverifiedDecisions");
    assert!(
        valid.message.contains("auditor on alice-fin"),
        "{}",
        valid.message
    );
}

/// A weekly review of two days, run hour by hour across March: four instances open and
/// complete on their days, reviewers' decisions land in the instance they name, a denial ends
/// the assignment at the instance's end, and later instances no longer cover it.
#[test]
fn a_weekly_review_across_a_month_on_virtual_time() {
    let mut c = catalog();
    let mut r = review(Recurrence::Weekly, "2d", UnreviewedAction::Keep);
    let mut opened = Vec::new();
    let mut completed = Vec::new();
    let mut wakes = Vec::new();
    let mut now = ts("2026-03-01T00:00:00Z");
    let end = ts("2026-04-01T00:00:00Z");
    let mut next_wake: Option<Timestamp> = None;
    let mut second = None;
    while now < end {
        // The reviewer denies Carol in the second instance.
        if now == ts("2026-03-10T12:00:00Z") {
            decide(
                &mut r,
                "2026-03-09T09:00:00Z",
                "carol-fin",
                Decision::Deny,
                "2026-03-10T12:00:00Z",
            );
            decide(
                &mut r,
                "2026-03-09T09:00:00Z",
                "alice-fin",
                Decision::Approve,
                "2026-03-10T12:00:00Z",
            );
        }
        let out = pass(&mut c, &mut r, now);
        // The pass names when it next needs to run; nothing changes before then.
        if let Some(wake) = next_wake
            && now < wake
        {
            assert!(out.opened.is_none() && out.completed.is_none(), "{now}");
        }
        next_wake = out.next_change;
        wakes.extend(out.next_change);
        opened.extend(out.opened.clone());
        if let Some((id, denied)) = out.completed {
            if id == "2026-03-09T09:00:00Z" {
                second = out.status.current.clone();
            }
            completed.push((id, now, denied.len()));
        }
        now = now.checked_add(SignedDuration::from_hours(1)).unwrap();
    }
    assert_eq!(
        opened,
        [
            "2026-03-02T09:00:00Z",
            "2026-03-09T09:00:00Z",
            "2026-03-16T09:00:00Z",
            "2026-03-23T09:00:00Z",
            "2026-03-30T09:00:00Z"
        ]
    );
    let completed: Vec<(String, String, usize)> = completed
        .into_iter()
        .map(|(id, at, n)| (id, at.to_string(), n))
        .collect();
    assert_eq!(
        completed,
        [
            (
                "2026-03-02T09:00:00Z".into(),
                "2026-03-04T09:00:00Z".into(),
                0
            ),
            (
                "2026-03-09T09:00:00Z".into(),
                "2026-03-11T09:00:00Z".into(),
                1
            ),
            (
                "2026-03-16T09:00:00Z".into(),
                "2026-03-18T09:00:00Z".into(),
                0
            ),
            (
                "2026-03-23T09:00:00Z".into(),
                "2026-03-25T09:00:00Z".into(),
                0
            ),
        ]
    );
    // The reminder a day before each end is among the wake-ups.
    assert!(wakes.contains(&ts("2026-03-10T09:00:00Z")));
    let status = r.status.clone().unwrap();
    // Carol is denied from the end of the second instance, and listed for removal.
    assert_eq!(status.denied.len(), 1);
    assert_eq!(status.denied[0].assignment, "carol-fin");
    assert_eq!(status.removal_count, Some(1));
    let carol = c.assignments["carol-fin"].clone();
    let window = c
        .assignment_window(&carol, ts("2026-03-31T00:00:00Z"))
        .unwrap();
    assert_eq!(window.end, Some(ts("2026-03-11T09:00:00Z")));
    assert_eq!(window.denied.unwrap().by, "auditor");
    // The running (fifth) instance covers Alice and Dave only.
    let current = status.current.unwrap();
    assert_eq!(current.id, "2026-03-30T09:00:00Z");
    let items: Vec<&str> = current
        .items
        .iter()
        .map(|i| i.assignment.as_str())
        .collect();
    assert_eq!(items, ["alice-fin", "dave-fin"]);
    assert_eq!(current.progress.as_deref(), Some("0/2"));
    assert_eq!(status.completed.len(), 4);
    assert_eq!(status.completed[0].id, "2026-03-23T09:00:00Z");
    // Only the newest completed instance keeps its items in status.
    assert_eq!(status.completed[0].items.len(), 2);
    assert!(status.completed[1..].iter().all(|c| c.items.is_empty()));
    // The second instance recorded who decided, when and why, at its end.
    let second = second.unwrap();
    assert_eq!(second.phase, Some(InstancePhase::Completed));
    let alice = second
        .items
        .iter()
        .find(|i| i.assignment == "alice-fin")
        .unwrap();
    assert_eq!(alice.decided_by.as_deref(), Some("auditor"));
    assert_eq!(alice.reason.as_deref(), Some("checked with the team"));
    assert_eq!(alice.decided_at, Some(Time(ts("2026-03-10T12:00:00Z"))));
    // Removing the manifest clears the entry.
    c.remove_assignment("carol-fin");
    let out = pass(&mut c, &mut r, end);
    assert!(out.status.denied.is_empty());
    assert_eq!(out.status.removal_count, Some(0));
}

#[test]
fn an_instance_the_operator_never_opened_denies_nothing() {
    let mut c = catalog();
    let mut r = review(Recurrence::Once, "7d", UnreviewedAction::Remove);
    let out = pass(&mut c, &mut r, ts("2026-04-01T00:00:00Z"));
    assert!(out.completed.is_none() && out.opened.is_none());
    assert!(out.status.denied.is_empty());
}

#[test]
fn an_assignment_nobody_was_shown_is_not_denied_for_want_of_a_decision() {
    let mut c = catalog();
    let mut r = review(Recurrence::Once, "7d", UnreviewedAction::Remove);
    pass(&mut c, &mut r, ts("2026-03-02T09:00:00Z"));
    // Erin's assignment appears after the last pass, a minute before the end.
    c.insert_assignment(assignment(
        "erin-fin",
        "fin",
        "erin",
        AssignmentType::Eligible,
    ));
    let out = pass(&mut c, &mut r, ts("2026-03-09T09:00:00Z"));
    let denied: Vec<String> = out
        .completed
        .unwrap()
        .1
        .into_iter()
        .map(|d| d.assignment)
        .collect();
    assert_eq!(denied, ["alice-fin", "carol-fin", "dave-fin"]);
}

#[test]
fn a_scope_larger_than_an_instance_reviews_the_first_and_says_so() {
    let mut c = catalog();
    for i in 0..ITEMS_MAX {
        c.insert_assignment(assignment(
            &format!("x{i:04}-fin"),
            "fin",
            &format!("user{i}"),
            AssignmentType::Eligible,
        ));
    }
    let mut r = review(Recurrence::Once, "7d", UnreviewedAction::Keep);
    let out = pass(&mut c, &mut r, ts("2026-03-02T09:00:00Z"));
    let current = out.status.current.clone().unwrap();
    assert_eq!(current.items.len(), ITEMS_MAX);
    assert_eq!(current.items[0].assignment, "alice-fin");
    let valid = find_condition(&out.status, "Valid").unwrap();
    assert_eq!(valid.reason, "ScopeTooLarge");
    assert!(
        valid.message.starts_with("503 assignments are in scope"),
        "{}",
        valid.message
    );
    // Denials still standing take room: the status can always record an instance's end.
    let mut full = r.clone();
    full.status.as_mut().unwrap().denied = (0..DENIED_MAX - 10)
        .map(|i| crate::api::access_review::DeniedAssignment {
            assignment: format!("gone-{i}"),
            uid: None,
            instance: "x".into(),
            at: Time(ts("2026-01-01T00:00:00Z")),
            by: UNREVIEWED.into(),
            reason: None,
        })
        .collect();
    assert_eq!(room_for_items(&full), 10);
}

#[test]
fn late_decisions_and_reviewers_taken_off_do_not_count() {
    let id = "2026-03-02T09:00:00Z";
    let outcome = |edit: &dyn Fn(&mut AccessReview)| {
        let mut c = catalog();
        let mut r = review(Recurrence::Once, "7d", UnreviewedAction::Keep);
        pass(&mut c, &mut r, ts(id));
        decide(
            &mut r,
            id,
            "carol-fin",
            Decision::Deny,
            "2026-03-03T10:00:00Z",
        );
        r.spec.decisions[0].reviewer_as = Some("user".into());
        edit(&mut r);
        pass(&mut c, &mut r, ts("2026-03-09T10:00:00Z"))
            .completed
            .unwrap()
            .1
            .len()
    };
    assert_eq!(outcome(&|_| {}), 1, "counted as made");
    // Stamped at or after the end (a webhook clock running late): too late.
    assert_eq!(
        outcome(&|r| r.spec.decisions[0].time = Some(Time(ts("2026-03-09T09:00:00Z")))),
        0
    );
    // The review no longer names the auditor (another user instead): the right is gone.
    assert_eq!(
        outcome(&|r| r.spec.reviewers.principals = vec![PrincipalRef::user("bob")]),
        0
    );
}

#[test]
fn a_schedule_changed_mid_instance_lets_the_running_one_finish() {
    let mut c = catalog();
    let mut r = review(Recurrence::Weekly, "2d", UnreviewedAction::Keep);
    pass(&mut c, &mut r, ts("2026-03-02T10:00:00Z"));
    // Moved by a day while the first instance runs.
    r.spec.schedule.start = Time(ts("2026-03-03T09:00:00Z"));
    let out = pass(&mut c, &mut r, ts("2026-03-03T10:00:00Z"));
    assert_eq!(out.opened, None);
    assert_eq!(
        out.status.current.as_ref().unwrap().id,
        "2026-03-02T09:00:00Z"
    );
    assert_eq!(
        out.next_change,
        Some(ts("2026-03-04T09:00:00Z")),
        "its own end"
    );
    let out = pass(&mut c, &mut r, ts("2026-03-04T09:00:00Z"));
    assert_eq!(out.completed.unwrap().0, "2026-03-02T09:00:00Z");
    // Then the new schedule's next instance.
    let out = pass(&mut c, &mut r, ts("2026-03-10T09:00:00Z"));
    assert_eq!(out.opened.as_deref(), Some("2026-03-10T09:00:00Z"));
    assert!(recorded_complete(&r, "2026-03-02T09:00:00Z"));
    assert!(
        recorded_complete(&r, "2026-02-23T09:00:00Z"),
        "older than any on record"
    );
    assert!(!recorded_complete(&r, "2026-03-10T09:00:00Z"));
}
