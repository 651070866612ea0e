//! The admission webhook's latency over HTTPS (issue 21, item 5): the operator's webhook with
//! caches of 10k ActivationRequests and 12k EligibleAssignments, sent 500 AdmissionReviews a
//! second of creates, approvals and declarative objects. Prints a table, then the JSON summary.
//!
//! `cargo bench --bench admission -- --rate 500 --duration-secs 20 --requests 10000 --assignments 12000`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

/// The operator's own allocator (src/main.rs), so the webhook is measured as it ships.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use pim_testkit::admission_load::{self, Options};

fn usage() -> ! {
    eprintln!(
        "usage: admission [--rate R] [--duration-secs S] [--requests N] [--assignments M] [--groups G]\n\
         \x20                [--webhook-threads T] [--client-threads T]"
    );
    std::process::exit(2)
}

fn main() {
    let mut options = Options::default();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        // `cargo bench` passes --bench to every bench target.
        if flag == "--bench" {
            continue;
        }
        let Some(value) = args.next() else { usage() };
        let number = || value.parse::<f64>().unwrap_or_else(|_| usage());
        match flag.as_str() {
            "--rate" => options.rate = number(),
            "--duration-secs" => options.duration = Duration::from_secs_f64(number()),
            "--requests" => options.requests = number() as usize,
            "--assignments" => options.assignments = number() as usize,
            "--groups" => options.groups = number() as usize,
            "--webhook-threads" => options.webhook_threads = number() as usize,
            "--client-threads" => options.client_threads = number() as usize,
            _ => usage(),
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    match admission_load::run(options) {
        Ok(summary) => {
            print!("{}", summary.table());
            println!("{}", serde_json::to_string_pretty(&summary).unwrap());
        }
        Err(error) => {
            eprintln!("admission bench failed: {error}");
            std::process::exit(1);
        }
    }
}
