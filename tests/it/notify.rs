//! Notifications end to end: the real operator against the fake API server on a manual clock,
//! a real SMTP server (aiosmtpd, STARTTLS and AUTH) and an HTTP receiver on 127.0.0.1.
//! `.ci/install-smtp` installs aiosmtpd.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::graph;
use crate::support::operator;
use crate::support::smtp;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hmac::{Hmac, Mac};
use pim_operator::api::access_policy::NotificationSettings;
use pim_operator::api::activation_request::{Decision as Vote, Phase, Ticket};
use pim_operator::api::delivery::DeliveryOutcome;
use pim_testkit::fake_apiserver::FaultScope;
use sha2::Sha256;

use operator::{Harness, Receiver, eventually};
use smtp::{Received, SmtpServer};

const ALICE: &str = "alice@contoso.com";
const BOB: &str = "bob@contoso.com";
const CAROL: &str = "carol@contoso.com";
const SECOPS: &str = "secops@contoso.com";

fn smtp_channel(server: &SmtpServer, port: u16) -> String {
    format!(
        "    mail:\n      type: smtp\n      host: 127.0.0.1\n      port: {port}\n      from: 'PIM <pim@contoso.com>'\n      username: {}\n      passwordFile: {}\n      caFile: {}\n      timeout: 3s\n",
        smtp::USER,
        server.password_file().display(),
        server.ca_file().display()
    )
}

fn notifications(channels: &str) -> String {
    format!(
        "notifications:\n  retry: {{maxAttempts: 100, initialBackoff: 1s, maxBackoff: 2s}}\n  channels:\n{channels}"
    )
}

/// `pa`: 1h, approved by bob or carol, admins secops; group `ga` under it; alice eligible.
/// `p`: 1h, no approval, no notification settings; group `g`; alice and dave eligible.
async fn seed(h: &Harness) {
    h.policy("pa", "1h", &[BOB, CAROL], |spec| {
        spec.notifications = Some(NotificationSettings {
            admins: vec![SECOPS.into()],
            ..Default::default()
        })
    })
    .await;
    h.group("ga", "pa").await;
    h.policy("p", "1h", &[], |_| {}).await;
    h.group("g", "p").await;
    h.assignment("alice-ga", "ga", ALICE).await;
    h.assignment("alice-g", "g", ALICE).await;
    h.assignment("dave-g", "g", "dave@contoso.com").await;
}

fn mails_to<'a>(mails: &'a [Received], to: &str, subject_part: &str) -> Vec<&'a Received> {
    mails
        .iter()
        .filter(|m| m.rcpt_tos == [to] && m.subject.contains(subject_part))
        .collect()
}

async fn wait_mails(server: &SmtpServer, what: &str, count: usize, to: &str, subject_part: &str) {
    eventually(what, || async {
        mails_to(&server.received(), to, subject_part).len() >= count
    })
    .await;
}

/// Recipients, subjects and bodies of every mail of a request with approval, over STARTTLS
/// with AUTH from a password file; each recorded once in status.
#[tokio::test]
async fn the_smtp_server_receives_each_mail_with_the_right_recipients_subject_and_body() {
    let server = SmtpServer::start();
    let mut h = Harness::new(&notifications(&smtp_channel(&server, server.port()))).await;
    seed(&h).await;
    h.start();

    // The eligible assignment: the assignee and the admins.
    wait_mails(
        &server,
        "alice hears she is eligible",
        1,
        ALICE,
        "is eligible for the member role of ga",
    )
    .await;
    wait_mails(
        &server,
        "secops hears alice is eligible",
        1,
        SECOPS,
        "is eligible for the member role of ga",
    )
    .await;

    h.request("r", "ga", ALICE, "30m", |spec| {
        spec.ticket = Some(Ticket {
            system: "ServiceNow".into(),
            number: "CHG0042".into(),
        })
    })
    .await;
    h.wait_phase("r", Phase::PendingApproval).await;
    for approver in [BOB, CAROL] {
        wait_mails(
            &server,
            "the approvers are asked",
            1,
            approver,
            "Approval needed",
        )
        .await;
    }
    let asked = mails_to(&server.received(), BOB, "Approval needed")[0].clone();
    assert_eq!(
        asked.subject,
        "[PIM] Approval needed: alice@contoso.com requests the member role of ga"
    );
    assert_eq!(asked.from, "PIM <pim@contoso.com>");
    assert_eq!(asked.mail_from, "pim@contoso.com");
    assert!(asked.tls, "STARTTLS was used");
    assert_eq!(
        asked.login.as_deref(),
        Some(smtp::USER),
        "logged in with the password file"
    );
    for part in [
        "kubectl pim approve r",
        "Justification: incident 42",
        "Ticket: ServiceNow CHG0042",
        "Duration: 30m",
    ] {
        assert!(
            asked.text().contains(part),
            "{part:?} in:\n{}",
            asked.text()
        );
    }
    assert!(
        asked
            .html
            .as_deref()
            .unwrap()
            .contains("<th align=\"left\">Justification</th><td>incident 42</td>")
    );

    h.vote("r", "ga", BOB, Vote::Approve, "looks right").await;
    h.wait_phase("r", Phase::Active).await;
    wait_mails(
        &server,
        "alice hears she was approved",
        1,
        ALICE,
        "Approved",
    )
    .await;
    wait_mails(
        &server,
        "alice hears she is active",
        1,
        ALICE,
        "activated the member role",
    )
    .await;
    wait_mails(
        &server,
        "secops hears alice is active",
        1,
        SECOPS,
        "activated the member role",
    )
    .await;
    let approved = mails_to(&server.received(), ALICE, "Approved")[0].clone();
    assert!(
        approved.text().contains("was approved by bob@contoso.com"),
        "{}",
        approved.text()
    );
    let activated = mails_to(&server.received(), SECOPS, "activated")[0].clone();
    assert!(
        activated.text().contains("until 2026-03-02T09:30:00Z"),
        "{}",
        activated.text()
    );

    // The reminder, 15 minutes (the default lead) before the end; then the end.
    h.advance(15);
    wait_mails(
        &server,
        "alice is reminded",
        1,
        ALICE,
        "expires at 2026-03-02T09:30:00Z",
    )
    .await;
    h.advance(15);
    h.wait_phase("r", Phase::Expired).await;
    wait_mails(&server, "alice hears it ended", 1, ALICE, "ended: Expired").await;
    let ended = mails_to(&server.received(), ALICE, "ended: Expired")[0].clone();
    assert!(ended.text().contains("Reason: Expired"), "{}", ended.text());

    // Each recorded once, and the records say what was sent.
    eventually("every mail of r recorded", || async {
        h.delivery("r").await.notifications.len() == 7
    })
    .await;
    h.stop().await;
    let mails = server.received();
    // Eligible: alice and secops for ga, alice and dave for g (no admins there); then for r:
    // 2 asked, approved, 2 activated, the reminder and the end.
    assert_eq!(mails.len(), 4 + 7, "{mails:#?}");
    assert_eq!(mails_to(&mails, SECOPS, "is eligible").len(), 1);
    assert_eq!(mails_to(&mails, ALICE, "is eligible").len(), 2);
    let mut ids: Vec<&str> = mails.iter().map(|m| m.message_id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 11, "every mail has its own Message-ID");
    assert!(ids.iter().all(|id| id.ends_with("@pim-operator>")));
    let records = h.delivery("r").await.notifications;
    let mut keys: Vec<(String, String)> = records
        .iter()
        .map(|r| (r.event.clone(), r.recipient.clone()))
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            ("activated", ALICE),
            ("activated", SECOPS),
            ("activationRequested", BOB),
            ("activationRequested", CAROL),
            ("approved", ALICE),
            ("ended", ALICE),
            ("expiringSoon", ALICE),
        ]
        .map(|(e, r)| (e.to_owned(), r.to_owned()))
    );
    assert!(
        records
            .iter()
            .all(|r| r.outcome == DeliveryOutcome::Sent && r.channel == "mail")
    );

    // `status.delivery` is the notifier's alone: the request reconciler never applied it.
    let managed = h.get("r").await.metadata.managed_fields.unwrap_or_default();
    let owns_delivery = |manager: &str| {
        managed.iter().any(|m| {
            m.manager.as_deref() == Some(manager)
                && m.fields_v1
                    .as_ref()
                    .is_some_and(|f| f.0.pointer("/f:status/f:delivery").is_some())
        })
    };
    assert!(owns_delivery("pim-operator-notify"));
    assert!(!owns_delivery("pim-operator"));
}

fn secret_file(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("hmac-key");
    std::fs::write(&path, "s3cr3t-k3y\n").unwrap();
    path
}

fn verify(hit: &operator::Hit, key: &[u8]) -> bool {
    let timestamp = hit.header("x-pim-timestamp").unwrap();
    let signature = hit.header("x-pim-signature").unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(&hit.body);
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    signature == format!("sha256={expected}")
}

/// The generic webhook is signed (HMAC-SHA256 over timestamp and body) and the receiver can
/// check it; Slack gets a Block Kit message, Teams an Adaptive Card; each event once.
#[tokio::test]
async fn webhooks_are_signed_and_chat_channels_get_their_formats() {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let secret = secret_file(dir.path());
    let slack_url = dir.path().join("slack-url");
    std::fs::write(&slack_url, format!("{}\n", receiver.url("/slack"))).unwrap();
    let channels = format!(
        "    hook: {{type: webhook, url: '{}', secretFile: {}}}\n    slack: {{type: slack, urlFile: {}, events: [activationRequested]}}\n    teams: {{type: teams, url: '{}'}}\n",
        receiver.url("/hook"),
        secret.display(),
        slack_url.display(),
        receiver.url("/teams"),
    );
    let mut h = Harness::new(&notifications(&channels)).await;
    seed(&h).await;
    h.start();
    h.request("r", "ga", ALICE, "30m", |_| {}).await;
    eventually("the webhook hears of the request", || async {
        receiver
            .hits("/hook")
            .iter()
            .any(|hit| hit.json()["event"] == "activationRequested")
    })
    .await;
    h.vote("r", "ga", CAROL, Vote::Approve, "fine").await;
    eventually("the webhook hears of the activation", || async {
        receiver
            .hits("/hook")
            .iter()
            .any(|hit| hit.json()["event"] == "activated")
    })
    .await;
    eventually("teams hears of the activation", || async {
        receiver.hits("/teams").len() >= 6
    })
    .await;
    eventually("all recorded", || async {
        h.delivery("r").await.notifications.len() == 7
    })
    .await;
    h.stop().await;

    let request_hooks: Vec<_> = receiver
        .hits("/hook")
        .into_iter()
        .filter(|hit| hit.json()["object"]["kind"] == "ActivationRequest")
        .collect();
    let events: Vec<String> = request_hooks
        .iter()
        .map(|hit| hit.json()["event"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(events.len(), 3, "{events:?}");
    for event in ["activationRequested", "approved", "activated"] {
        assert!(events.contains(&event.to_owned()), "{events:?}");
    }
    for hit in receiver.hits("/hook") {
        assert!(
            verify(&hit, b"s3cr3t-k3y"),
            "a valid signature: {:?}",
            hit.headers
        );
        assert!(!verify(&hit, b"another key"), "a wrong key does not verify");
        let mut tampered = hit.clone();
        tampered.body.push(b' ');
        assert!(
            !verify(&tampered, b"s3cr3t-k3y"),
            "a changed body does not verify"
        );
        assert_eq!(
            hit.header("x-pim-timestamp").unwrap(),
            h.now().as_second().to_string(),
            "the timestamp is the operator's clock"
        );
        let body = hit.json();
        assert_eq!(hit.header("x-pim-delivery").unwrap(), body["id"]);
        assert_eq!(hit.header("x-pim-event").unwrap(), body["event"]);
        assert_eq!(hit.header("content-type").unwrap(), "application/json");
    }
    let asked = request_hooks
        .iter()
        .find(|hit| hit.json()["event"] == "activationRequested")
        .unwrap()
        .json();
    assert_eq!(asked["object"]["name"], "r");
    assert_eq!(asked["object"]["principal"], ALICE);
    assert_eq!(asked["recipients"], serde_json::json!([BOB, CAROL]));

    // Slack only takes the requests to approve.
    let slack = receiver.hits("/slack");
    assert_eq!(slack.len(), 1);
    let slack = slack[0].json();
    assert!(
        slack["text"]
            .as_str()
            .unwrap()
            .starts_with("[PIM] Approval needed")
    );
    assert!(
        slack["blocks"][0]["text"]["text"]
            .as_str()
            .unwrap()
            .contains("*Justification:* incident 42")
    );
    // Teams: the three assignments, the request, the approval, the activation.
    let teams: Vec<serde_json::Value> = receiver.hits("/teams").iter().map(|h| h.json()).collect();
    assert_eq!(teams.len(), 6, "{teams:#?}");
    let card = &teams
        .iter()
        .find(|t| {
            t["attachments"][0]["content"]["body"][0]["text"]
                .as_str()
                .unwrap()
                .contains("Approval needed")
        })
        .unwrap()["attachments"][0];
    assert_eq!(
        card["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    assert_eq!(card["content"]["type"], "AdaptiveCard");

    let records = h.delivery("r").await.notifications;
    assert!(
        records
            .iter()
            .all(|r| r.recipient == "*" && r.outcome == DeliveryOutcome::Sent)
    );
}

/// The counts of one request's mails and webhook calls, by (subject or event, recipient).
fn tally(
    server: &SmtpServer,
    receiver: &Receiver,
    name: &str,
) -> BTreeMap<(String, String), usize> {
    let mut out = BTreeMap::new();
    for mail in server.received() {
        if mail
            .text()
            .contains(&format!("ActivationRequest: {name}\n"))
        {
            *out.entry((mail.subject.clone(), mail.rcpt_tos.join(",")))
                .or_default() += 1;
        }
    }
    for hit in receiver.hits("/hook") {
        let body = hit.json();
        if body["object"]["name"] == name && body["object"]["kind"] == "ActivationRequest" {
            *out.entry((
                body["event"].as_str().unwrap().to_owned(),
                "hook".to_owned(),
            ))
            .or_default() += 1;
        }
    }
    out
}

/// A new leader (a restart) reads what was sent from status and sends none of it again; what
/// falls due later is sent once.
#[tokio::test]
async fn after_a_controller_restart_no_notification_is_sent_twice() {
    let server = SmtpServer::start();
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let channels = format!(
        "{}    hook: {{type: webhook, url: '{}', secretFile: {}}}\n",
        smtp_channel(&server, server.port()),
        receiver.url("/hook"),
        secret_file(dir.path()).display()
    );
    let mut h = Harness::new(&notifications(&channels)).await;
    seed(&h).await;
    h.start();
    h.request("r1", "ga", ALICE, "30m", |_| {}).await;
    h.wait_phase("r1", Phase::PendingApproval).await;
    h.vote("r1", "ga", BOB, Vote::Approve, "ok").await;
    h.wait_phase("r1", Phase::Active).await;
    // asked (bob, carol), approved (alice), activated (alice, secops), by mail and webhook.
    eventually("r1's notifications recorded", || async {
        h.delivery("r1").await.notifications.len() == 5 + 3
    })
    .await;
    let before = tally(&server, &receiver, "r1");
    assert_eq!(before.len(), 8, "{before:#?}");
    assert!(before.values().all(|n| *n == 1), "{before:#?}");

    h.stop().await;
    h.start();
    // The new leader goes over r1 again: its reminder falls due, and nothing else.
    h.advance(15);
    eventually("the reminder is recorded", || async {
        h.delivery("r1")
            .await
            .notifications
            .iter()
            .filter(|r| r.event == "expiringSoon")
            .count()
            == 2
    })
    .await;
    // And it is live for new work.
    h.request("r2", "g", "dave@contoso.com", "30m", |_| {})
        .await;
    eventually("r2's activation recorded", || async {
        h.delivery("r2").await.notifications.len() == 2
    })
    .await;
    // Stopping waits for every send under way, so what was sent is all there is to count.
    h.stop().await;
    let after = tally(&server, &receiver, "r1");
    assert_eq!(
        after.len(),
        10,
        "the reminder by mail and webhook: {after:#?}"
    );
    assert!(after.values().all(|n| *n == 1), "sent twice: {after:#?}");
    for (key, n) in &before {
        assert_eq!(after.get(key), Some(n));
    }
    assert_eq!(h.delivery("r1").await.notifications.len(), 10);
    // The assignments' notifications were not repeated either.
    let mails = server.received();
    assert_eq!(mails_to(&mails, SECOPS, "is eligible").len(), 1);
    assert_eq!(mails_to(&mails, ALICE, "is eligible").len(), 2);
    assert_eq!(mails_to(&mails, "dave@contoso.com", "is eligible").len(), 1);
}

/// A blackholed SMTP server (accepts, never answers) holds up only its own mail: the request
/// becomes Active while the mail waits, and the mail goes out once the server is back.
#[tokio::test]
async fn a_slow_or_down_smtp_server_does_not_delay_activation() {
    let port = smtp::free_port();
    // The blackhole: takes connections on the SMTP port and never says a word.
    let blackhole = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let held = Arc::new(std::sync::Mutex::new(Vec::new()));
    let hole = {
        let (connections, held) = (connections.clone(), held.clone());
        tokio::spawn(async move {
            while let Ok((socket, _)) = blackhole.accept().await {
                connections.fetch_add(1, Ordering::SeqCst);
                held.lock().unwrap().push(socket);
            }
        })
    };
    let mut server = SmtpServer::prepare(port, true);
    let mut h = Harness::new(&notifications(&smtp_channel(&server, port))).await;
    seed(&h).await;
    h.start();
    h.request("r", "g", ALICE, "30m", |_| {}).await;
    h.wait_phase("r", Phase::Active).await;
    eventually("the operator is stuck talking to the blackhole", || async {
        connections.load(Ordering::SeqCst) >= 1
    })
    .await;
    assert!(server.received().is_empty());
    assert!(
        h.delivery("r").await.notifications.is_empty(),
        "nothing sent, nothing recorded"
    );

    // The server comes back on the same port: the retries get through.
    hole.abort();
    let _ = hole.await;
    held.lock().unwrap().clear();
    server.spawn();
    wait_mails(
        &server,
        "alice hears she is active",
        1,
        ALICE,
        "activated the member role of g",
    )
    .await;
    eventually("recorded as sent", || async {
        h.delivery("r")
            .await
            .notifications
            .iter()
            .any(|r| r.event == "activated" && r.outcome == DeliveryOutcome::Sent)
    })
    .await;
    // The mails that were stuck in the blackhole got through on a later attempt.
    let attempts = || async {
        let mut all = Vec::new();
        for name in ["alice-ga", "alice-g", "dave-g"] {
            let a: pim_operator::api::EligibleAssignment = h.api().get(name).await.unwrap();
            let delivery = a.status.and_then(|s| s.delivery).unwrap_or_default();
            all.extend(delivery.notifications.iter().map(|r| r.attempts));
        }
        all
    };
    eventually("the assignments' mails recorded", || async {
        attempts().await.len() == 4
    })
    .await;
    let attempts = attempts().await;
    assert!(
        attempts.iter().any(|n| *n >= 2),
        "some mail needed more than one attempt: {attempts:?}"
    );
    h.stop().await;
    assert_eq!(mails_to(&server.received(), ALICE, "activated").len(), 1);
}

/// The one window the design leaves open (documented in `notify::outbox`): a send that went
/// out, whose record could not be written before the process stopped, is sent again by the
/// next leader — with the same delivery id, so the receiver can tell — and recorded once.
#[tokio::test]
async fn a_send_whose_record_was_lost_is_repeated_with_the_same_delivery_id() {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let channels = format!(
        "    hook: {{type: webhook, url: '{}', secretFile: {}}}\n",
        receiver.url("/hook"),
        secret_file(dir.path()).display()
    );
    let mut h = Harness::new(&notifications(&channels)).await;
    seed(&h).await;
    h.start();
    h.request("r", "g", ALICE, "30m", |_| {}).await;
    eventually("activation recorded", || async {
        h.delivery("r").await.notifications.len() == 1
    })
    .await;
    let reminders = || {
        receiver
            .hits("/hook")
            .into_iter()
            .filter(|hit| hit.json()["event"] == "expiringSoon")
            .collect::<Vec<_>>()
    };
    // The API server refuses every write to requests: the reminder goes out, its record fails.
    h.server
        .fail_all(500, FaultScope::writes().resource("activationrequests"));
    h.advance(15);
    eventually("the reminder is sent", || async { reminders().len() == 1 }).await;
    h.stop().await;
    h.server.clear_faults();
    assert!(
        h.delivery("r")
            .await
            .notifications
            .iter()
            .all(|r| r.event != "expiringSoon")
    );

    h.start();
    eventually("the reminder is recorded", || async {
        h.delivery("r")
            .await
            .notifications
            .iter()
            .any(|r| r.event == "expiringSoon")
    })
    .await;
    h.stop().await;
    let sent = reminders();
    assert_eq!(sent.len(), 2, "at-least-once across the lost record");
    assert_eq!(
        sent[0].header("x-pim-delivery"),
        sent[1].header("x-pim-delivery")
    );
    assert_eq!(
        h.delivery("r")
            .await
            .notifications
            .iter()
            .filter(|r| r.event == "expiringSoon")
            .count(),
        1
    );
}

/// Entra setups mail through Graph `sendMail` on the entra directory's connection.
#[tokio::test]
async fn graph_send_mail_goes_through_the_entra_connection() {
    let fake = graph::FakeGraph::start().await;
    fake.add_user("pim@contoso.com");
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("client-secret");
    let entra = fake.config(&secret);
    let config = format!(
        "directories:\n  entra:\n    type: entra\n    tenantId: {}\n    clientId: {}\n    credential: {{type: clientSecret, secretFile: {}}}\n    authorityHost: '{}'\n    graphEndpoint: '{}'\n{}",
        graph::TENANT,
        graph::CLIENT_ID,
        secret.display(),
        entra.authority_host.unwrap(),
        entra.graph_endpoint,
        notifications(
            "    graph: {type: graph, directory: entra, from: pim@contoso.com, events: [activated]}\n"
        )
    );
    let mut h = Harness::new(&config).await;
    seed(&h).await;
    h.start();
    h.request("r", "g", ALICE, "30m", |_| {}).await;
    eventually("the activation is mailed and recorded", || async {
        h.delivery("r")
            .await
            .notifications
            .iter()
            .any(|r| r.channel == "graph" && r.outcome == DeliveryOutcome::Sent)
    })
    .await;
    h.stop().await;
    let mail = fake.mail();
    assert_eq!(mail.len(), 1, "{mail:#?}");
    let message = &mail[0]["message"];
    assert_eq!(
        message["toRecipients"],
        serde_json::json!([{"emailAddress": {"address": ALICE}}])
    );
    assert_eq!(
        message["subject"],
        "[PIM] alice@contoso.com activated the member role of g"
    );
    assert_eq!(message["body"]["contentType"], "HTML");
    assert!(
        message["body"]["content"]
            .as_str()
            .unwrap()
            .contains("<td>incident 42</td>")
    );
    assert_eq!(mail[0]["from"], "pim@contoso.com");
    fake.assert_clean();
}

/// The notification and audit guide's config is a config the operator accepts.
#[test]
fn the_notification_guide_config_parses() {
    let section = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/notifications-and-audit.md"),
    )
    .unwrap();
    let start = section.find("```yaml\nnotifications:").unwrap() + "```yaml\n".len();
    let block = &section[start..];
    let block = &block[..block.find("```").unwrap()];
    let entra = "directories:\n  entra: {type: entra, tenantId: contoso.com, clientId: 1c2d3e4f-5a6b-4c7d-8e9f-a0b1c2d3e4f5, credential: {type: clientSecret, secretFile: /s}}\n";
    let settings = pim_operator::config::Config::parse(
        &format!("{entra}{block}"),
        "docs/notifications-and-audit.md",
    )
    .unwrap();
    let config = settings.config;
    assert_eq!(config.notifications.channels.len(), 5);
    assert!(config.audit.http.is_some() && config.audit.retention.enabled);
}

/// The reminder records of an assignment: (recipient, the end each was about).
async fn reminders_recorded(h: &Harness, name: &str) -> Vec<(String, String)> {
    let a: pim_operator::api::EligibleAssignment = h.api().get(name).await.unwrap();
    let mut out: Vec<(String, String)> = a
        .status
        .and_then(|s| s.delivery)
        .unwrap_or_default()
        .notifications
        .into_iter()
        .filter(|r| r.event == "eligibilityEnding" && r.outcome == DeliveryOutcome::Sent)
        .map(|r| {
            let ends = r.ends.map(|t| t.0.to_string()).unwrap_or_default();
            (r.recipient, ends)
        })
        .collect();
    out.sort();
    out
}

/// Eligibility reminders on virtual time, as Entra sends them: `eligibilityEndingLead` (14d by
/// default) before the effective end, to the principal and the admins, or as the policy's
/// `eligibilityEnding` rule says; once per end, across a restart; a renewed end is reminded of
/// again, with a delivery id of its own.
#[tokio::test]
async fn an_ending_eligibility_is_reminded_of_once_per_end() {
    use pim_operator::api::access_policy::NotificationRule;
    const DAVE: &str = "dave@contoso.com";
    const DAY: i64 = 24 * 60;
    let server = SmtpServer::start();
    let mut h = Harness::new(&notifications(&smtp_channel(&server, server.port()))).await;
    h.policy("pe", "1h", &[], |spec| {
        spec.notifications = Some(NotificationSettings {
            admins: vec![SECOPS.into()],
            ..Default::default()
        })
    })
    .await;
    h.group("ge", "pe").await;
    // 30 days ahead, to dave and carol, not the admins.
    h.policy("pq", "1h", &[], |spec| {
        spec.notifications = Some(NotificationSettings {
            admins: vec![SECOPS.into()],
            eligibility_ending_lead: Some("30d".into()),
            eligibility_ending: Some(NotificationRule {
                admins: Some(false),
                additional_recipients: vec![CAROL.into()],
                ..Default::default()
            }),
            ..Default::default()
        })
    })
    .await;
    h.group("gq", "pq").await;
    // Both 90 days from 2026-03-02T09:00:00Z: they end 2026-05-31T09:00:00Z.
    h.assignment("alice-ge", "ge", ALICE).await;
    h.assignment("dave-gq", "gq", DAVE).await;
    h.start();
    wait_mails(
        &server,
        "secops hears alice is eligible",
        1,
        SECOPS,
        "is eligible",
    )
    .await;
    wait_mails(&server, "dave hears he is eligible", 1, DAVE, "is eligible").await;
    let ending = |group: &str, end: &str| {
        format!("eligibility for the member role of {group} ends at {end}")
    };
    let first_end = "2026-05-31T09:00:00Z";

    // dave's policy reminds 30 days ahead: 2026-05-01T09:00:00Z.
    h.advance(60 * DAY - 1);
    h.advance(1);
    wait_mails(
        &server,
        "dave is reminded",
        1,
        DAVE,
        &ending("gq", first_end),
    )
    .await;
    wait_mails(&server, "carol is told", 1, CAROL, &ending("gq", first_end)).await;
    let reminded = mails_to(&server.received(), DAVE, &ending("gq", first_end))[0].clone();
    assert!(
        reminded.text().contains("renew the assignment"),
        "{}",
        reminded.text()
    );
    assert!(
        reminded.text().contains("EligibleAssignment: dave-gq"),
        "{}",
        reminded.text()
    );

    // alice's, by the default 14 days: not a minute early.
    h.advance(16 * DAY - 1);
    eventually("dave's reminder recorded", || async {
        reminders_recorded(&h, "dave-gq").await.len() == 2
    })
    .await;
    assert!(mails_to(&server.received(), ALICE, "ends at").is_empty());
    h.advance(1);
    wait_mails(
        &server,
        "alice is reminded",
        1,
        ALICE,
        &ending("ge", first_end),
    )
    .await;
    wait_mails(
        &server,
        "secops is told",
        1,
        SECOPS,
        &ending("ge", first_end),
    )
    .await;
    eventually("alice's reminders recorded with their end", || async {
        reminders_recorded(&h, "alice-ge").await
            == [
                (ALICE.to_owned(), first_end.to_owned()),
                (SECOPS.to_owned(), first_end.to_owned()),
            ]
    })
    .await;

    // A new leader reads the records: the same end is not reminded of again.
    h.stop().await;
    h.start();
    h.advance(DAY);

    // Renewed in Git: 180 days, so it now ends 2026-08-29T09:00:00Z, reminded of at 08-15.
    let renew = serde_json::json!({"spec": {"schedule": {"duration": "180d"}}});
    h.api::<pim_operator::api::EligibleAssignment>()
        .patch(
            "alice-ge",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&renew),
        )
        .await
        .unwrap();
    let second_end = "2026-08-29T09:00:00Z";
    eventually("the new end is in status", || async {
        let a: pim_operator::api::EligibleAssignment = h.api().get("alice-ge").await.unwrap();
        a.status
            .and_then(|s| s.effective_end)
            .is_some_and(|t| t.0.to_string() == second_end)
    })
    .await;
    h.advance(89 * DAY);
    wait_mails(
        &server,
        "alice is reminded of the new end",
        1,
        ALICE,
        &ending("ge", second_end),
    )
    .await;
    wait_mails(
        &server,
        "secops is told of the new end",
        1,
        SECOPS,
        &ending("ge", second_end),
    )
    .await;
    eventually("the records name the new end", || async {
        reminders_recorded(&h, "alice-ge").await
            == [
                (ALICE.to_owned(), second_end.to_owned()),
                (SECOPS.to_owned(), second_end.to_owned()),
            ]
    })
    .await;
    h.stop().await;

    let mails = server.received();
    for to in [ALICE, SECOPS] {
        assert_eq!(
            mails_to(&mails, to, &ending("ge", first_end)).len(),
            1,
            "{to}"
        );
        assert_eq!(
            mails_to(&mails, to, &ending("ge", second_end)).len(),
            1,
            "{to}"
        );
    }
    assert_eq!(mails_to(&mails, DAVE, "ends at").len(), 1);
    assert_eq!(mails_to(&mails, CAROL, "ends at").len(), 1);
    assert!(
        mails_to(&mails, SECOPS, "of gq ends at").is_empty(),
        "the rule leaves the admins out"
    );
    let ids: Vec<&str> = mails_to(&mails, ALICE, "ends at")
        .iter()
        .map(|m| m.message_id.as_str())
        .collect();
    assert_eq!(ids.len(), 2);
    assert_ne!(ids[0], ids[1], "each end has its own delivery id");
}

/// An approver who asks for access is not asked to approve it (self-approval is refused).
#[tokio::test]
async fn nobody_is_asked_to_approve_their_own_request() {
    let server = SmtpServer::start();
    let mut h = Harness::new(&notifications(&smtp_channel(&server, server.port()))).await;
    h.policy("ps", "1h", &[ALICE, BOB], |_| {}).await;
    h.group("gs", "ps").await;
    h.assignment("alice-gs", "gs", ALICE).await;
    h.start();
    h.request("r", "gs", ALICE, "30m", |_| {}).await;
    h.wait_phase("r", Phase::PendingApproval).await;
    wait_mails(&server, "bob is asked", 1, BOB, "Approval needed").await;
    h.stop().await;
    let asked_alice = mails_to(&server.received(), ALICE, "Approval needed").len();
    assert_eq!(asked_alice, 0, "alice was asked to approve her own request");
}
