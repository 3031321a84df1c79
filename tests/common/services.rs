//! Running vpoller's services as a user would: a registry made with
//! `vpoller agent`, and daemon, proxy and worker processes.
#![allow(dead_code)]

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::project_dir;

/// vPoller 0.7.3's Python client and pyzmq, installed once.
pub fn venv() -> PathBuf {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| {
        let dir = project_dir().join("target/pyvenv");
        let status = Command::new("bash")
            .arg(project_dir().join("tests/pyclient/setup.sh"))
            .arg(&dir)
            .status()
            .expect("run setup.sh");
        assert!(
            status.success(),
            "installing vpoller 0.7.3 into {} failed",
            dir.display()
        );
        dir
    })
    .clone()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

pub fn endpoint(port: u16) -> String {
    format!("tcp://127.0.0.1:{port}")
}

/// A registry of agents in a temporary directory.
pub struct Registry {
    pub dir: tempfile::TempDir,
}

impl Registry {
    /// A registry with the simulator as agent `vcsim`.
    pub fn new(sim_url: &str) -> Registry {
        Registry::with_agent(sim_url, "vcsim", "pass")
    }

    /// A registry with one agent at `sim_url`, logging in as `user`.
    pub fn with_agent(sim_url: &str, agent: &str, password: &str) -> Registry {
        let r = Registry {
            dir: tempfile::tempdir().expect("dir"),
        };
        assert!(
            vpoller(&["agent", "init", "-d", &r.db(), "--key-file", &r.key()])
                .status
                .success()
        );
        r.add_agent(sim_url, agent, password);
        r
    }

    /// Registers one more agent at `sim_url`, logging in as `user`.
    pub fn add_agent(&self, sim_url: &str, agent: &str, password: &str) {
        let r = self;
        let out = Command::new(env!("CARGO_BIN_EXE_vpoller"))
            .args([
                "agent",
                "add",
                "-d",
                &r.db(),
                "--key-file",
                &r.key(),
                "-H",
                agent,
                "-U",
                "user",
                "--url",
                sim_url,
            ])
            .env("VPOLLER_PASSWORD", password)
            .output()
            .expect("add");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn db(&self) -> String {
        self.dir.path().join("agents.db").display().to_string()
    }
    pub fn key(&self) -> String {
        self.dir.path().join("agents.key").display().to_string()
    }
}

pub fn vpoller(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vpoller"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run vpoller")
}

/// A service process, stopped with SIGTERM when dropped.
pub struct Service(pub Child);

impl Service {
    pub fn start(args: &[&str]) -> Service {
        let child = Command::new(env!("CARGO_BIN_EXE_vpoller"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start vpoller");
        Service(child)
    }
    pub fn terminate(&mut self) -> Option<i32> {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.0.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        None
    }
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            self.terminate();
        }
    }
}

pub fn daemon(reg: &Registry) -> (Service, String, String) {
    daemon_with(reg, &[])
}

/// A daemon with more arguments (`-f CONFIG`, `--methods-dir DIR`).
pub fn daemon_with(reg: &Registry, extra: &[&str]) -> (Service, String, String) {
    let (front, mgmt) = (endpoint(free_port()), endpoint(free_port()));
    let (db, key) = (reg.db(), reg.key());
    let mut args = vec![
        "daemon",
        "-d",
        &db,
        "--key-file",
        &key,
        "--frontend",
        &front,
        "--mgmt",
        &mgmt,
    ];
    args.extend_from_slice(extra);
    let s = Service::start(&args);
    wait_for_status(&mgmt, "daemon");
    (s, front, mgmt)
}

pub fn proxy(front: &str, back: &str, mgmt: &str) -> Service {
    let s = Service::start(&[
        "proxy",
        "--frontend",
        front,
        "--backend",
        back,
        "--mgmt",
        mgmt,
    ]);
    wait_for_status(mgmt, "proxy");
    s
}

pub fn worker(reg: &Registry, back: &str, mgmt: &str, extra: &[&str]) -> Service {
    let (db, key) = (reg.db(), reg.key());
    let mut args = vec![
        "worker",
        "-d",
        &db,
        "--key-file",
        &key,
        "--proxy",
        back,
        "--mgmt",
        mgmt,
    ];
    args.extend_from_slice(extra);
    let s = Service::start(&args);
    wait_for_status(mgmt, "worker");
    s
}

pub fn wait_for_status(mgmt: &str, role: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = vpoller(&[role, "status", "-e", mgmt]);
        if out.status.success() {
            return serde_json::from_slice(&out.stdout).expect("status JSON");
        }
        assert!(
            Instant::now() < deadline,
            "{role} did not come up at {mgmt}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// vPoller 0.7.3's own `vpoller-client`: one request, one attempt, within
/// `timeout_ms`; what it printed.
pub fn py_client_text(front: &str, args: &[&str], timeout_ms: u64) -> String {
    let timeout = timeout_ms.to_string();
    let out = Command::new(venv().join("bin/vpoller-client"))
        .args(args)
        .args(["-e", front, "-t", &timeout, "-r", "1"])
        .output()
        .expect("run vpoller-client");
    String::from_utf8_lossy(&out.stdout)
        .trim_end_matches('\n')
        .to_string()
}

/// `vpoller client` asking for the simulator's first VM, within 10 s.
pub fn vm_get(front: &str) -> Value {
    client(
        front,
        &["-m", "vm.get", "-V", "vcsim", "-n", "DC0_H0_VM0"],
        10_000,
    )
}

/// `vpoller client`: one request, one attempt; the reply as JSON.
pub fn client(front: &str, args: &[&str], timeout_ms: u64) -> Value {
    let timeout = timeout_ms.to_string();
    let mut all = vec!["client", "-e", front, "-r", "1", "-t", &timeout];
    all.extend_from_slice(args);
    let out = vpoller(&all);
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Resident memory of a process, in bytes.
pub fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

impl Service {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }
}

/// The HTTP probe (Python's urllib and prometheus_client in the test venv).
pub fn probe(args: &[&str]) -> Value {
    probe_trusting(args, None)
}

/// The probe, trusting `ca` for HTTPS.
pub fn probe_trusting(args: &[&str], ca: Option<&std::path::Path>) -> Value {
    let python = venv().join("bin/python");
    let script = project_dir().join("tests/pyclient/http_probe.py");
    let mut command = Command::new(python);
    if let Some(ca) = ca {
        command.env("PROBE_CAFILE", ca);
    }
    let out = command
        .arg(script)
        .args(args)
        .output()
        .expect("run the HTTP probe");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("probe JSON")
}

pub fn http_request(
    method: &str,
    url: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> (u64, String) {
    let mut args = vec!["request", method, url, body.unwrap_or("-")];
    if let Some(t) = token {
        args.push(t);
    }
    let reply = probe(&args);
    (
        reply["status"].as_u64().unwrap_or(0),
        reply["body"].as_str().unwrap_or_default().to_string(),
    )
}

/// The value of one sample, by name and labels.
pub fn sample(samples: &Value, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples.as_array()?.iter().find_map(|s| {
        let matches = s["name"] == name
            && labels
                .iter()
                .all(|(k, v)| s["labels"][*k].as_str() == Some(*v));
        matches.then(|| s["value"].as_f64()).flatten()
    })
}
