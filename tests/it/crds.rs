//! The generated CRDs: `crds/` is fresh, the schemas are structural and use only formats
//! Kubernetes knows, server-side apply merges our lists per key, and the CEL rules do what they
//! say when evaluated the way the API server evaluates them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::PathBuf;

use kube::core::cel::Validator;
use pim_operator::api::crd;
use serde_json::{Value, json};

fn crds_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("crds")
}

#[test]
fn crds_folder_matches_the_rust_types() {
    let generated = crd::files().expect("CRDs render as YAML");
    let mut expected = BTreeSet::new();
    for (name, yaml) in &generated {
        expected.insert(name.clone());
        let path = crds_dir().join(name);
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == *yaml,
            "{} is stale: regenerate with `cargo run -- crds --write crds` and commit it",
            path.display()
        );
    }
    let present: BTreeSet<String> = std::fs::read_dir(crds_dir())
        .expect("crds/ exists")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    assert_eq!(
        present, expected,
        "crds/ holds files that no Rust type generates"
    );
}

fn schema_of(kind: &str) -> Value {
    let crd = crd::all()
        .into_iter()
        .find(|c| c.spec.names.kind == kind)
        .expect("kind is one of ours");
    let schema = crd.spec.versions[0]
        .schema
        .clone()
        .and_then(|s| s.open_api_v3_schema);
    serde_json::to_value(schema.expect("schema present")).expect("schema serializes")
}

const KINDS: [&str; 4] = [
    "AccessPolicy",
    "PimGroup",
    "EligibleAssignment",
    "ActivationRequest",
];

/// Visits every schema node with its path.
fn walk<'a>(path: String, node: &'a Value, visit: &mut impl FnMut(&str, &'a Value)) {
    visit(&path, node);
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            walk(format!("{path}.{k}"), v, visit);
        }
    }
    if let Some(items) = node.get("items") {
        walk(format!("{path}[]"), items, visit);
    }
    if let Some(extra) = node.get("additionalProperties").filter(|v| v.is_object()) {
        walk(format!("{path}{{}}"), extra, visit);
    }
}

#[test]
fn schemas_are_structural_with_known_formats_only() {
    for kind in KINDS {
        let schema = schema_of(kind);
        walk(kind.to_owned(), &schema, &mut |path, node| {
            assert!(
                node.get("type").is_some(),
                "{path} has no type: structural schemas need one"
            );
            for banned in [
                "$ref",
                "oneOf",
                "anyOf",
                "allOf",
                "nullable",
                "definitions",
                "$schema",
            ] {
                assert!(node.get(banned).is_none(), "{path} uses {banned}");
            }
            if let Some(values) = node.get("enum").and_then(Value::as_array) {
                assert!(
                    !values.contains(&Value::Null),
                    "{path} lists null among its enum values"
                );
            }
            if let Some(format) = node.get("format").and_then(Value::as_str) {
                assert!(
                    crd::SUPPORTED_FORMATS.contains(&format),
                    "{path} has format {format}"
                );
            }
        });
    }
}

#[test]
fn lists_merge_per_key_under_server_side_apply() {
    let list_map = |kind: &str, pointer: &str, key: &str| {
        let schema = schema_of(kind);
        let node = schema
            .pointer(pointer)
            .unwrap_or_else(|| panic!("{kind} has {pointer}"));
        assert_eq!(node["x-kubernetes-list-type"], "map", "{kind} {pointer}");
        assert_eq!(
            node["x-kubernetes-list-map-keys"],
            json!([key]),
            "{kind} {pointer}"
        );
        let required = node.pointer("/items/required").cloned().unwrap_or_default();
        assert!(
            required.as_array().is_some_and(|r| r.contains(&json!(key))),
            "{kind} {pointer}: key {key} must be required"
        );
    };
    for kind in KINDS {
        list_map(kind, "/properties/status/properties/conditions", "type");
    }
    list_map(
        "ActivationRequest",
        "/properties/spec/properties/approvals",
        "approver",
    );
}

#[test]
fn every_kind_is_cluster_scoped_with_short_names_and_the_pim_category() {
    let short: Vec<_> = crd::all()
        .iter()
        .map(|c| {
            assert_eq!(c.spec.scope, "Cluster");
            assert_eq!(c.spec.group, "pim.dev");
            assert_eq!(
                c.spec.names.categories.as_deref(),
                Some(&["pim".to_owned()][..])
            );
            // The grant ledger (PimGrant) has no status: the operator writes it whole.
            let has_status = c.spec.versions[0]
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some();
            assert_eq!(
                has_status,
                c.spec.names.kind != "PimGrant",
                "{}",
                c.spec.names.kind
            );
            c.spec
                .names
                .short_names
                .clone()
                .unwrap_or_default()
                .join(",")
        })
        .collect();
    assert_eq!(short, ["ap", "pg", "ea", "ar", "pgr", "arv"]);
}

#[test]
fn activation_request_columns_say_what_state_and_why() {
    let crd = crd::all()
        .into_iter()
        .find(|c| c.spec.names.kind == "ActivationRequest")
        .expect("AR");
    let columns: Vec<_> = crd.spec.versions[0]
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        columns,
        [
            "Phase",
            "Group",
            "Role",
            "Principal",
            "Expires",
            "Reason",
            "Extends",
            "Age"
        ]
    );
    // What an extension extends shows only with `-o wide`.
    let extends = crd.spec.versions[0]
        .additional_printer_columns
        .iter()
        .flatten()
        .find(|c| c.name == "Extends")
        .unwrap();
    assert_eq!(
        (extends.json_path.as_str(), extends.priority),
        (".spec.extends", Some(1))
    );
}

// --- CEL rules, evaluated ---

fn check(kind: &str, object: &Value, old: Option<&Value>) -> Result<(), String> {
    Validator::new()
        .validate(&schema_of(kind), object, old)
        .map_err(|errs| {
            errs.into_vec()
                .into_iter()
                .map(|e| e.message)
                .collect::<Vec<_>>()
                .join("; ")
        })
}

fn request(spec: Value) -> Value {
    json!({"apiVersion": "pim.dev/v1alpha1", "kind": "ActivationRequest", "metadata": {"name": "r"}, "spec": spec})
}

fn stamped() -> Value {
    json!({
        "group": "finreport",
        "duration": "30m",
        "justification": "month-end close",
        "requester": {"username": "alice", "groups": ["analysts"]},
        "principal": "alice@contoso.com"
    })
}

fn with(mut base: Value, key: &str, value: Value) -> Value {
    base[key] = value;
    base
}

#[test]
fn request_spec_is_immutable_but_approvals_and_deactivate() {
    let old = request(stamped());
    assert_eq!(check("ActivationRequest", &old, None), Ok(()));
    assert_eq!(check("ActivationRequest", &old, Some(&old)), Ok(()));

    let approved = request(with(
        stamped(),
        "approvals",
        json!([{"approver": "bob", "decision": "Approve"}]),
    ));
    assert_eq!(check("ActivationRequest", &approved, Some(&old)), Ok(()));
    let deactivated = request(with(stamped(), "deactivate", json!(true)));
    assert_eq!(check("ActivationRequest", &deactivated, Some(&old)), Ok(()));

    for (field, value) in [
        ("group", json!("payroll")),
        ("duration", json!("8h")),
        ("justification", json!("something else")),
        ("principal", json!("mallory")),
        ("requester", json!({"username": "mallory"})),
        ("role", json!("owner")),
        ("startTime", json!("2026-01-01T00:00:00Z")),
        ("ticket", json!({"system": "jira", "number": "1"})),
    ] {
        let changed = request(with(stamped(), field, value));
        let err = check("ActivationRequest", &changed, Some(&old)).expect_err(field);
        assert!(
            err.contains("spec is immutable after creation"),
            "{field}: {err}"
        );
    }
    let mut removed = stamped();
    removed
        .as_object_mut()
        .expect("object")
        .remove("justification");
    assert!(
        check("ActivationRequest", &request(removed), Some(&old)).is_err(),
        "removing a field is a change"
    );
}

#[test]
fn deactivation_and_decisions_cannot_be_taken_back() {
    let deactivated = request(with(stamped(), "deactivate", json!(true)));
    let undone = request(with(stamped(), "deactivate", json!(false)));
    let err = check("ActivationRequest", &undone, Some(&deactivated)).expect_err("undo");
    assert!(err.contains("deactivate cannot be undone"), "{err}");

    let approved = request(with(
        stamped(),
        "approvals",
        json!([{"approver": "bob", "decision": "Approve"}]),
    ));
    let flipped = request(with(
        stamped(),
        "approvals",
        json!([{"approver": "bob", "decision": "Deny"}]),
    ));
    let err = check("ActivationRequest", &flipped, Some(&approved)).expect_err("flip");
    assert!(err.contains("cannot be changed or removed"), "{err}");
    let dropped = request(stamped());
    assert!(check("ActivationRequest", &dropped, Some(&approved)).is_err());
    let second = request(with(
        stamped(),
        "approvals",
        json!([{"approver": "bob", "decision": "Approve"}, {"approver": "carol", "decision": "Deny"}]),
    ));
    assert_eq!(check("ActivationRequest", &second, Some(&approved)), Ok(()));
}

fn object(kind: &str, spec: Value) -> Value {
    json!({"apiVersion": "pim.dev/v1alpha1", "kind": kind, "metadata": {"name": "x"}, "spec": spec})
}

#[test]
fn principals_name_exactly_one_user_or_group() {
    let assignment = |principal: Value| {
        object(
            "EligibleAssignment",
            json!({"group": "g", "principal": principal, "schedule": {"duration": "90d"}}),
        )
    };
    assert_eq!(
        check(
            "EligibleAssignment",
            &assignment(json!({"user": "alice"})),
            None
        ),
        Ok(())
    );
    assert_eq!(
        check(
            "EligibleAssignment",
            &assignment(json!({"group": "analysts"})),
            None
        ),
        Ok(())
    );
    for bad in [json!({}), json!({"user": "a", "group": "g"})] {
        let err =
            check("EligibleAssignment", &assignment(bad.clone()), None).expect_err("bad principal");
        assert!(
            err.contains("set exactly one of user or group"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn schedules_name_exactly_one_end() {
    let assignment = |schedule: Value| {
        object(
            "EligibleAssignment",
            json!({"group": "g", "principal": {"user": "a"}, "schedule": schedule}),
        )
    };
    for good in [
        json!({"duration": "1d"}),
        json!({"end": "2027-01-01T00:00:00Z"}),
        json!({"permanent": true}),
    ] {
        assert_eq!(
            check("EligibleAssignment", &assignment(good.clone()), None),
            Ok(()),
            "{good}"
        );
    }
    for bad in [
        json!({}),
        json!({"permanent": false}),
        json!({"duration": "1d", "permanent": true}),
    ] {
        let err =
            check("EligibleAssignment", &assignment(bad.clone()), None).expect_err("bad schedule");
        assert!(
            err.contains("set exactly one of end, duration or permanent"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn approval_counts_must_be_collectable() {
    let policy = |approval: Value| {
        object(
            "AccessPolicy",
            json!({"activation": {"approval": approval}}),
        )
    };
    let users = json!([{"user": "a"}, {"user": "b"}]);
    assert_eq!(
        check(
            "AccessPolicy",
            &policy(json!({"approvers": users, "minApprovals": 2})),
            None
        ),
        Ok(())
    );
    let err = check(
        "AccessPolicy",
        &policy(json!({"approvers": users, "minApprovals": 3})),
        None,
    )
    .expect_err("3 of 2");
    assert!(err.contains("minApprovals cannot exceed"), "{err}");
    let group = json!([{"group": "sec"}]);
    assert_eq!(
        check(
            "AccessPolicy",
            &policy(json!({"approvers": group, "minApprovals": 3})),
            None
        ),
        Ok(())
    );
}

#[test]
fn groups_are_named_and_rbac_belongs_to_the_kubernetes_directory() {
    let group = |spec: Value| object("PimGroup", spec);
    let roles = json!({"member": {"policy": "p"}});
    assert_eq!(
        check(
            "PimGroup",
            &group(json!({"directory": "entra", "group": {"displayName": "G"}, "roles": roles})),
            None
        ),
        Ok(())
    );
    let err = check(
        "PimGroup",
        &group(json!({"directory": "entra", "group": {}, "roles": roles})),
        None,
    )
    .expect_err("no id");
    assert!(err.contains("set id or displayName"), "{err}");
    let err = check(
        "PimGroup",
        &group(json!({"directory": "entra", "group": {"id": "1", "create": true}, "roles": roles})),
        None,
    )
    .expect_err("create by id");
    assert!(err.contains("create needs a displayName"), "{err}");
    let rbac = json!({"clusterRoles": ["view"]});
    let k8s = group(
        json!({"directory": "kubernetes", "group": {"id": "ops"}, "roles": roles, "rbac": rbac}),
    );
    assert_eq!(check("PimGroup", &k8s, None), Ok(()));
    let err = check(
        "PimGroup",
        &group(json!({"directory": "entra", "group": {"id": "1"}, "roles": roles, "rbac": rbac})),
        None,
    )
    .expect_err("rbac on entra");
    assert!(
        err.contains("rbac applies only to the kubernetes directory"),
        "{err}"
    );
    let empty = group(
        json!({"directory": "kubernetes", "group": {"id": "ops"}, "roles": roles, "rbac": {}}),
    );
    assert!(
        check("PimGroup", &empty, None)
            .expect_err("empty rbac")
            .contains("at least one")
    );
}
