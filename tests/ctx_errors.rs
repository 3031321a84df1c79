//! Typed failures up to Lua: a script that catches a failed `ctx` call with
//! `pcall` gets a value with a `kind` to branch on, the agent, the fault's
//! name, and a message that reads as before. Each kind is produced for real
//! where the simulator can, and from recorded SOAP where it cannot.

mod common;

use common::{Simulator, host_for, replaying_proxy, request};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;
use vpoller::methods::Limits;
use vpoller::vsphere::{Endpoint, TlsMode};

const PROBE: &str = r#"
return {
  api = 1,
  name = "probe.error",
  description = "Fails one ctx call on purpose and reports what it caught",
  run = function(ctx, req)
    local what = req.name
    -- No tail calls: a script's line is named from its own frame.
    local ok, e = pcall(function()
      local r
      if what == "not_found" then
        r = ctx:get({ type = "VirtualMachine", value = "vm-does-not-exist" }, { "name" })
      elseif what == "invalid_property" then
        local vm = ctx:find("VirtualMachine", "name", "DC0_H0_VM0")
        r = ctx:get(vm, { "no.such.property" })
      elseif what == "invalid_argument" then
        r = ctx:get(42, { "name" })
      elseif what == "fault" then
        local root = ctx:content().rootFolder
        ctx:call(root, "CreateFolder", { name = "twice" })
        r = ctx:call(root, "CreateFolder", { name = "twice" })
      else
        r = ctx:about()
      end
      return r
    end)
    if ok then return { { ok = true } } end
    return { {
      ok = false,
      kind = e.kind,
      fault = e.fault or vpoller.null,
      agent = e.agent,
      message = tostring(e),
      joined = "caught: " .. e,
    } }
  end,
}
"#;

fn probe_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("probe.lua"), PROBE).expect("script");
    dir
}

async fn caught(endpoint: Endpoint, what: &str) -> Value {
    let dir = probe_dir();
    let (host, _) = host_for(
        "vcsim",
        endpoint,
        &[dir.path().to_path_buf()],
        Limits::default(),
    );
    let reply = host
        .handle(request("probe.error", json!({"name": what})))
        .await
        .to_json();
    assert_eq!(reply["success"], 0, "{reply}");
    reply["result"][0].clone()
}

fn script_line(message: &str) -> bool {
    message.contains("probe.lua:")
}

#[tokio::test]
async fn each_kind_a_script_can_branch_on() {
    let sim = Simulator::start(&[]);
    for (what, kind, fault) in [
        ("not_found", "not_found", json!("ManagedObjectNotFound")),
        (
            "invalid_property",
            "invalid_property",
            json!("InvalidProperty"),
        ),
        ("invalid_argument", "invalid_argument", json!(null)),
        ("fault", "fault", json!("DuplicateName")),
    ] {
        let e = caught(sim.endpoint(), what).await;
        assert_eq!(e["ok"], false, "{what}: {e}");
        assert_eq!(e["kind"], kind, "{what}: {e}");
        assert_eq!(e["fault"], fault, "{what}: {e}");
        assert_eq!(e["agent"], "vcsim", "{what}: {e}");
        let message = e["message"].as_str().unwrap_or_default();
        assert!(
            script_line(message),
            "{what}: the script's line is named: {message}"
        );
        assert_eq!(e["joined"], format!("caught: {message}"), "{what}");
    }
}

#[tokio::test]
async fn a_refused_login_and_an_unreachable_or_hung_vcenter() {
    let sim = Simulator::start(&["-username", "user", "-password", "other"]);
    let e = caught(sim.endpoint(), "about").await;
    assert_eq!(e["kind"], "not_authenticated", "{e}");
    assert_eq!(e["fault"], "InvalidLogin", "{e}");
    assert!(
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("login failed")),
        "{e}"
    );

    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = closed.local_addr().expect("address");
    drop(closed);
    let nowhere = Endpoint {
        url: format!("http://{address}/sdk"),
        tls: TlsMode::Insecure,
        deadline: Duration::from_secs(2),
    };
    let e = caught(nowhere, "about").await;
    assert_eq!(e["kind"], "unreachable", "{e}");

    let hung = Simulator::start(&[]);
    let mut endpoint = hung.endpoint();
    endpoint.deadline = Duration::from_secs(1);
    let status = std::process::Command::new("kill")
        .args(["-STOP", &hung.pid().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let e = caught(endpoint, "about").await;
    let _ = std::process::Command::new("kill")
        .args(["-CONT", &hung.pid().to_string()])
        .status();
    assert_eq!(e["kind"], "timeout", "{e}");
}

#[tokio::test]
async fn a_property_the_user_may_not_read_reaches_the_script() {
    // vcsim grants everything; a real vCenter answers a user without
    // Sessions.TerminateSession with sessionList in the missingSet.
    let sim = Simulator::start(&[]);
    let denied = include_str!("data/soap/rpex-no-permission.xml");
    let proxy = replaying_proxy(&sim.url, vec![("RetrievePropertiesEx", denied)]).await;
    let endpoint = Endpoint {
        url: proxy,
        tls: TlsMode::Insecure,
        deadline: Duration::from_secs(10),
    };
    let (host, _) = host_for("vcsim", endpoint, &[PathBuf::new()][..0], Limits::default());
    let reply = host
        .handle(request("session.get", json!({})))
        .await
        .to_json();
    assert_eq!(reply["success"], 1, "{reply}");
    assert_eq!(reply["msg"], "No permissions to view established sessions");
}
