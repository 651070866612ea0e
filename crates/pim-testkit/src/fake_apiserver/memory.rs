//! A transport that hands requests to the server's router in memory: no socket, no other
//! thread, so that a simulation on one thread replays a seed exactly. The client on top is built
//! as production's is, with kube's retry of 429/503/504 (kube-client `client::retry`).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower::{BoxError, ServiceBuilder, ServiceExt};

/// Whether the next request gets through; `false` answers it as a refused connection (a
/// crashed process, or a partition between a replica and the API server).
pub type Link = Arc<dyn Fn() -> bool + Send + Sync>;

#[derive(Clone)]
struct InMemory {
    router: axum::Router,
    link: Link,
}

type Answer = Result<http::Response<axum::body::Body>, BoxError>;

impl tower::Service<http::Request<kube::client::Body>> for InMemory {
    type Response = http::Response<axum::body::Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Answer> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<kube::client::Body>) -> Self::Future {
        if !(self.link)() {
            return Box::pin(async {
                Err(Box::new(std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    "the API server cannot be reached",
                )) as BoxError)
            });
        }
        let router = self.router.clone();
        Box::pin(async move {
            router
                .oneshot(request)
                .await
                .map_err(|never: Infallible| match never {})
        })
    }
}

/// A kube client whose requests reach `router` in memory while `link` lets them.
pub(crate) fn client(router: axum::Router, link: Link) -> kube::Client {
    let service = ServiceBuilder::new()
        .layer(tower::retry::RetryLayer::new(
            kube::client::retry::RetryPolicy::server_retry(),
        ))
        .service(InMemory { router, link });
    kube::Client::new(service, "default")
}
