//! `kubectl pim audit --file TRAIL`: the operator's audit trail as its `audit.file` sink wrote
//! it (JSON Lines), filtered by time, kind, principal and group. Request transitions are in the
//! cluster too; changes to the declarative kinds and the operator's own directory writes are
//! only here.

use std::path::Path;

use jiff::Timestamp;
use serde_json::Value;

use super::export::{AuditError, AuditFilter, ExportFormat};
use super::record::REQUEST_KIND;

/// The CSV columns of a trail export: what lines of every shape have, by the same names.
pub const TRAIL_COLUMNS: &[&str] = &[
    "id",
    "time",
    "kind",
    "action",
    "name",
    "principal",
    "group",
    "role",
    "user",
    "allowed",
    "reason",
    "changes",
];

/// One line of the trail and what the filter reads of it.
struct Line {
    time: Timestamp,
    kind: String,
    value: Value,
}

/// The lines of `text` (the file `path`), each checked for what filtering needs.
fn parse(path: &Path, text: &str) -> Result<Vec<Line>, AuditError> {
    let problem = |number: usize, problem: String| AuditError::Trail {
        path: format!("{}:{number}", path.display()),
        problem,
    };
    let mut lines = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(raw)
            .map_err(|e| problem(number, format!("not a JSON audit record: {e}")))?;
        if !value.is_object() {
            return Err(problem(number, "not a JSON object".to_owned()));
        }
        let time = value
            .get("time")
            .and_then(Value::as_str)
            .ok_or_else(|| problem(number, "no `time`".to_owned()))?
            .parse::<Timestamp>()
            .map_err(|e| problem(number, format!("`time` is not an RFC 3339 time: {e}")))?;
        // Lines written before records named their kind are request transitions.
        let kind = match value.get("kind") {
            None => REQUEST_KIND.to_owned(),
            Some(Value::String(kind)) => kind.clone(),
            Some(_) => return Err(problem(number, "`kind` is not a string".to_owned())),
        };
        lines.push(Line { time, kind, value });
    }
    Ok(lines)
}

fn string_at<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    value.pointer(pointer).and_then(Value::as_str)
}

/// The lines of the trails `files` (each a path and its text) that `filter` keeps, oldest
/// first (lines of the same time keep their order), each `id` once: every replica's webhook
/// writes its own file, and the request records a leader change repeats carry the same id.
pub fn matching(files: &[(&Path, &str)], filter: &AuditFilter) -> Result<Vec<Value>, AuditError> {
    let mut seen = std::collections::HashSet::new();
    let mut kept: Vec<Line> = Vec::new();
    for (path, text) in files {
        for line in parse(path, text)? {
            // A change that moved an assignment is about both sides.
            let keeps = |principal: &str, group: &str| {
                filter.keeps_fields(
                    line.time,
                    &line.kind,
                    string_at(&line.value, principal).or(string_at(&line.value, "/principal")),
                    string_at(&line.value, group).or(string_at(&line.value, "/group")),
                )
            };
            let id = string_at(&line.value, "/id").map(str::to_owned);
            if (keeps("/principal", "/group") || keeps("/previousPrincipal", "/previousGroup"))
                && id.is_none_or(|id| seen.insert(id))
            {
                kept.push(line);
            }
        }
    }
    kept.sort_by_key(|line| line.time);
    Ok(kept.into_iter().map(|line| line.value).collect())
}

/// Reads the trail files at `paths` and exports what `filter` keeps.
pub fn export_files(
    paths: &[std::path::PathBuf],
    filter: &AuditFilter,
    format: ExportFormat,
) -> Result<String, AuditError> {
    let mut texts = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(path).map_err(|e| AuditError::Trail {
            path: path.display().to_string(),
            problem: e.to_string(),
        })?;
        texts.push((path.as_path(), text));
    }
    let files: Vec<(&Path, &str)> = texts.iter().map(|(p, t)| (*p, t.as_str())).collect();
    render(&matching(&files, filter)?, format)
}

fn render(lines: &[Value], format: ExportFormat) -> Result<String, AuditError> {
    match format {
        ExportFormat::Json => {
            let mut text = serde_json::to_string_pretty(lines)?;
            text.push('\n');
            Ok(text)
        }
        ExportFormat::Csv => {
            let mut out = TRAIL_COLUMNS.join(",");
            out.push_str("\r\n");
            for line in lines {
                let first = |pointers: &[&str]| {
                    pointers
                        .iter()
                        .find_map(|p| line.pointer(p).filter(|v| !v.is_null()))
                        .map(|v| match v {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        })
                        .unwrap_or_default()
                };
                let kind = line
                    .get("kind")
                    .and_then(Value::as_str)
                    .unwrap_or(REQUEST_KIND);
                let row = [
                    first(&["/id"]),
                    first(&["/time"]),
                    kind.to_owned(),
                    first(&["/action", "/outcome"]),
                    first(&["/name", "/request"]),
                    first(&["/principal"]),
                    first(&["/group"]),
                    first(&["/role"]),
                    first(&["/user/username", "/requester/username"]),
                    first(&["/allowed"]),
                    first(&["/denial", "/reason"]),
                    first(&["/changes"]),
                ];
                let cells: Vec<String> = row.iter().map(|v| super::export::cell(v)).collect();
                out.push_str(&cells.join(","));
                out.push_str("\r\n");
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::export::AuditQuery;

    const TRAIL: &str = r#"{"id":"u1/0","time":"2026-11-01T09:00:00Z","request":"r1","uid":"u1","transition":0,"outcome":"Active","terminal":false,"reason":"Active","principal":"alice@contoso.com","group":"ops","role":"member","approvals":[],"approvedBy":[],"retryCount":0}
{"id":"a-1","time":"2026-11-01T08:00:00Z","kind":"AccessPolicy","action":"Updated","name":"open","user":{"username":"oidc:carol","groups":[]},"allowed":true,"changes":[{"path":"/spec/activation/maxDuration","before":"8h","after":"=2h"}]}

{"id":"ops/member/user:alice@contoso.com/Granted/2026-11-01T10:00:00Z","time":"2026-11-01T10:00:00Z","kind":"EligibleAssignment","action":"Granted","name":"alice-ops","principal":"Alice@Contoso.com","group":"ops","role":"member"}
{"id":"a-2","time":"2026-11-01T11:00:00Z","kind":"EligibleAssignment","action":"Updated","name":"carol-ops","principal":"dave@contoso.com","previousPrincipal":"carol@contoso.com","group":"ops","role":"member","user":{"username":"oidc:erin","groups":[]},"allowed":true}
"#;

    fn query() -> AuditQuery<'static> {
        AuditQuery {
            since: "2026-10-01T00:00:00Z",
            until: None,
            principal: None,
            group: None,
            kind: None,
            files: &[],
        }
    }

    fn kept(query: AuditQuery<'_>) -> Vec<String> {
        let filter = AuditFilter::parse(query, "2026-12-01T00:00:00Z".parse().unwrap()).unwrap();
        matching(&[(Path::new("trail.jsonl"), TRAIL)], &filter)
            .unwrap()
            .iter()
            .map(|v| v["id"].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn the_trail_filters_by_kind_principal_group_and_time_oldest_first() {
        assert_eq!(kept(query()).len(), 4);
        assert_eq!(kept(query())[0], "a-1");
        let policies = kept(AuditQuery {
            kind: Some("accesspolicy"),
            ..query()
        });
        assert_eq!(policies, ["a-1"]);
        // A line without `kind` is a request transition, as written before lines had one.
        let requests = kept(AuditQuery {
            kind: Some("ActivationRequest"),
            ..query()
        });
        assert_eq!(requests, ["u1/0"]);
        let alices = kept(AuditQuery {
            principal: Some("alice@contoso.com"),
            ..query()
        });
        assert_eq!(alices.len(), 2);
        // An assignment moved from carol to dave is about both.
        for who in ["carol@contoso.com", "dave@contoso.com"] {
            let found = kept(AuditQuery {
                principal: Some(who),
                ..query()
            });
            assert_eq!(found, ["a-2"], "{who}");
        }
        let ops = kept(AuditQuery {
            group: Some("ops"),
            until: Some("2026-11-01T09:30:00Z"),
            ..query()
        });
        assert_eq!(ops, ["u1/0"]);
    }

    #[test]
    fn the_trails_of_several_replicas_merge_each_record_once() {
        let filter = AuditFilter::since(Timestamp::UNIX_EPOCH);
        let other = r#"{"id":"a-9","time":"2026-11-01T08:30:00Z","kind":"PimGroup","action":"Created","name":"ops"}
{"id":"a-1","time":"2026-11-01T08:00:00Z","kind":"AccessPolicy","action":"Updated","name":"open"}
"#;
        let lines = matching(
            &[
                (Path::new("replica-0.jsonl"), TRAIL),
                (Path::new("replica-1.jsonl"), other),
            ],
            &filter,
        )
        .unwrap();
        let ids: Vec<&str> = lines.iter().map(|l| l["id"].as_str().unwrap()).collect();
        assert_eq!(
            ids,
            [
                "a-1",
                "a-9",
                "u1/0",
                "ops/member/user:alice@contoso.com/Granted/2026-11-01T10:00:00Z",
                "a-2"
            ]
        );
        // A bad line in the second file names that file.
        let error = matching(
            &[
                (Path::new("replica-0.jsonl"), TRAIL),
                (Path::new("replica-1.jsonl"), "{\n"),
            ],
            &filter,
        )
        .unwrap_err();
        assert!(error.to_string().contains("replica-1.jsonl:1"), "{error}");
    }

    #[test]
    fn a_bad_kind_or_a_bad_line_is_named() {
        let bad_kind = AuditFilter::parse(
            AuditQuery {
                kind: Some("Role"),
                ..query()
            },
            Timestamp::UNIX_EPOCH,
        )
        .unwrap_err();
        assert!(
            bad_kind.to_string().contains("--kind \"Role\""),
            "{bad_kind}"
        );
        let filter = AuditFilter::since(Timestamp::UNIX_EPOCH);
        let broken = format!("{TRAIL}{{\"id\":\"x\",\"time\":\"yesterday\"}}\n");
        let error = matching(&[(Path::new("trail.jsonl"), &broken)], &filter).unwrap_err();
        assert_eq!(
            error.to_string().split(": ").take(2).collect::<Vec<_>>(),
            ["--file trail.jsonl:6", "`time` is not an RFC 3339 time"]
        );
        let error = matching(&[(Path::new("t"), "[1]\n")], &filter).unwrap_err();
        assert!(
            error.to_string().contains("t:1: not a JSON object"),
            "{error}"
        );
    }

    #[test]
    fn the_csv_has_one_column_set_for_every_shape_and_defuses_formulas() {
        let filter = AuditFilter::since(Timestamp::UNIX_EPOCH);
        let lines = matching(&[(Path::new("t"), TRAIL)], &filter).unwrap();
        let csv = render(&lines, ExportFormat::Csv).unwrap();
        let rows: Vec<&str> = csv.split("\r\n").collect();
        assert_eq!(rows[0], TRAIL_COLUMNS.join(","));
        assert!(
            rows[1].starts_with(
                "a-1,2026-11-01T08:00:00Z,AccessPolicy,Updated,open,,,,oidc:carol,true,"
            ),
            "{}",
            rows[1]
        );
        // The diff is one JSON cell, quoted.
        assert!(rows[1].contains(r#""[{""after"":""=2h"""#), "{}", rows[1]);
        assert!(rows[2].starts_with("u1/0,2026-11-01T09:00:00Z,ActivationRequest,Active,r1,alice@contoso.com,ops,member,,,Active,"), "{}", rows[2]);
        assert_eq!(rows.len(), 6, "{csv}");
    }
}
