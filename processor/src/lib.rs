//! # sitelog-processor — from Kafka to ClickHouse
//!
//! Owns the consumer group, attaching requests to customers, derivations (classification,
//! usage, site health), the ClickHouse sink and the schema migrations runner (`store`).
//!
//! Must not know about: log formats, files, tailing. Its input is the Kafka topic.

pub mod attribute;
pub mod billing;
pub mod classify;
pub mod config;
pub mod consume;
pub mod derive;
pub mod diagnosis;
pub mod heartbeat;
pub mod quarantine;
pub mod register;
pub mod retry;
pub mod security;
pub mod serve;
pub mod store;
pub mod topics;
pub mod visitors;
