//! The load harness at DESIGN §12 size: `cargo bench --bench loadtest -- --requests 10000
//! --assignments 10000 --groups 500 --latency-ms 20`. Prints a JSON summary on stdout.
//!
//! The fake API server runs as a second process by default (`--apiserver-process 0`: in this
//! one): this very program, started again with `--fake-apiserver` first, so that one build
//! gives both and they share a profile.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

/// The operator's own allocator (src/main.rs), so the operator is measured as it ships.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use pim_testkit::loadtest::{self, Options, PriorityOptions, ServerProgram};

fn usage() -> ! {
    eprintln!(
        "usage: loadtest [--requests N] [--assignments M] [--groups G] [--latency-ms MS]\n\
         \x20               [--directory-concurrency C] [--write-rate W] [--operator-concurrency C]\n\
         \x20               [--idle-secs S] [--timeout-secs S] [--without-operator 1]\n\
         \x20               [--apiserver-process 0|1] [--removal-concurrency N]\n\
         \x20               [--priority-write-rate W --priority-pending P --priority-due D --priority-after-ms MS]\n\
         \x20               [--priority-pending-end-too 1] [--priority-wait-pending 1]"
    );
    std::process::exit(2)
}

fn main() -> std::process::ExitCode {
    if std::env::args().nth(1).as_deref() == Some("--fake-apiserver") {
        let args = std::env::args_os().skip(2);
        return pim_testkit::fake_apiserver::process::main(
            std::iter::once("fake-apiserver".into()).chain(args),
        );
    }
    let mut options = Options::default();
    let mut apart = true;
    let mut priority: Option<PriorityOptions> = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        // `cargo bench` passes --bench to every bench target.
        if flag == "--bench" {
            continue;
        }
        let Some(value) = args.next() else { usage() };
        let number = || value.parse::<f64>().unwrap_or_else(|_| usage());
        let p = || {
            priority.clone().unwrap_or(PriorityOptions {
                write_rate: 20.0,
                pending: 2000,
                due: 100,
                after: Duration::from_secs(3),
                pending_end_too: false,
                wait_pending: false,
            })
        };
        match flag.as_str() {
            "--requests" => options.requests = number() as usize,
            "--assignments" => options.assignments = number() as usize,
            "--groups" => options.groups = number() as usize,
            "--latency-ms" => options.latency = Duration::from_secs_f64(number() / 1000.0),
            "--directory-concurrency" => options.directory_concurrency = Some(number() as usize),
            "--write-rate" => options.write_rate = Some(number()),
            "--operator-concurrency" => options.operator_concurrency = number() as u16,
            "--without-operator" => options.without_operator = number() != 0.0,
            "--apiserver-process" => apart = number() != 0.0,
            "--removal-concurrency" => options.removal_concurrency = Some(number() as u16),
            "--idle-secs" => options.idle = Duration::from_secs_f64(number()),
            "--timeout-secs" => options.timeout = Duration::from_secs_f64(number()),
            "--priority-write-rate" => {
                priority = Some(PriorityOptions {
                    write_rate: number(),
                    ..p()
                })
            }
            "--priority-pending" => {
                priority = Some(PriorityOptions {
                    pending: number() as usize,
                    ..p()
                })
            }
            "--priority-due" => {
                priority = Some(PriorityOptions {
                    due: number() as usize,
                    ..p()
                })
            }
            "--priority-pending-end-too" => {
                priority = Some(PriorityOptions {
                    pending_end_too: number() != 0.0,
                    ..p()
                })
            }
            "--priority-wait-pending" => {
                priority = Some(PriorityOptions {
                    wait_pending: number() != 0.0,
                    ..p()
                })
            }
            "--priority-after-ms" => {
                priority = Some(PriorityOptions {
                    after: Duration::from_secs_f64(number() / 1000.0),
                    ..p()
                })
            }
            _ => usage(),
        }
    }
    options.priority = priority;
    if apart {
        options.apiserver_process = Some(ServerProgram {
            program: std::env::current_exe().expect("the harness's own path"),
            args: vec!["--fake-apiserver".into()],
        });
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name("harness")
        .enable_all()
        .build()
        .unwrap();
    match runtime.block_on(loadtest::run(options)) {
        Ok(summary) => {
            println!("{}", serde_json::to_string_pretty(&summary).unwrap());
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("loadtest failed: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
