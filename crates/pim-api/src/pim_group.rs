//! `PimGroup`: a directory group brought under PIM.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::cel;
use super::common::{
    OBJECT_NAME_MAX, OBJECT_NAME_PATTERN, PRINCIPAL_MAX, PRINCIPAL_PATTERN, TEXT_MAX,
};

/// Name of the built-in directory that grants Kubernetes RBAC.
pub const KUBERNETES_DIRECTORY: &str = "kubernetes";

/// A privileged directory group whose membership the operator converges.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "pim.dev",
    version = "v1alpha1",
    kind = "PimGroup",
    status = "PimGroupStatus",
    shortname = "pg",
    category = "pim",
    derive = "PartialEq",
    derive = "Default",
    doc = "A directory group brought under PIM: who may hold its roles is decided by activation.",
    printcolumn(name = "Directory", type_ = "string", json_path = ".spec.directory"),
    printcolumn(name = "Group ID", type_ = "string", json_path = ".status.groupId"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "In Sync",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"InSync\")].status"
    ),
    printcolumn(
        name = "Standing",
        type_ = "string",
        priority = 1,
        json_path = ".spec.standingAccess"
    ),
    printcolumn(
        name = "Eligible",
        type_ = "integer",
        json_path = ".status.eligiblePrincipals"
    ),
    printcolumn(
        name = "Active",
        type_ = "integer",
        json_path = ".status.activePrincipals"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        priority = 1,
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = cel::RBAC_NEEDS_KUBERNETES.kube(),
    validation = cel::ADOPT_AFTER_NEEDS_ADOPT.kube()
)]
pub struct PimGroupSpec {
    /// Name of a directory connection in the operator's config. Default `kubernetes`.
    #[serde(default = "default_directory")]
    #[schemars(length(min = 1, max = 63), pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub directory: String,
    pub group: DirectoryGroupRef,
    pub roles: GroupRoles,
    /// What to do with members that no active grant explains. Default Adopt: a group brought
    /// under PIM keeps its members (listed in `status.unexplainedMembers`) until `Remove` is set
    /// deliberately or `adoptAfter` has passed.
    #[serde(default)]
    pub standing_access: StandingAccess,
    /// With `standingAccess: Adopt`, when adoption ends and members no grant explains start
    /// being removed, as under `Remove`. Unset: adoption lasts until the spec changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adopt_after: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// Members the operator never removes, whatever `standingAccess` says and whether or not
    /// a grant explains them: break-glass accounts, a standing owner. Principals as the
    /// directory names them. The operator does not add them either.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub protected_members: Vec<super::common::PrincipalRef>,
    /// Never remove the last member of a role: when every member would go, the operator keeps
    /// one (preferring one it did not grant) until another member is in, as Entra keeps the
    /// last Global Administrator. The webhook refuses to end the last grant of such a group.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub protect_last_member: bool,
    /// For the kubernetes directory: the RBAC roles that membership confers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rbac: Option<RbacGrant>,
}

fn default_directory() -> String {
    KUBERNETES_DIRECTORY.to_owned()
}

/// Which directory group: by id (object id or DN), or by display name.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = cel::GROUP_ID_OR_NAME.kube(),
    validation = cel::CREATE_NEEDS_NAME.kube()
)]
pub struct DirectoryGroupRef {
    /// Object id (Entra), DN (LDAP) or group name (kubernetes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = PRINCIPAL_MAX), pattern(PRINCIPAL_PATTERN))]
    pub id: Option<String>,
    /// Display name; exactly one directory group must carry it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256), pattern(PRINCIPAL_PATTERN))]
    pub display_name: Option<String>,
    /// Create a security group with this display name when none exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create: Option<bool>,
    /// Description for a created group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = TEXT_MAX))]
    pub description: Option<String>,
}

/// The AccessPolicy that governs each role of the group.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupRoles {
    pub member: RoleSettings,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<RoleSettings>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoleSettings {
    /// Name of the AccessPolicy for this role.
    #[schemars(length(min = 1, max = OBJECT_NAME_MAX), pattern(OBJECT_NAME_PATTERN))]
    pub policy: String,
}

/// Treatment of members that no active grant explains.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum StandingAccess {
    /// Onboarding: as `Report` until `adoptAfter` (or until the spec says `Remove`), then as
    /// `Remove`. What a new PimGroup starts in, so that bringing a group under PIM empties
    /// nothing before someone has read its `status.unexplainedMembers`.
    #[default]
    Adopt,
    /// Remove them: membership equals the desired set.
    Remove,
    /// Remove only members the operator granted; list the others in status.
    Report,
}

/// RBAC roles bound to the group's active members (kubernetes directory).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = cel::RBAC_NAMES_A_ROLE.kube())]
pub struct RbacGrant {
    /// ClusterRoles bound cluster-wide with ClusterRoleBindings.
    #[serde(default)]
    #[schemars(length(max = 32), inner(length(min = 1, max = OBJECT_NAME_MAX), pattern(r"^[^/\x00-\x1f\x7f]+$")))]
    pub cluster_roles: Vec<String>,
    /// Roles (or ClusterRoles) bound in one namespace with RoleBindings.
    #[serde(default)]
    #[schemars(length(max = 64))]
    pub namespace_roles: Vec<NamespaceRole>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceRole {
    #[schemars(length(min = 1, max = 63), pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub namespace: String,
    #[serde(default)]
    pub kind: RoleKind,
    #[schemars(length(min = 1, max = OBJECT_NAME_MAX), pattern(r"^[^/\x00-\x1f\x7f]+$"))]
    pub name: String,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RoleKind {
    #[default]
    Role,
    ClusterRole,
}

/// What the controller found in the directory.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PimGroupStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The directory's id for the group, once resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
    /// `Ready` (group resolved, policies found) and `InSync` (membership equals the desired set).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::cel::ListMerge::Map(vec!["type".into()]))]
    #[schemars(length(max = 8))]
    pub conditions: Vec<Condition>,
    /// Principals with an effective eligible assignment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eligible_principals: Option<i32>,
    /// Principals holding the group now through the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_principals: Option<i32>,
    /// When the members this PimGroup's grants put in the directory before the grant ledger
    /// existed were recorded in it (once, on the first pass after an upgrade).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger_adopted_at: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// Members of the member role that no active grant explains, kept under standingAccess
    /// Adopt or Report, capped at 100 (`user:NAME` or `group:NAME`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub unexplained_members: Vec<String>,
    /// The same for the owner role.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub unexplained_owners: Vec<String>,
    /// How Kubernetes usernames become principals of this group's directory, as the operator is
    /// configured (`{}`: as the API server authenticated them). `kubectl pim` reads it to know
    /// which assignments are the caller's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_mapping: Option<super::common::UsernameMapping>,
}
