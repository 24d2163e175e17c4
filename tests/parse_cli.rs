//! `sitelog parse` as users run it: records, rejects and the summary, checked against
//! `scripts/check-combined-log`, a reference reader of the combined format that shares no
//! code with sitelog (needs `python3`, as the rest of the test suite does).

use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn parse(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sitelog")).arg("parse").args(args).output().expect("run sitelog parse")
}

/// Every line of the combined golden log (IPv6, HTTP/2 and /3, `-` fields, escapes, non-UTF-8,
/// a raw TLS handshake, a hostname as client, a truncated agent, an empty line, an impossible
/// date) is a record equal field by field to the reference reader's, or a reject where the
/// reference cannot read it either.
#[test]
fn combined_records_equal_an_independent_reader() {
    let out = Command::new("python3")
        .arg(root().join("scripts/check-combined-log"))
        .args(["--sitelog", env!("CARGO_BIN_EXE_sitelog")])
        .arg(root().join("ingest/tests/golden/combined.log"))
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("20 lines = 17 records + 3 rejects") && stdout.contains(": OK"), "{stdout}");
}

/// A line cut inside the user agent is a reject with a reason and where it is; the counts add
/// up; `--check` (fused parsers) and the printing path agree.
#[test]
fn truncated_agent_is_a_reject_with_a_reason() {
    let dir = std::env::temp_dir().join(format!("sitelog-parse-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("access.log");
    let good = r#"83.149.9.216 - - [17/May/2015:10:05:03 +0000] "GET /presentations/logstash-monitorama-2013/images/kibana-search.png HTTP/1.1" 200 203023 "http://semicomplete.com/presentations/logstash-monitorama-2013/" "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_9_1) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/32.0.1700.77 Safari/537.36""#;
    let cut = &good[..good.len() - 40];
    std::fs::write(&log, format!("{good}\n{cut}\n{good}\n")).unwrap();
    let path = log.to_str().unwrap();
    for check in [false, true] {
        let rejects = dir.join(format!("rejects-{check}.jsonl"));
        let mut args = vec!["--format", "combined", "--rejects", rejects.to_str().unwrap(), path];
        if check {
            args.push("--check");
        }
        let out = parse(&args);
        assert_eq!(out.status.code(), Some(2), "rejects make the exit code 2");
        let summary = String::from_utf8_lossy(&out.stderr);
        assert!(summary.contains("3 lines, 2 records, 1 rejects"), "{summary}");
        let records = String::from_utf8_lossy(&out.stdout).lines().count();
        assert_eq!(records, if check { 0 } else { 2 });
        let reject: serde_json::Value =
            serde_json::from_str(std::fs::read_to_string(&rejects).unwrap().trim()).unwrap();
        assert_eq!(reject["line"], 2);
        assert_eq!(reject["offset"], good.len() as u64 + 1);
        assert_eq!(reject["reason"], format!("expected '\"' at column {} (field %{{User-Agent}}i)", cut.len() + 1));
        assert_eq!(reject["raw"], cut);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
