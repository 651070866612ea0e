//! `ActivationRequest`: one just-in-time elevation.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::cel;
use super::common::{
    DURATION_MAX_LEN, DURATION_PATTERN, OBJECT_NAME_MAX, OBJECT_NAME_PATTERN, PRINCIPAL_MAX,
    PRINCIPAL_PATTERN, Role, TEXT_MAX,
};

/// The controller's finalizer on every live request: the request goes only once its access is
/// removed and its end is audited. Only the operator's own username may add or remove it.
pub const FINALIZER: &str = "pim.dev/revoke-access";

/// A user asks to hold a role of a PimGroup for a while.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "pim.dev",
    version = "v1alpha1",
    kind = "ActivationRequest",
    status = "ActivationRequestStatus",
    shortname = "ar",
    category = "pim",
    derive = "PartialEq",
    derive = "Default",
    doc = "A request to activate an eligible role of a PimGroup for a bounded time.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Group", type_ = "string", json_path = ".spec.group"),
    printcolumn(name = "Role", type_ = "string", json_path = ".spec.role"),
    printcolumn(name = "Principal", type_ = "string", json_path = ".spec.principal"),
    // A string, not a `date`: the API server shows a date as the age since then, and a time
    // in the future as `<invalid>`. `Age` stays the only date column.
    printcolumn(
        name = "Expires",
        type_ = "string",
        json_path = ".status.end",
        description = "When access ends (RFC 3339): the planned end while the request runs, the actual end once it has ended"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.reason",
        description = "Why the request is in its phase"
    ),
    printcolumn(
        name = "Extends",
        type_ = "string",
        priority = 1,
        json_path = ".spec.extends",
        description = "The request whose access this one extends"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = cel::immutable_request_spec().kube(),
    validation = cel::DEACTIVATE_IS_FINAL.kube(),
    validation = cel::DECISIONS_ARE_FINAL.kube(),
    validation = cel::EXTENSION_STARTS_AT_ONCE.kube()
)]
pub struct ActivationRequestSpec {
    /// Name of the PimGroup.
    #[schemars(length(min = 1, max = OBJECT_NAME_MAX), pattern(OBJECT_NAME_PATTERN))]
    pub group: String,
    /// Role to activate. Default member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    // The API server fills it in (schema only: a request built here without a role means the
    // same, see `role()`).
    #[schemars(default = "default_role")]
    pub role: Option<Role>,
    /// How long. Default: the policy's maximum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = DURATION_MAX_LEN), pattern(DURATION_PATTERN))]
    pub duration: Option<String>,
    /// Why the access is needed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = TEXT_MAX))]
    pub justification: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<Ticket>,
    /// Scheduled start; default as soon as approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// The ActivationRequest whose running access this one extends (`kubectl pim extend`): the
    /// same principal, group and role, held on without a gap past its end. The same policy
    /// applies (approval, MFA, justification); `duration` is how much longer. Signed with the
    /// rest of the spec by the admission webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = OBJECT_NAME_MAX), pattern(OBJECT_NAME_PATTERN))]
    pub extends: Option<String>,
    /// Set to true to end the activation early (or withdraw the request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deactivate: Option<bool>,
    /// Who asked. Stamped by the admission webhook from the authenticated caller; never trusted from the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester: Option<Requester>,
    /// The directory principal to elevate, mapped from the requester. Stamped by the admission webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = PRINCIPAL_MAX), pattern(PRINCIPAL_PATTERN))]
    pub principal: Option<String>,
    /// One decision per approver; each approver writes only their own entry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::cel::ListMerge::Map(vec!["approver".into()]))]
    #[schemars(length(max = 32))]
    pub approvals: Vec<Approval>,
}

/// The role a request without one activates; also the schema's default for `spec.role`.
fn default_role() -> Option<Role> {
    Some(Role::default())
}

impl ActivationRequest {
    /// Whether the request has not ended: it has no status yet, or a phase that is not terminal.
    pub fn is_open(&self) -> bool {
        self.status
            .as_ref()
            .and_then(|s| s.phase)
            .is_none_or(|phase| !phase.is_terminal())
    }
}

impl ActivationRequestSpec {
    pub fn role(&self) -> Role {
        self.role.unwrap_or_default()
    }

    pub fn deactivate_requested(&self) -> bool {
        self.deactivate.unwrap_or(false)
    }
}

/// A change ticket in an external system.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Ticket {
    #[schemars(length(min = 1, max = 64), pattern(PRINCIPAL_PATTERN))]
    pub system: String,
    #[schemars(length(min = 1, max = 128), pattern(PRINCIPAL_PATTERN))]
    pub number: String,
}

/// The authenticated Kubernetes user behind a request.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Requester {
    #[schemars(length(min = 1, max = PRINCIPAL_MAX))]
    pub username: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub uid: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(max = PRINCIPAL_MAX)))]
    pub groups: Vec<String>,
    /// The MFA evidence the webhook saw in the caller's `userInfo.extra`, as `claim=value`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = TEXT_MAX))]
    pub mfa: Option<String>,
    #[serde(flatten)]
    pub authentication: Authentication,
    /// When the admission webhook stamped this requester.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stamped_at: Option<Time>,
    /// The webhook's signature over the request as it admitted it. Without a valid one the
    /// controller grants nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = ATTESTATION_MAX))]
    pub attestation: Option<String>,
}

/// What the webhook saw of how the caller authenticated, for the policy's `requiredClaims` and
/// `maxAuthenticationAge`; stamped and signed by the webhook.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Authentication {
    /// The required claims the credentials carried, as `key=value`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8), inner(length(max = TEXT_MAX)))]
    pub claims: Vec<String>,
    /// When the caller signed in, as the API server passed it on (`webhook.authTimeClaim`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authenticated_at: Option<Time>,
}

impl Authentication {
    pub fn is_empty(&self) -> bool {
        self.claims.is_empty() && self.authenticated_at.is_none()
    }
}

/// One approver's decision.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Approval {
    /// The approver's Kubernetes username.
    #[schemars(length(min = 1, max = PRINCIPAL_MAX), pattern(PRINCIPAL_PATTERN))]
    pub approver: String,
    pub decision: Decision,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = TEXT_MAX))]
    pub reason: Option<String>,
    /// When the decision was made; stamped by the admission webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
    /// The approver's groups that the policy names as approvers; stamped by the webhook.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = PRINCIPAL_MAX)))]
    pub groups: Vec<String>,
    /// `claim=value` when the approver's credentials carried MFA evidence; stamped by the
    /// webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = PRINCIPAL_MAX))]
    pub mfa: Option<String>,
    #[serde(flatten)]
    pub authentication: Authentication,
    /// The webhook's signature over this entry. The controller ignores an entry without a valid one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = ATTESTATION_MAX))]
    pub attestation: Option<String>,
}

/// Room for `v1:<key id>:<base64 HMAC-SHA256>`.
pub const ATTESTATION_MAX: usize = 128;

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum Decision {
    #[default]
    Approve,
    Deny,
}

/// Phase of a request (DESIGN §4). The last seven are terminal.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum Phase {
    /// Created, not yet validated.
    #[default]
    Pending,
    /// Valid, waiting for approvers.
    PendingApproval,
    /// Approved; waiting for the start time or for the directory to confirm.
    Scheduled,
    /// The directory confirmed the membership; access holds until the end.
    Active,
    /// The window ended.
    Expired,
    /// The requester ended it early.
    Deactivated,
    /// An approver said no.
    Denied,
    /// Nobody decided in time.
    TimedOut,
    /// Eligibility, policy or group went away.
    Revoked,
    /// It broke a rule of the policy.
    Rejected,
    /// The directory refused permanently.
    Failed,
}

impl Phase {
    pub const ALL: [Phase; 11] = [
        Phase::Pending,
        Phase::PendingApproval,
        Phase::Scheduled,
        Phase::Active,
        Phase::Expired,
        Phase::Deactivated,
        Phase::Denied,
        Phase::TimedOut,
        Phase::Revoked,
        Phase::Rejected,
        Phase::Failed,
    ];

    pub fn is_terminal(self) -> bool {
        !matches!(
            self,
            Phase::Pending | Phase::PendingApproval | Phase::Scheduled | Phase::Active
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::PendingApproval => "PendingApproval",
            Phase::Scheduled => "Scheduled",
            Phase::Active => "Active",
            Phase::Expired => "Expired",
            Phase::Deactivated => "Deactivated",
            Phase::Denied => "Denied",
            Phase::TimedOut => "TimedOut",
            Phase::Revoked => "Revoked",
            Phase::Rejected => "Rejected",
            Phase::Failed => "Failed",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a window ends before the requested duration.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum EndClippedBy {
    /// The matched eligibility ends first.
    Eligibility,
    /// The policy's maximum duration is shorter.
    Policy,
}

/// One phase transition, kept for audit.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Transition {
    pub time: Time,
    pub phase: Phase,
    #[schemars(length(max = 64))]
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = TEXT_MAX))]
    pub message: Option<String>,
}

/// Most transitions kept in `status.history`; the first and the latest are always kept.
pub const HISTORY_MAX: usize = 32;

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActivationRequestStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Why the request is in its phase (e.g. `WaitingForApproval`), written with the phase.
    /// For people (the Reason column); the operator never reads it back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub reason: Option<String>,
    /// `Validated`, `Approved`, `Active` and `Expired`, with reasons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::cel::ListMerge::Map(vec!["type".into()]))]
    #[schemars(length(max = 8))]
    pub conditions: Vec<Condition>,
    /// The EligibleAssignment that made the request possible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = OBJECT_NAME_MAX))]
    pub matched_assignment: Option<String>,
    /// Approvers whose verified approvals counted (so far, while PendingApproval).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub approved_by: Vec<String>,
    /// When the deciding approval was given (creation time when no approval is needed); the
    /// window starts here or at `startTime`, whichever is later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_at: Option<Time>,
    /// Start of the granted window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<Time>,
    /// End of the granted window. It can move earlier, never later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
    /// Set when the window is shorter than asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_clipped_by: Option<EndClippedBy>,
    /// When the directory confirmed the membership.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activated_at: Option<Time>,
    /// When the request reached a terminal phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Time>,
    /// When access ends: `expiresAt` while the request runs, `endedAt` once it has ended (an
    /// early deactivation shows when it really ended). For people (the Expires column); the
    /// operator never reads it back: the grant ledger decides what is revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<Time>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = HISTORY_MAX))]
    pub history: Vec<Transition>,
    /// Notifications sent and audit records emitted. Written only by the notifier, under its
    /// own field manager; the request reconciler carries it over and never applies it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<super::delivery::Delivery>,
    /// What the directory recorded for this grant, where it keeps its own record of it (Entra
    /// PIM for Groups: the schedule request's id and status). Written only by the group
    /// controller, under its own field manager; the request reconciler carries it over and
    /// never applies it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory: Option<DirectoryRecord>,
}

/// The directory's own record of a grant (see `ActivationRequestStatus.directory`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DirectoryRecord {
    /// The directory's id of the change (Graph: the `assignmentScheduleRequest` id).
    #[schemars(length(max = 256))]
    pub request_id: String,
    /// What was asked: `adminAssign`, or `adminUpdate` when a later request moved the end.
    #[schemars(length(max = 64))]
    pub action: String,
    /// The status the directory answered, e.g. `Provisioned`.
    #[schemars(length(max = 64))]
    pub status: String,
    /// The end the directory enforces itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
    /// When the operator recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
}
