//! What a notification says: a subject, a plain-text and an HTML body, and the facts as
//! label/value pairs for chat cards and webhooks. Pure; every channel formats the same message.

use jiff::Timestamp;
use serde::Serialize;

use super::event::Event;
use crate::api::AccessReview;
use crate::api::access_review::Outcome;
use crate::api::activation_request::{ActivationRequest, Decision};
use crate::api::eligible_assignment::{AssignmentType, EligibleAssignment};

/// The object a message is about, in the words a message uses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct About {
    /// `ActivationRequest` or `EligibleAssignment`.
    pub kind: String,
    pub name: String,
    pub uid: String,
    /// The user (or group) who is elevated or assigned.
    pub principal: String,
    pub group: String,
    pub role: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub justification: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub approved_by: Vec<String>,
    /// Who denied, with their reason.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub denied_by: Vec<String>,
    /// The phase the request is in, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// An assignment's type: `Eligible` or `Active`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assignment_type: Option<String>,
    /// The request an extension extends (`spec.extends`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extends: Option<String>,
    /// The policy alerts raised on it (True alert conditions' messages).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub alerts: Vec<String>,
}

/// The messages of the True alert conditions among `conditions`.
fn alert_messages(
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
) -> Vec<String> {
    conditions
        .iter()
        .filter(|c| {
            crate::engine::alerts::ALERT_CONDITIONS.contains(&c.type_.as_str())
                && c.status == "True"
        })
        .map(|c| format!("{}: {}", c.type_, c.message))
        .chain(
            conditions
                .iter()
                .filter(|c| super::plan::is_overdue(c))
                .map(|c| format!("{}: {}", c.reason, c.message)),
        )
        .collect()
}

impl About {
    pub fn request(request: &ActivationRequest) -> About {
        let spec = &request.spec;
        let status = request.status.clone().unwrap_or_default();
        let last = status.history.last();
        About {
            kind: "ActivationRequest".into(),
            name: request.metadata.name.clone().unwrap_or_default(),
            uid: request.metadata.uid.clone().unwrap_or_default(),
            principal: spec
                .principal
                .clone()
                .or_else(|| spec.requester.as_ref().map(|r| r.username.clone()))
                .unwrap_or_default(),
            group: spec.group.clone(),
            role: spec.role().to_string(),
            justification: spec.justification.clone(),
            ticket: spec
                .ticket
                .as_ref()
                .map(|t| format!("{} {}", t.system, t.number)),
            duration: spec.duration.clone(),
            starts_at: status.starts_at.as_ref().map(|t| t.0),
            ends_at: status.expires_at.as_ref().map(|t| t.0),
            approved_by: status.approved_by.clone(),
            denied_by: spec
                .approvals
                .iter()
                .filter(|a| a.decision == Decision::Deny)
                .map(|a| match &a.reason {
                    Some(reason) => format!("{} ({reason})", a.approver),
                    None => a.approver.clone(),
                })
                .collect(),
            phase: status.phase.map(|p| p.to_string()),
            reason: last.map(|t| match &t.message {
                Some(message) => format!("{}: {message}", t.reason),
                None => t.reason.clone(),
            }),
            assignment_type: None,
            extends: spec.extends.clone(),
            alerts: alert_messages(&status.conditions),
        }
    }

    pub fn assignment(assignment: &EligibleAssignment) -> About {
        let spec = &assignment.spec;
        let status = assignment.status.clone().unwrap_or_default();
        About {
            kind: "EligibleAssignment".into(),
            name: assignment.metadata.name.clone().unwrap_or_default(),
            uid: assignment.metadata.uid.clone().unwrap_or_default(),
            principal: spec
                .principal
                .user
                .clone()
                .or_else(|| spec.principal.group.clone())
                .unwrap_or_default(),
            group: spec.group.clone(),
            role: spec.role.to_string(),
            justification: spec.justification.clone(),
            starts_at: status.effective_start.as_ref().map(|t| t.0),
            ends_at: status.effective_end.as_ref().map(|t| t.0),
            assignment_type: Some(
                match spec.assignment_type {
                    AssignmentType::Eligible => "Eligible",
                    AssignmentType::Active => "Active",
                }
                .to_owned(),
            ),
            alerts: alert_messages(&status.conditions),
            ..About::default()
        }
    }
}

impl About {
    /// An access review's latest instance: `kept` and `denied` list its outcomes once it is
    /// completed; `reason` says what is left to decide while it runs.
    pub fn review(review: &AccessReview) -> About {
        let current = review.status.as_ref().and_then(|s| s.current.as_ref());
        let items = current.map(|c| c.items.as_slice()).unwrap_or_default();
        let named = |outcome: Outcome| {
            items
                .iter()
                .filter(|i| i.outcome == Some(outcome))
                .map(|i| format!("{} ({} in {})", i.assignment, i.principal, i.group))
                .collect::<Vec<_>>()
        };
        let undecided = items.iter().filter(|i| i.decision.is_none()).count();
        About {
            kind: "AccessReview".into(),
            name: review.metadata.name.clone().unwrap_or_default(),
            uid: review.metadata.uid.clone().unwrap_or_default(),
            group: review.spec.scope.groups.join(", "),
            justification: review.spec.description.clone(),
            starts_at: current.map(|c| c.start.0),
            ends_at: current.map(|c| c.end.0),
            approved_by: named(Outcome::Kept),
            denied_by: named(Outcome::Denied),
            phase: current.and_then(|c| c.progress.clone()),
            reason: Some(format!(
                "{undecided} of {} assignments undecided",
                items.len()
            )),
            ..About::default()
        }
    }
}

/// A rendered notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub event: Event,
    /// When the event happened.
    pub time: Timestamp,
    pub about: About,
    pub subject: String,
    pub text: String,
    pub html: String,
    pub facts: Vec<(String, String)>,
    /// Everyone the matrix names for this event (chat messages list them).
    pub recipients: Vec<String>,
}

fn when(t: Option<Timestamp>) -> String {
    t.map_or_else(|| "-".to_owned(), |t| t.to_string())
}

/// Escapes text for HTML element content and attribute values.
pub fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Renders `event` about `about`, which happened at `time`.
fn list_or_none(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

pub fn render(event: Event, about: &About, time: Timestamp, recipients: Vec<String>) -> Message {
    let who = &about.principal;
    let target = format!("the {} role of {}", about.role, about.group);
    let (subject, lead) = match event {
        Event::EligibleAssigned => (
            format!("[PIM] {who} is eligible for {target}"),
            format!(
                "{who} can now activate {target} when needed (EligibleAssignment {}).",
                about.name
            ),
        ),
        Event::ActiveAssigned => (
            format!("[PIM] {who} is assigned {target}"),
            format!(
                "{who} holds {target} without activation (EligibleAssignment {}).",
                about.name
            ),
        ),
        Event::ActivationRequested => (
            format!("[PIM] Approval needed: {who} requests {target}"),
            format!(
                "{who} asks to activate {target}. Decide with `kubectl pim approve {0}` or `kubectl pim deny {0}`.",
                about.name
            ),
        ),
        Event::Approved => (
            format!("[PIM] Approved: {who}'s request for {target}"),
            format!(
                "Request {} was approved by {}.",
                about.name,
                if about.approved_by.is_empty() {
                    "the approvers".to_owned()
                } else {
                    about.approved_by.join(", ")
                }
            ),
        ),
        Event::Denied => (
            format!("[PIM] Denied: {who}'s request for {target}"),
            format!(
                "Request {} was denied by {}.",
                about.name,
                if about.denied_by.is_empty() {
                    "an approver".to_owned()
                } else {
                    about.denied_by.join(", ")
                }
            ),
        ),
        Event::Activated if about.extends.is_some() => (
            format!(
                "[PIM] {who}'s access to {target} extended until {}",
                when(about.ends_at)
            ),
            format!(
                "{who} holds {target} on until {}: request {} extends request {} without a break.",
                when(about.ends_at),
                about.name,
                about.extends.as_deref().unwrap_or_default()
            ),
        ),
        Event::Activated => (
            format!("[PIM] {who} activated {target}"),
            format!(
                "{who} holds {target} from {} until {} (request {}).",
                when(about.starts_at),
                when(about.ends_at),
                about.name
            ),
        ),
        Event::ExpiringSoon => (
            format!(
                "[PIM] {who}'s access to {target} expires at {}",
                when(about.ends_at)
            ),
            format!(
                "The activation of {target} by {who} ends at {}. To keep working, extend it: `kubectl pim extend {} --by 1h --justification …`.",
                when(about.ends_at),
                about.name
            ),
        ),
        Event::EligibilityEnding if about.assignment_type.as_deref() == Some("Active") => (
            format!(
                "[PIM] {who}'s assignment to {target} ends at {}",
                when(about.ends_at)
            ),
            format!(
                "{who} holds {target} through EligibleAssignment {} until {}. To keep it, renew the assignment (a later spec.schedule.end, or a longer duration) before then.",
                about.name,
                when(about.ends_at)
            ),
        ),
        Event::EligibilityEnding => (
            format!(
                "[PIM] {who}'s eligibility for {target} ends at {}",
                when(about.ends_at)
            ),
            format!(
                "{who} may activate {target} through EligibleAssignment {} until {}. To stay eligible, renew the assignment (a later spec.schedule.end, or a longer duration) before then.",
                about.name,
                when(about.ends_at)
            ),
        ),
        Event::ReviewStarted => (
            format!(
                "[PIM] Access review {} is open until {}",
                about.name,
                when(about.ends_at)
            ),
            format!(
                "Access review {} asks you to confirm who keeps access{}. {}. See yours with `kubectl pim review`, and decide with `kubectl pim review approve|deny {} ASSIGNMENT --reason …`.",
                about.name,
                about
                    .justification
                    .as_deref()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default(),
                about.reason.as_deref().unwrap_or_default(),
                about.name
            ),
        ),
        Event::ReviewReminder => (
            format!(
                "[PIM] Reminder: access review {} ends at {}",
                about.name,
                when(about.ends_at)
            ),
            format!(
                "Access review {} ends at {}; {}. Decide with `kubectl pim review`, or the review's whenUnreviewed setting decides for you.",
                about.name,
                when(about.ends_at),
                about.reason.as_deref().unwrap_or_default()
            ),
        ),
        Event::ReviewCompleted => (
            format!("[PIM] Access review {} completed", about.name),
            format!(
                "Access review {} ended at {}. Denied (their access has ended; remove the manifests): {}. Kept: {}.",
                about.name,
                when(about.ends_at),
                list_or_none(&about.denied_by),
                list_or_none(&about.approved_by)
            ),
        ),
        Event::Alert => (
            format!("[PIM] Alert: {who} in {target}"),
            format!(
                "{} {} raised a PIM alert. {}",
                about.kind,
                about.name,
                about.alerts.join(" ")
            ),
        ),
        Event::Ended => (
            format!(
                "[PIM] {who}'s request for {target} ended: {}",
                about.phase.as_deref().unwrap_or("finished")
            ),
            format!(
                "Request {} ended ({}).",
                about.name,
                about.reason.as_deref().unwrap_or("no reason given")
            ),
        ),
    };
    let mut facts: Vec<(String, String)> = vec![
        ("Event".into(), event.to_string()),
        (about.kind.clone(), about.name.clone()),
        ("Principal".into(), who.clone()),
        ("Group".into(), about.group.clone()),
        ("Role".into(), about.role.clone()),
    ];
    let optional = |facts: &mut Vec<(String, String)>, label: &str, value: Option<String>| {
        if let Some(value) = value {
            facts.push((label.to_owned(), value));
        }
    };
    optional(&mut facts, "Extends", about.extends.clone());
    optional(&mut facts, "Justification", about.justification.clone());
    optional(&mut facts, "Ticket", about.ticket.clone());
    optional(&mut facts, "Duration", about.duration.clone());
    optional(&mut facts, "Starts", about.starts_at.map(|t| t.to_string()));
    optional(&mut facts, "Ends", about.ends_at.map(|t| t.to_string()));
    if !about.approved_by.is_empty() {
        facts.push(("Approved by".into(), about.approved_by.join(", ")));
    }
    if !about.denied_by.is_empty() {
        facts.push(("Denied by".into(), about.denied_by.join(", ")));
    }
    if matches!(event, Event::Ended | Event::Denied) {
        optional(&mut facts, "Outcome", about.phase.clone());
        optional(&mut facts, "Reason", about.reason.clone());
    }
    facts.push(("Time".into(), time.to_string()));

    let mut text = format!("{lead}\n\n");
    for (label, value) in &facts {
        text.push_str(&format!("{label}: {value}\n"));
    }
    let mut html = format!("<html><body><p>{}</p><table>", html_escape(&lead));
    for (label, value) in &facts {
        html.push_str(&format!(
            "<tr><th align=\"left\">{}</th><td>{}</td></tr>",
            html_escape(label),
            html_escape(value)
        ));
    }
    html.push_str("</table></body></html>");
    Message {
        event,
        time,
        about: about.clone(),
        subject,
        text,
        html,
        facts,
        recipients,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn about() -> About {
        About {
            kind: "ActivationRequest".into(),
            name: "alice-q2".into(),
            uid: "u-1".into(),
            principal: "alice@contoso.com".into(),
            group: "finreport".into(),
            role: "member".into(),
            justification: Some("close <Q2> & report".into()),
            ticket: Some("ServiceNow CHG42".into()),
            duration: Some("30m".into()),
            ..About::default()
        }
    }

    #[test]
    fn an_extension_says_extended_and_names_what_it_extends() {
        let extension = About {
            name: "alice-q2-ext-x7k2p".into(),
            extends: Some("alice-q2".into()),
            ends_at: Some("2026-03-02T10:30:00Z".parse().unwrap()),
            ..about()
        };
        let time = "2026-03-02T09:50:00Z".parse().unwrap();
        let m = render(Event::Activated, &extension, time, vec![]);
        assert_eq!(
            m.subject,
            "[PIM] alice@contoso.com's access to the member role of finreport extended until 2026-03-02T10:30:00Z"
        );
        assert!(
            m.text
                .contains("request alice-q2-ext-x7k2p extends request alice-q2 without a break"),
            "{}",
            m.text
        );
        assert!(m.facts.contains(&("Extends".into(), "alice-q2".into())));
        // A first activation still says activated; its reminder says how to extend.
        let m = render(Event::Activated, &about(), time, vec![]);
        assert!(m.subject.contains("activated"), "{}", m.subject);
        let m = render(Event::ExpiringSoon, &about(), time, vec![]);
        assert!(
            m.text.contains("kubectl pim extend alice-q2 --by"),
            "{}",
            m.text
        );
    }

    #[test]
    fn requests_to_approve_say_how_to_decide() {
        let m = render(
            Event::ActivationRequested,
            &about(),
            "2026-03-02T09:00:00Z".parse().unwrap(),
            vec!["bob".into()],
        );
        assert_eq!(
            m.subject,
            "[PIM] Approval needed: alice@contoso.com requests the member role of finreport"
        );
        assert!(m.text.contains("kubectl pim approve alice-q2"));
        assert!(m.text.contains("Justification: close <Q2> & report"));
        assert!(m.text.contains("Ticket: ServiceNow CHG42"));
        assert!(
            m.html.contains("close &lt;Q2&gt; &amp; report"),
            "{}",
            m.html
        );
        assert!(!m.html.contains("<Q2>"));
    }

    #[test]
    fn eligibility_reminders_name_the_end_and_how_to_renew() {
        let mut a = About {
            kind: "EligibleAssignment".into(),
            name: "alice-fin".into(),
            principal: "alice@contoso.com".into(),
            group: "finreport".into(),
            role: "member".into(),
            ends_at: Some("2027-01-01T00:00:00Z".parse().unwrap()),
            assignment_type: Some("Eligible".into()),
            ..About::default()
        };
        let at = "2026-12-18T00:00:00Z".parse().unwrap();
        let m = render(Event::EligibilityEnding, &a, at, vec![]);
        assert_eq!(
            m.subject,
            "[PIM] alice@contoso.com's eligibility for the member role of finreport ends at 2027-01-01T00:00:00Z"
        );
        assert!(
            m.text
                .contains("through EligibleAssignment alice-fin until 2027-01-01T00:00:00Z"),
            "{}",
            m.text
        );
        assert!(m.text.contains("renew the assignment"), "{}", m.text);
        assert!(m.text.contains("Ends: 2027-01-01T00:00:00Z"), "{}", m.text);
        a.assignment_type = Some("Active".into());
        let m = render(Event::EligibilityEnding, &a, at, vec![]);
        assert_eq!(
            m.subject,
            "[PIM] alice@contoso.com's assignment to the member role of finreport ends at 2027-01-01T00:00:00Z"
        );
    }

    #[test]
    fn endings_carry_outcome_and_reason() {
        let mut a = about();
        a.phase = Some("Expired".into());
        a.reason = Some("Expired: ended at 2026-03-02T09:30:00Z".into());
        let m = render(
            Event::Ended,
            &a,
            "2026-03-02T09:30:00Z".parse().unwrap(),
            vec![],
        );
        assert!(m.subject.ends_with("ended: Expired"), "{}", m.subject);
        assert!(m.text.contains("Outcome: Expired"));
        assert!(m.text.contains("Reason: Expired: ended at"));
    }
}
