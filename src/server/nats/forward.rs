//! A frontend's side of NATS: each request published to its agent's
//! subject, its reply (and the worker's working messages) read back on one
//! inbox subscription shared by every request of the process.
//!
//! A request that names no agent goes to `vpoller.v1.any`, where any
//! worker refuses it as a local one would (the helper's form included);
//! with no worker at all, the frontend refuses it itself.
//!
//! A request ends in exactly one of:
//! - the worker's reply, passed on as it is;
//! - no responders: no worker serves the agent, said at once; unless the
//!   agent was answered in the last [`SERVED_LATELY`], when its workers are
//!   most likely failing over to another NATS node, and get
//!   [`MEMBERS_RETURN`] to come back;
//! - silence for [`LOST_AFTER`] (no reply, no working message): the worker
//!   is gone, and the request, a read and so safe to repeat, is sent once
//!   more to the agent's queue group, where another member takes it; a
//!   second silence is an error. A method declared `repeatable = false` is
//!   announced by the worker before it runs, and is never sent again;
//! - the deadline: vPoller's timeout error ("Did not receive response,
//!   aborting..."), with the agent and the deadline in the log.
//!
//! Whatever else comes for a request after it ended (a late reply from a
//! worker that was only slow) finds no one waiting and is dropped, so a
//! client never gets two replies.

use async_nats::{HeaderMap, Message, StatusCode};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{ANY_AGENT, LOST_AFTER, NatsStats, ONCE, PART, REFUSED, TEXT, WORKING, subject_of};
use crate::methods::Reply;
use crate::server::dispatch::MAX_REQUEST_BYTES;
use crate::server::route::Answer;
use crate::server::wire::NO_RESPONSE;

/// An agent answered within this long has workers; a moment without
/// responders is their failover, not their absence.
const SERVED_LATELY: Duration = Duration::from_secs(10);
/// How long a request waits for such an agent's workers to come back.
const MEMBERS_RETURN: Duration = Duration::from_secs(2);
const RETURN_POLL: Duration = Duration::from_millis(100);

type Waiting = Mutex<HashMap<u64, mpsc::UnboundedSender<Message>>>;

pub struct Forwarder {
    client: async_nats::Client,
    /// `_INBOX.<unique>`; request `n` is answered on `<inbox>.<n>`.
    inbox: String,
    waiting: Waiting,
    next: AtomicU64,
    /// When each agent last had a reply, for telling an agent nobody
    /// serves from one whose workers are failing over.
    served: Mutex<HashMap<String, Instant>>,
    stats: Arc<NatsStats>,
    deadline: Duration,
}

/// How a request's wait for its worker ended.
enum Waited {
    Reply(Answer),
    NoResponders,
    /// Nothing for [`LOST_AFTER`]; with the method if the worker had said
    /// it must not run twice.
    Silent(Option<String>),
    Deadline,
}

impl Forwarder {
    /// Subscribes to the inbox and starts passing what arrives there to the
    /// requests waiting for it. `deadline` is how long a request may take
    /// from its arrival.
    pub async fn start(
        client: async_nats::Client,
        stats: Arc<NatsStats>,
        deadline: Duration,
    ) -> Result<Arc<Forwarder>, String> {
        let inbox = client.new_inbox();
        let subscriber = client
            .subscribe(format!("{inbox}.*"))
            .await
            .map_err(|e| format!("cannot subscribe to the NATS reply inbox: {e}"))?;
        let forwarder = Arc::new(Forwarder {
            client,
            inbox,
            waiting: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
            served: Mutex::new(HashMap::new()),
            stats,
            deadline,
        });
        tokio::spawn(pass_on(Arc::downgrade(&forwarder), subscriber));
        Ok(forwarder)
    }

    /// One request to its agent's workers, and what goes back to the
    /// client: their reply as it is, or vPoller's error envelope naming
    /// what failed.
    pub async fn forward(&self, payload: Bytes) -> Answer {
        let body = &payload[..];
        let deadline = Instant::now() + self.deadline;
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        // Refused unread, as a worker would; and never parsed here.
        if body.len() > MAX_REQUEST_BYTES {
            self.stats.failed.fetch_add(1, Ordering::Relaxed);
            return Answer::of(&crate::server::dispatch::oversize());
        }
        let max_payload = self.client.server_info().max_payload;
        if body.len() > max_payload {
            self.stats.failed.fetch_add(1, Ordering::Relaxed);
            return Answer::of(&Reply::error(format!(
                "the request ({} bytes) is larger than the NATS server's max_payload ({max_payload} bytes)",
                body.len()
            )));
        }
        let (subject, agent) = match agent_of(body) {
            Some(agent) => (subject_of(&agent), agent),
            None => (ANY_AGENT.to_string(), String::new()),
        };
        let target = if agent.is_empty() {
            "a request naming no agent".to_string()
        } else {
            format!("agent {agent}")
        };
        let mut retried = false;
        let mut members_gone_since: Option<Instant> = None;
        loop {
            let waited = self.ask(&subject, payload.clone(), deadline).await;
            let (counter, msg) = match waited {
                Ok(Waited::Reply(answer)) => {
                    self.stats.answered.fetch_add(1, Ordering::Relaxed);
                    self.note_served(&agent);
                    return answer;
                }
                // A worker would have refused it; with none, it is refused here.
                Ok(Waited::NoResponders) if agent.is_empty() => {
                    self.stats.no_worker.fetch_add(1, Ordering::Relaxed);
                    return Answer::of(&crate::server::dispatch::refusal_of(body));
                }
                Ok(Waited::NoResponders) => {
                    // Served a moment ago: its workers are most likely moving
                    // to another NATS node (or restarting); give them a moment.
                    let since = *members_gone_since.get_or_insert_with(Instant::now);
                    if self.served_lately(&agent)
                        && since.elapsed() < MEMBERS_RETURN
                        && Instant::now() + RETURN_POLL < deadline
                    {
                        tokio::time::sleep(RETURN_POLL).await;
                        continue;
                    }
                    if retried {
                        (
                            &self.stats.lost,
                            format!(
                                "the worker for {target} was lost before replying, and no other worker serves it"
                            ),
                        )
                    } else {
                        (&self.stats.no_worker, format!("no worker serves {target}"))
                    }
                }
                Ok(Waited::Silent(Some(method))) => (
                    &self.stats.lost,
                    format!(
                        "the worker for {target} was lost while running {method}, which is not repeatable, so it was not sent again"
                    ),
                ),
                Ok(Waited::Silent(None)) if !self.stats.is_connected() => (
                    &self.stats.failed,
                    format!("lost the connection to NATS while waiting for {target}"),
                ),
                Ok(Waited::Silent(None)) if !retried => {
                    retried = true;
                    self.stats.retried.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%target, "the worker went silent; sending the request to another");
                    continue;
                }
                Ok(Waited::Silent(None)) => (
                    &self.stats.lost,
                    format!("the workers for {target} were lost before replying (tried twice)"),
                ),
                Ok(Waited::Deadline) => {
                    tracing::warn!(
                        %target,
                        seconds = self.deadline.as_secs_f64(),
                        "no reply within [proxy] request-timeout"
                    );
                    (&self.stats.timed_out, NO_RESPONSE.to_string())
                }
                Err(e) => (
                    &self.stats.failed,
                    format!("cannot reach NATS for {target}: {e}"),
                ),
            };
            counter.fetch_add(1, Ordering::Relaxed);
            return Answer::of(&Reply::error(msg));
        }
    }

    /// Remembers that `agent` had a worker just now.
    fn note_served(&self, agent: &str) {
        if let Ok(mut served) = self.served.lock() {
            match served.get_mut(agent) {
                Some(when) => *when = Instant::now(),
                None => {
                    served.insert(agent.to_string(), Instant::now());
                }
            }
        }
    }

    fn served_lately(&self, agent: &str) -> bool {
        self.served
            .lock()
            .ok()
            .and_then(|s| s.get(agent).map(|when| when.elapsed() < SERVED_LATELY))
            .unwrap_or(false)
    }

    /// Publishes the request once and waits for how that attempt ends.
    async fn ask(
        &self,
        subject: &str,
        payload: Bytes,
        deadline: Instant,
    ) -> Result<Waited, String> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, mut rx) = mpsc::unbounded_channel();
        if let Ok(mut waiting) = self.waiting.lock() {
            waiting.insert(id, tx);
        }
        let _unregister = Unregister {
            waiting: &self.waiting,
            id,
        };
        let publish = self.client.publish_with_reply(
            subject.to_string(),
            format!("{}.{id}", self.inbox),
            payload,
        );
        // A client that cannot hand the message on (its buffer full while
        // NATS is away) must not hold the request past its deadline.
        match tokio::time::timeout_at(deadline, publish).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Ok(Waited::Deadline),
        }
        let mut heard = Instant::now();
        let mut parts = Parts::default();
        let mut once = None;
        loop {
            let wake = deadline.min(heard + LOST_AFTER);
            tokio::select! {
                message = rx.recv() => {
                    let Some(message) = message else { return Ok(Waited::Silent(once)) };
                    if message.status == Some(StatusCode::NO_RESPONDERS) {
                        return Ok(Waited::NoResponders);
                    }
                    heard = Instant::now();
                    if has(&message.headers, WORKING) {
                        continue;
                    }
                    if let Some(method) = header(&message.headers, ONCE) {
                        once = Some(method.to_string());
                        continue;
                    }
                    if let Some(part) = header(&message.headers, PART).map(str::to_string) {
                        match parts.add(&part, message)? {
                            Some(answer) => return Ok(Waited::Reply(answer)),
                            None => continue,
                        }
                    }
                    return Ok(Waited::Reply(answer_of(message)));
                }
                () = tokio::time::sleep_until(wake) => {
                    return Ok(if Instant::now() >= deadline { Waited::Deadline } else { Waited::Silent(once) });
                }
            }
        }
    }
}

/// Takes a request out of the waiting table however its wait ends (a
/// reply, an error, or the client's task dropped).
struct Unregister<'a> {
    waiting: &'a Waiting,
    id: u64,
}

impl Drop for Unregister<'_> {
    fn drop(&mut self) {
        if let Ok(mut waiting) = self.waiting.lock() {
            waiting.remove(&self.id);
        }
    }
}

/// Hands each message of the inbox to the request it is for.
async fn pass_on(forwarder: Weak<Forwarder>, mut subscriber: async_nats::Subscriber) {
    use futures::StreamExt;
    while let Some(message) = subscriber.next().await {
        let Some(forwarder) = forwarder.upgrade() else {
            return;
        };
        let id = message
            .subject
            .rsplit('.')
            .next()
            .and_then(|n| n.parse::<u64>().ok());
        let Some(id) = id else { continue };
        if let Ok(waiting) = forwarder.waiting.lock()
            && let Some(tx) = waiting.get(&id)
        {
            let _ = tx.send(message);
        }
    }
}

fn header<'a>(headers: &'a Option<HeaderMap>, name: &str) -> Option<&'a str> {
    headers.as_ref()?.get(name).map(|v| v.as_str())
}

fn has(headers: &Option<HeaderMap>, name: &str) -> bool {
    header(headers, name).is_some()
}

/// The parts of a reply larger than the server's `max_payload`, as they
/// come: in order, since NATS keeps the order of one publisher's messages.
#[derive(Default)]
struct Parts {
    body: Vec<u8>,
    received: usize,
}

impl Parts {
    /// Takes part `k/n`; the whole reply once the last part is in.
    fn add(&mut self, part: &str, message: Message) -> Result<Option<Answer>, String> {
        let numbers = part
            .split_once('/')
            .and_then(|(k, n)| Some((k.parse::<usize>().ok()?, n.parse::<usize>().ok()?)));
        let Some((k, n)) = numbers.filter(|(k, n)| *k == self.received + 1 && k <= n) else {
            return Err(format!(
                "a worker's reply came in parts out of order ({part} after {})",
                self.received
            ));
        };
        self.body.extend_from_slice(&message.payload);
        self.received = k;
        if k < n {
            return Ok(None);
        }
        let mut whole = answer_of(message);
        whole.body = Bytes::from(std::mem::take(&mut self.body));
        Ok(Some(whole))
    }
}

fn answer_of(message: Message) -> Answer {
    Answer {
        refused: has(&message.headers, REFUSED),
        text: has(&message.headers, TEXT),
        body: message.payload,
    }
}

/// The agent a request is for; the worker reads the rest.
fn agent_of(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Route {
        hostname: Option<String>,
    }
    serde_json::from_slice::<Route>(body)
        .ok()
        .and_then(|r| r.hostname)
        .filter(|h| !h.is_empty())
}
