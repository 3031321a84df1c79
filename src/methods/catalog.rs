//! The catalog of method scripts: which file serves which method name.
//!
//! Scripts live directly in the method directories (`*.lua`); shared code
//! lives in each directory's `lib/`. A directory given later overrides an
//! earlier one, and the admin directories override the built-in one. A
//! catalog is an immutable snapshot; reloading builds a new one from the
//! previous, keeping the last good version of a script that no longer loads.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use mlua::{Function, Table, Value};

use super::limits::Limits;
use super::sandbox::{self, Budget, LibDirs};

/// The script contract version this host speaks.
pub const API_VERSION: i64 = 1;

/// What a method script declared.
#[derive(Debug)]
pub struct MethodSpec {
    pub name: String,
    pub description: String,
    /// Request fields that must be present and not null.
    pub required: Vec<String>,
    /// Whether a request may be run again when its first worker was lost
    /// mid-way: true for reads (every built-in method), false for a script
    /// that changes something through `ctx:call`.
    pub repeatable: bool,
    pub file: PathBuf,
    pub source: Arc<str>,
}

/// Where method scripts come from, lowest precedence first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MethodDirs {
    pub builtin: Option<PathBuf>,
    /// Admin directories; a later one overrides an earlier one.
    pub admin: Vec<PathBuf>,
}

impl MethodDirs {
    /// All directories, lowest precedence first.
    pub fn ordered(&self) -> Vec<PathBuf> {
        self.builtin
            .iter()
            .chain(self.admin.iter())
            .cloned()
            .collect()
    }

    /// The `lib/` folders `require` searches, highest precedence first.
    /// The error for a catalogue with nothing in it: a process without
    /// methods stops at start-up, never serves an empty catalogue.
    pub fn nothing_loaded(&self) -> String {
        let looked: Vec<String> = self
            .ordered()
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        format!(
            "no methods loaded (looked in: {}); give --builtin-methods DIR or --methods-dir DIR",
            if looked.is_empty() {
                "nowhere".to_string()
            } else {
                looked.join(", ")
            }
        )
    }

    pub fn lib_dirs(&self) -> LibDirs {
        LibDirs(Arc::new(
            self.ordered().iter().rev().map(|d| d.join("lib")).collect(),
        ))
    }
}

#[derive(Debug, Clone)]
struct FileState {
    source: Arc<str>,
    /// The spec from this file's last good load, if it ever loaded.
    good: Option<Arc<MethodSpec>>,
    error: Option<String>,
}

/// One snapshot of the catalog.
#[derive(Debug, Default)]
pub struct Catalog {
    /// Bumped whenever anything a running state depends on changes.
    pub generation: u64,
    pub methods: BTreeMap<String, Arc<MethodSpec>>,
    /// Output helpers (`helpers/*.lua`), by the name requests give in `helper`.
    pub helpers: BTreeMap<String, Arc<MethodSpec>>,
    /// What is wrong right now (scripts that do not load, duplicate names),
    /// each naming the file and line.
    pub problems: Vec<String>,
    pub dirs: MethodDirs,
    files: HashMap<PathBuf, FileState>,
    lib_stamp: Vec<(PathBuf, Option<SystemTime>, u64)>,
    /// Some method says `repeatable = false`; known at load, so that a
    /// worker asks no more of a request than this unless it must.
    unrepeatable: bool,
}

impl Catalog {
    /// Whether some method may not be run twice (see
    /// [`MethodSpec::repeatable`]).
    pub fn has_unrepeatable(&self) -> bool {
        self.unrepeatable
    }

    /// Scans the directories, re-using what did not change since `previous`.
    pub fn load(dirs: &MethodDirs, previous: Option<&Catalog>) -> Catalog {
        let mut scan = Scan {
            lib_dirs: dirs.lib_dirs(),
            previous,
            files: HashMap::new(),
            problems: Vec::new(),
        };
        let methods = scan.collect(dirs, None, previous.map(|p| &p.methods));
        let helpers = scan.collect(dirs, Some("helpers"), previous.map(|p| &p.helpers));
        let Scan {
            files, problems, ..
        } = scan;

        let lib_stamp = lib_stamp(dirs);
        let mut generation = previous.map_or(1, |p| p.generation);
        if let Some(p) = previous {
            if !same(&p.methods, &methods)
                || !same(&p.helpers, &helpers)
                || p.lib_stamp != lib_stamp
                || p.dirs != *dirs
            {
                generation += 1;
            }
        }
        Catalog {
            generation,
            unrepeatable: methods.values().any(|m| !m.repeatable),
            methods,
            helpers,
            problems,
            dirs: dirs.clone(),
            files,
            lib_stamp,
        }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<MethodSpec>> {
        self.methods.get(name)
    }
}

type Scripts = BTreeMap<String, Arc<MethodSpec>>;

fn same(a: &Scripts, b: &Scripts) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b.iter())
            .all(|((n1, s1), (n2, s2))| n1 == n2 && Arc::ptr_eq(s1, s2))
}

/// One pass over the method directories.
struct Scan<'p> {
    lib_dirs: LibDirs,
    previous: Option<&'p Catalog>,
    files: HashMap<PathBuf, FileState>,
    problems: Vec<String>,
}

impl Scan<'_> {
    /// The scripts of every directory (or of its `sub` folder), a later
    /// directory overriding an earlier one; two scripts of one directory
    /// with one name are a problem, and the one live before stays live.
    fn collect(&mut self, dirs: &MethodDirs, sub: Option<&str>, live: Option<&Scripts>) -> Scripts {
        let mut scripts = Scripts::new();
        for dir in dirs.ordered() {
            let dir = match sub {
                Some(s) => dir.join(s),
                None => dir,
            };
            let mut level = Scripts::new();
            for path in script_files(&dir) {
                let previous = self.previous.and_then(|p| p.files.get(&path));
                let state = load_file(&path, previous, &self.lib_dirs);
                if let Some(e) = &state.error {
                    let kept = match &state.good {
                        Some(_) => " (the last good version stays live)",
                        None => "",
                    };
                    self.problems.push(format!("{e}{kept}"));
                }
                if let Some(spec) = &state.good {
                    let name = spec.name.clone();
                    match level.get(&name) {
                        Some(other) => {
                            self.problems.push(format!(
                                "method {name:?} is defined twice: in {} and in {}",
                                other.file.display(),
                                spec.file.display()
                            ));
                            let was_live = live
                                .and_then(|l| l.get(&name))
                                .is_some_and(|s| s.file == spec.file);
                            if was_live {
                                level.insert(name, spec.clone());
                            }
                        }
                        None => {
                            level.insert(name, spec.clone());
                        }
                    }
                }
                self.files.insert(path, state);
            }
            for (name, spec) in level {
                if let Some(lower) = scripts.get(&name) {
                    tracing::debug!(method = %name, "{} overrides {}", spec.file.display(), lower.file.display());
                }
                scripts.insert(name, spec);
            }
        }
        scripts
    }
}

fn script_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "lua") && p.is_file())
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    files.sort();
    files
}

fn stamp(path: &Path) -> (Option<SystemTime>, u64) {
    match std::fs::metadata(path) {
        Ok(m) => (m.modified().ok(), m.len()),
        Err(_) => (None, 0),
    }
}

fn lib_stamp(dirs: &MethodDirs) -> Vec<(PathBuf, Option<SystemTime>, u64)> {
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = dirs.lib_dirs().0.iter().cloned().collect();
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.filter_map(|e| e.ok()) {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "lua") {
                let (m, l) = stamp(&path);
                out.push((path, m, l));
            }
        }
    }
    out.sort();
    out
}

fn load_file(path: &Path, previous: Option<&FileState>, lib_dirs: &LibDirs) -> FileState {
    let source: Arc<str> = match std::fs::read_to_string(path) {
        Ok(s) => s.into(),
        Err(e) => {
            return FileState {
                source: "".into(),
                good: previous.and_then(|p| p.good.clone()),
                error: Some(format!("{}: cannot read: {e}", path.display())),
            };
        }
    };
    if let Some(p) = previous
        && p.source == source
    {
        return p.clone();
    }
    match inspect(path, source.clone(), lib_dirs) {
        Ok(spec) => FileState {
            source,
            good: Some(Arc::new(spec)),
            error: None,
        },
        Err(e) => FileState {
            source,
            good: previous.and_then(|p| p.good.clone()),
            error: Some(e),
        },
    }
}

/// Runs a script's top level in a fresh sandbox and checks what it
/// declares. Errors name the file (and line, where Lua knows it).
pub fn inspect(path: &Path, source: Arc<str>, lib_dirs: &LibDirs) -> Result<MethodSpec, String> {
    let file = path.display().to_string();
    let limits = Limits::for_loading();
    let lua = sandbox::new_state(lib_dirs.clone(), limits.memory)
        .map_err(|e| format!("{file}: cannot make a Lua state: {e}"))?;
    sandbox::set_budget(&lua, Budget::new(&file, &limits));
    let declared = sandbox::load_file(&lua, path, &source)
        .and_then(|chunk| chunk.call::<Value>(()))
        .map_err(|e| super::error_text(&e))?;
    let Value::Table(table) = declared else {
        return Err(format!(
            "{file}: a method script must return a table (got {})",
            declared.type_name()
        ));
    };
    declaration(&file, &table).map(|(name, description, required, repeatable)| MethodSpec {
        name,
        description,
        required,
        repeatable,
        file: path.to_path_buf(),
        source,
    })
}

type Declaration = (String, String, Vec<String>, bool);

fn declaration(file: &str, table: &Table) -> Result<Declaration, String> {
    let field = |name: &str| table.get::<Value>(name).unwrap_or(Value::Nil);
    match field("api") {
        Value::Integer(API_VERSION) => {}
        Value::Nil => {
            return Err(format!(
                "{file}: the script must declare api = {API_VERSION}"
            ));
        }
        other => {
            return Err(format!(
                "{file}: api = {} is not supported; this vpoller speaks api = {API_VERSION}",
                other.to_string().unwrap_or_default()
            ));
        }
    }
    let name = match field("name") {
        Value::String(s) => s.to_str().map(|s| s.to_string()).unwrap_or_default(),
        _ => {
            return Err(format!(
                "{file}: field 'name' must be a string, e.g. name = \"vm.get\""
            ));
        }
    };
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !valid {
        return Err(format!(
            "{file}: method name {name:?} must be letters, digits, '.', '_' or '-'"
        ));
    }
    let description = match field("description") {
        Value::String(s) => s.to_str().map(|s| s.to_string()).unwrap_or_default(),
        Value::Nil => String::new(),
        _ => return Err(format!("{file}: field 'description' must be a string")),
    };
    let required = match field("required") {
        Value::Nil => Vec::new(),
        Value::Table(t) => {
            let mut out = Vec::new();
            for v in t.sequence_values::<Value>() {
                match v {
                    Ok(Value::String(s)) => {
                        out.push(s.to_str().map(|s| s.to_string()).unwrap_or_default())
                    }
                    _ => return Err(format!("{file}: 'required' must be a list of field names")),
                }
            }
            out
        }
        _ => return Err(format!("{file}: 'required' must be a list of field names")),
    };
    let repeatable = match field("repeatable") {
        Value::Nil => true,
        Value::Boolean(b) => b,
        _ => return Err(format!("{file}: field 'repeatable' must be true or false")),
    };
    if !matches!(field("run"), Value::Function(_)) {
        return Err(format!(
            "{file}: field 'run' must be a function run(ctx, req)"
        ));
    }
    Ok((name, description, required, repeatable))
}

/// Loads a script in a state and returns its `run` function.
pub(crate) fn compile_run(lua: &mlua::Lua, spec: &MethodSpec) -> mlua::Result<Function> {
    let table: Table = sandbox::load_file(lua, &spec.file, &spec.source)?.call(())?;
    table.get("run")
}
