//! Who "I" am: the username and groups the API server authenticated, from the SelfSubjectReview
//! API, and the directory principal names that may stand for them.

use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use kube::api::{Api, PostParams};

use super::error::CliError;
use crate::api::PimGroup;
use crate::core::identity::{CaseInsensitive, principal_for, same_identity};

/// How names compare here. kubectl-pim does not read the operator's config, so it uses the
/// operator's default (`usernameMapping.caseInsensitive: emailLike`); the webhook has the last word.
pub const NAMES: CaseInsensitive = CaseInsensitive::EmailLike;

/// The caller as the API server sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Me {
    /// The Kubernetes username: what approval entries and the stamped requester carry.
    pub username: String,
    /// The Kubernetes groups.
    pub groups: Vec<String>,
    /// The names assignments may use for this caller as a directory user: the `--principal`
    /// given, or else the username and the username without a `prefix:`.
    pub names: Vec<String>,
    /// Whether `names` came from `--principal` / `PIM_PRINCIPAL`.
    pub principal_given: bool,
}

impl Me {
    /// `principal`: from `--principal` or `PIM_PRINCIPAL`; it replaces the guesses.
    pub fn new(username: String, groups: Vec<String>, principal: Option<String>) -> Me {
        let principal = principal
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty());
        let principal_given = principal.is_some();
        let names = match principal {
            Some(p) => vec![p],
            None => {
                let mut names = vec![username.clone()];
                if let Some(stripped) = strip_prefix(&username)
                    && !names.iter().any(|n| n == stripped)
                {
                    names.push(stripped.to_owned());
                }
                names
            }
        };
        Me {
            username,
            groups,
            names,
            principal_given,
        }
    }

    /// Whether `name` (a directory user in an assignment or a policy) is me.
    pub fn is(&self, name: &str) -> bool {
        self.names.iter().any(|n| same_identity(n, name, NAMES)) || self.is_username(name)
    }

    /// The names assignments and policies of `group` may use for me: exactly my principal in its
    /// directory when the operator published the directory's mapping in the PimGroup's status
    /// (none when my username is nobody there); else the guesses in [`Me::names`].
    pub fn names_in(&self, group: Option<&PimGroup>) -> Vec<String> {
        let mapping = group
            .and_then(|g| g.status.as_ref())
            .and_then(|s| s.username_mapping.as_ref());
        match mapping {
            Some(mapping) if !self.principal_given => principal_for(mapping, &self.username)
                .map(|p| vec![p])
                .unwrap_or_default(),
            _ => self.names.clone(),
        }
    }

    /// Whether `name` (a user in an assignment or a policy of `group`) is me.
    pub fn is_in(&self, group: Option<&PimGroup>, name: &str) -> bool {
        let known = group
            .and_then(|g| g.status.as_ref())
            .is_some_and(|s| s.username_mapping.is_some());
        if known && !self.principal_given {
            self.names_in(group)
                .iter()
                .any(|n| same_identity(n, name, NAMES))
        } else {
            self.is(name)
        }
    }

    /// Whether `username` (a stamped requester, an approval entry's approver) is my Kubernetes
    /// username.
    pub fn is_username(&self, username: &str) -> bool {
        same_identity(&self.username, username, NAMES)
    }

    /// Whether a group named in an assignment or a policy is one of my Kubernetes groups, as
    /// written: the webhook and the controller compare `userInfo.groups` exactly, so
    /// `oidc:finance` is not `finance` (a directory group of that name is the operator's to
    /// look up; see `unconfirmed_group_assignments`).
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }

    /// My groups as the operator's policy check sees them: exactly as authenticated.
    pub fn group_names(&self) -> Vec<String> {
        self.groups.clone()
    }

    /// "alice (each PimGroup maps it as its status says, else matched as alice, oidc:alice;
    /// Kubernetes groups: a, b)", for messages.
    pub fn describe(&self) -> String {
        let how = if self.principal_given {
            "principal from --principal/PIM_PRINCIPAL"
        } else {
            "as each PimGroup's directory maps it (its status.usernameMapping), else matched as"
        };
        let groups = if self.groups.is_empty() {
            "none".to_owned()
        } else {
            self.groups.join(", ")
        };
        format!(
            "{} ({how} {}; Kubernetes groups: {groups})",
            self.username,
            self.names.join(", ")
        )
    }
}

/// `oidc:alice` → `alice`. Service accounts (`system:serviceaccount:…`) keep their name.
fn strip_prefix(name: &str) -> Option<&str> {
    if name.starts_with("system:") {
        return None;
    }
    name.split_once(':')
        .map(|(_, rest)| rest)
        .filter(|r| !r.is_empty())
}

/// Asks the API server who the caller is (needs `create` on `selfsubjectreviews`, which every
/// authenticated user has by default).
pub async fn whoami(client: &kube::Client, principal: Option<String>) -> Result<Me, CliError> {
    let api: Api<SelfSubjectReview> = Api::all(client.clone());
    let review = api
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .map_err(|e| CliError::Identity(super::error::describe_api_error("ask who you are", &e)))?;
    let user = review
        .status
        .and_then(|s| s.user_info)
        .ok_or_else(|| CliError::Identity("the answer carries no userInfo".to_owned()))?;
    let username = user
        .username
        .filter(|u| !u.is_empty())
        .ok_or_else(|| CliError::Identity("the answer carries no username".to_owned()))?;
    Ok(Me::new(
        username,
        user.groups.unwrap_or_default(),
        principal,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::identity::UsernameMapping;

    fn group_mapping(mapping: Option<UsernameMapping>) -> PimGroup {
        let mut group: PimGroup = serde_json::from_value(serde_json::json!({
            "apiVersion": "pim.dev/v1alpha1", "kind": "PimGroup", "metadata": {"name": "g"},
            "spec": {"directory": "corp", "group": {"id": "g"}, "roles": {"member": {"policy": "p"}}}
        }))
        .unwrap();
        group.status = Some(crate::api::pim_group::PimGroupStatus {
            username_mapping: mapping,
            ..Default::default()
        });
        group
    }

    /// Issue 17 findings 1 and 8: with the mapping a PimGroup publishes, I am exactly my
    /// principal in its directory, or nobody; the guesses are only for groups without it.
    #[test]
    fn the_published_mapping_decides_who_i_am_in_a_group() {
        let oidc = UsernameMapping {
            strip_prefix: Some("oidc:".into()),
            append_domain: None,
        };
        let corp = group_mapping(Some(oidc));
        let rbac = group_mapping(Some(UsernameMapping::default()));
        let older = group_mapping(None);
        let alice = Me::new("oidc:alice@example.org".into(), vec![], None);
        assert_eq!(alice.names_in(Some(&corp)), ["alice@example.org"]);
        assert!(alice.is_in(Some(&corp), "alice@example.org"));
        assert!(!alice.is_in(Some(&corp), "oidc:alice@example.org"));
        assert_eq!(alice.names_in(Some(&rbac)), ["oidc:alice@example.org"]);
        assert!(!alice.is_in(Some(&rbac), "alice@example.org"));
        // An older operator published nothing: the guesses.
        assert!(alice.is_in(Some(&older), "alice@example.org"));
        // Another authenticator's alice@example.org is nobody in corp, and not oidc:alice.
        let other = Me::new("alice@example.org".into(), vec![], None);
        assert!(other.names_in(Some(&corp)).is_empty());
        assert!(!other.is_in(Some(&corp), "alice@example.org"));
        assert!(!other.is_in(Some(&rbac), "oidc:alice@example.org"));
        // --principal overrides.
        let given = Me::new("alice@example.org".into(), vec![], Some("a@x.org".into()));
        assert_eq!(given.names_in(Some(&corp)), ["a@x.org"]);
    }

    #[test]
    fn names_and_groups() {
        let me = Me::new(
            "oidc:alice@contoso.com".into(),
            vec!["oidc:finance".into(), "system:authenticated".into()],
            None,
        );
        assert_eq!(me.names, ["oidc:alice@contoso.com", "alice@contoso.com"]);
        assert!(me.is("alice@contoso.com"));
        // issue 14 finding 8: the identity provider's spelling of the day.
        assert!(me.is("Alice@Contoso.com"));
        assert!(me.is_username("oidc:ALICE@contoso.com"));
        assert!(!me.is("bob@contoso.com"));
        // Groups as authenticated only: the webhook compares them exactly.
        assert!(!me.in_group("finance"));
        assert!(me.in_group("oidc:finance"));
        assert!(!me.in_group("authenticated"));
        assert!(me.in_group("system:authenticated"));

        let given = Me::new(
            "oidc:alice".into(),
            vec![],
            Some(" alice@contoso.com ".into()),
        );
        assert_eq!(given.names, ["alice@contoso.com"]);
        assert!(given.principal_given);

        let sa = Me::new("system:serviceaccount:ci:deployer".into(), vec![], None);
        assert_eq!(sa.names, ["system:serviceaccount:ci:deployer"]);
    }
}
