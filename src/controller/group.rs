//! PimGroup reconciler: makes each role's directory membership equal to its desired set
//! (DESIGN §5), removals first, and reports Ready and InSync.

use std::collections::BTreeSet;
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::core::Resource;
use kube::runtime::controller::Action;

use futures::StreamExt;

use super::context::{Context, back_off, timed};
use super::error::Error;
use super::lenient::Lenient;
use super::priority::{HELD_RETRY, Pass};
use super::writes::{
    add_finalizer, apply_status, has_finalizer, remove_finalizer, report_malformed,
};
use crate::api::PimGroup;
use crate::api::common::Role;
use crate::api::conditions::types;
use crate::api::eligible_assignment::AssignmentType;
use crate::api::pim_group::PimGroupStatus;
use crate::core::lifecycle::{ConditionState, ConditionStatus};
use crate::core::membership::{Grant, Member, MembershipPlan};
use crate::core::status::merge_conditions;
use crate::directory::{Directory, DirectoryError, GroupId};
use crate::engine::{Catalog, GroupOutcome, reconcile_group};

pub const KIND: &str = "PimGroup";
const UNEXPLAINED_MAX: usize = 100;
/// Directory writes one pass of one role has in flight at once; grants also need an add lane
/// (see `priority`).
const WRITES_IN_FLIGHT: usize = 16;
/// When a pass whose cache was behind its own status write looks again.
const BEHIND_RETRY: std::time::Duration = std::time::Duration::from_millis(200);

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

/// Members the operator itself may have granted: principals of our requests for the role that
/// were given a window (approved, whatever happened after), and the members of Active-type
/// assignments. `standingAccess: Report` removes only these: a standing member whose request
/// was refused was never granted anything by us, and stays reported, not removed.
fn managed_members(catalog: &Catalog, group: &str, role: Role) -> BTreeSet<Member> {
    let requests = catalog
        .requests
        .values()
        .filter(|r| r.spec.group == group && r.spec.role() == role)
        .filter(|r| r.status.as_ref().is_some_and(|s| s.starts_at.is_some()))
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

struct RoleResult {
    next_change: Option<Timestamp>,
    /// When the role next loses a member, for the write priority.
    next_end: Option<Timestamp>,
    active: usize,
    unexplained: Vec<Member>,
    failures: Vec<(Member, DirectoryError)>,
    /// Grants not started because revocations were due.
    held: usize,
}

/// One role's pass, between its removals and its grants.
struct RolePass {
    role: Role,
    actual: BTreeSet<Member>,
    members: BTreeSet<Member>,
    plan: MembershipPlan,
    outcome: GroupOutcome,
    grants: Vec<Grant>,
    failures: Vec<(Member, DirectoryError)>,
    held: usize,
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
    // However this pass ends, what it could see of revocations is dealt with.
    let pass = ctx.priority.begin_pass(now);
    let _pass_ends = PassEnds {
        ctx,
        group: &name,
        pass,
    };
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
    // Every role's removals, then every role's grants: revocations go first (DESIGN §8).
    let mut passes = Vec::new();
    for role in roles_of(group) {
        passes.push(
            revoke_role(
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
    ctx.trigger_groups(ctx.priority.removals_made(&name, pass));
    let mut results = Vec::new();
    for mut role_pass in passes {
        grant_role(
            ctx,
            &mut role_pass,
            &name,
            directory.as_ref(),
            &group_id,
            now,
        )
        .await;
        results.push(finish_role(ctx, role_pass, &name, now));
    }
    let next_end = results.iter().filter_map(|r| r.next_end).min();
    ctx.priority.record_next_end(&name, next_end, pass);
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
    let held: usize = results.iter().map(|r| r.held).sum();
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
    } else if held > 0 {
        ConditionState {
            type_: types::IN_SYNC,
            status: ConditionStatus::False,
            reason: reasons::CONVERGING,
            message: "grants wait while due revocations go first".to_owned(),
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
    let read = object.metadata.resource_version.as_deref();
    // A pass that ran before its previous status write came back through the watch: writing
    // would conflict. The directory work is done; the status follows in a moment.
    let behind = ctx.group_writes.behind(&name, read);
    if !behind && write_status(ctx, object, &stored, status).await? {
        ctx.group_writes.wrote(&name, read);
    }

    if let Some((_, error)) = failures.first() {
        return Err(Error::Directory((*error).clone()));
    }
    let next = results.iter().filter_map(|r| r.next_change).min();
    let requeue = ctx.requeue_for(next);
    if behind {
        return Ok(Action::requeue(requeue.min(BEHIND_RETRY)));
    }
    if held > 0 {
        // Woken when no revocation is due any more; this is only the fallback.
        return Ok(Action::requeue(requeue.min(HELD_RETRY)));
    }
    Ok(Action::requeue(requeue))
}

/// Tells the write priority that a pass is over, however it ended (an error, an early return):
/// a revocation it could not make is retried with back-off, not ahead of every grant.
struct PassEnds<'a> {
    ctx: &'a Context,
    group: &'a str,
    pass: Pass,
}

impl Drop for PassEnds<'_> {
    fn drop(&mut self) {
        let woken = self.ctx.priority.removals_made(self.group, self.pass);
        self.ctx.trigger_groups(woken);
    }
}

/// Lists one role's members, decides, and makes the removals, in parallel.
#[allow(clippy::too_many_arguments)]
async fn revoke_role(
    ctx: &Context,
    catalog: &Catalog,
    name: &str,
    directory: &dyn Directory,
    group_id: &GroupId,
    role: Role,
    deleting: bool,
    now: Timestamp,
) -> Result<RolePass, Error> {
    let managed = managed_members(catalog, name, role);
    let actual = spelled_as_managed(
        directory,
        directory.list_members(group_id, role).await?,
        &managed,
    );
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
    // Made into futures first: a lazy `map` in the stream trips the `Send` check of the
    // controller's future (rust-lang/rust#102211).
    let removals: Vec<_> = plan
        .remove
        .iter()
        .map(|member| remove_one(directory, group_id, role, member))
        .collect();
    let removals: Vec<_> = futures::stream::iter(removals)
        .buffered(WRITES_IN_FLIGHT)
        .collect()
        .await;
    for (member, result) in removals {
        match result {
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
    Ok(RolePass {
        role,
        actual,
        members,
        plan,
        outcome,
        grants: catalog.grants(name, role, now),
        failures,
        held: 0,
    })
}

/// The listing with each managed principal spelled as our objects spell it, where the
/// directory lists the same principal otherwise (an Entra object id listed by its UPN, or a UPN
/// in other letter case): the plan must not remove and re-add a member over spelling.
fn spelled_as_managed(
    directory: &dyn Directory,
    mut actual: BTreeSet<Member>,
    managed: &BTreeSet<Member>,
) -> BTreeSet<Member> {
    for principal in managed {
        if actual.contains(principal) {
            continue;
        }
        if let Some(listed) = directory.listed_as(principal)
            && actual.remove(&listed)
        {
            actual.insert(principal.clone());
        }
    }
    actual
}

/// What became of one grant the pass meant to make.
enum Granted {
    Done(Option<crate::directory::DirectoryReceipt>),
    Failed(DirectoryError),
    /// Not started: a revocation is due somewhere.
    Held,
    /// Not made: the grant ended while the pass was under way.
    Ended,
}

/// Makes one role's grants, in parallel, each through an add lane and only while no revocation
/// is due; a grant that ended meanwhile is not made.
async fn grant_role(
    ctx: &Context,
    pass: &mut RolePass,
    name: &str,
    directory: &dyn Directory,
    group_id: &GroupId,
    now: Timestamp,
) {
    let role = pass.role;
    let grants = &pass.grants;
    // A directory that ends access itself (Entra PIM) is given each member's end, and moves it
    // when a later (or shortened) grant changes it: converged, not toggled (DESIGN §5).
    let ends = |m: &Member| crate::directory::access_until(grants, m, now);
    let renew: Vec<&Member> = if directory.enforces_ends() {
        pass.outcome
            .desired
            .members
            .keys()
            .filter(|m| {
                pass.actual.contains(*m) && directory.needs_new_end(group_id, role, m, ends(m).0)
            })
            .collect()
    } else {
        Vec::new()
    };
    let adds = pass.plan.add.iter().chain(renew).map(|member| {
        let (until, request) = ends(member);
        let target = Target {
            ctx,
            name,
            directory,
            group_id,
            role,
        };
        grant_one(target, member, until, request)
    });
    let adds: Vec<_> = adds.collect();
    let results: Vec<_> = futures::stream::iter(adds)
        .buffered(WRITES_IN_FLIGHT)
        .collect()
        .await;
    for (member, request, granted) in results {
        match granted {
            Granted::Done(receipt) => {
                pass.members.insert(member.clone());
                if let (Some(receipt), Some(request)) = (receipt, request) {
                    super::writes::record_directory_receipt(&ctx.client, &request, &receipt, now)
                        .await;
                }
            }
            Granted::Failed(error) => pass.failures.push((member.clone(), error)),
            Granted::Held => pass.held += 1,
            Granted::Ended => {}
        }
    }
}

async fn remove_one<'a>(
    directory: &dyn Directory,
    group_id: &GroupId,
    role: Role,
    member: &'a Member,
) -> (&'a Member, Result<(), DirectoryError>) {
    (
        member,
        directory.remove_member(group_id, role, member).await,
    )
}

/// Where a grant goes.
#[derive(Clone, Copy)]
struct Target<'a> {
    ctx: &'a Context,
    name: &'a str,
    directory: &'a dyn Directory,
    group_id: &'a GroupId,
    role: Role,
}

async fn grant_one<'a>(
    target: Target<'_>,
    member: &'a Member,
    until: Option<Timestamp>,
    request: Option<String>,
) -> (&'a Member, Option<String>, Granted) {
    let Target {
        ctx,
        name,
        directory,
        group_id,
        role,
    } = target;
    if ctx.priority.hold_adds(name, ctx.now()) {
        return (member, request, Granted::Held);
    }
    let lane = ctx.priority.add_lane().await;
    let at = ctx.now();
    if ctx.priority.hold_adds(name, at) {
        return (member, request, Granted::Held);
    }
    // Never grant past the end, however long the pass took to get here.
    if until.is_some_and(|until| until <= at) {
        return (member, request, Granted::Ended);
    }
    let result = directory
        .add_member_until(group_id, role, member, until)
        .await;
    drop(lane);
    let granted = match result {
        Ok(receipt) => Granted::Done(receipt),
        Err(error) => Granted::Failed(error),
    };
    (member, request, granted)
}

/// Records what the directory now holds, and wakes the requests whose member came or went.
fn finish_role(ctx: &Context, pass: RolePass, name: &str, now: Timestamp) -> RoleResult {
    let RolePass {
        role,
        actual: _,
        members,
        plan,
        outcome,
        grants,
        failures,
        held,
    } = pass;
    let overdue = failures
        .iter()
        .filter(|(m, _)| plan.remove.contains(m))
        .count();
    let total_overdue = ctx.membership.set_overdue(name, role, overdue);
    ctx.metrics
        .revocations_overdue
        .set(i64::try_from(total_overdue).unwrap_or(i64::MAX));
    let before = ctx.membership.set(name, role, members.clone());
    // Requests see the directory through the membership cache: wake those whose member it now
    // shows differently, and those whose change failed (they report it).
    let mut concerned: BTreeSet<Member> = match before {
        Some(before) => before.symmetric_difference(&members).cloned().collect(),
        None => members.clone(),
    };
    concerned.extend(failures.iter().map(|(m, _)| m.clone()));
    ctx.trigger_requests_for(name, role, &concerned);
    let next_end = grants
        .iter()
        .filter(|g| g.covers(now))
        .filter_map(|g| g.end)
        .min();
    RoleResult {
        next_change: outcome.desired.next_change,
        next_end,
        active: outcome.desired.members.len(),
        unexplained: plan.unexplained,
        failures,
        held,
    }
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

/// Writes `status` unless it is what is stored; returns whether it wrote.
async fn write_status(
    ctx: &Context,
    object: &Lenient<PimGroup>,
    stored: &PimGroupStatus,
    status: PimGroupStatus,
) -> Result<bool, Error> {
    if &status == stored {
        return Ok(false);
    }
    apply_status(&ctx.client, object, &status).await?;
    Ok(true)
}
