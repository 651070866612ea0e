//! What the operator says about itself at start, in one log line: version, addresses,
//! directories and their modes, leader election, and whether anything can be granted at all.

use crate::config::{DirectoryConfig, Settings};
use crate::directory::entra::EntraMode;

/// The operator as configured, once its attestation key is loaded.
#[derive(Debug, Clone, PartialEq)]
pub struct Startup {
    pub version: &'static str,
    pub metrics_address: String,
    /// `None` when the webhook is off.
    pub webhook_address: Option<String>,
    /// `name=type[/mode]`, `kubernetes` first (always there).
    pub directories: Vec<String>,
    pub leader_election: bool,
    /// An attestation key is loaded: the webhook can sign and the controller verify.
    pub attestation_ready: bool,
}

impl Startup {
    pub fn new(settings: &Settings, attestation_ready: bool) -> Startup {
        let config = &settings.config;
        let mut directories = vec![format!(
            "{}=kubernetes",
            crate::api::pim_group::KUBERNETES_DIRECTORY
        )];
        directories.extend(
            config
                .directories
                .iter()
                .filter(|(name, _)| name.as_str() != crate::api::pim_group::KUBERNETES_DIRECTORY)
                .map(|(name, directory)| format!("{name}={}", mode(directory))),
        );
        Startup {
            version: env!("CARGO_PKG_VERSION"),
            metrics_address: config.metrics_address.clone(),
            webhook_address: config
                .webhook
                .enabled
                .then(|| config.webhook.address.clone()),
            directories,
            leader_election: config.leader_election.enabled,
            attestation_ready,
        }
    }

    /// Why no request can be granted, naming the settings to change; `None` when they can.
    pub fn cannot_grant(&self) -> Option<String> {
        let mut missing = Vec::new();
        if self.webhook_address.is_none() {
            missing.push("the admission webhook is off (set webhook.enabled)");
        }
        if !self.attestation_ready {
            missing.push(
                "there is no attestation key (set attestation.secret or attestation.keyFile)",
            );
        }
        if missing.is_empty() {
            return None;
        }
        Some(format!(
            "nothing can be granted: {}; requests stay Pending (AttestationKeyMissing or unverified)",
            missing.join(" and ")
        ))
    }

    /// Logs the one start line: `info`, or `warn` when nothing can be granted.
    pub fn log(&self) {
        let webhook = self.webhook_address.as_deref().unwrap_or("off");
        let directories = self.directories.join(" ");
        let leader_election = if self.leader_election { "on" } else { "off" };
        let attestation = if self.attestation_ready {
            "ready"
        } else {
            "no key"
        };
        match self.cannot_grant() {
            None => tracing::info!(
                version = self.version,
                metrics = %self.metrics_address,
                webhook,
                directories = %directories,
                leader_election,
                attestation,
                "pim-operator starting"
            ),
            Some(why) => tracing::warn!(
                version = self.version,
                metrics = %self.metrics_address,
                webhook,
                directories = %directories,
                leader_election,
                attestation,
                grants = %why,
                "pim-operator starting"
            ),
        }
    }
}

/// A directory's type, and its mode where it has one.
fn mode(directory: &DirectoryConfig) -> String {
    match directory {
        DirectoryConfig::Kubernetes(_) => "kubernetes".to_owned(),
        DirectoryConfig::Memory(_) => "memory".to_owned(),
        DirectoryConfig::Ldap(ldap) if ldap.active_directory => "ldap/activeDirectory".to_owned(),
        DirectoryConfig::Ldap(_) => "ldap".to_owned(),
        DirectoryConfig::Entra(entra) => match entra.mode {
            EntraMode::Membership => "entra/membership".to_owned(),
            EntraMode::Pim => "entra/pim".to_owned(),
        },
    }
}
