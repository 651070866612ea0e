//! Issue 19, alerts: the policy's `alerts` as the operator raises them on the object concerned
//! (a condition), in metrics, and to the policy's admins (the `alert` notification), with the
//! real operator against the fake API server on a manual clock.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::operator;

use pim_operator::api::access_policy::{ActivationFrequency, NotificationSettings, PolicyAlerts};
use pim_operator::api::activation_request::Phase;
use pim_operator::api::{ActivationRequest, EligibleAssignment};

use operator::{Harness, Receiver, eventually};

const ALICE: &str = "alice@contoso.com";
const DAVE: &str = "dave@contoso.com";
const SECOPS: &str = "secops@contoso.com";

fn condition(
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    type_: &str,
) -> Option<(String, String)> {
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.message.clone()))
}

async fn request_condition(h: &Harness, name: &str, type_: &str) -> Option<(String, String)> {
    let request = h.api::<ActivationRequest>().get(name).await.unwrap();
    condition(&request.status.unwrap_or_default().conditions, type_)
}

async fn assignment_condition(h: &Harness, name: &str, type_: &str) -> Option<(String, String)> {
    let assignment = h.api::<EligibleAssignment>().get(name).await.unwrap();
    condition(&assignment.status.unwrap_or_default().conditions, type_)
}

/// The operator on a manual clock with a signed webhook channel that takes only `alert`, and
/// the folder holding its key.
async fn harness() -> (Receiver, tempfile::TempDir, Harness) {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("hmac-key");
    std::fs::write(&key, "alert-key\n").unwrap();
    let config = format!(
        "notifications:\n  retry: {{maxAttempts: 100, initialBackoff: 1s, maxBackoff: 2s}}\n  channels:\n    hook: {{type: webhook, url: '{}', secretFile: {}, events: [alert]}}\n",
        receiver.url("/hook"),
        key.display()
    );
    let h = Harness::new(&config).await;
    (receiver, dir, h)
}

fn admins() -> NotificationSettings {
    NotificationSettings {
        admins: vec![SECOPS.into()],
        ..Default::default()
    }
}

#[tokio::test]
async fn frequent_unapproved_and_unused_access_raise_alerts() {
    let (receiver, _dir, mut h) = harness().await;
    h.policy("critical", "30m", &[], |spec| {
        spec.notifications = Some(admins());
        spec.alerts = Some(PolicyAlerts {
            activated_too_often: Some(ActivationFrequency {
                activations: 2,
                within: "2h".into(),
            }),
            not_activated_for: Some("3d".into()),
            critical: Some(true),
        });
    })
    .await;
    h.group("ops", "critical").await;
    h.assignment("alice-ops", "ops", ALICE).await;
    h.assignment("dave-ops", "ops", DAVE).await;
    h.start();

    // Alice's first activation: critical and unapproved, not yet too often.
    h.request("a1", "ops", ALICE, "30m", |_| {}).await;
    h.wait_phase("a1", Phase::Active).await;
    eventually("a1 is activated without approval", || async {
        request_condition(&h, "a1", "ActivatedWithoutApproval")
            .await
            .is_some_and(|(status, _)| status == "True")
    })
    .await;
    assert_eq!(request_condition(&h, "a1", "ActivatedTooOften").await, None);
    h.advance(31);
    h.wait_phase("a1", Phase::Expired).await;
    // The second within two hours is too often.
    h.request("a2", "ops", ALICE, "30m", |_| {}).await;
    h.wait_phase("a2", Phase::Active).await;
    eventually("a2 is too often", || async {
        request_condition(&h, "a2", "ActivatedTooOften")
            .await
            .is_some_and(|(status, _)| status == "True")
    })
    .await;
    let (_, message) = request_condition(&h, "a2", "ActivatedTooOften")
        .await
        .unwrap();
    assert!(
        message.contains("2 times within 2h") && message.contains("AccessPolicy critical"),
        "{message}"
    );
    // The admins hear of each request's alerts once, and only through the alert rule.
    eventually("the admins hear of both", || async {
        receiver.hits("/hook").len() >= 2
    })
    .await;
    let hits = receiver.hits("/hook");
    let about: Vec<(String, String)> = hits
        .iter()
        .map(|hit| {
            let body = hit.json();
            assert_eq!(body["event"], "alert", "{body}");
            assert_eq!(body["recipients"], serde_json::json!([SECOPS]), "{body}");
            (
                body["object"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                body["text"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let a2 = about
        .iter()
        .find(|(name, _)| name == "a2")
        .expect("a2's alert");
    assert!(a2.1.contains("ActivatedTooOften"), "{about:?}");
    assert!(about.iter().any(|(name, _)| name == "a1"), "{about:?}");
    let metrics = h.metrics.encode();
    assert!(
        metrics.contains("pim_alerts_raised_total{alert=\"ActivatedTooOften\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("pim_alerts_raised_total{alert=\"ActivatedWithoutApproval\"} 2"),
        "{metrics}"
    );

    // Dave never activates: three days after his assignment took effect it is stale; Alice's,
    // activated half an hour later, is not yet.
    eventually("dave's assignment counts down", || async {
        assignment_condition(&h, "dave-ops", "Stale")
            .await
            .is_some_and(|(status, _)| status == "False")
    })
    .await;
    h.advance(3 * 24 * 60 - 20);
    eventually("dave's assignment is stale", || async {
        assignment_condition(&h, "dave-ops", "Stale")
            .await
            .is_some_and(|(status, _)| status == "True")
    })
    .await;
    let (_, message) = assignment_condition(&h, "dave-ops", "Stale").await.unwrap();
    assert!(
        message.contains("not activated since 2026-03-02T09:00:00Z"),
        "{message}"
    );
    let alice = h
        .api::<EligibleAssignment>()
        .get("alice-ops")
        .await
        .unwrap();
    let alice_status = alice.status.unwrap_or_default();
    assert!(alice_status.last_activated_at.is_some(), "{alice_status:?}");
    assert_eq!(
        condition(&alice_status.conditions, "Stale").map(|c| c.0),
        Some("False".to_owned()),
        "{alice_status:?}"
    );
    eventually("the admins hear of the stale assignment", || async {
        receiver
            .hits("/hook")
            .iter()
            .any(|hit| hit.json()["object"]["name"] == "dave-ops")
    })
    .await;
    eventually("the stale gauge counts it", || async {
        h.metrics.encode().contains("pim_stale_assignments 1")
    })
    .await;
    h.stop().await;
}

/// A revocation that stays overdue is an alert for the admins too, once, with why.
#[tokio::test]
async fn an_overdue_revocation_is_told_to_the_admins() {
    use pim_operator::directory::memory::FaultScope;

    let (receiver, _dir, mut h) = harness().await;
    h.policy("open", "30m", &[], |spec| {
        spec.notifications = Some(admins())
    })
    .await;
    h.group("ops", "open").await;
    h.assignment("alice-ops", "ops", ALICE).await;
    h.start();
    h.request("r", "ops", ALICE, "30m", |_| {}).await;
    h.wait_phase("r", Phase::Active).await;
    h.directory.fail(FaultScope::Removes);
    // Past the end and the grace (30s by default).
    h.advance(31);
    eventually("the admins hear of the overdue revocation", || async {
        receiver
            .hits("/hook")
            .iter()
            .any(|hit| hit.json()["object"]["name"] == "r")
    })
    .await;
    let hits = receiver.hits("/hook");
    assert_eq!(hits.len(), 1, "once");
    let body = hits[0].json();
    assert_eq!(body["event"], "alert", "{body}");
    assert_eq!(body["recipients"], serde_json::json!([SECOPS]), "{body}");
    assert!(
        body["text"]
            .as_str()
            .unwrap_or_default()
            .contains("RevocationOverdue"),
        "{body}"
    );
    h.directory.heal();
    h.wait_phase("r", Phase::Expired).await;
    h.stop().await;
}
