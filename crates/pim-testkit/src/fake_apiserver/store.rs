//! Storage, as etcd behind the API server: JSON objects by (type, namespace, name), one global
//! resourceVersion counter across all types, and a bounded history of changes. The history
//! feeds watches (resume from any retained resourceVersion) and consistent paginated lists (a
//! snapshot at an older resourceVersion is the current state with later changes undone);
//! anything older than the history is "compacted" and answers 410 Gone.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::watch;

use super::meta;
use super::registry::TypeIdx;
use super::status::ApiError;

/// Where an object lives. Ordered as etcd keys are, so lists come out sorted by namespace, name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ObjKey {
    pub ty: TypeIdx,
    /// Empty for cluster-scoped objects.
    pub namespace: String,
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventKind {
    Added,
    Modified,
    Deleted,
}

/// One change, as a watch replays it.
#[derive(Debug)]
pub(crate) struct Change {
    pub rv: u64,
    pub key: ObjKey,
    pub kind: EventKind,
    /// The object after the change (for a deletion: its last state, at the deletion's version).
    pub object: Arc<Value>,
    /// The object before the change (`None` for an addition).
    pub prev: Option<Arc<Value>>,
}

pub(crate) struct Store {
    objects: BTreeMap<ObjKey, Arc<Value>>,
    rv: u64,
    history: VecDeque<Arc<Change>>,
    capacity: usize,
    /// Requests for resourceVersions older than this get 410 Gone.
    compacted: u64,
    /// The newest change dropped from the history for lack of room: an open watch that had not
    /// read up to it can no longer continue.
    evicted: u64,
    /// Tells open watches that something changed (the new resourceVersion).
    notify: watch::Sender<u64>,
}

impl Store {
    pub fn new(capacity: usize) -> Self {
        Self {
            objects: BTreeMap::new(),
            rv: 1,
            history: VecDeque::new(),
            capacity: capacity.max(1),
            compacted: 0,
            evicted: 0,
            notify: watch::Sender::new(1),
        }
    }

    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    pub fn compacted(&self) -> u64 {
        self.compacted
    }

    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.notify.subscribe()
    }

    pub fn get(&self, key: &ObjKey) -> Option<Arc<Value>> {
        self.objects.get(key).cloned()
    }

    /// Current objects of a type (in one namespace, or all), in key order.
    pub fn list(&self, ty: TypeIdx, namespace: Option<&str>) -> Vec<(ObjKey, Arc<Value>)> {
        self.objects
            .iter()
            .filter(|(k, _)| k.ty == ty && namespace.is_none_or(|ns| k.namespace == ns))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The objects of a type as they were at resourceVersion `rv`: 410 if the history no longer
    /// reaches back that far.
    pub fn snapshot_at(
        &self,
        ty: TypeIdx,
        namespace: Option<&str>,
        rv: u64,
    ) -> Result<Vec<(ObjKey, Arc<Value>)>, ApiError> {
        if rv < self.compacted {
            return Err(ApiError::expired(format!(
                "too old resource version: {rv} ({})",
                self.compacted
            )));
        }
        let mut state: BTreeMap<ObjKey, Arc<Value>> =
            self.list(ty, namespace).into_iter().collect();
        for change in self.history.iter().rev().take_while(|c| c.rv > rv) {
            if change.key.ty != ty || namespace.is_some_and(|ns| change.key.namespace != ns) {
                continue;
            }
            match (&change.kind, &change.prev) {
                (EventKind::Added, _) => {
                    state.remove(&change.key);
                }
                (_, Some(prev)) => {
                    state.insert(change.key.clone(), prev.clone());
                }
                (_, None) => {}
            }
        }
        Ok(state.into_iter().collect())
    }

    /// Changes after `rv` (exclusive), oldest first.
    pub fn changes_after(&self, rv: u64) -> Vec<Arc<Change>> {
        let start = self.history.partition_point(|c| c.rv <= rv);
        self.history.range(start..).cloned().collect()
    }

    /// Stores a new or changed object under the next resourceVersion, recording the change.
    pub fn put(&mut self, key: ObjKey, mut object: Value) -> Arc<Value> {
        self.rv += 1;
        meta::set_meta(
            &mut object,
            "resourceVersion",
            Value::String(self.rv.to_string()),
        );
        let object = Arc::new(object);
        let prev = self.objects.insert(key.clone(), object.clone());
        let kind = if prev.is_some() {
            EventKind::Modified
        } else {
            EventKind::Added
        };
        self.record(key, kind, object.clone(), prev);
        object
    }

    /// Deletes an object under the next resourceVersion; returns its last state.
    pub fn remove(&mut self, key: &ObjKey) -> Option<Arc<Value>> {
        let prev = self.objects.remove(key)?;
        self.rv += 1;
        let mut last = (*prev).clone();
        meta::set_meta(
            &mut last,
            "resourceVersion",
            Value::String(self.rv.to_string()),
        );
        let last = Arc::new(last);
        self.record(key.clone(), EventKind::Deleted, last.clone(), Some(prev));
        Some(last)
    }

    fn record(
        &mut self,
        key: ObjKey,
        kind: EventKind,
        object: Arc<Value>,
        prev: Option<Arc<Value>>,
    ) {
        self.history.push_back(Arc::new(Change {
            rv: self.rv,
            key,
            kind,
            object,
            prev,
        }));
        while self.history.len() > self.capacity {
            if let Some(old) = self.history.pop_front() {
                self.compacted = self.compacted.max(old.rv);
                self.evicted = self.evicted.max(old.rv);
            }
        }
        self.notify.send_replace(self.rv);
    }

    /// Compaction, as if the cluster moved on: the resourceVersion advances (other writes happened
    /// elsewhere) and every older version is gone, so the next watch or continued list from any
    /// version handed out so far gets 410. Open watches carry on: they miss nothing.
    pub fn expire(&mut self) {
        self.rv += 1;
        self.compacted = self.rv;
    }

    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity.max(1);
        while self.history.len() > self.capacity {
            if let Some(old) = self.history.pop_front() {
                self.compacted = self.compacted.max(old.rv);
                self.evicted = self.evicted.max(old.rv);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(name: &str) -> ObjKey {
        ObjKey {
            ty: 0,
            namespace: String::new(),
            name: name.into(),
        }
    }

    #[test]
    fn snapshots_undo_later_changes_and_expire() {
        let mut store = Store::new(10);
        store.put(key("a"), json!({"v": 1}));
        let at = store.resource_version();
        store.put(key("a"), json!({"v": 2}));
        store.put(key("b"), json!({"v": 1}));
        store.remove(&key("a"));
        let snap = store.snapshot_at(0, None, at).unwrap();
        assert_eq!(snap.len(), 1);
        assert_eq!(snap[0].1["v"], 1);
        assert_eq!(store.changes_after(at).len(), 3);
        store.expire();
        assert_eq!(store.snapshot_at(0, None, at).unwrap_err().code, 410);
    }

    #[test]
    fn bounded_history_compacts() {
        let mut store = Store::new(2);
        for i in 0..5 {
            store.put(key(&format!("o{i}")), json!({}));
        }
        assert_eq!(store.changes_after(0).len(), 2);
        assert!(store.snapshot_at(0, None, 3).is_err());
        assert!(
            store
                .snapshot_at(0, None, store.resource_version() - 1)
                .is_ok()
        );
    }
}
