//! `AccessReview`: recurring recertification of who holds assignments, as Entra's access
//! reviews of PIM for Groups.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::activation_request::{ATTESTATION_MAX, Decision};
use super::cel;
use super::common::{
    DURATION_MAX_LEN, DURATION_PATTERN, OBJECT_NAME_MAX, OBJECT_NAME_PATTERN, PRINCIPAL_MAX,
    PRINCIPAL_PATTERN, PrincipalRef, Role, TEXT_MAX,
};
use super::eligible_assignment::AssignmentType;

/// Most decisions one review holds: every reviewer's, for every instance still kept.
pub const DECISIONS_MAX: usize = 4096;
/// Most assignments one instance reviews: with the latest completed instance and the denials,
/// status stays well within what the API server stores for one object (about 1.5 MB).
pub const ITEMS_MAX: usize = 500;
/// Most denials one review holds at once (until their manifests are removed).
pub const DENIED_MAX: usize = 1000;
/// Completed instances kept in status, newest first.
pub const INSTANCES_KEPT: usize = 4;

/// Reviewers confirm, instance by instance, that each assignment in scope should stay.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "pim.dev",
    version = "v1alpha1",
    kind = "AccessReview",
    status = "AccessReviewStatus",
    shortname = "arv",
    category = "pim",
    derive = "PartialEq",
    derive = "Default",
    doc = "Asks reviewers, once or on a recurring schedule, whether each assignment in scope should stay; a denied assignment grants nothing.",
    printcolumn(name = "Recurrence", type_ = "string", json_path = ".spec.schedule.recurrence"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.current.phase"),
    printcolumn(name = "Reviewed", type_ = "string", json_path = ".status.current.progress"),
    // A string: a `date` column shows a future time as `<invalid>`.
    printcolumn(
        name = "Ends",
        type_ = "string",
        json_path = ".status.current.end",
        description = "When the instance in progress ends (RFC 3339)"
    ),
    printcolumn(
        name = "Next",
        type_ = "string",
        priority = 1,
        json_path = ".status.nextStart"
    ),
    printcolumn(
        name = "To Remove",
        type_ = "integer",
        json_path = ".status.removalCount"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct AccessReviewSpec {
    /// What the review is for, shown to reviewers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = TEXT_MAX))]
    pub description: Option<String>,
    pub scope: ReviewScope,
    pub reviewers: Reviewers,
    pub schedule: ReviewSchedule,
    /// What an instance's end does to assignments nobody decided. Default Keep.
    #[serde(default)]
    pub when_unreviewed: UnreviewedAction,
    /// Recommend denial of an eligible assignment that has not been activated for this long
    /// (never activated: since it took effect). Default 30d, as Entra's recommendations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = DURATION_MAX_LEN), pattern(DURATION_PATTERN))]
    pub recommend_deny_after: Option<String>,
    /// How long before an instance ends reviewers with decisions left are reminded. Default 1d.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = DURATION_MAX_LEN), pattern(DURATION_PATTERN))]
    pub remind_before: Option<String>,
    /// Reviewers' decisions, written with `kubectl pim review`. The webhook stamps and signs
    /// each; each reviewer writes only their own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::cel::ListMerge::Map(vec!["instance".into(), "assignment".into(), "reviewer".into()]))]
    #[schemars(length(max = DECISIONS_MAX))]
    pub decisions: Vec<ReviewDecision>,
}

/// The assignments reviewed: of the chosen PimGroups, roles and types.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = cel::REVIEW_SCOPE_GROUPS.kube())]
pub struct ReviewScope {
    /// PimGroups by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 256),
        inner(length(min = 1, max = OBJECT_NAME_MAX), pattern(OBJECT_NAME_PATTERN))
    )]
    pub groups: Vec<String>,
    /// PimGroups by label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_selector: Option<LabelSelector>,
    /// Default: both roles.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 2))]
    pub roles: Vec<Role>,
    /// Default: both types.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 2))]
    pub assignment_types: Vec<AssignmentType>,
}

/// Who may decide. Any reviewer's decision counts; the latest one stands.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = cel::REVIEWERS_SOMEONE.kube())]
pub struct Reviewers {
    /// Users and directory groups (whose members review), as the webhook sees callers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub principals: Vec<PrincipalRef>,
    /// The principals review their own assignments (for a group-granted assignment, its
    /// members do).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub self_review: bool,
    /// The approvers of the policy of each assignment's group and role review it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub policy_approvers: bool,
}

/// Once, or every week, month or quarter from `start`, each instance lasting `duration`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReviewSchedule {
    /// The first instance's start.
    pub start: Time,
    #[serde(default)]
    pub recurrence: Recurrence,
    /// How long each instance takes decisions; no longer than the recurrence's period.
    #[schemars(length(min = 1, max = DURATION_MAX_LEN), pattern(DURATION_PATTERN))]
    pub duration: String,
}

// kube's derive asks the spec for `Default`; no schedule is a sensible one, so the epoch.
impl Default for ReviewSchedule {
    fn default() -> Self {
        Self {
            start: Time(Default::default()),
            recurrence: Recurrence::Once,
            duration: String::new(),
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Recurrence {
    #[default]
    Once,
    Weekly,
    /// On the same day of each month (the last day, in shorter months).
    Monthly,
    Quarterly,
}

/// What the end of an instance does to an assignment nobody decided.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum UnreviewedAction {
    #[default]
    Keep,
    Remove,
    /// Follow the recommendation: deny the assignments recommended for denial.
    Recommendation,
}

/// One reviewer's decision on one assignment in one instance.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReviewDecision {
    /// The instance's id: its start, in RFC 3339.
    #[schemars(length(min = 1, max = 64))]
    pub instance: String,
    /// Name of the EligibleAssignment.
    #[schemars(length(min = 1, max = OBJECT_NAME_MAX), pattern(OBJECT_NAME_PATTERN))]
    pub assignment: String,
    /// The reviewer's Kubernetes username.
    #[schemars(length(min = 1, max = PRINCIPAL_MAX), pattern(PRINCIPAL_PATTERN))]
    pub reviewer: String,
    pub decision: Decision,
    #[schemars(length(min = 1, max = TEXT_MAX))]
    pub reason: String,
    /// Stamped by the webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
    /// The uid of the assignment decided on; stamped by the webhook, so that a decision does
    /// not carry over to an assignment deleted and created again under the same name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub assignment_uid: Option<String>,
    /// Why the reviewer may decide (`user`, `group:NAME`, `self`, `approver`); stamped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = PRINCIPAL_MAX))]
    pub reviewer_as: Option<String>,
    /// The webhook's signature over this entry. The controller ignores one without a valid one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = ATTESTATION_MAX))]
    pub attestation: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum InstancePhase {
    /// Taking decisions.
    InProgress,
    /// Ended; its results are applied.
    Completed,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Outcome {
    Kept,
    Denied,
}

/// One assignment under review.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReviewItem {
    #[schemars(length(max = OBJECT_NAME_MAX))]
    pub assignment: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub uid: Option<String>,
    #[schemars(length(max = OBJECT_NAME_MAX))]
    pub group: String,
    pub role: Role,
    pub principal: PrincipalRef,
    #[serde(rename = "type")]
    pub assignment_type: AssignmentType,
    /// What activation history suggests; absent for Active assignments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recommendation: Option<Decision>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = TEXT_MAX))]
    pub recommendation_reason: Option<String>,
    /// The standing decision: the latest verified one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = PRINCIPAL_MAX))]
    pub decided_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = TEXT_MAX))]
    pub reason: Option<String>,
    /// Once the instance is completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
}

/// One run of the review.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReviewInstance {
    /// The start, in RFC 3339: what decisions name.
    #[schemars(length(max = 64))]
    pub id: String,
    pub start: Time,
    pub end: Time,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<InstancePhase>,
    /// `decided/total`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub progress: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = ITEMS_MAX))]
    pub items: Vec<ReviewItem>,
}

/// An assignment a completed instance denied: it grants nothing from `at` on, until its
/// manifest is removed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeniedAssignment {
    #[schemars(length(max = OBJECT_NAME_MAX))]
    pub assignment: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub uid: Option<String>,
    /// The instance that denied it.
    #[schemars(length(max = 64))]
    pub instance: String,
    pub at: Time,
    /// Who denied it, or `unreviewed` when the review's `whenUnreviewed` did.
    #[schemars(length(max = PRINCIPAL_MAX))]
    pub by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = TEXT_MAX))]
    pub reason: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessReviewStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Valid`, and `InProgress` while an instance takes decisions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::cel::ListMerge::Map(vec!["type".into()]))]
    #[schemars(length(max = 8))]
    pub conditions: Vec<Condition>,
    /// The instance in progress, or the latest completed one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<ReviewInstance>,
    /// Earlier completed instances, newest first; only the newest keeps its items (every
    /// decision stays in spec.decisions and the audit trail).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = INSTANCES_KEPT))]
    pub completed: Vec<ReviewInstance>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_start: Option<Time>,
    /// Assignments this review denied whose manifests still exist: remove them from Git.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = DENIED_MAX))]
    pub denied: Vec<DeniedAssignment>,
    /// `len(denied)`, for the printer column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removal_count: Option<i32>,
    /// Notifications sent about this review (see `EligibleAssignmentStatus::delivery`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<super::delivery::Delivery>,
}
