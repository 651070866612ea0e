//! The simulated world: the API server, the directories, the clock, the operator's replicas,
//! and the truth the invariants are checked against. `apply` performs one operation.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use pim_operator::api::access_policy::{AccessPolicySpec, ActivationSettings, ApprovalSettings};
use pim_operator::api::activation_request::{ActivationRequestSpec, Approval, Decision, Requester};
use pim_operator::api::common::{PrincipalRef, Role};
use pim_operator::api::eligible_assignment::{AssignmentType, EligibleAssignmentSpec, Schedule};
use pim_operator::api::pim_group::{
    DirectoryGroupRef, GroupRoles, PimGroupSpec, RoleSettings, StandingAccess,
};
use pim_operator::api::{AccessPolicy, ActivationRequest, EligibleAssignment, PimGroup};
use pim_operator::attestation::Keyring;
use pim_operator::clock::{Clock, ManualClock};
use pim_operator::config::{Config, Settings};
use pim_operator::core::membership::Member;
use pim_operator::engine::{Attestor, SignedAttestor};
use pim_testkit::fake_apiserver::{FakeApiServer, FaultScope, Options};

use super::directory::{self, DirState, Flavor, Held, Target, Write};
use super::model::{
    APPROVERS, ApprovalTruth, AssignmentVersion, GROUPS, GroupVersion, POLICIES, PolicyVersion,
    RequestTruth, Truth, USERS, VOTERS, policy_of,
};
use super::ops::Op;
use super::replica::{Kind, Parts, Replica};

pub const T0: &str = "2026-03-02T09:00:00Z";
/// The operator's resync interval here; I1's lag is two of them.
pub const RESYNC: SignedDuration = SignedDuration::from_mins(1);
const SETTINGS: &str = "resyncInterval: 1m\nrevocationGrace: 30s\nconcurrency: 4\nleaderElection: {enabled: false}\nnamespace: pim-system\n";
/// The directory connections: two Active Directory-like, one Entra PIM-like.
const DIRECTORIES: [(&str, Flavor); 3] = [
    ("ad", Flavor::Plain),
    ("entra", Flavor::GraphPim),
    ("ad2", Flavor::Plain),
];
/// Reconciles one replica runs at most per tick (a bound on a busy loop, not a rate).
const STEP_BUDGET: usize = 80;

/// Counters for the report.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub ops: BTreeMap<&'static str, u64>,
    pub faults: BTreeMap<&'static str, u64>,
    pub checks: u64,
    pub reconciles: u64,
    /// Extensions (`spec.extends`) that went Active: the run exercised them.
    pub extensions_active: u64,
}

pub struct Sim {
    pub server: FakeApiServer,
    admin: kube::Client,
    pub clock: Arc<ManualClock>,
    pub world: directory::World,
    pub truth: Truth,
    keyring: Keyring,
    settings: Settings,
    attestor: Arc<dyn Attestor>,
    pub leader: Replica,
    replicas_started: usize,
    armed_api: Option<(u16, u8)>,
    group_serial: [u32; 3],
    setting_up: bool,
    pub stats: Stats,
}

fn op_name(op: &Op) -> &'static str {
    match op {
        Op::Tick { .. } => "tick",
        Op::CreateRequest { .. } => "create request",
        Op::ExtendRequest { .. } => "extend request",
        Op::Vote { .. } => "vote",
        Op::Deactivate { .. } => "deactivate",
        Op::DeleteRequest { .. } => "delete request",
        Op::StripFinalizer { .. } => "strip finalizer",
        Op::ForgeStatus { .. } => "forge status",
        Op::PutAssignment { .. } => "put assignment",
        Op::DeleteAssignment { .. } => "delete assignment",
        Op::EditPolicy { .. } => "edit policy",
        Op::DeletePolicy { .. } => "delete policy",
        Op::SetStanding { .. } => "set standingAccess",
        Op::MoveGroup { .. } => "move group",
        Op::DeleteGroup { .. } => "delete group",
        Op::RecreateGroup { .. } => "recreate group",
        Op::DriftAdd { .. } => "drift add",
        Op::DriftRemove { .. } => "drift remove",
        Op::Crash { .. } => "crash",
        Op::Failover { .. } => "failover",
        Op::DropWatches => "watch drop",
        Op::Gone => "410 Gone",
        Op::ApiFaults { .. } => "API faults",
        Op::DirFaults { .. } => "directory faults",
        Op::ClockJump { .. } => "clock jump",
    }
}

fn policy_spec(max_minutes: i64, min_approvals: usize) -> AccessPolicySpec {
    AccessPolicySpec {
        activation: ActivationSettings {
            max_duration: Some(format!("{max_minutes}m")),
            approval: (min_approvals > 0).then(|| ApprovalSettings {
                approvers: APPROVERS.iter().map(|a| PrincipalRef::user(*a)).collect(),
                min_approvals: Some(min_approvals as i32),
                timeout: Some("30m".into()),
                allow_self_approval: None,
                require_mfa: None,
                sign_in: Default::default(),
            }),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn group_spec(group: usize, directory: &str, id: &str, remove: bool) -> PimGroupSpec {
    let (_, _, member, owner) = GROUPS[group];
    PimGroupSpec {
        directory: directory.into(),
        group: DirectoryGroupRef {
            id: Some(id.into()),
            ..Default::default()
        },
        roles: GroupRoles {
            member: RoleSettings {
                policy: POLICIES[member].into(),
            },
            owner: owner.map(|p| RoleSettings {
                policy: POLICIES[p].into(),
            }),
        },
        standing_access: if remove {
            StandingAccess::Remove
        } else {
            StandingAccess::Report
        },
        rbac: None,
        ..Default::default()
    }
}

fn role_of(owner: bool) -> Role {
    if owner { Role::Owner } else { Role::Member }
}

fn assignment_name(user: &str, group: usize, role: Role) -> String {
    format!(
        "{user}-{}-{}",
        GROUPS[group].0,
        role.to_string().to_lowercase()
    )
}

impl Sim {
    pub async fn new(seed: u64) -> Sim {
        pim_testkit::fake_apiserver::seed_ids(Some(seed));
        let server = FakeApiServer::in_memory(Options::default());
        let clock = Arc::new(ManualClock::new(T0.parse().unwrap()));
        server.set_clock(clock.clone());
        let admin = server.client();
        let settings = Config::parse(SETTINGS, "simulation").unwrap();
        let keyring =
            Keyring::from_bytes(b"the simulation's attestation key, 32+ bytes", &[]).unwrap();
        let attestor: Arc<dyn Attestor> = Arc::new(SignedAttestor::new(Some(keyring.clone())));
        let world: directory::World = Arc::new(Mutex::new(DirState::default()));
        let leader = Replica::start(
            0,
            Parts {
                server: &server,
                settings: &settings,
                clock: clock.clone(),
                attestor: attestor.clone(),
                directories: &DIRECTORIES.map(|(n, f)| (n.to_owned(), f)),
                world: &world,
            },
        );
        let mut sim = Sim {
            server,
            admin,
            clock,
            world,
            truth: Truth::default(),
            keyring,
            settings,
            attestor,
            leader,
            replicas_started: 1,
            armed_api: None,
            group_serial: [1; 3],
            setting_up: false,
            stats: Stats::default(),
        };
        sim.populate().await;
        // The operator starts now: obligations run from here.
        sim.disrupted();
        sim
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The GitOps repository's first commit, and the directory as it was found.
    async fn populate(&mut self) {
        self.setting_up = true;
        let now = Timestamp::MIN;
        // Everything GitOps owns is applied by one field manager, so that a later apply that
        // leaves a field out removes it (server-side apply's rule).
        for (i, name) in POLICIES.iter().enumerate() {
            let (max, min) = if i == 0 { (60, 1) } else { (30, 0) };
            self.apply_policy(name, max, min).await.unwrap();
            self.truth.policies.push(vec![PolicyVersion {
                from: now,
                exists: true,
                max: SignedDuration::from_mins(max),
                min_approvals: min,
                timeout: SignedDuration::from_mins(30),
            }]);
        }
        for (g, (name, directory, _, owner)) in GROUPS.iter().enumerate() {
            let id = format!("{name}-1");
            let remove = g == 0;
            self.truth.groups.push(Vec::new());
            assert!(self.apply_group(g, directory, remove, id.clone()).await);
            let directory = (*directory).to_owned();
            self.hand_add((directory.clone(), id.clone(), Role::Member), "breakglass");
            if owner.is_some() {
                self.hand_add((directory, id, Role::Owner), "svc-owner");
            }
        }
        for user in ["alice", "bob"] {
            for g in 0..GROUPS.len() {
                self.put_assignment(user, g, Role::Member, false, None)
                    .await;
            }
        }
        self.put_assignment("carol", 0, Role::Member, false, None)
            .await;
        self.put_assignment("bob", 1, Role::Owner, false, None)
            .await;
        self.put_assignment("alice", 2, Role::Owner, false, None)
            .await;
        self.setting_up = false;
    }

    /// When a change counts from: now, or for the world as found, since before any clock
    /// reading (the clock may be set back past the start).
    fn since(&self) -> Timestamp {
        if self.setting_up {
            Timestamp::MIN
        } else {
            self.now()
        }
    }

    fn hand_add(&self, target: Target, user: &str) {
        let now = self.now();
        let member = Member::User(user.into());
        let mut state = directory::lock(&self.world);
        state
            .groups
            .entry(target.clone())
            .or_default()
            .entry(member.clone())
            .and_modify(|h| h.by_hand = true)
            .or_insert(Held {
                since: now,
                until: None,
                by_hand: true,
            });
        state.writes.push(Write {
            at: now,
            target,
            member,
            added: true,
            by_hand: true,
        });
    }

    fn disrupted(&mut self) {
        let now = self.now();
        self.truth.disruptions.push(now);
    }

    fn fault(&mut self, kind: &'static str) {
        *self.stats.faults.entry(kind).or_default() += 1;
        self.disrupted();
    }

    fn restart(&mut self) {
        let id = self.replicas_started;
        self.replicas_started += 1;
        self.leader = Replica::start(
            id,
            Parts {
                server: &self.server,
                settings: &self.settings,
                clock: self.clock.clone(),
                attestor: self.attestor.clone(),
                directories: &DIRECTORIES.map(|(n, f)| (n.to_owned(), f)),
                world: &self.world,
            },
        );
    }

    fn request(&self, index: u8) -> Option<RequestTruth> {
        if self.truth.requests.is_empty() {
            return None;
        }
        self.truth
            .requests
            .get(usize::from(index) % self.truth.requests.len())
            .cloned()
    }

    /// Creates the request `truth` describes, stamped (at its creation) and signed as the
    /// webhook would, or with a forged signature; records it once the API server took it.
    async fn submit(
        &mut self,
        mut spec: ActivationRequestSpec,
        mut truth: RequestTruth,
    ) -> Result<(), kube::Error> {
        spec.requester = Some(Requester {
            username: truth.user.clone(),
            stamped_at: Some(Time(truth.created)),
            ..Default::default()
        });
        spec.principal = Some(truth.user.clone());
        let signature = if truth.signed {
            self.keyring.sign_requester(&truth.name, &spec)
        } else {
            Some("forged".into())
        };
        if let Some(r) = spec.requester.as_mut() {
            r.attestation = signature;
        }
        let created = self
            .requests()
            .create(
                &PostParams::default(),
                &ActivationRequest::new(&truth.name, spec),
            )
            .await?;
        truth.uid = created.metadata.uid.unwrap_or_default();
        self.truth.requests.push(truth);
        Ok(())
    }

    fn requests(&self) -> Api<ActivationRequest> {
        Api::all(self.admin.clone())
    }

    async fn put_assignment(
        &mut self,
        user: &str,
        group: usize,
        role: Role,
        active: bool,
        minutes: Option<u16>,
    ) {
        let now = self.now();
        let since = self.since();
        let end = minutes.map(|m| now + SignedDuration::from_mins(i64::from(m)));
        let spec = EligibleAssignmentSpec {
            group: GROUPS[group].0.into(),
            role,
            principal: PrincipalRef::user(user),
            assignment_type: if active {
                AssignmentType::Active
            } else {
                AssignmentType::Eligible
            },
            schedule: Schedule {
                end: end.map(Time),
                permanent: end.is_none().then_some(true),
                ..Default::default()
            },
            justification: Some("simulation".into()),
        };
        let name = assignment_name(user, group, role);
        let object = serde_json::json!({
            "apiVersion": "pim.dev/v1alpha1", "kind": "EligibleAssignment",
            "metadata": {"name": name}, "spec": spec,
        });
        let api: Api<EligibleAssignment> = Api::all(self.admin.clone());
        if api
            .patch(
                &name,
                &PatchParams::apply("gitops").force(),
                &Patch::Apply(&object),
            )
            .await
            .is_ok()
        {
            self.truth
                .assignments
                .entry((user.to_owned(), group, role))
                .or_default()
                .push(AssignmentVersion {
                    from: since,
                    exists: true,
                    active,
                    end,
                });
        }
    }

    async fn apply_group(
        &mut self,
        group: usize,
        directory: &str,
        remove: bool,
        id: String,
    ) -> bool {
        let object = serde_json::json!({
            "apiVersion": "pim.dev/v1alpha1", "kind": "PimGroup",
            "metadata": {"name": GROUPS[group].0}, "spec": group_spec(group, directory, &id, remove),
        });
        let api: Api<PimGroup> = Api::all(self.admin.clone());
        let done = api
            .patch(
                GROUPS[group].0,
                &PatchParams::apply("gitops").force(),
                &Patch::Apply(&object),
            )
            .await
            .is_ok();
        if done {
            let since = self.since();
            self.truth.groups[group].push(GroupVersion {
                from: since,
                exists: true,
                directory: directory.to_owned(),
                id,
                remove_standing: remove,
            });
        }
        done
    }

    async fn apply_policy(
        &self,
        name: &str,
        max: i64,
        min: usize,
    ) -> Result<AccessPolicy, kube::Error> {
        let object = serde_json::json!({
            "apiVersion": "pim.dev/v1alpha1", "kind": "AccessPolicy",
            "metadata": {"name": name}, "spec": policy_spec(max, min),
        });
        let api: Api<AccessPolicy> = Api::all(self.admin.clone());
        api.patch(
            name,
            &PatchParams::apply("gitops").force(),
            &Patch::Apply(&object),
        )
        .await
    }

    fn group_live(&self, group: usize) -> Option<GroupVersion> {
        self.truth.groups[group]
            .last()
            .filter(|v| v.exists)
            .cloned()
    }

    /// Performs one operation; returns a line for the trace.
    pub async fn apply(&mut self, op: &Op) -> String {
        *self.stats.ops.entry(op_name(op)).or_default() += 1;
        let now = self.now();
        let (writes_before, refusals_before) = {
            let state = directory::lock(&self.world);
            (
                state.writes.len(),
                state.refusals.len() + state.refused_adds.len(),
            )
        };
        let outcome: String = match op.clone() {
            Op::Tick {
                millis,
                sync,
                order,
                width,
            } => self.tick(millis, sync, order, width).await,
            Op::CreateRequest {
                user,
                group,
                owner,
                minutes,
                signed,
            } => {
                let user = USERS[usize::from(user) % USERS.len()];
                let group = usize::from(group) % GROUPS.len();
                let role = role_of(owner);
                let name = format!("r{}", self.truth.requests.len());
                let spec = ActivationRequestSpec {
                    group: GROUPS[group].0.into(),
                    role: owner.then_some(Role::Owner),
                    duration: Some(format!("{minutes}m")),
                    justification: Some("simulation".into()),
                    ..Default::default()
                };
                let truth = RequestTruth {
                    name: name.clone(),
                    uid: String::new(),
                    user: user.into(),
                    group,
                    role,
                    minutes: i64::from(minutes),
                    signed,
                    created: now,
                    approvals: Vec::new(),
                    deactivated: None,
                    deleted: None,
                    disturbed: false,
                    extends: None,
                };
                match self.submit(spec, truth).await {
                    Ok(()) => format!("{name} by {user} in {} as {role}", GROUPS[group].0),
                    Err(e) => format!("refused: {e}"),
                }
            }
            Op::ExtendRequest {
                request,
                minutes,
                signed,
            } => {
                // As a user would, from `kubectl pim status`: one of the Active requests when
                // there are any.
                let active: Vec<usize> = (0..self.truth.requests.len())
                    .filter(|i| {
                        self.server
                            .store_get("activationrequests", None, &self.truth.requests[*i].name)
                            .is_some_and(|o| o["status"]["phase"] == "Active")
                    })
                    .collect();
                let index = if active.is_empty() {
                    if self.truth.requests.is_empty() {
                        return "no request".into();
                    }
                    usize::from(request) % self.truth.requests.len()
                } else {
                    active[usize::from(request) % active.len()]
                };
                let base = self.truth.requests[index].clone();
                let name = format!("r{}", self.truth.requests.len());
                let spec = ActivationRequestSpec {
                    group: GROUPS[base.group].0.into(),
                    role: (base.role == Role::Owner).then_some(Role::Owner),
                    duration: Some(format!("{minutes}m")),
                    justification: Some("simulation: more time".into()),
                    extends: Some(base.name.clone()),
                    ..Default::default()
                };
                let truth = RequestTruth {
                    name: name.clone(),
                    uid: String::new(),
                    user: base.user.clone(),
                    group: base.group,
                    role: base.role,
                    minutes: i64::from(minutes),
                    signed,
                    created: now,
                    approvals: Vec::new(),
                    deactivated: None,
                    deleted: None,
                    disturbed: false,
                    extends: Some(index),
                };
                match self.submit(spec, truth).await {
                    Ok(()) => {
                        let running = if active.is_empty() { "" } else { ", Active" };
                        format!("{name} extends {}{running} by {minutes}m", base.name)
                    }
                    Err(e) => format!("refused: {e}"),
                }
            }
            Op::Vote {
                request,
                voter,
                approve,
                signed,
            } => {
                let Some(r) = self.request(request) else {
                    return "no request".into();
                };
                let voter = VOTERS[usize::from(voter) % VOTERS.len()];
                let live = self
                    .server
                    .store_get("activationrequests", None, &r.name)
                    .is_some_and(|o| {
                        o.pointer("/metadata/uid").and_then(|u| u.as_str()) == Some(r.uid.as_str())
                    });
                if !live {
                    // An apply would create a new object of that name: not a vote.
                    return format!("{} is gone", r.name);
                }
                let mut approval = Approval {
                    approver: voter.into(),
                    decision: if approve {
                        Decision::Approve
                    } else {
                        Decision::Deny
                    },
                    reason: Some("simulation".into()),
                    time: Some(Time(now)),
                    ..Default::default()
                };
                approval.attestation = Some(if signed {
                    self.keyring.sign_approval(&r.uid, &approval)
                } else {
                    "forged".into()
                });
                let patch = serde_json::json!({
                    "apiVersion": "pim.dev/v1alpha1", "kind": "ActivationRequest",
                    "metadata": {"name": r.name},
                    "spec": {"group": GROUPS[r.group].0, "approvals": [approval]},
                });
                match self
                    .requests()
                    .patch(
                        &r.name,
                        &PatchParams::apply(voter).force(),
                        &Patch::Apply(&patch),
                    )
                    .await
                {
                    Ok(_) => {
                        if let Some(t) = self.truth.requests.iter_mut().find(|t| t.name == r.name) {
                            // A voter's apply replaces their entry.
                            for a in t.approvals.iter_mut().filter(|a| a.approver == voter) {
                                a.replaced.get_or_insert(now);
                            }
                            t.approvals.push(ApprovalTruth {
                                approver: voter.into(),
                                at: now,
                                signed,
                                approve,
                                replaced: None,
                            });
                        }
                        format!("{voter} on {}", r.name)
                    }
                    Err(e) => format!("refused: {e}"),
                }
            }
            Op::Deactivate { request } => {
                let Some(r) = self.request(request) else {
                    return "no request".into();
                };
                let patch = serde_json::json!({"spec": {"deactivate": true}});
                match self
                    .requests()
                    .patch(&r.name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => {
                        if let Some(t) = self.truth.requests.iter_mut().find(|t| t.name == r.name) {
                            t.deactivated.get_or_insert(now);
                        }
                        r.name.clone()
                    }
                    Err(e) => format!("refused: {e}"),
                }
            }
            Op::DeleteRequest { request } => {
                let Some(r) = self.request(request) else {
                    return "no request".into();
                };
                match self
                    .requests()
                    .delete(&r.name, &DeleteParams::default())
                    .await
                {
                    Ok(_) => {
                        if let Some(t) = self.truth.requests.iter_mut().find(|t| t.name == r.name) {
                            t.deleted.get_or_insert(now);
                        }
                        r.name.clone()
                    }
                    Err(e) => format!("refused: {e}"),
                }
            }
            Op::StripFinalizer { request } => {
                let Some(r) = self.request(request) else {
                    return "no request".into();
                };
                let patch = serde_json::json!({"metadata": {"finalizers": null}});
                match self
                    .requests()
                    .patch(&r.name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => r.name.clone(),
                    Err(e) => format!("refused: {e}"),
                }
            }
            Op::ForgeStatus { request } => {
                let Some(r) = self.request(request) else {
                    return "no request".into();
                };
                let patch = serde_json::json!({"status": {
                    "phase": "Active", "approvedBy": ["mallory"],
                    "startsAt": Time(now), "expiresAt": Time(now + SignedDuration::from_hours(10)),
                }});
                match self
                    .requests()
                    .patch_status(&r.name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => r.name.clone(),
                    Err(e) => format!("refused: {e}"),
                }
            }
            Op::PutAssignment {
                user,
                group,
                owner,
                active,
                minutes,
            } => {
                let user = USERS[usize::from(user) % USERS.len()];
                let group = usize::from(group) % GROUPS.len();
                self.put_assignment(user, group, role_of(owner), active, minutes)
                    .await;
                assignment_name(user, group, role_of(owner))
            }
            Op::DeleteAssignment { user, group, owner } => {
                let user = USERS[usize::from(user) % USERS.len()];
                let group = usize::from(group) % GROUPS.len();
                let role = role_of(owner);
                let name = assignment_name(user, group, role);
                self.truth
                    .disturb(|r| r.user == user && r.group == group && r.role == role);
                let api: Api<EligibleAssignment> = Api::all(self.admin.clone());
                match api.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => {
                        self.truth
                            .assignments
                            .entry((user.to_owned(), group, role))
                            .or_default()
                            .push(AssignmentVersion {
                                from: now,
                                exists: false,
                                active: false,
                                end: None,
                            });
                        name
                    }
                    Err(e) => format!("{name}: {e}"),
                }
            }
            Op::EditPolicy {
                policy,
                max_minutes,
                min_approvals,
            } => {
                let policy = usize::from(policy) % POLICIES.len();
                let min = usize::from(min_approvals) % 3;
                match self
                    .apply_policy(POLICIES[policy], i64::from(max_minutes), min)
                    .await
                {
                    Ok(_) => {
                        self.truth.policies[policy].push(PolicyVersion {
                            from: now,
                            exists: true,
                            max: SignedDuration::from_mins(i64::from(max_minutes)),
                            min_approvals: min,
                            timeout: SignedDuration::from_mins(30),
                        });
                        format!("{} max {max_minutes}m, {min} approvals", POLICIES[policy])
                    }
                    Err(e) => format!("refused: {e}"),
                }
            }
            Op::DeletePolicy { policy } => {
                let policy = usize::from(policy) % POLICIES.len();
                self.truth
                    .disturb(|r| policy_of(r.group, r.role) == Some(policy));
                let api: Api<AccessPolicy> = Api::all(self.admin.clone());
                match api.delete(POLICIES[policy], &DeleteParams::default()).await {
                    Ok(_) => {
                        let last = self.truth.policies[policy].last().cloned();
                        if let Some(v) = last {
                            self.truth.policies[policy].push(PolicyVersion {
                                from: now,
                                exists: false,
                                ..v
                            });
                        }
                        POLICIES[policy].into()
                    }
                    Err(e) => format!("refused: {e}"),
                }
            }
            Op::SetStanding { group, remove } => {
                let group = usize::from(group) % GROUPS.len();
                match self.group_live(group) {
                    Some(v) => {
                        self.apply_group(group, &v.directory, remove, v.id).await;
                        format!("{} remove={remove}", GROUPS[group].0)
                    }
                    None => "no group".into(),
                }
            }
            Op::MoveGroup { group, directory } => {
                let group = usize::from(group) % GROUPS.len();
                match self.group_live(group) {
                    Some(v) => {
                        self.group_serial[group] += 1;
                        let id = format!("{}-{}", GROUPS[group].0, self.group_serial[group]);
                        let connection = match (directory, v.directory.as_str()) {
                            (false, current) => current.to_owned(),
                            (true, "ad2") => GROUPS[group].1.to_owned(),
                            (true, _) => "ad2".to_owned(),
                        };
                        self.apply_group(group, &connection, v.remove_standing, id.clone())
                            .await;
                        format!("{} now {connection}/{id}", GROUPS[group].0)
                    }
                    None => "no group".into(),
                }
            }
            Op::DeleteGroup { group } => {
                let group = usize::from(group) % GROUPS.len();
                self.truth.disturb(|r| r.group == group);
                let api: Api<PimGroup> = Api::all(self.admin.clone());
                match (
                    self.group_live(group),
                    api.delete(GROUPS[group].0, &DeleteParams::default()).await,
                ) {
                    (Some(v), Ok(_)) => {
                        self.truth.groups[group].push(GroupVersion {
                            exists: false,
                            from: now,
                            ..v
                        });
                        GROUPS[group].0.into()
                    }
                    (_, Err(e)) => format!("refused: {e}"),
                    (None, Ok(_)) => "already deleted".into(),
                }
            }
            Op::RecreateGroup { group } => {
                let group = usize::from(group) % GROUPS.len();
                let present = self
                    .server
                    .store_get("pimgroups", None, GROUPS[group].0)
                    .is_some();
                if present || self.group_live(group).is_some() {
                    "still there".into()
                } else {
                    self.group_serial[group] += 1;
                    let id = format!("{}-{}", GROUPS[group].0, self.group_serial[group]);
                    let last = self.truth.groups[group].last().cloned();
                    let remove = last.as_ref().is_some_and(|v| v.remove_standing);
                    let connection =
                        last.map_or_else(|| GROUPS[group].1.to_owned(), |v| v.directory);
                    self.apply_group(group, &connection, remove, id.clone())
                        .await;
                    format!("{} as {id}", GROUPS[group].0)
                }
            }
            Op::DriftAdd { group, user, owner } => {
                let group = usize::from(group) % GROUPS.len();
                let user = ["alice", "bob", "carol", "dave", "intruder"][usize::from(user) % 5];
                match self.truth.target_at(group, role_of(owner), now) {
                    Some(target) => {
                        self.hand_add(target.clone(), user);
                        format!("{user} into {target:?}")
                    }
                    None => "no target".into(),
                }
            }
            Op::DriftRemove { group, pick, owner } => {
                let group = usize::from(group) % GROUPS.len();
                match self.truth.target_at(group, role_of(owner), now) {
                    Some(target) => {
                        let mut state = directory::lock(&self.world);
                        let members: Vec<Member> = state.members(&target).into_iter().collect();
                        if members.is_empty() {
                            "nobody".into()
                        } else {
                            let member = members[usize::from(pick) % members.len()].clone();
                            if let Some(m) = state.groups.get_mut(&target) {
                                m.remove(&member);
                            }
                            state.writes.push(Write {
                                at: now,
                                target: target.clone(),
                                member: member.clone(),
                                added: false,
                                by_hand: true,
                            });
                            format!("{member:?} from {target:?}")
                        }
                    }
                    None => "no target".into(),
                }
            }
            Op::Crash { calls } => {
                self.leader.gate.crash_after(i64::from(calls));
                self.fault("crash");
                format!("replica {} after {calls} calls", self.leader.id)
            }
            Op::Failover { stale } => {
                // The old leader is cut off from the API server. Its lease fence lets it start
                // directory writes only until a lease duration after its last renewal, and the
                // new leader gets the lease only after that (controller::fence): its last
                // passes, from a stale cache, come before the new leader's first.
                self.fault("failover");
                self.leader.gate.partition();
                let stale_passes = self
                    .leader
                    .step(u64::from(stale), 1, usize::from(stale))
                    .await;
                self.stats.reconciles += stale_passes.reconciles;
                self.leader.gate.kill();
                let old = self.leader.id;
                self.restart();
                format!(
                    "replica {old} → {}, after {} stale passes",
                    self.leader.id, stale_passes.reconciles
                )
            }
            Op::DropWatches => {
                self.stats
                    .faults
                    .entry("watch drop")
                    .and_modify(|n| *n += 1)
                    .or_insert(1);
                self.server.drop_watches();
                self.leader.drop_watches();
                String::new()
            }
            Op::Gone => {
                self.stats
                    .faults
                    .entry("410 Gone")
                    .and_modify(|n| *n += 1)
                    .or_insert(1);
                self.server.expire_history();
                self.leader.drop_watches();
                String::new()
            }
            Op::ApiFaults { code, count } => {
                self.armed_api = Some((code, count));
                format!("{count}× {code}")
            }
            Op::DirFaults {
                directory,
                fault,
                count,
            } => {
                let name = DIRECTORIES[usize::from(directory) % DIRECTORIES.len()].0;
                let mut state = directory::lock(&self.world);
                let queue = state.faults.entry(name.to_owned()).or_default();
                for _ in 0..count {
                    queue.push_back(fault);
                }
                format!("{count}× {fault:?} on {name}")
            }
            Op::ClockJump { seconds } => {
                self.truth.read_clock(self.now());
                self.clock
                    .advance(SignedDuration::from_secs(i64::from(seconds)));
                self.truth.read_clock(self.now());
                if seconds < 0 {
                    self.truth.back_jumps += SignedDuration::from_secs(i64::from(-seconds));
                    self.truth.disturb(|_| true);
                } else {
                    // Time passed in one go, with no chance to act: the lag starts again.
                    self.disrupted();
                }
                self.stats
                    .faults
                    .entry(if seconds < 0 {
                        "clock jump back"
                    } else {
                        "clock jump forward"
                    })
                    .and_modify(|n| *n += 1)
                    .or_insert(1);
                self.leader.wake_all();
                format!("{seconds}s")
            }
        };
        let mut line = format!("{} {op} → {outcome}", self.now().strftime("%H:%M:%S%.3f"));
        let state = directory::lock(&self.world);
        for w in &state.writes[writes_before..] {
            let sign = if w.added { '+' } else { '-' };
            let hand = if w.by_hand { " by hand" } else { "" };
            line.push_str(&format!(
                "\n      {sign} {:?} {}/{}/{}{hand}",
                w.member, w.target.0, w.target.1, w.target.2
            ));
        }
        if state.refusals.len() + state.refused_adds.len() > refusals_before {
            line.push_str(&format!(
                "\n      directory refusals so far: {}",
                state.refusals.len() + state.refused_adds.len()
            ));
        }
        line
    }

    async fn tick(&mut self, millis: u64, sync: u8, order: u64, width: u8) -> String {
        let before = self.now();
        self.truth.read_clock(before);
        self.clock
            .advance(SignedDuration::from_millis(millis as i64));
        self.truth.elapsed += SignedDuration::from_millis(millis as i64);
        // Tokio's paused time moves with it: the operator's monotonic timers (MAX_HOLD, its
        // own-write filter, kube's retry waits) see the time pass.
        tokio::time::advance(std::time::Duration::from_millis(millis)).await;
        self.truth.read_clock(self.now());
        if let Some((code, count)) = self.armed_api.take() {
            let scope = if code == 409 {
                FaultScope::writes()
            } else {
                FaultScope::all()
            };
            self.server.fail_next_in(u32::from(count), code, scope);
            self.fault(match code {
                409 => "API 409",
                429 => "API 429",
                _ => "API 500",
            });
        }
        let served_before: u64 = directory::lock(&self.world).faults_served.values().sum();
        let kinds: Vec<Kind> = if self.leader.synced_once() {
            Kind::ALL
                .into_iter()
                .enumerate()
                .filter(|(i, _)| sync & (1 << i) != 0)
                .map(|(_, k)| k)
                .collect()
        } else {
            Kind::ALL.to_vec()
        };
        self.leader.sync(&self.server, &kinds);
        let report = self
            .leader
            .step(order, usize::from(width), STEP_BUDGET)
            .await;
        self.stats.reconciles += report.reconciles;
        let mut line = format!("{} reconciles, {} failed", report.reconciles, report.errors);
        self.server.clear_faults();
        let served_after: u64 = directory::lock(&self.world).faults_served.values().sum();
        if served_after > served_before {
            self.disrupted();
        }
        if self.leader.gate.is_dead() {
            line.push_str(&format!("; replica {} died", self.leader.id));
            self.disrupted();
            self.restart();
        }
        line
    }

    /// The objects and the directories as they are, for a replay's reader.
    pub fn describe_state(&self) -> String {
        let mut out = String::from("state at the end:\n");
        for (plural, fields) in [
            ("pimgroups", "/status"),
            ("activationrequests", "/status/phase"),
            ("pimgrants", "/spec"),
        ] {
            for value in self.server.store_list(plural, None) {
                let name = value
                    .pointer("/metadata/name")
                    .and_then(|n| n.as_str())
                    .unwrap_or("?");
                let deleting = value.pointer("/metadata/deletionTimestamp").is_some();
                let shown = value.pointer(fields).cloned().unwrap_or_default();
                out.push_str(&format!(
                    "  {plural}/{name}{}: {shown}\n",
                    if deleting { " (deleting)" } else { "" }
                ));
            }
        }
        let state = directory::lock(&self.world);
        for (target, members) in &state.groups {
            let names: Vec<String> = members.keys().map(|m| format!("{m:?}")).collect();
            out.push_str(&format!("  {target:?}: {}\n", names.join(", ")));
        }
        out
    }

    /// Faults stop: what was queued is dropped.
    pub fn heal(&mut self) {
        self.armed_api = None;
        self.server.clear_faults();
        let mut state = directory::lock(&self.world);
        state.faults.clear();
        for (kind, n) in std::mem::take(&mut state.faults_served) {
            *self.stats.faults.entry(kind).or_default() += n;
        }
        drop(state);
    }
}
