//! # sitelog-ingest — from log files to Kafka
//!
//! Owns everything on a web host: access-log formats and their parsers (`format`), reading
//! files, and delivering records to Kafka in the `schema::wire` format.
//!
//! Must not know about: ClickHouse, customers, billing. Its output is the Kafka topic.

pub mod collect;

pub mod format;
pub mod lines;
