//! Who may write which AccessReview decisions, and what is stamped and signed: each reviewer
//! writes only their own entries, only in the instance running, only on assignments under
//! review that the review as stored lets them decide (never their own unless `selfReview`).
//! People change nothing else of a review: its scope, reviewers and schedule change through
//! Git (a GitOps tool's service account), so nobody widens a review to decide under it.
//! Entries of instances whose end is on record no longer count and may be dropped by anyone;
//! the webhook drops them itself whenever it stamps a new one, so the list does not grow.

use std::collections::BTreeMap;

use jiff::SignedDuration;

use super::activation::{Denied, Rules, deny};
use super::identity::Caller;
use crate::api::AccessReview;
use crate::api::access_review::{AccessReviewSpec, ReviewDecision};
use crate::core::identity::same_identity;
use crate::engine::review::{
    recorded_complete, reviewer_role, running_instance, settings, subjects,
};

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

/// Whether `new` differs from `old` only by dropped entries of instances whose end is on
/// record: what anyone, a tool included, may do.
pub fn only_pruned(old: Option<&AccessReview>, new: &AccessReviewSpec) -> bool {
    let Some(old) = old else {
        return new.decisions.is_empty();
    };
    let (before, after) = (by_key(&old.spec), by_key(new));
    after.iter().all(|(k, d)| before.get(k) == Some(d))
        && before
            .iter()
            .filter(|(k, _)| !after.contains_key(*k))
            .all(|(_, d)| recorded_complete(old, &d.instance))
}

/// Checks a person's write of a review; returns the indexes in `new` of the entries the caller
/// added or changed, each with why the caller may make it (`reviewer_as`).
fn check(
    rules: &Rules<'_>,
    caller: &Caller,
    old: Option<&AccessReview>,
    new: &AccessReviewSpec,
) -> Result<Vec<(usize, String)>, Denied> {
    let names = rules.principals.names;
    let Some(old) = old else {
        if new.decisions.is_empty() {
            return Ok(Vec::new());
        }
        return Err(deny(
            "spec.decisions",
            "decisions are written to an existing AccessReview while an instance runs (`kubectl pim review`), never with the review itself",
        ));
    };
    if without_decisions(&old.spec) != without_decisions(new) {
        return Err(deny(
            "spec",
            format!(
                "{} may change only their own spec.decisions; an AccessReview's scope, reviewers and schedule change through Git (a GitOps tool applies them), so that nobody widens a review to decide under it",
                caller.username
            ),
        ));
    }
    let running = settings(&old.spec)
        .ok()
        .and_then(|s| running_instance(old, &s, rules.now));
    let before = by_key(&old.spec);
    let after = by_key(new);
    for (key, d) in &before {
        if after.contains_key(key) || recorded_complete(old, &d.instance) {
            continue;
        }
        let own = same_identity(d.reviewer.as_str(), &caller.username, names);
        let open = running.as_ref().is_some_and(|w| w.id == d.instance);
        if !own || !open {
            return Err(deny(
                field(d),
                if own {
                    "the instance of this decision has ended: it can no longer be withdrawn"
                        .to_owned()
                } else {
                    format!("only {} may withdraw their decision", d.reviewer)
                },
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
    if changed.is_empty() {
        return Ok(Vec::new());
    }
    let under_review = running
        .as_ref()
        .map(|_| subjects(rules.catalog, &old.spec, rules.now))
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
        match &running {
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
                    "no instance of this review is taking decisions now",
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
            &old.spec,
            assignment,
            &caller.username,
            &caller.groups,
        )
        .map_err(|why| deny(field.clone(), why))?;
        out.push((i, role));
    }
    Ok(out)
}

/// Stamps and signs the caller's own new or changed decisions, and drops the entries of
/// instances whose end is on record. `uid` is the review's.
pub fn mutate(
    rules: &Rules<'_>,
    caller: &Caller,
    uid: &str,
    old: Option<&AccessReview>,
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
    if let Some(old) = old {
        out.decisions
            .retain(|d| !recorded_complete(old, &d.instance));
    }
    Ok(out)
}

/// Checks a write after mutation: each entry the caller touched carries a fresh stamp and the
/// webhook's signature over it.
pub fn validate(
    rules: &Rules<'_>,
    caller: &Caller,
    uid: &str,
    old: Option<&AccessReview>,
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
