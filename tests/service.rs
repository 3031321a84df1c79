//! The service on the wire: the real vpoller-client 0.7.3 and raw pyzmq
//! against `vpoller daemon` and against a proxy with workers, on the
//! simulator; management; stopping under load; workers dying.

mod common;

use common::services::*;
use common::{Simulator, project_dir};
use serde_json::{Value, json};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn simulator() -> &'static Simulator {
    static SIM: OnceLock<Simulator> = OnceLock::new();
    SIM.get_or_init(|| Simulator::start(&[]))
}

/// vpoller-client 0.7.3 itself.
fn py_client(front: &str, args: &[&str]) -> String {
    py_client_text(front, args, 5000)
}

fn parsed(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn vpoller_client_conversation(front: &str) {
    let r = parsed(&py_client(front, &["-m", "vm.discover", "-V", "vcsim"]));
    assert_eq!(r["success"], 0, "{r}");
    assert_eq!(r["result"].as_array().map(Vec::len), Some(4));
    let r = parsed(&py_client(
        front,
        &[
            "-m",
            "vm.get",
            "-V",
            "vcsim",
            "-n",
            "DC0_H0_VM0",
            "-p",
            "runtime.powerState",
        ],
    ));
    assert_eq!(
        r["result"],
        json!([{"name": "DC0_H0_VM0", "runtime.powerState": "poweredOn"}])
    );
    let r = parsed(&py_client(
        front,
        &[
            "-m",
            "host.get",
            "-V",
            "vcsim",
            "-n",
            "DC0_H0",
            "-p",
            "runtime.connectionState",
        ],
    ));
    assert_eq!(r["result"][0]["runtime.connectionState"], "connected");
    assert_eq!(
        py_client(
            front,
            &[
                "-m",
                "vm.get",
                "-V",
                "vcsim",
                "-n",
                "DC0_H0_VM0",
                "-p",
                "runtime.powerState",
                "-H",
                "vpoller.helpers.zabbix"
            ]
        ),
        "\"poweredOn\""
    );
    let r = parsed(&py_client(front, &["-m", "no.such.method", "-V", "vcsim"]));
    assert_eq!(
        r,
        json!({"success": 1, "msg": "Unknown or missing task/method name"})
    );
    let r = parsed(&py_client(front, &["-m", "about", "-V", "no-such-agent"]));
    assert_eq!(
        r,
        json!({"success": 1, "msg": "Unknown or missing agent name"})
    );
}

#[test]
fn vpoller_client_0_7_3_talks_to_the_daemon() {
    let reg = Registry::new(&simulator().url);
    let (_daemon, front, _) = daemon(&reg);
    vpoller_client_conversation(&front);
}

#[test]
fn vpoller_client_0_7_3_talks_to_a_proxy_and_worker() {
    let reg = Registry::new(&simulator().url);
    let (front, back, pm, wm) = (
        endpoint(free_port()),
        endpoint(free_port()),
        endpoint(free_port()),
        endpoint(free_port()),
    );
    let _proxy = proxy(&front, &back, &pm);
    let _worker = worker(&reg, &back, &wm, &[]);
    vpoller_client_conversation(&front);
}

#[test]
fn malformed_messages_get_vpollers_error_replies_and_break_nothing() {
    let reg = Registry::new(&simulator().url);
    let (_daemon, front, mgmt) = daemon(&reg);
    let out = Command::new(venv().join("bin/python"))
        .arg(project_dir().join("tests/pyclient/raw.py"))
        .arg(&front)
        .output()
        .expect("raw client");
    let text = String::from_utf8_lossy(&out.stdout);
    let replies: Vec<Value> = text.lines().map(parsed).collect();
    assert_eq!(
        replies,
        [
            json!({"success": 1, "msg": "Invalid message received"}),
            json!({"success": 1, "msg": "Expected a JSON message, received <class 'list'>"}),
            json!({"success": 1, "msg": "Expected a JSON message, received <class 'str'>"}),
            json!({"success": 1, "msg": "Unknown or missing task/method name"}),
            json!({"success": 1, "msg": "Unknown or missing task/method name"}),
            json!({"success": 1, "msg": "Invalid message received"}),
            json!({"success": 1, "msg": "Invalid message received"}),
        ],
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Still serving, and the management socket survives garbage too.
    assert!(vpoller_client_ok(&front));
    let out = Command::new(venv().join("bin/python"))
        .args(["-c", "import sys,zmq; s=zmq.Context().socket(zmq.REQ); s.connect(sys.argv[1]); s.send(b'garbage'); print(s.recv().decode())", &mgmt])
        .output()
        .expect("mgmt garbage");
    assert_eq!(
        parsed(String::from_utf8_lossy(&out.stdout).trim()),
        json!({"success": 1, "msg": "Invalid message received"})
    );
    assert_eq!(
        wait_for_status(&mgmt, "daemon")["result"]["status"],
        "running"
    );
}

fn vpoller_client_ok(front: &str) -> bool {
    let out = vpoller(&[
        "client", "-m", "about", "-V", "vcsim", "-e", front, "-t", "5000", "-r", "1",
    ]);
    out.status.success()
}

#[test]
fn status_reload_and_shutdown_over_the_management_socket() {
    let reg = Registry::new(&simulator().url);
    let (mut daemon, front, mgmt) = daemon(&reg);
    assert!(vpoller_client_ok(&front));
    let out = vpoller(&[
        "client", "-m", "vm.get", "-V", "vcsim", "-n", "nope", "-p", "name", "-e", &front,
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "client exit status follows success"
    );
    let status = wait_for_status(&mgmt, "daemon");
    let result = &status["result"];
    assert_eq!(result["requests"]["done"], 2);
    assert_eq!(result["requests"]["errors_by_method"]["vm.get"], 1);
    assert_eq!(result["sessions"][0]["hostname"], "vcsim");
    assert_eq!(result["sessions"][0]["logged_in"], true);
    assert_eq!(result["methods"], 53);

    let reload = Command::new(venv().join("bin/python"))
        .args(["-c", "import sys,zmq,json; s=zmq.Context().socket(zmq.REQ); s.connect(sys.argv[1]); s.send_json({'method':'reload'}); print(s.recv().decode())", &mgmt])
        .output()
        .expect("reload");
    let reload = parsed(String::from_utf8_lossy(&reload.stdout).trim());
    assert_eq!(reload["success"], 0, "{reload}");
    assert_eq!(reload["result"]["methods"], 53);

    let out = vpoller(&["daemon", "stop", "-e", &mgmt]);
    assert!(out.status.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    while daemon.0.try_wait().ok().flatten().is_none() {
        assert!(Instant::now() < deadline, "the daemon did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        daemon.0.try_wait().ok().flatten().and_then(|s| s.code()),
        Some(0)
    );
}

/// Sends `n` requests at once from threads; returns the replies.
fn load(front: &str, n: usize, timeout_ms: u64) -> Vec<Value> {
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let front = front.to_string();
            std::thread::spawn(move || {
                let name = [
                    "DC0_H0_VM0",
                    "DC0_H0_VM1",
                    "DC0_C0_RP0_VM0",
                    "DC0_C0_RP0_VM1",
                ][i % 4];
                let out = vpoller(&[
                    "client",
                    "-m",
                    "vm.get",
                    "-V",
                    "vcsim",
                    "-n",
                    name,
                    "-p",
                    "runtime.powerState",
                    "-e",
                    &front,
                    "-t",
                    &timeout_ms.to_string(),
                    "-r",
                    "1",
                ]);
                parsed(String::from_utf8_lossy(&out.stdout).trim())
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("client thread"))
        .collect()
}

#[test]
fn sigterm_under_load_answers_every_request_and_exits_0() {
    let reg = Registry::new(&simulator().url);
    let (mut daemon, front, mgmt) = daemon(&reg);
    let front2 = front.clone();
    let clients = std::thread::spawn(move || load(&front2, 24, 8000));
    // Stop while the load is on: once the first requests have arrived.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let requests = &wait_for_status(&mgmt, "daemon")["result"]["requests"];
        let seen =
            requests["done"].as_u64().unwrap_or(0) + requests["in_flight"].as_u64().unwrap_or(0);
        if seen > 0 || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(daemon.terminate(), Some(0), "graceful exit");
    let replies = clients.join().expect("clients");
    // Each request was answered before the stop, or found the daemon gone.
    for r in &replies {
        assert!(
            r["success"] == 0 || r["msg"] == "Did not receive response, aborting...",
            "{r}"
        );
    }
    assert!(replies.iter().any(|r| r["success"] == 0));
}

#[test]
fn two_workers_share_the_load_and_a_dead_one_loses_no_reply() {
    let reg = Registry::new(&simulator().url);
    let (front, back, pm) = (
        endpoint(free_port()),
        endpoint(free_port()),
        endpoint(free_port()),
    );
    let _proxy = proxy(&front, &back, &pm);
    let (w1m, w2m) = (endpoint(free_port()), endpoint(free_port()));
    let mut w1 = worker(&reg, &back, &w1m, &["-c", "2"]);
    let _w2 = worker(&reg, &back, &w2m, &["-c", "2"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while wait_for_status(&pm, "proxy")["result"]["workers_connected"] != 2 {
        assert!(Instant::now() < deadline, "workers did not register");
        std::thread::sleep(Duration::from_millis(50));
    }

    let replies = load(&front, 16, 10000);
    assert!(replies.iter().all(|r| r["success"] == 0), "{replies:?}");
    let done = |m: &str| {
        wait_for_status(m, "worker")["result"]["requests"]["done"]
            .as_u64()
            .unwrap_or(0)
    };
    let (d1, d2) = (done(&w1m), done(&w2m));
    assert_eq!(d1 + d2, 16);
    assert!(d1 > 0 && d2 > 0, "both workers served: {d1} and {d2}");

    // Kill one worker in the middle of a load: every request still gets a
    // reply (its result, or an error for those the dead worker held).
    let front2 = front.clone();
    let clients = std::thread::spawn(move || load(&front2, 24, 10000));
    std::thread::sleep(Duration::from_millis(100));
    w1.kill();
    let replies = clients.join().expect("clients");
    for r in &replies {
        assert!(
            r["success"] == 0
                || r["msg"] == "The worker handling this request stopped before replying",
            "{r}"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while wait_for_status(&pm, "proxy")["result"]["workers_connected"] != 1 {
        assert!(
            Instant::now() < deadline,
            "the proxy kept routing to the dead worker"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(load(&front, 8, 10000).iter().all(|r| r["success"] == 0));
}

#[test]
fn workers_find_a_restarted_proxy() {
    let reg = Registry::new(&simulator().url);
    let (front, back, pm, wm) = (
        endpoint(free_port()),
        endpoint(free_port()),
        endpoint(free_port()),
        endpoint(free_port()),
    );
    let mut first = proxy(&front, &back, &pm);
    let _worker = worker(&reg, &back, &wm, &[]);
    assert!(vpoller_client_ok(&front));
    first.kill();
    let _second = proxy(&front, &back, &pm);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !vpoller_client_ok(&front) {
        assert!(
            Instant::now() < deadline,
            "the worker did not find the restarted proxy"
        );
    }
}

#[test]
fn a_request_that_waited_past_its_deadline_is_dropped_not_worked_on() {
    let reg = Registry::new(&simulator().url);
    let dir = tempfile::tempdir().expect("dir");
    let (front, back, pm, wm) = (
        endpoint(free_port()),
        endpoint(free_port()),
        endpoint(free_port()),
        endpoint(free_port()),
    );
    let conf = dir.path().join("vpoller.conf");
    std::fs::write(
        &conf,
        format!(
            "[proxy]\nfrontend = {front}\nbackend = {back}\nmgmt = {pm}\nrequest-timeout = 0.5\n"
        ),
    )
    .expect("config");
    let _proxy = Service::start(&["proxy", "-f", conf.to_str().expect("path")]);
    wait_for_status(&pm, "proxy");
    // No worker yet: the request waits, and its client gives up.
    let out = vpoller(&[
        "client", "-m", "about", "-V", "vcsim", "-e", &front, "-t", "1500", "-r", "1",
    ]);
    assert_eq!(
        parsed(String::from_utf8_lossy(&out.stdout).trim()),
        json!({"success": 1, "msg": "Did not receive response, aborting..."})
    );
    let status = wait_for_status(&pm, "proxy");
    assert_eq!(
        status["result"]["requests"]["dropped_expired"], 1,
        "{status}"
    );
    // A worker that arrives later is not given the stale request.
    let _worker = worker(&reg, &back, &wm, &[]);
    std::thread::sleep(Duration::from_millis(500));
    let done = wait_for_status(&wm, "worker")["result"]["requests"]["done"].clone();
    assert_eq!(done, 0);
    assert!(vpoller_client_ok(&front));
}

#[test]
fn sighup_reloads_and_does_not_stop_the_daemon() {
    let reg = Registry::new(&simulator().url);
    let (mut daemon, front, mgmt) = daemon(&reg);
    let status = Command::new("kill")
        .args(["-HUP", &daemon.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        matches!(daemon.0.try_wait(), Ok(None)),
        "SIGHUP must not stop it"
    );
    wait_for_status(&mgmt, "daemon");
    assert!(vpoller_client_ok(&front));
}
