//! The example manifests and the generated CRDs, checked by real validators (DESIGN §11).
//!
//! - `check-jsonschema` validates every document in `examples/` against the openAPIV3Schema of
//!   the CRD of its kind, extracted from `crds/`, and must reject a set of broken documents.
//! - `kubernetes-validate --strict` validates the CRD files themselves (a built-in kind).
//!
//! Both tools come from PyPI: `.ci/install-tools` installs them. A missing tool fails the test.

// A test reports failure by panicking.
#![allow(clippy::panic, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use tempfile::TempDir;

/// Kubernetes version the CRDs are validated against (k8s-openapi's `v1_33` feature).
const KUBERNETES_VERSION: &str = "1.33.0";
const INSTALL_HINT: &str = "run `.ci/install-tools` to install the validators";

// ---------------------------------------------------------------------------------------------
// Files and documents
// ---------------------------------------------------------------------------------------------

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// The `.yaml`/`.yml` files of a directory, sorted by name.
fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries = fs::read_dir(dir).map_err(|e| format!("reading {}: {e}", dir.display()))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| format!("listing {}: {e}", dir.display()))?
            .path();
        if path
            .extension()
            .is_some_and(|ext| ext == "yaml" || ext == "yml")
        {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn read(path: &Path) -> Result<String, String> {
    fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))
}

fn parse_yaml(text: &str, origin: &str) -> Result<Value, String> {
    serde_saphyr::from_str::<Value>(text).map_err(|e| format!("parsing {origin}: {e}"))
}

/// One YAML document of a file: its own text (so the validator reads YAML as written) and
/// its parsed value.
struct Document {
    origin: String,
    text: String,
    value: Value,
}

impl Document {
    fn kind(&self) -> Result<&str, String> {
        str_at(&self.value, "/kind", &self.origin)
    }
}

/// Splits a YAML stream at `---` lines and drops documents that hold only comments.
fn documents(path: &Path) -> Result<Vec<Document>, String> {
    let text = read(path)?;
    let mut chunks = vec![String::new()];
    for line in text.lines() {
        if line.trim_end() == "---" {
            chunks.push(String::new());
        } else if let Some(chunk) = chunks.last_mut() {
            chunk.push_str(line);
            chunk.push('\n');
        }
    }
    let mut docs = Vec::new();
    for chunk in chunks {
        let origin = format!("{}#{}", path.display(), docs.len());
        let value = parse_yaml(&chunk, &origin)?;
        if !value.is_null() {
            docs.push(Document {
                origin,
                text: chunk,
                value,
            });
        }
    }
    Ok(docs)
}

fn str_at<'a>(value: &'a Value, pointer: &str, origin: &str) -> Result<&'a str, String> {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{origin}: no string at {pointer}"))
}

// ---------------------------------------------------------------------------------------------
// JSON Schemas from the CRDs
// ---------------------------------------------------------------------------------------------

/// The CRDs of `crds/`, each one's openAPIV3Schema written as a JSON Schema file, by kind.
struct Schemas {
    _dir: TempDir,
    by_kind: BTreeMap<String, PathBuf>,
}

impl Schemas {
    fn from_crds() -> Result<Self, String> {
        let dir = TempDir::new().map_err(|e| format!("creating a temp dir: {e}"))?;
        let mut by_kind = BTreeMap::new();
        for path in yaml_files(&repo_path("crds"))? {
            let origin = path.display().to_string();
            let crd = parse_yaml(&read(&path)?, &origin)?;
            let kind = str_at(&crd, "/spec/names/kind", &origin)?.to_owned();
            let schema = json_schema(&crd, &origin)?;
            let file = dir.path().join(format!("{kind}.schema.json"));
            let body = serde_json::to_string_pretty(&schema)
                .map_err(|e| format!("serializing the schema of {kind}: {e}"))?;
            fs::write(&file, body).map_err(|e| format!("writing {}: {e}", file.display()))?;
            if by_kind.insert(kind.clone(), file).is_some() {
                return Err(format!("two CRDs in crds/ define kind {kind}"));
            }
        }
        Ok(Self { _dir: dir, by_kind })
    }

    fn for_kind(&self, kind: &str) -> Result<&Path, String> {
        self.by_kind.get(kind).map(PathBuf::as_path).ok_or_else(|| {
            format!(
                "no CRD in crds/ for kind {kind}; known: {:?}",
                self.by_kind.keys()
            )
        })
    }
}

/// A CRD's `spec.versions[0].schema.openAPIV3Schema` as a JSON Schema for whole objects.
///
/// `apiVersion`, `kind` and `metadata` are described (the CRD leaves them to the API server),
/// and every object with `properties` gets `additionalProperties: false`, as the API server's
/// strict field validation rejects unknown fields: a misspelt field must fail, not pass unseen.
fn json_schema(crd: &Value, origin: &str) -> Result<Value, String> {
    let group = str_at(crd, "/spec/group", origin)?;
    let version = str_at(crd, "/spec/versions/0/name", origin)?;
    let kind = str_at(crd, "/spec/names/kind", origin)?;
    let mut schema = crd
        .pointer("/spec/versions/0/schema/openAPIV3Schema")
        .cloned()
        .ok_or_else(|| format!("{origin}: no spec.versions[0].schema.openAPIV3Schema"))?;
    let top = schema
        .as_object_mut()
        .ok_or_else(|| format!("{origin}: openAPIV3Schema is not an object"))?;
    let properties = top
        .entry("properties")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .ok_or_else(|| format!("{origin}: openAPIV3Schema.properties is not an object"))?;
    properties.insert(
        "apiVersion".into(),
        json!({ "enum": [format!("{group}/{version}")] }),
    );
    properties.insert("kind".into(), json!({ "enum": [kind] }));
    properties.insert(
        "metadata".into(),
        json!({
            "type": "object",
            "required": ["name"],
            "properties": { "name": { "type": "string", "minLength": 1 } },
            "additionalProperties": true
        }),
    );
    top.insert(
        "$schema".into(),
        json!("http://json-schema.org/draft-04/schema#"),
    );
    close_objects(&mut schema);
    Ok(schema)
}

/// Sets `additionalProperties: false` on every object schema that lists `properties` and
/// neither says otherwise nor preserves unknown fields, following the schema keywords only.
fn close_objects(schema: &mut Value) {
    let Some(node) = schema.as_object_mut() else {
        return;
    };
    let preserves_unknown = node.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true));
    if node.contains_key("properties")
        && !node.contains_key("additionalProperties")
        && !preserves_unknown
    {
        node.insert("additionalProperties".into(), json!(false));
    }
    if let Some(Value::Object(properties)) = node.get_mut("properties") {
        properties.values_mut().for_each(close_objects);
    }
    match node.get_mut("items") {
        Some(Value::Array(items)) => items.iter_mut().for_each(close_objects),
        Some(item) => close_objects(item),
        None => {}
    }
    if let Some(extra @ Value::Object(_)) = node.get_mut("additionalProperties") {
        close_objects(extra);
    }
    for keyword in ["allOf", "anyOf", "oneOf"] {
        if let Some(Value::Array(list)) = node.get_mut(keyword) {
            list.iter_mut().for_each(close_objects);
        }
    }
    if let Some(not) = node.get_mut("not") {
        close_objects(not);
    }
}

// ---------------------------------------------------------------------------------------------
// Tools
// ---------------------------------------------------------------------------------------------

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `sys.prefix` of `python3`, whose `bin/` holds pip's console scripts outside a user install.
fn python_prefix() -> Option<PathBuf> {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.prefix)"])
        .output()
        .ok()?;
    let prefix = String::from_utf8(out.stdout).ok()?;
    let prefix = prefix.trim();
    (out.status.success() && !prefix.is_empty()).then(|| PathBuf::from(prefix))
}

/// Finds a tool on PATH, then in `$HOME/.local/bin`, then in python3's `sys.prefix/bin`.
fn find_tool(name: &str) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    let user_bin = std::env::var_os("HOME").map(|home| Path::new(&home).join(".local/bin"));
    let found = on_path
        .into_iter()
        .chain(user_bin)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate));
    found.or_else(|| {
        let candidate = python_prefix()?.join("bin").join(name);
        is_executable(&candidate).then_some(candidate)
    })
}

fn tool(name: &str) -> PathBuf {
    find_tool(name).unwrap_or_else(|| {
        panic!(
            "`{name}` was not found on PATH, in $HOME/.local/bin or in python3's prefix/bin: \
             {INSTALL_HINT}"
        )
    })
}

/// What a tool run left: whether it succeeded and everything it printed.
struct Run {
    success: bool,
    output: String,
}

fn run(program: &Path, args: &[&str], files: &[&Path]) -> Run {
    let out = Command::new(program)
        .args(args)
        .args(files)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}; {INSTALL_HINT}", program.display()));
    Run {
        success: out.status.success(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

fn check_jsonschema(schema: &Path, instance: &Path) -> Run {
    let schema = schema.to_str().expect("temp paths are UTF-8");
    run(
        &tool("check-jsonschema"),
        &["--color", "never", "--schemafile", schema],
        &[instance],
    )
}

fn kubernetes_validate(files: &[&Path]) -> Run {
    run(
        &tool("kubernetes-validate"),
        &["--strict", "-k", KUBERNETES_VERSION],
        files,
    )
}

/// Validates one document, written to its own file, against the schema of its kind.
fn validate_document(schemas: &Schemas, dir: &Path, index: usize, doc: &Document) -> Run {
    let kind = doc.kind().unwrap_or_else(|e| panic!("{e}"));
    let schema = schemas
        .for_kind(kind)
        .unwrap_or_else(|e| panic!("{}: {e}", doc.origin));
    let path = dir.join(format!("doc{index}.yaml"));
    fs::write(&path, &doc.text)
        .unwrap_or_else(|e| panic!("writing {} for {}: {e}", path.display(), doc.origin));
    check_jsonschema(schema, &path)
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn examples_validate_against_crd_schemas() {
    let schemas = Schemas::from_crds().unwrap_or_else(|e| panic!("{e}"));
    // examples/requests/ holds what people create themselves (not part of the folder apply).
    let mut files = yaml_files(&repo_path("examples")).unwrap_or_else(|e| panic!("{e}"));
    assert!(!files.is_empty(), "examples/ holds no YAML file");
    files.extend(yaml_files(&repo_path("examples/requests")).unwrap_or_else(|e| panic!("{e}")));
    let dir = TempDir::new().expect("a temp dir");
    let mut kinds_seen = Vec::new();
    let mut index = 0;
    for file in &files {
        let docs = documents(file).unwrap_or_else(|e| panic!("{e}"));
        assert!(!docs.is_empty(), "{} holds no document", file.display());
        for doc in &docs {
            let result = validate_document(&schemas, dir.path(), index, doc);
            assert!(
                result.success,
                "{} does not validate against its CRD schema:\n{}",
                doc.origin, result.output
            );
            kinds_seen.extend(doc.kind().ok().map(str::to_owned));
            index += 1;
        }
    }
    // PimGrant is the operator's own ledger: nobody writes one by hand, so no example does.
    for kind in schemas.by_kind.keys().filter(|k| k.as_str() != "PimGrant") {
        assert!(
            kinds_seen.contains(kind),
            "no example in examples/ shows a {kind}"
        );
    }
}

/// Broken documents, each with the one field that breaks it and what check-jsonschema says.
const REJECTED: &[(&str, &str, &str)] = &[
    (
        "duration is not a duration (pattern)",
        "$.spec.duration",
        r#"
apiVersion: pim.dev/v1alpha1
kind: ActivationRequest
metadata:
  name: bad-duration
spec:
  group: finreport-senioranalyst
  duration: "8 hours"
"#,
    ),
    (
        "role is not member or owner (enum)",
        "$.spec.role",
        r#"
apiVersion: pim.dev/v1alpha1
kind: EligibleAssignment
metadata:
  name: bad-role
spec:
  group: finreport-senioranalyst
  role: admin
  principal:
    user: alice@contoso.com
  schedule:
    duration: 180d
"#,
    ),
    (
        "spec.roles is missing (required)",
        "'roles' is a required property",
        r#"
apiVersion: pim.dev/v1alpha1
kind: PimGroup
metadata:
  name: no-roles
spec:
  directory: entra
  group:
    displayName: FinReport-SeniorAnalyst-SecureAccess
"#,
    ),
    (
        "a misspelt field (unknown fields are rejected)",
        "'maxDurations' was unexpected",
        r#"
apiVersion: pim.dev/v1alpha1
kind: AccessPolicy
metadata:
  name: misspelt
spec:
  activation:
    maxDurations: 30m
"#,
    ),
    (
        "minApprovals is above the schema's maximum",
        "$.spec.activation.approval.minApprovals",
        r#"
apiVersion: pim.dev/v1alpha1
kind: AccessPolicy
metadata:
  name: too-many-approvals
spec:
  activation:
    approval:
      approvers:
        - group: FinReport-Approvers
      minApprovals: 17
"#,
    ),
    (
        "an approval decision that is not Approve or Deny (enum)",
        "$.spec.approvals[0].decision",
        r#"
apiVersion: pim.dev/v1alpha1
kind: ActivationRequest
metadata:
  name: alice-finreport-q2-close
spec:
  group: finreport-senioranalyst
  approvals:
    - approver: bob@contoso.com
      decision: Maybe
"#,
    ),
    (
        "startTime is not an RFC 3339 time (format)",
        "$.spec.startTime",
        r#"
apiVersion: pim.dev/v1alpha1
kind: ActivationRequest
metadata:
  name: bad-start
spec:
  group: finreport-senioranalyst
  startTime: tomorrow morning
"#,
    ),
    (
        "the wrong API version",
        "$.apiVersion",
        r#"
apiVersion: pim.dev/v1
kind: PimGroup
metadata:
  name: wrong-version
spec:
  group:
    displayName: FinReport-SeniorAnalyst-SecureAccess
  roles:
    member:
      policy: finreport-senioranalyst
"#,
    ),
];

#[test]
fn check_jsonschema_rejects_broken_documents() {
    let schemas = Schemas::from_crds().unwrap_or_else(|e| panic!("{e}"));
    let dir = TempDir::new().expect("a temp dir");
    for (index, (what, expected, text)) in REJECTED.iter().enumerate() {
        let origin = format!("inline document {index} ({what})");
        let value = parse_yaml(text, &origin).unwrap_or_else(|e| panic!("{e}"));
        let doc = Document {
            origin,
            text: (*text).to_owned(),
            value,
        };
        let result = validate_document(&schemas, dir.path(), index, &doc);
        assert!(
            !result.success,
            "check-jsonschema accepted {}:\n{}",
            doc.origin, result.output
        );
        assert!(
            result
                .output
                .contains("Schema validation errors were encountered")
                && result.output.contains(expected),
            "check-jsonschema rejected {} for another reason than {expected:?}:\n{}",
            doc.origin,
            result.output
        );
    }
}

#[test]
fn crds_pass_kubernetes_validate_strict() {
    let files = yaml_files(&repo_path("crds")).unwrap_or_else(|e| panic!("{e}"));
    assert!(!files.is_empty(), "crds/ holds no YAML file");
    let paths: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let result = kubernetes_validate(&paths);
    assert!(
        result.success,
        "kubernetes-validate --strict -k {KUBERNETES_VERSION} rejected the CRDs:\n{}",
        result.output
    );
    for file in &files {
        assert!(
            result
                .output
                .contains(&format!("{} passed", file.display())),
            "kubernetes-validate did not report {} as passed:\n{}",
            file.display(),
            result.output
        );
    }
}

/// A CRD with a misspelt field (`schemas`), which only strict validation catches.
const MISSPELT_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.pim.dev
spec:
  group: pim.dev
  names:
    kind: Widget
    plural: widgets
  scope: Cluster
  versions:
    - name: v1alpha1
      served: true
      storage: true
      schemas:
        openAPIV3Schema:
          type: object
"#;

#[test]
fn kubernetes_validate_strict_rejects_a_misspelt_crd() {
    let dir = TempDir::new().expect("a temp dir");
    let file = dir.path().join("widgets.pim.dev.yaml");
    fs::write(&file, MISSPELT_CRD).expect("writing the misspelt CRD");
    let result = kubernetes_validate(&[&file]);
    assert!(
        !result.success,
        "kubernetes-validate --strict accepted a CRD with an unknown field:\n{}",
        result.output
    );
    assert!(
        result.output.contains("schemas"),
        "kubernetes-validate rejected the CRD for another reason than the field `schemas`:\n{}",
        result.output
    );
}
