//! Golden files: every built-in format over real-looking lines (`golden/<format>.log`),
//! compared with the expected records and rejects (`golden/<format>.jsonl`).
//!
//! After an intended change, regenerate with `UPDATE_GOLDEN=1 cargo test -p sitelog-ingest
//! --test golden` and review the diff line by line.

use std::fmt::Write as _;
use std::path::PathBuf;

use sitelog_ingest::format::{Extras, LogFormat};
use sitelog_ingest::lines::{Line, LineReader};

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// One JSON line per input line: `{"line":…,"record":…,"extra":…}` or `{"line":…,"reject":…}`.
fn render(format: &LogFormat, input: &[u8]) -> String {
    let mut out = String::new();
    let mut reader = LineReader::new(input);
    let mut extras = Extras::new();
    while let Some(item) = reader.next_line().expect("in-memory read") {
        let (line_no, offset, bytes, partial) = match item {
            Line::Complete { line_no, offset, bytes } => (line_no, offset, bytes, false),
            Line::Partial { line_no, offset, bytes } => (line_no, offset, bytes, true),
            Line::TooLong { line_no, .. } => panic!("line {line_no} too long for a golden file"),
        };
        let value = match format.parse_line_with_extras(bytes, &mut extras) {
            Ok(mut record) => {
                record.source.offset = offset;
                let extra: serde_json::Map<String, serde_json::Value> =
                    extras.iter().map(|(k, v)| (k.to_owned(), v.into())).collect();
                serde_json::json!({ "line": line_no, "partial": partial, "record": record, "extra": extra })
            }
            Err(e) => {
                serde_json::json!({ "line": line_no, "partial": partial, "reject": e.to_string() })
            }
        };
        writeln!(out, "{value}").expect("write to String");
    }
    out
}

fn check(name: &str) {
    let format = LogFormat::builtin(name).expect("built-in");
    let dir = golden_dir();
    let input = std::fs::read(dir.join(format!("{name}.log"))).expect("golden input");
    let got = render(&format, &input);
    let path = dir.join(format!("{name}.jsonl"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &got).expect("write golden");
        return;
    }
    let want =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
    for (i, (g, w)) in got.lines().zip(want.lines()).enumerate() {
        assert_eq!(g, w, "{name}: output line {} differs", i + 1);
    }
    assert_eq!(got.lines().count(), want.lines().count(), "{name}: number of lines");
    // Nothing is dropped: one output per input line.
    let input_lines = input.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count()
        + input.split(|&b| b == b'\n').filter(|l| l.is_empty()).count()
        - usize::from(input.ends_with(b"\n"));
    assert_eq!(got.lines().count(), input_lines, "{name}: every input line is a record or a reject");
}

#[test]
fn combined() {
    check("combined");
}

#[test]
fn common() {
    check("common");
}

#[test]
fn vhost_combined() {
    check("vhost_combined");
}

#[test]
fn main_nginx() {
    check("main");
}

#[test]
fn json() {
    check("json");
}
