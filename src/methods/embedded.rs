//! The built-in methods, embedded in the binary at build time, so that a
//! binary copied anywhere (or installed without its share/ directory) still
//! has them. When no built-in directory is found on disk, they are written
//! once per process to a private directory (mode 0700, removed at exit)
//! and loaded from there like any other; `vpoller methods export DIR`
//! writes them out for reading or overriding.

use include_dir::{Dir, include_dir};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

static METHODS: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/methods");

/// The private directory the embedded methods were written to, if they
/// were; statics are never dropped, so [`remove_extracted`] removes it.
static EXTRACTED: Mutex<Option<tempfile::TempDir>> = Mutex::new(None);

/// Writes every embedded file under `dir`; returns how many.
pub fn export(dir: &Path) -> Result<usize, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    write_dir(&METHODS, dir)
}

fn write_dir(source: &Dir<'_>, into: &Path) -> Result<usize, String> {
    let mut written = 0;
    for file in source.files() {
        let path = into.join(file.path());
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        std::fs::write(&path, file.contents())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        written += 1;
    }
    for sub in source.dirs() {
        written += write_dir(sub, into)?;
    }
    Ok(written)
}

/// The embedded methods as a directory, written out on first use.
pub fn extracted() -> Result<PathBuf, String> {
    let mut slot = EXTRACTED
        .lock()
        .map_err(|_| "the built-in methods' directory is poisoned".to_string())?;
    if let Some(dir) = slot.as_ref() {
        return Ok(dir.path().to_path_buf());
    }
    let dir = tempfile::Builder::new()
        .prefix("vpoller-methods-")
        .tempdir()
        .map_err(|e| format!("cannot make a directory for the built-in methods: {e}"))?;
    export(dir.path())?;
    let path = dir.path().to_path_buf();
    *slot = Some(dir);
    Ok(path)
}

/// Whether `path` is one of the embedded methods as written out.
pub fn is_extracted(path: &Path) -> bool {
    EXTRACTED
        .lock()
        .ok()
        .and_then(|d| d.as_ref().map(|d| path.starts_with(d.path())))
        .unwrap_or(false)
}

/// Removes the written-out copy (at exit).
pub fn remove_extracted() {
    if let Ok(mut slot) = EXTRACTED.lock() {
        drop(slot.take());
    }
}

/// How many methods are embedded (scripts at the top level).
pub fn count() -> usize {
    METHODS
        .files()
        .filter(|f| f.path().extension().is_some_and(|e| e == "lua"))
        .count()
}
