//! `labelSelector` (equality- and set-based) and `fieldSelector` (`metadata.name`,
//! `metadata.namespace`), for lists, watches and deletecollection.

use serde_json::Value;

use super::meta;
use super::status::ApiError;

#[derive(Debug, Clone, PartialEq)]
enum LabelReq {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

#[derive(Debug, Clone, PartialEq)]
struct FieldReq {
    field: String,
    value: String,
    equal: bool,
}

/// Parsed selectors of one request. The default selects everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Selector {
    labels: Vec<LabelReq>,
    fields: Vec<FieldReq>,
}

impl Selector {
    pub fn parse(
        label_selector: Option<&str>,
        field_selector: Option<&str>,
    ) -> Result<Self, ApiError> {
        let labels = match label_selector {
            Some(s) => parse_labels(s)?,
            None => Vec::new(),
        };
        let fields = match field_selector {
            Some(s) => parse_fields(s)?,
            None => Vec::new(),
        };
        Ok(Self { labels, fields })
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }

    pub fn matches(&self, obj: &Value) -> bool {
        let labels = meta::labels(obj);
        let label = |k: &str| labels.get(k).and_then(Value::as_str).map(str::to_string);
        let labels_ok = self.labels.iter().all(|req| match req {
            LabelReq::Eq(k, v) => label(k).as_deref() == Some(v.as_str()),
            LabelReq::NotEq(k, v) => label(k).as_deref() != Some(v.as_str()),
            LabelReq::In(k, vs) => label(k).is_some_and(|l| vs.contains(&l)),
            LabelReq::NotIn(k, vs) => label(k).is_none_or(|l| !vs.contains(&l)),
            LabelReq::Exists(k) => label(k).is_some(),
            LabelReq::NotExists(k) => label(k).is_none(),
        });
        labels_ok
            && self.fields.iter().all(|req| {
                let actual = match req.field.as_str() {
                    "metadata.name" => meta::meta_str(obj, "name").unwrap_or_default(),
                    _ => meta::meta_str(obj, "namespace").unwrap_or_default(),
                };
                (actual == req.value) == req.equal
            })
    }
}

/// Splits on commas outside parentheses (`a in (x,y),b`).
fn split_top(s: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    parts.push(cur);
    parts
        .into_iter()
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

fn valid_label_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 317
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

fn valid_label_value(v: &str) -> bool {
    v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn bad_label_selector(s: &str) -> ApiError {
    ApiError::bad_request(format!(
        "unable to parse requirement: invalid label selector: {s:?}"
    ))
}

fn parse_labels(selector: &str) -> Result<Vec<LabelReq>, ApiError> {
    let mut reqs = Vec::new();
    for part in split_top(selector) {
        let req = if let Some(key) = part.strip_prefix('!') {
            LabelReq::NotExists(key.trim().to_string())
        } else if let Some((k, v)) = part.split_once("!=") {
            LabelReq::NotEq(k.trim().to_string(), v.trim().to_string())
        } else if let Some((k, v)) = part.split_once("==") {
            LabelReq::Eq(k.trim().to_string(), v.trim().to_string())
        } else if let Some((k, v)) = part.split_once('=') {
            LabelReq::Eq(k.trim().to_string(), v.trim().to_string())
        } else if let Some((k, rest)) = part.split_once(" notin ") {
            LabelReq::NotIn(
                k.trim().to_string(),
                parse_set(rest).ok_or_else(|| bad_label_selector(&part))?,
            )
        } else if let Some((k, rest)) = part.split_once(" in ") {
            LabelReq::In(
                k.trim().to_string(),
                parse_set(rest).ok_or_else(|| bad_label_selector(&part))?,
            )
        } else {
            LabelReq::Exists(part.trim().to_string())
        };
        let (key, values): (&str, Vec<&String>) = match &req {
            LabelReq::Eq(k, v) | LabelReq::NotEq(k, v) => (k, vec![v]),
            LabelReq::In(k, vs) | LabelReq::NotIn(k, vs) => (k, vs.iter().collect()),
            LabelReq::Exists(k) | LabelReq::NotExists(k) => (k, Vec::new()),
        };
        if !valid_label_key(key) || !values.iter().all(|v| valid_label_value(v)) {
            return Err(bad_label_selector(&part));
        }
        reqs.push(req);
    }
    Ok(reqs)
}

fn parse_set(rest: &str) -> Option<Vec<String>> {
    let inner = rest.trim().strip_prefix('(')?.strip_suffix(')')?;
    Some(
        inner
            .split(',')
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect(),
    )
}

fn parse_fields(selector: &str) -> Result<Vec<FieldReq>, ApiError> {
    let mut reqs = Vec::new();
    for part in selector.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (field, value, equal) = if let Some((f, v)) = part.split_once("!=") {
            (f, v, false)
        } else if let Some((f, v)) = part.split_once("==") {
            (f, v, true)
        } else if let Some((f, v)) = part.split_once('=') {
            (f, v, true)
        } else {
            return Err(ApiError::bad_request(format!(
                "invalid selector: '{part}'; can't understand '{part}'"
            )));
        };
        let field = field.trim();
        if !matches!(field, "metadata.name" | "metadata.namespace") {
            return Err(ApiError::bad_request(format!(
                "field label not supported: {field}"
            )));
        }
        reqs.push(FieldReq {
            field: field.to_string(),
            value: value.trim().to_string(),
            equal,
        });
    }
    Ok(reqs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_and_field_selectors() {
        let obj = json!({"metadata": {"name": "x", "namespace": "ns", "labels": {"a": "b", "env": "prod"}}});
        let ok = |l: Option<&str>, f: Option<&str>| Selector::parse(l, f).unwrap().matches(&obj);
        assert!(ok(Some("a=b,env"), None));
        assert!(ok(Some("a==b,!missing,env in (prod, dev)"), None));
        assert!(!ok(Some("a=c"), None));
        assert!(!ok(Some("a!=b"), None));
        assert!(!ok(Some("env notin (prod)"), None));
        assert!(ok(None, Some("metadata.name=x,metadata.namespace!=other")));
        assert!(!ok(None, Some("metadata.name=y")));
        assert_eq!(
            Selector::parse(None, Some("spec.x=1")).unwrap_err().code,
            400
        );
        assert_eq!(Selector::parse(Some("a=b=c"), None).unwrap_err().code, 400);
    }
}
