//! Who may write which AccessReview decisions, and what is stamped and signed: each reviewer
//! writes only their own entries, only in the instance running, only on assignments under
//! review that the review lets them decide (never their own unless `selfReview`). Reviewers do
//! not rewrite the review itself: that goes through Git.

use std::collections::BTreeMap;

use jiff::SignedDuration;

use super::activation::{Denied, Rules, deny};
use super::identity::Caller;
use crate::api::access_review::{AccessReviewSpec, ReviewDecision};
use crate::core::identity::same_identity;
use crate::engine::review::{reviewer_role, settings, subjects, timeline};

/// Entries by (instance, assignment, reviewer): the list's map keys.
type Key<'a> = (&'a str, &'a str, &'a str);

fn by_key(spec: &AccessReviewSpec) -> BTreeMap<Key<'_>, &ReviewDecision> {
    spec.decisions
        .iter()
        .map(|d| {
            (
                (
                    d.instance.as_str(),
                    d.assignment.as_str(),
                    d.reviewer.as_str(),
                ),
                d,
            )
        })
        .collect()
}

fn field(d: &ReviewDecision) -> String {
    format!(
        "spec.decisions[instance={},assignment={},reviewer={}]",
        d.instance, d.assignment, d.reviewer
    )
}

/// The spec without its decisions: what only Git changes.
fn without_decisions(spec: &AccessReviewSpec) -> AccessReviewSpec {
    AccessReviewSpec {
        decisions: Vec::new(),
        ..spec.clone()
    }
}

/// Checks a write of a review; returns the indexes in `new` of the entries the caller added or
/// changed, each of which the caller may make, and why (`reviewer_as`).
fn check(
    rules: &Rules<'_>,
    caller: &Caller,
    old: Option<&AccessReviewSpec>,
    new: &AccessReviewSpec,
) -> Result<Vec<(usize, String)>, Denied> {
    let names = rules.principals.names;
    let empty = AccessReviewSpec::default();
    let before = by_key(old.unwrap_or(&empty));
    let after = by_key(new);
    for (key, d) in &before {
        if !after.contains_key(key) && !same_identity(d.reviewer.as_str(), &caller.username, names)
        {
            return Err(deny(
                field(d),
                format!("only {} may withdraw their decision", d.reviewer),
            ));
        }
    }
    let changed: Vec<(usize, &ReviewDecision)> = new
        .decisions
        .iter()
        .enumerate()
        .filter(|(_, d)| {
            before
                .get(&(
                    d.instance.as_str(),
                    d.assignment.as_str(),
                    d.reviewer.as_str(),
                ))
                .is_none_or(|b| *b != *d)
        })
        .collect();
    if let Some(old) = old
        && without_decisions(old) != without_decisions(new)
        && may_review_any(rules, caller, old)
    {
        return Err(deny(
            "spec",
            format!(
                "{} reviews under this AccessReview, so may change only their own spec.decisions; its scope, reviewers and schedule change through Git",
                caller.username
            ),
        ));
    }
    if changed.is_empty() {
        return Ok(Vec::new());
    }
    if old.is_none() {
        return Err(deny(
            "spec.decisions",
            "decisions are written to an existing AccessReview while an instance runs (`kubectl pim review`), never with the review itself",
        ));
    }
    let length = settings(new).map_err(|problems| {
        let first = &problems[0];
        deny(first.field.clone(), first.message.clone())
    })?;
    let running = timeline(
        new.schedule.start.0,
        new.schedule.recurrence,
        length.length,
        rules.now,
    );
    let under_review = running
        .current
        .as_ref()
        .map(|_| subjects(rules.catalog, new, rules.now))
        .unwrap_or_default();
    let mut out = Vec::new();
    for (i, d) in changed {
        let field = field(d);
        if !same_identity(&d.reviewer, &caller.username, names) {
            return Err(deny(
                format!("{field}.reviewer"),
                format!(
                    "you are {}: write decisions under your own name only",
                    caller.username
                ),
            ));
        }
        match &running.current {
            Some(w) if w.id == d.instance => {}
            Some(w) => {
                return Err(deny(
                    format!("{field}.instance"),
                    format!(
                        "instance {} is not taking decisions; the running one is {}",
                        d.instance, w.id
                    ),
                ));
            }
            None => {
                return Err(deny(
                    format!("{field}.instance"),
                    format!(
                        "no instance of this review is taking decisions now{}",
                        running
                            .next_start
                            .map(|s| format!("; the next starts at {s}"))
                            .unwrap_or_default()
                    ),
                ));
            }
        }
        let Some((assignment, _)) = under_review
            .iter()
            .find(|(a, _)| a.metadata.name.as_deref() == Some(d.assignment.as_str()))
        else {
            return Err(deny(
                format!("{field}.assignment"),
                format!(
                    "assignment {:?} is not under review in instance {} (`kubectl pim review` lists those that are)",
                    d.assignment, d.instance
                ),
            ));
        };
        let role = reviewer_role(
            rules.catalog,
            new,
            assignment,
            &caller.username,
            &caller.groups,
        )
        .map_err(|why| deny(field.clone(), why))?;
        out.push((i, role));
    }
    Ok(out)
}

/// Whether the caller may decide anything under `spec` now: named, or a reviewer of any
/// assignment under review.
fn may_review_any(rules: &Rules<'_>, caller: &Caller, spec: &AccessReviewSpec) -> bool {
    let names = rules.principals.names;
    // Named by username or group; named as a directory principal, they are found below
    // through the assignments under review.
    let named = spec.reviewers.principals.iter().any(|p| {
        p.user
            .as_deref()
            .is_some_and(|u| same_identity(u, &caller.username, names))
            || p.group
                .as_deref()
                .is_some_and(|g| caller.groups.iter().any(|c| c == g))
    });
    named
        || subjects(rules.catalog, spec, rules.now)
            .into_iter()
            .any(|(a, _)| {
                reviewer_role(rules.catalog, spec, a, &caller.username, &caller.groups).is_ok()
            })
}

/// Stamps and signs the caller's own new or changed decisions. `uid` is the review's.
pub fn mutate(
    rules: &Rules<'_>,
    caller: &Caller,
    uid: &str,
    old: Option<&AccessReviewSpec>,
    new: &AccessReviewSpec,
) -> Result<AccessReviewSpec, Denied> {
    let touched = check(rules, caller, old, new)?;
    if touched.is_empty() {
        return Ok(new.clone());
    }
    let keyring = rules.keyring()?;
    let mut out = new.clone();
    for (i, role) in touched {
        let Some(entry) = out.decisions.get_mut(i) else {
            continue;
        };
        entry.time = Some(rules.stamp());
        entry.assignment_uid = rules
            .catalog
            .assignments
            .get(&entry.assignment)
            .and_then(|a| a.metadata.uid.clone());
        entry.reviewer_as = Some(role);
        entry.attestation = None;
        entry.attestation = Some(keyring.sign_review_decision(uid, entry));
    }
    Ok(out)
}

/// Checks a write after mutation: each entry the caller touched carries a fresh stamp and the
/// webhook's signature over it.
pub fn validate(
    rules: &Rules<'_>,
    caller: &Caller,
    uid: &str,
    old: Option<&AccessReviewSpec>,
    new: &AccessReviewSpec,
) -> Result<(), Denied> {
    let touched = check(rules, caller, old, new)?;
    if touched.is_empty() {
        return Ok(());
    }
    let keyring = rules.keyring()?;
    for (i, role) in touched {
        let Some(entry) = new.decisions.get(i) else {
            continue;
        };
        let fresh = entry
            .time
            .as_ref()
            .is_some_and(|t| rules.now.duration_since(t.0).abs() <= SignedDuration::from_mins(5));
        let same_uid = entry.assignment_uid
            == rules
                .catalog
                .assignments
                .get(&entry.assignment)
                .and_then(|a| a.metadata.uid.clone());
        if !fresh
            || !same_uid
            || entry.reviewer_as.as_deref() != Some(role.as_str())
            || !keyring.verify_review_decision(uid, entry)
        {
            return Err(deny(
                format!("{}.attestation", field(entry)),
                "is not the admission webhook's signature over this entry",
            ));
        }
    }
    Ok(())
}
