//! Which objects and properties the mirror holds.
//!
//! The mirror serves requests for a *family* of managed object types: a
//! request for `Network` reads networks and distributed port groups alike,
//! as a container view of type `Network` does. Other kinds are always read
//! directly.
//!
//! Per family it holds `name`, the paths pinned in the configuration, and
//! the paths requests have read directly often enough ("promoted"), up to a
//! cap; excluded paths and volatile ones (which change every 20 s on
//! vCenter for every object, see [`super::volatile`]) never.

use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use crate::vsphere::moref::MoRef;

/// The families the mirror serves, with their concrete types.
pub const FAMILIES: &[(&str, &[&str])] = &[
    ("VirtualMachine", &["VirtualMachine"]),
    ("HostSystem", &["HostSystem"]),
    ("Datastore", &["Datastore"]),
    ("Datacenter", &["Datacenter"]),
    ("ClusterComputeResource", &["ClusterComputeResource"]),
    ("ResourcePool", &["ResourcePool", "VirtualApp"]),
    (
        "Network",
        &["Network", "DistributedVirtualPortgroup", "OpaqueNetwork"],
    ),
];

/// The family a concrete type belongs to.
pub fn family_of(concrete: &str) -> Option<&'static str> {
    FAMILIES
        .iter()
        .find(|(_, members)| members.contains(&concrete))
        .map(|(family, _)| *family)
}

/// The concrete types of a family; `None` for a kind the mirror does not
/// serve.
pub fn members(family: &str) -> Option<&'static [&'static str]> {
    FAMILIES
        .iter()
        .find(|(f, _)| *f == family)
        .map(|(_, members)| *members)
}

/// The paths held per family, `name` first. Fixed for the life of one
/// mirror build: a change of paths is a new build.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PropertySet {
    families: BTreeMap<String, FamilyPaths>,
}

#[derive(Debug, Clone, PartialEq, Default)]
struct FamilyPaths {
    paths: Vec<String>,
    slots: HashMap<String, usize>,
}

impl PropertySet {
    pub fn new(by_family: BTreeMap<String, Vec<String>>) -> PropertySet {
        let families = by_family
            .into_iter()
            .filter(|(family, _)| members(family).is_some())
            .map(|(family, mut paths)| {
                paths.retain(|p| p != "name");
                paths.insert(0, "name".to_string());
                paths.dedup();
                let slots = paths
                    .iter()
                    .enumerate()
                    .map(|(i, p)| (p.clone(), i))
                    .collect();
                (family, FamilyPaths { paths, slots })
            })
            .collect();
        PropertySet { families }
    }

    pub fn paths(&self, family: &str) -> &[String] {
        self.families
            .get(family)
            .map_or(&[][..], |f| f.paths.as_slice())
    }

    /// Where a path of a concrete type's objects is kept.
    pub fn slot(&self, concrete: &str, path: &str) -> Option<usize> {
        let family = family_of(concrete)?;
        self.families.get(family)?.slots.get(path).copied()
    }

    pub fn slot_count(&self, concrete: &str) -> usize {
        family_of(concrete).map_or(0, |f| self.paths(f).len())
    }

    /// Whether every one of `paths` is held for `family`.
    pub fn holds(&self, family: &str, paths: &[String]) -> bool {
        self.families
            .get(family)
            .is_some_and(|f| paths.iter().all(|p| f.slots.contains_key(p)))
    }

    pub fn path_count(&self) -> usize {
        self.families.values().map(|f| f.paths.len()).sum()
    }

    /// The paths of a type's objects as `name` plus the rest, for status.
    pub fn to_json(&self) -> Value {
        self.families
            .iter()
            .map(|(family, f)| (family.clone(), json!(f.paths)))
            .collect::<serde_json::Map<_, _>>()
            .into()
    }

    /// The filter spec over a recursive container view of everything: one
    /// PropertySpec per concrete type, with its family's paths.
    pub fn filter_spec(&self, view: &MoRef) -> Value {
        let prop_set: Vec<Value> = self
            .families
            .iter()
            .flat_map(|(family, f)| {
                members(family)
                    .unwrap_or_default()
                    .iter()
                    .map(move |t| json!({"type": t, "pathSet": f.paths}))
            })
            .collect();
        json!({
            "propSet": prop_set,
            "objectSet": [{
                "obj": view.to_json(),
                "skip": true,
                "selectSet": [{"_type": "TraversalSpec", "name": "traverseView", "type": view.kind, "path": "view", "skip": false}]
            }]
        })
    }
}

/// What decides the paths: the configuration, and the reads seen.
#[derive(Debug, Clone, PartialEq)]
pub struct PathPolicy {
    /// `(family, path)` always held.
    pub pinned: Vec<(String, String)>,
    /// Never held: `path` or `family:path`; a trailing `*` matches a prefix.
    pub excluded: Vec<String>,
    /// Served by the volatile reader instead: path prefixes.
    pub volatile: Vec<String>,
    /// Direct reads of a path after which it is held.
    pub promote_after: u32,
    /// Paths held per family at most.
    pub max_paths_per_family: usize,
}

impl Default for PathPolicy {
    fn default() -> Self {
        PathPolicy {
            pinned: Vec::new(),
            excluded: Vec::new(),
            volatile: vec!["summary.quickStats".into()],
            promote_after: 3,
            max_paths_per_family: 64,
        }
    }
}

fn pattern_matches(pattern: &str, path: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => path.starts_with(prefix),
        None => pattern == path,
    }
}

impl PathPolicy {
    /// Whether a path is volatile: equal to a prefix or below it.
    pub fn is_volatile(&self, path: &str) -> bool {
        self.volatile.iter().any(|v| {
            path == v
                || path
                    .strip_prefix(v.as_str())
                    .is_some_and(|r| r.starts_with('.'))
        })
    }

    pub fn is_excluded(&self, family: &str, path: &str) -> bool {
        self.excluded.iter().any(|e| match e.split_once(':') {
            Some((f, p)) => f == family && pattern_matches(p, path),
            None => pattern_matches(e, path),
        })
    }

    fn may_hold(&self, family: &str, path: &str) -> bool {
        !self.is_volatile(path) && !self.is_excluded(family, path)
    }
}

/// The paths held and the reads that may add to them.
pub struct Demand {
    policy: PathPolicy,
    state: Mutex<DemandState>,
}

#[derive(Default)]
struct DemandState {
    held: BTreeMap<String, Vec<String>>,
    reads: HashMap<(String, String), u32>,
    /// Paths the server refused in a filter: never asked for again.
    refused: Vec<(String, String)>,
}

impl Demand {
    pub fn new(policy: PathPolicy) -> Demand {
        let mut held: BTreeMap<String, Vec<String>> = FAMILIES
            .iter()
            .map(|(f, _)| (f.to_string(), vec!["name".to_string()]))
            .collect();
        for (family, path) in &policy.pinned {
            if let Some(paths) = held.get_mut(family)
                && policy.may_hold(family, path)
                && !paths.contains(path)
            {
                paths.push(path.clone());
            }
        }
        Demand {
            policy,
            state: Mutex::new(DemandState {
                held,
                ..DemandState::default()
            }),
        }
    }

    pub fn policy(&self) -> &PathPolicy {
        &self.policy
    }

    /// The property set a build should use now.
    pub fn wanted(&self) -> PropertySet {
        let held = self
            .state
            .lock()
            .map(|s| s.held.clone())
            .unwrap_or_default();
        PropertySet::new(held)
    }

    /// Notes that `paths` of `family` were read directly, and did not fail.
    /// Returns whether that promoted a path (the mirror should be rebuilt).
    pub fn note_direct_read(&self, family: &str, paths: &[String]) -> bool {
        if members(family).is_none() {
            return false;
        }
        let Ok(mut state) = self.state.lock() else {
            return false;
        };
        let mut promoted = false;
        for path in paths {
            if !self.policy.may_hold(family, path)
                || state.refused.iter().any(|(f, p)| f == family && p == path)
                || state.held.get(family).is_some_and(|h| h.contains(path))
            {
                continue;
            }
            let count = state
                .reads
                .entry((family.to_string(), path.clone()))
                .or_default();
            *count += 1;
            if *count < self.policy.promote_after {
                continue;
            }
            let cap = self.policy.max_paths_per_family;
            if let Some(held) = state.held.get_mut(family)
                && held.len() < cap
            {
                held.push(path.clone());
                promoted = true;
            }
            state.reads.remove(&(family.to_string(), path.clone()));
        }
        promoted
    }

    /// The server refused a path in the filter (InvalidProperty): it is
    /// dropped and never held again. Returns whether it was held.
    pub fn refuse(&self, path: &str) -> bool {
        let Ok(mut state) = self.state.lock() else {
            return false;
        };
        let mut dropped = false;
        let families: Vec<String> = state.held.keys().cloned().collect();
        for family in families {
            if path == "name" {
                continue;
            }
            if let Some(held) = state.held.get_mut(&family)
                && let Some(i) = held.iter().position(|p| p == path)
            {
                held.remove(i);
                dropped = true;
            }
            state.refused.push((family, path.to_string()));
        }
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_promote_a_path_after_the_configured_count_up_to_the_cap() {
        let demand = Demand::new(PathPolicy {
            promote_after: 2,
            max_paths_per_family: 2,
            ..PathPolicy::default()
        });
        let p = |s: &str| vec![s.to_string()];
        assert!(!demand.note_direct_read("VirtualMachine", &p("runtime.powerState")));
        assert!(demand.note_direct_read("VirtualMachine", &p("runtime.powerState")));
        assert!(
            demand
                .wanted()
                .holds("VirtualMachine", &p("runtime.powerState"))
        );
        // The cap (name + one) is reached: nothing more is promoted.
        demand.note_direct_read("VirtualMachine", &p("config.uuid"));
        assert!(!demand.note_direct_read("VirtualMachine", &p("config.uuid")));
        // Volatile paths and kinds outside the families are never held.
        for _ in 0..3 {
            assert!(!demand.note_direct_read("HostSystem", &p("summary.quickStats.uptime")));
            assert!(!demand.note_direct_read("Alarm", &p("info.name")));
        }
    }

    #[test]
    fn pinned_excluded_and_refused_paths() {
        let demand = Demand::new(PathPolicy {
            pinned: vec![
                ("VirtualMachine".into(), "guest.ipAddress".into()),
                ("VirtualMachine".into(), "config.extraConfig".into()),
            ],
            excluded: vec!["VirtualMachine:config.extra*".into()],
            promote_after: 1,
            ..PathPolicy::default()
        });
        let wanted = demand.wanted();
        assert_eq!(
            wanted.paths("VirtualMachine"),
            ["name".to_string(), "guest.ipAddress".to_string()]
        );
        assert!(demand.refuse("guest.ipAddress"));
        assert!(!demand.note_direct_read("VirtualMachine", &["guest.ipAddress".to_string()]));
        assert_eq!(
            demand.wanted().paths("VirtualMachine"),
            ["name".to_string()]
        );
    }

    #[test]
    fn the_filter_names_every_concrete_type_of_a_family() {
        let set = PropertySet::new(BTreeMap::from([(
            "Network".to_string(),
            vec!["summary.accessible".to_string()],
        )]));
        let spec = set.filter_spec(&MoRef::new("ContainerView", "v"));
        let types: Vec<&str> = spec["propSet"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["type"].as_str())
            .collect();
        assert_eq!(
            types,
            ["Network", "DistributedVirtualPortgroup", "OpaqueNetwork"]
        );
        assert_eq!(
            set.slot("DistributedVirtualPortgroup", "summary.accessible"),
            Some(1)
        );
    }
}
