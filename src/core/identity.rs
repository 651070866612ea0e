//! When two names stand for the same person: one rule, used wherever requesters and approvers
//! are compared (self-approval, "my own entry", distinct approvers, approver lists).
//!
//! Identity providers are not consistent about case: Entra ID treats `ALICE@contoso.com` and
//! `alice@contoso.com` as one account, and tokens carry whichever spelling was typed at sign-in.
//! Compared byte for byte, one person could approve their own request, or count twice.
//! Only ASCII letters fold: full Unicode case folding would make look-alikes (the Kelvin sign
//! `K` folds to `k`) equal to real names, and identity providers restrict names to ASCII anyway.

use serde::Deserialize;

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
}
