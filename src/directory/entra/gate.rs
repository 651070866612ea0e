//! Bounded concurrency with revocations first, and a pause for the whole connection when Graph
//! throttles (DESIGN §8: "revocations take priority over grants when the directory throttles").
//!
//! At most `slots` requests are in flight. Free slots go to waiting revocations before any other
//! waiting request. After a 429 or 503 with `Retry-After`, no request starts until the pause is
//! over; then the revocations that queued meanwhile go first.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;
use tokio::time::Instant;

/// Which queue a request waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// Removing access: served first.
    Revoke,
    /// Everything else.
    Normal,
}

#[derive(Debug)]
struct State {
    free: usize,
    paused_until: Option<Instant>,
    revoke: VecDeque<oneshot::Sender<()>>,
    normal: VecDeque<oneshot::Sender<()>>,
}

impl State {
    fn paused(&self) -> bool {
        self.paused_until
            .is_some_and(|until| until > Instant::now())
    }

    /// Hands free slots to waiters, revocations first, unless paused.
    fn dispatch(&mut self) {
        while self.free > 0 && !self.paused() {
            let Some(tx) = self.revoke.pop_front().or_else(|| self.normal.pop_front()) else {
                return;
            };
            // A waiter that gave up is skipped; the slot goes to the next one.
            if tx.send(()).is_ok() {
                self.free -= 1;
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct Gate {
    state: Arc<Mutex<State>>,
}

/// A slot; given back when dropped.
#[derive(Debug)]
pub struct Permit {
    gate: Gate,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.gate.release();
    }
}

/// A waiter's receiving end. If the waiter goes away after a slot was handed to it, the slot is
/// given back rather than lost.
struct Waiting {
    rx: Option<oneshot::Receiver<()>>,
    gate: Gate,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(mut rx) = self.rx.take() {
            rx.close();
            if rx.try_recv().is_ok() {
                self.gate.release();
            }
        }
    }
}

impl Gate {
    pub fn new(slots: usize) -> Gate {
        Gate {
            state: Arc::new(Mutex::new(State {
                free: slots.max(1),
                paused_until: None,
                revoke: VecDeque::new(),
                normal: VecDeque::new(),
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Holds every request back until `until` (a later pause wins over an earlier one). Must be
    /// called inside a Tokio runtime: a timer hands out the slots when the pause ends.
    pub fn pause_until(&self, until: Instant) {
        {
            let mut state = self.lock();
            if state.paused_until.is_some_and(|current| current >= until) {
                return;
            }
            state.paused_until = Some(until);
        }
        let gate = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(until).await;
            gate.lock().dispatch();
        });
    }

    /// When the current pause ends, if there is one.
    pub fn paused_until(&self) -> Option<Instant> {
        let state = self.lock();
        state.paused_until.filter(|_| state.paused())
    }

    /// Waits for a slot: behind any pause and, for other requests, behind waiting revocations.
    pub async fn acquire(&self, priority: Priority) -> Permit {
        loop {
            let rx = {
                let mut state = self.lock();
                let ahead = match priority {
                    Priority::Revoke => !state.revoke.is_empty(),
                    Priority::Normal => !state.revoke.is_empty() || !state.normal.is_empty(),
                };
                if state.free > 0 && !ahead && !state.paused() {
                    state.free -= 1;
                    return Permit { gate: self.clone() };
                }
                let (tx, rx) = oneshot::channel();
                match priority {
                    Priority::Revoke => state.revoke.push_back(tx),
                    Priority::Normal => state.normal.push_back(tx),
                }
                rx
            };
            let mut waiting = Waiting {
                rx: Some(rx),
                gate: self.clone(),
            };
            let received = match waiting.rx.as_mut() {
                Some(rx) => rx.await.is_ok(),
                None => false,
            };
            waiting.rx = None;
            if received {
                return Permit { gate: self.clone() };
            }
        }
    }

    /// Gives a slot back and hands out what can be handed out.
    fn release(&self) {
        let mut state = self.lock();
        state.free += 1;
        state.dispatch();
    }

    /// Requests waiting for a slot: (revocations, others).
    pub fn waiting(&self) -> (usize, usize) {
        let state = self.lock();
        (state.revoke.len(), state.normal.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn until_waiting(gate: &Gate, n: usize) {
        while gate.waiting().0 + gate.waiting().1 < n {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn freed_slots_go_to_revocations_first() {
        let gate = Gate::new(1);
        let held = gate.acquire(Priority::Normal).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (name, priority) in [
            ("grant-1", Priority::Normal),
            ("revoke-1", Priority::Revoke),
            ("grant-2", Priority::Normal),
            ("revoke-2", Priority::Revoke),
        ] {
            let shared = gate.clone();
            let order = order.clone();
            tasks.push(tokio::spawn(async move {
                let _permit = shared.acquire(priority).await;
                order.lock().unwrap().push(name);
            }));
            until_waiting(&gate, tasks.len()).await;
        }
        drop(held);
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(
            *order.lock().unwrap(),
            ["revoke-1", "revoke-2", "grant-1", "grant-2"]
        );
    }

    #[tokio::test]
    async fn an_abandoned_waiter_does_not_lose_the_slot() {
        let gate = Gate::new(1);
        let held = gate.acquire(Priority::Normal).await;
        let waiter = {
            let gate = gate.clone();
            tokio::spawn(async move {
                let _p = gate.acquire(Priority::Normal).await;
            })
        };
        until_waiting(&gate, 1).await;
        waiter.abort();
        let _ = waiter.await;
        drop(held);
        tokio::time::timeout(Duration::from_secs(10), gate.acquire(Priority::Normal))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_pause_holds_everyone_back_then_revocations_go_first() {
        let gate = Gate::new(1);
        let until = Instant::now() + Duration::from_millis(50);
        gate.pause_until(until);
        gate.pause_until(Instant::now());
        assert_eq!(gate.paused_until(), Some(until), "the later pause wins");
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (name, priority) in [("grant", Priority::Normal), ("revoke", Priority::Revoke)] {
            let shared = gate.clone();
            let order = order.clone();
            tasks.push(tokio::spawn(async move {
                let _permit = shared.acquire(priority).await;
                order.lock().unwrap().push(name);
            }));
            until_waiting(&gate, tasks.len()).await;
        }
        for task in tasks {
            task.await.unwrap();
        }
        assert!(Instant::now() >= until);
        assert_eq!(*order.lock().unwrap(), ["revoke", "grant"]);
        assert_eq!(gate.paused_until(), None);
    }
}
