//! AccessPolicy reconciler: reports whether the policy parses and stays within the hard caps.

use std::sync::Arc;

use kube::core::Resource;
use kube::runtime::controller::Action;

use super::context::{Context, back_off, timed};
use super::error::Error;
use super::lenient::Lenient;
use super::writes::{apply_status, report_malformed};
use crate::api::AccessPolicy;
use crate::api::access_policy::AccessPolicyStatus;
use crate::api::conditions::{reasons, types};
use crate::core::lifecycle::{ConditionState, ConditionStatus};
use crate::core::policy::Policy;
use crate::core::status::merge_conditions;
use crate::core::violation::{primary_reason, summarize};

pub const KIND: &str = "AccessPolicy";

pub async fn reconcile(
    object: Arc<Lenient<AccessPolicy>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    timed(
        KIND,
        &ctx,
        object.metadata.name.as_deref(),
        reconcile_policy(&object, &ctx),
    )
    .await
}

pub fn error_policy(
    object: Arc<Lenient<AccessPolicy>>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    back_off(KIND, object.metadata.name.as_deref(), error, &ctx)
}

async fn reconcile_policy(object: &Lenient<AccessPolicy>, ctx: &Context) -> Result<Action, Error> {
    let now = ctx.now();
    let Ok(policy) = object.parsed.as_deref() else {
        report_malformed(&ctx.client, object, types::READY, now).await?;
        return Ok(Action::await_change());
    };
    let ready = match Policy::from_spec(&policy.spec) {
        Ok(_) => ConditionState {
            type_: types::READY,
            status: ConditionStatus::True,
            reason: reasons::VALID,
            message: "the policy is valid".to_owned(),
        },
        Err(violations) => ConditionState {
            type_: types::READY,
            status: ConditionStatus::False,
            reason: primary_reason(&violations),
            message: summarize(&violations),
        },
    };
    let stored = policy.status.clone().unwrap_or_default();
    let generation = policy.meta().generation;
    let status = AccessPolicyStatus {
        observed_generation: generation,
        conditions: merge_conditions(&stored.conditions, &[ready], generation, now),
    };
    if status != stored {
        apply_status(&ctx.client, object, &status).await?;
    }
    Ok(Action::await_change())
}
