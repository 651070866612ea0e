//! PimGroup reconciler: makes each role's directory membership equal to its desired set
//! (DESIGN §5), removals first, and reports Ready and InSync.

use std::collections::BTreeSet;
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::core::Resource;
use kube::runtime::controller::Action;

use super::context::{Context, back_off, timed};
use super::error::Error;
use super::lenient::Lenient;
use super::writes::{
    add_finalizer, apply_status, has_finalizer, remove_finalizer, report_malformed,
};
use crate::api::PimGroup;
use crate::api::common::Role;
use crate::api::conditions::types;
use crate::api::eligible_assignment::AssignmentType;
use crate::api::pim_group::PimGroupStatus;
use crate::core::lifecycle::{ConditionState, ConditionStatus};
use crate::core::membership::{Member, MembershipPlan};
use crate::core::status::merge_conditions;
use crate::directory::{Directory, DirectoryError, GroupId};
use crate::engine::{Catalog, reconcile_group};

pub const KIND: &str = "PimGroup";
const UNEXPLAINED_MAX: usize = 100;

mod reasons {
    pub const GROUP_RESOLVED: &str = "GroupResolved";
    pub const DIRECTORY_NOT_CONFIGURED: &str = "DirectoryNotConfigured";
    pub const DIRECTORY_ERROR: &str = "DirectoryError";
    pub const CONVERGED: &str = "Converged";
    pub const UNEXPLAINED_MEMBERS: &str = "UnexplainedMembers";
    pub const CONVERGING: &str = "Converging";
}

pub async fn reconcile(object: Arc<Lenient<PimGroup>>, ctx: Arc<Context>) -> Result<Action, Error> {
    timed(KIND, &ctx, reconcile_group_object(&object, &ctx)).await
}

pub fn error_policy(_object: Arc<Lenient<PimGroup>>, error: &Error, ctx: Arc<Context>) -> Action {
    back_off(KIND, error, &ctx)
}

fn roles_of(group: &PimGroup) -> Vec<Role> {
    let mut roles = vec![Role::Member];
    if group.spec.roles.owner.is_some() {
        roles.push(Role::Owner);
    }
    roles
}

/// Members the operator itself may have granted: principals of our requests for the role, in
/// any phase, and the members of Active-type assignments. `standingAccess: Report` removes only
/// these.
fn managed_members(catalog: &Catalog, group: &str, role: Role) -> BTreeSet<Member> {
    let requests = catalog
        .requests
        .values()
        .filter(|r| r.spec.group == group && r.spec.role() == role)
        .filter_map(|r| r.spec.principal.clone().map(Member::User));
    let assignments = catalog
        .assignments
        .values()
        .filter(|a| {
            a.spec.group == group
                && a.spec.role == role
                && a.spec.assignment_type == AssignmentType::Active
        })
        .filter_map(|a| match a.spec.principal.resolve()? {
            crate::api::Principal::User(u) => Some(Member::User(u.to_owned())),
            crate::api::Principal::Group(g) => Some(Member::Group(g.to_owned())),
        });
    requests.chain(assignments).collect()
}

/// What converging one role did.
struct RoleResult {
    next_change: Option<Timestamp>,
    active: usize,
    unexplained: Vec<Member>,
    failures: Vec<(Member, DirectoryError)>,
}

async fn reconcile_group_object(
    object: &Lenient<PimGroup>,
    ctx: &Context,
) -> Result<Action, Error> {
    let now = ctx.now();
    let Ok(group) = object.parsed.as_deref() else {
        report_malformed(&ctx.client, object, types::READY, now).await?;
        return Ok(Action::await_change());
    };
    let name = group.meta().name.clone().unwrap_or_default();
    let deleting = group.meta().deletion_timestamp.is_some();
    if deleting && !has_finalizer(group) {
        return Ok(Action::await_change());
    }
    if !deleting && !has_finalizer(group) {
        add_finalizer(&ctx.client, object).await?;
        return Ok(Action::await_change());
    }

    let stored = group.status.clone().unwrap_or_default();
    let Some(directory) = ctx.directories.get(&group.spec.directory) else {
        let known: Vec<&str> = ctx.directories.names().collect();
        let message = format!(
            "no directory connection named {:?} is configured (known: {})",
            group.spec.directory,
            known.join(", ")
        );
        if deleting {
            // Nothing can be removed through a directory we do not know; do not block deletion.
            remove_finalizer(&ctx.client, object).await?;
            return Ok(Action::await_change());
        }
        let status = status_with(
            &stored,
            group,
            None,
            &[ready(false, reasons::DIRECTORY_NOT_CONFIGURED, &message)],
            now,
        );
        write_status(ctx, object, &stored, status).await?;
        return Ok(Action::await_change());
    };
    let group_id = match directory.ensure_group(group).await {
        Ok(id) => id,
        Err(error) => {
            let message = error.to_string();
            let status = status_with(
                &stored,
                group,
                None,
                &[ready(false, reasons::DIRECTORY_ERROR, &message)],
                now,
            );
            write_status(ctx, object, &stored, status).await?;
            return Err(error.into());
        }
    };

    let catalog = ctx.stores.catalog_for(&name);
    let mut results = Vec::new();
    for role in roles_of(group) {
        results.push(
            converge_role(
                ctx,
                &catalog,
                &name,
                directory.as_ref(),
                &group_id,
                role,
                deleting,
                now,
            )
            .await?,
        );
    }
    if deleting {
        if results.iter().all(|r| r.failures.is_empty()) {
            ctx.membership.forget(&name);
            remove_finalizer(&ctx.client, object).await?;
            return Ok(Action::await_change());
        }
        return Ok(Action::requeue(std::time::Duration::from_secs(2)));
    }

    let failures: Vec<_> = results.iter().flat_map(|r| r.failures.iter()).collect();
    let unexplained: Vec<String> = results
        .iter()
        .flat_map(|r| r.unexplained.iter().map(ToString::to_string))
        .collect();
    let in_sync = if let Some((member, error)) = failures.first() {
        ConditionState {
            type_: types::IN_SYNC,
            status: ConditionStatus::False,
            reason: reasons::CONVERGING,
            message: format!(
                "{} change(s) failed and will be retried; first: {member}: {error}",
                failures.len()
            ),
        }
    } else if !unexplained.is_empty() {
        ConditionState {
            type_: types::IN_SYNC,
            status: ConditionStatus::False,
            reason: reasons::UNEXPLAINED_MEMBERS,
            message: format!(
                "{} member(s) are not explained by any grant and are reported, not removed (standingAccess: Report)",
                unexplained.len()
            ),
        }
    } else {
        ConditionState {
            type_: types::IN_SYNC,
            status: ConditionStatus::True,
            reason: reasons::CONVERGED,
            message: "membership equals the desired set".to_owned(),
        }
    };
    let ready = ready(
        true,
        reasons::GROUP_RESOLVED,
        &format!(
            "directory group {} in {:?}",
            group_id.0, group.spec.directory
        ),
    );
    let mut status = status_with(&stored, group, Some(&group_id), &[ready, in_sync], now);
    status.active_principals = Some(count(results.iter().map(|r| r.active).sum()));
    status.eligible_principals = Some(count(eligible_principals(&catalog, &name, now)));
    status.unexplained_members = unexplained.into_iter().take(UNEXPLAINED_MAX).collect();
    write_status(ctx, object, &stored, status).await?;

    if let Some((_, error)) = failures.first() {
        return Err(Error::Directory((*error).clone()));
    }
    let next = results.iter().filter_map(|r| r.next_change).min();
    Ok(Action::requeue(ctx.requeue_for(next)))
}

#[allow(clippy::too_many_arguments)]
async fn converge_role(
    ctx: &Context,
    catalog: &Catalog,
    name: &str,
    directory: &dyn Directory,
    group_id: &GroupId,
    role: Role,
    deleting: bool,
    now: Timestamp,
) -> Result<RoleResult, Error> {
    let actual = directory.list_members(group_id, role).await?;
    let managed = managed_members(catalog, name, role);
    let outcome = reconcile_group(catalog, name, role, &actual, &managed, now);
    let plan = if deleting {
        // Deleting the PimGroup takes back everything it granted, and leaves the rest.
        MembershipPlan {
            remove: actual.intersection(&managed).cloned().collect(),
            add: Vec::new(),
            unexplained: Vec::new(),
        }
    } else {
        outcome.plan.clone()
    };
    let mut members = actual.clone();
    let mut failures = Vec::new();
    // Revocations first: when the directory throttles, they go before grants.
    for member in &plan.remove {
        match directory.remove_member(group_id, role, member).await {
            Ok(()) => {
                members.remove(member);
                if let Some(ended) = catalog.access_ended(name, role, member, now) {
                    ctx.metrics
                        .revocation_lag
                        .observe(now.duration_since(ended).as_secs_f64().max(0.0));
                }
            }
            Err(error) => failures.push((member.clone(), error)),
        }
    }
    for member in &plan.add {
        match directory.add_member(group_id, role, member).await {
            Ok(()) => {
                members.insert(member.clone());
            }
            Err(error) => failures.push((member.clone(), error)),
        }
    }
    let overdue = failures
        .iter()
        .filter(|(m, _)| plan.remove.contains(m))
        .count();
    let total_overdue = ctx.membership.set_overdue(name, role, overdue);
    ctx.metrics
        .revocations_overdue
        .set(i64::try_from(total_overdue).unwrap_or(i64::MAX));
    let changed = members != actual;
    ctx.membership.set(name, role, members);
    if changed || !plan.is_empty() {
        ctx.trigger_requests_of(name);
    }
    Ok(RoleResult {
        next_change: outcome.desired.next_change,
        active: outcome.desired.members.len(),
        unexplained: plan.unexplained,
        failures,
    })
}

/// When the member's most recent grant ended, for the revocation-lag metric.
fn eligible_principals(catalog: &Catalog, group: &str, now: Timestamp) -> usize {
    let mut principals = BTreeSet::new();
    for role in [Role::Member, Role::Owner] {
        for (_, assignment, window) in catalog.assignment_windows(group, role, now) {
            if assignment.spec.assignment_type == AssignmentType::Eligible && window.contains(now) {
                principals.insert(assignment.spec.principal.clone());
            }
        }
    }
    principals.len()
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn ready(ok: bool, reason: &'static str, message: &str) -> ConditionState {
    ConditionState {
        type_: types::READY,
        status: if ok {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        },
        reason,
        message: message.to_owned(),
    }
}

fn status_with(
    stored: &PimGroupStatus,
    group: &PimGroup,
    group_id: Option<&GroupId>,
    conditions: &[ConditionState],
    now: Timestamp,
) -> PimGroupStatus {
    let generation = group.meta().generation;
    let conditions: Vec<Condition> =
        merge_conditions(&stored.conditions, conditions, generation, now);
    PimGroupStatus {
        observed_generation: generation,
        group_id: group_id
            .map(|g| g.0.clone())
            .or_else(|| stored.group_id.clone()),
        conditions,
        ..stored.clone()
    }
}

async fn write_status(
    ctx: &Context,
    object: &Lenient<PimGroup>,
    stored: &PimGroupStatus,
    status: PimGroupStatus,
) -> Result<(), Error> {
    if &status != stored {
        apply_status(&ctx.client, object, &status).await?;
    }
    Ok(())
}
