//! Extensions (`spec.extends`): a new ActivationRequest that holds a running activation on past
//! its end, through the same policy (approval, MFA, justification). Pure.
//!
//! Why a request of its own and not a longer `duration` on the original: a request's window can
//! only shrink once granted (DESIGN §5), each extension carries its own justification, approvals
//! and signature, and the history reads as it happened: the original expires (reason
//! `Extended`), the extension goes Active without the member ever leaving the group.
//!
//! The rules:
//! - the extension's window starts when it is approved (never before the original's start) and
//!   ends its `duration` after the original's end;
//! - without `allowRenewal`, the whole chain ends at most `maxDuration` after the original
//!   start; with it, each extension adds at most `maxDuration`;
//! - never past the eligibility's end (the caller clips that, as for any request);
//! - it must be approved while the original still runs, and ends with it when the original ends
//!   early (deactivated, revoked, deleted).

use jiff::{SignedDuration, Timestamp};

use super::activation::Window;
use super::duration;
use super::policy::Policy;
use super::time::add;
use crate::api::activation_request::EndClippedBy;

/// The longest chain of extensions followed: an extension of an extension of … the original.
pub const MAX_CHAIN: usize = 16;

/// What the request an extension names grants, proven as that request's own pass proves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Extended {
    /// Approved and running, or ended on its own at the end of its window.
    Running {
        /// Its window.
        start: Timestamp,
        end: Timestamp,
        /// Where the chain began: the start of the first request, which no extension extends.
        origin: Timestamp,
    },
    /// It grants nothing the extension could continue; why, as a sentence.
    NotRunning(String),
}

/// The facts about the request an extension names.
#[derive(Debug, Clone, Copy)]
pub struct Extension<'a> {
    /// Its name (`spec.extends`).
    pub of: &'a str,
    pub extended: &'a Extended,
}

/// The latest end an extension may reach: `maxDuration` from the original start, or, when the
/// policy allows renewal, `maxDuration` past the end it extends.
pub fn ceiling(end: Timestamp, origin: Timestamp, policy: &Policy) -> Timestamp {
    if policy.allow_renewal {
        add(end, policy.max_activation)
    } else {
        add(origin, policy.max_activation)
    }
}

/// Why an extension of a window ending at `end` would add nothing, or `None` when it adds time.
pub fn adds_nothing(end: Timestamp, origin: Timestamp, policy: &Policy) -> Option<String> {
    let ceiling = ceiling(end, origin, policy);
    (ceiling <= end).then(|| {
        format!(
            "the access it extends already runs to {end}, the policy's maximum of {} from the original start at {origin}, and the policy does not allow renewal (spec.activation.allowRenewal)",
            duration::format(policy.max_activation)
        )
    })
}

/// The window of an extension approved at `approved_at` that asks for `requested` more, of a
/// request running `[start, end)` in a chain that began at `origin`. The eligibility's end is the
/// caller's to clip.
pub fn plan_extension(
    approved_at: Timestamp,
    extended: (Timestamp, Timestamp, Timestamp),
    requested: SignedDuration,
    policy: &Policy,
) -> Window {
    let (start, end, origin) = extended;
    let wanted = add(end, requested);
    let ceiling = ceiling(end, origin, policy);
    let (end, clipped_by) = if ceiling < wanted {
        (ceiling, Some(EndClippedBy::Policy))
    } else {
        (wanted, None)
    };
    let start = approved_at.max(start);
    Window {
        start,
        end: end.max(start),
        clipped_by,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(h: i64) -> Timestamp {
        add(
            "2026-12-03T00:00:00Z".parse().unwrap(),
            SignedDuration::from_hours(h),
        )
    }

    fn policy(max_hours: i64, renewal: bool) -> Policy {
        Policy {
            max_activation: SignedDuration::from_hours(max_hours),
            allow_renewal: renewal,
            ..Policy::default()
        }
    }

    #[test]
    fn extends_within_the_maximum_from_the_original_start() {
        // 8h maximum; the original ran 0h–4h; approved at 3h for 2h more: 3h–6h.
        let w = plan_extension(
            t(3),
            (t(0), t(4), t(0)),
            SignedDuration::from_hours(2),
            &policy(8, false),
        );
        assert_eq!((w.start, w.end, w.clipped_by), (t(3), t(6), None));
        // 6h more would pass 8h from the start: clipped there.
        let w = plan_extension(
            t(3),
            (t(0), t(4), t(0)),
            SignedDuration::from_hours(6),
            &policy(8, false),
        );
        assert_eq!((w.end, w.clipped_by), (t(8), Some(EndClippedBy::Policy)));
        // An extension of an extension counts from the first start.
        let w = plan_extension(
            t(7),
            (t(3), t(8), t(0)),
            SignedDuration::from_hours(1),
            &policy(8, false),
        );
        assert_eq!(w.end, t(8));
        assert!(adds_nothing(t(8), t(0), &policy(8, false)).is_some());
        assert!(adds_nothing(t(7), t(0), &policy(8, false)).is_none());
    }

    #[test]
    fn renewal_adds_up_to_the_maximum_past_the_end() {
        let w = plan_extension(
            t(7),
            (t(3), t(8), t(0)),
            SignedDuration::from_hours(20),
            &policy(8, true),
        );
        assert_eq!((w.end, w.clipped_by), (t(16), Some(EndClippedBy::Policy)));
        assert!(adds_nothing(t(8), t(0), &policy(8, true)).is_none());
    }

    #[test]
    fn never_starts_before_the_original() {
        // Approved while the original is still scheduled.
        let w = plan_extension(
            t(1),
            (t(2), t(4), t(2)),
            SignedDuration::from_hours(1),
            &policy(8, false),
        );
        assert_eq!((w.start, w.end), (t(2), t(5)));
    }
}
