//! The kubernetes RBAC directory end to end: the real controllers and the real kube client
//! against the in-process fake API server, with the kubernetes directory the operator always has.
//!
//! Issue 14 finding 4 (and the binding parts of finding 1): a binding is this PimGroup's own only
//! when it carries the PimGroup's label, an ownerReference with the PimGroup's uid and exactly the
//! roleRef the PimGroup asks for. Any other binding, whatever its name or labels, is never read
//! for members, edited or deleted; a wanted binding that fails the check is reported on the
//! PimGroup (`Ready=False`) and nothing is granted through it. Binding names cannot collide
//! between PimGroups. The fake API server has no garbage collector and no RBAC authorization;
//! neither matters here.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::operator;

use std::time::Duration;

use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use pim_operator::api::PimGroup;
use pim_operator::api::activation_request::Phase;
use pim_operator::api::pim_group::{
    DirectoryGroupRef, GroupRoles, NamespaceRole, PimGroupSpec, RbacGrant, RoleKind, RoleSettings,
    StandingAccess,
};
use pim_operator::directory::kubernetes::{GROUP_LABEL, binding_name};
use pim_testkit::fake_apiserver::Verb;

use operator::{Harness, eventually};

const RBAC: &str = "rbac.authorization.k8s.io";

fn role_ref(kind: &str, name: &str) -> RoleRef {
    RoleRef {
        api_group: RBAC.into(),
        kind: kind.into(),
        name: name.into(),
    }
}

fn user(name: &str) -> Subject {
    Subject {
        api_group: Some(RBAC.into()),
        kind: "User".into(),
        name: name.into(),
        namespace: None,
    }
}

fn users(subjects: Option<Vec<Subject>>) -> Vec<String> {
    let mut names: Vec<String> = subjects
        .unwrap_or_default()
        .into_iter()
        .filter(|s| s.kind == "User")
        .map(|s| s.name)
        .collect();
    names.sort();
    names
}

/// A PimGroup in the kubernetes directory conferring `cluster_roles` and `namespace_roles`
/// (namespace, kind, name).
async fn rbac_group(
    h: &Harness,
    name: &str,
    cluster_roles: &[&str],
    namespace_roles: &[(&str, RoleKind, &str)],
    standing: StandingAccess,
) {
    let spec = PimGroupSpec {
        directory: "kubernetes".into(),
        group: DirectoryGroupRef {
            id: Some(name.into()),
            ..Default::default()
        },
        roles: GroupRoles {
            member: RoleSettings { policy: "p".into() },
            owner: None,
        },
        standing_access: standing,
        rbac: Some(RbacGrant {
            cluster_roles: cluster_roles.iter().map(|r| (*r).into()).collect(),
            namespace_roles: namespace_roles
                .iter()
                .map(|(namespace, kind, name)| NamespaceRole {
                    namespace: (*namespace).into(),
                    kind: *kind,
                    name: (*name).into(),
                })
                .collect(),
        }),
        ..Default::default()
    };
    h.api::<PimGroup>()
        .create(&PostParams::default(), &PimGroup::new(name, spec))
        .await
        .unwrap();
}

async fn uid_of(h: &Harness, group: &str) -> String {
    h.api::<PimGroup>()
        .get(group)
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap()
}

/// An ownerReference to the PimGroup `group` with `uid`, as the operator writes it.
fn owner(group: &str, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: "pim.dev/v1alpha1".into(),
        kind: "PimGroup".into(),
        name: group.into(),
        uid: uid.into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// (status, reason, message) of the PimGroup's `Ready` condition.
async fn ready(h: &Harness, group: &str) -> Option<(String, String, String)> {
    let status = h.api::<PimGroup>().get(group).await.unwrap().status?;
    status
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| (c.status, c.reason, c.message))
}

/// Updates, patches or deletes of the binding `name` (in `namespace`, `None` for a
/// ClusterRoleBinding) recorded by the fake API server.
fn edits_of(h: &Harness, namespace: Option<&str>, name: &str) -> Vec<String> {
    let resource = if namespace.is_some() {
        "rolebindings"
    } else {
        "clusterrolebindings"
    };
    h.server
        .writes()
        .into_iter()
        .filter(|w| w.resource == resource && w.namespace.as_deref() == namespace)
        .filter(|w| w.name.as_deref() == Some(name))
        .filter(|w| matches!(w.verb, Verb::Update | Verb::Patch | Verb::Delete))
        .map(|w| format!("{} {}", w.verb.as_str(), w.code))
        .collect()
}

/// Lets the operator run a few passes: time moves on and the controllers get some real time.
async fn a_few_passes(h: &Harness) {
    for _ in 0..3 {
        h.advance(1);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

// Issue 14 finding 4 (a): a ClusterRoleBinding re-created by hand under the PimGroup's binding
// name, with roleRef cluster-admin, no label and no owner, was edited to add the requester, who
// got cluster-admin. Now it is refused and reported, and left exactly as it was.
#[tokio::test]
async fn issue14_finding4_hand_made_cluster_role_binding_with_our_name_is_never_taken_over() {
    let mut h = Harness::new("").await;
    h.policy("p", "1h", &[], |_| {}).await;
    rbac_group(&h, "team", &["view"], &[], StandingAccess::Remove).await;
    h.assignment("alice-team", "team", "alice").await;
    let name = binding_name("team", &role_ref("ClusterRole", "view"), None);
    let cluster: Api<ClusterRoleBinding> = Api::all(h.client.clone());
    let planted = cluster
        .create(
            &PostParams::default(),
            &ClusterRoleBinding {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    ..Default::default()
                },
                role_ref: role_ref("ClusterRole", "cluster-admin"),
                subjects: Some(vec![user("mallory")]),
            },
        )
        .await
        .unwrap();

    h.start();
    h.request("r", "team", "alice", "30m", |_| {}).await;
    eventually("the PimGroup reports the foreign binding", || async {
        ready(&h, "team")
            .await
            .is_some_and(|(status, reason, message)| {
                status == "False"
                    && reason == "DirectoryError"
                    && message.contains(&format!("ClusterRoleBinding {name}"))
                    && message.contains("cluster-admin")
            })
    })
    .await;
    a_few_passes(&h).await;

    let now = cluster.get(&name).await.unwrap();
    assert_eq!(
        now.metadata.resource_version, planted.metadata.resource_version,
        "the hand-made binding is untouched"
    );
    assert_eq!(now.role_ref.name, "cluster-admin");
    assert_eq!(users(now.subjects), ["mallory"]);
    assert!(now.metadata.owner_references.is_none());
    assert_eq!(edits_of(&h, None, &name), Vec::<String>::new());
    let everywhere = cluster.list(&ListParams::default()).await.unwrap();
    assert!(
        everywhere
            .iter()
            .all(|b| !users(b.subjects.clone()).contains(&"alice".to_owned())),
        "alice is bound to nothing"
    );
    assert_ne!(h.phase("r").await, Some(Phase::Active));
    let (_, _, message) = ready(&h, "team").await.unwrap();
    assert!(
        message.contains("no label") && message.contains("no ownerReference"),
        "the message says what does not match: {message}"
    );
    h.stop().await;
}

// Issue 14 finding 4 (a, namespaced): a RoleBinding that carries the PimGroup's label and an
// ownerReference to it, but another roleRef, is not taken over either (roleRef is immutable in
// Kubernetes, so the operator cannot and does not try to fix it).
#[tokio::test]
async fn issue14_finding4_our_label_and_owner_with_another_role_ref_is_refused() {
    let mut h = Harness::new("").await;
    h.policy("p", "1h", &[], |_| {}).await;
    rbac_group(
        &h,
        "team",
        &[],
        &[("payments", RoleKind::Role, "deployer")],
        StandingAccess::Remove,
    )
    .await;
    h.assignment("alice-team", "team", "alice").await;
    let uid = uid_of(&h, "team").await;
    let name = binding_name("team", &role_ref("Role", "deployer"), Some("payments"));
    let namespaced: Api<RoleBinding> = Api::namespaced(h.client.clone(), "payments");
    let planted = namespaced
        .create(
            &PostParams::default(),
            &RoleBinding {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some("payments".into()),
                    labels: Some([(GROUP_LABEL.to_owned(), "team".to_owned())].into()),
                    owner_references: Some(vec![owner("team", &uid)]),
                    ..Default::default()
                },
                role_ref: role_ref("ClusterRole", "admin"),
                subjects: Some(vec![user("mallory")]),
            },
        )
        .await
        .unwrap();

    h.start();
    h.request("r", "team", "alice", "30m", |_| {}).await;
    eventually("the PimGroup reports the binding's roleRef", || async {
        ready(&h, "team").await.is_some_and(|(status, _, message)| {
            status == "False"
                && message.contains(&format!("RoleBinding payments/{name}"))
                && message.contains("roleRef")
                && message.contains("admin")
                && message.contains("deployer")
        })
    })
    .await;
    a_few_passes(&h).await;
    let now = namespaced.get(&name).await.unwrap();
    assert_eq!(
        now.metadata.resource_version,
        planted.metadata.resource_version
    );
    assert_eq!(users(now.subjects), ["mallory"], "nothing read or removed");
    assert_eq!(edits_of(&h, Some("payments"), &name), Vec::<String>::new());
    assert_ne!(h.phase("r").await, Some(Phase::Active));
    h.stop().await;
}

// Issue 14 finding 4 (b): `pim-{group}-{role}` made PimGroup `team` with ClusterRole
// `ops-readonly` and PimGroup `team-ops` with ClusterRole `readonly` share one binding. Each gets
// its own now, and each member lands only in their own.
#[tokio::test]
async fn issue14_finding4_binding_names_of_two_groups_do_not_collide() {
    let mut h = Harness::new("").await;
    h.policy("p", "1h", &[], |_| {}).await;
    rbac_group(&h, "team", &["ops-readonly"], &[], StandingAccess::Remove).await;
    rbac_group(&h, "team-ops", &["readonly"], &[], StandingAccess::Remove).await;
    h.assignment("alice-team", "team", "alice").await;
    h.assignment("bob-team-ops", "team-ops", "bob").await;
    let team = uid_of(&h, "team").await;
    let team_ops = uid_of(&h, "team-ops").await;
    assert_ne!(
        binding_name("team", &role_ref("ClusterRole", "ops-readonly"), None),
        binding_name("team-ops", &role_ref("ClusterRole", "readonly"), None)
    );
    h.start();
    h.request("ra", "team", "alice", "30m", |_| {}).await;
    h.request("rb", "team-ops", "bob", "30m", |_| {}).await;
    h.wait_phase("ra", Phase::Active).await;
    h.wait_phase("rb", Phase::Active).await;

    let cluster: Api<ClusterRoleBinding> = Api::all(h.client.clone());
    // (roleRef name, owner uid, users) of every ClusterRoleBinding.
    let bindings = || async {
        let mut all: Vec<(String, Vec<String>, Vec<String>)> = cluster
            .list(&ListParams::default())
            .await
            .unwrap()
            .into_iter()
            .map(|b| {
                let owners = b
                    .metadata
                    .owner_references
                    .unwrap_or_default()
                    .into_iter()
                    .map(|o| o.uid)
                    .collect();
                (b.role_ref.name, owners, users(b.subjects))
            })
            .collect();
        all.sort();
        all
    };
    let expected = vec![
        (
            "ops-readonly".to_owned(),
            vec![team.clone()],
            vec!["alice".to_owned()],
        ),
        (
            "readonly".to_owned(),
            vec![team_ops.clone()],
            vec!["bob".to_owned()],
        ),
    ];
    eventually("one binding each, each with its own member", || async {
        bindings().await == expected
    })
    .await;
    a_few_passes(&h).await;
    assert_eq!(bindings().await, expected, "and it stays so");
    assert_eq!(h.phase("ra").await, Some(Phase::Active));
    assert_eq!(h.phase("rb").await, Some(Phase::Active));

    h.advance(30);
    h.wait_phase("ra", Phase::Expired).await;
    h.wait_phase("rb", Phase::Expired).await;
    eventually("both unbound", || async {
        bindings()
            .await
            .iter()
            .all(|(_, _, users)| users.is_empty())
    })
    .await;
    h.stop().await;
}

/// Asserts that the hand-made bindings `planted` are as they were made, and were never written.
async fn untouched(h: &Harness, planted: &[(&str, RoleBinding, ClusterRoleBinding)]) {
    let namespaced: Api<RoleBinding> = Api::namespaced(h.client.clone(), "payments");
    let cluster: Api<ClusterRoleBinding> = Api::all(h.client.clone());
    for (group, rb, crb) in planted {
        let name = format!("hand-made-{group}");
        let now = namespaced.get_opt(&name).await.unwrap();
        assert_eq!(
            now.map(|b| b.metadata.resource_version),
            Some(rb.metadata.resource_version.clone()),
            "RoleBinding payments/{name} is untouched"
        );
        let now = cluster.get_opt(&name).await.unwrap();
        assert_eq!(
            now.map(|b| b.metadata.resource_version),
            Some(crb.metadata.resource_version.clone()),
            "ClusterRoleBinding {name} is untouched"
        );
        assert_eq!(edits_of(h, Some("payments"), &name), Vec::<String>::new());
        assert_eq!(edits_of(h, None, &name), Vec::<String>::new());
    }
}

// Issue 14 finding 4 (c): report mode deleted a RoleBinding it never made because it carried the
// label `pim.dev/group`, and remove mode did the same without an Event or a log line. A binding
// with the label but no ownerReference is never deleted or edited, in either mode, through grants,
// expiries and a shrinking roles list.
#[tokio::test]
async fn issue14_finding4_labelled_binding_without_owner_is_never_deleted_or_edited() {
    let mut h = Harness::new("").await;
    h.policy("p", "1h", &[], |_| {}).await;
    let modes = [
        ("rep", StandingAccess::Report),
        ("rem", StandingAccess::Remove),
    ];
    for (group, standing) in modes {
        rbac_group(
            &h,
            group,
            &["view"],
            &[("payments", RoleKind::Role, "deployer")],
            standing,
        )
        .await;
        h.assignment(&format!("alice-{group}"), group, "alice")
            .await;
    }
    let namespaced: Api<RoleBinding> = Api::namespaced(h.client.clone(), "payments");
    let cluster: Api<ClusterRoleBinding> = Api::all(h.client.clone());
    let label = |group: &str| Some([(GROUP_LABEL.to_owned(), group.to_owned())].into());
    let mut planted = Vec::new();
    for (group, _) in modes {
        let rb = namespaced
            .create(
                &PostParams::default(),
                &RoleBinding {
                    metadata: ObjectMeta {
                        name: Some(format!("hand-made-{group}")),
                        namespace: Some("payments".into()),
                        labels: label(group),
                        ..Default::default()
                    },
                    role_ref: role_ref("ClusterRole", "admin"),
                    subjects: Some(vec![user("mallory")]),
                },
            )
            .await
            .unwrap();
        let crb = cluster
            .create(
                &PostParams::default(),
                &ClusterRoleBinding {
                    metadata: ObjectMeta {
                        name: Some(format!("hand-made-{group}")),
                        labels: label(group),
                        ..Default::default()
                    },
                    role_ref: role_ref("ClusterRole", "cluster-admin"),
                    subjects: Some(vec![user("mallory")]),
                },
            )
            .await
            .unwrap();
        planted.push((group, rb, crb));
    }

    h.start();
    for (group, _) in modes {
        h.request(&format!("r-{group}"), group, "alice", "30m", |_| {})
            .await;
    }
    for (group, _) in modes {
        h.wait_phase(&format!("r-{group}"), Phase::Active).await;
    }
    a_few_passes(&h).await;
    untouched(&h, &planted).await;
    for (group, _) in modes {
        let status = h
            .api::<PimGroup>()
            .get(group)
            .await
            .unwrap()
            .status
            .unwrap();
        assert!(
            status.unexplained_members.is_empty(),
            "mallory is not read from a binding that is not ours: {:?}",
            status.unexplained_members
        );
    }

    h.advance(30);
    for (group, _) in modes {
        h.wait_phase(&format!("r-{group}"), Phase::Expired).await;
    }
    a_few_passes(&h).await;
    untouched(&h, &planted).await;

    // The roles list shrinks: the PimGroup's own binding of the dropped role goes, the
    // hand-made ones stay.
    for (group, _) in modes {
        let ours = binding_name(group, &role_ref("Role", "deployer"), Some("payments"));
        assert!(namespaced.get_opt(&ours).await.unwrap().is_some());
        let drop = Patch::Merge(serde_json::json!({"spec": {"rbac": {"namespaceRoles": []}}}));
        h.api::<PimGroup>()
            .patch(group, &PatchParams::default(), &drop)
            .await
            .unwrap();
        eventually("the dropped role's own binding is deleted", || async {
            namespaced.get_opt(&ours).await.unwrap().is_none()
        })
        .await;
    }
    a_few_passes(&h).await;
    untouched(&h, &planted).await;
    h.stop().await;
}

// Issue 14 finding 4: when the PimGroup's roles list shrinks, no member keeps a dropped role: the
// PimGroup's own bindings of dropped roles are deleted, down to a PimGroup that names no roles
// at all any more.
#[tokio::test]
async fn issue14_finding4_dropped_roles_take_their_members_with_them() {
    let mut h = Harness::new("").await;
    h.policy("p", "1h", &[], |_| {}).await;
    rbac_group(
        &h,
        "ops",
        &["view", "edit"],
        &[("payments", RoleKind::ClusterRole, "admin")],
        StandingAccess::Remove,
    )
    .await;
    h.assignment("alice-ops", "ops", "alice").await;
    h.start();
    h.request("r", "ops", "alice", "1h", |_| {}).await;
    h.wait_phase("r", Phase::Active).await;

    let cluster: Api<ClusterRoleBinding> = Api::all(h.client.clone());
    let namespaced: Api<RoleBinding> = Api::namespaced(h.client.clone(), "payments");
    let view = binding_name("ops", &role_ref("ClusterRole", "view"), None);
    let edit = binding_name("ops", &role_ref("ClusterRole", "edit"), None);
    let admin = binding_name("ops", &role_ref("ClusterRole", "admin"), Some("payments"));
    for name in [&view, &edit] {
        assert_eq!(users(cluster.get(name).await.unwrap().subjects), ["alice"]);
    }
    assert_eq!(
        users(namespaced.get(&admin).await.unwrap().subjects),
        ["alice"]
    );

    let shrink = Patch::Merge(serde_json::json!(
        {"spec": {"rbac": {"clusterRoles": ["view"], "namespaceRoles": []}}}
    ));
    h.api::<PimGroup>()
        .patch("ops", &PatchParams::default(), &shrink)
        .await
        .unwrap();
    eventually("the dropped roles' bindings are deleted", || async {
        cluster.get_opt(&edit).await.unwrap().is_none()
            && namespaced.get_opt(&admin).await.unwrap().is_none()
    })
    .await;
    assert_eq!(users(cluster.get(&view).await.unwrap().subjects), ["alice"]);
    assert_eq!(h.phase("r").await, Some(Phase::Active));

    // No roles at all: the group is not usable, and nobody keeps what it conferred.
    let none = Patch::Merge(serde_json::json!({"spec": {"rbac": null}}));
    h.api::<PimGroup>()
        .patch("ops", &PatchParams::default(), &none)
        .await
        .unwrap();
    eventually("the last binding is deleted too", || async {
        cluster.get_opt(&view).await.unwrap().is_none()
    })
    .await;
    eventually("the PimGroup says why it is not ready", || async {
        ready(&h, "ops")
            .await
            .is_some_and(|(status, _, message)| status == "False" && message.contains("rbac"))
    })
    .await;
    h.stop().await;
}

// Issue 14 finding 4: bindings that an earlier version made under the colliding names
// (`pim-<group>-<role>`, `pim-<group>-role-<role>`) are the PimGroup's own by label, owner and a
// roleRef that matches the name: they are deleted, and their members are bound again under the
// new names. A labelled, owned binding whose name does not fit its roleRef is not ours to judge,
// and is left alone.
#[tokio::test]
async fn issue14_finding4_bindings_under_the_earlier_names_are_replaced() {
    let mut h = Harness::new("").await;
    h.policy("p", "1h", &[], |_| {}).await;
    rbac_group(
        &h,
        "ops",
        &["view"],
        &[("payments", RoleKind::Role, "deployer")],
        StandingAccess::Remove,
    )
    .await;
    h.assignment("alice-ops", "ops", "alice").await;
    let uid = uid_of(&h, "ops").await;
    let meta = |name: &str, namespace: Option<&str>| ObjectMeta {
        name: Some(name.into()),
        namespace: namespace.map(Into::into),
        labels: Some([(GROUP_LABEL.to_owned(), "ops".to_owned())].into()),
        owner_references: Some(vec![owner("ops", &uid)]),
        ..Default::default()
    };
    let cluster: Api<ClusterRoleBinding> = Api::all(h.client.clone());
    let namespaced: Api<RoleBinding> = Api::namespaced(h.client.clone(), "payments");
    let pp = PostParams::default();
    cluster
        .create(
            &pp,
            &ClusterRoleBinding {
                metadata: meta("pim-ops-view", None),
                role_ref: role_ref("ClusterRole", "view"),
                subjects: Some(vec![user("alice")]),
            },
        )
        .await
        .unwrap();
    namespaced
        .create(
            &pp,
            &RoleBinding {
                metadata: meta("pim-ops-role-deployer", Some("payments")),
                role_ref: role_ref("Role", "deployer"),
                subjects: Some(vec![user("alice")]),
            },
        )
        .await
        .unwrap();
    let odd = cluster
        .create(
            &pp,
            &ClusterRoleBinding {
                metadata: meta("pim-ops-edit", None),
                role_ref: role_ref("ClusterRole", "cluster-admin"),
                subjects: Some(vec![user("mallory")]),
            },
        )
        .await
        .unwrap();

    h.start();
    h.request("r", "ops", "alice", "30m", |_| {}).await;
    h.wait_phase("r", Phase::Active).await;
    let view = binding_name("ops", &role_ref("ClusterRole", "view"), None);
    let deployer = binding_name("ops", &role_ref("Role", "deployer"), Some("payments"));
    eventually("the old bindings are replaced by the new ones", || async {
        cluster.get_opt("pim-ops-view").await.unwrap().is_none()
            && namespaced
                .get_opt("pim-ops-role-deployer")
                .await
                .unwrap()
                .is_none()
            && cluster
                .get_opt(&view)
                .await
                .unwrap()
                .is_some_and(|b| users(b.subjects) == ["alice"])
            && namespaced
                .get_opt(&deployer)
                .await
                .unwrap()
                .is_some_and(|b| users(b.subjects) == ["alice"])
    })
    .await;
    a_few_passes(&h).await;
    let now = cluster.get("pim-ops-edit").await.unwrap();
    assert_eq!(now.metadata.resource_version, odd.metadata.resource_version);
    assert_eq!(edits_of(&h, None, "pim-ops-edit"), Vec::<String>::new());
    h.stop().await;
}

// Issue 14 finding 4: a binding of ours replaced by hand (same name, another roleRef, no owner)
// holds nothing up when the PimGroup is deleted: what the PimGroup granted through its own
// bindings is taken back, and the hand-made binding is neither edited nor deleted.
#[tokio::test]
async fn issue14_finding4_deleting_the_group_takes_back_only_through_its_own_bindings() {
    let mut h = Harness::new("").await;
    h.policy("p", "1h", &[], |_| {}).await;
    rbac_group(&h, "team", &["view", "edit"], &[], StandingAccess::Remove).await;
    h.assignment("alice-team", "team", "alice").await;
    h.start();
    h.request("r", "team", "alice", "30m", |_| {}).await;
    h.wait_phase("r", Phase::Active).await;
    let cluster: Api<ClusterRoleBinding> = Api::all(h.client.clone());
    let view = binding_name("team", &role_ref("ClusterRole", "view"), None);
    let edit = binding_name("team", &role_ref("ClusterRole", "edit"), None);
    assert_eq!(users(cluster.get(&edit).await.unwrap().subjects), ["alice"]);

    cluster.delete(&edit, &Default::default()).await.unwrap();
    let planted = cluster
        .create(
            &PostParams::default(),
            &ClusterRoleBinding {
                metadata: ObjectMeta {
                    name: Some(edit.clone()),
                    ..Default::default()
                },
                role_ref: role_ref("ClusterRole", "cluster-admin"),
                subjects: Some(vec![user("alice"), user("mallory")]),
            },
        )
        .await
        .unwrap();
    h.api::<PimGroup>()
        .delete("team", &Default::default())
        .await
        .unwrap();
    eventually("the PimGroup is gone", || async {
        h.api::<PimGroup>().get_opt("team").await.unwrap().is_none()
    })
    .await;
    // No garbage collector here: the PimGroup's own binding stays, emptied.
    assert_eq!(
        users(cluster.get(&view).await.unwrap().subjects),
        Vec::<String>::new()
    );
    let now = cluster.get(&edit).await.unwrap();
    assert_eq!(
        now.metadata.resource_version,
        planted.metadata.resource_version
    );
    assert_eq!(users(now.subjects), ["alice", "mallory"]);
    h.stop().await;
}
