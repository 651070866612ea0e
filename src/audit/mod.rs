//! The audit trail (DESIGN §9): one JSON record per phase transition of an ActivationRequest —
//! who asked, who approved, what the directory confirmed, and how it ended.
//!
//! - Every record goes to the tracing target [`sink::TARGET`] (`pim::audit`), and optionally
//!   to a file (JSON Lines) and an HTTP endpoint; see [`AuditConfig`].
//! - The records are emitted by `controller::delivery` from `status.history`, and how far it
//!   got is recorded in `status.delivery.auditedTransitions`: at once when the request has
//!   finished, otherwise with the request's next notification record (so activation costs no
//!   extra API write). A new leader emits what is not recorded: at-least-once, and a leader
//!   change repeats the earlier records of requests still in flight; each record has a stable
//!   `id` (`<uid>/<transition>`) to drop repeats by.
//! - Retention (`controller::retention`) deletes a finished request only once every one of
//!   its transitions is recorded as emitted.
//! - `kubectl pim audit` rebuilds the same records from the objects: [`export`].

pub mod action;
pub mod export;
pub mod record;
pub mod sink;
pub mod trail;

use std::path::PathBuf;

use serde::Deserialize;

pub use record::AuditRecord;

/// The `audit` section of the operator's config.
///
/// ```yaml
/// audit:
///   file: /var/log/pim/audit.jsonl
///   http:
///     url: https://siem.contoso.com/pim
///     tokenFile: /etc/pim-operator/siem/token
///   retention: {enabled: true}
/// ```
#[derive(Debug, Clone, Default, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditConfig {
    /// Append each record as one JSON line to this file (on a writable volume).
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// POST each batch of records as JSON Lines to an endpoint.
    #[serde(default)]
    pub http: Option<HttpSinkConfig>,
    #[serde(default)]
    pub retention: RetentionConfig,
}

#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpSinkConfig {
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    /// A bearer token for the `Authorization` header.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// An HMAC-SHA256 key: requests are signed as generic webhooks are (`X-PIM-Signature`).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Default 30s.
    #[serde(default = "default_timeout")]
    pub timeout: String,
}

/// Deleting finished requests after the retention of their policy (`spec.retention`,
/// default 30d).
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetentionConfig {
    /// Default true. Off, finished requests are kept until someone deletes them.
    #[serde(default = "default_true")]
    pub enabled: bool,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig { enabled: true }
    }
}

fn default_timeout() -> String {
    "30s".to_owned()
}
fn default_true() -> bool {
    true
}

impl AuditConfig {
    /// Checks the section; errors name the field below `audit`.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(http) = &self.http {
            match (&http.url, &http.url_file) {
                (Some(url), None) => {
                    crate::notify::channel::http::check_url(url)
                        .map_err(|e| format!("http.url: {e}"))?;
                }
                (None, Some(_)) => {}
                _ => return Err("http: set exactly one of url and urlFile".to_owned()),
            }
            crate::notify::config::std_duration("http.timeout", &http.timeout)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_checks() {
        let c: AuditConfig = serde_saphyr::from_str(
            "file: /var/log/pim/audit.jsonl\nhttp: {url: 'https://siem.contoso.com/x', tokenFile: /t}\nretention: {enabled: false}\n",
        )
        .unwrap();
        assert!(c.validate().is_ok());
        assert!(!c.retention.enabled);
        assert!(AuditConfig::default().retention.enabled);
        let bad: AuditConfig =
            serde_saphyr::from_str("http: {url: 'http://siem.contoso.com/x'}\n").unwrap();
        assert!(bad.validate().unwrap_err().starts_with("http.url"));
    }
}
