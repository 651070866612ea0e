//! The audit trail end to end: the operator emits one record per transition to the
//! `pim::audit` tracing target, a JSON Lines file and a signed HTTP sink, records how far it
//! got in status, and `kubectl pim audit` (`audit::export::audit_command`) rebuilds complete
//! CSV and JSON from the objects.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/mod.rs"]
mod support;

use support::operator;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, OnceLock};

use hmac::{Hmac, Mac};
use pim_operator::api::activation_request::{Decision as Vote, Phase, Ticket};
use pim_operator::audit::AuditRecord;
use pim_operator::audit::export::{AuditQuery, CSV_COLUMNS, audit_command};
use sha2::Sha256;
use tracing_subscriber::layer::SubscriberExt;

use operator::{Harness, Receiver};

const ALICE: &str = "alice@contoso.com";
const BOB: &str = "bob@contoso.com";
const CAROL: &str = "carol@contoso.com";

/// Every event of the `pim::audit` target, as its message.
fn audit_log() -> Arc<Mutex<Vec<String>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<String>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let log = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry().with(Capture(log.clone()));
        tracing::subscriber::set_global_default(subscriber).unwrap();
        log
    })
    .clone()
}

struct Capture(Arc<Mutex<Vec<String>>>);

struct Message(String);

impl tracing::field::Visit for Message {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target() == pim_operator::audit::sink::TARGET {
            let mut message = Message(String::new());
            event.record(&mut message);
            self.0.lock().unwrap().push(message.0);
        }
    }
}

fn signed(hit: &operator::Hit, key: &[u8]) -> bool {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(hit.header("x-pim-timestamp").unwrap().as_bytes());
    mac.update(b".");
    mac.update(&hit.body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    hit.header("x-pim-signature") == Some(&format!("sha256={hex}"))
}

fn parse_lines(text: &str) -> Vec<AuditRecord> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn audit_csv_and_json_are_complete_for_a_full_scenario_with_approval() {
    let log = audit_log();
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.jsonl");
    std::fs::write(dir.path().join("token"), "t0ken\n").unwrap();
    std::fs::write(dir.path().join("key"), "audit-key").unwrap();
    let config = format!(
        "audit:\n  file: {}\n  http: {{url: '{}', tokenFile: {}, secretFile: {}}}\n",
        file.display(),
        receiver.url("/audit"),
        dir.path().join("token").display(),
        dir.path().join("key").display()
    );
    let mut h = Harness::new(&config).await;
    h.policy("pa", "1h", &[BOB, CAROL], |_| {}).await;
    h.group("ga", "pa").await;
    h.assignment("alice-ga", "ga", ALICE).await;
    h.start();

    h.request("r", "ga", ALICE, "30m", |spec| {
        spec.justification = Some("month-end close, \"Q2\"".into());
        spec.ticket = Some(Ticket {
            system: "ServiceNow".into(),
            number: "CHG0042".into(),
        });
        let requester = spec.requester.as_mut().unwrap();
        requester.uid = Some("u-alice".into());
        requester.groups = vec!["finance".into(), "system:authenticated".into()];
        requester.mfa = Some("amr=mfa".into());
    })
    .await;
    h.wait_phase("r", Phase::PendingApproval).await;
    h.advance(5);
    h.vote("r", "ga", BOB, Vote::Approve, "looks right").await;
    h.wait_phase("r", Phase::Active).await;
    // Emitted at once; recorded only when the request finishes (or with a notification
    // record), so the way to Active costs no extra API write.
    operator::eventually("the Active record is in the file", || async {
        std::fs::read_to_string(&file)
            .unwrap_or_default()
            .contains("\"outcome\":\"Active\"")
    })
    .await;
    let notifier_writes = h
        .server
        .writes()
        .into_iter()
        .filter(|w| w.field_manager.as_deref() == Some("pim-operator-notify"))
        .count();
    assert_eq!(notifier_writes, 0);
    h.advance(30);
    h.wait_phase("r", Phase::Expired).await;
    h.request("r2", "ga", ALICE, "15m", |_| {}).await;
    h.wait_phase("r2", Phase::PendingApproval).await;
    h.vote("r2", "ga", CAROL, Vote::Deny, "not now").await;
    h.wait_phase("r2", Phase::Denied).await;
    h.wait_audited("r").await;
    h.wait_audited("r2").await;
    h.stop().await;
    assert!(
        h.server.writes().iter().any(
            |w| w.field_manager.as_deref() == Some("pim-operator-notify")
                && w.subresource.as_deref() == Some("status")
        ),
        "the marks of finished requests are written under the notifier's field manager"
    );

    let request = h.get("r").await;
    let uid = request.metadata.uid.clone().unwrap();
    let history = request.status.clone().unwrap().history;
    let phases: Vec<Phase> = history.iter().map(|t| t.phase).collect();
    // Scheduled (Provisioning) is seen only when the request's pass after the approval runs
    // before the group controller made the grant.
    let expected_with = [
        Phase::PendingApproval,
        Phase::Scheduled,
        Phase::Active,
        Phase::Expired,
    ];
    let expected_without = [Phase::PendingApproval, Phase::Active, Phase::Expired];
    assert!(
        phases == expected_with || phases == expected_without,
        "{phases:?}"
    );
    let n = phases.len();

    // JSON: one record per transition of both requests, oldest first, nothing missing.
    let json = audit_command(h.client.clone(), since("30d"), "json", h.now())
        .await
        .unwrap();
    let records: Vec<AuditRecord> = serde_json::from_str(&json).unwrap();
    assert_eq!(records.len(), n + 2, "{json}");
    assert!(records.windows(2).all(|w| w[0].time <= w[1].time));
    let r: Vec<&AuditRecord> = records.iter().filter(|x| x.request == "r").collect();
    let ids: Vec<String> = (0..n).map(|i| format!("{uid}/{i}")).collect();
    assert_eq!(r.iter().map(|x| x.id.clone()).collect::<Vec<_>>(), ids);
    let end = r[n - 1];
    assert_eq!(
        (
            end.from.as_deref(),
            end.outcome.as_str(),
            end.terminal,
            end.reason.as_str()
        ),
        (Some("Active"), "Expired", true, "Expired")
    );
    let requester = end.requester.as_ref().unwrap();
    assert_eq!(
        (requester.username.as_str(), requester.uid.as_deref()),
        (ALICE, Some("u-alice"))
    );
    assert_eq!(requester.groups, ["finance", "system:authenticated"]);
    assert_eq!(end.principal.as_deref(), Some(ALICE));
    assert_eq!((end.group.as_str(), end.role.as_str()), ("ga", "member"));
    assert_eq!(
        (end.policy.as_deref(), end.policy_generation),
        (Some("pa"), Some(1))
    );
    assert_eq!(
        (end.directory.as_deref(), end.directory_group_id.as_deref()),
        (Some("memory"), Some("ga-id"))
    );
    assert_eq!(
        end.justification.as_deref(),
        Some("month-end close, \"Q2\"")
    );
    assert_eq!(
        (end.ticket_system.as_deref(), end.ticket_number.as_deref()),
        (Some("ServiceNow"), Some("CHG0042"))
    );
    assert_eq!(end.requested_duration.as_deref(), Some("30m"));
    assert_eq!(end.approvals.len(), 1);
    let approval = &end.approvals[0];
    assert_eq!(
        (
            approval.approver.as_str(),
            approval.decision.as_str(),
            approval.reason.as_deref()
        ),
        (BOB, "Approve", Some("looks right"))
    );
    let approved_at: jiff::Timestamp = "2026-03-02T09:05:00Z".parse().unwrap();
    let ended_at: jiff::Timestamp = "2026-03-02T09:35:00Z".parse().unwrap();
    assert_eq!(approval.time, Some(approved_at));
    assert_eq!(end.approved_by, [BOB]);
    assert_eq!(
        (end.mfa_evidence.as_deref(), end.mfa_verified),
        (Some("amr=mfa"), Some(true))
    );
    assert_eq!(
        (
            end.starts_at,
            end.activated_at,
            end.expires_at,
            end.ended_at
        ),
        (
            Some(approved_at),
            Some(approved_at),
            Some(ended_at),
            Some(ended_at)
        )
    );
    assert_eq!(end.retry_count, 0);
    let denied = records
        .iter()
        .find(|x| x.request == "r2" && x.terminal)
        .unwrap();
    assert_eq!(denied.outcome, "Denied");
    assert_eq!(denied.approvals[0].decision, "Deny");
    assert_eq!(denied.approvals[0].reason.as_deref(), Some("not now"));

    // CSV: the same rows, every column filled where the JSON has a value.
    let csv = audit_command(h.client.clone(), since("30d"), "csv", h.now())
        .await
        .unwrap();
    let lines: Vec<&str> = csv.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(lines[0], CSV_COLUMNS.join(","));
    assert_eq!(lines.len(), 1 + records.len());
    let last_index = n - 1;
    let last = lines
        .iter()
        .find(|l| l.starts_with(&format!("{uid}/{last_index},")))
        .unwrap();
    let expected = format!(
        "{uid}/{last_index},2026-03-02T09:35:00Z,r,{uid},{last_index},Active,Expired,true,Expired,ended at 2026-03-02T09:35:00Z,\
         {ALICE},u-alice,finance;system:authenticated,{ALICE},,ga,member,memory,ga-id,pa,1,\
         \"month-end close, \"\"Q2\"\"\",ServiceNow,CHG0042,30m,\
         {BOB} Approve at 2026-03-02T09:05:00Z: looks right,{BOB},amr=mfa,true,\
         2026-03-02T09:05:00Z,2026-03-02T09:35:00Z,,2026-03-02T09:05:00Z,2026-03-02T09:35:00Z,0,"
    );
    assert_eq!(*last, expected);
    // --since narrows it to what happened since.
    let recent = audit_command(
        h.client.clone(),
        since("2026-03-02T09:35:00Z"),
        "json",
        h.now(),
    )
    .await
    .unwrap();
    let recent: Vec<AuditRecord> = serde_json::from_str(&recent).unwrap();
    assert!(recent.iter().all(|x| x.time >= ended_at));
    assert!(recent.iter().any(|x| x.id == format!("{uid}/{last_index}")));
    assert!(!recent.iter().any(|x| x.id == format!("{uid}/0")));
    // --until (exclusive), --principal and --group narrow it further (issue 19).
    let narrowed = |query: AuditQuery<'static>| {
        let client = h.client.clone();
        let now = h.now();
        async move {
            let json = audit_command(client, query, "json", now).await.unwrap();
            serde_json::from_str::<Vec<AuditRecord>>(&json).unwrap()
        }
    };
    let before_end = narrowed(AuditQuery {
        until: Some("2026-03-02T09:35:00Z"),
        ..since("30d")
    })
    .await;
    assert!(!before_end.is_empty() && before_end.iter().all(|x| x.time < ended_at));
    let alices = narrowed(AuditQuery {
        principal: Some("Alice@Contoso.com"),
        ..since("30d")
    })
    .await;
    assert_eq!(
        alices.len(),
        records
            .iter()
            .filter(|x| x.principal.as_deref() == Some(ALICE))
            .count()
    );
    assert!(!alices.is_empty());
    assert_eq!(
        narrowed(AuditQuery {
            principal: Some("nobody@contoso.com"),
            ..since("30d")
        })
        .await
        .len(),
        0
    );
    let of_group = narrowed(AuditQuery {
        group: Some("ga"),
        ..since("30d")
    })
    .await;
    assert_eq!(
        of_group.len(),
        records.iter().filter(|x| x.group == "ga").count()
    );
    assert!(of_group.iter().all(|x| x.group == "ga"));

    // The operator emitted each record to every sink; ids make repeats easy to drop.
    let expected_ids: BTreeSet<String> = records.iter().map(|x| x.id.clone()).collect();
    let file_records = parse_lines(&std::fs::read_to_string(&file).unwrap());
    let file_ids: BTreeSet<String> = file_records.iter().map(|x| x.id.clone()).collect();
    assert_eq!(file_ids, expected_ids);
    for emitted in &file_records {
        let rebuilt = records.iter().find(|x| x.id == emitted.id).unwrap();
        assert_eq!(
            (
                &emitted.time,
                &emitted.outcome,
                &emitted.reason,
                &emitted.from
            ),
            (
                &rebuilt.time,
                &rebuilt.outcome,
                &rebuilt.reason,
                &rebuilt.from
            )
        );
    }
    let file_end = file_records
        .iter()
        .find(|x| x.id == format!("{uid}/{last_index}"))
        .unwrap();
    assert_eq!(
        file_end, end,
        "the last record as emitted is the record as exported"
    );

    let hits = receiver.hits("/audit");
    assert!(!hits.is_empty());
    let mut http_ids = BTreeSet::new();
    for hit in &hits {
        assert_eq!(hit.header("authorization"), Some("Bearer t0ken"));
        assert_eq!(hit.header("content-type"), Some("application/x-ndjson"));
        assert!(signed(hit, b"audit-key"));
        http_ids.extend(
            parse_lines(std::str::from_utf8(&hit.body).unwrap())
                .into_iter()
                .map(|x| x.id),
        );
    }
    assert_eq!(http_ids, expected_ids);

    let logged: BTreeSet<String> = log
        .lock()
        .unwrap()
        .iter()
        .filter_map(|line| serde_json::from_str::<AuditRecord>(line).ok())
        .map(|x| x.id)
        .filter(|id| expected_ids.contains(id))
        .collect();
    assert_eq!(
        logged, expected_ids,
        "one JSON line per transition on pim::audit"
    );
}

#[tokio::test]
async fn deleting_a_live_request_is_audited_before_the_object_goes() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.jsonl");
    let mut h = Harness::new(&format!("audit:\n  file: {}\n", file.display())).await;
    h.policy("pa", "1h", &[], |_| {}).await;
    h.group("ga", "pa").await;
    h.assignment("alice-ga", "ga", ALICE).await;
    h.start();
    h.request("r", "ga", ALICE, "30m", |_| {}).await;
    h.wait_phase("r", Phase::Active).await;
    let uid = h.get("r").await.metadata.uid.unwrap();
    let alice = pim_operator::core::membership::Member::User(ALICE.into());
    let member = pim_operator::api::common::Role::Member;
    assert!(h.directory.members("ga-id", member).contains(&alice));

    // An admin deletes it while Active: access goes, and the trail says so before the object
    // is gone.
    h.api::<pim_operator::api::ActivationRequest>()
        .delete("r", &Default::default())
        .await
        .unwrap();
    operator::eventually("r is gone", || async { !h.exists("r").await }).await;
    let records = parse_lines(&std::fs::read_to_string(&file).unwrap());
    let mine: Vec<&AuditRecord> = records.iter().filter(|r| r.uid == uid).collect();
    let last = mine.last().expect("records of r");
    assert_eq!(
        (last.outcome.as_str(), last.reason.as_str(), last.terminal),
        ("Revoked", "Deleted", true),
        "{mine:?}"
    );
    assert_eq!(last.from.as_deref(), Some("Active"));
    assert!(
        !h.directory.members("ga-id", member).contains(&alice),
        "access removed"
    );
    h.stop().await;
}

/// An audit query of everything from `since` on.
fn since(since: &'static str) -> AuditQuery<'static> {
    AuditQuery {
        since,
        until: None,
        principal: None,
        group: None,
        kind: None,
        files: &[],
    }
}

/// The action records in an audit file, as JSON.
fn action_lines(file: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l.get("action").is_some())
        .collect()
}

#[tokio::test]
async fn active_assignment_grants_and_standing_removals_are_audited() {
    use pim_operator::api::common::Role;
    use pim_operator::api::eligible_assignment::AssignmentType;
    use pim_operator::api::eligible_assignment::{EligibleAssignmentSpec, Schedule};
    use pim_operator::api::{EligibleAssignment, PrincipalRef};
    use pim_operator::core::membership::Member;

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.jsonl");
    let config = format!("audit:\n  file: {}\n", file.display());
    let mut h = Harness::new(&config).await;
    h.policy("pa", "8h", &[], |_| {}).await;
    h.group("ga", "pa").await;
    // Someone added by hand in the directory: standingAccess: Remove takes it away.
    let mallory = Member::User("mallory@contoso.com".into());
    h.directory
        .add_by_hand("ga-id", Role::Member, mallory.clone());
    let spec = EligibleAssignmentSpec {
        group: "ga".into(),
        principal: PrincipalRef::user(ALICE),
        assignment_type: AssignmentType::Active,
        schedule: Schedule {
            duration: Some("1h".into()),
            ..Default::default()
        },
        justification: Some("covering the release (REL-3)".into()),
        ..Default::default()
    };
    h.api::<EligibleAssignment>()
        .create(
            &Default::default(),
            &EligibleAssignment::new("alice-ga-active", spec),
        )
        .await
        .unwrap();
    h.start();

    let kinds = |lines: &[serde_json::Value]| -> BTreeSet<(String, String, String)> {
        lines
            .iter()
            .map(|l| {
                (
                    l["action"].as_str().unwrap().to_owned(),
                    l["name"].as_str().unwrap().to_owned(),
                    l["principal"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    operator::eventually(
        "the grant and the standing removal are recorded",
        || async { kinds(&action_lines(&file)).len() == 2 },
    )
    .await;
    let lines = action_lines(&file);
    assert_eq!(
        kinds(&lines),
        BTreeSet::from([
            ("Granted".into(), "alice-ga-active".into(), ALICE.into()),
            (
                "StandingAccessRemoved".into(),
                "ga".into(),
                "mallory@contoso.com".into()
            ),
        ]),
        "{lines:#?}"
    );
    let granted = lines.iter().find(|l| l["action"] == "Granted").unwrap();
    assert_eq!(granted["kind"], "EligibleAssignment");
    assert_eq!(granted["group"], "ga");
    assert_eq!(granted["role"], "member");
    assert_eq!(granted["directoryGroupId"], "ga-id");
    assert_eq!(granted["time"], h.now().to_string());
    let removed = lines
        .iter()
        .find(|l| l["action"] == "StandingAccessRemoved")
        .unwrap();
    assert_eq!(removed["kind"], "PimGroup");
    assert!(!h.directory.has_member("ga-id", Role::Member, &mallory));

    // The assignment's hour ends: the removal is recorded once the directory confirms it.
    h.advance(61);
    operator::eventually("the assignment's removal is recorded", || async {
        action_lines(&file).iter().any(|l| l["action"] == "Removed")
    })
    .await;
    let lines = action_lines(&file);
    let removed: Vec<_> = lines.iter().filter(|l| l["action"] == "Removed").collect();
    assert_eq!(removed.len(), 1, "{lines:#?}");
    assert_eq!(removed[0]["name"], "alice-ga-active");
    assert_eq!(removed[0]["principal"], ALICE);
    assert!(
        !h.directory
            .has_member("ga-id", Role::Member, &Member::User(ALICE.into()))
    );
    // Nothing recorded twice.
    let ids: BTreeSet<&str> = lines.iter().map(|l| l["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), lines.len(), "{lines:#?}");
    h.stop().await;
}
