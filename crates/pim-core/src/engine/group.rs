//! One pass over one (PimGroup, role): the desired members at `now` and the changes that make
//! the directory's membership equal to them.

use std::collections::BTreeSet;

use jiff::Timestamp;

use super::catalog::{Catalog, Proof};
use crate::api::common::Role;
use crate::api::pim_group::StandingAccess;
use crate::core::ledger::{Entry, GroupTarget, LedgerPlan, ProvenGrant, plan as ledger_plan};
use crate::core::membership::{
    DesiredMembership, Member, MembershipPlan, RemovalRules, desired_membership, plan,
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
    let rules = rules_of(catalog, group, now);
    let grants = catalog.grants(group, role, now, proof);
    let desired = with_rules_change(desired_membership(&grants, now), &rules);
    let plan = plan(&desired, actual, managed, &rules);
    GroupOutcome { desired, plan }
}

/// The PimGroup's removal rules at `now`; a PimGroup that is gone protects nothing.
pub fn rules_of(catalog: &Catalog, group: &str, now: Timestamp) -> RemovalRules {
    catalog.groups.get(group).map_or_else(
        || StandingAccess::Remove.into(),
        |g| RemovalRules::of(&g.spec, now),
    )
}

/// The desired set changes by time alone, and so do the rules (adoption ends): the next pass is
/// due at whichever comes first.
fn with_rules_change(mut desired: DesiredMembership, rules: &RemovalRules) -> DesiredMembership {
    desired.next_change = match (desired.next_change, rules.next_change) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    desired
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
    let rules = rules_of(catalog, group, now);
    let desired = with_rules_change(desired_membership(&live, now), &rules);
    let plan = ledger_plan(
        group, role, &desired, &grants, entries, current, actual, &rules, adopt, now,
    );
    LedgerOutcome {
        desired,
        grants,
        plan,
    }
}
