//! Whether a replica can still reach the world: a crashed process reaches nothing; a replica
//! partitioned from the API server still reaches the directories until its fence closes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

#[derive(Clone, Default)]
pub struct Gate {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    dead: AtomicBool,
    partitioned: AtomicBool,
    /// Calls left before the process dies; negative: no crash planned.
    budget: AtomicI64,
}

impl Gate {
    pub fn new() -> Self {
        let gate = Gate::default();
        gate.inner.budget.store(-1, Ordering::SeqCst);
        gate
    }

    /// One call to a directory: false once the process is dead.
    pub fn pass(&self) -> bool {
        if self.inner.dead.load(Ordering::SeqCst) {
            return false;
        }
        let left = self.inner.budget.load(Ordering::SeqCst);
        if left == 0 {
            self.inner.dead.store(true, Ordering::SeqCst);
            return false;
        }
        if left > 0 {
            self.inner.budget.store(left - 1, Ordering::SeqCst);
        }
        true
    }

    /// One call to the API server.
    pub fn pass_api(&self) -> bool {
        !self.inner.partitioned.load(Ordering::SeqCst) && self.pass()
    }

    /// The process dies at its `calls`-th call from now (0: at the next one), wherever it is:
    /// between a directory write and the status write that would record it, say.
    pub fn crash_after(&self, calls: i64) {
        self.inner.budget.store(calls.max(0), Ordering::SeqCst);
    }

    pub fn partition(&self) {
        self.inner.partitioned.store(true, Ordering::SeqCst);
    }

    pub fn kill(&self) {
        self.inner.dead.store(true, Ordering::SeqCst);
    }

    pub fn is_dead(&self) -> bool {
        self.inner.dead.load(Ordering::SeqCst)
    }
}
