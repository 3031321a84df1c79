//! Performance queries through the core: concurrent requests share
//! QueryPerf calls (counted at the simulator), the metric cap splits them,
//! and a repeat within the sampling period is answered from memory.
//! Zabbix's empty `perf-interval` means "not given", as it did for vPoller.
//! (vcsim answers any spec, even for an entity that does not exist, so a
//! bad spec failing alone is tested on a picky fake in perf_query.rs.)

mod common;

use common::{Simulator, project_dir, request};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use vpoller::agents::DirectAgent;
use vpoller::methods::{Limits, MethodDirs, MethodHost};
use vpoller::vsphere::perf_query::PerfOptions;
use vpoller::vsphere::{Credentials, Password, SessionOptions};

const PROBE: &str = r#"
return {
  api = 1,
  name = "probe.perf",
  description = "One series through ctx:perf, and what came back",
  run = function(ctx, req)
    local entity = { type = "VirtualMachine", value = req.key }
    if not req.key then
      entity = ctx:find("VirtualMachine", "name", req.name)
    end
    local ok, metrics = pcall(ctx.perf, ctx, {
      entity = entity, counter = req["counter-name"], instance = req.instance or "", interval = 20,
    })
    if not ok then return nil, "failed: " .. metrics.kind end
    local out = {}
    for _, m in ipairs(metrics) do
      for _, s in ipairs(m.value) do
        out[#out + 1] = { entity = m.entity.value, counter = s.id.counterId, instance = s.id.instance, samples = #s.value }
      end
    end
    return out
  end,
}
"#;

/// 25 VMs on the standalone host and 25 in the cluster.
const NAMES: usize = 50;

fn vm_name(i: usize) -> String {
    if i < 25 {
        format!("DC0_H0_VM{i}")
    } else {
        format!("DC0_C0_RP0_VM{}", i - 25)
    }
}

fn simulator() -> Simulator {
    Simulator::start(&[
        "-standalone",
        "1",
        "-cluster",
        "1",
        "-host",
        "1",
        "-vm",
        "25",
        "-trace",
    ])
}

struct Bed {
    host: Arc<MethodHost>,
    _dir: tempfile::TempDir,
}

fn bed(sim: &Simulator, perf: PerfOptions) -> Bed {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("probe.lua"), PROBE).expect("script");
    let agent = DirectAgent::new(
        "vcsim",
        sim.endpoint(),
        Credentials {
            user: "user".into(),
            password: Password::new("pass"),
        },
    )
    .with_options(SessionOptions {
        perf,
        ..SessionOptions::default()
    });
    let dirs = MethodDirs {
        builtin: Some(project_dir().join("methods")),
        admin: vec![dir.path().to_path_buf()],
    };
    Bed {
        host: MethodHost::new(dirs, Limits::default(), Arc::new(agent)),
        _dir: dir,
    }
}

fn options(window_ms: u64, cap: Option<usize>) -> PerfOptions {
    PerfOptions {
        window: Duration::from_millis(window_ms),
        max_query_metrics: cap,
        max_age: Some(Duration::from_secs(1)),
        ..PerfOptions::default()
    }
}

async fn probe(host: &Arc<MethodHost>, fields: Value) -> Value {
    host.handle(request("probe.perf", fields)).await.to_json()
}

/// All at once, each on its own task.
async fn probe_all(host: &Arc<MethodHost>, asks: Vec<Value>) -> Vec<Value> {
    let tasks: Vec<_> = asks
        .into_iter()
        .map(|fields| {
            let host = host.clone();
            tokio::spawn(async move { probe(&host, fields).await })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("probe task"));
    }
    out
}

const COUNTERS: [&str; 5] = [
    "cpu.usagemhz.megaHertz.average",
    "cpu.usage.percent.average",
    "mem.usage.percent.average",
    "disk.usage.kiloBytesPerSecond.average",
    "net.usage.kiloBytesPerSecond.average",
];

/// Resolves names first, so that the requests under test arrive together.
async fn warm(host: &Arc<MethodHost>, n: usize) {
    for i in 0..n {
        let reply = probe(
            host,
            json!({"name": vm_name(i), "counter-name": "cpu.usagemhz.megaHertz.average"}),
        )
        .await;
        assert_eq!(reply["success"], 0, "{reply}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_one_query_and_each_gets_its_own_series() {
    let sim = simulator();
    let bed = bed(&sim, options(500, None));
    warm(&bed.host, NAMES).await;
    let before = sim.calls_of("QueryPerf");
    let asks: Vec<Value> = (0..NAMES)
        .map(|i| json!({"name": vm_name(i), "counter-name": COUNTERS[1 + i % 4]}))
        .collect();
    let replies = probe_all(&bed.host, asks).await;
    let calls = sim.calls_of("QueryPerf") - before;
    assert_eq!(calls, 1, "50 metrics in one window, under the cap of 64");
    let mut entities = std::collections::HashSet::new();
    for reply in &replies {
        assert_eq!(reply["success"], 0, "{reply}");
        let rows = reply["result"].as_array().expect("rows");
        assert_eq!(rows.len(), 1, "exactly its own series: {reply}");
        assert_eq!(rows[0]["instance"], "");
        assert!(rows[0]["samples"].as_i64() >= Some(1), "{reply}");
        entities.insert(rows[0]["entity"].as_str().unwrap_or_default().to_string());
    }
    assert_eq!(
        entities.len(),
        NAMES,
        "each reply is for the VM it asked about"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metric_cap_splits_a_batch() {
    let sim = simulator();
    let bed = bed(&sim, options(500, Some(4)));
    warm(&bed.host, 10).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = sim.calls_of("QueryPerf");
    let asks: Vec<Value> = (0..10)
        .map(|i| json!({"name": vm_name(i), "counter-name": "cpu.usagemhz.megaHertz.average"}))
        .collect();
    for reply in probe_all(&bed.host, asks).await {
        assert_eq!(reply["success"], 0, "{reply}");
    }
    assert_eq!(
        sim.calls_of("QueryPerf") - before,
        3,
        "10 metrics, 4 a call"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_within_the_sampling_period_costs_no_call() {
    let sim = simulator();
    let bed = bed(&sim, options(5, None));
    let ask = json!({"name": vm_name(0), "counter-name": "cpu.usage.percent.average"});
    let first = probe(&bed.host, ask.clone()).await;
    let before = sim.calls_of("QueryPerf");
    let again = probe(&bed.host, ask.clone()).await;
    assert_eq!(sim.calls_of("QueryPerf"), before, "answered from memory");
    assert_eq!(first, again);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let later = probe(&bed.host, ask).await;
    assert_eq!(later["success"], 0);
    assert_eq!(
        sim.calls_of("QueryPerf"),
        before + 1,
        "asked again once it aged"
    );
}

/// What vPoller 0.7.3 answered (tests/data/golden): an empty or absent
/// perf-interval is the real-time path; "(null)", the Zabbix module's
/// literal, is the name of an interval that does not exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_perf_interval_means_not_given() {
    let sim = Simulator::start(&[]);
    let bed = bed(&sim, PerfOptions::default());
    let base = json!({"name": "DC0_H0_VM0", "counter-name": "cpu.usagemhz.megaHertz.average"});
    let with = |interval: Value| {
        let mut r = base.clone();
        r["perf-interval"] = interval;
        r
    };
    let golden: Value = serde_json::from_str(
        &std::fs::read_to_string(
            project_dir().join("tests/data/golden/vm.perf.metric.get.reply.json"),
        )
        .expect("golden reply"),
    )
    .expect("JSON");
    for interval in [json!(""), json!(null)] {
        let reply = bed
            .host
            .handle(request("vm.perf.metric.get", with(interval.clone())))
            .await
            .to_json();
        assert_eq!(reply["success"], golden["success"], "{interval}: {reply}");
        assert_eq!(reply["msg"], golden["msg"], "{interval}");
        let keys = |v: &Value| -> Vec<String> {
            let mut k: Vec<String> = v["result"][0]
                .as_object()
                .map(|o| o.keys().cloned().collect())
                .unwrap_or_default();
            k.sort();
            k
        };
        assert_eq!(keys(&reply), keys(&golden), "{interval}");
    }
    let mut absent = base.clone();
    if let Some(o) = absent.as_object_mut() {
        o.remove("perf-interval");
    }
    let reply = bed
        .host
        .handle(request("vm.perf.metric.get", absent))
        .await
        .to_json();
    assert_eq!(reply["success"], 0, "{reply}");
    let reply = bed
        .host
        .handle(request("vm.perf.metric.get", with(json!("(null)"))))
        .await
        .to_json();
    assert_eq!(
        reply["msg"], "Historical interval (null) does not exists",
        "{reply}"
    );
}
