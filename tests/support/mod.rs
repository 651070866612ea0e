//! Test support shared by the integration tests (`tests/it`): the operator harness, the Graph
//! look-alike, slapd, the LDAP proxy, the SMTP server, loopback helpers; and, here, running the
//! `pim-operator` binary and comparing its output with golden files in `tests/golden/`.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod graph;
pub mod ldap_proxy;
pub mod local;
pub mod operator;
pub mod slapd;
pub mod smtp;

use std::future::Future;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// How long a test waits for the operator to get somewhere: generous, since a loaded 2-core CI
/// machine runs many tests at once.
pub const WAIT: Duration = Duration::from_secs(40);

/// Polls `check` until it holds, failing the test after [`WAIT`]. The one such helper.
pub async fn eventually<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    eventually_within(WAIT, what, check).await
}

/// [`eventually`] with its own deadline, for scenarios with many objects.
pub async fn eventually_within<F, Fut>(wait: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// What one run of the binary gave.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `pim-operator ARGS` in `dir`.
pub fn run_in(dir: &Path, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_pim-operator"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run pim-operator");
    Run {
        code: out.status.code().expect("exit code"),
        stdout: String::from_utf8(out.stdout).expect("utf-8 stdout"),
        stderr: String::from_utf8(out.stderr).expect("utf-8 stderr"),
    }
}

/// Compares `actual` with `tests/golden/NAME`, or rewrites it when `UPDATE_GOLDEN` is set.
pub fn golden(name: &str, actual: &str) {
    let path = repo().join("tests/golden").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; create it with UPDATE_GOLDEN=1", path.display()));
    assert!(
        expected == actual,
        "output differs from {} (UPDATE_GOLDEN=1 rewrites it):\n--- expected\n{expected}\n--- actual\n{actual}",
        path.display()
    );
}
