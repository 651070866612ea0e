//! The webhook's serving certificate: mounted files (cert-manager), or one the operator makes,
//! keeps in a Secret shared by every replica, and whose CA it writes into its own webhook
//! configurations.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::config::SelfSigned;

/// A certificate chain and key in PEM, and the CA that signed it when we made it ourselves.
#[derive(Clone, PartialEq, Eq)]
pub struct ServingCert {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    pub ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for ServingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServingCert").finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("webhook certificate file {path}: {message}")]
    File { path: String, message: String },
    #[error("webhook certificate: {0}")]
    Invalid(String),
    #[error("cannot generate the webhook certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("webhook certificate Secret {namespace}/{name}: {source}")]
    Secret {
        namespace: String,
        name: String,
        source: kube::Error,
    },
    #[error("writing the CA bundle into {kind} {name}: {source}")]
    Inject {
        kind: &'static str,
        name: String,
        source: kube::Error,
    },
}

impl ServingCert {
    pub fn from_files(cert: &Path, key: &Path) -> Result<Self, CertError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|e| CertError::File {
                path: path.display().to_string(),
                message: e.to_string(),
            })
        };
        Ok(ServingCert {
            cert_pem: read(cert)?,
            key_pem: read(key)?,
            ca_pem: None,
        })
    }

    /// A new CA and a serving certificate for `dns_names`, signed by it.
    pub fn generate(dns_names: &[String]) -> Result<Self, CertError> {
        let ca_key = rcgen::KeyPair::generate()?;
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "pim-operator webhook CA");
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(dns_names.to_vec())?;
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            dns_names
                .first()
                .map_or("pim-operator-webhook", |n| n.as_str()),
        );
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &issuer)?;
        Ok(ServingCert {
            cert_pem: cert.pem().into_bytes(),
            key_pem: key.serialize_pem().into_bytes(),
            ca_pem: Some(ca_cert.pem().into_bytes()),
        })
    }

    /// The rustls server configuration (ring provider, as everywhere in the operator).
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, CertError> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&self.cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| CertError::Invalid(format!("certificate: {e}")))?;
        if certs.is_empty() {
            return Err(CertError::Invalid("no certificate in the PEM".into()));
        }
        let key = PrivateKeyDer::from_pem_slice(&self.key_pem)
            .map_err(|e| CertError::Invalid(format!("private key: {e}")))?;
        let config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| CertError::Invalid(e.to_string()))?
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .map_err(|e| CertError::Invalid(e.to_string()))?;
        Ok(Arc::new(config))
    }
}

/// The DNS names the API server uses for the webhook Service.
pub fn service_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
        format!("{service}.{namespace}"),
        service.to_owned(),
    ]
}

/// The shared self-signed certificate: read from the Secret, or made and stored there. When two
/// replicas race, the first create wins and the other reads it.
pub async fn shared_self_signed(
    client: &kube::Client,
    namespace: &str,
    settings: &SelfSigned,
) -> Result<ServingCert, CertError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret_error = |source| CertError::Secret {
        namespace: namespace.to_owned(),
        name: settings.secret.clone(),
        source,
    };
    if let Some(existing) = api.get_opt(&settings.secret).await.map_err(secret_error)?
        && let Some(cert) = from_secret(&existing)
    {
        return Ok(cert);
    }
    let cert = ServingCert::generate(&service_names(&settings.service, namespace))?;
    let data = BTreeMap::from([
        ("tls.crt".to_owned(), ByteString(cert.cert_pem.clone())),
        ("tls.key".to_owned(), ByteString(cert.key_pem.clone())),
        (
            "ca.crt".to_owned(),
            ByteString(cert.ca_pem.clone().unwrap_or_default()),
        ),
    ]);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(settings.secret.clone()),
            namespace: Some(namespace.to_owned()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".to_owned()),
        data: Some(data),
        ..Default::default()
    };
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(cert),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let stored = api.get(&settings.secret).await.map_err(secret_error)?;
            from_secret(&stored).ok_or_else(|| {
                CertError::Invalid(format!(
                    "Secret {namespace}/{} lacks tls.crt, tls.key or ca.crt",
                    settings.secret
                ))
            })
        }
        Err(e) => Err(secret_error(e)),
    }
}

fn from_secret(secret: &Secret) -> Option<ServingCert> {
    let data = secret.data.as_ref()?;
    let get = |k: &str| data.get(k).map(|b| b.0.clone()).filter(|b| !b.is_empty());
    Some(ServingCert {
        cert_pem: get("tls.crt")?,
        key_pem: get("tls.key")?,
        ca_pem: Some(get("ca.crt")?),
    })
}

/// Writes `ca_pem` as the caBundle of every webhook in our two configurations, when it differs.
pub async fn inject_ca_bundle(
    client: &kube::Client,
    settings: &SelfSigned,
    ca_pem: &[u8],
) -> Result<(), CertError> {
    let bundle = ByteString(ca_pem.to_vec());
    let mutating: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    if let Some(mut config) = mutating
        .get_opt(&settings.mutating_configuration)
        .await
        .map_err(|source| inject_error("MutatingWebhookConfiguration", settings, source))?
    {
        let mut changed = false;
        for webhook in config.webhooks.iter_mut().flatten() {
            if webhook.client_config.ca_bundle.as_ref() != Some(&bundle) {
                webhook.client_config.ca_bundle = Some(bundle.clone());
                changed = true;
            }
        }
        if changed {
            mutating
                .replace(
                    &settings.mutating_configuration,
                    &PostParams::default(),
                    &config,
                )
                .await
                .map_err(|source| inject_error("MutatingWebhookConfiguration", settings, source))?;
        }
    }
    let validating: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    if let Some(mut config) = validating
        .get_opt(&settings.validating_configuration)
        .await
        .map_err(|source| inject_error("ValidatingWebhookConfiguration", settings, source))?
    {
        let mut changed = false;
        for webhook in config.webhooks.iter_mut().flatten() {
            if webhook.client_config.ca_bundle.as_ref() != Some(&bundle) {
                webhook.client_config.ca_bundle = Some(bundle.clone());
                changed = true;
            }
        }
        if changed {
            validating
                .replace(
                    &settings.validating_configuration,
                    &PostParams::default(),
                    &config,
                )
                .await
                .map_err(|source| {
                    inject_error("ValidatingWebhookConfiguration", settings, source)
                })?;
        }
    }
    Ok(())
}

fn inject_error(kind: &'static str, settings: &SelfSigned, source: kube::Error) -> CertError {
    let name = if kind.starts_with("Mutating") {
        settings.mutating_configuration.clone()
    } else {
        settings.validating_configuration.clone()
    };
    CertError::Inject { kind, name, source }
}
