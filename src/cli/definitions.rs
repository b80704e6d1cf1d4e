//! Reading the saga definitions `sagad serve` starts with from a folder of
//! `*.toml` files.
//!
//! The reading lives here, at the edge, because `sagad::saga` does no I/O: it
//! parses one file's text ([`definition::parse_definition`]) and this module
//! finds the files, reads them and checks that no two define the same name.
//!
//! Guarantees:
//! - Files are read in name order, so which of two duplicates is "first" does
//!   not depend on the directory's order.
//! - Only `*.toml` files count; anything else in the folder is ignored.
//! - Any failure stops the start and names the path (and, for a bad file, the
//!   line): a server never runs with part of its definitions.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use sagad::saga::{Definition, DefinitionError, definition};

/// Why the definitions folder cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The folder or one of its files cannot be read.
    #[error("cannot read saga definitions from {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Two files define the same name: which one a `StartSaga` means would be
    /// a guess.
    #[error("{path}: definition '{name}' is already defined in {first}")]
    Duplicate {
        path: PathBuf,
        name: String,
        first: PathBuf,
    },
    /// A file does not parse or validate (its error names path and line).
    #[error(transparent)]
    Definition(#[from] DefinitionError),
}

/// Loads every `*.toml` file of `dir`, in name order. A missing directory is an
/// error naming it; so is any file that does not parse or validate.
pub fn load_dir(dir: &Path) -> Result<Vec<Definition>, LoadError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| LoadError::Io { path, source }
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(io(dir))?;
    paths.retain(|p| p.extension().is_some_and(|e| e == "toml"));
    paths.sort();
    let mut by_name: HashMap<String, PathBuf> = HashMap::new();
    let mut definitions = Vec::with_capacity(paths.len());
    for path in paths {
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        let definition = definition::parse_definition(&path, &text)?;
        if let Some(first) = by_name.get(&definition.name) {
            return Err(LoadError::Duplicate {
                path,
                name: definition.name,
                first: first.clone(),
            });
        }
        by_name.insert(definition.name.clone(), path);
        definitions.push(definition);
    }
    Ok(definitions)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEPS: &str = "[[steps]]\nname = \"a\"\nparticipant = \"p\"\n";

    #[test]
    fn loads_toml_files_in_name_order_and_ignores_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.toml"), STEPS).unwrap();
        std::fs::write(dir.path().join("a.toml"), STEPS).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a definition").unwrap();
        let names: Vec<_> = load_dir(dir.path())
            .unwrap()
            .into_iter()
            .map(|d| d.name)
            .collect();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn a_missing_folder_a_bad_file_or_a_duplicate_name_stops_the_load() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nowhere");
        let err = load_dir(&missing).unwrap_err().to_string();
        assert!(
            err.starts_with("cannot read saga definitions from"),
            "{err}"
        );
        assert!(err.contains("nowhere"), "{err}");

        std::fs::write(dir.path().join("a.toml"), STEPS).unwrap();
        let named_a = format!("name = \"a\"\n{STEPS}");
        std::fs::write(dir.path().join("b.toml"), named_a).unwrap();
        let err = load_dir(dir.path()).unwrap_err();
        assert!(matches!(err, LoadError::Duplicate { .. }), "{err}");
        assert!(err.to_string().contains("already defined in"), "{err}");

        std::fs::write(dir.path().join("b.toml"), "colour = \"red\"\n").unwrap();
        let err = load_dir(dir.path()).unwrap_err();
        assert!(matches!(err, LoadError::Definition(_)), "{err}");
        assert!(err.to_string().contains("b.toml:1:"), "{err}");
    }
}
