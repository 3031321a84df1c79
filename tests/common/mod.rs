//! The simulator test bed: builds the vcsim launcher once and runs it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub mod services;

use vpoller::vsphere::{Client, Credentials, Endpoint, Password, SessionOptions, TlsMode};

pub fn project_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Builds the launcher (idempotent, fast when up to date) once per test binary.
pub fn vcsim_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let dir = project_dir();
            let out = dir.join("target/vcsim/vcsim");
            let status = Command::new("bash")
                .arg(dir.join("tests/vcsim/build.sh"))
                .env("VCSIM_OUT", &out)
                .status()
                .expect("run tests/vcsim/build.sh");
            assert!(status.success(), "building the vcsim launcher failed");
            out
        })
        .clone()
}

/// A running simulator. Stopped (SIGTERM) when dropped; also exits by itself
/// when this process dies, since its stdin closes.
pub struct Simulator {
    child: Child,
    _stdin: ChildStdin,
    pub url: String,
    pub cert: Option<PathBuf>,
    _dir: tempfile::TempDir,
}

impl Simulator {
    pub fn start(args: &[&str]) -> Simulator {
        Self::start_tls(args, false)
    }

    pub fn start_tls(args: &[&str], tls: bool) -> Simulator {
        let dir = tempfile::tempdir().expect("temp dir");
        let cert = dir.path().join("vcsim.pem");
        let mut cmd = Command::new(vcsim_binary());
        cmd.arg("-stdinexit").args(args);
        if tls {
            cmd.arg("-tls").arg("-tls-cert-out").arg(&cert);
        }
        let log = std::fs::File::create(dir.path().join("vcsim.log")).expect("log file");
        let mut child = cmd
            .env("TMPDIR", dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start vcsim");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the SDK URL");
        let url = line.trim().to_string();
        if url.is_empty() {
            let log = std::fs::read_to_string(dir.path().join("vcsim.log")).unwrap_or_default();
            panic!("vcsim did not start: {log}");
        }
        Simulator {
            child,
            _stdin: stdin,
            url,
            cert: tls.then_some(cert),
            _dir: dir,
        }
    }

    /// `127.0.0.1:port`.
    pub fn address(&self) -> String {
        let rest = self
            .url
            .split_once("://")
            .map_or(self.url.as_str(), |x| x.1);
        rest.split('/').next().unwrap_or(rest).to_string()
    }

    pub fn endpoint(&self) -> Endpoint {
        Endpoint {
            url: self.url.clone(),
            tls: match &self.cert {
                Some(c) => TlsMode::CaFile(c.clone()),
                None => TlsMode::Verify,
            },
            deadline: Duration::from_secs(20),
        }
    }

    pub async fn session(&self) -> Client {
        connect(&self.endpoint(), "user", "pass").await
    }

    /// What the simulator wrote to stderr (with `-trace`, every SOAP body).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("vcsim.log")).unwrap_or_default()
    }

    /// How many calls of `method` the simulator has seen (needs `-trace`).
    pub fn calls_of(&self, method: &str) -> usize {
        let request = format!("<{method} ");
        let request_ns = format!(":{method} ");
        self.log()
            .lines()
            .filter(|l| {
                l.starts_with("Request: ") && (l.contains(&request) || l.contains(&request_ns))
            })
            .count()
    }

    /// The process id, to stop (SIGSTOP) or resume it.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the simulator abruptly, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // SIGTERM lets it remove its datastore directories.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn connect(endpoint: &Endpoint, user: &str, password: &str) -> Client {
    try_connect(endpoint, user, password)
        .await
        .unwrap_or_else(|e| panic!("connect to {}: {e}", endpoint.url))
}

pub async fn try_connect(
    endpoint: &Endpoint,
    user: &str,
    password: &str,
) -> Result<Client, vpoller::vsphere::Error> {
    let credentials = Credentials {
        user: user.to_string(),
        password: Password::new(password),
    };
    Client::connect(endpoint, credentials, SessionOptions::default()).await
}

/// The SHA-256 thumbprint of the first certificate in a PEM file.
pub fn pem_thumbprint(path: &Path) -> String {
    vpoller::vsphere::tls::pem_file_thumbprint(path).expect("thumbprint of the PEM file")
}

/// A method host over one simulator, with the project's built-in methods
/// and the given admin directories.
pub fn method_host(
    sim: &Simulator,
    admin: &[PathBuf],
    limits: vpoller::methods::Limits,
) -> std::sync::Arc<vpoller::methods::MethodHost> {
    method_host_with_agent(sim, admin, limits).0
}

/// As [`method_host`], also returning the agent, to look at its session.
pub fn method_host_with_agent(
    sim: &Simulator,
    admin: &[PathBuf],
    limits: vpoller::methods::Limits,
) -> (
    std::sync::Arc<vpoller::methods::MethodHost>,
    std::sync::Arc<vpoller::agents::DirectAgent>,
) {
    host_for("vcsim", sim.endpoint(), admin, limits)
}

/// A method host with the project's built-in methods over one vSphere host
/// (user/pass), known to requests as `agent`.
pub fn host_for(
    agent: &str,
    endpoint: Endpoint,
    admin: &[PathBuf],
    limits: vpoller::methods::Limits,
) -> (
    std::sync::Arc<vpoller::methods::MethodHost>,
    std::sync::Arc<vpoller::agents::DirectAgent>,
) {
    let agent = std::sync::Arc::new(vpoller::agents::DirectAgent::new(
        agent,
        endpoint,
        Credentials {
            user: "user".into(),
            password: Password::new("pass"),
        },
    ));
    let dirs = vpoller::methods::MethodDirs {
        builtin: Some(project_dir().join("methods")),
        admin: admin.to_vec(),
    };
    let host = vpoller::methods::MethodHost::new(dirs, limits, agent.clone());
    (host, agent)
}

/// A request as vpoller-client sends it, for the `vcsim` agent.
pub fn request(method: &str, fields: serde_json::Value) -> serde_json::Value {
    let mut req = serde_json::json!({
        "method": method, "hostname": "vcsim", "name": null, "username": null,
        "password": null, "key": null, "properties": null, "counter-name": null,
        "instance": null, "max-sample": null, "perf-interval": null, "helper": null,
    });
    if let (Some(r), Some(f)) = (req.as_object_mut(), fields.as_object()) {
        for (k, v) in f {
            r.insert(k.clone(), v.clone());
        }
    }
    req
}

/// Sits in front of a simulator and answers the given vim25 methods with
/// recorded replies: for the two methods vcsim does not implement
/// (ListProcessesInGuest, QueryHostStatus). Everything else goes to the
/// simulator unchanged.
pub async fn replaying_proxy(
    upstream: &str,
    recorded: Vec<(&'static str, &'static str)>,
) -> String {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let upstream = upstream.to_string();
    // As the transport does: reqwest is built without a default provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let (upstream, client, recorded) = (upstream.clone(), client.clone(), recorded.clone());
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut reader = BufReader::new(read);
                loop {
                    let mut request_line = String::new();
                    if reader.read_line(&mut request_line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let mut length = 0;
                    let mut cookie = None;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let line = line.trim_end().to_string();
                        if line.is_empty() {
                            break;
                        }
                        let lower = line.to_ascii_lowercase();
                        if let Some(v) = lower.strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                        if lower.starts_with("cookie:") {
                            cookie = Some(line["cookie:".len()..].trim().to_string());
                        }
                    }
                    let mut body = vec![0u8; length];
                    if reader.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    let text = String::from_utf8_lossy(&body).to_string();
                    let canned = recorded.iter().find(|(m, _)| {
                        text.contains(&format!("<{m} ")) || text.contains(&format!("<{m}>"))
                    });
                    let (status, set_cookie, reply) = match canned {
                        Some((_, xml)) => (200, None, xml.as_bytes().to_vec()),
                        None => {
                            let path = request_line.split_whitespace().nth(1).unwrap_or("/sdk");
                            let base = upstream.trim_end_matches("/sdk");
                            let url = format!("{base}{path}");
                            let mut req = if request_line.starts_with("GET") {
                                client.get(&url)
                            } else {
                                client.post(&url).body(body)
                            };
                            req = req.header("Content-Type", "text/xml; charset=utf-8");
                            if let Some(c) = &cookie {
                                req = req.header("Cookie", c);
                            }
                            let Ok(resp) = req.send().await else { return };
                            let status = resp.status().as_u16();
                            let set_cookie = resp
                                .headers()
                                .get("set-cookie")
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_string);
                            let bytes = resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
                            (status, set_cookie, bytes)
                        }
                    };
                    let mut head = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: text/xml; charset=utf-8\r\nContent-Length: {}\r\n",
                        reply.len()
                    );
                    if let Some(c) = set_cookie {
                        head.push_str(&format!("Set-Cookie: {c}\r\n"));
                    }
                    head.push_str("\r\n");
                    if write.write_all(head.as_bytes()).await.is_err()
                        || write.write_all(&reply).await.is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    format!("http://{address}/sdk")
}

/// Polls `check` until it holds, failing after `within`; returns how long
/// it took.
pub fn eventually(
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
