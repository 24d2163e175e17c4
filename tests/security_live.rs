//! Detection from a backfill equals detection live (issue 14, "Must show").
//!
//! One generated sample goes through the pipeline twice, into two databases:
//! 1. backfill: the finished files, `sitelog collect --once`, then `sitelog process`;
//! 2. live: the same lines written progressively — every log of the sample grows line by line
//!    in time order, rotated (renamed, a new file created) where the sample's files change day
//!    — while `sitelog collect` tails them (no `--once`) and `sitelog process` runs alongside.
//!
//! The security events of both runs must be identical (scenario, source, customer, site, first
//! and last seen, count, severity), and both must name every attack the generator injected
//! (`truth/security.csv`, written by the generator, never by reading logs back) and nothing
//! else. Detection runs on event time, so how and when the records were read must not matter.
//! The same holds for disruption alerting: `alerts run` over either database finds the same
//! incidents, one per disruption the generator injected (`truth/incidents.csv`).

mod support;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{Days, Utc};
use sitelog::sample::{truth, GenerateOptions};

/// What must be equal between the two runs: every field of an event except its sample paths
/// and agents (which are the first few seen and so depend on nothing else either, but are not
/// part of the contract).
type EventKey = (String, String, String, String, String, String, u64, String);

fn events(cfg: &str) -> BTreeSet<EventKey> {
    let out = support::sitelog(
        &["security", "events", "-c", cfg, "--since", "30d", "--format", "json", "--reason", "test: security_live"],
        &[],
    );
    out.lines()
        .map(|l| {
            let e: serde_json::Value = serde_json::from_str(l).unwrap();
            let s = |k: &str| e[k].as_str().unwrap_or_else(|| panic!("{k} in {e}")).to_owned();
            (
                s("scenario"),
                s("source"),
                s("customer_id"),
                s("site_host"),
                s("first_seen"),
                s("last_seen"),
                e["count"].as_u64().unwrap(),
                s("severity"),
            )
        })
        .collect()
}

/// One log of the sample as a web server wrote it: its files oldest first (`.N.gz` … `.1`,
/// then the live name), each as lines.
struct Stream {
    live: PathBuf,
    files: Vec<Vec<Vec<u8>>>,
    /// Position: file, line.
    at: (usize, usize),
    rotations: usize,
}

fn streams(sample_logs: &Path, live_logs: &Path) -> Vec<Stream> {
    let mut bases: Vec<PathBuf> = Vec::new();
    let mut stack = vec![sample_logs.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "log") {
                bases.push(p);
            }
        }
    }
    bases.sort();
    bases
        .into_iter()
        .map(|base| {
            let name = base.file_name().unwrap().to_str().unwrap().to_owned();
            // (age, path): `.N.gz` is N days old, `.1` one day, the live name none.
            let mut files: Vec<(u32, PathBuf)> = std::fs::read_dir(base.parent().unwrap())
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter_map(|p| {
                    let f = p.file_name().unwrap().to_str().unwrap().to_owned();
                    let rest = f.strip_prefix(&name)?;
                    let age = match rest {
                        "" => 0,
                        _ => rest.trim_start_matches('.').trim_end_matches(".gz").parse().ok()?,
                    };
                    Some((age, p))
                })
                .collect();
            files.sort_by_key(|f| std::cmp::Reverse(f.0));
            let files = files
                .into_iter()
                .map(|(_, p)| {
                    let mut bytes = Vec::new();
                    if p.extension().is_some_and(|x| x == "gz") {
                        flate2::read::MultiGzDecoder::new(std::fs::File::open(&p).unwrap())
                            .read_to_end(&mut bytes)
                            .unwrap();
                    } else {
                        bytes = std::fs::read(&p).unwrap();
                    }
                    bytes.split_inclusive(|&b| b == b'\n').map(<[u8]>::to_vec).collect()
                })
                .collect();
            let live = live_logs.join(base.strip_prefix(sample_logs).unwrap());
            std::fs::create_dir_all(live.parent().unwrap()).unwrap();
            std::fs::File::create(&live).unwrap();
            Stream { live, files, at: (0, 0), rotations: 0 }
        })
        .collect()
}

impl Stream {
    fn lines(&self) -> usize {
        self.files.iter().map(Vec::len).sum()
    }

    /// Appends up to `n` lines; at the end of one of the sample's files, rotates as logrotate
    /// `create` does (rename, new file) and goes on with the next.
    fn write(&mut self, mut n: usize) {
        while n > 0 && self.at.0 < self.files.len() {
            let file = &self.files[self.at.0];
            let take = n.min(file.len() - self.at.1);
            let mut f = std::fs::OpenOptions::new().append(true).open(&self.live).unwrap();
            for line in &file[self.at.1..self.at.1 + take] {
                f.write_all(line).unwrap();
            }
            self.at.1 += take;
            n -= take;
            if self.at.1 == file.len() {
                self.at = (self.at.0 + 1, 0);
                if self.at.0 < self.files.len() {
                    self.rotations += 1;
                    let to = format!("{}.r{}", self.live.display(), self.rotations);
                    std::fs::rename(&self.live, to).unwrap();
                    std::fs::File::create(&self.live).unwrap();
                }
            }
        }
    }

    fn done(&self) -> bool {
        self.at.0 >= self.files.len()
    }
}

fn spawn(args: &[&str], env: &[(&str, &str)], log: &Path) -> Child {
    let out = std::fs::File::create(log).unwrap();
    Command::new(env!("CARGO_BIN_EXE_sitelog"))
        .args(args)
        .envs(env.iter().copied())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap()
}

fn terminate(mut child: Child, what: &str, log: &Path) {
    // SAFETY: a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            assert!(st.success(), "{what} exited {st:?}; log {}", log.display());
            return;
        }
        assert!(Instant::now() < deadline, "{what} did not stop; log {}", log.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn live_tailing_detects_exactly_what_a_backfill_does() {
    let stack = support::stack();
    let today = Utc::now().with_timezone(&chrono_tz::Europe::Helsinki).date_naive();
    let dir = support::temp_dir("seclive");
    let opts = GenerateOptions {
        out: dir.join("sample"),
        seed: 11,
        start: today - Days::new(4),
        days: 3,
        customers: 12,
        rate: 6,
    };

    // 1. Backfill.
    let run = support::run_sample(&opts, "seclive", &[], "");
    let backfill = events(run.config.to_str().unwrap());

    // The ground truth: every injected attack found, and nothing else.
    let attacks = truth::read_security(&opts.out.join("truth")).unwrap();
    assert!(
        attacks.iter().map(|a| a.scenario.as_str()).collect::<BTreeSet<_>>().len() >= 9,
        "the generator injects every scenario: {attacks:?}"
    );
    let check_truth = |got: &BTreeSet<EventKey>, what: &str| {
        let found: BTreeSet<_> = got.iter().map(|e| (e.0.clone(), e.1.clone(), e.2.clone(), e.3.clone())).collect();
        for a in &attacks {
            let want = (a.scenario.clone(), a.source.clone(), a.customer_id.clone(), a.site_host.clone());
            assert!(found.contains(&want), "{what}: injected {want:?} not found among {found:#?}");
            // …starting on the day the generator began it (Helsinki).
            let days: Vec<String> = got
                .iter()
                .filter(|e| (&e.0, &e.1, &e.2, &e.3) == (&want.0, &want.1, &want.2, &want.3))
                .map(|e| {
                    let t = chrono::DateTime::parse_from_rfc3339(&e.4).unwrap();
                    t.with_timezone(&chrono_tz::Europe::Helsinki).date_naive().to_string()
                })
                .collect();
            assert!(days.contains(&a.day), "{what}: {want:?} began on {} by the truth, events on {days:?}", a.day);
        }
        let attacked: BTreeSet<_> = attacks.iter().map(|a| (a.source.clone(), a.site_host.clone())).collect();
        let extra: Vec<_> = found.iter().filter(|e| !attacked.contains(&(e.1.clone(), e.3.clone()))).collect();
        assert!(extra.is_empty(), "{what}: events about sources the generator did not inject: {extra:#?}");
    };
    check_truth(&backfill, "backfill");

    // 2. Live: the same lines, written progressively while the collector tails them and the
    // processor runs, into a new topic and database.
    let live_dir = support::temp_dir("seclive-live");
    let logs = live_dir.join("logs");
    let mut streams = streams(&opts.out.join("logs"), &logs);
    let total: usize = streams.iter().map(Stream::lines).sum();
    let collector_toml = std::fs::read_to_string(opts.out.join("collector.toml")).unwrap().replace(
        &std::fs::canonicalize(&opts.out).unwrap().join("logs").display().to_string(),
        &logs.display().to_string(),
    );
    assert!(collector_toml.contains(&logs.display().to_string()));
    let collector_cfg = live_dir.join("collector.toml");
    std::fs::write(&collector_cfg, collector_toml).unwrap();
    let topic = support::unique_name("seclive_live");
    let rejects = support::unique_name("seclive_live_rejects");
    stack.create_topic(&topic, 2).unwrap();
    stack.create_topic(&rejects, 1).unwrap();
    let db = format!("{}_live", run.db);
    let cfg = live_dir.join("processor.toml");
    let text = std::fs::read_to_string(&run.config)
        .unwrap()
        .replace("group_id = \"seclive\"", "group_id = \"seclive-live\"")
        .replace(&format!("database = \"{}\"", run.db), &format!("database = \"{db}\""));
    let old_topic = text.lines().find(|l| l.starts_with("topic = ")).unwrap().to_owned();
    std::fs::write(&cfg, text.replace(&old_topic, &format!("topic = \"{topic}\""))).unwrap();
    let cfg = cfg.to_str().unwrap();
    support::sitelog(&["schema", "migrate", "-c", cfg], &[]);
    support::sitelog(&["customers", "import", opts.out.join("register.json").to_str().unwrap(), "-c", cfg], &[]);

    let collect_log = live_dir.join("collect.log");
    let collector = spawn(
        &[
            "collect",
            "--config",
            collector_cfg.to_str().unwrap(),
            "--checkpoint-dir",
            live_dir.join("checkpoints").to_str().unwrap(),
        ],
        &[
            ("SITELOG_KAFKA_BROKERS", &stack.kafka_bootstrap),
            ("SITELOG_ACCESS_TOPIC", &topic),
            ("SITELOG_REJECTS_TOPIC", &rejects),
        ],
        &collect_log,
    );
    let process_log = live_dir.join("process.log");
    let processor = spawn(&["process", "-c", cfg], &[], &process_log);

    // ~150 rounds of writing, each a slice of every log proportional to its length (so the
    // logs advance through their days together, as a server's do), 40 ms apart.
    let rounds = 150;
    let started = Instant::now();
    while streams.iter().any(|s| !s.done()) {
        for s in &mut streams {
            let n = s.lines().div_ceil(rounds);
            s.write(n);
        }
        std::thread::sleep(Duration::from_millis(40));
    }
    let rotations: usize = streams.iter().map(|s| s.rotations).sum();
    eprintln!("live: {total} lines written in {:.1} s, {rotations} rotations", started.elapsed().as_secs_f64());
    assert!(rotations > 0);

    // Every record stored (the count of the backfill's database, itself checked against the
    // generator's record count), then both processes stop.
    let want: u64 = support::block_on(run.client.query("SELECT count() FROM access_log").fetch_one()).unwrap();
    assert_eq!(want, run.summary.records, "the backfill stored every record");
    let live_client = support::clickhouse_config(stack, &db).client().unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let n: u64 = support::block_on(live_client.query("SELECT count() FROM access_log").fetch_one()).unwrap();
        if n == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "live: {n} of {want} records stored; logs {} and {}",
            collect_log.display(),
            process_log.display()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    terminate(collector, "collector", &collect_log);
    terminate(processor, "processor", &process_log);

    let live = events(cfg);
    check_truth(&live, "live");
    assert_eq!(
        live,
        backfill,
        "live found other events than the backfill: only live {:#?}, only backfill {:#?}",
        live.difference(&backfill).collect::<Vec<_>>(),
        backfill.difference(&live).collect::<Vec<_>>()
    );
    eprintln!("live = backfill: {} events, {} injected attacks found", live.len(), attacks.len());

    // Disruption alerting over what live tailing stored finds the incidents it finds over the
    // backfill's data (same ids: kind, subject and opening minute), and the injected ones.
    let window = |c: &str| {
        let from = (opts.start - chrono::Days::new(1)).to_string();
        let to = (opts.start + chrono::Days::new(u64::from(opts.days) + 1)).to_string();
        let out = support::sitelog(&["alerts", "run", "-c", c, "--from", &from, "--to", &to, "--dry-run"], &[]);
        out.lines().map(str::to_owned).collect::<BTreeSet<String>>()
    };
    let live_incidents = window(cfg);
    let backfill_incidents = window(run.config.to_str().unwrap());
    assert_eq!(live_incidents, backfill_incidents, "incidents from live tailing vs backfill");
    let injected = sitelog::sample::truth::read_incidents(&opts.out.join("truth")).unwrap();
    let opened = live_incidents.iter().filter(|l| l.split_whitespace().nth(2) == Some("opened")).count();
    assert_eq!(opened, injected.len(), "one incident per injected disruption: {live_incidents:#?}");
}
