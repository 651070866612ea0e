//! Table output, which `kubectl get` asks for: a GET or LIST whose `Accept` names
//! `application/json;as=Table;v=v1;g=meta.k8s.io` is answered with a `meta.k8s.io` Table built
//! from the CRD's `additionalPrinterColumns`, cell by cell as the API server does it. Custom
//! resources only; built-in types answer plain JSON whatever is asked.

use jiff::Timestamp;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceColumnDefinition;
use serde_json::{Map, Value, json};

use super::jsonpath::{self, JsonPath};
use super::status::ApiError;

/// What a GET or LIST answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Output {
    Json,
    /// A Table in this `meta.k8s.io` version (`v1` or `v1beta1`).
    Table(&'static str),
}

/// Picks the answer from an `Accept` header (apiserver `negotiation.NegotiateMediaTypeOptions`):
/// the clauses in the order `goautoneg.ParseAccept` sorts them (higher `q` first, then concrete
/// types before wildcards, otherwise as sent), and the first this server can produce wins. A
/// clause with `as=Table;g=meta.k8s.io;v=v1|v1beta1` asks for a Table (apiserver
/// `RequestScope.AllowsMediaTypeTransform`: JSON or YAML; this server writes JSON only); one
/// without `as` asks for the object. No header, or none this server produces, gets JSON (the
/// real server would answer 406 to the latter).
pub(crate) fn negotiate(accept: &str) -> Output {
    let mut clauses: Vec<Clause> = accept.split(',').filter_map(Clause::parse).collect();
    clauses.sort_by(|a, b| {
        b.q.total_cmp(&a.q)
            .then((a.type_ == "*").cmp(&(b.type_ == "*")))
            .then((a.subtype == "*").cmp(&(b.subtype == "*")))
    });
    for clause in &clauses {
        let json_ok = matches!(
            (clause.type_.as_str(), clause.subtype.as_str()),
            ("application", "json") | ("application", "*") | ("*", "*")
        );
        if !json_ok {
            continue;
        }
        let param = |k: &str| {
            clause
                .params
                .iter()
                .find(|(p, _)| p == k)
                .map(|(_, v)| v.as_str())
        };
        match (param("as"), param("g"), param("v")) {
            (None, None, None) => return Output::Json,
            (Some("Table"), Some("meta.k8s.io"), Some("v1")) => return Output::Table("v1"),
            (Some("Table"), Some("meta.k8s.io"), Some("v1beta1")) => {
                return Output::Table("v1beta1");
            }
            // PartialObjectMetadata and unknown conversions: not produced here.
            _ => {}
        }
    }
    Output::Json
}

/// One clause of an Accept header, split as goautoneg `ParseAccept` splits it.
struct Clause {
    type_: String,
    subtype: String,
    q: f64,
    params: Vec<(String, String)>,
}

impl Clause {
    fn parse(part: &str) -> Option<Self> {
        let mut pieces = part.trim_matches(' ').split(';');
        let media = pieces.next()?;
        let (type_, subtype) = match media.split_once('/') {
            Some((t, s)) if !s.contains('/') => (t.trim_matches(' '), s.trim_matches(' ')),
            Some(_) => return None,
            None if media.trim_matches(' ') == "*" => ("*", "*"),
            None => return None,
        };
        let mut clause = Clause {
            type_: type_.to_string(),
            subtype: subtype.to_string(),
            q: 1.0,
            params: Vec::new(),
        };
        for piece in pieces {
            let Some((key, value)) = piece.split_once('=') else {
                continue;
            };
            if value.contains('=') {
                continue;
            }
            let key = key.trim_matches(' ');
            if key == "q" {
                clause.q = value.parse().unwrap_or(0.0);
            } else {
                clause
                    .params
                    .push((key.to_string(), value.trim_matches(' ').to_string()));
            }
        }
        Some(clause)
    }
}

/// What each row carries besides its cells (`TableOptions.includeObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IncludeObject {
    None,
    /// A `PartialObjectMetadata` (the default).
    Metadata,
    Object,
}

impl IncludeObject {
    /// The `includeObject` query parameter (apimachinery `ValidateTableOptions`; the error as
    /// apiserver `optionsForTransform` words it).
    pub fn from_param(value: Option<&str>) -> Result<Self, ApiError> {
        match value.unwrap_or_default() {
            "" | "Metadata" => Ok(Self::Metadata),
            "None" => Ok(Self::None),
            "Object" => Ok(Self::Object),
            other => Err(ApiError::bad_request(format!(
                "Unable to convert to Table as requested: includeObject: Invalid value: {other:?}: must be 'Metadata', 'Object', 'None', or empty"
            ))),
        }
    }
}

/// Descriptions the API server gives the built-in columns (apimachinery
/// `types_swagger_doc_generated.go`, `map_ObjectMeta`).
const NAME_DESCRIPTION: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const CREATION_TIMESTAMP_DESCRIPTION: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

/// A CRD version's table convertor (apiextensions-apiserver `tableconvertor.New`).
#[derive(Debug)]
pub(crate) struct Convertor {
    /// `columnDefinitions`: Name, then the CRD's columns.
    headers: Vec<Value>,
    /// Each CRD column's path and type, in header order after Name.
    columns: Vec<(JsonPath, String)>,
}

impl Convertor {
    pub fn new(crd_columns: &[CustomResourceColumnDefinition]) -> Self {
        let age = [CustomResourceColumnDefinition {
            name: "Age".into(),
            type_: "date".into(),
            description: Some(CREATION_TIMESTAMP_DESCRIPTION.into()),
            json_path: ".metadata.creationTimestamp".into(),
            ..Default::default()
        }];
        // apiextensions-apiserver `pkg/apiserver/helpers.go`, `serveDefaultColumnsIfEmpty`: a
        // CRD without columns gets Age.
        let crd_columns = if crd_columns.is_empty() {
            &age[..]
        } else {
            crd_columns
        };
        let mut headers = vec![json!({
            "name": "Name", "type": "string", "format": "name",
            "description": NAME_DESCRIPTION, "priority": 0,
        })];
        let mut columns = Vec::new();
        for column in crd_columns {
            // `New` stops at a path it cannot parse and serves the columns before it.
            let Ok(path) = JsonPath::parse(&column.json_path) else {
                break;
            };
            let description = column
                .description
                .clone()
                .filter(|d| !d.is_empty())
                .unwrap_or_else(|| {
                    format!(
                        "Custom resource definition column (in JSONPath format): {}",
                        column.json_path
                    )
                });
            headers.push(json!({
                "name": column.name,
                "type": column.type_,
                "format": column.format.clone().unwrap_or_default(),
                "description": description,
                "priority": column.priority.unwrap_or(0),
            }));
            columns.push((path, column.type_.clone()));
        }
        Self { headers, columns }
    }

    /// The Table for one object or a list (`ConvertToTable`, then apiserver `asTable` for each
    /// row's object).
    pub fn to_table(
        &self,
        body: &Value,
        version: &str,
        include: IncludeObject,
        now: Timestamp,
    ) -> Value {
        let is_list = body.get("items").is_some_and(Value::is_array);
        let objects: Vec<&Value> = if is_list {
            body["items"]
                .as_array()
                .map(|v| v.iter().collect())
                .unwrap_or_default()
        } else {
            vec![body]
        };
        let mut metadata = Map::new();
        if is_list {
            // ListMeta: resourceVersion, continue and remainingItemCount carried over.
            if let Some(list_meta) = body.get("metadata").and_then(Value::as_object) {
                for key in ["resourceVersion", "continue", "remainingItemCount"] {
                    if let Some(v) = list_meta.get(key) {
                        metadata.insert(key.into(), v.clone());
                    }
                }
            }
        } else if let Some(rv) = body.pointer("/metadata/resourceVersion") {
            metadata.insert("resourceVersion".into(), rv.clone());
        }
        let rows: Vec<Value> = objects
            .into_iter()
            .map(|obj| {
                json!({
                    "cells": self.cells(obj, now),
                    "object": row_object(obj, version, include),
                })
            })
            .collect();
        json!({
            "kind": "Table",
            "apiVersion": format!("meta.k8s.io/{version}"),
            "metadata": metadata,
            "columnDefinitions": self.headers,
            "rows": rows,
        })
    }

    /// One row's cells: the name, then each column; `null` where the path finds nothing or the
    /// value does not fit the column's type.
    fn cells(&self, obj: &Value, now: Timestamp) -> Vec<Value> {
        let name = obj
            .pointer("/metadata/name")
            .cloned()
            .unwrap_or_else(|| json!(""));
        let mut cells = vec![name];
        for (path, type_) in &self.columns {
            // Only the first result counts ("we can assume to have only one result").
            let cell = match path.find(obj).first() {
                None => Value::Null,
                // String columns go through the JSONPath printer, whatever the value's type.
                Some(value) if type_ == "string" => Value::String(jsonpath::print(value)),
                Some(value) => cell_for_json_value(type_, value, now),
            };
            cells.push(cell);
        }
        cells
    }
}

/// apiextensions-apiserver `tableconvertor.cellForJSONValue`: a value of the column's type, or
/// `null`. A `date` is the age since then, as `kubectl get` shows AGE.
fn cell_for_json_value(type_: &str, value: &Value, now: Timestamp) -> Value {
    match (type_, value) {
        ("integer", Value::Number(n)) => n
            .as_i64()
            // float64 → int64 truncates.
            .or_else(|| n.as_f64().map(|f| f as i64))
            .map_or(Value::Null, |i| json!(i)),
        ("number", Value::Number(n)) => n.as_f64().map_or(Value::Null, |f| json!(f)),
        ("boolean", Value::Bool(b)) => json!(b),
        ("string", Value::String(s)) => json!(s),
        ("date", Value::String(s)) => json!(date_cell(s, now)),
        _ => Value::Null,
    }
}

/// A `date` cell: metav1 `Time.UnmarshalQueryParameter` (empty or "null" is the zero time,
/// otherwise RFC 3339 or `<invalid>`), then apimachinery `table.ConvertToHumanReadableDateType`
/// (`<unknown>` for the zero time, else `HumanDuration(time.Since(t))`).
fn date_cell(text: &str, now: Timestamp) -> String {
    if text.is_empty() || text == "null" {
        return "<unknown>".into();
    }
    match text.parse::<Timestamp>() {
        Ok(t) => human_duration(now.as_nanosecond() - t.as_nanosecond()),
        Err(_) => "<invalid>".into(),
    }
}

/// apimachinery `pkg/util/duration.HumanDuration`, for a duration in nanoseconds. Seconds are
/// truncated toward zero, so up to 1.999 s in the future is `0s` and beyond is `<invalid>`.
fn human_duration(nanos: i128) -> String {
    const SECOND: i128 = 1_000_000_000;
    let seconds = nanos / SECOND;
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let days = (hours / 24) % 365;
        return if days == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{days}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// A row's `object` (apiserver `asTable`): the object's metadata as a `PartialObjectMetadata`
/// (apimachinery `meta.AsPartialObjectMetadata` copies every ObjectMeta field), the whole
/// object, or nothing.
fn row_object(obj: &Value, version: &str, include: IncludeObject) -> Value {
    match include {
        IncludeObject::None => Value::Null,
        IncludeObject::Object => obj.clone(),
        IncludeObject::Metadata => json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": format!("meta.k8s.io/{version}"),
            "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBECTL: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";

    #[test]
    fn negotiates_as_the_api_server() {
        assert_eq!(negotiate(KUBECTL), Output::Table("v1"));
        assert_eq!(negotiate(""), Output::Json);
        assert_eq!(negotiate("application/json"), Output::Json);
        assert_eq!(
            negotiate("application/json;as=Table;v=v1beta1;g=meta.k8s.io"),
            Output::Table("v1beta1")
        );
        // Higher q first; concrete types before wildcards.
        assert_eq!(
            negotiate("application/json;as=Table;v=v1;g=meta.k8s.io;q=0.5, application/json"),
            Output::Json
        );
        assert_eq!(
            negotiate("*/*, application/json;as=Table;v=v1;g=meta.k8s.io"),
            Output::Table("v1")
        );
        // Conversions this server does not produce are passed over.
        assert_eq!(
            negotiate(
                "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1;g=meta.k8s.io"
            ),
            Output::Table("v1")
        );
        assert_eq!(
            negotiate("application/vnd.kubernetes.protobuf"),
            Output::Json
        );
    }

    #[test]
    fn human_durations_match_apimachinery() {
        let s = 1_000_000_000i128;
        for (nanos, want) in [
            (-2 * s, "<invalid>"),
            (-s - s / 2, "0s"),
            (0, "0s"),
            (119 * s, "119s"),
            (120 * s, "2m"),
            (125 * s, "2m5s"),
            (10 * 60 * s, "10m"),
            (3 * 3600 * s, "3h"),
            (3 * 3600 * s + 60 * s, "3h1m"),
            (8 * 3600 * s, "8h"),
            (50 * 3600 * s, "2d2h"),
            (10 * 86400 * s, "10d"),
            (3 * 365 * 86400 * s, "3y"),
            (9 * 365 * 86400 * s, "9y"),
        ] {
            assert_eq!(human_duration(nanos), want, "{nanos}");
        }
    }

    #[test]
    fn cells_follow_the_column_types() {
        let now: Timestamp = "2026-01-01T12:00:00Z".parse().unwrap();
        let column = |name: &str, type_: &str, path: &str| CustomResourceColumnDefinition {
            name: name.into(),
            type_: type_.into(),
            json_path: path.into(),
            ..Default::default()
        };
        let convertor = Convertor::new(&[
            column("N", "integer", ".n"),
            column("F", "string", ".f"),
            column("When", "date", ".when"),
            column("Later", "date", ".later"),
            column("Gone", "string", ".gone"),
            column("Typed", "boolean", ".n"),
        ]);
        let obj = json!({"metadata": {"name": "x", "resourceVersion": "7"},
            "n": 2.7, "f": 3, "when": "2026-01-01T11:00:00Z", "later": "2026-01-01T13:00:00Z"});
        let table = convertor.to_table(&obj, "v1", IncludeObject::Metadata, now);
        assert_eq!(
            table["rows"][0]["cells"],
            json!(["x", 2, "3", "60m", "<invalid>", null, null])
        );
        assert_eq!(table["metadata"]["resourceVersion"], "7");
        assert_eq!(table["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        let defaults = Convertor::new(&[]);
        let names: Vec<_> = defaults.headers.iter().map(|h| h["name"].clone()).collect();
        assert_eq!(names, vec![json!("Name"), json!("Age")]);
    }
}
