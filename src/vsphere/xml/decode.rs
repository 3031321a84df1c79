//! vim25 XML to `serde_json::Value`, guided by the schema.
//!
//! The JSON every caller (and every Lua method) sees:
//! - xsd numbers are JSON numbers (`long` stays exact as an `i64`), booleans
//!   are booleans, `dateTime` is the RFC 3339 text the server sent, enums
//!   and `base64Binary` are strings;
//! - a managed object reference is `{"type": "HostSystem", "value": "host-21"}`;
//! - a data object is a JSON object whose first key, `_type`, names its
//!   concrete vim25 type (`VirtualDisk`, `GuestDiskInfo`), followed by its
//!   set fields in wire order;
//! - a field the schema declares as an array is always a JSON array, even
//!   with one element, and `ArrayOfXxx` values are plain JSON arrays.
//!
//! The type of a value comes from its `xsi:type` attribute, resolved by
//! namespace URI (vcsim binds its own prefix, `XMLSchema-instance:type`), and
//! otherwise from the schema's declaration of the field that holds it.

use quick_xml::XmlVersion;
use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::{Namespace, ResolveResult};
use quick_xml::reader::NsReader;
use serde_json::{Map, Value};

use crate::vsphere::schema::{Kind, Schema};

const XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";

/// A decode failure: malformed XML or an unexpected document shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<quick_xml::Error> for DecodeError {
    fn from(e: quick_xml::Error) -> Self {
        DecodeError(format!("malformed XML: {e}"))
    }
}

type Result<T> = std::result::Result<T, DecodeError>;

/// An element whose start tag has been read and whose content has not.
pub struct Element<'x> {
    start: BytesStart<'x>,
    empty: bool,
    /// `xsi:type`, without its namespace prefix.
    xsi_type: Option<String>,
    /// The plain `type` attribute that a managed object reference carries.
    moref_type: Option<String>,
}

impl<'x> Element<'x> {
    pub fn local_name(&self) -> &str {
        let name = self.start.name().into_inner();
        match name.split_once(':') {
            Some((_, local)) => local,
            None => name,
        }
    }

    pub fn xsi_type(&self) -> Option<&str> {
        self.xsi_type.as_deref()
    }
}

/// How deep values may nest. vim25's deepest data objects nest about 15
/// levels; past this a reply is broken or hostile, and decoding it by
/// recursion would run out of stack.
pub const MAX_DEPTH: usize = 96;

/// A pull decoder over one XML document held in memory.
pub struct Decoder<'x> {
    reader: NsReader<&'x [u8]>,
    schema: &'static Schema,
    depth: usize,
}

impl<'x> Decoder<'x> {
    pub fn new(xml: &'x [u8]) -> Decoder<'x> {
        let mut reader = NsReader::from_reader(xml);
        reader.config_mut().trim_text(false);
        Decoder {
            reader,
            schema: Schema::vim25(),
            depth: 0,
        }
    }

    /// The next child element of the element being read, or `None` once its
    /// end tag is reached. Text between elements is skipped. A document that
    /// ends before its elements are closed is an error (a truncated reply).
    pub fn next_child(&mut self) -> Result<Option<Element<'x>>> {
        loop {
            match self.reader.read_event()? {
                Event::Start(start) => return self.element(start, false).map(Some),
                Event::Empty(start) => return self.element(start, true).map(Some),
                Event::End(_) => return Ok(None),
                Event::Eof => {
                    return Err(DecodeError(
                        "the document ends early (truncated reply)".into(),
                    ));
                }
                _ => {}
            }
        }
    }

    fn element(&self, start: BytesStart<'x>, empty: bool) -> Result<Element<'x>> {
        let mut xsi_type = None;
        let mut moref_type = None;
        // Most elements carry no attributes; skip the attribute parser for them.
        if start.attributes_raw().trim_start().is_empty() {
            return Ok(Element {
                start,
                empty,
                xsi_type,
                moref_type,
            });
        }
        for attr in start.attributes() {
            let attr = attr.map_err(|e| DecodeError(format!("bad attribute: {e}")))?;
            let (ns, local) = self.reader.resolver().resolve_attribute(attr.key);
            let is_type = local.into_inner() == "type";
            if !is_type {
                continue;
            }
            let value = attr
                .normalized_value(XmlVersion::Implicit1_0)
                .map_err(|e| DecodeError(format!("bad attribute value: {e}")))?;
            match ns {
                ResolveResult::Bound(Namespace(uri)) if uri == XSI => {
                    let bare = value.rsplit(':').next().unwrap_or(&value);
                    xsi_type = Some(bare.to_string());
                }
                ResolveResult::Unbound => moref_type = Some(value.into_owned()),
                _ => {}
            }
        }
        Ok(Element {
            start,
            empty,
            xsi_type,
            moref_type,
        })
    }

    /// Skips the content of an element.
    pub fn skip(&mut self, element: &Element<'x>) -> Result<()> {
        if !element.empty {
            self.reader.read_to_end(element.start.name())?;
        }
        Ok(())
    }

    /// The text content of an element, with entity and character references
    /// resolved. Child elements, which a scalar should not have, are skipped.
    pub fn text(&mut self, element: &Element<'x>) -> Result<String> {
        let mut text = String::new();
        if element.empty {
            return Ok(text);
        }
        loop {
            match self.reader.read_event()? {
                Event::Text(t) => text.push_str(&t.xml_content(XmlVersion::Implicit1_0)),
                Event::CData(c) => text.push_str(&c.xml_content(XmlVersion::Implicit1_0)),
                Event::GeneralRef(r) => push_reference(&mut text, &r)?,
                Event::Start(child) => {
                    self.reader.read_to_end(child.name())?;
                }
                Event::End(_) => return Ok(text),
                Event::Eof => return Err(DecodeError("document ends inside an element".into())),
                _ => {}
            }
        }
    }

    /// Decodes an element's content as a value of the declared kind (its own
    /// `xsi:type`, when present, wins).
    pub fn decode(&mut self, element: &Element<'x>, declared: Kind<'_>) -> Result<Value> {
        if self.depth >= MAX_DEPTH {
            return Err(DecodeError(format!(
                "values nest deeper than {MAX_DEPTH} levels"
            )));
        }
        self.depth += 1;
        let decoded = self.decode_kind(element, declared);
        self.depth -= 1;
        decoded
    }

    fn decode_kind(&mut self, element: &Element<'x>, declared: Kind<'_>) -> Result<Value> {
        let kind = match element.xsi_type.as_deref() {
            Some(t) => Kind::from_name(t),
            None => declared,
        };
        match kind {
            Kind::ManagedObjectReference => {
                let value = self.text(element)?;
                let kind = element.moref_type.clone().unwrap_or_default();
                Ok(serde_json::json!({"type": kind, "value": value}))
            }
            Kind::Any => self.decode_untyped(element),
            Kind::Data(name) => self.decode_data(element, name),
            scalar => {
                let text = self.text(element)?;
                Ok(scalar_value(scalar, text))
            }
        }
    }

    fn decode_data(&mut self, element: &Element<'x>, type_name: &str) -> Result<Value> {
        let Some(def) = self.schema.get(type_name) else {
            return self.decode_untyped(element);
        };
        if let Some(item) = def.array_item() {
            let mut items = Vec::new();
            if !element.empty {
                while let Some(child) = self.next_child()? {
                    items.push(self.decode(&child, item)?);
                }
            }
            return Ok(Value::Array(items));
        }

        let mut object = Map::with_capacity(def.fields.len() + 1);
        object.insert("_type".into(), Value::String(def.name.to_string()));
        if element.empty {
            return Ok(Value::Object(object));
        }
        while let Some(child) = self.next_child()? {
            let name = child.local_name().to_string();
            let (value, array) = match def.field(&name) {
                Some(field) => (self.decode(&child, field.kind)?, field.array),
                // A field newer than our schema: keep it, decoded by shape.
                None => (self.decode_untyped(&child)?, false),
            };
            insert_field(&mut object, name, value, array);
        }
        Ok(Value::Object(object))
    }

    /// Decodes an element whose type is unknown, by its shape: a `type`
    /// attribute makes a managed object reference, children make an object
    /// (repeated names become arrays), and anything else is text.
    fn decode_untyped(&mut self, element: &Element<'x>) -> Result<Value> {
        if let Some(kind) = &element.moref_type {
            let value = self.text(element)?;
            return Ok(serde_json::json!({"type": kind, "value": value}));
        }
        if element.empty {
            return Ok(Value::String(String::new()));
        }
        let mut object: Option<Map<String, Value>> = None;
        let mut text = String::new();
        loop {
            match self.reader.read_event()? {
                Event::Start(start) => {
                    let child = self.element(start, false)?;
                    let name = child.local_name().to_string();
                    let value = self.decode(&child, Kind::Any)?;
                    insert_repeated(object.get_or_insert_with(Map::new), name, value);
                }
                Event::Empty(start) => {
                    let child = self.element(start, true)?;
                    let name = child.local_name().to_string();
                    let value = self.decode(&child, Kind::Any)?;
                    insert_repeated(object.get_or_insert_with(Map::new), name, value);
                }
                Event::Text(t) => text.push_str(&t.xml_content(XmlVersion::Implicit1_0)),
                Event::GeneralRef(r) => push_reference(&mut text, &r)?,
                Event::CData(c) => text.push_str(&c.xml_content(XmlVersion::Implicit1_0)),
                Event::End(_) => break,
                Event::Eof => return Err(DecodeError("document ends inside an element".into())),
                _ => {}
            }
        }
        Ok(match object {
            Some(map) => Value::Object(map),
            None => Value::String(text),
        })
    }
}

/// Appends what `&name;` or `&#N;` stands for.
fn push_reference(text: &mut String, r: &quick_xml::events::BytesRef<'_>) -> Result<()> {
    if let Some(ch) = r
        .resolve_char_ref()
        .map_err(|e| DecodeError(format!("bad character reference: {e}")))?
    {
        text.push(ch);
    } else if let Some(s) = resolve_predefined_entity(r) {
        text.push_str(s);
    } else {
        return Err(DecodeError(format!("unknown entity &{};", &**r)));
    }
    Ok(())
}

fn insert_field(object: &mut Map<String, Value>, name: String, value: Value, array: bool) {
    if !array {
        object.insert(name, value);
        return;
    }
    match object.get_mut(&name) {
        Some(Value::Array(items)) => items.push(value),
        _ => {
            object.insert(name, Value::Array(vec![value]));
        }
    }
}

fn insert_repeated(object: &mut Map<String, Value>, name: String, value: Value) {
    match object.get_mut(&name) {
        Some(Value::Array(items)) => items.push(value),
        Some(existing) => {
            let first = existing.take();
            *existing = Value::Array(vec![first, value]);
        }
        None => {
            object.insert(name, value);
        }
    }
}

/// Converts scalar text by its xsd kind. Text that does not parse as its
/// declared kind is kept as a string rather than lost.
pub fn scalar_value(kind: Kind<'_>, text: String) -> Value {
    match kind {
        Kind::Int | Kind::Long | Kind::Short | Kind::Byte => match text.trim().parse::<i64>() {
            Ok(n) => Value::from(n),
            Err(_) => Value::String(text),
        },
        Kind::Float | Kind::Double => match text.trim().parse::<f64>() {
            Ok(x) => serde_json::Number::from_f64(x)
                .map(Value::Number)
                .unwrap_or(Value::Null),
            Err(_) => Value::String(text),
        },
        Kind::Boolean => match text.trim() {
            "true" | "1" => Value::Bool(true),
            "false" | "0" => Value::Bool(false),
            _ => Value::String(text),
        },
        _ => Value::String(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vsphere::collector::{ObjectContent, parse_page};
    use crate::vsphere::soap::Reply;
    use serde_json::json;
    use std::ops::ControlFlow;

    fn objects(xml: &'static str) -> Vec<ObjectContent> {
        let reply = Reply {
            body: bytes::Bytes::from_static(xml.as_bytes()),
            session_cookie: None,
        };
        let mut out = Vec::new();
        parse_page("test", "RetrievePropertiesEx", &reply, &mut |o| {
            out.push(o);
            ControlFlow::Continue(())
        })
        .expect("page parses");
        out
    }

    #[test]
    fn every_xsd_scalar_type_has_its_json_type() {
        let obj = objects(include_str!("../../../tests/data/soap/rpex-scalars.xml")).remove(0);
        let p = &obj.props;
        assert_eq!(p["p.int"], json!(-42));
        assert_eq!(p["p.long"], json!(9007199254740993_i64));
        assert_eq!(p["p.short"], json!(7));
        assert_eq!(p["p.byte"], json!(-1));
        assert_eq!(p["p.float"], json!(1.5));
        assert_eq!(p["p.double"], json!(2250.0));
        assert_eq!(p["p.boolean"], json!(true));
        assert_eq!(p["p.dateTime"], json!("2026-11-26T18:05:46.989061427Z"));
        assert_eq!(p["p.base64"], json!("aGVsbG8="));
        assert_eq!(
            p["p.string"],
            json!("00123"),
            "numeric-looking strings stay strings"
        );
        assert_eq!(p["p.enum"], json!("poweredOn"));
        assert_eq!(
            p["p.moref"],
            json!({"type": "ClusterComputeResource", "value": "domain-c7"})
        );
    }

    #[test]
    fn arrays_stay_arrays_even_with_one_item() {
        let obj = objects(include_str!("../../../tests/data/soap/rpex-scalars.xml")).remove(0);
        let p = &obj.props;
        assert_eq!(
            p["p.morefs"],
            json!([{"type": "Datastore", "value": "datastore-1"}])
        );
        assert_eq!(p["p.strings"], json!(["only"]));
        assert_eq!(p["p.emptyInts"], json!([]));
        // GuestNicInfo.ipAddress is unbounded in the schema: one address is a list.
        assert_eq!(p["p.nic"]["ipAddress"], json!(["10.0.0.1"]));
        assert_eq!(p["p.nic"]["deviceConfigId"], json!(4000));
    }

    #[test]
    fn nested_fields_are_typed_by_the_schema() {
        let obj = objects(include_str!("../../../tests/data/soap/rpex-scalars.xml")).remove(0);
        let cpu = &obj.props["p.cpuInfo"];
        assert_eq!(cpu["_type"], "HostCpuInfo");
        assert_eq!(cpu["hz"], json!(3591345000_i64));
        assert_eq!(cpu["numCpuCores"], json!(16));
        let newer = &obj.props["p.newer"];
        assert_eq!(
            newer["fieldFromTheFuture"],
            json!({"a": ["1", "2"]}),
            "unknown fields are kept by shape"
        );
    }

    #[test]
    fn polymorphic_devices_keep_their_concrete_types() {
        let objs = objects(include_str!("../../../tests/data/soap/rpex-page1.xml"));
        assert_eq!(objs.len(), 2);
        let devices = objs[0].props["config.hardware.device"]
            .as_array()
            .expect("device list");
        let types: Vec<&str> = devices.iter().filter_map(|d| d["_type"].as_str()).collect();
        assert!(types.contains(&"VirtualDisk"), "{types:?}");
        assert!(types.contains(&"VirtualIDEController"), "{types:?}");
        let disk = devices
            .iter()
            .find(|d| d["_type"] == "VirtualDisk")
            .expect("a disk");
        assert!(disk["capacityInKB"].is_i64(), "{disk}");
        assert!(
            disk["backing"]["_type"]
                .as_str()
                .is_some_and(|t| t.contains("Backing")),
            "{disk}"
        );
        let nic = &objs[0].props["guest.net"][0];
        assert_eq!(nic["_type"], "GuestNicInfo");
        assert_eq!(nic["ipConfig"]["ipAddress"][0]["prefixLength"], json!(8));
    }

    #[test]
    fn entities_and_character_references_are_resolved() {
        let objs = objects(include_str!("../../../tests/data/soap/rpex-page3.xml"));
        assert_eq!(objs[0].props["name"], json!("vm with a <tag> & ü"));
    }

    #[test]
    fn a_fault_is_decoded_with_its_type() {
        use crate::vsphere::soap::open_body;
        let xml = include_str!("../../../tests/data/soap/fault-not-authenticated.xml");
        let mut decoder = Decoder::new(xml.as_bytes());
        let fault = open_body(&mut decoder)
            .expect("well formed")
            .expect_err("a fault");
        assert_eq!(fault.kind, crate::vsphere::FaultKind::NotAuthenticated);
        assert_eq!(fault.message, "");
        assert_eq!(fault.detail["object"]["type"], "ViewManager");
    }

    #[test]
    fn malformed_xml_is_an_error_not_a_panic() {
        let bad: [&'static str; 5] = [
            "",
            "<a>",
            "<soapenv:Envelope><soapenv:Body><RetrievePropertiesExResponse><returnval><objects><obj type=\"VirtualMachine\">vm-1</obj><propSet><name>n</name><val>&bogus;</val></propSet></objects>",
            "not xml at all <<<",
            "<soapenv:Envelope><soapenv:Body><RetrievePropertiesExResponse><returnval><objects></wrong>",
        ];
        for text in bad {
            let reply = Reply {
                body: bytes::Bytes::from_static(text.as_bytes()),
                session_cookie: None,
            };
            let parsed = parse_page("test", "RetrievePropertiesEx", &reply, &mut |_| {
                ControlFlow::Continue(())
            });
            assert!(parsed.is_err(), "{text:?} was taken for a response");
        }
    }
}
