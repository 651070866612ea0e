//! AccessPolicy reconciler: reports whether the policy parses and stays within the hard caps,
//! and whether the MFA it asks for can be seen at all.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kube::core::Resource;
use kube::runtime::controller::Action;

use super::context::{Context, back_off, timed};
use super::error::Error;
use super::writes::{apply_status, report_malformed};
use crate::api::AccessPolicy;
use crate::api::access_policy::AccessPolicyStatus;
use crate::api::conditions::{reasons, types};
use crate::core::lifecycle::{ConditionState, ConditionStatus};
use crate::core::policy::Policy;
use crate::core::status::merge_conditions;
use crate::core::violation::{primary_reason, summarize};
use crate::lenient::Lenient;
use crate::webhook::WebhookConfig;

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
    let parsed = Policy::from_spec(&policy.spec);
    let ready = match &parsed {
        Ok(_) => ConditionState {
            type_: types::READY,
            status: ConditionStatus::True,
            reason: reasons::VALID,
            message: "the policy is valid".to_owned(),
        },
        Err(violations) => ConditionState {
            type_: types::READY,
            status: ConditionStatus::False,
            reason: primary_reason(violations),
            message: summarize(violations),
        },
    };
    let mut conditions = vec![ready];
    if let Ok(parsed) = &parsed {
        let mfa = mfa_condition(parsed, &ctx.settings.config.webhook);
        if mfa.status == ConditionStatus::False && !MFA_WARNED.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                policy = object.metadata.name.as_deref().unwrap_or_default(),
                "{}",
                mfa.message
            );
        }
        conditions.push(mfa);
    }
    let stored = policy.status.clone().unwrap_or_default();
    let generation = policy.meta().generation;
    let status = AccessPolicyStatus {
        observed_generation: generation,
        conditions: merge_conditions(&stored.conditions, &conditions, generation, now),
    };
    if status != stored {
        apply_status(&ctx.client, object, &status).await?;
    }
    Ok(Action::await_change())
}

/// Set once the unconfigured MFA claim has been logged: the condition says it per policy.
static MFA_WARNED: AtomicBool = AtomicBool::new(false);

/// Whether the MFA the policy asks of requesters or approvers can be seen (issue 17 finding
/// 4). Without `webhook.mfaClaim` the webhook looks for `amr`, a key the API server's
/// structured authentication never produces: `claimMappings.extra` keys must be
/// domain-prefixed paths (k8s.io/apiserver `pkg/apis/apiserver/validation`), so every such
/// request would be refused with nothing saying why.
pub fn mfa_condition(policy: &Policy, webhook: &WebhookConfig) -> ConditionState {
    let asks = policy.require_mfa || policy.approval.as_ref().is_some_and(|a| a.require_mfa);
    let (status, reason, message) = match (&webhook.mfa_claim, asks) {
        (_, false) => (
            ConditionStatus::True,
            reasons::MFA_NOT_REQUIRED,
            "the policy asks no MFA".to_owned(),
        ),
        (Some(claim), true) => (
            ConditionStatus::True,
            reasons::MFA_CLAIM_CONFIGURED,
            format!(
                "MFA is read from userInfo.extra[{:?}] containing one of {:?}",
                claim.key, claim.values
            ),
        ),
        (None, true) => (
            ConditionStatus::False,
            reasons::MFA_CLAIM_NOT_CONFIGURED,
            "the policy requires MFA, but the operator's webhook.mfaClaim is not set: the webhook looks for userInfo.extra[\"amr\"], which the API server's structured authentication never produces (its extra keys are domain-prefixed, such as pim.dev/amr), so every request and approval that needs MFA is refused. Map the claim in the API server's AuthenticationConfiguration (claimMappings.extra) and set webhook.mfaClaim to that key; see docs/identity-and-approvals.md".to_owned(),
        ),
    };
    ConditionState {
        type_: types::MFA_CLAIM,
        status,
        reason,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::MfaClaim;

    #[test]
    fn an_unconfigured_mfa_claim_is_reported_on_policies_that_need_mfa() {
        let unset = WebhookConfig::default();
        let set = WebhookConfig {
            mfa_claim: Some(MfaClaim {
                key: "pim.dev/amr".into(),
                values: vec!["mfa".into()],
            }),
            ..WebhookConfig::default()
        };
        let lax = Policy::default();
        let strict = Policy {
            require_mfa: true,
            ..Policy::default()
        };
        let c = mfa_condition(&lax, &unset);
        assert_eq!(
            (c.status, c.reason),
            (ConditionStatus::True, reasons::MFA_NOT_REQUIRED)
        );
        let c = mfa_condition(&strict, &unset);
        assert_eq!(
            (c.status, c.reason),
            (ConditionStatus::False, reasons::MFA_CLAIM_NOT_CONFIGURED)
        );
        assert!(c.message.contains("webhook.mfaClaim"), "{}", c.message);
        assert!(c.message.contains("claimMappings.extra"), "{}", c.message);
        let c = mfa_condition(&strict, &set);
        assert_eq!(
            (c.status, c.reason),
            (ConditionStatus::True, reasons::MFA_CLAIM_CONFIGURED)
        );
        assert!(c.message.contains("pim.dev/amr"), "{}", c.message);
    }
}
