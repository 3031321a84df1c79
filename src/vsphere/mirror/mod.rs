//! The live inventory mirror: one vCenter's objects kept in memory by the
//! PropertyCollector, so that requests are answered without asking vCenter.
//!
//! [`Mirror`] is what the client reads; [`follow`] is the task that keeps
//! it current (a private collector, a container view of everything, one
//! filter, and a loop of WaitForUpdatesEx); [`store`] applies update sets;
//! [`paths`] decides what is held; [`updates`] decodes the replies.
//!
//! Freshness is a promise: a read is served only while the wait loop has
//! been heard from within `max_wait + stale_after`, and only when every
//! path asked for is held. Otherwise the caller reads directly, as it does
//! without a mirror, so no reply is staler than that bound.

pub mod follow;
pub mod paths;
pub mod store;
pub mod updates;
pub mod volatile;

use serde_json::{Value, json};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

use self::paths::{Demand, PathPolicy, family_of, members};
use self::store::Store;
use self::volatile::VolatileReads;
use super::collector::ObjectContent;
use super::moref::MoRef;
use super::session::Session;
use super::view::Views;

/// `[mirror]` of the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct MirrorOptions {
    pub enabled: bool,
    /// `maxWaitSeconds` of each wait: how long vCenter holds a wait with
    /// nothing to report.
    pub max_wait: Duration,
    /// How long past `max_wait` a silent wait still counts as live.
    pub stale_after: Duration,
    /// `maxObjectUpdates` of each wait (vCenter pages at 100 by default).
    pub max_object_updates: u32,
    /// Shortest time between two rebuilds that add promoted paths.
    pub promote_interval: Duration,
    /// How old a bulk read of volatile paths may be.
    pub volatile_refresh: Duration,
    pub paths: PathPolicy,
}

impl Default for MirrorOptions {
    fn default() -> Self {
        MirrorOptions {
            enabled: false,
            max_wait: Duration::from_secs(20),
            stale_after: Duration::from_secs(10),
            max_object_updates: 100,
            promote_interval: Duration::from_secs(30),
            volatile_refresh: Duration::from_secs(20),
            paths: PathPolicy::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Phase {
    Loading,
    Live,
    Rebuilding(String),
    Failed(String),
    Stopped,
}

#[derive(Default)]
struct Counters {
    updates_applied: AtomicU64,
    resyncs: AtomicU64,
    served: AtomicU64,
    fallbacks: AtomicU64,
    own_calls: AtomicU64,
    builds: AtomicU64,
}

/// What a lookup in the mirror found.
pub enum Lookup {
    /// The object with every path asked for, or `None`: no such object.
    Row(Option<ObjectContent>),
    /// The object, whose paths are not all held; `None`: no such object.
    Ref(Option<MoRef>),
}

/// One vCenter's mirror, shared by the client (reads) and its follower
/// (writes).
pub struct Mirror {
    options: MirrorOptions,
    demand: Demand,
    store: RwLock<Option<Store>>,
    phase: Mutex<Phase>,
    /// Whether the phase lets the store serve (kept beside `phase` so a
    /// read takes no lock for it).
    serving: AtomicBool,
    /// Microseconds since `epoch` of the start of the newest wait: the
    /// store reflects vCenter at least as of then.
    progress: AtomicU64,
    epoch: Instant,
    /// When the last load finished, for the status.
    loaded_in: Mutex<Option<Duration>>,
    stopping: AtomicBool,
    rebuild_wanted: AtomicBool,
    wake: Notify,
    counters: Counters,
    volatile: VolatileReads,
}

impl Mirror {
    pub fn new(options: MirrorOptions) -> Mirror {
        Mirror {
            volatile: VolatileReads::new(options.volatile_refresh),
            demand: Demand::new(options.paths.clone()),
            options,
            store: RwLock::new(None),
            phase: Mutex::new(Phase::Loading),
            serving: AtomicBool::new(false),
            progress: AtomicU64::new(0),
            epoch: Instant::now(),
            loaded_in: Mutex::new(None),
            stopping: AtomicBool::new(false),
            rebuild_wanted: AtomicBool::new(false),
            wake: Notify::new(),
            counters: Counters::default(),
        }
    }

    pub fn options(&self) -> &MirrorOptions {
        &self.options
    }

    /// Whether reads may be served now.
    pub fn is_live(&self) -> bool {
        let live = self.phase.lock().is_ok_and(|p| {
            matches!(*p, Phase::Live)
                || matches!(*p, Phase::Rebuilding(ref r) if r == PATHS_CHANGED)
        });
        live && self.age() <= self.options.max_wait + self.options.stale_after
    }

    /// Since when the store is not known to be current.
    fn age(&self) -> Duration {
        let since = Duration::from_micros(self.progress.load(Ordering::Relaxed));
        self.epoch.elapsed().saturating_sub(since)
    }

    /// SOAP calls the mirror itself made (waits, builds), so that a
    /// status can tell them from the calls requests cost.
    pub fn own_calls(&self) -> u64 {
        self.counters.own_calls.load(Ordering::Relaxed)
    }

    /// Runs `read` on the store while the mirror is live; `read` says
    /// `None` when the store cannot answer (a path or an object it does not
    /// hold). Either way the read is counted, served or fallen back.
    fn serve<T>(&self, read: impl FnOnce(&Store) -> Option<T>) -> Option<T> {
        let answer = if self.is_live() {
            self.store
                .read()
                .ok()
                .and_then(|s| s.as_ref().and_then(read))
        } else {
            None
        };
        let counter = match answer {
            Some(_) => &self.counters.served,
            None => &self.counters.fallbacks,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        answer
    }

    /// Every object of `kind` with `paths`; `None`: read directly.
    pub fn discover(&self, kind: &str, paths: &[String]) -> Option<Vec<ObjectContent>> {
        members(kind)?;
        self.serve(|s| {
            s.property_set()
                .holds(kind, paths)
                .then(|| s.discover(kind, paths))
        })
    }

    /// The first object of `kind` whose `path` is `value`.
    pub fn find(&self, kind: &str, path: &str, value: &Value) -> Option<Option<MoRef>> {
        members(kind)?;
        let key = [path.to_string()];
        self.serve(|s| {
            s.property_set()
                .holds(kind, &key)
                .then(|| s.find(kind, path, value))
        })
    }

    /// The object of `kind` whose `path` is `value`, read with `paths`:
    /// the row when every path is held, else the reference alone (the
    /// caller reads the paths of that one object directly).
    pub fn lookup(
        &self,
        kind: &str,
        path: &str,
        value: &Value,
        paths: &[String],
    ) -> Option<Lookup> {
        members(kind)?;
        let key = [path.to_string()];
        self.serve(|s| {
            if !s.property_set().holds(kind, &key) {
                return None;
            }
            let found = s.find(kind, path, value);
            Some(if s.property_set().holds(kind, paths) {
                Lookup::Row(found.and_then(|obj| s.row(&obj, paths)))
            } else {
                Lookup::Ref(found)
            })
        })
    }

    /// Given objects with the paths of their type; `None` unless the
    /// mirror has every one of them with every path.
    pub fn get<'p>(
        &self,
        objects: &[MoRef],
        paths_of: impl Fn(&str) -> &'p [String],
    ) -> Option<Vec<ObjectContent>> {
        self.serve(|store| {
            let mut rows = Vec::with_capacity(objects.len());
            for (i, obj) in objects.iter().enumerate() {
                let paths = paths_of(&obj.kind);
                let held = family_of(&obj.kind)
                    .is_some_and(|f| store.property_set().holds(f, paths))
                    && store.contains(obj)
                    // A list naming one object twice: what the server does
                    // with it is its own business.
                    && !objects[..i].contains(obj);
                if !held {
                    return None;
                }
                rows.extend(store.row(obj, paths));
            }
            Some(rows)
        })
    }

    /// A direct read of `paths` of `kind` succeeded; often enough, and the
    /// paths are held from the next build on.
    pub fn note_direct_read(&self, kind: &str, paths: &[String]) {
        let family = family_of(kind).unwrap_or(kind);
        if self.demand.note_direct_read(family, paths) {
            self.rebuild_wanted.store(true, Ordering::Relaxed);
            self.wake.notify_one();
        }
    }

    /// `paths` split into those the mirror may hold and the volatile ones.
    pub fn split(&self, paths: &[String]) -> (Vec<String>, Vec<String>) {
        let policy = self.demand.policy();
        paths.iter().cloned().partition(|p| !policy.is_volatile(p))
    }

    /// Rows the mirror gave for the held part of `paths`, completed with
    /// the volatile part from a bulk read at most one refresh period old.
    /// `None`: a row the bulk read did not see; read directly.
    pub async fn complete(
        &self,
        session: &Session,
        views: &Views,
        rows: Vec<ObjectContent>,
        paths: &[String],
        volatile: &[String],
    ) -> super::fault::Result<Option<Vec<ObjectContent>>> {
        if volatile.is_empty() {
            return Ok(Some(rows));
        }
        let mut snapshots = std::collections::HashMap::new();
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let Some(family) = family_of(&row.obj.kind) else {
                return Ok(None);
            };
            if !snapshots.contains_key(family) {
                let read = self.volatile.read(session, views, family, volatile).await?;
                if !read.has(volatile) {
                    return Ok(None);
                }
                snapshots.insert(family, read);
            }
            let Some(row) = snapshots[family].complete(row, paths, volatile) else {
                return Ok(None);
            };
            out.push(row);
        }
        Ok(Some(out))
    }

    /// Asks the follower to cancel its wait and stop.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        self.wake.notify_one();
    }

    pub(crate) fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    pub fn status(&self) -> Value {
        let phase = self
            .phase
            .lock()
            .map(|p| p.clone())
            .unwrap_or(Phase::Stopped);
        let state = match &phase {
            Phase::Loading => "loading",
            Phase::Live | Phase::Rebuilding(_) if self.is_live() => "live",
            Phase::Live => "stale",
            Phase::Rebuilding(_) => "rebuilding",
            Phase::Failed(_) => "failed",
            Phase::Stopped => "stopped",
        };
        let reason = match &phase {
            Phase::Rebuilding(r) | Phase::Failed(r) => Some(r.clone()),
            _ => None,
        };
        let (objects, paths, held) = match self.store.read() {
            Ok(guard) => match guard.as_ref() {
                Some(s) => (
                    s.len(),
                    s.property_set().path_count(),
                    s.property_set().to_json(),
                ),
                None => (0, 0, Value::Null),
            },
            Err(_) => (0, 0, Value::Null),
        };
        let c = &self.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        json!({
            "state": state,
            "reason": reason,
            "objects": objects,
            "paths": paths,
            "held": held,
            "last_update_age_seconds": self.age().as_secs_f64(),
            "initial_load_seconds": self.loaded_in.lock().ok().and_then(|l| l.map(|d| d.as_secs_f64())),
            "builds": load(&c.builds),
            "updates_applied": load(&c.updates_applied),
            "resyncs": load(&c.resyncs),
            "served": load(&c.served),
            "fallbacks": load(&c.fallbacks),
            "soap_calls": load(&c.own_calls),
            "volatile_bulk_reads": self.volatile.bulk_reads.load(Ordering::Relaxed),
        })
    }

    // ---- for the follower ----

    pub(crate) fn set_phase(&self, phase: Phase) {
        let serving = match &phase {
            Phase::Live => true,
            Phase::Rebuilding(reason) => reason == PATHS_CHANGED,
            _ => false,
        };
        if let Ok(mut p) = self.phase.lock() {
            *p = phase;
        }
        self.serving.store(serving, Ordering::Relaxed);
    }

    pub(crate) fn mark_progress(&self) {
        let now = self.epoch.elapsed().as_micros() as u64;
        self.progress.store(now, Ordering::Relaxed);
    }

    pub(crate) fn install(&self, store: Store, took: Duration) {
        if let Ok(mut current) = self.store.write() {
            *current = Some(store);
        }
        if let Ok(mut l) = self.loaded_in.lock() {
            *l = Some(took);
        }
        self.counters.builds.fetch_add(1, Ordering::Relaxed);
        self.mark_progress();
        self.set_phase(Phase::Live);
    }

    pub(crate) fn apply(&self, set: &updates::UpdateSet) -> Result<(), store::Doubt> {
        let mut guard = self
            .store
            .write()
            .map_err(|_| store::Doubt("the mirror's lock was poisoned".into()))?;
        let Some(store) = guard.as_mut() else {
            return Err(store::Doubt("no store to apply to".into()));
        };
        let n = store.apply(set)?;
        self.counters
            .updates_applied
            .fetch_add(n as u64, Ordering::Relaxed);
        Ok(())
    }

    pub(crate) fn count_call(&self) {
        self.counters.own_calls.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_resync(&self) {
        self.counters.resyncs.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn demand(&self) -> &Demand {
        &self.demand
    }

    /// Takes the "rebuild for new paths" request, if one is due.
    pub(crate) fn rebuild_wanted(&self) -> bool {
        self.rebuild_wanted.load(Ordering::Relaxed)
    }

    pub(crate) fn take_rebuild(&self) {
        self.rebuild_wanted.store(false, Ordering::Relaxed);
    }

    pub(crate) async fn woken(&self) {
        self.wake.notified().await
    }
}

/// The reason of a rebuild that adds paths: the old store keeps serving
/// until the new one is loaded.
pub(crate) const PATHS_CHANGED: &str = "new paths to hold";
