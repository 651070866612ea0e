//! The `entra` directory's settings, as written under `directories.<name>` with `type: entra`.
//! Secrets live in files (a mounted Secret, or the projected token of workload identity), read
//! at each token request and never logged.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::core::duration;

/// Microsoft Entra ID's public cloud; national clouds set `authorityHost` and `graphEndpoint`.
pub const DEFAULT_AUTHORITY_HOST: &str = "https://login.microsoftonline.com";
pub const DEFAULT_GRAPH_ENDPOINT: &str = "https://graph.microsoft.com";

/// What a grant becomes in Entra.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum EntraMode {
    /// Plain security-group membership (`members/$ref`); the operator removes members at the
    /// end. No Entra ID P2 licence is needed per eligible user.
    #[default]
    Membership,
    /// PIM for Groups active assignments (`assignmentScheduleRequests`, `adminAssign` with an
    /// `afterDateTime` expiration), so Entra removes the member at the end even if the operator
    /// is down.
    Pim,
}

/// How the operator proves who it is to the Microsoft identity platform.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    deny_unknown_fields
)]
pub enum Credential {
    /// Azure Workload Identity: the projected service-account token in
    /// `AZURE_FEDERATED_TOKEN_FILE` (or `tokenFile`), re-read for each token request, is the
    /// client assertion. `AZURE_CLIENT_ID`, `AZURE_TENANT_ID` and `AZURE_AUTHORITY_HOST` fill
    /// in `clientId`, `tenantId` and `authorityHost` when those are not set.
    WorkloadIdentity {
        #[serde(default)]
        token_file: Option<PathBuf>,
    },
    /// A client secret in a file (trailing newline ignored).
    ClientSecret { secret_file: PathBuf },
    /// A certificate: a JWT client assertion signed (PS256) with the private key, naming the
    /// certificate by its SHA-256 thumbprint (`x5t#S256`). PEM files; they may be one file.
    Certificate {
        certificate_file: PathBuf,
        private_key_file: PathBuf,
    },
}

impl Default for Credential {
    fn default() -> Self {
        Credential::WorkloadIdentity { token_file: None }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EntraConfig {
    /// How Kubernetes usernames become this directory's principals; default the top-level
    /// `usernameMapping`.
    #[serde(default)]
    pub username_mapping: Option<crate::directory::DirectoryUsernameMapping>,
    /// `membership` (default) or `pim`.
    #[serde(default)]
    pub mode: EntraMode,
    /// The directory (tenant) id. Default: `AZURE_TENANT_ID` with workload identity.
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// The application (client) id. Default: `AZURE_CLIENT_ID` with workload identity.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Default: workload identity.
    #[serde(default)]
    pub credential: Credential,
    /// The Microsoft identity platform, e.g. `https://login.microsoftonline.us` for US
    /// Government. Default: `AZURE_AUTHORITY_HOST` with workload identity, else the public cloud.
    #[serde(default)]
    pub authority_host: Option<String>,
    /// Microsoft Graph, e.g. `https://graph.microsoft.us`. Requests go to `<graphEndpoint>/v1.0`
    /// and tokens are asked for `<graphEndpoint>/.default`.
    #[serde(default = "default_graph_endpoint")]
    pub graph_endpoint: String,
    /// Graph requests in flight at once; revocations get free slots first. Default 4.
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: u16,
    /// Retries of one call after throttling (429), 5xx or a dropped connection. Default 5.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// The longest wait inside one call (a `Retry-After`, or backoff); a longer one ends the
    /// call with a transient error that carries it, so the controller comes back then.
    /// Default 30s.
    #[serde(default = "default_max_retry_wait")]
    pub max_retry_wait: String,
    /// Time for one HTTP request. Default 30s.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: String,
    /// The justification on PIM schedule requests (`pim` mode). Default `pim-operator`.
    #[serde(default = "default_justification")]
    pub justification: String,
    /// `membership` mode: the object id of a service principal the operator makes an owner of a
    /// group before it removes the group's last owner, which Entra refuses ("The group must
    /// have at least one owner"). It stays as a standing owner: never listed, never removed.
    /// Default: none, and a last just-in-time owner stays, reported overdue.
    #[serde(default)]
    pub fallback_owner: Option<String>,
}

fn default_graph_endpoint() -> String {
    DEFAULT_GRAPH_ENDPOINT.to_owned()
}
fn default_max_concurrency() -> u16 {
    4
}
fn default_max_retries() -> u32 {
    5
}
fn default_max_retry_wait() -> String {
    "30s".to_owned()
}
fn default_request_timeout() -> String {
    "30s".to_owned()
}
fn default_justification() -> String {
    "pim-operator".to_owned()
}

fn positive(field: &str, value: &str) -> Result<Duration, String> {
    duration::parse_positive(field, value)
        .map(|d| d.unsigned_abs())
        .map_err(|e| e.to_string())
}

/// `https://…`, or `http://` only to this machine (tests, a local proxy).
pub fn check_endpoint(field: &str, url: &str) -> Result<(), String> {
    let rest = if let Some(rest) = url.strip_prefix("https://") {
        rest
    } else if let Some(rest) = url.strip_prefix("http://") {
        let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let host = match host.rsplit_once(':') {
            Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
            _ => host,
        };
        if !matches!(host, "127.0.0.1" | "localhost" | "[::1]") {
            return Err(format!(
                "{field}: {url:?} must use https:// (http:// only to 127.0.0.1 or localhost)"
            ));
        }
        rest
    } else {
        return Err(format!("{field}: {url:?} must start with https://"));
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() || rest.contains(['?', '#', ' ']) {
        return Err(format!("{field}: {url:?} is not a base URL"));
    }
    Ok(())
}

fn is_guid(text: &str) -> bool {
    super::names::is_guid(text)
}

impl EntraConfig {
    /// A config with a client secret; the rest defaults.
    pub fn with_secret(
        tenant_id: impl Into<String>,
        client_id: impl Into<String>,
        secret_file: impl Into<PathBuf>,
    ) -> EntraConfig {
        EntraConfig {
            username_mapping: None,
            mode: EntraMode::Membership,
            tenant_id: Some(tenant_id.into()),
            client_id: Some(client_id.into()),
            credential: Credential::ClientSecret {
                secret_file: secret_file.into(),
            },
            authority_host: None,
            graph_endpoint: default_graph_endpoint(),
            max_concurrency: default_max_concurrency(),
            max_retries: default_max_retries(),
            max_retry_wait: default_max_retry_wait(),
            request_timeout: default_request_timeout(),
            justification: default_justification(),
            fallback_owner: None,
        }
    }

    /// Checks what can be checked without the network or the environment; messages name the
    /// field.
    pub fn validate(&self) -> Result<(), String> {
        let workload_identity = matches!(self.credential, Credential::WorkloadIdentity { .. });
        for (field, value) in [("tenantId", &self.tenant_id), ("clientId", &self.client_id)] {
            match value {
                None if workload_identity => {}
                None => {
                    return Err(format!(
                        "{field}: required (only workload identity reads it from the environment)"
                    ));
                }
                Some(v) if field == "clientId" && !is_guid(v) => {
                    return Err(format!("{field}: {v:?} is not a GUID"));
                }
                Some(v) if !is_tenant(v) => {
                    return Err(format!("{field}: {v:?} is not a tenant id or domain name"));
                }
                Some(_) => {}
            }
        }
        if let Some(host) = &self.authority_host {
            check_endpoint("authorityHost", host)?;
        }
        check_endpoint("graphEndpoint", &self.graph_endpoint)?;
        if self.max_concurrency == 0 {
            return Err("maxConcurrency: must be at least 1".to_owned());
        }
        if self.max_retries > 20 {
            return Err("maxRetries: at most 20".to_owned());
        }
        positive("maxRetryWait", &self.max_retry_wait)?;
        positive("requestTimeout", &self.request_timeout)?;
        if self.justification.trim().is_empty() || self.justification.len() > 500 {
            return Err("justification: 1 to 500 characters".to_owned());
        }
        if let Some(owner) = &self.fallback_owner
            && !is_guid(owner)
        {
            return Err(format!(
                "fallbackOwner: {owner:?} is not an object id (the GUID of a service principal)"
            ));
        }
        Ok(())
    }

    pub fn max_retry_wait(&self) -> Duration {
        positive("maxRetryWait", &self.max_retry_wait).unwrap_or(Duration::from_secs(30))
    }

    pub fn request_timeout(&self) -> Duration {
        positive("requestTimeout", &self.request_timeout).unwrap_or(Duration::from_secs(30))
    }

    /// `<graphEndpoint>/v1.0`.
    pub fn graph_base(&self) -> String {
        format!("{}/v1.0", self.graph_endpoint.trim_end_matches('/'))
    }

    /// The token scope: `<graphEndpoint>/.default`.
    pub fn scope(&self) -> String {
        format!("{}/.default", self.graph_endpoint.trim_end_matches('/'))
    }
}

/// A tenant is named by its GUID or a verified domain (`contoso.onmicrosoft.com`).
fn is_tenant(text: &str) -> bool {
    is_guid(text)
        || (!text.is_empty()
            && text.len() <= 253
            && text.contains('.')
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'))
}

/// Where the token comes from, with the environment read: what the token client needs.
#[derive(Clone, PartialEq, Eq)]
pub struct Resolved {
    pub tenant_id: String,
    pub client_id: String,
    pub authority_host: String,
    pub source: Source,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Secret(PathBuf),
    Certificate { certificate: PathBuf, key: PathBuf },
    Federated(PathBuf),
}

impl std::fmt::Debug for Resolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolved")
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field("authority_host", &self.authority_host)
            .field("source", &self.source)
            .finish()
    }
}

impl EntraConfig {
    /// Fills in what workload identity takes from the environment (`env` looks a variable up).
    pub fn resolve(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<Resolved, String> {
        let from_env = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let workload_identity = matches!(self.credential, Credential::WorkloadIdentity { .. });
        let pick = |value: &Option<String>,
                    field: &str,
                    variable: &str|
         -> Result<String, String> {
            match value {
                Some(v) => Ok(v.clone()),
                None if workload_identity => from_env(variable).ok_or_else(|| {
                    format!("{field}: not set, and {variable} is not in the environment (is the pod labelled azure.workload.identity/use: \"true\"?)")
                }),
                None => Err(format!("{field}: required")),
            }
        };
        let tenant_id = pick(&self.tenant_id, "tenantId", "AZURE_TENANT_ID")?;
        let client_id = pick(&self.client_id, "clientId", "AZURE_CLIENT_ID")?;
        let authority_host = match &self.authority_host {
            Some(host) => host.clone(),
            None if workload_identity => from_env("AZURE_AUTHORITY_HOST")
                .unwrap_or_else(|| DEFAULT_AUTHORITY_HOST.to_owned()),
            None => DEFAULT_AUTHORITY_HOST.to_owned(),
        };
        check_endpoint("authorityHost", &authority_host)?;
        let source = match &self.credential {
            Credential::WorkloadIdentity { token_file } => {
                let file = match token_file {
                    Some(file) => file.clone(),
                    None => from_env("AZURE_FEDERATED_TOKEN_FILE")
                        .map(PathBuf::from)
                        .ok_or_else(|| {
                            "credential.tokenFile: not set, and AZURE_FEDERATED_TOKEN_FILE is not in the environment (is the pod labelled azure.workload.identity/use: \"true\"?)".to_owned()
                        })?,
                };
                Source::Federated(file)
            }
            Credential::ClientSecret { secret_file } => Source::Secret(secret_file.clone()),
            Credential::Certificate {
                certificate_file,
                private_key_file,
            } => Source::Certificate {
                certificate: certificate_file.clone(),
                key: private_key_file.clone(),
            },
        };
        Ok(Resolved {
            tenant_id,
            client_id,
            authority_host,
            source,
        })
    }
}

impl Resolved {
    /// `<authorityHost>/<tenant>/oauth2/v2.0/token`, the audience of client assertions too.
    pub fn token_url(&self) -> String {
        format!(
            "{}/{}/oauth2/v2.0/token",
            self.authority_host.trim_end_matches('/'),
            self.tenant_id
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TENANT: &str = "6f1c1a2e-0000-4000-8000-000000000001";
    const CLIENT: &str = "6f1c1a2e-0000-4000-8000-000000000002";

    fn config() -> EntraConfig {
        EntraConfig::with_secret(TENANT, CLIENT, "/run/secrets/entra/secret")
    }

    #[test]
    fn defaults_are_the_public_cloud_in_membership_mode() {
        let c = config();
        assert!(c.validate().is_ok());
        assert_eq!(c.mode, EntraMode::Membership);
        assert_eq!(c.graph_base(), "https://graph.microsoft.com/v1.0");
        assert_eq!(c.scope(), "https://graph.microsoft.com/.default");
        assert_eq!(c.max_retry_wait(), Duration::from_secs(30));
        let r = c.resolve(&|_| None).unwrap();
        assert_eq!(
            r.token_url(),
            format!("https://login.microsoftonline.com/{TENANT}/oauth2/v2.0/token")
        );
    }

    #[test]
    fn workload_identity_reads_the_environment() {
        let c = EntraConfig {
            tenant_id: None,
            client_id: None,
            credential: Credential::default(),
            ..config()
        };
        assert!(c.validate().is_ok());
        let env = |name: &str| match name {
            "AZURE_TENANT_ID" => Some(TENANT.to_owned()),
            "AZURE_CLIENT_ID" => Some(CLIENT.to_owned()),
            "AZURE_AUTHORITY_HOST" => Some("https://login.microsoftonline.us/".to_owned()),
            "AZURE_FEDERATED_TOKEN_FILE" => {
                Some("/var/run/secrets/azure/tokens/azure-identity-token".to_owned())
            }
            _ => None,
        };
        let r = c.resolve(&env).unwrap();
        assert_eq!(r.client_id, CLIENT);
        assert_eq!(
            r.token_url(),
            format!("https://login.microsoftonline.us/{TENANT}/oauth2/v2.0/token")
        );
        assert_eq!(
            r.source,
            Source::Federated("/var/run/secrets/azure/tokens/azure-identity-token".into())
        );
        let err = c.resolve(&|_| None).unwrap_err();
        assert!(err.contains("AZURE_TENANT_ID"), "{err}");
        let no_file = |name: &str| {
            (name != "AZURE_FEDERATED_TOKEN_FILE")
                .then(|| env(name))
                .flatten()
        };
        let err = c.resolve(&no_file).unwrap_err();
        assert!(err.contains("AZURE_FEDERATED_TOKEN_FILE"), "{err}");
    }

    #[test]
    fn bad_settings_name_their_field() {
        let err = |c: EntraConfig| c.validate().unwrap_err();
        assert!(
            err(EntraConfig {
                graph_endpoint: "http://graph.example.com".into(),
                ..config()
            })
            .starts_with("graphEndpoint")
        );
        assert!(
            err(EntraConfig {
                authority_host: Some("ftp://x".into()),
                ..config()
            })
            .starts_with("authorityHost")
        );
        assert!(
            err(EntraConfig {
                client_id: None,
                ..config()
            })
            .starts_with("clientId")
        );
        assert!(
            err(EntraConfig {
                client_id: Some("my-app".into()),
                ..config()
            })
            .starts_with("clientId")
        );
        assert!(
            err(EntraConfig {
                max_concurrency: 0,
                ..config()
            })
            .starts_with("maxConcurrency")
        );
        assert!(
            err(EntraConfig {
                request_timeout: "soon".into(),
                ..config()
            })
            .contains("requestTimeout")
        );
        assert!(
            err(EntraConfig {
                fallback_owner: Some("pim-operator".into()),
                ..config()
            })
            .starts_with("fallbackOwner")
        );
        assert!(check_endpoint("x", "http://127.0.0.1:8080").is_ok());
        assert!(check_endpoint("x", "http://localhost").is_ok());
        assert!(check_endpoint("x", "http://127.0.0.1.evil.example").is_err());
        assert!(check_endpoint("x", "https://graph.microsoft.com?x=1").is_err());
    }
}
