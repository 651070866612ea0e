//! Prometheus metrics (DESIGN §9). Directory calls are recorded by `directory::instrumented`.

use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

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

/// One admission review: which webhook (`mutate`, `validate`) and how it was answered
/// (`allowed`, `denied`, `malformed`: not an AdmissionReview, `unavailable`: the caches were not
/// listed in time).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReviewLabels {
    pub stage: String,
    pub outcome: String,
}

/// A policy alert, by its condition type (`ActivatedTooOften`, `ActivatedWithoutApproval`,
/// `Stale`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlertLabels {
    pub alert: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupLabels {
    pub group: String,
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
    pub leader: Gauge,
    pub webhook_reviews: Family<ReviewLabels, Counter>,
    pub members_outside_pim: Family<GroupLabels, Gauge>,
    pub standing_access_removals: Family<GroupLabels, Counter>,
    pub alerts_raised: Family<AlertLabels, Counter>,
    pub stale_assignments: Gauge,
    pub review_instances_completed: Counter,
    pub review_denials: Counter,
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
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the leader lease and runs the controllers, else 0",
            leader.clone(),
        );
        let webhook_reviews = Family::<ReviewLabels, Counter>::default();
        registry.register(
            "webhook_reviews",
            "Admission reviews answered, by webhook (mutate, validate) and outcome (allowed, denied, malformed, unavailable)",
            webhook_reviews.clone(),
        );
        let members_outside_pim = Family::<GroupLabels, Gauge>::default();
        registry.register(
            "members_outside_pim",
            "Members of a PimGroup's directory group that nothing of pim-operator explains (standing access), by PimGroup, as its last pass found them",
            members_outside_pim.clone(),
        );
        let standing_access_removals = Family::<GroupLabels, Counter>::default();
        registry.register(
            "standing_access_removals",
            "Members nothing of pim-operator explained, removed under standingAccess: Remove, by PimGroup",
            standing_access_removals.clone(),
        );
        let review_instances_completed = Counter::default();
        registry.register(
            "review_instances_completed",
            "Access review instances that reached their end and applied their results",
            review_instances_completed.clone(),
        );
        let review_denials = Counter::default();
        registry.register(
            "review_denials",
            "Assignments denied by access reviews (by a reviewer, or unreviewed under Remove or Recommendation)",
            review_denials.clone(),
        );
        let alerts_raised = Family::<AlertLabels, Counter>::default();
        // Each at 0 from the start: `increase()` sees the first raise only over a series that
        // existed before it.
        for alert in ["ActivatedTooOften", "ActivatedWithoutApproval", "Stale"] {
            drop(alerts_raised.get_or_create(&AlertLabels {
                alert: alert.to_owned(),
            }));
        }
        registry.register(
            "alerts_raised",
            "Policy alerts raised (a condition turned True), by alert: ActivatedTooOften, ActivatedWithoutApproval, Stale",
            alerts_raised.clone(),
        );
        let stale_assignments = Gauge::default();
        registry.register(
            "stale_assignments",
            "Eligible assignments not activated for their policy's alerts.notActivatedFor (Stale=True)",
            stale_assignments.clone(),
        );
        Metrics {
            registry,
            alerts_raised,
            stale_assignments,
            review_instances_completed,
            review_denials,
            standing_access_removals,
            leader,
            webhook_reviews,
            members_outside_pim,
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

    /// A follower reports nothing about access: only the leader's passes set these, and a
    /// replica that lost the lease must not keep alerting on what it last saw.
    pub fn forget_access_state(&self) {
        self.revocations_overdue.set(0);
        self.members_outside_pim.clear();
        self.stale_assignments.set(0);
        self.active_elevations.set(0);
    }

    /// An access review instance ended, denying `denied` assignments.
    pub fn review_completed(&self, denied: usize) {
        self.review_instances_completed.inc();
        self.review_denials
            .inc_by(u64::try_from(denied).unwrap_or(u64::MAX));
    }

    pub fn alert_raised(&self, alert: &str) {
        self.alerts_raised
            .get_or_create(&AlertLabels {
                alert: alert.to_owned(),
            })
            .inc();
    }

    pub fn review(&self, stage: &str, outcome: &str) {
        self.webhook_reviews
            .get_or_create(&ReviewLabels {
                stage: stage.to_owned(),
                outcome: outcome.to_owned(),
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
