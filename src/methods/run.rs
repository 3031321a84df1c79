//! Running one method call in a Lua state of its own.
//!
//! States are pooled: a call takes an idle state (or makes one, about 100 µs),
//! and gives it back when it ends cleanly. A state made under an older
//! catalog generation is dropped instead, so a call always starts on the
//! current scripts while calls already running finish on theirs. A state
//! whose call hit a limit is dropped too.

use mlua::{Function, Lua, MultiValue, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::catalog::{MethodSpec, compile_run};
use super::convert::{from_lua, to_lua, to_lua_keeping_nulls};
use super::ctx::Ctx;
use super::limits::Limits;
use super::memory::{MemoryPool, Reservation};
use super::reply::Reply;
use super::sandbox::{self, Budget, LibDirs};

/// The message of a successful call whose script did not set one.
pub const DEFAULT_SUCCESS_MSG: &str = "Success";

pub(crate) struct PooledState {
    lua: Lua,
    generation: u64,
    runs: HashMap<String, Function>,
}

/// Idle states, ready for the next call.
pub(crate) struct StatePool {
    idle: Mutex<Vec<PooledState>>,
    max_idle: usize,
}

impl StatePool {
    pub fn new(max_idle: usize) -> StatePool {
        StatePool {
            idle: Mutex::new(Vec::new()),
            max_idle,
        }
    }

    fn take(
        &self,
        generation: u64,
        lib_dirs: &LibDirs,
        limits: &Limits,
    ) -> mlua::Result<PooledState> {
        if let Ok(mut idle) = self.idle.lock() {
            idle.retain(|s| s.generation == generation);
            if let Some(state) = idle.pop() {
                return Ok(state);
            }
        }
        Ok(PooledState {
            lua: sandbox::new_state(lib_dirs.clone(), limits.memory)?,
            generation,
            runs: HashMap::new(),
        })
    }

    fn give_back(&self, state: PooledState) {
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < self.max_idle
        {
            idle.push(state);
        }
    }
}

/// Everything one call needs.
pub(crate) struct Call {
    pub spec: Arc<MethodSpec>,
    pub generation: u64,
    pub lib_dirs: LibDirs,
    pub limits: Limits,
    pub memory: Arc<MemoryPool>,
    pub request: serde_json::Value,
    pub ctx: Ctx,
    /// The output helper the request named, if it is loaded.
    pub helper: Option<Arc<MethodSpec>>,
}

/// Runs a call to its reply. Never panics on what the script does.
pub(crate) async fn run(pool: &StatePool, call: Call) -> Reply {
    let spec = call.spec.clone();
    let script = format!("{} ({})", spec.name, spec.file.display());
    let mut state = match pool.take(call.generation, &call.lib_dirs, &call.limits) {
        Ok(s) => s,
        Err(e) => return Reply::error(format!("{}: cannot make a Lua state: {e}", spec.name)),
    };
    let per_call = call.limits.memory;
    // A failed call still gets its helper: a C client reads up to a NUL.
    let for_helper = call.helper.clone().map(|h| {
        let context = (call.generation, call.lib_dirs.clone(), call.limits.clone());
        (h, call.request.clone(), context, call.memory.clone())
    });
    let outcome = run_in(&mut state, call, &script).await;
    Reservation::end(&state.lua, per_call);
    let reusable = outcome.is_ok() && sandbox::limit_spent(&state.lua).is_none();
    if reusable {
        pool.give_back(state);
    }
    match outcome {
        Ok(reply) => reply,
        Err(message) => {
            tracing::warn!(method = %spec.name, "{message}");
            let error = Reply {
                script_failed: true,
                ..Reply::error(message)
            };
            match for_helper {
                Some((helper, request, (generation, lib_dirs, limits), memory)) => {
                    let context = Refusal {
                        generation,
                        lib_dirs: &lib_dirs,
                        limits: &limits,
                        memory: &memory,
                    };
                    apply_helper(pool, context, &helper, error, &request).await
                }
                None => error,
            }
        }
    }
}

async fn run_in(state: &mut PooledState, call: Call, script: &str) -> Result<Reply, String> {
    let lua = state.lua.clone();
    let spec = &call.spec;
    let limits = &call.limits;

    sandbox::set_budget(&lua, Budget::new(script, &Limits::for_loading()));
    let run_fn = state.compiled(spec)?;

    Reservation::start(&lua, &call.memory, limits.memory)
        .map_err(|e| format!("{}: {e}", spec.name))?;
    let budget = Budget::new(script, limits).yielding();
    let deadline_message = budget.deadline_message();
    sandbox::set_budget(&lua, budget);

    let request = to_lua(&lua, &call.request).map_err(|e| format!("{script}: request: {e}"))?;
    let ctx = lua
        .create_userdata(call.ctx)
        .and_then(|ud| {
            let wrap: Function = lua.named_registry_value("vpoller.wrap_ctx")?;
            wrap.call::<Value>(ud)
        })
        .map_err(|e| format!("{script}: {e}"))?;
    let thread = lua
        .create_thread(run_fn)
        .map_err(|e| format!("{script}: {e}"))?;
    let running = thread
        .into_async::<MultiValue>((ctx, request))
        .map_err(|e| format!("{script}: {e}"))?;

    let finished = tokio::time::timeout(limits.timeout, running).await;
    let values = match finished {
        Err(_) => {
            // The coroutine is abandoned mid-call; the state goes with it.
            sandbox::mark_spent(&lua, &deadline_message);
            return Err(deadline_message);
        }
        Ok(Err(e)) => {
            if let Some(spent) = sandbox::limit_spent(&lua) {
                return Err(spent);
            }
            if is_memory_error(&e) {
                let message = match Reservation::starved(&lua) {
                    Some(total) => format!(
                        "the memory budget of all Lua calls in flight ({} MiB) was used up while {script} ran",
                        total >> 20
                    ),
                    None => format!(
                        "memory limit of {} MiB exceeded in {script}",
                        limits.memory >> 20
                    ),
                };
                sandbox::mark_spent(&lua, &message);
                return Err(message);
            }
            return Err(super::error_text(&e));
        }
        Ok(Ok(values)) => values,
    };
    let mut reply = shape_reply(&lua, &spec.name, values);
    if let Some(helper) = &call.helper {
        reply = helper_output(state, helper, reply, &call.request, limits).await?;
    }
    Ok(reply)
}

impl PooledState {
    /// A script's `run`, compiled in this state once.
    fn compiled(&mut self, spec: &MethodSpec) -> Result<Function, String> {
        let key = spec.file.display().to_string();
        if let Some(f) = self.runs.get(&key) {
            return Ok(f.clone());
        }
        let f = compile_run(&self.lua, spec).map_err(|e| super::error_text(&e))?;
        self.runs.insert(key, f.clone());
        Ok(f)
    }
}

/// What an output helper makes of a reply: its text, or an error reply
/// that says why there is none.
async fn helper_output(
    state: &mut PooledState,
    helper: &MethodSpec,
    reply: Reply,
    request: &serde_json::Value,
    limits: &Limits,
) -> Result<Reply, String> {
    let lua = state.lua.clone();
    let helper_fn = state.compiled(helper)?;
    let script = format!("{} ({})", helper.name, helper.file.display());
    sandbox::set_budget(&lua, Budget::new(&script, limits).yielding());
    let args = to_lua_keeping_nulls(&lua, &reply.to_json())
        .and_then(|r| Ok((r, to_lua(&lua, request)?)))
        .map_err(|e| format!("{script}: {e}"))?;
    let made = tokio::time::timeout(limits.timeout, helper_fn.call_async::<Value>(args)).await;
    Ok(match made {
        Ok(Ok(Value::String(s))) => Reply {
            raw: Some(s.to_string_lossy().to_string()),
            ..reply
        },
        Ok(Ok(other)) => Reply::error(format!(
            "helper {} returned a {}, not text",
            helper.name,
            other.type_name()
        )),
        Ok(Err(e)) => Reply::error(format!(
            "helper {} failed: {}",
            helper.name,
            super::error_text(&e)
        )),
        Err(_) => {
            return Err(format!(
                "wall-clock deadline of {:?} exceeded in {script}",
                limits.timeout
            ));
        }
    })
}

/// Applies a helper to a reply made without running a method (the request
/// was refused before that), so that a C client still gets its NUL.
pub(crate) struct Refusal<'a> {
    pub generation: u64,
    pub lib_dirs: &'a LibDirs,
    pub limits: &'a Limits,
    pub memory: &'a Arc<MemoryPool>,
}

pub(crate) async fn apply_helper(
    pool: &StatePool,
    refusal: Refusal<'_>,
    helper: &MethodSpec,
    reply: Reply,
    request: &serde_json::Value,
) -> Reply {
    let limits = refusal.limits;
    let mut state = match pool.take(refusal.generation, refusal.lib_dirs, limits) {
        Ok(s) => s,
        Err(_) => return reply,
    };
    let fallback = reply.clone();
    if Reservation::start(&state.lua, refusal.memory, limits.memory).is_err() {
        return fallback;
    }
    let made = helper_output(&mut state, helper, reply, request, limits).await;
    Reservation::end(&state.lua, limits.memory);
    match made {
        Ok(out) => {
            if sandbox::limit_spent(&state.lua).is_none() {
                pool.give_back(state);
            }
            out
        }
        Err(e) => {
            tracing::warn!(helper = %helper.name, "{e}");
            fallback
        }
    }
}

/// Whether a call failed because Lua ran out of its memory share.
pub(crate) fn is_memory_error(e: &mlua::Error) -> bool {
    match e {
        mlua::Error::MemoryError(_) => true,
        mlua::Error::CallbackError { cause, .. } => is_memory_error(cause),
        mlua::Error::WithContext { cause, .. } => is_memory_error(cause),
        mlua::Error::RuntimeError(m) => m.contains("not enough memory"),
        _ => false,
    }
}

/// `return result[, msg]` is success; `return nil, msg` is a failure with
/// exactly that message.
fn shape_reply(lua: &Lua, method: &str, values: MultiValue) -> Reply {
    let mut values = values.into_iter();
    let first = values.next().unwrap_or(Value::Nil);
    let second = values.next().unwrap_or(Value::Nil);
    let msg = match &second {
        Value::String(s) => Some(s.to_string_lossy().to_string()),
        Value::Nil => None,
        other => Some(other.to_string().unwrap_or_default()),
    };
    if first.is_nil() {
        return Reply::error(msg.unwrap_or_else(|| {
            format!("method {method} returned nothing (return a result, or nil and a message)")
        }));
    }
    match from_lua(lua, first) {
        Ok(result) => Reply::ok(
            msg.unwrap_or_else(|| DEFAULT_SUCCESS_MSG.to_string()),
            result,
        ),
        Err(e) => Reply::error(format!(
            "method {method} returned a value that cannot be sent as JSON: {}",
            super::error_text(&e)
        )),
    }
}
