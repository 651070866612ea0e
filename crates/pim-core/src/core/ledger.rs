//! The grant ledger (DESIGN §5): what the operator itself put into directory groups, and the plan
//! that converges one (PimGroup, role) with it. Pure: the controller reads the entries (PimGrant
//! objects) and the directory's listing, and carries out the plan.
//!
//! The rules:
//! - An entry is *live* while its source (request or assignment, by uid) proves, at `now`, a
//!   grant of the same member in the same role, and the entry was written to the group the
//!   PimGroup points at now. Anything else (source gone, re-created, edited to another
//!   principal, past its end, the PimGroup moved to another group) makes it *dead*.
//! - A member with any entry in the current group is ours: when no live grant explains it, it
//!   is removed whatever `standingAccess` says. A member with no entry is standing access:
//!   `Remove` removes it, `Report` (and `Adopt` until `adoptAfter`) reports it and never
//!   touches it.
//! - A protected member (`protectedMembers`) is never removed, and its dead entries close: it is
//!   no longer ours. Under `protectLastMember`, the removal that would empty a role is held back
//!   (see [`RemovalRules::last_member_kept`]).
//! - Dead entries in another group are revoked there.
//! - An entry is written before the add it justifies, and closed (deleted) only once the
//!   directory confirmed the member gone, or a live entry explains the member.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use sha2::{Digest, Sha256};

use super::membership::{DesiredMembership, Grant, GrantSource, Member, RemovalRules};
use crate::api::common::Role;
use crate::api::pim_grant::GrantSourceKind;
use crate::api::pim_group::StandingAccess;

/// Where a grant was written: a directory connection and the directory's id of the group.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupTarget {
    pub directory: String,
    pub group_id: String,
}

impl std::fmt::Display for GroupTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.directory, self.group_id)
    }
}

/// The object behind a grant, by uid: a re-created object of the same name is another source.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourceId {
    pub kind: GrantSourceKind,
    pub name: String,
    pub uid: String,
}

impl SourceId {
    pub fn of(source: &GrantSource, uid: &str) -> SourceId {
        let (kind, name) = match source {
            GrantSource::Request(n) => (GrantSourceKind::ActivationRequest, n),
            GrantSource::Assignment(n) => (GrantSourceKind::EligibleAssignment, n),
        };
        SourceId {
            kind,
            name: name.clone(),
            uid: uid.to_owned(),
        }
    }
}

/// One ledger entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The PimGrant object's name.
    pub name: String,
    pub group: String,
    pub target: GroupTarget,
    pub role: Role,
    pub member: Member,
    pub source: SourceId,
    pub start: Timestamp,
    pub end: Option<Timestamp>,
}

/// A grant proven at `now` from signed inputs, with its source's uid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvenGrant {
    pub grant: Grant,
    pub uid: String,
}

impl ProvenGrant {
    pub fn source(&self) -> SourceId {
        SourceId::of(&self.grant.source, &self.uid)
    }
}

/// `user:alice` / `group:ops`, as entries store members.
pub fn member_text(member: &Member) -> String {
    member.to_string()
}

/// The inverse of [`member_text`]; `None` for anything else.
pub fn parse_member(text: &str) -> Option<Member> {
    if let Some(user) = text.strip_prefix("user:") {
        return (!user.is_empty()).then(|| Member::User(user.to_owned()));
    }
    let group = text.strip_prefix("group:")?;
    (!group.is_empty()).then(|| Member::Group(group.to_owned()))
}

/// The PimGrant name of an entry: the PimGroup's name (cut to leave room) and a hash of
/// everything that identifies the entry, so names never collide and a repeated write of the
/// same intent is the same object (409 AlreadyExists, not a second entry).
pub fn entry_name(
    group: &str,
    target: &GroupTarget,
    role: Role,
    member: &Member,
    source: &SourceId,
) -> String {
    let mut hash = Sha256::new();
    for part in [
        target.directory.as_str(),
        target.group_id.as_str(),
        role.as_str(),
        &member_text(member),
        source.kind.as_str(),
        &source.uid,
    ] {
        hash.update(part.as_bytes());
        hash.update([0u8]);
    }
    let digest = hash.finalize();
    let hex: String = digest.iter().take(10).map(|b| format!("{b:02x}")).collect();
    // A PimGroup name is a DNS subdomain of at most 253 characters; leave room for the suffix.
    let prefix: String = group
        .chars()
        .take(253 - 1 - role.as_str().len() - 1 - 20)
        .collect();
    let prefix = prefix.trim_end_matches(['-', '.']);
    format!("{prefix}-{}-{hex}", role.as_str())
}

/// Whether `entry` is live at `now`: written to `current` and still proven by its source.
pub fn is_live(
    entry: &Entry,
    current: Option<&GroupTarget>,
    grants: &[ProvenGrant],
    now: Timestamp,
) -> bool {
    current == Some(&entry.target)
        && grants.iter().any(|g| {
            g.uid == entry.source.uid
                && g.grant.member == entry.member
                && g.source().kind == entry.source.kind
                && g.grant.covers(now)
        })
}

/// What one pass over one (PimGroup, role) does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerPlan {
    /// Entries to write before any add. A member is added only once all its entries exist.
    pub record: Vec<Entry>,
    /// Members to add to the current group.
    pub add: Vec<Member>,
    /// Members to remove from the current group: ours with no live grant, or standing access
    /// under `Remove`.
    pub remove: Vec<Member>,
    /// Standing members under `Report` (or `Adopt`): listed, never touched.
    pub unexplained: Vec<Member>,
    /// Present members no grant explains that the PimGroup protects: kept, and no longer ours.
    pub protected: Vec<Member>,
    /// The role's last member, kept under `protectLastMember` although it would go. Its
    /// entries stay open, so it goes once another member is in.
    pub kept_last: Option<Member>,
    /// Entries to close now: their member is absent, or a live grant explains it.
    pub close: Vec<Entry>,
    /// Entries to close once the removal of their member is confirmed.
    pub close_on_removal: BTreeMap<Member, Vec<Entry>>,
    /// Dead entries whose member another grant still wants: closed once that grant's own entry
    /// is written, so the member is never ours-by-no-entry in between.
    pub close_after_record: Vec<Entry>,
    /// Dead entries written to another group (the PimGroup was pointed elsewhere): removed
    /// there, then closed.
    pub elsewhere: Vec<Entry>,
}

impl LedgerPlan {
    pub fn writes(&self) -> usize {
        self.add.len() + self.remove.len() + self.elsewhere.len()
    }
}

/// Plans one (PimGroup, role). `entries` are this PimGroup's entries for `role`, in any group;
/// `current` is where the PimGroup points now; `actual` is the current group's listing for
/// `role`. `adopt` are present members that grants made before the ledger existed put there:
/// they are recorded as ours, once, on the first pass after an upgrade.
#[allow(clippy::too_many_arguments)]
pub fn plan(
    group: &str,
    role: Role,
    desired: &DesiredMembership,
    grants: &[ProvenGrant],
    entries: &[Entry],
    current: &GroupTarget,
    actual: &BTreeSet<Member>,
    rules: &RemovalRules,
    adopt: &BTreeSet<Member>,
    now: Timestamp,
) -> LedgerPlan {
    let standing = rules.standing;
    let mut out = LedgerPlan::default();
    let entries: Vec<&Entry> = entries.iter().filter(|e| e.role == role).collect();
    let ours: BTreeSet<&Member> = entries
        .iter()
        .filter(|e| &e.target == current)
        .map(|e| &e.member)
        .collect();

    for member in actual.iter().filter(|m| !desired.contains(m)) {
        if rules.is_protected(member) {
            out.protected.push(member.clone());
        } else if ours.contains(member) || standing == StandingAccess::Remove {
            out.remove.push(member.clone());
        } else {
            out.unexplained.push(member.clone());
        }
    }
    out.kept_last = rules.last_member_kept(actual, &out.remove, |m| ours.contains(m));
    if let Some(kept) = &out.kept_last {
        out.remove.retain(|m| m != kept);
    }

    let recorded: BTreeSet<(&Member, &str)> = entries
        .iter()
        .filter(|e| &e.target == current)
        .map(|e| (&e.member, e.source.uid.as_str()))
        .collect();
    for member in desired.members.keys() {
        let present = actual.contains(member);
        if !present {
            out.add.push(member.clone());
        }
        // A present member with no entry under Report is standing access: we did not grant
        // it, so we never take it away (and record nothing that would make it ours).
        let claim = !present
            || ours.contains(member)
            || standing == StandingAccess::Remove
            || adopt.contains(member);
        if !claim {
            continue;
        }
        for proven in grants
            .iter()
            .filter(|g| &g.grant.member == member && g.grant.covers(now))
        {
            if recorded.contains(&(member, proven.uid.as_str())) {
                continue;
            }
            let source = proven.source();
            out.record.push(Entry {
                name: entry_name(group, current, role, member, &source),
                group: group.to_owned(),
                target: current.clone(),
                role,
                member: member.clone(),
                source,
                start: proven.grant.start,
                end: proven.grant.end,
            });
        }
    }

    let live_members: BTreeSet<&Member> = entries
        .iter()
        .filter(|e| is_live(e, Some(current), grants, now))
        .map(|e| &e.member)
        .collect();
    for entry in &entries {
        if is_live(entry, Some(current), grants, now) {
            continue;
        }
        if &entry.target != current {
            out.elsewhere.push((*entry).clone());
        } else if desired.contains(&entry.member) && !live_members.contains(&entry.member) {
            out.close_after_record.push((*entry).clone());
        } else if desired.contains(&entry.member)
            || !actual.contains(&entry.member)
            || rules.is_protected(&entry.member)
        {
            // Absent, explained by a live grant, or protected (no longer ours to take away).
            out.close.push((*entry).clone());
        } else {
            out.close_on_removal
                .entry(entry.member.clone())
                .or_default()
                .push((*entry).clone());
        }
    }
    out
}

/// When the revocation of a dead `entry` fell due, if the entry says: the end of its window once
/// that has passed. Otherwise the caller knows better (the source was deleted or shortened).
pub fn due_from_window(entry: &Entry, now: Timestamp) -> Option<Timestamp> {
    entry.end.filter(|end| *end <= now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::membership::desired_membership;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn user(n: &str) -> Member {
        Member::User(n.into())
    }

    fn target(id: &str) -> GroupTarget {
        GroupTarget {
            directory: "ldap".into(),
            group_id: id.into(),
        }
    }

    fn proven(member: &str, source: &str, uid: &str, end: &str) -> ProvenGrant {
        ProvenGrant {
            grant: Grant {
                member: user(member),
                start: ts("2026-01-01T10:00:00Z"),
                end: Some(ts(end)),
                source: GrantSource::Request(source.into()),
            },
            uid: uid.into(),
        }
    }

    fn entry_for(g: &ProvenGrant, at: &GroupTarget) -> Entry {
        let source = g.source();
        Entry {
            name: entry_name("g", at, Role::Member, &g.grant.member, &source),
            group: "g".into(),
            target: at.clone(),
            role: Role::Member,
            member: g.grant.member.clone(),
            source,
            start: g.grant.start,
            end: g.grant.end,
        }
    }

    const NOW: &str = "2026-01-01T10:30:00Z";

    fn run(
        grants: &[ProvenGrant],
        entries: &[Entry],
        actual: &[&str],
        standing: impl Into<RemovalRules>,
    ) -> LedgerPlan {
        let now = ts(NOW);
        let live: Vec<Grant> = grants.iter().map(|g| g.grant.clone()).collect();
        let desired = desired_membership(&live, now);
        let actual: BTreeSet<Member> = actual.iter().map(|m| user(m)).collect();
        plan(
            "g",
            Role::Member,
            &desired,
            grants,
            entries,
            &target("cn=g"),
            &actual,
            &standing.into(),
            &BTreeSet::new(),
            now,
        )
    }

    #[test]
    fn an_add_is_recorded_first() {
        let g = proven("alice", "r1", "u1", "2026-01-01T11:00:00Z");
        let p = run(std::slice::from_ref(&g), &[], &[], StandingAccess::Report);
        assert_eq!(p.add, vec![user("alice")]);
        assert_eq!(p.record, vec![entry_for(&g, &target("cn=g"))]);
    }

    // Issue 14 finding 1: a grant whose source is gone is ours, and goes in Report mode too.
    #[test]
    fn an_entry_whose_source_is_gone_is_revoked_in_report_mode() {
        let g = proven("alice", "r1", "u1", "2026-01-01T11:00:00Z");
        let e = entry_for(&g, &target("cn=g"));
        let p = run(
            &[],
            std::slice::from_ref(&e),
            &["alice"],
            StandingAccess::Report,
        );
        assert_eq!(p.remove, vec![user("alice")]);
        assert!(p.unexplained.is_empty());
        assert_eq!(p.close_on_removal[&user("alice")], vec![e]);
    }

    // Issue 14 finding 1: a source re-created under the same name (another uid) proves nothing
    // for the old entry.
    #[test]
    fn a_recreated_source_does_not_keep_the_old_entry_alive() {
        let old = proven("alice", "r1", "u1", "2026-01-01T11:00:00Z");
        let new = proven("alice", "r1", "u2", "2026-01-01T11:00:00Z");
        let e = entry_for(&old, &target("cn=g"));
        let p = run(
            std::slice::from_ref(&new),
            std::slice::from_ref(&e),
            &["alice"],
            StandingAccess::Report,
        );
        assert!(p.remove.is_empty(), "still desired through the new source");
        // Closed only once the new source's entry is written (Report mode would otherwise see
        // a member with no entry: standing access).
        assert!(p.close.is_empty());
        assert_eq!(p.close_after_record, vec![e]);
        assert_eq!(p.record, vec![entry_for(&new, &target("cn=g"))]);
    }

    // Issue 14 finding 2: a standing member who activated through PIM stays when it ends.
    #[test]
    fn report_mode_never_claims_a_standing_member() {
        let g = proven("bob", "r1", "u1", "2026-01-01T11:00:00Z");
        let p = run(&[g], &[], &["bob"], StandingAccess::Report);
        assert!(p.record.is_empty() && p.add.is_empty() && p.remove.is_empty());
        let later = run(&[], &[], &["bob"], StandingAccess::Report);
        assert_eq!(later.unexplained, vec![user("bob")]);
        assert!(later.remove.is_empty());
    }

    #[test]
    fn remove_mode_claims_what_it_keeps_and_removes_standing_access() {
        let g = proven("bob", "r1", "u1", "2026-01-01T11:00:00Z");
        let p = run(
            std::slice::from_ref(&g),
            &[],
            &["bob", "carol"],
            StandingAccess::Remove,
        );
        assert_eq!(p.record, vec![entry_for(&g, &target("cn=g"))]);
        assert_eq!(p.remove, vec![user("carol")]);
    }

    fn rules(standing: StandingAccess, protected: &[&str], keep_last_member: bool) -> RemovalRules {
        RemovalRules {
            protected: protected.iter().map(|m| user(m)).collect(),
            keep_last_member,
            ..standing.into()
        }
    }

    // Issue 20: a protected member stays whatever standingAccess says, and what we granted it
    // stops being ours once its grant ends.
    #[test]
    fn a_protected_member_is_never_removed_and_its_ended_entry_closes() {
        let ended = proven("alice", "r1", "u1", "2026-01-01T10:20:00Z");
        let e = entry_for(&ended, &target("cn=g"));
        let p = run(
            &[ended],
            std::slice::from_ref(&e),
            &["alice", "breakglass", "carol"],
            rules(StandingAccess::Remove, &["alice", "breakglass"], false),
        );
        assert_eq!(p.remove, vec![user("carol")]);
        assert_eq!(p.protected, vec![user("alice"), user("breakglass")]);
        assert_eq!(p.close, vec![e]);
        assert!(p.close_on_removal.is_empty() && p.unexplained.is_empty());
        // Not protected: the same entry waits for the removal.
        let p = run(
            &[proven("alice", "r1", "u1", "2026-01-01T10:20:00Z")],
            &[entry_for(
                &proven("alice", "r1", "u1", "2026-01-01T10:20:00Z"),
                &target("cn=g"),
            )],
            &["alice"],
            rules(StandingAccess::Remove, &[], false),
        );
        assert_eq!(p.remove, vec![user("alice")]);
        assert!(p.close.is_empty());
    }

    // Issue 20: the removal that would empty a protectLastMember group is held back; a standing
    // member is kept before one we granted, and ours keeps its entry so it goes later.
    #[test]
    fn the_last_member_is_kept_and_a_standing_one_first() {
        let ended = proven("alice", "r1", "u1", "2026-01-01T10:20:00Z");
        let e = entry_for(&ended, &target("cn=g"));
        let p = run(
            std::slice::from_ref(&ended),
            std::slice::from_ref(&e),
            &["alice", "zed"],
            rules(StandingAccess::Remove, &[], true),
        );
        assert_eq!(p.kept_last, Some(user("zed")));
        assert_eq!(p.remove, vec![user("alice")]);
        let p = run(
            std::slice::from_ref(&ended),
            std::slice::from_ref(&e),
            &["alice"],
            rules(StandingAccess::Report, &[], true),
        );
        assert_eq!(p.kept_last, Some(user("alice")));
        assert!(p.remove.is_empty() && p.close.is_empty());
        assert_eq!(
            p.close_on_removal.get(&user("alice")),
            Some(&vec![e.clone()])
        );
        // Another member is in (a live grant): alice goes.
        let live = proven("bob", "r2", "u2", "2026-01-01T11:00:00Z");
        let p = run(
            &[ended, live.clone()],
            &[e, entry_for(&live, &target("cn=g"))],
            &["alice", "bob"],
            rules(StandingAccess::Report, &[], true),
        );
        assert_eq!((p.kept_last, p.remove), (None, vec![user("alice")]));
        // A protected member present counts as another member.
        let p = run(
            &[],
            &[],
            &["alice", "breakglass"],
            rules(StandingAccess::Remove, &["breakglass"], true),
        );
        assert_eq!((p.kept_last, p.remove), (None, vec![user("alice")]));
        // Without protectLastMember the group empties.
        let p = run(
            &[],
            &[],
            &["alice"],
            rules(StandingAccess::Remove, &[], false),
        );
        assert_eq!((p.kept_last, p.remove), (None, vec![user("alice")]));
    }

    // Issue 14 finding 3: entries written to the group the PimGroup pointed at before are
    // revoked there.
    #[test]
    fn entries_in_the_old_group_are_revoked_there() {
        let g = proven("alice", "r1", "u1", "2026-01-01T11:00:00Z");
        let old = entry_for(&g, &target("cn=old"));
        let p = run(
            std::slice::from_ref(&g),
            std::slice::from_ref(&old),
            &[],
            StandingAccess::Report,
        );
        assert_eq!(p.elsewhere, vec![old]);
        assert_eq!(p.add, vec![user("alice")]);
        assert_eq!(p.record, vec![entry_for(&g, &target("cn=g"))]);
    }

    #[test]
    fn an_ended_entry_closes_when_the_member_is_already_gone() {
        let g = proven("alice", "r1", "u1", "2026-01-01T10:20:00Z");
        let e = entry_for(&g, &target("cn=g"));
        let p = run(&[g], std::slice::from_ref(&e), &[], StandingAccess::Remove);
        assert_eq!(p.close, vec![e]);
        assert!(p.remove.is_empty());
    }

    #[test]
    fn a_second_grant_of_a_member_we_added_is_recorded_too() {
        let first = proven("alice", "r1", "u1", "2026-01-01T11:00:00Z");
        let second = proven("alice", "r2", "u2", "2026-01-01T12:00:00Z");
        let e = entry_for(&first, &target("cn=g"));
        let p = run(
            &[first, second.clone()],
            &[e],
            &["alice"],
            StandingAccess::Report,
        );
        assert_eq!(p.record, vec![entry_for(&second, &target("cn=g"))]);
    }

    #[test]
    fn names_are_stable_distinct_and_valid() {
        let g = proven("alice", "r1", "u1", "2026-01-01T11:00:00Z");
        let a = entry_for(&g, &target("cn=g"));
        assert_eq!(a.name, entry_for(&g, &target("cn=g")).name);
        assert_ne!(a.name, entry_for(&g, &target("cn=h")).name);
        let long = "x".repeat(253);
        let name = entry_name(&long, &target("cn=g"), Role::Owner, &user("a"), &g.source());
        assert!(name.len() <= 253, "{}", name.len());
        assert!(parse_member("user:alice") == Some(user("alice")));
        assert_eq!(parse_member("nobody"), None);
    }
}
