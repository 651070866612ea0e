//! Issue 18 finding 3: what the operator says about itself. One line at start (version,
//! addresses, directories and modes, leader election, attestation), a line when leadership
//! changes, `/readyz` saying when nothing can be granted, and audit records as JSON objects in
//! the JSON log. The log is captured through the operator's own subscriber
//! (`pim_operator::logging`), as `pim-operator run` writes it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::sync::{Arc, Mutex};

use pim_operator::audit::AuditRecord;
use pim_operator::audit::sink::AuditSinks;
use pim_operator::config::Config;
use pim_operator::controller::Health;
use pim_operator::metrics::Metrics;
use pim_operator::startup::Startup;
use serde_json::Value;
use tower::ServiceExt;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Each line written, as JSON.
    fn lines(&self) -> Vec<Value> {
        let bytes = self.0.lock().unwrap().clone();
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }
}

/// Runs `f` with the operator's subscriber writing into a buffer; returns the lines.
fn logged(f: impl FnOnce()) -> Vec<Value> {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber =
        pim_operator::logging::subscriber(tracing_subscriber::EnvFilter::new("info"), move || {
            writer.clone()
        });
    tracing::subscriber::with_default(subscriber, f);
    captured.lines()
}

fn settings(yaml: &str) -> pim_operator::config::Settings {
    Config::parse(yaml, "test.yaml").unwrap()
}

#[test]
fn the_start_line_says_what_runs_and_that_nothing_can_be_granted_without_webhook_and_key() {
    let lines = logged(|| Startup::new(&settings(""), false).log());
    assert_eq!(lines.len(), 1, "one line: {lines:?}");
    let line = &lines[0];
    let fields = &line["fields"];
    assert_eq!(line["level"], "WARN", "{line}");
    assert_eq!(fields["version"], env!("CARGO_PKG_VERSION"), "{line}");
    assert_eq!(fields["metrics"], "0.0.0.0:8080", "{line}");
    assert_eq!(fields["webhook"], "off", "{line}");
    assert_eq!(fields["directories"], "kubernetes=kubernetes", "{line}");
    assert_eq!(fields["leader_election"], "on", "{line}");
    assert_eq!(fields["attestation"], "no key", "{line}");
    let grants = fields["grants"].as_str().unwrap_or_default();
    assert!(
        grants.contains("nothing can be granted")
            && grants.contains("webhook.enabled")
            && grants.contains("attestation.secret"),
        "{line}"
    );
}

#[test]
fn the_start_line_names_each_directory_and_its_mode() {
    let yaml = "directories:
  corp:
    type: entra
    mode: pim
    tenantId: contoso.onmicrosoft.com
    clientId: 11111111-2222-3333-4444-555555555555
    credential: {type: clientSecret, secretFile: /s}
  ad:
    type: ldap
    url: ldaps://dc.contoso.com
    activeDirectory: true
    bindDn: cn=pim
    bindPasswordFile: /p
    userBase: dc=contoso
    groupBase: dc=contoso
  sandbox: {type: memory}
leaderElection: {enabled: false}
metricsAddress: 127.0.0.1:9090
webhook: {enabled: true, address: 0.0.0.0:9443}
attestation: {secret: pim-operator-attestation}
";
    let startup = Startup::new(&settings(yaml), true);
    assert_eq!(startup.cannot_grant(), None);
    let lines = logged(|| startup.log());
    assert_eq!(lines.len(), 1, "one line: {lines:?}");
    let line = &lines[0];
    let fields = &line["fields"];
    assert_eq!(line["level"], "INFO", "{line}");
    assert_eq!(
        fields["directories"],
        "kubernetes=kubernetes ad=ldap/activeDirectory corp=entra/pim sandbox=memory",
        "{line}"
    );
    assert_eq!(fields["metrics"], "127.0.0.1:9090", "{line}");
    assert_eq!(fields["webhook"], "0.0.0.0:9443", "{line}");
    assert_eq!(fields["leader_election"], "off", "{line}");
    assert_eq!(fields["attestation"], "ready", "{line}");
    assert!(fields.get("grants").is_none(), "{line}");
    // A key without the webhook still grants nothing.
    let why = Startup::new(&settings("attestation: {secret: k}"), true).cannot_grant();
    assert!(
        why.as_deref()
            .is_some_and(|w| w.contains("webhook.enabled") && !w.contains("attestation key")),
        "{why:?}"
    );
}

#[test]
fn leadership_changes_are_logged_once_each() {
    let health = Health::default();
    let lines = logged(|| {
        health.set_leader(false);
        health.set_leader(false);
        health.set_leader(true);
        health.set_leader(true);
        health.set_leader(false);
    });
    let said: Vec<_> = lines
        .iter()
        .map(|l| l["fields"]["leader"].as_bool().unwrap())
        .collect();
    assert_eq!(said, [false, true, false], "{lines:?}");
    assert!(
        lines[1]["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("leader")),
        "{lines:?}"
    );
}

async fn readyz(health: Arc<Health>) -> (u16, String) {
    let router = pim_operator::http::router(Arc::new(Metrics::new()), health);
    let request = http::Request::get("/readyz")
        .body(axum::body::Body::empty())
        .unwrap();
    let response = router.oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let body = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .unwrap();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn readyz_says_when_nothing_can_be_granted() {
    let health = Arc::new(Health::default());
    health.set_leader(false);
    let (status, body) = readyz(health.clone()).await;
    assert_eq!(status, 200);
    assert!(!body.contains("granted"), "{body}");
    let why = Startup::new(&settings(""), false).cannot_grant().unwrap();
    health.set_cannot_grant(why);
    let (status, body) = readyz(health).await;
    assert_eq!(status, 200, "the operator still runs: {body}");
    assert!(
        body.starts_with("ready")
            && body.contains("nothing can be granted")
            && body.contains("webhook.enabled"),
        "{body}"
    );
}

#[test]
fn audit_records_are_json_objects_in_the_json_log() {
    let record = AuditRecord {
        id: "uid-1/2".to_owned(),
        request: "req-1".to_owned(),
        outcome: "Active".to_owned(),
        ..AuditRecord::default()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let lines = logged(|| {
        runtime
            .block_on(AuditSinks::log_only().emit(std::slice::from_ref(&record)))
            .unwrap();
        // Other events of the audit target keep the usual shape.
        tracing::warn!(target: pim_operator::audit::sink::TARGET, kind = "StatusNotProven", "corrected");
    });
    assert_eq!(lines.len(), 2, "{lines:?}");
    let line = &lines[0];
    assert_eq!(line["target"], "pim::audit", "{line}");
    assert_eq!(line["level"], "INFO", "{line}");
    assert!(line["timestamp"].is_string(), "{line}");
    assert!(
        line["record"].is_object(),
        "the record must be a JSON object, not text: {line}"
    );
    let back: AuditRecord = serde_json::from_value(line["record"].clone()).unwrap();
    assert_eq!(back, record);
    assert_eq!(
        lines[1]["fields"]["kind"], "StatusNotProven",
        "{}",
        lines[1]
    );
}
