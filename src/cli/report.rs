//! `validate`'s text output: one line per finding in the compiler style editors understand,
//! an indented hint, the notes, and a summary.

use super::validate::Report;
use crate::manifests::LocatedFinding;

/// `file:line:col: error[rule-id] Kind/name spec.field: message` and `    hint: ...`.
pub fn finding_line(located: &LocatedFinding) -> String {
    let finding = &located.finding;
    let mut head = format!(
        "{}: {}[{}]",
        located.location,
        finding.severity.as_str(),
        finding.rule
    );
    let subject = [finding.subject(), Some(finding.path.clone())]
        .into_iter()
        .flatten()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if !subject.is_empty() {
        head.push(' ');
        head.push_str(&subject);
    }
    format!("{head}: {}\n    hint: {}\n", finding.message, finding.hint)
}

pub fn text(report: &Report) -> String {
    let mut out = String::new();
    for finding in &report.findings {
        out.push_str(&finding_line(finding));
    }
    for note in &report.notes {
        out.push_str(&format!("{}: note: {}\n", note.location, note.message));
    }
    let s = &report.summary;
    let outcome = if report.findings.is_empty() {
        "no findings".to_owned()
    } else {
        format!(
            "{}, {}",
            plural(s.errors, "error"),
            plural(s.warnings, "warning")
        )
    };
    out.push_str(&format!(
        "checked {}, {}, {}: {outcome}\n",
        plural(s.files, "file"),
        plural(s.documents, "document"),
        plural(s.objects, "PIM object"),
    ));
    out
}

pub fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}
