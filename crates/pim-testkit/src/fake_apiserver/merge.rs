//! The three ways a PATCH changes an object: JSON merge patch (RFC 7386), JSON patch
//! (RFC 6902, with the API server's quirks) and the merge step of server-side apply (maps
//! recursively, list-maps by key, sets by value, other lists replaced).

use serde_json::Value;

use super::schema::{ListType, SchemaNode, list_map_key};

/// RFC 7386: objects merge recursively, `null` deletes, anything else (lists too) replaces.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch_map) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    if let Value::Object(target_map) = target {
        for (key, value) in patch_map {
            if value.is_null() {
                target_map.remove(key);
            } else {
                merge_patch(target_map.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// Why a JSON patch could not be used.
#[derive(Debug)]
pub(crate) enum JsonPatchError {
    /// The patch document itself is malformed (400).
    Malformed(String),
    /// The patch is well formed but does not apply to this object (422), e.g. a failed `test`.
    Failed(String),
}

/// RFC 6902. As in the API server (evanphx/json-patch), `test` of `null` matches a missing path.
pub(crate) fn json_patch(doc: &mut Value, ops: &Value) -> Result<(), JsonPatchError> {
    let ops = ops.as_array().ok_or_else(|| {
        JsonPatchError::Malformed("a JSON patch must be a list of operations".into())
    })?;
    for op in ops {
        let name = op
            .get("op")
            .and_then(Value::as_str)
            .ok_or_else(|| JsonPatchError::Malformed("operation has no \"op\"".into()))?;
        let path = pointer_arg(op, "path")?;
        match name {
            "add" => add(doc, &path, value_arg(op)?)?,
            "remove" => {
                remove(doc, &path)?;
            }
            "replace" => {
                let target = resolve_mut(doc, &path).ok_or_else(|| {
                    JsonPatchError::Failed(format!(
                        "replace operation does not apply: doc is missing key: {}",
                        render(&path)
                    ))
                })?;
                *target = value_arg(op)?;
            }
            "move" => {
                let from = pointer_arg(op, "from")?;
                let value = remove(doc, &from)?;
                add(doc, &path, value)?;
            }
            "copy" => {
                let from = pointer_arg(op, "from")?;
                let value = resolve(doc, &from).cloned().ok_or_else(|| {
                    JsonPatchError::Failed(format!(
                        "copy operation does not apply: doc is missing from path: {}",
                        render(&from)
                    ))
                })?;
                add(doc, &path, value)?;
            }
            "test" => {
                let expected = value_arg(op)?;
                let actual = resolve(doc, &path).cloned().unwrap_or(Value::Null);
                if actual != expected {
                    return Err(JsonPatchError::Failed(format!(
                        "testing value {} failed: test failed",
                        render(&path)
                    )));
                }
            }
            other => {
                return Err(JsonPatchError::Malformed(format!(
                    "unexpected kind of operation: {other}"
                )));
            }
        }
    }
    Ok(())
}

fn value_arg(op: &Value) -> Result<Value, JsonPatchError> {
    op.get("value")
        .cloned()
        .ok_or_else(|| JsonPatchError::Malformed("operation has no \"value\"".into()))
}

fn pointer_arg(op: &Value, field: &str) -> Result<Vec<String>, JsonPatchError> {
    let raw = op
        .get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| JsonPatchError::Malformed(format!("operation has no \"{field}\"")))?;
    parse_pointer(raw)
}

/// RFC 6901 pointer to tokens (`~1` is `/`, `~0` is `~`).
fn parse_pointer(raw: &str) -> Result<Vec<String>, JsonPatchError> {
    if raw.is_empty() {
        return Ok(Vec::new());
    }
    let rest = raw
        .strip_prefix('/')
        .ok_or_else(|| JsonPatchError::Malformed(format!("invalid JSON pointer: {raw:?}")))?;
    Ok(rest
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn render(path: &[String]) -> String {
    path.iter().map(|t| format!("/{t}")).collect()
}

fn resolve<'a>(doc: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(doc, |cur, token| match cur {
        Value::Object(map) => map.get(token),
        Value::Array(items) => token.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

fn resolve_mut<'a>(doc: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    path.iter().try_fold(doc, |cur, token| match cur {
        Value::Object(map) => map.get_mut(token),
        Value::Array(items) => token.parse::<usize>().ok().and_then(|i| items.get_mut(i)),
        _ => None,
    })
}

fn add(doc: &mut Value, path: &[String], value: Value) -> Result<(), JsonPatchError> {
    let Some((last, parent_path)) = path.split_last() else {
        *doc = value;
        return Ok(());
    };
    let missing = || {
        JsonPatchError::Failed(format!(
            "add operation does not apply: doc is missing path: \"{}\"",
            render(path)
        ))
    };
    match resolve_mut(doc, parent_path).ok_or_else(missing)? {
        Value::Object(map) => {
            map.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(items) => {
            let index = if last == "-" {
                items.len()
            } else {
                last.parse::<usize>()
                    .ok()
                    .filter(|i| *i <= items.len())
                    .ok_or_else(missing)?
            };
            items.insert(index, value);
            Ok(())
        }
        _ => Err(missing()),
    }
}

fn remove(doc: &mut Value, path: &[String]) -> Result<Value, JsonPatchError> {
    let missing = || {
        JsonPatchError::Failed(format!(
            "remove operation does not apply: doc is missing path: \"{}\"",
            render(path)
        ))
    };
    let (last, parent_path) = path.split_last().ok_or_else(missing)?;
    match resolve_mut(doc, parent_path).ok_or_else(missing)? {
        Value::Object(map) => map.remove(last).ok_or_else(missing),
        Value::Array(items) => {
            let index = last
                .parse::<usize>()
                .ok()
                .filter(|i| *i < items.len())
                .ok_or_else(missing)?;
            Ok(items.remove(index))
        }
        _ => Err(missing()),
    }
}

/// Merges an applied configuration into the live object (server-side apply's merge step; the
/// removal of fields the manager stopped applying happens before, in `managed`). `null`s in the
/// configuration are ignored.
pub(crate) fn apply_merge(live: &mut Value, applied: &Value, node: &SchemaNode) {
    match (live, applied) {
        (Value::Object(live_map), Value::Object(applied_map)) if !node.map_atomic => {
            for (key, value) in applied_map {
                if value.is_null() {
                    continue;
                }
                let child = node.child(key);
                match live_map.get_mut(key) {
                    Some(existing) => apply_merge(existing, value, child),
                    None => {
                        live_map.insert(key.clone(), without_nulls(value));
                    }
                }
            }
        }
        (Value::Array(live_items), Value::Array(applied_items)) => match &node.list_type {
            ListType::Map(keys) => {
                for item in applied_items {
                    let key = list_map_key(item, keys);
                    match live_items
                        .iter_mut()
                        .find(|l| l.is_object() && list_map_key(l, keys) == key)
                    {
                        Some(existing) => apply_merge(existing, item, node.item()),
                        None => live_items.push(without_nulls(item)),
                    }
                }
            }
            ListType::Set => {
                for item in applied_items {
                    if !live_items.contains(item) {
                        live_items.push(item.clone());
                    }
                }
            }
            ListType::Atomic => *live_items = applied_items.clone(),
        },
        (live, applied) => *live = without_nulls(applied),
    }
}

/// A copy with `null` object fields dropped (nulls in an applied configuration mean nothing).
fn without_nulls(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc7386() {
        // The examples of RFC 7386, appendix A.
        let cases = [
            (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
            (json!({"a":"b"}), json!({"a":null}), json!({})),
            (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
            (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
            (json!([1, 2]), json!({"a":"b","c":null}), json!({"a":"b"})),
            (
                json!({}),
                json!({"a":{"bb":{"ccc":null}}}),
                json!({"a":{"bb":{}}}),
            ),
        ];
        for (mut target, patch, expected) in cases {
            merge_patch(&mut target, &patch);
            assert_eq!(target, expected);
        }
    }

    #[test]
    fn json_patch_ops_and_quirks() {
        let mut doc = json!({"metadata": {"finalizers": ["a"]}, "spec": {"x": 1}});
        json_patch(
            &mut doc,
            &json!([
                {"op": "test", "path": "/metadata/finalizers", "value": ["a"]},
                {"op": "add", "path": "/metadata/finalizers/-", "value": "b"},
                {"op": "replace", "path": "/spec/x", "value": 2},
                {"op": "copy", "from": "/spec/x", "path": "/spec/y"},
                {"op": "move", "from": "/spec/y", "path": "/spec/z"},
                {"op": "test", "path": "/metadata/labels", "value": null},
                {"op": "remove", "path": "/metadata/finalizers/0"},
            ]),
        )
        .unwrap();
        assert_eq!(
            doc,
            json!({"metadata": {"finalizers": ["b"]}, "spec": {"x": 2, "z": 2}})
        );
        assert!(matches!(
            json_patch(
                &mut doc,
                &json!([{"op": "test", "path": "/spec/x", "value": 3}])
            ),
            Err(JsonPatchError::Failed(_))
        ));
        assert!(matches!(
            json_patch(&mut doc, &json!([{"op": "remove", "path": "/nope/x"}])),
            Err(JsonPatchError::Failed(_))
        ));
        assert!(matches!(
            json_patch(&mut doc, &json!({"op": "add"})),
            Err(JsonPatchError::Malformed(_))
        ));
    }

    #[test]
    fn apply_merges_list_maps_by_key() {
        let node = SchemaNode::from_openapi(&json!({
            "type": "object",
            "properties": {"approvals": {
                "type": "array",
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["approver"],
                "items": {"type": "object"}
            }, "plain": {"type": "array"}}
        }));
        let mut live =
            json!({"approvals": [{"approver": "a", "decision": "Approve"}], "plain": [1, 2]});
        apply_merge(
            &mut live,
            &json!({"approvals": [{"approver": "b", "decision": "Deny"}, {"approver": "a", "reason": "ok"}], "plain": [3]}),
            &node,
        );
        assert_eq!(
            live,
            json!({"approvals": [
                {"approver": "a", "decision": "Approve", "reason": "ok"},
                {"approver": "b", "decision": "Deny"}
            ], "plain": [3]})
        );
    }
}
