//! The pages: what each reads (as which role) and how it is shown. Every section reads on its
//! own; a table that does not exist (a feature not installed in this database) is said plainly
//! in its section, any other failure makes the page a 500 with the message in the section.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use hyper::StatusCode;
use serde::Deserialize;
use sitelog_processor::billing::{self, Month, RunOptions};
use sitelog_processor::diagnosis::health::{self, Window};
use sitelog_processor::diagnosis::incidents::{self, IncidentError, IncidentRow};
use sitelog_processor::diagnosis::notify::rfc3339;
use sitelog_processor::security::investigate as inv;
use sitelog_processor::security::query::{self as secq, EventQuery};

use super::html::{esc, line_chart, num, pct, section, seg, table, unseg, Nav, Page, Series};
use super::Console;

/// The reason written to `access_audit` when a page shows addresses or contacts.
pub const AUDIT_REASON: &str = "web console";

const OPS: &str = "sitelog_ops";

/// Collects the page's sections and whether anything failed.
struct Out {
    status: StatusCode,
    body: String,
}

impl Out {
    fn new() -> Out {
        Out { status: StatusCode::OK, body: String::new() }
    }

    fn push(&mut self, s: String) {
        self.body.push_str(&s);
    }

    /// A section's failure: a missing table says so plainly; anything else is an error.
    fn failed(&mut self, title: &str, what: &str, e: &dyn std::fmt::Display) {
        let msg = e.to_string();
        let inner = if is_missing_table(&msg) {
            format!(
                "<p class=\"missing\">Not available: {} needs a table this database does not have yet \
                 (the feature is not installed here: run <code>sitelog schema migrate</code>). ({})</p>",
                esc(what),
                esc(&first_line(&msg))
            )
        } else {
            self.status = StatusCode::INTERNAL_SERVER_ERROR;
            tracing::warn!("{what}: {msg}");
            format!("<p class=\"error\">Could not read {}: {}</p>", esc(what), esc(&first_line(&msg)))
        };
        self.push(section(title, &inner));
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").chars().take(400).collect()
}

/// ClickHouse's "unknown table" (code 60) or a missing column's table, in its words.
pub fn is_missing_table(msg: &str) -> bool {
    msg.contains("UNKNOWN_TABLE")
        || msg.contains("Code: 60")
        || msg.contains("does not exist")
        || msg.contains("doesn't exist")
}

fn query_params(q: &str) -> BTreeMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (unseg(&k.replace('+', " ")), unseg(&v.replace('+', " ")))
        })
        .collect()
}

fn days_param(q: &BTreeMap<String, String>, default: i64) -> i64 {
    q.get("days").and_then(|d| d.parse::<i64>().ok()).filter(|d| (1..=31).contains(d)).unwrap_or(default)
}

fn ms(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.2} s", v / 1000.0)
    } else {
        format!("{v:.0} ms")
    }
}

/// Routes a GET to its page.
pub async fn route(c: &Console, path: &str, query: &str, login: &str) -> (StatusCode, Page) {
    let now = match crate::clock::now() {
        Ok(t) => t,
        Err(e) => return error_page(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let q = query_params(query);
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        [""] => now_page(c, now).await,
        ["incidents", id] if !id.is_empty() => incident_page(c, &unseg(id), now, login, path).await,
        ["security"] => security_page(c, now, days_param(&q, 1), login, path).await,
        ["security", "ip", addr] if !addr.is_empty() => {
            ip_page(c, &unseg(addr), now, days_param(&q, 7), login, path).await
        }
        ["sites", host] if !host.is_empty() => site_page(c, &unseg(host).to_ascii_lowercase(), now, login, path).await,
        ["usage"] => usage_page(c, q.get("month").map(String::as_str), now).await,
        _ => error_page(StatusCode::NOT_FOUND, &format!("No page {path}")),
    }
}

fn error_page(status: StatusCode, msg: &str) -> (StatusCode, Page) {
    let page = Page {
        title: status.canonical_reason().unwrap_or("Error").to_owned(),
        role: "none".into(),
        nav: Nav::None,
        body: section("What happened", &format!("<p class=\"error\">{}</p>", esc(msg))),
        refresh: 0,
    };
    (status, page)
}

fn ops_role(c: &Console) -> String {
    format!("{OPS} (ClickHouse user {})", c.cfg.serve.clickhouse_user)
}

/// Writes who looked at what before anything personal is shown.
async fn audit(c: &Console, login: &str, path: &str) -> Result<(), clickhouse::error::Error> {
    c.ops
        .query(
            "INSERT INTO access_audit (ts, os_user, db_user, command, arguments, reason) \
             VALUES (now64(3), ?, ?, ?, ?, ?)",
        )
        .bind(login)
        .bind(&c.cfg.serve.clickhouse_user)
        .bind("serve")
        .bind(path)
        .bind(AUDIT_REASON)
        .execute()
        .await
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct Bucket {
    t: u32,
    requests: u64,
    errors: u64,
    p95_us: f64,
}

/// One point per step in `[from, to)`: buckets without requests count 0 (a gap in the data is
/// a dip in the chart, not a straight line across it).
fn filled(b: &[Bucket], from: i64, to: i64, step: i64) -> Vec<Bucket> {
    let by: BTreeMap<i64, &Bucket> = b.iter().map(|x| (i64::from(x.t), x)).collect();
    let mut out = Vec::new();
    let mut t = from.div_euclid(step) * step;
    while t < to {
        let x = by.get(&t);
        out.push(Bucket {
            t: t as u32,
            requests: x.map_or(0, |x| x.requests),
            errors: x.map_or(0, |x| x.errors),
            p95_us: x.map_or(0.0, |x| x.p95_us),
        });
        t += step;
    }
    out
}

/// Per-interval requests, 5xx and p95 request time from `health_minute` in `[from, to)`,
/// for the hosts `hosts` (all when empty).
async fn buckets(
    c: &Console,
    from: i64,
    to: i64,
    step_secs: u32,
    hosts: &[String],
) -> Result<Vec<Bucket>, clickhouse::error::Error> {
    c.ops
        .query(
            "SELECT toUInt32(intDiv(toUInt32(minute), ?) * ?) AS t, sum(requests) AS requests, \
             sum(status_5xx) AS errors, \
             arrayElement(arrayMap(x -> if(isNaN(x), 0., toFloat64(x)), quantilesTDigestMerge(0.5, 0.95, 0.99)(request_time_us)), 2) AS p95_us \
             FROM health_minute WHERE minute >= toDateTime(toUInt32(?), 'UTC') AND minute < toDateTime(toUInt32(?), 'UTC') \
             AND (empty(?) OR has(?, site_host)) GROUP BY t ORDER BY t",
        )
        .bind(step_secs)
        .bind(step_secs)
        .bind(from.max(0) as u64)
        .bind(to.max(0) as u64)
        .bind(hosts)
        .bind(hosts)
        .fetch_all()
        .await
}

fn incident_rows(list: &[IncidentRow]) -> String {
    let rows: Vec<(String, Vec<String>)> = list
        .iter()
        .map(|r| {
            let subject = match r.kind.as_str() {
                "site" => format!("<a href=\"/sites/{}\">{}</a>", seg(&r.site_host), esc(&r.site_host)),
                "server" => format!("server {} ({} sites)", esc(&r.server), r.sites.len()),
                _ => format!("platform: {} servers, {} sites", r.servers.len(), r.sites.len()),
            };
            (
                format!(" data-incident=\"{}\"", esc(&r.id)),
                vec![
                    format!("<a href=\"/incidents/{}\">{}</a>", seg(&r.id), esc(&r.id)),
                    esc(&r.kind),
                    esc(&r.cause),
                    subject,
                    rfc3339(i64::from(r.opened_at)),
                    r.resolved_at.map(|t| rfc3339(i64::from(t))).unwrap_or_else(|| "<b class=\"bad\">open</b>".into()),
                    r.customers.len().to_string(),
                    pct(r.peak_error_ratio),
                ],
            )
        })
        .collect();
    table(&["id", "kind", "cause", "subject", "opened", "resolved", "#customers", "#peak 5xx"], &rows)
}

fn health_rows(list: &[health::Health], sites: bool) -> String {
    let rows: Vec<(String, Vec<String>)> = list
        .iter()
        .map(|h| {
            let p95 = h.request_time_ms.map(|q| ms(q.p95)).unwrap_or_else(|| "–".into());
            let ratio = if h.failing() {
                format!("<span class=\"bad\">{}</span>", pct(h.assessment.error_ratio))
            } else {
                pct(h.assessment.error_ratio)
            };
            let mut cells = Vec::new();
            if sites {
                cells.push(format!("<a href=\"/sites/{}\">{}</a>", seg(&h.site_host), esc(&h.site_host)));
            }
            cells.push(esc(&h.server));
            if !sites {
                cells.push(format!("{}/{}", h.failing_sites, h.sites));
            }
            cells.extend([num(h.requests), num(h.status_5xx), ratio, format!("{:.1}", h.assessment.burn_rate), p95]);
            (String::new(), cells)
        })
        .collect();
    if sites {
        table(&["site", "server", "#requests", "#5xx", "#5xx ratio", "#burn", "#p95"], &rows)
    } else {
        table(&["server", "failing sites", "#requests", "#5xx", "#5xx ratio", "#burn", "#p95"], &rows)
    }
}

async fn now_page(c: &Console, now: DateTime<Utc>) -> (StatusCode, Page) {
    let n = now.timestamp();
    let objective = c.cfg.health.objective;
    let hour = Window { from_us: (n - 3600) * 1_000_000, to_us: now.timestamp_micros() + 1 };
    let all = health::Filter::default();
    let (open, recent, sites, servers, chart, marks) = tokio::join!(
        incidents::open_at(&c.ops, n),
        incidents::list(&c.ops, n - 7 * 86_400, n + 1),
        health::sites(&c.ops, hour, &all, objective),
        health::servers(&c.ops, hour, &[], objective),
        buckets(c, n - 86_400, n, 600, &[]),
        billing::complete::latest(&c.ops),
    );
    let mut o = Out::new();
    match open {
        Ok(list) if list.is_empty() => o.push(section("Open incidents", "<p class=\"ok\">No open incident.</p>")),
        Ok(list) => o.push(section(&format!("Open incidents ({})", list.len()), &incident_rows(&list))),
        Err(e) => o.failed("Open incidents", "incidents", &e),
    }
    // The ten worst of each, side by side; a failed read says so in its own box.
    let mut grid = String::new();
    for (title, list, is_site) in
        [("Worst sites, last hour", sites, true), ("Worst servers, last hour", servers, false)]
    {
        match list {
            Ok(list) => {
                let top: Vec<_> = list.into_iter().take(10).collect();
                grid.push_str(&section(title, &health_rows(&top, is_site)));
            }
            Err(e) => {
                let mut s = Out::new();
                s.failed(title, "health_minute", &e);
                o.status = o.status.max(s.status);
                grid.push_str(&s.body);
            }
        }
    }
    o.push(format!("<div class=\"grid\">{grid}</div>"));
    match chart {
        Ok(b) => {
            let total: u64 = b.iter().map(|x| x.requests).sum();
            let b = filled(&b, n - 86_400, n, 600);
            let errors: u64 = b.iter().map(|x| x.errors).sum();
            let rate = Series {
                name: "requests per minute",
                color: "#2455a4",
                points: b.iter().map(|x| (i64::from(x.t), x.requests as f64 / 10.0)).collect(),
            };
            let ratio = Series {
                name: "5xx ratio",
                color: "#c0392b",
                points: b
                    .iter()
                    .map(|x| (i64::from(x.t), if x.requests == 0 { 0.0 } else { x.errors as f64 / x.requests as f64 }))
                    .collect(),
            };
            let mut s = format!(
                "<div class=\"figures\"><div>requests, 24 h<b id=\"platform-requests\" data-value=\"{total}\">{}</b></div>\
                 <div>5xx, 24 h<b id=\"platform-5xx\" data-value=\"{errors}\">{}</b></div>\
                 <div>5xx ratio<b>{}</b></div></div>",
                num(total),
                num(errors),
                pct(if total == 0 { 0.0 } else { errors as f64 / total as f64 })
            );
            s.push_str(&line_chart(
                "platform request rate, 24 h",
                n - 86_400,
                n,
                &[rate],
                &|v| format!("{v:.0}/min"),
                &[],
            ));
            s.push_str(&line_chart("platform 5xx ratio, 24 h", n - 86_400, n, &[ratio], &|v| pct(v), &[]));
            o.push(section("Platform, last 24 hours (10-minute steps)", &s));
        }
        Err(e) => o.failed("Platform, last 24 hours", "health_minute", &e),
    }
    match marks {
        Ok(list) => {
            let rows: Vec<(String, Vec<String>)> = list
                .iter()
                .map(|m| {
                    let behind = (now - m.delivered_through).num_seconds().max(0);
                    let hb_age = (now - m.sent_at).num_seconds().max(0);
                    let state = if m.idle {
                        "<span class=\"ok\">idle (all read and delivered)</span>".to_owned()
                    } else if behind > 600 {
                        format!("<span class=\"bad\">{} behind</span>", human_secs(behind))
                    } else {
                        format!("<span class=\"ok\">{} behind</span>", human_secs(behind))
                    };
                    (
                        format!(
                            " data-source=\"{}/{}\" data-behind=\"{}\"",
                            esc(&m.server),
                            esc(&m.source),
                            if m.idle { 0 } else { behind }
                        ),
                        vec![
                            esc(&m.server),
                            esc(&m.source),
                            m.delivered_through.format("%Y-%m-%d %H:%M:%S").to_string(),
                            state,
                            human_secs(hb_age),
                        ],
                    )
                })
                .collect();
            let inner = if rows.is_empty() {
                "<p class=\"warn\">No collector heartbeat yet.</p>".to_owned()
            } else {
                table(&["server", "source", "delivered through (UTC)", "behind now", "last heartbeat, ago"], &rows)
            };
            o.push(section("Data freshness per collector source", &inner));
        }
        Err(e) => o.failed("Data freshness per collector source", "collector_heartbeats", &e),
    }
    match recent {
        Ok(list) if list.is_empty() => o.push(section("Incidents, last 7 days", "<p>None.</p>")),
        Ok(list) => o.push(section(&format!("Incidents, last 7 days ({})", list.len()), &incident_rows(&list))),
        Err(e) => o.failed("Incidents, last 7 days", "incidents", &e),
    }
    let page =
        Page { title: "Now".into(), role: ops_role(c), nav: Nav::Now, body: o.body, refresh: c.cfg.serve.refresh_secs };
    (o.status, page)
}

fn human_secs(s: i64) -> String {
    match s {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{:.1} h", s as f64 / 3600.0),
        s => format!("{:.1} d", s as f64 / 86_400.0),
    }
}

async fn incident_page(c: &Console, id: &str, now: DateTime<Utc>, login: &str, path: &str) -> (StatusCode, Page) {
    let r = match incidents::get(&c.ops, id).await {
        Ok(r) => r,
        Err(IncidentError::NotFound(_)) => return error_page(StatusCode::NOT_FOUND, &format!("No incident {id}")),
        Err(e) => {
            let mut o = Out::new();
            o.failed("Incident", "incidents", &e);
            let page =
                Page { title: format!("Incident {id}"), role: ops_role(c), nav: Nav::None, body: o.body, refresh: 0 };
            return (o.status, page);
        }
    };
    let mut o = Out::new();
    let opened = i64::from(r.opened_at);
    let end = r.resolved_at.map(i64::from).unwrap_or(now.timestamp());
    let (from, to) = (opened - 1800, (end + 1800).min(now.timestamp().max(end)));
    let subject = match r.kind.as_str() {
        "site" => {
            format!("site <a href=\"/sites/{}\">{}</a> on {}", seg(&r.site_host), esc(&r.site_host), esc(&r.server))
        }
        "server" => format!("server {}", esc(&r.server)),
        _ => "the platform".into(),
    };
    o.push(section(
        "What",
        &format!(
            "<div class=\"figures\"><div>kind<b>{}</b></div><div>cause<b>{}</b></div><div>opened<b>{}</b></div>\
             <div>resolved<b>{}</b></div><div>requests<b>{}</b></div><div>5xx<b>{}</b></div><div>peak minute 5xx<b>{}</b></div></div>\
             <p>{} · servers: {} · sites: {}</p>",
            esc(&r.kind),
            esc(&r.cause),
            rfc3339(opened),
            r.resolved_at.map(|t| rfc3339(i64::from(t))).unwrap_or_else(|| "open".into()),
            num(r.requests),
            num(r.errors),
            pct(r.peak_error_ratio),
            subject,
            esc(&r.servers.join(", ")),
            r.sites.iter().map(|s| format!("<a href=\"/sites/{}\">{}</a>", seg(s), esc(s))).collect::<Vec<_>>().join(", ")
        ),
    ));
    let (timeline, contacts) = tokio::join!(buckets(c, from, to, 60, &r.sites), async {
        audit(c, login, path).await.map_err(|e| e.to_string())?;
        incidents::contacts(&c.ops, &r.customers).await.map_err(|e| e.to_string())
    });
    match timeline {
        Ok(b) => {
            let b = filled(&b, from, to, 60);
            let mut marks = vec![(opened, "opened")];
            if let Some(t) = r.resolved_at {
                marks.push((i64::from(t), "resolved"));
            }
            let ratio = Series {
                name: "5xx ratio of the affected sites",
                color: "#c0392b",
                points: b
                    .iter()
                    .map(|x| (i64::from(x.t), if x.requests == 0 { 0.0 } else { x.errors as f64 / x.requests as f64 }))
                    .collect(),
            };
            let p95 = Series {
                name: "request time p95 (ms) of the affected sites",
                color: "#2455a4",
                points: b.iter().map(|x| (i64::from(x.t), x.p95_us / 1000.0)).collect(),
            };
            let mut s = line_chart("5xx ratio", from, to, &[ratio], &|v| pct(v), &marks);
            s.push_str(&line_chart("latency p95", from, to, &[p95], &|v| ms(v), &marks));
            o.push(section("Timeline (per minute, 30 min around the incident)", &s));
        }
        Err(e) => o.failed("Timeline", "health_minute", &e),
    }
    match contacts {
        Ok(list) => {
            let names: BTreeMap<&str, &str> =
                list.iter().map(|p| (p.customer_id.as_str(), p.company_name.as_str())).collect();
            let rows: Vec<(String, Vec<String>)> = r
                .customers
                .iter()
                .map(|cu| {
                    (
                        format!(" data-customer=\"{}\"", esc(cu)),
                        vec![esc(cu), esc(names.get(cu.as_str()).copied().unwrap_or(""))],
                    )
                })
                .collect();
            o.push(section(
                &format!("Affected customers ({})", r.customers.len()),
                &table(&["customer", "company"], &rows),
            ));
            let rows: Vec<(String, Vec<String>)> = list
                .iter()
                .map(|p| {
                    (
                        String::new(),
                        vec![
                            esc(&p.customer_id),
                            esc(&p.name),
                            if p.email.is_empty() {
                                String::new()
                            } else {
                                format!("<a href=\"mailto:{0}\">{0}</a>", esc(&p.email))
                            },
                            esc(&p.phone),
                            esc(&p.role),
                        ],
                    )
                })
                .collect();
            o.push(section(
                "Contacts (current register; this view is recorded in access_audit)",
                &table(&["customer", "name", "email", "phone", "role"], &rows),
            ));
        }
        Err(e) => o.failed("Affected customers and contacts", "the register's contacts", &e),
    }
    let page =
        Page { title: format!("Incident {}", r.id), role: ops_role(c), nav: Nav::None, body: o.body, refresh: 0 };
    (o.status, page)
}

fn sev_class(s: &str) -> &'static str {
    match inv::severity_rank(s) {
        r if r >= 3 => "bad",
        2 => "warn",
        _ => "",
    }
}

async fn security_page(c: &Console, now: DateTime<Utc>, days: i64, login: &str, path: &str) -> (StatusCode, Page) {
    let mut o = Out::new();
    let q = EventQuery {
        from_us: (now - chrono::Duration::days(days)).timestamp_micros(),
        to_us: now.timestamp_micros() + 1,
        cross_tenant_customers: c.cfg.security.cross_tenant_customers,
        window_secs: c.cfg.security.cross_tenant_window_secs,
        ..EventQuery::default()
    };
    let picked = [1, 7, 31]
        .iter()
        .map(|d| if *d == days { format!("<b>{d} d</b>") } else { format!("<a href=\"/security?days={d}\">{d} d</a>") })
        .collect::<Vec<_>>()
        .join(" · ");
    o.push(format!("<p>Window: last {days} days ({picked}). Addresses shown here are recorded in access_audit.</p>"));
    let events = async {
        audit(c, login, path).await.map_err(|e| e.to_string())?;
        secq::events(&c.ops, &q).await.map_err(|e| e.to_string())
    }
    .await;
    match events {
        Ok(mut list) => {
            // Top sources: events, requests, sites, customers, worst severity.
            type Agg<'a> = (u64, u64, BTreeSet<&'a str>, BTreeSet<&'a str>, &'a str);
            let mut by: BTreeMap<&str, Agg> = BTreeMap::new();
            for e in &list {
                let s = by.entry(e.source.as_str()).or_insert((0, 0, BTreeSet::new(), BTreeSet::new(), ""));
                s.0 += 1;
                s.1 += e.count;
                if !e.site_host.is_empty() {
                    s.2.insert(&e.site_host);
                }
                if !e.customer_id.is_empty() {
                    s.3.insert(&e.customer_id);
                }
                for cu in &e.customers {
                    s.3.insert(cu);
                }
                if inv::severity_rank(&e.severity) > inv::severity_rank(s.4) {
                    s.4 = &e.severity;
                }
            }
            let mut top: Vec<_> = by.into_iter().collect();
            top.sort_by(|a, b| b.1 .1.cmp(&a.1 .1).then(a.0.cmp(b.0)));
            let rows: Vec<(String, Vec<String>)> = top
                .iter()
                .take(20)
                .map(|(src, (n, count, sites, customers, sev))| {
                    (
                        format!(" data-source=\"{}\"", esc(src)),
                        vec![
                            format!("<a href=\"/security/ip/{}\">{}</a>", seg(src), esc(src)),
                            n.to_string(),
                            num(*count),
                            sites.len().to_string(),
                            customers.len().to_string(),
                            format!("<span class=\"{}\">{}</span>", sev_class(sev), esc(sev)),
                        ],
                    )
                })
                .collect();
            o.push(section(
                &format!("Top sources ({} sources)", top.len()),
                &table(&["source", "#events", "#requests", "#sites", "#customers", "worst severity"], &rows),
            ));
            list.sort_by(|a, b| b.last_seen.cmp(&a.last_seen).then(a.source.cmp(&b.source)));
            let rows: Vec<(String, Vec<String>)> = list
                .iter()
                .take(200)
                .map(|e| {
                    let site = if e.site_host.is_empty() {
                        format!("{} customers", e.customers.len())
                    } else {
                        format!("<a href=\"/sites/{}\">{}</a>", seg(&e.site_host), esc(&e.site_host))
                    };
                    (
                        " data-event=\"1\"".to_owned(),
                        vec![
                            esc(&e.last_seen),
                            esc(&e.scenario),
                            format!("<a href=\"/security/ip/{}\">{}</a>", seg(&e.source), esc(&e.source)),
                            site,
                            esc(&e.customer_id),
                            num(e.count),
                            format!("<span class=\"{}\">{}</span>", sev_class(&e.severity), esc(&e.severity)),
                        ],
                    )
                })
                .collect();
            o.push(format!(
                "<section><h2>Recent events (<span id=\"event-count\" data-value=\"{0}\">{0}</span>, newest first{1})</h2>{2}</section>",
                list.len(),
                if list.len() > 200 { ", 200 shown" } else { "" },
                table(&["last seen", "scenario", "source", "site", "customer", "#requests", "severity"], &rows)
            ));
        }
        Err(e) => o.failed("Security events", "security_events", &e),
    }
    let page = Page {
        title: "Security".into(),
        role: format!("{} — reading addresses is recorded in access_audit", ops_role(c)),
        nav: Nav::Security,
        body: o.body,
        refresh: 0,
    };
    (o.status, page)
}

async fn ip_page(
    c: &Console,
    addr: &str,
    now: DateTime<Utc>,
    days: i64,
    login: &str,
    path: &str,
) -> (StatusCode, Page) {
    let cidr6 = match inv::to_cidr6(addr) {
        Ok(c) => c,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, &e),
    };
    let prefix: u32 = cidr6.rsplit('/').next().and_then(|b| b.parse().ok()).unwrap_or(128);
    let (from, to) = ((now - chrono::Duration::days(days)).timestamp_micros(), now.timestamp_micros() + 1);
    let mut o = Out::new();
    let got = async {
        audit(c, login, path).await.map_err(|e| e.to_string())?;
        let (sites, events) =
            tokio::join!(inv::ip_sites(&c.ops, &cidr6, prefix, from, to), inv::ip_events(&c.ops, &cidr6, from, to));
        Ok::<_, String>((sites.map_err(|e| e.to_string())?, events.map_err(|e| e.to_string())?))
    }
    .await;
    match got {
        Ok((sites, events)) => {
            let total: u64 = sites.iter().map(|s| s.requests).sum();
            let customers: BTreeSet<&str> = sites.iter().map(|s| s.customer_id.as_str()).collect();
            let first = sites.iter().map(|s| s.first_seen).min().map(secq::rfc3339).unwrap_or_default();
            let last = sites.iter().map(|s| s.last_seen).max().map(secq::rfc3339).unwrap_or_default();
            o.push(section(
                &format!("Last {days} days"),
                &format!(
                    "<div class=\"figures\"><div>requests<b id=\"ip-requests\" data-value=\"{total}\">{}</b></div>\
                     <div>sites<b>{}</b></div><div>customers<b>{}</b></div><div>first seen<b>{}</b></div>\
                     <div>last seen<b>{}</b></div></div>",
                    num(total),
                    sites.len(),
                    customers.len(),
                    esc(&first),
                    esc(&last)
                ),
            ));
            let rows: Vec<(String, Vec<String>)> = sites
                .iter()
                .map(|s| {
                    (
                        format!(" data-site=\"{}\" data-requests=\"{}\"", esc(&s.site_host), s.requests),
                        vec![
                            format!("<a href=\"/sites/{}\">{}</a>", seg(&s.site_host), esc(&s.site_host)),
                            esc(&s.customer_id),
                            num(s.requests),
                            num(s.s2xx),
                            num(s.s3xx),
                            num(s.s4xx),
                            num(s.s5xx),
                            num(s.logins),
                            secq::rfc3339(s.first_seen),
                            secq::rfc3339(s.last_seen),
                        ],
                    )
                })
                .collect();
            o.push(section(
                "Requests per site",
                &table(
                    &["site", "customer", "#requests", "#2xx", "#3xx", "#4xx", "#5xx", "#logins", "first", "last"],
                    &rows,
                ),
            ));
            let rows: Vec<(String, Vec<String>)> = events
                .iter()
                .map(|e| {
                    (
                        String::new(),
                        vec![
                            secq::rfc3339(e.first_seen_us),
                            secq::rfc3339(e.last_seen_us),
                            esc(&e.scenario),
                            esc(&e.source),
                            format!("<a href=\"/sites/{}\">{}</a>", seg(&e.site_host), esc(&e.site_host)),
                            esc(&e.customer_id),
                            num(e.count),
                            format!("<span class=\"{}\">{}</span>", sev_class(&e.severity), esc(&e.severity)),
                        ],
                    )
                })
                .collect();
            o.push(section(
                &format!("Security events ({})", events.len()),
                &table(&["first", "last", "scenario", "source", "site", "customer", "#requests", "severity"], &rows),
            ));
        }
        Err(e) => o.failed("Address timeline", "access_log / security_events", &e),
    }
    let page = Page {
        title: format!("Address {addr}"),
        role: format!("{} — this view is recorded in access_audit", ops_role(c)),
        nav: Nav::Security,
        body: o.body,
        refresh: 0,
    };
    (o.status, page)
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct UsageDay {
    site_id: String,
    customer_id: String,
    day: String,
    requests: u64,
    bytes_sent: u64,
    bot_requests: u64,
    visitors_ip: u64,
}

async fn site_usage(
    c: &Console,
    host: &str,
    month: Month,
) -> Result<(Vec<UsageDay>, Vec<UsageDay>), clickhouse::error::Error> {
    let ids: Vec<String> = c
        .ops
        .query("SELECT DISTINCT site_id FROM usage_daily WHERE site_host = ? AND site_id != '' ORDER BY site_id")
        .bind(host)
        .fetch_all()
        .await?;
    let first = month.first_day();
    let last = month.next().first_day();
    let sql = |group: &str, day: &str| {
        format!(
            "SELECT site_id, any(customer_id) AS customer_id, {day} AS day, sum(requests) AS requests, \
             sum(bytes_sent) AS bytes_sent, sum(bot_requests) AS bot_requests, uniqExactMerge(visitors_ip) AS visitors_ip \
             FROM (SELECT * FROM usage_daily WHERE (if(empty(?), site_host = ?, has(?, site_id))) \
             AND day >= toDate(?) AND day < toDate(?)) GROUP BY {group} ORDER BY {group}"
        )
    };
    let fetch = |q: String| {
        c.ops
            .query(&q)
            .bind(&ids)
            .bind(host)
            .bind(&ids)
            .bind(first.to_string())
            .bind(last.to_string())
            .fetch_all::<UsageDay>()
    };
    let (days, month_total) = tokio::join!(fetch(sql("site_id, day", "toString(day)")), fetch(sql("site_id", "''")));
    Ok((days?, month_total?))
}

async fn site_page(c: &Console, host: &str, now: DateTime<Utc>, login: &str, path: &str) -> (StatusCode, Page) {
    let n = now.timestamp();
    let day = Window { from_us: (n - 86_400) * 1_000_000, to_us: now.timestamp_micros() + 1 };
    let filter = health::Filter { site: Some(host.to_owned()), server: None };
    let month = Month::of_day(now.with_timezone(&chrono_tz::Europe::Helsinki).date_naive());
    let hosts = vec![host.to_owned()];
    let (from_us, to_us) = ((now - chrono::Duration::days(7)).timestamp_micros(), now.timestamp_micros() + 1);
    let (hl, chart, mix, events, usage) = tokio::join!(
        health::sites(&c.ops, day, &filter, c.cfg.health.objective),
        buckets(c, n - 86_400, n, 600, &hosts),
        inv::site_mix(&c.ops, host, day.from_us, day.to_us),
        async {
            audit(c, login, path).await.map_err(|e| e.to_string())?;
            inv::site_events(&c.ops, host, from_us, to_us).await.map_err(|e| e.to_string())
        },
        site_usage(c, host, month),
    );
    let mut o = Out::new();
    match (hl, chart) {
        (Ok(list), Ok(b)) => {
            let b = filled(&b, n - 86_400, n, 600);
            let requests: u64 = list.iter().map(|h| h.requests).sum();
            let errors: u64 = list.iter().map(|h| h.status_5xx).sum();
            let mut s = format!(
                "<div class=\"figures\"><div>requests, 24 h<b id=\"site-requests-24h\" data-value=\"{requests}\">{}</b></div>\
                 <div>5xx, 24 h<b>{}</b></div><div>5xx ratio<b>{}</b></div></div>",
                num(requests),
                num(errors),
                pct(if requests == 0 { 0.0 } else { errors as f64 / requests as f64 })
            );
            let rate = Series {
                name: "requests per minute",
                color: "#2455a4",
                points: b.iter().map(|x| (i64::from(x.t), x.requests as f64 / 10.0)).collect(),
            };
            let p95 = Series {
                name: "request time p95 (ms)",
                color: "#b9770e",
                points: b.iter().map(|x| (i64::from(x.t), x.p95_us / 1000.0)).collect(),
            };
            s.push_str(&line_chart("site traffic, 24 h", n - 86_400, n, &[rate], &|v| format!("{v:.1}/min"), &[]));
            s.push_str(&line_chart("site latency p95, 24 h", n - 86_400, n, &[p95], &|v| ms(v), &[]));
            s.push_str("<h2>Per web server (latency p50 / p95 / p99)</h2>");
            let rows: Vec<(String, Vec<String>)> = list
                .iter()
                .map(|h| {
                    let q = |x: Option<health::Quantiles>| {
                        x.map(|q| format!("{} / {} / {}", ms(q.p50), ms(q.p95), ms(q.p99)))
                            .unwrap_or_else(|| "–".into())
                    };
                    (
                        String::new(),
                        vec![
                            esc(&h.server),
                            num(h.requests),
                            num(h.status_4xx),
                            num(h.status_5xx),
                            pct(h.assessment.availability),
                            q(h.request_time_ms),
                            q(h.upstream_time_ms),
                        ],
                    )
                })
                .collect();
            s.push_str(&table(
                &["server", "#requests", "#4xx", "#5xx", "#availability", "request time", "upstream time"],
                &rows,
            ));
            o.push(section("Traffic and latency, last 24 hours", &s));
        }
        (Err(e), _) | (_, Err(e)) => o.failed("Traffic and latency", "health_minute", &e),
    }
    match mix {
        Ok(m) => {
            let total = m.requests.max(1) as f64;
            let rows: Vec<(String, Vec<String>)> = [("2xx", m.s2xx), ("3xx", m.s3xx), ("4xx", m.s4xx), ("5xx", m.s5xx)]
                .iter()
                .map(|(k, v)| (String::new(), vec![k.to_string(), num(*v), pct(*v as f64 / total)]))
                .collect();
            let mut s = table(&["status", "#requests", "#share"], &rows);
            let _ = write!(
                s,
                "<p>Bots: {} ({}); from sources of security events: {}.</p>",
                num(m.bot_requests),
                pct(m.bot_requests as f64 / total),
                num(m.from_event_sources)
            );
            o.push(section("Status mix, last 24 hours", &s));
        }
        Err(e) => o.failed("Status mix", "access_log", &e),
    }
    match events {
        Ok(list) => {
            let rows: Vec<(String, Vec<String>)> = list
                .iter()
                .map(|e| {
                    (
                        String::new(),
                        vec![
                            esc(&e.scenario),
                            format!("<a href=\"/security/ip/{}\">{}</a>", seg(&e.source), esc(&e.source)),
                            secq::rfc3339(e.first_seen_us),
                            secq::rfc3339(e.last_seen_us),
                            num(e.count),
                            format!("<span class=\"{}\">{}</span>", sev_class(&e.severity), esc(&e.severity)),
                        ],
                    )
                })
                .collect();
            let inner = if rows.is_empty() {
                "<p class=\"ok\">None.</p>".to_owned()
            } else {
                table(&["scenario", "source", "first", "last", "#requests", "severity"], &rows)
            };
            o.push(section(&format!("Security events, last 7 days ({})", list.len()), &inner));
        }
        Err(e) => o.failed("Security events", "security_events", &e),
    }
    match usage {
        Ok((days, totals)) => {
            let mut s = String::new();
            for t in &totals {
                let _ = write!(
                    s,
                    "<div class=\"figures\" data-site-id=\"{}\"><div>site<b>{}</b></div><div>customer<b>{}</b></div>\
                     <div>requests<b class=\"month-requests\" data-value=\"{}\">{}</b></div><div>bytes<b>{}</b></div>\
                     <div>bot requests<b>{}</b></div><div>unique visitors (IP)<b>{}</b></div></div>",
                    esc(&t.site_id),
                    esc(if t.site_id.is_empty() { "(unattributed)" } else { &t.site_id }),
                    esc(&t.customer_id),
                    t.requests,
                    num(t.requests),
                    num(t.bytes_sent),
                    num(t.bot_requests),
                    num(t.visitors_ip)
                );
            }
            let rows: Vec<(String, Vec<String>)> = days
                .iter()
                .map(|d| {
                    (
                        String::new(),
                        vec![
                            esc(&d.day),
                            esc(&d.site_id),
                            num(d.requests),
                            num(d.bytes_sent),
                            num(d.bot_requests),
                            num(d.visitors_ip),
                        ],
                    )
                })
                .collect();
            if days.is_empty() {
                s.push_str("<p>No usage recorded this month.</p>");
            } else {
                s.push_str(&table(&["day", "site", "#requests", "#bytes", "#bots", "#visitors (IP)"], &rows));
            }
            o.push(section(&format!("Usage in {month} (Europe/Helsinki days; every host of the site)"), &s));
        }
        Err(e) => o.failed("Usage this month", "usage_daily", &e),
    }
    let page = Page {
        title: format!("Site {host}"),
        role: format!("{} — event sources shown here are recorded in access_audit", ops_role(c)),
        nav: Nav::None,
        body: o.body,
        refresh: 0,
    };
    (o.status, page)
}

async fn usage_page(c: &Console, month: Option<&str>, now: DateTime<Utc>) -> (StatusCode, Page) {
    let role = format!("sitelog_billing (ClickHouse user {})", c.cfg.serve.billing_user_name(&c.cfg.billing));
    let month: Month = match month {
        Some(m) => match m.parse() {
            Ok(m) => m,
            Err(e) => return error_page(StatusCode::BAD_REQUEST, &format!("month: {e}")),
        },
        None => Month::of_day(now.with_timezone(&chrono_tz::Europe::Helsinki).date_naive()),
    };
    let mut o = Out::new();
    o.push(format!(
        "<p><a href=\"/usage?month={p}\">← {p}</a> · <b>{month}</b> · <a href=\"/usage?month={n}\">{n} →</a></p>",
        p = month.prev(),
        n = month.next()
    ));
    let client = match &c.billing {
        Ok(cl) => cl,
        Err(e) => {
            o.failed("Billing", "the billing user's connection", e);
            let page = Page { title: format!("Usage {month}"), role, nav: Nav::Usage, body: o.body, refresh: 0 };
            return (o.status, page);
        }
    };
    let options = RunOptions {
        month,
        customer: None,
        strict: false,
        verify: false,
        finalize: false,
        closed_by: String::new(),
        now,
        database: c.cfg.clickhouse.database.clone(),
        raw_retention_days: c.cfg.retention.raw_days,
        usage_years: c.cfg.retention.usage_years,
    };
    match billing::run(client, &c.cfg.billing, &options).await {
        Ok(result) => {
            let r = &result.report;
            let mut s = format!(
                "<p>Status: <b id=\"billing-status\">{}</b> · register version {} · {} to {} (UTC)</p>",
                r.status.as_str(),
                r.register_version,
                esc(&r.from_utc),
                esc(&r.to_utc)
            );
            for why in r.completeness.reasons.iter().chain(&r.problems) {
                let _ = write!(s, "<p class=\"warn\">{}</p>", esc(why));
            }
            o.push(section("Month", &s));
            let rows: Vec<(String, Vec<String>)> = r
                .customers
                .iter()
                .map(|b| {
                    let t = &b.total;
                    let opt = |v: Option<u64>| v.map(num).unwrap_or_else(|| "per site".into());
                    (
                        format!(
                            " data-customer=\"{}\" data-requests=\"{}\" data-bytes=\"{}\" data-billed=\"{}\" data-overage=\"{}\"",
                            esc(&b.customer_id),
                            t.measures.requests,
                            t.measures.bytes_sent,
                            t.billed_usage.map(|v| v.to_string()).unwrap_or_default(),
                            t.overage.map(|v| v.to_string()).unwrap_or_default()
                        ),
                        vec![
                            esc(&b.customer_id),
                            esc(&b.company_name),
                            esc(&t.metering),
                            opt(t.included),
                            opt(t.billed_usage),
                            opt(t.overage),
                            num(t.measures.requests),
                            num(t.measures.bytes_sent),
                            num(t.measures.human_requests),
                            num(t.measures.bot_requests),
                            num(t.measures.visits_ip),
                        ],
                    )
                })
                .collect();
            o.push(section(
                &format!("Customers ({})", r.customers.len()),
                &table(
                    &[
                        "customer",
                        "company",
                        "metering",
                        "#included",
                        "#billed usage",
                        "#overage",
                        "#requests",
                        "#bytes",
                        "#human",
                        "#bots",
                        "#visits (IP)",
                    ],
                    &rows,
                ),
            ));
            let rows: Vec<(String, Vec<String>)> = r
                .customers
                .iter()
                .flat_map(|b| b.sites.iter())
                .map(|l| {
                    (
                        format!(" data-site-id=\"{}\"", esc(&l.site_id)),
                        vec![
                            esc(&l.customer_id),
                            esc(&l.site_id),
                            esc(&l.plan),
                            l.metering.map(|m| m.as_str()).unwrap_or("–").to_owned(),
                            num(l.included),
                            num(l.billed_usage),
                            num(l.overage),
                            num(l.measures.requests),
                            num(l.measures.bytes_sent),
                        ],
                    )
                })
                .collect();
            o.push(section(
                "Sites (the invoice lines)",
                &table(
                    &[
                        "customer",
                        "site",
                        "plan",
                        "metering",
                        "#included",
                        "#billed usage",
                        "#overage",
                        "#requests",
                        "#bytes",
                    ],
                    &rows,
                ),
            ));
            let u = &r.unattributed;
            o.push(section(
                "Unattributed traffic (counted, never billed)",
                &format!("<p>{} requests, {} bytes.</p>", num(u.requests), num(u.bytes_sent)),
            ));
        }
        Err(e) => o.failed("Billing", "usage_daily / the register", &e),
    }
    let page = Page { title: format!("Usage {month}"), role, nav: Nav::Usage, body: o.body, refresh: 0 };
    (o.status, page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_and_missing_tables() {
        let q = query_params("month=2026-11&x=a+b%2F");
        assert_eq!(q["month"], "2026-11");
        assert_eq!(q["x"], "a b/");
        assert_eq!(days_param(&query_params("days=7"), 1), 7);
        assert_eq!(days_param(&query_params("days=999"), 1), 1);
        assert!(is_missing_table("Code: 60. DB::Exception: Table sitelog.incidents does not exist. (UNKNOWN_TABLE)"));
        assert!(!is_missing_table("Code: 497. DB::Exception: not enough privileges"));
    }
}
