//! Which requester identities and approvals the engine may trust.

use crate::api::ActivationRequest;
use crate::core::lifecycle::{Attestation, VerifiedApproval};

/// Checks what the admission webhook vouched for. The engine acts only on what this returns.
pub trait Attestor: Send + Sync {
    /// Whether the stamped requester and principal are the webhook's.
    fn requester(&self, request: &ActivationRequest) -> Attestation;
    /// The approvals whose entries are the webhook's, with the approver's groups.
    fn approvals(&self, request: &ActivationRequest) -> Vec<VerifiedApproval>;
    /// Whether the webhook saw MFA evidence for the requester.
    fn mfa_verified(&self, request: &ActivationRequest) -> bool;
}

/// Trusts every stamped requester and every approval entry as written, and assumes MFA.
///
/// For `simulate` and for tests of the lifecycle. It gives no protection against writes that
/// bypass the admission webhook; the signing attestor replaces it in the operator.
#[derive(Debug, Clone, Copy, Default)]
pub struct TrustAsWritten;

impl Attestor for TrustAsWritten {
    fn requester(&self, request: &ActivationRequest) -> Attestation {
        match &request.spec.requester {
            Some(_) => Attestation::Verified,
            None => Attestation::Unverified,
        }
    }

    fn approvals(&self, request: &ActivationRequest) -> Vec<VerifiedApproval> {
        request
            .spec
            .approvals
            .iter()
            .filter_map(|a| {
                Some(VerifiedApproval {
                    approver: a.approver.clone(),
                    groups: Vec::new(),
                    decision: a.decision,
                    time: a.time.as_ref()?.0,
                    reason: a.reason.clone(),
                })
            })
            .collect()
    }

    fn mfa_verified(&self, request: &ActivationRequest) -> bool {
        request.spec.requester.is_some()
    }
}
