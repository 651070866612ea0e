//! An in-memory directory for tests, `simulate` and the load harness. It can be slowed down and
//! made to fail, and it counts its writes, so tests can hold the operator to "exactly one write
//! per grant and per revocation".

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use super::{Directory, DirectoryError, GroupId};
use crate::api::PimGroup;
use crate::api::common::Role;
use crate::core::membership::Member;

/// Which calls a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultScope {
    Adds,
    Removes,
    Lists,
    All,
}

#[derive(Debug, Default)]
struct State {
    groups: BTreeMap<GroupId, BTreeMap<Role, BTreeSet<Member>>>,
    latency: Duration,
    /// Calls in scope fail with a transient error while this is set.
    failing: Option<FaultScope>,
    /// Every write in order: (added?, group, role, member).
    writes: Vec<(bool, GroupId, Role, Member)>,
}

#[derive(Debug, Default)]
pub struct MemoryDirectory {
    state: Mutex<State>,
    lists: AtomicU64,
}

impl MemoryDirectory {
    pub fn new() -> Self {
        Self::default()
    }

    fn with_state<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        // A poisoned lock only means a test thread panicked; the data is still usable.
        let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    pub fn set_latency(&self, latency: Duration) {
        self.with_state(|s| s.latency = latency);
    }

    /// Makes calls in `scope` fail transiently until `heal` is called.
    pub fn fail(&self, scope: FaultScope) {
        self.with_state(|s| s.failing = Some(scope));
    }

    pub fn heal(&self) {
        self.with_state(|s| s.failing = None);
    }

    /// Members of a role, as a test or `simulate` sees them.
    pub fn members(&self, group: &str, role: Role) -> BTreeSet<Member> {
        self.with_state(|s| {
            s.groups
                .get(&GroupId(group.to_owned()))
                .and_then(|g| g.get(&role))
                .cloned()
                .unwrap_or_default()
        })
    }

    /// Adds a member behind the operator's back, as an administrator editing the group by hand.
    pub fn add_by_hand(&self, group: &str, role: Role, member: Member) {
        self.with_state(|s| {
            s.groups
                .entry(GroupId(group.to_owned()))
                .or_default()
                .entry(role)
                .or_default()
                .insert(member);
        });
    }

    /// Every write so far: `(true, …)` for an add, `(false, …)` for a remove.
    pub fn writes(&self) -> Vec<(bool, GroupId, Role, Member)> {
        self.with_state(|s| s.writes.clone())
    }

    pub fn list_calls(&self) -> u64 {
        self.lists.load(Ordering::Relaxed)
    }

    async fn enter(
        &self,
        scope: FaultScope,
        operation: &'static str,
    ) -> Result<(), DirectoryError> {
        let (latency, failing) = self.with_state(|s| (s.latency, s.failing));
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        match failing {
            Some(f) if f == scope || f == FaultScope::All => Err(DirectoryError::transient(
                operation,
                "the memory directory is set to fail",
            )),
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl Directory for MemoryDirectory {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn ensure_group(&self, pim_group: &PimGroup) -> Result<GroupId, DirectoryError> {
        let group = &pim_group.spec.group;
        let name = pim_group.metadata.name.clone().unwrap_or_default();
        let id = group
            .id
            .clone()
            .or_else(|| group.display_name.clone())
            .unwrap_or(name);
        let id = GroupId(id);
        self.with_state(|s| {
            s.groups.entry(id.clone()).or_default();
        });
        Ok(id)
    }

    async fn list_members(
        &self,
        group: &GroupId,
        role: Role,
    ) -> Result<BTreeSet<Member>, DirectoryError> {
        self.enter(FaultScope::Lists, "list members").await?;
        self.lists.fetch_add(1, Ordering::Relaxed);
        Ok(self.with_state(|s| {
            s.groups
                .get(group)
                .and_then(|g| g.get(&role))
                .cloned()
                .unwrap_or_default()
        }))
    }

    async fn add_member(
        &self,
        group: &GroupId,
        role: Role,
        member: &Member,
    ) -> Result<(), DirectoryError> {
        self.enter(FaultScope::Adds, "add member").await?;
        self.with_state(|s| {
            s.groups
                .entry(group.clone())
                .or_default()
                .entry(role)
                .or_default()
                .insert(member.clone());
            s.writes.push((true, group.clone(), role, member.clone()));
        });
        Ok(())
    }

    async fn remove_member(
        &self,
        group: &GroupId,
        role: Role,
        member: &Member,
    ) -> Result<(), DirectoryError> {
        self.enter(FaultScope::Removes, "remove member").await?;
        self.with_state(|s| {
            if let Some(members) = s.groups.get_mut(group).and_then(|g| g.get_mut(&role)) {
                members.remove(member);
            }
            s.writes.push((false, group.clone(), role, member.clone()));
        });
        Ok(())
    }
}
