//! The admission webhook (DESIGN §7), served by `pim-operator run` on every replica.
//!
//! - [`identity`]: the caller from `userInfo`, mapped to a directory principal, with MFA evidence;
//! - [`activation`]: who may create, approve and end an ActivationRequest, and what is stamped
//!   and signed ([`crate::attestation`]);
//! - [`review`]: one AdmissionReview in, one out, with the checks `validate` uses;
//! - [`server`], [`certs`], [`catalog`]: HTTPS, its certificate, and the caches it decides with.

pub mod activation;
pub mod catalog;
pub mod certs;
mod config;
pub mod decisions;
pub mod identity;
pub mod review;
pub mod server;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::{MfaClaim, SelfSigned, WebhookConfig};
pub use review::{Admission, ReviewError, Stage};

use crate::clock::Clock;
use crate::core::identity::Principals;

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("webhook.address: {0:?} is not a socket address such as 0.0.0.0:8443")]
    Address(String),
    #[error("webhook.address: cannot listen on {address}: {source}")]
    Listen {
        address: String,
        source: std::io::Error,
    },
    #[error("webhook.certFile and webhook.keyFile: set both or neither")]
    HalfCertificate,
    #[error("{0}")]
    Key(#[from] crate::attestation::KeyError),
    #[error("{0}")]
    Cert(#[from] certs::CertError),
    #[error("the CRD schemas for admission checks: {0}")]
    Schema(#[from] crate::checks::SchemaError),
}

/// How often mounted certificate files are re-read, and our CA bundle re-checked.
const CERT_REFRESH: Duration = Duration::from_secs(60);

/// What the webhook needs of the operator besides its own settings.
pub struct Inputs {
    /// Each directory's username mapping, and how names compare.
    pub principals: Principals,
    /// Directories (by name) that make no assignment shorter than this (Entra in `pim` mode).
    pub shortest_assignments: std::collections::BTreeMap<String, jiff::SignedDuration>,
    /// Where changes to the declarative kinds are recorded.
    pub audit: Option<Arc<crate::audit::sink::AuditSinks>>,
    /// The operator's metrics, for `pim_webhook_reviews`.
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
}

/// Starts the webhook server when `settings` enable it. Runs until `shutdown`.
/// `operator_username` is the operator's own, from [`identity::operator_username`].
#[allow(clippy::too_many_arguments)]
pub async fn start(
    client: &kube::Client,
    settings: &WebhookConfig,
    inputs: Inputs,
    keyring: Option<crate::attestation::Keyring>,
    operator_username: String,
    namespace: &str,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) -> Result<Option<JoinHandle<std::io::Result<()>>>, WebhookError> {
    if !settings.enabled {
        return Ok(None);
    }
    let address: SocketAddr = settings
        .address
        .parse()
        .map_err(|_| WebhookError::Address(settings.address.clone()))?;
    if keyring.is_none() {
        tracing::warn!(
            "attestation.keyFile and attestation.secret are not set: the webhook refuses activation requests and the controller grants nothing"
        );
    }
    let cert = match (&settings.cert_file, &settings.key_file) {
        (Some(cert), Some(key)) => certs::ServingCert::from_files(cert, key)?,
        (None, None) => {
            let cert =
                certs::shared_self_signed(client, namespace, &settings.self_signed, clock.now())
                    .await?;
            if let Some(ca) = &cert.ca_pem {
                certs::inject_ca_bundle(client, &settings.self_signed, ca).await?;
            }
            cert
        }
        _ => return Err(WebhookError::HalfCertificate),
    };
    let tls = server::rustls_config(cert.server_config()?);
    tokio::spawn(refresh_certificate(
        client.clone(),
        settings.clone(),
        namespace.to_owned(),
        clock.clone(),
        cert,
        tls.clone(),
        shutdown.clone(),
    ));
    let state = Arc::new(server::WebhookState {
        admission: Admission {
            principals: inputs.principals,
            mfa_claim: settings.mfa_claim(),
            auth_time_claim: settings.auth_time_claim.clone(),
            keyring,
            schema: crate::checks::SchemaChecker::new()?,
            operator_username,
            shortest_assignments: inputs.shortest_assignments,
        },
        catalog: server::CatalogSource::Watched(catalog::WatchedCatalog::start(client, &shutdown)),
        clock,
        audit: inputs.audit,
        metrics: inputs.metrics,
    });
    let (bound, task) = server::bind(address, tls, server::router(state), shutdown)
        .await
        .map_err(|source| WebhookError::Listen {
            address: settings.address.clone(),
            source,
        })?;
    tracing::info!(address = %bound, "serving the admission webhook");
    Ok(Some(task))
}

/// Picks up rotated certificate files (cert-manager renews in place); renews our own
/// certificate when due at the clock's time, or picks up another replica's renewal from the
/// Secret; and keeps our CA bundle in the webhook configurations (a re-applied manifest would
/// blank it).
async fn refresh_certificate(
    client: kube::Client,
    settings: WebhookConfig,
    namespace: String,
    clock: Arc<dyn Clock>,
    mut current: certs::ServingCert,
    tls: axum_server::tls_rustls::RustlsConfig,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(CERT_REFRESH) => {}
        }
        let fresh = match (&settings.cert_file, &settings.key_file) {
            (Some(cert), Some(key)) => certs::ServingCert::from_files(cert, key),
            _ => {
                let shared = &settings.self_signed;
                certs::shared_self_signed(&client, &namespace, shared, clock.now()).await
            }
        };
        match fresh {
            Ok(fresh) if fresh != current => match fresh.server_config() {
                Ok(config) => {
                    tls.reload_from_config(config);
                    current = fresh;
                    tracing::info!("reloaded the webhook certificate");
                }
                Err(e) => tracing::warn!(error = %e, "keeping the previous webhook certificate"),
            },
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "keeping the previous webhook certificate"),
        }
        if settings.cert_file.is_none()
            && let Some(ca) = &current.ca_pem
            && let Err(e) = certs::inject_ca_bundle(&client, &settings.self_signed, ca).await
        {
            tracing::warn!(error = %e, "cannot refresh the webhook CA bundle");
        }
    }
}
