//! E-mail through Microsoft Graph `sendMail`, for Entra setups: a thin adapter over the entra
//! directory's [`GraphMailer`] (its credentials, token cache, throttling and retries), one
//! message per recipient.

use async_trait::async_trait;

use super::{Channel, SendError};
use crate::directory::DirectoryError;
use crate::directory::entra::mail::GraphMailer;
use crate::notify::message::Message;
use crate::notify::plan::Audience;

pub struct GraphChannel {
    mailer: GraphMailer,
    from: String,
}

impl GraphChannel {
    /// Sends as the mailbox `from` (a UPN or object id).
    pub fn new(mailer: GraphMailer, from: String) -> GraphChannel {
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
            .map_err(|error| match error {
                DirectoryError::Transient {
                    retry_after,
                    message,
                    ..
                } => SendError::Transient {
                    message: format!("Graph sendMail: {message}"),
                    retry_after,
                },
                DirectoryError::Permanent { message, .. } => {
                    SendError::permanent(format!("Graph sendMail: {message}"))
                }
            })
    }
}
