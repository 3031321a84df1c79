//! TLS trust modes against the simulator's freshly generated certificate.

mod common;

use common::{Simulator, pem_thumbprint, try_connect};
use std::process::Command;
use std::sync::OnceLock;
use vpoller::vsphere::{Error, TlsMode};

fn simulator() -> &'static Simulator {
    static SIM: OnceLock<Simulator> = OnceLock::new();
    SIM.get_or_init(|| Simulator::start_tls(&[], true))
}

fn with_mode(mode: TlsMode) -> vpoller::vsphere::Endpoint {
    let mut endpoint = simulator().endpoint();
    endpoint.tls = mode;
    endpoint
}

fn cert() -> std::path::PathBuf {
    simulator()
        .cert
        .clone()
        .expect("TLS simulator writes its certificate")
}

#[tokio::test]
async fn the_written_certificate_verifies_as_a_ca_file() {
    let session = try_connect(&with_mode(TlsMode::CaFile(cert())), "user", "pass")
        .await
        .expect("trusted by its CA file");
    assert_eq!(session.about()["apiType"], "VirtualCenter");
}

#[tokio::test]
async fn an_unknown_certificate_is_refused_with_advice_and_its_thumbprint() {
    let err = try_connect(&with_mode(TlsMode::Verify), "user", "pass")
        .await
        .err()
        .expect("not in the system store");
    assert!(matches!(err, Error::Tls { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("not trusted"), "{text}");
    assert!(
        text.contains("--cacert") && text.contains("--thumbprint"),
        "{text}"
    );
    assert!(
        text.contains(&pem_thumbprint(&cert())),
        "shows what to pin: {text}"
    );
}

#[tokio::test]
async fn a_pinned_thumbprint_is_trusted_and_a_wrong_one_is_not() {
    let right = pem_thumbprint(&cert());
    let session = try_connect(
        &with_mode(TlsMode::Thumbprint(right.clone())),
        "user",
        "pass",
    )
    .await;
    assert!(session.is_ok(), "{:?}", session.err());

    let lowercase_bare = right.replace(':', "").to_lowercase();
    assert!(
        try_connect(
            &with_mode(TlsMode::Thumbprint(lowercase_bare)),
            "user",
            "pass"
        )
        .await
        .is_ok()
    );

    let wrong = "00:".repeat(31) + "00";
    let err = try_connect(&with_mode(TlsMode::Thumbprint(wrong)), "user", "pass")
        .await
        .err()
        .expect("wrong pin");
    assert!(
        err.to_string().contains("thumbprint does not match"),
        "{err}"
    );
}

#[test]
fn insecure_mode_works_and_warns() {
    let output = Command::new(env!("CARGO_BIN_EXE_vpoller"))
        .args([
            "collect",
            "--url",
            &simulator().url,
            "-u",
            "user",
            "--insecure",
        ])
        .args(["--type", "HostSystem", "-p", "name"])
        .env("VPOLLER_PASSWORD", "pass")
        .output()
        .expect("run vpoller");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("verification is off"), "{stderr}");
    assert_eq!(
        stderr.matches("verification is off").count(),
        1,
        "warned once: {stderr}"
    );
    let rows: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(rows.as_array().map(Vec::len), Some(4));
}
