//! EligibleAssignment reconciler: reports whether the assignment is valid and effective now,
//! and wakes again when its schedule starts or ends.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::core::Resource;
use kube::runtime::controller::Action;

use super::context::{Context, back_off, timed};
use super::error::Error;
use super::writes::{apply_status, report_malformed};
use crate::api::EligibleAssignment;
use crate::api::conditions::{reasons, types};
use crate::api::eligible_assignment::{AssignmentPhase, EligibleAssignmentStatus};
use crate::core::eligibility::AssignmentState;
use crate::core::lifecycle::{ConditionState, ConditionStatus};
use crate::core::status::merge_conditions;
use crate::core::violation::{primary_reason, summarize};
use crate::engine::alerts;
use crate::lenient::Lenient;

pub const KIND: &str = "EligibleAssignment";

pub async fn reconcile(
    object: Arc<Lenient<EligibleAssignment>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    timed(
        KIND,
        &ctx,
        object.metadata.name.as_deref(),
        reconcile_assignment(&object, &ctx),
    )
    .await
}

pub fn error_policy(
    object: Arc<Lenient<EligibleAssignment>>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    back_off(KIND, object.metadata.name.as_deref(), error, &ctx)
}

fn condition(
    type_: &'static str,
    ok: bool,
    reason: &'static str,
    message: impl Into<String>,
) -> ConditionState {
    let status = if ok {
        ConditionStatus::True
    } else {
        ConditionStatus::False
    };
    ConditionState {
        type_,
        status,
        reason,
        message: message.into(),
    }
}

async fn reconcile_assignment(
    object: &Lenient<EligibleAssignment>,
    ctx: &Context,
) -> Result<Action, Error> {
    let now = ctx.now();
    let Ok(assignment) = object.parsed.as_deref() else {
        report_malformed(&ctx.client, object, types::VALID, now).await?;
        return Ok(Action::await_change());
    };
    let name = object.metadata.name.as_deref().unwrap_or_default();
    let catalog = ctx.stores.catalog_for(&assignment.spec.group);
    let stored = assignment.status.clone().unwrap_or_default();
    let (phase, conditions, window) = match catalog.assignment_window(assignment, now) {
        Err(violations) => {
            let message = summarize(&violations);
            let reason = primary_reason(&violations);
            (
                AssignmentPhase::Invalid,
                vec![
                    condition(types::VALID, false, reason, message.clone()),
                    condition(types::EFFECTIVE, false, reason, message),
                ],
                None,
            )
        }
        Ok(window) => {
            let valid_message = window
                .clipped
                .clone()
                .unwrap_or_else(|| "the assignment satisfies its policy".to_owned());
            let valid_reason = if window.clipped.is_some() {
                reasons::EXCEEDS_POLICY
            } else {
                reasons::VALID
            };
            let denied = window.denied.as_ref().filter(|d| d.at <= now);
            let (phase, effective) = match window.state(now) {
                _ if let Some(denial) = denied => (
                    AssignmentPhase::Denied,
                    condition(
                        types::EFFECTIVE,
                        false,
                        reasons::REVIEW_DENIED,
                        format!(
                            "access review {} denied it at {} ({}); it grants nothing: remove its manifest",
                            denial.review, denial.at, denial.by
                        ),
                    ),
                ),
                AssignmentState::NotStarted => (
                    AssignmentPhase::Pending,
                    condition(
                        types::EFFECTIVE,
                        false,
                        reasons::NOT_YET_STARTED,
                        format!("starts at {}", window.start),
                    ),
                ),
                AssignmentState::Effective => (
                    AssignmentPhase::Effective,
                    condition(
                        types::EFFECTIVE,
                        true,
                        reasons::WITHIN_SCHEDULE,
                        window
                            .end
                            .map_or("permanent".to_owned(), |e| format!("until {e}")),
                    ),
                ),
                AssignmentState::Ended => (
                    AssignmentPhase::Expired,
                    condition(
                        types::EFFECTIVE,
                        false,
                        reasons::SCHEDULE_ENDED,
                        window
                            .end
                            .map_or(String::new(), |e| format!("ended at {e}")),
                    ),
                ),
            };
            (
                phase,
                vec![
                    condition(types::VALID, true, valid_reason, valid_message),
                    effective,
                ],
                Some(window),
            )
        }
    };
    let mut conditions = conditions;
    let last_activated = alerts::last_activated(&catalog, assignment);
    // Stale is asked of assignments in effect only; one that ended or is invalid keeps none.
    let effective_since = window
        .as_ref()
        .filter(|_| phase == AssignmentPhase::Effective)
        .map(|w| w.start);
    // Counting begins at the first verdict; a stale assignment keeps its verdict's start.
    let counted_from = match stored.conditions.iter().find(|c| c.type_ == types::STALE) {
        None => Some(now),
        Some(c) if c.status == "False" => Some(c.last_transition_time.0),
        Some(_) => None,
    };
    let staleness = effective_since.and_then(|since| {
        alerts::staleness(
            &catalog,
            assignment,
            Some(since),
            last_activated,
            counted_from,
            now,
        )
    });
    let mut kept = stored.conditions.clone();
    let stale_at = match staleness {
        Some((stale, stale_at)) => {
            let was_stale = kept
                .iter()
                .any(|c| c.type_ == types::STALE && c.status == "True");
            let is_stale = stale.status == ConditionStatus::True;
            // Counted once: not when the cache has yet to show our own write of it.
            let newly = ctx.alerts.set_stale(name, is_stale);
            if newly && !was_stale {
                ctx.metrics.alert_raised(types::STALE);
            }
            conditions.push(stale);
            stale_at
        }
        None => {
            kept.retain(|c| c.type_ != types::STALE);
            ctx.alerts.set_stale(name, false);
            None
        }
    };
    ctx.metrics
        .stale_assignments
        .set(ctx.alerts.stale_count(&ctx.stores));
    let generation = assignment.meta().generation;
    let status = EligibleAssignmentStatus {
        observed_generation: generation,
        phase: Some(phase),
        conditions: merge_conditions(&kept, &conditions, generation, now),
        principal_id: stored.principal_id.clone(),
        effective_start: window.as_ref().map(|w| Time(w.start)),
        effective_end: window.as_ref().and_then(|w| w.end).map(Time),
        last_activated_at: last_activated.map(Time),
        delivery: stored.delivery.clone(),
    };
    if status != stored {
        // `status.delivery` belongs to the notifier's field manager: never applied from here.
        let status = EligibleAssignmentStatus {
            delivery: None,
            ..status
        };
        apply_status(&ctx.client, object, &status).await?;
    }
    let next_change = [window.and_then(|w| w.next_change(now)), stale_at]
        .into_iter()
        .flatten()
        .min();
    // An invalid assignment is looked at again on every jump: its findings are not only
    // about its window.
    let due = if phase == AssignmentPhase::Invalid {
        Some(now)
    } else {
        next_change
    };
    ctx.assignment_due.record(name, due);
    Ok(Action::requeue(ctx.requeue_for(next_change)))
}
