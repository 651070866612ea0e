//! The outbox: notifications wait here, away from reconciliation, until their channel has sent
//! them; then the fact is recorded in the object's `status.delivery`.
//!
//! - Each channel has its own queue and worker, with a limit on sends at once, so a slow or
//!   dead SMTP server holds up only its own mail, never a reconcile or another channel.
//! - A failed send is retried with exponential backoff (a `Retry-After` wins) up to the
//!   configured attempts; then it is recorded as `Failed` and never tried again.
//! - Results go to one recorder, which batches them per object and writes them by server-side
//!   apply under its own field manager, after a fresh read and with that read's
//!   resourceVersion, so nothing another writer recorded meanwhile is lost.
//! - Until a result shows in the watched object, the outbox remembers it, so a reconcile that
//!   reads an older copy does not send it again. The memory lasts one leadership term.
//!
//! What "exactly once" means here, and where it stops: a notification is recorded after it was
//! sent (at-least-once). Between "the channel accepted it" and "the status says so" lies one
//! status write (plus the batch window). A clean shutdown or a lost lease waits for that write
//! (up to the drain limit); a failing write is retried without sending again. Only a process
//! that dies inside that window (SIGKILL, OOM, node loss), or a drain that runs out of time,
//! sends it a second time after the restart, with the same delivery id (`X-PIM-Delivery`
//! header, and the e-mail `Message-ID`), so receivers can drop the duplicate. We chose this
//! over at-most-once (record, then send), which would lose the message to approvers when the
//! process dies mid-send, with nothing left to retry it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Resource;
use kube::api::{Api, Patch, PatchParams};
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use super::channel::{Configured, SendError};
use super::config::Retry;
use super::message::Message;
use super::plan::{ChannelView, Due};
use super::signature::delivery_id;
use crate::api::delivery::{
    AuditSnapshot, Delivery, DeliveryOutcome, FIELD_MANAGER, NOTIFICATIONS_MAX, NotificationRecord,
    same_end,
};
use crate::api::{AccessReview, ActivationRequest, EligibleAssignment};
use crate::clock::Clock;

/// How long the recorder gathers results before writing them, so a burst of notifications
/// about one object becomes one write.
pub const BATCH_WINDOW: Duration = Duration::from_millis(100);

/// Objects the recorder writes to at once.
const WRITES_AT_ONCE: usize = 16;

/// The kinds that carry `status.delivery`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Request,
    Assignment,
    Review,
}

/// The object a notification is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub kind: Kind,
    pub name: String,
    pub uid: String,
}

/// Objects whose status carries `delivery`.
pub trait HasDelivery {
    fn delivery(&self) -> Option<&Delivery>;
}

impl HasDelivery for ActivationRequest {
    fn delivery(&self) -> Option<&Delivery> {
        self.status.as_ref()?.delivery.as_ref()
    }
}

impl HasDelivery for AccessReview {
    fn delivery(&self) -> Option<&Delivery> {
        self.status.as_ref()?.delivery.as_ref()
    }
}

impl HasDelivery for EligibleAssignment {
    fn delivery(&self) -> Option<&Delivery> {
        self.status.as_ref()?.delivery.as_ref()
    }
}

struct Job {
    object: ObjectKey,
    due: Due,
    message: Arc<Message>,
}

enum Update {
    Notified {
        object: ObjectKey,
        record: NotificationRecord,
    },
    Audited {
        object: ObjectKey,
        upto: usize,
        snapshot: AuditSnapshot,
    },
}

/// What the recorder will write to one object.
#[derive(Debug, Default)]
struct Batch {
    uid: String,
    records: Vec<NotificationRecord>,
    audited: Option<(usize, AuditSnapshot)>,
}

impl Batch {
    fn add(&mut self, update: Update) {
        match update {
            Update::Notified { object, record } => {
                self.uid = object.uid;
                self.records.push(record);
            }
            Update::Audited {
                object,
                upto,
                snapshot,
            } => {
                self.uid = object.uid;
                self.add_mark(upto, snapshot);
            }
        }
    }

    fn add_mark(&mut self, upto: usize, snapshot: AuditSnapshot) {
        if self.audited.as_ref().is_none_or(|(n, _)| *n <= upto) {
            self.audited = Some((upto, snapshot));
        }
    }

    fn merge(&mut self, other: Batch) {
        self.uid = other.uid;
        self.records.extend(other.records);
        if let Some((upto, snapshot)) = other.audited
            && self.audited.as_ref().is_none_or(|(n, _)| *n <= upto)
        {
            self.audited = Some((upto, snapshot));
        }
    }

    /// `current` with this batch merged in: new records appended (a key already there stays as
    /// it is, unless the record is a reminder about another end, which replaces it), the audit
    /// mark moved forward only.
    fn apply_to(&self, current: &Delivery) -> Delivery {
        let mut next = current.clone();
        for record in &self.records {
            if let Some(recorded) = next
                .notifications
                .iter_mut()
                .find(|r| r.key() == record.key())
            {
                if !same_end(recorded.ends.as_ref(), record.ends.as_ref()) {
                    *recorded = record.clone();
                }
                continue;
            }
            if next.notifications.len() >= NOTIFICATIONS_MAX {
                tracing::warn!(
                    event = %record.event, channel = %record.channel,
                    "status.delivery is full; the notification was sent but is not recorded"
                );
                continue;
            }
            next.notifications.push(record.clone());
        }
        if let Some((upto, snapshot)) = &self.audited
            && *upto >= current.audited()
        {
            next.audited_transitions = Some(i32::try_from(*upto).unwrap_or(i32::MAX));
            next.audit = Some(snapshot.clone());
        }
        next
    }
}

/// In-memory bookkeeping of one leadership term, shared by the outbox and its recorder.
#[derive(Default)]
struct Memory {
    /// Per object uid: notifications queued, being sent, or sent but not yet seen in the cache.
    known: HashMap<String, HashSet<Due>>,
    /// Per object uid: history entries whose audit record went out, recorded or not yet, and
    /// the snapshot they named. The recorder writes a pending mark with the object's next write.
    audited: HashMap<String, (usize, AuditSnapshot)>,
    /// Per object uid and notification: attempts whose task panicked in this term. After
    /// [`PANICS_BEFORE_GIVING_UP`] the notification stays known, so it is not queued again.
    panicked: HashMap<(String, Due), u32>,
}

/// A notification whose sending panicked this often is given up for the term: a channel that
/// always panics must not be retried, and logged, on every reconcile.
const PANICS_BEFORE_GIVING_UP: u32 = 3;

type SharedMemory = Arc<Mutex<Memory>>;

fn lock(memory: &SharedMemory) -> std::sync::MutexGuard<'_, Memory> {
    memory.lock().unwrap_or_else(|e| e.into_inner())
}

pub struct Outbox {
    queues: BTreeMap<String, mpsc::UnboundedSender<Job>>,
    views: Vec<ChannelView>,
    memory: SharedMemory,
    updates: Mutex<Option<mpsc::UnboundedSender<Update>>>,
    stop: CancellationToken,
    workers: Mutex<Vec<JoinHandle<()>>>,
    recorder: Mutex<Option<JoinHandle<()>>>,
}

impl Outbox {
    /// Starts one worker per channel and the recorder.
    pub fn start(
        channels: Vec<Configured>,
        retry: Retry,
        client: kube::Client,
        clock: Arc<dyn Clock>,
    ) -> Arc<Outbox> {
        let stop = CancellationToken::new();
        let (updates, received) = mpsc::unbounded_channel();
        let memory = SharedMemory::default();
        let mut queues = BTreeMap::new();
        let mut workers = Vec::new();
        let views = channels.iter().map(Configured::view).collect();
        for channel in channels {
            let (queue, jobs) = mpsc::unbounded_channel();
            queues.insert(channel.name.clone(), queue);
            workers.push(tokio::spawn(work(
                channel,
                jobs,
                updates.clone(),
                retry,
                clock.clone(),
                memory.clone(),
                stop.clone(),
            )));
        }
        let recorder = tokio::spawn(record(received, client, memory.clone(), stop.clone()));
        Arc::new(Outbox {
            queues,
            views,
            memory,
            updates: Mutex::new(Some(updates)),
            stop,
            workers: Mutex::new(workers),
            recorder: Mutex::new(Some(recorder)),
        })
    }

    /// The channels, as the planner sees them.
    pub fn channels(&self) -> &[ChannelView] {
        &self.views
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        lock(&self.memory)
    }

    /// Whether `due` is on its way, or sent and not yet visible in the object.
    pub fn is_known(&self, uid: &str, due: &Due) -> bool {
        self.memory()
            .known
            .get(uid)
            .is_some_and(|set| set.contains(due))
    }

    /// Forgets what the object's status now shows; the status speaks for it from here on.
    pub fn settle(&self, uid: &str, delivery: Option<&Delivery>) {
        let mut memory = self.memory();
        if let Some(set) = memory.known.get_mut(uid) {
            set.retain(|d| !delivery.is_some_and(|r| d.recorded_in(r)));
            if set.is_empty() {
                memory.known.remove(uid);
            }
        }
        let durable = delivery.map_or(0, Delivery::audited);
        if memory.audited.get(uid).is_some_and(|(n, _)| *n <= durable) {
            memory.audited.remove(uid);
        }
    }

    /// Queues a notification; `false` when it is already known or its channel is not.
    pub fn submit(&self, object: &ObjectKey, due: Due, message: Arc<Message>) -> bool {
        let Some(queue) = self.queues.get(&due.channel) else {
            return false;
        };
        let mut memory = self.memory();
        let set = memory.known.entry(object.uid.clone()).or_default();
        if !set.insert(due.clone()) {
            return false;
        }
        let job = Job {
            object: object.clone(),
            due: due.clone(),
            message,
        };
        if queue.send(job).is_err() {
            set.remove(&due);
            return false;
        }
        true
    }

    /// History entries of the object whose audit records went out in this term, recorded or not.
    pub fn audited(&self, uid: &str) -> usize {
        self.memory().audited.get(uid).map_or(0, |(n, _)| *n)
    }

    /// Notes that the audit records of the first `upto` history entries went out. With `now`,
    /// the recorder writes it down at once (a finished request, which retention waits for);
    /// otherwise with the object's next write, so a request on its way to Active costs no
    /// extra write. A mark not written when the leader stops means those records are emitted
    /// again by the next one (same ids).
    pub fn mark_audited(
        &self,
        object: &ObjectKey,
        upto: usize,
        snapshot: AuditSnapshot,
        now: bool,
    ) {
        {
            let mut memory = self.memory();
            let mark = memory
                .audited
                .entry(object.uid.clone())
                .or_insert_with(|| (0, AuditSnapshot::default()));
            if upto >= mark.0 {
                *mark = (upto, snapshot.clone());
            }
        }
        if !now {
            return;
        }
        let updates = self.updates.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(updates) = updates.as_ref()
            && updates
                .send(Update::Audited {
                    object: object.clone(),
                    upto,
                    snapshot,
                })
                .is_err()
        {
            // The mark stays in memory and rides along with the object's next write, if any.
            tracing::warn!(object = %object.name, upto, "the recorder has stopped; the audit mark is not written now");
        }
    }

    /// Stops taking work: sends under way finish (a send waiting to retry is dropped; it was
    /// not sent, and the next leader sends it), their results and audit marks are written, all
    /// within `limit`.
    pub async fn shutdown(&self, limit: Duration) {
        self.stop.cancel();
        let deadline = tokio::time::Instant::now() + limit;
        let workers = std::mem::take(&mut *self.workers.lock().unwrap_or_else(|e| e.into_inner()));
        for mut worker in workers {
            match tokio::time::timeout_at(deadline, &mut worker).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::error!(%error, "a notification worker panicked; its channel's queued notifications are left to the next leader");
                }
                Err(_) => worker.abort(),
            }
        }
        drop(
            self.updates
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        );
        let recorder = self
            .recorder
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(mut recorder) = recorder {
            match tokio::time::timeout_at(deadline, &mut recorder).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::error!(
                    %error,
                    "the notification recorder panicked; notifications it had not recorded may be sent again by the next leader"
                ),
                Err(_) => {
                    tracing::warn!(
                        "stopped before every sent notification was recorded; those may be sent again by the next leader"
                    );
                    recorder.abort();
                }
            }
        }
    }
}

/// One channel's worker: takes jobs in order, at most `concurrency` sends at once.
async fn work(
    channel: Configured,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    updates: mpsc::UnboundedSender<Update>,
    retry: Retry,
    clock: Arc<dyn Clock>,
    memory: SharedMemory,
    stop: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(channel.concurrency.max(1)));
    let mut running = JoinSet::new();
    // What each running attempt sends, to name it and let it go when its task panics.
    let mut under_way: HashMap<tokio::task::Id, (ObjectKey, Due)> = HashMap::new();
    loop {
        let job = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            Some(ended) = running.join_next_with_id(), if !running.is_empty() => {
                attempt_ended(ended, &mut under_way, &memory, &channel.name);
                continue;
            }
            job = jobs.recv() => match job {
                Some(job) => job,
                None => break,
            },
        };
        let sending = (job.object.clone(), job.due.clone());
        let attempt = Attempt {
            channel: channel.clone(),
            job,
            updates: updates.clone(),
            retry,
            clock: clock.clone(),
            stop: stop.clone(),
            slots: slots.clone(),
        };
        let id = running.spawn(attempt.deliver()).id();
        under_way.insert(id, sending);
    }
    while let Some(ended) = running.join_next_with_id().await {
        attempt_ended(ended, &mut under_way, &memory, &channel.name);
    }
}

/// Observes an attempt's end. One that panicked is logged with its object and forgotten, so
/// the object's next reconcile queues it again (its record was never written).
fn attempt_ended(
    ended: Result<(tokio::task::Id, ()), tokio::task::JoinError>,
    under_way: &mut HashMap<tokio::task::Id, (ObjectKey, Due)>,
    memory: &SharedMemory,
    channel: &str,
) {
    let (id, failure) = match ended {
        Ok((id, ())) => (id, None),
        Err(error) => (error.id(), Some(error)),
    };
    let Some((object, due)) = under_way.remove(&id) else {
        return;
    };
    let Some(error) = failure else {
        return;
    };
    let mut memory = lock(memory);
    let panics = memory
        .panicked
        .entry((object.uid.clone(), due.clone()))
        .or_default();
    *panics += 1;
    if *panics >= PANICS_BEFORE_GIVING_UP {
        tracing::error!(
            %channel, event = %due.event.as_str(), object = %object.name, recipient = %due.recipient,
            %error, panics = *panics,
            "notification attempt failed unexpectedly again; given up until the operator restarts or another replica leads"
        );
        return;
    }
    tracing::error!(
        %channel, event = %due.event.as_str(), object = %object.name, recipient = %due.recipient,
        %error, panics = *panics,
        "notification attempt failed unexpectedly; it is queued again on the object's next reconcile"
    );
    if let Some(set) = memory.known.get_mut(&object.uid) {
        set.remove(&due);
        if set.is_empty() {
            memory.known.remove(&object.uid);
        }
    }
}

struct Attempt {
    channel: Configured,
    job: Job,
    updates: mpsc::UnboundedSender<Update>,
    retry: Retry,
    clock: Arc<dyn Clock>,
    stop: CancellationToken,
    /// The channel's send slots: held while sending, never while waiting to retry, so one
    /// recipient's backoff does not hold up the channel's other mail.
    slots: Arc<Semaphore>,
}

/// Error text kept in status: bounded, and from our own messages only (no URLs, no secrets).
fn short(message: &str) -> String {
    message.chars().take(512).collect()
}

impl Attempt {
    async fn deliver(self) {
        let Attempt {
            channel,
            job,
            updates,
            retry,
            clock,
            stop,
            slots,
        } = self;
        let event = job.due.event.as_str();
        let id = delivery_id(
            &job.object.uid,
            event,
            &channel.name,
            &job.due.recipient,
            job.due.ends,
        );
        let mut attempts: u32 = 0;
        let (outcome, error) = loop {
            if stop.is_cancelled() {
                // Nothing is under way: the next leader sends it.
                return;
            }
            let permit = tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                permit = slots.acquire() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return,
                },
            };
            attempts += 1;
            let sent = channel
                .channel
                .send(&job.message, &job.due.recipient, &id)
                .await;
            drop(permit);
            match sent {
                Ok(()) => break (DeliveryOutcome::Sent, None),
                Err(SendError::Permanent { message }) => {
                    break (DeliveryOutcome::Failed, Some(message));
                }
                Err(SendError::Transient { message, .. }) if attempts >= retry.max_attempts => {
                    break (DeliveryOutcome::Failed, Some(message));
                }
                Err(SendError::Transient {
                    message,
                    retry_after,
                }) => {
                    let wait = retry_after.unwrap_or_else(|| retry.backoff(attempts));
                    tracing::warn!(
                        channel = %channel.name, %event, object = %job.object.name,
                        recipient = %job.due.recipient, attempts, error = %message,
                        "notification not sent; retrying in {wait:?}"
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = stop.cancelled() => return,
                    }
                }
            }
        };
        match &error {
            None => tracing::info!(
                channel = %channel.name, %event, object = %job.object.name,
                recipient = %job.due.recipient, attempts, "notification sent"
            ),
            Some(error) => tracing::warn!(
                channel = %channel.name, %event, object = %job.object.name,
                recipient = %job.due.recipient, attempts, %error, "notification given up"
            ),
        }
        let record = NotificationRecord {
            event: event.to_owned(),
            channel: channel.name.clone(),
            recipient: job.due.recipient.clone(),
            outcome,
            time: Time(clock.now()),
            attempts: i32::try_from(attempts).unwrap_or(i32::MAX),
            error: error.as_deref().map(short),
            ends: job.due.ends.map(Time),
        };
        if updates
            .send(Update::Notified {
                object: job.object.clone(),
                record,
            })
            .is_err()
        {
            // Only when the recorder panicked: the next leader sends it again (same id).
            tracing::warn!(
                channel = %channel.name, %event, object = %job.object.name,
                recipient = %job.due.recipient, "the recorder has stopped; this notification is not recorded"
            );
        }
    }
}

/// The recorder: batches results per object and writes them; a failed write is retried with
/// backoff (never by sending again). Ends when every sender is gone and all is written.
async fn record(
    mut updates: mpsc::UnboundedReceiver<Update>,
    client: kube::Client,
    memory: SharedMemory,
    stop: CancellationToken,
) {
    let mut pending: BTreeMap<(Kind, String), Batch> = BTreeMap::new();
    let mut open = true;
    let mut failures: u32 = 0;
    let add = |pending: &mut BTreeMap<(Kind, String), Batch>, update: Update| {
        let object = match &update {
            Update::Notified { object, .. } | Update::Audited { object, .. } => object,
        };
        pending
            .entry((object.kind, object.name.clone()))
            .or_default()
            .add(update);
    };
    while open || !pending.is_empty() {
        if pending.is_empty() {
            match updates.recv().await {
                Some(update) => add(&mut pending, update),
                None => {
                    open = false;
                    continue;
                }
            }
        }
        if open && !stop.is_cancelled() {
            let window = tokio::time::sleep(BATCH_WINDOW);
            tokio::pin!(window);
            loop {
                tokio::select! {
                    _ = &mut window => break,
                    _ = stop.cancelled() => break,
                    update = updates.recv() => match update {
                        Some(update) => add(&mut pending, update),
                        None => {
                            open = false;
                            break;
                        }
                    },
                }
            }
        }
        while let Ok(update) = updates.try_recv() {
            add(&mut pending, update);
        }
        let written: Vec<_> = futures::stream::iter(std::mem::take(&mut pending))
            .map(|(key, mut batch)| {
                let client = client.clone();
                // A pending audit mark of this object rides along.
                let pending = lock(&memory).audited.get(&batch.uid).cloned();
                if let Some((upto, snapshot)) = pending {
                    batch.add_mark(upto, snapshot);
                }
                async move {
                    let result = write(&client, &key, &batch).await;
                    (key, batch, result)
                }
            })
            .buffer_unordered(WRITES_AT_ONCE)
            .collect()
            .await;
        let mut failed = false;
        for (key, batch, result) in written {
            if let Err(error) = result {
                tracing::warn!(object = %key.1, %error, "cannot record notifications in status; retrying");
                failed = true;
                pending.entry(key).or_default().merge(batch);
            }
        }
        if failed {
            failures = failures.saturating_add(1);
            let wait = Duration::from_millis(250)
                .saturating_mul(2u32.saturating_pow(failures.min(7)))
                .min(Duration::from_secs(30));
            tokio::time::sleep(wait).await;
        } else {
            failures = 0;
        }
    }
}

async fn write(
    client: &kube::Client,
    key: &(Kind, String),
    batch: &Batch,
) -> Result<(), kube::Error> {
    match key.0 {
        Kind::Request => write_to::<ActivationRequest>(client, &key.1, batch).await,
        Kind::Assignment => write_to::<EligibleAssignment>(client, &key.1, batch).await,
        Kind::Review => write_to::<AccessReview>(client, &key.1, batch).await,
    }
}

/// Reads the object, merges the batch into its `status.delivery`, and applies the result with
/// the read's resourceVersion; a conflict reads again.
async fn write_to<K>(client: &kube::Client, name: &str, batch: &Batch) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = (), Scope = kube::core::ClusterResourceScope>
        + HasDelivery
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::all(client.clone());
    let mut last = None;
    for _ in 0..8 {
        let Some(object) = api.get_opt(name).await? else {
            // Deleted: there is nothing left to record on.
            return Ok(());
        };
        if object.meta().uid.as_deref() != Some(batch.uid.as_str()) {
            // A new object under the same name; the results were about the old one.
            return Ok(());
        }
        let current = object.delivery().cloned().unwrap_or_default();
        let next = batch.apply_to(&current);
        if next == current {
            return Ok(());
        }
        let patch = json!({
            "apiVersion": K::api_version(&()),
            "kind": K::kind(&()),
            "metadata": { "name": name, "resourceVersion": object.meta().resource_version },
            "status": { "delivery": next },
        });
        let params = PatchParams::apply(FIELD_MANAGER).force();
        match api.patch_status(name, &params, &Patch::Apply(&patch)).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => {
                last = Some(kube::Error::Api(status));
            }
            Err(error) => return Err(error),
        }
    }
    match last {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::event::Event;

    fn record(event: &str, recipient: &str) -> NotificationRecord {
        NotificationRecord {
            event: event.into(),
            channel: "mail".into(),
            recipient: recipient.into(),
            outcome: DeliveryOutcome::Sent,
            time: Time("2026-03-02T09:00:00Z".parse().unwrap()),
            attempts: 1,
            error: None,
            ends: None,
        }
    }

    fn key() -> ObjectKey {
        ObjectKey {
            kind: Kind::Request,
            name: "r".into(),
            uid: "u".into(),
        }
    }

    #[test]
    fn merging_keeps_what_is_recorded_and_moves_the_audit_mark_forward_only() {
        let current = Delivery {
            audited_transitions: Some(3),
            notifications: vec![record("activated", "bob@contoso.com")],
            ..Default::default()
        };
        let mut batch = Batch::default();
        batch.add(Update::Notified {
            object: key(),
            record: NotificationRecord {
                attempts: 4,
                ..record("activated", "bob@contoso.com")
            },
        });
        batch.add(Update::Notified {
            object: key(),
            record: record("activated", "carol@contoso.com"),
        });
        batch.add(Update::Audited {
            object: key(),
            upto: 2,
            snapshot: AuditSnapshot::default(),
        });
        let next = batch.apply_to(&current);
        assert_eq!(next.notifications.len(), 2);
        assert_eq!(
            next.notifications[0].attempts, 1,
            "a recorded entry stays as it was"
        );
        assert_eq!(
            next.audited_transitions,
            Some(3),
            "the mark never moves back"
        );
        let mut later = Batch::default();
        later.add(Update::Audited {
            object: key(),
            upto: 5,
            snapshot: AuditSnapshot {
                policy: Some("p".into()),
                ..Default::default()
            },
        });
        batch.merge(later);
        let next = batch.apply_to(&current);
        assert_eq!(next.audited_transitions, Some(5));
        assert_eq!(next.audit.and_then(|a| a.policy).as_deref(), Some("p"));
    }

    #[test]
    fn a_reminder_about_another_end_replaces_the_record_and_one_about_the_same_end_does_not() {
        let end = |s: &str| Some(Time(s.parse().unwrap()));
        let reminder = |ends: Option<Time>, attempts: i32| NotificationRecord {
            ends,
            attempts,
            ..record("eligibilityEnding", "bob@contoso.com")
        };
        let current = Delivery {
            notifications: vec![
                record("eligibleAssigned", "bob@contoso.com"),
                reminder(end("2027-01-01T00:00:00Z"), 1),
            ],
            ..Default::default()
        };
        let after = |record: NotificationRecord| {
            let mut batch = Batch::default();
            batch.add(Update::Notified {
                object: key(),
                record,
            });
            batch.apply_to(&current)
        };
        let same = after(reminder(end("2027-01-01T00:00:00Z"), 2));
        assert_eq!(same, current, "the same end is recorded once, as it was");
        let renewed = after(reminder(end("2027-07-01T00:00:00Z"), 3));
        assert_eq!(renewed.notifications.len(), 2, "one entry per key");
        assert_eq!(renewed.notifications[1].ends, end("2027-07-01T00:00:00Z"));
        assert_eq!(renewed.notifications[1].attempts, 3);
        assert!(renewed.has(
            "eligibilityEnding",
            "mail",
            "bob@contoso.com",
            end("2027-07-01T00:00:00Z").as_ref()
        ));
        assert!(!renewed.has(
            "eligibilityEnding",
            "mail",
            "bob@contoso.com",
            end("2027-01-01T00:00:00Z").as_ref()
        ));
    }

    #[tokio::test]
    async fn known_notifications_are_not_queued_twice_until_the_status_shows_them() {
        let client =
            kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap()))
                .unwrap();
        let outbox = Outbox::start(
            Vec::new(),
            Retry {
                max_attempts: 1,
                initial: Duration::from_secs(1),
                max: Duration::from_secs(1),
            },
            client,
            Arc::new(crate::clock::ManualClock::new(
                "2026-03-02T09:00:00Z".parse().unwrap(),
            )),
        );
        let due = Due {
            event: Event::Activated,
            channel: "mail".into(),
            recipient: "bob@contoso.com".into(),
            ends: None,
        };
        // No such channel: refused, and not remembered.
        let message = Arc::new(crate::notify::message::render(
            Event::Activated,
            &Default::default(),
            "2026-03-02T09:00:00Z".parse().unwrap(),
            vec![],
        ));
        assert!(!outbox.submit(&key(), due.clone(), message));
        assert!(!outbox.is_known("u", &due));
        outbox.mark_audited(&key(), 2, AuditSnapshot::default(), true);
        assert_eq!(outbox.audited("u"), 2);
        let recorded = Delivery {
            audited_transitions: Some(2),
            ..Default::default()
        };
        outbox.settle("u", Some(&recorded));
        assert_eq!(outbox.audited("u"), 0);
        outbox.shutdown(Duration::from_millis(100)).await;
    }

    /// A channel whose send panics, as a bug in a channel would.
    struct Panicking;

    #[async_trait::async_trait]
    impl super::super::channel::Channel for Panicking {
        fn kind(&self) -> &'static str {
            "webhook"
        }

        fn audience(&self) -> super::super::plan::Audience {
            super::super::plan::Audience::PerRecipient
        }

        async fn send(&self, _: &Message, _: &str, _: &str) -> Result<(), SendError> {
            panic!("channel bug")
        }
    }

    // Issue 22: a delivery task that panicked was lost silently, and stayed "known", so no
    // reconcile queued it again for the rest of the term.
    #[tokio::test]
    async fn a_panicking_send_is_queued_again_a_few_times_then_given_up() {
        let client =
            kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap()))
                .unwrap();
        let outbox = Outbox::start(
            vec![Configured {
                name: "mail".into(),
                channel: Arc::new(Panicking),
                events: vec![Event::Activated],
                concurrency: 1,
            }],
            Retry {
                max_attempts: 1,
                initial: Duration::from_secs(1),
                max: Duration::from_secs(1),
            },
            client,
            Arc::new(crate::clock::ManualClock::new(
                "2026-03-02T09:00:00Z".parse().unwrap(),
            )),
        );
        let due = Due {
            event: Event::Activated,
            channel: "mail".into(),
            recipient: "bob@contoso.com".into(),
            ends: None,
        };
        let message = Arc::new(crate::notify::message::render(
            Event::Activated,
            &Default::default(),
            "2026-03-02T09:00:00Z".parse().unwrap(),
            vec![],
        ));
        assert!(outbox.submit(&key(), due.clone(), message.clone()));
        let forgotten = async {
            while outbox.is_known("u", &due) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), forgotten)
            .await
            .expect("the panicked notification is still known");
        assert!(
            outbox.submit(&key(), due.clone(), message.clone()),
            "queued again"
        );
        // A channel that always panics is not retried without end: after a few, it stays known.
        // Submitted twice so far (each attempt panics).
        let mut submitted = 2;
        for _ in 0..10 {
            let settled = async {
                while outbox.is_known("u", &due) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            };
            if tokio::time::timeout(Duration::from_millis(500), settled)
                .await
                .is_err()
            {
                break;
            }
            assert!(outbox.submit(&key(), due.clone(), message.clone()));
            submitted += 1;
        }
        assert_eq!(submitted, PANICS_BEFORE_GIVING_UP);
        assert!(!outbox.submit(&key(), due.clone(), message), "given up");
        outbox.shutdown(Duration::from_millis(100)).await;
    }
}
