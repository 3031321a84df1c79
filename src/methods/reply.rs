//! The reply envelope every method call ends in.

use serde_json::{Map, Value};

/// `{"success": 0|1, "msg": ..., "result": ...}`, as vPoller sends it.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub success: bool,
    pub msg: String,
    /// Present on success only.
    pub result: Option<Value>,
    /// What an output helper made of the reply; sent instead of the JSON.
    pub raw: Option<String>,
    /// The request was refused before any method ran (not JSON, an unknown
    /// method or agent, a missing field, past a limit): the HTTP front end
    /// answers 400 for these.
    pub refused: bool,
    /// The method's script raised an error or hit a limit (as opposed to
    /// returning `nil, message`).
    pub script_failed: bool,
}

impl Reply {
    pub fn ok(msg: impl Into<String>, result: Value) -> Reply {
        Reply {
            success: true,
            msg: msg.into(),
            result: Some(result),
            raw: None,
            refused: false,
            script_failed: false,
        }
    }

    pub fn error(msg: impl Into<String>) -> Reply {
        Reply {
            success: false,
            msg: msg.into(),
            result: None,
            raw: None,
            refused: false,
            script_failed: false,
        }
    }

    /// A request refused before any method ran.
    pub fn refusal(msg: impl Into<String>) -> Reply {
        Reply {
            refused: true,
            ..Reply::error(msg)
        }
    }

    /// What goes on the wire: a helper's text, or the JSON envelope (as
    /// [`to_json`](Self::to_json) writes it, without copying the result
    /// into it first).
    pub fn wire(&self) -> String {
        if let Some(text) = &self.raw {
            return text.clone();
        }
        let mut out = String::with_capacity(64);
        out.push_str(if self.success {
            r#"{"success":0,"msg":"#
        } else {
            r#"{"success":1,"msg":"#
        });
        out.push_str(&Value::String(self.msg.clone()).to_string());
        if let Some(result) = &self.result {
            out.push_str(r#","result":"#);
            out.push_str(&result.to_string());
        }
        out.push('}');
        out
    }

    pub fn to_json(&self) -> Value {
        let mut map = Map::new();
        map.insert(
            "success".into(),
            Value::from(if self.success { 0 } else { 1 }),
        );
        map.insert("msg".into(), Value::String(self.msg.clone()));
        if let Some(r) = &self.result {
            map.insert("result".into(), r.clone());
        }
        Value::Object(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_wire_form_is_the_json_envelope() {
        for reply in [
            Reply::ok("done \"now\" ü", json!([{"a": 1, "b": [null, "x"]}])),
            Reply::error("Unknown or missing agent name"),
        ] {
            assert_eq!(reply.wire(), reply.to_json().to_string());
        }
    }
}
