//! The daemon's view of the agent registry: each request's `hostname`
//! resolved to a shared vSphere session.
//!
//! The registry is re-read whenever another process commits to it (SQLite's
//! `data_version`), so an agent added, changed, enabled or disabled with
//! `vpoller agent` is used by the next request, with no restart. An agent
//! whose login details changed gets a new session; the old one is logged out.
//!
//! Each slot also owns the agent's [`Guards`]: a refused login is
//! remembered there across requests (the session slot stays empty after a
//! failed first login, so the memory cannot live in a session), and new
//! login details start with fresh guards.

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::OnceCell;

use super::Agents;
use super::store::{AgentRecord, Store};
use crate::vsphere::{
    Client, Credentials, Endpoint, GuardOptions, Guards, Password, SessionOptions,
};

/// What a session was made from; a change means a new session. The
/// password is compared by its digest: it is kept only where it is used.
#[derive(Clone, PartialEq)]
struct LoginDetails {
    url: String,
    username: String,
    password_digest: [u8; 32],
    tls: crate::vsphere::TlsMode,
}

struct Slot {
    details: LoginDetails,
    password: Password,
    session: OnceCell<Client>,
    guards: Arc<Guards>,
}

#[derive(Default)]
struct Snapshot {
    version: Option<i64>,
    agents: HashMap<String, Arc<Agent>>,
}

/// One agent as last read, with what a session is made from worked out
/// once per read, not once per request.
struct Agent {
    record: AgentRecord,
    login: Result<(LoginDetails, Password), String>,
}

impl Agent {
    fn new(record: AgentRecord, password: Result<Password, String>) -> Agent {
        let login = password.map(|password| {
            let details = LoginDetails {
                url: record.sdk_url(),
                username: record.username.clone(),
                password_digest: Sha256::digest(password.expose().as_bytes()).into(),
                tls: record.tls.clone(),
            };
            (details, password)
        });
        Agent { record, login }
    }

    /// What to log in with; an error if the password cannot be read.
    fn login(&self) -> Result<(&LoginDetails, &Password), String> {
        match &self.login {
            Ok((details, password)) => Ok((details, password)),
            Err(e) => Err(e.clone()),
        }
    }
}

/// How often the registry is checked for changes by other processes.
pub const REFRESH_EVERY: Duration = Duration::from_millis(500);

pub struct RegistryAgents {
    /// Used by the refresher and to record logins; never by a request.
    store: Arc<Mutex<Store>>,
    /// What requests read: the agents as last read, swapped whole.
    snapshot: ArcSwap<Snapshot>,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    options: SessionOptions,
    guard_options: GuardOptions,
    deadline: Duration,
    /// Where sessions of agents that went away are shut down.
    runtime: Mutex<Option<tokio::runtime::Handle>>,
}

impl RegistryAgents {
    pub fn open(db: &Path, key_file: &Path, deadline: Duration) -> Result<RegistryAgents, String> {
        let store = Store::open(db, Some(key_file))?;
        let agents = RegistryAgents {
            store: Arc::new(Mutex::new(store)),
            snapshot: ArcSwap::default(),
            slots: Mutex::new(HashMap::new()),
            options: SessionOptions::default(),
            guard_options: GuardOptions::default(),
            deadline,
            runtime: Mutex::new(tokio::runtime::Handle::try_current().ok()),
        };
        agents.refresh()?;
        Ok(agents)
    }

    /// Uses these session options for sessions made from now on.
    pub fn with_options(mut self, options: SessionOptions) -> RegistryAgents {
        self.options = options;
        self
    }

    /// Uses these guard options for agents seen from now on.
    pub fn with_guard_options(mut self, options: GuardOptions) -> RegistryAgents {
        self.guard_options = options;
        self
    }

    /// Keeps the agents current from a thread of its own: every
    /// [`REFRESH_EVERY`], a cheap look at SQLite's `data_version`, and a
    /// re-read when another process committed. Requests only ever read the
    /// snapshot. Ends when the registry is dropped.
    pub fn keep_current(self: &Arc<Self>) -> Result<(), String> {
        let weak = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("vpoller-registry".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(REFRESH_EVERY);
                    let Some(agents) = weak.upgrade() else { return };
                    if let Err(e) = agents.refresh() {
                        tracing::warn!("cannot re-read the agent registry: {e}");
                    }
                }
            })
            .map(|_| ())
            .map_err(|e| format!("cannot start the registry refresher: {e}"))
    }

    /// Re-reads the agents if the database changed since the last read.
    pub fn refresh(&self) -> Result<(), String> {
        let store = self
            .store
            .lock()
            .map_err(|_| "agent store poisoned".to_string())?;
        let version = store.data_version()?;
        if self.snapshot.load().version == Some(version) {
            return Ok(());
        }
        let mut agents = HashMap::new();
        for record in store.list()? {
            let password = store.password(&record.hostname);
            agents.insert(
                record.hostname.clone(),
                Arc::new(Agent::new(record, password)),
            );
        }
        let gone: Vec<String> = match self.slots.lock() {
            Ok(slots) => slots
                .keys()
                .filter(|h| !agents.get(*h).is_some_and(|a| a.record.enabled))
                .cloned()
                .collect(),
            Err(_) => Vec::new(),
        };
        self.snapshot.store(Arc::new(Snapshot {
            version: Some(version),
            agents,
        }));
        for hostname in gone {
            self.retire(&hostname);
        }
        Ok(())
    }

    /// An agent removed or disabled: its mirror stops and its session is
    /// logged out.
    fn retire(&self, hostname: &str) {
        let slot = self.slots.lock().ok().and_then(|mut s| s.remove(hostname));
        let Some(client) = slot.and_then(|s| s.session.get().cloned()) else {
            return;
        };
        let runtime = self.runtime.lock().ok().and_then(|r| r.clone());
        let Some(runtime) = runtime.or_else(|| tokio::runtime::Handle::try_current().ok()) else {
            return;
        };
        tracing::info!(agent = %hostname, "agent removed or disabled; closing its vSphere session");
        runtime.spawn(async move {
            let _ = client.shutdown().await;
        });
    }

    /// The agent as last read, if it is enabled.
    fn lookup(&self, hostname: &str) -> Result<Arc<Agent>, String> {
        let snapshot = self.snapshot.load();
        match snapshot.agents.get(hostname) {
            None => Err("Unknown or missing agent name".into()),
            Some(agent) if !agent.record.enabled => Err(format!(
                "Agent {hostname} is disabled (enable it with `vpoller agent enable -H {hostname}`)"
            )),
            Some(agent) => Ok(agent.clone()),
        }
    }

    /// The agents enabled in the registry as last read.
    pub fn enabled(&self) -> Vec<String> {
        let snapshot = self.snapshot.load();
        let mut names: Vec<String> = snapshot
            .agents
            .values()
            .filter(|a| a.record.enabled)
            .map(|a| a.record.hostname.clone())
            .collect();
        names.sort();
        names
    }

    /// The sessions made so far, by agent.
    pub fn sessions(&self) -> Vec<(String, Client)> {
        let slots = self.slots.lock().map(|s| s.clone()).unwrap_or_default();
        slots
            .into_iter()
            .filter_map(|(h, slot)| slot.session.get().cloned().map(|s| (h, s)))
            .collect()
    }

    /// Shuts every client down (on shutdown): background work, views, logout.
    pub async fn logout_all(&self) {
        for (hostname, session) in self.sessions() {
            if let Err(e) = session.shutdown().await {
                tracing::warn!(agent = %hostname, "logout failed: {e}");
            }
        }
    }

    fn new_slot(&self, details: &LoginDetails, password: &Password) -> Arc<Slot> {
        Arc::new(Slot {
            details: details.clone(),
            password: password.clone(),
            session: OnceCell::new(),
            guards: Arc::new(Guards::new(self.guard_options.clone())),
        })
    }

    /// The agent's slot; only new login details make (and clone into) a new
    /// one.
    fn slot(&self, hostname: &str, details: &LoginDetails, password: &Password) -> Arc<Slot> {
        let Ok(mut slots) = self.slots.lock() else {
            return self.new_slot(details, password);
        };
        if let Some(slot) = slots.get(hostname)
            && slot.details == *details
        {
            return slot.clone();
        }
        let fresh = self.new_slot(details, password);
        if let Some(old) = slots.insert(hostname.to_string(), fresh.clone())
            && let Some(session) = old.session.get().cloned()
        {
            tracing::info!(agent = %hostname, "agent changed; replacing its vSphere session");
            tokio::spawn(async move {
                let _ = session.shutdown().await;
            });
        }
        fresh
    }

    /// Notes the outcome of a login in the registry, on a blocking thread.
    fn record_login(&self, hostname: &str, outcome: Result<(), String>) {
        let (store, hostname) = (self.store.clone(), hostname.to_string());
        let write = move || {
            if let Ok(store) = store.lock() {
                store.record_login(&hostname, outcome.as_ref().copied().map_err(String::as_str));
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(write)),
            Err(_) => write(),
        }
    }
}

impl Agents for RegistryAgents {
    fn check(&self, hostname: &str) -> Result<(), String> {
        self.lookup(hostname)?.login().map(|_| ())
    }

    fn session<'a>(
        &'a self,
        hostname: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Client, crate::vsphere::Error>> + Send + 'a>> {
        Box::pin(async move {
            let agent = self
                .lookup(hostname)
                .map_err(crate::vsphere::Error::Config)?;
            let (details, password) = agent.login().map_err(crate::vsphere::Error::Config)?;
            let slot = self.slot(hostname, details, password);
            let result = slot
                .session
                .get_or_try_init(|| async {
                    // Refused at once, without a Login: nothing new to record.
                    if let Some(remembered) = slot.guards.login_blocked() {
                        return Err(remembered);
                    }
                    let endpoint = Endpoint {
                        url: slot.details.url.clone(),
                        tls: slot.details.tls.clone(),
                        deadline: self.deadline,
                    };
                    let credentials = Credentials {
                        user: slot.details.username.clone(),
                        password: slot.password.clone(),
                    };
                    let outcome = Client::connect_guarded(
                        &endpoint,
                        credentials,
                        self.options.clone(),
                        slot.guards.clone(),
                    )
                    .await;
                    if !matches!(outcome, Err(crate::vsphere::Error::Unavailable { .. })) {
                        self.record_login(
                            hostname,
                            outcome.as_ref().map(|_| ()).map_err(|e| e.to_string()),
                        );
                    }
                    outcome
                })
                .await;
            result.cloned()
        })
    }
}
