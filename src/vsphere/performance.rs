//! The PerformanceManager's counters, read once per vCenter.

use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

use super::collector;
use super::fault::Result;
use super::session::Session;

/// Every performance counter of a vSphere host, by key and by the name
/// `group.name.unit.rollup` (e.g. `cpu.usage.percent.average`).
#[derive(Debug, Default)]
pub struct PerfCounters {
    /// The `PerfCounterInfo` objects as decoded.
    pub list: Vec<Value>,
    by_name: HashMap<String, i64>,
    by_key: HashMap<i64, String>,
}

impl PerfCounters {
    pub fn from_list(list: Vec<Value>) -> PerfCounters {
        let mut by_name = HashMap::new();
        let mut by_key = HashMap::new();
        for info in &list {
            let part = |p: &str| info.pointer(p).and_then(Value::as_str).unwrap_or("");
            let name = format!(
                "{}.{}.{}.{}",
                part("/groupInfo/key"),
                part("/nameInfo/key"),
                part("/unitInfo/key"),
                part("/rollupType")
            );
            if let Some(key) = info.get("key").and_then(Value::as_i64) {
                by_name.entry(name.clone()).or_insert(key);
                by_key.insert(key, name);
            }
        }
        PerfCounters {
            list,
            by_name,
            by_key,
        }
    }

    pub fn key(&self, name: &str) -> Option<i64> {
        self.by_name.get(name).copied()
    }

    pub fn name(&self, key: i64) -> Option<&str> {
        self.by_key.get(&key).map(String::as_str)
    }
}

/// The counters of one vCenter, read on first use and kept.
#[derive(Default)]
pub struct CounterCache {
    counters: tokio::sync::OnceCell<Arc<PerfCounters>>,
}

impl CounterCache {
    /// `PerformanceManager.perfCounter`.
    pub async fn get(&self, session: &Session) -> Result<Arc<PerfCounters>> {
        self.counters
            .get_or_try_init(|| async {
                let list = match collector::manager_property(session, "perfManager", "perfCounter")
                    .await?
                {
                    Some(Value::Array(items)) => items,
                    _ => Vec::new(),
                };
                Ok(Arc::new(PerfCounters::from_list(list)))
            })
            .await
            .cloned()
    }
}
