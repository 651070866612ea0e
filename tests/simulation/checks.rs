//! The invariants, checked after every operation (I1–I4) and once faults have stopped (I5).

use std::collections::{BTreeMap, BTreeSet};

use jiff::{SignedDuration, Timestamp};
use pim_operator::api::ActivationRequest;
use pim_operator::api::PimGrant;
use pim_operator::api::activation_request::Phase;
use pim_operator::api::delivery::AuditSnapshot;
use pim_operator::core::membership::Member;

use super::directory::{self, DirState, Target};
use super::model::{GROUPS, Truth, policy_of};
use super::world::{RESYNC, Sim};

#[derive(Debug, Clone)]
pub struct Violation {
    pub invariant: &'static str,
    /// The operation after which it was seen (its index in the run).
    pub step: usize,
    pub message: String,
}

#[derive(Debug, Default)]
pub struct Checker {
    /// Directory writes already judged (I2).
    writes_seen: usize,
    /// Each request's history as last seen, as text (I4).
    histories: BTreeMap<String, Vec<String>>,
    /// Each audit record id and what it said (I4).
    records: BTreeMap<String, String>,
    pub violations: Vec<Violation>,
    pub checks: u64,
}

/// I1's allowed lag: two resync intervals, plus any time the clock was set back.
pub fn lag(truth: &Truth) -> SignedDuration {
    RESYNC * 2 + truth.back_jumps
}

fn user(member: &Member) -> Option<&str> {
    match member {
        Member::User(name) => Some(name),
        Member::Group(_) => None,
    }
}

/// When `member` was last put into `target` by hand.
fn hand_added(state: &DirState, target: &Target, member: &Member) -> Option<Timestamp> {
    state
        .writes
        .iter()
        .rev()
        .find(|w| w.by_hand && w.added && &w.target == target && &w.member == member)
        .map(|w| w.at)
}

/// Whether, at some moment in `[from, to]`, no PimGroup removed standing members of `target`.
fn standing_allowed(truth: &Truth, target: &Target, from: Timestamp, to: Timestamp) -> bool {
    let mut moments = vec![from, to];
    for versions in &truth.groups {
        for v in versions {
            if v.from >= from && v.from <= to {
                moments.push(v.from);
                moments.push(v.from - SignedDuration::from_nanos(1));
            }
        }
    }
    moments
        .into_iter()
        .filter(|t| *t >= from && *t <= to)
        .any(|t| truth.managed_at(target, t) != Some(true))
}

fn refused_since(state: &DirState, target: &Target, member: &Member, from: Timestamp) -> bool {
    state
        .refusals
        .iter()
        .any(|(t, x, m, _)| x == target && m == member && *t >= from)
}

/// Whether a revocation the directory refuses shows in status: `RevocationOverdue` on a
/// request of the member, or a PimGroup's `InSync=False` naming them.
fn reported(sim: &Sim, member: &str) -> bool {
    let conditions = |value: &serde_json::Value| {
        value
            .pointer("/status/conditions")
            .and_then(|c| c.as_array())
            .cloned()
            .unwrap_or_default()
    };
    let on_request = sim
        .server
        .store_list("activationrequests", None)
        .iter()
        .any(|r| {
            r.pointer("/spec/principal").and_then(|p| p.as_str()) == Some(member)
                && conditions(r)
                    .iter()
                    .any(|c| c["reason"] == "RevocationOverdue")
        });
    let on_group = sim.server.store_list("pimgroups", None).iter().any(|g| {
        conditions(g).iter().any(|c| {
            c["type"] == "InSync"
                && c["status"] == "False"
                && c["message"].as_str().is_some_and(|m| m.contains(member))
        })
    });
    on_request || on_group
}

fn forged(request: &ActivationRequest) -> bool {
    request
        .status
        .as_ref()
        .is_some_and(|s| s.approved_by.iter().any(|a| a == "mallory"))
}

impl Checker {
    fn violate(&mut self, invariant: &'static str, step: usize, message: String) {
        self.violations.push(Violation {
            invariant,
            step,
            message,
        });
    }

    pub fn check(&mut self, sim: &Sim, step: usize) {
        let now = sim.now();
        let truth = &sim.truth;
        let mut state = directory::lock(&sim.world);
        state.expire(now);
        let from = now - lag(truth);

        // I1: every member is explained, or within the lag of its explanation's end.
        let disrupted = truth.disrupted_since(from);
        let mut found = Vec::new();
        for (target, members) in &state.groups {
            for (member, held) in members {
                let Some(name) = user(member) else { continue };
                self.checks += 1;
                if disrupted || refused_since(&state, target, member, from) {
                    continue;
                }
                if held.by_hand
                    && (hand_added(&state, target, member).is_some_and(|t| t >= from)
                        || standing_allowed(truth, target, from, now))
                {
                    continue;
                }
                if truth.explained_lagged(name, target, from, now, None, true) {
                    continue;
                }
                found.push(format!(
                    "{name} is in {target:?} (since {}), and no grant or standing access explains it since {from}",
                    held.since
                ));
            }
        }
        for message in found {
            self.violate("I1", step, message);
        }

        // I2/I3: every add serves a window that is valid at that moment.
        let writes = state.writes[self.writes_seen..].to_vec();
        self.writes_seen = state.writes.len();
        for w in writes.iter().filter(|w| w.added && !w.by_hand) {
            let Some(name) = user(&w.member) else {
                continue;
            };
            self.checks += 1;
            // Caches lag by time as it passed, not by clock readings (a jump forward is not
            // time the watches had).
            let since = (w.at - lag(truth)).min(truth.earliest_reading_within(lag(truth), w.at));
            if truth.explained_lagged(name, &w.target, since, w.at, Some(w.at), true) {
                continue;
            }
            let approvals_missing =
                truth.explained_lagged(name, &w.target, since, w.at, Some(w.at), false);
            let (invariant, what) = if approvals_missing {
                ("I3", "without the approvals its policy requires")
            } else {
                ("I2", "outside any valid window")
            };
            self.violate(
                invariant,
                step,
                format!("{name} added to {:?} at {} {what}", w.target, w.at),
            );
        }
        drop(state);

        // I3 (status) and I4, over the requests as the API server has them.
        for value in sim.server.store_list("activationrequests", None) {
            let Ok(request) = serde_json::from_value::<ActivationRequest>(value) else {
                continue;
            };
            self.check_request(truth, &request, step);
        }
    }

    fn check_request(&mut self, truth: &Truth, request: &ActivationRequest, step: usize) {
        let name = request.metadata.name.clone().unwrap_or_default();
        let Some(status) = request.status.as_ref() else {
            return;
        };
        let is_forged = forged(request);
        self.checks += 1;
        // I4: history is append-only, so each record id (uid/index) always says the same.
        let history: Vec<String> = status
            .history
            .iter()
            .map(|t| format!("{} {} {}", t.phase, t.reason, t.time.0))
            .collect();
        // By uid: a name can come back as a new object (an approver's apply creates one).
        let uid = request.metadata.uid.clone().unwrap_or_default();
        let before = self.histories.get(&uid).cloned().unwrap_or_default();
        if !history.starts_with(&before) && !is_forged {
            self.violate(
                "I4",
                step,
                format!("{name}'s history was rewritten: {before:?} → {history:?}"),
            );
        }
        if let Some(phase) = status.phase
            && !is_forged
            && phase != Phase::Pending
            && status.history.last().map(|t| t.phase) != Some(phase)
        {
            self.violate(
                "I4",
                step,
                format!("{name} is {phase} with no transition recorded for it ({history:?})"),
            );
        }
        // I3: each transition into Active, when it was made, had the approvals it needed.
        let seen = if history.starts_with(&before) {
            before.len()
        } else {
            0
        };
        for transition in status.history.iter().skip(seen) {
            if transition.phase != Phase::Active || is_forged {
                continue;
            }
            let at = transition.time.0;
            let approved = truth
                .requests
                .iter()
                .find(|r| r.name == name)
                .is_some_and(|r| {
                    r.signed
                        && policy_of(r.group, r.role).is_some_and(|p| {
                            truth.policies[p].iter().any(|v| {
                                // Within the lag of the caches, and of a clock set back;
                                // history times are whole seconds.
                                truth
                                    .moments(
                                        &r.user,
                                        at - lag(truth),
                                        at + truth.back_jumps + SignedDuration::from_secs(1),
                                    )
                                    .into_iter()
                                    .any(|t| truth.approved_at(r, v, t).is_some())
                            })
                        })
                });
            if !approved {
                self.violate(
                    "I3",
                    step,
                    format!("{name} became Active at {at} without a signed request and the approvals its policy requires"),
                );
            }
        }
        self.histories.insert(uid, history);
        let records = pim_operator::audit::record::records(
            request,
            &AuditSnapshot::default(),
            0..status.history.len(),
            0,
        );
        let mut ids = BTreeSet::new();
        for record in records {
            let said = format!("{} {} {}", record.outcome, record.reason, record.time);
            if !ids.insert(record.id.clone()) {
                self.violate(
                    "I4",
                    step,
                    format!("{name}: audit record id {} repeated", record.id),
                );
            }
            match self.records.get(&record.id) {
                Some(before) if *before != said && !is_forged => self.violate(
                    "I4",
                    step,
                    format!("audit record {} said {before:?}, now {said:?}", record.id),
                ),
                _ => {
                    self.records.insert(record.id, said);
                }
            }
        }
    }

    /// I4 on what the real emitter sent: every transition of every request still there has its
    /// record, and a record sent again (at least once, across crashes) says the same thing.
    pub fn check_audit(&mut self, sim: &Sim, lines: &[String], step: usize) {
        let mut said: BTreeMap<String, String> = BTreeMap::new();
        for line in lines {
            // The target also carries security events in plain text (a status claiming more
            // than its signed inputs prove, say): only records are JSON.
            let Ok(record) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let id = record["id"].as_str().unwrap_or_default().to_owned();
            let content = format!(
                "{} {} {}",
                record["outcome"], record["reason"], record["time"]
            );
            self.checks += 1;
            match said.get(&id) {
                Some(before) if *before != content => self.violate(
                    "I4",
                    step,
                    format!("audit record {id} was sent as {before} and again as {content}"),
                ),
                _ => {
                    said.insert(id, content);
                }
            }
        }
        for value in sim.server.store_list("activationrequests", None) {
            let Ok(request) = serde_json::from_value::<ActivationRequest>(value) else {
                continue;
            };
            let uid = request.metadata.uid.clone().unwrap_or_default();
            let name = request.metadata.name.clone().unwrap_or_default();
            let history = request.status.map(|s| s.history).unwrap_or_default();
            for (index, transition) in history.iter().enumerate() {
                // Emission follows the transition; give it a resync interval.
                if transition.time.0 > sim.now() - RESYNC {
                    continue;
                }
                self.checks += 1;
                if !said.contains_key(&format!("{uid}/{index}")) {
                    self.violate(
                        "I4",
                        step,
                        format!(
                            "{name}'s transition {index} ({}) has no audit record",
                            transition.phase
                        ),
                    );
                }
            }
        }
    }

    /// I5: with faults over and time given to settle, directory, ledger and status agree with
    /// what the truth explains.
    pub fn check_settled(&mut self, sim: &Sim, step: usize) {
        let now = sim.now();
        let truth = &sim.truth;
        let mut state = directory::lock(&sim.world);
        state.expire(now);
        let from = now - lag(truth);
        let mut found: Vec<String> = Vec::new();
        let mut managed: BTreeSet<Target> = BTreeSet::new();
        for g in 0..GROUPS.len() {
            for role in [
                pim_operator::api::common::Role::Member,
                pim_operator::api::common::Role::Owner,
            ] {
                if let Some(target) = truth.target_at(g, role, now) {
                    managed.insert(target);
                }
            }
        }
        // At rest, every member is explained now, with no lag: by a grant, or as standing
        // access where standing access stays.
        for (target, members) in &state.groups {
            for (member, held) in members {
                let Some(name) = user(member) else { continue };
                self.checks += 1;
                let standing = held.by_hand && truth.managed_at(target, now) != Some(true);
                if standing || truth.explains(name, target, now, now, true) {
                    continue;
                }
                if refused_since(&state, target, member, from) {
                    // Kept because the directory refuses: allowed, if status says so.
                    if !reported(sim, name) {
                        found.push(format!(
                            "{name} is kept in {target:?} because the directory refuses its removal, and no status reports it"
                        ));
                    }
                    continue;
                }
                found.push(format!("{name} is in {target:?}, and nothing explains it"));
            }
        }
        // The ledger: an entry for each operator-held member, and none for anyone else.
        let mut entries: BTreeSet<(Target, Member)> = BTreeSet::new();
        for value in sim.server.store_list("pimgrants", None) {
            let Ok(grant) = serde_json::from_value::<PimGrant>(value) else {
                continue;
            };
            let Some(entry) = pim_operator::controller::ledger::entry_of(&grant) else {
                continue;
            };
            let target: Target = (
                entry.target.directory.clone(),
                entry.target.group_id.clone(),
                entry.role,
            );
            let held = state
                .groups
                .get(&target)
                .is_some_and(|m| m.contains_key(&entry.member));
            let refused = state
                .refused_adds
                .iter()
                .any(|(_, x, m, _)| *x == target && *m == entry.member);
            if !held && !refused {
                found.push(format!(
                    "ledger entry {} names {:?} in {target:?}, which does not hold it",
                    entry.name, entry.member
                ));
            }
            entries.insert((target, entry.member));
        }
        for (target, members) in &state.groups {
            for (member, held) in members {
                if !held.by_hand && !entries.contains(&(target.clone(), member.clone())) {
                    found.push(format!(
                        "{member:?} in {target:?} was added by the operator but has no ledger entry"
                    ));
                }
            }
        }
        drop(state);
        // Status agrees with the directory, and what must hold, holds.
        for r in &truth.requests {
            let Some(value) = sim.server.store_get("activationrequests", None, &r.name) else {
                continue;
            };
            let Ok(request) = serde_json::from_value::<ActivationRequest>(value) else {
                continue;
            };
            self.checks += 1;
            let active = request.status.as_ref().and_then(|s| s.phase) == Some(Phase::Active);
            let target = truth.target_at(r.group, r.role, now);
            let member = Member::User(r.user.clone());
            // A window that ended (or a change made) within the lag may not show yet.
            let earlier = now - lag(truth);
            let explained_then = truth
                .target_at(r.group, r.role, earlier)
                .is_some_and(|t| truth.request_explains(r, &t, earlier, earlier, true));
            let explained_now = target
                .as_ref()
                .is_some_and(|t| truth.request_explains(r, t, now, now, true));
            if explained_then != explained_now {
                continue;
            }
            let state = directory::lock(&sim.world);
            let held = target
                .as_ref()
                .is_some_and(|t| state.groups.get(t).is_some_and(|m| m.contains_key(&member)));
            let refused = state
                .refused_adds
                .iter()
                .any(|(_, x, m, _)| Some(x) == target.as_ref() && *m == member);
            // A removal the directory refuses keeps the request Active, truthfully (its access
            // is still held): the directory half above judges it, and its report.
            let removal_refused = state
                .refusals
                .iter()
                .any(|(t, _, m, _)| *m == member && *t >= from);
            drop(state);
            if removal_refused {
                continue;
            }
            if active && !held && !refused {
                found.push(format!(
                    "{} is Active, but {} is not in {target:?}",
                    r.name, r.user
                ));
            }
            if active
                && !target
                    .as_ref()
                    .is_some_and(|t| truth.request_explains(r, t, now, now, true))
            {
                found.push(format!(
                    "{} is Active, but nothing explains its access now",
                    r.name
                ));
            }
            if truth.must_explain(r, now) && !refused && !(active && held) {
                found.push(format!(
                    "{} must be Active with {} in {target:?}: it is {:?}, member {held}",
                    r.name,
                    r.user,
                    request.status.as_ref().and_then(|s| s.phase)
                ));
            }
        }
        for message in found {
            self.violate("I5", step, message);
        }
    }
}
