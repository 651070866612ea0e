//! `PimGrant`: one entry of the grant ledger (DESIGN §5). The operator writes it before it adds a
//! member to a directory group, and deletes it only once the directory confirmed the removal, so
//! the next leader knows every grant it must take back, wherever it was written.
//!
//! Why one object per grant and not a list in `PimGroup.status`: a compact ledger entry is about
//! 190 bytes of JSON, so 10,000 members would make a status of about 1.9 MB, over etcd's
//! default request limit of 1.5 MiB (`--max-request-bytes`); see `ledger_size_at_10k_members`.
//!
//! Only the operator writes these (its ClusterRole); everyone with `pim-auditor` may read them.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::cel;
use super::common::{OBJECT_NAME_MAX, PRINCIPAL_MAX, Role};

/// Label with the PimGroup a grant was made for (shortened with a hash past the 63 characters a
/// label value may have: `directory::kubernetes::group_label_value`).
pub const GROUP_LABEL: &str = "pim.dev/group";

/// A grant the operator made (or is about to make) in a directory group.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "pim.dev",
    version = "v1alpha1",
    kind = "PimGrant",
    shortname = "pgr",
    category = "pim",
    derive = "PartialEq",
    doc = "One entry of pim-operator's grant ledger: a membership it made, kept until the directory confirms its removal. Written by the operator only.",
    printcolumn(name = "Group", type_ = "string", json_path = ".spec.group"),
    printcolumn(name = "Role", type_ = "string", json_path = ".spec.role"),
    printcolumn(name = "Member", type_ = "string", json_path = ".spec.member"),
    printcolumn(name = "Source", type_ = "string", json_path = ".spec.source.name"),
    printcolumn(name = "Ends", type_ = "string", json_path = ".spec.end"),
    printcolumn(
        name = "Directory",
        type_ = "string",
        priority = 1,
        json_path = ".spec.directory"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = cel::GRANT_IS_IMMUTABLE.kube())]
pub struct PimGrantSpec {
    /// The PimGroup the grant was made for.
    #[schemars(length(min = 1, max = OBJECT_NAME_MAX))]
    pub group: String,
    /// The directory connection it was written through.
    #[schemars(length(min = 1, max = 63))]
    pub directory: String,
    /// The directory's id of the group it was written to.
    #[schemars(length(min = 1, max = PRINCIPAL_MAX))]
    pub group_id: String,
    pub role: Role,
    /// `user:<name>` or `group:<name>`, as the operator wrote it to the directory.
    #[schemars(length(min = 1, max = 520))]
    pub member: String,
    /// What justified it.
    pub source: GrantSourceRef,
    /// The window the grant was made for; `end` absent means no end (a permanent assignment).
    pub start: Time,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<Time>,
}

/// The object whose grant this is; its uid tells a re-created object of the same name apart.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct GrantSourceRef {
    pub kind: GrantSourceKind,
    #[schemars(length(min = 1, max = OBJECT_NAME_MAX))]
    pub name: String,
    #[schemars(length(min = 1, max = 128))]
    pub uid: String,
}

#[derive(
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    JsonSchema,
)]
pub enum GrantSourceKind {
    #[default]
    ActivationRequest,
    EligibleAssignment,
}

impl GrantSourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            GrantSourceKind::ActivationRequest => "ActivationRequest",
            GrantSourceKind::EligibleAssignment => "EligibleAssignment",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Why the ledger is not a list in `PimGroup.status` (issue 14 asks to measure at 10,000
    /// members): even the most compact entry (member, role, source uid, window; the group's
    /// identity stored once) makes a status over etcd's default request limit of 1.5 MiB.
    #[test]
    fn ledger_size_at_10k_members() {
        let entries: Vec<serde_json::Value> = (0..10_000)
            .map(|i| {
                serde_json::json!({
                    "member": format!("user:employee{i:05}@contoso.com"),
                    "role": "member",
                    "source": format!("ar/finreport-{i:05}"),
                    "uid": format!("{:08x}-8d7b-4f3c-9a53-2c1f6e0b{:04x}", i, i % 65536),
                    "start": "2026-12-02T09:00:00Z",
                    "end": "2026-12-02T17:00:00Z",
                })
            })
            .collect();
        let status = serde_json::json!({"ledger": entries});
        let bytes = serde_json::to_vec(&status).map(|v| v.len()).unwrap_or(0);
        eprintln!("a PimGroup status ledger of 10,000 members: {bytes} bytes");
        const ETCD_DEFAULT_REQUEST_LIMIT: usize = 1536 * 1024;
        assert!(bytes > ETCD_DEFAULT_REQUEST_LIMIT, "{bytes}");
        // One PimGrant per grant stays small whatever the group's size.
        let one = PimGrant::new(
            "finreport-member-0123456789abcdef0123",
            PimGrantSpec {
                group: "finreport".into(),
                directory: "entra".into(),
                group_id: "2b5ed229-4a4f-4cb0-8d7b-0f3c9a532c1f".into(),
                role: Role::Member,
                member: "user:employee00001@contoso.com".into(),
                source: GrantSourceRef {
                    kind: GrantSourceKind::ActivationRequest,
                    name: "finreport-00001".into(),
                    uid: "00000001-8d7b-4f3c-9a53-2c1f6e0b0001".into(),
                },
                start: Time("2026-12-02T09:00:00Z".parse().unwrap()),
                end: Some(Time("2026-12-02T17:00:00Z".parse().unwrap())),
            },
        );
        let one = serde_json::to_vec(&one).map(|v| v.len()).unwrap_or(0);
        eprintln!("one PimGrant: {one} bytes");
        assert!(one < 1024, "{one}");
    }
}
