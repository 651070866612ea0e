//! The `ldap` directory's settings, as written under `directories.<name>` with `type: ldap`.
//! The bind password lives in a file (a mounted Secret), read at each connect and never logged.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::core::duration;

/// Placeholder text in `userFilter` replaced by the (filter-escaped) principal.
pub const USERNAME_PLACEHOLDER: &str = "{username}";

#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LdapConfig {
    /// How Kubernetes usernames become this directory's principals; default the top-level
    /// `usernameMapping`.
    #[serde(default)]
    pub username_mapping: Option<crate::directory::DirectoryUsernameMapping>,
    /// `ldap://host:389` or `ldaps://host:636`.
    pub url: String,
    /// Upgrade an `ldap://` connection with StartTLS before binding.
    #[serde(default)]
    pub start_tls: bool,
    /// PEM file with the CA certificates to trust for LDAPS / StartTLS; default the system store.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// DN for the simple bind, e.g. `cn=pim-operator,ou=services,dc=example,dc=org`.
    pub bind_dn: String,
    /// File holding the bind password (trailing newline ignored); re-read at every connect.
    pub bind_password_file: PathBuf,
    /// Time to open the connection (and TLS). Default 5s.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: String,
    /// Time for any one operation, a bind or a search or a modify. Default 10s.
    #[serde(default = "default_operation_timeout")]
    pub operation_timeout: String,
    /// Where users live, searched with `userFilter` (subtree).
    pub user_base: String,
    /// Filter finding one user, with `{username}` where the principal goes (escaped per
    /// RFC 4515). Default `(&(objectClass=inetOrgPerson)(uid={username}))`; for Active Directory
    /// e.g. `(&(objectClass=user)(sAMAccountName={username}))` or `(userPrincipalName={username})`.
    #[serde(default = "default_user_filter")]
    pub user_filter: String,
    /// The attribute whose value is the principal, i.e. the one `userFilter` matches on
    /// (`uid`, `mail`, `userPrincipalName`, `sAMAccountName`). Default `uid`.
    #[serde(default = "default_user_attribute")]
    pub user_attribute: String,
    /// Where groups live: groups found by name, created groups, nested-group members.
    pub group_base: String,
    /// Object class of groups: `groupOfNames`, `groupOfUniqueNames`, or AD's `group`.
    /// Default `groupOfNames` (`group` when `activeDirectory`).
    #[serde(default)]
    pub group_object_class: Option<String>,
    /// The naming attribute of groups, matched against `group.displayName`. Default `cn`.
    #[serde(default = "default_group_name_attribute")]
    pub group_name_attribute: String,
    /// `member` (groupOfNames, AD) or `uniqueMember` (groupOfUniqueNames). Default `member`.
    #[serde(default = "default_member_attribute")]
    pub member_attribute: String,
    /// The member value that keeps a `groupOfNames` (or `groupOfUniqueNames`) valid when its
    /// last real member is removed: written in the same modify as that removal, and never
    /// listed as a member. Default `cn=pim-placeholder,<groupBase>`, which names no entry; where
    /// the server refuses member values naming no entry (referential integrity, slapd's
    /// `memberof-dangling error`), set it to the DN of one that exists. Not used with
    /// `activeDirectory` or other group classes, whose groups may be empty.
    #[serde(default)]
    pub placeholder_member: Option<String>,
    /// The reverse attribute on member entries (`memberOf`: AD, FreeIPA, OpenLDAP's memberof
    /// overlay), used to map member DNs to principals with one paged search; empty to read each
    /// member entry instead. Default `memberOf`.
    #[serde(default = "default_member_of_attribute")]
    pub member_of_attribute: String,
    /// Entries per page of a Simple Paged Results search. Default 500.
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// Active Directory: `group` object class, no placeholder, nested-membership checks through
    /// LDAP_MATCHING_RULE_IN_CHAIN, and `memberTtl`.
    #[serde(default)]
    pub active_directory: bool,
    /// Active Directory only, and only where the forest has the Privileged Access Management
    /// feature enabled: members are added as `<TTL=seconds,DN>`, so AD itself drops them after
    /// this long even if the operator is down. The operator re-adds a member still granted.
    #[serde(default)]
    pub member_ttl: Option<String>,
}

fn default_connect_timeout() -> String {
    "5s".to_owned()
}
fn default_operation_timeout() -> String {
    "10s".to_owned()
}
fn default_user_filter() -> String {
    "(&(objectClass=inetOrgPerson)(uid={username}))".to_owned()
}
fn default_user_attribute() -> String {
    "uid".to_owned()
}
fn default_group_name_attribute() -> String {
    "cn".to_owned()
}
fn default_member_attribute() -> String {
    "member".to_owned()
}
fn default_member_of_attribute() -> String {
    "memberOf".to_owned()
}
fn default_page_size() -> u32 {
    500
}

fn positive(field: &str, value: &str) -> Result<Duration, String> {
    duration::parse_positive(field, value)
        .map(|d| d.unsigned_abs())
        .map_err(|e| e.to_string())
}

fn is_attribute_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-')
}

impl LdapConfig {
    /// A minimal config for the given server and bases; the rest defaults.
    pub fn new(
        url: impl Into<String>,
        bind_dn: impl Into<String>,
        bind_password_file: impl Into<PathBuf>,
        user_base: impl Into<String>,
        group_base: impl Into<String>,
    ) -> LdapConfig {
        LdapConfig {
            username_mapping: None,
            url: url.into(),
            start_tls: false,
            ca_file: None,
            bind_dn: bind_dn.into(),
            bind_password_file: bind_password_file.into(),
            connect_timeout: default_connect_timeout(),
            operation_timeout: default_operation_timeout(),
            user_base: user_base.into(),
            user_filter: default_user_filter(),
            user_attribute: default_user_attribute(),
            group_base: group_base.into(),
            group_object_class: None,
            group_name_attribute: default_group_name_attribute(),
            member_attribute: default_member_attribute(),
            placeholder_member: None,
            member_of_attribute: default_member_of_attribute(),
            page_size: default_page_size(),
            active_directory: false,
            member_ttl: None,
        }
    }

    /// Checks what can be checked without a server; messages name the field.
    pub fn validate(&self) -> Result<(), String> {
        let scheme_ok = self.url.starts_with("ldap://") || self.url.starts_with("ldaps://");
        if !scheme_ok {
            return Err(format!(
                "url: {:?} must start with ldap:// or ldaps://",
                self.url
            ));
        }
        if self.start_tls && self.url.starts_with("ldaps://") {
            return Err("startTls: ldaps:// is TLS already; use startTls with ldap://".to_owned());
        }
        positive("connectTimeout", &self.connect_timeout)?;
        positive("operationTimeout", &self.operation_timeout)?;
        if !self.user_filter.contains(USERNAME_PLACEHOLDER) {
            return Err(format!(
                "userFilter: {:?} must contain {USERNAME_PLACEHOLDER}",
                self.user_filter
            ));
        }
        if !(self.user_filter.starts_with('(') && self.user_filter.ends_with(')')) {
            return Err(format!(
                "userFilter: {:?} must be a parenthesized filter",
                self.user_filter
            ));
        }
        for (field, value) in [
            ("userAttribute", self.user_attribute.as_str()),
            ("groupNameAttribute", self.group_name_attribute.as_str()),
            ("memberAttribute", self.member_attribute.as_str()),
            ("groupObjectClass", self.group_object_class()),
        ] {
            if !is_attribute_name(value) {
                return Err(format!("{field}: {value:?} is not an attribute name"));
            }
        }
        if !self.member_of_attribute.is_empty() && !is_attribute_name(&self.member_of_attribute) {
            return Err(format!(
                "memberOfAttribute: {:?} is not an attribute name",
                self.member_of_attribute
            ));
        }
        let placeholder = self.placeholder_member.clone().unwrap_or_default();
        for (field, value) in [
            ("bindDn", &self.bind_dn),
            ("userBase", &self.user_base),
            ("groupBase", &self.group_base),
            ("placeholderMember", &placeholder),
        ] {
            if field == "placeholderMember" && self.placeholder_member.is_none() {
                continue;
            }
            if value.trim().is_empty() || !value.contains('=') {
                return Err(format!("{field}: {value:?} is not a DN"));
            }
        }
        // Under userBase it may name a real person, who would then hold every membership it
        // keeps while no listing shows it.
        if let Some(dn) = &self.placeholder_member
            && (super::names::is_below(dn, &self.user_base)
                || super::names::same_dn(dn, &self.user_base))
        {
            return Err(format!(
                "placeholderMember: {dn:?} lies under userBase {:?}, so it may name a real user, who would hold the membership of every group it keeps without being listed; use a DN outside userBase (the default, cn=pim-placeholder,<groupBase>, names no entry)",
                self.user_base
            ));
        }
        if self.page_size == 0 || self.page_size > i32::MAX as u32 {
            return Err("pageSize: must be at least 1".to_owned());
        }
        if let Some(ttl) = &self.member_ttl {
            if !self.active_directory {
                return Err("memberTtl: needs activeDirectory: true".to_owned());
            }
            positive("memberTtl", ttl)?;
        }
        Ok(())
    }

    pub fn connect_timeout(&self) -> Duration {
        positive("connectTimeout", &self.connect_timeout).unwrap_or(Duration::from_secs(5))
    }

    pub fn operation_timeout(&self) -> Duration {
        positive("operationTimeout", &self.operation_timeout).unwrap_or(Duration::from_secs(10))
    }

    pub fn member_ttl(&self) -> Option<Duration> {
        let ttl = self.member_ttl.as_deref()?;
        if !self.active_directory {
            return None;
        }
        positive("memberTtl", ttl).ok()
    }

    pub fn group_object_class(&self) -> &str {
        match &self.group_object_class {
            Some(class) => class,
            None if self.active_directory => "group",
            None => "groupOfNames",
        }
    }

    /// The placeholder member, for group classes that must keep a member: `groupOfNames`
    /// (RFC 4519 §3.5, MUST member) and `groupOfUniqueNames` (§3.6, MUST uniqueMember).
    pub fn placeholder(&self) -> Option<String> {
        let class = self.group_object_class();
        let must_keep_one = class.eq_ignore_ascii_case("groupOfNames")
            || class.eq_ignore_ascii_case("groupOfUniqueNames");
        if self.active_directory || !must_keep_one {
            return None;
        }
        Some(
            self.placeholder_member
                .clone()
                .unwrap_or_else(|| format!("cn=pim-placeholder,{}", self.group_base)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> LdapConfig {
        LdapConfig::new(
            "ldap://127.0.0.1:389",
            "cn=admin,dc=example,dc=org",
            "/run/secrets/ldap",
            "ou=people,dc=example,dc=org",
            "ou=groups,dc=example,dc=org",
        )
    }

    #[test]
    fn defaults_are_openldap_groups_of_names() {
        let c = config();
        assert!(c.validate().is_ok());
        assert_eq!(c.group_object_class(), "groupOfNames");
        assert_eq!(
            c.placeholder().as_deref(),
            Some("cn=pim-placeholder,ou=groups,dc=example,dc=org")
        );
        assert_eq!(c.operation_timeout(), Duration::from_secs(10));
        assert_eq!(c.member_ttl(), None);
    }

    #[test]
    fn active_directory_has_no_placeholder_and_a_ttl() {
        let c = LdapConfig {
            active_directory: true,
            member_ttl: Some("8h".into()),
            ..config()
        };
        assert!(c.validate().is_ok());
        assert_eq!(c.group_object_class(), "group");
        assert_eq!(c.placeholder(), None);
        assert_eq!(c.member_ttl(), Some(Duration::from_secs(8 * 3600)));
    }

    #[test]
    fn a_placeholder_under_the_user_base_is_refused() {
        // It may name a real person, who would then hold membership no listing shows.
        for dn in [
            "cn=alice,ou=people,dc=example,dc=org",
            "CN=Keeper, OU=People,DC=example,DC=org",
        ] {
            let c = LdapConfig {
                placeholder_member: Some(dn.into()),
                ..config()
            };
            let err = c.validate().unwrap_err();
            assert!(err.starts_with("placeholderMember"), "{err}");
            assert!(err.contains("userBase"), "{err}");
        }
    }

    #[test]
    fn the_placeholder_is_for_classes_that_must_keep_a_member() {
        let keeper = "cn=keeper,ou=system,dc=example,dc=org";
        let c = LdapConfig {
            placeholder_member: Some(keeper.into()),
            ..config()
        };
        assert!(c.validate().is_ok());
        assert_eq!(c.placeholder().as_deref(), Some(keeper));
        let unique = LdapConfig {
            group_object_class: Some("groupOfUniqueNames".into()),
            ..c.clone()
        };
        assert_eq!(unique.placeholder().as_deref(), Some(keeper));
        let other = LdapConfig {
            group_object_class: Some("posixGroup".into()),
            ..c.clone()
        };
        assert_eq!(other.placeholder(), None);
        let bad = LdapConfig {
            placeholder_member: Some("keeper".into()),
            ..config()
        };
        assert!(bad.validate().unwrap_err().starts_with("placeholderMember"));
    }

    #[test]
    fn bad_settings_name_their_field() {
        let err = |c: LdapConfig| c.validate().unwrap_err();
        assert!(
            err(LdapConfig {
                url: "http://x".into(),
                ..config()
            })
            .starts_with("url:")
        );
        assert!(
            err(LdapConfig {
                user_filter: "(uid=alice)".into(),
                ..config()
            })
            .contains("{username}")
        );
        assert!(
            err(LdapConfig {
                member_ttl: Some("1h".into()),
                ..config()
            })
            .contains("activeDirectory")
        );
        assert!(
            err(LdapConfig {
                member_attribute: "member)(x".into(),
                ..config()
            })
            .starts_with("memberAttribute")
        );
        assert!(
            err(LdapConfig {
                start_tls: true,
                url: "ldaps://x".into(),
                ..config()
            })
            .starts_with("startTls")
        );
        assert!(
            err(LdapConfig {
                operation_timeout: "soon".into(),
                ..config()
            })
            .contains("operationTimeout")
        );
    }
}
