//! `pim-operator run`: connect, check the CRDs, build the directories, and run the controllers
//! and the HTTP endpoints until SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::audit::sink::AuditSinks;
use crate::clock::SystemClock;
use crate::config::{Config, DirectoryConfig, Settings};
use crate::controller::{self, Dependencies, Health};
use crate::directory::entra::EntraDirectory;
use crate::directory::instrumented::Instrumented;
use crate::directory::kubernetes::KubernetesDirectory;
use crate::directory::ldap::LdapDirectory;
use crate::directory::memory::MemoryDirectory;
use crate::directory::{Directories, Directory};
use crate::engine::SignedAttestor;
use crate::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("no Kubernetes cluster configured: {0} (set KUBECONFIG, or run in a pod)")]
    NoCluster(String),
    #[error("{0}")]
    Start(#[from] controller::StartError),
    #[error("{0}")]
    Webhook(#[from] crate::webhook::WebhookError),
    #[error("{0}")]
    AttestationKey(#[from] crate::attestation::KeyError),
    #[error("{0}")]
    Identity(#[from] crate::webhook::identity::OperatorIdentityError),
    #[error("cannot serve metrics on {address}: {source}")]
    Serve {
        address: String,
        source: std::io::Error,
    },
}

/// The directories the config names, plus `kubernetes`, each recording its calls in metrics.
pub fn directories(
    settings: &Settings,
    client: &kube::Client,
    metrics: &Arc<Metrics>,
) -> Directories {
    let mut directories = Directories::default();
    let kubernetes: Arc<dyn Directory> = Arc::new(KubernetesDirectory::new(client.clone()));
    directories.insert(
        crate::api::pim_group::KUBERNETES_DIRECTORY,
        Instrumented::wrap(kubernetes, metrics.clone()),
    );
    for (name, config) in &settings.config.directories {
        let backend: Arc<dyn Directory> = match config {
            DirectoryConfig::Kubernetes(_) => Arc::new(KubernetesDirectory::new(client.clone())),
            DirectoryConfig::Memory(_) => Arc::new(MemoryDirectory::new()),
            DirectoryConfig::Ldap(ldap) => Arc::new(LdapDirectory::new(ldap.as_ref().clone())),
            DirectoryConfig::Entra(entra) => {
                let entra = EntraDirectory::new(entra.as_ref().clone(), Arc::new(SystemClock))
                    .with_metrics(metrics.clone());
                if let Ok(mailer) = entra.mailer() {
                    directories.insert_graph_mailer(name.clone(), mailer);
                }
                Arc::new(entra)
            }
        };
        directories.insert(name.clone(), Instrumented::wrap(backend, metrics.clone()));
    }
    directories
}

pub async fn run(config_path: Option<PathBuf>) -> Result<(), RunError> {
    let settings = match &config_path {
        Some(path) => Config::load(path)?,
        None => Config::parse("", "defaults")?,
    };
    let client = kube::Client::try_default()
        .await
        .map_err(|e| RunError::NoCluster(e.to_string()))?;
    controller::preflight(&client).await?;
    // Who we are, as the API server sees our credentials: the webhook lets only this username
    // move our finalizer. No answer, no start (never "any service account").
    let operator_username = crate::webhook::identity::operator_username(&client).await?;
    tracing::info!(username = %operator_username, "the operator authenticates as");

    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));

    let address: SocketAddr =
        settings
            .config
            .metrics_address
            .parse()
            .map_err(|_| RunError::Serve {
                address: settings.config.metrics_address.clone(),
                source: std::io::ErrorKind::InvalidInput.into(),
            })?;
    let router = crate::http::router(metrics.clone(), health.clone());
    let listener_shutdown = shutdown.clone();
    let server = tokio::spawn(crate::http::serve(address, router, listener_shutdown));

    let namespace = settings
        .config
        .namespace
        .clone()
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .unwrap_or_else(|| "pim-system".to_owned());
    // The controller trusts only what the webhook signed: without a key it grants nothing.
    let keyring =
        match crate::attestation::secret::load(&settings.config.attestation, &client, &namespace)
            .await
        {
            Ok(keyring) => keyring,
            Err(e) => {
                shutdown.cancel();
                return Err(e.into());
            }
        };
    let startup = crate::startup::Startup::new(&settings, keyring.is_some());
    let attestor = SignedAttestor::new(keyring.clone());
    let webhook = match crate::webhook::start(
        &client,
        &settings.config.webhook,
        crate::webhook::Inputs {
            principals: settings.config.principals(),
            shortest_assignments: settings.config.shortest_assignments(),
            audit: match AuditSinks::new(&settings.config.audit, Arc::new(SystemClock)) {
                Ok(sinks) => Some(Arc::new(sinks)),
                Err(problem) => {
                    tracing::error!(%problem, "audit sinks not set up; the webhook records no changes");
                    None
                }
            },
            metrics: Some(metrics.clone()),
        },
        keyring,
        operator_username,
        &namespace,
        Arc::new(SystemClock),
        shutdown.clone(),
    )
    .await
    {
        Ok(webhook) => webhook,
        Err(e) => {
            shutdown.cancel();
            return Err(e.into());
        }
    };
    startup.log();
    if let Some(why) = startup.cannot_grant() {
        health.set_cannot_grant(why);
    }

    let deps = Dependencies {
        client: client.clone(),
        directories: directories(&settings, &client, &metrics),
        settings,
        attestor: Arc::new(attestor),
        clock: Arc::new(SystemClock),
        metrics,
        health,
    };
    let result = controller::run(deps, shutdown.clone()).await;
    shutdown.cancel();
    if let Some(webhook) = webhook {
        match webhook.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "the webhook server stopped with an error"),
            Err(e) => tracing::error!(error = %e, "the webhook server task panicked"),
        }
    }
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(source)) => {
            return Err(RunError::Serve {
                address: address.to_string(),
                source,
            });
        }
        Err(e) => tracing::error!(error = %e, "the metrics and health server task panicked"),
    }
    result.map_err(RunError::from)
}

/// SIGTERM (Kubernetes stopping the pod) or Ctrl-C stops the operator gracefully.
async fn stop_on_signal(shutdown: CancellationToken) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => futures::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = terminate => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down");
    shutdown.cancel();
}
