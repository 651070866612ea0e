//! When an assignment holds, after policy caps, and which assignments make a principal eligible.

use jiff::{SignedDuration, Timestamp};

use super::violation::Violation;
use super::{duration, policy::AssignmentRules, time::add};
use crate::api::common::{Principal, Role};
use crate::api::conditions::reasons;
use crate::api::eligible_assignment::{AssignmentType, EligibleAssignmentSpec};

/// The span in which an assignment holds: `[start, end)`, or from `start` on when `end` is `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssignmentWindow {
    pub start: Timestamp,
    pub end: Option<Timestamp>,
    /// Why the end is earlier than the schedule asked, when a policy cap shortened it.
    pub clipped: Option<String>,
    /// The access review that ended it, when one did (`end` is then no later than its `at`).
    pub denied: Option<ReviewDenial>,
}

/// An access review's denial of an assignment: from `at` on it grants nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewDenial {
    pub review: String,
    pub at: Timestamp,
    pub by: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssignmentState {
    NotStarted,
    Effective,
    Ended,
}

impl AssignmentWindow {
    pub fn contains(&self, t: Timestamp) -> bool {
        self.start <= t && self.end.is_none_or(|end| t < end)
    }

    pub fn state(&self, now: Timestamp) -> AssignmentState {
        if now < self.start {
            AssignmentState::NotStarted
        } else if self.contains(now) {
            AssignmentState::Effective
        } else {
            AssignmentState::Ended
        }
    }

    /// When the reminder that this window ends falls due: `lead` before its end. `None` when it
    /// never ends, or when the whole window is no longer than the lead: it was made that short
    /// on purpose, and the notice that it took effect already named its end.
    pub fn ending_reminder(&self, lead: SignedDuration) -> Option<Timestamp> {
        let at = add(self.end?, -lead);
        (at > self.start).then_some(at)
    }

    /// Whether, at `now`, the window has not ended yet but its reminder is due: it ends within
    /// `lead`.
    pub fn ends_within(&self, lead: SignedDuration, now: Timestamp) -> bool {
        self.ending_reminder(lead).is_some_and(|at| at <= now)
            && self.end.is_some_and(|end| now < end)
    }

    /// The next instant after `now` at which the state changes.
    pub fn next_change(&self, now: Timestamp) -> Option<Timestamp> {
        [Some(self.start), self.end]
            .into_iter()
            .flatten()
            .filter(|t| *t > now)
            .min()
    }
}

/// Works out an assignment's window from its schedule and its policy's caps.
///
/// A schedule longer than the policy allows is clipped, never rejected, so that tightening a
/// policy shortens existing assignments instead of invalidating them; `clipped` says so.
/// `created` stands in for a missing `schedule.start`.
pub fn assignment_window(
    spec: &EligibleAssignmentSpec,
    created: Timestamp,
    rules: &AssignmentRules,
) -> Result<AssignmentWindow, Vec<Violation>> {
    let mut violations = Vec::new();
    if spec.principal.resolve().is_none() {
        violations.push(Violation::new(
            "spec.principal",
            reasons::INVALID_PRINCIPAL,
            "set exactly one of user or group",
            "keep either spec.principal.user or spec.principal.group, and remove the other",
        ));
    }
    if rules.require_justification && is_blank(spec.justification.as_deref()) {
        violations.push(Violation::new(
            "spec.justification",
            reasons::JUSTIFICATION_REQUIRED,
            "the policy requires a justification for assignments",
            "add spec.justification saying why the principal needs to be eligible",
        ));
    }
    let schedule = &spec.schedule;
    let start = schedule.start.as_ref().map_or(created, |t| t.0);
    let permanent = schedule.permanent.unwrap_or(false);
    let set = [
        schedule.end.is_some(),
        schedule.duration.is_some(),
        permanent,
    ];
    let end = match set {
        [true, false, false] => schedule.end.as_ref().map(|t| t.0),
        [false, true, false] => match schedule
            .duration
            .as_deref()
            .map(|d| duration::parse_positive("spec.schedule.duration", d))
        {
            Some(Ok(d)) => Some(add(start, d)),
            Some(Err(e)) => {
                violations.push(Violation::duration(e, reasons::INVALID_SCHEDULE));
                None
            }
            None => None,
        },
        [false, false, true] => None,
        _ => {
            violations.push(Violation::new(
                "spec.schedule",
                reasons::INVALID_SCHEDULE,
                "set exactly one of end, duration or permanent: true",
                "keep exactly one of spec.schedule.end, spec.schedule.duration or spec.schedule.permanent: true, and remove the others",
            ));
            None
        }
    };
    if let Some(end) = end
        && end <= start
    {
        violations.push(Violation::new(
            "spec.schedule.end",
            reasons::INVALID_SCHEDULE,
            format!("{end} is not after the start {start}"),
            format!("set spec.schedule.end to a time after {start}, or use spec.schedule.duration"),
        ));
    }
    if !violations.is_empty() {
        return Err(violations);
    }

    let (allow_permanent, max) = rules.limits(spec.assignment_type);
    let cap = add(start, max);
    let kind = match spec.assignment_type {
        AssignmentType::Eligible => "eligible",
        AssignmentType::Active => "active",
    };
    let (end, clipped) = match end {
        None if !allow_permanent => (
            Some(cap),
            Some(format!(
                "the policy does not allow permanent {kind} assignments; ends after {}",
                duration::format(max)
            )),
        ),
        Some(end) if end > cap => (
            Some(cap),
            Some(format!(
                "the policy allows {kind} assignments of at most {}",
                duration::format(max)
            )),
        ),
        end => (end, None),
    };
    Ok(AssignmentWindow {
        start,
        end,
        clipped,
        denied: None,
    })
}

/// One way a principal is eligible for a (group, role).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eligibility {
    /// Name of the EligibleAssignment.
    pub assignment: String,
    pub start: Timestamp,
    pub end: Option<Timestamp>,
    /// The directory group through which the principal qualifies, when not directly.
    pub via_group: Option<String>,
}

impl Eligibility {
    pub fn contains(&self, t: Timestamp) -> bool {
        self.start <= t && self.end.is_none_or(|end| t < end)
    }
}

/// An assignment with its computed window, as input to [`eligibilities_for`].
#[derive(Debug, Clone, Copy)]
pub struct AssignmentEntry<'a> {
    pub name: &'a str,
    pub spec: &'a EligibleAssignmentSpec,
    pub window: &'a AssignmentWindow,
}

/// The Eligible-type assignments that cover `principal` for `group`/`role`, whatever their time.
/// `is_member_of` answers whether the principal belongs to a directory group; the caller knows
/// how (the requester's groups from admission, or a transitive directory lookup).
pub fn eligibilities_for<'a>(
    principal: &str,
    group: &str,
    role: Role,
    assignments: impl IntoIterator<Item = AssignmentEntry<'a>>,
    is_member_of: impl Fn(&str) -> bool,
) -> Vec<Eligibility> {
    assignments
        .into_iter()
        .filter(|a| {
            a.spec.assignment_type == AssignmentType::Eligible
                && a.spec.group == group
                && a.spec.role == role
        })
        .filter_map(|a| {
            let via_group = match a.spec.principal.resolve()? {
                Principal::User(u) if u == principal => None,
                Principal::Group(g) if is_member_of(g) => Some(g.to_owned()),
                _ => return None,
            };
            Some(Eligibility {
                assignment: a.name.to_owned(),
                start: a.window.start,
                end: a.window.end,
                via_group,
            })
        })
        .collect()
}

/// Of the eligibilities that hold at `at`, the one lasting longest (ties broken by name).
pub fn covering(eligibilities: &[Eligibility], at: Timestamp) -> Option<&Eligibility> {
    eligibilities
        .iter()
        .filter(|e| e.contains(at))
        .max_by(|a, b| {
            let end = |e: &Eligibility| e.end.unwrap_or(Timestamp::MAX);
            end(a)
                .cmp(&end(b))
                .then_with(|| b.assignment.cmp(&a.assignment))
        })
}

fn is_blank(text: Option<&str>) -> bool {
    text.is_none_or(|t| t.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::common::PrincipalRef;
    use crate::api::eligible_assignment::Schedule;
    use crate::core::policy::Policy;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn spec(schedule: Schedule) -> EligibleAssignmentSpec {
        EligibleAssignmentSpec {
            group: "finreport".into(),
            principal: PrincipalRef::user("alice"),
            schedule,
            justification: Some("quarter close".into()),
            ..Default::default()
        }
    }

    fn rules() -> AssignmentRules {
        Policy::default().assignments
    }

    #[test]
    fn schedule_forms() {
        let created = ts("2026-01-01T00:00:00Z");
        let by_end = spec(Schedule {
            end: Some(Time(ts("2026-02-01T00:00:00Z"))),
            ..Default::default()
        });
        let w = assignment_window(&by_end, created, &rules()).unwrap();
        assert_eq!(
            (w.start, w.end, w.clipped),
            (created, Some(ts("2026-02-01T00:00:00Z")), None)
        );

        let by_duration = spec(Schedule {
            start: Some(Time(ts("2026-01-10T00:00:00Z"))),
            duration: Some("90d".into()),
            ..Default::default()
        });
        let w = assignment_window(&by_duration, created, &rules()).unwrap();
        assert_eq!(w.end, Some(ts("2026-04-10T00:00:00Z")));
        assert_eq!(
            w.state(ts("2026-01-09T00:00:00Z")),
            AssignmentState::NotStarted
        );
        assert_eq!(
            w.state(ts("2026-01-10T00:00:00Z")),
            AssignmentState::Effective
        );
        assert_eq!(w.state(ts("2026-04-10T00:00:00Z")), AssignmentState::Ended);
        assert_eq!(
            w.next_change(ts("2026-01-09T00:00:00Z")),
            Some(ts("2026-01-10T00:00:00Z"))
        );
        assert_eq!(w.next_change(ts("2026-04-10T00:00:00Z")), None);
    }

    #[test]
    fn caps_clip_rather_than_lengthen() {
        let created = ts("2026-01-01T00:00:00Z");
        let long = spec(Schedule {
            duration: Some("400d".into()),
            ..Default::default()
        });
        let w = assignment_window(&long, created, &rules()).unwrap();
        assert_eq!(w.end, Some(ts("2027-01-01T00:00:00Z")));
        assert!(w.clipped.unwrap().contains("at most 365d"));

        let permanent = spec(Schedule {
            permanent: Some(true),
            ..Default::default()
        });
        let w = assignment_window(&permanent, created, &rules()).unwrap();
        assert_eq!(w.end, Some(ts("2027-01-01T00:00:00Z")));
        assert!(
            w.clipped
                .unwrap()
                .contains("does not allow permanent eligible")
        );

        let mut allowing = rules();
        allowing.allow_permanent_eligible = true;
        let w = assignment_window(&permanent, created, &allowing).unwrap();
        assert_eq!((w.end, w.clipped), (None, None));

        let mut active = spec(Schedule {
            duration: Some("200d".into()),
            ..Default::default()
        });
        active.assignment_type = AssignmentType::Active;
        let w = assignment_window(&active, created, &rules()).unwrap();
        assert!(
            w.clipped
                .unwrap()
                .contains("active assignments of at most 180d")
        );
    }

    #[test]
    fn broken_assignments_name_the_field() {
        let created = ts("2026-01-01T00:00:00Z");
        let none = spec(Schedule::default());
        assert_eq!(
            assignment_window(&none, created, &rules()).unwrap_err()[0].field,
            "spec.schedule"
        );
        let two = spec(Schedule {
            duration: Some("1d".into()),
            permanent: Some(true),
            ..Default::default()
        });
        assert_eq!(
            assignment_window(&two, created, &rules()).unwrap_err()[0].field,
            "spec.schedule"
        );
        let backwards = spec(Schedule {
            end: Some(Time(ts("2025-12-31T00:00:00Z"))),
            ..Default::default()
        });
        assert_eq!(
            assignment_window(&backwards, created, &rules()).unwrap_err()[0].field,
            "spec.schedule.end"
        );
        let zero = spec(Schedule {
            duration: Some("0d".into()),
            ..Default::default()
        });
        let err = &assignment_window(&zero, created, &rules()).unwrap_err()[0];
        assert_eq!(
            (err.field.as_str(), err.reason),
            ("spec.schedule.duration", reasons::INVALID_SCHEDULE)
        );
        let mut unjustified = spec(Schedule {
            duration: Some("1d".into()),
            ..Default::default()
        });
        unjustified.justification = Some("  ".into());
        assert_eq!(
            assignment_window(&unjustified, created, &rules()).unwrap_err()[0].field,
            "spec.justification"
        );
        let mut both = spec(Schedule {
            duration: Some("1d".into()),
            ..Default::default()
        });
        both.principal = PrincipalRef {
            user: Some("a".into()),
            group: Some("g".into()),
        };
        assert_eq!(
            assignment_window(&both, created, &rules()).unwrap_err()[0].field,
            "spec.principal"
        );
    }

    #[test]
    fn eligibility_through_user_or_group() {
        let window = AssignmentWindow {
            start: ts("2026-01-01T00:00:00Z"),
            end: Some(ts("2026-02-01T00:00:00Z")),
            clipped: None,
            denied: None,
        };
        let forever = AssignmentWindow {
            start: ts("2026-01-01T00:00:00Z"),
            end: None,
            clipped: None,
            denied: None,
        };
        let direct = spec(Schedule::default());
        let mut via_group = spec(Schedule::default());
        via_group.principal = PrincipalRef::group("analysts");
        let mut other_group = spec(Schedule::default());
        other_group.group = "payroll".into();
        let mut active_type = spec(Schedule::default());
        active_type.assignment_type = AssignmentType::Active;
        let mut owner = spec(Schedule::default());
        owner.role = Role::Owner;
        let entries = [
            AssignmentEntry {
                name: "direct",
                spec: &direct,
                window: &window,
            },
            AssignmentEntry {
                name: "team",
                spec: &via_group,
                window: &forever,
            },
            AssignmentEntry {
                name: "payroll",
                spec: &other_group,
                window: &forever,
            },
            AssignmentEntry {
                name: "standing",
                spec: &active_type,
                window: &forever,
            },
            AssignmentEntry {
                name: "owner",
                spec: &owner,
                window: &forever,
            },
        ];
        let found = eligibilities_for("alice", "finreport", Role::Member, entries, |g| {
            g == "analysts"
        });
        let names: Vec<_> = found.iter().map(|e| e.assignment.as_str()).collect();
        assert_eq!(names, ["direct", "team"]);
        assert_eq!(found[1].via_group.as_deref(), Some("analysts"));
        // The permanent one wins over the one ending sooner.
        assert_eq!(
            covering(&found, ts("2026-01-15T00:00:00Z"))
                .unwrap()
                .assignment,
            "team"
        );

        let not_in_group =
            eligibilities_for("alice", "finreport", Role::Member, entries, |_| false);
        assert_eq!(
            covering(&not_in_group, ts("2026-01-15T00:00:00Z"))
                .unwrap()
                .assignment,
            "direct"
        );
        assert!(covering(&not_in_group, ts("2026-02-01T00:00:00Z")).is_none());
        assert!(eligibilities_for("bob", "finreport", Role::Member, entries, |_| false).is_empty());
    }

    #[test]
    fn the_ending_reminder_falls_lead_before_the_end_of_windows_longer_than_the_lead() {
        let window = |start: &str, end: Option<&str>| AssignmentWindow {
            start: ts(start),
            end: end.map(ts),
            clipped: None,
            denied: None,
        };
        let days = |d: i64| SignedDuration::from_hours(d * 24);
        let year = window("2026-01-01T00:00:00Z", Some("2027-01-01T00:00:00Z"));
        assert_eq!(
            year.ending_reminder(days(14)),
            Some(ts("2026-12-18T00:00:00Z"))
        );
        // Before the reminder, from it up to the end, and after the end.
        assert!(!year.ends_within(days(14), ts("2026-12-17T23:59:59Z")));
        assert!(year.ends_within(days(14), ts("2026-12-18T00:00:00Z")));
        assert!(year.ends_within(days(14), ts("2026-12-31T23:59:59Z")));
        assert!(!year.ends_within(days(14), ts("2027-01-01T00:00:00Z")));
        // A longer lead reminds earlier.
        assert!(year.ends_within(days(30), ts("2026-12-10T00:00:00Z")));
        // Never ending: no reminder.
        let forever = window("2026-01-01T00:00:00Z", None);
        assert_eq!(forever.ending_reminder(days(14)), None);
        assert!(!forever.ends_within(days(14), ts("2030-01-01T00:00:00Z")));
        // No longer than the lead: short on purpose, no reminder at any time.
        let week = window("2026-01-01T00:00:00Z", Some("2026-01-08T00:00:00Z"));
        assert_eq!(week.ending_reminder(days(14)), None);
        assert!(!week.ends_within(days(14), ts("2026-01-07T00:00:00Z")));
        let exactly = window("2026-01-01T00:00:00Z", Some("2026-01-15T00:00:00Z"));
        assert_eq!(exactly.ending_reminder(days(14)), None);
        // A renewed end moves the reminder with it.
        let renewed = window("2026-01-01T00:00:00Z", Some("2027-07-01T00:00:00Z"));
        assert_eq!(
            renewed.ending_reminder(days(14)),
            Some(ts("2027-06-17T00:00:00Z"))
        );
        assert!(!renewed.ends_within(days(14), ts("2026-12-20T00:00:00Z")));
    }
}
