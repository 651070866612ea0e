//! `AccessPolicy`: the rules for using a role of a PIM group (Entra's role settings).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::cel;
use super::common::{
    DURATION_MAX_LEN, DURATION_PATTERN, PRINCIPAL_MAX, PRINCIPAL_PATTERN, PrincipalRef, TEXT_MAX,
};

/// How a role may be activated, assigned and announced.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "pim.dev",
    version = "v1alpha1",
    kind = "AccessPolicy",
    status = "AccessPolicyStatus",
    shortname = "ap",
    category = "pim",
    derive = "PartialEq",
    derive = "Default",
    doc = "Activation, approval, assignment and notification rules for a role of a PIM group.",
    printcolumn(
        name = "Max",
        type_ = "string",
        json_path = ".spec.activation.maxDuration",
        description = "Longest activation"
    ),
    printcolumn(
        name = "Approvals",
        type_ = "integer",
        json_path = ".spec.activation.approval.minApprovals",
        description = "Approvals needed"
    ),
    printcolumn(
        name = "MFA",
        type_ = "boolean",
        json_path = ".spec.activation.requireMfa"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct AccessPolicySpec {
    /// What the policy is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = TEXT_MAX))]
    pub description: Option<String>,
    #[serde(default)]
    pub activation: ActivationSettings,
    #[serde(default)]
    pub assignment: AssignmentSettings,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notifications: Option<NotificationSettings>,
    /// How long finished activation requests are kept for audit before deletion. Default 30d.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = DURATION_MAX_LEN), pattern(DURATION_PATTERN))]
    pub retention: Option<String>,
    /// Risky use of this policy's roles, reported as conditions, metrics and notifications to
    /// the admins (Entra PIM's security alerts). Each is off until set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerts: Option<PolicyAlerts>,
}

/// Entra PIM's security alerts, per policy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyAlerts {
    /// "Roles are being activated too frequently": one principal activating a role under this
    /// policy this many times within the period. The activation that reaches the count gets
    /// `ActivatedTooOften=True`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activated_too_often: Option<ActivationFrequency>,
    /// "Administrators aren't using their privileged roles": an Eligible assignment under this
    /// policy not activated for this long (since it took effect or its last activation) gets
    /// `Stale=True`. At most 365d.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = DURATION_MAX_LEN), pattern(DURATION_PATTERN))]
    pub not_activated_for: Option<String>,
    /// The roles under this policy are critical: an activation that no approver approved gets
    /// `ActivatedWithoutApproval=True`. Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub critical: Option<bool>,
}

/// How many activations within how long are too many.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActivationFrequency {
    /// From 2 to 100, as Entra's "number of activation renewals".
    #[schemars(range(min = 2, max = 100))]
    pub activations: i32,
    /// The period they are counted over (Entra's "activation renewal timeframe"), up to 30d.
    #[schemars(length(max = DURATION_MAX_LEN), pattern(DURATION_PATTERN))]
    pub within: String,
}

/// Rules for activating an eligible assignment.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActivationSettings {
    /// Longest activation; also the default duration of a request. Default 8h, at most 24h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = DURATION_MAX_LEN), pattern(DURATION_PATTERN))]
    pub max_duration: Option<String>,
    /// A request must say why. Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_justification: Option<bool>,
    /// A request must name a ticket. Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_ticket: Option<bool>,
    /// The requester must have signed in with MFA (checked at admission). Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_mfa: Option<bool>,
    /// When set, activation waits for approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalSettings>,
    /// How far after a request's creation its `startTime` may lie, so that approval, MFA and
    /// eligibility checked today cannot be banked for months. Default 14d.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = DURATION_MAX_LEN), pattern(DURATION_PATTERN))]
    pub max_start_delay: Option<String>,
    /// How many requests one requester may have open at once (Pending, PendingApproval,
    /// Scheduled or Active), counted over every group; a request beyond it is refused at
    /// admission. Bounds what one person can make the operator hold. Default 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub max_open_requests: Option<i32>,
    /// Let extensions (`spec.extends`) carry access past `maxDuration` from the original start:
    /// each extension still adds at most `maxDuration`, and never past the eligibility's end.
    /// Default false: an extension only fills the rest of `maxDuration` from the original start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_renewal: Option<bool>,
    /// What the requester's sign-in must show beyond `requireMfa`.
    #[serde(flatten)]
    pub sign_in: SignInRequirements,
}

/// What a sign-in must show beyond MFA, as Entra PIM lets a role require an authentication
/// context. Checked and signed at admission, checked again by the controller.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SignInRequirements {
    /// Claims the credentials must carry: each key of `userInfo.extra` must hold one of its
    /// values (an Entra authentication context is `acrs` containing `c1`, mapped by the API
    /// server to a key such as `pim.dev/acrs`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub required_claims: Vec<ClaimRequirement>,
    /// How long before acting the caller may have signed in, read from the sign-in time the
    /// API server passes on (`webhook.authTimeClaim`). Unset: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = DURATION_MAX_LEN), pattern(DURATION_PATTERN))]
    pub max_authentication_age: Option<String>,
}

/// A claim that credentials must carry: `userInfo.extra[key]` holds one of `values`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimRequirement {
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
    #[schemars(length(min = 1, max = 16), inner(length(min = 1, max = 256)))]
    pub values: Vec<String>,
}

/// Who approves, and how many must.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = cel::MIN_APPROVALS_REACHABLE.kube())]
pub struct ApprovalSettings {
    /// Users and groups who may approve.
    #[schemars(length(min = 1, max = 64))]
    pub approvers: Vec<PrincipalRef>,
    /// Distinct approvals needed (N of M). Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 16))]
    pub min_approvals: Option<i32>,
    /// A request not decided within this time is TimedOut. Default 24h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = DURATION_MAX_LEN), pattern(DURATION_PATTERN))]
    pub timeout: Option<String>,
    /// Let a requester approve their own request. Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_self_approval: Option<bool>,
    /// An approval counts only when the approver signed in with MFA (checked and signed at
    /// admission, checked again by the controller); a denial counts without. Default false:
    /// approvals signed before this field existed carry no MFA evidence, and the controller
    /// checks every approval again, so a stricter default would revoke what they approved.
    /// Set it wherever `activation.requireMfa` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_mfa: Option<bool>,
    /// What an approver's sign-in must show for the approval to count, as for requesters.
    /// A denial counts without it.
    #[serde(flatten)]
    pub sign_in: SignInRequirements,
}

/// Caps on eligible and active assignments.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AssignmentSettings {
    /// Allow eligible assignments with no end. Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_permanent_eligible: Option<bool>,
    /// Longest eligible assignment. Default 365d.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = DURATION_MAX_LEN), pattern(DURATION_PATTERN))]
    pub max_eligible_duration: Option<String>,
    /// Allow active (standing) assignments with no end. Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_permanent_active: Option<bool>,
    /// Longest active assignment. Default 180d.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = DURATION_MAX_LEN), pattern(DURATION_PATTERN))]
    pub max_active_duration: Option<String>,
    /// An assignment must carry a justification. Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_justification: Option<bool>,
}

/// Who hears about what, per event, like Entra's notification matrix.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationSettings {
    /// Administrators' addresses, used by every event whose rule includes admins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = PRINCIPAL_MAX), pattern(PRINCIPAL_PATTERN)))]
    pub admins: Vec<String>,
    /// How long before the end the "expiring soon" reminder goes out. Default 15m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = DURATION_MAX_LEN), pattern(DURATION_PATTERN))]
    pub expiring_soon_lead: Option<String>,
    /// How long before an EligibleAssignment's end (after policy caps) its principal and the
    /// admins are reminded, as Entra does. Default 14d.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = DURATION_MAX_LEN), pattern(DURATION_PATTERN))]
    pub eligibility_ending_lead: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eligible_assigned: Option<NotificationRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_assigned: Option<NotificationRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation_requested: Option<NotificationRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided: Option<NotificationRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activated: Option<NotificationRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiring_soon: Option<NotificationRule>,
    /// An Eligible assignment, or a time-bound Active one, ends within
    /// `eligibilityEndingLead`. Default: the principal and the admins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eligibility_ending: Option<NotificationRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<NotificationRule>,
    /// One of the policy's `alerts` fired (on a request or an assignment). Default: the admins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<NotificationRule>,
}

/// Recipients of one event. Unset switches take the event's defaults.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationRule {
    /// Send to the admins list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admins: Option<bool>,
    /// Send to the requester or assignee.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<bool>,
    /// Send to the approvers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approvers: Option<bool>,
    /// Further addresses for this event only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = PRINCIPAL_MAX), pattern(PRINCIPAL_PATTERN)))]
    pub additional_recipients: Vec<String>,
    /// Send only the notifications that need action (requests to approve, failures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub critical_only: Option<bool>,
}

/// What the controller found when it read the policy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessPolicyStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`: the policy parses and its values are within the hard caps.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::cel::ListMerge::Map(vec!["type".into()]))]
    #[schemars(length(max = 8))]
    pub conditions: Vec<Condition>,
}
