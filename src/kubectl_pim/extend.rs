//! `kubectl pim extend REQUEST --by 1h`: asks for more time on a running activation by creating
//! an ActivationRequest that extends it (`spec.extends`), under the same policy.

use std::io::Write;

use kube::api::{Api, ObjectMeta, PostParams};

use super::activate::{follow, given_text, parse_ticket};
use super::error::{CliError, EXIT_OK};
use super::render::when;
use super::{Context, ExtendArgs};
use crate::api::ActivationRequest;
use crate::api::activation_request::{ActivationRequestSpec, Phase};
use crate::core::duration;

/// Room left in a name for `generateName`'s five random characters.
const NAME_PREFIX_MAX: usize = 253 - 5;

pub async fn extend(
    ctx: &Context<'_>,
    args: &ExtendArgs,
    out: &mut impl Write,
) -> Result<u8, CliError> {
    let now = ctx.clock.now();
    duration::parse("--by", args.by.trim()).map_err(|e| CliError::Invalid(e.to_string()))?;
    let ticket = args
        .ticket
        .as_deref()
        .map(parse_ticket)
        .transpose()
        .map_err(CliError::Invalid)?;
    let api: Api<ActivationRequest> = Api::all(ctx.client.clone());
    let name = args.name.trim();
    let original = api
        .get_opt(name)
        .await
        .map_err(|e| CliError::api(&format!("read ActivationRequest {name}"), e))?
        .ok_or_else(|| {
            CliError::Invalid(format!(
                "ActivationRequest {name:?} does not exist; `kubectl pim status` lists yours"
            ))
        })?;
    let status = original.status.clone().unwrap_or_default();
    if !matches!(status.phase, Some(Phase::Scheduled | Phase::Active)) {
        return Err(CliError::Invalid(format!(
            "ActivationRequest {name:?} is {}: only a running activation can be extended; ask again with `kubectl pim activate {}`",
            status.phase.unwrap_or_default(),
            original.spec.group
        )));
    }
    let spec = ActivationRequestSpec {
        group: original.spec.group.clone(),
        role: original.spec.role,
        duration: Some(args.by.trim().to_owned()),
        justification: given_text(args.justification.as_deref()),
        ticket,
        extends: Some(name.to_owned()),
        ..Default::default()
    };
    let prefix: String = format!("{name}-ext-")
        .chars()
        .take(NAME_PREFIX_MAX)
        .collect();
    let request = ActivationRequest {
        metadata: ObjectMeta {
            generate_name: Some(prefix),
            ..Default::default()
        },
        spec,
        status: None,
    };
    let created = api
        .create(&PostParams::default(), &request)
        .await
        .map_err(|e| CliError::api(&format!("extend ActivationRequest {name}"), e))?;
    let extension = created.metadata.name.clone().unwrap_or_default();
    writeln!(
        out,
        "activationrequest/{extension} created: extends {name} (ending {}) by {}",
        status
            .expires_at
            .as_ref()
            .map_or_else(|| "when approved".to_owned(), |t| when(t.0, now)),
        args.by.trim()
    )?;
    if !args.wait {
        writeln!(
            out,
            "Follow it with `kubectl pim status {extension}`; once it is Active, the access runs to its end without a break."
        )?;
        return Ok(EXIT_OK);
    }
    follow(&api, &extension, args.timeout, ctx.clock, out).await
}
