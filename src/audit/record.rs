//! One audit record per transition of an ActivationRequest, built purely from the request and
//! a snapshot of what surrounded it (policy, directory ids, MFA verdict).

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::api::ActivationRequest;
use crate::api::activation_request::Phase;
use crate::api::delivery::AuditSnapshot;
use crate::engine::Catalog;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequesterRecord {
    pub username: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(default)]
    pub groups: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalRecord {
    pub approver: String,
    pub decision: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One line of the audit trail.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    /// `<request uid>/<transition index>`: the same every time this record is emitted.
    pub id: String,
    /// `ActivationRequest`: what [`super::action::ActionRecord`]s name their kind by.
    #[serde(default = "request_kind")]
    pub kind: String,
    /// When the transition happened.
    pub time: Timestamp,
    pub request: String,
    pub uid: String,
    /// The position of the transition in `status.history`, from 0.
    pub transition: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The phase entered: the outcome so far, or the final one when `terminal`.
    pub outcome: String,
    pub terminal: bool,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester: Option<RequesterRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// The principal's id in the directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal_id: Option<String>,
    pub group: String,
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory: Option<String>,
    /// The group's id in the directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory_group_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub justification: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket_system: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_duration: Option<String>,
    /// The request this one extends (`spec.extends`): the records of the two link up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extends: Option<String>,
    /// Every decision on the request, with time and reason.
    #[serde(default)]
    pub approvals: Vec<ApprovalRecord>,
    /// The approvers whose verified approvals counted.
    #[serde(default)]
    pub approved_by: Vec<String>,
    /// The MFA evidence the admission webhook stamped (`claim=value`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mfa_evidence: Option<String>,
    /// Whether the operator verified it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mfa_verified: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_clipped_by: Option<String>,
    /// When the directory confirmed the membership.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activated_at: Option<Timestamp>,
    /// When access ended (the request became terminal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Timestamp>,
    /// Failed attempts to emit this request's audit records before they went through.
    pub retry_count: u32,
}

fn request_kind() -> String {
    REQUEST_KIND.to_owned()
}

pub const REQUEST_KIND: &str = "ActivationRequest";

/// What the catalog knows around a request now, over what an earlier snapshot recorded (a
/// policy or group deleted since keeps its recorded values).
pub fn snapshot(
    request: &ActivationRequest,
    catalog: &Catalog,
    mfa_verified: Option<bool>,
    previous: Option<&AuditSnapshot>,
) -> AuditSnapshot {
    let spec = &request.spec;
    let status = request.status.as_ref();
    let policy = catalog
        .policy_name(&spec.group, spec.role())
        .map(str::to_owned);
    let policy_generation = policy
        .as_deref()
        .and_then(|p| catalog.policies.get(p))
        .and_then(|p| p.metadata.generation);
    let group = catalog.groups.get(&spec.group);
    let directory = group.map(|g| g.spec.directory.clone());
    let group_id = group.and_then(|g| g.status.as_ref()?.group_id.clone());
    let principal_id = status
        .and_then(|s| s.matched_assignment.as_deref())
        .and_then(|a| catalog.assignments.get(a))
        .and_then(|a| a.status.as_ref()?.principal_id.clone());
    let previous = previous.cloned().unwrap_or_default();
    AuditSnapshot {
        policy: policy.or(previous.policy),
        policy_generation: policy_generation.or(previous.policy_generation),
        directory: directory.or(previous.directory),
        group_id: group_id.or(previous.group_id),
        principal_id: principal_id.or(previous.principal_id),
        mfa_verified: mfa_verified.or(previous.mfa_verified),
        retries: previous.retries,
    }
}

/// The records of the request's history entries in `range`.
pub fn records(
    request: &ActivationRequest,
    snapshot: &AuditSnapshot,
    range: std::ops::Range<usize>,
    retry_count: u32,
) -> Vec<AuditRecord> {
    let spec = &request.spec;
    let status = request.status.clone().unwrap_or_default();
    let uid = request.metadata.uid.clone().unwrap_or_default();
    let name = request.metadata.name.clone().unwrap_or_default();
    let approvals: Vec<ApprovalRecord> = spec
        .approvals
        .iter()
        .map(|a| ApprovalRecord {
            approver: a.approver.clone(),
            decision: format!("{:?}", a.decision),
            time: a.time.as_ref().map(|t| t.0),
            reason: a.reason.clone(),
        })
        .collect();
    let requester = spec.requester.as_ref().map(|r| RequesterRecord {
        username: r.username.clone(),
        uid: r.uid.clone(),
        groups: r.groups.clone(),
    });
    let time =
        |t: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| t.as_ref().map(|t| t.0);
    status
        .history
        .iter()
        .enumerate()
        .skip(range.start)
        .take(range.end.saturating_sub(range.start))
        .map(|(index, transition)| AuditRecord {
            id: format!("{uid}/{index}"),
            kind: request_kind(),
            time: transition.time.0,
            request: name.clone(),
            uid: uid.clone(),
            transition: index,
            from: index
                .checked_sub(1)
                .and_then(|i| status.history.get(i))
                .map(|t| t.phase.to_string()),
            outcome: transition.phase.to_string(),
            terminal: transition.phase.is_terminal(),
            reason: transition.reason.clone(),
            message: transition.message.clone(),
            requester: requester.clone(),
            principal: spec.principal.clone(),
            principal_id: snapshot.principal_id.clone(),
            group: spec.group.clone(),
            role: spec.role().to_string(),
            directory: snapshot.directory.clone(),
            directory_group_id: snapshot.group_id.clone(),
            policy: snapshot.policy.clone(),
            policy_generation: snapshot.policy_generation,
            justification: spec.justification.clone(),
            ticket_system: spec.ticket.as_ref().map(|t| t.system.clone()),
            ticket_number: spec.ticket.as_ref().map(|t| t.number.clone()),
            requested_duration: spec.duration.clone(),
            extends: spec.extends.clone(),
            approvals: approvals.clone(),
            approved_by: status.approved_by.clone(),
            mfa_evidence: spec.requester.as_ref().and_then(|r| r.mfa.clone()),
            mfa_verified: snapshot.mfa_verified,
            starts_at: time(&status.starts_at),
            expires_at: time(&status.expires_at),
            end_clipped_by: status.end_clipped_by.map(|c| format!("{c:?}")),
            activated_at: time(&status.activated_at),
            ended_at: time(&status.ended_at),
            retry_count,
        })
        .collect()
}

/// Whether every transition of a finished request has its audit record out.
pub fn fully_audited(request: &ActivationRequest) -> bool {
    let Some(status) = request.status.as_ref() else {
        return false;
    };
    let audited = status.delivery.as_ref().map_or(0, |d| d.audited());
    status.phase.is_some_and(Phase::is_terminal) && audited >= status.history.len()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::api::activation_request::{
        ActivationRequestSpec, ActivationRequestStatus, Approval, Decision, Requester, Ticket,
        Transition,
    };
    use crate::api::delivery::Delivery;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    pub(crate) fn approved_request() -> ActivationRequest {
        let mut r = ActivationRequest::new(
            "alice-q2",
            ActivationRequestSpec {
                group: "finreport".into(),
                duration: Some("30m".into()),
                justification: Some("Q2 close".into()),
                ticket: Some(Ticket {
                    system: "ServiceNow".into(),
                    number: "CHG42".into(),
                }),
                requester: Some(Requester {
                    username: "oidc:alice".into(),
                    uid: Some("u-alice".into()),
                    groups: vec!["finance".into()],
                    mfa: Some("amr=mfa".into()),
                    ..Default::default()
                }),
                principal: Some("alice@contoso.com".into()),
                approvals: vec![Approval {
                    approver: "bob".into(),
                    decision: Decision::Approve,
                    reason: Some("ok".into()),
                    time: Some(Time(t("2026-03-02T09:10:00Z"))),
                    ..Default::default()
                }],
                ..Default::default()
            },
        );
        r.metadata.uid = Some("uid-1".into());
        let step = |time: &str, phase: Phase, reason: &str| Transition {
            time: Time(t(time)),
            phase,
            reason: reason.into(),
            message: None,
        };
        r.status = Some(ActivationRequestStatus {
            phase: Some(Phase::Expired),
            approved_by: vec!["bob".into()],
            approved_at: Some(Time(t("2026-03-02T09:10:00Z"))),
            starts_at: Some(Time(t("2026-03-02T09:10:00Z"))),
            expires_at: Some(Time(t("2026-03-02T09:40:00Z"))),
            activated_at: Some(Time(t("2026-03-02T09:10:00Z"))),
            ended_at: Some(Time(t("2026-03-02T09:40:00Z"))),
            history: vec![
                step(
                    "2026-03-02T09:00:00Z",
                    Phase::PendingApproval,
                    "WaitingForApproval",
                ),
                step("2026-03-02T09:10:00Z", Phase::Scheduled, "Provisioning"),
                step("2026-03-02T09:10:00Z", Phase::Active, "Active"),
                step("2026-03-02T09:40:00Z", Phase::Expired, "Expired"),
            ],
            ..Default::default()
        });
        r
    }

    #[test]
    fn one_record_per_transition_with_everything_an_auditor_asks() {
        let r = approved_request();
        let snap = AuditSnapshot {
            policy: Some("p".into()),
            policy_generation: Some(3),
            directory: Some("entra".into()),
            group_id: Some("gid".into()),
            principal_id: Some("oid-alice".into()),
            mfa_verified: Some(true),
            retries: None,
        };
        let all = records(&r, &snap, 0..4, 0);
        assert_eq!(all.len(), 4);
        let last = &all[3];
        assert_eq!(last.id, "uid-1/3");
        assert_eq!(
            (last.from.as_deref(), last.outcome.as_str(), last.terminal),
            (Some("Active"), "Expired", true)
        );
        assert_eq!(last.requester.as_ref().unwrap().groups, ["finance"]);
        assert_eq!(last.approvals[0].approver, "bob");
        assert_eq!(last.approvals[0].decision, "Approve");
        assert_eq!(last.mfa_evidence.as_deref(), Some("amr=mfa"));
        assert_eq!(last.directory_group_id.as_deref(), Some("gid"));
        assert_eq!(last.policy_generation, Some(3));
        assert_eq!(last.activated_at, Some(t("2026-03-02T09:10:00Z")));
        assert_eq!(records(&r, &snap, 2..4, 0).len(), 2);
        assert_eq!(records(&r, &snap, 4..9, 0).len(), 0);
        assert_eq!(last.extends, None);
        // An extension's records name the request it extends.
        let mut extension = approved_request();
        extension.spec.extends = Some("r0".into());
        let linked = records(&extension, &snap, 0..4, 0);
        assert!(linked.iter().all(|r| r.extends.as_deref() == Some("r0")));
    }

    #[test]
    fn a_request_is_fully_audited_only_when_finished_and_every_transition_is_out() {
        let mut r = approved_request();
        assert!(!fully_audited(&r));
        let status = r.status.as_mut().unwrap();
        status.delivery = Some(Delivery {
            audited_transitions: Some(3),
            ..Default::default()
        });
        assert!(!fully_audited(&r));
        r.status.as_mut().unwrap().delivery = Some(Delivery {
            audited_transitions: Some(4),
            ..Default::default()
        });
        assert!(fully_audited(&r));
        r.status.as_mut().unwrap().phase = Some(Phase::Active);
        assert!(!fully_audited(&r));
    }
}
