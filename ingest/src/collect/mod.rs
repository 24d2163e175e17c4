//! `sitelog collect`: follow access logs through rotations and deliver every line to Kafka
//! exactly once by source identity.
//!
//! Stages, in the order a line meets them:
//! - [`config`]: the `collector.toml` file;
//! - [`pattern`]: path globs with a `{site}` capture, discovery;
//! - [`fingerprint`]: file identity from the first line;
//! - [`reader`] + [`split`]: resumable reading of plain and gzip files into lines;
//! - [`batch`]: parse ([`parse`]), pack per (file, host) into `schema::wire` batches, rejects,
//!   per-file acknowledgement tracking;
//! - [`sink`] / [`deliver`]: the idempotent Kafka producer;
//! - [`checkpoint`]: durable, atomic per-fingerprint progress;
//! - [`engine`]: the loop tying them together, rotations, backpressure, shutdown.
//!
//! Invariant: a checkpoint never covers a line whose message Kafka has not acknowledged.

pub mod batch;
pub mod checkpoint;
pub mod config;
pub mod deliver;
pub mod engine;
pub mod fingerprint;
pub mod metrics;
pub mod parse;
pub mod pattern;
pub mod reader;
pub mod sink;
pub mod split;
pub mod watch;

#[cfg(test)]
mod tests;

pub use config::CollectorConfig;
pub use engine::{CollectError, Collector, Mode, Stats};
