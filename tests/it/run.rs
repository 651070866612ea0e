//! `pim-operator run` as a process: pointed by KUBECONFIG at the fake API server, it serves its
//! probes, grants access, and stops cleanly on SIGTERM; without the CRDs it says how to install them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::local;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kube::api::{Api, PostParams};
use local::{free_port, http_status};
use pim_operator::api::access_policy::AccessPolicySpec;
use pim_operator::api::activation_request::{ActivationRequestSpec, Phase, Requester};
use pim_operator::api::common::PrincipalRef;
use pim_operator::api::eligible_assignment::{EligibleAssignmentSpec, Schedule};
use pim_operator::api::pim_group::{DirectoryGroupRef, GroupRoles, PimGroupSpec, RoleSettings};
use pim_operator::api::{AccessPolicy, ActivationRequest, EligibleAssignment, PimGroup};
use pim_testkit::fake_apiserver::{FakeApiServer, FaultScope};

/// The operator verifies requests with this key, as the webhook would have signed them.
const ATTESTATION_KEY: &str = "a test attestation key, 32 bytes or more\n";

fn write_kubeconfig(dir: &Path, server: &str) -> PathBuf {
    let path = dir.join("kubeconfig");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters: [{{name: fake, cluster: {{server: \"{server}\"}}}}]\nusers: [{{name: tester, user: {{}}}}]\ncontexts: [{{name: fake, context: {{cluster: fake, user: tester}}}}]\ncurrent-context: fake\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn start_operator(dir: &Path, server: &str, port: u16) -> Child {
    let config = dir.join("config.yaml");
    let text = format!(
        "directories:\n  sandbox: {{type: memory}}\nleaderElection: {{enabled: false}}\nmetricsAddress: 127.0.0.1:{port}\nattestation: {{keyFile: {key}}}\n",
        key = dir.join("attestation-key").display()
    );
    std::fs::write(dir.join("attestation-key"), ATTESTATION_KEY).unwrap();
    std::fs::write(&config, text).unwrap();
    Command::new(env!("CARGO_BIN_EXE_pim-operator"))
        .args(["run", "--config"])
        .arg(&config)
        .env("KUBECONFIG", write_kubeconfig(dir, server))
        .env(
            "RUST_LOG",
            std::env::var("PIM_TEST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

async fn wait_until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn seed(client: &kube::Client) {
    let pp = PostParams::default();
    Api::<AccessPolicy>::all(client.clone())
        .create(&pp, &AccessPolicy::new("p", AccessPolicySpec::default()))
        .await
        .unwrap();
    let group = PimGroupSpec {
        directory: "sandbox".into(),
        group: DirectoryGroupRef {
            id: Some("g".into()),
            ..Default::default()
        },
        roles: GroupRoles {
            member: RoleSettings { policy: "p".into() },
            owner: None,
        },
        standing_access: Default::default(),
        rbac: None,
        ..Default::default()
    };
    Api::<PimGroup>::all(client.clone())
        .create(&pp, &PimGroup::new("g", group))
        .await
        .unwrap();
    let assignment = EligibleAssignmentSpec {
        group: "g".into(),
        principal: PrincipalRef::user("alice"),
        schedule: Schedule {
            duration: Some("30d".into()),
            ..Default::default()
        },
        justification: Some("on call".into()),
        ..Default::default()
    };
    Api::<EligibleAssignment>::all(client.clone())
        .create(&pp, &EligibleAssignment::new("a", assignment))
        .await
        .unwrap();
    use pim_operator::clock::Clock;
    let mut request = ActivationRequestSpec {
        group: "g".into(),
        duration: Some("1h".into()),
        justification: Some("incident".into()),
        requester: Some(Requester {
            username: "alice".into(),
            stamped_at: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                pim_operator::clock::SystemClock.now(),
            )),
            ..Default::default()
        }),
        principal: Some("alice".into()),
        ..Default::default()
    };
    // Written straight to the API, unsigned: the operator must not grant it.
    Api::<ActivationRequest>::all(client.clone())
        .create(&pp, &ActivationRequest::new("unsigned", request.clone()))
        .await
        .unwrap();
    let keyring =
        pim_operator::attestation::Keyring::from_bytes(ATTESTATION_KEY.as_bytes(), &[]).unwrap();
    let signature = keyring.sign_requester("r", &request);
    if let Some(requester) = request.requester.as_mut() {
        requester.attestation = signature;
    }
    Api::<ActivationRequest>::all(client.clone())
        .create(&pp, &ActivationRequest::new("r", request))
        .await
        .unwrap();
}

#[tokio::test]
async fn runs_serves_probes_grants_and_stops_on_sigterm() {
    let server = FakeApiServer::start().await.unwrap();
    seed(&server.client()).await;
    // It learns who it is at start (the kubeconfig user here), through a passing outage.
    server.fail_next_in(2, 500, FaultScope::all().resource("selfsubjectreviews"));
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = start_operator(dir.path(), server.url(), port);

    wait_until("/readyz answers 200", async || {
        http_status(port, "/readyz").is_some_and(|s| s.contains("200"))
    })
    .await;
    assert!(http_status(port, "/healthz").unwrap().contains("200"));
    let requests: Api<ActivationRequest> = Api::all(server.client());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = requests.get("r").await.unwrap().status;
        if status.as_ref().and_then(|s| s.phase) == Some(Phase::Active) {
            break;
        }
        if Instant::now() > deadline {
            // The operator's own account of what it was doing.
            child.kill().unwrap();
            let output = child.wait_with_output().unwrap();
            panic!(
                "timed out waiting until the request is Active; status: {status:#?}\noperator stdout:\n{}\noperator stderr:\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_until("the unsigned request is refused", async || {
        requests
            .get("unsigned")
            .await
            .unwrap()
            .status
            .and_then(|s| s.phase)
            == Some(Phase::Rejected)
    })
    .await;

    // The audit trail is written as the notifier sees each transition, a moment after the
    // status: read the log as it comes, and stop the operator only once the record is out.
    let logs = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let logs = logs.clone();
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut line = String::new();
            while stdout.read_line(&mut line).unwrap_or(0) > 0 {
                logs.lock().unwrap().push_str(&line);
                line.clear();
            }
        })
    };
    let audited_active = |logs: &str| {
        logs.lines()
            .any(|l| l.contains(r#""target":"pim::audit""#) && l.contains(r#""outcome":"Active""#))
    };
    wait_until("the activation is in the audit trail", async || {
        audited_active(&logs.lock().unwrap())
    })
    .await;

    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "still running 15s after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status:?} after SIGTERM");
    // RUST_LOG=warn, yet the audit trail is there: it is not a diagnostic to filter out.
    reader.join().unwrap();
    let logs = logs.lock().unwrap().clone();
    assert!(
        audited_active(&logs),
        "no audit record of the activation in:\n{logs}"
    );
    assert!(
        !logs
            .lines()
            .any(|l| l.contains(r#""level":"INFO""#) && !l.contains("pim::audit")),
        "RUST_LOG=warn still filters the rest"
    );
    assert!(
        http_status(port, "/healthz").is_none(),
        "the HTTP server stopped too"
    );
}

#[tokio::test]
async fn missing_crds_are_named_with_the_install_command() {
    let server = FakeApiServer::start().await.unwrap();
    // As a cluster without our CRDs answers: 404 for the resource.
    server.fail_all(404, FaultScope::all().resource("accesspolicies"));
    let dir = tempfile::tempdir().unwrap();
    let child = start_operator(dir.path(), server.url(), free_port());
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("accesspolicies.pim.dev CustomResourceDefinition is not installed"),
        "{stderr}"
    );
    assert!(
        stderr.contains("pim-operator crds | kubectl apply -f -"),
        "{stderr}"
    );
}

/// issue 14 finding 5: the webhook lets only the operator's own username move its finalizer, so
/// an operator that cannot learn that username (SelfSubjectReview) does not start: there is no
/// fallback to "any service account".
#[tokio::test]
async fn without_its_own_identity_the_operator_does_not_start() {
    let server = FakeApiServer::start().await.unwrap();
    server.fail_all(403, FaultScope::all().resource("selfsubjectreviews"));
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = start_operator(dir.path(), server.url(), port);
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("the operator started without learning its own username");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot learn the operator's own username from the SelfSubjectReview API"),
        "{stderr}"
    );
    assert!(stderr.contains("does not start without it"), "{stderr}");
    assert_eq!(
        server.requests().get(
            pim_testkit::fake_apiserver::Verb::Create,
            "selfsubjectreviews"
        ),
        1,
        "a refusal is final, not retried"
    );
}

#[test]
fn no_cluster_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_pim-operator"))
        .arg("run")
        .env("KUBECONFIG", dir.path().join("missing"))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr.contains("no Kubernetes cluster configured"),
        "{stderr}"
    );
}
