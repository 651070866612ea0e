//! Schema checks from the same types as the CRDs: the generated `openAPIV3Schema` (structure,
//! unknown fields), the CRDs' CEL rules evaluated by kube's client-side validator, and decoding
//! into the Rust types. What the API server would refuse, this refuses, with field paths.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use kube::core::cel::{CompiledSchema, Validator, compile_schema};
use regex::Regex;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::finding::{Finding, rules};
use super::object::{Kind, PimObject};
use super::openapi::{StructuralSchema, join, prune_nulls, type_name};
use crate::api::cel::CelRule;
use crate::api::common::{GROUP, OBJECT_NAME_MAX, OBJECT_NAME_PATTERN, VERSION};

/// The API version all four kinds are served at.
pub fn api_version() -> String {
    format!("{GROUP}/{VERSION}")
}

/// `ObjectMeta` fields a manifest may carry; anything else is an unknown field.
const OBJECT_META_FIELDS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

#[derive(Debug, thiserror::Error)]
#[error("cannot read the generated CRD schema of {kind}: {problem}")]
pub struct SchemaError {
    kind: String,
    problem: String,
}

/// The outcome of checking one document.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    /// The object, when it decodes; present even with findings, so that references to it resolve.
    pub object: Option<PimObject>,
    pub findings: Vec<Finding>,
}

/// The four CRD schemas, ready to check documents against.
pub struct SchemaChecker {
    schemas: BTreeMap<Kind, StructuralSchema>,
    /// Each schema's CEL rules compiled once: compiling them for every document was a third
    /// of `validate` on 10k manifests.
    compiled: BTreeMap<Kind, CompiledSchema>,
    cel: Validator,
}

impl SchemaChecker {
    pub fn new() -> Result<Self, SchemaError> {
        let mut schemas = BTreeMap::new();
        let mut compiled = BTreeMap::new();
        for crd in crate::api::crd::all() {
            let kind_name = crd.spec.names.kind.clone();
            let error = |problem: String| SchemaError {
                kind: kind_name.clone(),
                problem,
            };
            // The operator's own ledger (PimGrant) is not written through GitOps.
            let Some(kind) = Kind::from_name(&kind_name) else {
                continue;
            };
            let schema = crd
                .spec
                .versions
                .iter()
                .find(|v| v.name == VERSION)
                .and_then(|v| v.schema.as_ref())
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .ok_or_else(|| error(format!("no openAPIV3Schema for {VERSION}")))?;
            let schema = serde_json::to_value(schema).map_err(|e| error(e.to_string()))?;
            compiled.insert(kind, compile_schema(&schema));
            schemas.insert(kind, StructuralSchema::new(schema));
        }
        Ok(SchemaChecker {
            schemas,
            compiled,
            cel: Validator::new(),
        })
    }

    /// Checks a document of `kind` (its apiVersion and kind already dispatched on) for creation.
    pub fn check(&self, kind: Kind, document: &Value) -> Checked {
        let mut object = document.clone();
        prune_nulls(&mut object);
        // The API server drops status on create, so a manifest's status is not validated. It is
        // decoded when it can be: `simulate` replays exported objects from where they stand.
        let status = object
            .as_object_mut()
            .and_then(|fields| fields.remove("status"));
        let mut findings = check_metadata(&object);
        let Some(schema) = self.schemas.get(&kind) else {
            return Checked {
                object: None,
                findings,
            };
        };
        let structural = schema.validate(&object);
        let blocks_cel = structural
            .iter()
            .any(|f| f.rule == rules::WRONG_TYPE.id || f.rule == rules::REQUIRED_FIELD.id);
        findings.extend(structural);
        if !blocks_cel {
            findings.extend(self.cel(kind, schema, &object, None));
        }
        let decoded = match status {
            Some(status) => {
                let mut with_status = object.clone();
                with_status["status"] = status;
                decode(kind, &with_status).or_else(|_| decode(kind, &object))
            }
            None => decode(kind, &object),
        };
        let object = match decoded {
            Ok(object) => Some(object),
            Err(error) => {
                if findings.is_empty() {
                    findings.push(error.finding());
                }
                None
            }
        };
        let name = object
            .as_ref()
            .map(|o| o.name().to_owned())
            .or_else(|| document_name(document));
        for finding in &mut findings {
            finding.kind = Some(kind.as_str().to_owned());
            finding.name = name.clone();
        }
        Checked { object, findings }
    }

    /// `patch` applied to `old` with server-side apply's merge rules for `kind`.
    pub fn apply(&self, kind: Kind, old: &Value, patch: &Value) -> Value {
        match self.schemas.get(&kind) {
            Some(schema) => super::openapi::apply(schema.root(), old, patch),
            None => patch.clone(),
        }
    }

    /// Evaluates the CEL transition rules (those using `oldSelf`) for an update from `old` to
    /// `new`, e.g. the immutability of an ActivationRequest's spec.
    pub fn check_update(&self, kind: Kind, old: &Value, new: &Value) -> Vec<Finding> {
        let Some(schema) = self.schemas.get(&kind) else {
            return Vec::new();
        };
        let (mut old, mut new) = (old.clone(), new.clone());
        prune_nulls(&mut old);
        prune_nulls(&mut new);
        let name = document_name(&new);
        self.cel(kind, schema, &new, Some(&old))
            .into_iter()
            .map(|f| f.on(kind.as_str(), name.as_deref()))
            .collect()
    }

    fn cel(
        &self,
        kind: Kind,
        schema: &StructuralSchema,
        object: &Value,
        old: Option<&Value>,
    ) -> Vec<Finding> {
        let outcome = match self.compiled.get(&kind) {
            Some(compiled) => self.cel.validate_compiled(compiled, object, old),
            None => self.cel.validate(schema.root(), object, old),
        };
        match outcome {
            Ok(()) => Vec::new(),
            Err(errors) => errors
                .into_vec()
                .into_iter()
                .map(|e| {
                    let finding = Finding::new(rules::CEL_RULE, e.field_path, e.message);
                    // Every rule of our CRDs is in the table (tests/it/crds.rs checks).
                    match CelRule::find(&e.rule) {
                        Some(rule) => finding.hint(rule.remedy),
                        None => finding,
                    }
                })
                .collect(),
        }
    }
}

/// `metadata` as the API server checks it for our cluster-scoped kinds: a valid name, known
/// fields, string maps for labels and annotations.
fn check_metadata(object: &Value) -> Vec<Finding> {
    let mut out = Vec::new();
    let Some(meta) = object.get("metadata") else {
        out.push(
            Finding::new(rules::REQUIRED_FIELD, "metadata", "is required")
                .hint("add `metadata:` with a `name:`"),
        );
        return out;
    };
    let Some(fields) = meta.as_object() else {
        out.push(
            Finding::new(
                rules::WRONG_TYPE,
                "metadata",
                format!("must be a mapping, not {}", type_name(meta)),
            )
            .hint("write metadata as a mapping with `name:` indented under it"),
        );
        return out;
    };
    match fields.get("name") {
        None => out.push(
            Finding::new(rules::REQUIRED_FIELD, "metadata.name", "is required")
                .hint("add `name:`; kubectl apply needs a name, generateName is not enough"),
        ),
        Some(Value::String(name)) => {
            if !is_object_name(name) {
                out.push(
                    Finding::new(
                        rules::INVALID_NAME,
                        "metadata.name",
                        format!("{name:?} is not a valid name"),
                    )
                    .hint(format!(
                        "rename it with lowercase letters, digits, '-' and '.', such as {:?}",
                        suggested_name(name)
                    )),
                );
            }
        }
        Some(other) => out.push(
            Finding::new(
                rules::WRONG_TYPE,
                "metadata.name",
                format!("must be a string, not {}", type_name(other)),
            )
            .hint("quote the name, such as `name: \"2026\"`, or start it with a letter"),
        ),
    }
    for (key, value) in fields {
        let path = join("metadata", key);
        if !OBJECT_META_FIELDS.contains(&key.as_str()) {
            let hint = match super::finding::closest(key, OBJECT_META_FIELDS.iter().copied()) {
                Some(close) => format!("did you mean `{close}`?"),
                None => "metadata holds name, labels and annotations".to_owned(),
            };
            out.push(
                Finding::new(rules::UNKNOWN_FIELD, path, format!("unknown field {key:?}"))
                    .hint(hint),
            );
        } else if key == "labels" || key == "annotations" {
            let all_strings = value
                .as_object()
                .is_some_and(|m| m.values().all(Value::is_string));
            if !all_strings {
                out.push(
                    Finding::new(rules::WRONG_TYPE, path, "must map names to strings")
                        .hint("quote values such as \"true\" or \"1\""),
                );
            }
        }
    }
    out
}

/// `name` made into a valid object name: lowercase, other characters as '-'.
fn suggested_name(name: &str) -> String {
    let lowered: String = name
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '-' | '.') => c,
            _ => '-',
        })
        .collect();
    let trimmed = lowered.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    let short: String = trimmed.chars().take(OBJECT_NAME_MAX).collect();
    if short.is_empty() {
        "my-object".to_owned()
    } else {
        short
    }
}

fn is_object_name(name: &str) -> bool {
    static PATTERN: LazyLock<Option<Regex>> =
        LazyLock::new(|| Regex::new(OBJECT_NAME_PATTERN).ok());
    name.len() <= OBJECT_NAME_MAX && PATTERN.as_ref().is_some_and(|r| r.is_match(name))
}

fn document_name(document: &Value) -> Option<String> {
    document
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// Why an object does not decode: the field serde stopped at, and its message.
struct DecodeError {
    path: String,
    message: String,
}

impl DecodeError {
    fn finding(self) -> Finding {
        let hint = format!(
            "write {} as the CRD's schema (`pim-operator crds`) describes it; if it already does, the schema and the operator disagree: report it with this manifest",
            if self.path.is_empty() {
                "the object"
            } else {
                &self.path
            }
        );
        Finding::new(rules::DECODE_ERROR, self.path, self.message).hint(hint)
    }
}

/// Decodes into the Rust type of `kind`.
fn decode(kind: Kind, object: &Value) -> Result<PimObject, DecodeError> {
    fn into<T: DeserializeOwned>(object: &Value) -> Result<T, DecodeError> {
        serde_path_to_error::deserialize(object).map_err(|e| {
            let path = e.path().to_string();
            DecodeError {
                path: if path == "." { String::new() } else { path },
                message: e.into_inner().to_string(),
            }
        })
    }
    Ok(match kind {
        Kind::AccessPolicy => PimObject::AccessPolicy(into(object)?),
        Kind::PimGroup => PimObject::PimGroup(into(object)?),
        Kind::EligibleAssignment => PimObject::EligibleAssignment(into(object)?),
        Kind::ActivationRequest => PimObject::ActivationRequest(into(object)?),
        Kind::AccessReview => PimObject::AccessReview(into(object)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn checker() -> SchemaChecker {
        SchemaChecker::new().unwrap()
    }

    fn assignment(schedule: Value) -> Value {
        json!({
            "apiVersion": "pim.dev/v1alpha1", "kind": "EligibleAssignment",
            "metadata": {"name": "a"},
            "spec": {"group": "g", "principal": {"user": "alice"}, "schedule": schedule}
        })
    }

    #[test]
    fn a_valid_object_decodes() {
        let checked = checker().check(
            Kind::EligibleAssignment,
            &assignment(json!({"duration": "90d"})),
        );
        assert_eq!(checked.findings, []);
        let Some(PimObject::EligibleAssignment(a)) = checked.object else {
            panic!("not decoded")
        };
        assert_eq!(a.spec.schedule.duration.as_deref(), Some("90d"));
    }

    #[test]
    fn cel_rules_report_their_message_and_path() {
        let checked = checker().check(
            Kind::EligibleAssignment,
            &assignment(json!({"duration": "90d", "permanent": true})),
        );
        let got: Vec<_> = checked
            .findings
            .iter()
            .map(|f| (f.path.as_str(), f.rule, f.message.as_str()))
            .collect();
        assert_eq!(
            got,
            [(
                "spec.schedule",
                "cel-rule",
                "set exactly one of end, duration or permanent: true"
            )]
        );
        assert_eq!(
            checked.findings[0].kind.as_deref(),
            Some("EligibleAssignment")
        );
        assert_eq!(checked.findings[0].name.as_deref(), Some("a"));
        // Still decoded, so that references to it resolve.
        assert!(checked.object.is_some());
    }

    #[test]
    fn metadata_is_checked_like_the_api_server_does() {
        let mut doc = assignment(json!({"duration": "1d"}));
        doc["metadata"] = json!({"name": "Bad_Name", "lables": {}, "annotations": {"a": 1}});
        let got: Vec<_> = checker()
            .check(Kind::EligibleAssignment, &doc)
            .findings
            .into_iter()
            .map(|f| (f.path, f.rule))
            .collect();
        assert_eq!(
            got,
            [
                ("metadata.name".to_owned(), "invalid-name"),
                ("metadata.annotations".to_owned(), "wrong-type"),
                ("metadata.lables".to_owned(), "unknown-field"),
            ]
        );
    }

    #[test]
    fn transition_rules_need_the_old_object() {
        let old = json!({
            "apiVersion": "pim.dev/v1alpha1", "kind": "ActivationRequest", "metadata": {"name": "r"},
            "spec": {"group": "g", "duration": "30m", "approvals": [{"approver": "bob", "decision": "Approve"}]}
        });
        let mut new = old.clone();
        new["spec"]["duration"] = json!("1h");
        let findings = checker().check_update(Kind::ActivationRequest, &old, &new);
        assert_eq!(findings.len(), 1);
        assert_eq!(
            (findings[0].path.as_str(), findings[0].rule),
            ("spec", "cel-rule")
        );
        assert!(
            findings[0].message.starts_with("spec is immutable"),
            "{}",
            findings[0].message
        );
        assert_eq!(
            checker().check_update(Kind::ActivationRequest, &old, &old),
            []
        );
    }
}
