//! JSON written the way Python's `json.dumps` writes it, for output that
//! existing vPoller consumers compare byte for byte (Zabbix item values and
//! LLD): `", "` and `": "` separators, non-ASCII escaped as `\uXXXX`, and
//! with `indent`, one member per line. Object keys are sorted, except that
//! a reply's `success`, `msg` and `result` come first, in that order, as
//! vPoller's worker wrote them.

use serde_json::Value;
use std::fmt::Write;

pub fn dumps(value: &Value, indent: Option<usize>) -> String {
    dumps_with(value, indent, true)
}

/// As [`dumps`]; with `ensure_ascii` false, as `json.dumps(...,
/// ensure_ascii=False)`: non-ASCII text is written as UTF-8, and only
/// control characters, quotes and backslashes are escaped (vPoller's
/// Zabbix helper wrote its item values and LLD this way).
pub fn dumps_with(value: &Value, indent: Option<usize>, ensure_ascii: bool) -> String {
    let mut out = String::new();
    write_value(
        &mut out,
        value,
        &Style {
            indent,
            ensure_ascii,
        },
        0,
    );
    out
}

struct Style {
    indent: Option<usize>,
    ensure_ascii: bool,
}

fn key_rank(key: &str) -> (u8, &str) {
    match key {
        "success" => (0, key),
        "msg" => (1, key),
        "result" => (2, key),
        _ => (3, key),
    }
}

fn newline(out: &mut String, indent: Option<usize>, level: usize) {
    if let Some(n) = indent {
        out.push('\n');
        out.extend(std::iter::repeat_n(' ', n * level));
    }
}

fn write_value(out: &mut String, value: &Value, style: &Style, level: usize) {
    let indent = style.indent;
    let item_sep = if indent.is_some() { "," } else { ", " };
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => match n.as_f64() {
            // Python prints floats with repr(): 2.0 stays "2.0".
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 1e16 => {
                let _ = write!(out, "{f:.1}");
            }
            _ => out.push_str(&n.to_string()),
        },
        Value::String(s) => write_string(out, s, style.ensure_ascii),
        Value::Array(items) => {
            if items.is_empty() {
                out.push_str("[]");
                return;
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, indent, level + 1);
                write_value(out, item, style, level + 1);
            }
            newline(out, indent, level);
            out.push(']');
        }
        Value::Object(map) => {
            if map.is_empty() {
                out.push_str("{}");
                return;
            }
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by_key(|k| key_rank(k));
            out.push('{');
            for (i, key) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, indent, level + 1);
                write_string(out, key, style.ensure_ascii);
                out.push_str(": ");
                write_value(out, &map[*key], style, level + 1);
            }
            newline(out, indent, level);
            out.push('}');
        }
    }
}

fn write_string(out: &mut String, s: &str, ensure_ascii: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (ensure_ascii && (c as u32) > 0x7e) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn matches_python_json_dumps() {
        assert_eq!(dumps(&json!("poweredOn"), None), "\"poweredOn\"");
        assert_eq!(
            dumps(
                &json!({"data": [{"{#VSPHERE.VM.NAME}": "vm1"}, {"{#VSPHERE.VM.NAME}": "测试-VM-ü"}]}),
                None
            ),
            r#"{"data": [{"{#VSPHERE.VM.NAME}": "vm1"}, {"{#VSPHERE.VM.NAME}": "\u6d4b\u8bd5-VM-\u00fc"}]}"#
        );
        assert_eq!(dumps(&json!(2.0), None), "2.0");
        assert_eq!(dumps(&json!(null), None), "null");
        assert_eq!(dumps(&json!("😀"), None), "\"\\ud83d\\ude00\"");
        assert_eq!(
            dumps(
                &json!({"msg": "Cannot find object x", "success": 1}),
                Some(4)
            ),
            "{\n    \"success\": 1,\n    \"msg\": \"Cannot find object x\"\n}"
        );
    }
}
