//! `protectLastMember` at admission (issue 20): a change that ends the last grant of a role of
//! such a PimGroup is refused, as Entra refuses to remove the last Global Administrator. The
//! controller keeps the last member whatever happens (`core::membership::RemovalRules`); this
//! says so before the change is made, to the person making it.

use jiff::Timestamp;

use crate::api::common::Role;
use crate::engine::{Catalog, Proof};

/// Why the change from `before` to `after` (the same catalog with one request or assignment
/// changed or gone) may not be made: it leaves `group`'s `role` without any grant while the
/// PimGroup protects its last member and names nobody else who stays.
pub fn last_grant_refusal(
    before: &Catalog,
    after: &Catalog,
    group: &str,
    role: Role,
    now: Timestamp,
    proof: &Proof<'_>,
) -> Option<String> {
    let pim_group = before.groups.get(group)?;
    if !pim_group.spec.protect_last_member || !pim_group.spec.protected_members.is_empty() {
        return None;
    }
    // Members pim-operator reports as standing stay after the change.
    let status = pim_group.status.as_ref();
    let standing = status.is_some_and(|s| match role {
        Role::Member => !s.unexplained_members.is_empty(),
        Role::Owner => !s.unexplained_owners.is_empty(),
    });
    let others = after.grants(group, role, now, proof);
    if standing || others.iter().any(|g| g.covers(now)) {
        return None;
    }
    let mut ending: Vec<String> = before
        .grants(group, role, now, proof)
        .iter()
        .filter(|g| g.covers(now))
        .map(|g| g.member.to_string())
        .collect();
    ending.sort();
    ending.dedup();
    if ending.is_empty() {
        return None;
    }
    Some(format!(
        "PimGroup {group:?} sets protectLastMember, and this ends the last grant of its {role} role (held by {}): the group would have no {role} left. Give someone else access first (an Active EligibleAssignment or an approved request), or name a standing {role} in spec.protectedMembers; pim-operator would keep the last {role} in the group anyway",
        ending.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::common::PrincipalRef;
    use crate::api::eligible_assignment::{AssignmentType, EligibleAssignmentSpec, Schedule};
    use crate::api::pim_group::{GroupRoles, PimGroupSpec, PimGroupStatus, RoleSettings};
    use crate::api::{AccessPolicy, EligibleAssignment, PimGroup};
    use crate::engine::TrustAsWritten;

    fn now() -> Timestamp {
        "2026-01-01T10:00:00Z".parse().unwrap()
    }

    fn active(name: &str, user: &str) -> EligibleAssignment {
        EligibleAssignment::new(
            name,
            EligibleAssignmentSpec {
                group: "g".into(),
                principal: PrincipalRef::user(user),
                assignment_type: AssignmentType::Active,
                justification: Some("on call".into()),
                schedule: Schedule {
                    start: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                        "2026-01-01T00:00:00Z".parse().unwrap(),
                    )),
                    duration: Some("30d".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
    }

    fn catalog(protect: bool, assignments: &[EligibleAssignment]) -> Catalog {
        let mut c = Catalog::default();
        c.insert_policy(AccessPolicy::new("p", Default::default()));
        c.insert_group(PimGroup::new(
            "g",
            PimGroupSpec {
                roles: GroupRoles {
                    member: RoleSettings { policy: "p".into() },
                    owner: None,
                },
                protect_last_member: protect,
                ..Default::default()
            },
        ));
        for a in assignments {
            c.insert_assignment(a.clone());
        }
        c
    }

    #[test]
    fn ending_the_last_grant_is_refused_only_when_nobody_else_stays() {
        let proof = Proof::stamped(&TrustAsWritten);
        let both = catalog(true, &[active("a", "alice"), active("b", "bob")]);
        let alice_only = catalog(true, &[active("a", "alice")]);
        let nobody = catalog(true, &[]);
        // Bob's goes, alice's stays.
        assert_eq!(
            last_grant_refusal(&both, &alice_only, "g", Role::Member, now(), &proof),
            None
        );
        // Alice's was the last.
        let refusal =
            last_grant_refusal(&alice_only, &nobody, "g", Role::Member, now(), &proof).unwrap();
        assert!(
            refusal.contains("protectLastMember") && refusal.contains("user:alice"),
            "{refusal}"
        );
        // Not protected: no refusal.
        assert_eq!(
            last_grant_refusal(
                &catalog(false, &[active("a", "alice")]),
                &catalog(false, &[]),
                "g",
                Role::Member,
                now(),
                &proof
            ),
            None
        );
        // A standing member the operator lists, or a protected member, stays.
        let mut listed = alice_only.clone();
        let mut group = (*listed.groups["g"]).clone();
        group.status = Some(PimGroupStatus {
            unexplained_members: vec!["user:carol".into()],
            ..Default::default()
        });
        listed.insert_group(group.clone());
        assert_eq!(
            last_grant_refusal(&listed, &nobody, "g", Role::Member, now(), &proof),
            None
        );
        group.status = None;
        group.spec.protected_members = vec![PrincipalRef::user("breakglass")];
        listed.insert_group(group);
        assert_eq!(
            last_grant_refusal(&listed, &nobody, "g", Role::Member, now(), &proof),
            None
        );
    }
}
