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
    /// Keyed visitor identities (`visitors::VisitorStamper`); 0 = none. The usage rollup
    /// counts these, never an address or a keyless hash of one.
    pub visitor_ip_key: u64,
    pub visitor_ip_ua_key: u64,
    /// The web server that logged the record (wire v2); empty from v1 collectors.
    pub server: String,
    /// `$upstream_status` of the last upstream; 0 = absent.
    pub upstream_status: u16,
}

impl Default for AccessLogRow {
    fn default() -> Self {
        AccessLogRow {
            ts: 0,
            tz_offset_secs: 0,
            site_host: String::new(),
            customer_id: String::new(),
            site_id: String::new(),
            client_ip: Ipv6Addr::UNSPECIFIED,
            client_net: Ipv6Addr::UNSPECIFIED,
            remote_user: String::new(),
            method: String::new(),
            path: String::new(),
            query: String::new(),
            protocol: String::new(),
            status: 0,
            bytes_sent: 0,
            referer: String::new(),
            user_agent: String::new(),
            request_time_us: None,
            upstream_time_us: None,
            upstream_count: 0,
            cache_status: String::new(),
            request_class: String::new(),
            is_bot: false,
            bot_name: String::new(),
            flags: 0,
            source_fingerprint: 0,
            source_offset: 0,
            visitor_ip_key: 0,
            visitor_ip_ua_key: 0,
            server: String::new(),
            upstream_status: 0,
        }
    }
}
