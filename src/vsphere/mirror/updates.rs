//! WaitForUpdatesEx replies, decoded into what the mirror applies.
//!
//! An `UpdateSet` is read one `ObjectUpdate` at a time, so a 20 MB initial
//! load never exists as one JSON tree. The entries of every `filterSet`
//! come out as one list, in the order the server sent them: vcsim sends two
//! entries for one filter whenever enters and modifies mix.

use serde_json::Value;

use crate::vsphere::fault::{Error, Result};
use crate::vsphere::moref::MoRef;
use crate::vsphere::schema::Kind;
use crate::vsphere::soap::{Reply, open_body};
use crate::vsphere::xml::decode::{DecodeError, Decoder};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateKind {
    Enter,
    Modify,
    Leave,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeOp {
    Add,
    Remove,
    Assign,
    IndirectRemove,
}

/// One `PropertyChange`: `val` is `None` for an assign without a value
/// (the property is unset) and for removals.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub name: String,
    pub op: ChangeOp,
    pub val: Option<Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ObjectUpdate {
    pub kind: UpdateKind,
    pub obj: MoRef,
    pub changes: Vec<Change>,
    /// Paths the server could not read for this object, with the fault's
    /// type name.
    pub missing: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct UpdateSet {
    pub version: String,
    pub truncated: bool,
    pub objects: Vec<ObjectUpdate>,
    /// Objects a filter could not reach (`PropertyFilterUpdate.missingSet`).
    pub missing_objects: Vec<MoRef>,
}

/// Decodes a WaitForUpdatesEx reply: `None` when the wait timed out with
/// nothing to report (no `returnval`).
pub fn parse_wait_reply(host: &str, reply: &Reply) -> Result<Option<UpdateSet>> {
    parse_body(host, &reply.body)
}

pub fn parse_body(host: &str, body: &[u8]) -> Result<Option<UpdateSet>> {
    let err = |e: DecodeError| Error::Decode {
        host: host.to_string(),
        method: "WaitForUpdatesEx".into(),
        message: e.0,
    };
    let mut decoder = Decoder::new(body);
    if let Err(fault) = open_body(&mut decoder).map_err(err)? {
        return Err(Error::Fault {
            host: host.to_string(),
            fault: Box::new(fault),
        });
    }
    let mut found = None;
    while let Some(returnval) = decoder.next_child().map_err(err)? {
        if returnval.local_name() != "returnval" {
            decoder.skip(&returnval).map_err(err)?;
            continue;
        }
        found = Some(read_update_set(&mut decoder).map_err(err)?);
    }
    Ok(found)
}

fn read_update_set(decoder: &mut Decoder<'_>) -> std::result::Result<UpdateSet, DecodeError> {
    let mut set = UpdateSet::default();
    while let Some(child) = decoder.next_child()? {
        match child.local_name() {
            "version" => set.version = decoder.text(&child)?,
            "truncated" => set.truncated = decoder.text(&child)?.trim() == "true",
            "filterSet" => read_filter_update(decoder, &mut set)?,
            _ => decoder.skip(&child)?,
        }
    }
    Ok(set)
}

fn read_filter_update(
    decoder: &mut Decoder<'_>,
    set: &mut UpdateSet,
) -> std::result::Result<(), DecodeError> {
    while let Some(child) = decoder.next_child()? {
        match child.local_name() {
            "objectSet" => set.objects.push(read_object_update(decoder)?),
            "missingSet" => {
                let missing = decoder.decode(&child, Kind::Data("MissingObject"))?;
                if let Some(obj) = missing.get("obj").and_then(MoRef::from_json) {
                    set.missing_objects.push(obj);
                }
            }
            _ => decoder.skip(&child)?,
        }
    }
    Ok(())
}

/// One `ObjectUpdate`, read field by field: an initial load has one
/// change per object and path, so no intermediate tree is built for them.
fn read_object_update(decoder: &mut Decoder<'_>) -> std::result::Result<ObjectUpdate, DecodeError> {
    let bad = |what: String| DecodeError(format!("ObjectUpdate: {what}"));
    let (mut kind, mut obj) = (None, None);
    let (mut changes, mut missing) = (Vec::new(), Vec::new());
    while let Some(child) = decoder.next_child()? {
        match child.local_name() {
            "kind" => {
                kind = Some(match decoder.text(&child)?.as_str() {
                    "enter" => UpdateKind::Enter,
                    "modify" => UpdateKind::Modify,
                    "leave" => UpdateKind::Leave,
                    other => return Err(bad(format!("unknown kind {other:?}"))),
                })
            }
            "obj" => obj = MoRef::from_json(&decoder.decode(&child, Kind::ManagedObjectReference)?),
            "changeSet" => changes.push(read_change(decoder)?),
            "missingSet" => {
                let m = decoder.decode(&child, Kind::Data("MissingProperty"))?;
                let path = m.get("path").and_then(Value::as_str).unwrap_or_default();
                let fault = m
                    .pointer("/fault/fault/_type")
                    .and_then(Value::as_str)
                    .unwrap_or("SystemError");
                missing.push((path.to_string(), fault.to_string()));
            }
            _ => decoder.skip(&child)?,
        }
    }
    Ok(ObjectUpdate {
        kind: kind.ok_or_else(|| bad("no kind".into()))?,
        obj: obj.ok_or_else(|| bad("no obj".into()))?,
        changes,
        missing,
    })
}

fn read_change(decoder: &mut Decoder<'_>) -> std::result::Result<Change, DecodeError> {
    let (mut name, mut op, mut val) = (None, None, None);
    while let Some(part) = decoder.next_child()? {
        match part.local_name() {
            "name" => name = Some(decoder.text(&part)?),
            "op" => {
                op = Some(match decoder.text(&part)?.as_str() {
                    "add" => ChangeOp::Add,
                    "remove" => ChangeOp::Remove,
                    "assign" => ChangeOp::Assign,
                    "indirectRemove" => ChangeOp::IndirectRemove,
                    other => {
                        return Err(DecodeError(format!("PropertyChange: unknown op {other:?}")));
                    }
                })
            }
            "val" => val = Some(decoder.decode(&part, Kind::Any)?),
            _ => decoder.skip(&part)?,
        }
    }
    let name = name.ok_or_else(|| DecodeError("PropertyChange without a name".into()))?;
    let op = op.ok_or_else(|| DecodeError(format!("PropertyChange {name} without an op")))?;
    Ok(Change { name, op, val })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENVELOPE_START: &str = r#"<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:xsd="http://www.w3.org/2001/XMLSchema"><soapenv:Body><WaitForUpdatesExResponse xmlns="urn:vim25">"#;
    const ENVELOPE_END: &str = "</WaitForUpdatesExResponse></soapenv:Body></soapenv:Envelope>";

    pub(crate) fn reply(inner: &str) -> Vec<u8> {
        format!("{ENVELOPE_START}{inner}{ENVELOPE_END}").into_bytes()
    }

    #[test]
    fn a_wait_that_timed_out_has_no_update_set() {
        assert_eq!(parse_body("h", &reply("")).expect("decodes"), None);
    }

    #[test]
    fn every_filter_set_entry_and_every_op_is_read() {
        let body = reply(
            r#"<returnval><version>7</version><truncated>true</truncated>
            <filterSet><filter type="PropertyFilter">f1</filter>
              <objectSet><kind>enter</kind><obj type="VirtualMachine">vm-1</obj>
                <changeSet><name>name</name><op>assign</op><val xsi:type="xsd:string">a</val></changeSet>
                <changeSet><name>snapshot</name><op>assign</op></changeSet>
                <missingSet><path>guest.ipAddress</path><fault><fault xsi:type="NoPermission"></fault></fault></missingSet>
              </objectSet>
            </filterSet>
            <filterSet><filter type="PropertyFilter">f1</filter>
              <objectSet><kind>modify</kind><obj type="VirtualMachine">vm-1</obj>
                <changeSet><name>config.hardware.device[2000]</name><op>remove</op></changeSet>
                <changeSet><name>x</name><op>indirectRemove</op></changeSet>
                <changeSet><name>y</name><op>add</op><val xsi:type="xsd:int">3</val></changeSet>
              </objectSet>
              <objectSet><kind>leave</kind><obj type="VirtualMachine">vm-2</obj></objectSet>
              <missingSet><obj type="ContainerView">session[1]v</obj><fault><fault xsi:type="ManagedObjectNotFound"></fault></fault></missingSet>
            </filterSet></returnval>"#,
        );
        let set = parse_body("h", &body).expect("decodes").expect("a set");
        assert_eq!(set.version, "7");
        assert!(set.truncated);
        assert_eq!(set.objects.len(), 3);
        let enter = &set.objects[0];
        assert_eq!(enter.kind, UpdateKind::Enter);
        assert_eq!(enter.changes[0].val, Some(Value::from("a")));
        assert_eq!(enter.changes[1].val, None, "assign without val: unset");
        assert_eq!(
            enter.missing,
            [("guest.ipAddress".to_string(), "NoPermission".to_string())]
        );
        let modify = &set.objects[1];
        let ops: Vec<ChangeOp> = modify.changes.iter().map(|c| c.op).collect();
        assert_eq!(
            ops,
            [ChangeOp::Remove, ChangeOp::IndirectRemove, ChangeOp::Add]
        );
        assert_eq!(modify.changes[2].val, Some(Value::from(3)));
        assert_eq!(set.objects[2].kind, UpdateKind::Leave);
        assert_eq!(set.missing_objects.len(), 1);
    }

    #[test]
    fn a_fault_is_an_error_with_its_name() {
        let body = r#"<?xml version="1.0"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>bad version</faultstring><detail><InvalidCollectorVersionFault xmlns="urn:vim25" xsi:type="InvalidCollectorVersion"></InvalidCollectorVersionFault></detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>"#;
        let err = parse_body("h", body.as_bytes()).expect_err("a fault");
        assert_eq!(err.fault_name(), Some("InvalidCollectorVersion"), "{err}");
    }
}
