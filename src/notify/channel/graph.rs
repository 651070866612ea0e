//! E-mail through Microsoft Graph `sendMail`, for Entra setups, one message per recipient. The
//! sending itself is the Entra connection's ([`GraphMail`], wired in by the controller), so
//! mail shares its credentials, token cache, throttling and retries.

use std::sync::Arc;

use async_trait::async_trait;

use super::{Channel, SendError};
use crate::notify::message::Message;
use crate::notify::plan::Audience;

/// Sends one HTML message through Graph `sendMail` as the mailbox `from`.
#[async_trait]
pub trait GraphMail: Send + Sync {
    async fn send(
        &self,
        from: &str,
        to: &[String],
        subject: &str,
        html: &str,
    ) -> Result<(), SendError>;
}

pub struct GraphChannel {
    mailer: Arc<dyn GraphMail>,
    from: String,
}

impl GraphChannel {
    /// Sends as the mailbox `from` (a UPN or object id).
    pub fn new(mailer: Arc<dyn GraphMail>, from: String) -> GraphChannel {
        GraphChannel { mailer, from }
    }
}

#[async_trait]
impl Channel for GraphChannel {
    fn kind(&self) -> &'static str {
        "graph"
    }

    fn audience(&self) -> Audience {
        Audience::PerRecipient
    }

    async fn send(
        &self,
        message: &Message,
        recipient: &str,
        _delivery_id: &str,
    ) -> Result<(), SendError> {
        self.mailer
            .send(
                &self.from,
                &[recipient.to_owned()],
                &message.subject,
                &message.html,
            )
            .await
    }
}
