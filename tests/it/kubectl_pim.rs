//! `kubectl pim` in-process against the fake API server, with the real operator (manual clock,
//! memory directory, `TrustAsWritten` attestor) where a request has to move. This harness
//! registers no admission webhook, so where the webhook would stamp `requester`/`principal` on a
//! new request, the test does it (before the operator starts, so the operator never sees an
//! unstamped request).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::eventually;

use std::sync::Arc;
use std::time::Duration;

use jiff::SignedDuration;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use pim_operator::api::access_policy::{AccessPolicySpec, ActivationSettings, ApprovalSettings};
use pim_operator::api::common::PrincipalRef;
use pim_operator::api::eligible_assignment::{AssignmentType, EligibleAssignmentSpec, Schedule};
use pim_operator::api::pim_group::{
    DirectoryGroupRef, GroupRoles, PimGroupSpec, RoleSettings, StandingAccess,
};
use pim_operator::api::{AccessPolicy, ActivationRequest, EligibleAssignment, Phase, PimGroup};
use pim_operator::clock::{Clock, ManualClock};
use pim_operator::config::Config;
use pim_operator::controller::{self, Dependencies, Health};
use pim_operator::directory::memory::MemoryDirectory;
use pim_operator::directory::{Directories, Directory};
use pim_operator::engine::TrustAsWritten;
use pim_operator::kubectl_pim::{self, CliError};
use pim_operator::metrics::Metrics;
use pim_testkit::fake_apiserver::{FakeApiServer, Verb};
use pim_testkit::operator::admitted_request;
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const T0: &str = "2026-03-02T09:00:00Z";
/// Generous: a loaded 2-core CI machine.
const WAIT: Duration = Duration::from_secs(30);

struct Harness {
    server: FakeApiServer,
    client: Client,
    clock: Arc<ManualClock>,
    operator: Option<(CancellationToken, JoinHandle<()>)>,
}

/// What one `kubectl pim` run gave: its result and what it printed.
struct Run {
    result: Result<u8, CliError>,
    out: String,
}

impl Run {
    fn ok(&self) -> &str {
        match &self.result {
            Ok(0) => &self.out,
            other => panic!("expected success, got {other:?}; output:\n{}", self.out),
        }
    }

    fn err(&self) -> &CliError {
        match &self.result {
            Err(e) => e,
            Ok(code) => panic!("expected an error, got exit {code}; output:\n{}", self.out),
        }
    }
}

impl Harness {
    async fn new() -> Harness {
        let server = FakeApiServer::start().await.unwrap();
        let clock = Arc::new(ManualClock::new(T0.parse().unwrap()));
        server.set_clock(clock.clone());
        let client = server.client();
        let h = Harness {
            server,
            client,
            clock,
            operator: None,
        };
        h.seed().await;
        h
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<DynamicType = (), Scope = kube::core::ClusterResourceScope>,
    {
        Api::all(self.client.clone())
    }

    /// `kubectl pim ARGS` as the identity set with `as_user`.
    async fn pim(&self, args: &[&str]) -> Run {
        run_pim(self.client.clone(), self.clock.clone(), args).await
    }

    fn as_user(&self, username: &str, groups: &[&str]) {
        self.server.set_identity(username, groups);
    }

    /// Policies `p` (1h, no approval) and `p-approval` (1h; bob, or anyone in `approvers`);
    /// groups `g`, `ga` and `gx`. Alice is eligible for `g` and `ga`; for `gx` she holds only
    /// an ended, a future and a standing Active assignment. Members of `finance` are eligible
    /// for `g` too, and bob for `ga`.
    async fn seed(&self) {
        let pp = PostParams::default();
        let policy = |approval: Option<ApprovalSettings>| AccessPolicySpec {
            activation: ActivationSettings {
                max_duration: Some("1h".into()),
                approval,
                ..Default::default()
            },
            ..Default::default()
        };
        self.api::<AccessPolicy>()
            .create(&pp, &AccessPolicy::new("p", policy(None)))
            .await
            .unwrap();
        let approval = ApprovalSettings {
            approvers: vec![PrincipalRef::user("bob"), PrincipalRef::group("approvers")],
            min_approvals: Some(1),
            timeout: Some("24h".into()),
            allow_self_approval: None,
            require_mfa: None,
            sign_in: Default::default(),
        };
        self.api::<AccessPolicy>()
            .create(
                &pp,
                &AccessPolicy::new("p-approval", policy(Some(approval))),
            )
            .await
            .unwrap();
        for (name, policy) in [("g", "p"), ("ga", "p-approval"), ("gx", "p")] {
            let spec = PimGroupSpec {
                directory: "memory".into(),
                group: DirectoryGroupRef {
                    id: Some(format!("{name}-id")),
                    ..Default::default()
                },
                roles: GroupRoles {
                    member: RoleSettings {
                        policy: policy.into(),
                    },
                    owner: None,
                },
                standing_access: StandingAccess::Remove,
                rbac: None,
                ..Default::default()
            };
            self.api::<PimGroup>()
                .create(&pp, &PimGroup::new(name, spec))
                .await
                .unwrap();
        }
        let t = |s: &str| Some(Time(s.parse().unwrap()));
        let days = |d: &str| Schedule {
            duration: Some(d.into()),
            ..Default::default()
        };
        let assignments = [
            ("alice-g", "g", PrincipalRef::user("alice"), days("30d")),
            ("alice-ga", "ga", PrincipalRef::user("alice"), days("30d")),
            ("bob-ga", "ga", PrincipalRef::user("bob"), days("30d")),
            (
                "alice-gx-old",
                "gx",
                PrincipalRef::user("alice"),
                Schedule {
                    start: t("2026-01-01T00:00:00Z"),
                    end: t("2026-02-01T00:00:00Z"),
                    ..Default::default()
                },
            ),
            (
                "alice-gx-later",
                "gx",
                PrincipalRef::user("alice"),
                Schedule {
                    start: t("2026-04-01T00:00:00Z"),
                    duration: Some("30d".into()),
                    ..Default::default()
                },
            ),
            (
                "alice-gx-standing",
                "gx",
                PrincipalRef::user("alice"),
                days("7d"),
            ),
            (
                "finance-g",
                "g",
                PrincipalRef::group("finance"),
                days("30d"),
            ),
        ];
        for (name, group, principal, schedule) in assignments {
            let spec = EligibleAssignmentSpec {
                group: group.into(),
                principal,
                assignment_type: if name.ends_with("standing") {
                    AssignmentType::Active
                } else {
                    AssignmentType::Eligible
                },
                schedule,
                justification: Some("on call".into()),
                ..Default::default()
            };
            self.api::<EligibleAssignment>()
                .create(&pp, &EligibleAssignment::new(name, spec))
                .await
                .unwrap();
        }
    }

    /// The operator, as `pim-operator run` would start it, on the manual clock.
    fn start_operator(&mut self) {
        let metrics = Arc::new(Metrics::new());
        let mut directories = Directories::default();
        let memory: Arc<dyn Directory> = Arc::new(MemoryDirectory::new());
        directories.insert("memory", memory);
        let settings = Config::parse(
            "resyncInterval: 1h\nconcurrency: 4\nleaderElection: {enabled: false}\nnamespace: pim-system\n",
            "test",
        )
        .unwrap();
        let deps = Dependencies {
            client: self.client.clone(),
            settings,
            directories,
            attestor: Arc::new(TrustAsWritten),
            clock: self.clock.clone(),
            metrics,
            health: Arc::new(Health::default()),
        };
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            controller::run(deps, token).await.unwrap();
        });
        self.operator = Some((stop, task));
    }

    async fn stop(&mut self) {
        if let Some((stop, task)) = self.operator.take() {
            stop.cancel();
            let _ = tokio::time::timeout(WAIT, task).await;
        }
    }

    /// A request as the admission webhook would leave it ([`admitted_request`]).
    async fn request(&self, name: &str, group: &str, user: &str) {
        self.api::<ActivationRequest>()
            .create(
                &PostParams::default(),
                &admitted_request(name, group, user, "30m", |_| {}),
            )
            .await
            .unwrap();
    }

    /// What the mutating webhook does on create, done by hand (this harness registers none).
    async fn stamp(&self, name: &str, user: &str) {
        let patch = json!({"spec": {"requester": {"username": user}, "principal": user}});
        self.api::<ActivationRequest>()
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }

    /// What the mutating webhook does to a new approval entry: stamps its time.
    async fn stamp_decision(&self, name: &str, approver: &str) {
        let r = self.get(name).await;
        let i = r
            .spec
            .approvals
            .iter()
            .position(|a| a.approver == approver)
            .unwrap();
        let time = self.clock.now().to_string();
        let patch: json_patch::Patch = serde_json::from_value(json!([
            {"op": "add", "path": format!("/spec/approvals/{i}/time"), "value": time},
        ]))
        .unwrap();
        self.api::<ActivationRequest>()
            .patch(name, &PatchParams::default(), &Patch::<()>::Json(patch))
            .await
            .unwrap();
    }

    async fn requests(&self) -> Vec<ActivationRequest> {
        self.api::<ActivationRequest>()
            .list(&Default::default())
            .await
            .unwrap()
            .items
    }

    async fn get(&self, name: &str) -> ActivationRequest {
        self.api::<ActivationRequest>().get(name).await.unwrap()
    }

    async fn phase(&self, name: &str) -> Option<Phase> {
        self.get(name).await.status.and_then(|s| s.phase)
    }

    async fn wait_phase(&self, name: &str, phase: Phase) {
        eventually(&format!("{name} reaches {phase}"), || async {
            self.phase(name).await == Some(phase)
        })
        .await;
    }

    /// The name of the one request the CLI creates, once it exists.
    async fn created_request(&self) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(r) = self.requests().await.first() {
                return r.metadata.name.clone().unwrap();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for kubectl pim to create a request"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

async fn run_pim(client: Client, clock: Arc<ManualClock>, args: &[&str]) -> Run {
    let argv: Vec<String> = std::iter::once("kubectl-pim")
        .chain(args.iter().copied())
        .map(String::from)
        .collect();
    let mut out = Vec::new();
    let result = kubectl_pim::run_with_clock(argv, client, clock.as_ref(), &mut out).await;
    Run {
        result,
        out: String::from_utf8(out).unwrap(),
    }
}

/// The lines of a table whose first cell is `first`.
fn row<'a>(text: &'a str, first: &str) -> Option<&'a str> {
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(first))
}

#[tokio::test]
async fn who_am_i_comes_from_self_subject_review() {
    let h = Harness::new().await;
    h.as_user("oidc:alice", &["oidc:finance", "system:authenticated"]);
    let me = kubectl_pim::whoami(&h.client, None).await.unwrap();
    assert_eq!(me.username, "oidc:alice");
    assert_eq!(me.groups, ["oidc:finance", "system:authenticated"]);
    assert_eq!(me.names, ["oidc:alice", "alice"]);
    assert_eq!(
        h.server.requests().get(Verb::Create, "selfsubjectreviews"),
        1
    );

    // The prefix-stripped username finds alice's assignments (no PimGroup has published its
    // mapping here, so the plugin guesses). Groups count as authenticated: `oidc:finance` is
    // not the group `finance` the webhook would compare with (issue 17 finding 1).
    let run = h.pim(&["eligible"]).await;
    let out = run.ok();
    assert!(row(out, "g").is_some(), "{out}");
    assert!(
        out.contains("alice-g") && out.contains("user:alice"),
        "{out}"
    );
    assert!(!out.contains("finance-g"), "{out}");
    h.as_user("oidc:alice", &["finance", "system:authenticated"]);
    let out = h.pim(&["eligible"]).await.ok().to_owned();
    assert!(
        out.contains("finance-g") && out.contains("group:finance"),
        "{out}"
    );

    // --principal (or PIM_PRINCIPAL) replaces the guesses: carol says she is alice in the
    // directory, and sees alice's assignments (it grants nothing; the webhook stamps carol).
    h.as_user("carol", &[]);
    let out = h.pim(&["eligible"]).await.ok().to_owned();
    assert!(out.contains("hold no EligibleAssignment"), "{out}");
    let out = h
        .pim(&["eligible", "--principal", "alice"])
        .await
        .ok()
        .to_owned();
    assert!(out.contains("alice-g"), "{out}");
    assert!(!out.contains("finance-g"), "{out}");
}

#[tokio::test]
async fn the_binary_connects_by_kubeconfig_and_acts_as_another_user() {
    let h = Harness::new().await;
    h.as_user("carol", &[]);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: fake, cluster: {{server: \"{}\"}}}}]\nusers: [{{name: admin, user: {{}}}}]\ncontexts: [{{name: fake, context: {{cluster: fake, user: admin}}}}]\ncurrent-context: fake\n",
            h.server.url()
        ),
    )
    .unwrap();
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_kubectl-pim"))
                .args(args)
                .output()
                .unwrap()
        })
    };
    let path = kubeconfig.display().to_string();
    let args = |extra: &[&str]| -> Vec<String> {
        ["--kubeconfig", path.as_str()]
            .iter()
            .chain(extra)
            .map(|a| a.to_string())
            .collect()
    };
    // As the kubeconfig's own user (carol here): nothing.
    let out = run(args(&["eligible"])).await.unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("hold no EligibleAssignment"), "{text}");
    // --as/--as-group: the API server sees alice in finance (Impersonate-User/-Group).
    let out = run(args(&[
        "eligible",
        "--as",
        "alice",
        "--as-group",
        "finance",
    ]))
    .await
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("alice-g") && text.contains("finance-g"),
        "{text}"
    );
    // --as-group alone is a usage error, as with kubectl.
    let out = run(args(&["eligible", "--as-group", "finance"]))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[tokio::test]
async fn eligible_says_whether_each_assignment_applies_now() {
    let h = Harness::new().await;
    h.as_user("alice", &[]);
    let run = h.pim(&["eligible"]).await;
    let out = run.ok();
    let line = |name: &str| {
        out.lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("no row for {name}:\n{out}"))
    };
    assert!(line("alice-g ").trim_end().ends_with("yes"), "{out}");
    assert!(line("alice-ga").trim_end().ends_with("yes"), "{out}");
    assert!(
        line("alice-gx-old").contains("no: ended 2026-02-01T00:00:00Z"),
        "{out}"
    );
    assert!(
        line("alice-gx-later").contains("no: not started; starts 2026-04-01T00:00:00Z"),
        "{out}"
    );
    assert!(line("alice-gx-standing").contains("yes (standing"), "{out}");
    assert!(line("alice-gx-standing").contains("Active"), "{out}");
    // Not alice's: she is not in finance as far as Kubernetes knows.
    assert!(!out.contains("finance-g"), "{out}");
}

/// The ENDS column: each assignment's end after its policy's caps, RFC 3339, and how long until
/// (or since) then; `never` for a permanent one the policy allows.
#[tokio::test]
async fn eligible_shows_when_each_assignment_ends() {
    let h = Harness::new().await;
    let pp = PostParams::default();
    let mut forever = AccessPolicySpec::default();
    forever.assignment.allow_permanent_eligible = Some(true);
    h.api::<AccessPolicy>()
        .create(&pp, &AccessPolicy::new("p-forever", forever))
        .await
        .unwrap();
    let spec = PimGroupSpec {
        directory: "memory".into(),
        group: DirectoryGroupRef {
            id: Some("gf-id".into()),
            ..Default::default()
        },
        roles: GroupRoles {
            member: RoleSettings {
                policy: "p-forever".into(),
            },
            owner: None,
        },
        standing_access: StandingAccess::Remove,
        rbac: None,
        ..Default::default()
    };
    h.api::<PimGroup>()
        .create(&pp, &PimGroup::new("gf", spec))
        .await
        .unwrap();
    let permanent = Schedule {
        permanent: Some(true),
        ..Default::default()
    };
    // Permanent where the policy allows it; clipped to 365d (policy `p`) where it does not.
    for (name, group) in [("alice-gf-forever", "gf"), ("alice-g-capped", "g")] {
        let spec = EligibleAssignmentSpec {
            group: group.into(),
            principal: PrincipalRef::user("alice"),
            schedule: permanent.clone(),
            justification: Some("on call".into()),
            ..Default::default()
        };
        h.api::<EligibleAssignment>()
            .create(&pp, &EligibleAssignment::new(name, spec))
            .await
            .unwrap();
    }
    h.as_user("alice", &[]);
    let ends_of = |out: &str, name: &str| -> String {
        let header = out.lines().next().unwrap();
        let (from, to) = (
            header.find("ENDS").unwrap(),
            header.find("APPLIES NOW").unwrap(),
        );
        let line = out
            .lines()
            .find(|l| l.split_whitespace().nth(4) == Some(name))
            .unwrap_or_else(|| panic!("no row for {name}:\n{out}"));
        line[from..to].trim().to_owned()
    };
    let out = h.pim(&["eligible"]).await.ok().to_owned();
    assert!(out.lines().next().unwrap().contains("   ENDS   "), "{out}");
    assert_eq!(ends_of(&out, "alice-g"), "2026-04-01T09:00:00Z (in 30d)");
    assert_eq!(
        ends_of(&out, "alice-gx-standing"),
        "2026-03-09T09:00:00Z (in 7d)"
    );
    assert_eq!(
        ends_of(&out, "alice-gx-old"),
        "2026-02-01T00:00:00Z (29d9h ago)"
    );
    assert_eq!(ends_of(&out, "alice-gf-forever"), "never");
    assert_eq!(
        ends_of(&out, "alice-g-capped"),
        "2027-03-02T09:00:00Z (in 365d)"
    );
    // How long until then follows the clock.
    h.clock.advance(SignedDuration::from_hours(20 * 24 + 2));
    let out = h.pim(&["eligible"]).await.ok().to_owned();
    assert_eq!(ends_of(&out, "alice-g"), "2026-04-01T09:00:00Z (in 9d22h)");
    assert_eq!(ends_of(&out, "alice-gf-forever"), "never");
}

#[tokio::test]
async fn activate_creates_the_request_without_identity_or_approvals() {
    let h = Harness::new().await;
    h.as_user("alice", &[]);
    h.server.reset_observations();
    let run = h
        .pim(&[
            "activate",
            "g",
            "--duration",
            "30m",
            "--justification",
            "incident 42",
            "--ticket",
            "jira:OPS-7",
            "--start",
            "2026-03-02T10:00:00Z",
        ])
        .await;
    let out = run.ok();
    let requests = h.requests().await;
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    let name = r.metadata.name.clone().unwrap();
    assert!(name.starts_with("g-"), "generateName g-: {name}");
    assert_eq!(r.metadata.generate_name.as_deref(), Some("g-"));
    assert!(
        out.contains(&format!("activationrequest/{name} created")),
        "{out}"
    );
    assert!(out.contains(&format!("kubectl pim status {name}")), "{out}");

    // Exactly what the user said, and nothing the webhook or the approvers write.
    let stored = h
        .server
        .store_get("activationrequests", None, &name)
        .unwrap();
    assert_eq!(
        stored["spec"],
        json!({
            "group": "g",
            "duration": "30m",
            "justification": "incident 42",
            "ticket": {"system": "jira", "number": "OPS-7"},
            "startTime": "2026-03-02T10:00:00Z",
            // Not sent: the API server's schema default.
            "role": "member",
        })
    );
    let writes: Vec<_> = h
        .server
        .writes()
        .into_iter()
        .filter(|w| w.resource == "activationrequests")
        .collect();
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert_eq!(writes[0].verb, Verb::Create);
}

#[tokio::test]
async fn not_eligible_lists_the_assignments_and_why_none_applies() {
    let h = Harness::new().await;
    h.as_user("alice", &[]);
    let run = h
        .pim(&[
            "activate",
            "gx",
            "--duration",
            "30m",
            "--justification",
            "x",
        ])
        .await;
    let CliError::NotEligible(text) = run.err() else {
        panic!("expected NotEligible, got {:?}", run.result);
    };
    assert_eq!(run.result.as_ref().unwrap_err().exit_code(), 1);
    let line = |name: &str| {
        text.lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("no line for {name}:\n{text}"))
    };
    assert!(text.contains("member role of \"gx\""), "{text}");
    assert!(
        line("alice-g ").contains("for PimGroup \"g\", not \"gx\""),
        "{text}"
    );
    assert!(line("alice-ga").contains("for PimGroup \"ga\""), "{text}");
    assert!(
        line("alice-gx-old").contains("ended 2026-02-01T00:00:00Z"),
        "{text}"
    );
    assert!(line("alice-gx-later").contains("not started"), "{text}");
    assert!(
        line("alice-gx-standing").contains("Active (standing)"),
        "{text}"
    );
    assert!(text.contains("--principal"), "{text}");
    assert!(h.requests().await.is_empty(), "nothing was created");

    // The policy's demands are checked before anything is written, too.
    let run = h.pim(&["activate", "g", "--duration", "30m"]).await;
    assert!(
        matches!(run.err(), CliError::Invalid(m) if m.contains("requires a justification")),
        "{:?}",
        run.result
    );
    let run = h
        .pim(&["activate", "g", "--duration", "2h", "--justification", "x"])
        .await;
    assert!(
        matches!(run.err(), CliError::Invalid(m) if m.contains("longer than") && m.contains("1h")),
        "{:?}",
        run.result
    );
    // The webhook's own checks, each turned into a hint for the flag to change (issue 22).
    let run = h.pim(&["activate", "g", "--duration", "forever"]).await;
    let CliError::Invalid(text) = run.err() else {
        panic!("expected Invalid, got {:?}", run.result);
    };
    assert!(text.contains("refuses this request:\n"), "{text}");
    assert!(
        text.contains("requires a justification; add --justification"),
        "{text}"
    );
    assert!(
        text.contains("write --duration as a number and a unit"),
        "{text}"
    );
    let run = h
        .pim(&[
            "activate",
            "g",
            "--justification",
            "x",
            "--start",
            "2026-03-22T09:00:00Z",
        ])
        .await;
    assert!(
        matches!(run.err(), CliError::Invalid(m)
            if m.contains("maxStartDelay is 14d")
                && m.contains("pass --start 2026-03-16T09:00:00Z or earlier")),
        "{:?}",
        run.result
    );
    assert!(h.requests().await.is_empty(), "nothing was created");
    let run = h
        .pim(&[
            "activate",
            "g",
            "--ticket",
            "nocolon",
            "--justification",
            "x",
        ])
        .await;
    assert!(
        matches!(run.err(), CliError::Invalid(m) if m.contains("SYSTEM:NUMBER")),
        "{:?}",
        run.result
    );
    // A group-based assignment Kubernetes cannot confirm lets the request through, with a note.
    h.as_user("dave", &[]);
    let run = h
        .pim(&["activate", "g", "--duration", "30m", "--justification", "x"])
        .await;
    assert!(
        run.ok()
            .contains("directory group of finance-g (group:finance)"),
        "{}",
        run.out
    );
    assert_eq!(h.requests().await.len(), 1);
}

#[tokio::test]
async fn activate_wait_asks_whether_the_operator_runs_only_after_seconds_without_status() {
    let h = Harness::new().await;
    h.as_user("alice", &[]);
    let (client, clock) = (h.client.clone(), h.clock.clone());
    let waiting = tokio::spawn(async move {
        run_pim(
            client,
            clock,
            &[
                "activate",
                "g",
                "--for",
                "30m",
                "--reason",
                "incident 42",
                "--wait",
                "--timeout",
                "3s",
            ],
        )
        .await
    });
    let name = h.created_request().await;
    // Listed without status (no operator runs), and watched; then the seconds go by.
    eventually("the CLI watches", || async { h.server.open_watches() > 0 }).await;
    h.clock.advance(jiff::SignedDuration::from_secs(10));
    let run = tokio::time::timeout(WAIT, waiting).await.unwrap().unwrap();
    assert!(
        matches!(run.err(), CliError::WaitTimeout { .. }),
        "{:?}",
        run.result
    );
    let prefix = format!("{name}: ");
    let lines: Vec<&str> = run.out.lines().filter(|l| l.starts_with(&prefix)).collect();
    assert_eq!(
        lines,
        [
            format!("{name}: Pending (waiting for the operator)"),
            format!("{name}: Pending (no status from the operator after 5s: is it running?)"),
        ],
        "{}",
        run.out
    );
}

#[tokio::test]
async fn activate_wait_follows_to_active_then_status_and_deactivate() {
    let mut h = Harness::new().await;
    h.as_user("alice", &[]);
    let (client, clock) = (h.client.clone(), h.clock.clone());
    let waiting = tokio::spawn(async move {
        run_pim(
            client,
            clock,
            &[
                "activate",
                "g",
                "--for",
                "30m",
                "--reason",
                "incident 42",
                "--wait",
                "--timeout",
                "2m",
            ],
        )
        .await
    });
    let name = h.created_request().await;
    h.stamp(&name, "alice").await;
    // The CLI has listed the request before the operator wrote any status: a moment without
    // status is normal and blames nobody.
    eventually("the CLI watches", || async { h.server.open_watches() > 0 }).await;
    h.start_operator();
    let run = tokio::time::timeout(WAIT, waiting).await.unwrap().unwrap();
    let out = run.ok();
    assert!(
        out.contains(&format!("\n{name}: Pending (waiting for the operator)\n")),
        "{out}"
    );
    assert!(!out.contains("is it running"), "{out}");
    // The phases it passed through depend on when the watch started; the end does not.
    assert!(out.contains(&format!("{name}: Active")), "{out}");
    assert!(
        out.contains("Access is active until 2026-03-02T09:30:00Z (in 30m)"),
        "{out}"
    );
    assert_eq!(h.phase(&name).await, Some(Phase::Active));

    // status: my requests, then one in detail.
    let run = h.pim(&["status"]).await;
    let line = row(run.ok(), &name).unwrap_or_else(|| panic!("{}", run.out));
    assert!(line.contains(" g ") && line.contains("Active"), "{line}");
    assert!(line.contains("2026-03-02T09:30:00Z"), "{line}");
    let run = h.pim(&["status", &name]).await;
    let out = run.ok();
    for (label, value) in [
        ("Phase:", "Active"),
        ("Requester:", "alice"),
        ("Justification:", "incident 42"),
        ("Matched assignment:", "alice-g"),
        ("Expires:", "2026-03-02T09:30:00Z (in 30m)"),
    ] {
        let expected = format!("{label:<20}{value}");
        assert!(out.contains(&expected), "{expected:?} missing:\n{out}");
    }
    assert!(
        out.contains("\nConditions:\n") && out.contains("\nHistory:\n"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.trim_start().starts_with("Active") && l.contains("True")),
        "{out}"
    );
    // Someone else's status view lists nothing of alice's.
    h.as_user("bob", &[]);
    assert!(
        h.pim(&["status"])
            .await
            .ok()
            .contains("have no ActivationRequests")
    );
    // Only the requester may deactivate.
    let run = h.pim(&["deactivate", &name]).await;
    assert!(
        matches!(run.err(), CliError::NotYours { .. }),
        "{:?}",
        run.result
    );

    h.as_user("alice", &[]);
    h.server.reset_observations();
    let run = h.pim(&["deactivate", &name]).await;
    assert!(run.ok().contains("deactivation requested"), "{}", run.out);
    let patches: Vec<_> = h
        .server
        .writes()
        .into_iter()
        .filter(|w| w.resource == "activationrequests" && w.verb == Verb::Patch && !w.is_status())
        .collect();
    assert_eq!(patches.len(), 1, "{patches:?}");
    assert_eq!(
        patches[0].patch_type.as_deref(),
        Some("application/merge-patch+json")
    );
    assert_eq!(h.get(&name).await.spec.deactivate, Some(true));
    h.wait_phase(&name, Phase::Deactivated).await;
    let run = h.pim(&["status"]).await;
    assert!(
        row(run.ok(), &name).unwrap().contains("Deactivated"),
        "{}",
        run.out
    );
    // A finished request cannot be ended again.
    let run = h.pim(&["deactivate", &name]).await;
    assert!(
        matches!(
            run.err(),
            CliError::Finished {
                phase: Phase::Deactivated,
                ..
            }
        ),
        "{:?}",
        run.result
    );

    // The audit export sees the whole story.
    let run = h.pim(&["audit", "--since", "1d", "-o", "json"]).await;
    let records: serde_json::Value = serde_json::from_str(run.ok()).unwrap();
    assert!(
        records
            .as_array()
            .is_some_and(|r| !r.is_empty() && r.iter().all(|r| r.to_string().contains(&name))),
        "{records}"
    );
    let group = records[0]["group"].as_str().unwrap().to_owned();
    let principal = records[0]["principal"]
        .as_str()
        .unwrap()
        .to_ascii_uppercase();
    let all = records.as_array().map_or(0, Vec::len);
    let run = h
        .pim(&[
            "audit",
            "--since",
            "1d",
            "--principal",
            &principal,
            "--group",
            &group,
            "-o",
            "json",
        ])
        .await;
    let narrowed: serde_json::Value = serde_json::from_str(run.ok()).unwrap();
    assert_eq!(narrowed.as_array().map(Vec::len), Some(all), "{narrowed}");
    let run = h
        .pim(&["audit", "--since", "1d", "--group", "another", "-o", "json"])
        .await;
    assert_eq!(run.ok().trim(), "[]");
    let run = h
        .pim(&["audit", "--since", "1d", "--until", "2d", "-o", "json"])
        .await;
    assert!(matches!(run.err(), CliError::Audit(_)), "{:?}", run.result);
    let run = h.pim(&["audit", "-o", "yaml"]).await;
    assert!(matches!(run.err(), CliError::Audit(_)), "{:?}", run.result);
    h.stop().await;
}

#[tokio::test]
async fn wait_reports_a_denial_with_its_reason() {
    let mut h = Harness::new().await;
    h.as_user("alice", &[]);
    let (client, clock) = (h.client.clone(), h.clock.clone());
    let waiting = tokio::spawn(async move {
        run_pim(
            client,
            clock,
            &[
                "activate",
                "ga",
                "--duration",
                "30m",
                "--justification",
                "x",
                "--wait",
            ],
        )
        .await
    });
    let name = h.created_request().await;
    h.stamp(&name, "alice").await;
    h.start_operator();
    h.wait_phase(&name, Phase::PendingApproval).await;

    h.as_user("bob", &[]);
    let run = h
        .pim(&["deny", &name, "--reason", "not during the freeze"])
        .await;
    assert!(
        run.ok()
            .contains(&format!("denied activationrequest/{name}")),
        "{}",
        run.out
    );
    h.stamp_decision(&name, "bob").await;

    let run = tokio::time::timeout(WAIT, waiting).await.unwrap().unwrap();
    // Which phases it printed on the way depends on when its watch started; the end does not.
    assert!(run.out.contains(&format!("{name}: Denied")), "{}", run.out);
    let err = run.err();
    assert!(
        matches!(
            err,
            CliError::RequestEnded {
                phase: Phase::Denied,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.exit_code(), 1);
    assert!(err.to_string().contains("Denied"), "{err}");
    h.stop().await;
}

#[tokio::test]
async fn approve_and_deny_write_exactly_the_callers_entry() {
    let h = Harness::new().await;
    h.request("r", "ga", "alice").await;

    h.as_user("bob", &[]);
    h.server.reset_observations();
    let run = h
        .pim(&["approve", "r", "--reason", "checked the ticket"])
        .await;
    assert!(
        run.ok().contains("approved activationrequest/r"),
        "{}",
        run.out
    );
    let stored = h.server.store_get("activationrequests", None, "r").unwrap();
    assert_eq!(
        stored["spec"]["approvals"],
        json!([{"approver": "bob", "decision": "Approve", "reason": "checked the ticket"}])
    );
    let patches: Vec<_> = h
        .server
        .writes()
        .into_iter()
        .filter(|w| w.verb == Verb::Patch)
        .collect();
    assert_eq!(patches.len(), 1, "{patches:?}");
    assert_eq!(
        patches[0].patch_type.as_deref(),
        Some("application/json-patch+json")
    );

    // Carol decides through her group; bob's entry stays as it was.
    h.as_user("carol", &["approvers"]);
    let run = h.pim(&["deny", "r", "--reason", "freeze"]).await;
    assert!(
        run.ok().contains("denied activationrequest/r"),
        "{}",
        run.out
    );
    let stored = h.server.store_get("activationrequests", None, "r").unwrap();
    assert_eq!(
        stored["spec"]["approvals"],
        json!([
            {"approver": "bob", "decision": "Approve", "reason": "checked the ticket"},
            {"approver": "carol", "decision": "Deny", "reason": "freeze"},
        ])
    );
    let before = h.server.resource_version();

    // A second decision by the same approver, either way, is refused before any write.
    for args in [
        ["approve", "r", "--reason", "again"],
        ["deny", "r", "--reason", "changed my mind"],
    ] {
        h.as_user("bob", &[]);
        let run = h.pim(&args).await;
        let err = run.err();
        assert!(matches!(err, CliError::AlreadyDecided { .. }), "{err:?}");
        assert!(
            err.to_string()
                .contains("you already decided on r: you approved it"),
            "{err}"
        );
    }
    assert_eq!(h.server.resource_version(), before, "nothing was written");

    // The requester cannot decide on her own request (the policy does not allow it).
    h.as_user("alice", &[]);
    let run = h.pim(&["approve", "r"]).await;
    assert!(
        matches!(run.err(), CliError::Invalid(m) if m.contains("your own request")),
        "{:?}",
        run.result
    );
    // Deny needs a reason; a missing request says how to find one.
    let run = h.pim(&["deny", "r"]).await;
    assert!(
        matches!(run.err(), CliError::Usage(m) if m.contains("--reason")),
        "{:?}",
        run.result
    );
    assert_eq!(run.err().exit_code(), 2);
    let run = h.pim(&["approve", "nope"]).await;
    assert!(
        matches!(run.err(), CliError::NotFound(n) if n == "nope"),
        "{:?}",
        run.result
    );
    assert!(run.err().to_string().contains("kubectl pim pending"));
}

#[tokio::test]
async fn pending_lists_the_requests_i_may_decide() {
    let mut h = Harness::new().await;
    h.request("alice-ga", "ga", "alice").await;
    h.request("alice-g", "g", "alice").await;
    h.request("bob-ga", "ga", "bob").await;
    h.start_operator();
    h.wait_phase("alice-ga", Phase::PendingApproval).await;
    h.wait_phase("bob-ga", Phase::PendingApproval).await;
    h.wait_phase("alice-g", Phase::Active).await;

    // Bob is a listed approver: alice's request, not his own, not one needing no approval.
    h.as_user("bob", &[]);
    let run = h.pim(&["pending"]).await;
    let out = run.ok();
    let line = row(out, "alice-ga").unwrap_or_else(|| panic!("{out}"));
    assert!(
        line.contains("alice") && line.contains("0/1 via user:bob"),
        "{line}"
    );
    assert!(line.contains("incident 42"), "{line}");
    assert!(row(out, "bob-ga").is_none(), "{out}");
    assert!(row(out, "alice-g").is_none(), "{out}");

    // Carol approves through her group: both are waiting for her.
    h.as_user("carol", &["approvers"]);
    let out = h.pim(&["pending"]).await.ok().to_owned();
    assert!(
        row(&out, "alice-ga").is_some_and(|l| l.contains("via group:approvers")),
        "{out}"
    );
    assert!(row(&out, "bob-ga").is_some(), "{out}");

    // Dave may decide nothing.
    h.as_user("dave", &["developers"]);
    let out = h.pim(&["pending"]).await.ok().to_owned();
    assert!(
        out.contains("Nothing is waiting for your approval"),
        "{out}"
    );

    // An approval written around the webhook (unstamped, unsigned) counts for nothing with
    // the controller, so not in pending either: the count is what the controller counted
    // (issue 17 finding 6; it showed 1/1).
    let unsigned = json!({"spec": {"approvals": [{"approver": "carol", "decision": "Approve"}]}});
    h.api::<ActivationRequest>()
        .patch(
            "alice-ga",
            &PatchParams::default(),
            &Patch::Merge(&unsigned),
        )
        .await
        .unwrap();
    h.as_user("bob", &[]);
    let out = h.pim(&["pending"]).await.ok().to_owned();
    assert!(
        row(&out, "alice-ga").is_some_and(|l| l.contains("0/1 via user:bob")),
        "{out}"
    );
    assert_eq!(
        h.get("alice-ga").await.status.unwrap().phase,
        Some(Phase::PendingApproval)
    );

    // Once bob has decided, the request leaves his list.
    h.pim(&["approve", "alice-ga"]).await.ok();
    h.stamp_decision("alice-ga", "bob").await;
    h.wait_phase("alice-ga", Phase::Active).await;
    let out = h.pim(&["pending"]).await.ok().to_owned();
    assert!(row(&out, "alice-ga").is_none(), "{out}");
    h.stop().await;
}

#[tokio::test]
async fn help_explains_identity_and_bad_arguments_are_usage_errors() {
    let h = Harness::new().await;
    let run = h.pim(&["--help"]).await;
    let out = run.ok();
    for expected in [
        "SelfSubjectReview",
        "--principal",
        "PIM_PRINCIPAL",
        "prefix",
        "pending",
    ] {
        assert!(out.contains(expected), "{expected:?} missing:\n{out}");
    }
    let run = h.pim(&["activate", "--help"]).await;
    assert!(run.ok().contains("--wait"), "{}", run.out);
    let run = h.pim(&["activate", "g", "--start", "tomorrow"]).await;
    assert!(
        matches!(run.err(), CliError::Usage(m) if m.contains("RFC 3339")),
        "{:?}",
        run.result
    );
    let run = h.pim(&["frobnicate"]).await;
    assert_eq!(run.err().exit_code(), 2);
    // Time moved on: an assignment's relative times follow the injected clock.
    h.clock.advance(SignedDuration::from_hours(24));
    h.as_user("alice", &[]);
    let out = h.pim(&["eligible"]).await.ok().to_owned();
    assert!(out.contains("(1d ago)"), "{out}");
}

// Issue 20: `kubectl pim extend` creates an extension of a running request; the operator holds
// the access on past the original end.
#[tokio::test]
async fn extend_creates_an_extension_of_a_running_request() {
    let mut h = Harness::new().await;
    h.request("r1", "g", "alice").await;
    h.start_operator();
    h.wait_phase("r1", Phase::Active).await;
    // Stopped while the CLI creates the extension: the fake server runs no webhook, so the
    // test stamps it before the operator sees it.
    h.stop().await;
    h.clock.advance(SignedDuration::from_mins(20));
    h.as_user("alice", &[]);
    for (args, needle) in [
        (
            vec!["extend", "nope", "--by", "15m"],
            "\"nope\" does not exist",
        ),
        (vec!["extend", "r1", "--by", "soon"], "--by"),
    ] {
        let run = h.pim(&args).await;
        let error = run.err().to_string();
        assert!(error.contains(needle), "{needle}: {error}");
    }
    let run = h
        .pim(&[
            "extend",
            "r1",
            "--by",
            "15m",
            "--justification",
            "the fix needs longer",
        ])
        .await;
    let out = run.ok().to_owned();
    let extension = h
        .requests()
        .await
        .into_iter()
        .find(|r| r.spec.extends.as_deref() == Some("r1"))
        .unwrap();
    let name = extension.metadata.name.clone().unwrap();
    assert!(name.starts_with("r1-ext-"), "{name}");
    assert!(
        out.contains(&format!("activationrequest/{name} created: extends r1")),
        "{out}"
    );
    assert_eq!(extension.spec.group, "g");
    assert_eq!(extension.spec.duration.as_deref(), Some("15m"));
    assert!(extension.spec.requester.is_none() && extension.spec.approvals.is_empty());
    h.stamp(&name, "alice").await;
    h.start_operator();
    h.wait_phase(&name, Phase::Active).await;
    let expires = h.get(&name).await.status.unwrap().expires_at.unwrap().0;
    assert_eq!(expires.to_string(), "2026-03-02T09:45:00Z");
    h.clock.advance(SignedDuration::from_mins(10));
    h.wait_phase("r1", Phase::Expired).await;
    // A finished request is nothing to extend.
    let run = h.pim(&["extend", "r1", "--by", "15m"]).await;
    let error = run.err().to_string();
    assert!(error.contains("only a running activation"), "{error}");
    // `status` of the extension names what it extends.
    let run = h.pim(&["status", &name]).await;
    assert!(run.ok().contains("Extends:"), "{}", run.out);
    h.stop().await;
}

/// Issue 19: `kubectl pim review` lists what is mine to decide in running access reviews, and
/// `approve`/`deny` write exactly my entry (a JSON patch), replacing it when I change my mind.
#[tokio::test]
async fn review_lists_mine_and_writes_exactly_my_decision() {
    use pim_operator::api::AccessReview;
    use pim_operator::api::access_review::{
        AccessReviewSpec, ReviewSchedule, ReviewScope, Reviewers,
    };
    let mut h = Harness::new().await;
    let spec = AccessReviewSpec {
        scope: ReviewScope {
            groups: vec!["g".into()],
            ..Default::default()
        },
        reviewers: Reviewers {
            principals: vec![PrincipalRef::user("rita")],
            ..Default::default()
        },
        schedule: ReviewSchedule {
            start: Time(T0.parse().unwrap()),
            duration: "7d".into(),
            ..Default::default()
        },
        when_unreviewed: pim_operator::api::access_review::UnreviewedAction::Remove,
        ..Default::default()
    };
    h.api::<AccessReview>()
        .create(&PostParams::default(), &AccessReview::new("g-review", spec))
        .await
        .unwrap();
    h.start_operator();
    eventually("the instance opens", || async {
        h.api::<AccessReview>()
            .get("g-review")
            .await
            .unwrap()
            .status
            .and_then(|s| s.current)
            .is_some_and(|c| c.items.len() == 2)
    })
    .await;

    h.as_user("rita", &[]);
    let run = h.pim(&["review"]).await;
    let out = run.ok();
    let alice = row(out, "g-review").unwrap_or_else(|| panic!("{out}"));
    assert!(
        alice.contains("alice-g") && alice.contains("user:alice"),
        "{out}"
    );
    assert!(out.contains("finance-g"), "{out}");
    // New assignments: activation history has nothing against them yet.
    assert!(
        alice.contains("Approve: in effect since 2026-03-02T09:00:00Z"),
        "the recommendation: {out}"
    );

    h.server.reset_observations();
    let run = h
        .pim(&[
            "review",
            "deny",
            "g-review",
            "alice-g",
            "--reason",
            "left the team",
        ])
        .await;
    assert!(
        run.ok().contains("denied alice-g in accessreview/g-review"),
        "{}",
        run.out
    );
    let instance = "2026-03-02T09:00:00Z";
    let stored = h
        .server
        .store_get("accessreviews", None, "g-review")
        .unwrap();
    assert_eq!(
        stored["spec"]["decisions"],
        json!([{"instance": instance, "assignment": "alice-g", "reviewer": "rita",
                "decision": "Deny", "reason": "left the team"}])
    );
    let patches: Vec<_> = h
        .server
        .writes()
        .into_iter()
        .filter(|w| w.verb == Verb::Patch && w.resource == "accessreviews")
        .collect();
    assert_eq!(patches.len(), 1, "{patches:?}");
    assert_eq!(
        patches[0].patch_type.as_deref(),
        Some("application/json-patch+json")
    );
    // Changing my mind replaces my entry; deciding another adds one.
    h.pim(&[
        "review", "approve", "g-review", "alice-g", "--reason", "back",
    ])
    .await
    .ok();
    h.pim(&[
        "review",
        "approve",
        "g-review",
        "finance-g",
        "--reason",
        "needed",
    ])
    .await
    .ok();
    let stored = h
        .server
        .store_get("accessreviews", None, "g-review")
        .unwrap();
    let decisions: Vec<(String, String)> = stored["spec"]["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["assignment"].as_str().unwrap().to_owned(),
                d["decision"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        decisions,
        [
            ("alice-g".to_owned(), "Approve".to_owned()),
            ("finance-g".to_owned(), "Approve".to_owned())
        ]
    );
    // Alice is reviewed, not a reviewer; a review that does not exist says how to find one.
    h.as_user("alice", &[]);
    assert!(
        h.pim(&["review"])
            .await
            .ok()
            .contains("Nothing is waiting for your review.")
    );
    h.as_user("rita", &[]);
    let run = h
        .pim(&["review", "deny", "nope", "alice-g", "--reason", "x"])
        .await;
    assert!(
        matches!(run.err(), CliError::Invalid(m) if m.contains("no AccessReview named \"nope\"")),
        "{:?}",
        run.result
    );
    // No webhook here stamps or signs them: the operator counts none, and says so.
    eventually("the unsigned decisions are reported", || async {
        h.api::<AccessReview>()
            .get("g-review")
            .await
            .unwrap()
            .status
            .is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Valid" && c.reason == "UnverifiedDecisions")
            })
    })
    .await;
    // After the end, nothing takes decisions; unreviewed (as far as the operator can prove),
    // alice's assignment is removed under `whenUnreviewed: Remove` and grants nothing.
    h.clock.advance(SignedDuration::from_hours(7 * 24));
    let run = h
        .pim(&["review", "deny", "g-review", "alice-g", "--reason", "late"])
        .await;
    assert!(
        matches!(run.err(), CliError::Invalid(m) if m.contains("no instance of AccessReview g-review is taking decisions")),
        "{:?}",
        run.result
    );
    eventually("alice-g is denied", || async {
        h.api::<EligibleAssignment>()
            .get("alice-g")
            .await
            .unwrap()
            .status
            .and_then(|s| s.phase)
            .is_some_and(|p| p == pim_operator::api::eligible_assignment::AssignmentPhase::Denied)
    })
    .await;
    // `eligible` says so (from the assignment's status: requesters may not read reviews).
    h.as_user("alice", &[]);
    let out = h.pim(&["eligible"]).await;
    let alice_g = out
        .ok()
        .lines()
        .find(|l| l.contains(" alice-g "))
        .unwrap_or_else(|| panic!("{}", out.out));
    assert!(
        alice_g.contains("no: denied by an access review"),
        "{}",
        out.out
    );
}
