//! When two names stand for the same person: one rule, used wherever requesters and approvers
//! are compared (self-approval, "my own entry", distinct approvers, approver lists).
//!
//! Identity providers are not consistent about case: Entra ID treats `ALICE@contoso.com` and
//! `alice@contoso.com` as one account, and tokens carry whichever spelling was typed at sign-in.
//! Compared byte for byte, one person could approve their own request, or count twice.
//! Only ASCII letters fold: full Unicode case folding would make look-alikes (the Kelvin sign
//! `K` folds to `k`) equal to real names, and identity providers restrict names to ASCII anyway.

use std::collections::BTreeMap;

use serde::Deserialize;

pub use crate::api::common::UsernameMapping;

/// Which names compare without regard to case: the operator's
/// `usernameMapping.caseInsensitive` setting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum CaseInsensitive {
    /// Names containing `@` (UPNs and e-mail addresses) ignore case; others must match exactly.
    #[default]
    EmailLike,
    /// Every name ignores case.
    Always,
    /// Names must match exactly.
    Never,
}

impl CaseInsensitive {
    /// The setting's spelling in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            CaseInsensitive::EmailLike => "emailLike",
            CaseInsensitive::Always => "always",
            CaseInsensitive::Never => "never",
        }
    }
}

/// Whether `a` and `b` name the same person under `rule`. The only place the rule lives.
pub fn same_identity(a: &str, b: &str, rule: CaseInsensitive) -> bool {
    let fold = match rule {
        CaseInsensitive::Always => true,
        CaseInsensitive::Never => false,
        // With `@` in one name only, the names differ whatever the case.
        CaseInsensitive::EmailLike => a.contains('@'),
    };
    if fold {
        a.eq_ignore_ascii_case(b)
    } else {
        a == b
    }
}

/// Whether `names` holds the same person as `name`.
pub fn contains_identity<S: AsRef<str>>(names: &[S], name: &str, rule: CaseInsensitive) -> bool {
    names.iter().any(|n| same_identity(n.as_ref(), name, rule))
}

/// How many different people `names` stand for.
pub fn distinct_identities<'a>(
    names: impl IntoIterator<Item = &'a str>,
    rule: CaseInsensitive,
) -> usize {
    let mut seen: Vec<&str> = Vec::new();
    for name in names {
        if !contains_identity(&seen, name, rule) {
            seen.push(name);
        }
    }
    seen.len()
}

/// Why a username has no principal under a [`UsernameMapping`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unmapped {
    #[error(
        "{username:?} does not start with {prefix:?} (usernameMapping.stripPrefix): only usernames with that prefix are this directory's users, so that a name another authenticator gives is never taken for one of them"
    )]
    MissingPrefix { username: String, prefix: String },
    #[error("{username:?} has nothing after the prefix {prefix:?} (usernameMapping.stripPrefix)")]
    NothingAfterPrefix { username: String, prefix: String },
    #[error(
        "{name:?} already contains '@' while usernameMapping.appendDomain is {domain:?}: it would be the same principal as a name without a domain, so it is nobody in this directory"
    )]
    HasDomain { name: String, domain: String },
    #[error("there is no PimGroup {group:?}, so no directory to be anybody in")]
    NoSuchGroup { group: String },
}

/// The principal `username` stands for under `mapping`, or why it stands for none.
pub fn principal_for(mapping: &UsernameMapping, username: &str) -> Result<String, Unmapped> {
    let name = match mapping.strip_prefix.as_deref().filter(|p| !p.is_empty()) {
        None => username,
        Some(prefix) => match username.strip_prefix(prefix) {
            Some("") => {
                return Err(Unmapped::NothingAfterPrefix {
                    username: username.to_owned(),
                    prefix: prefix.to_owned(),
                });
            }
            Some(rest) => rest,
            None => {
                return Err(Unmapped::MissingPrefix {
                    username: username.to_owned(),
                    prefix: prefix.to_owned(),
                });
            }
        },
    };
    match mapping.append_domain.as_deref().filter(|d| !d.is_empty()) {
        None => Ok(name.to_owned()),
        Some(domain) if name.contains('@') => Err(Unmapped::HasDomain {
            name: name.to_owned(),
            domain: domain.to_owned(),
        }),
        Some(domain) => Ok(format!("{name}{domain}")),
    }
}

/// The directory every operator has: RBAC in its own cluster, never mapped.
pub const KUBERNETES_DIRECTORY: &str = "kubernetes";

/// Every directory's [`UsernameMapping`] and the rule for comparing names: what turns an
/// authenticated caller into the principal of a PimGroup's directory.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Principals {
    /// By directory name. A directory not listed (one not configured, where nothing can be
    /// granted) uses the username as it is.
    mappings: BTreeMap<String, UsernameMapping>,
    /// How names compare (`usernameMapping.caseInsensitive`).
    pub names: CaseInsensitive,
}

impl Principals {
    /// `mappings` by directory name; the built-in `kubernetes` directory is added, unmapped,
    /// unless listed.
    pub fn new(
        mut mappings: BTreeMap<String, UsernameMapping>,
        names: CaseInsensitive,
    ) -> Principals {
        mappings.entry(KUBERNETES_DIRECTORY.to_owned()).or_default();
        Principals { mappings, names }
    }

    /// The mapping of a configured `directory`; `None` for one the operator does not know.
    pub fn mapping(&self, directory: &str) -> Option<&UsernameMapping> {
        self.mappings.get(directory)
    }

    /// `username`'s principal in `directory`.
    pub fn principal_in(&self, directory: &str, username: &str) -> Result<String, Unmapped> {
        match self.mappings.get(directory) {
            Some(mapping) => principal_for(mapping, username),
            None => Ok(username.to_owned()),
        }
    }

    /// Whether two Kubernetes usernames are the same person in `directory`: as written, or as
    /// the principals they map to (`oidc:BOB` and `oidc:bob` are both `bob@contoso.com`).
    pub fn same_user(&self, directory: &str, a: &str, b: &str) -> bool {
        if same_identity(a, b, self.names) {
            return true;
        }
        match (
            self.principal_in(directory, a),
            self.principal_in(directory, b),
        ) {
            (Ok(a), Ok(b)) => same_identity(&a, &b, self.names),
            _ => false,
        }
    }
}

/// What every username of one person has in common, in every directory: the key of indexes
/// that find a user's objects without comparing every one. [`Principals::same_user`] holds
/// only between usernames with the same key: a mapping strips the same prefix from both and
/// appends the same domain, and names compare as written or without regard to ASCII case, so
/// two usernames of one person differ at most in ASCII case. Callers still decide with
/// `same_user`.
pub fn user_key(username: &str) -> String {
    username.to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use CaseInsensitive::{Always, EmailLike, Never};

    #[test]
    fn email_like_names_ignore_case_and_others_do_not() {
        // issue 14 finding 8: one person, two spellings.
        assert!(same_identity("ALICE@x.org", "alice@x.org", EmailLike));
        assert!(same_identity("oidc:Bob@X.org", "oidc:bob@x.org", EmailLike));
        assert!(!same_identity("Alice", "alice", EmailLike));
        assert!(!same_identity("alice@x.org", "alice", EmailLike));
        assert!(same_identity("Alice", "alice", Always));
        assert!(!same_identity("ALICE@x.org", "alice@x.org", Never));
        assert!(same_identity("alice@x.org", "alice@x.org", Never));
    }

    #[test]
    fn only_ascii_letters_fold() {
        // The Kelvin sign lowercases to `k` in Unicode; it must not pass for kevin.
        assert!(!same_identity("\u{212A}evin@x.org", "kevin@x.org", Always));
        assert!(!same_identity("ÄLICE@x.org", "älice@x.org", Always));
        assert!(same_identity("Älice@X.org", "Älice@x.org", Always));
    }

    #[test]
    fn distinct_people_are_counted_once() {
        let names = ["Bob@x.org", "bob@x.org", "carol@x.org", "BOB@X.ORG"];
        assert_eq!(distinct_identities(names, EmailLike), 2);
        assert_eq!(distinct_identities(names, Never), 4);
        assert!(contains_identity(&names, "CAROL@x.org", EmailLike));
        assert!(!contains_identity(&names, "dave@x.org", Always));
    }

    #[test]
    fn the_setting_is_spelled_in_camel_case() {
        for rule in [EmailLike, Always, Never] {
            let parsed: CaseInsensitive = serde_json::from_value(rule.as_str().into()).unwrap();
            assert_eq!(parsed, rule);
        }
    }

    fn mapping(prefix: Option<&str>, domain: Option<&str>) -> UsernameMapping {
        UsernameMapping {
            strip_prefix: prefix.map(str::to_owned),
            append_domain: domain.map(str::to_owned),
        }
    }

    /// Issue 17 finding 1 (seen): with `stripPrefix: "oidc:"`, the user another authenticator
    /// calls `alice@example.org` was taken for `oidc:alice@example.org`.
    #[test]
    fn issue_17_finding_1_a_username_without_the_prefix_is_nobody() {
        let oidc = mapping(Some("oidc:"), None);
        assert_eq!(
            principal_for(&oidc, "oidc:alice@example.org"),
            Ok("alice@example.org".to_owned())
        );
        let err = principal_for(&oidc, "alice@example.org").unwrap_err();
        assert!(
            matches!(err, Unmapped::MissingPrefix { .. }) && err.to_string().contains("\"oidc:\""),
            "{err}"
        );
        assert!(matches!(
            principal_for(&oidc, "oidc:"),
            Err(Unmapped::NothingAfterPrefix { .. })
        ));
        // The prefix is matched as written: `OIDC:` is another authenticator's.
        assert!(principal_for(&oidc, "OIDC:alice@example.org").is_err());
    }

    #[test]
    fn issue_17_finding_1_a_name_with_a_domain_is_not_given_another() {
        let contoso = mapping(Some("oidc:"), Some("@contoso.com"));
        assert_eq!(
            principal_for(&contoso, "oidc:alice"),
            Ok("alice@contoso.com".to_owned())
        );
        // Else `oidc:alice@contoso.com` and `oidc:alice` would be one principal.
        assert!(matches!(
            principal_for(&contoso, "oidc:alice@contoso.com"),
            Err(Unmapped::HasDomain { .. })
        ));
        assert_eq!(
            principal_for(&UsernameMapping::default(), "system:admin"),
            Ok("system:admin".to_owned())
        );
    }

    #[test]
    fn each_directory_has_its_own_mapping_and_unknown_ones_none() {
        let principals = Principals::new(
            [
                ("corp".to_owned(), mapping(Some("oidc:"), None)),
                ("same".to_owned(), UsernameMapping::default()),
            ]
            .into(),
            EmailLike,
        );
        assert_eq!(
            principals.principal_in("corp", "oidc:bob"),
            Ok("bob".to_owned())
        );
        assert_eq!(
            principals.principal_in("kubernetes", "oidc:bob"),
            Ok("oidc:bob".to_owned())
        );
        assert_eq!(
            principals.mapping("same"),
            Some(&UsernameMapping::default())
        );
        assert_eq!(
            principals.mapping("kubernetes"),
            Some(&UsernameMapping::default())
        );
        assert_eq!(principals.mapping("unknown"), None);
        assert!(principals.same_user("corp", "oidc:bob", "oidc:bob"));
        assert!(!principals.same_user("corp", "oidc:bob", "bob"));
    }

    proptest! {
        /// An equivalence: reflexive and symmetric for every rule; Never is plain equality.
        #[test]
        fn the_rule_is_an_equivalence(a in "[a-zA-Z@.]{0,8}", b in "[a-zA-Z@.]{0,8}") {
            for rule in [EmailLike, Always, Never] {
                prop_assert!(same_identity(&a, &a, rule));
                prop_assert_eq!(same_identity(&a, &b, rule), same_identity(&b, &a, rule));
            }
            prop_assert_eq!(same_identity(&a, &b, Never), a == b);
            prop_assert_eq!(
                same_identity(&a, &b, Always),
                a.bytes().map(|c| c.to_ascii_lowercase()).eq(b.bytes().map(|c| c.to_ascii_lowercase()))
            );
        }

        /// `user_key` never separates two usernames `same_user` takes for one person, whatever
        /// the mapping and the rule.
        #[test]
        fn one_person_has_one_user_key(
            a in "[a-cA-C:@.]{0,7}",
            b in "[a-cA-C:@.]{0,7}",
            prefix in proptest::option::of("[a-cA-C:]{0,2}"),
            domain in proptest::option::of("[@a-c.]{0,3}"),
        ) {
            for rule in [EmailLike, Always, Never] {
                let principals = Principals::new(
                    [("d".to_owned(), mapping(prefix.as_deref(), domain.as_deref()))].into(),
                    rule,
                );
                for directory in ["d", "kubernetes", "unknown"] {
                    if principals.same_user(directory, &a, &b) {
                        prop_assert_eq!(user_key(&a), user_key(&b));
                    }
                }
            }
        }

        /// A name with `@` matches every case variant of itself under the default rule.
        #[test]
        fn case_variants_of_email_names_match(local in "[a-zA-Z]{1,8}", flip in any::<u64>()) {
            let name = format!("{local}@contoso.com");
            let varied: String = name
                .chars()
                .enumerate()
                .map(|(i, c)| if flip >> (i % 64) & 1 == 1 { c.to_ascii_uppercase() } else { c })
                .collect();
            prop_assert!(same_identity(&varied, &name, EmailLike));
        }
    }

    /// `tally` (core::lifecycle) counts people, not spellings: issue 14 finding 8.
    mod tally {
        use jiff::{SignedDuration, Timestamp};
        use proptest::prelude::*;

        use super::super::CaseInsensitive::{self, EmailLike, Never};
        use crate::api::access_policy::{AccessPolicySpec, ActivationSettings, ApprovalSettings};
        use crate::api::activation_request::Decision;
        use crate::api::common::PrincipalRef;
        use crate::core::lifecycle::{Tally, VerifiedApproval, tally};
        use crate::core::policy::Policy;

        fn t0() -> Timestamp {
            "2026-03-01T09:00:00Z".parse().unwrap()
        }

        /// Approvers: alice, Bob and carol by name, and anyone in `approvers`.
        fn policy(min: i32) -> Policy {
            Policy::from_spec(&AccessPolicySpec {
                activation: ActivationSettings {
                    approval: Some(ApprovalSettings {
                        approvers: vec![
                            PrincipalRef::user("alice@x.org"),
                            PrincipalRef::user("Bob@x.org"),
                            PrincipalRef::user("carol@x.org"),
                            PrincipalRef::group("approvers"),
                        ],
                        min_approvals: Some(min),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                ..Default::default()
            })
            .unwrap()
        }

        fn vote(approver: &str, minute: i64, groups: &[&str]) -> VerifiedApproval {
            VerifiedApproval {
                approver: approver.into(),
                groups: groups.iter().map(|g| g.to_string()).collect(),
                decision: Decision::Approve,
                time: t0() + SignedDuration::from_mins(minute),
                reason: None,
                mfa: true,
                authentication: Default::default(),
            }
        }

        fn count(approvals: &[VerifiedApproval], requester: &str, names: CaseInsensitive) -> Tally {
            let policy = policy(2);
            let rules = policy.approval.as_ref().unwrap();
            tally(
                approvals,
                rules,
                requester,
                t0() + SignedDuration::from_hours(24),
                names,
            )
        }

        #[test]
        fn issue_14_finding_8_the_requester_in_capitals_cannot_approve() {
            let approvals = [vote("ALICE@x.org", 1, &["approvers"])];
            let out = count(&approvals, "alice@x.org", EmailLike);
            assert!(out.approvers.is_empty(), "{out:?}");
            assert_eq!(out.ignored, ["ALICE@x.org (self-approval is not allowed)"]);
            // Only where the operator is told case matters.
            assert_eq!(
                count(&approvals, "alice@x.org", Never).approvers,
                ["ALICE@x.org"]
            );
        }

        #[test]
        fn issue_14_finding_8_one_approver_in_two_spellings_counts_once() {
            let approvals = [vote("Bob@x.org", 1, &[]), vote("bob@x.org", 2, &[])];
            let out = count(&approvals, "dave@x.org", EmailLike);
            assert_eq!(out.approvers, ["Bob@x.org"]);
            assert_eq!(
                out.threshold_reached_at(2),
                None,
                "two spellings are not 2 of N"
            );
            // A second person does reach it, at the time of their approval.
            let mut more = approvals.to_vec();
            more.push(vote("CAROL@X.ORG", 3, &[]));
            let out = count(&more, "dave@x.org", EmailLike);
            assert_eq!(out.approvers, ["Bob@x.org", "CAROL@X.ORG"]);
            assert_eq!(
                out.threshold_reached_at(2),
                Some(t0() + SignedDuration::from_mins(3))
            );
        }

        #[test]
        fn policy_approvers_match_whatever_the_case() {
            // `Bob@x.org` in the policy; the identity provider says `BOB@X.ORG` today.
            let out = count(&[vote("BOB@X.ORG", 1, &[])], "dave@x.org", EmailLike);
            assert_eq!(out.approvers, ["BOB@X.ORG"]);
            let out = count(&[vote("BOB@X.ORG", 1, &[])], "dave@x.org", Never);
            assert_eq!(
                out.ignored,
                ["BOB@X.ORG (not an approver under the policy)"]
            );
        }

        /// Flips the case of the ASCII letters of `name` where `mask` has a one bit.
        fn respell(name: &str, mask: u64) -> String {
            name.chars()
                .enumerate()
                .map(|(i, c)| {
                    if mask >> (i % 64) & 1 == 1 {
                        if c.is_ascii_uppercase() {
                            c.to_ascii_lowercase()
                        } else {
                            c.to_ascii_uppercase()
                        }
                    } else {
                        c
                    }
                })
                .collect()
        }

        proptest! {
            /// issue 14 finding 8: however the identity provider spells them, the approvals
            /// count the distinct people among the approvers, never the requester.
            #[test]
            fn issue_14_finding_8_approvals_count_people(
                votes in proptest::collection::vec((0usize..4, any::<u64>()), 0..12),
                requester in 0usize..4,
                requester_mask in any::<u64>(),
            ) {
                let people = ["alice@x.org", "bob@x.org", "carol@x.org", "dave@x.org"];
                let approvals: Vec<VerifiedApproval> = votes
                    .iter()
                    .enumerate()
                    .map(|(minute, (who, mask))| {
                        vote(&respell(people[*who], *mask), minute as i64, &["approvers"])
                    })
                    .collect();
                let requester_name = respell(people[requester], requester_mask);
                let out = count(&approvals, &requester_name, EmailLike);
                let mut expected: Vec<usize> = Vec::new();
                for (who, _) in &votes {
                    if *who != requester && !expected.contains(who) {
                        expected.push(*who);
                    }
                }
                prop_assert_eq!(out.approvers.len(), expected.len());
                for (counted, who) in out.approvers.iter().zip(&expected) {
                    prop_assert!(counted.eq_ignore_ascii_case(people[*who]));
                }
                prop_assert_eq!(out.approved_times.len(), out.approvers.len());
            }
        }
    }

    proptest! {
        /// Issue 17 finding 1: two different usernames never become one principal, whatever
        /// the mapping: identities do not collapse.
        #[test]
        fn a_mapping_never_merges_two_usernames(
            a in "(oidc:|sso:|)[a-z]{0,3}(@c.com|@d.org|)",
            b in "(oidc:|sso:|)[a-z]{0,3}(@c.com|@d.org|)",
            prefix in proptest::option::of("(oidc:|sso:)"),
            domain in proptest::option::of("(@c.com|@d.org)"),
        ) {
            let m = UsernameMapping { strip_prefix: prefix, append_domain: domain };
            if let (Ok(pa), Ok(pb)) = (principal_for(&m, &a), principal_for(&m, &b)) {
                prop_assert_eq!(pa == pb, a == b, "{} and {} map to {} and {}", a, b, pa, pb);
            }
        }
    }
}
