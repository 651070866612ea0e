//! Multi-document YAML with positions: each document's value, and a source map from field paths
//! (`spec.schedule.duration`, `spec.approvals[0]`) to the line and column where they are written.
//!
//! serde-saphyr's own parser (granit) supplies the events and their markers; serde-saphyr
//! decodes each document's text into a value, so values follow the same YAML rules as
//! everywhere else in the project. Each document is decoded on its own, so a duplicate key in
//! one document does not hide the others.

use std::collections::HashMap;

use serde_json::Value;
use serde_saphyr::granit_parser::{Event, Marker, Parser, ScalarStyle};

/// A position in a file: 1-based line and column (in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pos {
    pub line: u32,
    pub column: u32,
}

impl Pos {
    fn of(marker: &Marker) -> Pos {
        Pos {
            line: u32::try_from(marker.line()).unwrap_or(u32::MAX),
            column: u32::try_from(marker.col() + 1).unwrap_or(u32::MAX),
        }
    }
}

impl std::fmt::Display for Pos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// Where each field of one document is written: the key of a mapping entry, the start of a
/// list item, and the start of the document's root node for the empty path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceMap {
    entries: HashMap<String, Pos>,
}

impl SourceMap {
    /// The position of exactly this path, if the document writes it.
    pub fn exact(&self, path: &str) -> Option<Pos> {
        self.entries.get(path).copied()
    }

    /// The position of `path`, or of its nearest written ancestor (a missing field is reported
    /// where its parent is), or of the document.
    pub fn locate(&self, path: &str) -> Pos {
        let mut current = path;
        loop {
            if let Some(pos) = self.entries.get(current) {
                return *pos;
            }
            if current.is_empty() {
                return Pos { line: 1, column: 1 };
            }
            current = parent(current);
        }
    }

    /// The part of the map under `prefix` (e.g. `items[2]`), re-rooted there.
    pub fn sub(&self, prefix: &str) -> SourceMap {
        let entries = self
            .entries
            .iter()
            .filter_map(|(path, pos)| {
                let rest = path.strip_prefix(prefix)?;
                if rest.is_empty() {
                    Some((String::new(), *pos))
                } else {
                    rest.strip_prefix('.').map(|r| (r.to_owned(), *pos))
                }
            })
            .collect();
        SourceMap { entries }
    }
}

/// `spec.a[1]` → `spec.a` → `spec` → ``.
fn parent(path: &str) -> &str {
    if path.ends_with(']')
        && let Some(open) = path.rfind('[')
    {
        return &path[..open];
    }
    path.rfind('.').map_or("", |dot| &path[..dot])
}

/// One non-empty document of a file.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceDocument {
    /// Position of the document's root node.
    pub start: Pos,
    pub value: Value,
    pub map: SourceMap,
}

/// A place where the YAML cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

/// The documents of a YAML stream, and the syntax errors met. Documents holding nothing (an
/// empty document, or only comments) are left out. After an error in the stream's structure,
/// the rest of the file cannot be split into documents and is not read.
pub fn parse(text: &str) -> (Vec<SourceDocument>, Vec<SyntaxError>) {
    let mut documents = Vec::new();
    let mut errors = Vec::new();
    let mut builder: Option<DocumentBuilder> = None;
    for next in Parser::new_from_str(text) {
        let (event, span) = match next {
            Ok(pair) => pair,
            Err(e) => {
                errors.push(SyntaxError {
                    pos: Pos::of(e.marker()),
                    message: e.info(),
                });
                break;
            }
        };
        match event {
            Event::DocumentStart(..) => {
                builder = Some(DocumentBuilder::new(byte_offset(text, &span.start)));
            }
            Event::DocumentEnd => {
                if let Some(done) = builder.take() {
                    let end = byte_offset(text, &span.start);
                    match done.finish(text, end) {
                        Some(Ok(document)) => documents.push(document),
                        Some(Err(error)) => errors.push(error),
                        None => {}
                    }
                }
            }
            other => {
                if let Some(b) = builder.as_mut() {
                    b.event(&other, Pos::of(&span.start));
                }
            }
        }
    }
    (documents, errors)
}

/// The byte offset of a marker; the parser gives one for string input, else count characters.
fn byte_offset(text: &str, marker: &Marker) -> usize {
    marker.byte_offset().unwrap_or_else(|| {
        text.char_indices()
            .nth(marker.index())
            .map_or(text.len(), |(i, _)| i)
    })
}

enum Frame {
    /// A mapping at `path`; `key` is set between a key and the end of its value.
    Map {
        path: String,
        key: Option<String>,
    },
    Seq {
        path: String,
        next: usize,
    },
    /// Inside a key that is itself a collection: nothing in it has a path.
    ComplexKey,
}

struct DocumentBuilder {
    start_byte: usize,
    root: Option<Pos>,
    /// The root is `null` written plainly (or nothing at all): an empty document.
    empty: bool,
    stack: Vec<Frame>,
    map: SourceMap,
}

impl DocumentBuilder {
    fn new(start_byte: usize) -> Self {
        DocumentBuilder {
            start_byte,
            root: None,
            empty: false,
            stack: Vec::new(),
            map: SourceMap::default(),
        }
    }

    fn event(&mut self, event: &Event<'_>, pos: Pos) {
        let opens = matches!(event, Event::MappingStart(..) | Event::SequenceStart(..));
        let node = opens || matches!(event, Event::Scalar(..) | Event::Alias(..));
        if matches!(event, Event::MappingEnd | Event::SequenceEnd) {
            self.stack.pop();
            self.complete();
            return;
        }
        if !node {
            return;
        }
        let path = match self.stack.last_mut() {
            None => {
                self.root = Some(pos);
                self.map.entries.insert(String::new(), pos);
                if let Event::Scalar(text, ScalarStyle::Plain, ..) = event {
                    self.empty = matches!(text.as_ref(), "" | "~" | "null" | "Null" | "NULL");
                }
                Some(String::new())
            }
            Some(Frame::ComplexKey) => None,
            Some(Frame::Map { path, key: None }) => {
                // This node is a key.
                if let Event::Scalar(text, ..) = event {
                    let child = join(path, text);
                    self.map.entries.entry(child).or_insert(pos);
                    if let Some(Frame::Map { key, .. }) = self.stack.last_mut() {
                        *key = Some(text.to_string());
                    }
                } else if opens {
                    self.stack.push(Frame::ComplexKey);
                }
                return;
            }
            Some(Frame::Map {
                path,
                key: Some(key),
            }) => Some(join(path, key)),
            Some(Frame::Seq { path, next }) => {
                let child = format!("{path}[{next}]");
                self.map.entries.entry(child.clone()).or_insert(pos);
                Some(child)
            }
        };
        if opens {
            let frame = match (path, event) {
                (Some(path), Event::MappingStart(..)) => Frame::Map { path, key: None },
                (Some(path), _) => Frame::Seq { path, next: 0 },
                (None, _) => Frame::ComplexKey,
            };
            self.stack.push(frame);
        } else {
            self.complete();
        }
    }

    /// A value ended: its parent moves on to the next key or item.
    fn complete(&mut self) {
        match self.stack.last_mut() {
            Some(Frame::Map { key, .. }) => {
                // After a value the next node is a key; after a complex key, its value.
                *key = match key {
                    Some(_) => None,
                    None => Some("?".to_owned()),
                };
            }
            Some(Frame::Seq { next, .. }) => *next += 1,
            Some(Frame::ComplexKey) | None => {}
        }
    }

    /// Decodes the document's own text. `None` for an empty document.
    fn finish(self, text: &str, end_byte: usize) -> Option<Result<SourceDocument, SyntaxError>> {
        let root = self.root?;
        if self.empty {
            return None;
        }
        // Start at the beginning of the line, so columns in errors stay those of the file.
        let before = text.get(..self.start_byte).unwrap_or(text);
        let start = before.rfind('\n').map_or(0, |i| i + 1);
        let end = end_byte.clamp(start, text.len());
        let chunk = text.get(start..end).unwrap_or_default();
        let lines_before = text.get(..start).map_or(0, |t| t.matches('\n').count());
        let lines_before = u32::try_from(lines_before).unwrap_or(u32::MAX);
        Some(match serde_saphyr::from_str::<Value>(chunk) {
            Ok(value) => Ok(SourceDocument {
                start: root,
                value,
                map: self.map,
            }),
            Err(e) => Err(decode_error(&e, lines_before, root)),
        })
    }
}

fn decode_error(error: &serde_saphyr::Error, lines_before: u32, fallback: Pos) -> SyntaxError {
    let rendered = error.render_with_options(serde_saphyr::render_options! {
        snippets: serde_saphyr::SnippetMode::Off,
    });
    // The plain rendering ends with " at line L, column C", which we report as a position.
    let message = rendered
        .rsplit_once(" at line ")
        .map_or(rendered.as_str(), |(m, _)| m)
        .to_owned();
    let pos = error.location().map_or(fallback, |l| Pos {
        line: u32::try_from(l.line())
            .unwrap_or(u32::MAX)
            .saturating_add(lines_before),
        column: u32::try_from(l.column()).unwrap_or(u32::MAX),
    });
    SyntaxError { pos, message }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(line: u32, column: u32) -> Pos {
        Pos { line, column }
    }

    #[test]
    fn maps_fields_and_items_to_their_positions() {
        let text = "# a comment\napiVersion: v1\nspec:\n  approvals:\n    - approver: bob\n      decision: Approve\n    - {approver: eve}\n  flow: {a: [1, 2]}\n";
        let (docs, errors) = parse(text);
        assert_eq!(errors, []);
        assert_eq!(docs.len(), 1);
        let map = &docs[0].map;
        assert_eq!(docs[0].start, at(2, 1));
        assert_eq!(map.exact("apiVersion"), Some(at(2, 1)));
        assert_eq!(map.exact("spec.approvals"), Some(at(4, 3)));
        assert_eq!(map.exact("spec.approvals[0]"), Some(at(5, 7)));
        assert_eq!(map.exact("spec.approvals[0].decision"), Some(at(6, 7)));
        assert_eq!(map.exact("spec.approvals[1].approver"), Some(at(7, 8)));
        assert_eq!(map.exact("spec.flow.a[1]"), Some(at(8, 17)));
        // A missing field is reported where its nearest parent is.
        assert_eq!(map.locate("spec.approvals[1].time"), at(7, 7));
        assert_eq!(map.locate("spec.ticket"), at(3, 1));
        assert_eq!(map.locate("status"), at(2, 1));
        assert_eq!(
            docs[0].value["spec"]["approvals"][1],
            json!({"approver": "eve"})
        );
    }

    #[test]
    fn splits_documents_and_skips_empty_ones() {
        let text = "a: 1\n---\n# only a comment\n---\n---\nb:\n  c: 2\n...\n---\nnull\n";
        let (docs, errors) = parse(text);
        assert_eq!(errors, []);
        let values: Vec<_> = docs.iter().map(|d| d.value.clone()).collect();
        assert_eq!(values, [json!({"a": 1}), json!({"b": {"c": 2}})]);
        assert_eq!(docs[1].map.exact("b.c"), Some(at(7, 3)));
    }

    #[test]
    fn syntax_errors_have_positions_and_stop_the_file() {
        let (docs, errors) = parse("a: 1\n---\nb: [1\n---\nc: 3\n");
        assert_eq!(docs.len(), 1);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].pos, at(3, 4));
        assert!(errors[0].message.contains('['), "{}", errors[0].message);
    }

    #[test]
    fn a_duplicate_key_fails_only_its_document() {
        let (docs, errors) = parse("a: 1\n---\nkind: X\nkind: Y\n---\nc: 3\n");
        assert_eq!(docs.len(), 2);
        assert_eq!(errors[0].pos, at(4, 1));
        assert!(
            errors[0].message.starts_with("duplicate mapping key: kind"),
            "{}",
            errors[0].message
        );
    }

    #[test]
    fn complex_keys_do_not_derail_paths() {
        let (docs, errors) = parse("? [a, b]\n: 1\nc: 2\n");
        assert_eq!(errors.len(), 1, "serde cannot key a JSON object by a list");
        assert!(docs.is_empty());
        let mut builder = DocumentBuilder::new(0);
        for next in Parser::new_from_str("? [a, b]\n: {x: 1}\nc: 2\n") {
            let (event, span) = next.unwrap();
            builder.event(&event, Pos::of(&span.start));
        }
        assert_eq!(builder.map.exact("c"), Some(at(3, 1)));
        assert_eq!(builder.map.exact("?.x"), Some(at(2, 4)));
    }

    #[test]
    fn sub_maps_re_root_list_items() {
        let (docs, _) = parse("kind: List\nitems:\n  - kind: A\n    spec: {x: 1}\n");
        let item = docs[0].map.sub("items[0]");
        assert_eq!(item.exact(""), Some(at(3, 5)));
        assert_eq!(item.exact("spec.x"), Some(at(4, 12)));
        assert_eq!(item.locate("spec.y"), at(4, 5));
    }
}
