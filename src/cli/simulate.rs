//! `pim-operator simulate PATH... --request ... --approve ...`: the command line of
//! [`crate::simulate`]. Parses the plan flags, loads the manifests, runs, renders.

use std::path::PathBuf;

use jiff::Timestamp;

use super::members::MembersError;
use super::report::finding_line;
use crate::api::activation_request::Decision as Vote;
use crate::api::common::Role;
use crate::checks::{SchemaChecker, SchemaError};
use crate::core::{duration, time::add};
use crate::manifests::{LoadError, Manifests};
use crate::simulate::{
    PlannedDecision, PlannedExtension, PlannedRequest, Scenario, SimulateError, Timeline, run,
};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Manifest files or directories: the policies, groups and assignments (and any requests)
    /// to simulate under.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// A request to create at the start, named req-1, req-2, … in order. DURATION may be empty
    /// for the policy's maximum; START (an offset such as +2h, or an RFC 3339 time) schedules it.
    #[arg(long = "request", value_name = "USER:GROUP:ROLE:DURATION[@START]")]
    pub requests: Vec<String>,
    /// An extension of REQUEST (`kubectl pim extend REQUEST --by DURATION`), created at TIME
    /// (an offset such as +50m, or an RFC 3339 time; default: the start); named ext-1, ext-2, …
    /// in order. DURATION may be empty for the policy's maximum.
    #[arg(long = "extend", value_name = "REQUEST:DURATION[@TIME]")]
    pub extensions: Vec<String>,
    /// An approval, at TIME (an offset such as +15m, or an RFC 3339 time; default: the start).
    /// REQUEST may be REVIEW/ASSIGNMENT: a reviewer keeps an assignment in the running
    /// instance of an AccessReview of the manifests.
    #[arg(long = "approve", value_name = "USER:REQUEST[@TIME]")]
    pub approvals: Vec<String>,
    /// A denial, at TIME as for --approve (REVIEW/ASSIGNMENT denies in an access review).
    #[arg(long = "deny", value_name = "USER:REQUEST[@TIME]")]
    pub denials: Vec<String>,
    /// When to stop: a duration after the start, or an RFC 3339 time.
    #[arg(long, default_value = "48h", value_name = "DURATION|RFC3339")]
    pub until: String,
    /// When the simulation starts (default: now).
    #[arg(long, value_name = "RFC3339")]
    pub start: Option<Timestamp>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// The members each PimGroup's directory group has now (YAML: `GROUP: [alice, group:x]` or
    /// `GROUP: {member: [...], owner: [...]}`), to see what the first pass would do with them.
    #[arg(long, value_name = "FILE")]
    pub members: Option<PathBuf>,
    /// Take the current members from the cluster: each PimGroup's `status.unexplainedMembers`
    /// and `status.unexplainedOwners` (as listed under `standingAccess: Adopt` or `Report`).
    #[arg(long, conflicts_with = "members")]
    pub from_cluster: bool,
}

/// Why a simulation could not run (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum SimulateCliError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error(
        "the manifests have problems the API server would refuse; correct them first (`pim-operator validate` names each one and its fix):\n{0}"
    )]
    Manifests(String),
    #[error(transparent)]
    Simulate(#[from] SimulateError),
    #[error(transparent)]
    Members(#[from] MembersError),
    #[error("cannot render the timeline: {0}")]
    Render(#[from] serde_json::Error),
}

/// Runs `simulate` with `now` as the default start; returns the rendered timeline.
pub fn simulate(args: &Args, now: Timestamp) -> Result<String, SimulateCliError> {
    let timeline = timeline(args, now)?;
    Ok(match args.format {
        Format::Text => timeline.to_text(),
        Format::Json => format!("{}\n", serde_json::to_string_pretty(&timeline)?),
    })
}

/// The timeline of a run, for callers that want the data.
pub fn timeline(args: &Args, now: Timestamp) -> Result<Timeline, SimulateCliError> {
    let start = args.start.unwrap_or(now);
    let until = parse_time("--until", &args.until, start, true)?;
    let requests = args
        .requests
        .iter()
        .map(|r| parse_request(r, start))
        .collect::<Result<Vec<_>, _>>()?;
    let decisions = args
        .approvals
        .iter()
        .map(|a| (a, Vote::Approve))
        .chain(args.denials.iter().map(|d| (d, Vote::Deny)))
        .map(|(text, vote)| parse_decision(text, vote, start))
        .collect::<Result<Vec<_>, _>>()?;

    let extensions = args
        .extensions
        .iter()
        .map(|e| parse_extension(e, start))
        .collect::<Result<Vec<_>, _>>()?;

    let checker = SchemaChecker::new()?;
    let manifests = Manifests::load(&args.paths, &checker)?;
    if !manifests.findings.is_empty() {
        let listing: String = manifests.findings.iter().map(finding_line).collect();
        return Err(SimulateCliError::Manifests(listing));
    }
    let (existing, notes) = match (&args.members, args.from_cluster) {
        (Some(path), _) => (super::members::from_file(path)?, Vec::new()),
        (None, true) => super::members::from_cluster()?,
        (None, false) => Default::default(),
    };
    let mut timeline = run(Scenario {
        catalog: manifests.catalog(),
        requests,
        decisions,
        extensions,
        start,
        until,
        existing,
    })?;
    timeline.notes.extend(notes);
    Ok(timeline)
}

fn usage(message: String) -> SimulateCliError {
    SimulateCliError::Usage(message)
}

/// `USER:GROUP:ROLE:DURATION[@START]`.
pub fn parse_request(text: &str, start: Timestamp) -> Result<PlannedRequest, SimulateCliError> {
    let bad = |why: &str| {
        usage(format!(
            "--request {text:?}: {why}; expected USER:GROUP:ROLE:DURATION[@START], e.g. alice@contoso.com:finreport:member:30m@+1h"
        ))
    };
    let parts: Vec<&str> = text.splitn(4, ':').collect();
    let [user, group, role, rest] = parts[..] else {
        return Err(bad("four parts separated by ':' are needed"));
    };
    if user.is_empty() || group.is_empty() {
        return Err(bad("USER and GROUP must not be empty"));
    }
    let role = match role {
        "member" | "" => Role::Member,
        "owner" => Role::Owner,
        _ => return Err(bad("ROLE is member or owner")),
    };
    let (duration_text, at) = match rest.split_once('@') {
        Some((d, at)) => (d, Some(parse_time("--request START", at, start, false)?)),
        None => (rest, None),
    };
    let duration = if duration_text.is_empty() {
        None
    } else {
        duration::parse_positive("--request DURATION", duration_text)
            .map_err(|e| usage(format!("--request {text:?}: {e}")))?;
        Some(duration_text.to_owned())
    };
    Ok(PlannedRequest {
        user: user.to_owned(),
        group: group.to_owned(),
        role,
        duration,
        start_time: at,
    })
}

/// `REQUEST:DURATION[@TIME]`.
pub fn parse_extension(text: &str, start: Timestamp) -> Result<PlannedExtension, SimulateCliError> {
    let bad = |why: &str| {
        usage(format!(
            "--extend {text:?}: {why}; expected REQUEST:DURATION[@TIME], e.g. req-1:1h@+50m"
        ))
    };
    let Some((of, rest)) = text.split_once(':') else {
        return Err(bad("REQUEST and DURATION are separated by ':'"));
    };
    if of.is_empty() {
        return Err(bad("REQUEST must not be empty"));
    }
    let (duration_text, at) = match rest.split_once('@') {
        Some((d, at)) => (d, parse_time("--extend TIME", at, start, false)?),
        None => (rest, start),
    };
    let duration = if duration_text.is_empty() {
        None
    } else {
        duration::parse_positive("--extend DURATION", duration_text)
            .map_err(|e| usage(format!("--extend {text:?}: {e}")))?;
        Some(duration_text.to_owned())
    };
    Ok(PlannedExtension {
        of: of.to_owned(),
        duration,
        at,
    })
}

/// `USER:REQUEST[@TIME]`.
pub fn parse_decision(
    text: &str,
    decision: Vote,
    start: Timestamp,
) -> Result<PlannedDecision, SimulateCliError> {
    let flag = match decision {
        Vote::Approve => "--approve",
        Vote::Deny => "--deny",
    };
    let Some((approver, rest)) = text
        .split_once(':')
        .filter(|(a, r)| !a.is_empty() && !r.is_empty())
    else {
        return Err(usage(format!(
            "{flag} {text:?}: expected USER:REQUEST[@TIME], e.g. bob@contoso.com:req-1@+15m"
        )));
    };
    let (request, at) = match rest.split_once('@') {
        Some((request, at)) => (request, parse_time(flag, at, start, false)?),
        None => (rest, start),
    };
    Ok(PlannedDecision {
        approver: approver.to_owned(),
        request: request.to_owned(),
        decision,
        at,
    })
}

/// An offset from `start` (`+2h`; the `+` may be left out where `bare_offset`) or an RFC 3339 time.
fn parse_time(
    flag: &str,
    text: &str,
    start: Timestamp,
    bare_offset: bool,
) -> Result<Timestamp, SimulateCliError> {
    let offset = text.strip_prefix('+').or_else(|| {
        bare_offset
            .then_some(text)
            .filter(|t| !t.contains('T') || t.starts_with('P'))
    });
    if let Some(offset) = offset
        && let Ok(d) = duration::parse(flag, offset)
    {
        return Ok(add(start, d));
    }
    text.parse::<Timestamp>().map_err(|_| {
        usage(format!(
            "{flag}: {text:?} is neither an offset such as +2h nor an RFC 3339 time such as 2026-11-01T09:00:00Z"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn requests_parse_with_and_without_a_start() {
        let start = ts("2026-11-01T09:00:00Z");
        let r = parse_request("alice@contoso.com:fin:member:30m", start).unwrap();
        assert_eq!(
            (
                r.user.as_str(),
                r.group.as_str(),
                r.role,
                r.duration.as_deref(),
                r.start_time
            ),
            ("alice@contoso.com", "fin", Role::Member, Some("30m"), None)
        );
        let r = parse_request("alice:fin:owner:1h@+2h", start).unwrap();
        assert_eq!(
            (r.role, r.start_time),
            (Role::Owner, Some(ts("2026-11-01T11:00:00Z")))
        );
        let r = parse_request("alice:fin::@2026-11-02T10:00:00Z", start).unwrap();
        assert_eq!(
            (r.role, r.duration, r.start_time),
            (Role::Member, None, Some(ts("2026-11-02T10:00:00Z")))
        );
        for bad in [
            "alice:fin:member",
            "alice:fin:admin:1h",
            ":fin:member:1h",
            "alice:fin:member:soon",
            "alice:fin:member:1h@tomorrow",
        ] {
            let err = parse_request(bad, start).unwrap_err().to_string();
            assert!(err.starts_with("--request"), "{bad}: {err}");
        }
    }

    #[test]
    fn decisions_default_to_the_start() {
        let start = ts("2026-11-01T09:00:00Z");
        let d = parse_decision("bob@contoso.com:req-1", Vote::Approve, start).unwrap();
        assert_eq!(
            (d.approver.as_str(), d.request.as_str(), d.at),
            ("bob@contoso.com", "req-1", start)
        );
        let d = parse_decision("bob:req-2@+15m", Vote::Deny, start).unwrap();
        assert_eq!(
            (d.request.as_str(), d.decision, d.at),
            ("req-2", Vote::Deny, ts("2026-11-01T09:15:00Z"))
        );
        assert!(
            parse_decision("bob", Vote::Deny, start)
                .unwrap_err()
                .to_string()
                .starts_with("--deny")
        );
    }

    #[test]
    fn until_takes_a_bare_duration_or_a_time() {
        let start = ts("2026-11-01T09:00:00Z");
        assert_eq!(
            parse_time("--until", "48h", start, true).unwrap(),
            ts("2026-11-03T09:00:00Z")
        );
        assert_eq!(
            parse_time("--until", "P1D", start, true).unwrap(),
            ts("2026-11-02T09:00:00Z")
        );
        assert_eq!(
            parse_time("--until", "2026-11-01T10:00:00Z", start, true).unwrap(),
            ts("2026-11-01T10:00:00Z")
        );
        assert!(parse_time("--until", "later", start, true).is_err());
    }
}
