//! The HTTPS server the API server calls: `POST /mutate` and `POST /validate` take an
//! AdmissionReview and answer one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum_server::tls_rustls::RustlsConfig;
use rustls::ServerConfig;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::catalog::WatchedCatalog;
use super::review::{Admission, Stage};
use crate::clock::Clock;
use crate::engine::Catalog;

/// Where admission decisions get the other objects from.
#[derive(Clone)]
pub enum CatalogSource {
    Watched(WatchedCatalog),
    /// A fixed set of objects, for tests.
    Fixed(Arc<Catalog>),
}

impl CatalogSource {
    async fn current(&self) -> Option<Catalog> {
        match self {
            CatalogSource::Watched(watched) => {
                // Deciding on an empty cache would refuse every valid request after a restart.
                tokio::time::timeout(READY_WAIT, watched.ready())
                    .await
                    .ok()?;
                Some(watched.catalog())
            }
            CatalogSource::Fixed(catalog) => Some(catalog.as_ref().clone()),
        }
    }
}

/// How long a review waits for the caches at startup; the API server's own timeout is 10s.
const READY_WAIT: Duration = Duration::from_secs(8);

/// Admission bodies are small; this bounds what a caller can make us parse.
pub const MAX_REVIEW_BYTES: usize = 3 * 1024 * 1024;

pub struct WebhookState {
    pub admission: Admission,
    pub catalog: CatalogSource,
    pub clock: Arc<dyn Clock>,
}

pub fn router(state: Arc<WebhookState>) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        .route("/validate", post(validate))
        .route("/healthz", get(|| async { "ok" }))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_REVIEW_BYTES))
        .with_state(state)
}

async fn mutate(State(state): State<Arc<WebhookState>>, body: Bytes) -> Response {
    answer(&state, Stage::Mutate, &body).await
}

async fn validate(State(state): State<Arc<WebhookState>>, body: Bytes) -> Response {
    answer(&state, Stage::Validate, &body).await
}

async fn answer(state: &WebhookState, stage: Stage, body: &[u8]) -> Response {
    let Some(catalog) = state.catalog.current().await else {
        // The API server applies failurePolicy: Fail, so the write is refused, not waved through.
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the webhook's caches are not synced yet; retry",
        )
            .into_response();
    };
    match state
        .admission
        .review(body, stage, &catalog, state.clock.now())
    {
        Ok(review) => {
            if review.pointer("/response/allowed") == Some(&serde_json::Value::Bool(false)) {
                tracing::info!(
                    stage = ?stage,
                    message = %review.pointer("/response/status/message").and_then(|m| m.as_str()).unwrap_or_default(),
                    "admission denied"
                );
            }
            axum::Json(review).into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

/// Serves `router` over TLS until `shutdown`, and says where once it listens. `tls` can be
/// swapped later (certificate rotation).
pub async fn bind(
    address: SocketAddr,
    tls: RustlsConfig,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<(SocketAddr, JoinHandle<std::io::Result<()>>)> {
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        shutdown.cancelled().await;
        stopper.graceful_shutdown(Some(Duration::from_secs(5)));
    });
    let server = axum_server::bind_rustls(address, tls)
        .handle(handle.clone())
        .serve(router.into_make_service());
    let task = tokio::spawn(server);
    match handle.listening().await {
        Some(bound) => Ok((bound, task)),
        None => match task.await {
            Ok(Err(e)) => Err(e),
            _ => Err(std::io::Error::other(format!("cannot listen on {address}"))),
        },
    }
}

/// A TLS configuration the server can be started with and later reloaded.
pub fn rustls_config(config: Arc<ServerConfig>) -> RustlsConfig {
    RustlsConfig::from_config(config)
}
