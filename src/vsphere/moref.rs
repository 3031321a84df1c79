//! Managed object references.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::fmt;

/// A `ManagedObjectReference`: the type and opaque value of a server-side
/// object. Its JSON form everywhere in vpoller is
/// `{"type": "VirtualMachine", "value": "vm-57"}`. The value is opaque (vcsim
/// uses paths with slashes and `@` for datastores); never parse it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MoRef {
    #[serde(rename = "type")]
    pub kind: String,
    pub value: String,
}

impl MoRef {
    pub fn new(kind: impl Into<String>, value: impl Into<String>) -> MoRef {
        MoRef {
            kind: kind.into(),
            value: value.into(),
        }
    }

    pub fn to_json(&self) -> Value {
        json!({"type": self.kind, "value": self.value})
    }

    /// Reads the JSON form back; `None` for anything else.
    pub fn from_json(value: &Value) -> Option<MoRef> {
        let obj = value.as_object()?;
        if obj.len() != 2 {
            return None;
        }
        Some(MoRef::new(
            obj.get("type")?.as_str()?,
            obj.get("value")?.as_str()?,
        ))
    }
}

impl fmt::Display for MoRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.value)
    }
}
