//! The systemd units in config/systemd: `systemd-analyze verify` accepts
//! each (with ExecStart pointed at the binary just built), and each keeps
//! the hardening an admin expects of a network service.

use std::path::PathBuf;
use std::process::Command;

fn units() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/systemd");
    let mut units: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("config/systemd")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "service"))
        .collect();
    units.sort();
    units
}

#[test]
fn every_role_has_a_hardened_unit() {
    let units = units();
    let names: Vec<String> = units
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    assert_eq!(
        names,
        [
            "vpoller-daemon.service",
            "vpoller-proxy.service",
            "vpoller-worker.service"
        ]
    );
    for unit in &units {
        let text = std::fs::read_to_string(unit).expect("unit");
        for line in [
            "User=vpoller",
            "ProtectSystem=strict",
            "StateDirectory=vpoller",
            "StateDirectoryMode=0700",
            "NoNewPrivileges=yes",
            "ExecReload=/bin/kill -HUP $MAINPID",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{}: no {line}",
                unit.display()
            );
        }
    }
}

#[test]
fn systemd_analyze_verifies_every_unit() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!(
            "systemd-analyze is not installed here; the units are checked by the test above only"
        );
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    for unit in units() {
        let text = std::fs::read_to_string(&unit)
            .expect("unit")
            .replace("/usr/bin/vpoller", env!("CARGO_BIN_EXE_vpoller"));
        let copy = dir.path().join(unit.file_name().expect("name"));
        std::fs::write(&copy, text).expect("copy");
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&copy)
            .output()
            .expect("systemd-analyze");
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && !said.contains(copy.to_str().unwrap_or_default()),
            "{}: {said}",
            unit.display()
        );
    }
}
