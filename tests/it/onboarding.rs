//! Issue 20: putting an existing group under PIM. A new PimGroup adopts (lists its members and
//! removes none) until `adoptAfter`; protected members are never removed; a `protectLastMember`
//! group keeps its last member until another is in. The real controllers against the fake API
//! server, on the manual clock, with the memory directory.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Patch, PatchParams};
use pim_operator::api::PimGroup;
use pim_operator::api::activation_request::Phase;
use pim_operator::api::common::{PrincipalRef, Role};
use pim_operator::api::pim_group::{PimGroupStatus, StandingAccess};
use pim_operator::core::membership::Member;
use pim_testkit::operator::{Harness, eventually};

fn user(name: &str) -> Member {
    Member::User(name.into())
}

async fn status(h: &Harness, group: &str) -> PimGroupStatus {
    h.api::<PimGroup>()
        .get(group)
        .await
        .unwrap()
        .status
        .unwrap_or_default()
}

fn in_sync(status: &PimGroupStatus) -> Option<&Condition> {
    status.conditions.iter().find(|c| c.type_ == "InSync")
}

async fn wait_in_sync(h: &Harness, group: &str, reason: &str) -> PimGroupStatus {
    eventually(&format!("{group} InSync reason {reason}"), || async {
        in_sync(&status(h, group).await).is_some_and(|c| c.reason == reason)
    })
    .await;
    status(h, group).await
}

fn has(h: &Harness, group: &str, who: &str) -> bool {
    h.directory
        .members(&format!("{group}-id"), Role::Member)
        .contains(&user(who))
}

#[tokio::test]
async fn a_new_group_keeps_and_lists_its_members_until_adoption_ends() {
    let mut h = Harness::new("").await;
    h.policy("p", "1h", &[], |_| {}).await;
    for who in ["mallory", "breakglass"] {
        h.directory.add_by_hand("team-id", Role::Member, user(who));
    }
    let adopt_after = Time(h.now() + jiff::SignedDuration::from_hours(2));
    h.group_with("team", "p", |spec| {
        // As written in Git without standingAccess: the schema's default.
        spec.standing_access = StandingAccess::default();
        spec.adopt_after = Some(adopt_after.clone());
        spec.protected_members = vec![PrincipalRef::user("breakglass")];
    })
    .await;
    h.start();
    let adopting = wait_in_sync(&h, "team", "Adopting").await;
    assert_eq!(adopting.unexplained_members, ["user:mallory"]);
    let message = &in_sync(&adopting).unwrap().message;
    assert!(message.contains("until adoptAfter"), "{message}");
    h.advance(60);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        has(&h, "team", "mallory"),
        "nothing is removed while adopting"
    );
    // Adoption ends at adoptAfter, by time alone: mallory goes, the protected account stays.
    h.advance(61);
    eventually("mallory removed once adoption ended", || async {
        !has(&h, "team", "mallory")
    })
    .await;
    let converged = wait_in_sync(&h, "team", "Converged").await;
    assert!(converged.unexplained_members.is_empty(), "{converged:?}");
    assert!(
        has(&h, "team", "breakglass"),
        "a protected member is never removed"
    );
    h.stop().await;
}

#[tokio::test]
async fn setting_remove_ends_adoption_and_a_protected_member_who_activated_stays() {
    let mut h = Harness::new("").await;
    h.policy("p", "1h", &[], |_| {}).await;
    h.directory
        .add_by_hand("team-id", Role::Member, user("mallory"));
    h.group_with("team", "p", |spec| {
        spec.standing_access = StandingAccess::Adopt;
        spec.protected_members = vec![PrincipalRef::user("alice")];
    })
    .await;
    h.assignment("alice-team", "team", "alice").await;
    h.start();
    wait_in_sync(&h, "team", "Adopting").await;
    // alice activates; at the end her access would go, but she is protected.
    h.request("a1", "team", "alice", "30m", |_| {}).await;
    h.wait_phase("a1", Phase::Active).await;
    assert!(has(&h, "team", "alice"));
    h.advance(31);
    h.wait_phase("a1", Phase::Expired).await;
    assert!(
        has(&h, "team", "alice"),
        "protected: kept after her request ended"
    );
    // The deliberate switch.
    let patch = serde_json::json!({"spec": {"standingAccess": "Remove"}});
    h.api::<PimGroup>()
        .patch("team", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    eventually("mallory removed under Remove", || async {
        !has(&h, "team", "mallory")
    })
    .await;
    assert!(has(&h, "team", "alice"));
    h.stop().await;
}

#[tokio::test]
async fn the_last_member_stays_until_another_is_in() {
    let mut h = Harness::new("").await;
    h.policy("p", "1h", &[], |_| {}).await;
    h.group_with("team", "p", |spec| spec.protect_last_member = true)
        .await;
    h.assignment("alice-team", "team", "alice").await;
    h.assignment("bob-team", "team", "bob").await;
    h.start();
    h.request("a1", "team", "alice", "30m", |_| {}).await;
    h.wait_phase("a1", Phase::Active).await;
    h.advance(31);
    let kept = wait_in_sync(&h, "team", "LastMemberKept").await;
    assert!(
        in_sync(&kept).unwrap().message.contains("user:alice"),
        "{kept:?}"
    );
    assert!(has(&h, "team", "alice"), "the last member is kept");
    // Her request says why its access has not gone.
    eventually("a1 reports the kept member", || async {
        h.get("a1").await.status.is_some_and(|s| {
            s.conditions.iter().any(|c| {
                c.type_ == "Active"
                    && c.reason == "RevocationOverdue"
                    && c.message.contains("protectLastMember")
            })
        })
    })
    .await;
    // bob comes in: alice goes, and her request ends.
    h.request("b1", "team", "bob", "30m", |_| {}).await;
    h.wait_phase("b1", Phase::Active).await;
    eventually("alice removed once bob is in", || async {
        !has(&h, "team", "alice")
    })
    .await;
    h.wait_phase("a1", Phase::Expired).await;
    wait_in_sync(&h, "team", "Converged").await;
    // bob's end leaves him as the last member.
    h.advance(31);
    wait_in_sync(&h, "team", "LastMemberKept").await;
    assert!(has(&h, "team", "bob"));
    h.stop().await;
}
