//! Where a frontend's requests are answered: by the methods of this
//! process, or by the workers of their agent over NATS. The ZeroMQ and HTTP
//! frontends take either, so `daemon --nats` and `proxy --nats` serve the
//! same clients as a daemon that runs the methods itself.

use bytes::Bytes;
use std::sync::Arc;

use super::dispatch::Dispatcher;
use super::nats::forward::Forwarder;
use crate::methods::Reply;

/// A reply as a frontend sends it on.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The reply frame, exactly as the method host wrote it.
    pub body: Bytes,
    /// Refused before any method ran (HTTP answers 400).
    pub refused: bool,
    /// A helper's plain text rather than vPoller's JSON envelope.
    pub text: bool,
}

impl Answer {
    pub fn of(reply: &Reply) -> Answer {
        Answer {
            body: Bytes::from(reply.wire()),
            refused: reply.refused,
            text: reply.raw.is_some(),
        }
    }
}

#[derive(Clone)]
pub enum Answerer {
    /// The methods run here.
    Here(Arc<Dispatcher>),
    /// Each request goes to its agent's workers over NATS.
    Nats(Arc<Forwarder>),
}

impl Answerer {
    /// `frame` as the transport received it: NATS sends it on as it is.
    pub async fn answer(&self, frame: Bytes) -> Answer {
        match self {
            Answerer::Here(dispatcher) => Answer::of(&dispatcher.handle_reply(&frame).await),
            Answerer::Nats(forwarder) => forwarder.forward(frame).await,
        }
    }
}
