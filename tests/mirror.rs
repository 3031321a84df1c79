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

use common::Simulator;
use common::services::*;
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

    fn request_calls(&self, agent: &str) -> u64 {
        self.session(agent)["request_soap_calls"]
            .as_u64()
            .unwrap_or(u64::MAX)
    }
}

/// Polls `check` until it holds, failing after `within`; returns how long
/// it took.
fn eventually(
    within: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<(), String>,
) -> Duration {
    let started = Instant::now();
    loop {
        match check() {
            Ok(()) => return started.elapsed(),
            Err(e) if started.elapsed() > within => panic!("{what}: not within {within:?}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
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
