//! One AdmissionReview in, one out: decoding, the schema and semantic checks shared with
//! `pim-operator validate`, and the ActivationRequest rules. Pure apart from its inputs.

use std::collections::BTreeSet;

use jiff::Timestamp;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use serde_json::Value;

use super::activation::{self, Denied, Rules};
use super::config::MfaClaim;
use super::decisions;
use super::identity::Caller;
use crate::api::common::Role;
use crate::api::{AccessReview, ActivationRequest, EligibleAssignment, PimGroup};
use crate::attestation::Keyring;
use crate::audit::action::{AUDITED_KINDS, Action, ActionRecord, Change, change_record};
use crate::audit::record::RequesterRecord;
use crate::checks::last_member::last_grant_refusal;
use crate::checks::onboarding::removal_findings;
use crate::checks::{Finding, Kind, PimObject, SchemaChecker, Severity, check_object, rules};
use crate::core::activation::Requested;
use crate::core::identity::Principals;
use crate::engine::{Catalog, Proof, TrustAsWritten};

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
    /// Each directory's username mapping, and how names compare.
    pub principals: Principals,
    pub mfa_claim: MfaClaim,
    /// See `WebhookConfig::auth_time_claim`.
    pub auth_time_claim: Option<String>,
    pub keyring: Option<Keyring>,
    pub schema: SchemaChecker,
    /// Directories (by name) that make no assignment shorter than this: Entra in `pim` mode,
    /// five minutes. A request for less through one of them is admitted with a warning that
    /// says how long the directory will hold the access.
    pub shortest_assignments: std::collections::BTreeMap<String, jiff::SignedDuration>,
    /// The operator's own Kubernetes username, learned at start from SelfSubjectReview
    /// ([`super::identity::operator_username`]): the only caller that moves our finalizer.
    pub operator_username: String,
}

/// The controller's finalizer on ActivationRequests (`api::activation_request::FINALIZER`).
const REVOKE_FINALIZER: &str = crate::api::activation_request::FINALIZER;

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
        self.review_audited(body, stage, catalog, now)
            .map(|(wire, _)| wire)
    }

    /// As [`Admission::review`], with the audit record of the change when it is one of a
    /// declarative kind's spec (or its deletion) seen by the validating webhook, admitted or
    /// refused. Dry runs are not recorded: the webhook is registered `sideEffects:
    /// NoneOnDryRun`.
    pub fn review_audited(
        &self,
        body: &[u8],
        stage: Stage,
        catalog: &Catalog,
        now: Timestamp,
    ) -> Result<(Value, Option<ActionRecord>), ReviewError> {
        let review: AdmissionReview<DynamicObject> =
            serde_json::from_slice(body).map_err(|e| ReviewError(e.to_string()))?;
        let request: AdmissionRequest<DynamicObject> = review.try_into().map_err(
            |e: kube::core::admission::ConvertAdmissionReviewError| ReviewError(e.to_string()),
        )?;
        let response = AdmissionResponse::from(&request);
        let decided = self.decide(&request, response, stage, catalog, now);
        let record = (stage == Stage::Validate)
            .then(|| change_of(&request, &decided, catalog, now))
            .flatten();
        let review = decided.into_review();
        let mut wire = serde_json::to_value(review).map_err(|e| ReviewError(e.to_string()))?;
        base64_patch(&mut wire);
        Ok((wire, record))
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
        if ours
            && request.operation == Operation::Delete
            && request.sub_resource.is_none()
            && stage == Stage::Validate
        {
            return match self.deletion(request, catalog, now) {
                Some(denial) => response.deny(denial),
                None => response,
            };
        }
        let writes = matches!(request.operation, Operation::Create | Operation::Update);
        if !ours || !writes || request.sub_resource.is_some() {
            return response;
        }
        let Some(kind) = Kind::from_name(&request.kind.kind) else {
            return response.deny(format!("unknown kind {:?}", request.kind.kind));
        };
        let Some(submitted) = request.object.as_ref().and_then(to_json) else {
            return response.deny("the request carries no object");
        };
        let old = request.old_object.as_ref().and_then(to_json);
        // A request's signature covers its name, so one created with `generateName` (as
        // `kubectl pim activate` does) is named here: the API server picks the name only after
        // mutating admission (k8s.io/apiserver `pkg/endpoints/handlers/create.go` admits, then
        // `pkg/registry/generic/registry/store.go` generates).
        let mut object = submitted.clone();
        if kind == Kind::ActivationRequest && old.is_none() && stage == Stage::Mutate {
            name_generated(&mut object);
        }
        if kind == Kind::ActivationRequest
            && let Err(denial) = self.request_metadata(request, old.as_ref(), &object)
        {
            return response.deny(denial);
        }
        // Metadata only (labels, finalizers): nothing of the spec to judge, not even against a
        // schema newer than the stored object. An object a later policy change made invalid
        // must still be able to be labelled, and its finalizer removed.
        if let Some(old) = &old
            && old.get("spec") == object.get("spec")
        {
            return response;
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
        if let PimObject::AccessReview(review) = &decoded {
            match self.review_decisions(request, stage, catalog, now, review, old.as_ref()) {
                Err(denial) => return response.deny(denial),
                Ok(Some(stamped)) => return with_patch_to(response, &submitted, &stamped),
                Ok(None) => {}
            }
        }
        match decoded {
            PimObject::ActivationRequest(ar) => {
                self.activation(request, response, stage, catalog, now, &submitted, ar)
            }
            other if stage == Stage::Validate => {
                if let (PimObject::EligibleAssignment(changed), Some(old)) = (&other, &old)
                    && let Some(denial) = self.assignment_update(catalog, old, changed, now)
                {
                    return response.deny(denial);
                }
                let mut findings = check_object(catalog, &other, now);
                if let PimObject::PimGroup(group) = &other {
                    // The stored object shows whether the operator has seen the group.
                    let stored = old
                        .as_ref()
                        .and_then(|o| serde_json::from_value::<PimGroup>(o.clone()).ok());
                    findings.extend(removal_findings(group, stored.as_ref()));
                }
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
        let caller = match Caller::from_user_info_with(
            &request.user_info,
            &self.mfa_claim,
            self.auth_time_claim.as_deref(),
        ) {
            Ok(caller) => caller,
            Err(e) => return response.deny(e),
        };
        let rules = Rules {
            catalog,
            principals: &self.principals,
            keyring: self.keyring.as_ref(),
            now,
        };
        let outcome: Result<Option<ActivationRequest>, Denied> = match (&old, stage) {
            (None, Stage::Mutate) => {
                let name = ar.metadata.name.as_deref().unwrap_or_default();
                activation::mutate_create(&rules, &caller, name, &ar.spec)
                    .map(|spec| Some(finalized(with_spec(&ar, spec))))
            }
            (None, Stage::Validate) => {
                let name = ar.metadata.name.as_deref().unwrap_or_default();
                activation::validate_create(&rules, &caller, name, &ar.spec).map(|()| None)
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
        if stage == Stage::Validate
            && let Some(old) = &old
            && !old.spec.deactivate_requested()
            && ar.spec.deactivate_requested()
            && let Some(denial) =
                last_grant(catalog, &ar.spec.group, ar.spec.role(), now, |after| {
                    after.insert_request(ar.clone());
                })
        {
            return response.deny(denial);
        }
        let mut response = response;
        if old.is_none() {
            if stage == Stage::Validate
                && let Some(warning) = self.shorter_than_the_directory_holds(catalog, &ar, now)
            {
                response.warnings = Some(vec![warning]);
            }
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
        with_patch_to(response, object, &mutated)
    }

    /// The decisions of an AccessReview write (see `super::decisions`): refused, stamped (at
    /// the mutating stage: the review with its entries signed), or fine as they are (`None`).
    fn review_decisions(
        &self,
        request: &AdmissionRequest<DynamicObject>,
        stage: Stage,
        catalog: &Catalog,
        now: Timestamp,
        review: &AccessReview,
        old: Option<&Value>,
    ) -> Result<Option<AccessReview>, String> {
        // The stored status is only read for which instances are on record: one that no
        // longer decodes (a schema change) must not stop the review from being fixed.
        let old = match old {
            Some(o) => {
                let decoded = serde_json::from_value::<AccessReview>(o.clone()).or_else(|_| {
                    let mut without_status = o.clone();
                    if let Some(fields) = without_status.as_object_mut() {
                        fields.remove("status");
                    }
                    serde_json::from_value::<AccessReview>(without_status)
                });
                Some(decoded.map_err(|_| "the stored object could not be decoded".to_owned())?)
            }
            None => None,
        };
        let caller = match Caller::from_user_info_with(
            &request.user_info,
            &self.mfa_claim,
            self.auth_time_claim.as_deref(),
        ) {
            Ok(caller) => caller,
            // Tools (a GitOps controller's service account) apply reviews and may drop the
            // decisions of instances on record; decisions themselves are people's.
            Err(e) => {
                return if decisions::only_pruned(old.as_ref(), &review.spec) {
                    Ok(None)
                } else {
                    Err(e.to_string())
                };
            }
        };
        let rules = Rules {
            catalog,
            principals: &self.principals,
            keyring: self.keyring.as_ref(),
            now,
        };
        let uid = old
            .as_ref()
            .and_then(|o| o.metadata.uid.as_deref())
            .unwrap_or_default();
        match stage {
            Stage::Mutate => {
                let stamped = decisions::mutate(&rules, &caller, uid, old.as_ref(), &review.spec)
                    .map_err(|d| d.to_string())?;
                Ok((stamped != review.spec).then(|| AccessReview {
                    spec: stamped,
                    ..review.clone()
                }))
            }
            Stage::Validate => {
                decisions::validate(&rules, &caller, uid, old.as_ref(), &review.spec)
                    .map(|()| None)
                    .map_err(|d| d.to_string())
            }
        }
    }
}

/// The refusal to delete a review whose denials still stand: its status is where they are
/// kept, so its deletion would make the denied assignments grant again. The manifests go first.
fn standing_denials(
    catalog: &Catalog,
    review: &str,
    denied: &[crate::api::access_review::DeniedAssignment],
) -> Option<String> {
    let standing: Vec<&str> = denied
        .iter()
        .filter(|d| {
            catalog.assignments.get(&d.assignment).is_some_and(|a| {
                d.uid.is_none() || a.metadata.uid.is_none() || a.metadata.uid == d.uid
            })
        })
        .map(|d| d.assignment.as_str())
        .collect();
    (!standing.is_empty()).then(|| {
        format!(
            "AccessReview {review} denied EligibleAssignments that still exist: {}. Deleting the review would make them grant again; remove their manifests first (status.denied lists them)",
            standing.join(", ")
        )
    })
}

/// `response` with the JSON patch that turns `object` into `after`.
fn with_patch_to<T: serde::Serialize>(
    response: AdmissionResponse,
    object: &Value,
    after: &T,
) -> AdmissionResponse {
    let Some(after) = to_json(after) else {
        return response.deny("internal error: the stamped object could not be encoded");
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

/// `protectLastMember`: the refusal of a change (made by `change` on a copy of the catalog) that
/// ends the last grant of `group`'s `role` (see `checks::last_member`). Status is trusted as
/// written here: a grant wrongly counted only lets the change through, and the controller keeps
/// the last member anyway.
fn last_grant(
    catalog: &Catalog,
    group: &str,
    role: Role,
    now: Timestamp,
    change: impl FnOnce(&mut Catalog),
) -> Option<String> {
    let protected = catalog
        .groups
        .get(group)
        .is_some_and(|g| g.spec.protect_last_member);
    if !protected {
        return None;
    }
    let mut after = catalog.clone();
    change(&mut after);
    last_grant_refusal(
        catalog,
        &after,
        group,
        role,
        now,
        &Proof::stamped(&TrustAsWritten),
    )
}

impl Admission {
    /// A delete of an EligibleAssignment or ActivationRequest that ends the last grant of a
    /// `protectLastMember` group is refused. Others pass: the API server sends the stored object
    /// as `oldObject` (k8s.io/apiserver `admission.Attributes.GetOldObject` on DELETE).
    fn deletion(
        &self,
        request: &AdmissionRequest<DynamicObject>,
        catalog: &Catalog,
        now: Timestamp,
    ) -> Option<String> {
        let old = request.old_object.as_ref().and_then(to_json)?;
        match Kind::from_name(&request.kind.kind)? {
            Kind::EligibleAssignment => {
                let gone: EligibleAssignment = serde_json::from_value(old).ok()?;
                let name = gone.metadata.name.clone()?;
                last_grant(catalog, &gone.spec.group, gone.spec.role, now, |after| {
                    after.assignments.remove(&name);
                })
            }
            Kind::ActivationRequest => {
                let gone: ActivationRequest = serde_json::from_value(old).ok()?;
                let name = gone.metadata.name.clone()?;
                last_grant(catalog, &gone.spec.group, gone.spec.role(), now, |after| {
                    after.requests.remove(&name);
                })
            }
            Kind::AccessReview => {
                // Only the denials are read, so that a review that no longer decodes is
                // guarded too.
                let name = old
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)?
                    .to_owned();
                let denied: Vec<crate::api::access_review::DeniedAssignment> = old
                    .pointer("/status/denied")
                    .cloned()
                    .and_then(|d| serde_json::from_value(d).ok())
                    .unwrap_or_default();
                standing_denials(catalog, &name, &denied)
            }
            _ => None,
        }
    }

    /// An update of an EligibleAssignment that ends the last grant of a `protectLastMember`
    /// group (moved to another principal or group, made Eligible, ended) is refused.
    fn assignment_update(
        &self,
        catalog: &Catalog,
        old: &Value,
        changed: &EligibleAssignment,
        now: Timestamp,
    ) -> Option<String> {
        let before: EligibleAssignment = serde_json::from_value(old.clone()).ok()?;
        last_grant(
            catalog,
            &before.spec.group,
            before.spec.role,
            now,
            |after| {
                after.insert_assignment(changed.clone());
            },
        )
    }

    /// A warning for a request whose window is shorter than its group's directory makes an
    /// assignment for: the window it gets, `spec.duration` or the policy's `maxDuration` when
    /// unset, cut to `maxDuration` and to the end of the eligibility it starts in.
    fn shorter_than_the_directory_holds(
        &self,
        catalog: &Catalog,
        ar: &ActivationRequest,
        now: Timestamp,
    ) -> Option<String> {
        use crate::core::duration::format as show;
        let spec = &ar.spec;
        let group = catalog.groups.get(&spec.group)?;
        let directory = &group.spec.directory;
        let shortest = *self.shortest_assignments.get(directory)?;
        let target = catalog.target(&spec.group, spec.role());
        let policy = target.policy()?;
        let max = policy.max_activation;
        // A request that does not read is refused by the checks; no warning to add.
        let requested = Requested::read(spec, policy, None).ok()?;
        let mut what = match spec.duration.as_deref() {
            Some(text) => format!("spec.duration: {text}"),
            None => format!(
                "spec.duration unset, the policy's maxDuration: {}",
                show(max)
            ),
        };
        let mut window = requested.duration;
        if max < window {
            window = max;
            what = format!("{what}, cut to the policy's maxDuration, {}", show(max));
        }
        // The eligibility the window starts in ends it too (the latest of those that cover it).
        let start = requested.start(now);
        let principal = spec.principal.as_deref().unwrap_or_default();
        let covering: Vec<Option<Timestamp>> = catalog
            .eligibilities(principal, &spec.group, spec.role(), start, |_| false)
            .into_iter()
            .filter(|e| e.contains(start))
            .map(|e| e.end)
            .collect();
        if !covering.is_empty()
            && let Some(end) = covering
                .into_iter()
                .try_fold(start, |latest, end| end.map(|end| latest.max(end)))
            && end.duration_since(start) < window
        {
            window = end.duration_since(start);
            what = format!(
                "{what}, cut to {} by the end of the eligibility",
                show(window)
            );
        }
        (window < shortest).then(|| {
            format!(
                "{what} is shorter than directory {directory:?} makes an assignment for (Microsoft Entra PIM for Groups: {} at least, ActiveDurationTooShort); the access is held {} and removed no sooner",
                show(shortest),
                show(shortest),
            )
        })
    }

    /// The metadata rules of ActivationRequests (DESIGN §7, issue 14 finding 5), on create and on
    /// every update, whatever else changes. Labels and annotations are free. Finalizers and
    /// owner references decide when a request disappears, so:
    /// - only the operator's own username adds or removes `pim.dev/revoke-access` once the
    ///   request exists (the mutating webhook puts it on at create): stripped, a delete would
    ///   skip the removal of the access and its audit record;
    /// - nobody, the operator included, adds another finalizer (retention could never delete
    ///   the request) or an owner reference (pointing at an object that does not exist, it
    ///   lets the garbage collector delete someone else's request);
    /// - removing a foreign finalizer or owner reference already there is allowed, so that a
    ///   stuck object can be cleaned up.
    fn request_metadata(
        &self,
        request: &AdmissionRequest<DynamicObject>,
        old: Option<&Value>,
        object: &Value,
    ) -> Result<(), String> {
        let before = finalizers(old);
        let after = finalizers(Some(object));
        let added: Vec<&str> = after.difference(&before).copied().collect();
        let removed = before.difference(&after).any(|f| *f == REVOKE_FINALIZER);
        let caller = request.user_info.username.as_deref().unwrap_or_default();
        // Exact comparison: this is the credential the operator runs with, not a person's name.
        let operator = !self.operator_username.is_empty() && caller == self.operator_username;
        // On create the mutating webhook adds it (`finalized`), so it arrives from the caller;
        // present from the start, it only holds the request until the operator lets it go.
        let added_later = added.contains(&REVOKE_FINALIZER) && old.is_some();
        if (removed || added_later) && !operator {
            return Err(format!(
                "metadata.finalizers: only pim-operator (as {:?}) adds or removes {REVOKE_FINALIZER:?}, not {caller:?}; it goes once the access is removed and the end is in the audit trail",
                self.operator_username
            ));
        }
        if let Some(foreign) = added.iter().find(|f| **f != REVOKE_FINALIZER) {
            return Err(format!(
                "metadata.finalizers: {foreign:?} cannot be added to an ActivationRequest; the only finalizer on requests is {REVOKE_FINALIZER:?}, so that retention can delete them (removing a finalizer that is already there is allowed)"
            ));
        }
        let owners_before = owner_references(old);
        if owner_references(Some(object))
            .iter()
            .any(|o| !owners_before.contains(o))
        {
            return Err(
                "metadata.ownerReferences: cannot be added to an ActivationRequest; a request is owned by nobody, so that the garbage collector never deletes it (removing an owner reference that is already there is allowed)"
                    .to_owned(),
            );
        }
        Ok(())
    }
}

/// The audit record of a change to a declarative kind's spec, or of its deletion.
fn change_of(
    request: &AdmissionRequest<DynamicObject>,
    decided: &AdmissionResponse,
    catalog: &Catalog,
    now: Timestamp,
) -> Option<ActionRecord> {
    if request.kind.group != "pim.dev"
        || request.sub_resource.is_some()
        || request.dry_run
        || !AUDITED_KINDS.contains(&request.kind.kind.as_str())
    {
        return None;
    }
    let old = request.old_object.as_ref().and_then(to_json);
    let new = request.object.as_ref().and_then(to_json);
    let action = match request.operation {
        Operation::Create => Action::Created,
        Operation::Update => Action::Updated,
        Operation::Delete => Action::Deleted,
        Operation::Connect => return None,
    };
    // Metadata-only updates (labels, finalizers, kubectl's last-applied annotation) change
    // nothing an auditor asks about.
    if action == Action::Updated
        && old.as_ref().and_then(|o| o.get("spec")) == new.as_ref().and_then(|o| o.get("spec"))
    {
        return None;
    }
    let object_uid = old
        .as_ref()
        .or(new.as_ref())
        .and_then(|o| o.pointer("/metadata/uid"))
        .and_then(Value::as_str);
    let user = &request.user_info;
    let denial = (!decided.allowed).then(|| decided.result.message.clone());
    let record = change_record(
        Change {
            admission_uid: &request.uid,
            kind: &request.kind.kind,
            action,
            name: &request.name,
            object_uid,
            user: RequesterRecord {
                username: user.username.clone().unwrap_or_default(),
                uid: user.uid.clone(),
                groups: user.groups.clone().unwrap_or_default(),
            },
            old: old.as_ref(),
            new: new.as_ref(),
            allowed: decided.allowed,
            denial,
        },
        now,
    );
    Some(with_decided_assignment(record, catalog))
}

/// A review decision's record names the assignment's principal, group and role when the
/// write decided on one assignment, so that `kubectl pim audit --principal` finds it.
fn with_decided_assignment(mut record: ActionRecord, catalog: &Catalog) -> ActionRecord {
    if record.action != Action::Decided {
        return record;
    }
    let assignments: BTreeSet<&str> = record
        .changes
        .iter()
        .filter_map(|c| c.after.as_ref().or(c.before.as_ref()))
        .filter_map(|d| d.get("assignment").and_then(Value::as_str))
        .collect();
    let [name] = assignments.into_iter().collect::<Vec<_>>()[..] else {
        return record;
    };
    if let Some(a) = catalog.assignments.get(name) {
        record.principal = a
            .spec
            .principal
            .user
            .clone()
            .or(a.spec.principal.group.clone());
        record.group = Some(a.spec.group.clone());
        record.role = Some(a.spec.role.as_str().to_owned());
    }
    record
}

fn finalizers(object: Option<&Value>) -> BTreeSet<&str> {
    object
        .and_then(|o| o.pointer("/metadata/finalizers"))
        .and_then(Value::as_array)
        .map(|f| f.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn owner_references(object: Option<&Value>) -> Vec<&Value> {
    object
        .and_then(|o| o.pointer("/metadata/ownerReferences"))
        .and_then(Value::as_array)
        .map(|refs| refs.iter().collect())
        .unwrap_or_default()
}

/// Gives an object that has only `generateName` a name of that form.
fn name_generated(object: &mut Value) {
    let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    let named = meta
        .get("name")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    if named {
        return;
    }
    if let Some(prefix) = meta.get("generateName").and_then(Value::as_str) {
        let name = generated_name(prefix);
        meta.insert("name".into(), Value::String(name));
    }
}

/// A name for `generateName`, as the API server makes one (k8s.io/apiserver
/// `pkg/storage/names/generate.go`): the prefix cut to 58 characters, then 5 random characters
/// from the alphabet of k8s.io/apimachinery `pkg/util/rand` (no vowels, nothing confusable).
fn generated_name(prefix: &str) -> String {
    use ring::rand::{SecureRandom, SystemRandom};
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    const MAX_PREFIX: usize = 63 - 5;
    let mut random = [0u8; 5];
    // A failing system RNG leaves zeros: the name is then still valid, and a clash is refused
    // by the API server as AlreadyExists.
    let _ = SystemRandom::new().fill(&mut random);
    let cut = prefix
        .char_indices()
        .map(|(i, c)| i + c.len_utf8())
        .take_while(|end| *end <= MAX_PREFIX)
        .last()
        .unwrap_or(0);
    let mut name = prefix[..cut].to_owned();
    for byte in random {
        let i = usize::from(byte) % ALPHABET.len();
        name.push(char::from(ALPHABET.get(i).copied().unwrap_or(b'x')));
    }
    name
}

fn with_spec(
    ar: &ActivationRequest,
    spec: crate::api::activation_request::ActivationRequestSpec,
) -> ActivationRequest {
    ActivationRequest { spec, ..ar.clone() }
}

/// A new request carries the operator's finalizer from its create on, so the controller's first
/// write is its status and not a patch of the finalizer (issue 21, item 2).
fn finalized(mut ar: ActivationRequest) -> ActivationRequest {
    let finalizers = ar.metadata.finalizers.get_or_insert_with(Vec::new);
    if !finalizers.iter().any(|f| f == REVOKE_FINALIZER) {
        finalizers.push(REVOKE_FINALIZER.to_owned());
    }
    ar
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
