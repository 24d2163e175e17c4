//! `sitelog generate`: a deterministic, realistic data set for a multi-tenant WordPress host,
//! and the ground truth that tests compare against.
//!
//! The ground truth is counted here, from what the generator decided to write (which site,
//! which client, bot or not, static or not), never by parsing the logs back — so a test that
//! compares the pipeline's output with it checks the pipeline, not itself.
//!
//! Layout written under `--out`:
//! ```text
//! register.json                       customer register export (customers, contacts, sites, plans)
//! nginx.conf                          the log_format lines the web hosts use
//! collector.toml                      a collector config for these logs
//! logs/web1/<domain>/access.log[.1|.N.gz]   server web-01: nginx, custom format with $host,
//!                                           timings and $upstream_status, Helsinki time
//! logs/web2/<domain>/access.log[.1|.N.gz]   server web-02: nginx `combined`, host from the path, UTC
//! logs/web3/other_vhosts_access.log[...]    server web-03: apache `vhost_combined`, many sites in one file
//! logs/web4/<domain>/access.log[.1|.N.gz]   server web-04: as web-01
//! truth/usage_daily.csv               per customer / site / Helsinki day: requests, bytes, bots, visitors
//! truth/files.csv                     per file: lines, records, malformed
//! truth/summary.json                  totals, unattributed requests, the special events' places
//! truth/security.csv                  scenario,source,customer_id,site_host,day: one line per injected attack
//! truth/benign.csv                    kind,source: the benign look-alikes detection must leave alone
//! truth/incidents.csv                 one line per injected disruption (site or server; errors or latency)
//! truth/no_incident.csv               the tiny site's errors that must not be an incident
//! truth/health.csv                    per site host, server and UTC hour: requests, 5xx, upstream failures
//! ```
//!
//! Every site is served by one web server (its log directory); the collector config gives
//! each server's files their name with `[[source]] server`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Datelike, Days, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Europe::Helsinki;
use serde::Serialize;

pub mod scenario;
pub mod truth;

use scenario::{Scenario, ScenarioKind};

use sitelog_schema::register::{business_id_check_digit, Address, Contact, Customer, Plan, RegisterExport, Site};

/// The nginx format web1 uses (host, timings, cache status), as it appears in nginx.conf.
pub const WEB1_LOG_FORMAT: &str = r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" $host $request_time $upstream_response_time $upstream_cache_status $upstream_status"#;

#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub out: PathBuf,
    pub seed: u64,
    /// First day (Europe/Helsinki) with traffic.
    pub start: NaiveDate,
    pub days: u32,
    pub customers: usize,
    /// Mean human page views per site per day (each brings static requests along).
    pub rate: u32,
}

/// Days in the default sample: four full weeks.
pub const DEFAULT_DAYS: u32 = 28;

impl GenerateOptions {
    /// The default options for a clock that reads `today` (Europe/Helsinki): the window of
    /// [`default_start`].
    pub fn for_today(today: NaiveDate) -> Self {
        GenerateOptions {
            out: PathBuf::from("sample"),
            seed: 42,
            start: default_start(today, DEFAULT_DAYS),
            days: DEFAULT_DAYS,
            customers: 12,
            rate: 150,
        }
    }

    /// The last day with traffic.
    pub fn end(&self) -> NaiveDate {
        self.start + Days::new(self.days.saturating_sub(1) as u64)
    }
}

impl Default for GenerateOptions {
    /// [`GenerateOptions::for_today`] on the clock (`SITELOG_NOW` or the system clock).
    fn default() -> Self {
        let today = crate::clock::today_helsinki().unwrap_or_else(|e| panic!("{e:#}"));
        Self::for_today(today)
    }
}

/// The first day of the default window: the `days` full days that end yesterday, so that
/// every line is recent enough for the raw retention and the billing run has a finished
/// month to bill. When those days lie inside one calendar month (on the 1st and the
/// 29th–31st), the window moves back until its first day is the previous month's last, so
/// that it always crosses a month boundary (by at most four days: its oldest day is then at
/// most 32 days old, and the raw records of its first day or two may already have expired).
pub fn default_start(today: NaiveDate, days: u32) -> NaiveDate {
    let end = today - Days::new(1);
    let start = end - Days::new(days.saturating_sub(1) as u64);
    if days >= 2 && (start.year(), start.month()) == (end.year(), end.month()) {
        start - Days::new(start.day() as u64)
    } else {
        start
    }
}

/// The Helsinki calendar months (`YYYY-MM`) that the days `start ..= end` touch, in order.
pub fn months_between(start: NaiveDate, end: NaiveDate) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut d = start;
    while d <= end {
        let m = d.format("%Y-%m").to_string();
        if out.last() != Some(&m) {
            out.push(m);
        }
        d = d + Days::new(1);
    }
    out
}

/// SplitMix64: tiny, fast, and its sequence never changes with a dependency upgrade. Public
/// for tests that replay a random schedule from a seed.
pub struct Rng(pub u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Web {
    /// nginx, WEB1_LOG_FORMAT, Helsinki local time, host from `$host`.
    Nginx1,
    /// nginx `combined`, UTC, host from the directory name.
    Nginx2,
    /// apache `vhost_combined`, Helsinki local time, host from `%v`, one shared file.
    Apache3,
    /// As `Nginx1`, on another server.
    Nginx4,
}

impl Web {
    /// The web server's name, as the sample's collector config gives it to its files.
    pub(crate) fn server(self) -> &'static str {
        match self {
            Web::Nginx1 => "web-01",
            Web::Nginx2 => "web-02",
            Web::Apache3 => "web-03",
            Web::Nginx4 => "web-04",
        }
    }

    /// Whether its log format holds `$upstream_status` (and the request and upstream times).
    fn logs_upstream(self) -> bool {
        matches!(self, Web::Nginx1 | Web::Nginx4)
    }
}

/// A domain's traffic source: its log file and the owners over time.
struct Domain {
    /// Host names requests arrive with (first = primary).
    hosts: Vec<String>,
    web: Web,
    /// (valid_from Helsinki date, customer_id, site_id); sorted by date.
    owners: Vec<(NaiveDate, String, String)>,
    /// Relative traffic weight.
    weight: u32,
    /// No traffic but its scenario's (the tiny site), and no other scenario touches it.
    quiet: bool,
}

impl Domain {
    fn owner(&self, day: NaiveDate) -> Option<(&str, &str)> {
        self.owners.iter().rev().find(|(from, _, _)| *from <= day).map(|(_, c, s)| (c.as_str(), s.as_str()))
    }
}

const CITIES: &[(&str, &str)] = &[
    ("Helsinki", "00100"),
    ("Espoo", "02100"),
    ("Tampere", "33100"),
    ("Turku", "20100"),
    ("Oulu", "90100"),
    ("Jyväskylä", "40100"),
    ("Kuopio", "70100"),
    ("Lahti", "15110"),
];
const STREETS: &[&str] = &[
    "Mannerheimintie",
    "Hämeenkatu",
    "Aleksanterinkatu",
    "Kauppakatu",
    "Satamakatu",
    "Itäinen Pitkäkatu",
    "Tietotie",
    "Runeberginkatu",
];
const FIRST: &[&str] =
    &["Aino", "Eero", "Liisa", "Mikko", "Sanna", "Juha", "Katja", "Timo", "Noora", "Ville", "Åsa", "Jörg"];
const LAST: &[&str] = &[
    "Virtanen",
    "Korhonen",
    "Mäkinen",
    "Nieminen",
    "Mäkelä",
    "Hämäläinen",
    "Laine",
    "Heikkinen",
    "Koskinen",
    "Järvinen",
];
const BRANDS: &[&str] = &[
    "Kahvila Aroma",
    "Rakennus Kivi",
    "Pohjolan Puutarha",
    "Tunturi Matkat",
    "Saaristo Design",
    "Lapin Luonto",
    "Kirjapaja",
    "Hyvä Olo Klinikka",
    "Autokorjaamo Nopea",
    "Metsä & Meri",
    "Leipomo Ruis",
    "Studio Valo",
    "Kenkäkauppa Askel",
    "Tilitoimisto Tase",
    "Koirahoitola Haukku",
    "Taidegalleria Sävy",
];
const TLDS: &[&str] = &["fi", "fi", "fi", "com", "eu"];

const BROWSERS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; SM-S921B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.6778.39 Mobile Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36 Edg/130.0.2849.68",
    // A quote inside the agent: nginx writes it as \x22, apache as \".
    "Mozilla/5.0 (X11; Linux x86_64) \"QuoteBrowser\"/1.0 Gecko/20100101",
];

/// Crawlers and monitors every serious bot list knows; the processor must classify them as bots.
const BOTS: &[(&str, [u8; 2])] = &[
    ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", [66, 249]),
    ("Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)", [40, 77]),
    ("Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)", [54, 36]),
    ("Mozilla/5.0 (compatible; SemrushBot/7~bl; +http://www.semrush.com/bot.html)", [85, 208]),
    ("Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)", [5, 255]),
    (
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)",
        [20, 171],
    ),
    ("Mozilla/5.0 (compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)", [69, 162]),
    ("facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)", [31, 13]),
];

const PAGES: &[&str] = &[
    "/",
    "/",
    "/",
    "/about/",
    "/contact/",
    "/blog/",
    "/services/",
    "/shop/",
    "/category/news/",
    "/2026/10/syksyn-uutuudet/",
    "/product/lahjakortti/",
    "/tietosuojaseloste/",
    "/wp-admin/admin-ajax.php",
    "/feed/",
    "/wp-json/wp/v2/posts",
];
const STATIC: &[&str] = &[
    "/wp-content/themes/astra/style.css",
    "/wp-includes/js/jquery/jquery.min.js",
    "/wp-content/uploads/2026/10/hero-1920x1080.jpg",
    "/wp-content/uploads/2026/09/logo.png",
    "/wp-content/plugins/woocommerce/assets/js/frontend/cart.js",
    "/wp-content/themes/astra/assets/fonts/astra.woff2",
    "/favicon.ico",
    "/wp-content/uploads/2026/08/tuote-kuva.webp",
    "/wp-includes/css/dist/block-library/style.min.css",
];

/// Diurnal weight per local hour (sums to 100-ish).
const HOURS: [u32; 24] = [1, 1, 1, 1, 1, 2, 3, 4, 5, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 5, 4, 3, 2];

/// One request the generator decided on, before rendering.
struct Req {
    ts: DateTime<Utc>,
    host: String,
    ip: IpAddr,
    method: &'static str,
    path: String,
    query: String,
    protocol: &'static str,
    status: u16,
    bytes: u64,
    referer: String,
    ua: String,
    is_bot: bool,
    is_static: bool,
    request_time_ms: u32,
    upstream_ms: Option<Vec<u32>>,
    cache: &'static str,
    /// The status of a failed first upstream attempt before the one that answered (`502` of
    /// `$upstream_status` `502, 200`); 0 = none.
    retried_from: u16,
}

#[derive(Default, Serialize)]
struct DayTruth {
    requests: u64,
    bytes_sent: u64,
    bot_requests: u64,
    #[serde(skip)]
    ips: BTreeSet<IpAddr>,
    #[serde(skip)]
    ip_uas: BTreeSet<(IpAddr, String)>,
}

#[derive(Default, Serialize, Clone)]
struct FileTruth {
    lines: u64,
    records: u64,
    malformed: u64,
}

/// What `generate` reports back (also written to truth/summary.json).
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub seed: u64,
    pub start: String,
    pub days: u32,
    /// The last day with traffic (Europe/Helsinki).
    pub end: String,
    /// The Helsinki months the sample touches, oldest first: the first is the one a billing
    /// run of the sample closes (the demo bills it).
    pub months: Vec<String>,
    pub customers: usize,
    pub sites: usize,
    pub files: usize,
    pub lines: u64,
    pub records: u64,
    pub malformed: u64,
    pub unattributed_requests: u64,
    pub brute_force_site: String,
    pub xmlrpc_site: String,
    pub incident_site: String,
    pub moved_domain: String,
    pub moved_on: String,
    /// Lines in truth/security.csv: injected attacks detection must find.
    pub attacks: usize,
}

/// Writes the whole data set under `opts.out`.
pub fn generate(opts: &GenerateOptions) -> std::io::Result<Summary> {
    let mut rng = Rng(opts.seed ^ 0x5173_6c6f_6700_0000);
    let (export, domains, move_day) = build_register(&mut rng, opts);
    let out = &opts.out;
    fs::create_dir_all(out.join("truth"))?;
    fs::write(out.join("register.json"), serde_json::to_string_pretty(&export).map_err(std::io::Error::other)?)?;
    fs::write(out.join("nginx.conf"), nginx_conf())?;
    fs::write(out.join("collector.toml"), collector_toml(out))?;

    // Requests per log file (per server-local day), then rendered in time order.
    let mut usage: BTreeMap<(String, String, NaiveDate), DayTruth> = BTreeMap::new();
    let mut files: BTreeMap<PathBuf, FileTruth> = BTreeMap::new();
    let mut unattributed = 0u64;
    // file base path -> server-local day -> requests
    let mut per_file: BTreeMap<PathBuf, BTreeMap<NaiveDate, Vec<Req>>> = BTreeMap::new();

    let scenarios = scenario::scenarios(opts, &domains);
    let mut health: BTreeMap<(String, &'static str, DateTime<Utc>), truth::HealthTruth> = BTreeMap::new();
    // Disruption (index into `scenarios`) -> what it affected.
    let mut disrupted: BTreeMap<usize, Affected> = BTreeMap::new();
    let target_of = |kind: ScenarioKind| {
        scenarios.iter().find(|s| s.kind == kind).map(|s| domains[s.targets[0]].hosts[0].clone()).unwrap_or_default()
    };
    // (scenario, source, host) -> (first request, domain index)
    let mut attacks: BTreeMap<(ScenarioKind, String, String), (DateTime<Utc>, usize)> = BTreeMap::new();
    for day_i in 0..opts.days {
        let day = opts.start + Days::new(day_i as u64);
        for (di, d) in domains.iter().enumerate() {
            let here: Vec<(usize, &Scenario)> =
                scenarios.iter().enumerate().filter(|(_, s)| s.day == day_i && s.targets.contains(&di)).collect();
            let mut reqs = Vec::new();
            if !d.quiet {
                let n = (opts.rate as u64 * d.weight as u64 / 4).max(1);
                let n = rng.range(n * 8 / 10, n * 12 / 10);
                for _ in 0..n {
                    human_visit(&mut rng, d, day, &mut reqs);
                }
                for _ in 0..rng.range(n / 4, n / 2) {
                    bot_visit(&mut rng, d, day, &mut reqs);
                }
            }
            // Attacks keep what they got (their truth stays exact); a disruption's own
            // traffic is already what it makes of it.
            let mut untouched: Vec<(Option<usize>, std::ops::Range<usize>)> = Vec::new();
            for &(si, sc) in &here {
                let from = reqs.len();
                sc.append(&mut rng, opts, &domains, di, &mut reqs);
                if sc.kind.is_attack() {
                    untouched.push((None, from..reqs.len()));
                } else if sc.kind.is_disruption() {
                    untouched.push((Some(si), from..reqs.len()));
                }
                if sc.kind.is_attack() {
                    for r in &reqs[from..] {
                        let key = match sc.kind {
                            ScenarioKind::CrossTenant => match r.ip {
                                IpAddr::V4(a) => {
                                    let o = a.octets();
                                    (sc.kind, format!("{}.{}.{}.0/24", o[0], o[1], o[2]), String::new())
                                }
                                IpAddr::V6(a) => (sc.kind, format!("{a}/48"), String::new()),
                            },
                            _ => (sc.kind, r.ip.to_string(), r.host.to_lowercase()),
                        };
                        let e = attacks.entry(key).or_insert((r.ts, di));
                        if r.ts < e.0 {
                            *e = (r.ts, di);
                        }
                    }
                }
            }
            // Disruptions: every other request of the site inside the window is affected too.
            for &(si, sc) in here.iter().filter(|(_, s)| s.kind.is_disruption()) {
                let (start, end) = sc.window(opts);
                let mut k = 0;
                for (i, r) in reqs.iter_mut().enumerate() {
                    let skip =
                        untouched.iter().any(|(owner, range)| range.contains(&i) && owner.is_none_or(|o| o == si));
                    if !skip && r.ts >= start && r.ts < end {
                        sc.affect(r, k, false);
                        k += 1;
                    }
                }
            }
            for r in reqs {
                let hel_day = r.ts.with_timezone(&Helsinki).date_naive();
                let site_host = r.host.to_ascii_lowercase();
                let logged_upstream = if d.web.logs_upstream() && r.upstream_ms.is_some() { r.status } else { 0 };
                let h = health.entry((site_host.clone(), d.web.server(), hour_of(r.ts))).or_default();
                h.requests += 1;
                h.status_5xx += (500..600).contains(&r.status) as u64;
                h.upstream_failures += (matches!(r.status, 502..=504) || matches!(logged_upstream, 502..=504)) as u64;
                for &(si, sc) in here.iter().filter(|(_, s)| s.kind.is_disruption()) {
                    if sc.affected(opts, &r) {
                        let a = disrupted.entry(si).or_default();
                        a.first = Some(a.first.map_or(r.ts, |f: DateTime<Utc>| f.min(r.ts)));
                        a.last = Some(a.last.map_or(r.ts, |l: DateTime<Utc>| l.max(r.ts)));
                        // The site as registered: its primary host (`www.` aliases are the same site).
                        a.sites.insert(d.hosts[0].to_ascii_lowercase());
                        if let Some((c, _)) = d.owner(hel_day).filter(|_| !d.owners.is_empty()) {
                            a.customers.insert(c.to_owned());
                        }
                    }
                }
                match d.owner(hel_day).filter(|_| !d.owners.is_empty()) {
                    Some((c, s)) => {
                        let t = usage.entry((c.to_owned(), s.to_owned(), hel_day)).or_default();
                        t.requests += 1;
                        t.bytes_sent += r.bytes;
                        t.bot_requests += r.is_bot as u64;
                        if !r.is_static && !r.is_bot && r.status != 403 {
                            t.ips.insert(r.ip);
                        }
                        if !r.is_static
                            && !r.is_bot
                            && ((200..300).contains(&r.status) || matches!(r.status, 303..=305))
                        {
                            t.ip_uas.insert((r.ip, r.ua.clone()));
                        }
                    }
                    None => unattributed += 1,
                }
                let (file, local_day) = file_of(out, d, &r);
                per_file.entry(file).or_default().entry(local_day).or_default().push(r);
            }
        }
    }

    // Render each file's days: newest day = access.log, previous = .1, older = .N.gz (logrotate
    // daily + delaycompress + compress).
    let malformed_at = malformed_places(&per_file);
    for (base, days) in &mut per_file {
        for (age, (local_day, reqs)) in days.iter_mut().rev().enumerate() {
            reqs.sort_by_key(|r| r.ts);
            let path = match age {
                0 => base.clone(),
                1 => suffixed(base, ".1"),
                k => suffixed(base, &format!(".{k}.gz")),
            };
            let web = web_of(base);
            let mut text = Vec::with_capacity(reqs.len() * 260);
            let mut ft = FileTruth::default();
            for (i, r) in reqs.iter().enumerate() {
                render(&mut text, web, r);
                ft.lines += 1;
                ft.records += 1;
                let here = malformed_at.get(&(base.clone(), *local_day)).filter(|_| i == 2.min(reqs.len() - 1));
                if let Some(kind) = here {
                    write_malformed(&mut text, *kind);
                    ft.lines += 1;
                    ft.malformed += 1;
                }
            }
            if let Some(dir) = path.parent() {
                fs::create_dir_all(dir)?;
            }
            if age >= 2 {
                let f = BufWriter::new(File::create(&path)?);
                let mut gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
                gz.write_all(&text)?;
                gz.finish()?.flush()?;
            } else {
                fs::write(&path, &text)?;
            }
            files.insert(path, ft);
        }
    }

    let mut csv = String::from("customer_id,site_id,day,requests,bytes_sent,bot_requests,visitors_ip,visitors_ip_ua\n");
    for ((c, s, day), t) in &usage {
        let _ = writeln!(
            csv,
            "{c},{s},{day},{},{},{},{},{}",
            t.requests,
            t.bytes_sent,
            t.bot_requests,
            t.ips.len(),
            t.ip_uas.len()
        );
    }
    fs::write(out.join("truth/usage_daily.csv"), csv)?;
    let mut fcsv = String::from("file,lines,records,malformed\n");
    for (p, t) in &files {
        let rel = p.strip_prefix(out).unwrap_or(p);
        let _ = writeln!(fcsv, "{},{},{},{}", rel.display(), t.lines, t.records, t.malformed);
    }
    fs::write(out.join("truth/files.csv"), fcsv)?;

    let mut security: Vec<truth::SecurityTruth> = attacks
        .into_iter()
        .map(|((kind, source, host), (ts, di))| {
            let day = ts.with_timezone(&Helsinki).date_naive();
            let customer = if host.is_empty() { None } else { domains[di].owner(day).map(|(c, _)| c.to_owned()) };
            truth::SecurityTruth {
                scenario: kind.name().to_owned(),
                source,
                customer_id: customer.unwrap_or_default(),
                site_host: host,
                day: day.to_string(),
            }
        })
        .collect();
    security.sort_by(|a, b| (&a.day, &a.scenario, &a.source).cmp(&(&b.day, &b.scenario, &b.source)));
    truth::write_security(&out.join("truth"), &security)?;
    let benign: Vec<(String, String)> = scenarios
        .iter()
        .filter_map(|s| s.kind.benign_source().map(|src| (s.kind.name().to_owned(), src.to_owned())))
        .collect();
    truth::write_benign(&out.join("truth"), &benign)?;
    let (incidents, quiet) = disruption_truth(opts, &scenarios, &domains, &disrupted);
    truth::write_incidents(&out.join("truth"), &incidents)?;
    truth::write_no_incident(&out.join("truth"), &quiet)?;
    let health: Vec<truth::HealthTruth> = health
        .into_iter()
        .map(|((site_host, server, hour), h)| truth::HealthTruth { site_host, server: server.to_owned(), hour, ..h })
        .collect();
    truth::write_health(&out.join("truth"), &health)?;

    let summary = Summary {
        seed: opts.seed,
        start: opts.start.to_string(),
        days: opts.days,
        end: opts.end().to_string(),
        months: months_between(opts.start, opts.end()),
        customers: export.customers.len(),
        sites: export.customers.iter().map(|c| c.sites.len()).sum(),
        files: files.len(),
        lines: files.values().map(|t| t.lines).sum(),
        records: files.values().map(|t| t.records).sum(),
        malformed: files.values().map(|t| t.malformed).sum(),
        unattributed_requests: unattributed,
        brute_force_site: target_of(ScenarioKind::WpLoginBruteforce),
        xmlrpc_site: target_of(ScenarioKind::XmlrpcAbuse),
        incident_site: target_of(ScenarioKind::SiteOutage),
        moved_domain: domains.iter().find(|d| d.owners.len() > 1).map(|d| d.hosts[0].clone()).unwrap_or_default(),
        moved_on: move_day.to_string(),
        attacks: security.len(),
    };
    fs::write(out.join("truth/summary.json"), serde_json::to_string_pretty(&summary).map_err(std::io::Error::other)?)?;
    Ok(summary)
}

/// What one disruption affected, counted from the requests written.
#[derive(Default)]
struct Affected {
    first: Option<DateTime<Utc>>,
    last: Option<DateTime<Utc>>,
    customers: BTreeSet<String>,
    sites: BTreeSet<String>,
}

/// The start of the UTC hour of `ts`.
fn hour_of(ts: DateTime<Utc>) -> DateTime<Utc> {
    let secs = ts.timestamp().div_euclid(3600) * 3600;
    DateTime::from_timestamp(secs, 0).expect("in range")
}

/// The start of the minute after the one `ts` is in.
fn minute_end(ts: DateTime<Utc>) -> DateTime<Utc> {
    let secs = ts.timestamp().div_euclid(60) * 60 + 60;
    DateTime::from_timestamp(secs, 0).expect("in range")
}

/// `truth/incidents.csv` and `truth/no_incident.csv` rows from what the disruptions affected.
fn disruption_truth(
    opts: &GenerateOptions,
    scenarios: &[Scenario],
    domains: &[Domain],
    disrupted: &BTreeMap<usize, Affected>,
) -> (Vec<truth::IncidentTruth>, Vec<truth::NoIncidentTruth>) {
    let (mut incidents, mut quiet) = (Vec::new(), Vec::new());
    for (si, sc) in scenarios.iter().enumerate().filter(|(_, s)| s.kind.is_disruption()) {
        let d = &domains[sc.targets[0]];
        if sc.kind == ScenarioKind::TinySiteErrors {
            let (start, _) = sc.window(opts);
            quiet.push(truth::NoIncidentTruth {
                scenario: sc.kind.name().to_owned(),
                site_host: d.hosts[0].to_ascii_lowercase(),
                server: d.web.server().to_owned(),
                // Its three requests: at 5, 20 and 41 minutes.
                start: start + chrono::Duration::minutes(5),
                end: minute_end(start + chrono::Duration::minutes(41)),
            });
            continue;
        }
        let Some(a) = disrupted.get(&si) else { continue };
        let (Some(first), Some(last)) = (a.first, a.last) else { continue };
        let server_wide = sc.kind == ScenarioKind::ServerOutage;
        incidents.push(truth::IncidentTruth {
            scenario: sc.kind.name().to_owned(),
            kind: if server_wide { "server" } else { "site" }.to_owned(),
            cause: if sc.kind == ScenarioKind::LatencyDegradation { "latency" } else { "errors" }.to_owned(),
            site_host: if server_wide { String::new() } else { d.hosts[0].to_ascii_lowercase() },
            server: d.web.server().to_owned(),
            start: first,
            end: minute_end(last),
            affected_customers: a.customers.iter().cloned().collect(),
            affected_sites: a.sites.iter().cloned().collect(),
        });
    }
    incidents.sort_by(|a, b| (a.start, &a.scenario).cmp(&(b.start, &b.scenario)));
    (incidents, quiet)
}

fn suffixed(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn web_of(base: &Path) -> Web {
    let s = base.to_string_lossy();
    if s.contains("/web1/") {
        Web::Nginx1
    } else if s.contains("/web2/") {
        Web::Nginx2
    } else if s.contains("/web4/") {
        Web::Nginx4
    } else {
        Web::Apache3
    }
}

/// The log file a request lands in, and that server's local day (rotation happens at local midnight).
fn file_of(out: &Path, d: &Domain, r: &Req) -> (PathBuf, NaiveDate) {
    match d.web {
        Web::Nginx1 => {
            (out.join(format!("logs/web1/{}/access.log", d.hosts[0])), r.ts.with_timezone(&Helsinki).date_naive())
        }
        Web::Nginx2 => (out.join(format!("logs/web2/{}/access.log", d.hosts[0])), r.ts.date_naive()),
        Web::Nginx4 => {
            (out.join(format!("logs/web4/{}/access.log", d.hosts[0])), r.ts.with_timezone(&Helsinki).date_naive())
        }
        Web::Apache3 => (out.join("logs/web3/other_vhosts_access.log"), r.ts.with_timezone(&Helsinki).date_naive()),
    }
}

#[derive(Clone, Copy, Debug)]
enum Malformed {
    /// Cut inside the request line, as when a disk filled up mid-write.
    Truncated,
    /// Bytes of a binary file that ended up in the log.
    Garbage,
    /// Longer than the 64 KiB line limit.
    OverLong,
    /// Status field not a number.
    BadStatus,
}

/// Where malformed lines go: one per file for the first few files, after the 3rd record of
/// the file's second day (an archive in long runs), each of another kind. Deterministic.
fn malformed_places(
    per_file: &BTreeMap<PathBuf, BTreeMap<NaiveDate, Vec<Req>>>,
) -> BTreeMap<(PathBuf, NaiveDate), Malformed> {
    let kinds =
        [Malformed::Truncated, Malformed::Garbage, Malformed::OverLong, Malformed::BadStatus, Malformed::Truncated];
    per_file
        .iter()
        .zip(kinds)
        .filter_map(|((file, days), kind)| {
            days.keys().nth(1.min(days.len().saturating_sub(1))).map(|day| ((file.clone(), *day), kind))
        })
        .collect()
}

fn write_malformed(text: &mut Vec<u8>, kind: Malformed) {
    match kind {
        Malformed::Truncated => {
            text.extend_from_slice(b"198.51.100.23 - - [12/Oct/2026:10:00:00 +0300] \"GET /wp-admin/admin-aj\n")
        }
        Malformed::Garbage => {
            text.extend_from_slice(b"\x00\x01\x02PK\x03\x04\x14\x00\x06\x00\xff\xfe garbage \x89PNG\n")
        }
        Malformed::OverLong => {
            text.extend_from_slice(b"198.51.100.24 - - [12/Oct/2026:10:00:00 +0300] \"GET /?q=");
            text.extend(std::iter::repeat_n(b'A', 70_000));
            text.extend_from_slice(b" HTTP/1.1\" 414 0 \"-\" \"curl/8.5\"\n");
        }
        Malformed::BadStatus => text.extend_from_slice(
            b"198.51.100.25 - - [12/Oct/2026:10:00:00 +0300] \"GET / HTTP/1.1\" OK 512 \"-\" \"curl/8.5\"\n",
        ),
    }
}

fn random_ts(rng: &mut Rng, day: NaiveDate, hour_window: Option<(u32, u32)>) -> DateTime<Utc> {
    let hour = match hour_window {
        Some((a, b)) => rng.range(a as u64, b as u64) as u32,
        None => {
            let total: u32 = HOURS.iter().sum();
            let mut x = rng.below(total as u64) as u32;
            let mut h = 0;
            while x >= HOURS[h] {
                x -= HOURS[h];
                h += 1;
            }
            h as u32
        }
    };
    let t = NaiveTime::from_hms_micro_opt(hour, rng.below(60) as u32, rng.below(60) as u32, 0).expect("valid time");
    // Local Helsinki time; in the autumn DST overlap take the earlier, skip the spring gap.
    match Helsinki.from_local_datetime(&day.and_time(t)).earliest() {
        Some(dt) => dt.with_timezone(&Utc),
        None => Helsinki
            .from_local_datetime(&day.and_time(t + chrono::Duration::hours(1)))
            .earliest()
            .expect("after the gap")
            .with_timezone(&Utc),
    }
}

fn client_ip(rng: &mut Rng, pool_seed: u64) -> IpAddr {
    // A stable pool of ~300 clients per domain; 20% IPv6.
    let k = rng.below(300) ^ pool_seed;
    let mut r = Rng(k);
    if r.chance(0.2) {
        IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0x0db8,
            (r.below(0xffff)) as u16,
            r.below(0xff) as u16,
            0,
            0,
            0,
            r.range(1, 0xfffe) as u16,
        ))
    } else {
        IpAddr::V4(Ipv4Addr::new(r.range(80, 195) as u8, r.below(256) as u8, r.below(256) as u8, r.range(1, 254) as u8))
    }
}

fn human_visit(rng: &mut Rng, d: &Domain, day: NaiveDate, out: &mut Vec<Req>) {
    let pool = xxhash(&d.hosts[0]);
    let ip = client_ip(rng, pool);
    let ua = BROWSERS[(xxhash(&ip.to_string()) % BROWSERS.len() as u64) as usize].to_owned();
    let mut ts = random_ts(rng, day, None);
    let host = pick_host(rng, d);
    let pages = rng.range(1, 3);
    for p in 0..pages {
        let page = *rng.pick(PAGES);
        let status = if p == 0 && rng.chance(0.03) {
            404
        } else if rng.chance(0.02) {
            301
        } else if rng.chance(0.04) {
            304
        } else {
            200
        };
        let bytes = match status {
            200 => rng.range(6_000, 90_000),
            301 => 162,
            304 => 0,
            404 => rng.range(3_000, 9_000),
            _ => rng.range(150, 600),
        };
        let upstream = if status >= 500 {
            Some(vec![rng.range(30_000, 60_000) as u32])
        } else {
            Some(vec![rng.range(20, 900) as u32])
        };
        let query = if page == "/" && rng.chance(0.1) {
            format!("s=kahvi+{}", rng.below(50))
        } else if rng.chance(0.05) {
            "utm_source=newsletter&utm_medium=email".into()
        } else {
            String::new()
        };
        out.push(Req {
            ts,
            host: host.clone(),
            ip,
            method: if page.ends_with("admin-ajax.php") { "POST" } else { "GET" },
            path: page.to_owned(),
            query,
            protocol: if rng.chance(0.6) { "HTTP/2.0" } else { "HTTP/1.1" },
            status,
            bytes,
            referer: if p == 0 { "https://www.google.com/".into() } else { format!("https://{host}/") },
            ua: ua.clone(),
            is_bot: false,
            is_static: false,
            request_time_ms: upstream.as_ref().map_or(1, |u| u[0] + 2),
            upstream_ms: upstream,
            cache: if rng.chance(0.5) { "HIT" } else { "MISS" },
            retried_from: 0,
        });
        ts += chrono::Duration::milliseconds(rng.range(50, 400) as i64);
        if status == 200 {
            for _ in 0..rng.range(2, 7) {
                let asset = *rng.pick(STATIC);
                let st = if rng.chance(0.2) { 304 } else { 200 };
                out.push(Req {
                    ts,
                    host: host.clone(),
                    ip,
                    method: "GET",
                    path: asset.to_owned(),
                    query: if asset.ends_with(".css") || asset.ends_with(".js") {
                        "ver=6.6.2".into()
                    } else {
                        String::new()
                    },
                    protocol: "HTTP/2.0",
                    status: st,
                    bytes: if st == 304 { 0 } else { rng.range(900, 350_000) },
                    referer: format!("https://{host}{page}"),
                    ua: ua.clone(),
                    is_bot: false,
                    is_static: true,
                    request_time_ms: rng.range(0, 5) as u32,
                    upstream_ms: None,
                    cache: "-",
                    retried_from: 0,
                });
                ts += chrono::Duration::milliseconds(rng.range(5, 80) as i64);
            }
        }
        ts += chrono::Duration::seconds(rng.range(5, 120) as i64);
    }
}

fn bot_visit(rng: &mut Rng, d: &Domain, day: NaiveDate, out: &mut Vec<Req>) {
    let (ua, net) = *rng.pick(BOTS);
    let ip = IpAddr::V4(Ipv4Addr::new(net[0], net[1], rng.below(4) as u8, rng.range(1, 250) as u8));
    let wp_cron = rng.chance(0.05);
    let host = pick_host(rng, d);
    let (path, query, ua) = if wp_cron {
        (
            "/wp-cron.php".to_owned(),
            format!("doing_wp_cron=1760{:06}.{:04}", rng.below(999_999), rng.below(9999)),
            format!("WordPress/6.6.2; https://{}", d.hosts[0]),
        )
    } else if rng.chance(0.1) {
        ("/robots.txt".to_owned(), String::new(), ua.to_owned())
    } else {
        (rng.pick(PAGES).to_string(), String::new(), ua.to_owned())
    };
    let status = if rng.chance(0.05) { 404 } else { 200 };
    out.push(Req {
        ts: random_ts(rng, day, None),
        host,
        ip,
        method: if wp_cron { "POST" } else { "GET" },
        is_static: path.ends_with(".txt"),
        path,
        query,
        protocol: "HTTP/1.1",
        status,
        bytes: rng.range(200, 60_000),
        referer: "-".into(),
        ua,
        is_bot: true,
        request_time_ms: rng.range(10, 400) as u32,
        upstream_ms: Some(vec![rng.range(8, 390) as u32]),
        cache: "BYPASS",
        retried_from: 0,
    });
}

fn pick_host(rng: &mut Rng, d: &Domain) -> String {
    if d.web == Web::Nginx2 {
        return d.hosts[0].clone(); // host comes from the path there
    }
    if d.hosts.len() > 1 && rng.chance(0.2) {
        return d.hosts[1 + rng.below(d.hosts.len() as u64 - 1) as usize].clone();
    }
    d.hosts[0].clone()
}

fn xxhash(s: &str) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64; // FNV-1a: stable across versions
    for b in s.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    h
}

fn fmt_local(ts: DateTime<Utc>, web: Web) -> String {
    match web {
        Web::Nginx2 => ts.format("%d/%b/%Y:%H:%M:%S +0000").to_string(),
        _ => ts.with_timezone(&Helsinki).format("%d/%b/%Y:%H:%M:%S %z").to_string(),
    }
}

fn render(text: &mut Vec<u8>, web: Web, r: &Req) {
    let uri = if r.query.is_empty() { r.path.clone() } else { format!("{}?{}", r.path, r.query) };
    let ts = fmt_local(r.ts, web);
    let line = match web {
        Web::Nginx1 | Web::Nginx2 | Web::Nginx4 => {
            let ua = r.ua.replace('"', "\\x22");
            let mut l = format!(
                "{} - - [{ts}] \"{} {uri} {}\" {} {} \"{}\" \"{ua}\"",
                r.ip, r.method, r.protocol, r.status, r.bytes, r.referer
            );
            if web != Web::Nginx2 {
                let rt = format!("{}.{:03}", r.request_time_ms / 1000, r.request_time_ms % 1000);
                let urt = match &r.upstream_ms {
                    None => "-".to_owned(),
                    Some(v) => {
                        v.iter().map(|ms| format!("{}.{:03}", ms / 1000, ms % 1000)).collect::<Vec<_>>().join(", ")
                    }
                };
                let us = match (&r.upstream_ms, r.retried_from) {
                    (None, _) => "-".to_owned(),
                    (Some(_), 0) => r.status.to_string(),
                    (Some(_), first) => format!("{first}, {}", r.status),
                };
                let _ = write!(l, " {} {rt} {urt} {} {us}", r.host, r.cache);
            }
            l
        }
        Web::Apache3 => {
            let ua = r.ua.replace('"', "\\\"");
            format!(
                "{}:443 {} - - [{ts}] \"{} {uri} {}\" {} {} \"{}\" \"{ua}\"",
                r.host,
                r.ip,
                r.method,
                r.protocol.replace("HTTP/2.0", "HTTP/2"),
                r.status,
                r.bytes,
                r.referer
            )
        }
    };
    text.extend_from_slice(line.as_bytes());
    text.push(b'\n');
}

fn build_register(rng: &mut Rng, opts: &GenerateOptions) -> (RegisterExport, Vec<Domain>, NaiveDate) {
    let plans = vec![
        Plan { plan: "start".into(), metering: "requests".into(), included: 100_000 },
        Plan { plan: "business".into(), metering: "visits_ip".into(), included: 25_000 },
        Plan { plan: "enterprise".into(), metering: "visits_ip_ua".into(), included: 400_000 },
    ];
    let move_day = opts.start + Days::new((opts.days / 2) as u64);
    let mut customers = Vec::new();
    let mut domains: Vec<Domain> = Vec::new();
    let mut site_no = 0;
    let mut used_ids = BTreeSet::new();
    for ci in 0..opts.customers {
        let brand = BRANDS[ci % BRANDS.len()];
        let suffix = if ci >= BRANDS.len() { format!("{}", ci / BRANDS.len() + 1) } else { String::new() };
        let company = format!("{brand}{suffix} Oy");
        let business_id = loop {
            let body = format!("{:07}", rng.range(1_000_000, 3_299_999));
            if let Some(c) = business_id_check_digit(&body) {
                if used_ids.insert(body.clone()) {
                    break format!("{body}-{c}");
                }
            }
        };
        let (city, postal) = *rng.pick(CITIES);
        let slug: String = format!("{brand}{suffix}")
            .to_lowercase()
            .replace(['ä', 'å'], "a")
            .replace('ö', "o")
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect();
        let tld = *rng.pick(TLDS);
        let contacts = (0..rng.range(1, 2))
            .map(|k| {
                let (f, l) = (*rng.pick(FIRST), *rng.pick(LAST));
                Contact {
                    name: format!("{f} {l}"),
                    email: format!("{}.{}@{slug}.{tld}", f.to_lowercase(), l.to_lowercase())
                        .replace(['ä', 'å'], "a")
                        .replace('ö', "o"),
                    phone: format!("+358 40 {:03} {:04}", rng.below(1000), rng.below(10000)),
                    role: if k == 0 { "technical".into() } else { "billing".into() },
                }
            })
            .collect();
        let n_sites = if ci % 3 == 0 { 2 } else { 1 };
        let mut sites = Vec::new();
        for k in 0..n_sites {
            site_no += 1;
            let primary = if k == 0 { format!("{slug}.{tld}") } else { format!("kauppa.{slug}.{tld}") };
            let wildcard = site_no == 5;
            let mut aliases = vec![format!("www.{primary}")];
            if wildcard {
                aliases.push(format!("*.{primary}"));
            }
            let web = match site_no {
                1 | 3 | 4 => Web::Nginx1,
                2 | 5 => Web::Apache3,
                n => [Web::Nginx4, Web::Nginx2, Web::Apache3][n % 3],
            };
            let plan = plans[site_no % plans.len()].plan.clone();
            let site_id = format!("S{site_no:04}");
            let customer_id = format!("C{:04}", ci + 1);
            let mut hosts = vec![primary.clone(), format!("www.{primary}")];
            if wildcard {
                hosts.push(format!("blogi.{primary}"));
                hosts.push(format!("tapahtumat.{primary}"));
            }
            sites.push(Site {
                site_id: site_id.clone(),
                primary_domain: primary.clone(),
                aliases,
                plan,
                valid_from: "2024-01-01".into(),
                valid_to: None,
            });
            domains.push(Domain {
                hosts,
                web,
                owners: vec![(NaiveDate::from_ymd_opt(2024, 1, 1).expect("date"), customer_id, site_id)],
                weight: rng.range(2, 8) as u32,
                quiet: false,
            });
        }
        customers.push(Customer {
            customer_id: format!("C{:04}", ci + 1),
            company_name: company,
            business_id,
            billing_address: Address {
                street: format!("{} {}", rng.pick(STREETS), rng.range(1, 60)),
                postal_code: postal.into(),
                city: city.into(),
                country: "FI".into(),
            },
            billing_email: format!("laskutus@{slug}.{tld}"),
            contacts,
            sites,
        });
    }
    // The domain that moves: site 4's domain passes from its customer to the next one.
    if domains.len() > 4 && customers.len() > 2 {
        let d = &mut domains[3];
        let (old_c, old_s) = (d.owners[0].1.clone(), d.owners[0].2.clone());
        let new_ci =
            customers.iter().position(|c| c.customer_id != old_c && !c.sites.is_empty()).expect("another customer");
        site_no += 1;
        let new_site = format!("S{site_no:04}");
        d.owners.push((move_day, customers[new_ci].customer_id.clone(), new_site.clone()));
        for c in &mut customers {
            for s in &mut c.sites {
                if s.site_id == old_s {
                    s.valid_to = Some(move_day.to_string());
                }
            }
        }
        let primary = d.hosts[0].clone();
        customers[new_ci].sites.push(Site {
            site_id: new_site,
            primary_domain: primary.clone(),
            aliases: vec![format!("www.{primary}")],
            plan: "start".into(),
            valid_from: move_day.to_string(),
            valid_to: None,
        });
    }
    // Traffic for a host nobody in the register owns: the unattributed bucket.
    domains.push(Domain {
        hosts: vec!["vanha-kauppa.example.org".into()],
        web: Web::Apache3,
        owners: Vec::new(),
        weight: 1,
        quiet: false,
    });
    // The tiny site: the last customer's second shop, on web-04, with no traffic but the
    // tiny-site scenario's three requests (no random draw, so the rest of the sample stays).
    if let Some(c) = customers.last_mut() {
        site_no += 1;
        let site_id = format!("S{site_no:04}");
        let primary = format!("mini-{}", c.sites[0].primary_domain);
        c.sites.push(Site {
            site_id: site_id.clone(),
            primary_domain: primary.clone(),
            aliases: Vec::new(),
            plan: "start".into(),
            valid_from: "2024-01-01".into(),
            valid_to: None,
        });
        domains.push(Domain {
            hosts: vec![primary],
            web: Web::Nginx4,
            owners: vec![(NaiveDate::from_ymd_opt(2024, 1, 1).expect("date"), c.customer_id.clone(), site_id)],
            weight: 0,
            quiet: true,
        });
    }
    let export = RegisterExport {
        exported_at: format!("{}T06:00:00Z", opts.start + Days::new(opts.days as u64)),
        plans,
        customers,
    };
    (export, domains, move_day)
}

fn nginx_conf() -> String {
    format!(
        "# log_format lines of the sample web hosts (paste into `sitelog parse --log-format-file`)\n\
         http {{\n    log_format sitelog '{WEB1_LOG_FORMAT}';\n    # web1 and web4 use it; web2 uses the built-in `combined`.\n}}\n"
    )
}

fn collector_toml(out: &Path) -> String {
    let abs = fs::canonicalize(out).unwrap_or_else(|_| out.to_path_buf());
    let d = abs.display();
    format!(
        r#"# Collector config for the generated sample (deploy/collector.example.toml documents every key).
# Brokers come from SITELOG_KAFKA_BROKERS (`sitelog stack env`).
[collector]
checkpoint_dir = "{d}/.checkpoints"

[kafka]
# The local tansu broker decodes compressed batches slowly; on loopback nothing is gained.
compression = "none"

[kafka.properties]
# tansu serves one connection's requests one at a time: more in flight gains nothing and makes
# librdkafka poll in a busy loop (benches/README.md, Collector). Keep the default (5) on Kafka.
"max.in.flight.requests.per.connection" = "1"

# One log directory per web server: `server` names it in every record (the default would be
# this machine's host name).
[[source]]
name = "web1"
paths = ["{d}/logs/web1/*/access.log*"]
format = '{WEB1_LOG_FORMAT}'
host = "field"
server = "web-01"

[[source]]
name = "web2"
paths = ["{d}/logs/web2/{{site}}/access.log*"]
format = "combined"
host = "path"
server = "web-02"

[[source]]
name = "web3"
paths = ["{d}/logs/web3/other_vhosts_access.log*"]
format = "vhost_combined"
host = "field"
server = "web-03"

[[source]]
name = "web4"
paths = ["{d}/logs/web4/*/access.log*"]
format = '{WEB1_LOG_FORMAT}'
host = "field"
server = "web-04"
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_stable() {
        let mut r = Rng(1);
        assert_eq!([r.next(), r.next()], [10451216379200822465, 13757245211066428519]);
    }

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    /// Every day of several years: the default window ends yesterday or at most four days
    /// earlier, crosses a month boundary, holds the moved-domain day, and is never older than
    /// 32 days.
    #[test]
    fn default_window_is_recent_and_crosses_a_month() {
        let mut today = d("2027-01-01");
        while today < d("2030-01-01") {
            let o = GenerateOptions::for_today(today);
            let months = months_between(o.start, o.end());
            assert_eq!(months.len(), 2, "{today}: {months:?}");
            assert!(o.end() < today && (today - o.end()).num_days() <= 5, "{today}: ends {}", o.end());
            assert!((today - o.start).num_days() <= 32, "{today}: starts {}", o.start);
            let moved = o.start + Days::new((o.days / 2) as u64);
            assert!(moved > o.start && moved <= o.end());
            today = today + Days::new(1);
        }
        // Named cases: 1 December 2026 (the window must leave November to cross a month).
        let o = GenerateOptions::for_today(d("2026-12-01"));
        assert_eq!((o.start, o.end()), (d("2026-10-31"), d("2026-11-27")));
        let o = GenerateOptions::for_today(d("2026-12-15"));
        assert_eq!((o.start, o.end()), (d("2026-11-17"), d("2026-12-14")));
        assert_eq!(months_between(d("2026-10-31"), d("2026-11-27")), ["2026-10", "2026-11"]);
    }
}
