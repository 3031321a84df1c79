//! The vim25 type table: for every data object type, its base type and its
//! fields in wire order, each with its kind and whether it is an array.
//!
//! vim25 XML names the type of a property value (`xsi:type`) but not of the
//! fields nested inside it, and a one-element array looks exactly like a
//! scalar. Both decoder and encoder therefore need the schema. The table is
//! generated from govmomi's `vim25/types` by `scripts/gen-vim25-schema.sh`
//! and compiled in; it is parsed once, on first use.

use std::collections::HashMap;
use std::sync::OnceLock;

const TABLE: &str = include_str!("vim25.types");

/// What a field or value holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind<'s> {
    String,
    Int,
    Long,
    Short,
    Byte,
    Float,
    Double,
    Boolean,
    DateTime,
    Base64,
    /// Any type: the element itself must carry `xsi:type`.
    Any,
    ManagedObjectReference,
    /// A vim25 data object type (possibly a base type of a polymorphic field),
    /// or a type the table does not know, decoded by shape.
    Data(&'s str),
}

impl<'s> Kind<'s> {
    /// Maps an xsd or vim25 type name (without namespace prefix) to a kind.
    pub fn from_name(name: &'s str) -> Kind<'s> {
        match name {
            "string" | "anyURI" | "ID" | "IDREF" | "NCName" | "QName" => Kind::String,
            "int" | "unsignedShort" => Kind::Int,
            "long" | "unsignedInt" | "integer" | "nonNegativeInteger" => Kind::Long,
            "short" | "unsignedByte" => Kind::Short,
            "byte" => Kind::Byte,
            "float" => Kind::Float,
            "double" | "decimal" => Kind::Double,
            "boolean" => Kind::Boolean,
            "dateTime" => Kind::DateTime,
            "base64Binary" => Kind::Base64,
            "anyType" => Kind::Any,
            "ManagedObjectReference" => Kind::ManagedObjectReference,
            other => Kind::Data(other),
        }
    }

    pub fn is_scalar(self) -> bool {
        !matches!(
            self,
            Kind::Any | Kind::ManagedObjectReference | Kind::Data(_)
        )
    }
}

/// One field of a data object.
#[derive(Debug, Clone, Copy)]
pub struct Field<'s> {
    pub name: &'s str,
    pub kind: Kind<'s>,
    pub array: bool,
}

/// A data object type with its inherited fields flattened in, base first,
/// which is the order XML Schema extension puts them on the wire.
#[derive(Debug)]
pub struct TypeDef<'s> {
    pub name: &'s str,
    pub base: Option<&'s str>,
    pub fields: Vec<Field<'s>>,
}

impl<'s> TypeDef<'s> {
    pub fn field(&self, name: &str) -> Option<Field<'s>> {
        self.fields.iter().find(|f| f.name == name).copied()
    }

    /// For `ArrayOfXxx`: the kind of its items.
    pub fn array_item(&self) -> Option<Kind<'s>> {
        if !self.name.starts_with("ArrayOf") {
            return None;
        }
        match self.fields.as_slice() {
            [only] if only.array => Some(only.kind),
            _ => None,
        }
    }
}

/// The whole vim25 schema.
pub struct Schema {
    types: HashMap<&'static str, TypeDef<'static>>,
}

impl Schema {
    /// The compiled-in schema, parsed on first use (a few milliseconds).
    pub fn vim25() -> &'static Schema {
        static SCHEMA: OnceLock<Schema> = OnceLock::new();
        SCHEMA.get_or_init(|| Schema::parse(TABLE))
    }

    fn parse(table: &'static str) -> Schema {
        let mut own: HashMap<&'static str, (Option<&'static str>, Vec<Field<'static>>)> =
            HashMap::new();
        for line in table.lines() {
            let mut words = line.split(' ');
            let (Some(name), Some(base)) = (words.next(), words.next()) else {
                continue;
            };
            let fields = words
                .filter_map(|w| {
                    let (name, kind) = w.split_once(':')?;
                    let (kind, array) = match kind.strip_suffix("[]") {
                        Some(k) => (k, true),
                        None => (kind, false),
                    };
                    Some(Field {
                        name,
                        kind: Kind::from_name(kind),
                        array,
                    })
                })
                .collect();
            let base = (base != "-").then_some(base);
            own.insert(name, (base, fields));
        }

        let mut types = HashMap::with_capacity(own.len());
        for (&name, (base, _)) in &own {
            let mut chain = vec![name];
            let mut next = *base;
            while let Some(b) = next {
                if chain.contains(&b) {
                    break;
                }
                chain.push(b);
                next = own.get(b).and_then(|(base, _)| *base);
            }
            let fields = chain
                .iter()
                .rev()
                .filter_map(|t| own.get(t))
                .flat_map(|(_, f)| f.iter().copied())
                .collect();
            types.insert(
                name,
                TypeDef {
                    name,
                    base: *base,
                    fields,
                },
            );
        }
        Schema { types }
    }

    pub fn get(&self, name: &str) -> Option<&TypeDef<'static>> {
        self.types.get(name)
    }

    /// Whether `derived` is `base` or extends it.
    pub fn is_a(&self, derived: &str, base: &str) -> bool {
        let mut current = Some(derived);
        while let Some(name) = current {
            if name == base {
                return true;
            }
            current = self.get(name).and_then(|t| t.base);
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_fields_have_their_schema_kinds() {
        let schema = Schema::vim25();
        let disk = schema.get("GuestDiskInfo").expect("GuestDiskInfo");
        assert_eq!(disk.field("capacity").map(|f| f.kind), Some(Kind::Long));
        let nic = schema.get("GuestNicInfo").expect("GuestNicInfo");
        let ip = nic.field("ipAddress").expect("ipAddress");
        assert!(ip.array);
        assert_eq!(ip.kind, Kind::String);
    }

    #[test]
    fn inherited_fields_come_first() {
        let schema = Schema::vim25();
        let disk = schema.get("VirtualDisk").expect("VirtualDisk");
        assert_eq!(disk.fields[0].name, "key");
        assert!(disk.field("capacityInKB").is_some());
        assert!(schema.is_a("VirtualDisk", "VirtualDevice"));
        assert!(!schema.is_a("VirtualDevice", "VirtualDisk"));
    }

    #[test]
    fn array_types_know_their_items() {
        let schema = Schema::vim25();
        let t = schema
            .get("ArrayOfGuestDiskInfo")
            .expect("ArrayOfGuestDiskInfo");
        assert_eq!(t.array_item(), Some(Kind::Data("GuestDiskInfo")));
    }

    #[test]
    fn request_types_list_their_arguments_in_order() {
        let schema = Schema::vim25();
        let req = schema.get("RetrievePropertiesEx").expect("request type");
        let names: Vec<_> = req.fields.iter().map(|f| f.name).collect();
        assert_eq!(names, ["_this", "specSet", "options"]);
    }
}
