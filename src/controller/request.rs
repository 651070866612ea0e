//! ActivationRequest reconciler: catalog snapshot → engine decision → status, Event, metrics.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::core::Resource;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};

use super::context::{Context, back_off, timed};
use super::error::Error;
use super::ledger;
use super::writes::{
    add_finalizer, apply_status, has_finalizer, remove_finalizer, report_malformed,
};
use crate::api::ActivationRequest;
use crate::api::activation_request::Phase;
use crate::api::conditions::types;
use crate::core::membership::Member;
use crate::core::status::merge_conditions;
use crate::engine::{DirectoryObservation, RequestOutcome, reconcile_request};
use crate::lenient::Lenient;

pub const KIND: &str = "ActivationRequest";

/// How long a request whose grant is due now waits for the directory before it writes
/// `Scheduled`. The group adds the member from the request's signed inputs, not its status;
/// when the add is confirmed within this time, the request goes to Active in one status write
/// and one Event rather than two of each (issue 21, item 2).
pub const HOLD_FOR_THE_ADD: Duration = Duration::from_secs(3);

/// When each request (by uid) started waiting for its add, in this process.
#[derive(Debug, Default)]
pub struct GrantHolds {
    since: Mutex<HashMap<String, Instant>>,
}

impl GrantHolds {
    /// How much longer `uid` may wait for its add; its wait starts on the first call.
    fn remaining(&self, uid: &str) -> Option<Duration> {
        let mut since = self.since.lock().unwrap_or_else(|e| e.into_inner());
        let started = *since.entry(uid.to_owned()).or_insert_with(Instant::now);
        HOLD_FOR_THE_ADD
            .checked_sub(started.elapsed())
            .filter(|left| !left.is_zero())
    }

    fn release(&self, uid: &str) {
        self.since
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(uid);
    }
}

pub async fn reconcile(
    object: Arc<Lenient<ActivationRequest>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    timed(
        KIND,
        &ctx,
        object.metadata.name.as_deref(),
        reconcile_request_object(&object, &ctx),
    )
    .await
}

pub fn error_policy(
    object: Arc<Lenient<ActivationRequest>>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    back_off(KIND, object.metadata.name.as_deref(), error, &ctx)
}

async fn reconcile_request_object(
    object: &Lenient<ActivationRequest>,
    ctx: &Context,
) -> Result<Action, Error> {
    // Whether an end is confirmed comes from the ledger: never decide on one not yet read.
    ctx.ledger_ready().await;
    let now = ctx.now();
    let Ok(request) = object.parsed.as_deref() else {
        report_malformed(&ctx.client, object, types::VALIDATED, now).await?;
        return Ok(Action::await_change());
    };
    let terminal = request
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .is_some_and(Phase::is_terminal);
    let deleting = request.meta().deletion_timestamp.is_some();
    // A live request being deleted is first ended (reason Deleted) below, so its end is a
    // transition with an audit record; then the finalizer goes.
    let uid = request.metadata.uid.as_deref().unwrap_or_default();
    if deleting && (terminal || !has_finalizer(request)) {
        ctx.grant_holds.release(uid);
        return finalize(object, request, ctx).await;
    }
    if !deleting && !has_finalizer(request) && !terminal {
        // The patch comes back as a watch event, which reconciles again with the finalizer set.
        add_finalizer(&ctx.client, object).await?;
        return Ok(Action::await_change());
    }

    let catalog = ctx.stores.catalog_for(&request.spec.group);
    let spec = &request.spec;
    let principal = Member::User(spec.principal.clone().unwrap_or_default());
    let member_present = ctx
        .membership
        .contains(&spec.group, spec.role(), &principal)
        .unwrap_or(false);
    let requester_groups = spec
        .requester
        .as_ref()
        .map(|r| r.groups.clone())
        .unwrap_or_default();
    let directory_groups = directory_groups_of(ctx, &catalog, request, &requester_groups).await?;
    let is_member_of = |group: &str| {
        requester_groups.iter().any(|g| g == group) || directory_groups.iter().any(|g| g == group)
    };
    let observation = DirectoryObservation {
        member_present,
        access_held: ledger::holds(&ctx.stores, &ctx.ledger, &spec.group, uid),
        removal_confirmed_at: ctx.ledger.removal_confirmed_at(uid),
        revocation_grace: jiff::SignedDuration::try_from(ctx.settings.revocation_grace)
            .unwrap_or(jiff::SignedDuration::from_secs(30)),
        removal_refused: ctx
            .membership
            .removal_refused(&spec.group, spec.role(), &principal),
    };
    let mut outcome = reconcile_request(
        &catalog,
        request,
        ctx.attestor.as_ref(),
        observation,
        &is_member_of,
        now,
    );
    raise_alerts(ctx, &catalog, request, &mut outcome, now);
    if !outcome.decision.not_proven.is_empty() {
        report_not_proven(object, request, &outcome.decision.not_proven, ctx).await;
    }
    let due_now = matches!(outcome.transition, Some((_, Phase::Scheduled)))
        && !member_present
        && !deleting
        && outcome.decision.window.is_some_and(|w| w.start <= now);
    if due_now && let Some(left) = ctx.grant_holds.remaining(uid) {
        // The group adds the member now; its pass wakes this request, which then writes
        // Active. Past the hold, Scheduled is written as the directory is slow.
        ctx.trigger_groups([spec.group.clone()]);
        return Ok(Action::requeue(left));
    }
    ctx.grant_holds.release(uid);
    if outcome.status_changed(request.status.as_ref()) {
        // `status.delivery` belongs to the notifier's field manager: never applied from here.
        let status = crate::api::ActivationRequestStatus {
            delivery: None,
            // And `status.directory` to the group controller's.
            directory: None,
            ..outcome.status.clone()
        };
        ctx.request_status_writes.wrote(
            &request.meta().name.clone().unwrap_or_default(),
            super::wakes::request_status_fingerprint(Some(&status)),
        );
        apply_status(&ctx.client, object, &status).await?;
    }
    if let Some((from, to)) = outcome.transition {
        record_transition(object, request, &outcome, from, to, ctx).await;
    }
    Ok(Action::requeue(
        ctx.requeue_for(outcome.decision.next_deadline),
    ))
}

/// Adds the policy's alerts the activation raises to the status this pass writes (once raised,
/// an alert stays: conditions merge by type), counting each the first time this process sees
/// it.
fn raise_alerts(
    ctx: &Context,
    catalog: &crate::engine::Catalog,
    request: &ActivationRequest,
    outcome: &mut crate::engine::RequestOutcome,
    now: jiff::Timestamp,
) {
    let raised = crate::engine::alerts::request_alerts(catalog, request, &outcome.status);
    let stored = request
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let new: Vec<_> = raised
        .into_iter()
        .filter(|alert| {
            !stored
                .iter()
                .any(|c| c.type_ == alert.type_ && c.status == "True")
        })
        .collect();
    if new.is_empty() {
        return;
    }
    let uid = request.metadata.uid.as_deref().unwrap_or_default();
    for alert in new.iter().filter(|a| ctx.alerts.first_raise(uid, a.type_)) {
        ctx.metrics.alert_raised(alert.type_);
        tracing::warn!(request = %request.metadata.name.as_deref().unwrap_or_default(), alert = alert.type_, "{}", alert.message);
    }
    outcome.status.conditions = merge_conditions(
        &outcome.status.conditions,
        &new,
        request.metadata.generation,
        now,
    );
}

/// The directory groups of the requester's group-principal assignments that the PimGroup's
/// directory says the principal belongs to (nested groups included, where the backend can tell).
/// Asked only while the request can still be granted; a failed lookup counts as "not a member".
async fn directory_groups_of(
    ctx: &Context,
    catalog: &crate::engine::Catalog,
    request: &ActivationRequest,
    known: &[String],
) -> Result<Vec<String>, Error> {
    let spec = &request.spec;
    let finished = request
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .is_some_and(Phase::is_terminal);
    let (Some(principal), Some(group)) =
        (spec.principal.as_deref(), catalog.groups.get(&spec.group))
    else {
        return Ok(Vec::new());
    };
    let Some(directory) = ctx.directories.get(&group.spec.directory) else {
        return Ok(Vec::new());
    };
    if finished {
        return Ok(Vec::new());
    }
    let wanted: std::collections::BTreeSet<&str> = catalog
        .assignments
        .values()
        .filter(|a| a.spec.group == spec.group && a.spec.role == spec.role())
        .filter_map(|a| a.spec.principal.group.as_deref())
        .filter(|g| !known.iter().any(|k| k == g))
        .collect();
    let uid = request.metadata.uid.clone().unwrap_or_default();
    let before: Option<Vec<String>> = ctx
        .principal_groups
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&uid)
        .cloned();
    let looked_up = before.is_some();
    let before = before.unwrap_or_default();
    let mut members = Vec::new();
    for directory_group in wanted {
        match directory.is_member_of(principal, directory_group).await {
            Ok(Some(true)) => members.push(directory_group.to_owned()),
            Ok(_) => {}
            Err(error) => {
                // A failed lookup is no answer: keep the last one rather than revoke on it,
                // and with none, decide nothing yet.
                if !looked_up {
                    return Err(error.into());
                }
                tracing::warn!(%principal, %directory_group, %error, "group membership lookup failed; keeping the last answer");
                if before.iter().any(|g| g == directory_group) {
                    members.push(directory_group.to_owned());
                }
            }
        }
    }
    if !uid.is_empty() {
        ctx.principal_groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(uid, members.clone());
    }
    Ok(members)
}

/// The stored status claimed more than the signed inputs prove: someone wrote it around the
/// controller. The decision ignored it and its status write corrects it; this tells people
/// (a Warning Event, and an audit line).
async fn report_not_proven(
    object: &Lenient<ActivationRequest>,
    request: &ActivationRequest,
    claims: &[String],
    ctx: &Context,
) {
    let name = request.meta().name.clone().unwrap_or_default();
    let summary = claims.join("; ");
    tracing::warn!(
        target: crate::audit::sink::TARGET,
        kind = crate::api::conditions::event_reasons::STATUS_NOT_PROVEN,
        request = %name,
        group = %request.spec.group,
        principal = request.spec.principal.as_deref().unwrap_or_default(),
        claims = %summary,
        "the stored status claimed more than the signed approvals prove; corrected (tampering, or a policy change since it was written)"
    );
    let event = Event {
        type_: EventType::Warning,
        reason: crate::api::conditions::event_reasons::STATUS_NOT_PROVEN.to_owned(),
        note: Some(
            format!("status corrected: {summary}")
                .chars()
                .take(1024)
                .collect(),
        ),
        action: "Correct".to_owned(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &object.object_ref(&())).await {
        tracing::debug!(%error, "could not publish an Event");
    }
}

/// A request being deleted gives up its grant; the finalizer stays until the directory no longer
/// lists the principal (or another grant keeps them), and until every transition's audit record
/// is out, so deleting a request never erases the proof that it was granted.
async fn finalize(
    object: &Lenient<ActivationRequest>,
    request: &ActivationRequest,
    ctx: &Context,
) -> Result<Action, Error> {
    if !has_finalizer(request) {
        return Ok(Action::await_change());
    }
    let spec = &request.spec;
    let uid = request.metadata.uid.as_deref().unwrap_or_default();
    // The ledger entry is closed once the directory confirmed the removal (or another grant
    // explains the member); while it is open, the request is not done.
    let revoked = !ledger::holds(&ctx.stores, &ctx.ledger, &spec.group, uid);
    if revoked && crate::audit::record::fully_audited(request) {
        ctx.ledger.forget_source(uid);
        ctx.principal_groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(uid);
        remove_finalizer(&ctx.client, object).await?;
        return Ok(Action::await_change());
    }
    // The group controller sees the deletion and removes the member, and the notifier records
    // the audit trail; both wake us.
    Ok(Action::requeue(std::time::Duration::from_secs(5)))
}

async fn record_transition(
    object: &Lenient<ActivationRequest>,
    request: &ActivationRequest,
    outcome: &RequestOutcome,
    from: Option<Phase>,
    to: Phase,
    ctx: &Context,
) {
    let decision = &outcome.decision;
    let metrics = &ctx.metrics;
    let created = request.meta().creation_timestamp.as_ref().map(|t| t.0);
    if to.is_terminal() {
        metrics
            .activations
            .get_or_create(&crate::metrics::OutcomeLabels {
                outcome: to.to_string(),
            })
            .inc();
    }
    if from == Some(Phase::PendingApproval)
        && let (Some(approved), Some(created)) = (decision.approved_at, created)
    {
        metrics
            .approval_latency
            .observe(approved.duration_since(created).as_secs_f64().max(0.0));
    }
    if to == Phase::Active
        && let (Some(activated), Some(window)) = (decision.activated_at, decision.window)
    {
        metrics.activation_latency.observe(
            activated
                .duration_since(window.start)
                .as_secs_f64()
                .max(0.0),
        );
    }
    // `active_elevations` is kept by the request watch (controller::run_controllers).

    let type_ = match to {
        Phase::Denied | Phase::TimedOut | Phase::Rejected | Phase::Failed | Phase::Revoked => {
            EventType::Warning
        }
        _ => EventType::Normal,
    };
    let note: String = decision.message.chars().take(1024).collect();
    let event = Event {
        type_,
        reason: decision.reason.to_owned(),
        note: Some(format!(
            "{} → {to}: {note}",
            from.map_or("New".to_owned(), |f| f.to_string())
        )),
        action: to.to_string(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &object.object_ref(&())).await {
        // An Event is a courtesy; the status already says it.
        tracing::debug!(%error, "could not publish an Event");
    }
}
