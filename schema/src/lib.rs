//! # sitelog-schema — the contract between stages
//!
//! Owns the plain data every stage shares:
//! - [`record::AccessRecord`]: one parsed access-log line (borrowed or owned strings),
//! - [`wire`]: the versioned, compact Kafka message format carrying many records per message,
//! - [`heartbeat::Heartbeat`]: a collector source's delivery progress (billing completeness),
//! - [`reject::Reject`]: an unparseable line with its place (source, line, byte offset),
//! - [`register`]: the customer register export (customers, contacts, sites, plans),
//! - [`migrations`]: the ClickHouse DDL as ordered, checksummed migration files,
//! - [`access`]: every ClickHouse role and user and what each may do (one table-driven definition),
//! - [`cluster`]: the migrations' DDL for a ClickHouse cluster (Replicated, Distributed),
//! - [`ttl`]: the TTLs `[retention]` decides and reading the ones in force from DDL text.
//!
//! Must not know about: I/O, tokio, Kafka clients, ClickHouse clients, file tailing. It is
//! small and boring on purpose: `ingest` and `processor` both depend on it and never on each
//! other.

pub mod access;
pub mod cluster;
pub mod heartbeat;
pub mod kafka;
pub mod migrations;
pub mod record;
pub mod register;
pub mod reject;
pub mod ttl;
pub mod wire;

pub use record::{AccessRecord, SourceId};
pub use reject::Reject;
