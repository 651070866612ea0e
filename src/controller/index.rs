//! What the watches keep beside the caches: each group's assignments and requests, and which
//! requests are Active.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;

use crate::api::activation_request::Phase;
use crate::api::{ActivationRequest, EligibleAssignment};
use crate::lenient::Lenient;

/// Objects that belong to one PimGroup.
pub trait InGroup {
    fn group_name(&self) -> &str;
}

impl InGroup for EligibleAssignment {
    fn group_name(&self) -> &str {
        &self.spec.group
    }
}

impl InGroup for ActivationRequest {
    fn group_name(&self) -> &str {
        &self.spec.group
    }
}

impl InGroup for crate::api::PimGrant {
    fn group_name(&self) -> &str {
        &self.spec.group
    }
}

/// The names of one kind's objects by the PimGroup they name, kept up to date from the watch,
/// so that a reconcile reads only its own group's objects. (Scanning every cache on every
/// reconcile made 10,000 activations quadratic.)
///
/// It may name more objects than the cache holds, never fewer: a name enters before the cache
/// stores the object ([`GroupIndex::before_store`]) and leaves after the cache dropped it
/// ([`GroupIndex::after_store`]). Readers look every name up in the cache and check its group
/// there, so they see exactly what a scan of the cache would.
pub struct GroupIndex<K: kube::Resource<DynamicType = ()> + 'static> {
    inner: Mutex<IndexInner<K>>,
}

struct IndexInner<K: kube::Resource<DynamicType = ()> + 'static> {
    by_group: HashMap<String, HashSet<ObjectRef<Lenient<K>>>>,
    /// The group each name was last stored under.
    group_of: HashMap<String, String>,
}

impl<K: kube::Resource<DynamicType = ()> + 'static> Default for IndexInner<K> {
    fn default() -> Self {
        IndexInner {
            by_group: HashMap::new(),
            group_of: HashMap::new(),
        }
    }
}

impl<K: kube::Resource<DynamicType = ()> + 'static> Default for GroupIndex<K> {
    fn default() -> Self {
        GroupIndex {
            inner: Mutex::default(),
        }
    }
}

impl<K: kube::Resource<DynamicType = ()> + 'static> IndexInner<K> {
    fn link(&mut self, group: &str, name: &str) {
        self.by_group
            .entry(group.to_owned())
            .or_default()
            .insert(ObjectRef::new(name));
    }

    fn unlink(&mut self, group: &str, name: &str) {
        if let Some(names) = self.by_group.get_mut(group) {
            names.remove(&ObjectRef::new(name));
            if names.is_empty() {
                self.by_group.remove(group);
            }
        }
    }
}

impl<K> GroupIndex<K>
where
    K: InGroup + kube::Resource<DynamicType = ()> + Clone + 'static,
{
    fn lock(&self) -> std::sync::MutexGuard<'_, IndexInner<K>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Before the cache applies `event`: new objects enter the index.
    pub fn before_store(&self, event: &watcher::Event<Lenient<K>>) {
        if let watcher::Event::Apply(object) | watcher::Event::InitApply(object) = event
            && let (Some(name), Some(parsed)) = (&object.metadata.name, object.object())
        {
            self.lock().link(parsed.group_name(), name);
        }
    }

    /// After the cache applied `event`: objects gone from a group leave it. A relist rebuilds
    /// the index from the cache.
    pub fn after_store(&self, event: &watcher::Event<Lenient<K>>, store: &Store<Lenient<K>>) {
        match event {
            watcher::Event::Apply(object) => {
                let Some(name) = &object.metadata.name else {
                    return;
                };
                let group = object.object().map(|o| o.group_name().to_owned());
                let mut inner = self.lock();
                let before = match &group {
                    Some(group) => inner.group_of.insert(name.clone(), group.clone()),
                    None => inner.group_of.remove(name),
                };
                if let Some(before) = before.filter(|b| Some(b) != group.as_ref()) {
                    inner.unlink(&before, name);
                }
            }
            watcher::Event::Delete(object) => {
                let Some(name) = &object.metadata.name else {
                    return;
                };
                let mut inner = self.lock();
                if let Some(before) = inner.group_of.remove(name) {
                    inner.unlink(&before, name);
                }
                if let Some(parsed) = object.object() {
                    inner.unlink(parsed.group_name(), name);
                }
            }
            watcher::Event::InitDone => {
                let mut rebuilt = IndexInner::default();
                for object in store.state() {
                    if let (Some(name), Some(parsed)) = (&object.metadata.name, object.object()) {
                        rebuilt.link(parsed.group_name(), name);
                        rebuilt
                            .group_of
                            .insert(name.clone(), parsed.group_name().to_owned());
                    }
                }
                *self.lock() = rebuilt;
            }
            watcher::Event::Init | watcher::Event::InitApply(_) => {}
        }
    }

    /// The well-formed objects of `group` in `store`: the index may name more (a superset), so
    /// each object's group is checked in the cache.
    pub fn objects(&self, store: &Store<Lenient<K>>, group: &str) -> Vec<Arc<Lenient<K>>> {
        // Lock order: the index, then the cache; nothing takes them the other way round.
        let inner = self.lock();
        let Some(refs) = inner.by_group.get(group) else {
            return Vec::new();
        };
        refs.iter()
            .filter_map(|r| store.get(r))
            .filter(|o| o.object().is_some_and(|k| k.group_name() == group))
            .collect()
    }
}

/// The ActivationRequests that are Active, kept from the watch for the `active_elevations`
/// gauge (counting them by a scan on every transition was quadratic too).
#[derive(Debug, Default)]
pub struct ActiveRequests {
    names: Mutex<HashSet<String>>,
}

impl ActiveRequests {
    /// After the cache applied `event`; returns how many requests are Active now.
    pub fn after_store(
        &self,
        event: &watcher::Event<Lenient<ActivationRequest>>,
        store: &Store<Lenient<ActivationRequest>>,
    ) -> usize {
        let is_active = |r: &Lenient<ActivationRequest>| {
            r.object()
                .and_then(|o| o.status.as_ref())
                .and_then(|s| s.phase)
                == Some(Phase::Active)
        };
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            watcher::Event::Apply(r) => {
                if let Some(name) = &r.metadata.name {
                    if is_active(r) {
                        names.insert(name.clone());
                    } else {
                        names.remove(name);
                    }
                }
            }
            watcher::Event::Delete(r) => {
                if let Some(name) = &r.metadata.name {
                    names.remove(name);
                }
            }
            watcher::Event::InitDone => {
                *names = store
                    .state()
                    .iter()
                    .filter(|r| is_active(r))
                    .filter_map(|r| r.metadata.name.clone())
                    .collect();
            }
            watcher::Event::Init | watcher::Event::InitApply(_) => {}
        }
        names.len()
    }
}
