//! One vCenter (or ESXi host) as the rest of vpoller sees it: the
//! [`Session`] and the state kept per vCenter on top of it, the shared
//! container [`Views`], the [`NameIndex`], the perf [`CounterCache`], the
//! batched and cached performance queries ([`PerfQueries`]), and
//! the work that runs in the background for it (the keep-alive).
//!
//! Each concern is its own module over the session; this type only puts
//! them together and owns their lifetime. [`Client::shutdown`] stops the
//! background work first, then destroys the views, then logs out.

use serde_json::Value;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::task::JoinHandle;

use super::collector::{self, ObjectContent};
use super::fault::Result;
use super::guard::Guards;
use super::inventory::{NameIndex, Query, RecentRows};
use super::mirror::{Lookup, Mirror, follow};
use super::moref::MoRef;
use super::perf_query::{PerfQueries, SeriesQuery};
use super::performance::{CounterCache, PerfCounters};
use super::session::{Credentials, Session, SessionOptions};
use super::soap::Endpoint;
use super::view::{self, Views};

/// The vSphere client of one agent. Cloning is cheap and shares it.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    session: Session,
    views: Views,
    index: NameIndex,
    counters: CounterCache,
    perf: Arc<PerfQueries>,
    recent: RecentRows,
    /// The live inventory mirror, in the long-running processes.
    mirror: Option<Arc<Mirror>>,
    follower: Mutex<Option<JoinHandle<()>>>,
    background: Background,
}

/// Tasks that run for a client; stopped when it shuts down, and aborted
/// if it is dropped without that.
#[derive(Default)]
struct Background {
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Background {
    fn add(&self, task: JoinHandle<()>) {
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.push(task);
        }
    }

    fn stop(&self) {
        if let Ok(mut tasks) = self.tasks.lock() {
            for task in tasks.drain(..) {
                task.abort();
            }
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(mirror) = &self.mirror {
            mirror.stop();
        }
        if let Ok(mut follower) = self.follower.lock()
            && let Some(task) = follower.take()
        {
            task.abort();
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Client {
    /// Connects and logs in, with guards of its own (one-shot commands).
    pub async fn connect(
        endpoint: &Endpoint,
        credentials: Credentials,
        options: SessionOptions,
    ) -> Result<Client> {
        Client::connect_guarded(endpoint, credentials, options, Arc::default()).await
    }

    /// Connects under an agent's guards (see [`Session::connect_guarded`]).
    pub async fn connect_guarded(
        endpoint: &Endpoint,
        credentials: Credentials,
        options: SessionOptions,
        guards: Arc<Guards>,
    ) -> Result<Client> {
        let perf = PerfQueries::new(options.perf.clone());
        let mirror = options
            .mirror
            .enabled
            .then(|| Arc::new(Mirror::new(options.mirror.clone())));
        let session = Session::connect_guarded(endpoint, credentials, options, guards).await?;
        let client = Client {
            inner: Arc::new(Inner {
                session,
                views: Views::default(),
                index: NameIndex::default(),
                counters: CounterCache::default(),
                perf,
                recent: RecentRows::default(),
                mirror,
                follower: Mutex::new(None),
                background: Background::default(),
            }),
        };
        client.start_keepalive();
        client.start_mirror(endpoint.deadline);
        Ok(client)
    }

    pub fn session(&self) -> &Session {
        &self.inner.session
    }

    pub fn views(&self) -> &Views {
        &self.inner.views
    }

    /// `host:port`, for messages.
    pub fn host(&self) -> &str {
        self.inner.session.host()
    }

    pub fn about(&self) -> &Value {
        self.inner.session.about()
    }

    pub fn content(&self) -> &Value {
        self.inner.session.content()
    }

    pub fn manager(&self, name: &str) -> Result<MoRef> {
        self.inner.session.manager(name)
    }

    /// How many Login calls, and SOAP calls in all, the session has made.
    pub fn logins(&self) -> u64 {
        self.inner.session.logins()
    }

    pub fn calls(&self) -> u64 {
        self.inner.session.calls()
    }

    /// Any vim25 method, with the default deadline.
    pub async fn invoke(&self, method: &str, this: &MoRef, args: &Value) -> Result<Value> {
        self.inner.session.invoke(method, this, args).await
    }

    /// Any vim25 method, with a deadline of its own (a long poll).
    pub async fn invoke_within(
        &self,
        deadline: Duration,
        method: &str,
        this: &MoRef,
        args: &Value,
    ) -> Result<Value> {
        self.inner
            .session
            .invoke_within(deadline, method, this, args)
            .await
    }

    pub async fn retrieve(
        &self,
        filter: &Value,
        page_size: u32,
        on_object: impl FnMut(ObjectContent) -> ControlFlow<()> + Send,
    ) -> Result<usize> {
        collector::retrieve(&self.inner.session, filter, page_size, on_object).await
    }

    pub async fn retrieve_all(&self, filter: &Value) -> Result<Vec<ObjectContent>> {
        collector::retrieve_all(&self.inner.session, filter).await
    }

    pub async fn get_objects(
        &self,
        objects: &[MoRef],
        paths: &[String],
    ) -> Result<Vec<ObjectContent>> {
        if let Some(mirror) = self.mirror() {
            let (held, volatile) = mirror.split(paths);
            if let Some(rows) = mirror.get(objects, |_| &held)
                && let Some(rows) = self.complete(mirror, rows, paths, &volatile).await?
            {
                return Ok(rows);
            }
        }
        let rows = Box::pin(collector::get_objects(&self.inner.session, objects, paths)).await?;
        self.note_reads_of(objects, |_| paths);
        Ok(rows)
    }

    pub async fn get_objects_by_type(
        &self,
        objects: &[MoRef],
        paths: &std::collections::HashMap<String, Vec<String>>,
    ) -> Result<Vec<ObjectContent>> {
        let paths_of = |k: &str| paths.get(k).map_or(&[][..], Vec::as_slice);
        if let Some(rows) = self.mirror().and_then(|m| m.get(objects, paths_of)) {
            return Ok(rows);
        }
        let rows = Box::pin(collector::get_objects_by_type(
            &self.inner.session,
            objects,
            paths,
        ))
        .await?;
        self.note_reads_of(objects, paths_of);
        Ok(rows)
    }

    fn note_reads_of<'p>(&self, objects: &[MoRef], paths_of: impl Fn(&str) -> &'p [String]) {
        let mut kinds: Vec<&str> = objects.iter().map(|o| o.kind.as_str()).collect();
        kinds.sort_unstable();
        kinds.dedup();
        for kind in kinds {
            self.note_direct_read(kind, paths_of(kind));
        }
    }

    /// Every object of `kind`: from the mirror when it can answer, else
    /// through the shared container view.
    pub async fn discover(
        &self,
        kind: &str,
        paths: &[String],
        mut on_object: impl FnMut(ObjectContent) -> ControlFlow<()> + Send,
    ) -> Result<usize> {
        if let Some(rows) = self.discover_in_mirror(kind, paths).await? {
            let n = rows.len();
            for row in rows {
                if on_object(row).is_break() {
                    break;
                }
            }
            return Ok(n);
        }
        let n = Box::pin(collector::discover(
            &self.inner.session,
            &self.inner.views,
            kind,
            paths,
            on_object,
        ))
        .await?;
        self.note_direct_read(kind, paths);
        Ok(n)
    }

    async fn discover_in_mirror(
        &self,
        kind: &str,
        paths: &[String],
    ) -> Result<Option<Vec<ObjectContent>>> {
        let Some(mirror) = self.mirror() else {
            return Ok(None);
        };
        let (held, volatile) = mirror.split(paths);
        match mirror.discover(kind, &held) {
            Some(rows) => self.complete(mirror, rows, paths, &volatile).await,
            None => Ok(None),
        }
    }

    /// Rows from the mirror, with their volatile paths from a bulk read.
    async fn complete(
        &self,
        mirror: &Mirror,
        rows: Vec<ObjectContent>,
        paths: &[String],
        volatile: &[String],
    ) -> Result<Option<Vec<ObjectContent>>> {
        let (session, views) = (&self.inner.session, &self.inner.views);
        if volatile.is_empty() {
            return Ok(Some(rows));
        }
        Box::pin(mirror.complete(session, views, rows, paths, volatile)).await
    }

    pub fn mirror(&self) -> Option<&Mirror> {
        self.inner.mirror.as_deref()
    }

    fn note_direct_read(&self, kind: &str, paths: &[String]) {
        if let Some(mirror) = self.mirror() {
            mirror.note_direct_read(kind, paths);
        }
    }

    /// The mirror's state for `status`, `null` without one.
    pub fn mirror_status(&self) -> Value {
        self.mirror().map_or(Value::Null, Mirror::status)
    }

    /// SOAP calls made for requests: all calls but the mirror's own.
    pub fn request_calls(&self) -> u64 {
        self.calls() - self.mirror().map_or(0, Mirror::own_calls)
    }

    pub async fn find(&self, kind: &str, path: &str, value: &Value) -> Result<Option<MoRef>> {
        collector::find(&self.inner.session, &self.inner.views, kind, path, value).await
    }

    /// Through the name index (see [`NameIndex::find`]).
    pub async fn find_indexed(
        &self,
        kind: &str,
        path: &str,
        value: &Value,
        fresh: bool,
    ) -> Result<Option<MoRef>> {
        // A caller that found the mirror's answer stale reads directly.
        if !fresh && let Some(found) = self.mirror().and_then(|m| m.find(kind, path, value)) {
            return Ok(found);
        }
        let query = Query { kind, path, value };
        let ttl = self.inner.session.options().index_ttl;
        let (session, views) = (&self.inner.session, &self.inner.views);
        Box::pin(self.inner.index.find(session, views, ttl, &query, fresh)).await
    }

    /// Through the name index (see [`NameIndex::lookup`]).
    pub async fn lookup(
        &self,
        kind: &str,
        path: &str,
        value: &Value,
        paths: &[String],
    ) -> Result<Option<ObjectContent>> {
        if let Some(found) = self.lookup_in_mirror(kind, path, value, paths).await? {
            return Ok(found);
        }
        let query = Query { kind, path, value };
        let ttl = self.inner.session.options().index_ttl;
        // Boxed, as every path that calls vCenter here: an async call's
        // state is as large as its largest path, and a request that the
        // mirror answers should not move a SOAP call's state around.
        let found = Box::pin(self.inner.index.lookup(
            &self.inner.session,
            &self.inner.views,
            ttl,
            &query,
            paths,
        ))
        .await?;
        if found.is_some() {
            self.note_direct_read(kind, paths);
        }
        Ok(found)
    }

    /// A lookup the mirror answers: from memory when it holds every path;
    /// with one direct read of the object it names when it holds the
    /// key only. `None`: take the direct path.
    async fn lookup_in_mirror(
        &self,
        kind: &str,
        path: &str,
        value: &Value,
        paths: &[String],
    ) -> Result<Option<Option<ObjectContent>>> {
        let Some(mirror) = self.mirror() else {
            return Ok(None);
        };
        let (held, volatile) = mirror.split(paths);
        match mirror.lookup(kind, path, value, &held) {
            None => Ok(None),
            Some(Lookup::Row(None)) | Some(Lookup::Ref(None)) => Ok(Some(None)),
            Some(Lookup::Row(Some(row))) => {
                let obj = row.obj.clone();
                match self.complete(mirror, vec![row], paths, &volatile).await? {
                    Some(mut rows) => Ok(Some(rows.pop())),
                    None => Box::pin(self.read_found(kind, path, value, paths, obj)).await,
                }
            }
            Some(Lookup::Ref(Some(obj))) => {
                Box::pin(self.read_found(kind, path, value, paths, obj)).await
            }
        }
    }

    /// The paths of an object the mirror found, read directly; `None`
    /// if it changed since the mirror heard of it (take the direct path).
    async fn read_found(
        &self,
        kind: &str,
        path: &str,
        value: &Value,
        paths: &[String],
        obj: MoRef,
    ) -> Result<Option<Option<ObjectContent>>> {
        let session = &self.inner.session;
        match collector::get_objects(session, std::slice::from_ref(&obj), paths).await {
            Ok(mut rows) => match rows.pop() {
                Some(row) if row.props.get(path) == Some(value) => {
                    self.note_direct_read(kind, paths);
                    Ok(Some(Some(row)))
                }
                _ => Ok(None),
            },
            Err(e) if e.fault_kind() == Some(&super::fault::FaultKind::ManagedObjectNotFound) => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// As [`lookup`](Self::lookup), but a row read through it at most
    /// `max_age` ago is answer enough.
    pub async fn lookup_recent(
        &self,
        kind: &str,
        path: &str,
        value: &Value,
        paths: &[String],
        max_age: Duration,
    ) -> Result<Option<ObjectContent>> {
        if let Some(found) = self.lookup_in_mirror(kind, path, value, paths).await? {
            return Ok(found);
        }
        let key = RecentRows::key(&Query { kind, path, value }, paths);
        if let Some(row) = self.inner.recent.get(&key, max_age) {
            return Ok(Some(row));
        }
        let row = Box::pin(self.lookup(kind, path, value, paths)).await?;
        if let Some(r) = &row {
            self.inner.recent.put(key, r);
        }
        Ok(row)
    }

    pub async fn perf_counters(&self) -> Result<Arc<PerfCounters>> {
        self.inner.counters.get(&self.inner.session).await
    }

    /// Samples of one series, batched with the other requests of the
    /// moment and cached for a sampling period (see [`PerfQueries`]).
    pub async fn perf(&self, query: SeriesQuery) -> Result<Value> {
        self.inner.perf.query(&self.inner.session, query).await
    }

    /// An entity's `QueryPerfProviderSummary`, read once.
    pub async fn perf_summary(&self, entity: &MoRef) -> Result<Value> {
        self.inner.perf.summary(&self.inner.session, entity).await
    }

    /// `PerformanceManager.historicalInterval`, read once.
    pub async fn perf_intervals(&self) -> Result<Value> {
        self.inner.perf.intervals(&self.inner.session).await
    }

    pub fn perf_stats(&self) -> Value {
        self.inner.perf.stats.to_json()
    }

    pub async fn container_view(&self, container: Option<&MoRef>, types: &[&str]) -> Result<MoRef> {
        self.inner
            .views
            .container_view(&self.inner.session, container, types)
            .await
    }

    /// CreateContainerView, uncached; the caller destroys it.
    pub async fn create_container_view(
        &self,
        container: &MoRef,
        types: &[&str],
        recursive: bool,
    ) -> Result<MoRef> {
        view::create_container_view(&self.inner.session, container, types, recursive).await
    }

    pub async fn create_list_view(&self, objects: &[MoRef]) -> Result<MoRef> {
        view::create_list_view(&self.inner.session, objects).await
    }

    pub async fn destroy_view(&self, view: &MoRef) -> Result<()> {
        view::destroy_view(&self.inner.session, view).await
    }

    /// Keeps an idle session alive and notices a lost one early, by reading
    /// `SessionManager.currentSession`.
    pub async fn keepalive(&self) -> Result<()> {
        collector::manager_property(&self.inner.session, "sessionManager", "currentSession")
            .await
            .map(|_| ())
    }

    /// Stops what runs in the background, destroys the shared views, and
    /// logs out. Safe to call twice.
    pub async fn shutdown(&self) -> Result<()> {
        self.stop_mirror().await;
        self.inner.background.stop();
        self.inner.views.destroy_all(&self.inner.session).await;
        self.inner.session.logout().await
    }

    /// Starts the follower that keeps the mirror current.
    fn start_mirror(&self, call_deadline: Duration) {
        let Some(mirror) = self.inner.mirror.clone() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let server = follow::SessionServer {
            session: self.inner.session.clone(),
            mirror: mirror.clone(),
        };
        let task = runtime.spawn(follow::follow(server, mirror, call_deadline));
        if let Ok(mut follower) = self.inner.follower.lock() {
            *follower = Some(task);
        }
    }

    /// Cancels the mirror's wait and lets its follower destroy what it
    /// made, before the session that owns them is logged out.
    async fn stop_mirror(&self) {
        let Some(mirror) = self.mirror() else {
            return;
        };
        mirror.stop();
        let task = self.inner.follower.lock().ok().and_then(|mut f| f.take());
        if let Some(mut task) = task
            && tokio::time::timeout(Duration::from_secs(10), &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
    }

    fn start_keepalive(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let task = runtime.spawn(keepalive_loop(Arc::downgrade(&self.inner)));
        self.inner.background.add(task);
    }
}

/// Calls the keep-alive whenever the session has been idle for the
/// configured time; ends with the client.
async fn keepalive_loop(inner: Weak<Inner>) {
    loop {
        let interval = match inner.upgrade() {
            Some(i) => i.session.options().keepalive,
            None => return,
        };
        tokio::time::sleep(interval / 4).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let session = &inner.session;
        if !session.is_logged_in() || session.idle_for() < interval {
            continue;
        }
        let client = Client { inner };
        if let Err(e) = client.keepalive().await {
            tracing::warn!(host = %client.host(), "vSphere keep-alive failed: {e}");
        }
    }
}
