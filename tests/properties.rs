//! Property tests on everything that parses outside input: the vim25 XML
//! decoder, request frames through the dispatcher, the INI configuration,
//! and JSON to Lua and back. None may panic, and each answer is of the
//! form its caller relies on.

use proptest::prelude::*;
use serde_json::{Value, json};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use vpoller::methods::{Limits, MethodDirs, MethodHost};
use vpoller::server::dispatch::Dispatcher;
use vpoller::vsphere::collector::parse_recorded_page;

fn recorded(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/soap")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn decode(body: &[u8]) -> Result<usize, String> {
    let mut sink = |_o| ControlFlow::Continue(());
    parse_recorded_page(body, &mut sink).map_err(|e| e.to_string())
}

const RECORDINGS: &[&str] = &[
    "rpex-scalars.xml",
    "rpex-page1.xml",
    "rpex-invalid-property.xml",
    "rpex-not-authenticated.xml",
    "fault-not-authenticated.xml",
    "query-host-status.xml",
    "list-processes-in-guest.xml",
];

/// Well-formed enough to get past the envelope: a property whose value is
/// `inner`, declared as `xsi_type`.
fn property_value(xsi_type: &str, inner: &str) -> Vec<u8> {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:xsd="http://www.w3.org/2001/XMLSchema"><soapenv:Body><RetrievePropertiesExResponse xmlns="urn:vim25"><returnval><objects><obj type="VirtualMachine">vm-1</obj><propSet><name>p</name><val xsi:type="{xsi_type}">{inner}</val></propSet></objects></returnval></RetrievePropertiesExResponse></soapenv:Body></soapenv:Envelope>"#
    )
    .into_bytes()
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    for depth in [200usize, 100_000] {
        let inner = format!("{}x{}", "<a>".repeat(depth), "</a>".repeat(depth));
        let err = decode(&property_value("xsd:anyType", &inner)).expect_err("too deep");
        assert!(err.contains("nest deeper"), "{err}");
    }
    // An unknown data type nests by shape too.
    let inner = format!("{}{}", "<b>".repeat(50_000), "</b>".repeat(50_000));
    assert!(decode(&property_value("NoSuchType", &inner)).is_err());
}

#[test]
fn huge_numbers_and_wrong_types_are_kept_as_text() {
    let mut seen = Vec::new();
    for (xsi, text) in [
        ("xsd:long", "99999999999999999999999999"),
        ("xsd:int", "-1e999"),
        ("xsd:double", "1e99999"),
        ("xsd:boolean", "perhaps"),
        ("xsd:dateTime", "yesterday"),
        ("ManagedObjectReference", "vm-1"),
        ("ArrayOfInt", "<int>1</int><int>x</int>"),
    ] {
        let mut sink = |o: vpoller::vsphere::ObjectContent| {
            seen.push(o.props.get("p").cloned());
            ControlFlow::Continue(())
        };
        let body = property_value(xsi, text);
        let outcome = parse_recorded_page(&body, &mut sink);
        assert!(outcome.is_ok(), "{xsi} {text}: {outcome:?}");
    }
    assert_eq!(seen[0], Some(json!("99999999999999999999999999")));
    assert_eq!(seen[3], Some(json!("perhaps")));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_decoder_survives_arbitrary_bytes(body in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = decode(&body);
    }

    #[test]
    fn the_decoder_survives_truncated_and_corrupted_recordings(
        which in 0..RECORDINGS.len(),
        cut in any::<prop::sample::Index>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
    ) {
        let mut body = recorded(RECORDINGS[which]);
        for (at, byte) in flips {
            let i = at.index(body.len());
            body[i] = byte;
        }
        let keep = cut.index(body.len() + 1);
        body.truncate(keep);
        let _ = decode(&body);
    }

    #[test]
    fn the_decoder_survives_any_declared_type_and_text(
        xsi in prop_oneof![
            Just("xsd:int".to_string()), Just("xsd:long".to_string()), Just("xsd:double".to_string()),
            Just("xsd:boolean".to_string()), Just("xsd:dateTime".to_string()), Just("xsd:anyType".to_string()),
            Just("ManagedObjectReference".to_string()), Just("ArrayOfString".to_string()),
            Just("VirtualMachineConfigInfo".to_string()), "[A-Za-z:]{0,20}",
        ],
        text in "[ -~]{0,200}",
    ) {
        let _ = decode(&property_value(&xsi, &text));
    }
}

/// Agent `vc01`, which cannot be reached (nothing listens on port 1).
fn unreachable_agent() -> Arc<vpoller::agents::DirectAgent> {
    Arc::new(vpoller::agents::DirectAgent::new(
        "vc01",
        vpoller::vsphere::Endpoint {
            url: "http://127.0.0.1:1/sdk".into(),
            tls: vpoller::vsphere::TlsMode::Insecure,
            deadline: std::time::Duration::from_secs(2),
        },
        vpoller::vsphere::Credentials {
            user: "u".into(),
            password: vpoller::vsphere::Password::new("p"),
        },
    ))
}

/// A dispatcher over the built-in methods and the unreachable agent.
fn dispatcher() -> &'static (tokio::runtime::Runtime, Arc<Dispatcher>) {
    static D: OnceLock<(tokio::runtime::Runtime, Arc<Dispatcher>)> = OnceLock::new();
    D.get_or_init(|| {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let dispatcher = runtime.block_on(async {
            let agent = unreachable_agent();
            let dirs = MethodDirs {
                builtin: Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("methods")),
                admin: Vec::new(),
            };
            Arc::new(Dispatcher::new(MethodHost::new(
                dirs,
                Limits::default(),
                agent,
            )))
        });
        (runtime, dispatcher)
    })
}

fn handle(frame: &[u8]) -> String {
    let (runtime, dispatcher) = dispatcher();
    runtime.block_on(dispatcher.handle(frame))
}

/// Every reply is vPoller's envelope, or what the helper the request named
/// makes of it: text for zabbix and csvhelper, and for the C clients'
/// helpers text that ends in its one NUL.
fn assert_one_reply(frame: &[u8], reply: &str) {
    let request: Value = serde_json::from_slice(frame).unwrap_or(Value::Null);
    match request.get("helper").and_then(Value::as_str) {
        Some("vpoller.helpers.zabbix" | "vpoller.helpers.csvhelper") => return,
        Some("vpoller.helpers.czabbix" | "vpoller.helpers.cclient") => {
            let text = reply
                .strip_suffix('\0')
                .unwrap_or_else(|| panic!("no NUL: {reply:?}"));
            assert!(!text.contains('\0'), "one NUL, at the end");
            return;
        }
        _ => {}
    }
    if let Some(text) = reply.strip_suffix('\0') {
        assert!(!text.contains('\0'), "one NUL, at the end");
        return;
    }
    let value: Value = serde_json::from_str(reply).unwrap_or_else(|e| {
        panic!(
            "reply to {:?} is not JSON ({e}): {reply}",
            String::from_utf8_lossy(frame)
        )
    });
    assert!(value["success"] == 0 || value["success"] == 1, "{reply}");
    assert!(value["msg"].is_string() || value["success"] == 0, "{reply}");
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        "\\PC{0,40}".prop_map(Value::String),
        Just(Value::String("(null)".into())),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z.\\-]{0,12}", inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn request_field() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("method".to_string()),
        Just("hostname".to_string()),
        Just("name".to_string()),
        Just("properties".to_string()),
        Just("key".to_string()),
        Just("counter-name".to_string()),
        Just("instance".to_string()),
        Just("perf-interval".to_string()),
        Just("max-sample".to_string()),
        Just("helper".to_string()),
        Just("username".to_string()),
        Just("args".to_string()),
        "[a-z\\-]{1,12}",
    ]
}

fn method_name() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!("about")),
        Just(json!("vm.get")),
        Just(json!("vm.discover")),
        Just(json!("host.perf.metric.get")),
        Just(json!("vm.process.get")),
        Just(json!("nope")),
        json_value(),
    ]
}

fn helper_name() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!("vpoller.helpers.zabbix")),
        Just(json!("vpoller.helpers.czabbix")),
        Just(json!("vpoller.helpers.cclient")),
        Just(json!("vpoller.helpers.csvhelper")),
        Just(json!(null)),
        json_value(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn any_frame_gets_exactly_one_reply(frame in proptest::collection::vec(any::<u8>(), 0..512)) {
        let reply = handle(&frame);
        assert_one_reply(&frame, &reply);
    }

    #[test]
    fn any_request_object_gets_exactly_one_reply(
        method in method_name(),
        helper in helper_name(),
        hostname in prop_oneof![Just(json!("vc01")), Just(json!("other")), json_value()],
        fields in proptest::collection::btree_map(request_field(), json_value(), 0..6),
    ) {
        let mut request: serde_json::Map<String, Value> = fields.into_iter().collect();
        request.insert("method".into(), method);
        request.insert("hostname".into(), hostname);
        request.insert("helper".into(), helper);
        let frame = Value::Object(request).to_string();
        let reply = handle(frame.as_bytes());
        assert_one_reply(frame.as_bytes(), &reply);
    }

    #[test]
    fn json_goes_to_lua_and_back_unchanged_where_lua_can_say_it(value in json_value()) {
        let lua = mlua::Lua::new();
        let there = vpoller::methods::convert::to_lua(&lua, &value).expect("to Lua");
        let back = vpoller::methods::convert::from_lua(&lua, there);
        if let Ok(back) = back
            && lua_can_say(&value)
        {
            prop_assert_eq!(normalised(&back), normalised(&value));
        }
    }

    #[test]
    fn any_configuration_text_loads_or_names_its_error(text in "(\\[[a-z]{0,8}\\]\n|[a-z\\-]{0,12} ?[=:] ?[ -~]{0,30}\n|[ -~]{0,40}\n){0,12}") {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("vpoller.conf");
        std::fs::write(&path, &text).expect("write");
        match vpoller::server::config::Config::load(Some(&path)) {
            Ok(_) => {}
            Err(e) => prop_assert!(e.contains('[') || e.contains(&path.display().to_string()), "{}", e),
        }
    }
}

/// Nulls vanish in Lua and empty objects come back as lists: the rest must
/// survive the trip.
fn lua_can_say(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Array(items) => items.iter().all(lua_can_say),
        Value::Object(map) => !map.is_empty() && map.values().all(lua_can_say),
        // Lua integers are i64; larger ones become floats.
        Value::Number(n) => n.is_i64() || n.is_f64(),
        _ => true,
    }
}

/// Numbers compared by value: Lua gives back 1.0 as 1.
fn normalised(value: &Value) -> Value {
    match value {
        Value::Number(n) => json!(n.as_f64()),
        Value::Array(items) => Value::Array(items.iter().map(normalised).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), normalised(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

const HOSTILE_RESULTS: &str = r#"
return {
  api = 1,
  name = "hostile.result",
  description = "Returns what JSON cannot say",
  run = function(ctx, req)
    local kind = req.name
    if kind == "nan" then return { 0/0 } end
    if kind == "inf" then return { math.huge, -math.huge } end
    if kind == "maxint" then return { math.maxinteger, math.mininteger } end
    if kind == "bytes" then return { "\xff\xfe\x00end" } end
    if kind == "cycle" then local t = {}; t.self = t; return t end
    if kind == "function" then return { print } end
    if kind == "ctx" then return { ctx } end
    if kind == "deep" then
      local t = {}
      local top = t
      for _ = 1, 100000 do local n = {}; t[1] = n; t = n end
      return top
    end
    if kind == "mixed" then return { 1, 2, x = 3 } end
    return { kind }
  end,
}
"#;

#[test]
fn values_json_cannot_say_become_error_replies_not_panics() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("hostile.lua"), HOSTILE_RESULTS).expect("script");
    let agent = unreachable_agent();
    let dirs = MethodDirs {
        builtin: Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("methods")),
        admin: vec![dir.path().to_path_buf()],
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let dispatcher = runtime
        .block_on(async { Dispatcher::new(MethodHost::new(dirs, Limits::default(), agent)) });
    for kind in [
        "nan", "inf", "maxint", "bytes", "cycle", "function", "ctx", "deep", "mixed",
    ] {
        let frame =
            json!({"method": "hostile.result", "hostname": "vc01", "name": kind}).to_string();
        let reply = runtime.block_on(dispatcher.handle(frame.as_bytes()));
        let value: Value =
            serde_json::from_str(&reply).unwrap_or_else(|e| panic!("{kind}: {e}: {reply}"));
        match kind {
            "maxint" => assert_eq!(value["result"], json!([i64::MAX, i64::MIN]), "{reply}"),
            "bytes" => assert!(
                value["msg"]
                    .as_str()
                    .is_some_and(|m| m.contains("cannot be sent as JSON")),
                "invalid UTF-8 is named: {reply}"
            ),
            _ => assert!(
                value["success"] == 0 || value["msg"].as_str().is_some_and(|m| !m.is_empty()),
                "{kind}: {reply}"
            ),
        }
        if matches!(kind, "cycle" | "function" | "deep") {
            assert_eq!(value["success"], 1, "{kind}: {reply}");
        }
    }
}
