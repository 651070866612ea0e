//! Manifests on disk, as `kubectl apply -f` would send them: files and directories (walked in
//! name order), multi-document YAML, `List`s, other APIs' kinds skipped with a note. Each PIM
//! document is checked against its CRD ([`crate::checks::schema`]) and decoded; every problem
//! is located at `file:line:column`.
//!
//! A later document with the name of an earlier ActivationRequest is an update to it, applied
//! with server-side apply's merge rules (as an approver's `kubectl apply --server-side` of their
//! own approval entry is) and checked against the CRD's transition rules. For the other kinds, a
//! second document with the same name is a duplicate.

pub mod dispatch;
pub mod sources;
pub mod yaml;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;
use serde_json::Value;

use crate::checks::{Finding, Kind, PimObject, SchemaChecker, duplicate_name, rules};
use crate::engine::Catalog;
use dispatch::{Dispatch, dispatch};
pub use sources::LoadError;
use yaml::{Pos, SourceMap};

/// A place in a file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Location {
    /// The file as named on the command line (joined with the directory walked).
    pub file: String,
    pub line: u32,
    pub column: u32,
}

impl Location {
    fn new(file: &str, pos: Pos) -> Self {
        Location {
            file: file.to_owned(),
            line: pos.line,
            column: pos.column,
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// A finding at its place in the manifests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LocatedFinding {
    #[serde(flatten)]
    pub location: Location,
    #[serde(flatten)]
    pub finding: Finding,
}

/// Something worth saying that is not a problem: a skipped document, say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Note {
    #[serde(flatten)]
    pub location: Location,
    pub message: String,
}

/// One of the documents that define an object.
#[derive(Debug, Clone)]
struct Source {
    file: String,
    map: SourceMap,
}

/// An object of the manifests: its latest state, and where it is written.
#[derive(Debug, Clone)]
pub struct LoadedObject {
    pub object: PimObject,
    /// Whether its documents passed the schema checks. Semantic checks of an object the API
    /// server would refuse only repeat the same problems, so they are skipped.
    pub schema_valid: bool,
    /// The object as written, merged across its documents.
    value: Value,
    /// Its documents, first (the creation) to last.
    sources: Vec<Source>,
}

impl LoadedObject {
    /// Where `path` of this object is written: the latest document that writes exactly that
    /// path, or else the nearest written parent in the first document.
    pub fn locate(&self, path: &str) -> Location {
        for source in self.sources.iter().rev() {
            if let Some(pos) = source.map.exact(path) {
                return Location::new(&source.file, pos);
            }
        }
        match self.sources.first() {
            Some(first) => Location::new(&first.file, first.map.locate(path)),
            None => Location::new("", Pos { line: 1, column: 1 }),
        }
    }
}

/// Everything read from a set of paths.
#[derive(Debug, Clone, Default)]
pub struct Manifests {
    /// The files read, as named.
    pub files: Vec<String>,
    /// Non-empty documents read (a List counts once per item).
    pub documents: usize,
    /// The objects, one per kind and name, in the order first written.
    pub objects: Vec<LoadedObject>,
    /// Problems found while reading and decoding: syntax, schema, duplicates.
    pub findings: Vec<LocatedFinding>,
    pub notes: Vec<Note>,
}

impl Manifests {
    /// Reads and checks the manifests under `paths`. Only an unreadable path is an error; every
    /// problem in a file is a finding.
    pub fn load(paths: &[PathBuf], checker: &SchemaChecker) -> Result<Manifests, LoadError> {
        let mut loader = Loader {
            checker,
            out: Manifests::default(),
            index: BTreeMap::new(),
        };
        for path in sources::expand(paths)? {
            let text = std::fs::read_to_string(&path).map_err(|source| LoadError::Unreadable {
                path: path.display().to_string(),
                source,
            })?;
            // `./x.yaml` is shown as `x.yaml`: code-scanning UIs resolve paths from the root.
            let shown = path.strip_prefix(".").unwrap_or(&path);
            loader.file(&shown.display().to_string(), &text);
        }
        Ok(loader.out)
    }

    /// Reads one file's text, for callers (and tests) that have it in memory.
    pub fn from_text(file: &str, text: &str, checker: &SchemaChecker) -> Manifests {
        let mut loader = Loader {
            checker,
            out: Manifests::default(),
            index: BTreeMap::new(),
        };
        loader.file(file, text);
        loader.out
    }

    /// A catalog of every object.
    pub fn catalog(&self) -> Catalog {
        let mut catalog = Catalog::default();
        for loaded in &self.objects {
            loaded.object.insert_into(&mut catalog);
        }
        catalog
    }
}

struct Loader<'a> {
    checker: &'a SchemaChecker,
    out: Manifests,
    /// (kind, name) → index into `out.objects`.
    index: BTreeMap<(Kind, String), usize>,
}

impl Loader<'_> {
    fn file(&mut self, file: &str, text: &str) {
        self.out.files.push(file.to_owned());
        let (documents, errors) = yaml::parse(text);
        for error in errors {
            self.out.findings.push(LocatedFinding {
                location: Location::new(file, error.pos),
                finding: Finding::new(rules::YAML_SYNTAX, "", error.message),
            });
        }
        for document in documents {
            self.document(file, document.value, document.map, true);
        }
    }

    fn document(&mut self, file: &str, value: Value, map: SourceMap, top_level: bool) {
        let here = |path: &str| Location::new(file, map.locate(path));
        match dispatch(&value) {
            Dispatch::List(items) if top_level => {
                for (i, item) in items.into_iter().enumerate() {
                    let item_map = map.sub(&format!("items[{i}]"));
                    self.document(file, item, item_map, false);
                }
            }
            Dispatch::List(_) => self.out.notes.push(Note {
                location: here(""),
                message: "skipped a List nested in a List".to_owned(),
            }),
            Dispatch::Other { api_version, kind } => {
                self.out.documents += 1;
                let name = value
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .map(|n| format!("/{n}"))
                    .unwrap_or_default();
                self.out.notes.push(Note {
                    location: here(""),
                    message: format!("skipped {api_version} {kind}{name}: not a PIM kind"),
                });
            }
            Dispatch::Invalid(finding) => {
                self.out.documents += 1;
                let location = here(&finding.path);
                self.out.findings.push(LocatedFinding { location, finding });
            }
            Dispatch::Pim(kind) => {
                self.out.documents += 1;
                self.pim(kind, file, value, map);
            }
        }
    }

    fn pim(&mut self, kind: Kind, file: &str, value: Value, map: SourceMap) {
        let source = Source {
            file: file.to_owned(),
            map,
        };
        let checked = self.checker.check(kind, &value);
        let Some(object) = checked.object else {
            for finding in checked.findings {
                let location = Location::new(file, source.map.locate(&finding.path));
                self.out.findings.push(LocatedFinding { location, finding });
            }
            return;
        };
        let key = (kind, object.name().to_owned());
        let Some(&existing) = self.index.get(&key) else {
            let loaded = LoadedObject {
                object,
                schema_valid: checked.findings.is_empty(),
                value,
                sources: vec![source],
            };
            self.report(&loaded, checked.findings);
            self.index.insert(key, self.out.objects.len());
            self.out.objects.push(loaded);
            return;
        };
        if kind == Kind::ActivationRequest {
            self.update(existing, value, source);
        } else {
            let first = self.out.objects[existing].locate("metadata.name");
            let finding = duplicate_name(kind, &key.1, &first.to_string());
            let location = Location::new(file, source.map.locate("metadata.name"));
            self.out.findings.push(LocatedFinding { location, finding });
        }
    }

    /// A later document of an ActivationRequest: merged into it, and checked both as the object
    /// it makes and against the transition rules from the object before.
    fn update(&mut self, index: usize, patch: Value, source: Source) {
        let kind = Kind::ActivationRequest;
        let before = &self.out.objects[index];
        let merged = self.checker.apply(kind, &before.value, &patch);
        let already = self.checker.check(kind, &before.value).findings;
        let checked = self.checker.check(kind, &merged);
        let mut findings: Vec<Finding> = checked
            .findings
            .into_iter()
            .filter(|f| !already.contains(f))
            .collect();
        findings.extend(self.checker.check_update(kind, &before.value, &merged));

        let mut loaded = before.clone();
        loaded.sources.push(source);
        loaded.value = merged;
        loaded.schema_valid &= findings.is_empty();
        if let Some(object) = checked.object {
            loaded.object = object;
        }
        self.report(&loaded, findings);
        self.out.objects[index] = loaded;
    }

    fn report(&mut self, loaded: &LoadedObject, findings: Vec<Finding>) {
        for finding in findings {
            let location = loaded.locate(&finding.path);
            self.out.findings.push(LocatedFinding { location, finding });
        }
    }
}
