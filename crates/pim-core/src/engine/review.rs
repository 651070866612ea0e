//! Access reviews: when each instance runs, which assignments it covers, who may decide them,
//! what activation history recommends, and what an instance's end does. Pure: the catalog,
//! the review and `now` in, a status out.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Span, Timestamp, tz::TimeZone};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::core::{Selector, SelectorExt};

use super::Attestor;
use super::alerts::last_activated;
use super::catalog::Catalog;
use crate::api::access_review::{
    AccessReview, AccessReviewSpec, AccessReviewStatus, DENIED_MAX, DeniedAssignment,
    INSTANCES_KEPT, ITEMS_MAX, InstancePhase, Outcome, Recurrence, ReviewDecision, ReviewInstance,
    ReviewItem, UnreviewedAction,
};
use crate::api::activation_request::Decision;
use crate::api::common::{Principal, PrincipalRef};
use crate::api::conditions::{reasons, types};
use crate::api::eligible_assignment::{AssignmentType, EligibleAssignment};
use crate::core::duration;
use crate::core::eligibility::AssignmentState;
use crate::core::identity::same_identity;
use crate::core::lifecycle::{ConditionState, ConditionStatus};
use crate::core::status::merge_conditions;
use crate::core::time::add;
use crate::core::violation::{Violation, summarize};

/// Default of `recommendDenyAfter`: Entra's recommendations look back 30 days.
pub const DEFAULT_RECOMMEND_DENY_AFTER: SignedDuration = SignedDuration::from_hours(30 * 24);
/// Default of `remindBefore`.
pub const DEFAULT_REMIND_BEFORE: SignedDuration = SignedDuration::from_hours(24);
/// Who `DeniedAssignment::by` names when `whenUnreviewed` denied.
pub const UNREVIEWED: &str = "unreviewed";

/// One instance of a review: `[start, end)`, named by its start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceWindow {
    pub id: String,
    pub start: Timestamp,
    pub end: Timestamp,
}

impl InstanceWindow {
    fn new(start: Timestamp, length: SignedDuration) -> Self {
        InstanceWindow {
            id: instance_id(start),
            start,
            end: add(start, length),
        }
    }
}

/// An instance's id: its start in RFC 3339, to the second.
pub fn instance_id(start: Timestamp) -> String {
    start.round(jiff::Unit::Second).unwrap_or(start).to_string()
}

/// The schedule's parsed durations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReviewSettings {
    pub length: SignedDuration,
    pub recommend_deny_after: SignedDuration,
    pub remind_before: SignedDuration,
}

/// The review's durations, or what is wrong with them: a duration that does not parse, or an
/// instance longer than its recurrence's shortest period (instances would overlap).
pub fn settings(spec: &AccessReviewSpec) -> Result<ReviewSettings, Vec<Violation>> {
    let mut problems = Vec::new();
    let mut parse = |field: &str, value: Option<&str>, default: SignedDuration| match value {
        None => default,
        Some(text) => duration::parse_positive(field, text).unwrap_or_else(|e| {
            problems.push(Violation::duration(e, reasons::INVALID_SCHEDULE));
            default
        }),
    };
    let length = parse(
        "spec.schedule.duration",
        Some(&spec.schedule.duration),
        SignedDuration::ZERO,
    );
    let recommend_deny_after = parse(
        "spec.recommendDenyAfter",
        spec.recommend_deny_after.as_deref(),
        DEFAULT_RECOMMEND_DENY_AFTER,
    );
    let remind_before = parse(
        "spec.remindBefore",
        spec.remind_before.as_deref(),
        DEFAULT_REMIND_BEFORE,
    );
    if let Some(period) = shortest_period(spec.schedule.recurrence)
        && length > period
    {
        problems.push(Violation::new(
            "spec.schedule.duration",
            reasons::INVALID_SCHEDULE,
            format!(
                "{} is longer than a {:?} recurrence allows ({}): instances would overlap",
                spec.schedule.duration,
                spec.schedule.recurrence,
                duration::format(period)
            ),
            format!(
                "set spec.schedule.duration to at most {}, or choose a longer recurrence",
                duration::format(period)
            ),
        ));
    }
    if problems.is_empty() {
        Ok(ReviewSettings {
            length,
            recommend_deny_after,
            remind_before,
        })
    } else {
        Err(problems)
    }
}

/// The shortest time between two starts: February's month, a quarter starting in February.
fn shortest_period(recurrence: Recurrence) -> Option<SignedDuration> {
    let days = match recurrence {
        Recurrence::Once => return None,
        Recurrence::Weekly => 7,
        Recurrence::Monthly => 28,
        Recurrence::Quarterly => 89,
    };
    Some(SignedDuration::from_hours(days * 24))
}

/// The start of instance `k` (from 0). Months count from the first start, in UTC, so that a
/// review starting on the 31st runs on the last day of shorter months and on the 31st again
/// after them.
pub fn nth_start(first: Timestamp, recurrence: Recurrence, k: i64) -> Option<Timestamp> {
    // Checked throughout: a manifest may name any year, and spans out of range are errors.
    let months = match recurrence {
        Recurrence::Once => return (k == 0).then_some(first),
        Recurrence::Weekly => {
            let hours = k.checked_mul(7 * 24)?;
            return first.checked_add(Span::new().try_hours(hours).ok()?).ok();
        }
        Recurrence::Monthly => k,
        Recurrence::Quarterly => k.checked_mul(3)?,
    };
    let start = first.to_zoned(TimeZone::UTC);
    start
        .checked_add(Span::new().try_months(months).ok()?)
        .ok()
        .map(|z| z.timestamp())
}

/// Where `now` falls in the schedule.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Timeline {
    /// The instance taking decisions now.
    pub current: Option<InstanceWindow>,
    /// The latest instance that has ended.
    pub ended: Option<InstanceWindow>,
    /// The next start after `now`.
    pub next_start: Option<Timestamp>,
}

/// The instances around `now`. `length` is no longer than the period (see [`settings`]), so at
/// most one instance runs at a time.
pub fn timeline(
    first: Timestamp,
    recurrence: Recurrence,
    length: SignedDuration,
    now: Timestamp,
) -> Timeline {
    // The last instance started at or before `now`: estimate, then step to it.
    let estimate = match recurrence {
        Recurrence::Once => 0,
        Recurrence::Weekly => now.duration_since(first).as_hours() / (7 * 24),
        Recurrence::Monthly | Recurrence::Quarterly => {
            let (a, b) = (first.to_zoned(TimeZone::UTC), now.to_zoned(TimeZone::UTC));
            let months =
                (i64::from(b.year()) - i64::from(a.year())) * 12 + i64::from(b.month() - a.month());
            months
                / if recurrence == Recurrence::Monthly {
                    1
                } else {
                    3
                }
        }
    }
    .max(0);
    let started = |k: i64| nth_start(first, recurrence, k).filter(|s| *s <= now);
    let mut k = estimate + 1;
    while k >= 0 && started(k).is_none() {
        k -= 1;
    }
    let mut out = Timeline::default();
    if k < 0 {
        out.next_start = Some(first);
        return out;
    }
    let Some(start) = started(k) else {
        return out;
    };
    let latest = InstanceWindow::new(start, length);
    if now < latest.end {
        out.current = Some(latest);
        out.ended = (k > 0)
            .then(|| nth_start(first, recurrence, k - 1))
            .flatten()
            .map(|s| InstanceWindow::new(s, length));
    } else {
        out.ended = Some(latest);
    }
    out.next_start = nth_start(first, recurrence, k + 1);
    out
}

/// The instance taking decisions at `now`: the one the status shows running until its end
/// (a schedule changed meanwhile does not cut it short), else the schedule's.
pub fn running_instance(
    review: &AccessReview,
    settings: &ReviewSettings,
    now: Timestamp,
) -> Option<InstanceWindow> {
    let stored = review
        .status
        .as_ref()
        .and_then(|s| s.current.as_ref())
        .filter(|c| c.phase == Some(InstancePhase::InProgress) && now < c.end.0);
    match stored {
        Some(c) => Some(InstanceWindow {
            id: c.id.clone(),
            start: c.start.0,
            end: c.end.0,
        }),
        None => {
            timeline(
                review.spec.schedule.start.0,
                review.spec.schedule.recurrence,
                settings.length,
                now,
            )
            .current
        }
    }
}

/// Whether an instance's end is on record, so its decisions no longer count for anything
/// and may be dropped: it is the completed current one, a kept completed one, or older than
/// every instance on record.
pub fn recorded_complete(review: &AccessReview, instance: &str) -> bool {
    let Some(status) = review.status.as_ref() else {
        return false;
    };
    let recorded = status
        .current
        .iter()
        .filter(|c| c.phase == Some(InstancePhase::Completed))
        .chain(&status.completed);
    let mut oldest: Option<Timestamp> = None;
    for c in recorded {
        if c.id == instance {
            return true;
        }
        oldest = Some(oldest.map_or(c.start.0, |o| o.min(c.start.0)));
    }
    let started = instance.parse::<Timestamp>().ok();
    matches!((started, oldest), (Some(s), Some(o)) if s < o)
}

/// Whether `assignment` is within the review's scope (group, role, type).
pub fn in_scope(
    catalog: &Catalog,
    review: &AccessReviewSpec,
    assignment: &EligibleAssignment,
) -> bool {
    let scope = &review.scope;
    let spec = &assignment.spec;
    let by_name = scope.groups.contains(&spec.group);
    let by_label = scope.group_selector.as_ref().is_some_and(|selector| {
        let Some(group) = catalog.groups.get(&spec.group) else {
            return false;
        };
        // A selector the API server would refuse selects nothing, rather than everything.
        if selector_problem(selector).is_some() {
            return false;
        }
        match Selector::try_from(selector.clone()) {
            Ok(selector) => {
                let labels = group.metadata.labels.clone().unwrap_or_default();
                selector.matches(&labels)
            }
            Err(_) => false,
        }
    });
    (by_name || by_label)
        && (scope.roles.is_empty() || scope.roles.contains(&spec.role))
        && (scope.assignment_types.is_empty()
            || scope.assignment_types.contains(&spec.assignment_type))
}

/// What the API server would refuse in a label selector, by the rules of k8s.io/apimachinery
/// `pkg/apis/meta/v1/validation/validation.go` (`ValidateLabelSelectorRequirement`): `In` and
/// `NotIn` need values, `Exists` and `DoesNotExist` take none, no other operator exists.
pub fn selector_problem(selector: &LabelSelector) -> Option<String> {
    for (i, requirement) in selector.match_expressions.iter().flatten().enumerate() {
        let values = requirement.values.as_ref().map_or(0, Vec::len);
        let at = format!("matchExpressions[{i}]");
        match requirement.operator.as_str() {
            "In" | "NotIn" if values == 0 => {
                return Some(format!(
                    "{at}.values: must be specified when operator is {}",
                    requirement.operator
                ));
            }
            "Exists" | "DoesNotExist" if values > 0 => {
                return Some(format!(
                    "{at}.values: may not be specified when operator is {}",
                    requirement.operator
                ));
            }
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => {
                return Some(format!(
                    "{at}.operator: {other:?} is not a valid selector operator (In, NotIn, Exists, DoesNotExist)"
                ));
            }
        }
    }
    None
}

/// The assignments an instance covers at `at`: in scope, in effect, not already denied by a
/// review. In name order.
pub fn subjects<'a>(
    catalog: &'a Catalog,
    review: &AccessReviewSpec,
    at: Timestamp,
) -> Vec<(
    &'a EligibleAssignment,
    crate::core::eligibility::AssignmentWindow,
)> {
    catalog
        .assignments
        .values()
        .filter(|a| in_scope(catalog, review, a))
        .filter_map(|a| {
            let window = catalog.assignment_window(a, at).ok()?;
            (window.state(at) == AssignmentState::Effective && window.denied.is_none())
                .then_some((a.as_ref(), window))
        })
        .collect()
}

/// What activation history recommends for an assignment at `at`: deny an eligible assignment
/// not activated for `threshold` (counting from when it took effect, if never); nothing for an
/// Active one, which is never activated.
pub fn recommendation(
    catalog: &Catalog,
    assignment: &EligibleAssignment,
    effective_since: Timestamp,
    threshold: SignedDuration,
    at: Timestamp,
) -> Option<(Decision, String)> {
    if assignment.spec.assignment_type == AssignmentType::Active {
        return None;
    }
    let last = last_activated(catalog, assignment).filter(|t| *t <= at);
    let since = last.unwrap_or(effective_since);
    let idle = at.duration_since(since);
    let days = duration::format(threshold);
    Some(match last {
        Some(t) if idle < threshold => (Decision::Approve, format!("activated at {t}")),
        Some(t) => (
            Decision::Deny,
            format!("not activated in {days} (last at {t})"),
        ),
        None if idle < threshold => (
            Decision::Approve,
            format!("in effect since {since}, less than {days}"),
        ),
        None => (
            Decision::Deny,
            format!("never activated in {days} since it took effect at {since}"),
        ),
    })
}

/// Why a caller may decide on an assignment in this review: `self`, `user`, `group:NAME` or
/// `approver`. Err says why not. The principals themselves decide only under `selfReview`,
/// whatever else names them.
pub fn reviewer_role(
    catalog: &Catalog,
    review: &AccessReviewSpec,
    assignment: &EligibleAssignment,
    username: &str,
    groups: &[String],
) -> Result<String, String> {
    let names = catalog.principals().names;
    let spec = &assignment.spec;
    // Reviewers are named as the directory of the assignment's group knows people, or by
    // their Kubernetes username.
    let mapped = catalog.principal_in_group(&spec.group, username).ok();
    let me = |name: &str| {
        same_identity(name, username, names)
            || mapped
                .as_deref()
                .is_some_and(|m| same_identity(name, m, names))
    };
    // As the directory knows them, or as written: either way it is their own assignment.
    let is_principal = match spec.principal.resolve() {
        Some(Principal::User(user)) => {
            same_identity(user, username, names)
                || mapped
                    .as_deref()
                    .is_some_and(|p| same_identity(p, user, names))
        }
        Some(Principal::Group(group)) => groups.iter().any(|g| g == group),
        None => false,
    };
    let reviewers = &review.reviewers;
    if is_principal {
        return if reviewers.self_review {
            Ok("self".to_owned())
        } else {
            Err(format!(
                "{username} is the principal of assignment {}, and this review does not allow self-review",
                name_of(assignment)
            ))
        };
    }
    for p in &reviewers.principals {
        match p.resolve() {
            Some(Principal::User(u)) if me(u) => {
                return Ok("user".to_owned());
            }
            Some(Principal::Group(g)) if groups.iter().any(|c| c == g) => {
                return Ok(format!("group:{g}"));
            }
            _ => {}
        }
    }
    if reviewers.policy_approvers
        && let Some(approval) = catalog
            .target(&spec.group, spec.role)
            .policy()
            .and_then(|p| p.approval.clone())
        && (approval.allows(username, groups, names)
            || mapped
                .as_deref()
                .is_some_and(|m| approval.allows(m, groups, names)))
    {
        return Ok("approver".to_owned());
    }
    Err(format!(
        "{username} is not a reviewer of assignment {} in this review",
        name_of(assignment)
    ))
}

/// The reviewers named for anyone to notify: named principals, and the policy approvers of the
/// items' targets. Self-reviewers are the items' principals.
pub fn reviewers_of(
    catalog: &Catalog,
    review: &AccessReviewSpec,
    items: &[ReviewItem],
) -> Vec<PrincipalRef> {
    let mut out: Vec<PrincipalRef> = review.reviewers.principals.clone();
    if review.reviewers.policy_approvers {
        for item in items {
            if let Some(approval) = catalog
                .target(&item.group, item.role)
                .policy()
                .and_then(|p| p.approval.clone())
            {
                out.extend(approval.approvers);
            }
        }
    }
    if review.reviewers.self_review {
        out.extend(
            items
                .iter()
                .filter(|i| i.decision.is_none())
                .map(|i| i.principal.clone()),
        );
    }
    out.sort();
    out.dedup();
    out
}

fn name_of(assignment: &EligibleAssignment) -> &str {
    assignment.metadata.name.as_deref().unwrap_or_default()
}

/// The standing decision on each assignment of an instance: the latest verified one, by
/// assignment name. A decision about an assignment since re-created (another uid) is not one.
fn standing_decisions<'a>(
    catalog: &Catalog,
    review: &'a AccessReview,
    window: &InstanceWindow,
    attestor: &dyn Attestor,
) -> BTreeMap<&'a str, &'a ReviewDecision> {
    let mut out: BTreeMap<&str, &ReviewDecision> = BTreeMap::new();
    for d in review
        .spec
        .decisions
        .iter()
        .filter(|d| d.instance == window.id)
    {
        // Signed, made before the end, and by someone the review still lets decide.
        let in_time = d.time.as_ref().is_some_and(|t| t.0 < window.end);
        if !in_time
            || !attestor.review_decision(review, d)
            || !still_reviewer(catalog, &review.spec, d)
        {
            continue;
        }
        let later = out
            .get(d.assignment.as_str())
            .is_none_or(|seen| seen.time.as_ref().map(|t| t.0) <= d.time.as_ref().map(|t| t.0));
        if later {
            out.insert(&d.assignment, d);
        }
    }
    out
}

/// Whether the right a decision was signed under (`reviewerAs`) is still in the review: a
/// reviewer taken off it mid-instance no longer decides.
fn still_reviewer(catalog: &Catalog, spec: &AccessReviewSpec, d: &ReviewDecision) -> bool {
    let reviewers = &spec.reviewers;
    match d.reviewer_as.as_deref() {
        Some("self") => reviewers.self_review,
        Some("approver") => reviewers.policy_approvers,
        // Still named, as `reviewer_role` matches names: by username, or as the directory of
        // the assignment's group knows them.
        Some("user") => {
            let names = catalog.principals().names;
            let mapped = catalog
                .assignments
                .get(&d.assignment)
                .and_then(|a| catalog.principal_in_group(&a.spec.group, &d.reviewer).ok());
            reviewers
                .principals
                .iter()
                .filter_map(|p| p.user.as_deref())
                .any(|u| {
                    same_identity(u, &d.reviewer, names)
                        || mapped
                            .as_deref()
                            .is_some_and(|m| same_identity(u, m, names))
                })
        }
        Some(as_group) => as_group.strip_prefix("group:").is_some_and(|g| {
            reviewers
                .principals
                .iter()
                .any(|p| p.group.as_deref() == Some(g))
        }),
        // Entries the webhook stamped always say; the trusting attestor of `simulate` and the
        // tests has none to check.
        None => true,
    }
}

/// Decisions that no verified signature covers, by reviewer: ignored, and reported.
pub fn unverified_decisions(review: &AccessReview, attestor: &dyn Attestor) -> Vec<String> {
    let mut out: Vec<String> = review
        .spec
        .decisions
        .iter()
        .filter(|d| !attestor.review_decision(review, d))
        .map(|d| format!("{} on {} ({})", d.reviewer, d.assignment, d.instance))
        .collect();
    out.dedup();
    out
}

/// One instance's items at `at`: live while it runs, frozen with outcomes once `completed`.
pub fn instance(
    catalog: &Catalog,
    review: &AccessReview,
    window: &InstanceWindow,
    settings: &ReviewSettings,
    attestor: &dyn Attestor,
    at: Timestamp,
    completed: bool,
) -> ReviewInstance {
    let decisions = standing_decisions(catalog, review, window, attestor);
    // At the end, what was under review just before it: an assignment that ended with the
    // instance was still someone's to decide.
    let seen_at = if completed {
        add(window.end, -SignedDuration::from_secs(1)).max(window.start)
    } else {
        at
    };
    let room = room_for_items(review);
    // At the end, only what reviewers were shown: an assignment that joined the scope after the
    // last pass was nobody's to decide, so `whenUnreviewed` does not apply to it.
    let shown = |a: &EligibleAssignment| {
        !completed
            || review
                .status
                .as_ref()
                .and_then(|s| s.current.as_ref())
                .filter(|c| c.id == window.id)
                .is_none_or(|c| {
                    c.items.iter().any(|i| {
                        i.assignment == name_of(a)
                            && (i.uid.is_none()
                                || a.metadata.uid.is_none()
                                || i.uid == a.metadata.uid)
                    })
                })
    };
    let items: Vec<ReviewItem> = subjects(catalog, &review.spec, seen_at)
        .into_iter()
        .filter(|(a, _)| shown(a))
        .take(room)
        .map(|(a, w)| {
            let name = name_of(a).to_owned();
            let uid = a.metadata.uid.clone();
            let recommended =
                recommendation(catalog, a, w.start, settings.recommend_deny_after, seen_at);
            let decided = decisions
                .get(name.as_str())
                .filter(|d| d.assignment_uid.is_none() || uid.is_none() || d.assignment_uid == uid);
            let outcome = completed.then(|| {
                let decision = match (decided, review.spec.when_unreviewed) {
                    (Some(d), _) => d.decision,
                    (None, UnreviewedAction::Keep) => Decision::Approve,
                    (None, UnreviewedAction::Remove) => Decision::Deny,
                    (None, UnreviewedAction::Recommendation) => {
                        recommended.as_ref().map_or(Decision::Approve, |(d, _)| *d)
                    }
                };
                match decision {
                    Decision::Approve => Outcome::Kept,
                    Decision::Deny => Outcome::Denied,
                }
            });
            ReviewItem {
                assignment: name,
                uid,
                group: a.spec.group.clone(),
                role: a.spec.role,
                principal: a.spec.principal.clone(),
                assignment_type: a.spec.assignment_type,
                recommendation: recommended.as_ref().map(|(d, _)| *d),
                recommendation_reason: recommended.map(|(_, why)| clip(&why)),
                decision: decided.map(|d| d.decision),
                decided_by: decided.map(|d| d.reviewer.clone()),
                decided_at: decided.and_then(|d| d.time.clone()),
                reason: decided.map(|d| clip(&d.reason)),
                outcome,
            }
        })
        .collect();
    let decided = items.iter().filter(|i| i.decision.is_some()).count();
    ReviewInstance {
        id: window.id.clone(),
        start: Time(window.start),
        end: Time(window.end),
        phase: Some(if completed {
            InstancePhase::Completed
        } else {
            InstancePhase::InProgress
        }),
        progress: Some(format!("{decided}/{}", items.len())),
        items,
    }
}

/// Most characters of a reason copied into status: the whole text is in `spec.decisions` and
/// the audit trail, and status must stay small.
const REASON_IN_STATUS: usize = 200;

fn clip(text: &str) -> String {
    if text.chars().count() <= REASON_IN_STATUS {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(REASON_IN_STATUS - 1).collect();
    out.push('…');
    out
}

/// How many assignments one instance may cover: [`ITEMS_MAX`], and no more than the denials
/// the status can still hold, so that the instance's end can always be recorded.
pub fn room_for_items(review: &AccessReview) -> usize {
    let denied = review.status.as_ref().map_or(0, |s| s.denied.len());
    ITEMS_MAX.min(DENIED_MAX.saturating_sub(denied))
}

/// What one pass over a review decided.
#[derive(Debug, Clone, PartialEq)]
pub struct ReviewOutcome {
    pub status: AccessReviewStatus,
    /// When the status next changes with time alone: an instance's start or end, or a reminder.
    pub next_change: Option<Timestamp>,
    /// The instance opened by this pass.
    pub opened: Option<String>,
    /// The instance completed by this pass, and what it denied.
    pub completed: Option<(String, Vec<DeniedAssignment>)>,
}

fn condition(
    type_: &'static str,
    ok: bool,
    reason: &'static str,
    message: String,
) -> ConditionState {
    ConditionState {
        type_,
        status: if ok {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        },
        reason,
        message,
    }
}

/// One pass over a review at `now`, from the stored status: opens an instance at its start,
/// keeps its items current while it runs, and completes it at its end, adding what it denied
/// to `status.denied`. An instance that ended before the operator ever opened it (the operator
/// was down throughout) is skipped: nobody was asked, so nothing is denied for want of an answer.
pub fn reconcile_review(
    catalog: &Catalog,
    review: &AccessReview,
    attestor: &dyn Attestor,
    now: Timestamp,
) -> ReviewOutcome {
    reconcile_review_with(catalog, review, attestor, now, &|name, uid| {
        catalog.assignments.get(name).is_some_and(|a| {
            uid.is_none() || a.metadata.uid.is_none() || a.metadata.uid.as_deref() == uid
        })
    })
}

/// [`reconcile_review`], with `exists` saying whether an assignment (name, uid) still exists,
/// well-formed or not: a denial goes only with its object, not when it fails to decode.
pub fn reconcile_review_with(
    catalog: &Catalog,
    review: &AccessReview,
    attestor: &dyn Attestor,
    now: Timestamp,
    exists: &dyn Fn(&str, Option<&str>) -> bool,
) -> ReviewOutcome {
    let stored = review.status.clone().unwrap_or_default();
    let generation = review.metadata.generation;
    let mut status = AccessReviewStatus {
        observed_generation: generation,
        delivery: stored.delivery.clone(),
        completed: stored.completed.clone(),
        current: stored.current.clone(),
        denied: stored.denied.clone(),
        ..AccessReviewStatus::default()
    };
    let mut out = ReviewOutcome {
        status: AccessReviewStatus::default(),
        next_change: None,
        opened: None,
        completed: None,
    };
    let settings = match settings(&review.spec) {
        Ok(s) => s,
        Err(problems) => {
            let message = summarize(&problems);
            let conditions = [
                condition(
                    types::VALID,
                    false,
                    reasons::INVALID_SCHEDULE,
                    message.clone(),
                ),
                condition(
                    types::IN_PROGRESS,
                    false,
                    reasons::INVALID_SCHEDULE,
                    message,
                ),
            ];
            status.conditions = merge_conditions(&stored.conditions, &conditions, generation, now);
            status.removal_count = Some(status.denied.len() as i32);
            out.status = status;
            return out;
        }
    };
    let first = review.spec.schedule.start.0;
    let line = timeline(first, review.spec.schedule.recurrence, settings.length, now);
    // Complete the instance the status shows running once it has ended.
    if let Some(running) = stored
        .current
        .as_ref()
        .filter(|c| c.phase == Some(InstancePhase::InProgress))
        && running.end.0 <= now
    {
        let window = InstanceWindow {
            id: running.id.clone(),
            start: running.start.0,
            end: running.end.0,
        };
        let done = instance(catalog, review, &window, &settings, attestor, now, true);
        let denied: Vec<DeniedAssignment> = done
            .items
            .iter()
            .filter(|i| i.outcome == Some(Outcome::Denied))
            .map(|i| DeniedAssignment {
                assignment: i.assignment.clone(),
                uid: i.uid.clone(),
                instance: done.id.clone(),
                at: done.end.clone(),
                by: i
                    .decided_by
                    .clone()
                    .unwrap_or_else(|| UNREVIEWED.to_owned()),
                reason: i.reason.clone().or_else(|| i.recommendation_reason.clone()),
            })
            .collect();
        status.denied.extend(denied.iter().cloned());
        out.completed = Some((done.id.clone(), denied));
        status.current = Some(done);
    }
    // The instance on record runs to its own end, whatever the schedule says now.
    let current = running_instance(review, &settings, now).or(line.current.clone());
    if let Some(window) = &current {
        let same = status.current.as_ref().is_some_and(|c| c.id == window.id);
        let live = instance(catalog, review, window, &settings, attestor, now, false);
        if !same {
            out.opened = Some(window.id.clone());
            if let Some(previous) = status.current.take()
                && previous.phase == Some(InstancePhase::Completed)
            {
                for older in &mut status.completed {
                    older.items.clear();
                }
                status.completed.insert(0, previous);
            }
        }
        status.current = Some(live);
    }
    status.completed.truncate(INSTANCES_KEPT);
    // Denials stand while the denied object does; once its manifest is gone, so is the entry.
    status
        .denied
        .retain(|d| exists(&d.assignment, d.uid.as_deref()));
    let mut seen = std::collections::BTreeSet::new();
    status
        .denied
        .retain(|d| seen.insert((d.assignment.clone(), d.uid.clone())));
    status.removal_count = Some(status.denied.len() as i32);
    status.next_start = line.next_start.map(Time);
    let running = current.as_ref();
    let unverified = unverified_decisions(review, attestor);
    let in_scope = running.map_or(0, |_| subjects(catalog, &review.spec, now).len());
    let room = room_for_items(review);
    let mut conditions = vec![
        if in_scope > room {
            condition(
                types::VALID,
                true,
                reasons::SCOPE_TOO_LARGE,
                format!(
                    "{in_scope} assignments are in scope; an instance reviews at most {room} (the first by name), the others are kept: split the scope into several reviews, or remove the manifests status.denied lists"
                ),
            )
        } else if unverified.is_empty() {
            condition(
                types::VALID,
                true,
                reasons::VALID,
                "the review's schedule is valid".to_owned(),
            )
        } else {
            condition(
                types::VALID,
                true,
                reasons::UNVERIFIED_DECISIONS,
                format!(
                    "ignored decisions without the webhook's signature: {}",
                    unverified.join(", ")
                ),
            )
        },
        match running {
            Some(w) => condition(
                types::IN_PROGRESS,
                true,
                reasons::TAKING_DECISIONS,
                format!("instance {} takes decisions until {}", w.id, w.end),
            ),
            None => condition(
                types::IN_PROGRESS,
                false,
                reasons::NOT_RUNNING,
                line.next_start
                    .map_or("no instance is due".to_owned(), |s| {
                        format!("the next instance starts at {s}")
                    }),
            ),
        },
    ];
    conditions.dedup_by(|a, b| a.type_ == b.type_);
    status.conditions = merge_conditions(&stored.conditions, &conditions, generation, now);
    let reminder = running
        .map(|w| add(w.end, -settings.remind_before))
        .filter(|t| *t > now);
    out.next_change = [line.next_start, running.map(|w| w.end), reminder]
        .into_iter()
        .flatten()
        .filter(|t| *t > now)
        .min();
    out.status = status;
    out
}

/// The stored condition, for tests and tools.
pub fn find_condition<'a>(status: &'a AccessReviewStatus, type_: &str) -> Option<&'a Condition> {
    status.conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
#[path = "review_tests.rs"]
mod tests;
