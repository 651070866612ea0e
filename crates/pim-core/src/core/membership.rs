//! Desired membership of a (PimGroup, role), and the changes that make the directory equal it
//! (DESIGN §5). Membership is converged, not toggled: the desired set is derived from every
//! grant at `now`, so overlapping requests, restarts and hand edits all heal the same way.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;

use super::eligibility::AssignmentWindow;
use crate::api::activation_request::{ActivationRequestSpec, ActivationRequestStatus, Phase};
use crate::api::common::Principal;
use crate::api::eligible_assignment::{AssignmentType, EligibleAssignmentSpec};
use crate::api::pim_group::{PimGroupSpec, StandingAccess};

/// A member of a directory group: a user, or a nested group (from an Active assignment to a group).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Member {
    User(String),
    Group(String),
}

impl std::fmt::Display for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Member::User(u) => write!(f, "user:{u}"),
            Member::Group(g) => write!(f, "group:{g}"),
        }
    }
}

/// What justifies a grant.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum GrantSource {
    Request(String),
    Assignment(String),
}

/// A principal's right to membership over `[start, end)`; `end: None` means no end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub member: Member,
    pub start: Timestamp,
    pub end: Option<Timestamp>,
    pub source: GrantSource,
}

impl Grant {
    pub fn covers(&self, now: Timestamp) -> bool {
        self.start <= now && self.end.is_none_or(|end| now < end)
    }
}

/// The grant an ActivationRequest holds, from its stored status: approved, Scheduled or Active,
/// with a window and a principal, and not deactivated. Time is checked by the caller, so a
/// status that was not yet updated after its end still grants nothing past the end.
pub fn request_grant(
    name: &str,
    spec: &ActivationRequestSpec,
    status: &ActivationRequestStatus,
) -> Option<Grant> {
    if !matches!(status.phase, Some(Phase::Scheduled | Phase::Active))
        || status.approved_at.is_none()
        || spec.deactivate_requested()
    {
        return None;
    }
    let principal = spec.principal.as_deref().filter(|p| !p.is_empty())?;
    Some(Grant {
        member: Member::User(principal.to_owned()),
        start: status.starts_at.as_ref()?.0,
        end: Some(status.expires_at.as_ref()?.0),
        source: GrantSource::Request(name.to_owned()),
    })
}

/// When a request that did grant access stopped granting it: its early end, or its window's end.
/// Requests that never started granting (denied, timed out, never approved) give `None`.
pub fn request_access_end(
    spec: &ActivationRequestSpec,
    status: &ActivationRequestStatus,
) -> Option<(Member, Timestamp)> {
    status.approved_at.as_ref()?;
    let start = status.starts_at.as_ref()?.0;
    let end = match (&status.ended_at, &status.expires_at) {
        (Some(ended), Some(expires)) => ended.0.min(expires.0),
        (Some(ended), None) => ended.0,
        (None, Some(expires)) => expires.0,
        (None, None) => return None,
    };
    let principal = spec.principal.as_deref().filter(|p| !p.is_empty())?;
    (start < end).then(|| (Member::User(principal.to_owned()), end))
}

/// The grant of an `Active`-type assignment over its (capped) window. Eligible-type ones grant
/// nothing by themselves.
pub fn assignment_grant(
    name: &str,
    spec: &EligibleAssignmentSpec,
    window: &AssignmentWindow,
) -> Option<Grant> {
    if spec.assignment_type != AssignmentType::Active {
        return None;
    }
    let member = match spec.principal.resolve()? {
        Principal::User(u) => Member::User(u.to_owned()),
        Principal::Group(g) => Member::Group(g.to_owned()),
    };
    Some(Grant {
        member,
        start: window.start,
        end: window.end,
        source: GrantSource::Assignment(name.to_owned()),
    })
}

/// The members a (group, role) should have at `now`, each with what justifies it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DesiredMembership {
    pub members: BTreeMap<Member, Vec<GrantSource>>,
    /// The next instant after `now` at which the set can change by time alone.
    pub next_change: Option<Timestamp>,
}

impl DesiredMembership {
    pub fn contains(&self, member: &Member) -> bool {
        self.members.contains_key(member)
    }

    pub fn set(&self) -> BTreeSet<Member> {
        self.members.keys().cloned().collect()
    }
}

/// A member is desired exactly when some grant covers `now`.
pub fn desired_membership<'a>(
    grants: impl IntoIterator<Item = &'a Grant>,
    now: Timestamp,
) -> DesiredMembership {
    let mut desired = DesiredMembership::default();
    for grant in grants {
        if grant.covers(now) {
            desired
                .members
                .entry(grant.member.clone())
                .or_default()
                .push(grant.source.clone());
        }
        let next = [Some(grant.start), grant.end]
            .into_iter()
            .flatten()
            .filter(|t| *t > now)
            .min();
        desired.next_change = match (desired.next_change, next) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    for sources in desired.members.values_mut() {
        sources.sort();
    }
    desired
}

/// What a PimGroup keeps in its directory group whatever the grants say, at one instant
/// (issue 20): how members no grant explains are treated, the members it protects, and whether
/// a role's last member stays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovalRules {
    /// `Remove` or `Report`: `Adopt` is resolved against `adoptAfter` and `now`.
    pub standing: StandingAccess,
    /// Never removed, and never listed as unexplained.
    pub protected: BTreeSet<Member>,
    /// Keep one member when every member of a role would go.
    pub keep_last_member: bool,
    /// When the rules change by time alone: the end of adoption.
    pub next_change: Option<Timestamp>,
}

impl RemovalRules {
    /// The rules of `spec` at `now`.
    pub fn of(spec: &PimGroupSpec, now: Timestamp) -> Self {
        let adopt_after = spec.adopt_after.as_ref().map(|t| t.0);
        let standing = match spec.standing_access {
            StandingAccess::Adopt if adopt_after.is_some_and(|t| t <= now) => {
                StandingAccess::Remove
            }
            StandingAccess::Adopt => StandingAccess::Report,
            other => other,
        };
        let protected = spec
            .protected_members
            .iter()
            .filter_map(|p| match p.resolve()? {
                Principal::User(u) => Some(Member::User(u.to_owned())),
                Principal::Group(g) => Some(Member::Group(g.to_owned())),
            })
            .collect();
        RemovalRules {
            standing,
            protected,
            keep_last_member: spec.protect_last_member,
            next_change: adopt_after
                .filter(|t| *t > now && spec.standing_access == StandingAccess::Adopt),
        }
    }

    /// For a PimGroup being deleted: what it granted goes, the rest stays, nothing is protected.
    pub fn release() -> Self {
        StandingAccess::Report.into()
    }

    pub fn is_protected(&self, member: &Member) -> bool {
        self.protected.contains(member)
    }

    /// The member held back when removing all of `remove` would leave the role of a
    /// `protectLastMember` group empty: one that `granted` does not claim (a standing member,
    /// likelier to be the owner or break-glass account) before one the operator granted, and
    /// otherwise the first in order. Next pass, once another member is in, it goes.
    pub fn last_member_kept(
        &self,
        actual: &BTreeSet<Member>,
        remove: &[Member],
        granted: impl Fn(&Member) -> bool,
    ) -> Option<Member> {
        let emptied = !actual.is_empty() && actual.iter().all(|m| remove.contains(m));
        if !self.keep_last_member || !emptied {
            return None;
        }
        remove
            .iter()
            .find(|m| !granted(m))
            .or_else(|| remove.first())
            .cloned()
    }
}

impl From<StandingAccess> for RemovalRules {
    /// Only the standing-access rule (`Adopt` taken as its report phase).
    fn from(standing: StandingAccess) -> Self {
        RemovalRules {
            standing: match standing {
                StandingAccess::Adopt => StandingAccess::Report,
                other => other,
            },
            protected: BTreeSet::new(),
            keep_last_member: false,
            next_change: None,
        }
    }
}

/// The directory writes that converge one (group, role). Removals come first: revocation
/// takes priority over granting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MembershipPlan {
    pub remove: Vec<Member>,
    pub add: Vec<Member>,
    /// Members no grant explains and that `standingAccess: Report` (or `Adopt`) leaves in place.
    pub unexplained: Vec<Member>,
    /// Present members no grant explains, kept because the PimGroup protects them.
    pub protected: Vec<Member>,
    /// The role's last member, kept under `protectLastMember` although it would go.
    pub kept_last: Option<Member>,
}

impl MembershipPlan {
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.add.is_empty()
    }
}

/// Compares the desired set with the directory's `actual` members. `managed` are the members the
/// operator itself granted (and may therefore remove under `Report`).
pub fn plan(
    desired: &DesiredMembership,
    actual: &BTreeSet<Member>,
    managed: &BTreeSet<Member>,
    rules: &RemovalRules,
) -> MembershipPlan {
    let add = desired
        .members
        .keys()
        .filter(|m| !actual.contains(*m))
        .cloned()
        .collect();
    let mut out = MembershipPlan {
        add,
        ..MembershipPlan::default()
    };
    for member in actual.iter().filter(|m| !desired.contains(m)) {
        if rules.is_protected(member) {
            out.protected.push(member.clone());
        } else if rules.standing == StandingAccess::Remove || managed.contains(member) {
            out.remove.push(member.clone());
        } else {
            out.unexplained.push(member.clone());
        }
    }
    out.kept_last = rules.last_member_kept(actual, &out.remove, |m| managed.contains(m));
    if let Some(kept) = &out.kept_last {
        out.remove.retain(|m| m != kept);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn user(name: &str) -> Member {
        Member::User(name.into())
    }

    fn grant(member: &str, start: &str, end: Option<&str>, source: &str) -> Grant {
        Grant {
            member: user(member),
            start: ts(start),
            end: end.map(ts),
            source: GrantSource::Request(source.into()),
        }
    }

    #[test]
    fn overlapping_requests_keep_access_until_the_later_end() {
        let grants = [
            grant(
                "alice",
                "2026-01-01T10:00:00Z",
                Some("2026-01-01T11:00:00Z"),
                "first",
            ),
            grant(
                "alice",
                "2026-01-01T10:30:00Z",
                Some("2026-01-01T12:00:00Z"),
                "second",
            ),
        ];
        let at = |t| desired_membership(&grants, ts(t));
        assert_eq!(at("2026-01-01T10:45:00Z").members[&user("alice")].len(), 2);
        assert!(at("2026-01-01T11:30:00Z").contains(&user("alice")));
        assert_eq!(
            at("2026-01-01T11:30:00Z").next_change,
            Some(ts("2026-01-01T12:00:00Z"))
        );
        assert!(!at("2026-01-01T12:00:00Z").contains(&user("alice")));
        assert_eq!(at("2026-01-01T12:00:00Z").next_change, None);
        assert_eq!(
            at("2026-01-01T09:00:00Z").next_change,
            Some(ts("2026-01-01T10:00:00Z"))
        );
    }

    #[test]
    fn only_live_approved_requests_grant() {
        let spec = ActivationRequestSpec {
            group: "g".into(),
            principal: Some("alice".into()),
            ..Default::default()
        };
        let status = ActivationRequestStatus {
            phase: Some(Phase::Active),
            approved_at: Some(Time(ts("2026-01-01T10:00:00Z"))),
            starts_at: Some(Time(ts("2026-01-01T10:00:00Z"))),
            expires_at: Some(Time(ts("2026-01-01T11:00:00Z"))),
            ..Default::default()
        };
        let g = request_grant("r", &spec, &status).unwrap();
        assert_eq!(
            (g.member, g.end),
            (user("alice"), Some(ts("2026-01-01T11:00:00Z")))
        );
        for phase in Phase::ALL
            .into_iter()
            .filter(|p| !matches!(p, Phase::Scheduled | Phase::Active))
        {
            let s = ActivationRequestStatus {
                phase: Some(phase),
                ..status.clone()
            };
            assert!(request_grant("r", &spec, &s).is_none(), "{phase}");
        }
        let unapproved = ActivationRequestStatus {
            approved_at: None,
            ..status.clone()
        };
        assert!(request_grant("r", &spec, &unapproved).is_none());
        let deactivated = ActivationRequestSpec {
            deactivate: Some(true),
            ..spec.clone()
        };
        assert!(request_grant("r", &deactivated, &status).is_none());
        let anonymous = ActivationRequestSpec {
            principal: None,
            ..spec
        };
        assert!(request_grant("r", &anonymous, &status).is_none());
    }

    #[test]
    fn access_end_outlives_the_grant() {
        let spec = ActivationRequestSpec {
            group: "g".into(),
            principal: Some("alice".into()),
            ..Default::default()
        };
        let expired = ActivationRequestStatus {
            phase: Some(Phase::Expired),
            approved_at: Some(Time(ts("2026-01-01T10:00:00Z"))),
            starts_at: Some(Time(ts("2026-01-01T10:00:00Z"))),
            expires_at: Some(Time(ts("2026-01-01T11:00:00Z"))),
            ended_at: Some(Time(ts("2026-01-01T11:00:00Z"))),
            ..Default::default()
        };
        // A finished request grants nothing, but its end is still known for the lag metric.
        assert!(request_grant("r", &spec, &expired).is_none());
        assert_eq!(
            request_access_end(&spec, &expired),
            Some((user("alice"), ts("2026-01-01T11:00:00Z")))
        );
        let deactivated_early = ActivationRequestStatus {
            phase: Some(Phase::Deactivated),
            ended_at: Some(Time(ts("2026-01-01T10:20:00Z"))),
            ..expired.clone()
        };
        assert_eq!(
            request_access_end(&spec, &deactivated_early).map(|(_, end)| end),
            Some(ts("2026-01-01T10:20:00Z"))
        );
        let denied = ActivationRequestStatus {
            phase: Some(Phase::Denied),
            approved_at: None,
            starts_at: None,
            expires_at: None,
            ..expired.clone()
        };
        assert_eq!(request_access_end(&spec, &denied), None);
        // Ended before it started (deactivated while Scheduled): it never granted.
        let never_started = ActivationRequestStatus {
            ended_at: Some(Time(ts("2026-01-01T09:00:00Z"))),
            ..expired
        };
        assert_eq!(request_access_end(&spec, &never_started), None);
    }

    #[test]
    fn remove_converges_and_report_only_touches_our_grants() {
        let grants = [grant("alice", "2026-01-01T10:00:00Z", None, "a")];
        let desired = desired_membership(&grants, ts("2026-01-01T10:00:00Z"));
        let actual: BTreeSet<_> = [user("bob"), user("carol")].into();
        let managed: BTreeSet<_> = [user("bob")].into();
        let p = plan(&desired, &actual, &managed, &StandingAccess::Remove.into());
        assert_eq!(
            (p.add, p.remove, p.unexplained),
            (
                vec![user("alice")],
                vec![user("bob"), user("carol")],
                vec![]
            )
        );
        let p = plan(&desired, &actual, &managed, &StandingAccess::Report.into());
        assert_eq!(
            (p.remove, p.unexplained),
            (vec![user("bob")], vec![user("carol")])
        );
        let in_sync: BTreeSet<_> = [user("alice")].into();
        assert!(plan(&desired, &in_sync, &managed, &StandingAccess::Remove.into()).is_empty());
    }

    fn group_spec(standing: StandingAccess, adopt_after: Option<&str>) -> PimGroupSpec {
        PimGroupSpec {
            standing_access: standing,
            adopt_after: adopt_after.map(|t| Time(ts(t))),
            ..Default::default()
        }
    }

    // Issue 20: a new PimGroup adopts (reports) until adoptAfter, then removes.
    #[test]
    fn adoption_reports_until_adopt_after_then_removes() {
        let before = ts("2026-01-01T09:00:00Z");
        let after = ts("2026-01-01T10:00:00Z");
        let open_ended = group_spec(StandingAccess::default(), None);
        assert_eq!(StandingAccess::default(), StandingAccess::Adopt);
        let rules = RemovalRules::of(&open_ended, after);
        assert_eq!(
            (rules.standing, rules.next_change),
            (StandingAccess::Report, None)
        );
        let timed = group_spec(StandingAccess::Adopt, Some("2026-01-01T10:00:00Z"));
        let rules = RemovalRules::of(&timed, before);
        assert_eq!(
            (rules.standing, rules.next_change),
            (StandingAccess::Report, Some(after))
        );
        let rules = RemovalRules::of(&timed, after);
        assert_eq!(
            (rules.standing, rules.next_change),
            (StandingAccess::Remove, None)
        );
        // Report stays Report, Remove stays Remove.
        for standing in [StandingAccess::Report, StandingAccess::Remove] {
            assert_eq!(
                RemovalRules::of(&group_spec(standing, None), after).standing,
                standing
            );
        }
        // The plan: the standing member is listed while adopting, removed after.
        let desired = DesiredMembership::default();
        let actual: BTreeSet<_> = [user("bob")].into();
        let none = BTreeSet::new();
        let p = plan(&desired, &actual, &none, &RemovalRules::of(&timed, before));
        assert_eq!((p.remove, p.unexplained), (vec![], vec![user("bob")]));
        let p = plan(&desired, &actual, &none, &RemovalRules::of(&timed, after));
        assert_eq!((p.remove, p.unexplained), (vec![user("bob")], vec![]));
    }

    #[test]
    fn protected_members_and_the_last_member_stay() {
        let spec = PimGroupSpec {
            standing_access: StandingAccess::Remove,
            protected_members: vec![
                crate::api::common::PrincipalRef::group("breakglass"),
                crate::api::common::PrincipalRef::default(),
            ],
            protect_last_member: true,
            ..Default::default()
        };
        let rules = RemovalRules::of(&spec, ts("2026-01-01T10:00:00Z"));
        // A malformed reference protects nobody.
        assert_eq!(rules.protected, [Member::Group("breakglass".into())].into());
        let desired = DesiredMembership::default();
        let actual: BTreeSet<_> = [Member::Group("breakglass".into()), user("bob")].into();
        let managed: BTreeSet<_> = [user("bob")].into();
        let p = plan(&desired, &actual, &managed, &rules);
        assert_eq!(p.remove, vec![user("bob")]);
        assert_eq!(p.protected, vec![Member::Group("breakglass".into())]);
        assert_eq!(p.kept_last, None);
        let alone: BTreeSet<_> = [user("bob"), user("carol")].into();
        let p = plan(&desired, &alone, &managed, &rules);
        // carol was not granted by us: she is the one kept.
        assert_eq!(
            (p.remove, p.kept_last),
            (vec![user("bob")], Some(user("carol")))
        );
    }
}
