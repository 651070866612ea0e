//! The delivery controller: everything the objects' status changes should cause outside the
//! cluster, kept apart from the reconcilers that decide access, so none of it can delay them.
//!
//! For each ActivationRequest, on every change and at the next deadline:
//! 1. notifications: the events its status shows, who hears about each by the policy's matrix,
//!    minus what `status.delivery` records or the outbox holds, go to the outbox;
//! 2. audit: transitions of `status.history` past the recorded mark are emitted to the audit
//!    sinks, and the new mark goes to the outbox's recorder;
//! 3. retention: a finished request past its policy's retention, fully audited, is deleted.
//!
//! For each EligibleAssignment: the "eligible assigned" / "active assigned" notification once
//! it is in effect, and the "eligibility ending" reminder its policy's lead before its end,
//! woken for at that time.
//!
//! For each AccessReview: its reviewers are told when an instance starts, reminded its
//! `remindBefore` ahead of the end while assignments are undecided, and told the outcome.
//!
//! `status.delivery` is written only by the outbox's recorder, under its own field manager.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use jiff::Timestamp;
use kube::runtime::Controller;
use kube::runtime::controller::{Action, Config as ControllerConfig};
use kube::runtime::reflector::ObjectRef;
use tokio_util::sync::CancellationToken;

use super::context::Context;
use super::error::Error;
use super::retention::{self, Verdict};
use crate::api::access_policy::NotificationSettings;
use crate::api::activation_request::{ActivationRequestStatus, Phase};
use crate::api::common::{Principal, PrincipalRef};
use crate::api::{AccessReview, ActivationRequest, EligibleAssignment};
use crate::audit::record;
use crate::audit::sink::AuditSinks;
use crate::core::policy::{DEFAULT_ELIGIBILITY_ENDING_LEAD, DEFAULT_EXPIRING_SOON_LEAD};
use crate::engine::Catalog;
use crate::lenient::Lenient;
use crate::notify::Notifier;
use crate::notify::channel::graph::{GraphChannel, GraphMail};
use crate::notify::channel::{Channel, SendError};
use crate::notify::config::GraphConfig;
use crate::notify::message::{About, render};
use crate::notify::outbox::{HasDelivery, Kind, ObjectKey};
use crate::notify::plan;

/// How long a stopping leader waits for sends under way and their records.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(10);

pub struct Delivery {
    ctx: Arc<Context>,
    notifier: Notifier,
    /// `None` when the sinks could not be set up: then nothing counts as audited, and
    /// retention waits.
    audit: Option<Arc<AuditSinks>>,
    retention: bool,
    /// Failed audit emissions per request uid in this term, for `retryCount` and backoff.
    audit_failures: Mutex<HashMap<String, u32>>,
}

/// A Graph `sendMail` channel on the `entra` directory connection its config names: the
/// directory's own Graph client, so mail and membership share one token cache, one concurrency
/// limit and one throttling pause, as Graph throttles them together.
fn graph_channel(ctx: &Context, config: &GraphConfig) -> Option<Arc<dyn Channel>> {
    let mailer = ctx
        .directories
        .graph_mailer(&config.directory)?
        .with_metrics(ctx.metrics.clone());
    let mailer: Arc<dyn GraphMail> = Arc::new(EntraMail(mailer));
    Some(Arc::new(GraphChannel::new(mailer, config.from.clone())))
}

/// The Entra connection's `sendMail`, as the notifier's Graph channel sends: directory errors
/// become delivery errors, throttling keeping its wait.
struct EntraMail(crate::directory::entra::GraphMailer);

#[async_trait::async_trait]
impl GraphMail for EntraMail {
    async fn send(
        &self,
        from: &str,
        to: &[String],
        subject: &str,
        html: &str,
    ) -> Result<(), SendError> {
        use crate::directory::DirectoryError;
        self.0
            .send(from, to, subject, html)
            .await
            .map_err(|error| match error {
                DirectoryError::Transient {
                    retry_after,
                    message,
                    ..
                } => SendError::Transient {
                    message: format!("Graph sendMail: {message}"),
                    retry_after,
                },
                DirectoryError::Permanent { message, .. } => {
                    SendError::permanent(format!("Graph sendMail: {message}"))
                }
            })
    }
}

/// Runs the delivery controllers over the shared watches until `stop`, then drains the outbox.
pub async fn run(
    ctx: Arc<Context>,
    requests: impl Stream<Item = Arc<Lenient<ActivationRequest>>> + Send + 'static,
    assignments: impl Stream<Item = Arc<Lenient<EligibleAssignment>>> + Send + 'static,
    reviews: impl Stream<Item = Arc<Lenient<AccessReview>>> + Send + 'static,
    stop: CancellationToken,
) {
    let config = &ctx.settings.config;
    let delivery = Delivery::start(ctx.clone());
    let controller_config = ControllerConfig::default().concurrency(config.concurrency);
    let request_controller = Controller::for_shared_stream(requests, ctx.stores.requests.clone())
        .with_config(controller_config.clone())
        .reconcile_all_on(super::clock_jumps(ctx.clock.as_ref()))
        .graceful_shutdown_on(stop.clone().cancelled_owned())
        .run(reconcile_request, error_policy, delivery.clone())
        .for_each(|_| async {});
    let assignment_controller =
        Controller::for_shared_stream(assignments, ctx.stores.assignments.clone())
            .with_config(controller_config.clone())
            .reconcile_all_on(super::clock_jumps(ctx.clock.as_ref()))
            .graceful_shutdown_on(stop.clone().cancelled_owned())
            .run(reconcile_assignment, error_policy, delivery.clone())
            .for_each(|_| async {});
    let review_controller = Controller::for_shared_stream(reviews, ctx.stores.reviews.clone())
        .with_config(controller_config)
        .reconcile_all_on(super::clock_jumps(ctx.clock.as_ref()))
        .graceful_shutdown_on(stop.clone().cancelled_owned())
        .run(reconcile_review, error_policy, delivery.clone())
        .for_each(|_| async {});
    tokio::select! {
        _ = futures::future::join3(request_controller, assignment_controller, review_controller) => {}
        _ = stop.cancelled() => {}
    }
    delivery.notifier.outbox.shutdown(DRAIN_LIMIT).await;
}

impl Delivery {
    /// The notifier (its outbox running) and the audit sinks of `ctx`'s config.
    pub fn start(ctx: Arc<Context>) -> Arc<Delivery> {
        let config = &ctx.settings.config;
        let notifier = Notifier::start(
            &config.notifications,
            ctx.client.clone(),
            ctx.clock.clone(),
            &|graph| graph_channel(&ctx, graph),
        );
        let audit = ctx.audit.clone();
        Arc::new(Delivery {
            notifier,
            audit,
            retention: config.audit.retention.enabled,
            audit_failures: Mutex::new(HashMap::new()),
            ctx,
        })
    }
}

pub fn error_policy<K: kube::Resource<DynamicType = ()>>(
    object: Arc<Lenient<K>>,
    error: &Error,
    delivery: Arc<Delivery>,
) -> Action {
    super::context::back_off(
        &pass_kind::<K>(),
        object.metadata.name.as_deref(),
        error,
        &delivery.ctx,
    )
}

/// The kind a delivery pass over `K` logs and backs off under (`ActivationRequestDelivery`):
/// a request and an assignment of one name fail apart, and the log says which failed.
fn pass_kind<K: kube::Resource<DynamicType = ()>>() -> String {
    format!("{}Delivery", K::kind(&()))
}

fn earliest(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The notification matrix, approvers and reminder leads of the policy behind (group, role).
struct PolicyView {
    settings: Option<NotificationSettings>,
    approvers: Vec<PrincipalRef>,
    allow_self_approval: bool,
    lead: jiff::SignedDuration,
    /// How long before an assignment's end its reminder goes out.
    eligibility_ending_lead: jiff::SignedDuration,
}

fn policy_view(catalog: &Catalog, group: &str, role: crate::api::common::Role) -> PolicyView {
    let settings = catalog
        .policy_name(group, role)
        .and_then(|name| catalog.policies.get(name))
        .and_then(|p| p.spec.notifications.clone());
    let target = catalog.target(group, role);
    let policy = target.policy();
    PolicyView {
        settings,
        approvers: policy
            .and_then(|p| p.approval.as_ref())
            .map(|a| a.approvers.clone())
            .unwrap_or_default(),
        allow_self_approval: policy
            .and_then(|p| p.approval.as_ref())
            .is_some_and(|a| a.allow_self_approval),
        lead: policy.map_or(DEFAULT_EXPIRING_SOON_LEAD, |p| p.expiring_soon_lead),
        eligibility_ending_lead: policy.map_or(DEFAULT_ELIGIBILITY_ENDING_LEAD, |p| {
            p.eligibility_ending_lead
        }),
    }
}

/// What the delivery decisions need around one object: its PimGroup, the group's policies and
/// the matched assignment, looked up by name in the caches. Unlike `Stores::catalog_for`, it
/// does not gather the group's requests and assignments, which nothing here needs.
fn surroundings(ctx: &Context, group: &str, assignment: Option<&str>) -> Catalog {
    let mut catalog = Catalog::default();
    let Some(pim_group) = ctx
        .stores
        .groups
        .get(&ObjectRef::new(group))
        .and_then(|g| g.parsed.clone().ok())
    else {
        return catalog;
    };
    let roles = &pim_group.spec.roles;
    let policies = std::iter::once(roles.member.policy.as_str())
        .chain(roles.owner.as_ref().map(|o| o.policy.as_str()));
    for name in policies {
        if let Some(policy) = ctx
            .stores
            .policies
            .get(&ObjectRef::new(name))
            .and_then(|p| p.parsed.clone().ok())
        {
            catalog.insert_policy(policy);
        }
    }
    catalog.insert_group(pim_group);
    if let Some(assignment) = assignment
        .and_then(|a| ctx.stores.assignments.get(&ObjectRef::new(a)))
        .and_then(|a| a.parsed.clone().ok())
    {
        catalog.insert_assignment(assignment);
    }
    catalog
}

fn key_of<K: kube::Resource>(object: &K, kind: Kind) -> Option<ObjectKey> {
    Some(ObjectKey {
        kind,
        name: object.meta().name.clone()?,
        uid: object.meta().uid.clone()?,
    })
}

/// A pass that succeeds ends the object's run of failures (see `context::back_off`).
async fn reset_on_success(
    kind: &str,
    name: Option<String>,
    delivery: &Delivery,
    pass: impl std::future::Future<Output = Result<Action, Error>>,
) -> Result<Action, Error> {
    let result = pass.await;
    if result.is_ok() {
        delivery
            .ctx
            .failures
            .succeeded(kind, name.as_deref().unwrap_or_default());
    }
    result
}

/// One request's notifications, audit records and retention.
pub async fn reconcile_request(
    object: Arc<Lenient<ActivationRequest>>,
    delivery: Arc<Delivery>,
) -> Result<Action, Error> {
    let name = object.metadata.name.clone();
    reset_on_success(
        &pass_kind::<ActivationRequest>(),
        name,
        &delivery.clone(),
        deliver_request(object, delivery),
    )
    .await
}

async fn reconcile_assignment(
    object: Arc<Lenient<EligibleAssignment>>,
    delivery: Arc<Delivery>,
) -> Result<Action, Error> {
    let name = object.metadata.name.clone();
    reset_on_success(
        &pass_kind::<EligibleAssignment>(),
        name,
        &delivery.clone(),
        deliver_assignment(object, delivery),
    )
    .await
}

async fn deliver_request(
    object: Arc<Lenient<ActivationRequest>>,
    delivery: Arc<Delivery>,
) -> Result<Action, Error> {
    let Ok(request) = object.parsed.as_deref() else {
        return Ok(Action::await_change());
    };
    let Some(key) = key_of(request, Kind::Request) else {
        return Ok(Action::await_change());
    };
    let ctx = &delivery.ctx;
    let now = ctx.now();
    let empty = ActivationRequestStatus::default();
    let status = request.status.as_ref().unwrap_or(&empty);
    let catalog = surroundings(
        ctx,
        &request.spec.group,
        status.matched_assignment.as_deref(),
    );
    let outbox = &delivery.notifier.outbox;
    outbox.settle(&key.uid, request.delivery());

    let mut next = None;
    if delivery.notifier.enabled() && request.metadata.deletion_timestamp.is_none() {
        next = notify_request(&delivery.notifier, &key, request, status, &catalog, now);
    }
    let audit_retry = emit_audit(&delivery, &key, request, status, &catalog).await;
    if delivery.retention {
        let verdict = retention::decide(request, retention::retention_of(&catalog, request), now);
        match verdict {
            // An open extension proves its grant from its whole chain: keep it while one runs.
            Verdict::Delete if extended_by_open_request(ctx, request) => {
                next = earliest(next, Some(crate::core::time::add(now, EXTENSION_RECHECK)));
            }
            Verdict::Delete => {
                retention::delete(&ctx.client, request).await?;
                tracing::info!(request = %key.name, "deleted: finished, audited, and past its retention");
                return Ok(Action::await_change());
            }
            Verdict::KeepUntil(due) => next = earliest(next, Some(due)),
            Verdict::Keep | Verdict::WaitForAudit => {}
        }
    }
    Ok(Action::requeue(match audit_retry {
        Some(wait) => wait.min(ctx.requeue_for(next)),
        None => ctx.requeue_for(next),
    }))
}

/// How often a request past its retention is looked at again while an extension of it runs.
const EXTENSION_RECHECK: jiff::SignedDuration = jiff::SignedDuration::from_hours(1);

/// Whether an open request of the same group extends `request`, directly or through finished
/// extensions (`spec.extends`): an extension proves its grant from every link of its chain.
fn extended_by_open_request(ctx: &Context, request: &ActivationRequest) -> bool {
    let Some(name) = request.metadata.name.as_deref() else {
        return false;
    };
    let mut extensions: HashMap<&str, Vec<(&str, bool)>> = HashMap::new();
    let group = ctx.stores.requests_of(&request.spec.group);
    for r in &group {
        if let (Some(o), Some(n)) = (r.object(), r.metadata.name.as_deref())
            && let Some(of) = o.spec.extends.as_deref()
        {
            extensions.entry(of).or_default().push((n, o.is_open()));
        }
    }
    let mut links = vec![name];
    for _ in 0..crate::core::extension::MAX_CHAIN {
        let next: Vec<(&str, bool)> = links
            .iter()
            .flat_map(|l| extensions.get(l).into_iter().flatten().copied())
            .collect();
        if next.iter().any(|(_, open)| *open) {
            return true;
        }
        links = next.into_iter().map(|(n, _)| n).collect();
        if links.is_empty() {
            break;
        }
    }
    false
}

/// Queues the notifications due for a request; returns when to look again for the reminder.
fn notify_request(
    notifier: &Notifier,
    key: &ObjectKey,
    request: &ActivationRequest,
    status: &ActivationRequestStatus,
    catalog: &Catalog,
    now: Timestamp,
) -> Option<Timestamp> {
    let spec = &request.spec;
    let policy = policy_view(catalog, &spec.group, spec.role());
    let events = plan::request_events(status, policy.lead, now);
    let subject = spec
        .principal
        .as_deref()
        .or_else(|| spec.requester.as_ref().map(|r| r.username.as_str()));
    // Nobody is asked to approve their own request, unless the policy allows it.
    let approvers: Vec<PrincipalRef> = policy
        .approvers
        .iter()
        .filter(|a| {
            policy.allow_self_approval
                || !matches!(a.resolve(), Some(Principal::User(name)) if Some(name) == subject)
        })
        .cloned()
        .collect();
    submit_occurrences(
        notifier,
        key,
        &events.occurrences,
        request.delivery(),
        |occurrence| plan::recipients(occurrence, policy.settings.as_ref(), subject, &approvers),
        || About::request(request),
        now,
    );
    events.next
}

/// The principal's id in the group's directory (an Entra object id, an LDAP DN), when the
/// directory can tell; a failed lookup leaves it out of this record, not the record out.
async fn principal_id(
    ctx: &Context,
    request: &ActivationRequest,
    snapshot: &crate::api::delivery::AuditSnapshot,
) -> Option<String> {
    let principal = request.spec.principal.clone()?;
    let directory = ctx.directories.get(snapshot.directory.as_deref()?)?;
    let member = crate::core::membership::Member::User(principal);
    match directory.principal_id(&member).await {
        // Kept within the status field's limit, so the record is never refused for it.
        Ok(id) => id.map(|id| id.chars().take(crate::api::common::PRINCIPAL_MAX).collect()),
        Err(error) => {
            tracing::debug!(%member, %error, "no directory id for the audit record");
            None
        }
    }
}

/// Emits the audit records of the transitions not yet out; on failure, how long to wait.
async fn emit_audit(
    delivery: &Delivery,
    key: &ObjectKey,
    request: &ActivationRequest,
    status: &ActivationRequestStatus,
    catalog: &Catalog,
) -> Option<Duration> {
    let sinks = delivery.audit.as_ref()?;
    let outbox = &delivery.notifier.outbox;
    let total = status.history.len();
    let recorded = request.delivery();
    let from = recorded
        .map_or(0, |d| d.audited())
        .max(outbox.audited(&key.uid));
    if from >= total {
        return None;
    }
    let stored = recorded.and_then(|d| d.audit.as_ref());
    let failures = delivery
        .audit_failures
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&key.uid)
        .copied()
        .unwrap_or(0);
    let mfa = Some(delivery.ctx.attestor.mfa_verified(request));
    let mut snapshot = record::snapshot(request, catalog, mfa, stored);
    if snapshot.principal_id.is_none() {
        snapshot.principal_id = principal_id(&delivery.ctx, request, &snapshot).await;
    }
    let retries = stored
        .and_then(|s| s.retries)
        .and_then(|r| u32::try_from(r).ok())
        .unwrap_or(0)
        .saturating_add(failures);
    snapshot.retries = Some(i32::try_from(retries).unwrap_or(i32::MAX));
    let records = record::records(request, &snapshot, from..total, retries);
    match sinks.emit(&records).await {
        Ok(()) => {
            delivery
                .audit_failures
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&key.uid);
            let finished = status.phase.is_some_and(Phase::is_terminal);
            outbox.mark_audited(key, total, snapshot, finished);
            None
        }
        Err(error) => {
            let failures = failures.saturating_add(1);
            delivery
                .audit_failures
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key.uid.clone(), failures);
            let wait = Duration::from_secs(1)
                .saturating_mul(2u32.saturating_pow(failures.min(8)))
                .min(Duration::from_secs(300));
            tracing::warn!(request = %key.name, %error, attempt = failures, "audit records not emitted; retrying in {wait:?}");
            Some(wait)
        }
    }
}

/// Queues each occurrence's notifications not yet sent, recorded or under way, to the people
/// `audience` names for it; the message is rendered once, about `about()`.
fn submit_occurrences(
    notifier: &Notifier,
    key: &ObjectKey,
    occurrences: &[plan::Occurrence],
    recorded: Option<&crate::api::delivery::Delivery>,
    audience: impl Fn(&plan::Occurrence) -> std::collections::BTreeSet<String>,
    about: impl Fn() -> About,
    now: Timestamp,
) {
    let outbox = &notifier.outbox;
    let done =
        |d: &plan::Due| recorded.is_some_and(|r| d.recorded_in(r)) || outbox.is_known(&key.uid, d);
    let mut rendered = None;
    for occurrence in occurrences {
        let people = audience(occurrence);
        let due = plan::due(
            occurrence,
            &people,
            outbox.channels(),
            &done,
            notifier.limits(),
            now,
        );
        if due.is_empty() {
            continue;
        }
        let about = rendered.get_or_insert_with(&about);
        let message = Arc::new(render(
            occurrence.event,
            about,
            occurrence.at,
            people.into_iter().collect(),
        ));
        for item in due {
            outbox.submit(key, item, message.clone());
        }
    }
}

async fn reconcile_review(
    object: Arc<Lenient<AccessReview>>,
    delivery: Arc<Delivery>,
) -> Result<Action, Error> {
    let name = object.metadata.name.clone();
    reset_on_success(
        &pass_kind::<AccessReview>(),
        name,
        &delivery.clone(),
        deliver_review(object, delivery),
    )
    .await
}

/// An access review's reviewers: told when an instance starts, reminded before its end while
/// assignments are undecided (only those who may decide them), and told the outcome.
async fn deliver_review(
    object: Arc<Lenient<AccessReview>>,
    delivery: Arc<Delivery>,
) -> Result<Action, Error> {
    let notifier = &delivery.notifier;
    if !notifier.enabled() {
        return Ok(Action::await_change());
    }
    let Ok(review) = object.parsed.as_deref() else {
        return Ok(Action::await_change());
    };
    let Some(key) = key_of(review, Kind::Review) else {
        return Ok(Action::await_change());
    };
    let ctx = &delivery.ctx;
    let now = ctx.now();
    let outbox = &notifier.outbox;
    outbox.settle(&key.uid, review.delivery());
    let Some(status) = review
        .status
        .as_ref()
        .filter(|_| review.metadata.deletion_timestamp.is_none())
    else {
        return Ok(Action::await_change());
    };
    let remind_before = crate::engine::review::settings(&review.spec)
        .map_or(crate::engine::review::DEFAULT_REMIND_BEFORE, |s| {
            s.remind_before
        });
    let events = plan::review_events(status, remind_before, now);
    // The groups and policies say who the policy approvers are.
    let mut catalog = Catalog::default();
    for g in ctx.stores.groups.state() {
        if let Ok(group) = &g.parsed {
            catalog.insert_group(group.clone());
        }
    }
    for p in ctx.stores.policies.state() {
        if let Ok(policy) = &p.parsed {
            catalog.insert_policy(policy.clone());
        }
    }
    let items = status
        .current
        .as_ref()
        .map(|c| c.items.clone())
        .unwrap_or_default();
    let audience = |occurrence: &plan::Occurrence| {
        // A reminder goes only to those with decisions left.
        let concerned: Vec<_> = items
            .iter()
            .filter(|i| {
                occurrence.event != crate::notify::Event::ReviewReminder || i.decision.is_none()
            })
            .cloned()
            .collect();
        crate::engine::review::reviewers_of(&catalog, &review.spec, &concerned)
            .iter()
            .filter_map(|p| p.user.clone().or_else(|| p.group.clone()))
            .collect()
    };
    submit_occurrences(
        notifier,
        &key,
        &events.occurrences,
        review.delivery(),
        audience,
        || About::review(review),
        now,
    );
    Ok(Action::requeue(ctx.requeue_for(events.next)))
}

async fn deliver_assignment(
    object: Arc<Lenient<EligibleAssignment>>,
    delivery: Arc<Delivery>,
) -> Result<Action, Error> {
    let notifier = &delivery.notifier;
    if !notifier.enabled() {
        return Ok(Action::await_change());
    }
    let Ok(assignment) = object.parsed.as_deref() else {
        return Ok(Action::await_change());
    };
    let Some(key) = key_of(assignment, Kind::Assignment) else {
        return Ok(Action::await_change());
    };
    let ctx = &delivery.ctx;
    let now = ctx.now();
    let outbox = &notifier.outbox;
    outbox.settle(&key.uid, assignment.delivery());
    if assignment.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let spec = &assignment.spec;
    let catalog = surroundings(ctx, &spec.group, None);
    let policy = policy_view(&catalog, &spec.group, spec.role);
    let events = plan::assignment_events(assignment, policy.eligibility_ending_lead, now);
    let subject = spec
        .principal
        .user
        .as_deref()
        .or(spec.principal.group.as_deref());
    submit_occurrences(
        notifier,
        &key,
        &events.occurrences,
        assignment.delivery(),
        |occurrence| plan::recipients(occurrence, policy.settings.as_ref(), subject, &[]),
        || About::assignment(assignment),
        now,
    );
    // Woken at the reminder's time (on a manual clock, by its jumps), not by polling.
    Ok(Action::requeue(ctx.requeue_for(events.next)))
}
