//! The task that keeps a [`Mirror`] current.
//!
//! One chain at a time: a private PropertyCollector (never the session's
//! default one, whose filters other code shares), a recursive container
//! view of the root folder, one filter, the initial WaitForUpdatesEx with
//! an empty version (followed while `truncated`, each version used once),
//! then a loop of waits. Exactly one wait is in flight; a wait given up is
//! cancelled first.
//!
//! Whatever goes wrong ends the chain: a lost session (log in again, build
//! anew), a doubt about an update or `InvalidCollectorVersion` (a full
//! resync: build anew), an unreachable vCenter (back off, then build
//! anew). The chain is torn down on the way out; a collector that could
//! not be destroyed then is destroyed once the server answers again.

use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::paths::PropertySet;
use super::store::Store;
use super::updates::{UpdateSet, parse_wait_reply};
use super::{Mirror, PATHS_CHANGED, Phase};
use crate::vsphere::fault::{Error, FaultKind, Result};
use crate::vsphere::moref::MoRef;
use crate::vsphere::session::{OnLostSession, Session};
use crate::vsphere::view;

/// The server objects of one build.
#[derive(Debug, Clone, PartialEq)]
pub struct Chain {
    pub collector: MoRef,
    pub view: MoRef,
    /// The session login the chain belongs to.
    pub generation: u64,
}

/// What the follower asks of vSphere: the session in real use, a script in
/// tests.
pub(crate) trait Server: Send + Sync {
    fn host(&self) -> &str;
    fn generation(&self) -> u64;
    async fn relogin(&self, seen: u64) -> Result<()>;
    async fn build(&self, set: &PropertySet) -> Result<Chain>;
    async fn wait(
        &self,
        chain: &Chain,
        version: &str,
        options: &Value,
        deadline: Duration,
    ) -> Result<Option<UpdateSet>>;
    async fn cancel(&self, chain: &Chain) -> Result<()>;
    async fn destroy(&self, chain: &Chain) -> Result<()>;
}

/// How a chain ended.
#[derive(Debug)]
enum Ended {
    Stopped,
    /// Build again at once; the reason is for the status.
    Rebuild(String),
    Failed(Error),
}

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How long a cancelled wait gets to come back.
const CANCEL_GRACE: Duration = Duration::from_secs(5);

/// Follows until the mirror is stopped.
pub(crate) async fn follow(server: impl Server, mirror: Arc<Mirror>, call_deadline: Duration) {
    let mut backoff = FIRST_BACKOFF;
    let mut orphans: Vec<Chain> = Vec::new();
    while !mirror.stopping() {
        let ended = run_chain(&server, &mirror, call_deadline, &mut orphans).await;
        match ended {
            Ended::Stopped => break,
            Ended::Rebuild(reason) => {
                tracing::info!(host = %server.host(), "inventory mirror: rebuilding ({reason})");
                if reason != PATHS_CHANGED {
                    mirror.count_resync();
                }
                mirror.set_phase(Phase::Rebuilding(reason));
                backoff = FIRST_BACKOFF;
            }
            Ended::Failed(e) => {
                tracing::warn!(host = %server.host(), "inventory mirror: {e}; trying again in {} s", backoff.as_secs());
                mirror.set_phase(Phase::Failed(e.to_string()));
                // Only a stop cuts the back-off short, not new paths.
                let pause = tokio::time::sleep(backoff);
                tokio::pin!(pause);
                while !mirror.stopping() {
                    tokio::select! {
                        () = &mut pause => break,
                        () = mirror.woken() => {}
                    }
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    for chain in orphans {
        let _ = server.destroy(&chain).await;
    }
    mirror.set_phase(Phase::Stopped);
}

async fn run_chain(
    server: &impl Server,
    mirror: &Mirror,
    call_deadline: Duration,
    orphans: &mut Vec<Chain>,
) -> Ended {
    let set = Arc::new(mirror.demand().wanted());
    mirror.take_rebuild();
    let seen = server.generation();
    let chain = match server.build(&set).await {
        Ok(chain) => chain,
        Err(e) => return ended_by(server, mirror, seen, e).await,
    };
    // The server answers again: what an earlier chain left can go now.
    for old in std::mem::take(orphans) {
        if server.destroy(&old).await.is_err() {
            tracing::debug!(host = %server.host(), "an old mirror collector could not be destroyed");
        }
    }
    let ended = follow_chain(server, mirror, &chain, set, call_deadline).await;
    if server.destroy(&chain).await.is_err() && chain.generation == server.generation() {
        orphans.push(chain);
    }
    ended
}

async fn follow_chain(
    server: &impl Server,
    mirror: &Mirror,
    chain: &Chain,
    set: Arc<PropertySet>,
    call_deadline: Duration,
) -> Ended {
    let options = mirror.options();
    let wait_options = json!({
        "maxWaitSeconds": options.max_wait.as_secs().max(1),
        "maxObjectUpdates": options.max_object_updates,
    });
    let load_deadline = options.max_wait + call_deadline * 4;
    let wait_deadline = options.max_wait + call_deadline;

    let started = Instant::now();
    let mut applying = Duration::ZERO;
    let mut store = Store::new(set);
    let mut version = String::new();
    loop {
        let set = match server
            .wait(chain, &version, &wait_options, load_deadline)
            .await
        {
            Ok(Some(set)) => set,
            Ok(None) => break,
            Err(e) => return ended_by(server, mirror, chain.generation, e).await,
        };
        let apply_started = Instant::now();
        if let Err(doubt) = store.apply(&set) {
            return Ended::Rebuild(doubt.0);
        }
        applying += apply_started.elapsed();
        version = set.version;
        if !set.truncated {
            break;
        }
    }
    tracing::info!(
        host = %server.host(),
        objects = store.len(),
        seconds = started.elapsed().as_secs_f64(),
        applying_seconds = applying.as_secs_f64(),
        "inventory mirror loaded"
    );
    mirror.install(store, started.elapsed());
    let built = Instant::now();

    loop {
        if mirror.stopping() {
            return Ended::Stopped;
        }
        if mirror.rebuild_wanted() && built.elapsed() >= options.promote_interval {
            return Ended::Rebuild(PATHS_CHANGED.into());
        }
        mirror.mark_progress();
        let outcome = {
            let wait = server.wait(chain, &version, &wait_options, wait_deadline);
            tokio::pin!(wait);
            // The flags are looked at before each sleep: a wake-up that
            // came while the last wait was answered is not lost.
            let rebuild_due = async {
                loop {
                    if mirror.stopping() {
                        return;
                    }
                    if mirror.rebuild_wanted() {
                        let left = options.promote_interval.saturating_sub(built.elapsed());
                        tokio::select! {
                            () = tokio::time::sleep(left) => return,
                            () = mirror.woken() => continue,
                        }
                    }
                    mirror.woken().await;
                }
            };
            tokio::select! {
                outcome = &mut wait => outcome,
                () = rebuild_due => {
                    // Never walk away from a wait: cancel it, and let it end.
                    let _ = server.cancel(chain).await;
                    match tokio::time::timeout(CANCEL_GRACE, &mut wait).await {
                        Ok(Err(e)) if e.fault_name() == Some("RequestCanceled") => Ok(None),
                        Ok(outcome) => outcome,
                        Err(_) => Ok(None),
                    }
                }
            }
        };
        match outcome {
            Ok(None) => {}
            Ok(Some(set)) => {
                if let Err(doubt) = mirror.apply(&set) {
                    return Ended::Rebuild(doubt.0);
                }
                version = set.version;
            }
            Err(e) => return ended_by(server, mirror, chain.generation, e).await,
        }
    }
}

/// What an error means for the chain.
async fn ended_by(server: &impl Server, mirror: &Mirror, seen: u64, e: Error) -> Ended {
    if mirror.stopping() {
        return Ended::Stopped;
    }
    if e.is_not_authenticated() {
        return match server.relogin(seen).await {
            Ok(()) => Ended::Rebuild("the session was lost".into()),
            Err(e) => Ended::Failed(e),
        };
    }
    match e.fault_kind() {
        Some(FaultKind::ManagedObjectNotFound) => {
            Ended::Rebuild("the collector or view is gone".into())
        }
        Some(FaultKind::InvalidProperty) => {
            let path = match &e {
                Error::Fault { fault, .. } => fault.detail_str("name"),
                _ => None,
            };
            match path {
                Some(p) if mirror.demand().refuse(&p) => {
                    Ended::Rebuild(format!("vCenter refused the path {p}"))
                }
                _ => Ended::Failed(e),
            }
        }
        _ if e.fault_name() == Some("InvalidCollectorVersion") => {
            Ended::Rebuild("vCenter refused the collector version".into())
        }
        _ => Ended::Failed(e),
    }
}

/// The follower's calls through the agent's session.
pub(crate) struct SessionServer {
    pub session: Session,
    pub mirror: Arc<Mirror>,
}

impl SessionServer {
    async fn call(&self, method: &str, this: &MoRef, args: &Value) -> Result<Value> {
        self.mirror.count_call();
        self.session.invoke(method, this, args).await
    }
}

impl Server for SessionServer {
    fn host(&self) -> &str {
        self.session.host()
    }

    fn generation(&self) -> u64 {
        self.session.generation()
    }

    async fn relogin(&self, seen: u64) -> Result<()> {
        self.session.relogin(seen).await
    }

    async fn build(&self, set: &PropertySet) -> Result<Chain> {
        let generation = self.session.generation();
        let default = self.session.manager("propertyCollector")?;
        let created = self
            .call("CreatePropertyCollector", &default, &Value::Null)
            .await?;
        let collector = MoRef::from_json(&created).ok_or_else(|| {
            Error::Config(format!(
                "{}: CreatePropertyCollector returned no collector",
                self.host()
            ))
        })?;
        let root = self.session.manager("rootFolder")?;
        self.mirror.count_call();
        let view = match view::create_container_view(&self.session, &root, &[], true).await {
            Ok(view) => view,
            Err(e) => {
                let _ = self
                    .call("DestroyPropertyCollector", &collector, &Value::Null)
                    .await;
                return Err(e);
            }
        };
        let chain = Chain {
            collector,
            view,
            generation,
        };
        let spec = set.filter_spec(&chain.view);
        let args = json!({"spec": spec, "partialUpdates": false});
        if let Err(e) = self.call("CreateFilter", &chain.collector, &args).await {
            let _ = self.destroy(&chain).await;
            return Err(e);
        }
        Ok(chain)
    }

    async fn wait(
        &self,
        chain: &Chain,
        version: &str,
        options: &Value,
        deadline: Duration,
    ) -> Result<Option<UpdateSet>> {
        self.mirror.count_call();
        let host = self.host().to_string();
        let args = json!({"version": version, "options": options});
        // A lost session ends the chain: its collector died with it.
        self.session
            .invoke_raw_within(
                deadline,
                "WaitForUpdatesEx",
                &chain.collector,
                &args,
                |reply| parse_wait_reply(&host, reply),
                OnLostSession::Fail,
            )
            .await
    }

    async fn cancel(&self, chain: &Chain) -> Result<()> {
        self.mirror.count_call();
        self.session
            .invoke_raw_within(
                CANCEL_GRACE,
                "CancelWaitForUpdates",
                &chain.collector,
                &Value::Null,
                |reply| self.session.parse_reply("CancelWaitForUpdates", reply),
                OnLostSession::Fail,
            )
            .await
            .map(|_| ())
    }

    async fn destroy(&self, chain: &Chain) -> Result<()> {
        // The filter goes with its collector, before the view it reads.
        let collector = self
            .call("DestroyPropertyCollector", &chain.collector, &Value::Null)
            .await;
        self.mirror.count_call();
        let view = view::destroy_view(&self.session, &chain.view).await;
        collector.and(view)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vsphere::fault::Fault;
    use crate::vsphere::mirror::MirrorOptions;
    use crate::vsphere::mirror::updates::{Change, ChangeOp, ObjectUpdate, UpdateKind};
    use std::collections::VecDeque;
    use std::sync::Mutex;

    /// A scripted server: each wait takes the next answer; the calls made
    /// are noted.
    struct Scripted {
        answers: Mutex<VecDeque<Result<Option<UpdateSet>>>>,
        calls: Mutex<Vec<String>>,
        mirror: Arc<Mirror>,
    }

    impl Scripted {
        fn note(&self, call: String) {
            self.calls.lock().expect("lock").push(call);
        }
        fn calls(&self) -> Vec<String> {
            self.calls.lock().expect("lock").clone()
        }
    }

    impl Server for Scripted {
        fn host(&self) -> &str {
            "scripted"
        }
        fn generation(&self) -> u64 {
            1
        }
        async fn relogin(&self, _: u64) -> Result<()> {
            self.note("Login".into());
            Ok(())
        }
        async fn build(&self, _: &PropertySet) -> Result<Chain> {
            self.note("build".into());
            Ok(Chain {
                collector: MoRef::new("PropertyCollector", "pc"),
                view: MoRef::new("ContainerView", "v"),
                generation: 1,
            })
        }
        async fn wait(
            &self,
            _: &Chain,
            version: &str,
            _: &Value,
            _: Duration,
        ) -> Result<Option<UpdateSet>> {
            self.note(format!("wait {version:?}"));
            let next = self.answers.lock().expect("lock").pop_front();
            match next {
                Some(answer) => answer,
                None => {
                    // The script is done: stop the follower.
                    self.mirror.stop();
                    Ok(None)
                }
            }
        }
        async fn cancel(&self, _: &Chain) -> Result<()> {
            self.note("cancel".into());
            Ok(())
        }
        async fn destroy(&self, _: &Chain) -> Result<()> {
            self.note("destroy".into());
            Ok(())
        }
    }

    fn enter(id: &str, name: &str) -> ObjectUpdate {
        ObjectUpdate {
            kind: UpdateKind::Enter,
            obj: MoRef::new("VirtualMachine", id),
            changes: vec![Change {
                name: "name".into(),
                op: ChangeOp::Assign,
                val: Some(Value::from(name)),
            }],
            missing: Vec::new(),
        }
    }

    fn page(
        version: &str,
        truncated: bool,
        objects: Vec<ObjectUpdate>,
    ) -> Result<Option<UpdateSet>> {
        Ok(Some(UpdateSet {
            version: version.into(),
            truncated,
            objects,
            missing_objects: Vec::new(),
        }))
    }

    fn fault(name: &str) -> Result<Option<UpdateSet>> {
        Err(Error::Fault {
            host: "scripted".into(),
            fault: Box::new(Fault {
                kind: FaultKind::from_name(name),
                name: name.into(),
                message: String::new(),
                detail: Value::Null,
            }),
        })
    }

    fn scripted(answers: Vec<Result<Option<UpdateSet>>>) -> (Scripted, Arc<Mirror>) {
        let mirror = Arc::new(Mirror::new(MirrorOptions {
            enabled: true,
            ..MirrorOptions::default()
        }));
        let server = Scripted {
            answers: Mutex::new(answers.into()),
            calls: Mutex::new(Vec::new()),
            mirror: mirror.clone(),
        };
        (server, mirror)
    }

    fn names(mirror: &Mirror) -> Vec<Value> {
        mirror
            .discover("VirtualMachine", &["name".to_string()])
            .unwrap_or_default()
            .into_iter()
            .map(|o| o.props["name"].clone())
            .collect()
    }

    #[tokio::test]
    async fn truncated_pages_are_followed_each_version_once_before_the_mirror_is_live() {
        let (server, mirror) = scripted(vec![
            page("t1", true, vec![enter("vm-1", "a")]),
            page("t2", true, vec![enter("vm-2", "b")]),
            page("3", false, vec![enter("vm-3", "c")]),
            Ok(None),
            page("4", false, vec![enter("vm-4", "d")]),
        ]);
        let server = Arc::new(server);
        follow(server.clone(), mirror.clone(), Duration::from_secs(1)).await;
        assert_eq!(
            server.calls(),
            [
                "build",
                "wait \"\"",
                "wait \"t1\"",
                "wait \"t2\"",
                "wait \"3\"",
                "wait \"3\"",
                "wait \"4\"",
                "destroy"
            ]
        );
        assert_eq!(
            mirror.store.read().expect("lock").as_ref().map(Store::len),
            Some(4)
        );
    }

    #[tokio::test]
    async fn invalid_collector_version_is_a_full_resync() {
        let (server, mirror) = scripted(vec![
            page("1", false, vec![enter("vm-1", "a")]),
            fault("InvalidCollectorVersion"),
            page("9", false, vec![enter("vm-1", "a"), enter("vm-2", "b")]),
        ]);
        let server = Arc::new(server);
        follow(server.clone(), mirror.clone(), Duration::from_secs(1)).await;
        assert_eq!(
            server.calls(),
            [
                "build",
                "wait \"\"",
                "wait \"1\"",
                "destroy",
                "build",
                "wait \"\"",
                "wait \"9\"",
                "destroy"
            ]
        );
        assert_eq!(mirror.status()["resyncs"], 1);
        // The store is the second load's, not the first's plus it.
        mirror.mark_progress();
        mirror.set_phase(Phase::Live);
        assert_eq!(names(&mirror), [Value::from("a"), Value::from("b")]);
    }

    #[tokio::test]
    async fn a_lost_session_logs_in_again_and_rebuilds() {
        let (server, mirror) = scripted(vec![
            page("1", false, vec![enter("vm-1", "a")]),
            fault("NotAuthenticated"),
            page("1", false, vec![enter("vm-1", "a")]),
        ]);
        let server = Arc::new(server);
        follow(server.clone(), mirror.clone(), Duration::from_secs(1)).await;
        let calls = server.calls();
        assert_eq!(
            &calls[..5],
            ["build", "wait \"\"", "wait \"1\"", "Login", "destroy"]
        );
        assert_eq!(calls[5], "build");
    }

    #[tokio::test]
    async fn a_change_to_an_object_never_seen_is_a_resync() {
        let mut stray = enter("vm-9", "x");
        stray.kind = UpdateKind::Modify;
        let (server, mirror) = scripted(vec![
            page("1", false, vec![enter("vm-1", "a")]),
            page("2", false, vec![stray]),
            page("1", false, vec![enter("vm-1", "a")]),
        ]);
        let server = Arc::new(server);
        follow(server.clone(), mirror.clone(), Duration::from_secs(1)).await;
        assert_eq!(server.calls().iter().filter(|c| *c == "build").count(), 2);
        assert_eq!(mirror.status()["resyncs"], 1);
    }

    /// The follower takes its server by value; the tests keep a handle.
    impl<T: Server> Server for Arc<T> {
        fn host(&self) -> &str {
            T::host(self)
        }
        fn generation(&self) -> u64 {
            T::generation(self)
        }
        async fn relogin(&self, seen: u64) -> Result<()> {
            T::relogin(self, seen).await
        }
        async fn build(&self, set: &PropertySet) -> Result<Chain> {
            T::build(self, set).await
        }
        async fn wait(
            &self,
            c: &Chain,
            v: &str,
            o: &Value,
            d: Duration,
        ) -> Result<Option<UpdateSet>> {
            T::wait(self, c, v, o, d).await
        }
        async fn cancel(&self, c: &Chain) -> Result<()> {
            T::cancel(self, c).await
        }
        async fn destroy(&self, c: &Chain) -> Result<()> {
            T::destroy(self, c).await
        }
    }
}
