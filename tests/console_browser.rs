//! The web console (`sitelog serve`) in a real browser. A generated sample (four web servers
//! with injected disruptions and attacks) goes through collect → process → `alerts run
//! --from/--to`; `sitelog serve` starts on it with a password file and `SITELOG_NOW` at the
//! start of the sample's last day; `tests/browser/console.mjs` drives headless Chromium
//! (Debian's `chromium`, through playwright-core) over every page and reports what it saw:
//!
//! - every page loads (200) with no console error, page error, failed or external request;
//! - a request without a login, or with a wrong password, is refused (401);
//! - the figures shown equal the ground truth and the CLI: incident ids (`incidents list`),
//!   affected customers (truth and `incidents list`), the site page's requests for the month
//!   (truth), the usage page's per-customer figures (`report billing --format json`, and
//!   requests against the truth), the security page's event count (`security events`), the
//!   per-IP page's requests (`investigate ip`);
//! - reading addresses and contacts left `access_audit` records with reason "web console" and
//!   the logged-in user;
//! - on a database without sitelog's tables the pages still answer, saying what is missing;
//! - a screenshot of each page is written to `target/console-screenshots/` (the artifact),
//!   and each page's server-side render time (`Server-Timing`) is printed.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::path::PathBuf;

use chrono::{Days, TimeZone, Utc};
use sitelog::sample::{truth, GenerateOptions};
use sitelog_schema::register::RegisterExport;

const USER: &str = "ops-alice";
const PASSWORD: &str = "console test: correct horse";

/// `sitelog serve`, stopped when dropped.
struct Serve(std::process::Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn cache_dir() -> PathBuf {
    if let Ok(c) = std::env::var("SITELOG_CACHE") {
        return PathBuf::from(c);
    }
    let base = std::env::var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cache"));
    base.join("sitelog")
}

/// playwright-core in a cache directory outside the clone (installed once with npm).
fn playwright_dir() -> PathBuf {
    let dir = cache_dir().join("node");
    if !dir.join("node_modules/playwright-core/package.json").exists() {
        std::fs::create_dir_all(&dir).unwrap();
        let st = std::process::Command::new("npm")
            .args(["install", "--prefix", dir.to_str().unwrap(), "--no-audit", "--no-fund", "playwright-core@1"])
            .status()
            .expect("running npm (Debian package npm)");
        assert!(st.success(), "npm install playwright-core into {} failed", dir.display());
    }
    dir
}

/// GETs `path` with the test's login: status and body.
fn get(addr: &str, path: &str) -> (u16, String) {
    use base64::Engine as _;
    use std::io::{Read, Write};
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    write!(c, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Basic {auth}\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    c.read_to_string(&mut text).unwrap();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

/// GETs `path` with the test's login; the render time the console reports (`Server-Timing`).
fn render_ms(addr: &str, path: &str) -> f64 {
    use base64::Engine as _;
    use std::io::{Read, Write};
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    write!(c, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Basic {auth}\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    c.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{path}: {}", text.lines().next().unwrap_or(""));
    text.lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("server-timing: render;dur=").map(str::to_owned))
        .and_then(|v| v.trim().parse().ok())
        .expect("a Server-Timing header")
}

fn target_dir() -> PathBuf {
    std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
}

#[test]
fn every_console_page_loads_in_chromium_shows_the_true_figures_and_needs_a_login() {
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "Debian's chromium is needed (scripts/test installs it: apt-get install chromium)"
    );
    let playwright = playwright_dir();
    let today = Utc::now().with_timezone(&chrono_tz::Europe::Helsinki).date_naive();
    let dir = support::temp_dir("console");
    let opts = GenerateOptions {
        out: dir.join("sample"),
        seed: 11,
        start: today - Days::new(8),
        days: 7,
        customers: 12,
        rate: 12,
    };
    let password_file = dir.join("console-passwords");
    std::fs::write(&password_file, format!("# people who may use the console\n{USER}:{PASSWORD}\n")).unwrap();
    let extra = format!("\n[serve]\nlisten = \"127.0.0.1:0\"\npassword_file = \"{}\"\n", password_file.display());
    let run = support::run_sample(&opts, "console", &[], &extra);
    let cfg = run.config.to_str().unwrap();
    let truth_dir = opts.out.join("truth");

    // Incidents, as `alerts run` stores them for the sample's whole window.
    let from = opts.start.and_hms_opt(0, 0, 0).unwrap().and_utc() - chrono::Duration::hours(3);
    let to = (opts.start + Days::new(u64::from(opts.days) + 1)).and_hms_opt(0, 0, 0).unwrap().and_utc();
    support::sitelog(&["alerts", "run", "-c", cfg, "--from", &from.to_rfc3339(), "--to", &to.to_rfc3339()], &[]);

    // The clock: Helsinki midnight that starts the sample's last day.
    let last_day = opts.start + Days::new(u64::from(opts.days) - 1);
    let now = chrono_tz::Europe::Helsinki
        .from_local_datetime(&last_day.and_hms_opt(0, 0, 0).unwrap())
        .unwrap()
        .with_timezone(&Utc);
    let now_s = now.to_rfc3339();
    let clock = [("SITELOG_NOW", now_s.as_str())];
    let month = format!("{}", last_day.format("%Y-%m"));

    // What the CLI says, with the same clock.
    let week_ago = (now - chrono::Duration::days(7)).to_rfc3339();
    let plus = (now + chrono::Duration::seconds(1)).to_rfc3339();
    let listed = support::sitelog(
        &["incidents", "list", "-c", cfg, "--from", &week_ago, "--to", &plus, "--format", "json"],
        &clock,
    );
    let incidents: Vec<serde_json::Value> = listed.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(!incidents.is_empty(), "the sample's disruptions are incidents");
    let billing: serde_json::Value = serde_json::from_str(&support::sitelog(
        &["report", "billing", "-c", cfg, "--month", &month, "--format", "json"],
        &clock,
    ))
    .unwrap();
    let events = support::sitelog(
        &["security", "events", "-c", cfg, "--since", "7d", "--format", "json", "--reason", "console test"],
        &clock,
    );
    let event_count = events.lines().filter(|l| !l.trim().is_empty()).count();
    let attacks = truth::read_security(&truth_dir).unwrap();
    let attacker = attacks.iter().find(|a| !a.source.contains('/')).expect("an attack from one address").source.clone();
    let ip: serde_json::Value = serde_json::from_str(&support::sitelog(
        &["investigate", "ip", &attacker, "-c", cfg, "--since", "7d", "--format", "json", "--reason", "console test"],
        &clock,
    ))
    .unwrap();
    let ip_requests: u64 = ip["sites"].as_array().unwrap().iter().map(|s| s["requests"].as_u64().unwrap()).sum();

    // Ground truth: usage per customer / site in the month; the injected disruptions.
    let usage = truth::read_usage(&truth_dir).unwrap();
    let in_month = |day: &str| day.starts_with(&month);
    let mut customer_requests: BTreeMap<String, u64> = BTreeMap::new();
    let mut site_requests: BTreeMap<String, u64> = BTreeMap::new();
    for ((c, s, d), u) in &usage {
        if in_month(d) && !c.is_empty() {
            *customer_requests.entry(c.clone()).or_default() += u.requests;
            *site_requests.entry(s.clone()).or_default() += u.requests;
        }
    }
    let register: RegisterExport =
        serde_json::from_str(&std::fs::read_to_string(opts.out.join("register.json")).unwrap()).unwrap();
    let site = register
        .customers
        .iter()
        .flat_map(|c| c.sites.iter())
        .find(|s| site_requests.get(&s.site_id).is_some_and(|&n| n > 0))
        .expect("a site with traffic this month");
    let injected = truth::read_incidents(&truth_dir).unwrap();

    // A collector source 15 minutes behind the clock (the sample's collect runs with the real
    // clock, so its own heartbeats are in the "future" of SITELOG_NOW).
    let behind_through = now - chrono::Duration::minutes(15);
    support::block_on(
        run.client
            .query(
                "INSERT INTO collector_heartbeats (server, source, sent_at, delivered_through, position, idle, files) \
                 VALUES ('web-console-test', 'nginx', fromUnixTimestamp64Milli(toInt64(?), 'UTC'), \
                 fromUnixTimestamp64Micro(toInt64(?), 'UTC'), 1, 0, 1)",
            )
            .bind(now.timestamp_millis() - 5_000)
            .bind(behind_through.timestamp_micros())
            .execute(),
    )
    .unwrap();

    // The console.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sitelog"))
        .args(["serve", "-c", cfg])
        .env("SITELOG_NOW", &now_s)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(dir.join("serve.log")).unwrap())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    let _serve = Serve(child);
    let base = first.trim().strip_prefix("console: ").expect("console: URL").trim_end_matches('/').to_owned();

    let mut pages = vec![
        ("now".to_owned(), "/".to_owned()),
        ("security".to_owned(), "/security?days=7".to_owned()),
        ("ip".to_owned(), format!("/security/ip/{attacker}")),
        ("site".to_owned(), format!("/sites/{}", site.primary_domain)),
        ("usage".to_owned(), format!("/usage?month={month}")),
    ];
    for (i, inc) in incidents.iter().enumerate() {
        pages.push((format!("incident-{i}"), format!("/incidents/{}", inc["id"].as_str().unwrap())));
    }
    let shots = target_dir().join("console-screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    let spec = serde_json::json!({
        "base": base,
        "user": USER,
        "password": PASSWORD,
        "pages": pages.iter().map(|(n, p)| serde_json::json!({"name": n, "path": p})).collect::<Vec<_>>(),
        "screenshots": shots,
        "profile": dir.join("chromium-profile"),
        "playwright": playwright,
    });
    let spec_file = dir.join("console-spec.json");
    std::fs::write(&spec_file, spec.to_string()).unwrap();
    let started = std::time::Instant::now();
    let out = std::process::Command::new("node")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/console.mjs"))
        .arg(&spec_file)
        .output()
        .expect("running node");
    assert!(
        out.status.success(),
        "console.mjs failed: {}\n{}\n{}\nserve log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default()
    );
    let browser_secs = started.elapsed().as_secs_f64();
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let page = |name: &str| &seen["pages"][name];

    // Nothing failed in the browser, and every page is there with its role and a screenshot.
    assert_eq!(seen["problems"], serde_json::json!([]), "browser problems");
    for (name, path) in &pages {
        let p = page(name);
        assert_eq!(p["status"], 200, "{path}: {p}");
        assert!(p["role"].as_str().unwrap().starts_with("Needs role: sitelog_"), "{path}: {}", p["role"]);
        assert_eq!(p["errors"], serde_json::json!([]), "{path}");
        assert_eq!(p["missing"], serde_json::json!([]), "{path}: every table exists on the sample");
        assert!(shots.join(format!("{name}.png")).metadata().unwrap().len() > 1000, "screenshot of {path}");
    }
    assert!(!seen["phoneOverflowX"].as_bool().unwrap(), "the Now page scrolls sideways on a phone");
    for (k, status) in seen["refused"].as_object().unwrap() {
        assert_eq!(status, 401, "{k}: served without a valid login");
    }

    // Now: the last 7 days' incidents are the CLI's; charts are drawn.
    let shown: BTreeSet<String> =
        page("now")["incidents"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect();
    let cli: BTreeSet<String> = incidents.iter().map(|i| i["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(shown, cli, "incidents on the Now page");
    assert!(page("now")["charts"].as_u64().unwrap() >= 2, "the 24 h charts");
    let lag = page("now")["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["source"] == "web-console-test/nginx")
        .cloned()
        .expect("the collector source on the Now page");
    assert_eq!(lag["behind"], "900", "freshness: 15 minutes behind");

    // Incident pages: affected customers as the CLI lists them, and as the generator injected.
    for (i, inc) in incidents.iter().enumerate() {
        let p = page(&format!("incident-{i}"));
        let got: Vec<String> =
            p["customers"].as_array().unwrap().iter().map(|c| c["customer"].as_str().unwrap().to_owned()).collect();
        let want: Vec<String> = serde_json::from_value(inc["affected_customers"].clone()).unwrap();
        assert_eq!(got, want, "affected customers of {}", inc["id"]);
        let truth_match = injected.iter().find(|w| {
            w.kind == inc["kind"].as_str().unwrap()
                && if w.kind == "site" {
                    inc["site_host"] == w.site_host.as_str()
                } else {
                    inc["server"] == w.server.as_str()
                }
        });
        if let Some(w) = truth_match {
            assert_eq!(got, w.affected_customers, "{}: affected customers vs truth", w.scenario);
        }
        assert!(p["charts"].as_u64().unwrap() >= 2, "incident timeline charts");
    }

    // Site: this month's requests of the site (every host of it) = truth.
    let month_requests: u64 = page("site")["monthRequests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["site"] == site.site_id.as_str())
        .map(|m| m["requests"].as_str().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(month_requests, site_requests[&site.site_id], "site {} requests in {month}", site.primary_domain);

    // Usage: per customer the figures of `report billing`, and requests = truth.
    let mut on_page: BTreeMap<String, (u64, String, String)> = BTreeMap::new();
    for c in page("usage")["customers"].as_array().unwrap() {
        on_page.insert(
            c["customer"].as_str().unwrap().to_owned(),
            (
                c["requests"].as_str().unwrap().parse().unwrap(),
                c["billed"].as_str().unwrap().to_owned(),
                c["overage"].as_str().unwrap().to_owned(),
            ),
        );
    }
    let opt = |v: &serde_json::Value| v.as_u64().map(|n| n.to_string()).unwrap_or_default();
    let from_cli: BTreeMap<String, (u64, String, String)> = billing["customers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            let t = &b["total"];
            (
                b["customer_id"].as_str().unwrap().to_owned(),
                (t["requests"].as_u64().unwrap(), opt(&t["billed_usage"]), opt(&t["overage"])),
            )
        })
        .collect();
    assert_eq!(on_page, from_cli, "usage page vs report billing");
    let page_requests: BTreeMap<String, u64> = on_page.iter().map(|(c, v)| (c.clone(), v.0)).collect();
    assert_eq!(page_requests, customer_requests, "usage page requests vs truth");

    // Security: the events `security events` lists; the address's requests as `investigate ip`.
    assert_eq!(page("security")["values"]["event-count"], event_count.to_string(), "security events");
    assert!(event_count > 0);
    assert_eq!(page("ip")["values"]["ip-requests"], ip_requests.to_string(), "requests of {attacker}");
    assert!(ip_requests > 0);

    // Reading addresses and contacts was recorded with the logged-in user.
    let audited: Vec<String> = support::block_on(
        run.client
            .query("SELECT arguments FROM access_audit WHERE reason = 'web console' AND os_user = ? ORDER BY ts")
            .bind(USER)
            .fetch_all(),
    )
    .unwrap();
    for path in ["/security", &format!("/security/ip/{attacker}"), &format!("/sites/{}", site.primary_domain)] {
        assert!(audited.iter().any(|a| a == path), "no access_audit record for {path}: {audited:?}");
    }
    assert!(audited.iter().any(|a| a.starts_with("/incidents/")), "incident contacts audited: {audited:?}");

    // A database without sitelog's tables (features not installed there): every page still
    // answers, and says plainly what is missing.
    let empty = format!("{}_empty", run.db);
    support::block_on(run.client.query(&format!("CREATE DATABASE IF NOT EXISTS {empty}")).execute()).unwrap();
    let mut bare = std::process::Command::new(env!("CARGO_BIN_EXE_sitelog"))
        .args(["serve", "-c", cfg, "--database", &empty])
        .env("SITELOG_NOW", &now_s)
        .env("RUST_LOG", "error")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(bare.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let _bare = Serve(bare);
    let bare_addr = line.trim().trim_start_matches("console: http://").trim_end_matches('/').to_owned();
    for path in ["/", "/security", "/usage", &format!("/sites/{}", site.primary_domain)] {
        let (status, body) = get(&bare_addr, path);
        assert_eq!(status, 200, "{path} without tables: {body}");
        assert!(body.contains("class=\"missing\">Not available"), "{path} says what is missing: {body}");
        assert!(!body.contains("class=\"error\""), "{path}: {body}");
    }

    // Render times (server side): the browser's visit, then 5 more requests per page.
    let addr = base.trim_start_matches("http://").to_owned();
    let mut report = String::new();
    for (name, path) in &pages {
        let first = page(name)["serverTiming"].as_str().unwrap().to_owned();
        let mut ms: Vec<f64> = (0..5).map(|_| render_ms(&addr, path)).collect();
        ms.sort_by(f64::total_cmp);
        report.push_str(&format!("  {path}: browser {first}; 5 more: median {:.1} ms, max {:.1} ms\n", ms[2], ms[4]));
    }
    println!(
        "console_browser: {} pages, {} incidents, browser run {browser_secs:.1} s, screenshots in {}\n{report}",
        pages.len(),
        incidents.len(),
        shots.display()
    );
}

/// GET over TLS (rustls, trusting only `ca`); the status line's code.
fn tls_get(addr: std::net::SocketAddr, ca: &std::path::Path, path: &str, auth: Option<&str>) -> u16 {
    use base64::Engine as _;
    use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
    use std::io::{Read, Write};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(rustls::crypto::ring::default_provider().into())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let conn =
        rustls::ClientConnection::new(std::sync::Arc::new(cfg), ServerName::try_from("localhost").unwrap()).unwrap();
    let mut s = rustls::StreamOwned::new(conn, std::net::TcpStream::connect(addr).unwrap());
    let header = auth
        .map(|a| format!("Authorization: Basic {}\r\n", base64::engine::general_purpose::STANDARD.encode(a)))
        .unwrap_or_default();
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n{header}Connection: close\r\n\r\n").unwrap();
    let mut text = Vec::new();
    let _ = s.read_to_end(&mut text); // the server may close without close_notify
    String::from_utf8_lossy(&text).split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

#[test]
fn the_console_speaks_tls_and_refuses_requests_without_a_valid_login() {
    let dir = support::temp_dir("console-tls");
    let (ca, cert, key) = (dir.join("ca.pem"), dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=DNS:localhost\n").unwrap();
    let openssl = |args: &[&str]| {
        let st = std::process::Command::new("openssl")
            .args(args)
            .current_dir(&dir)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl (Debian package openssl)");
        assert!(st.success(), "openssl {args:?}");
    };
    // A test CA and a certificate for localhost signed by it.
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=console test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "key.pem",
        "-out",
        "leaf.csr",
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "cert.pem",
    ]);
    let users = dir.join("users");
    std::fs::write(&users, format!("{USER}:{PASSWORD}\n")).unwrap();
    let config = dir.join("processor.toml");
    // No ClickHouse behind it: only the login and the embedded assets are exercised.
    std::fs::write(
        &config,
        format!(
            "[clickhouse]\nurl = \"http://127.0.0.1:9\"\n\n[serve]\nlisten = \"127.0.0.1:0\"\ntls_cert_file = \"{}\"\n\
             tls_key_file = \"{}\"\npassword_file = \"{}\"\n",
            cert.display(),
            key.display(),
            users.display()
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sitelog"))
        .args(["serve", "-c", config.to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    let _serve = Serve(child);
    let url = first.trim().strip_prefix("console: https://").expect("an https:// console").trim_end_matches('/');
    let addr: std::net::SocketAddr = url.parse().unwrap();
    let good = format!("{USER}:{PASSWORD}");
    assert_eq!(tls_get(addr, &ca, "/", None), 401, "no login");
    assert_eq!(tls_get(addr, &ca, "/", Some(&format!("{USER}:nope"))), 401, "wrong password");
    assert_eq!(tls_get(addr, &ca, "/usage", Some("mallory:x")), 401, "unknown user");
    assert_eq!(tls_get(addr, &ca, "/assets/console.css", Some(&good)), 200, "logged in");
    assert_eq!(tls_get(addr, &ca, "/no-such-page", Some(&good)), 404);
    // Plain HTTP to the TLS port gets no page.
    use std::io::{Read, Write};
    let mut plain = std::net::TcpStream::connect(addr).unwrap();
    plain.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
    let _ = plain.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got);
    assert!(!String::from_utf8_lossy(&got).contains("HTTP/1.1 200"), "plain HTTP served a page");
}
