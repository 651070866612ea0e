//! Retention (DESIGN §4): a finished ActivationRequest is kept for its policy's `retention`
//! (default 30 days) after it ended, for audit, then deleted — and never before every one of
//! its transitions is recorded as emitted to the audit trail (`status.delivery`).
//!
//! The decision is pure ([`decide`]); `controller::delivery` acts on it.

use jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, Preconditions};

use crate::api::ActivationRequest;
use crate::audit::record::fully_audited;
use crate::core::duration;
use crate::core::policy::DEFAULT_RETENTION;
use crate::core::time::add;
use crate::engine::Catalog;

/// What to do with a request now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not finished, or its retention cannot be known: keep it, nothing scheduled.
    Keep,
    /// Finished; keep it until then.
    KeepUntil(Timestamp),
    /// Due, but its audit records are not all out yet.
    WaitForAudit,
    Delete,
}

/// The retention of the request's policy: the policy's `retention`, or the default when the
/// policy is gone (its group, or the role's policy, removed). `None` when the policy names a
/// retention that does not parse: keep the request rather than guess.
pub fn retention_of(catalog: &Catalog, request: &ActivationRequest) -> Option<SignedDuration> {
    let spec = &request.spec;
    let Some(policy) = catalog
        .policy_name(&spec.group, spec.role())
        .and_then(|name| catalog.policies.get(name))
    else {
        return Some(DEFAULT_RETENTION);
    };
    match policy.spec.retention.as_deref() {
        None => Some(DEFAULT_RETENTION),
        Some(text) => duration::parse_positive("spec.retention", text).ok(),
    }
}

/// When a finished request falls due: its end plus `retention`.
pub fn due_at(request: &ActivationRequest, retention: SignedDuration) -> Option<Timestamp> {
    let status = request.status.as_ref()?;
    if !status.phase?.is_terminal() {
        return None;
    }
    let ended = status
        .ended_at
        .as_ref()
        .map(|t| t.0)
        .or_else(|| status.history.last().map(|t| t.time.0))?;
    Some(add(ended, retention))
}

/// Whether to delete `request` at `now`.
pub fn decide(
    request: &ActivationRequest,
    retention: Option<SignedDuration>,
    now: Timestamp,
) -> Verdict {
    if request.metadata.deletion_timestamp.is_some() {
        return Verdict::Keep;
    }
    let Some(due) = retention.and_then(|r| due_at(request, r)) else {
        return Verdict::Keep;
    };
    if now < due {
        Verdict::KeepUntil(due)
    } else if !fully_audited(request) {
        Verdict::WaitForAudit
    } else {
        Verdict::Delete
    }
}

/// Deletes the request, only if it is still the object that was judged (same uid and
/// resourceVersion). A request already gone is fine.
pub async fn delete(client: &kube::Client, request: &ActivationRequest) -> Result<(), kube::Error> {
    let name = request.metadata.name.clone().unwrap_or_default();
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: request.metadata.uid.clone(),
            resource_version: request.metadata.resource_version.clone(),
        }),
        ..DeleteParams::default()
    };
    let api: Api<ActivationRequest> = Api::all(client.clone());
    match api.delete(&name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::AccessPolicy;
    use crate::api::access_policy::AccessPolicySpec;
    use crate::api::activation_request::{ActivationRequestSpec, ActivationRequestStatus, Phase};
    use crate::api::delivery::Delivery;
    use crate::api::pim_group::{PimGroup, PimGroupSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn finished(phase: Phase, ended: &str, audited: i32, history: usize) -> ActivationRequest {
        let mut r = ActivationRequest::new(
            "r",
            ActivationRequestSpec {
                group: "g".into(),
                ..Default::default()
            },
        );
        r.status = Some(ActivationRequestStatus {
            phase: Some(phase),
            ended_at: (!ended.is_empty()).then(|| Time(t(ended))),
            history: (0..history)
                .map(|_| crate::api::activation_request::Transition {
                    time: Time(t("2026-01-01T00:00:00Z")),
                    phase,
                    reason: "x".into(),
                    message: None,
                })
                .collect(),
            delivery: Some(Delivery {
                audited_transitions: Some(audited),
                ..Default::default()
            }),
            ..Default::default()
        });
        r
    }

    #[test]
    fn deletes_only_finished_requests_past_their_retention_and_fully_audited() {
        let day = SignedDuration::from_hours(24);
        let r = finished(Phase::Expired, "2026-01-01T00:00:00Z", 3, 3);
        assert_eq!(
            decide(&r, Some(day), t("2026-01-01T23:59:59Z")),
            Verdict::KeepUntil(t("2026-01-02T00:00:00Z"))
        );
        assert_eq!(
            decide(&r, Some(day), t("2026-01-02T00:00:00Z")),
            Verdict::Delete
        );
        let unaudited = finished(Phase::Expired, "2026-01-01T00:00:00Z", 2, 3);
        assert_eq!(
            decide(&unaudited, Some(day), t("2026-02-01T00:00:00Z")),
            Verdict::WaitForAudit
        );
        let running = finished(Phase::Active, "", 3, 3);
        assert_eq!(
            decide(&running, Some(day), t("2027-01-01T00:00:00Z")),
            Verdict::Keep
        );
        // No endedAt: the last transition's time.
        let no_end = finished(Phase::Denied, "", 1, 1);
        assert_eq!(
            decide(&no_end, Some(day), t("2026-01-01T12:00:00Z")),
            Verdict::KeepUntil(t("2026-01-02T00:00:00Z"))
        );
        assert_eq!(decide(&r, None, t("2027-01-01T00:00:00Z")), Verdict::Keep);
        let mut deleting = r.clone();
        deleting.metadata.deletion_timestamp = Some(Time(t("2026-01-05T00:00:00Z")));
        assert_eq!(
            decide(&deleting, Some(day), t("2027-01-01T00:00:00Z")),
            Verdict::Keep
        );
    }

    #[test]
    fn retention_comes_from_the_policy_of_the_group_and_role() {
        let r = finished(Phase::Expired, "2026-01-01T00:00:00Z", 1, 1);
        let mut catalog = Catalog::default();
        assert_eq!(retention_of(&catalog, &r), Some(DEFAULT_RETENTION));
        let mut group = PimGroup::new("g", PimGroupSpec::default());
        group.spec.roles.member.policy = "p".into();
        catalog.insert_group(group);
        let policy = |retention: Option<&str>| {
            AccessPolicy::new(
                "p",
                AccessPolicySpec {
                    retention: retention.map(str::to_owned),
                    ..Default::default()
                },
            )
        };
        catalog.insert_policy(policy(Some("90d")));
        assert_eq!(
            retention_of(&catalog, &r),
            Some(SignedDuration::from_hours(90 * 24))
        );
        catalog.insert_policy(policy(None));
        assert_eq!(retention_of(&catalog, &r), Some(DEFAULT_RETENTION));
        catalog.insert_policy(policy(Some("whenever")));
        assert_eq!(retention_of(&catalog, &r), None);
    }
}
