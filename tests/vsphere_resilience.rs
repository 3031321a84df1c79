//! A vSphere host that dies, hangs, or comes back: clear errors within the
//! deadline, and recovery without restarting the client.

mod common;

use common::{Simulator, connect};
use std::time::{Duration, Instant};
use vpoller::vsphere::{Endpoint, Error, TlsMode};

async fn vm_count(session: &vpoller::vsphere::Client) -> Result<usize, Error> {
    session
        .discover("VirtualMachine", &["name".into()], |_| {
            std::ops::ControlFlow::Continue(())
        })
        .await
}

#[tokio::test]
async fn a_killed_simulator_fails_fast_and_a_restarted_one_is_used_again() {
    let mut sim = Simulator::start(&[]);
    let address = sim.address();
    let mut endpoint = sim.endpoint();
    endpoint.deadline = Duration::from_secs(3);
    let session = connect(&endpoint, "user", "pass").await;
    assert_eq!(vm_count(&session).await.expect("VMs"), 4);

    sim.kill();
    let started = Instant::now();
    let err = vm_count(&session).await.expect_err("the host is down");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
    let text = err.to_string();
    assert!(text.contains(&address), "{text}");
    assert!(
        text.contains("cannot connect") || text.contains("closed"),
        "{text}"
    );

    let _again = Simulator::start(&["-l", &address]);
    assert_eq!(vm_count(&session).await.expect("VMs after the restart"), 4);
    assert_eq!(session.logins(), 2, "the new simulator needed a new login");
}

#[tokio::test]
async fn a_host_that_never_answers_times_out_at_the_deadline() {
    // Accepts connections and reads, but never writes a byte.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let endpoint = Endpoint {
        url: format!("http://{address}/sdk"),
        tls: TlsMode::Verify,
        deadline: Duration::from_millis(800),
    };
    let started = Instant::now();
    let err = common::try_connect(&endpoint, "user", "pass")
        .await
        .err()
        .expect("no answer");
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert!(err.to_string().contains("deadline"), "{err}");
}

#[tokio::test]
async fn a_refused_connection_names_the_host() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    drop(listener);
    let endpoint = Endpoint {
        url: format!("http://{address}/sdk"),
        tls: TlsMode::Verify,
        deadline: Duration::from_secs(2),
    };
    let err = common::try_connect(&endpoint, "user", "pass")
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains(&address.to_string()), "{err}");
    assert!(err.to_string().contains("cannot connect"), "{err}");
}

#[tokio::test]
async fn a_failing_re_login_is_not_repeated_by_every_caller() {
    let mut sim = Simulator::start(&["-username", "alice", "-password", "first"]);
    let address = sim.address();
    let session = connect(&sim.endpoint(), "alice", "first").await;
    sim.kill();
    // Back on the same address, but the password has changed.
    let _changed = Simulator::start(&["-l", &address, "-username", "alice", "-password", "second"]);
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let s = session.clone();
            tokio::spawn(async move { vm_count(&s).await })
        })
        .collect();
    for call in calls {
        let err = call.await.expect("task").expect_err("login fails");
        assert!(matches!(err, Error::LoginFailed { .. }), "{err}");
    }
    assert_eq!(
        session.logins(),
        2,
        "one failed Login for ten callers, then back-off"
    );
}

#[tokio::test]
async fn a_connection_dropped_without_a_response_is_a_clear_transport_error() {
    // vcsim panics on QueryPerfCounter and closes the connection unanswered.
    let sim = Simulator::start(&[]);
    let session = sim.session().await;
    let perf = session.manager("perfManager").expect("perf manager");
    let started = Instant::now();
    let err = session
        .invoke(
            "QueryPerfCounter",
            &perf,
            &serde_json::json!({"counterId": [1]}),
        )
        .await
        .expect_err("vcsim cannot answer");
    assert!(matches!(err, Error::Transport { .. }), "{err}");
    assert!(
        err.to_string().contains("closed without a response"),
        "{err}"
    );
    assert!(err.to_string().contains("QueryPerfCounter"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // The session is unharmed.
    assert_eq!(vm_count(&session).await.expect("VMs"), 4);
}

fn signal(sim: &Simulator, name: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &sim.pid().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

#[tokio::test]
async fn each_call_has_its_own_deadline() {
    let sim = Simulator::start(&[]);
    let mut endpoint = sim.endpoint();
    endpoint.deadline = Duration::from_millis(700);
    let client = connect(&endpoint, "user", "pass").await;
    let this = vpoller::vsphere::MoRef::new("ServiceInstance", "ServiceInstance");
    // The simulator stops answering: a call with the default deadline gives
    // up; one with a longer deadline outlasts the pause.
    signal(&sim, "STOP");
    let short = client
        .invoke("CurrentTime", &this, &serde_json::Value::Null)
        .await;
    assert!(
        matches!(short, Err(Error::Timeout { after, .. }) if after == Duration::from_millis(700)),
        "{short:?}"
    );
    let resume = std::thread::spawn({
        let pid = sim.pid();
        move || {
            std::thread::sleep(Duration::from_millis(1000));
            let _ = std::process::Command::new("kill")
                .args(["-CONT", &pid.to_string()])
                .status();
        }
    });
    let started = std::time::Instant::now();
    let long = client
        .invoke_within(
            Duration::from_secs(10),
            "CurrentTime",
            &this,
            &serde_json::Value::Null,
        )
        .await;
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "it did wait"
    );
    resume.join().expect("resumed");
    assert!(
        long.is_ok(),
        "a call with a longer deadline waits it out: {long:?}"
    );
}

#[tokio::test]
async fn shutdown_stops_the_background_work_and_logs_out() {
    let sim = Simulator::start(&[]);
    let credentials = vpoller::vsphere::Credentials {
        user: "user".into(),
        password: vpoller::vsphere::Password::new("pass"),
    };
    let options = vpoller::vsphere::SessionOptions {
        keepalive: Duration::from_millis(200),
        ..Default::default()
    };
    let client = vpoller::vsphere::Client::connect(&sim.endpoint(), credentials, options)
        .await
        .expect("connect");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(client.calls() > 2, "the keep-alive ran while idle");
    client.shutdown().await.expect("shutdown");
    assert!(!client.session().is_logged_in());
    let after = client.calls();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        client.calls(),
        after,
        "nothing runs for a client that shut down"
    );
}
