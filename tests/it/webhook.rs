//! The admission webhook's rules, one test each, driven by AdmissionReview JSON in the real
//! admission.k8s.io/v1 wire format; and an HTTPS round trip against the running server.
//!
//! The catalog is the FinReport example (examples/): approval by bob@contoso.com or the
//! FinReport-Approvers group, MFA required, alice@contoso.com eligible. Kubernetes usernames
//! are `oidc:<name>`, mapped to `<name>@contoso.com`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use jiff::Timestamp;
use pim_operator::api::activation_request::ActivationRequestSpec;
use pim_operator::api::{AccessPolicy, ActivationRequest, EligibleAssignment, PimGroup};
use pim_operator::attestation::Keyring;
use pim_operator::checks::SchemaChecker;
use pim_operator::clock::ManualClock;
use pim_operator::core::identity::{CaseInsensitive, Principals, UsernameMapping};
use pim_operator::core::lifecycle::Attestation;
use pim_operator::engine::{Attestor, Catalog, SignedAttestor};
use pim_operator::webhook::server::{CatalogSource, WebhookState};
use pim_operator::webhook::{Admission, MfaClaim, Stage};
use pim_testkit::admission::{patched, user, wire};
use serde_json::{Value, json};

const GROUP: &str = "finreport-senioranalyst";

fn now() -> Timestamp {
    "2026-11-22T10:00:00Z".parse().unwrap()
}

fn keyring() -> Keyring {
    Keyring::from_bytes(b"an attestation key of forty bytes, or so", &[]).unwrap()
}

/// The example PimGroup's directory, `entra`, maps `oidc:alice` to `alice@contoso.com`.
fn principals() -> Principals {
    let mapping = UsernameMapping {
        strip_prefix: Some("oidc:".into()),
        append_domain: Some("@contoso.com".into()),
    };
    Principals::new(
        [("entra".to_owned(), mapping)].into(),
        CaseInsensitive::EmailLike,
    )
}

fn example<T: serde::de::DeserializeOwned>(file: &str) -> T {
    let path = format!("{}/examples/{file}", env!("CARGO_MANIFEST_DIR"));
    serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn catalog() -> Catalog {
    let mut catalog = Catalog::default();
    catalog.set_principals(Arc::new(principals()));
    let policy: AccessPolicy = example("01-accesspolicy.yaml");
    catalog.insert_policy(policy.clone());
    let mut relaxed = policy;
    relaxed.metadata.name = Some("relaxed".into());
    relaxed.spec.activation.require_mfa = Some(false);
    relaxed.spec.activation.approval = None;
    catalog.insert_policy(relaxed);
    let group: PimGroup = example("02-pimgroup.yaml");
    catalog.insert_group(group.clone());
    let mut open = group;
    open.metadata.name = Some("open".into());
    open.spec.group.display_name = Some("Open".into());
    open.spec.roles.member.policy = "relaxed".into();
    catalog.insert_group(open);
    let assignment: EligibleAssignment = example("03-eligibleassignment.yaml");
    catalog.insert_assignment(assignment.clone());
    let mut open_assignment = assignment;
    open_assignment.metadata.name = Some("open-alice".into());
    open_assignment.spec.group = "open".into();
    catalog.insert_assignment(open_assignment);
    catalog
}

/// The operator's username in these tests: its in-cluster service account.
const OPERATOR: &str = "system:serviceaccount:pim-system:pim-operator";

fn admission(keyring: Option<Keyring>) -> Admission {
    admission_as(keyring, OPERATOR)
}

/// The webhook of an operator that authenticates as `operator`.
fn admission_as(keyring: Option<Keyring>, operator: &str) -> Admission {
    Admission {
        principals: principals(),
        mfa_claim: MfaClaim::default(),
        auth_time_claim: Some("pim.dev/auth_time".into()),
        keyring,
        schema: SchemaChecker::new().unwrap(),
        operator_username: operator.into(),
        shortest_assignments: Default::default(),
    }
}

fn alice() -> Value {
    user("oidc:alice", &["finance"], true)
}

fn bob() -> Value {
    user("oidc:bob", &[], true)
}

struct Answer {
    allowed: bool,
    message: String,
    warnings: Vec<String>,
    patched: Value,
}

fn run(admission: &Admission, stage: Stage, review: &Value) -> Answer {
    run_in(admission, stage, review, &catalog())
}

/// [`run`] against the objects of `catalog`.
fn run_in(admission: &Admission, stage: Stage, review: &Value, catalog: &Catalog) -> Answer {
    let body = serde_json::to_vec(review).unwrap();
    let out = admission.review(&body, stage, catalog, now()).unwrap();
    assert_eq!(out["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(out["kind"], "AdmissionReview");
    let response = &out["response"];
    assert_eq!(
        response["uid"], review["request"]["uid"],
        "the uid is echoed"
    );
    let patched = patched(&review["request"]["object"], response).unwrap();
    Answer {
        allowed: response["allowed"].as_bool().unwrap(),
        message: response["status"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        warnings: response["warnings"]
            .as_array()
            .map(|w| w.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default(),
        patched,
    }
}

fn request_object(group: &str, extra: Value) -> Value {
    let mut spec =
        json!({"group": group, "duration": "30m", "justification": "quarter close, FIN-1"});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            spec.insert(k.clone(), v.clone());
        }
    }
    json!({"apiVersion": "pim.dev/v1alpha1", "kind": "ActivationRequest",
           "metadata": {"name": "r1"}, "spec": spec})
}

/// The review of alice's create of a request in GROUP.
fn alices_create() -> Value {
    wire(
        "ActivationRequest",
        "activationrequests",
        "CREATE",
        &alice(),
        &request_object(GROUP, json!({})),
        None,
    )
}

/// One webhook's answer on the create of `object`.
fn on_create(admission: &Admission, stage: Stage, caller: &Value, object: &Value) -> Answer {
    on_create_in(admission, stage, caller, object, &catalog())
}

fn on_create_in(
    admission: &Admission,
    stage: Stage,
    caller: &Value,
    object: &Value,
    catalog: &Catalog,
) -> Answer {
    let review = wire(
        "ActivationRequest",
        "activationrequests",
        "CREATE",
        caller,
        object,
        None,
    );
    run_in(admission, stage, &review, catalog)
}

fn assert_refused(answer: &Answer, needle: &str) {
    assert!(!answer.allowed);
    assert!(answer.message.contains(needle), "{}", answer.message);
}

fn validate_create(admission: &Admission, caller: &Value, object: &Value) -> Answer {
    on_create(admission, Stage::Validate, caller, object)
}

/// Mutate then validate, as the API server chains them; returns the stored object.
fn create(admission: &Admission, caller: &Value, object: &Value) -> Result<Value, String> {
    create_in(admission, caller, object, &catalog())
}

/// [`create`] against the objects of `catalog`.
fn create_in(
    admission: &Admission,
    caller: &Value,
    object: &Value,
    catalog: &Catalog,
) -> Result<Value, String> {
    let mutated = on_create_in(admission, Stage::Mutate, caller, object, catalog);
    if !mutated.allowed {
        return Err(mutated.message);
    }
    let mut stored = mutated.patched;
    let validated = on_create_in(admission, Stage::Validate, caller, &stored, catalog);
    if !validated.allowed {
        return Err(validated.message);
    }
    // What the API server adds on create.
    stored["metadata"]["uid"] = json!("req-uid-1");
    stored["metadata"]["creationTimestamp"] = json!("2026-11-22T10:00:00Z");
    Ok(stored)
}

fn update(
    admission: &Admission,
    caller: &Value,
    old: &Value,
    new: &Value,
) -> Result<Value, String> {
    update_in(admission, caller, old, new, &catalog())
}

/// [`update`] against the objects of `catalog`.
fn update_in(
    admission: &Admission,
    caller: &Value,
    old: &Value,
    new: &Value,
    catalog: &Catalog,
) -> Result<Value, String> {
    let review = |stage, object: &Value| {
        let wired = wire(
            "ActivationRequest",
            "activationrequests",
            "UPDATE",
            caller,
            object,
            Some(old),
        );
        run_in(admission, stage, &wired, catalog)
    };
    let mutated = review(Stage::Mutate, new);
    if !mutated.allowed {
        return Err(mutated.message);
    }
    let validated = review(Stage::Validate, &mutated.patched);
    if !validated.allowed {
        return Err(validated.message);
    }
    Ok(mutated.patched)
}

/// `caller` writes an approval entry as `approver` on `stored`, through both webhooks.
fn decide(
    admission: &Admission,
    caller: &Value,
    stored: &Value,
    approver: &str,
    decision: &str,
) -> Result<Value, String> {
    update(
        admission,
        caller,
        stored,
        &with_approval(stored, approver, decision),
    )
}

fn with_approval(object: &Value, approver: &str, decision: &str) -> Value {
    let mut new = object.clone();
    let entry = json!({"approver": approver, "decision": decision, "reason": "checked"});
    match new["spec"]["approvals"].as_array_mut() {
        Some(list) => list.push(entry),
        None => new["spec"]["approvals"] = json!([entry]),
    }
    new
}

fn expect_denied(result: Result<Value, String>, needles: &[&str]) {
    let message = result.expect_err("should be denied");
    for needle in needles {
        assert!(message.contains(needle), "{needle:?} not in {message:?}");
    }
}

fn attested(stored: &Value) -> ActivationRequest {
    serde_json::from_value(stored.clone()).unwrap()
}

fn attestor() -> SignedAttestor {
    SignedAttestor::new(Some(keyring()))
}

#[test]
fn a_request_is_stamped_with_the_caller_and_signed() {
    let admission = admission(Some(keyring()));
    let stored = create(&admission, &alice(), &request_object(GROUP, json!({}))).unwrap();
    let spec: ActivationRequestSpec = serde_json::from_value(stored["spec"].clone()).unwrap();
    assert_eq!(spec.principal.as_deref(), Some("alice@contoso.com"));
    let requester = spec.requester.unwrap();
    assert_eq!(requester.username, "oidc:alice");
    assert_eq!(requester.uid.as_deref(), Some("uid-oidc:alice"));
    assert_eq!(requester.groups, ["finance", "system:authenticated"]);
    assert_eq!(requester.mfa.as_deref(), Some("amr=mfa"));
    assert_eq!(
        attestor().requester(&attested(&stored)),
        Attestation::Verified
    );
    assert!(attestor().mfa_verified(&attested(&stored)));
    // issue 21 item 2: the finalizer comes with the create, so the controller need not patch it.
    assert_eq!(
        stored["metadata"]["finalizers"],
        json!(["pim.dev/revoke-access"])
    );
}

#[test]
fn issue_17_finding_3_the_requester_signature_is_bound_to_the_objects_name() {
    let admission = admission(Some(keyring()));
    // kubectl pim creates with generateName: the API server would name the object only after
    // mutating admission, so the webhook names it, and signs that name.
    let mut object = request_object(GROUP, json!({}));
    object["metadata"] = json!({"generateName": "finance-"});
    let stored = create(&admission, &alice(), &object).unwrap();
    let name = stored["metadata"]["name"].as_str().unwrap().to_owned();
    assert!(name.starts_with("finance-"), "{name}");
    assert_eq!(name.len(), "finance-".len() + 5, "{name}");
    assert_eq!(
        attestor().requester(&attested(&stored)),
        Attestation::Verified
    );
    // Another create draws another name.
    let again = create(&admission, &alice(), &object).unwrap();
    assert_ne!(again["metadata"]["name"], stored["metadata"]["name"]);

    // The signed spec copied onto an object of another name: the controller does not trust it,
    // and the validating webhook refuses it.
    let mut copy = stored.clone();
    copy["metadata"]["name"] = json!("finance-copy1");
    assert_eq!(
        attestor().requester(&attested(&copy)),
        Attestation::Unverified
    );
    let answer = validate_create(&admission, &alice(), &copy);
    assert_refused(&answer, "under this name");

    // A prefix longer than 58 characters is cut as the API server cuts it.
    let long = "f".repeat(70);
    object["metadata"] = json!({"generateName": long});
    let stored = create(&admission, &alice(), &object).unwrap();
    let name = stored["metadata"]["name"].as_str().unwrap();
    assert_eq!(name.len(), 63, "{name}");
    assert!(name.starts_with(&"f".repeat(58)), "{name}");
}

/// Issue 17 finding 7: one requester cannot keep more than the policy's cap of requests open,
/// counted from the webhook's own watched cache, over every group.
#[tokio::test]
async fn issue_17_finding_7_one_requester_cannot_keep_more_than_the_cap_open() {
    use kube::api::{Api, Patch, PatchParams, PostParams};
    use pim_operator::webhook::catalog::WatchedCatalog;
    let server = pim_testkit::fake_apiserver::FakeApiServer::start()
        .await
        .unwrap();
    let client = server.client();
    let pp = PostParams::default();
    let fixed = catalog();
    for p in fixed.policies.values() {
        let mut p = (**p).clone();
        if p.metadata.name.as_deref() == Some("relaxed") {
            p.spec.activation.max_open_requests = Some(6);
        }
        Api::<AccessPolicy>::all(client.clone())
            .create(&pp, &p)
            .await
            .unwrap();
    }
    for g in fixed.groups.values() {
        Api::<PimGroup>::all(client.clone())
            .create(&pp, g)
            .await
            .unwrap();
    }
    for a in fixed.assignments.values() {
        Api::<EligibleAssignment>::all(client.clone())
            .create(&pp, a)
            .await
            .unwrap();
    }
    let mut bobs = (**fixed.assignments.values().next().unwrap()).clone();
    bobs.metadata.name = Some("open-bob".into());
    bobs.spec.group = "open".into();
    bobs.spec.principal.user = Some("bob@contoso.com".into());
    Api::<EligibleAssignment>::all(client.clone())
        .create(&pp, &bobs)
        .await
        .unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let watched = WatchedCatalog::start(&client, &stop);
    watched.ready().await;
    let admission = admission(Some(keyring()));
    let requests = Api::<ActivationRequest>::all(client.clone());
    // Creates through the webhook (mutate, validate) and stores what it admitted.
    let submit = async |caller: &Value, group: &str| -> Result<String, String> {
        let mut object = request_object(group, json!({}));
        object["metadata"] = json!({"generateName": format!("{group}-")});
        let catalog = watched.catalog();
        let mutated = on_create_in(&admission, Stage::Mutate, caller, &object, &catalog);
        if !mutated.allowed {
            return Err(mutated.message);
        }
        let validated = on_create_in(
            &admission,
            Stage::Validate,
            caller,
            &mutated.patched,
            &catalog,
        );
        if !validated.allowed {
            return Err(validated.message);
        }
        let stored = requests
            .create(&pp, &attested(&mutated.patched))
            .await
            .unwrap();
        let name = stored.metadata.name.unwrap();
        // The next review sees it once the watch has.
        for _ in 0..200 {
            if watched.catalog().requests.contains_key(&name) {
                return Ok(name);
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the webhook's cache never saw {name}");
    };

    // Five open requests, whatever their group: the sixth is refused, naming the five.
    let mut names = Vec::new();
    for i in 0..5 {
        let group = if i % 2 == 0 { GROUP } else { "open" };
        names.push(submit(&alice(), group).await.unwrap());
    }
    let refused = submit(&alice(), GROUP).await.unwrap_err();
    for needle in ["5 open requests", "spec.activation.maxOpenRequests: 5"] {
        assert!(refused.contains(needle), "{needle}: {refused}");
    }
    for name in &names {
        assert!(refused.contains(name.as_str()), "{name}: {refused}");
    }
    // Other requesters are not held back by alice's requests.
    submit(&bob(), "open").await.unwrap();
    // A policy with a higher cap admits a sixth.
    let sixth = submit(&alice(), "open").await.unwrap();
    // Ended requests count for nothing.
    for name in [&names[0], &sixth] {
        requests
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"phase": "Expired"}})),
            )
            .await
            .unwrap();
    }
    let mut admitted = Err(String::new());
    for _ in 0..200 {
        admitted = submit(&alice(), GROUP).await;
        if admitted.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    admitted.unwrap();
    stop.cancel();
}

/// Issue 17 finding 1 (seen): a user another authenticator calls `alice@contoso.com` (without
/// the `oidc:` prefix) is nobody in the `entra` directory. She cannot use alice's eligibility,
/// end alice's request, or approve as the bob the policy names.
#[test]
fn issue_17_finding_1_an_unprefixed_username_is_nobody_in_a_mapping_directory() {
    let admission = admission(Some(keyring()));
    let impostor = user("alice@contoso.com", &["finance"], true);
    expect_denied(
        create(&admission, &impostor, &request_object(GROUP, json!({}))),
        &["no principal in directory \"entra\"", "\"oidc:\""],
    );
    let stored = create(&admission, &alice(), &request_object(GROUP, json!({}))).unwrap();
    let mut deactivated = stored.clone();
    deactivated["spec"]["deactivate"] = json!(true);
    expect_denied(
        update(&admission, &impostor, &stored, &deactivated),
        &["only the requester"],
    );
    let not_bob = user("bob@contoso.com", &[], true);
    expect_denied(
        decide(&admission, &not_bob, &stored, "bob@contoso.com", "Approve"),
        &["no principal in directory \"entra\""],
    );
    // bob, signed in through the prefixed authenticator, still approves; alice still ends hers.
    decide(&admission, &bob(), &stored, "oidc:bob", "Approve").unwrap();
    update(&admission, &alice(), &stored, &deactivated).unwrap();
}

/// Issue 17 finding 1: a PimGroup of the kubernetes directory binds the username the API server
/// authenticated, so the stamped principal is `oidc:alice` whatever other directories map.
#[test]
fn issue_17_finding_1_the_kubernetes_directory_takes_the_username_as_authenticated() {
    use pim_operator::api::common::PrincipalRef;
    let admission = admission(Some(keyring()));
    let mut catalog = catalog();
    let mut group: PimGroup = example("02-pimgroup.yaml");
    group.metadata.name = Some("rbac".into());
    group.spec.directory = "kubernetes".into();
    group.spec.roles.member.policy = "relaxed".into();
    catalog.insert_group(group);
    let mut assignment: EligibleAssignment = example("03-eligibleassignment.yaml");
    assignment.metadata.name = Some("rbac-alice".into());
    assignment.spec.group = "rbac".into();
    assignment.spec.principal = PrincipalRef::user("oidc:alice");
    catalog.insert_assignment(assignment);

    let stored = create_in(
        &admission,
        &alice(),
        &request_object("rbac", json!({})),
        &catalog,
    )
    .unwrap();
    assert_eq!(stored["spec"]["principal"], "oidc:alice");
    // The mapped name is somebody else here.
    expect_denied(
        create_in(
            &admission,
            &alice(),
            &request_object("rbac", json!({"principal": "alice@contoso.com"})),
            &catalog,
        ),
        &["only activate for yourself"],
    );
    // And `alice@contoso.com` from another authenticator is not `oidc:alice`.
    expect_denied(
        create_in(
            &admission,
            &user("alice@contoso.com", &[], true),
            &request_object("rbac", json!({"principal": "oidc:alice"})),
            &catalog,
        ),
        &["only activate for yourself"],
    );
}

/// Issue 17 finding 1, on the controller's side: a signature proves what the webhook saw, not
/// that the stamped principal is the requester's under today's mapping. A request an older,
/// lax webhook stamped for another authenticator's `alice@contoso.com` as the principal
/// `alice@contoso.com`, and one whose PimGroup moved to the kubernetes directory since, grant
/// nothing (`PrincipalMismatch`).
#[test]
fn issue_17_finding_1_the_controller_rechecks_the_stamped_principal() {
    use pim_operator::api::activation_request::Phase;
    use pim_operator::api::conditions::reasons;
    use pim_operator::engine::{DirectoryObservation, reconcile_request};
    let admission = admission(Some(keyring()));
    let stored = create(&admission, &alice(), &request_object("open", json!({}))).unwrap();
    let decide = |request: &ActivationRequest, catalog: &Catalog| {
        reconcile_request(
            catalog,
            request,
            &attestor(),
            DirectoryObservation::default(),
            &|_| false,
            now(),
        )
        .decision
    };
    let honest = attested(&stored);
    assert_eq!(attestor().requester(&honest), Attestation::Verified);
    assert_eq!(decide(&honest, &catalog()).phase, Phase::Scheduled);

    // Signed, as the lax mapping of an older release would have admitted it.
    let mut lax = honest.clone();
    if let Some(requester) = lax.spec.requester.as_mut() {
        requester.username = "alice@contoso.com".into();
        requester.attestation = None;
    }
    let signature = keyring().sign_requester("r1", &lax.spec);
    if let Some(requester) = lax.spec.requester.as_mut() {
        requester.attestation = signature;
    }
    assert_eq!(attestor().requester(&lax), Attestation::Verified);
    let decision = decide(&lax, &catalog());
    assert_eq!(decision.phase, Phase::Rejected, "{decision:?}");
    assert_eq!(decision.reason, reasons::PRINCIPAL_MISMATCH);

    // The PimGroup now binds RBAC subjects: alice@contoso.com is not oidc:alice there.
    let mut moved = catalog();
    let mut group = (*moved.groups["open"]).clone();
    group.spec.directory = "kubernetes".into();
    moved.insert_group(group);
    let decision = decide(&honest, &moved);
    assert_eq!(decision.phase, Phase::Rejected, "{decision:?}");
    assert_eq!(decision.reason, reasons::PRINCIPAL_MISMATCH);
}

#[test]
fn a_forged_requester_or_principal_is_refused() {
    let admission = admission(Some(keyring()));
    let forged = json!({"requester": {"username": "oidc:bob"}});
    expect_denied(
        create(&admission, &alice(), &request_object(GROUP, forged)),
        &["spec.requester"],
    );
    let for_bob = json!({"principal": "bob@contoso.com"});
    expect_denied(
        create(&admission, &alice(), &request_object(GROUP, for_bob)),
        &["spec.principal", "only activate for yourself"],
    );
    // Naming yourself is fine.
    let for_self = json!({"principal": "alice@contoso.com"});
    create(&admission, &alice(), &request_object(GROUP, for_self)).unwrap();
}

#[test]
fn validation_refuses_a_stamp_changed_after_mutation() {
    let admission = admission(Some(keyring()));
    let object = request_object(GROUP, json!({}));
    let mutated = run(
        &admission,
        Stage::Mutate,
        &wire(
            "ActivationRequest",
            "activationrequests",
            "CREATE",
            &alice(),
            &object,
            None,
        ),
    );
    assert!(mutated.allowed);
    let mut tampered = mutated.patched.clone();
    tampered["spec"]["duration"] = json!("20m");
    let answer = validate_create(&admission, &alice(), &tampered);
    assert_refused(&answer, "spec.requester.attestation");
    // Another caller cannot submit alice's stamped object as their own.
    let answer = run(
        &admission,
        Stage::Validate,
        &wire(
            "ActivationRequest",
            "activationrequests",
            "CREATE",
            &bob(),
            &mutated.patched,
            None,
        ),
    );
    assert!(!answer.allowed, "{}", answer.message);
}

#[test]
fn approvals_are_refused_at_creation() {
    let admission = admission(Some(keyring()));
    let with = json!({"approvals": [{"approver": "oidc:bob", "decision": "Approve"}]});
    expect_denied(
        create(&admission, &alice(), &request_object(GROUP, with)),
        &["spec.approvals"],
    );
}

#[test]
fn a_missing_mfa_claim_fails_closed() {
    let admission = admission(Some(keyring()));
    let no_mfa = user("oidc:alice", &[], false);
    expect_denied(
        create(&admission, &no_mfa, &request_object(GROUP, json!({}))),
        &["requires MFA"],
    );
    let wrong_value = {
        let mut u = no_mfa.clone();
        u["extra"] = json!({"amr": ["pwd"]});
        u
    };
    expect_denied(
        create(&admission, &wrong_value, &request_object(GROUP, json!({}))),
        &["requires MFA"],
    );
    // A policy without the MFA requirement admits the same caller.
    create(&admission, &no_mfa, &request_object("open", json!({}))).unwrap();
}

#[test]
fn service_accounts_and_anonymous_callers_are_refused() {
    let admission = admission(Some(keyring()));
    let sa = user(
        "system:serviceaccount:ci:deployer",
        &["system:serviceaccounts"],
        false,
    );
    expect_denied(
        create(&admission, &sa, &request_object("open", json!({}))),
        &["service account"],
    );
    let anonymous = json!({"username": "system:anonymous", "groups": ["system:unauthenticated"]});
    expect_denied(
        create(&admission, &anonymous, &request_object("open", json!({}))),
        &["no authenticated username"],
    );
}

#[test]
fn oversized_fields_and_unknown_groups_are_refused_by_name() {
    let admission = admission(Some(keyring()));
    let long = json!({"justification": "x".repeat(5000)});
    expect_denied(
        create(&admission, &alice(), &request_object(GROUP, long)),
        &["spec.justification"],
    );
    expect_denied(
        create(
            &admission,
            &alice(),
            &request_object("no-such-group", json!({})),
        ),
        &["spec.group", "no-such-group", "does not exist"],
    );
    let too_long = json!({"duration": "2h"});
    expect_denied(
        create(&admission, &alice(), &request_object(GROUP, too_long)),
        &["spec.duration"],
    );
}

#[test]
fn not_eligible_callers_are_refused() {
    let admission = admission(Some(keyring()));
    let carol = user("oidc:carol", &[], true);
    expect_denied(
        create(&admission, &carol, &request_object(GROUP, json!({}))),
        &["spec.principal", "no eligible assignment"],
    );
}

#[test]
fn without_a_key_nothing_is_admitted() {
    let admission = admission(None);
    expect_denied(
        create(&admission, &alice(), &request_object(GROUP, json!({}))),
        &["attestation key"],
    );
}

#[test]
fn an_approver_writes_a_signed_entry_of_their_own() {
    let admission = admission(Some(keyring()));
    let stored = create(&admission, &alice(), &request_object(GROUP, json!({}))).unwrap();
    let approved = decide(&admission, &bob(), &stored, "oidc:bob", "Approve").unwrap();
    let entry = &approved["spec"]["approvals"][0];
    assert_eq!(
        entry["time"], "2026-11-22T10:00:00Z",
        "stamped by the webhook"
    );
    assert!(entry["attestation"].as_str().unwrap().starts_with("v1:"));
    let approvals = attestor().approvals(&attested(&approved));
    assert_eq!(approvals.len(), 1);
    // The Kubernetes username; the engine maps it into the group's directory like requesters.
    assert_eq!(approvals[0].approver, "oidc:bob");
    assert_eq!(
        catalog().principal_in_group(GROUP, "oidc:bob"),
        Ok("bob@contoso.com".to_owned())
    );

    // Through a group the policy names; the relevant group is recorded for the controller.
    let dave = user("oidc:dave", &["FinReport-Approvers", "other"], true);
    let by_group = decide(&admission, &dave, &stored, "oidc:dave", "Deny").unwrap();
    assert_eq!(
        by_group["spec"]["approvals"][0]["groups"],
        json!(["FinReport-Approvers"])
    );
    assert_eq!(attestor().approvals(&attested(&by_group)).len(), 1);
}

/// Issue 17 finding 6: under a policy that requires MFA, approvers need it too (unless
/// approval.requireMfa says otherwise); the webhook refuses an approval without it, and signs
/// the evidence it saw into the entry, which the controller checks again.
#[test]
fn issue_17_finding_6_approvers_need_mfa_where_the_policy_requires_it() {
    let admission = admission(Some(keyring()));
    let stored = create(&admission, &alice(), &request_object(GROUP, json!({}))).unwrap();
    let carol = user("oidc:carol", &["FinReport-Approvers"], false);
    expect_denied(
        decide(&admission, &carol, &stored, "oidc:carol", "Approve"),
        &["spec.activation.approval.requireMfa", "MFA"],
    );
    // A denial grants nothing, and is taken without MFA.
    let denied = decide(&admission, &carol, &stored, "oidc:carol", "Deny").unwrap();
    assert_eq!(denied["spec"]["approvals"][0].get("mfa"), None);
    // With MFA the evidence is stamped and signed, and verifies as such.
    let approved = decide(&admission, &bob(), &stored, "oidc:bob", "Approve").unwrap();
    assert_eq!(approved["spec"]["approvals"][0]["mfa"], "amr=mfa");
    let verified = attestor().approvals(&attested(&approved));
    assert!(verified[0].mfa);
    // Evidence claimed in the entry by hand breaks its signature.
    let mut forged = denied.clone();
    forged["spec"]["approvals"][0]["mfa"] = json!("amr=mfa");
    forged["spec"]["approvals"][0]["decision"] = json!("Approve");
    assert!(attestor().approvals(&attested(&forged)).is_empty());
}

/// Issue 17 finding 5: a policy can require claims beyond MFA (an Entra authentication
/// context) and a recent sign-in, of requesters and of approvers. The webhook checks them,
/// stamps and signs what it saw, and the controller checks the signed evidence again.
#[test]
fn issue_17_finding_5_policies_require_claims_and_a_recent_sign_in() {
    use pim_operator::api::access_policy::ClaimRequirement;
    let admission = admission(Some(keyring()));
    let mut catalog = catalog();
    let mut policy = (**catalog.policies.get("finreport-senioranalyst").unwrap()).clone();
    let acrs = ClaimRequirement {
        key: "pim.dev/acrs".into(),
        values: vec!["c1".into()],
    };
    policy.spec.activation.sign_in.required_claims = vec![acrs.clone()];
    policy.spec.activation.sign_in.max_authentication_age = Some("15m".into());
    if let Some(approval) = policy.spec.activation.approval.as_mut() {
        approval.sign_in.required_claims = vec![acrs];
    }
    catalog.insert_policy(policy);
    // Signed in 5 minutes before now(), with MFA and the authentication context c1.
    let signed_in = (now().as_second() - 300).to_string();
    let with = |name: &str, groups: &[&str], acrs: &[&str], auth_time: &str| {
        let mut info = user(name, groups, true);
        info["extra"]["pim.dev/acrs"] = json!(acrs);
        info["extra"]["pim.dev/auth_time"] = json!([auth_time]);
        info
    };
    let object = request_object(GROUP, json!({}));
    let create_as = |caller: &Value| create_in(&admission, caller, &object, &catalog);
    // Without the context, or signed in an hour ago: refused, saying what is missing.
    expect_denied(
        create_as(&with("oidc:alice", &["finance"], &["c2"], &signed_in)),
        &["requiredClaims", "pim.dev/acrs"],
    );
    let an_hour_ago = (now().as_second() - 3600).to_string();
    expect_denied(
        create_as(&with("oidc:alice", &["finance"], &["c1"], &an_hour_ago)),
        &["maxAuthenticationAge", "more than 15m"],
    );
    // With both: admitted, and the evidence is stamped and signed.
    let stored = create_as(&with("oidc:alice", &["finance"], &["c1"], &signed_in)).unwrap();
    let requester = &stored["spec"]["requester"];
    assert_eq!(requester["claims"], json!(["pim.dev/acrs=c1"]));
    assert_eq!(requester["authenticatedAt"], "2026-11-22T09:55:00Z");
    assert_eq!(
        attestor().requester(&attested(&stored)),
        Attestation::Verified
    );
    let mut forged = stored.clone();
    forged["spec"]["requester"]["claims"] = json!(["pim.dev/acrs=c9"]);
    assert_eq!(
        attestor().requester(&attested(&forged)),
        Attestation::Unverified
    );
    // The controller's own check of the signed evidence against the policy.
    let spec: ActivationRequestSpec = serde_json::from_value(stored["spec"].clone()).unwrap();
    let parsed = pim_operator::core::policy::Policy::from_spec(
        &catalog
            .policies
            .get("finreport-senioranalyst")
            .unwrap()
            .spec,
    )
    .unwrap();
    assert!(pim_operator::core::activation::validate_request(&spec, &parsed, true).is_ok());
    let mut bare = spec.clone();
    if let Some(r) = bare.requester.as_mut() {
        r.authentication = Default::default();
    }
    let violations =
        pim_operator::core::activation::validate_request(&bare, &parsed, true).unwrap_err();
    assert!(
        violations
            .iter()
            .any(|v| v.reason == "AuthenticationRequirementsNotMet"),
        "{violations:?}"
    );

    // Approvers: bob without the context is refused; with it, the entry carries it.
    let approve_as = |caller: &Value, approver: &str| {
        let new = with_approval(&stored, approver, "Approve");
        update_in(&admission, caller, &stored, &new, &catalog)
    };
    expect_denied(
        approve_as(&with("oidc:bob", &[], &[], &signed_in), "oidc:bob"),
        &["approval.requiredClaims", "pim.dev/acrs"],
    );
    let approved = approve_as(&with("oidc:bob", &[], &["c1"], &signed_in), "oidc:bob").unwrap();
    assert_eq!(
        approved["spec"]["approvals"][0]["claims"],
        json!(["pim.dev/acrs=c1"])
    );
    let verified = attestor().approvals(&attested(&approved));
    assert_eq!(verified.len(), 1);
    assert_eq!(verified[0].authentication.claims, ["pim.dev/acrs=c1"]);
}

#[test]
fn self_approval_is_refused_unless_the_policy_allows_it() {
    let admission = admission(Some(keyring()));
    // alice is also in the approvers' group: still her own request.
    let alice_approver = user("oidc:alice", &["FinReport-Approvers"], true);
    let stored = create(
        &admission,
        &alice_approver,
        &request_object(GROUP, json!({})),
    )
    .unwrap();
    expect_denied(
        decide(
            &admission,
            &alice_approver,
            &stored,
            "oidc:alice",
            "Approve",
        ),
        &["your own request"],
    );
}

#[test]
fn strangers_cannot_approve() {
    let admission = admission(Some(keyring()));
    let stored = create(&admission, &alice(), &request_object(GROUP, json!({}))).unwrap();
    let carol = user("oidc:carol", &["finance"], true);
    expect_denied(
        decide(&admission, &carol, &stored, "oidc:carol", "Approve"),
        &["not an approver"],
    );
}

#[test]
fn nobody_writes_or_edits_another_approvers_entry() {
    let admission = admission(Some(keyring()));
    let stored = create(&admission, &alice(), &request_object(GROUP, json!({}))).unwrap();
    let dave = user("oidc:dave", &["FinReport-Approvers"], true);
    // Writing an entry in bob's name.
    expect_denied(
        decide(&admission, &dave, &stored, "oidc:bob", "Approve"),
        &["spec.approvals[approver=oidc:bob]", "only their own"],
    );
    // Editing bob's recorded entry.
    let approved = decide(&admission, &bob(), &stored, "oidc:bob", "Approve").unwrap();
    let mut edited = approved.clone();
    edited["spec"]["approvals"][0]["reason"] = json!("changed by dave");
    expect_denied(
        update(&admission, &dave, &approved, &edited),
        &["only their own"],
    );
    // Removing it.
    let mut removed = approved.clone();
    removed["spec"]["approvals"] = json!([]);
    expect_denied(update(&admission, &dave, &approved, &removed), &["removed"]);
    // bob may reword his reason, but not flip his decision.
    let reworded = update(&admission, &bob(), &approved, &edited).unwrap();
    assert_eq!(attestor().approvals(&attested(&reworded)).len(), 1);
    let mut flipped = approved.clone();
    flipped["spec"]["approvals"][0]["decision"] = json!("Deny");
    expect_denied(
        update(&admission, &bob(), &approved, &flipped),
        &["cannot be changed"],
    );
}

#[test]
fn the_spec_is_immutable_and_only_the_requester_deactivates() {
    let admission = admission(Some(keyring()));
    let stored = create(&admission, &alice(), &request_object(GROUP, json!({}))).unwrap();
    let mut longer = stored.clone();
    longer["spec"]["duration"] = json!("25m");
    expect_denied(
        update(&admission, &alice(), &stored, &longer),
        &["immutable"],
    );
    let mut deactivated = stored.clone();
    deactivated["spec"]["deactivate"] = json!(true);
    expect_denied(
        update(&admission, &bob(), &stored, &deactivated),
        &["spec.deactivate", "only the requester"],
    );
    update(&admission, &alice(), &stored, &deactivated).unwrap();
    // The signature still holds after deactivate and approvals change.
    assert_eq!(
        attestor().requester(&attested(&deactivated)),
        Attestation::Verified
    );
}

#[test]
fn an_omitted_role_and_the_schema_default_member_are_the_same_spec() {
    let admission = admission(Some(keyring()));
    let stored = create(&admission, &alice(), &request_object(GROUP, json!({}))).unwrap();
    assert!(stored["spec"].get("role").is_none(), "{stored}");
    // The API server fills in `member` (the CRD's default) on one side only: an object stored
    // before the default existed, updated through a server that has it.
    let mut defaulted = stored.clone();
    defaulted["spec"]["role"] = json!("member");
    defaulted["spec"]["deactivate"] = json!(true);
    update(&admission, &alice(), &stored, &defaulted).unwrap();
    assert_eq!(
        attestor().requester(&attested(&defaulted)),
        Attestation::Verified
    );
    let mut owner = stored.clone();
    owner["spec"]["role"] = json!("owner");
    expect_denied(
        update(&admission, &alice(), &stored, &owner),
        &["immutable"],
    );
}

#[test]
fn metadata_only_updates_pass_but_only_the_operator_moves_the_finalizer() {
    let admission = admission(Some(keyring()));
    let finalized = finalized_request(&admission);
    // As a request created before the mutating webhook added the finalizer is stored.
    let stored = without_finalizers(&finalized);
    let controller = user(OPERATOR, &[], false);
    update(&admission, &controller, &stored, &finalized).unwrap();

    // Labels: anyone who may patch.
    let mut labelled = finalized.clone();
    labelled["metadata"]["labels"] = json!({"team": "finance"});
    update(&admission, &bob(), &finalized, &labelled).unwrap();

    // Stripping (or adding) the finalizer: not a person, the requester included, so that a
    // delete cannot skip the removal and its audit record.
    for person in [bob(), alice()] {
        expect_denied(
            update(&admission, &person, &finalized, &stored),
            &["metadata.finalizers", "pim.dev/revoke-access"],
        );
        expect_denied(
            update(&admission, &person, &stored, &finalized),
            &["metadata.finalizers"],
        );
    }
    update(&admission, &controller, &finalized, &stored).unwrap();
}

/// A stored request (alice's) carrying the operator's finalizer, as admission leaves it.
fn finalized_request(admission: &Admission) -> Value {
    let stored = create(admission, &alice(), &request_object(GROUP, json!({}))).unwrap();
    assert_eq!(
        stored["metadata"]["finalizers"],
        json!(["pim.dev/revoke-access"])
    );
    stored
}

fn without_finalizers(object: &Value) -> Value {
    let mut stripped = object.clone();
    if let Some(metadata) = stripped["metadata"].as_object_mut() {
        metadata.remove("finalizers");
    }
    stripped
}

/// issue 14 finding 5: any service account used to pass for the operator. Seen: a CI service
/// account stripped the finalizer and deleted an Active request, skipping the removal.
#[test]
fn issue_14_finding_5_another_service_account_cannot_move_the_finalizer() {
    let admission = admission(Some(keyring()));
    let finalized = finalized_request(&admission);
    let stripped = without_finalizers(&finalized);
    for account in [
        "system:serviceaccount:ci:deployer",
        "system:serviceaccount:pim-system:default",
        "system:serviceaccount:kube-system:generic-garbage-collector",
    ] {
        let sa = user(account, &["system:serviceaccounts"], false);
        expect_denied(
            update(&admission, &sa, &finalized, &stripped),
            &[
                "metadata.finalizers",
                "pim.dev/revoke-access",
                OPERATOR,
                account,
            ],
        );
        expect_denied(
            update(&admission, &sa, &stripped, &finalized),
            &["metadata.finalizers", "pim.dev/revoke-access"],
        );
    }
    // Not even with a spec change in the same write: the requester ending her request and
    // stripping the finalizer at once.
    let mut deactivated = stripped.clone();
    deactivated["spec"]["deactivate"] = json!(true);
    expect_denied(
        update(&admission, &alice(), &finalized, &deactivated),
        &["metadata.finalizers"],
    );
    // On creation the finalizer is what mutation adds anyway: sent by the caller, it is kept,
    // once; any other finalizer is still refused.
    let mut born_finalized = request_object(GROUP, json!({}));
    born_finalized["metadata"]["finalizers"] = json!(["pim.dev/revoke-access"]);
    let created = create(&admission, &alice(), &born_finalized).unwrap();
    assert_eq!(
        created["metadata"]["finalizers"],
        json!(["pim.dev/revoke-access"])
    );
    born_finalized["metadata"]["finalizers"] = json!(["pim.dev/revoke-access", "ci.example/hold"]);
    expect_denied(
        create(&admission, &alice(), &born_finalized),
        &["metadata.finalizers", "ci.example/hold"],
    );
    // The operator itself still may.
    update(
        &admission,
        &user(OPERATOR, &[], false),
        &finalized,
        &stripped,
    )
    .unwrap();
}

/// issue 14 finding 5: the operator's identity is learned from SelfSubjectReview, so an operator
/// run from a kubeconfig user (no service account at all) moves its finalizer, and the
/// in-cluster service account name means nothing special.
#[tokio::test]
async fn issue_14_finding_5_the_operator_identity_comes_from_self_subject_review() {
    let server = pim_testkit::fake_apiserver::FakeApiServer::start()
        .await
        .unwrap();
    server.set_identity("pim-dev@contoso.com", &["system:authenticated"]);
    let learned = pim_operator::webhook::identity::operator_username(&server.client())
        .await
        .unwrap();
    assert_eq!(learned, "pim-dev@contoso.com");
    let admission = admission_as(Some(keyring()), &learned);
    let finalized = finalized_request(&admission);
    let stripped = without_finalizers(&finalized);
    let operator = user(&learned, &[], false);
    update(&admission, &operator, &stripped, &finalized).unwrap();
    update(&admission, &operator, &finalized, &stripped).unwrap();
    expect_denied(
        update(
            &admission,
            &user(OPERATOR, &[], false),
            &finalized,
            &stripped,
        ),
        &["metadata.finalizers", "pim-dev@contoso.com"],
    );
    // Case matters here: this is a credential, not a person's name.
    expect_denied(
        update(
            &admission,
            &user("PIM-DEV@contoso.com", &[], false),
            &finalized,
            &stripped,
        ),
        &["metadata.finalizers"],
    );
}

/// issue 14 finding 5: an owner reference to an object that does not exist lets the garbage
/// collector delete the request. Nobody adds one, the operator included; one already there may
/// be removed.
#[test]
fn issue_14_finding_5_nobody_adds_an_owner_reference() {
    let admission = admission(Some(keyring()));
    let finalized = finalized_request(&admission);
    let owner = json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "gone",
                        "uid": "00000000-0000-0000-0000-000000000000"}]);
    let mut owned = finalized.clone();
    owned["metadata"]["ownerReferences"] = owner.clone();
    for caller in [alice(), bob(), user(OPERATOR, &[], false)] {
        expect_denied(
            update(&admission, &caller, &finalized, &owned),
            &["metadata.ownerReferences"],
        );
    }
    // Changing one that is there is adding another.
    let mut other_owner = owned.clone();
    other_owner["metadata"]["ownerReferences"][0]["uid"] =
        json!("11111111-1111-1111-1111-111111111111");
    expect_denied(
        update(&admission, &alice(), &owned, &other_owner),
        &["metadata.ownerReferences"],
    );
    // Removing one is cleaning up.
    update(&admission, &alice(), &owned, &finalized).unwrap();
    let mut born_owned = request_object(GROUP, json!({}));
    born_owned["metadata"]["ownerReferences"] = owner;
    expect_denied(
        create(&admission, &alice(), &born_owned),
        &["metadata.ownerReferences"],
    );
}

/// issue 14 finding 5: a foreign finalizer would keep retention from ever deleting the request.
#[test]
fn issue_14_finding_5_nobody_adds_a_foreign_finalizer() {
    let admission = admission(Some(keyring()));
    let finalized = finalized_request(&admission);
    let mut held = finalized.clone();
    held["metadata"]["finalizers"] = json!(["pim.dev/revoke-access", "example.com/keep-forever"]);
    for caller in [alice(), bob(), user(OPERATOR, &[], false)] {
        expect_denied(
            update(&admission, &caller, &finalized, &held),
            &["metadata.finalizers", "example.com/keep-forever"],
        );
    }
    // One that got there anyway (before the webhook ran) may be removed, by anyone who may
    // patch: so that a stuck object can be cleaned up.
    update(&admission, &bob(), &held, &finalized).unwrap();
    let sa = user("system:serviceaccount:ci:deployer", &[], false);
    update(&admission, &sa, &held, &finalized).unwrap();
    // And the operator may remove both at once.
    update(
        &admission,
        &user(OPERATOR, &[], false),
        &held,
        &without_finalizers(&held),
    )
    .unwrap();
}

/// issue 14 finding 5: labels and annotations stay free for whoever may patch.
#[test]
fn issue_14_finding_5_labels_and_annotations_stay_free() {
    let admission = admission(Some(keyring()));
    let finalized = finalized_request(&admission);
    let mut labelled = finalized.clone();
    labelled["metadata"]["labels"] = json!({"team": "finance"});
    labelled["metadata"]["annotations"] = json!({"example.com/ticket": "FIN-1"});
    let sa = user("system:serviceaccount:ci:deployer", &[], false);
    for caller in [alice(), bob(), sa, user(OPERATOR, &[], false)] {
        update(&admission, &caller, &finalized, &labelled).unwrap();
        update(&admission, &caller, &labelled, &finalized).unwrap();
    }
}

/// issue 14 finding 8: `oidc:ALICE` is alice, whose principal `ALICE@contoso.com` is
/// `alice@contoso.com` whatever the case: she cannot approve her own request through the
/// approvers' group.
#[test]
fn issue_14_finding_8_the_requester_in_other_case_cannot_approve() {
    let admission = admission(Some(keyring()));
    let stored = create(&admission, &alice(), &request_object(GROUP, json!({}))).unwrap();
    let shouting = user("oidc:ALICE", &["FinReport-Approvers"], true);
    expect_denied(
        decide(&admission, &shouting, &stored, "oidc:ALICE", "Approve"),
        &["your own request"],
    );
    // The other spelling *is* the requester: she may end it.
    let mut deactivated = stored.clone();
    deactivated["spec"]["deactivate"] = json!(true);
    update(&admission, &shouting, &stored, &deactivated).unwrap();
}

/// issue 14 finding 8: `oidc:BOB` is bob (`BOB@contoso.com` is `bob@contoso.com`): he is the
/// approver the policy names, and gets one entry, not a second vote under another spelling.
#[test]
fn issue_14_finding_8_one_approver_one_entry_whatever_the_case() {
    let admission = admission(Some(keyring()));
    let stored = create(&admission, &alice(), &request_object(GROUP, json!({}))).unwrap();
    let denied = decide(&admission, &bob(), &stored, "oidc:bob", "Deny").unwrap();
    let shouting = user("oidc:BOB", &[], true);
    expect_denied(
        update(
            &admission,
            &shouting,
            &denied,
            &with_approval(&denied, "oidc:BOB", "Approve"),
        ),
        &["one entry per person", "oidc:bob"],
    );
    // On a fresh request the other spelling approves, as the approver the policy names.
    let approved = decide(&admission, &shouting, &stored, "oidc:BOB", "Approve").unwrap();
    let approvals = attestor().approvals(&attested(&approved));
    assert_eq!(approvals[0].approver, "oidc:BOB");
    assert_eq!(
        catalog().principal_in_group(GROUP, &approvals[0].approver),
        Ok("BOB@contoso.com".to_owned())
    );
}

/// issue 14 finding 8, `caseInsensitive: never`: case counts, so `oidc:BOB` is not bob.
#[test]
fn issue_14_finding_8_case_sensitive_when_configured() {
    let mut admission = admission(Some(keyring()));
    admission.principals.names = CaseInsensitive::Never;
    let stored = create(&admission, &alice(), &request_object(GROUP, json!({}))).unwrap();
    expect_denied(
        update(
            &admission,
            &user("oidc:BOB", &[], true),
            &stored,
            &with_approval(&stored, "oidc:BOB", "Approve"),
        ),
        &["not an approver"],
    );
}

/// issue 14 finding 8, on the controller's side: entries the webhook signed (an older version
/// admitted these) count people, not spellings, under the operator's setting as the controller's
/// catalog carries it. Two approvals needed: bob twice is one; alice through the approvers' group
/// is the requester, however her name is spelled.
#[test]
fn issue_14_finding_8_the_controller_counts_people_not_spellings() {
    use pim_operator::api::activation_request::{Approval, Decision, Phase};
    use pim_operator::engine::{DirectoryObservation, reconcile_request};
    let admission = admission(Some(keyring()));
    let stored = create(&admission, &alice(), &request_object(GROUP, json!({}))).unwrap();
    let mut request = attested(&stored);
    let uid = request.metadata.uid.clone().unwrap();
    let signed = |approver: &str, groups: &[&str]| {
        let mut entry = Approval {
            approver: approver.into(),
            decision: Decision::Approve,
            time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now())),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            // As the webhook stamps it: the policy requires MFA of approvers too.
            mfa: Some("amr=mfa".into()),
            ..Default::default()
        };
        entry.attestation = Some(keyring().sign_approval(&uid, &entry));
        entry
    };
    request.spec.approvals = vec![
        signed("oidc:bob", &[]),
        signed("oidc:BOB", &[]),
        signed("oidc:ALICE", &["FinReport-Approvers"]),
    ];
    let two_needed = |catalog: &mut Catalog| {
        let mut policy: AccessPolicy = example("01-accesspolicy.yaml");
        if let Some(approval) = policy.spec.activation.approval.as_mut() {
            approval.min_approvals = Some(2);
        }
        catalog.insert_policy(policy);
    };
    let decide = |catalog: &Catalog| {
        reconcile_request(
            catalog,
            &request,
            &attestor(),
            DirectoryObservation::default(),
            &|_| false,
            now(),
        )
        .decision
    };

    let mut default_names = catalog();
    two_needed(&mut default_names);
    let decision = decide(&default_names);
    assert_eq!(decision.phase, Phase::PendingApproval, "{decision:?}");
    assert!(decision.approved_at.is_none());

    // `caseInsensitive: never`, as `Stores` passes it on: BOB@contoso.com is nobody the
    // policy names, and ALICE@contoso.com is not the requester alice@contoso.com.
    let mut exact = catalog();
    exact.set_identities(pim_operator::core::identity::CaseInsensitive::Never);
    two_needed(&mut exact);
    let decision = decide(&exact);
    assert_eq!(
        decision.approved_by,
        ["ALICE@contoso.com", "bob@contoso.com"],
        "{decision:?}"
    );
}

#[test]
fn declarative_kinds_get_the_validate_checks() {
    let admission = admission(Some(keyring()));
    let gitops = user(
        "system:serviceaccount:argocd:argocd-application-controller",
        &[],
        false,
    );
    let mut policy: Value =
        serde_json::to_value(example::<AccessPolicy>("01-accesspolicy.yaml")).unwrap();
    policy["spec"]["activation"]["maxDuration"] = json!("48h");
    let answer = run(
        &admission,
        Stage::Validate,
        &wire(
            "AccessPolicy",
            "accesspolicies",
            "CREATE",
            &gitops,
            &policy,
            None,
        ),
    );
    assert_refused(&answer, "spec.activation.maxDuration");

    // A reference to an object not applied yet is a warning: GitOps applies in any order.
    let mut group: Value = serde_json::to_value(example::<PimGroup>("02-pimgroup.yaml")).unwrap();
    group["metadata"]["name"] = json!("later");
    group["spec"]["group"]["displayName"] = json!("Later");
    group["spec"]["roles"]["member"]["policy"] = json!("not-yet-applied");
    let answer = run(
        &admission,
        Stage::Validate,
        &wire("PimGroup", "pimgroups", "CREATE", &gitops, &group, None),
    );
    assert!(answer.allowed, "{}", answer.message);
    assert!(
        answer
            .warnings
            .iter()
            .any(|w| w.contains("not-yet-applied")),
        "{:?}",
        answer.warnings
    );

    // Unknown fields are refused, as the API server's schema would.
    let mut assignment: Value =
        serde_json::to_value(example::<EligibleAssignment>("03-eligibleassignment.yaml")).unwrap();
    assignment["spec"]["principle"] = json!({"user": "typo"});
    let answer = run(
        &admission,
        Stage::Validate,
        &wire(
            "EligibleAssignment",
            "eligibleassignments",
            "CREATE",
            &gitops,
            &assignment,
            None,
        ),
    );
    assert!(!answer.allowed);
    assert!(answer.message.contains("principle"), "{}", answer.message);
}

#[test]
fn a_declarative_object_made_invalid_later_still_takes_metadata_changes() {
    let admission = admission(Some(keyring()));
    let gitops = user(
        "system:serviceaccount:argocd:argocd-application-controller",
        &[],
        false,
    );
    // Stored before the policy required a justification.
    let mut stored: Value =
        serde_json::to_value(example::<EligibleAssignment>("03-eligibleassignment.yaml")).unwrap();
    stored["spec"]
        .as_object_mut()
        .unwrap()
        .remove("justification");
    let mut labelled = stored.clone();
    labelled["metadata"]["labels"] = json!({"team": "finance"});
    let review = |object: &Value| {
        run(
            &admission,
            Stage::Validate,
            &wire(
                "EligibleAssignment",
                "eligibleassignments",
                "UPDATE",
                &gitops,
                object,
                Some(&stored),
            ),
        )
    };
    let answer = review(&labelled);
    assert!(answer.allowed, "{}", answer.message);

    let mut edited = stored.clone();
    edited["spec"]["schedule"]["duration"] = json!("90d");
    let answer = review(&edited);
    assert!(!answer.allowed, "a spec change is judged");
    assert!(
        answer.message.contains("justification"),
        "{}",
        answer.message
    );
}

#[test]
fn malformed_reviews_are_errors_not_panics() {
    let admission = admission(Some(keyring()));
    for body in [
        &b""[..],
        b"{}",
        b"null",
        b"[1,2]",
        b"{\"request\": 5}",
        b"\xff\xfe",
    ] {
        assert!(
            admission
                .review(body, Stage::Mutate, &catalog(), now())
                .is_err()
        );
    }
    // A well-formed review with a garbage object is denied, not an error.
    let review = wire(
        "ActivationRequest",
        "activationrequests",
        "CREATE",
        &alice(),
        &json!({"spec": 7}),
        None,
    );
    let answer = run(&admission, Stage::Mutate, &review);
    assert!(!answer.allowed);
}

/// The server over real TLS: a client that trusts only the generated CA gets an answer.
#[tokio::test]
async fn https_round_trip() {
    use pim_operator::webhook::certs::ServingCert;
    use pim_operator::webhook::server;
    let cert = {
        use pim_operator::clock::Clock;
        // Real time: the client checks the certificate against its own clock.
        let real_now = pim_operator::clock::SystemClock.now();
        ServingCert::generate(&["localhost".to_owned()], real_now).unwrap()
    };
    let state = Arc::new(WebhookState {
        admission: admission(Some(keyring())),
        catalog: CatalogSource::Fixed(Arc::new(catalog())),
        clock: Arc::new(ManualClock::new(now())),
        audit: None,
        metrics: None,
    });
    let shutdown = tokio_util::sync::CancellationToken::new();
    let (address, task) = server::bind(
        "127.0.0.1:0".parse().unwrap(),
        server::rustls_config(cert.server_config().unwrap()),
        server::router(state),
        shutdown.clone(),
    )
    .await
    .unwrap();
    let ca = reqwest::Certificate::from_pem(cert.ca_pem.as_ref().unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(ca)
        .tls_built_in_root_certs(false)
        .build()
        .unwrap();
    let url = format!("https://localhost:{}/mutate", address.port());
    let review = alices_create();
    let answer: Value = client
        .post(&url)
        .json(&review)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
    assert_eq!(answer["response"]["patchType"], "JSONPatch");
    let bad = client.post(&url).body("not json").send().await.unwrap();
    assert_eq!(bad.status(), 400);
    // A client that does not trust the CA is refused by TLS.
    let untrusting = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .build()
        .unwrap();
    assert!(untrusting.post(&url).json(&review).send().await.is_err());
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

/// Issue 17 finding 3: what a caller can make the webhook hold is bounded: bodies over the API
/// server's own 3 MiB limit are refused, and reviews beyond the slots wait unread.
#[tokio::test]
async fn review_bodies_and_reviews_in_flight_are_bounded() {
    use axum::body::Body;
    use axum::http::Request;
    use pim_operator::webhook::server::{self, MAX_REVIEW_BYTES, MAX_REVIEWS_IN_FLIGHT};
    use tower::ServiceExt;
    const { assert!(MAX_REVIEW_BYTES * MAX_REVIEWS_IN_FLIGHT * 4 <= 64 << 20) };
    let state = Arc::new(WebhookState {
        admission: admission(Some(keyring())),
        catalog: CatalogSource::Fixed(Arc::new(catalog())),
        clock: Arc::new(ManualClock::new(now())),
        audit: None,
        metrics: None,
    });
    let slots = Arc::new(tokio::sync::Semaphore::new(1));
    let router = server::router_with_slots(state, slots.clone());
    let review = serde_json::to_vec(&alices_create()).unwrap();
    let post = |body: Vec<u8>| {
        Request::post("/mutate")
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap()
    };

    let oversized = vec![b' '; MAX_REVIEW_BYTES + 1];
    let refused = router.clone().oneshot(post(oversized)).await.unwrap();
    assert_eq!(refused.status(), 413);

    // Every slot taken: a review waits, and is answered once one is free.
    let held = slots.clone().acquire_many_owned(1).await.unwrap();
    let mut waiting = Box::pin(router.clone().oneshot(post(review.clone())));
    for _ in 0..10 {
        assert!(futures::poll!(waiting.as_mut()).is_pending());
        tokio::task::yield_now().await;
    }
    // Health checks do not wait for a slot.
    let health = router
        .clone()
        .oneshot(Request::get("/healthz").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    drop(held);
    let answered = waiting.await.unwrap();
    assert_eq!(answered.status(), 200);
}

#[tokio::test]
async fn the_attestation_key_secret_is_made_once_and_shared_by_every_replica() {
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::Secret;
    use pim_operator::api::activation_request::{Approval, Decision};
    use pim_operator::attestation::{AttestationConfig, secret};

    let server = pim_testkit::fake_apiserver::FakeApiServer::start()
        .await
        .unwrap();
    let client = server.client();
    let config = AttestationConfig {
        secret: Some("pim-operator-attestation".into()),
        ..Default::default()
    };
    // Two replicas starting at once: one makes it, both use the same key.
    let (a, b) = tokio::join!(
        secret::load(&config, &client, "pim-system"),
        secret::load(&config, &client, "pim-system")
    );
    let (a, b) = (a.unwrap().unwrap(), b.unwrap().unwrap());
    assert_eq!(a.signing_key_id(), b.signing_key_id());
    let approval = Approval {
        approver: "bob".into(),
        decision: Decision::Approve,
        ..Default::default()
    };
    let signed = Approval {
        attestation: Some(a.sign_approval("uid-1", &approval)),
        ..approval.clone()
    };
    assert!(b.verify_approval("uid-1", &signed));
    // A restart reads it again; nothing new is made.
    let again = secret::load(&config, &client, "pim-system")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.signing_key_id(), a.signing_key_id());
    let secrets: kube::Api<Secret> = kube::Api::namespaced(client.clone(), "pim-system");
    let mut stored = secrets.get("pim-operator-attestation").await.unwrap();
    let key = stored.data.as_ref().unwrap()["key"].0.clone();
    assert!(key.len() >= 32, "{} bytes", key.len());

    // Rotation: the old key under `previous-1`, a new `key`: old signatures still verify.
    let data = stored.data.as_mut().unwrap();
    data.insert("previous-1".into(), ByteString(key));
    data.insert(
        "key".into(),
        ByteString(b"a brand new attestation key of 32+ bytes".to_vec()),
    );
    secrets
        .replace("pim-operator-attestation", &Default::default(), &stored)
        .await
        .unwrap();
    let rotated = secret::load(&config, &client, "pim-system")
        .await
        .unwrap()
        .unwrap();
    assert_ne!(rotated.signing_key_id(), a.signing_key_id());
    assert!(rotated.verify_approval("uid-1", &signed));

    // A key too short is a clear error that names the Secret.
    let data = stored.data.as_mut().unwrap();
    data.insert("key".into(), ByteString(b"short".to_vec()));
    stored.metadata.resource_version = None;
    secrets
        .replace("pim-operator-attestation", &Default::default(), &stored)
        .await
        .unwrap();
    let err = secret::load(&config, &client, "pim-system")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("pim-system/pim-operator-attestation") && err.contains("5 bytes"),
        "{err}"
    );

    // Both forms at once is a config error naming the fields.
    let both = AttestationConfig {
        key_file: Some("/k".into()),
        ..config
    };
    assert!(both.validate().unwrap_err().contains("keyFile and secret"));
}

// issue 18 finding 8: a refusal says what to change, in which field, to what; no generic tail.
#[test]
fn issue_18_finding_8_refusals_say_what_to_change() {
    let admission = admission(Some(keyring()));
    let too_long = json!({"duration": "2h"});
    let message = create(&admission, &alice(), &request_object(GROUP, too_long)).unwrap_err();
    assert!(
        message.contains(
            "spec.duration: 2h is longer than the policy's maximum of 30m (set spec.duration to at most 30m, the policy's maxDuration, or leave it out to get 30m)"
        ),
        "{message}"
    );

    // A CEL transition rule, checked by the webhook as the API server would.
    let stored = create(&admission, &alice(), &request_object(GROUP, json!({}))).unwrap();
    let mut ended = stored.clone();
    ended["spec"]["deactivate"] = json!(true);
    let mut undone = ended.clone();
    undone["spec"]["deactivate"] = json!(false);
    let message = update(&admission, &alice(), &ended, &undone).unwrap_err();
    assert!(
        message.contains(
            "deactivate cannot be undone: keep deactivate: true, and create a new request for new access (keep spec.deactivate: true; the request has ended, so ask for access again with a new ActivationRequest)"
        ),
        "{message}"
    );
    for generic in ["change the object", "the message says"] {
        assert!(!message.contains(generic), "{message}");
    }
}

/// Issue 16: Entra's PIM for Groups makes no assignment under five minutes, so a shorter
/// request through an Entra directory in pim mode is admitted with a warning saying how long
/// the access will be held.
#[test]
fn a_request_shorter_than_the_directory_holds_is_admitted_with_a_warning() {
    let mut admission = admission(Some(keyring()));
    let directory = catalog().groups[GROUP].spec.directory.clone();
    admission
        .shortest_assignments
        .insert(directory.clone(), jiff::SignedDuration::from_mins(5));
    let validate = |duration: &str| {
        let object = request_object(GROUP, json!({"duration": duration}));
        let review = |stage: Stage, object: &Value| {
            run(
                &admission,
                stage,
                &wire(
                    "ActivationRequest",
                    "activationrequests",
                    "CREATE",
                    &alice(),
                    object,
                    None,
                ),
            )
        };
        let mutated = review(Stage::Mutate, &object);
        assert!(mutated.allowed, "{}", mutated.message);
        assert!(mutated.warnings.is_empty(), "the validating stage warns");
        let validated = review(Stage::Validate, &mutated.patched);
        assert!(validated.allowed, "{}", validated.message);
        validated.warnings
    };
    let warnings = validate("2m");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    for part in [
        "spec.duration: 2m",
        "ActiveDurationTooShort",
        "held 5m",
        &directory,
    ] {
        assert!(warnings[0].contains(part), "{part} in {warnings:?}");
    }
    assert!(validate("30m").is_empty());
}

/// Issue 16 review: the warning is about the window the request gets, not only a
/// `spec.duration`: a request without one gets the policy's maxDuration, which may be under
/// five minutes too.
#[test]
fn a_request_whose_policy_default_is_shorter_than_the_directory_holds_is_warned_of() {
    let mut admission = admission(Some(keyring()));
    let mut catalog = catalog();
    let directory = catalog.groups[GROUP].spec.directory.clone();
    admission
        .shortest_assignments
        .insert(directory.clone(), jiff::SignedDuration::from_mins(5));
    let mut short: AccessPolicy = example("01-accesspolicy.yaml");
    short.spec.activation.max_duration = Some("2m".into());
    catalog.insert_policy(short);
    let mut object = request_object(GROUP, json!({}));
    object["spec"].as_object_mut().unwrap().remove("duration");
    let review =
        |stage: Stage, object: &Value| on_create_in(&admission, stage, &alice(), object, &catalog);
    let mutated = review(Stage::Mutate, &object);
    assert!(mutated.allowed, "{}", mutated.message);
    let validated = review(Stage::Validate, &mutated.patched);
    assert!(validated.allowed, "{}", validated.message);
    assert_eq!(validated.warnings.len(), 1, "{:?}", validated.warnings);
    for part in ["2m", "maxDuration", "ActiveDurationTooShort", "held 5m"] {
        assert!(
            validated.warnings[0].contains(part),
            "{part} in {:?}",
            validated.warnings
        );
    }
}

/// Issue 19: the validating webhook records each change to a declarative kind, refused ones
/// too, with who asked; a dry run, the mutating stage and metadata-only updates are not
/// recorded.
#[test]
fn issue_19_changes_are_recorded_refused_ones_too_but_never_a_dry_run() {
    let admission = admission(Some(keyring()));
    let catalog = protected_catalog();
    let carol =
        serde_json::to_value(active_assignment("carol-active", "carol@contoso.com")).unwrap();
    let delete = assignment_review("DELETE", &Value::Null, Some(&carol));
    let audited = |review: &Value, stage: Stage| {
        let body = serde_json::to_vec(review).unwrap();
        admission
            .review_audited(&body, stage, &catalog, now())
            .unwrap()
            .1
    };
    let record = audited(&delete, Stage::Validate).expect("the refused delete is recorded");
    assert_eq!(record.action, pim_operator::audit::action::Action::Deleted);
    assert_eq!(
        (record.kind.as_str(), record.name.as_str()),
        ("EligibleAssignment", "carol-active")
    );
    assert_eq!(record.allowed, Some(false));
    assert!(
        record
            .denial
            .as_deref()
            .unwrap_or_default()
            .contains("protectLastMember"),
        "{record:?}"
    );
    assert_eq!(
        record.user.as_ref().map(|u| u.username.as_str()),
        Some("system:serviceaccount:argocd:argocd-application-controller")
    );
    assert_eq!(record.principal.as_deref(), Some("carol@contoso.com"));
    assert_eq!(record.group.as_deref(), Some("open"));
    assert_eq!(record.time, now());
    assert!(audited(&delete, Stage::Mutate).is_none());
    let mut dry_run = delete.clone();
    dry_run["request"]["dryRun"] = json!(true);
    assert!(audited(&dry_run, Stage::Validate).is_none());
    // Labels only: nothing an auditor asks about.
    let mut labelled = carol.clone();
    labelled["metadata"]["labels"] = json!({"team": "payments"});
    let relabel = assignment_review("UPDATE", &labelled, Some(&carol));
    assert!(audited(&relabel, Stage::Validate).is_none());
    // A spec change is: its diff names the field.
    let mut longer = carol.clone();
    longer["spec"]["schedule"]["duration"] = json!("180d");
    let record = audited(
        &assignment_review("UPDATE", &longer, Some(&carol)),
        Stage::Validate,
    )
    .expect("recorded");
    assert_eq!(record.allowed, Some(true));
    assert_eq!(record.changes.len(), 1, "{record:?}");
    assert_eq!(record.changes[0].path, "/spec/schedule/duration");
}

/// Issue 20: the catalog with "open" marked `protectLastMember` and carol Active in it.
fn protected_catalog() -> Catalog {
    let mut catalog = catalog();
    let mut open = (*catalog.groups["open"]).clone();
    open.spec.protect_last_member = true;
    catalog.insert_group(open);
    catalog.insert_assignment(active_assignment("carol-active", "carol@contoso.com"));
    catalog
}

fn active_assignment(name: &str, user: &str) -> EligibleAssignment {
    let mut a: EligibleAssignment = example("03-eligibleassignment.yaml");
    a.metadata.name = Some(name.into());
    a.spec.group = "open".into();
    a.spec.principal = pim_operator::api::common::PrincipalRef::user(user);
    a.spec.assignment_type = pim_operator::api::eligible_assignment::AssignmentType::Active;
    a.spec.schedule = pim_operator::api::eligible_assignment::Schedule {
        start: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            "2026-11-01T00:00:00Z".parse().unwrap(),
        )),
        duration: Some("90d".into()),
        ..Default::default()
    };
    a
}

fn assignment_review(operation: &str, object: &Value, old: Option<&Value>) -> Value {
    wire(
        "EligibleAssignment",
        "eligibleassignments",
        operation,
        &json!({"username": "system:serviceaccount:argocd:argocd-application-controller", "groups": ["system:serviceaccounts"]}),
        object,
        old,
    )
}

// Issue 20: the API server sends a DELETE's stored object as oldObject and no object
// (k8s.io/apiserver pkg/admission/plugin/webhook/request/admissionreview.go).
#[test]
fn issue_20_the_last_grant_of_a_protected_group_cannot_be_deleted_or_edited_away() {
    let admission = admission(Some(keyring()));
    let catalog = protected_catalog();
    let carol =
        serde_json::to_value(active_assignment("carol-active", "carol@contoso.com")).unwrap();
    let delete = assignment_review("DELETE", &Value::Null, Some(&carol));
    let answer = run_in(&admission, Stage::Validate, &delete, &catalog);
    assert_refused(&answer, "protectLastMember");
    assert!(
        answer.message.contains("user:carol@contoso.com"),
        "{}",
        answer.message
    );
    // Made Eligible: the same.
    let mut eligible = carol.clone();
    eligible["spec"]["type"] = json!("Eligible");
    let update = assignment_review("UPDATE", &eligible, Some(&carol));
    assert_refused(
        &run_in(&admission, Stage::Validate, &update, &catalog),
        "protectLastMember",
    );
    // With dave Active too, carol's may go.
    let mut both = catalog.clone();
    both.insert_assignment(active_assignment("dave-active", "dave@contoso.com"));
    assert!(run_in(&admission, Stage::Validate, &delete, &both).allowed);
    assert!(run_in(&admission, Stage::Validate, &update, &both).allowed);
    // Not protected: deleted freely.
    let mut open = (*catalog.groups["open"]).clone();
    open.spec.protect_last_member = false;
    let mut unprotected = catalog.clone();
    unprotected.insert_group(open);
    assert!(run_in(&admission, Stage::Validate, &delete, &unprotected).allowed);
}

#[test]
fn issue_20_the_last_active_request_of_a_protected_group_cannot_be_deactivated() {
    let admission = admission(Some(keyring()));
    let mut catalog = protected_catalog();
    catalog.assignments.remove("carol-active");
    let stored = create_in(
        &admission,
        &alice(),
        &request_object("open", json!({})),
        &catalog,
    )
    .unwrap();
    let mut active: ActivationRequest = serde_json::from_value(stored.clone()).unwrap();
    let t = |s: &str| {
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            s.parse().unwrap(),
        ))
    };
    active.status = Some(pim_operator::api::ActivationRequestStatus {
        phase: Some(pim_operator::api::Phase::Active),
        approved_at: t("2026-11-22T09:50:00Z"),
        starts_at: t("2026-11-22T09:50:00Z"),
        expires_at: t("2026-11-22T10:20:00Z"),
        ..Default::default()
    });
    catalog.insert_request(active.clone());
    let mut deactivated = stored.clone();
    deactivated["spec"]["deactivate"] = json!(true);
    expect_denied(
        update_in(&admission, &alice(), &stored, &deactivated, &catalog),
        &["protectLastMember", "alice@contoso.com"],
    );
    let delete = wire(
        "ActivationRequest",
        "activationrequests",
        "DELETE",
        &alice(),
        &Value::Null,
        Some(&stored),
    );
    assert_refused(
        &run_in(&admission, Stage::Validate, &delete, &catalog),
        "protectLastMember",
    );
    // Carol Active beside her: alice may end hers.
    catalog.insert_assignment(active_assignment("carol-active", "carol@contoso.com"));
    update_in(&admission, &alice(), &stored, &deactivated, &catalog).unwrap();
    assert!(run_in(&admission, Stage::Validate, &delete, &catalog).allowed);
}

#[test]
fn issue_20_remove_on_an_unseen_group_is_admitted_with_a_warning() {
    let admission = admission(Some(keyring()));
    let mut group: PimGroup = example("02-pimgroup.yaml");
    group.metadata.name = Some("fresh".into());
    group.spec.group.display_name = Some("Fresh".into());
    group.spec.standing_access = pim_operator::api::pim_group::StandingAccess::Remove;
    let object = serde_json::to_value(&group).unwrap();
    let review = |operation, old: Option<&Value>| {
        wire("PimGroup", "pimgroups", operation, &bob(), &object, old)
    };
    let created = run(&admission, Stage::Validate, &review("CREATE", None));
    assert!(created.allowed, "{}", created.message);
    assert!(
        created
            .warnings
            .iter()
            .any(|w| w.contains("never reported")),
        "{:?}",
        created.warnings
    );
    // Seen under Adopt with bob listed: the switch names him.
    let mut stored = group.clone();
    stored.spec.standing_access = pim_operator::api::pim_group::StandingAccess::Adopt;
    stored.status = Some(pim_operator::api::pim_group::PimGroupStatus {
        group_id: Some("0d6b".into()),
        unexplained_members: vec!["user:bob@contoso.com".into()],
        ..Default::default()
    });
    let stored = serde_json::to_value(&stored).unwrap();
    let switched = run(
        &admission,
        Stage::Validate,
        &review("UPDATE", Some(&stored)),
    );
    assert!(switched.allowed, "{}", switched.message);
    assert!(
        switched
            .warnings
            .iter()
            .any(|w| w.contains("removes the 1 member(s)") && w.contains("user:bob@contoso.com")),
        "{:?}",
        switched.warnings
    );
}

/// Alice's request `r0` in "open" (30m maximum), running from `start` to `end` (RFC 3339).
fn with_running_r0(catalog: &Catalog, admission: &Admission, start: &str, end: &str) -> Catalog {
    let mut catalog = catalog.clone();
    let mut object = request_object("open", json!({}));
    object["metadata"]["name"] = json!("r0");
    let stored = create_in(admission, &alice(), &object, &catalog).unwrap();
    let mut running: ActivationRequest = serde_json::from_value(stored).unwrap();
    let t = |s: &str| {
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            s.parse().unwrap(),
        ))
    };
    running.status = Some(pim_operator::api::ActivationRequestStatus {
        phase: Some(pim_operator::api::Phase::Active),
        approved_at: t(start),
        starts_at: t(start),
        expires_at: t(end),
        ..Default::default()
    });
    catalog.insert_request(running);
    catalog
}

#[test]
fn issue_20_an_extension_is_signed_with_what_it_extends_and_checked_at_admission() {
    let admission = admission(Some(keyring()));
    let catalog = with_running_r0(
        &catalog(),
        &admission,
        "2026-11-22T09:55:00Z",
        "2026-11-22T10:15:00Z",
    );
    let extension = |extra: Value| {
        let mut object = request_object("open", extra);
        object["metadata"]["name"] = json!("r0-ext");
        object
    };
    let stored = create_in(
        &admission,
        &alice(),
        &extension(json!({"extends": "r0", "duration": "10m"})),
        &catalog,
    )
    .unwrap();
    assert_eq!(stored["spec"]["extends"], "r0");
    // The signature covers `extends`: pointed at another request, it no longer verifies.
    let signed: ActivationRequest = serde_json::from_value(stored.clone()).unwrap();
    assert!(keyring().verify_requester("r0-ext", &signed.spec));
    let mut moved = signed.spec.clone();
    moved.extends = Some("r9".into());
    assert!(!keyring().verify_requester("r0-ext", &moved));

    // Only one's own, running request, of the same group and role, with time left.
    expect_denied(
        create_in(
            &admission,
            &bob(),
            &extension(json!({"extends": "r0"})),
            &catalog,
        ),
        &["spec.extends", "only your own"],
    );
    expect_denied(
        create_in(
            &admission,
            &alice(),
            &extension(json!({"extends": "nope"})),
            &catalog,
        ),
        &["spec.extends", "does not exist"],
    );
    expect_denied(
        create_in(
            &admission,
            &alice(),
            &extension(json!({"extends": "r0", "startTime": "2026-11-22T11:00:00Z"})),
            &catalog,
        ),
        &["has no spec.startTime"],
    );
    let mut ended = catalog.clone();
    let mut expired = (*ended.requests["r0"]).clone();
    if let Some(status) = expired.status.as_mut() {
        status.phase = Some(pim_operator::api::Phase::Expired);
    }
    ended.insert_request(expired);
    expect_denied(
        create_in(
            &admission,
            &alice(),
            &extension(json!({"extends": "r0"})),
            &ended,
        ),
        &["spec.extends", "is Expired", "only a running activation"],
    );
    // r0 already runs the policy's whole 30m.
    let full = with_running_r0(
        &catalog,
        &admission,
        "2026-11-22T09:50:00Z",
        "2026-11-22T10:20:00Z",
    );
    expect_denied(
        create_in(
            &admission,
            &alice(),
            &extension(json!({"extends": "r0"})),
            &full,
        ),
        &["nothing to extend", "allowRenewal"],
    );
    // One open extension at a time.
    let mut twice = catalog.clone();
    twice.insert_request(serde_json::from_value::<ActivationRequest>(stored).unwrap());
    let mut again = extension(json!({"extends": "r0"}));
    again["metadata"]["name"] = json!("r0-ext-2");
    expect_denied(
        create_in(&admission, &alice(), &again, &twice),
        &["\"r0-ext\" already extends \"r0\""],
    );
}

// --- Access review decisions (issue 19) ---------------------------------------------------------

/// A review of GROUP, running from 2026-11-22T09:00:00Z for 7 days (`now` is an hour in), with
/// carol named; as stored.
fn stored_review(extra: Value) -> Value {
    let mut review = json!({
        "apiVersion": "pim.dev/v1alpha1", "kind": "AccessReview",
        "metadata": {"name": "finreport-review", "uid": "review-uid-1"},
        "spec": {
            "scope": {"groups": [GROUP]},
            "reviewers": {"principals": [{"user": "carol@contoso.com"}]},
            "schedule": {"start": "2026-11-22T09:00:00Z", "duration": "7d"},
        },
    });
    if let (Some(spec), Some(extra)) = (review["spec"].as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            spec.insert(k.clone(), v.clone());
        }
    }
    review
}

const ALICE_ASSIGNMENT: &str = "finreport-senioranalyst-alice";
const INSTANCE: &str = "2026-11-22T09:00:00Z";

/// `caller` writes `review` over `old`, through both webhooks; returns the stored object.
fn write_review(caller: &Value, old: Option<&Value>, review: &Value) -> Result<Value, String> {
    let admission = admission(Some(keyring()));
    let operation = if old.is_some() { "UPDATE" } else { "CREATE" };
    let at = |stage, object: &Value| {
        let wired = wire(
            "AccessReview",
            "accessreviews",
            operation,
            caller,
            object,
            old,
        );
        run(&admission, stage, &wired)
    };
    let mutated = at(Stage::Mutate, review);
    if !mutated.allowed {
        return Err(mutated.message);
    }
    let validated = at(Stage::Validate, &mutated.patched);
    if !validated.allowed {
        return Err(validated.message);
    }
    Ok(mutated.patched)
}

fn with_decision(review: &Value, reviewer: &str, assignment: &str, decision: &str) -> Value {
    let mut new = review.clone();
    let entry = json!({"instance": INSTANCE, "assignment": assignment, "reviewer": reviewer,
                       "decision": decision, "reason": "still prepares the reports"});
    match new["spec"]["decisions"].as_array_mut() {
        Some(list) => list.push(entry),
        None => new["spec"]["decisions"] = json!([entry]),
    }
    new
}

fn verified(review: &Value) -> Vec<bool> {
    let review: pim_operator::api::AccessReview = serde_json::from_value(review.clone()).unwrap();
    review
        .spec
        .decisions
        .iter()
        .map(|d| attestor().review_decision(&review, d))
        .collect()
}

#[test]
fn a_reviewer_writes_a_stamped_signed_decision_of_their_own() {
    let carol = user("oidc:carol", &[], true);
    let stored = stored_review(json!({}));
    let decided = write_review(
        &carol,
        Some(&stored),
        &with_decision(&stored, "oidc:carol", ALICE_ASSIGNMENT, "Deny"),
    )
    .unwrap();
    let entry = &decided["spec"]["decisions"][0];
    assert_eq!(
        entry["time"], "2026-11-22T10:00:00Z",
        "stamped by the webhook"
    );
    assert_eq!(entry["reviewerAs"], "user");
    assert!(entry["attestation"].as_str().unwrap().starts_with("v1:"));
    assert_eq!(verified(&decided), [true]);
    // Copied onto another review (another uid), it proves nothing.
    let mut copied = decided.clone();
    copied["metadata"]["uid"] = json!("review-uid-2");
    assert_eq!(verified(&copied), [false]);
    // Changed after signing (Deny turned Approve around the webhook), neither.
    let mut forged = decided.clone();
    forged["spec"]["decisions"][0]["decision"] = json!("Approve");
    assert_eq!(verified(&forged), [false]);

    // The policy's approvers review when the review says so; bob is one.
    let bob_decides = with_decision(&stored, "oidc:bob", ALICE_ASSIGNMENT, "Approve");
    expect_denied(
        write_review(&bob(), Some(&stored), &bob_decides),
        &["not a reviewer of assignment finreport-senioranalyst-alice"],
    );
    let with_approvers = stored_review(json!({"reviewers": {"policyApprovers": true}}));
    let by_approver = write_review(
        &bob(),
        Some(&with_approvers),
        &with_decision(&with_approvers, "oidc:bob", ALICE_ASSIGNMENT, "Approve"),
    )
    .unwrap();
    assert_eq!(
        by_approver["spec"]["decisions"][0]["reviewerAs"],
        "approver"
    );
}

#[test]
fn review_decisions_are_refused_by_field_and_rule() {
    let carol = user("oidc:carol", &[], true);
    let stored = stored_review(json!({}));
    // Under someone else's name.
    expect_denied(
        write_review(
            &carol,
            Some(&stored),
            &with_decision(&stored, "oidc:bob", ALICE_ASSIGNMENT, "Deny"),
        ),
        &[
            "reviewer=oidc:bob].reviewer",
            "write decisions under your own name only",
        ],
    );
    // In an instance that is not running.
    let mut stale = with_decision(&stored, "oidc:carol", ALICE_ASSIGNMENT, "Deny");
    stale["spec"]["decisions"][0]["instance"] = json!("2026-11-01T09:00:00Z");
    expect_denied(
        write_review(&carol, Some(&stored), &stale),
        &[".instance", "the running one is 2026-11-22T09:00:00Z"],
    );
    // On an assignment that is not under review.
    expect_denied(
        write_review(
            &carol,
            Some(&stored),
            &with_decision(&stored, "oidc:carol", "open-alice", "Deny"),
        ),
        &[".assignment", "is not under review"],
    );
    // With the review itself, at creation.
    expect_denied(
        write_review(
            &carol,
            None,
            &with_decision(&stored, "oidc:carol", ALICE_ASSIGNMENT, "Deny"),
        ),
        &["spec.decisions", "kubectl pim review"],
    );
    // Alice may not review herself, even when named...
    let named_alice =
        stored_review(json!({"reviewers": {"principals": [{"user": "alice@contoso.com"}]}}));
    expect_denied(
        write_review(
            &alice(),
            Some(&named_alice),
            &with_decision(&named_alice, "oidc:alice", ALICE_ASSIGNMENT, "Approve"),
        ),
        &["does not allow self-review"],
    );
    // Nor under a username the directory does not map (no `oidc:` prefix) that is hers as
    // written.
    let unmapped = user("alice@contoso.com", &[], true);
    expect_denied(
        write_review(
            &unmapped,
            Some(&named_alice),
            &with_decision(
                &named_alice,
                "alice@contoso.com",
                ALICE_ASSIGNMENT,
                "Approve",
            ),
        ),
        &["does not allow self-review"],
    );
    // ...unless the review says so.
    let self_review = stored_review(json!({"reviewers": {"selfReview": true}}));
    let own = write_review(
        &alice(),
        Some(&self_review),
        &with_decision(&self_review, "oidc:alice", ALICE_ASSIGNMENT, "Approve"),
    )
    .unwrap();
    assert_eq!(own["spec"]["decisions"][0]["reviewerAs"], "self");
    // Nobody withdraws another reviewer's decision.
    let decided = write_review(
        &carol,
        Some(&stored),
        &with_decision(&stored, "oidc:carol", ALICE_ASSIGNMENT, "Deny"),
    )
    .unwrap();
    let mut withdrawn = decided.clone();
    withdrawn["spec"]["decisions"] = json!([]);
    expect_denied(
        write_review(&bob(), Some(&decided), &withdrawn),
        &["only oidc:carol may withdraw their decision"],
    );
    // A reviewer does not rewrite the review: adding themselves as self-reviewer, say.
    let mut widened = decided.clone();
    widened["spec"]["reviewers"]["selfReview"] = json!(true);
    expect_denied(
        write_review(&carol, Some(&decided), &widened),
        &["may change only their own spec.decisions"],
    );
    // A GitOps tool's service account changes the schedule, keeping the decisions.
    let argo = user(
        "system:serviceaccount:argocd:argocd-application-controller",
        &[],
        false,
    );
    let mut moved = decided.clone();
    moved["spec"]["schedule"]["duration"] = json!("10d");
    assert!(write_review(&argo, Some(&decided), &moved).is_ok());
}

/// A review's denials live in its status: deleting it while a denied assignment still exists
/// would make that assignment grant again, so the webhook refuses, naming what to remove first.
#[test]
fn a_review_with_standing_denials_is_not_deleted() {
    let admission = admission(Some(keyring()));
    let mut stored = stored_review(json!({}));
    stored["status"] = json!({"denied": [{"assignment": ALICE_ASSIGNMENT, "instance": INSTANCE,
        "at": "2026-11-29T09:00:00Z", "by": "oidc:carol"}]});
    let admin = user("oidc:platform-admin", &["platform"], true);
    let delete = |catalog: &Catalog| {
        let wired = wire(
            "AccessReview",
            "accessreviews",
            "DELETE",
            &admin,
            &Value::Null,
            Some(&stored),
        );
        run_in(&admission, Stage::Validate, &wired, catalog)
    };
    let refused = delete(&catalog());
    assert_refused(
        &refused,
        "denied EligibleAssignments that still exist: finreport-senioranalyst-alice",
    );
    // Once the manifest is gone, the review may go.
    let mut without = catalog();
    without.remove_assignment(ALICE_ASSIGNMENT);
    assert!(delete(&without).allowed);
}

/// A person changes only decisions (even one the review does not name: otherwise they could
/// widen it and decide under it); decisions of an ended instance stay until its end is on
/// record, and then anyone may drop them, the webhook first of all.
#[test]
fn people_change_only_decisions_and_ended_instances_are_pruned() {
    let carol = user("oidc:carol", &[], true);
    let stored = stored_review(json!({}));
    // Alice, not a reviewer, makes herself one.
    let mut widened = stored.clone();
    widened["spec"]["reviewers"]["selfReview"] = json!(true);
    expect_denied(
        write_review(&alice(), Some(&stored), &widened),
        &[
            "oidc:alice may change only their own spec.decisions",
            "through Git",
        ],
    );
    // Carol decides; the instance ends before the operator records it: her entry stays hers.
    let decided = write_review(
        &carol,
        Some(&stored),
        &with_decision(&stored, "oidc:carol", ALICE_ASSIGNMENT, "Deny"),
    )
    .unwrap();
    let mut ended = decided.clone();
    ended["spec"]["schedule"]["start"] = json!("2026-11-12T09:00:00Z");
    let mut withdrawn = ended.clone();
    withdrawn["spec"]["decisions"] = json!([]);
    expect_denied(
        write_review(&carol, Some(&ended), &withdrawn),
        &["can no longer be withdrawn"],
    );
    let argo = user(
        "system:serviceaccount:argocd:argocd-application-controller",
        &[],
        false,
    );
    expect_denied(
        write_review(&argo, Some(&ended), &withdrawn),
        &["service account"],
    );
    // Once the status records the instance completed, a tool may drop its entries...
    let mut recorded = ended.clone();
    recorded["status"] = json!({"current": {"id": INSTANCE, "start": INSTANCE,
        "end": "2026-11-19T09:00:00Z", "phase": "Completed"}});
    let mut pruned = recorded.clone();
    pruned["spec"]["decisions"] = json!([]);
    assert!(write_review(&argo, Some(&recorded), &pruned).is_ok());
    // ...and the webhook drops them when the next decision is written.
    let mut next = recorded.clone();
    next["spec"]["schedule"] = json!({"start": "2026-11-22T09:00:00Z", "duration": "7d"});
    next["status"]["current"]["id"] = json!("2026-11-15T09:00:00Z");
    next["status"]["current"]["start"] = json!("2026-11-15T09:00:00Z");
    next["spec"]["decisions"][0]["instance"] = json!("2026-11-15T09:00:00Z");
    let written = write_review(
        &carol,
        Some(&next),
        &with_decision(&next, "oidc:carol", ALICE_ASSIGNMENT, "Approve"),
    )
    .unwrap();
    let instances: Vec<&str> = written["spec"]["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["instance"].as_str().unwrap())
        .collect();
    assert_eq!(instances, [INSTANCE]);
}
