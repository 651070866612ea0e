//! Which assignments are mine, whether one lets me activate a (group, role) at a time, and why
//! the others do not. The decision is the core's ([`Catalog::eligibilities`], [`covering`]);
//! this module only explains it.

use jiff::Timestamp;

use super::identity::Me;
use super::render::{Table, when};
use crate::api::EligibleAssignment;
use crate::api::common::{Principal, Role};
use crate::api::eligible_assignment::{AssignmentPhase, AssignmentType};
use crate::core::eligibility::{AssignmentState, AssignmentWindow, Eligibility, covering};
use crate::core::violation::summarize;
use crate::engine::Catalog;

/// An assignment that names me, directly or through one of my Kubernetes groups.
pub struct Mine<'a> {
    pub name: &'a str,
    pub assignment: &'a EligibleAssignment,
    /// `user:alice` or `group:finance`.
    pub via: String,
    /// Its window under the policy's caps, or why it is invalid.
    pub window: Result<AssignmentWindow, String>,
    /// An access review denied it (its status says so, or a review the caller may read).
    pub denied: bool,
}

impl Mine<'_> {
    pub fn type_text(&self) -> &'static str {
        match self.assignment.spec.assignment_type {
            AssignmentType::Eligible => "Eligible",
            AssignmentType::Active => "Active",
        }
    }

    /// When it ends after the policy's caps, for the ENDS column: `2026-04-01T09:00:00Z (in 30d)`,
    /// `never`, or `-` when it is invalid.
    pub fn ends_text(&self, now: Timestamp) -> String {
        match &self.window {
            Ok(w) => w
                .end
                .map_or_else(|| "never".to_owned(), |end| when(end, now)),
            Err(_) => "-".to_owned(),
        }
    }

    /// Whether it holds at `at`, in words: `yes`, `starts …`, `ended …`, `invalid: …`.
    pub fn state_text(&self, at: Timestamp, now: Timestamp) -> String {
        if self.denied {
            return "denied by an access review; it grants nothing until its manifest is removed"
                .to_owned();
        }
        match &self.window {
            Err(problem) => format!("invalid: {problem}"),
            Ok(w) => match w.state(at) {
                AssignmentState::NotStarted => {
                    format!("not started; starts {}", when(w.start, now))
                }
                AssignmentState::Ended => format!(
                    "ended {}",
                    w.end.map_or_else(|| "-".to_owned(), |e| when(e, now))
                ),
                AssignmentState::Effective => "yes".to_owned(),
            },
        }
    }

    /// Why this assignment does not let me activate `role` of `group` at `at`; `None` when it does.
    pub fn why_not(
        &self,
        group: &str,
        role: Role,
        at: Timestamp,
        now: Timestamp,
    ) -> Option<String> {
        let spec = &self.assignment.spec;
        if spec.group != group {
            return Some(format!(
                "it is for PimGroup {:?}, not {group:?}",
                spec.group
            ));
        }
        if spec.role != role {
            return Some(format!("it is for the {} role, not {role}", spec.role));
        }
        if spec.assignment_type == AssignmentType::Active {
            return Some(format!(
                "it is an Active (standing) assignment, not an Eligible one: while it holds you \
                 have the role without activating (holds now: {})",
                self.state_text(now, now)
            ));
        }
        match self.state_text(at, now).as_str() {
            "yes" => None,
            other => Some(other.to_owned()),
        }
    }
}

/// My assignments, by group, role and name.
pub fn mine<'a>(catalog: &'a Catalog, me: &Me, now: Timestamp) -> Vec<Mine<'a>> {
    let mut out: Vec<Mine<'a>> = catalog
        .assignments
        .iter()
        .filter_map(|(name, a)| {
            let group = catalog.groups.get(&a.spec.group).map(AsRef::as_ref);
            let via = match a.spec.principal.resolve()? {
                Principal::User(u) if me.is_in(group, u) => format!("user:{u}"),
                Principal::Group(g) if me.in_group(g) => format!("group:{g}"),
                _ => return None,
            };
            let denied = a
                .status
                .as_ref()
                .is_some_and(|s| s.phase == Some(AssignmentPhase::Denied));
            let window = if denied {
                Err(
                    "an access review denied it; it grants nothing until its manifest is removed"
                        .to_owned(),
                )
            } else {
                catalog.assignment_window(a, now).map_err(|v| summarize(&v))
            };
            Some(Mine {
                name: name.as_str(),
                assignment: a.as_ref(),
                via,
                window,
                denied,
            })
        })
        .collect();
    out.sort_by(|a, b| {
        let key = |m: &Mine<'_>| (m.assignment.spec.group.clone(), m.assignment.spec.role);
        key(a).cmp(&key(b)).then_with(|| a.name.cmp(b.name))
    });
    out
}

/// The eligibility that covers `at` for `group`/`role`, under any of my names.
pub fn covering_eligibility(
    catalog: &Catalog,
    me: &Me,
    group: &str,
    role: Role,
    at: Timestamp,
    now: Timestamp,
) -> Option<Eligibility> {
    let names = me.names_in(catalog.groups.get(group).map(AsRef::as_ref));
    names.iter().find_map(|name| {
        let found = catalog.eligibilities(name, group, role, now, |g| me.in_group(g));
        covering(&found, at).cloned()
    })
}

/// Eligible assignments of `group`/`role` through directory groups that none of my Kubernetes
/// groups shows, holding at `at`: I may be a member in the directory, which only the operator
/// can tell.
pub fn unconfirmed_group_assignments(
    catalog: &Catalog,
    me: &Me,
    group: &str,
    role: Role,
    at: Timestamp,
    now: Timestamp,
) -> Vec<String> {
    catalog
        .assignment_windows(group, role, now)
        .into_iter()
        .filter(|(_, a, w)| a.spec.assignment_type == AssignmentType::Eligible && w.contains(at))
        .filter_map(|(name, a, _)| match a.spec.principal.resolve()? {
            Principal::Group(g) if !me.in_group(g) => Some(format!("{name} (group:{g})")),
            _ => None,
        })
        .collect()
}

/// The message when I cannot activate: what I hold and why none of it applies.
pub fn not_eligible_message(
    catalog: &Catalog,
    me: &Me,
    group: &str,
    role: Role,
    at: Timestamp,
    now: Timestamp,
) -> String {
    let when_text = if at > now {
        format!("at {}", when(at, now))
    } else {
        "now".to_owned()
    };
    let mut text = format!(
        "you hold no assignment that lets you activate the {role} role of {group:?} {when_text}.\n\
         You are {}.\n",
        me.describe()
    );
    let mine = mine(catalog, me, now);
    if mine.is_empty() {
        text.push_str(
            "You have no EligibleAssignment at all, directly or through one of your Kubernetes \
             groups.\n",
        );
    } else {
        text.push_str("Your assignments, and why none applies:\n");
        let mut table = Table::new(&["ASSIGNMENT", "GROUP", "ROLE", "TYPE", "VIA", "WHY NOT"]);
        for m in &mine {
            let spec = &m.assignment.spec;
            table.row(vec![
                m.name.to_owned(),
                spec.group.clone(),
                spec.role.to_string(),
                m.type_text().to_owned(),
                m.via.clone(),
                m.why_not(group, role, at, now)
                    .unwrap_or_else(|| "applies".to_owned()),
            ]);
        }
        for line in table.render().lines() {
            text.push_str("  ");
            text.push_str(line);
            text.push('\n');
        }
    }
    if !catalog.groups.contains_key(group) {
        let known: Vec<&str> = catalog.groups.keys().map(String::as_str).collect();
        text.push_str(&format!(
            "There is no PimGroup {group:?}; the PimGroups are: {}.\n",
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        ));
    }
    let pim_group = catalog.groups.get(group).map(AsRef::as_ref);
    let mapping = pim_group
        .and_then(|g| g.status.as_ref())
        .and_then(|s| s.username_mapping.as_ref());
    match mapping {
        _ if me.principal_given => {}
        Some(mapping) => {
            let directory = pim_group.map_or("", |g| g.spec.directory.as_str());
            match crate::core::identity::principal_for(mapping, &me.username) {
                Ok(principal) => text.push_str(&format!(
                    "In directory {directory:?} you are {principal:?}: assignments must name that.\n"
                )),
                Err(why) => text.push_str(&format!(
                    "You are nobody in directory {directory:?}: {why}.\n"
                )),
            }
        }
        None => text.push_str(
            "If the operator maps your username to another directory name (say \
             alice@contoso.com), pass it with --principal or PIM_PRINCIPAL.\n",
        ),
    }
    text.push_str(&format!(
        "To get access, ask your platform team for an EligibleAssignment of {group}/{role}; \
         `kubectl pim eligible` shows what you may activate now."
    ));
    text
}
