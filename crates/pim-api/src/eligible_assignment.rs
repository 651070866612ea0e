//! `EligibleAssignment`: who may activate which role of which group.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::cel;
use super::common::{
    DURATION_MAX_LEN, DURATION_PATTERN, OBJECT_NAME_MAX, OBJECT_NAME_PATTERN, PrincipalRef, Role,
    TEXT_MAX,
};

/// Eligibility (or a time-bound standing assignment) of a user or group for a role.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "pim.dev",
    version = "v1alpha1",
    kind = "EligibleAssignment",
    status = "EligibleAssignmentStatus",
    shortname = "ea",
    category = "pim",
    derive = "PartialEq",
    derive = "Default",
    doc = "Makes a user, or the members of a directory group, eligible for (or actively assigned to) a role of a PimGroup.",
    printcolumn(name = "Group", type_ = "string", json_path = ".spec.group"),
    printcolumn(name = "Role", type_ = "string", json_path = ".spec.role"),
    printcolumn(name = "User", type_ = "string", json_path = ".spec.principal.user"),
    printcolumn(
        name = "Principal Group",
        type_ = "string",
        json_path = ".spec.principal.group"
    ),
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    // A string: a `date` column shows a future time as `<invalid>`. `Age` is the date column.
    printcolumn(
        name = "Ends",
        type_ = "string",
        json_path = ".status.effectiveEnd",
        description = "When the assignment ends (RFC 3339); blank when permanent"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        priority = 1,
        json_path = ".status.conditions[?(@.type==\"Effective\")].reason"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct EligibleAssignmentSpec {
    /// Name of the PimGroup.
    #[schemars(length(min = 1, max = OBJECT_NAME_MAX), pattern(OBJECT_NAME_PATTERN))]
    pub group: String,
    #[serde(default)]
    pub role: Role,
    pub principal: PrincipalRef,
    #[serde(default, rename = "type")]
    pub assignment_type: AssignmentType,
    pub schedule: Schedule,
    /// Why this assignment exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = TEXT_MAX))]
    pub justification: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum AssignmentType {
    /// May activate the role through an ActivationRequest.
    #[default]
    Eligible,
    /// Holds the role for the whole schedule, without activation.
    Active,
}

/// When the assignment holds: from `start` (default: creation) to `end`, for `duration`, or forever.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = cel::SCHEDULE_ONE_END.kube())]
pub struct Schedule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = DURATION_MAX_LEN), pattern(DURATION_PATTERN))]
    pub duration: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permanent: Option<bool>,
}

/// Lifecycle of an assignment.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum AssignmentPhase {
    /// The schedule has not started.
    Pending,
    /// Within its schedule and valid.
    Effective,
    /// The schedule has ended.
    Expired,
    /// Breaks a rule; never effective until fixed.
    Invalid,
    /// An access review denied it: it grants nothing, and its manifest is to be removed.
    Denied,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EligibleAssignmentStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<AssignmentPhase>,
    /// `Valid` (group, policy and caps check out), `Effective` (within the schedule now), and
    /// `Stale` when the policy's `alerts.notActivatedFor` is set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::cel::ListMerge::Map(vec!["type".into()]))]
    #[schemars(length(max = 8))]
    pub conditions: Vec<Condition>,
    /// The directory's id for the principal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_start: Option<Time>,
    /// End after policy caps; absent when permanent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_end: Option<Time>,
    /// When the directory last confirmed an activation under this assignment, as the operator
    /// saw it: kept here because finished requests are deleted after their retention, and the
    /// policy's `alerts.notActivatedFor` looks further back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activated_at: Option<Time>,
    /// Notifications sent about this assignment. Written only by the notifier, under its own
    /// field manager; the assignment reconciler carries it over and never applies it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<super::delivery::Delivery>,
}
