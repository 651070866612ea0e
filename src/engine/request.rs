//! One pass over one ActivationRequest: gather its facts from the catalog, decide, and work out
//! the status to store.

use jiff::Timestamp;

use super::attestation::Attestor;
use super::catalog::{Catalog, created_at};
use crate::api::ActivationRequest;
use crate::api::activation_request::{ActivationRequestStatus, Phase};
use crate::core::lifecycle::{Decision, Facts, RequestView, decide};
use crate::core::membership::{GrantSource, Member, desired_membership};
use crate::core::status::request_status;

/// What the directory says about the request's principal, as the caller last observed it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirectoryObservation {
    pub member_present: bool,
}

/// The outcome of a pass.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestOutcome {
    pub decision: Decision,
    /// The status to store; equal to the stored one when nothing changed.
    pub status: ActivationRequestStatus,
    /// The phase before and after, when the phase changed.
    pub transition: Option<(Option<Phase>, Phase)>,
}

impl RequestOutcome {
    pub fn status_changed(&self, stored: Option<&ActivationRequestStatus>) -> bool {
        stored != Some(&self.status)
    }
}

/// Decides `request` at `now`. `is_member_of(group)` answers whether the requester belongs to a
/// directory group, for eligibility granted to groups.
pub fn reconcile_request(
    catalog: &Catalog,
    request: &ActivationRequest,
    attestor: &dyn Attestor,
    observation: DirectoryObservation,
    is_member_of: &dyn Fn(&str) -> bool,
    now: Timestamp,
) -> RequestOutcome {
    let spec = &request.spec;
    let name = request.metadata.name.as_deref().unwrap_or_default();
    let stored = request.status.clone().unwrap_or_default();
    let role = spec.role();
    let principal = spec.principal.as_deref().unwrap_or_default();

    let target = catalog.target(&spec.group, role);
    let eligibilities = if target.policy().is_some() && !principal.is_empty() {
        catalog.eligibilities(principal, &spec.group, role, now, is_member_of)
    } else {
        Vec::new()
    };
    let approvals = attestor.approvals(request);
    let unverified_approvals = attestor.unverified_approvals(request);
    let others: Vec<_> = catalog
        .grants(&spec.group, role, now)
        .into_iter()
        .filter(|g| g.source != GrantSource::Request(name.to_owned()))
        .collect();
    let granted_elsewhere =
        desired_membership(&others, now).contains(&Member::User(principal.to_owned()));

    let facts = Facts {
        target: target.as_target(),
        requester: attestor.requester(request),
        mfa_verified: attestor.mfa_verified(request),
        eligibilities: &eligibilities,
        approvals: &approvals,
        unverified_approvals: &unverified_approvals,
        member_present: observation.member_present,
        granted_elsewhere,
    };
    let view = RequestView {
        spec,
        created: created_at(request, now),
        status: &stored,
        deleting: request.metadata.deletion_timestamp.is_some(),
    };
    let decision = decide(view, &facts, now);
    let status = request_status(&stored, &decision, request.metadata.generation, now);
    let transition =
        (stored.phase != Some(decision.phase)).then_some((stored.phase, decision.phase));
    RequestOutcome {
        decision,
        status,
        transition,
    }
}
