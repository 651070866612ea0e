//! Issue 17 findings 1 and 8: a cluster whose users authenticate through OIDC with the prefix
//! `oidc:`, worked as its users work it. The real `pim-operator run` (controllers and admission
//! webhook, one process) behind the fake API server, which calls the webhook over HTTPS as the
//! shipped `deploy/base/webhook.yaml` configures it; the real `kubectl` (1.35, from
//! `.ci/install-deploy-tools`) running the real `kubectl-pim` plugin, with `--as` impersonation.
//!
//! One operator serves two directories: `kubernetes` (RBAC, which binds the username the API
//! server authenticated) and `corp` (memory), which takes the top-level `usernameMapping`,
//! `stripPrefix: "oidc:"` (the default of directories without their own, as configs written
//! before the mapping was per directory set it). Another authenticator's `alice@example.org`
//! must never be taken for `oidc:alice@example.org`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::local;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::api::{Api, ListParams};
use local::{free_port, http_status, kubectl};
use pim_operator::api::activation_request::Phase;
use pim_operator::api::{ActivationRequest, PimGroup};
use pim_operator::directory::kubernetes::GROUP_LABEL;
use pim_testkit::fake_apiserver::{FakeApiServer, Options};

const ALICE: &str = "oidc:alice@example.org";
const BOB: &str = "oidc:bob@example.org";
/// What another authenticator (a client certificate, a second issuer) may call someone.
const UNPREFIXED_ALICE: &str = "alice@example.org";
const UNPREFIXED_BOB: &str = "bob@example.org";

const SEED: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: pim-system}
---
apiVersion: pim.dev/v1alpha1
kind: AccessPolicy
metadata: {name: open}
spec:
  activation: {maxDuration: 1h}
---
apiVersion: pim.dev/v1alpha1
kind: AccessPolicy
metadata: {name: approved}
spec:
  activation:
    maxDuration: 1h
    approval:
      approvers: [{user: bob@example.org}]
---
apiVersion: pim.dev/v1alpha1
kind: PimGroup
metadata: {name: ops}
spec:
  directory: kubernetes
  group: {displayName: Ops}
  roles: {member: {policy: open}}
  rbac: {clusterRoles: [view]}
---
apiVersion: pim.dev/v1alpha1
kind: PimGroup
metadata: {name: team}
spec:
  directory: corp
  group: {id: team-id}
  roles: {member: {policy: approved}}
---
apiVersion: pim.dev/v1alpha1
kind: EligibleAssignment
metadata: {name: ops-alice}
spec:
  group: ops
  principal: {user: "oidc:alice@example.org"}
  type: Eligible
  schedule: {duration: 30d}
  justification: on call for the platform (OPS-1)
---
apiVersion: pim.dev/v1alpha1
kind: EligibleAssignment
metadata: {name: team-alice}
spec:
  group: team
  principal: {user: alice@example.org}
  type: Eligible
  schedule: {duration: 30d}
  justification: team lead (HR-7)
"#;

struct Cluster {
    server: FakeApiServer,
    dir: tempfile::TempDir,
    operator: Option<Child>,
    metrics_port: u16,
}

impl Cluster {
    fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// `kubectl ARGS` as the user works: the real kubectl, this cluster's kubeconfig, and
    /// `kubectl-pim` on PATH for `kubectl pim`.
    async fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let plugin_dir = Path::new(env!("CARGO_BIN_EXE_kubectl-pim"))
            .parent()
            .unwrap()
            .to_owned();
        let path = std::env::join_paths(
            std::iter::once(plugin_dir).chain(
                std::env::var_os("PATH")
                    .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
                    .unwrap_or_default(),
            ),
        )
        .unwrap();
        let home = self.dir.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        let mut command = Command::new(kubectl());
        command
            .env("HOME", &home)
            .env("KUBECONFIG", self.kubeconfig())
            .env("PATH", path)
            .env_remove("PIM_PRINCIPAL")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let input = stdin.map(str::to_owned);
        tokio::task::spawn_blocking(move || {
            let mut child = command.spawn().unwrap();
            if let Some(input) = input {
                child
                    .stdin
                    .take()
                    .unwrap()
                    .write_all(input.as_bytes())
                    .unwrap();
            }
            drop(child.stdin.take());
            child.wait_with_output().unwrap()
        })
        .await
        .unwrap()
    }

    async fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl(args, stdin).await;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "kubectl {args:?} failed:\n{text}");
        text
    }

    async fn refused(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl(args, stdin).await;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "kubectl {args:?} succeeded:\n{text}");
        text
    }

    /// `kubectl pim activate GROUP` for 30 minutes as `user`; the new request's name.
    async fn activate(&self, group: &str, why: &str, user: &str) -> String {
        let args = [
            "pim",
            "activate",
            group,
            "--for",
            "30m",
            "--justification",
            why,
            "--as",
            user,
        ];
        created_name(&self.ok(&args, None).await)
    }

    /// `kubectl create -f -` of `yaml` as `user`, refused: the refusal.
    async fn create_refused(&self, yaml: &str, user: &str) -> String {
        let args = ["create", "--validate=false", "-f", "-", "--as", user];
        self.refused(&args, Some(yaml)).await
    }

    /// `spec.deactivate: true` written with kubectl as `user`, past the plugin's own check:
    /// the webhook's refusal.
    async fn deactivate_refused(&self, name: &str, user: &str) -> String {
        let end = r#"{"spec":{"deactivate":true}}"#;
        let args = [
            "patch",
            "activationrequest",
            name,
            "--type",
            "merge",
            "-p",
            end,
            "--as",
            user,
        ];
        self.refused(&args, None).await
    }

    async fn phase(&self, name: &str) -> Option<Phase> {
        let api: Api<ActivationRequest> = Api::all(self.server.client());
        api.get(name).await.ok()?.status?.phase
    }

    async fn wait_phase(&mut self, name: &str, phase: Phase) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.phase(name).await != Some(phase) {
            if Instant::now() > deadline {
                let api: Api<ActivationRequest> = Api::all(self.server.client());
                let request = api.get(name).await.ok();
                panic!(
                    "timed out waiting until {name} is {phase:?}: {request:#?}\n{}",
                    self.stop_operator()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the operator; returns what it logged.
    fn stop_operator(&mut self) -> String {
        let Some(mut child) = self.operator.take() else {
            return String::new();
        };
        let _ = child.kill();
        let output = child.wait_with_output().unwrap();
        format!(
            "operator stderr:\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(mut child) = self.operator.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The seeded cluster with the webhook configured as shipped and the operator running.
async fn cluster() -> Cluster {
    let webhook_port = free_port();
    let server = FakeApiServer::start_with(Options {
        services: [(
            "pim-system/pim-operator-webhook".to_owned(),
            std::net::SocketAddr::from(([127, 0, 0, 1], webhook_port)),
        )]
        .into(),
        ..Options::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("kubeconfig"),
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: fake, cluster: {{server: \"{}\"}}}}]\nusers: [{{name: admin, user: {{}}}}]\ncontexts: [{{name: fake, context: {{cluster: fake, user: admin}}}}]\ncurrent-context: fake\n",
            server.url()
        ),
    )
    .unwrap();
    let metrics_port = free_port();
    let mut cluster = Cluster {
        server,
        dir,
        operator: None,
        metrics_port,
    };
    // The fake server serves no /openapi, hence --validate=false (docs/kind.md says so too).
    cluster
        .ok(&["apply", "--validate=false", "-f", "-"], Some(SEED))
        .await;
    let webhook = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/base/webhook.yaml");
    cluster
        .ok(
            &[
                "apply",
                "--validate=false",
                "-n",
                "pim-system",
                "-f",
                webhook,
            ],
            None,
        )
        .await;

    let dir = cluster.dir.path();
    std::fs::write(
        dir.join("attestation-key"),
        "the oidc test's attestation key, 32 bytes or more\n",
    )
    .unwrap();
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "namespace: pim-system\ndirectories:\n  corp: {{type: memory}}\nusernameMapping: {{stripPrefix: \"oidc:\"}}\nleaderElection: {{enabled: false}}\nmetricsAddress: 127.0.0.1:{metrics_port}\nwebhook: {{enabled: true, address: \"127.0.0.1:{webhook_port}\"}}\nattestation: {{keyFile: {key}}}\naudit: {{file: {audit}}}\n",
            key = dir.join("attestation-key").display(),
            audit = dir.join("audit.jsonl").display(),
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_pim-operator"))
        .args(["run", "--config"])
        .arg(&config)
        .env("KUBECONFIG", cluster.kubeconfig())
        .env(
            "RUST_LOG",
            std::env::var("PIM_TEST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    cluster.operator = Some(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !http_status(metrics_port, "/readyz").is_some_and(|s| s.contains("200")) {
        if Instant::now() > deadline {
            panic!(
                "the operator never became ready\n{}",
                cluster.stop_operator()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every PimGroup has published its directory's mapping, which kubectl pim reads.
    let groups: Api<PimGroup> = Api::all(cluster.server.client());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let published = groups.list(&ListParams::default()).await.unwrap().items;
        if published.iter().all(|g| {
            g.status
                .as_ref()
                .is_some_and(|s| s.username_mapping.is_some())
        }) {
            break;
        }
        if Instant::now() > deadline {
            panic!(
                "the PimGroups never published their mapping: {published:#?}\n{}",
                cluster.stop_operator()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster
}

/// The request name `kubectl pim activate` printed ("created NAME" or the like).
fn created_name(output: &str) -> String {
    output
        .split_whitespace()
        .find(|w| w.starts_with("ops-") || w.starts_with("team-"))
        .map(|w| w.trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '-'))
        .unwrap_or_else(|| panic!("no request name in: {output}"))
        .to_owned()
}

fn request_yaml(group: &str, principal: &str) -> String {
    format!(
        "apiVersion: pim.dev/v1alpha1\nkind: ActivationRequest\nmetadata: {{generateName: {group}-}}\nspec:\n  group: {group}\n  principal: {principal:?}\n  duration: 30m\n  justification: checking a report (INC-9)\n"
    )
}

#[tokio::test]
async fn issue_17_oidc_users_get_their_own_access_and_nobody_elses() {
    let mut c = cluster().await;

    // What each one holds, as kubectl pim reads it from the PimGroups' published mapping.
    let mine = c.ok(&["pim", "eligible", "--as", ALICE], None).await;
    assert!(
        mine.contains("ops-alice") && mine.contains("team-alice"),
        "{mine}"
    );
    let theirs = c
        .ok(&["pim", "eligible", "--as", UNPREFIXED_ALICE], None)
        .await;
    assert!(
        !theirs.contains("ops-alice") && !theirs.contains("team-alice"),
        "another authenticator's alice@example.org holds none of oidc:alice's assignments:\n{theirs}"
    );

    // Finding 1: the RBAC subject is the username the API server authenticated.
    let ops_request = c
        .activate("ops", "rotating the ingress certificate (OPS-2)", ALICE)
        .await;
    c.wait_phase(&ops_request, Phase::Active).await;
    let bindings: Api<ClusterRoleBinding> = Api::all(c.server.client());
    let bound = bindings
        .list(&ListParams::default().labels(&format!("{GROUP_LABEL}=ops")))
        .await
        .unwrap()
        .items;
    let subjects: Vec<(String, String)> = bound
        .iter()
        .flat_map(|b| b.subjects.clone().unwrap_or_default())
        .map(|s| (s.kind, s.name))
        .collect();
    assert_eq!(
        subjects,
        [("User".to_owned(), ALICE.to_owned())],
        "bindings: {bound:#?}"
    );

    // The unprefixed alice can neither end oidc:alice's request nor ask in her name. The
    // plugin would stop her itself, so she writes the field with kubectl, and the webhook
    // answers.
    let refusal = c.deactivate_refused(&ops_request, UNPREFIXED_ALICE).await;
    assert!(
        refusal.contains("denied the request") && refusal.contains("only the requester ("),
        "{refusal}"
    );
    assert_eq!(c.phase(&ops_request).await, Some(Phase::Active));
    let refusal = c
        .create_refused(&request_yaml("team", UNPREFIXED_ALICE), UNPREFIXED_ALICE)
        .await;
    assert!(
        refusal.contains("no principal in directory \"corp\"") && refusal.contains("\"oidc:\""),
        "{refusal}"
    );
    let refusal = c
        .create_refused(&request_yaml("ops", ALICE), UNPREFIXED_ALICE)
        .await;
    assert!(refusal.contains("only activate for yourself"), "{refusal}");

    // In `corp`, oidc:alice is alice@example.org, and the approver the policy names is
    // oidc:bob; the unprefixed bob@example.org is not him.
    let team_request = c
        .activate("team", "closing the quarter (FIN-3)", ALICE)
        .await;
    c.wait_phase(&team_request, Phase::PendingApproval).await;
    let api: Api<ActivationRequest> = Api::all(c.server.client());
    let stamped = api.get(&team_request).await.unwrap();
    assert_eq!(stamped.spec.principal.as_deref(), Some(UNPREFIXED_ALICE));
    let pending = c.ok(&["pim", "pending", "--as", BOB], None).await;
    assert!(pending.contains(&team_request), "{pending}");
    let not_pending = c
        .ok(&["pim", "pending", "--as", UNPREFIXED_BOB], None)
        .await;
    assert!(!not_pending.contains(&team_request), "{not_pending}");
    let refusal = c
        .refused(
            &["pim", "approve", &team_request, "--as", UNPREFIXED_BOB],
            None,
        )
        .await;
    assert!(
        refusal.contains("no principal in directory \"corp\""),
        "{refusal}"
    );
    c.ok(
        &[
            "pim",
            "approve",
            &team_request,
            "--reason",
            "quarter close",
            "--as",
            BOB,
        ],
        None,
    )
    .await;
    c.wait_phase(&team_request, Phase::Active).await;
    // In corp, where she would have been alice@example.org, she is nobody either.
    let refusal = c.deactivate_refused(&team_request, UNPREFIXED_ALICE).await;
    assert!(refusal.contains("only the requester ("), "{refusal}");
    assert_eq!(c.phase(&team_request).await, Some(Phase::Active));

    // oidc:alice ends her own.
    c.ok(&["pim", "deactivate", &ops_request, "--as", ALICE], None)
        .await;
    c.wait_phase(&ops_request, Phase::Deactivated).await;
    c.stop_operator();
}

/// The audit file's records of changes to the declarative kinds.
fn change_records(c: &Cluster) -> Vec<serde_json::Value> {
    std::fs::read_to_string(c.dir.path().join("audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["action"].is_string() && l["user"].is_object())
        .collect()
}

fn policy_yaml(max: &str) -> String {
    format!(
        "apiVersion: pim.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {{name: audited}}\nspec:\n  activation: {{maxDuration: {max}}}\n"
    )
}

/// Issue 19: each change to a declarative kind is in the audit trail with who made it and
/// what changed, as the validating webhook saw it; a server-side dry run is not.
#[tokio::test]
async fn issue_19_changes_to_policies_are_audited_with_who_and_the_diff() {
    let mut c = cluster().await;
    const CAROL: &str = "oidc:carol@example.org";
    const DAVE: &str = "oidc:dave@example.org";
    let apply = ["apply", "--validate=false", "-f", "-", "--as", CAROL];
    c.ok(&apply, Some(&policy_yaml("2h"))).await;
    c.ok(&apply, Some(&policy_yaml("4h"))).await;
    let dry_run = [
        "apply",
        "--validate=false",
        "--dry-run=server",
        "-f",
        "-",
        "--as",
        CAROL,
    ];
    c.ok(&dry_run, Some(&policy_yaml("6h"))).await;
    c.ok(&["delete", "accesspolicy", "audited", "--as", DAVE], None)
        .await;

    let deadline = Instant::now() + Duration::from_secs(30);
    while change_records(&c).len() < 3 {
        if Instant::now() > deadline {
            panic!(
                "three change records never came: {:#?}\n{}",
                change_records(&c),
                c.stop_operator()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A moment for a record that should not be there (the dry run's) to show up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let records = change_records(&c);
    let summary: Vec<(&str, &str, &str)> = records
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap(),
                r["name"].as_str().unwrap(),
                r["user"]["username"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("Created", "audited", CAROL),
            ("Updated", "audited", CAROL),
            ("Deleted", "audited", DAVE),
        ],
        "{records:#?}"
    );
    assert!(
        records
            .iter()
            .all(|r| r["kind"] == "AccessPolicy" && r["allowed"] == true)
    );
    let changes = &records[1]["changes"];
    assert_eq!(
        changes,
        &serde_json::json!([{"path": "/spec/activation/maxDuration", "before": "2h", "after": "4h"}]),
        "{records:#?}"
    );
    // The creation has the whole spec as written, the deletion the whole spec as it was.
    assert_eq!(records[0]["changes"][0]["path"], "/spec");
    assert_eq!(
        records[0]["changes"][0]["after"]["activation"]["maxDuration"],
        "2h"
    );
    assert_eq!(records[2]["changes"][0]["path"], "/spec");
    assert_eq!(
        records[2]["changes"][0]["before"]["activation"]["maxDuration"],
        "4h"
    );
    assert!(
        records[2]["changes"][0].get("after").is_none(),
        "{records:#?}"
    );
    assert!(records[2]["objectUid"].is_string(), "{records:#?}");

    // kubectl pim audit reads the trail the operator wrote, filtered by kind and principal.
    let trail = c.dir.path().join("audit.jsonl");
    let trail = trail.to_str().unwrap();
    let exported = c
        .ok(
            &[
                "pim",
                "audit",
                "--file",
                trail,
                "--kind",
                "accesspolicy",
                "-o",
                "json",
            ],
            None,
        )
        .await;
    let exported: Vec<serde_json::Value> = serde_json::from_str(&exported).unwrap();
    assert_eq!(exported, records);
    let csv = c
        .ok(
            &["pim", "audit", "--file", trail, "--kind", "AccessPolicy"],
            None,
        )
        .await;
    assert_eq!(csv.lines().count(), 4, "{csv}");
    assert!(
        csv.lines()
            .nth(3)
            .unwrap()
            .contains(",Deleted,audited,,,,oidc:dave@example.org,true,"),
        "{csv}"
    );
    // The operator's health metrics: it leads, and the webhook answered every review.
    let metrics = local::http_get(c.metrics_port, "/metrics").unwrap_or_default();
    assert!(metrics.contains("\npim_leader 1\n"), "{metrics}");
    let allowed = metrics
        .lines()
        .find(|l| {
            l.starts_with("pim_webhook_reviews_total{stage=\"validate\",outcome=\"allowed\"}")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(allowed >= 4, "{metrics}");
    assert!(!metrics.contains("outcome=\"malformed\""), "{metrics}");
    // The cluster has no history of policies: the plugin says where it is.
    let refused = c
        .refused(&["pim", "audit", "--kind", "AccessPolicy"], None)
        .await;
    assert!(refused.contains("--file"), "{refused}");
}
