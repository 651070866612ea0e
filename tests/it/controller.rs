//! The real kube client and the real controllers against the in-process fake API server, on a
//! manual clock, with the memory directory. Every scenario checks both the directory and the
//! status at every step.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::{eventually, eventually_within};

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use pim_operator::api::access_policy::{AccessPolicySpec, ActivationSettings, ApprovalSettings};
use pim_operator::api::activation_request::{
    ActivationRequestSpec, Approval, Decision as Vote, FINALIZER, Phase,
};
use pim_operator::api::common::{PrincipalRef, Role};
use pim_operator::api::eligible_assignment::{EligibleAssignmentSpec, Schedule};
use pim_operator::api::pim_group::{
    DirectoryGroupRef, GroupRoles, PimGroupSpec, RoleSettings, StandingAccess,
};
use pim_operator::api::{AccessPolicy, ActivationRequest, EligibleAssignment, PimGroup};
use pim_operator::clock::{Clock, ManualClock};
use pim_operator::config::Config;
use pim_operator::controller::{self, Dependencies, Health};
use pim_operator::core::membership::Member;
use pim_operator::directory::memory::{FaultScope, MemoryDirectory};
use pim_operator::directory::{Directories, Directory};
use pim_operator::engine::{Attestor, SignedAttestor, TrustAsWritten};
use pim_operator::metrics::Metrics;
use pim_testkit::fake_apiserver::FakeApiServer;
use pim_testkit::operator::admitted_request;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const T0: &str = "2026-03-02T09:00:00Z";
const WAIT: Duration = Duration::from_secs(20);

struct Operator {
    stop: CancellationToken,
    task: JoinHandle<()>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

struct Harness {
    server: FakeApiServer,
    client: Client,
    clock: Arc<ManualClock>,
    directory: Arc<MemoryDirectory>,
    operator: Option<Operator>,
    /// What the controller trusts; the webhook's signatures in `bypassing_the_webhook_grants_nothing`.
    attestor: Arc<dyn Attestor>,
    /// More directory connections than `memory`, by name, for the next launch.
    extra_directories: std::sync::Mutex<Vec<(String, Arc<MemoryDirectory>)>>,
}

fn settings(leader_election: bool) -> pim_operator::config::Settings {
    let text = format!(
        "resyncInterval: 1h\nconcurrency: 4\nleaderElection: {{enabled: {leader_election}, leaseDuration: 3s}}\nnamespace: pim-system\n"
    );
    Config::parse(&text, "test").unwrap()
}

impl Harness {
    async fn new() -> Harness {
        let server = FakeApiServer::start().await.unwrap();
        let clock = Arc::new(ManualClock::new(T0.parse().unwrap()));
        server.set_clock(clock.clone());
        let client = server.client();
        let h = Harness {
            server,
            client,
            clock,
            directory: Arc::new(MemoryDirectory::new()),
            operator: None,
            attestor: Arc::new(TrustAsWritten),
            extra_directories: std::sync::Mutex::default(),
        };
        h.seed().await;
        h
    }

    fn launch(&self, leader_election: bool) -> Operator {
        let metrics = Arc::new(Metrics::new());
        let health = Arc::new(Health::default());
        let mut directories = Directories::default();
        let memory: Arc<dyn Directory> = self.directory.clone();
        // As `pim-operator run` does: every backend records its calls.
        directories.insert(
            "memory",
            pim_operator::directory::instrumented::Instrumented::wrap(memory, metrics.clone()),
        );
        for (name, extra) in self.extra_directories.lock().unwrap().iter() {
            let extra: Arc<dyn Directory> = extra.clone();
            directories.insert(name.clone(), extra);
        }
        let deps = Dependencies {
            client: self.client.clone(),
            settings: settings(leader_election),
            directories,
            attestor: self.attestor.clone(),
            clock: self.clock.clone(),
            metrics: metrics.clone(),
            health: health.clone(),
        };
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            controller::run(deps, token).await.unwrap();
        });
        Operator {
            stop,
            task,
            metrics,
            health,
        }
    }

    async fn start(&mut self) {
        self.operator = Some(self.launch(false));
    }

    async fn stop(&mut self) {
        if let Some(op) = self.operator.take() {
            op.stop.cancel();
            let _ = tokio::time::timeout(WAIT, op.task).await;
        }
    }

    fn metrics(&self) -> String {
        self.operator
            .as_ref()
            .map(|o| o.metrics.encode())
            .unwrap_or_default()
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    fn advance(&self, minutes: i64) {
        self.clock.advance(SignedDuration::from_mins(minutes));
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<DynamicType = (), Scope = kube::core::ClusterResourceScope>,
    {
        Api::all(self.client.clone())
    }

    /// Policies `p` (1h, no approval) and `p-approval` (1h, bob or carol, N of M set per test);
    /// groups `g` and `ga` in the memory directory; alice eligible for both.
    async fn seed(&self) {
        let pp = PostParams::default();
        let policy = |max: &str, approval: Option<ApprovalSettings>| AccessPolicySpec {
            activation: ActivationSettings {
                max_duration: Some(max.into()),
                approval,
                ..Default::default()
            },
            ..Default::default()
        };
        self.api::<AccessPolicy>()
            .create(&pp, &AccessPolicy::new("p", policy("1h", None)))
            .await
            .unwrap();
        let approval = ApprovalSettings {
            approvers: vec![PrincipalRef::user("bob"), PrincipalRef::user("carol")],
            min_approvals: Some(1),
            timeout: Some("24h".into()),
            allow_self_approval: None,
            require_mfa: None,
            sign_in: Default::default(),
        };
        self.api::<AccessPolicy>()
            .create(
                &pp,
                &AccessPolicy::new("p-approval", policy("1h", Some(approval))),
            )
            .await
            .unwrap();
        for (name, policy_name, standing) in [
            ("g", "p", StandingAccess::Remove),
            ("ga", "p-approval", StandingAccess::Remove),
        ] {
            self.create_group(name, policy_name, standing).await;
            self.create_assignment(&format!("alice-{name}"), name, "alice")
                .await;
        }
    }

    async fn create_group(&self, name: &str, policy: &str, standing: StandingAccess) {
        self.create_group_in(name, "memory", policy, standing).await;
    }

    /// A PimGroup on directory connection `directory`, for directory group `<name>-id`.
    async fn create_group_in(
        &self,
        name: &str,
        directory: &str,
        policy: &str,
        standing: StandingAccess,
    ) {
        let spec = PimGroupSpec {
            directory: directory.into(),
            group: DirectoryGroupRef {
                id: Some(format!("{name}-id")),
                ..Default::default()
            },
            roles: GroupRoles {
                member: RoleSettings {
                    policy: policy.into(),
                },
                owner: None,
            },
            standing_access: standing,
            rbac: None,
            ..Default::default()
        };
        self.api::<PimGroup>()
            .create(&PostParams::default(), &PimGroup::new(name, spec))
            .await
            .unwrap();
    }

    async fn create_assignment(&self, name: &str, group: &str, user: &str) {
        self.create_assignment_of(name, group, user, Default::default())
            .await;
    }

    async fn create_assignment_of(
        &self,
        name: &str,
        group: &str,
        user: &str,
        assignment_type: pim_operator::api::eligible_assignment::AssignmentType,
    ) {
        let spec = EligibleAssignmentSpec {
            group: group.into(),
            principal: PrincipalRef::user(user),
            assignment_type,
            schedule: Schedule {
                duration: Some("30d".into()),
                ..Default::default()
            },
            justification: Some("on call".into()),
            ..Default::default()
        };
        self.api::<EligibleAssignment>()
            .create(&PostParams::default(), &EligibleAssignment::new(name, spec))
            .await
            .unwrap();
    }

    /// Creates a request as the webhook would leave it: requester and principal stamped, and
    /// the operator's finalizer on.
    async fn request(
        &self,
        name: &str,
        group: &str,
        user: &str,
        duration: &str,
        edit: impl FnOnce(&mut ActivationRequestSpec),
    ) {
        self.create_request(&admitted_request(name, group, user, duration, edit))
            .await;
    }

    async fn create_request(&self, request: &ActivationRequest) {
        self.api::<ActivationRequest>()
            .create(&PostParams::default(), request)
            .await
            .unwrap();
    }

    /// The operator's writes to request `name` since the last reset: verb, subresource and
    /// field manager.
    fn request_writes(&self, name: &str) -> Vec<String> {
        use pim_testkit::fake_apiserver::Verb;
        self.server
            .writes()
            .into_iter()
            .filter(|w| w.resource == "activationrequests" && w.name.as_deref() == Some(name))
            .filter(|w| w.verb != Verb::Create)
            .map(|w| {
                format!(
                    "{:?} {} {}",
                    w.verb,
                    w.subresource.as_deref().unwrap_or("-"),
                    w.field_manager.as_deref().unwrap_or("-")
                )
            })
            .collect()
    }

    /// An approver's own entry, by server-side apply under their own field manager.
    async fn vote(&self, request: &str, group: &str, approver: &str, decision: Vote) {
        let patch = serde_json::json!({
            "apiVersion": "pim.dev/v1alpha1", "kind": "ActivationRequest",
            "metadata": {"name": request},
            "spec": {"group": group, "approvals": [Approval {
                approver: approver.into(), decision, reason: Some("checked".into()), time: Some(Time(self.now())),
                ..Default::default()
            }]},
        });
        let params = PatchParams::apply(approver).force();
        self.api::<ActivationRequest>()
            .patch(request, &params, &Patch::Apply(&patch))
            .await
            .unwrap();
    }

    async fn get(&self, name: &str) -> ActivationRequest {
        self.api::<ActivationRequest>().get(name).await.unwrap()
    }

    async fn phase(&self, name: &str) -> Option<Phase> {
        self.get(name).await.status.and_then(|s| s.phase)
    }

    /// (status, reason) of a request's condition.
    async fn condition(&self, name: &str, type_: &str) -> Option<(String, String)> {
        let status = self.get(name).await.status?;
        status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .map(|c| (c.status.clone(), c.reason.clone()))
    }

    fn members(&self, group: &str) -> BTreeSet<Member> {
        self.directory.members(&format!("{group}-id"), Role::Member)
    }

    fn is_member(&self, group: &str, user: &str) -> bool {
        self.members(group).contains(&Member::User(user.into()))
    }

    async fn wait_phase(&self, name: &str, phase: Phase) {
        eventually(&format!("{name} reaches {phase}"), || async {
            self.phase(name).await == Some(phase)
        })
        .await;
    }

    async fn wait_member(&self, group: &str, user: &str, present: bool) {
        let what = format!("{user} {} {group}", if present { "in" } else { "not in" });
        eventually(&what, || async { self.is_member(group, user) == present }).await;
    }
}

fn is(status: &str, reason: &str) -> Option<(String, String)> {
    Some((status.into(), reason.into()))
}

async fn started() -> Harness {
    let mut h = Harness::new().await;
    h.start().await;
    h
}

// a.
#[tokio::test]
async fn activation_without_approval_is_granted_then_expires() {
    let mut h = started().await;
    h.request("r", "g", "alice", "30m", |_| {}).await;
    h.wait_phase("r", Phase::Active).await;
    assert!(h.is_member("g", "alice"));
    assert_eq!(h.condition("r", "Active").await, is("True", "Active"));
    assert_eq!(h.condition("r", "Expired").await, is("False", "InProgress"));
    let status = h.get("r").await.status.unwrap();
    assert_eq!(
        status.expires_at.map(|t| t.0),
        Some(h.now() + SignedDuration::from_mins(30))
    );

    h.advance(29);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        h.phase("r").await,
        Some(Phase::Active),
        "still inside the window"
    );
    assert!(h.is_member("g", "alice"));

    h.advance(1);
    h.wait_phase("r", Phase::Expired).await;
    h.wait_member("g", "alice", false).await;
    eventually("Active condition says Expired", || async {
        h.condition("r", "Active").await == is("False", "Expired")
    })
    .await;
    assert_eq!(h.condition("r", "Expired").await, is("True", "Expired"));
    let adds_and_removes: Vec<bool> = h.directory.writes().iter().map(|w| w.0).collect();
    assert_eq!(
        adds_and_removes,
        [true, false],
        "exactly one add and one remove"
    );
    h.stop().await;
}

// b.
#[tokio::test]
async fn one_of_two_approvers_then_two_of_two() {
    let mut h = started().await;
    h.request("r", "ga", "alice", "30m", |_| {}).await;
    h.wait_phase("r", Phase::PendingApproval).await;
    assert_eq!(
        h.condition("r", "Approved").await,
        is("False", "WaitingForApproval")
    );
    assert!(!h.is_member("ga", "alice"));
    h.vote("r", "ga", "carol", Vote::Approve).await;
    h.wait_phase("r", Phase::Active).await;
    assert!(h.is_member("ga", "alice"));
    assert_eq!(h.get("r").await.status.unwrap().approved_by, ["carol"]);

    // Two of two: one approval is not enough, a second distinct approver is.
    let two = Patch::Merge(
        serde_json::json!({"spec": {"activation": {"approval": {"minApprovals": 2}}}}),
    );
    h.api::<AccessPolicy>()
        .patch("p-approval", &PatchParams::default(), &two)
        .await
        .unwrap();
    h.request("r2", "ga", "alice", "30m", |_| {}).await;
    h.wait_phase("r2", Phase::PendingApproval).await;
    h.vote("r2", "ga", "bob", Vote::Approve).await;
    h.advance(1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h.phase("r2").await, Some(Phase::PendingApproval));
    h.vote("r2", "ga", "carol", Vote::Approve).await;
    h.wait_phase("r2", Phase::Active).await;
    assert_eq!(
        h.get("r2").await.status.unwrap().approved_by,
        ["bob", "carol"]
    );
    h.stop().await;
}

// c.
#[tokio::test]
async fn deny_and_approval_timeout() {
    let mut h = started().await;
    h.request("denied", "ga", "alice", "30m", |_| {}).await;
    h.request("ignored", "ga", "alice", "30m", |_| {}).await;
    h.wait_phase("denied", Phase::PendingApproval).await;
    h.vote("denied", "ga", "bob", Vote::Deny).await;
    h.wait_phase("denied", Phase::Denied).await;
    assert_eq!(
        h.condition("denied", "Approved").await,
        is("False", "Denied")
    );
    assert_eq!(h.condition("denied", "Expired").await, is("True", "Denied"));

    h.advance(24 * 60);
    h.wait_phase("ignored", Phase::TimedOut).await;
    assert_eq!(
        h.condition("ignored", "Approved").await,
        is("False", "TimedOut")
    );
    assert!(h.members("ga").is_empty());
    assert!(h.directory.writes().is_empty(), "nothing was ever granted");
    h.stop().await;
}

// d.
#[tokio::test]
async fn scheduled_start_waits_for_its_time() {
    let mut h = started().await;
    let start = h.now() + SignedDuration::from_hours(2);
    h.request("r", "g", "alice", "30m", |s| {
        s.start_time = Some(Time(start))
    })
    .await;
    h.wait_phase("r", Phase::Scheduled).await;
    assert_eq!(h.condition("r", "Active").await, is("False", "Scheduled"));
    h.advance(119);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!h.is_member("g", "alice"));
    h.advance(1);
    h.wait_phase("r", Phase::Active).await;
    assert!(h.is_member("g", "alice"));
    h.advance(30);
    h.wait_phase("r", Phase::Expired).await;
    h.wait_member("g", "alice", false).await;
    h.stop().await;
}

// e.
#[tokio::test]
async fn early_deactivation_removes_access() {
    let mut h = started().await;
    h.request("r", "g", "alice", "1h", |_| {}).await;
    h.wait_phase("r", Phase::Active).await;
    h.advance(10);
    let deactivate = Patch::Merge(serde_json::json!({"spec": {"deactivate": true}}));
    h.api::<ActivationRequest>()
        .patch("r", &PatchParams::default(), &deactivate)
        .await
        .unwrap();
    h.wait_phase("r", Phase::Deactivated).await;
    h.wait_member("g", "alice", false).await;
    assert_eq!(
        h.get("r").await.status.unwrap().ended_at.map(|t| t.0),
        Some(h.now())
    );
    h.stop().await;
}

// f.
#[tokio::test]
async fn overlapping_requests_keep_access_until_the_later_ends() {
    let mut h = started().await;
    h.request("first", "g", "alice", "1h", |_| {}).await;
    h.wait_phase("first", Phase::Active).await;
    h.advance(30);
    h.request("second", "g", "alice", "1h", |_| {}).await;
    h.wait_phase("second", Phase::Active).await;
    h.advance(30);
    h.wait_phase("first", Phase::Expired).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        h.is_member("g", "alice"),
        "the second request still covers alice"
    );
    assert_eq!(h.condition("first", "Active").await, is("False", "Expired"));
    h.advance(30);
    h.wait_phase("second", Phase::Expired).await;
    h.wait_member("g", "alice", false).await;
    assert_eq!(h.directory.writes().len(), 2, "one add, one remove");
    h.stop().await;
}

// g.
#[tokio::test]
async fn eligibility_deleted_while_active_revokes() {
    let mut h = started().await;
    h.request("r", "g", "alice", "1h", |_| {}).await;
    h.wait_phase("r", Phase::Active).await;
    h.api::<EligibleAssignment>()
        .delete("alice-g", &DeleteParams::default())
        .await
        .unwrap();
    h.wait_phase("r", Phase::Revoked).await;
    h.wait_member("g", "alice", false).await;
    eventually("Revoked says why", || async {
        h.condition("r", "Expired").await == is("True", "EligibilityEnded")
    })
    .await;
    h.stop().await;
}

// g'. The eligibility expires rather than being deleted.
#[tokio::test]
async fn eligibility_expiring_while_active_clips_then_ends() {
    let mut h = started().await;
    let end = h.now() + SignedDuration::from_mins(20);
    let spec = EligibleAssignmentSpec {
        group: "g".into(),
        principal: PrincipalRef::user("dave"),
        schedule: Schedule {
            end: Some(Time(end)),
            ..Default::default()
        },
        justification: Some("short".into()),
        ..Default::default()
    };
    h.api::<EligibleAssignment>()
        .create(
            &PostParams::default(),
            &EligibleAssignment::new("dave-g", spec),
        )
        .await
        .unwrap();
    h.request("r", "g", "dave", "1h", |_| {}).await;
    h.wait_phase("r", Phase::Active).await;
    assert_eq!(
        h.get("r").await.status.unwrap().expires_at.map(|t| t.0),
        Some(end)
    );
    h.advance(20);
    h.wait_phase("r", Phase::Expired).await;
    h.wait_member("g", "dave", false).await;
    h.stop().await;
}

// h.
// Issue 17 finding 4: a policy that requires MFA while webhook.mfaClaim is unset says so in
// its status, since the default key is one the API server never produces.
#[tokio::test]
async fn a_policy_requiring_mfa_without_a_claim_mapping_says_so() {
    let mut h = started().await;
    let condition = async |h: &Harness| {
        h.api::<AccessPolicy>()
            .get("p")
            .await
            .unwrap()
            .status
            .unwrap_or_default()
            .conditions
            .into_iter()
            .find(|c| c.type_ == "MfaClaim")
            .map(|c| (c.status, c.reason, c.message))
    };
    eventually("the policy reports MfaClaim", || async {
        condition(&h).await.is_some_and(|c| c.1 == "MfaNotRequired")
    })
    .await;
    let strict = Patch::Merge(serde_json::json!({"spec": {"activation": {"requireMfa": true}}}));
    h.api::<AccessPolicy>()
        .patch("p", &PatchParams::default(), &strict)
        .await
        .unwrap();
    eventually("the policy reports the missing claim mapping", || async {
        condition(&h)
            .await
            .is_some_and(|(status, reason, message)| {
                status == "False"
                    && reason == "MfaClaimNotConfigured"
                    && message.contains("webhook.mfaClaim")
            })
    })
    .await;
    h.stop().await;
}

#[tokio::test]
async fn lowering_the_policy_maximum_ends_access_sooner() {
    let mut h = started().await;
    h.request("r", "g", "alice", "1h", |_| {}).await;
    h.wait_phase("r", Phase::Active).await;
    let start = h.now();
    h.advance(10);
    let lower = Patch::Merge(serde_json::json!({"spec": {"activation": {"maxDuration": "20m"}}}));
    h.api::<AccessPolicy>()
        .patch("p", &PatchParams::default(), &lower)
        .await
        .unwrap();
    eventually("expiry moves to 20m", || async {
        h.get("r")
            .await
            .status
            .and_then(|s| s.expires_at)
            .map(|t| t.0)
            == Some(start + SignedDuration::from_mins(20))
    })
    .await;
    let raise = Patch::Merge(serde_json::json!({"spec": {"activation": {"maxDuration": "8h"}}}));
    h.api::<AccessPolicy>()
        .patch("p", &PatchParams::default(), &raise)
        .await
        .unwrap();
    h.advance(1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        h.get("r").await.status.unwrap().expires_at.map(|t| t.0),
        Some(start + SignedDuration::from_mins(20)),
        "never later again"
    );
    h.advance(9);
    h.wait_phase("r", Phase::Expired).await;
    h.wait_member("g", "alice", false).await;
    h.stop().await;
}

// i.
#[tokio::test]
async fn hand_added_members_are_removed_or_reported() {
    let mut h = Harness::new().await;
    h.create_group("reported", "p", StandingAccess::Report)
        .await;
    h.start().await;
    eventually("groups resolved", || async {
        h.api::<PimGroup>()
            .get("reported")
            .await
            .unwrap()
            .status
            .and_then(|s| s.group_id)
            .is_some()
    })
    .await;
    h.directory
        .add_by_hand("g-id", Role::Member, Member::User("mallory".into()));
    h.directory
        .add_by_hand("reported-id", Role::Member, Member::User("mallory".into()));
    h.advance(1);
    h.wait_member("g", "mallory", false).await;
    eventually("reported in status", || async {
        h.api::<PimGroup>()
            .get("reported")
            .await
            .unwrap()
            .status
            .is_some_and(|s| s.unexplained_members == ["user:mallory"])
    })
    .await;
    assert!(
        h.is_member("reported", "mallory"),
        "Report leaves unexplained members in place"
    );
    // Issue 19: both are alerts ("members added outside PIM"): a count where reported, a
    // removal where removed.
    let metrics = h.metrics();
    assert!(
        metrics.contains("pim_members_outside_pim{group=\"reported\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("pim_standing_access_removals_total{group=\"g\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("pim_members_outside_pim{group=\"g\"} 0"),
        "{metrics}"
    );
    // Her request is refused (she holds no assignment): we never granted her anything, so she
    // stays reported, not removed.
    h.request("m", "reported", "mallory", "30m", |_| {}).await;
    h.wait_phase("m", Phase::Rejected).await;
    h.advance(1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        h.is_member("reported", "mallory"),
        "a refused request does not make a standing member ours to remove"
    );
    let group = h.api::<PimGroup>().get("reported").await.unwrap();
    let in_sync = group
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "InSync")
        .unwrap();
    assert_eq!(
        (in_sync.status.as_str(), in_sync.reason.as_str()),
        ("False", "UnexplainedMembers")
    );
    h.stop().await;
}

// j.
#[tokio::test]
async fn failed_revocation_is_retried_and_reported_overdue() {
    let mut h = started().await;
    h.request("r", "g", "alice", "30m", |_| {}).await;
    h.wait_phase("r", Phase::Active).await;
    let planned_end = h.get("r").await.status.unwrap().expires_at.unwrap().0;
    h.directory.fail(FaultScope::Removes);
    // Past the end and the grace (30s by default).
    h.advance(31);
    eventually("RevocationOverdue shown", || async {
        h.condition("r", "Active").await == is("False", "RevocationOverdue")
    })
    .await;
    // Issue 14 finding 11: not Expired while the directory still holds the member.
    assert_eq!(h.phase("r").await, Some(Phase::Active));
    assert_eq!(
        h.condition("r", "Expired").await,
        is("False", "RevocationPending")
    );
    assert!(h.is_member("g", "alice"));
    eventually("overdue metric", || async {
        h.metrics().contains("pim_revocations_overdue 1")
    })
    .await;
    h.directory.heal();
    h.wait_member("g", "alice", false).await;
    h.wait_phase("r", Phase::Expired).await;
    assert_eq!(h.condition("r", "Active").await, is("False", "Expired"));
    // endedAt is when the directory confirmed the removal, not the planned end.
    let status = h.get("r").await.status.unwrap();
    assert_eq!(status.expires_at.map(|t| t.0), Some(planned_end));
    let ended = status.ended_at.unwrap().0;
    assert!(
        ended >= planned_end + jiff::SignedDuration::from_mins(1),
        "endedAt {ended} is the confirmation, a minute after the planned end {planned_end}"
    );
    eventually("overdue metric back to 0", || async {
        h.metrics().contains("pim_revocations_overdue 0")
    })
    .await;
    h.stop().await;
}

// k.
#[tokio::test]
async fn restarts_keep_access_and_remove_what_expired_while_down() {
    let mut h = started().await;
    h.request("r", "g", "alice", "30m", |_| {}).await;
    h.wait_phase("r", Phase::Active).await;
    h.stop().await;
    h.start().await;
    h.advance(10);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h.phase("r").await, Some(Phase::Active));
    assert!(h.is_member("g", "alice"));
    h.stop().await;
    h.advance(60);
    h.start().await;
    h.wait_phase("r", Phase::Expired).await;
    h.wait_member("g", "alice", false).await;
    assert_eq!(h.directory.writes().len(), 2, "the restart did not re-add");
    h.stop().await;
}

// l.
#[tokio::test]
async fn dropped_watches_and_410_gone_miss_no_transition() {
    let mut h = started().await;
    h.request("r", "g", "alice", "30m", |_| {}).await;
    h.wait_phase("r", Phase::Active).await;
    h.server.drop_watches();
    h.request("r2", "ga", "alice", "30m", |_| {}).await;
    h.wait_phase("r2", Phase::PendingApproval).await;
    h.server.expire_history();
    h.server.drop_watches();
    h.vote("r2", "ga", "bob", Vote::Approve).await;
    h.wait_phase("r2", Phase::Active).await;
    h.advance(30);
    h.wait_phase("r", Phase::Expired).await;
    h.wait_phase("r2", Phase::Expired).await;
    h.wait_member("g", "alice", false).await;
    h.wait_member("ga", "alice", false).await;
    h.stop().await;
}

// m.
#[tokio::test]
async fn a_malformed_object_is_reported_and_the_others_carry_on() {
    let mut h = started().await;
    h.server
        .store_put(
            "activationrequests",
            None,
            serde_json::json!({"metadata": {"name": "broken"}, "spec": {"group": 42}}),
        )
        .unwrap();
    h.request("r", "g", "alice", "30m", |_| {}).await;
    h.wait_phase("r", Phase::Active).await;
    eventually("broken reported", || async {
        let stored = h
            .server
            .store_get("activationrequests", None, "broken")
            .unwrap();
        stored
            .pointer("/status/conditions/0/reason")
            .and_then(|r| r.as_str())
            == Some("Malformed")
    })
    .await;
    let writes_before = h
        .server
        .writes()
        .iter()
        .filter(|w| w.name.as_deref() == Some("broken"))
        .count();
    h.advance(1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let writes_after = h
        .server
        .writes()
        .iter()
        .filter(|w| w.name.as_deref() == Some("broken"))
        .count();
    assert_eq!(writes_before, writes_after, "reported once, not in a loop");
    h.stop().await;
}

// n.
#[tokio::test]
async fn two_replicas_only_the_leader_writes() {
    let h = Harness::new().await;
    let a = h.launch(true);
    eventually("a leads", || async {
        a.health.is_leader() && a.health.is_ready()
    })
    .await;
    let b = h.launch(true);
    eventually("b knows it follows", || async { b.health.is_ready() }).await;
    assert!(!b.health.is_leader());
    h.request("r", "g", "alice", "30m", |_| {}).await;
    h.wait_phase("r", Phase::Active).await;
    assert!(
        !b.metrics
            .encode()
            .contains("pim_reconcile_duration_seconds_count{kind=\"ActivationRequest\"}"),
        "the follower reconciled nothing"
    );
    assert!(
        a.metrics
            .encode()
            .contains("pim_reconcile_duration_seconds_count{kind=\"ActivationRequest\"}")
    );

    a.stop.cancel();
    let _ = tokio::time::timeout(WAIT, a.task).await;
    eventually("b takes over", || async { b.health.is_leader() }).await;
    h.request("r2", "g", "alice", "30m", |_| {}).await;
    h.wait_phase("r2", Phase::Active).await;
    b.stop.cancel();
    let _ = tokio::time::timeout(WAIT, b.task).await;
}

// issue 14 finding 9: a request asking to start 30 days after its creation is Rejected, and the
// reason names spec.startTime: today's checks are not banked for a month.
#[tokio::test]
async fn issue_14_finding_9_a_request_starting_30_days_ahead_is_rejected() {
    let mut h = started().await;
    let now = h.now();
    // Eligible for 90 days: only the start's distance from creation is wrong.
    let spec = EligibleAssignmentSpec {
        group: "g".into(),
        principal: PrincipalRef::user("erin"),
        schedule: Schedule {
            duration: Some("90d".into()),
            ..Default::default()
        },
        justification: Some("quarter close".into()),
        ..Default::default()
    };
    h.api::<EligibleAssignment>()
        .create(
            &PostParams::default(),
            &EligibleAssignment::new("erin-g", spec),
        )
        .await
        .unwrap();
    h.request("later", "g", "erin", "30m", |spec| {
        spec.start_time = Some(Time(now + SignedDuration::from_hours(30 * 24)));
        if let Some(requester) = spec.requester.as_mut() {
            requester.stamped_at = Some(Time(now));
        }
    })
    .await;
    h.wait_phase("later", Phase::Rejected).await;
    let validated = h
        .get("later")
        .await
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Validated")
        .unwrap();
    assert_eq!(
        (validated.status.as_str(), validated.reason.as_str()),
        ("False", "InvalidStartTime")
    );
    assert!(
        validated.message.starts_with("spec.startTime: "),
        "{}",
        validated.message
    );
    assert!(!h.is_member("g", "erin"));
    h.stop().await;
}

// issue 14 finding 6: a leader cut off from its Lease keeps believing it leads (the lease
// manager retries quietly), but starts no directory write once a lease duration has passed
// without a renewal, by its own monotonic clock; it resumes once it renews.
#[tokio::test]
async fn issue_14_finding_6_a_leader_that_cannot_renew_starts_no_directory_writes() {
    let h = Harness::new().await;
    let a = h.launch(true);
    eventually("a leads", || async {
        a.health.is_leader() && a.health.is_ready()
    })
    .await;
    h.request("r", "g", "alice", "30m", |_| {}).await;
    h.wait_phase("r", Phase::Active).await;

    // Every write of the Lease fails from now on: no renewal succeeds; the rest of the API works.
    h.server.fail_all(
        503,
        pim_testkit::fake_apiserver::FaultScope::writes().resource("leases"),
    );
    // Past the 3s lease duration since the last renewal (at most 3s ago).
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        a.health.is_leader(),
        "the lease manager still says it leads"
    );
    let writes_before = h.directory.writes().len();
    h.create_assignment("dave-g", "g", "dave").await;
    h.request("r2", "g", "dave", "30m", |_| {}).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        h.directory.writes().len(),
        writes_before,
        "no directory write starts while the lease goes unrenewed"
    );
    assert!(!h.is_member("g", "dave"));
    assert_ne!(h.phase("r2").await, Some(Phase::Active));

    // Renewals succeed again: the fence opens and the grant goes through.
    h.server.clear_faults();
    h.wait_member("g", "dave", true).await;
    h.wait_phase("r2", Phase::Active).await;
    a.stop.cancel();
    let _ = tokio::time::timeout(WAIT, a.task).await;
}

/// With 1,000 idle objects, an hour of controlled time brings no API writes: no busy loop.
#[tokio::test]
async fn idle_objects_cause_no_writes() {
    let mut h = started().await;
    for i in 0..900 {
        h.create_assignment(&format!("user{i}-g"), "g", &format!("user{i}"))
            .await;
    }
    for i in 0..96 {
        h.request(&format!("old{i}"), "g", &format!("user{i}"), "5m", |_| {})
            .await;
    }
    // 900 assignments and 96 requests: about 20 s each on a loaded 2-core machine.
    let many = Duration::from_secs(90);
    eventually_within(many, "requests active", || async {
        h.api::<ActivationRequest>()
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .all(|r| r.status.as_ref().and_then(|s| s.phase) == Some(Phase::Active))
    })
    .await;
    h.advance(5);
    eventually_within(
        many,
        "requests expired and assignments reported",
        || async {
            let requests = h
                .api::<ActivationRequest>()
                .list(&Default::default())
                .await
                .unwrap()
                .items;
            let assignments = h
                .api::<EligibleAssignment>()
                .list(&Default::default())
                .await
                .unwrap()
                .items;
            requests
                .iter()
                .all(|r| r.status.as_ref().and_then(|s| s.phase) == Some(Phase::Expired))
                && assignments.iter().all(|a| a.status.is_some())
                && h.members("g").is_empty()
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    h.server.reset_observations();
    for _ in 0..12 {
        h.advance(5);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let writes = h.server.writes();
    assert!(
        writes.is_empty(),
        "{} writes while idle, first: {:?}",
        writes.len(),
        writes.first()
    );
    h.stop().await;
}

/// The kubernetes directory: membership is the subjects of RBAC bindings owned by the PimGroup.
#[tokio::test]
async fn kubernetes_directory_binds_and_unbinds_rbac_roles() {
    use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding};
    use pim_operator::api::pim_group::{NamespaceRole, RbacGrant, RoleKind};
    use pim_operator::directory::kubernetes::binding_name;
    let mut h = Harness::new().await;
    let spec = PimGroupSpec {
        directory: "kubernetes".into(),
        group: DirectoryGroupRef {
            id: Some("ops".into()),
            ..Default::default()
        },
        roles: GroupRoles {
            member: RoleSettings { policy: "p".into() },
            owner: None,
        },
        standing_access: StandingAccess::Remove,
        rbac: Some(RbacGrant {
            cluster_roles: vec!["view".into()],
            namespace_roles: vec![NamespaceRole {
                namespace: "payments".into(),
                kind: RoleKind::ClusterRole,
                name: "edit".into(),
            }],
        }),
        ..Default::default()
    };
    h.api::<PimGroup>()
        .create(&PostParams::default(), &PimGroup::new("ops", spec))
        .await
        .unwrap();
    h.create_assignment("alice-ops", "ops", "alice").await;
    // The real operator always has the kubernetes directory.
    let mut directories = Directories::default();
    let rbac: Arc<dyn Directory> =
        Arc::new(pim_operator::directory::kubernetes::KubernetesDirectory::new(h.client.clone()));
    directories.insert("kubernetes", rbac);
    let deps = Dependencies {
        client: h.client.clone(),
        settings: settings(false),
        directories,
        attestor: Arc::new(TrustAsWritten),
        clock: h.clock.clone(),
        metrics: Arc::new(Metrics::new()),
        health: Arc::new(Health::default()),
    };
    let stop = CancellationToken::new();
    let task = tokio::spawn(controller::run(deps, stop.clone()));
    h.operator = None;

    h.request("r", "ops", "alice", "30m", |_| {}).await;
    h.wait_phase("r", Phase::Active).await;
    let cluster: Api<ClusterRoleBinding> = Api::all(h.client.clone());
    let namespaced: Api<RoleBinding> = Api::namespaced(h.client.clone(), "payments");
    let rbac_ref = |name: &str| k8s_openapi::api::rbac::v1::RoleRef {
        api_group: "rbac.authorization.k8s.io".into(),
        kind: "ClusterRole".into(),
        name: name.into(),
    };
    let view = binding_name("ops", &rbac_ref("view"), None);
    let edit = binding_name("ops", &rbac_ref("edit"), Some("payments"));
    let binding = cluster.get(&view).await.unwrap();
    assert_eq!(binding.role_ref.name, "view");
    assert_eq!(
        binding
            .subjects
            .unwrap()
            .iter()
            .map(|s| (s.kind.as_str(), s.name.as_str()))
            .collect::<Vec<_>>(),
        [("User", "alice")]
    );
    let owner = &binding.metadata.owner_references.unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("PimGroup", "ops", Some(true))
    );
    let rb = namespaced.get(&edit).await.unwrap();
    assert_eq!(
        (rb.role_ref.kind.as_str(), rb.role_ref.name.as_str()),
        ("ClusterRole", "edit")
    );

    h.advance(30);
    h.wait_phase("r", Phase::Expired).await;
    eventually("alice unbound everywhere", || async {
        let c = cluster
            .get(&view)
            .await
            .unwrap()
            .subjects
            .unwrap_or_default();
        let n = namespaced
            .get(&edit)
            .await
            .unwrap()
            .subjects
            .unwrap_or_default();
        c.is_empty() && n.is_empty()
    })
    .await;

    // A role dropped from the spec loses its binding.
    let drop_ns = Patch::Merge(serde_json::json!({"spec": {"rbac": {"namespaceRoles": []}}}));
    h.api::<PimGroup>()
        .patch("ops", &PatchParams::default(), &drop_ns)
        .await
        .unwrap();
    eventually("stale binding pruned", || async {
        namespaced.get_opt(&edit).await.unwrap().is_none()
    })
    .await;
    stop.cancel();
    let _ = tokio::time::timeout(WAIT, task).await;
}

/// Deleting a request or a PimGroup takes back the access it granted before the object goes.
#[tokio::test]
async fn deletion_waits_for_access_to_be_removed() {
    let mut h = started().await;
    h.request("r", "g", "alice", "1h", |_| {}).await;
    h.wait_phase("r", Phase::Active).await;
    assert!(
        h.get("r")
            .await
            .metadata
            .finalizers
            .unwrap_or_default()
            .contains(&"pim.dev/revoke-access".to_owned())
    );
    h.api::<ActivationRequest>()
        .delete("r", &DeleteParams::default())
        .await
        .unwrap();
    h.wait_member("g", "alice", false).await;
    eventually("request gone", || async {
        h.api::<ActivationRequest>()
            .get_opt("r")
            .await
            .unwrap()
            .is_none()
    })
    .await;

    // A Report group never removes unexplained members itself, so only the deletion can.
    h.create_group("reported", "p", StandingAccess::Report)
        .await;
    h.create_assignment("alice-reported", "reported", "alice")
        .await;
    h.request("r2", "reported", "alice", "1h", |_| {}).await;
    h.wait_phase("r2", Phase::Active).await;
    h.directory
        .add_by_hand("reported-id", Role::Member, Member::User("bob".into()));
    h.api::<PimGroup>()
        .delete("reported", &DeleteParams::default())
        .await
        .unwrap();
    eventually("group gone", || async {
        h.api::<PimGroup>()
            .get_opt("reported")
            .await
            .unwrap()
            .is_none()
    })
    .await;
    assert!(
        !h.is_member("reported", "alice"),
        "what the group granted is taken back"
    );
    assert!(
        h.is_member("reported", "bob"),
        "what it did not grant is left alone"
    );
    h.wait_phase("r2", Phase::Revoked).await;
    h.stop().await;
}

/// The reasons of the Events about object `name`, in the order the server lists them.
async fn event_reasons(h: &Harness, name: &str) -> Vec<String> {
    use k8s_openapi::api::events::v1::Event;
    let events: Api<Event> = Api::namespaced(h.client.clone(), "default");
    events
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .filter_map(|e| e.reason)
        .collect()
}

/// Issue 21 item 2: when the directory confirms the add at once, an activation costs the
/// operator two API writes: one status write (Scheduled and Active together) and one Event. The
/// finalizer comes with the create.
#[tokio::test]
async fn an_activation_confirmed_at_once_costs_two_api_writes() {
    let mut h = started().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    h.server.reset_observations();
    h.request("r", "g", "alice", "30m", |_| {}).await;
    h.wait_phase("r", Phase::Active).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        h.request_writes("r"),
        ["Patch status pim-operator"],
        "one status write: the finalizer came with the create (the mutating webhook's)"
    );
    assert_eq!(event_reasons(&h, "r").await, ["Active"]);
    let history = h.get("r").await.status.unwrap().history;
    assert_eq!(
        history.iter().map(|t| t.phase).collect::<Vec<_>>(),
        [Phase::Active],
        "the history still says when it became Active"
    );
    h.stop().await;
}

/// A request stored without the finalizer (created before the mutating webhook added it) gets
/// it from the operator before anything is granted, as before.
#[tokio::test]
async fn a_request_without_the_finalizer_gets_it_from_the_operator_first() {
    let mut h = started().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    h.server.reset_observations();
    let mut request = admitted_request("r", "g", "alice", "30m", |_| {});
    request.metadata.finalizers = None;
    h.create_request(&request).await;
    h.wait_phase("r", Phase::Active).await;
    assert_eq!(
        h.request_writes("r").first().map(String::as_str),
        Some("Patch - -"),
        "the finalizer first"
    );
    assert_eq!(
        h.get("r").await.metadata.finalizers,
        Some(vec![FINALIZER.to_owned()])
    );
    h.stop().await;
}

/// A directory that has not confirmed within the hold: the request says Scheduled, as before.
#[tokio::test]
async fn a_slow_add_is_reported_scheduled_then_active() {
    let mut h = started().await;
    h.directory.fail(FaultScope::Adds);
    h.request("r", "g", "alice", "30m", |_| {}).await;
    h.wait_phase("r", Phase::Scheduled).await;
    h.directory.heal();
    // The group retries at its back-off or the next resync; a minute passes.
    h.advance(1);
    h.wait_phase("r", Phase::Active).await;
    let history = h.get("r").await.status.unwrap().history;
    assert_eq!(
        history.iter().map(|t| t.phase).collect::<Vec<_>>(),
        [Phase::Scheduled, Phase::Active]
    );
    h.stop().await;
}

/// One Event per transition, and the endpoints SREs read.
#[tokio::test]
async fn transitions_emit_events_and_metrics_are_served() {
    use tower::ServiceExt;
    let mut h = started().await;
    h.request("r", "g", "alice", "30m", |_| {}).await;
    h.wait_phase("r", Phase::Active).await;
    h.advance(30);
    h.wait_phase("r", Phase::Expired).await;
    // The removal (and its revocation-lag sample) may land just after the Expired Event.
    h.wait_member("g", "alice", false).await;
    eventually("one event per transition", || async {
        // The directory confirms at once: Scheduled (Provisioning) and Active are one step.
        event_reasons(&h, "r").await == ["Active", "Expired"]
    })
    .await;

    let op = h.operator.as_ref().unwrap();
    let router = pim_operator::http::router(op.metrics.clone(), op.health.clone());
    let get = |path: &str| {
        http::Request::get(path)
            .body(axum::body::Body::empty())
            .unwrap()
    };
    let ready = router.clone().oneshot(get("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    let expected = [
        "pim_activations_total{outcome=\"Expired\"} 1",
        "pim_directory_calls_total{backend=\"memory\",operation=\"add_member\",outcome=\"success\"} 1",
        "pim_revocation_lag_seconds_count 1",
        "pim_activation_latency_seconds_count 1",
        "pim_reconcile_duration_seconds_count{kind=\"PimGroup\"}",
    ];
    let scrape = || async {
        let metrics = router.clone().oneshot(get("/metrics")).await.unwrap();
        let body = axum::body::to_bytes(metrics.into_body(), 1 << 20)
            .await
            .unwrap();
        String::from_utf8(body.to_vec()).unwrap()
    };
    // A sample is recorded just after the directory call it measures returns.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = scrape().await;
        let missing: Vec<_> = expected.iter().filter(|m| !text.contains(*m)).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "missing {missing:?} in\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let unready = pim_operator::http::router(op.metrics.clone(), Arc::new(Health::default()));
    assert_eq!(unready.oneshot(get("/readyz")).await.unwrap().status(), 503);
    h.stop().await;
}

/// Objects written straight to the API server, around the admission webhook, carry no valid
/// signatures: the controller grants nothing on them and says why (DESIGN §7).
#[tokio::test]
async fn bypassing_the_webhook_grants_nothing() {
    use pim_operator::attestation::Keyring;
    let keyring = Keyring::from_bytes(&[42u8; 32], &[]).unwrap();
    let mut h = Harness::new().await;
    h.attestor = Arc::new(SignedAttestor::new(Some(keyring.clone())));
    h.start().await;

    // An unsigned requester: refused, and never a member.
    h.request("forged", "g", "alice", "30m", |_| {}).await;
    h.wait_phase("forged", Phase::Rejected).await;
    assert_eq!(
        h.condition("forged", "Validated").await,
        is("False", "UnverifiedRequester")
    );
    assert!(!h.is_member("g", "alice"));

    // A requester signed as the webhook signs it, then an approval written around the webhook.
    let now = h.now();
    h.request("r", "ga", "alice", "30m", |spec| {
        if let Some(requester) = spec.requester.as_mut() {
            requester.stamped_at = Some(Time(now));
        }
        let signature = keyring.sign_requester("r", spec);
        if let Some(requester) = spec.requester.as_mut() {
            requester.attestation = signature;
        }
    })
    .await;
    h.wait_phase("r", Phase::PendingApproval).await;
    h.vote("r", "ga", "bob", Vote::Approve).await;
    eventually("the unsigned approval is reported", || async {
        h.condition("r", "Approved").await == is("False", "UnverifiedApproval")
    })
    .await;
    assert_eq!(h.phase("r").await, Some(Phase::PendingApproval));
    assert!(
        !h.is_member("ga", "alice"),
        "an unsigned approval grants nothing"
    );

    // The same decision signed for this request (bound to its uid) counts.
    let stored = h.get("r").await;
    let uid = stored.metadata.uid.clone().unwrap();
    let mut entry = stored.spec.approvals[0].clone();
    entry.attestation = Some(keyring.sign_approval(&uid, &entry));
    let patch = serde_json::json!({
        "apiVersion": "pim.dev/v1alpha1", "kind": "ActivationRequest",
        "metadata": {"name": "r"},
        "spec": {"group": "ga", "approvals": [entry]},
    });
    h.api::<ActivationRequest>()
        .patch(
            "r",
            &PatchParams::apply("bob").force(),
            &Patch::Apply(&patch),
        )
        .await
        .unwrap();
    h.wait_phase("r", Phase::Active).await;
    assert!(h.is_member("ga", "alice"));
    h.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Issue 14: access ends by construction. The grant ledger (PimGrant objects) records every grant
// before it is made; members are ours only when the ledger says so.
// ---------------------------------------------------------------------------------------------

mod ledger {
    use super::*;
    use pim_operator::api::PimGrant;
    use pim_operator::api::eligible_assignment::AssignmentType;
    use pim_testkit::fake_apiserver::{FaultScope as ApiFault, Verb};

    async fn ledger(h: &Harness) -> Vec<PimGrant> {
        h.api::<PimGrant>()
            .list(&Default::default())
            .await
            .unwrap()
            .items
    }

    async fn group_status(h: &Harness, name: &str) -> pim_operator::api::PimGroupStatus {
        h.api::<PimGroup>()
            .get(name)
            .await
            .unwrap()
            .status
            .unwrap_or_default()
    }

    /// A Report-mode group `gr` (policy `p`) with alice eligible.
    async fn report_group(h: &Harness) {
        h.create_group("gr", "p", StandingAccess::Report).await;
        h.create_assignment("alice-gr", "gr", "alice").await;
    }

    async fn active_assignment(h: &Harness, name: &str, group: &str, user: &str) {
        h.create_assignment_of(name, group, user, AssignmentType::Active)
            .await;
    }

    // Finding 1: Report mode forgot what it granted when the source went away.
    #[tokio::test]
    async fn report_mode_revokes_a_deleted_or_edited_active_assignment() {
        let mut h = started().await;
        report_group(&h).await;
        active_assignment(&h, "dave-gr", "gr", "dave").await;
        h.wait_member("gr", "dave", true).await;
        assert_eq!(ledger(&h).await.len(), 1, "the grant is in the ledger");
        h.api::<EligibleAssignment>()
            .delete("dave-gr", &DeleteParams::default())
            .await
            .unwrap();
        h.wait_member("gr", "dave", false).await;
        eventually("ledger entry closed", || async {
            ledger(&h).await.is_empty()
        })
        .await;

        // Edited to another principal: the first one's grant goes.
        active_assignment(&h, "ops-gr", "gr", "erin").await;
        h.wait_member("gr", "erin", true).await;
        let patch = serde_json::json!({"spec": {"principal": {"user": "frank"}}});
        h.api::<EligibleAssignment>()
            .patch("ops-gr", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
        h.wait_member("gr", "frank", true).await;
        h.wait_member("gr", "erin", false).await;
        h.stop().await;
    }

    // Finding 1: a request deleted without its finalizer still loses its access in Report mode.
    #[tokio::test]
    async fn report_mode_revokes_a_request_deleted_around_its_finalizer() {
        let mut h = started().await;
        report_group(&h).await;
        h.request("r", "gr", "alice", "30m", |_| {}).await;
        h.wait_phase("r", Phase::Active).await;
        h.wait_member("gr", "alice", true).await;
        h.stop().await;
        // With the operator down, someone strips the finalizer and deletes the request.
        let patch = serde_json::json!({"metadata": {"finalizers": null}});
        h.api::<ActivationRequest>()
            .patch("r", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
        h.api::<ActivationRequest>()
            .delete("r", &DeleteParams::default())
            .await
            .unwrap();
        h.start().await;
        h.wait_member("gr", "alice", false).await;
        eventually("ledger entry closed", || async {
            ledger(&h).await.is_empty()
        })
        .await;
        let status = group_status(&h, "gr").await;
        assert!(status.unexplained_members.is_empty(), "{status:?}");
        h.stop().await;
    }

    // Finding 2: a member who was there before PIM, and activated through it once, stays.
    #[tokio::test]
    async fn report_mode_leaves_a_standing_member_who_activated() {
        let mut h = started().await;
        report_group(&h).await;
        h.directory
            .add_by_hand("gr-id", Role::Member, Member::User("alice".into()));
        h.request("r", "gr", "alice", "30m", |_| {}).await;
        h.wait_phase("r", Phase::Active).await;
        assert!(
            ledger(&h).await.is_empty(),
            "nothing granted: she was there"
        );
        h.advance(30);
        h.wait_phase("r", Phase::Expired).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            h.is_member("gr", "alice"),
            "standing access is not ours to take"
        );
        eventually("reported as standing", || async {
            group_status(&h, "gr").await.unexplained_members == ["user:alice"]
        })
        .await;
        h.stop().await;
    }

    // Finding 3: pointing a PimGroup at another directory group revokes what it granted in the
    // old one.
    #[tokio::test]
    async fn a_pimgroup_pointed_elsewhere_revokes_in_the_old_group() {
        let mut h = started().await;
        h.request("r", "g", "alice", "30m", |_| {}).await;
        h.wait_phase("r", Phase::Active).await;
        let patch = serde_json::json!({"spec": {"group": {"id": "g-new-id"}}});
        h.api::<PimGroup>()
            .patch("g", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
        eventually("alice moved to the new group", || async {
            h.directory
                .members("g-new-id", Role::Member)
                .contains(&Member::User("alice".into()))
        })
        .await;
        h.wait_member("g", "alice", false).await;
        eventually("one entry, in the new group", || async {
            let entries = ledger(&h).await;
            entries.len() == 1 && entries[0].spec.group_id == "g-new-id"
        })
        .await;
        h.stop().await;
    }

    // Finding 3: a directory dropped from the config no longer lets deletion skip the removal.
    #[tokio::test]
    async fn deleting_a_pimgroup_whose_directory_is_gone_keeps_its_finalizer() {
        let mut h = Harness::new().await;
        let other = Arc::new(MemoryDirectory::new());
        h.extra_directories
            .lock()
            .unwrap()
            .push(("other".into(), other.clone()));
        h.start().await;
        h.create_group_in("go", "other", "p", StandingAccess::Remove)
            .await;
        h.create_assignment("alice-go", "go", "alice").await;
        h.request("r", "go", "alice", "30m", |_| {}).await;
        h.wait_phase("r", Phase::Active).await;
        h.stop().await;
        h.extra_directories.lock().unwrap().clear();
        h.start().await;
        h.api::<PimGroup>()
            .delete("go", &DeleteParams::default())
            .await
            .unwrap();
        eventually("Ready=False names the stranded grant", || async {
            group_status(&h, "go").await.conditions.iter().any(|c| {
                c.type_ == "Ready" && c.status == "False" && c.message.contains("cannot be revoked")
            })
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            h.api::<PimGroup>().get_opt("go").await.unwrap().is_some(),
            "the finalizer stays while a grant cannot be revoked"
        );
        assert!(
            other
                .members("go-id", Role::Member)
                .contains(&Member::User("alice".into()))
        );
        // Configured again: the grant goes, then the PimGroup.
        h.stop().await;
        h.extra_directories
            .lock()
            .unwrap()
            .push(("other".into(), other.clone()));
        h.start().await;
        eventually("PimGroup gone", || async {
            h.api::<PimGroup>().get_opt("go").await.unwrap().is_none()
        })
        .await;
        assert!(other.members("go-id", Role::Member).is_empty());
        h.stop().await;
    }

    // Finding 7: a status-only patch that re-opens an Expired request grants nothing.
    #[tokio::test]
    async fn a_forged_status_does_not_reopen_access() {
        use k8s_openapi::api::events::v1::Event;
        let mut h = started().await;
        h.request("r", "g", "alice", "30m", |_| {}).await;
        h.wait_phase("r", Phase::Active).await;
        h.advance(30);
        h.wait_phase("r", Phase::Expired).await;
        h.wait_member("g", "alice", false).await;
        let far = Time(h.now() + SignedDuration::from_hours(24 * 30));
        let patch = serde_json::json!({"status": {"phase": "Active", "expiresAt": far}});
        h.api::<ActivationRequest>()
            .patch_status("r", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
        h.wait_phase("r", Phase::Expired).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!h.is_member("g", "alice"), "a forged status granted access");
        assert!(ledger(&h).await.is_empty());
        let events: Api<Event> = Api::namespaced(h.client.clone(), "default");
        eventually("a StatusNotProven warning", || async {
            events
                .list(&Default::default())
                .await
                .unwrap()
                .items
                .iter()
                .any(|e| e.reason.as_deref() == Some("StatusNotProven"))
        })
        .await;
        h.stop().await;
    }

    // Finding 10: overdue revocations are counted even while the directory cannot even list,
    // and the lag runs from the window's end to the directory's confirmation.
    #[tokio::test]
    async fn overdue_and_lag_are_measured_across_an_outage() {
        let mut h = started().await;
        h.request("r", "g", "alice", "30m", |_| {}).await;
        h.wait_phase("r", Phase::Active).await;
        h.directory.fail(FaultScope::All);
        h.advance(33);
        eventually("overdue metric", || async {
            h.metrics().contains("pim_revocations_overdue 1")
        })
        .await;
        assert_eq!(h.phase("r").await, Some(Phase::Active));
        h.directory.heal();
        h.wait_member("g", "alice", false).await;
        h.wait_phase("r", Phase::Expired).await;
        eventually("lag of about three minutes", || async {
            let metrics = h.metrics();
            metrics.lines().any(|l| {
                l.strip_prefix("pim_revocation_lag_seconds_sum ")
                    .and_then(|v| v.parse::<f64>().ok())
                    .is_some_and(|v| v >= 180.0)
            })
        })
        .await;
        h.stop().await;
    }

    // Review of finding 1: back-to-back requests in Report mode. At the first one's end its
    // entry must not close before the second one's is written, or the member would look like
    // standing access and stay after the second ends.
    #[tokio::test]
    async fn back_to_back_requests_in_report_mode_end_with_the_second() {
        let mut h = started().await;
        report_group(&h).await;
        h.request("r1", "gr", "alice", "30m", |_| {}).await;
        h.wait_phase("r1", Phase::Active).await;
        let second_start = Time(h.now() + SignedDuration::from_mins(30));
        h.request("r2", "gr", "alice", "30m", |s| {
            s.start_time = Some(second_start)
        })
        .await;
        h.wait_phase("r2", Phase::Scheduled).await;
        // The second entry cannot be written at first.
        h.server.handle().fail_all(
            500,
            ApiFault::writes().resource("pimgrants").verb(Verb::Create),
        );
        h.advance(30);
        tokio::time::sleep(Duration::from_millis(300)).await;
        h.server.handle().clear_faults();
        h.wait_phase("r1", Phase::Expired).await;
        h.wait_phase("r2", Phase::Active).await;
        assert!(h.is_member("gr", "alice"));
        eventually("only r2's entry is open", || async {
            let entries = ledger(&h).await;
            entries.len() == 1 && entries[0].spec.source.name == "r2"
        })
        .await;
        h.advance(30);
        h.wait_member("gr", "alice", false).await;
        h.wait_phase("r2", Phase::Expired).await;
        h.stop().await;
    }

    // Review of finding 1: grants made by a release without the ledger are recorded on the first
    // pass after the upgrade, so Report mode still takes them back at their end.
    #[tokio::test]
    async fn an_upgrade_adopts_grants_made_before_the_ledger() {
        let mut h = Harness::new().await;
        report_group(&h).await;
        // As the previous release left it: alice added, the request Active.
        h.request("r", "gr", "alice", "30m", |_| {}).await;
        let at = |m: i64| Time(h.now() + SignedDuration::from_mins(m));
        let status = serde_json::json!({"status": {
            "phase": "Active", "approvedAt": at(0), "startsAt": at(0), "expiresAt": at(30),
            "activatedAt": at(0),
        }});
        h.api::<ActivationRequest>()
            .patch_status("r", &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap();
        h.directory
            .add_by_hand("gr-id", Role::Member, Member::User("alice".into()));
        h.start().await;
        eventually("the grant is adopted into the ledger", || async {
            ledger(&h).await.len() == 1
        })
        .await;
        eventually("adoption is marked", || async {
            group_status(&h, "gr").await.ledger_adopted_at.is_some()
        })
        .await;
        h.advance(30);
        h.wait_member("gr", "alice", false).await;
        h.wait_phase("r", Phase::Expired).await;
        h.stop().await;
    }

    // A PimGroup deleted around its finalizer leaves entries no group pass reads: they are
    // revoked all the same, where they were written.
    #[tokio::test]
    async fn grants_of_a_pimgroup_deleted_around_its_finalizer_are_revoked() {
        let mut h = started().await;
        report_group(&h).await;
        h.request("r", "gr", "alice", "30m", |_| {}).await;
        h.wait_phase("r", Phase::Active).await;
        h.stop().await;
        let patch = serde_json::json!({"metadata": {"finalizers": null}});
        h.api::<PimGroup>()
            .patch("gr", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
        h.api::<PimGroup>()
            .delete("gr", &DeleteParams::default())
            .await
            .unwrap();
        assert!(h.api::<PimGroup>().get_opt("gr").await.unwrap().is_none());
        h.start().await;
        h.wait_member("gr", "alice", false).await;
        eventually("ledger entry closed", || async {
            ledger(&h).await.is_empty()
        })
        .await;
        h.wait_phase("r", Phase::Revoked).await;
        h.stop().await;
    }

    // PimGroup names may be 253 characters, label values only 63 (apimachinery
    // IsValidLabelValue): the ledger entry of such a group must still be accepted.
    #[tokio::test]
    async fn a_long_pimgroup_name_still_gets_its_grants_recorded() {
        let mut h = started().await;
        let name = format!("{}-finreport", "senior-analysts".repeat(5));
        assert!(name.len() > 63);
        h.create_group_in(&name, "memory", "p", StandingAccess::Report)
            .await;
        h.create_assignment("alice-long", &name, "alice").await;
        h.request("r", &name, "alice", "30m", |_| {}).await;
        h.wait_phase("r", Phase::Active).await;
        h.wait_member(&name, "alice", true).await;
        assert_eq!(ledger(&h).await.len(), 1);
        h.advance(30);
        h.wait_member(&name, "alice", false).await;
        h.wait_phase("r", Phase::Expired).await;
        h.stop().await;
    }

    /// Stops the operator at the worst moment: after a directory write, before what records it.
    async fn kill(h: &mut Harness) {
        h.stop().await;
        h.server.handle().clear_faults();
    }

    async fn no_member_unexplained(h: &Harness, group: &str) {
        eventually("every member explained", || async {
            let status = group_status(h, group).await;
            status.unexplained_members.is_empty()
                && status
                    .conditions
                    .iter()
                    .any(|c| c.type_ == "InSync" && c.status == "True")
        })
        .await;
    }

    // A kill between the directory add and the request's status write.
    #[tokio::test]
    async fn a_kill_after_the_add_leaves_the_member_explained() {
        let mut h = started().await;
        report_group(&h).await;
        h.server.handle().fail_all(
            500,
            ApiFault::writes()
                .resource("activationrequests")
                .verb(Verb::Patch),
        );
        h.request("r", "gr", "alice", "30m", |_| {}).await;
        h.wait_member("gr", "alice", true).await;
        kill(&mut h).await;
        assert_eq!(ledger(&h).await.len(), 1, "the intent was written first");
        h.start().await;
        h.wait_phase("r", Phase::Active).await;
        no_member_unexplained(&h, "gr").await;
        h.advance(30);
        h.wait_member("gr", "alice", false).await;
        h.wait_phase("r", Phase::Expired).await;
        h.stop().await;
    }

    // A kill between the intent and the add: the add happens after the restart.
    #[tokio::test]
    async fn a_kill_between_intent_and_add_grants_after_the_restart() {
        let mut h = started().await;
        report_group(&h).await;
        h.directory.fail(FaultScope::Adds);
        h.request("r", "gr", "alice", "30m", |_| {}).await;
        eventually("intent written", || async { ledger(&h).await.len() == 1 }).await;
        kill(&mut h).await;
        h.directory.heal();
        h.start().await;
        h.wait_member("gr", "alice", true).await;
        h.wait_phase("r", Phase::Active).await;
        no_member_unexplained(&h, "gr").await;
        h.stop().await;
    }

    // A kill between the directory removal and the ledger's close and the status write.
    #[tokio::test]
    async fn a_kill_after_the_removal_closes_the_entry_after_the_restart() {
        let mut h = started().await;
        report_group(&h).await;
        h.request("r", "gr", "alice", "30m", |_| {}).await;
        h.wait_phase("r", Phase::Active).await;
        h.server.handle().fail_all(
            500,
            ApiFault::writes().resource("pimgrants").verb(Verb::Delete),
        );
        h.advance(30);
        h.wait_member("gr", "alice", false).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(ledger(&h).await.len(), 1, "not closed yet");
        assert_eq!(
            h.phase("r").await,
            Some(Phase::Active),
            "not Expired before the ledger closed"
        );
        kill(&mut h).await;
        h.start().await;
        h.wait_phase("r", Phase::Expired).await;
        eventually("ledger entry closed", || async {
            ledger(&h).await.is_empty()
        })
        .await;
        no_member_unexplained(&h, "gr").await;
        h.stop().await;
    }
}
