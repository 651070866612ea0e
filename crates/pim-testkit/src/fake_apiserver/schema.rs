//! The structural schema of each served type, read from the CRD's `openAPIV3Schema`: what
//! pruning, defaulting and validation use, and what tells server-side apply how to merge a list
//! (`x-kubernetes-list-type`) and whether a map is atomic. Built-in types get a lax schema (no
//! pruning, no validation) with the standard `metadata` list semantics.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde_json::{Map, Value};

/// How server-side apply treats a list (`x-kubernetes-list-type`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) enum ListType {
    /// Replaced as a whole (the default for CRD lists).
    #[default]
    Atomic,
    /// A set of scalars, merged by value.
    Set,
    /// A list of objects, merged entry by entry on these key fields.
    Map(Vec<String>),
}

/// One node of a structural schema.
#[derive(Debug, Clone, Default)]
pub(crate) struct SchemaNode {
    /// `type`: object, array, string, integer, number, boolean. `None`: anything goes.
    pub type_: Option<String>,
    pub properties: BTreeMap<String, SchemaNode>,
    /// `additionalProperties` (a map whose values follow this schema).
    pub additional: Option<Box<SchemaNode>>,
    pub items: Option<Box<SchemaNode>>,
    pub list_type: ListType,
    /// `x-kubernetes-map-type: atomic`.
    pub map_atomic: bool,
    /// Unknown fields are kept (not pruned), as with `x-kubernetes-preserve-unknown-fields`.
    pub preserve_unknown: bool,
    pub int_or_string: bool,
    pub nullable: bool,
    pub default: Option<Value>,
    pub required: Vec<String>,
    pub enum_: Option<Vec<Value>>,
    pub format: Option<String>,
    pub min_length: Option<u64>,
    pub max_length: Option<u64>,
    pub min_items: Option<u64>,
    pub max_items: Option<u64>,
    pub min_properties: Option<u64>,
    pub max_properties: Option<u64>,
    pub minimum: Option<f64>,
    pub maximum: Option<f64>,
    pub exclusive_minimum: bool,
    pub exclusive_maximum: bool,
}

/// The schema of anything we know nothing about: keep it, check nothing, lists atomic.
static LAX: LazyLock<SchemaNode> = LazyLock::new(SchemaNode::lax);

impl SchemaNode {
    pub fn lax() -> Self {
        Self {
            preserve_unknown: true,
            ..Self::default()
        }
    }

    /// The schema of the value under `key` of an object with this schema.
    pub fn child(&self, key: &str) -> &SchemaNode {
        self.properties
            .get(key)
            .or(self.additional.as_deref())
            .unwrap_or(&LAX)
    }

    /// Whether `key` is a known field (or the map takes any key).
    fn knows(&self, key: &str) -> bool {
        self.preserve_unknown || self.properties.contains_key(key) || self.additional.is_some()
    }

    /// The schema of the items of a list with this schema.
    pub fn item(&self) -> &SchemaNode {
        self.items.as_deref().unwrap_or(&LAX)
    }

    /// Reads an OpenAPI v3 schema (a CRD's `openAPIV3Schema`, as JSON).
    pub fn from_openapi(schema: &Value) -> Self {
        let Some(obj) = schema.as_object() else {
            return Self::lax();
        };
        let str_of = |k: &str| obj.get(k).and_then(Value::as_str).map(str::to_string);
        let u64_of = |k: &str| obj.get(k).and_then(Value::as_u64);
        let f64_of = |k: &str| obj.get(k).and_then(Value::as_f64);
        let bool_of = |k: &str| obj.get(k).and_then(Value::as_bool).unwrap_or(false);
        let properties = obj
            .get("properties")
            .and_then(Value::as_object)
            .map(|props| {
                props
                    .iter()
                    .map(|(k, v)| (k.clone(), Self::from_openapi(v)))
                    .collect()
            })
            .unwrap_or_default();
        let additional = match obj.get("additionalProperties") {
            Some(Value::Object(extra)) => {
                Some(Box::new(Self::from_openapi(&Value::Object(extra.clone()))))
            }
            Some(Value::Bool(true)) => Some(Box::new(Self::lax())),
            _ => None,
        };
        let list_type = match obj.get("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("set") => ListType::Set,
            Some("map") => ListType::Map(
                obj.get("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .map(|keys| {
                        keys.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
            ),
            _ => ListType::Atomic,
        };
        Self {
            type_: str_of("type"),
            properties,
            additional,
            items: obj
                .get("items")
                .map(|items| Box::new(Self::from_openapi(items))),
            list_type,
            map_atomic: obj.get("x-kubernetes-map-type").and_then(Value::as_str) == Some("atomic"),
            preserve_unknown: bool_of("x-kubernetes-preserve-unknown-fields"),
            int_or_string: bool_of("x-kubernetes-int-or-string"),
            nullable: bool_of("nullable"),
            default: obj.get("default").cloned(),
            required: obj
                .get("required")
                .and_then(Value::as_array)
                .map(|r| {
                    r.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
            enum_: obj.get("enum").and_then(Value::as_array).cloned(),
            format: str_of("format"),
            min_length: u64_of("minLength"),
            max_length: u64_of("maxLength"),
            min_items: u64_of("minItems"),
            max_items: u64_of("maxItems"),
            min_properties: u64_of("minProperties"),
            max_properties: u64_of("maxProperties"),
            minimum: f64_of("minimum"),
            maximum: f64_of("maximum"),
            exclusive_minimum: bool_of("exclusiveMinimum"),
            exclusive_maximum: bool_of("exclusiveMaximum"),
        }
    }

    /// The root schema of a custom resource: the CRD's schema, with `apiVersion`, `kind` and the
    /// standard `metadata` in place (a CRD schema may not describe metadata beyond name/namespace).
    pub fn custom_root(openapi: &Value) -> Self {
        let mut root = Self::from_openapi(openapi);
        root.type_ = Some("object".into());
        root.properties.insert("metadata".into(), metadata_schema());
        for field in ["apiVersion", "kind"] {
            root.properties.entry(field.into()).or_insert_with(|| Self {
                type_: Some("string".into()),
                ..Self::default()
            });
        }
        root
    }

    /// The root schema of a built-in type: nothing checked, standard metadata semantics.
    pub fn builtin_root() -> Self {
        let mut root = Self::lax();
        root.properties.insert("metadata".into(), metadata_schema());
        root
    }
}

/// `ObjectMeta` as server-side apply sees it: finalizers are a set, ownerReferences a map keyed
/// by uid, labels and annotations granular maps, managedFields atomic.
fn metadata_schema() -> SchemaNode {
    let string_map = SchemaNode {
        type_: Some("object".into()),
        additional: Some(Box::new(SchemaNode {
            type_: Some("string".into()),
            ..SchemaNode::default()
        })),
        ..SchemaNode::default()
    };
    let mut meta = SchemaNode::lax();
    meta.type_ = Some("object".into());
    meta.properties.insert("labels".into(), string_map.clone());
    meta.properties.insert("annotations".into(), string_map);
    meta.properties.insert(
        "finalizers".into(),
        SchemaNode {
            type_: Some("array".into()),
            list_type: ListType::Set,
            items: Some(Box::new(SchemaNode {
                type_: Some("string".into()),
                ..SchemaNode::default()
            })),
            ..SchemaNode::default()
        },
    );
    meta.properties.insert(
        "ownerReferences".into(),
        SchemaNode {
            type_: Some("array".into()),
            list_type: ListType::Map(vec!["uid".into()]),
            items: Some(Box::new(SchemaNode::lax())),
            ..SchemaNode::default()
        },
    );
    meta.properties.insert(
        "managedFields".into(),
        SchemaNode {
            type_: Some("array".into()),
            ..SchemaNode::default()
        },
    );
    meta
}

/// Drops fields the schema does not know (pruning), and `null`s where the schema does not allow
/// them, as the API server does for structural CRD schemas before defaulting.
pub(crate) fn prune(value: &mut Value, node: &SchemaNode, is_root: bool) {
    match value {
        Value::Object(map) => {
            if is_root {
                // `apiVersion`, `kind` and `metadata` are never pruned at the root.
                map.retain(|k, v| {
                    matches!(k.as_str(), "apiVersion" | "kind" | "metadata")
                        || (node.knows(k) && (!v.is_null() || node.child(k).nullable))
                });
            } else {
                map.retain(|k, v| node.knows(k) && (!v.is_null() || node.child(k).nullable));
            }
            for (k, v) in map.iter_mut() {
                if !(is_root && k == "metadata") {
                    prune(v, node.child(k), false);
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                prune(item, node.item(), false);
            }
        }
        _ => {}
    }
}

/// Fills in schema defaults for absent fields, top-down (a default is itself defaulted).
pub(crate) fn apply_defaults(value: &mut Value, node: &SchemaNode) {
    match value {
        Value::Object(map) => {
            for (k, child) in &node.properties {
                if !map.contains_key(k)
                    && let Some(default) = &child.default
                {
                    map.insert(k.clone(), default.clone());
                }
            }
            for (k, v) in map.iter_mut() {
                apply_defaults(v, node.child(k));
            }
        }
        Value::Array(items) => {
            for item in items {
                apply_defaults(item, node.item());
            }
        }
        _ => {}
    }
}

/// Validates `value` against the schema, collecting causes. `old` is the same field in the
/// previous version of the object: a subtree equal to its old value is not re-validated
/// (CRD validation ratcheting, on by default since Kubernetes 1.30).
pub(crate) fn validate(
    value: &Value,
    old: Option<&Value>,
    node: &SchemaNode,
    path: &str,
    causes: &mut Vec<super::status::Cause>,
) {
    use super::status::Cause;
    if old == Some(value) {
        return;
    }
    let type_name = |v: &Value| match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    if value.is_null() {
        if !node.nullable && node.type_.is_some() {
            causes.push(Cause::new(
                "FieldValueTypeInvalid",
                path,
                format!(
                    "Invalid value: \"null\": {path} in body must be of type {}: \"null\"",
                    node.type_.as_deref().unwrap_or("object")
                ),
            ));
        }
        return;
    }
    if let Some(expected) = node.type_.as_deref() {
        let actual = type_name(value);
        let ok = match expected {
            "number" => matches!(actual, "number" | "integer"),
            "string" if node.int_or_string => matches!(actual, "string" | "integer"),
            other => other == actual,
        };
        if !ok {
            causes.push(Cause::new(
                "FieldValueTypeInvalid",
                path,
                format!("Invalid value: \"{actual}\": {path} in body must be of type {expected}: \"{actual}\""),
            ));
            return;
        }
    }
    if let Some(allowed) = &node.enum_
        && !allowed.contains(value)
    {
        let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
        causes.push(Cause::new(
            "FieldValueNotSupported",
            path,
            format!(
                "Unsupported value: {value}: supported values: {}",
                list.join(", ")
            ),
        ));
    }
    match value {
        Value::String(s) => validate_string(s, node, path, causes),
        Value::Number(n) => validate_number(n, node, path, causes),
        Value::Array(items) => validate_array(items, old, node, path, causes),
        Value::Object(map) => validate_object(map, old, node, path, causes),
        _ => {}
    }
}

fn validate_string(s: &str, node: &SchemaNode, path: &str, causes: &mut Vec<super::status::Cause>) {
    use super::status::Cause;
    let len = s.chars().count() as u64;
    if let Some(max) = node.max_length
        && len > max
    {
        causes.push(Cause::new(
            "FieldValueTooLong",
            path,
            format!("Too long: may not be more than {max} bytes"),
        ));
    }
    if let Some(min) = node.min_length
        && len < min
    {
        causes.push(Cause::new(
            "FieldValueInvalid",
            path,
            format!("Invalid value: \"{s}\": {path} in body should be at least {min} chars long"),
        ));
    }
    if matches!(node.format.as_deref(), Some("date-time" | "datetime"))
        && s.parse::<jiff::Timestamp>().is_err()
    {
        causes.push(Cause::new(
            "FieldValueInvalid",
            path,
            format!("Invalid value: \"{s}\": {path} in body must be of type date-time: \"{s}\""),
        ));
    }
}

fn validate_number(
    n: &serde_json::Number,
    node: &SchemaNode,
    path: &str,
    causes: &mut Vec<super::status::Cause>,
) {
    use super::status::Cause;
    let Some(x) = n.as_f64() else { return };
    let out_of = |lo: f64, hi: f64| x < lo || x > hi;
    let format_bad = match node.format.as_deref() {
        Some("int32") => out_of(f64::from(i32::MIN), f64::from(i32::MAX)),
        _ => false,
    };
    if format_bad {
        causes.push(Cause::new(
            "FieldValueInvalid",
            path,
            format!("Invalid value: {n}: {path} in body must be of type int32"),
        ));
    }
    if let Some(min) = node.minimum
        && (x < min || (node.exclusive_minimum && x == min))
    {
        causes.push(Cause::new(
            "FieldValueInvalid",
            path,
            format!("Invalid value: {n}: {path} in body should be greater than or equal to {min}"),
        ));
    }
    if let Some(max) = node.maximum
        && (x > max || (node.exclusive_maximum && x == max))
    {
        causes.push(Cause::new(
            "FieldValueInvalid",
            path,
            format!("Invalid value: {n}: {path} in body should be less than or equal to {max}"),
        ));
    }
}

fn validate_array(
    items: &[Value],
    old: Option<&Value>,
    node: &SchemaNode,
    path: &str,
    causes: &mut Vec<super::status::Cause>,
) {
    use super::status::Cause;
    let len = items.len() as u64;
    if let Some(max) = node.max_items
        && len > max
    {
        causes.push(Cause::new(
            "FieldValueTooMany",
            path,
            format!("Too many: {len}: must have at most {max} items"),
        ));
    }
    if let Some(min) = node.min_items
        && len < min
    {
        causes.push(Cause::new(
            "FieldValueInvalid",
            path,
            format!("Invalid value: {len}: {path} in body should have at least {min} items"),
        ));
    }
    let old_items = old.and_then(Value::as_array);
    match &node.list_type {
        ListType::Map(keys) => {
            let mut seen: Vec<Value> = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let key = list_map_key(item, keys);
                if seen.contains(&key) {
                    causes.push(Cause::new(
                        "FieldValueDuplicate",
                        format!("{path}[{i}]"),
                        format!("Duplicate value: {key}"),
                    ));
                }
                seen.push(key.clone());
                // Correlate with the old entry of the same key, for ratcheting.
                let old_item = old_items.and_then(|olds| {
                    olds.iter()
                        .find(|o| o.is_object() && list_map_key(o, keys) == key)
                });
                validate(item, old_item, node.item(), &format!("{path}[{i}]"), causes);
            }
        }
        ListType::Set => {
            for (i, item) in items.iter().enumerate() {
                if items[..i].contains(item) {
                    causes.push(Cause::new(
                        "FieldValueDuplicate",
                        format!("{path}[{i}]"),
                        format!("Duplicate value: {item}"),
                    ));
                }
                validate(item, None, node.item(), &format!("{path}[{i}]"), causes);
            }
        }
        ListType::Atomic => {
            for (i, item) in items.iter().enumerate() {
                validate(item, None, node.item(), &format!("{path}[{i}]"), causes);
            }
        }
    }
}

fn validate_object(
    map: &Map<String, Value>,
    old: Option<&Value>,
    node: &SchemaNode,
    path: &str,
    causes: &mut Vec<super::status::Cause>,
) {
    use super::status::Cause;
    let join = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    for req in &node.required {
        if !map.contains_key(req) {
            causes.push(Cause::new(
                "FieldValueRequired",
                join(req),
                "Required value",
            ));
        }
    }
    let count = map.len() as u64;
    if let Some(max) = node.max_properties
        && count > max
    {
        causes.push(Cause::new(
            "FieldValueTooMany",
            path,
            format!("Too many: {count}: must have at most {max} items"),
        ));
    }
    if let Some(min) = node.min_properties
        && count < min
    {
        causes.push(Cause::new(
            "FieldValueInvalid",
            path,
            format!("Invalid value: {count}: {path} in body should have at least {min} properties"),
        ));
    }
    let old_map = old.and_then(Value::as_object);
    for (k, v) in map {
        if node.properties.contains_key(k) || node.additional.is_some() {
            validate(
                v,
                old_map.and_then(|o| o.get(k)),
                node.child(k),
                &join(k),
                causes,
            );
        }
    }
}

/// The key of a list-map entry: its key fields, absent ones as null.
pub(crate) fn list_map_key(item: &Value, keys: &[String]) -> Value {
    let mut key = Map::new();
    for k in keys {
        key.insert(k.clone(), item.get(k).cloned().unwrap_or(Value::Null));
    }
    Value::Object(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> SchemaNode {
        SchemaNode::custom_root(&json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["group"],
                    "properties": {
                        "group": {"type": "string", "minLength": 1},
                        "mode": {"type": "string", "default": "Remove", "enum": ["Remove", "Keep"]},
                        "approvals": {
                            "type": "array",
                            "maxItems": 2,
                            "x-kubernetes-list-type": "map",
                            "x-kubernetes-list-map-keys": ["approver"],
                            "items": {"type": "object", "properties": {"approver": {"type": "string"}}}
                        }
                    }
                }
            }
        }))
    }

    #[test]
    fn prunes_unknown_fields_and_nulls_but_keeps_metadata() {
        let mut obj = json!({"apiVersion": "a/v1", "kind": "K", "metadata": {"name": "x", "weird": 1},
            "spec": {"group": "g", "extra": true, "mode": null}, "junk": 1});
        prune(&mut obj, &schema(), true);
        assert_eq!(
            obj,
            json!({"apiVersion": "a/v1", "kind": "K", "metadata": {"name": "x", "weird": 1}, "spec": {"group": "g"}})
        );
    }

    #[test]
    fn defaults_and_validates() {
        let root = schema();
        let mut obj = json!({"spec": {"group": "", "approvals": [{"approver": "a"}, {"approver": "a"}, {"approver": "b"}]}});
        apply_defaults(&mut obj, &root);
        assert_eq!(obj["spec"]["mode"], "Remove");
        let mut causes = Vec::new();
        validate(&obj, None, &root, "", &mut causes);
        let reasons: Vec<&str> = causes.iter().map(|c| c.reason.as_str()).collect();
        assert!(reasons.contains(&"FieldValueTooMany"), "{causes:?}");
        assert!(reasons.contains(&"FieldValueDuplicate"), "{causes:?}");
        assert!(reasons.contains(&"FieldValueInvalid"), "{causes:?}");
        // Ratcheting: an unchanged invalid value passes.
        let mut causes = Vec::new();
        validate(&obj, Some(&obj), &root, "", &mut causes);
        assert!(causes.is_empty());
    }
}
