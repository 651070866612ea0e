//! The embedded default directory: Kubernetes RBAC. A PimGroup names the roles it confers
//! (`spec.rbac`); its members are the subjects of one binding per role, owned by the PimGroup so
//! that deleting the PimGroup deletes the bindings. RBAC is evaluated per API request, so a
//! change takes effect at once.
//!
//! # Binding names
//!
//! The binding of a role is named `pim-<group>-<role>-<hash>`:
//! - `<group>-<role>` is the PimGroup's name and the role's name, for people to read: lower-cased,
//!   every run of characters other than `a-z0-9` turned into one `-`, and cut short so that the
//!   whole name stays within 253 characters;
//! - `<hash>` is the first 16 hex digits of the SHA-256 of the PimGroup's name, the roleRef's
//!   apiGroup, kind and name and the namespace (empty for a ClusterRoleBinding), separated by NUL
//!   bytes (which none of them can contain).
//!
//! The readable part alone collides (`team` + `ops-readonly` and `team-ops` + `readonly`); the
//! hash does not, and the name is always a valid DNS subdomain. Earlier versions named bindings
//! `pim-<group>-<role>` (ClusterRoleBindings), `pim-<group>-role-<role>` and
//! `pim-<group>-clusterrole-<role>` (RoleBindings); see [`legacy_binding_name`].
//!
//! # Which bindings are ours
//!
//! A binding is this PimGroup's own only when all three hold:
//! - its label [`GROUP_LABEL`] is the PimGroup's ([`group_label_value`]),
//! - it has an ownerReference to the PimGroup with the PimGroup's uid,
//! - its roleRef is exactly (apiGroup, kind, name) the one the PimGroup asks for under that name.
//!
//! The name alone proves nothing: anyone allowed to create bindings can make one under a name we
//! would use. A binding that fails the check is never read for members, edited or deleted. When
//! the binding of a role the PimGroup confers fails it, `ensure_group` fails with a permanent
//! error that names the binding and what does not match (the PimGroup shows it as
//! `Ready=False`), and `add_member` refuses while it stands. `list_members` and `remove_member`
//! skip such a binding and go on over the bindings that are ours. For a PimGroup being deleted,
//! `ensure_group` does not fail on it, so what the PimGroup granted is taken back and its
//! finalizer can go. (Note: while `ensure_group` fails, the group controller makes no membership
//! change for that PimGroup at all, removals included, until the binding is dealt with.)
//!
//! The roleRef of an existing binding cannot be changed: the RBAC API rejects it with "cannot
//! change roleRef" (kubernetes `pkg/apis/rbac/validation/validation.go`,
//! `ValidateRoleBindingUpdate` / `ValidateClusterRoleBindingUpdate`, called from
//! `pkg/registry/rbac/{rolebinding,clusterrolebinding}/strategy.go`). So a roleRef is written
//! only when a binding is created; updates change subjects only.
//!
//! Bindings of roles the PimGroup no longer confers (the list shrank, or `spec.rbac` went away)
//! are deleted when ours (label, owner, and a name that is ours for their roleRef, under this or
//! the earlier scheme), so that no member keeps a dropped role. Every deletion is logged.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::sync::Mutex;

use async_trait::async_trait;
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{DeleteParams, ListParams, PostParams, Preconditions};
use kube::core::Resource;
use kube::{Api, Client};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use super::{Directory, DirectoryError, GroupId};
use crate::api::PimGroup;
use crate::api::common::Role;
use crate::api::pim_group::{RbacGrant, RoleKind};
use crate::core::membership::Member;

/// This backend's name, as `Directory::backend` reports it.
pub const BACKEND: &str = "kubernetes";

/// Label on every binding we own, with the PimGroup's name ([`group_label_value`]).
pub const GROUP_LABEL: &str = "pim.dev/group";
const RBAC_GROUP: &str = "rbac.authorization.k8s.io";
const FIELD_MANAGER: &str = "pim-operator";
/// Longest object name (a DNS subdomain).
const NAME_MAX: usize = 253;
/// Longest label value.
const LABEL_VALUE_MAX: usize = 63;
/// Hex digits of the hash in names and long label values.
const HASH_LEN: usize = 16;

/// The first [`HASH_LEN`] hex digits of the SHA-256 of `parts`, NUL-separated.
fn short_hash(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            hasher.update([0u8]);
        }
        hasher.update(part.as_bytes());
    }
    hasher
        .finalize()
        .iter()
        .flat_map(|b| [b >> 4, b & 0xf])
        .take(HASH_LEN)
        .map(|d| char::from_digit(u32::from(d), 16).unwrap_or('0'))
        .collect()
}

/// `text` lower-cased, with every run of characters other than `a-z0-9` turned into one `-`.
fn readable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out
}

/// The name of the binding of `role_ref` that the PimGroup `group` uses, in `namespace` (a
/// RoleBinding) or cluster-wide (`None`: a ClusterRoleBinding). See the module documentation.
pub fn binding_name(group: &str, role_ref: &RoleRef, namespace: Option<&str>) -> String {
    let hash = short_hash(&[
        group,
        &role_ref.api_group,
        &role_ref.kind,
        &role_ref.name,
        namespace.unwrap_or(""),
    ]);
    let prefix = readable(&format!("pim-{group}-{}", role_ref.name));
    let room = NAME_MAX - 1 - HASH_LEN;
    let prefix: String = prefix.chars().take(room).collect();
    format!("{}-{hash}", prefix.trim_end_matches('-'))
}

/// The name earlier versions gave the same binding; only to find and delete what they left.
pub fn legacy_binding_name(group: &str, role_ref: &RoleRef, namespace: Option<&str>) -> String {
    let suffix = match (namespace, role_ref.kind.as_str()) {
        (None, _) => role_ref.name.clone(),
        (Some(_), "Role") => format!("role-{}", role_ref.name),
        (Some(_), _) => format!("clusterrole-{}", role_ref.name),
    };
    format!("pim-{group}-{suffix}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(NAME_MAX)
        .collect()
}

/// The value of [`GROUP_LABEL`] for the PimGroup `group`: its name, or when that is longer than a
/// label value may be, its first characters and a hash of the whole name.
pub fn group_label_value(group: &str) -> String {
    if group.len() <= LABEL_VALUE_MAX {
        return group.to_owned();
    }
    let room = LABEL_VALUE_MAX - 1 - HASH_LEN;
    let prefix: String = group.chars().take(room).collect();
    let prefix = prefix.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    format!("{prefix}-{}", short_hash(&[group]))
}

/// One binding a PimGroup needs: a role, bound in a namespace or (`None`) cluster-wide.
#[derive(Debug, Clone, PartialEq)]
struct Target {
    namespace: Option<String>,
    role_ref: RoleRef,
}

impl Target {
    fn binding_name(&self, group: &GroupId) -> String {
        binding_name(&group.0, &self.role_ref, self.namespace.as_deref())
    }

    /// `ClusterRoleBinding NAME` or `RoleBinding NAMESPACE/NAME`, for messages.
    fn describe(&self, name: &str) -> String {
        describe(self.namespace.as_deref(), name)
    }
}

fn describe(namespace: Option<&str>, name: &str) -> String {
    match namespace {
        None => format!("ClusterRoleBinding {name}"),
        Some(namespace) => format!("RoleBinding {namespace}/{name}"),
    }
}

fn role_ref(kind: &str, name: &str) -> RoleRef {
    RoleRef {
        api_group: RBAC_GROUP.to_owned(),
        kind: kind.to_owned(),
        name: name.to_owned(),
    }
}

fn targets(rbac: &RbacGrant) -> Vec<Target> {
    let cluster = rbac.cluster_roles.iter().map(|r| Target {
        namespace: None,
        role_ref: role_ref("ClusterRole", r),
    });
    let namespaced = rbac.namespace_roles.iter().map(|r| Target {
        namespace: Some(r.namespace.clone()),
        role_ref: role_ref(
            match r.kind {
                RoleKind::Role => "Role",
                RoleKind::ClusterRole => "ClusterRole",
            },
            &r.name,
        ),
    });
    cluster.chain(namespaced).collect()
}

fn subject_of(member: &Member) -> Subject {
    let (kind, name) = match member {
        Member::User(u) => ("User", u),
        Member::Group(g) => ("Group", g),
    };
    Subject {
        api_group: Some(RBAC_GROUP.to_owned()),
        kind: kind.to_owned(),
        name: name.clone(),
        namespace: None,
    }
}

fn member_of(subject: &Subject) -> Option<Member> {
    match subject.kind.as_str() {
        "User" => Some(Member::User(subject.name.clone())),
        "Group" => Some(Member::Group(subject.name.clone())),
        _ => None,
    }
}

fn show_role_ref(r: &RoleRef) -> String {
    format!("{} {:?} (apiGroup {:?})", r.kind, r.name, r.api_group)
}

/// What keeps an existing binding from being the PimGroup's own binding of `want`: one phrase
/// per failed check; empty when it is ours.
fn mismatches(
    meta: &ObjectMeta,
    actual: &RoleRef,
    group: &GroupId,
    owner: &OwnerReference,
    want: &RoleRef,
) -> Vec<String> {
    let mut out = Vec::new();
    let label = group_label_value(&group.0);
    match meta.labels.as_ref().and_then(|l| l.get(GROUP_LABEL)) {
        None => out.push(format!("it has no label {GROUP_LABEL} (want {label:?})")),
        Some(value) if *value != label => out.push(format!(
            "its label {GROUP_LABEL} is {value:?}, not {label:?}"
        )),
        Some(_) => {}
    }
    if !owned_by(meta, owner) {
        out.push(format!(
            "it has no ownerReference to PimGroup {} (uid {})",
            owner.name, owner.uid
        ));
    }
    if actual != want {
        out.push(format!(
            "its roleRef is {}, not {}",
            show_role_ref(actual),
            show_role_ref(want)
        ));
    }
    out
}

/// Whether `meta` has an ownerReference to the PimGroup `owner` refers to, by uid.
fn owned_by(meta: &ObjectMeta, owner: &OwnerReference) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|r| r.uid == owner.uid && r.kind == owner.kind)
}

fn conflict_message(target: &Target, name: &str, mismatches: &[String]) -> String {
    format!(
        "{} is not this PimGroup's own binding: {}. It is left untouched and nothing is granted \
         through it; its roleRef cannot be changed, so delete it (or change the PimGroup's roles) \
         to let the operator create its own",
        target.describe(name),
        mismatches.join("; ")
    )
}

/// The two kinds of binding, alike but for their scope.
trait Binding:
    Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Serialize + Send + Sync + 'static
{
    /// The API for `namespace`; all namespaces (or cluster-wide) for `None`.
    fn api(client: Client, namespace: Option<&str>) -> Api<Self>;
    fn role_ref(&self) -> &RoleRef;
    fn subjects_mut(&mut self) -> &mut Option<Vec<Subject>>;
    fn build(metadata: ObjectMeta, role_ref: RoleRef, subjects: Vec<Subject>) -> Self;
}

impl Binding for ClusterRoleBinding {
    fn api(client: Client, _namespace: Option<&str>) -> Api<Self> {
        Api::all(client)
    }
    fn role_ref(&self) -> &RoleRef {
        &self.role_ref
    }
    fn subjects_mut(&mut self) -> &mut Option<Vec<Subject>> {
        &mut self.subjects
    }
    fn build(metadata: ObjectMeta, role_ref: RoleRef, subjects: Vec<Subject>) -> Self {
        ClusterRoleBinding {
            metadata,
            role_ref,
            subjects: Some(subjects),
        }
    }
}

impl Binding for RoleBinding {
    fn api(client: Client, namespace: Option<&str>) -> Api<Self> {
        match namespace {
            Some(namespace) => Api::namespaced(client, namespace),
            None => Api::all(client),
        }
    }
    fn role_ref(&self) -> &RoleRef {
        &self.role_ref
    }
    fn subjects_mut(&mut self) -> &mut Option<Vec<Subject>> {
        &mut self.subjects
    }
    fn build(metadata: ObjectMeta, role_ref: RoleRef, subjects: Vec<Subject>) -> Self {
        RoleBinding {
            metadata,
            role_ref,
            subjects: Some(subjects),
        }
    }
}

/// What `ensure_group` learnt about a PimGroup, for the calls that follow.
#[derive(Debug, Clone)]
struct Known {
    owner: OwnerReference,
    targets: Vec<Target>,
    /// Why no member may be added now: bindings the PimGroup needs that are not its own, or no
    /// `spec.rbac`.
    conflicts: Vec<String>,
}

/// What became of one binding's edit.
enum Edited {
    /// Written, or nothing to write.
    Done,
    /// The binding exists and is not ours: left as it is, for this reason.
    NotOurs(String),
}

pub struct KubernetesDirectory {
    client: Client,
    known: Mutex<BTreeMap<GroupId, Known>>,
}

fn transient(operation: &'static str, error: kube::Error) -> DirectoryError {
    match &error {
        kube::Error::Api(s) if (400..500).contains(&s.code) && s.code != 409 && s.code != 429 => {
            DirectoryError::permanent(operation, error.to_string())
        }
        _ => DirectoryError::transient(operation, error.to_string()),
    }
}

/// `error`, of the same kind, with `note` added to its message.
fn with_note(error: DirectoryError, note: &str) -> DirectoryError {
    match error {
        DirectoryError::Transient {
            operation,
            message,
            retry_after,
            refused,
        } => DirectoryError::Transient {
            operation,
            message: format!("{message}; {note}"),
            retry_after,
            refused,
        },
        DirectoryError::Permanent { operation, message } => DirectoryError::Permanent {
            operation,
            message: format!("{message}; {note}"),
        },
    }
}

impl KubernetesDirectory {
    pub fn new(client: Client) -> Self {
        KubernetesDirectory {
            client,
            known: Mutex::new(BTreeMap::new()),
        }
    }

    fn known(&self, group: &GroupId, operation: &'static str) -> Result<Known, DirectoryError> {
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(group)
            .cloned()
            .ok_or_else(|| {
                DirectoryError::transient(
                    operation,
                    format!("PimGroup {} not resolved yet", group.0),
                )
            })
    }

    fn selector(group: &GroupId) -> ListParams {
        ListParams::default().labels(&format!("{GROUP_LABEL}={}", group_label_value(&group.0)))
    }

    fn api<B: Binding>(&self, target: &Target) -> Api<B> {
        B::api(self.client.clone(), target.namespace.as_deref())
    }

    /// Reads the binding of `target`: `Ok(None)` when absent, `Err(reason)` inside when it exists
    /// and is not ours.
    async fn read<B: Binding>(
        &self,
        group: &GroupId,
        known: &Known,
        target: &Target,
        operation: &'static str,
    ) -> Result<Option<Result<B, String>>, DirectoryError> {
        let name = target.binding_name(group);
        let Some(binding) = self
            .api::<B>(target)
            .get_opt(&name)
            .await
            .map_err(|e| transient(operation, e))?
        else {
            return Ok(None);
        };
        let wrong = mismatches(
            binding.meta(),
            binding.role_ref(),
            group,
            &known.owner,
            &target.role_ref,
        );
        if wrong.is_empty() {
            Ok(Some(Ok(binding)))
        } else {
            Ok(Some(Err(conflict_message(target, &name, &wrong))))
        }
    }

    /// The subjects of the binding of `target`, when it exists and is ours; `Err(reason)` inside
    /// when it exists and is not.
    async fn subjects(
        &self,
        group: &GroupId,
        known: &Known,
        target: &Target,
        operation: &'static str,
    ) -> Result<Result<Vec<Subject>, String>, DirectoryError> {
        async fn of<B: Binding>(
            dir: &KubernetesDirectory,
            group: &GroupId,
            known: &Known,
            target: &Target,
            operation: &'static str,
        ) -> Result<Result<Vec<Subject>, String>, DirectoryError> {
            Ok(
                match dir.read::<B>(group, known, target, operation).await? {
                    None => Ok(Vec::new()),
                    Some(Ok(mut binding)) => Ok(binding.subjects_mut().take().unwrap_or_default()),
                    Some(Err(reason)) => Err(reason),
                },
            )
        }
        match target.namespace {
            None => of::<ClusterRoleBinding>(self, group, known, target, operation).await,
            Some(_) => of::<RoleBinding>(self, group, known, target, operation).await,
        }
    }

    /// Rewrites the subjects of one binding with `edit`, creating the binding when absent and
    /// `edit` leaves someone in it. Only a binding that is ours is written, and only its subjects
    /// (its roleRef cannot change). The replace carries the resourceVersion read, so a concurrent
    /// change fails rather than being lost.
    async fn edit_binding(
        &self,
        group: &GroupId,
        known: &Known,
        target: &Target,
        operation: &'static str,
        edit: &(dyn Fn(&mut Vec<Subject>) + Send + Sync),
    ) -> Result<Edited, DirectoryError> {
        match target.namespace {
            None => {
                self.edit::<ClusterRoleBinding>(group, known, target, operation, edit)
                    .await
            }
            Some(_) => {
                self.edit::<RoleBinding>(group, known, target, operation, edit)
                    .await
            }
        }
    }

    async fn edit<B: Binding>(
        &self,
        group: &GroupId,
        known: &Known,
        target: &Target,
        operation: &'static str,
        edit: &(dyn Fn(&mut Vec<Subject>) + Send + Sync),
    ) -> Result<Edited, DirectoryError> {
        let api = self.api::<B>(target);
        let name = target.binding_name(group);
        let post = PostParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..Default::default()
        };
        match self.read::<B>(group, known, target, operation).await? {
            Some(Err(reason)) => Ok(Edited::NotOurs(reason)),
            Some(Ok(mut binding)) => {
                let mut subjects = binding.subjects_mut().take().unwrap_or_default();
                let before = subjects.clone();
                edit(&mut subjects);
                if subjects != before {
                    *binding.subjects_mut() = Some(subjects);
                    api.replace(&name, &post, &binding)
                        .await
                        .map_err(|e| transient(operation, e))?;
                }
                Ok(Edited::Done)
            }
            None => {
                let mut subjects = Vec::new();
                edit(&mut subjects);
                if !subjects.is_empty() {
                    let metadata = ObjectMeta {
                        name: Some(name),
                        namespace: target.namespace.clone(),
                        labels: Some(BTreeMap::from([(
                            GROUP_LABEL.to_owned(),
                            group_label_value(&group.0),
                        )])),
                        owner_references: Some(vec![known.owner.clone()]),
                        ..Default::default()
                    };
                    let binding = B::build(metadata, target.role_ref.clone(), subjects);
                    api.create(&post, &binding)
                        .await
                        .map_err(|e| transient(operation, e))?;
                }
                Ok(Edited::Done)
            }
        }
    }

    /// Why the bindings of `targets` that exist are not ours, one message per binding.
    async fn conflicts(
        &self,
        group: &GroupId,
        known: &Known,
    ) -> Result<Vec<String>, DirectoryError> {
        let mut out = Vec::new();
        for target in &known.targets {
            if let Err(reason) = self.subjects(group, known, target, "resolve group").await? {
                out.push(reason);
            }
        }
        Ok(out)
    }

    /// Deletes the bindings of roles the PimGroup no longer confers. Only bindings that are ours
    /// go: our label (the list selects by it), an ownerReference with the PimGroup's uid, and a
    /// name that is the one we give (or gave) their roleRef in their namespace. Bindings of the
    /// roles still wanted are left to the ownership check of the calls that use them.
    async fn prune(
        &self,
        group: &GroupId,
        owner: &OwnerReference,
        wanted: &[Target],
    ) -> Result<(), DirectoryError> {
        self.prune_kind::<ClusterRoleBinding>(group, owner, wanted)
            .await?;
        self.prune_kind::<RoleBinding>(group, owner, wanted).await
    }

    async fn prune_kind<B: Binding>(
        &self,
        group: &GroupId,
        owner: &OwnerReference,
        wanted: &[Target],
    ) -> Result<(), DirectoryError> {
        const OPERATION: &str = "prune bindings";
        let all = B::api(self.client.clone(), None)
            .list(&Self::selector(group))
            .await
            .map_err(|e| transient(OPERATION, e))?;
        for binding in all {
            let meta = binding.meta();
            let name = meta.name.clone().unwrap_or_default();
            let namespace = meta.namespace.as_deref();
            let still_wanted = wanted
                .iter()
                .any(|t| t.namespace.as_deref() == namespace && t.binding_name(group) == name);
            if still_wanted {
                continue;
            }
            let role_ref = binding.role_ref();
            let ours = mismatches(meta, role_ref, group, owner, role_ref).is_empty()
                && (name == binding_name(&group.0, role_ref, namespace)
                    || name == legacy_binding_name(&group.0, role_ref, namespace));
            let what = describe(namespace, &name);
            if !ours {
                tracing::debug!(
                    binding = %what,
                    pim_group = %group.0,
                    "a binding with the PimGroup's label that is not its own is left alone"
                );
                continue;
            }
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: meta.uid.clone(),
                    resource_version: meta.resource_version.clone(),
                }),
                ..Default::default()
            };
            match B::api(self.client.clone(), namespace)
                .delete(&name, &params)
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(transient(OPERATION, e)),
            }
            tracing::info!(
                binding = %what,
                pim_group = %group.0,
                role = %show_role_ref(role_ref),
                "deleted the binding of a role the PimGroup no longer confers"
            );
        }
        Ok(())
    }
}

#[async_trait]
impl Directory for KubernetesDirectory {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    /// An RBAC subject is its name.
    async fn principal_id(&self, member: &Member) -> Result<Option<String>, DirectoryError> {
        let (Member::User(name) | Member::Group(name)) = member;
        Ok(Some(name.clone()))
    }

    async fn ensure_group(&self, group: &PimGroup) -> Result<GroupId, DirectoryError> {
        let id = GroupId(group.meta().name.clone().unwrap_or_default());
        let Some(owner) = group.controller_owner_ref(&()) else {
            return Err(DirectoryError::transient(
                "resolve group",
                "the PimGroup has no uid yet",
            ));
        };
        let wanted = group.spec.rbac.as_ref().map(targets).unwrap_or_default();
        // First, so that a role dropped from the spec (or all of them) is taken back even when
        // what remains cannot be used.
        self.prune(&id, &owner, &wanted).await?;
        let mut known = Known {
            owner,
            targets: wanted,
            conflicts: Vec::new(),
        };
        known.conflicts = if group.spec.rbac.is_none() {
            vec![
                "the kubernetes directory needs spec.rbac to name the roles the group confers"
                    .to_owned(),
            ]
        } else {
            self.conflicts(&id, &known).await?
        };
        let conflicts = known.conflicts.clone();
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), known);
        // A PimGroup being deleted only takes back what it granted, through its own bindings:
        // neither a foreign binding nor a missing spec.rbac holds that up.
        if !conflicts.is_empty() && group.meta().deletion_timestamp.is_none() {
            return Err(DirectoryError::permanent(
                "resolve group",
                conflicts.join(" | "),
            ));
        }
        Ok(id)
    }

    /// A member counts when any of our bindings names them, so a half-finished removal is still
    /// seen and finished; revocation errs on the side of removing. A binding that is not ours is
    /// not read.
    async fn list_members(
        &self,
        group: &GroupId,
        role: Role,
    ) -> Result<BTreeSet<Member>, DirectoryError> {
        if role == Role::Owner {
            return Ok(BTreeSet::new());
        }
        let known = self.known(group, "list members")?;
        let mut members = BTreeSet::new();
        for target in &known.targets {
            match self.subjects(group, &known, target, "list members").await? {
                Ok(subjects) => members.extend(subjects.iter().filter_map(member_of)),
                Err(reason) => {
                    tracing::warn!(pim_group = %group.0, "{reason}");
                }
            }
        }
        Ok(members)
    }

    async fn add_member(
        &self,
        group: &GroupId,
        role: Role,
        member: &Member,
    ) -> Result<(), DirectoryError> {
        const OPERATION: &str = "add member";
        if role == Role::Owner {
            return Err(DirectoryError::permanent(
                OPERATION,
                "the kubernetes directory has no owner role",
            ));
        }
        let known = self.known(group, OPERATION)?;
        if !known.conflicts.is_empty() {
            return Err(DirectoryError::permanent(
                OPERATION,
                known.conflicts.join(" | "),
            ));
        }
        let subject = subject_of(member);
        let add = |subjects: &mut Vec<Subject>| {
            if !subjects.contains(&subject) {
                subjects.push(subject.clone());
            }
        };
        let take_back = |subjects: &mut Vec<Subject>| subjects.retain(|s| s != &subject);
        for (done, target) in known.targets.iter().enumerate() {
            let failed = match self
                .edit_binding(group, &known, target, OPERATION, &add)
                .await
            {
                Ok(Edited::Done) => None,
                Ok(Edited::NotOurs(reason)) => Some(DirectoryError::permanent(OPERATION, reason)),
                Err(error) => Some(error),
            };
            if let Some(error) = failed {
                // All or nothing: a member in only some bindings would be listed as present and
                // never completed. Undo what was written; the retry adds to every binding.
                let mut left = Vec::new();
                for undo in &known.targets[..done] {
                    let binding = undo.describe(&undo.binding_name(group));
                    let why = match self
                        .edit_binding(group, &known, undo, OPERATION, &take_back)
                        .await
                    {
                        Ok(Edited::Done) => continue,
                        Ok(Edited::NotOurs(reason)) => reason,
                        Err(error) => error.to_string(),
                    };
                    tracing::warn!(pim_group = %group.0, %member, %binding, %why, "could not take back a partial add; the member stays in that binding until a retry completes or removes it");
                    left.push(format!("{binding} ({why})"));
                }
                if left.is_empty() {
                    return Err(error);
                }
                return Err(with_note(
                    error,
                    &format!(
                        "{member} is left in {} after a failed undo",
                        left.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Removes the member from every binding of the group that is ours; a binding that is not
    /// ours is left as it is (we granted nothing through it).
    async fn remove_member(
        &self,
        group: &GroupId,
        role: Role,
        member: &Member,
    ) -> Result<(), DirectoryError> {
        const OPERATION: &str = "remove member";
        if role == Role::Owner {
            return Ok(());
        }
        let known = self.known(group, OPERATION)?;
        let subject = subject_of(member);
        let remove = |subjects: &mut Vec<Subject>| subjects.retain(|s| s != &subject);
        for target in &known.targets {
            if let Edited::NotOurs(reason) = self
                .edit_binding(group, &known, target, OPERATION, &remove)
                .await?
            {
                tracing::warn!(pim_group = %group.0, %member, "{reason}");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster_role(name: &str) -> RoleRef {
        role_ref("ClusterRole", name)
    }

    fn is_dns_subdomain(name: &str) -> bool {
        !name.is_empty()
            && name.len() <= NAME_MAX
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            })
    }

    // Issue 14 finding 4: `pim-{group}-{role}` made `team` + `ops-readonly` and `team-ops` +
    // `readonly` share a binding.
    #[test]
    fn issue14_finding4_names_of_different_bindings_differ() {
        let a = binding_name("team", &cluster_role("ops-readonly"), None);
        let b = binding_name("team-ops", &cluster_role("readonly"), None);
        assert_ne!(a, b);
        assert!(a.starts_with("pim-team-ops-readonly-"), "{a}");
        // Kind, namespace and characters turned into `-` all count.
        let names = [
            binding_name("g", &role_ref("Role", "x"), Some("ns")),
            binding_name("g", &role_ref("ClusterRole", "x"), Some("ns")),
            binding_name("g", &role_ref("ClusterRole", "x"), Some("ns2")),
            binding_name("g", &role_ref("ClusterRole", "x"), None),
            binding_name("g", &role_ref("ClusterRole", "a:b"), None),
            binding_name("g", &role_ref("ClusterRole", "a-b"), None),
            binding_name("g", &role_ref("ClusterRole", "A-b"), None),
        ];
        let distinct: BTreeSet<_> = names.iter().collect();
        assert_eq!(distinct.len(), names.len(), "{names:?}");
    }

    #[test]
    fn names_are_stable() {
        // A change here renames every binding in every cluster: the old ones would be deleted
        // and re-created only through `legacy_binding_name`.
        assert_eq!(
            binding_name("team", &cluster_role("view"), None),
            "pim-team-view-a7e8e6d29ea5fa2e"
        );
        assert_eq!(
            binding_name("team-ops", &cluster_role("readonly"), None),
            "pim-team-ops-readonly-b8a78aa5dc0fd5da"
        );
        assert_eq!(short_hash(&["a"]).len(), HASH_LEN);
        assert_eq!(short_hash(&[""]), "e3b0c44298fc1c14");
    }

    #[test]
    fn names_are_dns_subdomains_of_at_most_253_characters() {
        let long = "a".repeat(253);
        let dotted = format!("{}.b", "x".repeat(240));
        let cases = [
            ("team", "view".to_owned()),
            ("team", "system:aggregate-to-view".to_owned()),
            ("team", "Weird_Name..x".to_owned()),
            ("team", "-".to_owned()),
            (long.as_str(), long.clone()),
            (dotted.as_str(), "ünïcödé".to_owned()),
        ];
        for (group, role) in cases {
            for namespace in [None, Some("payments")] {
                let name = binding_name(group, &cluster_role(&role), namespace);
                assert!(is_dns_subdomain(&name), "{name:?}");
                assert!(name.len() <= NAME_MAX);
            }
        }
        let a = binding_name(&long, &cluster_role(&format!("{long}1")), None);
        let b = binding_name(&long, &cluster_role(&format!("{long}2")), None);
        assert_ne!(a, b, "names cut short still differ");
        assert_eq!(a.len(), NAME_MAX);
    }

    #[test]
    fn label_values_fit() {
        assert_eq!(group_label_value("team"), "team");
        let at_max = "a".repeat(LABEL_VALUE_MAX);
        assert_eq!(group_label_value(&at_max), at_max);
        let long = format!("{}.b-{}", "a".repeat(44), "c".repeat(40));
        let value = group_label_value(&long);
        assert!(value.len() <= LABEL_VALUE_MAX, "{value}");
        assert!(value.starts_with(&"a".repeat(44)));
        assert_ne!(value, group_label_value(&format!("{long}x")));
        assert!(
            value
                .chars()
                .last()
                .is_some_and(|c| c.is_ascii_alphanumeric())
        );
    }

    #[test]
    fn legacy_names_are_the_earlier_ones() {
        assert_eq!(
            legacy_binding_name("ops", &cluster_role("view"), None),
            "pim-ops-view"
        );
        assert_eq!(
            legacy_binding_name("ops", &role_ref("Role", "deployer"), Some("payments")),
            "pim-ops-role-deployer"
        );
        assert_eq!(
            legacy_binding_name("ops", &cluster_role("edit"), Some("payments")),
            "pim-ops-clusterrole-edit"
        );
    }

    fn owner(uid: &str) -> OwnerReference {
        OwnerReference {
            api_version: "pim.dev/v1alpha1".into(),
            kind: "PimGroup".into(),
            name: "team".into(),
            uid: uid.into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    fn meta(label: Option<&str>, owners: &[OwnerReference]) -> ObjectMeta {
        ObjectMeta {
            labels: label.map(|l| BTreeMap::from([(GROUP_LABEL.to_owned(), l.to_owned())])),
            owner_references: (!owners.is_empty()).then(|| owners.to_vec()),
            ..Default::default()
        }
    }

    // Issue 14 finding 4: a binding is ours only by label, owner uid and exact roleRef.
    #[test]
    fn issue14_finding4_a_binding_is_ours_only_by_label_owner_and_role_ref() {
        let group = GroupId("team".into());
        let ours = owner("uid-1");
        let view = cluster_role("view");
        let ok = meta(Some("team"), std::slice::from_ref(&ours));
        assert!(mismatches(&ok, &view, &group, &ours, &view).is_empty());

        let hand_made = meta(None, &[]);
        let wrong = mismatches(
            &hand_made,
            &cluster_role("cluster-admin"),
            &group,
            &ours,
            &view,
        );
        assert_eq!(wrong.len(), 3, "{wrong:?}");
        assert!(wrong[0].contains("no label"));
        assert!(wrong[1].contains("no ownerReference") && wrong[1].contains("uid-1"));
        assert!(wrong[2].contains("cluster-admin") && wrong[2].contains("view"));

        let other_label = meta(Some("team-ops"), std::slice::from_ref(&ours));
        assert_eq!(
            mismatches(&other_label, &view, &group, &ours, &view).len(),
            1
        );
        // A PimGroup of the same name deleted and made again has another uid.
        let old_owner = meta(Some("team"), &[owner("uid-0")]);
        assert_eq!(mismatches(&old_owner, &view, &group, &ours, &view).len(), 1);
        for other in [
            role_ref("Role", "view"),
            RoleRef {
                api_group: "example.com".into(),
                ..view.clone()
            },
            cluster_role("View"),
        ] {
            let wrong = mismatches(&ok, &other, &group, &ours, &view);
            assert_eq!(wrong.len(), 1, "{other:?}");
        }
        let target = Target {
            namespace: Some("payments".into()),
            role_ref: view,
        };
        let message = conflict_message(&target, "pim-x", &["it has no label".into()]);
        assert!(
            message.starts_with("RoleBinding payments/pim-x is not"),
            "{message}"
        );
    }
}

#[cfg(test)]
mod rollback_tests {
    use super::*;
    use crate::api::pim_group::{
        DirectoryGroupRef, GroupRoles, NamespaceRole, PimGroupSpec, RoleSettings,
    };
    use pim_testkit::fake_apiserver::{FakeApiServer, FaultScope, Options, Verb};

    fn group_with_two_bindings() -> PimGroup {
        let spec = PimGroupSpec {
            directory: "kubernetes".into(),
            group: DirectoryGroupRef {
                id: Some("ops".into()),
                ..Default::default()
            },
            roles: GroupRoles {
                member: RoleSettings { policy: "p".into() },
                owner: None,
            },
            standing_access: Default::default(),
            rbac: Some(RbacGrant {
                cluster_roles: vec!["view".into()],
                namespace_roles: vec![NamespaceRole {
                    namespace: "team".into(),
                    kind: RoleKind::ClusterRole,
                    name: "edit".into(),
                }],
            }),
            ..Default::default()
        };
        let mut group = PimGroup::new("ops", spec);
        group.metadata.uid = Some("ops-uid".into());
        group
    }

    fn cluster_binding_users(server: &FakeApiServer, name: &str) -> Vec<String> {
        server
            .store_get("clusterrolebindings", None, name)
            .and_then(|b| b.get("subjects").cloned())
            .and_then(|s| s.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|s| s.get("name")?.as_str().map(str::to_owned))
            .collect()
    }

    // Issue 22: when the second binding of an add failed and taking the member back out of the
    // first failed too, that second failure was dropped: the error said nothing of a member
    // left in a binding.
    #[tokio::test]
    async fn a_failed_undo_of_a_partial_add_is_named_in_the_error() {
        let server = FakeApiServer::in_memory(Options::default());
        let directory = KubernetesDirectory::new(server.client());
        let group = directory
            .ensure_group(&group_with_two_bindings())
            .await
            .unwrap();
        let cluster = binding_name("ops", &role_ref("ClusterRole", "view"), None);
        let bob = Member::User("bob".into());
        // The ClusterRoleBinding is created; the RoleBinding is refused; so is the undo.
        server.fail_next_in(1, 500, FaultScope::writes().resource("rolebindings"));
        server.fail_next_in(
            1,
            500,
            FaultScope::writes()
                .resource("clusterrolebindings")
                .verb(Verb::Update),
        );
        let error = directory
            .add_member(&group, Role::Member, &bob)
            .await
            .unwrap_err();
        assert!(error.is_transient(), "{error}");
        let message = error.to_string();
        assert!(
            message.contains(&format!(
                "user:bob is left in ClusterRoleBinding {cluster} ("
            )),
            "{message}"
        );
        assert_eq!(cluster_binding_users(&server, &cluster), ["bob"]);

        // An undo that goes through leaves nothing behind and nothing to report.
        server.fail_next_in(1, 500, FaultScope::writes().resource("rolebindings"));
        let error = directory
            .add_member(&group, Role::Member, &bob)
            .await
            .unwrap_err();
        assert!(!error.to_string().contains("left in"), "{error}");
        assert!(cluster_binding_users(&server, &cluster).is_empty());
    }
}
