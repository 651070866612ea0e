//! The guides (README.md and docs/*.md) stay true as the code changes: every relative link
//! resolves (to a heading too, when it names one), every `yaml` example that is a `pim.dev`
//! object or an operator config parses with the operator's own parsers, and every
//! `pim-operator` and `kubectl pim` subcommand shown in a shell block exists.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use pim_operator::checks::{SchemaChecker, Severity};
use pim_operator::config::Config;
use pim_operator::manifests::Manifests;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// README.md and every page under docs/.
fn pages() -> Vec<(PathBuf, String)> {
    let mut paths = vec![Path::new(ROOT).join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(Path::new(ROOT).join("docs"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    docs.sort();
    paths.extend(docs);
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            (path, text)
        })
        .collect()
}

fn shown(path: &Path) -> String {
    path.strip_prefix(ROOT)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// A fenced code block: its info string, its text, and the line its text starts on.
struct Block {
    lang: String,
    text: String,
    line: usize,
    /// The fence's indentation (a block in a list item), taken off each of its lines.
    indent: String,
}

/// The fenced blocks of a page, and its prose (the lines outside them, numbered).
fn split_fences(markdown: &str) -> (Vec<Block>, Vec<(usize, &str)>) {
    let mut blocks = Vec::new();
    let mut prose = Vec::new();
    let mut open: Option<Block> = None;
    for (index, line) in markdown.lines().enumerate() {
        let number = index + 1;
        let body = line.trim_start();
        let fence = body.strip_prefix("```");
        match (&mut open, fence) {
            (None, Some(info)) => {
                open = Some(Block {
                    lang: info.trim().to_owned(),
                    text: String::new(),
                    line: number + 1,
                    indent: line[..line.len() - body.len()].to_owned(),
                })
            }
            (Some(_), Some(_)) => blocks.extend(open.take()),
            (Some(block), None) => {
                block
                    .text
                    .push_str(line.strip_prefix(block.indent.as_str()).unwrap_or(line));
                block.text.push('\n');
            }
            (None, None) => prose.push((number, line)),
        }
    }
    (blocks, prose)
}

// --- Links -------------------------------------------------------------------------------------

/// The targets of inline links `[text](target)` in prose, with their line numbers.
fn link_targets(markdown: &str) -> Vec<(usize, String)> {
    let (_, prose) = split_fences(markdown);
    let mut targets = Vec::new();
    for (number, line) in prose {
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            if let Some(end) = rest.find(')') {
                targets.push((number, rest[..end].to_owned()));
                rest = &rest[end..];
            }
        }
    }
    targets
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(markdown: &str) -> BTreeSet<String> {
    let (_, prose) = split_fences(markdown);
    prose
        .iter()
        .filter(|(_, line)| line.starts_with('#'))
        .map(|(_, line)| anchor(line.trim_start_matches('#')))
        .collect()
}

/// Links of `page` (at `path`) that lead nowhere.
fn broken_links(path: &Path, page: &str) -> Vec<String> {
    let dir = path.parent().unwrap();
    let mut broken = Vec::new();
    for (line, target) in link_targets(page) {
        if target.contains("://") || target.starts_with("mailto:") {
            continue;
        }
        let (file, fragment) = match target.split_once('#') {
            Some((file, fragment)) => (file, Some(fragment)),
            None => (target.as_str(), None),
        };
        let at = format!("{}:{line}: link `{target}`", shown(path));
        if file.is_empty() {
            if let Some(fragment) = fragment.filter(|f| !anchors(page).contains(*f)) {
                broken.push(format!("{at}: no heading #{fragment} on this page"));
            }
            continue;
        }
        let resolved = dir.join(file);
        if !resolved.exists() {
            broken.push(format!("{at}: {} does not exist", resolved.display()));
            continue;
        }
        if let Some(fragment) = fragment {
            let target_text = std::fs::read_to_string(&resolved).unwrap_or_default();
            if !anchors(&target_text).contains(fragment) {
                broken.push(format!(
                    "{at}: no heading #{fragment} in {}",
                    shown(&resolved)
                ));
            }
        }
    }
    broken
}

#[test]
fn every_relative_link_resolves() {
    let broken: Vec<String> = pages()
        .iter()
        .flat_map(|(path, text)| broken_links(path, text))
        .collect();
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn a_broken_link_is_reported() {
    let page = Path::new(ROOT).join("docs/example.md");
    let text = "See [install](install.md), [its end](install.md#try-it-on-kind),\n\
                [gone](missing.md), [no such part](install.md#no-such-heading),\n\
                [here](#top), [not here](#bottom) and [the web](https://example.com/x).\n\n# Top\n";
    let broken = broken_links(&page, text);
    assert_eq!(broken.len(), 3, "{broken:#?}");
    assert!(broken[2].contains("#bottom"), "{}", broken[2]);
    assert!(broken[0].contains("missing.md"), "{}", broken[0]);
    assert!(broken[1].contains("#no-such-heading"), "{}", broken[1]);
    // A fenced block is not prose: a link written in one is not followed.
    assert!(broken_links(&page, "```md\n[x](missing.md)\n```\n").is_empty());
}

// --- YAML examples -----------------------------------------------------------------------------

/// A config fragment that sets up something other than directories may use the `entra`
/// connection the Entra guide sets up (a notification channel of `type: graph`, say).
const ENTRA_DIRECTORY: &str = "directories:\n  entra: {type: entra, tenantId: contoso.com, clientId: 1c2d3e4f-5a6b-4c7d-8e9f-a0b1c2d3e4f5, credential: {type: clientSecret, secretFile: /s}}\n";

/// What is wrong with a `yaml` example, if anything. A block of `pim.dev` objects must pass
/// the schema checks `pim-operator validate` runs (references to objects the page does not
/// show are not checked); a block of other APIs' objects is not ours; anything else must be an
/// operator config.
fn yaml_problem(origin: &str, text: &str, checker: &SchemaChecker) -> Option<String> {
    let api_versions: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("apiVersion:"))
        .map(str::trim)
        .collect();
    if api_versions.iter().any(|v| v.starts_with("pim.dev/")) {
        let manifests = Manifests::from_text(origin, text, checker);
        let errors: Vec<String> = manifests
            .findings
            .iter()
            .filter(|f| f.finding.severity == Severity::Error)
            .map(|f| format!("{}: {}", f.location, f.finding.message))
            .collect();
        return match (errors.is_empty(), manifests.objects.is_empty()) {
            (true, false) => None,
            (true, true) => Some(format!("{origin}: no pim.dev object decoded")),
            (false, _) => Some(errors.join("\n")),
        };
    }
    if !api_versions.is_empty() {
        return None;
    }
    let config = if text.lines().any(|line| line.starts_with("directories:")) {
        text.to_owned()
    } else {
        format!("{ENTRA_DIRECTORY}{text}")
    };
    Config::parse(&config, origin)
        .err()
        .map(|e| format!("{e} (a yaml example must be pim.dev objects or an operator config)"))
}

#[test]
fn every_yaml_example_parses() {
    let checker = SchemaChecker::new().unwrap();
    let mut problems = Vec::new();
    let mut checked = 0;
    for (path, text) in pages() {
        let (blocks, _) = split_fences(&text);
        for block in blocks.iter().filter(|b| b.lang == "yaml") {
            let origin = format!("{}:{}", shown(&path), block.line);
            checked += 1;
            problems.extend(yaml_problem(&origin, &block.text, &checker));
        }
    }
    assert!(checked >= 10, "only {checked} yaml examples found");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn a_yaml_example_that_does_not_parse_is_reported() {
    let checker = SchemaChecker::new().unwrap();
    let policy = "apiVersion: pim.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: p}\nspec:\n  activation: {maxDuration: 1h}\n";
    assert_eq!(yaml_problem("good", policy, &checker), None);
    let bad_policy = policy.replace("1h", "often");
    assert!(yaml_problem("bad", &bad_policy, &checker).is_some());
    let unknown_field = policy.replace("maxDuration", "maxDurration");
    assert!(yaml_problem("field", &unknown_field, &checker).is_some());
    let config = "directories:\n  corp: {type: memory}\n";
    assert_eq!(yaml_problem("config", config, &checker), None);
    let bad_config = config.replace("memory", "memoir");
    assert!(yaml_problem("config", &bad_config, &checker).is_some());
    // Neither an object nor a config: an unknown key of the config.
    assert!(yaml_problem("other", "replicaCount: 2\n", &checker).is_some());
    // Another API's object is not ours to check.
    let kind_cluster = "apiVersion: kind.x-k8s.io/v1alpha4\nkind: Cluster\n";
    assert_eq!(yaml_problem("kind", kind_cluster, &checker), None);
}

// --- Commands ----------------------------------------------------------------------------------

/// The subcommands a binary's `--help` lists under "Commands:".
fn subcommands(binary: &str) -> BTreeSet<String> {
    let output = Command::new(binary).arg("--help").output().unwrap();
    assert!(output.status.success(), "{binary} --help failed");
    let help = String::from_utf8(output.stdout).unwrap();
    let listed: BTreeSet<String> = help
        .lines()
        .skip_while(|line| !line.starts_with("Commands:"))
        .skip(1)
        .take_while(|line| line.starts_with("  "))
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    assert!(
        !listed.is_empty(),
        "{binary} --help lists no commands:\n{help}"
    );
    listed
}

/// Which program a command names, when it is one of ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Program {
    Operator,
    KubectlPim,
}

/// The subcommands of our programs that a shell block runs: `pim-operator X` (also as a path,
/// or as `cargo run -- X`) and `kubectl pim X` (or `kubectl-pim X`), each at the start of a
/// command (after a `$ ` prompt, environment assignments, `|`, `&&` or `;`).
fn commands_shown(shell: &str) -> Vec<(usize, Program, String)> {
    let mut found = Vec::new();
    for (index, line) in shell.lines().enumerate() {
        let line = line.trim_start().trim_start_matches("$ ");
        let line = line.split(" #").next().unwrap_or_default();
        let line = line.replace("&&", ";").replace("||", ";").replace('|', ";");
        for command in line.split(';') {
            let words: Vec<&str> = command
                .split_whitespace()
                .skip_while(|w| w.contains('=') && !w.starts_with('-'))
                .collect();
            let (program, rest) = match words.as_slice() {
                ["kubectl", "pim", rest @ ..] => (Program::KubectlPim, rest),
                ["cargo", "run", rest @ ..] => {
                    let Some(dashes) = rest.iter().position(|w| *w == "--") else {
                        continue;
                    };
                    let program = if rest[..dashes].contains(&"kubectl-pim") {
                        Program::KubectlPim
                    } else {
                        Program::Operator
                    };
                    (program, &rest[dashes + 1..])
                }
                [first, rest @ ..] if first.rsplit('/').next() == Some("pim-operator") => {
                    (Program::Operator, rest)
                }
                [first, rest @ ..] if first.rsplit('/').next() == Some("kubectl-pim") => {
                    (Program::KubectlPim, rest)
                }
                _ => continue,
            };
            if let Some(sub) = rest.first().filter(|w| !w.starts_with('-')) {
                found.push((index + 1, program, (*sub).to_owned()));
            }
        }
    }
    found
}

fn unknown_commands(
    shell: &str,
    operator: &BTreeSet<String>,
    kubectl_pim: &BTreeSet<String>,
) -> Vec<String> {
    commands_shown(shell)
        .into_iter()
        .filter(|(_, program, sub)| {
            let known = match program {
                Program::Operator => operator,
                Program::KubectlPim => kubectl_pim,
            };
            !known.contains(sub)
        })
        .map(|(line, program, sub)| format!("line {line}: {program:?} has no subcommand `{sub}`"))
        .collect()
}

const SHELLS: &[&str] = &["sh", "console", "shell", "bash"];

#[test]
fn every_subcommand_shown_exists() {
    let operator = subcommands(env!("CARGO_BIN_EXE_pim-operator"));
    let kubectl_pim = subcommands(env!("CARGO_BIN_EXE_kubectl-pim"));
    let mut problems = Vec::new();
    let mut seen = 0;
    for (path, text) in pages() {
        let (blocks, _) = split_fences(&text);
        for block in blocks.iter().filter(|b| SHELLS.contains(&b.lang.as_str())) {
            seen += commands_shown(&block.text).len();
            for problem in unknown_commands(&block.text, &operator, &kubectl_pim) {
                problems.push(format!("{}:{}: {problem}", shown(&path), block.line));
            }
        }
    }
    assert!(
        seen >= 10,
        "only {seen} commands of ours found in shell blocks"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn an_unknown_subcommand_is_reported() {
    let operator = subcommands(env!("CARGO_BIN_EXE_pim-operator"));
    let kubectl_pim = subcommands(env!("CARGO_BIN_EXE_kubectl-pim"));
    for known in ["run", "validate", "simulate", "crds"] {
        assert!(operator.contains(known), "{operator:?}");
    }
    let shell = "\
$ cargo run --release -- simulate examples/
PIM_CONFIG=x target/release/pim-operator frobnicate
kubectl pim aprove r --reason ok   # a typo
cargo run --bin kubectl-pim -- eligible && kubectl pim pending | head
helm install pim-operator charts/pim-operator --namespace pim-system
kubectl -n pim-system get lease pim-operator
";
    let problems = unknown_commands(shell, &operator, &kubectl_pim);
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(problems[0].contains("`frobnicate`"), "{}", problems[0]);
    assert!(problems[1].contains("`aprove`"), "{}", problems[1]);
    assert_eq!(commands_shown(shell).len(), 5);
}

// --- The layout table --------------------------------------------------------------------------

/// Every path the layout table names exists, and every module under src/ is in it.
#[test]
fn the_layout_table_matches_the_tree() {
    let layout = std::fs::read_to_string(Path::new(ROOT).join("docs/layout.md")).unwrap();
    let named: BTreeSet<String> = layout
        .lines()
        .filter_map(|line| line.strip_prefix("| "))
        .filter_map(|line| line.split(" |").next())
        .flat_map(|cell| cell.split(", "))
        .filter_map(|path| path.strip_prefix('`')?.strip_suffix('`'))
        .map(str::to_owned)
        .collect();
    let missing: Vec<&String> = named
        .iter()
        .filter(|path| !Path::new(ROOT).join(path).exists())
        .collect();
    assert!(
        missing.is_empty(),
        "docs/layout.md names missing paths: {missing:?}"
    );
    let mut unlisted = Vec::new();
    for entry in std::fs::read_dir(Path::new(ROOT).join("src")).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = if entry.path().is_dir() {
            format!("src/{name}/")
        } else {
            format!("src/{name}")
        };
        let listed = named.iter().any(|n| n.starts_with(&path));
        if name != "lib.rs" && name != "main.rs" && !listed {
            unlisted.push(path);
        }
    }
    assert!(
        unlisted.is_empty(),
        "docs/layout.md does not list {unlisted:?}"
    );
}
