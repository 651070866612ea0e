//! Simulated directories behind the operator's own `Directory` trait: the state outlives any
//! replica, every call passes the calling replica's gate (a crashed or fenced process reaches
//! nothing), and faults are served from a queue the operations fill.
//!
//! Two flavours, each with the real system's rules at the level the adapters hand them to the
//! controllers:
//! - `Plain`, as the LDAP adapter presents Active Directory: adding a member already there and
//!   removing one already gone succeed. AD answers them with `entryAlreadyExists` (68) and
//!   `noSuchAttribute` (53) (RFC 4511 §4.1.9 result codes; Microsoft, "LDAP error codes" for
//!   AD's use of them), and the adapter takes both as done (`directory::ldap`, tested against
//!   real slapd in tests/ldap.rs).
//! - `GraphPim`, Entra PIM for Groups in pim mode: assignments carry their end and Entra ends
//!   them itself; "an assignment can't be for less than five minutes" and can't be removed
//!   within five minutes of being made (Microsoft Learn, "Assign eligibility for a group in
//!   Privileged Identity Management"); a group's last owner can't be removed (Graph "Remove
//!   group owner": 400 "The group must have at least one owner").

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use jiff::{SignedDuration, Timestamp};
use pim_operator::api::PimGroup;
use pim_operator::api::common::Role;
use pim_operator::clock::Clock;
use pim_operator::core::membership::Member;
use pim_operator::directory::{Directory, DirectoryError, DirectoryReceipt, GroupId};

use super::gate::Gate;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Flavor {
    Plain,
    GraphPim,
}

/// Where a member is held: (directory connection, group id, role).
pub type Target = (String, String, Role);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirFault {
    /// 429 with Retry-After, nothing done.
    Throttled(u64),
    /// 5xx, nothing done.
    ServerError,
    /// No answer in time, nothing done.
    Timeout,
    /// Done, but the answer is lost: the caller sees a timeout.
    HalfDone,
}

#[derive(Debug, Clone)]
pub struct Held {
    pub since: Timestamp,
    /// Entra PIM's end of the assignment.
    pub until: Option<Timestamp>,
    pub by_hand: bool,
}

#[derive(Debug, Clone)]
pub struct Write {
    pub at: Timestamp,
    pub target: Target,
    pub member: Member,
    pub added: bool,
    pub by_hand: bool,
}

#[derive(Debug, Default)]
pub struct DirState {
    pub groups: BTreeMap<Target, BTreeMap<Member, Held>>,
    pub writes: Vec<Write>,
    /// Removals refused by the directory's rules: (when, where, who, why).
    pub refusals: Vec<(Timestamp, Target, Member, String)>,
    /// Adds refused by the directory's rules.
    pub refused_adds: Vec<(Timestamp, Target, Member, String)>,
    pub faults: BTreeMap<String, VecDeque<DirFault>>,
    pub faults_served: BTreeMap<&'static str, u64>,
}

impl DirState {
    /// Entra ends PIM assignments at their end by itself.
    pub fn expire(&mut self, now: Timestamp) {
        for members in self.groups.values_mut() {
            members.retain(|_, h| h.until.is_none_or(|u| u > now));
        }
    }

    pub fn members(&self, target: &Target) -> BTreeSet<Member> {
        self.groups
            .get(target)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }
}

pub type World = Arc<Mutex<DirState>>;

pub fn lock(world: &World) -> std::sync::MutexGuard<'_, DirState> {
    world.lock().unwrap_or_else(|e| e.into_inner())
}

/// Five minutes: Entra's shortest assignment, and how long one must stand before removal.
pub const GRAPH_MINIMUM: SignedDuration = SignedDuration::from_mins(5);

/// One replica's connection to one simulated directory.
pub struct SimDirectory {
    pub name: String,
    pub flavor: Flavor,
    pub world: World,
    pub clock: Arc<dyn Clock>,
    pub gate: Gate,
}

impl SimDirectory {
    fn target(&self, group: &GroupId, role: Role) -> Target {
        (self.name.clone(), group.0.clone(), role)
    }

    /// The gate, then the next queued fault. `Ok(true)`: apply and answer with a lost reply.
    fn enter(&self, operation: &'static str) -> Result<bool, DirectoryError> {
        if !self.gate.pass() {
            return Err(DirectoryError::transient(operation, "connection refused"));
        }
        let mut state = lock(&self.world);
        state.expire(self.clock.now());
        let fault = state.faults.get_mut(&self.name).and_then(|q| q.pop_front());
        let Some(fault) = fault else {
            return Ok(false);
        };
        let kind = match fault {
            DirFault::Throttled(_) => "directory 429",
            DirFault::ServerError => "directory 5xx",
            DirFault::Timeout => "directory timeout",
            DirFault::HalfDone => "directory half-done write",
        };
        *state.faults_served.entry(kind).or_default() += 1;
        match fault {
            DirFault::Throttled(seconds) => Err(DirectoryError::Transient {
                operation,
                message: "429 Too Many Requests".into(),
                retry_after: Some(std::time::Duration::from_secs(seconds)),
                refused: false,
            }),
            DirFault::ServerError => Err(DirectoryError::transient(
                operation,
                "503 Service Unavailable",
            )),
            DirFault::Timeout => Err(DirectoryError::transient(operation, "timed out")),
            DirFault::HalfDone => Ok(true),
        }
    }

    fn lost_reply(operation: &'static str) -> DirectoryError {
        DirectoryError::transient(operation, "timed out waiting for the answer")
    }

    fn add(
        &self,
        operation: &'static str,
        group: &GroupId,
        role: Role,
        member: &Member,
        until: Option<Timestamp>,
    ) -> Result<(), DirectoryError> {
        let half = self.enter(operation)?;
        let now = self.clock.now();
        let target = self.target(group, role);
        if std::env::var("SIM_TRACE_ADDS").is_ok() {
            eprintln!(
                "ADD {member:?} {target:?} at {now}\n{}",
                std::backtrace::Backtrace::force_capture()
            );
        }
        let mut state = lock(&self.world);
        if self.flavor == Flavor::GraphPim {
            let too_short = until.is_none_or(|u| u.duration_since(now) < GRAPH_MINIMUM);
            if too_short && until.is_some() {
                state.refused_adds.push((
                    now,
                    target,
                    member.clone(),
                    "ActiveDurationTooShort".into(),
                ));
                return Err(DirectoryError::permanent(
                    operation,
                    "400 ActiveDurationTooShort: the assignment must be at least 5 minutes",
                ));
            }
        }
        let members = state.groups.entry(target.clone()).or_default();
        match members.get_mut(member) {
            // Entra: a new schedule for the same principal moves the end (adminUpdate).
            Some(held) => held.until = until,
            None => {
                members.insert(
                    member.clone(),
                    Held {
                        since: now,
                        until,
                        by_hand: false,
                    },
                );
            }
        }
        state.writes.push(Write {
            at: now,
            target,
            member: member.clone(),
            added: true,
            by_hand: false,
        });
        if half {
            return Err(Self::lost_reply(operation));
        }
        Ok(())
    }
}

#[async_trait]
impl Directory for SimDirectory {
    fn backend(&self) -> &'static str {
        match self.flavor {
            Flavor::Plain => "ldap",
            Flavor::GraphPim => "entra",
        }
    }

    async fn ensure_group(&self, group: &PimGroup) -> Result<GroupId, DirectoryError> {
        self.enter("resolve group")?;
        group
            .spec
            .group
            .id
            .clone()
            .map(GroupId)
            .ok_or_else(|| DirectoryError::permanent("resolve group", "spec.group.id is required"))
    }

    async fn list_members(
        &self,
        group: &GroupId,
        role: Role,
    ) -> Result<BTreeSet<Member>, DirectoryError> {
        if self.enter("list members")? {
            return Err(Self::lost_reply("list members"));
        }
        Ok(lock(&self.world).members(&self.target(group, role)))
    }

    async fn add_member(
        &self,
        group: &GroupId,
        role: Role,
        member: &Member,
    ) -> Result<(), DirectoryError> {
        self.add("add member", group, role, member, None)
    }

    async fn add_member_until(
        &self,
        group: &GroupId,
        role: Role,
        member: &Member,
        until: Option<Timestamp>,
    ) -> Result<Option<DirectoryReceipt>, DirectoryError> {
        let until = until.filter(|_| self.flavor == Flavor::GraphPim);
        self.add("add member", group, role, member, until)
            .map(|()| None)
    }

    fn enforces_ends(&self) -> bool {
        self.flavor == Flavor::GraphPim
    }

    fn needs_new_end(
        &self,
        group: &GroupId,
        role: Role,
        member: &Member,
        until: Option<Timestamp>,
    ) -> bool {
        if self.flavor != Flavor::GraphPim {
            return false;
        }
        lock(&self.world)
            .groups
            .get(&self.target(group, role))
            .and_then(|m| m.get(member))
            .is_some_and(|h| !h.by_hand && h.until != until)
    }

    async fn remove_member(
        &self,
        group: &GroupId,
        role: Role,
        member: &Member,
    ) -> Result<(), DirectoryError> {
        const OPERATION: &str = "remove member";
        let half = self.enter(OPERATION)?;
        let now = self.clock.now();
        let target = self.target(group, role);
        let mut state = lock(&self.world);
        let Some(held) = state
            .groups
            .get(&target)
            .and_then(|m| m.get(member))
            .cloned()
        else {
            // Plain: AD's 53 taken as done by the adapter; Graph: 404, also done.
            return if half {
                Err(Self::lost_reply(OPERATION))
            } else {
                Ok(())
            };
        };
        if self.flavor == Flavor::GraphPim {
            let owners = state.groups.get(&target).map_or(0, |m| m.len());
            let refusal = if role == Role::Owner && owners == 1 {
                Some("400 Request_BadRequest: The group must have at least one owner")
            } else if !held.by_hand && now.duration_since(held.since) < GRAPH_MINIMUM {
                Some(
                    "400 ActiveDurationTooShort: an assignment can't be removed within 5 minutes of being made",
                )
            } else {
                None
            };
            if let Some(message) = refusal {
                state
                    .refusals
                    .push((now, target, member.clone(), message.into()));
                return Err(DirectoryError::permanent(OPERATION, message));
            }
        }
        if let Some(members) = state.groups.get_mut(&target) {
            members.remove(member);
        }
        state.writes.push(Write {
            at: now,
            target,
            member: member.clone(),
            added: false,
            by_hand: false,
        });
        if half {
            return Err(Self::lost_reply(OPERATION));
        }
        Ok(())
    }
}
