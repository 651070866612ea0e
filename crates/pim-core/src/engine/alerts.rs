//! The policy's security alerts (Entra PIM's "roles activated too frequently", "administrators
//! aren't using their privileged roles", and activation of a critical role without approval),
//! as conditions on the object concerned. Pure: the catalog, the object and `now` in.

use jiff::{SignedDuration, Timestamp};

use super::catalog::Catalog;
use crate::api::conditions::{reasons, types};
use crate::api::eligible_assignment::AssignmentType;
use crate::api::{AccessPolicy, ActivationRequest, ActivationRequestStatus, EligibleAssignment};
use crate::core::duration;
use crate::core::identity::same_identity;
use crate::core::lifecycle::{ConditionState, ConditionStatus};
use crate::core::time::add;

/// The condition types alerts use: a policy that no longer asks for one drops it.
pub const ALERT_CONDITIONS: &[&str] = &[
    types::ACTIVATED_TOO_OFTEN,
    types::ACTIVATED_WITHOUT_APPROVAL,
    types::STALE,
];

fn policy_of<'a>(
    catalog: &'a Catalog,
    group: &str,
    role: crate::api::common::Role,
) -> Option<&'a AccessPolicy> {
    let name = catalog.policy_name(group, role)?;
    catalog.policies.get(name).map(|p| p.as_ref())
}

fn firing(type_: &'static str, message: String) -> ConditionState {
    ConditionState {
        type_,
        status: ConditionStatus::True,
        reason: type_,
        message,
    }
}

/// The alerts an activated request raises under its policy, given its status as this pass
/// leaves it. Nothing before the directory confirmed the activation, nor once the request has
/// finished: alerts turned on in a policy later are not raised on its past requests (nobody
/// is to be told of months of history at once). Alerts are about what happened: the caller
/// keeps one once raised (conditions merge by type), so a later change of the policy or the
/// deletion of older requests does not take it back.
pub fn request_alerts(
    catalog: &Catalog,
    request: &ActivationRequest,
    status: &ActivationRequestStatus,
) -> Vec<ConditionState> {
    let spec = &request.spec;
    if status.phase.is_some_and(crate::api::Phase::is_terminal) {
        return Vec::new();
    }
    let (Some(activated), Some(principal)) = (
        status.activated_at.as_ref().map(|t| t.0),
        spec.principal.as_deref(),
    ) else {
        return Vec::new();
    };
    let Some(policy) = policy_of(catalog, &spec.group, spec.role()) else {
        return Vec::new();
    };
    let policy_name = policy.metadata.name.as_deref().unwrap_or_default();
    let Some(alerts) = policy.spec.alerts.as_ref() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if let Some(frequency) = &alerts.activated_too_often
        && let Ok(within) = duration::parse("alerts.activatedTooOften.within", &frequency.within)
    {
        let since = add(activated, -within);
        let rule = catalog.principals().names;
        let count = catalog
            .requests
            .values()
            .filter(|r| r.spec.group == spec.group && r.spec.role() == spec.role())
            .filter(|r| {
                r.spec
                    .principal
                    .as_deref()
                    .is_some_and(|p| same_identity(p, principal, rule))
            })
            // This request counts once, even when the catalog holds an older copy of it.
            .filter(|r| r.metadata.name != request.metadata.name)
            .filter_map(|r| r.status.as_ref()?.activated_at.as_ref().map(|t| t.0))
            // API times have whole seconds: another activation in the same second counts.
            .filter(|at| *at > since && *at <= activated)
            .count()
            + 1;
        if count >= usize::try_from(frequency.activations).unwrap_or(usize::MAX) {
            out.push(firing(
                types::ACTIVATED_TOO_OFTEN,
                format!(
                    "{principal} activated the {} role of {} {count} times within {} (AccessPolicy {policy_name}: alerts.activatedTooOften is {} within {}); ask why: a maximum duration too short for the work, or a script working around PIM",
                    spec.role(),
                    spec.group,
                    frequency.within,
                    frequency.activations,
                    frequency.within
                ),
            ));
        }
    }
    if alerts.critical == Some(true) && status.approved_by.is_empty() {
        out.push(firing(
            types::ACTIVATED_WITHOUT_APPROVAL,
            format!(
                "activated without an approval, although AccessPolicy {policy_name} marks the role critical (alerts.critical); require approval (spec.activation.approval)"
            ),
        ));
    }
    out
}

/// When the directory last confirmed an activation under `assignment`: the latest of the
/// requests matched to it, and of what its status recorded before those requests were deleted.
pub fn last_activated(catalog: &Catalog, assignment: &EligibleAssignment) -> Option<Timestamp> {
    let name = assignment.metadata.name.as_deref()?;
    let recorded = assignment
        .status
        .as_ref()
        .and_then(|s| s.last_activated_at.as_ref())
        .map(|t| t.0);
    catalog
        .requests
        .values()
        .filter_map(|r| r.status.as_ref())
        .filter(|s| s.matched_assignment.as_deref() == Some(name))
        .filter_map(|s| s.activated_at.as_ref().map(|t| t.0))
        .chain(recorded)
        .max()
}

/// The `Stale` condition of an Eligible assignment whose policy sets
/// `alerts.notActivatedFor`, and when it would turn stale while it is not yet. `None` when the
/// alert does not apply (another type, no such setting, not in effect).
///
/// The period runs from the latest of the assignment's start, its last activation, and
/// `counted_from`: when the operator began counting (its first `Stale` verdict on the
/// assignment). The operator cannot know of activations whose requests were deleted before it
/// kept `lastActivatedAt`, so turning the alert on (or upgrading) starts the count then rather
/// than calling assignments in use stale.
pub fn staleness(
    catalog: &Catalog,
    assignment: &EligibleAssignment,
    effective_since: Option<Timestamp>,
    last_activated: Option<Timestamp>,
    counted_from: Option<Timestamp>,
    now: Timestamp,
) -> Option<(ConditionState, Option<Timestamp>)> {
    if assignment.spec.assignment_type != AssignmentType::Eligible {
        return None;
    }
    let policy = policy_of(catalog, &assignment.spec.group, assignment.spec.role)?;
    let text = policy.spec.alerts.as_ref()?.not_activated_for.as_deref()?;
    let limit: SignedDuration = duration::parse("alerts.notActivatedFor", text).ok()?;
    let since = last_activated
        .max(effective_since)?
        .max(counted_from.unwrap_or(Timestamp::MIN));
    let stale_at = add(since, limit);
    let policy_name = policy.metadata.name.as_deref().unwrap_or_default();
    let principal = assignment.spec.principal.to_string();
    Some(if now >= stale_at {
        let what = match last_activated {
            Some(at) if at >= since => format!("last activated at {at}"),
            _ => format!("not activated since {since}"),
        };
        (
            firing(
                types::STALE,
                format!(
                    "{principal} has not activated this role for {text} ({what}; AccessPolicy {policy_name}: alerts.notActivatedFor); review whether the eligibility is still needed"
                ),
            ),
            None,
        )
    } else {
        (
            ConditionState {
                type_: types::STALE,
                status: ConditionStatus::False,
                reason: reasons::ACTIVATED_RECENTLY,
                message: format!("stale at {stale_at} unless activated before"),
            },
            Some(stale_at),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::PimGroup;
    use crate::api::access_policy::{AccessPolicySpec, ActivationFrequency, PolicyAlerts};
    use crate::api::activation_request::ActivationRequestSpec;
    use crate::api::common::PrincipalRef;
    use crate::api::eligible_assignment::EligibleAssignmentSpec;
    use crate::api::pim_group::{GroupRoles, PimGroupSpec, RoleSettings};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn catalog(alerts: PolicyAlerts) -> Catalog {
        let mut c = Catalog::default();
        c.insert_policy(AccessPolicy::new(
            "p",
            AccessPolicySpec {
                alerts: Some(alerts),
                ..Default::default()
            },
        ));
        c.insert_group(PimGroup::new(
            "g",
            PimGroupSpec {
                roles: GroupRoles {
                    member: RoleSettings { policy: "p".into() },
                    owner: None,
                },
                ..Default::default()
            },
        ));
        c
    }

    fn activated(name: &str, principal: &str, at: &str) -> ActivationRequest {
        let mut r = ActivationRequest::new(
            name,
            ActivationRequestSpec {
                group: "g".into(),
                principal: Some(principal.into()),
                ..Default::default()
            },
        );
        r.status = Some(ActivationRequestStatus {
            activated_at: Some(Time(ts(at))),
            matched_assignment: Some("alice-g".into()),
            ..Default::default()
        });
        r
    }

    fn types_of(alerts: &[ConditionState]) -> Vec<&str> {
        alerts.iter().map(|a| a.type_).collect()
    }

    fn too_often(activations: i32, within: &str) -> PolicyAlerts {
        PolicyAlerts {
            activated_too_often: Some(ActivationFrequency {
                activations,
                within: within.into(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_activation_that_reaches_the_count_within_the_period_is_too_often() {
        let mut c = catalog(too_often(3, "1h"));
        // Outside the hour, another principal's, and one spelled in other letter case.
        for r in [
            activated("old", "alice@contoso.com", "2026-03-02T08:30:00Z"),
            activated("bob", "bob@contoso.com", "2026-03-02T09:30:00Z"),
            activated("first", "Alice@Contoso.com", "2026-03-02T09:20:00Z"),
        ] {
            c.insert_request(r);
        }
        let second = activated("second", "alice@contoso.com", "2026-03-02T09:40:00Z");
        let status = second.status.clone().unwrap();
        assert!(types_of(&request_alerts(&c, &second, &status)).is_empty());
        c.insert_request(second);
        let third = activated("third", "alice@contoso.com", "2026-03-02T09:59:00Z");
        let status = third.status.clone().unwrap();
        let alerts = request_alerts(&c, &third, &status);
        assert_eq!(types_of(&alerts), [types::ACTIVATED_TOO_OFTEN]);
        assert!(
            alerts[0].message.contains("3 times within 1h"),
            "{}",
            alerts[0].message
        );
        // Not yet activated, or already finished: nothing.
        let waiting = ActivationRequestStatus::default();
        assert!(request_alerts(&c, &third, &waiting).is_empty());
        let finished = ActivationRequestStatus {
            phase: Some(crate::api::Phase::Expired),
            ..status
        };
        assert!(request_alerts(&c, &third, &finished).is_empty());
    }

    #[test]
    fn an_unapproved_activation_of_a_critical_role_is_an_alert() {
        let critical = PolicyAlerts {
            critical: Some(true),
            ..Default::default()
        };
        let c = catalog(critical);
        let r = activated("r", "alice@contoso.com", "2026-03-02T09:00:00Z");
        let mut status = r.status.clone().unwrap();
        assert_eq!(
            types_of(&request_alerts(&c, &r, &status)),
            [types::ACTIVATED_WITHOUT_APPROVAL]
        );
        status.approved_by = vec!["bob@contoso.com".into()];
        assert!(request_alerts(&c, &r, &status).is_empty());
        let relaxed = catalog(PolicyAlerts::default());
        assert!(request_alerts(&relaxed, &r, &r.status.clone().unwrap()).is_empty());
    }

    fn assignment(kind: AssignmentType) -> EligibleAssignment {
        EligibleAssignment::new(
            "alice-g",
            EligibleAssignmentSpec {
                group: "g".into(),
                principal: PrincipalRef::user("alice@contoso.com"),
                assignment_type: kind,
                ..Default::default()
            },
        )
    }

    #[test]
    fn an_eligible_assignment_not_activated_for_the_period_is_stale() {
        let stale_after = PolicyAlerts {
            not_activated_for: Some("30d".into()),
            ..Default::default()
        };
        let mut c = catalog(stale_after);
        let a = assignment(AssignmentType::Eligible);
        let since = Some(ts("2026-03-01T00:00:00Z"));
        let state = |c: &Catalog, now: &str| {
            let last = last_activated(c, &a);
            staleness(c, &a, since, last, None, ts(now)).map(|(s, at)| (s.status, at))
        };
        assert_eq!(
            state(&c, "2026-03-30T23:59:59Z"),
            Some((ConditionStatus::False, Some(ts("2026-03-31T00:00:00Z"))))
        );
        assert_eq!(
            state(&c, "2026-03-31T00:00:00Z"),
            Some((ConditionStatus::True, None))
        );
        // An activation since moves the point it turns stale.
        c.insert_request(activated("r", "alice@contoso.com", "2026-03-20T00:00:00Z"));
        assert_eq!(
            state(&c, "2026-03-31T00:00:00Z"),
            Some((ConditionStatus::False, Some(ts("2026-04-19T00:00:00Z"))))
        );
        // Recorded in status, it counts after the request is deleted.
        let mut recorded = a.clone();
        recorded.status = Some(crate::api::eligible_assignment::EligibleAssignmentStatus {
            last_activated_at: Some(Time(ts("2026-03-25T00:00:00Z"))),
            ..Default::default()
        });
        assert_eq!(
            last_activated(&c, &recorded),
            Some(ts("2026-03-25T00:00:00Z"))
        );
        // Active-type assignments grant without activation: never stale.
        let active = assignment(AssignmentType::Active);
        assert!(staleness(&c, &active, since, None, None, ts("2027-01-01T00:00:00Z")).is_none());
        // No setting, no condition.
        let quiet = catalog(PolicyAlerts::default());
        assert!(staleness(&quiet, &a, since, None, None, ts("2027-01-01T00:00:00Z")).is_none());
        // Counting began later than the start (the alert was turned on then): from then.
        let counted = staleness(
            &c,
            &a,
            since,
            None,
            Some(ts("2026-06-01T00:00:00Z")),
            ts("2026-06-15T00:00:00Z"),
        )
        .map(|(s, at)| (s.status, at));
        assert_eq!(
            counted,
            Some((ConditionStatus::False, Some(ts("2026-07-01T00:00:00Z"))))
        );
    }
}
