//! What a document is, by its `apiVersion` and `kind`: one of our kinds, a `List` of objects,
//! something else to skip, or not a manifest at all.

use serde_json::Value;

use crate::api::common::{GROUP, VERSION};
use crate::checks::finding::closest;
use crate::checks::{Finding, Kind, rules};

#[derive(Debug, Clone, PartialEq)]
pub enum Dispatch {
    Pim(Kind),
    /// `kind: List` (what `kubectl get -o yaml` prints): each of `items` is a document.
    List(Vec<Value>),
    /// Another API's object, skipped with a note.
    Other {
        api_version: String,
        kind: String,
    },
    /// Not usable as a manifest.
    Invalid(Finding),
}

pub fn dispatch(document: &Value) -> Dispatch {
    let Some(fields) = document.as_object() else {
        return Dispatch::Invalid(Finding::new(
            rules::INVALID_DOCUMENT,
            "",
            format!(
                "must be a mapping with apiVersion and kind, not {}",
                crate::checks::openapi::type_name(document)
            ),
        ));
    };
    let text = |key: &str| {
        fields
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let name = document.pointer("/metadata/name").and_then(Value::as_str);
    let (Some(api_version), Some(kind)) = (text("apiVersion"), text("kind")) else {
        let missing = if text("apiVersion").is_none() {
            "apiVersion"
        } else {
            "kind"
        };
        let finding = Finding::new(rules::INVALID_DOCUMENT, missing, "is required");
        return Dispatch::Invalid(match text("kind") {
            Some(kind) => finding.on(kind, name),
            None => finding,
        });
    };
    if kind == "List"
        || (kind.ends_with("List") && fields.get("items").is_some_and(Value::is_array))
    {
        let items = fields
            .get("items")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        return Dispatch::List(items);
    }
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    if group != GROUP {
        return Dispatch::Other {
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
        };
    }
    let Some(known) = Kind::from_name(kind) else {
        let names = Kind::ALL.map(Kind::as_str);
        let hint = match closest(kind, names) {
            Some(close) => format!("did you mean `{close}`?"),
            None => rules::UNKNOWN_KIND.hint.to_owned(),
        };
        return Dispatch::Invalid(
            Finding::new(
                rules::UNKNOWN_KIND,
                "kind",
                format!("{GROUP} has no kind {kind:?}"),
            )
            .hint(hint)
            .on(kind, name),
        );
    };
    if version != VERSION {
        return Dispatch::Invalid(
            Finding::new(
                rules::UNSUPPORTED_VERSION,
                "apiVersion",
                format!("{api_version:?} is not served; {GROUP} serves {VERSION} only"),
            )
            .on(kind, name),
        );
    }
    Dispatch::Pim(known)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dispatches_on_api_version_and_kind() {
        let pim = json!({"apiVersion": "pim.dev/v1alpha1", "kind": "PimGroup"});
        assert_eq!(dispatch(&pim), Dispatch::Pim(Kind::PimGroup));
        let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment"});
        assert_eq!(
            dispatch(&deployment),
            Dispatch::Other {
                api_version: "apps/v1".into(),
                kind: "Deployment".into()
            }
        );
        let list = json!({"apiVersion": "v1", "kind": "List", "items": [{"kind": "X"}]});
        assert_eq!(dispatch(&list), Dispatch::List(vec![json!({"kind": "X"})]));
    }

    #[test]
    fn broken_type_meta_is_a_finding_at_its_field() {
        let rule_and_path = |doc: Value| match dispatch(&doc) {
            Dispatch::Invalid(f) => (f.rule, f.path, f.hint),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            rule_and_path(json!({"apiVersion": "pim.dev/v1alpha1", "kind": "PimGrop"})),
            (
                "unknown-kind",
                "kind".to_owned(),
                "did you mean `PimGroup`?".to_owned()
            )
        );
        assert_eq!(
            rule_and_path(json!({"apiVersion": "pim.dev/v1", "kind": "PimGroup"})).0,
            "unsupported-version"
        );
        assert_eq!(rule_and_path(json!({"kind": "PimGroup"})).1, "apiVersion");
        assert_eq!(rule_and_path(json!(["a"])).0, "invalid-document");
    }
}
