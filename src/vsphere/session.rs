//! A logged-in session with one vSphere host, shared by every concurrent
//! request to that host.
//!
//! The session cookie is re-used by all callers. When the server says the
//! session is gone (a NotAuthenticated fault, or, from vcsim, NotAuthenticated
//! in every `missingSet` of a property retrieval) the first caller to notice
//! logs in again while the others wait for it: one Login, not one per caller.
//! A failed login is remembered in the agent's [`Guards`], across sessions,
//! so that a wrong password does not become a storm of Login calls; calls
//! pass the same guards' circuit breaker, so a vCenter that stopped
//! answering costs each caller at most one deadline.

use serde_json::{Value, json};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use super::fault::{Error, FaultKind, Result};
use super::guard::Guards;
use super::moref::MoRef;
use super::soap::{Endpoint, Reply, Transport};
use super::xml::encode;

/// A password that never shows in `Debug` output or logs.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    pub fn new(secret: impl Into<String>) -> Password {
        Password(secret.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(***)")
    }
}

/// What a call does when the server says the session is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnLostSession {
    /// Log in again (once, shared with other callers) and repeat the call.
    LogInAndRepeat,
    /// Fail with the NotAuthenticated fault: for calls that cannot simply be
    /// repeated after a new login (a page token dies with its session).
    Fail,
}

#[derive(Debug, Clone)]
pub struct Credentials {
    pub user: String,
    pub password: Password,
}

/// Tunables of a session; the defaults suit a vCenter.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Idle time after which a keep-alive call is made. vCenter's default
    /// session timeout is 30 minutes.
    pub keepalive: Duration,
    /// How long a name-to-reference index is trusted before it is re-read.
    pub index_ttl: Duration,
    /// How performance queries are batched and cached.
    pub perf: super::perf_query::PerfOptions,
    /// The live inventory mirror (off unless a long-running process turns
    /// it on).
    pub mirror: super::mirror::MirrorOptions,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            keepalive: Duration::from_secs(600),
            index_ttl: Duration::from_secs(300),
            perf: super::perf_query::PerfOptions::default(),
            mirror: super::mirror::MirrorOptions::default(),
        }
    }
}

const SERVICE_INSTANCE: (&str, &str) = ("ServiceInstance", "ServiceInstance");

/// Methods that may be sent again when a connection closes before its
/// response (vcsim drops connections on some internal panics, and a pooled
/// connection can die with a restarted server): those that only read, and
/// those whose repetition leaves at most a spare session-scoped object.
fn is_safe_to_repeat(method: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "Retrieve",
        "ContinueRetrieve",
        "Query",
        "Find",
        "CurrentTime",
        "SessionIsActive",
        "ReadNextEvents",
        "ReadPreviousEvents",
        "CreateContainerView",
        "CreateListView",
        "Login",
    ];
    PREFIXES.iter().any(|p| method.starts_with(p))
}

struct SessionState {
    cookie: Option<String>,
    /// Bumped on every successful login; callers remember the generation
    /// they used so that only one of them re-logs in.
    generation: u64,
}

pub(crate) struct Inner {
    pub(crate) transport: Transport,
    credentials: Credentials,
    options: SessionOptions,
    api_version: String,
    content: Value,
    state: RwLock<SessionState>,
    guards: Arc<Guards>,
    logins: AtomicU64,
    calls: AtomicU64,
    by_method: Mutex<std::collections::HashMap<String, CallStats>>,
    /// Logins that succeeded, were refused (wrong credentials), or failed
    /// otherwise.
    login_outcomes: [AtomicU64; 3],
    last_call: Mutex<Instant>,
}

/// Upper bounds (seconds) of the call-duration buckets.
pub const CALL_BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.0, 10.0];

/// The calls of one vim25 method: how many, how long in all, and how many
/// took at most each of [`CALL_BUCKETS`] (the rest took longer).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallStats {
    pub count: u64,
    pub seconds: f64,
    pub buckets: [u64; CALL_BUCKETS.len()],
}

impl CallStats {
    fn record(&mut self, took: Duration) {
        let seconds = took.as_secs_f64();
        self.count += 1;
        self.seconds += seconds;
        if let Some(i) = CALL_BUCKETS.iter().position(|b| seconds <= *b) {
            self.buckets[i] += 1;
        }
    }
}

/// One vSphere host's session. Cloning is cheap and shares the session.
#[derive(Clone)]
pub struct Session {
    pub(crate) inner: Arc<Inner>,
}

impl Session {
    /// Connects, reads the service content, and logs in, under the agent's
    /// `guards`: a remembered login failure or an open circuit is the
    /// answer at once, with no call made. The rest of vpoller connects
    /// through [`crate::vsphere::Client`].
    pub async fn connect_guarded(
        endpoint: &Endpoint,
        credentials: Credentials,
        options: SessionOptions,
        guards: Arc<Guards>,
    ) -> Result<Session> {
        if let Some(remembered) = guards.login_blocked() {
            return Err(remembered);
        }
        let transport = Transport::new(endpoint)?;
        let this = MoRef::new(SERVICE_INSTANCE.0, SERVICE_INSTANCE.1);
        let body = encode::request_body("RetrieveServiceContent", &this, &Value::Null).map_err(
            |message| Error::Encode {
                method: "RetrieveServiceContent".into(),
                message,
            },
        )?;
        let admission = guards.admit(transport.host())?;
        let advertised = match api_version(&transport).await {
            Ok(v) => v,
            Err(e) => {
                admission.report(false, Some(&e));
                return Err(e);
            }
        };
        let version_for_bootstrap = advertised.clone().unwrap_or_default();
        let reply = transport
            .post(
                "RetrieveServiceContent",
                &body,
                None,
                &version_for_bootstrap,
                true,
                transport.deadline(),
            )
            .await;
        admission.report(
            !reply.as_ref().is_err_and(Error::is_unreachable),
            reply.as_ref().err(),
        );
        let reply = reply?;
        let content = transport.parse("RetrieveServiceContent", &reply)?;
        let api_version = advertised
            .or_else(|| {
                content
                    .pointer("/about/apiVersion")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .unwrap_or_else(|| "6.5".to_string());

        let session = Session {
            inner: Arc::new(Inner {
                transport,
                credentials,
                options,
                api_version,
                content,
                state: RwLock::new(SessionState {
                    cookie: None,
                    generation: 0,
                }),
                guards,
                logins: AtomicU64::new(0),
                calls: AtomicU64::new(1),
                by_method: Mutex::new(std::collections::HashMap::new()),
                login_outcomes: Default::default(),
                last_call: Mutex::new(Instant::now()),
            }),
        };
        session.relogin(0).await?;
        Ok(session)
    }

    pub fn options(&self) -> &SessionOptions {
        &self.inner.options
    }

    /// `host:port` of the vSphere host, for messages.
    pub fn host(&self) -> &str {
        self.inner.transport.host()
    }

    pub fn api_version(&self) -> &str {
        &self.inner.api_version
    }

    /// The ServiceContent, as decoded at connect time.
    pub fn content(&self) -> &Value {
        &self.inner.content
    }

    /// `content.about`: product, version, API type and version.
    pub fn about(&self) -> &Value {
        self.inner.content.get("about").unwrap_or(&Value::Null)
    }

    /// A manager's reference from the service content, e.g. `propertyCollector`.
    pub fn manager(&self, name: &str) -> Result<MoRef> {
        self.inner
            .content
            .get(name)
            .and_then(MoRef::from_json)
            .ok_or_else(|| {
                Error::Config(format!(
                    "{}: the service content has no {name}",
                    self.host()
                ))
            })
    }

    /// How many Login calls this session has made.
    pub fn logins(&self) -> u64 {
        self.inner.logins.load(Ordering::Relaxed)
    }

    /// How many SOAP calls this session has made.
    pub fn calls(&self) -> u64 {
        self.inner.calls.load(Ordering::Relaxed)
    }

    /// Logins so far: succeeded, refused (wrong credentials), failed.
    pub fn login_outcomes(&self) -> [u64; 3] {
        let [ok, refused, failed] = &self.inner.login_outcomes;
        [ok, refused, failed].map(|a| a.load(Ordering::Relaxed))
    }

    /// Calls so far, by vim25 method (`WaitForUpdatesEx`, `Login`, ...).
    pub fn calls_by_method(&self) -> Vec<(String, CallStats)> {
        let Ok(by_method) = self.inner.by_method.lock() else {
            return Vec::new();
        };
        let mut all: Vec<(String, CallStats)> = by_method
            .iter()
            .map(|(m, s)| (m.clone(), s.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    pub fn is_logged_in(&self) -> bool {
        self.inner
            .state
            .read()
            .map(|s| s.cookie.is_some())
            .unwrap_or(false)
    }

    pub(crate) fn generation(&self) -> u64 {
        self.inner.state.read().map(|s| s.generation).unwrap_or(0)
    }

    fn current(&self) -> (Option<String>, u64) {
        match self.inner.state.read() {
            Ok(s) => (s.cookie.clone(), s.generation),
            Err(_) => (None, 0),
        }
    }

    /// Calls any vim25 method with JSON arguments and returns its decoded
    /// `returnval`.
    pub async fn invoke(&self, method: &str, this: &MoRef, args: &Value) -> Result<Value> {
        let transport = &self.inner.transport;
        let parse = |reply: &Reply| transport.parse(method, reply);
        self.invoke_with(method, this, args, parse, OnLostSession::LogInAndRepeat)
            .await
    }

    /// As [`invoke`](Self::invoke), answered within `deadline` instead of
    /// the host's default (a long poll needs minutes).
    pub async fn invoke_within(
        &self,
        deadline: Duration,
        method: &str,
        this: &MoRef,
        args: &Value,
    ) -> Result<Value> {
        let transport = &self.inner.transport;
        let parse = |reply: &Reply| transport.parse(method, reply);
        self.invoke_parsed(method, this, args, parse, true, deadline)
            .await
    }

    /// As [`invoke_with`](Self::invoke_with), answered within `deadline`
    /// (a WaitForUpdatesEx holds its call for up to its `maxWaitSeconds`).
    pub(crate) async fn invoke_raw_within<T>(
        &self,
        deadline: Duration,
        method: &str,
        this: &MoRef,
        args: &Value,
        parse: impl FnMut(&Reply) -> Result<T>,
        on_lost: OnLostSession,
    ) -> Result<T> {
        let relogin = on_lost == OnLostSession::LogInAndRepeat;
        self.invoke_parsed(method, this, args, parse, relogin, deadline)
            .await
    }

    /// A reply's `returnval`, faults raised.
    pub(crate) fn parse_reply(&self, method: &str, reply: &Reply) -> Result<Value> {
        self.inner.transport.parse(method, reply)
    }

    /// Calls a method and hands the raw reply to `parse`, which reports a
    /// lost session by returning a NotAuthenticated fault. What happens then
    /// is `on_lost`'s to say.
    pub async fn invoke_with<T>(
        &self,
        method: &str,
        this: &MoRef,
        args: &Value,
        parse: impl FnMut(&Reply) -> Result<T>,
        on_lost: OnLostSession,
    ) -> Result<T> {
        let deadline = self.inner.transport.deadline();
        self.invoke_raw_within(deadline, method, this, args, parse, on_lost)
            .await
    }

    async fn invoke_parsed<T>(
        &self,
        method: &str,
        this: &MoRef,
        args: &Value,
        mut parse: impl FnMut(&Reply) -> Result<T>,
        relogin: bool,
        deadline: Duration,
    ) -> Result<T> {
        let body = encode::request_body(method, this, args).map_err(|message| Error::Encode {
            method: method.to_string(),
            message,
        })?;
        let mut relogged = !relogin;
        loop {
            let (cookie, generation) = self.current();
            let reply = self
                .post(method, &body, cookie.as_deref(), deadline)
                .await?;
            match parse(&reply) {
                Err(e) if e.is_not_authenticated() && !relogged => {
                    tracing::info!(host = %self.host(), method, "vSphere session lost; logging in again");
                    self.relogin(generation).await?;
                    relogged = true;
                }
                other => return other,
            }
        }
    }

    async fn post(
        &self,
        method: &str,
        body: &str,
        cookie: Option<&str>,
        deadline: Duration,
    ) -> Result<Reply> {
        self.inner.calls.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut t) = self.inner.last_call.lock() {
            *t = Instant::now();
        }
        let started = Instant::now();
        let admission = self.inner.guards.admit(self.host())?;
        let result = self
            .inner
            .transport
            .post(
                method,
                body,
                cookie,
                &self.inner.api_version,
                is_safe_to_repeat(method),
                deadline,
            )
            .await;
        let unreachable = result.as_ref().is_err_and(Error::is_unreachable);
        admission.report(!unreachable, result.as_ref().err());
        if let Ok(mut by_method) = self.inner.by_method.lock() {
            match by_method.get_mut(method) {
                Some(stats) => stats.record(started.elapsed()),
                None => {
                    let mut stats = CallStats::default();
                    stats.record(started.elapsed());
                    by_method.insert(method.to_string(), stats);
                }
            }
        }
        tracing::trace!(host = %self.host(), method, elapsed_us = started.elapsed().as_micros() as u64, ok = result.is_ok(), "soap call");
        result
    }

    /// Logs in again unless another caller already did since `seen`. A
    /// failed login is remembered in the agent's guards, so callers during
    /// its back-off get that failure without a Login.
    pub(crate) async fn relogin(&self, seen: u64) -> Result<()> {
        let mut turn = self.inner.guards.login_turn().await?;
        if self.generation() != seen {
            return Ok(());
        }
        let outcome = self.login().await;
        turn.record(&outcome);
        outcome
    }

    async fn login(&self) -> Result<()> {
        let manager = self.manager("sessionManager")?;
        let creds = &self.inner.credentials;
        let args = json!({"userName": creds.user, "password": creds.password.expose()});
        let body =
            encode::request_body("Login", &manager, &args).map_err(|message| Error::Encode {
                method: "Login".into(),
                message,
            })?;
        self.inner.logins.fetch_add(1, Ordering::Relaxed);
        let deadline = self.inner.transport.deadline();
        let reply = self.post("Login", &body, None, deadline).await?;
        let parsed = self.inner.transport.parse("Login", &reply);
        let outcome = match &parsed {
            Ok(_) => 0,
            Err(Error::Fault { fault, .. }) if fault.kind == FaultKind::InvalidLogin => 1,
            Err(_) => 2,
        };
        self.inner.login_outcomes[outcome].fetch_add(1, Ordering::Relaxed);
        let login_failed = |reason: String| Error::LoginFailed {
            host: self.host().to_string(),
            user: creds.user.clone(),
            reason,
        };
        match parsed {
            Ok(_) => {}
            Err(Error::Fault { fault, .. }) if fault.kind == FaultKind::InvalidLogin => {
                return Err(login_failed(
                    "the user name or password is wrong (InvalidLogin)".into(),
                ));
            }
            Err(Error::Fault { fault, .. }) => return Err(login_failed(fault.to_string())),
            Err(other) => return Err(other),
        }
        let cookie = reply
            .session_cookie
            .ok_or_else(|| login_failed("the server set no vmware_soap_session cookie".into()))?;
        let mut state = self
            .inner
            .state
            .write()
            .map_err(|_| Error::Config("session state poisoned".into()))?;
        state.cookie = Some(cookie);
        state.generation += 1;
        tracing::debug!(host = %self.host(), user = %creds.user, "logged in to vSphere");
        Ok(())
    }

    /// How long since the last call.
    pub fn idle_for(&self) -> Duration {
        self.inner
            .last_call
            .lock()
            .map(|t| t.elapsed())
            .unwrap_or_default()
    }

    /// Logs out. Safe to call twice.
    pub async fn logout(&self) -> Result<()> {
        let (cookie, _) = self.current();
        let Some(cookie) = cookie else {
            return Ok(());
        };
        let manager = self.manager("sessionManager")?;
        let body = encode::request_body("Logout", &manager, &Value::Null).map_err(|message| {
            Error::Encode {
                method: "Logout".into(),
                message,
            }
        })?;
        if let Ok(mut state) = self.inner.state.write() {
            state.cookie = None;
        }
        let deadline = self.inner.transport.deadline();
        let reply = self.post("Logout", &body, Some(&cookie), deadline).await?;
        match self.inner.transport.parse("Logout", &reply) {
            Ok(_) => Ok(()),
            // Already gone on the server side: the goal is met.
            Err(e) if e.is_not_authenticated() => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Reads the API version the host advertises; `None` if it does not say,
/// an error if the host did not answer within the deadline.
async fn api_version(transport: &Transport) -> Result<Option<String>> {
    let url = format!(
        "{}/vimServiceVersions.xml",
        transport.url().trim_end_matches('/')
    );
    let response = match transport.http().get(&url).send().await {
        Ok(r) => r,
        Err(e) if e.is_timeout() => {
            return Err(Error::Timeout {
                host: transport.host().to_string(),
                after: transport.deadline(),
            });
        }
        // Refusals and TLS problems are quick, and the service-content call
        // that follows reports them with its advice.
        Err(_) => return Ok(None),
    };
    if !response.status().is_success() {
        return Ok(None);
    }
    let Ok(text) = response.text().await else {
        return Ok(None);
    };
    Ok(advertised_version(&text))
}

/// `<namespace><name>urn:vim25</name><version>8.0.2.0</version>...`
fn advertised_version(text: &str) -> Option<String> {
    let after = &text[text.find("<name>urn:vim25</name>")?..];
    let start = after.find("<version>")? + "<version>".len();
    let end = after[start..].find("</version>")? + start;
    let version = after[start..end].trim();
    (!version.is_empty()).then(|| version.to_string())
}
