//! The fake API server, driven by the real kube client, kube-runtime's `watcher`, `Controller`
//! and `finalizer` helper. Each test checks a behaviour of the real API server that our
//! controllers depend on, so that a controller test passing against the fake means something.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{
    Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use kube::runtime::controller::Action;
use kube::runtime::watcher::{self, Event};
use kube::runtime::{Controller, finalizer};
use kube::{Client, Discovery, Resource, ResourceExt};
use pim_operator::api::activation_request::{Approval, Decision};
use pim_operator::api::{ActivationRequest, ActivationRequestSpec};
use pim_testkit::fake_apiserver::{FakeApiServer, FaultScope, Options, Verb};
use serde_json::{Value, json};

const AV: &str = "pim.dev/v1alpha1";

fn request(name: &str) -> ActivationRequest {
    ActivationRequest {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        spec: ActivationRequestSpec {
            group: "admins".into(),
            ..ActivationRequestSpec::default()
        },
        status: None,
    }
}

async fn start() -> (FakeApiServer, Api<ActivationRequest>) {
    let server = FakeApiServer::start()
        .await
        .expect("fake API server starts");
    let api = Api::all(server.client());
    (server, api)
}

fn api_code(err: &kube::Error) -> (u16, String) {
    match err {
        kube::Error::Api(status) => (status.code, status.reason.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn condition(type_: &str, status: &str, reason: &str) -> Value {
    json!({
        "type": type_,
        "status": status,
        "reason": reason,
        "message": format!("{type_} is {status}"),
        "lastTransitionTime": "2025-01-01T00:00:00Z",
    })
}

fn condition_map(obj: &ActivationRequest) -> BTreeMap<String, (String, String)> {
    obj.status
        .as_ref()
        .map(|s| {
            s.conditions
                .iter()
                .map(|c| (c.type_.clone(), (c.status.clone(), c.reason.clone())))
                .collect()
        })
        .unwrap_or_default()
}

fn rv(obj: &impl Resource) -> u64 {
    obj.meta()
        .resource_version
        .as_deref()
        .expect("resourceVersion set")
        .parse()
        .expect("resourceVersion is a number")
}

/// The next watcher event that is not an error or a bare `Init`/`InitDone` marker, as
/// `(kind, name, resourceVersion)`.
async fn next_change<S>(stream: &mut S) -> (&'static str, String, u64)
where
    S: Stream<Item = Result<Event<ActivationRequest>, watcher::Error>> + Unpin,
{
    loop {
        let next = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("watcher produced an event in time")
            .expect("watcher stream goes on");
        match next {
            Ok(Event::Apply(o)) => return ("apply", o.name_any(), rv(&o)),
            Ok(Event::InitApply(o)) => return ("init", o.name_any(), rv(&o)),
            Ok(Event::Delete(o)) => return ("delete", o.name_any(), rv(&o)),
            Ok(Event::Init | Event::InitDone) | Err(_) => {}
        }
    }
}

/// Waits until the watcher reports `InitDone`.
async fn until_init_done<S>(stream: &mut S) -> Vec<String>
where
    S: Stream<Item = Result<Event<ActivationRequest>, watcher::Error>> + Unpin,
{
    let mut seen = Vec::new();
    loop {
        let next = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("watcher produced an event in time")
            .expect("watcher stream goes on");
        match next {
            Ok(Event::InitApply(o)) => seen.push(o.name_any()),
            Ok(Event::InitDone) => return seen,
            _ => {}
        }
    }
}

/// [`crate::support::eventually`] for a condition that needs no waiting of its own.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    crate::support::eventually(what, || std::future::ready(check())).await
}

#[tokio::test]
async fn create_get_list_delete() {
    let (server, api) = start().await;
    let created = api
        .create(&PostParams::default(), &request("r1"))
        .await
        .unwrap();
    let meta = &created.metadata;
    assert_eq!(meta.uid.as_deref().map(str::len), Some(36));
    assert!(meta.creation_timestamp.is_some());
    assert_eq!(meta.generation, Some(1));
    assert!(created.status.is_none(), "status is dropped on create");
    api.create(&PostParams::default(), &request("r2"))
        .await
        .unwrap();

    let got = api.get("r1").await.unwrap();
    assert_eq!(got.metadata.uid, meta.uid);
    assert_eq!(got.spec.group, "admins");

    let list = api.list(&ListParams::default()).await.unwrap();
    let names: Vec<String> = list.items.iter().map(|o| o.name_any()).collect();
    assert_eq!(names, ["r1", "r2"]);
    let list_rv: u64 = list.metadata.resource_version.unwrap().parse().unwrap();
    assert!(
        list_rv >= rv(&list.items[1]),
        "list RV is at least its items'"
    );

    let deleted = api.delete("r1", &DeleteParams::default()).await.unwrap();
    assert!(
        deleted.is_right(),
        "no finalizers: deleted at once, Status answered"
    );
    let err = api.get("r1").await.unwrap_err();
    assert_eq!(api_code(&err), (404, "NotFound".into()));
    let err = api
        .delete("r1", &DeleteParams::default())
        .await
        .unwrap_err();
    assert_eq!(api_code(&err).0, 404);
    assert!(server.store_get("activationrequests", None, "r1").is_none());
    assert_eq!(server.requests().get(Verb::Create, "activationrequests"), 2);
    assert_eq!(server.requests().get(Verb::Delete, "activationrequests"), 2);
}

#[tokio::test]
async fn resource_versions_are_global_and_increasing() {
    let (server, api) = start().await;
    let a = api
        .create(&PostParams::default(), &request("a"))
        .await
        .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    let cm = cms
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "c"}, "data": {"k": "v"}}))
                .unwrap(),
        )
        .await
        .unwrap();
    let b = api
        .create(&PostParams::default(), &request("b"))
        .await
        .unwrap();
    assert!(
        rv(&a) < rv(&cm) && rv(&cm) < rv(&b),
        "one counter across kinds"
    );
    assert_eq!(server.resource_version(), rv(&b));
    assert!(
        cm.metadata.generation.is_none(),
        "ConfigMaps have no generation"
    );
}

#[tokio::test]
async fn conflicts_on_duplicate_create_and_stale_replace() {
    let (_server, api) = start().await;
    let first = api
        .create(&PostParams::default(), &request("r"))
        .await
        .unwrap();
    let err = api
        .create(&PostParams::default(), &request("r"))
        .await
        .unwrap_err();
    assert_eq!(api_code(&err), (409, "AlreadyExists".into()));

    let mut fresh = first.clone();
    fresh.spec.deactivate = Some(true);
    let replaced = api
        .replace("r", &PostParams::default(), &fresh)
        .await
        .unwrap();
    assert!(rv(&replaced) > rv(&first));

    // `first` still carries the old resourceVersion.
    let mut stale = first.clone();
    stale.spec.justification = Some("late".into());
    let err = api
        .replace("r", &PostParams::default(), &stale)
        .await
        .unwrap_err();
    assert_eq!(api_code(&err), (409, "Conflict".into()));
    if let kube::Error::Api(s) = &err {
        assert!(
            s.message.contains("the object has been modified"),
            "{}",
            s.message
        );
    }

    // A custom resource PUT must carry a resourceVersion.
    let mut unconditional = replaced.clone();
    unconditional.metadata.resource_version = None;
    let err = api
        .replace("r", &PostParams::default(), &unconditional)
        .await
        .unwrap_err();
    assert_eq!(api_code(&err), (422, "Invalid".into()));

    // A merge patch carrying a stale resourceVersion is a precondition too.
    let patch = json!({"metadata": {"resourceVersion": rv(&first).to_string()}, "spec": {"justification": "x"}});
    let err = api
        .patch("r", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_err();
    assert_eq!(api_code(&err).0, 409);
}

#[tokio::test]
async fn merge_patch_and_generation() {
    let (_server, api) = start().await;
    let created = api
        .create(&PostParams::default(), &request("r"))
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, Some(1));

    // Metadata only: no generation bump.
    let labelled = api
        .patch(
            "r",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"team": "a"}}})),
        )
        .await
        .unwrap();
    assert_eq!(labelled.labels().get("team").map(String::as_str), Some("a"));
    assert_eq!(labelled.metadata.generation, Some(1));
    assert!(rv(&labelled) > rv(&created));

    // Spec: bump. `null` deletes (RFC 7386).
    let patched = api
        .patch(
            "r",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"justification": "incident 42"}, "metadata": {"labels": {"team": null}}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.spec.justification.as_deref(), Some("incident 42"));
    assert_eq!(patched.spec.group, "admins", "untouched fields stay");
    assert!(patched.labels().is_empty());
    assert_eq!(patched.metadata.generation, Some(2));

    // Status through /status: no bump.
    let with_status = api
        .patch_status(
            "r",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Pending"}})),
        )
        .await
        .unwrap();
    assert_eq!(with_status.metadata.generation, Some(2));

    // A no-op patch writes nothing: same resourceVersion.
    let noop = api
        .patch(
            "r",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"justification": "incident 42"}})),
        )
        .await
        .unwrap();
    assert_eq!(rv(&noop), rv(&with_status));
    assert_eq!(noop.metadata.generation, Some(2));
}

#[tokio::test]
async fn status_subresource_splits_writes() {
    let (_server, api) = start().await;
    api.create(&PostParams::default(), &request("r"))
        .await
        .unwrap();

    // Status on the main resource is ignored.
    let main = api
        .patch(
            "r",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"justification": "j"}, "status": {"phase": "Active"}})),
        )
        .await
        .unwrap();
    assert!(main.status.is_none());
    assert_eq!(main.spec.justification.as_deref(), Some("j"));

    // Spec on /status is ignored.
    let status = api
        .patch_status(
            "r",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"justification": "changed"}, "status": {"phase": "Active"}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(status.spec.justification.as_deref(), Some("j"));
    assert_eq!(status.status.unwrap().phase.unwrap().as_str(), "Active");

    // replace_status too.
    let mut current = api.get("r").await.unwrap();
    current.spec.justification = Some("ignored".into());
    current.status.as_mut().unwrap().matched_assignment = Some("ea".into());
    let replaced = api
        .replace_status("r", &PostParams::default(), &current)
        .await
        .unwrap();
    assert_eq!(replaced.spec.justification.as_deref(), Some("j"));
    assert_eq!(
        replaced.status.unwrap().matched_assignment.as_deref(),
        Some("ea")
    );
}

#[tokio::test]
async fn server_side_apply_merges_approvals_by_approver() {
    let (server, api) = start().await;
    api.create(&PostParams::default(), &request("r"))
        .await
        .unwrap();
    let approval = |who: &str, decision: &str| {
        json!({"apiVersion": AV, "kind": "ActivationRequest", "metadata": {"name": "r"},
            "spec": {"approvals": [{"approver": who, "decision": decision}]}})
    };
    api.patch(
        "r",
        &PatchParams::apply("alice"),
        &Patch::Apply(approval("alice", "Approve")),
    )
    .await
    .unwrap();
    let both = api
        .patch(
            "r",
            &PatchParams::apply("bob"),
            &Patch::Apply(approval("bob", "Deny")),
        )
        .await
        .unwrap();
    let approvals: Vec<(String, Decision)> = both
        .spec
        .approvals
        .iter()
        .map(|a: &Approval| (a.approver.clone(), a.decision))
        .collect();
    assert_eq!(
        approvals,
        [
            ("alice".into(), Decision::Approve),
            ("bob".into(), Decision::Deny)
        ],
        "each manager's entry survives the other's apply"
    );
    assert_eq!(
        both.spec.group, "admins",
        "apply merges into the live object"
    );
    let managers: Vec<(String, String)> = both
        .managed_fields()
        .iter()
        .map(|m| (m.manager.clone().unwrap(), m.operation.clone().unwrap()))
        .collect();
    assert!(
        managers.contains(&("alice".into(), "Apply".into())),
        "{managers:?}"
    );
    assert!(
        managers.contains(&("bob".into(), "Apply".into())),
        "{managers:?}"
    );

    // Alice applying Bob's entry with another decision conflicts (Bob owns it)...
    let err = api
        .patch(
            "r",
            &PatchParams::apply("alice"),
            &Patch::Apply(approval("bob", "Approve")),
        )
        .await
        .unwrap_err();
    assert_eq!(api_code(&err), (409, "Conflict".into()));
    if let kube::Error::Api(s) = &err {
        assert!(s.message.contains("conflict with \"bob\""), "{}", s.message);
    }

    // ...and an apply without fieldManager is refused.
    let err = api
        .patch(
            "r",
            &PatchParams::default(),
            &Patch::Apply(approval("carol", "Approve")),
        )
        .await
        .unwrap_err();
    assert_eq!(api_code(&err).0, 422);

    // Alice stops applying her entry: it goes; Bob's stays.
    let after = api
        .patch(
            "r",
            &PatchParams::apply("alice"),
            &Patch::Apply(
                json!({"apiVersion": AV, "kind": "ActivationRequest", "metadata": {"name": "r"}}),
            ),
        )
        .await
        .unwrap();
    let left: Vec<&str> = after
        .spec
        .approvals
        .iter()
        .map(|a| a.approver.as_str())
        .collect();
    assert_eq!(left, ["bob"]);

    // With force, Alice takes Bob's field over.
    let forced = api
        .patch(
            "r",
            &PatchParams::apply("alice").force(),
            &Patch::Apply(approval("bob", "Approve")),
        )
        .await
        .unwrap();
    assert_eq!(forced.spec.approvals[0].decision, Decision::Approve);
    let writes = server.writes();
    let applies = writes
        .iter()
        .filter(|w| w.patch_type.as_deref() == Some("application/apply-patch+yaml"))
        .count();
    assert_eq!(applies, 6);
    assert_eq!(writes[1].field_manager.as_deref(), Some("alice"));
}

#[tokio::test]
async fn apply_creates_and_is_a_noop_when_repeated() {
    let (_server, api) = start().await;
    let config = json!({"apiVersion": AV, "kind": "ActivationRequest", "metadata": {"name": "r"},
        "spec": {"group": "ops"}});
    let created = api
        .patch("r", &PatchParams::apply("me"), &Patch::Apply(&config))
        .await
        .unwrap();
    assert_eq!(created.spec.group, "ops");
    assert_eq!(created.metadata.generation, Some(1));
    let again = api
        .patch("r", &PatchParams::apply("me"), &Patch::Apply(&config))
        .await
        .unwrap();
    assert_eq!(
        rv(&again),
        rv(&created),
        "an identical apply stores nothing"
    );
    assert_eq!(again.managed_fields(), created.managed_fields());
}

#[tokio::test]
async fn apply_to_status_merges_conditions_by_type() {
    let (server, api) = start().await;
    api.create(&PostParams::default(), &request("r"))
        .await
        .unwrap();
    let status = |conditions: Vec<Value>, phase: Option<&str>| {
        let mut status = json!({"conditions": conditions});
        if let Some(p) = phase {
            status["phase"] = json!(p);
        }
        // A spec in a /status apply is ignored.
        json!({"apiVersion": AV, "kind": "ActivationRequest", "metadata": {"name": "r"},
            "spec": {"group": "hijacked"}, "status": status})
    };
    let operator = PatchParams::apply("pim-operator");
    api.patch_status(
        "r",
        &operator,
        &Patch::Apply(status(
            vec![condition("Validated", "True", "Valid")],
            Some("Pending"),
        )),
    )
    .await
    .unwrap();
    api.patch_status(
        "r",
        &PatchParams::apply("approver-bot"),
        &Patch::Apply(status(
            vec![condition("Approved", "False", "WaitingForApproval")],
            None,
        )),
    )
    .await
    .unwrap();
    let updated = api
        .patch_status(
            "r",
            &operator,
            &Patch::Apply(status(
                vec![condition("Validated", "False", "NotEligible")],
                Some("Rejected"),
            )),
        )
        .await
        .unwrap();
    let conditions = condition_map(&updated);
    assert_eq!(
        conditions,
        BTreeMap::from([
            (
                "Approved".to_string(),
                ("False".to_string(), "WaitingForApproval".to_string())
            ),
            (
                "Validated".to_string(),
                ("False".to_string(), "NotEligible".to_string())
            ),
        ])
    );
    assert_eq!(
        updated.status.as_ref().unwrap().phase.unwrap().as_str(),
        "Rejected"
    );
    assert_eq!(updated.spec.group, "admins", "spec untouched by /status");
    assert_eq!(
        updated.metadata.generation,
        Some(1),
        "status writes do not move generation"
    );
    let status_managers: Vec<String> = updated
        .managed_fields()
        .iter()
        .filter(|m| m.subresource.as_deref() == Some("status"))
        .map(|m| m.manager.clone().unwrap())
        .collect();
    assert_eq!(status_managers, ["pim-operator", "approver-bot"]);
    assert!(
        server
            .writes()
            .iter()
            .filter(|w| w.verb == Verb::Patch)
            .all(|w| w.is_status())
    );
}

#[tokio::test]
async fn schema_pruning_defaulting_and_validation() {
    let (_server, api) = start().await;
    // Unknown fields are pruned.
    let raw = json!({"apiVersion": AV, "kind": "ActivationRequest", "metadata": {"name": "r"},
        "spec": {"group": "g", "bogus": 1}, "extra": true});
    let pp = PostParams::default();
    let dynamic: Api<kube::api::DynamicObject> = Api::all_with(
        api.clone().into_client(),
        &kube::api::ApiResource::erase::<ActivationRequest>(&()),
    );
    let created = dynamic
        .create(&pp, &serde_json::from_value(raw).unwrap())
        .await
        .unwrap();
    assert!(created.data["spec"].get("bogus").is_none());
    assert!(created.data.get("extra").is_none());

    // Violations are 422 Invalid, with causes.
    let mut bad = request("bad");
    bad.spec.group = String::new();
    let err = api.create(&pp, &bad).await.unwrap_err();
    assert_eq!(api_code(&err), (422, "Invalid".into()));
    let mut too_many = request("many");
    too_many.spec.approvals = (0..33)
        .map(|i| Approval {
            approver: format!("u{i}"),
            ..Approval::default()
        })
        .collect();
    let err = api.create(&pp, &too_many).await.unwrap_err();
    assert_eq!(api_code(&err).0, 422);
    if let kube::Error::Api(s) = &err {
        assert!(s.message.contains("spec.approvals"), "{}", s.message);
    }
    // Invalid names too.
    let err = api.create(&pp, &request("Not_A_Name")).await.unwrap_err();
    assert_eq!(api_code(&err).0, 422);
    // A status condition missing required fields is refused.
    let err = api
        .patch_status(
            "r",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"conditions": [{"type": "Validated"}]}})),
        )
        .await
        .unwrap_err();
    assert_eq!(api_code(&err).0, 422);
}

#[tokio::test]
async fn finalizers_and_deletion_timestamp() {
    let (_server, api) = start().await;
    let mut obj = request("r");
    obj.metadata.finalizers = Some(vec!["pim.dev/cleanup".into()]);
    let created = api.create(&PostParams::default(), &obj).await.unwrap();

    let mut events = watcher(api.clone());
    assert_eq!(until_init_done(&mut events).await, ["r"]);

    let pending = api.delete("r", &DeleteParams::default()).await.unwrap();
    let pending = pending.left().expect("with a finalizer the object stays");
    assert!(pending.metadata.deletion_timestamp.is_some());
    assert_eq!(
        pending.metadata.generation,
        Some(2),
        "first deletion request bumps generation"
    );
    assert_eq!(
        next_change(&mut events).await,
        ("apply", "r".into(), rv(&pending))
    );
    assert!(
        api.get("r")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    );

    // Deleting again changes nothing.
    let again = api
        .delete("r", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .unwrap();
    assert_eq!(rv(&again), rv(&pending));

    // No new finalizers while being deleted.
    let err = api
        .patch(
            "r",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["pim.dev/cleanup", "other"]}})),
        )
        .await
        .unwrap_err();
    assert_eq!(api_code(&err), (422, "Invalid".into()));
    // The deletion timestamp cannot be cleared by a client.
    let kept = api
        .patch("r", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"deletionTimestamp": null}, "spec": {"justification": "still"}})))
        .await
        .unwrap();
    assert!(kept.metadata.deletion_timestamp.is_some());
    next_change(&mut events).await;

    // Removing the last finalizer deletes the object.
    api.patch(
        "r",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    let (kind, name, deleted_rv) = next_change(&mut events).await;
    assert_eq!((kind, name.as_str()), ("delete", "r"));
    assert!(deleted_rv > rv(&kept));
    assert_eq!(api_code(&api.get("r").await.unwrap_err()).0, 404);
    assert!(created.metadata.deletion_timestamp.is_none());
}

fn watcher(
    api: Api<ActivationRequest>,
) -> std::pin::Pin<Box<dyn Stream<Item = Result<Event<ActivationRequest>, watcher::Error>> + Send>>
{
    watcher::watcher(api, watcher::Config::default()).boxed()
}

#[tokio::test]
async fn watcher_sees_create_modify_delete_in_order() {
    let (server, api) = start().await;
    api.create(&PostParams::default(), &request("before"))
        .await
        .unwrap();
    let mut events = watcher(api.clone());
    assert_eq!(until_init_done(&mut events).await, ["before"]);

    let created = api
        .create(&PostParams::default(), &request("r"))
        .await
        .unwrap();
    let modified = api
        .patch(
            "r",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"justification": "x"}})),
        )
        .await
        .unwrap();
    api.delete("r", &DeleteParams::default()).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(next_change(&mut events).await);
    }
    assert_eq!(seen[0], ("apply", "r".into(), rv(&created)));
    assert_eq!(seen[1], ("apply", "r".into(), rv(&modified)));
    assert_eq!(seen[2].0, "delete");
    assert!(
        seen[2].2 > rv(&modified),
        "a deletion has its own resourceVersion"
    );
    assert_eq!(server.request_count(Verb::List), 1);
    assert!(server.open_watches() >= 1);
}

#[tokio::test]
async fn streaming_list_watcher_works() {
    let (server, api) = start().await;
    api.create(&PostParams::default(), &request("a"))
        .await
        .unwrap();
    api.create(&PostParams::default(), &request("b"))
        .await
        .unwrap();
    let mut events =
        watcher::watcher(api.clone(), watcher::Config::default().streaming_lists()).boxed();
    assert_eq!(until_init_done(&mut events).await, ["a", "b"]);
    api.create(&PostParams::default(), &request("c"))
        .await
        .unwrap();
    assert_eq!(next_change(&mut events).await.1, "c");
    assert_eq!(
        server.request_count(Verb::List),
        0,
        "initial state came over the watch"
    );
}

#[tokio::test]
async fn expired_history_makes_the_watcher_relist_and_catch_up() {
    let (server, api) = start().await;
    for name in ["keep", "change", "remove"] {
        api.create(&PostParams::default(), &request(name))
            .await
            .unwrap();
    }
    let mut events = watcher(api.clone());
    assert_eq!(until_init_done(&mut events).await.len(), 3);
    let lists_before = server.request_count(Verb::List);

    // While the watcher is not polled: its watch ends, things change, history is compacted.
    server.drop_watches();
    eventually("watches closed", || server.open_watches() == 0).await;
    api.patch(
        "change",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"justification": "new"}})),
    )
    .await
    .unwrap();
    api.delete("remove", &DeleteParams::default())
        .await
        .unwrap();
    api.create(&PostParams::default(), &request("added"))
        .await
        .unwrap();
    server.expire_history();

    // Resuming from its old resourceVersion gets 410; the watcher re-lists.
    let mut after: Vec<String> = Vec::new();
    let mut got_gone = false;
    loop {
        let next = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .unwrap()
            .unwrap();
        match next {
            Err(watcher::Error::WatchError(status)) => {
                assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
                got_gone = true;
            }
            Ok(Event::InitApply(o)) => {
                if o.name_any() == "change" {
                    assert_eq!(o.spec.justification.as_deref(), Some("new"));
                }
                after.push(o.name_any());
            }
            Ok(Event::InitDone) => break,
            _ => {}
        }
    }
    assert!(got_gone, "the watcher saw 410 Gone");
    assert_eq!(after, ["added", "change", "keep"]);
    assert_eq!(server.request_count(Verb::List), lists_before + 1);

    // A raw watch from an old version gets the ERROR event in the wire format.
    let stream = api.watch(&WatchParams::default(), "2").await.unwrap();
    let first: Vec<_> = stream.take(1).try_collect().await.unwrap();
    match &first[0] {
        WatchEvent::Error(status) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"))
        }
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
    // A list is unaffected.
    assert_eq!(
        api.list(&ListParams::default()).await.unwrap().items.len(),
        3
    );
}

#[tokio::test]
async fn dropped_watches_resume_without_losing_events() {
    let (server, api) = start().await;
    let mut events = watcher(api.clone());
    until_init_done(&mut events).await;
    let watches_before = server.request_count(Verb::Watch);
    for i in 0..5 {
        server.drop_watches();
        api.create(&PostParams::default(), &request(&format!("r{i}")))
            .await
            .unwrap();
    }
    let mut names = Vec::new();
    for _ in 0..5 {
        names.push(next_change(&mut events).await.1);
    }
    assert_eq!(names, ["r0", "r1", "r2", "r3", "r4"]);
    assert!(
        server.request_count(Verb::Watch) > watches_before,
        "the watcher re-watched"
    );
    assert_eq!(
        server.request_count(Verb::List),
        1,
        "resumed from its resourceVersion, no re-list"
    );
}

#[tokio::test]
async fn faults_are_injected() {
    let (server, api) = start().await;
    api.create(&PostParams::default(), &request("r"))
        .await
        .unwrap();

    server.fail_next(1, 500);
    let err = api.get("r").await.unwrap_err();
    assert_eq!(api_code(&err), (500, "InternalError".into()));
    api.get("r").await.expect("only one request failed");

    // kube retries 503 by itself: the call succeeds after two attempts.
    server.reset_observations();
    server.fail_next(1, 503);
    api.get("r").await.expect("retried");
    assert_eq!(server.request_count(Verb::Get), 2);

    // Writes only, one resource: reads go through, the write fails and is logged.
    server.fail_all(500, FaultScope::writes().resource("activationrequests"));
    api.get("r").await.unwrap();
    let err = api
        .patch(
            "r",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"justification": "x"}})),
        )
        .await
        .unwrap_err();
    assert_eq!(api_code(&err).0, 500);
    let leases: Api<Lease> = Api::namespaced(server.client(), "default");
    leases
        .create(&PostParams::default(), &lease("l", "a"))
        .await
        .unwrap();
    server.clear_faults();
    api.patch(
        "r",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"justification": "x"}})),
    )
    .await
    .unwrap();
    let writes: Vec<(Verb, u16, bool)> = server
        .writes()
        .iter()
        .filter(|w| w.resource == "activationrequests")
        .map(|w| (w.verb, w.code, w.changed))
        .collect();
    assert_eq!(
        writes,
        [(Verb::Patch, 500, false), (Verb::Patch, 200, true)]
    );
}

#[tokio::test]
async fn latency_is_applied() {
    let (server, api) = start().await;
    api.create(&PostParams::default(), &request("r"))
        .await
        .unwrap();
    server.set_latency(Duration::from_millis(300));
    let started = Instant::now();
    api.get("r").await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
    server.set_latency(Duration::ZERO);
    let started = Instant::now();
    api.get("r").await.unwrap();
    assert!(started.elapsed() < Duration::from_millis(300));
}

#[tokio::test]
async fn paginated_lists_are_consistent_snapshots() {
    let (server, api) = start().await;
    for i in 0..7 {
        api.create(&PostParams::default(), &request(&format!("r{i}")))
            .await
            .unwrap();
    }
    let first = api.list(&ListParams::default().limit(3)).await.unwrap();
    let names = |l: &kube::core::ObjectList<ActivationRequest>| {
        l.items.iter().map(|o| o.name_any()).collect::<Vec<_>>()
    };
    assert_eq!(names(&first), ["r0", "r1", "r2"]);
    assert_eq!(first.metadata.remaining_item_count, Some(4));
    let token = first.metadata.continue_.clone().unwrap();

    // Changes between pages do not show: the pages are a snapshot at the first page's version.
    api.delete("r4", &DeleteParams::default()).await.unwrap();
    api.patch(
        "r5",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"justification": "later"}})),
    )
    .await
    .unwrap();
    api.create(&PostParams::default(), &request("r9"))
        .await
        .unwrap();
    let second = api
        .list(&ListParams::default().limit(3).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(names(&second), ["r3", "r4", "r5"]);
    assert!(second.items[2].spec.justification.is_none());
    assert_eq!(
        second.metadata.resource_version,
        first.metadata.resource_version
    );
    let third = api
        .list(
            &ListParams::default()
                .limit(3)
                .continue_token(second.metadata.continue_.as_deref().unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(names(&third), ["r6"]);
    assert!(third.metadata.continue_.is_none());

    // A continue token older than the history is 410.
    server.expire_history();
    let err = api
        .list(&ListParams::default().limit(3).continue_token(&token))
        .await
        .unwrap_err();
    assert_eq!(api_code(&err), (410, "Expired".into()));
}

#[tokio::test]
async fn selectors_filter_lists_and_watches() {
    let (_server, api) = start().await;
    for (name, team) in [("a", "x"), ("b", "y"), ("c", "x")] {
        let mut r = request(name);
        r.metadata.labels = Some(BTreeMap::from([("team".into(), team.into())]));
        api.create(&PostParams::default(), &r).await.unwrap();
    }
    let list = api
        .list(&ListParams::default().labels("team=x"))
        .await
        .unwrap();
    assert_eq!(
        list.items.iter().map(|o| o.name_any()).collect::<Vec<_>>(),
        ["a", "c"]
    );
    let list = api
        .list(&ListParams::default().labels("team in (y),!missing"))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1);
    let list = api
        .list(&ListParams::default().fields("metadata.name=c"))
        .await
        .unwrap();
    assert_eq!(list.items[0].name_any(), "c");
    let err = api
        .list(&ListParams::default().fields("spec.group=x"))
        .await
        .unwrap_err();
    assert_eq!(api_code(&err).0, 400);

    // An object that stops matching leaves the selected watch as DELETED.
    let mut events =
        watcher::watcher(api.clone(), watcher::Config::default().labels("team=x")).boxed();
    assert_eq!(until_init_done(&mut events).await, ["a", "c"]);
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"team": "z"}}})),
    )
    .await
    .unwrap();
    api.patch(
        "b",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"team": "x"}}})),
    )
    .await
    .unwrap();
    assert_eq!(next_change(&mut events).await.0, "delete");
    assert_eq!(next_change(&mut events).await.1, "b");
}

#[tokio::test]
async fn discovery_works() {
    let (server, _api) = start().await;
    let discovery = Discovery::new(server.client()).run().await.unwrap();
    let (ar, caps) = discovery
        .resolve_gvk(&kube::api::GroupVersionKind::gvk(
            "pim.dev",
            "v1alpha1",
            "ActivationRequest",
        ))
        .expect("our CRD is discovered");
    assert_eq!(ar.plural, "activationrequests");
    assert_eq!(caps.scope, kube::discovery::Scope::Cluster);
    assert!(
        caps.subresources
            .iter()
            .any(|(s, _)| s.plural == "activationrequests/status" || s.plural == "status"),
        "{:?}",
        caps.subresources
    );
    let (lease, caps) = discovery
        .resolve_gvk(&kube::api::GroupVersionKind::gvk(
            "coordination.k8s.io",
            "v1",
            "Lease",
        ))
        .unwrap();
    assert_eq!(lease.plural, "leases");
    assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);
    assert!(discovery.has_group("rbac.authorization.k8s.io"));
    assert!(
        discovery
            .resolve_gvk(&kube::api::GroupVersionKind::gvk("", "v1", "Secret"))
            .is_some()
    );

    let aggregated = Discovery::new(server.client())
        .run_aggregated()
        .await
        .unwrap();
    assert!(
        aggregated
            .resolve_gvk(&kube::api::GroupVersionKind::gvk(
                "pim.dev", "v1alpha1", "PimGroup"
            ))
            .is_some()
    );
    assert!(server.discovery_requests() > 2);
}

fn lease(name: &str, holder: &str) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            ..LeaseSpec::default()
        }),
    }
}

#[tokio::test]
async fn lease_replace_with_resource_version_conflict() {
    let (server, _api) = start().await;
    let leases: Api<Lease> = Api::namespaced(server.client(), "pim-system");
    let created = leases
        .create(&PostParams::default(), &lease("leader", "a"))
        .await
        .unwrap();
    assert_eq!(created.metadata.namespace.as_deref(), Some("pim-system"));

    let mut mine = created.clone();
    mine.spec.as_mut().unwrap().holder_identity = Some("b".into());
    let taken = leases
        .replace("leader", &PostParams::default(), &mine)
        .await
        .unwrap();
    assert_eq!(taken.spec.unwrap().holder_identity.as_deref(), Some("b"));

    // A second candidate with the old version loses.
    let mut theirs = created.clone();
    theirs.spec.as_mut().unwrap().holder_identity = Some("c".into());
    let err = leases
        .replace("leader", &PostParams::default(), &theirs)
        .await
        .unwrap_err();
    assert_eq!(api_code(&err), (409, "Conflict".into()));
    let err = leases
        .create(&PostParams::default(), &lease("leader", "c"))
        .await
        .unwrap_err();
    assert_eq!(api_code(&err), (409, "AlreadyExists".into()));
    // Namespaced: not visible from another namespace, visible across all.
    let other: Api<Lease> = Api::namespaced(server.client(), "other");
    assert_eq!(api_code(&other.get("leader").await.unwrap_err()).0, 404);
    let all: Api<Lease> = Api::all(server.client());
    assert_eq!(
        all.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );
}

#[tokio::test]
async fn secrets_string_data_and_self_subject_review() {
    let (server, _api) = start().await;
    let secrets: Api<Secret> = Api::namespaced(server.client(), "default");
    let secret: Secret = serde_json::from_value(
        json!({"metadata": {"name": "s"}, "stringData": {"token": "foobar"}}),
    )
    .unwrap();
    let created = secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let data = created.data.unwrap();
    assert_eq!(data["token"].0, b"foobar");
    assert!(created.string_data.is_none());

    server.set_identity(
        "alice@contoso.com",
        &["pim-approvers", "system:authenticated"],
    );
    let review: Value = server
        .client()
        .request(
            http::Request::post("/apis/authentication.k8s.io/v1/selfsubjectreviews")
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})).unwrap())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        review["status"]["userInfo"]["username"],
        "alice@contoso.com"
    );
    assert_eq!(review["status"]["userInfo"]["groups"][0], "pim-approvers");
}

#[tokio::test]
async fn json_patch_with_test_operations() {
    let (server, api) = start().await;
    api.create(&PostParams::default(), &request("r"))
        .await
        .unwrap();
    let json_patch = |ops: Value| {
        http::Request::patch("/apis/pim.dev/v1alpha1/activationrequests/r")
            .header("content-type", "application/json-patch+json")
            .body(serde_json::to_vec(&ops).unwrap())
            .unwrap()
    };
    let client = server.client();
    let added: ActivationRequest = client
        .request(json_patch(json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": ["f"]},
        ])))
        .await
        .unwrap();
    assert_eq!(added.finalizers(), ["f"]);
    let err = client
        .request::<ActivationRequest>(json_patch(
            json!([{"op": "test", "path": "/metadata/finalizers/0", "value": "g"}]),
        ))
        .await
        .unwrap_err();
    assert_eq!(api_code(&err).0, 422);
    let err = client
        .request::<ActivationRequest>(json_patch(json!({"not": "a list"})))
        .await
        .unwrap_err();
    assert_eq!(api_code(&err).0, 400);
}

/// What kubectl sends for `get` (client-go `kubectl/pkg/cmd/get`, server-side printing).
const TABLE_ACCEPT: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";

#[tokio::test]
async fn tables_for_custom_resources_json_for_everything_else() {
    let (server, api) = start().await;
    server.set_clock(Arc::new(pim_operator::clock::ManualClock::new(
        "2026-03-02T09:00:00Z".parse().unwrap(),
    )));
    api.create(&PostParams::default(), &request("r"))
        .await
        .unwrap();
    let client = server.client();
    let get = |path: &str, accept: Option<&str>| {
        let mut req = http::Request::get(path);
        if let Some(accept) = accept {
            req = req.header("accept", accept);
        }
        let req = req.body(vec![]).unwrap();
        let client = client.clone();
        async move { client.request::<Value>(req).await }
    };
    let list = "/apis/pim.dev/v1alpha1/activationrequests";

    let table = get(list, Some(TABLE_ACCEPT)).await.unwrap();
    assert_eq!(table["kind"], "Table");
    assert_eq!(table["apiVersion"], "meta.k8s.io/v1");
    assert!(table["metadata"]["resourceVersion"].is_string(), "{table}");
    let columns: Vec<(String, i64)> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_owned(),
                c["priority"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(columns.first(), Some(&("Name".to_owned(), 0)));
    assert_eq!(columns.last(), Some(&("Age".to_owned(), 0)));
    let row = &table["rows"][0];
    let cells = row["cells"].as_array().unwrap();
    assert_eq!(cells.len(), columns.len());
    assert_eq!(cells[0], "r");
    // Created at the server's clock's now; no status yet, so the status columns are null.
    assert_eq!(cells.last().unwrap(), "0s");
    let phase = columns.iter().position(|(n, _)| n == "Phase").unwrap();
    assert_eq!(cells[phase], Value::Null);
    assert_eq!(row["object"]["kind"], "PartialObjectMetadata");
    assert_eq!(row["object"]["apiVersion"], "meta.k8s.io/v1");
    assert_eq!(row["object"]["metadata"]["name"], "r");
    assert!(row["object"].get("spec").is_none());

    // One object; includeObject; v1beta1.
    let one = get(
        &format!("{list}/r?includeObject=Object"),
        Some(TABLE_ACCEPT),
    )
    .await
    .unwrap();
    assert_eq!(one["rows"].as_array().unwrap().len(), 1);
    assert_eq!(one["rows"][0]["object"]["kind"], "ActivationRequest");
    assert_eq!(one["rows"][0]["object"]["spec"]["group"], "admins");
    let none = get(&format!("{list}?includeObject=None"), Some(TABLE_ACCEPT))
        .await
        .unwrap();
    assert_eq!(none["rows"][0]["object"], Value::Null);
    let beta = get(
        list,
        Some("application/json;as=Table;v=v1beta1;g=meta.k8s.io"),
    )
    .await
    .unwrap();
    assert_eq!(beta["apiVersion"], "meta.k8s.io/v1beta1");
    match get(&format!("{list}?includeObject=All"), Some(TABLE_ACCEPT)).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 400);
            assert!(status.message.contains("includeObject"), "{status:?}");
        }
        other => panic!("{other:?}"),
    }

    // Plain JSON for clients that do not ask, and for built-in types whatever is asked.
    assert_eq!(
        get(list, None).await.unwrap()["kind"],
        "ActivationRequestList"
    );
    assert_eq!(
        get(list, Some("application/json")).await.unwrap()["kind"],
        "ActivationRequestList"
    );
    assert_eq!(
        get("/api/v1/namespaces/default/configmaps", Some(TABLE_ACCEPT))
            .await
            .unwrap()["kind"],
        "ConfigMapList"
    );
    // Errors stay Status objects.
    match get(&format!("{list}/missing"), Some(TABLE_ACCEPT)).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 404),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn bad_requests_get_status_errors() {
    let (server, _api) = start().await;
    let client = server.client();
    let send = |req: http::Request<Vec<u8>>| {
        let client = client.clone();
        async move { client.request::<Value>(req).await.unwrap_err() }
    };
    let cases = [
        (http::Request::get("/apis/pim.dev/v1alpha1/nothings").body(vec![]).unwrap(), 404),
        (http::Request::post("/apis/pim.dev/v1alpha1/activationrequests").body(b"not json".to_vec()).unwrap(), 400),
        (http::Request::put("/apis/pim.dev/v1alpha1/activationrequests").body(b"{}".to_vec()).unwrap(), 405),
        (
            http::Request::patch("/apis/pim.dev/v1alpha1/activationrequests/x")
                .header("content-type", "application/strategic-merge-patch+json")
                .body(b"{}".to_vec())
                .unwrap(),
            415,
        ),
        (http::Request::get("/apis/pim.dev/v1alpha1/activationrequests?limit=x").body(vec![]).unwrap(), 400),
        (http::Request::get("/apis/pim.dev/v1alpha1/activationrequests?watch=true&resourceVersion=abc").body(vec![]).unwrap(), 400),
        (http::Request::get("/apis/pim.dev/v1alpha1/activationrequests/x/scale").body(vec![]).unwrap(), 404),
        (
            http::Request::post("/apis/pim.dev/v1alpha1/activationrequests")
                .body(serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}})).unwrap())
                .unwrap(),
            400,
        ),
    ];
    for (req, code) in cases {
        let what = format!("{} {}", req.method(), req.uri());
        match send(req).await {
            kube::Error::Api(status) => {
                assert_eq!(status.code, code, "{what}: {status:?}");
                assert_eq!(
                    status.status,
                    Some(kube::core::response::StatusSummary::Failure),
                    "{what}"
                );
                assert!(!status.reason.is_empty(), "{what}");
            }
            other => panic!("{what}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn store_helpers_bypass_admission_and_are_watched() {
    let (server, api) = start().await;
    let mut events = watcher(api.clone());
    until_init_done(&mut events).await;
    // Invalid on purpose (empty group): store_put bypasses validation.
    let stored = server
        .store_put(
            "activationrequests",
            None,
            json!({"metadata": {"name": "sneaky"}, "spec": {"group": "", "requester": {"username": "mallory"}}}),
        )
        .unwrap();
    assert_eq!(stored["kind"], "ActivationRequest");
    assert_eq!(next_change(&mut events).await.1, "sneaky");
    let got = api.get("sneaky").await.unwrap();
    assert_eq!(got.spec.requester.unwrap().username, "mallory");
    assert_eq!(server.store_list("activationrequests", None).len(), 1);
    assert!(
        server.writes().is_empty(),
        "store helpers are not API writes"
    );
    assert!(server.store_delete("activationrequests", None, "sneaky"));
    assert_eq!(next_change(&mut events).await.0, "delete");
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct ReconcileError(#[from] kube::Error);

struct Ctx {
    api: Api<ActivationRequest>,
}

async fn reconcile(
    obj: Arc<ActivationRequest>,
    ctx: Arc<Ctx>,
) -> Result<Action, finalizer::Error<ReconcileError>> {
    let api = ctx.api.clone();
    finalizer::finalizer(&ctx.api, "pim.dev/test-cleanup", obj, |event| async move {
        match event {
            finalizer::Event::Apply(o) => {
                let status = json!({"apiVersion": AV, "kind": "ActivationRequest", "metadata": {"name": o.name_any()},
                    "status": {"phase": "PendingApproval", "observedGeneration": o.metadata.generation,
                        "conditions": [condition("Validated", "True", "Valid")]}});
                api.patch_status(&o.name_any(), &PatchParams::apply("pim-test").force(), &Patch::Apply(status))
                    .await?;
                Ok(Action::await_change())
            }
            finalizer::Event::Cleanup(_) => Ok(Action::await_change()),
        }
    })
    .await
}

#[tokio::test]
async fn a_real_controller_settles_and_cleans_up() {
    let (server, api) = start().await;
    let ctx = Arc::new(Ctx { api: api.clone() });
    let controller = tokio::spawn(
        Controller::new(api.clone(), watcher::Config::default())
            .run(
                reconcile,
                |_, _, _| Action::requeue(Duration::from_millis(50)),
                ctx,
            )
            .for_each(|_| async {}),
    );
    api.create(&PostParams::default(), &request("r"))
        .await
        .unwrap();
    eventually("status written", || {
        server
            .store_get("activationrequests", None, "r")
            .is_some_and(|o| o["status"]["phase"] == "PendingApproval")
    })
    .await;
    let stored = server.store_get("activationrequests", None, "r").unwrap();
    assert_eq!(
        stored["metadata"]["finalizers"],
        json!(["pim.dev/test-cleanup"])
    );

    // The status write triggers one more reconcile; its identical apply is a no-op, and then the
    // controller is idle: no more writes.
    eventually("a no-op status apply", || {
        server.writes().iter().any(|w| w.is_status() && !w.changed)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.reset_observations();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        server.writes().is_empty(),
        "idle controller wrote: {:?}",
        server.writes()
    );

    // Deletion: the finalizer helper cleans up and removes its finalizer; the object goes.
    api.delete("r", &DeleteParams::default()).await.unwrap();
    eventually("object gone", || {
        server.store_get("activationrequests", None, "r").is_none()
    })
    .await;
    controller.abort();
}

#[tokio::test]
async fn shutdown_stops_serving() {
    let server = FakeApiServer::start().await.unwrap();
    let client: Client = server.client();
    let api: Api<ActivationRequest> = Api::all(client.clone());
    api.list(&ListParams::default()).await.unwrap();
    let mut events = watcher(api.clone());
    until_init_done(&mut events).await;
    tokio::time::timeout(Duration::from_secs(5), server.shutdown())
        .await
        .expect("shutdown completes with a watch open");
    assert!(api.list(&ListParams::default()).await.is_err());
}

#[tokio::test]
async fn kubectl_can_use_it_when_installed() {
    let Ok(kubectl) = which("kubectl") else {
        eprintln!("kubectl not installed: skipped");
        return;
    };
    let (server, api) = start().await;
    api.create(&PostParams::default(), &request("from-kube"))
        .await
        .unwrap();
    let url = server.url().to_string();
    let run = move |args: Vec<String>, stdin: Option<String>| {
        let kubectl = kubectl.clone();
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let home = tempfile::tempdir().unwrap();
            let mut child = std::process::Command::new(kubectl)
                .env("HOME", home.path())
                .env_remove("KUBECONFIG")
                .arg(format!("--server={url}"))
                .args(&args)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            if let Some(input) = stdin {
                child
                    .stdin
                    .take()
                    .unwrap()
                    .write_all(input.as_bytes())
                    .unwrap();
            }
            drop(child.stdin.take());
            let out = child.wait_with_output().unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).to_string(),
                String::from_utf8_lossy(&out.stderr).to_string(),
            )
        })
    };
    let (ok, out, err) = run(vec!["get".into(), "ar".into()], None).await.unwrap();
    assert!(ok, "kubectl get (table) failed: {err}");
    assert!(out.contains("from-kube"), "{out}");
    let (ok, out, err) = run(
        vec![
            "get".into(),
            "activationrequests".into(),
            "-o".into(),
            "name".into(),
        ],
        None,
    )
    .await
    .unwrap();
    assert!(ok, "kubectl get failed: {err}");
    assert!(out.contains("activationrequest.pim.dev/from-kube"), "{out}");
    let manifest = "apiVersion: pim.dev/v1alpha1\nkind: ActivationRequest\nmetadata:\n  name: from-kubectl\nspec:\n  group: ops\n";
    let (ok, _, err) = run(
        vec![
            "apply".into(),
            "--server-side".into(),
            "--validate=false".into(),
            "-f".into(),
            "-".into(),
        ],
        Some(manifest.into()),
    )
    .await
    .unwrap();
    assert!(ok, "kubectl apply --server-side failed: {err}");
    assert_eq!(api.get("from-kubectl").await.unwrap().spec.group, "ops");
    let (ok, _, err) = run(
        vec!["delete".into(), "ar".into(), "from-kubectl".into()],
        None,
    )
    .await
    .unwrap();
    assert!(ok, "kubectl delete failed: {err}");
}

fn which(program: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join(program))
                .find(|p| p.is_file())
        })
        .ok_or(())
}

#[tokio::test]
async fn bookmarks_carry_the_global_resource_version_and_watches_time_out() {
    let server = FakeApiServer::start_with(Options {
        bookmark_interval: Duration::from_millis(100),
        ..Options::default()
    })
    .await
    .unwrap();
    let api: Api<ActivationRequest> = Api::all(server.client());
    let start = server.resource_version().to_string();
    let mut stream = api
        .watch(&WatchParams::default().timeout(2), &start)
        .await
        .unwrap()
        .boxed();
    // A write to another kind moves the global resourceVersion; the bookmark follows it.
    let cms: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    let cm = cms
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "c"}})).unwrap(),
        )
        .await
        .unwrap();
    let started = Instant::now();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .unwrap()
        {
            Some(Ok(WatchEvent::Bookmark(b))) => {
                assert_eq!(b.types.kind, "ActivationRequest");
                assert_eq!(b.types.api_version, AV);
                if b.metadata.resource_version == rv(&cm).to_string() {
                    break;
                }
            }
            Some(Ok(other)) => panic!("unexpected event {other:?}"),
            other => panic!("watch ended early: {:?}", other.map(|r| r.map(|_| ()))),
        }
    }
    // timeoutSeconds=2: the server ends the stream.
    while let Some(event) = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap()
    {
        assert!(matches!(event, Ok(WatchEvent::Bookmark(_))));
    }
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    assert_eq!(server.open_watches(), 0);
}

#[tokio::test]
async fn delete_collection_and_dry_run() {
    let (server, api) = start().await;
    for (name, team) in [("a", "x"), ("b", "x"), ("c", "y")] {
        let mut r = request(name);
        r.metadata.labels = Some(BTreeMap::from([("team".into(), team.into())]));
        api.create(&PostParams::default(), &r).await.unwrap();
    }
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let ghost = api.create(&dry, &request("ghost")).await.unwrap();
    assert_eq!(ghost.name_any(), "ghost");
    assert!(
        server
            .store_get("activationrequests", None, "ghost")
            .is_none()
    );
    api.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("team=x"),
    )
    .await
    .unwrap();
    let left: Vec<String> = server
        .store_list("activationrequests", None)
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(left, ["c"]);
}

#[tokio::test]
async fn event_recorder_creates_then_patches_a_series() {
    use kube::runtime::events::{Event as KEvent, EventType, Recorder, Reporter};
    let (server, api) = start().await;
    let obj = api
        .create(&PostParams::default(), &request("r"))
        .await
        .unwrap();
    let recorder = Recorder::new(server.client(), Reporter::from("pim-operator".to_string()));
    let event = KEvent {
        type_: EventType::Normal,
        reason: "Validated".into(),
        note: Some("ok".into()),
        action: "Validate".into(),
        secondary: None,
    };
    recorder
        .publish(&event, &obj.object_ref(&()))
        .await
        .unwrap();
    recorder
        .publish(&event, &obj.object_ref(&()))
        .await
        .unwrap();
    let events = server.store_list("events", Some("default"));
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["series"]["count"], 2);
    assert_eq!(events[0]["regarding"]["name"], "r");
    assert_eq!(server.requests().get(Verb::Create, "events"), 1);
    assert_eq!(server.requests().get(Verb::Patch, "events"), 1);
}

#[tokio::test]
async fn apply_accepts_yaml_bodies() {
    let (server, api) = start().await;
    let yaml = "apiVersion: pim.dev/v1alpha1\nkind: ActivationRequest\nmetadata:\n  name: y\nspec:\n  group: ops\n  justification: from yaml\n";
    let created: ActivationRequest = server
        .client()
        .request(
            http::Request::patch(
                "/apis/pim.dev/v1alpha1/activationrequests/y?fieldManager=yaml-user",
            )
            .header("content-type", "application/apply-patch+yaml")
            .body(yaml.as_bytes().to_vec())
            .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(created.spec.justification.as_deref(), Some("from yaml"));
    assert_eq!(
        api.get("y").await.unwrap().managed_fields()[0]
            .manager
            .as_deref(),
        Some("yaml-user")
    );
}

#[tokio::test]
async fn bounded_history_expires_old_versions_and_clock_is_shared() {
    let server = FakeApiServer::start_with(Options {
        history: 3,
        ..Options::default()
    })
    .await
    .unwrap();
    let clock = Arc::new(pim_operator::clock::ManualClock::new(
        "2030-01-02T03:04:05Z".parse().unwrap(),
    ));
    server.set_clock(clock.clone());
    let api: Api<ActivationRequest> = Api::all(server.client());
    let first = api
        .create(&PostParams::default(), &request("r0"))
        .await
        .unwrap();
    assert_eq!(
        first
            .metadata
            .creation_timestamp
            .as_ref()
            .unwrap()
            .0
            .to_string(),
        "2030-01-02T03:04:05Z"
    );
    for i in 1..5 {
        api.create(&PostParams::default(), &request(&format!("r{i}")))
            .await
            .unwrap();
    }
    // Only the last 3 changes are kept: a watch from the first version is too old...
    let events: Vec<_> = api
        .watch(&WatchParams::default(), &rv(&first).to_string())
        .await
        .unwrap()
        .take(1)
        .try_collect()
        .await
        .unwrap();
    assert!(matches!(&events[0], WatchEvent::Error(s) if s.code == 410));
    // ...one within the history replays what followed.
    let recent = server.resource_version() - 2;
    let events: Vec<_> = api
        .watch(&WatchParams::default(), &recent.to_string())
        .await
        .unwrap()
        .take(2)
        .try_collect()
        .await
        .unwrap();
    let names: Vec<String> = events
        .iter()
        .map(|e| match e {
            WatchEvent::Added(o) => o.name_any(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(names, ["r3", "r4"]);
}

#[path = "fake_apiserver/admission.rs"]
mod admission;
