//! PIM for Groups: active assignment schedule requests
//! (`POST /identityGovernance/privilegedAccess/group/assignmentScheduleRequests`) and the
//! active assignment instances of a group
//! (`GET …/assignmentScheduleInstances?$filter=groupId eq '…'`), which say when Entra itself
//! will end each one.

use jiff::Timestamp;
use serde_json::{Value, json};

use crate::api::common::Role;

pub const REQUESTS: &str = "/identityGovernance/privilegedAccess/group/assignmentScheduleRequests";
pub const INSTANCES: &str =
    "/identityGovernance/privilegedAccess/group/assignmentScheduleInstances";

/// The shortest assignment PIM for Groups makes, and how long one must stand before it can be
/// removed: an assignment "can't be assigned for a duration of less than five minutes" and
/// "can't be removed within five minutes of it being assigned" (Microsoft Entra docs, "Assign
/// eligibility for a group in Privileged Identity Management"). Graph answers either with
/// `ActiveDurationTooShort`.
pub const MINIMUM: jiff::SignedDuration = jiff::SignedDuration::from_mins(5);

/// Added to [`MINIMUM`] for the shortest end this backend asks: the request's start is this
/// process's clock, and the time it takes to reach Graph (or a clock a little off Entra's)
/// must not make a five-minute schedule too short.
pub const MARGIN: jiff::SignedDuration = jiff::SignedDuration::from_secs(30);

/// Graph's error code for a schedule under [`MINIMUM`], or a removal inside it.
pub const TOO_SHORT: &str = "ActiveDurationTooShort";

/// Graph's error code for a schedule request the tenant's PIM policy refuses; its message names
/// the rules: `The following policy rules failed: ["ExpirationRule"]`.
pub const POLICY_FAILED: &str = "RoleAssignmentRequestPolicyValidationFailed";

/// The rule names of a [`POLICY_FAILED`] message (the quoted names inside its brackets).
pub fn failed_rules(message: &str) -> Vec<String> {
    let Some(list) = message
        .split_once('[')
        .and_then(|(_, rest)| rest.split_once(']'))
        .map(|(inside, _)| inside)
    else {
        return Vec::new();
    };
    list.split(',')
        .map(|name| name.trim().trim_matches('"').trim())
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .collect()
}

/// What a failed policy rule means for this operator's requests, to say what to change.
pub fn rule_meaning(rule: &str) -> &'static str {
    match rule {
        "ExpirationRule" => {
            "the group's PIM policy forbids permanent active assignments or caps their duration (Expiration_Admin_Assignment)"
        }
        "JustificationRule" => "the policy requires a justification",
        "TicketingRule" => "the policy requires ticket information",
        "MfaRule" | "AuthenticationContextRule" => {
            "the policy requires multi-factor authentication, which an application cannot give"
        }
        _ => "see the group's PIM settings",
    }
}

/// The schedule request actions this backend sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// A new active assignment.
    Assign,
    /// Move an assignment's end, later or earlier (or to none). Never `adminExtend`: Graph
    /// documents it "to extend expiring assignments", and PIM offers it only within 14 days of
    /// the end, which says nothing of a grant's window.
    Update,
    /// End an assignment now.
    Remove,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Assign => "adminAssign",
            Action::Update => "adminUpdate",
            Action::Remove => "adminRemove",
        }
    }
}

/// `accessId` of a role.
pub fn access_id(role: Role) -> &'static str {
    match role {
        Role::Member => "member",
        Role::Owner => "owner",
    }
}

/// A time as Graph's schedules take it: whole seconds, rounded down, so that an end never moves
/// later. Graph documents its timestamps as ISO 8601 in UTC (`2014-01-01T00:00:00Z`), and .NET's
/// `DateTimeOffset` behind it holds 100 ns at best, so a nanosecond fraction is not sent.
pub fn whole_seconds(time: Timestamp) -> Timestamp {
    let seconds = time.as_second() - i64::from(time.subsec_nanosecond() < 0);
    Timestamp::from_second(seconds).unwrap_or(time)
}

/// The body of a schedule request. Assignments start `now` and end `until` (`afterDateTime`),
/// or never (`noExpiration`); a removal has no schedule. Both are sent in whole seconds
/// ([`whole_seconds`]), as `…Z`.
pub fn request_body(
    action: Action,
    role: Role,
    group_id: &str,
    principal_id: &str,
    now: Timestamp,
    until: Option<Timestamp>,
    justification: &str,
) -> Value {
    let mut body = json!({
        "accessId": access_id(role),
        "principalId": principal_id,
        "groupId": group_id,
        "action": action.as_str(),
        "justification": justification,
    });
    if action != Action::Remove {
        let expiration = match until {
            Some(end) => json!({
                "type": "afterDateTime",
                "endDateTime": whole_seconds(end).to_string(),
            }),
            None => json!({"type": "noExpiration"}),
        };
        body["scheduleInfo"] = json!({
            "startDateTime": whole_seconds(now).to_string(),
            "expiration": expiration,
        });
    }
    body
}

/// Statuses of a schedule request that mean it will not take effect. A removal is answered
/// `Revoked`, which is what it asked for.
pub fn refused(action: Action, status: &str) -> bool {
    match status {
        "Revoked" => action != Action::Remove,
        "Canceled" | "Denied" | "Failed" | "PendingApproval" | "PendingAdminDecision" => true,
        _ => false,
    }
}

/// `(principalId, end)` of the active assignments of `role` among a group's instances; `end`
/// is `None` for a permanent one. Unreadable entries are skipped.
pub fn held_ends(instances: &[Value], role: Role) -> Vec<(String, Option<Timestamp>)> {
    instances
        .iter()
        .filter(|i| i["accessId"].as_str() == Some(access_id(role)))
        .filter_map(|i| {
            let principal = i["principalId"].as_str()?.to_owned();
            let end = match &i["endDateTime"] {
                Value::String(text) => Some(text.parse::<Timestamp>().ok()?),
                _ => None,
            };
            Some((principal, end))
        })
        .collect()
}

/// `(principalId, start)` of the active assignments of `role` among a group's instances: when
/// each was made, for the five minutes before it can be removed. Unreadable entries are skipped.
pub fn held_starts(instances: &[Value], role: Role) -> Vec<(String, Timestamp)> {
    instances
        .iter()
        .filter(|i| i["accessId"].as_str() == Some(access_id(role)))
        .filter_map(|i| {
            let principal = i["principalId"].as_str()?.to_owned();
            let start = i["startDateTime"].as_str()?.parse::<Timestamp>().ok()?;
            Some((principal, start))
        })
        .collect()
}

/// Whether two ends are the same, to the second (Graph may add fractions).
pub fn same_end(a: Option<Timestamp>, b: Option<Timestamp>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a.duration_since(b).abs() < jiff::SignedDuration::from_secs(1),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn times_are_sent_in_whole_seconds_rounded_down() {
        let body = request_body(
            Action::Assign,
            Role::Member,
            "g",
            "p",
            ts("2026-03-02T09:00:00.999999999Z"),
            Some(ts("2026-03-02T09:30:00.5Z")),
            "j",
        );
        assert_eq!(
            body["scheduleInfo"]["startDateTime"],
            "2026-03-02T09:00:00Z"
        );
        assert_eq!(
            body["scheduleInfo"]["expiration"]["endDateTime"],
            "2026-03-02T09:30:00Z"
        );
        assert_eq!(
            whole_seconds(ts("1969-12-31T23:59:59.5Z")),
            ts("1969-12-31T23:59:59Z")
        );
    }

    #[test]
    fn an_assignment_ends_after_a_date_time() {
        let body = request_body(
            Action::Assign,
            Role::Member,
            "g",
            "p",
            ts("2026-03-02T09:00:00Z"),
            Some(ts("2026-03-02T09:30:00Z")),
            "pim-operator",
        );
        assert_eq!(
            body,
            json!({
                "accessId": "member", "principalId": "p", "groupId": "g", "action": "adminAssign",
                "justification": "pim-operator",
                "scheduleInfo": {
                    "startDateTime": "2026-03-02T09:00:00Z",
                    "expiration": {"type": "afterDateTime", "endDateTime": "2026-03-02T09:30:00Z"},
                },
            })
        );
        let removal = request_body(
            Action::Remove,
            Role::Owner,
            "g",
            "p",
            ts("2026-03-02T09:00:00Z"),
            None,
            "j",
        );
        assert!(removal.get("scheduleInfo").is_none());
        assert_eq!(removal["accessId"], "owner");
        let forever = request_body(
            Action::Update,
            Role::Member,
            "g",
            "p",
            ts("2026-03-02T09:00:00Z"),
            None,
            "j",
        );
        assert_eq!(
            forever["scheduleInfo"]["expiration"],
            json!({"type": "noExpiration"})
        );
    }

    #[test]
    fn policy_failures_name_their_rules() {
        let rules = failed_rules(r#"The following policy rules failed: ["ExpirationRule"]"#);
        assert_eq!(rules, ["ExpirationRule"]);
        let rules = failed_rules(
            r#"The following policy rules failed: ["EligibilityRule","ExpirationRule"]"#,
        );
        assert_eq!(rules, ["EligibilityRule", "ExpirationRule"]);
        assert!(failed_rules("no list").is_empty());
        assert!(rule_meaning("ExpirationRule").contains("permanent"));
    }

    #[test]
    fn refusals() {
        assert!(!refused(Action::Assign, "Provisioned"));
        assert!(!refused(Action::Assign, "Granted"));
        assert!(!refused(Action::Remove, "Revoked"));
        assert!(refused(Action::Assign, "Revoked"));
        assert!(refused(Action::Update, "Failed"));
        assert!(refused(Action::Assign, "PendingApproval"));
    }

    #[test]
    fn instances_give_the_held_ends() {
        let instances = vec![
            json!({"principalId": "a", "accessId": "member", "endDateTime": "2026-03-02T09:30:00.123Z"}),
            json!({"principalId": "b", "accessId": "member", "endDateTime": null}),
            json!({"principalId": "c", "accessId": "owner", "endDateTime": null}),
            json!({"accessId": "member"}),
        ];
        let held = held_ends(&instances, Role::Member);
        assert_eq!(
            held,
            vec![
                ("a".to_owned(), Some(ts("2026-03-02T09:30:00.123Z"))),
                ("b".to_owned(), None)
            ]
        );
        assert!(same_end(
            Some(ts("2026-03-02T09:30:00.123Z")),
            Some(ts("2026-03-02T09:30:00Z"))
        ));
        assert!(!same_end(
            Some(ts("2026-03-02T09:30:00Z")),
            Some(ts("2026-03-02T10:30:00Z"))
        ));
        assert!(!same_end(None, Some(ts("2026-03-02T09:30:00Z"))));
    }
}
