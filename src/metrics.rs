//! Prometheus metrics (DESIGN §9), and a directory wrapper that records every call.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::api::PimGroup;
use crate::api::common::Role;
use crate::core::membership::Member;
use crate::directory::{Directory, DirectoryError, GroupId};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectoryCallLabels {
    pub backend: String,
    pub operation: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectoryOperationLabels {
    pub backend: String,
    pub operation: String,
}

/// One HTTP request to Microsoft Graph: its method and the status answered (`error` when
/// none came).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GraphRequestLabels {
    pub method: String,
    pub status: String,
}

/// A rule of Entra's that refused a Graph request: Graph's error code, or `LastOwner`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GraphRefusalLabels {
    pub rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: String,
    pub category: String,
}

fn seconds_histogram() -> Histogram {
    // 5ms .. ~45min
    Histogram::new(exponential_buckets(0.005, 3.0, 14))
}

pub struct Metrics {
    registry: Registry,
    pub activations: Family<OutcomeLabels, Counter>,
    pub active_elevations: Gauge,
    pub approval_latency: Histogram,
    pub activation_latency: Histogram,
    pub revocation_lag: Histogram,
    pub revocations_overdue: Gauge,
    pub directory_calls: Family<DirectoryCallLabels, Counter>,
    pub directory_call_duration: Family<DirectoryOperationLabels, Histogram>,
    pub graph_requests: Family<GraphRequestLabels, Counter>,
    pub graph_request_duration: Histogram,
    pub graph_refusals: Family<GraphRefusalLabels, Counter>,
    pub reconcile_duration: Family<KindLabels, Histogram>,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("pim");
        let activations = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "activations",
            "Activation requests finished, by outcome (final phase)",
            activations.clone(),
        );
        let active_elevations = Gauge::default();
        registry.register(
            "active_elevations",
            "Requests in the Active phase",
            active_elevations.clone(),
        );
        let approval_latency = seconds_histogram();
        registry.register(
            "approval_latency_seconds",
            "Creation to the deciding approval",
            approval_latency.clone(),
        );
        let activation_latency = seconds_histogram();
        registry.register(
            "activation_latency_seconds",
            "Approval (or creation) to membership confirmed by the directory",
            activation_latency.clone(),
        );
        let revocation_lag = seconds_histogram();
        registry.register(
            "revocation_lag_seconds",
            "End of access to removal confirmed by the directory",
            revocation_lag.clone(),
        );
        let revocations_overdue = Gauge::default();
        registry.register(
            "revocations_overdue",
            "Members whose access ended but who are still in the directory",
            revocations_overdue.clone(),
        );
        let directory_calls = Family::<DirectoryCallLabels, Counter>::default();
        registry.register(
            "directory_calls",
            "Directory calls by backend, operation and outcome",
            directory_calls.clone(),
        );
        let directory_call_duration =
            Family::<DirectoryOperationLabels, Histogram>::new_with_constructor(
                seconds_histogram as fn() -> Histogram,
            );
        registry.register(
            "directory_call_duration_seconds",
            "Directory call latency",
            directory_call_duration.clone(),
        );
        let graph_requests = Family::<GraphRequestLabels, Counter>::default();
        registry.register(
            "graph_requests",
            "HTTP requests to Microsoft Graph (retries and throttled ones included), by method and status",
            graph_requests.clone(),
        );
        let graph_request_duration = seconds_histogram();
        registry.register(
            "graph_request_duration_seconds",
            "Microsoft Graph HTTP request latency, each try on its own",
            graph_request_duration.clone(),
        );
        let graph_refusals = Family::<GraphRefusalLabels, Counter>::default();
        registry.register(
            "graph_refusals",
            "Graph requests Entra refused by one of its rules (ActiveDurationTooShort, LastOwner, RoleAssignmentRequestPolicyValidationFailed), by rule",
            graph_refusals.clone(),
        );
        let reconcile_duration = Family::<KindLabels, Histogram>::new_with_constructor(
            seconds_histogram as fn() -> Histogram,
        );
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile duration by kind",
            reconcile_duration.clone(),
        );
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Reconcile errors by kind and category",
            reconcile_errors.clone(),
        );
        Metrics {
            registry,
            activations,
            active_elevations,
            approval_latency,
            activation_latency,
            revocation_lag,
            revocations_overdue,
            directory_calls,
            directory_call_duration,
            graph_requests,
            graph_request_duration,
            graph_refusals,
            reconcile_duration,
            reconcile_errors,
        }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    pub fn reconcile_error(&self, kind: &str, category: &str) {
        self.reconcile_errors
            .get_or_create(&ErrorLabels {
                kind: kind.to_owned(),
                category: category.to_owned(),
            })
            .inc();
    }

    pub fn observe_reconcile(&self, kind: &str, started: Instant) {
        self.reconcile_duration
            .get_or_create(&KindLabels {
                kind: kind.to_owned(),
            })
            .observe(started.elapsed().as_secs_f64());
    }
}

/// A directory that records each call's outcome and latency.
pub struct Instrumented {
    inner: Arc<dyn Directory>,
    metrics: Arc<Metrics>,
}

impl Instrumented {
    pub fn wrap(inner: Arc<dyn Directory>, metrics: Arc<Metrics>) -> Arc<dyn Directory> {
        Arc::new(Instrumented { inner, metrics })
    }

    fn record<T>(&self, operation: &str, started: Instant, result: &Result<T, DirectoryError>) {
        let backend = self.inner.backend().to_owned();
        let outcome = match result {
            Ok(_) => "success",
            Err(e) if e.is_transient() => "transient_error",
            Err(_) => "permanent_error",
        };
        self.metrics
            .directory_calls
            .get_or_create(&DirectoryCallLabels {
                backend: backend.clone(),
                operation: operation.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
        self.metrics
            .directory_call_duration
            .get_or_create(&DirectoryOperationLabels {
                backend,
                operation: operation.to_owned(),
            })
            .observe(started.elapsed().as_secs_f64());
    }
}

#[async_trait]
impl Directory for Instrumented {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn ensure_group(&self, group: &PimGroup) -> Result<GroupId, DirectoryError> {
        let started = Instant::now();
        let result = self.inner.ensure_group(group).await;
        self.record("ensure_group", started, &result);
        result
    }

    async fn list_members(
        &self,
        group: &GroupId,
        role: Role,
    ) -> Result<BTreeSet<Member>, DirectoryError> {
        let started = Instant::now();
        let result = self.inner.list_members(group, role).await;
        self.record("list_members", started, &result);
        result
    }

    async fn add_member(
        &self,
        group: &GroupId,
        role: Role,
        member: &Member,
    ) -> Result<(), DirectoryError> {
        let started = Instant::now();
        let result = self.inner.add_member(group, role, member).await;
        self.record("add_member", started, &result);
        result
    }

    async fn remove_member(
        &self,
        group: &GroupId,
        role: Role,
        member: &Member,
    ) -> Result<(), DirectoryError> {
        let started = Instant::now();
        let result = self.inner.remove_member(group, role, member).await;
        self.record("remove_member", started, &result);
        result
    }

    async fn add_member_until(
        &self,
        group: &GroupId,
        role: Role,
        member: &Member,
        until: Option<jiff::Timestamp>,
    ) -> Result<Option<crate::directory::DirectoryReceipt>, DirectoryError> {
        let started = Instant::now();
        let result = self
            .inner
            .add_member_until(group, role, member, until)
            .await;
        self.record("add_member", started, &result);
        result
    }

    fn enforces_ends(&self) -> bool {
        self.inner.enforces_ends()
    }

    fn keeps_last_owner(&self) -> bool {
        self.inner.keeps_last_owner()
    }

    fn needs_new_end(
        &self,
        group: &GroupId,
        role: Role,
        member: &Member,
        until: Option<jiff::Timestamp>,
    ) -> bool {
        self.inner.needs_new_end(group, role, member, until)
    }

    fn listed_as(&self, member: &Member) -> Option<Member> {
        self.inner.listed_as(member)
    }

    fn graph_mailer(&self) -> Option<crate::directory::entra::mail::GraphMailer> {
        self.inner.graph_mailer()
    }

    async fn principal_id(&self, member: &Member) -> Result<Option<String>, DirectoryError> {
        let started = Instant::now();
        let result = self.inner.principal_id(member).await;
        self.record("principal_id", started, &result);
        result
    }

    async fn is_member_of(
        &self,
        principal: &str,
        group: &str,
    ) -> Result<Option<bool>, DirectoryError> {
        let started = Instant::now();
        let result = self.inner.is_member_of(principal, group).await;
        self.record("is_member_of", started, &result);
        result
    }
}
