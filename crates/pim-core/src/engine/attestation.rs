//! Which requester identities and approvals the engine may trust.

use jiff::SignedDuration;

use crate::api::access_review::ReviewDecision;
use crate::api::activation_request::Approval;
use crate::api::{AccessReview, ActivationRequest};
use crate::attestation::Keyring;
use crate::core::lifecycle::{Attestation, VerifiedApproval};

/// Checks what the admission webhook vouched for. The engine acts only on what this returns.
pub trait Attestor: Send + Sync {
    /// Whether the stamped requester and principal are the webhook's.
    fn requester(&self, request: &ActivationRequest) -> Attestation;
    /// The approvals whose entries are the webhook's, with the approver's Kubernetes username
    /// and groups; the engine maps the username into the group's directory.
    fn approvals(&self, request: &ActivationRequest) -> Vec<VerifiedApproval>;
    /// Whether the webhook saw MFA evidence for the requester.
    fn mfa_verified(&self, request: &ActivationRequest) -> bool;
    /// Approvers whose entries carry no valid signature: ignored, and reported in status.
    fn unverified_approvals(&self, _request: &ActivationRequest) -> Vec<String> {
        Vec::new()
    }
    /// Whether a review decision is the webhook's, for this review.
    fn review_decision(&self, review: &AccessReview, decision: &ReviewDecision) -> bool;
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
                    mfa: true,
                    authentication: a.authentication.clone(),
                })
            })
            .collect()
    }

    fn mfa_verified(&self, request: &ActivationRequest) -> bool {
        request.spec.requester.is_some()
    }

    fn review_decision(&self, _review: &AccessReview, decision: &ReviewDecision) -> bool {
        decision.time.is_some()
    }
}

/// Trusts only what the admission webhook signed with the operator's key (DESIGN §7): an object
/// written around the webhook grants nothing.
#[derive(Debug, Clone)]
pub struct SignedAttestor {
    keyring: Option<Keyring>,
}

/// How far the stamp may lie from the API server's creationTimestamp. A requester block copied
/// onto a new object later (a replay around the webhook) falls outside it.
pub const MAX_STAMP_SKEW: SignedDuration = SignedDuration::from_mins(5);

impl SignedAttestor {
    /// `None` when no key is configured: then nothing verifies, and requests wait with
    /// `AttestationKeyMissing` rather than being refused.
    pub fn new(keyring: Option<Keyring>) -> Self {
        SignedAttestor { keyring }
    }

    fn verified<'a>(&self, request: &'a ActivationRequest) -> Vec<(bool, &'a Approval)> {
        let uid = request.metadata.uid.as_deref().unwrap_or_default();
        request
            .spec
            .approvals
            .iter()
            .map(|a| {
                let ok = !uid.is_empty()
                    && self
                        .keyring
                        .as_ref()
                        .is_some_and(|k| k.verify_approval(uid, a));
                (ok, a)
            })
            .collect()
    }
}

impl Attestor for SignedAttestor {
    fn review_decision(&self, review: &AccessReview, decision: &ReviewDecision) -> bool {
        let uid = review.metadata.uid.as_deref().unwrap_or_default();
        !uid.is_empty()
            && decision.time.is_some()
            && self
                .keyring
                .as_ref()
                .is_some_and(|k| k.verify_review_decision(uid, decision))
    }

    fn requester(&self, request: &ActivationRequest) -> Attestation {
        let Some(keyring) = &self.keyring else {
            return Attestation::KeyUnavailable;
        };
        let name = request.metadata.name.as_deref().unwrap_or_default();
        if !keyring.verify_requester(name, &request.spec)
            && !keyring.verify_unnamed_requester(&request.spec)
        {
            return Attestation::Unverified;
        }
        let stamped = request
            .spec
            .requester
            .as_ref()
            .and_then(|r| r.stamped_at.as_ref());
        let created = request.metadata.creation_timestamp.as_ref();
        match (stamped, created) {
            (Some(stamped), Some(created))
                if stamped.0.duration_since(created.0).abs() <= MAX_STAMP_SKEW =>
            {
                Attestation::Verified
            }
            _ => Attestation::Unverified,
        }
    }

    fn approvals(&self, request: &ActivationRequest) -> Vec<VerifiedApproval> {
        self.verified(request)
            .into_iter()
            .filter(|(ok, _)| *ok)
            .filter_map(|(_, a)| {
                Some(VerifiedApproval {
                    approver: a.approver.clone(),
                    groups: a.groups.clone(),
                    decision: a.decision,
                    time: a.time.as_ref()?.0,
                    reason: a.reason.clone(),
                    // Covered by the entry's signature.
                    mfa: a.mfa.is_some(),
                    authentication: a.authentication.clone(),
                })
            })
            .collect()
    }

    fn mfa_verified(&self, request: &ActivationRequest) -> bool {
        self.requester(request) == Attestation::Verified
            && request
                .spec
                .requester
                .as_ref()
                .is_some_and(|r| r.mfa.is_some())
    }

    fn unverified_approvals(&self, request: &ActivationRequest) -> Vec<String> {
        self.verified(request)
            .into_iter()
            .filter(|(ok, _)| !*ok)
            .map(|(_, a)| a.approver.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::api::activation_request::{ActivationRequestSpec, Decision, Requester};

    fn ring() -> Keyring {
        Keyring::from_bytes(&[b'k'; 32], &[]).unwrap()
    }

    fn time(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    /// A request as the webhook would have admitted it, created at 10:00.
    fn admitted(ring: &Keyring, stamped: &str) -> ActivationRequest {
        let mut spec = ActivationRequestSpec {
            group: "g".into(),
            principal: Some("alice".into()),
            requester: Some(Requester {
                username: "alice".into(),
                mfa: Some("amr=mfa".into()),
                stamped_at: Some(time(stamped)),
                ..Default::default()
            }),
            ..Default::default()
        };
        let sig = ring.sign_requester("r", &spec).unwrap();
        spec.requester.as_mut().unwrap().attestation = Some(sig);
        let mut request = ActivationRequest::new("r", spec);
        request.metadata.uid = Some("uid-1".into());
        request.metadata.creation_timestamp = Some(time("2026-01-01T10:00:00Z"));
        request
    }

    fn approval(ring: &Keyring, uid: &str, approver: &str) -> Approval {
        let mut a = Approval {
            approver: approver.into(),
            decision: Decision::Approve,
            time: Some(time("2026-01-01T10:01:00Z")),
            ..Default::default()
        };
        a.attestation = Some(ring.sign_approval(uid, &a));
        a
    }

    #[test]
    fn only_signed_requesters_within_the_skew_verify() {
        let ring = ring();
        let attestor = SignedAttestor::new(Some(ring.clone()));
        let request = admitted(&ring, "2026-01-01T10:00:01Z");
        assert_eq!(attestor.requester(&request), Attestation::Verified);
        assert!(attestor.mfa_verified(&request));

        let mut no_mfa = request.clone();
        no_mfa.spec.requester.as_mut().unwrap().mfa = None;
        assert_eq!(attestor.requester(&no_mfa), Attestation::Unverified);
        assert!(!attestor.mfa_verified(&no_mfa));

        let mut unsigned = request.clone();
        unsigned.spec.requester.as_mut().unwrap().attestation = None;
        assert_eq!(attestor.requester(&unsigned), Attestation::Unverified);

        // A signed block replayed onto an object created long after it was stamped.
        let replayed = admitted(&ring, "2026-01-01T09:00:00Z");
        assert_eq!(attestor.requester(&replayed), Attestation::Unverified);

        // The same block copied onto another object within the skew: the name is signed.
        let mut copied = request.clone();
        copied.metadata.name = Some("r-copy".into());
        assert_eq!(attestor.requester(&copied), Attestation::Unverified);

        let keyless = SignedAttestor::new(None);
        assert_eq!(keyless.requester(&request), Attestation::KeyUnavailable);
        assert!(!keyless.mfa_verified(&request));
    }

    #[test]
    fn unsigned_or_replayed_approvals_are_reported_not_counted() {
        let ring = ring();
        let attestor = SignedAttestor::new(Some(ring.clone()));
        let mut request = admitted(&ring, "2026-01-01T10:00:00Z");
        let mut forged = approval(&ring, "uid-1", "carol");
        forged.attestation = None;
        request.spec.approvals = vec![
            approval(&ring, "uid-1", "bob"),
            // Signed for another request (same name, earlier incarnation).
            approval(&ring, "uid-0", "dave"),
            forged,
        ];
        let counted: Vec<_> = attestor
            .approvals(&request)
            .into_iter()
            .map(|a| a.approver)
            .collect();
        assert_eq!(counted, ["bob"]);
        assert_eq!(attestor.unverified_approvals(&request), ["dave", "carol"]);
        let keyless = SignedAttestor::new(None);
        assert!(keyless.approvals(&request).is_empty());
    }
}
