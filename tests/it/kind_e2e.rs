//! `hack/kind-e2e.sh --fake-apiserver`: the newcomer's kind flow (issue 18, finding 1), run
//! by the same script a user runs on kind, against the fake API server with its admission
//! webhooks, the real kubectl and helm, and the built pim-operator, kubectl-pim and
//! fake-apiserver. Also: `kubectl apply -f examples/` works as a folder (finding 9).
//!
//! kubectl and helm come from `.ci/install-deploy-tools` (~/.cache/pim-operator/bin, or
//! PIM_DEPLOY_TOOLS).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pim_testkit::fake_apiserver::FakeApiServer;

const INSTALL_HINT: &str = "run `.ci/install-deploy-tools` (kubectl, helm)";

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// Where `.ci/install-deploy-tools` puts kubectl and helm.
fn deploy_tools_dir() -> PathBuf {
    std::env::var_os("PIM_DEPLOY_TOOLS")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache/pim-operator/bin"))
        })
        .expect("HOME or PIM_DEPLOY_TOOLS is set")
}

fn tool(name: &str) -> PathBuf {
    let path = deploy_tools_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: {INSTALL_HINT}",
        path.display()
    );
    path
}

/// The testkit's `fake-apiserver` binary. Another package's binary has no `CARGO_BIN_EXE_`;
/// `cargo test` at the top builds it (the workspace's default members include pim-testkit)
/// beside this test's own directory.
pub(crate) fn fake_apiserver_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let built = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("fake-apiserver"))
        .unwrap();
    assert!(
        built.is_file(),
        "{} is not built: run `cargo test` at the top (or `cargo build -p pim-testkit --bin fake-apiserver` first)",
        built.display()
    );
    built
}

/// Runs the script in fake mode with the built binaries and the pinned tools.
fn kind_e2e(args: &[&str], env: &[(&str, &str)]) -> Output {
    let tools = deploy_tools_dir();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let path =
        std::env::join_paths(std::iter::once(tools.clone()).chain(std::env::split_paths(&path)))
            .unwrap();
    let home = tempfile::tempdir().unwrap();
    Command::new(repo_path("hack/kind-e2e.sh"))
        .arg("--fake-apiserver")
        .args(args)
        .env("PATH", path)
        // No kubeconfig or cache of the user's leaks in.
        .env("HOME", home.path())
        .env_remove("KUBECONFIG")
        .env("KUBECTL", tool("kubectl"))
        .env("HELM", tool("helm"))
        .env("PIM_OPERATOR_BIN", env!("CARGO_BIN_EXE_pim-operator"))
        .env("KUBECTL_PIM_BIN", env!("CARGO_BIN_EXE_kubectl-pim"))
        .env("FAKE_APISERVER_BIN", fake_apiserver_bin())
        .env("PIM_E2E_TIMEOUT", "60")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The lines every passing run prints: each step's assertion.
const PASSING_CHECKS: &[&str] = &[
    "ok: the operator is ready (/readyz)",
    "ok: the operator wrote its CA into the webhook configurations",
    "ok: the attestation Secret exists",
    "ok: examples/ created eligibleassignment/finreport-senioranalyst-alice",
    "ok: bob's approval is recorded",
    "ok: the PimGroup is Ready",
    "ok: no binding names alice@contoso.com yet",
    "ok: the webhook stamped the requester alice@contoso.com",
    "ok: the webhook put the revoke-access finalizer on at create",
    "you cannot approve or deny your own request",
    "ok: kubectl pim activate --wait: Active",
    "ok: a ClusterRoleBinding of the PimGroup names alice@contoso.com",
    "ok: no PimGroup binding names alice@contoso.com",
    "ok: the request ended",
];

fn assert_passes(install: &str) {
    let output = kind_e2e(&["--install", install], &[]);
    let (stdout, stderr) = text(&output);
    assert!(
        output.status.success(),
        "hack/kind-e2e.sh --fake-apiserver --install {install} failed:\n{stdout}\n{stderr}"
    );
    for check in PASSING_CHECKS {
        assert!(stdout.contains(check), "no {check:?} in:\n{stdout}");
    }
    assert!(
        stdout.contains(&format!(
            "ok: the kind flow works (fake mode, installed with {install})"
        )),
        "{stdout}"
    );
}

#[test]
fn the_kind_flow_passes_against_the_fake_apiserver_installed_with_helm() {
    assert_passes("helm");
}

#[test]
fn the_kind_flow_passes_against_the_fake_apiserver_installed_with_kustomize() {
    assert_passes("kustomize");
}

#[test]
fn the_script_fails_loudly_when_a_step_fails() {
    // alice as the approver: her approval of her own request is refused, so the flow stops there.
    let output = kind_e2e(&[], &[("PIM_E2E_APPROVER", "alice@contoso.com")]);
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("FAIL [approve as alice@contoso.com]:"),
        "the failure names its step:\n{stderr}"
    );
    assert!(
        stderr.contains("you cannot approve or deny your own request"),
        "the failure says what it saw:\n{stderr}"
    );
    assert!(!stdout.contains("ok: the kind flow works"), "{stdout}");
}

#[test]
fn bad_arguments_are_refused() {
    let output = kind_e2e(&["--install", "kubectl-magic"], &[]);
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr.contains("--install must be helm or kustomize"),
        "{stderr}"
    );
}

/// Finding 9: each file directly in examples/ is a whole object of its own, so that a
/// client-side `kubectl apply -f examples/` creates them; partial objects (an approval is a
/// server-side-apply fragment of a request) live in a subfolder the folder apply skips.
#[test]
fn examples_holds_whole_objects_only() {
    let mut names: BTreeMap<(String, String), PathBuf> = BTreeMap::new();
    for entry in std::fs::read_dir(repo_path("examples")).unwrap() {
        let path = entry.unwrap().path();
        if !path.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let object: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
        let key = (
            object["kind"].as_str().unwrap_or_default().to_owned(),
            object["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
        if let Some(other) = names.insert(key.clone(), path.clone()) {
            panic!(
                "{} and {} both hold {key:?}: a folder apply merges the second into the first",
                other.display(),
                path.display()
            );
        }
    }
    assert!(names.len() >= 3, "{names:?}");
}

/// The real kubectl applies the folder (client-side, as a newcomer would) to the fake API
/// server; the script does it again with the webhook.
#[tokio::test]
async fn kubectl_applies_the_examples_folder() {
    let server = FakeApiServer::start().await.unwrap();
    let home = tempfile::tempdir().unwrap();
    let url = server.url().to_owned();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(tool("kubectl"))
            .env("HOME", home.path())
            .env_remove("KUBECONFIG")
            .arg(format!("--server={url}"))
            .args(["apply", "--validate=false", "-f"])
            .arg(repo_path("examples"))
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        server
            .store_get("eligibleassignments", None, "finreport-senioranalyst-alice")
            .is_some(),
        "{stdout}"
    );
    assert!(
        server.store_list("activationrequests", None).is_empty(),
        "a request made by whoever applied the folder: {stdout}"
    );
}
