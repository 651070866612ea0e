//! `status`, `eligible` and `pending`: reading, never writing.

use std::io::Write;

use jiff::Timestamp;
use kube::api::Api;

use super::Context;
use super::cluster::{get_request, load_catalog_or_note, requests};
use super::eligibility::mine;
use super::error::{CliError, EXIT_OK};
use super::identity::{Me, NAMES};
use super::render::{Table, age, cut, phase, phase_detail, phase_text, when};
use crate::api::ActivationRequest;
use crate::api::Phase;
use crate::api::activation_request::{ActivationRequestSpec, EndClippedBy};
use crate::api::common::Principal;
use crate::core::activation::Requested;
use crate::core::duration;
use crate::core::policy::Policy;

fn created(request: &ActivationRequest) -> Option<Timestamp> {
    request.metadata.creation_timestamp.as_ref().map(|t| t.0)
}

fn name_of(request: &ActivationRequest) -> String {
    request.metadata.name.clone().unwrap_or_default()
}

/// By the stamped requester, which is exact; by the principal only for a request nobody
/// stamped (a principal may be another user's mapped name).
fn is_mine(request: &ActivationRequest, me: &Me) -> bool {
    match &request.spec.requester {
        Some(r) => me.is_username(&r.username),
        None => request.spec.principal.as_deref().is_some_and(|p| me.is(p)),
    }
}

fn by_creation(requests: &mut [ActivationRequest]) {
    requests.sort_by(|a, b| {
        created(a)
            .cmp(&created(b))
            .then_with(|| name_of(a).cmp(&name_of(b)))
    });
}

/// `kubectl pim status`: a table of my requests, oldest first.
pub async fn list_mine(ctx: &Context<'_>, me: &Me, out: &mut impl Write) -> Result<u8, CliError> {
    let now = ctx.clock.now();
    let mut mine: Vec<ActivationRequest> = requests(ctx.client)
        .await?
        .into_iter()
        .filter(|r| is_mine(r, me))
        .collect();
    if mine.is_empty() {
        writeln!(
            out,
            "You ({}) have no ActivationRequests. Start one with `kubectl pim activate GROUP \
             --duration 1h --justification \"...\"`; `kubectl pim eligible` lists what you may \
             activate.",
            me.username
        )?;
        return Ok(EXIT_OK);
    }
    by_creation(&mut mine);
    let mut table = Table::new(&[
        "NAME", "GROUP", "ROLE", "PHASE", "REASON", "STARTS", "EXPIRES", "AGE",
    ]);
    for r in &mine {
        let status = r.status.as_ref();
        let (reason, _) = phase_detail(r);
        let at = |t: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
            t.map_or_else(|| "-".to_owned(), |t| when(t.0, now))
        };
        table.row(vec![
            name_of(r),
            r.spec.group.clone(),
            r.spec.role().to_string(),
            phase_text(r),
            if reason.is_empty() {
                "-".to_owned()
            } else {
                reason
            },
            at(status.and_then(|s| s.starts_at.as_ref())),
            at(status.and_then(|s| s.expires_at.as_ref())),
            age(created(r), now),
        ]);
    }
    write!(out, "{}", table.render())?;
    Ok(EXIT_OK)
}

/// `kubectl pim status NAME`: one request in detail, with its conditions and history.
pub async fn show_one(ctx: &Context<'_>, name: &str, out: &mut impl Write) -> Result<u8, CliError> {
    let now = ctx.clock.now();
    let api: Api<ActivationRequest> = Api::all(ctx.client.clone());
    let r = get_request(&api, name).await?;
    let spec = &r.spec;
    let status = r.status.clone().unwrap_or_default();
    let time = |t: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
        t.map(|t| when(t.0, now))
    };
    let mut fields: Vec<(&str, Option<String>)> = vec![
        ("Name", Some(name.to_owned())),
        ("Group", Some(spec.group.clone())),
        ("Role", Some(spec.role().to_string())),
        (
            "Requester",
            spec.requester.as_ref().map(|r| r.username.clone()),
        ),
        ("Principal", spec.principal.clone()),
        ("Extends", spec.extends.clone()),
        ("Duration", spec.duration.clone()),
        ("Justification", spec.justification.clone()),
        (
            "Ticket",
            spec.ticket
                .as_ref()
                .map(|t| format!("{}:{}", t.system, t.number)),
        ),
        ("Start time", time(spec.start_time.as_ref())),
        ("Created", time(r.metadata.creation_timestamp.as_ref())),
        ("Phase", Some(phase_text(&r))),
        ("Matched assignment", status.matched_assignment.clone()),
        (
            "Approved by",
            (!status.approved_by.is_empty()).then(|| status.approved_by.join(", ")),
        ),
        ("Approved at", time(status.approved_at.as_ref())),
        ("Starts", time(status.starts_at.as_ref())),
        ("Activated", time(status.activated_at.as_ref())),
        (
            "Expires",
            time(status.expires_at.as_ref()).map(|e| match status.end_clipped_by {
                Some(EndClippedBy::Eligibility) => {
                    format!("{e}; shortened: the eligibility ends then")
                }
                Some(EndClippedBy::Policy) => {
                    format!("{e}; shortened to the policy's maximum")
                }
                None => e,
            }),
        ),
        ("Ended", time(status.ended_at.as_ref())),
    ];
    if spec.deactivate_requested() {
        fields.push(("Deactivate", Some("requested".to_owned())));
    }
    for (label, value) in fields {
        if let Some(value) = value {
            writeln!(out, "{:<20}{}", format!("{label}:"), cut(&value, 200))?;
        }
    }
    if r.status.is_none() {
        writeln!(
            out,
            "\nThe operator has not processed this request yet. Is it running?"
        )?;
    }
    if !spec.approvals.is_empty() {
        writeln!(out, "\nApprovals:")?;
        let mut table = Table::new(&["APPROVER", "DECISION", "TIME", "REASON"]);
        for a in &spec.approvals {
            table.row(vec![
                a.approver.clone(),
                format!("{:?}", a.decision),
                a.time
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), |t| when(t.0, now)),
                a.reason
                    .as_deref()
                    .map_or_else(|| "-".to_owned(), |r| cut(r, 80)),
            ]);
        }
        indent(out, &table.render())?;
    }
    if !status.conditions.is_empty() {
        writeln!(out, "\nConditions:")?;
        let mut table = Table::new(&["TYPE", "STATUS", "REASON", "MESSAGE"]);
        for c in &status.conditions {
            table.row(vec![
                c.type_.clone(),
                c.status.clone(),
                c.reason.clone(),
                cut(&c.message, 120),
            ]);
        }
        indent(out, &table.render())?;
    }
    if !status.history.is_empty() {
        writeln!(out, "\nHistory:")?;
        let mut table = Table::new(&["TIME", "PHASE", "REASON", "MESSAGE"]);
        for t in &status.history {
            table.row(vec![
                when(t.time.0, now),
                t.phase.to_string(),
                t.reason.clone(),
                t.message
                    .as_deref()
                    .map_or_else(String::new, |m| cut(m, 120)),
            ]);
        }
        indent(out, &table.render())?;
    }
    Ok(EXIT_OK)
}

fn indent(out: &mut impl Write, text: &str) -> std::io::Result<()> {
    for line in text.lines() {
        writeln!(out, "  {line}")?;
    }
    Ok(())
}

/// `kubectl pim eligible`: my assignments and whether each lets me activate now.
pub async fn eligible(ctx: &Context<'_>, me: &Me, out: &mut impl Write) -> Result<u8, CliError> {
    let now = ctx.clock.now();
    let Some(catalog) = load_catalog_or_note(ctx.client, out, "listing your assignments").await?
    else {
        return Ok(super::error::EXIT_FAILED);
    };
    let mine = mine(&catalog, me, now);
    if mine.is_empty() {
        writeln!(
            out,
            "You ({}) hold no EligibleAssignment, directly or through your Kubernetes groups. \
             Eligibility through a directory group that your Kubernetes groups do not show is \
             checked by the operator only. A PimGroup whose status shows no usernameMapping \
             (an older operator) may know you under another name: pass it with --principal.",
            me.describe()
        )?;
        return Ok(EXIT_OK);
    }
    let mut table = Table::new(&[
        "GROUP",
        "ROLE",
        "TYPE",
        "VIA",
        "ASSIGNMENT",
        "FROM",
        "ENDS",
        "APPLIES NOW",
    ]);
    for m in &mine {
        let spec = &m.assignment.spec;
        let from = m
            .window
            .as_ref()
            .map_or_else(|_| "-".to_owned(), |w| when(w.start, now));
        let applies = match (spec.assignment_type, m.state_text(now, now).as_str()) {
            (crate::api::eligible_assignment::AssignmentType::Active, "yes") => {
                "yes (standing: you hold the role without activating)".to_owned()
            }
            (_, "yes") => "yes".to_owned(),
            (_, other) => format!("no: {other}"),
        };
        table.row(vec![
            spec.group.clone(),
            spec.role.to_string(),
            m.type_text().to_owned(),
            m.via.clone(),
            m.name.to_owned(),
            from,
            m.ends_text(now),
            applies,
        ]);
    }
    write!(out, "{}", table.render())?;
    writeln!(
        out,
        "\nYou are {}. Activate with `kubectl pim activate GROUP [--role owner] --duration 1h \
         --justification \"...\"`.",
        me.describe()
    )?;
    Ok(EXIT_OK)
}

/// `kubectl pim pending`: requests waiting for an approval I may give. I am a listed approver
/// user (by username or principal) or in a listed group; I have not decided yet; and it is not
/// my own request, unless the policy allows self-approval.
pub async fn pending(ctx: &Context<'_>, me: &Me, out: &mut impl Write) -> Result<u8, CliError> {
    let now = ctx.clock.now();
    let catalog =
        load_catalog_or_note(ctx.client, out, "filtering by the policies' approvers").await?;
    let groups = me.group_names();
    // Each with its approvals so far and the duration it asks for.
    let mut waiting: Vec<(ActivationRequest, String, String)> = Vec::new();
    for r in requests(ctx.client).await? {
        if phase(&r) != Some(Phase::PendingApproval)
            || r.spec.approvals.iter().any(|a| me.is_username(&a.approver))
        {
            continue;
        }
        let own = r
            .spec
            .requester
            .as_ref()
            .is_some_and(|q| me.is_username(&q.username));
        let Some(catalog) = &catalog else {
            // Without the policies, show everything waiting; the webhook decides who may.
            let length = asked_length(&r.spec, None);
            waiting.push((r, "?".to_owned(), length));
            continue;
        };
        let target = catalog.target(&r.spec.group, r.spec.role());
        let Some(policy) = target.policy() else {
            continue;
        };
        let Some(approval) = policy.approval.clone() else {
            continue;
        };
        let group = catalog.groups.get(&r.spec.group).map(AsRef::as_ref);
        let allowed = me
            .names_in(group)
            .iter()
            .any(|n| approval.allows(n, &groups, NAMES));
        if !allowed || (own && !approval.allow_self_approval) {
            continue;
        }
        // What the controller counted (signed, by approvers, with MFA where required), never
        // the entries as written: an unsigned one counts for nothing (issue 17 finding 6).
        let approvals = r.status.as_ref().map_or(0, |s| s.approved_by.len());
        let mut via: Vec<String> = approval
            .approvers
            .iter()
            .filter_map(|a| match a.resolve()? {
                Principal::User(u) if me.is_in(group, u) => Some(format!("user:{u}")),
                Principal::Group(g) if groups.iter().any(|m| m == g) => Some(format!("group:{g}")),
                _ => None,
            })
            .collect();
        via.dedup();
        let length = asked_length(&r.spec, Some(policy));
        waiting.push((
            r,
            format!(
                "{approvals}/{} via {}",
                approval.min_approvals,
                via.join(",")
            ),
            length,
        ));
    }
    if waiting.is_empty() {
        writeln!(
            out,
            "Nothing is waiting for your approval ({}).",
            me.describe()
        )?;
        return Ok(EXIT_OK);
    }
    waiting.sort_by_key(|(r, _, _)| created(r));
    let mut table = Table::new(&[
        "NAME",
        "GROUP",
        "ROLE",
        "REQUESTER",
        "DURATION",
        "APPROVALS",
        "AGE",
        "TICKET",
        "JUSTIFICATION",
    ]);
    for (r, approvals, length) in &waiting {
        let spec = &r.spec;
        table.row(vec![
            name_of(r),
            spec.group.clone(),
            spec.role().to_string(),
            spec.requester
                .as_ref()
                .map_or_else(|| "-".to_owned(), |q| q.username.clone()),
            length.clone(),
            approvals.clone(),
            age(created(r), now),
            spec.ticket
                .as_ref()
                .map_or_else(|| "-".to_owned(), |t| format!("{}:{}", t.system, t.number)),
            spec.justification
                .as_deref()
                .map_or_else(|| "-".to_owned(), |j| cut(j, 60)),
        ]);
    }
    write!(out, "{}", table.render())?;
    writeln!(
        out,
        "\nDecide with `kubectl pim approve NAME [--reason ...]` or `kubectl pim deny NAME --reason ...`; \
         `kubectl pim status NAME` shows one in detail."
    )?;
    Ok(EXIT_OK)
}

/// The duration a request asks for, read as the controller reads it when the policy is known;
/// as written when it is not, or when it does not read.
fn asked_length(spec: &ActivationRequestSpec, policy: Option<&Policy>) -> String {
    let read = policy.and_then(|p| Requested::read(spec, p, None).ok());
    match (spec.duration.as_deref(), read) {
        (None, Some(r)) => format!("{} (policy max)", duration::format(r.duration)),
        (None, None) => "policy max".to_owned(),
        (Some(_), Some(r)) => duration::format(r.duration),
        (Some(text), None) => text.to_owned(),
    }
}
