//! Admission webhooks in the fake API server: a refusal, a patch, failurePolicy, the CA bundle,
//! Services reached through `Options::services`, and `userInfo` from impersonation.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::routing::post;
use base64::Engine as _;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use pim_operator::clock::{Clock, SystemClock};
use pim_operator::webhook::certs::ServingCert;
use pim_operator::webhook::server;
use pim_testkit::fake_apiserver::{FakeApiServer, Options};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// What the test webhook answers, given the review's request.
type Answer = Arc<dyn Fn(&Value) -> Value + Send + Sync>;

struct TestWebhook {
    address: SocketAddr,
    /// The CA bundle (PEM, base64) to put in a webhook configuration.
    ca_bundle: String,
    /// Every review received.
    reviews: Arc<Mutex<Vec<Value>>>,
    _stop: tokio_util::sync::DropGuard,
}

/// An HTTPS webhook for `dns_name` (`NAME.NAMESPACE.svc`), answering with `answer`.
async fn webhook(dns_name: &str, answer: Answer) -> TestWebhook {
    let cert = ServingCert::generate(&[dns_name.to_owned()], SystemClock.now()).unwrap();
    let ca = cert.ca_pem.clone().unwrap();
    let reviews = Arc::new(Mutex::new(Vec::new()));
    let state = (reviews.clone(), answer);
    let router = axum::Router::new()
        .route(
            "/hook",
            post(
                |State((reviews, answer)): State<(Arc<Mutex<Vec<Value>>>, Answer)>,
                 Json(review): Json<Value>| async move {
                    let request = review["request"].clone();
                    reviews.lock().unwrap().push(review);
                    let mut response = answer(&request);
                    response["uid"] = request["uid"].clone();
                    Json(json!({
                        "apiVersion": "admission.k8s.io/v1",
                        "kind": "AdmissionReview",
                        "response": response,
                    }))
                },
            ),
        )
        .with_state(state);
    let stop = CancellationToken::new();
    let tls = server::rustls_config(cert.server_config().unwrap());
    let (address, _task) = server::bind("127.0.0.1:0".parse().unwrap(), tls, router, stop.clone())
        .await
        .unwrap();
    TestWebhook {
        address,
        ca_bundle: base64::engine::general_purpose::STANDARD.encode(ca),
        reviews,
        _stop: stop.drop_guard(),
    }
}

fn allow() -> Answer {
    Arc::new(|_| json!({"allowed": true}))
}

/// A server that reaches the Service `hooks/test` at the webhook's address.
async fn server_for(hook: &TestWebhook) -> FakeApiServer {
    FakeApiServer::start_with(Options {
        services: [("hooks/test".to_owned(), hook.address)].into(),
        ..Options::default()
    })
    .await
    .unwrap()
}

const SERVICE_DNS: &str = "test.hooks.svc";

fn service_config(ca_bundle: &str) -> Value {
    json!({"service": {"namespace": "hooks", "name": "test", "path": "/hook", "port": 443}, "caBundle": ca_bundle})
}

fn configmap_rule() -> Value {
    json!([{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"], "resources": ["configmaps"], "scope": "Namespaced"}])
}

/// Stores a webhook configuration of `kind` (Mutating/Validating) with one webhook.
async fn configure(server: &FakeApiServer, kind: &str, client_config: Value, failure_policy: &str) {
    let plural = format!("{}webhookconfigurations", kind.to_lowercase());
    let config = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": format!("{kind}WebhookConfiguration"),
        "metadata": {"name": "test"},
        "webhooks": [{
            "name": "check.test.dev",
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": failure_policy,
            "timeoutSeconds": 2,
            "clientConfig": client_config,
            "rules": configmap_rule(),
        }],
    });
    // Through the API, as kubectl would store it.
    let api: Api<kube::core::DynamicObject> = Api::all_with(
        server.client(),
        &kube::core::ApiResource {
            group: "admissionregistration.k8s.io".into(),
            version: "v1".into(),
            api_version: "admissionregistration.k8s.io/v1".into(),
            kind: format!("{kind}WebhookConfiguration"),
            plural,
        },
    );
    api.create(
        &PostParams::default(),
        &serde_json::from_value(config).unwrap(),
    )
    .await
    .unwrap();
}

fn configmap(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": {"k": "v"}})).unwrap()
}

fn api_error(err: kube::Error) -> kube::core::Status {
    match err {
        kube::Error::Api(status) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_validating_webhook_refuses_with_its_message_and_code() {
    let hook = webhook(
        SERVICE_DNS,
        Arc::new(|request| {
            if request["object"]["metadata"]["name"] == "forbidden" {
                json!({"allowed": false, "status": {"code": 403, "message": "not this one"}})
            } else {
                json!({"allowed": true})
            }
        }),
    )
    .await;
    let server = server_for(&hook).await;
    configure(
        &server,
        "Validating",
        service_config(&hook.ca_bundle),
        "Fail",
    )
    .await;
    let cms: Api<ConfigMap> = Api::namespaced(server.client(), "default");

    let err = api_error(
        cms.create(&PostParams::default(), &configmap("forbidden"))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 403, "{err:?}");
    assert_eq!(
        err.message,
        "admission webhook \"check.test.dev\" denied the request: not this one"
    );
    assert!(
        server
            .store_get("configmaps", Some("default"), "forbidden")
            .is_none()
    );

    cms.create(&PostParams::default(), &configmap("fine"))
        .await
        .unwrap();
    let reviews = hook.reviews.lock().unwrap().clone();
    let last = &reviews.last().unwrap()["request"];
    assert_eq!(last["operation"], "CREATE");
    assert_eq!(
        last["resource"],
        json!({"group": "", "version": "v1", "resource": "configmaps"})
    );
    assert_eq!(last["namespace"], "default");
    assert_eq!(last["name"], "fine");
    assert_eq!(last["options"]["kind"], "CreateOptions");
    assert_eq!(last["dryRun"], false);
    // A refusal without a code is a 400.
    let hook_400 = webhook(SERVICE_DNS, Arc::new(|_| json!({"allowed": false}))).await;
    let server = server_for(&hook_400).await;
    configure(
        &server,
        "Validating",
        service_config(&hook_400.ca_bundle),
        "Fail",
    )
    .await;
    let cms: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    let err = api_error(
        cms.create(&PostParams::default(), &configmap("x"))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 400);
    assert_eq!(
        err.message,
        "admission webhook \"check.test.dev\" denied the request without explanation"
    );
}

#[tokio::test]
async fn a_mutating_webhook_patch_is_stored_and_validating_webhooks_see_it() {
    let patch = base64::engine::general_purpose::STANDARD.encode(
        json!([{"op": "add", "path": "/metadata/labels", "value": {"stamped": "yes"}}]).to_string(),
    );
    let mutating = webhook(
        SERVICE_DNS,
        Arc::new(move |_| json!({"allowed": true, "patchType": "JSONPatch", "patch": patch})),
    )
    .await;
    let validating = webhook("other.hooks.svc", allow()).await;
    let server = FakeApiServer::start_with(Options {
        services: [
            ("hooks/test".to_owned(), mutating.address),
            ("hooks/other".to_owned(), validating.address),
        ]
        .into(),
        ..Options::default()
    })
    .await
    .unwrap();
    configure(
        &server,
        "Mutating",
        service_config(&mutating.ca_bundle),
        "Fail",
    )
    .await;
    configure(
        &server,
        "Validating",
        json!({"service": {"namespace": "hooks", "name": "other", "path": "/hook"}, "caBundle": validating.ca_bundle}),
        "Fail",
    )
    .await;
    let cms: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    let created = cms
        .create(&PostParams::default(), &configmap("patched"))
        .await
        .unwrap();
    assert_eq!(
        created
            .metadata
            .labels
            .unwrap()
            .get("stamped")
            .map(String::as_str),
        Some("yes")
    );
    let stored = server
        .store_get("configmaps", Some("default"), "patched")
        .unwrap();
    assert_eq!(stored["metadata"]["labels"]["stamped"], "yes");
    let seen = validating.reviews.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0]["request"]["object"]["metadata"]["labels"]["stamped"],
        "yes"
    );
}

#[tokio::test]
async fn failure_policy_decides_when_the_webhook_cannot_be_called() {
    // Nothing listens there: the call fails.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "https://127.0.0.1:{}/hook",
        closed.local_addr().unwrap().port()
    );
    drop(closed);
    let server = FakeApiServer::start().await.unwrap();
    configure(&server, "Validating", json!({"url": url}), "Fail").await;
    let cms: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    let err = api_error(
        cms.create(&PostParams::default(), &configmap("a"))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (err.code, err.reason.as_str()),
        (500, "InternalError"),
        "{err:?}"
    );
    assert!(
        err.message
            .starts_with("Internal error occurred: failed calling webhook \"check.test.dev\""),
        "{}",
        err.message
    );

    let server = FakeApiServer::start().await.unwrap();
    configure(&server, "Validating", json!({"url": url}), "Ignore").await;
    let cms: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    cms.create(&PostParams::default(), &configmap("a"))
        .await
        .unwrap();
}

#[tokio::test]
async fn only_the_ca_bundle_is_trusted() {
    let hook = webhook(SERVICE_DNS, allow()).await;
    let stranger = ServingCert::generate(&[SERVICE_DNS.to_owned()], SystemClock.now()).unwrap();
    let wrong_ca = base64::engine::general_purpose::STANDARD.encode(stranger.ca_pem.unwrap());
    let server = server_for(&hook).await;
    configure(&server, "Validating", service_config(&wrong_ca), "Fail").await;
    let cms: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    let err = api_error(
        cms.create(&PostParams::default(), &configmap("a"))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 500, "{err:?}");
    assert!(hook.reviews.lock().unwrap().is_empty());
}

#[tokio::test]
async fn user_info_comes_from_impersonation() {
    let hook = webhook(SERVICE_DNS, allow()).await;
    let server = server_for(&hook).await;
    configure(
        &server,
        "Validating",
        service_config(&hook.ca_bundle),
        "Fail",
    )
    .await;
    let mut config = server.config();
    config.auth_info.impersonate = Some("alice".into());
    config.auth_info.impersonate_groups = Some(vec!["devs".into()]);
    let alice = kube::Client::try_from(config).unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(alice, "default");
    cms.create(&PostParams::default(), &configmap("hers"))
        .await
        .unwrap();
    // `kubectl --as-user-extra amr=mfa` sends Impersonate-Extra-amr.
    let request = http::Request::post("/api/v1/namespaces/default/configmaps")
        .header("Impersonate-User", "carol")
        .header("Impersonate-Extra-amr", "mfa")
        .header("Content-Type", "application/json")
        .body(serde_json::to_vec(&configmap("carols")).unwrap())
        .unwrap();
    server.client().request::<ConfigMap>(request).await.unwrap();
    // Without impersonation: the server's identity.
    let cms: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    cms.create(&PostParams::default(), &configmap("admins"))
        .await
        .unwrap();
    let reviews = hook.reviews.lock().unwrap().clone();
    assert_eq!(
        reviews[0]["request"]["userInfo"],
        json!({"username": "alice", "groups": ["devs", "system:authenticated"]})
    );
    assert_eq!(
        reviews[1]["request"]["userInfo"],
        json!({"username": "carol", "groups": ["system:authenticated"], "extra": {"amr": ["mfa"]}})
    );
    assert_eq!(
        reviews[2]["request"]["userInfo"]["username"],
        "kubernetes-admin"
    );
}

#[tokio::test]
async fn writes_the_rules_do_not_match_are_not_sent() {
    let hook = webhook(SERVICE_DNS, Arc::new(|_| json!({"allowed": false}))).await;
    let server = server_for(&hook).await;
    configure(
        &server,
        "Validating",
        service_config(&hook.ca_bundle),
        "Fail",
    )
    .await;
    // Secrets are not in the rules; DELETE is not among the operations.
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(server.client(), "default");
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "s"}})).unwrap(),
        )
        .await
        .unwrap();
    server
        .store_put(
            "configmaps",
            Some("default"),
            json!({"metadata": {"name": "old"}}),
        )
        .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    cms.delete("old", &Default::default()).await.unwrap();
    assert!(hook.reviews.lock().unwrap().is_empty());
}
