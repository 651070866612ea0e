//! `status.delivery` of ActivationRequests and EligibleAssignments: which notifications went out
//! and how far the audit trail got. The notifier writes it by server-side apply under its own
//! field manager ([`FIELD_MANAGER`]); the reconcilers of the two kinds never write it, so the
//! two writers never take fields from each other.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{OBJECT_NAME_MAX, PRINCIPAL_MAX, TEXT_MAX};

/// The field manager of `status.delivery`.
pub const FIELD_MANAGER: &str = "pim-operator-notify";

/// Most notification records kept on one object.
pub const NOTIFICATIONS_MAX: usize = 512;

/// What was told to whom, and what reached the audit trail.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// How many entries of `status.history`, from the first, have had their audit record
    /// emitted to every configured audit sink. Retention deletes a request only once this
    /// covers its whole history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub audited_transitions: Option<i32>,
    /// Facts the audit records named that the request itself does not hold, as they were
    /// when the latest audit record was emitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<AuditSnapshot>,
    /// One entry per (event, channel, recipient) that was sent, or given up on. An entry is
    /// never sent again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::cel::ListMerge::Map(vec!["event".into(), "channel".into(), "recipient".into()]))]
    #[schemars(length(max = NOTIFICATIONS_MAX))]
    pub notifications: Vec<NotificationRecord>,
}

/// The policy and directory ids behind a request, as the audit record saw them.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditSnapshot {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = OBJECT_NAME_MAX))]
    pub policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_generation: Option<i64>,
    /// The directory connection of the PimGroup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub directory: Option<String>,
    /// The directory's id of the group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = PRINCIPAL_MAX))]
    pub group_id: Option<String>,
    /// The directory's id of the principal, from the matched assignment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = PRINCIPAL_MAX))]
    pub principal_id: Option<String>,
    /// Whether the operator verified the MFA evidence stamped at admission.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mfa_verified: Option<bool>,
    /// Failed attempts to emit this request's audit records before they went through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub retries: Option<i32>,
}

/// How a notification ended.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum DeliveryOutcome {
    /// The channel accepted it.
    Sent,
    /// Refused for good, or still failing after the last retry; not sent again.
    Failed,
}

/// One notification, keyed by (event, channel, recipient).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationRecord {
    /// `activationRequested`, `approved`, `denied`, `activated`, `expiringSoon`, `ended`,
    /// `eligibleAssigned`, `activeAssigned` or `eligibilityEnding`.
    #[schemars(length(min = 1, max = 32))]
    pub event: String,
    /// The channel's name in the operator's config.
    #[schemars(length(min = 1, max = 63))]
    pub channel: String,
    /// An e-mail address, or `*` for a chat or webhook channel's audience.
    #[schemars(length(min = 1, max = PRINCIPAL_MAX))]
    pub recipient: String,
    pub outcome: DeliveryOutcome,
    pub time: Time,
    /// Attempts made, the successful one included.
    #[schemars(range(min = 1))]
    pub attempts: i32,
    /// The last error, for a failed one. Never holds credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = TEXT_MAX))]
    pub error: Option<String>,
    /// For `eligibilityEnding`: the assignment's end this reminder was about. When the end
    /// moves (renewed, or shortened), the reminder about the new end replaces this entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends: Option<Time>,
}

impl NotificationRecord {
    pub fn key(&self) -> (&str, &str, &str) {
        (&self.event, &self.channel, &self.recipient)
    }
}

impl Delivery {
    pub fn audited(&self) -> usize {
        self.audited_transitions
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(0)
    }

    /// Whether this notification is recorded: its key, and for a reminder about an end, the
    /// same end (compared to the second, as status stores it).
    pub fn has(&self, event: &str, channel: &str, recipient: &str, ends: Option<&Time>) -> bool {
        self.notifications
            .iter()
            .any(|r| r.key() == (event, channel, recipient) && same_end(r.ends.as_ref(), ends))
    }
}

/// Whether two reminder ends are the same instant, to the second.
pub fn same_end(a: Option<&Time>, b: Option<&Time>) -> bool {
    a.map(|t| t.0.as_second()) == b.map(|t| t.0.as_second())
}
