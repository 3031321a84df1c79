//! The NATS service API ("micro", ADR-32): every worker answers
//! `$SRV.PING`, `$SRV.INFO` and `$SRV.STATS` (each also as `.vpoller` and
//! `.vpoller.<id>`), so `nats micro ls`, `nats micro info vpoller` and
//! `nats micro stats vpoller` list the workers, the agents each one serves
//! (one endpoint per agent subject) and their request counts.
//!
//! Written here rather than with async-nats's `service` feature: that one
//! subscribes the endpoints itself and counts only replies sent with its
//! `respond`, which carries no headers, and a worker's replies need them
//! (working messages, refused, text).

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::ANY_AGENT;

/// The service's name, as `nats micro` shows it.
pub const NAME: &str = "vpoller";

/// One endpoint's requests, kept by the worker as it answers them.
#[derive(Default)]
pub struct EndpointCounters {
    requests: AtomicU64,
    errors: AtomicU64,
    nanos: AtomicU64,
    last_error: Mutex<String>,
}

impl EndpointCounters {
    /// One reply sent; `error` is its message when it was not a success.
    pub fn record(&self, took: Duration, error: Option<&str>) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(nanos, Ordering::Relaxed);
        if let Some(error) = error {
            self.errors.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut last) = self.last_error.lock() {
                error.clone_into(&mut last);
            }
        }
    }
}

struct Endpoint {
    agent: String,
    counters: Arc<EndpointCounters>,
}

/// A worker's identity in the service API and the endpoints it serves.
pub struct Service {
    id: String,
    started: SystemTime,
    endpoints: Mutex<BTreeMap<String, Endpoint>>,
}

impl Service {
    pub fn new(id: String) -> Service {
        Service {
            id,
            started: SystemTime::now(),
            endpoints: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// An endpoint for `subject`, or the one it already had (its counts
    /// survive a resubscription).
    pub fn add(&self, subject: &str, agent: &str) -> Arc<EndpointCounters> {
        let Ok(mut endpoints) = self.endpoints.lock() else {
            return Arc::default();
        };
        endpoints
            .entry(subject.to_string())
            .or_insert_with(|| Endpoint {
                agent: agent.to_string(),
                counters: Arc::default(),
            })
            .counters
            .clone()
    }

    pub fn remove(&self, subject: &str) {
        if let Ok(mut endpoints) = self.endpoints.lock() {
            endpoints.remove(subject);
        }
    }

    fn head(&self, kind: &str) -> serde_json::Map<String, Value> {
        let mut head = serde_json::Map::new();
        head.insert("type".into(), json!(format!("io.nats.micro.v1.{kind}")));
        head.insert("name".into(), json!(NAME));
        head.insert("id".into(), json!(self.id));
        head.insert("version".into(), json!(env!("CARGO_PKG_VERSION")));
        head.insert("metadata".into(), json!({}));
        head
    }

    /// The answer to a `$SRV` verb, or `None` for one this does not know.
    pub fn answer(&self, verb: &str) -> Option<Value> {
        let endpoints = self.endpoints.lock().ok()?;
        let name_of = |subject: &str| {
            if subject == ANY_AGENT {
                "any".to_string()
            } else {
                subject.rsplit('.').next().unwrap_or(subject).to_string()
            }
        };
        let answer = match verb {
            "PING" => self.head("ping_response"),
            "INFO" => {
                let mut info = self.head("info_response");
                info.insert(
                    "description".into(),
                    json!("vSphere requests by agent (vpoller workers)"),
                );
                let list: Vec<Value> = endpoints
                    .iter()
                    .map(|(subject, e)| {
                        json!({"name": name_of(subject), "subject": subject,
                               "queue_group": subject, "metadata": {"agent": e.agent}})
                    })
                    .collect();
                info.insert("endpoints".into(), Value::Array(list));
                info
            }
            "STATS" => {
                let mut stats = self.head("stats_response");
                stats.insert(
                    "started".into(),
                    json!(humantime::format_rfc3339_micros(self.started).to_string()),
                );
                let list: Vec<Value> = endpoints
                    .iter()
                    .map(|(subject, e)| {
                        let c = &e.counters;
                        let requests = c.requests.load(Ordering::Relaxed);
                        let nanos = c.nanos.load(Ordering::Relaxed);
                        let last_error = c.last_error.lock().map(|l| l.clone()).unwrap_or_default();
                        json!({
                            "name": name_of(subject),
                            "subject": subject,
                            "queue_group": subject,
                            "num_requests": requests,
                            "num_errors": c.errors.load(Ordering::Relaxed),
                            "last_error": last_error,
                            "processing_time": nanos,
                            "average_processing_time": nanos.checked_div(requests).unwrap_or(0),
                        })
                    })
                    .collect();
                stats.insert("endpoints".into(), Value::Array(list));
                stats
            }
            _ => return None,
        };
        Some(Value::Object(answer))
    }
}

/// Answers the service API's requests until the connection closes.
pub async fn announce(
    client: async_nats::Client,
    service: Arc<Service>,
) -> Result<tokio::task::JoinHandle<()>, String> {
    use futures::StreamExt;
    let mut subscriptions = Vec::new();
    for subject in [
        "$SRV.*".to_string(),
        format!("$SRV.*.{NAME}"),
        format!("$SRV.*.{NAME}.{}", service.id),
    ] {
        subscriptions.push(
            client
                .subscribe(subject.clone())
                .await
                .map_err(|e| format!("cannot subscribe to {subject}: {e}"))?,
        );
    }
    let mut requests = futures::stream::select_all(subscriptions);
    Ok(tokio::spawn(async move {
        while let Some(message) = requests.next().await {
            let Some(reply_to) = message.reply else {
                continue;
            };
            let verb = message.subject.split('.').nth(1).unwrap_or_default();
            let Some(answer) = service.answer(verb) else {
                continue;
            };
            let _ = client
                .publish(reply_to, bytes::Bytes::from(answer.to_string()))
                .await;
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_follow_the_endpoints_and_their_replies() {
        let service = Service::new("abc".into());
        let counters = service.add("vpoller.v1.agent.vc01_2Eexample_2Eorg", "vc01.example.org");
        service.add(ANY_AGENT, "(none)");
        counters.record(Duration::from_millis(2), None);
        counters.record(Duration::from_millis(4), Some("Cannot find object x"));
        // A resubscription keeps the counts.
        let again = service.add("vpoller.v1.agent.vc01_2Eexample_2Eorg", "vc01.example.org");
        assert!(Arc::ptr_eq(&counters, &again));
        let stats = service.answer("STATS").expect("stats");
        assert_eq!(stats["type"], "io.nats.micro.v1.stats_response");
        let first = &stats["endpoints"][0];
        assert_eq!(first["name"], "vc01_2Eexample_2Eorg");
        assert_eq!(first["num_requests"], 2);
        assert_eq!(first["num_errors"], 1);
        assert_eq!(first["last_error"], "Cannot find object x");
        assert_eq!(first["average_processing_time"], 3_000_000);
        assert_eq!(stats["endpoints"][1]["name"], "any");
        let info = service.answer("INFO").expect("info");
        assert_eq!(
            info["endpoints"][0]["metadata"]["agent"],
            "vc01.example.org"
        );
        service.remove(ANY_AGENT);
        let ping = service.answer("PING").expect("ping");
        assert_eq!(
            (ping["name"].clone(), ping["id"].clone()),
            (json!("vpoller"), json!("abc"))
        );
        assert_eq!(
            service.answer("INFO").expect("info")["endpoints"]
                .as_array()
                .map(Vec::len),
            Some(1)
        );
        assert!(service.answer("SCHEMA").is_none());
    }
}
