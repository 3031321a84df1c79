//! JSON arguments to a vim25 request body, guided by the schema.
//!
//! Any vim25 method can be called with its arguments as a JSON object keyed
//! by the argument names of the API reference (`specSet`, `options`,
//! `querySpec`, ...). The schema gives the wire order and the kinds. Data
//! objects are JSON objects; where a field is polymorphic (declared as a base
//! type such as `SelectionSpec` or `anyType`), `_type` names the concrete
//! type and becomes `xsi:type`. Managed object references use the same
//! `{"type", "value"}` form the decoder produces, so decoded values can be
//! passed straight back.

use quick_xml::escape::escape;
use serde_json::Value;
use std::fmt::Write;

use crate::vsphere::moref::MoRef;
use crate::vsphere::schema::{Kind, Schema};

/// Writes the body element `<Method xmlns="urn:vim25">...</Method>` for a
/// call of `method` on `this` with the given arguments.
pub fn request_body(method: &str, this: &MoRef, args: &Value) -> Result<String, String> {
    let schema = Schema::vim25();
    let def = schema
        .get(method)
        .ok_or_else(|| format!("{method} is not a vim25 method"))?;
    let args = match args {
        Value::Null => None,
        Value::Object(map) => Some(map),
        _ => return Err(format!("arguments of {method} must be an object")),
    };
    if let Some(map) = args {
        for key in map.keys() {
            if key == "_this" || def.field(key).is_none() {
                return Err(format!("{method} has no argument {key:?}"));
            }
        }
    }

    let mut out = String::with_capacity(512);
    let _ = write!(out, "<{method} xmlns=\"urn:vim25\">");
    write_moref(&mut out, "_this", this, false);
    for field in &def.fields {
        if field.name == "_this" {
            continue;
        }
        if let Some(value) = args.and_then(|m| m.get(field.name)) {
            write_field(&mut out, field.name, field.kind, field.array, value)
                .map_err(|e| format!("{method}.{e}"))?;
        }
    }
    let _ = write!(out, "</{method}>");
    Ok(out)
}

fn write_field(
    out: &mut String,
    name: &str,
    kind: Kind<'_>,
    array: bool,
    value: &Value,
) -> Result<(), String> {
    match value {
        Value::Null => Ok(()),
        Value::Array(items) if array => {
            for item in items {
                write_value(out, name, kind, item)?;
            }
            Ok(())
        }
        Value::Array(_) => Err(format!("{name}: a list where the schema has one value")),
        _ => write_value(out, name, kind, value),
    }
}

fn write_value(
    out: &mut String,
    name: &str,
    declared: Kind<'_>,
    value: &Value,
) -> Result<(), String> {
    match declared {
        Kind::ManagedObjectReference => {
            let r = MoRef::from_json(value).ok_or_else(|| {
                format!("{name}: expected a managed object reference {{type, value}}")
            })?;
            write_moref(out, name, &r, false);
            Ok(())
        }
        Kind::Any => write_any(out, name, value),
        Kind::Data(type_name) => write_data(out, name, type_name, value),
        _scalar => {
            let text = scalar_text(value).ok_or_else(|| format!("{name}: expected a scalar"))?;
            let _ = write!(out, "<{name}>{}</{name}>", escape(text.as_str()));
            Ok(())
        }
    }
}

fn write_data(out: &mut String, name: &str, declared: &str, value: &Value) -> Result<(), String> {
    let schema = Schema::vim25();
    let Value::Object(map) = value else {
        return Err(format!("{name}: expected a {declared} object"));
    };
    let concrete = match map.get("_type") {
        Some(Value::String(t)) => t.as_str(),
        Some(_) => return Err(format!("{name}._type must be a string")),
        None => declared,
    };
    let def = schema
        .get(concrete)
        .ok_or_else(|| format!("{name}: unknown type {concrete}"))?;
    if concrete != declared && !schema.is_a(concrete, declared) {
        return Err(format!("{name}: {concrete} is not a {declared}"));
    }
    for key in map.keys() {
        if key != "_type" && def.field(key).is_none() {
            return Err(format!("{name}: {concrete} has no field {key:?}"));
        }
    }
    if concrete == declared {
        let _ = write!(out, "<{name}>");
    } else {
        let _ = write!(out, "<{name} xsi:type=\"{concrete}\">");
    }
    for field in &def.fields {
        if let Some(v) = map.get(field.name) {
            write_field(out, field.name, field.kind, field.array, v)
                .map_err(|e| format!("{name}.{e}"))?;
        }
    }
    let _ = write!(out, "</{name}>");
    Ok(())
}

/// A value declared `anyType` must say its type on the wire.
fn write_any(out: &mut String, name: &str, value: &Value) -> Result<(), String> {
    if let Some(r) = MoRef::from_json(value) {
        write_moref(out, name, &r, true);
        return Ok(());
    }
    let xsd = match value {
        Value::Bool(_) => "xsd:boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "xsd:long",
        Value::Number(_) => "xsd:double",
        Value::String(_) => "xsd:string",
        Value::Object(map) => {
            let Some(Value::String(t)) = map.get("_type") else {
                return Err(format!(
                    "{name}: a data object in an anyType field needs _type"
                ));
            };
            return write_data(out, name, t, value);
        }
        Value::Array(items) => {
            let _ = write!(out, "<{name} xsi:type=\"ArrayOfString\">");
            for item in items {
                let text = scalar_text(item)
                    .ok_or_else(|| format!("{name}: only lists of scalars can be untyped"))?;
                let _ = write!(out, "<string>{}</string>", escape(text.as_str()));
            }
            let _ = write!(out, "</{name}>");
            return Ok(());
        }
        Value::Null => return Ok(()),
    };
    let text = scalar_text(value).unwrap_or_default();
    let _ = write!(
        out,
        "<{name} xsi:type=\"{xsd}\">{}</{name}>",
        escape(text.as_str())
    );
    Ok(())
}

fn write_moref(out: &mut String, name: &str, r: &MoRef, typed: bool) {
    let xsi = if typed {
        " xsi:type=\"ManagedObjectReference\""
    } else {
        ""
    };
    let _ = write!(
        out,
        "<{name}{xsi} type=\"{}\">{}</{name}>",
        escape(r.kind.as_str()),
        escape(r.value.as_str())
    );
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn arguments_follow_schema_order_and_types() {
        let this = MoRef::new("PropertyCollector", "propertyCollector");
        let args = json!({
            "options": {"maxObjects": 100},
            "specSet": [{
                "propSet": [{"type": "VirtualMachine", "pathSet": ["name", "runtime.powerState"]}],
                "objectSet": [{
                    "obj": {"type": "ContainerView", "value": "session[1]abc"},
                    "skip": true,
                    "selectSet": [{"_type": "TraversalSpec", "type": "ContainerView", "path": "view"}]
                }]
            }]
        });
        let xml = request_body("RetrievePropertiesEx", &this, &args).expect("encodes");
        assert_eq!(
            xml,
            "<RetrievePropertiesEx xmlns=\"urn:vim25\">\
             <_this type=\"PropertyCollector\">propertyCollector</_this>\
             <specSet><propSet><type>VirtualMachine</type><pathSet>name</pathSet><pathSet>runtime.powerState</pathSet></propSet>\
             <objectSet><obj type=\"ContainerView\">session[1]abc</obj><skip>true</skip>\
             <selectSet xsi:type=\"TraversalSpec\"><type>ContainerView</type><path>view</path></selectSet></objectSet></specSet>\
             <options><maxObjects>100</maxObjects></options></RetrievePropertiesEx>"
        );
    }

    #[test]
    fn unknown_arguments_and_fields_are_named() {
        let this = MoRef::new("PropertyCollector", "propertyCollector");
        let err = request_body("RetrievePropertiesEx", &this, &json!({"bogus": 1})).unwrap_err();
        assert!(err.contains("bogus"), "{err}");
        let err = request_body(
            "RetrievePropertiesEx",
            &this,
            &json!({"specSet": [{"propSet": [{"type": "VirtualMachine", "paths": ["name"]}]}]}),
        )
        .unwrap_err();
        assert!(err.contains("\"paths\""), "{err}");
        assert!(request_body("NoSuchMethod", &this, &Value::Null).is_err());
    }

    #[test]
    fn text_is_escaped_and_any_values_are_typed() {
        let this = MoRef::new("CustomFieldsManager", "CustomFieldsManager");
        let xml = request_body(
            "SetField",
            &this,
            &json!({"entity": {"type": "VirtualMachine", "value": "vm-1"}, "key": 1, "value": "a<b&c"}),
        )
        .expect("encodes");
        assert!(xml.contains("<value>a&lt;b&amp;c</value>"), "{xml}");
        assert!(xml.contains("<key>1</key>"), "{xml}");
    }
}
