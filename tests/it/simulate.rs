#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `pim-operator simulate`, run as a user would: timelines for approval, denial, timeout, a
//! scheduled start, two overlapping requests of one user, and a policy that shortens today's
//! requests. Each is compared with a golden timeline in `tests/golden/` and checked for the
//! facts it is about.
//!
//! Regenerate the goldens after an intended change, and review the diff:
//!
//! ```sh
//! UPDATE_GOLDEN=1 cargo test --test it validate:: simulate::
//! ```

use std::process::Command;

use serde_json::Value;
use support::{Run, golden, repo, run_in};

use crate::support;

const START: &str = "2026-11-01T09:00:00Z";
const ALICE: &str = "alice@contoso.com";
const BOB: &str = "bob@contoso.com";

fn simulate(args: &[&str]) -> Run {
    let mut all = vec!["simulate"];
    all.extend_from_slice(args);
    run_in(repo(), &all)
}

/// Runs a scenario as text (compared with `NAME.txt`) and as JSON, whose events are returned.
fn scenario(name: &str, args: &[&str]) -> Vec<Value> {
    let text = simulate(args);
    assert_eq!(text.code, 0, "{}{}", text.stdout, text.stderr);
    golden(&format!("simulate-{name}.txt"), &text.stdout);
    let mut json_args = args.to_vec();
    json_args.extend(["--format", "json"]);
    let json = simulate(&json_args);
    assert_eq!(json.code, 0, "{}", json.stderr);
    let timeline: Value = serde_json::from_str(&json.stdout).unwrap();
    timeline["events"].as_array().unwrap().clone()
}

/// `(time, phase)` of each transition of `request`.
fn phases(events: &[Value], request: &str) -> Vec<(String, String)> {
    events
        .iter()
        .filter(|e| e["event"] == "transition" && e["request"] == request)
        .map(|e| {
            (
                e["time"].as_str().unwrap().to_owned(),
                e["to"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// `(time, "+"/"-", member)` of each directory change.
fn membership(events: &[Value]) -> Vec<(String, &'static str, String)> {
    events
        .iter()
        .filter_map(|e| {
            let sign = match e["event"].as_str()? {
                "memberAdded" => "+",
                "memberRemoved" => "-",
                _ => return None,
            };
            Some((
                e["time"].as_str()?.to_owned(),
                sign,
                e["member"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

fn s(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

fn request_flag(spec: &str) -> String {
    format!("{ALICE}:finreport-senioranalyst:member:{spec}")
}

#[test]
fn approval() {
    let request = request_flag("30m");
    let approve = format!("{BOB}:req-1@+10m");
    let events = scenario(
        "approval",
        &[
            "examples/",
            "--start",
            START,
            "--request",
            &request,
            "--approve",
            &approve,
        ],
    );
    assert_eq!(
        phases(&events, "req-1"),
        s(&[
            ("2026-11-01T09:00:00Z", "PendingApproval"),
            ("2026-11-01T09:10:00Z", "Scheduled"),
            ("2026-11-01T09:10:00Z", "Active"),
            ("2026-11-01T09:40:00Z", "Expired"),
        ])
    );
    let alice = format!("user:{ALICE}");
    assert_eq!(
        membership(&events),
        [
            ("2026-11-01T09:10:00Z".to_owned(), "+", alice.clone()),
            ("2026-11-01T09:40:00Z".to_owned(), "-", alice),
        ]
    );
}

#[test]
fn denial() {
    let request = request_flag("30m");
    let deny = format!("{BOB}:req-1@+5m");
    let events = scenario(
        "deny",
        &[
            "examples/",
            "--start",
            START,
            "--request",
            &request,
            "--deny",
            &deny,
        ],
    );
    assert_eq!(
        phases(&events, "req-1"),
        s(&[
            ("2026-11-01T09:00:00Z", "PendingApproval"),
            ("2026-11-01T09:05:00Z", "Denied")
        ])
    );
    assert!(membership(&events).is_empty());
}

#[test]
fn timeout() {
    let request = request_flag("30m");
    // alice is no approver: her approval is ignored, and nobody else decides.
    let own = format!("{ALICE}:req-1@+1h");
    let events = scenario(
        "timeout",
        &[
            "examples/",
            "--start",
            START,
            "--request",
            &request,
            "--approve",
            &own,
        ],
    );
    assert_eq!(
        phases(&events, "req-1"),
        s(&[
            ("2026-11-01T09:00:00Z", "PendingApproval"),
            ("2026-11-02T09:00:00Z", "TimedOut")
        ])
    );
    let ignored = events
        .iter()
        .find(|e| e["event"] == "update" && e["request"] == "req-1")
        .unwrap();
    assert_eq!(ignored["time"], "2026-11-01T10:00:00Z");
    assert!(
        ignored["message"]
            .as_str()
            .unwrap()
            .ends_with("ignored: alice@contoso.com (not an approver under the policy)"),
        "{ignored}"
    );
    assert!(membership(&events).is_empty());
}

#[test]
fn scheduled_start() {
    let request = request_flag("30m@+2h");
    let approve = format!("{BOB}:req-1@+10m");
    let events = scenario(
        "scheduled",
        &[
            "examples/",
            "--start",
            START,
            "--request",
            &request,
            "--approve",
            &approve,
        ],
    );
    assert_eq!(
        phases(&events, "req-1"),
        s(&[
            ("2026-11-01T09:00:00Z", "PendingApproval"),
            ("2026-11-01T09:10:00Z", "Scheduled"),
            ("2026-11-01T11:00:00Z", "Active"),
            ("2026-11-01T11:30:00Z", "Expired"),
        ])
    );
    let alice = format!("user:{ALICE}");
    assert_eq!(
        membership(&events),
        [
            ("2026-11-01T11:00:00Z".to_owned(), "+", alice.clone()),
            ("2026-11-01T11:30:00Z".to_owned(), "-", alice),
        ]
    );
}

#[test]
fn overlapping_requests_of_one_user() {
    let events = scenario(
        "overlap",
        &[
            "tests/fixtures/simulate/self-service",
            "--start",
            START,
            "--until",
            "4h",
            "--request",
            "alice@contoso.com:ops-admin:member:1h",
            "--request",
            "alice@contoso.com:ops-admin:member:1h@+30m",
        ],
    );
    assert_eq!(
        phases(&events, "req-1"),
        s(&[
            ("2026-11-01T09:00:00Z", "Scheduled"),
            ("2026-11-01T09:00:00Z", "Active"),
            ("2026-11-01T10:00:00Z", "Expired"),
        ])
    );
    assert_eq!(
        phases(&events, "req-2"),
        s(&[
            ("2026-11-01T09:00:00Z", "Scheduled"),
            ("2026-11-01T09:30:00Z", "Active"),
            ("2026-11-01T10:30:00Z", "Expired")
        ])
    );
    // One add and one remove: access holds until the later request ends.
    let alice = format!("user:{ALICE}");
    assert_eq!(
        membership(&events),
        [
            ("2026-11-01T09:00:00Z".to_owned(), "+", alice.clone()),
            ("2026-11-01T10:30:00Z".to_owned(), "-", alice),
        ]
    );
}

#[test]
fn a_shorter_policy_shortens_todays_requests() {
    let events = scenario(
        "shortened",
        &[
            "tests/fixtures/simulate/shortened",
            "--start",
            "2026-11-02T10:00:00Z",
            "--until",
            "12h",
            "--request",
            "alice@contoso.com:ops-admin:member:2h",
            "--request",
            "carol@contoso.com:ops-admin:member:",
        ],
    );
    // alice-morning's 8h window, cut to 1h from its start, has already ended.
    assert_eq!(
        phases(&events, "alice-morning"),
        s(&[("2026-11-02T10:00:00Z", "Expired")])
    );
    // carol-incident ends at 10:45 instead of 13:45.
    assert_eq!(
        phases(&events, "carol-incident"),
        s(&[("2026-11-02T10:45:00Z", "Expired")])
    );
    let carol_window = events
        .iter()
        .find(|e| e["event"] == "window" && e["request"] == "carol-incident")
        .unwrap();
    assert_eq!(carol_window["expiresAt"], "2026-11-02T10:45:00Z");
    assert_eq!(carol_window["previousEnd"], "2026-11-02T13:45:00Z");
    assert_eq!(carol_window["clippedBy"], "Policy");
    // A new request for longer than the policy allows is rejected; one without a duration gets 1h.
    assert_eq!(
        phases(&events, "req-1"),
        s(&[("2026-11-02T10:00:00Z", "Rejected")])
    );
    assert_eq!(
        phases(&events, "req-2"),
        s(&[
            ("2026-11-02T10:00:00Z", "Active"),
            ("2026-11-02T11:00:00Z", "Expired")
        ])
    );
    assert_eq!(
        membership(&events),
        [
            (
                "2026-11-02T10:00:00Z".to_owned(),
                "-",
                "user:alice@contoso.com".to_owned()
            ),
            (
                "2026-11-02T11:00:00Z".to_owned(),
                "-",
                "user:carol@contoso.com".to_owned()
            ),
        ]
    );
}

#[test]
fn json_output() {
    let request = request_flag("30m");
    let approve = format!("{BOB}:req-1@+10m");
    let run = simulate(&[
        "examples/",
        "--start",
        START,
        "--until",
        "1h",
        "--request",
        &request,
        "--approve",
        &approve,
        "--format",
        "json",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    golden("simulate-approval.json", &run.stdout);
}

#[test]
fn bad_plans_cannot_run() {
    let request = request_flag("30m");
    let run = simulate(&[
        "examples/",
        "--start",
        START,
        "--request",
        &request,
        "--approve",
        "bob@contoso.com:req-9",
    ]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .contains("\"req-9\", which is neither planned nor in the manifests"),
        "{}",
        run.stderr
    );

    let run = simulate(&[
        "examples/",
        "--request",
        "alice:finreport-senioranalyst:admin:30m",
    ]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.starts_with(
            "error: --request \"alice:finreport-senioranalyst:admin:30m\": ROLE is member or owner"
        ),
        "{}",
        run.stderr
    );

    let run = simulate(&[
        "examples/",
        "--start",
        START,
        "--until",
        "2026-10-01T00:00:00Z",
    ]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("is before the start"), "{}", run.stderr);
}

#[test]
fn manifests_the_api_server_would_refuse_cannot_run() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("policy.yaml"),
        "apiVersion: pim.dev/v1alpha1\nkind: AccessPolicy\nmetadata:\n  name: p\nspec:\n  activation:\n    maxDuration: soon\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pim-operator"))
        .current_dir(dir.path())
        .args(["simulate", "policy.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains(
            "policy.yaml:7:5: error[invalid-duration] AccessPolicy/p spec.activation.maxDuration"
        ),
        "{stderr}"
    );
}

// Issue 20: onboarding an existing group, with its current members from a file.
#[test]
fn onboarding_keeps_members_until_adoption_ends_and_never_removes_protected_ones() {
    let events = scenario(
        "onboarding",
        &[
            "tests/fixtures/simulate/onboarding",
            "--members",
            "tests/fixtures/simulate/onboarding-members.yaml",
            "--start",
            START,
            "--until",
            "6h",
            "--request",
            "alice@contoso.com:payroll-admin:member:1h",
        ],
    );
    let kept: Vec<(String, String)> = events
        .iter()
        .filter(|e| e["event"] == "memberKept")
        .map(|e| {
            (
                e["member"].as_str().unwrap().to_owned(),
                e["why"]
                    .as_str()
                    .unwrap()
                    .split(':')
                    .next()
                    .unwrap()
                    .to_owned(),
            )
        })
        .collect();
    assert_eq!(
        kept,
        s(&[
            ("user:mallory@contoso.com", "adopting (standingAccess"),
            ("group:Payroll-Contractors", "adopting (standingAccess"),
            (
                "user:breakglass@contoso.com",
                "protected (spec.protectedMembers)"
            ),
        ])
    );
    assert_eq!(
        membership(&events),
        [
            (
                "2026-11-01T09:00:00Z".to_owned(),
                "+",
                "user:alice@contoso.com".to_owned()
            ),
            (
                "2026-11-01T10:00:00Z".to_owned(),
                "-",
                "user:alice@contoso.com".to_owned()
            ),
            (
                "2026-11-01T12:00:00Z".to_owned(),
                "-",
                "user:mallory@contoso.com".to_owned()
            ),
            (
                "2026-11-01T12:00:00Z".to_owned(),
                "-",
                "group:Payroll-Contractors".to_owned()
            ),
        ]
    );
    // A members file naming a PimGroup the manifests do not have cannot run.
    let dir = tempfile::tempdir().unwrap();
    let members = dir.path().join("members.yaml");
    std::fs::write(&members, "payroll: [mallory@contoso.com]\n").unwrap();
    let run = simulate(&[
        "tests/fixtures/simulate/onboarding",
        "--members",
        members.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 2, "{}", run.stdout);
    assert!(
        run.stderr.contains("PimGroup \"payroll\"") && run.stderr.contains("do not declare"),
        "{}",
        run.stderr
    );
}

// Issue 20: `--from-cluster` takes the current members from the PimGroups' status, through
// KUBECONFIG, as a platform team would run it before switching a group to Remove.
#[tokio::test]
async fn from_cluster_reads_the_members_pimgroups_list_in_status() {
    use kube::api::{Api, Patch, PatchParams, PostParams};
    use pim_operator::api::PimGroup;
    let server = pim_testkit::fake_apiserver::FakeApiServer::start()
        .await
        .unwrap();
    let groups: Api<PimGroup> = Api::all(server.client());
    let text =
        std::fs::read_to_string(repo().join("tests/fixtures/simulate/onboarding/group.yaml"))
            .unwrap();
    let group: PimGroup = serde_saphyr::from_str(&text).unwrap();
    groups.create(&PostParams::default(), &group).await.unwrap();
    let status = serde_json::json!({"status": {
        "groupId": "0d6b7c1e",
        "unexplainedMembers": ["user:mallory@contoso.com"],
    }});
    groups
        .patch_status(
            "payroll-admin",
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: fake, cluster: {{server: \"{}\"}}}}]\nusers: [{{name: admin, user: {{}}}}]\ncontexts: [{{name: fake, context: {{cluster: fake, user: admin}}}}]\ncurrent-context: fake\n",
            server.url()
        ),
    )
    .unwrap();
    let run = |kubeconfig: std::path::PathBuf| {
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_pim-operator"))
                .current_dir(repo())
                .args([
                    "simulate",
                    "tests/fixtures/simulate/onboarding",
                    "--from-cluster",
                    "--start",
                    START,
                    "--until",
                    "6h",
                ])
                .env("KUBECONFIG", kubeconfig)
                .output()
                .unwrap()
        })
    };
    let out = run(kubeconfig).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("payroll-admin/member  starts with user:mallory@contoso.com"),
        "{stdout}"
    );
    assert!(
        stdout.contains("2026-11-01T12:00:00Z  payroll-admin/member  - user:mallory@contoso.com"),
        "{stdout}"
    );
    // No cluster there: a clear error, exit code 2.
    let missing = dir.path().join("missing-kubeconfig");
    let out = run(missing).await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--from-cluster: cannot reach the cluster"),
        "{stderr}"
    );
}

// Issue 20: extensions (`--extend`, as `kubectl pim extend`) under the example policy: 30m at
// most, approval by bob. req-1 asks for 20m and is approved at +5m (09:05 to 09:25).
fn extension_plan(decision: &str) -> Vec<Value> {
    let request = request_flag("20m");
    let name = format!("extend-{decision}");
    let flag = format!("--{decision}");
    let decide = format!("{BOB}:ext-1@+22m");
    let approve = format!("{BOB}:req-1@+5m");
    scenario(
        &name,
        &[
            "examples/",
            "--start",
            START,
            "--until",
            "2h",
            "--request",
            &request,
            "--approve",
            &approve,
            "--extend",
            "req-1:15m@+20m",
            &flag,
            &decide,
        ],
    )
}

#[test]
fn an_approved_extension_keeps_access_to_the_cap_without_a_break() {
    let events = extension_plan("approve");
    assert_eq!(
        phases(&events, "ext-1"),
        s(&[
            ("2026-11-01T09:20:00Z", "PendingApproval"),
            // Already a member: Active at once, no add.
            ("2026-11-01T09:22:00Z", "Active"),
            // 15m past 09:25 would be 09:40; the policy's 30m from 09:05 ends it at 09:35.
            ("2026-11-01T09:35:00Z", "Expired"),
        ])
    );
    let original = events
        .iter()
        .find(|e| e["request"] == "req-1" && e["to"] == "Expired")
        .unwrap();
    assert_eq!(original["reason"], "Extended");
    let alice = format!("user:{ALICE}");
    assert_eq!(
        membership(&events),
        [
            ("2026-11-01T09:05:00Z".to_owned(), "+", alice.clone()),
            ("2026-11-01T09:35:00Z".to_owned(), "-", alice),
        ]
    );
}

#[test]
fn a_denied_extension_leaves_the_original_end() {
    let events = extension_plan("deny");
    assert_eq!(
        phases(&events, "ext-1"),
        s(&[
            ("2026-11-01T09:20:00Z", "PendingApproval"),
            ("2026-11-01T09:22:00Z", "Denied"),
        ])
    );
    let alice = format!("user:{ALICE}");
    assert_eq!(
        membership(&events),
        [
            ("2026-11-01T09:05:00Z".to_owned(), "+", alice.clone()),
            ("2026-11-01T09:25:00Z".to_owned(), "-", alice),
        ]
    );
}

#[test]
fn an_extension_beyond_the_cap_is_rejected() {
    let request = request_flag("30m");
    let approve = format!("{BOB}:req-1@+5m");
    let events = scenario(
        "extend-beyond-cap",
        &[
            "examples/",
            "--start",
            START,
            "--until",
            "2h",
            "--request",
            &request,
            "--approve",
            &approve,
            "--extend",
            "req-1:15m@+20m",
        ],
    );
    assert_eq!(
        phases(&events, "ext-1"),
        s(&[("2026-11-01T09:20:00Z", "Rejected")])
    );
    let rejected = events
        .iter()
        .find(|e| e["request"] == "ext-1" && e["to"] == "Rejected")
        .unwrap();
    assert_eq!(rejected["reason"], "ExtensionBeyondMaximum");
    let alice = format!("user:{ALICE}");
    assert_eq!(
        membership(&events),
        [
            ("2026-11-01T09:05:00Z".to_owned(), "+", alice.clone()),
            ("2026-11-01T09:35:00Z".to_owned(), "-", alice),
        ]
    );
}

#[test]
fn extension_plans_that_cannot_run_say_why() {
    for (args, needle) in [
        (
            vec!["--extend", "req-9:1h"],
            "extends \"req-9\", which is neither planned",
        ),
        (
            vec!["--extend", "req-1"],
            "expected REQUEST:DURATION[@TIME]",
        ),
        (vec!["--extend", "req-1:soon"], "--extend DURATION"),
    ] {
        let request = request_flag("20m");
        let mut all = vec!["examples/", "--start", START, "--request", &request];
        all.extend(args);
        let run = simulate(&all);
        assert_eq!(run.code, 2, "{}", run.stdout);
        assert!(run.stderr.contains(needle), "{needle}: {}", run.stderr);
    }
    let request = request_flag("20m");
    let early = format!("{BOB}:ext-1@+5m");
    let run = simulate(&[
        "examples/",
        "--start",
        START,
        "--request",
        &request,
        "--extend",
        "req-1:10m@+20m",
        "--approve",
        &early,
    ]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("before --extend creates it"),
        "{}",
        run.stderr
    );
}

/// Manifests for the equivalence runs: an approval policy that allows renewal, a self-service
/// one, eligibilities that end during the run, an Active assignment and a member no grant
/// explains.
const WAKE_MANIFESTS: &str = r#"
apiVersion: pim.dev/v1alpha1
kind: AccessPolicy
metadata: {name: gated}
spec:
  activation:
    maxDuration: 2h
    maxStartDelay: 1d
    allowRenewal: true
    approval:
      approvers: [{user: bob@contoso.com}]
      minApprovals: 1
      timeout: 90m
  assignment: {maxEligibleDuration: 365d, maxActiveDuration: 30d}
---
apiVersion: pim.dev/v1alpha1
kind: AccessPolicy
metadata: {name: quick}
spec:
  activation: {maxDuration: 1h, maxStartDelay: 1d}
  assignment: {maxEligibleDuration: 365d, maxActiveDuration: 30d}
---
apiVersion: pim.dev/v1alpha1
kind: PimGroup
metadata: {name: payments}
spec:
  directory: entra
  group: {displayName: Payments}
  roles: {member: {policy: gated}}
  standingAccess: Remove
---
apiVersion: pim.dev/v1alpha1
kind: PimGroup
metadata: {name: ops}
spec:
  directory: entra
  group: {displayName: Ops}
  roles: {member: {policy: quick}}
  standingAccess: Remove
---
apiVersion: pim.dev/v1alpha1
kind: EligibleAssignment
metadata: {name: payments-alice}
spec:
  group: payments
  principal: {user: alice@contoso.com}
  schedule: {start: "2026-11-30T08:00:00Z", duration: 30d}
  justification: Payments on call.
---
apiVersion: pim.dev/v1alpha1
kind: EligibleAssignment
metadata: {name: payments-carol}
spec:
  group: payments
  principal: {user: carol@contoso.com}
  schedule: {start: "2026-11-30T08:00:00Z", duration: 29h}
  justification: Payments cover until 13:00.
---
apiVersion: pim.dev/v1alpha1
kind: EligibleAssignment
metadata: {name: ops-alice}
spec:
  group: ops
  principal: {user: alice@contoso.com}
  schedule: {start: "2026-11-30T08:00:00Z", duration: 30d}
  justification: Ops on call.
---
apiVersion: pim.dev/v1alpha1
kind: EligibleAssignment
metadata: {name: ops-dave}
spec:
  group: ops
  principal: {user: dave@contoso.com}
  schedule: {start: "2026-11-30T08:00:00Z", duration: 27h}
  justification: Ops cover until 11:00.
---
apiVersion: pim.dev/v1alpha1
kind: EligibleAssignment
metadata: {name: ops-bob-active}
spec:
  group: ops
  type: Active
  principal: {user: bob@contoso.com}
  schedule: {start: "2026-12-01T10:00:00Z", duration: 4h}
  justification: Migration window.
"#;

/// `simulate` decides a request again only when something it reads changed or its deadline
/// came (issue 21, item 6). Seeded random plans must give the very timeline of a run that
/// decides every request at every instant.
#[test]
fn deciding_only_what_changed_gives_the_timeline_of_deciding_everything() {
    use pim_operator::api::activation_request::Decision as Vote;
    use pim_operator::api::common::Role;
    use pim_operator::checks::schema::SchemaChecker;
    use pim_operator::core::membership::Member;
    use pim_operator::manifests::Manifests;
    use pim_operator::simulate::{
        PlannedDecision, PlannedExtension, PlannedRequest, Scenario, What, run,
        run_deciding_everything,
    };

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("manifests.yaml"), WAKE_MANIFESTS).unwrap();
    let checker = SchemaChecker::new().unwrap();
    let manifests = Manifests::load(&[dir.path().to_path_buf()], &checker).unwrap();
    assert!(manifests.findings.is_empty(), "{:?}", manifests.findings);
    let start: jiff::Timestamp = "2026-12-01T08:00:00Z".parse().unwrap();
    let minutes = |m: u64| start + jiff::SignedDuration::from_mins(m as i64);

    // xorshift64*: seeded, and the same on every machine.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
        }
        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[self.below(items.len() as u64) as usize]
        }
    }
    let users = ["alice", "carol", "dave", "erin"];
    let mut activated = 0;
    let mut extended = 0;
    for seed in 1..=60u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let requests: Vec<PlannedRequest> = (0..8)
            .map(|_| PlannedRequest {
                user: format!("{}@contoso.com", rng.pick(&users)),
                group: rng.pick(&["payments", "ops"]).to_owned(),
                role: Role::Member,
                duration: match rng.pick(&["15m", "30m", "1h", "2h", "3h", "max"]) {
                    "max" => None,
                    d => Some(d.to_owned()),
                },
                start_time: (rng.below(3) == 0).then(|| minutes(15 * rng.below(24))),
            })
            .collect();
        let decisions: Vec<PlannedDecision> = (0..6)
            .map(|_| PlannedDecision {
                approver: format!("{}@contoso.com", rng.pick(&["bob", "bob", "alice", "erin"])),
                request: format!("req-{}", 1 + rng.below(8)),
                decision: if rng.below(4) == 0 {
                    Vote::Deny
                } else {
                    Vote::Approve
                },
                at: minutes(10 * rng.below(30)),
            })
            .collect();
        let mut extensions: Vec<PlannedExtension> = (0..3)
            .map(|_| PlannedExtension {
                of: format!("req-{}", 1 + rng.below(8)),
                duration: Some(rng.pick(&["30m", "1h", "2h"]).to_owned()),
                at: minutes(10 * rng.below(30)),
            })
            .collect();
        extensions.sort_by_key(|e| e.at);
        // Extensions of extensions, and their approvals.
        let mut decisions = decisions;
        for (i, extension) in extensions.iter().enumerate() {
            if rng.below(2) == 0 {
                decisions.push(PlannedDecision {
                    approver: "bob@contoso.com".to_owned(),
                    request: format!("ext-{}", i + 1),
                    decision: Vote::Approve,
                    at: extension.at + jiff::SignedDuration::from_mins(5),
                });
            }
        }
        let existing = [(
            "payments".to_owned(),
            [(
                Role::Member,
                [Member::User("mallory@contoso.com".to_owned())].into(),
            )]
            .into(),
        )]
        .into();
        let scenario = Scenario {
            catalog: manifests.catalog(),
            requests,
            decisions,
            extensions,
            start,
            until: minutes(12 * 60),
            existing,
        };
        let fast = run(scenario.clone()).unwrap();
        let reference = run_deciding_everything(scenario).unwrap();
        assert_eq!(fast, reference, "seed {seed}");
        for event in &reference.events {
            match &event.what {
                What::Transition { to, .. }
                    if *to == pim_operator::api::activation_request::Phase::Active =>
                {
                    activated += 1
                }
                What::Window {
                    previous_end: Some(_),
                    ..
                } => extended += 1,
                _ => {}
            }
        }
    }
    // The plans reach the paths the wake rules are about.
    assert!(activated > 60, "only {activated} activations in 60 plans");
    assert!(extended > 0, "no window moved in 60 plans");
}

/// Issue 19: the policy's alerts show in the timeline when the request controller would raise
/// them: each unapproved activation of a critical role, and the second within four hours.
#[test]
fn alerts_show_when_raised() {
    let events = scenario(
        "alerts",
        &[
            "tests/fixtures/simulate/alerts",
            "--start",
            START,
            "--until",
            "6h",
            "--request",
            "alice@contoso.com:break-glass:member:1h",
            "--request",
            "alice@contoso.com:break-glass:member:1h@+2h",
            "--request",
            "alice@contoso.com:break-glass:member:1h@+5h30m",
        ],
    );
    let alerts: Vec<(String, String, String)> = events
        .iter()
        .filter(|e| e["event"] == "alert")
        .map(|e| {
            (
                e["time"].as_str().unwrap().to_owned(),
                e["request"].as_str().unwrap().to_owned(),
                e["alert"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let at = |t: &str, r: &str, a: &str| (format!("2026-11-01T{t}Z"), r.to_owned(), a.to_owned());
    assert_eq!(
        alerts,
        [
            at("09:00:00", "req-1", "ActivatedWithoutApproval"),
            at("11:00:00", "req-2", "ActivatedTooOften"),
            at("11:00:00", "req-2", "ActivatedWithoutApproval"),
            // 14:30: req-2 was 3h30m ago, req-1 5h30m ago: one within 4h, so too often again.
            at("14:30:00", "req-3", "ActivatedTooOften"),
            at("14:30:00", "req-3", "ActivatedWithoutApproval"),
        ]
    );
}

/// Issue 19: an access review's timeline. The first monthly instance opens on its day; the lead
/// denies Dave and keeps Alice; at the end Dave's active access goes, and Alice's activation
/// running across the end is unaffected. The December instance covers Alice only.
#[test]
fn a_review_denies_at_the_end_of_its_instance() {
    let events = scenario(
        "reviews",
        &[
            "tests/fixtures/simulate/reviews",
            "--start",
            START,
            "--until",
            "32d",
            "--request",
            "alice@contoso.com:ops:member:8h@2026-11-07T05:00:00Z",
            "--deny",
            "lead@contoso.com:ops-monthly/ops-dave@+2d",
            "--approve",
            "lead@contoso.com:ops-monthly/ops-alice@+2d1h",
        ],
    );
    let reviews: Vec<(String, String)> = events
        .iter()
        .filter(|e| e["event"].as_str().is_some_and(|k| k.starts_with("review")))
        .map(|e| {
            (
                e["time"].as_str().unwrap().to_owned(),
                e["event"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let at = |t: &str, k: &str| (t.to_owned(), k.to_owned());
    assert_eq!(
        reviews,
        [
            at("2026-11-02T09:00:00Z", "reviewOpened"),
            at("2026-11-03T09:00:00Z", "reviewDecided"),
            at("2026-11-03T10:00:00Z", "reviewDecided"),
            at("2026-11-07T09:00:00Z", "reviewCompleted"),
            at("2026-12-02T09:00:00Z", "reviewOpened"),
        ]
    );
    let completed = events
        .iter()
        .find(|e| e["event"] == "reviewCompleted")
        .unwrap();
    assert_eq!(
        completed["denied"],
        serde_json::json!(["ops-dave (lead@contoso.com)"])
    );
    assert_eq!(completed["kept"], serde_json::json!(["ops-alice"]));
    let december = events
        .iter()
        .rfind(|e| e["event"] == "reviewOpened")
        .unwrap();
    assert_eq!(december["assignments"], serde_json::json!(["ops-alice"]));
    let changes = membership(&events);
    assert!(
        changes.contains(&(
            "2026-11-07T09:00:00Z".to_owned(),
            "-",
            "user:dave@contoso.com".to_owned()
        )),
        "{changes:?}"
    );
    // Alice's activation from 05:00 runs its eight hours.
    assert_eq!(
        phases(&events, "req-1").last().unwrap(),
        &("2026-11-07T13:00:00Z".to_owned(), "Expired".to_owned())
    );
}
