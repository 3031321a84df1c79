//! Performance samples: one door for every caller, batched and cached.
//!
//! Requests for one vCenter that arrive within a short window, or while a
//! QueryPerf is out, become one QueryPerf with one PerfQuerySpec per entity (and interval and sample
//! count), split so that no call asks for more metrics than vCenter's
//! `config.vpxd.stats.maxQueryMetrics`. Each caller gets exactly its own
//! series, as if it had asked alone. A call the server rejects whole is
//! retried spec by spec, so one bad spec fails only its own callers.
//!
//! A sample does not change once produced: an answer is kept for one
//! sampling period (20 s for real-time statistics) and a repeat of the
//! question within it costs nothing. The per-entity provider summary and
//! the historical intervals are read once per client.

use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OnceCell, oneshot};

use super::fault::{Error, Result};
use super::moref::MoRef;
use super::session::Session;

/// One series asked for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SeriesQuery {
    pub entity: MoRef,
    pub counter: i64,
    /// `""` for the aggregate, `"*"` for every instance.
    pub instance: String,
    /// The sampling period in seconds (`intervalId`).
    pub interval: i64,
    pub max_sample: i64,
}

/// Tunables; the defaults suit a vCenter.
#[derive(Debug, Clone)]
pub struct PerfOptions {
    /// How long the first request of a batch waits for others; those that
    /// come while a batch is out go in the next one in any case.
    pub window: Duration,
    /// Metrics per QueryPerf; `None` reads vCenter's setting.
    pub max_query_metrics: Option<usize>,
    /// What to use when vCenter's setting cannot be read.
    pub fallback_max_metrics: usize,
    /// Answers kept at most.
    pub cache_entries: usize,
    /// How long an answer is kept; `None` is its sampling period.
    pub max_age: Option<Duration>,
}

impl Default for PerfOptions {
    fn default() -> Self {
        PerfOptions {
            window: Duration::from_millis(1),
            max_query_metrics: None,
            fallback_max_metrics: 64,
            cache_entries: 100_000,
            max_age: None,
        }
    }
}

/// Counters for `status`.
#[derive(Debug, Default)]
pub struct PerfStats {
    pub queries: AtomicU64,
    pub cache_hits: AtomicU64,
    pub batches: AtomicU64,
    pub specs: AtomicU64,
    pub splits: AtomicU64,
    pub retried_alone: AtomicU64,
}

impl PerfStats {
    pub fn to_json(&self) -> Value {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        json!({
            "queries": get(&self.queries),
            "cache_hits": get(&self.cache_hits),
            "batches": get(&self.batches),
            "specs": get(&self.specs),
            "splits": get(&self.splits),
            "retried_alone": get(&self.retried_alone),
        })
    }
}

type Answer = Result<Value>;

/// Where QueryPerf goes: the session, or a recording in tests.
pub(crate) trait PerfSource: Clone + Send + Sync + 'static {
    fn host(&self) -> &str;
    fn query_perf(
        &self,
        specs: &[Value],
    ) -> impl std::future::Future<Output = Result<Value>> + Send;
    /// vCenter's `config.vpxd.stats.maxQueryMetrics`, as OptionValues.
    fn max_query_metrics(&self) -> impl std::future::Future<Output = Result<Value>> + Send;
}

impl PerfSource for Session {
    fn host(&self) -> &str {
        Session::host(self)
    }

    async fn query_perf(&self, specs: &[Value]) -> Result<Value> {
        let manager = self.manager("perfManager")?;
        self.invoke("QueryPerf", &manager, &json!({"querySpec": specs}))
            .await
    }

    async fn max_query_metrics(&self) -> Result<Value> {
        let setting = self.manager("setting")?;
        let args = json!({"name": "config.vpxd.stats.maxQueryMetrics"});
        self.invoke("QueryOptions", &setting, &args).await
    }
}

/// What a PerfQuerySpec is for: entity, interval, sample count.
type SpecKey = (MoRef, i64, i64);

fn spec_key(spec: &Value) -> Option<SpecKey> {
    Some((
        spec.get("entity").and_then(MoRef::from_json)?,
        spec.get("intervalId")?.as_i64()?,
        spec.get("maxSample")?.as_i64()?,
    ))
}

impl SeriesQuery {
    fn spec_key(&self) -> SpecKey {
        (self.entity.clone(), self.interval, self.max_sample)
    }
}

struct Waiting {
    query: SeriesQuery,
    reply: oneshot::Sender<Answer>,
}

/// Requests not yet sent, and whether a flusher is at work on them.
#[derive(Default)]
struct Queue {
    waiting: Vec<Waiting>,
    flushing: bool,
}

/// The batcher and caches of one vCenter.
pub struct PerfQueries {
    options: PerfOptions,
    waiting: Mutex<Queue>,
    cache: Mutex<HashMap<SeriesQuery, (Instant, Value)>>,
    max_metrics: OnceCell<usize>,
    summaries: Mutex<HashMap<MoRef, Value>>,
    intervals: OnceCell<Value>,
    pub stats: PerfStats,
}

impl PerfQueries {
    pub fn new(options: PerfOptions) -> Arc<PerfQueries> {
        Arc::new(PerfQueries {
            options,
            waiting: Mutex::new(Queue::default()),
            cache: Mutex::new(HashMap::new()),
            max_metrics: OnceCell::new(),
            summaries: Mutex::new(HashMap::new()),
            intervals: OnceCell::new(),
            stats: PerfStats::default(),
        })
    }

    /// The samples of one series, as QueryPerf gives them for a spec asking
    /// for that series alone: a list of PerfEntityMetric (empty when the
    /// server has none).
    pub async fn query(self: &Arc<Self>, session: &Session, query: SeriesQuery) -> Answer {
        self.query_through(session, query).await
    }

    pub(crate) async fn query_through<S: PerfSource>(
        self: &Arc<Self>,
        session: &S,
        query: SeriesQuery,
    ) -> Answer {
        self.stats.queries.fetch_add(1, Ordering::Relaxed);
        if let Some(hit) = self.cached(&query) {
            self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(hit);
        }
        let (reply, answer) = oneshot::channel();
        let start_flusher = {
            let Ok(mut queue) = self.waiting.lock() else {
                return Err(Error::Config("perf queue poisoned".into()));
            };
            queue.waiting.push(Waiting { query, reply });
            !std::mem::replace(&mut queue.flushing, true)
        };
        if start_flusher {
            // A task of its own: the batch runs even if this caller gives up.
            let (this, session) = (self.clone(), session.clone());
            tokio::spawn(async move { this.flush_while_waiting(&session).await });
        }
        answer
            .await
            .unwrap_or_else(|_| Err(Error::Config("the perf batch was dropped".into())))
    }

    /// `QueryPerfProviderSummary` of an entity, read once.
    pub async fn summary(&self, session: &Session, entity: &MoRef) -> Result<Value> {
        if let Some(known) = self
            .summaries
            .lock()
            .ok()
            .and_then(|s| s.get(entity).cloned())
        {
            return Ok(known);
        }
        let manager = session.manager("perfManager")?;
        let summary = session
            .invoke(
                "QueryPerfProviderSummary",
                &manager,
                &json!({"entity": entity.to_json()}),
            )
            .await?;
        if let Ok(mut s) = self.summaries.lock() {
            if s.len() >= self.options.cache_entries {
                s.clear();
            }
            s.insert(entity.clone(), summary.clone());
        }
        Ok(summary)
    }

    /// `PerformanceManager.historicalInterval`, read once.
    pub async fn intervals(&self, session: &Session) -> Result<Value> {
        self.intervals
            .get_or_try_init(|| async {
                let intervals = super::collector::manager_property(
                    session,
                    "perfManager",
                    "historicalInterval",
                )
                .await?;
                Ok(intervals.unwrap_or(Value::Array(Vec::new())))
            })
            .await
            .cloned()
    }

    fn cached(&self, query: &SeriesQuery) -> Option<Value> {
        let cache = self.cache.lock().ok()?;
        let (expires, value) = cache.get(query)?;
        (Instant::now() < *expires).then(|| value.clone())
    }

    fn remember(&self, query: &SeriesQuery, value: &Value) {
        let age = self
            .options
            .max_age
            .unwrap_or_else(|| Duration::from_secs(query.interval.max(1) as u64));
        let Ok(mut cache) = self.cache.lock() else {
            return;
        };
        let now = Instant::now();
        if cache.len() >= self.options.cache_entries {
            cache.retain(|_, (expires, _)| *expires > now);
            if cache.len() >= self.options.cache_entries {
                return;
            }
        }
        cache.insert(query.clone(), (now + age, value.clone()));
    }

    /// Sends what waits, batch after batch, until nothing does (group
    /// commit): a request that comes while a QueryPerf is out goes in the
    /// next one, so under load batches grow by themselves and a lone
    /// request waits for nobody. `window` adds a wait before the first.
    async fn flush_while_waiting<S: PerfSource>(&self, session: &S) {
        if !self.options.window.is_zero() {
            tokio::time::sleep(self.options.window).await;
        }
        loop {
            let batch = match self.waiting.lock() {
                Ok(mut queue) => {
                    if queue.waiting.is_empty() {
                        queue.flushing = false;
                        return;
                    }
                    std::mem::take(&mut queue.waiting)
                }
                Err(_) => return,
            };
            self.flush(session, batch).await;
        }
    }

    /// Sends one batch and answers each of its requests.
    async fn flush<S: PerfSource>(&self, session: &S, waiting: Vec<Waiting>) {
        let specs = specs_for(&waiting);
        let max_metrics = self.max_metrics(session).await;
        let calls = split(specs, max_metrics);
        if calls.len() > 1 {
            self.stats
                .splits
                .fetch_add(calls.len() as u64 - 1, Ordering::Relaxed);
        }
        let mut answers: HashMap<SpecKey, Answer> = HashMap::new();
        for call in calls {
            self.run_call(session, call, &mut answers).await;
        }
        for w in waiting {
            let answer = match answers.get(&w.query.spec_key()) {
                Some(Ok(metrics)) => {
                    let own = own_series(metrics, &w.query);
                    self.remember(&w.query, &own);
                    Ok(own)
                }
                Some(Err(e)) => Err(e.clone()),
                None => Ok(Value::Array(Vec::new())),
            };
            let _ = w.reply.send(answer);
        }
    }

    /// One QueryPerf; if the server rejects it whole, each spec alone.
    async fn run_call<S: PerfSource>(
        &self,
        session: &S,
        call: Vec<Value>,
        answers: &mut HashMap<SpecKey, Answer>,
    ) {
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        self.stats
            .specs
            .fetch_add(call.len() as u64, Ordering::Relaxed);
        match session.query_perf(&call).await {
            Ok(metrics) => file_metrics(answers, &call, metrics),
            Err(e) if call.len() == 1 || e.is_unreachable() => {
                for key in call.iter().filter_map(spec_key) {
                    answers.entry(key).or_insert_with(|| Err(e.clone()));
                }
            }
            Err(e) => {
                tracing::debug!(host = %session.host(), specs = call.len(), "QueryPerf rejected a batch ({e}); asking spec by spec");
                for spec in call {
                    self.stats.retried_alone.fetch_add(1, Ordering::Relaxed);
                    let alone = vec![spec];
                    match session.query_perf(&alone).await {
                        Ok(metrics) => file_metrics(answers, &alone, metrics),
                        Err(e) => {
                            if let Some(key) = spec_key(&alone[0]) {
                                answers.entry(key).or_insert(Err(e));
                            }
                        }
                    }
                }
            }
        }
    }

    /// vCenter's `config.vpxd.stats.maxQueryMetrics` (-1 is no limit), read
    /// once; a fault reading it means the fallback.
    async fn max_metrics<S: PerfSource>(&self, session: &S) -> usize {
        if let Some(n) = self.options.max_query_metrics {
            return n.max(1);
        }
        let fallback = self.options.fallback_max_metrics.max(1);
        *self
            .max_metrics
            .get_or_init(|| async {
                match session.max_query_metrics().await {
                    Ok(values) => option_number(&values).map_or(fallback, |n| {
                        if n < 0 {
                            usize::MAX
                        } else {
                            (n as usize).max(1)
                        }
                    }),
                    Err(e) => {
                        tracing::debug!(host = %session.host(), "maxQueryMetrics not readable ({e}); using {fallback}");
                        fallback
                    }
                }
            })
            .await
    }
}

/// One PerfQuerySpec per (entity, interval, sample count), with the union
/// of the series asked for it.
fn specs_for(waiting: &[Waiting]) -> Vec<Value> {
    let mut order: Vec<(MoRef, i64, i64)> = Vec::new();
    let mut metrics: HashMap<(MoRef, i64, i64), Vec<(i64, String)>> = HashMap::new();
    for w in waiting {
        let q = &w.query;
        let key = (q.entity.clone(), q.interval, q.max_sample);
        let ids = metrics.entry(key.clone()).or_insert_with(|| {
            order.push(key.clone());
            Vec::new()
        });
        let id = (q.counter, q.instance.clone());
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    order
        .into_iter()
        .filter_map(|key| {
            let ids = metrics.remove(&key)?;
            let (entity, interval, max_sample) = key;
            let metric_ids: Vec<Value> = ids
                .into_iter()
                .map(|(counter, instance)| json!({"counterId": counter, "instance": instance}))
                .collect();
            Some(json!({
                "entity": entity.to_json(),
                "maxSample": max_sample,
                "metricId": metric_ids,
                "intervalId": interval,
            }))
        })
        .collect()
}

fn metric_count(spec: &Value) -> usize {
    spec.get("metricId")
        .and_then(Value::as_array)
        .map_or(1, Vec::len)
}

/// Groups specs into calls of at most `max_metrics` metrics each, and at
/// most one spec per entity (the answer names only the entity). A spec with
/// more metrics than the cap is a call of its own.
fn split(specs: Vec<Value>, max_metrics: usize) -> Vec<Vec<Value>> {
    let mut calls: Vec<Vec<Value>> = Vec::new();
    let (mut metrics, mut values) = (0, 0);
    for spec in specs {
        let n = metric_count(&spec);
        let samples = spec.get("maxSample").and_then(Value::as_u64).unwrap_or(1) as usize;
        let v = n.saturating_mul(samples);
        let entity = spec.get("entity");
        match calls.last_mut() {
            Some(call)
                if metrics + n <= max_metrics
                    && values + v <= MAX_VALUES_PER_CALL
                    && !call.iter().any(|s| s.get("entity") == entity) =>
            {
                call.push(spec);
                metrics += n;
                values += v;
            }
            _ => {
                calls.push(vec![spec]);
                (metrics, values) = (n, v);
            }
        }
    }
    calls
}

/// Samples one call may bring back (metrics x maxSample): a bound on the
/// size of a response, whatever the metric cap allows.
const MAX_VALUES_PER_CALL: usize = 100_000;

/// Files each returned PerfEntityMetric under the spec of its entity (a
/// call has at most one spec per entity).
fn file_metrics(answers: &mut HashMap<SpecKey, Answer>, call: &[Value], metrics: Value) {
    let keys: Vec<SpecKey> = call.iter().filter_map(spec_key).collect();
    for key in &keys {
        answers
            .entry(key.clone())
            .or_insert_with(|| Ok(Value::Array(Vec::new())));
    }
    let Value::Array(list) = metrics else { return };
    for metric in list {
        let Some(entity) = metric.get("entity").and_then(MoRef::from_json) else {
            continue;
        };
        let Some(key) = keys.iter().find(|k| k.0 == entity) else {
            continue;
        };
        if let Some(Ok(Value::Array(items))) = answers.get_mut(key) {
            items.push(metric);
        }
    }
}

/// What QueryPerf would have answered to this query alone: the entity's
/// metrics with only the series it asked for.
fn own_series(metrics: &Value, query: &SeriesQuery) -> Value {
    let Value::Array(list) = metrics else {
        return Value::Array(Vec::new());
    };
    let mut out = Vec::new();
    for metric in list {
        let Some(series) = metric.get("value").and_then(Value::as_array) else {
            continue;
        };
        let mine: Vec<Value> = series
            .iter()
            .filter(|s| {
                let id = s.get("id");
                let counter = id.and_then(|i| i.get("counterId")).and_then(Value::as_i64);
                let instance = id
                    .and_then(|i| i.get("instance"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                counter == Some(query.counter)
                    && (query.instance == "*" || instance == query.instance)
            })
            .cloned()
            .collect();
        if mine.is_empty() {
            continue;
        }
        let mut own = metric.clone();
        if let Some(obj) = own.as_object_mut() {
            obj.insert("value".into(), Value::Array(mine));
        }
        out.push(own);
    }
    Value::Array(out)
}

/// The number in `[OptionValue{key, value}]`.
fn option_number(values: &Value) -> Option<i64> {
    let first = values.as_array()?.first()?.get("value")?;
    first
        .as_i64()
        .or_else(|| first.as_str().and_then(|s| s.trim().parse().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(vm: &str, counter: i64, instance: &str) -> Waiting {
        let (reply, _) = oneshot::channel();
        Waiting {
            query: SeriesQuery {
                entity: MoRef::new("VirtualMachine", vm),
                counter,
                instance: instance.into(),
                interval: 20,
                max_sample: 1,
            },
            reply,
        }
    }

    #[test]
    fn one_spec_per_entity_with_every_series_asked_for_it() {
        let specs = specs_for(&[
            waiting("vm-1", 6, ""),
            waiting("vm-2", 6, ""),
            waiting("vm-1", 2, "0"),
            waiting("vm-1", 6, ""),
        ]);
        assert_eq!(specs.len(), 2);
        assert_eq!(specs[0]["entity"]["value"], "vm-1");
        assert_eq!(
            specs[0]["metricId"],
            json!([{"counterId": 6, "instance": ""}, {"counterId": 2, "instance": "0"}])
        );
    }

    #[test]
    fn long_series_bound_the_size_of_a_call() {
        let spec = |i: usize| json!({"entity": {"type": "VirtualMachine", "value": format!("vm-{i}")}, "maxSample": 60_000, "metricId": [{"counterId": 1, "instance": ""}]});
        assert_eq!(split(vec![spec(1), spec(2), spec(3)], 64).len(), 3);
    }

    #[test]
    fn a_call_never_holds_two_specs_for_one_entity() {
        let one = |interval: i64| json!({"entity": {"type": "VirtualMachine", "value": "vm-1"}, "intervalId": interval, "maxSample": 1, "metricId": [{"counterId": 1, "instance": ""}]});
        assert_eq!(split(vec![one(20), one(300)], 64).len(), 2);
    }

    #[test]
    fn calls_respect_the_metric_cap() {
        let specs: Vec<Value> = (0..10)
            .map(|i| json!({"entity": {"type": "VirtualMachine", "value": format!("vm-{i}")}, "metricId": [{"counterId": 1, "instance": ""}]}))
            .collect();
        let calls = split(specs, 4);
        let sizes: Vec<usize> = calls.iter().map(Vec::len).collect();
        assert_eq!(sizes, [4, 4, 2]);
    }

    #[test]
    fn each_query_gets_only_its_own_series() {
        let metrics = json!([{
            "entity": {"type": "VirtualMachine", "value": "vm-1"},
            "sampleInfo": [{"interval": 20}],
            "value": [
                {"id": {"counterId": 6, "instance": ""}, "value": [1]},
                {"id": {"counterId": 2, "instance": "0"}, "value": [2]},
            ]
        }]);
        let own = own_series(&metrics, &waiting("vm-1", 2, "0").query);
        assert_eq!(
            own[0]["value"],
            json!([{"id": {"counterId": 2, "instance": "0"}, "value": [2]}])
        );
        assert_eq!(own[0]["sampleInfo"], json!([{"interval": 20}]));
        let all = own_series(&metrics, &waiting("vm-1", 6, "*").query);
        assert_eq!(all[0]["value"].as_array().map(Vec::len), Some(1));
        assert_eq!(
            own_series(&metrics, &waiting("vm-1", 99, "").query),
            json!([])
        );
    }

    /// A server that rejects any call naming `vm-gone`, and answers others
    /// with one series per metric asked for.
    #[derive(Clone, Default)]
    struct Picky {
        calls: Arc<Mutex<Vec<usize>>>,
    }

    impl PerfSource for Picky {
        fn host(&self) -> &str {
            "picky"
        }
        async fn query_perf(&self, specs: &[Value]) -> Result<Value> {
            if let Ok(mut c) = self.calls.lock() {
                c.push(specs.len());
            }
            if specs.iter().any(|s| s["entity"]["value"] == "vm-gone") {
                return Err(Error::Config("InvalidArgument: querySpec.entity".into()));
            }
            Ok(Value::Array(
                specs
                    .iter()
                    .map(|s| {
                        let series: Vec<Value> = s["metricId"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|id| json!({"id": id, "value": [1]}))
                            .collect();
                        json!({"entity": s["entity"], "sampleInfo": [{"interval": 20}], "value": series})
                    })
                    .collect(),
            ))
        }
        async fn max_query_metrics(&self) -> Result<Value> {
            Err(Error::Config("no such option".into()))
        }
    }

    #[tokio::test]
    async fn a_rejected_batch_is_asked_again_spec_by_spec_and_only_the_bad_one_fails() {
        let queries = PerfQueries::new(PerfOptions {
            window: Duration::from_millis(50),
            ..PerfOptions::default()
        });
        let source = Picky::default();
        let ask = |vm: &str| SeriesQuery {
            entity: MoRef::new("VirtualMachine", vm),
            counter: 6,
            instance: String::new(),
            interval: 20,
            max_sample: 1,
        };
        let (a, gone, b) = tokio::join!(
            queries.query_through(&source, ask("vm-1")),
            queries.query_through(&source, ask("vm-gone")),
            queries.query_through(&source, ask("vm-2")),
        );
        assert_eq!(a.expect("vm-1")[0]["entity"]["value"], "vm-1");
        assert_eq!(b.expect("vm-2")[0]["entity"]["value"], "vm-2");
        assert!(
            gone.expect_err("vm-gone")
                .to_string()
                .contains("InvalidArgument")
        );
        let calls = source.calls.lock().map(|c| c.clone()).unwrap_or_default();
        assert_eq!(calls, [3, 1, 1, 1], "one batch, then each spec alone");
        assert_eq!(queries.stats.retried_alone.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn the_option_value_is_read_as_text_or_number() {
        assert_eq!(option_number(&json!([{"key": "k", "value": "4"}])), Some(4));
        assert_eq!(option_number(&json!([{"key": "k", "value": -1}])), Some(-1));
        assert_eq!(option_number(&json!([])), None);
    }
}
