//! One AdmissionReview in, one out: decoding, the schema and semantic checks shared with
//! `pim-operator validate`, and the ActivationRequest rules. Pure apart from its inputs.

use jiff::Timestamp;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use serde_json::Value;

use super::activation::{self, Denied, Rules};
use super::config::MfaClaim;
use super::identity::Caller;
use crate::api::ActivationRequest;
use crate::attestation::Keyring;
use crate::checks::{Finding, Kind, PimObject, SchemaChecker, Severity, check_object, rules};
use crate::config::UsernameMapping;
use crate::engine::Catalog;

/// Which of our two webhooks is asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Mutate,
    Validate,
}

/// The body was not an AdmissionReview we can answer; the API server then applies the
/// webhook's failure policy (Fail), so the write is refused.
#[derive(Debug, thiserror::Error)]
#[error("not an admission.k8s.io/v1 AdmissionReview with a request: {0}")]
pub struct ReviewError(String);

/// Everything the webhook decides with, apart from the catalog and the time.
pub struct Admission {
    pub mapping: UsernameMapping,
    pub mfa_claim: MfaClaim,
    pub keyring: Option<Keyring>,
    pub schema: SchemaChecker,
}

/// The controller's finalizer on ActivationRequests (`controller::writes::FINALIZER`).
const REVOKE_FINALIZER: &str = crate::controller::writes::FINALIZER;

/// Findings of these rules name objects that may simply not exist *yet*: GitOps tools apply a
/// set of manifests in no guaranteed order, so for the declarative kinds they are warnings and
/// the controller reports them in status until the reference resolves.
const REFERENCE_RULES: &[&str] = &[
    rules::GROUP_NOT_FOUND.id,
    rules::POLICY_NOT_FOUND.id,
    rules::ROLE_NOT_MANAGED.id,
    rules::INVALID_POLICY.id,
];

impl Admission {
    /// Answers one AdmissionReview body.
    pub fn review(
        &self,
        body: &[u8],
        stage: Stage,
        catalog: &Catalog,
        now: Timestamp,
    ) -> Result<Value, ReviewError> {
        let review: AdmissionReview<DynamicObject> =
            serde_json::from_slice(body).map_err(|e| ReviewError(e.to_string()))?;
        let request: AdmissionRequest<DynamicObject> = review.try_into().map_err(
            |e: kube::core::admission::ConvertAdmissionReviewError| ReviewError(e.to_string()),
        )?;
        let response = AdmissionResponse::from(&request);
        let review = self
            .decide(&request, response, stage, catalog, now)
            .into_review();
        let mut wire = serde_json::to_value(review).map_err(|e| ReviewError(e.to_string()))?;
        base64_patch(&mut wire);
        Ok(wire)
    }

    fn decide(
        &self,
        request: &AdmissionRequest<DynamicObject>,
        response: AdmissionResponse,
        stage: Stage,
        catalog: &Catalog,
        now: Timestamp,
    ) -> AdmissionResponse {
        let ours = request.kind.group == "pim.dev";
        let writes = matches!(request.operation, Operation::Create | Operation::Update);
        if !ours || !writes || request.sub_resource.is_some() {
            return response;
        }
        let Some(kind) = Kind::from_name(&request.kind.kind) else {
            return response.deny(format!("unknown kind {:?}", request.kind.kind));
        };
        let Some(object) = request.object.as_ref().and_then(to_json) else {
            return response.deny("the request carries no object");
        };
        let old = request.old_object.as_ref().and_then(to_json);
        // Metadata only (labels, finalizers): nothing of the spec to judge, not even against a
        // schema newer than the stored object. An object a later policy change made invalid
        // must still be able to be labelled, and its finalizer removed.
        if let Some(old) = &old
            && old.get("spec") == object.get("spec")
        {
            return metadata_only(request, kind, old, &object, response);
        }
        let checked = self.schema.check(kind, &object);
        let mut findings = checked.findings;
        if let Some(old) = &old {
            findings.extend(self.schema.check_update(kind, old, &object));
        }
        if let Some(denial) = refusal(&findings) {
            return response.deny(denial);
        }
        let Some(decoded) = checked.object else {
            return response.deny("the object could not be decoded");
        };
        match decoded {
            PimObject::ActivationRequest(ar) => {
                self.activation(request, response, stage, catalog, now, &object, ar)
            }
            other if stage == Stage::Validate => {
                let findings = check_object(catalog, &other, now);
                let (errors, warnings): (Vec<_>, Vec<_>) = findings.into_iter().partition(|f| {
                    f.severity == Severity::Error && !REFERENCE_RULES.contains(&f.rule)
                });
                let mut response = response;
                if !warnings.is_empty() {
                    response.warnings = Some(warnings.iter().map(describe).collect());
                }
                match refusal(&errors) {
                    Some(denial) => response.deny(denial),
                    None => response,
                }
            }
            _ => response,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn activation(
        &self,
        request: &AdmissionRequest<DynamicObject>,
        response: AdmissionResponse,
        stage: Stage,
        catalog: &Catalog,
        now: Timestamp,
        object: &Value,
        ar: ActivationRequest,
    ) -> AdmissionResponse {
        let old = match request.operation {
            Operation::Update => {
                let decoded = request
                    .old_object
                    .as_ref()
                    .and_then(to_json)
                    .and_then(|o| serde_json::from_value::<ActivationRequest>(o).ok());
                match decoded {
                    Some(old) => Some(old),
                    None => return response.deny("the stored object could not be decoded"),
                }
            }
            _ => None,
        };
        let caller = match Caller::from_user_info(&request.user_info, &self.mfa_claim) {
            Ok(caller) => caller,
            Err(e) => return response.deny(e),
        };
        let rules = Rules {
            catalog,
            mapping: &self.mapping,
            keyring: self.keyring.as_ref(),
            now,
        };
        let outcome: Result<Option<ActivationRequest>, Denied> = match (&old, stage) {
            (None, Stage::Mutate) => activation::mutate_create(&rules, &caller, &ar.spec)
                .map(|spec| Some(with_spec(&ar, spec))),
            (None, Stage::Validate) => {
                activation::validate_create(&rules, &caller, &ar.spec).map(|()| None)
            }
            (Some(old), stage) => {
                let uid = old.metadata.uid.as_deref().unwrap_or_default();
                match stage {
                    Stage::Mutate => {
                        activation::mutate_update(&rules, &caller, uid, &old.spec, &ar.spec)
                            .map(|spec| Some(with_spec(&ar, spec)))
                    }
                    Stage::Validate => {
                        activation::validate_update(&rules, &caller, uid, &old.spec, &ar.spec)
                            .map(|()| None)
                    }
                }
            }
        };
        let mutated = match outcome {
            Ok(mutated) => mutated,
            Err(denied) => return response.deny(denied),
        };
        if old.is_none() {
            // The request against its policy and the caller's eligibility, as `validate` checks it.
            let subject = mutated.clone().unwrap_or(ar);
            let findings = check_object(catalog, &PimObject::ActivationRequest(subject), now);
            let errors: Vec<Finding> = findings
                .into_iter()
                .filter(|f| f.severity == Severity::Error)
                .collect();
            if let Some(denial) = refusal(&errors) {
                return response.deny(denial);
            }
        }
        let Some(mutated) = mutated else {
            return response;
        };
        let Some(after) = to_json(&mutated) else {
            return response.deny("internal error: the stamped request could not be encoded");
        };
        let patch = json_patch::diff(object, &after);
        if patch.0.is_empty() {
            return response;
        }
        match response.clone().with_patch(patch) {
            Ok(patched) => patched,
            Err(e) => response.deny(format!("internal error: {e}")),
        }
    }
}

/// An update that leaves the spec alone. Only the operator (a service account) adds or removes
/// an ActivationRequest's `pim.dev/revoke-access` finalizer: a requester who may patch requests
/// must not strip someone's finalizer, so that deleting it skips the removal and its audit.
fn metadata_only(
    request: &AdmissionRequest<DynamicObject>,
    kind: Kind,
    old: &Value,
    object: &Value,
    response: AdmissionResponse,
) -> AdmissionResponse {
    if kind != Kind::ActivationRequest {
        return response;
    }
    let finalized = |o: &Value| {
        o.pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| f.iter().any(|f| f.as_str() == Some(REVOKE_FINALIZER)))
    };
    let service_account = request
        .user_info
        .username
        .as_deref()
        .is_some_and(|u| u.starts_with("system:serviceaccount:"));
    if finalized(old) != finalized(object) && !service_account {
        return response.deny(format!(
            "metadata.finalizers: only pim-operator adds or removes {REVOKE_FINALIZER:?}; it goes once the access is removed and the end is in the audit trail"
        ));
    }
    response
}

fn with_spec(
    ar: &ActivationRequest,
    spec: crate::api::activation_request::ActivationRequestSpec,
) -> ActivationRequest {
    ActivationRequest { spec, ..ar.clone() }
}

fn to_json<T: serde::Serialize>(value: &T) -> Option<Value> {
    serde_json::to_value(value).ok()
}

fn describe(finding: &Finding) -> String {
    let mut text = if finding.path.is_empty() {
        finding.message.clone()
    } else {
        format!("{}: {}", finding.path, finding.message)
    };
    if !finding.hint.is_empty() {
        text.push_str(&format!(" ({})", finding.hint));
    }
    text
}

/// One message for every error, or `None` when there is none.
fn refusal(findings: &[Finding]) -> Option<String> {
    let errors: Vec<String> = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .map(describe)
        .collect();
    (!errors.is_empty()).then(|| errors.join("; "))
}

/// The API server's JSON carries `[]byte` as base64, as Go encodes it; kube's type serialises
/// the patch as an array of numbers, which Go also decodes. Send what Go sends.
fn base64_patch(review: &mut Value) {
    use base64::Engine;
    let Some(patch) = review.pointer_mut("/response/patch") else {
        return;
    };
    let bytes: Option<Vec<u8>> = patch.as_array().and_then(|items| {
        items
            .iter()
            .map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
            .collect()
    });
    if let Some(bytes) = bytes {
        *patch = Value::String(base64::engine::general_purpose::STANDARD.encode(bytes));
    }
}
