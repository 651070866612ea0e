//! An in-memory directory for tests, `simulate` and the load harness. It can be slowed down and
//! made to fail, and it counts its writes, so tests can hold the operator to "exactly one write
//! per grant and per revocation".

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

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
    /// When each of `writes` took effect, for the load harness.
    write_times: Vec<Instant>,
}

/// A token bucket: `rate` tokens a second, at most `burst` saved up.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    refilled: Instant,
}

impl Bucket {
    /// Takes a token; how long to wait before the call may go (the token is already spent).
    fn take(&mut self, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.refilled = now;
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

#[derive(Debug, Default)]
pub struct MemoryDirectory {
    state: Mutex<State>,
    lists: AtomicU64,
    /// Calls in flight at once, when limited.
    concurrency: Mutex<Option<std::sync::Arc<tokio::sync::Semaphore>>>,
    /// Writes per second, when limited.
    write_rate: Mutex<Option<Bucket>>,
    /// Removals in flight now, and the most at once since the last reset (the load harness).
    removals_in_flight: AtomicUsize,
    removals_in_flight_max: AtomicUsize,
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

    /// At most `limit` calls in flight at once (a slow directory's connection pool); `None`
    /// lifts the limit. Calls past the limit wait their turn, in order.
    pub fn set_concurrency_limit(&self, limit: Option<usize>) {
        let semaphore = limit.map(|n| std::sync::Arc::new(tokio::sync::Semaphore::new(n.max(1))));
        *self.concurrency.lock().unwrap_or_else(|e| e.into_inner()) = semaphore;
    }

    /// At most `per_second` writes a second (adds and removes, as a throttling directory
    /// allows), with no burst beyond one second's worth; `None` lifts the limit. Writes past
    /// the limit wait, in the order they arrive.
    pub fn set_write_rate(&self, per_second: Option<f64>) {
        let bucket = per_second.filter(|r| *r > 0.0).map(|rate| Bucket {
            rate,
            burst: rate.max(1.0),
            tokens: rate.max(1.0),
            refilled: Instant::now(),
        });
        *self.write_rate.lock().unwrap_or_else(|e| e.into_inner()) = bucket;
    }

    /// Every write so far with when it took effect: `(when, added?, group, role, member)`.
    pub fn timed_writes(&self) -> Vec<(Instant, bool, GroupId, Role, Member)> {
        self.with_state(|s| {
            s.write_times
                .iter()
                .zip(&s.writes)
                .map(|(t, (a, g, r, m))| (*t, *a, g.clone(), *r, m.clone()))
                .collect()
        })
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

    /// Whether `member` is in a role, without copying the role's members.
    pub fn has_member(&self, group: &str, role: Role, member: &Member) -> bool {
        self.with_state(|s| {
            s.groups
                .get(&GroupId(group.to_owned()))
                .and_then(|g| g.get(&role))
                .is_some_and(|members| members.contains(member))
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

    /// The most removals in flight at once since [`reset_removals_in_flight_max`].
    pub fn removals_in_flight_max(&self) -> usize {
        self.removals_in_flight_max.load(Ordering::SeqCst)
    }

    pub fn reset_removals_in_flight_max(&self) {
        self.removals_in_flight_max.store(0, Ordering::SeqCst);
    }

    async fn enter(
        &self,
        scope: FaultScope,
        operation: &'static str,
    ) -> Result<(), DirectoryError> {
        if scope != FaultScope::Lists {
            let wait = self
                .write_rate
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_mut()
                .map(|b| b.take(Instant::now()));
            if let Some(wait) = wait.filter(|w| !w.is_zero()) {
                tokio::time::sleep(wait).await;
            }
        }
        let semaphore = self
            .concurrency
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        // The permit is held through the call's latency, as a connection would be.
        let _permit = match semaphore {
            Some(s) => s.acquire_owned().await.ok(),
            None => None,
        };
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

/// One call counted in flight until dropped (however the call ends), with the most at once.
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn enter(now: &'a AtomicUsize, most: &AtomicUsize) -> Self {
        let count = now.fetch_add(1, Ordering::SeqCst) + 1;
        most.fetch_max(count, Ordering::SeqCst);
        InFlight(now)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
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
            s.write_times.push(Instant::now());
        });
        Ok(())
    }

    async fn remove_member(
        &self,
        group: &GroupId,
        role: Role,
        member: &Member,
    ) -> Result<(), DirectoryError> {
        let _in_flight = InFlight::enter(&self.removals_in_flight, &self.removals_in_flight_max);
        self.enter(FaultScope::Removes, "remove member").await?;
        self.with_state(|s| {
            if let Some(members) = s.groups.get_mut(group).and_then(|g| g.get_mut(&role)) {
                members.remove(member);
            }
            s.writes.push((false, group.clone(), role, member.clone()));
            s.write_times.push(Instant::now());
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::*;

    fn member(i: usize) -> Member {
        Member::User(format!("u{i}"))
    }

    #[tokio::test]
    async fn unlimited_by_default() {
        let d = MemoryDirectory::new();
        let g = GroupId("g".into());
        let started = Instant::now();
        for i in 0..100 {
            d.add_member(&g, Role::Member, &member(i)).await.unwrap();
        }
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(d.writes().len(), 100);
        assert_eq!(d.timed_writes().len(), 100);
        assert_eq!(d.members("g", Role::Member).len(), 100);
    }

    #[tokio::test]
    async fn write_rate_spaces_writes_but_not_lists() {
        let d = MemoryDirectory::new();
        d.set_write_rate(Some(20.0));
        let g = GroupId("g".into());
        let started = Instant::now();
        // 20 saved-up tokens, then one every 50 ms.
        for i in 0..30 {
            d.add_member(&g, Role::Member, &member(i)).await.unwrap();
        }
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(450), "{took:?}");
        let started = Instant::now();
        for _ in 0..50 {
            d.list_members(&g, Role::Member).await.unwrap();
        }
        assert!(started.elapsed() < Duration::from_millis(200));
        d.set_write_rate(None);
        let started = Instant::now();
        for i in 0..50 {
            d.remove_member(&g, Role::Member, &member(i)).await.unwrap();
        }
        assert!(started.elapsed() < Duration::from_millis(200));
    }

    #[tokio::test]
    async fn concurrency_limit_holds_calls_in_line() {
        let d = Arc::new(MemoryDirectory::new());
        d.set_latency(Duration::from_millis(50));
        d.set_concurrency_limit(Some(2));
        let g = GroupId("g".into());
        let started = Instant::now();
        let calls: Vec<_> = (0..6)
            .map(|i| {
                let (d, g) = (d.clone(), g.clone());
                tokio::spawn(async move { d.add_member(&g, Role::Member, &member(i)).await })
            })
            .collect();
        for c in calls {
            c.await.unwrap().unwrap();
        }
        // Six calls, two at a time, 50 ms each: three rounds.
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(150), "{took:?}");
        d.set_concurrency_limit(None);
        let started = Instant::now();
        let calls: Vec<_> = (0..6)
            .map(|i| {
                let (d, g) = (d.clone(), g.clone());
                tokio::spawn(async move { d.remove_member(&g, Role::Member, &member(i)).await })
            })
            .collect();
        for c in calls {
            c.await.unwrap().unwrap();
        }
        assert!(started.elapsed() < Duration::from_millis(140));
    }
}
