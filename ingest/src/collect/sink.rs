//! Where finished messages go, and how their acknowledgements come back.
//!
//! The collector hands a [`Sink`] one message at a time with a [`Token`]; the sink reports
//! the outcome later as an [`Event::Ack`] on the collector's event channel. Kafka is the real
//! sink ([`super::deliver::KafkaSink`]); tests use an in-memory one.

use std::sync::mpsc::Sender;

/// Which topic a message is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    /// `schema::wire` batches, key = site host.
    Records,
    /// One JSON `Reject` per message, key = source path.
    Rejects,
    /// One JSON `sitelog_schema::heartbeat::Heartbeat` per message, key = `server/source`.
    Heartbeats,
}

/// Identifies a sent message to the collector when its acknowledgement arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    /// Producer session; acknowledgements of an older session are ignored.
    pub gen: u32,
    /// Send order within the collector's life (for the unacknowledged-message deadline).
    pub seq: u64,
    /// The collector's id of the file the message came from.
    pub file: u64,
    /// Offset of the first line in the message: the key of its pending entry.
    pub offset: u64,
    pub bytes: u32,
    /// Records (or 1 for a reject) in the message.
    pub lines: u32,
    pub topic: Topic,
}

/// The outcome of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub token: Token,
    /// `Err` carries the client's error text.
    pub result: Result<(), String>,
}

/// What wakes the collector's loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Ack(Ack),
    /// A watched file changed: poll now.
    Wake,
    /// Files appeared, vanished or were renamed: rescan the globs now.
    Rescan,
    /// The producer hit a fatal error; restart it from the checkpoints.
    Fatal(String),
    /// Kafka refuses this client's configuration (authentication, TLS, protocol): retrying
    /// cannot help, the collector stops with this message.
    Refused(String),
    /// Flush, checkpoint, exit.
    Shutdown,
}

pub type EventSender = Sender<Event>;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("kafka producer: {0}")]
    Producer(String),
}

/// A message destination with asynchronous acknowledgement.
pub trait Sink {
    /// Queues a message; the acknowledgement arrives later as [`Event::Ack`]. An error here
    /// means the message was not queued (the collector restarts the session).
    fn send(&mut self, topic: Topic, key: &[u8], payload: &[u8], token: Token) -> Result<(), SinkError>;

    /// Drops the current session (pending messages fail or are forgotten) and starts a new
    /// one; after this, messages are sent again from the checkpoints.
    fn restart(&mut self) -> Result<(), SinkError>;
}
