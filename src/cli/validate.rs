//! `pim-operator validate PATH...`: the checks of [`crate::checks`] over manifests on disk, for
//! pull requests. No cluster needed.

use std::path::PathBuf;

use jiff::Timestamp;
use serde::Serialize;

use crate::checks::{SchemaChecker, SchemaError, Severity, check_object};
use crate::manifests::{LoadError, LocatedFinding, Manifests, Note};

/// Output formats of `validate`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `file:line:col: error[rule] Kind/name field: message`, then a hint.
    #[default]
    Text,
    Json,
    /// SARIF 2.1.0, for code-scanning annotations.
    Sarif,
}

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Manifest files or directories (walked recursively for .yaml and .yml files).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// The time to check schedules against, RFC 3339 (default: now). For reproducible runs.
    /// Requests without a creationTimestamp are taken to be created then (their startTime may
    /// lie at most the policy's maxStartDelay later).
    #[arg(long, value_name = "RFC3339")]
    pub now: Option<Timestamp>,
}

/// Why `validate` could not run at all (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error("cannot render the report: {0}")]
    Render(#[from] serde_json::Error),
}

/// Counts for the summary line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub files: usize,
    pub documents: usize,
    pub objects: usize,
    pub errors: usize,
    pub warnings: usize,
}

/// The outcome of a run: every finding in file order, and the notes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub summary: Summary,
    pub findings: Vec<LocatedFinding>,
    pub notes: Vec<Note>,
}

impl Report {
    /// 0 when clean, 1 when there is any finding.
    pub fn exit_code(&self) -> u8 {
        u8::from(!self.findings.is_empty())
    }

    pub fn render(&self, format: Format) -> Result<String, ValidateError> {
        Ok(match format {
            Format::Text => super::report::text(self),
            Format::Json => format!("{}\n", serde_json::to_string_pretty(self)?),
            Format::Sarif => format!(
                "{}\n",
                serde_json::to_string_pretty(&super::sarif::log(self))?
            ),
        })
    }
}

/// Loads the manifests under `paths` and checks every object at `now`.
pub fn validate(paths: &[PathBuf], now: Timestamp) -> Result<Report, ValidateError> {
    let checker = SchemaChecker::new()?;
    let manifests = Manifests::load(paths, &checker)?;
    Ok(check(manifests, now))
}

/// Runs the semantic checks over loaded manifests and orders the findings.
pub fn check(manifests: Manifests, now: Timestamp) -> Report {
    let catalog = manifests.catalog();
    let mut findings = manifests.findings;
    for loaded in manifests.objects.iter().filter(|o| o.schema_valid) {
        let stamped = crate::checks::stamped::written_by_hand(&loaded.object);
        for finding in check_object(&catalog, &loaded.object, now)
            .into_iter()
            .chain(stamped)
        {
            let location = loaded.locate(&finding.path);
            findings.push(LocatedFinding { location, finding });
        }
    }
    let order = |file: &str| manifests.files.iter().position(|f| f == file);
    findings.sort_by(|a, b| {
        (
            order(&a.location.file),
            a.location.line,
            a.location.column,
            a.finding.rule,
        )
            .cmp(&(
                order(&b.location.file),
                b.location.line,
                b.location.column,
                b.finding.rule,
            ))
    });
    let mut notes = manifests.notes;
    notes.sort_by_key(|n| (order(&n.location.file), n.location.line, n.location.column));
    let count = |severity| {
        findings
            .iter()
            .filter(|f| f.finding.severity == severity)
            .count()
    };
    Report {
        summary: Summary {
            files: manifests.files.len(),
            documents: manifests.documents,
            objects: manifests.objects.len(),
            errors: count(Severity::Error),
            warnings: count(Severity::Warning),
        },
        findings,
        notes,
    }
}
