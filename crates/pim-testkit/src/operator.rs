//! The operator as the notification, audit and retention tests run it: the real kube client and
//! the real controllers against the in-process fake API server, on a manual clock, with the
//! memory directory (as tests/controller.rs), plus an HTTP receiver for webhooks and sinks.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use crate::fake_apiserver::FakeApiServer;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use pim_operator::api::access_policy::{AccessPolicySpec, ActivationSettings, ApprovalSettings};
use pim_operator::api::activation_request::{
    ActivationRequestSpec, Approval, Decision as Vote, FINALIZER, Phase, Requester,
};
use pim_operator::api::common::PrincipalRef;
use pim_operator::api::delivery::Delivery;
use pim_operator::api::eligible_assignment::{EligibleAssignmentSpec, Schedule};
use pim_operator::api::pim_group::{
    DirectoryGroupRef, GroupRoles, PimGroupSpec, RoleSettings, StandingAccess,
};
use pim_operator::api::{AccessPolicy, ActivationRequest, EligibleAssignment, PimGroup};
use pim_operator::clock::{Clock, ManualClock};
use pim_operator::config::Config;
use pim_operator::controller::{self, Dependencies, Health};
use pim_operator::directory::Directory;
use pim_operator::directory::memory::MemoryDirectory;
use pim_operator::engine::TrustAsWritten;
use pim_operator::metrics::Metrics;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const T0: &str = "2026-03-02T09:00:00Z";
pub use crate::{WAIT, eventually};

struct Operator {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// A request as the admission webhook would leave it: requester and principal stamped, and the
/// operator's finalizer on (the mutating webhook adds it at create).
pub fn admitted_request(
    name: &str,
    group: &str,
    user: &str,
    duration: &str,
    edit: impl FnOnce(&mut ActivationRequestSpec),
) -> ActivationRequest {
    let mut spec = ActivationRequestSpec {
        group: group.into(),
        duration: Some(duration.into()),
        justification: Some("incident 42".into()),
        requester: Some(Requester {
            username: user.into(),
            ..Default::default()
        }),
        principal: Some(user.into()),
        ..Default::default()
    };
    edit(&mut spec);
    let mut request = ActivationRequest::new(name, spec);
    request.metadata.finalizers = Some(vec![FINALIZER.to_owned()]);
    request
}

pub struct Harness {
    pub server: FakeApiServer,
    pub client: Client,
    pub clock: Arc<ManualClock>,
    pub directory: Arc<MemoryDirectory>,
    /// The operator's config beyond the basics (notifications, audit).
    pub config: String,
    /// The metrics of the operator run by [`Harness::start`], across restarts.
    pub metrics: Arc<Metrics>,
    operator: Option<Operator>,
}

impl Harness {
    pub async fn new(config: &str) -> Harness {
        let server = FakeApiServer::start().await.unwrap();
        let clock = Arc::new(ManualClock::new(T0.parse().unwrap()));
        server.set_clock(clock.clone());
        let client = server.client();
        Harness {
            server,
            client,
            clock,
            directory: Arc::new(MemoryDirectory::new()),
            config: config.to_owned(),
            metrics: Arc::new(Metrics::new()),
            operator: None,
        }
    }

    pub fn settings(&self) -> pim_operator::config::Settings {
        let text = format!(
            "resyncInterval: 1h\nconcurrency: 4\nleaderElection: {{enabled: false}}\nnamespace: pim-system\n{}",
            self.config
        );
        Config::parse(&text, "test").unwrap()
    }

    pub fn start(&mut self) {
        assert!(self.operator.is_none(), "already running");
        let metrics = self.metrics.clone();
        let settings = self.settings();
        // The configured directories as the operator builds them (an entra connection for the
        // Graph mail channel, say), and the test's memory directory.
        let mut directories =
            pim_operator::operator::directories(&settings, &self.client, &metrics);
        let memory: Arc<dyn Directory> = self.directory.clone();
        directories.insert("memory", memory);
        let deps = Dependencies {
            client: self.client.clone(),
            settings,
            directories,
            attestor: Arc::new(TrustAsWritten),
            clock: self.clock.clone(),
            metrics,
            health: Arc::new(Health::default()),
        };
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            controller::run(deps, token).await.unwrap();
        });
        self.operator = Some(Operator { stop, task });
    }

    /// Stops the operator the way SIGTERM or a lost lease does, and waits until it is gone.
    pub async fn stop(&mut self) {
        if let Some(op) = self.operator.take() {
            op.stop.cancel();
            tokio::time::timeout(WAIT, op.task)
                .await
                .expect("the operator stops")
                .unwrap();
        }
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    pub fn advance(&self, minutes: i64) {
        self.clock.advance(SignedDuration::from_mins(minutes));
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<DynamicType = (), Scope = kube::core::ClusterResourceScope>,
    {
        Api::all(self.client.clone())
    }

    /// A policy: `max` long activations, approval by `approvers` (users) when not empty.
    pub async fn policy(
        &self,
        name: &str,
        max: &str,
        approvers: &[&str],
        edit: impl FnOnce(&mut AccessPolicySpec),
    ) {
        let approval = (!approvers.is_empty()).then(|| ApprovalSettings {
            approvers: approvers.iter().map(|a| PrincipalRef::user(*a)).collect(),
            min_approvals: Some(1),
            timeout: Some("24h".into()),
            allow_self_approval: None,
            require_mfa: None,
            sign_in: Default::default(),
        });
        let mut spec = AccessPolicySpec {
            activation: ActivationSettings {
                max_duration: Some(max.into()),
                approval,
                ..Default::default()
            },
            ..Default::default()
        };
        edit(&mut spec);
        self.api::<AccessPolicy>()
            .create(&PostParams::default(), &AccessPolicy::new(name, spec))
            .await
            .unwrap();
    }

    /// A PimGroup `name` (directory id `<name>-id` in the memory directory) under `policy`,
    /// removing members no grant explains.
    pub async fn group(&self, name: &str, policy: &str) {
        self.group_with(name, policy, |_| {}).await;
    }

    /// [`Harness::group`], edited by `edit` before it is created.
    pub async fn group_with(&self, name: &str, policy: &str, edit: impl FnOnce(&mut PimGroupSpec)) {
        let mut spec = PimGroupSpec {
            directory: "memory".into(),
            group: DirectoryGroupRef {
                id: Some(format!("{name}-id")),
                ..Default::default()
            },
            roles: GroupRoles {
                member: RoleSettings {
                    policy: policy.into(),
                },
                owner: None,
            },
            standing_access: StandingAccess::Remove,
            ..Default::default()
        };
        edit(&mut spec);
        self.api::<PimGroup>()
            .create(&PostParams::default(), &PimGroup::new(name, spec))
            .await
            .unwrap();
    }

    pub async fn assignment(&self, name: &str, group: &str, user: &str) {
        let spec = EligibleAssignmentSpec {
            group: group.into(),
            principal: PrincipalRef::user(user),
            schedule: Schedule {
                duration: Some("90d".into()),
                ..Default::default()
            },
            justification: Some("on call".into()),
            ..Default::default()
        };
        self.api::<EligibleAssignment>()
            .create(&PostParams::default(), &EligibleAssignment::new(name, spec))
            .await
            .unwrap();
    }

    /// A request as the webhook would leave it ([`admitted_request`]).
    pub async fn request(
        &self,
        name: &str,
        group: &str,
        user: &str,
        duration: &str,
        edit: impl FnOnce(&mut ActivationRequestSpec),
    ) {
        self.api::<ActivationRequest>()
            .create(
                &PostParams::default(),
                &admitted_request(name, group, user, duration, edit),
            )
            .await
            .unwrap();
    }

    /// An approver's own entry, by server-side apply under their own field manager.
    pub async fn vote(
        &self,
        request: &str,
        group: &str,
        approver: &str,
        decision: Vote,
        reason: &str,
    ) {
        let patch = serde_json::json!({
            "apiVersion": "pim.dev/v1alpha1", "kind": "ActivationRequest",
            "metadata": {"name": request},
            "spec": {"group": group, "approvals": [Approval {
                approver: approver.into(), decision, reason: Some(reason.into()), time: Some(Time(self.now())),
                ..Default::default()
            }]},
        });
        let params = PatchParams::apply(approver).force();
        self.api::<ActivationRequest>()
            .patch(request, &params, &Patch::Apply(&patch))
            .await
            .unwrap();
    }

    pub async fn get(&self, name: &str) -> ActivationRequest {
        self.api::<ActivationRequest>().get(name).await.unwrap()
    }

    pub async fn exists(&self, name: &str) -> bool {
        self.api::<ActivationRequest>()
            .get_opt(name)
            .await
            .unwrap()
            .is_some()
    }

    pub async fn phase(&self, name: &str) -> Option<Phase> {
        self.get(name).await.status.and_then(|s| s.phase)
    }

    pub async fn wait_phase(&self, name: &str, phase: Phase) {
        eventually(&format!("{name} reaches {phase}"), || async {
            self.phase(name).await == Some(phase)
        })
        .await;
    }

    pub async fn delivery(&self, name: &str) -> Delivery {
        self.get(name)
            .await
            .status
            .and_then(|s| s.delivery)
            .unwrap_or_default()
    }

    /// Waits until the request's whole history is recorded as audited.
    pub async fn wait_audited(&self, name: &str) {
        eventually(&format!("{name} fully audited"), || async {
            let status = self.get(name).await.status.unwrap_or_default();
            status.delivery.as_ref().map_or(0, |d| d.audited()) == status.history.len()
                && !status.history.is_empty()
        })
        .await;
    }
}

/// One HTTP request the receiver got.
#[derive(Debug, Clone)]
pub struct Hit {
    pub path: String,
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl Hit {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

#[derive(Default)]
struct ReceiverState {
    hits: Vec<Hit>,
    /// The status code to answer with; 200 by default.
    status: Option<u16>,
}

/// An HTTP server on 127.0.0.1 that records every POST and answers 200 (or what it is told).
#[derive(Clone)]
pub struct Receiver {
    state: Arc<Mutex<ReceiverState>>,
    pub addr: SocketAddr,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let state = Arc::new(Mutex::new(ReceiverState::default()));
        let shared = state.clone();
        let app = axum::Router::new().fallback(
            move |uri: axum::http::Uri, headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let state = shared.clone();
                async move {
                    let mut state = state.lock().unwrap();
                    state.hits.push(Hit {
                        path: uri.path().to_owned(),
                        headers: headers
                            .iter()
                            .map(|(k, v)| {
                                (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned())
                            })
                            .collect(),
                        body: body.to_vec(),
                    });
                    axum::http::StatusCode::from_u16(state.status.unwrap_or(200)).unwrap()
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver { state, addr }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn hits(&self, path: &str) -> Vec<Hit> {
        self.state
            .lock()
            .unwrap()
            .hits
            .iter()
            .filter(|h| h.path == path)
            .cloned()
            .collect()
    }

    pub fn answer(&self, status: u16) {
        self.state.lock().unwrap().status = Some(status);
    }
}
