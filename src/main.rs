//! The `pim-operator` binary: a thin command line over the library.

use std::process::ExitCode;

/// mimalloc rather than the C library's allocator: glibc's per-thread arenas left the operator
/// at 450 MB resident for a 190 MB heap at 10k requests, and the image's musl allocator is
/// slow under threads; one allocator everywhere measures as it ships (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};
use pim_operator::clock::{Clock, SystemClock};

#[derive(Parser)]
#[command(
    name = "pim-operator",
    version,
    about = "Privileged Identity Management for Kubernetes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator: controllers, metrics and health endpoints. Uses the in-cluster config or
    /// KUBECONFIG.
    Run {
        /// The operator's config file (YAML): directories, username mapping, resync, leader election.
        #[arg(long, env = "PIM_CONFIG", value_name = "FILE")]
        config: Option<std::path::PathBuf>,
    },
    /// Check manifests offline (schema, CEL rules, references, policy caps, conflicts) for pull
    /// requests. Exit code 0: clean; 1: findings; 2: could not run.
    Validate(pim_operator::cli::validate::Args),
    /// Replay manifests and planned requests through the real engine on virtual time, with the
    /// memory directory, and print the timeline. No cluster needed.
    Simulate(pim_operator::cli::simulate::Args),
    /// Print the CustomResourceDefinitions as YAML (apply with `kubectl apply -f -`).
    Crds {
        /// Write one file per CRD into this folder instead of printing them.
        #[arg(long, value_name = "DIR")]
        write: Option<std::path::PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => run_operator(config),
        Command::Validate(args) => validate(&args),
        Command::Simulate(args) => simulate(&args),
        Command::Crds { write: None } => match pim_operator::api::crd::to_yaml() {
            Ok(yaml) => print_then(&yaml, ExitCode::SUCCESS),
            Err(err) => {
                eprintln!("error: cannot render the CRDs as YAML: {err}");
                ExitCode::from(2)
            }
        },
        Command::Crds { write: Some(dir) } => match write_crds(&dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("error: {err}");
                ExitCode::from(2)
            }
        },
    }
}

/// Prints a command's output, then ends with `code`; a reader that closed the pipe early does
/// not change it (see `pim_operator::stdout`).
fn print_then(output: &str, code: ExitCode) -> ExitCode {
    match pim_operator::stdout::print(output) {
        Ok(()) => code,
        Err(err) => {
            eprintln!("error: cannot write the output: {err}");
            ExitCode::from(2)
        }
    }
}

fn validate(args: &pim_operator::cli::validate::Args) -> ExitCode {
    let now = args.now.unwrap_or_else(|| SystemClock.now());
    let report = pim_operator::cli::validate::validate_observed(&args.paths, &args.observed, now);
    match report.and_then(|r| Ok((r.render(args.format)?, r.exit_code()))) {
        Ok((output, code)) => print_then(&output, ExitCode::from(code)),
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(2)
        }
    }
}

fn simulate(args: &pim_operator::cli::simulate::Args) -> ExitCode {
    match pim_operator::cli::simulate::simulate(args, SystemClock.now()) {
        Ok(output) => print_then(&output, ExitCode::SUCCESS),
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(2)
        }
    }
}

fn write_crds(dir: &std::path::Path) -> Result<(), String> {
    let files = pim_operator::api::crd::files()
        .map_err(|e| format!("cannot render the CRDs as YAML: {e}"))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    for (name, yaml) in files {
        let path = dir.join(name);
        std::fs::write(&path, yaml).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        pim_operator::stdout::print(&format!("wrote {}\n", path.display()))
            .map_err(|e| format!("cannot write the output: {e}"))?;
    }
    Ok(())
}

fn run_operator(config: Option<std::path::PathBuf>) -> ExitCode {
    // JSON lines on stdout; audit records always, as objects (see `pim_operator::logging`).
    let subscriber =
        pim_operator::logging::subscriber(pim_operator::logging::filter(), std::io::stdout);
    if let Err(err) = tracing_subscriber::util::SubscriberInitExt::try_init(subscriber) {
        eprintln!("error: cannot start logging: {err}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(pim_operator::operator::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(1)
        }
    }
}
