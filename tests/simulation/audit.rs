//! The audit records the operator's real emitter sends, caught from its always-on sink (the
//! `pim::audit` tracing target) by a subscriber on the simulation's one thread: no file, no
//! blocking I/O, nothing to break determinism.

use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<String>>>);

impl Captured {
    /// Sets a subscriber that catches audit records on this thread until the guard drops.
    pub fn install(&self) -> tracing::subscriber::DefaultGuard {
        let subscriber = tracing_subscriber::registry().with(Catcher(self.clone()));
        tracing::subscriber::set_default(subscriber)
    }

    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

struct Catcher(Captured);

struct Message(Option<String>);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = Some(format!("{value:?}"));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0 = Some(value.to_owned());
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for Catcher {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() != pim_operator::audit::sink::TARGET {
            return;
        }
        let mut message = Message(None);
        event.record(&mut message);
        if let Some(line) = message.0 {
            (self.0).0.lock().unwrap().push(line);
        }
    }
}
