//! `kubectl pim activate GROUP`: checks, creates the request, and with `--wait` follows it.

use std::io::Write;

use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};

use super::cluster::load_catalog_or_note;
use super::eligibility::{
    covering_eligibility, not_eligible_message, unconfirmed_group_assignments,
};
use super::error::{CliError, EXIT_OK, api_status};
use super::identity::Me;
use super::render::{phase_detail, reason_and_message, when};
use super::{ActivateArgs, Context};
use crate::api::activation_request::{ActivationRequestSpec, Ticket};
use crate::api::common::Principal;
use crate::api::{ActivationRequest, Phase};
use crate::checks::{Finding, PimObject, Severity, check_object, rules};
use crate::core::activation::{Requested, requested_start};
use crate::core::duration;
use crate::core::policy::Policy;
use crate::core::time::add;
use crate::engine::{Catalog, ResolvedTarget};

pub async fn activate(
    ctx: &Context<'_>,
    me: &Me,
    args: &ActivateArgs,
    out: &mut impl Write,
) -> Result<u8, CliError> {
    let now = ctx.clock.now();
    let group = args.group.trim();
    let ticket = args
        .ticket
        .as_deref()
        .map(parse_ticket)
        .transpose()
        .map_err(CliError::Invalid)?;
    let spec = ActivationRequestSpec {
        group: group.to_owned(),
        role: args.role.map(Into::into),
        duration: args.duration.as_deref().map(|d| d.trim().to_owned()),
        justification: given_text(args.justification.as_deref()),
        ticket,
        start_time: args.start.map(Time),
        // requester, principal and approvals are the webhook's and the approvers' to write.
        ..Default::default()
    };
    let request = ActivationRequest {
        metadata: ObjectMeta {
            generate_name: Some(format!("{group}-")),
            ..Default::default()
        },
        spec,
        status: None,
    };

    if let Some(catalog) =
        load_catalog_or_note(ctx.client, out, "the eligibility check before creating").await?
    {
        check(&catalog, me, &request, now, out)?;
    }

    let api: Api<ActivationRequest> = Api::all(ctx.client.clone());
    let created = api
        .create(&PostParams::default(), &request)
        .await
        .map_err(|e| CliError::api(&format!("create an ActivationRequest for {group}"), e))?;
    let name = created.metadata.name.clone().unwrap_or_default();
    let role = request.spec.role();
    let length = args.duration.as_deref().map_or_else(
        || "the policy's maximum".to_owned(),
        |d| d.trim().to_owned(),
    );
    writeln!(
        out,
        "activationrequest/{name} created: the {role} role of {group} for {length}{}",
        args.start
            .map(|s| format!(", from {}", when(s, now)))
            .unwrap_or_default()
    )?;
    if !args.wait {
        writeln!(
            out,
            "Follow it with `kubectl pim status {name}`, or wait with `kubectl wait --for=condition=Active activationrequest/{name}`."
        )?;
        return Ok(EXIT_OK);
    }
    follow(&api, &name, args.timeout, ctx.clock, out).await
}

/// A text option as given, trimmed; absent when blank.
pub fn given_text(text: Option<&str>) -> Option<String> {
    text.map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
}

/// Checks what the caller can know before creating: eligibility at the start, and the request
/// against its policy as the admission webhook checks it. Prints notes; fails with the reason
/// when it cannot work.
fn check(
    catalog: &Catalog,
    me: &Me,
    request: &ActivationRequest,
    now: Timestamp,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let spec = &request.spec;
    let (group, role) = (spec.group.as_str(), spec.role());
    let at = requested_start(spec, now);
    let target = catalog.target(group, role);
    let (policy_name, policy) = match &target {
        ResolvedTarget::Found {
            policy_name,
            policy,
        } => (policy_name, policy.as_ref()),
        ResolvedTarget::GroupNotFound | ResolvedTarget::RoleNotManaged => {
            return Err(CliError::NotEligible(not_eligible_message(
                catalog, me, group, role, at, now,
            )));
        }
        ResolvedTarget::PolicyNotFound { policy_name } => {
            return Err(CliError::Invalid(format!(
                "PimGroup {group:?} names AccessPolicy {policy_name:?} for the {role} role, and \
                 it does not exist, so nobody can activate; tell your platform team."
            )));
        }
        ResolvedTarget::PolicyInvalid {
            policy_name,
            problem,
        } => {
            return Err(CliError::Invalid(format!(
                "AccessPolicy {policy_name:?} of {group:?} is invalid ({problem}), so nobody can \
                 activate; tell your platform team."
            )));
        }
    };
    match covering_eligibility(catalog, me, group, role, at, now) {
        Some(found) => {
            // Created now, as far as the policy's maxStartDelay is concerned.
            let window_end = Requested::read(spec, policy, Some(now))
                .ok()
                .map(|r| add(at, r.duration.min(policy.max_activation)));
            if let (Some(ends), Some(window_end)) = (found.end, window_end)
                && ends < window_end
            {
                writeln!(
                    out,
                    "note: your assignment {} ends {}; the access will end then.",
                    found.assignment,
                    when(ends, now)
                )?;
            }
        }
        None => {
            let unconfirmed = unconfirmed_group_assignments(catalog, me, group, role, at, now);
            if unconfirmed.is_empty() {
                return Err(CliError::NotEligible(not_eligible_message(
                    catalog, me, group, role, at, now,
                )));
            }
            writeln!(
                out,
                "note: you are eligible only if you belong to a directory group of {}, which your \
                 Kubernetes groups do not show; the operator checks the directory.",
                unconfirmed.join(", ")
            )?;
        }
    }
    // The webhook's own check of a new request. The sign-in (MFA, authentication) is judged
    // from the caller's token at admission, which only the API server sees: noted below.
    let findings = check_object(catalog, &PimObject::ActivationRequest(request.clone()), now);
    let (errors, warnings): (Vec<_>, Vec<_>) = findings
        .into_iter()
        .filter(|f| !f.path.starts_with("spec.requester"))
        .partition(|f| f.severity == Severity::Error);
    for warning in &warnings {
        writeln!(out, "note: {}", hint(warning, policy, now))?;
    }
    if !errors.is_empty() {
        let hints: Vec<String> = errors.iter().map(|f| hint(f, policy, now)).collect();
        let text = match hints.as_slice() {
            [one] => format!("AccessPolicy {policy_name:?} refuses this request: {one}."),
            many => format!(
                "AccessPolicy {policy_name:?} refuses this request:\n{}",
                many.iter()
                    .map(|h| format!("  - {h}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
        };
        return Err(CliError::Invalid(text));
    }
    if policy.require_mfa {
        writeln!(
            out,
            "note: AccessPolicy {policy_name:?} requires multi-factor authentication; the API \
             server refuses the request if your sign-in carried none."
        )?;
    }
    if let Some(approval) = &policy.approval {
        let approvers: Vec<String> = approval
            .approvers
            .iter()
            .filter_map(|a| match a.resolve()? {
                Principal::User(u) => Some(format!("user:{u}")),
                Principal::Group(g) => Some(format!("group:{g}")),
            })
            .collect();
        writeln!(
            out,
            "note: this needs {} approval(s) within {}, from {}.",
            approval.min_approvals,
            duration::format(approval.timeout),
            approvers.join(", ")
        )?;
    }
    Ok(())
}

/// What is wrong, and what to change on the command line: the flag, not the spec field the
/// webhook's remedy names.
fn hint(finding: &Finding, policy: &Policy, now: Timestamp) -> String {
    let max = duration::format(policy.max_activation);
    let remedy = match (finding.path.as_str(), finding.rule) {
        ("spec.justification", _) => "add --justification \"why you need it\"".to_owned(),
        ("spec.ticket", id) if id == rules::TICKET_REQUIRED.id => {
            "add --ticket SYSTEM:NUMBER (e.g. --ticket jira:OPS-123)".to_owned()
        }
        ("spec.duration", id) if id == rules::DURATION_EXCEEDS_MAXIMUM.id => {
            format!("ask for {max} or less with --duration, or leave it out to get {max}")
        }
        ("spec.startTime", _) => format!(
            "pass --start {} or earlier (at most the policy's maxStartDelay of {} from now)",
            add(now, policy.max_start_delay),
            duration::format(policy.max_start_delay)
        ),
        _ => finding
            .hint
            .replace("spec.duration", "--duration")
            .replace("spec.startTime", "--start")
            .replace("spec.ticket", "--ticket"),
    };
    format!("{}; {remedy}", finding.message)
}

/// `SYSTEM:NUMBER`.
pub fn parse_ticket(text: &str) -> Result<Ticket, String> {
    match text.trim().split_once(':') {
        Some((system, number)) if !system.trim().is_empty() && !number.trim().is_empty() => {
            Ok(Ticket {
                system: system.trim().to_owned(),
                number: number.trim().to_owned(),
            })
        }
        _ => Err(format!(
            "--ticket {text:?}: write the ticket as SYSTEM:NUMBER, e.g. jira:OPS-123"
        )),
    }
}

/// Follows the request by watch until it is Active (exit 0) or ends (an error naming the
/// reason), printing each phase it enters. A zero `timeout` waits forever.
pub async fn follow(
    api: &Api<ActivationRequest>,
    name: &str,
    timeout: SignedDuration,
    clock: &dyn crate::clock::Clock,
    out: &mut impl Write,
) -> Result<u8, CliError> {
    // The phase last printed; `None` until the first event.
    let mut last: Option<Option<Phase>> = None;
    let limit = std::time::Duration::try_from(timeout).unwrap_or(std::time::Duration::MAX);
    if limit.is_zero() {
        return watch_phases(api, name, clock, &mut last, out).await;
    }
    let outcome = tokio::time::timeout(limit, watch_phases(api, name, clock, &mut last, out)).await;
    match outcome {
        Ok(result) => result,
        Err(_) => Err(CliError::WaitTimeout {
            name: name.to_owned(),
            phase: last
                .flatten()
                .map_or_else(|| "Pending".to_owned(), |p| p.to_string()),
            timeout: duration::format(timeout),
        }),
    }
}

async fn watch_phases(
    api: &Api<ActivationRequest>,
    name: &str,
    clock: &dyn crate::clock::Clock,
    last: &mut Option<Option<Phase>>,
    out: &mut impl Write,
) -> Result<u8, CliError> {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = watcher::watcher(api.clone(), config)
        .default_backoff()
        .boxed();
    let mut seen_in_listing = false;
    // Seen without a status for this long, the operator is probably not running: say so once.
    let hint_at = add(clock.now(), NO_STATUS_HINT_AFTER);
    let mut jumps = clock.jumps();
    let mut hinted = false;
    loop {
        let awaiting_status = *last == Some(None) && !hinted;
        let event = if awaiting_status {
            tokio::select! {
                event = events.next() => event,
                () = until(clock, hint_at, jumps.as_mut()) => {
                    if clock.now() >= hint_at {
                        hinted = true;
                        writeln!(
                            out,
                            "{name}: Pending (no status from the operator after {}: is it running?)",
                            duration::format(NO_STATUS_HINT_AFTER)
                        )?;
                    }
                    continue;
                }
            }
        } else {
            events.next().await
        };
        let Some(event) = event else {
            break;
        };
        let request = match event {
            Ok(Event::Apply(r) | Event::InitApply(r)) => {
                seen_in_listing = true;
                r
            }
            Ok(Event::Delete(_)) => {
                return Err(CliError::Deleted {
                    name: name.to_owned(),
                });
            }
            Ok(Event::Init) => {
                seen_in_listing = false;
                continue;
            }
            Ok(Event::InitDone) => {
                if !seen_in_listing {
                    return Err(CliError::Deleted {
                        name: name.to_owned(),
                    });
                }
                continue;
            }
            Err(e) => {
                // Access problems do not heal by retrying; everything else does (with backoff).
                if let watcher::Error::InitialListFailed(inner)
                | watcher::Error::WatchStartFailed(inner) = &e
                    && api_status(inner).is_some_and(|s| matches!(s.code, 401 | 403 | 404))
                {
                    return Err(CliError::api(&format!("watch {name}"), inner_clone(inner)));
                }
                continue;
            }
        };
        let phase = request.status.as_ref().and_then(|s| s.phase);
        if *last == Some(phase) {
            continue;
        }
        *last = Some(phase);
        let (reason, message) = phase_detail(&request);
        let detail = reason_and_message(&reason, &message);
        let phase_text = phase.map_or_else(|| "Pending".to_owned(), |p| p.to_string());
        if detail.is_empty() {
            writeln!(out, "{name}: {phase_text}")?;
        } else {
            writeln!(out, "{name}: {phase_text} ({detail})")?;
        }
        match phase {
            Some(Phase::Active) => {
                let until = request
                    .status
                    .as_ref()
                    .and_then(|s| s.expires_at.as_ref())
                    .map(|t| format!(" until {}", when(t.0, clock.now())))
                    .unwrap_or_default();
                writeln!(
                    out,
                    "Access is active{until}. End it early with `kubectl pim deactivate {name}`."
                )?;
                return Ok(EXIT_OK);
            }
            Some(p) if p.is_terminal() => {
                // "ended Denied: denied by bob: …", not "ended Denied: Denied: denied by bob".
                let detail = if reason == p.as_str() {
                    message.clone()
                } else {
                    detail
                };
                return Err(CliError::RequestEnded {
                    name: name.to_owned(),
                    phase: p,
                    detail: if detail.is_empty() {
                        String::new()
                    } else {
                        format!(": {detail}")
                    },
                });
            }
            _ => {}
        }
    }
    Err(CliError::Api(format!(
        "the watch of {name} ended unexpectedly; follow it with `kubectl pim status {name}`"
    )))
}

/// How long a request may stay without status before `--wait` asks whether the operator runs.
const NO_STATUS_HINT_AFTER: SignedDuration = SignedDuration::from_secs(5);

/// Returns at `at` on `clock`, or earlier when the clock jumps (a manual clock moved): callers
/// check the time again.
async fn until(
    clock: &dyn crate::clock::Clock,
    at: Timestamp,
    jumps: Option<&mut tokio::sync::watch::Receiver<Timestamp>>,
) {
    let left = std::time::Duration::try_from(at.duration_since(clock.now())).unwrap_or_default();
    match jumps {
        Some(jumps) => {
            tokio::select! {
                () = tokio::time::sleep(left) => {}
                changed = jumps.changed() => {
                    if changed.is_err() {
                        // No more jumps will come: wait the time out.
                        tokio::time::sleep(left).await;
                    }
                }
            }
        }
        None => tokio::time::sleep(left).await,
    }
}

/// kube errors are not `Clone`; keep what a person needs from an API error.
fn inner_clone(error: &kube::Error) -> kube::Error {
    match error {
        kube::Error::Api(status) => kube::Error::Api(status.clone()),
        other => kube::Error::Api(Box::new(kube::core::Status::failure(
            &other.to_string(),
            "Unknown",
        ))),
    }
}
