//! `vpoller collect` end to end: output, passwords, errors and exit codes.

mod common;

use common::Simulator;
use serde_json::Value;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

fn simulator() -> &'static Simulator {
    static SIM: OnceLock<Simulator> = OnceLock::new();
    SIM.get_or_init(|| Simulator::start(&["-username", "admin", "-password", "Zx-91kq"]))
}

fn vpoller(args: &[&str], password: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vpoller"));
    cmd.args(args)
        .env_remove("VPOLLER_PASSWORD")
        .stdin(Stdio::null());
    if let Some(p) = password {
        cmd.env("VPOLLER_PASSWORD", p);
    }
    cmd.output().expect("run vpoller")
}

fn collect(extra: &[&str], password: Option<&str>) -> Output {
    let mut args = vec!["collect", "--url", simulator().url.as_str(), "-u", "admin"];
    args.extend_from_slice(extra);
    vpoller(&args, password)
}

#[test]
fn prints_one_object_per_vm_with_its_reference_and_properties() {
    let out = collect(
        &[
            "--type",
            "VirtualMachine",
            "--properties",
            "name,runtime.powerState,guest.disk",
        ],
        Some("Zx-91kq"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).expect("a JSON list");
    assert_eq!(rows.len(), 4);
    for row in &rows {
        assert_eq!(row["_ref"]["type"], "VirtualMachine");
        assert!(row["name"].as_str().is_some_and(|n| n.starts_with("DC0_")));
        assert_eq!(row["runtime.powerState"], "poweredOn");
        assert_eq!(row["guest.disk"][0]["_type"], "GuestDiskInfo");
    }
}

#[test]
fn name_selects_one_object_and_an_unknown_name_fails() {
    let out = collect(
        &[
            "--type",
            "HostSystem",
            "-p",
            "name,summary.hardware.numCpuCores",
            "--name",
            "DC0_C0_H1",
        ],
        Some("Zx-91kq"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["name"], "DC0_C0_H1");
    assert!(rows[0]["summary.hardware.numCpuCores"].is_i64());

    let out = collect(
        &["--type", "HostSystem", "-p", "name", "--name", "nope"],
        Some("Zx-91kq"),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no HostSystem named \"nope\""));
}

#[test]
fn the_password_comes_from_a_file_and_never_from_argv() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("pw");
    std::fs::write(&file, "Zx-91kq\n").expect("write");
    let out = collect(
        &[
            "--type",
            "Datacenter",
            "-p",
            "name",
            "--password-file",
            file.to_str().expect("path"),
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = collect(
        &["--type", "Datacenter", "-p", "name", "--password", "x"],
        None,
    );
    assert_eq!(out.status.code(), Some(2), "there is no --password flag");
}

#[test]
fn no_password_and_no_terminal_says_where_to_put_it() {
    let out = collect(&["--type", "Datacenter", "-p", "name"], None);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("VPOLLER_PASSWORD") && stderr.contains("--password-file"),
        "{stderr}"
    );
}

#[test]
fn a_wrong_password_fails_without_showing_it() {
    let out = collect(&["--type", "Datacenter", "-p", "name"], Some("Not-It-55"));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("login failed"), "{stderr}");
    assert!(!stderr.contains("Not-It-55"), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn an_invalid_property_is_named_and_exits_1() {
    let out = collect(
        &["--type", "VirtualMachine", "-p", "name,config.bogusField"],
        Some("Zx-91kq"),
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("config.bogusField"), "{stderr}");
}

#[test]
fn usage_errors_exit_2() {
    let out = vpoller(&["collect", "--url", "x"], None);
    assert_eq!(out.status.code(), Some(2));
}
