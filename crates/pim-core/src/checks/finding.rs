//! What a check reports: one broken rule on one object, named by field path, with a hint.
//!
//! Findings carry no file position: `validate` adds one from the manifest's source map, and the
//! admission webhook reports the field path to the API client instead.

use serde::Serialize;

use crate::core::violation::Violation;

/// How bad a finding is. Both make `validate` exit non-zero; warnings describe objects the
/// operator accepts but treats differently from what they say (a clipped schedule, say).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

/// A rule the checks enforce: its id, default severity, what it is about and how to fix it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// Short kebab-case id, stable across releases (SARIF `ruleId`).
    pub id: &'static str,
    pub severity: Severity,
    /// One line saying what the rule checks.
    pub summary: &'static str,
    /// The fix. For rules that cover many fields (wrong-type, invalid-value, cel-rule, ...)
    /// every finding carries its own, naming the field; this text is the rule's SARIF help.
    pub hint: &'static str,
}

const fn rule(
    id: &'static str,
    severity: Severity,
    summary: &'static str,
    hint: &'static str,
) -> Rule {
    Rule {
        id,
        severity,
        summary,
        hint,
    }
}

use Severity::{Error, Warning};

/// Every rule, in the order SARIF lists them.
pub mod rules {
    use super::*;

    pub const YAML_SYNTAX: Rule = rule(
        "yaml-syntax",
        Error,
        "The file is not valid YAML.",
        "correct the syntax at this line and column (indentation, a colon after each key, closed brackets and quotes); nothing after it in the file is checked until it parses",
    );
    pub const INVALID_DOCUMENT: Rule = rule(
        "invalid-document",
        Error,
        "A manifest document must be a mapping with apiVersion and kind.",
        "start the document with `apiVersion:` and `kind:`",
    );
    pub const UNKNOWN_KIND: Rule = rule(
        "unknown-kind",
        Error,
        "The pim.dev API group has no such kind.",
        "use one of AccessPolicy, PimGroup, EligibleAssignment or ActivationRequest",
    );
    pub const UNSUPPORTED_VERSION: Rule = rule(
        "unsupported-version",
        Error,
        "The pim.dev API group serves only v1alpha1.",
        "write `apiVersion: pim.dev/v1alpha1`",
    );
    pub const INVALID_NAME: Rule = rule(
        "invalid-name",
        Error,
        "metadata.name must be a DNS subdomain: lowercase letters, digits, '-' and '.'.",
        "name the object like `finreport-senioranalyst`",
    );
    pub const UNKNOWN_FIELD: Rule = rule(
        "unknown-field",
        Error,
        "The field is not in the resource's schema; the API server rejects it under strict field validation.",
        "remove the field, or spell it as one of the fields the schema has at that level",
    );
    pub const REQUIRED_FIELD: Rule = rule(
        "required-field",
        Error,
        "A required field is missing.",
        "add the missing field under the parent the finding names, such as `spec.group` under `spec`",
    );
    pub const WRONG_TYPE: Rule = rule(
        "wrong-type",
        Error,
        "The value has the wrong type for the field.",
        "write strings in quotes when they look like numbers or booleans, numbers and true/false without quotes, and mappings and lists as YAML blocks, as the field's type says",
    );
    pub const INVALID_VALUE: Rule = rule(
        "invalid-value",
        Error,
        "The value breaks the field's schema: allowed values, pattern, length, range or format.",
        "bring the value within the field's limits: one of its allowed values, its pattern, its length or its range",
    );
    pub const DUPLICATE_LIST_KEY: Rule = rule(
        "duplicate-list-key",
        Error,
        "Two entries of a keyed list have the same key.",
        "remove the repeated entry, or merge it into the earlier one with the same key",
    );
    pub const CEL_RULE: Rule = rule(
        "cel-rule",
        Error,
        "The object breaks a validation rule (CEL) of its CustomResourceDefinition.",
        "keep the combinations the CRDs require: exactly one of user or group, exactly one of end, duration or permanent, a reachable minApprovals, rbac only with the kubernetes directory, and a request's spec unchanged after creation",
    );
    pub const DECODE_ERROR: Rule = rule(
        "decode-error",
        Error,
        "The object does not decode into the operator's types.",
        "write the field as the CRD's schema (`pim-operator crds`) describes it; if it already does, the schema and the operator disagree: report it with this manifest",
    );
    pub const DUPLICATE_NAME: Rule = rule(
        "duplicate-name",
        Error,
        "Two documents define an object of the same kind and name; the later one would overwrite the earlier.",
        "rename one of them or remove the copy",
    );
    pub const DIRECTORY_GROUP_CONFLICT: Rule = rule(
        "directory-group-conflict",
        Error,
        "Two PimGroups manage the same directory group, so their controllers would fight over its membership.",
        "bring each directory group under PIM once; give it several roles instead",
    );
    pub const GROUP_NOT_FOUND: Rule = rule(
        "group-not-found",
        Error,
        "The referenced PimGroup does not exist.",
        "create the PimGroup, or set spec.group to an existing one",
    );
    pub const POLICY_NOT_FOUND: Rule = rule(
        "policy-not-found",
        Error,
        "The referenced AccessPolicy does not exist.",
        "create the AccessPolicy, or name an existing one in the PimGroup's spec.roles",
    );
    pub const ROLE_NOT_MANAGED: Rule = rule(
        "role-not-managed",
        Error,
        "The PimGroup has no policy for the role.",
        "use the member role, or add `roles.owner.policy` to the PimGroup",
    );
    pub const INVALID_POLICY: Rule = rule(
        "invalid-policy",
        Error,
        "The AccessPolicy's rules contradict each other or are out of range.",
        "give spec.activation.approval at least one approver, each with exactly one of user or group, and a minApprovals the approvers can reach",
    );
    pub const INVALID_DURATION: Rule = rule(
        "invalid-duration",
        Error,
        "The duration cannot be used.",
        "write a positive duration such as 30m, 8h, 90d or PT8H",
    );
    pub const DURATION_EXCEEDS_MAXIMUM: Rule = rule(
        "duration-exceeds-maximum",
        Error,
        "The duration is longer than its cap allows.",
        "shorten it: a request to its policy's maxDuration, maxDuration to 24h, an approval timeout to 30d",
    );
    pub const INVALID_SCHEDULE: Rule = rule(
        "invalid-schedule",
        Error,
        "The assignment's schedule can never become effective.",
        "make the end later than the start, or use a positive duration",
    );
    pub const INVALID_PRINCIPAL: Rule = rule(
        "invalid-principal",
        Error,
        "A principal must name exactly one of user or group.",
        "keep either `user:` or `group:`",
    );
    pub const JUSTIFICATION_REQUIRED: Rule = rule(
        "justification-required",
        Error,
        "The policy requires a justification.",
        "add `spec.justification` saying why the access is needed",
    );
    pub const TICKET_REQUIRED: Rule = rule(
        "ticket-required",
        Error,
        "The policy requires a ticket.",
        "add `spec.ticket` with `system` and `number`",
    );
    pub const NOT_ELIGIBLE: Rule = rule(
        "not-eligible",
        Error,
        "No EligibleAssignment makes the principal eligible when the request would start.",
        "add an EligibleAssignment for the principal, or request within its schedule",
    );
    pub const EXCEEDS_POLICY: Rule = rule(
        "exceeds-policy",
        Warning,
        "The assignment asks for more than its policy allows; the operator clips it to the policy's cap.",
        "shorten spec.schedule to the policy's maxEligibleDuration or maxActiveDuration, so that the manifest says when the assignment ends",
    );
    pub const SCHEDULE_ENDED: Rule = rule(
        "schedule-ended",
        Warning,
        "The assignment's schedule has already ended; it grants nothing.",
        "remove the assignment, or extend its schedule",
    );
    pub const INVALID_START_TIME: Rule = rule(
        "invalid-start-time",
        Error,
        "The request's startTime lies further after its creation than the policy's maxStartDelay allows.",
        "create the request closer to when the access is needed, or raise spec.activation.maxStartDelay",
    );
    pub const STAMPED_BY_WEBHOOK: Rule = rule(
        "stamped-by-webhook",
        Warning,
        "An ActivationRequest manifest writes spec.requester or spec.principal, which the admission webhook stamps from the authenticated caller.",
        "remove spec.requester and spec.principal, and create the request as the user who needs the access, through the API server with the webhook installed",
    );

    pub const OWNER_IS_A_GROUP: Rule = rule(
        "owner-is-a-group",
        Error,
        "An Active EligibleAssignment of the owner role names a group: a group's owners can only be users or service principals (Microsoft Entra ID, the one directory with an owner role).",
        "name a user in spec.principal.user, or set spec.type: Eligible so that the group's members activate ownership one at a time",
    );
    pub const LAST_OWNER: Rule = rule(
        "last-owner",
        Warning,
        "The PimGroup manages the owner role: Microsoft Entra ID keeps a group's last owner, so a just-in-time owner who is the group's only owner is never removed.",
        "set fallbackOwner on the entra directory (a service principal the operator keeps as standing owner), or keep an owner of your own in the group with spec.standingAccess: Report",
    );
    pub const ELIGIBILITY_ENDING: Rule = rule(
        "eligibility-ending",
        Warning,
        "The assignment ends within its policy's eligibilityEndingLead (default 14d), when its principal and the policy's admins are reminded to renew it.",
        "renew it before it ends: set spec.schedule.end later or lengthen spec.schedule.duration (within the policy's maxEligibleDuration or maxActiveDuration), or delete the assignment when the access is no longer needed",
    );

    pub const REMOVE_UNSEEN_GROUP: Rule = rule(
        "remove-unseen-group",
        Warning,
        "The PimGroup sets standingAccess: Remove for a group pim-operator has never reported: the first pass removes every member no grant explains, break-glass accounts and owners included.",
        "leave standingAccess unset (Adopt) so that the operator lists the group's members in status.unexplainedMembers first; give each who must stay an EligibleAssignment or an entry in spec.protectedMembers; then set Remove (validate --observed with `kubectl get pimgroups -o yaml` shows the group has been seen)",
    );
    pub const REMOVE_DROPS_MEMBERS: Rule = rule(
        "remove-drops-members",
        Warning,
        "Switching the PimGroup to standingAccess: Remove removes the members the operator lists in status as explained by no grant.",
        "give each member who must keep access an EligibleAssignment (or an entry in spec.protectedMembers) before switching, or confirm that each listed member is meant to go",
    );
    pub const REVIEW_DENIED: Rule = rule(
        "review-denied",
        Error,
        "An access review denied the assignment: it grants nothing, and its manifest is to be removed.",
        "delete this EligibleAssignment's manifest (the review's status.denied lists every one to remove); to grant the access again, add a new assignment under another name once the reason for the denial is settled",
    );
    pub const INVALID_SELECTOR: Rule = rule(
        "invalid-selector",
        Error,
        "A label selector the API server would refuse: it selects nothing.",
        "write matchLabels keys and values as Kubernetes labels, and matchExpressions with operator In, NotIn, Exists or DoesNotExist (values only with In and NotIn)",
    );

    /// Every rule, in a stable order.
    pub const ALL: &[Rule] = &[
        YAML_SYNTAX,
        INVALID_DOCUMENT,
        UNKNOWN_KIND,
        UNSUPPORTED_VERSION,
        INVALID_NAME,
        UNKNOWN_FIELD,
        REQUIRED_FIELD,
        WRONG_TYPE,
        INVALID_VALUE,
        DUPLICATE_LIST_KEY,
        CEL_RULE,
        DECODE_ERROR,
        DUPLICATE_NAME,
        DIRECTORY_GROUP_CONFLICT,
        GROUP_NOT_FOUND,
        POLICY_NOT_FOUND,
        ROLE_NOT_MANAGED,
        INVALID_POLICY,
        INVALID_DURATION,
        DURATION_EXCEEDS_MAXIMUM,
        INVALID_SCHEDULE,
        INVALID_PRINCIPAL,
        JUSTIFICATION_REQUIRED,
        TICKET_REQUIRED,
        NOT_ELIGIBLE,
        EXCEEDS_POLICY,
        SCHEDULE_ENDED,
        INVALID_START_TIME,
        STAMPED_BY_WEBHOOK,
        OWNER_IS_A_GROUP,
        LAST_OWNER,
        REMOVE_UNSEEN_GROUP,
        REMOVE_DROPS_MEMBERS,
        ELIGIBILITY_ENDING,
    ];
}

/// The rule for a condition reason of the core (`api::conditions::reasons`), so that `validate`
/// names a problem with the word the controller writes into status for it.
pub fn rule_for_reason(reason: &str) -> Rule {
    use crate::api::conditions::reasons;
    match reason {
        reasons::GROUP_NOT_FOUND => rules::GROUP_NOT_FOUND,
        reasons::POLICY_NOT_FOUND => rules::POLICY_NOT_FOUND,
        reasons::ROLE_NOT_MANAGED => rules::ROLE_NOT_MANAGED,
        reasons::INVALID_DURATION => rules::INVALID_DURATION,
        reasons::DURATION_EXCEEDS_MAXIMUM => rules::DURATION_EXCEEDS_MAXIMUM,
        reasons::INVALID_SCHEDULE => rules::INVALID_SCHEDULE,
        reasons::INVALID_PRINCIPAL => rules::INVALID_PRINCIPAL,
        reasons::JUSTIFICATION_REQUIRED => rules::JUSTIFICATION_REQUIRED,
        reasons::TICKET_REQUIRED => rules::TICKET_REQUIRED,
        reasons::NOT_ELIGIBLE => rules::NOT_ELIGIBLE,
        reasons::EXCEEDS_POLICY => rules::EXCEEDS_POLICY,
        reasons::SCHEDULE_ENDED => rules::SCHEDULE_ENDED,
        reasons::INVALID_START_TIME => rules::INVALID_START_TIME,
        _ => rules::INVALID_POLICY,
    }
}

/// One problem with one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The object's kind, when the document got far enough to have one.
    pub kind: Option<String>,
    /// The object's name, when it has one.
    pub name: Option<String>,
    /// Field path such as `spec.schedule.duration`; empty for the whole document.
    pub path: String,
    /// Rule id, e.g. `group-not-found`.
    pub rule: &'static str,
    pub severity: Severity,
    pub message: String,
    pub hint: String,
}

impl Finding {
    /// A finding of `rule` with the rule's severity and hint.
    pub fn new(rule: Rule, path: impl Into<String>, message: impl Into<String>) -> Self {
        Finding {
            kind: None,
            name: None,
            path: path.into(),
            rule: rule.id,
            severity: rule.severity,
            message: message.into(),
            hint: rule.hint.to_owned(),
        }
    }

    /// A violation reported by the core, under the rule of its reason, with its remedy.
    pub fn from_violation(violation: &Violation) -> Self {
        let finding = Finding::new(
            rule_for_reason(violation.reason),
            violation.field.clone(),
            violation.message.clone(),
        );
        if violation.remedy.is_empty() {
            finding
        } else {
            finding.hint(violation.remedy.clone())
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = hint.into();
        self
    }

    /// Names the object the finding is about.
    pub fn on(mut self, kind: impl Into<String>, name: Option<&str>) -> Self {
        self.kind = Some(kind.into());
        self.name = name.map(str::to_owned);
        self
    }

    /// `Kind/name`, `Kind` or nothing, for messages.
    pub fn subject(&self) -> Option<String> {
        match (&self.kind, &self.name) {
            (Some(kind), Some(name)) => Some(format!("{kind}/{name}")),
            (Some(kind), None) => Some(kind.clone()),
            (None, Some(name)) => Some(name.clone()),
            (None, None) => None,
        }
    }
}

/// Up to five of `known`, for "known names" hints.
pub fn list_some<'a>(known: impl IntoIterator<Item = &'a str>) -> String {
    let names: Vec<&str> = known.into_iter().collect();
    if names.is_empty() {
        return "none".to_owned();
    }
    let mut text = names.iter().take(5).copied().collect::<Vec<_>>().join(", ");
    if names.len() > 5 {
        text.push_str(&format!(" and {} more", names.len() - 5));
    }
    text
}

/// The entry of `known` closest to `wrong` when it is a likely typo (at most two edits, or a
/// different letter case), for "did you mean" hints.
pub fn closest<'a>(wrong: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    known
        .into_iter()
        .map(|k| (edit_distance(&wrong.to_lowercase(), &k.to_lowercase()), k))
        .filter(|(d, k)| *d <= if k.chars().count() <= 4 { 1 } else { 2 })
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Edit distance over characters, counting a swap of two neighbours as one edit (optimal
/// string alignment), since `roel` for `role` is one slip of the fingers.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_ids_are_unique_kebab_case() {
        let mut ids: Vec<&str> = rules::ALL.iter().map(|r| r.id).collect();
        assert!(
            ids.iter()
                .all(|id| id.chars().all(|c| c.is_ascii_lowercase() || c == '-')
                    && !id.starts_with('-')
                    && !id.ends_with('-')),
            "{ids:?}"
        );
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), rules::ALL.len());
    }

    #[test]
    fn core_reasons_map_to_their_rules() {
        use crate::api::conditions::reasons;
        assert_eq!(
            rule_for_reason(reasons::GROUP_NOT_FOUND).id,
            "group-not-found"
        );
        assert_eq!(
            rule_for_reason(reasons::DURATION_EXCEEDS_MAXIMUM).id,
            "duration-exceeds-maximum"
        );
        assert_eq!(
            rule_for_reason(reasons::INVALID_POLICY).id,
            "invalid-policy"
        );
        assert_eq!(rule_for_reason(reasons::SCHEDULE_ENDED).severity, Warning);
    }

    #[test]
    fn suggests_near_misses_only() {
        let known = ["maxDuration", "requireTicket", "approval"];
        assert_eq!(closest("maxDurration", known), Some("maxDuration"));
        assert_eq!(closest("maxduration", known), Some("maxDuration"));
        assert_eq!(closest("aproval", known), Some("approval"));
        assert_eq!(closest("colour", known), None);
        assert_eq!(closest("roel", ["role", "group"]), Some("role"));
        assert_eq!(list_some(["a", "b"]), "a, b");
        assert_eq!(
            list_some(["a", "b", "c", "d", "e", "f", "g"]),
            "a, b, c, d, e and 2 more"
        );
        assert_eq!(list_some([]), "none");
    }
}
