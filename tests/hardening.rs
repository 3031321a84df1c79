//! Hostile input and failing vCenters, against the real processes: a frame
//! header that announces 2^62 bytes on every socket, a wrong password under
//! load, a hung vCenter beside a healthy one, requests and scripts that try
//! to exhaust memory, and a proxy stopped with requests in flight.

mod common;

use common::Simulator;
use common::services::*;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

/// A ZMTP 3.0 greeting (NULL mechanism) followed by the header of a frame
/// that claims 2^62 bytes: 73 bytes that once made the process abort.
fn hostile_packet() -> Vec<u8> {
    let mut packet = vec![0u8; 64];
    packet[0] = 0xFF;
    packet[9] = 0x7F;
    packet[10] = 3;
    packet[12..16].copy_from_slice(b"NULL");
    packet.push(0x02);
    packet.extend_from_slice(&(1u64 << 62).to_be_bytes());
    assert_eq!(packet.len(), 73);
    packet
}

fn send_hostile(endpoint: &str) {
    let address = endpoint.trim_start_matches("tcp://");
    let mut stream = TcpStream::connect(address).expect("connect");
    stream.write_all(&hostile_packet()).expect("send");
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    // The peer closes the connection; whatever it sent first is read away.
    let mut sink = Vec::new();
    let _ = stream.read_to_end(&mut sink);
}

fn discover_works(front: &str) -> bool {
    client(front, &["-m", "vm.discover", "-V", "vcsim"], 5000)["success"] == 0
}

#[test]
fn an_oversize_frame_header_is_refused_on_every_socket() {
    let sim = Simulator::start(&[]);
    let reg = Registry::new(&sim.url);

    let (mut daemon, front, mgmt) = daemon(&reg);
    for socket in [&front, &mgmt] {
        send_hostile(socket);
        assert!(daemon.is_running(), "the daemon survives {socket}");
    }
    assert!(discover_works(&front));
    wait_for_status(&mgmt, "daemon");

    let (pfront, pback, pmgmt, wmgmt) = (
        endpoint(free_port()),
        endpoint(free_port()),
        endpoint(free_port()),
        endpoint(free_port()),
    );
    let mut the_proxy = proxy(&pfront, &pback, &pmgmt);
    let mut the_worker = worker(&reg, &pback, &wmgmt, &[]);
    for socket in [&pfront, &pback, &pmgmt, &wmgmt] {
        send_hostile(socket);
        assert!(
            the_proxy.is_running() && the_worker.is_running(),
            "proxy and worker survive {socket}"
        );
    }
    assert!(discover_works(&pfront), "the proxy still hands out work");
    wait_for_status(&pmgmt, "proxy");
    wait_for_status(&wmgmt, "worker");

    // A worker's own connection, to something that is no proxy.
    let fake_proxy = TcpListener::bind("127.0.0.1:0").expect("bind");
    let fake = format!("tcp://{}", fake_proxy.local_addr().expect("address"));
    let lone_mgmt = endpoint(free_port());
    let mut lone = worker(&reg, &fake, &lone_mgmt, &[]);
    fake_proxy.set_nonblocking(false).expect("blocking accept");
    let (mut conn, _) = fake_proxy.accept().expect("the worker connects");
    conn.write_all(&hostile_packet()).expect("send");
    std::thread::sleep(Duration::from_millis(500));
    assert!(lone.is_running(), "the worker survives a hostile proxy");
    wait_for_status(&lone_mgmt, "worker");
}

fn logins(sim: &Simulator) -> usize {
    sim.calls_of("Login")
}

#[test]
fn a_wrong_password_costs_one_login_however_many_requests() {
    let sim = Simulator::start(&["-username", "user", "-password", "pass", "-trace"]);
    let reg = Registry::with_agent(&sim.url, "vcsim", "wrong");
    let (_daemon, front, _mgmt) = daemon(&reg);
    let started = Instant::now();
    for i in 0..20 {
        let reply = client(&front, &["-m", "vm.discover", "-V", "vcsim"], 5000);
        assert_eq!(reply["success"], 1, "{reply}");
        let msg = reply["msg"].as_str().unwrap_or_default();
        assert!(msg.contains("login failed"), "request {i}: {msg}");
        if i > 0 {
            assert!(msg.contains("remembered"), "request {i}: {msg}");
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(started.elapsed() >= Duration::from_secs(6));
    assert_eq!(logins(&sim), 1, "20 requests in 6 s made one Login");

    // The right password starts afresh at once.
    let out = Command::new(env!("CARGO_BIN_EXE_vpoller"))
        .args(["agent", "update", "-d", &reg.db(), "--key-file", &reg.key()])
        .args(["-H", "vcsim", "--new-password"])
        .env("VPOLLER_PASSWORD", "pass")
        .output()
        .expect("agent update");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The daemon re-reads the registry every half second.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let reply = client(&front, &["-m", "vm.discover", "-V", "vcsim"], 5000);
        if reply["success"] == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new password was never used: {reply}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(logins(&sim), 2, "one more Login, with the new password");
}

fn config_file(dir: &tempfile::TempDir, text: &str) -> String {
    let path = dir.path().join("vpoller.conf");
    std::fs::write(&path, text).expect("write the configuration");
    path.display().to_string()
}

/// An admin method directory in `dir` with one script; its path.
fn admin_methods(dir: &tempfile::TempDir, file: &str, script: &str) -> String {
    let methods = dir.path().join("methods.d");
    std::fs::create_dir(&methods).expect("methods dir");
    std::fs::write(methods.join(file), script).expect("script");
    methods.display().to_string()
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

/// Each request on its own thread: (agent, name, reply, seconds taken).
fn concurrently(front: &str, asks: &[(&str, &str)]) -> Vec<(String, String, Value, f64)> {
    let threads: Vec<_> = asks
        .iter()
        .map(|(agent, name)| {
            let (front, agent, name) = (front.to_string(), agent.to_string(), name.to_string());
            std::thread::spawn(move || {
                let started = Instant::now();
                let reply = client(
                    &front,
                    &[
                        "-m",
                        "vm.get",
                        "-V",
                        &agent,
                        "-n",
                        &name,
                        "-p",
                        "runtime.powerState",
                    ],
                    15000,
                );
                (agent, name, reply, started.elapsed().as_secs_f64())
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().expect("client thread"))
        .collect()
}

#[test]
fn a_hung_vcenter_costs_each_request_one_deadline_and_nobody_else_anything() {
    let hung = Simulator::start(&[]);
    let fine = Simulator::start(&[]);
    let reg = Registry::with_agent(&hung.url, "hung", "pass");
    reg.add_agent(&fine.url, "fine", "pass");
    let dir = tempfile::tempdir().expect("dir");
    let config = config_file(
        &dir,
        "[vsphere]\ntimeout = 2\nunreachable-after = 3\nunreachable-cooldown = 1\n",
    );
    let (_daemon, front, _mgmt) = daemon_with(&reg, &["-f", &config]);
    let known = "DC0_H0_VM0";
    for agent in ["hung", "fine"] {
        let warm = concurrently(&front, &[(agent, known)]);
        assert_eq!(warm[0].2["success"], 0, "{}", warm[0].2);
    }

    signal(hung.pid(), "STOP");
    let mut asks = Vec::new();
    for unknown in ["nope-1", "nope-2", "nope-3", "nope-4"] {
        asks.push(("hung", unknown));
    }
    for _ in 0..4 {
        asks.push(("hung", known));
        asks.push(("fine", known));
    }
    let answers = concurrently(&front, &asks);
    for (agent, name, reply, seconds) in &answers {
        match agent.as_str() {
            "fine" => {
                assert_eq!(reply["success"], 0, "{reply}");
                assert!(
                    *seconds < 1.5,
                    "a healthy vCenter's request took {seconds:.1} s"
                );
            }
            _ => {
                assert_eq!(reply["success"], 1, "{name}: {reply}");
                assert!(
                    *seconds < 3.5,
                    "{name} on the hung vCenter took {seconds:.1} s (deadline 2 s)"
                );
            }
        }
    }
    // The circuit is open now: no more waiting at all.
    let (_, _, reply, seconds) = concurrently(&front, &[("hung", known)]).remove(0);
    assert_eq!(reply["success"], 1);
    let msg = reply["msg"].as_str().unwrap_or_default();
    assert!(msg.contains("unreachable"), "{msg}");
    assert!(seconds < 0.5, "an open circuit answered in {seconds:.2} s");

    signal(hung.pid(), "CONT");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, _, reply, _) = concurrently(&front, &[("hung", known)]).remove(0);
        if reply["success"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "never recovered: {reply}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

const RUNAWAY: &str = r#"
return {
  api = 1,
  name = "runaway.eat",
  description = "Builds a table until memory runs out",
  run = function(ctx, req)
    local t = {}
    local i = 0
    while true do
      i = i + 1
      t[i] = string.rep("x", 1024) .. i
    end
  end,
}
"#;

#[test]
fn memory_comes_back_after_big_requests_and_runaway_scripts() {
    let sim = Simulator::start(&[]);
    let reg = Registry::new(&sim.url);
    let dir = tempfile::tempdir().expect("dir");
    let methods = admin_methods(&dir, "runaway.lua", RUNAWAY);
    let config = config_file(&dir, "[lua]\nmemory-mb = 64\ntotal-memory-mb = 160\n");
    let (daemon, front, _mgmt) = daemon_with(&reg, &["-f", &config, "--methods-dir", &methods]);
    assert!(discover_works(&front));
    std::thread::sleep(Duration::from_secs(1));
    let baseline = rss(daemon.pid());

    // 100,000 invalid property paths in one 850 KB request.
    let paths: Vec<String> = (0..100_000).map(|i| format!("p{i}")).collect();
    let request =
        json!({"method": "vm.get", "hostname": "vcsim", "name": "DC0_H0_VM0", "properties": paths});
    let body = request.to_string();
    assert!(body.len() > 800_000 && body.len() < 1 << 20);
    let reply = raw_request(&front, body.as_bytes());
    assert_eq!(reply["success"], 1);
    assert!(
        reply["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("'properties' has 100000 entries"),
        "{reply}"
    );

    // Eight runaway scripts at once: the budget of all calls holds.
    let front_owned = front.clone();
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let front = front_owned.clone();
            std::thread::spawn(move || client(&front, &["-m", "runaway.eat", "-V", "vcsim"], 60000))
        })
        .collect();
    let mut peak = 0;
    while calls.iter().any(|c| !c.is_finished()) {
        peak = peak.max(rss(daemon.pid()));
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut budget_refusals = 0;
    for call in calls {
        let reply = call.join().expect("client");
        assert_eq!(reply["success"], 1, "{reply}");
        let msg = reply["msg"].as_str().unwrap_or_default().to_string();
        assert!(msg.contains("memory"), "{msg}");
        budget_refusals += usize::from(msg.contains("all Lua calls"));
    }
    assert!(
        budget_refusals > 0,
        "eight 64 MiB runaways cannot all fit in 160 MiB"
    );
    assert!(
        peak < baseline + (260 << 20),
        "peak RSS {} MiB over a {} MiB baseline, with a 160 MiB Lua budget",
        peak >> 20,
        baseline >> 20
    );
    assert!(discover_works(&front), "the daemon still serves");

    // Freed memory goes back to the system, not only to the allocator.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = rss(daemon.pid());
        if now < baseline + (40 << 20) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "RSS stays at {} MiB after the load, from {} MiB",
            now >> 20,
            baseline >> 20
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// One frame through a REQ socket of our own (vpoller client would split
/// the properties itself).
fn raw_request(front: &str, body: &[u8]) -> Value {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let text = runtime.block_on(vpoller::server::wire::request(
        front,
        std::str::from_utf8(body).expect("utf-8"),
        Duration::from_secs(10),
        1,
    ));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

const SLOW: &str = r#"
return {
  api = 1,
  name = "slow.echo",
  description = "Answers after about two seconds",
  run = function(ctx, req)
    local start = os.time()
    while os.time() - start < 2 do end
    return { done = true }
  end,
}
"#;

#[test]
fn a_proxy_stopped_with_requests_in_flight_delivers_their_replies() {
    let sim = Simulator::start(&[]);
    let reg = Registry::new(&sim.url);
    let dir = tempfile::tempdir().expect("dir");
    let methods = admin_methods(&dir, "slow.lua", SLOW);
    let (front, back, pmgmt, wmgmt) = (
        endpoint(free_port()),
        endpoint(free_port()),
        endpoint(free_port()),
        endpoint(free_port()),
    );
    let mut the_proxy = proxy(&front, &back, &pmgmt);
    let _worker = worker(&reg, &back, &wmgmt, &["--methods-dir", &methods]);
    // The worker has said READY once the proxy counts it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while wait_for_status(&pmgmt, "proxy")["result"]["workers_connected"] != 1 {
        assert!(
            Instant::now() < deadline,
            "the worker never reached the proxy"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let front = front.clone();
            std::thread::spawn(move || client(&front, &["-m", "slow.echo", "-V", "vcsim"], 15000))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = wait_for_status(&pmgmt, "proxy");
        if status["result"]["requests"]["in_flight"] == 20 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "requests never reached the worker: {status}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(the_proxy.terminate(), Some(0), "the proxy exits cleanly");
    let replies: Vec<Value> = calls
        .into_iter()
        .map(|c| c.join().expect("client"))
        .collect();
    let delivered = replies.iter().filter(|r| r["success"] == 0).count();
    assert_eq!(delivered, 20, "{replies:?}");
}
