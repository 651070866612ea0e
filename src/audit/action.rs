//! Audit records of what is not an ActivationRequest transition: changes to the declarative
//! kinds as the validating webhook admitted or refused them (who, and the spec's diff), and
//! the operator's own directory writes that no request explains (Active-type assignments,
//! standing access removed under `standingAccess: Remove`).

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::record::RequesterRecord;
use crate::api::common::Role;
use crate::core::membership::Member;

/// What happened to the object named in an [`ActionRecord`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    Created,
    Updated,
    Deleted,
    /// The directory confirmed a membership an Active-type assignment grants.
    Granted,
    /// The directory confirmed the end of a membership an Active-type assignment granted.
    Removed,
    /// A member nothing of ours explains, removed under `standingAccess: Remove`.
    StandingAccessRemoved,
    /// A reviewer's decisions in an AccessReview (and nothing else of its spec) changed.
    Decided,
}

/// One line of the audit trail that is not a request transition. Lines of both shapes carry
/// `kind`, `time`, `principal` and `group`, which is what `kubectl pim audit` filters by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionRecord {
    /// Stable across repeats of the same record: the admission request's uid for changes,
    /// `<group>/<role>/<member>/<action>/<kind>/<name>/<time>` for directory writes.
    pub id: String,
    pub time: Timestamp,
    /// The kind of the object concerned: `EligibleAssignment`, `AccessPolicy` or `PimGroup`.
    pub kind: String,
    pub action: Action,
    /// The object's name.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_uid: Option<String>,
    /// Who made the change, as the API server authenticated them; absent for the operator's
    /// own directory writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<RequesterRecord>,
    /// For changes: whether the webhook admitted it. A refused change is recorded too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed: Option<bool>,
    /// Why the webhook refused it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denial: Option<String>,
    /// The user or group the object or write concerns (`spec.principal` of an assignment), by
    /// name as request records name theirs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// The PimGroup concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// An update that moved an assignment to another principal or group: the one it left,
    /// whose access the change ended (`kubectl pim audit --principal` finds it by either).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_principal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory_group_id: Option<String>,
    /// Every spec field that differs, by JSON pointer, before and after.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<SpecChange>,
}

/// One changed field of a spec. A field absent on one side has no `before` (or `after`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpecChange {
    /// A JSON pointer (RFC 6901) into the object: `/spec/activation/maxDuration`.
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Value>,
}

/// The kinds whose changes are audited from the webhook.
pub const AUDITED_KINDS: &[&str] = &[
    "EligibleAssignment",
    "AccessPolicy",
    "PimGroup",
    "AccessReview",
];

/// What the webhook saw of one admitted or refused change.
pub struct Change<'a> {
    /// The AdmissionRequest's uid.
    pub admission_uid: &'a str,
    pub kind: &'a str,
    pub action: Action,
    pub name: &'a str,
    pub object_uid: Option<&'a str>,
    pub user: RequesterRecord,
    /// The stored object (update and delete).
    pub old: Option<&'a Value>,
    /// The object as written (create and update).
    pub new: Option<&'a Value>,
    pub allowed: bool,
    pub denial: Option<String>,
}

/// The record of one change. Principal and group come from the object as written, or as it
/// was for a deletion.
pub fn change_record(change: Change<'_>, now: Timestamp) -> ActionRecord {
    let object = change.new.or(change.old);
    let field = |object: Option<&Value>, pointer: &str| {
        object
            .and_then(|o| o.pointer(pointer))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let principal_of = |object: Option<&Value>| {
        field(object, "/spec/principal/user").or_else(|| field(object, "/spec/principal/group"))
    };
    // A create with `generateName` reaches validation named, but the request's `name` may be
    // blank (k8s.io/apiserver names the object before validating admission).
    let name = if change.name.is_empty() {
        field(object, "/metadata/name").unwrap_or_default()
    } else {
        change.name.to_owned()
    };
    let assignment = change.kind == "EligibleAssignment";
    let (group, role) = match change.kind {
        "PimGroup" => (Some(name.clone()), None),
        "EligibleAssignment" => (
            field(object, "/spec/group"),
            Some(field(object, "/spec/role").unwrap_or_else(|| "member".to_owned())),
        ),
        _ => (None, None),
    };
    let principal = principal_of(object);
    let moved = |before: Option<String>, after: &Option<String>| {
        before.filter(|b| assignment && change.new.is_some() && Some(b) != after.as_ref())
    };
    let previous_principal = moved(principal_of(change.old), &principal);
    let previous_group = moved(field(change.old, "/spec/group"), &group);
    let mut changes = spec_diff(
        change.old.and_then(|o| o.get("spec")),
        change.new.and_then(|o| o.get("spec")),
    );
    let mut action = change.action;
    if change.kind == "AccessReview" {
        // One change per decision entry, keyed as the list is, rather than the whole list.
        let decisions_only = changes.iter().all(|c| c.path == "/spec/decisions");
        changes = changes
            .into_iter()
            .flat_map(|c| match c.path.as_str() {
                "/spec/decisions" => decision_changes(c.before.as_ref(), c.after.as_ref()),
                _ => vec![c],
            })
            .collect();
        if decisions_only && action == Action::Updated && !changes.is_empty() {
            action = Action::Decided;
        }
    }
    ActionRecord {
        id: change.admission_uid.to_owned(),
        time: now,
        kind: change.kind.to_owned(),
        action,
        name,
        object_uid: change.object_uid.map(str::to_owned),
        user: Some(change.user),
        allowed: Some(change.allowed),
        denial: change.denial,
        principal,
        group,
        previous_principal,
        previous_group,
        role,
        directory_group_id: None,
        changes,
    }
}

/// The entries of `spec.decisions` that differ, each under
/// `/spec/decisions/<instance>/<assignment>/<reviewer>` (RFC 6901 escaped).
fn decision_changes(before: Option<&Value>, after: Option<&Value>) -> Vec<SpecChange> {
    let keyed = |list: Option<&Value>| -> std::collections::BTreeMap<String, Value> {
        list.and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|d| {
                let part = |k: &str| {
                    d.get(k)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .replace('~', "~0")
                        .replace('/', "~1")
                };
                (
                    format!(
                        "/spec/decisions/{}/{}/{}",
                        part("instance"),
                        part("assignment"),
                        part("reviewer")
                    ),
                    d.clone(),
                )
            })
            .collect()
    };
    let (b, a) = (keyed(before), keyed(after));
    let paths: std::collections::BTreeSet<&String> = b.keys().chain(a.keys()).collect();
    paths
        .into_iter()
        .filter(|p| b.get(*p) != a.get(*p))
        .map(|p| SpecChange {
            path: p.clone(),
            before: b.get(p).cloned(),
            after: a.get(p).cloned(),
        })
        .collect()
}

/// Every leaf of `spec` that differs between `before` and `after`, as JSON pointers under
/// `/spec`. Objects are compared key by key; a list that changed is one change (its order
/// carries meaning: approver stages, for one). A creation or deletion is one change of the
/// whole spec.
pub fn spec_diff(before: Option<&Value>, after: Option<&Value>) -> Vec<SpecChange> {
    let mut changes = Vec::new();
    diff_into("/spec".to_owned(), before, after, &mut changes);
    changes
}

fn diff_into(
    path: String,
    before: Option<&Value>,
    after: Option<&Value>,
    out: &mut Vec<SpecChange>,
) {
    match (before, after) {
        (Some(Value::Object(b)), Some(Value::Object(a))) => {
            let keys: std::collections::BTreeSet<&String> = b.keys().chain(a.keys()).collect();
            for key in keys {
                let escaped = key.replace('~', "~0").replace('/', "~1");
                diff_into(format!("{path}/{escaped}"), b.get(key), a.get(key), out);
            }
        }
        (b, a) if b == a => {}
        (b, a) => out.push(SpecChange {
            path,
            before: b.cloned(),
            after: a.cloned(),
        }),
    }
}

/// A directory write the operator made that no ActivationRequest explains.
pub struct DirectoryWrite<'a> {
    pub action: Action,
    /// `EligibleAssignment` (with the assignment's name) or `PimGroup` (with the group's).
    pub kind: &'a str,
    pub name: &'a str,
    pub group: &'a str,
    pub role: Role,
    pub member: &'a Member,
    pub directory_group_id: &'a str,
}

/// The record of a directory write, made when the directory confirmed it. Its id names the
/// group, role, member, action, the object that explains it and the time: a member removed by
/// hand and granted again is two grants, and two Active assignments of one member are two
/// records, each with its own id.
pub fn directory_write_record(write: DirectoryWrite<'_>, now: Timestamp) -> ActionRecord {
    ActionRecord {
        id: format!(
            "{}/{}/{}/{:?}/{}/{}/{now}",
            write.group, write.role, write.member, write.action, write.kind, write.name
        ),
        time: now,
        kind: write.kind.to_owned(),
        action: write.action,
        name: write.name.to_owned(),
        object_uid: None,
        user: None,
        allowed: None,
        denial: None,
        principal: Some(match write.member {
            Member::User(name) | Member::Group(name) => name.clone(),
        }),
        group: Some(write.group.to_owned()),
        previous_principal: None,
        previous_group: None,
        role: Some(write.role.to_string()),
        directory_group_id: Some(write.directory_group_id.to_owned()),
        changes: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_spec_diff_names_each_changed_leaf_by_pointer() {
        let before =
            json!({"activation": {"maxDuration": "8h", "requireMfa": true}, "approvers": ["a"]});
        let after = json!({"activation": {"maxDuration": "2h", "requireMfa": true, "a/b": 1}, "approvers": ["a", "b"]});
        let changes = spec_diff(Some(&before), Some(&after));
        let paths: Vec<&str> = changes.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/spec/activation/a~1b",
                "/spec/activation/maxDuration",
                "/spec/approvers"
            ]
        );
        assert_eq!(changes[0].before, None);
        assert_eq!(changes[1].before, Some(json!("8h")));
        assert_eq!(changes[1].after, Some(json!("2h")));
        assert_eq!(changes[2].after, Some(json!(["a", "b"])));
        assert!(spec_diff(Some(&before), Some(&before)).is_empty());
    }

    #[test]
    fn a_creation_has_the_spec_as_written_and_a_deletion_the_spec_as_it_was() {
        let object = json!({"metadata": {"name": "ops-alice"}, "spec": {"group": "ops", "principal": {"user": "alice@contoso.com"}, "type": "Active"}});
        let user = RequesterRecord {
            username: "oidc:carol".into(),
            uid: None,
            groups: vec!["platform".into()],
        };
        let created = change_record(
            Change {
                admission_uid: "a-1",
                kind: "EligibleAssignment",
                action: Action::Created,
                name: "ops-alice",
                object_uid: None,
                user: user.clone(),
                old: None,
                new: Some(&object),
                allowed: true,
                denial: None,
            },
            "2026-12-01T00:00:00Z".parse().unwrap(),
        );
        assert_eq!(created.principal.as_deref(), Some("alice@contoso.com"));
        assert_eq!(created.group.as_deref(), Some("ops"));
        assert_eq!(created.role.as_deref(), Some("member"));
        // A creation is one change: the whole spec as written.
        assert_eq!(created.changes.len(), 1);
        assert_eq!(created.changes[0].path, "/spec");
        assert_eq!(created.changes[0].after, object.get("spec").cloned());
        let deleted = change_record(
            Change {
                admission_uid: "a-2",
                kind: "EligibleAssignment",
                action: Action::Deleted,
                name: "ops-alice",
                object_uid: Some("uid-9"),
                user,
                old: Some(&object),
                new: None,
                allowed: false,
                denial: Some("last member".into()),
            },
            "2026-12-01T00:00:00Z".parse().unwrap(),
        );
        assert_eq!(deleted.group.as_deref(), Some("ops"));
        assert_eq!(deleted.changes[0].before, object.get("spec").cloned());
        assert_eq!(deleted.changes[0].after, None);
        // Moved from alice to bob: filed under bob, with alice as the one who lost it.
        let mut moved = object.clone();
        moved["spec"]["principal"] = serde_json::json!({"user": "bob@contoso.com"});
        let updated = change_record(
            Change {
                admission_uid: "a-3",
                kind: "EligibleAssignment",
                action: Action::Updated,
                name: "",
                object_uid: None,
                user: RequesterRecord::default(),
                old: Some(&object),
                new: Some(&moved),
                allowed: true,
                denial: None,
            },
            "2026-12-01T00:00:00Z".parse().unwrap(),
        );
        assert_eq!(updated.name, "ops-alice");
        assert_eq!(updated.principal.as_deref(), Some("bob@contoso.com"));
        assert_eq!(
            updated.previous_principal.as_deref(),
            Some("alice@contoso.com")
        );
        assert_eq!(updated.previous_group, None);
        assert_eq!(deleted.previous_principal, None);
        let line = serde_json::to_value(&deleted).unwrap();
        assert_eq!(line["kind"], "EligibleAssignment");
        assert_eq!(line["action"], "Deleted");
        assert_eq!(line["allowed"], false);
        assert_eq!(line["user"]["username"], "oidc:carol");
    }

    #[test]
    fn a_review_decision_is_a_decided_record_with_one_change_per_entry() {
        let entry = |reviewer: &str, decision: &str| json!({"instance": "2026-12-01T09:00:00Z", "assignment": "ops-alice", "reviewer": reviewer, "decision": decision, "reason": "r"});
        let spec = json!({"scope": {"groups": ["ops"]}, "decisions": [entry("bob", "Approve")]});
        let old = json!({"metadata": {"name": "ops-review"}, "spec": spec});
        let mut new = old.clone();
        new["spec"]["decisions"] = json!([entry("bob", "Approve"), entry("carol", "Deny")]);
        let record = |old: &Value, new: &Value| {
            change_record(
                Change {
                    admission_uid: "a-4",
                    kind: "AccessReview",
                    action: Action::Updated,
                    name: "ops-review",
                    object_uid: None,
                    user: RequesterRecord::default(),
                    old: Some(old),
                    new: Some(new),
                    allowed: true,
                    denial: None,
                },
                "2026-12-01T10:00:00Z".parse().unwrap(),
            )
        };
        let decided = record(&old, &new);
        assert_eq!(decided.action, Action::Decided);
        assert_eq!(decided.changes.len(), 1, "bob's entry did not change");
        assert_eq!(
            decided.changes[0].path,
            "/spec/decisions/2026-12-01T09:00:00Z/ops-alice/carol"
        );
        assert_eq!(decided.changes[0].before, None);
        assert_eq!(decided.changes[0].after, Some(entry("carol", "Deny")));
        // A change of the scope too is an update, its decisions still entry by entry.
        let mut widened = new.clone();
        widened["spec"]["scope"]["groups"] = json!(["ops", "fin"]);
        let updated = record(&old, &widened);
        assert_eq!(updated.action, Action::Updated);
        let paths: Vec<&str> = updated.changes.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/spec/decisions/2026-12-01T09:00:00Z/ops-alice/carol",
                "/spec/scope/groups"
            ]
        );
    }
}
