#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The install manifests, checked with the real tools (DESIGN §11):
//!
//! - `helm lint --strict` on `charts/pim-operator`, and `helm template` with the default values
//!   and with each values file in `charts/pim-operator/ci/`;
//! - `kubectl kustomize` on `deploy/base`, each overlay in `deploy/overlays/`, and the base with
//!   the ServiceMonitor component;
//! - `kubernetes-validate --strict -k 1.33.0` on everything rendered. It only WARNs on a kind it
//!   has no schema for; such a WARN fails the check unless the kind is one of our four custom
//!   resources, or the ServiceMonitor where we render one on purpose (checked here by hand);
//! - every ClusterRole and Role we ship: no wildcard, no `escalate`/`impersonate`, no Secrets,
//!   `bind` only on named roles;
//! - the Deployment: the `restricted` Pod Security Standard, probes, downward API, config mount;
//!   the rendered config file parses with the operator's own parser;
//! - the chart's `crds/` equal to the top-level `crds/`; `hadolint` on the Dockerfile, and its
//!   runtime stage: empty or distroless, non-root, nothing run.
//!
//! Each check also has a negative test that shows it can fail. helm, kubectl and hadolint come
//! from `.ci/install-deploy-tools`, kubernetes-validate from `.ci/install-tools`; a missing tool
//! fails the test and says so.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;
use tempfile::TempDir;

const KUBERNETES_VERSION: &str = "1.33.0";
const INSTALL_HINT: &str = "run `.ci/install-deploy-tools` (helm, kubectl, hadolint) and \
     `.ci/install-tools` (kubernetes-validate)";
const CHART: &str = "charts/pim-operator";
const RELEASE: &str = "pim-operator";
const NAMESPACE: &str = "pim-system";

/// Our custom resources: kubernetes-validate has no schema for them, and that is fine.
const OUR_KINDS: [(&str, &str); 5] = [
    ("pim.dev/v1alpha1", "AccessPolicy"),
    ("pim.dev/v1alpha1", "PimGroup"),
    ("pim.dev/v1alpha1", "EligibleAssignment"),
    ("pim.dev/v1alpha1", "ActivationRequest"),
    ("pim.dev/v1alpha1", "AccessReview"),
];
const SERVICE_MONITOR: (&str, &str) = ("monitoring.coreos.com/v1", "ServiceMonitor");
const PROMETHEUS_RULE: (&str, &str) = ("monitoring.coreos.com/v1", "PrometheusRule");
/// The webhook certificate's kinds with `webhook.certificates: cert-manager`.
const CERT_MANAGER: [(&str, &str); 2] = [
    ("cert-manager.io/v1", "Certificate"),
    ("cert-manager.io/v1", "Issuer"),
];

// ---------------------------------------------------------------------------------------------
// Tools
// ---------------------------------------------------------------------------------------------

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Where `.ci/install-deploy-tools` puts helm and kubectl.
fn deploy_tools_dir() -> Option<PathBuf> {
    std::env::var_os("PIM_DEPLOY_TOOLS")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache/pim-operator/bin"))
        })
}

/// `sys.prefix` of `python3`, whose `bin/` holds pip's console scripts.
fn python_prefix() -> Option<PathBuf> {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.prefix)"])
        .output()
        .ok()?;
    let prefix = String::from_utf8(out.stdout).ok()?;
    let prefix = prefix.trim();
    (out.status.success() && !prefix.is_empty()).then(|| PathBuf::from(prefix))
}

/// The install script's folder first (so the pinned helm and kubectl win over others on
/// PATH), then PATH, `$HOME/.local/bin` and python3's `prefix/bin`.
fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    let user_bin = std::env::var_os("HOME").map(|home| Path::new(&home).join(".local/bin"));
    let python_bin = python_prefix().map(|prefix| prefix.join("bin"));
    deploy_tools_dir()
        .into_iter()
        .chain(path)
        .chain(user_bin)
        .chain(python_bin)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
        .unwrap_or_else(|| panic!("`{name}` was not found: {INSTALL_HINT}"))
}

/// What a tool run left: whether it succeeded, what it printed on stdout, and both streams.
struct Run {
    success: bool,
    stdout: String,
    output: String,
}

fn run(program: &str, args: &[&str]) -> Run {
    let path = tool(program);
    let out = Command::new(&path)
        .args(args)
        .current_dir(repo_path(""))
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}; {INSTALL_HINT}", path.display()));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    Run {
        success: out.status.success(),
        output: format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)),
        stdout,
    }
}

fn must(run: Run, what: &str) -> String {
    assert!(run.success, "{what} failed:\n{}", run.output);
    run.stdout
}

/// The control plane's address range on kind (its Docker network), as docs/install.md gives it.
const KIND_API_SERVER_CIDRS: &str = "networkPolicy.apiServerCIDRs={172.18.0.0/16}";

fn helm_template(values: &[&Path], extra: &[&str]) -> Run {
    let mut args = vec![
        "template",
        RELEASE,
        CHART,
        "--namespace",
        NAMESPACE,
        "--kube-version",
        KUBERNETES_VERSION,
    ];
    let values: Vec<&str> = values
        .iter()
        .map(|v| v.to_str().expect("UTF-8 paths"))
        .collect();
    for file in &values {
        args.extend(["--values", file]);
    }
    args.extend(extra);
    run("helm", &args)
}

fn kustomize(dir: &Path) -> Run {
    run(
        "kubectl",
        &["kustomize", dir.to_str().expect("UTF-8 paths")],
    )
}

fn kubernetes_validate(files: &[&Path]) -> Run {
    let mut args = vec!["--strict", "-k", KUBERNETES_VERSION];
    args.extend(files.iter().map(|f| f.to_str().expect("UTF-8 paths")));
    run("kubernetes-validate", &args)
}

// ---------------------------------------------------------------------------------------------
// Renderings
// ---------------------------------------------------------------------------------------------

/// One set of manifests as a user would apply them.
struct Rendering {
    name: String,
    yaml: String,
    documents: Vec<Value>,
    /// Whether it is expected to hold a ServiceMonitor.
    service_monitor: bool,
    /// Whether it holds the PrometheusRule (it comes with the ServiceMonitor).
    prometheus_rule: bool,
    /// Whether its webhook certificate comes from cert-manager.
    cert_manager: bool,
}

fn documents(yaml: &str, origin: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(yaml)
        .unwrap_or_else(|e| panic!("{origin}: rendered YAML does not parse: {e}"))
        .into_iter()
        .filter(|doc| !doc.is_null())
        .collect()
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    files
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

/// `path` written relative to `from` (both absolute): kustomize refuses absolute paths.
fn relative_to(path: &Path, from: &Path) -> PathBuf {
    let up = from.components().count().saturating_sub(1);
    let mut relative: PathBuf = std::iter::repeat_n("..", up).collect();
    relative.push(path.strip_prefix("/").expect("an absolute path"));
    relative
}

fn render_all() -> Vec<Rendering> {
    let mut out = Vec::new();
    let mut push = |name: String, yaml: String, service_monitor: bool| {
        let documents = documents(&yaml, &name);
        assert!(!documents.is_empty(), "{name} rendered nothing");
        let cert_manager = yaml.contains("kind: Certificate\n");
        let prometheus_rule = yaml.contains("kind: PrometheusRule\n");
        out.push(Rendering {
            name,
            yaml,
            documents,
            service_monitor,
            prometheus_rule,
            cert_manager,
        });
    };

    // The defaults do not say where the API server calls the webhook from; the chart refuses to
    // guess (see `the_chart_asks_where_the_api_server_calls_from`).
    let stdout = must(
        helm_template(&[], &["--set", KIND_API_SERVER_CIDRS]),
        "helm template (default values, the API server's CIDR on kind)",
    );
    push(
        "helm (default values, apiServerCIDRs of kind)".to_owned(),
        stdout,
        false,
    );
    let ci_values = yaml_files(&repo_path(&format!("{CHART}/ci")));
    assert!(
        ci_values.len() >= 3,
        "expected values files for the directories in {CHART}/ci"
    );
    for values in ci_values {
        let name = format!("helm -f {}", values.display());
        let stdout = must(
            helm_template(&[&values], &[]),
            &format!("helm template {name}"),
        );
        let service_monitor = stdout.contains("kind: ServiceMonitor");
        push(name, stdout, service_monitor);
    }

    let base = repo_path("deploy/base");
    push(
        "kustomize deploy/base".to_owned(),
        must(kustomize(&base), "kubectl kustomize deploy/base"),
        false,
    );
    let overlays = subdirs(&repo_path("deploy/overlays"));
    assert!(overlays.len() >= 2, "expected overlays entra and ldap");
    for overlay in overlays {
        let name = format!("kustomize {}", overlay.display());
        push(
            name.clone(),
            must(kustomize(&overlay), &format!("kubectl {name}")),
            false,
        );
    }

    // The base with the optional monitoring components, as an overlay would add them.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("deploy-servicemonitor");
    fs::create_dir_all(&dir).expect("a temp folder");
    let dir = dir.canonicalize().expect("an absolute temp folder");
    let component = |name: &str| {
        let path = repo_path(&format!("deploy/components/{name}"))
            .canonicalize()
            .unwrap_or_else(|e| panic!("deploy/components/{name}: {e}"));
        relative_to(&path, &dir).display().to_string()
    };
    let kustomization = format!(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - {}\ncomponents:\n  - {}\n  - {}\n",
        relative_to(&base.canonicalize().expect("deploy/base exists"), &dir).display(),
        component("servicemonitor"),
        component("prometheusrule"),
    );
    fs::write(dir.join("kustomization.yaml"), kustomization).expect("writing a kustomization");
    push(
        "kustomize deploy/base + components/servicemonitor + components/prometheusrule".to_owned(),
        must(
            kustomize(&dir),
            "kubectl kustomize with the ServiceMonitor and the PrometheusRule",
        ),
        true,
    );
    out
}

/// Every rendering, made once for all tests of this file.
fn renderings() -> &'static [Rendering] {
    static RENDERINGS: OnceLock<Vec<Rendering>> = OnceLock::new();
    RENDERINGS.get_or_init(render_all)
}

fn str_at<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn kind_of(doc: &Value) -> (&str, &str) {
    (str_at(doc, "/apiVersion"), str_at(doc, "/kind"))
}

fn of_kind<'a>(rendering: &'a Rendering, kind: &str) -> Vec<&'a Value> {
    rendering
        .documents
        .iter()
        .filter(|d| str_at(d, "/kind") == kind)
        .collect()
}

fn the_one<'a>(rendering: &'a Rendering, kind: &str) -> &'a Value {
    let found = of_kind(rendering, kind);
    assert_eq!(
        found.len(),
        1,
        "{}: expected one {kind}, found {}",
        rendering.name,
        found.len()
    );
    found[0]
}

// ---------------------------------------------------------------------------------------------
// kubernetes-validate and its WARNs
// ---------------------------------------------------------------------------------------------

/// Reads kubernetes-validate's report on `documents` documents: every one must have passed or
/// be a kind in `allowed` that it has no schema for. Returns the problems.
fn judge_validation(
    run: &Run,
    documents: usize,
    allowed: &[(&str, &str)],
) -> Result<BTreeSet<String>, Vec<String>> {
    let mut problems = Vec::new();
    if !run.success {
        problems.push("kubernetes-validate exited with failure".to_owned());
    }
    let mut passed = 0;
    let mut skipped = BTreeSet::new();
    for line in run.output.lines() {
        if line.starts_with("INFO ") && line.contains(" passed for resource ") {
            passed += 1;
        } else if let Some(rest) = line.strip_prefix("WARN ") {
            // WARN FILE Couldn't find schema for kind KIND with api version GROUP/VERSION for ...
            let kind = rest
                .split(" for kind ")
                .nth(1)
                .and_then(|r| r.split(' ').next());
            let api_version = rest
                .split(" with api version ")
                .nth(1)
                .and_then(|r| r.split(' ').next());
            match (api_version, kind) {
                (Some(v), Some(k)) if allowed.contains(&(v, k)) => {
                    skipped.insert(format!("{v}/{k}"));
                    passed += 1;
                }
                _ => problems.push(format!("not allowed: {line}")),
            }
        } else if !line.trim().is_empty() {
            problems.push(format!("unexpected: {line}"));
        }
    }
    if passed != documents {
        problems.push(format!(
            "{passed} of {documents} documents passed or were skipped on purpose"
        ));
    }
    if problems.is_empty() {
        Ok(skipped)
    } else {
        Err(problems)
    }
}

fn validate_rendering(rendering: &Rendering, dir: &Path, index: usize) {
    let file = dir.join(format!("rendering-{index}.yaml"));
    fs::write(&file, &rendering.yaml).expect("writing a rendering");
    let mut allowed = OUR_KINDS.to_vec();
    if rendering.service_monitor {
        allowed.push(SERVICE_MONITOR);
    }
    if rendering.prometheus_rule {
        allowed.push(PROMETHEUS_RULE);
    }
    if rendering.cert_manager {
        allowed.extend(CERT_MANAGER);
    }
    let result = kubernetes_validate(&[&file]);
    match judge_validation(&result, rendering.documents.len(), &allowed) {
        Ok(skipped) => assert_eq!(
            skipped.contains("monitoring.coreos.com/v1/ServiceMonitor"),
            rendering.service_monitor,
            "{}: ServiceMonitor expected: {}",
            rendering.name,
            rendering.service_monitor
        ),
        Err(problems) => panic!(
            "{}: kubernetes-validate --strict -k {KUBERNETES_VERSION}:\n  {}\n{}",
            rendering.name,
            problems.join("\n  "),
            result.output
        ),
    }
}

#[test]
fn helm_lint_strict_passes() {
    let mut runs = vec![must(
        run("helm", &["lint", "--strict", CHART]),
        "helm lint --strict",
    )];
    for values in yaml_files(&repo_path(&format!("{CHART}/ci"))) {
        let values = values.to_str().expect("UTF-8 paths").to_owned();
        runs.push(must(
            run("helm", &["lint", "--strict", CHART, "--values", &values]),
            &format!("helm lint --strict --values {values}"),
        ));
    }
    for out in runs {
        assert!(out.contains("0 chart(s) failed"), "{out}");
    }
}

#[test]
fn everything_rendered_passes_kubernetes_validate_strict() {
    let dir = TempDir::new().expect("a temp dir");
    let all = renderings();
    assert!(all.len() >= 8, "expected at least 8 renderings");
    for (index, rendering) in all.iter().enumerate() {
        validate_rendering(rendering, dir.path(), index);
    }
}

#[test]
fn our_custom_resources_are_the_allowed_unknown_kinds() {
    // examples/ (and examples/requests/) hold only our five kinds: kubernetes-validate WARNs
    // on each, and each is allowed. The same report fails once our kinds are not on the list.
    let mut files = yaml_files(&repo_path("examples"));
    files.extend(yaml_files(&repo_path("examples/requests")));
    let paths: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let result = kubernetes_validate(&paths);
    let skipped = judge_validation(&result, files.len(), &OUR_KINDS)
        .unwrap_or_else(|p| panic!("{}\n{}", p.join("\n"), result.output));
    assert_eq!(skipped.len(), 5, "{skipped:?}");
    assert!(judge_validation(&result, files.len(), &[]).is_err());
}

/// A Deployment with a misspelt field, which strict validation must reject.
const BROKEN_DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: pim-operator
spec:
  replica: 2
  selector:
    matchLabels: {app: pim-operator}
  template:
    metadata:
      labels: {app: pim-operator}
    spec:
      containers:
        - name: operator
          image: pim-operator:0.1.0
"#;

const UNKNOWN_KIND: &str = r#"
apiVersion: example.com/v1
kind: Widget
metadata:
  name: w
"#;

#[test]
fn validation_fails_on_a_broken_deployment_and_an_unknown_kind() {
    let dir = TempDir::new().expect("a temp dir");
    let broken = dir.path().join("broken.yaml");
    fs::write(&broken, BROKEN_DEPLOYMENT).expect("writing");
    let result = kubernetes_validate(&[&broken]);
    let problems = judge_validation(&result, 1, &OUR_KINDS).expect_err("a misspelt field passed");
    assert!(result.output.contains("replica"), "{}", result.output);
    assert!(!problems.is_empty());

    let unknown = dir.path().join("unknown.yaml");
    fs::write(&unknown, UNKNOWN_KIND).expect("writing");
    let result = kubernetes_validate(&[&unknown]);
    let problems =
        judge_validation(&result, 1, &OUR_KINDS).expect_err("an unknown kind was accepted");
    assert!(
        problems.iter().any(|p| p.contains("Widget")),
        "{problems:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// RBAC
// ---------------------------------------------------------------------------------------------

/// What is wrong with a ClusterRole or Role we would ship.
fn rbac_problems(role: &Value) -> Vec<String> {
    let name = format!(
        "{} {}",
        str_at(role, "/kind"),
        str_at(role, "/metadata/name")
    );
    let strings = |rule: &Value, field: &str| -> Vec<String> {
        rule.get(field)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|v| v.as_str().unwrap_or("<not a string>").to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut problems = Vec::new();
    let rules = role
        .get("rules")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (i, rule) in rules.iter().enumerate() {
        let at = format!("{name} rules[{i}]");
        let verbs = strings(rule, "verbs");
        let resources = strings(rule, "resources");
        let names = strings(rule, "resourceNames");
        for (field, values) in [
            ("verbs", &verbs),
            ("resources", &resources),
            ("apiGroups", &strings(rule, "apiGroups")),
            ("resourceNames", &names),
            ("nonResourceURLs", &strings(rule, "nonResourceURLs")),
        ] {
            if values.iter().any(|v| v.contains('*')) {
                problems.push(format!("{at}: wildcard in {field}: {values:?}"));
            }
        }
        if verbs.is_empty() {
            problems.push(format!("{at}: no verbs"));
        }
        for forbidden in ["escalate", "impersonate"] {
            if verbs.iter().any(|v| v == forbidden) {
                problems.push(format!("{at}: grants `{forbidden}`"));
            }
        }
        // The one exception: the operator's own Secrets (the webhook's self-signed certificate,
        // the attestation key) in its namespace, read by name and created once (create takes
        // no name).
        let own_secrets = str_at(role, "/kind") == "Role"
            && str_at(role, "/metadata/namespace") == NAMESPACE
            && resources == ["secrets"]
            && (verbs == ["create"] || (verbs == ["get"] && (1..=2).contains(&names.len())));
        if resources.iter().any(|r| r == "secrets") && !own_secrets {
            problems.push(format!("{at}: grants access to Secrets"));
        }
        if verbs.iter().any(|v| v == "bind") {
            if names.is_empty() {
                problems.push(format!(
                    "{at}: `bind` without resourceNames binds every role"
                ));
            }
            if resources
                .iter()
                .any(|r| r != "roles" && r != "clusterroles")
            {
                problems.push(format!("{at}: `bind` on {resources:?}"));
            }
        }
    }
    problems
}

/// The Service of the metrics port (the webhook has its own).
fn metrics_service(rendering: &Rendering) -> &Value {
    let found: Vec<&Value> = of_kind(rendering, "Service")
        .into_iter()
        .filter(|s| str_at(s, "/spec/ports/0/name") == "http-metrics")
        .collect();
    assert_eq!(found.len(), 1, "{}: one metrics Service", rendering.name);
    found[0]
}

/// The Role of leader election: the one whose rules are about Leases.
fn lease_role(rendering: &Rendering) -> &Value {
    let found: Vec<&Value> = of_kind(rendering, "Role")
        .into_iter()
        .filter(|r| str_at(r, "/rules/0/resources/0") == "leases")
        .collect();
    assert_eq!(found.len(), 1, "{}: one Role for Leases", rendering.name);
    found[0]
}

fn roles(rendering: &Rendering) -> Vec<&Value> {
    let mut roles = of_kind(rendering, "ClusterRole");
    roles.extend(of_kind(rendering, "Role"));
    roles
}

#[test]
fn every_role_we_ship_is_least_privilege() {
    for rendering in renderings() {
        let roles = roles(rendering);
        assert!(roles.len() >= 5, "{}: too few roles", rendering.name);
        for role in roles {
            let problems = rbac_problems(role);
            assert!(
                problems.is_empty(),
                "{}:\n  {}",
                rendering.name,
                problems.join("\n  ")
            );
        }
    }
}

#[test]
fn the_rbac_check_rejects_wildcards_escalate_and_open_bind() {
    let role = |rules: &str| -> Value {
        serde_saphyr::from_str(&format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {{name: bad}}\nrules:\n{rules}"
        ))
        .expect("an inline role")
    };
    let cases = [
        (
            "- {apiGroups: [pim.dev], resources: ['*'], verbs: [get]}",
            "wildcard in resources",
        ),
        (
            "- {apiGroups: [pim.dev], resources: [pimgroups], verbs: ['*']}",
            "wildcard in verbs",
        ),
        (
            "- {apiGroups: ['*'], resources: [pimgroups], verbs: [get]}",
            "wildcard in apiGroups",
        ),
        (
            "- {apiGroups: [rbac.authorization.k8s.io], resources: [clusterroles], verbs: [escalate]}",
            "`escalate`",
        ),
        (
            "- {apiGroups: [rbac.authorization.k8s.io], resources: [clusterroles], verbs: [bind]}",
            "without resourceNames",
        ),
        (
            "- {apiGroups: [''], resources: [secrets], verbs: [get]}",
            "Secrets",
        ),
        (
            "- {apiGroups: [''], resources: [secrets], verbs: [get], resourceNames: [tls]}",
            "Secrets",
        ),
        (
            "- {apiGroups: [''], resources: [users], verbs: [impersonate]}",
            "`impersonate`",
        ),
    ];
    for (rules, expected) in cases {
        let problems = rbac_problems(&role(rules));
        assert!(
            problems.iter().any(|p| p.contains(expected)),
            "{rules}: expected a problem with {expected:?}, got {problems:?}"
        );
    }
    let fine = role(
        "- {apiGroups: [rbac.authorization.k8s.io], resources: [clusterroles], verbs: [bind], resourceNames: [view]}",
    );
    assert_eq!(rbac_problems(&fine), Vec::<String>::new());

    // Secrets only as the webhook certificate's namespaced Role has them.
    let namespaced = |rules: &str| -> Value {
        serde_saphyr::from_str(&format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: cert, namespace: {NAMESPACE}}}\nrules:\n{rules}"
        ))
        .expect("an inline role")
    };
    for rules in [
        "- {apiGroups: [''], resources: [secrets], verbs: [get, list], resourceNames: [tls]}",
        "- {apiGroups: [''], resources: [secrets], verbs: [get]}",
        "- {apiGroups: [''], resources: [secrets], verbs: [update], resourceNames: [tls]}",
        "- {apiGroups: [''], resources: [secrets, configmaps], verbs: [create]}",
        "- {apiGroups: [''], resources: [secrets], verbs: [get], resourceNames: [a, b, c]}",
    ] {
        let problems = rbac_problems(&namespaced(rules));
        assert!(
            problems.iter().any(|p| p.contains("Secrets")),
            "{rules}: {problems:?}"
        );
    }
    let certificate = namespaced(
        "- {apiGroups: [''], resources: [secrets], verbs: [create]}\n- {apiGroups: [''], resources: [secrets], verbs: [get], resourceNames: [tls]}",
    );
    assert_eq!(rbac_problems(&certificate), Vec::<String>::new());
}

/// The rules of the operator's own ClusterRole as (apiGroup, resource) -> verbs.
fn operator_grants(rendering: &Rendering) -> BTreeMap<(String, String), BTreeSet<String>> {
    let role = of_kind(rendering, "ClusterRole")
        .into_iter()
        .find(|r| {
            of_kind(rendering, "ClusterRoleBinding").iter().any(|b| {
                str_at(b, "/roleRef/name") == str_at(r, "/metadata/name")
                    && str_at(b, "/subjects/0/kind") == "ServiceAccount"
                    && str_at(r, "/rules/0/apiGroups/0") == "pim.dev"
            })
        })
        .unwrap_or_else(|| panic!("{}: no ClusterRole of the operator", rendering.name));
    let mut grants: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for rule in role["rules"].as_array().expect("rules") {
        for group in rule["apiGroups"].as_array().expect("apiGroups") {
            for resource in rule["resources"].as_array().expect("resources") {
                let verbs = rule["verbs"].as_array().expect("verbs");
                grants
                    .entry((
                        group.as_str().expect("a group").to_owned(),
                        resource.as_str().expect("a resource").to_owned(),
                    ))
                    .or_default()
                    .extend(verbs.iter().map(|v| v.as_str().expect("a verb").to_owned()));
            }
        }
    }
    grants
}

#[test]
fn the_operator_may_write_status_finalizers_events_and_bindings_only() {
    let set =
        |verbs: &[&str]| -> BTreeSet<String> { verbs.iter().map(|v| v.to_string()).collect() };
    for rendering in renderings() {
        let grants = operator_grants(rendering);
        for kind in [
            "accesspolicies",
            "pimgroups",
            "eligibleassignments",
            "activationrequests",
            "accessreviews",
        ] {
            let main = &grants[&("pim.dev".to_owned(), kind.to_owned())];
            let mut expected = set(&["get", "list", "watch"]);
            if kind == "pimgroups" || kind == "activationrequests" {
                expected.insert("patch".to_owned());
            }
            // Retention deletes finished requests.
            if kind == "activationrequests" {
                expected.insert("delete".to_owned());
            }
            assert_eq!(main, &expected, "{}: {kind}", rendering.name);
            assert_eq!(
                grants[&("pim.dev".to_owned(), format!("{kind}/status"))],
                set(&["patch"]),
                "{}: {kind}/status",
                rendering.name
            );
        }
        assert_eq!(
            grants[&("events.k8s.io".to_owned(), "events".to_owned())],
            set(&["create", "patch"])
        );
        for binding in ["clusterrolebindings", "rolebindings"] {
            assert_eq!(
                grants[&("rbac.authorization.k8s.io".to_owned(), binding.to_owned())],
                set(&["get", "list", "create", "update", "delete"])
            );
        }
        // Nothing beyond the above, bind (checked by the RBAC test) and pimgroups/finalizers.
        for (group, resource) in grants.keys() {
            let known = group == "pim.dev"
                || group == "events.k8s.io"
                || (group == "rbac.authorization.k8s.io"
                    && [
                        "clusterrolebindings",
                        "rolebindings",
                        "clusterroles",
                        "roles",
                    ]
                    .contains(&resource.as_str()));
            assert!(
                known,
                "{}: unexpected grant on {group}/{resource}",
                rendering.name
            );
        }
        // Leases: only in the operator's namespace, through a Role.
        let lease_role = lease_role(rendering);
        assert_eq!(str_at(lease_role, "/metadata/namespace"), NAMESPACE);
    }
}

#[test]
fn user_roles_are_shipped_with_aggregation() {
    for rendering in renderings() {
        let by_name: BTreeMap<&str, &Value> = of_kind(rendering, "ClusterRole")
            .into_iter()
            .map(|r| (str_at(r, "/metadata/name"), r))
            .collect();
        for name in [
            "pim-requester",
            "pim-approver",
            "pim-reviewer",
            "pim-admin",
            "pim-auditor",
        ] {
            assert!(by_name.contains_key(name), "{}: no {name}", rendering.name);
        }
        // Auditors read and change nothing.
        for rule in by_name["pim-auditor"]["rules"].as_array().expect("rules") {
            for verb in rule["verbs"].as_array().expect("verbs") {
                assert!(
                    ["get", "list", "watch"].contains(&verb.as_str().unwrap_or_default()),
                    "{}: pim-auditor may {verb}",
                    rendering.name
                );
            }
        }
        let requester = by_name["pim-requester"];
        assert_eq!(
            str_at(requester, "/rules/0/resources/0"),
            "activationrequests"
        );
        assert_eq!(
            str_at(requester, "/metadata/labels/pim.dev~1aggregate-to-admin"),
            "true"
        );
        assert_eq!(
            str_at(
                by_name["pim-admin"],
                "/aggregationRule/clusterRoleSelectors/0/matchLabels/pim.dev~1aggregate-to-admin"
            ),
            "true"
        );
        // Approving and reviewing must not come with the built-in roles.
        for duty in ["pim-approver", "pim-reviewer"] {
            let labels = by_name[duty]["metadata"]["labels"].to_string();
            assert!(
                !labels.contains("rbac.authorization.k8s.io/aggregate-to"),
                "{duty}: {labels}"
            );
        }
        // Reviewers write decisions (patch) and nothing else of reviews; assignments they read.
        let reviewer = by_name["pim-reviewer"];
        assert_eq!(str_at(reviewer, "/rules/0/resources/0"), "accessreviews");
        assert_eq!(
            reviewer["rules"][0]["verbs"],
            serde_json::json!(["get", "list", "watch", "patch"])
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The Deployment and its config
// ---------------------------------------------------------------------------------------------

fn expect_value(problems: &mut Vec<String>, at: &str, value: &Value, wanted: Value) {
    if *value != wanted {
        problems.push(format!("{at} is {value}, must be {wanted}"));
    }
}

fn pod_security_problems(deployment: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let pod = &deployment["spec"]["template"]["spec"];
    expect_value(
        &mut problems,
        "pod runAsNonRoot",
        &pod["securityContext"]["runAsNonRoot"],
        Value::Bool(true),
    );
    expect_value(
        &mut problems,
        "pod seccompProfile",
        &pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault".into(),
    );
    for field in ["hostNetwork", "hostPID", "hostIPC"] {
        if pod[field] == Value::Bool(true) {
            problems.push(format!("pod {field} is true"));
        }
    }
    let containers = pod["containers"].as_array().cloned().unwrap_or_default();
    if containers.is_empty() {
        problems.push("no containers".to_owned());
    }
    for container in &containers {
        let sc = &container["securityContext"];
        let name = str_at(container, "/name");
        expect_value(
            &mut problems,
            &format!("{name} allowPrivilegeEscalation"),
            &sc["allowPrivilegeEscalation"],
            Value::Bool(false),
        );
        expect_value(
            &mut problems,
            &format!("{name} readOnlyRootFilesystem"),
            &sc["readOnlyRootFilesystem"],
            Value::Bool(true),
        );
        expect_value(
            &mut problems,
            &format!("{name} runAsNonRoot"),
            &sc["runAsNonRoot"],
            Value::Bool(true),
        );
        expect_value(
            &mut problems,
            &format!("{name} runAsUser"),
            &sc["runAsUser"],
            Value::from(65532),
        );
        expect_value(
            &mut problems,
            &format!("{name} capabilities.drop"),
            &sc["capabilities"]["drop"],
            serde_json::json!(["ALL"]),
        );
        if sc["capabilities"].get("add").is_some() {
            problems.push(format!("{name} adds capabilities"));
        }
        if sc["privileged"] == Value::Bool(true) {
            problems.push(format!("{name} is privileged"));
        }
        if container["resources"]["requests"].is_null()
            || container["resources"]["limits"].is_null()
        {
            problems.push(format!("{name} has no resource requests and limits"));
        }
    }
    problems
}

#[test]
fn the_deployment_meets_the_restricted_pod_security_standard() {
    for rendering in renderings() {
        let deployment = the_one(rendering, "Deployment");
        let problems = pod_security_problems(deployment);
        assert!(
            problems.is_empty(),
            "{}:\n  {}",
            rendering.name,
            problems.join("\n  ")
        );
    }
    // And the check can fail.
    let mut loose = the_one(&renderings()[0], "Deployment").clone();
    loose["spec"]["template"]["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] =
        Value::Bool(true);
    loose["spec"]["template"]["spec"]["containers"][0]["securityContext"]
        .as_object_mut()
        .expect("a securityContext")
        .remove("readOnlyRootFilesystem");
    let problems = pod_security_problems(&loose);
    assert_eq!(problems.len(), 2, "{problems:?}");
}

#[test]
fn the_deployment_runs_the_operator_as_designed() {
    for rendering in renderings() {
        let name = &rendering.name;
        let deployment = the_one(rendering, "Deployment");
        let spec = &deployment["spec"];
        // ci/monitoring-values.yaml runs one replica: a PodDisruptionBudget would block drains.
        if name.contains("monitoring-values") {
            assert_eq!(spec["replicas"], Value::from(1), "{name}: replicas");
            assert!(
                of_kind(rendering, "PodDisruptionBudget").is_empty(),
                "{name}"
            );
        } else {
            assert_eq!(spec["replicas"], Value::from(2), "{name}: replicas");
            let pdb = the_one(rendering, "PodDisruptionBudget");
            assert_eq!(pdb["spec"]["minAvailable"], Value::from(1), "{name}");
        }
        let pod = &spec["template"]["spec"];
        let container = &pod["containers"][0];
        let args: Vec<&str> = container["args"]
            .as_array()
            .expect("args")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(
            args,
            ["run", "--config", "/etc/pim-operator/config.yaml"],
            "{name}"
        );
        for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
            assert_eq!(
                str_at(container, &format!("/{probe}/httpGet/path")),
                path,
                "{name}"
            );
            assert_eq!(
                str_at(container, &format!("/{probe}/httpGet/port")),
                "http-metrics",
                "{name}"
            );
        }
        assert_eq!(
            container["ports"][0]["containerPort"],
            Value::from(8080),
            "{name}"
        );
        let env: BTreeMap<&str, &str> = container["env"]
            .as_array()
            .expect("env")
            .iter()
            .map(|e| {
                (
                    str_at(e, "/name"),
                    str_at(e, "/valueFrom/fieldRef/fieldPath"),
                )
            })
            .collect();
        assert_eq!(env.get("POD_NAME"), Some(&"metadata.name"), "{name}");
        assert_eq!(
            env.get("POD_NAMESPACE"),
            Some(&"metadata.namespace"),
            "{name}"
        );
        // The config volume is the rendered ConfigMap, mounted where --config points.
        let mounts = container["volumeMounts"].as_array().expect("volumeMounts");
        let config_mount = mounts
            .iter()
            .find(|m| str_at(m, "/mountPath") == "/etc/pim-operator")
            .unwrap_or_else(|| panic!("{name}: nothing mounted at /etc/pim-operator"));
        let volume = pod["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .find(|v| str_at(v, "/name") == str_at(config_mount, "/name"))
            .expect("the config volume");
        let config_map = the_one(rendering, "ConfigMap");
        assert_eq!(
            str_at(volume, "/configMap/name"),
            str_at(config_map, "/metadata/name"),
            "{name}"
        );
        assert_eq!(
            str_at(&deployment["spec"]["template"], "/spec/serviceAccountName"),
            str_at(the_one(rendering, "ServiceAccount"), "/metadata/name"),
            "{name}"
        );
        // The Service and the PodDisruptionBudget select the pods.
        let labels = &spec["template"]["metadata"]["labels"];
        for selector in [
            &metrics_service(rendering)["spec"]["selector"],
            &spec["selector"]["matchLabels"],
        ] {
            for (key, value) in selector.as_object().expect("a selector") {
                assert_eq!(&labels[key], value, "{name}: selector {key}");
            }
        }
        let entra = name.contains("entra");
        assert_eq!(
            labels.get("azure.workload.identity/use").is_some(),
            entra,
            "{name}: workload identity label"
        );
        if entra {
            let annotations = &the_one(rendering, "ServiceAccount")["metadata"]["annotations"];
            assert!(
                annotations
                    .get("azure.workload.identity/client-id")
                    .is_some(),
                "{name}: no client-id annotation"
            );
        }
    }
}

/// Directory types whose backend comes with another issue (entra: issue 5, ldap: issue 6); a
/// build without it refuses them at start, and their renderings say so.
const PLACEHOLDER_DIRECTORIES: [&str; 2] = ["entra", "ldap"];

#[test]
fn the_rendered_config_is_what_the_operator_reads() {
    for rendering in renderings() {
        let name = &rendering.name;
        let config_map = the_one(rendering, "ConfigMap");
        let text = str_at(config_map, "/data/config.yaml");
        assert!(!text.is_empty(), "{name}: no config.yaml in the ConfigMap");
        match pim_operator::config::Config::parse(text, name) {
            Ok(settings) => {
                assert_eq!(settings.config.metrics_address, "0.0.0.0:8080", "{name}");
                assert_eq!(
                    settings.config.namespace.as_deref(),
                    Some(NAMESPACE),
                    "{name}"
                );
                assert!(settings.config.leader_election.enabled, "{name}");
                let lease = &settings.config.leader_election.lease_name;
                let lease_role = lease_role(rendering);
                assert_eq!(
                    str_at(lease_role, "/rules/1/resourceNames/0"),
                    lease,
                    "{name}: the Role's lease name"
                );
            }
            Err(err) => {
                // Until the entra and ldap backends land, their configs are placeholders.
                // Only the rendering for that directory may carry one.
                let err = err.to_string();
                assert!(
                    PLACEHOLDER_DIRECTORIES.iter().any(
                        |p| name.contains(p) && err.contains(&format!("unknown variant `{p}`"))
                    ),
                    "{name}: the operator refuses its config: {err}"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Chart values, the ServiceMonitor, CRDs and the image
// ---------------------------------------------------------------------------------------------

#[test]
fn the_values_schema_rejects_bad_values() {
    for (set, expected) in [
        ("webhook.certificates=vault", "/webhook/certificates"),
        (
            "attestation.existingSecret=Not_A_Name",
            "/attestation/existingSecret",
        ),
        ("config.resyncInterval=soon", "/config/resyncInterval"),
        ("config.concurrency=0", "/config/concurrency"),
        ("config.removalConcurrency=0", "/config/removalConcurrency"),
        ("config.directories.Bad_Name.type=memory", "Bad_Name"),
        ("rbac.bindableClusterRoles[0]=*", "bindableClusterRoles"),
        ("config.metricsAddress=0.0.0.0:1", "metricsAddress"),
    ] {
        let result = helm_template(&[], &["--set", set]);
        assert!(!result.success, "helm template accepted --set {set}");
        assert!(
            result.output.contains(expected),
            "--set {set}: expected an error about {expected}:\n{}",
            result.output
        );
    }
}

#[test]
fn the_values_schema_durations_are_the_operators() {
    let schema: Value = serde_json::from_str(
        &fs::read_to_string(repo_path(&format!("{CHART}/values.schema.json")))
            .expect("values.schema.json"),
    )
    .expect("values.schema.json is JSON");
    assert_eq!(
        str_at(&schema, "/definitions/duration/pattern"),
        pim_operator::api::common::DURATION_PATTERN
    );
}

#[test]
fn helm_lint_fails_on_a_broken_template() {
    let dir = TempDir::new().expect("a temp dir");
    let chart = dir.path().join("pim-operator");
    let copied = Command::new("cp")
        .args(["-r", CHART])
        .arg(&chart)
        .current_dir(repo_path(""))
        .status()
        .expect("cp");
    assert!(copied.success());
    let service = chart.join("templates/service.yaml");
    let text = fs::read_to_string(&service).expect("service.yaml");
    fs::write(
        &service,
        text.replace("{{ .Values.service.type }}", "{{ .Values.service.type"),
    )
    .expect("writing");
    let result = run(
        "helm",
        &["lint", "--strict", chart.to_str().expect("UTF-8")],
    );
    assert!(
        !result.success,
        "helm lint passed a broken template:\n{}",
        result.output
    );
    assert!(result.output.contains("service.yaml"), "{}", result.output);
}

#[test]
fn the_service_monitor_scrapes_the_metrics_port() {
    let with_monitor: Vec<&Rendering> = renderings().iter().filter(|r| r.service_monitor).collect();
    assert!(
        with_monitor.len() >= 2,
        "expected a ServiceMonitor from helm and kustomize"
    );
    for rendering in with_monitor {
        let name = &rendering.name;
        let monitor = the_one(rendering, "ServiceMonitor");
        assert_eq!(kind_of(monitor), SERVICE_MONITOR);
        let service = metrics_service(rendering);
        assert_eq!(
            str_at(monitor, "/metadata/namespace"),
            str_at(service, "/metadata/namespace"),
            "{name}"
        );
        let service_labels = &service["metadata"]["labels"];
        for (key, value) in monitor["spec"]["selector"]["matchLabels"]
            .as_object()
            .expect("a selector")
        {
            assert_eq!(&service_labels[key], value, "{name}: selector {key}");
        }
        let port = str_at(monitor, "/spec/endpoints/0/port");
        assert!(
            service["spec"]["ports"]
                .as_array()
                .expect("ports")
                .iter()
                .any(|p| str_at(p, "/name") == port),
            "{name}: the Service has no port {port}"
        );
        assert_eq!(str_at(monitor, "/spec/endpoints/0/path"), "/metrics");
    }
    for rendering in renderings().iter().filter(|r| !r.service_monitor) {
        assert!(
            of_kind(rendering, "ServiceMonitor").is_empty(),
            "{}",
            rendering.name
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Alert rules (promtool from `.ci/install-deploy-tools`)
// ---------------------------------------------------------------------------------------------

/// Each rendered PrometheusRule's spec (a Prometheus rule file), by rendering.
fn rule_specs() -> Vec<(&'static str, &'static Value)> {
    renderings()
        .iter()
        .filter(|r| r.prometheus_rule)
        .map(|r| (r.name.as_str(), &the_one(r, "PrometheusRule")["spec"]))
        .collect()
}

const ALERT_TESTS: &str = "tests/fixtures/prometheus/alerts.test.yaml";

/// `promtool check rules` and `promtool test rules` on `spec` with the unit tests `tests`.
fn promtool(spec: &Value, tests: &str) -> (Run, Run) {
    let dir = TempDir::new().expect("a temp dir");
    // JSON is YAML: promtool reads the rule file as the API server stores the spec.
    let rules = dir.path().join("rules.yaml");
    fs::write(&rules, serde_json::to_string_pretty(spec).expect("JSON")).expect("rules.yaml");
    let test_file = dir.path().join("alerts.test.yaml");
    fs::write(&test_file, tests).expect("alerts.test.yaml");
    let path = |p: &Path| p.to_str().expect("UTF-8 paths").to_owned();
    let check = run("promtool", &["check", "rules", &path(&rules)]);
    let test = run("promtool", &["test", "rules", &path(&test_file)]);
    (check, test)
}

#[test]
fn the_alert_rules_pass_promtool_and_fire_as_their_unit_tests_say() {
    let specs = rule_specs();
    assert!(
        specs.len() >= 2,
        "expected a PrometheusRule from helm and from kustomize"
    );
    let tests = fs::read_to_string(repo_path(ALERT_TESTS)).expect(ALERT_TESTS);
    for (name, spec) in &specs {
        let (check, test) = promtool(spec, &tests);
        assert!(
            check.success,
            "{name}: promtool check rules:\n{}",
            check.output
        );
        assert!(
            test.success,
            "{name}: promtool test rules:\n{}",
            test.output
        );
    }
    // The chart (in pim-system) and the kustomize component ship the same rules.
    let (first, spec) = specs[0];
    for (name, other) in &specs[1..] {
        assert_eq!(
            spec, *other,
            "{first} and {name} ship different alert rules"
        );
    }
}

#[test]
fn promtool_rejects_a_broken_rule_and_a_rule_its_tests_do_not_describe() {
    let (_, spec) = rule_specs()[0];
    let tests = fs::read_to_string(repo_path(ALERT_TESTS)).expect(ALERT_TESTS);
    let mut broken = spec.clone();
    broken["groups"][0]["rules"][0]["expr"] = Value::from("max(pim_revocations_overdue");
    let (check, _) = promtool(&broken, &tests);
    assert!(!check.success, "{}", check.output);
    // A leader alert that waits 30 minutes does not fire when the unit tests say it does.
    let mut slower = spec.clone();
    for group in slower["groups"].as_array_mut().expect("groups") {
        for rule in group["rules"].as_array_mut().expect("rules") {
            if rule["alert"] == "PimOperatorLeaderMissing" {
                rule["for"] = Value::from("30m");
            }
        }
    }
    let (check, test) = promtool(&slower, &tests);
    assert!(check.success, "{}", check.output);
    assert!(!test.success, "{}", test.output);
    assert!(
        test.output.contains("PimOperatorLeaderMissing"),
        "{}",
        test.output
    );
}

/// The metric names an expression reads (`pim_…`), without the suffixes the exposition adds
/// to a counter's or histogram's own name.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find("pim_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        let base = ["_total", "_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(&name);
        names.insert(base.to_owned());
    }
    names
}

#[test]
fn the_alert_rules_read_only_metrics_the_operator_exports() {
    // A labelled family is exported once it has a series: one each, as the operator makes them.
    let metrics = pim_operator::metrics::Metrics::new();
    metrics.review("validate", "unavailable");
    metrics.reconcile_error("PimGroup", "directory");
    let group = pim_operator::metrics::GroupLabels {
        group: "ops".to_owned(),
    };
    metrics.members_outside_pim.get_or_create(&group).set(1);
    metrics.standing_access_removals.get_or_create(&group).inc();
    metrics.alert_raised("Stale");
    let exported: BTreeSet<String> = metrics
        .encode()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_owned)
        .collect();
    let (name, spec) = rule_specs()[0];
    let mut read = BTreeSet::new();
    for group in spec["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            read.extend(metric_names(str_at(rule, "/expr")));
        }
    }
    assert!(read.len() >= 8, "{name}: {read:?}");
    let unknown: Vec<&String> = read.difference(&exported).collect();
    assert!(
        unknown.is_empty(),
        "{name}: the rules read metrics the operator does not export: {unknown:?}\nexported: {exported:?}"
    );
    assert_eq!(
        metric_names("rate(pim_x_total[5m]) + pim_y"),
        BTreeSet::from(["pim_x".to_owned(), "pim_y".to_owned()])
    );
}

#[test]
fn the_charts_crds_equal_the_generated_crds() {
    let top = yaml_files(&repo_path("crds"));
    let chart = yaml_files(&repo_path(&format!("{CHART}/crds")));
    let names = |files: &[PathBuf]| -> Vec<String> {
        files
            .iter()
            .map(|f| {
                f.file_name()
                    .expect("a name")
                    .to_string_lossy()
                    .into_owned()
            })
            .collect()
    };
    assert_eq!(
        names(&top),
        names(&chart),
        "{CHART}/crds/ must hold the files of crds/: cp crds/*.yaml {CHART}/crds/"
    );
    for (a, b) in top.iter().zip(&chart) {
        assert!(
            fs::read(a).expect("a CRD") == fs::read(b).expect("a CRD"),
            "{} differs from {}: cp crds/*.yaml {CHART}/crds/",
            b.display(),
            a.display()
        );
    }
}

#[test]
fn the_image_version_is_the_crates() {
    let version = env!("CARGO_PKG_VERSION");
    let chart = fs::read_to_string(repo_path(&format!("{CHART}/Chart.yaml"))).expect("Chart.yaml");
    let chart: Value = serde_saphyr::from_str(&chart).expect("Chart.yaml parses");
    assert_eq!(str_at(&chart, "/appVersion"), version);
    let base = fs::read_to_string(repo_path("deploy/base/kustomization.yaml")).expect("base");
    let base: Value = serde_saphyr::from_str(&base).expect("the base parses");
    assert_eq!(str_at(&base, "/images/0/newTag"), version);
    for rendering in renderings() {
        let image = str_at(
            the_one(rendering, "Deployment"),
            "/spec/template/spec/containers/0/image",
        );
        assert_eq!(
            image,
            format!("pim-operator:{version}"),
            "{}",
            rendering.name
        );
    }
}

#[test]
fn the_image_runs_as_nonroot_without_a_shell() {
    let dockerfile = fs::read_to_string(repo_path("Dockerfile")).expect("Dockerfile");
    let lines: Vec<&str> = dockerfile
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let stages: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].starts_with("FROM "))
        .collect();
    assert!(stages.len() >= 2, "the Dockerfile is not multi-stage");
    let runtime = &lines[*stages.last().expect("a stage")..];
    let base = runtime[0];
    assert!(
        base == "FROM scratch" || base.contains("distroless"),
        "the runtime stage is {base}, not scratch or distroless"
    );
    assert!(
        runtime.iter().all(|l| !l.starts_with("RUN ")),
        "the runtime stage runs commands: it would need a shell"
    );
    assert!(runtime.contains(&"USER 65532:65532"), "no USER 65532:65532");
    let ignore = fs::read_to_string(repo_path(".dockerignore")).expect(".dockerignore");
    assert!(
        ignore
            .lines()
            .any(|l| ["*", "target", "target/", "/target"].contains(&l.trim())),
        ".dockerignore lets target/ into the build context"
    );
}

/// The target triple this test was built for, e.g. x86_64-unknown-linux-gnu.
fn host_triple() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        let out = Command::new("rustc")
            .arg("-vV")
            .output()
            .expect("rustc -vV");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("host: "))
            .expect("rustc -vV names the host")
            .to_owned()
    })
}

/// The top-level names `.dockerignore` leaves out; only plain names are used there.
fn docker_ignored() -> BTreeSet<String> {
    let ignore = fs::read_to_string(repo_path(".dockerignore")).expect(".dockerignore");
    ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let name = l.trim_start_matches('/').trim_end_matches('/');
            assert!(
                !name.contains(['*', '?', '[', '!', '/']),
                ".dockerignore: keep to plain top-level names, as this test reads them: {l}"
            );
            name.to_owned()
        })
        .collect()
}

#[test]
fn the_docker_build_context_holds_the_whole_crate() {
    // The build context as `docker build .` sends it; Cargo must be able to read the manifest
    // there, every target it names included.
    let ignored = docker_ignored();
    assert!(ignored.contains("target") && ignored.contains(".git"));
    let context = TempDir::new().expect("a temp dir");
    for entry in fs::read_dir(repo_path("")).expect("the repository") {
        let path = entry.expect("an entry").path();
        let name = path
            .file_name()
            .expect("a name")
            .to_string_lossy()
            .into_owned();
        if ignored.contains(&name) {
            continue;
        }
        let copied = Command::new("cp")
            .arg("-r")
            .arg(&path)
            .arg(context.path())
            .status()
            .expect("cp");
        assert!(copied.success(), "copying {name}");
    }
    // `cargo fetch --locked` reads the manifest with every target, as `cargo build --locked`
    // in the Dockerfile does, and checks Cargo.lock is current. Offline and for this host: the
    // test build has already fetched all of that.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(&cargo)
        .args(["fetch", "--locked", "--offline", "--target", host_triple()])
        .arg("--manifest-path")
        .arg(context.path().join("Cargo.toml"))
        .output()
        .expect("cargo fetch");
    assert!(
        out.status.success(),
        "cargo cannot read the crate in the Docker build context:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn hadolint(dockerfile: &Path) -> Run {
    run(
        "hadolint",
        &[
            "--no-color",
            "--failure-threshold",
            "style",
            dockerfile.to_str().expect("UTF-8 paths"),
        ],
    )
}

#[test]
fn hadolint_passes_the_dockerfile() {
    let result = hadolint(&repo_path("Dockerfile"));
    assert!(result.success, "hadolint:\n{}", result.output);
}

/// A runtime stage that runs as root, from an unpinned image, with a shell.
const LAX_DOCKERFILE: &str = "FROM rust:1.89-alpine AS builder\nRUN cargo build --release\n\nFROM debian:latest\nCOPY --from=builder /target/release/pim-operator /pim-operator\nUSER root\nENTRYPOINT [\"/pim-operator\"]\n";

#[test]
fn hadolint_fails_a_lax_dockerfile() {
    let dir = TempDir::new().expect("a temp dir");
    let file = dir.path().join("Dockerfile");
    fs::write(&file, LAX_DOCKERFILE).expect("writing");
    let result = hadolint(&file);
    assert!(!result.success, "hadolint passed:\n{}", result.output);
    // DL3007: `latest`; DL3002: the last USER is root.
    for rule in ["DL3007", "DL3002"] {
        assert!(
            result.output.contains(rule),
            "no {rule}:\n{}",
            result.output
        );
    }
}

#[test]
fn the_image_builds_with_the_crates_minimum_rust() {
    let dockerfile = fs::read_to_string(repo_path("Dockerfile")).expect("Dockerfile");
    let builder = dockerfile
        .lines()
        .find_map(|l| l.trim().strip_prefix("ARG RUST_VERSION="))
        .expect("ARG RUST_VERSION= in the Dockerfile");
    assert_eq!(
        builder,
        env!("CARGO_PKG_RUST_VERSION"),
        "the Dockerfile's Rust is not Cargo.toml's rust-version"
    );
}

#[test]
fn the_install_script_is_executable() {
    assert!(
        is_executable(&repo_path(".ci/install-deploy-tools")),
        ".ci/install-deploy-tools must be executable"
    );
}

// ---------------------------------------------------------------------------------------------
// The admission webhook
// ---------------------------------------------------------------------------------------------

/// What is wrong with how `documents` (one rendering) ship the admission webhook: it must fail
/// closed, match only our own resources, reach the port the operator serves, and have its
/// attestation key and certificate where the config says.
fn webhook_problems(documents: &[Value]) -> Vec<String> {
    let mut problems = Vec::new();
    let of = |kind: &str| -> Vec<&Value> {
        documents
            .iter()
            .filter(|d| str_at(d, "/kind") == kind)
            .collect()
    };
    let strings = |value: &Value| -> Vec<String> {
        value
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|v| v.as_str().unwrap_or("<not a string>").to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let Some(config_map) = of("ConfigMap").first().copied() else {
        return vec!["no ConfigMap".to_owned()];
    };
    let settings = match pim_operator::config::Config::parse(
        str_at(config_map, "/data/config.yaml"),
        "config.yaml",
    ) {
        Ok(settings) => settings.config,
        Err(e) => return vec![format!("the config does not parse: {e}")],
    };
    if !settings.webhook.enabled {
        problems.push("config: webhook.enabled is not true".to_owned());
    }
    let Some(deployment) = of("Deployment").first().copied() else {
        return vec!["no Deployment".to_owned()];
    };
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let webhook_port = container["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| str_at(p, "/name") == "https-webhook")
        .and_then(|p| p["containerPort"].as_u64());
    let served_port = settings
        .webhook
        .address
        .rsplit(':')
        .next()
        .and_then(|p| p.parse::<u64>().ok());
    if webhook_port.is_none() || webhook_port != served_port {
        problems.push(format!(
            "container port https-webhook {webhook_port:?} is not the served port {served_port:?}"
        ));
    }
    // The Secret volume mounted over a file's folder, if any.
    let secret_mounted_at = |file: &Path| -> Option<String> {
        let mount = container["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| file.parent() == Some(Path::new(str_at(m, "/mountPath"))))?;
        let volume = pod["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| str_at(v, "/name") == str_at(mount, "/name"))?;
        let secret = str_at(volume, "/secret/secretName");
        (!secret.is_empty()).then(|| secret.to_owned())
    };
    // The Secrets the operator may read by name, in its namespace.
    let readable: BTreeSet<String> = of("Role")
        .iter()
        .filter(|r| str_at(r, "/metadata/namespace") == NAMESPACE)
        .flat_map(|r| r["rules"].as_array().cloned().unwrap_or_default())
        .filter(|rule| {
            strings(&rule["resources"]).contains(&"secrets".to_owned())
                && strings(&rule["verbs"]).contains(&"get".to_owned())
        })
        .flat_map(|rule| strings(&rule["resourceNames"]))
        .collect();
    let creates_secrets = of("Role").iter().any(|r| {
        r["rules"].as_array().into_iter().flatten().any(|rule| {
            strings(&rule["resources"]) == ["secrets"] && strings(&rule["verbs"]) == ["create"]
        })
    });
    match (&settings.attestation.key_file, &settings.attestation.secret) {
        (Some(key), None) => {
            if secret_mounted_at(key).is_none() {
                problems.push(format!(
                    "attestation.keyFile {} is not in a mounted Secret",
                    key.display()
                ));
            }
        }
        (None, Some(secret)) => {
            if !readable.contains(secret) || !creates_secrets {
                problems.push(format!(
                    "attestation.secret {secret}: the operator may not get it by name and create it"
                ));
            }
        }
        _ => problems.push("config: set one of attestation.keyFile and .secret".to_owned()),
    }

    let mutating = of("MutatingWebhookConfiguration");
    let validating = of("ValidatingWebhookConfiguration");
    if mutating.len() != 1 || validating.len() != 1 {
        problems.push(format!(
            "expected one Mutating- and one ValidatingWebhookConfiguration, found {} and {}",
            mutating.len(),
            validating.len()
        ));
        return problems;
    }
    // The mutating webhook stamps requests and review decisions; the validating one sees all.
    let five = [
        "accesspolicies",
        "pimgroups",
        "eligibleassignments",
        "activationrequests",
        "accessreviews",
    ];
    for (configuration, path, wanted) in [
        (mutating[0], "/mutate", &five[3..]),
        (validating[0], "/validate", &five[..]),
    ] {
        let name = str_at(configuration, "/metadata/name");
        let webhooks = configuration["webhooks"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if webhooks.is_empty() {
            problems.push(format!("{name}: no webhooks"));
        }
        for webhook in &webhooks {
            let at = format!("{} {name}", str_at(configuration, "/kind"));
            if str_at(webhook, "/failurePolicy") != "Fail" {
                problems.push(format!("{at}: failurePolicy is not Fail"));
            }
            // The validating webhook writes the audit trail, never in a dry run.
            let side_effects = if path == "/validate" {
                "NoneOnDryRun"
            } else {
                "None"
            };
            if str_at(webhook, "/sideEffects") != side_effects {
                problems.push(format!("{at}: sideEffects is not {side_effects}"));
            }
            if !strings(&webhook["admissionReviewVersions"]).contains(&"v1".to_owned()) {
                problems.push(format!("{at}: does not speak admission.k8s.io/v1"));
            }
            if webhook.get("namespaceSelector").is_some() || webhook.get("objectSelector").is_some()
            {
                problems.push(format!("{at}: a selector lets objects past the webhook"));
            }
            let mut resources = BTreeSet::new();
            for rule in webhook["rules"].as_array().into_iter().flatten() {
                if strings(&rule["apiGroups"]) != ["pim.dev"] {
                    problems.push(format!("{at}: a rule outside pim.dev"));
                }
                let operations: BTreeSet<String> =
                    strings(&rule["operations"]).into_iter().collect();
                // Deletes reach the validating webhook (issue 20: protectLastMember refuses
                // the delete of the last grant; issue 19: deletes are audited).
                let deletes =
                    path == "/validate" && operations == BTreeSet::from(["DELETE".to_owned()]);
                if operations != BTreeSet::from(["CREATE".to_owned(), "UPDATE".to_owned()])
                    && !deletes
                {
                    problems.push(format!(
                        "{at}: operations {operations:?}, not CREATE and UPDATE"
                    ));
                }
                resources.extend(strings(&rule["resources"]));
            }
            let wanted: BTreeSet<String> = wanted.iter().map(|r| r.to_string()).collect();
            if resources != wanted {
                problems.push(format!("{at}: matches {resources:?}, not {wanted:?}"));
            }
            let service = &webhook["clientConfig"]["service"];
            if str_at(service, "/path") != path {
                problems.push(format!("{at}: path is not {path}"));
            }
            if str_at(service, "/namespace") != NAMESPACE {
                problems.push(format!("{at}: the Service is not in {NAMESPACE}"));
            }
            let port = service["port"].as_u64().unwrap_or(443);
            let reaches = of("Service").iter().any(|s| {
                str_at(s, "/metadata/name") == str_at(service, "/name")
                    && s["spec"]["ports"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|p| {
                            p["port"].as_u64() == Some(port)
                                && str_at(p, "/targetPort") == "https-webhook"
                        })
                    && s["spec"]["selector"].as_object().is_some_and(|selector| {
                        !selector.is_empty()
                            && selector.iter().all(|(k, v)| {
                                &deployment["spec"]["template"]["metadata"]["labels"][k] == v
                            })
                    })
            });
            if !reaches {
                problems.push(format!(
                    "{at}: Service {}:{port} does not reach the pods' https-webhook port",
                    str_at(service, "/name")
                ));
            }
        }
    }

    let certificates = of("Certificate");
    match (&settings.webhook.cert_file, &settings.webhook.key_file) {
        (Some(cert), Some(key)) => {
            // cert-manager: the Certificate's Secret is mounted there, its CA injected.
            let secret = secret_mounted_at(cert);
            if secret.is_none() || secret != secret_mounted_at(key) {
                problems.push("certFile and keyFile are not in one mounted Secret".to_owned());
            }
            if !certificates
                .iter()
                .any(|c| Some(str_at(c, "/spec/secretName")) == secret.as_deref())
            {
                problems.push("no Certificate writes the mounted Secret".to_owned());
            }
            for configuration in [mutating[0], validating[0]] {
                if str_at(
                    configuration,
                    "/metadata/annotations/cert-manager.io~1inject-ca-from",
                )
                .is_empty()
                {
                    problems.push(
                        "a webhook configuration lacks cert-manager's CA injection".to_owned(),
                    );
                }
            }
        }
        (None, None) => {
            // Self-signed: the names the operator writes must be the ones shipped, and it may
            // touch exactly those.
            let self_signed = &settings.webhook.self_signed;
            for (configuration, name) in [
                (mutating[0], &self_signed.mutating_configuration),
                (validating[0], &self_signed.validating_configuration),
            ] {
                if str_at(configuration, "/metadata/name") != name {
                    problems.push(format!(
                        "config names webhook configuration {name}, not shipped"
                    ));
                }
            }
            let named = |kind: &str, resource: &str| -> BTreeSet<String> {
                of(kind)
                    .iter()
                    .flat_map(|r| r["rules"].as_array().cloned().unwrap_or_default())
                    .filter(|rule| strings(&rule["resources"]).contains(&resource.to_owned()))
                    .flat_map(|rule| strings(&rule["resourceNames"]))
                    .collect()
            };
            if !readable.contains(&self_signed.secret) || !creates_secrets {
                problems.push(format!(
                    "the operator may not get Secret {} by name and create it",
                    self_signed.secret
                ));
            }
            let configurations = BTreeSet::from([
                self_signed.mutating_configuration.clone(),
                self_signed.validating_configuration.clone(),
            ]);
            for resource in [
                "mutatingwebhookconfigurations",
                "validatingwebhookconfigurations",
            ] {
                if named("ClusterRole", resource) != configurations {
                    problems.push(format!("{resource}: not limited to {configurations:?}"));
                }
            }
            let webhook_service = of("Service")
                .iter()
                .any(|s| str_at(s, "/metadata/name") == self_signed.service);
            if !webhook_service {
                problems.push(format!(
                    "the certificate names Service {}, not shipped",
                    self_signed.service
                ));
            }
        }
        _ => problems.push("only one of certFile and keyFile is set".to_owned()),
    }
    // The API server must be let in, and nobody else (issue 17 finding 3): the webhook signs
    // what it admits. A rule without `from`, or with an empty one, admits every source
    // (networking.k8s.io/v1 NetworkPolicyIngressRule: "If this field is empty or missing, this
    // rule matches all sources"); so does a peer with empty selectors.
    for policy in of("NetworkPolicy") {
        let webhook_rules: Vec<&Value> = policy["spec"]["ingress"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|rule| {
                rule["ports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|p| str_at(p, "/port") == "https-webhook")
                    || rule.get("ports").is_none()
            })
            .collect();
        if webhook_rules.is_empty() {
            problems.push("the NetworkPolicy keeps the API server from the webhook".to_owned());
        }
        for rule in webhook_rules {
            let peers = rule["from"].as_array().cloned().unwrap_or_default();
            if peers.is_empty() {
                problems.push("the NetworkPolicy admits anyone to the webhook's port".to_owned());
            }
            for peer in peers {
                let cidr = str_at(&peer, "/ipBlock/cidr");
                let open_cidr = cidr.ends_with("/0");
                let selects = |key: &str| {
                    peer.get(key)
                        .is_some_and(|s| s.as_object().is_some_and(|o| !o.is_empty()))
                };
                let open_selector = peer.get("ipBlock").is_none()
                    && !(selects("namespaceSelector") && selects("podSelector"));
                if open_cidr || open_selector {
                    problems.push(format!(
                        "the NetworkPolicy admits more than the API server to the webhook's port: {peer}"
                    ));
                }
            }
        }
    }
    problems
}

#[test]
fn the_chart_asks_where_the_api_server_calls_from() {
    // Issue 17 finding 3: with the webhook on, the chart will not guess who may call it.
    let refused = helm_template(&[], &[]);
    assert!(
        !refused.success,
        "helm template rendered without apiServerCIDRs"
    );
    for needle in [
        "networkPolicy.apiServerCIDRs",
        "docs/install.md",
        "webhookFromAnywhere",
    ] {
        assert!(
            refused.output.contains(needle),
            "{needle}:\n{}",
            refused.output
        );
    }
    // The explicit opt-out renders the port open, and says so only in values.
    let open = must(
        helm_template(&[], &["--set", "networkPolicy.webhookFromAnywhere=true"]),
        "helm template with webhookFromAnywhere",
    );
    let documents = documents(&open, "webhookFromAnywhere");
    let problems = webhook_problems(&documents);
    assert!(
        problems.iter().any(|p| p.contains("admits anyone")),
        "{problems:?}"
    );
    // Without the webhook there is no port to guard.
    must(
        helm_template(&[], &["--set", "webhook.enabled=false"]),
        "helm template without the webhook",
    );
}

#[test]
fn the_webhook_fails_closed_on_our_resources_and_is_reachable() {
    for rendering in renderings() {
        let problems = webhook_problems(&rendering.documents);
        assert!(
            problems.is_empty(),
            "{}:\n  {}",
            rendering.name,
            problems.join("\n  ")
        );
        assert_eq!(
            rendering.cert_manager,
            rendering.name.contains("cert-manager"),
            "{}: cert-manager kinds",
            rendering.name
        );
    }
}

#[test]
fn the_webhook_check_catches_what_would_let_writes_through() {
    let base = renderings()
        .iter()
        .find(|r| r.name == "kustomize deploy/base")
        .expect("the base rendering");
    type Breakage = fn(&mut Value);
    let breakages: [(&str, Breakage, &str); 8] = [
        (
            "MutatingWebhookConfiguration",
            |c| c["webhooks"][0]["failurePolicy"] = Value::from("Ignore"),
            "failurePolicy",
        ),
        (
            "ValidatingWebhookConfiguration",
            |c| c["webhooks"][0]["rules"][0]["resources"][0] = Value::from("pods"),
            "matches",
        ),
        (
            "ValidatingWebhookConfiguration",
            |c| c["webhooks"][0]["objectSelector"] = serde_json::json!({"matchLabels": {"a": "b"}}),
            "selector",
        ),
        (
            "MutatingWebhookConfiguration",
            |c| c["webhooks"][0]["clientConfig"]["service"]["port"] = Value::from(8443),
            "does not reach",
        ),
        (
            "Role",
            |r| {
                for rule in r["rules"].as_array_mut().expect("rules") {
                    if let Some(names) = rule["resourceNames"].as_array_mut() {
                        names.retain(|n| n != "pim-operator-attestation");
                    }
                }
            },
            "attestation.secret",
        ),
        (
            "NetworkPolicy",
            |p| {
                p["spec"]["ingress"]
                    .as_array_mut()
                    .expect("ingress")
                    .truncate(1)
            },
            "keeps the API server from the webhook",
        ),
        (
            "NetworkPolicy",
            |p| {
                for rule in p["spec"]["ingress"].as_array_mut().expect("ingress") {
                    if let Some(rule) = rule.as_object_mut() {
                        rule.remove("from");
                    }
                }
            },
            "admits anyone to the webhook's port",
        ),
        (
            "NetworkPolicy",
            |p| {
                for rule in p["spec"]["ingress"].as_array_mut().expect("ingress") {
                    if rule.get("from").is_some() {
                        rule["from"] = serde_json::json!([{"namespaceSelector": {}}]);
                    }
                }
            },
            "admits more than the API server",
        ),
    ];
    for (kind, breakage, expected) in breakages {
        let mut documents = base.documents.clone();
        let mut broken = 0;
        for target in documents.iter_mut().filter(|d| str_at(d, "/kind") == kind) {
            breakage(target);
            broken += 1;
        }
        assert!(broken > 0, "no {kind} to break");
        let problems = webhook_problems(&documents);
        assert!(
            problems.iter().any(|p| p.contains(expected)),
            "{kind}: expected a problem with {expected:?}, got {problems:?}"
        );
    }
}
