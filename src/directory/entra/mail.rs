//! Mail through Microsoft Graph (`POST /users/{from}/sendMail`, Mail.Send application
//! permission), on the entra directory's connection: same credentials, same throttling. For the
//! notifications (DESIGN §9: "email (SMTP; Graph sendMail for Entra)").

use std::sync::Arc;
use std::time::Instant;

use reqwest::StatusCode;
use serde_json::json;

use super::graph::{Call, GraphClient};
use super::names::user_path;
use crate::directory::DirectoryError;
use crate::metrics::{DirectoryCallLabels, DirectoryOperationLabels, Metrics};

const OPERATION: &str = "send mail";
/// Graph allows 500 recipients per message; beyond that is a mistake, not a notification.
const MAX_RECIPIENTS: usize = 500;

#[derive(Clone)]
pub struct GraphMailer {
    graph: Arc<GraphClient>,
    metrics: Option<Arc<Metrics>>,
}

impl GraphMailer {
    pub fn new(graph: Arc<GraphClient>) -> GraphMailer {
        GraphMailer {
            graph,
            metrics: None,
        }
    }

    /// Records each send in `pim_directory_calls{backend="entra",operation="send_mail"}`.
    pub fn with_metrics(self, metrics: Arc<Metrics>) -> GraphMailer {
        GraphMailer {
            metrics: Some(metrics),
            ..self
        }
    }

    /// Sends an HTML message from the mailbox `from` (a UPN or object id) to `to`, without
    /// keeping a copy in Sent Items. Graph answers 202 once it accepted the message; delivery
    /// follows. A throttled or failed attempt is retried like any Graph call, so a message may
    /// rarely arrive twice after a timeout.
    pub async fn send(
        &self,
        from: &str,
        to: &[String],
        subject: &str,
        html_body: &str,
    ) -> Result<(), DirectoryError> {
        let started = Instant::now();
        let result = self.send_once(from, to, subject, html_body).await;
        if let Some(metrics) = &self.metrics {
            let outcome = match &result {
                Ok(()) => "success",
                Err(e) if e.is_transient() => "transient_error",
                Err(_) => "permanent_error",
            };
            metrics
                .directory_calls
                .get_or_create(&DirectoryCallLabels {
                    backend: "entra".to_owned(),
                    operation: "send_mail".to_owned(),
                    outcome: outcome.to_owned(),
                })
                .inc();
            metrics
                .directory_call_duration
                .get_or_create(&DirectoryOperationLabels {
                    backend: "entra".to_owned(),
                    operation: "send_mail".to_owned(),
                })
                .observe(started.elapsed().as_secs_f64());
        }
        result
    }

    async fn send_once(
        &self,
        from: &str,
        to: &[String],
        subject: &str,
        html_body: &str,
    ) -> Result<(), DirectoryError> {
        if from.trim().is_empty() {
            return Err(DirectoryError::permanent(OPERATION, "no sender mailbox"));
        }
        let recipients: Vec<&String> = to.iter().filter(|r| !r.trim().is_empty()).collect();
        if recipients.is_empty() {
            return Err(DirectoryError::permanent(OPERATION, "no recipients"));
        }
        if recipients.len() > MAX_RECIPIENTS {
            return Err(DirectoryError::permanent(
                OPERATION,
                format!("{} recipients; at most {MAX_RECIPIENTS}", recipients.len()),
            ));
        }
        let body = json!({
            "message": {
                "subject": subject,
                "body": {"contentType": "HTML", "content": html_body},
                "toRecipients": recipients
                    .iter()
                    .map(|address| json!({"emailAddress": {"address": address}}))
                    .collect::<Vec<_>>(),
            },
            "saveToSentItems": false,
        });
        let path = format!("{}/sendMail", user_path(from));
        let reply = self
            .graph
            .send(
                OPERATION,
                Call::post(path, &body).once().separately_throttled(),
            )
            .await?;
        match reply.status {
            StatusCode::ACCEPTED | StatusCode::OK | StatusCode::NO_CONTENT => Ok(()),
            StatusCode::NOT_FOUND => Err(DirectoryError::permanent(
                OPERATION,
                format!("no mailbox {from:?} to send from ({})", reply.code()),
            )),
            _ => Err(reply.into_error(OPERATION)),
        }
    }
}
