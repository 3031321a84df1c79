//! The Lua state a method runs in: what a script can reach, and the limits
//! that stop it.
//!
//! A script sees the safe parts of the standard library (`string` without
//! `dump`, `table`, `math`, `utf8`, `os.time/clock/date`), a `require` that
//! loads only from the `lib/` folders of the method directories, a `load`
//! that takes only text, and the `vpoller` module. There is no `io`, no other
//! `os`, no `debug`, no `package`, no `coroutine`, no binary chunks.
//!
//! Limits are per call. A count hook charges the instruction budget and
//! checks the wall-clock deadline; `pcall` and `xpcall` re-raise once a limit
//! is spent, so a script cannot catch its way past one. Memory is capped per
//! state, and each concurrent call has a state of its own. The same hook
//! yields to the async runtime every half millisecond, so a busy script
//! shares its thread with the other calls.

use mlua::chunk::ChunkMode;
use mlua::{
    Function, HookTriggers, Lua, LuaOptions, LuaSerdeExt, MultiValue, StdLib, Table, Value, VmState,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::limits::Limits;

/// How many instructions run between two hook calls.
const HOOK_STEP: u32 = 1000;
/// How long a script may run before yielding to the other calls.
const YIELD_AFTER: Duration = Duration::from_micros(500);

/// The per-call accounting the hook reads.
pub(crate) struct Budget {
    pub script: String,
    pub instructions_left: i64,
    pub instruction_budget: u64,
    pub deadline: Instant,
    pub timeout: Duration,
    /// Set once a limit is spent, so that `pcall` can re-raise it.
    pub spent: Option<String>,
    last_yield: Instant,
    /// Only the call's own thread may be yielded from the hook.
    pub can_yield: bool,
}

impl Budget {
    pub fn new(script: &str, limits: &Limits) -> Budget {
        let now = Instant::now();
        Budget {
            script: script.to_string(),
            instructions_left: limits.instructions as i64,
            instruction_budget: limits.instructions,
            deadline: now + limits.timeout,
            timeout: limits.timeout,
            spent: None,
            last_yield: now,
            can_yield: false,
        }
    }

    /// Lets the hook yield to the runtime (for calls driven as async threads).
    pub fn yielding(mut self) -> Budget {
        self.can_yield = true;
        self
    }

    pub fn deadline_message(&self) -> String {
        format!(
            "wall-clock deadline of {:?} exceeded in {}",
            self.timeout, self.script
        )
    }
}

/// Where `require` looks: the `lib/` folder of each method directory, the
/// highest-precedence directory first.
#[derive(Clone)]
pub struct LibDirs(pub Arc<Vec<PathBuf>>);

/// Makes a sandboxed state. The returned state has no budget set; callers
/// install one with [`set_budget`] before running anything in it.
pub(crate) fn new_state(lib_dirs: LibDirs, memory_limit: usize) -> mlua::Result<Lua> {
    let lua = Lua::new_with(
        StdLib::STRING | StdLib::TABLE | StdLib::MATH | StdLib::UTF8 | StdLib::OS,
        LuaOptions::default(),
    )?;
    lua.set_app_data(lib_dirs);
    lua.set_app_data(Budget::new("(no script)", &Limits::default()));
    // A call makes a few short-lived tables and strings and ends: the
    // generational collector frees them in cheap minor cycles, where the
    // incremental one re-marked the state's scripts and libraries.
    lua.gc_set_mode(mlua::state::GcMode::Generational(
        mlua::state::GcGenParams::default(),
    ));
    let base = safe_base(&lua)?;
    install_guarded_calls(&lua, &base)?;
    lua.set_named_registry_value("vpoller.base", base)?;
    lua.set_named_registry_value("vpoller.loaded", lua.create_table()?)?;
    lua.set_global_hook(
        HookTriggers::new().every_nth_instruction(HOOK_STEP),
        charge_budget,
    )?;
    // Drop the real globals: scripts only ever see their own environments.
    let globals = lua.globals();
    for name in [
        "os",
        "load",
        "dofile",
        "loadfile",
        "collectgarbage",
        "require",
        "package",
    ] {
        globals.set(name, Value::Nil)?;
    }
    lua.set_memory_limit(memory_limit)?;
    Ok(lua)
}

/// What every script's environment reads through to: the safe part of the
/// standard library, and vpoller's own functions.
fn safe_base(lua: &Lua) -> mlua::Result<Table> {
    let globals = lua.globals();
    let string: Table = globals.get("string")?;
    string.set("dump", Value::Nil)?;
    let os: Table = globals.get("os")?;
    let safe_os = lua.create_table()?;
    for name in ["time", "clock", "date"] {
        safe_os.set(name, os.get::<Value>(name)?)?;
    }
    let base = lua.create_table()?;
    for name in [
        "assert",
        "error",
        "ipairs",
        "next",
        "pairs",
        "rawequal",
        "rawget",
        "rawlen",
        "rawset",
        "select",
        "setmetatable",
        "tonumber",
        "tostring",
        "type",
        "_VERSION",
        "string",
        "table",
        "math",
        "utf8",
    ] {
        base.set(name, globals.get::<Value>(name)?)?;
    }
    base.set("os", safe_os)?;
    base.set(
        "unpack",
        globals.get::<Table>("table")?.get::<Value>("unpack")?,
    )?;
    base.set("require", lua.create_function(require)?)?;
    base.set("load", lua.create_function(load_text)?)?;
    base.set("print", lua.create_function(print)?)?;
    base.set("vpoller", vpoller_module(lua)?)?;
    Ok(base)
}

/// `pcall`/`xpcall` that cannot swallow a spent limit, a `getmetatable`
/// that does not hand out the shared string metatable, and the wrapper
/// that gives scripts `ctx` (see [`GUARDS`]).
fn install_guarded_calls(lua: &Lua, base: &Table) -> mlua::Result<()> {
    let globals = lua.globals();
    let spent = lua.create_function(|lua, ()| {
        Ok(lua.app_data_ref::<Budget>().and_then(|b| b.spent.clone()))
    })?;
    let wrappers: Function = lua
        .load(GUARDS)
        .set_name("=sandbox")
        .set_mode(ChunkMode::Text)
        .into_function()?;
    let table: Table = globals.get("table")?;
    let (pcall, xpcall, getmetatable, wrap_ctx): (Function, Function, Function, Function) =
        wrappers.call((
            globals.get::<Function>("pcall")?,
            globals.get::<Function>("xpcall")?,
            globals.get::<Function>("getmetatable")?,
            spent,
            globals.get::<Function>("error")?,
            globals.get::<Function>("type")?,
            globals.get::<Function>("tostring")?,
            globals.get::<Function>("setmetatable")?,
            table.get::<Function>("pack")?,
            table.get::<Function>("unpack")?,
            lua.create_function(super::ctx::describe_failure)?,
        ))?;
    base.set("pcall", pcall)?;
    base.set("xpcall", xpcall)?;
    base.set("getmetatable", getmetatable)?;
    lua.set_named_registry_value("vpoller.wrap_ctx", wrap_ctx)?;
    Ok(())
}

/// The Lua side of [`install_guarded_calls`].
const GUARDS: &str = r#"
local raw_pcall, raw_xpcall, raw_getmetatable, spent, error, type, tostring, setmetatable, pack, unpack, describe = ...
-- A failed ctx call raises a table: kind, message, reason, agent,
-- and fault and host where known. It prints as its message.
local failure_meta = {
  __tostring = function(e) return e.message end,
  __concat = function(a, b) return tostring(a) .. tostring(b) end,
  __metatable = false,
}
local function check(...)
  local s = spent()
  if s then error(s, 0) end
  return ...
end
-- A failed ctx call raises its message at the script's line,
-- without the Rust-side decoration.
local function clean(e)
  e = tostring(e):gsub("^runtime error: ", ""):gsub("\nstack traceback:.*$", "")
  return e
end
local function wrap_ctx(ud)
  local proxy = {}
  return setmetatable(proxy, {
    __index = function(_, key)
      local v = ud[key]
      if type(v) ~= "function" then return v end
      local f = function(_, ...)
        local r = pack(raw_pcall(v, ud, ...))
        if not r[1] then
          local s = spent()
          if s then error(s, 0) end
          -- error("", 3) from here names the script's line.
          local _, where = raw_pcall(error, "", 3)
          local e = describe(r[2])
          e.agent = ud.agent
          e.message = (where or "") .. clean(e.reason)
          error(setmetatable(e, failure_meta), 0)
        end
        return unpack(r, 2, r.n)
      end
      proxy[key] = f
      return f
    end,
    __metatable = false,
  })
end
return function(...) return check(raw_pcall(...)) end,
       function(...) return check(raw_xpcall(...)) end,
       function(v)
         if type(v) == "string" then return nil end
         return raw_getmetatable(v)
       end,
       wrap_ctx
"#;

/// The instruction hook: charges the instruction budget, enforces the
/// deadline, grows the call's memory share, and yields to the other calls.
fn charge_budget(lua: &Lua, _debug: &mlua::debug::Debug) -> mlua::Result<VmState> {
    let Some(mut b) = lua.app_data_mut::<Budget>() else {
        return Ok(VmState::Continue);
    };
    if let Some(spent) = &b.spent {
        return Err(mlua::Error::RuntimeError(spent.clone()));
    }
    b.instructions_left -= HOOK_STEP as i64;
    if b.instructions_left < 0 {
        let message = format!(
            "instruction budget of {} exhausted in {}",
            b.instruction_budget, b.script
        );
        b.spent = Some(message.clone());
        return Err(mlua::Error::RuntimeError(message));
    }
    let now = Instant::now();
    if now >= b.deadline {
        let message = b.deadline_message();
        b.spent = Some(message.clone());
        return Err(mlua::Error::RuntimeError(message));
    }
    drop(b);
    super::memory::Reservation::make_room(lua, 0);
    let Some(mut b) = lua.app_data_mut::<Budget>() else {
        return Ok(VmState::Continue);
    };
    if b.can_yield && now.duration_since(b.last_yield) >= YIELD_AFTER {
        b.last_yield = now;
        return Ok(VmState::Yield);
    }
    Ok(VmState::Continue)
}

/// Installs the budget for the next call in this state.
pub(crate) fn set_budget(lua: &Lua, budget: Budget) {
    lua.set_app_data(budget);
}

/// Records that a limit was spent outside the hook (the deadline passed
/// while the script waited, or memory ran out).
pub(crate) fn mark_spent(lua: &Lua, message: &str) {
    if let Some(mut b) = lua.app_data_mut::<Budget>() {
        b.spent = Some(message.to_string());
    }
}

/// Whether a limit was spent during the last call (the state is then not
/// worth keeping).
pub(crate) fn limit_spent(lua: &Lua) -> Option<String> {
    lua.app_data_ref::<Budget>().and_then(|b| b.spent.clone())
}

/// A fresh environment for one chunk: its own globals, reading through to
/// the shared sandbox base.
pub(crate) fn new_env(lua: &Lua) -> mlua::Result<Table> {
    let base: Table = lua.named_registry_value("vpoller.base")?;
    let env = lua.create_table()?;
    let meta = lua.create_table()?;
    meta.set("__index", base)?;
    env.set_metatable(Some(meta))?;
    Ok(env)
}

/// Loads a script file's text as a chunk named after its path (so errors
/// read `path:line:`), in text mode, with its own environment.
pub(crate) fn load_file(lua: &Lua, path: &Path, source: &str) -> mlua::Result<Function> {
    lua.load(source)
        .set_name(format!("@{}", path.display()))
        .set_mode(ChunkMode::Text)
        .set_environment(new_env(lua)?)
        .into_function()
}

fn require(lua: &Lua, name: String) -> mlua::Result<Value> {
    let valid = !name.is_empty()
        && name.split('.').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        });
    if !valid {
        return Err(mlua::Error::RuntimeError(format!(
            "require: {name:?} is not a module name (letters, digits, _ and - separated by dots); \
             modules are loaded only from the lib/ folders of the method directories"
        )));
    }
    let loaded: Table = lua.named_registry_value("vpoller.loaded")?;
    if let Some(v) = loaded.get::<Option<Value>>(name.as_str())? {
        return Ok(v);
    }
    let dirs = lua
        .app_data_ref::<LibDirs>()
        .map(|d| d.0.clone())
        .unwrap_or_default();
    let relative = format!("{}.lua", name.replace('.', "/"));
    let Some(path) = dirs.iter().map(|d| d.join(&relative)).find(|p| p.is_file()) else {
        let searched: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        return Err(mlua::Error::RuntimeError(format!(
            "require: module {name:?} not found in {}",
            searched.join(", ")
        )));
    };
    let source = std::fs::read_to_string(&path).map_err(|e| {
        mlua::Error::RuntimeError(format!("require: cannot read {}: {e}", path.display()))
    })?;
    let chunk = load_file(lua, &path, &source)?;
    let value: Value = chunk.call(name.as_str())?;
    let value = if value.is_nil() {
        Value::Boolean(true)
    } else {
        value
    };
    loaded.set(name.as_str(), value.clone())?;
    Ok(value)
}

fn load_text(
    lua: &Lua,
    (chunk, chunk_name, _mode, env): (Value, Option<String>, Option<String>, Option<Table>),
) -> mlua::Result<MultiValue> {
    let text = match chunk {
        Value::String(s) => s.to_str()?.to_string(),
        other => {
            return Err(mlua::Error::RuntimeError(format!(
                "load: only a string chunk is accepted, not a {}",
                other.type_name()
            )));
        }
    };
    if text.starts_with('\x1b') {
        return Err(mlua::Error::RuntimeError(
            "load: binary (precompiled) chunks are not allowed".into(),
        ));
    }
    let env = match env {
        Some(e) => e,
        None => new_env(lua)?,
    };
    let loaded = lua
        .load(&text)
        .set_name(format!(
            "={}",
            chunk_name.unwrap_or_else(|| "(load)".into())
        ))
        .set_mode(ChunkMode::Text)
        .set_environment(env)
        .into_function();
    // Like Lua's load: nil and the message on a syntax error.
    match loaded {
        Ok(f) => Ok(MultiValue::from_iter([Value::Function(f)])),
        Err(e) => Ok(MultiValue::from_iter([
            Value::Nil,
            Value::String(lua.create_string(e.to_string())?),
        ])),
    }
}

fn print(lua: &Lua, args: MultiValue) -> mlua::Result<()> {
    let script = lua
        .app_data_ref::<Budget>()
        .map(|b| b.script.clone())
        .unwrap_or_default();
    let text: Vec<String> = args
        .iter()
        .map(|v| {
            v.to_string()
                .unwrap_or_else(|_| format!("<{}>", v.type_name()))
        })
        .collect();
    tracing::info!(script = %script, "{}", text.join("\t"));
    Ok(())
}

/// The `vpoller` module: `null`, `log`, and JSON.
fn vpoller_module(lua: &Lua) -> mlua::Result<Table> {
    let m = lua.create_table()?;
    m.set("null", lua.null())?;
    m.set("api", 1)?;
    m.set("log", lua.create_function(print)?)?;
    let json = lua.create_table()?;
    json.set(
        "encode",
        lua.create_function(|lua, v: Value| {
            let value = super::convert::from_lua(lua, v)?;
            serde_json::to_string(&value).map_err(mlua::Error::external)
        })?,
    )?;
    json.set(
        "decode",
        lua.create_function(|lua, text: String| {
            let value: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| mlua::Error::RuntimeError(format!("json.decode: {e}")))?;
            super::convert::to_lua(lua, &value)
        })?,
    )?;
    json.set(
        "python",
        lua.create_function(
            |lua, (v, indent, ensure_ascii): (Value, Option<usize>, Option<bool>)| {
                let value = super::convert::from_lua(lua, v)?;
                let ascii = ensure_ascii.unwrap_or(true);
                Ok(super::pyjson::dumps_with(&value, indent, ascii))
            },
        )?,
    )?;
    m.set("json", json)?;
    Ok(m)
}
