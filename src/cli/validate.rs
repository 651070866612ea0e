//! `pim-operator validate PATH...`: the checks of [`crate::checks`] over manifests on disk, for
//! pull requests. No cluster needed.

use std::collections::BTreeMap;
use std::path::PathBuf;

use jiff::Timestamp;
use serde::Serialize;

use crate::api::{AccessReview, PimGroup};
use crate::checks::onboarding::removal_findings;
use crate::checks::{PimObject, SchemaChecker, SchemaError, Severity, check_object};
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
    /// Objects as the cluster has them, with status (`kubectl get pimgroups,accessreviews -o
    /// yaml > FILE`). PimGroups show which groups pim-operator has seen and which members it
    /// lists, for the checks of `standingAccess: Remove`; AccessReviews carry their results,
    /// so that every assignment a review denied is reported until its manifest is removed.
    #[arg(long, value_name = "FILE")]
    pub observed: Vec<PathBuf>,
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
    #[error("--observed {path}: {why}")]
    Observed { path: String, why: String },
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
    validate_observed(paths, &[], now)
}

/// As [`validate`], given the cluster's objects from the `observed` files.
pub fn validate_observed(
    paths: &[PathBuf],
    observed: &[PathBuf],
    now: Timestamp,
) -> Result<Report, ValidateError> {
    let checker = SchemaChecker::new()?;
    let observed = observed_objects(observed)?;
    let manifests = Manifests::load(paths, &checker)?;
    Ok(check_with(manifests, &observed, now))
}

/// What the cluster holds, with status, as `--observed` gives it.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub groups: BTreeMap<String, PimGroup>,
    /// With their results (`status.denied`).
    pub reviews: Vec<AccessReview>,
}

/// PimGroups and AccessReviews from `kubectl get ... -o yaml` output (a List) or YAML
/// documents. Other kinds are skipped; one of these two that does not decode is an error.
pub fn observed_objects(paths: &[PathBuf]) -> Result<Observed, ValidateError> {
    let mut out = Observed::default();
    for path in paths {
        let bad = |why: String| ValidateError::Observed {
            path: path.display().to_string(),
            why,
        };
        let text =
            std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
        let (documents, errors) = crate::manifests::yaml::parse(&text);
        if let Some(error) = errors.first() {
            return Err(bad(format!("line {}: {}", error.pos.line, error.message)));
        }
        let items = documents.into_iter().flat_map(|d| match d.value {
            serde_json::Value::Object(mut o)
                if o.get("kind").and_then(|k| k.as_str()) == Some("List") =>
            {
                match o.remove("items") {
                    Some(serde_json::Value::Array(items)) => items,
                    _ => Vec::new(),
                }
            }
            other => vec![other],
        });
        for item in items {
            match item.get("kind").and_then(|k| k.as_str()) {
                Some("PimGroup") => {
                    let group: PimGroup = serde_json::from_value(item)
                        .map_err(|e| bad(format!("a PimGroup does not decode: {e}")))?;
                    if let Some(name) = group.metadata.name.clone() {
                        out.groups.insert(name, group);
                    }
                }
                Some("AccessReview") => {
                    let review: AccessReview = serde_json::from_value(item)
                        .map_err(|e| bad(format!("an AccessReview does not decode: {e}")))?;
                    out.reviews.push(review);
                }
                _ => {}
            }
        }
    }
    Ok(out)
}

/// Runs the semantic checks over loaded manifests and orders the findings.
pub fn check(manifests: Manifests, now: Timestamp) -> Report {
    check_with(manifests, &Observed::default(), now)
}

/// As [`check`], with what the cluster holds. An observed AccessReview stands in for the
/// manifest of the same name: it carries the results.
pub fn check_with(manifests: Manifests, observed: &Observed, now: Timestamp) -> Report {
    let mut catalog = manifests.catalog();
    for review in &observed.reviews {
        catalog.insert_review(review.clone());
    }
    let observed = &observed.groups;
    let mut findings = manifests.findings;
    for loaded in manifests.objects.iter().filter(|o| o.schema_valid) {
        let stamped = crate::checks::stamped::written_by_hand(&loaded.object);
        let onboarding = match &loaded.object {
            PimObject::PimGroup(group) => removal_findings(
                group,
                group.metadata.name.as_ref().and_then(|n| observed.get(n)),
            )
            .into_iter()
            .map(|f| f.on("PimGroup", group.metadata.name.as_deref()))
            .collect(),
            _ => Vec::new(),
        };
        for finding in check_object(&catalog, &loaded.object, now)
            .into_iter()
            .chain(stamped)
            .chain(onboarding)
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
