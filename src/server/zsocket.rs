//! libzmq sockets for tokio code: each socket is owned by one thread that
//! polls it, and the async side talks to that thread through channels.
//!
//! libzmq (the reference implementation, the one pyzmq and vPoller use)
//! refuses a frame larger than `ZMQ_MAXMSGSIZE` while reading its header,
//! before allocating it, and drops that peer; the others are not disturbed.
//! A libzmq socket is not thread-safe, so it never leaves its thread: sends
//! are queued and the thread is woken through a socket pair it polls beside
//! the ZeroMQ socket.
//!
//! Each socket has a context of its own, so closing it can wait, up to its
//! linger, until libzmq has written out what was queued (replies of a
//! draining server are not lost at exit).

use bytes::Bytes;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc as std_mpsc};
use std::time::Duration;
use tokio::sync::mpsc;

/// A message: its frames, in order.
pub type Frames = Vec<Bytes>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Router,
    Dealer,
    Rep,
    Req,
}

impl Kind {
    fn zmq(self) -> ::zmq::SocketType {
        match self {
            Kind::Router => ::zmq::ROUTER,
            Kind::Dealer => ::zmq::DEALER,
            Kind::Rep => ::zmq::REP,
            Kind::Req => ::zmq::REQ,
        }
    }
}

/// What a peer may send in one message. A frame over `max_frame` drops the
/// peer (libzmq); a message with more frames than `max_frames`, or more
/// bytes in all than `max_frame`, is thrown away whole.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_frame: usize,
    pub max_frames: usize,
}

/// How long a poll waits when nothing wakes it: the longest a closed
/// socket's thread lingers unnoticed.
const IDLE_POLL_MS: i64 = 200;
/// Received messages the async side has not taken yet; past this the
/// thread stops reading and libzmq's own high-water mark takes over.
const INCOMING_QUEUE: usize = 256;

struct Shared {
    wake_tx: UnixStream,
    wake_pending: AtomicBool,
    closing: AtomicBool,
    linger: std::sync::Mutex<Duration>,
}

impl Shared {
    fn wake(&self) {
        if !self.wake_pending.swap(true, Ordering::AcqRel) {
            // A full socket pair already holds a wake-up; nothing is lost.
            let _ = (&self.wake_tx).write(&[1]);
        }
    }
}

/// The sending half: cheap to clone, usable from any task.
#[derive(Clone)]
pub struct ZSender {
    queue: std_mpsc::Sender<Frames>,
    shared: Arc<Shared>,
}

impl ZSender {
    /// Queues a message; false once the socket is closed.
    pub fn send(&self, frames: Frames) -> bool {
        if self.queue.send(frames).is_err() {
            return false;
        }
        self.shared.wake();
        true
    }
}

/// A socket bound or connected to one endpoint.
pub struct ZSocket {
    incoming: mpsc::Receiver<Frames>,
    sender: ZSender,
    thread: Option<std::thread::JoinHandle<()>>,
}

enum Attach {
    Bind,
    Connect,
}

impl ZSocket {
    pub fn bind(kind: Kind, endpoint: &str, limits: Limits) -> Result<ZSocket, String> {
        ZSocket::open(kind, endpoint, limits, Attach::Bind)
    }

    pub fn connect(kind: Kind, endpoint: &str, limits: Limits) -> Result<ZSocket, String> {
        ZSocket::open(kind, endpoint, limits, Attach::Connect)
    }

    fn open(kind: Kind, endpoint: &str, limits: Limits, attach: Attach) -> Result<ZSocket, String> {
        let context = ::zmq::Context::new();
        let socket = context
            .socket(kind.zmq())
            .map_err(|e| format!("cannot make a ZeroMQ socket for {endpoint}: {e}"))?;
        let max_frame = i64::try_from(limits.max_frame).unwrap_or(i64::MAX);
        socket
            .set_maxmsgsize(max_frame)
            .and_then(|()| socket.set_linger(0))
            .map_err(|e| format!("cannot set the options of the socket for {endpoint}: {e}"))?;
        match attach {
            Attach::Bind => socket.bind(endpoint),
            Attach::Connect => socket.connect(endpoint),
        }
        .map_err(|e| format!("{endpoint}: {e}"))?;
        let (wake_tx, wake_rx) =
            UnixStream::pair().map_err(|e| format!("cannot make a wake-up pipe: {e}"))?;
        wake_tx
            .set_nonblocking(true)
            .and_then(|()| wake_rx.set_nonblocking(true))
            .map_err(|e| format!("cannot make a wake-up pipe: {e}"))?;
        let shared = Arc::new(Shared {
            wake_tx,
            wake_pending: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            linger: std::sync::Mutex::new(Duration::ZERO),
        });
        let (queue, outgoing) = std_mpsc::channel();
        let (deliver, incoming) = mpsc::channel(INCOMING_QUEUE);
        let pump = Pump {
            context,
            socket,
            limits,
            wake_rx,
            shared: shared.clone(),
            outgoing,
            deliver,
            unsent: None,
            undelivered: None,
        };
        let thread = std::thread::Builder::new()
            .name("vpoller-zmq".into())
            .spawn(move || pump.run())
            .map_err(|e| format!("cannot start the socket thread for {endpoint}: {e}"))?;
        Ok(ZSocket {
            incoming,
            sender: ZSender { queue, shared },
            thread: Some(thread),
        })
    }

    /// The next message; `None` once the socket's thread has stopped.
    pub async fn recv(&mut self) -> Option<Frames> {
        self.incoming.recv().await
    }

    pub fn sender(&self) -> ZSender {
        self.sender.clone()
    }

    pub fn send(&self, frames: Frames) -> bool {
        self.sender.send(frames)
    }

    /// Sends what is queued, waits up to `linger` for libzmq to write it
    /// out, and closes the socket.
    pub async fn close(mut self, linger: Duration) {
        if let Ok(mut l) = self.sender.shared.linger.lock() {
            *l = linger;
        }
        self.sender.shared.closing.store(true, Ordering::Release);
        self.sender.shared.wake();
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

impl Drop for ZSocket {
    fn drop(&mut self) {
        self.sender.shared.closing.store(true, Ordering::Release);
        self.sender.shared.wake();
    }
}

/// The thread's side: the socket and what waits to cross.
struct Pump {
    context: ::zmq::Context,
    socket: ::zmq::Socket,
    limits: Limits,
    wake_rx: UnixStream,
    shared: Arc<Shared>,
    outgoing: std_mpsc::Receiver<Frames>,
    deliver: mpsc::Sender<Frames>,
    /// A message libzmq would not take yet (a DEALER at its high-water mark).
    unsent: Option<Frames>,
    /// A message the async side had no room for yet.
    undelivered: Option<Frames>,
}

impl Pump {
    fn run(mut self) {
        loop {
            let closing = self.shared.closing.load(Ordering::Acquire);
            self.send_queued();
            if closing || self.deliver.is_closed() {
                break;
            }
            if !self.poll() {
                break;
            }
        }
        self.finish();
    }

    /// Waits for the socket or a wake-up, then takes in what arrived.
    /// False when the socket cannot be polled any more.
    fn poll(&mut self) -> bool {
        let reading = self.undelivered.is_none();
        let mut events = ::zmq::PollEvents::empty();
        if reading {
            events |= ::zmq::POLLIN;
        }
        if self.unsent.is_some() {
            events |= ::zmq::POLLOUT;
        }
        // Held messages are retried on a short tick rather than a signal
        // from the async side.
        let timeout = if reading { IDLE_POLL_MS } else { 5 };
        let mut items = [
            self.socket.as_poll_item(events),
            ::zmq::PollItem::from_fd(self.wake_rx.as_raw_fd(), ::zmq::POLLIN),
        ];
        match ::zmq::poll(&mut items, timeout) {
            Ok(_) => {}
            Err(::zmq::Error::EINTR) => return true,
            Err(e) => {
                tracing::error!("ZeroMQ poll failed: {e}");
                return false;
            }
        }
        let (readable, woken) = (items[0].is_readable(), items[1].is_readable());
        if woken {
            // Drain first, then clear: a wake-up written after the clear
            // stays in the pipe, so none is lost (the queue is looked at
            // again before the next poll).
            let mut sink = [0u8; 64];
            while matches!((&self.wake_rx).read(&mut sink), Ok(n) if n > 0) {}
            self.shared.wake_pending.store(false, Ordering::Release);
        }
        if !self.retry_undelivered() {
            return true;
        }
        if readable {
            self.receive_ready();
        }
        true
    }

    fn retry_undelivered(&mut self) -> bool {
        let Some(held) = self.undelivered.take() else {
            return true;
        };
        match self.deliver.try_send(held) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(back)) => {
                self.undelivered = Some(back);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Takes in every message libzmq holds, until the async side is full.
    fn receive_ready(&mut self) {
        while self.undelivered.is_none() {
            let Some(frames) = self.receive_one() else {
                return;
            };
            let Some(frames) = frames else { continue };
            if let Err(mpsc::error::TrySendError::Full(back)) = self.deliver.try_send(frames) {
                self.undelivered = Some(back);
            }
        }
    }

    /// One whole message: `None` when nothing is waiting, `Some(None)` for
    /// a message over the limits (read to its end and thrown away).
    fn receive_one(&mut self) -> Option<Option<Frames>> {
        let mut frames = Vec::new();
        let mut total = 0usize;
        let mut refused = false;
        loop {
            let flags = if frames.is_empty() && !refused {
                ::zmq::DONTWAIT
            } else {
                0
            };
            let frame = match self.socket.recv_bytes(flags) {
                Ok(f) => f,
                Err(::zmq::Error::EAGAIN) => return None,
                Err(e) => {
                    tracing::debug!("ZeroMQ receive failed: {e}");
                    return None;
                }
            };
            total = total.saturating_add(frame.len());
            if !refused && (frames.len() >= self.limits.max_frames || total > self.limits.max_frame)
            {
                refused = true;
                frames = Vec::new();
            }
            if !refused {
                frames.push(Bytes::from(frame));
            }
            if !self.socket.get_rcvmore().unwrap_or(false) {
                break;
            }
        }
        if refused {
            tracing::warn!(
                bytes = total,
                "refused a ZeroMQ message over the limits ({} frames, {} bytes)",
                self.limits.max_frames,
                self.limits.max_frame
            );
            return Some(None);
        }
        Some(Some(frames))
    }

    fn send_queued(&mut self) {
        loop {
            let frames = match self.unsent.take() {
                Some(f) => f,
                None => match self.outgoing.try_recv() {
                    Ok(f) => f,
                    Err(_) => return,
                },
            };
            if let Err(back) = self.send_one(frames) {
                self.unsent = Some(back);
                return;
            }
        }
    }

    /// Sends one message without blocking; gives it back if libzmq cannot
    /// take it now.
    fn send_one(&mut self, frames: Frames) -> Result<(), Frames> {
        let last = frames.len().saturating_sub(1);
        for (i, frame) in frames.iter().enumerate() {
            let more = if i < last { ::zmq::SNDMORE } else { 0 };
            // Once the first frame is in, libzmq takes the rest: only the
            // first can meet a full queue.
            let flags = if i == 0 { ::zmq::DONTWAIT | more } else { more };
            match self.socket.send(&frame[..], flags) {
                Ok(()) => {}
                Err(::zmq::Error::EAGAIN) if i == 0 => return Err(frames),
                Err(e) => {
                    tracing::debug!("ZeroMQ send failed: {e}");
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    fn finish(mut self) {
        let linger = self
            .shared
            .linger
            .lock()
            .map(|l| *l)
            .unwrap_or(Duration::ZERO);
        let linger_ms = i32::try_from(linger.as_millis()).unwrap_or(i32::MAX);
        // What is still queued goes out now, waiting at most the linger for
        // room (a DEALER at its high-water mark).
        let _ = self.socket.set_sndtimeo(linger_ms);
        let queued: Vec<Frames> = self
            .unsent
            .take()
            .into_iter()
            .chain(self.outgoing.try_iter())
            .collect();
        for frames in queued {
            let _ = self.send_blocking(frames);
        }
        let _ = self.socket.set_linger(linger_ms);
        drop(self.socket);
        // Terminating the context waits, up to the linger, for queued
        // messages to be written.
        drop(self.context);
    }

    fn send_blocking(&mut self, frames: Frames) -> Result<(), ::zmq::Error> {
        self.socket.send_multipart(frames.iter().map(|f| &f[..]), 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: Limits = Limits {
        max_frame: 1024,
        max_frames: 4,
    };

    fn port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(0)
    }

    #[tokio::test]
    async fn a_dealer_and_a_router_exchange_messages_and_refuse_oversize_ones() {
        let endpoint = format!("tcp://127.0.0.1:{}", port());
        let mut router = ZSocket::bind(Kind::Router, &endpoint, SMALL).expect("bind");
        let mut dealer = ZSocket::connect(Kind::Dealer, &endpoint, SMALL).expect("connect");
        // Too many frames, then too many bytes in all: both thrown away.
        assert!(dealer.send(vec![Bytes::from_static(b"x"); 5]));
        assert!(dealer.send(vec![
            Bytes::from(vec![b'y'; 600]),
            Bytes::from(vec![b'z'; 600])
        ]));
        assert!(dealer.send(vec![Bytes::from_static(b""), Bytes::from_static(b"hello")]));
        let got = tokio::time::timeout(Duration::from_secs(5), router.recv())
            .await
            .expect("a message within 5 s")
            .expect("the socket is open");
        assert_eq!(got.len(), 3, "identity, delimiter, body");
        assert_eq!(&got[2][..], b"hello");
        assert!(router.send(vec![
            got[0].clone(),
            Bytes::new(),
            Bytes::from_static(b"back")
        ]));
        let reply = tokio::time::timeout(Duration::from_secs(5), dealer.recv())
            .await
            .expect("a reply within 5 s")
            .expect("open");
        assert_eq!(&reply[1][..], b"back");
        dealer.close(Duration::from_millis(100)).await;
        router.close(Duration::ZERO).await;
    }

    #[tokio::test]
    async fn close_delivers_what_was_queued() {
        let endpoint = format!("tcp://127.0.0.1:{}", port());
        let mut router = ZSocket::bind(Kind::Router, &endpoint, SMALL).expect("bind");
        let dealer = ZSocket::connect(Kind::Dealer, &endpoint, SMALL).expect("connect");
        for i in 0..50 {
            assert!(dealer.send(vec![Bytes::from(i.to_string())]));
        }
        dealer.close(Duration::from_secs(2)).await;
        let mut seen = 0;
        while seen < 50 {
            match tokio::time::timeout(Duration::from_secs(5), router.recv()).await {
                Ok(Some(_)) => seen += 1,
                _ => break,
            }
        }
        assert_eq!(seen, 50);
    }
}
