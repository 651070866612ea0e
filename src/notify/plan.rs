//! Who hears about what, and what is due now: pure functions of the objects, the policy's
//! notification matrix, what was already sent, and `now`.

use std::collections::BTreeSet;

use jiff::{SignedDuration, Timestamp};

use super::event::Event;
use crate::api::access_policy::{NotificationRule, NotificationSettings};
use crate::api::access_review::{AccessReviewStatus, InstancePhase};
use crate::api::activation_request::{ActivationRequestStatus, Phase};
use crate::api::common::{Principal, PrincipalRef};
use crate::api::eligible_assignment::{AssignmentPhase, AssignmentType, EligibleAssignment};
use crate::core::eligibility::AssignmentWindow;
use crate::core::time::add;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// The recipient of a chat or webhook channel: its whole audience.
pub const AUDIENCE: &str = "*";

/// An event that happened to an object, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Occurrence {
    pub event: Event,
    pub at: Timestamp,
    /// It needs someone to act (a request to approve, a failure), so `criticalOnly` rules
    /// still send it.
    pub critical: bool,
    /// For a reminder about an assignment's end: that end. It is part of the notification's
    /// key, so an end that moves is reminded of again, and it keeps the reminder worth sending
    /// until then, however late it is first seen. For an alert: when it was raised, so each
    /// raise is told once.
    pub ends: Option<Timestamp>,
}

/// What a request's status says has happened, and when to look again for the reminder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestEvents {
    pub occurrences: Vec<Occurrence>,
    /// When the "expiring soon" reminder falls due, while it is still ahead.
    pub next: Option<Timestamp>,
}

fn entered(status: &ActivationRequestStatus, phase: Phase) -> Option<Timestamp> {
    status
        .history
        .iter()
        .find(|t| t.phase == phase)
        .map(|t| t.time.0)
}

/// The events a request has gone through, read from its status. `lead` is how long before the
/// end the reminder goes out; a window no longer than the lead gets no reminder.
pub fn request_events(
    status: &ActivationRequestStatus,
    lead: SignedDuration,
    now: Timestamp,
) -> RequestEvents {
    let mut out = RequestEvents::default();
    let mut push = |event, at, critical| {
        out.occurrences.push(Occurrence {
            event,
            at,
            critical,
            ends: None,
        })
    };
    let phase = status.phase.unwrap_or_default();
    let last_time = status.history.last().map(|t| t.time.0);
    let asked = entered(status, Phase::PendingApproval);
    if let Some(at) = asked {
        push(Event::ActivationRequested, at, true);
        if let Some(approved) = &status.approved_at {
            push(Event::Approved, approved.0, false);
        }
    }
    if phase == Phase::Denied
        && let Some(at) = status.ended_at.as_ref().map(|t| t.0).or(last_time)
    {
        push(Event::Denied, at, false);
    }
    let activated = status
        .activated_at
        .as_ref()
        .map(|t| t.0)
        .or_else(|| entered(status, Phase::Active));
    if let Some(at) = activated {
        push(Event::Activated, at, false);
    }
    if phase == Phase::Active
        && let (Some(start), Some(end)) = (activated, status.expires_at.as_ref().map(|t| t.0))
    {
        let remind = add(end, -lead);
        if remind > start {
            if now >= remind && now < end {
                push(Event::ExpiringSoon, remind, false);
            } else if now < remind {
                out.next = Some(remind);
            }
        }
    }
    if phase.is_terminal()
        && phase != Phase::Denied
        && let Some(at) = status.ended_at.as_ref().map(|t| t.0).or(last_time)
    {
        push(Event::Ended, at, phase == Phase::Failed);
    }
    // Told once per raise: a second alert raised later on the same request has a time of its
    // own, part of the key as an end is for a reminder. A revocation overdue is one too.
    let overdue = status
        .conditions
        .iter()
        .filter(|c| is_overdue(c))
        .map(|c| c.last_transition_time.0);
    if let Some(at) = raised_at(&status.conditions, REQUEST_ALERTS)
        .into_iter()
        .chain(overdue)
        .max()
    {
        out.occurrences.push(Occurrence {
            event: Event::Alert,
            at,
            critical: true,
            ends: Some(at),
        });
    }
    out
}

const REQUEST_ALERTS: &[&str] = &[
    crate::api::conditions::types::ACTIVATED_TOO_OFTEN,
    crate::api::conditions::types::ACTIVATED_WITHOUT_APPROVAL,
];

/// `Active=False` with reason `RevocationOverdue`: the access ended and the directory still
/// holds it.
pub fn is_overdue(condition: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition) -> bool {
    condition.type_ == crate::api::conditions::types::ACTIVE
        && condition.reason == crate::api::conditions::reasons::REVOCATION_OVERDUE
}

/// When the latest of the alert conditions `types` that are True turned True.
fn raised_at(
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    types: &[&str],
) -> Option<Timestamp> {
    conditions
        .iter()
        .filter(|c| types.contains(&c.type_.as_str()) && c.status == "True")
        .map(|c| c.last_transition_time.0)
        .max()
}

/// The assignment event, once the assignment is in effect: eligible or active assigned.
pub fn assignment_event(assignment: &EligibleAssignment) -> Option<Occurrence> {
    let status = assignment.status.as_ref()?;
    if status.phase != Some(AssignmentPhase::Effective) {
        return None;
    }
    let at = status
        .effective_start
        .as_ref()
        .or(assignment.metadata.creation_timestamp.as_ref())?
        .0;
    let event = match assignment.spec.assignment_type {
        AssignmentType::Eligible => Event::EligibleAssigned,
        AssignmentType::Active => Event::ActiveAssigned,
    };
    Some(Occurrence {
        event,
        at,
        critical: false,
        ends: None,
    })
}

/// What an assignment's status says is due, and when to look again for its reminder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AssignmentEvents {
    pub occurrences: Vec<Occurrence>,
    /// When the "eligibility ending" reminder falls due, while it is still ahead.
    pub next: Option<Timestamp>,
}

/// The events of an assignment at `now`: "eligible/active assigned" once it is in effect, and
/// the reminder `lead` before its effective end (`status.effectiveEnd`, after policy caps),
/// from then until the end. The reminder carries the end it is about, so each end is reminded
/// of once. A permanent assignment, or one no longer than the lead, gets no reminder.
pub fn assignment_events(
    assignment: &EligibleAssignment,
    lead: SignedDuration,
    now: Timestamp,
) -> AssignmentEvents {
    let mut out = AssignmentEvents::default();
    let Some(assigned) = assignment_event(assignment) else {
        return out;
    };
    out.occurrences.push(assigned);
    // Each time it turns stale is told once: the time it did is part of the key, as an end is
    // for the reminder.
    let stale = assignment
        .status
        .as_ref()
        .and_then(|s| raised_at(&s.conditions, &[crate::api::conditions::types::STALE]));
    if let Some(at) = stale {
        out.occurrences.push(Occurrence {
            event: Event::Alert,
            at,
            critical: true,
            ends: Some(at),
        });
    }
    let end = assignment
        .status
        .as_ref()
        .and_then(|s| s.effective_end.as_ref())
        .map(|t| t.0);
    let window = AssignmentWindow {
        start: assigned.at,
        end,
        clipped: None,
        denied: None,
    };
    if let (Some(remind), Some(end)) = (window.ending_reminder(lead), end) {
        if window.ends_within(lead, now) {
            out.occurrences.push(Occurrence {
                event: Event::EligibilityEnding,
                at: remind,
                critical: false,
                ends: Some(end),
            });
        } else if now < remind {
            out.next = Some(remind);
        }
    }
    out
}

/// The matrix's row for `event` (approved and denied share `decided`).
fn rule(settings: &NotificationSettings, event: Event) -> Option<&NotificationRule> {
    match event {
        Event::EligibleAssigned => settings.eligible_assigned.as_ref(),
        Event::ActiveAssigned => settings.active_assigned.as_ref(),
        Event::ActivationRequested => settings.activation_requested.as_ref(),
        Event::Approved | Event::Denied => settings.decided.as_ref(),
        Event::Activated => settings.activated.as_ref(),
        Event::ExpiringSoon => settings.expiring_soon.as_ref(),
        Event::Ended => settings.ended.as_ref(),
        Event::EligibilityEnding => settings.eligibility_ending.as_ref(),
        Event::Alert => settings.alert.as_ref(),
        // Reviews tell their reviewers, whatever a policy's matrix says.
        Event::ReviewStarted | Event::ReviewReminder | Event::ReviewCompleted => None,
    }
}

/// What an access review's status says has happened to its latest instance, and when to look
/// again for the reminder. Each occurrence carries the instance's end as `ends`, so every
/// instance is told once.
pub fn review_events(
    status: &AccessReviewStatus,
    remind_before: SignedDuration,
    now: Timestamp,
) -> RequestEvents {
    let mut out = RequestEvents::default();
    let Some(current) = &status.current else {
        return out;
    };
    let (start, end) = (current.start.0, current.end.0);
    let occurrence = |event, at| Occurrence {
        event,
        at,
        critical: true,
        ends: Some(end),
    };
    match current.phase {
        Some(InstancePhase::InProgress) => {
            out.occurrences
                .push(occurrence(Event::ReviewStarted, start));
            let remind_at = add(end, -remind_before).max(start);
            let undecided = current.items.iter().any(|i| i.decision.is_none());
            if remind_at > start && undecided {
                if remind_at <= now {
                    out.occurrences
                        .push(occurrence(Event::ReviewReminder, remind_at));
                } else {
                    out.next = Some(remind_at);
                }
            }
        }
        Some(InstancePhase::Completed) => {
            out.occurrences
                .push(occurrence(Event::ReviewCompleted, end));
        }
        None => {}
    }
    out
}

/// Who gets an event when the policy does not say: (admins, subject, approvers).
pub fn default_audience(event: Event) -> (bool, bool, bool) {
    match event {
        Event::EligibleAssigned
        | Event::ActiveAssigned
        | Event::Activated
        | Event::EligibilityEnding => (true, true, false),
        Event::ActivationRequested => (false, false, true),
        Event::Alert => (true, false, false),
        Event::Approved | Event::Denied | Event::ExpiringSoon | Event::Ended => {
            (false, true, false)
        }
        Event::ReviewStarted | Event::ReviewReminder | Event::ReviewCompleted => {
            (false, false, false)
        }
    }
}

/// The people to tell about `occurrence`, by the policy's matrix: the admins list, the
/// requester or assignee (`subject`), the approvers (users, and groups by name), and the
/// rule's additional recipients. A `criticalOnly` rule keeps only critical occurrences.
pub fn recipients(
    occurrence: &Occurrence,
    settings: Option<&NotificationSettings>,
    subject: Option<&str>,
    approvers: &[PrincipalRef],
) -> BTreeSet<String> {
    let empty = NotificationSettings::default();
    let settings = settings.unwrap_or(&empty);
    let rule = rule(settings, occurrence.event);
    if rule.and_then(|r| r.critical_only).unwrap_or(false) && !occurrence.critical {
        return BTreeSet::new();
    }
    let (admins, to_subject, to_approvers) = default_audience(occurrence.event);
    let mut out = BTreeSet::new();
    if rule.and_then(|r| r.admins).unwrap_or(admins) {
        out.extend(settings.admins.iter().cloned());
    }
    if rule.and_then(|r| r.subject).unwrap_or(to_subject)
        && let Some(subject) = subject
    {
        out.insert(subject.to_owned());
    }
    if rule.and_then(|r| r.approvers).unwrap_or(to_approvers) {
        out.extend(approvers.iter().filter_map(|a| match a.resolve()? {
            Principal::User(name) | Principal::Group(name) => Some(name.to_owned()),
        }));
    }
    if let Some(rule) = rule {
        out.extend(rule.additional_recipients.iter().cloned());
    }
    out.retain(|r| !r.trim().is_empty());
    out
}

/// An e-mail address for a recipient: itself when it has an `@`, else with the configured
/// domain appended, else none.
pub fn address(recipient: &str, domain: Option<&str>) -> Option<String> {
    let recipient = recipient.trim();
    if recipient.contains('@') {
        return Some(recipient.to_owned());
    }
    let domain = domain?;
    let valid = !recipient.is_empty()
        && recipient
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-+".contains(c));
    valid.then(|| format!("{recipient}@{domain}"))
}

/// How a channel addresses people.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// One message per recipient address (e-mail).
    PerRecipient,
    /// One message per event to the channel's audience (chat, webhooks).
    Broadcast,
}

/// What the planner needs to know of a channel.
#[derive(Debug, Clone)]
pub struct ChannelView {
    pub name: String,
    pub audience: Audience,
    /// Events the channel takes; empty means all.
    pub events: Vec<Event>,
}

impl ChannelView {
    fn takes(&self, event: Event) -> bool {
        self.events.is_empty() || self.events.contains(&event)
    }
}

/// One notification to send: the key that makes it unique on its object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Due {
    pub event: Event,
    pub channel: String,
    pub recipient: String,
    /// The end a reminder is about ([`Occurrence::ends`]).
    pub ends: Option<Timestamp>,
}

impl Due {
    /// Whether `delivery` records this notification (for a reminder, about the same end).
    pub fn recorded_in(&self, delivery: &crate::api::delivery::Delivery) -> bool {
        delivery.has(
            self.event.as_str(),
            &self.channel,
            &self.recipient,
            self.ends.map(Time).as_ref(),
        )
    }
}

/// The rules that do not depend on the object.
#[derive(Debug, Clone, Copy)]
pub struct Limits<'a> {
    pub recipient_domain: Option<&'a str>,
    /// Occurrences older than this are not announced any more.
    pub stale_after: SignedDuration,
}

/// The notifications due at `now` for one occurrence, minus those `done` (sent, given up, or
/// on their way). `recipients` is the occurrence's audience from [`recipients`].
pub fn due(
    occurrence: &Occurrence,
    recipients: &BTreeSet<String>,
    channels: &[ChannelView],
    done: &dyn Fn(&Due) -> bool,
    limits: Limits<'_>,
    now: Timestamp,
) -> Vec<Due> {
    // A reminder is worth sending until the end it is about; anything else only while fresh.
    let fresh = occurrence.at <= now
        && match occurrence.ends {
            Some(end)
                if matches!(
                    occurrence.event,
                    Event::EligibilityEnding | Event::ReviewStarted | Event::ReviewReminder
                ) =>
            {
                now < end
            }
            _ => add(occurrence.at, limits.stale_after) >= now,
        };
    if !fresh || recipients.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for channel in channels.iter().filter(|c| c.takes(occurrence.event)) {
        let targets: BTreeSet<String> = match channel.audience {
            Audience::PerRecipient => recipients
                .iter()
                .filter_map(|r| address(r, limits.recipient_domain))
                .map(|a| a.to_lowercase())
                .collect(),
            Audience::Broadcast => [AUDIENCE.to_owned()].into(),
        };
        for recipient in targets {
            let item = Due {
                event: occurrence.event,
                channel: channel.name.clone(),
                recipient,
                ends: occurrence.ends,
            };
            if !done(&item) {
                out.push(item);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::activation_request::Transition;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn at(minutes: i64) -> Timestamp {
        add(
            ts("2026-03-02T09:00:00Z"),
            SignedDuration::from_mins(minutes),
        )
    }

    fn step(minutes: i64, phase: Phase) -> Transition {
        Transition {
            time: Time(at(minutes)),
            phase,
            reason: phase.to_string(),
            message: None,
        }
    }

    /// Requested at 0, approved at 10, active 10..40, expired at 40.
    fn approved_then_expired() -> ActivationRequestStatus {
        ActivationRequestStatus {
            phase: Some(Phase::Expired),
            approved_at: Some(Time(at(10))),
            starts_at: Some(Time(at(10))),
            expires_at: Some(Time(at(40))),
            activated_at: Some(Time(at(10))),
            ended_at: Some(Time(at(40))),
            history: vec![
                step(0, Phase::Pending),
                step(0, Phase::PendingApproval),
                step(10, Phase::Scheduled),
                step(10, Phase::Active),
                step(40, Phase::Expired),
            ],
            ..Default::default()
        }
    }

    fn events_of(r: &RequestEvents) -> Vec<(Event, Timestamp)> {
        r.occurrences.iter().map(|o| (o.event, o.at)).collect()
    }

    #[test]
    fn a_full_approval_lifecycle_yields_each_event_once() {
        let got = request_events(
            &approved_then_expired(),
            SignedDuration::from_mins(15),
            at(50),
        );
        assert_eq!(
            events_of(&got),
            [
                (Event::ActivationRequested, at(0)),
                (Event::Approved, at(10)),
                (Event::Activated, at(10)),
                (Event::Ended, at(40)),
            ]
        );
        assert!(got.occurrences[0].critical);
        assert_eq!(got.next, None);
    }

    #[test]
    fn the_reminder_is_due_inside_the_lead_time_only() {
        let mut status = approved_then_expired();
        status.phase = Some(Phase::Active);
        status.ended_at = None;
        status.history.pop();
        let lead = SignedDuration::from_mins(15);
        let before = request_events(&status, lead, at(20));
        assert_eq!(before.next, Some(at(25)));
        assert!(
            !events_of(&before)
                .iter()
                .any(|(e, _)| *e == Event::ExpiringSoon)
        );
        let inside = request_events(&status, lead, at(25));
        assert!(events_of(&inside).contains(&(Event::ExpiringSoon, at(25))));
        assert_eq!(inside.next, None);
        // Past the end (a clock that jumped): no reminder for something already over.
        let after = request_events(&status, lead, at(41));
        assert!(
            !events_of(&after)
                .iter()
                .any(|(e, _)| *e == Event::ExpiringSoon)
        );
        // A window shorter than the lead gets no reminder at all.
        let short = request_events(&status, SignedDuration::from_mins(45), at(11));
        assert!(
            !events_of(&short)
                .iter()
                .any(|(e, _)| *e == Event::ExpiringSoon)
        );
        assert_eq!(short.next, None);
    }

    #[test]
    fn each_alert_raised_on_a_request_is_told_once_at_its_own_time() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
        let alert = |type_: &str, minutes: i64| Condition {
            type_: type_.into(),
            status: "True".into(),
            reason: type_.into(),
            message: String::new(),
            observed_generation: None,
            last_transition_time: Time(at(minutes)),
        };
        let mut status = approved_then_expired();
        let alerts = |status: &ActivationRequestStatus| -> Vec<(Timestamp, Option<Timestamp>)> {
            request_events(status, SignedDuration::from_mins(5), at(50))
                .occurrences
                .iter()
                .filter(|o| o.event == Event::Alert)
                .map(|o| (o.at, o.ends))
                .collect()
        };
        assert!(alerts(&status).is_empty());
        status.conditions = vec![alert("ActivatedWithoutApproval", 10)];
        assert_eq!(alerts(&status), [(at(10), Some(at(10)))]);
        // A second alert raised later is another notification (its key has its own time).
        status.conditions.push(alert("ActivatedTooOften", 12));
        assert_eq!(alerts(&status), [(at(12), Some(at(12)))]);
        // A False one is no alert.
        status.conditions[1].status = "False".into();
        assert_eq!(alerts(&status), [(at(10), Some(at(10)))]);
        // A revocation overdue is one, for the admins.
        status.conditions.push(Condition {
            status: "False".into(),
            reason: "RevocationOverdue".into(),
            ..alert("Active", 40)
        });
        assert_eq!(alerts(&status), [(at(40), Some(at(40)))]);
        let (admins, subject, approvers) = default_audience(Event::Alert);
        assert!(admins && !subject && !approvers);
        let occurrence = Occurrence {
            event: Event::Alert,
            at: at(10),
            critical: true,
            ends: Some(at(10)),
        };
        // Fresh for staleAfter after it was raised, though its key holds a time in the past.
        let channel = ChannelView {
            name: "hook".into(),
            audience: Audience::Broadcast,
            events: vec![],
        };
        let limits = Limits {
            recipient_domain: None,
            stale_after: SignedDuration::from_hours(24),
        };
        let people = BTreeSet::from(["secops@contoso.com".to_owned()]);
        let due_at = |minutes| {
            due(
                &occurrence,
                &people,
                std::slice::from_ref(&channel),
                &|_| false,
                limits,
                at(minutes),
            )
        };
        assert_eq!(due_at(50).len(), 1);
        assert!(due_at(10 + 25 * 60).is_empty());
    }

    #[test]
    fn denial_and_failures() {
        let denied = ActivationRequestStatus {
            phase: Some(Phase::Denied),
            ended_at: Some(Time(at(5))),
            history: vec![
                step(0, Phase::Pending),
                step(0, Phase::PendingApproval),
                step(5, Phase::Denied),
            ],
            ..Default::default()
        };
        let got = request_events(&denied, SignedDuration::from_mins(15), at(6));
        assert_eq!(
            events_of(&got),
            [(Event::ActivationRequested, at(0)), (Event::Denied, at(5))]
        );
        let failed = ActivationRequestStatus {
            phase: Some(Phase::Failed),
            ended_at: Some(Time(at(3))),
            history: vec![step(0, Phase::Pending), step(3, Phase::Failed)],
            ..Default::default()
        };
        let got = request_events(&failed, SignedDuration::from_mins(15), at(6));
        assert_eq!(events_of(&got), [(Event::Ended, at(3))]);
        assert!(got.occurrences[0].critical, "a failure needs attention");
        // No approval needed: approvedAt is the creation time, and nobody is told "approved".
        let direct = ActivationRequestStatus {
            phase: Some(Phase::Active),
            approved_at: Some(Time(at(0))),
            activated_at: Some(Time(at(0))),
            expires_at: Some(Time(at(60))),
            history: vec![step(0, Phase::Pending), step(0, Phase::Active)],
            ..Default::default()
        };
        let got = request_events(&direct, SignedDuration::from_mins(15), at(1));
        assert_eq!(events_of(&got), [(Event::Activated, at(0))]);
    }

    fn occurrence(event: Event, critical: bool) -> Occurrence {
        Occurrence {
            event,
            at: at(0),
            critical,
            ends: None,
        }
    }

    fn names(set: BTreeSet<String>) -> Vec<String> {
        set.into_iter().collect()
    }

    #[test]
    fn the_matrix_defaults_follow_entra() {
        let settings = NotificationSettings {
            admins: vec!["secops@contoso.com".into()],
            ..Default::default()
        };
        let approvers = [
            PrincipalRef::user("bob"),
            PrincipalRef::group("finance-leads"),
        ];
        let who = |event| {
            names(recipients(
                &occurrence(event, event == Event::ActivationRequested),
                Some(&settings),
                Some("alice@contoso.com"),
                &approvers,
            ))
        };
        assert_eq!(who(Event::ActivationRequested), ["bob", "finance-leads"]);
        assert_eq!(who(Event::Approved), ["alice@contoso.com"]);
        assert_eq!(who(Event::Denied), ["alice@contoso.com"]);
        assert_eq!(
            who(Event::Activated),
            ["alice@contoso.com", "secops@contoso.com"]
        );
        assert_eq!(
            who(Event::EligibleAssigned),
            ["alice@contoso.com", "secops@contoso.com"]
        );
        assert_eq!(who(Event::ExpiringSoon), ["alice@contoso.com"]);
        assert_eq!(
            who(Event::EligibilityEnding),
            ["alice@contoso.com", "secops@contoso.com"]
        );
        assert_eq!(who(Event::Ended), ["alice@contoso.com"]);
        // No notification settings at all: the same defaults, without admins.
        assert_eq!(
            names(recipients(
                &occurrence(Event::Activated, false),
                None,
                Some("alice@contoso.com"),
                &approvers
            )),
            ["alice@contoso.com"]
        );
    }

    #[test]
    fn rules_switch_recipients_and_critical_only_keeps_what_needs_action() {
        let settings = NotificationSettings {
            admins: vec!["secops@contoso.com".into()],
            activated: Some(NotificationRule {
                subject: Some(false),
                additional_recipients: vec!["audit@contoso.com".into()],
                ..Default::default()
            }),
            activation_requested: Some(NotificationRule {
                admins: Some(true),
                critical_only: Some(true),
                ..Default::default()
            }),
            ended: Some(NotificationRule {
                critical_only: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        };
        let approvers = [PrincipalRef::user("bob@contoso.com")];
        let who = |o: Occurrence| names(recipients(&o, Some(&settings), Some("alice"), &approvers));
        assert_eq!(
            who(occurrence(Event::Activated, false)),
            ["audit@contoso.com", "secops@contoso.com"]
        );
        assert_eq!(
            who(occurrence(Event::ActivationRequested, true)),
            ["bob@contoso.com", "secops@contoso.com"]
        );
        assert!(who(occurrence(Event::Ended, false)).is_empty());
        assert_eq!(who(occurrence(Event::Ended, true)), ["alice"]);
    }

    #[test]
    fn addresses() {
        assert_eq!(
            address("alice@contoso.com", None).as_deref(),
            Some("alice@contoso.com")
        );
        assert_eq!(
            address("alice", Some("contoso.com")).as_deref(),
            Some("alice@contoso.com")
        );
        assert_eq!(address("alice", None), None);
        assert_eq!(address("cn=alice,dc=x", Some("contoso.com")), None);
    }

    fn channels() -> Vec<ChannelView> {
        vec![
            ChannelView {
                name: "mail".into(),
                audience: Audience::PerRecipient,
                events: vec![],
            },
            ChannelView {
                name: "chat".into(),
                audience: Audience::Broadcast,
                events: vec![Event::ActivationRequested],
            },
        ]
    }

    fn limits() -> Limits<'static> {
        Limits {
            recipient_domain: Some("contoso.com"),
            stale_after: SignedDuration::from_hours(24),
        }
    }

    #[test]
    fn due_is_per_recipient_for_mail_and_per_event_for_chat_minus_what_is_done() {
        let people: BTreeSet<String> = ["bob".into(), "Carol@Contoso.com".into()].into();
        let requested = occurrence(Event::ActivationRequested, true);
        let all = due(
            &requested,
            &people,
            &channels(),
            &|_| false,
            limits(),
            at(1),
        );
        let keys: Vec<(&str, &str)> = all
            .iter()
            .map(|d| (d.channel.as_str(), d.recipient.as_str()))
            .collect();
        assert_eq!(
            keys,
            [
                ("mail", "bob@contoso.com"),
                ("mail", "carol@contoso.com"),
                ("chat", "*")
            ]
        );
        let sent = |d: &Due| d.recipient == "bob@contoso.com";
        assert_eq!(
            due(&requested, &people, &channels(), &sent, limits(), at(1)).len(),
            2
        );
        // The chat channel only takes the requests to approve.
        let activated = occurrence(Event::Activated, false);
        assert_eq!(
            due(
                &activated,
                &people,
                &channels(),
                &|_| false,
                limits(),
                at(1)
            )
            .len(),
            2
        );
        // Nobody to tell: nothing, not even on chat.
        assert!(
            due(
                &requested,
                &BTreeSet::new(),
                &channels(),
                &|_| false,
                limits(),
                at(1)
            )
            .is_empty()
        );
    }

    #[test]
    fn stale_and_future_occurrences_are_not_due() {
        let people: BTreeSet<String> = ["bob@contoso.com".into()].into();
        let o = occurrence(Event::Activated, false);
        let day = 24 * 60;
        assert_eq!(
            due(&o, &people, &channels(), &|_| false, limits(), at(day)).len(),
            1
        );
        assert!(due(&o, &people, &channels(), &|_| false, limits(), at(day + 1)).is_empty());
        assert!(due(&o, &people, &channels(), &|_| false, limits(), at(-1)).is_empty());
    }

    fn days(n: i64) -> SignedDuration {
        SignedDuration::from_hours(n * 24)
    }

    /// In effect from at(0) for 90 days (`end`), or for good without one.
    fn effective_assignment(kind: AssignmentType, end: Option<Timestamp>) -> EligibleAssignment {
        use crate::api::eligible_assignment::{EligibleAssignmentSpec, EligibleAssignmentStatus};
        let mut assignment = EligibleAssignment::new(
            "alice-fin",
            EligibleAssignmentSpec {
                group: "finreport".into(),
                principal: PrincipalRef::user("alice@contoso.com"),
                assignment_type: kind,
                ..Default::default()
            },
        );
        assignment.status = Some(EligibleAssignmentStatus {
            phase: Some(AssignmentPhase::Effective),
            effective_start: Some(Time(at(0))),
            effective_end: end.map(Time),
            ..Default::default()
        });
        assignment
    }

    fn events_at(events: &AssignmentEvents) -> Vec<(Event, Timestamp, Option<Timestamp>)> {
        events
            .occurrences
            .iter()
            .map(|o| (o.event, o.at, o.ends))
            .collect()
    }

    #[test]
    fn the_eligibility_reminder_is_due_lead_before_the_effective_end_and_woken_for_until_then() {
        let end = add(at(0), days(90));
        let remind = add(end, -days(14));
        let assignment = effective_assignment(AssignmentType::Eligible, Some(end));
        let early = assignment_events(&assignment, days(14), add(at(0), days(1)));
        assert_eq!(events_at(&early), [(Event::EligibleAssigned, at(0), None)]);
        assert_eq!(early.next, Some(remind), "woken at end - lead");
        for now in [remind, add(end, -SignedDuration::from_secs(1))] {
            let inside = assignment_events(&assignment, days(14), now);
            assert_eq!(
                events_at(&inside),
                [
                    (Event::EligibleAssigned, at(0), None),
                    (Event::EligibilityEnding, remind, Some(end)),
                ]
            );
            assert_eq!(inside.next, None);
        }
        let over = assignment_events(&assignment, days(14), end);
        assert_eq!(events_at(&over), [(Event::EligibleAssigned, at(0), None)]);
        assert_eq!(over.next, None);
        // The policy's lead decides.
        let month = assignment_events(&assignment, days(30), add(end, -days(20)));
        assert!(events_at(&month).contains(&(
            Event::EligibilityEnding,
            add(end, -days(30)),
            Some(end)
        )));
        // Active-type time-bound assignments get the same reminder.
        let active = effective_assignment(AssignmentType::Active, Some(end));
        assert!(
            assignment_events(&active, days(14), remind)
                .occurrences
                .iter()
                .any(|o| o.event == Event::EligibilityEnding)
        );
        // No end, or no longer than the lead: no reminder, nothing to wake for.
        for short in [None, Some(add(at(0), days(7)))] {
            let got = assignment_events(
                &effective_assignment(AssignmentType::Eligible, short),
                days(14),
                add(at(0), days(3)),
            );
            assert_eq!(events_at(&got), [(Event::EligibleAssigned, at(0), None)]);
            assert_eq!(got.next, None);
        }
        // Not in effect: nothing at all.
        let mut pending = assignment.clone();
        if let Some(status) = pending.status.as_mut() {
            status.phase = Some(AssignmentPhase::Pending);
        }
        assert_eq!(
            assignment_events(&pending, days(14), remind),
            AssignmentEvents::default()
        );
    }

    #[test]
    fn each_end_is_reminded_of_once_and_a_moved_end_again() {
        use crate::api::delivery::{Delivery, DeliveryOutcome, NotificationRecord};
        let end = add(at(0), days(90));
        let remind = add(end, -days(14));
        let people: BTreeSet<String> =
            ["alice@contoso.com".into(), "secops@contoso.com".into()].into();
        let mail = [ChannelView {
            name: "mail".into(),
            audience: Audience::PerRecipient,
            events: vec![],
        }];
        let reminder_of = |end: Timestamp, now: Timestamp| {
            let events = assignment_events(
                &effective_assignment(AssignmentType::Eligible, Some(end)),
                days(14),
                now,
            );
            events
                .occurrences
                .into_iter()
                .find(|o| o.event == Event::EligibilityEnding)
                .unwrap()
        };
        let sent_about = |end: Timestamp| Delivery {
            notifications: ["alice@contoso.com", "secops@contoso.com"]
                .map(|to| NotificationRecord {
                    event: "eligibilityEnding".into(),
                    channel: "mail".into(),
                    recipient: to.into(),
                    outcome: DeliveryOutcome::Sent,
                    time: Time(remind),
                    attempts: 1,
                    error: None,
                    ends: Some(Time(end)),
                })
                .into(),
            ..Default::default()
        };
        let due_with = |occurrence: &Occurrence, recorded: &Delivery, now: Timestamp| {
            due(
                occurrence,
                &people,
                &mail,
                &|d: &Due| d.recorded_in(recorded),
                limits(),
                now,
            )
        };
        let first = reminder_of(end, remind);
        let fresh = due_with(&first, &Delivery::default(), remind);
        assert_eq!(fresh.len(), 2);
        assert!(fresh.iter().all(|d| d.ends == Some(end)));
        // Recorded for this end: not again, at any later time before the end.
        let recorded = sent_about(end);
        assert!(due_with(&first, &recorded, remind).is_empty());
        assert!(due_with(&first, &recorded, add(end, -days(1))).is_empty());
        // Renewed: the new end gets its own reminder when its time comes, not before.
        let renewed = add(end, days(180));
        let later = assignment_events(
            &effective_assignment(AssignmentType::Eligible, Some(renewed)),
            days(14),
            add(remind, days(1)),
        );
        assert!(
            later
                .occurrences
                .iter()
                .all(|o| o.event != Event::EligibilityEnding)
        );
        assert_eq!(later.next, Some(add(renewed, -days(14))));
        let second = reminder_of(renewed, add(renewed, -days(14)));
        assert_eq!(
            due_with(&second, &recorded, add(renewed, -days(14))).len(),
            2,
            "a reminder about an earlier end does not count for the new one"
        );
        // First seen long after it fell due (staleAfter is 24h here), it still goes out while
        // the end is ahead: the end is what it is about.
        assert_eq!(
            due_with(&first, &Delivery::default(), add(remind, days(10))).len(),
            2
        );
        assert!(due_with(&first, &Delivery::default(), end).is_empty());
    }
}
