//! Fields of an ActivationRequest that the admission webhook stamps from the authenticated
//! caller (`webhook::activation::mutate_create`), written by hand in a manifest. The webhook
//! refuses a written `spec.requester` and replaces or refuses a written `spec.principal`;
//! without the webhook nothing stamps or signs them, so the operator never grants the request.
//!
//! Only `validate` runs this: it reads manifests meant for `kubectl apply`. An object exported
//! from a cluster (it has a `creationTimestamp` or `uid`) carries the webhook's own stamp.

use super::finding::{Finding, rules};
use super::object::PimObject;
use crate::api::ActivationRequest;

/// What the operator does with a request nobody stamped, in the words of its conditions.
const NEVER_GRANTED: &str = "without the webhook the request is never granted: it stays Pending with Validated=Unknown (AttestationKeyMissing) when the operator has no attestation key, and is Rejected with UnverifiedRequester when it has one";

/// Warnings for `spec.requester` and `spec.principal` written in a manifest.
pub fn written_by_hand(object: &PimObject) -> Vec<Finding> {
    let PimObject::ActivationRequest(request) = object else {
        return Vec::new();
    };
    if is_stored(request) {
        return Vec::new();
    }
    let spec = &request.spec;
    let mut out = Vec::new();
    if let Some(principal) = &spec.principal {
        out.push(
            Finding::new(
                rules::STAMPED_BY_WEBHOOK,
                "spec.principal",
                format!(
                    "is stamped by the admission webhook from the authenticated caller; the webhook replaces {principal:?} with the caller's own principal when it names the caller, and refuses the request when it names anyone else (\"you may only activate for yourself\"); {NEVER_GRANTED}"
                ),
            )
            .hint(format!(
                "remove spec.principal and create the request as {principal:?} (kubectl pim activate {}, or kubectl create --as={principal} to test), through an API server with pim-operator's webhook installed",
                spec.group
            )),
        );
    }
    if let Some(requester) = &spec.requester {
        out.push(
            Finding::new(
                rules::STAMPED_BY_WEBHOOK,
                "spec.requester",
                format!(
                    "is stamped and signed by the admission webhook from the authenticated caller; the webhook refuses a request that writes it (\"is stamped by the admission webhook from your credentials; leave it out\"); {NEVER_GRANTED}"
                ),
            )
            .hint(format!(
                "remove spec.requester and create the request as {:?} (kubectl pim activate {}, or kubectl create --as={} to test), through an API server with pim-operator's webhook installed",
                requester.username, spec.group, requester.username
            )),
        );
    }
    out.into_iter()
        .map(|f| f.on(object.kind().as_str(), Some(object.name())))
        .collect()
}

/// Whether the object was read from a cluster rather than written to be applied.
fn is_stored(request: &ActivationRequest) -> bool {
    request.metadata.creation_timestamp.is_some() || request.metadata.uid.is_some()
}
