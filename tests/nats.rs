//! Workers and a proxy on a real NATS server (Debian's nats-server, started
//! here on loopback): requests reach the vCenter of their agent, an agent
//! nobody serves is a clear error at once, and a worker killed under load
//! loses no reply.

mod common;

use common::services::*;
use common::{Simulator, eventually};
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A nats-server on a free loopback port, stopped when dropped.
struct NatsServer {
    child: Child,
    url: String,
}

impl NatsServer {
    fn start() -> NatsServer {
        NatsServer::start_with(free_port(), &[])
    }

    /// One node of a cluster: its route port, and the routes to the others.
    fn cluster_node(port: u16, route_port: u16, routes: &[u16]) -> NatsServer {
        let routes: Vec<String> = routes
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect();
        NatsServer::start_with(
            port,
            &[
                "--cluster_name",
                "vpoller-test",
                "--cluster",
                &format!("nats://127.0.0.1:{route_port}"),
                "--routes",
                &routes.join(","),
            ],
        )
    }

    fn start_with(port: u16, extra: &[&str]) -> NatsServer {
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server (Debian package nats-server)");
        eventually(Duration::from_secs(10), "nats-server started", || {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .map(drop)
                .map_err(|e| e.to_string())
        });
        NatsServer {
            child,
            url: format!("nats://127.0.0.1:{port}"),
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A configuration file in `dir`.
fn conf(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("config");
    path.display().to_string()
}

fn nats_worker(reg: &Registry, nats: &NatsServer, conf: &str) -> (Service, String) {
    nats_worker_with(reg, nats, conf, &[])
}

/// A worker on `nats` with more arguments (`--concurrency 1`,
/// `--methods-dir DIR`).
fn nats_worker_with(
    reg: &Registry,
    nats: &NatsServer,
    conf: &str,
    extra: &[&str],
) -> (Service, String) {
    let mgmt = endpoint(free_port());
    let unused_proxy = endpoint(free_port());
    let mut args = vec!["--nats", nats.url.as_str(), "-f", conf];
    args.extend_from_slice(extra);
    let service = worker(reg, &unused_proxy, &mgmt, &args);
    (service, mgmt)
}

/// The subjects a worker serves, once it has subscribed to `agents` of them
/// and to the one for requests that name no agent.
fn subjects(mgmt: &str, agents: usize) -> Value {
    let mut subjects = Value::Null;
    eventually(Duration::from_secs(10), "the worker's subjects", || {
        subjects = wait_for_status(mgmt, "worker")["result"]["nats"]["subjects"].clone();
        match subjects.as_array().map(Vec::len) {
            Some(n) if n == agents + 1 => Ok(()),
            _ => Err(subjects.to_string()),
        }
    });
    subjects
}

/// Waits until a vm.get through `front` succeeds.
fn served_within(within: Duration, front: &str, what: &str) {
    eventually(within, what, || {
        let reply = vm_get(front);
        (reply["success"] == 0)
            .then_some(())
            .ok_or(reply.to_string())
    });
}

/// Counters of a process's NATS status, by name.
fn nats_counts(mgmt: &str, role: &str, names: &[&str]) -> Vec<u64> {
    let stats = wait_for_status(mgmt, role)["result"]["nats"].clone();
    names
        .iter()
        .map(|n| {
            stats[*n]
                .as_u64()
                .unwrap_or_else(|| panic!("{n} in {stats}"))
        })
        .collect()
}

fn nats_proxy(nats: &NatsServer, conf: &str) -> (Service, String, String) {
    nats_frontend("proxy", &nats.url, conf)
}

/// `vpoller proxy --nats` or `vpoller daemon --nats`: a frontend that runs
/// no methods and forwards every request to NATS.
fn nats_frontend(role: &str, url: &str, conf: &str) -> (Service, String, String) {
    let (front, mgmt) = (endpoint(free_port()), endpoint(free_port()));
    let service = Service::start(&[
        role,
        "--nats",
        url,
        "-f",
        conf,
        "--frontend",
        &front,
        "--mgmt",
        &mgmt,
    ]);
    wait_for_status(&mgmt, role);
    (service, front, mgmt)
}

/// vPoller 0.7.3's own client, once.
fn py_client(front: &str, args: &[&str]) -> Value {
    let text = py_client_text(front, args, 10_000);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_client_reaches_the_vcenter_of_its_agent_through_nats() {
    let nats = NatsServer::start();
    let (a, b) = (Simulator::start(&[]), Simulator::start(&[]));
    // Tell the two simulators apart: one VM is renamed on b only.
    let admin = b.session().await;
    let vm = admin
        .find("VirtualMachine", "name", &json!("DC0_H0_VM0"))
        .await
        .expect("find")
        .expect("the VM");
    admin
        .invoke("Rename_Task", &vm, &json!({"newName": "only-on-b"}))
        .await
        .expect("rename");
    // Agent names with dots, as hostnames have.
    let reg = Registry::with_agent(&a.url, "vc-a.example.org", "pass");
    reg.add_agent(&b.url, "vc-b.example.org", "pass");
    let dir = tempfile::tempdir().expect("dir");
    let (_wa, ma) = nats_worker(
        &reg,
        &nats,
        &conf(&dir, "a.conf", "[nats]\nagents = vc-a.example.org\n"),
    );
    let (_wb, mb) = nats_worker(
        &reg,
        &nats,
        &conf(&dir, "b.conf", "[nats]\nagents = vc-b.example.org\n"),
    );
    assert_eq!(
        subjects(&ma, 1),
        json!(["vpoller.v1.agent.vc-a_2Eexample_2Eorg", "vpoller.v1.any"])
    );
    subjects(&mb, 1);
    let (_proxy, front, pmgmt) = nats_proxy(
        &nats,
        &conf(&dir, "p.conf", "[proxy]\nrequest-timeout = 5\n"),
    );

    let on_b = py_client(
        &front,
        &[
            "-m",
            "vm.get",
            "-V",
            "vc-b.example.org",
            "-n",
            "only-on-b",
            "-p",
            "runtime.powerState",
        ],
    );
    assert_eq!(on_b["success"], 0, "{on_b}");
    assert_eq!(on_b["result"][0]["name"], "only-on-b");
    let on_a = py_client(
        &front,
        &["-m", "vm.get", "-V", "vc-a.example.org", "-n", "only-on-b"],
    );
    assert_eq!(on_a["success"], 1);
    assert_eq!(on_a["msg"], "Cannot find object only-on-b");
    let on_a = py_client(
        &front,
        &["-m", "vm.get", "-V", "vc-a.example.org", "-n", "DC0_H0_VM0"],
    );
    assert_eq!(on_a["success"], 0, "{on_a}");
    // Each worker logged in to its own vCenter only.
    let sessions = |mgmt: &str| wait_for_status(mgmt, "worker")["result"]["sessions"].clone();
    assert_eq!(sessions(&ma).as_array().map(Vec::len), Some(1));
    assert_eq!(sessions(&ma)[0]["hostname"], "vc-a.example.org");
    assert_eq!(sessions(&mb)[0]["hostname"], "vc-b.example.org");
    let status = wait_for_status(&pmgmt, "proxy")["result"]["nats"].clone();
    assert_eq!(status["answered"], 3, "{status}");
    assert_eq!(status["url"], nats.url.as_str(), "{status}");
    assert_eq!(status["connected"], true, "{status}");
    assert!(status["server"]["version"].is_string(), "{status}");
}

#[test]
fn an_agent_no_worker_serves_is_a_clear_error_at_once() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().expect("dir");
    let (_proxy, front, _mgmt) = nats_proxy(
        &nats,
        &conf(&dir, "p.conf", "[proxy]\nrequest-timeout = 5\n"),
    );
    let asked = Instant::now();
    let reply = client(&front, &["-m", "vm.get", "-V", "vc09", "-n", "x"], 10_000);
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(
        reply,
        json!({"success": 1, "msg": "no worker serves agent vc09"})
    );
    let garbage = client(&front, &["-m", "vm.get", "-V", "", "-n", "x"], 10_000);
    assert_eq!(garbage["success"], 1, "{garbage}");
}

#[test]
fn a_worker_killed_under_load_loses_no_reply() {
    let nats = NatsServer::start();
    let sim = Simulator::start(&[]);
    let reg = Registry::new(&sim.url);
    let dir = tempfile::tempdir().expect("dir");
    let wconf = conf(&dir, "w.conf", "");
    let (mut first, m1) = nats_worker(&reg, &nats, &wconf);
    let (_second, m2) = nats_worker(&reg, &nats, &wconf);
    subjects(&m1, 1);
    subjects(&m2, 1);
    let (_proxy, front, _pmgmt) = nats_proxy(
        &nats,
        &conf(&dir, "p.conf", "[proxy]\nrequest-timeout = 3\n"),
    );
    let front = std::sync::Arc::new(front);
    let started = Instant::now();
    let kill_at = Duration::from_millis(1000);
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let front = front.clone();
            std::thread::spawn(move || {
                let (mut sent, mut ok, mut failed, mut ok_after_kill) = (0, 0, 0, 0);
                while started.elapsed() < Duration::from_secs(3) {
                    sent += 1;
                    let reply = vm_get(&front);
                    match reply["success"].as_i64() {
                        Some(0) => {
                            ok += 1;
                            if started.elapsed() > kill_at + Duration::from_millis(100) {
                                ok_after_kill += 1;
                            }
                        }
                        Some(1) => failed += 1,
                        _ => panic!("not a reply: {reply}"),
                    }
                }
                (sent, ok, failed, ok_after_kill)
            })
        })
        .collect();
    std::thread::sleep(kill_at);
    first.kill();
    let (mut sent, mut ok, mut failed, mut after) = (0, 0, 0, 0);
    for c in clients {
        let (s, o, f, a) = c.join().expect("a client");
        sent += s;
        ok += o;
        failed += f;
        after += a;
    }
    assert_eq!(ok + failed, sent, "every request got exactly one reply");
    // The requests the killed worker held went silent and were sent once
    // more, to the other member.
    assert_eq!(failed, 0, "{failed} of {sent} failed");
    assert!(
        after > 0,
        "the other worker answered after the kill ({sent} sent)"
    );
}

#[test]
fn a_restarted_nats_server_is_found_again_by_workers_and_proxy() {
    let port = free_port();
    let mut nats = NatsServer::start_with(port, &[]);
    let sim = Simulator::start(&[]);
    let reg = Registry::new(&sim.url);
    let dir = tempfile::tempdir().expect("dir");
    let (_worker, wmgmt) = nats_worker(&reg, &nats, &conf(&dir, "w.conf", ""));
    subjects(&wmgmt, 1);
    let (_proxy, front, _pmgmt) = nats_proxy(
        &nats,
        &conf(&dir, "p.conf", "[proxy]\nrequest-timeout = 2\n"),
    );
    assert_eq!(vm_get(&front)["success"], 0);
    let _ = nats.child.kill();
    let _ = nats.child.wait();
    // In the gap: a clear error within the request's deadline, not silence.
    let asked = Instant::now();
    let gap = vm_get(&front);
    assert_eq!(gap["success"], 1, "{gap}");
    assert!(
        asked.elapsed() < Duration::from_secs(4),
        "{:?}",
        asked.elapsed()
    );
    let _restarted = NatsServer::start_with(port, &[]);
    served_within(
        Duration::from_secs(20),
        &front,
        "served again after the restart",
    );
}

#[test]
fn a_worker_whose_nats_server_is_gone_still_stops_on_sigterm() {
    let mut nats = NatsServer::start();
    let sim = Simulator::start(&[]);
    let reg = Registry::new(&sim.url);
    let dir = tempfile::tempdir().expect("dir");
    let (mut worker, wmgmt) = nats_worker(&reg, &nats, &conf(&dir, "w.conf", ""));
    subjects(&wmgmt, 1);
    let _ = nats.child.kill();
    let _ = nats.child.wait();
    let asked = Instant::now();
    let code = worker.terminate();
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(code, Some(0), "a clean exit, not a kill");
}

/// Every reply one request gets on a DEALER socket of our own: the first
/// within `timeout`, and whatever else comes in the `linger` after it (a
/// REQ socket would hide a second reply).
fn replies_to(front: &str, body: &str, timeout: Duration, linger: Duration) -> Vec<Value> {
    raw_replies_to(front, body, timeout, linger)
        .iter()
        .map(|r| serde_json::from_str(r).unwrap_or_else(|e| panic!("{e}: {r}")))
        .collect()
}

/// As [`replies_to`], the replies as they were sent.
fn raw_replies_to(front: &str, body: &str, timeout: Duration, linger: Duration) -> Vec<String> {
    let context = zmq::Context::new();
    let socket = context.socket(zmq::DEALER).expect("socket");
    socket.connect(front).expect("connect");
    socket
        .send_multipart([&b""[..], body.as_bytes()], 0)
        .expect("send");
    let mut replies = Vec::new();
    let mut until = Instant::now() + timeout;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero()
            || socket
                .poll(zmq::POLLIN, left.as_millis() as i64)
                .unwrap_or(0)
                == 0
        {
            return replies;
        }
        let frames = socket.recv_multipart(0).expect("recv");
        let body = frames.last().expect("a body");
        replies.push(String::from_utf8_lossy(body).into_owned());
        until = Instant::now() + linger;
    }
}

/// `vm.get` of a VM every simulator has.
const VM_GET: &str = r#"{"method": "vm.get", "hostname": "vcsim", "name": "DC0_H0_VM0", "properties": ["runtime.powerState"]}"#;

/// The live worker that is working on a request now.
fn holder(workers: &mut [(Service, String)]) -> &mut (Service, String) {
    let mut busy = None;
    eventually(Duration::from_secs(10), "a worker took the request", || {
        busy = workers.iter_mut().position(|(service, mgmt)| {
            service.is_running()
                && wait_for_status(mgmt, "worker")["result"]["requests"]["in_flight"] == 1
        });
        busy.map(drop).ok_or_else(|| "none is working".to_string())
    });
    &mut workers[busy.unwrap_or_default()]
}

fn signal(service: &Service, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &service.pid().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

/// Slow SOAP (every RetrievePropertiesEx takes `delay_ms`), the mirror off:
/// a request stays with its worker long enough to lose the worker.
fn slow_vcenter_workers(
    nats: &NatsServer,
    count: usize,
    delay_ms: u32,
    extra: &[&str],
) -> (
    Simulator,
    Registry,
    Vec<(Service, String)>,
    tempfile::TempDir,
) {
    let delay = format!("RetrievePropertiesEx:{delay_ms}");
    let sim = Simulator::start(&["-method-delay", &delay]);
    let reg = Registry::new(&sim.url);
    let dir = tempfile::tempdir().expect("dir");
    let wconf = conf(&dir, "w.conf", "[mirror]\nenabled = false\n");
    let workers: Vec<(Service, String)> = (0..count)
        .map(|_| nats_worker_with(&reg, nats, &wconf, extra))
        .collect();
    for (_, mgmt) in &workers {
        subjects(mgmt, 1);
    }
    (sim, reg, workers, dir)
}

#[test]
fn a_worker_lost_mid_request_is_retried_once_on_another_member() {
    let nats = NatsServer::start();
    let (_sim, _reg, mut workers, dir) = slow_vcenter_workers(&nats, 2, 1000, &[]);
    let (_front_service, front, fmgmt) = nats_frontend(
        "daemon",
        &nats.url,
        &conf(&dir, "d.conf", "[proxy]\nrequest-timeout = 20\n"),
    );
    let asking = {
        let front = front.clone();
        std::thread::spawn(move || {
            let asked = Instant::now();
            let replies = replies_to(
                &front,
                VM_GET,
                Duration::from_secs(25),
                Duration::from_secs(3),
            );
            (replies, asked.elapsed())
        })
    };
    let (held_by, _) = holder(&mut workers);
    held_by.kill();
    let (replies, took) = asking.join().expect("the client");
    assert_eq!(replies.len(), 1, "exactly one reply: {replies:?}");
    assert_eq!(replies[0]["success"], 0, "{}", replies[0]);
    assert_eq!(replies[0]["result"][0]["name"], "DC0_H0_VM0");
    assert!(
        took < Duration::from_secs(20),
        "within the deadline: {took:?}"
    );
    assert_eq!(
        nats_counts(&fmgmt, "daemon", &["retried", "answered"]),
        [1, 1]
    );

    // The last member lost too: an error naming the agent, long before
    // the deadline (silence, then a wait for members to come back), and
    // still one reply.
    let asking = {
        let front = front.clone();
        std::thread::spawn(move || {
            let linger = Duration::from_secs(2);
            let replies = replies_to(&front, VM_GET, Duration::from_secs(25), linger);
            // The one reply came a linger before the wait for more ended.
            (replies, Instant::now() - linger)
        })
    };
    let (survivor, _) = holder(&mut workers);
    survivor.kill();
    let killed = Instant::now();
    let (replies, answered) = asking.join().expect("the client");
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert_eq!(
        replies[0],
        json!({"success": 1, "msg": "the worker for agent vcsim was lost before replying, and no other worker serves it"})
    );
    assert!(
        answered.duration_since(killed) < Duration::from_secs(5),
        "{:?}",
        answered.duration_since(killed)
    );
}

#[test]
fn a_stalled_worker_that_wakes_up_late_does_not_reply_twice() {
    let nats = NatsServer::start();
    let (_sim, _reg, mut workers, dir) = slow_vcenter_workers(&nats, 1, 1000, &[]);
    let (_front_service, front, fmgmt) = nats_proxy(
        &nats,
        &conf(&dir, "p.conf", "[proxy]\nrequest-timeout = 20\n"),
    );
    let asking = {
        let front = front.clone();
        // Long enough after the first reply for the woken worker to send
        // its own two.
        std::thread::spawn(move || {
            replies_to(
                &front,
                VM_GET,
                Duration::from_secs(25),
                Duration::from_secs(6),
            )
        })
    };
    let (stalled, _) = holder(&mut workers);
    signal(stalled, "STOP");
    // Silent twice (the retry reaches the same stopped member), then an
    // error; the worker wakes and answers both copies, to no one.
    std::thread::sleep(Duration::from_secs(4));
    signal(stalled, "CONT");
    let replies = asking.join().expect("the client");
    assert_eq!(
        replies,
        vec![
            json!({"success": 1, "msg": "the workers for agent vcsim were lost before replying (tried twice)"})
        ]
    );
    eventually(
        Duration::from_secs(10),
        "the woken worker answered both",
        || {
            let answered =
                wait_for_status(&workers[0].1, "worker")["result"]["nats"]["answered"].clone();
            (answered == 2).then_some(()).ok_or(answered.to_string())
        },
    );
    assert_eq!(nats_counts(&fmgmt, "proxy", &["retried", "lost"]), [1, 1]);
}

#[test]
fn a_daemon_on_nats_answers_zeromq_and_http_as_a_local_daemon_does() {
    let nats = NatsServer::start();
    let sim = Simulator::start(&[]);
    let reg = Registry::new(&sim.url);
    let dir = tempfile::tempdir().expect("dir");
    let (_worker, wmgmt) = nats_worker(&reg, &nats, &conf(&dir, "w.conf", ""));
    subjects(&wmgmt, 1);
    let (local_http, nats_http) = (free_port(), free_port());
    let (_local, local_front, _) = daemon_with(
        &reg,
        &[
            "-f",
            &conf(
                &dir,
                "l.conf",
                &format!("[http]\nlisten = 127.0.0.1:{local_http}\n"),
            ),
        ],
    );
    let (_forwarding, front, _mgmt) = nats_frontend(
        "daemon",
        &nats.url,
        &conf(
            &dir,
            "d.conf",
            &format!("[http]\nlisten = 127.0.0.1:{nats_http}\n[proxy]\nrequest-timeout = 5\n"),
        ),
    );
    let once = |front: &str, body: &str| {
        let replies = raw_replies_to(front, body, Duration::from_secs(10), Duration::ZERO);
        assert_eq!(replies.len(), 1, "{body}: {replies:?}");
        replies[0].clone()
    };
    let posted = |port: u16, body: &str| {
        let reply = probe(&[
            "request",
            "POST",
            &format!("http://127.0.0.1:{port}/v1/call"),
            body,
        ]);
        (
            reply["status"].clone(),
            reply["content_type"].clone(),
            reply["body"].clone(),
        )
    };
    for body in [
        VM_GET,
        r#"{"method": "vm.get", "hostname": "vcsim", "name": "no-such-vm"}"#,
        r#"{"method": "vm.get", "hostname": "vcsim", "name": "DC0_H0_VM0", "properties": ["runtime.powerState"], "helper": "vpoller.helpers.czabbix"}"#,
        // Refused by the worker, which names what is wrong.
        r#"{"method": "no.such.method", "hostname": "vcsim"}"#,
        r#"{"method": "vm.get", "hostname": "vcsim"}"#,
        // No agent: answered by any worker, as a local one answers.
        r#"{"method": "vm.get"}"#,
        r#"{"method": "no.such.method"}"#,
        r#"{"method": "vm.get", "hostname": ""}"#,
        r#"{"method": "vm.get", "hostname": 7}"#,
        r#"{"method": "about", "helper": "vpoller.helpers.czabbix"}"#,
        "[1, 2]",
        "not json, from vpoller.helpers.czabbix",
    ] {
        assert_eq!(
            once(&front, body),
            once(&local_front, body),
            "ZeroMQ: {body}"
        );
        assert_eq!(
            posted(nats_http, body),
            posted(local_http, body),
            "HTTP: {body}"
        );
    }
    let url = |port: u16| {
        format!(
            "http://127.0.0.1:{port}/v1/call/vm.get?hostname=vcsim&name=DC0_H0_VM0&properties=runtime.powerState"
        )
    };
    assert_eq!(
        http_request("GET", &url(nats_http), None, None),
        http_request("GET", &url(local_http), None, None)
    );
    let (status, body) = http_request(
        "GET",
        &format!("http://127.0.0.1:{nats_http}/readyz"),
        None,
        None,
    );
    assert_eq!(status, 200, "{body}");
    let samples = probe(&["metrics", &format!("http://127.0.0.1:{nats_http}/metrics")]);
    assert_eq!(sample(&samples, "vpoller_nats_connected", &[]), Some(1.0));
    let answered = sample(
        &samples,
        "vpoller_nats_requests_total",
        &[("outcome", "answered")],
    );
    assert!(answered.unwrap_or(0.0) >= 25.0, "{answered:?}");
    assert_eq!(
        sample(&samples, "vpoller_nats_retries_total", &[]),
        Some(0.0)
    );
    assert!(
        sample(
            &samples,
            "vpoller_nats_messages_total",
            &[("direction", "out")]
        )
        .unwrap_or(0.0)
            >= 25.0
    );
    // Without NATS the frontend is not ready, and says why.
    drop(nats);
    eventually(Duration::from_secs(10), "not ready without NATS", || {
        let (status, body) = http_request(
            "GET",
            &format!("http://127.0.0.1:{nats_http}/readyz"),
            None,
            None,
        );
        (status == 503 && body.contains("\"connected\":false"))
            .then_some(())
            .ok_or(body)
    });
}

#[test]
fn a_nats_cluster_loses_a_node_under_load_and_serves_on() {
    let (port_a, port_b, route_a, route_b) = (free_port(), free_port(), free_port(), free_port());
    let mut node_a = NatsServer::cluster_node(port_a, route_a, &[route_b]);
    let node_b = NatsServer::cluster_node(port_b, route_b, &[route_a]);
    let sim = Simulator::start(&[]);
    let reg = Registry::new(&sim.url);
    let dir = tempfile::tempdir().expect("dir");
    // One worker and the proxy on node a, one worker on node b; each is
    // given one node and learns the other from the cluster.
    let workers: Vec<(Service, String)> = [&node_a.url, &node_b.url]
        .into_iter()
        .enumerate()
        .map(|(i, url)| {
            let mgmt = endpoint(free_port());
            let unused_proxy = endpoint(free_port());
            let wconf = conf(&dir, &format!("w{i}.conf"), "");
            (
                worker(&reg, &unused_proxy, &mgmt, &["--nats", url, "-f", &wconf]),
                mgmt,
            )
        })
        .collect();
    for (_, mgmt) in &workers {
        subjects(mgmt, 1);
    }
    let (_proxy, front, pmgmt) = nats_frontend(
        "proxy",
        &node_a.url,
        &conf(&dir, "p.conf", "[proxy]\nrequest-timeout = 3\n"),
    );
    // The routes are up when a request crosses them.
    served_within(Duration::from_secs(15), &front, "the cluster served");
    let node_of = |mgmt: &str, role: &str| {
        wait_for_status(mgmt, role)["result"]["nats"]["server"]["address"]
            .as_str()
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse::<u16>().ok())
            .expect("the server address")
    };
    assert_eq!(node_of(&pmgmt, "proxy"), port_a);
    assert_eq!(node_of(&workers[0].1, "worker"), port_a);
    let front = std::sync::Arc::new(front);
    let started = Instant::now();
    let kill_at = Duration::from_millis(1000);
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let front = front.clone();
            std::thread::spawn(move || {
                let mut outcomes = Vec::new();
                while started.elapsed() < Duration::from_secs(4) {
                    let sent = started.elapsed();
                    let reply = vm_get(&front);
                    outcomes.push((sent, started.elapsed(), reply));
                }
                outcomes
            })
        })
        .collect();
    std::thread::sleep(kill_at);
    let _ = node_a.child.kill();
    let _ = node_a.child.wait();
    let killed = started.elapsed();
    let outcomes: Vec<(Duration, Duration, Value)> = clients
        .into_iter()
        .flat_map(|c| c.join().expect("a client"))
        .collect();
    let failed: Vec<&(Duration, Duration, Value)> = outcomes
        .iter()
        .filter(|(_, _, reply)| reply["success"] != 0)
        .collect();
    for (sent, answered, reply) in &failed {
        assert_eq!(reply["success"], 1, "not a reply: {reply}");
        // Only requests in flight at the kill may fail, each with an
        // error within its deadline.
        assert!(
            *sent <= killed && *answered >= killed,
            "{sent:?}..{answered:?} (killed at {killed:?}): {reply}"
        );
        assert!(*answered - *sent < Duration::from_secs(4), "{reply}");
    }
    eprintln!(
        "{} requests, {} failed: {failed:?}",
        outcomes.len(),
        failed.len()
    );
    assert!(
        failed.len() <= 8,
        "{} of {} failed",
        failed.len(),
        outcomes.len()
    );
    let served_after = outcomes
        .iter()
        .filter(|(sent, _, reply)| *sent > killed && reply["success"] == 0)
        .count();
    assert!(served_after > 0, "nothing served after the node was lost");
    // The proxy and the worker of node a moved to node b.
    for (mgmt, role) in [(&pmgmt, "proxy"), (&workers[0].1, "worker")] {
        let status = wait_for_status(mgmt, role)["result"]["nats"].clone();
        assert_eq!(node_of(mgmt, role), port_b, "{role}: {status}");
        assert_eq!(status["connects"], 2, "{role}: {status}");
    }
}

/// Every answer to a `$SRV` request within half a second (the service API
/// is fan-out: each instance answers).
async fn service_answers(client: &async_nats::Client, subject: &str) -> Vec<Value> {
    use futures::StreamExt;
    let inbox = client.new_inbox();
    let mut answers = client.subscribe(inbox.clone()).await.expect("subscribe");
    client
        .publish_with_reply(subject.to_string(), inbox, "".into())
        .await
        .expect("publish");
    let mut found = Vec::new();
    while let Ok(Some(message)) =
        tokio::time::timeout(Duration::from_millis(500), answers.next()).await
    {
        found.push(serde_json::from_slice(&message.payload).expect("JSON"));
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_are_a_nats_service_with_an_endpoint_per_agent() {
    let nats = NatsServer::start();
    let sim = Simulator::start(&[]);
    let reg = Registry::with_agent(&sim.url, "vc01.example.org", "pass");
    let dir = tempfile::tempdir().expect("dir");
    let wconf = conf(&dir, "w.conf", "");
    let (_w1, m1) = nats_worker(&reg, &nats, &wconf);
    let (_w2, m2) = nats_worker(&reg, &nats, &wconf);
    subjects(&m1, 1);
    subjects(&m2, 1);
    let (_proxy, front, _pmgmt) = nats_proxy(&nats, &conf(&dir, "p.conf", ""));
    for name in ["DC0_H0_VM0", "no-such-vm", "DC0_H0_VM1"] {
        client(
            &front,
            &["-m", "vm.get", "-V", "vc01.example.org", "-n", name],
            10_000,
        );
    }
    let nats_client = async_nats::connect(nats.url.as_str())
        .await
        .expect("connect");
    let pings = service_answers(&nats_client, "$SRV.PING.vpoller").await;
    assert_eq!(pings.len(), 2, "{pings:?}");
    let id_of = |mgmt: &str| {
        wait_for_status(mgmt, "worker")["result"]["nats"]["service"]["id"]
            .as_str()
            .expect("the worker's service id")
            .to_string()
    };
    let mut ids: Vec<String> = pings
        .iter()
        .map(|p| p["id"].as_str().unwrap_or_default().to_string())
        .collect();
    ids.sort();
    let mut expected = vec![id_of(&m1), id_of(&m2)];
    expected.sort();
    assert_eq!(ids, expected);
    for ping in &pings {
        assert_eq!(ping["type"], "io.nats.micro.v1.ping_response");
        assert_eq!(ping["name"], "vpoller");
    }
    let info = service_answers(&nats_client, &format!("$SRV.INFO.vpoller.{}", id_of(&m1))).await;
    assert_eq!(info.len(), 1, "{info:?}");
    assert_eq!(
        info[0]["endpoints"][0],
        json!({"name": "vc01_2Eexample_2Eorg", "subject": "vpoller.v1.agent.vc01_2Eexample_2Eorg",
               "queue_group": "vpoller.v1.agent.vc01_2Eexample_2Eorg", "metadata": {"agent": "vc01.example.org"}})
    );
    // The three requests, split between the two workers as NATS chose.
    let stats = service_answers(&nats_client, "$SRV.STATS").await;
    assert_eq!(stats.len(), 2, "{stats:?}");
    let agent_endpoint = |s: &Value| {
        s["endpoints"]
            .as_array()
            .and_then(|e| e.iter().find(|e| e["name"] == "vc01_2Eexample_2Eorg"))
            .cloned()
            .expect("the agent's endpoint")
    };
    let requests: u64 = stats
        .iter()
        .map(|s| agent_endpoint(s)["num_requests"].as_u64().unwrap_or(0))
        .sum();
    let errors: u64 = stats
        .iter()
        .map(|s| agent_endpoint(s)["num_errors"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!((requests, errors), (3, 1), "{stats:?}");
    assert!(
        stats
            .iter()
            .any(|s| agent_endpoint(s)["last_error"] == "Cannot find object no-such-vm"),
        "{stats:?}"
    );
    assert!(
        stats[0]["started"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{}",
        stats[0]
    );
}

#[test]
fn a_request_past_its_deadline_gets_vpollers_timeout_error_and_no_retry() {
    let nats = NatsServer::start();
    // Two slow SOAP calls (name index, then the properties): 6 s, past
    // the silence after which a worker counts as lost.
    let (_sim, _reg, _workers, dir) = slow_vcenter_workers(&nats, 2, 3000, &[]);
    let (_proxy, front, pmgmt) = nats_proxy(
        &nats,
        &conf(&dir, "p.conf", "[proxy]\nrequest-timeout = 4\n"),
    );
    let asked = Instant::now();
    let replies = replies_to(
        &front,
        VM_GET,
        Duration::from_secs(10),
        Duration::from_secs(3),
    );
    let took = asked.elapsed() - Duration::from_secs(3);
    assert_eq!(
        replies,
        vec![json!({"success": 1, "msg": "Did not receive response, aborting..."})]
    );
    assert!(took < Duration::from_millis(4500), "{took:?}");
    // The worker was still at it, and said so: no second copy was sent.
    assert_eq!(
        nats_counts(&pmgmt, "proxy", &["timed_out", "retried"]),
        [1, 0]
    );
}

#[test]
fn replies_larger_than_the_servers_max_payload_come_whole_in_parts() {
    let dir = tempfile::tempdir().expect("dir");
    let small = conf(&dir, "nats.conf", "max_payload: 2048\n");
    let nats = NatsServer::start_with(free_port(), &["-c", &small]);
    let sim = Simulator::start(&["-vm", "20"]);
    let reg = Registry::new(&sim.url);
    let (_worker, wmgmt) = nats_worker(&reg, &nats, &conf(&dir, "w.conf", ""));
    subjects(&wmgmt, 1);
    let (_local, local_front, _) = daemon(&reg);
    let (_forwarding, front, _mgmt) = nats_frontend(
        "daemon",
        &nats.url,
        &conf(&dir, "d.conf", "[proxy]\nrequest-timeout = 10\n"),
    );
    let once = |front: &str, body: &str| {
        let replies = raw_replies_to(front, body, Duration::from_secs(15), Duration::ZERO);
        assert_eq!(replies.len(), 1, "{replies:?}");
        replies[0].clone()
    };
    let discover = r#"{"method": "vm.discover", "hostname": "vcsim", "properties": ["name", "runtime.powerState", "config.guestFullName", "summary.config.vmPathName"]}"#;
    let local = once(&local_front, discover);
    assert!(local.len() > 3 * 2048, "a reply of {} bytes", local.len());
    assert_eq!(once(&front, discover), local);
    // A request the server cannot carry is refused with the reason.
    let long_name = "x".repeat(3000);
    let big = json!({"method": "vm.get", "hostname": "vcsim", "name": long_name}).to_string();
    let refused: Value = serde_json::from_str(&once(&front, &big)).expect("JSON");
    assert_eq!(refused["success"], 1);
    assert!(
        refused["msg"]
            .as_str()
            .is_some_and(|m| m.contains("max_payload (2048 bytes)")),
        "{refused}"
    );
    // Over the request limit: refused unread, as the local daemon does.
    let huge =
        json!({"method": "vm.get", "hostname": "vcsim", "name": "x".repeat(2 << 20)}).to_string();
    assert_eq!(once(&front, &huge), once(&local_front, &huge));
}

#[test]
fn nats_credentials_come_from_files_and_refused_ones_stop_the_process_at_start() {
    let dir = tempfile::tempdir().expect("dir");
    let sim = Simulator::start(&[]);
    let reg = Registry::new(&sim.url);
    for (server_args, right, wrong) in [
        (
            vec!["--auth", "t0ken-for-nats"],
            "token-file = {dir}/right\n",
            "token-file = {dir}/wrong\n",
        ),
        (
            vec!["--user", "vpoller", "--pass", "pa55-for-nats"],
            "user = vpoller\npassword-file = {dir}/right\n",
            "user = vpoller\npassword-file = {dir}/wrong\n",
        ),
    ] {
        let secret = server_args[server_args.len() - 1];
        std::fs::write(dir.path().join("right"), format!("{secret}\n")).expect("secret");
        std::fs::write(dir.path().join("wrong"), "not-it\n").expect("secret");
        let nats = NatsServer::start_with(free_port(), &server_args);
        let section = |text: &str| {
            format!(
                "[nats]\n{}[proxy]\nrequest-timeout = 5\n",
                text.replace("{dir}", &dir.path().display().to_string())
            )
        };
        let (_worker, wmgmt) = nats_worker(&reg, &nats, &conf(&dir, "w.conf", &section(right)));
        subjects(&wmgmt, 1);
        let (_proxy, front, _) = nats_proxy(&nats, &conf(&dir, "p.conf", &section(right)));
        let reply = vm_get(&front);
        assert_eq!(reply["success"], 0, "{reply}");
        // Refused credentials: an error at start, naming the cause, not an
        // endless retry; and the secret is in no output.
        let started = Instant::now();
        let out = vpoller(&[
            "proxy",
            "--nats",
            &nats.url,
            "-f",
            &conf(&dir, "bad.conf", &section(wrong)),
            "--frontend",
            &endpoint(free_port()),
            "--mgmt",
            &endpoint(free_port()),
        ]);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("refused the connection"), "{stderr}");
        assert!(stderr.contains("authorization violation"), "{stderr}");
        for text in [&stderr, &String::from_utf8_lossy(&out.stdout)] {
            assert!(!text.contains(secret) && !text.contains("not-it"), "{text}");
        }
    }
}

#[test]
fn workers_and_a_frontend_started_before_nats_serve_once_it_is_up() {
    let port = free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let sim = Simulator::start(&[]);
    let reg = Registry::new(&sim.url);
    let dir = tempfile::tempdir().expect("dir");
    let mgmt = endpoint(free_port());
    let unused_proxy = endpoint(free_port());
    let _worker = worker(
        &reg,
        &unused_proxy,
        &mgmt,
        &["--nats", &url, "-f", &conf(&dir, "w.conf", "")],
    );
    let (_proxy, front, pmgmt) = nats_frontend(
        "proxy",
        &url,
        &conf(&dir, "p.conf", "[proxy]\nrequest-timeout = 2\n"),
    );
    let before = vm_get(&front);
    assert_eq!(before["success"], 1, "{before}");
    assert_eq!(nats_counts(&pmgmt, "proxy", &["answered"]), [0]);
    let _nats = NatsServer::start_with(port, &[]);
    served_within(Duration::from_secs(20), &front, "served once NATS is up");
}

#[test]
fn a_request_in_the_gap_of_a_worker_restart_waits_for_the_new_worker() {
    let nats = NatsServer::start();
    let sim = Simulator::start(&[]);
    let reg = Registry::new(&sim.url);
    let dir = tempfile::tempdir().expect("dir");
    let wconf = conf(&dir, "w.conf", "");
    let (mut old, wmgmt) = nats_worker(&reg, &nats, &wconf);
    subjects(&wmgmt, 1);
    let (_proxy, front, pmgmt) = nats_proxy(
        &nats,
        &conf(&dir, "p.conf", "[proxy]\nrequest-timeout = 10\n"),
    );
    let ask = |front: &str| {
        client(
            front,
            &["-m", "vm.get", "-V", "vcsim", "-n", "DC0_H0_VM0"],
            15_000,
        )
    };
    assert_eq!(ask(&front)["success"], 0);
    // The agent's only worker goes; a new one is on its way.
    old.kill();
    let asking = {
        let front = front.clone();
        std::thread::spawn(move || {
            let asked = Instant::now();
            let reply = ask(&front);
            eprintln!("in the gap: answered after {:?}", asked.elapsed());
            reply
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let (_new, new_mgmt) = nats_worker(&reg, &nats, &wconf);
    let reply = asking.join().expect("the client");
    assert_eq!(reply["success"], 0, "answered by the new worker: {reply}");
    subjects(&new_mgmt, 1);
    assert_eq!(
        nats_counts(&pmgmt, "proxy", &["answered", "no_worker"]),
        [2, 0]
    );
    // An agent never served is still refused at once.
    let asked = Instant::now();
    let reply = client(
        &front,
        &["-m", "vm.get", "-V", "vc-never", "-n", "x"],
        15_000,
    );
    assert_eq!(reply["msg"], "no worker serves agent vc-never");
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "{:?}",
        asked.elapsed()
    );
}

const ONCE_METHOD: &str = r#"
return {
  api = 1,
  name = "vm.once",
  description = "Stands for a script that changes something: never run twice",
  required = { "name" },
  repeatable = false,
  run = function(ctx, req)
    local vm = ctx:lookup("VirtualMachine", "name", req.name, { "runtime.powerState" })
    return { state = vm and vm["runtime.powerState"] }
  end,
}
"#;

#[test]
fn a_method_that_is_not_repeatable_is_not_sent_again_when_its_worker_is_lost() {
    let nats = NatsServer::start();
    let scripts = tempfile::tempdir().expect("dir");
    std::fs::write(scripts.path().join("vm.once.lua"), ONCE_METHOD).expect("script");
    let scripts_dir = scripts.path().display().to_string();
    let (_sim, _reg, mut workers, dir) =
        slow_vcenter_workers(&nats, 2, 1000, &["--methods-dir", &scripts_dir]);
    let (_front_service, front, fmgmt) = nats_frontend(
        "daemon",
        &nats.url,
        &conf(&dir, "d.conf", "[proxy]\nrequest-timeout = 20\n"),
    );
    let asking = std::thread::spawn(move || {
        let once = r#"{"method": "vm.once", "hostname": "vcsim", "name": "DC0_H0_VM0"}"#;
        replies_to(
            &front,
            once,
            Duration::from_secs(25),
            Duration::from_secs(2),
        )
    });
    let (held_by, _) = holder(&mut workers);
    held_by.kill();
    let replies = asking.join().expect("the client");
    assert_eq!(
        replies,
        vec![
            json!({"success": 1, "msg": "the worker for agent vcsim was lost while running vm.once, which is not repeatable, so it was not sent again"})
        ]
    );
    assert_eq!(nats_counts(&fmgmt, "daemon", &["retried", "lost"]), [0, 1]);
    let survivor = workers
        .iter_mut()
        .find_map(|(s, mgmt)| s.is_running().then_some(mgmt.clone()))
        .expect("a survivor");
    assert_eq!(nats_counts(&survivor, "worker", &["requests"]), [0]);
}

#[test]
fn a_busy_worker_runs_its_concurrency_and_its_waiting_requests_are_not_taken_for_lost() {
    let nats = NatsServer::start();
    let (_sim, _reg, workers, dir) = slow_vcenter_workers(&nats, 1, 1000, &["--concurrency", "1"]);
    let mgmt = workers[0].1.clone();
    let (_proxy, front, pmgmt) = nats_proxy(
        &nats,
        &conf(&dir, "p.conf", "[proxy]\nrequest-timeout = 15\n"),
    );
    let asking: Vec<_> = (0..3)
        .map(|_| {
            let front = front.clone();
            std::thread::spawn(move || {
                replies_to(
                    &front,
                    VM_GET,
                    Duration::from_secs(20),
                    Duration::from_millis(500),
                )
            })
        })
        .collect();
    let mut most = 0;
    while asking.iter().any(|a| !a.is_finished()) {
        let running = wait_for_status(&mgmt, "worker")["result"]["requests"]["in_flight"]
            .as_u64()
            .unwrap_or(0);
        most = most.max(running);
        std::thread::sleep(Duration::from_millis(100));
    }
    for a in asking {
        let replies = a.join().expect("a client");
        assert_eq!(replies.len(), 1, "{replies:?}");
        assert_eq!(replies[0]["success"], 0, "{}", replies[0]);
    }
    assert_eq!(most, 1, "requests run at once");
    // Waiting for room was reported as working: nothing was sent twice.
    assert_eq!(
        nats_counts(&pmgmt, "proxy", &["retried", "answered"]),
        [0, 3]
    );
}

/// Runs openssl with `args`, in `dir`.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, and a server and a client certificate it signed, for 127.0.0.1.
fn certificates(dir: &std::path::Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "1",
        "-subj",
        "/CN=vpoller test CA",
    ]);
    openssl(dir, &ca);
    for (name, usage) in [("server", "serverAuth"), ("client", "clientAuth")] {
        let (key, csr, pem, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        let mut request = vec!["req"];
        request.extend(ec);
        request.extend(["-keyout", &key, "-out", &csr, "-subj", "/CN=127.0.0.1"]);
        openssl(dir, &request);
        std::fs::write(
            dir.join(&ext),
            format!(
                "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage={usage}\n"
            ),
        )
        .expect("extensions");
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "1",
                "-extfile",
                &ext,
            ],
        );
    }
}

#[test]
fn nats_over_tls_with_client_certificates_from_files() {
    let dir = tempfile::tempdir().expect("dir");
    certificates(dir.path());
    let at = |file: &str| dir.path().join(file).display().to_string();
    let nats = NatsServer::start_with(
        free_port(),
        &[
            "--tls",
            "--tlscert",
            &at("server.pem"),
            "--tlskey",
            &at("server.key"),
            "--tlsverify",
            "--tlscacert",
            &at("ca.pem"),
        ],
    );
    let sim = Simulator::start(&[]);
    let reg = Registry::new(&sim.url);
    let full = format!(
        "[nats]\nca-file = {}\ncert-file = {}\nkey-file = {}\n",
        at("ca.pem"),
        at("client.pem"),
        at("client.key")
    );
    let (_worker, wmgmt) = nats_worker(&reg, &nats, &conf(&dir, "w.conf", &full));
    subjects(&wmgmt, 1);
    let (_proxy, front, _) = nats_proxy(&nats, &conf(&dir, "p.conf", &full));
    let reply = vm_get(&front);
    assert_eq!(reply["success"], 0, "{reply}");
    // What no retry mends stops the process at start, naming the cause:
    // no client certificate, or a server certificate nobody vouches for.
    for (text, cause) in [
        (
            format!("[nats]\nca-file = {}\n", at("ca.pem")),
            "BadCertificate",
        ),
        (String::new(), "UnknownIssuer"),
    ] {
        let started = Instant::now();
        let out = vpoller(&[
            "proxy",
            "--nats",
            &nats.url,
            "-f",
            &conf(&dir, "bad.conf", &text),
            "--frontend",
            &endpoint(free_port()),
            "--mgmt",
            &endpoint(free_port()),
        ]);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(
            stderr.contains("refused the connection") && stderr.contains(cause),
            "{stderr}"
        );
    }
}

#[test]
fn a_worker_stopped_with_a_request_in_hand_answers_it_first() {
    let nats = NatsServer::start();
    let (_sim, _reg, mut workers, dir) = slow_vcenter_workers(&nats, 1, 1000, &[]);
    let (_proxy, front, pmgmt) = nats_proxy(
        &nats,
        &conf(&dir, "p.conf", "[proxy]\nrequest-timeout = 20\n"),
    );
    let asking = std::thread::spawn(move || {
        replies_to(
            &front,
            VM_GET,
            Duration::from_secs(25),
            Duration::from_millis(500),
        )
    });
    let (stopping, _) = holder(&mut workers);
    assert_eq!(
        stopping.terminate(),
        Some(0),
        "a clean exit within its grace"
    );
    let replies = asking.join().expect("the client");
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert_eq!(replies[0]["success"], 0, "{}", replies[0]);
    assert_eq!(
        nats_counts(&pmgmt, "proxy", &["answered", "retried"]),
        [1, 0]
    );
}
