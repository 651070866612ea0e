//! The admission webhook under load (issue 21, item 5): `benches/admission.rs` runs it at full
//! size and prints the figures; `tests/it/admission_smoke.rs` runs it small, for correctness.
//!
//! The webhook is the operator's own: [`pim_operator::webhook::start`] with a certificate in
//! files, its caches watching a fake API server that holds the objects (created through the API,
//! so they carry what the server adds: uid, resourceVersion, managedFields, status). A client
//! sends AdmissionReviews over HTTPS at a fixed rate (open loop: each review is sent at its
//! planned instant whether or not earlier ones were answered, and its latency runs from that
//! instant, so queueing in the webhook and in the client counts).
//!
//! Three Tokio runtimes, each with named threads, keep the CPU apart: `pim-webhook` (the
//! webhook, its caches' watches and their kube client), `pim-client` (the harness's HTTPS client)
//! and `pim-apiserver` (the fake API server, idle during the run). CPU seconds are read per
//! thread from `/proc/self/task/*/stat`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde::Serialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::admission::{patched, user, wire};
use crate::api::access_policy::{AccessPolicySpec, ActivationSettings, ApprovalSettings};
use crate::api::activation_request::{
    ActivationRequestSpec, ActivationRequestStatus, Phase, Requester, Transition,
};
use crate::api::common::PrincipalRef;
use crate::api::eligible_assignment::{EligibleAssignmentSpec, Schedule};
use crate::api::pim_group::{DirectoryGroupRef, GroupRoles, PimGroupSpec, RoleSettings};
use crate::api::{AccessPolicy, ActivationRequest, EligibleAssignment, PimGroup};
use crate::fake_apiserver::FakeApiServer;
use crate::loadtest::Percentiles;
use pim_operator::attestation::Keyring;
use pim_operator::clock::SystemClock;
use pim_operator::core::identity::{CaseInsensitive, Principals, UsernameMapping};
use pim_operator::webhook::{self, WebhookConfig};

/// The directory every PimGroup names; Kubernetes users `oidc:NAME` are `NAME@example.com` in it.
const DIRECTORY: &str = "corp";
const DOMAIN: &str = "@example.com";
/// The operator's username (its service account), the only one that moves its finalizer.
const OPERATOR: &str = "system:serviceaccount:pim-system:pim-operator";
/// How long the webhook's stamps stay valid: validation reviews prepared in the warm-up must
/// still be fresh at the end of the run (`MAX_STAMP_SKEW` and an approval's freshness, 5 min).
pub const MAX_DURATION: Duration = Duration::from_secs(240);
/// How long the API server waits for a webhook (its default `timeoutSeconds`).
const TIMEOUT: Duration = Duration::from_secs(10);

/// What to run. Defaults are issue 21's figures.
#[derive(Debug, Clone)]
pub struct Options {
    /// Reviews per second.
    pub rate: f64,
    pub duration: Duration,
    /// ActivationRequests and EligibleAssignments in the webhook's caches.
    pub requests: usize,
    pub assignments: usize,
    /// PimGroups, each with its own AccessPolicy.
    pub groups: usize,
    /// Worker threads of the webhook's runtime: the operator's `#[tokio::main]` has one per core.
    pub webhook_threads: usize,
    pub client_threads: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            rate: 500.0,
            duration: Duration::from_secs(20),
            requests: 10_000,
            assignments: 12_000,
            groups: 500,
            webhook_threads: std::thread::available_parallelism().map_or(2, usize::from),
            client_threads: 1,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    Setup(String),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

fn setup(what: impl std::fmt::Display) -> LoadError {
    LoadError::Setup(what.to_string())
}

/// The figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub requests: usize,
    pub assignments: usize,
    pub groups: usize,
    /// Requests the webhook counts (those not finished).
    pub open_requests: usize,
    pub rate: f64,
    pub duration_seconds: f64,
    pub webhook_threads: usize,
    pub client_threads: usize,
    /// Seeding the API server, until the webhook answered its first review.
    pub setup_seconds: f64,
    pub sent: usize,
    /// Reviews the webhook answered (over HTTP, as expected or not).
    pub answered: usize,
    /// Reviews answered per second, first planned send to last answer.
    pub achieved_rate: f64,
    pub allowed: usize,
    /// Refusals the harness asked for (a create by someone not eligible, a self-approval),
    /// each with the reason it expected.
    pub denied_as_expected: usize,
    /// Transport errors, timeouts, non-200 answers, and answers other than expected.
    pub errors: usize,
    pub error_samples: Vec<String>,
    pub overall: Percentiles,
    pub by_operation: BTreeMap<String, Percentiles>,
    /// The latest a review left the client after its planned instant (client saturation).
    pub max_send_lag_ms: f64,
    /// CPU seconds in the run, by runtime, and of the whole process.
    pub webhook_cpu_seconds: f64,
    pub client_cpu_seconds: f64,
    pub apiserver_cpu_seconds: f64,
    pub process_cpu_seconds: f64,
    /// Per 1,000 reviews answered.
    pub webhook_cpu_seconds_per_1k_reviews: f64,
}

/// What the answer to a review must be.
#[derive(Debug, Clone)]
enum Expect {
    Allow,
    /// Refused, with this in the message.
    Deny(&'static str),
}

/// One prepared review.
#[derive(Debug, Clone)]
struct Review {
    path: &'static str,
    body: Arc<Vec<u8>>,
    expect: Expect,
}

/// The mix: operation name, its share of the reviews (of 100).
const MIX: &[(&str, u32)] = &[
    // `kubectl create` of a request: the mutating webhook stamps it, the validating one checks.
    ("ar-create/mutate", 28),
    ("ar-create/validate", 28),
    // A create by someone not eligible for the group, refused by the mutating webhook.
    ("ar-create-ineligible/mutate", 2),
    // `kubectl pim approve`: an UPDATE adding the approver's entry.
    ("approve/mutate", 9),
    ("approve/validate", 9),
    // The requester approving their own request, refused.
    ("self-approve/mutate", 2),
    // GitOps: the declarative kinds, validated only.
    ("ea-create/validate", 7),
    ("ea-update/validate", 7),
    ("policy-update/validate", 4),
    ("group-update/validate", 4),
];

fn principal(u: usize) -> String {
    format!("u{u}{DOMAIN}")
}

fn username(u: usize) -> String {
    format!("oidc:u{u}")
}

fn approver(j: usize) -> String {
    format!("oidc:approver-{j}")
}

fn approvers_group(j: usize) -> String {
    format!("g{j}-approvers")
}

/// Even groups need an approval.
fn needs_approval(j: usize) -> bool {
    j.is_multiple_of(2)
}

/// The sizes the world is built from.
#[derive(Debug, Clone, Copy)]
struct Shape {
    users: usize,
    groups: usize,
    assignments: usize,
}

impl Shape {
    fn of(options: &Options) -> Shape {
        let groups = options.groups.max(3);
        let assignments = options.assignments.max(2);
        Shape {
            users: (assignments / 2).max(1),
            groups,
            assignments,
        }
    }

    /// Assignment `i`: its user and group. Each user is eligible for two groups half the
    /// groups apart.
    fn assignment(&self, i: usize) -> (usize, usize) {
        let u = i % self.users;
        let slot = i / self.users;
        (u, (u + slot * (self.groups / 2)) % self.groups)
    }

    /// A group `u` is not eligible for.
    fn stranger_group(&self, u: usize) -> usize {
        (u + 1) % self.groups
    }
}

/// CPU seconds per runtime, from each thread's /proc/self/task/TID/stat.
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    webhook: f64,
    client: f64,
    apiserver: f64,
    process: f64,
}

impl Cpu {
    fn now() -> Cpu {
        let mut cpu = Cpu {
            process: crate::loadtest::cpu_seconds(),
            ..Cpu::default()
        };
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return cpu;
        };
        for task in tasks.flatten() {
            let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
                continue;
            };
            let Some((head, rest)) = stat.rsplit_once(')') else {
                continue;
            };
            let name = head.split_once('(').map_or("", |(_, n)| n);
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let ticks = |i: usize| {
                fields
                    .get(i)
                    .and_then(|f| f.parse::<f64>().ok())
                    .unwrap_or(0.0)
            };
            // utime and stime, in USER_HZ (100) ticks.
            let seconds = (ticks(11) + ticks(12)) / 100.0;
            if name.starts_with("pim-webhook") {
                cpu.webhook += seconds;
            } else if name.starts_with("pim-client") {
                cpu.client += seconds;
            } else if name.starts_with("pim-apiserver") {
                cpu.apiserver += seconds;
            }
        }
        cpu
    }

    fn since(self, before: Cpu) -> Cpu {
        Cpu {
            webhook: self.webhook - before.webhook,
            client: self.client - before.client,
            apiserver: self.apiserver - before.apiserver,
            process: self.process - before.process,
        }
    }
}

fn runtime(name: &str, threads: usize) -> Result<tokio::runtime::Runtime, LoadError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_name(name)
        .enable_all()
        .build()
        .map_err(setup)
}

/// Runs the harness: builds the world, warms up, sends the reviews, and reports.
pub fn run(options: Options) -> Result<Summary, LoadError> {
    if options.duration > MAX_DURATION {
        return Err(setup(format!(
            "the duration is at most {}s: the reviews prepared in the warm-up carry the webhook's stamps, valid for 5 minutes",
            MAX_DURATION.as_secs()
        )));
    }
    let started = Instant::now();
    let apiserver_rt = runtime("pim-apiserver", 1)?;
    let webhook_rt = runtime("pim-webhook", options.webhook_threads)?;
    let client_rt = runtime("pim-client", options.client_threads)?;
    let shape = Shape::of(&options);
    let keyring = Keyring::from_bytes(b"the admission bench's attestation key, forty bytes", &[])
        .map_err(setup)?;

    let server = apiserver_rt
        .block_on(FakeApiServer::start())
        .map_err(setup)?;
    let stored = apiserver_rt.block_on(seed(&server, &options, shape, &keyring))?;

    // The webhook, as `pim-operator run` starts it, with a certificate from files.
    let cert = {
        use pim_operator::clock::Clock;
        // Real time: the client checks the certificate against its own clock.
        webhook::certs::ServingCert::generate(&["localhost".to_owned()], SystemClock.now())
            .map_err(setup)?
    };
    let dir = tempfile::tempdir().map_err(setup)?;
    let (cert_file, key_file) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert_file, &cert.cert_pem).map_err(setup)?;
    std::fs::write(&key_file, &cert.key_pem).map_err(setup)?;
    let port = crate::local::free_port();
    let shutdown = CancellationToken::new();
    let config = server.config();
    let task = webhook_rt.block_on(start_webhook(
        config,
        port,
        cert_file,
        key_file,
        keyring,
        shutdown.clone(),
    ))?;
    let ca = cert
        .ca_pem
        .clone()
        .ok_or_else(|| setup("the generated certificate has no CA"))?;

    let result = client_rt.block_on(async {
        let client = Client::new(&ca, port)?;
        let pools = client.warm_up(&stored, shape).await?;
        let setup_seconds = started.elapsed().as_secs_f64();
        let handle = tokio::spawn(drive(client, pools, options.clone()));
        let mut summary = handle.await.map_err(setup)??;
        summary.setup_seconds = setup_seconds;
        Ok::<_, LoadError>(summary)
    });
    shutdown.cancel();
    let _ =
        webhook_rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), task).await });
    drop(server);
    client_rt.shutdown_background();
    webhook_rt.shutdown_background();
    apiserver_rt.shutdown_background();
    let mut summary = result?;
    summary.requests = options.requests;
    summary.assignments = options.assignments;
    summary.groups = shape.groups;
    summary.open_requests = stored.open_requests;
    summary.webhook_threads = options.webhook_threads;
    summary.client_threads = options.client_threads;
    Ok(summary)
}

async fn start_webhook(
    config: kube::Config,
    port: u16,
    cert_file: PathBuf,
    key_file: PathBuf,
    keyring: Keyring,
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinHandle<std::io::Result<()>>, LoadError> {
    // Built here so that its connections and watches run on the webhook's runtime.
    let client = kube::Client::try_from(config)?;
    let settings = WebhookConfig {
        enabled: true,
        address: format!("127.0.0.1:{port}"),
        cert_file: Some(cert_file),
        key_file: Some(key_file),
        ..WebhookConfig::default()
    };
    let mapping = UsernameMapping {
        strip_prefix: Some("oidc:".into()),
        append_domain: Some(DOMAIN.into()),
    };
    let inputs = webhook::Inputs {
        principals: Principals::new(
            [(DIRECTORY.to_owned(), mapping)].into(),
            CaseInsensitive::EmailLike,
        ),
        shortest_assignments: BTreeMap::new(),
        audit: None,
        metrics: None,
    };
    webhook::start(
        &client,
        &settings,
        inputs,
        Some(keyring),
        OPERATOR.to_owned(),
        "pim-system",
        Arc::new(SystemClock),
        shutdown,
    )
    .await
    .map_err(setup)?
    .ok_or_else(|| setup("the webhook did not start"))
}

/// The stored objects the reviews are made from, as the API server sends them in `oldObject`.
struct Stored {
    policies: Vec<Value>,
    groups: Vec<Value>,
    assignments: Vec<Value>,
    /// Requests waiting for approval, with their group's index and requester.
    pending: Vec<(Value, usize, usize)>,
    open_requests: usize,
}

/// Creates the policies, groups, assignments and requests through the API, and gives the
/// requests their status.
async fn seed(
    server: &FakeApiServer,
    options: &Options,
    shape: Shape,
    keyring: &Keyring,
) -> Result<Stored, LoadError> {
    const CONCURRENCY: usize = 32;
    let client = server.client();
    let pp = PostParams::default();
    // Real time: the webhook decides on the system clock, as in a cluster.
    let now = pim_operator::clock::Clock::now(&SystemClock);
    let policies = (0..shape.groups).map(|j| {
        let approval = needs_approval(j).then(|| ApprovalSettings {
            approvers: vec![PrincipalRef::group(approvers_group(j))],
            ..Default::default()
        });
        let spec = AccessPolicySpec {
            activation: ActivationSettings {
                max_duration: Some("8h".into()),
                require_justification: Some(true),
                require_mfa: Some(j % 4 == 0),
                approval,
                ..Default::default()
            },
            ..Default::default()
        };
        AccessPolicy::new(&format!("p{j}"), spec)
    });
    create_all(Api::all(client.clone()), policies, &pp, CONCURRENCY).await?;
    let groups = (0..shape.groups).map(|j| {
        let spec = PimGroupSpec {
            directory: DIRECTORY.into(),
            group: DirectoryGroupRef {
                id: Some(format!("g{j}-id")),
                ..Default::default()
            },
            roles: GroupRoles {
                member: RoleSettings {
                    policy: format!("p{j}"),
                },
                owner: None,
            },
            ..Default::default()
        };
        PimGroup::new(&format!("g{j}"), spec)
    });
    create_all(Api::all(client.clone()), groups, &pp, CONCURRENCY).await?;
    let assignments = (0..shape.assignments).map(|i| {
        let (u, j) = shape.assignment(i);
        let spec = EligibleAssignmentSpec {
            group: format!("g{j}"),
            principal: PrincipalRef::user(principal(u)),
            schedule: Schedule {
                duration: Some("180d".into()),
                ..Default::default()
            },
            justification: Some("on call rotation".into()),
            ..Default::default()
        };
        EligibleAssignment::new(&format!("a{i}"), spec)
    });
    create_all(Api::all(client.clone()), assignments, &pp, CONCURRENCY).await?;

    // Requests: each of an assignment's user in its group; in groups that need approval one
    // in four waits for it; one in ten has ended (kept for audit; the webhook skips them).
    let stamp = Time(now - SignedDuration::from_mins(10));
    let requests: Vec<(ActivationRequest, ActivationRequestStatus)> = (0..options.requests)
        .map(|k| {
            let (u, j) = shape.assignment(k % shape.assignments);
            let name = format!("r{k}");
            let mut spec = ActivationRequestSpec {
                group: format!("g{j}"),
                duration: Some("1h".into()),
                justification: Some(format!("incident INC-{k}")),
                principal: Some(principal(u)),
                requester: Some(Requester {
                    username: username(u),
                    uid: Some(format!("uid-{}", username(u))),
                    groups: vec!["system:authenticated".into()],
                    mfa: Some("amr=mfa".into()),
                    stamped_at: Some(stamp.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let signature = keyring.sign_requester(&name, &spec);
            if let Some(requester) = spec.requester.as_mut() {
                requester.attestation = signature;
            }
            let phase = if k % 10 == 9 {
                Phase::Expired
            } else if needs_approval(j) && k % 4 == 0 {
                Phase::PendingApproval
            } else {
                Phase::Active
            };
            (ActivationRequest::new(&name, spec), status(phase, now))
        })
        .collect();
    let open_requests = requests
        .iter()
        .filter(|(_, s)| !s.phase.is_some_and(Phase::is_terminal))
        .count();
    let api: Api<ActivationRequest> = Api::all(client.clone());
    futures::stream::iter(requests)
        .map(|(request, status)| {
            let api = api.clone();
            async move {
                let name = request.metadata.name.clone().unwrap_or_default();
                api.create(&PostParams::default(), &request).await?;
                let patch = Patch::Merge(json!({ "status": status }));
                api.patch_status(&name, &PatchParams::default(), &patch)
                    .await
                    .map(drop)
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;

    let stored = |plural: &str, prefix: &str, n: usize| -> Result<Vec<Value>, LoadError> {
        (0..n)
            .map(|i| {
                server
                    .store_get(plural, None, &format!("{prefix}{i}"))
                    .ok_or_else(|| setup(format!("{prefix}{i} is not stored")))
            })
            .collect()
    };
    let mut pending = Vec::new();
    for k in 0..options.requests {
        let (u, j) = shape.assignment(k % shape.assignments);
        if needs_approval(j) && k % 4 == 0 && k % 10 != 9 {
            let object = server
                .store_get("activationrequests", None, &format!("r{k}"))
                .ok_or_else(|| setup(format!("r{k} is not stored")))?;
            pending.push((object, j, u));
        }
    }
    Ok(Stored {
        policies: stored("accesspolicies", "p", shape.groups)?,
        groups: stored("pimgroups", "g", shape.groups)?,
        assignments: stored("eligibleassignments", "a", shape.assignments)?,
        pending,
        open_requests,
    })
}

/// A request's status in `phase`, as the controller writes it, with its history.
fn status(phase: Phase, now: Timestamp) -> ActivationRequestStatus {
    let at = |mins: i64| Time(now - SignedDuration::from_mins(mins));
    let step = |mins: i64, phase: Phase, reason: &str| Transition {
        time: at(mins),
        phase,
        reason: reason.into(),
        message: None,
    };
    let mut status = ActivationRequestStatus {
        phase: Some(phase),
        history: vec![step(10, Phase::Pending, "Created")],
        ..Default::default()
    };
    match phase {
        Phase::PendingApproval => {
            status.history.push(step(10, phase, "AwaitingApproval"));
        }
        _ => {
            let (start, end) = match phase {
                Phase::Expired => (at(130), at(70)),
                _ => (at(9), Time(now + SignedDuration::from_mins(51))),
            };
            status.approved_at = Some(start.clone());
            status.starts_at = Some(start.clone());
            status.activated_at = Some(start.clone());
            status.expires_at = Some(end.clone());
            status.history.push(step(9, Phase::Scheduled, "Approved"));
            status.history.push(step(9, Phase::Active, "Granted"));
            if phase == Phase::Expired {
                status.ended_at = Some(end);
                status.history.push(step(70, Phase::Expired, "Ended"));
            }
        }
    }
    status
}

async fn create_all<K>(
    api: Api<K>,
    objects: impl Iterator<Item = K>,
    pp: &PostParams,
    concurrency: usize,
) -> Result<(), LoadError>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    futures::stream::iter(objects)
        .map(|object| {
            let api = api.clone();
            async move { api.create(pp, &object).await.map(drop) }
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

/// The harness's HTTPS client of the webhook.
#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    base: String,
}

/// How one review went.
struct Outcome {
    operation: usize,
    answered: bool,
    latency: Duration,
    send_lag: Duration,
    result: Result<bool, String>,
}

impl Client {
    fn new(ca: &[u8], port: u16) -> Result<Client, LoadError> {
        let ca = reqwest::Certificate::from_pem(ca).map_err(setup)?;
        let http = reqwest::Client::builder()
            .add_root_certificate(ca)
            .tls_built_in_root_certs(false)
            // The certificate names localhost; the webhook listens on 127.0.0.1 only.
            .resolve("localhost", ([127, 0, 0, 1], port).into())
            .timeout(TIMEOUT)
            .pool_max_idle_per_host(256)
            .build()
            .map_err(setup)?;
        Ok(Client {
            http,
            base: format!("https://localhost:{port}"),
        })
    }

    /// Sends one review; the answer, once it is as `expect` says (`true` when allowed).
    async fn send(&self, review: &Review) -> Result<(bool, Value), Failure> {
        let unanswered = |message| Failure {
            answered: false,
            message,
        };
        let response = self
            .http
            .post(format!("{}{}", self.base, review.path))
            .header("content-type", "application/json")
            .body(review.body.as_ref().clone())
            .send()
            .await
            .map_err(|e| unanswered(failed(review.path, &e)))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| unanswered(failed(review.path, &e)))?;
        self.judge(review, status, &bytes)
            .map_err(|message| Failure {
                answered: true,
                message,
            })
    }

    /// Whether an answer is the one `review` expects.
    fn judge(
        &self,
        review: &Review,
        status: reqwest::StatusCode,
        bytes: &[u8],
    ) -> Result<(bool, Value), String> {
        if status != 200 {
            let text = String::from_utf8_lossy(bytes);
            return Err(format!("HTTP {status}: {text}"));
        }
        let answer: Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let response = &answer["response"];
        if response["uid"] != UID {
            return Err(format!("the answer's uid is {}", response["uid"]));
        }
        let allowed = response["allowed"].as_bool().ok_or("no response.allowed")?;
        let message = response["status"]["message"].as_str().unwrap_or_default();
        match (&review.expect, allowed) {
            (Expect::Allow, true) => Ok((true, answer)),
            (Expect::Allow, false) => Err(format!("refused: {message}")),
            (Expect::Deny(needle), false) if message.contains(needle) => Ok((false, answer)),
            (Expect::Deny(needle), _) => Err(format!(
                "expected a refusal with {needle:?}, got allowed={allowed}: {message}"
            )),
        }
    }

    /// Sends `review` until the caches are synced (503 until then); its answer.
    async fn first(&self, review: &Review) -> Result<Value, LoadError> {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            match self.send(review).await {
                Ok((_, answer)) => return Ok(answer),
                Err(e)
                    if Instant::now() < deadline
                        && (!e.answered || e.message.starts_with("HTTP 503")) =>
                {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(setup(format!("warm-up: {}", e.message))),
            }
        }
    }

    /// The mutating review of a request's create (no `old`) or update, and the validating review
    /// of what the mutating webhook made of it, as the API server chains them; each sent once.
    async fn chained(
        &self,
        caller: &Value,
        object: &Value,
        old: Option<&Value>,
    ) -> Result<(Review, Review), LoadError> {
        let operation = if old.is_some() { "UPDATE" } else { "CREATE" };
        let review = |path, object: &Value| Review {
            path,
            body: Arc::new(
                serde_json::to_vec(&wire(
                    "ActivationRequest",
                    "activationrequests",
                    operation,
                    caller,
                    object,
                    old,
                ))
                .unwrap_or_default(),
            ),
            expect: Expect::Allow,
        };
        let mutate = review("/mutate", object);
        let answer = self.first(&mutate).await?;
        let mutated = patched(object, &answer["response"]).map_err(setup)?;
        let validate = review("/validate", &mutated);
        self.first(&validate).await?;
        Ok((mutate, validate))
    }

    /// Prepares the reviews of every operation, and checks each once: the validating reviews
    /// are what the mutating webhook answered, as the API server chains them.
    async fn warm_up(&self, stored: &Stored, shape: Shape) -> Result<Vec<Vec<Review>>, LoadError> {
        const POOL: usize = 64;
        let mut pools: Vec<Vec<Review>> = vec![Vec::new(); MIX.len()];
        let review = |path, value: Value, expect| Review {
            path,
            body: Arc::new(serde_json::to_vec(&value).unwrap_or_default()),
            expect,
        };
        let request_object = |name: String, group: usize, n: usize| {
            json!({"apiVersion": "pim.dev/v1alpha1", "kind": "ActivationRequest",
                   "metadata": {"name": name},
                   "spec": {"group": format!("g{group}"), "duration": "30m",
                            "justification": format!("change CHG-{n}")}})
        };
        for n in 0..POOL * 2 {
            let (u, j) = shape.assignment((n * 7919) % shape.assignments);
            let caller = user(&username(u), &[], true);
            let object = request_object(format!("bench-r{n}"), j, n);
            let (mutate, validate) = self.chained(&caller, &object, None).await?;
            pools[0].push(mutate);
            pools[1].push(validate);
        }
        for n in 0..POOL / 4 {
            let u = (n * 31) % shape.users;
            let caller = user(&username(u), &[], true);
            let object = request_object(format!("bench-x{n}"), shape.stranger_group(u), n);
            let denied = review(
                "/mutate",
                wire(
                    "ActivationRequest",
                    "activationrequests",
                    "CREATE",
                    &caller,
                    &object,
                    None,
                ),
                Expect::Deny("holds no eligible assignment"),
            );
            self.first(&denied).await?;
            pools[2].push(denied);
        }
        if stored.pending.is_empty() {
            return Err(setup("no request waits for approval: give more requests"));
        }
        for (n, (old, j, u)) in stored.pending.iter().take(POOL).enumerate() {
            let caller = user(&approver(*j), &[&approvers_group(*j)], true);
            let new = with_approval(old, &approver(*j));
            let (mutate, validate) = self.chained(&caller, &new, Some(old)).await?;
            pools[3].push(mutate);
            pools[4].push(validate);
            if n % 4 == 0 {
                let requester = user(&username(*u), &[&approvers_group(*j)], true);
                let own = with_approval(old, &username(*u));
                let denied = review(
                    "/mutate",
                    wire(
                        "ActivationRequest",
                        "activationrequests",
                        "UPDATE",
                        &requester,
                        &own,
                        Some(old),
                    ),
                    Expect::Deny("your own request"),
                );
                self.first(&denied).await?;
                pools[5].push(denied);
            }
        }
        let admin = user("oidc:platform-gitops", &["platform"], false);
        let validated = |kind, plural, op, object: &Value, old: Option<&Value>| {
            review(
                "/validate",
                wire(kind, plural, op, &admin, object, old),
                Expect::Allow,
            )
        };
        for n in 0..POOL {
            let (u, j) = shape.assignment((n * 104_729) % shape.assignments);
            let spec = EligibleAssignmentSpec {
                group: format!("g{}", (j + 1) % shape.groups),
                principal: PrincipalRef::user(principal(u)),
                schedule: Schedule {
                    duration: Some("90d".into()),
                    ..Default::default()
                },
                justification: Some(format!("joins team {n}")),
                ..Default::default()
            };
            let object =
                serde_json::to_value(EligibleAssignment::new(&format!("bench-ea{n}"), spec))
                    .map_err(setup)?;
            pools[6].push(validated(
                "EligibleAssignment",
                "eligibleassignments",
                "CREATE",
                &object,
                None,
            ));
            let old = pick(&stored.assignments, n * 7919)?;
            let mut new = old.clone();
            new["spec"]["justification"] = json!(format!("rotation {n}"));
            pools[7].push(validated(
                "EligibleAssignment",
                "eligibleassignments",
                "UPDATE",
                &new,
                Some(old),
            ));
            let old = pick(&stored.policies, n * 13)?;
            let mut new = old.clone();
            new["spec"]["activation"]["maxDuration"] = json!("4h");
            pools[8].push(validated(
                "AccessPolicy",
                "accesspolicies",
                "UPDATE",
                &new,
                Some(old),
            ));
            let old = pick(&stored.groups, n * 17)?;
            let mut new = old.clone();
            new["spec"]["protectedMembers"] = json!([{"user": format!("breakglass-{n}{DOMAIN}")}]);
            pools[9].push(validated(
                "PimGroup",
                "pimgroups",
                "UPDATE",
                &new,
                Some(old),
            ));
        }
        for pool in &pools[6..] {
            for review in pool {
                self.first(review).await?;
            }
        }
        Ok(pools)
    }
}

/// A review not answered as expected.
struct Failure {
    /// Whether the webhook answered at all (a wrong answer, not a timeout).
    answered: bool,
    message: String,
}

/// Why a review got no answer, with the causes reqwest's message leaves out.
fn failed(path: &str, error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return format!("{path}: no answer within {}s", TIMEOUT.as_secs());
    }
    let mut text = format!("{path}: {error}");
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// Every review carries this uid (the webhook echoes it).
const UID: &str = "705ab4f5-6393-11e8-b7cc-42010a800002";

fn pick(objects: &[Value], i: usize) -> Result<&Value, LoadError> {
    objects
        .get(i % objects.len().max(1))
        .ok_or_else(|| setup("no stored object to update"))
}

fn with_approval(object: &Value, approver: &str) -> Value {
    let mut new = object.clone();
    let entry = json!({"approver": approver, "decision": "Approve", "reason": "checked"});
    match new["spec"]["approvals"].as_array_mut() {
        Some(list) => list.push(entry),
        None => new["spec"]["approvals"] = json!([entry]),
    }
    new
}

/// A small deterministic generator (xorshift64*), so that runs send the same sequence.
struct Sequence(u64);

impl Sequence {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Sends the reviews at the planned instants, then waits for every answer.
async fn drive(
    client: Client,
    pools: Vec<Vec<Review>>,
    options: Options,
) -> Result<Summary, LoadError> {
    let total = (options.rate * options.duration.as_secs_f64()).round() as usize;
    let weights: u32 = MIX.iter().map(|(_, w)| w).sum();
    let mut sequence = Sequence(0x9e37_79b9_7f4a_7c15);
    let interval = Duration::from_secs_f64(1.0 / options.rate.max(0.001));
    let cpu_before = Cpu::now();
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let mut roll = (sequence.next() % u64::from(weights)) as u32;
        let operation = MIX
            .iter()
            .position(|(_, w)| {
                let hit = roll < *w;
                roll = roll.saturating_sub(*w);
                hit
            })
            .unwrap_or(0);
        let pool = &pools[operation];
        let Some(review) = pool
            .get((sequence.next() as usize) % pool.len().max(1))
            .cloned()
        else {
            return Err(setup(format!("no reviews for {}", MIX[operation].0)));
        };
        let planned = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(planned).await;
        let client = client.clone();
        let planned = planned.into_std();
        tasks.push(tokio::spawn(async move {
            let send_lag = planned.elapsed();
            let result = client.send(&review).await;
            Outcome {
                operation,
                answered: result.as_ref().map_or_else(|e| e.answered, |_| true),
                latency: planned.elapsed(),
                send_lag,
                result: result.map(|(allowed, _)| allowed).map_err(|e| e.message),
            }
        }));
    }
    let mut outcomes = Vec::with_capacity(total);
    for task in tasks {
        outcomes.push(task.await.map_err(setup)?);
    }
    let wall = start.into_std().elapsed();
    let cpu = Cpu::now().since(cpu_before);

    let mut summary = Summary {
        rate: options.rate,
        duration_seconds: options.duration.as_secs_f64(),
        sent: total,
        achieved_rate: total as f64 / wall.as_secs_f64().max(1e-9),
        webhook_cpu_seconds: cpu.webhook,
        client_cpu_seconds: cpu.client,
        apiserver_cpu_seconds: cpu.apiserver,
        process_cpu_seconds: cpu.process,
        ..Summary::default()
    };
    let mut all = Vec::with_capacity(total);
    let mut by_operation: Vec<Vec<Duration>> = vec![Vec::new(); MIX.len()];
    for outcome in outcomes {
        summary.max_send_lag_ms = summary
            .max_send_lag_ms
            .max(outcome.send_lag.as_secs_f64() * 1000.0);
        summary.answered += usize::from(outcome.answered);
        match outcome.result {
            Ok(true) => summary.allowed += 1,
            Ok(false) => summary.denied_as_expected += 1,
            Err(e) => {
                summary.errors += 1;
                if summary.error_samples.len() < 5 {
                    summary
                        .error_samples
                        .push(format!("{}: {e}", MIX[outcome.operation].0));
                }
            }
        }
        all.push(outcome.latency);
        by_operation[outcome.operation].push(outcome.latency);
    }
    summary.webhook_cpu_seconds_per_1k_reviews =
        cpu.webhook * 1000.0 / (summary.answered.max(1) as f64);
    summary.overall = Percentiles::of(all);
    summary.by_operation = MIX
        .iter()
        .zip(by_operation)
        .map(|((name, _), samples)| ((*name).to_owned(), Percentiles::of(samples)))
        .collect();
    Ok(summary)
}

impl Summary {
    /// The figures as a table, for people.
    pub fn table(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "caches: {} requests ({} open), {} assignments, {} groups and policies",
            self.requests, self.open_requests, self.assignments, self.groups
        );
        let _ = writeln!(
            out,
            "load: {:.0} reviews/s asked for {:.0}s, {:.1}/s achieved; {} sent, {} answered, {} allowed, {} denied as expected, {} errors",
            self.rate,
            self.duration_seconds,
            self.achieved_rate,
            self.sent,
            self.answered,
            self.allowed,
            self.denied_as_expected,
            self.errors
        );
        let _ = writeln!(
            out,
            "{:<30} {:>6} {:>8} {:>8} {:>8} {:>8}",
            "operation", "n", "p50 ms", "p95 ms", "p99 ms", "max ms"
        );
        let row = |out: &mut String, name: &str, p: &Percentiles| {
            let _ = writeln!(
                out,
                "{:<30} {:>6} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
                name, p.count, p.p50_ms, p.p95_ms, p.p99_ms, p.max_ms
            );
        };
        for (name, p) in &self.by_operation {
            row(&mut out, name, p);
        }
        row(&mut out, "overall", &self.overall);
        let _ = writeln!(
            out,
            "CPU seconds in the run: webhook {:.2} ({:.3} per 1,000 reviews answered, {} threads), client {:.2} ({} threads), fake API server {:.2}, whole process {:.2}",
            self.webhook_cpu_seconds,
            self.webhook_cpu_seconds_per_1k_reviews,
            self.webhook_threads,
            self.client_cpu_seconds,
            self.client_threads,
            self.apiserver_cpu_seconds,
            self.process_cpu_seconds
        );
        let _ = writeln!(
            out,
            "latest send after its planned instant: {:.2} ms",
            self.max_send_lag_ms
        );
        for sample in &self.error_samples {
            let _ = writeln!(out, "error: {sample}");
        }
        out
    }
}
