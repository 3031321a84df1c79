//! The live inventory mirror, against the simulator and the real daemon:
//! the initial load equals a direct read byte for byte, changes show in
//! the next replies, a lost session and a hung or restarted vCenter are
//! survived with correct replies, reads cost vCenter nothing while live,
//! and one agent's trouble does not slow another's replies.
//!
//! Each test has a simulator of its own: the change tests change it, and a
//! mirror costs vcsim a full re-collect per change (see the reference on
//! vcsim's update engine), so inventories stay small except for the load
//! test.

mod common;

use common::services::*;
use common::{Simulator, eventually};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use vpoller::vsphere::{Client, MoRef};

/// The paths the tests read, pinned so the mirror holds them from the
/// first build.
const PINNED: &str = "VirtualMachine:runtime.powerState, VirtualMachine:runtime.host, \
    VirtualMachine:config.hardware.numCPU, VirtualMachine:config.hardware.memoryMB, \
    VirtualMachine:guest.ipAddress, VirtualMachine:guest.hostName, VirtualMachine:snapshot, \
    VirtualMachine:datastore, VirtualMachine:network, VirtualMachine:config.uuid, \
    HostSystem:runtime.connectionState, HostSystem:vm, HostSystem:parent, \
    HostSystem:summary.hardware.cpuModel, Datastore:summary.capacity, Datastore:info.url, \
    Datastore:host, Network:summary.accessible, ClusterComputeResource:host, \
    ResourcePool:owner, Datacenter:vmFolder";

const VM_PATHS: &str = "runtime.powerState,runtime.host,config.hardware.numCPU,config.hardware.memoryMB,guest.ipAddress,guest.hostName,snapshot,datastore,network,config.uuid";

/// A configuration file with `[mirror]` and `[vsphere]` options.
fn config(dir: &tempfile::TempDir, mirror: &str, vsphere: &str) -> PathBuf {
    let path = dir.path().join("vpoller.conf");
    let text = format!("[mirror]\npin = {PINNED}\n{mirror}\n[vsphere]\n{vsphere}\n");
    std::fs::write(&path, text).expect("write config");
    path
}

/// A daemon with the mirror on (or off) for the registry's agents.
struct Daemon {
    _service: Service,
    front: String,
    mgmt: String,
    _dir: tempfile::TempDir,
}

fn daemon_for(reg: &Registry, mirror: &str, vsphere: &str) -> Daemon {
    let dir = tempfile::tempdir().expect("dir");
    let conf = config(&dir, mirror, vsphere);
    let conf = conf.display().to_string();
    let (service, front, mgmt) = daemon_with(reg, &["-f", &conf]);
    Daemon {
        _service: service,
        front,
        mgmt,
        _dir: dir,
    }
}

impl Daemon {
    /// The raw reply to one request, as the client printed it.
    fn ask(&self, args: &[&str]) -> String {
        self.ask_within(args, 10_000)
    }

    fn ask_within(&self, args: &[&str], timeout_ms: u64) -> String {
        let timeout = timeout_ms.to_string();
        let mut all = vec!["client", "-e", &self.front, "-r", "1", "-t", &timeout];
        all.extend_from_slice(args);
        let out = vpoller(&all);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn json(&self, args: &[&str]) -> Value {
        let text = self.ask(args);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
    }

    /// The session entry of an agent in `status`.
    fn session(&self, agent: &str) -> Value {
        let status = wait_for_status(&self.mgmt, "daemon");
        status["result"]["sessions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["hostname"] == agent)
            .cloned()
            .unwrap_or(Value::Null)
    }

    fn mirror(&self, agent: &str) -> Value {
        self.session(agent)["mirror"].clone()
    }

    /// Sends a first request (sessions are made on demand) and waits until
    /// the agent's mirror is live.
    fn wait_live(&self, agent: &str, within: Duration) -> Value {
        self.ask(&["-m", "about", "-V", agent]);
        let deadline = Instant::now() + within;
        loop {
            let mirror = self.mirror(agent);
            if mirror["state"] == "live" {
                return mirror;
            }
            assert!(
                Instant::now() < deadline,
                "the mirror of {agent} is not live: {mirror}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Asks vm.get until the mirror of `vcsim` has been built again and is
    /// live; every reply meanwhile must be right.
    fn rebuilt_with_correct_replies(&self, what: &str) {
        eventually(Duration::from_secs(15), what, || {
            let reply = self.ask(&POWER);
            assert!(
                reply.contains(POWERED_ON),
                "a wrong reply meanwhile: {reply}"
            );
            let mirror = self.mirror("vcsim");
            if mirror["state"] == "live" && mirror["builds"].as_u64() >= Some(2) {
                Ok(())
            } else {
                Err(mirror.to_string())
            }
        });
    }

    fn request_calls(&self, agent: &str) -> u64 {
        self.session(agent)["request_soap_calls"]
            .as_u64()
            .unwrap_or(u64::MAX)
    }
}

fn names_of(reply: &Value) -> Vec<String> {
    reply["result"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["name"].as_str().map(str::to_string))
        .collect()
}

async fn vm_named(session: &Client, name: &str) -> MoRef {
    session
        .find("VirtualMachine", "name", &json!(name))
        .await
        .expect("find")
        .unwrap_or_else(|| panic!("no VM {name}"))
}

/// Requests whose replies must be the same with and without the mirror.
fn comparable_requests() -> Vec<Vec<&'static str>> {
    vec![
        vec!["-m", "vm.discover", "-p", VM_PATHS],
        vec!["-m", "vm.discover"],
        vec![
            "-m",
            "host.discover",
            "-p",
            "runtime.connectionState,vm,parent,summary.hardware.cpuModel",
        ],
        vec![
            "-m",
            "datastore.discover",
            "-p",
            "summary.capacity,info.url,host",
        ],
        vec!["-m", "net.discover", "-p", "summary.accessible"],
        vec!["-m", "cluster.discover", "-p", "host"],
        vec!["-m", "datacenter.discover", "-p", "vmFolder"],
        vec!["-m", "resource.pool.discover", "-p", "owner"],
        vec!["-m", "vm.get", "-n", "DC0_C0_RP0_VM0", "-p", VM_PATHS],
        vec!["-m", "vm.get", "-n", "DC1_C1_RP0_VM499", "-p", VM_PATHS],
        vec!["-m", "vm.get", "-n", "no-such-vm", "-p", VM_PATHS],
        vec![
            "-m",
            "host.get",
            "-n",
            "DC0_C0_H0",
            "-p",
            "runtime.connectionState,vm",
        ],
        vec!["-m", "host.vm.get", "-n", "DC0_C0_H0"],
        vec!["-m", "vm.host.get", "-n", "DC0_C0_RP0_VM1"],
        vec!["-m", "vm.datastore.get", "-n", "DC0_C0_RP0_VM1"],
        vec!["-m", "cluster.get", "-n", "DC0_C1", "-p", "host"],
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_initial_load_of_2000_vms_answers_as_a_direct_read_does() {
    let sim = Simulator::start(&[
        "-dc",
        "2",
        "-cluster",
        "2",
        "-host",
        "10",
        "-vm",
        "500",
        "-standalone",
        "0",
    ]);
    let reg = Registry::new(&sim.url);
    let mirrored = daemon_for(&reg, "", "");
    let direct = daemon_for(&reg, "enabled = false", "");
    let live = mirrored.wait_live("vcsim", Duration::from_secs(60));
    assert!(live["objects"].as_u64().unwrap_or(0) > 2000, "{live}");
    let calls_before = mirrored.request_calls("vcsim");
    for request in comparable_requests() {
        let mut args = request.clone();
        args.extend_from_slice(&["-V", "vcsim"]);
        let (from_mirror, from_vcenter) = (mirrored.ask(&args), direct.ask(&args));
        assert!(from_mirror.len() > 40, "{request:?}: {from_mirror}");
        assert!(
            from_mirror == from_vcenter,
            "{request:?} differs:\nmirror: {}\ndirect: {}",
            &from_mirror[..from_mirror.len().min(600)],
            &from_vcenter[..from_vcenter.len().min(600)]
        );
    }
    let discovered = mirrored.json(&["-m", "vm.discover", "-V", "vcsim"]);
    assert_eq!(names_of(&discovered).len(), 2000);
    assert_eq!(
        mirrored.request_calls("vcsim"),
        calls_before,
        "every read was served from memory"
    );
    let mirror = mirrored.mirror("vcsim");
    assert_eq!(mirror["fallbacks"], 0, "{mirror}");
    assert_eq!(direct.mirror("vcsim"), Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_show_in_the_next_replies_within_two_seconds() {
    let sim = Simulator::start(&[]);
    let reg = Registry::new(&sim.url);
    let mirrored = daemon_for(&reg, "", "");
    let direct = daemon_for(&reg, "enabled = false", "");
    mirrored.wait_live("vcsim", Duration::from_secs(20));
    let calls_before = mirrored.request_calls("vcsim");
    let admin = sim.session().await;
    let within = Duration::from_secs(2);
    // The mirror and a direct read agree (both said once the change shows).
    let agree = |args: &[&str]| -> Result<(), String> {
        let mut args = args.to_vec();
        args.extend_from_slice(&["-V", "vcsim"]);
        let (m, d) = (mirrored.ask(&args), direct.ask(&args));
        if m == d {
            Ok(())
        } else {
            Err(format!("mirror {m} / direct {d}"))
        }
    };
    let shows = |args: &[&str], expected: &str| -> Result<(), String> {
        let mut args = args.to_vec();
        args.extend_from_slice(&["-V", "vcsim"]);
        let reply = mirrored.ask(&args);
        if reply.contains(expected) {
            Ok(())
        } else {
            Err(reply)
        }
    };

    // Power off and on.
    let vm0 = vm_named(&admin, "DC0_H0_VM0").await;
    let state = [
        "-m",
        "vm.get",
        "-n",
        "DC0_H0_VM0",
        "-p",
        "runtime.powerState",
    ];
    admin
        .invoke("PowerOffVM_Task", &vm0, &json!({}))
        .await
        .expect("power off");
    eventually(within, "power off", || {
        shows(&state, r#""runtime.powerState":"poweredOff""#)
    });
    agree(&state).expect("same as direct");
    admin
        .invoke("PowerOnVM_Task", &vm0, &json!({}))
        .await
        .expect("power on");
    eventually(within, "power on", || {
        shows(&state, r#""runtime.powerState":"poweredOn""#)
    });

    // Rename: the new name is found, the old one no longer.
    let vm1 = vm_named(&admin, "DC0_H0_VM1").await;
    admin
        .invoke("Rename_Task", &vm1, &json!({"newName": "renamed-vm"}))
        .await
        .expect("rename");
    eventually(within, "rename", || {
        shows(
            &[
                "-m",
                "vm.get",
                "-n",
                "renamed-vm",
                "-p",
                "runtime.powerState",
            ],
            r#""success":0"#,
        )
    });
    let old = ["-m", "vm.get", "-n", "DC0_H0_VM1"];
    shows(&old, "Cannot find object DC0_H0_VM1").expect("the old name is gone");
    agree(&old).expect("same as direct");

    // Clone, then destroy the clone.
    let folder = admin
        .get_objects(
            std::slice::from_ref(&vm0),
            &["parent".into(), "resourcePool".into(), "datastore".into()],
        )
        .await
        .expect("vm0")[0]
        .props
        .clone();
    admin
        .invoke("CloneVM_Task", &vm0, &json!({"folder": folder["parent"], "name": "cloned-vm", "spec": {"location": {}, "powerOn": false, "template": false}}))
        .await
        .expect("clone");
    eventually(within, "clone", || {
        shows(&["-m", "vm.discover"], r#""name":"cloned-vm""#)
    });
    eventually(within, "clone's state", || {
        shows(
            &[
                "-m",
                "vm.get",
                "-n",
                "cloned-vm",
                "-p",
                "runtime.powerState",
            ],
            "poweredOff",
        )
    });
    agree(&["-m", "vm.discover", "-p", "runtime.powerState"]).expect("same as direct");
    let clone = vm_named(&admin, "cloned-vm").await;
    admin
        .invoke("Destroy_Task", &clone, &json!({}))
        .await
        .expect("destroy");
    eventually(within, "destroy", || {
        let reply = mirrored.ask(&["-m", "vm.discover", "-V", "vcsim"]);
        if reply.contains("cloned-vm") {
            Err(reply)
        } else {
            Ok(())
        }
    });
    shows(
        &["-m", "vm.get", "-n", "cloned-vm"],
        "Cannot find object cloned-vm",
    )
    .expect("destroyed");

    // Create.
    let folder_ref = MoRef::from_json(&folder["parent"]).expect("folder");
    admin
        .invoke(
            "CreateVM_Task",
            &folder_ref,
            &json!({
                "config": {"name": "created-vm", "guestId": "otherGuest", "numCPUs": 1, "memoryMB": 64, "files": {"vmPathName": "[LocalDS_0]"}},
                "pool": folder["resourcePool"],
            }),
        )
        .await
        .expect("create");
    eventually(within, "create", || {
        shows(
            &[
                "-m",
                "vm.get",
                "-n",
                "created-vm",
                "-p",
                "config.hardware.numCPU",
            ],
            r#""config.hardware.numCPU":1"#,
        )
    });
    agree(&["-m", "vm.discover", "-p", "config.hardware.memoryMB"]).expect("same as direct");

    // Snapshot create and remove.
    let snapshot = ["-m", "vm.get", "-n", "DC0_H0_VM0", "-p", "snapshot"];
    admin
        .invoke(
            "CreateSnapshot_Task",
            &vm0,
            &json!({"name": "mirror-snap", "memory": false, "quiesce": false}),
        )
        .await
        .expect("snapshot");
    eventually(within, "snapshot", || shows(&snapshot, "mirror-snap"));
    agree(&snapshot).expect("same as direct");
    admin
        .invoke("RemoveAllSnapshots_Task", &vm0, &json!({}))
        .await
        .expect("remove snapshots");
    eventually(within, "snapshot removal", || {
        let reply = mirrored.ask(&[
            "-m",
            "vm.get",
            "-n",
            "DC0_H0_VM0",
            "-p",
            "snapshot",
            "-V",
            "vcsim",
        ]);
        if reply.contains("mirror-snap") {
            Err(reply)
        } else {
            Ok(())
        }
    });
    agree(&snapshot).expect("same as direct");

    // A guest change, through vcsim's SET.guest hook.
    let guest = [
        "-m",
        "vm.get",
        "-n",
        "DC0_H0_VM0",
        "-p",
        "guest.ipAddress,guest.hostName",
    ];
    admin
        .invoke(
            "ReconfigVM_Task",
            &vm0,
            &json!({"spec": {"extraConfig": [
                {"key": "SET.guest.ipAddress", "value": "10.9.8.7"},
                {"key": "SET.guest.hostName", "value": "mirror-host"}
            ]}}),
        )
        .await
        .expect("reconfigure");
    eventually(within, "guest change", || {
        shows(&guest, r#""guest.ipAddress":"10.9.8.7""#)
    });
    shows(&guest, "mirror-host").expect("host name too");
    agree(&guest).expect("same as direct");

    assert_eq!(
        mirrored.request_calls("vcsim"),
        calls_before,
        "while live, reads cost vCenter nothing"
    );
}

fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

/// Resumes a stopped simulator when the test ends, however it ends.
struct Resume(u32);

impl Drop for Resume {
    fn drop(&mut self) {
        signal(self.0, "CONT");
    }
}

const POWER: [&str; 8] = [
    "-m",
    "vm.get",
    "-n",
    "DC0_H0_VM0",
    "-p",
    "runtime.powerState",
    "-V",
    "vcsim",
];
const POWERED_ON: &str = r#""runtime.powerState":"poweredOn""#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_session_is_rebuilt_and_replies_stay_correct() {
    let sim = Simulator::start(&[]);
    let reg = Registry::new(&sim.url);
    let d = daemon_for(&reg, "max-wait-seconds = 1", "");
    d.wait_live("vcsim", Duration::from_secs(20));
    let admin = sim.session().await;
    let manager = admin.manager("sessionManager").expect("session manager");
    let props = admin
        .get_objects(
            std::slice::from_ref(&manager),
            &["sessionList".into(), "currentSession".into()],
        )
        .await
        .expect("sessions")[0]
        .props
        .clone();
    let own = props["currentSession"]["key"].clone();
    let others: Vec<Value> = props["sessionList"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| s["key"].clone())
        .filter(|k| *k != own)
        .collect();
    assert!(!others.is_empty());
    admin
        .invoke("TerminateSession", &manager, &json!({"sessionId": others}))
        .await
        .expect("terminate the daemon's session");
    d.rebuilt_with_correct_replies("rebuilt after the session was lost");
    assert_eq!(d.session("vcsim")["logins"], 2, "one new login");
    let calls = d.request_calls("vcsim");
    assert!(d.ask(&POWER).contains(POWERED_ON));
    assert_eq!(d.request_calls("vcsim"), calls, "served from memory again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_expired_session_is_rebuilt_and_replies_stay_correct() {
    // Waits longer than the idle timeout: vcsim does not count a wait as
    // activity, so the session expires under every wait.
    let sim = Simulator::start(&["-session-idle-timeout", "1s"]);
    let reg = Registry::new(&sim.url);
    let d = daemon_for(&reg, "max-wait-seconds = 2\nstale-after = 5", "");
    d.wait_live("vcsim", Duration::from_secs(20));
    d.rebuilt_with_correct_replies("rebuilt after the session expired");
}

/// The mirror's freshness bound in these tests: max-wait-seconds plus
/// stale-after.
const HANG_MIRROR: &str = "max-wait-seconds = 1\nstale-after = 1";
const HANG_VSPHERE: &str = "timeout = 2\nunreachable-cooldown = 1\nunreachable-cooldown-max = 2";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_vcenter_gets_direct_reads_that_fail_in_time_and_the_mirror_comes_back() {
    let sim = Simulator::start(&[]);
    let reg = Registry::new(&sim.url);
    let d = daemon_for(&reg, HANG_MIRROR, HANG_VSPHERE);
    d.wait_live("vcsim", Duration::from_secs(20));
    assert!(d.ask(&POWER).contains(POWERED_ON));
    signal(sim.pid(), "STOP");
    let resume = Resume(sim.pid());
    let stopped = Instant::now();
    let mut failures = 0;
    while stopped.elapsed() < Duration::from_secs(6) {
        let asked = Instant::now();
        let reply = d.ask_within(&POWER, 10_000);
        let took = asked.elapsed();
        assert!(took < Duration::from_secs(5), "{took:?} for {reply}");
        if reply.contains(r#""success":0"#) {
            // Only while the promise holds: 2 s after the last word from
            // vCenter, and a little for the reply to travel.
            assert!(
                asked.duration_since(stopped) < Duration::from_millis(2500),
                "a stale reply {:?} after the hang: {reply}",
                asked.duration_since(stopped)
            );
        } else {
            failures += 1;
            assert!(reply.contains(r#""success":1"#), "{reply}");
        }
    }
    assert!(failures > 0, "the hung vCenter was noticed");
    let state = d.mirror("vcsim")["state"].clone();
    assert!(state == "stale" || state == "failed", "{state}");
    drop(resume);
    eventually(Duration::from_secs(20), "live again after SIGCONT", || {
        let mirror = d.mirror("vcsim");
        if mirror["state"] == "live" {
            Ok(())
        } else {
            Err(mirror.to_string())
        }
    });
    let calls = d.request_calls("vcsim");
    assert!(d.ask(&POWER).contains(POWERED_ON));
    assert_eq!(d.request_calls("vcsim"), calls, "served from memory again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_and_restarted_vcenter_is_mirrored_again_without_a_restart() {
    let mut sim = Simulator::start(&[]);
    let address = sim.address();
    let reg = Registry::new(&sim.url);
    let d = daemon_for(&reg, HANG_MIRROR, HANG_VSPHERE);
    let first = d.wait_live("vcsim", Duration::from_secs(20));
    sim.kill();
    let reply = d.ask_within(&POWER, 10_000);
    // Within the promise this may still be served; past it, an error.
    std::thread::sleep(Duration::from_millis(2500));
    let reply_later = d.ask_within(&POWER, 10_000);
    assert!(
        reply_later.contains(r#""success":1"#),
        "{reply} / {reply_later}"
    );
    let _sim = Simulator::start(&["-l", &address]);
    eventually(
        Duration::from_secs(30),
        "live again after the restart",
        || {
            let mirror = d.mirror("vcsim");
            if mirror["state"] == "live" && mirror["builds"].as_u64() > first["builds"].as_u64() {
                Ok(())
            } else {
                Err(mirror.to_string())
            }
        },
    );
    assert!(d.ask(&POWER).contains(POWERED_ON));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_agents_hang_does_not_delay_anothers_replies() {
    let (hung, healthy) = (Simulator::start(&[]), Simulator::start(&[]));
    let reg = Registry::with_agent(&hung.url, "hung", "pass");
    reg.add_agent(&healthy.url, "healthy", "pass");
    let d = std::sync::Arc::new(daemon_for(&reg, HANG_MIRROR, HANG_VSPHERE));
    d.wait_live("hung", Duration::from_secs(20));
    d.wait_live("healthy", Duration::from_secs(20));
    signal(hung.pid(), "STOP");
    let _resume = Resume(hung.pid());
    let pressing = {
        let d = d.clone();
        std::thread::spawn(move || {
            for _ in 0..4 {
                d.ask(&["-m", "vm.get", "-n", "DC0_H0_VM0", "-V", "hung"]);
            }
        })
    };
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        let asked = Instant::now();
        let reply = d.ask(&[
            "-m",
            "vm.get",
            "-n",
            "DC0_H0_VM0",
            "-p",
            "runtime.powerState",
            "-V",
            "healthy",
        ]);
        assert!(reply.contains(POWERED_ON), "{reply}");
        assert!(
            asked.elapsed() < Duration::from_secs(1),
            "{:?} for the healthy agent",
            asked.elapsed()
        );
    }
    assert_eq!(d.mirror("healthy")["state"], "live");
    let _ = pressing.join();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volatile_paths_come_from_one_bulk_read_per_period_and_used_paths_are_promoted() {
    let sim = Simulator::start(&[]);
    let reg = Registry::new(&sim.url);
    let mirrored = daemon_for(
        &reg,
        "promote-after = 2\npromote-interval = 0.5\nvolatile-refresh = 60",
        "",
    );
    let direct = daemon_for(&reg, "enabled = false", "");
    mirrored.wait_live("vcsim", Duration::from_secs(20));
    let stats =
        "runtime.powerState,summary.quickStats.overallCpuUsage,summary.quickStats.guestMemoryUsage";
    let calls = mirrored.request_calls("vcsim");
    for vm in [
        "DC0_H0_VM0",
        "DC0_H0_VM1",
        "DC0_C0_RP0_VM0",
        "DC0_C0_RP0_VM1",
    ] {
        let args = ["-m", "vm.get", "-n", vm, "-p", stats, "-V", "vcsim"];
        let (m, d) = (mirrored.ask(&args), direct.ask(&args));
        assert!(m.contains("summary.quickStats.overallCpuUsage"), "{m}");
        assert_eq!(m, d, "the same as a direct read");
    }
    let discover = ["-m", "vm.discover", "-p", stats, "-V", "vcsim"];
    assert_eq!(mirrored.ask(&discover), direct.ask(&discover));
    assert_eq!(
        mirrored.request_calls("vcsim") - calls,
        2,
        "one bulk read (and the container view it reads through) answered every volatile path"
    );
    assert_eq!(mirrored.mirror("vcsim")["volatile_bulk_reads"], 1);

    // A path that is neither pinned nor volatile is read directly until it
    // has been asked for twice, then held.
    let annotation = [
        "-m",
        "vm.get",
        "-n",
        "DC0_H0_VM0",
        "-p",
        "config.annotation",
        "-V",
        "vcsim",
    ];
    mirrored.ask(&annotation);
    mirrored.ask(&annotation);
    eventually(Duration::from_secs(10), "config.annotation held", || {
        let held = mirrored.mirror("vcsim")["held"]["VirtualMachine"].clone();
        let live = mirrored.mirror("vcsim")["state"] == "live";
        if live
            && held
                .as_array()
                .into_iter()
                .flatten()
                .any(|p| p == "config.annotation")
        {
            Ok(())
        } else {
            Err(held.to_string())
        }
    });
    let calls = mirrored.request_calls("vcsim");
    assert_eq!(mirrored.ask(&annotation), direct.ask(&annotation));
    assert_eq!(mirrored.request_calls("vcsim"), calls, "now from memory");
}

/// The vim25 methods among `names` that the simulator was asked, in order.
fn calls_in_order(sim: &Simulator, names: &[&str]) -> Vec<String> {
    sim.log()
        .lines()
        .filter_map(|l| l.strip_prefix("Request: "))
        .filter_map(|l| {
            names
                .iter()
                .find(|n| l.contains(&format!("<{n} ")) || l.contains(&format!(":{n} ")))
                .map(|n| n.to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_agent_cancels_its_wait_and_destroys_what_it_made_before_logging_out() {
    let sim = Simulator::start(&["-trace"]);
    let reg = Registry::new(&sim.url);
    // A long wait: only the cancel can end it in time.
    let d = daemon_for(&reg, "max-wait-seconds = 60", "");
    d.wait_live("vcsim", Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(300));
    let out = vpoller(&[
        "agent",
        "disable",
        "-d",
        &reg.db(),
        "--key-file",
        &reg.key(),
        "-H",
        "vcsim",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually(Duration::from_secs(5), "logged out", || {
        if sim.calls_of("Logout") == 1 {
            Ok(())
        } else {
            Err(sim.calls_of("Logout").to_string())
        }
    });
    let order = calls_in_order(
        &sim,
        &[
            "CancelWaitForUpdates",
            "DestroyPropertyCollector",
            "DestroyView",
            "Logout",
        ],
    );
    let first = |name: &str| order.iter().position(|c| c == name).unwrap_or(usize::MAX);
    assert_eq!(sim.calls_of("CancelWaitForUpdates"), 1, "{order:?}");
    assert!(
        first("CancelWaitForUpdates") < first("DestroyPropertyCollector"),
        "{order:?}"
    );
    assert!(
        first("DestroyPropertyCollector") < first("DestroyView"),
        "{order:?}"
    );
    assert_eq!(
        order.last().map(String::as_str),
        Some("Logout"),
        "{order:?}"
    );
    assert_eq!(
        d.session("vcsim"),
        Value::Null,
        "the session is gone from status"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_behind_the_proxy_serves_from_its_mirror() {
    let sim = Simulator::start(&[]);
    let reg = Registry::new(&sim.url);
    let (front, back, pmgmt, wmgmt) = (
        endpoint(free_port()),
        endpoint(free_port()),
        endpoint(free_port()),
        endpoint(free_port()),
    );
    let _proxy = proxy(&front, &back, &pmgmt);
    let _worker = worker(&reg, &back, &wmgmt, &[]);
    let ask = || vm_get(&front);
    assert_eq!(ask()["success"], 0);
    let session =
        |key: &str| wait_for_status(&wmgmt, "worker")["result"]["sessions"][0][key].clone();
    eventually(
        Duration::from_secs(20),
        "the worker's mirror is live",
        || {
            let mirror = session("mirror");
            if mirror["state"] == "live" {
                Ok(())
            } else {
                Err(mirror.to_string())
            }
        },
    );
    let calls = session("request_soap_calls");
    for _ in 0..5 {
        assert_eq!(ask()["result"][0]["name"], "DC0_H0_VM0");
    }
    assert_eq!(session("request_soap_calls"), calls, "served from memory");
}
