//! The webhook's serving certificate: mounted files (cert-manager), or one the operator makes,
//! keeps in a Secret shared by every replica, and whose CA it writes into its own webhook
//! configurations.
//!
//! The self-made ones are a CA of [`CA_LIFETIME`] and a serving certificate of
//! [`LEAF_LIFETIME`], each renewed by the running operator once in the last third of its life
//! ([`renewal`]). A new CA goes into the caBundle next to the one before it, so that a serving
//! certificate signed by the old CA, still served by a replica that has not yet re-read the
//! Secret, stays trusted.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;

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

/// How long a CA the operator makes is valid.
pub const CA_LIFETIME: Duration = Duration::from_secs(5 * 365 * 86_400);
/// How long a serving certificate the operator makes is valid.
pub const LEAF_LIFETIME: Duration = Duration::from_secs(365 * 86_400);
/// Certificates are renewed when less than this part of their life is left.
const RENEW_WHEN_LEFT: u32 = 3;
/// Issued this long before `now`, for API servers whose clock is a little behind.
const BACKDATE: Duration = Duration::from_secs(3_600);

/// A certificate chain and key in PEM, and the CA bundle that verifies it when we made it
/// ourselves (the CA that signed it first, then the one before it during a CA rollover), with
/// the signing CA's key.
#[derive(Clone, PartialEq, Eq)]
pub struct ServingCert {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    pub ca_pem: Option<Vec<u8>>,
    pub ca_key_pem: Option<Vec<u8>>,
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
            ca_key_pem: None,
        })
    }

    /// A new CA and a serving certificate for `dns_names`, signed by it, valid from `now`.
    pub fn generate(dns_names: &[String], now: Timestamp) -> Result<Self, CertError> {
        let (ca_pem, ca_key_pem) = new_ca(now)?;
        let (cert_pem, key_pem) = new_leaf(dns_names, &ca_pem, &ca_key_pem, now)?;
        Ok(ServingCert {
            cert_pem,
            key_pem,
            ca_pem: Some(ca_pem),
            ca_key_pem: Some(ca_key_pem),
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

/// The first certificate of a PEM text: when it starts and ends (Unix seconds).
pub fn validity(pem: &[u8]) -> Result<(i64, i64), CertError> {
    let invalid = |e: String| CertError::Invalid(format!("cannot read the certificate: {e}"));
    let (_, block) = x509_parser::pem::parse_x509_pem(pem).map_err(|e| invalid(e.to_string()))?;
    let cert = block.parse_x509().map_err(|e| invalid(e.to_string()))?;
    let validity = cert.validity();
    Ok((
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    ))
}

/// Whether a certificate valid over `(start, end)` is in the last third of its life at `now`.
fn due(validity: (i64, i64), now: Timestamp) -> bool {
    let (start, end) = validity;
    let left = end.saturating_sub(now.as_second());
    left <= end.saturating_sub(start) / i64::from(RENEW_WHEN_LEFT)
}

/// The successor of `cert` at `now`, if it is due: a new serving certificate from the same CA
/// in the last third of its life; a new CA (kept in the bundle with the current one while that
/// is valid) and serving certificate when the CA is, or when its key is not stored (older
/// Secrets). `None` when nothing is due.
pub fn renewal(
    cert: &ServingCert,
    dns_names: &[String],
    now: Timestamp,
) -> Result<Option<ServingCert>, CertError> {
    let (Some(bundle), Some(ca_key)) = (&cert.ca_pem, &cert.ca_key_pem) else {
        return rolled_over(cert.ca_pem.as_deref(), dns_names, now).map(Some);
    };
    let ca = validity(bundle)?;
    if due(ca, now) {
        return rolled_over(Some(bundle), dns_names, now).map(Some);
    }
    let leaf = validity(&cert.cert_pem)?;
    // A leaf ends with its CA at the latest; once the CA is renewed, so is the leaf.
    if !due(leaf, now) {
        return Ok(None);
    }
    let current_ca = first_pem(bundle);
    let (cert_pem, key_pem) = new_leaf(dns_names, &current_ca, ca_key, now)?;
    Ok(Some(ServingCert {
        cert_pem,
        key_pem,
        ca_pem: Some(unexpired(bundle, now)),
        ca_key_pem: Some(ca_key.clone()),
    }))
}

/// The certificates of `bundle` still valid at `now` (an old CA leaves the bundle once it
/// ended); the current CA always stays.
fn unexpired(bundle: &[u8], now: Timestamp) -> Vec<u8> {
    let text = String::from_utf8_lossy(bundle);
    let mut kept = first_pem(bundle);
    for block in text.split_inclusive("-----END CERTIFICATE-----").skip(1) {
        let block = block.trim_start();
        if block.is_empty() {
            continue;
        }
        if validity(block.as_bytes()).is_ok_and(|(_, end)| end > now.as_second()) {
            kept.extend_from_slice(block.as_bytes());
            kept.push(b'\n');
        }
    }
    kept
}

/// A new CA and serving certificate; the bundle keeps the CA before it while that is valid.
fn rolled_over(
    previous_bundle: Option<&[u8]>,
    dns_names: &[String],
    now: Timestamp,
) -> Result<ServingCert, CertError> {
    let mut fresh = ServingCert::generate(dns_names, now)?;
    if let Some(previous) = previous_bundle {
        let previous_ca = first_pem(previous);
        let still_valid = validity(&previous_ca).is_ok_and(|(_, end)| end > now.as_second());
        if still_valid && let Some(bundle) = fresh.ca_pem.as_mut() {
            bundle.extend_from_slice(&previous_ca);
        }
    }
    Ok(fresh)
}

/// The first PEM block of `pem`, with its line end.
fn first_pem(pem: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(pem);
    let mut first = text
        .split_inclusive("-----END CERTIFICATE-----")
        .next()
        .unwrap_or_default()
        .trim_start()
        .to_owned();
    first.push('\n');
    first.into_bytes()
}

fn new_ca(now: Timestamp) -> Result<(Vec<u8>, Vec<u8>), CertError> {
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
    set_validity(&mut ca_params, now, CA_LIFETIME)?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    Ok((
        ca_cert.pem().into_bytes(),
        ca_key.serialize_pem().into_bytes(),
    ))
}

/// A serving certificate for `dns_names` signed by the CA; it ends with the CA at the latest.
fn new_leaf(
    dns_names: &[String],
    ca_pem: &[u8],
    ca_key_pem: &[u8],
    now: Timestamp,
) -> Result<(Vec<u8>, Vec<u8>), CertError> {
    let ca_text = std::str::from_utf8(ca_pem)
        .map_err(|_| CertError::Invalid("the CA PEM is not text".to_owned()))?;
    let ca_key_text = std::str::from_utf8(ca_key_pem)
        .map_err(|_| CertError::Invalid("the CA key PEM is not text".to_owned()))?;
    let ca_key = rcgen::KeyPair::from_pem(ca_key_text)?;
    let (_, ca_end) = validity(ca_pem)?;
    let issuer = rcgen::Issuer::from_ca_cert_pem(ca_text, ca_key)?;
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(dns_names.to_vec())?;
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        dns_names
            .first()
            .map_or("pim-operator-webhook", |n| n.as_str()),
    );
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    set_validity(&mut params, now, LEAF_LIFETIME)?;
    if params.not_after.unix_timestamp() > ca_end {
        let (year, month, day, rest) = calendar(ca_end)?;
        params.not_after = rcgen::date_time_ymd(year, month, day) + rest;
    }
    let cert = params.signed_by(&key, &issuer)?;
    Ok((cert.pem().into_bytes(), key.serialize_pem().into_bytes()))
}

fn set_validity(
    params: &mut rcgen::CertificateParams,
    now: Timestamp,
    lifetime: Duration,
) -> Result<(), CertError> {
    let start = now
        .as_second()
        .saturating_sub(BACKDATE.as_secs().cast_signed());
    let end = now
        .as_second()
        .saturating_add(lifetime.as_secs().cast_signed());
    let (year, month, day, rest) = calendar(start)?;
    params.not_before = rcgen::date_time_ymd(year, month, day) + rest;
    let (year, month, day, rest) = calendar(end)?;
    params.not_after = rcgen::date_time_ymd(year, month, day) + rest;
    Ok(())
}

/// `seconds` since the Unix epoch as a UTC date and the time since its midnight: the parts of
/// rcgen's own time constructor (`date_time_ymd`), whose time type rcgen does not export.
fn calendar(seconds: i64) -> Result<(i32, u8, u8, Duration), CertError> {
    let day = 86_400;
    let date = Timestamp::from_second(seconds)
        .map_err(|e| CertError::Invalid(format!("time {seconds}: {e}")))?
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    let month = u8::try_from(date.month())
        .map_err(|_| CertError::Invalid(format!("time {seconds}: month")))?;
    let day_of_month =
        u8::try_from(date.day()).map_err(|_| CertError::Invalid(format!("time {seconds}: day")))?;
    Ok((
        i32::from(date.year()),
        month,
        day_of_month,
        Duration::from_secs(seconds.rem_euclid(day).cast_unsigned()),
    ))
}

/// The shared self-signed certificate at `now`: read from the Secret and renewed there when
/// due ([`renewal`]), or made and stored. When two replicas race, the first write wins and the
/// other reads it. A renewal writes the new bundle into the webhook configurations before the
/// Secret, so no replica serves a certificate the API server does not trust yet.
pub async fn shared_self_signed(
    client: &kube::Client,
    namespace: &str,
    settings: &SelfSigned,
    now: Timestamp,
) -> Result<ServingCert, CertError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret_error = |source| CertError::Secret {
        namespace: namespace.to_owned(),
        name: settings.secret.clone(),
        source,
    };
    let names = service_names(&settings.service, namespace);
    let existing = api.get_opt(&settings.secret).await.map_err(secret_error)?;
    let stored = existing.as_ref().and_then(from_secret);
    let cert = match &stored {
        Some(stored) => match renewal(stored, &names, now)? {
            None => return Ok(stored.clone()),
            Some(renewed) => renewed,
        },
        None => ServingCert::generate(&names, now)?,
    };
    let mut secret = Secret {
        metadata: ObjectMeta {
            name: Some(settings.secret.clone()),
            namespace: Some(namespace.to_owned()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".to_owned()),
        data: Some(to_secret_data(&cert)),
        ..Default::default()
    };
    let written = match existing {
        // A Secret without our keys (made by hand, or half-written) is replaced as well.
        Some(existing) => {
            if let Some(bundle) = &cert.ca_pem {
                inject_ca_bundle(client, settings, bundle).await?;
            }
            secret.metadata.resource_version = existing.metadata.resource_version;
            api.replace(&settings.secret, &PostParams::default(), &secret)
                .await
                .map(|_| ())
        }
        None => api
            .create(&PostParams::default(), &secret)
            .await
            .map(|_| ()),
    };
    match written {
        Ok(()) => {
            if stored.is_some() {
                tracing::info!(secret = %settings.secret, "renewed the webhook certificate");
            }
            Ok(cert)
        }
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

fn to_secret_data(cert: &ServingCert) -> BTreeMap<String, ByteString> {
    let mut data = BTreeMap::from([
        ("tls.crt".to_owned(), ByteString(cert.cert_pem.clone())),
        ("tls.key".to_owned(), ByteString(cert.key_pem.clone())),
        (
            "ca.crt".to_owned(),
            ByteString(cert.ca_pem.clone().unwrap_or_default()),
        ),
    ]);
    if let Some(key) = &cert.ca_key_pem {
        data.insert("ca.key".to_owned(), ByteString(key.clone()));
    }
    data
}

/// The certificate in a Secret; `ca.key` is absent in Secrets of older versions (then the CA
/// is replaced at the next check).
fn from_secret(secret: &Secret) -> Option<ServingCert> {
    let data = secret.data.as_ref()?;
    let get = |k: &str| data.get(k).map(|b| b.0.clone()).filter(|b| !b.is_empty());
    Some(ServingCert {
        cert_pem: get("tls.crt")?,
        key_pem: get("tls.key")?,
        ca_pem: Some(get("ca.crt")?),
        ca_key_pem: get("ca.key"),
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
