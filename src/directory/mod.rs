//! Directories hold the groups whose membership PIM converges (DESIGN §6). Each backend offers
//! the same small, idempotent operations: an add of a present member and a remove of an absent
//! one are both success.

pub mod entra;
pub mod instrumented;
pub mod kubernetes;
pub mod ldap;
pub mod memory;

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;

use crate::api::PimGroup;
use crate::api::common::Role;
use crate::core::membership::Member;

/// How a directory call failed, which decides whether to retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectoryError {
    /// Worth retrying: throttling, timeouts, 5xx, a dropped connection; or a rule of the
    /// directory's own that lifts in time (`refused`: Entra's five minutes, say).
    #[error("{operation}: {message} (will retry)")]
    Transient {
        operation: &'static str,
        message: String,
        retry_after: Option<std::time::Duration>,
        /// The directory refused it by a rule of its own, not a passing fault (429, 5xx, a
        /// timeout): only such refusals are reported to the requests waiting on a removal.
        refused: bool,
    },
    /// Retrying will not help until something changes: bad credentials, a missing group,
    /// an ambiguous name.
    #[error("{operation}: {message}")]
    Permanent {
        operation: &'static str,
        message: String,
    },
}

impl DirectoryError {
    pub fn is_transient(&self) -> bool {
        matches!(self, DirectoryError::Transient { .. })
    }

    pub fn transient(operation: &'static str, message: impl Into<String>) -> Self {
        DirectoryError::Transient {
            operation,
            message: message.into(),
            retry_after: None,
            refused: false,
        }
    }

    /// A refusal by a rule of the directory's own that lifts by `retry_after`.
    pub fn refused(
        operation: &'static str,
        message: impl Into<String>,
        retry_after: std::time::Duration,
    ) -> Self {
        DirectoryError::Transient {
            operation,
            message: message.into(),
            retry_after: Some(retry_after),
            refused: true,
        }
    }

    /// Whether requests waiting on this removal report it as the directory's refusal: a
    /// permanent error, or a refusal by the directory's own rule that lasts longer than `grace`.
    /// A passing fault (a long 429, say) is not a refusal, however long it asks to wait.
    pub fn is_lasting_refusal(&self, grace: std::time::Duration) -> bool {
        match self {
            DirectoryError::Permanent { .. } => true,
            DirectoryError::Transient {
                retry_after,
                refused,
                ..
            } => *refused && retry_after.is_some_and(|after| after > grace),
        }
    }

    pub fn permanent(operation: &'static str, message: impl Into<String>) -> Self {
        DirectoryError::Permanent {
            operation,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod error_tests {
    use super::DirectoryError;
    use std::time::Duration;

    #[test]
    fn only_permanent_errors_and_lasting_rules_are_refusals() {
        let grace = Duration::from_secs(60);
        let throttled = DirectoryError::Transient {
            operation: "remove member",
            message: "429 TooManyRequests".into(),
            retry_after: Some(Duration::from_secs(600)),
            refused: false,
        };
        assert!(
            !throttled.is_lasting_refusal(grace),
            "a long 429 is no refusal"
        );
        let five_minutes =
            DirectoryError::refused("remove member", "too soon", Duration::from_secs(180));
        assert!(five_minutes.is_lasting_refusal(grace));
        let shortly = DirectoryError::refused("remove member", "too soon", Duration::from_secs(20));
        assert!(!shortly.is_lasting_refusal(grace), "within the grace");
        assert!(DirectoryError::permanent("remove member", "no").is_lasting_refusal(grace));
    }
}

/// What a directory recorded for a grant, where it keeps its own record of it (Entra PIM for
/// Groups: the assignment schedule request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryReceipt {
    /// The directory's id of the change, e.g. the Graph schedule request id.
    pub id: String,
    /// What was asked, e.g. `adminAssign` or `adminUpdate`.
    pub action: String,
    /// Its status as the directory answered, e.g. `Provisioned`.
    pub status: String,
    /// The end the directory enforces; `None`: none.
    pub until: Option<jiff::Timestamp>,
}

/// When `member`'s access ends over the grants covering `now` (`None` when one has no end), and
/// the request whose grant ends last: the one a directory receipt belongs to.
pub fn access_until(
    grants: &[crate::core::membership::Grant],
    member: &Member,
    now: jiff::Timestamp,
) -> (Option<jiff::Timestamp>, Option<String>) {
    use crate::core::membership::GrantSource;
    let covering: Vec<_> = grants
        .iter()
        .filter(|g| &g.member == member && g.covers(now))
        .collect();
    if covering.iter().any(|g| g.end.is_none()) {
        return (None, None);
    }
    let last = covering.iter().max_by_key(|g| g.end);
    let request = last.and_then(|g| match &g.source {
        GrantSource::Request(name) => Some(name.clone()),
        GrantSource::Assignment(_) => None,
    });
    (last.and_then(|g| g.end), request)
}

/// The group a PimGroup governs, as the directory identifies it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupId(pub String);

/// One directory connection.
#[async_trait]
pub trait Directory: Send + Sync {
    /// Short backend name for metrics and messages: `memory`, `kubernetes`, `entra`, `ldap`.
    fn backend(&self) -> &'static str;

    /// Finds (or, when the spec asks, creates) the directory group of a PimGroup.
    async fn ensure_group(&self, group: &PimGroup) -> Result<GroupId, DirectoryError>;

    /// The current members of a role of the group.
    async fn list_members(
        &self,
        group: &GroupId,
        role: Role,
    ) -> Result<BTreeSet<Member>, DirectoryError>;

    /// Adds a member; success when already present.
    async fn add_member(
        &self,
        group: &GroupId,
        role: Role,
        member: &Member,
    ) -> Result<(), DirectoryError>;

    /// Removes a member; success when already absent.
    async fn remove_member(
        &self,
        group: &GroupId,
        role: Role,
        member: &Member,
    ) -> Result<(), DirectoryError>;

    /// Adds a member whose grants end at `until` (`None`: no end). A directory that ends access
    /// itself (Entra PIM for Groups) is given the end, and answers with what it recorded; a
    /// directory already holding the member moves its end to `until`. Default: `add_member`,
    /// with no receipt.
    async fn add_member_until(
        &self,
        group: &GroupId,
        role: Role,
        member: &Member,
        until: Option<jiff::Timestamp>,
    ) -> Result<Option<DirectoryReceipt>, DirectoryError> {
        let _ = until;
        self.add_member(group, role, member).await.map(|()| None)
    }

    /// Whether this directory ends access itself at the end given to `add_member_until`.
    fn enforces_ends(&self) -> bool {
        false
    }

    /// Whether this directory refuses to remove a group's last owner and has nobody to hand
    /// ownership to first (Entra in membership mode without `fallbackOwner`), so that a
    /// just-in-time owner who is the only owner is never removed. Default: no.
    fn keeps_last_owner(&self) -> bool {
        false
    }

    /// For a member already present: whether the end the directory holds differs from `until`,
    /// so `add_member_until` must move it (a later overlapping grant, or a shortened one). From
    /// what the last listing said; never a directory call. Default: never.
    fn needs_new_end(
        &self,
        group: &GroupId,
        role: Role,
        member: &Member,
        until: Option<jiff::Timestamp>,
    ) -> bool {
        let _ = (group, role, member, until);
        false
    }

    /// How this directory's listings spell `member`, when they spell the same principal
    /// otherwise (Entra lists users by UPN, while a principal may be given by object id or in
    /// other letter case), so that a plan never removes and re-adds a member over spelling.
    /// From what earlier listings and lookups showed; never a directory call. Default: `None`.
    fn listed_as(&self, member: &Member) -> Option<Member> {
        let _ = member;
        None
    }

    /// The directory's own id of a principal (Entra: the object id; LDAP: the DN; Kubernetes
    /// RBAC: the subject name itself), for the audit trail. `Ok(None)` when it has none.
    async fn principal_id(&self, member: &Member) -> Result<Option<String>, DirectoryError> {
        let _ = member;
        Ok(None)
    }

    /// Whether the user `principal` belongs to the directory group `group` (a DN, id or name),
    /// directly or through nested groups, for eligibility granted to a group. `Ok(None)` when this
    /// backend cannot tell; the groups the API server reported for the requester then decide.
    async fn is_member_of(
        &self,
        principal: &str,
        group: &str,
    ) -> Result<Option<bool>, DirectoryError> {
        let _ = (principal, group);
        Ok(None)
    }
}

/// How a Kubernetes username becomes one directory's principal (`directories.NAME.usernameMapping`):
/// one to one, so a username without the expected form is nobody in that directory.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DirectoryUsernameMapping {
    /// Required at the start of the username, and removed, e.g. `oidc:`. Usernames without it
    /// have no principal in the directory.
    #[serde(default)]
    pub strip_prefix: Option<String>,
    /// Appended to the name, e.g. `@contoso.com`. Names that already contain `@` have no
    /// principal in the directory.
    #[serde(default)]
    pub append_domain: Option<String>,
}

impl DirectoryUsernameMapping {
    /// `appendDomain` must be `@` and a domain: `contoso.com` would make `alicecontoso.com`.
    pub fn validate(&self) -> Result<(), String> {
        let Some(domain) = self.append_domain.as_deref().filter(|d| !d.is_empty()) else {
            return Ok(());
        };
        let well_formed = domain
            .strip_prefix('@')
            .is_some_and(|rest| !rest.is_empty() && !rest.contains('@'));
        if well_formed {
            Ok(())
        } else {
            Err(format!(
                "appendDomain: {domain:?} must be '@' and a domain, such as \"@contoso.com\""
            ))
        }
    }

    pub fn mapping(&self) -> crate::core::identity::UsernameMapping {
        crate::core::identity::UsernameMapping {
            strip_prefix: self.strip_prefix.clone().filter(|p| !p.is_empty()),
            append_domain: self.append_domain.clone().filter(|d| !d.is_empty()),
        }
    }
}

/// The directory connections the operator knows, by name (DESIGN §6: `PimGroup.spec.directory`).
#[derive(Clone, Default)]
pub struct Directories {
    by_name: std::collections::BTreeMap<String, Arc<dyn Directory>>,
    /// Graph `sendMail` clients on the Entra connections, by directory name.
    graph_mailers: std::collections::BTreeMap<String, entra::mail::GraphMailer>,
}

impl Directories {
    pub fn insert(&mut self, name: impl Into<String>, directory: Arc<dyn Directory>) {
        self.by_name.insert(name.into(), directory);
    }

    /// Registers the `sendMail` client of the Entra connection `name`, for notifications.
    pub fn insert_graph_mailer(
        &mut self,
        name: impl Into<String>,
        mailer: entra::mail::GraphMailer,
    ) {
        self.graph_mailers.insert(name.into(), mailer);
    }

    /// The `sendMail` client on the Entra connection `name`, which shares its token cache,
    /// concurrency and throttling; `None` for another kind of directory.
    pub fn graph_mailer(&self, name: &str) -> Option<entra::mail::GraphMailer> {
        self.graph_mailers.get(name).cloned()
    }

    pub fn get(&self, name: &str) -> Option<Arc<dyn Directory>> {
        self.by_name.get(name).cloned()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }
}

impl std::fmt::Debug for Directories {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.by_name.keys()).finish()
    }
}
