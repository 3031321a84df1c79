//! Prometheus metrics: what `status` says, in the exposition format.
//!
//! Requests are counted as they end (by method and outcome, with their
//! duration); everything kept elsewhere (sessions, SOAP calls, logins, the
//! mirror, the perf batcher) is read when Prometheus scrapes, so the two
//! never disagree.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::dispatch::Dispatcher;
use super::nats::NatsStats;
use crate::agents::RegistryAgents;
use crate::vsphere::session::{CALL_BUCKETS, CallStats};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: String,
}

/// The request counters a dispatcher feeds.
pub struct RequestMetrics {
    requests: Family<RequestLabels, Counter>,
    durations: Family<MethodLabels, Histogram>,
    script_errors: Family<MethodLabels, Counter>,
}

impl Default for RequestMetrics {
    fn default() -> Self {
        RequestMetrics {
            requests: Family::default(),
            script_errors: Family::default(),
            durations: Family::new_with_constructor(|| {
                // 100 us to about 26 s.
                Histogram::new(exponential_buckets(0.0001, 4.0, 10))
            }),
        }
    }
}

impl RequestMetrics {
    /// One request that ended. `method` is a catalogue name or
    /// `"unknown"`, so that what clients send cannot grow the series.
    pub fn observe(&self, method: &str, reply: &crate::methods::Reply, took: Duration) {
        let success = reply.success;
        if reply.script_failed {
            self.script_errors
                .get_or_create(&MethodLabels {
                    method: method.to_string(),
                })
                .inc();
        }
        let outcome = if success { "success" } else { "failure" };
        let labels = RequestLabels {
            method: method.to_string(),
            outcome,
        };
        self.requests.get_or_create(&labels).inc();
        self.durations
            .get_or_create(&MethodLabels {
                method: method.to_string(),
            })
            .observe(took.as_secs_f64());
    }
}

/// A process's metrics endpoint: its registry, written out on each scrape.
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    /// The metrics of a process that runs methods (daemon, worker).
    pub fn for_methods(
        dispatcher: Arc<Dispatcher>,
        agents: Arc<RegistryAgents>,
        nats: Option<Arc<NatsStats>>,
    ) -> Metrics {
        let mut registry = Registry::with_prefix("vpoller");
        let requests = &dispatcher.metrics;
        registry.register(
            "requests",
            "Requests answered, by method and outcome",
            requests.requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from a request's arrival to its reply, by method",
            requests.durations.clone(),
        );
        registry.register(
            "lua_errors",
            "Method scripts that raised an error or hit a limit, by method",
            requests.script_errors.clone(),
        );
        registry.register_collector(Box::new(Scraped { dispatcher, agents }));
        if let Some(stats) = nats {
            registry.register_collector(Box::new(NatsScraped { stats }));
        }
        Metrics { registry }
    }

    /// The metrics of a frontend forwarding to NATS.
    pub fn for_nats_frontend(stats: Arc<NatsStats>) -> Metrics {
        let mut registry = Registry::with_prefix("vpoller");
        registry.register_collector(Box::new(BuildInfo));
        registry.register_collector(Box::new(NatsScraped { stats }));
        Metrics { registry }
    }

    /// The metrics of the proxy: its queue, workers and counters, read
    /// from its status.
    pub fn for_proxy(status: Arc<dyn super::wire::Management>) -> Metrics {
        let mut registry = Registry::with_prefix("vpoller");
        registry.register_collector(Box::new(ProxyScraped { status }));
        Metrics { registry }
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!("cannot write the metrics: {e}");
        }
        out
    }
}

/// What is read from the proxy's status at each scrape.
struct ProxyScraped {
    status: Arc<dyn super::wire::Management>,
}

impl std::fmt::Debug for ProxyScraped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProxyScraped")
    }
}

impl Collector for ProxyScraped {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let status = self.status.status();
        let requests = &status["requests"];
        build_info(&mut encoder)?;
        for (value, name, help) in [
            (
                number(&status, "workers_connected"),
                "proxy_workers",
                "Workers connected to the proxy",
            ),
            (
                number(requests, "queued"),
                "proxy_requests_queued",
                "Requests waiting for a worker",
            ),
            (
                number(requests, "in_flight"),
                "requests_in_flight",
                "Requests with a worker",
            ),
        ] {
            family(
                &mut encoder,
                name,
                help,
                &[(vec![], ConstGauge::new(value as i64))],
            )?;
        }
        for (value, name, help) in [
            (
                number(requests, "done"),
                "proxy_requests_answered",
                "Replies passed on to clients",
            ),
            (
                number(requests, "dropped_expired"),
                "proxy_requests_expired",
                "Requests dropped after waiting past [proxy] request-timeout",
            ),
            (
                number(requests, "lost_with_a_worker"),
                "proxy_requests_lost",
                "Requests lost with a worker that died",
            ),
        ] {
            family(
                &mut encoder,
                name,
                help,
                &[(vec![], ConstCounter::new(value))],
            )?;
        }
        Ok(())
    }
}

#[derive(Debug)]
struct BuildInfo;

impl Collector for BuildInfo {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        build_info(&mut encoder)
    }
}

/// The NATS connection and the requests that went over it.
struct NatsScraped {
    stats: Arc<NatsStats>,
}

impl std::fmt::Debug for NatsScraped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NatsScraped")
    }
}

impl Collector for NatsScraped {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let stats = &self.stats;
        family(
            &mut encoder,
            "nats_connected",
            "1 while the NATS connection is up",
            &[(vec![], ConstGauge::new(i64::from(stats.is_connected())))],
        )?;
        let outcomes: Vec<(Labels, ConstCounter<u64>)> = super::nats::OUTCOMES
            .iter()
            .map(|o| {
                (
                    vec![("outcome", o.to_string())],
                    ConstCounter::new(stats.outcome(o)),
                )
            })
            .collect();
        family(
            &mut encoder,
            "nats_requests",
            "Requests over NATS by outcome (a frontend: forwarded; a worker: answered)",
            &outcomes,
        )?;
        family(
            &mut encoder,
            "nats_retries",
            "Requests sent again after their worker went silent",
            &[(
                vec![],
                ConstCounter::new(stats.retried.load(Ordering::Relaxed)),
            )],
        )?;
        if let Some(connection) = stats.connection() {
            family(
                &mut encoder,
                "nats_connects",
                "Connections made to NATS, the first one and every reconnect",
                &[(vec![], ConstCounter::new(connection.connects))],
            )?;
            let direction = |d: &str| vec![("direction", d.to_string())];
            family(
                &mut encoder,
                "nats_messages",
                "NATS messages, in and out",
                &[
                    (direction("in"), ConstCounter::new(connection.in_messages)),
                    (direction("out"), ConstCounter::new(connection.out_messages)),
                ],
            )?;
            family(
                &mut encoder,
                "nats_bytes",
                "NATS payload bytes, in and out",
                &[
                    (direction("in"), ConstCounter::new(connection.in_bytes)),
                    (direction("out"), ConstCounter::new(connection.out_bytes)),
                ],
            )?;
        }
        Ok(())
    }
}

fn build_info(encoder: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
    family(
        encoder,
        "build_info",
        "The vpoller build",
        &[(
            vec![("version", env!("CARGO_PKG_VERSION").to_string())],
            ConstGauge::new(1i64),
        )],
    )
}

/// What is read from the rest of the process at each scrape.
struct Scraped {
    dispatcher: Arc<Dispatcher>,
    agents: Arc<RegistryAgents>,
}

impl std::fmt::Debug for Scraped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scraped")
    }
}

type Labels = Vec<(&'static str, String)>;

/// One metric family: name, help, and a value per label set.
fn family<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    series: &[(Labels, M)],
) -> Result<(), std::fmt::Error> {
    let Some((_, first)) = series.first() else {
        return Ok(());
    };
    let mut metric = encoder.encode_descriptor(name, help, None, first.metric_type())?;
    for (labels, value) in series {
        value.encode(metric.encode_family(labels)?)?;
    }
    Ok(())
}

fn agent(name: &str) -> Labels {
    vec![("agent", name.to_string())]
}

fn number(value: &Value, key: &str) -> u64 {
    value.get(key).and_then(Value::as_u64).unwrap_or(0)
}

impl Collector for Scraped {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let stats = &self.dispatcher.stats;
        let catalog = self.dispatcher.host().catalog();
        let gauge = |v: i64| ConstGauge::new(v);
        family(
            &mut encoder,
            "requests_in_flight",
            "Requests being worked on",
            &[(
                vec![],
                gauge(stats.in_flight.load(Ordering::Relaxed) as i64),
            )],
        )?;
        family(
            &mut encoder,
            "methods_loaded",
            "Methods in the catalogue",
            &[(vec![], gauge(catalog.methods.len() as i64))],
        )?;
        build_info(&mut encoder)?;
        let sessions = self.agents.sessions();
        let logged_in = sessions
            .iter()
            .filter(|(_, c)| c.session().is_logged_in())
            .count();
        family(
            &mut encoder,
            "sessions",
            "vSphere sessions logged in",
            &[(vec![], gauge(logged_in as i64))],
        )?;
        let per_agent =
            |f: &dyn Fn(&crate::vsphere::Client) -> u64| -> Vec<(Labels, ConstCounter<u64>)> {
                sessions
                    .iter()
                    .map(|(name, c)| (agent(name), ConstCounter::new(f(c))))
                    .collect()
            };
        let by_call: Vec<(String, Vec<(String, CallStats)>)> = sessions
            .iter()
            .map(|(n, c)| (n.clone(), c.session().calls_by_method()))
            .collect();
        let calls: Vec<(Labels, ConstCounter<u64>)> = by_call
            .iter()
            .flat_map(|(n, calls)| {
                calls.iter().map(move |(call, s)| {
                    (
                        vec![("agent", n.clone()), ("call", call.clone())],
                        ConstCounter::new(s.count),
                    )
                })
            })
            .collect();
        family(
            &mut encoder,
            "soap_calls",
            "SOAP calls made to vSphere, by agent and vim25 method (the mirror's own included)",
            &calls,
        )?;
        let durations: Vec<(Labels, CallHistogram)> = by_call
            .iter()
            .flat_map(|(n, calls)| {
                calls.iter().map(move |(call, s)| {
                    (
                        vec![("agent", n.clone()), ("call", call.clone())],
                        CallHistogram(s.clone()),
                    )
                })
            })
            .collect();
        family(
            &mut encoder,
            "soap_call_duration_seconds",
            "Time of SOAP calls to vSphere, by agent and vim25 method",
            &durations,
        )?;
        family(
            &mut encoder,
            "request_soap_calls",
            "SOAP calls made to vSphere for requests (all but the mirror's own)",
            &per_agent(&|c| c.request_calls()),
        )?;
        let logins: Vec<(Labels, ConstCounter<u64>)> = sessions
            .iter()
            .flat_map(|(n, c)| {
                let [ok, refused, failed] = c.session().login_outcomes();
                [("success", ok), ("refused", refused), ("failure", failed)]
                    .into_iter()
                    .map(move |(outcome, v)| {
                        (
                            vec![("agent", n.clone()), ("outcome", outcome.to_string())],
                            ConstCounter::new(v),
                        )
                    })
            })
            .collect();
        family(
            &mut encoder,
            "logins",
            "Login calls to vSphere, by agent and outcome (refused: wrong credentials)",
            &logins,
        )?;
        let perf: Vec<(String, Value)> = sessions
            .iter()
            .map(|(n, c)| (n.clone(), c.perf_stats()))
            .collect();
        for (key, name, help) in [
            (
                "cache_hits",
                "perf_cache_hits",
                "Performance answers served from the cache",
            ),
            (
                "batches",
                "perf_batches",
                "QueryPerf calls made for batched requests",
            ),
            ("queries", "perf_queries", "Performance series asked for"),
        ] {
            let series: Vec<(Labels, ConstCounter<u64>)> = perf
                .iter()
                .map(|(n, p)| (agent(n), ConstCounter::new(number(p, key))))
                .collect();
            family(&mut encoder, name, help, &series)?;
        }
        let mirrors: Vec<(String, Value)> = sessions
            .iter()
            .map(|(n, c)| (n.clone(), c.mirror_status()))
            .filter(|(_, m)| !m.is_null())
            .collect();
        let live: Vec<(Labels, ConstGauge<i64>)> = mirrors
            .iter()
            .map(|(n, m)| (agent(n), gauge(i64::from(m["state"] == "live"))))
            .collect();
        family(
            &mut encoder,
            "mirror_live",
            "1 while the agent's inventory mirror answers requests",
            &live,
        )?;
        let objects: Vec<(Labels, ConstGauge<i64>)> = mirrors
            .iter()
            .map(|(n, m)| (agent(n), gauge(number(m, "objects") as i64)))
            .collect();
        family(
            &mut encoder,
            "mirror_objects",
            "Objects in the mirror",
            &objects,
        )?;
        let age: Vec<(Labels, ConstGauge<f64>)> = mirrors
            .iter()
            .map(|(n, m)| {
                let age = m["last_update_age_seconds"].as_f64().unwrap_or(f64::NAN);
                (agent(n), ConstGauge::new(age))
            })
            .collect();
        family(
            &mut encoder,
            "mirror_last_update_age_seconds",
            "Since the mirror last heard from vCenter",
            &age,
        )?;
        for (key, name, help) in [
            (
                "updates_applied",
                "mirror_updates_applied",
                "Object updates applied to the mirror",
            ),
            ("resyncs", "mirror_resyncs", "Full resyncs of the mirror"),
            (
                "served",
                "mirror_reads_served",
                "Reads answered from the mirror",
            ),
            (
                "fallbacks",
                "mirror_reads_fallen_back",
                "Reads the mirror could not answer",
            ),
        ] {
            let series: Vec<(Labels, ConstCounter<u64>)> = mirrors
                .iter()
                .map(|(n, m)| (agent(n), ConstCounter::new(number(m, key))))
                .collect();
            family(&mut encoder, name, help, &series)?;
        }
        Ok(())
    }
}

/// A session's calls of one method, as a Prometheus histogram.
struct CallHistogram(CallStats);

impl EncodeMetric for CallHistogram {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::MetricEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        let stats = &self.0;
        let mut buckets: Vec<(f64, u64)> = CALL_BUCKETS
            .iter()
            .copied()
            .zip(stats.buckets.iter().copied())
            .collect();
        let counted: u64 = stats.buckets.iter().sum();
        buckets.push((f64::INFINITY, stats.count.saturating_sub(counted)));
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            stats.seconds,
            stats.count,
            &buckets,
            None,
        )
    }

    fn metric_type(&self) -> prometheus_client::metrics::MetricType {
        prometheus_client::metrics::MetricType::Histogram
    }
}

/// The method label of a request: its method if the catalogue has it.
pub fn method_label(catalogue_has: impl Fn(&str) -> bool, method: Option<&str>) -> &str {
    match method {
        Some(m) if catalogue_has(m) => m,
        _ => "unknown",
    }
}
