//! The webhook server's settings in the operator's config file.

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookConfig {
    /// Serve the admission webhook. The shipped manifests turn it on; without it nothing stamps
    /// or signs requests, so the controller grants nothing.
    #[serde(default)]
    pub enabled: bool,
    /// Where HTTPS is served. Default 0.0.0.0:8443.
    #[serde(default = "default_address")]
    pub address: String,
    /// A mounted certificate and key (cert-manager's `tls.crt`/`tls.key`), re-read when they
    /// change. Without them the operator makes its own (see `selfSigned`).
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    #[serde(default)]
    pub self_signed: SelfSigned,
    /// Which `userInfo.extra` claim proves MFA, and the values that count. Unset, the webhook
    /// looks for `amr` containing `mfa`, which structured authentication never produces (its
    /// extra keys are domain-prefixed), so policies that require MFA say so in their status.
    #[serde(default)]
    pub mfa_claim: Option<MfaClaim>,
    /// The `userInfo.extra` key that carries when the caller signed in (the token's
    /// `auth_time`, in Unix seconds), for policies' `maxAuthenticationAge`. Unset: such
    /// policies refuse, since the age cannot be known.
    #[serde(default)]
    pub auth_time_claim: Option<String>,
}

impl WebhookConfig {
    /// The claim the webhook reads: the configured one, or the default.
    pub fn mfa_claim(&self) -> MfaClaim {
        self.mfa_claim.clone().unwrap_or_default()
    }
}

/// The self-generated certificate: kept in a Secret so every replica serves the same one, and
/// its CA written into our own webhook configurations.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SelfSigned {
    /// The webhook Service; the certificate names `<service>.<namespace>.svc`.
    #[serde(default = "default_service")]
    pub service: String,
    /// The Secret holding the CA and serving certificate.
    #[serde(default = "default_secret")]
    pub secret: String,
    /// The Mutating- and ValidatingWebhookConfiguration to write the CA bundle into.
    #[serde(default = "default_configuration")]
    pub mutating_configuration: String,
    #[serde(default = "default_configuration")]
    pub validating_configuration: String,
}

/// Kubernetes structured authentication can map the OIDC `amr` or `acrs` claim into
/// `userInfo.extra`; this names the key and the values that mean MFA.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MfaClaim {
    #[serde(default = "default_mfa_key")]
    pub key: String,
    #[serde(default = "default_mfa_values")]
    pub values: Vec<String>,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            enabled: false,
            address: default_address(),
            cert_file: None,
            key_file: None,
            self_signed: SelfSigned::default(),
            mfa_claim: None,
            auth_time_claim: None,
        }
    }
}

impl Default for SelfSigned {
    fn default() -> Self {
        SelfSigned {
            service: default_service(),
            secret: default_secret(),
            mutating_configuration: default_configuration(),
            validating_configuration: default_configuration(),
        }
    }
}

impl Default for MfaClaim {
    fn default() -> Self {
        MfaClaim {
            key: default_mfa_key(),
            values: default_mfa_values(),
        }
    }
}

fn default_address() -> String {
    "0.0.0.0:8443".to_owned()
}
fn default_service() -> String {
    "pim-operator-webhook".to_owned()
}
fn default_secret() -> String {
    "pim-operator-webhook-tls".to_owned()
}
fn default_configuration() -> String {
    "pim-operator".to_owned()
}
fn default_mfa_key() -> String {
    "amr".to_owned()
}
fn default_mfa_values() -> Vec<String> {
    vec!["mfa".to_owned()]
}
