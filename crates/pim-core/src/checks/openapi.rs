//! Structural validation of an object against a CRD's `openAPIV3Schema`, as the API server does
//! it before CEL rules: types, required fields, unknown fields (strict field validation), enums,
//! patterns, lengths, ranges, formats and keyed-list uniqueness. Each error names its field path.
//!
//! We walk the schema ourselves rather than hand it to a JSON-Schema library, because a CRD
//! schema is OpenAPI with Kubernetes extensions (`x-kubernetes-list-type`, pruning of `null`,
//! unknown fields as errors), and because every error must map to a field path.

use std::collections::HashMap;

use regex::Regex;
use serde_json::{Map, Value};

use super::finding::{Finding, closest, rules};
use crate::api::common::{DURATION_PATTERN, OBJECT_NAME_PATTERN, PRINCIPAL_PATTERN};

/// Top-level fields the API server handles itself, outside the CRD schema. `status` is dropped
/// on create for kinds with a status subresource, so a manifest's status is never validated.
pub const SERVER_FIELDS: &[&str] = &["apiVersion", "kind", "metadata", "status"];

/// A CRD schema with its patterns compiled.
#[derive(Debug, Clone)]
pub struct StructuralSchema {
    root: Value,
    patterns: HashMap<String, Result<Regex, String>>,
}

impl StructuralSchema {
    pub fn new(root: Value) -> Self {
        let mut patterns = HashMap::new();
        collect_patterns(&root, &mut patterns);
        StructuralSchema { root, patterns }
    }

    pub fn root(&self) -> &Value {
        &self.root
    }

    /// Validates a whole object (with `null`s already pruned), except the fields the API server
    /// handles itself.
    pub fn validate(&self, object: &Value) -> Vec<Finding> {
        let mut out = Vec::new();
        let Some(fields) = object.as_object() else {
            out.push(Finding::new(
                rules::INVALID_DOCUMENT,
                "",
                format!("must be a mapping, not {}", type_name(object)),
            ));
            return out;
        };
        let own: Map<String, Value> = fields
            .iter()
            .filter(|(k, _)| !SERVER_FIELDS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut root = self.root.clone();
        if let Some(props) = root.get_mut("properties").and_then(Value::as_object_mut) {
            props.remove("status");
        }
        self.walk(&root, &Value::Object(own), "", &mut out);
        out
    }

    fn walk(&self, schema: &Value, value: &Value, path: &str, out: &mut Vec<Finding>) {
        if value.is_null() {
            // The API server prunes `null` from fields that are not nullable.
            return;
        }
        if let Some(expected) = schema.get("type").and_then(Value::as_str)
            && !type_matches(expected, value, schema)
        {
            out.push(
                Finding::new(
                    rules::WRONG_TYPE,
                    path,
                    format!("must be {}, not {}", article(expected), type_name(value)),
                )
                .hint(type_hint(expected, path)),
            );
            return;
        }
        if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
            && !allowed.contains(value)
        {
            let names: Vec<String> = allowed.iter().map(plain).collect();
            let mut hint = format!("set {path} to one of: {}", names.join(", "));
            if let Some(close) = value
                .as_str()
                .and_then(|v| closest(v, names.iter().map(String::as_str)))
            {
                hint = format!("did you mean `{close}`? ({hint})");
            }
            out.push(
                Finding::new(
                    rules::INVALID_VALUE,
                    path,
                    format!("{} is not one of: {}", preview(value), names.join(", ")),
                )
                .hint(hint),
            );
            return;
        }
        match value {
            Value::String(text) => self.string(schema, text, path, out),
            Value::Number(_) => number(schema, value, path, out),
            Value::Array(items) => self.array(schema, items, path, out),
            Value::Object(fields) => self.object(schema, fields, path, out),
            Value::Bool(_) | Value::Null => {}
        }
    }

    fn string(&self, schema: &Value, text: &str, path: &str, out: &mut Vec<Finding>) {
        let length = text.chars().count();
        if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
            && length as u64 > max
        {
            out.push(
                Finding::new(
                    rules::INVALID_VALUE,
                    path,
                    format!("is {length} characters long; the limit is {max}"),
                )
                .hint(format!("shorten {path} to {max} characters or fewer")),
            );
            return;
        }
        if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
            && (length as u64) < min
        {
            let message = if length == 0 {
                "must not be empty".to_owned()
            } else {
                format!("is {length} characters long; at least {min} are needed")
            };
            out.push(
                Finding::new(rules::INVALID_VALUE, path, message).hint(format!(
                    "write at least {min} characters in {path}, or leave it out"
                )),
            );
            return;
        }
        if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
            // A pattern the regex crate cannot compile is skipped: the API server (RE2) took it.
            if let Some(Ok(regex)) = self.patterns.get(pattern)
                && !regex.is_match(text)
            {
                out.push(pattern_finding(pattern, text, path));
            }
        }
        if schema.get("format").and_then(Value::as_str) == Some("date-time")
            && text.parse::<jiff::Timestamp>().is_err()
        {
            out.push(
                Finding::new(
                    rules::INVALID_VALUE,
                    path,
                    format!("{text:?} is not an RFC 3339 time"),
                )
                .hint("write a time with its offset, such as 2026-11-01T09:00:00Z"),
            );
        }
    }

    fn array(&self, schema: &Value, items: &[Value], path: &str, out: &mut Vec<Finding>) {
        let count = items.len() as u64;
        if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
            && count > max
        {
            out.push(
                Finding::new(
                    rules::INVALID_VALUE,
                    path,
                    format!("has {count} entries; the limit is {max}"),
                )
                .hint(format!(
                    "remove entries from {path} until {max} or fewer remain"
                )),
            );
        }
        if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
            && count < min
        {
            out.push(
                Finding::new(
                    rules::INVALID_VALUE,
                    path,
                    format!("has {count} entries; at least {min} are needed"),
                )
                .hint(format!("add entries to {path}: at least {min}")),
            );
        }
        if let Some(item_schema) = schema.get("items") {
            for (i, item) in items.iter().enumerate() {
                self.walk(item_schema, item, &format!("{path}[{i}]"), out);
            }
        }
        duplicates_in_list(schema, items, path, out);
    }

    fn object(
        &self,
        schema: &Value,
        fields: &Map<String, Value>,
        path: &str,
        out: &mut Vec<Finding>,
    ) {
        let properties = schema.get("properties").and_then(Value::as_object);
        for required in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if fields.get(required).is_none_or(Value::is_null) {
                out.push(
                    Finding::new(rules::REQUIRED_FIELD, join(path, required), "is required")
                        .hint(format!("add `{required}`")),
                );
            }
        }
        let preserves_unknown =
            schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
        let extra = schema.get("additionalProperties").filter(|a| a.is_object());
        for (key, child) in fields {
            let child_path = join(path, key);
            if let Some(child_schema) = properties.and_then(|p| p.get(key)) {
                self.walk(child_schema, child, &child_path, out);
            } else if let Some(extra) = extra {
                self.walk(extra, child, &child_path, out);
            } else if !preserves_unknown && properties.is_some() {
                let known: Vec<&str> = properties
                    .into_iter()
                    .flat_map(|p| p.keys())
                    .map(String::as_str)
                    .filter(|k| path.is_empty() || !SERVER_FIELDS.contains(k))
                    .filter(|k| *k != "status")
                    .collect();
                let hint = match closest(key, known.iter().copied()) {
                    Some(close) => format!("did you mean `{close}`?"),
                    None => format!("the fields here are: {}", known.join(", ")),
                };
                out.push(
                    Finding::new(
                        rules::UNKNOWN_FIELD,
                        child_path,
                        format!("unknown field {key:?}"),
                    )
                    .hint(hint),
                );
            }
        }
    }
}

fn number(schema: &Value, value: &Value, path: &str, out: &mut Vec<Finding>) {
    let Some(n) = value.as_f64() else { return };
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
        && n < min
    {
        out.push(
            Finding::new(
                rules::INVALID_VALUE,
                path,
                format!("{} is less than the minimum of {}", plain(value), min),
            )
            .hint(format!("set {path} to {min} or more")),
        );
    }
    if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
        && n > max
    {
        out.push(
            Finding::new(
                rules::INVALID_VALUE,
                path,
                format!("{} is more than the maximum of {}", plain(value), max),
            )
            .hint(format!("set {path} to {max} or less")),
        );
    }
    if schema.get("format").and_then(Value::as_str) == Some("int32")
        && value.as_i64().is_none_or(|i| i32::try_from(i).is_err())
    {
        out.push(
            Finding::new(
                rules::INVALID_VALUE,
                path,
                format!("{} does not fit in 32 bits", plain(value)),
            )
            .hint(format!(
                "set {path} to a whole number from {} to {}",
                i32::MIN,
                i32::MAX
            )),
        );
    }
}

/// `x-kubernetes-list-type: map` lists must not repeat a key; `set` lists must not repeat a value.
fn duplicates_in_list(schema: &Value, items: &[Value], path: &str, out: &mut Vec<Finding>) {
    let list_type = schema.get("x-kubernetes-list-type").and_then(Value::as_str);
    let keys: Vec<&str> = schema
        .get("x-kubernetes-list-map-keys")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let identity = |item: &Value| -> Option<Value> {
        match list_type {
            Some("map") => Some(Value::Array(
                keys.iter()
                    .map(|k| item.get(k).cloned().unwrap_or(Value::Null))
                    .collect(),
            )),
            Some("set") => Some(item.clone()),
            _ => None,
        }
    };
    let mut seen: Vec<Value> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let Some(id) = identity(item) else { return };
        if seen.contains(&id) {
            let what = if list_type == Some("map") {
                keys.iter()
                    .map(|k| format!("{k} {}", preview(item.get(k).unwrap_or(&Value::Null))))
                    .collect::<Vec<_>>()
                    .join(", ")
            } else {
                preview(item)
            };
            out.push(
                Finding::new(
                    rules::DUPLICATE_LIST_KEY,
                    format!("{path}[{i}]"),
                    format!("repeats the entry for {what}"),
                )
                .hint(format!(
                    "remove {path}[{i}], or merge it into the earlier entry for {what}"
                )),
            );
        } else {
            seen.push(id);
        }
    }
}

/// A pattern mismatch, worded for the patterns our types use.
fn pattern_finding(pattern: &str, text: &str, path: &str) -> Finding {
    if pattern == DURATION_PATTERN {
        return Finding::new(rules::INVALID_DURATION, path, format!("{text:?} is not a duration"))
            .hint("write a number and a unit in the order w, d, h, m, s (30m, 8h, 90d, 1h30m) or ISO-8601 (PT8H, P90D)");
    }
    if pattern == OBJECT_NAME_PATTERN {
        return Finding::new(rules::INVALID_VALUE, path, format!("{text:?} is not an object name"))
            .hint("object names use lowercase letters, digits, '-' and '.', and start and end with a letter or digit");
    }
    if pattern == PRINCIPAL_PATTERN {
        return Finding::new(
            rules::INVALID_VALUE,
            path,
            "must not contain control characters",
        )
        .hint("remove line breaks and other control characters");
    }
    if pattern == DNS_LABEL_PATTERN {
        return Finding::new(
            rules::INVALID_VALUE,
            path,
            format!("{text:?} is not a DNS label"),
        )
        .hint("use lowercase letters, digits and '-', starting and ending with a letter or digit");
    }
    Finding::new(
        rules::INVALID_VALUE,
        path,
        format!("{text:?} does not match the pattern {pattern}"),
    )
    .hint(format!("write {path} so that it matches {pattern}"))
}

/// The pattern of directory names and namespaces.
const DNS_LABEL_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

fn collect_patterns(schema: &Value, into: &mut HashMap<String, Result<Regex, String>>) {
    match schema {
        Value::Object(fields) => {
            if let Some(Value::String(pattern)) = fields.get("pattern") {
                into.entry(pattern.clone())
                    .or_insert_with(|| Regex::new(pattern).map_err(|e| e.to_string()));
            }
            fields.values().for_each(|v| collect_patterns(v, into));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_patterns(v, into)),
        _ => {}
    }
}

fn type_matches(expected: &str, value: &Value, schema: &Value) -> bool {
    if schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        return value.is_string() || value.is_i64() || value.is_u64();
    }
    match expected {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        _ => true,
    }
}

/// The JSON type of a value, as schema messages name it.
pub fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// How to write a value of `schema_type` in YAML, for the field at `path`.
fn type_hint(schema_type: &str, path: &str) -> String {
    match schema_type {
        "object" => format!("write {path} as a mapping: `key: value` lines indented under it"),
        "array" => format!("write {path} as a list: one `- ` line per entry, indented under it"),
        "string" => {
            format!("quote the value of {path} (\"yes\", \"1\"), so that YAML reads it as a string")
        }
        "integer" => format!("write {path} as a whole number without quotes, such as 2"),
        "number" => format!("write {path} as a number without quotes"),
        "boolean" => format!("write {path} as true or false, without quotes"),
        other => format!("write {path} as {other}"),
    }
}

fn article(schema_type: &str) -> &'static str {
    match schema_type {
        "object" => "a mapping",
        "array" => "a list",
        "string" => "a string",
        "integer" => "an integer",
        "number" => "a number",
        "boolean" => "a boolean (true or false)",
        _ => "another type",
    }
}

/// A value as text, strings without quotes.
fn plain(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A short quoted rendering of a value for messages.
fn preview(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 60 {
        format!("{}…", text.chars().take(57).collect::<String>())
    } else {
        text
    }
}

/// Applies `patch` to `old` as server-side apply merges them, following the schema: mappings
/// merge key by key, `x-kubernetes-list-type: map` lists merge entry by key (so each approver's
/// entry of `spec.approvals` is its own), and everything else is replaced.
pub fn apply(schema: &Value, old: &Value, patch: &Value) -> Value {
    match (old, patch) {
        (Value::Object(old_fields), Value::Object(patch_fields)) => {
            let mut merged = old_fields.clone();
            for (key, value) in patch_fields {
                let child_schema = schema
                    .get("properties")
                    .and_then(|p| p.get(key))
                    .or_else(|| schema.get("additionalProperties"))
                    .unwrap_or(&Value::Null);
                let next = match merged.get(key) {
                    Some(existing) => apply(child_schema, existing, value),
                    None => value.clone(),
                };
                merged.insert(key.clone(), next);
            }
            Value::Object(merged)
        }
        (Value::Array(old_items), Value::Array(patch_items))
            if schema.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("map") =>
        {
            let keys: Vec<&str> = schema
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let id = |item: &Value| -> Vec<Value> {
                keys.iter()
                    .map(|k| item.get(k).cloned().unwrap_or(Value::Null))
                    .collect()
            };
            let item_schema = schema.get("items").unwrap_or(&Value::Null);
            let mut merged = old_items.clone();
            for item in patch_items {
                match merged.iter_mut().find(|m| id(m) == id(item)) {
                    Some(existing) => *existing = apply(item_schema, existing, item),
                    None => merged.push(item.clone()),
                }
            }
            Value::Array(merged)
        }
        (_, patch) => patch.clone(),
    }
}

/// `parent.child`, or `child` at the top.
pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Removes map entries whose value is `null`, recursively, as the API server prunes them.
pub fn prune_nulls(value: &mut Value) {
    match value {
        Value::Object(fields) => {
            fields.retain(|_, v| !v.is_null());
            fields.values_mut().for_each(prune_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(prune_nulls),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> StructuralSchema {
        StructuralSchema::new(json!({
            "type": "object",
            "required": ["spec"],
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["group"],
                    "properties": {
                        "group": {"type": "string", "minLength": 1, "maxLength": 5, "pattern": OBJECT_NAME_PATTERN},
                        "duration": {"type": "string", "pattern": DURATION_PATTERN},
                        "role": {"type": "string", "enum": ["member", "owner"]},
                        "count": {"type": "integer", "format": "int32", "minimum": 1.0, "maximum": 16.0},
                        "at": {"type": "string", "format": "date-time"},
                        "approvals": {
                            "type": "array", "maxItems": 2,
                            "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["approver"],
                            "items": {"type": "object", "properties": {"approver": {"type": "string"}}}
                        }
                    }
                },
                "status": {"type": "object"}
            }
        }))
    }

    fn found(spec: Value) -> Vec<(String, &'static str, String)> {
        schema()
            .validate(
                &json!({"apiVersion": "x", "kind": "y", "metadata": {}, "status": 3, "spec": spec}),
            )
            .into_iter()
            .map(|f| (f.path, f.rule, f.message))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    #[test]
    fn clean_objects_pass_and_server_fields_are_left_alone() {
        assert_eq!(
            found(
                json!({"group": "fin", "role": "owner", "count": 2, "at": "2026-01-01T00:00:00Z"})
            ),
            []
        );
    }

    #[test]
    fn each_error_names_its_field() {
        assert_eq!(
            found(json!({"role": "admin", "count": "2", "extra": 1})),
            [
                (
                    "spec.count".to_owned(),
                    "wrong-type",
                    "must be an integer, not a string".to_owned()
                ),
                (
                    "spec.extra".to_owned(),
                    "unknown-field",
                    "unknown field \"extra\"".to_owned()
                ),
                (
                    "spec.group".to_owned(),
                    "required-field",
                    "is required".to_owned()
                ),
                (
                    "spec.role".to_owned(),
                    "invalid-value",
                    "\"admin\" is not one of: member, owner".to_owned()
                ),
            ]
        );
        assert_eq!(
            found(json!({"group": "Fin!", "duration": "soon", "count": 17, "at": "yesterday"})),
            [
                (
                    "spec.at".to_owned(),
                    "invalid-value",
                    "\"yesterday\" is not an RFC 3339 time".to_owned()
                ),
                (
                    "spec.count".to_owned(),
                    "invalid-value",
                    "17 is more than the maximum of 16".to_owned()
                ),
                (
                    "spec.duration".to_owned(),
                    "invalid-duration",
                    "\"soon\" is not a duration".to_owned()
                ),
                (
                    "spec.group".to_owned(),
                    "invalid-value",
                    "\"Fin!\" is not an object name".to_owned()
                ),
            ]
        );
        assert_eq!(
            found(
                json!({"group": "toolong", "approvals": [{"approver": "a"}, {"approver": "b"}, {"approver": "a"}]})
            ),
            [
                (
                    "spec.approvals".to_owned(),
                    "invalid-value",
                    "has 3 entries; the limit is 2".to_owned()
                ),
                (
                    "spec.approvals[2]".to_owned(),
                    "duplicate-list-key",
                    "repeats the entry for approver \"a\"".to_owned()
                ),
                (
                    "spec.group".to_owned(),
                    "invalid-value",
                    "is 7 characters long; the limit is 5".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn nulls_are_pruned_not_errors() {
        let mut object =
            json!({"spec": {"group": "fin", "role": null, "approvals": [{"approver": null}]}});
        prune_nulls(&mut object);
        assert_eq!(object, json!({"spec": {"group": "fin", "approvals": [{}]}}));
        assert_eq!(
            found(json!({"group": null})),
            [(
                "spec.group".to_owned(),
                "required-field",
                "is required".to_owned()
            )]
        );
    }

    #[test]
    fn apply_merges_keyed_lists_by_key() {
        let root = schema();
        let spec_schema = &root.root()["properties"]["spec"];
        let old =
            json!({"group": "fin", "role": "owner", "approvals": [{"approver": "a", "x": 1}]});
        let patch =
            json!({"group": "fin", "approvals": [{"approver": "b"}, {"approver": "a", "y": 2}]});
        assert_eq!(
            apply(spec_schema, &old, &patch),
            json!({"group": "fin", "role": "owner", "approvals": [{"approver": "a", "x": 1, "y": 2}, {"approver": "b"}]})
        );
        // Lists that are not keyed are replaced.
        assert_eq!(apply(&json!({}), &json!([1, 2]), &json!([3])), json!([3]));
    }

    #[test]
    fn unknown_fields_suggest_the_near_miss() {
        let findings = schema().validate(&json!({"spec": {"group": "fin", "roel": "member"}}));
        assert_eq!(findings[0].hint, "did you mean `role`?");
        let findings = schema().validate(&json!({"spec": {"group": "fin"}, "spek": {}}));
        assert_eq!(
            (findings[0].path.as_str(), findings[0].hint.as_str()),
            ("spek", "did you mean `spec`?")
        );
    }
}
