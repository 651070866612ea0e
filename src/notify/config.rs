//! The `notifications` section of the operator's config: channels and how hard to try.
//! Secrets (SMTP passwords, webhook URLs and HMAC keys) are named by file, read at each send so
//! a rotated Secret takes effect, and never logged.
//!
//! ```yaml
//! notifications:
//!   recipientDomain: contoso.com      # for principals that are not addresses
//!   channels:
//!     mail:
//!       type: smtp
//!       host: smtp.contoso.com
//!       port: 587                     # STARTTLS (tls: starttls, the default)
//!       from: pim@contoso.com
//!       username: pim
//!       passwordFile: /etc/pim-operator/smtp/password
//!     approvers:
//!       type: slack
//!       urlFile: /etc/pim-operator/slack/url
//!       events: [activationRequested]
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::event::Event;
use crate::core::duration;

#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NotifyConfig {
    /// Appended as `@<domain>` to a recipient that is not an address (`alice` →
    /// `alice@contoso.com`) for e-mail channels. Without it such recipients get no e-mail.
    #[serde(default)]
    pub recipient_domain: Option<String>,
    /// An event first seen later than this after it happened is not announced any more: after
    /// a long outage, or when notifications are turned on in a cluster with old requests.
    /// Default 24h.
    #[serde(default = "default_stale_after")]
    pub stale_after: String,
    #[serde(default)]
    pub retry: RetryConfig,
    /// Channels by name (lowercase letters, digits, dashes).
    #[serde(default)]
    pub channels: BTreeMap<String, ChannelConfig>,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            recipient_domain: None,
            stale_after: default_stale_after(),
            retry: RetryConfig::default(),
            channels: BTreeMap::new(),
        }
    }
}

/// How each channel retries a failed send: exponential backoff from `initialBackoff`, capped at
/// `maxBackoff` (a server's `Retry-After` wins), then the notification is recorded as failed.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts in all, the first included. Default 8.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Default 1s.
    #[serde(default = "default_initial_backoff")]
    pub initial_backoff: String,
    /// Default 5m.
    #[serde(default = "default_max_backoff")]
    pub max_backoff: String,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: default_max_attempts(),
            initial_backoff: default_initial_backoff(),
            max_backoff: default_max_backoff(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
pub enum ChannelConfig {
    /// E-mail over SMTP, one message per recipient.
    Smtp(Box<SmtpConfig>),
    /// E-mail through Microsoft Graph `sendMail`, with an Entra directory's credentials.
    Graph(GraphConfig),
    /// A Slack incoming webhook, one message per event.
    Slack(ChatConfig),
    /// A Microsoft Teams webhook (Workflows), one Adaptive Card per event.
    Teams(ChatConfig),
    /// Any HTTPS endpoint: a JSON document per event, signed with HMAC-SHA256.
    Webhook(WebhookConfig),
}

/// How to protect the SMTP connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, which must succeed (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: only for a relay on the same host or network you trust.
    None,
}

#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: String,
    /// Default 587 (starttls), 465 (tls) or 25 (none).
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub tls: SmtpTls,
    /// The sender, e.g. `PIM <pim@contoso.com>`.
    pub from: String,
    /// Log in with this user and the password in `passwordFile`.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// PEM CA certificates to trust besides the system's (a private CA).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// How long one attempt may take. Default 30s.
    #[serde(default = "default_timeout")]
    pub timeout: String,
    #[serde(default)]
    pub events: Vec<Event>,
    #[serde(default = "default_concurrency")]
    pub concurrency: u16,
}

#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GraphConfig {
    /// The `entra` directory connection whose app registration sends (needs `Mail.Send`).
    pub directory: String,
    /// The mailbox to send as.
    pub from: String,
    #[serde(default)]
    pub events: Vec<Event>,
    #[serde(default = "default_concurrency")]
    pub concurrency: u16,
}

#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChatConfig {
    /// A file holding the webhook URL (it embeds a secret). Exactly one of url, urlFile.
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default = "default_timeout")]
    pub timeout: String,
    #[serde(default)]
    pub events: Vec<Event>,
    #[serde(default = "default_concurrency")]
    pub concurrency: u16,
}

#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookConfig {
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    /// A file holding the HMAC-SHA256 key; each request carries
    /// `X-PIM-Signature: sha256=<hex HMAC of "<X-PIM-Timestamp>.<body>">`.
    pub secret_file: PathBuf,
    #[serde(default = "default_timeout")]
    pub timeout: String,
    #[serde(default)]
    pub events: Vec<Event>,
    #[serde(default = "default_concurrency")]
    pub concurrency: u16,
}

fn default_stale_after() -> String {
    "24h".to_owned()
}
fn default_max_attempts() -> u32 {
    8
}
fn default_initial_backoff() -> String {
    "1s".to_owned()
}
fn default_max_backoff() -> String {
    "5m".to_owned()
}
fn default_timeout() -> String {
    "30s".to_owned()
}
fn default_concurrency() -> u16 {
    4
}

/// A positive duration of the config, as a std duration.
pub fn std_duration(field: &str, value: &str) -> Result<Duration, String> {
    duration::parse_positive(field, value)
        .map(|d| d.unsigned_abs())
        .map_err(|e| e.to_string())
}

fn exactly_one_url(
    field: &str,
    url: &Option<String>,
    file: &Option<PathBuf>,
) -> Result<(), String> {
    match (url, file) {
        (Some(_), None) | (None, Some(_)) => Ok(()),
        _ => Err(format!("{field}: set exactly one of url and urlFile")),
    }
}

impl ChannelConfig {
    pub fn events(&self) -> &[Event] {
        match self {
            ChannelConfig::Smtp(c) => &c.events,
            ChannelConfig::Graph(c) => &c.events,
            ChannelConfig::Slack(c) | ChannelConfig::Teams(c) => &c.events,
            ChannelConfig::Webhook(c) => &c.events,
        }
    }

    pub fn concurrency(&self) -> u16 {
        match self {
            ChannelConfig::Smtp(c) => c.concurrency,
            ChannelConfig::Graph(c) => c.concurrency,
            ChannelConfig::Slack(c) | ChannelConfig::Teams(c) => c.concurrency,
            ChannelConfig::Webhook(c) => c.concurrency,
        }
        .max(1)
    }

    fn validate(&self, at: &str) -> Result<(), String> {
        match self {
            ChannelConfig::Smtp(c) => {
                if c.host.trim().is_empty() {
                    return Err(format!("{at}.host: must not be empty"));
                }
                if c.from.parse::<lettre::message::Mailbox>().is_err() {
                    return Err(format!("{at}.from: {:?} is not an e-mail address", c.from));
                }
                if c.username.is_some() != c.password_file.is_some() {
                    return Err(format!("{at}: set username and passwordFile together"));
                }
                if c.username.is_some() && c.tls == SmtpTls::None {
                    return Err(format!(
                        "{at}: a password is never sent without TLS; use tls: starttls or tls"
                    ));
                }
                std_duration(&format!("{at}.timeout"), &c.timeout).map(drop)
            }
            ChannelConfig::Graph(c) => {
                if c.directory.trim().is_empty() {
                    return Err(format!("{at}.directory: must name an entra directory"));
                }
                if c.from.parse::<lettre::message::Mailbox>().is_err() {
                    return Err(format!("{at}.from: {:?} is not an e-mail address", c.from));
                }
                Ok(())
            }
            ChannelConfig::Slack(c) | ChannelConfig::Teams(c) => {
                exactly_one_url(at, &c.url, &c.url_file)?;
                if let Some(url) = &c.url {
                    super::channel::http::check_url(url).map_err(|e| format!("{at}.url: {e}"))?;
                }
                std_duration(&format!("{at}.timeout"), &c.timeout).map(drop)
            }
            ChannelConfig::Webhook(c) => {
                exactly_one_url(at, &c.url, &c.url_file)?;
                if let Some(url) = &c.url {
                    super::channel::http::check_url(url).map_err(|e| format!("{at}.url: {e}"))?;
                }
                std_duration(&format!("{at}.timeout"), &c.timeout).map(drop)
            }
        }
    }
}

/// The retry policy, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    pub max_attempts: u32,
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            max_attempts: default_max_attempts(),
            initial: Duration::from_secs(1),
            max: Duration::from_secs(300),
        }
    }
}

impl Retry {
    /// The wait after failed attempt `attempt` (1-based): initial × 2^(attempt-1), capped.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(20));
        self.initial.saturating_mul(factor).min(self.max)
    }
}

impl NotifyConfig {
    /// Checks the section; errors name the field below `notifications`. `is_entra(name)`
    /// says whether the operator has an `entra` directory connection of that name.
    pub fn validate(&self, is_entra: &dyn Fn(&str) -> bool) -> Result<(), String> {
        self.stale().map(drop)?;
        self.retry_policy().map(drop)?;
        if let Some(domain) = &self.recipient_domain
            && (domain.is_empty() || domain.contains('@') || domain.contains(char::is_whitespace))
        {
            return Err(format!(
                "recipientDomain: {domain:?} is not a domain like contoso.com"
            ));
        }
        for (name, channel) in &self.channels {
            let valid = !name.is_empty()
                && name.len() <= 63
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            if !valid {
                return Err(format!(
                    "channels.{name}: names are lowercase letters, digits and dashes"
                ));
            }
            channel.validate(&format!("channels.{name}"))?;
            if let ChannelConfig::Graph(graph) = channel
                && !is_entra(&graph.directory)
            {
                return Err(format!(
                    "channels.{name}.directory: {:?} is not a configured directory of type entra",
                    graph.directory
                ));
            }
        }
        Ok(())
    }

    pub fn stale(&self) -> Result<jiff::SignedDuration, String> {
        duration::parse_positive("staleAfter", &self.stale_after).map_err(|e| e.to_string())
    }

    pub fn retry_policy(&self) -> Result<Retry, String> {
        if self.retry.max_attempts == 0 {
            return Err("retry.maxAttempts: must be at least 1".to_owned());
        }
        Ok(Retry {
            max_attempts: self.retry.max_attempts,
            initial: std_duration("retry.initialBackoff", &self.retry.initial_backoff)?,
            max: std_duration("retry.maxBackoff", &self.retry.max_backoff)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<NotifyConfig, String> {
        let config: NotifyConfig = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
        config.validate(&|name| name == "entra")?;
        Ok(config)
    }

    #[test]
    fn every_channel_kind_parses() {
        let config = parse(
            "recipientDomain: contoso.com\nretry: {maxAttempts: 3, initialBackoff: 2s, maxBackoff: 1m}\nchannels:\n  mail: {type: smtp, host: smtp.contoso.com, from: 'PIM <pim@contoso.com>', username: pim, passwordFile: /s/p}\n  graph: {type: graph, directory: entra, from: pim@contoso.com}\n  chat: {type: slack, urlFile: /s/slack, events: [activationRequested]}\n  teams: {type: teams, urlFile: /s/teams}\n  siem: {type: webhook, url: 'https://siem.contoso.com/pim', secretFile: /s/hmac}\n",
        )
        .unwrap();
        assert_eq!(config.channels.len(), 5);
        assert_eq!(
            config.channels["chat"].events(),
            [Event::ActivationRequested]
        );
        let retry = config.retry_policy().unwrap();
        assert_eq!(retry.backoff(1), Duration::from_secs(2));
        assert_eq!(retry.backoff(3), Duration::from_secs(8));
        assert_eq!(retry.backoff(30), Duration::from_secs(60));
    }

    #[test]
    fn mistakes_name_their_field() {
        let err = |text: &str| parse(text).unwrap_err();
        assert!(
            err("channels:\n  Mail: {type: slack, url: 'https://x.example/h'}\n")
                .contains("channels.Mail")
        );
        assert!(
            err("channels:\n  m: {type: smtp, host: h, from: nobody}\n")
                .contains("channels.m.from")
        );
        assert!(
            err("channels:\n  m: {type: smtp, host: h, from: a@b.c, tls: none, username: u, passwordFile: /p}\n")
                .contains("never sent without TLS")
        );
        assert!(
            err("channels:\n  w: {type: webhook, secretFile: /k}\n")
                .contains("exactly one of url and urlFile")
        );
        assert!(
            err("channels:\n  w: {type: webhook, url: 'http://siem.contoso.com/x', secretFile: /k}\n")
                .contains("https")
        );
        assert!(err("retry: {maxAttempts: 0}\n").contains("retry.maxAttempts"));
        assert!(err("staleAfter: soon\n").contains("staleAfter"));
        assert!(err("channels:\n  x: {type: pigeon}\n").contains("pigeon"));
        assert!(
            err("channels:\n  g: {type: graph, directory: ldap, from: a@b.c}\n").contains(
                "channels.g.directory: \"ldap\" is not a configured directory of type entra"
            )
        );
    }
}
