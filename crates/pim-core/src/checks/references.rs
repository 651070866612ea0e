//! Cross-references between objects: a request or assignment names a PimGroup and a role, and
//! the group names an AccessPolicy per role. The catalog's own resolution decides; this module
//! only words its answer as a finding with a hint.

use super::finding::{Finding, closest, list_some};
use crate::api::common::Role;
use crate::engine::catalog::{Catalog, ResolvedTarget, target_violation};

/// How a (group, role) resolved for an object that refers to it.
pub enum Resolution<'a> {
    /// The policy parses; checks of the referring object can go on.
    Usable(&'a crate::core::policy::Policy),
    /// The reference is broken; the finding says how.
    Broken(Finding),
    /// The group's policy is missing or invalid. The group's or the policy's own findings say
    /// so; repeating it on every object that refers to the group would only bury it.
    ReportedElsewhere,
}

/// Resolves `group`/`role` for an object whose `spec.group` and `spec.role` name them.
pub fn resolve<'a>(
    catalog: &Catalog,
    target: &'a ResolvedTarget,
    group: &str,
    role: Role,
) -> Resolution<'a> {
    match target {
        ResolvedTarget::Found { policy, .. } => Resolution::Usable(policy),
        ResolvedTarget::PolicyInvalid { .. } | ResolvedTarget::PolicyNotFound { .. } => {
            Resolution::ReportedElsewhere
        }
        ResolvedTarget::GroupNotFound => {
            let known = catalog.groups.keys().map(String::as_str);
            let hint = match closest(group, known.clone()) {
                Some(close) => format!("did you mean `{close}`?"),
                None => format!(
                    "create PimGroup {group:?}, or set spec.group to one of the PimGroups: {}",
                    list_some(known)
                ),
            };
            Resolution::Broken(
                Finding::from_violation(&target_violation(target, group, role)).hint(hint),
            )
        }
        ResolvedTarget::RoleNotManaged => Resolution::Broken(Finding::from_violation(
            &target_violation(target, group, role),
        )),
    }
}

/// A PimGroup's policy reference that names no AccessPolicy, at `path`.
pub fn missing_policy(catalog: &Catalog, path: &str, policy: &str) -> Option<Finding> {
    if catalog.policies.contains_key(policy) {
        return None;
    }
    let known = catalog.policies.keys().map(String::as_str);
    let hint = match closest(policy, known.clone()) {
        Some(close) => format!("did you mean `{close}`?"),
        None => format!(
            "create AccessPolicy {policy:?}, or set {path} to one of the AccessPolicies: {}",
            list_some(known)
        ),
    };
    Some(
        Finding::new(
            super::finding::rules::POLICY_NOT_FOUND,
            path,
            format!("AccessPolicy {policy:?} does not exist"),
        )
        .hint(hint),
    )
}
