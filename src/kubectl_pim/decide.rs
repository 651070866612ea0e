//! `approve`, `deny` and `deactivate`: the writes to an existing request.
//!
//! An approver writes exactly one thing, their own entry `{approver, decision, reason}`, with a
//! JSON patch: `add /spec/approvals/-` appends to the list, and when there is no list yet a
//! `test` that it is still absent guards the `add` that creates it. Nothing else of the object is
//! sent, so the patch cannot disturb another approver's entry or anything the webhook stamped,
//! and it needs no resourceVersion, so approvers deciding at the same moment do not conflict.
//! (Server-side apply under a per-user field manager would also work, but a later apply of the
//! same entry without the webhook-stamped `time`/`attestation` would drop those fields, and the
//! `group` required by the schema would have to be sent again.) The webhook stamps the time,
//! the approver's groups and the signature on the appended entry.

use std::io::Write;

use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::Context;
use super::cluster::get_request;
use super::error::{CliError, EXIT_OK};
use super::identity::Me;
use super::render::{phase, when};
use crate::api::ActivationRequest;
use crate::api::activation_request::Decision;

/// How often a decision is retried when the list of approvals appeared between reading and
/// writing.
const ATTEMPTS: usize = 3;

pub async fn decide(
    ctx: &Context<'_>,
    me: &Me,
    name: &str,
    decision: Decision,
    reason: Option<&str>,
    out: &mut impl Write,
) -> Result<u8, CliError> {
    let api: Api<ActivationRequest> = Api::all(ctx.client.clone());
    let verb = match decision {
        Decision::Approve => "approve",
        Decision::Deny => "deny",
    };
    let reason = reason.map(str::trim).filter(|r| !r.is_empty());
    let mut last_error = None;
    for _ in 0..ATTEMPTS {
        let request = get_request(&api, name).await?;
        refuse_if_decided(&request, me, name, ctx)?;
        if let Some(p) = phase(&request)
            && p.is_terminal()
        {
            return Err(CliError::Finished {
                name: name.to_owned(),
                phase: p,
            });
        }
        if let Some(requester) = &request.spec.requester
            && me.is_username(&requester.username)
            && !self_approval_allowed(ctx, &request).await
        {
            return Err(CliError::Invalid(format!(
                "{name} is your own request; its policy does not let you {verb} it. Ask one of \
                 the approvers (`kubectl pim status {name}` shows who has decided)."
            )));
        }
        let mut entry = json!({"approver": me.username, "decision": decision});
        if let Some(reason) = reason {
            entry["reason"] = json!(reason);
        }
        let operations = if request.spec.approvals.is_empty() {
            json!([
                {"op": "test", "path": "/spec/approvals", "value": null},
                {"op": "add", "path": "/spec/approvals", "value": [entry]},
            ])
        } else {
            json!([{"op": "add", "path": "/spec/approvals/-", "value": entry}])
        };
        let patch: json_patch::Patch = serde_json::from_value(operations)
            .map_err(|e| CliError::Invalid(format!("cannot build the JSON patch: {e}")))?;
        match api
            .patch(name, &PatchParams::default(), &Patch::<()>::Json(patch))
            .await
        {
            Ok(updated) => {
                let requester = updated
                    .spec
                    .requester
                    .as_ref()
                    .map_or("unknown", |r| r.username.as_str());
                let done = match decision {
                    Decision::Approve => "approved",
                    Decision::Deny => "denied",
                };
                writeln!(
                    out,
                    "{done} activationrequest/{name}: the {} role of {} for {requester}.",
                    updated.spec.role(),
                    updated.spec.group
                )?;
                let decisions: Vec<String> = updated
                    .spec
                    .approvals
                    .iter()
                    .map(|a| format!("{} {:?}", a.approver, a.decision))
                    .collect();
                writeln!(out, "Decisions so far: {}.", decisions.join(", "))?;
                return Ok(EXIT_OK);
            }
            Err(e) => {
                // Read again: a decision of ours that landed after all, or a list of approvals
                // that someone created in between (the `test` failed; retry), or a refusal.
                let now = get_request(&api, name).await?;
                refuse_if_decided(&now, me, name, ctx)?;
                if now.spec.approvals.is_empty() == request.spec.approvals.is_empty() {
                    return Err(CliError::api(&format!("{verb} {name}"), e));
                }
                last_error = Some(e);
            }
        }
    }
    Err(match last_error {
        Some(e) => CliError::api(&format!("{verb} {name}"), e),
        None => CliError::Api(format!("could not {verb} {name}")),
    })
}

fn refuse_if_decided(
    request: &ActivationRequest,
    me: &Me,
    name: &str,
    ctx: &Context<'_>,
) -> Result<(), CliError> {
    match request
        .spec
        .approvals
        .iter()
        .find(|a| me.is_username(&a.approver))
    {
        Some(mine) => Err(CliError::AlreadyDecided {
            name: name.to_owned(),
            decision: match mine.decision {
                Decision::Approve => "you approved it".to_owned(),
                Decision::Deny => "you denied it".to_owned(),
            },
            at: mine
                .time
                .as_ref()
                .map(|t| format!(" {}", when(t.0, ctx.clock.now())))
                .unwrap_or_default(),
        }),
        None => Ok(()),
    }
}

/// Whether the request's policy lets its requester decide on it. When the policy cannot be
/// read, the webhook decides (and says so if not).
async fn self_approval_allowed(ctx: &Context<'_>, request: &ActivationRequest) -> bool {
    let Ok(catalog) = super::cluster::load_catalog(ctx.client).await else {
        return true;
    };
    let target = catalog.target(&request.spec.group, request.spec.role());
    match target.policy() {
        Some(policy) => policy
            .approval
            .as_ref()
            .is_none_or(|a| a.allow_self_approval),
        None => true,
    }
}

pub async fn deactivate(
    ctx: &Context<'_>,
    me: &Me,
    name: &str,
    out: &mut impl Write,
) -> Result<u8, CliError> {
    let api: Api<ActivationRequest> = Api::all(ctx.client.clone());
    let request = get_request(&api, name).await?;
    if let Some(p) = phase(&request)
        && p.is_terminal()
    {
        return Err(CliError::Finished {
            name: name.to_owned(),
            phase: p,
        });
    }
    if let Some(requester) = &request.spec.requester
        && requester.username != me.username
    {
        return Err(CliError::NotYours {
            name: name.to_owned(),
            requester: requester.username.clone(),
            you: me.username.clone(),
        });
    }
    if request.spec.deactivate_requested() {
        writeln!(
            out,
            "{name} is already being deactivated; `kubectl pim status {name}` shows when it ends."
        )?;
        return Ok(EXIT_OK);
    }
    let patch = json!({"spec": {"deactivate": true}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| CliError::api(&format!("deactivate {name}"), e))?;
    writeln!(
        out,
        "deactivation requested for activationrequest/{name}; the operator removes the access \
         shortly. `kubectl pim status {name}` shows when it has."
    )?;
    Ok(EXIT_OK)
}
