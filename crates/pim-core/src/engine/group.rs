//! One pass over one (PimGroup, role): the desired members at `now` and the changes that make
//! the directory's membership equal to them.

use std::collections::BTreeSet;

use jiff::Timestamp;

use super::catalog::{Catalog, Proof};
use crate::api::common::Role;
use crate::api::pim_group::StandingAccess;
use crate::core::ledger::{Entry, GroupTarget, LedgerPlan, ProvenGrant, plan as ledger_plan};
use crate::core::membership::{
    DesiredMembership, Member, MembershipPlan, desired_membership, plan,
};

#[derive(Debug, Clone, PartialEq)]
pub struct GroupOutcome {
    pub desired: DesiredMembership,
    pub plan: MembershipPlan,
}

/// Compares the desired membership of `group`/`role` with the directory's `actual` members;
/// `managed` are those the operator granted itself (`simulate` keeps them in memory; the
/// operator keeps a ledger, see [`plan_with_ledger`]).
pub fn reconcile_group(
    catalog: &Catalog,
    group: &str,
    role: Role,
    actual: &BTreeSet<Member>,
    managed: &BTreeSet<Member>,
    now: Timestamp,
    proof: &Proof<'_>,
) -> GroupOutcome {
    let standing = standing_of(catalog, group);
    let grants = catalog.grants(group, role, now, proof);
    let desired = desired_membership(&grants, now);
    let plan = plan(&desired, actual, managed, standing);
    GroupOutcome { desired, plan }
}

fn standing_of(catalog: &Catalog, group: &str) -> StandingAccess {
    catalog
        .groups
        .get(group)
        .map_or(StandingAccess::Remove, |g| g.spec.standing_access)
}

/// One pass over one (PimGroup, role) with the grant ledger: the desired members, the proven
/// grants behind them, and the plan (see `core::ledger`).
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerOutcome {
    pub desired: DesiredMembership,
    pub grants: Vec<ProvenGrant>,
    pub plan: LedgerPlan,
}

/// Plans `group`/`role` against the ledger's `entries` (this PimGroup's, any role) and the
/// `actual` members of the `current` directory group, given the role's proven `grants`
/// ([`Catalog::proven_grants`]).
#[allow(clippy::too_many_arguments)]
pub fn plan_with_ledger(
    catalog: &Catalog,
    group: &str,
    role: Role,
    entries: &[Entry],
    current: &GroupTarget,
    actual: &BTreeSet<Member>,
    now: Timestamp,
    grants: Vec<ProvenGrant>,
    adopt: &BTreeSet<Member>,
) -> LedgerOutcome {
    let live: Vec<_> = grants.iter().map(|g| g.grant.clone()).collect();
    let desired = desired_membership(&live, now);
    let plan = ledger_plan(
        group,
        role,
        &desired,
        &grants,
        entries,
        current,
        actual,
        standing_of(catalog, group),
        adopt,
        now,
    );
    LedgerOutcome {
        desired,
        grants,
        plan,
    }
}
