//! The operator's configuration file (Helm values render it). Secrets never live here or in a
//! custom resource: backends read them from files.
//!
//! Every field is documented for users in `deploy/config/operator.yaml`; the types derive
//! `JsonSchema` so that tests/config_reference.rs can check that list against them.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::core::duration;

#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    /// Directory connections by name; `PimGroup.spec.directory` picks one. `kubernetes` is always
    /// available, even when not listed.
    #[serde(default)]
    pub directories: BTreeMap<String, DirectoryConfig>,
    #[serde(default)]
    pub username_mapping: UsernameMapping,
    /// How often every object is looked at again, to cover lost timers. Default 5m.
    #[serde(default = "default_resync")]
    pub resync_interval: String,
    /// How long past a window's end the removal may take before it is reported as
    /// `RevocationOverdue` (condition and `pim_revocations_overdue`). Default 30s.
    #[serde(default = "default_revocation_grace")]
    pub revocation_grace: String,
    /// Reconciles running at once, per kind. Default 16.
    #[serde(default = "default_concurrency")]
    pub concurrency: u16,
    #[serde(default)]
    pub leader_election: LeaderElection,
    /// Where `/metrics`, `/healthz` and `/readyz` are served. Default 0.0.0.0:8080.
    #[serde(default = "default_metrics_address")]
    pub metrics_address: String,
    /// Namespace for the operator's Lease and Events. Default: `POD_NAMESPACE`, else pim-system.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Notification channels (e-mail, chat, webhooks); none by default (`notify::NotifyConfig`).
    #[serde(default)]
    pub notifications: crate::notify::NotifyConfig,
    /// Audit sinks and retention (`audit::AuditConfig`).
    #[serde(default)]
    pub audit: crate::audit::AuditConfig,
    /// The admission webhook server (DESIGN §7).
    #[serde(default)]
    pub webhook: crate::webhook::WebhookConfig,
    /// The key the webhook signs with and the controller verifies with.
    #[serde(default)]
    pub attestation: crate::attestation::AttestationConfig,
}

#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
pub enum DirectoryConfig {
    /// RBAC bindings in this cluster.
    Kubernetes,
    /// An in-process directory, for trials and tests; forgets everything on restart.
    Memory,
    /// OpenLDAP, FreeIPA or Active Directory over LDAP (see `directory::ldap`).
    Ldap(Box<crate::directory::ldap::LdapConfig>),
    /// Microsoft Entra ID through Microsoft Graph (see `directory::entra`).
    Entra(Box<crate::directory::entra::EntraConfig>),
}

/// How a Kubernetes username becomes a directory principal.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UsernameMapping {
    /// Removed from the start of the username, e.g. `oidc:`.
    #[serde(default)]
    pub strip_prefix: Option<String>,
    /// Appended when the name has no `@`, e.g. `@contoso.com`.
    #[serde(default)]
    pub append_domain: Option<String>,
    /// Which names compare without regard to case when the webhook and the controller decide who
    /// the requester is and who approved: `emailLike` (default: names with `@`, such as UPNs and
    /// e-mail addresses), `always`, or `never`. Only ASCII letters fold.
    #[serde(default)]
    pub case_insensitive: crate::core::identity::CaseInsensitive,
}

impl UsernameMapping {
    pub fn principal_for(&self, username: &str) -> String {
        let name = self
            .strip_prefix
            .as_deref()
            .and_then(|p| username.strip_prefix(p))
            .unwrap_or(username);
        match &self.append_domain {
            Some(domain) if !name.contains('@') => format!("{name}{domain}"),
            _ => name.to_owned(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LeaderElection {
    #[serde(default = "default_true")]
    pub enabled: bool,
    #[serde(default = "default_lease_name")]
    pub lease_name: String,
    /// How long a lease holds without renewal. Default 15s.
    #[serde(default = "default_lease_duration")]
    pub lease_duration: String,
}

impl Default for LeaderElection {
    fn default() -> Self {
        LeaderElection {
            enabled: true,
            lease_name: default_lease_name(),
            lease_duration: default_lease_duration(),
        }
    }
}

fn default_resync() -> String {
    "5m".to_owned()
}
fn default_revocation_grace() -> String {
    "30s".to_owned()
}
fn default_concurrency() -> u16 {
    16
}
fn default_metrics_address() -> String {
    "0.0.0.0:8080".to_owned()
}
fn default_true() -> bool {
    true
}
fn default_lease_name() -> String {
    "pim-operator".to_owned()
}
fn default_lease_duration() -> String {
    "15s".to_owned()
}

impl Default for Config {
    fn default() -> Self {
        Config {
            directories: BTreeMap::new(),
            username_mapping: UsernameMapping::default(),
            resync_interval: default_resync(),
            revocation_grace: default_revocation_grace(),
            concurrency: default_concurrency(),
            leader_election: LeaderElection::default(),
            metrics_address: default_metrics_address(),
            namespace: None,
            notifications: crate::notify::NotifyConfig::default(),
            audit: crate::audit::AuditConfig::default(),
            webhook: crate::webhook::WebhookConfig::default(),
            attestation: crate::attestation::AttestationConfig::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Invalid { path: String, message: String },
}

/// Settings checked and converted for use.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config: Config,
    pub resync: Duration,
    /// See `Config::revocation_grace`.
    pub revocation_grace: Duration,
    pub lease_duration: Duration,
}

impl Config {
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        Config::parse(&text, &shown)
    }

    /// Parses and checks a config; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Settings, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: origin.to_owned(),
            message,
        };
        let config: Config = if text.trim().is_empty() {
            Config::default()
        } else {
            serde_saphyr::from_str(text).map_err(|e| invalid(e.to_string()))?
        };
        config.settings().map_err(invalid)
    }

    pub fn settings(self) -> Result<Settings, String> {
        let to_std = |field: &str, value: &str| -> Result<Duration, String> {
            let d = duration::parse_positive(field, value).map_err(|e| e.to_string())?;
            Ok(d.unsigned_abs())
        };
        let resync = to_std("resyncInterval", &self.resync_interval)?;
        let revocation_grace = to_std("revocationGrace", &self.revocation_grace)?;
        let lease_duration = to_std(
            "leaderElection.leaseDuration",
            &self.leader_election.lease_duration,
        )?;
        if lease_duration.as_secs() < crate::controller::MIN_LEASE_SECONDS {
            return Err(format!(
                "leaderElection.leaseDuration: must be at least {}s, to leave time to renew",
                crate::controller::MIN_LEASE_SECONDS
            ));
        }
        if self.concurrency == 0 {
            return Err("concurrency: must be at least 1".to_owned());
        }
        if self
            .metrics_address
            .parse::<std::net::SocketAddr>()
            .is_err()
        {
            return Err(format!(
                "metricsAddress: {:?} is not an address like 0.0.0.0:8080",
                self.metrics_address
            ));
        }
        for name in self.directories.keys() {
            let valid = !name.is_empty()
                && name.len() <= 63
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            if !valid {
                return Err(format!(
                    "directories.{name}: names are lowercase letters, digits and dashes, as PimGroup.spec.directory"
                ));
            }
        }
        let is_entra =
            |name: &str| matches!(self.directories.get(name), Some(DirectoryConfig::Entra(_)));
        self.notifications
            .validate(&is_entra)
            .map_err(|e| format!("notifications.{e}"))?;
        self.audit.validate().map_err(|e| format!("audit.{e}"))?;
        self.attestation
            .validate()
            .map_err(|e| format!("attestation.{e}"))?;
        for (name, directory) in &self.directories {
            if let DirectoryConfig::Ldap(ldap) = directory {
                ldap.validate()
                    .map_err(|e| format!("directories.{name}.{e}"))?;
            }
            if let DirectoryConfig::Entra(entra) = directory {
                entra
                    .validate()
                    .map_err(|e| format!("directories.{name}.{e}"))?;
            }
        }
        Ok(Settings {
            config: self,
            resync,
            revocation_grace,
            lease_duration,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::identity::CaseInsensitive;

    #[test]
    fn an_empty_file_is_the_defaults() {
        let s = Config::parse("", "c.yaml").unwrap();
        assert_eq!(s.resync, Duration::from_secs(300));
        assert_eq!(
            s.config.username_mapping.case_insensitive,
            CaseInsensitive::EmailLike
        );
        assert_eq!(s.config.concurrency, 16);
        assert!(s.config.leader_election.enabled);
    }

    #[test]
    fn a_full_file_parses() {
        let s = Config::parse(
            "directories:\n  mem: {type: memory}\n  rbac: {type: kubernetes}\nusernameMapping:\n  stripPrefix: 'oidc:'\n  appendDomain: '@contoso.com'\n  caseInsensitive: never\nresyncInterval: 2m\nconcurrency: 4\nleaderElection: {enabled: false}\n",
            "c.yaml",
        )
        .unwrap();
        assert_eq!(s.config.directories["mem"], DirectoryConfig::Memory);
        assert_eq!(s.resync, Duration::from_secs(120));
        let mapping = &s.config.username_mapping;
        assert_eq!(mapping.principal_for("oidc:alice"), "alice@contoso.com");
        assert_eq!(
            mapping.principal_for("bob@fabrikam.com"),
            "bob@fabrikam.com"
        );
        assert_eq!(mapping.case_insensitive, CaseInsensitive::Never);
    }

    #[test]
    fn the_shipped_example_parses() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/config/operator.yaml");
        let s = Config::load(&path).unwrap();
        assert_eq!(s.config.directories["sandbox"], DirectoryConfig::Memory);
        assert_eq!(s.config.namespace.as_deref(), Some("pim-system"));
        assert_eq!(s.lease_duration, Duration::from_secs(15));
    }

    #[test]
    fn errors_name_the_file_and_field() {
        let err = |text: &str| Config::parse(text, "values.yaml").unwrap_err().to_string();
        assert!(
            err("resyncInterval: soon")
                .contains("values.yaml: resyncInterval: \"soon\" is not a duration"),
            "{}",
            err("resyncInterval: soon")
        );
        assert!(err("concurrency: 0").contains("concurrency: must be at least 1"));
        assert!(
            err("directories:\n  x: {type: carrier-pigeon}\n")
                .starts_with("config file values.yaml:")
        );
        assert!(
            err("resync: 5m").contains("resync"),
            "{}",
            err("resync: 5m")
        );
        assert!(err("directories:\n  Bad_Name: {type: memory}\n").contains("directories.Bad_Name"));
        assert!(err("metricsAddress: nowhere").contains("metricsAddress"));
        assert!(
            err("leaderElection: {leaseDuration: 1s}")
                .contains("leaderElection.leaseDuration: must be at least 3s")
        );
    }
}
