//! Every field of the operator's config (`pim_operator::config::Config`) is documented in
//! `deploy/config/operator.yaml`, the file users copy. The fields come from the Rust types
//! themselves (their JSON schema, which follows the serde attributes), so a new field without
//! documentation fails here.
//!
//! A field is documented by a comment line of the reference section:
//! `#   <dotted.path>  (<type>; default <value>)  what it does` (or `required` for a field
//! without a default). Map keys the user chooses are written `<name>`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

const REFERENCE: &str = "deploy/config/operator.yaml";

/// The words a documented type may start with; `(boolean`, `(integer`, `(list` and `(map` must
/// match the schema's type.
const TYPE_WORDS: &[&str] = &[
    "string", "duration", "path", "address", "url", "boolean", "integer", "list", "map", "object",
    "one",
];

/// Every dotted path of the config and the JSON types its schema allows.
fn config_paths() -> BTreeMap<String, BTreeSet<String>> {
    let schema = serde_json::to_value(schemars::schema_for!(pim_operator::config::Config))
        .expect("the config's schema is JSON");
    let mut paths = BTreeMap::new();
    walk(&schema, &schema, "", &mut paths, 0);
    paths
}

fn resolve<'a>(root: &'a Value, node: &'a Value) -> &'a Value {
    match node.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let pointer = reference.trim_start_matches('#');
            root.pointer(pointer)
                .unwrap_or_else(|| panic!("the schema's {reference} does not resolve"))
        }
        None => node,
    }
}

fn types_of(root: &Value, node: &Value, out: &mut BTreeSet<String>) {
    let node = resolve(root, node);
    match node.get("type") {
        Some(Value::String(t)) => {
            out.insert(t.clone());
        }
        Some(Value::Array(ts)) => {
            out.extend(ts.iter().filter_map(Value::as_str).map(str::to_owned))
        }
        _ => {}
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        for alternative in node
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            types_of(root, alternative, out);
        }
    }
    if node.get("enum").is_some() || node.get("const").is_some() {
        out.insert("string".to_owned());
    }
}

fn walk(
    root: &Value,
    node: &Value,
    prefix: &str,
    paths: &mut BTreeMap<String, BTreeSet<String>>,
    depth: usize,
) {
    assert!(depth < 32, "the config's schema nests too deep at {prefix}");
    let node = resolve(root, node);
    if let Some(properties) = node.get("properties").and_then(Value::as_object) {
        for (name, property) in properties {
            let path = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}.{name}")
            };
            let mut types = BTreeSet::new();
            types_of(root, property, &mut types);
            types.remove("null");
            paths.entry(path.clone()).or_default().extend(types);
            walk(root, property, &path, paths, depth + 1);
        }
    }
    if let Some(values) = node.get("additionalProperties").filter(|v| v.is_object()) {
        walk(root, values, &format!("{prefix}.<name>"), paths, depth + 1);
    }
    if let Some(items) = node.get("items") {
        walk(root, items, prefix, paths, depth + 1);
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        for alternative in node
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            walk(root, alternative, prefix, paths, depth + 1);
        }
    }
}

/// The documented paths: `# <path> (<type...>)` lines, with their parenthesis (up to its
/// end or the line's).
fn documented() -> BTreeMap<String, String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(REFERENCE);
    let text = std::fs::read_to_string(&path).expect("the shipped config");
    let line = regex::Regex::new(r"^#\s+([a-z][A-Za-z0-9.<>]*)\s+\(([^)]*)").unwrap();
    text.lines()
        .filter_map(|l| line.captures(l))
        .map(|c| (c[1].to_owned(), c[2].to_owned()))
        .collect()
}

#[test]
fn every_config_field_is_documented_with_its_type_and_default() {
    let paths = config_paths();
    assert!(
        paths.contains_key("webhook.enabled") && paths.contains_key("directories.<name>.bindDn"),
        "the walk of the schema misses fields: {:?}",
        paths.keys().collect::<Vec<_>>()
    );
    let docs = documented();
    let mut problems = Vec::new();
    for (path, types) in &paths {
        let Some(doc) = docs.get(path) else {
            problems.push(format!("{path}: not documented"));
            continue;
        };
        let first = doc.split([' ', ';', ',']).next().unwrap_or_default();
        if !TYPE_WORDS.contains(&first) {
            problems.push(format!("{path}: ({doc}) does not start with a type"));
        }
        for (json, word) in [
            ("boolean", "boolean"),
            ("integer", "integer"),
            ("array", "list"),
        ] {
            if types.len() == 1 && types.contains(json) && first != word {
                problems.push(format!("{path}: ({doc}) is a {word}"));
            }
        }
        if !doc.contains("default") && !doc.contains("required") {
            problems.push(format!(
                "{path}: ({doc}) says neither its default nor required"
            ));
        }
    }
    for path in docs.keys() {
        if !paths.contains_key(path) {
            problems.push(format!(
                "{path}: documented, but the config has no such field"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{REFERENCE} must document every config field as `#   <path>  (<type>; default ...)`:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn the_reference_file_still_parses_as_the_operator_reads_it() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(REFERENCE);
    pim_operator::config::Config::load(&path).expect("the shipped config parses");
}
