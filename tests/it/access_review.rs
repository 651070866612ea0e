//! Issue 19, access reviews: the real operator against the fake API server on a manual clock.
//! An instance opens at its start with the assignments in scope, takes decisions, and at its
//! end denies what reviewers denied: the assignments turn `Effective=False` (ReviewDenied),
//! running access ends, directory membership goes, and the review lists the manifests to
//! remove.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::operator;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams, PostParams};
use pim_operator::api::EligibleAssignment;
use pim_operator::api::access_review::{
    AccessReview, AccessReviewSpec, InstancePhase, Recurrence, ReviewDecision, ReviewSchedule,
    ReviewScope, Reviewers,
};
use pim_operator::api::activation_request::{Decision, Phase};
use pim_operator::api::common::{PrincipalRef, Role};
use pim_operator::api::eligible_assignment::{
    AssignmentPhase, AssignmentType, EligibleAssignmentSpec, Schedule,
};
use pim_operator::core::membership::Member;

use operator::{Harness, eventually};

const ALICE: &str = "alice@contoso.com";
const DAVE: &str = "dave@contoso.com";
const AUDITOR: &str = "auditor@contoso.com";

async fn review(h: &Harness) -> AccessReview {
    h.api::<AccessReview>().get("ops-weekly").await.unwrap()
}

/// A review named `ops-weekly` of PimGroup `ops` by the auditor.
fn review_of_ops(
    start: jiff::Timestamp,
    recurrence: Recurrence,
    duration: &str,
) -> AccessReviewSpec {
    AccessReviewSpec {
        scope: ReviewScope {
            groups: vec!["ops".into()],
            ..Default::default()
        },
        reviewers: Reviewers {
            principals: vec![PrincipalRef::user(AUDITOR)],
            ..Default::default()
        },
        schedule: ReviewSchedule {
            start: Time(start),
            recurrence,
            duration: duration.into(),
        },
        ..Default::default()
    }
}

async fn create_review(h: &Harness, spec: AccessReviewSpec) {
    h.api::<AccessReview>()
        .create(
            &PostParams::default(),
            &AccessReview::new("ops-weekly", spec),
        )
        .await
        .unwrap();
}

async fn assignment(h: &Harness, name: &str) -> EligibleAssignment {
    h.api::<EligibleAssignment>().get(name).await.unwrap()
}

/// A reviewer's decision, by server-side apply under a field manager of its own (a manager
/// owning one entry: applying the next decision under the same one would drop this). The
/// harness trusts entries as written, as without the webhook.
async fn decide(h: &Harness, instance: &str, assignment: &str, decision: Decision) {
    let patch = serde_json::json!({
        "apiVersion": "pim.dev/v1alpha1", "kind": "AccessReview",
        "metadata": {"name": "ops-weekly"},
        "spec": {"decisions": [ReviewDecision {
            instance: instance.into(),
            assignment: assignment.into(),
            reviewer: AUDITOR.into(),
            decision,
            reason: "left the team".into(),
            time: Some(Time(h.now())),
            ..Default::default()
        }]},
    });
    h.api::<AccessReview>()
        .patch(
            "ops-weekly",
            &PatchParams::apply(&format!("review-{assignment}")).force(),
            &Patch::Apply(&patch),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_denied_assignment_ends_its_access_and_is_listed_for_removal() {
    let mut h = Harness::new("").await;
    h.policy("ops-policy", "30m", &[], |_| {}).await;
    h.group("ops", "ops-policy").await;
    h.assignment("alice-ops", "ops", ALICE).await;
    let active = EligibleAssignment::new(
        "dave-ops",
        EligibleAssignmentSpec {
            group: "ops".into(),
            principal: PrincipalRef::user(DAVE),
            assignment_type: AssignmentType::Active,
            schedule: Schedule {
                duration: Some("90d".into()),
                ..Default::default()
            },
            justification: Some("on call".into()),
            ..Default::default()
        },
    );
    h.api::<EligibleAssignment>()
        .create(&PostParams::default(), &active)
        .await
        .unwrap();
    // Weekly from an hour after T0, two days each.
    let start = h
        .now()
        .checked_add(jiff::SignedDuration::from_hours(1))
        .unwrap();
    let instance = start.to_string();
    create_review(&h, review_of_ops(start, Recurrence::Weekly, "2d")).await;
    h.start();
    let dave = Member::User(DAVE.into());
    let alice = Member::User(ALICE.into());
    eventually("dave holds his active assignment", || async {
        h.directory.has_member("ops-id", Role::Member, &dave)
    })
    .await;
    eventually("the review waits for its start", || async {
        review(&h)
            .await
            .status
            .is_some_and(|s| s.next_start == Some(Time(start)) && s.current.is_none())
    })
    .await;

    h.advance(61);
    eventually("the instance opens with both assignments", || async {
        review(&h)
            .await
            .status
            .and_then(|s| s.current)
            .is_some_and(|c| {
                c.id == instance
                    && c.phase == Some(InstancePhase::InProgress)
                    && c.progress.as_deref() == Some("0/2")
            })
    })
    .await;
    decide(&h, &instance, "alice-ops", Decision::Deny).await;
    decide(&h, &instance, "dave-ops", Decision::Deny).await;
    eventually("the decisions show in status", || async {
        review(&h)
            .await
            .status
            .and_then(|s| s.current)
            .is_some_and(|c| c.progress.as_deref() == Some("2/2"))
    })
    .await;
    // Decided is not yet applied: both keep their access until the instance ends.
    assert_eq!(
        assignment(&h, "alice-ops").await.status.unwrap().phase,
        Some(AssignmentPhase::Effective)
    );

    // Alice activates ten minutes before the end, for thirty.
    h.advance(2 * 24 * 60 - 10);
    h.request("a1", "ops", ALICE, "30m", |_| {}).await;
    h.wait_phase("a1", Phase::Active).await;
    assert!(h.directory.has_member("ops-id", Role::Member, &alice));

    h.advance(10);
    // Her access ends with the instance, twenty minutes early.
    h.wait_phase("a1", Phase::Revoked).await;
    eventually("the review applied its denials", || async {
        review(&h).await.status.is_some_and(|s| {
            s.current
                .is_some_and(|c| c.phase == Some(InstancePhase::Completed))
                && s.removal_count == Some(2)
        })
    })
    .await;
    let status = review(&h).await.status.unwrap();
    let denied: Vec<(&str, &str)> = status
        .denied
        .iter()
        .map(|d| (d.assignment.as_str(), d.by.as_str()))
        .collect();
    assert_eq!(denied, [("alice-ops", AUDITOR), ("dave-ops", AUDITOR)]);
    for name in ["alice-ops", "dave-ops"] {
        eventually(&format!("{name} is denied"), || async {
            let status = assignment(&h, name).await.status.unwrap_or_default();
            status.phase == Some(AssignmentPhase::Denied)
                && status.conditions.iter().any(|c| {
                    c.type_ == "Effective" && c.status == "False" && c.reason == "ReviewDenied"
                })
        })
        .await;
    }
    eventually("neither holds access", || async {
        !h.directory.has_member("ops-id", Role::Member, &alice)
            && !h.directory.has_member("ops-id", Role::Member, &dave)
    })
    .await;
    let a1 = h.get("a1").await.status.unwrap();
    let expired = a1.conditions.iter().find(|c| c.type_ == "Expired").unwrap();
    assert_eq!(expired.reason, "EligibilityEnded", "{expired:?}");

    // A new request under the denied assignment grants nothing.
    h.request("a2", "ops", ALICE, "30m", |_| {}).await;
    h.wait_phase("a2", Phase::Rejected).await;
    assert!(!h.directory.has_member("ops-id", Role::Member, &alice));
    let metrics = h.metrics.encode();
    assert!(metrics.contains("pim_review_denials_total 2"), "{metrics}");
    assert!(
        metrics.contains("pim_review_instances_completed_total 1"),
        "{metrics}"
    );

    // Removing a manifest clears its entry; a restart forgets nothing.
    h.stop().await;
    h.api::<EligibleAssignment>()
        .delete("alice-ops", &Default::default())
        .await
        .unwrap();
    h.start();
    eventually("only dave is left to remove", || async {
        review(&h).await.status.is_some_and(|s| {
            s.removal_count == Some(1)
                && s.denied.first().is_some_and(|d| d.assignment == "dave-ops")
        })
    })
    .await;
    assert!(!h.directory.has_member("ops-id", Role::Member, &dave));
}

/// Reviewers hear of an instance when it starts, are reminded a day before its end while an
/// assignment is undecided, and are told the outcome, once each, through a signed webhook.
#[tokio::test]
async fn reviewers_are_told_at_start_reminded_and_told_the_outcome() {
    use operator::Receiver;
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("hmac-key");
    std::fs::write(&key, "review-key\n").unwrap();
    let config = format!(
        "notifications:\n  retry: {{maxAttempts: 100, initialBackoff: 1s, maxBackoff: 2s}}\n  channels:\n    hook: {{type: webhook, url: '{}', secretFile: {}, events: [reviewStarted, reviewReminder, reviewCompleted]}}\n",
        receiver.url("/hook"),
        key.display()
    );
    let mut h = Harness::new(&config).await;
    h.policy("ops-policy", "30m", &[], |_| {}).await;
    h.group("ops", "ops-policy").await;
    h.assignment("alice-ops", "ops", ALICE).await;
    let start = h
        .now()
        .checked_add(jiff::SignedDuration::from_hours(1))
        .unwrap();
    let spec = AccessReviewSpec {
        when_unreviewed: pim_operator::api::access_review::UnreviewedAction::Remove,
        ..review_of_ops(start, Recurrence::Once, "3d")
    };
    create_review(&h, spec).await;
    h.start();
    let events = || {
        receiver
            .hits("/hook")
            .iter()
            .map(|hit| {
                let body = hit.json();
                assert_eq!(body["recipients"], serde_json::json!([AUDITOR]), "{body}");
                body["event"].as_str().unwrap_or_default().to_owned()
            })
            .collect::<Vec<_>>()
    };
    h.advance(61);
    eventually("the reviewer hears the review started", || async {
        events() == ["reviewStarted"]
    })
    .await;
    let text = receiver.hits("/hook")[0].json()["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        text.contains("kubectl pim review") && text.contains("1 of 1 assignments undecided"),
        "{text}"
    );
    // A day before the end, nobody has decided: a reminder.
    h.advance(2 * 24 * 60);
    eventually("the reviewer is reminded", || async {
        events() == ["reviewStarted", "reviewReminder"]
    })
    .await;
    h.advance(24 * 60);
    eventually("the reviewer hears the outcome", || async {
        events() == ["reviewStarted", "reviewReminder", "reviewCompleted"]
    })
    .await;
    let outcome = receiver.hits("/hook")[2].json();
    let text = outcome["text"].as_str().unwrap_or_default();
    assert!(
        text.contains("Denied (their access has ended; remove the manifests): alice-ops"),
        "{text}"
    );
    // Nothing is told twice, across a restart.
    h.stop().await;
    h.start();
    h.advance(60);
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(events().len(), 3);
}

/// A weekly review of one day, on the operator's manual clock across a month: each instance
/// opens at its start and completes at its end, woken by the clock alone, and the completed
/// ones are kept newest first.
#[tokio::test]
async fn a_weekly_review_runs_across_a_month_of_virtual_time() {
    let mut h = Harness::new("").await;
    h.policy("ops-policy", "30m", &[], |_| {}).await;
    h.group("ops", "ops-policy").await;
    h.assignment("alice-ops", "ops", ALICE).await;
    let start = h.now();
    create_review(&h, review_of_ops(start, Recurrence::Weekly, "1d")).await;
    h.start();
    let mut ids = Vec::new();
    for week in 0..5 {
        let id = start
            .checked_add(jiff::SignedDuration::from_hours(7 * 24 * week))
            .unwrap()
            .to_string();
        if week > 0 {
            // From the end of the previous instance to an hour into this one.
            h.advance((6 * 24 + 1) * 60);
        }
        eventually(&format!("week {week} opens"), || async {
            review(&h)
                .await
                .status
                .and_then(|s| s.current)
                .is_some_and(|c| c.id == id && c.phase == Some(InstancePhase::InProgress))
        })
        .await;
        // To the instance's end (week 0 opened at its very start, the others an hour in).
        h.advance(if week == 0 { 24 * 60 } else { 23 * 60 });
        eventually(&format!("week {week} completes"), || async {
            review(&h)
                .await
                .status
                .and_then(|s| s.current)
                .is_some_and(|c| c.id == id && c.phase == Some(InstancePhase::Completed))
        })
        .await;
        ids.push(id);
    }
    let status = review(&h).await.status.unwrap();
    let completed: Vec<&str> = status.completed.iter().map(|c| c.id.as_str()).collect();
    // The latest is `current`; four earlier ones are kept, newest first.
    assert_eq!(
        completed,
        [&ids[3], &ids[2], &ids[1], &ids[0]].map(String::as_str)
    );
    assert_eq!(
        status.next_start.map(|t| t.0.to_string()),
        Some("2026-04-06T09:00:00Z".to_owned())
    );
    assert!(status.denied.is_empty(), "unreviewed is kept by default");
    let metrics = h.metrics.encode();
    assert!(
        metrics.contains("pim_review_instances_completed_total 5"),
        "{metrics}"
    );
}
