//! Issue 20: extending a running activation (`spec.extends`, `kubectl pim extend`). The
//! extension goes through the same policy; on approval the member stays in the group past the
//! original end, with no remove-and-add. The real controllers against the fake API server, on
//! the manual clock, with the memory directory.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use jiff::SignedDuration;
use kube::api::{Patch, PatchParams};
use pim_operator::api::ActivationRequest;
use pim_operator::api::activation_request::{Decision as Vote, Phase};
use pim_operator::api::common::Role;
use pim_operator::core::membership::Member;
use pim_testkit::operator::{Harness, eventually};

fn alice() -> Member {
    Member::User("alice".into())
}

/// Every directory write for alice: `true` an add, `false` a removal.
fn writes(h: &Harness) -> Vec<bool> {
    h.directory
        .writes()
        .into_iter()
        .filter(|(_, _, _, m)| *m == alice())
        .map(|(add, ..)| add)
        .collect()
}

fn has_alice(h: &Harness) -> bool {
    h.directory
        .members("team-id", Role::Member)
        .contains(&alice())
}

/// A team whose policy allows `max`, approval by `approvers`; alice is eligible, and her
/// request `a1` for 1h is Active at T0.
async fn running(max: &str, approvers: &[&str], renewal: bool) -> Harness {
    let mut h = Harness::new("").await;
    h.policy("p", max, approvers, |spec| {
        spec.activation.allow_renewal = Some(renewal);
    })
    .await;
    h.group("team", "p").await;
    h.assignment("alice-team", "team", "alice").await;
    h.start();
    h.request("a1", "team", "alice", "1h", |_| {}).await;
    if !approvers.is_empty() {
        h.wait_phase("a1", Phase::PendingApproval).await;
        h.vote("a1", "team", approvers[0], Vote::Approve, "ok")
            .await;
    }
    h.wait_phase("a1", Phase::Active).await;
    h
}

async fn extend(h: &Harness, name: &str, of: &str, by: &str) {
    h.request(name, "team", "alice", by, |spec| {
        spec.extends = Some(of.into());
        spec.justification = Some("the fix needs another hour".into());
    })
    .await;
}

/// T0 + `minutes`.
fn at(minutes: i64) -> jiff::Timestamp {
    pim_testkit::operator::T0
        .parse::<jiff::Timestamp>()
        .unwrap()
        + SignedDuration::from_mins(minutes)
}

async fn expires(h: &Harness, name: &str) -> Option<jiff::Timestamp> {
    h.get(name)
        .await
        .status
        .and_then(|s| s.expires_at)
        .map(|t| t.0)
}

#[tokio::test]
async fn an_extension_holds_access_past_the_original_end_without_a_break() {
    let mut h = running("8h", &[], false).await;
    h.advance(50);
    extend(&h, "a1-ext", "a1", "1h").await;
    h.wait_phase("a1-ext", Phase::Active).await;
    // 1h past the original end (T0+1h), not 1h from now.
    assert_eq!(expires(&h, "a1-ext").await, Some(at(120)));
    h.advance(11);
    h.wait_phase("a1", Phase::Expired).await;
    let original = h.get("a1").await.status.unwrap();
    assert_eq!(original.reason.as_deref(), Some("Extended"));
    let last = original.history.last().unwrap();
    assert!(
        last.message
            .as_deref()
            .unwrap_or_default()
            .contains("a1-ext"),
        "{last:?}"
    );
    assert!(has_alice(&h), "the extension keeps alice in");
    assert_eq!(writes(&h), [true], "one add and no removal so far");
    h.advance(60);
    h.wait_phase("a1-ext", Phase::Expired).await;
    eventually("alice removed at the extension's end", || async {
        !has_alice(&h)
    })
    .await;
    assert_eq!(writes(&h), [true, false]);
    h.stop().await;
}

#[tokio::test]
async fn an_extension_waits_for_approval_and_a_denied_one_changes_nothing() {
    let mut h = running("8h", &["bob"], false).await;
    h.advance(30);
    extend(&h, "approved", "a1", "1h").await;
    h.wait_phase("approved", Phase::PendingApproval).await;
    h.vote("approved", "team", "bob", Vote::Approve, "ok").await;
    h.wait_phase("approved", Phase::Active).await;
    assert_eq!(expires(&h, "approved").await, Some(at(120)));
    h.advance(35);
    h.wait_phase("a1", Phase::Expired).await;
    assert!(has_alice(&h));
    assert_eq!(writes(&h), [true]);

    // Another hour, denied: alice goes at the end of the one approved.
    extend(&h, "denied", "approved", "1h").await;
    h.wait_phase("denied", Phase::PendingApproval).await;
    h.vote("denied", "team", "bob", Vote::Deny, "enough for today")
        .await;
    h.wait_phase("denied", Phase::Denied).await;
    h.advance(56);
    h.wait_phase("approved", Phase::Expired).await;
    eventually("alice removed at the approved end", || async {
        !has_alice(&h)
    })
    .await;
    assert_eq!(writes(&h), [true, false]);
    h.stop().await;
}

#[tokio::test]
async fn an_extension_not_approved_before_the_original_ends_times_out() {
    let mut h = running("8h", &["bob"], false).await;
    h.advance(50);
    extend(&h, "late", "a1", "1h").await;
    h.wait_phase("late", Phase::PendingApproval).await;
    h.advance(11);
    h.wait_phase("late", Phase::TimedOut).await;
    h.wait_phase("a1", Phase::Expired).await;
    eventually("alice removed at the original end", || async {
        !has_alice(&h)
    })
    .await;
    let reason = h.get("late").await.status.unwrap().reason;
    assert_eq!(reason.as_deref(), Some("ExtendedRequestNotRunning"));
    h.stop().await;
}

#[tokio::test]
async fn beyond_the_cap_is_rejected_unless_the_policy_allows_renewal() {
    // A 1h maximum, used up by a1.
    let mut h = running("1h", &[], false).await;
    h.advance(30);
    extend(&h, "more", "a1", "1h").await;
    h.wait_phase("more", Phase::Rejected).await;
    let status = h.get("more").await.status.unwrap();
    assert_eq!(status.reason.as_deref(), Some("ExtensionBeyondMaximum"));
    let message = status.history.last().unwrap().message.clone().unwrap();
    assert!(message.contains("allowRenewal"), "{message}");
    h.advance(31);
    h.wait_phase("a1", Phase::Expired).await;
    eventually("alice removed at the cap", || async { !has_alice(&h) }).await;
    h.stop().await;

    // Renewal allowed: up to the maximum past the end, and no further.
    let mut h = running("1h", &[], true).await;
    h.advance(30);
    extend(&h, "more", "a1", "1h").await;
    h.wait_phase("more", Phase::Active).await;
    assert_eq!(expires(&h, "more").await, Some(at(120)));
    h.stop().await;
}

#[tokio::test]
async fn ending_the_original_early_ends_its_extension() {
    let mut h = running("8h", &[], false).await;
    h.advance(10);
    extend(&h, "a1-ext", "a1", "1h").await;
    h.wait_phase("a1-ext", Phase::Active).await;
    let patch = serde_json::json!({"spec": {"deactivate": true}});
    h.api::<ActivationRequest>()
        .patch("a1", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    h.wait_phase("a1", Phase::Deactivated).await;
    h.wait_phase("a1-ext", Phase::Revoked).await;
    eventually("alice removed", || async { !has_alice(&h) }).await;
    let reason = h.get("a1-ext").await.status.unwrap().reason;
    assert_eq!(reason.as_deref(), Some("ExtendedRequestNotRunning"));
    h.stop().await;
}
