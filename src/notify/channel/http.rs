//! Chat and webhook channels over HTTPS with reqwest: Slack incoming webhooks, Microsoft Teams
//! (an Adaptive Card), and a generic JSON webhook signed with HMAC-SHA256. Webhook URLs embed
//! secrets, so they are read from files at each send and never appear in errors or logs.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::{Channel, SendError};
use crate::clock::Clock;
use crate::notify::config::{ChatConfig, WebhookConfig, std_duration};
use crate::notify::message::Message;
use crate::notify::plan::Audience;
use crate::notify::signature::{
    DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign,
};

/// Accepts `https://` URLs, and `http://` only to a loopback address (a local relay or test).
pub fn check_url(url: &str) -> Result<reqwest::Url, String> {
    let parsed = reqwest::Url::parse(url.trim()).map_err(|e| format!("not a URL: {e}"))?;
    match parsed.scheme() {
        "https" => Ok(parsed),
        "http" => {
            let host = parsed.host_str().unwrap_or_default();
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let loopback = host.eq_ignore_ascii_case("localhost")
                || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
            if loopback {
                Ok(parsed)
            } else {
                Err("must be https (plain http only to a loopback address)".to_owned())
            }
        }
        other => Err(format!("scheme {other:?} is not https")),
    }
}

enum Url {
    Fixed(String),
    File(PathBuf),
}

enum Format {
    Slack,
    Teams,
    /// The generic webhook, with the file of its HMAC key.
    Webhook {
        secret_file: PathBuf,
        clock: Arc<dyn Clock>,
    },
}

pub struct HttpChannel {
    client: reqwest::Client,
    url: Url,
    format: Format,
}

fn client(timeout: &str) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(std_duration("timeout", timeout)?)
        .connect_timeout(Duration::from_secs(10))
        // A redirect would carry the body (and its signature) somewhere not configured.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("HTTP client: {e}"))
}

fn url_of(url: &Option<String>, file: &Option<PathBuf>) -> Result<Url, String> {
    match (url, file) {
        (Some(url), None) => Ok(Url::Fixed(url.clone())),
        (None, Some(file)) => Ok(Url::File(file.clone())),
        _ => Err("set exactly one of url and urlFile".to_owned()),
    }
}

impl HttpChannel {
    pub fn slack(config: &ChatConfig) -> Result<Self, String> {
        Ok(HttpChannel {
            client: client(&config.timeout)?,
            url: url_of(&config.url, &config.url_file)?,
            format: Format::Slack,
        })
    }

    pub fn teams(config: &ChatConfig) -> Result<Self, String> {
        Ok(HttpChannel {
            client: client(&config.timeout)?,
            url: url_of(&config.url, &config.url_file)?,
            format: Format::Teams,
        })
    }

    pub fn webhook(config: &WebhookConfig, clock: Arc<dyn Clock>) -> Result<Self, String> {
        Ok(HttpChannel {
            client: client(&config.timeout)?,
            url: url_of(&config.url, &config.url_file)?,
            format: Format::Webhook {
                secret_file: config.secret_file.clone(),
                clock,
            },
        })
    }

    fn url(&self) -> Result<reqwest::Url, SendError> {
        let text = match &self.url {
            Url::Fixed(url) => url.clone(),
            Url::File(file) => std::fs::read_to_string(file).map_err(|e| {
                SendError::transient(format!("cannot read urlFile {}: {e}", file.display()))
            })?,
        };
        // The message names the problem, never the URL.
        check_url(&text).map_err(|e| SendError::permanent(format!("webhook URL: {e}")))
    }
}

/// Escapes Slack's three control characters.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn audience(message: &Message) -> String {
    if message.recipients.is_empty() {
        String::new()
    } else {
        format!("For: {}", message.recipients.join(", "))
    }
}

/// A Slack incoming-webhook payload: the subject as fallback text, then the facts.
pub fn slack_payload(message: &Message) -> Value {
    let mut lines = vec![format!("*{}*", slack_escape(&message.subject))];
    for (label, value) in &message.facts {
        lines.push(format!(
            "*{}:* {}",
            slack_escape(label),
            slack_escape(value)
        ));
    }
    let audience = audience(message);
    if !audience.is_empty() {
        lines.push(slack_escape(&audience));
    }
    let mut body: String = lines.join("\n");
    // Slack cuts a section's text at 3000 characters.
    if body.chars().count() > 2900 {
        body = body.chars().take(2900).collect::<String>() + "…";
    }
    json!({
        "text": message.subject,
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": body}}],
    })
}

/// A Teams message with one Adaptive Card: the subject, then the facts.
pub fn teams_payload(message: &Message) -> Value {
    let facts: Vec<Value> = message
        .facts
        .iter()
        .map(|(title, value)| json!({"title": title, "value": value}))
        .collect();
    let mut body = vec![
        json!({"type": "TextBlock", "text": message.subject, "weight": "Bolder", "size": "Medium", "wrap": true}),
        json!({"type": "FactSet", "facts": facts}),
    ];
    let audience = audience(message);
    if !audience.is_empty() {
        body.push(json!({"type": "TextBlock", "text": audience, "wrap": true, "isSubtle": true}));
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "content": {"type": "AdaptiveCard", "version": "1.4", "body": body},
        }],
    })
}

/// The generic webhook's document.
pub fn webhook_payload(message: &Message, delivery_id: &str) -> Value {
    json!({
        "id": delivery_id,
        "event": message.event,
        "time": message.time,
        "object": message.about,
        "recipients": message.recipients,
        "subject": message.subject,
        "text": message.text,
    })
}

/// 2xx is success; 429, 408 and 5xx are worth retrying (honouring `Retry-After` seconds);
/// any other status is final.
fn classify(status: reqwest::StatusCode, retry_after: Option<&str>) -> Result<(), SendError> {
    if status.is_success() {
        return Ok(());
    }
    let message = format!("HTTP {status}");
    if status.as_u16() == 429 || status.as_u16() == 408 || status.is_server_error() {
        let retry_after = retry_after
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s.min(3600)));
        return Err(SendError::Transient {
            message,
            retry_after,
        });
    }
    Err(SendError::permanent(message))
}

#[async_trait]
impl Channel for HttpChannel {
    fn kind(&self) -> &'static str {
        match self.format {
            Format::Slack => "slack",
            Format::Teams => "teams",
            Format::Webhook { .. } => "webhook",
        }
    }

    fn audience(&self) -> Audience {
        Audience::Broadcast
    }

    async fn send(
        &self,
        message: &Message,
        _recipient: &str,
        delivery_id: &str,
    ) -> Result<(), SendError> {
        let url = self.url()?;
        let payload = match &self.format {
            Format::Slack => slack_payload(message),
            Format::Teams => teams_payload(message),
            Format::Webhook { .. } => webhook_payload(message, delivery_id),
        };
        let body = serde_json::to_vec(&payload)
            .map_err(|e| SendError::permanent(format!("cannot encode the payload: {e}")))?;
        let mut request = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(DELIVERY_HEADER, delivery_id)
            .header(EVENT_HEADER, message.event.as_str());
        if let Format::Webhook { secret_file, clock } = &self.format {
            let key = std::fs::read(secret_file).map_err(|e| {
                SendError::transient(format!(
                    "cannot read secretFile {}: {e}",
                    secret_file.display()
                ))
            })?;
            let key = trim_newline(&key);
            let timestamp = clock.now().as_second();
            request = request
                .header(TIMESTAMP_HEADER, timestamp.to_string())
                .header(SIGNATURE_HEADER, sign(key, timestamp, &body));
        }
        let response = request
            .body(body)
            .send()
            .await
            .map_err(|e| SendError::transient(format!("HTTP: {}", e.without_url())))?;
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok());
        classify(response.status(), retry_after)
    }
}

/// A key file's content without a trailing newline, which editors and `echo` add.
pub fn trim_newline(bytes: &[u8]) -> &[u8] {
    let mut end = bytes.len();
    while end > 0 && matches!(bytes[end - 1], b'\n' | b'\r') {
        end -= 1;
    }
    &bytes[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::event::Event;
    use crate::notify::message::{About, render};

    fn message() -> Message {
        let about = About {
            kind: "ActivationRequest".into(),
            name: "r".into(),
            principal: "alice@contoso.com".into(),
            group: "g".into(),
            role: "member".into(),
            justification: Some("fix <prod> & more".into()),
            ..About::default()
        };
        render(
            Event::ActivationRequested,
            &about,
            "2026-03-02T09:00:00Z".parse().unwrap(),
            vec!["bob".into()],
        )
    }

    #[test]
    fn urls_must_be_https_except_to_loopback() {
        assert!(check_url("https://hooks.contoso.com/x").is_ok());
        assert!(check_url("http://127.0.0.1:8080/x").is_ok());
        assert!(check_url("http://[::1]:8080/x").is_ok());
        assert!(check_url("http://localhost/x").is_ok());
        assert!(check_url("http://hooks.contoso.com/x").is_err());
        assert!(check_url("ftp://127.0.0.1/x").is_err());
        assert!(check_url("nonsense").is_err());
    }

    #[test]
    fn payloads_carry_the_facts() {
        let m = message();
        let slack = slack_payload(&m);
        let text = slack["blocks"][0]["text"]["text"].as_str().unwrap();
        assert!(text.contains("fix &lt;prod&gt; &amp; more"), "{text}");
        assert!(text.contains("For: bob"));
        let teams = teams_payload(&m);
        let card = &teams["attachments"][0]["content"];
        assert_eq!(card["type"], "AdaptiveCard");
        assert!(
            card["body"][1]["facts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["title"] == "Justification" && f["value"] == "fix <prod> & more")
        );
        let hook = webhook_payload(&m, "d1");
        assert_eq!(hook["id"], "d1");
        assert_eq!(hook["event"], "activationRequested");
        assert_eq!(hook["object"]["name"], "r");
    }

    #[test]
    fn statuses() {
        use reqwest::StatusCode;
        assert!(classify(StatusCode::NO_CONTENT, None).is_ok());
        assert_eq!(
            classify(StatusCode::TOO_MANY_REQUESTS, Some("7")),
            Err(SendError::Transient {
                message: "HTTP 429 Too Many Requests".into(),
                retry_after: Some(Duration::from_secs(7))
            })
        );
        assert!(matches!(
            classify(StatusCode::BAD_GATEWAY, None),
            Err(SendError::Transient { .. })
        ));
        assert!(matches!(
            classify(StatusCode::NOT_FOUND, None),
            Err(SendError::Permanent { .. })
        ));
        assert_eq!(trim_newline(b"key\r\n"), b"key");
    }
}
