#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `pim-operator validate`, run as CI runs it: the binary, on files, checking what it prints,
//! the exact `file:line:column` of each finding, and its exit code.
//!
//! Golden outputs live in `tests/golden/` and are compared exactly. After an intended change of
//! output, regenerate them and review the diff:
//!
//! ```sh
//! UPDATE_GOLDEN=1 cargo test --test it validate:: simulate::
//! ```
//!
//! The SARIF test validates the output against the SARIF 2.1.0 JSON schema with
//! `check-jsonschema` (`.ci/install-tools`); the schema itself is put in place by
//! `.ci/install-sarif-schema`. A missing tool or schema fails the test.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use support::{Run, golden, repo, run_in};

use crate::support;

/// The `--now` of every run, so that schedule checks do not depend on the day the tests run.
const NOW: &str = "2026-11-05T00:00:00Z";

fn write(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

// ---------------------------------------------------------------------------------------------
// The examples
// ---------------------------------------------------------------------------------------------

#[test]
fn the_examples_are_clean() {
    let run = run_in(repo(), &["validate", "examples/", "--now", NOW]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(run.stderr, "");
    golden("validate-examples.txt", &run.stdout);

    let json = run_in(
        repo(),
        &["validate", "examples", "--now", NOW, "--format", "json"],
    );
    assert_eq!(json.code, 0);
    golden("validate-examples.json", &json.stdout);
    let report: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(report["summary"]["files"], 6);
    // requests/05-approval.yaml updates the request of 04: one object, not a duplicate.
    assert_eq!(report["summary"]["objects"], 5);
}

#[test]
fn a_broken_example_reports_its_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    // examples/ and its requests/ folder.
    for (from, to) in [
        (repo().join("examples"), dir.path().to_path_buf()),
        (
            repo().join("examples/requests"),
            dir.path().join("requests"),
        ),
    ] {
        std::fs::create_dir_all(&to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
            }
        }
    }
    let assignment = dir.path().join("03-eligibleassignment.yaml");
    let text = std::fs::read_to_string(&assignment).unwrap();
    std::fs::write(
        &assignment,
        text.replace("duration: 180d", "duration: 180 days"),
    )
    .unwrap();
    let group = dir.path().join("02-pimgroup.yaml");
    let text = std::fs::read_to_string(&group).unwrap();
    std::fs::write(
        &group,
        text.replace(
            "policy: finreport-senioranalyst",
            "policy: finreport-senioranalist",
        ),
    )
    .unwrap();

    let run = run_in(dir.path(), &["validate", ".", "--now", NOW]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    let lines: Vec<&str> = run.stdout.lines().filter(|l| !l.starts_with(' ')).collect();
    assert_eq!(
        lines,
        [
            "02-pimgroup.yaml:16:7: error[policy-not-found] PimGroup/finreport-senioranalyst spec.roles.member.policy: AccessPolicy \"finreport-senioranalist\" does not exist",
            "03-eligibleassignment.yaml:16:5: error[invalid-duration] EligibleAssignment/finreport-senioranalyst-alice spec.schedule.duration: \"180 days\" is not a duration",
            "checked 6 files, 6 documents, 5 PIM objects: 2 errors, 0 warnings",
        ]
    );
    assert!(
        run.stdout
            .contains("    hint: did you mean `finreport-senioranalyst`?\n"),
        "{}",
        run.stdout
    );
}

// ---------------------------------------------------------------------------------------------
// One case per class of error, each at its exact position
// ---------------------------------------------------------------------------------------------

/// A policy, group and assignment that the cases refer to, in `base.yaml`.
const BASE: &str = r#"apiVersion: pim.dev/v1alpha1
kind: AccessPolicy
metadata:
  name: ops
spec:
  activation:
    maxDuration: 1h
    requireTicket: true
---
apiVersion: pim.dev/v1alpha1
kind: PimGroup
metadata:
  name: ops
spec:
  directory: entra
  group:
    id: 2f9c61d0-5d7e-4a39-9bb2-7c2d0d5e1a10
  roles:
    member:
      policy: ops
---
apiVersion: pim.dev/v1alpha1
kind: EligibleAssignment
metadata:
  name: ops-alice
spec:
  group: ops
  principal:
    user: alice
  schedule:
    start: "2026-11-01T00:00:00Z"
    duration: 30d
  justification: On call.
"#;

/// `(file, line, column, rule, field path)` of every finding, from the JSON report.
fn findings_of(run: &Run) -> Vec<(String, u64, u64, String, String)> {
    let report: Value =
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout));
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["file"].as_str().unwrap().to_owned(),
                f["line"].as_u64().unwrap(),
                f["column"].as_u64().unwrap(),
                f["rule"].as_str().unwrap().to_owned(),
                f["path"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Validates `BASE` in base.yaml with `text` in case.yaml; every finding must be as expected.
fn check_case_in(name: &str, text: &str, expected: &[(&str, u64, u64, &str, &str)]) {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "base.yaml", BASE);
    write(dir.path(), "case.yaml", text);
    let run = run_in(
        dir.path(),
        &["validate", ".", "--now", NOW, "--format", "json"],
    );
    let expected: Vec<_> = expected
        .iter()
        .map(|(f, l, c, r, p)| ((*f).to_owned(), *l, *c, (*r).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(findings_of(&run), expected, "case {name}: {}", run.stdout);
    assert_eq!(
        run.code,
        if expected.is_empty() { 0 } else { 1 },
        "case {name}"
    );
}

/// As [`check_case_in`], for findings that are all in case.yaml.
fn check_case(name: &str, text: &str, expected: &[(u64, u64, &str, &str)]) {
    let in_case: Vec<_> = expected
        .iter()
        .map(|(l, c, r, p)| ("case.yaml", *l, *c, *r, *p))
        .collect();
    check_case_in(name, text, &in_case);
}

const REQUEST_HEAD: &str =
    "apiVersion: pim.dev/v1alpha1\nkind: ActivationRequest\nmetadata:\n  name: r\n";
const ASSIGNMENT_HEAD: &str =
    "apiVersion: pim.dev/v1alpha1\nkind: EligibleAssignment\nmetadata:\n  name: a\n";

#[test]
fn the_base_is_clean() {
    check_case("base", "", &[]);
}

#[test]
fn yaml_syntax_errors() {
    check_case(
        "unclosed flow",
        "a: [1, 2\nb: 3\n",
        &[(2, 2, "yaml-syntax", "")],
    );
    check_case(
        "bad indentation",
        "a:\n  b: 1\n c: 2\n",
        &[(3, 2, "yaml-syntax", "")],
    );
    check_case(
        "duplicate key",
        &format!("{REQUEST_HEAD}spec:\n  group: ops\n  group: ops\n"),
        &[(7, 3, "yaml-syntax", "")],
    );
}

#[test]
fn documents_that_are_not_pim_objects() {
    check_case("a list", "- a\n- b\n", &[(1, 1, "invalid-document", "")]);
    check_case(
        "no kind",
        "apiVersion: pim.dev/v1alpha1\nmetadata: {name: x}\n",
        &[(1, 1, "invalid-document", "kind")],
    );
    check_case(
        "unknown kind",
        "apiVersion: pim.dev/v1alpha1\nkind: PimGrop\n",
        &[(2, 1, "unknown-kind", "kind")],
    );
    check_case(
        "old version",
        "apiVersion: pim.dev/v1\nkind: PimGroup\n",
        &[(1, 1, "unsupported-version", "apiVersion")],
    );
    // Other APIs' kinds are skipped, not reported.
    check_case(
        "other api",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
        &[],
    );
}

#[test]
fn schema_errors() {
    check_case(
        "invalid name",
        "apiVersion: pim.dev/v1alpha1\nkind: AccessPolicy\nmetadata:\n  name: Ops_Policy\nspec: {}\n",
        &[(4, 3, "invalid-name", "metadata.name")],
    );
    check_case(
        "missing name",
        "apiVersion: pim.dev/v1alpha1\nkind: AccessPolicy\nmetadata:\n  labels: {team: ops}\nspec: {}\n",
        &[(3, 1, "required-field", "metadata.name")],
    );
    check_case(
        "unknown field",
        &format!(
            "{REQUEST_HEAD}spec:\n  group: ops\n  justificaton: typo\n  ticket: {{system: jira, number: OPS-1}}\n"
        ),
        &[(7, 3, "unknown-field", "spec.justificaton")],
    );
    check_case(
        "required field",
        &format!(
            "{ASSIGNMENT_HEAD}spec:\n  group: ops\n  schedule: {{duration: 1d}}\n  justification: x\n"
        ),
        &[(5, 1, "required-field", "spec.principal")],
    );
    check_case(
        "wrong type",
        &format!(
            "{REQUEST_HEAD}spec:\n  group: ops\n  deactivate: \"yes\"\n  ticket: {{system: jira, number: OPS-1}}\n  justification: x\n"
        ),
        &[(7, 3, "wrong-type", "spec.deactivate")],
    );
    check_case(
        "enum",
        &format!(
            "{REQUEST_HEAD}spec:\n  group: ops\n  role: admin\n  ticket: {{system: jira, number: OPS-1}}\n  justification: x\n"
        ),
        &[(7, 3, "invalid-value", "spec.role")],
    );
    check_case(
        "duration pattern",
        &format!(
            "{REQUEST_HEAD}spec:\n  group: ops\n  duration: 1 hour\n  ticket: {{system: jira, number: OPS-1}}\n  justification: x\n"
        ),
        &[(7, 3, "invalid-duration", "spec.duration")],
    );
    check_case(
        "time format",
        &format!(
            "{ASSIGNMENT_HEAD}spec:\n  group: ops\n  principal: {{user: bob}}\n  schedule:\n    start: next monday\n    duration: 1d\n  justification: x\n"
        ),
        &[(9, 5, "invalid-value", "spec.schedule.start")],
    );
    check_case(
        "keyed list",
        &format!(
            "{REQUEST_HEAD}spec:\n  group: ops\n  ticket: {{system: jira, number: OPS-1}}\n  justification: x\n  approvals:\n    - approver: bob\n      decision: Approve\n    - approver: bob\n      decision: Deny\n"
        ),
        &[(12, 7, "duplicate-list-key", "spec.approvals[1]")],
    );
}

#[test]
fn cel_rules() {
    check_case(
        "schedule needs exactly one end",
        &format!(
            "{ASSIGNMENT_HEAD}spec:\n  group: ops\n  principal: {{user: bob}}\n  schedule:\n    duration: 1d\n    permanent: true\n  justification: x\n"
        ),
        &[(8, 3, "cel-rule", "spec.schedule")],
    );
    check_case(
        "principal is user or group",
        &format!(
            "{ASSIGNMENT_HEAD}spec:\n  group: ops\n  principal:\n    user: bob\n    group: admins\n  schedule: {{duration: 1d}}\n  justification: x\n"
        ),
        &[(7, 3, "cel-rule", "spec.principal")],
    );
    // A later document of the same request is an update: its immutable fields must not change.
    check_case(
        "immutable request",
        &format!(
            "{REQUEST_HEAD}spec:\n  group: ops\n  duration: 30m\n  ticket: {{system: jira, number: OPS-1}}\n  justification: x\n---\n{REQUEST_HEAD}spec:\n  group: ops\n  duration: 1h\n"
        ),
        &[(15, 1, "cel-rule", "spec")],
    );
}

#[test]
fn list_items_are_documents() {
    // What `kubectl get ea -o yaml` prints: a List whose items are located one by one.
    check_case(
        "list",
        "apiVersion: v1\nkind: List\nitems:\n  - apiVersion: pim.dev/v1alpha1\n    kind: EligibleAssignment\n    metadata: {name: a}\n    spec:\n      group: ops\n      principal: {user: bob}\n      schedule: {duration: 1d}\n      justification: x\n  - apiVersion: pim.dev/v1alpha1\n    kind: EligibleAssignment\n    metadata: {name: b}\n    spec:\n      group: ops\n      principal: {user: bob}\n      schedule: {duration: 1 day}\n      justification: x\n",
        &[(18, 18, "invalid-duration", "spec.schedule.duration")],
    );
}

#[test]
fn duplicates_and_conflicts() {
    check_case(
        "duplicate name",
        "apiVersion: pim.dev/v1alpha1\nkind: AccessPolicy\nmetadata:\n  name: ops\nspec: {}\n",
        &[(4, 3, "duplicate-name", "metadata.name")],
    );
    // Both groups are in conflict: each is reported, naming the other.
    check_case_in(
        "same directory group by id",
        "apiVersion: pim.dev/v1alpha1\nkind: PimGroup\nmetadata:\n  name: ops-too\nspec:\n  directory: entra\n  group:\n    id: 2F9C61D0-5D7E-4A39-9BB2-7C2D0D5E1A10\n  roles:\n    member: {policy: ops}\n",
        &[
            (
                "base.yaml",
                17,
                5,
                "directory-group-conflict",
                "spec.group.id",
            ),
            (
                "case.yaml",
                8,
                5,
                "directory-group-conflict",
                "spec.group.id",
            ),
        ],
    );
    check_case(
        "same directory group by display name",
        "apiVersion: pim.dev/v1alpha1\nkind: PimGroup\nmetadata:\n  name: a\nspec:\n  group: {displayName: Admins}\n  roles:\n    member: {policy: ops}\n---\napiVersion: pim.dev/v1alpha1\nkind: PimGroup\nmetadata:\n  name: b\nspec:\n  group:\n    displayName: admins\n  roles:\n    member: {policy: ops}\n",
        &[
            (6, 11, "directory-group-conflict", "spec.group.displayName"),
            (16, 5, "directory-group-conflict", "spec.group.displayName"),
        ],
    );
    // The same id in another directory is another group.
    check_case(
        "other directory",
        "apiVersion: pim.dev/v1alpha1\nkind: PimGroup\nmetadata:\n  name: ops-ldap\nspec:\n  directory: ldap\n  group:\n    id: 2f9c61d0-5d7e-4a39-9bb2-7c2d0d5e1a10\n  roles:\n    member: {policy: ops}\n",
        &[],
    );
}

#[test]
fn cross_references() {
    check_case(
        "group of an assignment",
        &format!(
            "{ASSIGNMENT_HEAD}spec:\n  group: opps\n  principal: {{user: bob}}\n  schedule: {{duration: 1d}}\n  justification: x\n"
        ),
        &[(6, 3, "group-not-found", "spec.group")],
    );
    check_case(
        "role of a request",
        &format!(
            "{REQUEST_HEAD}spec:\n  group: ops\n  role: owner\n  ticket: {{system: jira, number: OPS-1}}\n  justification: x\n"
        ),
        &[(7, 3, "role-not-managed", "spec.role")],
    );
    check_case(
        "policy of a group",
        "apiVersion: pim.dev/v1alpha1\nkind: PimGroup\nmetadata:\n  name: dev\nspec:\n  group: {displayName: Devs}\n  roles:\n    member: {policy: dev}\n    owner:\n      policy: ops\n",
        &[
            (8, 14, "policy-not-found", "spec.roles.member.policy"),
            (9, 5, "last-owner", "spec.roles.owner"),
        ],
    );
}

#[test]
fn policy_caps() {
    check_case(
        "hard cap",
        "apiVersion: pim.dev/v1alpha1\nkind: AccessPolicy\nmetadata:\n  name: long\nspec:\n  activation:\n    maxDuration: 25h\n",
        &[(
            7,
            5,
            "duration-exceeds-maximum",
            "spec.activation.maxDuration",
        )],
    );
    check_case(
        "zero duration",
        "apiVersion: pim.dev/v1alpha1\nkind: AccessPolicy\nmetadata:\n  name: zero\nspec:\n  retention: 0d\n",
        &[(6, 3, "invalid-duration", "spec.retention")],
    );
    check_case(
        "assignment over the cap is clipped",
        &format!(
            "{ASSIGNMENT_HEAD}spec:\n  group: ops\n  principal: {{user: bob}}\n  schedule:\n    start: \"2026-11-01T00:00:00Z\"\n    duration: 400d\n  justification: x\n"
        ),
        &[(10, 5, "exceeds-policy", "spec.schedule.duration")],
    );
    check_case(
        "permanent when not allowed",
        &format!(
            "{ASSIGNMENT_HEAD}spec:\n  group: ops\n  principal: {{user: bob}}\n  schedule:\n    permanent: true\n  justification: x\n"
        ),
        &[(9, 5, "exceeds-policy", "spec.schedule.permanent")],
    );
}

#[test]
fn assignments_that_never_hold() {
    check_case(
        "already ended",
        &format!(
            "{ASSIGNMENT_HEAD}spec:\n  group: ops\n  principal: {{user: bob}}\n  schedule:\n    start: \"2026-01-01T00:00:00Z\"\n    end: \"2026-02-01T00:00:00Z\"\n  justification: x\n"
        ),
        &[(10, 5, "schedule-ended", "spec.schedule.end")],
    );
    check_case(
        "ends before it starts",
        &format!(
            "{ASSIGNMENT_HEAD}spec:\n  group: ops\n  principal: {{user: bob}}\n  schedule:\n    start: \"2026-12-01T00:00:00Z\"\n    end: \"2026-11-01T00:00:00Z\"\n  justification: x\n"
        ),
        &[(10, 5, "invalid-schedule", "spec.schedule.end")],
    );
    check_case(
        "justification required",
        &format!(
            "{ASSIGNMENT_HEAD}spec:\n  group: ops\n  principal: {{user: bob}}\n  schedule: {{duration: 1d}}\n"
        ),
        &[(5, 1, "justification-required", "spec.justification")],
    );
}

// Issue 20: an assignment ending within its policy's eligibilityEndingLead (14d by default) is
// a warning on the field that sets its end, so that the pull request renewing it gets written.
#[test]
fn assignments_ending_within_their_policys_lead() {
    check_case(
        "ends in 7 days",
        &format!(
            "{ASSIGNMENT_HEAD}spec:\n  group: ops\n  principal: {{user: bob}}\n  schedule:\n    start: \"2026-06-01T00:00:00Z\"\n    end: \"2026-11-12T00:00:00Z\"\n  justification: x\n"
        ),
        &[(10, 5, "eligibility-ending", "spec.schedule.end")],
    );
    check_case(
        "ends in 15 days",
        &format!(
            "{ASSIGNMENT_HEAD}spec:\n  group: ops\n  principal: {{user: bob}}\n  schedule:\n    start: \"2026-06-01T00:00:00Z\"\n    end: \"2026-11-20T00:00:00Z\"\n  justification: x\n"
        ),
        &[],
    );
}

/// The fixture: two policies with their own leads, and assignments inside, outside, shorter
/// than the lead, Active, clipped by the policy, and already over; as text and as SARIF.
#[test]
fn the_eligibility_ending_fixture() {
    let dir = "tests/fixtures/validate/eligibility-ending";
    let run = run_in(repo(), &["validate", dir, "--now", NOW]);
    assert_eq!(run.code, 1, "warnings fail the check: {}", run.stderr);
    golden("validate-eligibility-ending.txt", &run.stdout);
    let sarif = run_in(
        repo(),
        &["validate", dir, "--now", NOW, "--format", "sarif"],
    );
    assert_eq!(sarif.code, 1, "{}", sarif.stderr);
    golden("validate-eligibility-ending.sarif", &sarif.stdout);
    let log: Value = serde_json::from_str(&sarif.stdout).unwrap();
    let rules = log["runs"][0]["tool"]["driver"]["rules"]
        .as_array()
        .unwrap();
    let results = log["runs"][0]["results"].as_array().unwrap();
    let ending: Vec<&Value> = results
        .iter()
        .filter(|r| r["ruleId"] == "eligibility-ending")
        .collect();
    assert_eq!(ending.len(), 4, "{}", sarif.stdout);
    for result in ending {
        assert_eq!(result["level"], "warning");
        let index = result["ruleIndex"].as_u64().unwrap() as usize;
        assert_eq!(rules[index]["id"], "eligibility-ending");
    }
}

#[test]
fn requests_that_break_their_policy() {
    check_case(
        "longer than the policy allows, without the ticket it needs",
        &format!("{REQUEST_HEAD}spec:\n  group: ops\n  duration: 2h\n  justification: x\n"),
        &[
            (5, 1, "ticket-required", "spec.ticket"),
            (7, 3, "duration-exceeds-maximum", "spec.duration"),
        ],
    );
    check_case(
        "stamped principal without eligibility",
        &format!(
            "{REQUEST_HEAD}spec:\n  group: ops\n  principal: mallory\n  requester: {{username: mallory}}\n  ticket: {{system: jira, number: OPS-1}}\n  justification: x\n"
        ),
        &[
            (7, 3, "not-eligible", "spec.principal"),
            (7, 3, "stamped-by-webhook", "spec.principal"),
            (8, 3, "stamped-by-webhook", "spec.requester"),
        ],
    );
    // Read from a cluster (it has a creationTimestamp), the stamp is the webhook's own.
    check_case(
        "exported",
        "apiVersion: pim.dev/v1alpha1\nkind: ActivationRequest\nmetadata:\n  name: r\n  creationTimestamp: \"2026-11-04T00:00:00Z\"\nspec:\n  group: ops\n  principal: alice\n  requester: {username: alice}\n  ticket: {system: jira, number: OPS-1}\n  justification: x\n",
        &[],
    );
    // The principal is stamped by the admission webhook, so its absence is no finding.
    check_case(
        "unstamped",
        &format!(
            "{REQUEST_HEAD}spec:\n  group: ops\n  ticket: {{system: jira, number: OPS-1}}\n  justification: x\n"
        ),
        &[],
    );
}

// issue 14 finding 9: a request scheduled too far ahead is a finding on spec.startTime, measured
// from its creationTimestamp when the manifest has one, else from `--now`.
#[test]
fn issue_14_finding_9_a_start_too_far_ahead_is_a_finding() {
    let body = "spec:\n  group: ops\n  ticket: {system: jira, number: OPS-1}\n  justification: x\n  startTime: \"2026-12-05T00:00:00Z\"\n";
    check_case(
        "30 days after --now",
        &format!("{REQUEST_HEAD}{body}"),
        &[(9, 3, "invalid-start-time", "spec.startTime")],
    );
    check_case(
        "10 days after its creationTimestamp",
        &format!(
            "apiVersion: pim.dev/v1alpha1\nkind: ActivationRequest\nmetadata:\n  name: r\n  creationTimestamp: \"2026-11-25T00:00:00Z\"\n{body}"
        ),
        &[],
    );
    check_case(
        "within 14 days of --now",
        &format!(
            "{REQUEST_HEAD}spec:\n  group: ops\n  ticket: {{system: jira, number: OPS-1}}\n  justification: x\n  startTime: \"2026-11-19T00:00:00Z\"\n"
        ),
        &[],
    );
}

// issue 18 finding 1: the old README's request writes spec.requester and spec.principal, which
// the admission webhook stamps; validate says so, with file, line, field and rule.
#[test]
fn issue_18_finding_1_hand_written_requester_and_principal_are_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "setup.yaml",
        "apiVersion: pim.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: ops}\nspec:\n  activation: {maxDuration: 1h}\n---\napiVersion: pim.dev/v1alpha1\nkind: PimGroup\nmetadata: {name: ops}\nspec:\n  directory: kubernetes\n  group: {id: ops}\n  roles: {member: {policy: ops}}\n---\napiVersion: pim.dev/v1alpha1\nkind: EligibleAssignment\nmetadata: {name: ops-alice}\nspec:\n  group: ops\n  principal: {user: alice}\n  schedule: {start: \"2026-11-01T00:00:00Z\", duration: 30d}\n  justification: On call.\n",
    );
    write(
        dir.path(),
        "request.yaml",
        "apiVersion: pim.dev/v1alpha1\nkind: ActivationRequest\nmetadata: {name: alice-ops-1}\nspec:\n  group: ops\n  duration: 15m\n  justification: incident 4711\n  requester: {username: alice}\n  principal: alice\n",
    );
    let run = run_in(dir.path(), &["validate", ".", "--now", NOW]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    let principal = "request.yaml:9:3: warning[stamped-by-webhook] ActivationRequest/alice-ops-1 spec.principal: is stamped by the admission webhook from the authenticated caller; the webhook replaces \"alice\" with the caller's own principal when it names the caller, and refuses the request when it names anyone else (\"you may only activate for yourself\"); without the webhook the request is never granted: it stays Pending with Validated=Unknown (AttestationKeyMissing) when the operator has no attestation key, and is Rejected with UnverifiedRequester when it has one";
    let requester = "request.yaml:8:3: warning[stamped-by-webhook] ActivationRequest/alice-ops-1 spec.requester: is stamped and signed by the admission webhook from the authenticated caller; the webhook refuses a request that writes it (\"is stamped by the admission webhook from your credentials; leave it out\"); without the webhook the request is never granted: it stays Pending with Validated=Unknown (AttestationKeyMissing) when the operator has no attestation key, and is Rejected with UnverifiedRequester when it has one";
    assert_eq!(lines[0], requester, "{}", run.stdout);
    assert_eq!(
        lines[1],
        "    hint: remove spec.requester and create the request as \"alice\" (kubectl pim activate ops, or kubectl create --as=alice to test), through an API server with pim-operator's webhook installed"
    );
    assert_eq!(lines[2], principal, "{}", run.stdout);
    assert_eq!(
        lines.last().copied(),
        Some("checked 2 files, 4 documents, 4 PIM objects: 0 errors, 2 warnings")
    );
}

// ---------------------------------------------------------------------------------------------
// Inputs, notes and exit codes
// ---------------------------------------------------------------------------------------------

#[test]
fn a_missing_path_cannot_run() {
    let run = run_in(
        repo(),
        &["validate", "examples/", "no/such/dir", "--now", NOW],
    );
    assert_eq!(run.code, 2);
    assert_eq!(run.stdout, "");
    assert!(
        run.stderr.starts_with("error: no/such/dir: "),
        "{}",
        run.stderr
    );
}

#[test]
fn directories_are_walked_and_other_kinds_noted() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "pim/b/base.yaml", BASE);
    write(
        dir.path(),
        "pim/a/app.yml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n---\n# empty\n",
    );
    write(dir.path(), "pim/README.md", "not yaml");
    let run = run_in(dir.path(), &["validate", "pim", "--now", NOW]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert_eq!(
        run.stdout,
        "pim/a/app.yml:1:1: note: skipped apps/v1 Deployment/web: not a PIM kind\nchecked 2 files, 4 documents, 3 PIM objects: no findings\n"
    );
}

#[test]
fn text_output_with_every_part() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "base.yaml", BASE);
    write(
        dir.path(),
        "broken.yaml",
        &format!(
            "{ASSIGNMENT_HEAD}spec:\n  group: ops\n  principal: {{user: bob}}\n  schedule: {{duration: 400d}}\n  justification: x\n---\n{REQUEST_HEAD}spec:\n  group: opps\n---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: pim}}\n"
        ),
    );
    write(dir.path(), "syntax.yaml", "kind: [\n");
    let run = run_in(
        dir.path(),
        &[
            "validate",
            "base.yaml",
            "broken.yaml",
            "syntax.yaml",
            "--now",
            NOW,
        ],
    );
    assert_eq!(run.code, 1);
    golden("validate-broken.txt", &run.stdout);

    let sarif = run_in(
        dir.path(),
        &[
            "validate",
            "base.yaml",
            "broken.yaml",
            "syntax.yaml",
            "--now",
            NOW,
            "--format",
            "sarif",
        ],
    );
    assert_eq!(sarif.code, 1);
    golden("validate-broken.sarif", &sarif.stdout);
}

// ---------------------------------------------------------------------------------------------
// SARIF against the SARIF 2.1.0 schema, with a real validator
// ---------------------------------------------------------------------------------------------

fn sarif_schema() -> PathBuf {
    let path = std::env::var_os("PIM_SARIF_SCHEMA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").expect("HOME is set");
            Path::new(&home).join(".cache/pim-operator/sarif-schema-2.1.0.json")
        });
    assert!(
        path.is_file(),
        "the SARIF 2.1.0 schema is not at {}; run `.ci/install-sarif-schema` to put it there",
        path.display()
    );
    path
}

fn find_tool(name: &str) -> PathBuf {
    let dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    let home_bin = std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/bin"));
    dirs.into_iter()
        .chain(home_bin)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} is not on PATH; run `.ci/install-tools`"))
}

fn check_jsonschema(schema: &Path, document: &Path) -> (bool, String) {
    let out = Command::new(find_tool("check-jsonschema"))
        .arg("--schemafile")
        .arg(schema)
        .arg(document)
        .output()
        .expect("run check-jsonschema");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn sarif_output_is_valid_sarif_2_1_0() {
    let schema = sarif_schema();
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "base.yaml", BASE);
    write(
        dir.path(),
        "broken dir/case.yaml",
        &format!(
            "{ASSIGNMENT_HEAD}spec:\n  group: ops\n  principal: {{user: bob}}\n  schedule: {{permanent: true}}\n  justification: x\n---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: pim}}\n---\n{REQUEST_HEAD}spec:\n  group: nope\n"
        ),
    );
    let run = run_in(
        dir.path(),
        &["validate", ".", "--now", NOW, "--format", "sarif"],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    let log: Value = serde_json::from_str(&run.stdout).unwrap();
    let results = log["runs"][0]["results"].as_array().unwrap();
    assert_eq!(results.len(), 2, "{}", run.stdout);
    let region = &results[0]["locations"][0]["physicalLocation"];
    assert_eq!(region["artifactLocation"]["uri"], "broken%20dir/case.yaml");
    assert_eq!(region["region"]["startLine"], 8);
    assert_eq!(region["region"]["startColumn"], 14);
    assert_eq!(results[0]["level"], "warning");
    assert_eq!(results[1]["level"], "error");
    let rules = log["runs"][0]["tool"]["driver"]["rules"]
        .as_array()
        .unwrap();
    let index = results[0]["ruleIndex"].as_u64().unwrap() as usize;
    assert_eq!(rules[index]["id"], results[0]["ruleId"]);

    let file = dir.path().join("out.sarif");
    std::fs::write(&file, &run.stdout).unwrap();
    let (ok, text) = check_jsonschema(&schema, &file);
    assert!(ok, "check-jsonschema rejected our SARIF:\n{text}");

    // The validator really validates: a log without its version is refused.
    let mut broken = log.clone();
    broken.as_object_mut().unwrap().remove("version");
    broken["runs"][0]["results"][0]["level"] = Value::from("fatal");
    std::fs::write(&file, broken.to_string()).unwrap();
    let (ok, text) = check_jsonschema(&schema, &file);
    assert!(!ok, "check-jsonschema accepted a broken SARIF log:\n{text}");
}

// Issue 20: `standingAccess: Remove` on a group the operator has never reported is a warning;
// given the cluster's PimGroups (`--observed`), a seen group is clean, and a switch from Adopt
// names the members it removes. The adoptAfter CEL rule is checked as the API server would.
#[test]
fn issue_20_remove_on_an_unseen_group_and_the_members_a_switch_removes() {
    let group = |extra: &str| {
        format!(
            "apiVersion: pim.dev/v1alpha1\nkind: PimGroup\nmetadata:\n  name: payroll\nspec:\n  directory: entra\n  group: {{displayName: Payroll}}\n  roles: {{member: {{policy: ops}}}}\n{extra}"
        )
    };
    check_case(
        "remove, never seen",
        &group("  standingAccess: Remove\n"),
        &[(9, 3, "remove-unseen-group", "spec.standingAccess")],
    );
    check_case("adopt (the default)", &group(""), &[]);
    check_case(
        "adoptAfter under Report",
        &group("  standingAccess: Report\n  adoptAfter: \"2026-12-01T00:00:00Z\"\n"),
        &[(5, 1, "cel-rule", "spec")],
    );

    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "repo/base.yaml", BASE);
    write(
        dir.path(),
        "repo/payroll.yaml",
        &group("  standingAccess: Remove\n"),
    );
    let observed = |standing: &str| {
        format!(
            "apiVersion: v1\nkind: List\nitems:\n- apiVersion: pim.dev/v1alpha1\n  kind: PimGroup\n  metadata: {{name: payroll}}\n  spec:\n    directory: entra\n    group: {{displayName: Payroll}}\n    roles: {{member: {{policy: ops}}}}\n    standingAccess: {standing}\n  status:\n    groupId: 0d6b7c1e\n    unexplainedMembers: [\"user:bob@contoso.com\", \"group:contractors\"]\n"
        )
    };
    let run_with = |standing: &str| {
        write(dir.path(), "observed.yaml", &observed(standing));
        run_in(
            dir.path(),
            &[
                "validate",
                "repo",
                "--now",
                NOW,
                "--format",
                "json",
                "--observed",
                "observed.yaml",
            ],
        )
    };
    let switched = run_with("Adopt");
    assert_eq!(
        findings_of(&switched),
        [(
            "repo/payroll.yaml".to_owned(),
            9,
            3,
            "remove-drops-members".to_owned(),
            "spec.standingAccess".to_owned()
        )],
        "{}",
        switched.stdout
    );
    assert!(
        switched
            .stdout
            .contains("removes the 2 member(s) pim-operator lists in status as explained by no grant: user:bob@contoso.com, group:contractors"),
        "{}",
        switched.stdout
    );
    let already = run_with("Remove");
    assert_eq!(already.code, 0, "{}", already.stdout);
    // An observed file that does not read: exit 2, naming it.
    write(dir.path(), "observed.yaml", "items: [\n");
    let broken = run_in(
        dir.path(),
        &[
            "validate",
            "repo",
            "--now",
            NOW,
            "--observed",
            "observed.yaml",
        ],
    );
    assert_eq!(broken.code, 2, "{}", broken.stdout);
    assert!(
        broken.stderr.contains("--observed observed.yaml"),
        "{}",
        broken.stderr
    );
}

// Issue 19: given an AccessReview's results (`--observed` with `kubectl get accessreviews -o
// yaml`), every assignment it denied is an error until the pull request removes its manifest;
// the pull request that removes it passes.
#[test]
fn assignments_an_access_review_denied_are_reported_until_removed() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "repo/base.yaml", BASE);
    let review = "apiVersion: pim.dev/v1alpha1\nkind: AccessReview\nmetadata:\n  name: ops-review\nspec:\n  scope: {groups: [ops]}\n  reviewers: {principals: [{user: lead}]}\n  schedule: {start: \"2026-11-02T09:00:00Z\", duration: 2d}\n";
    write(dir.path(), "repo/review.yaml", review);
    let observed = format!(
        "apiVersion: v1\nkind: List\nitems:\n- {}  status:\n    denied:\n    - {{assignment: ops-alice, uid: 5e1c, instance: \"2026-11-02T09:00:00Z\", at: \"2026-11-04T09:00:00Z\", by: lead, reason: left the team}}\n",
        review
            .lines()
            .map(|l| format!("{l}\n"))
            .collect::<Vec<_>>()
            .join("  ")
    );
    write(dir.path(), "observed.yaml", &observed);
    let run = |path: &str| {
        run_in(
            dir.path(),
            &[
                "validate",
                path,
                "--now",
                NOW,
                "--format",
                "json",
                "--observed",
                "observed.yaml",
            ],
        )
    };
    let before = run("repo");
    assert_eq!(
        findings_of(&before),
        [(
            "repo/base.yaml".to_owned(),
            22,
            1,
            "review-denied".to_owned(),
            String::new()
        )],
        "{}",
        before.stdout
    );
    assert!(
        before
            .stdout
            .contains("access review \\\"ops-review\\\" denied this assignment (lead)"),
        "{}",
        before.stdout
    );
    // Without the results, the same manifests are clean.
    let blind = run_in(dir.path(), &["validate", "repo", "--now", NOW]);
    assert_eq!(blind.code, 0, "{}", blind.stdout);
    // The pull request removing the manifest passes.
    let without: String = BASE
        .split("---\n")
        .take(2)
        .collect::<Vec<_>>()
        .join("---\n");
    write(dir.path(), "repo/base.yaml", &without);
    let after = run("repo");
    assert_eq!(after.code, 0, "{}", after.stdout);
}

// Issue 19: an AccessReview's CEL rules, and what `validate` checks beyond the schema: the
// schedule, the PimGroups it names and its label selector.
#[test]
fn access_review_rules() {
    let head = "apiVersion: pim.dev/v1alpha1\nkind: AccessReview\nmetadata:\n  name: r\nspec:\n";
    check_case(
        "nothing in scope, nobody to review",
        &format!(
            "{head}  scope: {{roles: [member]}}\n  reviewers: {{selfReview: false}}\n  schedule: {{start: \"2026-11-02T09:00:00Z\", duration: 2d}}\n"
        ),
        &[
            (6, 3, "cel-rule", "spec.scope"),
            (7, 3, "cel-rule", "spec.reviewers"),
        ],
    );
    check_case(
        "overlapping instances, a missing group, a selector the API server refuses",
        &format!(
            "{head}  scope:\n    groups: [ops, nope]\n    groupSelector: {{matchExpressions: [{{key: tier, operator: Exists, values: [a]}}]}}\n  reviewers: {{principals: [{{user: lead}}]}}\n  schedule: {{start: \"2026-11-02T09:00:00Z\", recurrence: Weekly, duration: 8d}}\n"
        ),
        &[
            (7, 19, "group-not-found", "spec.scope.groups[1]"),
            (8, 5, "invalid-selector", "spec.scope.groupSelector"),
            (10, 65, "invalid-schedule", "spec.schedule.duration"),
        ],
    );
}
