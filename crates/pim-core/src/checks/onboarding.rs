//! `standingAccess: Remove` on a group the operator has not yet shown anyone (issue 20): the
//! first pass under `Remove` empties a group of everyone no grant explains, break-glass
//! accounts and owners included. "Seen" means the operator has passed over the group and
//! reported its members: the object as the cluster has it (`validate --observed`, or the stored
//! object in the webhook) has `status.groupId`, and was not under `Remove` then.

use crate::api::PimGroup;
use crate::api::pim_group::StandingAccess;

use super::finding::{Finding, rules};

/// Members named in a finding before "and N more".
const NAMED: usize = 10;

/// Warnings for `group` (as written) given `observed`, the same PimGroup as the cluster has it
/// (`None`: not in the cluster, or not known).
pub fn removal_findings(group: &PimGroup, observed: Option<&PimGroup>) -> Vec<Finding> {
    if group.spec.standing_access != StandingAccess::Remove {
        return Vec::new();
    }
    let status = observed
        .and_then(|o| o.status.as_ref())
        .filter(|s| s.group_id.is_some());
    let Some((observed, status)) = observed.zip(status) else {
        return vec![Finding::new(
            rules::REMOVE_UNSEEN_GROUP,
            "spec.standingAccess",
            "standingAccess: Remove on a group pim-operator has never reported: its first pass removes every member no grant explains, break-glass accounts and owners included",
        )];
    };
    if observed.spec.standing_access == StandingAccess::Remove {
        return Vec::new();
    }
    let listed: Vec<&String> = status
        .unexplained_members
        .iter()
        .chain(&status.unexplained_owners)
        .collect();
    if listed.is_empty() {
        return Vec::new();
    }
    let mut named: Vec<String> = listed.iter().take(NAMED).map(|m| m.to_string()).collect();
    if listed.len() > NAMED {
        named.push(format!("and {} more", listed.len() - NAMED));
    }
    vec![Finding::new(
        rules::REMOVE_DROPS_MEMBERS,
        "spec.standingAccess",
        format!(
            "switching to standingAccess: Remove removes the {} member(s) pim-operator lists in status as explained by no grant: {}",
            listed.len(),
            named.join(", ")
        ),
    )]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::pim_group::{PimGroupSpec, PimGroupStatus};

    fn group(standing: StandingAccess, status: Option<PimGroupStatus>) -> PimGroup {
        let mut g = PimGroup::new(
            "team",
            PimGroupSpec {
                standing_access: standing,
                ..Default::default()
            },
        );
        g.status = status;
        g
    }

    fn seen(unexplained: &[&str]) -> Option<PimGroupStatus> {
        Some(PimGroupStatus {
            group_id: Some("cn=team".into()),
            unexplained_members: unexplained.iter().map(|m| m.to_string()).collect(),
            ..Default::default()
        })
    }

    fn ids(findings: &[Finding]) -> Vec<&str> {
        findings.iter().map(|f| f.rule).collect()
    }

    #[test]
    fn remove_warns_until_the_group_was_seen_and_names_who_goes() {
        let remove = group(StandingAccess::Remove, None);
        assert_eq!(
            ids(&removal_findings(&remove, None)),
            ["remove-unseen-group"]
        );
        // In the cluster, but never passed over (no groupId yet).
        let unresolved = group(StandingAccess::Adopt, Some(PimGroupStatus::default()));
        assert_eq!(
            ids(&removal_findings(&remove, Some(&unresolved))),
            ["remove-unseen-group"]
        );
        // Seen under Adopt with nobody unexplained: nothing to say.
        let adopted = group(StandingAccess::Adopt, seen(&[]));
        assert!(removal_findings(&remove, Some(&adopted)).is_empty());
        // Seen with members listed: each is named.
        let listed = group(StandingAccess::Adopt, seen(&["user:bob", "group:ops"]));
        let findings = removal_findings(&remove, Some(&listed));
        assert_eq!(ids(&findings), ["remove-drops-members"]);
        assert!(
            findings[0].message.contains("2 member(s)")
                && findings[0].message.contains("user:bob, group:ops"),
            "{}",
            findings[0].message
        );
        // Already under Remove in the cluster: no change.
        let removing = group(StandingAccess::Remove, seen(&[]));
        assert!(removal_findings(&remove, Some(&removing)).is_empty());
        // Not Remove: nothing.
        assert!(removal_findings(&group(StandingAccess::Adopt, None), None).is_empty());
    }
}
