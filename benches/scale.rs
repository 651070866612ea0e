//! `validate` and `simulate` at scale (issue 21, item 6): generates a GitOps repository of N
//! manifests, then times the release binary on it, as a user would run it.
//!
//! `cargo bench --bench scale -- --sizes 1000,10000,50000 --runs 3`
//!
//! The repository has one folder per application: its AccessPolicy, its PimGroup and its
//! EligibleAssignments (98 per group, one file). `simulate` gets N planned requests as
//! ActivationRequest manifests in `kind: List` files of 1,000 (with the requester the webhook would stamp),
//! since N `--request` flags do not fit on a command line at 50k. Requests start in one of 48
//! half-hour slots of a day, and last 1 to 8 hours, so a run visits a few hundred instants.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Assignments per group: with its policy and group, 100 manifests per application.
const PER_GROUP: usize = 98;
/// The simulation's start, and validate's `--now`.
const START: &str = "2026-12-01T08:00:00Z";
const UNTIL: &str = "48h";
/// Requests per List file.
const BATCH: usize = 1000;

fn usage() -> ! {
    eprintln!(
        "usage: scale [--sizes 1000,10000,50000] [--runs R] [--only validate|simulate] [--keep DIR]"
    );
    std::process::exit(2)
}

fn main() {
    let mut sizes = vec![1_000, 10_000, 50_000];
    let mut runs = 3;
    let mut only: Option<String> = None;
    let mut keep: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        // `cargo bench` passes --bench to every bench target.
        if flag == "--bench" {
            continue;
        }
        let Some(value) = args.next() else { usage() };
        match flag.as_str() {
            "--sizes" => {
                sizes = value
                    .split(',')
                    .map(|s| s.trim().parse().unwrap_or_else(|_| usage()))
                    .collect()
            }
            "--runs" => runs = value.parse().unwrap_or_else(|_| usage()),
            "--only" => only = Some(value),
            // Writes the inputs of the first size there and stops, for a profiler.
            "--keep" => keep = Some(PathBuf::from(value)),
            _ => usage(),
        }
    }
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_pim-operator"));
    println!("binary: {}", binary.display());
    println!("runs per figure: {runs} (the median is shown; RSS is the child's peak)");
    println!(
        "{:>8} {:>9} {:>12} {:>10} {:>9} {:>12} {:>10}",
        "N", "validate", "per 1k", "RSS", "simulate", "per 1k", "RSS"
    );
    for n in sizes {
        let dir = tempfile::tempdir().expect("a temp dir");
        let root = keep.clone().unwrap_or_else(|| dir.path().to_owned());
        let repo = root.join("repo");
        let requests = root.join("requests");
        generate(&repo, n);
        std::fs::create_dir_all(&requests).expect("create the folder");
        for (i, list) in planned_requests(n).iter().enumerate() {
            std::fs::write(requests.join(format!("batch-{i:03}.yaml")), list).expect("write");
        }
        if keep.is_some() {
            println!("inputs written to {}", root.display());
            return;
        }
        let v = (only.as_deref() != Some("simulate")).then(|| {
            measure(runs, || {
                let mut c = Command::new(&binary);
                c.args(["validate", "--now", START]).arg(&repo);
                c
            })
        });
        let s = (only.as_deref() != Some("validate")).then(|| {
            measure(runs, || {
                let mut c = Command::new(&binary);
                c.args(["simulate", "--start", START, "--until", UNTIL])
                    .arg(&repo)
                    .arg(&requests);
                c
            })
        });
        let show = |m: &Option<(Duration, Option<u64>)>| match m {
            Some((wall, rss)) => format!(
                "{:>8.3}s {:>10.1}ms {:>10}",
                wall.as_secs_f64(),
                wall.as_secs_f64() * 1000.0 / (n as f64 / 1000.0),
                rss.map_or("-".to_owned(), |kb| format!("{} MB", kb / 1024))
            ),
            None => format!("{:>9} {:>12} {:>10}", "-", "-", "-"),
        };
        println!("{n:>8} {} {}", show(&v), show(&s));
    }
}

/// Runs the command `runs` times; the median wall time and the largest peak RSS (kB).
/// Peak RSS comes from GNU time (`wait4`'s rusage) when it is installed.
fn measure(runs: usize, command: impl Fn() -> Command) -> (Duration, Option<u64>) {
    let time = Path::new("/usr/bin/time");
    let mut walls = Vec::new();
    let mut rss = None;
    for _ in 0..runs.max(1) {
        let report = tempfile::NamedTempFile::new().expect("a temp file");
        let inner = command();
        let what = format!("{:?}", inner.get_args().collect::<Vec<_>>());
        let mut c = if time.exists() {
            let mut c = Command::new(time);
            c.arg("-f").arg("%M").arg("-o").arg(report.path());
            c.arg(inner.get_program()).args(inner.get_args());
            c
        } else {
            inner
        };
        let started = Instant::now();
        let output = c
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .expect("run the binary");
        walls.push(started.elapsed());
        // validate exits 1 on findings; anything else is a failed run.
        if !matches!(output.status.code(), Some(0 | 1)) {
            panic!(
                "{what} failed: {}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        if output.status.code() == Some(1) {
            eprintln!(
                "note: exit 1 (findings): {}",
                String::from_utf8_lossy(&output.stdout)
                    .lines()
                    .take(5)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        let kb = std::fs::read_to_string(report.path())
            .ok()
            .and_then(|t| t.lines().last()?.trim().parse::<u64>().ok());
        rss = rss.max(kb);
    }
    walls.sort();
    (walls[walls.len() / 2], rss)
}

/// Writes a repository of `n` manifests (rounded up to whole applications of 100).
fn generate(repo: &Path, n: usize) {
    for g in 0..groups(n) {
        let app = repo.join(format!("apps/app-{g:05}"));
        std::fs::create_dir_all(&app).expect("create the folder");
        std::fs::write(app.join("policy.yaml"), policy(g)).expect("write");
        std::fs::write(app.join("group.yaml"), group(g)).expect("write");
        let mut out = String::new();
        for a in 0..PER_GROUP {
            if a > 0 {
                out.push_str("---\n");
            }
            out.push_str(&assignment(g, a));
        }
        std::fs::write(app.join("assignments.yaml"), out).expect("write");
    }
}

fn groups(n: usize) -> usize {
    n.div_ceil(PER_GROUP + 2)
}

fn policy(g: usize) -> String {
    format!(
        r#"# Role settings of app-{g:05}'s operator role.
apiVersion: pim.dev/v1alpha1
kind: AccessPolicy
metadata:
  name: app-{g:05}
spec:
  description: Just-in-time access to the operator role of app-{g:05}.
  activation:
    maxDuration: 8h
    requireJustification: true
    requireTicket: false
    requireMfa: false
    maxStartDelay: 7d
  assignment:
    allowPermanentEligible: false
    maxEligibleDuration: 365d
    allowPermanentActive: false
    maxActiveDuration: 30d
    requireJustification: true
  notifications:
    admins:
      - app-{g:05}-admins@contoso.com
    expiringSoonLead: 5m
    activated:
      admins: true
      subject: true
    ended:
      admins: true
  retention: 90d
"#
    )
}

fn group(g: usize) -> String {
    format!(
        r#"apiVersion: pim.dev/v1alpha1
kind: PimGroup
metadata:
  name: app-{g:05}
spec:
  directory: entra
  group:
    displayName: App-{g:05}-Operators-SecureAccess
  roles:
    member:
      policy: app-{g:05}
  standingAccess: Remove
"#
    )
}

/// One in ten is a standing (Active) assignment for at most the policy's 30 days.
fn assignment(g: usize, a: usize) -> String {
    let (kind, duration) = if a.is_multiple_of(10) {
        ("Active", "30d")
    } else {
        ("Eligible", "180d")
    };
    let start = if a.is_multiple_of(10) {
        "2026-11-20T09:00:00Z"
    } else {
        "2026-11-01T09:00:00Z"
    };
    format!(
        r#"apiVersion: pim.dev/v1alpha1
kind: EligibleAssignment
metadata:
  name: app-{g:05}-user-{a:03}
spec:
  group: app-{g:05}
  role: member
  principal:
    user: {}
  type: {kind}
  schedule:
    start: "{start}"
    duration: {duration}
  justification: On call for app-{g:05} (OPS-{a}).
"#,
        user(g, a)
    )
}

fn user(g: usize, a: usize) -> String {
    format!("user-{a:03}.app-{g:05}@contoso.com")
}

/// `n` requests as `kubectl get ar -o yaml` would list them before the operator saw them:
/// each by an eligible user of its group, starting in one of 48 half-hour slots. One List per
/// `BATCH`: the YAML reader refuses a document of more than 250,000 nodes (about 12k requests).
fn planned_requests(n: usize) -> Vec<String> {
    let groups = groups(n);
    let mut lists = Vec::new();
    let mut out = String::new();
    for i in 0..n {
        if i.is_multiple_of(BATCH) {
            if !out.is_empty() {
                lists.push(std::mem::take(&mut out));
            }
            out.push_str("apiVersion: v1\nkind: List\nitems:\n");
        }
        let g = i % groups;
        // Eligible users only (not the standing ones), each asking once per slot at most.
        let a = 1 + (i / groups) % (PER_GROUP - 1);
        let a = if a.is_multiple_of(10) { a + 1 } else { a };
        let slot = i % 48;
        let hours = 1 + i % 8;
        let start = add_minutes(slot * 30);
        write!(
            out,
            r#"  - apiVersion: pim.dev/v1alpha1
    kind: ActivationRequest
    metadata:
      name: req-{i:06}
    spec:
      group: app-{g:05}
      role: member
      duration: {hours}h
      startTime: "{start}"
      justification: Planned maintenance MNT-{i}.
      requester:
        username: {user}
      principal: {user}
"#,
            user = user(g, a.min(PER_GROUP - 1))
        )
        .expect("write to a string");
    }
    lists.push(out);
    lists
}

fn add_minutes(minutes: usize) -> String {
    let start: jiff::Timestamp = START.parse().expect("START is RFC 3339");
    let t = start + jiff::SignedDuration::from_mins(minutes as i64);
    t.to_string()
}
