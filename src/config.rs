//! The operator's configuration file (Helm values render it). Secrets never live here or in a
//! custom resource: backends read them from files.
//!
//! Every field is documented for users in `deploy/config/operator.yaml`; the types derive
//! `JsonSchema` so that tests/it/config_reference.rs can check that list against them.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::core::duration;
use crate::core::identity::{Principals, UsernameMapping};
pub use crate::directory::DirectoryUsernameMapping;

/// The shortest lease that leaves room to renew before it expires.
pub const MIN_LEASE_SECONDS: u64 = 3;

#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    /// Directory connections by name; `PimGroup.spec.directory` picks one. `kubernetes` is always
    /// available, even when not listed.
    #[serde(default)]
    pub directories: BTreeMap<String, DirectoryConfig>,
    #[serde(default)]
    pub username_mapping: UsernameMappingDefaults,
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
    /// Directory removals in flight at once, over every PimGroup and directory: the pace of
    /// revocations when many end together. Grants have lanes of their own and never take a
    /// removal's. Default 64 (docs/performance.md: Graph's write budget, the lag it gives).
    #[serde(default = "default_removal_concurrency")]
    pub removal_concurrency: u16,
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
    /// RBAC bindings in this cluster. Their subjects are the Kubernetes usernames and groups the
    /// API server authenticates, so this directory takes no `usernameMapping`.
    Kubernetes(KubernetesDirectoryConfig),
    /// An in-process directory, for trials and tests; forgets everything on restart.
    Memory(MemoryDirectoryConfig),
    /// OpenLDAP, FreeIPA or Active Directory over LDAP (see `directory::ldap`).
    Ldap(Box<crate::directory::ldap::LdapConfig>),
    /// Microsoft Entra ID through Microsoft Graph (see `directory::entra`).
    Entra(Box<crate::directory::entra::EntraConfig>),
}

impl DirectoryConfig {
    /// The directory's own `usernameMapping`, if it sets one (a kubernetes directory never
    /// does: the settings check refuses it).
    pub fn own_username_mapping(&self) -> Option<&DirectoryUsernameMapping> {
        match self {
            DirectoryConfig::Kubernetes(_) => None,
            DirectoryConfig::Memory(memory) => memory.username_mapping.as_ref(),
            DirectoryConfig::Ldap(ldap) => ldap.username_mapping.as_ref(),
            DirectoryConfig::Entra(entra) => entra.username_mapping.as_ref(),
        }
    }
}

/// The kubernetes directory's settings: none. `usernameMapping` is accepted only to refuse it
/// by name (see [`DirectoryConfig::Kubernetes`]).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubernetesDirectoryConfig {
    /// Not allowed: an RBAC subject must be the username the API server authenticated.
    #[serde(default)]
    pub username_mapping: Option<DirectoryUsernameMapping>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MemoryDirectoryConfig {
    /// How Kubernetes usernames become this directory's principals; default the top-level
    /// `usernameMapping`.
    #[serde(default)]
    pub username_mapping: Option<DirectoryUsernameMapping>,
}

/// The top-level `usernameMapping`: how names compare, and the mapping of directories that set
/// none of their own.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UsernameMappingDefaults {
    /// The default `stripPrefix` of LDAP, Entra and memory directories that set no
    /// `usernameMapping` of their own. Never applied to the kubernetes directory.
    #[serde(default)]
    pub strip_prefix: Option<String>,
    /// The default `appendDomain` of those directories.
    #[serde(default)]
    pub append_domain: Option<String>,
    /// Which names compare without regard to case when the webhook and the controller decide who
    /// the requester is and who approved: `emailLike` (default: names with `@`, such as UPNs and
    /// e-mail addresses), `always`, or `never`. Only ASCII letters fold.
    #[serde(default)]
    pub case_insensitive: crate::core::identity::CaseInsensitive,
}

impl Config {
    /// Every directory's username mapping and the rule for comparing names.
    pub fn principals(&self) -> Principals {
        let defaults = DirectoryUsernameMapping {
            strip_prefix: self.username_mapping.strip_prefix.clone(),
            append_domain: self.username_mapping.append_domain.clone(),
        };
        let mappings = self
            .directories
            .iter()
            .map(|(name, directory)| {
                let mapping = match directory {
                    DirectoryConfig::Kubernetes(_) => UsernameMapping::default(),
                    _ => directory
                        .own_username_mapping()
                        .unwrap_or(&defaults)
                        .mapping(),
                };
                (name.clone(), mapping)
            })
            .collect();
        Principals::new(mappings, self.username_mapping.case_insensitive)
    }

    /// The directories that make no assignment shorter than some length: Entra in `pim` mode
    /// (PIM for Groups' five minutes).
    pub fn shortest_assignments(&self) -> BTreeMap<String, jiff::SignedDuration> {
        use crate::directory::entra::{EntraMode, pim};
        self.directories
            .iter()
            .filter_map(|(name, directory)| match directory {
                DirectoryConfig::Entra(entra) if entra.mode == EntraMode::Pim => {
                    Some((name.clone(), pim::MINIMUM))
                }
                _ => None,
            })
            .collect()
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
fn default_removal_concurrency() -> u16 {
    64
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
            username_mapping: UsernameMappingDefaults::default(),
            resync_interval: default_resync(),
            revocation_grace: default_revocation_grace(),
            concurrency: default_concurrency(),
            removal_concurrency: default_removal_concurrency(),
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
        if lease_duration.as_secs() < MIN_LEASE_SECONDS {
            return Err(format!(
                "leaderElection.leaseDuration: must be at least {}s, to leave time to renew",
                MIN_LEASE_SECONDS
            ));
        }
        if self.concurrency == 0 {
            return Err("concurrency: must be at least 1".to_owned());
        }
        if self.removal_concurrency == 0 {
            return Err("removalConcurrency: must be at least 1".to_owned());
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
        DirectoryUsernameMapping {
            strip_prefix: None,
            append_domain: self.username_mapping.append_domain.clone(),
        }
        .validate()
        .map_err(|e| format!("usernameMapping.{e}"))?;
        for (name, directory) in &self.directories {
            if let Some(own) = directory.own_username_mapping() {
                own.validate()
                    .map_err(|e| format!("directories.{name}.usernameMapping.{e}"))?;
            }
            if let DirectoryConfig::Kubernetes(k) = directory
                && k.username_mapping.is_some()
            {
                return Err(format!(
                    "directories.{name}.usernameMapping: a kubernetes directory binds the username and groups the API server authenticated (oidc:alice stays oidc:alice), so it takes no mapping; remove it"
                ));
            }
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
        assert_eq!(s.config.removal_concurrency, 64);
        assert!(s.config.leader_election.enabled);
    }

    #[test]
    fn removal_concurrency_is_its_own_setting() {
        let s = Config::parse("concurrency: 4\nremovalConcurrency: 256\n", "c.yaml").unwrap();
        assert_eq!(
            (s.config.concurrency, s.config.removal_concurrency),
            (4, 256)
        );
        let err = Config::parse("removalConcurrency: 0", "values.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("values.yaml: removalConcurrency: must be at least 1"),
            "{err}"
        );
        let err = Config::parse("removalConcurrency: -1", "values.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("removalConcurrency"), "{err}");
    }

    #[test]
    fn a_full_file_parses() {
        let s = Config::parse(
            "directories:\n  mem: {type: memory}\n  rbac: {type: kubernetes}\nusernameMapping:\n  stripPrefix: 'oidc:'\n  appendDomain: '@contoso.com'\n  caseInsensitive: never\nresyncInterval: 2m\nconcurrency: 4\nleaderElection: {enabled: false}\n",
            "c.yaml",
        )
        .unwrap();
        assert_eq!(s.resync, Duration::from_secs(120));
        assert_eq!(
            s.config.directories["mem"],
            DirectoryConfig::Memory(MemoryDirectoryConfig::default())
        );
        let principals = s.config.principals();
        assert_eq!(principals.names, CaseInsensitive::Never);
        // The top-level mapping is the memory directory's, never the kubernetes directory's.
        assert_eq!(
            principals.principal_in("mem", "oidc:alice"),
            Ok("alice@contoso.com".to_owned())
        );
        assert!(principals.principal_in("mem", "bob@fabrikam.com").is_err());
        assert_eq!(
            principals.principal_in("rbac", "oidc:alice"),
            Ok("oidc:alice".to_owned())
        );
        assert_eq!(
            principals.principal_in("kubernetes", "oidc:alice"),
            Ok("oidc:alice".to_owned())
        );
    }

    /// Issue 17 finding 1: the mapping is a directory's own; one operator serves an RBAC
    /// directory (usernames as authenticated) beside others that map them differently.
    #[test]
    fn each_directory_maps_usernames_its_own_way() {
        let s = Config::parse(
            "directories:\n  rbac: {type: kubernetes}\n  corp: {type: memory, usernameMapping: {stripPrefix: 'oidc:'}}\n  lab: {type: memory, usernameMapping: {appendDomain: '@lab.example'}}\n  plain: {type: memory}\nusernameMapping: {stripPrefix: 'sso:'}\n",
            "c.yaml",
        )
        .unwrap();
        let p = s.config.principals();
        let of = |directory: &str, username: &str| p.principal_in(directory, username).ok();
        assert_eq!(
            of("rbac", "oidc:alice@example.org").as_deref(),
            Some("oidc:alice@example.org")
        );
        assert_eq!(
            of("corp", "oidc:alice@example.org").as_deref(),
            Some("alice@example.org")
        );
        assert_eq!(of("corp", "alice@example.org"), None);
        assert_eq!(of("lab", "alice").as_deref(), Some("alice@lab.example"));
        assert_eq!(of("lab", "alice@lab.example"), None);
        // A directory without its own mapping takes the top-level one.
        assert_eq!(of("plain", "sso:carol").as_deref(), Some("carol"));
        assert_eq!(of("plain", "carol"), None);
    }

    #[test]
    fn a_kubernetes_directory_refuses_a_mapping_by_name() {
        let err = Config::parse(
            "directories:\n  rbac: {type: kubernetes, usernameMapping: {stripPrefix: 'oidc:'}}\n",
            "values.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("values.yaml: directories.rbac.usernameMapping")
                && err.contains("takes no mapping"),
            "{err}"
        );
        let err = Config::parse(
            "directories:\n  corp: {type: memory, usernameMapping: {stripPrefx: 'oidc:'}}\n",
            "values.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("stripPrefx"), "{err}");
        let err = Config::parse(
            "directories:\n  corp: {type: memory, usernameMapping: {appendDomain: 'contoso.com'}}\n",
            "values.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("directories.corp.usernameMapping.appendDomain"),
            "{err}"
        );
    }

    #[test]
    fn the_shipped_example_parses() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/config/operator.yaml");
        let s = Config::load(&path).unwrap();
        assert_eq!(
            s.config.principals().principal_in("sandbox", "oidc:alice"),
            Ok("alice@contoso.com".to_owned())
        );
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
