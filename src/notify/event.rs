//! The events people are told about (Entra's notification matrix, and the reminders and ends
//! it leaves out).

use serde::{Deserialize, Serialize};

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum Event {
    /// An Eligible-type assignment became effective.
    EligibleAssigned,
    /// An Active-type (standing) assignment became effective.
    ActiveAssigned,
    /// A request waits for approvers.
    ActivationRequested,
    /// An approval-gated request was approved.
    Approved,
    /// An approver said no.
    Denied,
    /// The directory confirmed the membership.
    Activated,
    /// The activation ends within the policy's lead time.
    ExpiringSoon,
    /// The request finished (expired, deactivated, revoked, timed out, rejected, failed).
    Ended,
    /// An Eligible assignment, or a time-bound Active one, ends within the policy's
    /// `eligibilityEndingLead`: renew it or lose it.
    EligibilityEnding,
    /// One of the policy's `alerts` fired on the request or assignment (a condition turned
    /// True), or a request's revocation is overdue: for the admins.
    Alert,
    /// An access review instance started: its reviewers have assignments to decide.
    ReviewStarted,
    /// An access review instance ends within its `remindBefore`, with decisions left.
    ReviewReminder,
    /// An access review instance ended: what it kept and denied.
    ReviewCompleted,
}

impl Event {
    pub const ALL: [Event; 13] = [
        Event::EligibleAssigned,
        Event::ActiveAssigned,
        Event::ActivationRequested,
        Event::Approved,
        Event::Denied,
        Event::Activated,
        Event::ExpiringSoon,
        Event::Ended,
        Event::EligibilityEnding,
        Event::Alert,
        Event::ReviewStarted,
        Event::ReviewReminder,
        Event::ReviewCompleted,
    ];

    /// The name in status records, config filters and webhook payloads.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::EligibleAssigned => "eligibleAssigned",
            Event::ActiveAssigned => "activeAssigned",
            Event::ActivationRequested => "activationRequested",
            Event::Approved => "approved",
            Event::Denied => "denied",
            Event::Activated => "activated",
            Event::ExpiringSoon => "expiringSoon",
            Event::Ended => "ended",
            Event::EligibilityEnding => "eligibilityEnding",
            Event::Alert => "alert",
            Event::ReviewStarted => "reviewStarted",
            Event::ReviewReminder => "reviewReminder",
            Event::ReviewCompleted => "reviewCompleted",
        }
    }

    pub fn parse(name: &str) -> Option<Event> {
        Event::ALL.into_iter().find(|e| e.as_str() == name)
    }
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_serde() {
        for event in Event::ALL {
            assert_eq!(Event::parse(event.as_str()), Some(event));
            assert_eq!(
                serde_json::to_value(event).unwrap(),
                serde_json::json!(event.as_str())
            );
        }
        assert_eq!(Event::parse("nope"), None);
    }
}
