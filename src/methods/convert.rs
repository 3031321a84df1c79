//! JSON values to Lua and back, the same way everywhere.
//!
//! JSON `null` becomes `nil` on the way in (so `req.name == nil` whether the
//! field was absent or null); `vpoller.null` writes an explicit `null` on
//! the way out. Lists arrive as Lua sequences and go back out as JSON lists,
//! and an empty table goes out as `[]`. Object keys go out sorted, so
//! replies are stable.

use mlua::serde::{DeserializeOptions, SerializeOptions};
use mlua::{Lua, LuaSerdeExt, Value};

pub fn to_lua(lua: &Lua, value: &serde_json::Value) -> mlua::Result<Value> {
    to_lua_with(lua, value, false)
}

fn to_lua_with(lua: &Lua, value: &serde_json::Value, keep_nulls: bool) -> mlua::Result<Value> {
    let options = SerializeOptions::new()
        .serialize_none_to_null(keep_nulls)
        .serialize_unit_to_null(keep_nulls);
    // A large value (a big inventory's rows) gets its room before it is
    // made, not from the next instruction hook.
    super::memory::Reservation::make_room(lua, super::memory::lua_size(value));
    lua.to_value_with(value, options)
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
