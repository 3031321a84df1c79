//! Many machines on NATS: workers subscribe per agent, frontends forward.
//!
//! A worker started with `--nats URL` (or `[nats] url`) subscribes, for
//! each agent it serves, to `vpoller.v1.agent.<token>` in a queue group of
//! the same name. Several workers for one agent share its load and take over
//! from each other, and an agent's mirror lives only on the workers that
//! serve it. A proxy started with `--nats URL` keeps vPoller's ZeroMQ
//! frontend for clients and forwards each request as a NATS request to its
//! agent's subject, with `[proxy] request-timeout` as the deadline. NATS
//! does the routing, queueing and failover that the ZeroMQ broker does by
//! hand, and a NATS cluster has no single broker to lose.
//!
//! `<token>` is the agent name with every byte outside `[A-Za-z0-9-]`
//! written as `_XX` (hex): hostnames have dots, which NATS reads as token
//! separators.

use bytes::Bytes;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::config::Config;
use super::dispatch::Dispatcher;
use super::wire::{CLIENT_LIMITS, Envelope};
use super::zsocket::{Kind, ZSocket};
use crate::agents::RegistryAgents;
use crate::methods::Reply;

/// `[nats]` of the configuration. Credentials and TLS material come from
/// files, never from the command line.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NatsOptions {
    /// Off when empty; several servers of a cluster, comma-separated.
    pub url: String,
    /// The agents a worker serves; every enabled agent when empty.
    pub agents: Vec<String>,
    pub user: Option<String>,
    pub password_file: Option<PathBuf>,
    pub token_file: Option<PathBuf>,
    pub creds_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// The subject of an agent's requests.
pub fn subject_of(agent: &str) -> String {
    let mut token = String::with_capacity(agent.len());
    for byte in agent.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' {
            token.push(char::from(byte));
        } else {
            token.push_str(&format!("_{byte:02X}"));
        }
    }
    format!("vpoller.v1.agent.{token}")
}

fn read_secret(path: &std::path::Path, what: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the NATS {what} file {}: {e}", path.display()))?;
    Ok(text.lines().next().unwrap_or("").trim().to_string())
}

/// Connects as the configuration says. A plain `nats://` URL to a host
/// that is not loopback is allowed, with a warning: NATS carries the
/// requests, guest passwords of `vm.process.get` included.
pub async fn connect(options: &NatsOptions, name: &str) -> Result<async_nats::Client, String> {
    let mut connect = async_nats::ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(5))
        .event_callback(|event| async move {
            tracing::info!("NATS: {event}");
        });
    if let Some(path) = &options.creds_file {
        connect = connect
            .credentials_file(path)
            .await
            .map_err(|e| format!("the NATS creds file {}: {e}", path.display()))?;
    }
    if let Some(path) = &options.token_file {
        connect = connect.token(read_secret(path, "token")?);
    }
    if let Some(user) = &options.user {
        let password = match &options.password_file {
            Some(path) => read_secret(path, "password")?,
            None => String::new(),
        };
        connect = connect.user_and_password(user.clone(), password);
    }
    if let Some(ca) = &options.ca_file {
        connect = connect.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let (Some(cert), Some(key)) = (&options.cert_file, &options.key_file) {
        connect = connect.add_client_certificate(cert.clone(), key.clone());
    }
    for server in options.url.split(',').map(str::trim) {
        let plain = server.starts_with("nats://") || !server.contains("://");
        let host = server
            .split("://")
            .last()
            .unwrap_or(server)
            .rsplit_once(':')
            .map_or(server, |(h, _)| h);
        let loopback = matches!(host, "localhost" | "127.0.0.1" | "[::1]" | "::1");
        if plain && !loopback && options.ca_file.is_none() {
            tracing::warn!(
                server,
                "NATS without TLS to a host that is not loopback: requests travel in clear"
            );
        }
    }
    let servers: Vec<&str> = options.url.split(',').map(str::trim).collect();
    connect
        .connect(servers)
        .await
        .map_err(|e| format!("cannot connect to NATS at {}: {e}", options.url))
}

/// What a NATS side reports in `status`.
#[derive(Default)]
pub struct NatsStats {
    pub server: std::sync::Mutex<String>,
    pub subjects: std::sync::Mutex<Vec<String>>,
    pub forwarded: AtomicU64,
    pub answered: AtomicU64,
    pub no_worker: AtomicU64,
    pub timed_out: AtomicU64,
    pub failed: AtomicU64,
}

impl NatsStats {
    fn connected_to(&self, client: &async_nats::Client, url: &str) {
        let info = client.server_info();
        if let Ok(mut s) = self.server.lock() {
            *s = format!("{url} ({} {})", info.server_name, info.version);
        }
    }

    pub fn to_json(&self) -> Value {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        json!({
            "server": self.server.lock().map(|s| s.clone()).unwrap_or_default(),
            "subjects": self.subjects.lock().map(|s| s.clone()).unwrap_or_default(),
            "requests": load(&self.forwarded),
            "answered": load(&self.answered),
            "no_worker": load(&self.no_worker),
            "timed_out": load(&self.timed_out),
            "failed": load(&self.failed),
        })
    }
}

/// How long a stopping worker waits for its last replies to reach NATS.
const FLUSH_AT_STOP: Duration = Duration::from_secs(2);

/// How often a worker looks at the registry for agents to serve or drop.
const RESUBSCRIBE_EVERY: Duration = Duration::from_millis(500);

/// A worker on NATS: answers its agents' subjects until `stop`, then
/// stops taking requests and finishes those it holds within `grace`.
pub async fn serve_worker(
    config: &Config,
    dispatcher: Arc<Dispatcher>,
    agents: Arc<RegistryAgents>,
    stats: Arc<NatsStats>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let client = connect(&config.nats, "vpoller worker").await?;
    stats.connected_to(&client, &config.nats.url);
    let mut subscriptions: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
    let in_flight = Arc::new(AtomicU64::new(0));
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut tick = tokio::time::interval(RESUBSCRIBE_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
            Some(()) = done_rx.recv() => {}
        }
        if *stop.borrow() {
            break;
        }
        let wanted: HashSet<String> = agents
            .enabled()
            .into_iter()
            .filter(|a| config.nats.agents.is_empty() || config.nats.agents.contains(a))
            .collect();
        subscriptions.retain(|agent, task| {
            let keep = wanted.contains(agent) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        for agent in wanted {
            if subscriptions.contains_key(&agent) {
                continue;
            }
            let subject = subject_of(&agent);
            let subscriber = match client
                .queue_subscribe(subject.clone(), subject.clone())
                .await
            {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(%agent, "cannot subscribe to {subject}: {e}");
                    continue;
                }
            };
            tracing::info!(%agent, %subject, "serving an agent on NATS");
            let answering = Answering {
                client: client.clone(),
                dispatcher: dispatcher.clone(),
                done: done_tx.clone(),
                in_flight: in_flight.clone(),
            };
            subscriptions.insert(agent, tokio::spawn(answer_requests(subscriber, answering)));
        }
        if let Ok(mut s) = stats.subjects.lock() {
            let mut subjects: Vec<String> = subscriptions.keys().map(|a| subject_of(a)).collect();
            subjects.sort();
            *s = subjects;
        }
    }
    // No new requests; the ones being answered finish.
    for (_, task) in subscriptions.drain() {
        task.abort();
    }
    let finished = async {
        while in_flight.load(Ordering::Acquire) > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let _ = tokio::time::timeout(config.grace, finished).await;
    // With the NATS server gone a flush would wait for it forever; a stop
    // must not.
    let _ = tokio::time::timeout(FLUSH_AT_STOP, client.flush()).await;
    Ok(())
}

/// What answering one subscription's requests needs.
struct Answering {
    client: async_nats::Client,
    dispatcher: Arc<Dispatcher>,
    /// Told when the subscription ends, so that the worker subscribes again.
    done: tokio::sync::mpsc::UnboundedSender<()>,
    in_flight: Arc<AtomicU64>,
}

/// Answers the requests of one subscription, each in a task of its own.
async fn answer_requests(mut subscriber: async_nats::Subscriber, answering: Answering) {
    use futures::StreamExt;
    while let Some(message) = subscriber.next().await {
        let Some(reply_to) = message.reply.clone() else {
            continue;
        };
        let (client, dispatcher) = (answering.client.clone(), answering.dispatcher.clone());
        let in_flight = answering.in_flight.clone();
        in_flight.fetch_add(1, Ordering::AcqRel);
        tokio::spawn(async move {
            let reply = dispatcher.handle(&message.payload).await;
            if let Err(e) = client.publish(reply_to, Bytes::from(reply)).await {
                tracing::warn!("cannot send a reply over NATS: {e}");
            }
            in_flight.fetch_sub(1, Ordering::AcqRel);
        });
    }
    // The subscription ended (the connection closed for good).
    let _ = answering.done.send(());
}

/// A frontend on NATS: vPoller's ZeroMQ frontend for clients, each request
/// forwarded to its agent's subject.
pub async fn serve_frontend(
    config: &Config,
    stats: Arc<NatsStats>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let client = connect(&config.nats, "vpoller proxy").await?;
    stats.connected_to(&client, &config.nats.url);
    let mut socket = ZSocket::bind(Kind::Router, &config.proxy_frontend, CLIENT_LIMITS)
        .map_err(|e| format!("cannot bind the frontend {}: {e}", config.proxy_frontend))?;
    tracing::info!(frontend = %config.proxy_frontend, nats = %config.nats.url, "proxy forwarding to NATS");
    let mut work = JoinSet::new();
    loop {
        tokio::select! {
            received = socket.recv() => {
                let Some(frames) = received else { break };
                let Some((envelope, body)) = Envelope::open(frames) else { continue };
                let (client, stats, send) = (client.clone(), stats.clone(), socket.sender());
                let deadline = config.request_timeout;
                work.spawn(async move {
                    let reply = forward(&client, &stats, &body, deadline).await;
                    send.send(envelope.reply(reply));
                });
            }
            Some(_) = work.join_next(), if !work.is_empty() => {}
            _ = stop.changed() => break,
        }
    }
    let _ = tokio::time::timeout(config.grace, async {
        while work.join_next().await.is_some() {}
    })
    .await;
    socket.close(Duration::from_secs(2)).await;
    Ok(())
}

/// One request to its agent's workers, and what goes back to the client:
/// their reply as it is, or vPoller's error envelope naming what failed.
async fn forward(
    client: &async_nats::Client,
    stats: &NatsStats,
    body: &[u8],
    deadline: Duration,
) -> Bytes {
    stats.forwarded.fetch_add(1, Ordering::Relaxed);
    // Only the agent is read here; the worker reads the rest.
    #[derive(serde::Deserialize)]
    struct Route {
        hostname: Option<String>,
    }
    let agent = serde_json::from_slice::<Route>(body)
        .ok()
        .and_then(|r| r.hostname);
    let Some(agent) = agent else {
        // Not for any agent: the local checks give vPoller's own message.
        let reply = super::dispatch::refusal_of(body);
        stats.failed.fetch_add(1, Ordering::Relaxed);
        return Bytes::from(reply.wire());
    };
    let request = async_nats::Request::new()
        .payload(Bytes::copy_from_slice(body))
        .timeout(Some(deadline));
    match client.send_request(subject_of(&agent), request).await {
        Ok(message) => {
            stats.answered.fetch_add(1, Ordering::Relaxed);
            message.payload
        }
        Err(e) => {
            use async_nats::client::RequestErrorKind;
            let (counter, msg) = match e.kind() {
                RequestErrorKind::NoResponders => {
                    (&stats.no_worker, format!("no worker serves agent {agent}"))
                }
                RequestErrorKind::TimedOut => (
                    &stats.timed_out,
                    format!(
                        "no reply for agent {agent} within {} s (request timed out)",
                        deadline.as_secs_f64()
                    ),
                ),
                RequestErrorKind::Other => (
                    &stats.failed,
                    format!("cannot reach NATS for agent {agent}: {e}"),
                ),
            };
            counter.fetch_add(1, Ordering::Relaxed);
            Bytes::from(Reply::error(msg).wire())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_names_become_single_subject_tokens() {
        assert_eq!(
            subject_of("vc01.example.org"),
            "vpoller.v1.agent.vc01_2Eexample_2Eorg"
        );
        assert_eq!(subject_of("a_b c>*"), "vpoller.v1.agent.a_5Fb_20c_3E_2A");
        assert_ne!(
            subject_of("a.b"),
            subject_of("a_2Eb"),
            "the escape is escaped"
        );
    }
}
