//! Writing a record as a server with this format would log it: the inverse of parsing, for
//! round-trip tests, benchmarks and sample data.

use std::io::Write;

use sitelog_schema::record::flags;
use sitelog_schema::AccessRecord;

use super::escape::{write_backslash, write_json, Decode};
use super::plan::{DurUnit, Kind};
use super::time::{format_iso8601, format_time_local, EpochUnit};
use super::{Family, LogFormat};

impl LogFormat {
    /// Appends `rec` as one log line (without the newline) to `out`. Fields not in the record
    /// are looked up by name in `extras` (`("$upstream_addr", "10.0.0.1:80")`), else logged
    /// as absent (`-`). Values are escaped as the server escapes them.
    pub fn render(&self, rec: &AccessRecord<'_>, extras: &[(&str, &str)], out: &mut Vec<u8>) {
        let plan = &self.plan;
        out.extend_from_slice(&plan.prefix);
        let mut val = Vec::with_capacity(256);
        for f in &plan.fields {
            val.clear();
            let from_extras = extras.iter().find(|(n, _)| *n == &*f.name).map(|(_, v)| *v);
            match from_extras {
                Some(v) if !f.store => val.extend_from_slice(v.as_bytes()),
                _ => self.value(&f.kind, rec, &mut val),
            }
            let numeric = matches!(
                f.kind,
                Kind::Status { .. }
                    | Kind::Bytes { .. }
                    | Kind::Duration { .. }
                    | Kind::Upstream
                    | Kind::UpstreamStatus
                    | Kind::TimeLocal { .. }
                    | Kind::TimeIso
                    | Kind::TimeEpoch { .. }
                    | Kind::TimeFrac { .. }
            );
            match plan.decode {
                _ if val.is_empty() && plan.decode != Decode::Json => out.push(b'-'),
                _ if numeric => out.extend_from_slice(&val),
                Decode::Backslash => write_backslash(&val, self.family == Family::Apache, out),
                Decode::Json => write_json(&val, out),
                Decode::None => out.extend_from_slice(&val),
            }
            out.extend_from_slice(&f.after);
        }
    }

    fn value(&self, kind: &Kind, r: &AccessRecord<'_>, out: &mut Vec<u8>) {
        let nginx = self.family == Family::Nginx;
        let secs_ms = |us: u64, out: &mut Vec<u8>| {
            let _ = write!(out, "{}.{:03}", us / 1_000_000, us % 1_000_000 / 1000);
        };
        match kind {
            Kind::ClientAddr { .. } => {
                if let Some(ip) = r.client_ip {
                    let _ = write!(out, "{ip}");
                }
            }
            Kind::RemoteUser => out.extend_from_slice(r.remote_user.as_bytes()),
            Kind::TimeLocal { bracketed } => {
                if *bracketed {
                    out.push(b'[');
                }
                format_time_local(r.ts_micros, r.tz_offset_secs, out);
                if *bracketed {
                    out.push(b']');
                }
            }
            Kind::TimeIso => format_iso8601(r.ts_micros, r.tz_offset_secs, out),
            Kind::TimeEpoch { unit } => {
                let us = r.ts_micros;
                let _ = match unit {
                    EpochUnit::Seconds if nginx => {
                        write!(out, "{}.{:03}", us.div_euclid(1_000_000), us.rem_euclid(1_000_000) / 1000)
                    }
                    EpochUnit::Seconds => write!(out, "{}", us.div_euclid(1_000_000)),
                    EpochUnit::Millis => write!(out, "{}", us.div_euclid(1000)),
                    EpochUnit::Micros => write!(out, "{us}"),
                };
            }
            Kind::TimeFrac { scale } => {
                let frac = r.ts_micros.rem_euclid(1_000_000);
                let _ = if *scale == 1 { write!(out, "{frac:06}") } else { write!(out, "{:03}", frac / 1000) };
            }
            Kind::TimeStrftime { fmt, .. } => {
                let off = chrono::FixedOffset::east_opt(r.tz_offset_secs);
                if let (Some(off), Some(dt)) = (off, chrono::DateTime::from_timestamp_micros(r.ts_micros)) {
                    // Through a String: chrono reports a bad specifier as a formatting error,
                    // which `io::Write` would turn into a panic.
                    let mut s = String::new();
                    if std::fmt::Write::write_fmt(&mut s, format_args!("{}", dt.with_timezone(&off).format(fmt)))
                        .is_ok()
                    {
                        out.extend_from_slice(s.as_bytes());
                    }
                }
            }
            Kind::Request => {
                if r.flags & flags::RAW_REQUEST != 0 {
                    out.extend_from_slice(r.path.as_bytes());
                } else {
                    out.extend_from_slice(r.method.as_bytes());
                    out.push(b' ');
                    target(r, true, out);
                    if !r.protocol.is_empty() {
                        out.push(b' ');
                        out.extend_from_slice(r.protocol.as_bytes());
                    }
                }
            }
            Kind::Method => out.extend_from_slice(r.method.as_bytes()),
            Kind::Target { with_query } => target(r, *with_query, out),
            Kind::Query { leading_q } => {
                if *leading_q && !r.query.is_empty() {
                    out.push(b'?');
                }
                out.extend_from_slice(r.query.as_bytes());
            }
            Kind::Protocol => out.extend_from_slice(r.protocol.as_bytes()),
            Kind::Status { .. } => {
                let _ = write!(out, "{}", r.status);
            }
            Kind::Bytes { .. } => {
                let _ = write!(out, "{}", r.bytes_sent);
            }
            Kind::Duration { unit, .. } => {
                if let Some(us) = r.request_time_us {
                    let _ = match unit {
                        DurUnit::Seconds if nginx => {
                            secs_ms(us, out);
                            Ok(())
                        }
                        DurUnit::Seconds => write!(out, "{}", us / 1_000_000),
                        DurUnit::Millis => write!(out, "{}", us / 1000),
                        DurUnit::Micros => write!(out, "{us}"),
                    };
                }
            }
            Kind::Upstream => {
                if let Some(us) = r.upstream_time_us {
                    secs_ms(us, out);
                    for _ in 1..r.upstream_count {
                        out.extend_from_slice(b", 0.000");
                    }
                }
            }
            Kind::UpstreamStatus => {
                if r.upstream_status != 0 {
                    let _ = write!(out, "{}", r.upstream_status);
                }
            }
            Kind::Cache => out.extend_from_slice(r.cache_status.as_bytes()),
            Kind::Host { .. } => out.extend_from_slice(r.host.as_bytes()),
            Kind::Referer => out.extend_from_slice(r.referer.as_bytes()),
            Kind::Agent => out.extend_from_slice(r.user_agent.as_bytes()),
            Kind::Xff | Kind::Other { .. } => {}
        }
    }
}

fn target(r: &AccessRecord<'_>, with_query: bool, out: &mut Vec<u8>) {
    out.extend_from_slice(r.path.as_bytes());
    if with_query && !r.query.is_empty() {
        out.push(b'?');
        out.extend_from_slice(r.query.as_bytes());
    }
}
