//! What the Lua layer adds to a call, against the same call made straight
//! through the vSphere core, both on the same simulator in the same run.
//!
//!     cargo run --release --example lua_overhead -- SDK_URL [ITERATIONS]
//!
//! (bench/lua.sh starts a simulator and runs this.)

use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vpoller::agents::DirectAgent;
use vpoller::methods::{Limits, MethodDirs, MethodHost};
use vpoller::vsphere::{Credentials, Endpoint, Password, TlsMode};

const SHAPE_100: &str = r#"
return {
  api = 1,
  name = "bench.shape",
  run = function(ctx, req)
    local rows = {}
    for i = 1, 100 do
      rows[i] = { name = "vm-" .. i, ["runtime.powerState"] = "poweredOn",
                  ["summary.quickStats.overallCpuUsage"] = i * 7, disk = { path = "/", free = i * 1024 } }
    end
    local out = {}
    for i, r in ipairs(rows) do
      out[i] = { ["{#VSPHERE.VM.NAME}"] = r.name, state = r["runtime.powerState"], cpu = r["summary.quickStats.overallCpuUsage"] }
    end
    return out, "shaped"
  end,
}
"#;

const NOOP: &str =
    r#"return { api = 1, name = "bench.noop", run = function(ctx, req) return {} end }"#;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    // Run where a daemon runs its requests: in a task on a worker thread.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(url) = args.first().cloned() else {
        eprintln!("usage: lua_overhead SDK_URL [ITERATIONS]");
        std::process::exit(2);
    };
    let iterations: usize = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(2000);
    tokio::spawn(bench(url, iterations))
        .await
        .expect("bench task");
}

async fn bench(url: String, iterations: usize) {
    let endpoint = Endpoint {
        url,
        tls: TlsMode::Insecure,
        deadline: Duration::from_secs(30),
    };
    let credentials = Credentials {
        user: "user".into(),
        password: Password::new("pass"),
    };
    let agent = Arc::new(DirectAgent::new("vcsim", endpoint, credentials));
    let bench_dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(bench_dir.path().join("shape.lua"), SHAPE_100).expect("write bench method");
    std::fs::write(bench_dir.path().join("noop.lua"), NOOP).expect("write bench method");
    let dirs = MethodDirs {
        builtin: Some(std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("methods")),
        admin: vec![bench_dir.path().to_path_buf()],
    };
    let host = MethodHost::new(dirs, Limits::default(), agent.clone());
    let vm_get = json!({"method": "vm.get", "hostname": "vcsim", "name": "DC0_H0_VM1", "properties": ["runtime.powerState"]});
    let warm = host.handle(vm_get.clone()).await;
    assert!(warm.success, "{warm:?}");
    let session = agent.connected().expect("session").clone();

    // The same vSphere work as vm.get: the name through the core's index, then one read.
    let mut direct = Vec::with_capacity(iterations);
    let mut through_lua = Vec::with_capacity(iterations);
    for i in 0..iterations {
        // Alternate which goes first, so neither always finds a warm path.
        if i % 2 == 1 {
            let t = Instant::now();
            let reply = host.handle(vm_get.clone()).await;
            std::hint::black_box(serde_json::to_string(&reply.to_json()).expect("encode"));
            through_lua.push(t.elapsed());
        }
        let t = Instant::now();
        let found = session
            .find_indexed("VirtualMachine", "name", &json!("DC0_H0_VM1"), false)
            .await
            .expect("find")
            .expect("VM");
        let rows = session
            .get_objects(&[found], &["name".into(), "runtime.powerState".into()])
            .await
            .expect("get");
        let reply = json!({"success": 0, "msg": "Successfully retrieved object properties", "result": [rows[0].props]});
        std::hint::black_box(serde_json::to_string(&reply).expect("encode"));
        direct.push(t.elapsed());

        if i % 2 == 0 {
            let t = Instant::now();
            let reply = host.handle(vm_get.clone()).await;
            std::hint::black_box(serde_json::to_string(&reply.to_json()).expect("encode"));
            through_lua.push(t.elapsed());
        }
    }

    let noop = json!({"method": "bench.noop", "hostname": "vcsim"});
    let mut noops = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let t = Instant::now();
        let reply = host.handle(noop.clone()).await;
        std::hint::black_box(serde_json::to_string(&reply.to_json()).expect("encode"));
        noops.push(t.elapsed());
    }
    println!(
        "a method that returns at once (fixed cost of a call): median {:?}",
        median(noops)
    );
    for (file, text, method) in [
        (
            "about.lua",
            r#"return { api = 1, name = "bench.about", run = function(ctx, req) return { ctx:about().apiVersion } end }"#,
            "bench.about",
        ),
        (
            "find.lua",
            r#"return { api = 1, name = "bench.find", run = function(ctx, req) return { ctx:find("VirtualMachine", "name", "DC0_H0_VM1") } end }"#,
            "bench.find",
        ),
        (
            "get.lua",
            r#"return { api = 1, name = "bench.get", run = function(ctx, req) return ctx:get({ type = "VirtualMachine", value = "vm-60" }, { "name", "runtime.powerState" }) end }"#,
            "bench.get",
        ),
    ] {
        std::fs::write(bench_dir.path().join(file), text).expect("write");
        host.reload();
        let req = json!({"method": method, "hostname": "vcsim"});
        let mut times = Vec::new();
        for _ in 0..iterations {
            let t = Instant::now();
            let reply = host.handle(req.clone()).await;
            assert!(reply.success, "{reply:?}");
            times.push(t.elapsed());
        }
        println!("{method}: median {:?}", median(times));
    }
    let mut times = Vec::new();
    for _ in 0..iterations {
        let t = Instant::now();
        std::hint::black_box(
            session
                .find_indexed("VirtualMachine", "name", &json!("DC0_H0_VM1"), false)
                .await
                .expect("find"),
        );
        times.push(t.elapsed());
    }
    println!("direct find: median {:?}", median(times));
    let vm = vpoller::vsphere::MoRef::new("VirtualMachine", "vm-60");
    let mut times = Vec::new();
    for _ in 0..iterations {
        let t = Instant::now();
        std::hint::black_box(
            session
                .get_objects(
                    std::slice::from_ref(&vm),
                    &["name".into(), "runtime.powerState".into()],
                )
                .await
                .expect("get"),
        );
        times.push(t.elapsed());
    }
    println!("direct get: median {:?}", median(times));

    // The same call from a bare mlua state: what mlua's async bridge costs.
    let lua = mlua::Lua::new();
    let bare_session = session.clone();
    let get = lua
        .create_async_function(move |_, ()| {
            let s = bare_session.clone();
            async move {
                let vm = vpoller::vsphere::MoRef::new("VirtualMachine", "vm-60");
                s.get_objects(
                    std::slice::from_ref(&vm),
                    &["name".into(), "runtime.powerState".into()],
                )
                .await
                .map(|rows| rows.len())
                .map_err(mlua::Error::external)
            }
        })
        .expect("function");
    let mut times = Vec::new();
    for _ in 0..iterations {
        let t = Instant::now();
        std::hint::black_box(get.call_async::<usize>(()).await.expect("call"));
        times.push(t.elapsed());
    }
    println!("bare mlua async get: median {:?}", median(times));

    let shape = json!({"method": "bench.shape", "hostname": "vcsim"});
    let mut shaping = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let t = Instant::now();
        let reply = host.handle(shape.clone()).await;
        std::hint::black_box(serde_json::to_string(&reply.to_json()).expect("encode"));
        shaping.push(t.elapsed());
    }
    // A state made per call, as after every reload.
    let mut cold = Vec::with_capacity(200);
    for _ in 0..200 {
        let dirs = MethodDirs {
            builtin: None,
            admin: vec![bench_dir.path().to_path_buf()],
        };
        let fresh = MethodHost::new(dirs, Limits::default(), agent.clone());
        let t = Instant::now();
        let reply = fresh.handle(shape.clone()).await;
        std::hint::black_box(serde_json::to_string(&reply.to_json()).expect("encode"));
        cold.push(t.elapsed());
    }

    let (d, l) = (median(direct), median(through_lua));
    let overhead = l.as_secs_f64() / d.as_secs_f64() - 1.0;
    println!("iterations: {iterations}");
    println!("vm.get straight through the core (index + 1 round trip + encode): median {d:?}");
    println!("vm.get through the Lua method host:                      median {l:?}");
    println!(
        "Lua adds {:.1}% to a single-object vm.get (target < 5%)",
        overhead * 100.0
    );
    let (warm, cold) = (median(shaping), median(cold));
    println!("100-row shaping method, warm state: median {warm:?}");
    println!("100-row shaping method, new state per call: median {cold:?}");
    println!(
        "100-row shaping against the vm.get round trip: warm {:.1}%, new state {:.1}%",
        100.0 * warm.as_secs_f64() / d.as_secs_f64(),
        100.0 * cold.as_secs_f64() / d.as_secs_f64()
    );
}
