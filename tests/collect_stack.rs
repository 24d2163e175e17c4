//! `sitelog collect` against the real local stack (tansu): every rotation kind while a writer
//! appends, `kill -9` and restart, `--once` and `--backfill`. The topic must hold every line
//! the writer wrote, by identity (file fingerprint + byte offset), counted, not sampled.

mod collect_common;
mod support;

use std::fs;
use std::time::{Duration, Instant};

use collect_common::{check, config, read_topics, CollectorProc, LogWriter};

const SITES: [&str; 2] = ["alpha.example", "beta.example"];

struct Topics {
    access: String,
    rejects: String,
}

fn topics() -> Topics {
    let stack = support::stack();
    let t = Topics { access: support::unique_name("collect"), rejects: support::unique_name("rejects") };
    stack.create_topic(&t.access, 4).expect("create access topic");
    stack.create_topic(&t.rejects, 1).expect("create rejects topic");
    t
}

/// Writes ~1,500 lines/s to two sites for `secs`, calling `rotate` on alternate sites every
/// ~700 ms, with the collector running; then checks the topic line by line.
fn while_writing(name: &str, secs: u64, rotate: impl Fn(&mut LogWriter, &str)) {
    let stack = support::stack();
    let t = topics();
    let dir = support::temp_dir(name);
    let cfg = config(&dir, &stack.kafka_bootstrap, &t.access, &t.rejects, "");
    let mut w = LogWriter::new(&dir.join("logs"));
    for site in SITES {
        for _ in 0..50 {
            w.append(site, false);
        }
    }
    let col = CollectorProc::spawn(&cfg, &[]);
    let start = Instant::now();
    let mut next_rotation = Duration::from_millis(500);
    let mut n = 0u64;
    let mut rotations = 0;
    while start.elapsed() < Duration::from_secs(secs) {
        for site in SITES {
            w.append(site, n % 7 == 3);
        }
        n += 1;
        if n.is_multiple_of(15) {
            std::thread::sleep(Duration::from_millis(20));
        }
        if start.elapsed() >= next_rotation {
            rotate(&mut w, SITES[rotations % 2]);
            rotations += 1;
            next_rotation += Duration::from_millis(700);
        }
    }
    let expected = w.expected();
    assert!(rotations >= 4 && expected.len() == w.line_count(), "{rotations} rotations, {} lines", expected.len());
    let got = read_topics(&stack.kafka_bootstrap, &t.access, &t.rejects, Duration::from_secs(90), |e| {
        expected.keys().all(|k| e.contains_key(k))
    });
    let status = col.terminate(Duration::from_secs(40));
    let log = fs::read_to_string(dir.join("collect-0.log")).unwrap_or_default();
    assert!(status.success(), "collector exit {status:?}; log:\n{log}");
    if let Err(e) = check(&expected, &got, false) {
        panic!("{name}: {e}\ncollector log: {}", dir.display());
    }
    eprintln!("{name}: {} lines, {rotations} rotations, each exactly once", expected.len());
}

#[test]
fn rename_and_create_while_writing() {
    // The server writes a few more lines to the renamed file before it reopens its log.
    while_writing("rename", 4, |w, site| w.rename_create(site, 5));
}

#[test]
fn copytruncate_while_writing() {
    // Every other copy is compressed right away, so the old content is found as `.gz`.
    let toggle = std::cell::Cell::new(false);
    while_writing("copytruncate", 4, |w, site| {
        w.copy_truncate(site);
        toggle.set(!toggle.get());
        if toggle.get() {
            if let Some(i) = w.last_rotated_plain(site) {
                w.compress(i);
            }
        }
    });
}

#[test]
fn delete_and_recreate_while_writing() {
    while_writing("delete", 4, |w, site| w.delete_recreate(site));
}

#[test]
fn rotated_file_compressed_while_being_read() {
    while_writing("compress", 4, |w, site| {
        w.rename_create(site, 3);
        if let Some(i) = w.last_rotated_plain(site) {
            w.compress(i);
        }
    });
}

/// `kill -9` at random points, restart: nothing missing; duplicates only with their own
/// identity and content (the processor drops them).
#[test]
fn kill_9_and_restart_loses_nothing() {
    let stack = support::stack();
    let t = topics();
    let dir = support::temp_dir("kill9");
    let cfg = config(&dir, &stack.kafka_bootstrap, &t.access, &t.rejects, "checkpoint_interval_ms = 200");
    let mut w = LogWriter::new(&dir.join("logs"));
    let mut col = CollectorProc::spawn(&cfg, &[]);
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut rand = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut kills = 0;
    let mut step = 0u64;
    let start = Instant::now();
    let mut next_kill = Duration::from_millis(600 + rand(900));
    while start.elapsed() < Duration::from_secs(6) {
        for site in SITES {
            w.append(site, step.is_multiple_of(5));
        }
        step += 1;
        if step.is_multiple_of(15) {
            std::thread::sleep(Duration::from_millis(20));
        }
        if step.is_multiple_of(700) {
            let site = SITES[(step / 700 % 2) as usize];
            if rand(2) == 0 {
                w.rename_create(site, 2);
            } else {
                w.copy_truncate(site);
            }
        }
        if start.elapsed() >= next_kill && kills < 3 {
            col.kill9();
            kills += 1;
            col = CollectorProc::spawn(&cfg, &[]);
            next_kill = start.elapsed() + Duration::from_millis(600 + rand(900));
        }
    }
    let expected = w.expected();
    let got = read_topics(&stack.kafka_bootstrap, &t.access, &t.rejects, Duration::from_secs(90), |e| {
        expected.keys().all(|k| e.contains_key(k))
    });
    let status = col.terminate(Duration::from_secs(40));
    assert!(status.success(), "collector exit {status:?}");
    let dups: usize = got.values().map(|v| v.len() - 1).sum();
    if let Err(e) = check(&expected, &got, true) {
        panic!("after {kills} kills: {e}\nlogs in {}", dir.display());
    }
    eprintln!("kill -9 x{kills}: {} lines all present, {dups} re-sent duplicates (same identity)", expected.len());
}

#[test]
fn once_backfill_and_config_errors() {
    let stack = support::stack();
    let t = topics();
    let dir = support::temp_dir("once");
    let cfg = config(&dir, &stack.kafka_bootstrap, &t.access, &t.rejects, "");
    let mut w = LogWriter::new(&dir.join("logs"));
    for i in 0..400 {
        w.append(SITES[i % 2], false);
    }
    let run = |args: &[&str]| {
        let mut p = CollectorProc::spawn(&cfg, args);
        let st = p.wait(Duration::from_secs(60));
        assert!(st.success(), "{args:?}: exit {st:?}, log {}", p.log.display());
    };
    run(&["--once"]);
    // Rotated (and compressed) while no collector ran; more lines in the new file.
    for _ in 0..50 {
        w.append(SITES[0], false);
    }
    w.rename_create(SITES[0], 0);
    let rotated = w.last_rotated_plain(SITES[0]).expect("rotated file");
    w.compress(rotated);
    for _ in 0..30 {
        w.append(SITES[0], false);
    }
    // An old archive the collector never saw, for --backfill, named like a rotation.
    let old_dir = dir.join("logs").join(SITES[1]);
    let mut old = LogWriter::new(&dir.join("old"));
    for _ in 0..120 {
        old.append(SITES[1], false);
    }
    old.rename_create(SITES[1], 0);
    let archive_index = old.last_rotated_plain(SITES[1]).expect("old file");
    old.compress(archive_index);
    let archive = old_dir.join("access.log.99.gz");
    fs::rename(old.files[archive_index].path.as_ref().expect("gz path"), &archive).expect("move archive");
    // --backfill of the already-sent (and compressed) rotated file sends nothing new; the
    // never-seen archive is read once.
    let sent_gz = w.files[rotated].path.clone().expect("gz");
    run(&["--backfill", sent_gz.to_str().expect("utf-8"), archive.to_str().expect("utf-8")]);
    run(&["--once"]);
    run(&["--once"]);
    run(&["--backfill", archive.to_str().expect("utf-8")]);
    let mut expected = w.expected();
    expected.extend(old.expected());
    let got = read_topics(&stack.kafka_bootstrap, &t.access, &t.rejects, Duration::from_secs(60), |e| {
        expected.keys().all(|k| e.contains_key(k))
    });
    check(&expected, &got, false).unwrap_or_else(|e| panic!("{e}; logs in {}", dir.display()));

    // A misspelt key: one clear error naming the file and line, exit code 1.
    let bad = dir.join("bad.toml");
    fs::write(&bad, fs::read_to_string(&cfg).expect("cfg").replace("linger_ms", "linger_msec")).expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sitelog"))
        .args(["collect", "--once", "--config"])
        .arg(&bad)
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("bad.toml: line ") && err.contains("linger_msec"), "{err}");
}
