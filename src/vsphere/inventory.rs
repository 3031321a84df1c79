//! Finding objects by a property value (a VM by `name`, a datastore by
//! `info.url`) without scanning the inventory on every request.
//!
//! The first lookup for a (type, property) reads that property of every
//! object in one retrieval and keeps the whole map, so later lookups of any
//! object cost nothing. The map is rebuilt when it is older than its
//! time to live, when a value is not in it (a name that is not
//! found is never remembered as missing), and when a caller says an entry
//! went stale.
//!
//! A known name is answered from the last index without waiting for
//! anything. Callers that need a rebuild share the one in progress (see
//! [`SingleFlight`]).

use serde_json::Value;
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::collector::{self, ObjectContent};
use super::fault::{FaultKind, Result};
use super::moref::MoRef;
use super::session::Session;
use super::single_flight::SingleFlight;
use super::view::Views;

/// One (type, property) index.
type IndexSlot = SingleFlight<Index>;

/// Every (type, property) index of one vCenter.
#[derive(Default)]
pub struct NameIndex {
    by_key: Mutex<HashMap<(String, String), Arc<IndexSlot>>>,
}

struct Index {
    built: Instant,
    refs: HashMap<String, MoRef>,
}

fn key_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A question to the index: the object of `kind` whose `path` is `value`.
pub struct Query<'q> {
    pub kind: &'q str,
    pub path: &'q str,
    pub value: &'q Value,
}

impl NameIndex {
    /// The first object matching `query`, or `None`. With `fresh`, the
    /// index is rebuilt first (the caller found the entry it was given to
    /// be stale). An index older than `ttl` is rebuilt.
    pub async fn find(
        &self,
        session: &Session,
        views: &Views,
        ttl: Duration,
        query: &Query<'_>,
        fresh: bool,
    ) -> Result<Option<MoRef>> {
        let Query { kind, path, value } = *query;
        let slot = {
            let Ok(mut map) = self.by_key.lock() else {
                return collector::find(session, views, kind, path, value).await;
            };
            map.entry((kind.to_string(), path.to_string()))
                .or_default()
                .clone()
        };
        let key = key_of(value);
        if !fresh
            && let Some(index) = slot.current()
            && index.built.elapsed() < ttl
            && let Some(found) = index.refs.get(&key)
        {
            return Ok(Some(found.clone()));
        }
        let index = slot
            .refresh(|| build_index(session, views, kind, path))
            .await?;
        Ok(index.refs.get(&key).cloned())
    }

    /// The object matching `query`, read with `paths` (which should include
    /// the query's path): the index gives the reference and one retrieval
    /// reads it. An entry found stale (the object is gone, or its path no
    /// longer matches) makes the index be rebuilt once.
    pub async fn lookup(
        &self,
        session: &Session,
        views: &Views,
        ttl: Duration,
        query: &Query<'_>,
        paths: &[String],
    ) -> Result<Option<ObjectContent>> {
        for fresh in [false, true] {
            let Some(found) = self.find(session, views, ttl, query, fresh).await? else {
                return Ok(None);
            };
            match collector::get_objects(session, std::slice::from_ref(&found), paths).await {
                Ok(mut rows) => {
                    if let Some(row) = rows.pop()
                        && row.props.get(query.path) == Some(query.value)
                    {
                        return Ok(Some(row));
                    }
                }
                Err(e) if e.fault_kind() == Some(&FaultKind::ManagedObjectNotFound) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }
}

async fn build_index(session: &Session, views: &Views, kind: &str, path: &str) -> Result<Index> {
    let mut refs = HashMap::new();
    collector::discover(session, views, kind, &[path.to_string()], |o| {
        if let Some(v) = o.props.get(path) {
            refs.entry(key_of(v)).or_insert(o.obj);
        }
        ControlFlow::Continue(())
    })
    .await?;
    Ok(Index {
        built: Instant::now(),
        refs,
    })
}

/// Rows read recently through the index, for callers that accept an answer
/// up to some age (a perf request checking a VM's power state, within the
/// sampling period of the samples it asks for).
#[derive(Default)]
pub struct RecentRows {
    rows: Mutex<HashMap<String, (Instant, ObjectContent)>>,
}

/// Rows kept at most.
const RECENT_ROWS: usize = 100_000;

impl RecentRows {
    pub fn key(query: &Query<'_>, paths: &[String]) -> String {
        format!(
            "{}\u{0}{}\u{0}{}\u{0}{}",
            query.kind,
            query.path,
            key_of(query.value),
            paths.join(",")
        )
    }

    pub fn get(&self, key: &str, max_age: Duration) -> Option<ObjectContent> {
        let rows = self.rows.lock().ok()?;
        let (read, row) = rows.get(key)?;
        (read.elapsed() <= max_age).then(|| row.clone())
    }

    pub fn put(&self, key: String, row: &ObjectContent) {
        let Ok(mut rows) = self.rows.lock() else {
            return;
        };
        if rows.len() >= RECENT_ROWS {
            // Nothing is kept longer than a sampling period: drop the old.
            rows.retain(|_, (read, _)| read.elapsed() < Duration::from_secs(300));
            if rows.len() >= RECENT_ROWS {
                rows.clear();
            }
        }
        rows.insert(key, (Instant::now(), row.clone()));
    }
}
