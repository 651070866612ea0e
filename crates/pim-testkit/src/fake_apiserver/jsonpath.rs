//! The JSONPath of CRD printer columns, as the API server's table convertor evaluates it:
//! client-go `util/jsonpath` with `AllowMissingKeys(true)` (apiextensions-apiserver
//! `pkg/registry/customresource/tableconvertor/tableconvertor.go`, `New`), and how its printer
//! writes a value (client-go `util/jsonpath/jsonpath.go`, `PrintResults` and `evalToText`).
//!
//! Only the subset a CRD column uses is understood: `.field`, `[n]` (negative counts from the
//! end), `[*]`, and filters `[?(@.a.b == literal)]` / `!=` with a string, number or boolean
//! literal. Anything else does not parse.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Field(String),
    Index(i64),
    All,
    Filter {
        path: Vec<String>,
        equal: bool,
        literal: Value,
    },
}

/// A parsed printer-column path.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct JsonPath {
    steps: Vec<Step>,
}

impl JsonPath {
    /// Parses a column's `jsonPath` (e.g. `.status.conditions[?(@.type=="Ready")].reason`).
    pub fn parse(path: &str) -> Result<Self, String> {
        let mut steps = Vec::new();
        let mut rest = path.trim();
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('.') {
                let end = after.find(['.', '[']).unwrap_or(after.len());
                let name = &after[..end];
                if name.is_empty() {
                    return Err(format!("empty field name in {path:?}"));
                }
                steps.push(Step::Field(name.to_string()));
                rest = &after[end..];
            } else if let Some(after) = rest.strip_prefix('[') {
                let close =
                    closing_bracket(after).ok_or_else(|| format!("unclosed [ in {path:?}"))?;
                steps.push(bracket(&after[..close], path)?);
                rest = &after[close + 1..];
            } else {
                return Err(format!("unrecognized character at {rest:?} in {path:?}"));
            }
        }
        Ok(Self { steps })
    }

    /// Every value the path reaches, in document order; none when a key is missing (missing
    /// keys are allowed) or a step does not fit the value (client-go reports an error, and the
    /// table convertor then leaves the cell empty, the same outcome).
    pub fn find<'a>(&self, root: &'a Value) -> Vec<&'a Value> {
        let mut current = vec![root];
        for step in &self.steps {
            let mut next = Vec::new();
            for value in current {
                match step {
                    Step::Field(name) => next.extend(value.get(name.as_str())),
                    Step::Index(i) => {
                        if let Some(items) = value.as_array() {
                            let len = i64::try_from(items.len()).unwrap_or(i64::MAX);
                            let at = if *i < 0 { len + i } else { *i };
                            next.extend(usize::try_from(at).ok().and_then(|at| items.get(at)));
                        }
                    }
                    Step::All => match value {
                        Value::Array(items) => next.extend(items),
                        Value::Object(map) => next.extend(map.values()),
                        _ => {}
                    },
                    Step::Filter {
                        path,
                        equal,
                        literal,
                    } => {
                        // client-go `evalFilter`: only lists are filtered; an item without the
                        // compared field is skipped.
                        let Some(items) = value.as_array() else {
                            return Vec::new();
                        };
                        next.extend(items.iter().filter(|item| {
                            let left = path.iter().try_fold(*item, |v, key| v.get(key.as_str()));
                            left.is_some_and(|left| (left == literal) == *equal)
                        }));
                    }
                }
            }
            current = next;
        }
        current
    }
}

/// Index of the `]` that closes a bracket, skipping quoted text.
fn closing_bracket(s: &str) -> Option<usize> {
    let mut quote: Option<char> = None;
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, ']') => return Some(i),
            (None, _) => {}
        }
    }
    None
}

fn bracket(inner: &str, path: &str) -> Result<Step, String> {
    let inner = inner.trim();
    if inner == "*" {
        return Ok(Step::All);
    }
    if let Ok(i) = inner.parse::<i64>() {
        return Ok(Step::Index(i));
    }
    let filter = inner
        .strip_prefix("?(")
        .and_then(|f| f.strip_suffix(')'))
        .ok_or_else(|| format!("unsupported [{inner}] in {path:?}"))?;
    let (left, right, equal) = match (filter.split_once("=="), filter.split_once("!=")) {
        (Some((l, r)), _) => (l, r, true),
        (None, Some((l, r))) => (l, r, false),
        _ => return Err(format!("unsupported filter {filter:?} in {path:?}")),
    };
    let fields = left
        .trim()
        .strip_prefix("@.")
        .ok_or_else(|| format!("a filter must compare @.field, in {path:?}"))?;
    let path_fields: Vec<String> = fields.split('.').map(str::to_string).collect();
    if path_fields.iter().any(String::is_empty) {
        return Err(format!("empty field name in filter of {path:?}"));
    }
    Ok(Step::Filter {
        path: path_fields,
        equal,
        literal: literal(right.trim()).ok_or_else(|| format!("unsupported literal in {path:?}"))?,
    })
}

fn literal(text: &str) -> Option<Value> {
    for quote in ['"', '\''] {
        if let Some(s) = text.strip_prefix(quote).and_then(|t| t.strip_suffix(quote)) {
            return Some(Value::String(s.to_string()));
        }
    }
    match text {
        "true" => Some(Value::Bool(true)),
        "false" => Some(Value::Bool(false)),
        _ => serde_json::from_str::<serde_json::Number>(text)
            .ok()
            .map(Value::Number),
    }
}

/// How the JSONPath printer writes one value: maps and lists as compact JSON, anything else as
/// Go's `fmt.Fprint` does (a JSON null is an invalid value there: `<no value>`, from
/// `template.PrintableValue`).
pub(crate) fn print(value: &Value) -> String {
    match value {
        Value::Null => "<no value>".to_string(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (None, Some(u), _) => u.to_string(),
            (None, None, Some(f)) => go_float(f),
            _ => n.to_string(),
        },
        Value::Array(_) | Value::Object(_) => value.to_string(),
    }
}

/// Go's `%v` of a float64 (strconv `FormatFloat(f, 'g', -1, 64)`): the shortest digits, in
/// exponent form when the exponent is below -4 or at least 6 (strconv `%e is used if the
/// exponent ... if precision is the shortest possible, use precision 6`): `1e+06`, `123456`.
fn go_float(f: f64) -> String {
    if !f.is_finite() {
        return if f.is_nan() {
            "NaN".into()
        } else if f > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..6).contains(&exp) {
        format!("{f}")
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn eval(path: &str, doc: &Value) -> Vec<Value> {
        JsonPath::parse(path)
            .unwrap()
            .find(doc)
            .into_iter()
            .cloned()
            .collect()
    }

    #[test]
    fn fields_indexes_and_filters() {
        let doc = json!({"spec": {"role": "owner"}, "status": {"conditions": [
            {"type": "Ready", "status": "True", "reason": "Fine"},
            {"type": "Active", "status": "False", "reason": "NotStarted"},
        ]}});
        assert_eq!(eval(".spec.role", &doc), vec![json!("owner")]);
        assert!(eval(".spec.missing", &doc).is_empty());
        assert_eq!(
            eval(r#".status.conditions[?(@.type=="Active")].reason"#, &doc),
            vec![json!("NotStarted")]
        );
        assert_eq!(
            eval(".status.conditions[?(@.type!='Active')].status", &doc),
            vec![json!("True")]
        );
        assert_eq!(
            eval(".status.conditions[-1].type", &doc),
            vec![json!("Active")]
        );
        assert_eq!(eval(".status.conditions[*].type", &doc).len(), 2);
        assert!(
            eval(".spec[?(@.a==1)]", &doc).is_empty(),
            "only lists filter"
        );
        assert!(JsonPath::parse(".a[?(@.b>1)]").is_err());
        assert!(JsonPath::parse("spec").is_err());
    }

    #[test]
    fn prints_as_go_does() {
        assert_eq!(print(&json!("x")), "x");
        assert_eq!(print(&json!(3)), "3");
        assert_eq!(print(&json!(1.5)), "1.5");
        assert_eq!(print(&json!(1_000_000.5)), "1.0000005e+06");
        assert_eq!(print(&json!(0.00001)), "1e-05");
        assert_eq!(print(&json!(true)), "true");
        assert_eq!(print(&json!({"b": 1, "a": [1]})), r#"{"a":[1],"b":1}"#);
        assert_eq!(print(&Value::Null), "<no value>");
    }
}
