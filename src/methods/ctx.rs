//! `ctx`: a method's only door to vSphere.
//!
//! Every call goes through the vSphere core ([`crate::vsphere::Client`]), so
//! whatever caching or batching the core does helps every script without
//! changing it. While a call waits, the script's state is parked.

use mlua::{UserData, UserDataMethods, Value};
use serde_json::Value as Json;
use std::future::Future;
use std::ops::ControlFlow;
use std::sync::Arc;
use tokio::sync::OnceCell;

use super::convert::{from_lua, to_lua};
use crate::agents::Agents;
use crate::vsphere::perf_query::SeriesQuery;
use crate::vsphere::{Client, Error, MoRef};

/// A failed core call, as it travels through Lua to the wrapper that turns
/// it into the error value scripts see (see [`describe_failure`]).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CtxFailure {
    pub kind: &'static str,
    pub message: String,
    pub fault: Option<String>,
    pub host: Option<String>,
}

impl CtxFailure {
    fn from_core(e: &Error) -> CtxFailure {
        let host = match e {
            Error::Fault { host, .. }
            | Error::LoginFailed { host, .. }
            | Error::Timeout { host, .. }
            | Error::Transport { host, .. }
            | Error::Unavailable { host, .. }
            | Error::Tls { host, .. }
            | Error::Http { host, .. }
            | Error::Decode { host, .. }
            | Error::InvalidProperty { host, .. } => Some(host.clone()),
            Error::Encode { .. } | Error::Config(_) => None,
        };
        CtxFailure {
            kind: e.kind().as_str(),
            message: e.to_string(),
            fault: e.fault_name().map(str::to_string),
            host,
        }
    }
}

fn failed(e: Error) -> mlua::Error {
    mlua::Error::external(CtxFailure::from_core(&e))
}

/// The error value of a failed `ctx` call, without its place and agent
/// (the sandbox's wrapper adds those): `kind`, `reason`, and `fault` and
/// `host` where known. An error that did not come from the core is a
/// script's mistake in its arguments, or a spent memory share.
pub(crate) fn describe_failure(lua: &mlua::Lua, error: Value) -> mlua::Result<mlua::Table> {
    let out = lua.create_table()?;
    let (kind, reason) = match &error {
        Value::Error(e) => match e.downcast_ref::<CtxFailure>() {
            Some(f) => {
                out.set("fault", f.fault.clone())?;
                out.set("host", f.host.clone())?;
                (f.kind, f.message.clone())
            }
            None if super::run::is_memory_error(e) => ("limit", super::error_text(e)),
            None => ("invalid_argument", super::error_text(e)),
        },
        other => ("invalid_argument", other.to_string().unwrap_or_default()),
    };
    let reason = reason
        .strip_prefix("runtime error: ")
        .unwrap_or(&reason)
        .to_string();
    out.set("kind", kind)?;
    out.set("reason", reason)?;
    Ok(out)
}

/// One request's view of vSphere.
pub struct Ctx {
    agent: String,
    agents: Arc<dyn Agents>,
    session: OnceCell<Client>,
}

impl Ctx {
    pub fn new(agent: String, agents: Arc<dyn Agents>) -> Ctx {
        Ctx {
            agent,
            agents,
            session: OnceCell::new(),
        }
    }

    async fn session(&self) -> mlua::Result<Client> {
        self.session
            .get_or_try_init(|| self.agents.session(&self.agent))
            .await
            .cloned()
            .map_err(failed)
    }

    /// Makes a core call with the request's session, polled right here:
    /// handing it to a task of its own would add a thread hop per call.
    async fn core<T, F>(&self, call: impl FnOnce(Client) -> F) -> mlua::Result<T>
    where
        F: Future<Output = Result<T, crate::vsphere::Error>>,
    {
        let session = self.session().await?;
        call(session).await.map_err(failed)
    }
}

/// A string or a list of strings, read straight from Lua.
fn strings(value: Value, what: &str) -> mlua::Result<Vec<String>> {
    let wrong = |v: &Value| {
        mlua::Error::RuntimeError(format!(
            "{what} must be a list of strings, not a {}",
            v.type_name()
        ))
    };
    match value {
        Value::String(s) => Ok(vec![s.to_str()?.to_string()]),
        Value::Table(t) => t
            .sequence_values::<Value>()
            .map(|v| match v? {
                Value::String(s) => Ok(s.to_str()?.to_string()),
                other => Err(wrong(&other)),
            })
            .collect(),
        other => Err(wrong(&other)),
    }
}

enum Paths {
    Same(Vec<String>),
    ByType(std::collections::HashMap<String, Vec<String>>),
}

/// A list of property paths for every object, or a table of lists by type
/// (`{ Alarm = { "info.name" }, VirtualMachine = { "name" } }`).
fn paths_by_type(value: Value) -> mlua::Result<Paths> {
    if let Value::Table(t) = &value
        && t.raw_len() == 0
        && t.pairs::<Value, Value>().next().is_some()
    {
        let mut by_type = std::collections::HashMap::new();
        for pair in t.pairs::<String, Value>() {
            let (kind, list) = pair?;
            by_type.insert(kind, strings(list, "properties")?);
        }
        return Ok(Paths::ByType(by_type));
    }
    strings(value, "properties").map(Paths::Same)
}

/// One reference `{type=..., value=...}` or a list of them.
/// A `{type=..., value=...}` table as a reference.
fn moref_of(t: &mlua::Table) -> Option<MoRef> {
    let kind = t.raw_get::<mlua::LuaString>("type").ok()?;
    let value = t.raw_get::<mlua::LuaString>("value").ok()?;
    Some(MoRef::new(
        kind.to_str().ok()?.to_string(),
        value.to_str().ok()?.to_string(),
    ))
}

/// One reference `{type=..., value=...}` or a list of them, read straight
/// from Lua.
fn refs(value: Value) -> mlua::Result<Vec<MoRef>> {
    let bad = || {
        mlua::Error::RuntimeError(
            "expected a managed object reference {type=..., value=...} or a list of them".into(),
        )
    };
    let Value::Table(t) = value else {
        return Err(bad());
    };
    if let Some(one) = moref_of(&t) {
        return Ok(vec![one]);
    }
    t.sequence_values::<Value>()
        .map(|v| match v? {
            Value::Table(r) => moref_of(&r).ok_or_else(bad),
            _ => Err(bad()),
        })
        .collect()
}

impl UserData for Ctx {
    fn add_fields<F: mlua::UserDataFields<Self>>(fields: &mut F) {
        fields.add_field_method_get("agent", |_, this| Ok(this.agent.clone()));
    }

    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        add_inventory_methods(methods);
        add_counter_methods(methods);
        add_perf_methods(methods);
        add_host_methods(methods);
    }
}

/// discover, find, lookup, get: objects and their properties.
fn add_inventory_methods<M: UserDataMethods<Ctx>>(methods: &mut M) {
    methods.add_async_method(
        "discover",
        |lua, this, (kind, properties): (String, Value)| async move {
            let paths = strings(properties, "properties")?;
            let rows = this
                .core(move |s| async move {
                    let mut rows = Vec::new();
                    s.discover(&kind, &paths, |o| {
                        rows.push(o.into_row());
                        ControlFlow::Continue(())
                    })
                    .await?;
                    Ok(rows)
                })
                .await?;
            to_lua(&lua, &Json::Array(rows))
        },
    );

    methods.add_async_method(
        "find",
        |lua, this, (kind, property, value, fresh): (String, String, Value, Option<bool>)| async move {
            let value = from_lua(&lua, value)?;
            let fresh = fresh.unwrap_or(false);
            let found = this
                .core(move |s| async move { s.find_indexed(&kind, &property, &value, fresh).await })
                .await?;
            match found {
                Some(r) => to_lua(&lua, &r.to_json()),
                None => Ok(Value::Nil),
            }
        },
    );

    methods.add_async_method(
        "lookup",
        |lua,
         this,
         (kind, property, value, properties, max_age): (
            String,
            String,
            Value,
            Value,
            Option<f64>,
        )| async move {
            let value = from_lua(&lua, value)?;
            let mut paths = strings(properties, "properties")?;
            if !paths.contains(&property) {
                paths.push(property.clone());
            }
            let max_age = max_age
                .filter(|a| a.is_finite() && *a > 0.0)
                .and_then(|a| std::time::Duration::try_from_secs_f64(a.min(3600.0)).ok());
            let found = this
                .core(move |s| async move {
                    match max_age {
                        Some(age) => s.lookup_recent(&kind, &property, &value, &paths, age).await,
                        None => s.lookup(&kind, &property, &value, &paths).await,
                    }
                })
                .await?;
            match found {
                Some(row) => to_lua(&lua, &row.into_row()),
                None => Ok(Value::Nil),
            }
        },
    );

    methods.add_async_method(
        "get",
        |lua, this, (objects, properties): (Value, Value)| async move {
            let objects = refs(objects)?;
            let paths = paths_by_type(properties)?;
            let order = objects.clone();
            let mut rows = this
                .core(move |s| async move {
                    match paths {
                        Paths::Same(p) => s.get_objects(&objects, &p).await,
                        Paths::ByType(p) => s.get_objects_by_type(&objects, &p).await,
                    }
                })
                .await?;
            // In the order asked for, whatever order the server used.
            rows.sort_by_key(|o| order.iter().position(|r| *r == o.obj));
            let rows: Vec<Json> = rows.into_iter().map(|o| o.into_row()).collect();
            to_lua(&lua, &Json::Array(rows))
        },
    );
}

/// The fields of a `ctx:perf{...}` request.
struct PerfRequest {
    entities: Vec<MoRef>,
    counter: Value,
    instance: String,
    interval: i64,
    max_sample: i64,
}

fn perf_request(spec: mlua::Table) -> mlua::Result<PerfRequest> {
    let bad = |what: &str| mlua::Error::RuntimeError(format!("ctx:perf: {what}"));
    let entities = refs(spec.get::<Value>("entity")?)?;
    let counter = spec.get::<Value>("counter")?;
    if counter.is_nil() {
        return Err(bad(
            "counter (an id or a group.name.unit.rollup name) is required",
        ));
    }
    let interval = spec
        .get::<Option<i64>>("interval")?
        .ok_or_else(|| bad("interval (the sampling period in seconds) is required"))?;
    let max_sample = spec.get::<Option<i64>>("max_sample")?.unwrap_or(1);
    if max_sample < 1 {
        return Err(bad("max_sample must be at least 1"));
    }
    Ok(PerfRequest {
        entities,
        counter,
        instance: spec.get::<Option<String>>("instance")?.unwrap_or_default(),
        interval,
        max_sample,
    })
}

/// perf, perf_summary, perf_intervals: performance samples and what is
/// known about them, batched and cached by the core.
fn add_perf_methods<M: UserDataMethods<Ctx>>(methods: &mut M) {
    methods.add_async_method("perf", |lua, this, spec: mlua::Table| async move {
        let request = perf_request(spec)?;
        let counter = match &request.counter {
            Value::Integer(id) => *id,
            Value::Number(n) => *n as i64,
            Value::String(name) => {
                let name = name.to_str()?.to_string();
                let counters = this
                    .core(|s| async move { s.perf_counters().await })
                    .await?;
                counters.key(&name).ok_or_else(|| {
                    mlua::Error::RuntimeError(format!(
                        "ctx:perf: unknown performance counter {name}"
                    ))
                })?
            }
            other => {
                return Err(mlua::Error::RuntimeError(format!(
                    "ctx:perf: counter must be an id or a name, not a {}",
                    other.type_name()
                )));
            }
        };
        let queries: Vec<SeriesQuery> = request
            .entities
            .into_iter()
            .map(|entity| SeriesQuery {
                entity,
                counter,
                instance: request.instance.clone(),
                interval: request.interval,
                max_sample: request.max_sample,
            })
            .collect();
        let metrics = this
            .core(move |s| async move {
                // Concurrently, so that they share one batch.
                let answers = futures::future::join_all(queries.into_iter().map(|q| {
                    let s = s.clone();
                    async move { s.perf(q).await }
                }))
                .await;
                let mut all = Vec::new();
                for answer in answers {
                    if let Json::Array(items) = answer? {
                        all.extend(items);
                    }
                }
                Ok(Json::Array(all))
            })
            .await?;
        to_lua(&lua, &metrics)
    });

    methods.add_async_method("perf_summary", |lua, this, entity: Value| async move {
        let entity = refs(entity)?
            .into_iter()
            .next()
            .ok_or_else(|| mlua::Error::RuntimeError("perf_summary needs an object".into()))?;
        let summary = this
            .core(move |s| async move { s.perf_summary(&entity).await })
            .await?;
        to_lua(&lua, &summary)
    });

    methods.add_async_method("perf_intervals", |lua, this, ()| async move {
        let intervals = this
            .core(|s| async move { s.perf_intervals().await })
            .await?;
        to_lua(&lua, &intervals)
    });
}

/// counter_id, counter_name, counters: the perf counter table.
fn add_counter_methods<M: UserDataMethods<Ctx>>(methods: &mut M) {
    methods.add_async_method("counter_id", |_, this, name: String| async move {
        let counters = this
            .core(|s| async move { s.perf_counters().await })
            .await?;
        Ok(counters.key(&name))
    });

    methods.add_async_method("counter_name", |_, this, key: i64| async move {
        let counters = this
            .core(|s| async move { s.perf_counters().await })
            .await?;
        Ok(counters.name(key).map(str::to_string))
    });

    methods.add_async_method("counters", |lua, this, ()| async move {
        let counters = this
            .core(|s| async move { s.perf_counters().await })
            .await?;
        to_lua(&lua, &Json::Array(counters.list.clone()))
    });
}

/// about, content, call: the host itself, and any vim25 method.
fn add_host_methods<M: UserDataMethods<Ctx>>(methods: &mut M) {
    methods.add_async_method("about", |lua, this, ()| async move {
        let session = this.session().await?;
        to_lua(&lua, session.about())
    });

    methods.add_async_method("content", |lua, this, ()| async move {
        let session = this.session().await?;
        to_lua(&lua, session.content())
    });

    methods.add_async_method(
        "call",
        |lua, this, (object, method, args): (Value, String, Value)| async move {
            let target = refs(object)?
                .into_iter()
                .next()
                .ok_or_else(|| mlua::Error::RuntimeError("call needs an object".into()))?;
            let args = match args {
                Value::Nil => Json::Null,
                other => from_lua(&lua, other)?,
            };
            let out = this
                .core(move |s| async move { s.invoke(&method, &target, &args).await })
                .await?;
            to_lua(&lua, &out)
        },
    );
}
