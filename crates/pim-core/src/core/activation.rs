//! Checking an ActivationRequest against its policy, and working out its window.

use jiff::{SignedDuration, Timestamp};

use super::violation::Violation;
use super::{duration, policy::Policy, time::add};
use crate::api::activation_request::{ActivationRequestSpec, EndClippedBy};
use crate::api::conditions::reasons;

/// Checks what the request itself says against the policy: principal, justification, ticket,
/// MFA evidence, duration, and how far ahead its `startTime` lies. Returns what it asks for
/// (the duration is the policy maximum by default).
///
/// The start is measured from `spec.requester.stampedAt`, the request's creation as far as the
/// spec tells: the admission webhook stamps it when it admits the request and signs it, and the
/// controller acts only on requests whose stamp it verified to lie within a few minutes of
/// `creationTimestamp` (`engine::attestation::MAX_STAMP_SKEW`). Without a stamp the start is
/// not checked here; see [`validate_request_created`].
pub fn validate_request(
    spec: &ActivationRequestSpec,
    policy: &Policy,
    mfa_verified: bool,
) -> Result<Requested, Vec<Violation>> {
    let stamped = spec
        .requester
        .as_ref()
        .and_then(|r| r.stamped_at.as_ref())
        .map(|t| t.0);
    validate_request_created(spec, policy, mfa_verified, stamped)
}

/// As [`validate_request`], with `startTime` checked against `created`, when known: it may lie
/// at most the policy's `maxStartDelay` after it.
pub fn validate_request_created(
    spec: &ActivationRequestSpec,
    policy: &Policy,
    mfa_verified: bool,
    created: Option<Timestamp>,
) -> Result<Requested, Vec<Violation>> {
    let mut violations = Vec::new();
    if spec
        .principal
        .as_deref()
        .is_none_or(|p| p.trim().is_empty())
    {
        violations.push(Violation::new(
            "spec.principal",
            reasons::PRINCIPAL_MISSING,
            "no principal was stamped by the admission webhook; create the request through the API server with the webhook installed",
            "create the request again through an API server where pim-operator's admission webhook is installed (webhook.enabled); it stamps spec.principal from your credentials",
        ));
    }
    if policy.require_justification
        && spec
            .justification
            .as_deref()
            .is_none_or(|j| j.trim().is_empty())
    {
        violations.push(Violation::new(
            "spec.justification",
            reasons::JUSTIFICATION_REQUIRED,
            "the policy requires a justification",
            "add spec.justification saying why you need the access, such as `justification: incident 4711`",
        ));
    }
    if policy.require_ticket
        && spec
            .ticket
            .as_ref()
            .is_none_or(|t| t.system.trim().is_empty() || t.number.trim().is_empty())
    {
        violations.push(Violation::new(
            "spec.ticket",
            reasons::TICKET_REQUIRED,
            "the policy requires a ticket with system and number",
            "add spec.ticket with both fields, such as `ticket: {system: ServiceNow, number: CHG0031337}`",
        ));
    }
    if policy.require_mfa && !mfa_verified {
        violations.push(Violation::new(
            "spec.requester",
            reasons::MFA_REQUIRED,
            "the policy requires multi-factor authentication, and no verified MFA claim came with the request",
            "sign in again with multi-factor authentication, so that your token carries the MFA claim, and create a new request",
        ));
    }
    if !policy.authentication.is_empty() {
        let evidence = spec
            .requester
            .as_ref()
            .map(|r| r.authentication.clone())
            .unwrap_or_default();
        // Measured at the webhook's signed stamp, as the webhook measured it; without one, no
        // sign-in is recent enough.
        let stamped = spec
            .requester
            .as_ref()
            .and_then(|r| r.stamped_at.as_ref())
            .map(|t| t.0);
        let unmet = match stamped {
            Some(at) => policy.authentication.unmet(&evidence, at),
            None => vec![
                "the request carries no admission stamp to measure the sign-in against".to_owned(),
            ],
        };
        if !unmet.is_empty() {
            violations.push(Violation::new(
                "spec.requester.authentication",
                reasons::AUTHENTICATION_REQUIREMENTS_NOT_MET,
                format!(
                    "the policy asks more of the requester's sign-in: {}",
                    unmet.join("; ")
                ),
                "sign in again as the policy asks (spec.activation.requiredClaims, maxAuthenticationAge) and create a new request",
            ));
        }
    }
    let asked = match asked_duration(spec, policy) {
        Ok(d) => Some(d),
        Err(unreadable) => {
            violations.push(unreadable);
            None
        }
    };
    if let Some(d) = asked
        && d > policy.max_activation
    {
        violations.push(Violation::new(
            "spec.duration",
            reasons::DURATION_EXCEEDS_MAXIMUM,
            format!(
                "{} is longer than the policy's maximum of {}",
                duration::format(d),
                duration::format(policy.max_activation)
            ),
            format!(
                "set spec.duration to at most {}, the policy's maxDuration, or leave it out to get {}",
                duration::format(policy.max_activation),
                duration::format(policy.max_activation)
            ),
        ));
    }
    let start_time = spec.start_time.as_ref().map(|t| t.0);
    violations.extend(late_start(start_time, policy, created));
    match asked {
        Some(duration) if violations.is_empty() => Ok(Requested {
            duration,
            start_time,
        }),
        _ => Err(violations),
    }
}

/// What a request asks for: how long, and from when. [`Requested::read`] reads it, and
/// [`validate_request_created`] the same way, adding the policy's other rules; nothing else
/// parses `spec.duration` or judges `spec.startTime`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requested {
    /// `spec.duration`, or the policy's maximum when unset. May exceed the maximum: the policy
    /// caps the window (a request granted before its policy shrank is cut, not refused), and
    /// [`validate_request_created`] refuses a new request that asks for more.
    pub duration: SignedDuration,
    /// `spec.startTime`, when set.
    pub start_time: Option<Timestamp>,
}

impl Requested {
    /// Reads `spec.duration` and `spec.startTime` under `policy`. Fails with the violations of
    /// `spec.duration` (not a positive duration) and of `spec.startTime` (more than the policy's
    /// `maxStartDelay` after `created`; not checked when `created` is unknown).
    pub fn read(
        spec: &ActivationRequestSpec,
        policy: &Policy,
        created: Option<Timestamp>,
    ) -> Result<Self, Vec<Violation>> {
        let asked = asked_duration(spec, policy);
        let start_time = spec.start_time.as_ref().map(|t| t.0);
        let late = late_start(start_time, policy, created);
        match (asked, late) {
            (Ok(duration), None) => Ok(Requested {
                duration,
                start_time,
            }),
            (asked, late) => Err(asked.err().into_iter().chain(late).collect()),
        }
    }

    /// Where the window starts when it could start at `earliest` (approval, or now).
    pub fn start(&self, earliest: Timestamp) -> Timestamp {
        start_at(self.start_time, earliest)
    }
}

/// Where a request's window starts when it could start at `earliest`: then, or at
/// `spec.startTime` if that is later. Needs no policy, for eligibility looked up before the
/// policy is known; [`Requested::start`] says the same.
pub fn requested_start(spec: &ActivationRequestSpec, earliest: Timestamp) -> Timestamp {
    start_at(spec.start_time.as_ref().map(|t| t.0), earliest)
}

/// `spec.duration`, or the policy's maximum when unset.
fn asked_duration(
    spec: &ActivationRequestSpec,
    policy: &Policy,
) -> Result<SignedDuration, Violation> {
    match spec.duration.as_deref() {
        None => Ok(policy.max_activation),
        Some(text) => duration::parse_positive("spec.duration", text)
            .map_err(|e| Violation::duration(e, reasons::INVALID_DURATION)),
    }
}

/// A start more than the policy's `maxStartDelay` after `created` would bank today's approval,
/// MFA and eligibility for later (issue 14, finding 9).
fn late_start(
    start_time: Option<Timestamp>,
    policy: &Policy,
    created: Option<Timestamp>,
) -> Option<Violation> {
    let (start, created) = (start_time?, created?);
    let delay = start.duration_since(created);
    (delay > policy.max_start_delay).then(|| {
        Violation::new(
            "spec.startTime",
            reasons::INVALID_START_TIME,
            format!(
                "{start} is {} after the request was created ({created}); the policy's maxStartDelay is {}",
                duration::format(delay),
                duration::format(policy.max_start_delay)
            ),
            format!(
                "set spec.startTime to {} or earlier (at most the policy's maxStartDelay of {} after creation), or create the request closer to when the access is needed",
                add(created, policy.max_start_delay),
                duration::format(policy.max_start_delay)
            ),
        )
    })
}

fn start_at(start_time: Option<Timestamp>, earliest: Timestamp) -> Timestamp {
    start_time.map_or(earliest, |t| t.max(earliest))
}

/// The span in which a request grants access: `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: Timestamp,
    pub end: Timestamp,
    pub clipped_by: Option<EndClippedBy>,
}

impl Window {
    pub fn contains(&self, t: Timestamp) -> bool {
        self.start <= t && t < self.end
    }
}

/// The window of an approved request starting at `start`: `requested` long, but never past
/// `start + policy_max` nor past the end of the eligibility.
pub fn plan_window(
    start: Timestamp,
    requested: SignedDuration,
    policy_max: SignedDuration,
    eligibility_end: Option<Timestamp>,
) -> Window {
    let mut end = add(start, requested);
    let mut clipped_by = None;
    let policy_end = add(start, policy_max);
    if policy_end < end {
        end = policy_end;
        clipped_by = Some(EndClippedBy::Policy);
    }
    if let Some(eligibility_end) = eligibility_end
        && eligibility_end < end
    {
        end = eligibility_end.max(start);
        clipped_by = Some(EndClippedBy::Eligibility);
    }
    Window {
        start,
        end,
        clipped_by,
    }
}

/// Re-applies the current caps to a window already granted. The end can only move earlier.
pub fn shrink_window(
    window: Window,
    policy_max: SignedDuration,
    eligibility_end: Option<Timestamp>,
) -> Window {
    let capped = plan_window(
        window.start,
        window.end.duration_since(window.start),
        policy_max,
        eligibility_end,
    );
    if capped.end < window.end {
        capped
    } else {
        window
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::activation_request::{Requester, Ticket};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn request() -> ActivationRequestSpec {
        ActivationRequestSpec {
            group: "finreport".into(),
            justification: Some("month-end close".into()),
            principal: Some("alice".into()),
            ..Default::default()
        }
    }

    fn strict_policy() -> Policy {
        Policy {
            max_activation: SignedDuration::from_mins(30),
            require_ticket: true,
            require_mfa: true,
            ..Policy::default()
        }
    }

    #[test]
    fn duration_defaults_to_policy_max() {
        assert_eq!(
            validate_request(&request(), &Policy::default(), false).map(|r| r.duration),
            Ok(SignedDuration::from_hours(8))
        );
        let mut r = request();
        r.duration = Some("PT2H".into());
        assert_eq!(
            validate_request(&r, &Policy::default(), false).map(|r| r.duration),
            Ok(SignedDuration::from_hours(2))
        );
    }

    #[test]
    fn every_broken_rule_is_named() {
        let mut r = request();
        r.justification = Some(" ".into());
        r.duration = Some("1h".into());
        r.principal = None;
        let errs = validate_request(&r, &strict_policy(), false).unwrap_err();
        let got: Vec<_> = errs.iter().map(|v| (v.field.as_str(), v.reason)).collect();
        assert_eq!(
            got,
            [
                ("spec.principal", reasons::PRINCIPAL_MISSING),
                ("spec.justification", reasons::JUSTIFICATION_REQUIRED),
                ("spec.ticket", reasons::TICKET_REQUIRED),
                ("spec.requester", reasons::MFA_REQUIRED),
                ("spec.duration", reasons::DURATION_EXCEEDS_MAXIMUM),
            ]
        );
        assert_eq!(
            errs[4].message,
            "1h is longer than the policy's maximum of 30m"
        );
    }

    #[test]
    fn a_complete_request_passes_a_strict_policy() {
        let mut r = request();
        r.ticket = Some(Ticket {
            system: "ServiceNow".into(),
            number: "CHG0042".into(),
        });
        r.duration = Some("30m".into());
        assert_eq!(
            validate_request(&r, &strict_policy(), true).map(|r| r.duration),
            Ok(SignedDuration::from_mins(30))
        );
        r.duration = Some("0m".into());
        let errs = validate_request(&r, &strict_policy(), true).unwrap_err();
        assert_eq!(
            (errs[0].field.as_str(), errs[0].reason),
            ("spec.duration", reasons::INVALID_DURATION)
        );
        r.duration = Some("forever".into());
        assert_eq!(
            validate_request(&r, &strict_policy(), true).unwrap_err()[0].field,
            "spec.duration"
        );
        r.duration = None;
        r.ticket = Some(Ticket {
            system: "ServiceNow".into(),
            number: " ".into(),
        });
        assert_eq!(
            validate_request(&r, &strict_policy(), true).unwrap_err()[0].reason,
            reasons::TICKET_REQUIRED
        );
    }

    // issue 14 finding 9: a start far ahead of the request's creation would bank today's
    // approval, MFA and eligibility for later; the policy caps it (default 14 days).
    #[test]
    fn issue_14_finding_9_start_time_is_capped_after_creation() {
        let created = ts("2026-03-01T10:00:00Z");
        let mut r = request();
        r.requester = Some(Requester {
            username: "alice".into(),
            stamped_at: Some(Time(created)),
            ..Default::default()
        });
        r.start_time = Some(Time(ts("2026-03-31T10:00:00Z")));
        let errs = validate_request(&r, &Policy::default(), false).unwrap_err();
        let got: Vec<_> = errs.iter().map(|v| (v.field.as_str(), v.reason)).collect();
        assert_eq!(got, [("spec.startTime", reasons::INVALID_START_TIME)]);
        assert_eq!(
            errs[0].to_string(),
            "spec.startTime: 2026-03-31T10:00:00Z is 30d after the request was created (2026-03-01T10:00:00Z); the policy's maxStartDelay is 14d"
        );

        // Exactly at the cap, and in the past, are fine.
        r.start_time = Some(Time(ts("2026-03-15T10:00:00Z")));
        assert!(validate_request(&r, &Policy::default(), false).is_ok());
        r.start_time = Some(Time(ts("2026-02-01T10:00:00Z")));
        assert!(validate_request(&r, &Policy::default(), false).is_ok());

        // The policy decides the cap.
        let policy = Policy {
            max_start_delay: SignedDuration::from_hours(1),
            ..Policy::default()
        };
        r.start_time = Some(Time(ts("2026-03-01T11:00:01Z")));
        assert_eq!(
            validate_request(&r, &policy, false).unwrap_err()[0].field,
            "spec.startTime"
        );

        // Against a creation time given explicitly (`validate`: the manifest's, or `--now`).
        let mut unstamped = request();
        unstamped.start_time = Some(Time(ts("2026-03-31T10:00:00Z")));
        assert!(validate_request(&unstamped, &Policy::default(), false).is_ok());
        assert_eq!(
            validate_request_created(&unstamped, &Policy::default(), false, Some(created))
                .unwrap_err()[0]
                .reason,
            reasons::INVALID_START_TIME
        );
    }

    // Issue 22: one reading of spec.duration and spec.startTime for everyone.
    #[test]
    fn issue_22_requested_reads_duration_and_start() {
        let created = ts("2026-03-01T10:00:00Z");
        let policy = Policy::default();
        let mut r = request();
        r.duration = Some("PT90M".into());
        r.start_time = Some(Time(ts("2026-03-01T12:00:00Z")));
        let read = Requested::read(&r, &policy, Some(created)).unwrap();
        assert_eq!(read.duration, SignedDuration::from_mins(90));
        // Starts at the requested time, or at the earliest moment it could if that is later.
        assert_eq!(read.start(created), ts("2026-03-01T12:00:00Z"));
        assert_eq!(
            read.start(ts("2026-03-01T13:00:00Z")),
            ts("2026-03-01T13:00:00Z")
        );
        assert_eq!(
            requested_start(&r, ts("2026-03-01T11:00:00Z")),
            read.start(ts("2026-03-01T11:00:00Z"))
        );
        // Unset: the policy's maximum, from the earliest moment.
        let unset = Requested::read(&request(), &policy, Some(created)).unwrap();
        assert_eq!(unset.duration, policy.max_activation);
        assert_eq!(unset.start(created), created);
    }

    #[test]
    fn issue_22_requested_names_what_does_not_read() {
        let created = ts("2026-03-01T10:00:00Z");
        let policy = Policy::default();
        for text in ["forever", "0m", "-1h"] {
            let mut r = request();
            r.duration = Some(text.into());
            let errs = Requested::read(&r, &policy, Some(created)).unwrap_err();
            let got: Vec<_> = errs.iter().map(|v| (v.field.as_str(), v.reason)).collect();
            assert_eq!(
                got,
                [("spec.duration", reasons::INVALID_DURATION)],
                "{text}"
            );
        }
        // A start past maxStartDelay after creation, with a bad duration: both named.
        let mut r = request();
        r.duration = Some("forever".into());
        r.start_time = Some(Time(ts("2026-03-16T10:00:01Z")));
        let errs = Requested::read(&r, &policy, Some(created)).unwrap_err();
        let got: Vec<_> = errs.iter().map(|v| (v.field.as_str(), v.reason)).collect();
        assert_eq!(
            got,
            [
                ("spec.duration", reasons::INVALID_DURATION),
                ("spec.startTime", reasons::INVALID_START_TIME),
            ]
        );
        // A start before creation is fine (it starts at approval); without a creation time the
        // delay cannot be measured.
        r.duration = None;
        assert!(Requested::read(&r, &policy, None).is_ok());
        r.start_time = Some(Time(ts("2026-02-01T10:00:00Z")));
        assert!(Requested::read(&r, &policy, Some(created)).is_ok());
    }

    // Over the maximum, the duration reads (the window is capped, so a granted request keeps
    // it), and validation of a request refuses it.
    #[test]
    fn issue_22_a_duration_over_the_maximum_reads_and_fails_validation() {
        let policy = Policy {
            max_activation: SignedDuration::from_hours(1),
            ..Policy::default()
        };
        let mut r = request();
        r.duration = Some("2h".into());
        assert_eq!(
            Requested::read(&r, &policy, None).map(|r| r.duration),
            Ok(SignedDuration::from_hours(2))
        );
        let errs = validate_request(&r, &policy, false).unwrap_err();
        let got: Vec<_> = errs.iter().map(|v| (v.field.as_str(), v.reason)).collect();
        assert_eq!(got, [("spec.duration", reasons::DURATION_EXCEEDS_MAXIMUM)]);
        assert_eq!(
            errs[0].message,
            "2h is longer than the policy's maximum of 1h"
        );
        // Over the maximum and starting too late: both named, in field order.
        let created = ts("2026-03-01T10:00:00Z");
        r.start_time = Some(Time(ts("2026-04-01T10:00:00Z")));
        let errs = validate_request_created(&r, &policy, false, Some(created)).unwrap_err();
        let got: Vec<_> = errs.iter().map(|v| v.reason).collect();
        assert_eq!(
            got,
            [
                reasons::DURATION_EXCEEDS_MAXIMUM,
                reasons::INVALID_START_TIME
            ]
        );
    }

    #[test]
    fn window_is_clipped_and_says_by_what() {
        let start = ts("2026-03-01T10:00:00Z");
        let w = plan_window(
            start,
            SignedDuration::from_hours(2),
            SignedDuration::from_hours(8),
            None,
        );
        assert_eq!((w.end, w.clipped_by), (ts("2026-03-01T12:00:00Z"), None));
        let w = plan_window(
            start,
            SignedDuration::from_hours(2),
            SignedDuration::from_hours(1),
            None,
        );
        assert_eq!(
            (w.end, w.clipped_by),
            (ts("2026-03-01T11:00:00Z"), Some(EndClippedBy::Policy))
        );
        let w = plan_window(
            start,
            SignedDuration::from_hours(2),
            SignedDuration::from_hours(8),
            Some(ts("2026-03-01T10:30:00Z")),
        );
        assert_eq!(
            (w.end, w.clipped_by),
            (ts("2026-03-01T10:30:00Z"), Some(EndClippedBy::Eligibility))
        );
    }

    #[test]
    fn shrinking_never_lengthens() {
        let w = Window {
            start: ts("2026-03-01T10:00:00Z"),
            end: ts("2026-03-01T12:00:00Z"),
            clipped_by: None,
        };
        assert_eq!(shrink_window(w, SignedDuration::from_hours(8), None), w);
        let shorter = shrink_window(w, SignedDuration::from_hours(1), None);
        assert_eq!(
            (shorter.end, shorter.clipped_by),
            (ts("2026-03-01T11:00:00Z"), Some(EndClippedBy::Policy))
        );
        let elig = shrink_window(
            w,
            SignedDuration::from_hours(8),
            Some(ts("2026-03-01T13:00:00Z")),
        );
        assert_eq!(elig, w);
    }
}
