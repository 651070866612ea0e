//! What a simulation reports: the events in time order and the state at the end, as text for
//! people and as JSON for scripts.

use jiff::Timestamp;
use serde::Serialize;

use crate::api::activation_request::{Decision as Vote, EndClippedBy, Phase};
use crate::api::common::Role;

/// One thing that happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    pub time: Timestamp,
    #[serde(flatten)]
    pub what: What,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(
    tag = "event",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum What {
    /// A request came into existence (planned, or from the manifests).
    Created {
        request: String,
        principal: String,
        group: String,
        role: Role,
        duration: Option<String>,
        start_time: Option<Timestamp>,
    },
    /// A requester asked to extend a request (`spec.extends`), `by` past its end.
    ExtensionCreated {
        request: String,
        extends: String,
        principal: String,
        by: Option<String>,
    },
    /// An approver recorded a decision.
    Decided {
        request: String,
        approver: String,
        decision: Vote,
    },
    /// A request changed phase; `from` is empty on its first pass.
    Transition {
        request: String,
        from: Option<Phase>,
        to: Phase,
        reason: String,
        message: String,
    },
    /// A request stayed in its phase, with a new reason or message.
    Update {
        request: String,
        phase: Phase,
        reason: String,
        message: String,
    },
    /// A request's access window was set, or shortened.
    Window {
        request: String,
        starts_at: Timestamp,
        expires_at: Timestamp,
        previous_end: Option<Timestamp>,
        clipped_by: Option<EndClippedBy>,
    },
    MemberAdded {
        group: String,
        role: Role,
        member: String,
        /// What justifies the membership: `request req-1`, `assignment x`.
        because: Vec<String>,
    },
    MemberRemoved {
        group: String,
        role: Role,
        member: String,
    },
    /// One of the policy's `alerts` was raised on a request (a condition turned True).
    Alert {
        request: String,
        alert: String,
        message: String,
    },
    /// An access review's instance started, with the assignments it covers.
    ReviewOpened {
        review: String,
        instance: String,
        assignments: Vec<String>,
    },
    /// A reviewer recorded a decision in an instance.
    ReviewDecided {
        review: String,
        instance: String,
        assignment: String,
        reviewer: String,
        decision: Vote,
    },
    /// An instance ended: what it denied (with who), and what it kept.
    ReviewCompleted {
        review: String,
        instance: String,
        denied: Vec<String>,
        kept: Vec<String>,
    },
    /// A member no grant explains stays, and why: adoption, `Report`, protection, last member.
    MemberKept {
        group: String,
        role: Role,
        member: String,
        why: String,
    },
}

/// A request at the end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestState {
    pub request: String,
    pub phase: Phase,
    pub reason: String,
    pub expires_at: Option<Timestamp>,
}

/// The members of one role of one PimGroup's directory group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupState {
    pub group: String,
    pub role: Role,
    pub members: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Timeline {
    pub start: Timestamp,
    pub until: Timestamp,
    /// What the simulation left out or could not do.
    pub notes: Vec<String>,
    /// The directory at the start, as the operator would have left it.
    pub initial: Vec<GroupState>,
    pub events: Vec<Event>,
    /// Each request at the end.
    pub requests: Vec<RequestState>,
    /// The directory at the end.
    pub membership: Vec<GroupState>,
}

impl Timeline {
    pub fn new(start: Timestamp, until: Timestamp) -> Self {
        Timeline {
            start,
            until,
            notes: Vec::new(),
            initial: Vec::new(),
            events: Vec::new(),
            requests: Vec::new(),
            membership: Vec::new(),
        }
    }

    pub fn push(&mut self, time: Timestamp, what: What) {
        self.events.push(Event { time, what });
    }

    /// The timeline as lines of `time  subject  what happened`.
    pub fn to_text(&self) -> String {
        let mut out = format!("simulation from {} until {}\n", self.start, self.until);
        for note in &self.notes {
            out.push_str(&format!("note: {note}\n"));
        }
        for group in self.initial.iter().filter(|g| !g.members.is_empty()) {
            out.push_str(&format!(
                "{}  {}/{}  starts with {}\n",
                self.start,
                group.group,
                group.role,
                group.members.join(", ")
            ));
        }
        for event in &self.events {
            out.push_str(&format!("{}  {}\n", event.time, describe(&event.what)));
        }
        out.push_str(&format!("at the end ({}):\n", self.until));
        for request in &self.requests {
            let until = request
                .expires_at
                .filter(|_| matches!(request.phase, Phase::Scheduled | Phase::Active))
                .map(|t| format!(" until {t}"))
                .unwrap_or_default();
            out.push_str(&format!(
                "  {}  {} ({}){until}\n",
                request.request, request.phase, request.reason
            ));
        }
        for group in &self.membership {
            let members = if group.members.is_empty() {
                "no members".to_owned()
            } else {
                group.members.join(", ")
            };
            out.push_str(&format!("  {}/{}  {members}\n", group.group, group.role));
        }
        out
    }
}

fn describe(what: &What) -> String {
    match what {
        What::Created {
            request,
            principal,
            group,
            role,
            duration,
            start_time,
        } => {
            let how_long = duration
                .as_deref()
                .map_or("for the policy's maximum".to_owned(), |d| {
                    format!("for {d}")
                });
            let when = start_time.map(|t| format!(" from {t}")).unwrap_or_default();
            format!(
                "{request}  created: {principal} asks for the {role} role of {group} {how_long}{when}"
            )
        }
        What::ExtensionCreated {
            request,
            extends,
            principal,
            by,
        } => {
            let by = by
                .as_deref()
                .map_or("up to the policy's maximum".to_owned(), |d| {
                    format!("by {d}")
                });
            format!("{request}  created: {principal} asks to extend {extends} {by}")
        }
        What::Decided {
            request,
            approver,
            decision,
        } => {
            let verb = match decision {
                Vote::Approve => "approves",
                Vote::Deny => "denies",
            };
            format!("{request}  {approver} {verb}")
        }
        What::Transition {
            request,
            from,
            to,
            reason,
            message,
        } => {
            let from = from.map(|p| format!("{p} ")).unwrap_or_default();
            let message = if message.is_empty() {
                String::new()
            } else {
                format!(": {message}")
            };
            format!("{request}  {from}-> {to} ({reason}){message}")
        }
        What::Update {
            request,
            phase,
            reason,
            message,
        } => format!("{request}  {phase} ({reason}): {message}"),
        What::Window {
            request,
            starts_at,
            expires_at,
            previous_end,
            clipped_by,
        } => {
            let clipped = match clipped_by {
                Some(EndClippedBy::Policy) => ", clipped by the policy maximum",
                Some(EndClippedBy::Eligibility) => ", clipped by the end of eligibility",
                None => "",
            };
            match previous_end {
                Some(previous) => format!(
                    "{request}  window now ends at {expires_at} instead of {previous}{clipped}"
                ),
                None => format!("{request}  window {starts_at} to {expires_at}{clipped}"),
            }
        }
        What::MemberAdded {
            group,
            role,
            member,
            because,
        } => format!("{group}/{role}  + {member} ({})", because.join(", ")),
        What::MemberRemoved {
            group,
            role,
            member,
        } => format!("{group}/{role}  - {member}"),
        What::MemberKept {
            group,
            role,
            member,
            why,
        } => format!("{group}/{role}  = {member} kept: {why}"),
        What::Alert {
            request,
            alert,
            message,
        } => format!("{request}  ALERT {alert}: {message}"),
        What::ReviewOpened {
            review,
            instance,
            assignments,
        } => format!(
            "{review}  REVIEW instance {instance} opens: {}",
            if assignments.is_empty() {
                "nothing in scope".to_owned()
            } else {
                format!("to review {}", assignments.join(", "))
            }
        ),
        What::ReviewDecided {
            review,
            instance,
            assignment,
            reviewer,
            decision,
        } => format!(
            "{review}  REVIEW {reviewer} {} {assignment} (instance {instance})",
            match decision {
                Vote::Approve => "approves",
                Vote::Deny => "denies",
            }
        ),
        What::ReviewCompleted {
            review,
            instance,
            denied,
            kept,
        } => {
            let list = |names: &[String]| {
                if names.is_empty() {
                    "none".to_owned()
                } else {
                    names.join(", ")
                }
            };
            format!(
                "{review}  REVIEW instance {instance} ends: denied {}; kept {}",
                list(denied),
                list(kept)
            )
        }
    }
}
