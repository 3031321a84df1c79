//! libzmq sockets for tokio code, driven by a task of their own.
//!
//! libzmq (the reference implementation, the one pyzmq and vPoller use)
//! refuses a frame larger than `ZMQ_MAXMSGSIZE` while reading its header,
//! before allocating it, and drops that peer; the others are not disturbed.
//!
//! A libzmq socket is not thread-safe, so one task owns it and everyone
//! else talks to that task through channels. The task sleeps on the
//! socket's `ZMQ_FD` in tokio's reactor: a request then costs one thread
//! wake-up each way (libzmq's I/O thread to a runtime worker and back), and
//! a reply sent from a request task on the same worker wakes nobody. The
//! descriptor only says that the socket's state may have changed, so
//! `ZMQ_EVENTS` is read again after every operation and before every sleep.
//!
//! Each socket has a context of its own, so closing it can wait, up to its
//! linger, until libzmq has written out what was queued (replies of a
//! draining server are not lost at exit).

use bytes::Bytes;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

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

/// How often a message libzmq would not take (a DEALER at its high-water
/// mark) is offered again, besides when the socket signals room.
const RETRY_UNSENT: Duration = Duration::from_millis(5);
/// Received messages the async side has not taken yet; past this the
/// task stops reading and libzmq's own high-water mark takes over.
const INCOMING_QUEUE: usize = 256;

struct Shared {
    closing: AtomicBool,
    linger: std::sync::Mutex<Duration>,
    wake: Notify,
}

impl Shared {
    fn close(&self) {
        self.closing.store(true, Ordering::Release);
        self.wake.notify_one();
    }
}

/// The sending half: cheap to clone, usable from any task.
#[derive(Clone)]
pub struct ZSender {
    queue: mpsc::UnboundedSender<Frames>,
}

impl ZSender {
    /// Queues a message; false once the socket is closed.
    pub fn send(&self, frames: Frames) -> bool {
        self.queue.send(frames).is_ok()
    }
}

/// A socket bound or connected to one endpoint.
pub struct ZSocket {
    incoming: mpsc::Receiver<Frames>,
    sender: ZSender,
    shared: Arc<Shared>,
    task: Option<JoinHandle<()>>,
}

enum Attach {
    Bind,
    Connect,
}

/// The socket's `ZMQ_FD`, for the reactor; the socket owns it.
struct SignalFd(RawFd);

impl AsRawFd for SignalFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

impl ZSocket {
    pub fn bind(kind: Kind, endpoint: &str, limits: Limits) -> Result<ZSocket, String> {
        ZSocket::open(kind, endpoint, limits, Attach::Bind)
    }

    pub fn connect(kind: Kind, endpoint: &str, limits: Limits) -> Result<ZSocket, String> {
        ZSocket::open(kind, endpoint, limits, Attach::Connect)
    }

    fn open(kind: Kind, endpoint: &str, limits: Limits, attach: Attach) -> Result<ZSocket, String> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| format!("{endpoint}: a ZeroMQ socket needs the async runtime"))?;
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
        let fd = socket
            .get_fd()
            .map_err(|e| format!("{endpoint}: no ZMQ_FD: {e}"))?;
        let signal = {
            let _entered = runtime.enter();
            // The safe constructor (the crate forbids unsafe code). What it
            // cannot check holds here: the descriptor belongs to the socket,
            // which the pump closes only after dropping this registration
            // (`Pump::finish`, and the order of `Pump`'s fields).
            #[allow(deprecated)]
            AsyncFd::with_interest(SignalFd(fd), tokio::io::Interest::READABLE)
                .map_err(|e| format!("{endpoint}: cannot watch the socket: {e}"))?
        };
        let shared = Arc::new(Shared {
            closing: AtomicBool::new(false),
            linger: std::sync::Mutex::new(Duration::ZERO),
            wake: Notify::new(),
        });
        let (queue, outgoing) = mpsc::unbounded_channel();
        let (deliver, incoming) = mpsc::channel(INCOMING_QUEUE);
        let pump = Pump {
            signal: Some(signal),
            zmq: Some((context, socket)),
            limits,
            shared: shared.clone(),
            outgoing,
            deliver,
            unsent: None,
            undelivered: None,
        };
        let task = runtime.spawn(pump.run());
        Ok(ZSocket {
            incoming,
            sender: ZSender { queue },
            shared,
            task: Some(task),
        })
    }

    /// The next message; `None` once the socket's task has stopped.
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
        if let Ok(mut l) = self.shared.linger.lock() {
            *l = linger;
        }
        self.shared.close();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for ZSocket {
    fn drop(&mut self) {
        self.shared.close();
    }
}

/// The task's side: the socket and what waits to cross.
struct Pump {
    /// Declared before `zmq`, so dropped first: the reactor lets go of the
    /// descriptor before the socket closes it.
    signal: Option<AsyncFd<SignalFd>>,
    /// Taken when the socket is closed.
    zmq: Option<(::zmq::Context, ::zmq::Socket)>,
    limits: Limits,
    shared: Arc<Shared>,
    outgoing: mpsc::UnboundedReceiver<Frames>,
    deliver: mpsc::Sender<Frames>,
    /// A message libzmq would not take yet (a DEALER at its high-water mark).
    unsent: Option<Frames>,
    /// A message the async side had no room for yet.
    undelivered: Option<Frames>,
}

impl Pump {
    async fn run(mut self) {
        while self.turn().await {}
        self.finish().await;
    }

    /// Does what can be done now, or sleeps until something can; false
    /// when the socket is to be closed.
    async fn turn(&mut self) -> bool {
        if self.shared.closing.load(Ordering::Acquire) || self.deliver.is_closed() {
            return false;
        }
        let mut progressed = self.send_queued();
        let Some((_, socket)) = self.zmq.as_ref() else {
            return false;
        };
        let events = match socket.get_events() {
            Ok(events) => events,
            Err(e) => {
                tracing::error!("ZeroMQ socket failed: {e}");
                return false;
            }
        };
        if events.contains(::zmq::POLLIN) && self.undelivered.is_none() {
            progressed |= self.receive_ready();
        }
        if progressed {
            return true;
        }
        let Some(signal) = self.signal.as_ref() else {
            return false;
        };
        let (outgoing, deliver) = (&mut self.outgoing, &self.deliver);
        let (sending, holding) = (self.unsent.is_none(), self.undelivered.is_some());
        tokio::select! {
            ready = signal.readable() => {
                if let Ok(mut guard) = ready {
                    guard.clear_ready();
                }
            }
            next = outgoing.recv(), if sending => match next {
                Some(frames) => self.unsent = Some(frames),
                None => return false,
            },
            room = deliver.reserve(), if holding => match (room, self.undelivered.take()) {
                (Ok(permit), Some(frames)) => permit.send(frames),
                (Err(_), _) => return false,
                (Ok(_), None) => {}
            },
            () = tokio::time::sleep(RETRY_UNSENT), if !sending => {}
            () = self.shared.wake.notified() => {}
        }
        true
    }

    /// Takes in every message libzmq holds, until the async side is full;
    /// whether any was read.
    fn receive_ready(&mut self) -> bool {
        let mut any = false;
        while self.undelivered.is_none() {
            let Some(frames) = self.receive_one() else {
                return any;
            };
            any = true;
            let Some(frames) = frames else { continue };
            if let Err(mpsc::error::TrySendError::Full(back)) = self.deliver.try_send(frames) {
                self.undelivered = Some(back);
            }
        }
        any
    }

    /// One whole message: `None` when nothing is waiting, `Some(None)` for
    /// a message over the limits (read to its end and thrown away).
    fn receive_one(&mut self) -> Option<Option<Frames>> {
        let (_, socket) = self.zmq.as_ref()?;
        let mut frames = Vec::new();
        let mut total = 0usize;
        let mut refused = false;
        loop {
            // The frames of a message arrive together: only the first can
            // be missing.
            let flags = if frames.is_empty() && !refused {
                ::zmq::DONTWAIT
            } else {
                0
            };
            let frame = match socket.recv_bytes(flags) {
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
            if !socket.get_rcvmore().unwrap_or(false) {
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

    /// Sends what is queued without blocking; whether any went out.
    fn send_queued(&mut self) -> bool {
        let mut any = false;
        loop {
            let frames = match self.unsent.take() {
                Some(f) => f,
                None => match self.outgoing.try_recv() {
                    Ok(f) => f,
                    Err(_) => return any,
                },
            };
            if let Err(back) = self.send_one(frames) {
                self.unsent = Some(back);
                return any;
            }
            any = true;
        }
    }

    /// Sends one message without blocking; gives it back if libzmq cannot
    /// take it now.
    fn send_one(&mut self, frames: Frames) -> Result<(), Frames> {
        let Some((_, socket)) = self.zmq.as_ref() else {
            return Ok(());
        };
        let last = frames.len().saturating_sub(1);
        for (i, frame) in frames.iter().enumerate() {
            let more = if i < last { ::zmq::SNDMORE } else { 0 };
            // Once the first frame is in, libzmq takes the rest: only the
            // first can meet a full queue.
            let flags = if i == 0 { ::zmq::DONTWAIT | more } else { more };
            match socket.send(&frame[..], flags) {
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

    /// Sends what is still queued, waiting at most the linger for room,
    /// and closes the socket and its context, which waits up to the linger
    /// for queued messages to be written; on a blocking thread.
    async fn finish(mut self) {
        // The reactor lets go of the descriptor before the socket closes it.
        drop(self.signal.take());
        let Some((context, socket)) = self.zmq.take() else {
            return;
        };
        let linger = self
            .shared
            .linger
            .lock()
            .map(|l| *l)
            .unwrap_or(Duration::ZERO);
        let linger_ms = i32::try_from(linger.as_millis()).unwrap_or(i32::MAX);
        let mut queued: Vec<Frames> = self.unsent.take().into_iter().collect();
        while let Ok(frames) = self.outgoing.try_recv() {
            queued.push(frames);
        }
        let close = move || {
            let _ = socket.set_sndtimeo(linger_ms);
            for frames in queued {
                let _ = socket.send_multipart(frames.iter().map(|f| &f[..]), 0);
            }
            let _ = socket.set_linger(linger_ms);
            drop(socket);
            drop(context);
        };
        let _ = tokio::task::spawn_blocking(close).await;
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
