//! The `kubectl-pim` binary, a kubectl plugin (`kubectl pim ...`): a thin main over
//! `pim_operator::kubectl_pim`.

use std::process::ExitCode;

use pim_operator::clock::SystemClock;
use pim_operator::kubectl_pim::{self, CliError, Parsed};

fn main() -> ExitCode {
    // Arguments that are not UTF-8 are passed on lossily rather than panicking.
    let args = std::env::args_os().map(|a| a.to_string_lossy().into_owned());
    let cli = match kubectl_pim::parse(args) {
        Ok(Parsed::Info(text)) => {
            return match pim_operator::stdout::print(&text) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => report(&CliError::Io(err)),
            };
        }
        Ok(Parsed::Run(cli)) => cli,
        Err(err) => return report(&err),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(kubectl_pim::EXIT_FAILED);
        }
    };
    let outcome = runtime.block_on(async {
        let client = kubectl_pim::connect(&cli).await?;
        let mut out = std::io::stdout();
        kubectl_pim::execute(&cli, &client, &SystemClock, &mut out).await
    });
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(err) => report(&err),
    }
}

fn report(err: &CliError) -> ExitCode {
    match err {
        // The reader closed the pipe (`kubectl pim audit | head`): not a failure, and nothing
        // more to say (see `pim_operator::stdout`).
        CliError::Io(e) if pim_operator::stdout::is_closed_pipe(e) => return ExitCode::SUCCESS,
        // clap's own text already says "error:" and shows the usage.
        CliError::Usage(text) => eprint!("{text}"),
        other => eprintln!("error: {other}"),
    }
    ExitCode::from(err.exit_code())
}
