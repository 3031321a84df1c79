//! `vpoller agent`: the registry, its safety, and its use by requests.

mod common;

use common::{Simulator, request};
use serde_json::{Value, json};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use vpoller::agents::{AgentRecord, RegistryAgents, Store};
use vpoller::methods::{Limits, MethodDirs, MethodHost};
use vpoller::vsphere::{Password, TlsMode};

const SECRET: &str = "Vc-Pa55-q7Z";

fn simulator() -> &'static Simulator {
    static SIM: OnceLock<Simulator> = OnceLock::new();
    SIM.get_or_init(|| Simulator::start(&["-username", "admin", "-password", SECRET]))
}

struct Registry {
    dir: tempfile::TempDir,
}

impl Registry {
    fn new() -> Registry {
        let r = Registry {
            dir: tempfile::tempdir().expect("dir"),
        };
        let out = r.run(&["init"], None);
        assert!(out.status.success(), "{}", stderr(&out));
        r
    }
    fn db(&self) -> PathBuf {
        self.dir.path().join("agents.db")
    }
    fn key(&self) -> PathBuf {
        self.dir.path().join("keys/agents.key")
    }
    fn run(&self, args: &[&str], password: Option<&str>) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vpoller"));
        cmd.arg("agent")
            .arg(args[0])
            .args(["-d", self.db().to_str().expect("path")])
            .args(["--key-file", self.key().to_str().expect("path")])
            .args(&args[1..])
            .env_remove("VPOLLER_PASSWORD")
            .env_remove("VPOLLER_DB")
            .env_remove("VPOLLER_KEY_FILE")
            .stdin(Stdio::null());
        if let Some(p) = password {
            cmd.env("VPOLLER_PASSWORD", p);
        }
        cmd.output().expect("run vpoller agent")
    }
    fn add_simulator(&self, host: &str, password: &str) -> Output {
        self.run(
            &["add", "-H", host, "-U", "admin", "--url", &simulator().url],
            Some(password),
        )
    }
    fn agents(&self) -> Vec<Value> {
        let out = self.run(&["get", "--json"], None);
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice::<Vec<Value>>(&out.stdout).expect("JSON list")
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn init_makes_a_private_database_and_key_and_refuses_to_redo_it() {
    let r = Registry::new();
    assert_eq!(mode(&r.db()), 0o600);
    assert_eq!(mode(&r.key()), 0o600);
    let key_before = std::fs::read(r.key()).expect("key");
    let out = r.run(&["init"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("already a vpoller agent database"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read(r.key()).expect("key"),
        key_before,
        "the key is not replaced"
    );
}

#[test]
fn add_get_update_enable_disable_remove() {
    let r = Registry::new();
    let out = r.run(
        &[
            "add",
            "-H",
            "vc01:443",
            "-U",
            "monitor",
            "--thumbprint",
            &"AB".repeat(32),
        ],
        Some(SECRET),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let agents = r.agents();
    assert_eq!(agents.len(), 1);
    assert_eq!(agents[0]["hostname"], "vc01:443");
    assert_eq!(agents[0]["username"], "monitor");
    assert_eq!(agents[0]["enabled"], true);
    assert!(
        agents[0]["tls"]
            .as_str()
            .is_some_and(|t| t.starts_with("thumbprint"))
    );

    let out = r.run(&["get"], None);
    let table = stdout(&out);
    assert!(
        table.contains("HOSTNAME") && table.contains("vc01:443") && table.contains("monitor"),
        "{table}"
    );
    assert!(!table.contains(SECRET));

    let out = r.run(&["add", "-H", "vc01:443", "-U", "x"], Some("other"));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));

    assert!(r.run(&["disable", "-H", "vc01:443"], None).status.success());
    let out = r.run(
        &["update", "-H", "vc01:443", "-U", "reader", "--new-password"],
        Some("n3w"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let agents = r.agents();
    assert_eq!(agents[0]["username"], "reader");
    assert_eq!(
        agents[0]["enabled"], false,
        "update keeps the agent disabled"
    );
    let store = Store::open(&r.db(), Some(&r.key())).expect("open");
    assert_eq!(
        store.password("vc01:443").expect("password").expose(),
        "n3w"
    );
    assert!(
        agents[0]["tls"]
            .as_str()
            .is_some_and(|t| t.starts_with("thumbprint")),
        "TLS kept"
    );

    assert!(r.run(&["enable", "-H", "vc01:443"], None).status.success());
    assert_eq!(r.agents()[0]["enabled"], true);
    for cmd in ["enable", "disable", "remove"] {
        let out = r.run(&[cmd, "-H", "nope"], None);
        assert_eq!(out.status.code(), Some(1));
        assert!(
            stderr(&out).contains("no agent nope"),
            "{cmd}: {}",
            stderr(&out)
        );
    }
    let out = r.run(&["update", "-H", "nope", "-U", "x"], None);
    assert!(stderr(&out).contains("no agent nope"));
    assert!(r.run(&["remove", "-H", "vc01:443"], None).status.success());
    assert!(r.agents().is_empty());
}

#[test]
fn passwords_never_show_and_need_the_key() {
    let r = Registry::new();
    assert!(r.add_simulator("vc-secret", SECRET).status.success());
    // Nothing in the files, main database or WAL, holds the password.
    for suffix in ["", "-wal", "-shm"] {
        let path = PathBuf::from(format!("{}{suffix}", r.db().display()));
        if let Ok(bytes) = std::fs::read(&path) {
            assert!(
                !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
                "{}",
                path.display()
            );
            assert_eq!(mode(&path), 0o600, "{}", path.display());
        }
    }
    // Nor any column, read as SQL.
    let conn = rusqlite::Connection::open(r.db()).expect("open");
    let mut stmt = conn.prepare("SELECT * FROM agents").expect("select");
    let columns = stmt.column_count();
    let mut rows = stmt.query([]).expect("rows");
    while let Some(row) = rows.next().expect("row") {
        for i in 0..columns {
            let v: rusqlite::types::Value = row.get(i).expect("value");
            assert!(!format!("{v:?}").contains(SECRET));
        }
    }
    // Without its key no password can be read back.
    let other = tempfile::tempdir().expect("dir");
    let wrong_key = other.path().join("other.key");
    Store::init(&other.path().join("other.db"), &wrong_key).expect("another registry");
    let err = Store::open(&r.db(), Some(&wrong_key))
        .err()
        .expect("wrong key");
    assert!(err.contains("is not the key of"), "{err}");
    let err = Store::open(&r.db(), Some(&other.path().join("missing.key")))
        .err()
        .expect("no key");
    assert!(
        err.contains("not found") && err.contains("vpoller agent init"),
        "{err}"
    );
    // The CLI says so too, and still lists the agents (that needs no key).
    let aside = r.dir.path().join("aside.key");
    std::fs::rename(r.key(), &aside).expect("move the key away");
    let out = r.run(&["test", "-H", "vc-secret"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not found"), "{}", stderr(&out));
    assert_eq!(r.agents().len(), 1);
    std::fs::rename(&aside, r.key()).expect("put the key back");
}

#[test]
fn p_flag_works_with_a_warning() {
    let r = Registry::new();
    let out = r.run(&["add", "-H", "old", "-U", "u", "-P", "argv-pass"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("process list"), "{}", stderr(&out));
    assert!(!stdout(&out).contains("argv-pass"));
}

#[test]
fn test_logs_in_and_reports_each_failure_clearly() {
    let r = Registry::new();
    assert!(r.add_simulator("good", SECRET).status.success());
    let out = r.run(&["test", "-H", "good"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let about: Value = serde_json::from_slice(&out.stdout).expect("about JSON");
    assert_eq!(about["apiType"], "VirtualCenter");
    assert!(r.agents()[0]["last_login"].is_string());

    assert!(r.add_simulator("bad", "wrong-one").status.success());
    let out = r.run(&["test", "-H", "bad"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("login failed"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("wrong-one"));
    let bad = r
        .agents()
        .into_iter()
        .find(|a| a["hostname"] == "bad")
        .expect("bad");
    assert!(
        bad["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("login failed")),
        "{bad}"
    );

    let down = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = down.local_addr().expect("address");
    drop(down);
    let out = r.run(
        &[
            "add",
            "-H",
            "down",
            "-U",
            "admin",
            "--url",
            &format!("http://{address}/sdk"),
        ],
        Some(SECRET),
    );
    assert!(out.status.success());
    let out = r.run(&["test", "-H", "down", "--timeout", "3"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cannot connect"), "{}", stderr(&out));

    let tls = Simulator::start_tls(&[], true);
    let out = r.run(
        &["add", "-H", "untrusted", "-U", "admin", "--url", &tls.url],
        Some(SECRET),
    );
    assert!(out.status.success());
    let out = r.run(&["test", "-H", "untrusted"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("not trusted") && stderr(&out).contains("--thumbprint"),
        "{}",
        stderr(&out)
    );
    let cert = tls.cert.clone().expect("cert");
    let out = r.run(
        &[
            "update",
            "-H",
            "untrusted",
            "--cacert",
            cert.to_str().expect("path"),
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = r.run(&["test", "-H", "untrusted"], None);
    assert!(
        out.status.success(),
        "trusted after update: {}",
        stderr(&out)
    );
}

#[test]
fn errors_say_what_to_do() {
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("none.db");
    let err = Store::open(&db, None).err().expect("missing");
    assert!(err.contains("vpoller agent init"), "{err}");

    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, vec![0x5a_u8; 8192]).expect("write");
    let err = Store::open(&garbage, None).err().expect("corrupt");
    assert!(
        err.contains("corrupt or not a vpoller agent database"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&garbage).expect("read"),
        vec![0x5a_u8; 8192],
        "left as it was"
    );

    let r = Registry::new();
    let reader = Store::open_read_only(&r.db(), Some(&r.key())).expect("read-only");
    let record = AgentRecord {
        hostname: "x".into(),
        url: None,
        username: "u".into(),
        enabled: true,
        tls: TlsMode::Verify,
        last_login: None,
        last_error: None,
    };
    let err = reader
        .add(&record, &Password::new("p"))
        .expect_err("read-only");
    assert!(err.contains("read-only"), "{err}");

    // A writer holding the database makes others wait, then give up clearly.
    let holder = rusqlite::Connection::open(r.db()).expect("open");
    holder.execute_batch("BEGIN EXCLUSIVE").expect("lock");
    let out = r.run(&["add", "-H", "late", "-U", "u"], Some("p"));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("is locked by another process"),
        "{}",
        stderr(&out)
    );
    holder.execute_batch("ROLLBACK").expect("unlock");
    assert!(
        r.run(&["add", "-H", "late", "-U", "u"], Some("p"))
            .status
            .success()
    );
}

#[test]
fn a_vconnector_database_is_imported() {
    let dir = tempfile::tempdir().expect("dir");
    let old = dir.path().join("vconnector.db");
    let conn = rusqlite::Connection::open(&old).expect("create");
    conn.execute_batch(
        "CREATE TABLE hosts (host TEXT UNIQUE, user TEXT, pwd TEXT, enabled INTEGER);
         INSERT INTO hosts VALUES ('vc-a', 'root', 'pa', 1);
         INSERT INTO hosts VALUES ('vc-b:8443', 'admin', 'pb', 0);",
    )
    .expect("fill");
    drop(conn);
    let r = Registry::new();
    let out = r.run(
        &["import", "--vconnector", old.to_str().expect("path")],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("Imported 2 agents"),
        "{}",
        stdout(&out)
    );
    let agents = r.agents();
    assert_eq!(agents.len(), 2);
    assert_eq!(agents[1]["hostname"], "vc-b:8443");
    assert_eq!(agents[1]["enabled"], false);
    let store = Store::open(&r.db(), Some(&r.key())).expect("open");
    assert_eq!(store.password("vc-a").expect("pa").expose(), "pa");
    let again = r.run(
        &["import", "--vconnector", old.to_str().expect("path")],
        None,
    );
    assert!(
        stdout(&again).contains("Imported 0 agents") && stdout(&again).contains("Skipped 2"),
        "{}",
        stdout(&again)
    );
}

/// The reply once `seen` says the running host has caught up with a change
/// to the registry (it re-reads it every half second).
async fn once_seen(
    host: &Arc<MethodHost>,
    request: Value,
    seen: impl Fn(&vpoller::methods::Reply) -> bool,
) -> vpoller::methods::Reply {
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        let reply = host.handle(request.clone()).await;
        if seen(&reply) || std::time::Instant::now() > deadline {
            return reply;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_host_sees_agents_added_changed_and_disabled() {
    let r = Registry::new();
    let agents = Arc::new(
        RegistryAgents::open(&r.db(), &r.key(), Duration::from_secs(10)).expect("registry"),
    );
    agents.keep_current().expect("refresher");
    let dirs = MethodDirs {
        builtin: Some(common::project_dir().join("methods")),
        admin: vec![],
    };
    let host = MethodHost::new(dirs, Limits::default(), agents.clone());
    let about = |h: &str| {
        let mut req = request("about", json!({}));
        req["hostname"] = json!(h);
        req
    };
    assert_eq!(
        host.handle(about("later")).await.msg,
        "Unknown or missing agent name"
    );

    assert!(r.add_simulator("later", SECRET).status.success());
    let reply = once_seen(&host, about("later"), |r| r.success).await;
    assert!(reply.success, "{reply:?}");

    assert!(r.run(&["disable", "-H", "later"], None).status.success());
    let reply = once_seen(&host, about("later"), |r| !r.success).await;
    assert!(!reply.success);
    assert!(reply.msg.contains("later is disabled"), "{}", reply.msg);

    assert!(r.run(&["enable", "-H", "later"], None).status.success());
    assert!(
        once_seen(&host, about("later"), |r| r.success)
            .await
            .success
    );
    let first = agents.sessions();
    assert_eq!(first.len(), 1);

    // A changed password makes a new session; the old one is logged out.
    assert!(
        r.run(
            &["update", "-H", "later", "--new-password"],
            Some("now-wrong")
        )
        .status
        .success()
    );
    let reply = once_seen(&host, about("later"), |r| !r.success).await;
    assert!(
        !reply.success && reply.msg.contains("login failed"),
        "{reply:?}"
    );
    assert!(
        r.run(&["update", "-H", "later", "--new-password"], Some(SECRET))
            .status
            .success()
    );
    assert!(
        once_seen(&host, about("later"), |r| r.success)
            .await
            .success
    );
    agents.logout_all().await;
}

#[test]
fn call_uses_a_registered_agent() {
    let r = Registry::new();
    assert!(r.add_simulator("sim", SECRET).status.success());
    let out = Command::new(env!("CARGO_BIN_EXE_vpoller"))
        .args([
            "call",
            "vm.get",
            "-V",
            "sim",
            "-n",
            "DC0_H0_VM0",
            "-p",
            "runtime.powerState",
        ])
        .args([
            "-d",
            r.db().to_str().expect("path"),
            "--key-file",
            r.key().to_str().expect("path"),
        ])
        .env_remove("VPOLLER_PASSWORD")
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert!(out.status.success(), "{} {}", stdout(&out), stderr(&out));
    let reply: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(reply["result"][0]["runtime.powerState"], "poweredOn");
}
