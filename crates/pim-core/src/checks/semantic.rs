//! Checks of one object against a catalog of the others: references, policy caps, schedules,
//! requests against their policy, and conflicts between PimGroups. Pure: `now` is an argument.
//!
//! The admission webhook calls [`check_object`] for the object under review against the live
//! catalog; `validate` calls it for every object of the manifests against a catalog of them all.

use jiff::Timestamp;

use super::finding::{Finding, rules};
use super::object::PimObject;
use super::references::{Resolution, missing_policy, resolve};
use crate::api::conditions::reasons;
use crate::api::eligible_assignment::Schedule;
use crate::api::pim_group::DirectoryGroupRef;
use crate::api::{AccessPolicy, AccessReview, ActivationRequest, EligibleAssignment, PimGroup};
use crate::core::activation::{requested_start, validate_request_created};
use crate::core::eligibility::{AssignmentState, AssignmentWindow, assignment_window, covering};
use crate::core::policy::Policy;
use crate::core::{duration, violation::Violation};
use crate::engine::Catalog;
use crate::engine::catalog::created_at;

/// Every semantic finding for `object` at `now`, named after the object.
pub fn check_object(catalog: &Catalog, object: &PimObject, now: Timestamp) -> Vec<Finding> {
    let findings = match object {
        PimObject::AccessPolicy(policy) => check_policy(policy),
        PimObject::PimGroup(group) => check_group(catalog, group),
        PimObject::EligibleAssignment(assignment) => check_assignment(catalog, assignment, now),
        PimObject::ActivationRequest(request) => check_request(catalog, request, now),
        PimObject::AccessReview(review) => check_review(catalog, review),
    };
    let (kind, name) = (object.kind(), object.name());
    findings
        .into_iter()
        .map(|f| f.on(kind.as_str(), Some(name)))
        .collect()
}

/// An AccessPolicy's values against the hard caps and each other: `Policy::from_spec` decides.
pub fn check_policy(policy: &AccessPolicy) -> Vec<Finding> {
    let Err(violations) = Policy::from_spec(&policy.spec) else {
        return Vec::new();
    };
    violations.iter().map(Finding::from_violation).collect()
}

/// An AccessReview's schedule, and the PimGroups and selector of its scope.
pub fn check_review(catalog: &Catalog, review: &AccessReview) -> Vec<Finding> {
    let mut out: Vec<Finding> = match crate::engine::review::settings(&review.spec) {
        Ok(_) => Vec::new(),
        Err(violations) => violations.iter().map(Finding::from_violation).collect(),
    };
    let scope = &review.spec.scope;
    for (i, group) in scope.groups.iter().enumerate() {
        if !catalog.groups.contains_key(group) {
            out.push(
                Finding::new(
                    rules::GROUP_NOT_FOUND,
                    format!("spec.scope.groups[{i}]"),
                    format!("PimGroup {group:?} does not exist"),
                )
                .hint(format!(
                    "create PimGroup {group:?}, or remove it from spec.scope.groups"
                )),
            );
        }
    }
    if let Some(selector) = &scope.group_selector {
        let problem = crate::engine::review::selector_problem(selector).or_else(|| {
            kube::core::Selector::try_from(selector.clone())
                .err()
                .map(|e| e.to_string())
        });
        if let Some(problem) = problem {
            out.push(Finding::new(
                rules::INVALID_SELECTOR,
                "spec.scope.groupSelector",
                problem,
            ));
        }
    }
    out
}

/// A PimGroup's policy references, and whether another PimGroup manages the same directory group.
pub fn check_group(catalog: &Catalog, group: &PimGroup) -> Vec<Finding> {
    let spec = &group.spec;
    let mut out: Vec<Finding> = [
        Some((
            "spec.roles.member.policy",
            spec.roles.member.policy.as_str(),
        )),
        spec.roles
            .owner
            .as_ref()
            .map(|o| ("spec.roles.owner.policy", o.policy.as_str())),
    ]
    .into_iter()
    .flatten()
    .filter_map(|(path, policy)| missing_policy(catalog, path, policy))
    .collect();
    if spec.roles.owner.is_some() {
        out.push(Finding::new(
            rules::LAST_OWNER,
            "spec.roles.owner",
            "the owner role is managed: Entra refuses to remove a group's last owner (\"The group must have at least one owner\"), so a just-in-time owner left as the only owner keeps ownership until another owner is added",
        ));
    }

    let name = group.metadata.name.as_deref().unwrap_or_default();
    for (other_name, other) in &catalog.groups {
        if other_name == name || other.spec.directory != spec.directory {
            continue;
        }
        if let Some((path, what)) = same_directory_group(&spec.group, &other.spec.group) {
            out.push(
                Finding::new(
                    rules::DIRECTORY_GROUP_CONFLICT,
                    path,
                    format!(
                        "PimGroup {other_name:?} also manages {what} in directory {:?}",
                        spec.directory
                    ),
                )
                .hint(format!(
                    "keep one PimGroup for {what}; merge {name:?} and {other_name:?}"
                )),
            );
        }
    }
    out
}

/// Where two group references name the same directory group: the same id, or the same display
/// name (directories compare both without regard to case).
fn same_directory_group(
    a: &DirectoryGroupRef,
    b: &DirectoryGroupRef,
) -> Option<(&'static str, String)> {
    let same = |x: &Option<String>, y: &Option<String>| {
        x.as_deref()
            .zip(y.as_deref())
            .is_some_and(|(x, y)| x.eq_ignore_ascii_case(y))
    };
    if same(&a.id, &b.id) {
        return Some((
            "spec.group.id",
            format!("group id {:?}", a.id.as_deref().unwrap_or_default()),
        ));
    }
    if same(&a.display_name, &b.display_name) {
        return Some((
            "spec.group.displayName",
            format!("group {:?}", a.display_name.as_deref().unwrap_or_default()),
        ));
    }
    None
}

/// An assignment's group and role, its schedule under the policy's caps, and whether it ended.
pub fn check_assignment(
    catalog: &Catalog,
    assignment: &EligibleAssignment,
    now: Timestamp,
) -> Vec<Finding> {
    let spec = &assignment.spec;
    let mut out = owner_is_a_group(assignment);
    let target = catalog.target(&spec.group, spec.role);
    let policy = match resolve(catalog, &target, &spec.group, spec.role) {
        Resolution::Usable(policy) => policy,
        Resolution::Broken(finding) => {
            out.push(finding);
            out.extend(schedule_problems(assignment, now));
            return out;
        }
        Resolution::ReportedElsewhere => {
            out.extend(schedule_problems(assignment, now));
            return out;
        }
    };
    let window = match catalog.assignment_window(assignment, now) {
        Ok(window) => window,
        Err(violations) => {
            out.extend(violations.iter().map(Finding::from_violation));
            return out;
        }
    };
    if let Some(denial) = &window.denied {
        out.push(Finding::new(
            rules::REVIEW_DENIED,
            "",
            format!(
                "access review {:?} denied this assignment ({}) at {}",
                denial.review, denial.by, denial.at
            ),
        ));
        return out;
    }
    let end_field = end_field(&spec.schedule);
    if let (Some(clipped), Some(end)) = (&window.clipped, window.end) {
        let cap = duration::format(end.duration_since(window.start));
        let hint = match end_field {
            "spec.schedule.end" => format!("set spec.schedule.end to {end} or earlier"),
            "spec.schedule.duration" => format!("set spec.schedule.duration to {cap} or less"),
            _ => format!(
                "replace `permanent: true` with `duration: {cap}` or less, or allow permanent assignments in the AccessPolicy's spec.assignment"
            ),
        };
        out.push(
            Finding::new(
                rules::EXCEEDS_POLICY,
                end_field,
                format!("{clipped}, so the operator ends it at {end}"),
            )
            .hint(hint),
        );
    }
    if let Some(end) = window.end
        && window.ends_within(policy.eligibility_ending_lead, now)
    {
        out.push(ending_soon(assignment, policy, &window, end, now));
    }
    if window.state(now) == AssignmentState::Ended {
        let end = window.end.map(|e| e.to_string()).unwrap_or_default();
        let name = assignment.metadata.name.as_deref().unwrap_or_default();
        out.push(
            Finding::new(
                rules::SCHEDULE_ENDED,
                end_field,
                format!("ended at {end}, before {now}"),
            )
            .hint(format!(
                "delete EligibleAssignment {name:?}, or move {end_field} so that it ends after {now}"
            )),
        );
    }
    out
}

/// The warning that an assignment ends within its policy's reminder lead, so that the pull
/// request that renews it is written before it ends.
fn ending_soon(
    assignment: &EligibleAssignment,
    policy: &Policy,
    window: &AssignmentWindow,
    end: Timestamp,
    now: Timestamp,
) -> Finding {
    let spec = &assignment.spec;
    let end_field = end_field(&spec.schedule);
    let name = assignment.metadata.name.as_deref().unwrap_or_default();
    let cap = duration::format(policy.assignments.limits(spec.assignment_type).1);
    let renew = if window.clipped.is_some() && end_field == "spec.schedule.permanent" {
        format!(
            "the policy caps it at {cap} from spec.schedule.start, so move spec.schedule.start later (with spec.schedule.permanent it then lasts {cap} from there)"
        )
    } else if window.clipped.is_some() {
        format!(
            "the policy caps it at {cap} from spec.schedule.start, so move spec.schedule.start later and keep {end_field} within {cap} of it"
        )
    } else if end_field == "spec.schedule.duration" {
        format!("lengthen spec.schedule.duration, to at most {cap}")
    } else {
        format!("set {end_field} later than {end}, up to {cap} after the start")
    };
    Finding::new(
        rules::ELIGIBILITY_ENDING,
        end_field,
        format!(
            "ends at {end}, in {}: within the {} that the policy reminds ahead (spec.notifications.eligibilityEndingLead)",
            duration::format(end.duration_since(now)),
            duration::format(policy.eligibility_ending_lead)
        ),
    )
    .hint(format!(
        "renew it before {end}: {renew}; or delete EligibleAssignment {name:?} when the access is no longer needed"
    ))
}

/// An Active owner assignment to a group would make the group itself an owner, which Entra
/// refuses: "Owners can be users or service principals" (Graph v1.0, "Add owners" of a group).
/// An Eligible one is fine: its group's members activate ownership for themselves.
fn owner_is_a_group(assignment: &EligibleAssignment) -> Vec<Finding> {
    let spec = &assignment.spec;
    let active = spec.assignment_type == crate::api::eligible_assignment::AssignmentType::Active;
    match spec.principal.group.as_deref() {
        Some(group) if active && spec.role == crate::api::common::Role::Owner => {
            vec![
                Finding::new(
                    rules::OWNER_IS_A_GROUP,
                    "spec.principal.group",
                    format!(
                        "group {group:?} cannot hold the owner role: a group's owners can only be users or service principals"
                    ),
                )
                .hint(format!(
                    "name a user in spec.principal.user instead of group {group:?}, or set spec.type: Eligible so that the members of {group:?} activate ownership one at a time"
                )),
            ]
        }
        _ => Vec::new(),
    }
}

/// What makes a schedule unusable whatever its policy says (an end before the start, a zero
/// duration, a malformed principal), for assignments whose policy cannot be found.
fn schedule_problems(assignment: &EligibleAssignment, now: Timestamp) -> Vec<Finding> {
    let created = created_at(assignment, now);
    match assignment_window(&assignment.spec, created, &Policy::default().assignments) {
        Ok(_) => Vec::new(),
        Err(violations) => violations
            .iter()
            .filter(|v| {
                matches!(
                    v.reason,
                    reasons::INVALID_SCHEDULE | reasons::INVALID_PRINCIPAL
                )
            })
            .map(Finding::from_violation)
            .collect(),
    }
}

/// The schedule field that decides an assignment's end.
fn end_field(schedule: &Schedule) -> &'static str {
    if schedule.end.is_some() {
        "spec.schedule.end"
    } else if schedule.duration.is_some() {
        "spec.schedule.duration"
    } else if schedule.permanent.is_some() {
        "spec.schedule.permanent"
    } else {
        "spec.schedule"
    }
}

/// A request against its policy, and its principal's eligibility when one is stamped.
///
/// Two rules are left to admission: the principal is stamped by the webhook from the caller, so
/// its absence in a manifest is expected; and MFA is read from the caller's token claims.
///
/// `startTime` is checked against the policy's `maxStartDelay` from the request's creation: its
/// `creationTimestamp` when it has one (an object read from a cluster), else the webhook's stamp
/// (`spec.requester.stampedAt`), else `now`: a manifest not yet applied would be created about
/// when it is applied (`validate --now` sets that moment; the webhook checks at admission).
pub fn check_request(
    catalog: &Catalog,
    request: &ActivationRequest,
    now: Timestamp,
) -> Vec<Finding> {
    let spec = &request.spec;
    let role = spec.role();
    let target = catalog.target(&spec.group, role);
    let policy = match resolve(catalog, &target, &spec.group, role) {
        Resolution::Usable(policy) => policy,
        Resolution::Broken(finding) => return vec![finding],
        Resolution::ReportedElsewhere => return Vec::new(),
    };
    let created = request
        .metadata
        .creation_timestamp
        .as_ref()
        .or_else(|| spec.requester.as_ref().and_then(|r| r.stamped_at.as_ref()))
        .map_or(now, |t| t.0);
    let mut out: Vec<Finding> = match validate_request_created(spec, policy, true, Some(created)) {
        Ok(_) => Vec::new(),
        Err(violations) => violations
            .iter()
            .filter(|v| v.reason != reasons::PRINCIPAL_MISSING)
            .map(Finding::from_violation)
            .collect(),
    };
    if let Some(principal) = spec.principal.as_deref().filter(|p| !p.trim().is_empty()) {
        let start = requested_start(spec, now);
        // Directory memberships are unknown offline: an assignment to any group counts.
        let eligibilities = catalog.eligibilities(principal, &spec.group, role, now, |_| true);
        if covering(&eligibilities, start).is_none() {
            let violation = Violation::new(
                "spec.principal",
                reasons::NOT_ELIGIBLE,
                format!(
                    "{principal:?} holds no eligible assignment for the {role} role of {:?} at {start}",
                    spec.group
                ),
                format!(
                    "add an EligibleAssignment of {principal:?} to the {role} role of PimGroup {:?} whose schedule covers {start}, or set spec.startTime within an existing one",
                    spec.group
                ),
            );
            out.push(Finding::from_violation(&violation));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::PrincipalRef;
    use crate::api::eligible_assignment::{AssignmentType, EligibleAssignmentSpec};
    use crate::api::pim_group::{GroupRoles, PimGroupSpec, RoleSettings};

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn group(name: &str, display_name: &str, policy: &str) -> PimGroup {
        PimGroup::new(
            name,
            PimGroupSpec {
                directory: "entra".into(),
                group: DirectoryGroupRef {
                    display_name: Some(display_name.into()),
                    ..Default::default()
                },
                roles: GroupRoles {
                    member: RoleSettings {
                        policy: policy.into(),
                    },
                    owner: None,
                },
                ..Default::default()
            },
        )
    }

    /// The live catalog, as the admission webhook has it.
    fn catalog() -> Catalog {
        let mut catalog = Catalog::default();
        catalog.insert_policy(AccessPolicy::new("ops", Default::default()));
        catalog.insert_group(group("ops", "Ops-Admins", "ops"));
        catalog
    }

    #[test]
    fn an_active_owner_assignment_to_a_group_is_refused_and_the_owner_role_warns() {
        let mut catalog = catalog();
        let mut owned = group("owned", "Owned", "ops");
        owned.spec.roles.owner = Some(RoleSettings {
            policy: "ops".into(),
        });
        catalog.insert_group(owned.clone());
        let rules_of = |findings: Vec<Finding>| -> Vec<&'static str> {
            findings.iter().map(|f| f.rule).collect()
        };
        assert_eq!(rules_of(check_group(&catalog, &owned)), ["last-owner"]);
        let assignment = |principal: PrincipalRef, kind: AssignmentType| {
            EligibleAssignment::new(
                "a",
                EligibleAssignmentSpec {
                    group: "owned".into(),
                    role: crate::api::common::Role::Owner,
                    assignment_type: kind,
                    principal,
                    justification: Some("x".into()),
                    ..Default::default()
                },
            )
        };
        let now = ts("2026-03-02T09:00:00Z");
        let findings = check_assignment(
            &catalog,
            &assignment(PrincipalRef::group("admins"), AssignmentType::Active),
            now,
        );
        assert_eq!(findings[0].rule, "owner-is-a-group", "{findings:?}");
        assert_eq!(findings[0].path, "spec.principal.group");
        // Eligible: the group's members activate ownership for themselves.
        assert!(
            check_assignment(
                &catalog,
                &assignment(PrincipalRef::group("admins"), AssignmentType::Eligible),
                now,
            )
            .iter()
            .all(|f| f.rule != "owner-is-a-group")
        );
        assert!(
            check_assignment(
                &catalog,
                &assignment(PrincipalRef::user("alice"), AssignmentType::Active),
                now,
            )
            .iter()
            .all(|f| f.rule != "owner-is-a-group")
        );
    }

    /// One new object, checked against a catalog that does not hold it yet: the webhook's case.
    #[test]
    fn a_new_object_is_checked_against_the_live_catalog() {
        let new_group = PimObject::PimGroup(group("ops-2", "ops-admins", "missing"));
        let findings = check_object(&catalog(), &new_group, ts("2026-11-01T00:00:00Z"));
        let got: Vec<_> = findings
            .iter()
            .map(|f| (f.rule, f.path.as_str(), f.name.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "policy-not-found",
                    "spec.roles.member.policy",
                    Some("ops-2")
                ),
                (
                    "directory-group-conflict",
                    "spec.group.displayName",
                    Some("ops-2")
                ),
            ]
        );
        // Re-checking the object already in the catalog finds no conflict with itself.
        let existing = PimObject::PimGroup(group("ops", "Ops-Admins", "ops"));
        assert_eq!(
            check_object(&catalog(), &existing, ts("2026-11-01T00:00:00Z")),
            []
        );
    }

    #[test]
    fn assignment_caps_and_ends_are_warnings() {
        let assignment = EligibleAssignment::new(
            "a",
            EligibleAssignmentSpec {
                group: "ops".into(),
                principal: PrincipalRef::user("alice"),
                schedule: Schedule {
                    start: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(ts(
                        "2025-01-01T00:00:00Z",
                    ))),
                    duration: Some("400d".into()),
                    ..Default::default()
                },
                justification: Some("on call".into()),
                ..Default::default()
            },
        );
        let findings = check_assignment(&catalog(), &assignment, ts("2026-11-01T00:00:00Z"));
        let got: Vec<_> = findings.iter().map(|f| (f.rule, f.severity)).collect();
        assert_eq!(
            got,
            [
                ("exceeds-policy", crate::checks::Severity::Warning),
                ("schedule-ended", crate::checks::Severity::Warning),
            ]
        );
        assert_eq!(
            findings[0].message,
            "the policy allows eligible assignments of at most 365d, so the operator ends it at 2026-01-01T00:00:00Z"
        );
    }

    #[test]
    fn an_assignment_ending_within_the_policys_lead_is_warned_about() {
        use crate::api::access_policy::{AccessPolicySpec, NotificationSettings};
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        let ending = |end: &str| {
            EligibleAssignment::new(
                "ops-alice",
                EligibleAssignmentSpec {
                    group: "ops".into(),
                    principal: PrincipalRef::user("alice"),
                    schedule: Schedule {
                        start: Some(Time(ts("2026-06-01T00:00:00Z"))),
                        end: Some(Time(ts(end))),
                        ..Default::default()
                    },
                    justification: Some("on call".into()),
                    ..Default::default()
                },
            )
        };
        let now = ts("2026-11-05T00:00:00Z");
        let rules_at = |catalog: &Catalog, end: &str| -> Vec<&'static str> {
            check_assignment(catalog, &ending(end), now)
                .iter()
                .map(|f| f.rule)
                .collect()
        };
        // The default lead is 14 days.
        assert_eq!(
            rules_at(&catalog(), "2026-11-15T00:00:00Z"),
            ["eligibility-ending"]
        );
        assert!(rules_at(&catalog(), "2026-11-25T00:00:00Z").is_empty());
        // Already over: that is schedule-ended, not a reminder.
        assert_eq!(
            rules_at(&catalog(), "2026-11-01T00:00:00Z"),
            ["schedule-ended"]
        );
        let finding = check_assignment(&catalog(), &ending("2026-11-15T12:00:00Z"), now).remove(0);
        assert_eq!(finding.path, "spec.schedule.end");
        assert_eq!(finding.severity, crate::checks::Severity::Warning);
        assert_eq!(
            finding.message,
            "ends at 2026-11-15T12:00:00Z, in 10d12h: within the 14d that the policy reminds ahead (spec.notifications.eligibilityEndingLead)"
        );
        assert_eq!(
            finding.hint,
            "renew it before 2026-11-15T12:00:00Z: set spec.schedule.end later than 2026-11-15T12:00:00Z, up to 365d after the start; or delete EligibleAssignment \"ops-alice\" when the access is no longer needed"
        );
        // The policy's own lead.
        let mut longer = catalog();
        longer.insert_policy(AccessPolicy::new(
            "ops",
            AccessPolicySpec {
                notifications: Some(NotificationSettings {
                    eligibility_ending_lead: Some("30d".into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ));
        assert_eq!(
            rules_at(&longer, "2026-11-25T00:00:00Z"),
            ["eligibility-ending"]
        );
        assert!(rules_at(&longer, "2026-12-06T00:00:00Z").is_empty());
    }
}
