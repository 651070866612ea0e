//! `review`: the assignments under access review that are mine to decide, and my decision on
//! one.
//!
//! A reviewer writes exactly their own entry `{instance, assignment, reviewer, decision,
//! reason}` with a JSON patch, as `approve` does: `add /spec/decisions/-`, or, to change their
//! decision, a `replace` of their entry guarded by a `test` that it is still there as read.
//! Server-side apply would need one field manager per entry: a reviewer's next decision
//! applied under the same manager would drop the previous one. The webhook stamps the time,
//! the assignment's uid, why the caller may decide, and the signature.

use std::io::Write;

use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::cluster::{list, load_catalog};
use super::error::{CliError, EXIT_OK};
use super::identity::Me;
use super::render::{Table, cut, when};
use super::{Context, ReviewDecisionArgs};
use crate::api::AccessReview;
use crate::api::access_review::{InstancePhase, ReviewItem};
use crate::api::activation_request::Decision;
use crate::engine::Catalog;
use crate::engine::review::{reviewer_role, running_instance, settings, timeline};

/// How often a decision is retried when the list changed between reading and writing.
const ATTEMPTS: usize = 3;

/// The items of running instances I may decide, with my decision so far.
pub async fn list_mine(ctx: &Context<'_>, me: &Me, out: &mut impl Write) -> Result<u8, CliError> {
    let now = ctx.clock.now();
    let reviews = list::<AccessReview>(ctx.client)
        .await
        .map_err(|e| CliError::api("list AccessReviews", e))?;
    let catalog = load_catalog(ctx.client)
        .await
        .map_err(|e| CliError::api("list PimGroups, AccessPolicies and EligibleAssignments", e))?;
    let mut table = Table::new(&[
        "REVIEW",
        "ASSIGNMENT",
        "PRINCIPAL",
        "GROUP",
        "ROLE",
        "RECOMMENDED",
        "DECISION",
        "ENDS",
    ]);
    let mut rows = 0;
    for review in &reviews {
        let name = review.metadata.name.as_deref().unwrap_or_default();
        let Some(current) = review
            .status
            .as_ref()
            .and_then(|s| s.current.as_ref())
            .filter(|c| c.phase == Some(InstancePhase::InProgress))
        else {
            continue;
        };
        for item in current
            .items
            .iter()
            .filter(|i| may_decide(&catalog, review, i, me))
        {
            let mine = review.spec.decisions.iter().find(|d| {
                d.instance == current.id
                    && d.assignment == item.assignment
                    && me.is_username(&d.reviewer)
            });
            let recommended = match (&item.recommendation, &item.recommendation_reason) {
                (Some(d), Some(why)) => format!("{d:?}: {}", cut(why, 48)),
                (Some(d), None) => format!("{d:?}"),
                _ => "-".to_owned(),
            };
            let decision = match (mine, &item.decided_by) {
                (Some(d), _) => format!("{:?} (you)", d.decision),
                (None, Some(by)) => {
                    format!("{:?} ({by})", item.decision.unwrap_or(Decision::Approve))
                }
                (None, None) => "-".to_owned(),
            };
            table.row(vec![
                name.to_owned(),
                item.assignment.clone(),
                item.principal.to_string(),
                item.group.clone(),
                item.role.to_string(),
                recommended,
                decision,
                when(current.end.0, now),
            ]);
            rows += 1;
        }
    }
    if rows == 0 {
        writeln!(out, "Nothing is waiting for your review.")?;
    } else {
        write!(out, "{}", table.render())?;
        writeln!(
            out,
            "Decide with: kubectl pim review approve|deny REVIEW ASSIGNMENT --reason TEXT"
        )?;
    }
    Ok(EXIT_OK)
}

/// Whether the review lets me decide on this item (the webhook has the last word: it maps my
/// username into each directory).
fn may_decide(catalog: &Catalog, review: &AccessReview, item: &ReviewItem, me: &Me) -> bool {
    let Some(assignment) = catalog.assignments.get(&item.assignment) else {
        return false;
    };
    let own = item.principal.user.as_deref().is_some_and(|u| me.is(u))
        || item
            .principal
            .group
            .as_deref()
            .is_some_and(|g| me.in_group(g));
    if own && !review.spec.reviewers.self_review {
        return false;
    }
    reviewer_role(catalog, &review.spec, assignment, &me.username, &me.groups).is_ok() || own
}

/// Writes my decision on `assignment` in the running instance of `review`.
pub async fn decide(
    ctx: &Context<'_>,
    me: &Me,
    args: &ReviewDecisionArgs,
    decision: Decision,
    out: &mut impl Write,
) -> Result<u8, CliError> {
    let (review, assignment) = (args.review.as_str(), args.assignment.as_str());
    let reason = args.reason.trim();
    if reason.is_empty() {
        return Err(CliError::Invalid(
            "--reason must say why; it is kept with your decision for audit".to_owned(),
        ));
    }
    let api: Api<AccessReview> = Api::all(ctx.client.clone());
    let verb = match decision {
        Decision::Approve => "approve",
        Decision::Deny => "deny",
    };
    let mut last_error = None;
    for _ in 0..ATTEMPTS {
        let object = api
            .get_opt(review)
            .await
            .map_err(|e| CliError::api(&format!("get AccessReview {review}"), e))?
            .ok_or_else(|| {
                CliError::Invalid(format!(
                    "there is no AccessReview named {review:?}; `kubectl pim review` lists what waits for you"
                ))
            })?;
        let length = settings(&object.spec).map_err(|problems| {
            CliError::Invalid(format!(
                "AccessReview {review} is invalid: {}",
                problems
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ))
        })?;
        let now = ctx.clock.now();
        let Some(instance) = running_instance(&object, &length, now) else {
            let next = timeline(
                object.spec.schedule.start.0,
                object.spec.schedule.recurrence,
                length.length,
                now,
            )
            .next_start;
            return Err(CliError::Invalid(format!(
                "no instance of AccessReview {review} is taking decisions now{}",
                next.map(|s| format!("; the next starts {}", when(s, now)))
                    .unwrap_or_default()
            )));
        };
        let entry = json!({
            "instance": instance.id,
            "assignment": assignment,
            "reviewer": me.username,
            "decision": decision,
            "reason": reason,
        });
        let existing = object.spec.decisions.iter().position(|d| {
            d.instance == instance.id && d.assignment == assignment && d.reviewer == me.username
        });
        let operations = match existing {
            Some(i) => json!([
                {"op": "test", "path": format!("/spec/decisions/{i}"), "value": object.spec.decisions[i]},
                {"op": "replace", "path": format!("/spec/decisions/{i}"), "value": entry},
            ]),
            None if object.spec.decisions.is_empty() => json!([
                {"op": "test", "path": "/spec/decisions", "value": null},
                {"op": "add", "path": "/spec/decisions", "value": [entry]},
            ]),
            None => json!([{"op": "add", "path": "/spec/decisions/-", "value": entry}]),
        };
        let patch: json_patch::Patch = serde_json::from_value(operations)
            .map_err(|e| CliError::Invalid(format!("cannot build the JSON patch: {e}")))?;
        match api
            .patch(review, &PatchParams::default(), &Patch::<()>::Json(patch))
            .await
        {
            Ok(_) => {
                let done = match decision {
                    Decision::Approve => "approved",
                    Decision::Deny => "denied",
                };
                writeln!(
                    out,
                    "{done} {assignment} in accessreview/{review} (instance {}); the outcome applies when it ends, {}.",
                    instance.id,
                    when(instance.end, now)
                )?;
                return Ok(EXIT_OK);
            }
            Err(e) => {
                // Read again: a list that changed under us (a `test` failed; retry), or a
                // refusal (the webhook's, say), which is the answer.
                let again = api
                    .get(review)
                    .await
                    .map_err(|e| CliError::api(&format!("get AccessReview {review}"), e))?;
                if again.spec.decisions == object.spec.decisions {
                    return Err(CliError::api(
                        &format!("{verb} {assignment} in {review}"),
                        e,
                    ));
                }
                last_error = Some(e);
            }
        }
    }
    Err(match last_error {
        Some(e) => CliError::api(&format!("{verb} {assignment} in {review}"), e),
        None => CliError::Api(format!("could not {verb} {assignment} in {review}")),
    })
}
