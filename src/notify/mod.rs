//! Notifications (DESIGN §9): who should know about a request or an assignment is told, once,
//! by e-mail (SMTP, or Graph `sendMail` for Entra), Slack, Teams, or a signed JSON webhook.
//!
//! - [`plan`] decides, purely, which events an object went through, who hears about each by
//!   the policy's notification matrix, and which (event, channel, recipient) are due at `now`;
//! - [`message`] renders them;
//! - [`outbox`] sends them from per-channel workers with retries and backoff, away from
//!   reconciliation, and records each in the object's `status.delivery`, which is what makes a
//!   notification go out once even across restarts (see the outbox for the exact guarantee).
//!
//! The controller that drives it is `controller::delivery`.

pub mod channel;
pub mod config;
pub mod event;
pub mod message;
pub mod outbox;
pub mod plan;
pub mod signature;

use std::sync::Arc;

use jiff::SignedDuration;

pub use config::NotifyConfig;
pub use event::Event;

use self::channel::GraphMailers;
use self::outbox::Outbox;
use self::plan::Limits;
use crate::clock::Clock;

/// The notifier of one leadership term: its outbox (which also records audit progress), and
/// the rules that do not depend on the object.
pub struct Notifier {
    pub outbox: Arc<Outbox>,
    recipient_domain: Option<String>,
    stale_after: SignedDuration,
}

impl Notifier {
    /// Builds the configured channels and starts their workers and the recorder. A channel that
    /// cannot be built is reported and left out; with none, nothing is sent, but the recorder
    /// still records audit progress.
    pub fn start(
        config: &NotifyConfig,
        client: kube::Client,
        clock: Arc<dyn Clock>,
        graph: GraphMailers<'_>,
    ) -> Notifier {
        let (mut channels, problems) = channel::build(config, clock.clone(), graph);
        for problem in problems {
            tracing::error!(%problem, "notification channel left out");
        }
        let (retry, stale_after) = match (config.retry_policy(), config.stale()) {
            (Ok(retry), Ok(stale)) => (retry, stale),
            (Err(problem), _) | (_, Err(problem)) => {
                tracing::error!(%problem, "notifications are off");
                channels.clear();
                (config::Retry::default(), SignedDuration::ZERO)
            }
        };
        Notifier {
            outbox: Outbox::start(channels, retry, client, clock),
            recipient_domain: config.recipient_domain.clone(),
            stale_after,
        }
    }

    /// Whether any channel is configured.
    pub fn enabled(&self) -> bool {
        !self.outbox.channels().is_empty()
    }

    pub fn limits(&self) -> Limits<'_> {
        Limits {
            recipient_domain: self.recipient_domain.as_deref(),
            stale_after: self.stale_after,
        }
    }
}
