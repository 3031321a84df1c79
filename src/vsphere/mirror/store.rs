//! The mirrored objects, and how update sets change them.
//!
//! Applying follows the programming guide's model: updates are patches, may
//! be redundant, and applying one twice changes nothing. Anything the store
//! cannot place (a modify of an object it never saw, a keyed path into a
//! value that is not a list) is a [`Doubt`]: the caller rebuilds the mirror
//! from a fresh initial load rather than serve a guess.

use indexmap::IndexMap;
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::paths::{PropertySet, family_of, members};
use super::updates::{Change, ChangeOp, ObjectUpdate, UpdateKind, UpdateSet};
use crate::vsphere::collector::{MissingProperty, ObjectContent};
use crate::vsphere::moref::MoRef;

/// Why an update set could not be applied.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct Doubt(pub String);

struct Entry {
    /// By the slots of the object's family (see [`PropertySet::slot`]);
    /// `None` is unset.
    props: Vec<Option<Value>>,
    /// Slots the server could not read, with the fault's type name.
    missing: Vec<(usize, String)>,
}

/// Every mirrored object, in the order the server first reported them
/// (the order a direct retrieval through a view gives).
pub struct Store {
    set: Arc<PropertySet>,
    objects: IndexMap<MoRef, Entry>,
    /// Concrete type → name → objects, for lookups by name.
    names: HashMap<String, HashMap<String, Vec<MoRef>>>,
}

const NAME_SLOT: usize = 0;

impl Store {
    pub fn new(set: Arc<PropertySet>) -> Store {
        Store {
            set,
            objects: IndexMap::new(),
            names: HashMap::new(),
        }
    }

    pub fn property_set(&self) -> &Arc<PropertySet> {
        &self.set
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// Applies one update set as one unit; returns how many object updates
    /// it held.
    pub fn apply(&mut self, set: &UpdateSet) -> Result<usize, Doubt> {
        if let Some(obj) = set.missing_objects.first() {
            return Err(Doubt(format!("the filter lost sight of {obj}")));
        }
        // vcsim moves an object as an enter followed by a leave of the same
        // object in one set; a server reporting net changes never sends
        // both, so the enter wins.
        let entered: HashSet<&MoRef> = set
            .objects
            .iter()
            .filter(|u| u.kind == UpdateKind::Enter)
            .map(|u| &u.obj)
            .collect();
        for update in &set.objects {
            if update.kind == UpdateKind::Leave && entered.contains(&update.obj) {
                continue;
            }
            self.apply_one(update)?;
        }
        Ok(set.objects.len())
    }

    fn apply_one(&mut self, update: &ObjectUpdate) -> Result<(), Doubt> {
        let obj = &update.obj;
        let slots = self.set.slot_count(&obj.kind);
        if slots == 0 {
            // A type the filter does not ask for (it came in through the
            // view); nothing of it is kept.
            return Ok(());
        }
        match update.kind {
            UpdateKind::Leave => {
                if let Some(entry) = self.objects.shift_remove(obj) {
                    self.rename(obj, name_of(&entry), None);
                }
                Ok(())
            }
            UpdateKind::Enter => {
                let set = self.set.clone();
                // An enter carries every path: it replaces what was kept,
                // in the place it had.
                let mut entry = Entry {
                    props: vec![None; slots],
                    missing: Vec::new(),
                };
                let outcome = fill(&set, obj, &mut entry, update);
                let old_name = self.objects.get(obj).and_then(name_of);
                let new_name = name_of(&entry);
                self.objects.insert(obj.clone(), entry);
                self.rename(obj, old_name, new_name);
                outcome
            }
            UpdateKind::Modify => {
                let set = self.set.clone();
                let Some(entry) = self.objects.get_mut(obj) else {
                    return Err(Doubt(format!("a change of {obj}, which was never seen")));
                };
                let old_name = name_of(entry);
                let outcome = fill(&set, obj, entry, update);
                let new_name = name_of(entry);
                self.rename(obj, old_name, new_name);
                outcome
            }
        }
    }

    fn rename(&mut self, obj: &MoRef, old: Option<String>, new: Option<String>) {
        if old == new {
            return;
        }
        if let Some(old) = old {
            self.unindex_name(obj, &old);
        }
        if let Some(name) = new {
            self.names
                .entry(obj.kind.clone())
                .or_default()
                .entry(name)
                .or_default()
                .push(obj.clone());
        }
    }

    fn unindex_name(&mut self, obj: &MoRef, name: &str) {
        let Some(by_name) = self.names.get_mut(&obj.kind) else {
            return;
        };
        if let Some(refs) = by_name.get_mut(name) {
            refs.retain(|r| r != obj);
            if refs.is_empty() {
                by_name.remove(name);
            }
        }
    }

    // ---- reads ----

    /// An object's row with `paths` (which the caller checked are held);
    /// `None` for an object the mirror does not have.
    pub fn row(&self, obj: &MoRef, paths: &[String]) -> Option<ObjectContent> {
        let entry = self.objects.get(obj)?;
        Some(self.row_of(obj, entry, paths))
    }

    fn row_of(&self, obj: &MoRef, entry: &Entry, paths: &[String]) -> ObjectContent {
        let mut props = Map::with_capacity(paths.len());
        let mut missing = Vec::new();
        for path in paths {
            let Some(slot) = self.set.slot(&obj.kind, path) else {
                continue;
            };
            if let Some(value) = &entry.props[slot] {
                props.insert(path.clone(), value.clone());
            } else if let Some((_, fault)) = entry.missing.iter().find(|(s, _)| *s == slot) {
                missing.push(MissingProperty {
                    path: path.clone(),
                    fault: fault.clone(),
                });
            }
        }
        ObjectContent {
            obj: obj.clone(),
            props,
            missing,
        }
    }

    /// Every object of a family, in the server's order.
    pub fn discover(&self, family: &str, paths: &[String]) -> Vec<ObjectContent> {
        let Some(types) = members(family) else {
            return Vec::new();
        };
        self.objects
            .iter()
            .filter(|(obj, _)| types.contains(&obj.kind.as_str()))
            .map(|(obj, entry)| self.row_of(obj, entry, paths))
            .collect()
    }

    /// The first object of a family whose `path` is `value`.
    pub fn find(&self, family: &str, path: &str, value: &Value) -> Option<MoRef> {
        let types = members(family)?;
        if path == "name" {
            let name = value.as_str()?;
            return types
                .iter()
                .filter_map(|t| self.names.get(*t)?.get(name))
                .flatten()
                .min_by_key(|r| self.objects.get_index_of(*r))
                .cloned();
        }
        self.objects
            .iter()
            .filter(|(obj, _)| types.contains(&obj.kind.as_str()))
            .find(|(obj, entry)| {
                self.set
                    .slot(&obj.kind, path)
                    .and_then(|s| entry.props[s].as_ref())
                    == Some(value)
            })
            .map(|(obj, _)| obj.clone())
    }

    /// Whether the mirror has this object.
    pub fn contains(&self, obj: &MoRef) -> bool {
        self.objects.contains_key(obj)
    }
}

/// An update's changes and missing paths, applied to one entry.
fn fill(
    set: &PropertySet,
    obj: &MoRef,
    entry: &mut Entry,
    update: &ObjectUpdate,
) -> Result<(), Doubt> {
    for change in &update.changes {
        apply_change(set, obj, entry, change)?;
    }
    for (path, fault) in &update.missing {
        if let Some(slot) = set.slot(&obj.kind, path) {
            entry.props[slot] = None;
            entry.missing.retain(|(s, _)| *s != slot);
            entry.missing.push((slot, fault.clone()));
        }
    }
    Ok(())
}

fn apply_change(
    set: &PropertySet,
    obj: &MoRef,
    entry: &mut Entry,
    change: &Change,
) -> Result<(), Doubt> {
    let Some((slot, rest)) = locate(set, &obj.kind, &change.name) else {
        // A path the filter did not ask for: nothing here depends on it.
        return Ok(());
    };
    entry.missing.retain(|(s, _)| *s != slot);
    let doubt = |why: &str| Doubt(format!("{obj} {}: {why}", change.name));
    let segments = parse_segments(rest).ok_or_else(|| doubt("a path that cannot be read"))?;
    let value = &mut entry.props[slot];
    let Some((last, parents)) = segments.split_last() else {
        return apply_at_slot(value, change).map_err(|w| doubt(&w));
    };
    let mut target = value
        .as_mut()
        .ok_or_else(|| doubt("a change inside an unset property"))?;
    for segment in parents {
        target = step(target, segment).ok_or_else(|| doubt("a change inside a missing value"))?;
    }
    apply_at_segment(target, last, change).map_err(|w| doubt(&w))
}

/// The slot a change's path falls in, and the rest of the path below it
/// (`config.hardware.device[2000].backing` under `config.hardware.device`).
fn locate<'n>(set: &PropertySet, concrete: &str, name: &'n str) -> Option<(usize, &'n str)> {
    if let Some(slot) = set.slot(concrete, name) {
        return Some((slot, ""));
    }
    let family = family_of(concrete)?;
    set.paths(family)
        .iter()
        .filter(|p| {
            name.strip_prefix(p.as_str())
                .is_some_and(|r| r.starts_with('.') || r.starts_with('['))
        })
        .max_by_key(|p| p.len())
        .and_then(|p| Some((set.slot(concrete, p)?, &name[p.len()..])))
}

fn name_of(entry: &Entry) -> Option<String> {
    entry
        .props
        .get(NAME_SLOT)?
        .as_ref()?
        .as_str()
        .map(str::to_string)
}

#[derive(Debug, PartialEq)]
enum Segment {
    Field(String),
    /// `[2000]` or `["key val"]`: the element of a list whose `key` is this.
    Key(Value),
}

/// `.a.b[3]["x y"]` into its segments; `None` if it cannot be read.
fn parse_segments(mut rest: &str) -> Option<Vec<Segment>> {
    let mut out = Vec::new();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            if end == 0 {
                return None;
            }
            out.push(Segment::Field(r[..end].to_string()));
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix("[\"") {
            let mut key = String::new();
            let mut chars = r.char_indices();
            let end = loop {
                match chars.next()? {
                    (_, '\\') => key.push(chars.next()?.1),
                    (i, '"') => break i,
                    (_, c) => key.push(c),
                }
            };
            rest = r[end + 1..].strip_prefix(']')?;
            out.push(Segment::Key(Value::String(key)));
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            let key = &r[..end];
            let key = key
                .parse::<i64>()
                .map(Value::from)
                .unwrap_or_else(|_| Value::from(key));
            out.push(Segment::Key(key));
            rest = &r[end + 1..];
        } else {
            return None;
        }
    }
    Some(out)
}

fn key_matches(element: &Value, key: &Value) -> bool {
    match (element.get("key"), key) {
        (Some(k), key) if k == key => true,
        // A key written as text in the path, a number in the value, or
        // the other way round.
        (Some(Value::Number(n)), Value::String(s)) => n.to_string() == *s,
        (Some(Value::String(s)), Value::Number(n)) => n.to_string() == *s,
        _ => false,
    }
}

fn step<'v>(value: &'v mut Value, segment: &Segment) -> Option<&'v mut Value> {
    match segment {
        Segment::Field(f) => value.as_object_mut()?.get_mut(f),
        Segment::Key(k) => value.as_array_mut()?.iter_mut().find(|e| key_matches(e, k)),
    }
}

/// A change to a whole held path.
fn apply_at_slot(value: &mut Option<Value>, change: &Change) -> Result<(), String> {
    match change.op {
        ChangeOp::Assign => *value = change.val.clone(),
        ChangeOp::IndirectRemove => *value = None,
        ChangeOp::Remove => match (value.as_mut(), &change.val) {
            (Some(Value::Array(items)), Some(gone)) => items.retain(|i| i != gone),
            _ => *value = None,
        },
        ChangeOp::Add => {
            let Some(added) = change.val.clone() else {
                return Err("add without a value".into());
            };
            match value {
                None => *value = Some(Value::Array(vec![added])),
                Some(Value::Array(items)) => {
                    if !items.contains(&added) {
                        items.push(added);
                    }
                }
                Some(_) => return Err("add to a value that is not a list".into()),
            }
        }
    }
    Ok(())
}

/// A change below a held path: a field of a data object, or an element
/// of a list by its key.
fn apply_at_segment(parent: &mut Value, last: &Segment, change: &Change) -> Result<(), String> {
    let removing = matches!(change.op, ChangeOp::Remove | ChangeOp::IndirectRemove);
    match last {
        Segment::Field(field) => {
            let object = parent
                .as_object_mut()
                .ok_or("a field of a value that is not an object")?;
            match (&change.op, &change.val) {
                (_, _) if removing => {
                    object.shift_remove(field);
                }
                (ChangeOp::Add, Some(added)) => match object.get_mut(field) {
                    Some(Value::Array(items)) => items.push(added.clone()),
                    None => {
                        object.insert(field.clone(), Value::Array(vec![added.clone()]));
                    }
                    Some(_) => return Err("add to a value that is not a list".into()),
                },
                (_, Some(v)) => {
                    object.insert(field.clone(), v.clone());
                }
                (_, None) => {
                    object.shift_remove(field);
                }
            }
        }
        Segment::Key(key) => {
            let items = parent
                .as_array_mut()
                .ok_or("a keyed element of a value that is not a list")?;
            let at = items.iter().position(|e| key_matches(e, key));
            match (at, &change.val) {
                (Some(i), _) if removing => {
                    items.remove(i);
                }
                (None, _) if removing => {}
                (Some(i), Some(v)) => items[i] = v.clone(),
                (None, Some(v)) => items.push(v.clone()),
                (Some(i), None) => {
                    items.remove(i);
                }
                (None, None) => {}
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn set() -> Arc<PropertySet> {
        Arc::new(PropertySet::new(BTreeMap::from([(
            "VirtualMachine".to_string(),
            vec![
                "runtime.powerState".to_string(),
                "config.hardware.device".to_string(),
                "snapshot".to_string(),
                "tags".to_string(),
            ],
        )])))
    }

    fn vm(id: &str) -> MoRef {
        MoRef::new("VirtualMachine", id)
    }

    fn change(name: &str, op: ChangeOp, val: Option<Value>) -> Change {
        Change {
            name: name.into(),
            op,
            val,
        }
    }

    fn assign(name: &str, val: Value) -> Change {
        change(name, ChangeOp::Assign, Some(val))
    }

    fn update(kind: UpdateKind, id: &str, changes: Vec<Change>) -> ObjectUpdate {
        ObjectUpdate {
            kind,
            obj: vm(id),
            changes,
            missing: Vec::new(),
        }
    }

    fn one_set(objects: Vec<ObjectUpdate>) -> UpdateSet {
        UpdateSet {
            version: "1".into(),
            truncated: false,
            objects,
            missing_objects: Vec::new(),
        }
    }

    fn paths(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn loaded() -> Store {
        let mut store = Store::new(set());
        store
            .apply(&one_set(vec![update(
                UpdateKind::Enter,
                "vm-1",
                vec![
                    assign("name", json!("a")),
                    assign("runtime.powerState", json!("poweredOn")),
                    assign(
                        "config.hardware.device",
                        json!([{"key": 2000, "label": "disk 1"}, {"key": 4000, "label": "nic 1"}]),
                    ),
                    change("snapshot", ChangeOp::Assign, None),
                ],
            )]))
            .expect("applies");
        store
    }

    #[test]
    fn assign_without_a_value_is_unset_and_rows_follow_the_paths_asked() {
        let store = loaded();
        let row = store
            .row(
                &vm("vm-1"),
                &paths(&["snapshot", "runtime.powerState", "name"]),
            )
            .expect("a row");
        assert_eq!(
            Value::Object(row.props),
            json!({"runtime.powerState": "poweredOn", "name": "a"})
        );
    }

    #[test]
    fn keyed_add_remove_assign_and_indirect_remove() {
        let mut store = loaded();
        store
            .apply(&one_set(vec![update(
                UpdateKind::Modify,
                "vm-1",
                vec![
                    change("config.hardware.device[2000]", ChangeOp::Remove, None),
                    change(
                        "config.hardware.device[2001]",
                        ChangeOp::Add,
                        Some(json!({"key": 2001, "label": "disk 2"})),
                    ),
                    assign("config.hardware.device[4000].label", json!("nic one")),
                    change("tags", ChangeOp::Add, Some(json!("gold"))),
                    change("tags", ChangeOp::Add, Some(json!("gold"))),
                ],
            )]))
            .expect("applies");
        let row = store
            .row(&vm("vm-1"), &paths(&["config.hardware.device", "tags"]))
            .expect("row");
        assert_eq!(
            row.props["config.hardware.device"],
            json!([{"key": 4000, "label": "nic one"}, {"key": 2001, "label": "disk 2"}])
        );
        assert_eq!(row.props["tags"], json!(["gold"]), "an add is idempotent");
        store
            .apply(&one_set(vec![update(
                UpdateKind::Modify,
                "vm-1",
                vec![change(
                    "config.hardware.device",
                    ChangeOp::IndirectRemove,
                    None,
                )],
            )]))
            .expect("applies");
        let row = store
            .row(&vm("vm-1"), &paths(&["config.hardware.device"]))
            .expect("row");
        assert!(row.props.is_empty());
    }

    #[test]
    fn a_string_key_in_quotes() {
        assert_eq!(
            parse_segments(r#"["key \"val\""].x"#),
            Some(vec![
                Segment::Key(json!("key \"val\"")),
                Segment::Field("x".into())
            ])
        );
        assert_eq!(parse_segments("[unterminated"), None);
        assert_eq!(parse_segments("x"), None);
    }

    #[test]
    fn enter_and_leave_of_one_object_in_one_set_keeps_it() {
        let mut store = loaded();
        store
            .apply(&one_set(vec![
                update(
                    UpdateKind::Enter,
                    "vm-1",
                    vec![assign("name", json!("moved"))],
                ),
                update(UpdateKind::Leave, "vm-1", vec![]),
            ]))
            .expect("applies");
        assert_eq!(
            store.find("VirtualMachine", "name", &json!("moved")),
            Some(vm("vm-1"))
        );
        assert_eq!(store.find("VirtualMachine", "name", &json!("a")), None);
        store
            .apply(&one_set(vec![update(UpdateKind::Leave, "vm-1", vec![])]))
            .expect("applies");
        assert!(store.is_empty());
        assert_eq!(store.find("VirtualMachine", "name", &json!("moved")), None);
    }

    #[test]
    fn applying_twice_changes_nothing() {
        let mut store = loaded();
        let rename = one_set(vec![update(
            UpdateKind::Modify,
            "vm-1",
            vec![assign("name", json!("b"))],
        )]);
        store.apply(&rename).expect("applies");
        store.apply(&rename).expect("applies again");
        assert_eq!(
            store.find("VirtualMachine", "name", &json!("b")),
            Some(vm("vm-1"))
        );
        let entries: usize = store.names.values().map(HashMap::len).sum();
        assert_eq!(entries, 1, "one name entry: {:?}", store.names);
    }

    #[test]
    fn missing_set_is_reported_as_missing_and_cleared_by_a_value() {
        let mut store = loaded();
        let mut denied = update(UpdateKind::Modify, "vm-1", vec![]);
        denied.missing = vec![("runtime.powerState".into(), "NoPermission".into())];
        store.apply(&one_set(vec![denied])).expect("applies");
        let row = store
            .row(&vm("vm-1"), &paths(&["runtime.powerState"]))
            .expect("row");
        assert_eq!(row.missing[0].fault, "NoPermission");
        assert!(row.props.is_empty());
        store
            .apply(&one_set(vec![update(
                UpdateKind::Modify,
                "vm-1",
                vec![assign("runtime.powerState", json!("poweredOff"))],
            )]))
            .expect("applies");
        let row = store
            .row(&vm("vm-1"), &paths(&["runtime.powerState"]))
            .expect("row");
        assert!(row.missing.is_empty());
        assert_eq!(row.props["runtime.powerState"], "poweredOff");
    }

    #[test]
    fn what_cannot_be_placed_is_a_doubt() {
        let mut store = loaded();
        let unknown = one_set(vec![update(
            UpdateKind::Modify,
            "vm-9",
            vec![assign("name", json!("x"))],
        )]);
        assert!(store.apply(&unknown).is_err());
        let inside_scalar = one_set(vec![update(
            UpdateKind::Modify,
            "vm-1",
            vec![assign("runtime.powerState[3]", json!("x"))],
        )]);
        assert!(store.apply(&inside_scalar).is_err());
        let mut lost = one_set(vec![]);
        lost.missing_objects = vec![MoRef::new("ContainerView", "v")];
        assert!(store.apply(&lost).is_err());
    }

    #[test]
    fn discover_keeps_the_order_objects_came_in() {
        let mut store = loaded();
        store
            .apply(&one_set(vec![
                update(UpdateKind::Enter, "vm-0", vec![assign("name", json!("z"))]),
                update(
                    UpdateKind::Modify,
                    "vm-1",
                    vec![assign("name", json!("a2"))],
                ),
            ]))
            .expect("applies");
        let names: Vec<Value> = store
            .discover("VirtualMachine", &paths(&["name"]))
            .into_iter()
            .map(|o| o.props["name"].clone())
            .collect();
        assert_eq!(names, [json!("a2"), json!("z")]);
    }
}
