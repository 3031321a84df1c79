//! Every method against the replies vPoller 0.7.3 gave for the same
//! requests on the same (populated) simulator: tests/data/golden, copied
//! from the recordings.
//!
//! Compared: success, msg, and the result's shape (types, keys, list
//! lengths) and values. Values that change from run to run (times, perf
//! samples, the datastore's temporary path, session keys) are compared by
//! type only, named field by field below; nothing else is loosened. The
//! cases where vpoller deliberately answers differently are listed in
//! `DELIBERATE`, each with its reason, and checked for vpoller's answer.

mod common;

use common::{Simulator, project_dir};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use vpoller::methods::{Limits, MethodHost, Reply};

/// Fields whose values differ between any two simulator runs, or between
/// the recording's simulator build and ours.
const VOLATILE: &[&str] = &[
    "timestamp",            // perf samples: when they were taken
    "value",                // perf samples: vcsim makes them up
    "time",                 // alarms: when the launcher raised them
    "createTime",           // snapshots: when the launcher took them
    "loginTime",            // sessions
    "lastActiveTime",       // sessions
    "userAgent",            // sessions: pyVmomi's against ours
    "callCount",            // sessions
    "event",                // the newest event: whoever logged in last
    "fullName",             // about: the recording's build added "(govmomi simulator)"
    "freeSpace",            // guest disks: the launchers fill in different numbers
    "macAddress",           // generated per run
    "vm.cpu.usage.percent", // vPoller's formula differs on purpose (see vm.cpu.usage.percent.lua)
    "summary.freeSpace",    // the datastore is a temporary directory of this machine
];

/// Whether a field (or the Zabbix LLD macro made from it, such as
/// `{#VSPHERE.VM.SNAPSHOT.CREATETIME}`) holds a volatile value.
fn is_volatile(field: &str, session_list: bool) -> bool {
    if session_list && field == "key" {
        return true; // session keys are made at login
    }
    match field
        .strip_prefix("{#VSPHERE.")
        .and_then(|m| m.strip_suffix('}'))
    {
        Some(macro_name) => VOLATILE
            .iter()
            .any(|v| macro_name.ends_with(&format!(".{}", v.to_uppercase()))),
        None => VOLATILE.contains(&field),
    }
}

/// Requests where vpoller answers differently on purpose, and how.
const DELIBERATE: &[(&str, &str)] = &[
    (
        "error.vm.get.bad-property",
        "an invalid property path is an error that names it (vcsim hid it in missingSet and vPoller returned just the name)",
    ),
    (
        "raw.vm.get.missing-properties-key",
        "properties is optional for vm.get; a missing key means none, as null does",
    ),
    (
        "vm.snapshot.get.none",
        "a VM without snapshots gets vPoller's own 'No snapshots found for' (vPoller crashed on vcsim's reply)",
    ),
    (
        "vsan.health.get",
        "the missing HostVsanSystem is a clear error, not a Python traceback",
    ),
    (
        "helper.zabbix.vm.get.dataobject",
        "a data object is sent as JSON; vPoller's helper could not encode it",
    ),
    (
        "crash.vm.get.mor-property",
        "a managed object reference is serialised; vPoller's worker died",
    ),
    (
        "crash.host.get.datetime-property",
        "a date is serialised; vPoller's worker died",
    ),
    (
        "vm.process.get",
        "the MethodNotFound fault is worded by vpoller after the same prefix",
    ),
    ("helper.zabbix.vm.process.get", "as vm.process.get"),
];

/// Recordings of the wire, the management sockets, or a simulator that is
/// down or restarted: the daemon's and the session tests' business.
fn is_wire_level(id: &str) -> bool {
    id.starts_with("raw.invalid")
        || id.starts_with("raw.non-dict")
        || id.starts_with("raw.missing-method")
        || id.starts_with("mgmt.")
        || id.starts_with("crash.mgmt.")
        || id.starts_with("session.reconnect")
        || id.starts_with("error.vsphere-down")
}

fn golden_dir() -> PathBuf {
    project_dir().join("tests/data/golden")
}

struct Golden {
    id: String,
    request: Value,
    reply: String,
}

fn goldens() -> Vec<Golden> {
    let index: Vec<Value> = serde_json::from_str(
        &std::fs::read_to_string(golden_dir().join("index.json")).expect("index"),
    )
    .expect("index JSON");
    index
        .iter()
        .filter_map(|entry| {
            let id = entry["id"].as_str()?.to_string();
            let request =
                std::fs::read_to_string(golden_dir().join(format!("{id}.request.json"))).ok()?;
            let reply =
                std::fs::read_to_string(golden_dir().join(entry["reply_file"].as_str()?)).ok()?;
            Some(Golden {
                request: serde_json::from_str(&request).ok()?,
                id,
                reply,
            })
        })
        .collect()
}

/// Replaces the recording's datastore path with ours everywhere.
fn with_datastore(value: &Value, theirs: &str, ours: &str) -> Value {
    match value {
        Value::String(s) => Value::String(s.replace(theirs, ours)),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| with_datastore(v, theirs, ours))
                .collect(),
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), with_datastore(v, theirs, ours)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The value with volatile fields replaced by their type, and lists
/// sorted, so that two runs compare equal when only those differ.
fn canonical(value: &Value, field: Option<&str>, sessions: bool) -> Value {
    if field.is_some_and(|f| is_volatile(f, sessions)) {
        return json!(format!("<{}>", kind(value)));
    }
    match value {
        Value::Object(map) if map.contains_key("dynamicType") => json!("<data object>"),
        Value::Object(map) if map.contains_key("_type") => json!("<data object>"),
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), canonical(&map[k], Some(k), sessions)))
                    .collect(),
            )
        }
        Value::Array(items) => {
            let mut items: Vec<Value> = items
                .iter()
                .map(|v| canonical(v, field, sessions))
                .collect();
            items.sort_by_key(|v| v.to_string());
            Value::Array(items)
        }
        other => other.clone(),
    }
}

/// The value with object keys sorted and nothing else changed.
fn sorted(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), sorted(&map[k])))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "object",
    }
}

fn simulator() -> Simulator {
    Simulator::start(&[])
}

fn host(sim: &Simulator) -> Arc<MethodHost> {
    // The recordings name the agent by its address, as vconnector did.
    common::host_for("127.0.0.1", sim.endpoint(), &[], Limits::default()).0
}

async fn our_datastore_path(sim: &Simulator) -> String {
    let session = sim.session().await;
    let mut path = String::new();
    session
        .discover("Datastore", &["info.url".into()], |o| {
            path = o.props["info.url"].as_str().unwrap_or_default().to_string();
            std::ops::ControlFlow::Break(())
        })
        .await
        .expect("datastore");
    path
}

fn check_envelope(
    id: &str,
    expected: &Value,
    actual: &Reply,
    session_list: bool,
) -> Result<(), String> {
    let actual = actual.to_json();
    if expected["success"] != actual["success"] {
        return Err(format!(
            "success: expected {}, got {actual}",
            expected["success"]
        ));
    }
    if expected["msg"] != actual["msg"] {
        return Err(format!(
            "msg: expected {}, got {}",
            expected["msg"], actual["msg"]
        ));
    }
    let (mut want, mut got) = (
        expected.get("result").cloned(),
        actual.get("result").cloned(),
    );
    if session_list {
        // Our session list holds our sessions, the recording's its own.
        let first = |v: Option<Value>| v.and_then(|r| r.get(0).cloned());
        want = first(want);
        got = first(got);
    }
    let (want, got) = (
        want.map(|v| canonical(&v, None, session_list)),
        got.map(|v| canonical(&v, None, session_list)),
    );
    if want != got {
        return Err(format!(
            "{id}: result differs\n expected {}\n got      {}",
            want.unwrap_or_default(),
            got.unwrap_or_default()
        ));
    }
    Ok(())
}

fn check_text(id: &str, request: &Value, expected: &str, actual: &Reply) -> Result<(), String> {
    let Some(raw) = &actual.raw else {
        return Err(format!(
            "{id}: expected helper output, got {}",
            actual.to_json()
        ));
    };
    if expected.ends_with('\0') != raw.ends_with('\0') {
        return Err(format!("{id}: the trailing NUL differs: {raw:?}"));
    }
    let (want, got) = (expected.trim_end_matches('\0'), raw.trim_end_matches('\0'));
    match (
        serde_json::from_str::<Value>(want),
        serde_json::from_str::<Value>(got),
    ) {
        (Ok(w), Ok(g)) if w.is_object() || w.is_array() => {
            if canonical(&w, None, false) != canonical(&g, None, false) {
                return Err(format!(
                    "{id}: helper JSON differs\n expected {want}\n got      {got}"
                ));
            }
            // Python's separators and key order, byte for byte, where nothing volatile is in it.
            // (unless a volatile field was masked).
            let stable = canonical(&w, None, false) == sorted(&w);
            if stable && want != got {
                return Err(format!(
                    "{id}: helper bytes differ\n expected {want:?}\n got      {got:?}"
                ));
            }
        }
        // An item value of a volatile property: the same kind of value.
        (Ok(w), Ok(g))
            if request["properties"][0]
                .as_str()
                .is_some_and(|p| is_volatile(p, false))
                && kind(&w) == kind(&g) => {}
        _ if want != got => {
            return Err(format!(
                "{id}: helper output differs\n expected {want:?}\n got      {got:?}"
            ));
        }
        _ => {}
    }
    Ok(())
}

/// What vpoller answers instead, for each deliberate difference.
fn check_deliberate(id: &str, actual: &Reply) -> Result<(), String> {
    let result = actual.result.clone().unwrap_or_default();
    let ok = match id {
        "error.vm.get.bad-property" => !actual.success && actual.msg.contains("no.such.property"),
        "raw.vm.get.missing-properties-key" => actual.success && result[0]["name"] == "DC0_H0_VM0",
        "vm.snapshot.get.none" => actual.msg == "No snapshots found for: DC0_H0_VM1",
        "vsan.health.get" => {
            !actual.success
                && actual.msg.starts_with("Cannot get VSAN health state:")
                && actual.msg.contains("ManagedObjectNotFound")
        }
        "helper.zabbix.vm.get.dataobject" => actual.raw.as_deref().is_some_and(|r| {
            serde_json::from_str::<Value>(r).is_ok_and(|v| v["_type"] == "VirtualMachineQuickStats")
        }),
        "crash.vm.get.mor-property" => {
            actual.success && result[0]["runtime.host"]["type"] == "HostSystem"
        }
        "crash.host.get.datetime-property" => {
            actual.success
                && result[0]["runtime.bootTime"]
                    .as_str()
                    .is_some_and(|t| t.contains('T'))
        }
        "vm.process.get" => {
            actual.msg.starts_with("Cannot get guest processes:")
                && actual.msg.contains("MethodNotFound")
        }
        "helper.zabbix.vm.process.get" => actual
            .raw
            .as_deref()
            .is_some_and(|r| r.starts_with("Cannot get guest processes:")),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{id}: unexpected answer {:?} {}",
            actual.raw,
            actual.to_json()
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_recorded_request_gets_vpollers_answer() {
    let sim = simulator();
    let host = host(&sim);
    let ours = our_datastore_path(&sim).await;
    // The launcher copies the newest event into latestEvent every 100 ms;
    // give it our login to copy, as the recording had vPoller's.
    assert!(
        host.handle(json!({"method": "about", "hostname": "127.0.0.1"}))
            .await
            .success
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let theirs = "/tmp/govcsim-DC0-LocalDS_0-3296299824";
    let mut failures = Vec::new();
    let mut checked = 0;
    for golden in goldens() {
        if is_wire_level(&golden.id) {
            continue;
        }
        let request = with_datastore(&golden.request, theirs, &ours);
        let reply = host.handle(request).await;
        checked += 1;
        let outcome = if DELIBERATE.iter().any(|(id, _)| *id == golden.id) {
            check_deliberate(&golden.id, &reply)
        } else {
            let expected_text = golden.reply.replace(theirs, &ours);
            match serde_json::from_str::<Value>(&expected_text) {
                Ok(v)
                    if v.get("success").is_some()
                        && golden.request.get("helper").is_none_or(|h| {
                            !h.as_str()
                                .is_some_and(|h| h.contains("csv") || h.contains("cclient"))
                        })
                        && reply.raw.is_none() =>
                {
                    check_envelope(&golden.id, &v, &reply, golden.id == "session.get")
                }
                _ => check_text(&golden.id, &golden.request, &expected_text, &reply),
            }
        };
        if let Err(e) = outcome {
            failures.push(format!("{}: {e}", golden.id));
        }
    }
    assert!(checked >= 100, "only {checked} recordings were checked");
    assert!(
        failures.is_empty(),
        "{} of {checked} differ:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
