//! A worker on NATS: one queue subscription per agent it serves, each
//! request run by the local dispatcher and answered on its reply subject.

use async_nats::HeaderMap;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::{Semaphore, watch};

use super::service::{EndpointCounters, Service};
use super::{
    ANY_AGENT, NatsStats, ONCE, PART, REFUSED, TEXT, WORKING, WORKING_EVERY, connect, subject_of,
};
use crate::agents::RegistryAgents;
use crate::methods::Reply;
use crate::server::config::Config;
use crate::server::dispatch::Dispatcher;
use crate::server::route::Answer;

/// How long a worker waits for a flush: its last replies at a stop, a
/// once-announcement before its method runs. With the server gone a flush
/// would wait for it forever.
const FLUSH_WITHIN: Duration = Duration::from_secs(2);

/// Requests a worker takes from NATS per request it runs at once; a flood
/// beyond that waits in NATS, not in this process's memory.
const HELD_PER_SLOT: usize = 16;

/// More than any machine runs at once; a larger `[worker] concurrency` is
/// taken as this (a semaphore has a ceiling of its own).
const MAX_RUNNING: usize = 1 << 20;

/// How often a worker looks at the registry for agents to serve or drop.
const RESUBSCRIBE_EVERY: Duration = Duration::from_millis(500);

/// Answers its agents' subjects until `stop`, then stops taking requests
/// and finishes those it holds within `grace`. At most `capacity` requests
/// run at once; the others wait their turn, and their frontends are told
/// they are being worked on.
pub async fn serve_worker(
    config: &Config,
    capacity: usize,
    dispatcher: Arc<Dispatcher>,
    agents: Arc<RegistryAgents>,
    stats: Arc<NatsStats>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let client = connect(&config.nats, "vpoller worker").await?;
    stats.connected(&client, &config.nats.url);
    let id = client
        .new_inbox()
        .rsplit('.')
        .next()
        .unwrap_or_default()
        .to_string();
    let _ = stats.service_id.set(id.clone());
    let service = Arc::new(Service::new(id));
    let announcing = super::service::announce(client.clone(), service.clone()).await?;
    let mut subscriptions: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
    let capacity = capacity.clamp(1, MAX_RUNNING);
    let room = Arc::new(Semaphore::new(capacity));
    // u32: what acquire_many takes, to wait for all of them at a stop.
    let held_permits = u32::try_from(capacity * HELD_PER_SLOT).unwrap_or(u32::MAX);
    let held = Arc::new(Semaphore::new(held_permits as usize));
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
        // By subject: every agent served, and the one for requests that
        // name no agent.
        let mut wanted: HashMap<String, String> = agents
            .enabled()
            .into_iter()
            .filter(|a| config.nats.agents.is_empty() || config.nats.agents.contains(a))
            .map(|agent| (subject_of(&agent), agent))
            .collect();
        wanted.insert(ANY_AGENT.to_string(), "(none)".to_string());
        subscriptions.retain(|subject, task| {
            let keep = wanted.contains_key(subject) && !task.is_finished();
            if !keep {
                task.abort();
                if !wanted.contains_key(subject) {
                    service.remove(subject);
                }
            }
            keep
        });
        for (subject, agent) in wanted {
            if subscriptions.contains_key(&subject) {
                continue;
            }
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
            tracing::info!(%agent, %subject, "serving on NATS");
            let answering = Answering {
                client: client.clone(),
                dispatcher: dispatcher.clone(),
                stats: stats.clone(),
                endpoint: service.add(&subject, &agent),
                done: done_tx.clone(),
                room: room.clone(),
                held: held.clone(),
            };
            subscriptions.insert(
                subject,
                tokio::spawn(answer_requests(subscriber, answering)),
            );
        }
        if let Ok(mut s) = stats.subjects.lock() {
            let mut subjects: Vec<String> = subscriptions.keys().cloned().collect();
            subjects.sort();
            *s = subjects;
        }
    }
    // No new requests; the ones being answered finish.
    for (_, task) in subscriptions.drain() {
        task.abort();
    }
    announcing.abort();
    // Every permit back: no request held any more.
    let _ = tokio::time::timeout(config.grace, held.acquire_many(held_permits)).await;
    let _ = tokio::time::timeout(FLUSH_WITHIN, client.flush()).await;
    Ok(())
}

/// What answering one subscription's requests needs.
#[derive(Clone)]
struct Answering {
    client: async_nats::Client,
    dispatcher: Arc<Dispatcher>,
    stats: Arc<NatsStats>,
    /// This subject's counts in the service API.
    endpoint: Arc<EndpointCounters>,
    /// Told when the subscription ends, so that the worker subscribes again.
    done: tokio::sync::mpsc::UnboundedSender<()>,
    /// Requests run at once, for all subscriptions: `[worker] concurrency`.
    room: Arc<Semaphore>,
    /// Requests taken from NATS and not yet answered, running or waiting
    /// for room (and told the frontend so); a stop waits for them all.
    held: Arc<Semaphore>,
}

/// Answers the requests of one subscription, each in a task of its own.
async fn answer_requests(mut subscriber: async_nats::Subscriber, answering: Answering) {
    use futures::StreamExt;
    while let Some(message) = subscriber.next().await {
        let Some(reply_to) = message.reply.clone() else {
            continue;
        };
        // Past this many held, stop reading: NATS keeps the rest.
        let Ok(held) = answering.held.clone().acquire_owned().await else {
            break;
        };
        answering.stats.requests.fetch_add(1, Ordering::Relaxed);
        let answering = answering.clone();
        tokio::spawn(async move {
            answer_one(&answering, reply_to, &message.payload).await;
            drop(held);
        });
    }
    // The subscription ended (the connection closed for good).
    let _ = answering.done.send(());
}

/// Runs one request. While it takes longer than [`WORKING_EVERY`], the
/// frontend is told so at that pace: a worker that dies goes silent, and
/// the frontend sends the request to another member.
async fn answer_one(answering: &Answering, reply_to: async_nats::Subject, payload: &[u8]) {
    let client = &answering.client;
    let started = std::time::Instant::now();
    let reply = {
        // Waiting for room counts as working: a busy worker is not a lost one.
        let work = async {
            let _running = answering.room.acquire().await;
            if let Some(method) = unrepeatable_method(&answering.dispatcher, payload) {
                signal(client, &reply_to, ONCE, &method).await;
                // On its way before the method can change anything.
                let _ = tokio::time::timeout(FLUSH_WITHIN, client.flush()).await;
            }
            answering.dispatcher.handle_reply(payload).await
        };
        tokio::pin!(work);
        loop {
            match tokio::time::timeout(WORKING_EVERY, &mut work).await {
                Ok(reply) => break reply,
                Err(_) => {
                    answering.stats.working.fetch_add(1, Ordering::Relaxed);
                    signal(client, &reply_to, WORKING, "1").await;
                }
            }
        }
    };
    let error = (!reply.success).then_some(reply.msg.as_str());
    answering.endpoint.record(started.elapsed(), error);
    let sent = match send_answer(client, reply_to.clone(), Answer::of(&reply)).await {
        // Say why, rather than leave the frontend to take the silence for
        // a lost worker and ask again.
        Err(e) if e.kind() == async_nats::client::PublishErrorKind::MaxPayloadExceeded => {
            tracing::warn!("cannot send a reply over NATS: {e}");
            let error = Reply::error(format!("the worker could not send its reply: {e}"));
            send_answer(client, reply_to, Answer::of(&error)).await
        }
        sent => sent,
    };
    match sent {
        Ok(()) => answering.stats.answered.fetch_add(1, Ordering::Relaxed),
        Err(e) => {
            tracing::warn!("cannot send a reply over NATS: {e}");
            answering.stats.failed.fetch_add(1, Ordering::Relaxed)
        }
    };
}

/// A message with one header and no payload, to the frontend waiting on
/// `reply_to`. Best effort: a lost one looks like a lost worker.
async fn signal(
    client: &async_nats::Client,
    reply_to: &async_nats::Subject,
    name: &str,
    value: &str,
) {
    let mut headers = HeaderMap::new();
    headers.insert(name, value);
    let _ = client
        .publish_with_headers(reply_to.clone(), headers, Bytes::new())
        .await;
}

/// The request's method when the catalogue says it must not run twice.
fn unrepeatable_method(dispatcher: &Dispatcher, payload: &[u8]) -> Option<String> {
    let catalog = dispatcher.host().catalog();
    if !catalog.has_unrepeatable() {
        return None;
    }
    #[derive(serde::Deserialize)]
    struct Method {
        method: Option<String>,
    }
    let method = serde_json::from_slice::<Method>(payload).ok()?.method?;
    catalog
        .get(&method)
        .filter(|spec| !spec.repeatable)
        .map(|spec| spec.name.clone())
}

/// Room left in a message for the headers of a part.
const HEADER_ROOM: usize = 1024;

/// Sends a reply: as one message, or in parts when it is larger than the
/// server's `max_payload` (a discover of a large inventory can be). The
/// flags ride on every message that carries them; parts say `k/n`.
async fn send_answer(
    client: &async_nats::Client,
    reply_to: async_nats::Subject,
    answer: Answer,
) -> Result<(), async_nats::PublishError> {
    let headers = |part: Option<(usize, usize)>| {
        let mut headers = HeaderMap::new();
        if answer.refused {
            headers.insert(REFUSED, "1");
        }
        if answer.text {
            headers.insert(TEXT, "1");
        }
        if let Some((k, n)) = part {
            headers.insert(PART, format!("{k}/{n}").as_str());
        }
        headers
    };
    let room = client
        .server_info()
        .max_payload
        .saturating_sub(HEADER_ROOM)
        .max(HEADER_ROOM);
    if answer.body.len() > room {
        let count = answer.body.len().div_ceil(room);
        for (i, start) in (0..answer.body.len()).step_by(room).enumerate() {
            let end = (start + room).min(answer.body.len());
            client
                .publish_with_headers(
                    reply_to.clone(),
                    headers(Some((i + 1, count))),
                    answer.body.slice(start..end),
                )
                .await?;
        }
        return Ok(());
    }
    if answer.refused || answer.text {
        client
            .publish_with_headers(reply_to, headers(None), answer.body.clone())
            .await
    } else {
        client.publish(reply_to, answer.body).await
    }
}
