//! The one place that reads the system time. Everything else is handed `now`, so tests and
//! `simulate` move time themselves.

use std::sync::Mutex;

use jiff::{SignedDuration, Timestamp};
use tokio::sync::watch;

pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;

    /// Fires when time jumps (a manual clock moved), so controllers can re-decide everything at
    /// once instead of waiting for timers measured in real time. `None` for the system clock.
    fn jumps(&self) -> Option<watch::Receiver<Timestamp>> {
        None
    }
}

/// Wall-clock time.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one sanctioned read of the system clock
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// Time that moves only when told to: tests, `simulate`, the load harness.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<Timestamp>,
    jumps: watch::Sender<Timestamp>,
}

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        let (jumps, _) = watch::channel(start);
        ManualClock {
            now: Mutex::new(start),
            jumps,
        }
    }

    pub fn set(&self, to: Timestamp) {
        *self.now.lock().unwrap_or_else(|e| e.into_inner()) = to;
        self.jumps.send_replace(to);
    }

    pub fn advance(&self, by: SignedDuration) {
        let to = crate::core::time::add(self.now(), by);
        self.set(to);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.now.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn jumps(&self) -> Option<watch::Receiver<Timestamp>> {
        Some(self.jumps.subscribe())
    }
}
