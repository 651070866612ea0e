//! Types and schema limits shared by the four PIM resources.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of every PIM resource.
pub const GROUP: &str = "pim.dev";
/// API version of every PIM resource.
pub const VERSION: &str = "v1alpha1";

/// A Kubernetes object name (DNS subdomain), used for references between our objects.
pub const OBJECT_NAME_PATTERN: &str = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$";
pub const OBJECT_NAME_MAX: usize = 253;

/// Directory principal names: UPNs, e-mail addresses, DNs, object ids. No control characters.
pub const PRINCIPAL_PATTERN: &str = r"^[^\x00-\x1f\x7f]+$";
pub const PRINCIPAL_MAX: usize = 512;

/// Free text a person writes: justifications, approval reasons, descriptions.
pub const TEXT_MAX: usize = 1024;

/// A duration: compact (`30m`, `8h`, `90d`, `1h30m`) or ISO-8601 (`PT8H`, `P90D`).
/// The parser in `core::duration` uses this same pattern, then checks the value.
pub const DURATION_PATTERN: &str = concat!(
    r"^(",
    // compact: units in the order w d h m s, at least one
    r"[0-9]{1,9}w([0-9]{1,9}d)?([0-9]{1,9}h)?([0-9]{1,9}m)?([0-9]{1,9}s)?|[0-9]{1,9}d([0-9]{1,9}h)?([0-9]{1,9}m)?([0-9]{1,9}s)?",
    r"|[0-9]{1,9}h([0-9]{1,9}m)?([0-9]{1,9}s)?|[0-9]{1,9}m([0-9]{1,9}s)?|[0-9]{1,9}s",
    // ISO-8601: P, then weeks and/or days, then T with at least one of H M S
    r"|P(([0-9]{1,9}W([0-9]{1,9}D)?|[0-9]{1,9}D)(T([0-9]{1,9}H([0-9]{1,9}M)?([0-9]{1,9}S)?|[0-9]{1,9}M([0-9]{1,9}S)?|[0-9]{1,9}S))?",
    r"|T([0-9]{1,9}H([0-9]{1,9}M)?([0-9]{1,9}S)?|[0-9]{1,9}M([0-9]{1,9}S)?|[0-9]{1,9}S))",
    r")$"
);
pub const DURATION_MAX_LEN: usize = 32;

/// Which role of a directory group: plain membership or ownership.
#[derive(
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum Role {
    #[default]
    Member,
    Owner,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Member => "member",
            Role::Owner => "owner",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A user or a directory group, named as the directory knows it. Exactly one is set.
#[derive(
    Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": super::cel::PRINCIPAL_USER_OR_GROUP.expression,
    "message": super::cel::PRINCIPAL_USER_OR_GROUP.message
}]))]
pub struct PrincipalRef {
    /// A user, e.g. a UPN (`alice@contoso.com`), uid or DN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = PRINCIPAL_MAX), pattern(PRINCIPAL_PATTERN))]
    pub user: Option<String>,
    /// A directory group whose members are covered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = PRINCIPAL_MAX), pattern(PRINCIPAL_PATTERN))]
    pub group: Option<String>,
}

/// A principal, resolved from a [`PrincipalRef`] that has exactly one side set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Principal<'a> {
    User(&'a str),
    Group(&'a str),
}

impl PrincipalRef {
    pub fn user(name: impl Into<String>) -> Self {
        Self {
            user: Some(name.into()),
            group: None,
        }
    }

    pub fn group(name: impl Into<String>) -> Self {
        Self {
            user: None,
            group: Some(name.into()),
        }
    }

    /// The one side that is set, or `None` when the reference is malformed (both or neither).
    pub fn resolve(&self) -> Option<Principal<'_>> {
        match (&self.user, &self.group) {
            (Some(u), None) => Some(Principal::User(u)),
            (None, Some(g)) => Some(Principal::Group(g)),
            _ => None,
        }
    }
}

impl std::fmt::Display for PrincipalRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.resolve() {
            Some(Principal::User(u)) => write!(f, "user:{u}"),
            Some(Principal::Group(g)) => write!(f, "group:{g}"),
            None => f.write_str("<invalid principal>"),
        }
    }
}

/// How a Kubernetes username becomes one directory's principal name
/// (`directories.NAME.usernameMapping`).
///
/// One to one by construction (issue 17 finding 1): a username that lacks the form the mapping
/// expects has no principal in the directory, rather than being taken for someone else. With
/// `stripPrefix: "oidc:"`, `oidc:alice@example.org` is `alice@example.org`, and a user another
/// authenticator calls `alice@example.org` is nobody here.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsernameMapping {
    /// Required at the start of the username, and removed, e.g. `oidc:`. Usernames without it
    /// have no principal in the directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub strip_prefix: Option<String>,
    /// Appended to the name, e.g. `@contoso.com`. Names that already contain `@` have no
    /// principal in the directory (`alice` and `alice@contoso.com` would be one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub append_domain: Option<String>,
}

impl UsernameMapping {
    /// No mapping: the principal is the Kubernetes username (the kubernetes directory's rule).
    pub fn is_identity(&self) -> bool {
        self.strip_prefix.is_none() && self.append_domain.is_none()
    }
}
