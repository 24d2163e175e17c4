//! The sample's special events — attacks, an incident and benign look-alikes — as a list of
//! scenarios chosen deterministically from the seed and options.
//!
//! Each scenario names its kind, the domains whose traffic it adds to and the day index; its
//! requests are appended by [`Scenario::append`] inside `generate`'s per-domain, per-day loop,
//! so that they are counted in the usage truth like every other request. Each attack scenario
//! becomes one or more lines of `truth/security.csv` (one per source and site), each benign
//! look-alike a line of `truth/benign.csv`; both are written from what was generated, never by
//! reading the logs back.
//!
//! Sources are fixed, distinctive addresses outside the ranges the background traffic uses
//! (human clients 80–195.x.x.x and 2001:db8::/32, the bots' own networks), each used by one
//! scenario only. The wp-login brute force and the xmlrpc flood keep the main generator's
//! random sequence (as before the list existed); every other scenario draws from its own
//! generator, so adding one does not move the rest of the sample.

use super::*;

/// What a scenario does. [`ScenarioKind::name`] is the `scenario` / `kind` column of the truth
/// files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ScenarioKind {
    /// POST /wp-login.php, ≥ 540 POSTs at ≤ 3 s intervals (and a 429 tail).
    WpLoginBruteforce,
    /// POST /xmlrpc.php from two sources (IPv4 and IPv6) alternating, ~1 s apart each.
    XmlrpcAbuse,
    /// One site's backend fails for 20 minutes: ≥ 90 % of its requests are answered 5xx
    /// (a few get through on a retried upstream, `502, 200`), with 25 requests a minute of its
    /// own from 30 minutes before to 30 minutes after. Ground truth: `truth/incidents.csv`.
    SiteOutage,
    /// Every site of one web server (web-01) answers 502 with upstream status 502 for 15
    /// minutes; each of its sites gets 8 requests a minute around it.
    ServerOutage,
    /// One site's request time goes to 4–10 s for 30 minutes, statuses unchanged; 20 requests
    /// a minute around it. Only on servers that log `$request_time`.
    LatencyDegradation,
    /// A site with no other traffic gets 3 requests in one hour, 2 of them 5xx: too few to be
    /// an incident (`truth/no_incident.csv`).
    TinySiteErrors,
    /// GET ?author=1..12 and /wp-json/wp/v2/users within two minutes.
    UserEnumeration,
    /// 34 distinct WordPress plugin/theme/core paths answered 404 or 403 within ~2 minutes.
    WpScan,
    /// The 9 well-known sensitive files, all 404, within ~1 minute.
    SensitiveFileProbe,
    /// 30 requests with the sqlmap user agent on pages within 5 minutes (IPv6 source).
    BadUserAgent,
    /// 45 distinct non-WordPress paths answered 404 within 3 minutes, a browser agent.
    HttpProbing,
    /// 1600 page requests (200) within 272 s from one address, a browser agent.
    AggressiveCrawl,
    /// 3 POST /wp-login.php per site on every attributed site, from 5 addresses of one /24,
    /// within 30 minutes. Only with ≥ 10 customers owning sites that day.
    CrossTenant,
    /// Benign: 30 people behind one NAT address, each logging in once.
    OfficeNat,
    /// Benign: GET / every 60 s on every attributed site for one whole day.
    UptimeMonitor,
    /// Benign: 1500 Googlebot page requests within 30 minutes from 66.249.66.0/24.
    Googlebot,
}

impl ScenarioKind {
    pub fn name(self) -> &'static str {
        match self {
            ScenarioKind::WpLoginBruteforce => "wp-login-bruteforce",
            ScenarioKind::XmlrpcAbuse => "xmlrpc-abuse",
            ScenarioKind::SiteOutage => "site-outage",
            ScenarioKind::ServerOutage => "server-outage",
            ScenarioKind::LatencyDegradation => "latency-degradation",
            ScenarioKind::TinySiteErrors => "tiny-site-errors",
            ScenarioKind::UserEnumeration => "user-enumeration",
            ScenarioKind::WpScan => "wp-scan",
            ScenarioKind::SensitiveFileProbe => "sensitive-file-probe",
            ScenarioKind::BadUserAgent => "bad-user-agent",
            ScenarioKind::HttpProbing => "http-probing",
            ScenarioKind::AggressiveCrawl => "aggressive-crawl",
            ScenarioKind::CrossTenant => "cross-tenant",
            ScenarioKind::OfficeNat => "office-nat",
            ScenarioKind::UptimeMonitor => "uptime-monitor",
            ScenarioKind::Googlebot => "googlebot",
        }
    }

    /// Detection must find it: it has lines in `truth/security.csv`.
    pub fn is_attack(self) -> bool {
        !self.is_disruption()
            && !matches!(self, ScenarioKind::OfficeNat | ScenarioKind::UptimeMonitor | ScenarioKind::Googlebot)
    }

    /// A service disruption (or the tiny site that must not count as one): it has a line in
    /// `truth/incidents.csv` or `truth/no_incident.csv`.
    pub fn is_disruption(self) -> bool {
        matches!(
            self,
            ScenarioKind::SiteOutage
                | ScenarioKind::ServerOutage
                | ScenarioKind::LatencyDegradation
                | ScenarioKind::TinySiteErrors
        )
    }

    /// Detection must not flag it: its source is a line of `truth/benign.csv`.
    pub fn benign_source(self) -> Option<&'static str> {
        match self {
            ScenarioKind::OfficeNat => Some(OFFICE_IP),
            ScenarioKind::UptimeMonitor => Some(UPTIME_IP),
            ScenarioKind::Googlebot => Some(GOOGLEBOT_NET),
            _ => None,
        }
    }
}

/// One special event of the sample.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Scenario {
    pub kind: ScenarioKind,
    /// Indexes into the domain list whose traffic it adds to (one for a per-site scenario).
    pub targets: Vec<usize>,
    /// Day index within the sample (0 = `opts.start`).
    pub day: u32,
}

const BRUTE_IP: Ipv4Addr = Ipv4Addr::new(185, 220, 101, 47);
const XMLRPC_IPS: [&str; 2] = ["45.155.205.12", "2a0e:8f02:f017::66"];
const ENUM_IP: Ipv4Addr = Ipv4Addr::new(212, 102, 40, 218);
const WPSCAN_IP: Ipv4Addr = Ipv4Addr::new(209, 141, 58, 36);
const FILE_PROBE_IP: Ipv4Addr = Ipv4Addr::new(45, 148, 10, 92);
const SQLMAP_IP: &str = "2a03:b0c0:3:d0::1a2f:1";
const HTTP_PROBE_IP: Ipv4Addr = Ipv4Addr::new(198, 235, 24, 57);
const CRAWL_IP: Ipv4Addr = Ipv4Addr::new(37, 120, 189, 14);
/// The cross-tenant network's first three octets, and the addresses used inside it.
const CROSS_NET: [u8; 3] = [217, 182, 143];
const CROSS_HOSTS: [u8; 5] = [11, 23, 47, 102, 180];
const OFFICE_IP: &str = "62.78.192.34";
const UPTIME_IP: &str = "69.162.124.235";
const GOOGLEBOT_NET: &str = "66.249.66.0/24";
const GOOGLEBOT_HOSTS: [u8; 6] = [1, 33, 65, 97, 129, 161];

pub const SQLMAP_UA: &str = "sqlmap/1.7.2#stable (https://sqlmap.org)";
pub const UPTIME_UA: &str = "Mozilla/5.0+(compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)";
const GOOGLEBOT_UA: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
const SCANNER_UA: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:109.0) Gecko/20100101 Firefox/115.0";

pub const SENSITIVE_FILES: &[&str] = &[
    "/.env",
    "/.git/config",
    "/wp-config.php.bak",
    "/wp-config.php~",
    "/wp-config.php.save",
    "/phpinfo.php",
    "/backup.sql",
    "/dump.sql",
    "/.aws/credentials",
];

const SCAN_PLUGINS: &[&str] = &[
    "akismet",
    "contact-form-7",
    "elementor",
    "wordfence",
    "wordpress-seo",
    "woocommerce",
    "revslider",
    "wp-file-manager",
    "duplicator",
    "updraftplus",
    "wpforms-lite",
    "litespeed-cache",
    "really-simple-ssl",
    "all-in-one-wp-migration",
];
const SCAN_THEMES: &[&str] =
    &["twentytwentyfour", "twentytwentythree", "twentytwentyone", "astra", "divi", "avada", "oceanwp", "generatepress"];
/// Core paths of a scan, with the status they get (directories and the installer are refused).
const SCAN_CORE: &[(&str, u16)] = &[
    ("/wp-admin/install.php", 403),
    ("/wp-admin/setup-config.php", 403),
    ("/wp-config-sample.php", 404),
    ("/wp-includes/wlwmanifest.xml", 404),
    ("/wp-content/debug.log", 404),
    ("/wp-content/uploads/", 403),
    ("/wp-includes/", 403),
    ("/wp-content/plugins/", 403),
    ("/wp-content/themes/", 403),
    ("/wp-admin/upgrade.php", 403),
    ("/wp-links-opml.php", 404),
    ("/wp-trackback.php", 404),
];

const PROBE_PATHS: &[&str] = &[
    "/admin/",
    "/login.aspx",
    "/cgi-bin/luci",
    "/cgi-bin/x",
    "/api/v1/pods",
    "/boaform/admin/formLogin",
    "/HNAP1/",
    "/manager/html",
    "/solr/admin/info/system",
    "/actuator/health",
    "/console/",
    "/owa/auth/logon.aspx",
    "/remote/login",
    "/geoserver/web/",
    "/jenkins/login",
    "/phpmyadmin/index.php",
    "/vendor/phpunit/phpunit/src/Util/PHP/eval-stdin.php",
    "/autodiscover/autodiscover.aspx",
    "/ecp/Current/exporttool/microsoft.exchange.ediscovery.exporttool.application",
    "/server-status",
];
const PROBE_DIRS: &[&str] = &["api", "app", "panel", "portal", "backend", "v2", "rest", "service", "mgmt", "user"];

/// Page paths a crawler or an attacker asks for: PAGES without admin-ajax, feeds and the REST API.
fn plain_pages() -> Vec<&'static str> {
    PAGES.iter().copied().filter(|p| !p.starts_with("/wp-") && !p.ends_with("/feed/")).collect()
}

/// The extensions the processor serves as static (mirrors its request classes, so that the
/// visitor truth stays exact for the unusual paths scenarios ask for).
fn is_static_path(path: &str) -> bool {
    const EXT: &[&str] = &[
        "css", "js", "mjs", "map", "png", "jpg", "jpeg", "gif", "webp", "avif", "svg", "ico", "bmp", "tif", "tiff",
        "woff", "woff2", "ttf", "otf", "eot", "mp4", "webm", "ogg", "mp3", "wav", "m4a", "mov", "pdf", "zip", "gz",
        "txt", "xml", "json", "csv",
    ];
    let last = path.rsplit('/').next().unwrap_or("");
    last.rsplit_once('.').is_some_and(|(_, ext)| ext.len() <= 5 && EXT.iter().any(|e| e.eq_ignore_ascii_case(ext)))
}

/// Helsinki local time on `day` as UTC (the earlier one in the autumn overlap; scenarios stay
/// out of the night, where the spring gap is).
fn local(day: NaiveDate, h: u32, m: u32, s: u32) -> DateTime<Utc> {
    let t = NaiveTime::from_hms_opt(h, m, s).expect("valid time");
    Helsinki.from_local_datetime(&day.and_time(t)).earliest().expect("not in a DST gap").with_timezone(&Utc)
}

fn ms(n: u64) -> chrono::Duration {
    chrono::Duration::milliseconds(n as i64)
}

/// A request with the usual defaults for a scenario.
#[allow(clippy::too_many_arguments)]
fn req(
    rng: &mut Rng,
    ts: DateTime<Utc>,
    host: &str,
    ip: IpAddr,
    method: &'static str,
    path: &str,
    query: &str,
    status: u16,
    ua: &str,
    is_bot: bool,
) -> Req {
    let is_static = is_static_path(path);
    let bytes = match status {
        200 if is_static => rng.range(900, 40_000),
        200 => rng.range(6_000, 90_000),
        301 | 302 => rng.range(0, 180),
        304 => 0,
        403 => rng.range(150, 560),
        404 => rng.range(3_000, 9_000),
        _ => rng.range(150, 600),
    };
    let upstream = if is_static || status == 403 { None } else { Some(vec![rng.range(15, 600) as u32]) };
    Req {
        ts,
        host: host.to_owned(),
        ip,
        method,
        path: path.to_owned(),
        query: query.to_owned(),
        protocol: "HTTP/1.1",
        status,
        bytes,
        referer: "-".into(),
        ua: ua.to_owned(),
        is_bot,
        is_static,
        request_time_ms: upstream.as_ref().map_or(rng.range(0, 5) as u32, |u| u[0] + 2),
        upstream_ms: upstream,
        cache: if is_static { "-" } else { "BYPASS" },
        retried_from: 0,
    }
}

/// Distinct browser agents for the office (none contains a bot list pattern).
fn office_ua(p: usize) -> String {
    let v = 120 + p as u32 % 12;
    match p % 3 {
        0 => format!(
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.{}.{} Safari/537.36",
            6000 + p * 37,
            p * 11 % 200
        ),
        1 => format!("Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:{v}.0) Gecko/20100101 Firefox/{v}.{}", p % 5),
        _ => format!(
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_{}) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.{} Safari/605.1.15",
            p % 8,
            p
        ),
    }
}

/// The scenario list for these options: the three original events at their old places, then
/// one instance of every other kind on a shuffled day and (for per-site ones) a shuffled
/// attributed domain, different from each other while there are enough days and domains.
pub(super) fn scenarios(opts: &GenerateOptions, domains: &[Domain]) -> Vec<Scenario> {
    let last = opts.days.saturating_sub(1);
    let xmlrpc_idx = domains.iter().position(|d| d.web == Web::Apache3).unwrap_or(0);
    let mut out = vec![
        Scenario { kind: ScenarioKind::WpLoginBruteforce, targets: vec![0], day: 2.min(last) },
        Scenario { kind: ScenarioKind::XmlrpcAbuse, targets: vec![xmlrpc_idx], day: 3.min(last) },
        Scenario { kind: ScenarioKind::SiteOutage, targets: vec![2.min(domains.len() - 1)], day: 4.min(last) },
    ];
    out.extend(disruptions(opts, domains));
    // The quiet site has no traffic but its scenario's.
    let attributed: Vec<usize> =
        (0..domains.len()).filter(|&i| !domains[i].owners.is_empty() && !domains[i].quiet).collect();
    if attributed.is_empty() || opts.days == 0 {
        return out;
    }
    let mut rng = Rng(opts.seed ^ 0x7363_656e_6172_696f);
    let shuffle = |rng: &mut Rng, xs: &mut Vec<usize>| {
        for i in (1..xs.len()).rev() {
            xs.swap(i, rng.below(i as u64 + 1) as usize);
        }
    };
    // Per-site targets: not the moved domain (two owners), the original events' domains last.
    let original: Vec<usize> = out[..3.min(out.len())].iter().flat_map(|s| s.targets.clone()).collect();
    let mut fresh: Vec<usize> =
        attributed.iter().copied().filter(|&i| domains[i].owners.len() == 1 && !original.contains(&i)).collect();
    shuffle(&mut rng, &mut fresh);
    let mut rest: Vec<usize> = attributed.iter().copied().filter(|i| !fresh.contains(i)).collect();
    shuffle(&mut rng, &mut rest);
    let site_order: Vec<usize> = fresh.into_iter().chain(rest).collect();
    // Days: a shuffle of every day, the original events' days last.
    let used: Vec<u32> = out[..3.min(out.len())].iter().map(|s| s.day).collect();
    let mut free: Vec<usize> = (0..opts.days as usize).filter(|d| !used.contains(&(*d as u32))).collect();
    shuffle(&mut rng, &mut free);
    let mut taken: Vec<usize> = (0..opts.days as usize).filter(|d| used.contains(&(*d as u32))).collect();
    shuffle(&mut rng, &mut taken);
    let day_order: Vec<u32> = free.into_iter().chain(taken).map(|d| d as u32).collect();

    use ScenarioKind::*;
    let per_site = [UserEnumeration, WpScan, SensitiveFileProbe, BadUserAgent, HttpProbing, AggressiveCrawl, Googlebot];
    let mut k = 0;
    for kind in per_site {
        out.push(Scenario {
            kind,
            targets: vec![site_order[k % site_order.len()]],
            day: day_order[k % day_order.len()],
        });
        k += 1;
    }
    let day = day_order[k % day_order.len()];
    k += 1;
    let owners_that_day: BTreeSet<&str> = attributed
        .iter()
        .filter_map(|&i| domains[i].owner(opts.start + Days::new(day as u64)).map(|(c, _)| c))
        .collect();
    if owners_that_day.len() >= 10 {
        out.push(Scenario { kind: CrossTenant, targets: attributed.clone(), day });
    }
    // The office: up to four sites of different customers.
    let mut office = Vec::new();
    let mut seen = BTreeSet::new();
    for &i in &site_order {
        if office.len() < 4 && seen.insert(domains[i].owners[0].1.clone()) {
            office.push(i);
        }
    }
    out.push(Scenario { kind: OfficeNat, targets: office, day: day_order[k % day_order.len()] });
    k += 1;
    out.push(Scenario { kind: UptimeMonitor, targets: attributed, day: day_order[k % day_order.len()] });
    out
}

impl Scenario {
    /// Appends this scenario's requests for domain `di` on its day. `main` is the generator's
    /// random sequence (used by the original brute force and xmlrpc flood only).
    pub(super) fn append(
        &self,
        main: &mut Rng,
        opts: &GenerateOptions,
        domains: &[Domain],
        di: usize,
        out: &mut Vec<Req>,
    ) {
        let day = opts.start + Days::new(self.day as u64);
        let d = &domains[di];
        let pos = self.targets.iter().position(|&t| t == di).unwrap_or(0);
        // Own sequence per scenario and target; `shared` is the same for every target.
        let seed = opts.seed ^ xxhash(self.kind.name()) ^ ((self.day as u64) << 40);
        let mut rng = Rng(seed ^ (di as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut shared = Rng(seed);
        let host = d.hosts[0].as_str();
        let start = local(day, rng.range(9, 19) as u32, rng.below(60) as u32, rng.below(60) as u32);
        match self.kind {
            ScenarioKind::WpLoginBruteforce => brute_force(main, d, day, out),
            ScenarioKind::XmlrpcAbuse => xmlrpc_flood(main, d, day, out),
            ScenarioKind::SiteOutage
            | ScenarioKind::ServerOutage
            | ScenarioKind::LatencyDegradation
            | ScenarioKind::TinySiteErrors => self.disruption_traffic(opts, d, di, out),
            ScenarioKind::UserEnumeration => {
                let ip = IpAddr::V4(ENUM_IP);
                let mut ts = start;
                for n in 1..=12 {
                    let status = if n <= 4 { 301 } else { 404 };
                    out.push(req(
                        &mut rng,
                        ts,
                        host,
                        ip,
                        "GET",
                        "/",
                        &format!("author={n}"),
                        status,
                        SCANNER_UA,
                        false,
                    ));
                    ts += ms(rng.range(2_000, 6_000));
                }
                for q in ["", "per_page=100", "page=2"] {
                    out.push(req(&mut rng, ts, host, ip, "GET", "/wp-json/wp/v2/users", q, 200, SCANNER_UA, false));
                    ts += ms(rng.range(1_000, 4_000));
                }
            }
            ScenarioKind::WpScan => {
                let ip = IpAddr::V4(WPSCAN_IP);
                let mut paths: Vec<(String, u16)> =
                    SCAN_PLUGINS.iter().map(|p| (format!("/wp-content/plugins/{p}/readme.txt"), 404)).collect();
                paths.extend(SCAN_THEMES.iter().map(|t| (format!("/wp-content/themes/{t}/readme.txt"), 404)));
                paths.extend(SCAN_CORE.iter().map(|(p, s)| (p.to_string(), *s)));
                let mut ts = start;
                for (path, status) in paths {
                    out.push(req(&mut rng, ts, host, ip, "GET", &path, "", status, BROWSERS[0], false));
                    ts += ms(rng.range(800, 4_000));
                }
            }
            ScenarioKind::SensitiveFileProbe => {
                let ip = IpAddr::V4(FILE_PROBE_IP);
                let mut ts = start;
                for path in SENSITIVE_FILES {
                    out.push(req(&mut rng, ts, host, ip, "GET", path, "", 404, SCANNER_UA, false));
                    ts += ms(rng.range(1_000, 6_000));
                }
            }
            ScenarioKind::BadUserAgent => {
                let ip: IpAddr = SQLMAP_IP.parse().expect("valid v6");
                let pages = ["/", "/shop/", "/product/lahjakortti/", "/blog/", "/contact/"];
                let payloads = [
                    "s=1%27%20AND%201%3D1--%20-",
                    "s=1%22%20OR%20%221%22%3D%221",
                    "id=1%20AND%20SLEEP(5)",
                    "id=1%27%20UNION%20ALL%20SELECT%20NULL--%20-",
                    "p=1%29%20AND%203581%3D3581%20AND%20(1%3D1",
                ];
                let mut ts = start;
                for i in 0..30 {
                    let status = match i % 7 {
                        3 => 500,
                        5 => 403,
                        _ => 200,
                    };
                    let (page, q) = (*rng.pick(&pages), *rng.pick(&payloads));
                    out.push(req(&mut rng, ts, host, ip, "GET", page, q, status, SQLMAP_UA, true));
                    ts += ms(rng.range(1_000, 9_000));
                }
            }
            ScenarioKind::HttpProbing => {
                let ip = IpAddr::V4(HTTP_PROBE_IP);
                let mut paths: Vec<String> = PROBE_PATHS.iter().map(|p| p.to_string()).collect();
                while paths.len() < 45 {
                    let p = format!("/{}/{:06x}", rng.pick(PROBE_DIRS), rng.next() & 0xff_ffff);
                    if !paths.contains(&p) {
                        paths.push(p);
                    }
                }
                let mut ts = start;
                for path in &paths {
                    out.push(req(&mut rng, ts, host, ip, "GET", path, "", 404, BROWSERS[4], false));
                    ts += ms(rng.range(1_000, 4_000));
                }
            }
            ScenarioKind::AggressiveCrawl => {
                let ip = IpAddr::V4(CRAWL_IP);
                let pages = plain_pages();
                let mut ts = start;
                for i in 0..1600u32 {
                    let (path, q) = if i % 4 == 3 {
                        (format!("/blog/page/{}/", 2 + i / 4 % 60), String::new())
                    } else if i % 4 == 2 {
                        ("/".to_owned(), format!("p={}", 100 + i))
                    } else {
                        (rng.pick(&pages).to_string(), String::new())
                    };
                    out.push(req(&mut rng, ts, host, ip, "GET", &path, &q, 200, BROWSERS[1], false));
                    ts += ms(rng.range(50, 170));
                }
            }
            ScenarioKind::CrossTenant => {
                // Sites start one after another, spaced so that all fit into 25 minutes.
                let t0 = local(day, shared.range(10, 17) as u32, shared.below(60) as u32, 0);
                let spacing = (1_500_000 / self.targets.len().max(1) as u64).min(70_000);
                let mut ts = t0 + ms(spacing * pos as u64);
                for j in 0..3 {
                    let last = CROSS_HOSTS[(pos * 3 + j) % CROSS_HOSTS.len()];
                    let ip = IpAddr::V4(Ipv4Addr::new(CROSS_NET[0], CROSS_NET[1], CROSS_NET[2], last));
                    out.push(req(&mut rng, ts, host, ip, "POST", "/wp-login.php", "", 200, BROWSERS[5], false));
                    ts += ms(rng.range(20_000, 35_000));
                }
            }
            ScenarioKind::OfficeNat => office(&mut rng, self, day, host, pos, out),
            ScenarioKind::UptimeMonitor => {
                let ip: IpAddr = UPTIME_IP.parse().expect("valid v4");
                let midnight = local(day, 0, 0, 0);
                let next = local(day + Days::new(1), 0, 0, 0);
                let mut ts = midnight + chrono::Duration::seconds((di as i64 * 7) % 60);
                while ts < next {
                    out.push(req(&mut rng, ts, host, ip, "GET", "/", "", 200, UPTIME_UA, true));
                    ts += chrono::Duration::seconds(60);
                }
            }
            ScenarioKind::Googlebot => {
                let pages = plain_pages();
                let mut ts = start;
                for i in 0..1500u32 {
                    let last = *rng.pick(&GOOGLEBOT_HOSTS);
                    let ip = IpAddr::V4(Ipv4Addr::new(66, 249, 66, last));
                    let path = if i % 3 == 0 {
                        format!("/blog/page/{}/", 2 + i / 3 % 120)
                    } else {
                        rng.pick(&pages).to_string()
                    };
                    out.push(req(&mut rng, ts, host, ip, "GET", &path, "", 200, GOOGLEBOT_UA, true));
                    ts += ms(rng.range(500, 1_100));
                }
            }
        }
    }
}

/// Helsinki hour each disruption starts in, and how many minutes it lasts: hours apart, so
/// that they never overlap, even on a one-day sample.
fn disruption_slot(kind: ScenarioKind) -> (u32, i64) {
    match kind {
        ScenarioKind::ServerOutage => (11, 15),
        ScenarioKind::SiteOutage => (14, 20),
        ScenarioKind::LatencyDegradation => (16, 30),
        _ => (20, 60), // the tiny site's hour
    }
}

/// The disruption scenarios after the site outage (which keeps the old incident's place):
/// a server outage of web-01, a latency degradation on a site that logs its request time,
/// and the tiny site's errors; on the last days of the sample (never its first 6 hours).
fn disruptions(opts: &GenerateOptions, domains: &[Domain]) -> Vec<Scenario> {
    let mut out = Vec::new();
    if domains.is_empty() {
        return out;
    }
    let last = opts.days.saturating_sub(1);
    let site_outage = 2.min(domains.len() - 1);
    let live = |i: usize| !domains[i].quiet && !domains[i].owners.is_empty();
    let web01: Vec<usize> = (0..domains.len()).filter(|&i| live(i) && domains[i].web == Web::Nginx1).collect();
    if !web01.is_empty() {
        out.push(Scenario { kind: ScenarioKind::ServerOutage, targets: web01.clone(), day: last.saturating_sub(1) });
    }
    // A site whose server logs $request_time: web-04 first, else web-01 (not the site outage's).
    let slow = (0..domains.len())
        .filter(|&i| live(i) && domains[i].web == Web::Nginx4 && domains[i].owners.len() == 1)
        .chain(web01.iter().copied().filter(|&i| i != site_outage && domains[i].owners.len() == 1))
        .chain(web01.iter().copied().filter(|&i| i != site_outage))
        .next();
    if let Some(i) = slow {
        out.push(Scenario { kind: ScenarioKind::LatencyDegradation, targets: vec![i], day: last.saturating_sub(2) });
    }
    if let Some(i) = domains.iter().position(|d| d.quiet) {
        out.push(Scenario { kind: ScenarioKind::TinySiteErrors, targets: vec![i], day: last.saturating_sub(3) });
    }
    out
}

impl Scenario {
    /// A disruption's window `[start, end)` in UTC: starts on a whole minute.
    pub(super) fn window(&self, opts: &GenerateOptions) -> (DateTime<Utc>, DateTime<Utc>) {
        let (hour, minutes) = disruption_slot(self.kind);
        let day = opts.start + Days::new(self.day as u64);
        let mut shared = Rng(opts.seed ^ xxhash(self.kind.name()) ^ ((self.day as u64) << 40) ^ 0x77);
        let start = local(day, hour, shared.range(0, 20) as u32, 0);
        (start, start + chrono::Duration::minutes(minutes))
    }

    /// Whether `r` (a request of one of its targets) is a request this disruption affected:
    /// in its window and failing (an error, an upstream failure) or slow, as its kind says.
    pub(super) fn affected(&self, opts: &GenerateOptions, r: &Req) -> bool {
        let (start, end) = self.window(opts);
        if r.ts < start || r.ts >= end {
            return false;
        }
        match self.kind {
            ScenarioKind::SiteOutage => (500..600).contains(&r.status),
            ScenarioKind::ServerOutage => matches!(r.status, 502..=504),
            ScenarioKind::LatencyDegradation => r.request_time_ms >= 4_000,
            _ => false,
        }
    }

    /// Makes `r`, a request of a target inside the window, what the disruption turns it into;
    /// `k` numbers the affected requests (the choices are deterministic). `own`: the
    /// scenario's own traffic, where a few site-outage requests get through on a retry.
    pub(super) fn affect(&self, r: &mut Req, k: usize, own: bool) {
        match self.kind {
            ScenarioKind::SiteOutage if own && k % 13 == 7 => {
                // nginx tried the failing backend, then the standby: `502, 200`.
                let (a, b) = (1 + k as u32 % 5, 40 + k as u32 % 200);
                r.status = 200;
                r.retried_from = 502;
                r.upstream_ms = Some(vec![a, b]);
                r.request_time_ms = a + b + 2;
            }
            ScenarioKind::SiteOutage => {
                r.status = [502, 503, 504, 500][k % 4];
                let up = if r.status == 504 { 60_000 } else { 1 + k as u32 % 30 };
                r.bytes = 150 + (k as u64 * 37) % 450;
                r.upstream_ms = Some(vec![up]);
                r.request_time_ms = up + 2;
                r.retried_from = 0;
            }
            ScenarioKind::ServerOutage => {
                let up = 1 + k as u32 % 4;
                r.status = 502;
                r.bytes = 157 + (k as u64 * 31) % 300;
                r.upstream_ms = Some(vec![up]);
                r.request_time_ms = up + 1;
                r.retried_from = 0;
            }
            ScenarioKind::LatencyDegradation => {
                let rt = 4_000 + (k as u32).wrapping_mul(7919) % 6_001;
                r.request_time_ms = rt;
                if let Some(up) = r.upstream_ms.as_mut() {
                    *up = vec![rt - 3];
                }
            }
            _ => {}
        }
    }

    /// A disruption's own traffic on target `d`: a steady stream from 30 minutes before its
    /// window to 30 minutes after (the first request inside falls on the window's first
    /// second); the tiny site's three requests.
    fn disruption_traffic(&self, opts: &GenerateOptions, d: &Domain, di: usize, out: &mut Vec<Req>) {
        let (start, end) = self.window(opts);
        let seed = opts.seed ^ xxhash(self.kind.name()) ^ ((self.day as u64) << 40) ^ 0xd15;
        let mut rng = Rng(seed ^ (di as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let host = d.hosts[0].as_str();
        let pool = xxhash(host);
        let visitor = |rng: &mut Rng| {
            let ip = client_ip(rng, pool);
            (ip, BROWSERS[(xxhash(&ip.to_string()) % BROWSERS.len() as u64) as usize])
        };
        if self.kind == ScenarioKind::TinySiteErrors {
            for (minute, status) in [(5, 200), (20, 502), (41, 503)] {
                let (ip, ua) = visitor(&mut rng);
                let mut r = req(
                    &mut rng,
                    start + chrono::Duration::minutes(minute),
                    host,
                    ip,
                    "GET",
                    "/",
                    "",
                    status,
                    ua,
                    false,
                );
                r.protocol = "HTTP/2.0";
                out.push(r);
            }
            return;
        }
        let per_minute: i64 = match self.kind {
            ScenarioKind::SiteOutage => 25,
            ScenarioKind::ServerOutage => 8,
            _ => 20,
        };
        let step = chrono::Duration::milliseconds(60_000 / per_minute);
        let pages = plain_pages();
        let (mut ts, stop) = (start - chrono::Duration::minutes(30), end + chrono::Duration::minutes(30));
        let mut k = 0;
        while ts < stop {
            let (ip, ua) = visitor(&mut rng);
            let path = if rng.chance(0.4) { *rng.pick(STATIC) } else { *rng.pick(&pages) };
            let mut r = req(&mut rng, ts, host, ip, "GET", path, "", 200, ua, false);
            r.protocol = "HTTP/2.0";
            if ts >= start && ts < end {
                self.affect(&mut r, k, true);
                k += 1;
            }
            out.push(r);
            ts += step;
        }
    }
}

/// The original brute force: 600 requests to /wp-login.php, 9 in 10 of them POSTs, 0.9–3 s
/// apart; the last hundred answered 429.
fn brute_force(rng: &mut Rng, d: &Domain, day: NaiveDate, out: &mut Vec<Req>) {
    let ip = IpAddr::V4(BRUTE_IP);
    let mut ts = random_ts(rng, day, Some((3, 3)));
    for i in 0..600 {
        out.push(Req {
            ts,
            host: d.hosts[0].clone(),
            ip,
            method: if i % 10 == 0 { "GET" } else { "POST" },
            path: "/wp-login.php".into(),
            query: String::new(),
            protocol: "HTTP/1.1",
            status: if i % 10 == 0 {
                200
            } else if i > 500 {
                429
            } else {
                200
            },
            bytes: rng.range(3_800, 4_400),
            referer: format!("https://{}/wp-login.php", d.hosts[0]),
            ua: BROWSERS[0].to_owned(),
            is_bot: false,
            is_static: false,
            request_time_ms: rng.range(80, 300) as u32,
            upstream_ms: Some(vec![rng.range(70, 290) as u32]),
            cache: "BYPASS",
            retried_from: 0,
        });
        ts += chrono::Duration::milliseconds(rng.range(900, 3_000) as i64);
    }
}

/// The original xmlrpc flood: 400 POSTs alternating between two sources, 0.1–0.9 s apart,
/// refused (403) after the first hundred.
fn xmlrpc_flood(rng: &mut Rng, d: &Domain, day: NaiveDate, out: &mut Vec<Req>) {
    let ips: [IpAddr; 2] = XMLRPC_IPS.map(|a| a.parse().expect("valid address"));
    let mut ts = random_ts(rng, day, Some((22, 22)));
    for i in 0..400 {
        let blocked = i >= 100;
        out.push(Req {
            ts,
            host: d.hosts[0].clone(),
            ip: ips[i % 2],
            method: "POST",
            path: "/xmlrpc.php".into(),
            query: String::new(),
            protocol: "HTTP/1.1",
            status: if blocked { 403 } else { 200 },
            bytes: if blocked { 199 } else { rng.range(300, 700) },
            referer: "-".into(),
            ua: "Mozilla/5.0 (Windows NT 6.1; rv:60.0) Gecko/20100101 Firefox/60.0".into(),
            is_bot: false,
            is_static: false,
            request_time_ms: rng.range(5, 200) as u32,
            upstream_ms: if blocked { None } else { Some(vec![rng.range(4, 190) as u32]) },
            cache: "-",
            retried_from: 0,
        });
        ts += chrono::Duration::milliseconds(rng.range(100, 900) as i64);
    }
}

/// The office behind one NAT address: person `p` browses the office's sites `p % n` and
/// `(p + 1) % n` during working hours, and logs in once to site `p % n` (their logins are
/// 13 minutes apart, so no two overlap on one site): login page, POST answered 302, the
/// dashboard, an admin page now and then and the heartbeat every 60 s for 20 minutes.
fn office(rng: &mut Rng, sc: &Scenario, day: NaiveDate, host: &str, pos: usize, out: &mut Vec<Req>) {
    let ip: IpAddr = OFFICE_IP.parse().expect("valid v4");
    let n = sc.targets.len().max(1);
    let pages = plain_pages();
    for p in 0..30usize {
        let ua = office_ua(p);
        if p % n != pos && (p + 1) % n != pos {
            continue;
        }
        for _ in 0..rng.range(2, 4) {
            let mut ts = local(day, rng.range(8, 15) as u32, rng.below(60) as u32, rng.below(60) as u32);
            for _ in 0..rng.range(1, 4) {
                let page = *rng.pick(&pages);
                out.push(req(rng, ts, host, ip, "GET", page, "", 200, &ua, false));
                for _ in 0..rng.range(1, 3) {
                    let asset = *rng.pick(STATIC);
                    let at = ts + ms(rng.range(50, 400));
                    out.push(req(rng, at, host, ip, "GET", asset, "", 200, &ua, false));
                }
                ts += ms(rng.range(10_000, 90_000));
            }
        }
        if p % n == pos {
            let mut ts = local(day, 8, 30, 0) + chrono::Duration::minutes(13 * p as i64);
            out.push(req(rng, ts, host, ip, "GET", "/wp-login.php", "", 200, &ua, false));
            ts += ms(rng.range(5_000, 15_000));
            out.push(req(rng, ts, host, ip, "POST", "/wp-login.php", "", 302, &ua, false));
            ts += ms(rng.range(300, 900));
            out.push(req(rng, ts, host, ip, "GET", "/wp-admin/", "", 200, &ua, false));
            let admin = ["/wp-admin/edit.php", "/wp-admin/post.php", "/wp-admin/upload.php", "/wp-admin/edit.php"];
            for minute in 1..=20 {
                let beat = ts + chrono::Duration::seconds(60 * minute);
                out.push(req(rng, beat, host, ip, "POST", "/wp-admin/admin-ajax.php", "", 200, &ua, false));
                if minute % 5 == 2 {
                    let page = *rng.pick(&admin);
                    let q = if page.ends_with("post.php") {
                        format!("post={}&action=edit", rng.range(10, 400))
                    } else {
                        String::new()
                    };
                    let at = beat + ms(rng.range(2_000, 20_000));
                    out.push(req(rng, at, host, ip, "GET", page, &q, 200, &ua, false));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(days: u32, customers: usize, rate: u32) -> GenerateOptions {
        GenerateOptions {
            out: PathBuf::from("/nonexistent"),
            seed: 42,
            start: "2026-10-20".parse().unwrap(),
            days,
            customers,
            rate,
        }
    }

    fn plan(o: &GenerateOptions) -> (Vec<Domain>, Vec<Scenario>) {
        let mut rng = Rng(o.seed ^ 0x5173_6c6f_6700_0000);
        let (_, domains, _) = build_register(&mut rng, o);
        let list = scenarios(o, &domains);
        (domains, list)
    }

    /// Every scenario's requests, generated as `generate` does (one call per target).
    fn requests(o: &GenerateOptions) -> (Vec<Domain>, Vec<(Scenario, Vec<Req>)>) {
        let (domains, list) = plan(o);
        let mut main = Rng(1);
        let out = list
            .into_iter()
            .map(|s| {
                let mut reqs = Vec::new();
                for &di in &s.targets {
                    s.append(&mut main, o, &domains, di, &mut reqs);
                }
                reqs.sort_by_key(|r| r.ts);
                (s, reqs)
            })
            .collect();
        (domains, out)
    }

    /// Leaky bucket over the requests' times: true once the level exceeds `capacity`.
    fn bucket(reqs: &[&Req], capacity: f64, leak_secs: f64) -> bool {
        let (mut level, mut last) = (0.0f64, None::<DateTime<Utc>>);
        for r in reqs {
            if let Some(t) = last {
                level = (level - (r.ts - t).num_milliseconds() as f64 / 1000.0 / leak_secs).max(0.0);
            }
            level += 1.0;
            last = Some(r.ts);
            if level > capacity {
                return true;
            }
        }
        false
    }

    /// The most requests within any `secs`-long window.
    fn most_in_window(reqs: &[&Req], secs: i64) -> usize {
        let mut best = 0;
        let mut lo = 0;
        for hi in 0..reqs.len() {
            while (reqs[hi].ts - reqs[lo].ts).num_seconds() >= secs {
                lo += 1;
            }
            best = best.max(hi - lo + 1);
        }
        best
    }

    /// The most distinct keys within any `secs`-long window.
    fn most_distinct_in_window(reqs: &[&Req], secs: i64, key: impl Fn(&Req) -> String) -> usize {
        let mut best = 0;
        for lo in 0..reqs.len() {
            let keys: BTreeSet<String> =
                reqs[lo..].iter().take_while(|r| (r.ts - reqs[lo].ts).num_seconds() < secs).map(|r| key(r)).collect();
            best = best.max(keys.len());
        }
        best
    }

    /// The per-site signals (one source, one host, time-sorted requests) at the contract's
    /// thresholds.
    fn signals(reqs: &[&Req]) -> BTreeSet<&'static str> {
        let only = |f: &dyn Fn(&Req) -> bool| reqs.iter().copied().filter(|r| f(r)).collect::<Vec<&Req>>();
        let mut out = BTreeSet::new();
        if bucket(&only(&|r| r.method == "POST" && r.path == "/wp-login.php"), 10.0, 10.0) {
            out.insert("wp-login-bruteforce");
        }
        if bucket(&only(&|r| r.method == "POST" && r.path == "/xmlrpc.php"), 10.0, 5.0) {
            out.insert("xmlrpc-abuse");
        }
        let authors = only(&|r| r.method == "GET" && r.query.starts_with("author="));
        if most_distinct_in_window(&authors, 600, |r| r.query.clone()) >= 8 {
            out.insert("user-enumeration");
        }
        let refused_wp = only(&|r| matches!(r.status, 403 | 404) && r.path.starts_with("/wp-"));
        if most_distinct_in_window(&refused_wp, 600, |r| r.path.clone()) >= 25 {
            out.insert("wp-scan");
        }
        let sensitive = only(&|r| SENSITIVE_FILES.contains(&r.path.as_str()));
        if most_distinct_in_window(&sensitive, 600, |r| r.path.clone()) >= 5 {
            out.insert("sensitive-file-probe");
        }
        let bad_ua = only(&|r| ["sqlmap", "nikto", "wpscan", "nuclei", "masscan"].iter().any(|b| r.ua.contains(b)));
        if most_in_window(&bad_ua, 600) >= 10 {
            out.insert("bad-user-agent");
        }
        let probes =
            only(&|r| r.status == 404 && !r.path.starts_with("/wp-") && !SENSITIVE_FILES.contains(&r.path.as_str()));
        if most_distinct_in_window(&probes, 300, |r| r.path.clone()) >= 40 {
            out.insert("http-probing");
        }
        let pages = only(&|r| !r.is_static && !r.is_bot && r.status == 200);
        if most_in_window(&pages, 300) >= 1500 {
            out.insert("aggressive-crawl");
        }
        out
    }

    /// Requests grouped by (source, host), time-sorted.
    fn by_source_site(reqs: &[Req]) -> BTreeMap<(IpAddr, String), Vec<&Req>> {
        let mut m: BTreeMap<(IpAddr, String), Vec<&Req>> = BTreeMap::new();
        for r in reqs {
            m.entry((r.ip, r.host.clone())).or_default().push(r);
        }
        for v in m.values_mut() {
            v.sort_by_key(|r| r.ts);
        }
        m
    }

    fn option_sets() -> Vec<GenerateOptions> {
        vec![opts(28, 12, 150), opts(3, 4, 40), opts(2, 3, 6), opts(1, 12, 1), opts(5, 30, 10)]
    }

    #[test]
    fn scenario_list_is_deterministic_per_seed() {
        let o = opts(28, 12, 150);
        let (_, a) = plan(&o);
        let (_, b) = plan(&o);
        assert_eq!(a, b);
        let kinds: BTreeSet<ScenarioKind> = a.iter().map(|s| s.kind).collect();
        assert_eq!(kinds.len(), a.len(), "one instance of each kind");
        assert_eq!(kinds.len(), 16, "{kinds:?}");
        let (_, c) = plan(&GenerateOptions { seed: 43, ..o.clone() });
        assert_ne!(a, c, "another seed places them elsewhere");
        // The requests, too.
        let (_, ra) = requests(&o);
        let (_, rb) = requests(&o);
        for ((_, x), (_, y)) in ra.iter().zip(&rb) {
            assert_eq!(x.len(), y.len());
            assert!(x
                .iter()
                .zip(y)
                .all(|(p, q)| (p.ts, p.ip, &p.path, &p.query, p.status) == (q.ts, q.ip, &q.path, &q.query, q.status)));
        }
    }

    #[test]
    fn per_site_attacks_spread_over_days_and_domains() {
        let o = opts(28, 12, 150);
        let (domains, list) = plan(&o);
        let per_site: Vec<&Scenario> = list
            .iter()
            .filter(|s| s.targets.len() == 1 && s.kind != ScenarioKind::OfficeNat && !s.kind.is_disruption())
            .collect();
        let days: BTreeSet<u32> = per_site.iter().map(|s| s.day).collect();
        let sites: BTreeSet<usize> = per_site.iter().map(|s| s.targets[0]).collect();
        assert_eq!(days.len(), per_site.len(), "different days");
        assert_eq!(sites.len(), per_site.len(), "different domains");
        for s in &list {
            assert!(s.day < o.days);
            for &t in &s.targets {
                assert!(!domains[t].owners.is_empty(), "{:?} attacks an unattributed host", s.kind);
            }
        }
    }

    #[test]
    fn attacks_exceed_their_thresholds_and_benign_stay_below() {
        for o in option_sets() {
            let (domains, all) = requests(&o);
            let mut sources: BTreeMap<IpAddr, ScenarioKind> = BTreeMap::new();
            for (s, reqs) in &all {
                let what = format!("{:?} with {} days, {} customers, rate {}", s.kind, o.days, o.customers, o.rate);
                for r in reqs {
                    let day = r.ts.with_timezone(&Helsinki).date_naive();
                    assert!(day >= o.start && day <= o.end(), "{what}: request on {day}");
                    assert_eq!(r.is_static, is_static_path(&r.path), "{what}: {}", r.path);
                    if !s.kind.is_disruption() {
                        let prev = sources.insert(r.ip, s.kind);
                        assert!(prev.is_none() || prev == Some(s.kind), "{what}: {} also in {prev:?}", r.ip);
                    }
                }
                let groups = by_source_site(reqs);
                match s.kind {
                    k if k.is_disruption() => check_disruption(&o, &domains, s, reqs),
                    ScenarioKind::CrossTenant => {
                        for (k, g) in &groups {
                            assert!(signals(g).is_empty(), "{what}: {k:?} fires {:?}", signals(g));
                        }
                        check_cross_tenant(&o, &domains, s, reqs);
                    }
                    k if k.is_attack() => {
                        assert!(!groups.is_empty(), "{what}: no requests");
                        if k == ScenarioKind::XmlrpcAbuse {
                            assert_eq!(groups.len(), 2, "{what}: two sources");
                        }
                        for (key, g) in &groups {
                            let fired = signals(g);
                            assert!(fired.contains(k.name()), "{what}: {key:?} fires only {fired:?}");
                        }
                    }
                    _ => {
                        for (key, g) in &groups {
                            assert!(signals(g).is_empty(), "{what}: {key:?} fires {:?}", signals(g));
                        }
                        check_benign_shape(&o, &domains, s, reqs);
                    }
                }
            }
            let kinds: BTreeSet<ScenarioKind> = all.iter().map(|(s, _)| s.kind).collect();
            assert_eq!(kinds.contains(&ScenarioKind::CrossTenant), o.customers >= 10, "{kinds:?}");
        }
    }

    fn check_cross_tenant(o: &GenerateOptions, domains: &[Domain], s: &Scenario, reqs: &[Req]) {
        let day = o.start + Days::new(s.day as u64);
        let first = reqs.first().unwrap().ts;
        let last = reqs.last().unwrap().ts;
        assert!((last - first).num_seconds() < 30 * 60, "within 30 minutes");
        let mut customers = BTreeSet::new();
        let mut per_host: BTreeMap<&str, Vec<&Req>> = BTreeMap::new();
        for r in reqs {
            assert_eq!((r.method, r.path.as_str()), ("POST", "/wp-login.php"));
            let IpAddr::V4(a) = r.ip else { panic!("v4") };
            assert_eq!(a.octets()[..3], CROSS_NET);
            per_host.entry(&r.host).or_default().push(r);
        }
        let addresses: BTreeSet<IpAddr> = reqs.iter().map(|r| r.ip).collect();
        assert!(addresses.len() >= 3, "several addresses in the /24");
        for (i, d) in domains.iter().enumerate() {
            if let Some((c, _)) = d.owner(day).filter(|_| !d.owners.is_empty() && !d.quiet) {
                let tries = per_host.get(d.hosts[0].as_str()).unwrap_or_else(|| panic!("site {i} not attempted"));
                assert_eq!(tries.len(), 3);
                assert!(tries.windows(2).all(|w| (w[1].ts - w[0].ts).num_seconds() >= 20));
                customers.insert(c);
            }
        }
        assert!(customers.len() >= 10, "{customers:?}");
    }

    /// A disruption's own traffic has the shape its contract promises.
    fn check_disruption(o: &GenerateOptions, domains: &[Domain], s: &Scenario, reqs: &[Req]) {
        let what = format!("{:?} with {} days, {} customers", s.kind, o.days, o.customers);
        let (start, end) = s.window(o);
        let window_start = local(o.start, 0, 0, 0);
        assert!(start - window_start >= chrono::Duration::hours(6), "{what}: in the first 6 hours");
        assert!(end <= local(o.end() + Days::new(1), 0, 0, 0), "{what}: after the sample");
        let inside: Vec<&Req> = reqs.iter().filter(|r| r.ts >= start && r.ts < end).collect();
        if s.kind != ScenarioKind::TinySiteErrors {
            assert_eq!(inside.first().map(|r| r.ts), Some(start), "{what}: the first request opens the window");
        }
        let per_minute = |rs: &[&Req]| {
            let mut m: BTreeMap<i64, Vec<u16>> = BTreeMap::new();
            for r in rs {
                m.entry(r.ts.timestamp() / 60).or_default().push(r.status);
            }
            m
        };
        match s.kind {
            ScenarioKind::SiteOutage => {
                assert_eq!((end - start).num_minutes(), 20);
                let minutes = per_minute(&inside);
                assert_eq!(minutes.len(), 20, "{what}");
                assert!(minutes.values().all(|v| v.len() >= 20), "{what}: ≥ 20 requests a minute");
                let bad = inside.iter().filter(|r| r.status >= 500).count();
                assert!(bad * 10 >= inside.len() * 9, "{what}: {bad} of {} 5xx", inside.len());
                assert!(inside.iter().any(|r| r.retried_from == 502 && r.status == 200), "{what}: retries");
            }
            ScenarioKind::ServerOutage => {
                assert_eq!((end - start).num_minutes(), 15);
                assert!(inside.iter().all(|r| r.status == 502 && r.upstream_ms.is_some()), "{what}");
                let hosts: BTreeSet<&str> = inside.iter().map(|r| r.host.as_str()).collect();
                assert_eq!(hosts.len(), s.targets.len(), "{what}: every site of the server");
                assert!(s.targets.iter().all(|&t| domains[t].web == Web::Nginx1));
                let customers: BTreeSet<&str> = s.targets.iter().map(|&t| domains[t].owners[0].1.as_str()).collect();
                assert!(customers.len() >= 2.min(o.customers), "{what}: {customers:?}");
            }
            ScenarioKind::LatencyDegradation => {
                assert_eq!((end - start).num_minutes(), 30);
                assert!(inside.iter().all(|r| (4_000..=10_000).contains(&r.request_time_ms) && r.status == 200));
                assert!(reqs.iter().filter(|r| r.ts < start || r.ts >= end).all(|r| r.request_time_ms < 1_000));
                assert!(domains[s.targets[0]].web.logs_upstream(), "{what}: its server logs $request_time");
            }
            ScenarioKind::TinySiteErrors => {
                assert_eq!(reqs.len(), 3);
                assert_eq!(reqs.iter().filter(|r| r.status >= 500).count(), 2);
                assert!((reqs[2].ts - reqs[0].ts) < chrono::Duration::hours(1));
                assert!(domains[s.targets[0]].quiet);
            }
            k => panic!("{k:?}"),
        }
    }

    /// Disruptions never overlap in time.
    #[test]
    fn disruptions_do_not_overlap() {
        for o in option_sets() {
            let (_, list) = plan(&o);
            let mut windows: Vec<_> = list.iter().filter(|s| s.kind.is_disruption()).map(|s| s.window(&o)).collect();
            assert_eq!(windows.len(), 4, "{} days, {} customers", o.days, o.customers);
            windows.sort();
            assert!(windows.windows(2).all(|w| w[0].1 + chrono::Duration::minutes(30) < w[1].0), "{windows:?}");
        }
    }

    fn check_benign_shape(o: &GenerateOptions, domains: &[Domain], s: &Scenario, reqs: &[Req]) {
        let attributed = domains.iter().filter(|d| !d.owners.is_empty() && !d.quiet).count();
        match s.kind {
            ScenarioKind::OfficeNat => {
                let ips: BTreeSet<IpAddr> = reqs.iter().map(|r| r.ip).collect();
                assert_eq!(ips.len(), 1);
                let uas: BTreeSet<&str> = reqs.iter().map(|r| r.ua.as_str()).collect();
                assert_eq!(uas.len(), 30, "30 distinct agents");
                let logins: Vec<&Req> =
                    reqs.iter().filter(|r| r.method == "POST" && r.path == "/wp-login.php").collect();
                assert_eq!(logins.len(), 30, "each person logs in once");
                assert!(logins.iter().all(|r| r.status == 302));
                let hosts: BTreeSet<&str> = reqs.iter().map(|r| r.host.as_str()).collect();
                assert!(hosts.len() >= 2.min(attributed), "several sites: {hosts:?}");
                let beats = reqs.iter().filter(|r| r.path == "/wp-admin/admin-ajax.php").count();
                assert_eq!(beats, 30 * 20);
                for r in reqs {
                    let h = r.ts.with_timezone(&Helsinki).format("%H").to_string();
                    assert!(("08".."17").contains(&h.as_str()), "working hours: {h}");
                    assert!(r.status < 400 && !r.is_bot);
                }
            }
            ScenarioKind::UptimeMonitor => {
                let hosts: BTreeMap<&str, Vec<&Req>> = reqs.iter().fold(BTreeMap::new(), |mut m, r| {
                    m.entry(r.host.as_str()).or_insert_with(Vec::new).push(r);
                    m
                });
                assert_eq!(hosts.len(), attributed, "every site");
                for v in hosts.values() {
                    assert!(v.len() >= 23 * 60, "{}", v.len());
                    assert!(v.windows(2).all(|w| (w[1].ts - w[0].ts).num_seconds() == 60));
                    assert!(v.iter().all(|r| r.path == "/" && r.ua == UPTIME_UA && r.is_bot));
                }
            }
            ScenarioKind::Googlebot => {
                assert_eq!(reqs.len(), 1500);
                assert!((reqs[1499].ts - reqs[0].ts).num_seconds() < 30 * 60);
                assert!(reqs.iter().all(|r| r.is_bot && !r.is_static && r.ua == GOOGLEBOT_UA));
                assert!(reqs.iter().all(|r| matches!(r.ip, IpAddr::V4(a) if a.octets()[..3] == [66, 249, 66])));
            }
            k => panic!("{k:?} {}", o.days),
        }
    }

    #[test]
    fn minimum_counts_hold_whatever_the_rate() {
        for o in option_sets() {
            let (_, all) = requests(&o);
            let count = |k: ScenarioKind, f: &dyn Fn(&Req) -> bool| {
                all.iter().filter(|(s, _)| s.kind == k).flat_map(|(_, r)| r).filter(|r| f(r)).count()
            };
            use ScenarioKind::*;
            assert!(count(WpLoginBruteforce, &|r| r.method == "POST") >= 60);
            assert!(count(UserEnumeration, &|r| r.path == "/wp-json/wp/v2/users") >= 2);
            assert!(count(WpScan, &|r| matches!(r.status, 403 | 404)) >= 25);
            assert!(count(SensitiveFileProbe, &|_| true) >= 5);
            assert!(count(BadUserAgent, &|r| r.ua == SQLMAP_UA) >= 10);
            assert!(count(HttpProbing, &|r| r.status == 404) >= 40);
            assert!(count(AggressiveCrawl, &|r| r.status == 200 && !r.is_static) >= 1500);
            assert!(count(Googlebot, &|_| true) >= 1500);
        }
    }

    #[test]
    fn generate_writes_security_and_benign_truth() {
        let dir = std::env::temp_dir().join(format!("sitelog-scenarios-{}", std::process::id()));
        let o = GenerateOptions { out: dir.clone(), ..opts(3, 12, 2) };
        let summary = generate(&o).unwrap();
        let t = dir.join("truth");
        let sec = std::fs::read_to_string(t.join("security.csv")).unwrap();
        assert!(sec.starts_with("scenario,source,customer_id,site_host,day\n"), "{sec}");
        let ben = std::fs::read_to_string(t.join("benign.csv")).unwrap();
        assert!(ben.starts_with("kind,source\n"), "{ben}");
        let rows = truth::read_security(&t).unwrap();
        assert_eq!(rows.len(), summary.attacks);
        let kinds: BTreeSet<&str> = rows.iter().map(|r| r.scenario.as_str()).collect();
        let want = [
            "wp-login-bruteforce",
            "xmlrpc-abuse",
            "user-enumeration",
            "wp-scan",
            "sensitive-file-probe",
            "bad-user-agent",
            "http-probing",
            "aggressive-crawl",
            "cross-tenant",
        ];
        assert_eq!(kinds, want.into_iter().collect());
        assert_eq!(rows.len(), want.len() + 1, "xmlrpc has two sources: {rows:?}");
        let register: sitelog_schema::register::RegisterExport =
            serde_json::from_str(&std::fs::read_to_string(dir.join("register.json")).unwrap()).unwrap();
        for r in &rows {
            assert!(r.day >= o.start.to_string() && r.day <= o.end().to_string(), "{r:?}");
            if r.scenario == "cross-tenant" {
                assert_eq!(
                    (r.source.as_str(), r.customer_id.as_str(), r.site_host.as_str()),
                    ("217.182.143.0/24", "", "")
                );
                continue;
            }
            assert!(r.source.parse::<IpAddr>().is_ok(), "{r:?}");
            let owner = register.customers.iter().find(|c| c.customer_id == r.customer_id).expect("a customer");
            assert!(owner.sites.iter().any(|s| s.primary_domain == r.site_host), "{r:?}");
        }
        assert!(rows.iter().any(|r| r.source == "2a0e:8f02:f017::66"));
        assert!(rows.iter().any(|r| r.source == "2a03:b0c0:3:d0::1a2f:1"));
        assert_eq!(
            summary.brute_force_site,
            rows.iter().find(|r| r.scenario == "wp-login-bruteforce").unwrap().site_host
        );
        let benign = truth::read_benign(&t).unwrap();
        assert_eq!(
            benign,
            [("googlebot", "66.249.66.0/24"), ("office-nat", "62.78.192.34"), ("uptime-monitor", "69.162.124.235")]
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
                .to_vec()
        );
        // Usage truth holds every request, the scenarios' included.
        let usage = truth::read_usage(&t).unwrap();
        let counted: u64 = usage.values().map(|u| u.requests).sum::<u64>() + summary.unattributed_requests;
        assert_eq!(counted, summary.records);
        // Health truth too: every record in exactly one (site, server, hour).
        let health = truth::read_health(&t).unwrap();
        assert_eq!(health.iter().map(|h| h.requests).sum::<u64>(), summary.records);
        assert!(health.iter().all(|h| h.status_5xx <= h.requests && h.upstream_failures <= h.requests));
        let servers: BTreeSet<&str> = health.iter().map(|h| h.server.as_str()).collect();
        assert_eq!(servers, ["web-01", "web-02", "web-03", "web-04"].into_iter().collect());
        let incidents = truth::read_incidents(&t).unwrap();
        let kinds: Vec<(&str, &str, &str)> =
            incidents.iter().map(|i| (i.scenario.as_str(), i.kind.as_str(), i.cause.as_str())).collect();
        for want in [
            ("site-outage", "site", "errors"),
            ("server-outage", "server", "errors"),
            ("latency-degradation", "site", "latency"),
        ] {
            assert_eq!(kinds.iter().filter(|k| **k == want).count(), 1, "{kinds:?}");
        }
        for i in &incidents {
            assert!(i.start < i.end && !i.affected_customers.is_empty() && !i.affected_sites.is_empty(), "{i:?}");
            assert_eq!(i.site_host.is_empty(), i.kind == "server", "{i:?}");
            // The failing hour's health row holds the affected requests.
            if i.cause == "errors" {
                let hour = DateTime::from_timestamp(i.start.timestamp() / 3600 * 3600, 0).unwrap();
                let failures: u64 = health
                    .iter()
                    .filter(|h| h.hour == hour && h.server == i.server && i.affected_sites.contains(&h.site_host))
                    .map(|h| h.status_5xx)
                    .sum();
                assert!(failures > 0, "{i:?}");
            }
        }
        let server = incidents.iter().find(|i| i.kind == "server").unwrap();
        assert!(server.affected_customers.len() >= 2 && server.affected_sites.len() >= 2, "{server:?}");
        let quiet = truth::read_no_incident(&t).unwrap();
        assert_eq!(quiet.len(), 1);
        let tiny: Vec<_> = health.iter().filter(|h| h.site_host == quiet[0].site_host).collect();
        assert_eq!(tiny.iter().map(|h| (h.requests, h.status_5xx)).collect::<Vec<_>>(), [(3, 2)], "{tiny:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
