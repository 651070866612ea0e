//! The fake API server as a process of its own: the `fake-apiserver` binary, and the load
//! harness's API server when it runs apart from the operator (`benches/loadtest.rs`
//! re-executes itself with `--fake-apiserver`), so that the operator's memory and CPU are
//! measured without the server's.
//!
//! It listens on 127.0.0.1, writes a kubeconfig for itself once it serves (so the file's
//! existence means "ready"), prints its URL as the first line on stdout, and runs until SIGTERM
//! or Ctrl-C. With `--control-stdin` it also takes one command a line on stdin and answers each
//! with one JSON line on stdout, and stops when stdin closes (its parent is gone):
//!
//! - `clock RFC3339`: the server's clock stands at that instant from now on (the harness's
//!   manual clock; creation timestamps must be on the operator's timeline);
//! - `observe SKIP`: `{"writes": N, "requests": N, "by": {LABEL: N}}`, the writes logged so far,
//!   the requests served so far, and the writes after the first SKIP counted by
//!   [`WriteRecord::label`](super::WriteRecord::label).

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

use super::{FakeApi, FakeApiServer, Options};
use crate::clock::ManualClock;

#[derive(Debug, Parser)]
#[command(
    name = "fake-apiserver",
    about = "An in-memory fake Kubernetes API server on 127.0.0.1, for tests"
)]
struct Args {
    /// Where to listen (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Write a kubeconfig for this server here once it listens.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// An admission webhook Service and the local address that stands in for it, as
    /// NAMESPACE/NAME=127.0.0.1:PORT (repeatable).
    #[arg(long = "service", value_parser = parse_service)]
    services: Vec<(String, SocketAddr)>,
    /// The user requests without impersonation act as (SelfSubjectReview, admission).
    #[arg(long, default_value = "kubernetes-admin")]
    username: String,
    /// That user's groups (repeatable).
    #[arg(long = "group", default_values = ["system:masters", "system:authenticated"])]
    groups: Vec<String>,
    /// Take commands on stdin (`clock`, `observe`) and stop when it closes; for the harness.
    #[arg(long)]
    control_stdin: bool,
}

fn parse_service(raw: &str) -> Result<(String, SocketAddr), String> {
    let (service, address) = raw
        .split_once('=')
        .ok_or_else(|| format!("--service {raw:?}: expected NAMESPACE/NAME=ADDRESS"))?;
    if service.split('/').count() != 2 || service.split('/').any(str::is_empty) {
        return Err(format!(
            "--service {raw:?}: {service:?} is not NAMESPACE/NAME"
        ));
    }
    let address = address.parse().map_err(|_| {
        format!("--service {raw:?}: {address:?} is not an address such as 127.0.0.1:8443")
    })?;
    Ok((service.to_owned(), address))
}

fn kubeconfig(url: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: fake-apiserver\n  cluster:\n    server: {url}\nusers:\n- name: admin\n  user: {{}}\ncontexts:\n- name: fake-apiserver\n  context:\n    cluster: fake-apiserver\n    user: admin\ncurrent-context: fake-apiserver\n"
    )
}

/// Writes through a temporary file, so a reader never sees half a kubeconfig.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    std::fs::write(&partial, text)?;
    std::fs::rename(&partial, path)
}

async fn stopped(stdin_closed: Option<tokio::sync::oneshot::Receiver<()>>) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    let closed = async {
        match stdin_closed {
            // An error too means the reader is gone.
            Some(closed) => drop(closed.await),
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = terminate => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = closed => {}
    }
}

/// The server's `main`, from its command line (the first item is the program name).
pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let args = match Args::try_parse_from(args) {
        Ok(args) => args,
        Err(e) => {
            // clap prints help and usage errors itself, with the right exit code.
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("fake-apiserver: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(serve(args))
}

async fn serve(args: Args) -> ExitCode {
    let options = Options {
        listen: args.listen,
        services: args.services.into_iter().collect::<HashMap<_, _>>(),
        username: args.username,
        groups: args.groups,
        ..Options::default()
    };
    let server = match FakeApiServer::start_with(options).await {
        Ok(server) => server,
        Err(e) => {
            eprintln!("fake-apiserver: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(path) = &args.kubeconfig
        && let Err(e) = write_atomically(path, &kubeconfig(server.url()))
    {
        eprintln!("fake-apiserver: cannot write {}: {e}", path.display());
        return ExitCode::FAILURE;
    }
    println!("{}", server.url());
    let stdin_closed = args.control_stdin.then(|| {
        let (closed, on_close) = tokio::sync::oneshot::channel();
        let handle = server.handle();
        // Plain blocking reads: the commands are few, and the handle's calls are synchronous.
        std::thread::spawn(move || {
            control(&handle, std::io::stdin().lock(), std::io::stdout());
            let _ = closed.send(());
        });
        on_close
    });
    stopped(stdin_closed).await;
    server.shutdown().await;
    ExitCode::SUCCESS
}

/// Answers commands until `input` ends or `output` cannot be written.
fn control(api: &FakeApi, input: impl BufRead, mut output: impl Write) {
    let mut clock: Option<Arc<ManualClock>> = None;
    for line in input.lines() {
        let Ok(line) = line else { return };
        let answer = command(api, &mut clock, line.trim());
        if writeln!(output, "{answer}")
            .and_then(|()| output.flush())
            .is_err()
        {
            return;
        }
    }
}

fn command(api: &FakeApi, clock: &mut Option<Arc<ManualClock>>, line: &str) -> serde_json::Value {
    let (verb, argument) = line.split_once(' ').unwrap_or((line, ""));
    match verb {
        "clock" => match argument.parse::<jiff::Timestamp>() {
            Ok(at) => {
                match clock {
                    Some(clock) => clock.set(at),
                    None => {
                        let manual = Arc::new(ManualClock::new(at));
                        api.set_clock(manual.clone());
                        *clock = Some(manual);
                    }
                }
                serde_json::json!({ "ok": true })
            }
            Err(e) => serde_json::json!({ "error": format!("clock {argument:?}: {e}") }),
        },
        "observe" => match argument.parse::<usize>() {
            Ok(skip) => {
                let writes = api.writes();
                let mut by = BTreeMap::<String, usize>::new();
                for write in writes.iter().skip(skip) {
                    *by.entry(write.label()).or_default() += 1;
                }
                serde_json::json!({
                    "writes": writes.len(),
                    "requests": api.requests().total(),
                    "by": by,
                })
            }
            Err(e) => serde_json::json!({ "error": format!("observe {argument:?}: {e}") }),
        },
        _ => serde_json::json!({ "error": format!("unknown command {line:?}") }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn commands_set_the_clock_and_report_writes() {
        let server = FakeApiServer::start().await.unwrap();
        let input = "clock 2026-03-02T09:00:00Z\nobserve 0\nclock soon\nfly\n";
        let mut output = Vec::new();
        control(&server.handle(), input.as_bytes(), &mut output);
        let lines: Vec<serde_json::Value> = String::from_utf8(output)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0], serde_json::json!({ "ok": true }));
        assert_eq!(lines[1]["writes"], 0);
        assert!(lines[2]["error"].as_str().unwrap().contains("soon"));
        assert!(lines[3]["error"].as_str().unwrap().contains("fly"));
        assert_eq!(
            server.handle().shared.clock_now().to_string(),
            "2026-03-02T09:00:00Z",
            "the server stamps the harness's time"
        );
        server.shutdown().await;
    }
}
