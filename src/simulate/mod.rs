//! `simulate`: the real engine on virtual time, over manifests and planned requests, with the
//! memory directory. It answers "what happens if…" (a policy change, a late approval) without
//! a cluster: the manifests decide the rules, the plan says who asks and who decides when.
//!
//! Each instant runs what the controllers would: every request is reconciled (seeing whether
//! the directory lists its principal), then every group converges the directory to its desired
//! members, then the requests once more, so that confirmations show at the same instant. Time
//! then jumps to the earliest deadline any of them named, or to the next planned decision.

mod timeline;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use crate::api::access_review::ReviewDecision;
use crate::api::activation_request::{Approval, Decision as Vote, Phase, Requester, Ticket};
use crate::api::common::Role;
use crate::api::pim_group::StandingAccess;
use crate::api::{ActivationRequest, ActivationRequestSpec};
use crate::core::membership::{
    GrantSource, Member, assignment_grant, desired_membership, request_grant,
};
use crate::directory::memory::MemoryDirectory;
use crate::directory::{Directory, DirectoryError, GroupId};
use crate::engine::{
    Catalog, DirectoryObservation, Proof, TrustAsWritten, reconcile_group, reconcile_request,
    review,
};
pub use timeline::{Event, GroupState, RequestState, Timeline, What};

/// Most instants one run visits: far more than any real plan needs, and a guard against a loop.
pub const MAX_STEPS: usize = 10_000;

/// A request to create at the start, as `--request` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedRequest {
    pub user: String,
    pub group: String,
    pub role: Role,
    /// `None` asks for the policy's maximum.
    pub duration: Option<String>,
    /// A scheduled start (`spec.startTime`).
    pub start_time: Option<Timestamp>,
}

/// An extension of a request, created at a time, as `--extend` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedExtension {
    /// The request it extends (planned, an earlier extension, or from the manifests).
    pub of: String,
    /// How much longer; `None` asks for the policy's maximum.
    pub duration: Option<String>,
    pub at: Timestamp,
}

/// An approver's decision at a time, as `--approve` and `--deny` describe it. A `request` of
/// the form `REVIEW/ASSIGNMENT` is a reviewer's decision in the running instance of that
/// AccessReview.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedDecision {
    pub approver: String,
    pub request: String,
    pub decision: Vote,
    pub at: Timestamp,
}

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Policies, groups, assignments, and any requests of the manifests.
    pub catalog: Catalog,
    /// Created at `start`, named `req-1`, `req-2`, … in order.
    pub requests: Vec<PlannedRequest>,
    pub decisions: Vec<PlannedDecision>,
    /// Named ext-1, ext-2, … in order.
    pub extensions: Vec<PlannedExtension>,
    pub start: Timestamp,
    pub until: Timestamp,
    /// Members each PimGroup's directory group has at the start besides those the manifests
    /// justify (`--members`, `--from-cluster`): what onboarding would find there.
    pub existing: BTreeMap<String, BTreeMap<Role, BTreeSet<Member>>>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SimulateError {
    #[error("the end {until} is before the start {start}")]
    EndsBeforeStart { start: Timestamp, until: Timestamp },
    #[error(
        "{approver} decides on {request:?}, which is neither planned nor in the manifests; the planned requests are req-1, req-2, …"
    )]
    UnknownRequest { approver: String, request: String },
    #[error(
        "--extend: {extension} extends {of:?}, which is neither planned (req-1, …, or an earlier ext-N) nor in the manifests"
    )]
    UnknownExtended { extension: String, of: String },
    #[error("{approver} decides on {request} at {at}, before --extend creates it at {created}")]
    DecisionBeforeExtension {
        approver: String,
        request: String,
        at: Timestamp,
        created: Timestamp,
    },
    #[error("--extend: {extension} is created at {at}, before the simulation starts at {start}")]
    ExtensionBeforeStart {
        extension: String,
        at: Timestamp,
        start: Timestamp,
    },
    #[error("{approver} decides on {request} at {at}, before the simulation starts at {start}")]
    DecisionBeforeStart {
        approver: String,
        request: String,
        at: Timestamp,
        start: Timestamp,
    },
    #[error(
        "the manifests already hold an ActivationRequest named {0:?}, the name of a planned request"
    )]
    NameTaken(String),
    #[error(
        "current members are given for PimGroup {0:?}, which the manifests do not declare; name a PimGroup of the manifests"
    )]
    UnknownGroup(String),
    #[error(
        "{reviewer} decides on {review}/{assignment}, but the manifests hold no AccessReview {review:?} or no EligibleAssignment {assignment:?}"
    )]
    UnknownReviewItem {
        reviewer: String,
        review: String,
        assignment: String,
    },
    #[error("the memory directory failed: {0}")]
    Directory(#[from] DirectoryError),
}

/// Runs the scenario and returns what happened.
pub fn run(scenario: Scenario) -> Result<Timeline, SimulateError> {
    run_with(scenario, false)
}

/// [`run`], deciding every request at every instant whether or not anything it reads changed:
/// the reference the wake rules of [`run`] are tested against. Slow on large plans.
#[doc(hidden)]
pub fn run_deciding_everything(scenario: Scenario) -> Result<Timeline, SimulateError> {
    run_with(scenario, true)
}

fn run_with(scenario: Scenario, decide_everything: bool) -> Result<Timeline, SimulateError> {
    let Scenario {
        catalog,
        requests,
        decisions,
        extensions,
        start,
        until,
        existing,
    } = scenario;
    if until < start {
        return Err(SimulateError::EndsBeforeStart { start, until });
    }
    if let Some(unknown) = existing.keys().find(|g| !catalog.groups.contains_key(*g)) {
        return Err(SimulateError::UnknownGroup(unknown.clone()));
    }
    let mut sim = Simulation {
        catalog,
        directory: MemoryDirectory::new(),
        ids: BTreeMap::new(),
        managed: BTreeMap::new(),
        timeline: Timeline::new(start, until),
        now: start,
        said: BTreeMap::new(),
        kept: BTreeMap::new(),
        requests_to_decide: Wakes::default(),
        groups_to_converge: Wakes::default(),
        decide_everything,
    };
    sim.prepare_manifest_objects();
    sim.plan_requests(requests)?;
    let mut extending = sim.check_extensions(extensions)?;
    let mut pending = sim.check_decisions(decisions, &extending)?;
    sim.open_groups(&existing)?;
    sim.requests_to_decide
        .mark_all(sim.catalog.requests.keys().cloned());
    sim.groups_to_converge
        .mark_all(sim.catalog.groups.keys().cloned());

    for _ in 0..MAX_STEPS {
        let now = sim.now;
        let (due, later): (Vec<_>, Vec<_>) = extending.into_iter().partition(|e| e.1.at <= now);
        extending = later;
        for (name, extension) in due {
            sim.extend(name, extension);
        }
        let (due, later): (Vec<_>, Vec<_>) = pending.into_iter().partition(|d| d.at <= now);
        pending = later;
        for decision in due {
            sim.decide(decision);
        }
        let review_deadlines = sim.reviews_pass();
        sim.requests_pass();
        let group_deadlines = sim.groups_pass()?;
        let request_deadlines = sim.requests_pass();
        let next = request_deadlines
            .into_iter()
            .chain(group_deadlines)
            .chain(review_deadlines)
            .chain(pending.iter().map(|d| d.at))
            .chain(extending.iter().map(|(_, e)| e.at))
            .filter(|t| *t > now)
            .min();
        match next {
            Some(next) if next <= until => sim.now = next,
            _ => return Ok(sim.finish()),
        }
    }
    sim.timeline.notes.push(format!(
        "stopped after {MAX_STEPS} steps at {}, before the end",
        sim.now
    ));
    Ok(sim.finish())
}

struct Simulation {
    catalog: Catalog,
    directory: MemoryDirectory,
    /// Each PimGroup's directory group.
    ids: BTreeMap<String, GroupId>,
    /// Members the simulated operator granted, per group and role (for `standingAccess: Report`).
    managed: BTreeMap<(String, Role), BTreeSet<Member>>,
    timeline: Timeline,
    now: Timestamp,
    /// The phase, reason and message last reported for each request.
    said: BTreeMap<String, (Phase, String, String)>,
    /// Why each member no grant explains was last reported kept.
    kept: BTreeMap<(String, Role, Member), String>,
    /// Requests to decide again: new ones, those whose deadline came, and those whose inputs
    /// changed (an approval, their member added or removed, a change in their extension
    /// chain). The controller is woken by the same changes through its watches; deciding all
    /// 10k requests at every instant made `simulate` quadratic (issue 21, item 6).
    requests_to_decide: Wakes,
    /// Groups to converge again: those with a request decided, and those whose desired
    /// members change now.
    groups_to_converge: Wakes,
    /// Decide every request in every pass: see [`run_deciding_everything`].
    decide_everything: bool,
}

/// A request as the API server stores it when created at `at`.
fn created_request(name: &str, spec: ActivationRequestSpec, at: Timestamp) -> ActivationRequest {
    let mut request = ActivationRequest::new(name, spec);
    request.metadata = ObjectMeta {
        name: Some(name.to_owned()),
        creation_timestamp: Some(Time(at)),
        generation: Some(1),
        ..ObjectMeta::default()
    };
    request
}

/// The directory is in memory and never waits, so its futures complete on first poll.
fn wait<T>(future: impl std::future::Future<Output = T>) -> T {
    futures::executor::block_on(future)
}

impl Simulation {
    /// Manifests were never applied: they are taken as created at the start. Requests need the
    /// identity the admission webhook stamps; one without any is left out with a note.
    fn prepare_manifest_objects(&mut self) {
        let start = self.now;
        for assignment in self.catalog.assignments.values_mut() {
            if assignment.metadata.creation_timestamp.is_none() {
                Arc::make_mut(assignment).metadata.creation_timestamp = Some(Time(start));
            }
        }
        let names: Vec<String> = self.catalog.requests.keys().cloned().collect();
        for name in names {
            let Some(request) = self.catalog.requests.get_mut(&name) else {
                continue;
            };
            let request = Arc::make_mut(request);
            let spec = &mut request.spec;
            let identity = spec
                .principal
                .clone()
                .or_else(|| spec.requester.as_ref().map(|r| r.username.clone()));
            let Some(identity) = identity else {
                self.timeline.notes.push(format!(
                    "ActivationRequest {name} is not simulated: it has no requester, which the admission webhook stamps; plan it with --request USER:{}:{}:{}",
                    spec.group,
                    spec.role(),
                    spec.duration.as_deref().unwrap_or("")
                ));
                self.catalog.requests.remove(&name);
                continue;
            };
            spec.principal.get_or_insert_with(|| identity.clone());
            spec.requester.get_or_insert_with(|| Requester {
                username: identity.clone(),
                ..Requester::default()
            });
            for approval in &mut spec.approvals {
                approval.time.get_or_insert(Time(start));
            }
            request
                .metadata
                .creation_timestamp
                .get_or_insert(Time(start));
            let (principal, group, role, duration, start_time) = (
                identity,
                spec.group.clone(),
                spec.role(),
                spec.duration.clone(),
                spec.start_time.as_ref().map(|t| t.0),
            );
            let created = request
                .metadata
                .creation_timestamp
                .as_ref()
                .map_or(start, |t| t.0);
            self.timeline.push(
                created.max(start),
                What::Created {
                    request: name.clone(),
                    principal,
                    group,
                    role,
                    duration,
                    start_time,
                },
            );
        }
    }

    /// Creates the planned requests as a requester's `kubectl create` and the webhook would.
    fn plan_requests(&mut self, requests: Vec<PlannedRequest>) -> Result<(), SimulateError> {
        for (i, plan) in requests.into_iter().enumerate() {
            let name = format!("req-{}", i + 1);
            if self.catalog.requests.contains_key(&name) {
                return Err(SimulateError::NameTaken(name));
            }
            let spec = ActivationRequestSpec {
                group: plan.group.clone(),
                role: Some(plan.role),
                duration: plan.duration.clone(),
                justification: Some(format!("simulated request {name}")),
                // Planned requests carry a ticket, so that a policy requiring one decides on
                // timing rather than on a field the plan cannot give.
                ticket: Some(Ticket {
                    system: "simulate".to_owned(),
                    number: name.clone(),
                }),
                start_time: plan.start_time.map(Time),
                requester: Some(Requester {
                    username: plan.user.clone(),
                    ..Requester::default()
                }),
                principal: Some(plan.user.clone()),
                ..ActivationRequestSpec::default()
            };
            self.catalog
                .insert_request(created_request(&name, spec, self.now));
            self.timeline.push(
                self.now,
                What::Created {
                    request: name,
                    principal: plan.user,
                    group: plan.group,
                    role: plan.role,
                    duration: plan.duration,
                    start_time: plan.start_time,
                },
            );
        }
        Ok(())
    }

    /// Names the planned extensions ext-1, ext-2, … and checks what each extends exists by
    /// then; returns them in time order.
    fn check_extensions(
        &mut self,
        extensions: Vec<PlannedExtension>,
    ) -> Result<Vec<(String, PlannedExtension)>, SimulateError> {
        let mut named: Vec<(String, PlannedExtension)> = Vec::new();
        for (i, extension) in extensions.into_iter().enumerate() {
            let name = format!("ext-{}", i + 1);
            if self.catalog.requests.contains_key(&name) {
                return Err(SimulateError::NameTaken(name));
            }
            let earlier = named
                .iter()
                .any(|(n, e)| *n == extension.of && e.at <= extension.at);
            if !earlier && !self.catalog.requests.contains_key(&extension.of) {
                return Err(SimulateError::UnknownExtended {
                    extension: name,
                    of: extension.of,
                });
            }
            if extension.at < self.now {
                return Err(SimulateError::ExtensionBeforeStart {
                    extension: name,
                    at: extension.at,
                    start: self.now,
                });
            }
            named.push((name, extension));
        }
        named.sort_by_key(|(_, e)| e.at);
        Ok(named)
    }

    /// Creates an extension as `kubectl pim extend` and the webhook would: the principal,
    /// group and role of the request it extends.
    fn extend(&mut self, name: String, planned: PlannedExtension) {
        let Some(original) = self.catalog.requests.get(&planned.of).cloned() else {
            return;
        };
        let spec = ActivationRequestSpec {
            group: original.spec.group.clone(),
            role: Some(original.spec.role()),
            duration: planned.duration.clone(),
            justification: Some(format!("simulated extension {name}")),
            ticket: Some(Ticket {
                system: "simulate".to_owned(),
                number: name.clone(),
            }),
            extends: Some(planned.of.clone()),
            requester: original.spec.requester.clone(),
            principal: original.spec.principal.clone(),
            ..ActivationRequestSpec::default()
        };
        self.catalog
            .insert_request(created_request(&name, spec, planned.at));
        // The original reads its extensions (one may now hold its access on).
        self.requests_to_decide.mark(planned.of.clone());
        self.requests_to_decide.mark(name.clone());
        self.timeline.push(
            self.now,
            What::ExtensionCreated {
                request: name,
                extends: planned.of,
                principal: original.spec.principal.clone().unwrap_or_default(),
                by: planned.duration,
            },
        );
    }

    fn check_decisions(
        &mut self,
        mut decisions: Vec<PlannedDecision>,
        extensions: &[(String, PlannedExtension)],
    ) -> Result<Vec<PlannedDecision>, SimulateError> {
        for d in &decisions {
            if let Some((review, assignment)) = d.request.split_once('/') {
                if !self.catalog.reviews.contains_key(review)
                    || !self.catalog.assignments.contains_key(assignment)
                {
                    return Err(SimulateError::UnknownReviewItem {
                        reviewer: d.approver.clone(),
                        review: review.to_owned(),
                        assignment: assignment.to_owned(),
                    });
                }
                continue;
            }
            let planned = extensions.iter().find(|(n, _)| *n == d.request);
            if let Some((_, extension)) = planned
                && d.at < extension.at
            {
                return Err(SimulateError::DecisionBeforeExtension {
                    approver: d.approver.clone(),
                    request: d.request.clone(),
                    at: d.at,
                    created: extension.at,
                });
            }
            if planned.is_none() && !self.catalog.requests.contains_key(&d.request) {
                return Err(SimulateError::UnknownRequest {
                    approver: d.approver.clone(),
                    request: d.request.clone(),
                });
            }
            if d.at < self.now {
                return Err(SimulateError::DecisionBeforeStart {
                    approver: d.approver.clone(),
                    request: d.request.clone(),
                    at: d.at,
                    start: self.now,
                });
            }
            if d.at > self.timeline.until {
                self.timeline.notes.push(format!(
                    "{} decides on {} at {}, after the end: not simulated",
                    d.approver, d.request, d.at
                ));
            }
        }
        // In time order; a stable sort keeps the command line's order for equal times.
        decisions.sort_by_key(|d| d.at);
        Ok(decisions)
    }

    /// Finds each PimGroup's directory group, and fills it as the operator would have left it:
    /// with the members that manifests already justify (Active assignments, active requests),
    /// and the `existing` members nobody granted through PIM.
    fn open_groups(
        &mut self,
        existing: &BTreeMap<String, BTreeMap<Role, BTreeSet<Member>>>,
    ) -> Result<(), SimulateError> {
        let groups: Vec<_> = self.catalog.groups.values().cloned().collect();
        for group in groups {
            let name = group.metadata.name.clone().unwrap_or_default();
            let id = wait(self.directory.ensure_group(&group))?;
            for role in roles(&group) {
                // What the operator left in the group before the simulation starts: the grants
                // the manifests' stored status records, as they were made (a policy changed
                // since is applied by the first pass, as the operator would).
                let recorded = self
                    .catalog
                    .requests
                    .iter()
                    .filter(|(_, r)| r.spec.group == name && r.spec.role() == role)
                    .filter_map(|(n, r)| request_grant(n, &r.spec, r.status.as_ref()?));
                let assigned = self
                    .catalog
                    .assignment_windows(&name, role, self.now)
                    .into_iter()
                    .filter_map(|(n, a, window)| assignment_grant(n, &a.spec, &window));
                let grants: Vec<_> = recorded.chain(assigned).collect();
                for member in desired_membership(&grants, self.now).set() {
                    self.directory.add_by_hand(&id.0, role, member.clone());
                    self.managed
                        .entry((name.clone(), role))
                        .or_default()
                        .insert(member);
                }
                let standing = existing.get(&name).and_then(|roles| roles.get(&role));
                for member in standing.into_iter().flatten() {
                    self.directory.add_by_hand(&id.0, role, member.clone());
                }
            }
            self.ids.insert(name, id);
        }
        self.timeline.initial = self.membership();
        Ok(())
    }

    fn decide(&mut self, planned: PlannedDecision) {
        if let Some((review, assignment)) = planned.request.split_once('/') {
            self.review_decision(review, assignment, &planned);
            return;
        }
        let Some(request) = self.catalog.requests.get_mut(&planned.request) else {
            return;
        };
        self.requests_to_decide.mark(planned.request.clone());
        let approvals = &mut Arc::make_mut(request).spec.approvals;
        // One entry per approver: a later decision replaces the entry, as a re-apply would.
        approvals.retain(|a| a.approver != planned.approver);
        approvals.push(Approval {
            approver: planned.approver.clone(),
            decision: planned.decision,
            reason: None,
            time: Some(Time(planned.at)),
            ..Default::default()
        });
        self.timeline.push(
            self.now,
            What::Decided {
                request: planned.request,
                approver: planned.approver,
                decision: planned.decision,
            },
        );
    }

    /// A reviewer's decision, in the instance running now: as `kubectl pim review` writes it.
    fn review_decision(&mut self, review: &str, assignment: &str, planned: &PlannedDecision) {
        let Some(object) = self.catalog.reviews.get(review).cloned() else {
            return;
        };
        let running = review::settings(&object.spec)
            .ok()
            .and_then(|s| review::running_instance(&object, &s, self.now));
        let Some(instance) = running else {
            self.timeline.notes.push(format!(
                "{} decides on {assignment} in {review} at {}, when no instance runs: ignored",
                planned.approver, self.now
            ));
            return;
        };
        // As the webhook would: only reviewers the review names decide, never on their own
        // assignment unless it allows self-review.
        let role = match self.catalog.assignments.get(assignment) {
            Some(a) => {
                review::reviewer_role(&self.catalog, &object.spec, a, &planned.approver, &[])
            }
            None => Err(format!("no EligibleAssignment {assignment:?}")),
        };
        let role = match role {
            Ok(role) => role,
            Err(why) => {
                self.timeline.notes.push(format!(
                    "{} decides on {assignment} in {review} at {}: refused, as the webhook would ({why})",
                    planned.approver, self.now
                ));
                return;
            }
        };
        let mut object = (*object).clone();
        object.spec.decisions.retain(|d| {
            !(d.instance == instance.id
                && d.assignment == assignment
                && d.reviewer == planned.approver)
        });
        object.spec.decisions.push(ReviewDecision {
            instance: instance.id.clone(),
            assignment: assignment.to_owned(),
            reviewer: planned.approver.clone(),
            decision: planned.decision,
            reason: "simulated".to_owned(),
            time: Some(Time(self.now)),
            assignment_uid: self
                .catalog
                .assignments
                .get(assignment)
                .and_then(|a| a.metadata.uid.clone()),
            reviewer_as: Some(role),
            ..Default::default()
        });
        self.catalog.insert_review(object);
        self.timeline.push(
            self.now,
            What::ReviewDecided {
                review: review.to_owned(),
                instance: instance.id,
                assignment: assignment.to_owned(),
                reviewer: planned.approver.clone(),
                decision: planned.decision,
            },
        );
    }

    /// Every access review, as its controller would pass over it: instances open and end, and
    /// a denial wakes every request and group (it ends assignments). Returns the earliest time
    /// a review changes again.
    fn reviews_pass(&mut self) -> Option<Timestamp> {
        let mut next: Option<Timestamp> = None;
        let mut denials_changed = false;
        let names: Vec<String> = self.catalog.reviews.keys().cloned().collect();
        for name in names {
            let Some(object) = self.catalog.reviews.get(&name).cloned() else {
                continue;
            };
            let out = review::reconcile_review(&self.catalog, &object, &TrustAsWritten, self.now);
            if let Some(id) = &out.opened {
                let assignments = out
                    .status
                    .current
                    .iter()
                    .flat_map(|c| &c.items)
                    .map(|i| i.assignment.clone())
                    .collect();
                self.timeline.push(
                    self.now,
                    What::ReviewOpened {
                        review: name.clone(),
                        instance: id.clone(),
                        assignments,
                    },
                );
            }
            if let Some((id, denied)) = &out.completed {
                let kept = out
                    .status
                    .current
                    .iter()
                    .filter(|c| c.id == *id)
                    .flat_map(|c| &c.items)
                    .filter(|i| !denied.iter().any(|d| d.assignment == i.assignment))
                    .map(|i| i.assignment.clone())
                    .collect();
                self.timeline.push(
                    self.now,
                    What::ReviewCompleted {
                        review: name.clone(),
                        instance: id.clone(),
                        denied: denied
                            .iter()
                            .map(|d| format!("{} ({})", d.assignment, d.by))
                            .collect(),
                        kept,
                    },
                );
            }
            let before = object.status.as_ref().map(|s| &s.denied);
            denials_changed |= before != Some(&out.status.denied)
                && !(before.is_none_or(Vec::is_empty) && out.status.denied.is_empty());
            next = [next, out.next_change].into_iter().flatten().min();
            let mut updated = (*object).clone();
            updated.status = Some(out.status);
            self.catalog.insert_review(updated);
        }
        if denials_changed {
            self.requests_to_decide
                .mark_all(self.catalog.requests.keys().cloned());
            self.groups_to_converge
                .mark_all(self.catalog.groups.keys().cloned());
        }
        next
    }

    fn member_present(&self, request: &ActivationRequest) -> bool {
        let spec = &request.spec;
        let (Some(id), Some(principal)) = (self.ids.get(&spec.group), spec.principal.as_deref())
        else {
            return false;
        };
        self.directory
            .has_member(&id.0, spec.role(), &Member::User(principal.to_owned()))
    }

    /// Decides the requests that are due or whose inputs changed, in name order (every
    /// request, when deciding everything); returns the earliest deadline still to come.
    fn requests_pass(&mut self) -> Option<Timestamp> {
        let now = self.now;
        self.requests_to_decide.take_due(now);
        let everything: Vec<String> = if self.decide_everything {
            self.catalog.requests.keys().cloned().collect()
        } else {
            Vec::new()
        };
        let mut all = everything.into_iter();
        let mut after: Option<String> = None;
        loop {
            let next = if self.decide_everything {
                all.next()
            } else {
                self.requests_to_decide.next_after(after.as_deref())
            };
            let Some(name) = next else {
                break;
            };
            after = Some(name.clone());
            let Some(request) = self.catalog.requests.get(&name).cloned() else {
                self.requests_to_decide.forget(&name);
                continue;
            };
            let member_present = self.member_present(&request);
            self.groups_to_converge.mark(request.spec.group.clone());
            let observation = DirectoryObservation {
                member_present,
                ..Default::default()
            };
            // Directory memberships of requesters are unknown here: no group-based eligibility.
            let mut outcome = reconcile_request(
                &self.catalog,
                &request,
                &TrustAsWritten,
                observation,
                &|_| false,
                self.now,
            );
            // The policy's alerts, as the request controller raises them.
            let stored_conditions = request
                .status
                .as_ref()
                .map(|s| s.conditions.as_slice())
                .unwrap_or_default();
            let raised: Vec<_> =
                crate::engine::alerts::request_alerts(&self.catalog, &request, &outcome.status)
                    .into_iter()
                    .filter(|a| {
                        !stored_conditions
                            .iter()
                            .any(|c| c.type_ == a.type_ && c.status == "True")
                    })
                    .collect();
            self.requests_to_decide
                .decided(&name, outcome.decision.next_deadline, now);
            let stored = request.status.as_ref();
            // The window first: a transition's message often refers to it.
            let window = |s: Option<&crate::api::ActivationRequestStatus>| {
                s.and_then(|s| Some((s.starts_at.as_ref()?.0, s.expires_at.as_ref()?.0)))
            };
            if let Some((starts_at, expires_at)) = window(Some(&outcome.status))
                && window(stored) != Some((starts_at, expires_at))
            {
                self.timeline.push(
                    self.now,
                    What::Window {
                        request: name.clone(),
                        starts_at,
                        expires_at,
                        previous_end: window(stored).map(|(_, end)| end),
                        clipped_by: outcome.status.end_clipped_by,
                    },
                );
            }
            if !raised.is_empty() {
                outcome.status.conditions = crate::core::status::merge_conditions(
                    &outcome.status.conditions,
                    &raised,
                    request.metadata.generation,
                    self.now,
                );
            }
            let said = (
                outcome.decision.phase,
                outcome.decision.reason.to_owned(),
                outcome.decision.message.clone(),
            );
            if let Some((from, to)) = outcome.transition {
                self.timeline.push(
                    self.now,
                    What::Transition {
                        request: name.clone(),
                        from,
                        to,
                        reason: said.1.clone(),
                        message: said.2.clone(),
                    },
                );
            } else if self.said.get(&name) != Some(&said) {
                // Same phase, news all the same: an ignored approval, a shorter window.
                self.timeline.push(
                    self.now,
                    What::Update {
                        request: name.clone(),
                        phase: said.0,
                        reason: said.1.clone(),
                        message: said.2.clone(),
                    },
                );
            }
            self.said.insert(name.clone(), said);
            for alert in raised {
                self.timeline.push(
                    self.now,
                    What::Alert {
                        request: name.clone(),
                        alert: alert.type_.to_owned(),
                        message: alert.message,
                    },
                );
            }
            if outcome.status_changed(stored) {
                // Requests in one chain read each other's status.
                self.requests_to_decide
                    .mark_all(request.spec.extends.clone());
                self.requests_to_decide.mark_all(
                    self.catalog
                        .extensions_of(&name)
                        .into_iter()
                        .filter_map(|e| e.metadata.name.clone()),
                );
                let mut updated = (*request).clone();
                updated.status = Some(outcome.status);
                self.catalog.insert_request(updated);
            }
        }
        self.requests_to_decide.next_deadline()
    }

    /// The requests of `member` in `group`/`role` see the directory differently now.
    fn member_changed(&mut self, group: &str, role: Role, member: &Member) {
        let Member::User(user) = member else {
            return;
        };
        let concerned = self
            .catalog
            .requests_of(group, role)
            .filter(|(_, r)| r.spec.principal.as_deref() == Some(user.as_str()))
            .map(|(name, _)| name.clone());
        self.requests_to_decide.mark_all(concerned);
    }

    /// Converges every group's directory membership; returns when the desired sets change next.
    fn groups_pass(&mut self) -> Result<Option<Timestamp>, SimulateError> {
        let now = self.now;
        self.groups_to_converge.take_due(now);
        let names: Vec<String> = if self.decide_everything {
            self.catalog.groups.keys().cloned().collect()
        } else {
            self.groups_to_converge.take_all()
        };
        for name in names {
            let Some(group) = self.catalog.groups.get(&name).cloned() else {
                self.groups_to_converge.forget(&name);
                continue;
            };
            let Some(id) = self.ids.get(&name).cloned() else {
                continue;
            };
            let mut deadlines = Vec::new();
            for role in roles(&group) {
                let actual = wait(self.directory.list_members(&id, role))?;
                let key = (name.clone(), role);
                let managed = self.managed.get(&key).cloned().unwrap_or_default();
                let outcome = reconcile_group(
                    &self.catalog,
                    &name,
                    role,
                    &actual,
                    &managed,
                    self.now,
                    &Proof::stamped(&TrustAsWritten),
                );
                deadlines.extend(outcome.desired.next_change);
                self.report_kept(&group, role, &outcome.plan);
                for member in outcome.plan.remove {
                    wait(self.directory.remove_member(&id, role, &member))?;
                    self.member_changed(&name, role, &member);
                    self.managed.entry(key.clone()).or_default().remove(&member);
                    self.timeline.push(
                        self.now,
                        What::MemberRemoved {
                            group: name.clone(),
                            role,
                            member: member.to_string(),
                        },
                    );
                }
                for member in outcome.plan.add {
                    wait(self.directory.add_member(&id, role, &member))?;
                    self.member_changed(&name, role, &member);
                    self.managed
                        .entry(key.clone())
                        .or_default()
                        .insert(member.clone());
                    let because = outcome
                        .desired
                        .members
                        .get(&member)
                        .into_iter()
                        .flatten()
                        .map(|source| match source {
                            GrantSource::Request(r) => format!("request {r}"),
                            GrantSource::Assignment(a) => format!("assignment {a}"),
                        })
                        .collect();
                    self.timeline.push(
                        self.now,
                        What::MemberAdded {
                            group: name.clone(),
                            role,
                            member: member.to_string(),
                            because,
                        },
                    );
                }
            }
            let next = deadlines.into_iter().min();
            self.groups_to_converge.decided(&name, next, now);
        }
        Ok(self.groups_to_converge.next_deadline())
    }

    /// Says once, and again when the reason changes, why a member no grant explains stays.
    fn report_kept(
        &mut self,
        group: &crate::api::PimGroup,
        role: Role,
        plan: &crate::core::membership::MembershipPlan,
    ) {
        let name = group.metadata.name.clone().unwrap_or_default();
        let unexplained = match (&group.spec.standing_access, &group.spec.adopt_after) {
            (StandingAccess::Adopt, Some(at)) => format!(
                "adopting (standingAccess: Adopt): no grant explains it; listed in status.unexplainedMembers until adoptAfter ({})",
                at.0
            ),
            (StandingAccess::Adopt, None) => "adopting (standingAccess: Adopt): no grant explains it; listed in status.unexplainedMembers until standingAccess is set to Remove".to_owned(),
            _ => "standingAccess: Report: no grant explains it; listed in status.unexplainedMembers".to_owned(),
        };
        let kept = plan
            .unexplained
            .iter()
            .map(|m| (m, unexplained.clone()))
            .chain(
                plan.protected
                    .iter()
                    .map(|m| (m, "protected (spec.protectedMembers)".to_owned())),
            )
            .chain(plan.kept_last.iter().map(|m| {
                (
                    m,
                    "the last member (spec.protectLastMember): no grant explains it; it goes once another member is in"
                        .to_owned(),
                )
            }));
        let mut now_kept = BTreeSet::new();
        for (member, why) in kept {
            let key = (name.clone(), role, member.clone());
            now_kept.insert(key.clone());
            if self.kept.get(&key) != Some(&why) {
                self.timeline.push(
                    self.now,
                    What::MemberKept {
                        group: name.clone(),
                        role,
                        member: member.to_string(),
                        why: why.clone(),
                    },
                );
                self.kept.insert(key, why);
            }
        }
        self.kept.retain(|(g, r, m), _| {
            *g != name || *r != role || now_kept.contains(&(g.clone(), *r, m.clone()))
        });
    }

    /// Members of every (group, role) now.
    fn membership(&self) -> Vec<GroupState> {
        let mut out = Vec::new();
        for (name, group) in &self.catalog.groups {
            let Some(id) = self.ids.get(name) else {
                continue;
            };
            for role in roles(group) {
                out.push(GroupState {
                    group: name.clone(),
                    role,
                    members: self
                        .directory
                        .members(&id.0, role)
                        .iter()
                        .map(ToString::to_string)
                        .collect(),
                });
            }
        }
        out
    }

    fn finish(mut self) -> Timeline {
        self.timeline.requests = self
            .catalog
            .requests
            .iter()
            .map(|(name, request)| {
                let status = request.status.clone().unwrap_or_default();
                let last = status.history.last();
                RequestState {
                    request: name.clone(),
                    phase: status.phase.unwrap_or_default(),
                    reason: last.map(|t| t.reason.clone()).unwrap_or_default(),
                    expires_at: status.expires_at.map(|t| t.0),
                }
            })
            .collect();
        self.timeline.membership = self.membership();
        self.timeline
    }
}

/// The roles a PimGroup manages: member, and owner when it names a policy for it.
/// Which objects to look at again, by name: those marked, and those whose deadline has come.
#[derive(Debug, Default)]
struct Wakes {
    marked: BTreeSet<String>,
    deadlines: BTreeMap<String, Timestamp>,
    due: BTreeSet<(Timestamp, String)>,
}

impl Wakes {
    fn mark(&mut self, name: String) {
        self.marked.insert(name);
    }

    fn mark_all(&mut self, names: impl IntoIterator<Item = String>) {
        self.marked.extend(names);
    }

    /// Marks those whose deadline is at or before `now`.
    fn take_due(&mut self, now: Timestamp) {
        while let Some((at, name)) = self.due.first().cloned()
            && at <= now
        {
            self.due.remove(&(at, name.clone()));
            self.deadlines.remove(&name);
            self.marked.insert(name);
        }
    }

    /// The first marked name after `after`: a worklist in name order, so that one marked
    /// during a pass is looked at in it when its name comes later, as a pass over all would.
    fn next_after(&self, after: Option<&str>) -> Option<String> {
        let from = match after {
            Some(last) => std::ops::Bound::Excluded(last),
            None => std::ops::Bound::Unbounded,
        };
        self.marked
            .range::<str, _>((from, std::ops::Bound::Unbounded))
            .next()
            .cloned()
    }

    /// Every marked name, unmarked.
    fn take_all(&mut self) -> Vec<String> {
        std::mem::take(&mut self.marked).into_iter().collect()
    }

    /// `name` was looked at `now` and asks to be looked at again at `deadline`.
    fn decided(&mut self, name: &str, deadline: Option<Timestamp>, now: Timestamp) {
        self.forget(name);
        if let Some(at) = deadline.filter(|at| *at > now) {
            self.deadlines.insert(name.to_owned(), at);
            self.due.insert((at, name.to_owned()));
        }
    }

    fn forget(&mut self, name: &str) {
        self.marked.remove(name);
        if let Some(at) = self.deadlines.remove(name) {
            self.due.remove(&(at, name.to_owned()));
        }
    }

    fn next_deadline(&self) -> Option<Timestamp> {
        self.due.first().map(|(at, _)| *at)
    }
}

fn roles(group: &crate::api::PimGroup) -> Vec<Role> {
    let mut roles = vec![Role::Member];
    if group.spec.roles.owner.is_some() {
        roles.push(Role::Owner);
    }
    roles
}
