//! Where audit records go: always the `pim::audit` tracing target, plus an optional JSON Lines
//! file and an optional HTTP endpoint. A batch counts as emitted only when every configured
//! sink took it; the remote one is tried first, so a failure there repeats nothing elsewhere.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use super::{AuditConfig, HttpSinkConfig};
use crate::clock::Clock;
use crate::notify::channel::http::{check_url, trim_newline};
use crate::notify::config::std_duration;
use crate::notify::signature::{SIGNATURE_HEADER, TIMESTAMP_HEADER, sign};

/// The tracing target of audit records: route it with `RUST_LOG=pim::audit=info` or a
/// subscriber filter. The event's message is the record, as one JSON line.
pub const TARGET: &str = "pim::audit";

pub struct AuditSinks {
    file: Option<PathBuf>,
    http: Option<HttpSink>,
}

struct HttpSink {
    config: HttpSinkConfig,
    client: reqwest::Client,
    clock: Arc<dyn Clock>,
}

impl AuditSinks {
    pub fn new(config: &AuditConfig, clock: Arc<dyn Clock>) -> Result<AuditSinks, String> {
        let http = match &config.http {
            None => None,
            Some(http) => {
                let client = reqwest::Client::builder()
                    .timeout(std_duration("audit.http.timeout", &http.timeout)?)
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .map_err(|e| format!("audit.http: {e}"))?;
                Some(HttpSink {
                    config: http.clone(),
                    client,
                    clock,
                })
            }
        };
        Ok(AuditSinks {
            file: config.file.clone(),
            http,
        })
    }

    /// Only the tracing target.
    pub fn log_only() -> AuditSinks {
        AuditSinks {
            file: None,
            http: None,
        }
    }

    /// Emits the records to every sink; `Err` when one did not take them.
    pub async fn emit<R: serde::Serialize>(&self, records: &[R]) -> Result<(), String> {
        if records.is_empty() {
            return Ok(());
        }
        let lines = records
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("cannot encode an audit record: {e}"))?;
        if let Some(http) = &self.http {
            http.post(&lines).await?;
        }
        if let Some(file) = &self.file {
            append(file.clone(), &lines).await?;
        }
        for line in &lines {
            tracing::info!(target: TARGET, "{line}");
        }
        Ok(())
    }
}

/// How often [`AuditSinks::emit_retrying`] tries, and the first wait between tries (doubled
/// after each).
const TRIES: u32 = 6;
const FIRST_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

impl AuditSinks {
    /// Emits records that no object tracks as emitted (admission changes, the operator's own
    /// directory writes) in the background, retrying with backoff for about half a minute; a
    /// record still not taken is logged at error level with its content, so the operator's log
    /// keeps it.
    pub fn emit_retrying<R>(self: &Arc<Self>, records: Vec<R>)
    where
        R: serde::Serialize + Send + Sync + 'static,
    {
        if records.is_empty() {
            return;
        }
        let sinks = self.clone();
        tokio::spawn(async move {
            let mut wait = FIRST_WAIT;
            for attempt in 1..=TRIES {
                match sinks.emit(&records).await {
                    Ok(()) => return,
                    Err(error) if attempt == TRIES => {
                        for record in &records {
                            let line = serde_json::to_string(record).unwrap_or_default();
                            tracing::error!(%error, record = %line, "audit record not emitted after {TRIES} tries");
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, attempt, "audit records not emitted; retrying in {wait:?}");
                        tokio::time::sleep(wait).await;
                        wait = wait.saturating_mul(2);
                    }
                }
            }
        });
    }
}

async fn append(path: PathBuf, lines: &[String]) -> Result<(), String> {
    let mut text = lines.join("\n");
    text.push('\n');
    tokio::task::spawn_blocking(move || -> Result<(), String> {
        // The webhook, the delivery controller and the group controller write the same file:
        // one batch at a time, so lines never interleave (a large `write_all` may take several
        // writes, even in append mode).
        static APPENDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one_at_a_time = APPENDING.lock().unwrap_or_else(|e| e.into_inner());
        let shown = path.display().to_string();
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("audit file {shown}: {e}"))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_data())
            .map_err(|e| format!("audit file {shown}: {e}"))
    })
    .await
    .map_err(|e| format!("audit file: {e}"))?
}

impl HttpSink {
    async fn post(&self, lines: &[String]) -> Result<(), String> {
        let config = &self.config;
        let url = match (&config.url, &config.url_file) {
            (Some(url), _) => url.clone(),
            (None, Some(file)) => std::fs::read_to_string(file)
                .map_err(|e| format!("audit.http.urlFile {}: {e}", file.display()))?,
            (None, None) => return Err("audit.http: no url".to_owned()),
        };
        let url = check_url(&url).map_err(|e| format!("audit.http URL: {e}"))?;
        let mut body = lines.join("\n");
        body.push('\n');
        let mut request = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/x-ndjson");
        if let Some(file) = &config.token_file {
            let token = std::fs::read(file)
                .map_err(|e| format!("audit.http.tokenFile {}: {e}", file.display()))?;
            let token = String::from_utf8_lossy(trim_newline(&token)).into_owned();
            request = request.bearer_auth(token);
        }
        if let Some(file) = &config.secret_file {
            let key = std::fs::read(file)
                .map_err(|e| format!("audit.http.secretFile {}: {e}", file.display()))?;
            let timestamp = self.clock.now().as_second();
            request = request
                .header(TIMESTAMP_HEADER, timestamp.to_string())
                .header(
                    SIGNATURE_HEADER,
                    sign(trim_newline(&key), timestamp, body.as_bytes()),
                );
        }
        let response = request
            .body(body)
            .send()
            .await
            .map_err(|e| format!("audit.http: {}", e.without_url()))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("audit.http: HTTP {}", response.status()))
        }
    }
}
