//! One plain struct per ClickHouse table, inserted as RowBinary by the `clickhouse` crate.
//! Field order and types follow the migrations exactly.

use std::net::Ipv6Addr;

use serde::{Deserialize, Serialize};

/// A row of `access_log`. `ts` is `DateTime64(6, 'UTC')`: microseconds since the epoch.
#[derive(Debug, Clone, PartialEq, Eq, clickhouse::Row, Serialize, Deserialize)]
pub struct AccessLogRow {
    pub ts: i64,
    pub tz_offset_secs: i32,
    pub site_host: String,
    pub customer_id: String,
    pub site_id: String,
    pub client_ip: Ipv6Addr,
    pub client_net: Ipv6Addr,
    pub remote_user: String,
    pub method: String,
    pub path: String,
    pub query: String,
    pub protocol: String,
    pub status: u16,
    pub bytes_sent: u64,
    pub referer: String,
    pub user_agent: String,
    pub request_time_us: Option<u64>,
    pub upstream_time_us: Option<u64>,
    pub upstream_count: u8,
    pub cache_status: String,
    pub request_class: String,
    pub is_bot: bool,
    pub bot_name: String,
    pub flags: u8,
    pub source_fingerprint: u64,
    pub source_offset: u64,
}
