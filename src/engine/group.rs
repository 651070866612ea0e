//! One pass over one (PimGroup, role): the desired members at `now` and the changes that make
//! the directory's membership equal to them.

use std::collections::BTreeSet;

use jiff::Timestamp;

use super::catalog::Catalog;
use crate::api::common::Role;
use crate::api::pim_group::StandingAccess;
use crate::core::membership::{
    DesiredMembership, Member, MembershipPlan, desired_membership, plan,
};

#[derive(Debug, Clone, PartialEq)]
pub struct GroupOutcome {
    pub desired: DesiredMembership,
    pub plan: MembershipPlan,
}

/// Compares the desired membership of `group`/`role` with the directory's `actual` members;
/// `managed` are those the operator granted itself.
pub fn reconcile_group(
    catalog: &Catalog,
    group: &str,
    role: Role,
    actual: &BTreeSet<Member>,
    managed: &BTreeSet<Member>,
    now: Timestamp,
) -> GroupOutcome {
    let standing = catalog
        .groups
        .get(group)
        .map_or(StandingAccess::Remove, |g| g.spec.standing_access);
    let grants = catalog.grants(group, role, now);
    let desired = desired_membership(&grants, now);
    let plan = plan(&desired, actual, managed, standing);
    GroupOutcome { desired, plan }
}
