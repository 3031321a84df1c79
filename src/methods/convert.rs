//! JSON values to Lua and back, the same way everywhere.
//!
//! JSON `null` becomes `nil` on the way in (so `req.name == nil` whether the
//! field was absent or null); `vpoller.null` writes an explicit `null` on
//! the way out. Lists arrive as Lua sequences and go back out as JSON lists,
//! and an empty table goes out as `[]`. Object keys go out sorted, so
//! replies are stable.

use mlua::serde::DeserializeOptions;
use mlua::{Lua, LuaSerdeExt, Value};

pub fn to_lua(lua: &Lua, value: &serde_json::Value) -> mlua::Result<Value> {
    to_lua_with(lua, value, false)
}

/// How deep a value may nest (mlua's own serializer stops at 128 too).
const MAX_DEPTH: usize = 128;

fn to_lua_with(lua: &Lua, value: &serde_json::Value, keep_nulls: bool) -> mlua::Result<Value> {
    // A large value (a big inventory's rows) gets its room before it is
    // made, not from the next instruction hook.
    let size = super::memory::lua_size(value);
    super::memory::Reservation::make_room(lua, size);
    // Built with the limit lifted and its room checked once here: under a
    // limit, mlua sets every table slot and makes every string in a
    // protected call of its own, which was half of what a small request
    // cost.
    let limit = lua.set_memory_limit(0).unwrap_or(0);
    if limit != 0 && lua.used_memory().saturating_add(size) > limit {
        let _ = lua.set_memory_limit(limit);
        return Err(mlua::Error::MemoryError("not enough memory".into()));
    }
    let built = Builder {
        lua,
        keep_nulls,
        array_metatable: None,
    }
    .build(value, 0);
    if limit != 0 {
        let _ = lua.set_memory_limit(limit);
    }
    built
}

/// JSON to Lua by walking the value: what mlua's serde serializer makes
/// (lists as sequences with its array metatable, `null` as nil or
/// `vpoller.null`), at a fraction of its cost per value, which every
/// request pays for its fields and rows.
struct Builder<'l> {
    lua: &'l Lua,
    keep_nulls: bool,
    array_metatable: Option<mlua::Table>,
}

impl Builder<'_> {
    fn build(&mut self, value: &serde_json::Value, depth: usize) -> mlua::Result<Value> {
        use serde_json::Value as Json;
        if depth > MAX_DEPTH {
            return Err(mlua::Error::SerializeError(format!(
                "a value nested more than {MAX_DEPTH} deep"
            )));
        }
        Ok(match value {
            Json::Null if self.keep_nulls => self.lua.null(),
            Json::Null => Value::Nil,
            Json::Bool(b) => Value::Boolean(*b),
            Json::Number(n) => match n.as_i64() {
                Some(i) => Value::Integer(i),
                None => Value::Number(n.as_f64().unwrap_or(f64::NAN)),
            },
            Json::String(text) => Value::String(self.lua.create_string(text)?),
            Json::Array(items) => {
                let table = self.lua.create_table_with_capacity(items.len(), 0)?;
                for (i, item) in items.iter().enumerate() {
                    table.raw_set(i + 1, self.build(item, depth + 1)?)?;
                }
                let metatable = match &self.array_metatable {
                    Some(m) => m.clone(),
                    None => self
                        .array_metatable
                        .insert(self.lua.array_metatable())
                        .clone(),
                };
                table.set_metatable(Some(metatable))?;
                Value::Table(table)
            }
            Json::Object(fields) => {
                let table = self.lua.create_table_with_capacity(0, fields.len())?;
                for (key, field) in fields {
                    // A nil would not be stored: its key need not be made.
                    if field.is_null() && !self.keep_nulls {
                        continue;
                    }
                    table.raw_set(key.as_str(), self.build(field, depth + 1)?)?;
                }
                Value::Table(table)
            }
        })
    }
}

pub fn from_lua(lua: &Lua, value: Value) -> mlua::Result<serde_json::Value> {
    let options = DeserializeOptions::new()
        .deny_unsupported_types(true)
        .deny_recursive_tables(true)
        .sort_keys(true)
        .encode_empty_tables_as_array(true);
    lua.from_value_with(value, options)
}

/// As [`to_lua`], but a JSON `null` stays a value (`vpoller.null`): what
/// output helpers get, so that a key whose value is null is still written
/// (vPoller's LLD rows keep `"{#...}": null`).
pub fn to_lua_keeping_nulls(lua: &Lua, value: &serde_json::Value) -> mlua::Result<Value> {
    to_lua_with(lua, value, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlua::serde::SerializeOptions;
    use serde_json::json;

    /// The walk makes what mlua's serializer made before it, nulls and
    /// all, as JSON read back shows.
    #[test]
    fn the_walk_makes_what_the_serializer_made() {
        let lua = Lua::new();
        let value = json!({
            "a": [1, null, 2.5, "x", [], {}, {"b": null}],
            "big": 18446744073709551615u64,
            "neg": -3,
            "t": true,
            "n": null,
            "s": "ü\u{0}"
        });
        for keep_nulls in [false, true] {
            let options = SerializeOptions::new()
                .serialize_none_to_null(keep_nulls)
                .serialize_unit_to_null(keep_nulls);
            let serde_made = lua.to_value_with(&value, options).expect("serializer");
            let walked = to_lua_with(&lua, &value, keep_nulls).expect("walk");
            let back = |v: Value| from_lua(&lua, v).expect("back to JSON");
            assert_eq!(back(walked), back(serde_made), "keep_nulls {keep_nulls}");
        }
        let mut deep = json!(1);
        for _ in 0..200 {
            deep = json!([deep]);
        }
        assert!(
            to_lua(&lua, &deep).is_err(),
            "a limit, not a stack overflow"
        );
    }
}
