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

use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use crate::server::config::read_secret_file;

pub mod forward;
pub mod frontend;
pub mod service;
pub mod worker;

/// Requests that name no agent (or not as a string) go here, to any
/// worker, so that their error is the one a local worker gives, in the
/// form of their helper.
pub const ANY_AGENT: &str = "vpoller.v1.any";

/// How often a worker tells the frontend that it is still working on a
/// request (a message on the request's reply subject with [`WORKING`] set).
/// A request that takes less than this costs no extra message.
pub const WORKING_EVERY: Duration = Duration::from_millis(500);

/// Silence after which a frontend takes a request's worker for lost: three
/// missed working messages, as the ZeroMQ broker counts heartbeats.
pub const LOST_AFTER: Duration = Duration::from_millis(1500);

/// Headers between our frontends and workers (clients never see them).
/// The worker is still at it; no payload.
pub const WORKING: &str = "Vpoller-Working";
/// The reply was refused before any method ran.
pub const REFUSED: &str = "Vpoller-Refused";
/// The reply is a helper's plain text.
pub const TEXT: &str = "Vpoller-Text";
/// Sent, and flushed, before a worker runs a method that must not run twice
/// (`repeatable = false`): its value is the method, and a frontend that saw
/// it does not send the request again when the worker is lost.
pub const ONCE: &str = "Vpoller-Once";
/// Part `k/n` of a reply larger than the server's `max_payload`.
pub const PART: &str = "Vpoller-Part";

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

/// Connects as the configuration says. A plain `nats://` URL to a host
/// that is not loopback is allowed, with a warning: NATS carries the
/// requests, guest passwords of `vm.process.get` included.
///
/// Credentials or TLS that a server refuses are an error at start-up, not
/// an endless retry. A server that is not up yet is waited for: the
/// connection is made in the background, and requests meanwhile get errors.
pub async fn connect(options: &NatsOptions, name: &str) -> Result<async_nats::Client, String> {
    warn_if_in_clear(options);
    let servers: Vec<&str> = options.url.split(',').map(str::trim).collect();
    let url = &options.url;
    match connect_options(options, name)
        .await?
        .connect(servers.clone())
        .await
    {
        Ok(client) => Ok(client),
        Err(e) => {
            use async_nats::ConnectErrorKind as Kind;
            let refused = matches!(
                e.kind(),
                Kind::AuthorizationViolation | Kind::Authentication | Kind::Tls | Kind::ServerParse
            );
            if refused || failed_in_tls(&e) {
                return Err(format!(
                    "NATS at {url} refused the connection: {e} (see [nats] credentials and TLS files)"
                ));
            }
            tracing::warn!("NATS at {url} is not reachable ({e}); connecting in the background");
            connect_options(options, name)
                .await?
                .retry_on_initial_connect()
                .connect(servers)
                .await
                .map_err(|e| format!("cannot connect to NATS at {url}: {e}"))
        }
    }
}

/// Whether a connection failed in its TLS handshake (an unknown issuer, a
/// client certificate the server wants): async-nats reports these as I/O
/// errors, but no retry mends them.
fn failed_in_tls(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
        {
            return true;
        }
        next = e.source();
    }
    false
}

async fn connect_options(
    options: &NatsOptions,
    name: &str,
) -> Result<async_nats::ConnectOptions, String> {
    let mut connect = async_nats::ConnectOptions::new()
        .name(name)
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
        connect = connect.token(read_secret_file(path, "NATS token")?);
    }
    if let Some(user) = &options.user {
        let password = match &options.password_file {
            Some(path) => read_secret_file(path, "NATS password")?,
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
    Ok(connect)
}

fn warn_if_in_clear(options: &NatsOptions) {
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
}

/// What a NATS side reports in `status` and `/metrics`.
#[derive(Default)]
pub struct NatsStats {
    client: OnceLock<async_nats::Client>,
    url: OnceLock<String>,
    pub subjects: Mutex<Vec<String>>,
    /// Frontend: forwarded; worker: received.
    pub requests: AtomicU64,
    pub answered: AtomicU64,
    pub no_worker: AtomicU64,
    pub timed_out: AtomicU64,
    /// Sent again after their worker went silent.
    pub retried: AtomicU64,
    /// Lost with their workers (after the retry).
    pub lost: AtomicU64,
    pub failed: AtomicU64,
    /// Worker: messages saying a request is still being worked on.
    pub working: AtomicU64,
    /// Worker: its id in the NATS service API.
    pub service_id: OnceLock<String>,
}

/// What async-nats counts of a connection.
pub struct ConnectionCounts {
    /// The first connect and every reconnect.
    pub connects: u64,
    pub in_messages: u64,
    pub out_messages: u64,
    pub in_bytes: u64,
    pub out_bytes: u64,
}

/// The request outcomes, as `status` and the metrics name them.
pub const OUTCOMES: [&str; 5] = ["answered", "no_worker", "timed_out", "lost", "failed"];

impl NatsStats {
    fn connected(&self, client: &async_nats::Client, url: &str) {
        let _ = self.client.set(client.clone());
        let _ = self.url.set(url.to_string());
    }

    /// The count of an outcome of [`OUTCOMES`].
    pub fn outcome(&self, name: &str) -> u64 {
        let counter = match name {
            "answered" => &self.answered,
            "no_worker" => &self.no_worker,
            "timed_out" => &self.timed_out,
            "lost" => &self.lost,
            _ => &self.failed,
        };
        counter.load(Ordering::Relaxed)
    }

    /// Whether the connection is up now.
    pub fn is_connected(&self) -> bool {
        self.client
            .get()
            .is_some_and(|c| c.connection_state() == async_nats::connection::State::Connected)
    }

    /// The connection's own counters.
    pub fn connection(&self) -> Option<ConnectionCounts> {
        self.client.get().map(|c| {
            let s = c.statistics();
            ConnectionCounts {
                connects: s.connects.load(Ordering::Relaxed),
                in_messages: s.in_messages.load(Ordering::Relaxed),
                out_messages: s.out_messages.load(Ordering::Relaxed),
                in_bytes: s.in_bytes.load(Ordering::Relaxed),
                out_bytes: s.out_bytes.load(Ordering::Relaxed),
            }
        })
    }

    pub fn to_json(&self) -> Value {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        // The server of the moment: after a failover, the node now in use.
        let server = self.client.get().map(|c| {
            let info = c.server_info();
            json!({"name": info.server_name, "version": info.version,
                   "address": format!("{}:{}", info.host, info.port)})
        });
        let connects = self.connection().map(|c| c.connects);
        json!({
            "url": self.url.get(),
            "server": server,
            "connected": self.is_connected(),
            "connects": connects,
            "subjects": self.subjects.lock().map(|s| s.clone()).unwrap_or_default(),
            "requests": load(&self.requests),
            "answered": load(&self.answered),
            "no_worker": load(&self.no_worker),
            "timed_out": load(&self.timed_out),
            "retried": load(&self.retried),
            "lost": load(&self.lost),
            "failed": load(&self.failed),
            "working_messages": load(&self.working),
            "service": self.service_id.get().map(|id| json!({"name": service::NAME, "id": id})),
        })
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
