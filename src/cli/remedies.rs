//! Issue 18 finding 8: every message ends in a remedy of its own, not a generic tail. The rule
//! tables are scanned, and so is every finding `validate` produces for a corpus of broken
//! manifests that breaks every rule.

use std::collections::BTreeSet;

use super::validate::check;
use crate::api::cel;
use crate::checks::{Finding, SchemaChecker, rules};
use crate::manifests::Manifests;

/// Phrases that say "do something" without saying what.
const GENERIC: &[&str] = &[
    "change the object",
    "the message says",
    "so that the rule holds",
    "fix the",
    "fix it",
    "fix them",
    "fix its",
    "see `kubectl explain`",
    "compare the object",
    "add the field",
    "the type the schema names",
    "to the cap or less",
];

fn generic_in(text: &str) -> Option<&'static str> {
    let lower = text.to_lowercase();
    GENERIC.iter().copied().find(|g| lower.contains(g))
}

/// Rules whose findings span many fields: each finding must bring its own remedy, naming its
/// field, rather than the rule's one-size help text.
const PER_FINDING: &[&str] = &[
    rules::WRONG_TYPE.id,
    rules::INVALID_VALUE.id,
    rules::CEL_RULE.id,
    rules::DECODE_ERROR.id,
    rules::REQUIRED_FIELD.id,
    rules::DUPLICATE_LIST_KEY.id,
    rules::INVALID_POLICY.id,
    rules::DURATION_EXCEEDS_MAXIMUM.id,
    rules::EXCEEDS_POLICY.id,
    rules::ELIGIBILITY_ENDING.id,
];

const NOW: &str = "2026-11-05T00:00:00Z";

const BASE: &str = "apiVersion: pim.dev/v1alpha1
kind: AccessPolicy
metadata: {name: ops}
spec:
  activation: {maxDuration: 1h, requireTicket: true}
---
apiVersion: pim.dev/v1alpha1
kind: PimGroup
metadata: {name: ops}
spec:
  directory: entra
  group: {id: 2f9c61d0-5d7e-4a39-9bb2-7c2d0d5e1a10}
  roles: {member: {policy: ops}}
---
apiVersion: pim.dev/v1alpha1
kind: EligibleAssignment
metadata: {name: ops-alice}
spec:
  group: ops
  principal: {user: alice}
  schedule: {start: \"2026-11-01T00:00:00Z\", duration: 30d}
  justification: On call.
";

const AR: &str = "apiVersion: pim.dev/v1alpha1\nkind: ActivationRequest\n";
const EA: &str = "apiVersion: pim.dev/v1alpha1\nkind: EligibleAssignment\n";
const AP: &str = "apiVersion: pim.dev/v1alpha1\nkind: AccessPolicy\n";
const PG: &str = "apiVersion: pim.dev/v1alpha1\nkind: PimGroup\n";

/// One file per case, each validated with `BASE` in the same file.
fn corpus() -> Vec<String> {
    let cases = [
        "a: [1, 2\nb: 3\n".to_owned(),
        "- a\n- b\n".to_owned(),
        "apiVersion: pim.dev/v1alpha1\nkind: PimGrop\nmetadata: {name: x}\n".to_owned(),
        "apiVersion: pim.dev/v1\nkind: PimGroup\nmetadata: {name: x}\n".to_owned(),
        "apiVersion: pim.dev/v1alpha1\nkind: PimGroup\nmetadata: {name: fresh}\nspec: {group: {id: fresh}, roles: {member: {policy: ops}}, standingAccess: Remove}\n".to_owned(),
        format!("{AP}metadata: {{name: Ops_Policy}}\nspec: {{}}\n"),
        format!("{AP}metadata: {{labels: {{team: ops}}}}\nspec: {{}}\n"),
        format!(
            "{AR}metadata: {{name: r1}}\nspec: {{group: ops, justificaton: typo, ticket: {{system: jira, number: OPS-1}}}}\n"
        ),
        format!(
            "{EA}metadata: {{name: a1}}\nspec: {{group: ops, schedule: {{duration: 1d}}, justification: x}}\n"
        ),
        format!(
            "{AR}metadata: {{name: r2}}\nspec: {{group: ops, deactivate: \"yes\", ticket: {{system: jira, number: OPS-1}}, justification: x}}\n"
        ),
        format!(
            "{AR}metadata: {{name: r3}}\nspec: {{group: ops, role: admin, ticket: {{system: jira, number: OPS-1}}, justification: x}}\n"
        ),
        format!(
            "{AR}metadata: {{name: r4}}\nspec: {{group: ops, duration: 1 hour, ticket: {{system: jira, number: OPS-1}}, justification: x}}\n"
        ),
        format!(
            "{AR}metadata: {{name: r5}}\nspec: {{group: ops, ticket: {{system: jira, number: OPS-1}}, justification: \"{}\"}}\n",
            "x".repeat(5000)
        ),
        format!(
            "{AR}metadata: {{name: r6}}\nspec:\n  group: ops\n  ticket: {{system: jira, number: OPS-1}}\n  justification: x\n  approvals:\n  - {{approver: bob, decision: Approve}}\n  - {{approver: bob, decision: Deny}}\n"
        ),
        format!(
            "{AP}metadata: {{name: p1}}\nspec:\n  activation:\n    approval: {{approvers: [{{user: bob}}], minApprovals: 40}}\n"
        ),
        format!(
            "{AP}metadata: {{name: p2}}\nspec:\n  activation:\n    approval: {{approvers: [{{user: bob}}], minApprovals: two}}\n"
        ),
        format!(
            "{AP}metadata: {{name: p3}}\nspec:\n  activation:\n    approval: {{approvers: [{{user: bob}}], minApprovals: 2}}\n"
        ),
        format!(
            "{AP}metadata: {{name: p4}}\nspec:\n  activation: {{maxDuration: 25h, approval: {{approvers: [{{user: bob}}], timeout: 31d}}}}\n  retention: 0d\n"
        ),
        format!(
            "{EA}metadata: {{name: a2}}\nspec: {{group: ops, principal: {{user: bob}}, schedule: {{duration: 1d, permanent: true}}, justification: x}}\n"
        ),
        format!(
            "{EA}metadata: {{name: a3}}\nspec: {{group: ops, principal: {{user: bob, group: admins}}, schedule: {{duration: 1d}}, justification: x}}\n"
        ),
        format!(
            "{AR}metadata: {{name: r7}}\nspec: {{group: ops, duration: 30m, ticket: {{system: jira, number: OPS-1}}, justification: x}}\n---\n{AR}metadata: {{name: r7}}\nspec: {{group: ops, duration: 1h}}\n"
        ),
        format!(
            "{PG}metadata: {{name: g1}}\nspec: {{group: {{create: true, id: x}}, roles: {{member: {{policy: ops}}}}}}\n"
        ),
        format!(
            "{PG}metadata: {{name: g2}}\nspec: {{group: {{id: y}}, roles: {{member: {{policy: ops}}}}, rbac: {{clusterRoles: [view]}}}}\n"
        ),
        format!(
            "{PG}metadata: {{name: g3}}\nspec: {{directory: kubernetes, group: {{id: z}}, roles: {{member: {{policy: ops}}}}, rbac: {{}}}}\n"
        ),
        format!(
            "{PG}metadata: {{name: g4}}\nspec: {{group: {{}}, roles: {{member: {{policy: ops}}}}}}\n"
        ),
        format!("{AP}metadata: {{name: ops}}\nspec: {{}}\n"),
        format!(
            "{PG}metadata: {{name: ops-too}}\nspec: {{directory: entra, group: {{id: 2F9C61D0-5D7E-4A39-9BB2-7C2D0D5E1A10}}, roles: {{member: {{policy: ops}}}}}}\n"
        ),
        format!(
            "{EA}metadata: {{name: a4}}\nspec: {{group: opps, principal: {{user: bob}}, schedule: {{duration: 1d}}, justification: x}}\n"
        ),
        format!(
            "{AR}metadata: {{name: r8}}\nspec: {{group: ops, role: owner, ticket: {{system: jira, number: OPS-1}}, justification: x}}\n"
        ),
        format!(
            "{PG}metadata: {{name: dev}}\nspec: {{group: {{displayName: Devs}}, roles: {{member: {{policy: dev}}}}}}\n"
        ),
        format!(
            "{EA}metadata: {{name: a5}}\nspec: {{group: ops, principal: {{user: bob}}, schedule: {{start: \"2026-11-01T00:00:00Z\", duration: 400d}}, justification: x}}\n"
        ),
        format!(
            "{EA}metadata: {{name: a6}}\nspec: {{group: ops, principal: {{user: bob}}, schedule: {{permanent: true}}, justification: x}}\n"
        ),
        format!(
            "{EA}metadata: {{name: a7}}\nspec: {{group: ops, principal: {{user: bob}}, schedule: {{start: \"2026-01-01T00:00:00Z\", end: \"2026-02-01T00:00:00Z\"}}, justification: x}}\n"
        ),
        format!(
            "{EA}metadata: {{name: a8}}\nspec: {{group: ops, principal: {{user: bob}}, schedule: {{start: \"2026-12-01T00:00:00Z\", end: \"2026-11-01T00:00:00Z\"}}, justification: x}}\n"
        ),
        format!(
            "{EA}metadata: {{name: a9}}\nspec: {{group: ops, principal: {{user: bob}}, schedule: {{duration: 1d}}}}\n"
        ),
        format!(
            "{EA}metadata: {{name: a10}}\nspec: {{group: ops, principal: {{user: bob}}, schedule: {{duration: 0d}}, justification: x}}\n"
        ),
        format!(
            "{AR}metadata: {{name: r9}}\nspec: {{group: ops, duration: 2h, justification: x}}\n"
        ),
        format!(
            "{AR}metadata: {{name: r10}}\nspec: {{group: ops, ticket: {{system: jira, number: OPS-1}}, justification: x, startTime: \"2026-12-05T00:00:00Z\"}}\n"
        ),
        format!(
            "{AR}metadata: {{name: r11}}\nspec: {{group: ops, ticket: {{system: jira, number: OPS-1}}, justification: x, requester: {{username: mallory}}, principal: mallory}}\n"
        ),
        format!(
            "{AR}metadata: {{name: r12}}\nspec: {{group: ops, ticket: {{system: jira, number: OPS-1}}}}\n"
        ),
        format!(
            "{EA}metadata: {{name: a12}}\nspec: {{group: ops, principal: {{user: bob}}, schedule: {{start: \"2026-06-01T00:00:00Z\", end: \"2026-11-12T00:00:00Z\"}}, justification: x}}\n"
        ),
        format!(
            "{PG}metadata: {{name: owned}}\nspec: {{directory: entra, group: {{displayName: Owned}}, roles: {{member: {{policy: ops}}, owner: {{policy: ops}}}}}}\n---\n{EA}metadata: {{name: a11}}\nspec: {{group: owned, role: owner, type: Active, principal: {{group: admins}}, schedule: {{duration: 1d}}, justification: x}}\n"
        ),
    ];
    cases
        .into_iter()
        .map(|case| format!("{BASE}---\n{case}"))
        .collect()
}

fn findings() -> Vec<Finding> {
    let checker = SchemaChecker::new().unwrap();
    let now = NOW.parse().unwrap();
    corpus()
        .iter()
        .enumerate()
        .flat_map(|(i, text)| {
            let manifests = Manifests::from_text(&format!("case{i}.yaml"), text, &checker);
            check(manifests, now)
                .findings
                .into_iter()
                .map(|f| f.finding)
        })
        .collect()
}

#[test]
fn no_rule_or_cel_rule_ends_in_a_generic_tail() {
    for rule in rules::ALL {
        for text in [rule.summary, rule.hint] {
            assert_eq!(generic_in(text), None, "rule {}: {text:?}", rule.id);
        }
    }
    for rule in cel::all() {
        for text in [rule.message, rule.remedy] {
            assert_eq!(
                generic_in(text),
                None,
                "CEL rule {}: {text:?}",
                rule.expression
            );
        }
        assert!(!rule.remedy.is_empty(), "{}", rule.expression);
    }
}

#[test]
fn every_finding_carries_a_remedy_of_its_own() {
    let findings = findings();
    for f in &findings {
        let shown = format!("{} {}: {} / hint: {}", f.rule, f.path, f.message, f.hint);
        assert!(!f.hint.trim().is_empty(), "{shown}");
        assert_eq!(generic_in(&f.message), None, "{shown}");
        assert_eq!(generic_in(&f.hint), None, "{shown}");
        if PER_FINDING.contains(&f.rule) {
            let rule = rules::ALL.iter().find(|r| r.id == f.rule).unwrap();
            assert_ne!(f.hint, rule.hint, "{shown}: the rule's help, not a remedy");
            let field = f.path.rsplit('.').next().unwrap_or_default();
            let field = field.split('[').next().unwrap_or_default();
            assert!(
                f.path.is_empty() || f.hint.contains(field),
                "{shown}: the remedy does not name the field"
            );
        }
    }
    // The corpus breaks every rule but these: decode-error has no way past the schema checks,
    // and the schema's CEL rules and limits catch what invalid-policy and invalid-principal
    // check before the core sees it (the core keeps them for objects stored earlier).
    // remove-drops-members needs the cluster's objects (`validate --observed`); it is checked
    // in tests/it/validate.rs.
    let unreachable = [
        rules::DECODE_ERROR.id,
        rules::INVALID_POLICY.id,
        rules::INVALID_PRINCIPAL.id,
        rules::REMOVE_DROPS_MEMBERS.id,
    ];
    let seen: BTreeSet<&str> = findings.iter().map(|f| f.rule).collect();
    let missing: Vec<&str> = rules::ALL
        .iter()
        .map(|r| r.id)
        .filter(|id| !seen.contains(id) && !unreachable.contains(id))
        .collect();
    assert!(missing.is_empty(), "the corpus breaks none of {missing:?}");
}

#[test]
fn concrete_remedies() {
    let findings = findings();
    let hint = |rule: &str, path: &str| -> String {
        findings
            .iter()
            .find(|f| f.rule == rule && f.path == path)
            .map(|f| f.hint.clone())
            .unwrap_or_else(|| panic!("no {rule} finding on {path}"))
    };
    assert_eq!(
        hint("duration-exceeds-maximum", "spec.duration"),
        "set spec.duration to at most 1h, the policy's maxDuration, or leave it out to get 1h"
    );
    assert_eq!(
        hint("duration-exceeds-maximum", "spec.activation.maxDuration"),
        "set spec.activation.maxDuration to 1d or less; no activation may last longer"
    );
    assert_eq!(
        hint("cel-rule", "spec.schedule"),
        cel::SCHEDULE_ONE_END.remedy
    );
    assert_eq!(hint("cel-rule", "spec.rbac"), cel::RBAC_NAMES_A_ROLE.remedy);
    assert_eq!(
        hint("wrong-type", "spec.deactivate"),
        "write spec.deactivate as true or false, without quotes"
    );
    assert_eq!(
        hint("invalid-value", "spec.activation.approval.minApprovals"),
        "set spec.activation.approval.minApprovals to 16 or less"
    );
    assert_eq!(
        hint("exceeds-policy", "spec.schedule.duration"),
        "set spec.schedule.duration to 365d or less"
    );
    assert_eq!(
        hint("eligibility-ending", "spec.schedule.end"),
        "renew it before 2026-11-12T00:00:00Z: set spec.schedule.end later than 2026-11-12T00:00:00Z, up to 365d after the start; or delete EligibleAssignment \"a12\" when the access is no longer needed"
    );
    assert_eq!(
        hint("invalid-start-time", "spec.startTime"),
        "set spec.startTime to 2026-11-19T00:00:00Z or earlier (at most the policy's maxStartDelay of 14d after creation), or create the request closer to when the access is needed"
    );
}

/// The core's violations that the schema shields from manifests, straight from the core.
#[test]
fn violations_behind_the_schema_carry_remedies_too() {
    use crate::api::PrincipalRef;
    use crate::api::access_policy::{AccessPolicySpec, ApprovalSettings};
    use crate::api::eligible_assignment::EligibleAssignmentSpec;
    use crate::core::eligibility::assignment_window;
    use crate::core::policy::Policy;

    let mut spec = AccessPolicySpec::default();
    spec.activation.approval = Some(ApprovalSettings {
        approvers: vec![PrincipalRef::default()],
        min_approvals: Some(2),
        ..Default::default()
    });
    let mut violations = Policy::from_spec(&spec).unwrap_err();
    let assignment = EligibleAssignmentSpec {
        principal: PrincipalRef::default(),
        justification: Some("x".into()),
        ..Default::default()
    };
    let now = NOW.parse().unwrap();
    violations
        .extend(assignment_window(&assignment, now, &Policy::default().assignments).unwrap_err());
    let findings: Vec<Finding> = violations.iter().map(Finding::from_violation).collect();
    let rules_seen: BTreeSet<&str> = findings.iter().map(|f| f.rule).collect();
    assert!(
        rules_seen.contains(rules::INVALID_POLICY.id),
        "{findings:?}"
    );
    assert!(
        rules_seen.contains(rules::INVALID_PRINCIPAL.id),
        "{findings:?}"
    );
    for f in &findings {
        let rule = rules::ALL.iter().find(|r| r.id == f.rule).unwrap();
        assert_ne!(f.hint, rule.hint, "{f:?}");
        assert_eq!(generic_in(&f.hint), None, "{f:?}");
        assert!(
            f.hint.contains(&f.path) || f.hint.contains("spec."),
            "{f:?}"
        );
    }
}
