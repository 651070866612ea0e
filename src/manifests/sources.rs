//! Which files a list of paths means: files as given, directories walked recursively in name
//! order for `.yaml` and `.yml` files, hidden entries (`.git`) left out.

use std::path::{Path, PathBuf};

/// A path that cannot be read: the run cannot go on (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: {source}")]
    Unreadable {
        path: String,
        source: std::io::Error,
    },
    #[error("no paths given")]
    NoPaths,
}

fn unreadable(path: &Path, source: std::io::Error) -> LoadError {
    LoadError::Unreadable {
        path: path.display().to_string(),
        source,
    }
}

/// The files to read, in a stable order, each once.
pub fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, LoadError> {
    if paths.is_empty() {
        return Err(LoadError::NoPaths);
    }
    let mut files = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|e| unreadable(path, e))?;
        if meta.is_dir() {
            walk(path, &mut files)?;
        } else {
            files.push(path.clone());
        }
    }
    let mut seen = std::collections::HashSet::new();
    files.retain(|f| seen.insert(f.clone()));
    Ok(files)
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), LoadError> {
    let mut entries = std::fs::read_dir(dir)
        .map_err(|e| unreadable(dir, e))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| unreadable(dir, e))?;
    entries.sort();
    for path in entries {
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        // Symbolic links to directories are not followed, so a link cycle cannot trap the walk.
        let link = std::fs::symlink_metadata(&path).map_err(|e| unreadable(&path, e))?;
        if link.is_dir() {
            walk(&path, files)?;
        } else if is_yaml(&path) && std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            files.push(path);
        }
    }
    Ok(())
}

fn is_yaml(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_are_walked_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for file in [
            "b.yaml",
            "a.yml",
            "notes.txt",
            "sub/c.yaml",
            "sub/deeper/d.YAML",
            ".hidden/e.yaml",
        ] {
            let path = root.join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, "").unwrap();
        }
        let files = expand(&[
            root.to_path_buf(),
            root.join("b.yaml"),
            root.join("notes.txt"),
        ])
        .unwrap();
        let names: Vec<_> = files
            .iter()
            .map(|f| f.strip_prefix(root).unwrap().display().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "a.yml",
                "b.yaml",
                "sub/c.yaml",
                "sub/deeper/d.YAML",
                "notes.txt"
            ]
        );
    }

    #[test]
    fn a_missing_path_is_an_error_naming_it() {
        let err = expand(&[PathBuf::from("/nonexistent/pim")]).unwrap_err();
        assert!(err.to_string().starts_with("/nonexistent/pim: "), "{err}");
        assert!(matches!(expand(&[]), Err(LoadError::NoPaths)));
    }
}
