//! `validate --format sarif`: a SARIF 2.1.0 log, which code-scanning UIs show as annotations
//! on the lines of a pull request.

use serde_json::{Value, json};

use super::validate::Report;
use crate::checks::{Severity, rules};

/// The `$schema` of the SARIF 2.1.0 standard (OASIS, errata 01).
pub const SARIF_SCHEMA: &str =
    "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json";

fn level(severity: Severity) -> &'static str {
    match severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
    }
}

/// The SARIF log of a report. Every rule is listed, so rule indexes are stable across runs.
pub fn log(report: &Report) -> Value {
    let rules: Vec<Value> = rules::ALL
        .iter()
        .map(|rule| {
            json!({
                "id": rule.id,
                "name": pascal(rule.id),
                "shortDescription": {"text": rule.summary},
                "help": {"text": format!("Fix: {}.", rule.hint)},
                "defaultConfiguration": {"level": level(rule.severity)},
            })
        })
        .collect();
    let results: Vec<Value> = report
        .findings
        .iter()
        .map(|located| {
            let finding = &located.finding;
            let subject = [finding.subject(), Some(finding.path.clone())]
                .into_iter()
                .flatten()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
            let text = if subject.is_empty() {
                format!("{}\nHint: {}", finding.message, finding.hint)
            } else {
                format!("{subject}: {}\nHint: {}", finding.message, finding.hint)
            };
            let mut location = json!({
                "physicalLocation": {
                    "artifactLocation": {"uri": uri(&located.location.file)},
                    "region": {
                        "startLine": located.location.line,
                        "startColumn": located.location.column,
                    },
                },
            });
            if !subject.is_empty() {
                location["logicalLocations"] = json!([{
                    "fullyQualifiedName": subject,
                    "kind": "object",
                }]);
            }
            json!({
                "ruleId": finding.rule,
                "ruleIndex": rules::ALL.iter().position(|r| r.id == finding.rule).unwrap_or(0),
                "level": level(finding.severity),
                "message": {"text": text},
                "locations": [location],
            })
        })
        .collect();
    let notifications: Vec<Value> = report
        .notes
        .iter()
        .map(|note| {
            json!({
                "level": "note",
                "message": {"text": note.message},
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": {"uri": uri(&note.location.file)},
                        "region": {"startLine": note.location.line, "startColumn": note.location.column},
                    },
                }],
            })
        })
        .collect();
    json!({
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "pim-operator",
                "semanticVersion": env!("CARGO_PKG_VERSION"),
                "rules": rules,
            }},
            "invocations": [{
                "executionSuccessful": true,
                "toolExecutionNotifications": notifications,
            }],
            "columnKind": "unicodeCodePoints",
            "results": results,
        }],
    })
}

/// `group-not-found` → `GroupNotFound`.
fn pascal(id: &str) -> String {
    id.split('-')
        .map(|word| {
            let mut chars = word.chars();
            chars
                .next()
                .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// A file path as a URI reference: relative paths stay relative (code scanning resolves them
/// against the repository root), absolute ones become `file://` URIs.
pub fn uri(path: &str) -> String {
    let mut out = String::new();
    if path.starts_with('/') {
        out.push_str("file://");
    }
    for byte in path.bytes() {
        let keep = byte.is_ascii_alphanumeric() || b"-._~/".contains(&byte);
        if keep {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_become_uri_references() {
        assert_eq!(uri("examples/01 policy.yaml"), "examples/01%20policy.yaml");
        assert_eq!(uri("/tmp/a#b.yaml"), "file:///tmp/a%23b.yaml");
        assert_eq!(pascal("group-not-found"), "GroupNotFound");
    }
}
