//! One Microsoft Graph connection: bearer tokens, bounded concurrency with revocations first,
//! retries with `Retry-After` and exponential backoff with jitter, paging by `@odata.nextLink`,
//! and Graph's error shape (`{"error": {"code", "message"}}`) turned into transient or permanent
//! directory errors.
//!
//! Retried inside a call: 429, 408, 500, 502, 503 and 504 answers, and failed connections, up to
//! `maxRetries` times. A `Retry-After` (seconds, or an HTTP-date) is honoured as given (and
//! pauses every request of this connection meanwhile, see `gate`); otherwise the wait doubles from 250 ms with jitter. A
//! wait longer than `maxRetryWait` ends the call at once with a transient error carrying it,
//! so the controller's own requeue takes over. A 401 drops the token and tries once more with a
//! new one; a 401 on the new one is held (see `auth`), not tried again on every call.
//! Everything else is answered to the caller, who knows which 400 or 404 means "already so".

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::Value;

use super::auth::Tokens;
use super::gate::{Gate, Priority};
use crate::directory::DirectoryError;

const BACKOFF_BASE: Duration = Duration::from_millis(250);
const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// A listing longer than this many pages is a loop, not a group.
const MAX_PAGES: usize = 10_000;

/// One request.
#[derive(Debug, Clone)]
pub struct Call<'a> {
    pub method: Method,
    /// A path under `<graphEndpoint>/v1.0` (from `/`), or an absolute `@odata.nextLink`.
    pub path: String,
    pub body: Option<&'a Value>,
    /// Sends `ConsistencyLevel: eventual`, which Graph's advanced queries (`$count`, `$search`,
    /// `$filter` on some properties) need.
    pub eventual: bool,
    pub priority: Priority,
    /// Whether sending it twice does no harm. A call that is not (creating a group, sending
    /// mail) is retried only when Graph surely did not act on it: a 429, or no connection.
    pub repeatable: bool,
    /// Whether a `Retry-After` on it pauses every request of the connection. Not for mail,
    /// which Exchange limits on its own: a throttled `sendMail` must not hold up revocations.
    pub pauses_connection: bool,
}

impl<'a> Call<'a> {
    pub fn get(path: impl Into<String>) -> Call<'a> {
        Call {
            method: Method::GET,
            path: path.into(),
            body: None,
            eventual: false,
            priority: Priority::Normal,
            repeatable: true,
            pauses_connection: true,
        }
    }

    pub fn post(path: impl Into<String>, body: &'a Value) -> Call<'a> {
        Call {
            method: Method::POST,
            path: path.into(),
            body: Some(body),
            eventual: false,
            priority: Priority::Normal,
            repeatable: true,
            pauses_connection: true,
        }
    }

    pub fn delete(path: impl Into<String>) -> Call<'a> {
        Call {
            method: Method::DELETE,
            path: path.into(),
            body: None,
            eventual: false,
            priority: Priority::Normal,
            repeatable: true,
            pauses_connection: true,
        }
    }

    pub fn revoke(self) -> Call<'a> {
        Call {
            priority: Priority::Revoke,
            ..self
        }
    }

    /// Throttled on its own (see `pauses_connection`).
    pub fn separately_throttled(self) -> Call<'a> {
        Call {
            pauses_connection: false,
            ..self
        }
    }

    /// Not repeatable (see `repeatable`).
    pub fn once(self) -> Call<'a> {
        Call {
            repeatable: false,
            ..self
        }
    }
}

/// Graph's answer, when it is not one this client retries.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
}

impl Reply {
    pub fn is_success(&self) -> bool {
        self.status.is_success()
    }

    /// `error.code` of Graph's error shape, or empty.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }

    /// `error.message`, or empty.
    pub fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or_default()
    }

    /// The directory error for an answer the caller did not expect.
    pub fn into_error(self, operation: &'static str) -> DirectoryError {
        let code = self.code();
        let message: String = self.message().chars().take(500).collect();
        let text = if code.is_empty() && message.is_empty() {
            format!("Microsoft Graph answered {}", self.status)
        } else {
            format!(
                "Microsoft Graph answered {}: {code}: {message}",
                self.status
            )
        };
        match self.status.as_u16() {
            401 => DirectoryError::permanent(
                operation,
                format!("{text} (the access token was refused twice)"),
            ),
            403 => DirectoryError::permanent(
                operation,
                format!(
                    "{text} — the application lacks a Microsoft Graph permission for this (see docs/entra.md: GroupMember.ReadWrite.All, User.Read.All, Group.Create, Mail.Send, and PrivilegedAssignmentSchedule.ReadWrite.AzureADGroup for pim mode)"
                ),
            ),
            409 | 412 | 423 => DirectoryError::transient(operation, text),
            _ if self.status.is_server_error() => DirectoryError::transient(operation, text),
            _ => DirectoryError::permanent(operation, text),
        }
    }
}

/// The longest `Retry-After` taken as given.
const RETRY_AFTER_CAP: Duration = Duration::from_secs(3600);

/// `Retry-After`, at most an hour: seconds (the form Graph sends), or an HTTP-date (RFC 9110
/// section 10.2.3), which counts from the same answer's `Date`, so that our clock's skew
/// against the server's plays no part. A date without a `Date` to count from is not used.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds).min(RETRY_AFTER_CAP));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    let sent = headers.get(reqwest::header::DATE)?.to_str().ok()?;
    let sent = httpdate::parse_http_date(sent.trim()).ok()?;
    // A date at or before the answer's own means "now".
    let wait = at.duration_since(sent).unwrap_or(Duration::ZERO);
    Some(wait.min(RETRY_AFTER_CAP))
}

/// A reqwest error in words, without the URL's query (which may hold names) twice.
pub fn describe_reqwest(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "cannot connect"
    } else if error.is_body() || error.is_decode() {
        "the answer broke off"
    } else {
        "request failed"
    };
    let mut text = kind.to_owned();
    let mut source = std::error::Error::source(error);
    if let Some(inner) = source.take() {
        text.push_str(": ");
        text.push_str(&inner.to_string());
    }
    text
}

fn retried(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429 | 500 | 502 | 503 | 504)
}

pub struct GraphClient {
    http: reqwest::Client,
    base: String,
    tokens: Tokens,
    gate: Gate,
    max_retries: u32,
    max_retry_wait: Duration,
    requests: AtomicU64,
    rng: SystemRandom,
    /// Where each HTTP request is counted and timed, once the operator set it.
    metrics: std::sync::OnceLock<Arc<crate::metrics::Metrics>>,
}

impl GraphClient {
    pub fn new(
        http: reqwest::Client,
        base: String,
        tokens: Tokens,
        max_concurrency: usize,
        max_retries: u32,
        max_retry_wait: Duration,
    ) -> GraphClient {
        GraphClient {
            http,
            base,
            tokens,
            gate: Gate::new(max_concurrency),
            max_retries,
            max_retry_wait,
            requests: AtomicU64::new(0),
            rng: SystemRandom::new(),
            metrics: std::sync::OnceLock::new(),
        }
    }

    /// Counts and times every HTTP request from now on (`pim_graph_requests_total`).
    pub fn set_metrics(&self, metrics: Arc<crate::metrics::Metrics>) {
        let _ = self.metrics.set(metrics);
    }

    fn observe(&self, method: &Method, status: Option<StatusCode>, started: std::time::Instant) {
        if let Some(metrics) = self.metrics.get() {
            let status = status.map_or_else(|| "error".to_owned(), |s| s.as_u16().to_string());
            metrics
                .graph_requests
                .get_or_create(&crate::metrics::GraphRequestLabels {
                    method: method.to_string(),
                    status,
                })
                .inc();
            metrics
                .graph_request_duration
                .observe(started.elapsed().as_secs_f64());
        }
    }

    /// Counts a request Entra refused by one of its rules (`pim_graph_refusals_total`).
    pub fn count_refusal(&self, rule: &str) {
        if let Some(metrics) = self.metrics.get() {
            metrics
                .graph_refusals
                .get_or_create(&crate::metrics::GraphRefusalLabels {
                    rule: rule.to_owned(),
                })
                .inc();
        }
    }

    /// `<graphEndpoint>/v1.0`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// HTTP requests sent to Graph so far, retries included.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Requests sent to the token endpoint so far.
    pub fn token_requests(&self) -> u64 {
        self.tokens.requests()
    }

    pub fn gate(&self) -> &Gate {
        &self.gate
    }

    fn url(&self, path: &str) -> Result<String, DirectoryError> {
        if path.starts_with('/') {
            return Ok(format!("{}{path}", self.base));
        }
        // A nextLink: followed verbatim, but never to another host with our token.
        let inside = path
            .strip_prefix(&self.base)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['/', '?']));
        if inside {
            Ok(path.to_owned())
        } else {
            Err(DirectoryError::permanent(
                "follow nextLink",
                format!(
                    "refusing to send the token to {path:?}, outside {}",
                    self.base
                ),
            ))
        }
    }

    /// The wait before retry `attempt` (0-based): 250 ms doubling, capped, times a random
    /// factor in [0.5, 1].
    fn backoff(&self, attempt: u32) -> Duration {
        let full = BACKOFF_BASE
            .saturating_mul(1u32.checked_shl(attempt.min(16)).unwrap_or(u32::MAX))
            .min(BACKOFF_CAP);
        let mut byte = [0u8; 1];
        let random = if self.rng.fill(&mut byte).is_ok() {
            f64::from(byte[0]) / 255.0
        } else {
            1.0
        };
        full.mul_f64(0.5 + random / 2.0)
    }

    /// Sends one request, retrying as the module docs say; any other answer is the caller's.
    pub async fn send(
        &self,
        operation: &'static str,
        call: Call<'_>,
    ) -> Result<Reply, DirectoryError> {
        let url = self.url(&call.path)?;
        let mut refreshed = false;
        let mut attempt = 0u32;
        loop {
            let permit = self.gate.acquire(call.priority).await;
            let token = match self.tokens.token().await {
                Ok(token) => token,
                Err(error) if error.is_transient() && attempt < self.max_retries => {
                    drop(permit);
                    let wait = match &error {
                        DirectoryError::Transient {
                            retry_after: Some(after),
                            ..
                        } => *after,
                        _ => self.backoff(attempt),
                    };
                    if wait > self.max_retry_wait {
                        return Err(error);
                    }
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                    continue;
                }
                Err(error) => return Err(error),
            };
            let mut request = self
                .http
                .request(call.method.clone(), &url)
                .bearer_auth(token.secret())
                .header(reqwest::header::ACCEPT, "application/json");
            if call.eventual {
                request = request.header("ConsistencyLevel", "eventual");
            }
            if let Some(body) = call.body {
                request = request.json(body);
            }
            self.requests.fetch_add(1, Ordering::Relaxed);
            let started = std::time::Instant::now();
            let outcome = request.send().await;
            self.observe(
                &call.method,
                outcome.as_ref().ok().map(reqwest::Response::status),
                started,
            );
            let (status, wait, message, unsent) = match outcome {
                Err(error) => (None, None, describe_reqwest(&error), error.is_connect()),
                Ok(response) => {
                    let status = response.status();
                    let after = retry_after(response.headers());
                    let text = match response.text().await {
                        Ok(text) => text,
                        Err(error) => {
                            drop(permit);
                            // The answer came, only its body broke off: it happened.
                            if attempt < self.max_retries && call.repeatable {
                                tokio::time::sleep(self.backoff(attempt)).await;
                                attempt += 1;
                                continue;
                            }
                            return Err(DirectoryError::transient(
                                operation,
                                describe_reqwest(&error),
                            ));
                        }
                    };
                    let body: Value = if text.trim().is_empty() {
                        Value::Null
                    } else {
                        serde_json::from_str(&text).unwrap_or(Value::String(text))
                    };
                    let reply = Reply { status, body };
                    if status == StatusCode::UNAUTHORIZED {
                        drop(permit);
                        if refreshed {
                            let error = reply.clone().into_error(operation);
                            self.tokens.hold_refused(&token, error).await;
                            return Ok(reply);
                        }
                        tracing::debug!(operation, "Graph refused the token; fetching a new one");
                        self.tokens.invalidate(&token).await;
                        refreshed = true;
                        continue;
                    }
                    if !retried(status) {
                        return Ok(reply);
                    }
                    if let Some(after) = after.filter(|_| call.pauses_connection) {
                        // Throttled: nobody on this connection starts a request before then.
                        self.gate.pause_until(
                            tokio::time::Instant::now() + after.min(self.max_retry_wait),
                        );
                    }
                    let message = reply.clone().into_error(operation).to_string();
                    (
                        Some(status),
                        after,
                        message,
                        status == StatusCode::TOO_MANY_REQUESTS,
                    )
                }
            };
            drop(permit);
            if !call.repeatable && !unsent {
                // Graph may have acted on it: the caller looks before it asks again.
                return Err(DirectoryError::transient(
                    operation,
                    format!("{message} (not repeated: Microsoft Graph may have applied it)"),
                ));
            }
            let wait = wait.unwrap_or_else(|| self.backoff(attempt));
            if attempt >= self.max_retries || wait > self.max_retry_wait {
                return Err(DirectoryError::Transient {
                    operation,
                    message: format!("{message} (gave up after {} attempt(s))", attempt + 1),
                    retry_after: Some(wait),
                    refused: false,
                });
            }
            tracing::debug!(
                operation,
                status = status.map(|s| s.as_u16()),
                wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                "retrying a Graph request"
            );
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// Every item of a collection, following `@odata.nextLink` verbatim until there is none.
    pub async fn get_all(
        &self,
        operation: &'static str,
        path: String,
    ) -> Result<Vec<Value>, DirectoryError> {
        self.get_all_with(operation, Call::get(path)).await
    }

    pub async fn get_all_with(
        &self,
        operation: &'static str,
        first: Call<'_>,
    ) -> Result<Vec<Value>, DirectoryError> {
        let mut items = Vec::new();
        let mut call = first;
        for _ in 0..MAX_PAGES {
            let reply = self.send(operation, call.clone()).await?;
            if !reply.is_success() {
                return Err(reply.into_error(operation));
            }
            let Reply { body, .. } = reply;
            match body.get("value") {
                Some(Value::Array(page)) => items.extend(page.iter().cloned()),
                _ => {
                    return Err(DirectoryError::transient(
                        operation,
                        "Microsoft Graph answered a collection without `value`",
                    ));
                }
            }
            match body.get("@odata.nextLink").and_then(Value::as_str) {
                Some(next) => call.path = next.to_owned(),
                None => return Ok(items),
            }
        }
        Err(DirectoryError::permanent(
            operation,
            format!("more than {MAX_PAGES} pages; is @odata.nextLink looping?"),
        ))
    }
}

/// The shared client, as the directory and the mailer hold it.
pub type Shared = Arc<GraphClient>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_an_http_date_counted_from_the_answers_date() {
        let mut headers = reqwest::header::HeaderMap::new();
        let date = |text: &str| reqwest::header::HeaderValue::from_str(text).unwrap();
        headers.insert(
            reqwest::header::RETRY_AFTER,
            date("Wed, 21 Oct 2015 07:28:30 GMT"),
        );
        // No Date to count from: not used.
        assert_eq!(retry_after(&headers), None);
        headers.insert(reqwest::header::DATE, date("Wed, 21 Oct 2015 07:28:00 GMT"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(30)));
        // The obsolete forms RFC 9110 still asks recipients to read.
        headers.insert(
            reqwest::header::DATE,
            date("Wednesday, 21-Oct-15 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(30)));
        headers.insert(reqwest::header::DATE, date("Wed Oct 21 07:28:20 2015"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(10)));
        // Already past, or far off.
        headers.insert(reqwest::header::DATE, date("Wed, 21 Oct 2015 08:00:00 GMT"));
        assert_eq!(retry_after(&headers), Some(Duration::ZERO));
        headers.insert(reqwest::header::DATE, date("Tue, 20 Oct 2015 07:28:30 GMT"));
        assert_eq!(retry_after(&headers), Some(RETRY_AFTER_CAP));
        headers.insert(reqwest::header::RETRY_AFTER, date("soon"));
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn retry_after_is_seconds() {
        let mut headers = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(reqwest::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert(reqwest::header::RETRY_AFTER, "999999".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(3600)));
        headers.insert(
            reqwest::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn errors_are_sorted() {
        let reply = |status: u16, code: &str| Reply {
            status: StatusCode::from_u16(status).unwrap(),
            body: serde_json::json!({"error": {"code": code, "message": "m"}}),
        };
        assert!(
            !reply(400, "Request_BadRequest")
                .into_error("x")
                .is_transient()
        );
        assert!(
            !reply(404, "Request_ResourceNotFound")
                .into_error("x")
                .is_transient()
        );
        let denied = reply(403, "Authorization_RequestDenied").into_error("x");
        assert!(!denied.is_transient());
        assert!(
            denied.to_string().contains("GroupMember.ReadWrite.All"),
            "{denied}"
        );
        assert!(reply(409, "Conflict").into_error("x").is_transient());
        assert!(reply(500, "UnknownError").into_error("x").is_transient());
    }
}
