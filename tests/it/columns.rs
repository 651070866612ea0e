//! What `kubectl get` shows for each PIM resource: the real kubectl against the fake API
//! server, which answers Table requests from the CRDs' printer columns as the real API server
//! does, with the real operator writing the status on a manual clock.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::local;
use crate::support::operator;

use std::collections::BTreeMap;

use kube::api::{Patch, PatchParams};
use pim_operator::api::ActivationRequest;
use pim_operator::api::activation_request::{Decision as Vote, Phase};

use local::kubectl;
use operator::{Harness, T0, eventually};

const ALICE: &str = "alice@contoso.com";
const BOB: &str = "bob@contoso.com";

/// `kubectl ARGS` against the server, with a kubeconfig of its own; the output on success.
async fn kubectl_get(h: &Harness, args: &[&str]) -> String {
    let url = h.server.url().to_string();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let home = tempfile::tempdir().unwrap();
        let kubeconfig = home.path().join("config");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster: {{server: \"{url}\"}}\n\
                 users:\n- name: admin\n  user: {{}}\ncontexts:\n- name: fake\n  context: {{cluster: fake, user: admin}}\n\
                 current-context: fake\n"
            ),
        )
        .unwrap();
        let out = std::process::Command::new(kubectl())
            .env("HOME", home.path())
            .env("KUBECONFIG", &kubeconfig)
            .args(&args)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    })
    .await
    .unwrap()
}

/// kubectl's tables (one per kind, blank lines between) as rows of header → cell, each cut at
/// its header's column offsets (kubectl aligns every column under its header).
fn rows(output: &str) -> Vec<BTreeMap<String, String>> {
    output
        .split("\n\n")
        .flat_map(|table| {
            let mut lines = table.lines().filter(|l| !l.trim().is_empty());
            let header: Vec<char> = lines.next().unwrap_or_default().chars().collect();
            // A column starts after two or more spaces (PRINCIPAL GROUP holds one).
            let starts: Vec<usize> = (0..header.len())
                .filter(|&i| {
                    header[i] != ' '
                        && (i == 0 || (i >= 2 && header[i - 1] == ' ' && header[i - 2] == ' '))
                })
                .collect();
            let cut = |line: &[char], k: usize| -> String {
                let from = starts[k].min(line.len());
                let to = starts
                    .get(k + 1)
                    .copied()
                    .unwrap_or(line.len())
                    .min(line.len());
                line[from..to].iter().collect::<String>().trim().to_string()
            };
            let names: Vec<String> = (0..starts.len()).map(|k| cut(&header, k)).collect();
            lines
                .map(|line| {
                    let line: Vec<char> = line.chars().collect();
                    names
                        .iter()
                        .enumerate()
                        .map(|(k, name)| (name.clone(), cut(&line, k)))
                        .collect()
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The row of `name` in `kubectl get ARGS`.
async fn row(h: &Harness, args: &[&str], name: &str) -> BTreeMap<String, String> {
    let output = kubectl_get(h, args).await;
    rows(&output)
        .into_iter()
        .find(|r| {
            r.get("NAME")
                .is_some_and(|n| n == name || n.ends_with(&format!("/{name}")))
        })
        .unwrap_or_else(|| panic!("no row {name} in:\n{output}"))
}

fn cell<'a>(row: &'a BTreeMap<String, String>, column: &str) -> &'a str {
    row.get(column)
        .unwrap_or_else(|| panic!("no column {column} in {row:?}"))
}

/// A policy needing bob's approval, a group, alice eligible for 90 days, and a request for two
/// hours that names no role, all created at T0; the operator running.
async fn seed() -> Harness {
    let mut h = Harness::new("").await;
    h.policy("ops-policy", "4h", &[BOB], |_| {}).await;
    h.group("ops", "ops-policy").await;
    h.assignment("alice-ops", "ops", ALICE).await;
    h.request("alice-now", "ops", ALICE, "2h", |_| {}).await;
    h.start();
    h.wait_phase("alice-now", Phase::PendingApproval).await;
    h
}

#[tokio::test]
async fn kubectl_get_ar_shows_role_reason_and_a_readable_end() {
    let h = seed().await;
    h.advance(5);

    // Waiting for bob: the reason says so, and the omitted role reads as the role it means.
    let waiting = row(&h, &["get", "ar"], "alice-now").await;
    assert_eq!(cell(&waiting, "PHASE"), "PendingApproval", "{waiting:?}");
    assert_eq!(cell(&waiting, "ROLE"), "member", "{waiting:?}");
    assert_eq!(
        cell(&waiting, "REASON"),
        "WaitingForApproval",
        "{waiting:?}"
    );
    // kubectl leaves a cell blank where the column's path finds nothing.
    assert_eq!(cell(&waiting, "EXPIRES"), "", "{waiting:?}");
    assert_eq!(cell(&waiting, "AGE"), "5m", "{waiting:?}");

    // Approved at T0+5m for two hours: the end is in the future and reads as a time.
    h.vote("alice-now", "ops", BOB, Vote::Approve, "ok").await;
    h.wait_phase("alice-now", Phase::Active).await;
    let active = row(&h, &["get", "ar"], "alice-now").await;
    assert_eq!(cell(&active, "REASON"), "Active", "{active:?}");
    assert_eq!(
        cell(&active, "EXPIRES"),
        "2026-03-02T11:05:00Z",
        "{active:?}"
    );

    // Ended early at T0+30m: the end shown is when access ended, not the planned one.
    h.advance(25);
    h.api::<ActivationRequest>()
        .patch(
            "alice-now",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"deactivate": true}})),
        )
        .await
        .unwrap();
    h.wait_phase("alice-now", Phase::Deactivated).await;
    let ended = row(&h, &["get", "ar"], "alice-now").await;
    assert_eq!(cell(&ended, "PHASE"), "Deactivated", "{ended:?}");
    assert_eq!(cell(&ended, "REASON"), "Deactivated", "{ended:?}");
    assert_eq!(cell(&ended, "EXPIRES"), "2026-03-02T09:30:00Z", "{ended:?}");
    assert_eq!(cell(&ended, "AGE"), "30m", "{ended:?}");
}

#[tokio::test]
async fn kubectl_get_shows_every_kind_with_future_ends_as_times() {
    let h = seed().await;
    assert_eq!(h.now().to_string(), T0);
    eventually("the group is ready", || async {
        let out = kubectl_get(&h, &["get", "pg"]).await;
        rows(&out)
            .first()
            .is_some_and(|r| r.get("READY").is_some_and(|v| v == "True"))
    })
    .await;

    let ea = row(&h, &["get", "ea"], "alice-ops").await;
    assert_eq!(cell(&ea, "GROUP"), "ops", "{ea:?}");
    assert_eq!(cell(&ea, "ROLE"), "member", "{ea:?}");
    assert_eq!(cell(&ea, "USER"), ALICE, "{ea:?}");
    assert_eq!(cell(&ea, "PRINCIPAL GROUP"), "", "{ea:?}");
    assert_eq!(cell(&ea, "TYPE"), "Eligible", "{ea:?}");
    assert_eq!(cell(&ea, "PHASE"), "Effective", "{ea:?}");
    // 90 days from T0, in the future: a time, not the `<invalid>` a date column gives.
    assert_eq!(cell(&ea, "ENDS"), "2026-05-31T09:00:00Z", "{ea:?}");
    assert!(
        !ea.contains_key("REASON"),
        "priority 1 only with -o wide: {ea:?}"
    );
    let wide = row(&h, &["get", "ea", "-o", "wide"], "alice-ops").await;
    assert_eq!(cell(&wide, "REASON"), "WithinSchedule", "{wide:?}");

    let pg = row(&h, &["get", "pg"], "ops").await;
    assert_eq!(cell(&pg, "DIRECTORY"), "memory", "{pg:?}");
    assert_eq!(cell(&pg, "GROUP ID"), "ops-id", "{pg:?}");
    assert_eq!(cell(&pg, "IN SYNC"), "True", "{pg:?}");
    assert_eq!(cell(&pg, "ELIGIBLE"), "1", "{pg:?}");
    assert_eq!(cell(&pg, "ACTIVE"), "0", "{pg:?}");

    let ap = row(&h, &["get", "ap"], "ops-policy").await;
    assert_eq!(cell(&ap, "MAX"), "4h", "{ap:?}");
    assert_eq!(cell(&ap, "APPROVALS"), "1", "{ap:?}");
    assert_eq!(cell(&ap, "READY"), "True", "{ap:?}");

    // The `pim` category: one table per kind, names qualified by kind.
    let all = kubectl_get(&h, &["get", "pim"]).await;
    for name in [
        "activationrequest.pim.dev/alice-now",
        "eligibleassignment.pim.dev/alice-ops",
        "pimgroup.pim.dev/ops",
        "accesspolicy.pim.dev/ops-policy",
    ] {
        assert!(all.contains(name), "{name} missing from:\n{all}");
    }
    assert!(!all.contains("<invalid>"), "{all}");
    let request = row(&h, &["get", "pim"], "alice-now").await;
    assert_eq!(
        cell(&request, "REASON"),
        "WaitingForApproval",
        "{request:?}"
    );
}

// Issue 20: an extension shows what it extends with `-o wide`; the original ends as Extended.
#[tokio::test]
async fn kubectl_get_ar_wide_shows_what_an_extension_extends() {
    let h = seed().await;
    h.vote("alice-now", "ops", BOB, Vote::Approve, "ok").await;
    h.wait_phase("alice-now", Phase::Active).await;
    h.advance(60);
    h.request("alice-more", "ops", ALICE, "1h", |spec| {
        spec.extends = Some("alice-now".into());
    })
    .await;
    h.wait_phase("alice-more", Phase::PendingApproval).await;
    h.vote("alice-more", "ops", BOB, Vote::Approve, "ok").await;
    h.wait_phase("alice-more", Phase::Active).await;
    let plain = row(&h, &["get", "ar"], "alice-more").await;
    assert!(!plain.contains_key("EXTENDS"), "priority 1: {plain:?}");
    let wide = row(&h, &["get", "ar", "-o", "wide"], "alice-more").await;
    assert_eq!(cell(&wide, "EXTENDS"), "alice-now", "{wide:?}");
    // Two hours from T0, one more past that.
    assert_eq!(cell(&wide, "EXPIRES"), "2026-03-02T12:00:00Z", "{wide:?}");
    h.advance(61);
    h.wait_phase("alice-now", Phase::Expired).await;
    let original = row(&h, &["get", "ar", "-o", "wide"], "alice-now").await;
    assert_eq!(cell(&original, "REASON"), "Extended", "{original:?}");
    assert_eq!(cell(&original, "EXTENDS"), "", "{original:?}");
}

// Issue 19: `kubectl get arv` shows the recurrence, the latest instance's phase and progress,
// its end as a time, and how many manifests a review asks to remove; `-o wide` the next start.
#[tokio::test]
async fn kubectl_get_arv_shows_progress_end_and_removals() {
    use kube::api::PostParams;
    use pim_operator::api::AccessReview;
    use pim_operator::api::access_review::{
        AccessReviewSpec, Recurrence, ReviewSchedule, ReviewScope, Reviewers,
    };
    use pim_operator::api::common::PrincipalRef;
    let h = seed().await;
    let spec = AccessReviewSpec {
        scope: ReviewScope {
            groups: vec!["ops".into()],
            ..Default::default()
        },
        reviewers: Reviewers {
            principals: vec![PrincipalRef::user(BOB)],
            ..Default::default()
        },
        schedule: ReviewSchedule {
            start: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(h.now()),
            recurrence: Recurrence::Monthly,
            duration: "7d".into(),
        },
        ..Default::default()
    };
    h.api::<AccessReview>()
        .create(
            &PostParams::default(),
            &AccessReview::new("ops-monthly", spec),
        )
        .await
        .unwrap();
    eventually("the instance opens", || async {
        let out = kubectl_get(&h, &["get", "arv"]).await;
        rows(&out)
            .first()
            .is_some_and(|r| r.get("PHASE").is_some_and(|v| v == "InProgress"))
    })
    .await;
    let arv = row(&h, &["get", "arv"], "ops-monthly").await;
    assert_eq!(cell(&arv, "RECURRENCE"), "Monthly", "{arv:?}");
    assert_eq!(cell(&arv, "REVIEWED"), "0/1", "{arv:?}");
    assert_eq!(cell(&arv, "ENDS"), "2026-03-09T09:00:00Z", "{arv:?}");
    assert_eq!(cell(&arv, "TO REMOVE"), "0", "{arv:?}");
    assert!(
        !arv.contains_key("NEXT"),
        "priority 1 only with -o wide: {arv:?}"
    );
    let wide = row(&h, &["get", "arv", "-o", "wide"], "ops-monthly").await;
    assert_eq!(cell(&wide, "NEXT"), "2026-04-02T09:00:00Z", "{wide:?}");
    // In the `pim` category with the other kinds.
    let all = kubectl_get(&h, &["get", "pim"]).await;
    assert!(all.contains("accessreview.pim.dev/ops-monthly"), "{all}");
}
