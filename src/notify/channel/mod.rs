//! Where notifications go. A channel sends one rendered [`Message`] to one recipient (an e-mail
//! address, or [`AUDIENCE`](super::plan::AUDIENCE) for chat and webhooks) and says whether a
//! failure is worth retrying; retries, backoff and bookkeeping are the outbox's.

pub mod graph;
pub mod http;
pub mod smtp;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::config::{ChannelConfig, GraphConfig, NotifyConfig};
use super::event::Event;
use super::message::Message;
use super::plan::{Audience, ChannelView};
use crate::clock::Clock;

/// How one attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Worth another attempt: a timeout, a refused connection, 429, 5xx, an SMTP 4xx.
    #[error("{message}")]
    Transient {
        message: String,
        retry_after: Option<Duration>,
    },
    /// The same attempt would fail again: a bad address, 4xx, an SMTP 5xx.
    #[error("{message}")]
    Permanent { message: String },
}

impl SendError {
    pub fn transient(message: impl Into<String>) -> Self {
        SendError::Transient {
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        SendError::Permanent {
            message: message.into(),
        }
    }
}

#[async_trait]
pub trait Channel: Send + Sync {
    /// `smtp`, `graph`, `slack`, `teams` or `webhook`.
    fn kind(&self) -> &'static str;

    fn audience(&self) -> Audience;

    /// Sends `message` to `recipient`. `delivery_id` is the same for every attempt of this
    /// (object, event, channel, recipient), so receivers can drop a duplicate.
    async fn send(
        &self,
        message: &Message,
        recipient: &str,
        delivery_id: &str,
    ) -> Result<(), SendError>;
}

/// A channel as configured: its name, the events it takes, how many sends run at once.
#[derive(Clone)]
pub struct Configured {
    pub name: String,
    pub channel: Arc<dyn Channel>,
    pub events: Vec<Event>,
    pub concurrency: usize,
}

impl Configured {
    pub fn view(&self) -> ChannelView {
        ChannelView {
            name: self.name.clone(),
            audience: self.channel.audience(),
            events: self.events.clone(),
        }
    }
}

impl std::fmt::Debug for Configured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Configured")
            .field("name", &self.name)
            .field("kind", &self.channel.kind())
            .field("events", &self.events)
            .finish()
    }
}

/// Builds the Graph `sendMail` channel of a config entry, from its `entra` directory
/// connection; `None` when that connection does not exist or cannot send mail.
pub type GraphMailers<'a> = &'a dyn Fn(&GraphConfig) -> Option<Arc<dyn Channel>>;

/// Builds the configured channels. A channel that cannot be built (a Graph channel without its
/// directory, say) is left out and reported in the second list; the others still run.
pub fn build(
    config: &NotifyConfig,
    clock: Arc<dyn Clock>,
    graph: GraphMailers<'_>,
) -> (Vec<Configured>, Vec<String>) {
    let mut built = Vec::new();
    let mut problems = Vec::new();
    for (name, channel_config) in &config.channels {
        let channel: Result<Arc<dyn Channel>, String> = match channel_config {
            ChannelConfig::Smtp(smtp) => {
                smtp::SmtpChannel::new(smtp.as_ref().clone(), clock.clone())
                    .map(|c| Arc::new(c) as Arc<dyn Channel>)
            }
            ChannelConfig::Graph(g) => graph(g).ok_or_else(|| {
                format!(
                    "directory {:?} is not an entra directory that can send mail",
                    g.directory
                )
            }),
            ChannelConfig::Slack(chat) => {
                http::HttpChannel::slack(chat).map(|c| Arc::new(c) as Arc<dyn Channel>)
            }
            ChannelConfig::Teams(chat) => {
                http::HttpChannel::teams(chat).map(|c| Arc::new(c) as Arc<dyn Channel>)
            }
            ChannelConfig::Webhook(hook) => http::HttpChannel::webhook(hook, clock.clone())
                .map(|c| Arc::new(c) as Arc<dyn Channel>),
        };
        match channel {
            Ok(channel) => built.push(Configured {
                name: name.clone(),
                channel,
                events: channel_config.events().to_vec(),
                concurrency: usize::from(channel_config.concurrency()),
            }),
            Err(problem) => problems.push(format!("notifications.channels.{name}: {problem}")),
        }
    }
    (built, problems)
}
