//! What one request may carry, and what one call of a Lua method may spend.

use std::time::Duration;

/// What one call of a method may spend. Going over any of them fails that
/// call only, with an error that names the limit and the script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Lua VM instructions (counted in steps of 1,000).
    pub instructions: u64,
    /// Bytes of Lua memory for the call's state.
    pub memory: usize,
    /// Wall-clock time, including the time spent waiting for vSphere.
    pub timeout: Duration,
    /// Bytes of Lua memory of all calls in flight together.
    pub total_memory: usize,
    /// Entries of any list in a request (`properties` above all).
    pub max_list_entries: usize,
    /// Bytes of any one string in a request (a name, a path, a key).
    pub max_string_bytes: usize,
}

/// How deep a request's values may nest (vPoller's are flat).
const MAX_DEPTH: usize = 8;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            instructions: 200_000_000,
            memory: 256 << 20,
            timeout: Duration::from_secs(60),
            total_memory: 1 << 30,
            max_list_entries: 1000,
            max_string_bytes: 4096,
        }
    }
}

impl Limits {
    /// The limits for running a script's top level when it is (re)loaded.
    pub fn for_loading() -> Limits {
        Limits {
            instructions: 10_000_000,
            memory: 64 << 20,
            timeout: Duration::from_secs(2),
            total_memory: 64 << 20,
            ..Limits::default()
        }
    }
}

impl Limits {
    /// Checks what a request carries before any of it reaches Lua: a clear
    /// error naming the field, instead of memory spent on it.
    pub fn check_request(&self, request: &serde_json::Value) -> Result<(), String> {
        let Some(fields) = request.as_object() else {
            return Ok(());
        };
        for (name, value) in fields {
            self.check_value(name, value, 0)?;
        }
        Ok(())
    }

    fn check_value(
        &self,
        field: &str,
        value: &serde_json::Value,
        depth: usize,
    ) -> Result<(), String> {
        use serde_json::Value;
        if depth > MAX_DEPTH {
            return Err(format!(
                "Request field '{}' nests deeper than {MAX_DEPTH} levels",
                printable(field)
            ));
        }
        match value {
            Value::String(s) if s.len() > self.max_string_bytes => Err(format!(
                "Request field '{}' has a value of {} bytes; at most {} are accepted",
                printable(field),
                s.len(),
                self.max_string_bytes
            )),
            Value::Array(items) if items.len() > self.max_list_entries => Err(format!(
                "Request field '{}' has {} entries; at most {} are accepted",
                printable(field),
                items.len(),
                self.max_list_entries
            )),
            Value::Array(items) => items
                .iter()
                .try_for_each(|v| self.check_value(field, v, depth + 1)),
            Value::Object(map) if map.len() > self.max_list_entries => Err(format!(
                "Request field '{}' has {} keys; at most {} are accepted",
                printable(field),
                map.len(),
                self.max_list_entries
            )),
            Value::Object(map) => map.iter().try_for_each(|(k, v)| {
                if k.len() > self.max_string_bytes {
                    return Err(format!(
                        "Request field '{}' has a key of {} bytes; at most {} are accepted",
                        printable(field),
                        k.len(),
                        self.max_string_bytes
                    ));
                }
                self.check_value(field, v, depth + 1)
            }),
            _ => Ok(()),
        }
    }
}

/// A field name as it can be shown in a message: not too long to read.
fn printable(field: &str) -> String {
    if field.len() <= 64 {
        return field.to_string();
    }
    let mut end = 64;
    while !field.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &field[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn requests_over_the_bounds_are_refused_with_the_field_named() {
        let limits = Limits::default();
        assert!(
            limits
                .check_request(&json!({"method": "vm.get", "properties": ["name"]}))
                .is_ok()
        );
        let paths: Vec<String> = (0..100_000).map(|i| format!("x{i}")).collect();
        let err = limits
            .check_request(&json!({"method": "vm.get", "properties": paths}))
            .expect_err("too many paths");
        assert!(
            err.contains("'properties' has 100000 entries; at most 1000"),
            "{err}"
        );
        let err = limits
            .check_request(&json!({"name": "ü".repeat(3000)}))
            .expect_err("too long");
        assert!(err.contains("'name' has a value of 6000 bytes"), "{err}");
        let deep = (0..20).fold(json!(1), |v, _| json!([v]));
        let err = limits
            .check_request(&json!({"key": deep}))
            .expect_err("too deep");
        assert!(err.contains("nests deeper"), "{err}");
        let long_name = "é".repeat(100);
        let err = limits
            .check_request(&json!({long_name: "x".repeat(5000)}))
            .expect_err("long value");
        assert!(err.contains("..."), "{err}");
    }
}
