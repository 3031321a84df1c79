//! The HTTP front end and the Prometheus endpoint of the real daemon,
//! driven by a real HTTP client (Python's urllib in the test venv) and
//! read with the Prometheus project's own text parser (prometheus_client).

mod common;

use common::Simulator;
use common::services::*;
use serde_json::{Value, json};
use std::process::Command;
use std::time::{Duration, Instant};

const TOKEN: &str = "s3cret-token-for-tests";

/// One mirrored vm.get, as `vpoller client` arguments.
const POWER_STATE: [&str; 8] = [
    "-m",
    "vm.get",
    "-V",
    "vcsim",
    "-n",
    "DC0_H0_VM0",
    "-p",
    "runtime.powerState",
];

struct Web {
    _daemon: Service,
    front: String,
    http: String,
    metrics: String,
    _dir: tempfile::TempDir,
}

fn daemon_with_http(reg: &Registry) -> Web {
    let dir = tempfile::tempdir().expect("dir");
    let token = dir.path().join("http.token");
    std::fs::write(&token, format!("{TOKEN}\n")).expect("token file");
    let (http, metrics) = (free_port(), free_port());
    let conf = dir.path().join("vpoller.conf");
    std::fs::write(
        &conf,
        format!(
            "[http]\nlisten = 127.0.0.1:{http}\ntoken-file = {}\n[metrics]\nlisten = 127.0.0.1:{metrics}\n[mirror]\npin = VirtualMachine:runtime.powerState\n",
            token.display()
        ),
    )
    .expect("config");
    let conf = conf.display().to_string();
    // One admin method that always raises, for the error counters.
    let admin = dir.path().join("methods.d");
    std::fs::create_dir_all(&admin).expect("methods dir");
    std::fs::write(
        admin.join("broken.raise.lua"),
        r#"return { api = 1, name = "broken.raise", run = function(ctx, req) error("boom") end }"#,
    )
    .expect("method");
    let admin = admin.display().to_string();
    let (daemon, front, _mgmt) = daemon_with(reg, &["-f", &conf, "--methods-dir", &admin]);
    Web {
        _daemon: daemon,
        front,
        http: format!("http://127.0.0.1:{http}"),
        metrics: format!("http://127.0.0.1:{metrics}/metrics"),
        _dir: dir,
    }
}

#[test]
fn http_answers_as_zeromq_does_with_the_errors_and_the_token() {
    let sim = Simulator::start(&[]);
    let reg = Registry::new(&sim.url);
    let web = daemon_with_http(&reg);
    let token = Some(TOKEN);

    let (status, body) = http_request("GET", &format!("{}/healthz", web.http), None, None);
    assert_eq!((status, body.trim()), (200, "ok"));
    let (status, _) = http_request("GET", &format!("{}/v1/methods", web.http), None, None);
    assert_eq!(status, 401, "a token is required");
    let (status, _) = http_request(
        "GET",
        &format!("{}/v1/methods", web.http),
        None,
        Some("wrong"),
    );
    assert_eq!(status, 401, "and it must be the right one");

    // The same request through both doors gives the same bytes.
    let zmq_args = POWER_STATE;
    let by_zmq = {
        let mut all = vec!["client", "-e", &web.front, "-r", "1", "-t", "10000"];
        all.extend_from_slice(&zmq_args);
        String::from_utf8_lossy(&vpoller(&all).stdout)
            .trim()
            .to_string()
    };
    assert!(by_zmq.contains("poweredOn"), "{by_zmq}");
    let posted = json!({"method": "vm.get", "hostname": "vcsim", "name": "DC0_H0_VM0", "properties": ["runtime.powerState"]});
    let (status, body) = http_request(
        "POST",
        &format!("{}/v1/call", web.http),
        Some(&posted.to_string()),
        token,
    );
    assert_eq!((status, body.as_str()), (200, by_zmq.as_str()));
    let url = format!(
        "{}/v1/call/vm.get?hostname=vcsim&name=DC0_H0_VM0&properties=runtime.powerState",
        web.http
    );
    let (status, body) = http_request("GET", &url, None, token);
    assert_eq!((status, body.as_str()), (200, by_zmq.as_str()));

    // LLD through the zabbix helper, as Zabbix's HTTP agent would ask.
    let lld = format!(
        "{}/v1/call/vm.discover?hostname=vcsim&helper=vpoller.helpers.zabbix",
        web.http
    );
    let (status, body) = http_request("GET", &lld, None, token);
    assert_eq!(status, 200);
    let rows: Value = serde_json::from_str(&body).expect("LLD JSON");
    assert!(
        rows["data"]
            .as_array()
            .is_some_and(|d| d.iter().any(|r| r["{#VSPHERE.VM.NAME}"] == "DC0_H0_VM0")),
        "{body}"
    );

    // Bad input: 400 with vPoller's envelope; unknown paths 404; big 413.
    let (status, body) = http_request(
        "POST",
        &format!("{}/v1/call", web.http),
        Some("not json"),
        token,
    );
    assert_eq!(status, 400);
    assert_eq!(body, r#"{"success":1,"msg":"Invalid message received"}"#);
    let (status, body) = http_request(
        "GET",
        &format!("{}/v1/call/no.such.method?hostname=vcsim", web.http),
        None,
        token,
    );
    assert_eq!(status, 400);
    assert!(
        body.contains("Unknown or missing task/method name"),
        "{body}"
    );
    let (status, body) = http_request(
        "GET",
        &format!("{}/v1/call/vm.get?hostname=vcsim&nmae=x", web.http),
        None,
        token,
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("nmae"), "the parameter is named: {body}");
    let (status, body) = http_request("GET", &format!("{}/nothing/here", web.http), None, token);
    assert_eq!(status, 404);
    assert!(body.contains(r#""success":1"#), "{body}");
    let (status, _) = http_request(
        "POST",
        &format!("{}/v1/call", web.http),
        Some("@big"),
        token,
    );
    assert_eq!(status, 413);
    // A vSphere failure is a reply, not an HTTP error.
    let (status, body) = http_request(
        "GET",
        &format!("{}/v1/call/vm.get?hostname=vcsim&name=no-such-vm", web.http),
        None,
        token,
    );
    assert_eq!(status, 200);
    assert!(body.contains("Cannot find object no-such-vm"), "{body}");

    let (status, body) = http_request("GET", &format!("{}/v1/methods", web.http), None, token);
    assert_eq!(status, 200);
    let methods: Value = serde_json::from_str(&body).expect("methods JSON");
    let vm_get = methods
        .as_array()
        .and_then(|m| m.iter().find(|m| m["name"] == "vm.get"))
        .expect("vm.get is listed");
    assert_eq!(vm_get["required"], json!(["name"]));
    assert_eq!(vm_get["repeatable"], true);
    let (status, body) = http_request("GET", &format!("{}/readyz", web.http), None, token);
    assert_eq!(status, 200);
    let ready: Value = serde_json::from_str(&body).expect("readyz JSON");
    assert_eq!(ready["agents"][0]["hostname"], "vcsim", "{ready}");
}

#[test]
fn metrics_parse_and_move_with_the_requests() {
    let sim = Simulator::start(&[]);
    let reg = Registry::new(&sim.url);
    let web = daemon_with_http(&reg);
    let ask = || client(&web.front, &POWER_STATE, 10_000);
    assert_eq!(ask()["success"], 0);
    // The mirror goes live, and the metrics say so.
    let deadline = Instant::now() + Duration::from_secs(20);
    let samples = loop {
        let samples = probe(&["metrics", &web.metrics, TOKEN]);
        if sample(&samples, "vpoller_mirror_live", &[("agent", "vcsim")]) == Some(1.0) {
            break samples;
        }
        assert!(
            Instant::now() < deadline,
            "the mirror never showed as live: {samples}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let requests = |s: &Value| {
        sample(
            s,
            "vpoller_requests_total",
            &[("method", "vm.get"), ("outcome", "success")],
        )
        .unwrap_or(0.0)
    };
    let before = requests(&samples);
    assert!(before >= 1.0, "{samples}");
    assert!(sample(&samples, "vpoller_methods_loaded", &[]).unwrap_or(0.0) >= 53.0);
    assert_eq!(sample(&samples, "vpoller_sessions", &[]), Some(1.0));
    assert!(
        sample(&samples, "vpoller_soap_calls_total", &[("agent", "vcsim")]).unwrap_or(0.0) > 0.0
    );
    assert!(sample(&samples, "vpoller_build_info", &[]).is_some());
    let calls = sample(
        &samples,
        "vpoller_request_soap_calls_total",
        &[("agent", "vcsim")],
    );
    for _ in 0..3 {
        assert_eq!(ask()["success"], 0);
    }
    let refused = client(&web.front, &["-m", "no.such.method", "-V", "vcsim"], 10_000);
    assert_eq!(refused["success"], 1);
    let after = probe(&["metrics", &web.metrics, TOKEN]);
    assert_eq!(requests(&after), before + 3.0, "{after}");
    assert_eq!(
        sample(
            &after,
            "vpoller_requests_total",
            &[("method", "unknown"), ("outcome", "failure")]
        ),
        Some(1.0),
        "a method that does not exist is counted as unknown"
    );
    assert_eq!(
        sample(
            &after,
            "vpoller_request_soap_calls_total",
            &[("agent", "vcsim")]
        ),
        calls,
        "served from the mirror: no SOAP call"
    );
    let count = sample(
        &after,
        "vpoller_request_duration_seconds_count",
        &[("method", "vm.get")],
    );
    assert_eq!(count, Some(before + 3.0));
}

#[test]
fn https_with_a_certificate_and_no_plaintext_off_loopback() {
    let sim = Simulator::start(&[]);
    let reg = Registry::new(&sim.url);
    let dir = tempfile::tempdir().expect("dir");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .args([
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .output()
        .expect("run openssl");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let port = free_port();
    let conf = dir.path().join("vpoller.conf");
    std::fs::write(
        &conf,
        format!(
            "[http]\nlisten = 127.0.0.1:{port}\ncert-file = {}\nkey-file = {}\n",
            cert.display(),
            key.display()
        ),
    )
    .expect("config");
    let conf_arg = conf.display().to_string();
    let (_daemon, front, _mgmt) = daemon_with(&reg, &["-f", &conf_arg]);
    let url = format!("https://127.0.0.1:{port}/v1/call/vm.get?hostname=vcsim&name=DC0_H0_VM0");
    let mut reply = Value::Null;
    for _ in 0..50 {
        reply = probe_trusting(&["request", "GET", &url, "-"], Some(&cert));
        if reply["status"] == 200 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let by_zmq = vm_get(&front);
    let over_https: Value =
        serde_json::from_str(reply["body"].as_str().unwrap_or("")).expect("reply JSON");
    assert_eq!(over_https, by_zmq);

    // Plain HTTP on an address others can reach is refused at start-up.
    std::fs::write(&conf, format!("[http]\nlisten = 0.0.0.0:{}\n", free_port())).expect("config");
    let (db, key_file) = (reg.db(), reg.key());
    let refused = vpoller(&[
        "daemon",
        "-f",
        &conf_arg,
        "-d",
        &db,
        "--key-file",
        &key_file,
        "--frontend",
        &endpoint(free_port()),
        "--mgmt",
        &endpoint(free_port()),
    ]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("needs TLS"), "{stderr}");
}

#[test]
fn the_proxy_and_a_worker_expose_their_own_metrics() {
    let sim = Simulator::start(&[]);
    let reg = Registry::new(&sim.url);
    let dir = tempfile::tempdir().expect("dir");
    let (proxy_metrics, worker_metrics) = (free_port(), free_port());
    let conf = |port: u16, name: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("[metrics]\nlisten = 127.0.0.1:{port}\n")).expect("config");
        path.display().to_string()
    };
    let (proxy_conf, worker_conf) = (
        conf(proxy_metrics, "proxy.conf"),
        conf(worker_metrics, "worker.conf"),
    );
    let (front, back, pmgmt, wmgmt) = (
        endpoint(free_port()),
        endpoint(free_port()),
        endpoint(free_port()),
        endpoint(free_port()),
    );
    let _proxy = Service::start(&[
        "proxy",
        "-f",
        &proxy_conf,
        "--frontend",
        &front,
        "--backend",
        &back,
        "--mgmt",
        &pmgmt,
    ]);
    wait_for_status(&pmgmt, "proxy");
    let _worker = worker(&reg, &back, &wmgmt, &["-f", &worker_conf]);
    for _ in 0..4 {
        assert_eq!(client(&front, &POWER_STATE, 10_000)["success"], 0);
    }
    let proxy_url = format!("http://127.0.0.1:{proxy_metrics}/metrics");
    let from_proxy = probe(&["metrics", &proxy_url]);
    assert_eq!(
        sample(&from_proxy, "vpoller_proxy_requests_answered_total", &[]),
        Some(4.0),
        "{from_proxy}"
    );
    assert_eq!(sample(&from_proxy, "vpoller_proxy_workers", &[]), Some(1.0));
    let worker_url = format!("http://127.0.0.1:{worker_metrics}/metrics");
    let from_worker = probe(&["metrics", &worker_url]);
    assert_eq!(
        sample(
            &from_worker,
            "vpoller_requests_total",
            &[("method", "vm.get"), ("outcome", "success")]
        ),
        Some(4.0),
        "{from_worker}"
    );
    // A worker runs methods, but its HTTP door is only for its metrics.
    let (status, _) = http_request(
        "GET",
        &format!("http://127.0.0.1:{worker_metrics}/v1/methods"),
        None,
        None,
    );
    assert_eq!(status, 404);
}
