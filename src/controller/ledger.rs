//! The grant ledger as the controllers keep it: PimGrant objects in the API server (the record
//! the next leader reads), and this process's memory of what it wrote, closed and confirmed since
//! its cache last caught up.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Api;
use kube::api::{DeleteParams, ObjectMeta, PostParams};

use super::context::Stores;
use super::error::Error;
use crate::api::pim_grant::{GROUP_LABEL, GrantSourceRef, PimGrant, PimGrantSpec};
use crate::core::ledger::{Entry, GroupTarget, SourceId, member_text, parse_member};

/// The ledger entry a PimGrant object holds; `None` for one that does not parse (reported and
/// left alone: only an entry we can read can be revoked).
pub fn entry_of(grant: &PimGrant) -> Option<Entry> {
    let spec = &grant.spec;
    Some(Entry {
        name: grant.metadata.name.clone()?,
        group: spec.group.clone(),
        target: GroupTarget {
            directory: spec.directory.clone(),
            group_id: spec.group_id.clone(),
        },
        role: spec.role,
        member: parse_member(&spec.member)?,
        source: SourceId {
            kind: spec.source.kind,
            name: spec.source.name.clone(),
            uid: spec.source.uid.clone(),
        },
        start: spec.start.0,
        end: spec.end.as_ref().map(|t| t.0),
    })
}

fn object_of(entry: &Entry) -> PimGrant {
    PimGrant {
        metadata: ObjectMeta {
            name: Some(entry.name.clone()),
            // A label value is at most 63 characters, a PimGroup name up to 253: the same
            // shortened value as the kubernetes directory's bindings.
            labels: Some(
                [(
                    GROUP_LABEL.to_owned(),
                    crate::directory::kubernetes::group_label_value(&entry.group),
                )]
                .into(),
            ),
            ..Default::default()
        },
        spec: PimGrantSpec {
            group: entry.group.clone(),
            directory: entry.target.directory.clone(),
            group_id: entry.target.group_id.clone(),
            role: entry.role,
            member: member_text(&entry.member),
            source: GrantSourceRef {
                kind: entry.source.kind,
                name: entry.source.name.clone(),
                uid: entry.source.uid.clone(),
            },
            start: Time(entry.start),
            end: entry.end.map(Time),
        },
    }
}

/// How long a closed entry the cache does not show is remembered as closed.
const TOMBSTONE: std::time::Duration = std::time::Duration::from_secs(120);

/// What this process knows of the ledger beyond its cache.
#[derive(Debug, Default)]
pub struct LedgerMemory {
    inner: Mutex<Memory>,
}

#[derive(Debug, Default)]
struct Memory {
    /// Entries this process wrote, until its cache shows them.
    written: HashMap<String, Entry>,
    /// Entries this process deleted (name → PimGroup, when), until its cache drops them, or a
    /// while, for one deleted before the cache ever showed it (its ADDED event may still come).
    closed: HashMap<String, (String, std::time::Instant)>,
    /// When the directory confirmed the removal of a source's access, by source uid.
    confirmed: HashMap<String, Timestamp>,
    /// When this process first saw an entry dead: the start of its revocation lag when the
    /// entry's window says nothing (its source was deleted or shortened).
    dead_since: HashMap<String, Timestamp>,
}

impl LedgerMemory {
    fn lock(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The entries of PimGroup `group`: the cache's, with what this process wrote or closed
    /// since. Malformed PimGrants of the group are logged and left out.
    pub fn entries(&self, stores: &Stores, group: &str) -> Vec<Entry> {
        let objects = stores.grants_of(group);
        let mut memory = self.lock();
        let mut out: Vec<Entry> = Vec::new();
        let mut cached = HashSet::new();
        for object in objects {
            let Some(grant) = object.object() else {
                continue;
            };
            if grant.spec.group != group {
                continue;
            }
            let Some(entry) = entry_of(grant) else {
                tracing::warn!(
                    pimgrant = grant.metadata.name.as_deref().unwrap_or_default(),
                    member = %grant.spec.member,
                    "a PimGrant whose member cannot be read is ignored"
                );
                continue;
            };
            cached.insert(entry.name.clone());
            if !memory.closed.contains_key(&entry.name) {
                out.push(entry);
            }
        }
        // The cache caught up: forget what it now says itself.
        memory.written.retain(|name, _| !cached.contains(name));
        memory.closed.retain(|name, (of, when)| {
            of != group || cached.contains(name) || when.elapsed() < TOMBSTONE
        });
        out.extend(
            memory
                .written
                .values()
                .filter(|e| e.group == group && !memory.closed.contains_key(&e.name))
                .cloned(),
        );
        out
    }

    pub fn written(&self, entry: &Entry) {
        let mut memory = self.lock();
        memory.closed.remove(&entry.name);
        memory.written.insert(entry.name.clone(), entry.clone());
    }

    pub fn closed(&self, entry: &Entry) {
        let mut memory = self.lock();
        memory.written.remove(&entry.name);
        memory.dead_since.remove(&entry.name);
        memory.closed.insert(
            entry.name.clone(),
            (entry.group.clone(), std::time::Instant::now()),
        );
    }

    /// The directory confirmed the removal of (one of) a source's grants at `at`: the latest
    /// confirmation is its end.
    pub fn confirm_removal(&self, uid: &str, at: Timestamp) {
        let mut memory = self.lock();
        let latest = memory.confirmed.entry(uid.to_owned()).or_insert(at);
        *latest = (*latest).max(at);
    }

    pub fn removal_confirmed_at(&self, uid: &str) -> Option<Timestamp> {
        self.lock().confirmed.get(uid).copied()
    }

    /// Forgets a source that is finished with (its request ended or was deleted).
    pub fn forget_source(&self, uid: &str) {
        self.lock().confirmed.remove(uid);
    }

    /// When `entry` was first seen dead by this process (now, if just now).
    pub fn dead_since(&self, entry: &Entry, now: Timestamp) -> Timestamp {
        *self
            .lock()
            .dead_since
            .entry(entry.name.clone())
            .or_insert(now)
    }
}

/// Writes the intent before the directory write it justifies. An entry already there (a
/// repeated intent, or one written by a leader before us) is success.
pub async fn record(
    client: &kube::Client,
    memory: &LedgerMemory,
    entry: &Entry,
) -> Result<(), Error> {
    let api: Api<PimGrant> = Api::all(client.clone());
    match api.create(&PostParams::default(), &object_of(entry)).await {
        Ok(_) => {}
        // Only `AlreadyExists` says the entry is there (entry names are derived from what they
        // record); any other 409 wrote nothing, and the add it would justify must wait (found
        // by the simulation, seed 47).
        Err(kube::Error::Api(status)) if status.code == 409 && status.reason == "AlreadyExists" => {
        }
        Err(error) => return Err(error.into()),
    }
    memory.written(entry);
    Ok(())
}

/// Closes an entry once the directory confirmed its member gone (or a live entry explains the
/// member). An entry already gone is success.
pub async fn close(
    client: &kube::Client,
    memory: &LedgerMemory,
    entry: &Entry,
) -> Result<(), Error> {
    let api: Api<PimGrant> = Api::all(client.clone());
    match api.delete(&entry.name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(error) => return Err(error.into()),
    }
    memory.closed(entry);
    Ok(())
}

/// Whether the ledger holds an open entry for the source with `uid` in PimGroup `group`.
pub fn holds(stores: &Stores, memory: &LedgerMemory, group: &str, uid: &str) -> bool {
    let objects = stores.grants_of(group);
    let memory = memory.lock();
    let cached = objects.iter().filter_map(|o| o.object()).any(|g| {
        g.spec.source.uid == uid
            && g.metadata
                .name
                .as_ref()
                .is_some_and(|n| !memory.closed.contains_key(n))
    });
    cached
        || memory.written.values().any(|e| {
            e.group == group && e.source.uid == uid && !memory.closed.contains_key(&e.name)
        })
}

/// Revokes a ledger entry whose PimGroup is gone (deleted around its finalizer) or cannot be
/// read: no group pass will, and the entry still says where its member was added.
pub async fn reconcile_orphan(
    object: std::sync::Arc<crate::lenient::Lenient<PimGrant>>,
    ctx: std::sync::Arc<super::context::Context>,
) -> Result<kube::runtime::controller::Action, Error> {
    use kube::runtime::controller::Action;
    use kube::runtime::reflector::ObjectRef;
    // A PimGroup missing from a cache not yet listed is not gone.
    ctx.caches_ready().await;
    let Some(entry) = object.object().and_then(entry_of) else {
        return Ok(Action::await_change());
    };
    let group = ctx.stores.groups.get(&ObjectRef::new(&entry.group));
    if group.as_ref().is_some_and(|g| g.object().is_some()) {
        // Its PimGroup's passes deal with it.
        return Ok(Action::await_change());
    }
    let gone = group.is_none();
    let Some(directory) = ctx.directories.get(&entry.target.directory) else {
        tracing::error!(
            pimgrant = %entry.name, member = %entry.member, target = %entry.target,
            "a grant whose PimGroup is gone was made through a directory connection that is no longer configured; it cannot be revoked"
        );
        return Ok(Action::requeue(ctx.settings.resync));
    };
    if directory.backend() == crate::directory::kubernetes::BACKEND && gone {
        // The RBAC bindings are owned by the PimGroup: the garbage collector deletes them with
        // it (Kubernetes docs, "Garbage Collection": dependents whose owner is gone are deleted).
        tracing::info!(pimgrant = %entry.name, member = %entry.member, "the PimGroup is gone, and its bindings with it");
    } else {
        let id = crate::directory::GroupId(entry.target.group_id.clone());
        let lane = ctx.priority.removal_lane().await;
        let removed = directory
            .remove_member(&id, entry.role, &entry.member)
            .await;
        drop(lane);
        removed?;
        tracing::info!(
            pimgrant = %entry.name, member = %entry.member, target = %entry.target,
            "revoked a grant whose PimGroup is {}",
            if gone { "gone" } else { "unreadable" }
        );
    }
    if entry.source.kind == crate::api::pim_grant::GrantSourceKind::ActivationRequest {
        ctx.ledger.confirm_removal(&entry.source.uid, ctx.now());
        // Fails only once the controller has stopped: nothing is left to wake.
        let _ = ctx
            .request_triggers
            .send(ObjectRef::new(&entry.source.name));
    }
    close(&ctx.client, &ctx.ledger, &entry).await?;
    Ok(Action::await_change())
}

pub fn error_policy(
    object: std::sync::Arc<crate::lenient::Lenient<PimGrant>>,
    error: &Error,
    ctx: std::sync::Arc<super::context::Context>,
) -> kube::runtime::controller::Action {
    super::context::back_off("PimGrant", object.metadata.name.as_deref(), error, &ctx)
}
