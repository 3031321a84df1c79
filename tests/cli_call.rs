//! `vpoller call` and `vpoller methods` end to end.

mod common;

use common::Simulator;
use serde_json::Value;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

fn simulator() -> &'static Simulator {
    static SIM: OnceLock<Simulator> = OnceLock::new();
    SIM.get_or_init(|| Simulator::start(&[]))
}

fn vpoller(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vpoller"))
        .args(args)
        .env("VPOLLER_PASSWORD", "pass")
        .env_remove("VPOLLER_BUILTIN_METHODS")
        .stdin(Stdio::null())
        .output()
        .expect("run vpoller")
}

fn call(extra: &[&str]) -> (Option<i32>, Value) {
    let mut args = vec!["call"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--url", simulator().url.as_str(), "-u", "user"]);
    let out = vpoller(&args);
    let reply = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), reply)
}

#[test]
fn a_method_call_prints_the_reply_envelope() {
    let (code, reply) = call(&[
        "vm.get",
        "-n",
        "DC0_H0_VM0",
        "-p",
        "runtime.powerState,runtime.host",
    ]);
    assert_eq!(code, Some(0));
    assert_eq!(reply["success"], 0);
    assert_eq!(reply["msg"], "Successfully retrieved object properties");
    let row = &reply["result"][0];
    assert_eq!(row["name"], "DC0_H0_VM0");
    assert_eq!(row["runtime.powerState"], "poweredOn");
    assert_eq!(
        row["runtime.host"]["type"], "HostSystem",
        "references are serialised, not a crash"
    );
}

#[test]
fn a_failed_call_exits_1_with_the_envelope() {
    let (code, reply) = call(&["vm.get", "-n", "no-such-vm", "-p", "name"]);
    assert_eq!(code, Some(1));
    assert_eq!(
        reply,
        serde_json::json!({"success": 1, "msg": "Cannot find object no-such-vm"})
    );
    let (code, reply) = call(&["no.such.method"]);
    assert_eq!(code, Some(1));
    assert_eq!(reply["msg"], "Unknown or missing task/method name");
}

#[test]
fn an_admin_directory_is_used_and_checked() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(
        dir.path().join("hello.lua"),
        "return { api = 1, name = 'hello', description = 'says hello', run = function(ctx, req) return { ctx.agent } end }",
    )
    .expect("write");
    let admin = dir.path().to_str().expect("path");
    let (code, reply) = call(&["hello", "--methods-dir", admin]);
    assert_eq!(code, Some(0), "{reply}");
    assert_eq!(reply["result"][0], simulator().url.as_str());

    let out = vpoller(&["methods", "list", "--methods-dir", admin]);
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.contains("hello") && listing.contains("says hello"),
        "{listing}"
    );
    assert!(
        listing.contains("vm.get"),
        "built-ins are listed too: {listing}"
    );

    let broken = dir.path().join("broken.lua");
    std::fs::write(
        &broken,
        "return {\n api = 1,\n name = 'broken',\n run = function() return 1 +  end }",
    )
    .expect("write");
    let out = vpoller(&["methods", "check", broken.to_str().expect("path")]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("{}:4:", broken.display())), "{text}");

    let out = vpoller(&["methods", "check", "--methods-dir", admin]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the directory holds a broken script"
    );
    let out = vpoller(&["methods", "check"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn usage_errors_exit_2() {
    let out = vpoller(&["call", "vm.get"]);
    assert_eq!(out.status.code(), Some(2));
}

/// The binary, copied where no source tree or share/ directory is.
fn copied_binary() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("dir");
    let bin = dir.path().join("vpoller");
    std::fs::copy(env!("CARGO_BIN_EXE_vpoller"), &bin).expect("copy the binary");
    (dir, bin)
}

/// Runs the copied binary in `/`, with a temporary directory of its own
/// beside it (so that what it writes out there, and only that, is seen).
fn run_in_root(bin: &std::path::Path, args: &[&str]) -> Output {
    let tmp = bin.with_file_name("tmp");
    std::fs::create_dir_all(&tmp).expect("a temporary directory");
    Command::new(bin)
        .args(args)
        .current_dir("/")
        .env("TMPDIR", &tmp)
        .env("VPOLLER_PASSWORD", "pass")
        .stdin(Stdio::null())
        .output()
        .expect("run the copied binary")
}

#[test]
fn a_copied_binary_brings_its_methods() {
    let (dir, bin) = copied_binary();
    let list = run_in_root(&bin, &["methods", "list"]);
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    let text = String::from_utf8_lossy(&list.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 53, "{text}");
    assert!(lines.iter().all(|l| l.contains("embedded:")), "{text}");

    let out = dir.path().join("exported");
    let export = run_in_root(&bin, &["methods", "export", out.to_str().expect("path")]);
    assert!(export.status.success());
    assert!(out.join("vm.get.lua").is_file() && out.join("lib/vpoller/inventory.lua").is_file());

    let call = run_in_root(
        &bin,
        &[
            "call",
            "vm.get",
            "-n",
            "DC0_H0_VM0",
            "-p",
            "runtime.powerState",
            "--url",
            &simulator().url,
            "-u",
            "user",
        ],
    );
    let reply: Value = serde_json::from_slice(&call.stdout).expect("reply JSON");
    assert_eq!(
        reply["result"][0]["runtime.powerState"], "poweredOn",
        "{reply}"
    );
    let leftovers = std::fs::read_dir(dir.path().join("tmp"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with("vpoller-methods-")
                })
                .count()
        })
        .unwrap_or(0);
    assert_eq!(leftovers, 0, "the written-out copy is removed at exit");
}

#[test]
fn a_service_without_methods_stops_at_start_up() {
    let dir = tempfile::tempdir().expect("dir");
    let (db, key) = (dir.path().join("a.db"), dir.path().join("a.key"));
    let (db, key) = (db.to_str().expect("path"), key.to_str().expect("path"));
    assert!(
        vpoller(&["agent", "init", "-d", db, "--key-file", key])
            .status
            .success()
    );
    let empty = dir.path().join("no-methods");
    std::fs::create_dir(&empty).expect("dir");
    let config = dir.path().join("vpoller.conf");
    std::fs::write(
        &config,
        format!("[worker]\nbuiltin-methods = {}\n", empty.display()),
    )
    .expect("config");
    let out = vpoller(&[
        "daemon",
        "-f",
        config.to_str().expect("path"),
        "-d",
        db,
        "--key-file",
        key,
        "--frontend",
        "tcp://127.0.0.1:0",
        "--mgmt",
        "tcp://127.0.0.1:0",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no methods loaded"), "{err}");
}

#[test]
fn completions_and_man_pages_come_from_the_command_line() {
    let out = vpoller(&["generate", "completions", "bash"]);
    assert!(out.status.success());
    let script = String::from_utf8_lossy(&out.stdout);
    assert!(
        script.contains("_vpoller()") && script.contains("agent"),
        "{script}"
    );
    let dir = tempfile::tempdir().expect("dir");
    let out = vpoller(&["generate", "man", dir.path().to_str().expect("path")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page = std::fs::read_to_string(dir.path().join("vpoller-agent-add.1"))
        .expect("the agent add page");
    assert!(page.contains("Register a vSphere host"), "{page}");
    assert!(dir.path().join("vpoller.1").is_file());
}
