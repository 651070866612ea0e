//! The fake Kubernetes API server (src/fake_apiserver) as a process of its own, for the tools
//! that need one outside a test's address space: `hack/kind-e2e.sh --fake-apiserver` runs the
//! real kubectl, helm, kubectl-pim and pim-operator against it.
//!
//! It listens on 127.0.0.1, writes a kubeconfig for itself once it serves (so the file's
//! existence means "ready"), prints its URL, and runs until SIGTERM or Ctrl-C.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use pim_testkit::fake_apiserver::{FakeApiServer, Options};

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

async fn stopped() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = terminate => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
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
    stopped().await;
    server.shutdown().await;
    ExitCode::SUCCESS
}
