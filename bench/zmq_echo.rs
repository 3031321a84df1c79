//! A bare ZeroMQ ROUTER echo server, on either ZeroMQ library, for
//! bench/zmq_echo.py: what the transport alone costs, with no dispatch,
//! Lua or vSphere behind it.
//!
//!     zmq_echo libzmq|zeromq tcp://127.0.0.1:PORT

use bytes::Bytes;
use vpoller::server::wire::{CLIENT_LIMITS, Envelope};
use vpoller::server::zsocket::{Kind, ZSocket};
use zeromq::{Socket, SocketRecv, SocketSend};

const REPLY: &[u8] = br#"{"success": 0, "msg": "echo", "result": []}"#;

async fn libzmq(endpoint: &str) -> Result<(), String> {
    let mut socket = ZSocket::bind(Kind::Router, endpoint, CLIENT_LIMITS)?;
    while let Some(frames) = socket.recv().await {
        if let Some((envelope, _body)) = Envelope::open(frames) {
            socket.send(envelope.reply(Bytes::from_static(REPLY)));
        }
    }
    Ok(())
}

async fn pure_rust(endpoint: &str) -> Result<(), String> {
    let mut socket = zeromq::RouterSocket::new();
    socket
        .bind(endpoint)
        .await
        .map_err(|e| format!("bind {endpoint}: {e}"))?;
    loop {
        let message = socket.recv().await.map_err(|e| e.to_string())?;
        let Some((envelope, _body)) = Envelope::open(message.into_vec()) else {
            continue;
        };
        let reply = zeromq::ZmqMessage::try_from(envelope.reply(Bytes::from_static(REPLY)))
            .map_err(|e| e.to_string())?;
        socket.send(reply).await.map_err(|e| e.to_string())?;
    }
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(library), Some(endpoint)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: zmq_echo libzmq|zeromq ENDPOINT");
        return std::process::ExitCode::FAILURE;
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let served = runtime.block_on(async {
        match library.as_str() {
            "libzmq" => libzmq(endpoint).await,
            "zeromq" => pure_rust(endpoint).await,
            other => Err(format!("unknown library {other}")),
        }
    });
    match served {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("zmq_echo: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
