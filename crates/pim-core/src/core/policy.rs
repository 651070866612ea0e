//! An AccessPolicy with its defaults applied and its caps checked.

use jiff::SignedDuration;

use super::authentication::Requirements;
use super::duration;
use super::identity::{CaseInsensitive, same_identity};
use super::violation::Violation;
use crate::api::access_policy::AccessPolicySpec;
use crate::api::common::{Principal, PrincipalRef};
use crate::api::conditions::reasons;
use crate::api::eligible_assignment::AssignmentType;

pub const DEFAULT_MAX_ACTIVATION: SignedDuration = SignedDuration::from_hours(8);
/// No activation may last longer than this, whatever a policy says.
pub const HARD_MAX_ACTIVATION: SignedDuration = SignedDuration::from_hours(24);
pub const DEFAULT_APPROVAL_TIMEOUT: SignedDuration = SignedDuration::from_hours(24);
pub const MAX_APPROVAL_TIMEOUT: SignedDuration = SignedDuration::from_hours(30 * 24);
pub const DEFAULT_MAX_ELIGIBLE: SignedDuration = SignedDuration::from_hours(365 * 24);
pub const DEFAULT_MAX_ACTIVE: SignedDuration = SignedDuration::from_hours(180 * 24);
pub const DEFAULT_RETENTION: SignedDuration = SignedDuration::from_hours(30 * 24);
/// The longest period `alerts.activatedTooOften` counts over (finished requests are kept 30
/// days by default, and the count reads them).
pub const MAX_ALERT_FREQUENCY_PERIOD: SignedDuration = SignedDuration::from_hours(30 * 24);
/// The longest `alerts.notActivatedFor`: Entra's stale-account alert looks back up to 365 days.
pub const MAX_NOT_ACTIVATED_FOR: SignedDuration = SignedDuration::from_hours(365 * 24);
pub const DEFAULT_EXPIRING_SOON_LEAD: SignedDuration = SignedDuration::from_mins(15);
/// Entra's default: the principal and the admins hear 14 days before an assignment ends.
pub const DEFAULT_ELIGIBILITY_ENDING_LEAD: SignedDuration = SignedDuration::from_hours(14 * 24);
/// How many requests one requester may have open at once, unless the policy says otherwise.
pub const DEFAULT_MAX_OPEN_REQUESTS: usize = 5;
/// How far after its creation a request may ask to start, unless the policy says otherwise.
pub const DEFAULT_MAX_START_DELAY: SignedDuration = SignedDuration::from_hours(14 * 24);
pub const MAX_MIN_APPROVALS: usize = 16;

/// The rules of one AccessPolicy, every default filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub max_activation: SignedDuration,
    pub require_justification: bool,
    pub require_ticket: bool,
    pub require_mfa: bool,
    pub approval: Option<ApprovalRules>,
    /// How far after its creation a request's `startTime` may lie.
    pub max_start_delay: SignedDuration,
    /// How many requests one requester may have open at once, over every group.
    pub max_open_requests: usize,
    /// Extensions may carry access past `max_activation` from the original start.
    pub allow_renewal: bool,
    /// What the requester's credentials must show beyond MFA.
    pub authentication: Requirements,
    pub assignments: AssignmentRules,
    pub retention: SignedDuration,
    pub expiring_soon_lead: SignedDuration,
    /// How long before an assignment's end its principal and the admins are reminded.
    pub eligibility_ending_lead: SignedDuration,
    /// How requester and approver names compare. Not part of the AccessPolicy: the operator's
    /// `usernameMapping.caseInsensitive`, set with [`Policy::with_identities`].
    pub identities: CaseInsensitive,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalRules {
    pub approvers: Vec<PrincipalRef>,
    pub min_approvals: usize,
    pub timeout: SignedDuration,
    pub allow_self_approval: bool,
    /// Approvals count only with the approver's MFA evidence.
    pub require_mfa: bool,
    /// What an approver's credentials must show beyond MFA for the approval to count.
    pub authentication: Requirements,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AssignmentRules {
    pub allow_permanent_eligible: bool,
    pub max_eligible: SignedDuration,
    pub allow_permanent_active: bool,
    pub max_active: SignedDuration,
    pub require_justification: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            max_activation: DEFAULT_MAX_ACTIVATION,
            require_justification: true,
            require_ticket: false,
            require_mfa: false,
            approval: None,
            max_start_delay: DEFAULT_MAX_START_DELAY,
            max_open_requests: DEFAULT_MAX_OPEN_REQUESTS,
            allow_renewal: false,
            authentication: Requirements::default(),
            assignments: AssignmentRules {
                allow_permanent_eligible: false,
                max_eligible: DEFAULT_MAX_ELIGIBLE,
                allow_permanent_active: false,
                max_active: DEFAULT_MAX_ACTIVE,
                require_justification: true,
            },
            retention: DEFAULT_RETENTION,
            expiring_soon_lead: DEFAULT_EXPIRING_SOON_LEAD,
            eligibility_ending_lead: DEFAULT_ELIGIBILITY_ENDING_LEAD,
            identities: CaseInsensitive::default(),
        }
    }
}

impl Policy {
    /// Applies defaults and checks every value; all violations are returned, not just the first.
    pub fn from_spec(spec: &AccessPolicySpec) -> Result<Policy, Vec<Violation>> {
        let mut violations = Vec::new();
        let mut policy = Policy::default();
        let mut duration_field =
            |field: &str, value: &Option<String>, default: SignedDuration| match value
                .as_deref()
                .map(|v| duration::parse_positive(field, v))
            {
                None => default,
                Some(Ok(d)) => d,
                Some(Err(e)) => {
                    violations.push(Violation::duration(e, reasons::INVALID_DURATION));
                    default
                }
            };

        let activation = &spec.activation;
        policy.max_activation = duration_field(
            "spec.activation.maxDuration",
            &activation.max_duration,
            DEFAULT_MAX_ACTIVATION,
        );
        policy.max_start_delay = duration_field(
            "spec.activation.maxStartDelay",
            &activation.max_start_delay,
            DEFAULT_MAX_START_DELAY,
        );
        let assignment = &spec.assignment;
        policy.assignments.max_eligible = duration_field(
            "spec.assignment.maxEligibleDuration",
            &assignment.max_eligible_duration,
            DEFAULT_MAX_ELIGIBLE,
        );
        policy.assignments.max_active = duration_field(
            "spec.assignment.maxActiveDuration",
            &assignment.max_active_duration,
            DEFAULT_MAX_ACTIVE,
        );
        policy.retention = duration_field("spec.retention", &spec.retention, DEFAULT_RETENTION);
        policy.expiring_soon_lead = duration_field(
            "spec.notifications.expiringSoonLead",
            &spec
                .notifications
                .as_ref()
                .and_then(|n| n.expiring_soon_lead.clone()),
            DEFAULT_EXPIRING_SOON_LEAD,
        );
        policy.eligibility_ending_lead = duration_field(
            "spec.notifications.eligibilityEndingLead",
            &spec
                .notifications
                .as_ref()
                .and_then(|n| n.eligibility_ending_lead.clone()),
            DEFAULT_ELIGIBILITY_ENDING_LEAD,
        );
        // Durations only: the sign-in is measured against the moment of acting, which a
        // missing value must not default to.
        let mut age = |field: &str, value: &Option<String>| {
            value
                .as_ref()
                .map(|_| duration_field(field, value, SignedDuration::ZERO))
        };
        policy.authentication = Requirements {
            claims: activation.sign_in.required_claims.clone(),
            max_age: age(
                "spec.activation.maxAuthenticationAge",
                &activation.sign_in.max_authentication_age,
            ),
        };
        let approver_authentication = activation.approval.as_ref().map(|a| Requirements {
            claims: a.sign_in.required_claims.clone(),
            max_age: age(
                "spec.activation.approval.maxAuthenticationAge",
                &a.sign_in.max_authentication_age,
            ),
        });
        let approval_timeout = activation.approval.as_ref().map(|a| {
            duration_field(
                "spec.activation.approval.timeout",
                &a.timeout,
                DEFAULT_APPROVAL_TIMEOUT,
            )
        });

        // The alerts' periods, parsed while `duration_field` holds the violations.
        let alerts = spec.alerts.as_ref();
        let frequency = alerts.and_then(|a| a.activated_too_often.as_ref());
        let alert_periods = [
            frequency.map(|f| {
                let field = "spec.alerts.activatedTooOften.within";
                let within = Some(f.within.clone());
                let parsed = duration_field(field, &within, SignedDuration::ZERO);
                (field, parsed, MAX_ALERT_FREQUENCY_PERIOD)
            }),
            alerts.and_then(|a| a.not_activated_for.as_ref()).map(|_| {
                let field = "spec.alerts.notActivatedFor";
                let value = alerts.and_then(|a| a.not_activated_for.clone());
                let parsed = duration_field(field, &value, SignedDuration::ZERO);
                (field, parsed, MAX_NOT_ACTIVATED_FOR)
            }),
        ];
        for (field, parsed, cap) in alert_periods.iter().flatten().copied() {
            if parsed > cap {
                violations.push(Violation::new(
                    field,
                    reasons::DURATION_EXCEEDS_MAXIMUM,
                    format!(
                        "{} is longer than {}",
                        duration::format(parsed),
                        duration::format(cap)
                    ),
                    format!("set {field} to {} or less", duration::format(cap)),
                ));
            }
        }
        if let Some(Some((field, within, cap))) = alert_periods.first()
            && *within > policy.retention
            && within <= cap
        {
            violations.push(Violation::new(
                *field,
                reasons::DURATION_EXCEEDS_MAXIMUM,
                format!(
                    "{} is longer than the retention of finished requests ({}), which the count reads",
                    duration::format(*within),
                    duration::format(policy.retention)
                ),
                format!(
                    "set {field} to {} or less, or spec.retention to {} or more",
                    duration::format(policy.retention),
                    duration::format(*within)
                ),
            ));
        }
        if let Some(f) = frequency
            && !(2..=100).contains(&f.activations)
        {
            violations.push(Violation::new(
                "spec.alerts.activatedTooOften.activations",
                reasons::INVALID_POLICY,
                "must be between 2 and 100",
                "set spec.alerts.activatedTooOften.activations to a number from 2 to 100",
            ));
        }
        if policy.max_activation > HARD_MAX_ACTIVATION {
            violations.push(Violation::new(
                "spec.activation.maxDuration",
                reasons::DURATION_EXCEEDS_MAXIMUM,
                format!(
                    "{} is longer than the hard cap of {}",
                    duration::format(policy.max_activation),
                    duration::format(HARD_MAX_ACTIVATION)
                ),
                format!(
                    "set spec.activation.maxDuration to {} or less; no activation may last longer",
                    duration::format(HARD_MAX_ACTIVATION)
                ),
            ));
        }
        policy.require_justification = activation.require_justification.unwrap_or(true);
        policy.require_ticket = activation.require_ticket.unwrap_or(false);
        policy.require_mfa = activation.require_mfa.unwrap_or(false);
        policy.allow_renewal = activation.allow_renewal.unwrap_or(false);
        match activation.max_open_requests.map(usize::try_from) {
            None => {}
            Some(Ok(n)) if (1..=100).contains(&n) => policy.max_open_requests = n,
            Some(_) => violations.push(Violation::new(
                "spec.activation.maxOpenRequests",
                reasons::INVALID_POLICY,
                "must be between 1 and 100",
                format!(
                    "set spec.activation.maxOpenRequests to a number from 1 to 100, or leave it out for {DEFAULT_MAX_OPEN_REQUESTS}"
                ),
            )),
        }
        policy.assignments.allow_permanent_eligible =
            assignment.allow_permanent_eligible.unwrap_or(false);
        policy.assignments.allow_permanent_active =
            assignment.allow_permanent_active.unwrap_or(false);
        policy.assignments.require_justification = assignment.require_justification.unwrap_or(true);

        if let (Some(approval), Some(timeout)) = (&activation.approval, approval_timeout) {
            if timeout > MAX_APPROVAL_TIMEOUT {
                violations.push(Violation::new(
                    "spec.activation.approval.timeout",
                    reasons::DURATION_EXCEEDS_MAXIMUM,
                    format!("{} is longer than 30d", duration::format(timeout)),
                    format!(
                        "set spec.activation.approval.timeout to {} or less",
                        duration::format(MAX_APPROVAL_TIMEOUT)
                    ),
                ));
            }
            if approval.approvers.is_empty() {
                violations.push(Violation::new(
                    "spec.activation.approval.approvers",
                    reasons::INVALID_POLICY,
                    "name at least one approver",
                    "add an entry to spec.activation.approval.approvers, such as `- user: bob@contoso.com` or `- group: ops-leads`, or remove spec.activation.approval",
                ));
            }
            for (i, approver) in approval.approvers.iter().enumerate() {
                if approver.resolve().is_none() {
                    violations.push(Violation::new(
                        format!("spec.activation.approval.approvers[{i}]"),
                        reasons::INVALID_POLICY,
                        "set exactly one of user or group",
                        format!(
                            "keep either `user:` or `group:` in spec.activation.approval.approvers[{i}], and remove the other"
                        ),
                    ));
                }
            }
            let min = approval.min_approvals.unwrap_or(1);
            let only_users = approval
                .approvers
                .iter()
                .all(|a| matches!(a.resolve(), Some(Principal::User(_))));
            let min_approvals = usize::try_from(min).unwrap_or(0);
            if min_approvals == 0 || min_approvals > MAX_MIN_APPROVALS {
                violations.push(Violation::new(
                    "spec.activation.approval.minApprovals",
                    reasons::INVALID_POLICY,
                    format!("must be between 1 and {MAX_MIN_APPROVALS}, not {min}"),
                    format!(
                        "set spec.activation.approval.minApprovals to a number from 1 to {MAX_MIN_APPROVALS}"
                    ),
                ));
            } else if only_users && min_approvals > approval.approvers.len() {
                violations.push(Violation::new(
                    "spec.activation.approval.minApprovals",
                    reasons::INVALID_POLICY,
                    format!(
                        "{min_approvals} approvals can never be collected from {} approver(s)",
                        approval.approvers.len()
                    ),
                    format!(
                        "lower spec.activation.approval.minApprovals to {} or less, or add approvers (a `group:` approver lifts the limit)",
                        approval.approvers.len()
                    ),
                ));
            }
            policy.approval = Some(ApprovalRules {
                approvers: approval.approvers.clone(),
                min_approvals: min_approvals.max(1),
                timeout,
                allow_self_approval: approval.allow_self_approval.unwrap_or(false),
                // Off unless asked: the controller checks every approval again on every pass,
                // so a default that followed activation.requireMfa would revoke access that
                // approvers without MFA evidence (every one signed before the field existed)
                // approved before an upgrade.
                require_mfa: approval.require_mfa.unwrap_or(false),
                authentication: approver_authentication.clone().unwrap_or_default(),
            });
        }

        if violations.is_empty() {
            Ok(policy)
        } else {
            Err(violations)
        }
    }

    /// The policy with names compared under `rule` (the operator's setting).
    pub fn with_identities(mut self, rule: CaseInsensitive) -> Policy {
        self.identities = rule;
        self
    }
}

impl ApprovalRules {
    /// Whether a user, with the groups the API server reported for them, is one of the approvers.
    /// User names compare under `names` ([`Policy::identities`]); group names exactly.
    pub fn allows(
        &self,
        approver: &str,
        approver_groups: &[String],
        names: CaseInsensitive,
    ) -> bool {
        self.approvers.iter().any(|a| match a.resolve() {
            Some(Principal::User(u)) => same_identity(u, approver, names),
            Some(Principal::Group(g)) => approver_groups.iter().any(|ag| ag == g),
            None => false,
        })
    }
}

impl AssignmentRules {
    /// Whether an assignment of this type may be permanent, and its longest span otherwise.
    pub fn limits(&self, kind: AssignmentType) -> (bool, SignedDuration) {
        match kind {
            AssignmentType::Eligible => (self.allow_permanent_eligible, self.max_eligible),
            AssignmentType::Active => (self.allow_permanent_active, self.max_active),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::access_policy::{ActivationSettings, ApprovalSettings, AssignmentSettings};

    fn spec_with(activation: ActivationSettings) -> AccessPolicySpec {
        AccessPolicySpec {
            activation,
            ..Default::default()
        }
    }

    #[test]
    fn defaults_follow_the_design() {
        let p = Policy::from_spec(&AccessPolicySpec::default()).unwrap();
        assert_eq!(p.max_activation, SignedDuration::from_hours(8));
        assert!(p.require_justification);
        assert!(!p.require_ticket && !p.require_mfa);
        assert!(p.approval.is_none());
        assert_eq!(
            p.assignments.max_eligible,
            SignedDuration::from_hours(365 * 24)
        );
        assert_eq!(
            p.assignments.max_active,
            SignedDuration::from_hours(180 * 24)
        );
        assert!(!p.assignments.allow_permanent_eligible && !p.assignments.allow_permanent_active);
        assert_eq!(p.retention, SignedDuration::from_hours(30 * 24));
        assert_eq!(p.max_start_delay, SignedDuration::from_hours(14 * 24));
    }

    // issue 14 finding 9: how far ahead a request may be scheduled is a policy setting, parsed
    // like the other durations, with errors that name the field.
    #[test]
    fn issue_14_finding_9_max_start_delay_is_parsed_and_named_in_errors() {
        let spec = spec_with(ActivationSettings {
            max_start_delay: Some("P3D".into()),
            ..Default::default()
        });
        assert_eq!(
            Policy::from_spec(&spec).unwrap().max_start_delay,
            SignedDuration::from_hours(72)
        );
        for bad in ["0m", "next month"] {
            let spec = spec_with(ActivationSettings {
                max_start_delay: Some(bad.into()),
                ..Default::default()
            });
            let errs = Policy::from_spec(&spec).unwrap_err();
            assert_eq!(errs.len(), 1, "{bad}");
            assert_eq!(errs[0].field, "spec.activation.maxStartDelay");
            assert_eq!(errs[0].reason, reasons::INVALID_DURATION);
            assert!(
                errs[0]
                    .to_string()
                    .starts_with("spec.activation.maxStartDelay: "),
                "{}",
                errs[0]
            );
        }
    }

    // Issue 17 findings 6 and 7: approver MFA is asked for explicitly (an upgrade must not
    // revoke what approvers without MFA evidence approved),
    // and the open-request cap is parsed with errors that name the field.
    #[test]
    fn approver_mfa_defaults_to_the_requesters_and_the_open_cap_is_checked() {
        let with = |require_mfa: Option<bool>, approver_mfa: Option<bool>| {
            spec_with(ActivationSettings {
                require_mfa,
                approval: Some(ApprovalSettings {
                    approvers: vec![PrincipalRef::user("bob")],
                    require_mfa: approver_mfa,
                    ..Default::default()
                }),
                ..Default::default()
            })
        };
        let approver_mfa = |spec: &AccessPolicySpec| {
            Policy::from_spec(spec)
                .unwrap()
                .approval
                .unwrap()
                .require_mfa
        };
        assert!(!approver_mfa(&with(Some(true), None)));
        assert!(!approver_mfa(&with(None, None)));
        assert!(!approver_mfa(&with(Some(true), Some(false))));
        assert!(approver_mfa(&with(None, Some(true))));

        assert_eq!(
            Policy::from_spec(&AccessPolicySpec::default())
                .unwrap()
                .max_open_requests,
            DEFAULT_MAX_OPEN_REQUESTS
        );
        for (n, ok) in [
            (1, true),
            (100, true),
            (0, false),
            (101, false),
            (-3, false),
        ] {
            let spec = spec_with(ActivationSettings {
                max_open_requests: Some(n),
                ..Default::default()
            });
            match Policy::from_spec(&spec) {
                Ok(p) => assert!(ok && p.max_open_requests == n as usize, "{n}"),
                Err(errs) => {
                    assert!(!ok, "{n}");
                    assert_eq!(errs[0].field, "spec.activation.maxOpenRequests");
                }
            }
        }
    }

    #[test]
    fn max_duration_is_capped_at_24h() {
        let ok = spec_with(ActivationSettings {
            max_duration: Some("24h".into()),
            ..Default::default()
        });
        assert_eq!(
            Policy::from_spec(&ok).unwrap().max_activation,
            HARD_MAX_ACTIVATION
        );
        let too_long = spec_with(ActivationSettings {
            max_duration: Some("25h".into()),
            ..Default::default()
        });
        let errs = Policy::from_spec(&too_long).unwrap_err();
        assert_eq!(errs[0].field, "spec.activation.maxDuration");
        assert_eq!(errs[0].reason, reasons::DURATION_EXCEEDS_MAXIMUM);
        assert_eq!(errs[0].message, "1d1h is longer than the hard cap of 1d");
    }

    #[test]
    fn alert_settings_out_of_range_name_their_field() {
        use crate::api::access_policy::{ActivationFrequency, PolicyAlerts};
        let spec = |activations: i32, within: &str, stale: &str| AccessPolicySpec {
            alerts: Some(PolicyAlerts {
                activated_too_often: Some(ActivationFrequency {
                    activations,
                    within: within.into(),
                }),
                not_activated_for: Some(stale.into()),
                critical: Some(true),
            }),
            ..Default::default()
        };
        assert!(Policy::from_spec(&spec(2, "30d", "365d")).is_ok());
        // The count reads finished requests, kept for the retention.
        let short_retention = AccessPolicySpec {
            retention: Some("7d".into()),
            ..spec(2, "8d", "30d")
        };
        let errs = Policy::from_spec(&short_retention).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].message.contains("retention"), "{errs:?}");
        let errs = Policy::from_spec(&spec(1, "31d", "366d")).unwrap_err();
        let fields: Vec<_> = errs.iter().map(|e| (e.field.as_str(), e.reason)).collect();
        assert_eq!(
            fields,
            [
                (
                    "spec.alerts.activatedTooOften.within",
                    reasons::DURATION_EXCEEDS_MAXIMUM
                ),
                (
                    "spec.alerts.notActivatedFor",
                    reasons::DURATION_EXCEEDS_MAXIMUM
                ),
                (
                    "spec.alerts.activatedTooOften.activations",
                    reasons::INVALID_POLICY
                ),
            ]
        );
        let errs = Policy::from_spec(&spec(5, "0s", "soon")).unwrap_err();
        assert!(
            errs.iter().all(|e| e.reason == reasons::INVALID_DURATION),
            "{errs:?}"
        );
        assert_eq!(errs.len(), 2, "{errs:?}");
    }

    #[test]
    fn bad_durations_name_their_field_and_all_are_reported() {
        let spec = AccessPolicySpec {
            activation: ActivationSettings {
                max_duration: Some("0m".into()),
                ..Default::default()
            },
            assignment: AssignmentSettings {
                max_eligible_duration: Some("soon".into()),
                ..Default::default()
            },
            retention: Some("-1d".into()),
            ..Default::default()
        };
        let errs = Policy::from_spec(&spec).unwrap_err();
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.activation.maxDuration",
                "spec.assignment.maxEligibleDuration",
                "spec.retention"
            ]
        );
        assert!(errs.iter().all(|e| e.reason == reasons::INVALID_DURATION));
        assert_eq!(
            errs[0].to_string(),
            "spec.activation.maxDuration: must be longer than zero"
        );
    }

    #[test]
    fn the_eligibility_ending_lead_defaults_to_14d_and_bad_values_name_the_field() {
        use crate::api::access_policy::NotificationSettings;
        let with_lead = |lead: Option<&str>| AccessPolicySpec {
            notifications: Some(NotificationSettings {
                eligibility_ending_lead: lead.map(str::to_owned),
                ..Default::default()
            }),
            ..Default::default()
        };
        let lead =
            |spec: &AccessPolicySpec| Policy::from_spec(spec).map(|p| p.eligibility_ending_lead);
        assert_eq!(
            lead(&AccessPolicySpec::default()).unwrap(),
            SignedDuration::from_hours(14 * 24)
        );
        assert_eq!(
            lead(&with_lead(None)).unwrap(),
            DEFAULT_ELIGIBILITY_ENDING_LEAD
        );
        assert_eq!(
            lead(&with_lead(Some("30d"))).unwrap(),
            SignedDuration::from_hours(30 * 24)
        );
        for bad in ["0d", "a fortnight"] {
            let errs = lead(&with_lead(Some(bad))).unwrap_err();
            assert_eq!(errs.len(), 1, "{bad}");
            assert_eq!(errs[0].field, "spec.notifications.eligibilityEndingLead");
            assert_eq!(errs[0].reason, reasons::INVALID_DURATION);
        }
    }

    fn approval(approvers: Vec<PrincipalRef>, min: Option<i32>) -> AccessPolicySpec {
        spec_with(ActivationSettings {
            approval: Some(ApprovalSettings {
                approvers,
                min_approvals: min,
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    #[test]
    fn approval_rules_check_n_of_m() {
        let two_users = vec![PrincipalRef::user("a"), PrincipalRef::user("b")];
        let p = Policy::from_spec(&approval(two_users.clone(), Some(2))).unwrap();
        let rules = p.approval.unwrap();
        assert_eq!(
            (rules.min_approvals, rules.timeout),
            (2, DEFAULT_APPROVAL_TIMEOUT)
        );
        assert!(!rules.allow_self_approval);

        let errs = Policy::from_spec(&approval(two_users, Some(3))).unwrap_err();
        assert_eq!(errs[0].field, "spec.activation.approval.minApprovals");
        // A group can supply any number of distinct approvers.
        assert!(Policy::from_spec(&approval(vec![PrincipalRef::group("sec")], Some(3))).is_ok());
        assert!(Policy::from_spec(&approval(vec![PrincipalRef::group("sec")], Some(0))).is_err());
        assert!(Policy::from_spec(&approval(vec![], None)).is_err());
        let malformed = PrincipalRef {
            user: Some("a".into()),
            group: Some("g".into()),
        };
        let errs = Policy::from_spec(&approval(vec![malformed], None)).unwrap_err();
        assert_eq!(errs[0].field, "spec.activation.approval.approvers[0]");
    }

    #[test]
    fn approvers_match_by_user_or_group() {
        let p = Policy::from_spec(&approval(
            vec![PrincipalRef::user("ann"), PrincipalRef::group("sec-leads")],
            None,
        ))
        .unwrap();
        let rules = p.approval.unwrap();
        let exact = CaseInsensitive::Never;
        assert!(rules.allows("ann", &[], exact));
        assert!(rules.allows("bob", &["sec-leads".into()], exact));
        assert!(!rules.allows("bob", &["devs".into()], exact));
        assert!(!rules.allows("sec-leads", &[], exact));
        assert!(!rules.allows("ANN", &[], exact));
        assert!(rules.allows("ANN", &[], CaseInsensitive::Always));
    }

    /// issue 14 finding 8: the approver list names `Ann@x.org`; the identity provider reports
    /// `ann@x.org` or `ANN@X.ORG` on different days. Same person, same rights, by default.
    #[test]
    fn email_like_approvers_match_whatever_the_case() {
        let p = Policy::from_spec(&approval(vec![PrincipalRef::user("Ann@x.org")], None)).unwrap();
        assert_eq!(p.identities, CaseInsensitive::EmailLike);
        let rules = p.approval.clone().unwrap();
        assert!(rules.allows("ann@x.org", &[], p.identities));
        assert!(rules.allows("ANN@X.ORG", &[], p.identities));
        assert!(!rules.allows("ann@x.org", &[], CaseInsensitive::Never));
        let sensitive = p.with_identities(CaseInsensitive::Never);
        assert_eq!(sensitive.identities, CaseInsensitive::Never);
    }
}
