//! What a jump of a manual clock wakes. Only tests, `simulate`'s replicas and the load harness
//! move a clock by jumps; real time never does, and in production each object is woken by its
//! own requeue at its next deadline. Waking every EligibleAssignment on each jump (12,100 of
//! them in the load harness) measured work production never does, on the slots the revocation
//! that the same jump starts needs (issue 21, item 3).

use std::collections::HashMap;
use std::sync::Mutex;

use futures::{Stream, StreamExt};
use jiff::Timestamp;
use kube::Resource;
use kube::runtime::reflector::{ObjectRef, Store};
use tokio_stream::wrappers::WatchStream;

use crate::clock::Clock;

/// The next instant at which each object's reconcile decides something else by time alone.
/// Recorded only under a clock that jumps, so production keeps no copy.
#[derive(Debug, Default)]
pub struct DueTimes {
    recording: bool,
    /// By object name: `None` when nothing about it changes with time.
    due: Mutex<HashMap<String, Option<Timestamp>>>,
}

impl DueTimes {
    pub fn for_clock(clock: &dyn Clock) -> Self {
        DueTimes {
            recording: clock.jumps().is_some(),
            due: Mutex::default(),
        }
    }

    /// What the reconcile of `name` found: what it decided holds until `due`.
    pub fn record(&self, name: &str, due: Option<Timestamp>) {
        if self.recording {
            self.lock().insert(name.to_owned(), due);
        }
    }

    /// Of `names` (the objects cached now), those a jump to `now` concerns: due by then, or
    /// never reconciled. Forgets the names no longer cached.
    pub fn due_by(&self, names: Vec<String>, now: Timestamp) -> Vec<String> {
        let mut due = self.lock();
        due.retain(|name, _| names.binary_search(name).is_ok());
        names
            .into_iter()
            .filter(|name| match due.get(name) {
                None => true,
                Some(at) => at.is_some_and(|at| at <= now),
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Option<Timestamp>>> {
        self.due.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// On each jump of `clock`, the cluster-scoped objects of `store` due by the new time.
pub fn due_on_jumps<K>(
    clock: &dyn Clock,
    store: Store<K>,
    due: std::sync::Arc<DueTimes>,
) -> impl Stream<Item = ObjectRef<K>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    let Some(jumps) = clock.jumps() else {
        return futures::stream::empty().boxed();
    };
    WatchStream::from_changes(jumps)
        .flat_map(move |now| {
            let mut names: Vec<String> = store
                .state()
                .iter()
                .filter_map(|o| o.meta().name.clone())
                .collect();
            names.sort_unstable();
            let woken = due.due_by(names, now);
            futures::stream::iter(woken.into_iter().map(|name| ObjectRef::new(&name)))
        })
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{ManualClock, SystemClock};

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_jump_wakes_what_is_due_and_what_was_never_seen() {
        let clock = ManualClock::new(at("2026-12-01T08:00:00Z"));
        let due = DueTimes::for_clock(&clock);
        due.record("ends-at-nine", Some(at("2026-12-01T09:00:00Z")));
        due.record("ends-at-ten", Some(at("2026-12-01T10:00:00Z")));
        due.record("permanent", None);
        due.record("deleted", Some(at("2026-12-01T08:30:00Z")));
        let names = ["ends-at-nine", "ends-at-ten", "new", "permanent"].map(str::to_owned);
        assert_eq!(
            due.due_by(names.to_vec(), at("2026-12-01T09:00:00Z")),
            ["ends-at-nine", "new"]
        );
        assert_eq!(
            due.due_by(names.to_vec(), at("2026-12-01T10:30:00Z")),
            ["ends-at-nine", "ends-at-ten", "new"]
        );
        assert!(
            !due.lock().contains_key("deleted"),
            "forgotten once not cached"
        );
    }

    #[test]
    fn real_time_keeps_no_record() {
        let due = DueTimes::for_clock(&SystemClock);
        due.record("a", None);
        assert!(due.lock().is_empty());
    }
}
