//! Turning a decision into the next stored status. `lastTransitionTime` moves only when a
//! condition's status changes, so re-deciding an unchanged request yields an identical status
//! and the controller can skip the write.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::lifecycle::{ConditionState, Decision};
use crate::api::activation_request::{ActivationRequestStatus, HISTORY_MAX, Transition};

/// Merges desired condition states into the stored list, keyed by type.
pub fn merge_conditions(
    existing: &[Condition],
    desired: &[ConditionState],
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    let mut out: Vec<Condition> = existing
        .iter()
        .filter(|c| !desired.iter().any(|d| d.type_ == c.type_))
        .cloned()
        .collect();
    for want in desired {
        let previous = existing.iter().find(|c| c.type_ == want.type_);
        let last_transition_time = match previous {
            Some(p) if p.status == want.status.as_str() => p.last_transition_time.clone(),
            _ => Time(now),
        };
        out.push(Condition {
            type_: want.type_.to_owned(),
            status: want.status.as_str().to_owned(),
            reason: want.reason.to_owned(),
            message: want.message.clone(),
            observed_generation: generation,
            last_transition_time,
        });
    }
    out.sort_by(|a, b| a.type_.cmp(&b.type_));
    out
}

/// The status to store after `decision`.
pub fn request_status(
    current: &ActivationRequestStatus,
    decision: &Decision,
    generation: Option<i64>,
    now: Timestamp,
) -> ActivationRequestStatus {
    let mut history = current.history.clone();
    // Against the last recorded transition, not `status.phase`: a phase written by someone else
    // must not make a real transition go unrecorded, and unaudited (found by the simulation).
    if history.last().map(|t| t.phase) != Some(decision.phase) {
        history.push(Transition {
            time: Time(now),
            phase: decision.phase,
            reason: decision.reason.to_owned(),
            message: (!decision.message.is_empty()).then(|| decision.message.clone()),
        });
        if history.len() > HISTORY_MAX {
            // Keep the first entry (creation) and the most recent ones.
            history.drain(1..history.len() - (HISTORY_MAX - 1));
        }
    }
    let time = |t: Option<Timestamp>| t.map(Time);
    ActivationRequestStatus {
        observed_generation: generation,
        phase: Some(decision.phase),
        reason: Some(decision.reason.to_owned()),
        conditions: merge_conditions(&current.conditions, &decision.conditions, generation, now),
        matched_assignment: decision.matched_assignment.clone(),
        approved_by: decision.approved_by.clone(),
        approved_at: time(decision.approved_at),
        starts_at: time(decision.window.map(|w| w.start)),
        expires_at: time(decision.window.map(|w| w.end)),
        end_clipped_by: decision.window.and_then(|w| w.clipped_by),
        activated_at: time(decision.activated_at),
        ended_at: time(decision.ended_at),
        // The display end: planned while live, actual once ended.
        end: if decision.phase.is_terminal() {
            time(decision.ended_at)
        } else {
            time(decision.window.map(|w| w.end))
        },
        history,
        // The notifier's, carried over unchanged (the reconciler strips it before applying).
        delivery: current.delivery.clone(),
        // The group controller's record of the directory's schedule request, likewise.
        directory: current.directory.clone(),
    }
}
