//! `kubectl pim audit --since 30d -o csv|json`: the audit records rebuilt from the
//! ActivationRequests and the history in their status, one per transition, oldest first.
//! They carry the same fields as the records the operator emits; the policy and directory ids
//! come from what the operator recorded in `status.delivery.audit`, or else from the objects
//! as they are now.

use jiff::Timestamp;

use super::record::{AuditRecord, REQUEST_KIND, records, snapshot};
use crate::api::delivery::AuditSnapshot;
use crate::api::{AccessPolicy, ActivationRequest, EligibleAssignment, PimGroup};
use crate::core::{duration, time::add};
use crate::engine::Catalog;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    Csv,
    Json,
}

impl std::str::FromStr for ExportFormat {
    type Err = AuditError;

    fn from_str(text: &str) -> Result<Self, AuditError> {
        match text.trim().to_ascii_lowercase().as_str() {
            "csv" => Ok(ExportFormat::Csv),
            "json" => Ok(ExportFormat::Json),
            other => Err(AuditError::Format(other.to_owned())),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(
        "--since {0:?}: give a duration back from now (30d, 12h, P30D) or an RFC 3339 time (2026-03-01T00:00:00Z)"
    )]
    Since(String),
    #[error(
        "--until {0:?}: give a duration back from now (1d, 12h, P1D) or an RFC 3339 time (2026-03-31T00:00:00Z)"
    )]
    Until(String),
    #[error("--until {until} is before --since {since}: nothing could match")]
    Range { since: Timestamp, until: Timestamp },
    #[error("-o {0:?}: the audit export is csv or json")]
    Format(String),
    #[error(
        "--kind {0:?}: give one of ActivationRequest, EligibleAssignment, AccessPolicy, PimGroup"
    )]
    Kind(String),
    #[error(
        "--kind {0}: the cluster keeps the history of ActivationRequests only; changes to {0}s and the operator's own directory writes are in its audit trail (the `audit.file` of its config): pass a copy with --file"
    )]
    KindNeedsTrail(&'static str),
    #[error("--file {path}: {problem}")]
    Trail { path: String, problem: String },
    #[error("listing {kind}: {source}")]
    Kube {
        kind: &'static str,
        source: kube::Error,
    },
    #[error("encoding the export: {0}")]
    Encode(#[from] serde_json::Error),
}

/// `--since`: a duration back from `now`, or a point in time.
pub fn parse_since(text: &str, now: Timestamp) -> Result<Timestamp, AuditError> {
    let text = text.trim();
    if let Ok(at) = text.parse::<Timestamp>() {
        return Ok(at);
    }
    duration::parse("--since", text)
        .map(|d| add(now, -d))
        .map_err(|_| AuditError::Since(text.to_owned()))
}

/// What `kubectl pim audit` asked for, as typed.
#[derive(Debug, Clone, Copy)]
pub struct AuditQuery<'a> {
    pub since: &'a str,
    pub until: Option<&'a str>,
    pub principal: Option<&'a str>,
    pub group: Option<&'a str>,
    /// `--kind`: one of [`AUDIT_KINDS`], ASCII case ignored.
    pub kind: Option<&'a str>,
    /// `--file` (repeatable): read the operator's audit trail (JSON Lines, each replica's
    /// file) instead of the cluster.
    pub files: &'a [std::path::PathBuf],
}

/// The kinds audit records concern.
pub const AUDIT_KINDS: &[&str] = &[
    REQUEST_KIND,
    "EligibleAssignment",
    "AccessPolicy",
    "PimGroup",
    "AccessReview",
];

/// Which records an export keeps: those in `[since, until)`, of one principal, of one PimGroup
/// and of one kind when given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditFilter {
    pub since: Timestamp,
    pub until: Option<Timestamp>,
    pub principal: Option<String>,
    pub group: Option<String>,
    /// One of [`AUDIT_KINDS`], as spelled there.
    pub kind: Option<&'static str>,
}

impl AuditFilter {
    /// Every record from `since` on.
    pub fn since(since: Timestamp) -> Self {
        AuditFilter {
            since,
            until: None,
            principal: None,
            group: None,
            kind: None,
        }
    }

    pub fn parse(query: AuditQuery<'_>, now: Timestamp) -> Result<Self, AuditError> {
        let since = parse_since(query.since, now)?;
        let until = query
            .until
            .map(|text| parse_since(text, now).map_err(|_| AuditError::Until(text.to_owned())))
            .transpose()?;
        if let Some(until) = until
            && until < since
        {
            return Err(AuditError::Range { since, until });
        }
        let kind = given(query.kind)
            .map(|wanted| {
                AUDIT_KINDS
                    .iter()
                    .find(|k| k.eq_ignore_ascii_case(&wanted))
                    .copied()
                    .ok_or(AuditError::Kind(wanted))
            })
            .transpose()?;
        Ok(AuditFilter {
            since,
            until,
            principal: given(query.principal),
            group: given(query.group),
            kind,
        })
    }

    /// Principals compare as the webhook's `emailLike` default does (ASCII case ignored), so
    /// `--principal Alice@Contoso.com` finds alice@contoso.com; PimGroup names and kinds
    /// exactly.
    pub fn keeps(&self, record: &AuditRecord) -> bool {
        self.keeps_fields(
            record.time,
            &record.kind,
            record.principal.as_deref(),
            Some(&record.group),
        )
    }

    /// [`AuditFilter::keeps`] on the fields every line of the trail has, whatever its shape.
    pub fn keeps_fields(
        &self,
        time: Timestamp,
        kind: &str,
        principal: Option<&str>,
        group: Option<&str>,
    ) -> bool {
        time >= self.since
            && self.until.is_none_or(|until| time < until)
            && self
                .principal
                .as_deref()
                .is_none_or(|wanted| principal.is_some_and(|p| p.eq_ignore_ascii_case(wanted)))
            && self.group.as_deref().is_none_or(|g| group == Some(g))
            && self.kind.is_none_or(|k| kind == k)
    }
}

/// A filter's value: blank is not given.
fn given(text: Option<&str>) -> Option<String> {
    text.map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
}

/// What the operator recorded when it emitted the records, and only where it recorded nothing
/// what the objects say now: a policy changed or deleted since does not rewrite history.
fn recorded_first(stored: Option<&AuditSnapshot>, now: AuditSnapshot) -> AuditSnapshot {
    let Some(stored) = stored else {
        return now;
    };
    AuditSnapshot {
        policy: stored.policy.clone().or(now.policy),
        policy_generation: stored.policy_generation.or(now.policy_generation),
        directory: stored.directory.clone().or(now.directory),
        group_id: stored.group_id.clone().or(now.group_id),
        principal_id: stored.principal_id.clone().or(now.principal_id),
        mfa_verified: stored.mfa_verified.or(now.mfa_verified),
        retries: stored.retries.or(now.retries),
    }
}

/// The records of every transition `filter` keeps, oldest first. `catalog`, when given,
/// supplies policy and directory ids for requests the operator has not recorded them on.
pub fn records_matching<'a>(
    requests: impl IntoIterator<Item = &'a ActivationRequest>,
    catalog: Option<&Catalog>,
    filter: &AuditFilter,
) -> Vec<AuditRecord> {
    let empty = Catalog::default();
    let catalog = catalog.unwrap_or(&empty);
    let mut out: Vec<AuditRecord> = Vec::new();
    for request in requests {
        let Some(status) = request.status.as_ref() else {
            continue;
        };
        let stored = status.delivery.as_ref().and_then(|d| d.audit.as_ref());
        let snap = recorded_first(stored, snapshot(request, catalog, None, None));
        let retries = snap
            .retries
            .and_then(|r| u32::try_from(r).ok())
            .unwrap_or(0);
        out.extend(
            records(request, &snap, 0..status.history.len(), retries)
                .into_iter()
                .filter(|r| filter.keeps(r)),
        );
    }
    out.sort_by(|a, b| (a.time, &a.request, a.transition).cmp(&(b.time, &b.request, b.transition)));
    out
}

/// The export of `requests` from `since` on, in `format`, from what the requests hold.
pub fn export(
    requests: &[ActivationRequest],
    since: Timestamp,
    format: ExportFormat,
) -> Result<String, AuditError> {
    render(
        &records_matching(requests, None, &AuditFilter::since(since)),
        format,
    )
}

/// As [`export`], with the other kinds at hand to fill in what a request does not record.
pub fn export_catalog(
    catalog: &Catalog,
    filter: &AuditFilter,
    format: ExportFormat,
) -> Result<String, AuditError> {
    let requests = catalog.requests.values().map(|r| r.as_ref());
    render(&records_matching(requests, Some(catalog), filter), format)
}

pub fn render(records: &[AuditRecord], format: ExportFormat) -> Result<String, AuditError> {
    match format {
        ExportFormat::Json => {
            let mut text = serde_json::to_string_pretty(records)?;
            text.push('\n');
            Ok(text)
        }
        ExportFormat::Csv => Ok(csv(records)),
    }
}

/// The CSV columns, in order.
pub const CSV_COLUMNS: &[&str] = &[
    "id",
    "time",
    "request",
    "uid",
    "transition",
    "from",
    "outcome",
    "terminal",
    "reason",
    "message",
    "requester",
    "requesterUid",
    "requesterGroups",
    "principal",
    "principalId",
    "group",
    "role",
    "directory",
    "directoryGroupId",
    "policy",
    "policyGeneration",
    "justification",
    "ticketSystem",
    "ticketNumber",
    "requestedDuration",
    "approvals",
    "approvedBy",
    "mfaEvidence",
    "mfaVerified",
    "startsAt",
    "expiresAt",
    "endClippedBy",
    "activatedAt",
    "endedAt",
    "retryCount",
    "extends",
];

/// One CSV cell (RFC 4180). Text people typed that a spreadsheet would run as a formula
/// (`=`, `+`, `-`, `@`, tab, CR first) is prefixed with `'`.
pub(super) fn cell(value: &str) -> String {
    let value = if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}")
    } else {
        value.to_owned()
    };
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value
    }
}

fn opt<T: ToString>(value: &Option<T>) -> String {
    value.as_ref().map(ToString::to_string).unwrap_or_default()
}

fn csv(records: &[AuditRecord]) -> String {
    let mut out = CSV_COLUMNS.join(",");
    out.push_str("\r\n");
    for r in records {
        let requester = r.requester.as_ref();
        let approvals: Vec<String> = r
            .approvals
            .iter()
            .map(|a| {
                let mut text = format!("{} {}", a.approver, a.decision);
                if let Some(time) = a.time {
                    text.push_str(&format!(" at {time}"));
                }
                if let Some(reason) = &a.reason {
                    text.push_str(&format!(": {reason}"));
                }
                text
            })
            .collect();
        let row = [
            r.id.clone(),
            r.time.to_string(),
            r.request.clone(),
            r.uid.clone(),
            r.transition.to_string(),
            opt(&r.from),
            r.outcome.clone(),
            r.terminal.to_string(),
            r.reason.clone(),
            opt(&r.message),
            requester.map(|q| q.username.clone()).unwrap_or_default(),
            requester.and_then(|q| q.uid.clone()).unwrap_or_default(),
            requester.map(|q| q.groups.join(";")).unwrap_or_default(),
            opt(&r.principal),
            opt(&r.principal_id),
            r.group.clone(),
            r.role.clone(),
            opt(&r.directory),
            opt(&r.directory_group_id),
            opt(&r.policy),
            opt(&r.policy_generation),
            opt(&r.justification),
            opt(&r.ticket_system),
            opt(&r.ticket_number),
            opt(&r.requested_duration),
            approvals.join("; "),
            r.approved_by.join(";"),
            opt(&r.mfa_evidence),
            opt(&r.mfa_verified),
            opt(&r.starts_at),
            opt(&r.expires_at),
            opt(&r.end_clipped_by),
            opt(&r.activated_at),
            opt(&r.ended_at),
            r.retry_count.to_string(),
            opt(&r.extends),
        ];
        let cells: Vec<String> = row.iter().map(|v| cell(v)).collect();
        out.push_str(&cells.join(","));
        out.push_str("\r\n");
    }
    out
}

async fn list<K>(client: &kube::Client, kind: &'static str) -> Result<Vec<K>, AuditError>
where
    K: kube::Resource<DynamicType = (), Scope = kube::core::ClusterResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    crate::lenient::list_well_formed(client)
        .await
        .map_err(|source| AuditError::Kube { kind, source })
}

/// `kubectl pim audit --since SINCE [--until UNTIL] [--principal P] [--group G] [--kind K]
/// [--file TRAIL] -o FORMAT`: lists the four kinds and exports, or filters the trail file
/// given. Listing needs `list` on the kinds (the `pim-auditor` role).
pub async fn audit_command(
    client: kube::Client,
    query: AuditQuery<'_>,
    format: &str,
    now: Timestamp,
) -> Result<String, AuditError> {
    let format: ExportFormat = format.parse()?;
    let filter = AuditFilter::parse(query, now)?;
    if !query.files.is_empty() {
        return super::trail::export_files(query.files, &filter, format);
    }
    if let Some(kind) = filter.kind.filter(|k| *k != REQUEST_KIND) {
        return Err(AuditError::KindNeedsTrail(kind));
    }
    let mut catalog = Catalog::default();
    for request in list::<ActivationRequest>(&client, "activationrequests").await? {
        catalog.insert_request(request);
    }
    // The other kinds only fill in gaps; a user who may not list them still gets the export.
    if let Ok(policies) = list::<AccessPolicy>(&client, "accesspolicies").await {
        policies.into_iter().for_each(|p| catalog.insert_policy(p));
    }
    if let Ok(groups) = list::<PimGroup>(&client, "pimgroups").await {
        groups.into_iter().for_each(|g| catalog.insert_group(g));
    }
    if let Ok(assignments) = list::<EligibleAssignment>(&client, "eligibleassignments").await {
        assignments
            .into_iter()
            .for_each(|a| catalog.insert_assignment(a));
    }
    export_catalog(&catalog, &filter, format)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::tests::approved_request;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn since_takes_durations_and_times() {
        let now = t("2026-03-31T00:00:00Z");
        assert_eq!(parse_since("30d", now).unwrap(), t("2026-03-01T00:00:00Z"));
        assert_eq!(parse_since("P1D", now).unwrap(), t("2026-03-30T00:00:00Z"));
        assert_eq!(
            parse_since("2026-03-02T09:00:00Z", now).unwrap(),
            t("2026-03-02T09:00:00Z")
        );
        assert!(parse_since("last week", now).is_err());
        assert!("yaml".parse::<ExportFormat>().is_err());
        assert_eq!("CSV".parse::<ExportFormat>().unwrap(), ExportFormat::Csv);
    }

    #[test]
    fn the_filter_keeps_a_time_range_one_principal_and_one_group() {
        let now = t("2026-03-31T00:00:00Z");
        let r = approved_request();
        let times = |query: AuditQuery<'_>| -> Vec<String> {
            let filter = AuditFilter::parse(query, now).unwrap();
            records_matching([&r], None, &filter)
                .iter()
                .map(|rec| format!("{} {}", rec.time, rec.outcome))
                .collect()
        };
        let all = AuditQuery {
            since: "30d",
            until: None,
            principal: None,
            group: None,
            kind: None,
            files: &[],
        };
        assert_eq!(times(all).len(), 4);
        // Until is exclusive: the 09:40 end is left for the next window.
        assert_eq!(
            times(AuditQuery {
                since: "2026-03-02T09:05:00Z",
                until: Some("2026-03-02T09:40:00Z"),
                ..all
            }),
            [
                "2026-03-02T09:10:00Z Scheduled",
                "2026-03-02T09:10:00Z Active"
            ]
        );
        let principal = |p: &'static str| AuditQuery {
            principal: Some(p),
            ..all
        };
        assert_eq!(times(principal("Alice@Contoso.com")).len(), 4);
        assert!(times(principal("bob@contoso.com")).is_empty());
        assert_eq!(
            times(AuditQuery {
                group: Some("finreport"),
                ..all
            })
            .len(),
            4
        );
        assert!(
            times(AuditQuery {
                group: Some("FinReport"),
                ..all
            })
            .is_empty()
        );
        // Blank means not given.
        assert_eq!(
            times(AuditQuery {
                group: Some(" "),
                ..all
            })
            .len(),
            4
        );

        let err = AuditFilter::parse(
            AuditQuery {
                until: Some("yesterday"),
                ..all
            },
            now,
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("--until \"yesterday\""), "{err}");
        let err = AuditFilter::parse(
            AuditQuery {
                since: "1d",
                until: Some("2d"),
                ..all
            },
            now,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("is before --since"), "{err}");
    }

    #[test]
    fn csv_has_a_row_per_transition_and_quotes_what_needs_it() {
        let mut r = approved_request();
        r.spec.justification = Some("=HYPERLINK(\"x\"), then \"close\"".into());
        let text = export(&[r], t("2026-03-02T09:05:00Z"), ExportFormat::Csv).unwrap();
        let lines: Vec<&str> = text.split("\r\n").filter(|l| !l.is_empty()).collect();
        assert_eq!(lines[0], CSV_COLUMNS.join(","));
        assert_eq!(lines.len(), 4, "3 transitions since 09:05, plus the header");
        assert!(lines[1].starts_with(
            "uid-1/1,2026-03-02T09:10:00Z,alice-q2,uid-1,1,PendingApproval,Scheduled,"
        ));
        assert!(
            lines[3].contains("\"'=HYPERLINK(\"\"x\"\"), then \"\"close\"\"\""),
            "{}",
            lines[3]
        );
        assert!(lines[3].contains("bob Approve at 2026-03-02T09:10:00Z: ok"));
        assert!(lines[3].contains(",oidc:alice,u-alice,finance,alice@contoso.com,"));
    }

    #[test]
    fn recorded_values_win_over_the_objects_as_they_are_now() {
        let mut r = approved_request();
        let policy: AccessPolicy = serde_json::from_value(serde_json::json!({
            "apiVersion": "pim.dev/v1alpha1", "kind": "AccessPolicy",
            "metadata": {"name": "p-now", "generation": 3}, "spec": {}
        }))
        .unwrap();
        let group: PimGroup = serde_json::from_value(serde_json::json!({
            "apiVersion": "pim.dev/v1alpha1", "kind": "PimGroup",
            "metadata": {"name": "finreport"},
            "spec": {"directory": "entra", "group": {"displayName": "FinReport"},
                     "roles": {"member": {"policy": "p-now"}}}
        }))
        .unwrap();
        let mut catalog = Catalog::default();
        catalog.insert_policy(policy);
        catalog.insert_group(group);
        // Nothing recorded: the objects as they are.
        let now = records_matching(
            [&r],
            Some(&catalog),
            &AuditFilter::since(t("2026-01-01T00:00:00Z")),
        );
        assert_eq!(
            (now[0].policy.as_deref(), now[0].policy_generation),
            (Some("p-now"), Some(3))
        );
        // Recorded at emission: that, even though the group now names another policy.
        if let Some(status) = r.status.as_mut() {
            status.delivery = Some(crate::api::delivery::Delivery {
                audit: Some(AuditSnapshot {
                    policy: Some("p-then".into()),
                    policy_generation: Some(1),
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
        let then = records_matching(
            [&r],
            Some(&catalog),
            &AuditFilter::since(t("2026-01-01T00:00:00Z")),
        );
        assert_eq!(
            (then[0].policy.as_deref(), then[0].policy_generation),
            (Some("p-then"), Some(1))
        );
        assert_eq!(
            then[0].directory.as_deref(),
            Some("entra"),
            "unrecorded: as now"
        );
    }

    #[test]
    fn json_is_the_records() {
        let text = export(
            &[approved_request()],
            t("2026-01-01T00:00:00Z"),
            ExportFormat::Json,
        )
        .unwrap();
        let parsed: Vec<AuditRecord> = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed.len(), 4);
        assert_eq!(parsed[0].outcome, "PendingApproval");
        assert_eq!(parsed[3].outcome, "Expired");
        assert_eq!(parsed[3].ticket_number.as_deref(), Some("CHG42"));
    }
}
