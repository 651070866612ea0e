//! Issue 18 finding 6: `pim-operator crds | head -1` printed a panic. Every command that prints
//! is run here with its stdout a pipe whose reader is already gone, so its first write fails
//! with EPIPE: it must end quietly, with the exit code it has when all is read.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Stdio};

use pim_testkit::fake_apiserver::FakeApiServer;

/// Runs `program ARGS` with stdout into a closed pipe; returns the exit code and stderr.
fn with_closed_stdout(program: &str, args: &[&str]) -> (Option<i32>, String) {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let out = Command::new(program)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .stdout(writer)
        .output()
        .expect("run the binary");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The exit code when stdout is read to the end, and that something was printed.
fn read_fully(program: &str, args: &[&str]) -> Option<i32> {
    let out = Command::new(program)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .output()
        .expect("run the binary");
    assert!(
        !out.stdout.is_empty(),
        "{program} {args:?} printed nothing, so the test proves nothing: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.status.code()
}

fn assert_quiet(program: &str, args: &[&str]) {
    let expected = read_fully(program, args);
    let (code, stderr) = with_closed_stdout(program, args);
    assert!(
        !stderr.contains("panicked") && stderr.is_empty(),
        "{program} {args:?} into a closed pipe said:\n{stderr}"
    );
    assert_eq!(
        code, expected,
        "{program} {args:?}: a closed pipe changed the exit code"
    );
}

const PIM_OPERATOR: &str = env!("CARGO_BIN_EXE_pim-operator");
const KUBECTL_PIM: &str = env!("CARGO_BIN_EXE_kubectl-pim");

#[test]
fn pim_operator_commands_end_quietly_on_a_closed_pipe() {
    assert_quiet(PIM_OPERATOR, &["crds"]);
    assert_quiet(PIM_OPERATOR, &["validate", "examples/"]);
    assert_quiet(
        PIM_OPERATOR,
        &["validate", "examples/", "--format", "sarif"],
    );
    assert_quiet(
        PIM_OPERATOR,
        &[
            "simulate",
            "examples/",
            "--start",
            "2026-11-01T09:00:00Z",
            "--request",
            "alice@contoso.com:finreport-senioranalyst:member:30m",
        ],
    );
    let dir = tempfile::tempdir().expect("a folder");
    let folder = dir.path().display().to_string();
    assert_quiet(PIM_OPERATOR, &["crds", "--write", &folder]);
    assert!(
        std::fs::read_dir(dir.path()).expect("the folder").count() > 0,
        "crds --write wrote no files"
    );
}

#[tokio::test]
async fn kubectl_pim_ends_quietly_on_a_closed_pipe() {
    let server = FakeApiServer::start().await.expect("the fake API server");
    let dir = tempfile::tempdir().expect("a folder");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: fake, cluster: {{server: \"{}\"}}}}]\nusers: [{{name: admin, user: {{}}}}]\ncontexts: [{{name: fake, context: {{cluster: fake, user: admin}}}}]\ncurrent-context: fake\n",
            server.url()
        ),
    )
    .expect("write the kubeconfig");
    let path = kubeconfig.display().to_string();
    tokio::task::spawn_blocking(move || {
        assert_quiet(KUBECTL_PIM, &["--help"]);
        assert_quiet(KUBECTL_PIM, &["--kubeconfig", &path, "eligible"]);
        assert_quiet(KUBECTL_PIM, &["--kubeconfig", &path, "status"]);
        assert_quiet(KUBECTL_PIM, &["--kubeconfig", &path, "audit", "-o", "csv"]);
    })
    .await
    .expect("the runs");
}
