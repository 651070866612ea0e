//! The webhook's own view of the declarative kinds. It runs on every replica, leader or not,
//! since the API server may call any of them; the controllers' caches exist only on the leader.

use std::sync::{Arc, RwLock};

use futures::StreamExt;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

use crate::api::{AccessPolicy, AccessReview, ActivationRequest, EligibleAssignment, PimGroup};
use crate::engine::Catalog;
use crate::lenient::Lenient;

/// Watched policies, groups, assignments, open requests and access reviews (malformed objects are skipped),
/// kept as one [`Catalog`] that each watch event updates. Reviews read it in place: building
/// it again for every review (22k objects, 500 policies parsed) took longer than the review.
/// Requests are there to count each requester's open ones.
#[derive(Clone)]
pub struct WatchedCatalog {
    catalog: Arc<RwLock<Catalog>>,
    /// How many of the five watches have had their first full list. Reviews wait on this: a
    /// review decided on a partly listed cache would refuse valid requests after a restart.
    listed: tokio::sync::watch::Receiver<usize>,
}

/// The five kinds' watches. Reviews are among them: their denials end assignments, so a
/// request under a denied one must be refused.
const WATCHES: usize = 5;

impl WatchedCatalog {
    /// Starts the five watches; they stop when `stop` fires.
    pub fn start(client: &Client, stop: &CancellationToken) -> Self {
        let catalog = Arc::new(RwLock::new(Catalog::default()));
        let (listed_tx, listed) = tokio::sync::watch::channel(0);
        let listed_tx = Arc::new(listed_tx);
        let watched = WatchedCatalog { catalog, listed };
        watched.watch::<AccessPolicy>(Api::all(client.clone()), &listed_tx, stop);
        watched.watch::<PimGroup>(Api::all(client.clone()), &listed_tx, stop);
        watched.watch::<EligibleAssignment>(Api::all(client.clone()), &listed_tx, stop);
        watched.watch::<ActivationRequest>(Api::all(client.clone()), &listed_tx, stop);
        watched.watch::<AccessReview>(Api::all(client.clone()), &listed_tx, stop);
        watched
    }

    /// Once every cache has its first full list.
    pub async fn ready(&self) {
        let mut listed = self.listed.clone();
        if listed.wait_for(|n| *n >= WATCHES).await.is_err() {
            tracing::warn!("the webhook's caches stopped before their first full list");
        }
    }

    /// Runs `decide` on the catalog as it is now. Watch events wait meanwhile, so `decide`
    /// must not block.
    pub fn read<T>(&self, decide: impl FnOnce(&Catalog) -> T) -> T {
        // A writer that panicked left a catalog of whole objects: each update is one insert
        // or removal.
        let catalog = self.catalog.read().unwrap_or_else(|e| e.into_inner());
        decide(&catalog)
    }

    /// A copy of the catalog as it is now.
    pub fn catalog(&self) -> Catalog {
        self.read(Catalog::clone)
    }

    fn update(&self, change: impl FnOnce(&mut Catalog)) {
        let mut catalog = self.catalog.write().unwrap_or_else(|e| e.into_inner());
        change(&mut catalog);
    }

    fn watch<K: Cached>(
        &self,
        api: Api<Lenient<K>>,
        listed: &Arc<tokio::sync::watch::Sender<usize>>,
        stop: &CancellationToken,
    ) where
        Lenient<K>: kube::Resource<DynamicType = ()>,
    {
        let stream = watcher(api, watcher::Config::default()).default_backoff();
        let (stop, listed, watched) = (stop.clone(), listed.clone(), self.clone());
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            // A (re)list's objects, put in place at its end, as a reflector store does.
            let mut relist: Vec<Arc<K>> = Vec::new();
            let mut first_list = true;
            loop {
                let event = tokio::select! {
                    _ = stop.cancelled() => break,
                    next = stream.next() => match next {
                        Some(Ok(event)) => event,
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, "webhook cache watch failed; retrying");
                            continue;
                        }
                        None => break,
                    },
                };
                match event {
                    watcher::Event::Init => relist.clear(),
                    watcher::Event::InitApply(object) => {
                        if let Some(object) = kept(&object) {
                            relist.push(object);
                        }
                    }
                    watcher::Event::InitDone => {
                        let objects = std::mem::take(&mut relist);
                        watched.update(|catalog| {
                            for name in K::names(catalog) {
                                K::remove(catalog, &name);
                            }
                            for object in objects {
                                K::insert(catalog, object);
                            }
                        });
                        if first_list {
                            first_list = false;
                            listed.send_modify(|n| *n += 1);
                        }
                    }
                    watcher::Event::Apply(object) => {
                        let name = object.metadata.name.clone().unwrap_or_default();
                        // A malformed or ended object leaves the catalog, as if deleted.
                        watched.update(|catalog| match kept(&object) {
                            Some(object) => K::insert(catalog, object),
                            None => K::remove(catalog, &name),
                        });
                    }
                    watcher::Event::Delete(object) => {
                        let name = object.metadata.name.clone().unwrap_or_default();
                        watched.update(|catalog| K::remove(catalog, &name));
                    }
                }
            }
        });
    }
}

/// The object of a watch event the catalog keeps: well-formed, and for requests, open; or
/// what a malformed one must still contribute.
fn kept<K: Cached>(object: &Lenient<K>) -> Option<Arc<K>> {
    match &object.parsed {
        Ok(parsed) => Some(parsed.clone()).filter(|o| o.kept()),
        Err(_) => K::salvage(object),
    }
}

/// What the webhook's catalog does with each kind.
trait Cached:
    kube::Resource<DynamicType = ()>
    + Clone
    + serde::de::DeserializeOwned
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    fn insert(catalog: &mut Catalog, object: Arc<Self>);
    fn remove(catalog: &mut Catalog, name: &str);
    fn names(catalog: &Catalog) -> Vec<String>;
    fn kept(&self) -> bool {
        true
    }
    /// What of a malformed object the catalog still keeps: nothing, by default.
    fn salvage(_object: &Lenient<Self>) -> Option<Arc<Self>> {
        None
    }
}

impl Cached for AccessPolicy {
    fn insert(catalog: &mut Catalog, object: Arc<Self>) {
        catalog.insert_policy(object);
    }
    fn remove(catalog: &mut Catalog, name: &str) {
        catalog.remove_policy(name);
    }
    fn names(catalog: &Catalog) -> Vec<String> {
        catalog.policies.keys().cloned().collect()
    }
}

impl Cached for PimGroup {
    fn insert(catalog: &mut Catalog, object: Arc<Self>) {
        catalog.insert_group(object);
    }
    fn remove(catalog: &mut Catalog, name: &str) {
        catalog.remove_group(name);
    }
    fn names(catalog: &Catalog) -> Vec<String> {
        catalog.groups.keys().cloned().collect()
    }
}

impl Cached for EligibleAssignment {
    fn insert(catalog: &mut Catalog, object: Arc<Self>) {
        catalog.insert_assignment(object);
    }
    fn remove(catalog: &mut Catalog, name: &str) {
        catalog.remove_assignment(name);
    }
    fn names(catalog: &Catalog) -> Vec<String> {
        catalog.assignments.keys().cloned().collect()
    }
}

impl Cached for ActivationRequest {
    fn insert(catalog: &mut Catalog, object: Arc<Self>) {
        catalog.insert_request(object);
    }
    fn remove(catalog: &mut Catalog, name: &str) {
        catalog.remove_request(name);
    }
    fn names(catalog: &Catalog) -> Vec<String> {
        catalog.requests.keys().cloned().collect()
    }
    /// Only open requests: ended ones, kept for audit, are most of them and count for nothing.
    fn kept(&self) -> bool {
        self.is_open()
    }
}

impl Cached for AccessReview {
    fn insert(catalog: &mut Catalog, object: Arc<Self>) {
        catalog.insert_review(object);
    }
    fn remove(catalog: &mut Catalog, name: &str) {
        catalog.remove_review(name);
    }
    fn names(catalog: &Catalog) -> Vec<String> {
        catalog.reviews.keys().cloned().collect()
    }
    /// Its denials: a broken spec must not make denied assignments grant.
    fn salvage(object: &Lenient<Self>) -> Option<Arc<Self>> {
        crate::lenient::review_for_catalog(object)
    }
}
