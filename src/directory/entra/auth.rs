//! Access tokens for Microsoft Graph from the Microsoft identity platform's token endpoint, by the
//! OAuth 2.0 client credentials grant with one of three credentials:
//!
//! - a client secret (`client_secret`);
//! - a certificate: a JWT client assertion, PS256-signed with the private key, whose header
//!   names the certificate by `x5t#S256` (the base64url SHA-256 thumbprint of its DER), with
//!   `aud` the token endpoint, `iss` and `sub` the client id, a fresh `jti`, `nbf`/`iat` now and
//!   `exp` ten minutes on;
//! - workload identity federation: the projected Kubernetes service-account token is the client
//!   assertion, re-read from its file for every token request (the kubelet rotates it).
//!
//! Tokens are cached until shortly before they expire (five minutes, or half the lifetime of a
//! short one). A token Graph rejects (401) is dropped and fetched again once; when Graph
//! refuses the new one too, it is held as a refused credential is. A refused
//! credential is a permanent error, remembered for [`FAILURE_HOLD`] against the same
//! credential material, so a wrong secret costs the token endpoint one request per interval
//! instead of one per reconcile; a changed file is tried at once.
//!
//! Neither the secret, nor the assertion, nor a token ever reaches a log or an error message;
//! [`AccessToken`]'s `Debug` says `<redacted>`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jiff::{SignedDuration, Timestamp};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{RSA_PSS_SHA256, RsaKeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use tokio::time::Instant;

use super::config::{Resolved, Source};
use crate::clock::Clock;
use crate::directory::DirectoryError;

/// How long a refused credential is not offered again, unless its file changes.
pub const FAILURE_HOLD: Duration = Duration::from_secs(30);
/// How long a client assertion is valid.
const ASSERTION_LIFETIME: i64 = 600;
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A bearer token. Its `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken(Arc<str>);

impl AccessToken {
    pub fn new(token: impl Into<Arc<str>>) -> AccessToken {
        AccessToken(token.into())
    }

    /// The token itself, for the `Authorization` header and nothing else.
    pub fn secret(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessToken(<redacted>)")
    }
}

/// The token endpoint's answer.
#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    expires_in: Option<NumberOrString>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumberOrString {
    Number(i64),
    Text(String),
}

/// The token endpoint's error body (RFC 6749 §5.2, with Entra's `AADSTS` codes).
#[derive(Deserialize, Default)]
struct TokenError {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
}

struct Cached {
    token: AccessToken,
    refresh_at: Timestamp,
    /// Of the credential material the token was fetched with.
    fingerprint: ring::digest::Digest,
}

struct Refused {
    fingerprint: ring::digest::Digest,
    at: Instant,
    error: DirectoryError,
}

#[derive(Default)]
struct State {
    cached: Option<Cached>,
    refused: Option<Refused>,
}

/// Fetches and caches tokens; one fetch at a time.
pub struct Tokens {
    http: reqwest::Client,
    resolved: Result<Resolved, String>,
    scope: String,
    clock: Arc<dyn Clock>,
    state: tokio::sync::Mutex<State>,
    requests: AtomicU64,
}

const OPERATION: &str = "get token";

impl Tokens {
    pub fn new(
        http: reqwest::Client,
        resolved: Result<Resolved, String>,
        scope: String,
        clock: Arc<dyn Clock>,
    ) -> Tokens {
        Tokens {
            http,
            resolved,
            scope,
            clock,
            state: tokio::sync::Mutex::new(State::default()),
            requests: AtomicU64::new(0),
        }
    }

    /// Requests sent to the token endpoint so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// A valid token: the cached one, or a new one.
    pub async fn token(&self) -> Result<AccessToken, DirectoryError> {
        let resolved = self.resolved.as_ref().map_err(|message| {
            DirectoryError::permanent(
                OPERATION,
                format!("entra directory misconfigured: {message}"),
            )
        })?;
        let mut state = self.state.lock().await;
        let now = self.clock.now();
        if let Some(cached) = &state.cached
            && now < cached.refresh_at
        {
            return Ok(cached.token.clone());
        }
        let material = read_material(&resolved.source).await?;
        let fingerprint =
            ring::digest::digest(&ring::digest::SHA256, &material.fingerprint_input());
        if let Some(refused) = &state.refused
            && refused.fingerprint.as_ref() == fingerprint.as_ref()
            && refused.at.elapsed() < FAILURE_HOLD
        {
            return Err(refused.error.clone());
        }
        match self.fetch(resolved, &material, now).await {
            Ok((token, lifetime)) => {
                let margin = SignedDuration::from_secs(300).min(lifetime / 2);
                state.cached = Some(Cached {
                    token: token.clone(),
                    refresh_at: crate::core::time::add(now, lifetime - margin),
                    fingerprint,
                });
                state.refused = None;
                Ok(token)
            }
            Err(error) => {
                state.cached = None;
                if !error.is_transient() {
                    state.refused = Some(Refused {
                        fingerprint,
                        at: Instant::now(),
                        error: error.clone(),
                    });
                }
                Err(error)
            }
        }
    }

    /// Graph refused `token` although it was fresh: a token from this credential is no use
    /// (a disabled or deleted app, the wrong tenant or audience). Held like a refused
    /// credential, for [`FAILURE_HOLD`] or until its file changes, so that every call does not
    /// fetch a token and send one more request Graph will refuse.
    pub async fn hold_refused(&self, token: &AccessToken, error: DirectoryError) {
        let mut state = self.state.lock().await;
        if let Some(cached) = state.cached.take_if(|c| &c.token == token) {
            state.refused = Some(Refused {
                fingerprint: cached.fingerprint,
                at: Instant::now(),
                error,
            });
        }
    }

    /// Forgets `token` after Graph refused it, so the next call fetches a new one.
    pub async fn invalidate(&self, token: &AccessToken) {
        let mut state = self.state.lock().await;
        if state.cached.as_ref().is_some_and(|c| &c.token == token) {
            state.cached = None;
        }
    }

    async fn fetch(
        &self,
        resolved: &Resolved,
        material: &Material,
        now: Timestamp,
    ) -> Result<(AccessToken, SignedDuration), DirectoryError> {
        let token_url = resolved.token_url();
        let mut form = vec![
            ("client_id", resolved.client_id.clone()),
            ("scope", self.scope.clone()),
            ("grant_type", "client_credentials".to_owned()),
        ];
        match material {
            Material::Secret(secret) => form.push(("client_secret", secret.clone())),
            Material::Certificate { certificate, key } => {
                let assertion = client_assertion(resolved, &token_url, certificate, key, now)
                    .map_err(|m| DirectoryError::permanent(OPERATION, m))?;
                form.push(("client_assertion_type", ASSERTION_TYPE.to_owned()));
                form.push(("client_assertion", assertion));
            }
            Material::Federated(assertion) => {
                form.push(("client_assertion_type", ASSERTION_TYPE.to_owned()));
                form.push(("client_assertion", assertion.clone()));
            }
        }
        let body = form
            .iter()
            .map(|(k, v)| format!("{k}={}", form_value(v)))
            .collect::<Vec<_>>()
            .join("&");
        self.requests.fetch_add(1, Ordering::Relaxed);
        let response = self
            .http
            .post(&token_url)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(reqwest::header::ACCEPT, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| {
                DirectoryError::transient(
                    OPERATION,
                    format!(
                        "token endpoint {token_url}: {}",
                        super::graph::describe_reqwest(&e)
                    ),
                )
            })?;
        let status = response.status();
        let retry_after = super::graph::retry_after(response.headers());
        let text = response.text().await.map_err(|e| {
            DirectoryError::transient(
                OPERATION,
                format!(
                    "token endpoint {token_url}: {}",
                    super::graph::describe_reqwest(&e)
                ),
            )
        })?;
        if status.is_success() {
            let parsed: TokenResponse = serde_json::from_str(&text).map_err(|_| {
                DirectoryError::transient(
                    OPERATION,
                    format!("token endpoint {token_url} answered {status} without a token"),
                )
            })?;
            if parsed
                .token_type
                .as_deref()
                .is_some_and(|t| !t.eq_ignore_ascii_case("bearer"))
            {
                return Err(DirectoryError::permanent(
                    OPERATION,
                    "the token endpoint issued a token that is not a bearer token",
                ));
            }
            let seconds = match parsed.expires_in {
                Some(NumberOrString::Number(n)) => n,
                Some(NumberOrString::Text(t)) => t.trim().parse().unwrap_or(0),
                None => 0,
            };
            // A token whose lifetime is not said is used once.
            let lifetime = SignedDuration::from_secs(seconds.clamp(0, 86_400));
            return Ok((AccessToken::new(parsed.access_token), lifetime));
        }
        let error: TokenError = serde_json::from_str(&text).unwrap_or_default();
        let description = first_line(&error.error_description);
        let what = if error.error.is_empty() {
            format!("token endpoint {token_url} answered {status}")
        } else {
            format!(
                "token endpoint {token_url} refused client {}: {} ({status}): {description}",
                resolved.client_id, error.error
            )
        };
        let transient = status.as_u16() == 429
            || status.is_server_error()
            || matches!(
                error.error.as_str(),
                "temporarily_unavailable" | "server_error"
            );
        if transient {
            return Err(DirectoryError::Transient {
                operation: OPERATION,
                message: what,
                retry_after,
                refused: false,
            });
        }
        let hint = match error.error.as_str() {
            "invalid_client" => {
                " — check the client id and the credential (secret, certificate, or federated credential)"
            }
            "unauthorized_client" => " — the application is not enabled in this tenant",
            "invalid_grant" => {
                " — the client assertion was refused (for workload identity: the federated credential's issuer, subject and audience)"
            }
            "invalid_scope" => " — check graphEndpoint",
            _ => "",
        };
        Err(DirectoryError::permanent(
            OPERATION,
            format!("{what}{hint}"),
        ))
    }
}

/// AADSTS descriptions run on with trace and correlation ids; the first line says it.
fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    let line = line.split(" Trace ID:").next().unwrap_or(line);
    line.chars().take(300).collect()
}

/// `application/x-www-form-urlencoded` value.
fn form_value(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// The credential as read from its files for one token request.
enum Material {
    Secret(String),
    Certificate { certificate: Vec<u8>, key: Vec<u8> },
    Federated(String),
}

impl Material {
    fn fingerprint_input(&self) -> Vec<u8> {
        match self {
            Material::Secret(s) | Material::Federated(s) => s.as_bytes().to_vec(),
            Material::Certificate { certificate, key } => {
                let mut v = certificate.clone();
                v.extend_from_slice(key);
                v
            }
        }
    }
}

async fn read_file(field: &str, path: &std::path::Path) -> Result<Vec<u8>, DirectoryError> {
    // Small files (a secret, a token, a key): read in place.
    std::fs::read(path).map_err(|e| {
        DirectoryError::permanent(
            OPERATION,
            format!("cannot read {field} {}: {}", path.display(), e.kind()),
        )
    })
}

async fn read_text(field: &str, path: &std::path::Path) -> Result<String, DirectoryError> {
    let bytes = read_file(field, path).await?;
    let text = String::from_utf8(bytes).map_err(|_| {
        DirectoryError::permanent(OPERATION, format!("{field} {} is not text", path.display()))
    })?;
    let text = text.trim().to_owned();
    if text.is_empty() {
        return Err(DirectoryError::permanent(
            OPERATION,
            format!("{field} {} is empty", path.display()),
        ));
    }
    Ok(text)
}

async fn read_material(source: &Source) -> Result<Material, DirectoryError> {
    Ok(match source {
        Source::Secret(path) => Material::Secret(read_text("credential.secretFile", path).await?),
        Source::Federated(path) => {
            Material::Federated(read_text("the federated token file", path).await?)
        }
        Source::Certificate { certificate, key } => Material::Certificate {
            certificate: read_file("credential.certificateFile", certificate).await?,
            key: read_file("credential.privateKeyFile", key).await?,
        },
    })
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The base64url SHA-256 thumbprint of a certificate's DER: the `x5t#S256` header.
pub fn thumbprint_s256(der: &[u8]) -> String {
    b64(ring::digest::digest(&ring::digest::SHA256, der).as_ref())
}

/// The signed JWT that proves possession of the certificate's private key.
fn client_assertion(
    resolved: &Resolved,
    audience: &str,
    certificate_pem: &[u8],
    key_pem: &[u8],
    now: Timestamp,
) -> Result<String, String> {
    let certificate = CertificateDer::pem_slice_iter(certificate_pem)
        .next()
        .and_then(Result::ok)
        .ok_or_else(|| "credential.certificateFile holds no PEM certificate".to_owned())?;
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|_| "credential.privateKeyFile holds no PEM private key".to_owned())?;
    let key_pair = match &key {
        PrivateKeyDer::Pkcs8(der) => RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()),
        PrivateKeyDer::Pkcs1(der) => RsaKeyPair::from_der(der.secret_pkcs1_der()),
        _ => {
            return Err(
                "credential.privateKeyFile: the certificate credential needs an RSA key".to_owned(),
            );
        }
    }
    .map_err(|e| format!("credential.privateKeyFile: the RSA key was refused: {e}"))?;
    let rng = SystemRandom::new();
    let mut jti = [0u8; 16];
    rng.fill(&mut jti)
        .map_err(|_| "no randomness for the assertion id".to_owned())?;
    let issued = now.as_second();
    let header = serde_json::json!({
        "alg": "PS256",
        "typ": "JWT",
        "x5t#S256": thumbprint_s256(certificate.as_ref()),
    });
    let claims = serde_json::json!({
        "aud": audience,
        "iss": resolved.client_id,
        "sub": resolved.client_id,
        "jti": jti.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        "nbf": issued,
        "iat": issued,
        "exp": issued + ASSERTION_LIFETIME,
    });
    let signing_input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let mut signature = vec![0u8; key_pair.public().modulus_len()];
    key_pair
        .sign(
            &RSA_PSS_SHA256,
            &rng,
            signing_input.as_bytes(),
            &mut signature,
        )
        .map_err(|_| "signing the client assertion failed".to_owned())?;
    Ok(format!("{signing_input}.{}", b64(&signature)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_do_not_show_in_debug_output() {
        let token = AccessToken::new("eyJ0eXAiOiJKV1QiLCJhbGciOi.secret.part");
        let shown = format!("{token:?}");
        assert_eq!(shown, "AccessToken(<redacted>)");
        assert!(!shown.contains("secret"));
    }

    #[test]
    fn descriptions_lose_their_trace_ids() {
        assert_eq!(
            first_line(
                "AADSTS7000215: Invalid client secret provided. Trace ID: 1 Correlation ID: 2\r\nmore"
            ),
            "AADSTS7000215: Invalid client secret provided."
        );
    }
}
