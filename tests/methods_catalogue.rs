//! Methods beyond the recordings: non-ASCII names, the methods vcsim cannot
//! serve (on recorded replies), the name index, and the error paths.

mod common;

use common::{Simulator, host_for, method_host, replaying_proxy, request};
use serde_json::{Value, json};
use std::sync::{Arc, OnceLock};
use vpoller::agents::DirectAgent;
use vpoller::methods::{Limits, MethodHost};
use vpoller::vsphere::{Endpoint, TlsMode};

fn simulator() -> &'static Simulator {
    static SIM: OnceLock<Simulator> = OnceLock::new();
    SIM.get_or_init(|| Simulator::start(&[]))
}

/// A VM's reference, through the core's name index.
async fn vm_named(session: &vpoller::vsphere::Client, name: &str) -> vpoller::vsphere::MoRef {
    session
        .find_indexed("VirtualMachine", "name", &json!(name), false)
        .await
        .expect("find")
        .unwrap_or_else(|| panic!("no VM {name}"))
}

fn host_at(url: &str) -> (Arc<MethodHost>, Arc<DirectAgent>) {
    let endpoint = Endpoint {
        url: url.to_string(),
        tls: TlsMode::Verify,
        deadline: std::time::Duration::from_secs(20),
    };
    host_for("vcsim", endpoint, &[], Limits::default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zabbix_lld_keeps_a_key_whose_value_is_null() {
    let sim = simulator();
    let host = common::method_host(sim, &[], vpoller::methods::Limits::default());
    for helper in ["vpoller.helpers.zabbix", "vpoller.helpers.czabbix"] {
        let reply = host
            .handle(request(
                "vm.alarm.get",
                json!({"name": "DC0_H0_VM1", "helper": helper}),
            ))
            .await;
        let out = reply.raw.expect("helper output");
        assert!(
            out.contains("\"{#VSPHERE.VM.ALARM.ACKNOWLEDGEDBYUSER}\": null"),
            "{helper}: {out}"
        );
    }
    let reply = host
        .handle(request(
            "vm.alarm.get",
            json!({"name": "DC0_H0_VM1", "helper": "vpoller.helpers.cclient"}),
        ))
        .await;
    let out = reply.raw.expect("helper output");
    assert!(out.contains("\"acknowledgedByUser\": null"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_ascii_names_go_in_and_out_unharmed() {
    // A simulator of its own: this test renames a VM.
    let sim = Simulator::start(&[]);
    let session = sim.session().await;
    let vm = vm_named(&session, "DC0_H0_VM1").await;
    let name = "测试-VM-ü";
    session
        .invoke("Rename_Task", &vm, &json!({"newName": name}))
        .await
        .expect("rename");
    let host = method_host(&sim, &[], Limits::default());

    let reply = host
        .handle(request(
            "vm.get",
            json!({"name": name, "properties": ["runtime.powerState"]}),
        ))
        .await;
    assert!(reply.success, "{reply:?}");
    assert_eq!(
        reply.result,
        Some(json!([{"name": name, "runtime.powerState": "poweredOn"}]))
    );
    let wire = reply.wire();
    assert!(wire.contains(name), "sent as UTF-8, not escaped: {wire}");

    let reply = host.handle(request("vm.discover", json!({}))).await;
    let names: Vec<Value> = reply
        .result
        .expect("rows")
        .as_array()
        .expect("list")
        .iter()
        .map(|r| r["name"].clone())
        .collect();
    assert!(names.contains(&json!(name)), "{names:?}");

    let reply = host
        .handle(request(
            "vm.discover",
            json!({"helper": "vpoller.helpers.zabbix"}),
        ))
        .await;
    let lld = reply.raw.expect("helper output");
    assert!(
        lld.contains("\"测试-VM-ü\""),
        "Zabbix gets UTF-8, as vPoller's helper wrote it (json.dumps(..., ensure_ascii=False)): {lld}"
    );
    let parsed: Value = serde_json::from_str(&lld).expect("valid JSON");
    assert!(
        parsed["data"]
            .as_array()
            .expect("data")
            .iter()
            .any(|m| m["{#VSPHERE.VM.NAME}"] == name)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_process_get_on_recorded_replies() {
    let proxy = replaying_proxy(
        &simulator().url,
        vec![(
            "ListProcessesInGuest",
            include_str!("data/soap/list-processes-in-guest.xml"),
        )],
    )
    .await;
    let (host, _) = host_at(&proxy);
    let creds = json!({"name": "DC0_H0_VM0", "username": "root", "password": "secret"});
    let reply = host.handle(request("vm.process.get", creds.clone())).await;
    assert!(reply.success, "{reply:?}");
    assert_eq!(
        reply.result,
        Some(
            json!([{"cmdLine": "/sbin/init splash"}, {"cmdLine": "nginx: worker process"}, {"cmdLine": "nginx: master process /usr/sbin/nginx"}])
        )
    );
    let mut with_props = creds.clone();
    with_props["properties"] = json!(["pid", "owner", "nope"]);
    let reply = host.handle(request("vm.process.get", with_props)).await;
    assert_eq!(
        reply.result.expect("rows")[1],
        json!({"cmdLine": "nginx: worker process", "pid": 812, "owner": "www-data", "nope": "(null)"})
    );

    let mut zabbix = creds.clone();
    zabbix["helper"] = json!("vpoller.helpers.zabbix");
    assert_eq!(
        host.handle(request("vm.process.get", zabbix.clone()))
            .await
            .raw
            .as_deref(),
        Some("3")
    );
    zabbix["key"] = json!("nginx");
    assert_eq!(
        host.handle(request("vm.process.get", zabbix))
            .await
            .raw
            .as_deref(),
        Some("2")
    );

    let reply = host
        .handle(request("vm.process.get", json!({"name": "DC0_H0_VM0"})))
        .await;
    assert_eq!(
        reply.msg,
        "Need username and password for authentication in guest system DC0_H0_VM0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vsan_health_get_on_recorded_replies_and_its_clear_failure_without() {
    let proxy = replaying_proxy(
        &simulator().url,
        vec![(
            "QueryHostStatus",
            include_str!("data/soap/query-host-status.xml"),
        )],
    )
    .await;
    let (host, _) = host_at(&proxy);
    let reply = host
        .handle(request("vsan.health.get", json!({"name": "DC0_H0"})))
        .await;
    assert!(reply.success, "{reply:?}");
    assert_eq!(
        reply.result,
        Some(
            json!([{"name": "DC0_H0", "uuid": "52e4dd1c-6d83-9a6b-1f9e-0a3a0c1d3e2f", "nodeUuid": "5f3e2a1b-9c8d-7e6f-5a4b-3c2d1e0f9a8b", "health": "healthy"}])
        )
    );

    let (plain, _) = host_at(&simulator().url);
    let reply = plain
        .handle(request("vsan.health.get", json!({"name": "DC0_H0"})))
        .await;
    assert!(!reply.success);
    assert!(
        reply.msg.starts_with("Cannot get VSAN health state:")
            && reply.msg.contains("ManagedObjectNotFound"),
        "{}",
        reply.msg
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_object_costs_one_round_trip_and_unknown_names_are_not_remembered() {
    let (host, agent) = host_at(&simulator().url);
    let get = |name: &str| {
        request(
            "vm.get",
            json!({"name": name, "properties": ["runtime.powerState"]}),
        )
    };
    assert!(host.handle(get("DC0_H0_VM0")).await.success);
    let session = agent.connected().expect("session").clone();
    let before = session.calls();
    for name in ["DC0_H0_VM1", "DC0_C0_RP0_VM0", "DC0_C0_RP0_VM1"] {
        assert!(host.handle(get(name)).await.success);
    }
    assert_eq!(
        session.calls() - before,
        3,
        "one RetrievePropertiesEx per vm.get once the index is built"
    );

    let before = session.calls();
    assert_eq!(
        host.handle(get("ghost")).await.msg,
        "Cannot find object ghost"
    );
    assert_eq!(
        host.handle(get("ghost")).await.msg,
        "Cannot find object ghost"
    );
    assert_eq!(
        session.calls() - before,
        2,
        "a missing name is looked up again each time, not cached"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_paths_the_simulator_can_produce() {
    let (host, _) = host_at(&simulator().url);
    let cases = [
        (
            "vm.get",
            json!({"name": "nope", "properties": ["name"]}),
            "Cannot find object nope",
        ),
        (
            "vm.perf.metric.get",
            json!({"name": "nope", "counter-name": "cpu.usage.percent.average"}),
            "Cannot find object: nope",
        ),
        (
            "vm.perf.metric.get",
            json!({"name": "DC0_H0_VM0", "counter-name": "no.such.counter.x"}),
            "Unknown performance counter requested",
        ),
        (
            "vm.perf.metric.info",
            json!({"name": "DC0_H0_VM0", "counter-name": "no.such.counter.x"}),
            "Unknown performance counter requested",
        ),
        (
            "vm.perf.metric.get",
            json!({"name": "DC0_H0_VM0", "counter-name": "cpu.usage.percent.average", "perf-interval": "Past decade"}),
            "Historical interval Past decade does not exists",
        ),
        (
            "vm.perf.metric.get",
            json!({"name": "DC0_H0_VM0", "counter-name": "cpu.usage.percent.average", "max-sample": "many"}),
            "Invalid message, cannot retrieve performance metrics",
        ),
        (
            "vm.snapshot.get",
            json!({"name": "DC0_H0_VM1"}),
            "No snapshots found for: DC0_H0_VM1",
        ),
        (
            "vm.snapshot.get",
            json!({"name": "nope"}),
            "Cannot find object: nope",
        ),
        (
            "vm.disk.get",
            json!({"name": "DC0_H0_VM0", "key": "/nope"}),
            "Unable to find guest disk /nope",
        ),
        (
            "host.get",
            json!({"name": "(null)", "properties": ["name"]}),
            "Cannot find object (null)",
        ),
        (
            "vm.process.get",
            json!({"name": "DC0_H0_VM0"}),
            "Need username and password for authentication in guest system DC0_H0_VM0",
        ),
    ];
    for (method, fields, msg) in cases {
        let reply = host.handle(request(method, fields.clone())).await;
        assert!(!reply.success, "{method} {fields}: {reply:?}");
        assert_eq!(reply.msg, msg, "{method} {fields}");
    }
    // max-sample as a number or a string, and instance, for every entity type.
    for (method, name) in [
        ("vm.perf.metric.get", "DC0_H0_VM0"),
        ("host.perf.metric.get", "DC0_H0"),
    ] {
        for max in [json!(3), json!("3")] {
            let reply = host
                .handle(request(method, json!({"name": name, "counter-name": "cpu.usagemhz.megaHertz.average", "max-sample": max, "instance": "0"})))
                .await;
            let rows = reply.result.clone().unwrap_or_default();
            assert_eq!(
                rows.as_array().map(Vec::len),
                Some(3),
                "{method} {max}: {reply:?}"
            );
            assert!(
                rows.as_array()
                    .expect("rows")
                    .iter()
                    .all(|r| r["instance"] == "0")
            );
        }
    }
    let reply = host
        .handle(request("cluster.perf.metric.get", json!({"name": "DC0_C0", "counter-name": "cpu.usagemhz.megaHertz.average", "perf-interval": "Past day", "max-sample": 2})))
        .await;
    assert!(reply.success, "{reply:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_snapshot_tree_is_listed() {
    let sim = Simulator::start(&[]);
    let session = sim.session().await;
    let vm = vm_named(&session, "DC0_H0_VM0").await;
    // Two more levels below the launcher's snapshot.
    for name in ["child", "grandchild"] {
        session
            .invoke(
                "CreateSnapshot_Task",
                &vm,
                &json!({"name": name, "memory": false, "quiesce": false}),
            )
            .await
            .expect("snapshot");
    }
    let host = method_host(&sim, &[], Limits::default());
    let reply = host
        .handle(request("vm.snapshot.get", json!({"name": "DC0_H0_VM0"})))
        .await;
    let names: Vec<Value> = reply
        .result
        .expect("snapshots")
        .as_array()
        .expect("list")
        .iter()
        .map(|s| s["name"].clone())
        .collect();
    assert_eq!(
        names,
        [
            json!("vcsim-snapshot-1"),
            json!("child"),
            json!("grandchild")
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_helpers_end_even_refusals_with_a_nul() {
    let (host, _) = host_at(&simulator().url);
    let refused = host.handle(json!({"method": "no.such.method", "hostname": "vcsim", "helper": "vpoller.helpers.cclient"})).await;
    let raw = refused.raw.expect("helper output");
    assert!(raw.ends_with('\0'), "{raw:?}");
    assert_eq!(
        raw.trim_end_matches('\0'),
        r#"{"success": 1, "msg": "Unknown or missing task/method name"}"#
    );
    let refused = host.handle(json!({"method": "about", "hostname": "elsewhere", "helper": "vpoller.helpers.czabbix"})).await;
    assert_eq!(
        refused.raw.as_deref(),
        Some("Unknown or missing agent name\0")
    );
    let plain = host.handle(json!({"method": "no.such.method", "hostname": "vcsim", "helper": "vpoller.helpers.zabbix"})).await;
    assert_eq!(
        plain.raw.as_deref(),
        Some("Unknown or missing task/method name"),
        "no NUL for other helpers"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_name_index_is_refreshed_not_trusted() {
    let sim = Simulator::start(&[]);
    let host = method_host(&sim, &[], Limits::default());
    let get = |name: &str| {
        request(
            "vm.get",
            json!({"name": name, "properties": ["runtime.powerState"]}),
        )
    };
    assert!(
        host.handle(get("DC0_H0_VM1")).await.success,
        "builds the index"
    );

    // Renamed behind vpoller's back: the old name must not answer with the
    // renamed VM, and the new name must be found.
    let session = sim.session().await;
    let vm = vm_named(&session, "DC0_H0_VM1").await;
    session
        .invoke("Rename_Task", &vm, &json!({"newName": "renamed-vm"}))
        .await
        .expect("rename");

    let old = host.handle(get("DC0_H0_VM1")).await;
    assert_eq!(old.msg, "Cannot find object DC0_H0_VM1", "{old:?}");
    let new = host.handle(get("renamed-vm")).await;
    assert_eq!(
        new.result,
        Some(json!([{"name": "renamed-vm", "runtime.powerState": "poweredOn"}]))
    );
}
