//! One pass over one ActivationRequest: gather its facts from the catalog, decide, and work out
//! the status to store.

use jiff::Timestamp;

use super::attestation::Attestor;
use super::catalog::{Catalog, created_at};
use crate::api::ActivationRequest;
use crate::api::activation_request::{ActivationRequestStatus, Phase};
use crate::core::extension::{Extended, Extension, MAX_CHAIN};
use crate::core::identity::same_identity;
use crate::core::lifecycle::{Attestation, Decision, Facts, RequestView, VerifiedApproval, decide};
use crate::core::membership::{Grant, GrantSource, Member};
use crate::core::status::request_status;

/// What the directory and the grant ledger say about the request's access, as the caller last
/// observed them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirectoryObservation {
    pub member_present: bool,
    /// The ledger holds an open entry for this request (by uid).
    pub access_held: bool,
    /// When the directory confirmed the removal of its access, if known.
    pub removal_confirmed_at: Option<Timestamp>,
    /// How long past a window's end a removal may take before it is reported overdue.
    pub revocation_grace: jiff::SignedDuration,
    /// Why the directory refused the principal's removal on the last try, if it did.
    pub removal_refused: Option<String>,
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
    reconcile_in_chain(
        catalog,
        request,
        attestor,
        observation,
        is_member_of,
        now,
        0,
    )
    .0
}

/// One pass, `depth` extensions below the one first asked about; with what the request this one
/// extends grants, if it is an extension.
fn reconcile_in_chain(
    catalog: &Catalog,
    request: &ActivationRequest,
    attestor: &dyn Attestor,
    observation: DirectoryObservation,
    is_member_of: &dyn Fn(&str) -> bool,
    now: Timestamp,
    depth: usize,
) -> (RequestOutcome, Option<Extended>) {
    let spec = &request.spec;
    let stored = request.status.clone().unwrap_or_default();
    let role = spec.role();
    let principal = spec.principal.as_deref().unwrap_or_default();

    let target = catalog.target(&spec.group, role);
    let eligibilities = if target.policy().is_some() && !principal.is_empty() {
        catalog.eligibilities(principal, &spec.group, role, now, is_member_of)
    } else {
        Vec::new()
    };
    let (approvals, unverified_approvals) = approvals_in_directory(catalog, request, attestor);
    let extended = extended_by(catalog, request, attestor, is_member_of, now, depth);
    let extension = spec
        .extends
        .as_deref()
        .zip(extended.as_ref())
        .map(|(of, extended)| Extension { of, extended });
    let extended_by = extension_holding_on(catalog, request, now);
    let facts = Facts {
        target: target.as_target(),
        requester: requester_in_directory(catalog, request, attestor),
        mfa_verified: attestor.mfa_verified(request),
        eligibilities: &eligibilities,
        approvals: &approvals,
        unverified_approvals: &unverified_approvals,
        member_present: observation.member_present,
        access_held: observation.access_held,
        removal_confirmed_at: observation.removal_confirmed_at,
        revocation_grace: observation.revocation_grace,
        removal_refused: observation.removal_refused.as_deref(),
        extension,
        extended_by,
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
    (
        RequestOutcome {
            decision,
            status,
            transition,
        },
        extended,
    )
}

/// What the request `request` extends grants, proven by that request's own pass (its signed
/// inputs; a finished one by what it recorded). `None` when `request` is no extension.
fn extended_by(
    catalog: &Catalog,
    request: &ActivationRequest,
    attestor: &dyn Attestor,
    is_member_of: &dyn Fn(&str) -> bool,
    now: Timestamp,
    depth: usize,
) -> Option<Extended> {
    let name = request.spec.extends.as_deref()?;
    if depth >= MAX_CHAIN {
        return Some(Extended::NotRunning(format!(
            "ends a chain of more than {MAX_CHAIN} extensions; create a new request"
        )));
    }
    let Some(original) = catalog.requests.get(name) else {
        return Some(Extended::NotRunning("does not exist".to_owned()));
    };
    let (spec, theirs) = (&request.spec, &original.spec);
    let same_principal = match (spec.principal.as_deref(), theirs.principal.as_deref()) {
        (Some(a), Some(b)) => same_identity(a, b, catalog.principals().names),
        _ => false,
    };
    if theirs.group != spec.group || theirs.role() != spec.role() || !same_principal {
        return Some(Extended::NotRunning(format!(
            "is for {:?} in the {} role of {:?}, not this request's principal, group and role",
            theirs.principal.as_deref().unwrap_or_default(),
            theirs.role(),
            theirs.group
        )));
    }
    if created_at(original.as_ref(), now) > created_at(request, now) {
        return Some(Extended::NotRunning(
            "was created after this extension".to_owned(),
        ));
    }
    // A finished original is proven again as if it still ran: a stored phase (anyone who may
    // write the status could set `Expired` and a late `expiresAt`) proves nothing, and the
    // stored window can only shorten what its signed inputs give.
    let reopened;
    let original: &ActivationRequest = match original.status.as_ref().and_then(|s| s.phase) {
        Some(phase) if phase.is_terminal() => {
            let mut copy = (**original).clone();
            if let Some(status) = copy.status.as_mut() {
                status.phase = Some(Phase::Active);
            }
            reopened = copy;
            &reopened
        }
        _ => original.as_ref(),
    };
    let (outcome, chain) = reconcile_in_chain(
        catalog,
        original,
        attestor,
        DirectoryObservation::default(),
        is_member_of,
        now,
        depth + 1,
    );
    let decision = &outcome.decision;
    let ran_out = decision.phase == Phase::Expired
        && matches!(
            decision.reason,
            crate::api::conditions::reasons::EXPIRED | crate::api::conditions::reasons::EXTENDED
        );
    let running = matches!(decision.phase, Phase::Scheduled | Phase::Active)
        && decision.approved_at.is_some();
    let origin = |window: crate::core::activation::Window| match &chain {
        Some(Extended::Running { origin, .. }) => Ok(*origin),
        // An earlier link that proves nothing ends the chain; it never restarts the count.
        Some(Extended::NotRunning(why)) => Err(why.clone()),
        None => Ok(window.start),
    };
    Some(match decision.window {
        Some(window) if running || ran_out => match origin(window) {
            Ok(origin) => Extended::Running {
                start: window.start,
                end: window.end,
                origin,
            },
            Err(why) => Extended::NotRunning(format!(
                "extends {:?}, which {why}",
                theirs.extends.as_deref().unwrap_or_default()
            )),
        },
        _ => Extended::NotRunning(format!(
            "is {} ({}: {})",
            decision.phase, decision.reason, decision.message
        )),
    })
}

/// The approved extension holding `request`'s access on past its end, once that end has come
/// (for the expiry's message; the extension's own pass proves what it grants).
fn extension_holding_on<'c>(
    catalog: &'c Catalog,
    request: &ActivationRequest,
    now: Timestamp,
) -> Option<&'c str> {
    let status = request.status.as_ref()?;
    if status.phase.is_none_or(Phase::is_terminal) || status.expires_at.as_ref()?.0 > now {
        return None;
    }
    let name = request.metadata.name.as_deref()?;
    catalog
        .extensions_of(name)
        .into_iter()
        .find(|r| {
            r.spec.principal == request.spec.principal
                && r.status.as_ref().is_some_and(|s| {
                    matches!(s.phase, Some(Phase::Scheduled | Phase::Active))
                        && s.approved_at.is_some()
                })
        })
        .and_then(|r| r.metadata.name.as_deref())
}

/// The attestor's word on the requester, and then whether the stamped principal is still what
/// the requester's username maps to in the group's directory: a signature proves what the
/// webhook saw, not that the name is the requester's under today's mapping and directory
/// (issue 17 finding 1: requests stamped by an older, lax mapping, or a PimGroup moved to
/// another directory, must not grant to another user's name).
fn requester_in_directory(
    catalog: &Catalog,
    request: &ActivationRequest,
    attestor: &dyn Attestor,
) -> Attestation {
    let attestation = attestor.requester(request);
    if attestation != Attestation::Verified || catalog.directory_of(&request.spec.group).is_none() {
        return attestation;
    }
    let (Some(requester), Some(principal)) = (&request.spec.requester, &request.spec.principal)
    else {
        return attestation;
    };
    match catalog.principal_in_group(&request.spec.group, &requester.username) {
        Ok(mapped) if same_identity(&mapped, principal, catalog.principals().names) => attestation,
        _ => Attestation::PrincipalMismatch,
    }
}

/// The approvals that count as the policy sees them, approvers named as principals of the
/// group's directory; and the entries ignored, each with why. An approver whose username has no
/// principal in that directory is nobody there (issue 17 finding 1).
fn approvals_in_directory(
    catalog: &Catalog,
    request: &ActivationRequest,
    attestor: &dyn Attestor,
) -> (Vec<VerifiedApproval>, Vec<String>) {
    let mut ignored: Vec<String> = attestor
        .unverified_approvals(request)
        .into_iter()
        .map(|approver| format!("{approver} (not signed by the admission webhook)"))
        .collect();
    let mut approvals = Vec::new();
    for mut approval in attestor.approvals(request) {
        match catalog.principal_in_group(&request.spec.group, &approval.approver) {
            Ok(principal) => {
                approval.approver = principal;
                approvals.push(approval);
            }
            Err(why) => ignored.push(format!("{} ({why})", approval.approver)),
        }
    }
    (approvals, ignored)
}

/// The grant `request` holds at `now`, proven from signed inputs alone: the decision is made
/// again from the requester's and the approvers' signatures, the policy and the eligibility,
/// with the stored status only able to shorten it. A status someone wrote by hand grants
/// nothing (DESIGN §5).
pub fn proven_request_grant(
    catalog: &Catalog,
    request: &ActivationRequest,
    attestor: &dyn Attestor,
    is_member_of: &dyn Fn(&str) -> bool,
    now: Timestamp,
) -> Option<Grant> {
    if request.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let principal = request
        .spec
        .principal
        .as_deref()
        .filter(|p| !p.is_empty())?;
    let outcome = reconcile_request(
        catalog,
        request,
        attestor,
        DirectoryObservation::default(),
        is_member_of,
        now,
    );
    let decision = &outcome.decision;
    let window = decision.window?;
    // Scheduled ones too: their start is when the group must look again.
    let granted = matches!(decision.phase, Phase::Scheduled | Phase::Active)
        && decision.approved_at.is_some();
    granted.then(|| Grant {
        member: Member::User(principal.to_owned()),
        start: window.start,
        end: Some(window.end),
        source: GrantSource::Request(request.metadata.name.clone().unwrap_or_default()),
    })
}
