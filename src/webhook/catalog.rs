//! The webhook's own view of the declarative kinds. It runs on every replica, leader or not,
//! since the API server may call any of them; the controllers' caches exist only on the leader.

use futures::StreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

use crate::api::{AccessPolicy, EligibleAssignment, PimGroup};
use crate::controller::lenient::Lenient;
use crate::engine::Catalog;

/// Watched caches of policies, groups and assignments (malformed objects are skipped).
#[derive(Clone)]
pub struct WatchedCatalog {
    policies: Store<Lenient<AccessPolicy>>,
    groups: Store<Lenient<PimGroup>>,
    assignments: Store<Lenient<EligibleAssignment>>,
}

impl WatchedCatalog {
    /// Starts the three watches; they stop when `stop` fires.
    pub fn start(client: &Client, stop: &CancellationToken) -> Self {
        WatchedCatalog {
            policies: watch(Api::all(client.clone()), stop),
            groups: watch(Api::all(client.clone()), stop),
            assignments: watch(Api::all(client.clone()), stop),
        }
    }

    /// Once every cache has its first full list.
    pub async fn ready(&self) {
        let _ = futures::join!(
            self.policies.wait_until_ready(),
            self.groups.wait_until_ready(),
            self.assignments.wait_until_ready()
        );
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
