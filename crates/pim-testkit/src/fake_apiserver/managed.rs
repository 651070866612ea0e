//! Field ownership (`metadata.managedFields`) and the ownership side of server-side apply:
//! which fields each manager set, conflicts when an applier changes a field another manager
//! owns, and removal of the fields an applier stopped applying.
//!
//! A field set is a set of leaf paths, in the `fieldsV1` vocabulary: `f:<field>`, `k:{keys}`
//! for a list-map entry, `v:<value>` for a set element, `.` for the entry itself. Atomic lists
//! and atomic maps are owned as one leaf.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use super::schema::{ListType, SchemaNode, list_map_key};
use super::status::Cause;

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum PathElem {
    Field(String),
    /// A list-map entry, by its key fields (canonical JSON object, keys sorted).
    Key(String),
    /// A set element, by value (canonical JSON).
    Value(String),
    /// The list entry itself (`.`).
    Itself,
}

pub(crate) type FieldPath = Vec<PathElem>;
pub(crate) type FieldSet = BTreeSet<FieldPath>;

/// Metadata the server owns: never part of a field set.
const SYSTEM_METADATA: &[&str] = &[
    "name",
    "namespace",
    "generateName",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

/// Canonical JSON (object keys sorted), so equal keys compare equal as strings.
fn canonical(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let body: Vec<String> = keys
                .into_iter()
                .map(|k| {
                    format!(
                        "{}:{}",
                        Value::String(k.clone()),
                        canonical(map.get(k).unwrap_or(&Value::Null))
                    )
                })
                .collect();
            format!("{{{}}}", body.join(","))
        }
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(canonical).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    }
}

/// The leaf paths an object (or an applied configuration) sets.
pub(crate) fn fieldset_of(obj: &Value, root: &SchemaNode) -> FieldSet {
    let mut set = FieldSet::new();
    let Some(map) = obj.as_object() else {
        return set;
    };
    for (key, value) in map {
        match key.as_str() {
            "apiVersion" | "kind" => {}
            "metadata" => {
                if let Some(meta) = value.as_object() {
                    let meta_node = root.child("metadata");
                    for (mk, mv) in meta {
                        if !SYSTEM_METADATA.contains(&mk.as_str()) {
                            let prefix = vec![
                                PathElem::Field("metadata".into()),
                                PathElem::Field(mk.clone()),
                            ];
                            collect(mv, meta_node.child(mk), prefix, &mut set);
                        }
                    }
                }
            }
            _ => collect(
                value,
                root.child(key),
                vec![PathElem::Field(key.clone())],
                &mut set,
            ),
        }
    }
    set
}

fn collect(value: &Value, node: &SchemaNode, path: FieldPath, set: &mut FieldSet) {
    match value {
        Value::Null => {}
        Value::Object(map) if !map.is_empty() && !node.map_atomic => {
            for (k, v) in map {
                let mut p = path.clone();
                p.push(PathElem::Field(k.clone()));
                collect(v, node.child(k), p, set);
            }
        }
        Value::Array(items) if !items.is_empty() => match &node.list_type {
            ListType::Map(keys) => {
                for item in items {
                    let mut entry = path.clone();
                    entry.push(PathElem::Key(canonical(&list_map_key(item, keys))));
                    let mut itself = entry.clone();
                    itself.push(PathElem::Itself);
                    set.insert(itself);
                    if let Some(fields) = item.as_object() {
                        for (k, v) in fields {
                            let mut p = entry.clone();
                            p.push(PathElem::Field(k.clone()));
                            collect(v, node.item().child(k), p, set);
                        }
                    }
                }
            }
            ListType::Set => {
                for item in items {
                    let mut p = path.clone();
                    p.push(PathElem::Value(canonical(item)));
                    set.insert(p);
                }
            }
            ListType::Atomic => {
                set.insert(path);
            }
        },
        _ => {
            set.insert(path);
        }
    }
}

/// The value at a field path, if the object has it.
pub(crate) fn get_at<'a>(obj: &'a Value, path: &[PathElem]) -> Option<&'a Value> {
    let mut cur = obj;
    for elem in path {
        cur = match elem {
            PathElem::Field(f) => cur.as_object()?.get(f)?,
            PathElem::Key(key) => find_entry(cur.as_array()?, key)?,
            PathElem::Value(v) => cur.as_array()?.iter().find(|i| canonical(i) == *v)?,
            PathElem::Itself => cur,
        };
    }
    Some(cur)
}

fn find_entry<'a>(items: &'a [Value], key: &str) -> Option<&'a Value> {
    let want: Value = serde_json::from_str(key).ok()?;
    let keys: Vec<String> = want.as_object()?.keys().cloned().collect();
    items
        .iter()
        .find(|i| i.is_object() && list_map_key(i, &keys) == want)
}

/// Removes the value at a field path (a list entry for `…/k:{…}/.`, a set element for `v:`).
fn remove_at(obj: &mut Value, path: &[PathElem]) {
    let (target, parent_path) = match path.split_last() {
        Some((PathElem::Itself, rest)) => match rest.split_last() {
            Some(split) => split,
            None => return,
        },
        Some(split) => split,
        None => return,
    };
    let mut cur = obj;
    for elem in parent_path {
        let next = match elem {
            PathElem::Field(f) => cur.as_object_mut().and_then(|m| m.get_mut(f)),
            PathElem::Key(key) => {
                let want: Option<Value> = serde_json::from_str(key).ok();
                let keys: Vec<String> = want
                    .as_ref()
                    .and_then(Value::as_object)
                    .map(|m| m.keys().cloned().collect())
                    .unwrap_or_default();
                cur.as_array_mut().and_then(|items| {
                    items
                        .iter_mut()
                        .find(|i| i.is_object() && Some(list_map_key(i, &keys)) == want)
                })
            }
            PathElem::Value(_) | PathElem::Itself => None,
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    match target {
        PathElem::Field(f) => {
            if let Some(map) = cur.as_object_mut() {
                map.remove(f);
            }
        }
        PathElem::Key(key) => {
            let want: Option<Value> = serde_json::from_str(key).ok();
            let keys: Vec<String> = want
                .as_ref()
                .and_then(Value::as_object)
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default();
            if let Some(items) = cur.as_array_mut() {
                items.retain(|i| !(i.is_object() && Some(list_map_key(i, &keys)) == want));
            }
        }
        PathElem::Value(v) => {
            if let Some(items) = cur.as_array_mut() {
                items.retain(|i| canonical(i) != *v);
            }
        }
        PathElem::Itself => {}
    }
}

/// Whether the path is a key field of a list-map entry (`…/k:{"approver":…}/f:approver`).
fn is_key_field(path: &[PathElem]) -> bool {
    match path {
        [.., PathElem::Key(key), PathElem::Field(field)] => {
            serde_json::from_str::<Map<String, Value>>(key).is_ok_and(|k| k.contains_key(field))
        }
        _ => false,
    }
}

/// `.spec.approvals[approver="a"].decision`, the way apply conflicts name a field.
pub(crate) fn render_path(path: &[PathElem]) -> String {
    let mut out = String::new();
    for elem in path {
        match elem {
            PathElem::Field(f) => {
                out.push('.');
                out.push_str(f);
            }
            PathElem::Key(key) => {
                let parts: Vec<String> = serde_json::from_str::<Map<String, Value>>(key)
                    .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect())
                    .unwrap_or_default();
                out.push_str(&format!("[{}]", parts.join(",")));
            }
            PathElem::Value(v) => out.push_str(&format!("[={v}]")),
            PathElem::Itself => {}
        }
    }
    out
}

/// A field set as `fieldsV1` JSON.
fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut cur = &mut root;
        for elem in path {
            let key = match elem {
                PathElem::Field(f) => format!("f:{f}"),
                PathElem::Key(k) => format!("k:{k}"),
                PathElem::Value(v) => format!("v:{v}"),
                PathElem::Itself => ".".to_string(),
            };
            let next = cur.entry(key).or_insert_with(|| Value::Object(Map::new()));
            if !next.is_object() {
                *next = Value::Object(Map::new());
            }
            match next.as_object_mut() {
                Some(map) => cur = map,
                None => break,
            }
        }
    }
    Value::Object(root)
}

/// `fieldsV1` JSON back to a field set: every empty node is a leaf.
fn from_fields_v1(value: &Value) -> FieldSet {
    fn walk(map: &Map<String, Value>, path: &mut FieldPath, set: &mut FieldSet) {
        for (key, child) in map {
            let elem = if key == "." {
                PathElem::Itself
            } else if let Some(f) = key.strip_prefix("f:") {
                PathElem::Field(f.to_string())
            } else if let Some(k) = key.strip_prefix("k:") {
                PathElem::Key(k.to_string())
            } else if let Some(v) = key.strip_prefix("v:") {
                PathElem::Value(v.to_string())
            } else {
                continue;
            };
            path.push(elem);
            match child.as_object() {
                Some(m) if !m.is_empty() => walk(m, path, set),
                _ => {
                    set.insert(path.clone());
                }
            }
            path.pop();
        }
    }
    let mut set = FieldSet::new();
    if let Some(map) = value.as_object() {
        walk(map, &mut Vec::new(), &mut set);
    }
    set
}

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    pub api_version: String,
    pub time: Option<String>,
    pub subresource: Option<String>,
    pub fields: FieldSet,
}

impl Entry {
    fn same_owner(&self, manager: &str, operation: &str, subresource: Option<&str>) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource.as_deref() == subresource
    }
}

/// The entries recorded on an object.
pub(crate) fn read_entries(obj: &Value) -> Vec<Entry> {
    super::meta::meta(obj)
        .and_then(|m| m.get("managedFields"))
        .and_then(Value::as_array)
        .map(|entries| {
            entries
                .iter()
                .map(|e| Entry {
                    manager: str_field(e, "manager"),
                    operation: str_field(e, "operation"),
                    api_version: str_field(e, "apiVersion"),
                    time: e.get("time").and_then(Value::as_str).map(str::to_string),
                    subresource: e
                        .get("subresource")
                        .and_then(Value::as_str)
                        .filter(|s| !s.is_empty())
                        .map(str::to_string),
                    fields: e.get("fieldsV1").map(from_fields_v1).unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn str_field(v: &Value, field: &str) -> String {
    v.get(field)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// Writes entries back; entries that own nothing are dropped, as the API server does.
fn write_entries(obj: &mut Value, entries: &[Entry]) {
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut entry = json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": to_fields_v1(&e.fields),
            });
            if let (Some(sub), Some(map)) = (&e.subresource, entry.as_object_mut()) {
                map.insert("subresource".into(), Value::String(sub.clone()));
            }
            entry
        })
        .collect();
    if list.is_empty() {
        super::meta::remove_meta(obj, "managedFields");
    } else {
        super::meta::set_meta(obj, "managedFields", Value::Array(list));
    }
}

/// Who is writing, for ownership.
#[derive(Debug, Clone)]
pub(crate) struct Writer<'a> {
    pub manager: &'a str,
    pub subresource: Option<&'a str>,
    pub api_version: &'a str,
    pub now: &'a str,
}

/// Gives `entry` the new field set, refreshing its time only when what it owns changed.
fn set_entry(entries: &mut Vec<Entry>, writer: &Writer<'_>, operation: &str, fields: FieldSet) {
    match entries
        .iter_mut()
        .find(|e| e.same_owner(writer.manager, operation, writer.subresource))
    {
        Some(entry) => {
            if entry.fields != fields {
                entry.fields = fields;
                entry.time = Some(writer.now.to_string());
            }
        }
        None => entries.push(Entry {
            manager: writer.manager.to_string(),
            operation: operation.to_string(),
            api_version: writer.api_version.to_string(),
            time: Some(writer.now.to_string()),
            subresource: writer.subresource.map(str::to_string),
            fields,
        }),
    }
}

/// After a non-apply write (create, PUT, merge or JSON patch): the writer takes ownership of
/// every field whose value it changed, taking it away from the others; fields that no longer
/// exist are owned by nobody.
pub(crate) fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    root: &SchemaNode,
    writer: &Writer<'_>,
) {
    let mut entries = old.map(read_entries).unwrap_or_default();
    let changed: FieldSet = fieldset_of(new, root)
        .into_iter()
        .filter(|p| old.and_then(|o| get_at(o, p)) != get_at(new, p))
        .collect();
    for entry in &mut entries {
        entry.fields.retain(|p| !changed.contains(p));
    }
    if !changed.is_empty() {
        let mut mine = entries
            .iter()
            .find(|e| e.same_owner(writer.manager, "Update", writer.subresource))
            .map(|e| e.fields.clone())
            .unwrap_or_default();
        mine.extend(changed);
        set_entry(&mut entries, writer, "Update", mine);
    }
    retain_present(&mut entries, new);
    write_entries(new, &entries);
}

/// Keeps in each entry only the fields the object still has.
fn retain_present(entries: &mut [Entry], obj: &Value) {
    for entry in entries {
        entry.fields.retain(|p| get_at(obj, p).is_some());
    }
}

/// Re-syncs ownership with the object after the strategy changed it (fields reset, fields gone).
pub(crate) fn finish(obj: &mut Value) {
    let mut entries = read_entries(obj);
    retain_present(&mut entries, obj);
    write_entries(obj, &entries);
}

/// Server-side apply. Checks conflicts (unless `force`, which takes the fields over), removes
/// what this manager applied last time but not now (unless someone else owns it), merges the
/// configuration in, and records the manager's `Apply` entry. `live` is `None` on create.
pub(crate) fn apply(
    live: Option<&Value>,
    applied: &Value,
    root: &SchemaNode,
    writer: &Writer<'_>,
    force: bool,
) -> Result<Value, Vec<Cause>> {
    let applied_set = fieldset_of(applied, root);
    let mut entries = live.map(read_entries).unwrap_or_default();
    let mut result = live.cloned().unwrap_or_else(|| json!({}));

    // Conflicts: a field another manager owns, to which the configuration gives another value.
    let mut conflicts: Vec<(usize, FieldPath)> = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        if entry.same_owner(writer.manager, "Apply", writer.subresource) {
            continue;
        }
        for path in entry.fields.intersection(&applied_set) {
            if path.last() == Some(&PathElem::Itself) {
                continue;
            }
            if get_at(&result, path) != get_at(applied, path) {
                conflicts.push((i, path.clone()));
            }
        }
    }
    if !conflicts.is_empty() {
        if !force {
            return Err(conflicts
                .iter()
                .map(|(i, path)| {
                    let manager = entries.get(*i).map(|e| e.manager.as_str()).unwrap_or("");
                    Cause::new(
                        "FieldManagerConflict",
                        render_path(path),
                        format!("conflict with \"{manager}\""),
                    )
                })
                .collect());
        }
        for (i, path) in &conflicts {
            if let Some(entry) = entries.get_mut(*i) {
                entry.fields.remove(path);
            }
        }
    }

    // Removal: fields this manager applied before, no longer applies, and nobody else owns.
    let previous = entries
        .iter()
        .find(|e| e.same_owner(writer.manager, "Apply", writer.subresource))
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    let others: FieldSet = entries
        .iter()
        .filter(|e| !e.same_owner(writer.manager, "Apply", writer.subresource))
        .flat_map(|e| e.fields.iter().cloned())
        .collect();
    let gone: Vec<&FieldPath> = previous
        .iter()
        .filter(|p| !applied_set.contains(*p) && !others.contains(*p))
        .collect();
    // List entries first, as a whole: an entry goes unless someone still owns something in it.
    let mut removed_entries: Vec<&[PathElem]> = Vec::new();
    for path in gone.iter().filter(|p| p.last() == Some(&PathElem::Itself)) {
        let entry = &path[..path.len() - 1];
        if others.iter().any(|o| o.starts_with(entry))
            || applied_set.iter().any(|a| a.starts_with(entry))
        {
            continue;
        }
        remove_at(&mut result, path);
        removed_entries.push(entry);
    }
    // Then single fields, except inside removed entries and except the key fields of an entry
    // that stays (they belong to the entry).
    for path in gone.iter().filter(|p| p.last() != Some(&PathElem::Itself)) {
        if removed_entries.iter().any(|e| path.starts_with(e)) || is_key_field(path) {
            continue;
        }
        remove_at(&mut result, path);
    }

    super::merge::apply_merge(&mut result, applied, root);
    set_entry(&mut entries, writer, "Apply", applied_set);
    retain_present(&mut entries, &result);
    write_entries(&mut result, &entries);
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> SchemaNode {
        SchemaNode::custom_root(&json!({
            "type": "object",
            "properties": {"spec": {"type": "object", "properties": {
                "x": {"type": "string"},
                "approvals": {
                    "type": "array",
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["approver"],
                    "items": {"type": "object", "properties": {
                        "approver": {"type": "string"}, "decision": {"type": "string"}}}
                }
            }}}
        }))
    }

    fn writer(manager: &str) -> Writer<'_> {
        Writer {
            manager,
            subresource: None,
            api_version: "a/v1",
            now: "2024-01-01T00:00:00Z",
        }
    }

    #[test]
    fn fields_v1_round_trips() {
        let obj = json!({"metadata": {"name": "n", "labels": {"a": "1"}, "finalizers": ["f"]},
            "spec": {"x": "1", "approvals": [{"approver": "al", "decision": "Approve"}]}});
        let set = fieldset_of(&obj, &root());
        let v1 = to_fields_v1(&set);
        assert_eq!(
            v1,
            json!({"f:metadata": {"f:labels": {"f:a": {}}, "f:finalizers": {"v:\"f\"": {}}},
                "f:spec": {"f:x": {}, "f:approvals": {"k:{\"approver\":\"al\"}": {
                    ".": {}, "f:approver": {}, "f:decision": {}}}}})
        );
        assert_eq!(from_fields_v1(&v1), set);
        assert_eq!(
            render_path(&[
                PathElem::Field("spec".into()),
                PathElem::Field("approvals".into()),
                PathElem::Key("{\"approver\":\"al\"}".into()),
                PathElem::Field("decision".into()),
            ]),
            ".spec.approvals[approver=\"al\"].decision"
        );
    }

    #[test]
    fn apply_conflicts_force_and_removal() {
        let r = root();
        let a = apply(
            None,
            &json!({"spec": {"x": "1", "approvals": [{"approver": "a", "decision": "Approve"}]}}),
            &r,
            &writer("a"),
            false,
        )
        .unwrap();
        let b = apply(
            Some(&a),
            &json!({"spec": {"approvals": [{"approver": "b", "decision": "Deny"}]}}),
            &r,
            &writer("b"),
            false,
        )
        .unwrap();
        assert_eq!(b["spec"]["approvals"].as_array().unwrap().len(), 2);
        // b changing a's field conflicts; with force it takes it over.
        let conflict = apply(
            Some(&b),
            &json!({"spec": {"x": "2"}}),
            &r,
            &writer("b"),
            false,
        )
        .unwrap_err();
        assert_eq!(conflict[0].field, ".spec.x");
        assert!(conflict[0].message.contains("\"a\""));
        // Same value: shared ownership, no conflict.
        apply(
            Some(&b),
            &json!({"spec": {"x": "1", "approvals": [{"approver": "b", "decision": "Deny"}]}}),
            &r,
            &writer("b"),
            false,
        )
        .unwrap();
        let forced = apply(
            Some(&b),
            &json!({"spec": {"x": "2", "approvals": [{"approver": "b", "decision": "Deny"}]}}),
            &r,
            &writer("b"),
            true,
        )
        .unwrap();
        assert_eq!(forced["spec"]["x"], "2");
        // a stops applying its approval: it is removed; b's stays. x is b's now: it stays too.
        let removed = apply(Some(&forced), &json!({"spec": {}}), &r, &writer("a"), false).unwrap();
        assert_eq!(
            removed["spec"]["approvals"],
            json!([{"approver": "b", "decision": "Deny"}])
        );
        assert_eq!(removed["spec"]["x"], "2");
    }
}
