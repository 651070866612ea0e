//! The embedded default directory: Kubernetes RBAC. A PimGroup names the roles it confers
//! (`spec.rbac`); its members are the subjects of one binding per role, owned by the PimGroup so
//! that deleting the PimGroup deletes the bindings. RBAC is evaluated per API request, so a
//! change takes effect at once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use async_trait::async_trait;
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{ListParams, PostParams};
use kube::core::Resource;
use kube::{Api, Client};

use super::{Directory, DirectoryError, GroupId};
use crate::api::PimGroup;
use crate::api::common::Role;
use crate::api::pim_group::{RbacGrant, RoleKind};
use crate::core::membership::Member;

/// Label on every binding we own, with the PimGroup's name.
pub const GROUP_LABEL: &str = "pim.dev/group";
const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// One binding a PimGroup needs.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Cluster {
        cluster_role: String,
    },
    Namespace {
        namespace: String,
        kind: RoleKind,
        name: String,
    },
}

impl Target {
    fn binding_name(&self, group: &str) -> String {
        let suffix = match self {
            Target::Cluster { cluster_role } => cluster_role.clone(),
            Target::Namespace {
                kind: RoleKind::Role,
                name,
                ..
            } => format!("role-{name}"),
            Target::Namespace {
                kind: RoleKind::ClusterRole,
                name,
                ..
            } => format!("clusterrole-{name}"),
        };
        let name: String = format!("pim-{group}-{suffix}")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect();
        name.chars().take(253).collect()
    }

    fn role_ref(&self) -> RoleRef {
        let (kind, name) = match self {
            Target::Cluster { cluster_role } => ("ClusterRole", cluster_role.as_str()),
            Target::Namespace {
                kind: RoleKind::Role,
                name,
                ..
            } => ("Role", name.as_str()),
            Target::Namespace {
                kind: RoleKind::ClusterRole,
                name,
                ..
            } => ("ClusterRole", name.as_str()),
        };
        RoleRef {
            api_group: RBAC_GROUP.to_owned(),
            kind: kind.to_owned(),
            name: name.to_owned(),
        }
    }
}

fn targets(rbac: &RbacGrant) -> Vec<Target> {
    let cluster = rbac.cluster_roles.iter().map(|r| Target::Cluster {
        cluster_role: r.clone(),
    });
    let namespaced = rbac.namespace_roles.iter().map(|r| Target::Namespace {
        namespace: r.namespace.clone(),
        kind: r.kind,
        name: r.name.clone(),
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

/// What `ensure_group` learnt about a PimGroup, for the calls that follow.
#[derive(Debug, Clone)]
struct Known {
    owner: OwnerReference,
    targets: Vec<Target>,
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

    fn labels(group: &GroupId) -> BTreeMap<String, String> {
        BTreeMap::from([(GROUP_LABEL.to_owned(), group.0.clone())])
    }

    fn selector(group: &GroupId) -> ListParams {
        ListParams::default().labels(&format!("{GROUP_LABEL}={}", group.0))
    }

    /// Reads the subjects of every binding of the group: `(target, subjects)` for those that exist.
    async fn subjects(
        &self,
        group: &GroupId,
        known: &Known,
    ) -> Result<Vec<(Target, Vec<Subject>)>, DirectoryError> {
        let mut out = Vec::new();
        for target in &known.targets {
            let name = target.binding_name(&group.0);
            let subjects = match target {
                Target::Cluster { .. } => {
                    let api: Api<ClusterRoleBinding> = Api::all(self.client.clone());
                    api.get_opt(&name)
                        .await
                        .map_err(|e| transient("list members", e))?
                        .map(|b| b.subjects.unwrap_or_default())
                }
                Target::Namespace { namespace, .. } => {
                    let api: Api<RoleBinding> = Api::namespaced(self.client.clone(), namespace);
                    api.get_opt(&name)
                        .await
                        .map_err(|e| transient("list members", e))?
                        .map(|b| b.subjects.unwrap_or_default())
                }
            };
            out.push((target.clone(), subjects.unwrap_or_default()));
        }
        Ok(out)
    }

    /// Rewrites one binding with `edit` applied to its subjects, creating it when absent. The
    /// replace carries the resourceVersion read, so a concurrent change fails rather than being lost.
    async fn edit_binding(
        &self,
        group: &GroupId,
        known: &Known,
        target: &Target,
        operation: &'static str,
        edit: impl Fn(&mut Vec<Subject>),
    ) -> Result<(), DirectoryError> {
        let name = target.binding_name(&group.0);
        let meta = ObjectMeta {
            name: Some(name.clone()),
            labels: Some(Self::labels(group)),
            owner_references: Some(vec![known.owner.clone()]),
            ..Default::default()
        };
        let post = PostParams {
            field_manager: Some("pim-operator".to_owned()),
            ..Default::default()
        };
        match target {
            Target::Cluster { .. } => {
                let api: Api<ClusterRoleBinding> = Api::all(self.client.clone());
                match api
                    .get_opt(&name)
                    .await
                    .map_err(|e| transient(operation, e))?
                {
                    Some(mut binding) => {
                        let mut subjects = binding.subjects.take().unwrap_or_default();
                        let before = subjects.clone();
                        edit(&mut subjects);
                        if subjects != before {
                            binding.subjects = Some(subjects);
                            api.replace(&name, &post, &binding)
                                .await
                                .map_err(|e| transient(operation, e))?;
                        }
                    }
                    None => {
                        let mut subjects = Vec::new();
                        edit(&mut subjects);
                        if !subjects.is_empty() {
                            let binding = ClusterRoleBinding {
                                metadata: meta,
                                role_ref: target.role_ref(),
                                subjects: Some(subjects),
                            };
                            api.create(&post, &binding)
                                .await
                                .map_err(|e| transient(operation, e))?;
                        }
                    }
                }
            }
            Target::Namespace { namespace, .. } => {
                let api: Api<RoleBinding> = Api::namespaced(self.client.clone(), namespace);
                match api
                    .get_opt(&name)
                    .await
                    .map_err(|e| transient(operation, e))?
                {
                    Some(mut binding) => {
                        let mut subjects = binding.subjects.take().unwrap_or_default();
                        let before = subjects.clone();
                        edit(&mut subjects);
                        if subjects != before {
                            binding.subjects = Some(subjects);
                            api.replace(&name, &post, &binding)
                                .await
                                .map_err(|e| transient(operation, e))?;
                        }
                    }
                    None => {
                        let mut subjects = Vec::new();
                        edit(&mut subjects);
                        if !subjects.is_empty() {
                            let meta = ObjectMeta {
                                namespace: Some(namespace.clone()),
                                ..meta
                            };
                            let binding = RoleBinding {
                                metadata: meta,
                                role_ref: target.role_ref(),
                                subjects: Some(subjects),
                            };
                            api.create(&post, &binding)
                                .await
                                .map_err(|e| transient(operation, e))?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Deletes bindings of the group whose role the spec no longer names.
    async fn prune(&self, group: &GroupId, wanted: &[Target]) -> Result<(), DirectoryError> {
        let names: BTreeSet<String> = wanted.iter().map(|t| t.binding_name(&group.0)).collect();
        let cluster: Api<ClusterRoleBinding> = Api::all(self.client.clone());
        for binding in cluster
            .list(&Self::selector(group))
            .await
            .map_err(|e| transient("prune bindings", e))?
        {
            let name = binding.metadata.name.clone().unwrap_or_default();
            if !names.contains(&name) {
                cluster
                    .delete(&name, &Default::default())
                    .await
                    .map_err(|e| transient("prune bindings", e))?;
            }
        }
        let namespaced: Api<RoleBinding> = Api::all(self.client.clone());
        for binding in namespaced
            .list(&Self::selector(group))
            .await
            .map_err(|e| transient("prune bindings", e))?
        {
            let name = binding.metadata.name.clone().unwrap_or_default();
            let namespace = binding.metadata.namespace.clone().unwrap_or_default();
            let still_wanted = wanted.iter().any(|t| {
                matches!(t, Target::Namespace { namespace: ns, .. } if *ns == namespace)
                    && t.binding_name(&group.0) == name
            });
            if !still_wanted {
                let api: Api<RoleBinding> = Api::namespaced(self.client.clone(), &namespace);
                api.delete(&name, &Default::default())
                    .await
                    .map_err(|e| transient("prune bindings", e))?;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Directory for KubernetesDirectory {
    fn backend(&self) -> &'static str {
        "kubernetes"
    }

    /// An RBAC subject is its name.
    async fn principal_id(&self, member: &Member) -> Result<Option<String>, DirectoryError> {
        let (Member::User(name) | Member::Group(name)) = member;
        Ok(Some(name.clone()))
    }

    async fn ensure_group(&self, group: &PimGroup) -> Result<GroupId, DirectoryError> {
        let name = group.meta().name.clone().unwrap_or_default();
        let Some(rbac) = &group.spec.rbac else {
            return Err(DirectoryError::permanent(
                "resolve group",
                "the kubernetes directory needs spec.rbac to name the roles the group confers",
            ));
        };
        let Some(owner) = group.controller_owner_ref(&()) else {
            return Err(DirectoryError::transient(
                "resolve group",
                "the PimGroup has no uid yet",
            ));
        };
        let id = GroupId(name);
        let wanted = targets(rbac);
        self.prune(&id, &wanted).await?;
        self.known.lock().unwrap_or_else(|e| e.into_inner()).insert(
            id.clone(),
            Known {
                owner,
                targets: wanted,
            },
        );
        Ok(id)
    }

    /// A member counts when any binding names them, so a half-finished removal is still seen
    /// and finished; revocation errs on the side of removing.
    async fn list_members(
        &self,
        group: &GroupId,
        role: Role,
    ) -> Result<BTreeSet<Member>, DirectoryError> {
        if role == Role::Owner {
            return Ok(BTreeSet::new());
        }
        let known = self.known(group, "list members")?;
        let subjects = self.subjects(group, &known).await?;
        Ok(subjects
            .iter()
            .flat_map(|(_, s)| s.iter().filter_map(member_of))
            .collect())
    }

    async fn add_member(
        &self,
        group: &GroupId,
        role: Role,
        member: &Member,
    ) -> Result<(), DirectoryError> {
        if role == Role::Owner {
            return Err(DirectoryError::permanent(
                "add member",
                "the kubernetes directory has no owner role",
            ));
        }
        let known = self.known(group, "add member")?;
        let subject = subject_of(member);
        for (done, target) in known.targets.iter().enumerate() {
            let added = self
                .edit_binding(group, &known, target, "add member", |subjects| {
                    if !subjects.contains(&subject) {
                        subjects.push(subject.clone());
                    }
                })
                .await;
            if let Err(error) = added {
                // All or nothing: a member in only some bindings would be listed as present and
                // never completed. Undo what was written; the retry adds to every binding.
                for undo in &known.targets[..done] {
                    let _ = self
                        .edit_binding(group, &known, undo, "add member", |subjects| {
                            subjects.retain(|s| s != &subject)
                        })
                        .await;
                }
                return Err(error);
            }
        }
        Ok(())
    }

    async fn remove_member(
        &self,
        group: &GroupId,
        role: Role,
        member: &Member,
    ) -> Result<(), DirectoryError> {
        if role == Role::Owner {
            return Ok(());
        }
        let known = self.known(group, "remove member")?;
        let subject = subject_of(member);
        for target in &known.targets {
            self.edit_binding(group, &known, target, "remove member", |subjects| {
                subjects.retain(|s| s != &subject)
            })
            .await?;
        }
        Ok(())
    }
}
