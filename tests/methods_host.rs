//! The Lua method host against the simulator: contract, sandbox, limits,
//! hot reload and concurrency.

mod common;

use common::{Simulator, method_host, method_host_with_agent, request};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use vpoller::methods::{Limits, MethodHost, Reply};

fn simulator() -> &'static Simulator {
    static SIM: OnceLock<Simulator> = OnceLock::new();
    SIM.get_or_init(|| Simulator::start(&[]))
}

/// A host over the shared simulator with one admin directory.
fn admin_host(admin: &Path, limits: Limits) -> Arc<MethodHost> {
    method_host(simulator(), &[admin.to_path_buf()], limits)
}

fn write(dir: &Path, file: &str, text: &str) {
    // Write then rename, as editors do, so the watcher never sees half a file.
    let tmp = dir.join(format!(".{file}.tmp"));
    std::fs::write(&tmp, text).expect("write script");
    std::fs::rename(&tmp, dir.join(file)).expect("rename script");
}

async fn call(host: &Arc<MethodHost>, method: &str, fields: Value) -> Reply {
    host.handle(request(method, fields)).await
}

/// Calls until `check` accepts the reply or `within` passes; returns how
/// long it took.
async fn eventually(
    host: &Arc<MethodHost>,
    method: &str,
    within: Duration,
    check: impl Fn(&Reply) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        let reply = call(host, method, json!({})).await;
        if check(&reply) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "not within {within:?}: last reply {reply:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const COUNT_VMS: &str = r#"
return {
  api = 1,
  name = "test.count",
  description = "how many VMs, version VERSION",
  run = function(ctx, req)
    local vms = ctx:discover("VirtualMachine", { "name" })
    return { count = #vms, version = VERSION }, "counted"
  end,
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_in_method_is_live_within_a_second_and_follows_edits() {
    let admin = tempfile::tempdir().expect("dir");
    let host = admin_host(admin.path(), Limits::default());
    host.watch().expect("watch");
    assert_eq!(
        call(&host, "test.count", json!({})).await.msg,
        "Unknown or missing task/method name"
    );

    write(
        admin.path(),
        "count.lua",
        &COUNT_VMS.replace("VERSION", "1"),
    );
    let took = eventually(&host, "test.count", Duration::from_secs(3), |r| r.success).await;
    assert!(took < Duration::from_secs(1), "took {took:?}");
    let reply = call(&host, "test.count", json!({})).await;
    assert_eq!(reply.msg, "counted");
    assert_eq!(reply.result, Some(json!({"count": 4, "version": 1})));

    write(
        admin.path(),
        "count.lua",
        &COUNT_VMS.replace("VERSION", "2"),
    );
    eventually(&host, "test.count", Duration::from_secs(1), |r| {
        r.result.as_ref().is_some_and(|v| v["version"] == 2)
    })
    .await;

    // A syntax error keeps version 2 live and is reported with file:line.
    write(
        admin.path(),
        "count.lua",
        "return { api = 1, name = \"test.count\",\n  run = function( end }\n",
    );
    let started = Instant::now();
    let file = admin.path().join("count.lua").display().to_string();
    while !host
        .catalog()
        .problems
        .iter()
        .any(|p| p.contains(&format!("{file}:2:")))
    {
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            host.catalog().problems
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reply = call(&host, "test.count", json!({})).await;
    assert_eq!(
        reply.result.as_ref().map(|v| &v["version"]),
        Some(&json!(2)),
        "{reply:?}"
    );

    std::fs::remove_file(admin.path().join("count.lua")).expect("remove");
    eventually(&host, "test.count", Duration::from_secs(1), |r| {
        r.msg == "Unknown or missing task/method name"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_script_overrides_a_built_in_one() {
    let admin = tempfile::tempdir().expect("dir");
    write(
        admin.path(),
        "about.lua",
        r#"return { api = 1, name = "about", run = function(ctx, req) return { "mine" }, "overridden" end }"#,
    );
    let host = admin_host(admin.path(), Limits::default());
    let reply = call(&host, "about", json!({})).await;
    assert_eq!(
        (reply.msg.as_str(), reply.result),
        ("overridden", Some(json!(["mine"])))
    );
    let spec = host.catalog().get("about").cloned().expect("about");
    assert!(spec.file.starts_with(admin.path()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_scripts_claiming_one_name_are_named() {
    let admin = tempfile::tempdir().expect("dir");
    let script = r#"return { api = 1, name = "twice", run = function() return {} end }"#;
    write(admin.path(), "a.lua", script);
    write(admin.path(), "b.lua", script);
    let host = admin_host(admin.path(), Limits::default());
    let problems = host.catalog().problems.join("\n");
    assert!(
        problems.contains("\"twice\" is defined twice"),
        "{problems}"
    );
    assert!(
        problems.contains("a.lua") && problems.contains("b.lua"),
        "{problems}"
    );
}

const LIMITS: Limits = Limits {
    instructions: 50_000_000,
    memory: 16 << 20,
    timeout: Duration::from_secs(3),
    total_memory: 256 << 20,
    max_list_entries: 1000,
    max_string_bytes: 4096,
};

async fn bad_method_fails_alone(body: &str, expect: &str) {
    let admin = tempfile::tempdir().expect("dir");
    write(
        admin.path(),
        "bad.lua",
        &format!("return {{ api = 1, name = \"test.bad\", run = function(ctx, req) {body} end }}"),
    );
    let host = admin_host(admin.path(), LIMITS);
    let (bad, good) = tokio::join!(
        call(&host, "test.bad", json!({})),
        call(
            &host,
            "vm.discover",
            json!({"properties": ["runtime.powerState"]})
        ),
    );
    assert!(!bad.success, "{bad:?}");
    assert!(bad.msg.contains(expect), "{}", bad.msg);
    assert!(
        bad.msg.contains("test.bad"),
        "names the script: {}",
        bad.msg
    );
    assert!(good.success, "{good:?}");
    assert_eq!(
        good.result.as_ref().and_then(Value::as_array).map(Vec::len),
        Some(4)
    );
    // The host still serves the bad method's neighbours afterwards.
    assert!(call(&host, "about", json!({})).await.success);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_loop_fails_only_its_own_request() {
    bad_method_fails_alone("while true do end", "instruction budget").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catching_the_budget_error_does_not_escape_it() {
    bad_method_fails_alone(
        "while true do pcall(function() while true do end end) end",
        "instruction budget",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_bomb_fails_only_its_own_request() {
    bad_method_fails_alone(
        "local t = {} for i = 1, 1e9 do t[i] = string.rep('x', 64) .. i end",
        "memory limit",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_script_hits_the_wall_clock_deadline() {
    let limits = Limits {
        instructions: u64::MAX / 2,
        timeout: Duration::from_millis(500),
        ..LIMITS
    };
    let admin = tempfile::tempdir().expect("dir");
    write(
        admin.path(),
        "slow.lua",
        r#"return { api = 1, name = "test.slow", run = function() local x = 0 while true do x = x + 1 end end }"#,
    );
    let host = admin_host(admin.path(), limits);
    let started = Instant::now();
    let reply = call(&host, "test.slow", json!({})).await;
    assert!(reply.msg.contains("wall-clock deadline"), "{}", reply.msg);
    assert!(started.elapsed() < Duration::from_secs(2));
}

async fn sandbox_refuses(body: &str, expect: &str) {
    let admin = tempfile::tempdir().expect("dir");
    write(
        admin.path(),
        "s.lua",
        &format!("return {{ api = 1, name = \"test.s\", run = function(ctx, req) {body} end }}"),
    );
    let host = admin_host(admin.path(), LIMITS);
    let reply = call(&host, "test.s", json!({})).await;
    assert!(!reply.success, "{body}: {reply:?}");
    assert!(reply.msg.contains(expect), "{body}: {}", reply.msg);
    assert!(
        reply.msg.contains("s.lua:1:"),
        "{body}: file:line in {}",
        reply.msg
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_has_no_io_no_os_execute_no_bytecode_and_no_outside_require() {
    sandbox_refuses("return io.open('/etc/passwd')", "global 'io'").await;
    sandbox_refuses("return os.execute('true')", "field 'execute'").await;
    sandbox_refuses("return string.dump(print)", "field 'dump'").await;
    sandbox_refuses("return (''):dump()", "method 'dump'").await;
    sandbox_refuses("return debug.traceback()", "global 'debug'").await;
    sandbox_refuses(
        "local f = assert(load('\\27Lua')) return f()",
        "binary (precompiled) chunks are not allowed",
    )
    .await;
    sandbox_refuses("return require('../../etc/passwd')", "is not a module name").await;
    sandbox_refuses("return require('os')", "module \"os\" not found").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_calls_share_one_session() {
    let admin = tempfile::tempdir().expect("dir");
    write(
        admin.path(),
        "twice.lua",
        r#"return { api = 1, name = "test.twice", required = { "name" },
             run = function(ctx, req)
               local ref = ctx:find("VirtualMachine", "name", req.name)
               local rows = ctx:get(ref, { "runtime.powerState" })
               return { state = rows[1]["runtime.powerState"], ref = ref }
             end }"#,
    );
    let (host, agent) = method_host_with_agent(
        simulator(),
        &[admin.path().to_path_buf()],
        Limits::default(),
    );
    let calls: Vec<_> = (0..200)
        .map(|i| {
            let host = host.clone();
            let name = [
                "DC0_H0_VM0",
                "DC0_H0_VM1",
                "DC0_C0_RP0_VM0",
                "DC0_C0_RP0_VM1",
            ][i % 4];
            tokio::spawn(async move {
                host.handle(request("test.twice", json!({"name": name})))
                    .await
            })
        })
        .collect();
    for c in calls {
        let reply = c.await.expect("task");
        assert!(reply.success, "{reply:?}");
        assert_eq!(
            reply.result.as_ref().map(|r| &r["state"]),
            Some(&json!("poweredOn"))
        );
    }
    let reply = call(&host, "test.twice", json!({"name": "DC0_H0_VM0"})).await;
    assert_eq!(
        reply.result.map(|r| r["ref"]["type"].clone()),
        Some(json!("VirtualMachine"))
    );
    let session = agent.connected().expect("a session was made");
    assert_eq!(session.logins(), 1, "one vSphere session for 200 calls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_violations_are_reported_as_such() {
    let admin = tempfile::tempdir().expect("dir");
    for (file, body) in [
        ("nothing.lua", "return"),
        ("func.lua", "return function() end"),
        ("cyclic.lua", "local t = {} t.self = t return t"),
        ("returned.lua", "return nil, 'Cannot find object x'"),
        ("raised.lua", "error('boom')"),
    ] {
        let name = file.trim_end_matches(".lua");
        write(
            admin.path(),
            file,
            &format!(
                "return {{ api = 1, name = \"test.{name}\", required = {{ \"name\" }}, run = function(ctx, req) {body} end }}"
            ),
        );
    }
    let host = admin_host(admin.path(), LIMITS);
    let msg = |r: Reply| {
        assert!(!r.success);
        r.msg
    };
    let with_name = json!({"name": "x"});
    assert_eq!(
        msg(call(&host, "test.nothing", json!({})).await),
        "Invalid task request: test.nothing requires name"
    );
    // The Zabbix module's "(null)" is a value, as it was for vPoller.
    assert!(
        msg(call(&host, "test.nothing", json!({"name": "(null)"})).await)
            .contains("returned nothing")
    );
    assert!(msg(call(&host, "test.nothing", with_name.clone()).await).contains("returned nothing"));
    assert!(
        msg(call(&host, "test.func", with_name.clone()).await).contains("cannot be sent as JSON")
    );
    assert!(
        msg(call(&host, "test.cyclic", with_name.clone()).await).contains("cannot be sent as JSON")
    );
    assert_eq!(
        msg(call(&host, "test.returned", with_name.clone()).await),
        "Cannot find object x"
    );
    let raised = msg(call(&host, "test.raised", with_name).await);
    assert!(raised.ends_with("raised.lua:1: boom"), "{raised}");
    assert_eq!(
        msg(host.handle(json!([1, 2])).await),
        "Expected a JSON object as the request, received a list"
    );
    assert_eq!(
        msg(host
            .handle(json!({"method": "about", "hostname": "other"}))
            .await),
        "Unknown or missing agent name"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_that_do_not_register_are_explained() {
    let admin = tempfile::tempdir().expect("dir");
    write(
        admin.path(),
        "noapi.lua",
        "return { name = 'x', run = function() end }",
    );
    write(admin.path(), "norun.lua", "return { api = 1, name = 'y' }");
    write(
        admin.path(),
        "future.lua",
        "return { api = 2, name = 'z', run = function() end }",
    );
    write(admin.path(), "loop.lua", "while true do end");
    write(
        admin.path(),
        "yes.lua",
        "return { api = 1, name = 'w', repeatable = 'yes', run = function() end }",
    );
    write(
        admin.path(),
        "once.lua",
        "return { api = 1, name = 'once', repeatable = false, run = function() end }",
    );
    let host = admin_host(admin.path(), Limits::default());
    let catalog = host.catalog();
    assert_eq!(catalog.get("once").map(|m| m.repeatable), Some(false));
    assert!(catalog.has_unrepeatable());
    let problems = catalog.problems.join("\n");
    assert!(
        problems.contains("yes.lua: field 'repeatable' must be true or false"),
        "{problems}"
    );
    assert!(
        problems.contains("noapi.lua: the script must declare api = 1"),
        "{problems}"
    );
    assert!(
        problems.contains("norun.lua: field 'run' must be a function"),
        "{problems}"
    );
    assert!(
        problems.contains("future.lua: api = 2 is not supported"),
        "{problems}"
    );
    assert!(
        problems.contains("instruction budget") && problems.contains("loop.lua"),
        "{problems}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_in_flight_finishes_on_the_version_it_started_with() {
    let admin = tempfile::tempdir().expect("dir");
    let script = |version: u32| {
        format!(
            r#"return {{ api = 1, name = "test.busy", run = function(ctx, req)
                 local started = os.clock()
                 while os.clock() - started < 0.5 do end
                 return {{ version = {version} }}
               end }}"#
        )
    };
    write(admin.path(), "busy.lua", &script(1));
    let host = admin_host(admin.path(), Limits::default());
    host.watch().expect("watch");
    let in_flight = {
        let host = host.clone();
        tokio::spawn(async move { host.handle(request("test.busy", json!({}))).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let generation = host.catalog().generation;
    write(admin.path(), "busy.lua", &script(2));
    let started = Instant::now();
    while host.catalog().generation == generation {
        assert!(started.elapsed() < Duration::from_secs(2), "no reload");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let first = in_flight.await.expect("task");
    assert_eq!(first.result, Some(json!({"version": 1})), "{first:?}");
    let next = call(&host, "test.busy", json!({})).await;
    assert_eq!(next.result, Some(json!({"version": 2})), "{next:?}");
}
