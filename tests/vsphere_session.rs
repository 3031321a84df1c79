//! Sessions against the simulator: login, lost sessions, single-flight re-login.

mod common;

use common::{Simulator, connect, try_connect};
use serde_json::{Value, json};
use std::time::Duration;
use vpoller::vsphere::{Error, MoRef};

#[tokio::test]
async fn login_reads_the_service_content_and_logs_out() {
    let sim = Simulator::start(&["-username", "alice", "-password", "s3cret"]);
    let session = connect(&sim.endpoint(), "alice", "s3cret").await;
    assert_eq!(session.about()["apiType"], "VirtualCenter");
    assert_eq!(session.session().api_version(), "6.5");
    assert!(session.session().is_logged_in());
    assert_eq!(session.logins(), 1);
    let me = session
        .get_objects(
            &[session.manager("sessionManager").expect("manager")],
            &["currentSession".into()],
        )
        .await
        .expect("current session");
    assert_eq!(me[0].props["currentSession"]["userName"], "alice");

    session.shutdown().await.expect("logout");
    assert!(!session.session().is_logged_in());
    session
        .shutdown()
        .await
        .expect("a second logout is harmless");
}

#[tokio::test]
async fn a_wrong_password_says_the_login_failed_and_does_not_retry() {
    let sim = Simulator::start(&["-username", "alice", "-password", "s3cret"]);
    let err = try_connect(&sim.endpoint(), "alice", "Pw-7d1e")
        .await
        .err()
        .expect("refused");
    let text = err.to_string();
    assert!(matches!(err, Error::LoginFailed { .. }), "{text}");
    assert!(text.contains("login failed for user \"alice\""), "{text}");
    assert!(text.contains("InvalidLogin"), "{text}");
    assert!(
        !text.contains("Pw-7d1e"),
        "the password must not appear: {text}"
    );
}

async fn terminate(sim: &Simulator, victim: &vpoller::vsphere::Client) {
    let manager = victim.manager("sessionManager").expect("manager");
    let key = victim
        .get_objects(std::slice::from_ref(&manager), &["currentSession".into()])
        .await
        .expect("current session")[0]
        .props["currentSession"]["key"]
        .as_str()
        .expect("session key")
        .to_string();
    let admin = sim.session().await;
    admin
        .invoke("TerminateSession", &manager, &json!({"sessionId": [key]}))
        .await
        .expect("TerminateSession");
}

#[tokio::test]
async fn a_terminated_session_is_re_established_by_exactly_one_login() {
    let sim = Simulator::start(&[]);
    let session = sim.session().await;
    // A cached container view dies with the session; it must be remade too.
    let before = names(&session).await;
    terminate(&sim, &session).await;

    let calls: Vec<_> = (0..20)
        .map(|_| {
            let s = session.clone();
            tokio::spawn(async move { names(&s).await })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.expect("task"), before);
    }
    assert_eq!(
        session.logins(),
        2,
        "20 racing calls on a dead session make one Login"
    );
}

#[tokio::test]
async fn an_idle_expired_session_is_re_established() {
    let sim = Simulator::start(&["-session-idle-timeout", "1s"]);
    let session = sim.session().await;
    let first = names(&session).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(names(&session).await, first);
    assert_eq!(session.logins(), 2);
    // A plain method (not the collector) reports the lost session as a fault.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let root = session.manager("rootFolder").expect("root");
    let view = session
        .create_container_view(&root, &["HostSystem"], true)
        .await
        .expect("a fault-path re-login");
    assert_eq!(session.logins(), 3);
    session.destroy_view(&view).await.expect("destroy");
}

async fn names(session: &vpoller::vsphere::Client) -> Vec<Value> {
    let mut out = Vec::new();
    session
        .discover("VirtualMachine", &["name".into()], |o| {
            out.push(o.props["name"].clone());
            std::ops::ControlFlow::Continue(())
        })
        .await
        .expect("discover VMs");
    out
}

#[tokio::test]
async fn faults_are_typed_and_name_what_was_wrong() {
    let sim = Simulator::start(&[]);
    let session = sim.session().await;
    let ghost = MoRef::new("VirtualMachine", "vm-does-not-exist");
    let err = session
        .create_list_view(std::slice::from_ref(&ghost))
        .await
        .expect_err("unknown object");
    assert_eq!(
        err.fault_kind(),
        Some(&vpoller::vsphere::FaultKind::ManagedObjectNotFound)
    );
    assert!(err.to_string().contains("vm-does-not-exist"), "{err}");

    let root = session.manager("rootFolder").expect("root");
    let err = session
        .create_container_view(&root, &["NoSuchType"], true)
        .await
        .expect_err("unknown type");
    assert_eq!(
        err.fault_kind(),
        Some(&vpoller::vsphere::FaultKind::InvalidArgument)
    );
    assert!(err.to_string().contains("argument type"), "{err}");

    let err = session
        .invoke(
            "QueryPerfCounterByLevel",
            &session.manager("perfManager").expect("perf"),
            &json!({"level": 1}),
        )
        .await
        .expect_err("not in vcsim");
    assert_eq!(
        err.fault_kind(),
        Some(&vpoller::vsphere::FaultKind::MethodNotFound)
    );
    assert!(err.to_string().contains("QueryPerfCounterByLevel"), "{err}");

    let err = session
        .invoke(
            "RetrievePropertiesEx",
            &root,
            &json!({"specSet": [{"nope": 1}]}),
        )
        .await
        .expect_err("bad argument");
    assert!(matches!(err, Error::Encode { .. }), "{err}");
    assert!(err.to_string().contains("nope"), "{err}");
}

#[tokio::test]
async fn an_idle_session_is_kept_alive() {
    let sim = Simulator::start(&["-session-idle-timeout", "2s"]);
    let credentials = vpoller::vsphere::Credentials {
        user: "user".into(),
        password: vpoller::vsphere::Password::new("pass"),
    };
    let options = vpoller::vsphere::SessionOptions {
        keepalive: Duration::from_millis(800),
        ..Default::default()
    };
    let session = vpoller::vsphere::Client::connect(&sim.endpoint(), credentials, options)
        .await
        .expect("connect");
    let before = names(&session).await;
    // Idle for longer than the server keeps an idle session.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(names(&session).await, before);
    assert_eq!(session.logins(), 1, "the keep-alive kept the first session");
}
