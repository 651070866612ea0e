//! Revocations before grants when a directory throttles (DESIGN §8).
//!
//! Two things can make a due revocation wait behind grants, and each has its own remedy:
//!
//! - **The directory's queue.** A throttling directory serves calls in the order they arrive, so
//!   every grant already sent is served first. Grants therefore go through a fixed number of
//!   *add lanes* (a semaphore shared by every PimGroup), while revocations never wait for a lane:
//!   at most [`WritePriority::add_lanes`] grants can be ahead of a revocation in the directory.
//! - **The reconcile slots.** A group reconcile busy granting holds one of the controller's
//!   slots, and a group whose revocation is due needs a slot to make it. Each group pass records
//!   when its membership next loses someone ([`WritePriority::record_next_end`]); once that time
//!   has come and the group has not yet been reconciled, every pass stops *starting* grants
//!   ([`WritePriority::hold_adds`]): it finishes the writes it has in flight, reports the rest as
//!   waiting, and gives its slot up. It is woken when no revocation is due any more.
//!
//! Removals have lanes of their own ([`WritePriority::removal_lane`], `removalConcurrency` in the
//! config): they bound how fast revocations go, never whether. Nothing here can lose or block a
//! revocation: removals never consult the holds, and a group pass always makes its removals
//! before it looks at holds. A held grant is not lost
//! either: it is not a queued write but a difference between the desired set and the
//! directory, and the group's next pass (woken, or requeued after [`HELD_RETRY`]) recomputes it.
//! Holds cannot last for ever: an entry stops holding grants once its group's pass has made its
//! removals, when the group goes away, and in any case [`MAX_HOLD`] after it first held a grant
//! back (a group whose pass keeps failing before its removals must not stop granting
//! everywhere).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use jiff::Timestamp;
use tokio::sync::{Semaphore, SemaphorePermit};

/// Grants in flight at once, over every PimGroup and directory. With a directory that queues
/// throttled calls in order, a due revocation waits behind at most this many grants; with a
/// directory that answers in 20 ms, it allows 1,600 grants a second.
pub const ADD_LANES: usize = 32;

/// How long one due revocation may hold grants back at most, in monotonic time (Tokio's, so that
/// a paused runtime's virtual time moves it too).
pub const MAX_HOLD: Duration = Duration::from_secs(10);

/// When a held pass looks again if nothing wakes it first.
pub const HELD_RETRY: Duration = Duration::from_secs(2);

/// Removals in flight at once by default (`removalConcurrency`).
pub const REMOVAL_LANES: usize = 64;

#[derive(Debug)]
pub struct WritePriority {
    lanes: Semaphore,
    add_lanes: usize,
    removal_lanes: Semaphore,
    removal_lane_count: usize,
    passes: AtomicU64,
    state: Mutex<State>,
}

/// When a group's membership next loses someone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Due {
    at: Timestamp,
    /// For an early end (seen on a request, not computed by a pass): the number of the last pass
    /// begun when it was seen. Only a later pass has it in its snapshot.
    seen_after: Option<u64>,
}

#[derive(Debug, Default)]
struct State {
    due: HashMap<String, Due>,
    /// The same entries ordered by time, for the "is anything due" check.
    by_time: BTreeSet<(Timestamp, String)>,
    /// When each due entry first held a grant back, for [`MAX_HOLD`].
    holding_since: BTreeMap<String, Instant>,
    /// Groups with grants held back, to wake when nothing is due any more.
    held: BTreeSet<String>,
}

/// One group pass, numbered in the order passes begin; take it before the snapshot.
#[derive(Debug, Clone, Copy)]
pub struct Pass {
    number: u64,
    now: Timestamp,
}

impl State {
    fn remove(&mut self, group: &str) {
        if let Some(due) = self.due.remove(group) {
            self.by_time.remove(&(due.at, group.to_owned()));
        }
        self.holding_since.remove(group);
    }

    fn insert(&mut self, group: &str, due: Due) {
        self.remove(group);
        self.due.insert(group.to_owned(), due);
        self.by_time.insert((due.at, group.to_owned()));
    }

    /// Whether some entry is due at `now` and still allowed to hold grants back. Entries that
    /// held for longer than [`MAX_HOLD`] are dropped on the way.
    fn blocking(&mut self, now: Timestamp, wall: Instant) -> bool {
        loop {
            let Some((at, group)) = self.by_time.first().cloned() else {
                return false;
            };
            if at > now {
                return false;
            }
            let since = *self.holding_since.entry(group.clone()).or_insert(wall);
            if wall.saturating_duration_since(since) < MAX_HOLD {
                return true;
            }
            tracing::warn!(
                %group,
                "a due revocation was not made within {MAX_HOLD:?}; grants elsewhere go on"
            );
            self.remove(&group);
        }
    }

    /// The held groups, when nothing holds them any more.
    fn release(&mut self, now: Timestamp, wall: Instant) -> Vec<String> {
        if self.held.is_empty() || self.blocking(now, wall) {
            return Vec::new();
        }
        std::mem::take(&mut self.held).into_iter().collect()
    }
}

impl Default for WritePriority {
    fn default() -> Self {
        Self::new(ADD_LANES, REMOVAL_LANES)
    }
}

impl WritePriority {
    pub fn new(add_lanes: usize, removal_lanes: usize) -> Self {
        let add_lanes = add_lanes.max(1);
        WritePriority {
            lanes: Semaphore::new(add_lanes),
            add_lanes,
            removal_lanes: Semaphore::new(removal_lanes.max(1)),
            removal_lane_count: removal_lanes.max(1),
            passes: AtomicU64::new(0),
            state: Mutex::default(),
        }
    }

    pub fn add_lanes(&self) -> usize {
        self.add_lanes
    }

    pub fn removal_lanes(&self) -> usize {
        self.removal_lane_count
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A group pass begins, deciding at `now`. Call before taking the snapshot it decides on.
    pub fn begin_pass(&self, now: Timestamp) -> Pass {
        Pass {
            number: self.passes.fetch_add(1, Ordering::SeqCst) + 1,
            now,
        }
    }

    /// Waits for a lane to send one grant; the lane is given back when the permit drops.
    pub async fn add_lane(&self) -> Option<SemaphorePermit<'_>> {
        // The semaphore is never closed; `None` would only mean it was.
        self.lanes.acquire().await.ok()
    }

    /// Waits for a lane to send one removal; the lane is given back when the permit drops.
    /// Removals never wait for grants: the two kinds have separate lanes.
    pub async fn removal_lane(&self) -> Option<SemaphorePermit<'_>> {
        // Never closed, as the add lanes.
        self.removal_lanes.acquire().await.ok()
    }

    /// Whether a pass should start no more grants at `now`: some group's revocation is due and
    /// that group has not yet been reconciled. `group` is recorded as held when so.
    pub fn hold_adds(&self, group: &str, now: Timestamp) -> bool {
        let mut state = self.lock();
        let blocking = state.blocking(now, Instant::now());
        if blocking {
            state.held.insert(group.to_owned());
        }
        blocking
    }

    /// `pass` of `group` has made its removals (whether or not they succeeded; failed ones are
    /// retried with back-off and reported overdue): the revocations it could see are dealt with.
    /// Returns the groups to wake, when nothing else is due.
    pub fn removals_made(&self, group: &str, pass: Pass) -> Vec<String> {
        let mut state = self.lock();
        let dealt_with = state
            .due
            .get(group)
            .is_some_and(|due| match due.seen_after {
                None => due.at <= pass.now,
                Some(seen_after) => seen_after < pass.number,
            });
        if dealt_with {
            state.remove(group);
        }
        state.release(pass.now, Instant::now())
    }

    /// Records when `group`'s membership next loses someone, as `pass` computed it (`None`:
    /// nobody). Only times after the pass's `now` count: the pass made the earlier removals. An
    /// early end seen since the pass began stays due.
    pub fn record_next_end(&self, group: &str, next_end: Option<Timestamp>, pass: Pass) {
        let mut state = self.lock();
        if state
            .due
            .get(group)
            .is_some_and(|due| due.seen_after.is_some())
        {
            return;
        }
        state.remove(group);
        if let Some(at) = next_end.filter(|at| *at > pass.now) {
            state.insert(
                group,
                Due {
                    at,
                    seen_after: None,
                },
            );
        }
    }

    /// A grant of `group` ended early (deactivated, revoked, deleted): its removal is due at
    /// `now`, and only a pass begun from now on sees it.
    pub fn revocation_due(&self, group: &str, now: Timestamp) {
        let seen_after = self.passes.load(Ordering::SeqCst);
        let mut state = self.lock();
        let at = state.due.get(group).map_or(now, |due| due.at.min(now));
        state.insert(
            group,
            Due {
                at,
                seen_after: Some(seen_after),
            },
        );
    }

    /// `group` is gone. Returns the groups to wake, when nothing else is due.
    pub fn forget(&self, group: &str, now: Timestamp) -> Vec<String> {
        let mut state = self.lock();
        state.remove(group);
        state.held.remove(group);
        state.release(now, Instant::now())
    }

    /// How many groups have a revocation due at `now`.
    pub fn due_count(&self, now: Timestamp) -> usize {
        self.lock()
            .by_time
            .iter()
            .take_while(|(at, _)| *at <= now)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::SignedDuration;

    fn t(minutes: i64) -> Timestamp {
        Timestamp::UNIX_EPOCH + SignedDuration::from_mins(minutes)
    }

    #[test]
    fn nothing_recorded_holds_nothing() {
        let p = WritePriority::default();
        assert!(!p.hold_adds("a", t(0)));
        p.record_next_end("a", Some(t(10)), p.begin_pass(t(0)));
        assert!(!p.hold_adds("b", t(9)));
    }

    #[test]
    fn a_due_end_holds_grants_everywhere_until_its_group_removed() {
        let p = WritePriority::default();
        p.record_next_end("a", Some(t(10)), p.begin_pass(t(0)));
        p.record_next_end("b", Some(t(20)), p.begin_pass(t(0)));
        assert!(p.hold_adds("b", t(10)), "a's end has come");
        assert!(
            p.hold_adds("a", t(10)),
            "a's own grants wait for a's removal too"
        );
        assert_eq!(p.due_count(t(10)), 1);
        // b's pass made its removals (none due for b): a is still due, nobody is woken.
        assert!(p.removals_made("b", p.begin_pass(t(10))).is_empty());
        assert!(p.hold_adds("c", t(10)));
        // a's pass made them: the held groups are woken, and grants go on.
        let woken = p.removals_made("a", p.begin_pass(t(10)));
        assert_eq!(woken, ["a", "b", "c"]);
        assert!(!p.hold_adds("c", t(10)));
        assert_eq!(p.due_count(t(10)), 0);
        // b still ends at 20.
        assert!(p.hold_adds("c", t(20)));
    }

    #[test]
    fn a_pass_that_decided_before_the_end_does_not_clear_it() {
        let p = WritePriority::default();
        p.record_next_end("a", Some(t(10)), p.begin_pass(t(0)));
        let early = p.begin_pass(t(9));
        assert!(p.removals_made("a", early).is_empty());
        assert!(p.hold_adds("b", t(10)));
        // Nor does it hide the end when it records what it computed.
        p.record_next_end("a", Some(t(10)), early);
        assert!(p.hold_adds("b", t(10)));
    }

    #[test]
    fn only_future_ends_are_recorded() {
        let p = WritePriority::default();
        p.record_next_end("a", Some(t(5)), p.begin_pass(t(5)));
        assert_eq!(
            p.due_count(t(5)),
            0,
            "the pass at 5 made the removals due at 5"
        );
        p.record_next_end("a", None, p.begin_pass(t(5)));
        assert_eq!(p.due_count(t(100)), 0);
    }

    #[test]
    fn an_early_end_is_cleared_only_by_a_pass_begun_after_it() {
        let p = WritePriority::default();
        let before = p.begin_pass(t(6));
        p.revocation_due("a", t(6));
        assert!(p.hold_adds("b", t(6)));
        // The pass that began before the end was seen finishes: its snapshot did not have it.
        p.record_next_end("a", Some(t(30)), before);
        assert!(p.removals_made("a", before).is_empty());
        assert!(p.hold_adds("b", t(6)));
        let after = p.begin_pass(t(6));
        assert_eq!(p.removals_made("a", after), ["b"]);
        p.record_next_end("a", Some(t(30)), after);
        assert!(!p.hold_adds("b", t(29)));
        assert!(p.hold_adds("b", t(30)));
    }

    #[test]
    fn a_forgotten_group_holds_nothing() {
        let p = WritePriority::default();
        p.record_next_end("a", Some(t(10)), p.begin_pass(t(0)));
        assert!(p.hold_adds("b", t(10)));
        assert_eq!(p.forget("a", t(10)), ["b"]);
        assert!(!p.hold_adds("b", t(10)));
    }

    #[test]
    fn a_due_end_holds_for_at_most_max_hold() {
        let p = WritePriority::default();
        p.record_next_end("a", Some(t(10)), p.begin_pass(t(0)));
        p.record_next_end("b", Some(t(10)), p.begin_pass(t(0)));
        assert!(p.hold_adds("c", t(10)));
        // Pretend the holds began long ago.
        let long_ago = Instant::now()
            .checked_sub(MAX_HOLD + Duration::from_secs(1))
            .unwrap();
        for group in ["a", "b"] {
            p.lock().holding_since.insert(group.to_owned(), long_ago);
        }
        assert!(!p.hold_adds("c", t(10)));
        assert_eq!(p.due_count(t(10)), 0);
    }

    #[tokio::test]
    async fn lanes_bound_grants_in_flight() {
        let p = WritePriority::new(2, 1);
        let a = p.add_lane().await;
        let b = p.add_lane().await;
        assert!(a.is_some() && b.is_some());
        assert_eq!(p.lanes.available_permits(), 0);
        drop(a);
        assert!(p.add_lane().await.is_some());
    }

    #[tokio::test]
    async fn removal_lanes_bound_removals_in_flight_apart_from_grants() {
        let p = WritePriority::new(1, 2);
        let add = p.add_lane().await;
        // Every add lane taken: removals still go.
        let a = p.removal_lane().await;
        let b = p.removal_lane().await;
        assert!(add.is_some() && a.is_some() && b.is_some());
        assert_eq!(p.removal_lanes.available_permits(), 0);
        // A third removal waits until one of the two is done.
        let third = tokio::time::timeout(Duration::from_millis(50), p.removal_lane()).await;
        assert!(third.is_err(), "a third removal went out with two lanes");
        drop(a);
        assert!(p.removal_lane().await.is_some());
        assert_eq!(p.lanes.available_permits(), 0, "removals took no add lane");
    }
}
