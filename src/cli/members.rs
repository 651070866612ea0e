//! The current members of PimGroups' directory groups, for `simulate --members` and
//! `simulate --from-cluster`: what onboarding a group (or switching it to `standingAccess:
//! Remove`) would find there.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Deserialize;

use crate::api::PimGroup;
use crate::api::common::Role;
use crate::core::membership::Member;

/// Members by PimGroup and role.
pub type CurrentMembers = BTreeMap<String, BTreeMap<Role, BTreeSet<Member>>>;

/// Most entries a status list holds (`status.unexplainedMembers`).
const STATUS_LIST_MAX: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum MembersError {
    #[error("--members {path}: cannot read it: {error}")]
    Read { path: String, error: std::io::Error },
    #[error(
        "--members {path}: {error}; expected a mapping of PimGroup names to their roles' members, e.g. `team-admins: {{member: [alice@contoso.com, group:breakglass], owner: [carol@contoso.com]}}`"
    )]
    Parse { path: String, error: String },
    #[error("--members {path}: {group}: {why}")]
    Entry {
        path: String,
        group: String,
        why: String,
    },
    #[error(
        "--from-cluster: cannot reach the cluster ({0}); check KUBECONFIG and the current context"
    )]
    Connect(String),
    #[error("--from-cluster: cannot list PimGroups: {0}")]
    List(String),
}

/// One PimGroup's entry: its member role's list, or a list per role.
#[derive(Deserialize)]
#[serde(untagged)]
enum GroupEntry {
    Member(Vec<String>),
    Roles(BTreeMap<String, Vec<String>>),
}

/// `user:NAME`, `group:NAME`, or a bare NAME for a user, as `status.unexplainedMembers` lists
/// them.
pub fn parse_member(text: &str) -> Result<Member, String> {
    let member = match text.split_once(':') {
        Some(("user", name)) => Member::User(name.to_owned()),
        Some(("group", name)) => Member::Group(name.to_owned()),
        _ => Member::User(text.to_owned()),
    };
    match &member {
        Member::User(n) | Member::Group(n) if n.trim().is_empty() => {
            Err(format!("{text:?} names nobody"))
        }
        _ => Ok(member),
    }
}

/// Reads a `--members` file.
pub fn from_file(path: &Path) -> Result<CurrentMembers, MembersError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|error| MembersError::Read {
        path: shown.clone(),
        error,
    })?;
    let entries: BTreeMap<String, GroupEntry> =
        serde_saphyr::from_str(&text).map_err(|error| MembersError::Parse {
            path: shown.clone(),
            error: error.to_string(),
        })?;
    let mut out = CurrentMembers::new();
    for (group, entry) in entries {
        let bad = |why: String| MembersError::Entry {
            path: shown.clone(),
            group: group.clone(),
            why,
        };
        let lists = match entry {
            GroupEntry::Member(list) => BTreeMap::from([("member".to_owned(), list)]),
            GroupEntry::Roles(lists) => lists,
        };
        let roles = out.entry(group.clone()).or_default();
        for (role, list) in lists {
            let role = match role.as_str() {
                "member" => Role::Member,
                "owner" => Role::Owner,
                other => return Err(bad(format!("{other:?} is not a role; use member or owner"))),
            };
            for text in list {
                let member = parse_member(&text).map_err(&bad)?;
                roles.entry(role).or_default().insert(member);
            }
        }
    }
    Ok(out)
}

/// What the cluster's PimGroups list in status as members no grant explains (under `Adopt` or
/// `Report`), with a note for each list at its cap, where the group may hold more.
pub fn from_statuses(groups: &[PimGroup]) -> (CurrentMembers, Vec<String>) {
    let mut out = CurrentMembers::new();
    let mut notes = Vec::new();
    for group in groups {
        let (Some(name), Some(status)) = (&group.metadata.name, &group.status) else {
            continue;
        };
        for (role, list) in [
            (Role::Member, &status.unexplained_members),
            (Role::Owner, &status.unexplained_owners),
        ] {
            if list.len() >= STATUS_LIST_MAX {
                notes.push(format!(
                    "PimGroup {name:?} lists {} {role}s no grant explains, the most its status holds: the directory group may have more",
                    list.len()
                ));
            }
            for text in list {
                match parse_member(text) {
                    Ok(member) => {
                        out.entry(name.clone())
                            .or_default()
                            .entry(role)
                            .or_default()
                            .insert(member);
                    }
                    Err(why) => notes.push(format!("PimGroup {name:?}: skipped {why}")),
                }
            }
        }
    }
    (out, notes)
}

/// Lists the cluster's PimGroups (KUBECONFIG or in-cluster config).
pub fn from_cluster() -> Result<(CurrentMembers, Vec<String>), MembersError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| MembersError::Connect(e.to_string()))?;
    runtime.block_on(async {
        let client = kube::Client::try_default()
            .await
            .map_err(|e| MembersError::Connect(e.to_string()))?;
        let groups = kube::Api::<PimGroup>::all(client)
            .list(&Default::default())
            .await
            .map_err(|e| MembersError::List(e.to_string()))?;
        Ok(from_statuses(&groups.items))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_members_file_names_each_mistake() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("members.yaml");
        std::fs::write(
            &path,
            "team: [alice, 'group:breakglass']\nops: {member: ['user:bob'], owner: [carol]}\n",
        )
        .unwrap();
        let members = from_file(&path).unwrap();
        assert_eq!(
            members["team"][&Role::Member],
            [
                Member::User("alice".into()),
                Member::Group("breakglass".into())
            ]
            .into()
        );
        assert_eq!(
            members["ops"][&Role::Owner],
            [Member::User("carol".into())].into()
        );
        for (text, needle) in [
            ("team: {admin: [alice]}", "team: \"admin\" is not a role"),
            ("team: ['group:']", "team: \"group:\" names nobody"),
            ("team: 3", "expected a mapping of PimGroup names"),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = from_file(&path).unwrap_err().to_string();
            assert!(
                err.starts_with("--members ") && err.contains(needle),
                "{err}"
            );
        }
        let err = from_file(&dir.path().join("absent.yaml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot read it"), "{err}");
    }

    #[test]
    fn statuses_give_each_role_and_note_a_full_list() {
        let mut group = PimGroup::new("team", Default::default());
        group.status = Some(crate::api::pim_group::PimGroupStatus {
            unexplained_members: (0..100).map(|i| format!("user:u{i}")).collect(),
            unexplained_owners: vec!["group:owners".into()],
            ..Default::default()
        });
        let (members, notes) = from_statuses(&[group]);
        assert_eq!(members["team"][&Role::Member].len(), 100);
        assert_eq!(
            members["team"][&Role::Owner],
            [Member::Group("owners".into())].into()
        );
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("may have more"), "{notes:?}");
    }
}
