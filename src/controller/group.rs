//! PimGroup reconciler: makes each role's directory membership equal to its desired set
//! (DESIGN §5), removals first, and reports Ready and InSync.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::core::Resource;
use kube::runtime::controller::Action;

use futures::StreamExt;
use kube::runtime::reflector::ObjectRef;

use super::context::{Context, back_off_delay, timed};
use super::error::Error;
use super::ledger;
use super::priority::{HELD_RETRY, Pass};
use super::writes::{
    add_finalizer, apply_status, has_finalizer, remove_finalizer, report_malformed,
};
use crate::api::PimGroup;
use crate::api::common::Role;
use crate::api::conditions::{reasons, types};
use crate::api::eligible_assignment::AssignmentType;
use crate::api::pim_grant::GrantSourceKind;
use crate::api::pim_group::{PimGroupStatus, StandingAccess};
use crate::audit::action::{Action as AuditAction, DirectoryWrite, directory_write_record};
use crate::core::ledger::{self as ledger_core, Entry, GroupTarget, ProvenGrant};
use crate::core::lifecycle::{ConditionState, ConditionStatus};
use crate::core::membership::{Grant, GrantSource, Member, RemovalRules};
use crate::core::status::merge_conditions;
use crate::directory::{Directory, DirectoryError, GroupId};
use crate::engine::{Catalog, LedgerOutcome, Proof, plan_with_ledger};
use crate::lenient::Lenient;
use crate::metrics::GroupLabels;

pub const KIND: &str = "PimGroup";
const UNEXPLAINED_MAX: usize = 100;
/// Failed changes named in `InSync`'s message.
const FAILURES_NAMED: usize = 5;
/// Grants and ledger writes one pass of one role has in flight at once; grants also need an add
/// lane (see `priority`). Removals are bounded by their own lanes (`removalConcurrency`) alone.
const WRITES_IN_FLIGHT: usize = 16;
/// When a pass whose cache was behind its own status write looks again.
const BEHIND_RETRY: std::time::Duration = std::time::Duration::from_millis(200);

/// `OwnersRemovable` when it is not worked out (no owner role, or a directory that does not
/// keep a last owner: `fallbackOwner` set, pim mode): True, so that a `LastOwnerKept` written
/// before does not stay behind; only written over a condition already there.
fn owners_not_kept(
    stored: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
) -> Option<ConditionState> {
    stored
        .iter()
        .any(|c| c.type_ == types::OWNERS_REMOVABLE)
        .then(|| ConditionState {
            type_: types::OWNERS_REMOVABLE,
            status: ConditionStatus::True,
            reason: reasons::NO_LAST_OWNER_KEPT,
            message: "no owner role is managed, or the directory removes a group's last owner (fallbackOwner set, or pim mode)".to_owned(),
        })
}

/// Whether a just-in-time owner can be removed: the directory keeps a group's last owner, so
/// the group needs an owner besides those the operator grants (`others`: how many it has).
fn owners_removable(others: usize) -> ConditionState {
    if others == 0 {
        ConditionState {
            type_: types::OWNERS_REMOVABLE,
            status: ConditionStatus::False,
            reason: reasons::LAST_OWNER_KEPT,
            message: "the group has no owner but those pim-operator grants, and the directory refuses to remove a group's last owner: the last just-in-time owner would keep ownership; add a standing owner (with standingAccess: Report) or set fallbackOwner on the directory".to_owned(),
        }
    } else {
        ConditionState {
            type_: types::OWNERS_REMOVABLE,
            status: ConditionStatus::True,
            reason: reasons::ANOTHER_OWNER_STAYS,
            message: format!("{others} owner(s) besides those pim-operator grants stay"),
        }
    }
}

pub async fn reconcile(object: Arc<Lenient<PimGroup>>, ctx: Arc<Context>) -> Result<Action, Error> {
    timed(
        KIND,
        &ctx,
        object.metadata.name.as_deref(),
        reconcile_group_object(&object, &ctx),
    )
    .await
}

pub fn error_policy(object: Arc<Lenient<PimGroup>>, error: &Error, ctx: Arc<Context>) -> Action {
    let name = object.metadata.name.as_deref();
    let delay = back_off_delay(KIND, name, error, &ctx);
    let deadline = name.and_then(|n| {
        ctx.group_deadlines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(n)
            .copied()
    });
    Action::requeue(delay.min(ctx.requeue_for(deadline)))
}

fn roles_of(group: &PimGroup) -> Vec<Role> {
    let mut roles = vec![Role::Member];
    if group.spec.roles.owner.is_some() {
        roles.push(Role::Owner);
    }
    roles
}

struct RoleResult {
    role: Role,
    next_change: Option<Timestamp>,
    /// When the role next loses a member, for the write priority.
    next_end: Option<Timestamp>,
    active: usize,
    unexplained: Vec<Member>,
    /// The role's last member, kept under `protectLastMember`.
    kept_last: Option<Member>,
    /// Another member is in beside the kept last one: the next pass removes it.
    kept_last_goes: bool,
    failures: Vec<(Member, DirectoryError)>,
    /// Grants not started because revocations were due.
    held: usize,
}

/// One role's pass, between its removals and its grants.
struct RolePass {
    role: Role,
    actual: BTreeSet<Member>,
    members: BTreeSet<Member>,
    outcome: LedgerOutcome,
    /// Members the ledger says are ours in this group (entries, and those recorded this pass).
    ours: BTreeSet<Member>,
    failures: Vec<(Member, DirectoryError)>,
    held: usize,
}

impl RolePass {
    fn grants(&self) -> Vec<Grant> {
        self.outcome
            .grants
            .iter()
            .map(|g| g.grant.clone())
            .collect()
    }
}

async fn reconcile_group_object(
    object: &Lenient<PimGroup>,
    ctx: &Context,
) -> Result<Action, Error> {
    // The ledger decides what is ours: never act on a ledger not yet read.
    ctx.ledger_ready().await;
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
    let catalog = ctx.stores.catalog_for(&name);
    let entries = ctx.ledger.entries(&ctx.stores, &name);
    let member_of = |r: &crate::api::ActivationRequest, g: &str| ctx.member_of(&catalog, r, g);
    let proof = Proof {
        attestor: ctx.attestor.as_ref(),
        is_member_of: &member_of,
    };
    // Overdue revocations are counted before any I/O: an outage of the directory or of the API
    // server must not hide them (issue 14, finding 10).
    let guess = stored.group_id.as_ref().map(|id| GroupTarget {
        directory: group.spec.directory.clone(),
        group_id: id.clone(),
    });
    // Each role's grants, proven once for the whole pass.
    let proven: BTreeMap<Role, Vec<ProvenGrant>> = roles_of(group)
        .into_iter()
        .map(|role| (role, catalog.proven_grants(&name, role, now, &proof)))
        .collect();
    let overdue = overdue_entries(ctx, &catalog, &name, &entries, guess.as_ref(), &proven, now);
    report_overdue(ctx, &name, &overdue);

    let Some(directory) = ctx.directories.get(&group.spec.directory) else {
        let known: Vec<&str> = ctx.directories.names().collect();
        let message = format!(
            "no directory connection named {:?} is configured (known: {})",
            group.spec.directory,
            known.join(", ")
        );
        // What was written through other connections can still be taken back.
        let mut failures = revoke_elsewhere(ctx, &entries, None).await;
        let stranded = entries
            .iter()
            .filter(|e| e.target.directory == group.spec.directory)
            .count();
        if deleting && stranded == 0 && failures.is_empty() {
            ctx.membership.forget(&name);
            remove_finalizer(&ctx.client, object).await?;
            return Ok(Action::await_change());
        }
        let mut message = message;
        if stranded > 0 {
            message.push_str(&format!(
                "; {stranded} grant(s) recorded in the ledger cannot be revoked until it is configured again"
            ));
        }
        write_not_ready(
            ctx,
            object,
            &stored,
            reasons::DIRECTORY_NOT_CONFIGURED,
            &message,
            now,
        )
        .await?;
        if let Some((_, error)) = failures.pop() {
            return Err(error.into());
        }
        return Ok(Action::requeue(ctx.settings.resync));
    };
    let (group_id, blocked) = match directory.ensure_group(group).await {
        Ok(id) => (id, None),
        // Grants wait until the group resolves again (a conflicting RBAC binding, say), but
        // what is due to go still goes, from the group the ledger says it was granted in.
        Err(error) if stored.group_id.is_some() && !entries.is_empty() => (
            GroupId(stored.group_id.clone().unwrap_or_default()),
            Some(error),
        ),
        Err(error) => {
            let message = error.to_string();
            write_not_ready(
                ctx,
                object,
                &stored,
                reasons::DIRECTORY_ERROR,
                &message,
                now,
            )
            .await?;
            return Err(error.into());
        }
    };
    let current = GroupTarget {
        directory: group.spec.directory.clone(),
        group_id: group_id.0.clone(),
    };

    // Grants left in a group the PimGroup no longer points at go first: they need no listing
    // of the current group, which may be what fails.
    let mut elsewhere_failures = revoke_elsewhere(ctx, &entries, Some(&current)).await;
    // Every role's removals, then every role's grants: revocations go first (DESIGN §8).
    let reference = group.object_ref(&());
    let mut passes = Vec::new();
    for role in roles_of(group) {
        let role_pass = revoke_role(
            ctx,
            RoleScope {
                catalog: &catalog,
                name: &name,
                directory: directory.as_ref(),
                group_id: &group_id,
                current: &current,
                entries: &entries,
                proven: &proven,
                adopting: stored.ledger_adopted_at.is_none(),
                object: &reference,
            },
            role,
            deleting,
            now,
        )
        .await?;
        passes.push(role_pass);
    }
    ctx.trigger_groups(ctx.priority.removals_made(&name, pass));
    let mut results = Vec::new();
    let mut owners = None;
    for mut role_pass in passes {
        if role_pass.role == Role::Owner && directory.keeps_last_owner() {
            let others = role_pass
                .actual
                .iter()
                .filter(|m| !role_pass.ours.contains(*m))
                .count();
            owners = Some(owners_removable(others));
        }
        if !deleting && blocked.is_none() {
            grant_role(
                ctx,
                &mut role_pass,
                &name,
                directory.as_ref(),
                &group_id,
                now,
            )
            .await;
        }
        results.push(finish_role(ctx, role_pass, &name, now));
    }
    if let Some(first) = results.iter_mut().next() {
        first.failures.append(&mut elsewhere_failures);
    }
    let next_end = results.iter().filter_map(|r| r.next_end).min();
    ctx.priority.record_next_end(&name, next_end, pass);
    if deleting {
        let open = ctx.ledger.entries(&ctx.stores, &name);
        let failed = results.iter().any(|r| !r.failures.is_empty());
        if !failed && open.is_empty() {
            ctx.membership.forget(&name);
            let labels = GroupLabels {
                group: name.clone(),
            };
            ctx.metrics.members_outside_pim.remove(&labels);
            ctx.metrics.standing_access_removals.remove(&labels);
            remove_finalizer(&ctx.client, object).await?;
            return Ok(Action::await_change());
        }
        if !failed {
            return Ok(Action::requeue(std::time::Duration::from_secs(2)));
        }
        // A removal the directory refuses is reported as any other (InSync=False, below):
        // the status must not go on saying Converged while access outlives its end (found by
        // the simulation, seed 56).
    }

    if let Some(error) = blocked {
        let message = format!("{error}; grants wait, revocations go on");
        write_not_ready(
            ctx,
            object,
            &stored,
            reasons::DIRECTORY_ERROR,
            &message,
            now,
        )
        .await?;
        return Err(error.into());
    }
    let failures: Vec<_> = results.iter().flat_map(|r| r.failures.iter()).collect();
    let unexplained_of = |role: Role| -> Vec<String> {
        results
            .iter()
            .filter(|r| r.role == role)
            .flat_map(|r| r.unexplained.iter().map(ToString::to_string))
            .collect()
    };
    let (unexplained, unexplained_owners) =
        (unexplained_of(Role::Member), unexplained_of(Role::Owner));
    let labels = GroupLabels {
        group: name.clone(),
    };
    ctx.metrics
        .members_outside_pim
        .get_or_create(&labels)
        .set(i64::try_from(unexplained.len() + unexplained_owners.len()).unwrap_or(i64::MAX));
    // At 0 before the first removal, so that `increase()` sees it.
    drop(ctx.metrics.standing_access_removals.get_or_create(&labels));
    let held: usize = results.iter().map(|r| r.held).sum();
    let in_sync = if !failures.is_empty() {
        // Each failed member named (a few): one refused removal must not hide behind another.
        let named: Vec<String> = failures
            .iter()
            .take(FAILURES_NAMED)
            .map(|(member, error)| format!("{member}: {error}"))
            .collect();
        ConditionState {
            type_: types::IN_SYNC,
            status: ConditionStatus::False,
            reason: reasons::CONVERGING,
            message: format!(
                "{} change(s) failed and will be retried: {}",
                failures.len(),
                named.join("; ")
            ),
        }
    } else if held > 0 {
        ConditionState {
            type_: types::IN_SYNC,
            status: ConditionStatus::False,
            reason: reasons::CONVERGING,
            message: "grants wait while due revocations go first".to_owned(),
        }
    } else if let Some(kept) = results.iter().find_map(|r| r.kept_last.as_ref()) {
        ConditionState {
            type_: types::IN_SYNC,
            status: ConditionStatus::False,
            reason: reasons::LAST_MEMBER_KEPT,
            message: format!(
                "{kept} stays although no grant explains it: it is the last member of its role and spec.protectLastMember is set; it goes once another member is in"
            ),
        }
    } else if !unexplained.is_empty() || !unexplained_owners.is_empty() {
        unexplained_condition(&group.spec, unexplained.len() + unexplained_owners.len())
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
    let owners = owners.or_else(|| owners_not_kept(&stored.conditions));
    let conditions: Vec<ConditionState> = [Some(ready), Some(in_sync), owners]
        .into_iter()
        .flatten()
        .collect();
    let mut status = status_with(ctx, &stored, group, Some(&group_id), &conditions, now);
    status.active_principals = Some(count(results.iter().map(|r| r.active).sum()));
    status.eligible_principals = Some(count(eligible_principals(&catalog, &name, now)));
    status.unexplained_members = unexplained.into_iter().take(UNEXPLAINED_MAX).collect();
    status.unexplained_owners = unexplained_owners
        .into_iter()
        .take(UNEXPLAINED_MAX)
        .collect();
    if status.ledger_adopted_at.is_none() && failures.is_empty() {
        status.ledger_adopted_at = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now));
    }
    let read = object.metadata.resource_version.as_deref();
    // A pass that ran before its previous status write came back through the watch: writing
    // would conflict. The directory work is done; the status follows in a moment.
    let behind = ctx.group_writes.behind(&name, read);
    if !behind && write_status(ctx, object, &stored, status).await? {
        ctx.group_writes.wrote(&name, read);
    }

    // Look again when the next revocation would become overdue, to report it.
    let overdue_next = overdue.next_report;
    let next = results
        .iter()
        .filter_map(|r| r.next_change)
        .chain(overdue_next)
        .min();
    {
        let mut deadlines = ctx
            .group_deadlines
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match next {
            Some(next) => deadlines.insert(name.clone(), next),
            None => deadlines.remove(&name),
        };
    }
    if let Some((_, error)) = failures.first() {
        return Err(Error::Directory((*error).clone()));
    }
    let requeue = ctx.requeue_for(next);
    if behind {
        return Ok(Action::requeue(requeue.min(BEHIND_RETRY)));
    }
    if held > 0 {
        // Woken when no revocation is due any more; this is only the fallback.
        return Ok(Action::requeue(requeue.min(HELD_RETRY)));
    }
    if results.iter().any(|r| r.kept_last_goes) {
        // The kept last member is no longer the last: the next pass removes it.
        return Ok(Action::requeue(requeue.min(HELD_RETRY)));
    }
    Ok(Action::requeue(requeue))
}

/// InSync when members no grant explains stay: adopted (listed for review, removed once
/// adoption ends) or reported for good.
fn unexplained_condition(spec: &crate::api::PimGroupSpec, count: usize) -> ConditionState {
    let (reason, message) = match spec.standing_access {
        StandingAccess::Adopt => {
            let until = match &spec.adopt_after {
                Some(at) => format!("until adoptAfter ({})", at.0),
                None => "until spec.standingAccess is set to Remove".to_owned(),
            };
            (
                reasons::ADOPTING,
                format!(
                    "adopting: {count} member(s) pim-operator did not grant stay {until}; review status.unexplainedMembers and give each who should keep access an assignment (or spec.protectedMembers)"
                ),
            )
        }
        _ => (
            reasons::UNEXPLAINED_MEMBERS,
            format!(
                "{count} member(s) were not granted by pim-operator and are reported, not removed (standingAccess: Report)"
            ),
        ),
    };
    ConditionState {
        type_: types::IN_SYNC,
        status: ConditionStatus::False,
        reason,
        message,
    }
}

/// Revocations the ledger shows due and not confirmed, by role, and when the next one becomes
/// overdue.
struct Overdue {
    by_role: Vec<(Role, usize)>,
    next_report: Option<Timestamp>,
}

/// When the revocation of a dead `entry` fell due: the end of its window if that has passed,
/// else when its source's access ended as its status says, else when this process first saw it
/// dead.
fn due_of(
    ctx: &Context,
    catalog: &Catalog,
    group: &str,
    entry: &Entry,
    now: Timestamp,
) -> Timestamp {
    if let Some(end) = ledger_core::due_from_window(entry, now) {
        return end;
    }
    if let Some(ended) = catalog.access_ended(group, entry.role, &entry.member, now)
        && ended >= entry.start
    {
        return ended;
    }
    ctx.ledger.dead_since(entry, now)
}

fn overdue_entries(
    ctx: &Context,
    catalog: &Catalog,
    name: &str,
    entries: &[Entry],
    current: Option<&GroupTarget>,
    proven: &BTreeMap<Role, Vec<ProvenGrant>>,
    now: Timestamp,
) -> Overdue {
    let grace = jiff::SignedDuration::try_from(ctx.settings.revocation_grace)
        .unwrap_or(jiff::SignedDuration::from_secs(30));
    let mut by_role = Vec::new();
    let mut next_report: Option<Timestamp> = None;
    for role in [Role::Member, Role::Owner] {
        let grants = proven.get(&role).map(Vec::as_slice).unwrap_or_default();
        let mut n = 0;
        for entry in entries.iter().filter(|e| e.role == role) {
            if ledger_core::is_live(entry, current, grants, now) {
                continue;
            }
            let overdue_at = due_of(ctx, catalog, name, entry, now) + grace;
            if overdue_at <= now {
                n += 1;
            } else {
                next_report = Some(next_report.map_or(overdue_at, |t| t.min(overdue_at)));
            }
        }
        by_role.push((role, n));
    }
    Overdue {
        by_role,
        next_report,
    }
}

fn report_overdue(ctx: &Context, name: &str, overdue: &Overdue) {
    let mut total = 0;
    for (role, n) in &overdue.by_role {
        total = ctx.membership.set_overdue(name, *role, *n);
    }
    ctx.metrics
        .revocations_overdue
        .set(i64::try_from(total).unwrap_or(i64::MAX));
}

/// Revokes the ledger's entries written to another directory group than `current` (the
/// PimGroup was pointed elsewhere, or its directory is gone from the config: `None`), through
/// the connection each was written with, and closes them once the directory confirms.
async fn revoke_elsewhere(
    ctx: &Context,
    entries: &[Entry],
    current: Option<&GroupTarget>,
) -> Vec<(Member, DirectoryError)> {
    let mut failures = Vec::new();
    for entry in entries.iter().filter(|e| Some(&e.target) != current) {
        let Some(directory) = ctx.directories.get(&entry.target.directory) else {
            failures.push((
                entry.member.clone(),
                DirectoryError::permanent(
                    "remove member",
                    format!(
                        "the grant in {} was made through directory {:?}, which is no longer configured",
                        entry.target, entry.target.directory
                    ),
                ),
            ));
            continue;
        };
        let id = GroupId(entry.target.group_id.clone());
        let lane = ctx.priority.removal_lane().await;
        let removed = directory
            .remove_member(&id, entry.role, &entry.member)
            .await;
        drop(lane);
        match removed {
            Ok(()) => {
                tracing::info!(
                    pimgrant = %entry.name,
                    member = %entry.member,
                    target = %entry.target,
                    "revoked a grant left in a directory group the PimGroup no longer points at"
                );
                // Not the end of its source's access, which may go on in the new group: the
                // source is only asked to look again.
                if entry.source.kind == GrantSourceKind::ActivationRequest {
                    // Fails only once the controller has stopped: nothing is left to wake.
                    let _ = ctx
                        .request_triggers
                        .send(ObjectRef::new(&entry.source.name));
                } else {
                    // Requests have their own records; an Active-type assignment's grant
                    // taken out of the old group has this.
                    let write = DirectoryWrite {
                        action: AuditAction::Removed,
                        kind: GrantSourceKind::EligibleAssignment.as_str(),
                        name: &entry.source.name,
                        group: &entry.group,
                        role: entry.role,
                        member: &entry.member,
                        directory_group_id: &entry.target.group_id,
                    };
                    audit_writes(ctx, vec![write], ctx.now());
                }
                if let Err(error) = close_entry(ctx, entry).await {
                    failures.push((entry.member.clone(), error));
                }
            }
            Err(error) => failures.push((entry.member.clone(), error)),
        }
    }
    failures
}

/// Closes a ledger entry; a failure is retried with the pass's back-off, and until then the
/// entry still holds its source's end open.
async fn close_entry(ctx: &Context, entry: &Entry) -> Result<(), DirectoryError> {
    ledger::close(&ctx.client, &ctx.ledger, entry)
        .await
        .map_err(|error| {
            tracing::warn!(pimgrant = %entry.name, %error, "could not close a ledger entry");
            DirectoryError::transient("close ledger entry", error.to_string())
        })
}

/// The directory confirmed `entry`'s member gone: its source's end is now known.
fn confirmed(ctx: &Context, entry: &Entry, now: Timestamp) {
    if entry.source.kind == GrantSourceKind::ActivationRequest {
        ctx.ledger.confirm_removal(&entry.source.uid, now);
        // Fails only once the controller has stopped: nothing is left to wake.
        let _ = ctx
            .request_triggers
            .send(ObjectRef::new(&entry.source.name));
    }
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

/// What a role's pass works on.
#[derive(Clone, Copy)]
struct RoleScope<'a> {
    catalog: &'a Catalog,
    name: &'a str,
    directory: &'a dyn Directory,
    group_id: &'a GroupId,
    current: &'a GroupTarget,
    entries: &'a [Entry],
    proven: &'a BTreeMap<Role, Vec<ProvenGrant>>,
    /// The first pass since the ledger exists: grants made before it are recorded.
    adopting: bool,
    /// The PimGroup, for Events.
    object: &'a k8s_openapi::api::core::v1::ObjectReference,
}

/// A removal the directory refused for good (Entra's last owner, say): a Warning Event on the
/// PimGroup, besides InSync and the waiting request's RevocationOverdue.
async fn report_refused_removal(
    ctx: &Context,
    object: &k8s_openapi::api::core::v1::ObjectReference,
    role: Role,
    member: &Member,
    error: &DirectoryError,
) {
    let event = kube::runtime::events::Event {
        type_: kube::runtime::events::EventType::Warning,
        reason: crate::api::conditions::event_reasons::REVOCATION_REFUSED.to_owned(),
        note: Some(
            format!("the directory refused to remove {role} {member}: {error}")
                .chars()
                .take(1024)
                .collect(),
        ),
        action: "Revoke".to_owned(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, object).await {
        tracing::debug!(%error, "could not publish an Event");
    }
}

/// Lists one role's members, plans against the ledger, makes the removals in parallel, and
/// closes the entries the directory confirmed.
async fn revoke_role(
    ctx: &Context,
    scope: RoleScope<'_>,
    role: Role,
    deleting: bool,
    now: Timestamp,
) -> Result<RolePass, Error> {
    let RoleScope {
        catalog,
        name,
        directory,
        group_id,
        current,
        entries,
        proven,
        adopting,
        object: _,
    } = scope;
    let grants = proven.get(&role).cloned().unwrap_or_default();
    // Protected members too: Entra lists a UPN as stored, whatever case the spec wrote it in,
    // and a protected member missed over its spelling would be removed.
    let protected = catalog
        .groups
        .get(name)
        .map(|g| crate::core::membership::RemovalRules::of(&g.spec, now).protected)
        .unwrap_or_default();
    let known: BTreeSet<Member> = entries
        .iter()
        .filter(|e| e.role == role)
        .map(|e| e.member.clone())
        .chain(grants.iter().map(|g| g.grant.member.clone()))
        .chain(protected)
        .collect();
    let actual = spelled_as_managed(
        directory,
        directory.list_members(group_id, role).await?,
        &known,
    );
    let adopt = if adopting {
        adoptable(catalog, name, role, &actual)
    } else {
        BTreeSet::new()
    };
    let mut outcome = plan_with_ledger(
        catalog, name, role, entries, current, &actual, now, grants, &adopt,
    );
    if deleting {
        // Deleting the PimGroup takes back everything it granted, and leaves the rest.
        let nothing = crate::core::membership::DesiredMembership::default();
        outcome.plan = ledger_core::plan(
            name,
            role,
            &nothing,
            &[],
            entries,
            current,
            &actual,
            &RemovalRules::release(),
            &BTreeSet::new(),
            now,
        );
        outcome.plan.unexplained.clear();
    }
    for entry in &outcome.plan.elsewhere {
        ctx.ledger.dead_since(entry, now);
    }
    let mut members = actual.clone();
    let mut failures = Vec::new();
    // Made into futures first: a lazy `map` in the stream trips the `Send` check of the
    // controller's future (rust-lang/rust#102211).
    let removals: Vec<_> = outcome
        .plan
        .remove
        .iter()
        .map(|member| remove_one(ctx, directory, group_id, role, member))
        .collect();
    // Every removal of the pass may go at once: the removal lanes, shared by all passes, are
    // the bound, so a pass with many removals goes as fast as the setting allows.
    let removals: Vec<_> = futures::stream::iter(removals)
        .buffered(ctx.priority.removal_lanes())
        .collect()
        .await;
    // Ledger entries to close once the loop has seen every removal: closed in parallel, since
    // one at a time they kept the pass (and its reconcile slot) long after its removals.
    let mut closes: Vec<&Entry> = Vec::new();
    let mut written: Vec<DirectoryWrite<'_>> = Vec::new();
    for (member, result) in removals {
        // Requests waiting for this removal report why it did not go through, when the
        // directory refused it for longer than the revocation grace (a rule of its own, such
        // as Entra's five minutes or last owner), not for a passing fault.
        let lasting =
            |error: &&DirectoryError| error.is_lasting_refusal(ctx.settings.revocation_grace);
        ctx.membership.set_removal_refused(
            name,
            role,
            member,
            result
                .as_ref()
                .err()
                .filter(lasting)
                .map(|error| format!("the directory refused it: {error}")),
        );
        match result {
            Ok(()) => {
                members.remove(member);
                let closing = outcome
                    .plan
                    .close_on_removal
                    .get(member)
                    .cloned()
                    .unwrap_or_default();
                if closing.is_empty() {
                    tracing::info!(group = %name, %role, %member, "removed standing access (standingAccess: Remove)");
                    ctx.metrics
                        .standing_access_removals
                        .get_or_create(&GroupLabels {
                            group: name.to_owned(),
                        })
                        .inc();
                    written.push(DirectoryWrite {
                        action: AuditAction::StandingAccessRemoved,
                        kind: "PimGroup",
                        name,
                        group: name,
                        role,
                        member,
                        directory_group_id: &group_id.0,
                    });
                }
                // Lag from when the access should have ended to the directory's confirmation,
                // whatever was down in between (issue 14, finding 10).
                if let Some(due) = closing
                    .iter()
                    .map(|e| due_of(ctx, catalog, name, e, now))
                    .min()
                {
                    ctx.metrics
                        .revocation_lag
                        .observe(now.duration_since(due).as_secs_f64().max(0.0));
                }
                for entry in outcome
                    .plan
                    .close_on_removal
                    .get(member)
                    .into_iter()
                    .flatten()
                {
                    confirmed(ctx, entry, now);
                    closes.push(entry);
                    // Requests have their own records; what an Active-type assignment
                    // granted has these.
                    if entry.source.kind == GrantSourceKind::EligibleAssignment {
                        written.push(DirectoryWrite {
                            action: AuditAction::Removed,
                            kind: GrantSourceKind::EligibleAssignment.as_str(),
                            name: &entry.source.name,
                            group: name,
                            role,
                            member,
                            directory_group_id: &group_id.0,
                        });
                    }
                }
            }
            Err(error) => {
                if !error.is_transient() {
                    report_refused_removal(ctx, scope.object, role, member, &error).await;
                }
                failures.push((member.clone(), error));
            }
        }
    }
    audit_writes(ctx, written, now);
    if let Some(kept) = &outcome.plan.kept_last {
        // Requests whose access it was report why it stays (RevocationOverdue, with this).
        ctx.membership.set_removal_refused(
            name,
            role,
            kept,
            Some(format!(
                "pim-operator keeps {kept} as the last {role} of PimGroup {name:?} (protectLastMember); it goes once another {role} is in"
            )),
        );
    }
    // Entries whose member is absent, explained by a live grant, or protected: nothing to remove.
    for entry in &outcome.plan.close {
        if !actual.contains(&entry.member) {
            confirmed(ctx, entry, now);
        }
        closes.push(entry);
    }
    let closed: Vec<_> = futures::stream::iter(
        closes
            .into_iter()
            .map(|entry| async move { (entry, close_entry(ctx, entry).await) })
            .collect::<Vec<_>>(),
    )
    .buffered(WRITES_IN_FLIGHT)
    .collect()
    .await;
    for (entry, result) in closed {
        if let Err(error) = result {
            failures.push((entry.member.clone(), error));
        }
    }
    let ours = entries
        .iter()
        .filter(|e| e.role == role && &e.target == current)
        .chain(&outcome.plan.record)
        .map(|e| e.member.clone())
        .collect();
    Ok(RolePass {
        role,
        actual,
        members,
        outcome,
        ours,
        failures,
        held: 0,
    })
}

/// Present members that the operator granted before it kept a ledger, as it then counted them:
/// principals of live requests it saw active, and of Active-type assignments.
fn adoptable(
    catalog: &Catalog,
    group: &str,
    role: Role,
    actual: &BTreeSet<Member>,
) -> BTreeSet<Member> {
    let requests = catalog
        .requests
        .values()
        .filter(|r| r.spec.group == group && r.spec.role() == role)
        .filter(|r| {
            r.status.as_ref().is_some_and(|s| {
                s.activated_at.is_some() && !s.phase.is_some_and(crate::api::Phase::is_terminal)
            })
        })
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
    requests
        .chain(assignments)
        .filter(|m| actual.contains(m))
        .collect()
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
/// is due; a grant that ended meanwhile is not made. Each add is written to the ledger first: a
/// member whose entry could not be written is not added (issue 14: the intent comes first).
async fn grant_role(
    ctx: &Context,
    pass: &mut RolePass,
    name: &str,
    directory: &dyn Directory,
    group_id: &GroupId,
    now: Timestamp,
) {
    let role = pass.role;
    let mut unrecorded: BTreeSet<Member> = BTreeSet::new();
    let records: Vec<_> = pass
        .outcome
        .plan
        .record
        .iter()
        .map(|entry| async move { (entry, ledger::record(&ctx.client, &ctx.ledger, entry).await) })
        .collect();
    let records: Vec<_> = futures::stream::iter(records)
        .buffered(WRITES_IN_FLIGHT)
        .collect()
        .await;
    for (entry, result) in records {
        if let Err(error) = result {
            tracing::warn!(pimgrant = %entry.name, %error, "could not write the ledger entry; the add waits");
            unrecorded.insert(entry.member.clone());
            pass.failures.push((
                entry.member.clone(),
                DirectoryError::transient("record grant", error.to_string()),
            ));
        }
    }
    // The member's new entry is written: its ended one can go.
    for entry in &pass.outcome.plan.close_after_record {
        if unrecorded.contains(&entry.member) {
            continue;
        }
        if let Err(error) = close_entry(ctx, entry).await {
            pass.failures.push((entry.member.clone(), error));
        }
    }
    let grants = pass.grants();
    // A directory that ends access itself (Entra PIM) is given each member's end, and moves it
    // when a later (or shortened) grant changes it: converged, not toggled (DESIGN §5).
    let ends = |m: &Member| crate::directory::access_until(&grants, m, now);
    let renew: Vec<&Member> = if directory.enforces_ends() {
        pass.outcome
            .desired
            .members
            .keys()
            // Only grants of ours: a standing member's membership is not ours to give an end.
            .filter(|m| pass.ours.contains(*m) && !unrecorded.contains(*m))
            .filter(|m| {
                pass.actual.contains(*m) && directory.needs_new_end(group_id, role, m, ends(m).0)
            })
            .collect()
    } else {
        Vec::new()
    };
    let adds = pass
        .outcome
        .plan
        .add
        .iter()
        .filter(|m| !unrecorded.contains(*m))
        .chain(renew)
        .map(|member| {
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
    let mut written: Vec<DirectoryWrite<'_>> = Vec::new();
    for (member, request, granted) in results {
        match granted {
            Granted::Done(receipt) => {
                pass.members.insert(member.clone());
                // A new membership (not a renewed end) that an Active-type assignment grants.
                if pass.outcome.plan.add.contains(member) {
                    let assignments = grants
                        .iter()
                        .filter(|g| &g.member == member && g.covers(now));
                    for grant in assignments {
                        if let GrantSource::Assignment(assignment) = &grant.source {
                            written.push(DirectoryWrite {
                                action: AuditAction::Granted,
                                kind: GrantSourceKind::EligibleAssignment.as_str(),
                                name: assignment,
                                group: name,
                                role,
                                member,
                                directory_group_id: &group_id.0,
                            });
                        }
                    }
                }
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
    audit_writes(ctx, written, ctx.now());
}

/// Sends the records of the directory writes no request explains to the audit sinks.
fn audit_writes(ctx: &Context, written: Vec<DirectoryWrite<'_>>, now: Timestamp) {
    if let Some(sinks) = &ctx.audit {
        let records: Vec<_> = written
            .into_iter()
            .map(|write| directory_write_record(write, now))
            .collect();
        sinks.emit_retrying(records);
    }
}

async fn remove_one<'a>(
    ctx: &Context,
    directory: &dyn Directory,
    group_id: &GroupId,
    role: Role,
    member: &'a Member,
) -> (&'a Member, Result<(), DirectoryError>) {
    let _lane = ctx.priority.removal_lane().await;
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
    let grants = pass.grants();
    let RolePass {
        role,
        actual: _,
        members,
        outcome,
        ours: _,
        failures,
        held,
    } = pass;
    let kept_last = outcome.plan.kept_last.clone();
    let kept_last_goes = kept_last
        .as_ref()
        .is_some_and(|kept| members.iter().any(|m| m != kept));
    let before = ctx.membership.set(name, role, members.clone());
    // Requests see the directory through the membership cache: wake those whose member it now
    // shows differently, and those whose change failed (they report it).
    let mut concerned: BTreeSet<Member> = match before {
        Some(before) => before.symmetric_difference(&members).cloned().collect(),
        None => members.clone(),
    };
    concerned.extend(failures.iter().map(|(m, _)| m.clone()));
    // A kept last member's request reports why its access stays.
    concerned.extend(kept_last.iter().cloned());
    ctx.trigger_requests_for(name, role, &concerned);
    let next_end = grants
        .iter()
        .filter(|g| g.covers(now))
        .filter_map(|g| g.end)
        .min();
    RoleResult {
        role,
        next_change: outcome.desired.next_change,
        next_end,
        active: outcome.desired.members.len(),
        unexplained: outcome.plan.unexplained,
        kept_last,
        kept_last_goes,
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
    ctx: &Context,
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
        // None for a directory the operator does not know: nothing to publish.
        username_mapping: ctx
            .stores
            .principals
            .mapping(&group.spec.directory)
            .cloned(),
        ..stored.clone()
    }
}

/// Reports `Ready=False` with `reason`, keeping the rest of the stored status.
async fn write_not_ready(
    ctx: &Context,
    object: &Lenient<PimGroup>,
    stored: &PimGroupStatus,
    reason: &'static str,
    message: &str,
    now: Timestamp,
) -> Result<bool, Error> {
    let Ok(group) = object.parsed.as_deref() else {
        return Ok(false);
    };
    let status = status_with(
        ctx,
        stored,
        group,
        None,
        &[ready(false, reason, message)],
        now,
    );
    write_status(ctx, object, stored, status).await
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
