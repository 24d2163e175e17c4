//! The Kafka sink: librdkafka's idempotent producer (`acks=all`, lz4), one message per
//! batch, acknowledgements delivered to the collector's event channel.
//!
//! Idempotence holds within one producer session: librdkafka retries without duplicates.
//! A failed message or a fatal client error makes the collector start a new session and
//! re-send everything after its checkpoints; lines delivered by the old session then arrive
//! twice with the same `(fingerprint, offset)` identity, and the processor drops them.
//!
//! That re-send filter drops every record at or below the highest offset stored for its
//! (fingerprint, host), so it is only lossless if each session writes a *gap-less prefix* of
//! what it was given, per partition: if message N fails and N+1 is written, the re-sent N is
//! dropped as a duplicate. See [`client_config`] for how the session is kept gap-less.

use std::time::Duration;

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use tracing::{debug, error, info, warn};

use super::config::KafkaConfig;
use super::sink::{Ack, Event, EventSender, Sink, SinkError, Token, Topic};

use sitelog_schema::kafka;
/// Environment variable that holds the SASL password.
pub use sitelog_schema::kafka::PASSWORD_ENV;

/// Errors that no retry can fix: the broker or the network path refuses this client's
/// configuration (wrong password, untrusted certificate, plaintext against a TLS listener or
/// the reverse). The collector stops with the message instead of waiting forever; a broker
/// that is merely down stays a transient error. `None` for everything else.
pub fn refusal(err: &KafkaError, reason: &str) -> Option<String> {
    sitelog_schema::kafka::refusal(err.rdkafka_error_code().map(|c| c as i32), reason)
}

struct Ctx {
    events: EventSender,
    /// The protocol, when it is not TLS: then dropped first requests are counted.
    plaintext: Option<String>,
    dropped: std::sync::atomic::AtomicU32,
}

impl ClientContext for Ctx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        if let Some(protocol) = &self.plaintext {
            if kafka::dropped_in_first_request(log_message) {
                let n = self.dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                if n == kafka::PLAINTEXT_TO_TLS_LIMIT {
                    let _ = self.events.send(Event::Refused(kafka::plaintext_to_tls_message(protocol, log_message)));
                }
            } else if log_message.contains("ApiVersion") || fac == "AUTH" {
                // The first request was answered: this listener speaks plaintext Kafka.
                self.dropped.store(0, std::sync::atomic::Ordering::Relaxed);
            }
        }
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => {
                error!(target: "librdkafka", fac, "{log_message}")
            }
            RDKafkaLogLevel::Warning => warn!(target: "librdkafka", fac, "{log_message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                info!(target: "librdkafka", fac, "{log_message}")
            }
            RDKafkaLogLevel::Debug => debug!(target: "librdkafka", fac, "{log_message}"),
        }
    }

    fn error(&self, err: KafkaError, reason: &str) {
        if let Some(msg) = refusal(&err, reason) {
            let _ = self.events.send(Event::Refused(msg));
        } else if err.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal) {
            let _ = self.events.send(Event::Fatal(format!("{err}: {reason}")));
        } else {
            // Transient (broker down, reconnecting): librdkafka retries, reading pauses on
            // backpressure, nothing to do here but say so.
            warn!(target: "librdkafka", error = %err, "{reason}");
        }
    }
}

/// Tells the collector's loop how a message ended (both producers' delivery callbacks).
fn acknowledge(events: &EventSender, result: &DeliveryResult<'_>, token: Token) {
    let result = match result {
        Ok(_) => Ok(()),
        Err((e, _)) => Err(e.to_string()),
    };
    let _ = events.send(Event::Ack(Ack { token, result }));
}

impl ProducerContext for Ctx {
    type DeliveryOpaque = Box<Token>;

    fn delivery(&self, result: &DeliveryResult<'_>, token: Box<Token>) {
        acknowledge(&self.events, result, *token);
    }
}

/// Builds librdkafka's settings from `[kafka]`; the password from the environment or file.
///
/// DECISION (gap-less sessions): the idempotent producer keeps per-partition order and the
/// broker accepts a sequence number only right after the previous one, so a session can only
/// leave a gap where librdkafka itself skips failed messages and goes on. It does that in two
/// cases: (1) a message exceeds `message.timeout.ms` — librdkafka then bumps the epoch and
/// sends N+1.. anyway, by design and even with `enable.gapless.guarantee` (INTRODUCTION.md,
/// "Message timeout considerations"); N+1 may already be on the wire when N's failure is
/// reported, so no reaction of ours can stop it; (2) a permanent error of one batch (e.g. a
/// record too large for the broker): without `enable.gapless.guarantee` the epoch is bumped
/// the same way, with it the producer stops with a fatal error instead. So librdkafka's
/// timeout is always infinite (0) and the gap-less guarantee is on; a failure or fatal error
/// then ends the session with nothing after the failed message written, and the collector
/// restarts from its checkpoints. `[kafka] message_timeout_ms` is the collector's own deadline
/// that does the same restart (dropping the producer purges its queue; what the broker
/// already accepted is a prefix). These keys cannot be overridden ([`GUARANTEE_KEYS`](super::config::GUARANTEE_KEYS)).
pub fn client_config(k: &KafkaConfig) -> Result<ClientConfig, SinkError> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &k.brokers)
        .set("client.id", &k.client_id)
        .set("enable.idempotence", "true")
        .set("enable.gapless.guarantee", "true")
        .set("acks", "all")
        .set("compression.type", &k.compression)
        .set("linger.ms", "5")
        .set("message.timeout.ms", "0")
        .set("message.timeout.ms", "0");
    for (key, v) in k.security.properties() {
        c.set(key, v);
    }
    // Info-level lines reach the log callback, which needs them to see a plaintext client's
    // first request dropped by a TLS listener (`Ctx::log`); tracing filters what is printed.
    if !matches!(c.log_level, RDKafkaLogLevel::Debug) {
        c.set_log_level(RDKafkaLogLevel::Info);
    }
    let password = k
        .security
        .sasl_password(std::env::var(PASSWORD_ENV).ok(), |p| std::fs::read_to_string(p))
        .map_err(SinkError::Producer)?;
    if let Some(p) = password {
        c.set("sasl.password", p);
    }
    for (key, v) in &k.properties {
        if !super::config::GUARANTEE_KEYS.contains(&key.as_str()) {
            c.set(key, v);
        }
    }
    Ok(c)
}

/// Acknowledgements of the heartbeat producer: reported like the records', never fatal.
struct HeartbeatCtx {
    events: EventSender,
}

impl ClientContext for HeartbeatCtx {
    fn error(&self, err: KafkaError, reason: &str) {
        warn!(target: "librdkafka", error = %err, "heartbeats: {reason}");
    }
}

impl ProducerContext for HeartbeatCtx {
    type DeliveryOpaque = Box<Token>;

    fn delivery(&self, result: &DeliveryResult<'_>, token: Box<Token>) {
        acknowledge(&self.events, result, *token);
    }
}

/// How long a heartbeat may wait for its acknowledgement (a missing heartbeat topic fails it
/// after this long; the records are not affected).
const HEARTBEAT_TIMEOUT_MS: &str = "5000";

pub struct KafkaSink {
    config: ClientConfig,
    /// Heartbeats go through a producer of their own: a heartbeat that fails (e.g. the topic
    /// does not exist) must never end the records' gap-less session. It claims only what the
    /// records' producer had acknowledged before it was built, so no ordering between the two
    /// is needed.
    heartbeats: ThreadedProducer<HeartbeatCtx>,
    plaintext: Option<String>,
    topic: String,
    rejects_topic: String,
    heartbeat_topic: String,
    events: EventSender,
    producer: ThreadedProducer<Ctx>,
}

impl KafkaSink {
    pub fn new(k: &KafkaConfig, events: EventSender) -> Result<Self, SinkError> {
        let config = client_config(k)?;
        let plaintext = (!k.security.uses_tls()).then(|| k.security.security_protocol.clone());
        let producer = Self::producer(&config, &events, &plaintext)?;
        let mut hb = config.clone();
        hb.set("enable.idempotence", "false")
            .set("enable.gapless.guarantee", "false")
            .set("message.timeout.ms", HEARTBEAT_TIMEOUT_MS);
        let heartbeats = hb
            .create_with_context(HeartbeatCtx { events: events.clone() })
            .map_err(|e| SinkError::Producer(e.to_string()))?;
        Ok(KafkaSink {
            config,
            heartbeats,
            plaintext,
            topic: k.topic.clone(),
            rejects_topic: k.rejects_topic.clone(),
            heartbeat_topic: k.heartbeat_topic.clone(),
            events,
            producer,
        })
    }

    fn producer(
        config: &ClientConfig,
        events: &EventSender,
        plaintext: &Option<String>,
    ) -> Result<ThreadedProducer<Ctx>, SinkError> {
        let ctx = Ctx { events: events.clone(), plaintext: plaintext.clone(), dropped: Default::default() };
        config.create_with_context(ctx).map_err(|e| SinkError::Producer(e.to_string()))
    }

    /// Waits up to `timeout` for queued messages (their acks arrive as events).
    pub fn flush(&self, timeout: Duration) {
        let _ = self.producer.flush(timeout);
        let _ = self.heartbeats.flush(Duration::from_millis(500));
    }
}

impl Sink for KafkaSink {
    fn send(&mut self, topic: Topic, key: &[u8], payload: &[u8], token: Token) -> Result<(), SinkError> {
        let name = match topic {
            Topic::Records => &self.topic,
            Topic::Rejects => &self.rejects_topic,
            Topic::Heartbeats => {
                let record =
                    BaseRecord::with_opaque_to(&self.heartbeat_topic, Box::new(token)).key(key).payload(payload);
                // A full queue drops this heartbeat (the next one says the same, newer).
                return self.heartbeats.send(record).map_err(|(e, _)| SinkError::Producer(e.to_string()));
            }
        };
        let mut record = BaseRecord::with_opaque_to(name, Box::new(token)).key(key).payload(payload);
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    // librdkafka's own queue is full: its polling thread drains it.
                    record = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => return Err(SinkError::Producer(e.to_string())),
            }
        }
    }

    fn restart(&mut self) -> Result<(), SinkError> {
        let fresh = Self::producer(&self.config, &self.events, &self.plaintext)?;
        // Dropping the old producer purges its queue; those failures arrive with the old
        // session number and are ignored.
        drop(std::mem::replace(&mut self.producer, fresh));
        Ok(())
    }
}
