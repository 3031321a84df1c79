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
}

impl Reply {
    pub fn ok(msg: impl Into<String>, result: Value) -> Reply {
        Reply {
            success: true,
            msg: msg.into(),
            result: Some(result),
            raw: None,
        }
    }

    pub fn error(msg: impl Into<String>) -> Reply {
        Reply {
            success: false,
            msg: msg.into(),
            result: None,
            raw: None,
        }
    }

    /// What goes on the wire: a helper's text, or the JSON envelope.
    pub fn wire(&self) -> String {
        match &self.raw {
            Some(text) => text.clone(),
            None => self.to_json().to_string(),
        }
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
