//! Finding objects by a property value (a VM by `name`, a datastore by
//! `info.url`) without scanning the inventory on every request.
//!
//! The first lookup for a (type, property) reads that property of every
//! object in one retrieval and keeps the whole map, so later lookups of any
//! object cost nothing. The map is rebuilt when it is older than the
//! session's `index_ttl`, when a value is not in it (a name that is not
//! found is never remembered as missing), and when a caller says an entry
//! went stale.

use serde_json::Value;
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::fault::Result;
use super::moref::MoRef;
use super::session::Session;

/// One (type, property) index, rebuilt by one caller at a time.
type IndexSlot = Arc<tokio::sync::Mutex<Option<Index>>>;

#[derive(Default)]
pub(crate) struct Indexes {
    by_key: Mutex<HashMap<(String, String), IndexSlot>>,
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

impl Session {
    /// The first object of `kind` whose property `path` equals `value`, or
    /// `None`. With `fresh`, the index is rebuilt first (the caller found
    /// the entry it was given to be stale).
    pub async fn find_indexed(
        &self,
        kind: &str,
        path: &str,
        value: &Value,
        fresh: bool,
    ) -> Result<Option<MoRef>> {
        let slot = {
            let Ok(mut map) = self.inner.indexes.by_key.lock() else {
                return self.find(kind, path, value).await;
            };
            map.entry((kind.to_string(), path.to_string()))
                .or_default()
                .clone()
        };
        let key = key_of(value);
        let asked = Instant::now();
        let mut index = slot.lock().await;
        let ttl = self.options().index_ttl;
        if !fresh
            && let Some(i) = index.as_ref()
            && i.built.elapsed() < ttl
            && let Some(found) = i.refs.get(&key)
        {
            return Ok(Some(found.clone()));
        }
        // Rebuild, unless another caller did so while this one waited.
        let rebuilt_meanwhile = index.as_ref().is_some_and(|i| i.built >= asked);
        if !rebuilt_meanwhile {
            let mut refs = HashMap::new();
            self.discover(kind, &[path.to_string()], |o| {
                if let Some(v) = o.props.get(path) {
                    refs.entry(key_of(v)).or_insert(o.obj);
                }
                ControlFlow::Continue(())
            })
            .await?;
            *index = Some(Index {
                built: Instant::now(),
                refs,
            });
        }
        Ok(index.as_ref().and_then(|i| i.refs.get(&key).cloned()))
    }
}

impl Session {
    /// The object of `kind` whose `path` equals `value`, read with `paths`
    /// (which should include `path`): the index gives the reference and one
    /// retrieval reads it. An entry found stale (the object is gone, or its
    /// `path` no longer matches) makes the index be rebuilt once.
    pub async fn lookup(
        &self,
        kind: &str,
        path: &str,
        value: &Value,
        paths: &[String],
    ) -> Result<Option<super::collector::ObjectContent>> {
        for fresh in [false, true] {
            let Some(found) = self.find_indexed(kind, path, value, fresh).await? else {
                return Ok(None);
            };
            match self.get_objects(std::slice::from_ref(&found), paths).await {
                Ok(mut rows) => {
                    if let Some(row) = rows.pop()
                        && row.props.get(path) == Some(value)
                    {
                        return Ok(Some(row));
                    }
                }
                Err(e)
                    if e.fault_kind() == Some(&super::fault::FaultKind::ManagedObjectNotFound) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }
}
