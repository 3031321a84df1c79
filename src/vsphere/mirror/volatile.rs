//! Volatile properties (`summary.quickStats.*` by default): read in bulk,
//! not mirrored.
//!
//! On vCenter these change about every 20 s for every object, so a filter
//! over the whole inventory would make vCenter compute and send a steady
//! stream of changes for every object, asked for or not. Read on demand
//! instead: one RetrievePropertiesEx through the container view of a
//! family, with every volatile path asked for in the last two periods, at
//! most once per refresh period, shared by all the requests that arrive
//! meanwhile. At 10,000 VMs polled by Zabbix every minute that is three
//! calls a minute instead of one per item, and values are at most one
//! period old.

use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::vsphere::collector::{self, ObjectContent};
use crate::vsphere::fault::Result;
use crate::vsphere::moref::MoRef;
use crate::vsphere::session::Session;
use crate::vsphere::single_flight::SingleFlight;
use crate::vsphere::view::Views;

/// One bulk read: the volatile paths of every object of a family.
pub struct Snapshot {
    read: Instant,
    paths: HashSet<String>,
    rows: HashMap<MoRef, Map<String, Value>>,
}

impl Snapshot {
    fn answers(&self, paths: &[String], refresh: Duration) -> bool {
        self.read.elapsed() < refresh && self.has(paths)
    }

    pub fn has(&self, paths: &[String]) -> bool {
        paths.iter().all(|p| self.paths.contains(p))
    }

    /// A row completed with this snapshot's values of `volatile`, the
    /// properties in the order of `paths`; `None` for an object the bulk
    /// read did not see (new since).
    pub fn complete(
        &self,
        mut row: ObjectContent,
        paths: &[String],
        volatile: &[String],
    ) -> Option<ObjectContent> {
        let read = self.rows.get(&row.obj)?;
        let mut props = Map::with_capacity(paths.len());
        for path in paths {
            let value = match row.props.remove(path) {
                Some(v) => Some(v),
                None if volatile.contains(path) => read.get(path).cloned(),
                None => None,
            };
            if let Some(v) = value {
                props.insert(path.clone(), v);
            }
        }
        row.props = props;
        Some(row)
    }
}

#[derive(Default)]
struct FamilyReads {
    /// Volatile paths asked for, with when last asked.
    asked: Mutex<HashMap<String, Instant>>,
    flight: SingleFlight<Snapshot>,
}

impl FamilyReads {
    fn note_asked(&self, paths: &[String]) {
        let Ok(mut asked) = self.asked.lock() else {
            return;
        };
        let now = Instant::now();
        for path in paths {
            match asked.get_mut(path) {
                Some(at) => *at = now,
                None => {
                    asked.insert(path.clone(), now);
                }
            }
        }
    }

    /// The paths asked for within `window`; older ones are forgotten.
    fn asked_within(&self, window: Duration) -> Vec<String> {
        let Ok(mut asked) = self.asked.lock() else {
            return Vec::new();
        };
        asked.retain(|_, at| at.elapsed() < window);
        asked.keys().cloned().collect()
    }
}

#[derive(Default)]
pub struct VolatileReads {
    refresh: Duration,
    families: Mutex<HashMap<String, Arc<FamilyReads>>>,
    pub bulk_reads: AtomicU64,
}

impl VolatileReads {
    pub fn new(refresh: Duration) -> VolatileReads {
        VolatileReads {
            refresh,
            ..VolatileReads::default()
        }
    }

    fn family(&self, family: &str) -> Arc<FamilyReads> {
        match self.families.lock() {
            Ok(mut families) => families.entry(family.to_string()).or_default().clone(),
            Err(_) => Arc::default(),
        }
    }

    /// A snapshot at most one refresh period old that has `paths`.
    pub async fn read(
        &self,
        session: &Session,
        views: &Views,
        family: &str,
        paths: &[String],
    ) -> Result<Arc<Snapshot>> {
        let reads = self.family(family);
        reads.note_asked(paths);
        if let Some(snapshot) = reads.flight.current()
            && snapshot.answers(paths, self.refresh)
        {
            return Ok(snapshot);
        }
        // Only a refresh needs the list of what was asked for lately.
        let wanted = reads.asked_within(self.refresh * 2);
        let snapshot = reads
            .flight
            .refresh(|| self.bulk_read(session, views, family, wanted.clone()))
            .await?;
        if snapshot.answers(paths, self.refresh) {
            return Ok(snapshot);
        }
        // The read joined had started before these paths were asked for.
        reads
            .flight
            .refresh(|| self.bulk_read(session, views, family, wanted))
            .await
    }

    async fn bulk_read(
        &self,
        session: &Session,
        views: &Views,
        family: &str,
        paths: Vec<String>,
    ) -> Result<Snapshot> {
        self.bulk_reads.fetch_add(1, Ordering::Relaxed);
        let mut rows = HashMap::new();
        collector::discover(session, views, family, &paths, |o| {
            rows.insert(o.obj, o.props);
            ControlFlow::Continue(())
        })
        .await?;
        Ok(Snapshot {
            read: Instant::now(),
            paths: paths.into_iter().collect(),
            rows,
        })
    }
}
