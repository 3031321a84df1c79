//! Property collection against a 2,000-VM simulator.

mod common;

use common::Simulator;
use std::collections::BTreeSet;
use std::ops::ControlFlow;
use std::sync::OnceLock;
use vpoller::vsphere::collector::{DEFAULT_PAGE_SIZE, filter_for_view};
use vpoller::vsphere::{Client, Error, MoRef};

/// One simulator for the suite: 1 standalone host and 1 cluster root pool,
/// 1,000 VMs each.
fn simulator() -> &'static Simulator {
    static SIM: OnceLock<Simulator> = OnceLock::new();
    SIM.get_or_init(|| {
        Simulator::start(&[
            "-standalone",
            "1",
            "-cluster",
            "1",
            "-host",
            "2",
            "-vm",
            "1000",
        ])
    })
}

/// A session per test: each test has its own runtime, and a session's
/// connections belong to the runtime that made them.
async fn session() -> Client {
    simulator().session().await
}

fn expected_names() -> BTreeSet<String> {
    (0..1000)
        .flat_map(|i| [format!("DC0_H0_VM{i}"), format!("DC0_C0_RP0_VM{i}")])
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn three_properties_of_every_vm_in_one_retrieval() {
    let session = &session().await;
    let view = session
        .container_view(None, &["VirtualMachine"])
        .await
        .expect("view");
    let paths = [
        "name",
        "runtime.powerState",
        "summary.quickStats.overallCpuUsage",
    ]
    .map(String::from);
    let calls_before = session.calls();
    let mut names = BTreeSet::new();
    let mut powered_on = 0;
    let count = session
        .retrieve(
            &filter_for_view(&view, "VirtualMachine", &paths),
            DEFAULT_PAGE_SIZE,
            |o| {
                names.insert(o.props["name"].as_str().expect("name").to_string());
                if o.props["runtime.powerState"] == "poweredOn" {
                    powered_on += 1;
                }
                assert!(
                    o.props["summary.quickStats.overallCpuUsage"].is_i64(),
                    "{:?}",
                    o.props
                );
                ControlFlow::Continue(())
            },
        )
        .await
        .expect("retrieve");
    assert_eq!(
        session.calls() - calls_before,
        1,
        "one RetrievePropertiesEx"
    );
    assert_eq!(count, 2000);
    assert_eq!(names, expected_names());
    assert_eq!(powered_on, 2000);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_shared_container_view_is_reused() {
    let session = &session().await;
    let a = session
        .container_view(None, &["HostSystem"])
        .await
        .expect("view");
    let calls = session.calls();
    let b = session
        .container_view(None, &["HostSystem"])
        .await
        .expect("view again");
    assert_eq!(a, b);
    assert_eq!(session.calls(), calls, "no round trip for a cached view");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_list_view_holds_just_the_chosen_objects() {
    let session = &session().await;
    let wanted = ["DC0_H0_VM7", "DC0_C0_RP0_VM993"];
    let mut refs = Vec::new();
    for name in wanted {
        let r = session
            .find("VirtualMachine", "name", &name.into())
            .await
            .expect("find")
            .unwrap_or_else(|| panic!("{name} exists"));
        refs.push(r);
    }
    let view = session.create_list_view(&refs).await.expect("list view");
    let paths = ["name".to_string()];
    let mut names = Vec::new();
    session
        .retrieve(
            &filter_for_view(&view, "VirtualMachine", &paths),
            100,
            |o| {
                names.push(o.props["name"].as_str().unwrap_or_default().to_string());
                ControlFlow::Continue(())
            },
        )
        .await
        .expect("retrieve over the list view");
    names.sort();
    assert_eq!(names, ["DC0_C0_RP0_VM993", "DC0_H0_VM7"]);
    session.destroy_view(&view).await.expect("destroy");

    // Following references is one call: the VMs' datastores, by name and URL.
    let ds = session
        .get_objects(&refs, &["datastore".into()])
        .await
        .expect("datastores");
    let ds_refs: Vec<MoRef> = ds
        .iter()
        .flat_map(|o| o.props["datastore"].as_array().cloned().unwrap_or_default())
        .filter_map(|v| MoRef::from_json(&v))
        .collect();
    let calls = session.calls();
    let rows = session
        .get_objects(&ds_refs, &["name".into(), "info.url".into()])
        .await
        .expect("names");
    assert_eq!(session.calls() - calls, 1);
    assert!(
        rows.iter().all(|r| r.props["name"] == "LocalDS_0"),
        "{rows:?}"
    );
    assert!(
        rows.iter()
            .all(|r| r.props["info.url"].as_str().is_some_and(|u| !u.is_empty()))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_object_and_an_invalid_path_are_named() {
    let session = &session().await;
    let ghost = MoRef::new("VirtualMachine", "vm-424242");
    let err = session
        .get_objects(std::slice::from_ref(&ghost), &["name".into()])
        .await
        .expect_err("missing");
    assert!(err.to_string().contains("vm-424242"), "{err}");
    assert!(err.to_string().contains("ManagedObjectNotFound"), "{err}");

    let vm = session
        .find("VirtualMachine", "name", &"DC0_H0_VM0".into())
        .await
        .expect("find")
        .expect("VM");
    let err = session
        .get_objects(
            std::slice::from_ref(&vm),
            &["name".into(), "runtime.noSuchThing".into()],
        )
        .await
        .expect_err("invalid path");
    assert!(matches!(err, Error::InvalidProperty { .. }), "{err}");
    assert!(err.to_string().contains("runtime.noSuchThing"), "{err}");
    assert!(err.to_string().contains(&vm.value), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_name_that_is_not_there_is_none() {
    let session = &session().await;
    let found = session
        .find("VirtualMachine", "name", &"no-such-vm".into())
        .await
        .expect("find");
    assert_eq!(found, None);
}
