//! Property tests: the invariants of DESIGN §4 and §5 over random requests, facts and clocks.

use jiff::Timestamp;
use proptest::prelude::*;

use super::world::{World, at, eligibility, mins};
use crate::api::activation_request::{Decision as Vote, Phase};
use crate::core::eligibility::covering;
use crate::core::membership::{Grant, GrantSource, Member, desired_membership};
use crate::core::policy::ApprovalRules;

const CASES: u32 = 512;

/// Something that happens between two passes of the controller.
#[derive(Debug, Clone)]
enum Event {
    Nothing,
    MemberAppears,
    MemberDisappears,
    PolicyMax(i64),
    EligibilityEnds(i64),
    EligibilityRemoved,
    Deactivate,
    Vote { approver: usize, deny: bool },
}

#[derive(Debug, Clone)]
struct Scenario {
    policy_max: i64,
    approval: Option<(usize, i64)>,
    eligibilities: Vec<(i64, Option<i64>)>,
    duration: Option<i64>,
    start_time: Option<i64>,
    steps: Vec<(i64, Event)>,
}

const APPROVERS: [&str; 5] = ["ann", "ben", "cat", "alice", "mallory"];

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        3 => Just(Event::Nothing),
        2 => Just(Event::MemberAppears),
        1 => Just(Event::MemberDisappears),
        1 => (1i64..=1440).prop_map(Event::PolicyMax),
        1 => (-60i64..600).prop_map(Event::EligibilityEnds),
        1 => Just(Event::EligibilityRemoved),
        1 => Just(Event::Deactivate),
        3 => (0usize..5, prop::bool::weighted(0.15)).prop_map(|(approver, deny)| Event::Vote { approver, deny }),
    ]
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        1i64..=1440,
        prop::option::of((1usize..=3, 1i64..=2880)),
        prop::collection::vec((-2000i64..2000, prop::option::of(1i64..6000)), 0..3),
        prop::option::of(1i64..=1500),
        prop::option::of(-200i64..3000),
        prop::collection::vec((0i64..400, event()), 1..14),
    )
        .prop_map(
            |(policy_max, approval, eligibilities, duration, start_time, steps)| Scenario {
                policy_max,
                approval,
                eligibilities,
                duration,
                start_time,
                steps,
            },
        )
}

fn world_for(s: &Scenario) -> World {
    let mut w = World::new();
    w.policy.max_activation = mins(s.policy_max);
    w.policy.approval = s.approval.map(|(min, timeout)| ApprovalRules {
        approvers: APPROVERS[..3]
            .iter()
            .map(|a| crate::api::common::PrincipalRef::user(*a))
            .collect(),
        min_approvals: min,
        timeout: mins(timeout),
        allow_self_approval: false,
        require_mfa: false,
        authentication: Default::default(),
    });
    w.eligibilities = s
        .eligibilities
        .iter()
        .enumerate()
        .map(|(i, (start, len))| eligibility(&format!("e{i}"), *start, *len))
        .collect();
    w.spec.duration = s.duration.map(|d| format!("{d}m"));
    if let Some(start) = s.start_time {
        w.set_start_time(start);
    }
    w
}

fn apply(w: &mut World, event: &Event, now_mins: i64) {
    match event {
        Event::Nothing => {}
        Event::MemberAppears => w.member_present = true,
        Event::MemberDisappears => w.member_present = false,
        Event::PolicyMax(m) => w.policy.max_activation = mins(*m),
        Event::EligibilityEnds(offset) => {
            for e in &mut w.eligibilities {
                let end = at(now_mins + offset).max(e.start);
                e.end = Some(e.end.map_or(end, |old| old.min(end)));
            }
        }
        Event::EligibilityRemoved => {
            w.eligibilities.pop();
        }
        Event::Deactivate => w.spec.deactivate = Some(true),
        Event::Vote { approver, deny } => {
            let vote = if *deny { Vote::Deny } else { Vote::Approve };
            w.vote(APPROVERS[*approver], vote, now_mins);
        }
    }
}

/// Runs a scenario, calling `check` after every pass with the world and the clock.
fn run(
    s: &Scenario,
    mut check: impl FnMut(&World, Timestamp, Option<Phase>) -> Result<(), TestCaseError>,
) -> Result<(), TestCaseError> {
    let mut w = world_for(s);
    let mut now = 0;
    for (dt, event) in &s.steps {
        now += dt;
        apply(&mut w, event, now);
        let before = w.status.phase;
        w.step(now);
        check(&w, at(now), before)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// Never Active, and never granting, outside [start, end).
    #[test]
    fn never_active_outside_the_window(s in scenario()) {
        run(&s, |w, now, _| {
            let d = w.last();
            if d.phase == Phase::Active || d.grants_access_at(now) {
                let window = d.window.ok_or_else(|| TestCaseError::fail("active without a window"))?;
                prop_assert!(window.start <= now && now < window.end, "active at {now} outside {window:?}");
            }
            Ok(())
        })?;
    }

    /// The end never passes the policy maximum nor the end of the eligibility that covers it.
    #[test]
    fn end_never_passes_eligibility_or_policy(s in scenario()) {
        run(&s, |w, now, _| {
            let d = w.last();
            if let (Some(window), false) = (d.window, d.phase.is_terminal()) {
                prop_assert!(window.end.duration_since(window.start) <= w.policy.max_activation,
                    "{window:?} longer than {:?}", w.policy.max_activation);
                let eligibility = covering(&w.eligibilities, window.start.max(now));
                let eligibility = eligibility.ok_or_else(|| TestCaseError::fail("live window without eligibility"))?;
                prop_assert!(eligibility.end.is_none_or(|end| window.end <= end), "{window:?} outlives {eligibility:?}");
            }
            Ok(())
        })?;
    }

    /// A window, once granted, never gets longer.
    #[test]
    fn windows_only_shrink(s in scenario()) {
        let mut previous: Option<Timestamp> = None;
        run(&s, |w, _, _| {
            if let Some(window) = w.last().window {
                if let Some(prev) = previous {
                    prop_assert!(window.end <= prev, "end moved from {prev} to {}", window.end);
                }
                previous = Some(window.end);
            }
            Ok(())
        })?;
    }

    /// A terminal phase never changes.
    #[test]
    fn terminal_phases_are_final(s in scenario()) {
        run(&s, |w, _, before| {
            if let Some(before) = before.filter(|p| p.is_terminal()) {
                prop_assert_eq!(w.last().phase, before);
            }
            Ok(())
        })?;
    }

    /// The next deadline is in the future, nothing changes before it with the same facts, and
    /// waking at it makes progress.
    #[test]
    fn next_deadline_is_the_earliest_change(s in scenario(), fraction in 0.0f64..1.0) {
        run(&s, |w, now, _| {
            let d = w.last();
            let outcome = |d: &crate::core::lifecycle::Decision| (d.phase, d.reason, d.grants_access_at(now));
            match d.next_deadline {
                Some(deadline) => {
                    prop_assert!(deadline > now, "deadline {deadline} not after {now}");
                    let span = deadline.duration_since(now).as_secs_f64();
                    let probe = now + jiff::SignedDuration::from_secs_f64(span * fraction);
                    let probe = probe.min(deadline - jiff::SignedDuration::from_secs(1)).max(now);
                    let before = w.decide_at(probe);
                    prop_assert_eq!((before.phase, before.reason), (d.phase, d.reason), "changed at {} before the deadline {}", probe, deadline);
                    // At the deadline the outcome changes, or (an eligibility handing over to
                    // another, say) the next deadline moves strictly later: never a busy loop.
                    let at_deadline = w.decide_at(deadline);
                    let changed = (at_deadline.phase, at_deadline.reason) != (d.phase, d.reason);
                    let moved_on = at_deadline.next_deadline.is_none_or(|next| next > deadline);
                    prop_assert!(changed || moved_on, "stuck at the deadline {}", deadline);
                }
                None => {
                    let later = w.decide_at(now + mins(10 * 24 * 60));
                    prop_assert_eq!(outcome(&later).0, outcome(d).0, "phase changed later without a deadline");
                }
            }
            Ok(())
        })?;
    }

    /// A principal is in the desired set exactly when some grant covers it now, and the next
    /// change is the earliest future boundary of any grant.
    #[test]
    fn desired_set_is_exactly_the_covered_principals(
        grants in prop::collection::vec((0usize..4, -500i64..500, prop::option::of(1i64..500), any::<bool>()), 0..12),
        now in -600i64..600,
    ) {
        let grants: Vec<Grant> = grants
            .into_iter()
            .enumerate()
            .map(|(i, (who, start, len, by_request))| Grant {
                member: Member::User(format!("u{who}")),
                start: at(start),
                end: len.map(|l| at(start + l)),
                source: if by_request { GrantSource::Request(format!("r{i}")) } else { GrantSource::Assignment(format!("a{i}")) },
            })
            .collect();
        let desired = desired_membership(&grants, at(now));
        for who in 0..4 {
            let member = Member::User(format!("u{who}"));
            let covered = grants.iter().any(|g| g.member == member && g.start <= at(now) && g.end.is_none_or(|e| at(now) < e));
            prop_assert_eq!(desired.contains(&member), covered, "{}", member);
        }
        let boundaries = grants.iter().flat_map(|g| [Some(g.start), g.end]).flatten().filter(|t| *t > at(now)).min();
        prop_assert_eq!(desired.next_change, boundaries);
    }
}
