//! The webhook's own view of the declarative kinds. It runs on every replica, leader or not,
//! since the API server may call any of them; the controllers' caches exist only on the leader.

use futures::StreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

use crate::api::{AccessPolicy, ActivationRequest, EligibleAssignment, PimGroup};
use crate::engine::Catalog;
use crate::lenient::Lenient;

/// Watched caches of policies, groups, assignments and requests (malformed objects are
/// skipped). Requests are there to count each requester's open ones.
#[derive(Clone)]
pub struct WatchedCatalog {
    policies: Store<Lenient<AccessPolicy>>,
    groups: Store<Lenient<PimGroup>>,
    assignments: Store<Lenient<EligibleAssignment>>,
    requests: Store<Lenient<ActivationRequest>>,
    /// True once every cache has its first full list. Reviews wait on this, never on the
    /// stores: a store's `wait_until_ready` wakes only its latest waiter (kube-runtime's
    /// `DelayedInit` keeps one waker), so concurrent reviews at startup waited out their timeout.
    ready: tokio::sync::watch::Receiver<bool>,
}

impl WatchedCatalog {
    /// Starts the four watches; they stop when `stop` fires.
    pub fn start(client: &Client, stop: &CancellationToken) -> Self {
        let policies = watch(Api::all(client.clone()), stop);
        let groups = watch(Api::all(client.clone()), stop);
        let assignments = watch(Api::all(client.clone()), stop);
        let requests = watch(Api::all(client.clone()), stop);
        let (ready_tx, ready) = tokio::sync::watch::channel(false);
        // The one waiter on the stores' readiness.
        let (p, g, a, r) = (
            policies.clone(),
            groups.clone(),
            assignments.clone(),
            requests.clone(),
        );
        tokio::spawn(async move {
            let (p, g, a, r) = futures::join!(
                p.wait_until_ready(),
                g.wait_until_ready(),
                a.wait_until_ready(),
                r.wait_until_ready()
            );
            if p.is_ok() && g.is_ok() && a.is_ok() && r.is_ok() {
                ready_tx.send_replace(true);
            }
        });
        WatchedCatalog {
            policies,
            groups,
            assignments,
            requests,
            ready,
        }
    }

    /// Once every cache has its first full list.
    pub async fn ready(&self) {
        let mut ready = self.ready.clone();
        if ready.wait_for(|ready| *ready).await.is_err() {
            tracing::warn!("the webhook's caches stopped before their first full list");
        }
    }

    pub fn catalog(&self) -> Catalog {
        let mut catalog = Catalog::default();
        for p in self.policies.state() {
            if let Ok(o) = &p.parsed {
                catalog.insert_policy(o.clone());
            }
        }
        for g in self.groups.state() {
            if let Ok(o) = &g.parsed {
                catalog.insert_group(o.clone());
            }
        }
        for a in self.assignments.state() {
            if let Ok(o) = &a.parsed {
                catalog.insert_assignment(o.clone());
            }
        }
        // Only open requests: ended ones, kept for audit, are most of them and count for nothing.
        for r in self.requests.state() {
            if let Ok(o) = &r.parsed
                && o.is_open()
            {
                catalog.insert_request(o.clone());
            }
        }
        catalog
    }
}

fn watch<K>(api: Api<Lenient<K>>, stop: &CancellationToken) -> Store<Lenient<K>>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    Lenient<K>: kube::Resource<DynamicType = ()>,
{
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .touched_objects();
    let stop = stop.clone();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                next = stream.next() => match next {
                    Some(Ok(_)) => {}
                    Some(Err(e)) => tracing::warn!(error = %e, "webhook cache watch failed; retrying"),
                    None => break,
                },
            }
        }
    });
    store
}
