//! AccessReview reconciler: opens each instance at its start, keeps its items and decisions in
//! status while it runs, and at its end records what it denied, which ends those assignments
//! (the catalog reads `status.denied`) and lists their manifests for removal.

use std::sync::Arc;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::core::Resource;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;

use super::context::{Context, back_off, timed};
use super::error::Error;
use super::writes::{apply_status, report_malformed};
use crate::api::AccessReview;
use crate::api::access_review::AccessReviewStatus;
use crate::api::conditions::types;
use crate::engine::review::reconcile_review_with;
use crate::lenient::Lenient;

pub const KIND: &str = "AccessReview";

pub async fn reconcile(
    object: Arc<Lenient<AccessReview>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    timed(
        KIND,
        &ctx,
        object.metadata.name.as_deref(),
        reconcile_one(&object, &ctx),
    )
    .await
}

pub fn error_policy(
    object: Arc<Lenient<AccessReview>>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    back_off(KIND, object.metadata.name.as_deref(), error, &ctx)
}

async fn reconcile_one(object: &Lenient<AccessReview>, ctx: &Context) -> Result<Action, Error> {
    // Items and denials are about every group's assignments: not from a cache half listed.
    ctx.caches_ready().await;
    let now = ctx.now();
    let Ok(review) = object.parsed.as_deref() else {
        report_malformed(&ctx.client, object, types::VALID, now).await?;
        return Ok(Action::await_change());
    };
    let catalog = ctx.stores.catalog();
    // A denial goes only with its assignment: one that merely fails to decode keeps it.
    let exists = |name: &str, uid: Option<&str>| {
        ctx.stores
            .assignments
            .get(&ObjectRef::new(name))
            .is_some_and(|a| {
                uid.is_none() || a.metadata.uid.is_none() || a.metadata.uid.as_deref() == uid
            })
    };
    let outcome = reconcile_review_with(&catalog, review, ctx.attestor.as_ref(), now, &exists);
    let stored = review.status.clone().unwrap_or_default();
    if outcome.status != stored {
        // `status.delivery` belongs to the notifier's field manager: never applied from here.
        let status = AccessReviewStatus {
            delivery: None,
            ..outcome.status.clone()
        };
        apply_status(&ctx.client, object, &status).await?;
    }
    let reference = object.object_ref(&());
    if let Some(id) = &outcome.opened {
        let items = outcome.status.current.as_ref().map_or(0, |c| c.items.len());
        publish(
            ctx,
            &reference,
            EventType::Normal,
            "InstanceStarted",
            format!("instance {id} started with {items} assignments to review"),
        )
        .await;
    }
    if let Some((id, denied)) = &outcome.completed {
        let names: Vec<&str> = denied.iter().map(|d| d.assignment.as_str()).collect();
        let note = if names.is_empty() {
            format!("instance {id} completed; every assignment is kept")
        } else {
            format!(
                "instance {id} completed; denied (remove their manifests): {}",
                names.join(", ")
            )
        };
        publish(
            ctx,
            &reference,
            EventType::Normal,
            "InstanceCompleted",
            note,
        )
        .await;
        ctx.metrics.review_completed(denied.len());
        // The denials are read from the status just written: the review watch wakes the
        // groups, assignments and requests concerned once the cache holds it.
    }
    Ok(Action::requeue(ctx.requeue_for(outcome.next_change)))
}

async fn publish(
    ctx: &Context,
    reference: &ObjectReference,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note.chars().take(1024).collect()),
        action: "Review".to_owned(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, reference).await {
        tracing::debug!(%error, "could not publish an Event");
    }
}
