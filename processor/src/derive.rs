//! From a wire record to an `access_log` row: host normalisation, attribution at the
//! request's time, classification, and the privacy-preserving network of the client.

use sitelog_schema::record::{ip_to_v6, truncated_network};
use sitelog_schema::AccessRecord;

use crate::attribute::{normalize_host, SiteMap};
use crate::classify::{request_class, BotDetector};
use crate::store::rows::AccessLogRow;

/// Builds rows; owns the bot detector's cache.
#[derive(Default)]
pub struct Deriver {
    bots: BotDetector,
}

impl Deriver {
    pub fn new() -> Self {
        Self::default()
    }

    /// The row for `r`; `customer_id`/`site_id` are empty when no site owned the host then.
    pub fn row(&mut self, r: &AccessRecord<'_>, map: &SiteMap) -> AccessLogRow {
        let host = normalize_host(&r.host).unwrap_or_else(|| r.host.to_ascii_lowercase());
        let (customer_id, site_id) = match map.lookup(&host, r.ts_micros) {
            Some(o) => (o.customer_id.to_string(), o.site_id.to_string()),
            None => (String::new(), String::new()),
        };
        let bot = self.bots.bot_name(&r.user_agent);
        AccessLogRow {
            ts: r.ts_micros,
            tz_offset_secs: r.tz_offset_secs,
            site_host: host,
            customer_id,
            site_id,
            client_ip: ip_to_v6(r.client_ip),
            client_net: truncated_network(r.client_ip),
            remote_user: r.remote_user.to_string(),
            method: r.method.to_string(),
            path: r.path.to_string(),
            query: r.query.to_string(),
            protocol: r.protocol.to_string(),
            status: r.status,
            bytes_sent: r.bytes_sent,
            referer: r.referer.to_string(),
            user_agent: r.user_agent.to_string(),
            request_time_us: r.request_time_us,
            upstream_time_us: r.upstream_time_us,
            upstream_count: r.upstream_count,
            cache_status: r.cache_status.to_string(),
            request_class: request_class(&r.method, &r.path, &r.query).as_str().to_owned(),
            is_bot: bot.is_some(),
            bot_name: bot.unwrap_or("").to_owned(),
            flags: r.flags,
            source_fingerprint: r.source.fingerprint,
            source_offset: r.source.offset,
            // Filled by `visitors::VisitorStamper`, which holds the keys.
            visitor_ip_key: 0,
            visitor_ip_ua_key: 0,
            server: r.server.to_string(),
            upstream_status: r.upstream_status,
        }
    }
}
