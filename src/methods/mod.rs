//! The method layer: every vPoller method is a Lua script.
//!
//! A request is dispatched by its `method` to a script from the [`catalog`],
//! run in a [`sandbox`] state under per-call [`limits`] by [`run`], with
//! [`ctx::Ctx`] as its only door to vSphere. The catalog reloads when a file
//! changes ([`watch`]). A call runs as an ordinary task on the caller's
//! async runtime: while a script waits for vSphere its state is parked, and
//! a script that computes for long yields every half millisecond (see
//! [`sandbox`]), so one busy script does not stall the others.

pub mod catalog;
pub mod convert;
pub mod ctx;
pub mod embedded;
pub mod limits;
pub mod memory;
pub mod pyjson;
pub mod reply;
pub mod run;
pub mod sandbox;
pub mod watch;

use arc_swap::ArcSwap;
use serde_json::Value;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

pub use crate::agents::Agents;
pub use catalog::{Catalog, MethodDirs, MethodSpec};
pub use limits::Limits;
pub use reply::Reply;

/// Loads, reloads and runs method scripts.
pub struct MethodHost {
    catalog: ArcSwap<Catalog>,
    dirs: MethodDirs,
    limits: Limits,
    pool: run::StatePool,
    memory: Arc<memory::MemoryPool>,
    agents: Arc<dyn Agents>,
    watch: Mutex<Option<watch::Watch>>,
}

impl MethodHost {
    /// Loads the catalog; problems with scripts are logged, not fatal.
    pub fn new(dirs: MethodDirs, limits: Limits, agents: Arc<dyn Agents>) -> Arc<MethodHost> {
        let catalog = Catalog::load(&dirs, None);
        for problem in &catalog.problems {
            tracing::error!("{problem}");
        }
        Arc::new(MethodHost {
            catalog: ArcSwap::from_pointee(catalog),
            dirs,
            memory: memory::MemoryPool::new(limits.total_memory),
            limits,
            pool: run::StatePool::new(256),
            agents,
            watch: Mutex::new(None),
        })
    }

    /// The memory budget shared by the calls in flight.
    pub fn memory(&self) -> &memory::MemoryPool {
        &self.memory
    }

    /// The live catalog.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.load_full()
    }

    /// Rescans the method directories; scripts that no longer load keep
    /// their last good version. Returns the new catalog.
    pub fn reload(&self) -> Arc<Catalog> {
        let previous = self.catalog.load_full();
        let next = Catalog::load(&self.dirs, Some(&previous));
        let old_problems: std::collections::HashSet<&String> = previous.problems.iter().collect();
        for problem in &next.problems {
            if !old_problems.contains(problem) {
                tracing::error!("{problem}");
            }
        }
        if next.generation != previous.generation {
            tracing::info!(
                generation = next.generation,
                methods = next.methods.len(),
                "method catalog reloaded"
            );
        }
        let next = Arc::new(next);
        self.catalog.store(next.clone());
        next
    }

    /// Reloads whenever a file in a method directory changes.
    pub fn watch(self: &Arc<Self>) -> Result<(), String> {
        let host = Arc::downgrade(self);
        let dirs: Vec<PathBuf> = self.dirs.ordered();
        let w = watch::watch(&dirs, move || {
            if let Some(h) = host.upgrade() {
                h.reload();
            }
        })?;
        if let Ok(mut slot) = self.watch.lock() {
            *slot = Some(w);
        }
        Ok(())
    }

    /// Handles one request. Every request gets exactly one reply.
    pub async fn handle(self: &Arc<Self>, request: Value) -> Reply {
        if !request.is_object() {
            return Reply::refusal(format!(
                "Expected a JSON object as the request, received {}",
                json_kind(&request)
            ));
        }
        let catalog = self.catalog();
        let helper = request
            .get("helper")
            .and_then(Value::as_str)
            .and_then(|h| catalog.helpers.get(h))
            .cloned();
        let admitted = self
            .limits
            .check_request(&request)
            .and_then(|()| self.admit(&catalog, &request));
        let refusal = match admitted {
            Ok((spec, agent)) => {
                let request = unset_empty_optionals(request, &spec.required);
                let call = run::Call {
                    helper,
                    spec: spec.clone(),
                    generation: catalog.generation,
                    lib_dirs: catalog.dirs.lib_dirs(),
                    limits: self.limits.clone(),
                    memory: self.memory.clone(),
                    request,
                    ctx: ctx::Ctx::new(agent, self.agents.clone()),
                };
                let started = std::time::Instant::now();
                let reply = run::run(&self.pool, call).await;
                tracing::debug!(method = %spec.name, ms = started.elapsed().as_millis() as u64, success = reply.success, "method call");
                return reply;
            }
            Err(refusal) => Reply::refusal(refusal),
        };
        // A C client asked for a NUL-terminated answer; give it one even now.
        match helper {
            Some(h) => {
                let lib_dirs = catalog.dirs.lib_dirs();
                let context = run::Refusal {
                    generation: catalog.generation,
                    lib_dirs: &lib_dirs,
                    limits: &self.limits,
                    memory: &self.memory,
                };
                run::apply_helper(&self.pool, context, &h, refusal, &request).await
            }
            None => refusal,
        }
    }

    /// The checks before a method runs, in vPoller's order: the method,
    /// the agent, the required fields. The literal `"(null)"` that the
    /// Zabbix module sends for an omitted parameter is a value, as it was
    /// for vPoller.
    fn admit(
        &self,
        catalog: &Catalog,
        request: &Value,
    ) -> Result<(Arc<MethodSpec>, String), String> {
        let spec = request
            .get("method")
            .and_then(Value::as_str)
            .and_then(|m| catalog.get(m))
            .cloned()
            .ok_or("Unknown or missing task/method name")?;
        let agent = request
            .get("hostname")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or("Unknown or missing agent name")?;
        self.agents.check(&agent)?;
        let missing: Vec<&str> = spec
            .required
            .iter()
            .filter(|f| request.get(f.as_str()).is_none_or(Value::is_null))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "Invalid task request: {} requires {}",
                spec.name,
                missing.join(", ")
            ));
        }
        Ok((spec, agent))
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A Lua error as one line a user can act on: the script's own `file:line:
/// message`, or for an error raised by a Rust callback (a failed vSphere
/// call), the message prefixed with the script line that made the call.
pub fn error_text(e: &mlua::Error) -> String {
    match e {
        // The traceback is for logs; the message is for the caller.
        mlua::Error::RuntimeError(m) => m
            .split_once("\nstack traceback:")
            .map_or(m.as_str(), |(head, _)| head)
            .to_string(),
        mlua::Error::SyntaxError { message, .. } => message.clone(),
        mlua::Error::MemoryError(m) => format!("memory limit exceeded: {m}"),
        mlua::Error::CallbackError { traceback, cause } => {
            let inner = error_text(cause);
            match script_line(traceback) {
                Some(at) if !inner.starts_with(&at) => format!("{at}: {inner}"),
                _ => inner,
            }
        }
        mlua::Error::WithContext { context, cause } => format!("{context}: {}", error_text(cause)),
        other => other.to_string(),
    }
}

/// The first `path.lua:line` in a traceback.
fn script_line(traceback: &str) -> Option<String> {
    traceback.lines().find_map(|line| {
        let line = line.trim();
        let (place, _) = line.split_once(": ")?;
        let (file, number) = place.rsplit_once(':')?;
        (file.ends_with(".lua") && number.chars().all(|c| c.is_ascii_digit()))
            .then(|| place.to_string())
    })
}

/// An empty string in a field the method does not require means "not
/// given", as it did for vPoller, whose Python read such fields with
/// `msg.get(field) or default`. Zabbix items send `""` for an unset
/// parameter (`perf-interval`, `instance`, `max-sample`, `counter-name` of
/// the info methods, `key`, `properties`), where Lua would take `""` as a
/// value. Required fields keep it: vPoller used those as given.
fn unset_empty_optionals(mut request: Value, required: &[String]) -> Value {
    const ALWAYS_GIVEN: &[&str] = &["method", "hostname", "helper"];
    if let Some(fields) = request.as_object_mut() {
        for (name, value) in fields.iter_mut() {
            let optional =
                !required.iter().any(|r| r == name) && !ALWAYS_GIVEN.contains(&name.as_str());
            if optional && value.as_str() == Some("") {
                *value = Value::Null;
            }
        }
    }
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_optionals_are_unset_and_required_fields_kept() {
        let request = serde_json::json!({"method": "vm.perf.metric.get", "hostname": "vc", "name": "",
            "counter-name": "cpu.usage.percent.average", "perf-interval": "", "instance": "", "max-sample": "",
            "key": "(null)"});
        let out = unset_empty_optionals(request, &["name".into(), "counter-name".into()]);
        assert_eq!(out["name"], "", "required: kept as vPoller did");
        assert!(
            out["perf-interval"].is_null()
                && out["instance"].is_null()
                && out["max-sample"].is_null()
        );
        assert_eq!(
            out["key"], "(null)",
            "the Zabbix module's literal stays a value"
        );
    }
}
