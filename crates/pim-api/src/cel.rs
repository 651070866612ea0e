//! Every CEL validation rule of our CRDs, in one table: the expression, the message the API
//! server returns when it fails, and the remedy (what to change, in which field, to what) that
//! `pim-operator validate` and the admission webhook print after the message.
//!
//! The types attach these with `#[x_kube(validation = cel::X.kube())]`, so the CRDs and the
//! table cannot drift apart; a failed rule is found here by its expression.

use std::borrow::Cow;

/// One `x-kubernetes-validations` entry and its remedy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CelRule {
    pub expression: Cow<'static, str>,
    /// What the API server says when the rule fails: the rule, and in short what to do.
    pub message: &'static str,
    /// The fix in full, naming the fields.
    pub remedy: &'static str,
}

impl CelRule {
    /// The rule as kube's derive puts it into the schema.
    pub fn kube(&self) -> kube::core::Rule {
        kube::core::Rule::new(self.expression.to_string()).message(self.message)
    }

    /// The entry of the table whose expression is `expression`.
    pub fn find(expression: &str) -> Option<CelRule> {
        all().into_iter().find(|r| r.expression == expression)
    }
}

const fn rule(expression: &'static str, message: &'static str, remedy: &'static str) -> CelRule {
    CelRule {
        expression: Cow::Borrowed(expression),
        message,
        remedy,
    }
}

/// `PrincipalRef` (assignment principals, approvers).
pub const PRINCIPAL_USER_OR_GROUP: CelRule = rule(
    "has(self.user) != has(self.group)",
    "set exactly one of user or group",
    "keep either `user:` (one person) or `group:` (a directory group whose members are covered) in this principal, and remove the other",
);

/// `AccessPolicy` `spec.activation.approval`.
pub const MIN_APPROVALS_REACHABLE: CelRule = rule(
    "!has(self.minApprovals) || self.approvers.exists(a, has(a.group)) || self.minApprovals <= size(self.approvers)",
    "minApprovals cannot exceed the number of approvers when all approvers are users: lower minApprovals or name more approvers",
    "lower spec.activation.approval.minApprovals to the number of entries in approvers, or add approvers (a `group:` approver lifts the limit)",
);

/// `EligibleAssignment` `spec.schedule`.
pub const SCHEDULE_ONE_END: CelRule = rule(
    "(has(self.end) ? 1 : 0) + (has(self.duration) ? 1 : 0) + ((has(self.permanent) && self.permanent) ? 1 : 0) == 1",
    "set exactly one of end, duration or permanent: true",
    "keep exactly one of spec.schedule.end (a time), spec.schedule.duration (such as 90d) or spec.schedule.permanent: true, and remove the others",
);

/// `PimGroup` `spec`.
pub const RBAC_NEEDS_KUBERNETES: CelRule = rule(
    "!has(self.rbac) || self.directory == 'kubernetes'",
    "rbac applies only to the kubernetes directory: remove rbac or set directory: kubernetes",
    "remove spec.rbac, or set spec.directory to `kubernetes` (RBAC bindings are made only for groups of the kubernetes directory)",
);

/// `PimGroup` `spec`.
pub const ADOPT_AFTER_NEEDS_ADOPT: CelRule = rule(
    "!has(self.adoptAfter) || !has(self.standingAccess) || self.standingAccess == 'Adopt'",
    "adoptAfter applies only with standingAccess: Adopt",
    "remove spec.adoptAfter, or set spec.standingAccess to `Adopt` (adoptAfter is when adoption ends and removal starts)",
);

/// `ActivationRequest` `spec`: an extension continues running access, so it has no start of its
/// own.
pub const EXTENSION_STARTS_AT_ONCE: CelRule = rule(
    "!has(self.extends) || !has(self.startTime)",
    "an extension (spec.extends) has no spec.startTime: it continues the access it extends",
    "remove spec.startTime; an extension starts when it is approved and ends its duration after the end of the request it extends",
);

/// `PimGroup` `spec.group`.
pub const GROUP_ID_OR_NAME: CelRule = rule(
    "has(self.id) || has(self.displayName)",
    "set id or displayName",
    "add spec.group.id (object id, DN or group name) or spec.group.displayName, so the operator knows which directory group to manage",
);

/// `PimGroup` `spec.group`.
pub const CREATE_NEEDS_NAME: CelRule = rule(
    "!has(self.create) || !self.create || has(self.displayName)",
    "create needs a displayName: set displayName, the name of the group to create",
    "add spec.group.displayName, the name the new directory group gets, or remove `create: true`",
);

/// `PimGroup` `spec.rbac`.
pub const RBAC_NAMES_A_ROLE: CelRule = rule(
    "(has(self.clusterRoles) ? size(self.clusterRoles) : 0) + (has(self.namespaceRoles) ? size(self.namespaceRoles) : 0) > 0",
    "name at least one cluster role or namespace role",
    "add a ClusterRole under spec.rbac.clusterRoles or a namespaced Role under spec.rbac.namespaceRoles, or remove spec.rbac",
);

/// `ActivationRequest` `spec`.
pub const DEACTIVATE_IS_FINAL: CelRule = rule(
    "!has(oldSelf.deactivate) || !oldSelf.deactivate || (has(self.deactivate) && self.deactivate)",
    "deactivate cannot be undone: keep deactivate: true, and create a new request for new access",
    "keep spec.deactivate: true; the request has ended, so ask for access again with a new ActivationRequest",
);

/// `ActivationRequest` `spec`.
pub const DECISIONS_ARE_FINAL: CelRule = rule(
    "!has(oldSelf.approvals) || (has(self.approvals) && oldSelf.approvals.all(o, self.approvals.exists(n, n.approver == o.approver && n.decision == o.decision)))",
    "a recorded approval decision cannot be changed or removed: keep every spec.approvals entry as it is",
    "keep every existing spec.approvals entry with its decision; add only your own new entry (kubectl pim approve or deny)",
);

/// `AccessReview` `spec.scope`.
pub const REVIEW_SCOPE_GROUPS: CelRule = rule(
    "(has(self.groups) && size(self.groups) > 0) || has(self.groupSelector)",
    "name the PimGroups under review: set groups or groupSelector",
    "add spec.scope.groups (PimGroup names) or spec.scope.groupSelector (labels of PimGroups), or both",
);

/// `AccessReview` `spec.reviewers`.
pub const REVIEWERS_SOMEONE: CelRule = rule(
    "(has(self.principals) && size(self.principals) > 0) || (has(self.selfReview) && self.selfReview) || (has(self.policyApprovers) && self.policyApprovers)",
    "name who reviews: set principals, selfReview: true or policyApprovers: true",
    "add spec.reviewers.principals (users or groups), or set spec.reviewers.selfReview or spec.reviewers.policyApprovers to true",
);

/// `PimGrant` (the operator's ledger).
pub const GRANT_IS_IMMUTABLE: CelRule = rule(
    "self == oldSelf",
    "a ledger entry is immutable: the operator deletes it once the directory confirmed the removal",
    "leave PimGrant objects to the operator: it writes each once and deletes it after the directory confirmed the removal",
);

/// Fields of an ActivationRequest's spec that never change after creation. `approvals` and
/// `deactivate` have rules of their own.
const IMMUTABLE_REQUIRED: &[&str] = &["group"];
const IMMUTABLE_OPTIONAL: &[&str] = &[
    "role",
    "duration",
    "justification",
    "ticket",
    "startTime",
    "extends",
    "requester",
    "principal",
];

/// `ActivationRequest` `spec`: immutable except `approvals` and `deactivate`.
pub fn immutable_request_spec() -> CelRule {
    let mut clauses: Vec<String> = IMMUTABLE_REQUIRED
        .iter()
        .map(|f| format!("self.{f} == oldSelf.{f}"))
        .collect();
    clauses.extend(IMMUTABLE_OPTIONAL.iter().map(|f| {
        format!("has(self.{f}) == has(oldSelf.{f}) && (!has(self.{f}) || self.{f} == oldSelf.{f})")
    }));
    CelRule {
        expression: Cow::Owned(clauses.join(" && ")),
        message: "spec is immutable after creation, except approvals and deactivate; create a new request instead",
        remedy: "change only spec.approvals (your own entry) or spec.deactivate; for another group, role, duration, justification, ticket or start time, create a new ActivationRequest (for more time, `kubectl pim extend`)",
    }
}

/// The whole table.
pub fn all() -> Vec<CelRule> {
    vec![
        PRINCIPAL_USER_OR_GROUP,
        MIN_APPROVALS_REACHABLE,
        SCHEDULE_ONE_END,
        RBAC_NEEDS_KUBERNETES,
        ADOPT_AFTER_NEEDS_ADOPT,
        GROUP_ID_OR_NAME,
        CREATE_NEEDS_NAME,
        RBAC_NAMES_A_ROLE,
        immutable_request_spec(),
        DEACTIVATE_IS_FINAL,
        DECISIONS_ARE_FINAL,
        EXTENSION_STARTS_AT_ONCE,
        GRANT_IS_IMMUTABLE,
        REVIEW_SCOPE_GROUPS,
        REVIEWERS_SOMEONE,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn validations(node: &Value, out: &mut Vec<(String, String)>) {
        match node {
            Value::Object(fields) => {
                if let Some(Value::Array(rules)) = fields.get("x-kubernetes-validations") {
                    for rule in rules {
                        let text = |k: &str| rule[k].as_str().unwrap_or_default().to_owned();
                        out.push((text("rule"), text("message")));
                    }
                }
                fields.values().for_each(|v| validations(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| validations(v, out)),
            _ => {}
        }
    }

    /// Every CEL rule in the generated CRDs is in the table, so every failure has a remedy.
    #[test]
    fn every_crd_rule_is_in_the_table() {
        let mut found = Vec::new();
        for crd in crate::crd::all() {
            validations(&serde_json::to_value(&crd).unwrap(), &mut found);
        }
        assert!(found.len() >= all().len(), "{found:?}");
        for (expression, message) in &found {
            let rule = CelRule::find(expression)
                .unwrap_or_else(|| panic!("no table entry for the CEL rule {expression}"));
            assert_eq!(&rule.message, message);
        }
        for rule in all() {
            assert!(
                found.iter().any(|(e, _)| *e == rule.expression),
                "{} is in no CRD",
                rule.expression
            );
        }
    }
}
