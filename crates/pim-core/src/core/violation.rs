//! A broken rule, named by field path and condition reason.

use super::duration::DurationError;
use crate::api::conditions::reasons;

/// One rule an object breaks. `field` is a path such as `spec.activation.maxDuration`;
/// `reason` is the condition reason (a constant from `api::conditions::reasons`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub field: String,
    pub reason: &'static str,
    /// What is wrong, with the values involved.
    pub message: String,
    /// What to change, in which field, to what: the hint `validate` and the webhook print.
    pub remedy: String,
}

impl Violation {
    pub fn new(
        field: impl Into<String>,
        reason: &'static str,
        message: impl Into<String>,
        remedy: impl Into<String>,
    ) -> Self {
        Self {
            field: field.into(),
            reason,
            message: message.into(),
            remedy: remedy.into(),
        }
    }

    /// A duration error, reported under `reason`.
    pub fn duration(err: DurationError, reason: &'static str) -> Self {
        let field = err.field().to_owned();
        let remedy = err.remedy();
        let message = err.to_string();
        let message = message
            .strip_prefix(&format!("{field}: "))
            .map(str::to_owned)
            .unwrap_or(message);
        Self {
            field,
            reason,
            message,
            remedy,
        }
    }
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Joins violations into one condition message.
pub fn summarize(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// The reason to report for a list of violations: the first one's, or a generic one.
pub fn primary_reason(violations: &[Violation]) -> &'static str {
    violations.first().map_or(reasons::REJECTED, |v| v.reason)
}
