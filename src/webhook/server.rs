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
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::catalog::WatchedCatalog;
use super::review::{Admission, Stage};
use crate::audit::sink::AuditSinks;
use crate::clock::Clock;
use crate::engine::Catalog;
use crate::metrics::Metrics;

/// Where admission decisions get the other objects from.
#[derive(Clone)]
pub enum CatalogSource {
    Watched(WatchedCatalog),
    /// A fixed set of objects, for tests.
    Fixed(Arc<Catalog>),
}

impl CatalogSource {
    /// Runs `decide` on the objects as they are now, in place (no copy per review); `None`
    /// when the caches have not listed everything in time.
    async fn decide<T>(&self, decide: impl FnOnce(&Catalog) -> T) -> Option<T> {
        match self {
            CatalogSource::Watched(watched) => {
                // Deciding on an empty cache would refuse every valid request after a restart.
                tokio::time::timeout(READY_WAIT, watched.ready())
                    .await
                    .ok()?;
                Some(watched.read(decide))
            }
            CatalogSource::Fixed(catalog) => Some(decide(catalog)),
        }
    }
}

/// How long a review waits for the caches at startup; the API server's own timeout is 10s.
const READY_WAIT: Duration = Duration::from_secs(8);

/// The largest AdmissionReview read. The API server takes request bodies up to 3 MiB
/// (k8s.io/apiserver `pkg/server/config.go`, `MaxRequestBodyBytes`), so every review it sends
/// of a valid write fits; a larger body is answered 413 unread.
pub const MAX_REVIEW_BYTES: usize = 3 * 1024 * 1024;

/// Reviews read and decided at once; the rest wait with their bodies unread. With
/// [`MAX_REVIEW_BYTES`] and the parsed forms of a body (a few times its size), this keeps what
/// callers can make the webhook hold under 64 MiB, a quarter of the chart's 256Mi memory limit,
/// whatever they send. Decisions take well under a millisecond, so 4 serve thousands a second.
pub const MAX_REVIEWS_IN_FLIGHT: usize = 4;

/// The longest a review may hold its slot, body reading included.
const SLOT_HOLD: Duration = Duration::from_secs(10);

pub struct WebhookState {
    pub admission: Admission,
    pub catalog: CatalogSource,
    pub clock: Arc<dyn Clock>,
    /// Where the records of changes to the declarative kinds go; `None` records nothing.
    pub audit: Option<Arc<AuditSinks>>,
    pub metrics: Option<Arc<Metrics>>,
}

pub fn router(state: Arc<WebhookState>) -> Router {
    router_with_slots(state, Arc::new(Semaphore::new(MAX_REVIEWS_IN_FLIGHT)))
}

/// [`router`] with the reviews in flight bounded by `slots` (tests hold them).
pub fn router_with_slots(state: Arc<WebhookState>, slots: Arc<Semaphore>) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        .route("/validate", post(validate))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_REVIEW_BYTES))
        // Outside the body limit: a request waits for a slot before its body is read.
        .layer(axum::middleware::from_fn(move |request, next| {
            in_a_slot(slots.clone(), request, next)
        }))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(state)
}

async fn in_a_slot(
    slots: Arc<Semaphore>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match slots.acquire_owned().await {
        // A slot is held at most as long as the API server waits (its webhook timeout is at
        // most 30s, 10s by default): a caller sending its body slowly cannot keep it.
        Ok(_slot) => match tokio::time::timeout(SLOT_HOLD, next.run(request)).await {
            Ok(response) => response,
            Err(_) => (
                StatusCode::REQUEST_TIMEOUT,
                "the review was not read and decided in time",
            )
                .into_response(),
        },
        // Closed only if the router is being torn down.
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response(),
    }
}

async fn mutate(State(state): State<Arc<WebhookState>>, body: Bytes) -> Response {
    answer(&state, Stage::Mutate, &body).await
}

async fn validate(State(state): State<Arc<WebhookState>>, body: Bytes) -> Response {
    answer(&state, Stage::Validate, &body).await
}

async fn answer(state: &WebhookState, stage: Stage, body: &[u8]) -> Response {
    let decided = state
        .catalog
        .decide(|catalog| {
            state
                .admission
                .review_audited(body, stage, catalog, state.clock.now())
        })
        .await;
    let stage_name = match stage {
        Stage::Mutate => "mutate",
        Stage::Validate => "validate",
    };
    let count = |outcome: &str| {
        if let Some(metrics) = &state.metrics {
            metrics.review(stage_name, outcome);
        }
    };
    let Some(decided) = decided else {
        count("unavailable");
        // The API server applies failurePolicy: Fail, so the write is refused, not waved through.
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the webhook's caches are not synced yet; retry",
        )
            .into_response();
    };
    match decided {
        Ok((review, record)) => {
            if let (Some(sinks), Some(record)) = (&state.audit, record) {
                sinks.emit_retrying(vec![record]);
            }
            let allowed =
                review.pointer("/response/allowed") == Some(&serde_json::Value::Bool(true));
            count(if allowed { "allowed" } else { "denied" });
            if !allowed {
                tracing::info!(
                    stage = ?stage,
                    message = %review.pointer("/response/status/message").and_then(|m| m.as_str()).unwrap_or_default(),
                    "admission denied"
                );
            }
            axum::Json(review).into_response()
        }
        Err(e) => {
            count("malformed");
            (StatusCode::BAD_REQUEST, e.to_string()).into_response()
        }
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
